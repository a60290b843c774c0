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

/* Graceful end: refuses new publishes, waits for the store to commit what is
 * queued, runs the remaining completions (so every publisher gets its answer),
 * closes the database. Subscriptions must be gone first. Then frees. */
void broker_close(struct broker *b);

#endif
