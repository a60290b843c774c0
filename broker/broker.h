/* The message engine, free of sockets: channels with their seq, subscribers
 * and fan-out, over the durable store.
 *
 * Threading: every function here runs on the owner's loop thread. The store
 * works on its own thread and calls cfg.notify (from that thread) when results
 * are ready; the owner then calls broker_poll() on the loop thread, which runs
 * completions and fan-out. No callback runs from inside the call that started
 * it; a call that returns an error never runs its callback. */
#ifndef TERN_BROKER_H
#define TERN_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

struct broker;
struct broker_sub;
struct store_stats;

struct broker_config {
	const char *data_dir;
	bool sync_full;
	size_t max_message_bytes;
	uint32_t history_messages;
	uint64_t history_age_ms;
	uint64_t idem_window_ms;
	uint64_t sweep_interval_ms;   /* 0: once a minute */
	size_t store_queue_max_bytes; /* 0: the default */
	int64_t (*now_ms)(void *arg); /* NULL: the wall clock */
	void *clock_arg;
	void (*notify)(void *arg);    /* thread-safe wake-up of the loop */
	void *notify_arg;
	uint64_t queue_max_depth;     /* 0: TERN_QUEUE_DEPTH_DEFAULT */
	uint32_t wal_ckpt_pages;      /* 0: TERN_STORE_CKPT_PAGES (see store_config) */
	uint32_t wal_max_pages;       /* 0: TERN_STORE_WAL_MAX_PAGES */
};

/* A publish request. Strings need not be NUL-terminated; the broker copies
 * what it keeps. name NULL = no event name; idem_key NULL = none. */
struct broker_pub {
	const char *chan;
	size_t chan_len;
	const char *name;
	size_t name_len;
	const void *data;
	size_t data_len; /* the message size the limit applies to */
	int enc;	 /* enum tern_enc */
	const char *idem_key;
	size_t idem_len;
};

/* err 0: seq and id of the message (the first one's, for an idempotent
 * repeat). Otherwise a Tern error (50300 retryable when the store is behind). */
typedef void (*broker_pub_cb)(void *arg, int err, uint64_t seq, const char *id);
/* Messages of a subscribed channel, in seq order, after they are durable. The
 * callee takes a reference with msg_ref if it keeps msg. */
typedef void (*broker_msg_fn)(void *arg, struct tern_msg *msg);
/* History results: msgs[0..n) owned by the callee (msg_unref each, then
 * free(msgs)); msgs may be NULL when n is 0. */
typedef void (*broker_hist_cb)(void *arg, int err, struct tern_msg **msgs, size_t n);

struct broker_hist {
	const char *chan;
	size_t chan_len;
	uint64_t after_seq;  /* exclusive lower bound (0: from the oldest) */
	uint64_t before_seq; /* exclusive upper bound (0: none) */
	uint32_t limit;	     /* 1..TERN_HISTORY_PAGE_MAX */
	bool backwards;	     /* newest first */
};

struct broker_stats {
	uint64_t messages_in;	 /* publishes made durable (not repeats) */
	uint64_t publish_errors;
	uint64_t channels_active; /* channels with subscribers or writes in flight */
};

/* Opens the store in cfg->data_dir and returns a broker. On failure returns a
 * Tern error with one line in why. */
int broker_open(struct broker **out, const struct broker_config *cfg, char *why, size_t why_len);

/* Validates and queues a publish. Returns 0 (cb will run once), or
 * TERN_EBADNAME, TERN_ETOOLARGE, TERN_EBADREQ, TERN_EUNAVAIL (cb never runs),
 * with *why naming the problem when why is not NULL. */
int broker_publish(struct broker *b, const struct broker_pub *p, broker_pub_cb cb, void *arg,
		   const char **why);

/* Subscribes fn to a channel's live messages: every message with seq greater
 * than *last_seq (the channel's last seq now) reaches fn, in order, until
 * broker_unsubscribe. clients is how many end clients this subscription
 * stands for (an edge aggregates many), for channel info. */
int broker_subscribe(struct broker *b, const char *chan, size_t len, broker_msg_fn fn, void *arg,
		     uint32_t clients, struct broker_sub **out, uint64_t *last_seq);
void broker_sub_set_clients(struct broker_sub *sub, uint32_t clients);
/* Ends a subscription; fn is not called again. */
void broker_unsubscribe(struct broker_sub *sub);

/* Reads history. Returns 0 (cb runs once) or a Tern error. */
int broker_history(struct broker *b, const struct broker_hist *h, broker_hist_cb cb, void *arg);

/* A channel's last seq and subscriber count, synchronously (never blocks: the
 * seq lives in memory). */
void broker_channel_info(struct broker *b, const char *chan, size_t len, uint64_t *last_seq,
			 uint64_t *subscribers);

/* Queues a sweep of expired history and idempotency keys now (also done by
 * the store on its own every sweep_interval_ms). cb may be NULL. */
int broker_sweep(struct broker *b, void (*cb)(void *arg, int err), void *arg);

/* Runs ready completions and fan-out. Call on the loop after notify. */
void broker_poll(struct broker *b);

void broker_get_stats(struct broker *b, struct broker_stats *out);
void broker_store_stats(struct broker *b, struct store_stats *out);

