/* Channels (contract "Channel guarantees"): seq from 1 rising by exactly 1 per
 * channel, publish answered only once durable, fan-out in seq order,
 * subscribe/unsubscribe (also from inside callbacks), channel info, and the
 * publish limits. */
#include "harness.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void data_for(char *buf, size_t cap, uint64_t seq)
{
	snprintf(buf, cap, "m%llu", (unsigned long long)seq);
}

/* Publishes count messages to chan in one burst (one or few store batches)
 * with data "m<seq>" for seqs first.., waits for all, and checks each
 * answer. */
static void pub_burst(struct h *h, const char *chan, uint64_t first, int count)
{
	struct pub_result *r = calloc((size_t)count, sizeof(*r));
	char data[32];
	assert_non_null(r);
	for (int i = 0; i < count; i++) {
		data_for(data, sizeof(data), first + (uint64_t)i);
		assert_int_equal(h_pub_async(h, chan, data, NULL, &r[i]), 0);
	}
	for (int i = 0; i < count; i++)
		assert_true(h_wait_count(h, &r[i].calls, 1));
	h_settle(h); /* a second answer to any of them would have come by now */
	for (int i = 0; i < count; i++) {
		assert_int_equal(r[i].calls, 1);
		assert_int_equal(r[i].err, 0);
		assert_int_equal(r[i].seq, first + (uint64_t)i);
	}
	free(r);
}

static void chan_seq_from_one_by_one(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_last_seq(h, "chat:lobby"), 0);
	char ids[50][TERN_MSG_ID_MAX];
	for (uint64_t s = 1; s <= 50; s++) {
		struct pub_result r = {0};
		char data[32];
		data_for(data, sizeof(data), s);
		assert_int_equal(h_pub(h, "chat:lobby", data, NULL, &r), 0);
		assert_int_equal(r.seq, s);
		assert_true(strlen(r.id) > 0);
		memcpy(ids[s - 1], r.id, TERN_MSG_ID_MAX);
		assert_int_equal(h_last_seq(h, "chat:lobby"), s);
	}
	/* Every id is distinct. */
	for (int i = 0; i < 50; i++)
		for (int j = i + 1; j < 50; j++)
			assert_string_not_equal(ids[i], ids[j]);
	/* A burst that the store commits in groups keeps the numbering and the
	 * order of the answers. */
	pub_burst(h, "chat:lobby", 51, 500);
	assert_int_equal(h_last_seq(h, "chat:lobby"), 550);

	struct hist_result hr;
	assert_int_equal(h_hist(h, "chat:lobby", 0, 0, 1000, false, &hr), 0);
	assert_int_equal(hr.n, 550);
	for (size_t i = 0; i < hr.n; i++) {
		char data[32];
		data_for(data, sizeof(data), i + 1);
		assert_int_equal(hr.msgs[i]->seq, i + 1);
		assert_int_equal(hr.msgs[i]->data_len, strlen(data));
		assert_memory_equal(hr.msgs[i]->data, data, strlen(data));
	}
	h_hist_free(&hr);

	struct broker_stats st;
	broker_get_stats(h->b, &st);
	assert_int_equal(st.messages_in, 550);
	assert_int_equal(st.publish_errors, 0);
	assert_int_equal(st.channels_active, 0);
}

static void chan_seq_independent_per_channel(void **state)
{
	struct h *h = *state;
	h_open(h);
	static const char *const chans[] = {"a", "b", "chat:lobby", "caf\xc3\xa9", "\xf0\x9f\x98\x80"};
	struct pub_result r[5][20];
	memset(r, 0, sizeof(r));
	/* Interleaved, all in flight at once. */
	for (int i = 0; i < 20; i++)
		for (int c = 0; c < 5; c++)
			if (i < 4 * (c + 1))
				assert_int_equal(h_pub_async(h, chans[c], "x", NULL, &r[c][i]), 0);
	for (int c = 0; c < 5; c++)
		for (int i = 0; i < 4 * (c + 1); i++) {
			assert_true(h_wait_count(h, &r[c][i].calls, 1));
			assert_int_equal(r[c][i].err, 0);
			assert_int_equal(r[c][i].seq, (uint64_t)i + 1);
		}
	for (int c = 0; c < 5; c++)
		assert_int_equal(h_last_seq(h, chans[c]), 4 * (c + 1));
	/* Names that differ in one byte or by a prefix are other channels. */
	assert_int_equal(h_last_seq(h, "A"), 0);
	assert_int_equal(h_last_seq(h, "chat:lobb"), 0);
	assert_int_equal(h_last_seq(h, "chat:lobby:x"), 0);
}

