/*
 * A publisher over HTTP/1.1 for the fan-out benchmark: one keep-alive TCP
 * connection on the harness's libuv loop, requests pipelined (RFC 9112,
 * section 9.3.2), replies matched to requests in order. Used for brokers that
 * take publishes as HTTP POST (nchan); not a general HTTP client: replies
 * must carry Content-Length (no chunked bodies) and fit in 64 KiB.
 */
#ifndef TERN_BENCH_FANOUT_HTTP_PUB_H
#define TERN_BENCH_FANOUT_HTTP_PUB_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct fanout_http_pub;

struct fanout_http_pub_cbs {
	/* The connection is up (status 0) or could not be made (< 0); after a
	 * failure only on_close follows. */
	void (*on_connect)(struct fanout_http_pub *p, int status, void *data);
	/* One complete reply to the oldest request still unanswered:
	 * `status` is its HTTP status code, `body` (valid during the call) its
	 * body. */
	void (*on_reply)(struct fanout_http_pub *p, int status, const char *body,
			 size_t body_len, void *data);
	/* The connection ended before fanout_http_pub_close (reset, closed by
	 * the server, an unreadable reply: `status` < 0). Replies still owed
	 * will never come. */
	void (*on_error)(struct fanout_http_pub *p, int status, void *data);
};

/* Connects to `host` (numeric IPv4) `port` on `loop`. On success *out is
 * the publisher, owned by the caller until fanout_http_pub_close; on failure
 * (a negative errno or libuv code) nothing was created and no callback runs. */
int fanout_http_pub_open(struct fanout_http_pub **out, uv_loop_t *loop, const char *host,
			 int port, const struct fanout_http_pub_cbs *cbs, void *data);

/* Queues one complete request (copied). Returns 0, -EAGAIN when the output
 * buffer is at its bound (retry after replies arrive), or -ENOTCONN. */
int fanout_http_pub_send(struct fanout_http_pub *p, const char *req, size_t len);

/* true while the queued output is over the size at which the caller should
 * stop producing; it is written as the socket takes it. */
bool fanout_http_pub_choked(const struct fanout_http_pub *p);

/* Stops I/O and frees `p` once libuv has closed the socket (the loop must
 * run). Idempotent from the caller's side: call it once; no callback runs
 * after it. */
void fanout_http_pub_close(struct fanout_http_pub *p);

#endif
