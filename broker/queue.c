/* Direct queues: durable FIFO work distribution with acks, redelivery and
 * dead letters, and channel bindings that copy publishes into queues.
 *
 * Every message of a queue is in memory (the depth limit bounds it) and in
 * SQLite; memory changes only after the store committed what makes them
 * durable (an enqueue, a dead-letter move). Acks and attempt counts are
 * written behind, batched by the store: after a crash a message acked just
 * before may come once more, and attempt may undercount (as the contract
 * allows). Time comes from cfg.now_ms, so timeouts are testable. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue_internal.h"
#include "names.h"
#include "tern_err.h"
#include "tern_limits.h"

static void dispatch(struct queue *q);

/* Dispatch that an API call makes possible runs from the next broker_poll,
 * so no consumer callback runs inside the call (ack, consume, ...). */
void q_schedule_dispatch(struct queue *q)
{
	if (list_linked(&q->dispatch_link))
		return;
	list_insert_tail(&q->b->dispatch_pending, &q->dispatch_link);
	q->b->cfg.notify(q->b->cfg.notify_arg);
}

/* --- queues --- */

/* The contract's default: "{q}.dlq". Only when that would pass the name
 * limit (q is the dead-letter queue of a 250-byte queue) does a queue
 * dead-letter into its own tail, so nothing is ever lost. */
static void set_dlq_default(struct queue *q)
{
	if (q->node.klen + 4 <= TERN_QUEUE_NAME_MAX_BYTES + 4)
		snprintf(q->dlq_default, sizeof(q->dlq_default), "%s.dlq", q->name);
	else
		snprintf(q->dlq_default, sizeof(q->dlq_default), "%s", q->name);
}

/* The queues (in a malloc'd array) for which pick(q) is true: a walk that
 * may create queues (dead letters) must not run over the map itself. */
size_t q_collect(struct broker *b, bool (*pick)(struct queue *q, int64_t now), int64_t now,
		      struct queue ***out)
{
	size_t n = 0, cap = 0, bucket = 0;
	struct queue **v = NULL;
	struct hmap_node *node = NULL;
	while ((node = hmap_next(&b->queues, &bucket, node)) != NULL) {
		struct queue *q = container_of(node, struct queue, node);
		if (!pick(q, now))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct queue **nv = realloc(v, nc * sizeof(*nv));
			if (!nv)
				break; /* the rest waits for the next tick */
			v = nv;
			cap = nc;
		}
		v[n++] = q;
	}
	*out = v;
	return n;
}

struct queue *q_get(struct broker *b, const char *name, size_t len, bool create)
{
	struct hmap_node *n = hmap_get(&b->queues, name, len);
	if (n || !create)
		return n ? container_of(n, struct queue, node) : NULL;
	struct queue *q = calloc(1, sizeof(*q) + len + 1);
	if (!q)
		return NULL;
	memcpy(q->name, name, len);
	q->b = b;
	list_init(&q->ready);
	list_init(&q->inflight);
	list_init(&q->consumers);
	list_init(&q->waiters);
	list_init(&q->bound_link);
	list_init(&q->dispatch_link);
	q->rr = &q->consumers;
	q->ack_timeout_ms = TERN_QUEUE_ACK_TIMEOUT_MS_DEFAULT;
	q->max_attempts = TERN_QUEUE_ATTEMPTS_DEFAULT;
	if (hmap_put(&b->queues, &q->node, q->name, len) != 0) {
		free(q);
		return NULL;
	}
	set_dlq_default(q);
	return q;
}

const char *q_dlq_name(const struct queue *q)
{
	return q->dead_letter ? q->dead_letter : q->dlq_default;
}

static uint64_t depth(const struct queue *q) { return q->nready + q->nunacked + q->pending; }

static uint64_t max_depth(const struct broker *b)
{
	return b->cfg.queue_max_depth ? b->cfg.queue_max_depth : TERN_QUEUE_DEPTH_DEFAULT;
}

void q_msg_free(struct qmsg *m)
{
	msg_unref(m->msg);
	free(m);
}

struct qmsg *q_msg_new(struct tern_msg *msg, uint64_t qseq, bool from_channel,
			     uint32_t attempt)
{
	struct qmsg *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->msg = msg_ref(msg);
	m->qseq = qseq;
	m->from_channel = from_channel;
	m->attempt = attempt;
	return m;
}

