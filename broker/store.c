#include "store.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tern_err.h"
#include "hmap.h"
#include "list.h"
#include "tern_limits.h"

/* A channel as the store thread knows it. seq_pending runs ahead of
 * seq_committed inside a transaction; seq_committed is read by the loop under
 * the mutex. */
struct schan {
	struct hmap_node node;
	int64_t db_id;
	uint64_t seq_pending;
	uint64_t seq_committed;
	bool in_db;	     /* its channels (or queues) row is committed */
	bool is_queue;
	uint64_t batch_mark; /* batch that touched it last */
	char name[];
};

enum {
	ST_INS_CHAN, ST_UPD_CHAN, ST_INS_MSG, ST_GET_IDEM, ST_PUT_IDEM,
	ST_HIST_FWD, ST_HIST_BACK, ST_SWEEP_MSG, ST_SWEEP_IDEM,
	ST_BEGIN, ST_COMMIT, ST_ROLLBACK,
	ST_INS_QUEUE, ST_UPD_QUEUE, ST_INS_QMSG, ST_DEL_QMSG, ST_QATTEMPT, ST_QCONFIG,
	ST_GET_QIDEM, ST_PUT_QIDEM, ST_SWEEP_QIDEM, ST_COUNT
};

static const char *const sql_text[ST_COUNT] = {
	[ST_INS_CHAN] = "INSERT INTO channels(name, last_seq) VALUES (?1, 0)",
	[ST_UPD_CHAN] = "UPDATE channels SET last_seq = ?2 WHERE id = ?1",
	[ST_INS_MSG] = "INSERT INTO messages(chan_id, seq, id, name, data, enc, ts) "
		       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_GET_IDEM] = "SELECT seq, msg_id, ts FROM idem WHERE chan_id = ?1 AND key = ?2",
	[ST_PUT_IDEM] = "INSERT OR REPLACE INTO idem(chan_id, key, seq, msg_id, ts) "
			"VALUES (?1, ?2, ?3, ?4, ?5)",
	[ST_HIST_FWD] = "SELECT seq, id, name, data, enc, ts FROM messages WHERE chan_id = ?1 "
			"AND seq > ?2 AND seq < ?3 ORDER BY seq ASC LIMIT ?4",
	[ST_HIST_BACK] = "SELECT seq, id, name, data, enc, ts FROM messages WHERE chan_id = ?1 "
			 "AND seq > ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4",
	/* Retention: a row goes only when it is both older than the age limit and
	 * outside the last N of its channel ("at least N or T", as the contract
	 * promises). The ts index keeps the scan to old rows. */
	[ST_SWEEP_MSG] = "DELETE FROM messages WHERE ts < ?1 AND seq <= "
			 "(SELECT c.last_seq FROM channels c WHERE c.id = messages.chan_id) - ?2",
	[ST_SWEEP_IDEM] = "DELETE FROM idem WHERE ts < ?1",
	[ST_INS_QUEUE] = "INSERT INTO queues(name, last_qseq) VALUES (?1, 0)",
	[ST_UPD_QUEUE] = "UPDATE queues SET last_qseq = ?2 WHERE id = ?1",
	[ST_INS_QMSG] = "INSERT INTO qmsgs(queue_id, qseq, id, chan, name, data, enc, ts, attempt) "
			"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[ST_DEL_QMSG] = "DELETE FROM qmsgs WHERE queue_id = ?1 AND qseq = ?2",
	[ST_QATTEMPT] = "UPDATE qmsgs SET attempt = ?3 WHERE queue_id = ?1 AND qseq = ?2",
	[ST_QCONFIG] = "UPDATE queues SET configured = 1, ack_timeout_ms = ?2, max_attempts = ?3, "
		       "dead_letter = ?4, bind = ?5 WHERE id = ?1",
	[ST_GET_QIDEM] = "SELECT qseq, msg_id, ts FROM qidem WHERE queue_id = ?1 AND key = ?2",
	[ST_PUT_QIDEM] = "INSERT OR REPLACE INTO qidem(queue_id, key, qseq, msg_id, ts) "
			 "VALUES (?1, ?2, ?3, ?4, ?5)",
	[ST_SWEEP_QIDEM] = "DELETE FROM qidem WHERE ts < ?1",
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS channels(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
	" last_seq INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS messages(chan_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
	" id TEXT NOT NULL, name TEXT, data BLOB NOT NULL, enc INTEGER NOT NULL, ts INTEGER NOT NULL,"
	" PRIMARY KEY(chan_id, seq)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS messages_ts ON messages(ts);"
	"CREATE TABLE IF NOT EXISTS idem(chan_id INTEGER NOT NULL, key TEXT NOT NULL,"
	" seq INTEGER NOT NULL, msg_id TEXT NOT NULL, ts INTEGER NOT NULL,"
	" PRIMARY KEY(chan_id, key)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS idem_ts ON idem(ts);"
	"CREATE TABLE IF NOT EXISTS queues(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
	" last_qseq INTEGER NOT NULL, configured INTEGER NOT NULL DEFAULT 0,"
	" ack_timeout_ms INTEGER, max_attempts INTEGER, dead_letter TEXT, bind TEXT);"
	"CREATE TABLE IF NOT EXISTS qmsgs(queue_id INTEGER NOT NULL, qseq INTEGER NOT NULL,"
	" id TEXT NOT NULL, chan TEXT, name TEXT, data BLOB NOT NULL, enc INTEGER NOT NULL,"
	" ts INTEGER NOT NULL, attempt INTEGER NOT NULL, PRIMARY KEY(queue_id, qseq)) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS qidem(queue_id INTEGER NOT NULL, key TEXT NOT NULL,"
	" qseq INTEGER NOT NULL, msg_id TEXT NOT NULL, ts INTEGER NOT NULL,"
	" PRIMARY KEY(queue_id, key)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS qidem_ts ON qidem(ts);";

const double store_commit_buckets_s[12] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
					   0.05, 0.1, 0.25, 0.5, 1.0, 1e300};

