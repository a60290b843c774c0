/* Queue settings and bindings: channel patterns copying publishes into
 * queues (contract: durable before the publisher's ok, carry the original's
 * channel, name and id, no second copy for an idempotent repeat), depth
 * limits, configuration (merge, bounds, durability), info and each. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t ready(struct h *h, const char *queue)
{
	struct broker_qinfo qi;
	h_qinfo(h, queue, &qi);
	return qi.ready;
}

/* Publishes with an event name and waits; returns the callback's err or the
 * immediate error. */
static int pub_named(struct h *h, const char *chan, const char *name, const char *data,
		     const char *idem, struct pub_result *r)
{
	struct broker_pub p = {
		.chan = chan,
		.chan_len = strlen(chan),
		.name = name,
		.name_len = name ? strlen(name) : 0,
		.data = data,
		.data_len = strlen(data),
		.enc = TERN_ENC_JSON,
		.idem_key = idem,
		.idem_len = idem ? strlen(idem) : 0,
	};
	struct pub_result local = {0};
	return h_pub_req(h, &p, r ? r : &local);
}

static void assert_copy(const struct h_delivery *d, const char *queue, const char *chan,
			const char *name, const char *data, const char *id)
{
	assert_string_equal(d->queue, queue);
	assert_true(d->from_channel);
	assert_int_equal(d->msg->chan_len, strlen(chan));
	assert_memory_equal(d->msg->chan, chan, strlen(chan));
	if (name) {
		assert_true(d->msg->has_name);
		assert_int_equal(d->msg->name_len, strlen(name));
		assert_memory_equal(d->msg->name, name, strlen(name));
	} else {
		assert_false(d->msg->has_name);
	}
	assert_int_equal(d->msg->data_len, strlen(data));
	assert_memory_equal(d->msg->data, data, strlen(data));
	assert_string_equal(d->msg->id, id);
}

static const char *const orders[] = {"orders:*", NULL};

static void bind_copies_into_every_bound_queue(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_bind(h, "qa", orders), 0);
	assert_int_equal(h_bind(h, "qb", orders), 0);
	assert_int_equal(h_sub(h, 0, "orders:1"), 0);
	struct pub_result r = {0};
	assert_int_equal(pub_named(h, "orders:1", "created", "{\"n\":1}", NULL, &r), 0);
	assert_int_equal(r.seq, 1);
	/* Durable before the publisher's ok: both copies are there now. */
	assert_int_equal(ready(h, "qa"), 1);
	assert_int_equal(ready(h, "qb"), 1);
	/* The channel's own subscribers get it as usual. */
	h_settle(h);
	assert_int_equal(h->rec[0].n, 1);

	assert_int_equal(h_pub(h, "other", "x", NULL, NULL), 0);
	assert_int_equal(h_pub(h, "orders", "x", NULL, NULL), 0); /* no ':' */
	h_settle(h);
	assert_int_equal(ready(h, "qa"), 1);
	assert_int_equal(ready(h, "qb"), 1);

	struct consumer *a = &h->cons[0], *b = &h->cons[1];
	assert_int_equal(h_consume(h, 0, "qa", 10), 0);
	assert_int_equal(h_consume(h, 1, "qb", 10), 0);
	assert_true(h_wait_size(h, &a->n, 1));
	assert_true(h_wait_size(h, &b->n, 1));
	struct hist_result hr;
	assert_int_equal(h_hist(h, "orders:1", 0, 0, 10, false, &hr), 0);
	assert_int_equal(hr.n, 1);
	assert_copy(&a->got[0], "qa", "orders:1", "created", "{\"n\":1}", hr.msgs[0]->id);
	assert_copy(&b->got[0], "qb", "orders:1", "created", "{\"n\":1}", hr.msgs[0]->id);
	h_hist_free(&hr);
	assert_int_equal(a->got[0].attempt, 1);
	/* Each copy is settled on its own. */
	assert_int_equal(h_ack(h, "qa", a->got[0].delivery_id), 0);
	assert_int_equal(h_ack(h, "qb", a->got[0].delivery_id), TERN_ENOTFOUND);
	struct broker_qinfo qi;
	h_qinfo(h, "qb", &qi);
	assert_int_equal(qi.unacked, 1);
}