/* The ready list stays in qseq order, which is FIFO order: a message given
 * back goes in ahead of every newer message ("to the head"), and several
 * given back keep their original order. The walk from the head passes only
 * older given-back messages, so it is short. */
void q_ready_push(struct queue *q, struct qmsg *m, bool given_back)
{
	struct list *pos = &q->ready;
	if (given_back) {
		for (pos = q->ready.next; pos != &q->ready; pos = pos->next)
			if (container_of(pos, struct qmsg, link)->qseq > m->qseq)
				break;
	}
	m->link.next = pos;
	m->link.prev = pos->prev;
	pos->prev->next = &m->link;
	pos->prev = &m->link;
	q->nready++;
}

/* --- store ops issued by the engine (write-behind, no callback needed) --- */

static void free_op_done(struct store_op *op)
{
	msg_unref(op->msg);
	free(op);
}

void q_submit(struct queue *q, enum store_op_kind kind, uint64_t qseq,
			  uint32_t attempt)
{
	struct store_op *op = calloc(1, sizeof(*op));
	if (!op)
		return; /* the row stays: after a restart it is delivered again */
	op->kind = kind;
	op->done = free_op_done;
	op->queue = q->name;
	op->queue_len = q->node.klen;
	op->qseq = qseq;
	op->attempt = attempt;
	if (store_submit(q->b->store, op) != 0)
		free(op);
}

/* A direct message reads as belonging to the queue it is in (broker.h), so
 * moving one relabels it; a binding's copy keeps its channel. */
static struct tern_msg *relabel(struct tern_msg *m, const struct queue *to)
{
	struct tern_msg *c = msg_new(to->name, to->node.klen, m->has_name ? m->name : NULL,
				     m->name_len, m->data, m->data_len, m->enc);
	if (!c)
		return msg_ref(m);
	memcpy(c->id, m->id, sizeof(c->id));
	c->ts_ms = m->ts_ms;
	return c;
}

static void move_done(struct store_op *op)
{
	struct move_op *mo = container_of(op, struct move_op, op);
	struct queue *to = mo->to, *from = mo->from;
	to->pending--;
	if (op->err == 0) {
		from->dead_lettered++;
		struct tern_msg *msg = op->from_channel ? msg_ref(op->msg) : relabel(op->msg, to);
		struct qmsg *m = q_msg_new(msg, op->qseq, op->from_channel, 0);
		msg_unref(msg);
		if (m) {
			q_ready_push(to, m, false);
			dispatch(to);
		}
	} else {
		/* Not moved: the row is still in the source queue; so is the message. */
		struct qmsg *m = q_msg_new(op->msg, op->src_qseq, op->from_channel, mo->attempt);
		if (m) {
			q_ready_push(from, m, true);
			dispatch(from);
		}
	}
	msg_unref(op->msg);
	free(mo);
}

/* Moves m (already out of every list) to q's dead-letter queue. */
void q_dead_letter(struct queue *q, struct qmsg *m)
{
	const char *name = q_dlq_name(q);
	struct queue *to = q_get(q->b, name, strlen(name), true);
	struct move_op *mo = calloc(1, sizeof(*mo) + q->node.klen + 1);
	if (!to || !mo) {
		free(mo);
		q_ready_push(q, m, true); /* keep it rather than lose it */
		return;
	}
	memcpy(mo->src, q->name, q->node.klen);
	mo->to = to;
	mo->from = q;
	mo->attempt = m->attempt;
	mo->op.kind = STORE_OP_QMOVE;
	mo->op.done = move_done;
	mo->op.msg = msg_ref(m->msg);
	mo->op.from_channel = m->from_channel;
	mo->op.src_queue = mo->src;
	mo->op.src_queue_len = q->node.klen;
	mo->op.src_qseq = m->qseq;
	mo->op.queue = to->name;
	mo->op.queue_len = to->node.klen;
	to->pending++;
	if (store_submit(q->b->store, &mo->op) != 0) {
		to->pending--;
		msg_unref(mo->op.msg);
		free(mo);
		q_ready_push(q, m, true);
		return;
	}
	q_msg_free(m);
}

/* --- deliveries --- */

void q_delivery_unlink(struct delivery *d)
{
	struct queue *q = d->q;
	hmap_del(&q->b->deliveries, &d->node);
	list_remove(&d->tlink);
	if (d->c) {
		list_remove(&d->clink);
		d->c->inflight--;
	}
	q->nunacked--;
}

