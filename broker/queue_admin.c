/* Queue settings (configure, info, bindings), loading at start and teardown;
 * the engine itself is queue.c. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "queue_internal.h"
#include "tern_err.h"
#include "tern_limits.h"

/* --- settings --- */

static void set_bind(struct broker *b, struct queue *q, char **bind, size_t n)
{
	for (size_t i = 0; i < q->nbind; i++)
		free(q->bind[i]);
	free(q->bind);
	q->bind = bind;
	q->nbind = n;
	if (list_linked(&q->bound_link))
		list_remove(&q->bound_link);
	list_init(&q->bound_link);
	if (n)
		list_insert_tail(&b->bound_queues, &q->bound_link);
}

static int check_pattern(const char *p, size_t len, const char **why)
{
	if (len == 0 || len > TERN_NAME_MAX_BYTES) {
		*why = "a bind pattern must be 1-255 bytes";
		return TERN_EBADREQ;
	}
	const char *star = memchr(p, '*', len);
	if (star && star != p + len - 1) {
		*why = "'*' may only end a bind pattern";
		return TERN_EBADREQ;
	}
	if (len == 1 && star)
		return 0; /* "*": every channel */
	if (names_check_channel(p, star ? len - 1 : len, why) != 0) {
		*why = "a bind pattern must be a valid channel name, optionally ending in '*'";
		return TERN_EBADREQ;
	}
	return 0;
}

static int check_conf(const struct broker_qconf *c, const char **why)
{
	if (c->has_ack_timeout && (c->ack_timeout_ms < TERN_QUEUE_ACK_TIMEOUT_MS_MIN ||
				   c->ack_timeout_ms > TERN_QUEUE_ACK_TIMEOUT_MS_MAX)) {
		*why = "ack_timeout_ms must be 100-3600000";
		return TERN_EBADREQ;
	}
	if (c->has_max_attempts && (c->max_attempts < 1 || c->max_attempts > TERN_QUEUE_ATTEMPTS_MAX)) {
		*why = "max_attempts must be 1-1000";
		return TERN_EBADREQ;
	}
	if (c->has_dead_letter && names_check_queue(c->dead_letter, c->dead_letter_len, why) != 0) {
		*why = "dead_letter must be a valid queue name";
		return TERN_EBADREQ;
	}
	if (c->has_bind && c->nbind > TERN_QUEUE_BINDS_MAX) {
		*why = "at most 64 bind patterns";
		return TERN_EBADREQ;
	}
	for (size_t i = 0; c->has_bind && i < c->nbind; i++)
		if (check_pattern(c->bind[i], c->bind_lens[i], why) != 0)
			return TERN_EBADREQ;
	return 0;
}

static int apply_conf(struct broker *b, struct queue *q, const struct broker_qconf *c)
{
	char **bind = NULL;
	char *dl = NULL;
	if (c->has_bind && c->nbind) {
		if (!(bind = calloc(c->nbind, sizeof(*bind))))
			return TERN_EUNAVAIL;
		for (size_t i = 0; i < c->nbind; i++)
			if (!(bind[i] = strndup(c->bind[i], c->bind_lens[i])))
				goto out_nomem;
	}
	if (c->has_dead_letter) {
		if (!(dl = strndup(c->dead_letter, c->dead_letter_len)) ||
		    !q_get(b, dl, c->dead_letter_len, true))
			goto out_nomem;
	}
	if (c->has_ack_timeout)
		q->ack_timeout_ms = c->ack_timeout_ms;
	if (c->has_max_attempts)
		q->max_attempts = c->max_attempts;
	if (c->has_dead_letter) {
		free(q->dead_letter);
		q->dead_letter = strcmp(dl, q->dlq_default) == 0 ? (free(dl), NULL) : dl;
	}
	if (c->has_bind)
		set_bind(b, q, bind, c->nbind);
	return 0;

out_nomem:
	for (size_t i = 0; bind && i < c->nbind; i++)
		free(bind[i]);
	free(bind);
	free(dl);
	return TERN_EUNAVAIL;
}

static void conf_done(struct store_op *op)
{
	struct conf_op *co = container_of(op, struct conf_op, op);
	if (co->cb)
		co->cb(co->arg, op->err);
	free(co->bind_text);
	free(co);
}

