/* The durable store: one SQLite database in WAL mode, owned by one thread.
 *
 * The loop thread submits ops; the store thread takes everything queued, runs
 * the writes of that batch in ONE transaction (group commit), commits, runs the
 * reads, and hands the ops back. The loop collects them with store_poll(), which
 * runs each op's done callback on the loop thread. The store thread assigns
 * each channel's seq inside the transaction, so a rolled-back batch leaves no
 * gap. It never touches the loop: it only calls cfg.notify, which must be safe
 * from any thread (uv_async_send is). */
#ifndef TERN_STORE_H
#define TERN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

struct store;

struct store_config {
	const char *dir;	     /* data directory; created if missing */
	bool sync_full;		     /* PRAGMA synchronous: FULL (fsync per commit) or NORMAL */
	uint32_t history_messages;   /* keep at least the last N per channel */
	uint64_t history_age_ms;     /* ... and everything younger than this */
	uint64_t idem_window_ms;     /* idempotency keys expire after this */
	uint64_t sweep_interval_ms;  /* how often the thread sweeps expired rows itself */
	size_t queue_max_bytes;	     /* bound on data waiting for the thread */
	uint32_t wal_ckpt_pages;     /* WAL pages that wake the checkpointer (0: default) */
	uint32_t wal_max_pages;	     /* WAL pages past which the writer checkpoints (0: default) */
	int64_t (*now_ms)(void *arg); /* Unix ms, required; injected so tests control time */
	void *clock_arg;
	void (*notify)(void *arg);   /* completions are ready: call store_poll soon */
	void *notify_arg;
};

enum store_op_kind {
	STORE_OP_PUBLISH,
	STORE_OP_HISTORY,
	STORE_OP_SWEEP,
	STORE_OP_ENQUEUE,  /* queue, msg, idem -> qseq (or dup) */
	STORE_OP_QDELETE,  /* queue, qseq: acked */
	STORE_OP_QMOVE,	   /* src_queue, src_qseq -> queue (dead letter): new qseq */
	STORE_OP_QATTEMPT, /* queue, qseq, attempt: a failed delivery recorded */
	STORE_OP_QCONFIG,  /* queue, qcfg */
};

/* A queue's settings as stored. dead_letter "" = the default ({q}.dlq);
 * bind holds patterns separated by '\n' (names hold no whitespace). */
struct store_qconfig {
	uint64_t ack_timeout_ms;
	uint32_t max_attempts;
	const char *dead_letter;
	const char *bind;
};

struct store_op {
	struct store_op *next;
	enum store_op_kind kind;
	int err; /* set by the store: 0 or a Tern error */
	/* Runs on the loop thread inside store_poll; owns op afterwards. */
	void (*done)(struct store_op *op);

	/* STORE_OP_PUBLISH: msg (with chan, id, ts set) gets its seq. With an
	 * idempotency key seen within the window, dup is set and dup_seq/dup_id
	 * give the first publish; msg is then not stored. */
	struct tern_msg *msg;
	const char *idem_key;
	size_t idem_len;
	bool dup;
	uint64_t dup_seq;
	char dup_id[TERN_MSG_ID_MAX];

	/* STORE_OP_HISTORY: messages with after_seq < seq < before_seq
	 * (before_seq 0 = no upper bound), at most limit, oldest first or newest
	 * first with backwards. Results in msgs[0..nmsgs), owned by the op's
	 * owner (unref each, free the array). */
	const char *chan;
	size_t chan_len;
	uint64_t after_seq, before_seq;
	uint32_t limit;
	bool backwards;
	struct tern_msg **msgs;
	size_t nmsgs;

	/* Queue ops. For STORE_OP_PUBLISH, copies[0..ncopies) name the queues
	 * bound to the channel; each gets a copy in the same transaction and
	 * copy_qseqs[i] its qseq (no copy is made for an idempotent repeat). */
	const char *queue;
	size_t queue_len;
	const char *src_queue;
	size_t src_queue_len;
	uint64_t qseq, src_qseq;
	uint32_t attempt;
	bool from_channel; /* QMOVE: msg is a binding's copy (keeps its channel) */
	struct store_qconfig qcfg;
	const char *const *copies;
	const size_t *copy_lens;
	uint64_t *copy_qseqs;
	size_t ncopies;
};

/* What store_load_queues reports: each queue once, then its messages in
 * qseq order (msg has one reference for the callee). */
struct store_load_ops {
	int (*queue)(void *arg, const char *name, size_t len, const struct store_qconfig *cfg,
		     bool configured);
	int (*qmsg)(void *arg, const char *queue, size_t qlen, uint64_t qseq, struct tern_msg *msg,
		    bool from_channel, uint32_t attempt);
};

struct store_stats {
	uint64_t batches;	  /* committed write transactions */
	uint64_t batch_ops;	  /* publishes in them */
	uint64_t commit_us_sum;
	uint64_t commit_hist[12]; /* counts per bucket of store_commit_buckets_s */
	uint64_t checkpoints;	  /* PASSIVE checkpoints by the checkpointer thread */
	uint64_t checkpoint_errors;
	uint64_t checkpoint_us_sum;
	uint64_t writer_checkpoints; /* by the writer, the WAL having reached its bound */
};
extern const double store_commit_buckets_s[12]; /* last one is +Inf */

/* Opens (creating if needed) DIR/tern.db and loads channel state; the thread
 * is not running yet. On failure returns a Tern error with one line in why_buf
 * (the store is then freed). */
int store_open(struct store **out, const struct store_config *cfg, char *why_buf, size_t why_len);

/* Before store_start only: reports every queue and its messages through ops,
 * on the calling thread. Returns 0 or the first non-zero a callback returned
 * (or a Tern error). */
int store_load_queues(struct store *s, const struct store_load_ops *ops, void *arg);

/* Starts the store thread. Returns 0 or TERN_EINTERNAL. */
int store_start(struct store *s);

/* Queues op for the thread. Returns 0 (op's done will run from store_poll), or
 * TERN_EUNAVAIL when the store is closing or its queue is over the bound (done
 * will not run; the caller still owns op). */
int store_submit(struct store *s, struct store_op *op);

/* Runs the done callbacks of finished ops on the calling thread. Returns how
 * many ran. */
size_t store_poll(struct store *s);

/* The last committed seq of a channel (0 for a channel never published to).
 * Thread-safe. */
uint64_t store_last_seq(struct store *s, const char *chan, size_t len);

/* A copy of the counters. Thread-safe. */
void store_get_stats(struct store *s, struct store_stats *out);

/* Stops taking ops, lets the thread finish and commit everything queued, joins
 * it and closes the database. Completions stay for store_poll; then
 * store_free releases the rest. */
void store_close(struct store *s);
void store_free(struct store *s);

#endif