static void copies_on_disk(struct pub_result *r)
{
	struct h *h = r->hook_arg;
	/* Inside the publisher's ok: both copies are committed. */
	assert_int_equal(h_db_int(h, "SELECT count(*) FROM qmsgs WHERE id = ?1", r->id), 2);
}

static void bind_copies_durable_before_ok(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_bind(h, "d1", orders), 0);
	assert_int_equal(h_bind(h, "d2", orders), 0);
	struct pub_result r = {.hook = copies_on_disk, .hook_arg = h};
	assert_int_equal(h_pub(h, "orders:5", "five", NULL, &r), 0);
	h_settle(h);
	assert_int_equal(r.calls, 1);
	assert_int_equal(ready(h, "d1"), 1);
	assert_int_equal(ready(h, "d2"), 1);
}

/* A pull waiting on a bound queue is answered by a publish. */
static void bind_copy_answers_waiting_pull(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_bind(h, "wp", orders), 0);
	struct pull_result *p = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "wp", 10, 10000), 0);
	h_settle(h);
	assert_int_equal(p->calls, 0);
	struct pub_result r = {0};
	static const unsigned char raw[] = {1, 0, 2};
	struct broker_pub pub = {.chan = "orders:b", .chan_len = 8, .data = raw,
				 .data_len = sizeof(raw), .enc = TERN_ENC_BASE64};
	assert_int_equal(h_pub_req(h, &pub, &r), 0);
	assert_true(h_wait_count(h, &p->calls, 1));
	assert_int_equal(p->n, 1);
	assert_true(p->got[0].from_channel);
	assert_int_equal(p->got[0].msg->enc, TERN_ENC_BASE64);
	assert_int_equal(p->got[0].msg->data_len, sizeof(raw));
	assert_memory_equal(p->got[0].msg->data, raw, sizeof(raw));
	assert_string_equal(p->got[0].msg->id, r.id);
	assert_int_equal(p->got[0].msg->seq, r.seq);
}

/* More queues match one channel than one publish copies into
 * (TERN_QUEUE_COPIES_MAX): copies must not be dropped silently. The bound
 * may be enforced when binding (the last bind refused) or when publishing
 * (the publish refused, no copy anywhere); otherwise every bound queue gets
 * its copy. */
#ifdef TERN_QUEUE_COPIES_MAX
#define COPIES_PROBE (TERN_QUEUE_COPIES_MAX + 1)
#else
#define COPIES_PROBE 257 /* past the bound of 256 this tree once had */
#endif

static void bind_many_queues_no_silent_loss(void **state)
{
	struct h *h = *state;
	enum { M = COPIES_PROBE };
	h_open(h);
	static const char *const fan[] = {"fan:*", NULL};
	int bound = 0;
	for (int i = 0; i < M; i++) {
		char q[16];
		snprintf(q, sizeof(q), "f%d", i);
		int rc = h_bind(h, q, fan);
		if (rc == TERN_EBADREQ && i == M - 1)
			break; /* refused at the bound: a stated policy */
		assert_int_equal(rc, 0);
		bound++;
	}
	struct pub_result r = {0};
	int rc = h_pub(h, "fan:1", "x", NULL, &r);
	h_settle(h);
	int copied = 0;
	for (int i = 0; i < bound; i++) {
		char q[16];
		snprintf(q, sizeof(q), "f%d", i);
		copied += (int)ready(h, q);
	}
	if (rc == 0 && copied != bound)
		fail_msg("publish ok but %d of %d bound queues got a copy", copied, bound);
	if (rc != 0)
		assert_int_equal(copied, 0);
}

