/* The queue engine (contract: "Queue guarantees (direct)"): FIFO delivery to
 * one consumer at a time, durability of enqueue and of unacked deliveries,
 * prefetch, round-robin, nack, ack timeouts on the fake clock, cancel, acks
 * of unknown or stale delivery ids, enqueue input. Dead letters are in
 * test_queue_dlq.c. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void set_timeout_attempts(struct h *h, const char *queue, uint64_t timeout_ms,
				 uint32_t attempts)
{
	struct broker_qconf c = {
		.has_ack_timeout = timeout_ms != 0,
		.ack_timeout_ms = timeout_ms,
		.has_max_attempts = attempts != 0,
		.max_attempts = attempts,
	};
	assert_int_equal(h_qconf(h, queue, &c), 0);
}

static int db_rows_with_id(struct h *h, const char *id)
{
	return h_db_int(h, "SELECT count(*) FROM qmsgs WHERE id = ?1", id);
}

/* --- FIFO and durability --- */

static void enqueue_consume_fifo(void **state)
{
	struct h *h = *state;
	char ids[5][TERN_MSG_ID_MAX];
	h_open(h);
	h_enq_range(h, "jobs", 1, 5, ids);
	for (int i = 0; i < 5; i++)
		for (int j = i + 1; j < 5; j++)
			assert_string_not_equal(ids[i], ids[j]);
	struct broker_qinfo qi;
	h_qinfo(h, "jobs", &qi);
	assert_int_equal(qi.ready, 5);
	assert_int_equal(qi.unacked, 0);

	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "jobs", 10), 0);
	/* Never from inside broker_consume. */
	assert_int_equal(c->n, 0);
	assert_true(h_wait_size(h, &c->n, 5));
	h_settle(h);
	assert_int_equal(c->n, 5);
	for (int k = 0; k < 5; k++) {
		char data[8];
		snprintf(data, sizeof(data), "m%d", k + 1);
		h_assert_got(&c->got[k], "jobs", data, 1);
		assert_false(c->got[k].from_channel);
		assert_string_equal(c->got[k].msg->id, ids[k]);
		/* A direct enqueue's message carries the queue's name. */
		h_assert_chan(c->got[k].msg, "jobs");
		assert_false(c->got[k].msg->has_name);
		for (int j = 0; j < k; j++)
			assert_string_not_equal(c->got[k].delivery_id, c->got[j].delivery_id);
	}
	h_qinfo(h, "jobs", &qi);
	assert_int_equal(qi.ready, 0);
	assert_int_equal(qi.unacked, 5);
	assert_int_equal(qi.consumers, 1);
	assert_int_equal(qi.delivered, 5);
	assert_int_equal(qi.redelivered, 0);

	/* Later enqueues reach the consumer already there, still in order. */
	h_enq_range(h, "jobs", 6, 7, NULL);
	assert_true(h_wait_size(h, &c->n, 7));
	h_assert_got(&c->got[5], "jobs", "m6", 1);
	h_assert_got(&c->got[6], "jobs", "m7", 1);

	for (int k = 0; k < 7; k++)
		assert_int_equal(h_ack(h, "jobs", c->got[k].delivery_id), 0);
	h_qinfo(h, "jobs", &qi);
	assert_int_equal(qi.ready, 0);
	assert_int_equal(qi.unacked, 0);
	h_cancel(h, 0);
	h_qinfo(h, "jobs", &qi);
	assert_int_equal(qi.consumers, 0);
}

static void check_committed(struct pub_result *r)
{
	struct h *h = r->hook_arg;
	/* Inside the enqueue callback the row is already on disk. */
	assert_int_equal(db_rows_with_id(h, r->id), 1);
}

static void enqueue_durable_before_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pub_result r = {.hook = check_committed, .hook_arg = h};
	assert_int_equal(h_enq_async(h, "durable", "payload", NULL, &r), 0);
	assert_int_equal(r.calls, 0); /* never inside broker_enqueue */
	assert_true(h_wait_count(h, &r.calls, 1));
	h_settle(h);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, 0);

	h_reopen(h);
	struct broker_qinfo qi;
	h_qinfo(h, "durable", &qi);
	assert_int_equal(qi.ready, 1);
	assert_int_equal(h_consume(h, 0, "durable", 1), 0);
	assert_true(h_wait_size(h, &h->cons[0].n, 1));
	h_assert_got(&h->cons[0].got[0], "durable", "payload", 1);
	assert_string_equal(h->cons[0].got[0].msg->id, r.id);
	h_assert_chan(h->cons[0].got[0].msg, "durable");
}

/* Unacked deliveries come back after a restart, acked ones do not; old
 * delivery ids are unknown to the new process. */
