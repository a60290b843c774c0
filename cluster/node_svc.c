/* The node's services over links: links and their bookkeeping, drain, metrics, the unary
 * DataPlane methods and the ControlPlane. Subscribe and Consume are in node_svc_stream.c. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "node_svc_internal.h"
#include "tern/control.pb-c.h"
#include "tern_err.h"
#include "tern_limits.h"

#define DATA (&tern__data__data_plane__descriptor)
#define CONTROL (&tern__control__control_plane__descriptor)

/* ---- errors and messages ---- */

static int link_code_of(int err)
{
	int st = tern_err_status(err);
	if (st == 503)
		return LINK_UNAVAILABLE;
	if (st == 404)
		return LINK_NOT_FOUND;
	if (st == 413 || st == 429)
		return LINK_RESOURCE_EXHAUSTED;
	if (st == 400)
		return LINK_INVALID_ARGUMENT;
	return LINK_INTERNAL;
}

void node_fail(link_call *c, int err, const char *why)
{
	Tern__Data__Error e = TERN__DATA__ERROR__INIT;
	char msg[LINK_STATUS_MSG_MAX];
	uint8_t detail[LINK_STATUS_MSG_MAX + 16];
	snprintf(msg, sizeof(msg), "%s", why && *why ? why : tern_err_str(err));
	e.code = tern_err_code(err);
	e.message = msg;
	/* msg is below LINK_STATUS_MSG_MAX bytes: the packed Error fits detail. */
	size_t n = tern__data__error__pack(&e, detail);
	link_status st = {.code = link_code_of(err), .retryable = tern_err_status(err) == 503,
			  .message = msg, .detail = detail, .detail_len = n};
	link_call_finish(c, &st);
}

void node_fill_message(Tern__Data__Message *m, const struct tern_msg *msg)
{
	/* The tern_msg's strings are NUL-terminated (msg_new), so they serve as protobuf strings. */
	m->channel = (char *)msg->chan;
	m->seq = msg->seq;
	m->id = (char *)msg->id;
	m->has_name = msg->has_name;
	m->name = msg->has_name ? (char *)msg->name : (char *)"";
	m->data.data = (uint8_t *)msg->data;
	m->data.len = msg->data_len;
	m->encoding = msg->enc == TERN_ENC_BASE64 ? (char *)"base64" : (char *)"";
	m->ts_ms = msg->ts_ms > 0 ? (uint64_t)msg->ts_ms : 0;
}

static int enc_of(const char *encoding)
{
	return encoding && strcmp(encoding, "base64") == 0 ? TERN_ENC_BASE64 : TERN_ENC_JSON;
}

/* Replies, or fails the call when the reply cannot be sent (over the peer's max message). */
static void reply(link_call *c, const ProtobufCMessage *m)
{
	int rc = link_call_reply(c, m);
	if (rc == -EMSGSIZE)
		node_fail(c, TERN_ETOOLARGE, "response larger than the link's max message");
	else if (rc < 0 && rc != -ESHUTDOWN)
		node_fail(c, TERN_EINTERNAL, "cannot queue the response");
}

/* ---- unary calls that wait for the broker ----
 * The call's ud is a struct pending while the broker works; if the call ends first (cancel,
 * link death) on_done clears p->c and the broker's callback frees p. */

struct pending {
	link_call *c;
	struct broker_pull *pull;
	uint32_t limit; /* History: the page size asked for */
	char queue[TERN_NAME_MAX_BYTES + 1]; /* Pull: the deliveries' queue */
};

static struct pending *pending_new(link_call *c)
{
	if (link_call_ud(c)) { /* a second request on a unary call: the first one is pending */
		node_fail(c, TERN_EBADREQ, "one request per call");
		return NULL;
	}
	struct pending *p = calloc(1, sizeof(*p));
	if (!p) {
		node_fail(c, TERN_EUNAVAIL, "out of memory");
		return NULL;
	}
	p->c = c;
	link_call_set_ud(c, p);
	return p;
}

/* Detaches p from its call (which then ends on its own) and frees it. Returns the call, or
 * NULL when it already ended. */
static link_call *pending_take(struct pending *p)
{
	link_call *c = p->c;
	if (c)
		link_call_set_ud(c, NULL);
	free(p);
	return c;
}

/* After p was handed to a broker call that returned rc: a refusal (its callback never runs)
 * ends the call now with rc and why. */