static void bind_pattern_forms(void **state)
{
	struct h *h = *state;
	h_open(h);
	static const char *const exact[] = {"orders:1", NULL};
	static const char *const all[] = {"*", NULL};
	static const char *const two[] = {"a:*", "b", NULL};
	assert_int_equal(h_bind(h, "exact", exact), 0);
	assert_int_equal(h_bind(h, "all", all), 0);
	assert_int_equal(h_bind(h, "pre", orders), 0);
	assert_int_equal(h_bind(h, "two", two), 0);
	const char *chans[] = {"orders:1", "orders:10", "orders:", "orders:x:y", "x",
			       "orders:1:", "a:1", "b", "bb", "a"};
	for (size_t i = 0; i < N(chans); i++)
		assert_int_equal(h_pub(h, chans[i], "d", NULL, NULL), 0);
	assert_int_equal(ready(h, "exact"), 1);	   /* orders:1 only */
	assert_int_equal(ready(h, "all"), N(chans)); /* everything */
	assert_int_equal(ready(h, "pre"), 5);	   /* ':' included in the rest */
	assert_int_equal(ready(h, "two"), 2);	   /* a:1 and b, one copy each */
	/* A channel matching two patterns of one queue makes one copy. */
	static const char *const overlap[] = {"c:*", "c:1", "*", NULL};
	assert_int_equal(h_bind(h, "ov", overlap), 0);
	assert_int_equal(h_pub(h, "c:1", "d", NULL, NULL), 0);
	assert_int_equal(ready(h, "ov"), 1);
}

static void bind_copy_survives_reopen(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_bind(h, "keep", orders), 0);
	struct pub_result r = {0};
	assert_int_equal(pub_named(h, "orders:7", "paid", "7", NULL, &r), 0);
	assert_int_equal(pub_named(h, "orders:8", NULL, "8", NULL, NULL), 0);
	h_reopen(h);
	assert_int_equal(ready(h, "keep"), 2);
	/* The binding itself survived too. */
	struct broker_qinfo qi;
	h_qinfo(h, "keep", &qi);
	assert_int_equal(qi.nbind, 1);
	assert_string_equal(qi.bind[0], "orders:*");
	assert_int_equal(h_pub(h, "orders:9", "9", NULL, NULL), 0);
	assert_int_equal(ready(h, "keep"), 3);

	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "keep", 10), 0);
	assert_true(h_wait_size(h, &c->n, 3));
	assert_copy(&c->got[0], "keep", "orders:7", "paid", "7", r.id);
	assert_copy(&c->got[1], "keep", "orders:8", NULL, "8", c->got[1].msg->id);
	assert_copy(&c->got[2], "keep", "orders:9", NULL, "9", c->got[2].msg->id);
}

/* A binding's copy that is dead-lettered still carries its channel, also
 * after a restart. */
static void bind_copy_dead_lettered_keeps_channel(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_bind(h, "bd", orders), 0);
	struct pub_result r = {0};
	assert_int_equal(pub_named(h, "orders:3", "ev", "3", NULL, &r), 0);
	struct consumer *c = &h->cons[0], *d = &h->cons[1];
	assert_int_equal(h_consume(h, 0, "bd", 1), 0);
	assert_true(h_wait_size(h, &c->n, 1));
	assert_int_equal(h_nack(h, "bd", c->got[0].delivery_id, false), 0);
	assert_int_equal(h_consume(h, 1, "bd.dlq", 1), 0);
	assert_true(h_wait_size(h, &d->n, 1));
	assert_copy(&d->got[0], "bd.dlq", "orders:3", "ev", "3", r.id);
	h_cancel_all(h);
	h_reopen(h);
	h_consumer_forget(h, 1);
	assert_int_equal(h_consume(h, 1, "bd.dlq", 1), 0);
	assert_true(h_wait_size(h, &d->n, 1));
	assert_copy(&d->got[0], "bd.dlq", "orders:3", "ev", "3", r.id);
	assert_int_equal(d->got[0].attempt, 2);
}

