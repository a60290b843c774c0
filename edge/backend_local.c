#include "backend_local.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "tern_err.h"
#include "list.h"

/* A deferred completion: runs on the next loop turn from the idle handle. */
struct deferred {
	struct list link;
	void (*run)(struct deferred *d);
};

struct backend_local {
	uv_idle_t idle;
	struct broker *broker;
	struct list pending;
	size_t nsubs;
};

struct backend_sub {
	struct deferred d;
	struct backend_local *bl;
	struct broker_sub *sub;
	uint64_t last_seq;
	void (*ready)(void *arg, int err, uint64_t last_seq);
	void *ready_arg;
	bool ready_pending;
};

struct info_call {
	struct deferred d;
	uint64_t last_seq, subs;
	void (*cb)(void *arg, int err, uint64_t last_seq, uint64_t subs);
	void *arg;
};

static void on_idle(uv_idle_t *h)
{
	struct backend_local *bl = h->data;
	struct list batch;
	list_init(&batch);
	/* Take the current list only: work deferred by these runs waits a turn. */
	if (!list_empty(&bl->pending)) {
		batch.next = bl->pending.next;
		batch.prev = bl->pending.prev;
		batch.next->prev = &batch;
		batch.prev->next = &batch;
		list_init(&bl->pending);
	}
	while (!list_empty(&batch)) {
		struct deferred *d = container_of(batch.next, struct deferred, link);
		list_remove(&d->link);
		d->run(d);
	}
	if (list_empty(&bl->pending))
		uv_idle_stop(&bl->idle);
}

static void defer(struct backend_local *bl, struct deferred *d)
{
	if (list_empty(&bl->pending))
		uv_idle_start(&bl->idle, on_idle);
	list_insert_tail(&bl->pending, &d->link);
}

static int l_publish(void *be, const struct broker_pub *p, broker_pub_cb cb, void *arg,
		     const char **why)
{
	struct backend_local *bl = be;
	return broker_publish(bl->broker, p, cb, arg, why);
}

static void sub_ready(struct deferred *d)
{
	struct backend_sub *s = container_of(d, struct backend_sub, d);
	s->ready_pending = false;
	s->ready(s->ready_arg, 0, s->last_seq);
}

static int l_subscribe(void *be, const char *chan, size_t len, uint32_t clients,
		       broker_msg_fn on_msg, void *msg_arg,
		       void (*ready)(void *arg, int err, uint64_t last_seq), void *ready_arg,
		       struct backend_sub **out)
{
	struct backend_local *bl = be;
	struct backend_sub *s = calloc(1, sizeof(*s));
	if (!s)
		return TERN_EUNAVAIL;
	int rc = broker_subscribe(bl->broker, chan, len, on_msg, msg_arg, clients, &s->sub,
				  &s->last_seq);
	if (rc != 0) {
		free(s);
		return rc;
	}
	s->bl = bl;
	s->ready = ready;
	s->ready_arg = ready_arg;
	s->ready_pending = true;
	s->d.run = sub_ready;
	bl->nsubs++;
	defer(bl, &s->d);
	*out = s;
	return 0;
}

static void l_set_clients(void *be, struct backend_sub *s, uint32_t clients)
{
	(void)be;
	if (s->sub)
		broker_sub_set_clients(s->sub, clients);
}

static void l_unsubscribe(void *be, struct backend_sub *s)
{
	(void)be;
	broker_unsubscribe(s->sub);
	s->sub = NULL;
	if (s->ready_pending)
		list_remove(&s->d.link); /* ready never runs */
	s->bl->nsubs--;
	free(s);
}

static int l_history(void *be, const struct broker_hist *h, broker_hist_cb cb, void *arg)
{
	struct backend_local *bl = be;
	return broker_history(bl->broker, h, cb, arg);
}

static void info_run(struct deferred *d)
{
	struct info_call *c = container_of(d, struct info_call, d);
	c->cb(c->arg, 0, c->last_seq, c->subs);
	free(c);
}

static int l_channel_info(void *be, const char *chan, size_t len,
			  void (*cb)(void *arg, int err, uint64_t last_seq, uint64_t subs),
			  void *arg)
{
	struct backend_local *bl = be;
	struct info_call *c = calloc(1, sizeof(*c));
	if (!c)
		return TERN_EUNAVAIL;
	broker_channel_info(bl->broker, chan, len, &c->last_seq, &c->subs);
	c->cb = cb;
	c->arg = arg;
	c->d.run = info_run;
	defer(bl, &c->d);
	return 0;
}

static bool l_ready(void *be)
{
	(void)be;
	return true;
}

static int l_enqueue(void *be, const struct broker_enq *e, broker_pub_cb cb, void *arg,
		     const char **why)
{
	struct backend_local *bl = be;
	return broker_enqueue(bl->broker, e, cb, arg, why);
}

