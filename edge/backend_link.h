/* The edge's backend over links: every backend_ops call (backend.h) becomes a DataPlane call
 * (proto/tern/data.proto) on one of K data links to the node that owns the channel or queue,
 * and one control link per node carries Hello and Heartbeats. Used by `tern edge` and by
 * `tern dev` (whose node is in the same process, reached over a loopback link).
 *
 * Liveness: the control link pings every node_timeout_ms / 4 and is dead after four silent
 * intervals; a dead or draining node is down at once: its in-flight calls end with 50300,
 * new calls get 50300 without waiting. Links are redialed with backoff and jitter; when the
 * node answers again, every upstream subscription is restored with from_seq (the edge's
 * sessions see no gap and never resubscribe) and every queue consumer is reopened.
 *
 * Placement: a channel or queue belongs to the node with the highest rendezvous hash of
 * (name, the node's HOST:PORT as given in --nodes); every edge given the same list agrees. */
#ifndef TERN_BACKEND_LINK_H
#define TERN_BACKEND_LINK_H

#include <stdio.h>
#include <uv.h>

#include "backend.h"
#include "config.h"

struct backend_link;

/* cfg->nodes (comma-separated HOST:PORT), links, node_timeout_ms, node_id, region and
 * log_calls are read; cfg must outlive the backend. log gets the call log and the node
 * up/down lines. Returns NULL with one line in why. */
struct backend_link *backend_link_new(uv_loop_t *loop, const struct tern_config *cfg, FILE *log,
				      char *why, size_t why_len);
extern const struct backend_ops backend_link_ops;

/* Answers every waiting pull now with what it has (nothing) and withdraws it from its node:
 * for a drain, so long-polls get a reply instead of a closed connection. */
void backend_link_release_pulls(struct backend_link *bl);

/* Prometheus text: node up/down, heartbeat RTT, links, per-method calls. */
void backend_link_metrics(struct backend_link *bl, FILE *out);

/* Stops every dialer (links close; calls still in flight end with 50300). Every upstream
 * subscription, consumer and pull must be gone. done(arg) runs once all is released. */
void backend_link_close(struct backend_link *bl, void (*done)(void *arg), void *arg);

#endif