static void bind_idempotent_republish_no_second_copy(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_bind(h, "iq", orders), 0);
	struct pub_result r1 = {0}, r2 = {0}, r3 = {0};
	assert_int_equal(pub_named(h, "orders:1", NULL, "a", "key-1", &r1), 0);
	assert_int_equal(pub_named(h, "orders:1", NULL, "b", "key-1", &r2), 0);
	assert_int_equal(r2.seq, r1.seq);
	assert_string_equal(r2.id, r1.id);
	assert_int_equal(ready(h, "iq"), 1);
	/* Also across a restart. */
	h_reopen(h);
	assert_int_equal(pub_named(h, "orders:1", NULL, "c", "key-1", &r3), 0);
	assert_string_equal(r3.id, r1.id);
	assert_int_equal(ready(h, "iq"), 1);
	/* A repeat in flight with its first, in one batch: still one copy. */
	struct pub_result a = {0}, b = {0};
	assert_int_equal(h_pub_async(h, "orders:2", "x", "key-2", &a), 0);
	assert_int_equal(h_pub_async(h, "orders:2", "x", "key-2", &b), 0);
	assert_true(h_wait_count(h, &a.calls, 1));
	assert_true(h_wait_count(h, &b.calls, 1));
	assert_string_equal(a.id, b.id);
	h_settle(h);
	assert_int_equal(ready(h, "iq"), 2);
	/* The pending copies were released: the queue is not held full. */
	struct broker_qinfo qi;
	h_qinfo(h, "iq", &qi);
	assert_int_equal(qi.unacked, 0);
}

static void bind_bad_patterns(void **state)
{
	struct h *h = *state;
	h_open(h);
	char big[TERN_NAME_MAX_BYTES + 2];
	memset(big, 'p', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	const char *bad[] = {"ord*ers", "*orders", "**", "a*:*", "", "has space", "$sys:*", big};
	for (size_t i = 0; i < N(bad); i++) {
		const char *const one[] = {bad[i], NULL};
		if (h_bind(h, "bp", one) != TERN_EBADREQ)
			fail_msg("pattern '%s' accepted", bad[i]);
	}
	/* One bad pattern among good ones refuses the whole list. */
	static const char *const mixed[] = {"ok:*", "ba*d", NULL};
	assert_int_equal(h_bind(h, "bp", mixed), TERN_EBADREQ);
	struct broker_qinfo qi;
	h_qinfo(h, "bp", &qi);
	assert_int_equal(qi.nbind, 0);
	/* The longest pattern is fine, with or without '*'. */
	big[TERN_NAME_MAX_BYTES] = 0;
	const char *const longest[] = {big, NULL};
	assert_int_equal(h_bind(h, "bp", longest), 0);
	big[TERN_NAME_MAX_BYTES - 1] = '*';
	assert_int_equal(h_bind(h, "bp", longest), 0);
}

static void bind_replace_and_clear(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_bind(h, "rb", orders), 0);
	static const char *const users[] = {"users:*", NULL};
	assert_int_equal(h_bind(h, "rb", users), 0); /* replaces, not adds */
	assert_int_equal(h_pub(h, "orders:1", "o", NULL, NULL), 0);
	assert_int_equal(h_pub(h, "users:1", "u", NULL, NULL), 0);
	assert_int_equal(ready(h, "rb"), 1);
	/* Changing other settings keeps the binding. */
	struct broker_qconf c = {.has_max_attempts = true, .max_attempts = 9};
	assert_int_equal(h_qconf(h, "rb", &c), 0);
	assert_int_equal(h_pub(h, "users:2", "u", NULL, NULL), 0);
	assert_int_equal(ready(h, "rb"), 2);
	assert_int_equal(h_bind(h, "rb", NULL), 0);
	assert_int_equal(h_pub(h, "users:3", "u", NULL, NULL), 0);
	assert_int_equal(ready(h, "rb"), 2);
	h_reopen(h);
	assert_int_equal(h_pub(h, "users:4", "u", NULL, NULL), 0);
	assert_int_equal(ready(h, "rb"), 2);
	struct broker_qinfo qi;
	h_qinfo(h, "rb", &qi);
	assert_int_equal(qi.nbind, 0);
	assert_int_equal(qi.max_attempts, 9);
}

/* --- depth --- */