static char *join_bind(const struct queue *q)
{
	size_t len = 1;
	for (size_t i = 0; i < q->nbind; i++)
		len += strlen(q->bind[i]) + 1;
	char *t = malloc(len), *p = t;
	if (!t)
		return NULL;
	for (size_t i = 0; i < q->nbind; i++)
		p += sprintf(p, "%s%s", i ? "\n" : "", q->bind[i]);
	*p = 0;
	return t;
}

int broker_queue_configure(struct broker *b, const char *queue, size_t len,
			   const struct broker_qconf *conf, void (*cb)(void *arg, int err),
			   void *arg, const char **why)
{
	int rc = names_check_queue(queue, len, why);
	if (rc != 0 || (rc = check_conf(conf, why)) != 0)
		return rc;
	struct queue *q = q_get(b, queue, len, true);
	struct conf_op *co = q ? calloc(1, sizeof(*co)) : NULL;
	if (!co || (rc = apply_conf(b, q, conf)) != 0 || !(co->bind_text = join_bind(q))) {
		free(co);
		*why = "out of memory";
		return TERN_EUNAVAIL;
	}
	co->op.kind = STORE_OP_QCONFIG;
	co->op.done = conf_done;
	co->op.queue = q->name;
	co->op.queue_len = q->node.klen;
	co->op.qcfg.ack_timeout_ms = q->ack_timeout_ms;
	co->op.qcfg.max_attempts = q->max_attempts;
	co->op.qcfg.dead_letter = q->dead_letter ? q->dead_letter : "";
	co->op.qcfg.bind = co->bind_text;
	co->cb = cb;
	co->arg = arg;
	rc = store_submit(b->store, &co->op);
	if (rc != 0) {
		free(co->bind_text);
		free(co);
		*why = "the store is behind; retry";
	}
	return rc;
}

static void fill_info(const struct queue *q, struct broker_qinfo *out)
{
	out->name = q->name;
	out->name_len = q->node.klen;
	out->ready = q->nready;
	out->unacked = q->nunacked;
	out->consumers = q->nconsumers;
	out->delivered = q->delivered;
	out->redelivered = q->redelivered;
	out->dead_lettered = q->dead_lettered;
	out->ack_timeout_ms = q->ack_timeout_ms;
	out->max_attempts = q->max_attempts;
	out->dead_letter = q_dlq_name(q);
	out->bind = (const char *const *)q->bind;
	out->nbind = q->nbind;
}

int broker_queue_info(struct broker *b, const char *queue, size_t len, struct broker_qinfo *out)
{
	int rc = names_check_queue(queue, len, NULL);
	if (rc != 0)
		return rc;
	struct queue *q = q_get(b, queue, len, false);
	if (q) {
		fill_info(q, out);
		return 0;
	}
	/* Never used: defaults and zeros, without creating it. */
	char *dlq = b->info_dlq;
	memset(out, 0, sizeof(*out));
	out->name = queue;
	out->name_len = len;
	out->ack_timeout_ms = TERN_QUEUE_ACK_TIMEOUT_MS_DEFAULT;
	out->max_attempts = TERN_QUEUE_ATTEMPTS_DEFAULT;
	if (len + 4 <= TERN_QUEUE_NAME_MAX_BYTES + 4)
		snprintf(dlq, sizeof(b->info_dlq), "%.*s.dlq", (int)len, queue);
	else
		snprintf(dlq, sizeof(b->info_dlq), "%.*s", (int)len, queue);
	out->dead_letter = dlq;
	return 0;
}

void broker_queue_each(struct broker *b, void (*fn)(void *arg, const struct broker_qinfo *q),
		       void *arg)
{
	size_t bucket = 0;
	struct hmap_node *n = NULL;
	while ((n = hmap_next(&b->queues, &bucket, n)) != NULL) {
		struct broker_qinfo info;
		fill_info(container_of(n, struct queue, node), &info);
		fn(arg, &info);
	}
}

/* --- loading and freeing --- */

