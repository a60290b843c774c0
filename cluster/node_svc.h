/* The node's services: DataPlane (proto/tern/data.proto) and ControlPlane (control.proto)
 * served over links on one broker. Used by `tern node` (node_main.c, links accepted on the
 * node's port) and by `tern dev` (one node and one edge in one process, joined by a real
 * loopback link).
 *
 * Threading: everything runs on the broker's loop. */
#ifndef TERN_NODE_SVC_H
#define TERN_NODE_SVC_H

#include <stdbool.h>
#include <stdio.h>
#include <uv.h>

#include "broker.h"
#include "config.h"
#include "link.h"

struct node_svc;

struct node_svc_config {
	uv_loop_t *loop;
	struct broker *broker;
	const struct tern_config *cfg; /* node_id, region, log_calls...; must outlive the svc */
	FILE *log;                     /* call log (log_calls), usually stderr */
};

int node_svc_new(struct node_svc **out, const struct node_svc_config *c);

/* The link config every accepted link uses (router, interceptors, windows, on_close
 * bookkeeping); valid while the svc lives. */
const link_config *node_svc_link_config(struct node_svc *s);

/* Listens for links on host:port (port 0 picks one: node_svc_port says which). Plain
 * link_listen, without HTTP on the same port: for tern dev. */
int node_svc_listen(struct node_svc *s, const char *host, int port);
int node_svc_port(const struct node_svc *s);

/* Takes over a link accepted elsewhere (node_main.c's port sniffer, via link_adopt with
 * node_svc_link_config). */
void node_svc_adopt(struct node_svc *s, tern_link *l);

/* Drain: stops listening, sends goaway on every link, ends Subscribe and Consume streams with
 * UNAVAILABLE (retryable; edges resubscribe elsewhere or later), answers waiting pulls; calls in
 * flight finish. done(arg) runs once every link has closed (or after grace_ms, closing the
 * rest). The broker is still open then: the caller closes it. */
void node_svc_drain(struct node_svc *s, uint64_t grace_ms, void (*done)(void *arg), void *arg);

/* Prometheus text: links held per plane, per-method call counts, errors and latency. */
void node_svc_metrics(struct node_svc *s, FILE *out);
/* Links held now, per plane (enum link_plane). */
unsigned node_svc_links(const struct node_svc *s, int plane);

/* After drain's done (or when no link was ever accepted). */
void node_svc_free(struct node_svc *s);

#endif
