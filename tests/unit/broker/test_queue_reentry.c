/* The queue engine called back into from its own callbacks (broker.h: a
 * consumer's fn "may ack, cancel or consume again"), and transitions that
 * chain: a timeout that dead-letters into a queue a pull waits on, timeouts
 * of several queues in one tick. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void qinfo(struct h *h, const char *queue, uint64_t *ready, uint64_t *unacked)
{
	struct broker_qinfo qi;
	h_qinfo(h, queue, &qi);
	*ready = qi.ready;
	*unacked = qi.unacked;
}

static void ack_inline(struct consumer *c, const struct broker_delivery *d)
{
	assert_int_equal(broker_ack(c->h->b, d->queue, d->queue_len, d->delivery_id,
				    strlen(d->delivery_id)),
			 0);
}

/* An auto-acking consumer with prefetch 1 drains the queue. */
static void ack_from_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	h_enq_range(h, "ai", 1, 5, NULL);
	struct consumer *c = &h->cons[0];
	c->hook = ack_inline;
	assert_int_equal(h_consume(h, 0, "ai", 1), 0);
	assert_true(h_wait_size(h, &c->n, 5));
	h_settle(h);
	assert_int_equal(c->n, 5);
	for (int k = 0; k < 5; k++) {
		char data[8];
		snprintf(data, sizeof(data), "m%d", k + 1);
		h_assert_got(&c->got[k], "ai", data, 1);
	}
	uint64_t ready, unacked;
	qinfo(h, "ai", &ready, &unacked);
	assert_int_equal(ready, 0);
	assert_int_equal(unacked, 0);
	/* The acks are durable: nothing comes back after a restart. */
	h_cancel_all(h);
	h_reopen(h);
	qinfo(h, "ai", &ready, &unacked);
	assert_int_equal(ready, 0);
}

static void nack_inline(struct consumer *c, const struct broker_delivery *d)
{
	assert_int_equal(broker_nack(c->h->b, d->queue, d->queue_len, d->delivery_id,
				     strlen(d->delivery_id), true),
			 0);
}

/* A consumer that nacks everything from its callback: the message goes
 * round max_attempts times, then to dead letters; the loop ends. */
static void nack_from_callback_ends_in_dead_letters(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct broker_qconf conf = {.has_max_attempts = true, .max_attempts = 3};
	assert_int_equal(h_qconf(h, "ni", &conf), 0);
	struct consumer *c = &h->cons[0];
	c->hook = nack_inline;
	assert_int_equal(h_consume(h, 0, "ni", 1), 0);
	h_enq_range(h, "ni", 1, 1, NULL);
	assert_true(h_wait_size(h, &c->n, 3));
	h_settle(h);
	assert_int_equal(c->n, 3);
	for (int k = 0; k < 3; k++)
		h_assert_got(&c->got[k], "ni", "m1", (uint32_t)k + 1);
	struct broker_qinfo qi;
	h_qinfo(h, "ni", &qi);
	assert_int_equal(qi.dead_lettered, 1);
	assert_int_equal(qi.delivered, 3);
	assert_int_equal(qi.redelivered, 2);
	h_qinfo(h, "ni.dlq", &qi);
	assert_int_equal(qi.ready, 1);
}

/* Consumer 0 cancels consumer 1 (the round-robin's next) from inside its
 * callback; the rest goes to 0 and 2. */
static void cancel_other_consumer(struct consumer *c, const struct broker_delivery *d)
{
	(void)d;
	struct h *h = c->h;
	if (h->cons[1].c)
		h_cancel(h, 1);
}

static void cancel_other_from_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	h->cons[0].hook = cancel_other_consumer;
	for (int i = 0; i < 3; i++)
		assert_int_equal(h_consume(h, i, "co", 100), 0);
	h_enq_range(h, "co", 1, 6, NULL);
	h_settle(h);
	assert_int_equal(h->cons[1].n, 0);
	assert_int_equal(h->cons[0].n + h->cons[2].n, 6);
	assert_true(h->cons[0].n >= 2 && h->cons[2].n >= 2);
	struct broker_qinfo qi;
	h_qinfo(h, "co", &qi);
	assert_int_equal(qi.consumers, 2);
	assert_int_equal(qi.unacked, 6);
}

