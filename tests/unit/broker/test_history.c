/* History reads (after/before bounds, limits, direction) and retention
 * ("at least the last N messages or T"), with the fake clock. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Publishes count messages with data "m<seq>" in one burst and checks their
 * seqs start at first. */
static void pub_burst(struct h *h, const char *chan, uint64_t first, int count)
{
	struct pub_result *r = calloc((size_t)count, sizeof(*r));
	assert_non_null(r);
	for (int i = 0; i < count; i++) {
		char data[32];
		snprintf(data, sizeof(data), "m%llu", (unsigned long long)(first + (uint64_t)i));
		assert_int_equal(h_pub_async(h, chan, data, NULL, &r[i]), 0);
	}
	for (int i = 0; i < count; i++) {
		assert_true(h_wait_count(h, &r[i].calls, 1));
		assert_int_equal(r[i].err, 0);
		assert_int_equal(r[i].seq, first + (uint64_t)i);
	}
	free(r);
}

/* Reads history and asserts it is exactly count messages with seqs from,
 * from+1, ... (from, from-1, ... backwards), each with data "m<seq>". */
static void expect_hist(struct h *h, const char *chan, uint64_t after, uint64_t before,
			uint32_t limit, bool backwards, uint64_t from, size_t count)
{
	struct hist_result r;
	int rc = h_hist(h, chan, after, before, limit, backwards, &r);
	if (rc != 0)
		fail_msg("history %s after %llu before %llu limit %u: error %d", chan,
			 (unsigned long long)after, (unsigned long long)before, limit, rc);
	if (r.n != count)
		fail_msg("history %s after %llu before %llu limit %u%s: %zu messages, want %zu",
			 chan, (unsigned long long)after, (unsigned long long)before, limit,
			 backwards ? " backwards" : "", r.n, count);
	for (size_t i = 0; i < r.n; i++) {
		uint64_t want = backwards ? from - i : from + i;
		char data[32];
		snprintf(data, sizeof(data), "m%llu", (unsigned long long)want);
		if (r.msgs[i]->seq != want)
			fail_msg("history %s [%zu]: seq %llu, want %llu", chan, i,
				 (unsigned long long)r.msgs[i]->seq, (unsigned long long)want);
		assert_int_equal(r.msgs[i]->data_len, strlen(data));
		assert_memory_equal(r.msgs[i]->data, data, strlen(data));
		assert_int_equal(r.msgs[i]->chan_len, strlen(chan));
		assert_memory_equal(r.msgs[i]->chan, chan, strlen(chan));
		assert_true(strlen(r.msgs[i]->id) > 0);
	}
	h_hist_free(&r);
}

static void history_bounds_and_direction(void **state)
{
	struct h *h = *state;
	h_open(h);
	pub_burst(h, "h", 1, 20);
	pub_burst(h, "other", 1, 7);
	/* Forwards: oldest first. */
	expect_hist(h, "h", 0, 0, 100, false, 1, 20);
	expect_hist(h, "h", 0, 0, 5, false, 1, 5);
	expect_hist(h, "h", 5, 0, 5, false, 6, 5);
	expect_hist(h, "h", 18, 0, 100, false, 19, 2);
	expect_hist(h, "h", 19, 0, 100, false, 20, 1);
	expect_hist(h, "h", 20, 0, 100, false, 0, 0);
	expect_hist(h, "h", 500, 0, 100, false, 0, 0);
	expect_hist(h, "h", 0, 5, 100, false, 1, 4);
	expect_hist(h, "h", 0, 1, 100, false, 0, 0);
	expect_hist(h, "h", 5, 10, 100, false, 6, 4);
	expect_hist(h, "h", 5, 10, 2, false, 6, 2);
	expect_hist(h, "h", 5, 6, 100, false, 0, 0);
	expect_hist(h, "h", 5, 7, 100, false, 6, 1);
	expect_hist(h, "h", 10, 5, 100, false, 0, 0);
	expect_hist(h, "h", 0, 21, 100, false, 1, 20);
	expect_hist(h, "h", 0, 1000, 100, false, 1, 20);
	expect_hist(h, "h", 0, 0, 1, false, 1, 1);
	/* Backwards: newest first. */
	expect_hist(h, "h", 0, 0, 100, true, 20, 20);
	expect_hist(h, "h", 0, 0, 5, true, 20, 5);
	expect_hist(h, "h", 0, 10, 3, true, 9, 3);
	expect_hist(h, "h", 15, 0, 100, true, 20, 5);
	expect_hist(h, "h", 5, 10, 100, true, 9, 4);
	expect_hist(h, "h", 5, 10, 2, true, 9, 2);
	expect_hist(h, "h", 0, 2, 100, true, 1, 1);
	expect_hist(h, "h", 20, 0, 100, true, 0, 0);
	/* Paging forwards and backwards covers everything exactly once. */
	uint64_t after = 0;
	for (int page = 0; page < 7; page++) {
		size_t n = page < 6 ? 3 : 2;
		expect_hist(h, "h", after, 0, 3, false, after + 1, n);
		after += n;
	}
	expect_hist(h, "h", after, 0, 3, false, 0, 0);
	uint64_t before = 0;
	for (int page = 0; page < 4; page++) {
		expect_hist(h, "h", 0, before, 6, true, before ? before - 1 : 20,
			    page < 3 ? 6 : 2);
		before = before ? before - 6 : 15;
	}
	/* Other channels are untouched by the bounds. */
	expect_hist(h, "other", 0, 0, 100, false, 1, 7);
	expect_hist(h, "other", 3, 0, 100, true, 7, 4);
}

