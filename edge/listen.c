/*
 * The edge's client port. The edge listens and accepts itself and hands each
 * connection to lws (lws_adopt_socket_vhost), which serves it exactly as one
 * it accepted: HTTP, then the WebSocket upgrade, under the same handshake
 * timeout. Two things lws 4.1's own listener does not give:
 *
 * - a failure to listen that says why and fails the start (lws logs it,
 *   returns a context anyway and retries later);
 * - SO_REUSEPORT for the workers of tern edge --workers: every worker binds
 *   the port with it, so the kernel spreads new connections over them, each
 *   with an accept queue of its own (no thundering herd, and a worker that
 *   stops takes only its own queue with it). lws sets it only on a context
 *   that runs several service threads.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "tern_limits.h"
#include "tern_err.h"

/* Connections accepted per readable event, at most: the loop gets back to
 * the sessions in between. */
#define LISTEN_ACCEPTS_PER_WAKE 64
/* Out of descriptors (EMFILE): accepting pauses this long, as lws does. */
#define LISTEN_PAUSE_MS 100

static void on_acceptable(uv_poll_t *h, int status, int events);

static void on_pause_over(uv_timer_t *t)
{
	struct edge *e = t->data;
	if (e->listen_fd >= 0 && !e->shutting_down)
		uv_poll_start(&e->listen_poll, UV_READABLE, on_acceptable);
}

static void on_acceptable(uv_poll_t *h, int status, int events)
{
	struct edge *e = h->data;
	(void)events;
	if (status < 0)
		return;
	for (int i = 0; i < LISTEN_ACCEPTS_PER_WAKE; i++) {
		int fd = accept4(e->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* The queue keeps them; try again once something closed. */
				uv_poll_stop(&e->listen_poll);
				uv_timer_start(&e->listen_pause, on_pause_over, LISTEN_PAUSE_MS, 0);
			}
			return; /* EAGAIN, or the peer gave up (ECONNABORTED) */
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* On failure lws closes fd itself. */
		lws_adopt_socket_vhost(e->listen_vhost, fd);
	}
}

int edge_listen_open(struct edge *e, const char *host, int port, bool reuseport, char *why,
		     size_t why_len)
{
	char ps[8];
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV},
			*ai;
	snprintf(ps, sizeof(ps), "%d", port);
	int rc = getaddrinfo(host, ps, &hints, &ai);
	if (rc != 0) {
		snprintf(why, why_len, "cannot listen on %s:%d: %s", host, port, gai_strerror(rc));
		return TERN_EBADREQ;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
		snprintf(why, why_len, "cannot listen on %s:%d: %s", host, port, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return TERN_EINTERNAL;
	}
	freeaddrinfo(ai);
	e->listen_fd = fd;
	uv_poll_init(e->loop, &e->listen_poll, fd);
	e->listen_poll.data = e;
	uv_timer_init(e->loop, &e->listen_pause);
	e->listen_pause.data = e;
	return 0;
}

void edge_listen_start(struct edge *e)
{
	if (e->listen_fd >= 0)
		uv_poll_start(&e->listen_poll, UV_READABLE, on_acceptable);
}

void edge_listen_close(struct edge *e)
{
	if (e->listen_fd < 0)
		return;
	uv_poll_stop(&e->listen_poll);
	uv_timer_stop(&e->listen_pause);
	/* Connections still queued here are reset; with workers, new ones go
	 * to the other workers from now on. */
	close(e->listen_fd);
	e->listen_fd = -1;
}
