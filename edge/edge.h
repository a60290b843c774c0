/* The edge: terminates clients (WebSocket tern.v1.json and REST on one port,
 * served by libwebsockets on the caller's libuv loop), keeps their sessions,
 * aggregates their subscriptions into one upstream subscription per channel,
 * and fans messages out to local sessions. It reaches the broker only through
 * a backend (backend.h). */
#ifndef TERN_EDGE_H
#define TERN_EDGE_H

#include <stddef.h>
#include <uv.h>

#include "backend.h"
#include "config.h"

struct edge;
struct fbuf;

struct edge_config {
	uv_loop_t *loop;
	const struct tern_config *cfg; /* must outlive the edge */
	const struct backend_ops *be_ops;
	void *be;
	/* Extra Prometheus text appended to /metrics (the broker's), or NULL. */
	void (*metrics_extra)(void *arg, struct fbuf *out);
	void *metrics_arg;
	/* Several processes listen on cfg->listen (SO_REUSEPORT): tern edge --workers. */
	bool listen_share;
};

/* Starts listening on cfg->listen. Returns 0, or a Tern error with one line
 * in why (e.g. the port is busy). */
int edge_start(struct edge **out, const struct edge_config *ec, char *why, size_t why_len);

/* Graceful stop: refuses new connections, sends every WebSocket client a close
 * frame (1001), waits up to TERN_SHUTDOWN_GRACE_MS for them to go and for
 * every HTTP request to get its reply (the owner answers long-polls), then ends
 * the rest, drops its upstream subscriptions and calls done(arg). After done,
 * the loop still has to run once for lws to release its handles; then call
 * edge_free. */
void edge_shutdown(struct edge *e, void (*done)(void *arg), void *arg);
void edge_free(struct edge *e);

/* One Prometheus series: its HELP and TYPE lines and its value. */
void edge_metric(struct fbuf *b, const char *name, const char *type, const char *help,
		 uint64_t v);

#endif