static void unacked_survive_reopen(void **state)
{
	struct h *h = *state;
	char ids[4][TERN_MSG_ID_MAX];
	h_open(h);
	h_enq_range(h, "work", 1, 4, ids);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "work", 10), 0);
	assert_true(h_wait_size(h, &c->n, 4));
	assert_int_equal(h_ack(h, "work", c->got[1].delivery_id), 0); /* m2 */
	assert_int_equal(h_ack(h, "work", c->got[3].delivery_id), 0); /* m4 */
	char old_id[48];
	snprintf(old_id, sizeof(old_id), "%s", c->got[0].delivery_id);
	h_cancel_all(h);
	h_reopen(h);

	struct broker_qinfo qi;
	h_qinfo(h, "work", &qi);
	assert_int_equal(qi.ready, 2);
	assert_int_equal(qi.unacked, 0);
	assert_int_equal(h_ack(h, "work", old_id), TERN_ENOTFOUND);
	h_consumer_forget(h, 0);
	assert_int_equal(h_consume(h, 0, "work", 10), 0);
	assert_true(h_wait_size(h, &c->n, 2));
	h_settle(h);
	assert_int_equal(c->n, 2);
	/* The cancel counted as a failed delivery: attempt 2. */
	h_assert_got(&c->got[0], "work", "m1", 2);
	assert_string_equal(c->got[0].msg->id, ids[0]);
	h_assert_got(&c->got[1], "work", "m3", 2);
	assert_string_equal(c->got[1].msg->id, ids[2]);
	assert_int_equal(h_ack(h, "work", c->got[0].delivery_id), 0);
	h_cancel_all(h);

	/* Once more: only the one never acked is left. */
	h_reopen(h);
	h_qinfo(h, "work", &qi);
	assert_int_equal(qi.ready, 1);
	h_consumer_forget(h, 0);
	assert_int_equal(h_consume(h, 0, "work", 10), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	h_assert_got(&c->got[0], "work", "m3", 3);
}

/* A pulled delivery has no consumer to cancel: it is still out when the
 * broker closes. After a graceful restart (no crash) it comes back as a
 * further delivery: attempt 2. */
static void pulled_unacked_counts_across_reopen(void **state)
{
	struct h *h = *state;
	h_open(h);
	h_enq_range(h, "pq", 1, 1, NULL);
	struct pull_result *r = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "pq", 1, 0), 0);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->n, 1);
	h_assert_got(&r->got[0], "pq", "m1", 1);
	h_reopen(h);
	assert_int_equal(h_pull(h, 0, "pq", 1, 0), 0);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->n, 1);
	h_assert_got(&r->got[0], "pq", "m1", 2);
}

/* Order and qseq continue across a restart: new work goes behind the old. */
static void fifo_across_reopen(void **state)
{
	struct h *h = *state;
	char ids[3][TERN_MSG_ID_MAX];
	h_open(h);
	h_enq_range(h, "fr", 1, 2, ids);
	h_reopen(h);
	h_enq_range(h, "fr", 3, 3, ids + 2);
	assert_string_not_equal(ids[2], ids[0]);
	assert_string_not_equal(ids[2], ids[1]);
	h_reopen(h);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "fr", 10), 0);
	assert_true(h_wait_size(h, &c->n, 3));
	for (int k = 0; k < 3; k++) {
		char data[8];
		snprintf(data, sizeof(data), "m%d", k + 1);
		h_assert_got(&c->got[k], "fr", data, 1);
		assert_string_equal(c->got[k].msg->id, ids[k]);
	}
}

static void on_enq(void *arg, int err, uint64_t seq, const char *id)
{
	struct pub_result *r = arg;
	(void)seq;
	if (++r->calls == 1) {
		r->err = err;
		snprintf(r->id, sizeof(r->id), "%s", id ? id : "");
	}
}

/* Data (any bytes), encoding and timestamp come back as enqueued, also from
 * disk. */
static void enqueue_keeps_bytes_and_encoding(void **state)
{
	struct h *h = *state;
	h_open(h);
	static const unsigned char raw[] = {0x00, 0xff, 0x10, 0x00, 0x7f};
	struct broker_enq e = {.queue = "bin", .queue_len = 3, .data = raw,
			       .data_len = sizeof(raw), .enc = TERN_ENC_BASE64};
	struct pub_result r = {0};
	h_advance(h, 1234);
	assert_int_equal(broker_enqueue(h->b, &e, on_enq, &r, NULL), 0);
	assert_true(h_wait_count(h, &r.calls, 1));
	assert_int_equal(r.err, 0);
	assert_int_equal(h_enq(h, "bin", "{\"a\":1}", NULL, NULL), 0);
	for (int round = 0; round < 2; round++) {
		struct consumer *c = &h->cons[0];
		h_consumer_forget(h, 0);
		assert_int_equal(h_consume(h, 0, "bin", 10), 0);
		assert_true(h_wait_size(h, &c->n, 2));
		assert_int_equal(c->got[0].msg->data_len, sizeof(raw));
		assert_memory_equal(c->got[0].msg->data, raw, sizeof(raw));
		assert_int_equal(c->got[0].msg->enc, TERN_ENC_BASE64);
		assert_int_equal(c->got[0].msg->ts_ms, H_T0_MS + 1234);
		assert_string_equal(c->got[0].msg->id, r.id);
		h_assert_data(c->got[1].msg, "{\"a\":1}");
		assert_int_equal(c->got[1].msg->enc, TERN_ENC_JSON);
		h_cancel_all(h);
		h_reopen(h);
	}
}