static void on_hist_must_not_run(void *arg, int err, struct tern_msg **msgs, size_t n)
{
	(void)err, (void)msgs, (void)n;
	(*(int *)arg)++;
}

static void history_limit_bounds(void **state)
{
	struct h *h = *state;
	h_open(h);
	pub_burst(h, "big", 1, 1005);
	int calls = 0;
	static const uint32_t bad[] = {0, 1001, 5000, UINT32_MAX};
	for (size_t i = 0; i < N(bad); i++) {
		struct broker_hist q = {.chan = "big", .chan_len = 3, .limit = bad[i]};
		assert_int_equal(broker_history(h->b, &q, on_hist_must_not_run, &calls),
				 TERN_EBADREQ);
		q.backwards = true;
		assert_int_equal(broker_history(h->b, &q, on_hist_must_not_run, &calls),
				 TERN_EBADREQ);
	}
	h_settle(h);
	assert_int_equal(calls, 0);
	/* The page maximum itself is fine, and caps the answer. */
	expect_hist(h, "big", 0, 0, TERN_HISTORY_PAGE_MAX, false, 1, 1000);
	expect_hist(h, "big", 0, 0, 1000, true, 1005, 1000);
	expect_hist(h, "big", 1000, 0, 1000, false, 1001, 5);
	expect_hist(h, "big", 0, 6, 1000, true, 5, 5);
}

static void history_unknown_or_empty_channel(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct hist_result r;
	assert_int_equal(h_hist(h, "nobody:here", 0, 0, 10, false, &r), 0);
	assert_int_equal(r.n, 0);
	h_hist_free(&r);
	assert_int_equal(h_hist(h, "nobody:here", 0, 0, 10, true, &r), 0);
	assert_int_equal(r.n, 0);
	h_hist_free(&r);
	/* A subscriber alone does not create history. */
	assert_int_equal(h_sub(h, 0, "quiet"), 0);
	assert_int_equal(h_hist(h, "quiet", 0, 0, 10, false, &r), 0);
	assert_int_equal(r.n, 0);
	h_hist_free(&r);
	h_unsub(h, 0);
}

static void history_sees_publishes_before_it(void **state)
{
	struct h *h = *state;
	h_open(h);
	/* A read queued after publishes (not yet answered) sees them all. */
	struct pub_result p[10];
	memset(p, 0, sizeof(p));
	for (int i = 0; i < 10; i++) {
		char data[16];
		snprintf(data, sizeof(data), "m%d", i + 1);
		assert_int_equal(h_pub_async(h, "rw", data, NULL, &p[i]), 0);
	}
	expect_hist(h, "rw", 0, 0, 100, false, 1, 10);
	for (int i = 0; i < 10; i++)
		assert_int_equal(p[i].calls, 1);
}

static void history_huge_bounds(void **state)
{
	struct h *h = *state;
	h_open(h);
	pub_burst(h, "x", 1, 3);
	/* Seqs are unsigned 64-bit: a bound above INT64_MAX is still a bound.
	 * Nothing comes after UINT64_MAX; everything comes before it. */
	expect_hist(h, "x", UINT64_MAX, 0, 10, false, 0, 0);
	expect_hist(h, "x", (uint64_t)INT64_MAX + 1, 0, 10, false, 0, 0);
	expect_hist(h, "x", 0, UINT64_MAX, 10, false, 1, 3);
	expect_hist(h, "x", 0, (uint64_t)INT64_MAX + 1, 10, true, 3, 3);
}

static void retention_count_or_age(void **state)
{
	struct h *h = *state;
	h->cfg.history_messages = 5;
	h->cfg.history_age_ms = 1000;
	h_open(h);
	pub_burst(h, "r", 1, 10);
	/* Young: everything stays, whatever the count. */
	assert_int_equal(h_sweep(h), 0);
	expect_hist(h, "r", 0, 0, 100, false, 1, 10);
	/* Old: the last 5 stay. */
	h_advance(h, 2000);
	assert_int_equal(h_sweep(h), 0);
	expect_hist(h, "r", 0, 0, 100, false, 6, 5);
	expect_hist(h, "r", 0, 0, 100, true, 10, 5);
	/* Sweeping again changes nothing. */
	assert_int_equal(h_sweep(h), 0);
	expect_hist(h, "r", 0, 0, 100, false, 6, 5);
	/* Three young ones: the old ones outside the last 5 (6, 7, 8) go. */
	pub_burst(h, "r", 11, 3);
	assert_int_equal(h_sweep(h), 0);
	expect_hist(h, "r", 0, 0, 100, false, 9, 5);
	/* When all are old, still the last 5. */
	h_advance(h, 5000);
	assert_int_equal(h_sweep(h), 0);
	expect_hist(h, "r", 0, 0, 100, false, 9, 5);
	/* The numbering goes on. */
	assert_int_equal(h_last_seq(h, "r"), 13);
	pub_burst(h, "r", 14, 1);
}

