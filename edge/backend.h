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
};

#endif