/* --- prefetch and round-robin --- */

static void prefetch_bounds_unacked(void **state)
{
	struct h *h = *state;
	h_open(h);
	h_enq_range(h, "pf", 1, 5, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "pf", 2), 0);
	assert_true(h_wait_size(h, &c->n, 2));
	h_settle(h);
	assert_int_equal(c->n, 2);
	struct broker_qinfo qi;
	h_qinfo(h, "pf", &qi);
	assert_int_equal(qi.ready, 3);
	assert_int_equal(qi.unacked, 2);

	/* An ack frees one slot: exactly one more, from the next poll. */
	assert_int_equal(h_ack(h, "pf", c->got[0].delivery_id), 0);
	assert_int_equal(c->n, 2);
	assert_true(h_wait_size(h, &c->n, 3));
	h_settle(h);
	assert_int_equal(c->n, 3);
	h_assert_got(&c->got[2], "pf", "m3", 1);
	/* A nack without room elsewhere also frees the slot (and requeues). */
	assert_int_equal(h_nack(h, "pf", c->got[1].delivery_id, true), 0);
	assert_true(h_wait_size(h, &c->n, 4));
	h_settle(h);
	assert_int_equal(c->n, 4);
	h_assert_got(&c->got[3], "pf", "m2", 2);
	h_qinfo(h, "pf", &qi);
	assert_int_equal(qi.unacked, 2);
	assert_int_equal(qi.ready, 2);

	assert_int_equal(h_consume(h, 1, "pf", 0), TERN_EBADREQ);
	assert_int_equal(h_consume(h, 1, "pf", TERN_QUEUE_PREFETCH_MAX + 1), TERN_EBADREQ);
	assert_null(h->cons[1].c);
	h_qinfo(h, "pf", &qi);
	assert_int_equal(qi.consumers, 1);
}