static void retention_keeps_young_beyond_count(void **state)
{
	struct h *h = *state;
	h->cfg.history_messages = 5;
	h->cfg.history_age_ms = 1000;
	h_open(h);
	pub_burst(h, "y", 1, 10); /* at t0 */
	h_advance(h, 500);
	pub_burst(h, "y", 11, 10); /* at t0 + 500 */
	h_advance(h, 600);	   /* t0 + 1100: the first ten are old */
	assert_int_equal(h_sweep(h), 0);
	/* At least the last 5 OR younger than 1 s: the 10 young ones stay. */
	expect_hist(h, "y", 0, 0, 100, false, 11, 10);
	/* Exactly at the age limit a message is not yet old. */
	h_advance(h, 400); /* t0 + 1500: the second ten are exactly 1000 ms old */
	assert_int_equal(h_sweep(h), 0);
	expect_hist(h, "y", 0, 0, 100, false, 11, 10);
	h_advance(h, 1);
	assert_int_equal(h_sweep(h), 0);
	expect_hist(h, "y", 0, 0, 100, false, 16, 5);
}

static void retention_per_channel(void **state)
{
	struct h *h = *state;
	h->cfg.history_messages = 5;
	h->cfg.history_age_ms = 1000;
	h_open(h);
	pub_burst(h, "a", 1, 12);
	pub_burst(h, "b", 1, 3);
	pub_burst(h, "c", 1, 5);
	h_advance(h, 2000);
	assert_int_equal(h_sweep(h), 0);
	expect_hist(h, "a", 0, 0, 100, false, 8, 5);
	expect_hist(h, "b", 0, 0, 100, false, 1, 3);
	expect_hist(h, "c", 0, 0, 100, false, 1, 5);
}

static void retention_seq_continues_after_all_swept(void **state)
{
	struct h *h = *state;
	h->cfg.history_messages = 0;
	h->cfg.history_age_ms = 1000;
	h_open(h);
	pub_burst(h, "gone", 1, 3);
	h_advance(h, 2000);
	assert_int_equal(h_sweep(h), 0);
	expect_hist(h, "gone", 0, 0, 100, false, 0, 0);
	assert_int_equal(h_last_seq(h, "gone"), 3);
	pub_burst(h, "gone", 4, 1);
	expect_hist(h, "gone", 0, 0, 100, false, 4, 1);
	/* Also across a restart with an empty history. */
	h_advance(h, 2000);
	assert_int_equal(h_sweep(h), 0);
	expect_hist(h, "gone", 0, 0, 100, false, 0, 0);
	h_reopen(h);
	assert_int_equal(h_last_seq(h, "gone"), 4);
	assert_int_equal(h_sub(h, 0, "gone"), 0);
	assert_int_equal(h->rec[0].last_seq, 4);
	pub_burst(h, "gone", 5, 2);
	h_assert_seqs(h, 0, 5, 6);
	expect_hist(h, "gone", 0, 0, 100, false, 5, 2);
}

static void retention_store_sweeps_by_itself(void **state)
{
	struct h *h = *state;
	h->cfg.history_messages = 5;
	h->cfg.history_age_ms = 1000;
	h->cfg.sweep_interval_ms = 20;
	h_open(h);
	pub_burst(h, "auto", 1, 10);
	h_advance(h, 2000);
	/* No broker_sweep: the store thread's own timer must get there. */
	for (int tries = 0; tries < 250; tries++) {
		struct hist_result r;
		assert_int_equal(h_hist(h, "auto", 0, 0, 100, false, &r), 0);
		size_t n = r.n;
		h_hist_free(&r);
		if (n == 5)
			break;
		assert_int_equal(n, 10);
		struct timespec ts = {0, 20 * 1000000L};
		nanosleep(&ts, NULL);
	}
	expect_hist(h, "auto", 0, 0, 100, false, 6, 5);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_h(history_bounds_and_direction),
		cmocka_unit_test_h(history_limit_bounds),
		cmocka_unit_test_h(history_unknown_or_empty_channel),
		cmocka_unit_test_h(history_sees_publishes_before_it),
		cmocka_unit_test_h(history_huge_bounds),
		cmocka_unit_test_h(retention_count_or_age),
		cmocka_unit_test_h(retention_keeps_young_beyond_count),
		cmocka_unit_test_h(retention_per_channel),
		cmocka_unit_test_h(retention_seq_continues_after_all_swept),
		cmocka_unit_test_h(retention_store_sweeps_by_itself),
	};
	return h_run("history", tests, N(tests), argc, argv);
}