static void depth_limit_enqueue(void **state)
{
	struct h *h = *state;
	h->cfg.queue_max_depth = 3;
	h_open(h);
	/* In flight counts: three not yet committed fill it. */
	struct pub_result r[4] = {{0}};
	for (int i = 0; i < 3; i++)
		assert_int_equal(h_enq_async(h, "dq", "x", NULL, &r[i]), 0);
	const char *why = NULL;
	struct broker_enq e = {.queue = "dq", .queue_len = 2, .data = "x", .data_len = 1};
	assert_int_equal(broker_enqueue(h->b, &e, NULL, NULL, &why), TERN_ERATELIMIT);
	assert_non_null(why);
	for (int i = 0; i < 3; i++)
		assert_true(h_wait_count(h, &r[i].calls, 1));
	assert_int_equal(h_enq_async(h, "dq", "x", NULL, &r[3]), TERN_ERATELIMIT);
	/* Unacked ones count too. */
	struct consumer *c = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "dq", 10), 0);
	assert_true(h_wait_size(h, &c->n, 3));
	assert_int_equal(h_enq_async(h, "dq", "x", NULL, &r[3]), TERN_ERATELIMIT);
	/* Other queues are not affected. */
	assert_int_equal(h_enq(h, "dq2", "x", NULL, NULL), 0);
	/* An ack makes room for one. */
	assert_int_equal(h_ack(h, "dq", c->got[0].delivery_id), 0);
	assert_int_equal(h_enq(h, "dq", "x", NULL, &r[3]), 0);
	struct pub_result more = {0};
	assert_int_equal(h_enq_async(h, "dq", "x", NULL, &more), TERN_ERATELIMIT);
	h_settle(h);
	assert_int_equal(more.calls, 0);
}

static void depth_limit_publish_to_bound_queue(void **state)
{
	struct h *h = *state;
	h->cfg.queue_max_depth = 2;
	h_open(h);
	assert_int_equal(h_bind(h, "full", orders), 0);
	assert_int_equal(h_bind(h, "roomy", orders), 0);
	assert_int_equal(h_enq(h, "roomy", "x", NULL, NULL), 0);
	assert_int_equal(h_pub(h, "orders:1", "a", NULL, NULL), 0);
	/* roomy is now full (1 enqueued + 1 copy). */
	struct pub_result r = {0};
	assert_int_equal(h_pub(h, "orders:2", "b", NULL, &r), TERN_ERATELIMIT);
	assert_int_equal(r.calls, 0);
	h_settle(h);
	assert_int_equal(r.calls, 0);
	/* Refused as a whole: no seq, no copy anywhere. */
	assert_int_equal(h_last_seq(h, "orders:2"), 0);
	assert_int_equal(ready(h, "full"), 1);
	assert_int_equal(ready(h, "roomy"), 2);
	/* A channel no full queue is bound to is not affected. */
	assert_int_equal(h_pub(h, "misc", "c", NULL, NULL), 0);
	/* Room again after a pull and an ack. */
	struct pull_result *p = &h->pulls[0];
	assert_int_equal(h_pull(h, 0, "roomy", 1, 0), 0);
	assert_true(h_wait_count(h, &p->calls, 1));
	assert_int_equal(h_ack(h, "roomy", p->got[0].delivery_id), 0);
	assert_int_equal(h_pub(h, "orders:2", "b", NULL, NULL), 0);
	assert_int_equal(ready(h, "full"), 2);
	assert_int_equal(ready(h, "roomy"), 2);
}

/* --- settings, info, each --- */

static void info_of_unused_queue(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct broker_qinfo qi;
	memset(&qi, 0xa5, sizeof(qi));
	assert_int_equal(broker_queue_info(h->b, "never", 5, &qi), 0);
	assert_int_equal(qi.name_len, 5);
	assert_memory_equal(qi.name, "never", 5);
	assert_int_equal(qi.ready, 0);
	assert_int_equal(qi.unacked, 0);
	assert_int_equal(qi.consumers, 0);
	assert_int_equal(qi.delivered, 0);
	assert_int_equal(qi.redelivered, 0);
	assert_int_equal(qi.dead_lettered, 0);
	assert_int_equal(qi.ack_timeout_ms, TERN_QUEUE_ACK_TIMEOUT_MS_DEFAULT);
	assert_int_equal(qi.max_attempts, TERN_QUEUE_ATTEMPTS_DEFAULT);
	assert_string_equal(qi.dead_letter, "never.dlq");
	assert_int_equal(qi.nbind, 0);
	/* The contract's default is "{q}.dlq" for a dead-letter queue too. */
	h_qinfo(h, "never.dlq", &qi);
	assert_string_equal(qi.dead_letter, "never.dlq.dlq");
	assert_int_equal(broker_queue_info(h->b, "", 0, &qi), TERN_EBADNAME);
	assert_int_equal(broker_queue_info(h->b, "a b", 3, &qi), TERN_EBADNAME);
}