static void set_prefetch_raises_and_lowers(void **state)
{
	struct h *h = *state;
	h_open(h);
	h_enq_range(h, "sp", 1, 6, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "sp", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	h_settle(h);
	assert_int_equal(c->n, 1);

	assert_int_equal(broker_consumer_set_prefetch(c->c, 3), 0);
	assert_int_equal(c->n, 1); /* not from inside the call */
	assert_true(h_wait_size(h, &c->n, 3));
	h_settle(h);
	assert_int_equal(c->n, 3);

	/* Lowered below what is out: nothing new until fewer than 1 is out. */
	assert_int_equal(broker_consumer_set_prefetch(c->c, 1), 0);
	assert_int_equal(h_ack(h, "sp", c->got[0].delivery_id), 0);
	assert_int_equal(h_ack(h, "sp", c->got[1].delivery_id), 0);
	h_settle(h);
	assert_int_equal(c->n, 3);
	assert_int_equal(h_ack(h, "sp", c->got[2].delivery_id), 0);
	assert_true(h_wait_size(h, &c->n, 4));
	h_settle(h);
	assert_int_equal(c->n, 4);
	h_assert_got(&c->got[3], "sp", "m4", 1);

	assert_int_equal(broker_consumer_set_prefetch(c->c, 0), TERN_EBADREQ);
	assert_int_equal(broker_consumer_set_prefetch(c->c, TERN_QUEUE_PREFETCH_MAX + 1),
			 TERN_EBADREQ);
	assert_int_equal(broker_consumer_set_prefetch(c->c, TERN_QUEUE_PREFETCH_MAX), 0);
	assert_true(h_wait_size(h, &c->n, 6));
	h_settle(h);
	assert_int_equal(c->n, 6);
}

static void two_consumers_round_robin(void **state)
{
	struct h *h = *state;
	enum { M = 10 };
	h_open(h);
	struct consumer *a = &h->cons[0], *b = &h->cons[1];
	assert_int_equal(h_consume(h, 0, "rr", 100), 0);
	assert_int_equal(h_consume(h, 1, "rr", 100), 0);
	h_enq_range(h, "rr", 1, M, NULL);
	h_settle(h);
	assert_int_equal(a->n + b->n, M);
	/* One at a time, alternating: an even split. */
	assert_int_equal(a->n, M / 2);
	assert_int_equal(b->n, M / 2);
	bool seen[M + 1] = {false};
	for (int side = 0; side < 2; side++) {
		struct consumer *c = side ? b : a;
		int prev = 0;
		for (size_t k = 0; k < c->n; k++) {
			int v = 0;
			assert_int_equal(sscanf((const char *)c->got[k].msg->data, "m%d", &v), 1);
			assert_true(v >= 1 && v <= M);
			assert_false(seen[v]); /* disjoint */
			seen[v] = true;
			assert_true(v > prev); /* each in FIFO order */
			prev = v;
			assert_int_equal(c->got[k].attempt, 1);
		}
	}
	for (int v = 1; v <= M; v++)
		assert_true(seen[v]); /* covering */

	/* With a full consumer, everything goes to the other. */
	struct broker_qinfo qi;
	assert_int_equal(broker_consumer_set_prefetch(a->c, M / 2), 0);
	h_enq_range(h, "rr", 11, 14, NULL);
	h_settle(h);
	assert_int_equal(a->n, M / 2);
	assert_int_equal(b->n, M / 2 + 4);
	h_qinfo(h, "rr", &qi);
	assert_int_equal(qi.consumers, 2);
	assert_int_equal(qi.unacked, M + 4);
}

/* --- nack, timeouts, dead letters --- */

static void nack_requeue_goes_to_head(void **state)
{
	struct h *h = *state;
	h_open(h);
	h_enq_range(h, "nq", 1, 3, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "nq", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	h_assert_got(&c->got[0], "nq", "m1", 1);
	assert_int_equal(h_nack(h, "nq", c->got[0].delivery_id, true), 0);
	assert_int_equal(c->n, 1); /* not from inside the nack */
	assert_true(h_wait_size(h, &c->n, 2));
	/* Before m2, one attempt more, under a new delivery id. */
	h_assert_got(&c->got[1], "nq", "m1", 2);
	assert_string_equal(c->got[1].msg->id, c->got[0].msg->id);
	assert_string_not_equal(c->got[1].delivery_id, c->got[0].delivery_id);
	assert_int_equal(h_ack(h, "nq", c->got[0].delivery_id), TERN_ENOTFOUND);
	assert_int_equal(h_nack(h, "nq", c->got[0].delivery_id, true), TERN_ENOTFOUND);
	/* Again: still ahead of m2 and m3. */
	assert_int_equal(h_nack(h, "nq", c->got[1].delivery_id, true), 0);
	assert_true(h_wait_size(h, &c->n, 3));
	h_assert_got(&c->got[2], "nq", "m1", 3);
	assert_int_equal(h_ack(h, "nq", c->got[2].delivery_id), 0);
	assert_true(h_wait_size(h, &c->n, 4));
	h_assert_got(&c->got[3], "nq", "m2", 1);
	struct broker_qinfo qi;
	h_qinfo(h, "nq", &qi);
	assert_int_equal(qi.delivered, 4);
	assert_int_equal(qi.redelivered, 2);
	assert_int_equal(qi.dead_lettered, 0);
	assert_int_equal(qi.ready, 1);
	assert_int_equal(qi.unacked, 1);
}

static void ack_timeout_redelivers(void **state)
{
	struct h *h = *state;
	h_open(h);
	set_timeout_attempts(h, "to", 1000, 0);
	h_enq_range(h, "to", 1, 2, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "to", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	h_assert_got(&c->got[0], "to", "m1", 1);

	h_tick(h, 999);
	h_settle(h);
	assert_int_equal(c->n, 1);
	struct broker_qinfo qi;
	h_qinfo(h, "to", &qi);
	assert_int_equal(qi.unacked, 1);

	h_tick(h, 1);
	assert_true(h_wait_size(h, &c->n, 2));
	h_settle(h);
	assert_int_equal(c->n, 2);
	h_assert_got(&c->got[1], "to", "m1", 2); /* at the head, before m2 */
	assert_string_not_equal(c->got[1].delivery_id, c->got[0].delivery_id);
	assert_int_equal(h_ack(h, "to", c->got[0].delivery_id), TERN_ENOTFOUND);
	h_qinfo(h, "to", &qi);
	assert_int_equal(qi.redelivered, 1);
	assert_int_equal(qi.unacked, 1);
	assert_int_equal(qi.ready, 1);

	/* The new delivery's timeout started when it was sent. */
	h_tick(h, 999);
	h_settle(h);
	assert_int_equal(c->n, 2);
	assert_int_equal(h_ack(h, "to", c->got[1].delivery_id), 0);
	assert_true(h_wait_size(h, &c->n, 3));
	h_assert_got(&c->got[2], "to", "m2", 1);
	h_tick(h, 5000); /* m2 times out, nothing else waits: back to m2 */
	assert_true(h_wait_size(h, &c->n, 4));
	h_assert_got(&c->got[3], "to", "m2", 2);
}

/* Without configuration the ack timeout is the contract's 30 s. */
static void ack_timeout_default(void **state)
{
	struct h *h = *state;
	h_open(h);
	h_enq_range(h, "dt", 1, 1, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "dt", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	h_tick(h, TERN_QUEUE_ACK_TIMEOUT_MS_DEFAULT - 1);
	h_settle(h);
	assert_int_equal(c->n, 1);
	assert_int_equal(TERN_QUEUE_ACK_TIMEOUT_MS_DEFAULT, 30000);
	h_tick(h, 1);
	assert_true(h_wait_size(h, &c->n, 2));
	h_assert_got(&c->got[1], "dt", "m1", 2);
}

/* Several deliveries expiring in one tick go back to the head in their
 * order: the queue stays FIFO (as it reads after a restart too). */
static void ack_timeout_several_keep_order(void **state)
{
	struct h *h = *state;
	h_open(h);
	set_timeout_attempts(h, "so", 1000, 0);
	h_enq_range(h, "so", 1, 4, NULL);
	struct pull_result *r = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "so", 3, 0), 0);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->n, 3);
	h_assert_got(&r->got[0], "so", "m1", 1);
	h_assert_got(&r->got[1], "so", "m2", 1);
	h_assert_got(&r->got[2], "so", "m3", 1);
	h_tick(h, 1000);
	h_settle(h);
	struct broker_qinfo qi;
	h_qinfo(h, "so", &qi);
	assert_int_equal(qi.ready, 4);
	assert_int_equal(h_pull(h, 0, "so", 4, 0), 0);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->n, 4);
	h_assert_got(&r->got[0], "so", "m1", 2);
	h_assert_got(&r->got[1], "so", "m2", 2);
	h_assert_got(&r->got[2], "so", "m3", 2);
	h_assert_got(&r->got[3], "so", "m4", 1);
}

