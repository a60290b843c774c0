/* The node's streaming DataPlane methods: Subscribe (many channels per stream, history
 * catch-up from from_seq, then live) and Consume (queue deliveries under a prefetch). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "node_svc_internal.h"
#include "tern_err.h"
#include "tern_limits.h"

#define DATA (&tern__data__data_plane__descriptor)

/* ---- Subscribe ---- */

struct sub_stream {
	struct list node; /* in svc->subs */
	link_call *c;
	struct node_svc *s;
	struct hmap chans; /* name -> struct sub_chan */
	struct list chan_list;
	bool ended;        /* finished by us: nothing more is sent */
};

struct hist_req;

struct sub_chan {
	struct hmap_node hn;
	struct list lnode; /* in chan_list */
	struct sub_stream *ss;
	struct broker_sub *sub;
	struct hist_req *hist; /* the history page being read, or NULL */
	uint64_t last;         /* the channel's last seq when attached */
	uint64_t from;         /* catch-up: the next seq to send */
	bool catching, first_page;
	struct tern_msg **held; /* live messages that arrived during the catch-up */
	size_t nheld, held_cap;
	size_t len;
	char name[];
};

/* Outlives its channel when the channel is dropped while the store reads: then ch is NULL. */
struct hist_req {
	struct sub_chan *ch;
};

static void sub_end(struct sub_stream *ss, int code, const char *msg)
{
	if (ss->ended)
		return;
	ss->ended = true;
	link_call_fail(ss->c, code, msg, code == LINK_UNAVAILABLE);
}

/* Sends one event. Returns 0, or -1 when the stream has ended (now or before). */
static int sub_send(struct sub_stream *ss, const Tern__Data__SubscribeEvent *ev)
{
	if (ss->ended)
		return -1;
	int rc = link_call_send(ss->c, &ev->base);
	if (rc == 0)
		return 0;
	if (rc == -EAGAIN) /* the edge resubscribes from its last seq: nothing is lost */
		sub_end(ss, LINK_UNAVAILABLE, "subscription stream behind");
	else if (rc == -EMSGSIZE)
		sub_end(ss, LINK_RESOURCE_EXHAUSTED, "message larger than the link's max message");
	else
		ss->ended = true; /* the call is ending already */
	return -1;
}

static int sub_send_msg(struct sub_stream *ss, const struct tern_msg *msg)
{
	Tern__Data__SubscribeEvent ev = TERN__DATA__SUBSCRIBE_EVENT__INIT;
	Tern__Data__Message m = TERN__DATA__MESSAGE__INIT;
	node_fill_message(&m, msg);
	ev.kind = TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_MESSAGE;
	ev.message = &m;
	int rc = sub_send(ss, &ev);
	if (rc == 0)
		ss->s->messages_out++;
	return rc;
}

static int sub_send_notice(struct sub_stream *ss, const char *chan, int kind, uint64_t seq,
			   int err, const char *why)
{
	Tern__Data__SubscribeEvent ev = TERN__DATA__SUBSCRIBE_EVENT__INIT;
	Tern__Data__Error e = TERN__DATA__ERROR__INIT;
	ev.kind = kind;
	ev.channel = (char *)chan;
	ev.seq = seq;
	if (err) {
		e.code = tern_err_code(err);
		e.message = (char *)(why && *why ? why : tern_err_str(err));
		ev.error = &e;
	}
	return sub_send(ss, &ev);
}

static void chan_drop(struct sub_chan *ch)
{
	hmap_del(&ch->ss->chans, &ch->hn);
	list_remove(&ch->lnode);
	broker_unsubscribe(ch->sub);
	if (ch->hist)
		ch->hist->ch = NULL;
	for (size_t i = 0; i < ch->nheld; i++)
		msg_unref(ch->held[i]);
	free(ch->held);
	free(ch);
}

static void chan_detach(struct sub_chan *ch, int err, const char *why)
{
	sub_send_notice(ch->ss, ch->name, TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_DETACHED, 0, err,
			why);
	chan_drop(ch);
}

static void on_hist(void *arg, int err, struct tern_msg **msgs, size_t n);