static void chan_seq_continues_after_reopen(void **state)
{
	struct h *h = *state;
	h_open(h);
	pub_burst(h, "a", 1, 3);
	pub_burst(h, "b", 1, 2);
	h_reopen(h);
	/* Known before any write: the seq is loaded from the store. */
	assert_int_equal(h_last_seq(h, "a"), 3);
	assert_int_equal(h_last_seq(h, "b"), 2);
	assert_int_equal(h_last_seq(h, "c"), 0);
	pub_burst(h, "a", 4, 1);
	pub_burst(h, "b", 3, 2);
	pub_burst(h, "c", 1, 1);
	/* A subscriber after a restart starts from the stored seq. */
	assert_int_equal(h_sub(h, 0, "a"), 0);
	assert_int_equal(h->rec[0].last_seq, 4);
	h_unsub(h, 0);
	h_reopen(h);
	h_reopen(h);
	assert_int_equal(h_last_seq(h, "a"), 4);
	assert_int_equal(h_last_seq(h, "b"), 4);
	assert_int_equal(h_last_seq(h, "c"), 1);
	pub_burst(h, "a", 5, 2);

	struct hist_result hr;
	assert_int_equal(h_hist(h, "a", 0, 0, 100, false, &hr), 0);
	assert_int_equal(hr.n, 6);
	for (size_t i = 0; i < hr.n; i++) {
		char data[32];
		data_for(data, sizeof(data), i + 1);
		assert_int_equal(hr.msgs[i]->seq, i + 1);
		assert_memory_equal(hr.msgs[i]->data, data, hr.msgs[i]->data_len);
	}
	h_hist_free(&hr);
}

/* Looks a message up through a second, independent SQLite connection: what
 * another process would see on disk. Returns its seq, 0 when absent, -1 on
 * error. The query knows the store's table (messages: seq, id). */
static int64_t seq_on_disk(const char *dir, const char *id)
{
	char path[512];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t seq = -1;
	snprintf(path, sizeof(path), "%s/tern.db", dir);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		goto out_close_db;
	sqlite3_busy_timeout(db, 2000);
	if (sqlite3_prepare_v2(db, "SELECT seq FROM messages WHERE id = ?1", -1, &st, NULL) !=
	    SQLITE_OK)
		goto out_close_db;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		seq = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		seq = 0;
	sqlite3_finalize(st);
out_close_db:
	sqlite3_close(db);
	return seq;
}

struct durable_check {
	struct h *h;
	int64_t seen_seq; /* what the disk said from inside the callback */
};

static void check_on_disk(struct pub_result *r)
{
	struct durable_check *d = r->hook_arg;
	d->seen_seq = r->err == 0 ? seq_on_disk(d->h->dir, r->id) : -2;
}

static void check_msg_on_disk(struct recorder *r)
{
	struct durable_check *d = r->hook_arg;
	struct tern_msg *m = r->msgs[r->n - 1];
	d->seen_seq = seq_on_disk(d->h->dir, m->id);
}

static void chan_publish_ok_only_after_durable(void **state)
{
	struct h *h = *state;
	h->cfg.sync_full = true;
	h_open(h);
	struct durable_check sub_check = {.h = h, .seen_seq = -3};
	h->rec[0].hook_after = 1;
	h->rec[0].on_msg_hook = check_msg_on_disk;
	h->rec[0].hook_arg = &sub_check;
	assert_int_equal(h_sub(h, 0, "orders"), 0);

	struct durable_check checks[20];
	struct pub_result r[20];
	memset(r, 0, sizeof(r));
	for (int i = 0; i < 20; i++) {
		checks[i] = (struct durable_check){.h = h, .seen_seq = -3};
		r[i].hook = check_on_disk;
		r[i].hook_arg = &checks[i];
		char data[32];
		data_for(data, sizeof(data), (uint64_t)i + 1);
		assert_int_equal(h_pub_async(h, "orders", data, NULL, &r[i]), 0);
	}
	for (int i = 0; i < 20; i++)
		assert_true(h_wait_count(h, &r[i].calls, 1));
	for (int i = 0; i < 20; i++) {
		assert_int_equal(r[i].err, 0);
		/* When the publisher heard ok, another reader already saw the row. */
		assert_int_equal(checks[i].seen_seq, i + 1);
	}
	/* The subscriber, too, only sees committed messages. */
	assert_int_equal(sub_check.seen_seq, 1);
	h_unsub(h, 0);

	/* And a new broker on the same dir reads them all back. */
	h_reopen(h);
	struct hist_result hr;
	assert_int_equal(h_hist(h, "orders", 0, 0, 100, false, &hr), 0);
	assert_int_equal(hr.n, 20);
	for (size_t i = 0; i < hr.n; i++) {
		assert_int_equal(hr.msgs[i]->seq, i + 1);
		assert_string_equal(hr.msgs[i]->id, r[i].id);
	}
	h_hist_free(&hr);
}