/* Deadlines are per delivery: lowering the timeout affects later
 * deliveries, which may then expire before earlier ones. */
static void ack_timeout_lowered_keeps_order_of_deadlines(void **state)
{
	struct h *h = *state;
	h_open(h);
	set_timeout_attempts(h, "lo", 10000, 0);
	h_enq_range(h, "lo", 1, 2, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "lo", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1)); /* m1, deadline +10000 */
	set_timeout_attempts(h, "lo", 1000, 0);
	assert_int_equal(broker_consumer_set_prefetch(c->c, 2), 0);
	assert_true(h_wait_size(h, &c->n, 2)); /* m2, deadline +1000 */
	h_assert_got(&c->got[1], "lo", "m2", 1);
	h_tick(h, 1000);
	assert_true(h_wait_size(h, &c->n, 3));
	h_settle(h);
	assert_int_equal(c->n, 3);
	h_assert_got(&c->got[2], "lo", "m2", 2);
	assert_int_equal(h_ack(h, "lo", c->got[0].delivery_id), 0); /* m1 still out */
}

/* --- cancel --- */

static void cancel_gives_deliveries_back(void **state)
{
	struct h *h = *state;
	struct broker_qinfo qi;
	h_open(h);
	h_enq_range(h, "cq", 1, 3, NULL);
	struct consumer *a = &h->cons[0], *b = &h->cons[1];
	assert_int_equal(h_consume(h, 0, "cq", 2), 0);
	assert_true(h_wait_size(h, &a->n, 2));
	h_cancel(h, 0);
	h_qinfo(h, "cq", &qi);
	assert_int_equal(qi.consumers, 0);
	assert_int_equal(qi.unacked, 0);
	assert_int_equal(qi.ready, 3);
	assert_int_equal(h_ack(h, "cq", a->got[0].delivery_id), TERN_ENOTFOUND);

	assert_int_equal(h_consume(h, 1, "cq", 10), 0);
	assert_true(h_wait_size(h, &b->n, 3));
	h_settle(h);
	assert_int_equal(a->n, 2); /* fn is not called again */
	assert_int_equal(b->n, 3);
	/* Back at the head in their order, one attempt more. */
	h_assert_got(&b->got[0], "cq", "m1", 2);
	h_assert_got(&b->got[1], "cq", "m2", 2);
	h_assert_got(&b->got[2], "cq", "m3", 1);
	h_qinfo(h, "cq", &qi);
	assert_int_equal(qi.redelivered, 2);
}

/* Given-back work keeps queue order, not the order it was delivered in: a
 * redelivered older message is still ahead of a newer one, as it is after a
 * restart (which loads in queue order). */
