/*
 * HTTP/1.1 publisher of the fan-out benchmark; the contract is in
 * http_pub.h. Output is double-buffered: requests append to `out` while one
 * uv_write of `wr` is under way, then the two swap.
 */
#include "http_pub.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Output queued at most: 4 MiB holds the publisher's whole window of 4 KiB
 * requests; the caller sees -EAGAIN beyond it. */
#define OUT_MAX_BYTES (4u << 20)
/* Above this the caller is told to hold (fanout_http_pub_choked). */
#define OUT_CHOKED_BYTES (256u << 10)
/* One reply, headers and body, at most. nchan's are under 1 KiB. */
#define IN_MAX_BYTES 65536

struct fanout_http_pub {
	uv_tcp_t tcp;
	uv_connect_t connect_req;
	uv_write_t write_req;
	const struct fanout_http_pub_cbs *cbs;
	void *data;
	bool connected, writing, closing, failed;
	char *out, *wr;          /* each OUT_MAX_BYTES */
	size_t out_len, wr_len;
	char *in;                /* IN_MAX_BYTES */
	size_t in_len;
};

static void on_closed(uv_handle_t *handle)
{
	struct fanout_http_pub *p = handle->data;

	free(p->out);
	free(p->wr);
	free(p->in);
	free(p);
}

/* Ends the connection on an error the caller did not ask for. */
static void fail_conn(struct fanout_http_pub *p, int status)
{
	if (p->failed || p->closing)
		return;
	p->failed = true;
	p->connected = false;
	uv_read_stop((uv_stream_t *)&p->tcp);
	p->cbs->on_error(p, status, p->data);
}

static void flush(struct fanout_http_pub *p);

static void on_written(uv_write_t *req, int status)
{
	struct fanout_http_pub *p = req->data;

	p->writing = false;
	p->wr_len = 0;
	if (p->closing)
		return;
	if (status < 0) {
		fail_conn(p, status);
		return;
	}
	flush(p);
}

static void flush(struct fanout_http_pub *p)
{
	char *t;
	uv_buf_t b;
	int rc;

	if (p->writing || p->out_len == 0 || !p->connected)
		return;
	t = p->wr;
	p->wr = p->out;
	p->wr_len = p->out_len;
	p->out = t;
	p->out_len = 0;
	b = uv_buf_init(p->wr, (unsigned)p->wr_len);
	p->write_req.data = p;
	rc = uv_write(&p->write_req, (uv_stream_t *)&p->tcp, &b, 1, on_written);
	if (rc < 0) {
		fail_conn(p, rc);
		return;
	}
	p->writing = true;
}

/* Length of the reply at the start of `in`, 0 when incomplete, -1 when it
 * cannot be read. Sets *status, *body and *body_len. */