struct store {
	struct store_config cfg;
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t mu;
	pthread_cond_t cond;
	/* the checkpointer: its own thread and connection, woken by the writer's WAL hook */
	sqlite3 *ckpt_db;
	pthread_t ckpt_thread;
	bool ckpt_started;
	bool ckpt_wanted; /* under mu */
	atomic_bool ckpt_yield;	  /* the writer wants the checkpoint lock: stop after this pass */
	pthread_cond_t ckpt_cond;
	struct store_op *in_head, **in_tail; /* loop -> thread */
	size_t in_bytes, in_ops;
	struct store_op *out_head, **out_tail; /* thread -> loop */
	bool stopping;
	struct hmap chans; /* store thread writes; loop reads under mu */
	struct hmap queues; /* store thread only (after store_start) */
	struct store_stats stats;

	/* store thread only */
	uint64_t batch_no;
	struct schan **touched;
	size_t ntouched, touched_cap;
	int64_t last_sweep_ms;
};

static int map_sqlite(int rc)
{
	if (rc == SQLITE_FULL || rc == SQLITE_BUSY || rc == SQLITE_LOCKED || rc == SQLITE_IOERR)
		return TERN_EUNAVAIL;
	return TERN_EINTERNAL;
}

static size_t op_bytes(const struct store_op *op)
{
	if (op->kind == STORE_OP_PUBLISH || op->kind == STORE_OP_ENQUEUE)
		return op->msg->data_len + op->msg->chan_len + op->msg->name_len + op->idem_len;
	return 0;
}

static int64_t now_ms(struct store *s) { return s->cfg.now_ms(s->cfg.clock_arg); }

/* --- channel map (store thread; mutations under mu so the loop can read) --- */

static struct schan *find_in(struct hmap *m, const char *name, size_t len)
{
	struct hmap_node *n = hmap_get(m, name, len);
	return n ? container_of(n, struct schan, node) : NULL;
}

static struct schan *chan_find(struct store *s, const char *name, size_t len)
{
	struct hmap_node *n = hmap_get(&s->chans, name, len);
	return n ? container_of(n, struct schan, node) : NULL;
}

static struct schan *chan_add(struct store *s, const char *name, size_t len, int64_t id,
			      uint64_t last_seq, bool in_db);
static struct schan *queue_add(struct store *s, const char *name, size_t len, int64_t id,
			       uint64_t last_qseq, bool in_db)
{
	struct schan *c = calloc(1, sizeof(*c) + len + 1);
	if (!c)
		return NULL;
	memcpy(c->name, name, len);
	c->db_id = id;
	c->seq_pending = c->seq_committed = last_qseq;
	c->in_db = in_db;
	c->is_queue = true;
	if (hmap_put(&s->queues, &c->node, c->name, len) != 0) {
		free(c);
		return NULL;
	}
	return c;
}

static struct schan *chan_add(struct store *s, const char *name, size_t len, int64_t id,
			      uint64_t last_seq, bool in_db)
{
	struct schan *c = calloc(1, sizeof(*c) + len + 1);
	if (!c)
		return NULL;
	memcpy(c->name, name, len);
	c->db_id = id;
	c->seq_pending = c->seq_committed = last_seq;
	c->in_db = in_db;
	pthread_mutex_lock(&s->mu);
	int rc = hmap_put(&s->chans, &c->node, c->name, len);
	pthread_mutex_unlock(&s->mu);
	if (rc != 0) {
		free(c);
		return NULL;
	}
	return c;
}

static void chan_drop(struct store *s, struct schan *c)
{
	pthread_mutex_lock(&s->mu);
	hmap_del(c->is_queue ? &s->queues : &s->chans, &c->node);
	pthread_mutex_unlock(&s->mu);
	free(c);
}

uint64_t store_last_seq(struct store *s, const char *chan, size_t len)
{
	pthread_mutex_lock(&s->mu);
	struct schan *c = chan_find(s, chan, len);
	uint64_t seq = c ? c->seq_committed : 0;
	pthread_mutex_unlock(&s->mu);
	return seq;
}

/* --- the write transaction --- */

