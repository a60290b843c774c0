/* Private to broker/: the broker's state, shared by broker.c (channels) and
 * queue.c (queues). */
#ifndef TERN_BROKER_INTERNAL_H
#define TERN_BROKER_INTERNAL_H

#include "broker.h"
#include "hmap.h"
#include "list.h"
#include "store.h"
#include "tern_limits.h"

struct queue;

/* A channel on the loop side: exists while it has subscribers or publishes in
 * flight. last_seq moves only when a commit comes back, so a subscriber told
 * "last seq is L" gets exactly the messages after L. */
struct chan {
	struct hmap_node node;
	struct broker *b;
	uint64_t last_seq;
	uint32_t inflight;    /* publishes queued to the store */
	uint64_t clients;     /* sum of subscriptions' client counts */
	struct list subs;
	char name[];
};

struct broker_sub {
	struct list link;
	struct chan *ch;
	broker_msg_fn fn;
	void *arg;
	uint32_t clients;
	uint64_t after_seq; /* it was told the channel stood here */
};

struct broker {
	struct broker_config cfg;
	struct store *store;
	struct hmap chans;
	struct hmap queues;	  /* struct queue by name; they live until close */
	struct list bound_queues; /* queues with channel bindings */
	struct hmap deliveries;	  /* struct delivery by id */
	uint64_t delivery_counter;
	struct list ready_pulls;  /* pulls answered, callbacks to run in broker_poll */
	struct list dispatch_pending; /* queues to dispatch in broker_poll */
	char id_prefix[20];
	char info_dlq[TERN_NAME_MAX_BYTES + 8]; /* broker_queue_info of an unused queue */
	uint64_t id_counter;
	bool closing;
	struct broker_stats stats;
	/* Set while fan-out walks a channel's subscribers, so a subscriber that
	 * unsubscribes from inside its callback does not break the walk. */
	struct list *walk_next;
};


int64_t broker_now_ms(struct broker *b);

/* queue.c */
int queues_load(struct broker *b, char *why, size_t why_len);
void queues_free(struct broker *b);
/* Before a clean close: records the attempt of every unacked delivery, so
 * after a restart attempt counts are exact (only a crash may undercount). */
void queues_record_inflight(struct broker *b);
/* A queue's name (for store ops that outlive the call: queues live until close). */
const char *queue_name(const struct queue *q, size_t *len);
/* Queue copies for a publish on chan: *targets (malloc'd, the caller frees;
 * NULL when *n is 0) gets every queue bound to it, each marked pending.
 * Returns 0, TERN_ERATELIMIT when one is full, or TERN_EUNAVAIL. */
int queues_bound_to(struct broker *b, const char *chan, size_t len, struct queue ***targets,
		    size_t *n);
/* After loading and starting the store: messages whose last allowed delivery
 * was never acked go to dead letters. */
void queues_after_load(struct broker *b);
/* The publish that made copies committed: add them (qseqs from the store). */
void queues_copies_committed(struct broker *b, struct queue **targets, const uint64_t *qseqs,
			     size_t n, struct tern_msg *m);
/* From broker_poll: deferred dispatch and answered pulls. */
void queues_poll(struct broker *b);

#endif