/* A delivery failed (timeout, nack, consumer gone): back to the head, or to
 * dead letters when it was attempt number max_attempts or requeue is false. */
static void delivery_fail(struct delivery *d, bool requeue)
{
	struct queue *q = d->q;
	struct qmsg *m = d->m;
	q_delivery_unlink(d);
	free(d);
	if (!requeue || m->attempt >= q->max_attempts) {
		q_dead_letter(q, m);
		return;
	}
	q_submit(q, STORE_OP_QATTEMPT, m->qseq, m->attempt);
	q_ready_push(q, m, true);
}

static struct delivery *deliver_one(struct queue *q, struct broker_consumer *c)
{
	struct broker *b = q->b;
	struct delivery *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	struct qmsg *m = container_of(q->ready.next, struct qmsg, link);
	list_remove(&m->link);
	q->nready--;
	m->attempt++;
	q->delivered++;
	if (m->attempt > 1)
		q->redelivered++;
	d->q = q;
	d->m = m;
	d->c = c;
	d->deadline_ms = broker_now_ms(b) + (int64_t)q->ack_timeout_ms;
	snprintf(d->id, sizeof(d->id), "%s.%llx", b->id_prefix,
		 (unsigned long long)++b->delivery_counter);
	hmap_put(&b->deliveries, &d->node, d->id, strlen(d->id));
	/* Deadlines of one queue come in send order unless its timeout was
	 * lowered: insert from the tail, usually in one step. */
	struct list *pos = q->inflight.prev;
	while (pos != &q->inflight &&
	       container_of(pos, struct delivery, tlink)->deadline_ms > d->deadline_ms)
		pos = pos->prev;
	d->tlink.prev = pos;
	d->tlink.next = pos->next;
	pos->next->prev = &d->tlink;
	pos->next = &d->tlink;
	q->nunacked++;
	if (c) {
		list_insert_tail(&c->deliveries, &d->clink);
		c->inflight++;
	}
	return d;
}

static void fill_view(const struct delivery *d, struct broker_delivery *v)
{
	v->queue = d->q->name;
	v->queue_len = d->q->node.klen;
	v->delivery_id = d->id;
	v->msg = d->m->msg;
	v->from_channel = d->m->from_channel;
	v->attempt = d->m->attempt;
}

static void answer_pull(struct broker_pull *p)
{
	struct broker *b = p->q->b;
	list_remove(&p->link);
	list_insert_tail(&b->ready_pulls, &p->link);
	p->answered = true;
	b->cfg.notify(b->cfg.notify_arg); /* runs from broker_poll, never inline */
}

static struct broker_consumer *next_consumer(struct queue *q)
{
	struct list *start = q->rr, *pos = start;
	do {
		pos = pos->next;
		if (pos == &q->consumers)
			continue;
		struct broker_consumer *c = container_of(pos, struct broker_consumer, link);
		if (c->inflight < c->prefetch) {
			q->rr = pos;
			return c;
		}
	} while (pos != start);
	return NULL;
}

/* Hands ready messages out: first to waiting pulls (oldest first), then
 * round-robin to consumers with room under their prefetch. */
static void dispatch(struct queue *q)
{
	while (!list_empty(&q->ready) && !list_empty(&q->waiters)) {
		struct broker_pull *p = container_of(q->waiters.next, struct broker_pull, link);
		while (!list_empty(&q->ready) && p->ngot < p->max) {
			struct delivery *d = deliver_one(q, NULL);
			if (!d)
				return;
			p->got[p->ngot++] = d;
		}
		answer_pull(p);
	}
	while (!list_empty(&q->ready)) {
		struct broker_consumer *c = next_consumer(q);
		if (!c)
			return;
		struct delivery *d = deliver_one(q, c);
		if (!d)
			return;
		struct broker_delivery v;
		fill_view(d, &v);
		c->fn(c->arg, &v); /* may ack, cancel or consume again */
	}
}

/* --- enqueue and binding copies --- */

