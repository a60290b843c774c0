/* Idempotency (contract: the same idempotency_key on one channel within 2
 * minutes publishes once and returns the first seq and id, also across a
 * restart). */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

#define WINDOW_MS 120000

static size_t hist_count(struct h *h, const char *chan)
{
	struct hist_result r;
	assert_int_equal(h_hist(h, chan, 0, 0, 1000, false, &r), 0);
	size_t n = r.n;
	h_hist_free(&r);
	return n;
}

static void idem_repeat_returns_first(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_sub(h, 0, "pay"), 0);
	struct pub_result first = {0}, again = {0}, third = {0};
	assert_int_equal(h_pub(h, "pay", "m1", "order-17", &first), 0);
	assert_int_equal(first.seq, 1);
	h_advance(h, 5000);
	/* Different data, same key: the first message stands. */
	assert_int_equal(h_pub(h, "pay", "changed", "order-17", &again), 0);
	assert_int_equal(again.seq, 1);
	assert_string_equal(again.id, first.id);
	assert_int_equal(h_pub(h, "pay", "changed", "order-17", &third), 0);
	assert_int_equal(third.seq, 1);
	assert_string_equal(third.id, first.id);
	/* Delivered once, stored once, counted once. */
	h_settle(h);
	h_assert_seqs(h, 0, 1, 1);
	assert_int_equal(hist_count(h, "pay"), 1);
	assert_int_equal(h_last_seq(h, "pay"), 1);
	struct broker_stats st;
	broker_get_stats(h->b, &st);
	assert_int_equal(st.messages_in, 1);
	/* Without a key, or with another key, it is a new message. */
	struct pub_result r = {0};
	assert_int_equal(h_pub(h, "pay", "m2", NULL, &r), 0);
	assert_int_equal(r.seq, 2);
	memset(&r, 0, sizeof(r));
	assert_int_equal(h_pub(h, "pay", "m3", "order-18", &r), 0);
	assert_int_equal(r.seq, 3);
	/* Keys are exact bytes: case and length count. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(h_pub(h, "pay", "m4", "ORDER-17", &r), 0);
	assert_int_equal(r.seq, 4);
	memset(&r, 0, sizeof(r));
	assert_int_equal(h_pub(h, "pay", "m5", "order-1", &r), 0);
	assert_int_equal(r.seq, 5);
	h_assert_seqs(h, 0, 1, 5);
}

static void idem_repeats_in_one_batch(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_sub(h, 0, "burst"), 0);
	/* Queued together, likely in one transaction: still once. */
	struct pub_result r[8];
	memset(r, 0, sizeof(r));
	for (int i = 0; i < 8; i++)
		assert_int_equal(h_pub_async(h, "burst", i % 2 ? "dup" : "m1", "k", &r[i]), 0);
	for (int i = 0; i < 8; i++) {
		assert_true(h_wait_count(h, &r[i].calls, 1));
		assert_int_equal(r[i].err, 0);
		assert_int_equal(r[i].seq, 1);
		assert_string_equal(r[i].id, r[0].id);
	}
	h_settle(h);
	h_assert_seqs(h, 0, 1, 1);
	assert_int_equal(hist_count(h, "burst"), 1);
	struct pub_result n = {0};
	assert_int_equal(h_pub(h, "burst", "m2", NULL, &n), 0);
	assert_int_equal(n.seq, 2);
	h_assert_seqs(h, 0, 1, 2);
}

static void idem_per_channel(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pub_result a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0}, pre = {0};
	assert_int_equal(h_pub(h, "b", "m1", NULL, &pre), 0);
	assert_int_equal(h_pub(h, "a", "m1", "same-key", &a0), 0);
	assert_int_equal(h_pub(h, "b", "m2", "same-key", &b0), 0);
	assert_int_equal(a0.seq, 1);
	assert_int_equal(b0.seq, 2);
	assert_string_not_equal(a0.id, b0.id);
	assert_int_equal(h_pub(h, "a", "x", "same-key", &a1), 0);
	assert_int_equal(h_pub(h, "b", "x", "same-key", &b1), 0);
	assert_int_equal(a1.seq, 1);
	assert_string_equal(a1.id, a0.id);
	assert_int_equal(b1.seq, 2);
	assert_string_equal(b1.id, b0.id);
	assert_int_equal(hist_count(h, "a"), 1);
	assert_int_equal(hist_count(h, "b"), 2);
}

static void idem_window_expires(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_sub(h, 0, "w"), 0);
	struct pub_result r0 = {0}, r1 = {0}, r2 = {0}, r3 = {0};
	assert_int_equal(h_pub(h, "w", "m1", "k", &r0), 0);
	assert_int_equal(r0.seq, 1);
	/* Just inside the window: still the first. */
	h_advance(h, WINDOW_MS - 1000);
	assert_int_equal(h_pub(h, "w", "x", "k", &r1), 0);
	assert_int_equal(r1.seq, 1);
	assert_string_equal(r1.id, r0.id);
	/* Past it: the key publishes anew, with a new seq and id. */
	h_advance(h, 2000);
	assert_int_equal(h_pub(h, "w", "m2", "k", &r2), 0);
	assert_int_equal(r2.seq, 2);
	assert_string_not_equal(r2.id, r0.id);
	/* ... and the window starts again from that publish. */
	h_advance(h, WINDOW_MS - 1000);
	assert_int_equal(h_pub(h, "w", "x", "k", &r3), 0);
	assert_int_equal(r3.seq, 2);
	assert_string_equal(r3.id, r2.id);
	h_settle(h);
	h_assert_seqs(h, 0, 1, 2);
}