static void chan_message_fields_round_trip(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_sub(h, 0, "f"), 0);
	static const unsigned char bin[] = {0, 0xff, 0, 'a', 0x80, 0};
	struct broker_pub p1 = {.chan = "f", .chan_len = 1, .name = "evt", .name_len = 3,
				.data = "{\"k\":[1,2]}", .data_len = 11, .enc = TERN_ENC_JSON};
	struct broker_pub p2 = {.chan = "f", .chan_len = 1, .data = bin, .data_len = sizeof(bin),
				.enc = TERN_ENC_BASE64};
	struct broker_pub p3 = {.chan = "f", .chan_len = 1, .name = "", .name_len = 0,
				.data = "", .data_len = 0, .enc = TERN_ENC_JSON};
	/* Strings need not be NUL-terminated: only the given lengths count. */
	struct broker_pub p4 = {.chan = "fxyz", .chan_len = 1, .name = "abcdef", .name_len = 2,
				.data = "12345", .data_len = 3, .enc = TERN_ENC_JSON};
	struct pub_result r[4] = {{0}};
	assert_int_equal(h_pub_req(h, &p1, &r[0]), 0);
	h_advance(h, 1500);
	assert_int_equal(h_pub_req(h, &p2, &r[1]), 0);
	assert_int_equal(h_pub_req(h, &p3, &r[2]), 0);
	assert_int_equal(h_pub_req(h, &p4, &r[3]), 0);

	struct hist_result hr;
	assert_int_equal(h_hist(h, "f", 0, 0, 10, false, &hr), 0);
	assert_int_equal(hr.n, 4);
	assert_int_equal(h->rec[0].n, 4);
	for (int pass = 0; pass < 2; pass++) {
		struct tern_msg **m = pass == 0 ? h->rec[0].msgs : hr.msgs;
		for (int i = 0; i < 4; i++) {
			assert_int_equal(m[i]->seq, i + 1);
			assert_string_equal(m[i]->id, r[i].id);
			assert_int_equal(m[i]->chan_len, 1);
			assert_memory_equal(m[i]->chan, "f", 1);
		}
		assert_true(m[0]->has_name);
		assert_int_equal(m[0]->name_len, 3);
		assert_memory_equal(m[0]->name, "evt", 3);
		assert_int_equal(m[0]->enc, TERN_ENC_JSON);
		assert_int_equal(m[0]->data_len, 11);
		assert_memory_equal(m[0]->data, "{\"k\":[1,2]}", 11);
		assert_int_equal(m[0]->ts_ms, H_T0_MS);

		assert_false(m[1]->has_name);
		assert_int_equal(m[1]->enc, TERN_ENC_BASE64);
		assert_int_equal(m[1]->data_len, sizeof(bin));
		assert_memory_equal(m[1]->data, bin, sizeof(bin));
		assert_int_equal(m[1]->ts_ms, H_T0_MS + 1500);

		assert_true(m[2]->has_name);
		assert_int_equal(m[2]->name_len, 0);
		assert_int_equal(m[2]->data_len, 0);

		assert_true(m[3]->has_name);
		assert_int_equal(m[3]->name_len, 2);
		assert_memory_equal(m[3]->name, "ab", 2);
		assert_int_equal(m[3]->data_len, 3);
		assert_memory_equal(m[3]->data, "123", 3);
	}
	h_hist_free(&hr);
}

