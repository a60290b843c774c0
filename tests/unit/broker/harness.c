#include "harness.h"

#include <errno.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t fake_now(void *arg)
{
	struct h *h = arg;
	return __atomic_load_n(&h->clock_ms, __ATOMIC_ACQUIRE);
}

/* Called by the store thread. */
static void on_notify(void *arg)
{
	struct h *h = arg;
	pthread_mutex_lock(&h->mu);
	h->notified = true;
	h->notifies++;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->mu);
}

void h_advance(struct h *h, int64_t ms) { __atomic_add_fetch(&h->clock_ms, ms, __ATOMIC_RELEASE); }

int64_t h_now(struct h *h) { return fake_now(h); }

int h_setup(void **state)
{
	struct h *h = calloc(1, sizeof(*h));
	if (!h)
		return -1;
	const char *tmp = getenv("TMPDIR");
	snprintf(h->dir, sizeof(h->dir), "%s/tern-unit-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(h->dir)) {
		print_error("mkdtemp %s: %s\n", h->dir, strerror(errno));
		free(h);
		return -1;
	}
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&h->mu, NULL);
	h->clock_ms = H_T0_MS;
	h->cfg = (struct broker_config){
		.data_dir = h->dir,
		.sync_full = false,
		.max_message_bytes = 64 * 1024,
		.history_messages = 1000,
		.history_age_ms = 24ull * 3600 * 1000,
		.idem_window_ms = 120000,
		.now_ms = fake_now,
		.clock_arg = h,
		.notify = on_notify,
		.notify_arg = h,
	};
	for (int i = 0; i < H_RECORDERS; i++)
		h->rec[i].h = h;
	for (int i = 0; i < H_CONSUMERS; i++)
		h->cons[i].h = h;
	for (int i = 0; i < H_PULLS; i++)
		h->pulls[i].h = h;
	*state = h;
	return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void forget(struct h_delivery *got, size_t *n)
{
	for (size_t k = 0; k < *n; k++)
		msg_unref(got[k].msg);
	*n = 0;
}

/* Queue consumers and pulls a test left behind: the broker must not close
 * with them (a failed test leaves them too). */
static void teardown_queues(struct h *h)
{
	for (int i = 0; i < H_CONSUMERS; i++) {
		struct consumer *c = &h->cons[i];
		if (c->c && h->b)
			broker_consumer_cancel(c->c);
		c->c = NULL;
		forget(c->got, &c->n);
	}
	for (int i = 0; i < H_PULLS; i++) {
		struct pull_result *r = &h->pulls[i];
		if (r->p && h->b)
			broker_pull_cancel(r->p);
		r->p = NULL;
		forget(r->got, &r->n);
	}
}