static int touch(struct store *s, struct schan *c)
{
	if (c->batch_mark == s->batch_no)
		return 0;
	if (s->ntouched == s->touched_cap) {
		size_t cap = s->touched_cap ? s->touched_cap * 2 : 64;
		struct schan **t = realloc(s->touched, cap * sizeof(*t));
		if (!t)
			return TERN_EINTERNAL;
		s->touched = t;
		s->touched_cap = cap;
	}
	c->batch_mark = s->batch_no;
	s->touched[s->ntouched++] = c;
	return 0;
}

static int step_done(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : map_sqlite(rc);
}

static int chan_for_write(struct store *s, const struct tern_msg *m, struct schan **out)
{
	struct schan *c = chan_find(s, m->chan, m->chan_len);
	if (!c) {
		sqlite3_stmt *st = s->st[ST_INS_CHAN];
		sqlite3_bind_text(st, 1, m->chan, (int)m->chan_len, SQLITE_STATIC);
		int rc = step_done(st);
		if (rc != 0)
			return rc;
		c = chan_add(s, m->chan, m->chan_len, sqlite3_last_insert_rowid(s->db), 0, false);
		if (!c)
			return TERN_EINTERNAL;
	}
	*out = c;
	return touch(s, c);
}

/* Looks the key up; returns 1 with op->dup* filled when it is a live duplicate. */
static int idem_check(struct store *s, struct schan *c, struct store_op *op, int64_t now)
{
	sqlite3_stmt *st = s->st[c->is_queue ? ST_GET_QIDEM : ST_GET_IDEM];
	int found = 0;
	sqlite3_bind_int64(st, 1, c->db_id);
	sqlite3_bind_text(st, 2, op->idem_key, (int)op->idem_len, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_int64(st, 2) >= now - (int64_t)s->cfg.idem_window_ms) {
		op->dup = true;
		op->dup_seq = (uint64_t)sqlite3_column_int64(st, 0);
		snprintf(op->dup_id, sizeof(op->dup_id), "%s", (const char *)sqlite3_column_text(st, 1));
		found = 1;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? found : map_sqlite(rc);
}

static int idem_put(struct store *s, struct schan *c, const struct store_op *op, uint64_t seq)
{
	sqlite3_stmt *st = s->st[c->is_queue ? ST_PUT_QIDEM : ST_PUT_IDEM];
	sqlite3_bind_int64(st, 1, c->db_id);
	sqlite3_bind_text(st, 2, op->idem_key, (int)op->idem_len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, (int64_t)seq);
	sqlite3_bind_text(st, 4, op->msg->id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, op->msg->ts_ms);
	return step_done(st);
}

static int queue_for_write(struct store *s, const char *name, size_t len, struct schan **out)
{
	struct schan *q = find_in(&s->queues, name, len);
	if (!q) {
		sqlite3_stmt *st = s->st[ST_INS_QUEUE];
		sqlite3_bind_text(st, 1, name, (int)len, SQLITE_STATIC);
		int rc = step_done(st);
		if (rc != 0)
			return rc;
		q = queue_add(s, name, len, sqlite3_last_insert_rowid(s->db), 0, false);
		if (!q)
			return TERN_EINTERNAL;
	}
	*out = q;
	return touch(s, q);
}

/* Appends m to queue q with the next qseq. A binding's copy keeps the
 * channel it was published on (chan); a direct message stores none and
 * reads back with its queue's name. */
static int insert_qmsg(struct store *s, struct schan *q, const struct tern_msg *m,
		       bool from_channel, uint32_t attempt, uint64_t *qseq)
{
	uint64_t n = q->seq_pending + 1;
	sqlite3_stmt *st = s->st[ST_INS_QMSG];
	sqlite3_bind_int64(st, 1, q->db_id);
	sqlite3_bind_int64(st, 2, (int64_t)n);
	sqlite3_bind_text(st, 3, m->id, -1, SQLITE_STATIC);
	if (from_channel)
		sqlite3_bind_text(st, 4, m->chan, (int)m->chan_len, SQLITE_STATIC);
	if (m->has_name)
		sqlite3_bind_text(st, 5, m->name, (int)m->name_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 6, m->data, (int)m->data_len, SQLITE_STATIC);
	sqlite3_bind_int(st, 7, m->enc);
	sqlite3_bind_int64(st, 8, m->ts_ms);
	sqlite3_bind_int64(st, 9, attempt);
	int rc = step_done(st);
	if (rc == 0) {
		q->seq_pending = n;
		*qseq = n;
	}
	return rc;
}

static int write_publish(struct store *s, struct store_op *op, int64_t now)
{
	struct tern_msg *m = op->msg;
	struct schan *c;
	int rc = chan_for_write(s, m, &c);
	if (rc != 0)
		return rc;
	if (op->idem_key) {
		rc = idem_check(s, c, op, now);
		if (rc != 0)
			return rc < 0 ? rc : 0;
	}
	m->seq = c->seq_pending + 1;
	sqlite3_stmt *st = s->st[ST_INS_MSG];
	sqlite3_bind_int64(st, 1, c->db_id);
	sqlite3_bind_int64(st, 2, (int64_t)m->seq);
	sqlite3_bind_text(st, 3, m->id, -1, SQLITE_STATIC);
	if (m->has_name)
		sqlite3_bind_text(st, 4, m->name, (int)m->name_len, SQLITE_STATIC);
	sqlite3_bind_blob(st, 5, m->data, (int)m->data_len, SQLITE_STATIC);
	sqlite3_bind_int(st, 6, m->enc);
	sqlite3_bind_int64(st, 7, m->ts_ms);
	if ((rc = step_done(st)) != 0)
		return rc;
	c->seq_pending = m->seq;
	if (op->idem_key && (rc = idem_put(s, c, op, m->seq)) != 0)
		return rc;
	for (size_t i = 0; rc == 0 && i < op->ncopies; i++) {
		struct schan *q;
		rc = queue_for_write(s, op->copies[i], op->copy_lens[i], &q);
		if (rc == 0)
			rc = insert_qmsg(s, q, m, true, 0, &op->copy_qseqs[i]);
	}
	return rc;
}

static int write_enqueue(struct store *s, struct store_op *op, int64_t now)
{
	struct schan *q;
	int rc = queue_for_write(s, op->queue, op->queue_len, &q);
	if (rc != 0)
		return rc;
	if (op->idem_key) {
		rc = idem_check(s, q, op, now);
		if (rc != 0)
			return rc < 0 ? rc : 0;
	}
	rc = insert_qmsg(s, q, op->msg, false, 0, &op->qseq);
	if (rc == 0 && op->idem_key)
		rc = idem_put(s, q, op, op->qseq);
	return rc;
}

static int delete_qmsg(struct store *s, const char *name, size_t len, uint64_t qseq)
{
	struct schan *q = find_in(&s->queues, name, len);
	if (!q)
		return 0;
	sqlite3_stmt *st = s->st[ST_DEL_QMSG];
	sqlite3_bind_int64(st, 1, q->db_id);
	sqlite3_bind_int64(st, 2, (int64_t)qseq);
	return step_done(st);
}

static int write_queue_op(struct store *s, struct store_op *op, int64_t now)
{
	struct schan *q;
	int rc;
	switch (op->kind) {
	case STORE_OP_ENQUEUE:
		return write_enqueue(s, op, now);
	case STORE_OP_QDELETE:
		return delete_qmsg(s, op->queue, op->queue_len, op->qseq);
	case STORE_OP_QMOVE:
		rc = delete_qmsg(s, op->src_queue, op->src_queue_len, op->src_qseq);
		if (rc == 0)
			rc = queue_for_write(s, op->queue, op->queue_len, &q);
		return rc ? rc : insert_qmsg(s, q, op->msg, op->from_channel, 0, &op->qseq);
	case STORE_OP_QATTEMPT:
		if (!(q = find_in(&s->queues, op->queue, op->queue_len)))
			return 0;
		sqlite3_bind_int64(s->st[ST_QATTEMPT], 1, q->db_id);
		sqlite3_bind_int64(s->st[ST_QATTEMPT], 2, (int64_t)op->qseq);
		sqlite3_bind_int64(s->st[ST_QATTEMPT], 3, op->attempt);
		return step_done(s->st[ST_QATTEMPT]);
	case STORE_OP_QCONFIG: {
		if ((rc = queue_for_write(s, op->queue, op->queue_len, &q)) != 0)
			return rc;
		sqlite3_stmt *st = s->st[ST_QCONFIG];
		sqlite3_bind_int64(st, 1, q->db_id);
		sqlite3_bind_int64(st, 2, (int64_t)op->qcfg.ack_timeout_ms);
		sqlite3_bind_int64(st, 3, op->qcfg.max_attempts);
		sqlite3_bind_text(st, 4, op->qcfg.dead_letter, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, op->qcfg.bind, -1, SQLITE_STATIC);
		return step_done(st);
	}
	default:
		return 0;
	}
}

static void observe_commit(struct store *s, uint64_t ops, uint64_t us)
{
	double sec = (double)us / 1e6;
	size_t b = 0;
	while (sec > store_commit_buckets_s[b])
		b++;
	pthread_mutex_lock(&s->mu);
	s->stats.batches++;
	s->stats.batch_ops += ops;
	s->stats.commit_us_sum += us;
	s->stats.commit_hist[b]++;
	pthread_mutex_unlock(&s->mu);
}

static uint64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Ends the transaction. On commit the touched channels' seqs become visible;
 * on failure everything the batch assigned is undone, so no seq is lost. */
static int finish_tx(struct store *s, int rc)
{
	for (size_t i = 0; rc == 0 && i < s->ntouched; i++) {
		struct schan *c = s->touched[i];
		sqlite3_stmt *st = s->st[c->is_queue ? ST_UPD_QUEUE : ST_UPD_CHAN];
		sqlite3_bind_int64(st, 1, c->db_id);
		sqlite3_bind_int64(st, 2, (int64_t)c->seq_pending);
		rc = step_done(st);
	}
	if (rc == 0)
		rc = step_done(s->st[ST_COMMIT]);
	if (rc != 0)
		step_done(s->st[ST_ROLLBACK]);
	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < s->ntouched; i++) {
		struct schan *c = s->touched[i];
		if (rc == 0) {
			c->seq_committed = c->seq_pending;
			c->in_db = true;
		} else {
			c->seq_pending = c->seq_committed;
		}
	}
	pthread_mutex_unlock(&s->mu);
	if (rc != 0) {
		for (size_t i = 0; i < s->ntouched; i++)
			if (!s->touched[i]->in_db)
				chan_drop(s, s->touched[i]);
	}
	s->ntouched = 0;
	return rc;
}