static long parse_reply(const char *in, size_t len, int *status, const char **body,
			size_t *body_len)
{
	const char *end = memmem(in, len, "\r\n\r\n", 4), *line;
	size_t head, clen = 0;
	bool have_len = false;

	if (!end)
		return len >= IN_MAX_BYTES ? -1 : 0;
	head = (size_t)(end - in) + 4;
	if (head < 12 || memcmp(in, "HTTP/1.", 7) != 0)
		return -1;
	*status = atoi(in + 9);
	for (line = memchr(in, '\n', head); line && line + 1 < end;
	     line = memchr(line + 1, '\n', (size_t)(end - line))) {
		const char *h = line + 1;

		if (strncasecmp(h, "Content-Length:", 15) == 0) {
			clen = strtoul(h + 15, NULL, 10);
			have_len = true;
		} else if (strncasecmp(h, "Transfer-Encoding:", 18) == 0) {
			return -1; /* chunked replies are not ours to read */
		}
	}
	if (!have_len && *status >= 200 && *status != 204 && *status != 304)
		return -1;
	if (head + clen > IN_MAX_BYTES)
		return -1;
	if (len < head + clen)
		return 0;
	*body = in + head;
	*body_len = clen;
	return (long)(head + clen);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct fanout_http_pub *p = handle->data;

	(void)suggested;
	*buf = uv_buf_init(p->in + p->in_len, (unsigned)(IN_MAX_BYTES - p->in_len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct fanout_http_pub *p = stream->data;
	size_t off = 0;

	(void)buf;
	if (nread < 0) {
		fail_conn(p, nread == UV_EOF ? -ECONNRESET : (int)nread);
		return;
	}
	p->in_len += (size_t)nread;
	while (!p->closing && !p->failed) {
		const char *body = NULL;
		size_t body_len = 0;
		int status = 0;
		long n = parse_reply(p->in + off, p->in_len - off, &status, &body, &body_len);

		if (n < 0) {
			fail_conn(p, -EPROTO);
			return;
		}
		if (n == 0)
			break;
		off += (size_t)n;
		p->cbs->on_reply(p, status, body, body_len, p->data);
	}
	if (p->closing || p->failed)
		return;
	memmove(p->in, p->in + off, p->in_len - off);
	p->in_len -= off;
}

static void on_connected(uv_connect_t *req, int status)
{
	struct fanout_http_pub *p = req->data;

	if (p->closing)
		return;
	if (status == 0)
		status = uv_read_start((uv_stream_t *)&p->tcp, on_alloc, on_read);
	if (status < 0) {
		p->failed = true;
		p->cbs->on_connect(p, status, p->data);
		return;
	}
	p->connected = true;
	uv_tcp_nodelay(&p->tcp, 1);
	p->cbs->on_connect(p, 0, p->data);
	flush(p);
}

int fanout_http_pub_open(struct fanout_http_pub **out, uv_loop_t *loop, const char *host,
			 int port, const struct fanout_http_pub_cbs *cbs, void *data)
{
	struct fanout_http_pub *p = calloc(1, sizeof(*p));
	struct sockaddr_in sa;
	int rc;

	if (!p)
		return -ENOMEM;
	p->cbs = cbs;
	p->data = data;
	p->out = malloc(OUT_MAX_BYTES);
	p->wr = malloc(OUT_MAX_BYTES);
	p->in = malloc(IN_MAX_BYTES);
	rc = uv_ip4_addr(host, port, &sa);
	if (!p->out || !p->wr || !p->in || rc < 0) {
		rc = rc < 0 ? rc : -ENOMEM;
		goto out_free;
	}
	rc = uv_tcp_init(loop, &p->tcp);
	if (rc < 0)
		goto out_free;
	p->tcp.data = p;
	p->connect_req.data = p;
	rc = uv_tcp_connect(&p->connect_req, &p->tcp, (const struct sockaddr *)&sa, on_connected);
	if (rc < 0) {
		/* The handle exists now: it is freed through its close. */
		p->closing = true;
		uv_close((uv_handle_t *)&p->tcp, on_closed);
		return rc;
	}
	*out = p;
	return 0;

out_free:
	free(p->out);
	free(p->wr);
	free(p->in);
	free(p);
	return rc;
}

int fanout_http_pub_send(struct fanout_http_pub *p, const char *req, size_t len)
{
	if (p->closing || p->failed)
		return -ENOTCONN;
	if (p->out_len + len > OUT_MAX_BYTES)
		return -EAGAIN;
	memcpy(p->out + p->out_len, req, len);
	p->out_len += len;
	flush(p);
	return 0;
}

bool fanout_http_pub_choked(const struct fanout_http_pub *p)
{
	return p->out_len >= OUT_CHOKED_BYTES;
}

void fanout_http_pub_close(struct fanout_http_pub *p)
{
	if (p->closing)
		return;
	p->closing = true;
	/* A pending connect or write completes with UV_ECANCELED before
	 * on_closed runs, and sees `closing`. */
	uv_close((uv_handle_t *)&p->tcp, on_closed);
}