int h_teardown(void **state)
{
	struct h *h = *state;
	teardown_queues(h);
	for (int i = 0; i < H_RECORDERS; i++) {
		struct recorder *r = &h->rec[i];
		if (r->sub && h->b)
			broker_unsubscribe(r->sub);
		r->sub = NULL;
		for (size_t k = 0; k < r->n; k++)
			msg_unref(r->msgs[k]);
		r->n = 0;
	}
	int rc = 0;
	if (h->b) {
		/* With every subscriber gone and every answer in, no channel may
		 * stay behind (the broker frees idle channels). */
		struct broker_stats st;
		for (int i = 0; i < 200; i++) {
			broker_poll(h->b);
			broker_get_stats(h->b, &st);
			if (st.channels_active == 0)
				break;
			struct timespec ts = {0, 10 * 1000000L};
			nanosleep(&ts, NULL);
		}
		if (st.channels_active != 0) {
			print_error("teardown: %llu channels still active\n",
				    (unsigned long long)st.channels_active);
			rc = -1;
		}
		broker_close(h->b);
	}
	h->b = NULL;
	if (nftw(h->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
		rc = -1;
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->mu);
	free(h);
	return rc == 0 ? 0 : -1;
}

void h_open(struct h *h)
{
	char why[256] = "";
	assert_null(h->b);
	int rc = broker_open(&h->b, &h->cfg, why, sizeof(why));
	if (rc != 0)
		fail_msg("broker_open: %d %s", rc, why);
	assert_non_null(h->b);
}

void h_close(struct h *h)
{
	assert_non_null(h->b);
	broker_close(h->b);
	h->b = NULL;
}

void h_reopen(struct h *h)
{
	h_close(h);
	h_open(h);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Polls until done(arg) or the deadline. */
static bool wait_until(struct h *h, bool (*done)(const void *arg, int64_t want), const void *arg,
		       int64_t want)
{
	int64_t deadline = mono_ms() + H_WAIT_MS;
	for (;;) {
		broker_poll(h->b);
		if (done(arg, want))
			return true;
		struct timespec ts = {.tv_sec = deadline / 1000,
				      .tv_nsec = (long)(deadline % 1000) * 1000000L};
		pthread_mutex_lock(&h->mu);
		while (!h->notified) {
			if (pthread_cond_timedwait(&h->cond, &h->mu, &ts) == ETIMEDOUT)
				break;
		}
		bool got = h->notified;
		h->notified = false;
		pthread_mutex_unlock(&h->mu);
		if (!got) {
			broker_poll(h->b);
			return done(arg, want);
		}
	}
}

static bool int_reached(const void *arg, int64_t want) { return *(const int *)arg >= want; }
static bool size_reached(const void *arg, int64_t want)
{
	return (int64_t) * (const size_t *)arg >= want;
}

bool h_wait_count(struct h *h, const int *counter, int want)
{
	return wait_until(h, int_reached, counter, want);
}

bool h_wait_size(struct h *h, const size_t *counter, size_t want)
{
	return wait_until(h, size_reached, counter, (int64_t)want);
}

static void on_pub(void *arg, int err, uint64_t seq, const char *id)
{
	struct pub_result *r = arg;
	if (++r->calls == 1) {
		r->err = err;
		r->seq = seq;
		snprintf(r->id, sizeof(r->id), "%s", id ? id : "");
	}
	if (r->hook)
		r->hook(r);
}

int h_pub_async(struct h *h, const char *chan, const char *data, const char *idem,
		struct pub_result *r)
{
	struct broker_pub p = {
		.chan = chan,
		.chan_len = strlen(chan),
		.data = data,
		.data_len = strlen(data),
		.enc = TERN_ENC_JSON,
		.idem_key = idem,
		.idem_len = idem ? strlen(idem) : 0,
	};
	return broker_publish(h->b, &p, on_pub, r, NULL);
}

int h_pub_req(struct h *h, const struct broker_pub *p, struct pub_result *r)
{
	int rc = broker_publish(h->b, p, on_pub, r, NULL);
	if (rc != 0)
		return rc;
	assert_true(h_wait_count(h, &r->calls, 1));
	h_settle(h);
	assert_int_equal(r->calls, 1);
	return r->err;
}

int h_pub(struct h *h, const char *chan, const char *data, const char *idem,
	  struct pub_result *r)
{
	struct pub_result local = {0};
	if (!r)
		r = &local;
	int rc = h_pub_async(h, chan, data, idem, r);
	if (rc != 0)
		return rc;
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->calls, 1);
	return r->err;
}

static void on_hist(void *arg, int err, struct tern_msg **msgs, size_t n)
{
	struct hist_result *r = arg;
	r->calls++;
	r->err = err;
	r->msgs = msgs;
	r->n = n;
}

int h_hist(struct h *h, const char *chan, uint64_t after, uint64_t before, uint32_t limit,
	   bool backwards, struct hist_result *r)
{
	memset(r, 0, sizeof(*r));
	struct broker_hist req = {
		.chan = chan,
		.chan_len = strlen(chan),
		.after_seq = after,
		.before_seq = before,
		.limit = limit,
		.backwards = backwards,
	};
	int rc = broker_history(h->b, &req, on_hist, r);
	if (rc != 0)
		return rc;
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->calls, 1);
	if (r->n > 0)
		assert_non_null(r->msgs);
	return r->err;
}

void h_hist_free(struct hist_result *r)
{
	for (size_t i = 0; i < r->n; i++)
		msg_unref(r->msgs[i]);
	free(r->msgs);
	r->msgs = NULL;
	r->n = 0;
}

/* A history read is a barrier: the store thread answers in submission order,
 * so once it is back, every op submitted before it has been answered too. */
void h_settle(struct h *h)
{
	struct hist_result r;
	assert_int_equal(h_hist(h, "test:barrier", 0, 0, 1, false, &r), 0);
	h_hist_free(&r);
	broker_poll(h->b);
}

static void on_sweep(void *arg, int err)
{
	int *res = arg;
	res[0]++;
	res[1] = err;
}

int h_sweep(struct h *h)
{
	int res[2] = {0, 0};
	assert_int_equal(broker_sweep(h->b, on_sweep, res), 0);
	assert_true(h_wait_count(h, &res[0], 1));
	assert_int_equal(res[0], 1);
	return res[1];
}

static void on_msg(void *arg, struct tern_msg *m)
{
	struct recorder *r = arg;
	if (r->n < H_RECORDER_MSGS)
		r->msgs[r->n++] = msg_ref(m);
	if (r->on_msg_hook && r->n == r->hook_after)
		r->on_msg_hook(r);
}

int h_sub_clients(struct h *h, int i, const char *chan, uint32_t clients)
{
	struct recorder *r = &h->rec[i];
	assert_null(r->sub);
	return broker_subscribe(h->b, chan, strlen(chan), on_msg, r, clients, &r->sub,
				&r->last_seq);
}