static bool is_write(enum store_op_kind k)
{
	return k != STORE_OP_HISTORY && k != STORE_OP_SWEEP;
}

static void run_writes(struct store *s, struct store_op *ops)
{
	int64_t now = now_ms(s);
	uint64_t n = 0, t0 = mono_us();
	int rc;

	size_t writes = 0;
	for (struct store_op *op = ops; op; op = op->next) {
		n += op->kind == STORE_OP_PUBLISH || op->kind == STORE_OP_ENQUEUE;
		writes += is_write(op->kind);
	}
	if (writes == 0)
		return;
	s->batch_no++;
	rc = step_done(s->st[ST_BEGIN]);
	for (struct store_op *op = ops; rc == 0 && op; op = op->next) {
		if (op->kind == STORE_OP_PUBLISH)
			rc = write_publish(s, op, now);
		else if (is_write(op->kind))
			rc = write_queue_op(s, op, now);
	}
	rc = finish_tx(s, rc);
	for (struct store_op *op = ops; op; op = op->next) {
		if (!is_write(op->kind))
			continue;
		op->err = rc;
		if (rc != 0 && op->msg) {
			op->dup = false;
			if (op->kind == STORE_OP_PUBLISH)
				op->msg->seq = 0;
		}
	}
	if (rc == 0)
		observe_commit(s, n, mono_us() - t0);
}

