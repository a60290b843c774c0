#include "broker.h"

#include <assert.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern_err.h"
#include "hmap.h"
#include "tern_limits.h"
#include "list.h"
#include "names.h"
#include "store.h"
#include "broker_internal.h"

struct pub_op {
	struct store_op op;
	struct broker *b;
	struct chan *ch;
	broker_pub_cb cb;
	void *arg;
	char idem[TERN_IDEM_KEY_MAX_BYTES];
	/* queues bound to the channel: copies made in the same transaction */
	struct queue **targets;
	const char **names;
	size_t *lens;
	uint64_t *qseqs;
};

struct hist_op {
	struct store_op op;
	broker_hist_cb cb;
	void *arg;
};

struct sweep_op {
	struct store_op op;
	void (*cb)(void *arg, int err);
	void *arg;
};

static int64_t now_ms(struct broker *b) { return b->cfg.now_ms(b->cfg.clock_arg); }

static struct chan *chan_get(struct broker *b, const char *name, size_t len, bool create)
{
	struct hmap_node *n = hmap_get(&b->chans, name, len);
	if (n || !create)
		return n ? container_of(n, struct chan, node) : NULL;
	struct chan *ch = calloc(1, sizeof(*ch) + len + 1);
	if (!ch)
		return NULL;
	memcpy(ch->name, name, len);
	ch->b = b;
	list_init(&ch->subs);
	/* No write for this channel is in flight (every write passes through
	 * this object), so the store's committed seq is exact here. */
	ch->last_seq = store_last_seq(b->store, name, len);
	if (hmap_put(&b->chans, &ch->node, ch->name, len) != 0) {
		free(ch);
		return NULL;
	}
	b->stats.channels_active++;
	return ch;
}

static void chan_release_if_idle(struct chan *ch)
{
	if (ch->inflight || !list_empty(&ch->subs))
		return;
	hmap_del(&ch->b->chans, &ch->node);
	ch->b->stats.channels_active--;
	free(ch);
}

static void fan_out(struct chan *ch, struct tern_msg *m)
{
	struct broker *b = ch->b;
	struct list *pos = ch->subs.next;
	while (pos != &ch->subs) {
		struct broker_sub *sub = container_of(pos, struct broker_sub, link);
		b->walk_next = pos->next;
		if (m->seq > sub->after_seq)
			sub->fn(sub->arg, m);
		pos = b->walk_next;
	}
	b->walk_next = NULL;
}

static void pub_done(struct store_op *op)
{
	struct pub_op *p = container_of(op, struct pub_op, op);
	struct chan *ch = p->ch;
	struct tern_msg *m = op->msg;

	if (op->err != 0) {
		p->b->stats.publish_errors++;
		p->cb(p->arg, op->err, 0, NULL);
	} else if (op->dup) {
		p->cb(p->arg, 0, op->dup_seq, op->dup_id);
	} else {
		assert(m->seq == ch->last_seq + 1);
		ch->last_seq = m->seq;
		p->b->stats.messages_in++;
		fan_out(ch, m);
		p->cb(p->arg, 0, m->seq, m->id);
	}
	if (op->ncopies)
		queues_copies_committed(p->b, p->targets, p->qseqs, op->ncopies,
					op->err == 0 && !op->dup ? m : NULL);
	msg_unref(m);
	/* Only now: a callback above may have dropped the last subscriber. */
	ch->inflight--;
	chan_release_if_idle(ch);
	free(p);
}

/* Allocates the op with room for n binding copies. */
static struct pub_op *pub_op_new(size_t n)
{
	size_t sz = sizeof(struct pub_op) +
		    n * (sizeof(struct queue *) + sizeof(char *) + sizeof(size_t) + sizeof(uint64_t));
	struct pub_op *po = calloc(1, sz);
	if (!po)
		return NULL;
	char *p = (char *)(po + 1);
	po->qseqs = (uint64_t *)p;
	p += n * sizeof(uint64_t);
	po->targets = (struct queue **)p;
	p += n * sizeof(struct queue *);
	po->names = (const char **)p;
	p += n * sizeof(char *);
	po->lens = (size_t *)p;
	return po;
}

static int check_pub(const struct broker *b, const struct broker_pub *p, const char **why)
{
	int rc = names_check_channel(p->chan, p->chan_len, why);
	if (rc != 0)
		return rc;
	if (p->data_len > b->cfg.max_message_bytes) {
		*why = "message data is larger than the limit";
		return TERN_ETOOLARGE;
	}
	if (p->name && p->name_len > TERN_EVENT_NAME_MAX_BYTES) {
		*why = "event name is longer than 255 bytes";
		return TERN_EBADREQ;
	}
	if (p->idem_key && (p->idem_len == 0 || p->idem_len > TERN_IDEM_KEY_MAX_BYTES)) {
		*why = "idempotency_key must be 1-128 bytes";
		return TERN_EBADREQ;
	}
	if (p->enc != TERN_ENC_JSON && p->enc != TERN_ENC_BASE64) {
		*why = "unknown encoding";
		return TERN_EBADREQ;
	}
	return 0;
}

