/* Private to broker/: the queue engine's structures, shared by queue.c (the
 * engine: deliveries, dispatch, enqueue, consumers, settling, pulls, ticks)
 * and queue_admin.c (settings, info, loading, teardown). */
#ifndef TERN_QUEUE_INTERNAL_H
#define TERN_QUEUE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "broker_internal.h"

struct qmsg {
	struct list link; /* in queue->ready, or unlinked while delivered */
	uint64_t qseq;
	struct tern_msg *msg;
	bool from_channel;
	uint32_t attempt; /* deliveries so far */
};

struct queue {
	struct hmap_node node;
	struct broker *b;
	struct list ready;	/* struct qmsg, head first */
	struct list inflight;	/* struct delivery by deadline */
	struct list consumers;	/* struct broker_consumer */
	struct list waiters;	/* struct broker_pull waiting for work */
	struct list bound_link; /* in b->bound_queues when it has patterns */
	struct list dispatch_link; /* in b->dispatch_pending */
	struct list *rr;	/* round-robin cursor into consumers */
	uint64_t nready, nunacked, nconsumers, pending; /* pending: enqueues not committed */
	uint64_t delivered, redelivered, dead_lettered;
	uint64_t ack_timeout_ms;
	uint32_t max_attempts;
	char *dead_letter; /* NULL: "{name}.dlq" */
	char **bind;
	size_t nbind;
	char dlq_default[TERN_NAME_MAX_BYTES + 1];
	char name[];
};

struct delivery {
	struct hmap_node node; /* in b->deliveries */
	struct list tlink;     /* in queue->inflight */
	struct list clink;     /* in consumer->deliveries (if any) */
	struct queue *q;
	struct qmsg *m;
	struct broker_consumer *c;
	int64_t deadline_ms;
	char id[40];
};

struct broker_consumer {
	struct list link;
	struct queue *q;
	uint32_t prefetch, inflight;
	broker_deliver_fn fn;
	void *arg;
	struct list deliveries;
};

struct broker_pull {
	struct list link; /* in queue->waiters or b->ready_pulls */
	struct queue *q;
	uint32_t max;
	int64_t deadline_ms;
	broker_pull_cb cb;
	void *arg;
	struct delivery **got;
	size_t ngot;
	bool answered;
};

struct enq_op {
	struct store_op op;
	struct queue *q;
	broker_pub_cb cb;
	void *arg;
	char idem[TERN_IDEM_KEY_MAX_BYTES];
};

struct move_op {
	struct store_op op;
	struct queue *from, *to;
	uint32_t attempt;
	char src[];
};

struct conf_op {
	struct store_op op;
	void (*cb)(void *arg, int err);
	void *arg;
	char *bind_text;
};

/* queue.c, used by queue_admin.c */
struct queue *q_get(struct broker *b, const char *name, size_t len, bool create);
const char *q_dlq_name(const struct queue *q);
struct qmsg *q_msg_new(struct tern_msg *msg, uint64_t qseq, bool from_channel, uint32_t attempt);
void q_msg_free(struct qmsg *m);
/* Puts m on q's ready list: at the tail, or (given_back) in qseq order. */
void q_ready_push(struct queue *q, struct qmsg *m, bool given_back);
/* Moves m (out of every list) to q's dead-letter queue. */
void q_dead_letter(struct queue *q, struct qmsg *m);
void q_delivery_unlink(struct delivery *d);
/* A write-behind store op (ack delete, attempt record). */
void q_submit(struct queue *q, enum store_op_kind kind, uint64_t qseq, uint32_t attempt);
/* Queues for which pick is true, in a malloc'd array (walks that may create
 * queues must not run over the map itself). */
size_t q_collect(struct broker *b, bool (*pick)(struct queue *q, int64_t now), int64_t now,
		 struct queue ***out);
/* Dispatch from the next broker_poll (never inside an API call). */
void q_schedule_dispatch(struct queue *q);

#endif
