/* Opening and closing: broker_close answers every queued publish exactly once
 * before it returns, refuses new work, and what it acknowledged is on disk. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "store.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void close_answers_queued_publishes(void **state)
{
	struct h *h = *state;
	h_open(h);
	enum { PER = 1500, CHANS = 3 };
	static const char *const chans[CHANS] = {"c0", "c1", "chat:c2"};
	struct pub_result *r = calloc(PER * CHANS, sizeof(*r));
	assert_non_null(r);
	/* Queued, never polled: broker_close must run every callback itself. */
	for (int i = 0; i < PER; i++)
		for (int c = 0; c < CHANS; c++) {
			char data[32];
			snprintf(data, sizeof(data), "m%d", i + 1);
			assert_int_equal(h_pub_async(h, chans[c], data, NULL, &r[i * CHANS + c]), 0);
		}
	h_close(h);
	for (int i = 0; i < PER; i++)
		for (int c = 0; c < CHANS; c++) {
			struct pub_result *x = &r[i * CHANS + c];
			if (x->calls != 1 || x->err != 0 || x->seq != (uint64_t)i + 1)
				fail_msg("%s #%d: calls %d err %d seq %llu", chans[c], i, x->calls,
					 x->err, (unsigned long long)x->seq);
		}
	/* What was acknowledged is there after a restart. */
	h_open(h);
	for (int c = 0; c < CHANS; c++) {
		assert_int_equal(h_last_seq(h, chans[c]), PER);
		struct hist_result hr;
		assert_int_equal(h_hist(h, chans[c], PER - 3, 0, 10, false, &hr), 0);
		assert_int_equal(hr.n, 3);
		for (size_t k = 0; k < hr.n; k++)
			assert_string_equal(hr.msgs[k]->id, r[(PER - 3 + (int)k) * CHANS + c].id);
		h_hist_free(&hr);
	}
	free(r);
}

static void close_answers_notified_but_unpolled(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pub_result r = {0};
	assert_int_equal(h_pub_async(h, "n", "m1", NULL, &r), 0);
	/* Wait for the store to finish without polling. */
	for (int i = 0; i < 500; i++) {
		pthread_mutex_lock(&h->mu);
		uint64_t n = h->notifies;
		pthread_mutex_unlock(&h->mu);
		if (n > 0)
			break;
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	assert_int_equal(r.calls, 0);
	h_close(h);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.seq, 1);
}

struct republish {
	struct h *h;
	int rc;
	int late_calls;
};

static void on_late(void *arg, int err, uint64_t seq, const char *id)
{
	(void)err, (void)seq, (void)id;
	((struct republish *)arg)->late_calls++;
}

/* From inside a publish answer that broker_close runs: try to publish more. */
static void publish_again(struct pub_result *r)
{
	struct republish *rp = r->hook_arg;
	struct broker_pub p = {.chan = "late", .chan_len = 4, .data = "x", .data_len = 1};
	const char *why = NULL;
	rp->rc = broker_publish(rp->h->b, &p, on_late, rp, &why);
}

static void close_refuses_new_publishes(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct republish rp = {.h = h, .rc = 1};
	struct pub_result r = {.hook = publish_again, .hook_arg = &rp};
	assert_int_equal(h_pub_async(h, "q", "m1", NULL, &r), 0);
	broker_close(h->b); /* h->b stays valid until close returns */
	h->b = NULL;
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, 0);
	assert_int_equal(rp.rc, TERN_EUNAVAIL);
	assert_int_equal(rp.late_calls, 0);
	h_open(h);
	assert_int_equal(h_last_seq(h, "late"), 0);
	assert_int_equal(h_last_seq(h, "q"), 1);
}

static void on_hist_free(void *arg, int err, struct tern_msg **msgs, size_t n)
{
	int *res = arg;
	res[0]++;
	res[1] = err;
	res[2] = (int)n;
	for (size_t i = 0; i < n; i++)
		msg_unref(msgs[i]);
	free(msgs);
}

static void on_sweep_count(void *arg, int err)
{
	int *res = arg;
	res[0]++;
	res[1] = err;
}

static void close_answers_queued_reads_and_sweeps(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pub_result p[3] = {{0}};
	for (int i = 0; i < 3; i++)
		assert_int_equal(h_pub_async(h, "r", "m", NULL, &p[i]), 0);
	int hist[3] = {0, 1, 0}, sweep[2] = {0, 1};
	struct broker_hist q = {.chan = "r", .chan_len = 1, .limit = 10};
	assert_int_equal(broker_history(h->b, &q, on_hist_free, hist), 0);
	assert_int_equal(broker_sweep(h->b, on_sweep_count, sweep), 0);
	/* A sweep without a callback is fine too. */
	assert_int_equal(broker_sweep(h->b, NULL, NULL), 0);
	h_close(h);
	for (int i = 0; i < 3; i++)
		assert_int_equal(p[i].calls, 1);
	assert_int_equal(hist[0], 1);
	assert_int_equal(hist[1], 0);
	assert_int_equal(hist[2], 3);
	assert_int_equal(sweep[0], 1);
	assert_int_equal(sweep[1], 0);
}

static void close_idle_and_empty(void **state)
{
	struct h *h = *state;
	/* Open and close with nothing done, twice; the database persists. */
	h_open(h);
	h_close(h);
	h_open(h);
	h_close(h);
	char path[512];
	struct stat st;
	snprintf(path, sizeof(path), "%s/tern.db", h->dir);
	assert_int_equal(stat(path, &st), 0);
	/* A subscriber that left before close leaves nothing behind. */
	h_open(h);
	assert_int_equal(h_sub(h, 0, "x"), 0);
	h_unsub(h, 0);
	h_close(h);
}