static void chan_fanout_two_subscribers_in_order(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_sub(h, 0, "chat:lobby"), 0);
	assert_int_equal(h_sub(h, 1, "chat:lobby"), 0);
	assert_int_equal(h_sub(h, 2, "chat:other"), 0);
	assert_int_equal(h->rec[0].last_seq, 0);
	assert_int_equal(h->rec[1].last_seq, 0);
	pub_burst(h, "chat:lobby", 1, 300);
	h_assert_seqs(h, 0, 1, 300);
	h_assert_seqs(h, 1, 1, 300);
	assert_int_equal(h->rec[2].n, 0);
	/* One shared buffer per message, not a copy per subscriber. */
	for (int i = 0; i < 300; i++)
		assert_ptr_equal(h->rec[0].msgs[i], h->rec[1].msgs[i]);
	/* Fan-out runs before the publish answer. */
	struct pub_result r = {0};
	assert_int_equal(h_pub(h, "chat:other", "m1", NULL, &r), 0);
	h_assert_seqs(h, 2, 1, 1);
}

static void chan_unsubscribe_stops_delivery(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_sub(h, 0, "u"), 0);
	assert_int_equal(h_sub(h, 1, "u"), 0);
	pub_burst(h, "u", 1, 3);
	h_unsub(h, 0);
	pub_burst(h, "u", 4, 3);
	h_assert_seqs(h, 0, 1, 3);
	h_assert_seqs(h, 1, 1, 6);
	/* Unsubscribing while publishes are in flight: nothing after. */
	struct pub_result r[5] = {{0}};
	for (int i = 0; i < 5; i++)
		assert_int_equal(h_pub_async(h, "u", "late", NULL, &r[i]), 0);
	h_unsub(h, 1);
	for (int i = 0; i < 5; i++) {
		assert_true(h_wait_count(h, &r[i].calls, 1));
		assert_int_equal(r[i].seq, 7 + (uint64_t)i);
	}
	h_assert_seqs(h, 1, 1, 6);
	assert_int_equal(h_subscribers(h, "u"), 0);
	/* Subscribing again starts from the current seq. */
	assert_int_equal(h_sub(h, 2, "u"), 0);
	assert_int_equal(h->rec[2].last_seq, 11);
}

static void unsub_self(struct recorder *r)
{
	broker_unsubscribe(r->sub);
	r->sub = NULL;
}

static void unsub_other(struct recorder *r)
{
	struct recorder *other = r->hook_arg;
	broker_unsubscribe(other->sub);
	other->sub = NULL;
}

static void chan_unsubscribe_self_in_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	h->rec[0].hook_after = 2;
	h->rec[0].on_msg_hook = unsub_self;
	assert_int_equal(h_sub(h, 0, "cb"), 0);
	assert_int_equal(h_sub(h, 1, "cb"), 0);
	assert_int_equal(h_subscribers(h, "cb"), 2);
	pub_burst(h, "cb", 1, 5);
	h_assert_seqs(h, 0, 1, 2);
	h_assert_seqs(h, 1, 1, 5);
	assert_null(h->rec[0].sub);
	assert_int_equal(h_subscribers(h, "cb"), 1);
}

static void chan_unsubscribe_next_in_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	/* rec 0 is walked first; on its 2nd message it removes rec 1, the next
	 * one in the walk. rec 2 after it must still get everything. */
	h->rec[0].hook_after = 2;
	h->rec[0].on_msg_hook = unsub_other;
	h->rec[0].hook_arg = &h->rec[1];
	assert_int_equal(h_sub(h, 0, "cb"), 0);
	assert_int_equal(h_sub(h, 1, "cb"), 0);
	assert_int_equal(h_sub(h, 2, "cb"), 0);
	pub_burst(h, "cb", 1, 4);
	h_assert_seqs(h, 0, 1, 4);
	h_assert_seqs(h, 1, 1, 1);
	h_assert_seqs(h, 2, 1, 4);
	assert_int_equal(h_subscribers(h, "cb"), 2);
}