/* Reads the next history page of the catch-up. */
static void hist_next(struct sub_chan *ch)
{
	struct hist_req *hr = malloc(sizeof(*hr));
	if (!hr) {
		chan_detach(ch, TERN_EUNAVAIL, "out of memory");
		return;
	}
	hr->ch = ch;
	struct broker_hist h = {
		.chan = ch->name, .chan_len = ch->len, .after_seq = ch->from - 1,
		.before_seq = ch->last + 1, .limit = TERN_HISTORY_PAGE_MAX,
	};
	int rc = broker_history(ch->ss->s->broker, &h, on_hist, hr);
	if (rc) {
		free(hr);
		chan_detach(ch, rc, NULL);
		return;
	}
	ch->hist = hr;
}

/* The catch-up reached the attach point: the held live messages follow, in order. */
static void catchup_done(struct sub_chan *ch)
{
	ch->catching = false;
	size_t i = 0;
	for (; i < ch->nheld; i++) {
		struct tern_msg *m = ch->held[i];
		if (m->seq >= ch->from && sub_send_msg(ch->ss, m) != 0)
			break;
		msg_unref(m);
	}
	for (; i < ch->nheld; i++)
		msg_unref(ch->held[i]);
	free(ch->held);
	ch->held = NULL;
	ch->nheld = ch->held_cap = 0;
}

static void on_hist(void *arg, int err, struct tern_msg **msgs, size_t n)
{
	struct hist_req *hr = arg;
	struct sub_chan *ch = hr->ch;
	free(hr);
	if (!ch)
		goto out_free;
	ch->hist = NULL;
	if (ch->ss->ended)
		goto out_free; /* on_done drops the channel */
	if (err) {
		chan_detach(ch, err, NULL);
		goto out_free;
	}
	if (ch->first_page) {
		ch->first_page = false;
		uint64_t first = n ? msgs[0]->seq : ch->last + 1;
		if (first > ch->from) {
			if (sub_send_notice(ch->ss, ch->name, TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_GAP,
					    first, 0, NULL) != 0)
				goto out_free;
			ch->from = first;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (msgs[i]->seq < ch->from)
			continue;
		if (sub_send_msg(ch->ss, msgs[i]) != 0)
			goto out_free;
		ch->from = msgs[i]->seq + 1;
	}
	if (n == TERN_HISTORY_PAGE_MAX && ch->from <= ch->last)
		hist_next(ch);
	else
		catchup_done(ch);
out_free:
	for (size_t i = 0; i < n; i++)
		msg_unref(msgs[i]);
	free(msgs);
}

static void on_live(void *arg, struct tern_msg *msg)
{
	struct sub_chan *ch = arg;
	if (ch->ss->ended)
		return;
	if (!ch->catching) {
		sub_send_msg(ch->ss, msg);
		return;
	}
	if (ch->nheld == ch->held_cap) {
		size_t cap = ch->held_cap ? ch->held_cap * 2 : 64;
		struct tern_msg **nh = cap <= NODE_SUB_HELD_MAX
					       ? realloc(ch->held, cap * sizeof(*nh)) : NULL;
		if (!nh) {
			/* Unsubscribing inside the broker's fan-out is allowed (broker.c walk_next). */
			chan_detach(ch, TERN_EUNAVAIL, "subscription catch-up behind");
			return;
		}
		ch->held = nh;
		ch->held_cap = cap;
	}
	ch->held[ch->nheld++] = msg_ref(msg);
}

static void chan_add(struct sub_stream *ss, const Tern__Data__ChannelPosition *pos, size_t len)
{
	struct sub_chan *ch = calloc(1, sizeof(*ch) + len + 1);
	if (!ch) {
		sub_send_notice(ss, pos->channel, TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_DETACHED,
				0, TERN_EUNAVAIL, "out of memory");
		return;
	}
	ch->ss = ss;
	ch->len = len;
	memcpy(ch->name, pos->channel, len);
	uint32_t clients = pos->clients ? pos->clients : 1;
	int rc = broker_subscribe(ss->s->broker, ch->name, len, on_live, ch, clients, &ch->sub,
				  &ch->last);
	if (rc) {
		free(ch);
		sub_send_notice(ss, pos->channel, TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_DETACHED,
				0, rc, NULL);
		return;
	}
	if (hmap_put(&ss->chans, &ch->hn, ch->name, len) != 0) {
		broker_unsubscribe(ch->sub);
		free(ch);
		sub_send_notice(ss, pos->channel, TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_DETACHED,
				0, TERN_EUNAVAIL, "out of memory");
		return;
	}
	list_insert_tail(&ss->chan_list, &ch->lnode);
	if (sub_send_notice(ss, ch->name, TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_ATTACHED,
			    ch->last, 0, NULL) != 0)
		return;
	if (pos->from_seq > 0 && pos->from_seq <= ch->last) {
		ch->catching = ch->first_page = true;
		ch->from = pos->from_seq;
		hist_next(ch);
	}
}

static void on_sub_start(link_call *c, void *ud)
{
	(void)ud;
	struct node_svc *s = svc_of(c);
	struct sub_stream *ss = calloc(1, sizeof(*ss));
	if (!ss) {
		link_call_fail(c, LINK_UNAVAILABLE, "out of memory", 1);
		return;
	}
	ss->c = c;
	ss->s = s;
	hmap_init(&ss->chans);
	list_init(&ss->chan_list);
	list_insert_tail(&s->subs, &ss->node);
	link_call_set_ud(c, ss);
}

static void on_sub_msg(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)c;
	struct sub_stream *ss = ud;
	const Tern__Data__SubscribeRequest *req = (const void *)m;
	for (size_t i = 0; i < req->n_channels && ss && !ss->ended; i++) {
		const Tern__Data__ChannelPosition *pos = req->channels[i];
		size_t len = strlen(pos->channel);
		struct hmap_node *hn = hmap_get(&ss->chans, pos->channel, len);
		struct sub_chan *ch = hn ? container_of(hn, struct sub_chan, hn) : NULL;
		if (pos->add && ch)
			broker_sub_set_clients(ch->sub, pos->clients ? pos->clients : 1);
		else if (pos->add)
			chan_add(ss, pos, len);
		else if (ch)
			chan_detach(ch, 0, NULL); /* the remove's ack: DETACHED without error */
		else /* acked even when already gone, so the edge can count its removes */
			sub_send_notice(ss, pos->channel, TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_DETACHED,
					0, 0, NULL);
	}
}