/* --- reads and sweeps (outside the write transaction) --- */

static struct tern_msg *row_to_msg(const struct store_op *op, sqlite3_stmt *st)
{
	const void *data = sqlite3_column_blob(st, 3);
	int dlen = sqlite3_column_bytes(st, 3);
	const char *name = (const char *)sqlite3_column_text(st, 2);
	int nlen = sqlite3_column_bytes(st, 2);
	struct tern_msg *m = msg_new(op->chan, op->chan_len, name, (size_t)nlen, data,
				     (size_t)dlen, sqlite3_column_int(st, 4));
	if (!m)
		return NULL;
	m->seq = (uint64_t)sqlite3_column_int64(st, 0);
	snprintf(m->id, sizeof(m->id), "%s", (const char *)sqlite3_column_text(st, 1));
	m->ts_ms = sqlite3_column_int64(st, 5);
	return m;
}

static int run_history(struct store *s, struct store_op *op)
{
	pthread_mutex_lock(&s->mu);
	struct schan *c = chan_find(s, op->chan, op->chan_len);
	int64_t id = c && c->in_db ? c->db_id : -1;
	pthread_mutex_unlock(&s->mu);
	/* Seqs are stored as SQLite integers (signed 64-bit): bounds past that
	 * range mean "nothing after" and "no upper bound". */
	if (id < 0 || op->limit == 0 || op->after_seq >= (uint64_t)INT64_MAX)
		return 0;
	op->msgs = calloc(op->limit, sizeof(*op->msgs));
	if (!op->msgs)
		return TERN_EINTERNAL;
	sqlite3_stmt *st = s->st[op->backwards ? ST_HIST_BACK : ST_HIST_FWD];
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, (int64_t)op->after_seq);
	sqlite3_bind_int64(st, 3, op->before_seq && op->before_seq < (uint64_t)INT64_MAX
				  ? (int64_t)op->before_seq : INT64_MAX);
	sqlite3_bind_int64(st, 4, op->limit);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && op->nmsgs < op->limit) {
		struct tern_msg *m = row_to_msg(op, st);
		if (!m) {
			rc = SQLITE_NOMEM;
			break;
		}
		op->msgs[op->nmsgs++] = m;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : map_sqlite(rc);
}

static int run_sweep(struct store *s)
{
	int64_t now = now_ms(s);
	sqlite3_stmt *st = s->st[ST_SWEEP_MSG];
	sqlite3_bind_int64(st, 1, now - (int64_t)s->cfg.history_age_ms);
	sqlite3_bind_int64(st, 2, s->cfg.history_messages);
	int rc = step_done(st);
	if (rc == 0) {
		st = s->st[ST_SWEEP_IDEM];
		sqlite3_bind_int64(st, 1, now - (int64_t)s->cfg.idem_window_ms);
		rc = step_done(st);
	}
	if (rc == 0) {
		st = s->st[ST_SWEEP_QIDEM];
		sqlite3_bind_int64(st, 1, now - (int64_t)s->cfg.idem_window_ms);
		rc = step_done(st);
	}
	s->last_sweep_ms = now;
	return rc;
}

/* --- the thread --- */

static struct store_op *take_batch(struct store *s)
{
	struct store_op *head = s->in_head, **tail = &head;
	size_t ops = 0, bytes = 0;
	while (*tail && ops < TERN_STORE_BATCH_OPS && bytes < TERN_STORE_BATCH_BYTES) {
		bytes += op_bytes(*tail);
		ops++;
		tail = &(*tail)->next;
	}
	s->in_head = *tail;
	if (!s->in_head)
		s->in_tail = &s->in_head;
	*tail = NULL;
	s->in_ops -= ops;
	s->in_bytes -= bytes;
	return head;
}