static void chan_unsubscribe_last_in_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	/* The channel's only subscriber leaves from inside its callback while
	 * no other publish is in flight: the channel becomes idle during its
	 * own fan-out. */
	h->rec[0].hook_after = 1;
	h->rec[0].on_msg_hook = unsub_self;
	assert_int_equal(h_sub(h, 0, "solo"), 0);
	struct pub_result r = {0};
	assert_int_equal(h_pub(h, "solo", "m1", NULL, &r), 0);
	assert_int_equal(r.seq, 1);
	h_assert_seqs(h, 0, 1, 1);
	assert_null(h->rec[0].sub);
	assert_int_equal(h_subscribers(h, "solo"), 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(h_pub(h, "solo", "m2", NULL, &r), 0);
	assert_int_equal(r.seq, 2);
	h_assert_seqs(h, 0, 1, 1);
	struct broker_stats st;
	broker_get_stats(h->b, &st);
	assert_int_equal(st.channels_active, 0);
}

static void unsub_in_pub_cb(struct pub_result *r)
{
	struct recorder *rec = r->hook_arg;
	if (rec->sub) {
		broker_unsubscribe(rec->sub);
		rec->sub = NULL;
	}
}

static void chan_unsubscribe_in_publish_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	/* A client subscribed to its own channel publishes, and leaves when it
	 * hears ok: the publish callback drops the channel's last subscriber. */
	assert_int_equal(h_sub(h, 0, "self"), 0);
	struct pub_result r = {.hook = unsub_in_pub_cb, .hook_arg = &h->rec[0]};
	assert_int_equal(h_pub(h, "self", "m1", NULL, &r), 0);
	assert_int_equal(r.seq, 1);
	h_assert_seqs(h, 0, 1, 1);
	assert_null(h->rec[0].sub);
	struct pub_result r2 = {0};
	assert_int_equal(h_pub(h, "self", "m2", NULL, &r2), 0);
	assert_int_equal(r2.seq, 2);
	struct broker_stats st;
	broker_get_stats(h->b, &st);
	assert_int_equal(st.channels_active, 0);
}

static void sub_another(struct recorder *r)
{
	struct recorder *late = r->hook_arg;
	int rc = h_sub(r->h, (int)(late - r->h->rec), "grow");
	if (rc != 0)
		late->last_seq = UINT64_MAX;
}

static void chan_subscribe_in_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	/* rec 0's callback subscribes rec 2 while the fan-out of seq 1 is still
	 * walking towards rec 1. rec 2 is told last_seq L and must get exactly
	 * the messages after L. */
	h->rec[0].hook_after = 1;
	h->rec[0].on_msg_hook = sub_another;
	h->rec[0].hook_arg = &h->rec[2];
	assert_int_equal(h_sub(h, 0, "grow"), 0);
	assert_int_equal(h_sub(h, 1, "grow"), 0);
	pub_burst(h, "grow", 1, 3);
	h_assert_seqs(h, 0, 1, 3);
	h_assert_seqs(h, 1, 1, 3);
	assert_non_null(h->rec[2].sub);
	uint64_t l = h->rec[2].last_seq;
	assert_true(l <= 3);
	if (h->rec[2].n > 0 && h->rec[2].msgs[0]->seq <= l)
		fail_msg("subscribed with last_seq %llu but got seq %llu too",
			 (unsigned long long)l, (unsigned long long)h->rec[2].msgs[0]->seq);
	h_assert_seqs(h, 2, l + 1, 3);
}

static void chan_subscribe_gets_exactly_after_last_seq(void **state)
{
	struct h *h = *state;
	h_open(h);
	pub_burst(h, "s", 1, 5);
	assert_int_equal(h_sub(h, 0, "s"), 0);
	assert_int_equal(h->rec[0].last_seq, 5);
	pub_burst(h, "s", 6, 3);
	h_assert_seqs(h, 0, 6, 8);
	h_unsub(h, 0);

	/* Subscribing while publishes are in flight: whatever last_seq says,
	 * the subscriber gets exactly the messages after it, none missed, none
	 * twice. Repeat to catch different points of the store's progress. */
	uint64_t next = 9;
	for (int round = 0; round < 20; round++) {
		int k = 1 + round;
		struct pub_result r[25];
		memset(r, 0, sizeof(r));
		for (int i = 0; i < k; i++)
			assert_int_equal(h_pub_async(h, "s", "x", NULL, &r[i]), 0);
		int slot = 1 + round % 2;
		assert_int_equal(h_sub(h, slot, "s"), 0);
		uint64_t l = h->rec[slot].last_seq;
		assert_true(l >= next - 1 && l <= next - 1 + (uint64_t)k);
		for (int i = 0; i < k; i++)
			assert_true(h_wait_count(h, &r[i].calls, 1));
		next += (uint64_t)k;
		struct recorder *rec = &h->rec[slot];
		assert_int_equal(rec->n, next - 1 - l);
		for (size_t i = 0; i < rec->n; i++)
			assert_int_equal(rec->msgs[i]->seq, l + 1 + i);
		h_unsub(h, slot);
		for (size_t i = 0; i < rec->n; i++)
			msg_unref(rec->msgs[i]);
		rec->n = 0;
	}
}