static void on_sub_done(link_call *c, const link_status *st, void *ud)
{
	(void)c;
	(void)st;
	struct sub_stream *ss = ud;
	if (!ss)
		return;
	struct list *pos, *tmp;
	list_foreach_safe(pos, tmp, &ss->chan_list)
		chan_drop(container_of(pos, struct sub_chan, lnode));
	hmap_destroy(&ss->chans);
	list_remove(&ss->node);
	free(ss);
}

/* ---- Consume ---- */

/* A delivery waiting for room in the stream's send queue. */
struct pend_dlv {
	struct list node;
	struct tern_msg *msg;
	uint32_t attempt;
	bool from_channel;
	char id[];
};

struct cons_stream {
	struct list node; /* in svc->conss */
	link_call *c;
	struct node_svc *s;
	struct broker_consumer *bc;
	struct list pend;
	size_t npend;
	bool ended;
	char queue[TERN_NAME_MAX_BYTES + 1];
};

static void cons_end(struct cons_stream *cs, int code, const char *msg)
{
	if (cs->ended)
		return;
	cs->ended = true;
	link_call_fail(cs->c, code, msg, code == LINK_UNAVAILABLE);
}

/* Returns 0, -EAGAIN (queue full: keep it), or -1 (the stream ended). */
static int cons_send(struct cons_stream *cs, const char *id, struct tern_msg *msg,
		     uint32_t attempt, bool from_channel)
{
	Tern__Data__Delivery d = TERN__DATA__DELIVERY__INIT;
	Tern__Data__Message m = TERN__DATA__MESSAGE__INIT;
	node_fill_message(&m, msg);
	d.id = (char *)id;
	d.queue = cs->queue;
	d.message = &m;
	d.attempt = attempt;
	d.from_channel = from_channel;
	int rc = link_call_send(cs->c, &d.base);
	if (rc == 0 || rc == -EAGAIN)
		return rc;
	if (rc == -EMSGSIZE)
		cons_end(cs, LINK_RESOURCE_EXHAUSTED, "message larger than the link's max message");
	else
		cs->ended = true;
	return -1;
}