static void pending_started(struct pending *p, int rc, const char *why)
{
	if (rc != 0)
		node_fail(pending_take(p), rc, why);
}

static void pending_done(link_call *c, const link_status *st, void *ud)
{
	(void)c;
	(void)st;
	struct pending *p = ud;
	if (!p)
		return;
	if (p->pull) { /* the edge went away before the pull's answer: withdraw it */
		broker_pull_cancel(p->pull);
		free(p);
		return;
	}
	p->c = NULL; /* the broker's callback frees p */
}

static void publish_cb(void *arg, int err, uint64_t seq, const char *id)
{
	link_call *c = pending_take(arg);
	if (!c)
		return;
	if (err) {
		node_fail(c, err, NULL);
		return;
	}
	Tern__Data__PublishResponse r = TERN__DATA__PUBLISH_RESPONSE__INIT;
	r.first_seq = r.last_seq = seq;
	r.id = (char *)(id ? id : "");
	reply(c, &r.base);
}

static void on_publish(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)ud;
	const Tern__Data__PublishRequest *req = (const void *)m;
	if (req->n_messages != 1) {
		node_fail(c, TERN_EBADREQ, "a publish carries exactly one message");
		return;
	}
	const Tern__Data__Message *msg = req->messages[0];
	const char *chan = *req->channel ? req->channel : msg->channel;
	struct broker_pub p = {
		.chan = chan, .chan_len = strlen(chan),
		.name = msg->has_name ? msg->name : NULL,
		.name_len = msg->has_name ? strlen(msg->name) : 0,
		.data = msg->data.data, .data_len = msg->data.len,
		.enc = enc_of(msg->encoding),
		.idem_key = *req->idempotency_key ? req->idempotency_key : NULL,
		.idem_len = strlen(req->idempotency_key),
	};
	struct pending *pd = pending_new(c);
	if (!pd)
		return;
	const char *why = NULL;
	int rc = broker_publish(svc_of(c)->broker, &p, publish_cb, pd, &why);
	pending_started(pd, rc, why);
}

static void enqueue_cb(void *arg, int err, uint64_t seq, const char *id)
{
	(void)seq;
	link_call *c = pending_take(arg);
	if (!c)
		return;
	if (err) {
		node_fail(c, err, NULL);
		return;
	}
	Tern__Data__EnqueueResponse r = TERN__DATA__ENQUEUE_RESPONSE__INIT;
	r.id = (char *)(id ? id : "");
	reply(c, &r.base);
}

static void on_enqueue(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)ud;
	const Tern__Data__EnqueueRequest *req = (const void *)m;
	struct broker_enq e = {
		.queue = req->queue, .queue_len = strlen(req->queue),
		.data = req->data.data, .data_len = req->data.len,
		.enc = enc_of(req->encoding),
		.idem_key = *req->idempotency_key ? req->idempotency_key : NULL,
		.idem_len = strlen(req->idempotency_key),
	};
	struct pending *pd = pending_new(c);
	if (!pd)
		return;
	const char *why = NULL;
	int rc = broker_enqueue(svc_of(c)->broker, &e, enqueue_cb, pd, &why);
	pending_started(pd, rc, why);
}

static void on_settle(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)ud;
	const Tern__Data__SettleRequest *req = (const void *)m;
	struct broker *b = svc_of(c)->broker;
	size_t qlen = strlen(req->queue);
	char **nf = req->n_ids ? calloc(req->n_ids, sizeof(*nf)) : NULL;
	if (req->n_ids && !nf) {
		node_fail(c, TERN_EUNAVAIL, "out of memory");
		return;
	}
	Tern__Data__SettleResponse r = TERN__DATA__SETTLE_RESPONSE__INIT;
	r.not_found = nf;
	for (size_t i = 0; i < req->n_ids; i++) {
		const char *id = req->ids[i];
		int err = req->ack ? broker_ack(b, req->queue, qlen, id, strlen(id))
				   : broker_nack(b, req->queue, qlen, id, strlen(id), req->requeue);
		if (err == TERN_ENOTFOUND)
			nf[r.n_not_found++] = (char *)id;
		else if (err) {
			free(nf);
			node_fail(c, err, NULL);
			return;
		}
	}
	reply(c, &r.base);
	free(nf);
}