static int load_queue(void *arg, const char *name, size_t len, const struct store_qconfig *cfg,
		      bool configured)
{
	struct broker *b = arg;
	struct queue *q = q_get(b, name, len, true);
	if (!q)
		return TERN_EINTERNAL;
	if (!configured)
		return 0;
	const char *pats[TERN_QUEUE_BINDS_MAX];
	size_t lens[TERN_QUEUE_BINDS_MAX], n = 0;
	for (const char *p = cfg->bind; p && *p && n < TERN_QUEUE_BINDS_MAX;) {
		const char *nl = strchr(p, '\n');
		size_t l = nl ? (size_t)(nl - p) : strlen(p);
		pats[n] = p;
		lens[n++] = l;
		p += l + (nl ? 1 : 0);
	}
	struct broker_qconf c = {
		.has_ack_timeout = cfg->ack_timeout_ms != 0, .ack_timeout_ms = cfg->ack_timeout_ms,
		.has_max_attempts = cfg->max_attempts != 0, .max_attempts = cfg->max_attempts,
		.has_dead_letter = cfg->dead_letter && *cfg->dead_letter,
		.dead_letter = cfg->dead_letter,
		.dead_letter_len = cfg->dead_letter ? strlen(cfg->dead_letter) : 0,
		.has_bind = true, .bind = pats, .bind_lens = lens, .nbind = n,
	};
	return apply_conf(b, q, &c);
}

static int load_qmsg(void *arg, const char *queue, size_t qlen, uint64_t qseq,
		     struct tern_msg *msg, bool from_channel, uint32_t attempt)
{
	struct broker *b = arg;
	struct queue *q = q_get(b, queue, qlen, false);
	struct qmsg *m = q ? q_msg_new(msg, qseq, from_channel, attempt) : NULL;
	msg_unref(msg);
	if (!m)
		return TERN_EINTERNAL;
	q_ready_push(q, m, false);
	return 0;
}

int queues_load(struct broker *b, char *why, size_t why_len)
{
	static const struct store_load_ops ops = {.queue = load_queue, .qmsg = load_qmsg};
	int rc = store_load_queues(b->store, &ops, b);
	if (rc != 0)
		snprintf(why, why_len, "cannot load queues from the data dir");
	return rc;
}

static bool any(struct queue *q, int64_t now)
{
	(void)now;
	return !list_empty(&q->ready);
}

void queues_after_load(struct broker *b)
{
	struct queue **qs;
	size_t n = q_collect(b, any, 0, &qs);
	for (size_t k = 0; k < n; k++) {
		struct queue *q = qs[k];
		struct list *pos, *tmp;
		list_foreach_safe(pos, tmp, &q->ready) {
			struct qmsg *m = container_of(pos, struct qmsg, link);
			if (m->attempt < q->max_attempts)
				continue;
			/* Its delivery number max_attempts was never acked. */
			list_remove(&m->link);
			q->nready--;
			q_dead_letter(q, m);
		}
	}
	free(qs);
}

void queues_record_inflight(struct broker *b)
{
	size_t bucket = 0;
	struct hmap_node *n = NULL;
	while ((n = hmap_next(&b->queues, &bucket, n)) != NULL) {
		struct queue *q = container_of(n, struct queue, node);
		struct list *pos;
		for (pos = q->inflight.next; pos != &q->inflight; pos = pos->next) {
			struct delivery *d = container_of(pos, struct delivery, tlink);
			q_submit(q, STORE_OP_QATTEMPT, d->m->qseq, d->m->attempt);
		}
	}
}

void queues_free(struct broker *b)
{
	size_t bucket = 0;
	struct hmap_node *n;
	while ((n = hmap_next(&b->queues, &bucket, NULL)) != NULL) {
		struct queue *q = container_of(n, struct queue, node);
		assert(list_empty(&q->consumers) && list_empty(&q->waiters));
		while (!list_empty(&q->inflight)) {
			struct delivery *d = container_of(q->inflight.next, struct delivery, tlink);
			struct qmsg *m = d->m;
			q_delivery_unlink(d);
			free(d);
			q_msg_free(m);
		}
		while (!list_empty(&q->ready)) {
			struct qmsg *m = container_of(q->ready.next, struct qmsg, link);
			list_remove(&m->link);
			q_msg_free(m);
		}
		set_bind(b, q, NULL, 0);
		free(q->dead_letter);
		hmap_del(&b->queues, n);
		free(q);
	}
}

const char *queue_name(const struct queue *q, size_t *len)
{
	*len = q->node.klen;
	return q->name;
}
