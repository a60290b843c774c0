/* Pulls (REST's POST /v1/queues/{q}/pull): answered as soon as at least one
 * delivery is ready, or empty after wait_ms on the fake clock; never from
 * inside broker_pull; max respected; cancel gives deliveries back; pulled
 * deliveries run under the ack timeout. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void pull_ready_answers_from_poll(void **state)
{
	struct h *h = *state;
	h_open(h);
	h_enq_range(h, "pr", 1, 2, NULL);
	struct pull_result *r = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "pr", 10, 5000), 0);
	assert_int_equal(r->calls, 0); /* never inside broker_pull */
	broker_poll(h->b);	       /* no store round trip: this poll answers */
	assert_int_equal(r->calls, 1);
	assert_int_equal(r->err, 0);
	assert_int_equal(r->n, 2);
	h_assert_got(&r->got[0], "pr", "m1", 1);
	h_assert_got(&r->got[1], "pr", "m2", 1);
	assert_string_not_equal(r->got[0].delivery_id, r->got[1].delivery_id);
	struct broker_qinfo qi;
	h_qinfo(h, "pr", &qi);
	assert_int_equal(qi.ready, 0);
	assert_int_equal(qi.unacked, 2);
	assert_int_equal(qi.delivered, 2);
	assert_int_equal(qi.consumers, 0); /* pulls are not consumers */
	h_settle(h);
	assert_int_equal(r->calls, 1);

	/* Pulled deliveries settle like any other. */
	assert_int_equal(h_ack(h, "pr", r->got[0].delivery_id), 0);
	assert_int_equal(h_nack(h, "pr", r->got[1].delivery_id, true), 0);
	h_qinfo(h, "pr", &qi);
	assert_int_equal(qi.ready, 1);
	assert_int_equal(qi.unacked, 0);
	assert_int_equal(h_pull(h, 0, "pr", 10, 0), 0);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->n, 1);
	h_assert_got(&r->got[0], "pr", "m2", 2);
}

static void pull_waits_for_enqueue(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pull_result *a = &h->pulls[0], *b = &h->pulls[1];
	assert_int_equal(h_pull(h, 0, "pw", 5, 10000), 0);
	assert_int_equal(h_pull(h, 1, "pw", 5, 10000), 0);
	h_settle(h);
	broker_tick(h->b);
	h_settle(h);
	assert_int_equal(a->calls, 0);
	assert_int_equal(b->calls, 0);
	/* Work arriving answers the oldest waiter, without the clock moving. */
	h_enq_range(h, "pw", 1, 1, NULL);
	assert_true(h_wait_count(h, &a->calls, 1));
	h_settle(h);
	assert_int_equal(a->n, 1);
	h_assert_got(&a->got[0], "pw", "m1", 1);
	assert_int_equal(b->calls, 0);
	h_enq_range(h, "pw", 2, 2, NULL);
	assert_true(h_wait_count(h, &b->calls, 1));
	assert_int_equal(b->n, 1);
	h_assert_got(&b->got[0], "pw", "m2", 1);
	assert_int_equal(h_now(h), H_T0_MS);
	h_settle(h);
	assert_int_equal(a->calls, 1);
	assert_int_equal(b->calls, 1);
}

/* A waiting pull is served before consumers with room. */
static void pull_waiting_served_before_consumers(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pull_result *r = &h->pulls[0];
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_pull(h, 0, "pc", 1, 10000), 0);
	assert_int_equal(h_consume(h, 0, "pc", 10), 0);
	h_settle(h);
	h_enq_range(h, "pc", 1, 2, NULL);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_true(h_wait_size(h, &c->n, 1));
	h_assert_got(&r->got[0], "pc", "m1", 1);
	h_assert_got(&c->got[0], "pc", "m2", 1);
}

static void pull_empty_after_wait(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pull_result *r = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "pe", 3, 1000), 0);
	h_tick(h, 999);
	h_settle(h);
	assert_int_equal(r->calls, 0);
	h_tick(h, 1);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->err, 0);
	assert_int_equal(r->n, 0);
	h_settle(h);
	assert_int_equal(r->calls, 1);

	/* wait_ms 0 on an empty queue: empty, but still from a poll. */
	assert_int_equal(h_pull(h, 0, "pe", 3, 0), 0);
	assert_int_equal(r->calls, 0);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->n, 0);

	/* Work arriving after an empty answer stays ready for the next. */
	h_enq_range(h, "pe", 1, 1, NULL);
	struct broker_qinfo qi;
	h_qinfo(h, "pe", &qi);
	assert_int_equal(qi.ready, 1);
	assert_int_equal(r->n, 0);
}