/* Consuming again from inside a delivery: the new consumer takes part in
 * the very next dispatch. */
static void consume_again(struct consumer *c, const struct broker_delivery *d)
{
	(void)d;
	struct h *h = c->h;
	c->hook = NULL;
	assert_int_equal(h_consume(h, 1, "ca", 10), 0);
}

static void consume_from_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	h->cons[0].hook = consume_again;
	assert_int_equal(h_consume(h, 0, "ca", 1), 0);
	h_enq_range(h, "ca", 1, 4, NULL);
	h_settle(h);
	assert_int_equal(h->cons[0].n, 1);
	assert_int_equal(h->cons[1].n, 3);
	h_assert_got(&h->cons[0].got[0], "ca", "m1", 1);
	h_assert_got(&h->cons[1].got[0], "ca", "m2", 1);
	h_assert_got(&h->cons[1].got[2], "ca", "m4", 1);
}

/* A pull's callback acks what it got and pulls again. */
static void pull_again(struct pull_result *r)
{
	struct h *h = r->hook_arg;
	for (size_t k = 0; k < r->n; k++)
		assert_int_equal(h_ack(h, "pa", r->got[k].delivery_id), 0);
	r->hook = NULL;
	assert_int_equal(h_pull(h, 1, "pa", 10, 0), 0);
}

static void pull_from_pull_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	h_enq_range(h, "pa", 1, 3, NULL);
	struct pull_result *a = &h->pulls[0], *b = &h->pulls[1];
	a->hook = pull_again;
	a->hook_arg = h;
	assert_int_equal(h_pull(h, 0, "pa", 1, 0), 0);
	assert_true(h_wait_count(h, &a->calls, 1));
	assert_true(h_wait_count(h, &b->calls, 1));
	assert_int_equal(b->n, 2);
	h_assert_got(&b->got[0], "pa", "m2", 1);
	h_assert_got(&b->got[1], "pa", "m3", 1);
	uint64_t ready, unacked;
	qinfo(h, "pa", &ready, &unacked);
	assert_int_equal(ready, 0);
	assert_int_equal(unacked, 2);
}

/* Timeouts of two queues expire in one tick, and the last attempt of one
 * dead-letters into a queue where a pull waits: it answers the pull. */
static void tick_chains_timeout_dead_letter_and_pull(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct broker_qconf one = {.has_ack_timeout = true, .ack_timeout_ms = 200,
				   .has_max_attempts = true, .max_attempts = 1};
	struct broker_qconf two = {.has_ack_timeout = true, .ack_timeout_ms = 200};
	assert_int_equal(h_qconf(h, "t1", &one), 0);
	assert_int_equal(h_qconf(h, "t2", &two), 0);
	h_enq_range(h, "t1", 1, 1, NULL);
	h_enq_range(h, "t2", 1, 1, NULL);
	struct consumer *c1 = &h->cons[0], *c2 = &h->cons[1];
	assert_int_equal(h_consume(h, 0, "t1", 1), 0);
	assert_int_equal(h_consume(h, 1, "t2", 1), 0);
	assert_true(h_wait_size(h, &c1->n, 1));
	assert_true(h_wait_size(h, &c2->n, 1));
	struct pull_result *p = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "t1.dlq", 5, 10000), 0);
	h_settle(h);
	assert_int_equal(p->calls, 0);

	h_tick(h, 200);
	assert_true(h_wait_count(h, &p->calls, 1));
	assert_true(h_wait_size(h, &c2->n, 2));
	h_settle(h);
	assert_int_equal(p->n, 1);
	h_assert_got(&p->got[0], "t1.dlq", "m1", 1);
	assert_string_equal(p->got[0].msg->id, c1->got[0].msg->id);
	assert_int_equal(c1->n, 1);
	h_assert_got(&c2->got[1], "t2", "m1", 2);
	/* The dead-letter queue's own timeout (the default) applies there. */
	h_tick(h, 200);
	uint64_t ready, unacked;
	qinfo(h, "t1.dlq", &ready, &unacked);
	assert_int_equal(unacked, 1);
	h_tick(h, TERN_QUEUE_ACK_TIMEOUT_MS_DEFAULT);
	qinfo(h, "t1.dlq", &ready, &unacked);
	assert_int_equal(unacked, 0);
	assert_int_equal(ready, 1);
}