static void wait_for_work(struct store *s)
{
	while (!s->in_head && !s->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t ms = s->cfg.sweep_interval_ms;
		ts.tv_sec += (time_t)(ms / 1000);
		ts.tv_nsec += (long)(ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L)
			ts.tv_sec++, ts.tv_nsec -= 1000000000L;
		if (pthread_cond_timedwait(&s->cond, &s->mu, &ts) == ETIMEDOUT)
			break;
	}
}

static void *store_main(void *arg)
{
	struct store *s = arg;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		wait_for_work(s);
		if (!s->in_head && s->stopping)
			break;
		struct store_op *batch = take_batch(s);
		pthread_mutex_unlock(&s->mu);

		run_writes(s, batch);
		for (struct store_op *op = batch; op; op = op->next) {
			if (op->kind == STORE_OP_HISTORY)
				op->err = run_history(s, op);
			else if (op->kind == STORE_OP_SWEEP)
				op->err = run_sweep(s);
		}
		if (now_ms(s) - s->last_sweep_ms >= (int64_t)s->cfg.sweep_interval_ms)
			run_sweep(s);

		pthread_mutex_lock(&s->mu);
		if (batch) {
			struct store_op *last = batch;
			while (last->next)
				last = last->next;
			*s->out_tail = batch;
			s->out_tail = &last->next;
			pthread_mutex_unlock(&s->mu);
			s->cfg.notify(s->cfg.notify_arg);
			pthread_mutex_lock(&s->mu);
		}
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* --- opening and closing --- */

static int load_channels(struct store *s)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, "SELECT id, name, last_seq FROM channels", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return map_sqlite(rc);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 1);
		size_t len = (size_t)sqlite3_column_bytes(st, 1);
		if (!chan_add(s, name, len, sqlite3_column_int64(st, 0),
			      (uint64_t)sqlite3_column_int64(st, 2), true)) {
			rc = SQLITE_NOMEM;
			break;
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : map_sqlite(rc);
}

/* --- checkpoints ---
 * The writer never checkpoints on its commit path: copying WAL pages into the database and
 * the fsync after it took milliseconds, and every publish queued behind them waited (it was
 * the p99 at low rates). WAL lets a second connection checkpoint while the writer appends
 * (PASSIVE), so the writer's WAL hook only wakes the checkpointer thread once the WAL holds
 * wal_ckpt_pages. The log rewinds when a checkpoint has copied every frame before the
 * writer's next transaction. Should the checkpointer fall behind (wal_max_pages),
 * the writer checkpoints itself after its commit (FULL), so the WAL stays within that bound
 * plus one transaction. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct store *s = arg;
	if ((uint32_t)pages >= s->cfg.wal_max_pages) {
		/* The checkpointer stands down after its pass under way (a checkpoint lock
		 * held elsewhere makes ours SQLITE_BUSY at once); then FULL copies every
		 * frame and the next transaction rewinds the log. */
		atomic_store(&s->ckpt_yield, true);
		struct timespec pause = {0, 1000 * 1000};
		int rc = SQLITE_BUSY;
		for (int i = 0; i < TERN_STORE_WRITER_CKPT_TRIES && rc == SQLITE_BUSY; i++) {
			rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_FULL, NULL, NULL);
			if (rc == SQLITE_BUSY)
				nanosleep(&pause, NULL);
		}
		atomic_store(&s->ckpt_yield, false);
		pthread_mutex_lock(&s->mu);
		s->stats.writer_checkpoints += rc == SQLITE_OK;
		pthread_mutex_unlock(&s->mu);
	} else if ((uint32_t)pages >= s->cfg.wal_ckpt_pages) {
		pthread_mutex_lock(&s->mu);
		if (!s->ckpt_wanted) {
			s->ckpt_wanted = true;
			pthread_cond_signal(&s->ckpt_cond);
		}
		pthread_mutex_unlock(&s->mu);
	}
	return SQLITE_OK;
}