static void fill_delivery(Tern__Data__Delivery *d, Tern__Data__Message *m,
			  const struct broker_delivery *bd, const char *queue)
{
	node_fill_message(m, bd->msg);
	d->id = (char *)bd->delivery_id;
	d->queue = (char *)queue;
	d->message = m;
	d->attempt = bd->attempt;
	d->from_channel = bd->from_channel;
}

static void pull_cb(void *arg, int err, const struct broker_delivery *ds, size_t n)
{
	struct pending *p = arg;
	p->pull = NULL;
	if (!p->c) { /* cannot happen: on_done withdraws the pull */
		free(p);
		return;
	}
	char queue[sizeof(p->queue)];
	memcpy(queue, p->queue, sizeof(queue));
	link_call *c = pending_take(p);
	if (err) {
		node_fail(c, err, NULL);
		return;
	}
	Tern__Data__PullResponse r = TERN__DATA__PULL_RESPONSE__INIT;
	Tern__Data__Delivery *dv = n ? calloc(n, sizeof(*dv)) : NULL;
	Tern__Data__Delivery **dp = n ? calloc(n, sizeof(*dp)) : NULL;
	Tern__Data__Message *mv = n ? calloc(n, sizeof(*mv)) : NULL;
	if (n && (!dv || !dp || !mv)) {
		/* The deliveries stay in flight and come back after their ack timeout. */
		node_fail(c, TERN_EUNAVAIL, "out of memory");
		goto out_free;
	}
	for (size_t i = 0; i < n; i++) {
		tern__data__delivery__init(&dv[i]);
		tern__data__message__init(&mv[i]);
		fill_delivery(&dv[i], &mv[i], &ds[i], queue);
		dp[i] = &dv[i];
	}
	r.deliveries = dp;
	r.n_deliveries = n;
	reply(c, &r.base);
out_free:
	free(mv);
	free(dp);
	free(dv);
}

static void on_pull(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)ud;
	const Tern__Data__PullRequest *req = (const void *)m;
	size_t qlen = strlen(req->queue);
	if (qlen > TERN_NAME_MAX_BYTES) {
		node_fail(c, TERN_EBADNAME, "queue name too long");
		return;
	}
	struct pending *pd = pending_new(c);
	if (!pd)
		return;
	memcpy(pd->queue, req->queue, qlen + 1);
	int rc = broker_pull(svc_of(c)->broker, req->queue, qlen, req->max, req->wait_ms, pull_cb,
			     pd, &pd->pull);
	if (rc)
		pd->pull = NULL;
	pending_started(pd, rc, NULL);
}

static void configure_cb(void *arg, int err)
{
	link_call *c = pending_take(arg);
	if (!c)
		return;
	if (err) {
		node_fail(c, err, NULL);
		return;
	}
	Tern__Data__QueueConfigResponse r = TERN__DATA__QUEUE_CONFIG_RESPONSE__INIT;
	reply(c, &r.base);
}

static void on_configure(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)ud;
	const Tern__Data__QueueConfig *req = (const void *)m;
	if (req->n_bind > TERN_QUEUE_BINDS_MAX) {
		node_fail(c, TERN_EBADREQ, "too many bind patterns");
		return;
	}
	size_t lens[TERN_QUEUE_BINDS_MAX];
	for (size_t i = 0; i < req->n_bind; i++)
		lens[i] = strlen(req->bind[i]);
	struct broker_qconf q = {
		.has_ack_timeout = req->has_ack_timeout, .ack_timeout_ms = req->ack_timeout_ms,
		.has_max_attempts = req->has_max_attempts, .max_attempts = req->max_attempts,
		.has_dead_letter = req->has_dead_letter, .dead_letter = req->dead_letter,
		.dead_letter_len = strlen(req->dead_letter),
		.has_bind = req->has_bind, .bind = (const char *const *)req->bind,
		.bind_lens = lens, .nbind = req->n_bind,
	};
	struct pending *pd = pending_new(c);
	if (!pd)
		return;
	const char *why = NULL;
	int rc = broker_queue_configure(svc_of(c)->broker, req->queue, strlen(req->queue), &q,
					configure_cb, pd, &why);
	pending_started(pd, rc, why);
}