static void chan_info_counts_clients(void **state)
{
	struct h *h = *state;
	h_open(h);
	uint64_t seq = 99, subs = 99;
	broker_channel_info(h->b, "never", 5, &seq, &subs);
	assert_int_equal(seq, 0);
	assert_int_equal(subs, 0);

	assert_int_equal(h_sub_clients(h, 0, "room", 3), 0);
	assert_int_equal(h_subscribers(h, "room"), 3);
	assert_int_equal(h_sub_clients(h, 1, "room", 5), 0);
	assert_int_equal(h_subscribers(h, "room"), 8);
	assert_int_equal(h_sub_clients(h, 2, "other", 7), 0);
	assert_int_equal(h_subscribers(h, "room"), 8);
	assert_int_equal(h_subscribers(h, "other"), 7);
	broker_sub_set_clients(h->rec[0].sub, 10);
	assert_int_equal(h_subscribers(h, "room"), 15);
	broker_sub_set_clients(h->rec[1].sub, 0);
	assert_int_equal(h_subscribers(h, "room"), 10);
	broker_sub_set_clients(h->rec[1].sub, 1);
	assert_int_equal(h_subscribers(h, "room"), 11);
	pub_burst(h, "room", 1, 4);
	broker_channel_info(h->b, "room", 4, &seq, &subs);
	assert_int_equal(seq, 4);
	assert_int_equal(subs, 11);
	h_unsub(h, 1);
	assert_int_equal(h_subscribers(h, "room"), 10);
	h_unsub(h, 0);
	broker_channel_info(h->b, "room", 4, &seq, &subs);
	assert_int_equal(seq, 4);
	assert_int_equal(subs, 0);
	assert_int_equal(h_subscribers(h, "other"), 7);
	struct broker_stats st;
	broker_get_stats(h->b, &st);
	assert_int_equal(st.channels_active, 1);
	h_unsub(h, 2);
	broker_get_stats(h->b, &st);
	assert_int_equal(st.channels_active, 0);
}

static void on_pub_must_not_run(void *arg, int err, uint64_t seq, const char *id)
{
	(void)err, (void)seq, (void)id;
	(*(int *)arg)++;
}

/* Expects broker_publish to refuse p with want, naming a reason. */
static void expect_refused(struct h *h, const struct broker_pub *p, int want, int *calls)
{
	const char *why = NULL;
	int rc = broker_publish(h->b, p, on_pub_must_not_run, calls, &why);
	if (rc != want)
		fail_msg("publish: got %d, want %d", rc, want);
	assert_non_null(why);
	assert_true(strlen(why) > 0);
	/* why is optional. */
	assert_int_equal(broker_publish(h->b, p, on_pub_must_not_run, calls, NULL), want);
}

