/* Dead letters (contract: when delivery number max_attempts fails, or on a
 * nack without requeue, the message moves to the dead-letter queue, default
 * "{q}.dlq"; a dead-letter queue dead-letters into its own tail). */
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

static void max_attempts_dead_letters(void **state)
{
	struct h *h = *state;
	struct broker_qinfo qi;
	h_open(h);
	set_timeout_attempts(h, "pz", 100, 2);
	struct pub_result e = {0};
	assert_int_equal(h_enq(h, "pz", "poison", NULL, &e), 0);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "pz", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	h_tick(h, 100);
	assert_true(h_wait_size(h, &c->n, 2));
	h_assert_got(&c->got[1], "pz", "poison", 2);
	h_qinfo(h, "pz", &qi);
	assert_int_equal(qi.dead_lettered, 0);

	/* Delivery number max_attempts failed: to "pz.dlq", not to pz again. */
	h_tick(h, 100);
	h_settle(h);
	assert_int_equal(c->n, 2);
	assert_int_equal(h_ack(h, "pz", c->got[1].delivery_id), TERN_ENOTFOUND);
	h_qinfo(h, "pz", &qi);
	assert_int_equal(qi.ready, 0);
	assert_int_equal(qi.unacked, 0);
	assert_int_equal(qi.delivered, 2);
	assert_int_equal(qi.redelivered, 1);
	assert_int_equal(qi.dead_lettered, 1);
	assert_string_equal(qi.dead_letter, "pz.dlq");
	h_qinfo(h, "pz.dlq", &qi);
	assert_int_equal(qi.ready, 1);

	/* It is durable there, and starts over at attempt 1. */
	h_cancel_all(h);
	h_reopen(h);
	h_qinfo(h, "pz", &qi);
	assert_int_equal(qi.ready, 0);
	h_qinfo(h, "pz.dlq", &qi);
	assert_int_equal(qi.ready, 1);
	struct consumer *d = &h->cons[1];
	assert_int_equal(h_consume(h, 1, "pz.dlq", 1), 0);
	assert_true(h_wait_size(h, &d->n, 1));
	h_assert_got(&d->got[0], "pz.dlq", "poison", 1);
	assert_string_equal(d->got[0].msg->id, e.id);
	assert_false(d->got[0].from_channel);
}

/* The message a dead-letter queue delivers reads the same before and after a
 * restart (header: msg->chan is the queue's name unless from_channel). */