int h_sub(struct h *h, int i, const char *chan) { return h_sub_clients(h, i, chan, 1); }

void h_unsub(struct h *h, int i)
{
	struct recorder *r = &h->rec[i];
	assert_non_null(r->sub);
	broker_unsubscribe(r->sub);
	r->sub = NULL;
}

void h_assert_seqs(struct h *h, int i, uint64_t first, uint64_t last)
{
	struct recorder *r = &h->rec[i];
	size_t want = last >= first ? (size_t)(last - first + 1) : 0;
	if (r->n != want)
		fail_msg("recorder %d: %zu messages, expected %zu (seq %llu..%llu)", i, r->n, want,
			 (unsigned long long)first, (unsigned long long)last);
	for (size_t k = 0; k < r->n; k++) {
		char data[32];
		snprintf(data, sizeof(data), "m%llu", (unsigned long long)(first + k));
		assert_int_equal(r->msgs[k]->seq, first + k);
		assert_int_equal(r->msgs[k]->data_len, strlen(data));
		assert_memory_equal(r->msgs[k]->data, data, strlen(data));
	}
}

uint64_t h_last_seq(struct h *h, const char *chan)
{
	uint64_t seq = 0, subs = 0;
	broker_channel_info(h->b, chan, strlen(chan), &seq, &subs);
	return seq;
}

uint64_t h_subscribers(struct h *h, const char *chan)
{
	uint64_t seq = 0, subs = 0;
	broker_channel_info(h->b, chan, strlen(chan), &seq, &subs);
	return subs;
}

/* --- queues --- */

void h_tick(struct h *h, int64_t ms)
{
	h_advance(h, ms);
	broker_tick(h->b);
	broker_poll(h->b);
}

int h_enq_async(struct h *h, const char *queue, const char *data, const char *idem,
		struct pub_result *r)
{
	struct broker_enq e = {
		.queue = queue,
		.queue_len = strlen(queue),
		.data = data,
		.data_len = strlen(data),
		.enc = TERN_ENC_JSON,
		.idem_key = idem,
		.idem_len = idem ? strlen(idem) : 0,
	};
	return broker_enqueue(h->b, &e, on_pub, r, NULL);
}

int h_enq(struct h *h, const char *queue, const char *data, const char *idem,
	  struct pub_result *r)
{
	struct pub_result local = {0};
	if (!r)
		r = &local;
	int rc = h_enq_async(h, queue, data, idem, r);
	if (rc != 0)
		return rc;
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->calls, 1);
	return r->err;
}

static void record(struct h_delivery *to, const struct broker_delivery *d)
{
	snprintf(to->queue, sizeof(to->queue), "%.*s", (int)d->queue_len, d->queue);
	snprintf(to->delivery_id, sizeof(to->delivery_id), "%s", d->delivery_id);
	to->msg = msg_ref(d->msg);
	to->from_channel = d->from_channel;
	to->attempt = d->attempt;
}

static void on_delivery(void *arg, const struct broker_delivery *d)
{
	struct consumer *c = arg;
	if (c->n < H_CONSUMER_MSGS)
		record(&c->got[c->n++], d);
	if (c->hook)
		c->hook(c, d);
}

int h_consume(struct h *h, int i, const char *queue, uint32_t prefetch)
{
	struct consumer *c = &h->cons[i];
	assert_null(c->c);
	return broker_consume(h->b, queue, strlen(queue), prefetch, on_delivery, c, &c->c);
}

void h_cancel(struct h *h, int i)
{
	struct consumer *c = &h->cons[i];
	assert_non_null(c->c);
	broker_consumer_cancel(c->c);
	c->c = NULL;
}

void h_cancel_all(struct h *h)
{
	for (int i = 0; i < H_CONSUMERS; i++)
		if (h->cons[i].c)
			h_cancel(h, i);
}

void h_consumer_forget(struct h *h, int i) { forget(h->cons[i].got, &h->cons[i].n); }

int h_ack(struct h *h, const char *queue, const char *delivery_id)
{
	return broker_ack(h->b, queue, strlen(queue), delivery_id, strlen(delivery_id));
}

int h_nack(struct h *h, const char *queue, const char *delivery_id, bool requeue)
{
	return broker_nack(h->b, queue, strlen(queue), delivery_id, strlen(delivery_id), requeue);
}

static void on_pull(void *arg, int err, const struct broker_delivery *ds, size_t n)
{
	struct pull_result *r = arg;
	r->calls++;
	r->err = err;
	r->p = NULL;
	r->total = n;
	for (size_t k = 0; k < n && r->n < H_PULL_MSGS; k++)
		record(&r->got[r->n++], &ds[k]);
	if (r->hook)
		r->hook(r);
}