static void open_creates_data_dir_and_reports_errors(void **state)
{
	struct h *h = *state;
	char sub[512], why[256];
	struct broker *b = NULL;

	/* A missing data dir is created. */
	snprintf(sub, sizeof(sub), "%s/data", h->dir);
	h->cfg.data_dir = sub;
	h_open(h);
	struct pub_result r = {0};
	assert_int_equal(h_pub(h, "c", "m1", NULL, &r), 0);
	h_close(h);
	struct stat st;
	char db[600];
	snprintf(db, sizeof(db), "%s/tern.db", sub);
	assert_int_equal(stat(db, &st), 0);

	/* A data dir that is a file: an error with a reason, nothing opened. */
	char file[512];
	snprintf(file, sizeof(file), "%s/plain-file", h->dir);
	FILE *f = fopen(file, "w");
	assert_non_null(f);
	fclose(f);
	struct broker_config cfg = h->cfg;
	cfg.data_dir = file;
	why[0] = 0;
	int rc = broker_open(&b, &cfg, why, sizeof(why));
	assert_true(rc < 0);
	assert_true(strlen(why) > 0);
	assert_null(b);

	/* A data dir under a missing parent (not created recursively). */
	char deep[600];
	snprintf(deep, sizeof(deep), "%s/no/such/parent", h->dir);
	cfg.data_dir = deep;
	why[0] = 0;
	rc = broker_open(&b, &cfg, why, sizeof(why));
	assert_true(rc < 0);
	assert_true(strlen(why) > 0);
	assert_null(b);

	/* A database file that is not SQLite. */
	char junkdir[600], junkdb[700];
	snprintf(junkdir, sizeof(junkdir), "%s/junk", h->dir);
	assert_int_equal(mkdir(junkdir, 0755), 0);
	snprintf(junkdb, sizeof(junkdb), "%s/tern.db", junkdir);
	f = fopen(junkdb, "w");
	assert_non_null(f);
	for (int i = 0; i < 512; i++)
		fputs("this is not a database ", f);
	fclose(f);
	cfg.data_dir = junkdir;
	why[0] = 0;
	rc = broker_open(&b, &cfg, why, sizeof(why));
	assert_true(rc < 0);
	assert_true(strlen(why) > 0);
	assert_null(b);
}

/* The writer never checkpoints on its commit path: a thread of its own does, once the WAL
 * holds wal_ckpt_pages; and the WAL file stays bounded by about wal_max_pages plus one batch
 * (it rewinds) while ten times that is written without a pause. Everything committed is there
 * after a restart. */
static void checkpointer_keeps_the_wal_bounded(void **state)
{
	struct h *h = *state;
	enum { BURST = 200, BURSTS = 30, DATA = 3000 }; /* ~18 MB of message data */
	h->cfg.history_messages = 100000;
	h->cfg.wal_ckpt_pages = 100;
	h->cfg.wal_max_pages = 500; /* ~2 MB, and 18 MB are written */
	h_open(h);
	char *data = malloc(DATA + 16);
	struct pub_result *r = calloc(BURST, sizeof(*r));
	assert_non_null(data);
	assert_non_null(r);
	memset(data, 'x', DATA);
	data[DATA] = 0;
	for (int b = 0; b < BURSTS; b++) {
		memset(r, 0, BURST * sizeof(*r));
		for (int i = 0; i < BURST; i++)
			assert_int_equal(h_pub_async(h, "wal", data, NULL, &r[i]), 0);
		for (int i = 0; i < BURST; i++) {
			assert_true(h_wait_count(h, &r[i].calls, 1));
			assert_int_equal(r[i].err, 0);
		}
	}
	struct store_stats ss;
	struct timespec pause = {0, 10 * 1000 * 1000};
	for (int i = 0; i < 500; i++) { /* the checkpointer runs beside us: 5 s at most */
		broker_store_stats(h->b, &ss);
		if (ss.checkpoints > 0)
			break;
		nanosleep(&pause, NULL);
	}
	assert_true(ss.checkpoints > 0);
	assert_int_equal(ss.checkpoint_errors, 0);

	char wal[600];
	struct stat st;
	snprintf(wal, sizeof(wal), "%s/tern.db-wal", h->dir);
	assert_int_equal(stat(wal, &st), 0);
	/* A transaction here is one burst; each message takes about 4 pages (a WITHOUT ROWID
	 * row keeps ~1 KB in its leaf, the rest in overflow pages), 5 with the indexes. */
	off_t bound = (off_t)(500 + 5 * BURST) * (4096 + 24) + 32;
	if (st.st_size > bound)
		fail_msg("WAL is %lld bytes after %d bytes written: above its bound %lld",
			 (long long)st.st_size, BURST * BURSTS * DATA, (long long)bound);

	h_reopen(h);
	assert_int_equal(h_last_seq(h, "wal"), (uint64_t)BURST * BURSTS);
	struct hist_result hr;
	assert_int_equal(h_hist(h, "wal", 0, 0, 10, true, &hr), 0);
	assert_int_equal(hr.n, 10);
	assert_int_equal(hr.msgs[0]->seq, (uint64_t)BURST * BURSTS);
	assert_int_equal(hr.msgs[0]->data_len, DATA);
	h_hist_free(&hr);
	free(r);
	free(data);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_h(close_answers_queued_publishes),
		cmocka_unit_test_h(close_answers_notified_but_unpolled),
		cmocka_unit_test_h(close_refuses_new_publishes),
		cmocka_unit_test_h(close_answers_queued_reads_and_sweeps),
		cmocka_unit_test_h(close_idle_and_empty),
		cmocka_unit_test_h(open_creates_data_dir_and_reports_errors),
		cmocka_unit_test_h(checkpointer_keeps_the_wal_bounded),
	};
	return h_run("close", tests, N(tests), argc, argv);
}