static void on_queue_info(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)ud;
	const Tern__Data__QueueInfoRequest *req = (const void *)m;
	struct broker_qinfo qi;
	int rc = broker_queue_info(svc_of(c)->broker, req->queue, strlen(req->queue), &qi);
	if (rc) {
		node_fail(c, rc, NULL);
		return;
	}
	/* qi's strings need not end in NUL: copy them into one block. */
	size_t need = qi.name_len + 1 + strlen(qi.dead_letter) + 1;
	for (size_t i = 0; i < qi.nbind; i++)
		need += strlen(qi.bind[i]) + 1;
	char *strs = malloc(need);
	char **bind = calloc(qi.nbind + 1, sizeof(*bind));
	if (!strs || !bind) {
		node_fail(c, TERN_EUNAVAIL, "out of memory");
		goto out_free;
	}
	Tern__Data__QueueInfo r = TERN__DATA__QUEUE_INFO__INIT;
	char *p = strs;
	memcpy(p, qi.name, qi.name_len);
	p[qi.name_len] = 0;
	r.name = p;
	p += qi.name_len + 1;
	r.dead_letter = strcpy(p, qi.dead_letter);
	p += strlen(p) + 1;
	for (size_t i = 0; i < qi.nbind; i++) {
		bind[i] = strcpy(p, qi.bind[i]);
		p += strlen(p) + 1;
	}
	r.ready = qi.ready;
	r.unacked = qi.unacked;
	r.consumers = qi.consumers;
	r.delivered = qi.delivered;
	r.redelivered = qi.redelivered;
	r.dead_lettered = qi.dead_lettered;
	r.ack_timeout_ms = qi.ack_timeout_ms;
	r.max_attempts = qi.max_attempts;
	r.bind = bind;
	r.n_bind = qi.nbind;
	reply(c, &r.base);
out_free:
	free(bind);
	free(strs);
}

static void history_cb(void *arg, int err, struct tern_msg **msgs, size_t n)
{
	struct pending *p = arg;
	uint32_t limit = p->limit;
	link_call *c = pending_take(p);
	Tern__Data__HistoryResponse r = TERN__DATA__HISTORY_RESPONSE__INIT;
	Tern__Data__Message *mv = n ? calloc(n, sizeof(*mv)) : NULL;
	Tern__Data__Message **mp = n ? calloc(n, sizeof(*mp)) : NULL;
	if (!c)
		goto out_free;
	if (err) {
		node_fail(c, err, NULL);
		goto out_free;
	}
	if (n && (!mv || !mp)) {
		node_fail(c, TERN_EUNAVAIL, "out of memory");
		goto out_free;
	}
	for (size_t i = 0; i < n; i++) {
		tern__data__message__init(&mv[i]);
		node_fill_message(&mv[i], msgs[i]);
		mp[i] = &mv[i];
	}
	r.messages = mp;
	r.n_messages = n;
	r.more = n == limit;
	reply(c, &r.base);
out_free:
	free(mp);
	free(mv);
	for (size_t i = 0; i < n; i++)
		msg_unref(msgs[i]);
	free(msgs);
}

static void on_history(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)ud;
	const Tern__Data__HistoryRequest *req = (const void *)m;
	struct broker_hist h = {
		.chan = req->channel, .chan_len = strlen(req->channel),
		.after_seq = req->after_seq, .before_seq = req->before_seq,
		.limit = req->limit ? req->limit : TERN_HISTORY_PAGE_DEFAULT,
		.backwards = req->backwards,
	};
	struct pending *pd = pending_new(c);
	if (!pd)
		return;
	pd->limit = h.limit;
	int rc = broker_history(svc_of(c)->broker, &h, history_cb, pd);
	pending_started(pd, rc, NULL);
}

static void on_channel_info(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)ud;
	const Tern__Data__ChannelInfoRequest *req = (const void *)m;
	struct node_svc *s = svc_of(c);
	uint64_t last = 0, subs = 0;
	const char *why = NULL;
	int rc = names_check_channel(req->channel, strlen(req->channel), &why);
	if (rc) {
		node_fail(c, rc, why);
		return;
	}
	broker_channel_info(s->broker, req->channel, strlen(req->channel), &last, &subs);
	Tern__Data__ChannelInfoResponse r = TERN__DATA__CHANNEL_INFO_RESPONSE__INIT;
	r.channel = req->channel;
	r.last_seq = last;
	r.subscribers = subs > UINT32_MAX ? UINT32_MAX : (uint32_t)subs;
	r.owner_node = (char *)s->cfg->node_id;
	reply(c, &r.base);
}

