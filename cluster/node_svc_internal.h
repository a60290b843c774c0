/* Private to node_svc*.c: the service's state and the helpers its two files share. */
#ifndef TERN_NODE_SVC_INTERNAL_H
#define TERN_NODE_SVC_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "link_call.h"
#include "list.h"
#include "msg.h"
#include "node_svc.h"
#include "tern/data.pb-c.h"

/* Live messages held per channel while its history catch-up runs: beyond it the channel is
 * detached with 50300 (the edge re-adds it from its last seq), so a slow store cannot make one
 * subscription hold unbounded memory. */
#define NODE_SUB_HELD_MAX 10000
/* Deliveries a Consume stream keeps while its send queue is full: the broker never hands out
 * more than the prefetch (<= TERN_QUEUE_PREFETCH_MAX) unacked, so this bound is never reached
 * by a correct broker; above it the stream ends (retryable). */
#define NODE_CONSUME_PENDING_MAX 2000
/* Accepted links: edges hold 1 + K, peers a few each. */
#define NODE_LINK_MAX_STREAMS 65536u
#define NODE_LINK_SENDBUF_BYTES (8u * 1024u * 1024u)
#define NODE_LINK_PING_MS 1000u

struct node_link {
	tern_link *l;
	int plane; /* counted in plane_links once ready; LINK_PLANE_ANY before */
};

struct node_svc {
	uv_loop_t *loop;
	struct broker *broker;
	const struct tern_config *cfg;
	FILE *log;
	link_router *router;
	link_mw_log log_state;
	link_mw_methods metrics; /* per method, both sides */
	link_interceptor icpt[2];
	link_config lcfg;
	link_listener *lst;
	int port;
	struct node_link *links;
	size_t nlinks, links_cap;
	unsigned plane_links[3];
	struct list subs;  /* struct sub_stream.node: open Subscribe streams */
	struct list conss; /* struct cons_stream.node: open Consume streams */
	struct list hbs;   /* open Heartbeats streams */
	uint64_t messages_out;
	/* drain */
	bool draining, drain_done, lst_closing, timer_on;
	uv_timer_t grace;
	void (*done)(void *arg);
	void *done_arg;
};

/* The service a call belongs to (every accepted link's ud is the service). */
static inline struct node_svc *svc_of(link_call *c) { return link_ud(link_call_link(c)); }

/* Ends c with the Tern error err (negative), the link code it maps to and a packed
 * tern.data.Error{code, message} as detail. why NULL: tern_err_str(err). */
void node_fail(link_call *c, int err, const char *why);

/* Points m's fields at msg's bytes (no copies): valid while msg is referenced. */
void node_fill_message(Tern__Data__Message *m, const struct tern_msg *msg);

/* Routes Subscribe and Consume (node_svc_stream.c). Returns 0 or a negative errno. */
int node_stream_routes(link_router *r);
/* Drain: ends every Subscribe and Consume stream with UNAVAILABLE (retryable). */
void node_streams_drain(struct node_svc *s);

#endif