int h_pull(struct h *h, int i, const char *queue, uint32_t max, uint64_t wait_ms)
{
	struct pull_result *r = &h->pulls[i];
	assert_null(r->p);
	forget(r->got, &r->n);
	r->calls = 0;
	r->err = 0;
	r->total = 0;
	return broker_pull(h->b, queue, strlen(queue), max, wait_ms, on_pull, r, &r->p);
}

void h_pull_cancel(struct h *h, int i)
{
	struct pull_result *r = &h->pulls[i];
	assert_non_null(r->p);
	broker_pull_cancel(r->p);
	r->p = NULL;
}

static void on_qconf(void *arg, int err)
{
	int *res = arg;
	res[0]++;
	res[1] = err;
}

int h_qconf(struct h *h, const char *queue, const struct broker_qconf *conf)
{
	int res[2] = {0, 0};
	const char *why = NULL;
	int rc = broker_queue_configure(h->b, queue, strlen(queue), conf, on_qconf, res, &why);
	if (rc != 0) {
		assert_non_null(why);
		return rc;
	}
	assert_true(h_wait_count(h, &res[0], 1));
	h_settle(h);
	assert_int_equal(res[0], 1);
	return res[1];
}

int h_bind(struct h *h, const char *queue, const char *const *patterns)
{
	size_t n = 0, lens[TERN_QUEUE_BINDS_MAX + 8];
	while (patterns && patterns[n]) {
		assert_true(n < TERN_QUEUE_BINDS_MAX + 8);
		lens[n] = strlen(patterns[n]);
		n++;
	}
	struct broker_qconf c = {.has_bind = true, .bind = patterns, .bind_lens = lens, .nbind = n};
	return h_qconf(h, queue, &c);
}

void h_qinfo(struct h *h, const char *queue, struct broker_qinfo *out)
{
	memset(out, 0, sizeof(*out));
	int rc = broker_queue_info(h->b, queue, strlen(queue), out);
	if (rc != 0)
		fail_msg("broker_queue_info %s: %d", queue, rc);
}

void h_enq_range(struct h *h, const char *queue, int first, int last,
		 char (*ids)[TERN_MSG_ID_MAX])
{
	for (int k = first; k <= last; k++) {
		char data[32];
		struct pub_result r = {0};
		snprintf(data, sizeof(data), "m%d", k);
		assert_int_equal(h_enq(h, queue, data, NULL, &r), 0);
		assert_true(r.id[0] != 0);
		if (ids)
			snprintf(ids[k - first], TERN_MSG_ID_MAX, "%s", r.id);
	}
}

void h_check_data(const struct tern_msg *m, const char *s, const char *file, int line)
{
	if (m->data_len == strlen(s) && memcmp(m->data, s, m->data_len) == 0)
		return;
	print_error("data '%.*s', expected '%s'\n", (int)m->data_len, (const char *)m->data, s);
	_fail(file, line);
}

void h_check_chan(const struct tern_msg *m, const char *s, const char *file, int line)
{
	if (m->chan_len == strlen(s) && memcmp(m->chan, s, m->chan_len) == 0)
		return;
	print_error("chan '%.*s', expected '%s'\n", (int)m->chan_len, m->chan, s);
	_fail(file, line);
}

void h_check_got(const struct h_delivery *d, const char *queue, const char *data,
		 uint32_t attempt, const char *file, int line)
{
	h_check_data(d->msg, data, file, line);
	if (strcmp(d->queue, queue) == 0 && d->attempt == attempt && d->delivery_id[0])
		return;
	print_error("delivery of queue '%s' attempt %u id '%s', expected '%s' attempt %u\n",
		    d->queue, d->attempt, d->delivery_id, queue, attempt);
	_fail(file, line);
}

int h_db_int(struct h *h, const char *sql, const char *arg)
{
	char path[512];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	snprintf(path, sizeof(path), "%s/tern.db", h->dir);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		fail_msg("%s: %s", sql, sqlite3_errmsg(db));
	if (arg)
		sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st);
	int v = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
	sqlite3_finalize(st);
	sqlite3_close(db);
	assert_int_equal(rc, SQLITE_ROW);
	return v;
}

int h_run(const char *group, const struct CMUnitTest *tests, size_t n, int argc, char **argv)
{
	if (argc > 1) {
		size_t i = 0;
		while (i < n && strcmp(tests[i].name, argv[1]) != 0)
			i++;
		if (i == n) {
			fprintf(stderr, "%s: no test named '%s'\n", group, argv[1]);
			return 1;
		}
		cmocka_set_test_filter(argv[1]);
	}
	return _cmocka_run_group_tests(group, tests, n, NULL, NULL);
}