static void enq_done(struct store_op *op)
{
	struct enq_op *eo = container_of(op, struct enq_op, op);
	struct queue *q = eo->q;
	q->pending--;
	if (op->err != 0) {
		eo->cb(eo->arg, op->err, 0, NULL);
	} else if (op->dup) {
		eo->cb(eo->arg, 0, 0, op->dup_id);
	} else {
		struct qmsg *m = q_msg_new(op->msg, op->qseq, false, 0);
		if (m)
			q_ready_push(q, m, false);
		eo->cb(eo->arg, 0, 0, op->msg->id);
		dispatch(q);
	}
	msg_unref(op->msg);
	free(eo);
}

int broker_enqueue(struct broker *b, const struct broker_enq *e, broker_pub_cb cb, void *arg,
		   const char **why)
{
	const char *dummy;
	if (!why)
		why = &dummy;
	int rc = names_check_queue(e->queue, e->queue_len, why);
	if (rc != 0)
		return rc;
	if (e->data_len > b->cfg.max_message_bytes) {
		*why = "message data is larger than the limit";
		return TERN_ETOOLARGE;
	}
	if (e->idem_key && (e->idem_len == 0 || e->idem_len > TERN_IDEM_KEY_MAX_BYTES)) {
		*why = "idempotency_key must be 1-128 bytes";
		return TERN_EBADREQ;
	}
	if (e->enc != TERN_ENC_JSON && e->enc != TERN_ENC_BASE64) {
		*why = "unknown encoding";
		return TERN_EBADREQ;
	}
	if (b->closing) {
		*why = "shutting down";
		return TERN_EUNAVAIL;
	}
	struct queue *q = q_get(b, e->queue, e->queue_len, true);
	if (q && depth(q) >= max_depth(b)) {
		*why = "the queue is full";
		return TERN_ERATELIMIT;
	}
	struct enq_op *eo = calloc(1, sizeof(*eo));
	struct tern_msg *m = msg_new(e->queue, e->queue_len, NULL, 0, e->data, e->data_len, e->enc);
	if (!q || !eo || !m) {
		free(eo);
		msg_unref(m);
		*why = "out of memory";
		return TERN_EUNAVAIL;
	}
	m->ts_ms = broker_now_ms(b);
	snprintf(m->id, sizeof(m->id), "%s-%llx", b->id_prefix, (unsigned long long)++b->id_counter);
	eo->op.kind = STORE_OP_ENQUEUE;
	eo->op.done = enq_done;
	eo->op.msg = m;
	eo->op.queue = q->name;
	eo->op.queue_len = q->node.klen;
	if (e->idem_key) {
		memcpy(eo->idem, e->idem_key, e->idem_len);
		eo->op.idem_key = eo->idem;
		eo->op.idem_len = e->idem_len;
	}
	eo->q = q;
	eo->cb = cb;
	eo->arg = arg;
	q->pending++;
	rc = store_submit(b->store, &eo->op);
	if (rc != 0) {
		q->pending--;
		msg_unref(m);
		free(eo);
		*why = "the store is behind; retry";
	}
	return rc;
}

static bool pattern_match(const char *pat, const char *name, size_t len)
{
	size_t pl = strlen(pat);
	if (pl > 0 && pat[pl - 1] == '*')
		return len >= pl - 1 && memcmp(pat, name, pl - 1) == 0;
	return pl == len && memcmp(pat, name, len) == 0;
}

static bool binds(const struct queue *q, const char *chan, size_t len)
{
	for (size_t i = 0; i < q->nbind; i++)
		if (pattern_match(q->bind[i], chan, len))
			return true;
	return false;
}

int queues_bound_to(struct broker *b, const char *chan, size_t len, struct queue ***targets,
		    size_t *n)
{
	struct list *pos;
	size_t count = 0;
	*targets = NULL;
	*n = 0;
	for (pos = b->bound_queues.next; pos != &b->bound_queues; pos = pos->next) {
		struct queue *q = container_of(pos, struct queue, bound_link);
		if (!binds(q, chan, len))
			continue;
		if (depth(q) >= max_depth(b))
			return TERN_ERATELIMIT;
		count++;
	}
	if (count == 0)
		return 0;
	struct queue **t = calloc(count, sizeof(*t));
	if (!t)
		return TERN_EUNAVAIL;
	for (pos = b->bound_queues.next; pos != &b->bound_queues; pos = pos->next) {
		struct queue *q = container_of(pos, struct queue, bound_link);
		if (binds(q, chan, len)) {
			t[*n] = q;
			q->pending++;
			(*n)++;
		}
	}
	*targets = t;
	return 0;
}