int broker_publish(struct broker *b, const struct broker_pub *p, broker_pub_cb cb, void *arg,
		   const char **why)
{
	const char *dummy;
	if (!why)
		why = &dummy;
	int rc = check_pub(b, p, why);
	if (rc != 0)
		return rc;
	if (b->closing) {
		*why = "shutting down";
		return TERN_EUNAVAIL;
	}
	struct queue **targets;
	size_t ncopies;
	rc = queues_bound_to(b, p->chan, p->chan_len, &targets, &ncopies);
	if (rc != 0) {
		*why = rc == TERN_ERATELIMIT ? "a queue bound to this channel is full" : "out of memory";
		return rc;
	}
	struct pub_op *po = pub_op_new(ncopies);
	struct tern_msg *m = msg_new(p->chan, p->chan_len, p->name, p->name_len, p->data,
				     p->data_len, p->enc);
	struct chan *ch = po && m ? chan_get(b, p->chan, p->chan_len, true) : NULL;
	if (!ch) {
		queues_copies_committed(b, targets, NULL, ncopies, NULL);
		free(targets);
		free(po);
		msg_unref(m);
		*why = "out of memory";
		return TERN_EUNAVAIL;
	}
	for (size_t i = 0; i < ncopies; i++) {
		po->targets[i] = targets[i];
		po->names[i] = queue_name(targets[i], &po->lens[i]);
	}
	free(targets);
	po->op.copies = po->names;
	po->op.copy_lens = po->lens;
	po->op.copy_qseqs = po->qseqs;
	po->op.ncopies = ncopies;
	m->ts_ms = now_ms(b);
	snprintf(m->id, sizeof(m->id), "%s-%llx", b->id_prefix,
		 (unsigned long long)++b->id_counter);
	po->op.kind = STORE_OP_PUBLISH;
	po->op.done = pub_done;
	po->op.msg = m;
	if (p->idem_key) {
		memcpy(po->idem, p->idem_key, p->idem_len);
		po->op.idem_key = po->idem;
		po->op.idem_len = p->idem_len;
	}
	po->b = b;
	po->ch = ch;
	po->cb = cb;
	po->arg = arg;
	ch->inflight++;
	rc = store_submit(b->store, &po->op);
	if (rc != 0) {
		queues_copies_committed(b, po->targets, NULL, ncopies, NULL);
		ch->inflight--;
		chan_release_if_idle(ch);
		msg_unref(m);
		free(po);
		*why = "the store is behind; retry";
		return rc;
	}
	return 0;
}

int broker_subscribe(struct broker *b, const char *chan, size_t len, broker_msg_fn fn, void *arg,
		     uint32_t clients, struct broker_sub **out, uint64_t *last_seq)
{
	int rc = names_check_channel(chan, len, NULL);
	if (rc != 0)
		return rc;
	struct broker_sub *sub = calloc(1, sizeof(*sub));
	struct chan *ch = sub ? chan_get(b, chan, len, true) : NULL;
	if (!ch) {
		free(sub);
		return TERN_EUNAVAIL;
	}
	sub->ch = ch;
	sub->fn = fn;
	sub->arg = arg;
	sub->clients = clients;
	sub->after_seq = ch->last_seq;
	ch->clients += clients;
	list_insert_tail(&ch->subs, &sub->link);
	*out = sub;
	*last_seq = ch->last_seq;
	return 0;
}

void broker_sub_set_clients(struct broker_sub *sub, uint32_t clients)
{
	sub->ch->clients = sub->ch->clients - sub->clients + clients;
	sub->clients = clients;
}

void broker_unsubscribe(struct broker_sub *sub)
{
	struct chan *ch = sub->ch;
	struct broker *b = ch->b;
	if (b->walk_next == &sub->link)
		b->walk_next = sub->link.next;
	list_remove(&sub->link);
	ch->clients -= sub->clients;
	free(sub);
	chan_release_if_idle(ch);
}

static void hist_done(struct store_op *op)
{
	struct hist_op *h = container_of(op, struct hist_op, op);
	h->cb(h->arg, op->err, op->msgs, op->nmsgs);
	free(h);
}

int broker_history(struct broker *b, const struct broker_hist *req, broker_hist_cb cb, void *arg)
{
	int rc = names_check_channel(req->chan, req->chan_len, NULL);
	if (rc != 0)
		return rc;
	if (req->limit == 0 || req->limit > TERN_HISTORY_PAGE_MAX)
		return TERN_EBADREQ;
	struct hist_op *h = calloc(1, sizeof(*h) + req->chan_len + 1);
	if (!h)
		return TERN_EUNAVAIL;
	char *name = (char *)(h + 1);
	memcpy(name, req->chan, req->chan_len);
	h->op.kind = STORE_OP_HISTORY;
	h->op.done = hist_done;
	h->op.chan = name;
	h->op.chan_len = req->chan_len;
	h->op.after_seq = req->after_seq;
	h->op.before_seq = req->before_seq;
	h->op.limit = req->limit;
	h->op.backwards = req->backwards;
	h->cb = cb;
	h->arg = arg;
	rc = store_submit(b->store, &h->op);
	if (rc != 0)
		free(h);
	return rc;
}