/* ---- control plane ---- */

/* An open Heartbeats stream, ended by a drain. */
struct hb_stream {
	struct list node;
	link_call *c;
};

static void on_hello(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)ud;
	const Tern__Control__HelloRequest *req = (const void *)m;
	const struct tern_config *cfg = svc_of(c)->cfg;
	if (*req->region && strcmp(req->region, cfg->region) != 0) {
		char msg[200];
		snprintf(msg, sizeof(msg), "region mismatch: node %s is in %s", cfg->node_id,
			 cfg->region);
		link_call_fail(c, LINK_FAILED_PRECONDITION, msg, 0);
		return;
	}
	Tern__Control__HelloResponse r = TERN__CONTROL__HELLO_RESPONSE__INIT;
	r.id = (char *)cfg->node_id;
	r.region = (char *)cfg->region;
	reply(c, &r.base);
}

static void on_hb_start(link_call *c, void *ud)
{
	(void)ud;
	struct hb_stream *h = calloc(1, sizeof(*h));
	if (!h) {
		link_call_fail(c, LINK_UNAVAILABLE, "out of memory", 1);
		return;
	}
	h->c = c;
	list_insert_tail(&svc_of(c)->hbs, &h->node);
	link_call_set_ud(c, h);
}

static void on_hb_msg(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)ud;
	const Tern__Control__Heartbeat *in = (const void *)m;
	struct node_svc *s = svc_of(c);
	Tern__Control__Heartbeat out = TERN__CONTROL__HEARTBEAT__INIT;
	out.id = (char *)s->cfg->node_id;
	out.seq = in->seq;
	out.sent_us = in->sent_us;
	out.draining = s->draining;
	/* load_permille stays 0: the loop's busy share needs UV_METRICS_IDLE_TIME, which the
	 * loop's owner would have to enable. */
	int rc = link_call_send(c, &out.base);
	if (rc == -EAGAIN) /* the peer reads no echoes: it will see the link die anyway */
		link_call_fail(c, LINK_UNAVAILABLE, "heartbeat stream behind", 1);
}

static void on_hb_half_close(link_call *c, void *ud)
{
	(void)ud;
	link_call_fail(c, LINK_OK, "", 0);
}

static void on_hb_done(link_call *c, const link_status *st, void *ud)
{
	(void)c;
	(void)st;
	struct hb_stream *h = ud;
	if (!h)
		return;
	list_remove(&h->node);
	free(h);
}

static void count_queue(void *arg, const struct broker_qinfo *q)
{
	(void)q;
	(*(uint64_t *)arg)++;
}

static void on_stats(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)m;
	(void)ud;
	struct node_svc *s = svc_of(c);
	struct broker_stats bs;
	broker_get_stats(s->broker, &bs);
	Tern__Control__StatsResponse r = TERN__CONTROL__STATS_RESPONSE__INIT;
	r.id = (char *)s->cfg->node_id;
	r.channels = bs.channels_active;
	broker_queue_each(s->broker, count_queue, &r.queues);
	r.links = s->nlinks;
	r.messages_in = bs.messages_in;
	r.messages_out = s->messages_out;
	reply(c, &r.base);
}

/* ---- routing ---- */

static const link_call_cbs unary_cbs[] = {
#define U(fn) {.on_msg = fn, .on_done = pending_done}
	U(on_publish), U(on_enqueue), U(on_settle), U(on_pull), U(on_configure),
	U(on_queue_info), U(on_history), U(on_channel_info),
#undef U
};
static const char *const unary_methods[] = {
	"Publish", "Enqueue", "Settle", "Pull", "ConfigureQueue", "GetQueueInfo", "History",
	"ChannelInfo",
};
static const link_call_cbs hello_cbs = {.on_msg = on_hello};
static const link_call_cbs stats_cbs = {.on_msg = on_stats};
static const link_call_cbs hb_cbs = {
	.on_start = on_hb_start, .on_msg = on_hb_msg, .on_half_close = on_hb_half_close,
	.on_done = on_hb_done,
};