static void dead_letter_msg_chan_is_stable(void **state)
{
	struct h *h = *state;
	h_open(h);
	h_enq_range(h, "src", 1, 1, NULL);
	struct consumer *c = &h->cons[0], *d = &h->cons[1];
	assert_int_equal(h_consume(h, 0, "src", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	assert_int_equal(h_nack(h, "src", c->got[0].delivery_id, false), 0);
	assert_int_equal(h_consume(h, 1, "src.dlq", 1), 0);
	assert_true(h_wait_size(h, &d->n, 1));
	char before[300];
	snprintf(before, sizeof(before), "%.*s", (int)d->got[0].msg->chan_len,
		 d->got[0].msg->chan);
	h_cancel_all(h);
	h_reopen(h);
	h_consumer_forget(h, 1);
	assert_int_equal(h_consume(h, 1, "src.dlq", 1), 0);
	assert_true(h_wait_size(h, &d->n, 1));
	h_assert_chan(d->got[0].msg, before);
	h_assert_chan(d->got[0].msg, "src.dlq");
}

/* Attempts recorded for failed deliveries survive a restart, so a message
 * cannot escape max_attempts by restarts. */
static void attempts_survive_reopen(void **state)
{
	struct h *h = *state;
	struct broker_qinfo qi;
	h_open(h);
	set_timeout_attempts(h, "ar", 0, 2);
	h_enq_range(h, "ar", 1, 1, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "ar", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	assert_int_equal(h_nack(h, "ar", c->got[0].delivery_id, true), 0);
	assert_true(h_wait_size(h, &c->n, 2));
	h_cancel_all(h); /* delivery 2 failed too: max_attempts reached */
	h_reopen(h);
	h_qinfo(h, "ar", &qi);
	assert_int_equal(qi.ready, 0);
	h_qinfo(h, "ar.dlq", &qi);
	assert_int_equal(qi.ready, 1);

	/* Same with the restart between the attempts. */
	h_enq_range(h, "ar", 2, 2, NULL);
	h_consumer_forget(h, 0);
	assert_int_equal(h_consume(h, 0, "ar", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	h_cancel_all(h);
	h_reopen(h);
	h_consumer_forget(h, 0);
	assert_int_equal(h_consume(h, 0, "ar", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	h_assert_got(&c->got[0], "ar", "m2", 2);
	assert_int_equal(h_nack(h, "ar", c->got[0].delivery_id, true), 0);
	h_settle(h);
	assert_int_equal(c->n, 1);
	h_qinfo(h, "ar.dlq", &qi);
	assert_int_equal(qi.ready, 2);
}

static void nack_without_requeue_dead_letters(void **state)
{
	struct h *h = *state;
	struct broker_qinfo qi;
	h_open(h);
	h_enq_range(h, "nr", 1, 2, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "nr", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	assert_int_equal(h_nack(h, "nr", c->got[0].delivery_id, false), 0);
	assert_true(h_wait_size(h, &c->n, 2));
	h_settle(h);
	assert_int_equal(c->n, 2);
	h_assert_got(&c->got[1], "nr", "m2", 1); /* m1 is gone from nr */
	h_qinfo(h, "nr", &qi);
	assert_int_equal(qi.dead_lettered, 1);
	assert_int_equal(qi.redelivered, 0);
	assert_int_equal(qi.ready, 0);
	assert_int_equal(qi.unacked, 1);
	h_qinfo(h, "nr.dlq", &qi);
	assert_int_equal(qi.ready, 1);
	assert_int_equal(h_ack(h, "nr", c->got[0].delivery_id), TERN_ENOTFOUND);
}

static void configured_dead_letter_is_used(void **state)
{
	struct h *h = *state;
	struct broker_qinfo qi;
	h_open(h);
	struct broker_qconf conf = {.has_dead_letter = true, .dead_letter = "graveyard",
				    .dead_letter_len = 9, .has_max_attempts = true,
				    .max_attempts = 1};
	assert_int_equal(h_qconf(h, "cd", &conf), 0);
	h_qinfo(h, "cd", &qi);
	assert_string_equal(qi.dead_letter, "graveyard");
	h_enq_range(h, "cd", 1, 2, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "cd", 2), 0);
	assert_true(h_wait_size(h, &c->n, 2));
	assert_int_equal(h_nack(h, "cd", c->got[0].delivery_id, false), 0);
	/* max_attempts 1: the first failed delivery is the last. */
	assert_int_equal(h_nack(h, "cd", c->got[1].delivery_id, true), 0);
	h_settle(h);
	assert_int_equal(c->n, 2);
	h_qinfo(h, "cd", &qi);
	assert_int_equal(qi.dead_lettered, 2);
	assert_int_equal(qi.ready, 0);
	h_qinfo(h, "graveyard", &qi);
	assert_int_equal(qi.ready, 2);
	h_qinfo(h, "cd.dlq", &qi);
	assert_int_equal(qi.ready, 0);
	struct consumer *g = &h->cons[1];
	assert_int_equal(h_consume(h, 1, "graveyard", 10), 0);
	assert_true(h_wait_size(h, &g->n, 2));
	h_assert_got(&g->got[0], "graveyard", "m1", 1);
	h_assert_got(&g->got[1], "graveyard", "m2", 1);

	/* Setting the default name again reads back as the default. */
	conf.dead_letter = "cd.dlq";
	conf.dead_letter_len = 6;
	conf.has_max_attempts = false;
	assert_int_equal(h_qconf(h, "cd", &conf), 0);
	h_qinfo(h, "cd", &qi);
	assert_string_equal(qi.dead_letter, "cd.dlq");
	h_enq_range(h, "cd", 3, 3, NULL);
	assert_true(h_wait_size(h, &c->n, 3));
	assert_int_equal(h_nack(h, "cd", c->got[2].delivery_id, false), 0);
	h_settle(h);
	h_qinfo(h, "cd.dlq", &qi);
	assert_int_equal(qi.ready, 1);
}

/* A dead-letter queue dead-letters into its own tail. */
/* A dead-letter queue gets the contract's default too: "x.dlq.dlq". Only a
 * name whose "{q}.dlq" would pass the 254-byte limit (the dead-letter queue of
 * a 250-byte queue) dead-letters into its own tail, so nothing is lost. */
static void dlq_dead_letters_into_own_tail(void **state)
{
	struct h *h = *state;
	struct broker_qinfo qi;
	char q[TERN_QUEUE_NAME_MAX_BYTES + 1], dq[TERN_NAME_MAX_BYTES + 1];
	memset(q, 'q', TERN_QUEUE_NAME_MAX_BYTES);
	q[TERN_QUEUE_NAME_MAX_BYTES] = 0;
	snprintf(dq, sizeof(dq), "%s.dlq", q);
	h_open(h);
	h_qinfo(h, "x.dlq", &qi);
	assert_string_equal(qi.dead_letter, "x.dlq.dlq");
	h_qinfo(h, dq, &qi);
	assert_string_equal(qi.dead_letter, dq);
	h_enq_range(h, dq, 1, 3, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, dq, 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	assert_int_equal(h_nack(h, dq, c->got[0].delivery_id, false), 0);
	assert_true(h_wait_size(h, &c->n, 2));
	h_assert_got(&c->got[1], dq, "m2", 1);
	assert_int_equal(h_ack(h, dq, c->got[1].delivery_id), 0);
	assert_true(h_wait_size(h, &c->n, 3));
	h_assert_got(&c->got[2], dq, "m3", 1);
	assert_int_equal(h_ack(h, dq, c->got[2].delivery_id), 0);
	assert_true(h_wait_size(h, &c->n, 4));
	h_assert_got(&c->got[3], dq, "m1", 1); /* from the tail, counted afresh */
	h_qinfo(h, dq, &qi);
	assert_int_equal(qi.dead_lettered, 1);
	assert_int_equal(qi.unacked, 1);
	assert_int_equal(qi.ready, 0);
	h_cancel_all(h);
	h_reopen(h);
	h_qinfo(h, dq, &qi);
	assert_int_equal(qi.ready, 1);
}

/* The longest queue name leaves room for "{q}.dlq" (contract), so its dead
 * letters can be read like any queue's. */
static void dlq_of_longest_name_is_reachable(void **state)
{
	struct h *h = *state;
	char q[TERN_QUEUE_NAME_MAX_BYTES + 1], dlq[TERN_NAME_MAX_BYTES + 1];
	memset(q, 'q', TERN_QUEUE_NAME_MAX_BYTES);
	q[TERN_QUEUE_NAME_MAX_BYTES] = 0;
	snprintf(dlq, sizeof(dlq), "%s.dlq", q);
	h_open(h);
	struct broker_qinfo qi;
	h_qinfo(h, q, &qi);
	assert_string_equal(qi.dead_letter, dlq);
	h_enq_range(h, q, 1, 1, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, q, 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	assert_int_equal(h_nack(h, q, c->got[0].delivery_id, false), 0);
	h_settle(h);
	h_qinfo(h, q, &qi);
	assert_int_equal(qi.dead_lettered, 1);
	assert_int_equal(broker_queue_info(h->b, dlq, strlen(dlq), &qi), 0);
	assert_int_equal(qi.ready, 1);
	struct consumer *d = &h->cons[1];
	assert_int_equal(h_consume(h, 1, dlq, 1), 0);
	assert_true(h_wait_size(h, &d->n, 1));
	h_assert_got(&d->got[0], dlq, "m1", 1);
}

/* A delivery still out at a clean close is given back like a cancelled
 * consumer's: when it was delivery number max_attempts, the message is dead
 * letters after the restart, never delivered a max_attempts + 1st time. */
static void restart_at_max_attempts_dead_letters(void **state)
{
	struct h *h = *state;
	struct broker_qinfo qi;
	h_open(h);
	set_timeout_attempts(h, "rm", 0, 2);
	h_enq_range(h, "rm", 1, 1, NULL);
	struct pull_result *p = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "rm", 1, 0), 0);
	assert_true(h_wait_count(h, &p->calls, 1));
	assert_int_equal(h_nack(h, "rm", p->got[0].delivery_id, true), 0);
	assert_int_equal(h_pull(h, 0, "rm", 1, 0), 0);
	assert_true(h_wait_count(h, &p->calls, 1));
	h_assert_got(&p->got[0], "rm", "m1", 2);
	h_reopen(h);
	assert_int_equal(h_pull(h, 0, "rm", 1, 0), 0);
	assert_true(h_wait_count(h, &p->calls, 1));
	if (p->n > 0)
		fail_msg("delivered again with attempt %u, max_attempts 2", p->got[0].attempt);
	h_settle(h); /* the move to dead letters commits */
	h_qinfo(h, "rm", &qi);
	assert_int_equal(qi.ready + qi.unacked, 0);
	h_qinfo(h, "rm.dlq", &qi);
	assert_int_equal(qi.ready, 1);
	/* And it stays there across another restart. */
	h_reopen(h);
	h_qinfo(h, "rm", &qi);
	assert_int_equal(qi.ready, 0);
	h_qinfo(h, "rm.dlq", &qi);
	assert_int_equal(qi.ready, 1);
}

/* Without configuration, delivery number 5 (the contract's default) is the
 * last: nacked four times it comes a fifth time, then goes. */
static void max_attempts_default(void **state)
{
	struct h *h = *state;
	struct broker_qinfo qi;
	h_open(h);
	h_enq_range(h, "md", 1, 1, NULL);
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "md", 1), 0);
	for (uint32_t a = 1; a <= TERN_QUEUE_ATTEMPTS_DEFAULT; a++) {
		assert_true(h_wait_size(h, &c->n, a));
		h_assert_got(&c->got[a - 1], "md", "m1", a);
		assert_int_equal(h_nack(h, "md", c->got[a - 1].delivery_id, true), 0);
	}
	h_settle(h);
	assert_int_equal(c->n, 5);
	h_qinfo(h, "md", &qi);
	assert_int_equal(qi.max_attempts, 5);
	assert_int_equal(qi.dead_lettered, 1);
	h_qinfo(h, "md.dlq", &qi);
	assert_int_equal(qi.ready, 1);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_h(max_attempts_dead_letters),
		cmocka_unit_test_h(max_attempts_default),
		cmocka_unit_test_h(dead_letter_msg_chan_is_stable),
		cmocka_unit_test_h(attempts_survive_reopen),
		cmocka_unit_test_h(nack_without_requeue_dead_letters),
		cmocka_unit_test_h(configured_dead_letter_is_used),
		cmocka_unit_test_h(dlq_dead_letters_into_own_tail),
		cmocka_unit_test_h(dlq_of_longest_name_is_reachable),
		cmocka_unit_test_h(restart_at_max_attempts_dead_letters),
	};
	return h_run("queue_dlq", tests, N(tests), argc, argv);
}
