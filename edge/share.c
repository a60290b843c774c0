/*
 * The client port of an edge worker (tern edge --workers): every worker binds
 * it with SO_REUSEPORT, so the kernel spreads new connections over the
 * workers, each with an accept queue of its own (no thundering herd, and a
 * worker that stops takes only its own queue with it).
 *
 * lws 4.1 sets SO_REUSEPORT only on a context that runs several service
 * threads, so a worker listens and accepts itself and hands each connection to
 * lws (lws_adopt_socket_vhost), which serves it exactly as one it accepted:
 * HTTP, then the WebSocket upgrade, under the same handshake timeout.
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
#define SHARE_ACCEPTS_PER_WAKE 64
/* Out of descriptors (EMFILE): accepting pauses this long, as lws does. */
#define SHARE_PAUSE_MS 100

static void on_acceptable(uv_poll_t *h, int status, int events);

static void on_pause_over(uv_timer_t *t)
{
	struct edge *e = t->data;
	if (e->share_fd >= 0 && !e->shutting_down)
		uv_poll_start(&e->share_poll, UV_READABLE, on_acceptable);
}

static void on_acceptable(uv_poll_t *h, int status, int events)
{
	struct edge *e = h->data;
	(void)events;
	if (status < 0)
		return;
	for (int i = 0; i < SHARE_ACCEPTS_PER_WAKE; i++) {
		int fd = accept4(e->share_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* The queue keeps them; try again once something closed. */
				uv_poll_stop(&e->share_poll);
				uv_timer_start(&e->share_pause, on_pause_over, SHARE_PAUSE_MS, 0);
			}
			return; /* EAGAIN, or the peer gave up (ECONNABORTED) */
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* On failure lws closes fd itself. */
		lws_adopt_socket_vhost(e->share_vhost, fd);
	}
}

int edge_share_listen(struct edge *e, const char *host, int port, char *why, size_t why_len)
{
	char ps[8];
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV},
			*ai;
	snprintf(ps, sizeof(ps), "%d", port);
	int rc = getaddrinfo(strcmp(host, "0.0.0.0") == 0 ? NULL : host, ps, &hints, &ai);
	if (rc != 0) {
		snprintf(why, why_len, "cannot listen on %s:%d: %s", host, port, gai_strerror(rc));
		return TERN_EBADREQ;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
		snprintf(why, why_len, "cannot listen on %s:%d: %s", host, port, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return TERN_EINTERNAL;
	}
	freeaddrinfo(ai);
	e->share_fd = fd;
	uv_poll_init(e->loop, &e->share_poll, fd);
	e->share_poll.data = e;
	uv_timer_init(e->loop, &e->share_pause);
	e->share_pause.data = e;
	return 0;
}

void edge_share_accept(struct edge *e)
{
	if (e->share_fd >= 0)
		uv_poll_start(&e->share_poll, UV_READABLE, on_acceptable);
}

void edge_share_stop(struct edge *e)
{
	if (e->share_fd < 0)
		return;
	uv_poll_stop(&e->share_poll);
	uv_timer_stop(&e->share_pause);
	/* Connections still queued here are reset: new ones go to the other
	 * workers from now on. */
	close(e->share_fd);
	e->share_fd = -2; /* closed; its handles are closed by edge_free */
}