void queues_copies_committed(struct broker *b, struct queue **targets, const uint64_t *qseqs,
			     size_t n, struct tern_msg *m)
{
	(void)b;
	for (size_t i = 0; i < n; i++) {
		struct queue *q = targets[i];
		q->pending--;
		if (m && qseqs[i]) {
			struct qmsg *qm = q_msg_new(m, qseqs[i], true, 0);
			if (qm)
				q_ready_push(q, qm, false);
			dispatch(q);
		}
	}
}

/* --- consumers --- */

int broker_consume(struct broker *b, const char *queue, size_t len, uint32_t prefetch,
		   broker_deliver_fn fn, void *arg, struct broker_consumer **out)
{
	int rc = names_check_queue(queue, len, NULL);
	if (rc != 0)
		return rc;
	if (prefetch == 0 || prefetch > TERN_QUEUE_PREFETCH_MAX)
		return TERN_EBADREQ;
	struct queue *q = q_get(b, queue, len, true);
	struct broker_consumer *c = q ? calloc(1, sizeof(*c)) : NULL;
	if (!c)
		return TERN_EUNAVAIL;
	c->q = q;
	c->prefetch = prefetch;
	c->fn = fn;
	c->arg = arg;
	list_init(&c->deliveries);
	list_insert_tail(&q->consumers, &c->link);
	q->nconsumers++;
	*out = c;
	q_schedule_dispatch(q);
	return 0;
}

int broker_consumer_set_prefetch(struct broker_consumer *c, uint32_t prefetch)
{
	if (prefetch == 0 || prefetch > TERN_QUEUE_PREFETCH_MAX)
		return TERN_EBADREQ;
	c->prefetch = prefetch;
	q_schedule_dispatch(c->q);
	return 0;
}

void broker_consumer_cancel(struct broker_consumer *c)
{
	struct queue *q = c->q;
	if (q->rr == &c->link)
		q->rr = c->link.prev;
	list_remove(&c->link);
	q->nconsumers--;
	/* Newest first: each goes to the head, so the oldest ends up first and
	 * the given-back work keeps its order ahead of newer messages. */
	while (!list_empty(&c->deliveries)) {
		struct delivery *d = container_of(c->deliveries.prev, struct delivery, clink);
		delivery_fail(d, true);
	}
	free(c);
	q_schedule_dispatch(q);
}

/* --- settling --- */

static struct delivery *find_delivery(struct broker *b, const char *queue, size_t qlen,
				      const char *id, size_t idlen)
{
	struct hmap_node *n = hmap_get(&b->deliveries, id, idlen);
	if (!n)
		return NULL;
	struct delivery *d = container_of(n, struct delivery, node);
	if (d->q->node.klen != qlen || memcmp(d->q->name, queue, qlen) != 0)
		return NULL;
	return d;
}

int broker_ack(struct broker *b, const char *queue, size_t qlen, const char *id, size_t idlen)
{
	struct delivery *d = find_delivery(b, queue, qlen, id, idlen);
	if (!d)
		return TERN_ENOTFOUND;
	struct queue *q = d->q;
	struct qmsg *m = d->m;
	q_delivery_unlink(d);
	free(d);
	q_submit(q, STORE_OP_QDELETE, m->qseq, 0);
	q_msg_free(m);
	q_schedule_dispatch(q);
	return 0;
}

int broker_nack(struct broker *b, const char *queue, size_t qlen, const char *id, size_t idlen,
		bool requeue)
{
	struct delivery *d = find_delivery(b, queue, qlen, id, idlen);
	if (!d)
		return TERN_ENOTFOUND;
	struct queue *q = d->q;
	delivery_fail(d, requeue);
	q_schedule_dispatch(q);
	return 0;
}

/* --- pulls --- */

int broker_pull(struct broker *b, const char *queue, size_t len, uint32_t max, uint64_t wait_ms,
		broker_pull_cb cb, void *arg, struct broker_pull **out)
{
	int rc = names_check_queue(queue, len, NULL);
	if (rc != 0)
		return rc;
	if (max == 0 || max > TERN_QUEUE_PULL_MAX || wait_ms > TERN_QUEUE_PULL_WAIT_MS_MAX)
		return TERN_EBADREQ;
	struct queue *q = q_get(b, queue, len, true);
	struct broker_pull *p = q ? calloc(1, sizeof(*p)) : NULL;
	if (p)
		p->got = calloc(max, sizeof(*p->got));
	if (!p || !p->got) {
		if (p)
			free(p);
		return TERN_EUNAVAIL;
	}
	p->q = q;
	p->max = max;
	p->deadline_ms = broker_now_ms(b) + (int64_t)wait_ms;
	p->cb = cb;
	p->arg = arg;
	list_insert_tail(&q->waiters, &p->link);
	if (!list_empty(&q->ready) || wait_ms == 0)
		q_schedule_dispatch(q); /* answers it (empty when wait_ms is 0) */
	*out = p;
	return 0;
}