static void pull_max_respected(void **state)
{
	struct h *h = *state;
	h_open(h);
	h_enq_range(h, "pm", 1, 5, NULL);
	struct pull_result *r = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "pm", 3, 0), 0);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->n, 3);
	h_assert_got(&r->got[0], "pm", "m1", 1);
	h_assert_got(&r->got[2], "pm", "m3", 1);
	struct broker_qinfo qi;
	h_qinfo(h, "pm", &qi);
	assert_int_equal(qi.ready, 2);
	assert_int_equal(qi.unacked, 3);
	assert_int_equal(h_pull(h, 0, "pm", 1, 0), 0);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->n, 1);
	h_assert_got(&r->got[0], "pm", "m4", 1);
	/* Fewer ready than max: answered at once with what there is. */
	assert_int_equal(h_pull(h, 0, "pm", 10, 10000), 0);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->n, 1);
	h_assert_got(&r->got[0], "pm", "m5", 1);
}

/* More than fit in the engine's on-stack answer (64): all in one answer, in
 * order. */
static void pull_large_batch(void **state)
{
	struct h *h = *state;
	enum { M = 150 };
	h_open(h);
	struct pub_result r[M];
	memset(r, 0, sizeof(r));
	for (int k = 0; k < M; k++) {
		char data[16];
		snprintf(data, sizeof(data), "m%d", k + 1);
		assert_int_equal(h_enq_async(h, "pl", data, NULL, &r[k]), 0);
	}
	for (int k = 0; k < M; k++)
		assert_true(h_wait_count(h, &r[k].calls, 1));
	for (int k = 0; k < M; k++)
		assert_int_equal(r[k].err, 0);
	struct pull_result *p = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "pl", TERN_QUEUE_PULL_MAX, 0), 0);
	assert_true(h_wait_count(h, &p->calls, 1));
	assert_int_equal(p->err, 0);
	assert_int_equal(p->total, M);
	assert_int_equal(p->n, H_PULL_MSGS);
	for (size_t k = 0; k < p->n; k++) {
		char data[16];
		snprintf(data, sizeof(data), "m%zu", k + 1);
		h_assert_got(&p->got[k], "pl", data, 1);
		assert_string_equal(p->got[k].msg->id, r[k].id);
	}
	struct broker_qinfo qi;
	h_qinfo(h, "pl", &qi);
	assert_int_equal(qi.unacked, M);
	assert_int_equal(qi.ready, 0);
}

static void pull_timeout_redelivers(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct broker_qconf conf = {.has_ack_timeout = true, .ack_timeout_ms = 500};
	assert_int_equal(h_qconf(h, "pt", &conf), 0);
	h_enq_range(h, "pt", 1, 1, NULL);
	struct pull_result *r = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "pt", 1, 0), 0);
	assert_true(h_wait_count(h, &r->calls, 1));
	char old[48];
	snprintf(old, sizeof(old), "%s", r->got[0].delivery_id);
	h_tick(h, 499);
	struct broker_qinfo qi;
	h_qinfo(h, "pt", &qi);
	assert_int_equal(qi.unacked, 1);
	h_tick(h, 1);
	h_qinfo(h, "pt", &qi);
	assert_int_equal(qi.unacked, 0);
	assert_int_equal(qi.ready, 1);
	assert_int_equal(h_ack(h, "pt", old), TERN_ENOTFOUND);
	assert_int_equal(h_pull(h, 0, "pt", 1, 0), 0);
	assert_true(h_wait_count(h, &r->calls, 1));
	h_assert_got(&r->got[0], "pt", "m1", 2);
	assert_int_equal(h_ack(h, "pt", r->got[0].delivery_id), 0);
}

static void pull_cancel_waiting(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pull_result *r = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "pcw", 1, 1000), 0);
	h_pull_cancel(h, 0);
	h_enq_range(h, "pcw", 1, 1, NULL);
	h_tick(h, 5000);
	h_settle(h);
	assert_int_equal(r->calls, 0); /* cb never runs */
	struct broker_qinfo qi;
	h_qinfo(h, "pcw", &qi);
	assert_int_equal(qi.ready, 1); /* the message was not taken */
	assert_int_equal(qi.unacked, 0);

	/* Cancelled before the poll that would have answered it. */
	assert_int_equal(h_pull(h, 0, "pcw", 1, 0), 0);
	h_pull_cancel(h, 0);
	h_settle(h);
	assert_int_equal(r->calls, 0);
	h_qinfo(h, "pcw", &qi);
	assert_int_equal(qi.ready, 1);
}