static void give_back_after_redelivery_keeps_fifo(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct broker_qconf conf = {.has_ack_timeout = true, .ack_timeout_ms = 1000,
				    .has_max_attempts = true, .max_attempts = 100};
	assert_int_equal(h_qconf(h, "gr", &conf), 0);
	h_enq_range(h, "gr", 1, 3, NULL);
	struct consumer *a = &h->cons[0], *b = &h->cons[1];
	assert_int_equal(h_consume(h, 0, "gr", 2), 0);
	assert_true(h_wait_size(h, &a->n, 2)); /* m1, m2 */
	assert_int_equal(h_nack(h, "gr", a->got[0].delivery_id, true), 0);
	assert_true(h_wait_size(h, &a->n, 3)); /* m1 again, after m2 */
	h_assert_got(&a->got[2], "gr", "m1", 2);
	h_cancel(h, 0);
	assert_int_equal(h_consume(h, 1, "gr", 10), 0);
	assert_true(h_wait_size(h, &b->n, 3));
	h_assert_got(&b->got[0], "gr", "m1", 3);
	h_assert_got(&b->got[1], "gr", "m2", 2);
	h_assert_got(&b->got[2], "gr", "m3", 1);

	/* The same through ack timeouts: m1 is out again after m2 and m3, all
	 * three expire in one tick. */
	assert_int_equal(h_nack(h, "gr", b->got[0].delivery_id, true), 0);
	assert_true(h_wait_size(h, &b->n, 4));
	h_assert_got(&b->got[3], "gr", "m1", 4);
	h_cancel(h, 1);
	h_consumer_forget(h, 1);
	/* Pulled: m1 m2 m3 out at once, then m1 given back and pulled again. */
	struct pull_result *p = &h->pulls[0], *q = &h->pulls[1];
	assert_int_equal(h_pull(h, 0, "gr", 3, 0), 0);
	assert_true(h_wait_count(h, &p->calls, 1));
	assert_int_equal(p->n, 3);
	h_assert_got(&p->got[0], "gr", "m1", 5);
	assert_int_equal(h_nack(h, "gr", p->got[0].delivery_id, true), 0);
	h_advance(h, 10);
	assert_int_equal(h_pull(h, 1, "gr", 3, 0), 0);
	assert_true(h_wait_count(h, &q->calls, 1));
	assert_int_equal(q->n, 1);
	h_assert_got(&q->got[0], "gr", "m1", 6);
	h_tick(h, 1000); /* all three expire; m1's deadline is the latest */
	assert_int_equal(h_pull(h, 0, "gr", 3, 0), 0);
	assert_true(h_wait_count(h, &p->calls, 1));
	assert_int_equal(p->n, 3);
	h_assert_got(&p->got[0], "gr", "m1", 7);
	h_assert_got(&p->got[1], "gr", "m2", 4);
	h_assert_got(&p->got[2], "gr", "m3", 3);
}

/* A consumer that cancels itself from inside its callback: the message it
 * was handed goes to the next consumer, and nothing reaches it after. */
static void cancel_self(struct consumer *c, const struct broker_delivery *d)
{
	(void)d;
	broker_consumer_cancel(c->c);
	c->c = NULL;
}

static void cancel_from_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct consumer *a = &h->cons[0], *b = &h->cons[1];
	a->hook = cancel_self;
	assert_int_equal(h_consume(h, 0, "cc", 5), 0);
	assert_int_equal(h_consume(h, 1, "cc", 5), 0);
	h_enq_range(h, "cc", 1, 3, NULL);
	h_settle(h);
	assert_int_equal(a->n, 1);
	assert_null(a->c);
	assert_int_equal(b->n, 3);
	h_assert_got(&b->got[0], "cc", "m1", 2);
	h_assert_got(&b->got[1], "cc", "m2", 1);
	h_assert_got(&b->got[2], "cc", "m3", 1);
}

/* --- settling errors --- */