static int open_checkpointer(struct store *s, const char *path)
{
	char pragmas[96];
	snprintf(pragmas, sizeof(pragmas), "PRAGMA synchronous=%s; PRAGMA busy_timeout=5000;",
		 s->cfg.sync_full ? "FULL" : "NORMAL");
	if (sqlite3_open_v2(path, &s->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK ||
	    sqlite3_exec(s->ckpt_db, pragmas, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(s->db, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL) != SQLITE_OK)
		return -1;
	sqlite3_wal_hook(s->db, on_wal_commit, s);
	return 0;
}

static uint64_t mono_us(void);

static void *ckpt_main(void *arg)
{
	struct store *s = arg;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->ckpt_wanted && !s->stopping)
			pthread_cond_wait(&s->ckpt_cond, &s->mu);
		if (s->stopping)
			break; /* store_close truncates the WAL once the writer is done */
		s->ckpt_wanted = false;
		pthread_mutex_unlock(&s->mu);
		/* A pass copies the frames there were when it began; while the writer appends,
		 * a few more passes over the (smaller) rest let the log rewind. */
		uint64_t t0 = mono_us();
		int rc = SQLITE_OK, log = 0, done = 0;
		for (int pass = 0; pass < TERN_STORE_CKPT_PASSES; pass++) {
			rc = sqlite3_wal_checkpoint_v2(s->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE,
						       &log, &done);
			if (rc != SQLITE_OK || done >= log || atomic_load(&s->ckpt_yield))
				break;
		}
		uint64_t us = mono_us() - t0;
		pthread_mutex_lock(&s->mu);
		s->stats.checkpoints += rc == SQLITE_OK;
		s->stats.checkpoint_errors += rc != SQLITE_OK && rc != SQLITE_BUSY;
		s->stats.checkpoint_us_sum += us;
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static int open_db(struct store *s, char *why, size_t why_len)
{
	char path[4096];
	if (mkdir(s->cfg.dir, 0755) != 0 && errno != EEXIST) {
		snprintf(why, why_len, "cannot create data dir %s: %s", s->cfg.dir, strerror(errno));
		return TERN_EINTERNAL;
	}
	snprintf(path, sizeof(path), "%s/tern.db", s->cfg.dir);
	int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				 SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		snprintf(why, why_len, "cannot open %s: %s", path, s->db ? sqlite3_errmsg(s->db)
									: sqlite3_errstr(rc));
		return TERN_EINTERNAL;
	}
	char pragmas[256];
	snprintf(pragmas, sizeof(pragmas),
		 "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA busy_timeout=5000;"
		 "PRAGMA cache_size=-16384; PRAGMA temp_store=MEMORY;",
		 s->cfg.sync_full ? "FULL" : "NORMAL");
	char *err = NULL;
	if (sqlite3_exec(s->db, pragmas, NULL, NULL, &err) != SQLITE_OK ||
	    sqlite3_exec(s->db, schema, NULL, NULL, &err) != SQLITE_OK) {
		snprintf(why, why_len, "cannot use %s: %s", path, err ? err : "unknown error");
		sqlite3_free(err);
		return TERN_EINTERNAL;
	}
	if (open_checkpointer(s, path) != 0) {
		snprintf(why, why_len, "cannot open %s for checkpoints: %s", path,
			 s->ckpt_db ? sqlite3_errmsg(s->ckpt_db) : "out of memory");
		return TERN_EINTERNAL;
	}
	for (int i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(s->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
				       NULL) != SQLITE_OK) {
			snprintf(why, why_len, "cannot prepare statement: %s", sqlite3_errmsg(s->db));
			return TERN_EINTERNAL;
		}
	}
	if (load_channels(s) != 0) {
		snprintf(why, why_len, "cannot read %s: %s", path, sqlite3_errmsg(s->db));
		return TERN_EINTERNAL;
	}
	return 0;
}

static void close_db(struct store *s)
{
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s->st[i]);
	memset(s->st, 0, sizeof(s->st));
	if (s->ckpt_db)
		sqlite3_close(s->ckpt_db);
	s->ckpt_db = NULL;
	if (s->db)
		sqlite3_close(s->db);
	s->db = NULL;
}

int store_open(struct store **out, const struct store_config *cfg, char *why, size_t why_len)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(why, why_len, "out of memory");
		return TERN_EINTERNAL;
	}
	assert(cfg->now_ms); /* the broker passes its clock (injected in tests) */
	s->cfg = *cfg;
	if (!s->cfg.sweep_interval_ms)
		s->cfg.sweep_interval_ms = 60000;
	if (!s->cfg.queue_max_bytes)
		s->cfg.queue_max_bytes = TERN_STORE_QUEUE_BYTES_DEFAULT;
	if (!s->cfg.wal_ckpt_pages)
		s->cfg.wal_ckpt_pages = TERN_STORE_CKPT_PAGES;
	if (!s->cfg.wal_max_pages)
		s->cfg.wal_max_pages = TERN_STORE_WAL_MAX_PAGES;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cond, NULL);
	pthread_cond_init(&s->ckpt_cond, NULL);
	s->in_tail = &s->in_head;
	s->out_tail = &s->out_head;
	hmap_init(&s->chans);
	s->last_sweep_ms = now_ms(s);

	hmap_init(&s->queues);
	int rc = open_db(s, why, why_len);
	if (rc != 0) {
		close_db(s);
		store_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

int store_start(struct store *s)
{
	if (pthread_create(&s->thread, NULL, store_main, s) != 0)
		return TERN_EINTERNAL;
	s->thread_started = true;
	if (pthread_create(&s->ckpt_thread, NULL, ckpt_main, s) != 0)
		return TERN_EINTERNAL; /* store_close still joins the writer */
	s->ckpt_started = true;
	return 0;
}

static int load_queue_rows(struct store *s, const struct store_load_ops *ops, void *arg)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, "SELECT id, name, last_qseq, configured, ack_timeout_ms,"
				    " max_attempts, dead_letter, bind FROM queues", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return map_sqlite(rc);
	int cb = 0;
	while (cb == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 1);
		size_t len = (size_t)sqlite3_column_bytes(st, 1);
		struct store_qconfig qc = {
			.ack_timeout_ms = (uint64_t)sqlite3_column_int64(st, 4),
			.max_attempts = (uint32_t)sqlite3_column_int64(st, 5),
			.dead_letter = (const char *)sqlite3_column_text(st, 6),
			.bind = (const char *)sqlite3_column_text(st, 7),
		};
		if (!queue_add(s, name, len, sqlite3_column_int64(st, 0),
			       (uint64_t)sqlite3_column_int64(st, 2), true))
			cb = TERN_EINTERNAL;
		else
			cb = ops->queue(arg, name, len, &qc, sqlite3_column_int(st, 3) != 0);
	}
	sqlite3_finalize(st);
	return cb ? cb : rc == SQLITE_DONE ? 0 : map_sqlite(rc);
}