static void count_queue(void *arg, const struct broker_qinfo *q)
{
	(void)q;
	(*(int *)arg)++;
}

static void info_does_not_create(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct broker_qinfo qi;
	h_qinfo(h, "ghost", &qi);
	h_qinfo(h, "ghost.dlq", &qi);
	int n = 0;
	broker_queue_each(h->b, count_queue, &n);
	assert_int_equal(n, 0);
	h_reopen(h);
	n = 0;
	broker_queue_each(h->b, count_queue, &n);
	assert_int_equal(n, 0);
}

static void config_merges_and_survives_reopen(void **state)
{
	struct h *h = *state;
	h_open(h);
	static const char *const pats[] = {"a:*", "b", NULL};
	size_t lens[] = {3, 1};
	struct broker_qconf c = {
		.has_ack_timeout = true, .ack_timeout_ms = 2000,
		.has_max_attempts = true, .max_attempts = 3,
		.has_dead_letter = true, .dead_letter = "dead", .dead_letter_len = 4,
		.has_bind = true, .bind = pats, .bind_lens = lens, .nbind = 2,
	};
	assert_int_equal(h_qconf(h, "cq", &c), 0);
	for (int round = 0; round < 2; round++) {
		struct broker_qinfo qi;
		h_qinfo(h, "cq", &qi);
		assert_int_equal(qi.name_len, 2);
		assert_memory_equal(qi.name, "cq", 2);
		assert_int_equal(qi.ack_timeout_ms, 2000);
		assert_int_equal(qi.max_attempts, 3);
		assert_string_equal(qi.dead_letter, "dead");
		assert_int_equal(qi.nbind, 2);
		assert_string_equal(qi.bind[0], "a:*");
		assert_string_equal(qi.bind[1], "b");
		h_reopen(h);
	}
	/* Fields not given keep their value. */
	struct broker_qconf only = {.has_ack_timeout = true, .ack_timeout_ms = 100};
	assert_int_equal(h_qconf(h, "cq", &only), 0);
	h_reopen(h);
	struct broker_qinfo qi;
	h_qinfo(h, "cq", &qi);
	assert_int_equal(qi.ack_timeout_ms, 100);
	assert_int_equal(qi.max_attempts, 3);
	assert_string_equal(qi.dead_letter, "dead");
	assert_int_equal(qi.nbind, 2);
	/* The restored settings work: 100 ms timeout, 3 attempts, to "dead". */
	assert_int_equal(h_enq(h, "cq", "m", NULL, NULL), 0);
	struct consumer *k = &h->cons[0];
	assert_int_equal(h_consume(h, 0, "cq", 1), 0);
	for (int i = 1; i <= 3; i++) {
		assert_true(h_wait_size(h, &k->n, (size_t)i));
		assert_int_equal(k->got[i - 1].attempt, i);
		h_tick(h, 100);
	}
	h_settle(h);
	assert_int_equal(k->n, 3);
	assert_int_equal(ready(h, "dead"), 1);
	assert_int_equal(ready(h, "cq.dlq"), 0);
}

struct conf_check {
	struct h *h;
	int calls, err, on_disk;
};

static void on_conf_check(void *arg, int err)
{
	struct conf_check *k = arg;
	k->calls++;
	k->err = err;
	k->on_disk = h_db_int(k->h, "SELECT ack_timeout_ms FROM queues WHERE name = ?1", "dur");
}