static void ack_unknown_stale_and_foreign_ids(void **state)
{
	struct h *h = *state;
	h_open(h);
	h_enq_range(h, "aa", 1, 2, NULL);
	h_enq_range(h, "bb", 1, 1, NULL);
	struct consumer *a = &h->cons[0], *b = &h->cons[1];
	assert_int_equal(h_consume(h, 0, "aa", 10), 0);
	assert_int_equal(h_consume(h, 1, "bb", 10), 0);
	assert_true(h_wait_size(h, &a->n, 2));
	assert_true(h_wait_size(h, &b->n, 1));

	assert_int_equal(h_ack(h, "aa", "no-such-id"), TERN_ENOTFOUND);
	assert_int_equal(h_nack(h, "aa", "no-such-id", true), TERN_ENOTFOUND);
	assert_int_equal(h_ack(h, "aa", ""), TERN_ENOTFOUND);
	assert_int_equal(h_ack(h, "nobody", a->got[0].delivery_id), TERN_ENOTFOUND);
	/* Another queue's id, either way round; a prefix of the name is not it. */
	assert_int_equal(h_ack(h, "aa", b->got[0].delivery_id), TERN_ENOTFOUND);
	assert_int_equal(h_ack(h, "bb", a->got[0].delivery_id), TERN_ENOTFOUND);
	assert_int_equal(h_nack(h, "bb", a->got[0].delivery_id, false), TERN_ENOTFOUND);
	assert_int_equal(broker_ack(h->b, "aa", 1, a->got[0].delivery_id,
				    strlen(a->got[0].delivery_id)),
			 TERN_ENOTFOUND);
	/* A prefix of a real id is not it either. */
	assert_int_equal(broker_ack(h->b, "aa", 2, a->got[0].delivery_id,
				    strlen(a->got[0].delivery_id) - 1),
			 TERN_ENOTFOUND);
	/* None of that touched the deliveries. */
	struct broker_qinfo qi;
	h_qinfo(h, "aa", &qi);
	assert_int_equal(qi.unacked, 2);
	h_qinfo(h, "bb", &qi);
	assert_int_equal(qi.unacked, 1);

	assert_int_equal(h_ack(h, "aa", a->got[0].delivery_id), 0);
	assert_int_equal(h_ack(h, "aa", a->got[0].delivery_id), TERN_ENOTFOUND);
	assert_int_equal(h_nack(h, "aa", a->got[0].delivery_id, true), TERN_ENOTFOUND);
	assert_int_equal(h_nack(h, "aa", a->got[1].delivery_id, true), 0);
	assert_int_equal(h_nack(h, "aa", a->got[1].delivery_id, true), TERN_ENOTFOUND);
	assert_int_equal(h_ack(h, "aa", a->got[1].delivery_id), TERN_ENOTFOUND);
	assert_int_equal(h_ack(h, "bb", b->got[0].delivery_id), 0);
	assert_true(h_wait_size(h, &a->n, 3));
	h_assert_got(&a->got[2], "aa", "m2", 2);
	h_qinfo(h, "aa", &qi);
	assert_int_equal(qi.unacked, 1);
	assert_int_equal(qi.ready, 0);
}

/* --- enqueue input --- */

static void enqueue_idempotency_returns_first_id(void **state)
{
	struct h *h = *state;
	struct broker_qinfo qi;
	h_open(h);
	struct pub_result r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0};
	assert_int_equal(h_enq(h, "iq", "first", "k-1", &r1), 0);
	h_advance(h, 1000);
	assert_int_equal(h_enq(h, "iq", "second", "k-1", &r2), 0);
	assert_string_equal(r2.id, r1.id);
	h_qinfo(h, "iq", &qi);
	assert_int_equal(qi.ready, 1);
	/* Per queue: the same key elsewhere is a new message. */
	assert_int_equal(h_enq(h, "iq2", "other", "k-1", &r3), 0);
	assert_string_not_equal(r3.id, r1.id);
	/* Also across a restart. */
	h_reopen(h);
	assert_int_equal(h_enq(h, "iq", "third", "k-1", &r4), 0);
	assert_string_equal(r4.id, r1.id);
	h_qinfo(h, "iq", &qi);
	assert_int_equal(qi.ready, 1);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "iq", 10), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	h_settle(h);
	assert_int_equal(c->n, 1);
	h_assert_data(c->got[0].msg, "first");

	/* A repeat in flight with its first (one batch, most likely): one. */
	struct pub_result b1 = {0}, b2 = {0};
	assert_int_equal(h_enq_async(h, "iq3", "x", "k-2", &b1), 0);
	assert_int_equal(h_enq_async(h, "iq3", "y", "k-2", &b2), 0);
	assert_true(h_wait_count(h, &b1.calls, 1));
	assert_true(h_wait_count(h, &b2.calls, 1));
	assert_int_equal(b1.err, 0);
	assert_int_equal(b2.err, 0);
	assert_string_equal(b1.id, b2.id);
	h_qinfo(h, "iq3", &qi);
	assert_int_equal(qi.ready, 1);

	/* After the window (2 minutes), the key makes a new message. */
	struct pub_result r5 = {0};
	h_advance(h, 120001);
	assert_int_equal(h_enq(h, "iq", "fourth", "k-1", &r5), 0);
	assert_string_not_equal(r5.id, r1.id);
	assert_true(h_wait_size(h, &c->n, 2));
	h_assert_data(c->got[1].msg, "fourth");
}