/* --- Queues (direct): each message to one consumer at a time, acked ---
 *
 * Queues are created on first use with defaults (ack timeout 30 s, 5
 * attempts, dead letters to "{q}.dlq"). A delivery not acked within the ack
 * timeout, nacked with requeue, or held by a consumer that is cancelled, goes
 * back to the head of its queue; the delivery that was number max_attempts,
 * or a nack without requeue, moves the message to the dead-letter queue. */

struct broker_consumer;
struct broker_pull;

/* A message handed to a consumer. Valid during the callback; msg_ref(msg) to
 * keep it. msg->chan is the channel it was published on when from_channel
 * (a binding's copy), else the queue's name. */
struct broker_delivery {
	const char *queue;
	size_t queue_len;
	const char *delivery_id;
	struct tern_msg *msg;
	bool from_channel;
	uint32_t attempt;
};
typedef void (*broker_deliver_fn)(void *arg, const struct broker_delivery *d);
/* Pull results: ds[0..n) valid during the callback; n may be 0 (timed out). */
typedef void (*broker_pull_cb)(void *arg, int err, const struct broker_delivery *ds, size_t n);

struct broker_enq {
	const char *queue;
	size_t queue_len;
	const void *data;
	size_t data_len;
	int enc;
	const char *idem_key;
	size_t idem_len;
};

/* Changes to a queue's settings; unset fields keep their value. bind
 * replaces the whole pattern list ("orders:*" matches any name starting
 * "orders:"; a pattern without '*' matches one name). */
struct broker_qconf {
	bool has_ack_timeout, has_max_attempts, has_dead_letter, has_bind;
	uint64_t ack_timeout_ms;	/* TERN_QUEUE_ACK_TIMEOUT_MS_MIN..MAX */
	uint32_t max_attempts;		/* 1..TERN_QUEUE_ATTEMPTS_MAX */
	const char *dead_letter;
	size_t dead_letter_len;
	const char *const *bind;
	const size_t *bind_lens;
	size_t nbind;			/* 0..TERN_QUEUE_BINDS_MAX */
};

/* A queue's settings and counters, for info, PUT replies and metrics.
 * Pointers are valid until the next call that changes the broker. */
struct broker_qinfo {
	const char *name;
	size_t name_len;
	uint64_t ready, unacked, consumers;
	uint64_t delivered, redelivered, dead_lettered;
	uint64_t ack_timeout_ms;
	uint32_t max_attempts;
	const char *dead_letter; /* resolved ("{q}.dlq" by default) */
	const char *const *bind;
	size_t nbind;
};

/* Enqueues one message; cb(arg, err, 0, id) after it is durable. Errors as
 * broker_publish, plus TERN_ERATELIMIT when the queue is at its depth limit. */
int broker_enqueue(struct broker *b, const struct broker_enq *e, broker_pub_cb cb, void *arg,
		   const char **why);

/* Registers a consumer that gets up to prefetch (1..1000) unacked deliveries
 * at a time, each through fn. Returns 0 or a Tern error. */
int broker_consume(struct broker *b, const char *queue, size_t len, uint32_t prefetch,
		   broker_deliver_fn fn, void *arg, struct broker_consumer **out);
int broker_consumer_set_prefetch(struct broker_consumer *c, uint32_t prefetch);
/* Ends the consumer: fn is not called again; its unacked deliveries count
 * as failed and go back to the queue (or to dead letters). */
void broker_consumer_cancel(struct broker_consumer *c);

/* Settles a delivery of that queue. Returns 0, or TERN_ENOTFOUND for an
 * unknown, stale or other queue's delivery id. */
int broker_ack(struct broker *b, const char *queue, size_t qlen, const char *id, size_t idlen);
int broker_nack(struct broker *b, const char *queue, size_t qlen, const char *id, size_t idlen,
		bool requeue);

/* Takes up to max (1..1000) deliveries, waiting up to wait_ms (0..30000) for
 * the first. cb runs once, later (never inside this call). Pulled deliveries
 * run under the ack timeout like any other. */
int broker_pull(struct broker *b, const char *queue, size_t len, uint32_t max, uint64_t wait_ms,
		broker_pull_cb cb, void *arg, struct broker_pull **out);
/* Withdraws a pull whose cb has not run; cb will not run. */
void broker_pull_cancel(struct broker_pull *p);
/* Answers every waiting pull now with what it has (usually nothing): for a
 * drain, so long-polls get a reply instead of a closed connection. */
void broker_pulls_release(struct broker *b);

/* Merges conf into the queue's settings and makes them durable; cb(arg, err)
 * runs after the commit. Returns 0 or TERN_EBADREQ/TERN_EBADNAME with why. */
int broker_queue_configure(struct broker *b, const char *queue, size_t len,
			   const struct broker_qconf *conf, void (*cb)(void *arg, int err),
			   void *arg, const char **why);
/* Settings and counters; a queue never used reads as defaults and zeros. */
int broker_queue_info(struct broker *b, const char *queue, size_t len, struct broker_qinfo *out);
/* Calls fn for every queue (for metrics). */
void broker_queue_each(struct broker *b, void (*fn)(void *arg, const struct broker_qinfo *q),
		       void *arg);

/* Expires ack timeouts and pull waits. Call every TERN_QUEUE_TICK_MS or so. */
void broker_tick(struct broker *b);

/* Graceful end: refuses new publishes, waits for the store to commit what is
 * queued, runs the remaining completions (so every publisher gets its answer),
 * closes the database. Subscriptions, consumers and pulls must be gone first.
 * Then frees. */
void broker_close(struct broker *b);

#endif