static void chan_publish_limits(void **state)
{
	struct h *h = *state;
	h->cfg.max_message_bytes = 1024;
	h_open(h);
	int calls = 0;
	char *big = malloc(2048);
	char name[300], key[200];
	assert_non_null(big);
	memset(big, 'd', 2048);
	memset(name, 'n', sizeof(name));
	memset(key, 'k', sizeof(key));

	struct broker_pub p = {.chan = "lim", .chan_len = 3, .data = big, .data_len = 1025};
	expect_refused(h, &p, TERN_ETOOLARGE, &calls);
	p.data_len = 2048;
	expect_refused(h, &p, TERN_ETOOLARGE, &calls);
	p.data_len = 1024;
	struct pub_result r = {0};
	assert_int_equal(h_pub_req(h, &p, &r), 0);
	assert_int_equal(r.seq, 1);

	p.data_len = 1;
	p.name = name;
	p.name_len = 256;
	expect_refused(h, &p, TERN_EBADREQ, &calls);
	p.name_len = 255;
	memset(&r, 0, sizeof(r));
	assert_int_equal(h_pub_req(h, &p, &r), 0);
	assert_int_equal(r.seq, 2);

	p.name = NULL;
	p.name_len = 0;
	p.idem_key = key;
	p.idem_len = 129;
	expect_refused(h, &p, TERN_EBADREQ, &calls);
	p.idem_len = 0;
	expect_refused(h, &p, TERN_EBADREQ, &calls);
	p.idem_len = 128;
	memset(&r, 0, sizeof(r));
	assert_int_equal(h_pub_req(h, &p, &r), 0);
	assert_int_equal(r.seq, 3);

	p.idem_key = NULL;
	p.idem_len = 0;
	p.enc = 7;
	expect_refused(h, &p, TERN_EBADREQ, &calls);
	p.enc = TERN_ENC_BASE64;

	/* Bad channel names. */
	static const struct {
		const char *s;
		size_t len;
	} bad[] = {{"", 0}, {"$sys", 4}, {"a b", 3}, {"a\xc2\xa0", 3}, {"\xff", 1}, {"a\0b", 3}};
	for (size_t i = 0; i < N(bad); i++) {
		p.chan = bad[i].s;
		p.chan_len = bad[i].len;
		expect_refused(h, &p, TERN_EBADNAME, &calls);
	}
	char longname[256];
	memset(longname, 'c', sizeof(longname));
	p.chan = longname;
	p.chan_len = 256;
	expect_refused(h, &p, TERN_EBADNAME, &calls);
	/* A bad name wins over other problems: the name is checked first. */
	p.chan = "$x";
	p.chan_len = 2;
	p.data_len = 2048;
	expect_refused(h, &p, TERN_EBADNAME, &calls);
	p.chan = longname;
	p.chan_len = 255;
	p.data_len = 1;
	memset(&r, 0, sizeof(r));
	assert_int_equal(h_pub_req(h, &p, &r), 0);
	assert_int_equal(r.seq, 1);

	/* Refused publishes never run their callback, consume no seq, and leave
	 * no channel behind. */
	h_settle(h);
	assert_int_equal(calls, 0);
	assert_int_equal(h_last_seq(h, "lim"), 3);
	assert_int_equal(h_last_seq(h, "$sys"), 0);
	struct broker_stats st;
	broker_get_stats(h->b, &st);
	assert_int_equal(st.messages_in, 4);
	assert_int_equal(st.channels_active, 0);

	/* Subscribe and history refuse bad names too. */
	struct broker_sub *sub = (struct broker_sub *)&calls;
	uint64_t last = 77;
	assert_int_equal(broker_subscribe(h->b, "$sys", 4, NULL, NULL, 1, &sub, &last),
			 TERN_EBADNAME);
	assert_int_equal(broker_subscribe(h->b, "", 0, NULL, NULL, 1, &sub, &last), TERN_EBADNAME);
	assert_int_equal(broker_subscribe(h->b, longname, 256, NULL, NULL, 1, &sub, &last),
			 TERN_EBADNAME);
	assert_ptr_equal(sub, (struct broker_sub *)&calls);
	assert_int_equal(last, 77);
	struct broker_hist hq = {.chan = "a\tb", .chan_len = 3, .limit = 10};
	assert_int_equal(broker_history(h->b, &hq, NULL, NULL), TERN_EBADNAME);
	h_settle(h);
	free(big);
}

static void chan_store_queue_bound(void **state)
{
	struct h *h = *state;
	h->cfg.store_queue_max_bytes = 100;
	h_open(h);
	char data[300];
	memset(data, 'q', sizeof(data) - 1);
	data[sizeof(data) - 1] = 0;
	int calls = 0;
	const char *why = NULL;
	/* More bytes than the store may hold waiting: refused as retryable, the
	 * callback never runs, and no seq is used. */
	struct broker_pub p = {.chan = "q", .chan_len = 1, .data = data, .data_len = 299};
	int rc = broker_publish(h->b, &p, on_pub_must_not_run, &calls, &why);
	assert_int_equal(rc, TERN_EUNAVAIL);
	assert_true(tern_err_retryable(rc));
	assert_non_null(why);
	h_settle(h);
	assert_int_equal(calls, 0);
	struct broker_stats st;
	broker_get_stats(h->b, &st);
	assert_int_equal(st.channels_active, 0);
	struct pub_result r = {0};
	assert_int_equal(h_pub(h, "q", "small", NULL, &r), 0);
	assert_int_equal(r.seq, 1);
}