static int routes(link_router *r)
{
	int rc = 0;
	for (size_t i = 0; i < sizeof(unary_methods) / sizeof(*unary_methods) && !rc; i++)
		rc = link_router_add(r, DATA, unary_methods[i], &unary_cbs[i], NULL);
	if (!rc)
		rc = node_stream_routes(r);
	if (!rc)
		rc = link_router_add(r, CONTROL, "Hello", &hello_cbs, NULL);
	if (!rc)
		rc = link_router_add(r, CONTROL, "Heartbeats", &hb_cbs, NULL);
	if (!rc)
		rc = link_router_add(r, CONTROL, "Stats", &stats_cbs, NULL);
	return rc;
}

/* ---- links ---- */

static struct node_link *find_link(struct node_svc *s, const tern_link *l)
{
	for (size_t i = 0; i < s->nlinks; i++)
		if (s->links[i].l == l)
			return &s->links[i];
	return NULL;
}

static int track(struct node_svc *s, tern_link *l)
{
	if (s->nlinks == s->links_cap) {
		size_t cap = s->links_cap ? s->links_cap * 2 : 16;
		struct node_link *nl = realloc(s->links, cap * sizeof(*nl));
		if (!nl)
			return -ENOMEM;
		s->links = nl;
		s->links_cap = cap;
	}
	s->links[s->nlinks++] = (struct node_link){.l = l, .plane = LINK_PLANE_ANY};
	return 0;
}

static void drain_check(struct node_svc *s);

static void on_ready(tern_link *l, void *ud)
{
	struct node_svc *s = ud;
	struct node_link *nl = find_link(s, l);
	const link_peer_info *peer = link_peer(l);
	if (nl && peer && (peer->plane == LINK_PLANE_CONTROL || peer->plane == LINK_PLANE_DATA)) {
		nl->plane = peer->plane;
		s->plane_links[nl->plane]++;
	}
	if (s->draining)
		link_drain(l);
}

static void on_close(tern_link *l, const link_status *st, void *ud)
{
	(void)st;
	struct node_svc *s = ud;
	struct node_link *nl = find_link(s, l);
	if (!nl)
		return;
	if (nl->plane != LINK_PLANE_ANY) {
		assert(s->plane_links[nl->plane] > 0);
		s->plane_links[nl->plane]--;
	}
	*nl = s->links[--s->nlinks];
	drain_check(s);
}

void node_svc_adopt(struct node_svc *s, tern_link *l)
{
	static const link_status drained = {.code = LINK_UNAVAILABLE, .retryable = 1,
					    .message = "node draining"};
	if (track(s, l) != 0) {
		link_close(l, &(link_status){.code = LINK_UNAVAILABLE, .retryable = 1,
					     .message = "out of memory"});
		return;
	}
	if (s->draining)
		link_close(l, &drained);
}

static void on_link(link_listener *lst, tern_link *l, void *ud)
{
	(void)lst;
	node_svc_adopt(ud, l);
}

int node_svc_new(struct node_svc **out, const struct node_svc_config *c)
{
	struct node_svc *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = c->loop;
	s->broker = c->broker;
	s->cfg = c->cfg;
	s->log = c->log;
	list_init(&s->subs);
	list_init(&s->conss);
	list_init(&s->hbs);
	int rc = link_router_new(&s->router);
	if (rc)
		goto out_free;
	rc = routes(s->router);
	if (rc)
		goto out_free_router;
	size_t n = 0;
	if (s->cfg->log_calls != TERN_LOG_CALLS_OFF && s->log) {
		s->log_state = (link_mw_log){.out = s->log,
					     .errors_only = s->cfg->log_calls != TERN_LOG_CALLS_ALL};
		s->icpt[n++] = link_mw_log_interceptor(&s->log_state);
	}
	s->icpt[n++] = link_mw_methods_interceptor(&s->metrics);
	uint64_t dead_after = s->cfg->node_timeout_ms / NODE_LINK_PING_MS;
	if (dead_after < LINK_DEAD_AFTER_MIN)
		dead_after = LINK_DEAD_AFTER_MIN;
	if (dead_after > LINK_DEAD_AFTER_MAX)
		dead_after = LINK_DEAD_AFTER_MAX;
	s->lcfg = (link_config){
		.node_id = s->cfg->node_id, .region = s->cfg->region, .plane = LINK_PLANE_ANY,
		.router = s->router, .max_streams = NODE_LINK_MAX_STREAMS,
		.stream_sendbuf = NODE_LINK_SENDBUF_BYTES, .ping_interval_ms = NODE_LINK_PING_MS,
		.dead_after = (uint32_t)dead_after, .interceptors = s->icpt,
		.interceptor_count = n, .on_ready = on_ready, .on_close = on_close, .ud = s,
	};
	*out = s;
	return 0;

out_free_router:
	link_router_free(s->router);
out_free:
	free(s);
	return rc;
}