/* configure's callback runs after the commit: the setting is on disk. */
static void config_durable_before_callback(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct conf_check k = {.h = h};
	struct broker_qconf c = {.has_ack_timeout = true, .ack_timeout_ms = 4321};
	const char *why = NULL;
	assert_int_equal(broker_queue_configure(h->b, "dur", 3, &c, on_conf_check, &k, &why), 0);
	assert_int_equal(k.calls, 0); /* never inside the call */
	assert_true(h_wait_count(h, &k.calls, 1));
	h_settle(h);
	assert_int_equal(k.calls, 1);
	assert_int_equal(k.err, 0);
	assert_int_equal(k.on_disk, 4321);
}

static void configure_rejects_bad_values(void **state)
{
	struct h *h = *state;
	h_open(h);
	struct broker_qconf bad[] = {
		{.has_ack_timeout = true, .ack_timeout_ms = TERN_QUEUE_ACK_TIMEOUT_MS_MIN - 1},
		{.has_ack_timeout = true, .ack_timeout_ms = TERN_QUEUE_ACK_TIMEOUT_MS_MAX + 1},
		{.has_ack_timeout = true, .ack_timeout_ms = 0},
		{.has_max_attempts = true, .max_attempts = 0},
		{.has_max_attempts = true, .max_attempts = TERN_QUEUE_ATTEMPTS_MAX + 1},
		{.has_dead_letter = true, .dead_letter = "", .dead_letter_len = 0},
		{.has_dead_letter = true, .dead_letter = "bad name", .dead_letter_len = 8},
		{.has_dead_letter = true, .dead_letter = "$dead", .dead_letter_len = 5},
	};
	for (size_t i = 0; i < N(bad); i++) {
		if (h_qconf(h, "bc", &bad[i]) != TERN_EBADREQ)
			fail_msg("bad configuration %zu accepted", i);
	}
	char longname[TERN_QUEUE_NAME_MAX_BYTES + 2];
	memset(longname, 'd', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	struct broker_qconf dl = {.has_dead_letter = true, .dead_letter = longname,
				  .dead_letter_len = TERN_QUEUE_NAME_MAX_BYTES + 1};
	assert_int_equal(h_qconf(h, "bc", &dl), TERN_EBADREQ);
	/* 65 patterns. */
	const char *pats[TERN_QUEUE_BINDS_MAX + 2];
	char buf[TERN_QUEUE_BINDS_MAX + 1][16];
	for (int i = 0; i < TERN_QUEUE_BINDS_MAX + 1; i++) {
		snprintf(buf[i], sizeof(buf[i]), "p%d:*", i);
		pats[i] = buf[i];
	}
	pats[TERN_QUEUE_BINDS_MAX + 1] = NULL;
	assert_int_equal(h_bind(h, "bc", pats), TERN_EBADREQ);
	/* A bad queue name. */
	struct broker_qconf ok = {.has_max_attempts = true, .max_attempts = 2};
	const char *why = NULL;
	assert_int_equal(broker_queue_configure(h->b, "a b", 3, &ok, NULL, NULL, &why),
			 TERN_EBADNAME);
	/* Nothing changed. */
	struct broker_qinfo qi;
	h_qinfo(h, "bc", &qi);
	assert_int_equal(qi.ack_timeout_ms, TERN_QUEUE_ACK_TIMEOUT_MS_DEFAULT);
	assert_int_equal(qi.max_attempts, TERN_QUEUE_ATTEMPTS_DEFAULT);
	assert_string_equal(qi.dead_letter, "bc.dlq");
	assert_int_equal(qi.nbind, 0);

	/* The bounds themselves are accepted. */
	struct broker_qconf edge[] = {
		{.has_ack_timeout = true, .ack_timeout_ms = TERN_QUEUE_ACK_TIMEOUT_MS_MIN},
		{.has_ack_timeout = true, .ack_timeout_ms = TERN_QUEUE_ACK_TIMEOUT_MS_MAX},
		{.has_max_attempts = true, .max_attempts = 1},
		{.has_max_attempts = true, .max_attempts = TERN_QUEUE_ATTEMPTS_MAX},
		{.has_dead_letter = true, .dead_letter = longname,
		 .dead_letter_len = TERN_QUEUE_NAME_MAX_BYTES},
	};
	for (size_t i = 0; i < N(edge); i++) {
		if (h_qconf(h, "bc", &edge[i]) != 0)
			fail_msg("good configuration %zu refused", i);
	}
	pats[TERN_QUEUE_BINDS_MAX] = NULL;
	assert_int_equal(h_bind(h, "bc", pats), 0);
	h_qinfo(h, "bc", &qi);
	assert_int_equal(qi.ack_timeout_ms, TERN_QUEUE_ACK_TIMEOUT_MS_MAX);
	assert_int_equal(qi.max_attempts, TERN_QUEUE_ATTEMPTS_MAX);
	assert_int_equal(qi.nbind, TERN_QUEUE_BINDS_MAX);
	assert_int_equal(strlen(qi.dead_letter), TERN_QUEUE_NAME_MAX_BYTES);
	h_reopen(h);
	h_qinfo(h, "bc", &qi);
	assert_int_equal(qi.nbind, TERN_QUEUE_BINDS_MAX);
	assert_string_equal(qi.bind[TERN_QUEUE_BINDS_MAX - 1], buf[TERN_QUEUE_BINDS_MAX - 1]);
}

struct seen {
	char names[16][TERN_NAME_MAX_BYTES + 1];
	uint64_t ready[16];
	int n;
};

static void record_queue(void *arg, const struct broker_qinfo *q)
{
	struct seen *s = arg;
	assert_true(s->n < 16);
	snprintf(s->names[s->n], sizeof(s->names[0]), "%.*s", (int)q->name_len, q->name);
	s->ready[s->n++] = q->ready;
}

static int find(const struct seen *s, const char *name)
{
	int at = -1;
	for (int i = 0; i < s->n; i++) {
		if (strcmp(s->names[i], name) == 0) {
			assert_int_equal(at, -1); /* visited once */
			at = i;
		}
	}
	return at;
}

static void each_visits_every_queue(void **state)
{
	struct h *h = *state;
	h_open(h);
	assert_int_equal(h_enq(h, "e1", "x", NULL, NULL), 0);
	assert_int_equal(h_enq(h, "e1", "y", NULL, NULL), 0);
	assert_int_equal(h_consume(h, 0, "e2", 1), 0);
	h_cancel(h, 0);
	assert_int_equal(h_bind(h, "e3", orders), 0);
	for (int round = 0; round < 2; round++) {
		struct seen s = {0};
		broker_queue_each(h->b, record_queue, &s);
		/* Each queue used; dead-letter queues appear once something is
		 * dead-lettered into them. */
		const char *want[] = {"e1", "e3"};
		for (size_t i = 0; i < N(want); i++)
			if (find(&s, want[i]) < 0)
				fail_msg("round %d: queue %s not visited", round, want[i]);
		assert_int_equal(s.ready[find(&s, "e1")], 2);
		if (round == 0) {
			/* A queue only consumed from exists until close. */
			assert_true(find(&s, "e2") >= 0);
			assert_int_equal(s.n, 3);
		}
		h_reopen(h);
	}
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_h(bind_copies_into_every_bound_queue),
		cmocka_unit_test_h(bind_copies_durable_before_ok),
		cmocka_unit_test_h(bind_copy_answers_waiting_pull),
		cmocka_unit_test_h(bind_many_queues_no_silent_loss),
		cmocka_unit_test_h(bind_pattern_forms),
		cmocka_unit_test_h(bind_copy_survives_reopen),
		cmocka_unit_test_h(bind_copy_dead_lettered_keeps_channel),
		cmocka_unit_test_h(bind_idempotent_republish_no_second_copy),
		cmocka_unit_test_h(bind_bad_patterns),
		cmocka_unit_test_h(bind_replace_and_clear),
		cmocka_unit_test_h(depth_limit_enqueue),
		cmocka_unit_test_h(depth_limit_publish_to_bound_queue),
		cmocka_unit_test_h(info_of_unused_queue),
		cmocka_unit_test_h(info_does_not_create),
		cmocka_unit_test_h(config_merges_and_survives_reopen),
		cmocka_unit_test_h(config_durable_before_callback),
		cmocka_unit_test_h(configure_rejects_bad_values),
		cmocka_unit_test_h(each_visits_every_queue),
	};
	return h_run("queue_bind", tests, N(tests), argc, argv);
}