static void enqueue_bad_input(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pub_result r = {0};
	char longname[TERN_QUEUE_NAME_MAX_BYTES + 2];
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_int_equal(h_enq_async(h, longname, "x", NULL, &r), TERN_EBADNAME);
	longname[TERN_QUEUE_NAME_MAX_BYTES] = 0;
	assert_int_equal(h_enq(h, longname, "x", NULL, &r), 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(h_enq_async(h, "", "x", NULL, &r), TERN_EBADNAME);
	assert_int_equal(h_enq_async(h, "has space", "x", NULL, &r), TERN_EBADNAME);
	assert_int_equal(h_enq_async(h, "$sys", "x", NULL, &r), TERN_EBADNAME);
	char idem[TERN_IDEM_KEY_MAX_BYTES + 2];
	memset(idem, 'k', sizeof(idem) - 1);
	idem[sizeof(idem) - 1] = 0;
	assert_int_equal(h_enq_async(h, "q", "x", idem, &r), TERN_EBADREQ);
	struct broker_enq e = {.queue = "q", .queue_len = 1, .data = "x", .data_len = 1,
			       .idem_key = "", .idem_len = 0};
	assert_int_equal(broker_enqueue(h->b, &e, NULL, NULL, NULL), TERN_EBADREQ);
	e.idem_key = NULL;
	e.data_len = h->cfg.max_message_bytes + 1;
	const char *why = NULL;
	assert_int_equal(broker_enqueue(h->b, &e, NULL, NULL, &why), TERN_ETOOLARGE);
	assert_non_null(why);
	h_settle(h);
	assert_int_equal(r.calls, 0);
	struct broker_qinfo qi;
	h_qinfo(h, "q", &qi);
	assert_int_equal(qi.ready, 0);

	/* An unknown encoding, as broker_publish refuses it. */
	struct pub_result stray = {0};
	e.enc = 2;
	e.data_len = 1;
	int rc = broker_enqueue(h->b, &e, on_enq, &stray, NULL);
	if (rc == 0) {
		assert_true(h_wait_count(h, &stray.calls, 1));
		fail_msg("an enqueue with encoding 2 was taken");
	}
	assert_int_equal(rc, TERN_EBADREQ);
}

/* Enqueues wait for the store like publishes do: past the bound on bytes
 * waiting for the store thread, refused as retryable (broker.h: "Errors as
 * broker_publish"), so memory does not absorb a slow disk. */
static void enqueue_store_queue_bound(void **state)
{
	struct h *h = *state;
	h->cfg.store_queue_max_bytes = 100;
	h_open(h);
	char data[300];
	memset(data, 'q', sizeof(data) - 1);
	data[sizeof(data) - 1] = 0;
	struct pub_result r = {0};
	const char *why = NULL;
	struct broker_enq e = {.queue = "sb", .queue_len = 2, .data = data, .data_len = 299};
	int rc = broker_enqueue(h->b, &e, on_enq, &r, &why);
	if (rc == 0) {
		assert_true(h_wait_count(h, &r.calls, 1));
		fail_msg("an enqueue larger than the store's queue bound was taken");
	}
	assert_int_equal(rc, TERN_EUNAVAIL);
	assert_true(tern_err_retryable(rc));
	assert_non_null(why);
	h_settle(h);
	assert_int_equal(r.calls, 0);
	struct broker_qinfo qi;
	h_qinfo(h, "sb", &qi);
	assert_int_equal(qi.ready, 0);
	assert_int_equal(h_enq(h, "sb", "small", NULL, NULL), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_h(enqueue_consume_fifo),
		cmocka_unit_test_h(enqueue_durable_before_callback),
		cmocka_unit_test_h(unacked_survive_reopen),
		cmocka_unit_test_h(pulled_unacked_counts_across_reopen),
		cmocka_unit_test_h(fifo_across_reopen),
		cmocka_unit_test_h(enqueue_keeps_bytes_and_encoding),
		cmocka_unit_test_h(prefetch_bounds_unacked),
		cmocka_unit_test_h(set_prefetch_raises_and_lowers),
		cmocka_unit_test_h(two_consumers_round_robin),
		cmocka_unit_test_h(nack_requeue_goes_to_head),
		cmocka_unit_test_h(ack_timeout_redelivers),
		cmocka_unit_test_h(ack_timeout_default),
		cmocka_unit_test_h(ack_timeout_several_keep_order),
		cmocka_unit_test_h(ack_timeout_lowered_keeps_order_of_deadlines),
		cmocka_unit_test_h(cancel_gives_deliveries_back),
		cmocka_unit_test_h(give_back_after_redelivery_keeps_fifo),
		cmocka_unit_test_h(cancel_from_callback),
		cmocka_unit_test_h(ack_unknown_stale_and_foreign_ids),
		cmocka_unit_test_h(enqueue_idempotency_returns_first_id),
		cmocka_unit_test_h(enqueue_bad_input),
		cmocka_unit_test_h(enqueue_store_queue_bound),
	};
	return h_run("queue", tests, N(tests), argc, argv);
}