int store_load_queues(struct store *s, const struct store_load_ops *ops, void *arg)
{
	int cb = load_queue_rows(s, ops, arg);
	if (cb != 0)
		return cb;
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(s->db, "SELECT q.name, m.qseq, m.id, m.chan, m.name, m.data,"
				    " m.enc, m.ts, m.attempt FROM qmsgs m JOIN queues q"
				    " ON q.id = m.queue_id ORDER BY m.queue_id, m.qseq", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return map_sqlite(rc);
	while (cb == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *q = (const char *)sqlite3_column_text(st, 0);
		size_t qlen = (size_t)sqlite3_column_bytes(st, 0);
		const char *chan = (const char *)sqlite3_column_text(st, 3);
		size_t clen = (size_t)sqlite3_column_bytes(st, 3);
		const char *name = (const char *)sqlite3_column_text(st, 4);
		struct tern_msg *m = msg_new(chan ? chan : q, chan ? clen : qlen, name,
					     (size_t)sqlite3_column_bytes(st, 4),
					     sqlite3_column_blob(st, 5),
					     (size_t)sqlite3_column_bytes(st, 5),
					     sqlite3_column_int(st, 6));
		if (!m) {
			cb = TERN_EINTERNAL;
			break;
		}
		snprintf(m->id, sizeof(m->id), "%s", (const char *)sqlite3_column_text(st, 2));
		m->ts_ms = sqlite3_column_int64(st, 7);
		cb = ops->qmsg(arg, q, qlen, (uint64_t)sqlite3_column_int64(st, 1), m, chan != NULL,
			       (uint32_t)sqlite3_column_int64(st, 8));
	}
	sqlite3_finalize(st);
	return cb ? cb : rc == SQLITE_DONE ? 0 : map_sqlite(rc);
}

int store_submit(struct store *s, struct store_op *op)
{
	size_t bytes = op_bytes(op);
	op->next = NULL;
	op->err = 0;
	pthread_mutex_lock(&s->mu);
	if (s->stopping || ((op->kind == STORE_OP_PUBLISH || op->kind == STORE_OP_ENQUEUE) &&
			    (s->in_bytes + bytes > s->cfg.queue_max_bytes ||
			     s->in_ops >= TERN_STORE_QUEUE_OPS_MAX))) {
		pthread_mutex_unlock(&s->mu);
		return TERN_EUNAVAIL;
	}
	*s->in_tail = op;
	s->in_tail = &op->next;
	s->in_bytes += bytes;
	s->in_ops++;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

size_t store_poll(struct store *s)
{
	pthread_mutex_lock(&s->mu);
	struct store_op *op = s->out_head;
	s->out_head = NULL;
	s->out_tail = &s->out_head;
	pthread_mutex_unlock(&s->mu);
	size_t n = 0;
	while (op) {
		struct store_op *next = op->next;
		op->next = NULL;
		op->done(op);
		op = next;
		n++;
	}
	return n;
}

void store_get_stats(struct store *s, struct store_stats *out)
{
	pthread_mutex_lock(&s->mu);
	*out = s->stats;
	pthread_mutex_unlock(&s->mu);
}

void store_close(struct store *s)
{
	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	pthread_cond_signal(&s->cond);
	pthread_cond_signal(&s->ckpt_cond);
	pthread_mutex_unlock(&s->mu);
	if (s->thread_started) {
		pthread_join(s->thread, NULL);
		s->thread_started = false;
	}
	if (s->ckpt_started) {
		pthread_join(s->ckpt_thread, NULL);
		s->ckpt_started = false;
	}
	if (s->ckpt_db)
		sqlite3_close(s->ckpt_db);
	s->ckpt_db = NULL;
	if (s->db)
		sqlite3_exec(s->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
	close_db(s);
}

void store_free(struct store *s)
{
	if (!s)
		return;
	assert(!s->thread_started);
	assert(s->in_head == NULL);
	assert(s->out_head == NULL);
	size_t b = 0;
	struct hmap_node *n;
	while ((n = hmap_next(&s->chans, &b, NULL)) != NULL) {
		hmap_del(&s->chans, n);
		free(container_of(n, struct schan, node));
	}
	hmap_destroy(&s->chans);
	b = 0;
	while ((n = hmap_next(&s->queues, &b, NULL)) != NULL) {
		hmap_del(&s->queues, n);
		free(container_of(n, struct schan, node));
	}
	hmap_destroy(&s->queues);
	free(s->touched);
	pthread_cond_destroy(&s->ckpt_cond);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