const link_config *node_svc_link_config(struct node_svc *s) { return &s->lcfg; }

int node_svc_listen(struct node_svc *s, const char *host, int port)
{
	if (s->lst || s->draining)
		return -EINVAL;
	int rc = link_listen(s->loop, &s->lcfg, host, port, on_link, s, &s->lst);
	if (rc)
		return rc;
	s->port = link_listener_port(s->lst);
	return 0;
}

int node_svc_port(const struct node_svc *s) { return s->port; }

unsigned node_svc_links(const struct node_svc *s, int plane)
{
	return plane >= 0 && plane < 3 ? s->plane_links[plane] : 0;
}

/* ---- drain ---- */

static void on_grace_closed(uv_handle_t *h)
{
	struct node_svc *s = h->data;
	s->timer_on = false;
	if (s->done)
		s->done(s->done_arg);
}

static void on_lst_closed(void *ud)
{
	struct node_svc *s = ud;
	s->lst = NULL;
	drain_check(s);
}

/* Done once every link closed and the listener (if any) is gone. */
static void drain_check(struct node_svc *s)
{
	if (!s->draining || s->drain_done || s->nlinks)
		return;
	if (s->lst) {
		if (!s->lst_closing) {
			s->lst_closing = true;
			link_listener_close(s->lst, on_lst_closed, s);
		}
		return;
	}
	s->drain_done = true;
	uv_timer_stop(&s->grace);
	uv_close((uv_handle_t *)&s->grace, on_grace_closed);
}

static void on_grace(uv_timer_t *t)
{
	struct node_svc *s = t->data;
	link_status st = {.code = LINK_UNAVAILABLE, .retryable = 1, .message = "node drained"};
	/* link_close defers on_close, so the array does not change under this walk. */
	for (size_t i = 0; i < s->nlinks; i++)
		link_close(s->links[i].l, &st);
	if (s->lst && !s->lst_closing) {
		s->lst_closing = true;
		link_listener_close(s->lst, on_lst_closed, s);
	}
}

void node_svc_drain(struct node_svc *s, uint64_t grace_ms, void (*done)(void *arg), void *arg)
{
	if (s->draining)
		return;
	s->draining = true;
	s->done = done;
	s->done_arg = arg;
	node_streams_drain(s);
	struct list *pos, *tmp;
	list_foreach_safe(pos, tmp, &s->hbs) {
		struct hb_stream *h = container_of(pos, struct hb_stream, node);
		link_call_fail(h->c, LINK_UNAVAILABLE, "node draining", 1);
	}
	broker_pulls_release(s->broker);
	/* A link still in its handshake carries no call: close it rather than wait for its
	 * handshake timeout. link_close defers on_close, so the array holds still. */
	link_status st = {.code = LINK_UNAVAILABLE, .retryable = 1, .message = "node draining"};
	for (size_t i = 0; i < s->nlinks; i++) {
		if (link_peer(s->links[i].l))
			link_drain(s->links[i].l);
		else
			link_close(s->links[i].l, &st);
	}
	uv_timer_init(s->loop, &s->grace);
	s->grace.data = s;
	s->timer_on = true;
	uv_timer_start(&s->grace, on_grace, grace_ms ? grace_ms : 1, 0);
	drain_check(s);
}

void node_svc_free(struct node_svc *s)
{
	if (!s)
		return;
	assert(s->nlinks == 0 && !s->lst && !s->timer_on);
	assert(list_empty(&s->subs) && list_empty(&s->conss) && list_empty(&s->hbs));
	link_router_free(s->router);
	free(s->links);
	free(s);
}

/* ---- metrics ---- */

void node_svc_metrics(struct node_svc *s, FILE *out)
{
	fprintf(out, "# HELP tern_node_links Links held, per plane\n# TYPE tern_node_links gauge\n"
		     "tern_node_links{plane=\"control\"} %u\ntern_node_links{plane=\"data\"} %u\n",
		s->plane_links[LINK_PLANE_CONTROL], s->plane_links[LINK_PLANE_DATA]);
	link_mw_methods_write(&s->metrics, out);
}