/* Pull 0's callback cancels pull 1, answered in the same poll but not yet
 * run: pull 1's deliveries go back to the queue (one attempt spent). */
static void cancel_other(struct pull_result *r)
{
	struct h *h = r->hook_arg;
	h_pull_cancel(h, 1);
}

static void start_two_pulls_one_cancels(struct h *h, const char *queue)
{
	struct pull_result *a = &h->pulls[0];
	a->hook = cancel_other;
	a->hook_arg = h;
	h_enq_range(h, queue, 1, 2, NULL);
	assert_int_equal(h_pull(h, 0, queue, 1, 0), 0);
	assert_int_equal(h_pull(h, 1, queue, 1, 0), 0);
}

static void pull_cancel_gives_deliveries_back(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pull_result *a = &h->pulls[0], *b = &h->pulls[1];
	start_two_pulls_one_cancels(h, "pcb");
	assert_true(h_wait_count(h, &a->calls, 1));
	h_settle(h);
	assert_int_equal(a->n, 1);
	h_assert_got(&a->got[0], "pcb", "m1", 1);
	assert_int_equal(b->calls, 0);
	struct broker_qinfo qi;
	h_qinfo(h, "pcb", &qi);
	assert_int_equal(qi.ready, 1);
	assert_int_equal(qi.unacked, 1);
	a->hook = NULL;
	assert_int_equal(h_pull(h, 0, "pcb", 5, 0), 0);
	assert_true(h_wait_count(h, &a->calls, 1));
	assert_int_equal(a->n, 1);
	h_assert_got(&a->got[0], "pcb", "m2", 2);
}

/* The same, with a consumer that has room: what the cancel gave back must
 * reach it without anything else happening on the queue. */
static void pull_cancel_redispatches(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct consumer *c = &h->cons[0];
	start_two_pulls_one_cancels(h, "pcr");
	assert_int_equal(h_consume(h, 0, "pcr", 10), 0);
	assert_true(h_wait_count(h, &h->pulls[0].calls, 1));
	assert_true(h_wait_size(h, &c->n, 1));
	h_assert_got(&c->got[0], "pcr", "m2", 2);
}

static void pull_bad_arguments(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct pull_result *r = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "pb", 0, 0), TERN_EBADREQ);
	assert_int_equal(h_pull(h, 0, "pb", TERN_QUEUE_PULL_MAX + 1, 0), TERN_EBADREQ);
	assert_int_equal(h_pull(h, 0, "pb", 1, TERN_QUEUE_PULL_WAIT_MS_MAX + 1), TERN_EBADREQ);
	assert_int_equal(h_pull(h, 0, "pb", 1, UINT64_MAX), TERN_EBADREQ);
	assert_int_equal(h_pull(h, 0, "", 1, 0), TERN_EBADNAME);
	assert_int_equal(h_pull(h, 0, "p b", 1, 0), TERN_EBADNAME);
	assert_null(r->p);
	h_settle(h);
	assert_int_equal(r->calls, 0);
	/* The bounds themselves are fine. */
	assert_int_equal(h_pull(h, 0, "pb", TERN_QUEUE_PULL_MAX, TERN_QUEUE_PULL_WAIT_MS_MAX), 0);
	h_tick(h, TERN_QUEUE_PULL_WAIT_MS_MAX - 1);
	h_settle(h);
	assert_int_equal(r->calls, 0);
	h_tick(h, 1);
	assert_true(h_wait_count(h, &r->calls, 1));
	assert_int_equal(r->n, 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_h(pull_ready_answers_from_poll),
		cmocka_unit_test_h(pull_waits_for_enqueue),
		cmocka_unit_test_h(pull_waiting_served_before_consumers),
		cmocka_unit_test_h(pull_empty_after_wait),
		cmocka_unit_test_h(pull_max_respected),
		cmocka_unit_test_h(pull_large_batch),
		cmocka_unit_test_h(pull_timeout_redelivers),
		cmocka_unit_test_h(pull_cancel_waiting),
		cmocka_unit_test_h(pull_cancel_gives_deliveries_back),
		cmocka_unit_test_h(pull_cancel_redispatches),
		cmocka_unit_test_h(pull_bad_arguments),
	};
	return h_run("queue_pull", tests, N(tests), argc, argv);
}