static void on_deliver(void *arg, const struct broker_delivery *d)
{
	struct cons_stream *cs = arg;
	if (cs->ended) /* goes back to the queue when the consumer is cancelled */
		return;
	if (list_empty(&cs->pend)) {
		int rc = cons_send(cs, d->delivery_id, d->msg, d->attempt, d->from_channel);
		if (rc != -EAGAIN)
			return;
	}
	size_t idlen = strlen(d->delivery_id);
	struct pend_dlv *p = cs->npend < NODE_CONSUME_PENDING_MAX
				     ? malloc(sizeof(*p) + idlen + 1) : NULL;
	if (!p) {
		cons_end(cs, LINK_UNAVAILABLE, "consumer stream behind");
		return;
	}
	p->msg = msg_ref(d->msg);
	p->attempt = d->attempt;
	p->from_channel = d->from_channel;
	memcpy(p->id, d->delivery_id, idlen + 1);
	list_insert_tail(&cs->pend, &p->node);
	cs->npend++;
}

static void pend_free(struct cons_stream *cs, struct pend_dlv *p)
{
	list_remove(&p->node);
	cs->npend--;
	msg_unref(p->msg);
	free(p);
}

static void on_cons_writable(link_call *c, void *ud)
{
	(void)c;
	struct cons_stream *cs = ud;
	while (cs && !cs->ended && !list_empty(&cs->pend)) {
		struct pend_dlv *p = container_of(cs->pend.next, struct pend_dlv, node);
		if (cons_send(cs, p->id, p->msg, p->attempt, p->from_channel) != 0)
			return;
		pend_free(cs, p);
	}
}

static void on_cons_start(link_call *c, void *ud)
{
	(void)ud;
	struct node_svc *s = svc_of(c);
	struct cons_stream *cs = calloc(1, sizeof(*cs));
	if (!cs) {
		link_call_fail(c, LINK_UNAVAILABLE, "out of memory", 1);
		return;
	}
	cs->c = c;
	cs->s = s;
	list_init(&cs->pend);
	list_insert_tail(&s->conss, &cs->node);
	link_call_set_ud(c, cs);
}

static void on_cons_msg(link_call *c, const ProtobufCMessage *m, void *ud)
{
	struct cons_stream *cs = ud;
	const Tern__Data__ConsumeRequest *req = (const void *)m;
	if (!cs || cs->ended)
		return;
	int rc;
	if (cs->bc) {
		if (req->prefetch == 0)
			return;
		rc = broker_consumer_set_prefetch(cs->bc, req->prefetch);
	} else {
		size_t len = strlen(req->queue);
		if (len > TERN_NAME_MAX_BYTES) {
			rc = TERN_EBADNAME;
		} else {
			memcpy(cs->queue, req->queue, len + 1);
			uint32_t prefetch = req->prefetch ? req->prefetch : TERN_QUEUE_PREFETCH_DEFAULT;
			rc = broker_consume(cs->s->broker, cs->queue, len, prefetch, on_deliver, cs,
					    &cs->bc);
			if (rc)
				cs->bc = NULL;
		}
	}
	if (rc) {
		cs->ended = true;
		node_fail(c, rc, NULL);
	}
}

static void on_cons_done(link_call *c, const link_status *st, void *ud)
{
	(void)c;
	(void)st;
	struct cons_stream *cs = ud;
	if (!cs)
		return;
	if (cs->bc) /* its unacked deliveries go back to the queue */
		broker_consumer_cancel(cs->bc);
	while (!list_empty(&cs->pend))
		pend_free(cs, container_of(cs->pend.next, struct pend_dlv, node));
	list_remove(&cs->node);
	free(cs);
}

/* ---- routes and drain ---- */

static const link_call_cbs sub_cbs = {
	.on_start = on_sub_start, .on_msg = on_sub_msg, .on_done = on_sub_done,
};
static const link_call_cbs cons_cbs = {
	.on_start = on_cons_start, .on_msg = on_cons_msg, .on_writable = on_cons_writable,
	.on_done = on_cons_done,
};

int node_stream_routes(link_router *r)
{
	int rc = link_router_add(r, DATA, "Subscribe", &sub_cbs, NULL);
	return rc ? rc : link_router_add(r, DATA, "Consume", &cons_cbs, NULL);
}

void node_streams_drain(struct node_svc *s)
{
	struct list *pos;
	for (pos = s->subs.next; pos != &s->subs; pos = pos->next)
		sub_end(container_of(pos, struct sub_stream, node), LINK_UNAVAILABLE,
			"node draining");
	for (pos = s->conss.next; pos != &s->conss; pos = pos->next)
		cons_end(container_of(pos, struct cons_stream, node), LINK_UNAVAILABLE,
			 "node draining");
}
