/* One TCP port for links and for the node's ops HTTP (/healthz, /metrics), told apart by the
 * first bytes a connection sends: the link preface (proto/link_limits.h LINK_PREFACE) hands the
 * socket to the link code (link_adopt); "GET " or "HEAD " is answered as one HTTP/1.1 request
 * and closed; anything else is closed. Every connection must show its first bytes (and an HTTP
 * one its whole request head) within handshake_timeout_ms. */
#ifndef TERN_PORTMUX_H
#define TERN_PORTMUX_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct portmux;

struct portmux_config {
	uv_loop_t *loop;
	const char *host; /* an address or a name (resolved at start) */
	int port;         /* 0 picks one */
	uint64_t handshake_timeout_ms;
	unsigned max_pending; /* connections being sniffed or served at once; above, closed */
	/* A link preface arrived. Return 0 when the socket was taken (fd is the caller's now),
	 * non-zero to have it closed. first[0..len) are the bytes read so far. */
	int (*on_link)(void *arg, uv_os_sock_t fd, const uint8_t *first, size_t len);
	/* An HTTP request for path (without the query). Set *status, *ctype (static) and *body
	 * (malloc'd, freed by portmux; may be NULL with *body_len 0). */
	void (*on_http)(void *arg, const char *path, size_t path_len, int *status,
			const char **ctype, char **body, size_t *body_len);
	void *arg;
};

/* Binds and listens. Returns 0, or -1 with one line in why (busy port, bad address). */
int portmux_start(struct portmux **out, const struct portmux_config *c, char *why, size_t why_len);
int portmux_port(const struct portmux *m);
/* Stops accepting and closes every connection still being sniffed or served; frees itself once
 * libuv released the handles, then done(arg) (may be NULL). */
void portmux_close(struct portmux *m, void (*done)(void *arg), void *arg);

/* The request head parser (pure; fuzzed). buf[0..len) are the bytes read so far. Returns 1
 * with method and path (without "?query") set when the head is complete ("\r\n\r\n" seen),
 * 0 when more bytes are needed, -1 when it cannot be an HTTP/1.x request. */
int portmux_parse_head(const char *buf, size_t len, const char **method, size_t *method_len,
		       const char **path, size_t *path_len);

#endif