void broker_channel_info(struct broker *b, const char *chan, size_t len, uint64_t *last_seq,
			 uint64_t *subscribers)
{
	struct chan *ch = chan_get(b, chan, len, false);
	*last_seq = ch ? ch->last_seq : store_last_seq(b->store, chan, len);
	*subscribers = ch ? ch->clients : 0;
}

static void sweep_done(struct store_op *op)
{
	struct sweep_op *s = container_of(op, struct sweep_op, op);
	if (s->cb)
		s->cb(s->arg, op->err);
	free(s);
}

int broker_sweep(struct broker *b, void (*cb)(void *arg, int err), void *arg)
{
	struct sweep_op *s = calloc(1, sizeof(*s));
	if (!s)
		return TERN_EUNAVAIL;
	s->op.kind = STORE_OP_SWEEP;
	s->op.done = sweep_done;
	s->cb = cb;
	s->arg = arg;
	int rc = store_submit(b->store, &s->op);
	if (rc != 0)
		free(s);
	return rc;
}

void broker_poll(struct broker *b)
{
	store_poll(b->store);
	queues_poll(b);
}

int64_t broker_now_ms(struct broker *b) { return b->cfg.now_ms(b->cfg.clock_arg); }

void broker_get_stats(struct broker *b, struct broker_stats *out) { *out = b->stats; }

void broker_store_stats(struct broker *b, struct store_stats *out)
{
	store_get_stats(b->store, out);
}

static int64_t wall_ms(void *arg)
{
	(void)arg;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int broker_open(struct broker **out, const struct broker_config *cfg, char *why, size_t why_len)
{
	struct broker *b = calloc(1, sizeof(*b));
	if (!b) {
		snprintf(why, why_len, "out of memory");
		return TERN_EINTERNAL;
	}
	b->cfg = *cfg;
	if (!b->cfg.now_ms)
		b->cfg.now_ms = wall_ms;
	if (!b->cfg.max_message_bytes)
		b->cfg.max_message_bytes = TERN_MESSAGE_BYTES_DEFAULT;
	hmap_init(&b->chans);
	hmap_init(&b->queues);
	hmap_init(&b->deliveries);
	list_init(&b->bound_queues);
	list_init(&b->ready_pulls);
	list_init(&b->dispatch_pending);
	/* Message ids: a random per-process prefix and a counter, so ids are
	 * unique across restarts and nodes without coordination. */
	unsigned char rnd[8];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		snprintf(why, why_len, "no randomness for message ids");
		free(b);
		return TERN_EINTERNAL;
	}
	for (int i = 0; i < 8; i++)
		snprintf(b->id_prefix + 2 * i, 3, "%02x", rnd[i]);

	struct store_config sc = {
		.dir = cfg->data_dir,
		.sync_full = cfg->sync_full,
		.history_messages = cfg->history_messages,
		.history_age_ms = cfg->history_age_ms,
		.idem_window_ms = cfg->idem_window_ms,
		.sweep_interval_ms = cfg->sweep_interval_ms,
		.queue_max_bytes = cfg->store_queue_max_bytes,
		.wal_ckpt_pages = cfg->wal_ckpt_pages,
		.wal_max_pages = cfg->wal_max_pages,
		.now_ms = b->cfg.now_ms,
		.clock_arg = cfg->clock_arg,
		.notify = cfg->notify,
		.notify_arg = cfg->notify_arg,
	};
	int rc = store_open(&b->store, &sc, why, why_len);
	if (rc != 0)
		goto out_free;
	rc = queues_load(b, why, why_len);
	if (rc == 0 && (rc = store_start(b->store)) != 0)
		snprintf(why, why_len, "cannot start the store thread");
	if (rc != 0)
		goto out_close_store;
	queues_after_load(b);
	*out = b;
	return 0;

out_close_store:
	queues_free(b);
	store_close(b->store);
	store_free(b->store);
out_free:
	hmap_destroy(&b->deliveries);
	hmap_destroy(&b->queues);
	hmap_destroy(&b->chans);
	free(b);
	return rc;
}

void broker_close(struct broker *b)
{
	b->closing = true;
	queues_record_inflight(b);
	store_close(b->store);
	store_poll(b->store); /* publishers get their answers; channels drain */
	queues_poll(b);
	assert(b->chans.count == 0);
	queues_free(b);
	store_free(b->store);
	hmap_destroy(&b->chans);
	hmap_destroy(&b->queues);
	hmap_destroy(&b->deliveries);
	free(b);
}
