/* How the edge reaches the broker: a table of asynchronous operations, each a
 * request and a completion callback. This is the shape of the link's calls
 * (proto/), so the in-process broker (backend_local.c) and a remote node are
 * interchangeable behind it.
 *
 * Rules for every op: a non-zero return means the callback will never run; a
 * zero return means it runs exactly once, never from inside the call. Strings
 * need not outlive the call. */
#ifndef TERN_BACKEND_H
#define TERN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "msg.h"

struct backend_sub; /* an upstream subscription */
struct backend_consumer; /* a queue consumer */
struct backend_pull; /* a waiting pull */

struct backend_ops {
	/* Publishes one message. cb(arg, err, seq, id). */
	int (*publish)(void *be, const struct broker_pub *p, broker_pub_cb cb, void *arg,
		       const char **why);
	/* Opens an upstream subscription: on_msg(msg_arg, msg) gets every
	 * message after the last seq reported to ready(ready_arg, err, last_seq),
	 * in order, from the moment ready runs until unsubscribe. On err the
	 * subscription is gone (do not unsubscribe). */
	int (*subscribe)(void *be, const char *chan, size_t len, uint32_t clients,
			 broker_msg_fn on_msg, void *msg_arg,
			 void (*ready)(void *arg, int err, uint64_t last_seq), void *ready_arg,
			 struct backend_sub **out);
	/* Updates how many clients an upstream subscription stands for. */
	void (*set_clients)(void *be, struct backend_sub *sub, uint32_t clients);
	/* Ends it, also while ready is pending (ready then never runs). */
	void (*unsubscribe)(void *be, struct backend_sub *sub);
	/* Reads history; cb as broker_hist_cb. */
	int (*history)(void *be, const struct broker_hist *h, broker_hist_cb cb, void *arg);
	/* Channel info: cb(arg, err, last_seq, subscribers). */
	int (*channel_info)(void *be, const char *chan, size_t len,
			    void (*cb)(void *arg, int err, uint64_t last_seq, uint64_t subs),
			    void *arg);
	/* Whether the backend can serve now (the node link is up). */
	bool (*ready)(void *be);

	/* Queues: each as the broker call of the same name (broker.h), with
	 * results through a callback where the broker answers synchronously. */
	int (*enqueue)(void *be, const struct broker_enq *e, broker_pub_cb cb, void *arg,
		       const char **why);
	int (*consume)(void *be, const char *queue, size_t len, uint32_t prefetch,
		       broker_deliver_fn fn, void *arg, struct backend_consumer **out);
	int (*set_prefetch)(void *be, struct backend_consumer *c, uint32_t prefetch);
	void (*cancel)(void *be, struct backend_consumer *c);
	/* Settles one delivery: cb(arg, err) with 0 or TERN_ENOTFOUND. */
	int (*settle)(void *be, const char *queue, size_t qlen, const char *id, size_t idlen,
		      bool ack, bool requeue, void (*cb)(void *arg, int err), void *arg);
	int (*pull)(void *be, const char *queue, size_t len, uint32_t max, uint64_t wait_ms,
		    broker_pull_cb cb, void *arg, struct backend_pull **out);
	void (*pull_cancel)(void *be, struct backend_pull *p);
	int (*queue_configure)(void *be, const char *queue, size_t len,
			       const struct broker_qconf *conf, void (*cb)(void *arg, int err),
			       void *arg, const char **why);
	/* Settings and counters: cb(arg, err, info), info valid during cb. */
	int (*queue_info)(void *be, const char *queue, size_t len,
			  void (*cb)(void *arg, int err, const struct broker_qinfo *info),
			  void *arg);
};

#endif