static void idem_window_expires_after_sweep(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pub_result r0 = {0}, r1 = {0}, r2 = {0};
	assert_int_equal(h_pub(h, "s", "m1", "k", &r0), 0);
	/* A sweep inside the window keeps the key. */
	h_advance(h, WINDOW_MS / 2);
	assert_int_equal(h_sweep(h), 0);
	assert_int_equal(h_pub(h, "s", "x", "k", &r1), 0);
	assert_int_equal(r1.seq, 1);
	assert_string_equal(r1.id, r0.id);
	/* A sweep past it removes the key: a new message. */
	h_advance(h, WINDOW_MS);
	assert_int_equal(h_sweep(h), 0);
	assert_int_equal(h_pub(h, "s", "m2", "k", &r2), 0);
	assert_int_equal(r2.seq, 2);
	assert_string_not_equal(r2.id, r0.id);
}

static void idem_survives_restart(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pub_result r0 = {0}, r1 = {0}, r2 = {0}, r3 = {0}, other = {0};
	assert_int_equal(h_pub(h, "boot", "m1", "k", &r0), 0);
	assert_int_equal(h_pub(h, "boot", "m2", "k2", &other), 0);
	assert_int_equal(other.seq, 2);
	h_reopen(h);
	h_advance(h, WINDOW_MS / 2);
	assert_int_equal(h_sub(h, 0, "boot"), 0);
	assert_int_equal(h->rec[0].last_seq, 2);
	assert_int_equal(h_pub(h, "boot", "x", "k", &r1), 0);
	assert_int_equal(r1.seq, 1);
	assert_string_equal(r1.id, r0.id);
	h_unsub(h, 0);
	h_reopen(h);
	h_advance(h, WINDOW_MS / 2 - 1000); /* still inside */
	assert_int_equal(h_pub(h, "boot", "x", "k", &r2), 0);
	assert_int_equal(r2.seq, 1);
	assert_string_equal(r2.id, r0.id);
	assert_int_equal(hist_count(h, "boot"), 2);
	/* Past the window after a restart: anew. */
	h_reopen(h);
	h_advance(h, 2000);
	assert_int_equal(h_pub(h, "boot", "m3", "k", &r3), 0);
	assert_int_equal(r3.seq, 3);
	assert_string_not_equal(r3.id, r0.id);
	assert_int_equal(hist_count(h, "boot"), 3);
}

static void idem_key_sizes(void **state)
{
	struct h *h = *state;
	h_open(h);
	char k1[TERN_IDEM_KEY_MAX_BYTES + 1], k2[TERN_IDEM_KEY_MAX_BYTES + 1];
	memset(k1, 'k', TERN_IDEM_KEY_MAX_BYTES);
	k1[TERN_IDEM_KEY_MAX_BYTES] = 0;
	memcpy(k2, k1, sizeof(k1));
	k2[TERN_IDEM_KEY_MAX_BYTES - 1] = 'K'; /* differs only in the last byte */
	struct pub_result r[4] = {{0}};
	assert_int_equal(h_pub(h, "ks", "m1", k1, &r[0]), 0);
	assert_int_equal(h_pub(h, "ks", "m2", k2, &r[1]), 0);
	assert_int_equal(h_pub(h, "ks", "x", k1, &r[2]), 0);
	assert_int_equal(h_pub(h, "ks", "x", k2, &r[3]), 0);
	assert_int_equal(r[0].seq, 1);
	assert_int_equal(r[1].seq, 2);
	assert_int_equal(r[2].seq, 1);
	assert_int_equal(r[3].seq, 2);
	/* Binary keys (not NUL-terminated, with NUL inside) work by length. */
	struct broker_pub p = {.chan = "ks", .chan_len = 2, .data = "m3", .data_len = 2,
			       .idem_key = "a\0b-ignored", .idem_len = 3};
	struct pub_result b0 = {0}, b1 = {0}, b2 = {0};
	assert_int_equal(h_pub_req(h, &p, &b0), 0);
	assert_int_equal(b0.seq, 3);
	assert_int_equal(h_pub_req(h, &p, &b1), 0);
	assert_int_equal(b1.seq, 3);
	p.idem_key = "a\0c";
	assert_int_equal(h_pub_req(h, &p, &b2), 0);
	assert_int_equal(b2.seq, 4);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_h(idem_repeat_returns_first),
		cmocka_unit_test_h(idem_repeats_in_one_batch),
		cmocka_unit_test_h(idem_per_channel),
		cmocka_unit_test_h(idem_window_expires),
		cmocka_unit_test_h(idem_window_expires_after_sweep),
		cmocka_unit_test_h(idem_survives_restart),
		cmocka_unit_test_h(idem_key_sizes),
	};
	return h_run("idem", tests, N(tests), argc, argv);
}