void broker_pull_cancel(struct broker_pull *p)
{
	list_remove(&p->link);
	for (size_t i = p->ngot; i-- > 0;) /* newest first: see broker_consumer_cancel */
		delivery_fail(p->got[i], true);
	if (p->ngot)
		q_schedule_dispatch(p->q);
	free(p->got);
	free(p);
}

static bool has_waiters(struct queue *q, int64_t now)
{
	(void)now;
	return !list_empty(&q->waiters);
}

void broker_pulls_release(struct broker *b)
{
	struct queue **qs;
	size_t n = q_collect(b, has_waiters, 0, &qs);
	for (size_t k = 0; k < n; k++)
		while (!list_empty(&qs[k]->waiters))
			answer_pull(container_of(qs[k]->waiters.next, struct broker_pull, link));
	free(qs);
}

static void run_pull(struct broker_pull *p)
{
	struct broker_delivery views[64] = {0}, *v = views;
	if (p->ngot > 64 && !(v = calloc(p->ngot, sizeof(*v)))) {
		p->cb(p->arg, TERN_EUNAVAIL, NULL, 0);
		for (size_t i = p->ngot; i-- > 0;)
			delivery_fail(p->got[i], true);
	} else {
		for (size_t i = 0; i < p->ngot; i++)
			fill_view(p->got[i], &v[i]);
		p->cb(p->arg, 0, v, p->ngot);
		if (v != views)
			free(v);
	}
	free(p->got);
	free(p);
}

void queues_poll(struct broker *b)
{
	while (!list_empty(&b->dispatch_pending)) {
		struct queue *q = container_of(b->dispatch_pending.next, struct queue, dispatch_link);
		list_remove(&q->dispatch_link);
		list_init(&q->dispatch_link);
		dispatch(q);
		/* A pull with nothing to wait for answers now, even empty. */
		struct list *pos, *tmp;
		list_foreach_safe(pos, tmp, &q->waiters) {
			struct broker_pull *p = container_of(pos, struct broker_pull, link);
			if (p->deadline_ms <= broker_now_ms(b))
				answer_pull(p);
		}
	}
	while (!list_empty(&b->ready_pulls)) {
		struct broker_pull *p = container_of(b->ready_pulls.next, struct broker_pull, link);
		list_remove(&p->link);
		run_pull(p);
	}
}

static bool tick_due(struct queue *q, int64_t now)
{
	bool expired = !list_empty(&q->inflight) &&
		       container_of(q->inflight.next, struct delivery, tlink)->deadline_ms <= now;
	bool waiting = !list_empty(&q->waiters);
	return expired || waiting;
}

void broker_tick(struct broker *b)
{
	int64_t now = broker_now_ms(b);
	struct queue **qs;
	size_t n = q_collect(b, tick_due, now, &qs);
	for (size_t k = 0; k < n; k++) {
		struct queue *q = qs[k];
		/* The expired ones are a prefix of inflight (ordered by deadline). */
		bool failed = false;
		while (!list_empty(&q->inflight)) {
			struct delivery *d = container_of(q->inflight.next, struct delivery, tlink);
			if (d->deadline_ms > now)
				break;
			delivery_fail(d, true);
			failed = true;
		}
		/* Ready work goes to waiting pulls before any is answered empty: a
		 * pull with wait_ms 0 is due at once, and this tick may run before
		 * the dispatch its call scheduled. */
		if (!list_empty(&q->waiters) && !list_empty(&q->ready))
			dispatch(q);
		struct list *pos, *tmp;
		list_foreach_safe(pos, tmp, &q->waiters) {
			struct broker_pull *p = container_of(pos, struct broker_pull, link);
			if (p->deadline_ms <= now)
				answer_pull(p);
		}
		if (failed)
			q_schedule_dispatch(q);
	}
	free(qs);
}