/* A delivery that timed out and was redelivered cannot be settled twice:
 * the timeout and a late ack do not both count. */
static void late_ack_after_timeout(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct broker_qconf conf = {.has_ack_timeout = true, .ack_timeout_ms = 100};
	assert_int_equal(h_qconf(h, "la", &conf), 0);
	h_enq_range(h, "la", 1, 1, NULL);
	struct pull_result *p = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "la", 1, 0), 0);
	assert_true(h_wait_count(h, &p->calls, 1));
	char first[48];
	snprintf(first, sizeof(first), "%s", p->got[0].delivery_id);
	h_tick(h, 100);
	assert_int_equal(h_ack(h, "la", first), TERN_ENOTFOUND);
	uint64_t ready, unacked;
	qinfo(h, "la", &ready, &unacked);
	assert_int_equal(ready, 1); /* the late ack did not remove it */
	h_cancel_all(h);
	h_reopen(h);
	qinfo(h, "la", &ready, &unacked);
	assert_int_equal(ready, 1);
}

/* Work given back (nack, ack timeout, cancel) answers a pull waiting on the
 * queue, each at once. */
static void given_back_work_answers_waiting_pull(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct broker_qconf conf = {.has_ack_timeout = true, .ack_timeout_ms = 100};
	assert_int_equal(h_qconf(h, "gb", &conf), 0);
	h_enq_range(h, "gb", 1, 3, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "gb", 3), 0);
	assert_true(h_wait_size(h, &c->n, 3));
	struct pull_result *p = &h->pulls[0];

	assert_int_equal(h_pull(h, 0, "gb", 5, 10000), 0);
	h_settle(h);
	assert_int_equal(p->calls, 0);
	assert_int_equal(h_nack(h, "gb", c->got[0].delivery_id, true), 0);
	assert_true(h_wait_count(h, &p->calls, 1));
	assert_int_equal(p->n, 1);
	h_assert_got(&p->got[0], "gb", "m1", 2);

	assert_int_equal(h_ack(h, "gb", c->got[1].delivery_id), 0);
	assert_int_equal(h_ack(h, "gb", p->got[0].delivery_id), 0);
	assert_int_equal(h_pull(h, 0, "gb", 5, 10000), 0);
	h_settle(h);
	assert_int_equal(p->calls, 0);
	h_cancel(h, 0); /* m3 goes back */
	assert_true(h_wait_count(h, &p->calls, 1));
	assert_int_equal(p->n, 1);
	h_assert_got(&p->got[0], "gb", "m3", 2);

	assert_int_equal(h_pull(h, 1, "gb", 5, 10000), 0);
	h_settle(h);
	assert_int_equal(h->pulls[1].calls, 0);
	h_tick(h, 100); /* pull 0's m3 times out */
	assert_true(h_wait_count(h, &h->pulls[1].calls, 1));
	assert_int_equal(h->pulls[1].n, 1);
	h_assert_got(&h->pulls[1].got[0], "gb", "m3", 3);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_h(ack_from_callback),
		cmocka_unit_test_h(nack_from_callback_ends_in_dead_letters),
		cmocka_unit_test_h(cancel_other_from_callback),
		cmocka_unit_test_h(consume_from_callback),
		cmocka_unit_test_h(pull_from_pull_callback),
		cmocka_unit_test_h(tick_chains_timeout_dead_letter_and_pull),
		cmocka_unit_test_h(late_ack_after_timeout),
		cmocka_unit_test_h(given_back_work_answers_waiting_pull),
	};
	return h_run("queue_reentry", tests, N(tests), argc, argv);
}