static void on_hist_count(void *arg, int err, struct tern_msg **msgs, size_t n)
{
	(*(int *)arg)++;
	for (size_t i = 0; i < n; i++)
		msg_unref(msgs[i]);
	free(msgs);
}

static void on_sweep_count(void *arg, int err) { (*(int *)arg)++; }

static void chan_callbacks_run_only_from_poll(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_sub(h, 0, "p"), 0);
	struct pub_result r = {0};
	int hist = 0, sweep = 0;
	struct broker_hist q = {.chan = "p", .chan_len = 1, .limit = 10};
	assert_int_equal(h_pub_async(h, "p", "m1", NULL, &r), 0);
	assert_int_equal(broker_history(h->b, &q, on_hist_count, &hist), 0);
	assert_int_equal(broker_sweep(h->b, on_sweep_count, &sweep), 0);
	/* Let the store finish all three, without polling. */
	for (int i = 0; i < 500; i++) {
		pthread_mutex_lock(&h->mu);
		bool any = h->notifies > 0;
		pthread_mutex_unlock(&h->mu);
		if (any)
			break;
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	assert_int_equal(r.calls, 0);
	assert_int_equal(hist, 0);
	assert_int_equal(sweep, 0);
	assert_int_equal(h->rec[0].n, 0);
	assert_true(h_wait_count(h, &sweep, 1));
	/* Answered in submission order: by the sweep's answer, the others ran. */
	assert_int_equal(r.calls, 1);
	assert_int_equal(hist, 1);
	h_assert_seqs(h, 0, 1, 1);
}

static void chan_store_stats_count_commits(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct store_stats st;
	broker_store_stats(h->b, &st);
	assert_int_equal(st.batches, 0);
	assert_int_equal(st.batch_ops, 0);
	pub_burst(h, "g", 1, 400);
	pub_burst(h, "g2", 1, 100);
	/* Repeats are publishes the store handled, in a batch like any other. */
	struct pub_result d0 = {0}, d1 = {0};
	assert_int_equal(h_pub(h, "g", "x", "key", &d0), 0);
	assert_int_equal(h_pub(h, "g", "x", "key", &d1), 0);
	broker_store_stats(h->b, &st);
	assert_int_equal(st.batch_ops, 502);
	assert_true(st.batches >= 3 && st.batches <= 502);
	uint64_t sum = 0;
	for (size_t i = 0; i < N(st.commit_hist); i++)
		sum += st.commit_hist[i];
	assert_int_equal(sum, st.batches);
	/* Reads and sweeps are not write batches. */
	h_settle(h);
	assert_int_equal(h_sweep(h), 0);
	struct store_stats st2;
	broker_store_stats(h->b, &st2);
	assert_int_equal(st2.batches, st.batches);
	assert_int_equal(st2.batch_ops, st.batch_ops);
	struct broker_stats bs;
	broker_get_stats(h->b, &bs);
	assert_int_equal(bs.messages_in, 501);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_h(chan_seq_from_one_by_one),
		cmocka_unit_test_h(chan_seq_independent_per_channel),
		cmocka_unit_test_h(chan_seq_continues_after_reopen),
		cmocka_unit_test_h(chan_publish_ok_only_after_durable),
		cmocka_unit_test_h(chan_message_fields_round_trip),
		cmocka_unit_test_h(chan_fanout_two_subscribers_in_order),
		cmocka_unit_test_h(chan_unsubscribe_stops_delivery),
		cmocka_unit_test_h(chan_unsubscribe_self_in_callback),
		cmocka_unit_test_h(chan_unsubscribe_next_in_callback),
		cmocka_unit_test_h(chan_unsubscribe_last_in_callback),
		cmocka_unit_test_h(chan_unsubscribe_in_publish_callback),
		cmocka_unit_test_h(chan_subscribe_in_callback),
		cmocka_unit_test_h(chan_subscribe_gets_exactly_after_last_seq),
		cmocka_unit_test_h(chan_info_counts_clients),
		cmocka_unit_test_h(chan_publish_limits),
		cmocka_unit_test_h(chan_store_queue_bound),
		cmocka_unit_test_h(chan_callbacks_run_only_from_poll),
		cmocka_unit_test_h(chan_store_stats_count_commits),
	};
	return h_run("chan", tests, N(tests), argc, argv);
}