/* The backend's consumer and pull handles are the broker's own. */
static int l_consume(void *be, const char *queue, size_t len, uint32_t prefetch,
		     broker_deliver_fn fn, void *arg, struct backend_consumer **out)
{
	struct backend_local *bl = be;
	return broker_consume(bl->broker, queue, len, prefetch, fn, arg,
			      (struct broker_consumer **)out);
}

static int l_set_prefetch(void *be, struct backend_consumer *c, uint32_t prefetch)
{
	(void)be;
	return broker_consumer_set_prefetch((struct broker_consumer *)c, prefetch);
}

static void l_cancel(void *be, struct backend_consumer *c)
{
	(void)be;
	broker_consumer_cancel((struct broker_consumer *)c);
}

struct err_call {
	struct deferred d;
	int err;
	void (*cb)(void *arg, int err);
	void *arg;
};

static void err_run(struct deferred *d)
{
	struct err_call *c = container_of(d, struct err_call, d);
	c->cb(c->arg, c->err);
	free(c);
}

/* Runs cb(arg, err) on the next loop turn. */
static int defer_err(struct backend_local *bl, int err, void (*cb)(void *arg, int err), void *arg)
{
	struct err_call *c = calloc(1, sizeof(*c));
	if (!c)
		return TERN_EUNAVAIL;
	c->err = err;
	c->cb = cb;
	c->arg = arg;
	c->d.run = err_run;
	defer(bl, &c->d);
	return 0;
}

static int l_settle(void *be, const char *queue, size_t qlen, const char *id, size_t idlen,
		    bool ack, bool requeue, void (*cb)(void *arg, int err), void *arg)
{
	struct backend_local *bl = be;
	int err = ack ? broker_ack(bl->broker, queue, qlen, id, idlen)
		      : broker_nack(bl->broker, queue, qlen, id, idlen, requeue);
	return defer_err(bl, err, cb, arg);
}

static int l_pull(void *be, const char *queue, size_t len, uint32_t max, uint64_t wait_ms,
		  broker_pull_cb cb, void *arg, struct backend_pull **out)
{
	struct backend_local *bl = be;
	return broker_pull(bl->broker, queue, len, max, wait_ms, cb, arg,
			   (struct broker_pull **)out);
}

static void l_pull_cancel(void *be, struct backend_pull *p)
{
	(void)be;
	broker_pull_cancel((struct broker_pull *)p);
}

static int l_queue_configure(void *be, const char *queue, size_t len,
			     const struct broker_qconf *conf, void (*cb)(void *arg, int err),
			     void *arg, const char **why)
{
	struct backend_local *bl = be;
	return broker_queue_configure(bl->broker, queue, len, conf, cb, arg, why);
}

struct qinfo_call {
	struct deferred d;
	struct backend_local *bl;
	void (*cb)(void *arg, int err, const struct broker_qinfo *info);
	void *arg;
	size_t len;
	char name[];
};

static void qinfo_run(struct deferred *d)
{
	struct qinfo_call *c = container_of(d, struct qinfo_call, d);
	struct broker_qinfo info;
	int err = broker_queue_info(c->bl->broker, c->name, c->len, &info);
	c->cb(c->arg, err, err ? NULL : &info);
	free(c);
}

static int l_queue_info(void *be, const char *queue, size_t len,
			void (*cb)(void *arg, int err, const struct broker_qinfo *info), void *arg)
{
	struct backend_local *bl = be;
	struct qinfo_call *c = calloc(1, sizeof(*c) + len + 1);
	if (!c)
		return TERN_EUNAVAIL;
	memcpy(c->name, queue, len);
	c->len = len;
	c->bl = bl;
	c->cb = cb;
	c->arg = arg;
	c->d.run = qinfo_run;
	defer(bl, &c->d);
	return 0;
}

const struct backend_ops backend_local_ops = {
	.publish = l_publish,
	.subscribe = l_subscribe,
	.set_clients = l_set_clients,
	.unsubscribe = l_unsubscribe,
	.history = l_history,
	.channel_info = l_channel_info,
	.ready = l_ready,
	.enqueue = l_enqueue,
	.consume = l_consume,
	.set_prefetch = l_set_prefetch,
	.cancel = l_cancel,
	.settle = l_settle,
	.pull = l_pull,
	.pull_cancel = l_pull_cancel,
	.queue_configure = l_queue_configure,
	.queue_info = l_queue_info,
};

struct backend_local *backend_local_new(uv_loop_t *loop, struct broker *b)
{
	struct backend_local *bl = calloc(1, sizeof(*bl));
	if (!bl)
		return NULL;
	bl->broker = b;
	list_init(&bl->pending);
	uv_idle_init(loop, &bl->idle);
	bl->idle.data = bl;
	return bl;
}

static void on_closed(uv_handle_t *h) { free(h->data); }

void backend_local_close(struct backend_local *bl)
{
	/* Deferred completions still queued run now, so no caller waits forever. */
	on_idle(&bl->idle);
	assert(list_empty(&bl->pending));
	assert(bl->nsubs == 0);
	uv_close((uv_handle_t *)&bl->idle, on_closed);
}
