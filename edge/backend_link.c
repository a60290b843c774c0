/* backend_ops over links to nodes (see backend_link.h). */
#include "backend_link.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hmap.h"
#include "link_call.h"
#include "list.h"
#include "tern/control.pb-c.h"
#include "tern/data.pb-c.h"
#include "tern_err.h"
#include "tern_limits.h"

#define DATA_SVC (&tern__data__data_plane__descriptor)
#define CTL_SVC (&tern__control__control_plane__descriptor)
#define CALL_TIMEOUT_US (30ull * 1000 * 1000) /* unary calls; liveness is the control link's */
#define RESYNC_MS 200			      /* retry of subscriptions/consumers not yet placed */

struct bnode;

/* Where calls about a name go: its owner node, and the data link its calls share. */
struct route {
	struct bnode *n;
	unsigned k;
};


/* The Subscribe stream of one data link: carries every channel placed on it. */
struct sstream {
	struct bnode *n;
	unsigned k;
	link_call *call;
	struct list subs; /* backend_sub.link */
};

struct bnode {
	struct backend_link *bl;
	char addr[280]; /* HOST:PORT as given */
	char host[256];
	int port;
	char id[64];	/* the node's id, from Hello */
	link_dialer *ctl;
	link_dialer *data[TERN_LINKS_MAX];
	struct sstream ss[TERN_LINKS_MAX];
	struct list consumers; /* backend_consumer.link */
	link_call *hb;	       /* Heartbeats stream */
	bool up;	       /* hello answered on a usable control link, no goaway */
	uint64_t hb_seq, hb_count, rtt_us, rtt_max_us, down_total;
};

struct backend_link {
	uv_loop_t *loop;
	const struct tern_config *cfg;
	FILE *log;
	unsigned nnodes, k;
	struct bnode *nodes;
	struct hmap subs; /* backend_sub by channel */
	struct list pulls; /* backend_pull waiting for their answer */
	uv_timer_t hb_timer, resync;
	link_config ctl_cfg, data_cfg;
	link_mw_log mw_log;
	link_mw_methods mw_methods;
	link_interceptor icpt[2];
	uint32_t trace_prefix;
	uint64_t trace_seq;
	unsigned closing_left;
	bool closing;
	void (*done)(void *arg);
	void *done_arg;
};

struct backend_sub {
	struct list link; /* in its sstream */
	struct hmap_node hnode;
	struct sstream *ss;
	broker_msg_fn on_msg; /* NULL: its owner left, a remove ack is awaited */
	void *msg_arg;
	void (*ready)(void *arg, int err, uint64_t last_seq);
	void *ready_arg;
	uint64_t last_seq; /* last seq handed to on_msg (or the attach point) */
	uint32_t clients;
	unsigned removing; /* remove acks (DETACHED without error) still due on this stream */
	bool attached, sent;
	size_t len;
	char name[];
};

struct backend_consumer {
	struct list link; /* in bnode.consumers */
	struct bnode *n;
	struct route r;
	link_call *call;
	broker_deliver_fn fn; /* NULL once cancelled */
	void *arg;
	uint32_t prefetch;
	bool failed; /* refused for good by the node */
	size_t len;
	char queue[];
};

struct backend_pull {
	struct list link; /* in backend_link.pulls while waiting */
	link_call *call;
	broker_pull_cb cb; /* NULL once cancelled */
	void *arg;
};

/* --- errors ----------------------------------------------------------------------------- */

/* The Tern error a failed call stands for: the node's Error detail when it sent one. */
static int status_err(const link_status *st)
{
	if (st->detail && st->detail_len) {
		Tern__Data__Error *e = tern__data__error__unpack(NULL, st->detail_len, st->detail);
		if (e) {
			int code = e->code;
			tern__data__error__free_unpacked(e, NULL);
			if (code >= 40000 && code <= 59999)
				return -code;
		}
	}
	switch (st->code) {
	case LINK_OK:
		return 0;
	case LINK_INVALID_ARGUMENT:
		return TERN_EBADREQ;
	case LINK_NOT_FOUND:
		return TERN_ENOTFOUND;
	case LINK_RESOURCE_EXHAUSTED:
		return TERN_ERATELIMIT;
	case LINK_INTERNAL:
	case LINK_UNKNOWN:
	case LINK_DATA_LOSS:
		return TERN_EINTERNAL;
	default: /* unavailable, deadline, cancelled, aborted: try again */
		return TERN_EUNAVAIL;
	}
}

/* --- placement and call start ------------------------------------------------------------- */

static struct bnode *place(struct backend_link *bl, const char *name, size_t len)
{
	if (bl->nnodes == 1)
		return &bl->nodes[0];
	struct bnode *best = NULL;
	uint64_t best_h = 0;
	for (unsigned i = 0; i < bl->nnodes; i++) {
		uint64_t h = hmap_hash(name, len) ^ hmap_hash(bl->nodes[i].addr, strlen(bl->nodes[i].addr));
		h *= 0x9E3779B97F4A7C15ull; /* mix: rendezvous needs a well-spread score */
		h ^= h >> 29;
		if (!best || h > best_h) {
			best = &bl->nodes[i];
			best_h = h;
		}
	}
	return best;
}

static unsigned link_index(const struct backend_link *bl, const char *name, size_t len)
{
	return (unsigned)((hmap_hash(name, len) >> 17) % bl->k);
}

static struct route route_of(struct backend_link *bl, const char *name, size_t len)
{
	return (struct route){place(bl, name, len), link_index(bl, name, len)};
}

static void next_trace(struct backend_link *bl, char *buf, size_t cap)
{
	snprintf(buf, cap, "%08" PRIx32 "%08" PRIx64, bl->trace_prefix, ++bl->trace_seq);
}

/* Starts a call to the node on one of its usable data links: link k first (calls about one
 * name all take the same link, so they reach the node in the order they were made), the next
 * ones when it is down or its stream cap is reached. Returns 0 or a Tern error (50300: the node
 * is down). */
static int start_call(struct route r, const char *method, uint64_t timeout_us,
		      const link_call_cbs *cbs, void *ud, link_call **out)
{
	struct bnode *n = r.n;
	unsigned k = r.k;
	struct backend_link *bl = n->bl;
	if (!n->up || bl->closing)
		return TERN_EUNAVAIL;
	char tid[32];
	next_trace(bl, tid, sizeof(tid));
	link_call_opts o = {.timeout_us = timeout_us, .trace_id = tid};
	for (unsigned i = 0; i < bl->k; i++) {
		tern_link *l = link_dialer_link(n->data[(k + i) % bl->k]);
		if (!l)
			continue;
		int rc = link_call_start(l, DATA_SVC, method, &o, cbs, ud, out);
		if (rc == 0)
			return 0;
		if (rc == -ENOMEM)
			return TERN_EUNAVAIL;
	}
	return TERN_EUNAVAIL;
}

/* A unary call: start, send req, half-close. */
static int unary(struct route r, const char *method, const ProtobufCMessage *req,
		 uint64_t timeout_us, const link_call_cbs *cbs, void *ud, link_call **out)
{
	link_call *c;
	int rc = start_call(r, method, timeout_us, cbs, ud, &c);
	if (rc != 0)
		return rc;
	if (link_call_send(c, req) != 0 || link_call_close_send(c) != 0) {
		/* the call exists: its on_done will run, with the failure */
		link_call_cancel(c);
	}
	if (out)
		*out = c;
	return 0;
}

/* --- messages ----------------------------------------------------------------------------- */

static int enc_of(const char *s) { return strcmp(s, "base64") == 0 ? TERN_ENC_BASE64 : TERN_ENC_JSON; }
static char *enc_name(int enc) { return enc == TERN_ENC_BASE64 ? "base64" : ""; }

/* A tern_msg from a Message (one allocation). NULL when out of memory or malformed. */
static struct tern_msg *msg_from(const Tern__Data__Message *pm)
{
	if (!pm)
		return NULL;
	size_t clen = strlen(pm->channel), nlen = strlen(pm->name);
	if (clen > TERN_NAME_MAX_BYTES || strlen(pm->id) >= TERN_MSG_ID_MAX)
		return NULL;
	struct tern_msg *m = msg_new(pm->channel, clen, pm->has_name ? pm->name : NULL, nlen,
				     pm->data.data, pm->data.len, enc_of(pm->encoding));
	if (!m)
		return NULL;
	m->seq = pm->seq;
	m->ts_ms = (int64_t)pm->ts_ms;
	memcpy(m->id, pm->id, strlen(pm->id) + 1);
	return m;
}

/* A NUL-terminated copy of a length-delimited string for a protobuf string field. A string
 * holding NUL cannot travel as one (it would arrive cut short), nor is it a valid name. */
static int cstr(char *dst, size_t cap, const char *src, size_t len)
{
	if (len >= cap || (len && memchr(src, 0, len)))
		return -1;
	if (len)
		memcpy(dst, src, len);
	dst[len] = 0;
	return 0;
}

/* var: a name copied for a request; a bad one ends the calling op with 40001. */
#define NAME_BUF(var, p, len)                                                    \
	char var[TERN_NAME_MAX_BYTES + 1];                                       \
	if (cstr(var, sizeof(var), (p), (len)) != 0)                             \
	return TERN_EBADNAME

/* --- publish, enqueue --------------------------------------------------------------------- */

struct pub_ctx {
	broker_pub_cb cb;
	void *arg;
};

static void pub_done(link_call *c, const link_status *st, void *ud)
{
	struct pub_ctx *p = ud;
	const ProtobufCMessage *resp = st->code == LINK_OK ? link_call_last_msg(c) : NULL;
	if (resp && resp->descriptor == &tern__data__publish_response__descriptor) {
		const Tern__Data__PublishResponse *r = (const void *)resp;
		p->cb(p->arg, 0, r->first_seq, r->id);
	} else if (resp && resp->descriptor == &tern__data__enqueue_response__descriptor) {
		const Tern__Data__EnqueueResponse *r = (const void *)resp;
		p->cb(p->arg, 0, 0, r->id);
	} else {
		int err = status_err(st);
		p->cb(p->arg, err ? err : TERN_EINTERNAL, 0, NULL);
	}
	free(p);
}

static const link_call_cbs pub_cbs = {.on_done = pub_done};

static int start_pub(struct route r, const char *method, const ProtobufCMessage *req,
		     broker_pub_cb cb, void *arg, const char **why)
{
	struct pub_ctx *p = malloc(sizeof(*p));
	if (!p) {
		*why = "out of memory";
		return TERN_EUNAVAIL;
	}
	p->cb = cb;
	p->arg = arg;
	int rc = unary(r, method, req, CALL_TIMEOUT_US, &pub_cbs, p, NULL);
	if (rc != 0) {
		free(p);
		*why = "the node owning this name is unavailable";
	}
	return rc;
}

static int k_publish(void *be, const struct broker_pub *bp, broker_pub_cb cb, void *arg,
		     const char **why)
{
	struct backend_link *bl = be;
	NAME_BUF(chan, bp->chan, bp->chan_len);
	char name[TERN_EVENT_NAME_MAX_BYTES + 1] = "";
	char idem[TERN_IDEM_KEY_MAX_BYTES + 1] = "";
	if ((bp->name && cstr(name, sizeof(name), bp->name, bp->name_len) != 0) ||
	    (bp->idem_key && cstr(idem, sizeof(idem), bp->idem_key, bp->idem_len) != 0)) {
		*why = "bad event name or idempotency key";
		return TERN_EBADREQ;
	}
	Tern__Data__Message m = TERN__DATA__MESSAGE__INIT;
	m.channel = chan;
	m.name = name;
	m.has_name = bp->name != NULL;
	m.data.data = (uint8_t *)bp->data;
	m.data.len = bp->data_len;
	m.encoding = enc_name(bp->enc);
	Tern__Data__Message *ms[1] = {&m};
	Tern__Data__PublishRequest req = TERN__DATA__PUBLISH_REQUEST__INIT;
	req.channel = chan;
	req.n_messages = 1;
	req.messages = ms;
	req.idempotency_key = idem;
	return start_pub(route_of(bl, chan, bp->chan_len), "Publish", &req.base, cb, arg, why);
}

static int k_enqueue(void *be, const struct broker_enq *e, broker_pub_cb cb, void *arg,
		     const char **why)
{
	struct backend_link *bl = be;
	NAME_BUF(queue, e->queue, e->queue_len);
	char idem[TERN_IDEM_KEY_MAX_BYTES + 1] = "";
	if (e->idem_key && cstr(idem, sizeof(idem), e->idem_key, e->idem_len) != 0) {
		*why = "bad idempotency key";
		return TERN_EBADREQ;
	}
	Tern__Data__EnqueueRequest req = TERN__DATA__ENQUEUE_REQUEST__INIT;
	req.queue = queue;
	req.data.data = (uint8_t *)e->data;
	req.data.len = e->data_len;
	req.encoding = enc_name(e->enc);
	req.idempotency_key = idem;
	return start_pub(route_of(bl, queue, e->queue_len), "Enqueue", &req.base, cb, arg, why);
}

/* --- subscriptions -------------------------------------------------------------------------- */

static void on_resync(uv_timer_t *t);

static void resync_soon(struct backend_link *bl)
{
	if (!bl->closing && !uv_is_active((uv_handle_t *)&bl->resync))
		uv_timer_start(&bl->resync, on_resync, RESYNC_MS, 0);
}

static void sub_free(struct backend_link *bl, struct backend_sub *s)
{
	list_remove(&s->link);
	hmap_del(&bl->subs, &s->hnode);
	free(s);
}

/* Sends one channel position on the stream. */
static int ss_send(struct sstream *ss, struct backend_sub *s, bool add, uint64_t from_seq)
{
	Tern__Data__ChannelPosition pos = TERN__DATA__CHANNEL_POSITION__INIT;
	Tern__Data__ChannelPosition *ps[1] = {&pos};
	Tern__Data__SubscribeRequest req = TERN__DATA__SUBSCRIBE_REQUEST__INIT;
	pos.channel = s->name;
	pos.from_seq = from_seq;
	pos.add = add;
	pos.clients = s->clients ? s->clients : 1;
	req.n_channels = 1;
	req.channels = ps;
	return link_call_send(ss->call, &req.base);
}

/* Adds the subscription on its stream: live from now before the first attach, from the next
 * seq it lacks afterwards. */
static void sub_add(struct backend_sub *s)
{
	if (!s->ss->call || s->sent || !s->on_msg)
		return;
	if (ss_send(s->ss, s, true, s->attached ? s->last_seq + 1 : 0) == 0)
		s->sent = true;
	else
		resync_soon(s->ss->n->bl);
}

static void on_sub_event(link_call *c, const ProtobufCMessage *msg, void *ud)
{
	struct sstream *ss = ud;
	struct backend_link *bl = ss->n->bl;
	const Tern__Data__SubscribeEvent *ev = (const void *)msg;
	const char *chan = ev->kind == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_MESSAGE && ev->message
				   ? ev->message->channel
				   : ev->channel;
	(void)c;
	struct hmap_node *hn = hmap_get(&bl->subs, chan, strlen(chan));
	struct backend_sub *s = hn ? container_of(hn, struct backend_sub, hnode) : NULL;
	if (!s || s->ss != ss)
		return;
	switch (ev->kind) {
	case TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_ATTACHED:
		if (s->removing || !s->on_msg || s->attached)
			return; /* an old incarnation's, or a re-attach: messages follow */
		s->attached = true;
		s->last_seq = ev->seq;
		s->ready(s->ready_arg, 0, ev->seq);
		return;
	case TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_MESSAGE: {
		if (s->removing || !s->on_msg || !s->attached || ev->message->seq <= s->last_seq)
			return;
		if (ev->message->seq != s->last_seq + 1)
			fprintf(bl->log, "tern: channel %s: seq %" PRIu64 " follows %" PRIu64
					 " (history no longer holds the rest)\n",
				s->name, ev->message->seq, s->last_seq);
		struct tern_msg *m = msg_from(ev->message);
		if (!m)
			return;
		s->last_seq = m->seq;
		s->on_msg(s->msg_arg, m);
		msg_unref(m);
		return;
	}
	case TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_DETACHED:
		if (s->removing) {
			if (ev->error)
				return; /* the old incarnation's trouble */
			if (--s->removing == 0 && !s->on_msg)
				sub_free(bl, s);
			else if (s->removing == 0)
				sub_add(s); /* revived while the remove was in flight */
			return;
		}
		s->sent = false;
		if (!s->attached) {
			void (*ready)(void *, int, uint64_t) = s->ready;
			void *arg = s->ready_arg;
			int err = ev->error && ev->error->code ? -ev->error->code : TERN_EUNAVAIL;
			sub_free(bl, s);
			ready(arg, err, 0);
		} else {
			resync_soon(bl);
		}
		return;
	default: /* GAP: the message that follows says where history resumes */
		return;
	}
}

static void on_sub_done(link_call *c, const link_status *st, void *ud)
{
	struct sstream *ss = ud;
	struct backend_link *bl = ss->n->bl;
	(void)c;
	ss->call = NULL;
	if (st->code != LINK_OK && st->code != LINK_CANCELLED && ss->n->up)
		fprintf(bl->log, "tern: node %s: subscription stream %u ended: %s %s\n", ss->n->addr,
			ss->k, link_code_name(st->code), st->message ? st->message : "");
	/* Owners that never got ready hear 50300 now; attached ones are re-added later. */
	struct list failed, *pos, *tmp;
	list_init(&failed);
	list_foreach_safe(pos, tmp, &ss->subs) {
		struct backend_sub *s = container_of(pos, struct backend_sub, link);
		s->removing = 0;
		s->sent = false;
		if (!s->on_msg) {
			sub_free(bl, s);
		} else if (!s->attached) {
			list_remove(&s->link);
			hmap_del(&bl->subs, &s->hnode);
			list_insert_tail(&failed, &s->link);
		}
	}
	while (!list_empty(&failed)) {
		struct backend_sub *s = container_of(failed.next, struct backend_sub, link);
		list_remove(&s->link);
		void (*ready)(void *, int, uint64_t) = s->ready;
		void *arg = s->ready_arg;
		free(s);
		ready(arg, TERN_EUNAVAIL, 0);
	}
	if (!list_empty(&ss->subs))
		resync_soon(bl);
}

static const link_call_cbs sub_cbs = {.on_msg = on_sub_event, .on_done = on_sub_done};

static int ss_open(struct sstream *ss)
{
	struct bnode *n = ss->n;
	if (ss->call)
		return 0;
	if (!n->up || n->bl->closing)
		return TERN_EUNAVAIL;
	tern_link *l = link_dialer_link(n->data[ss->k]);
	if (!l)
		return TERN_EUNAVAIL;
	char tid[32];
	next_trace(n->bl, tid, sizeof(tid));
	link_call_opts o = {.trace_id = tid};
	return link_call_start(l, DATA_SVC, "Subscribe", &o, &sub_cbs, ss, &ss->call) == 0
		       ? 0
		       : TERN_EUNAVAIL;
}

static int k_subscribe(void *be, const char *chan, size_t len, uint32_t clients,
		       broker_msg_fn on_msg, void *msg_arg,
		       void (*ready)(void *arg, int err, uint64_t last_seq), void *ready_arg,
		       struct backend_sub **out)
{
	struct backend_link *bl = be;
	if (len > TERN_NAME_MAX_BYTES || memchr(chan, 0, len))
		return TERN_EBADNAME;
	struct bnode *n = place(bl, chan, len);
	struct sstream *ss = &n->ss[link_index(bl, chan, len)];
	int rc = ss_open(ss);
	if (rc != 0)
		return rc;
	struct hmap_node *hn = hmap_get(&bl->subs, chan, len);
	struct backend_sub *s = hn ? container_of(hn, struct backend_sub, hnode) : NULL;
	if (s && s->on_msg)
		return TERN_EINTERNAL; /* the edge holds one upstream per channel */
	if (!s) {
		s = calloc(1, sizeof(*s) + len + 1);
		if (!s)
			return TERN_EUNAVAIL;
		memcpy(s->name, chan, len);
		s->len = len;
		if (hmap_put(&bl->subs, &s->hnode, s->name, len) != 0) {
			free(s);
			return TERN_EUNAVAIL;
		}
		s->ss = ss;
		list_insert_tail(&ss->subs, &s->link);
	}
	s->on_msg = on_msg;
	s->msg_arg = msg_arg;
	s->ready = ready;
	s->ready_arg = ready_arg;
	s->clients = clients;
	s->attached = false;
	s->last_seq = 0;
	if (!s->removing)
		sub_add(s);
	*out = s;
	return 0;
}

static void k_set_clients(void *be, struct backend_sub *s, uint32_t clients)
{
	(void)be;
	s->clients = clients;
	if (s->sent && s->ss->call)
		ss_send(s->ss, s, true, 0); /* an add for a held channel only updates clients */
}

static void k_unsubscribe(void *be, struct backend_sub *s)
{
	struct backend_link *bl = be;
	s->on_msg = NULL;
	s->ready = NULL;
	if (s->sent && s->ss->call && ss_send(s->ss, s, false, 0) == 0) {
		s->sent = false;
		s->removing++;
		return; /* freed when the node acknowledges the remove */
	}
	if (!s->removing)
		sub_free(bl, s);
}

/* --- history and info --------------------------------------------------------------------- */

struct cb_ctx {
	void (*fn)(void); /* the caller's callback, cast back by kind */
	void *arg;
};

static void hist_done(link_call *c, const link_status *st, void *ud)
{
	struct cb_ctx *x = ud;
	broker_hist_cb cb = (broker_hist_cb)x->fn;
	const Tern__Data__HistoryResponse *r =
		st->code == LINK_OK ? (const void *)link_call_last_msg(c) : NULL;
	if (!r) {
		int err = status_err(st);
		cb(x->arg, err ? err : TERN_EINTERNAL, NULL, 0);
	} else {
		struct tern_msg **ms = r->n_messages ? calloc(r->n_messages, sizeof(*ms)) : NULL;
		size_t n = 0;
		int err = 0;
		for (size_t i = 0; i < r->n_messages && ms; i++) {
			if (!(ms[n] = msg_from(r->messages[i]))) {
				err = TERN_EINTERNAL;
				break;
			}
			n++;
		}
		if (r->n_messages && !ms)
			err = TERN_EUNAVAIL;
		if (err) {
			for (size_t i = 0; i < n; i++)
				msg_unref(ms[i]);
			free(ms);
			cb(x->arg, err, NULL, 0);
		} else {
			cb(x->arg, 0, ms, n);
		}
	}
	free(x);
}

static int start_cb_call(struct route r, const char *method, const ProtobufCMessage *req,
			 const link_call_cbs *cbs, void (*fn)(void), void *arg)
{
	struct cb_ctx *x = malloc(sizeof(*x));
	if (!x)
		return TERN_EUNAVAIL;
	x->fn = fn;
	x->arg = arg;
	int rc = unary(r, method, req, CALL_TIMEOUT_US, cbs, x, NULL);
	if (rc != 0)
		free(x);
	return rc;
}

static const link_call_cbs hist_cbs = {.on_done = hist_done};

static int k_history(void *be, const struct broker_hist *h, broker_hist_cb cb, void *arg)
{
	struct backend_link *bl = be;
	NAME_BUF(chan, h->chan, h->chan_len);
	Tern__Data__HistoryRequest req = TERN__DATA__HISTORY_REQUEST__INIT;
	req.channel = chan;
	req.after_seq = h->after_seq;
	req.before_seq = h->before_seq;
	req.limit = h->limit;
	req.backwards = h->backwards;
	return start_cb_call(route_of(bl, chan, h->chan_len), "History", &req.base, &hist_cbs,
			     (void (*)(void))cb, arg);
}

typedef void (*info_cb)(void *arg, int err, uint64_t last_seq, uint64_t subs);

static void info_done(link_call *c, const link_status *st, void *ud)
{
	struct cb_ctx *x = ud;
	const Tern__Data__ChannelInfoResponse *r =
		st->code == LINK_OK ? (const void *)link_call_last_msg(c) : NULL;
	int err = r ? 0 : status_err(st);
	((info_cb)x->fn)(x->arg, r ? 0 : err ? err : TERN_EINTERNAL, r ? r->last_seq : 0,
			 r ? r->subscribers : 0);
	free(x);
}

static const link_call_cbs info_cbs = {.on_done = info_done};

static int k_channel_info(void *be, const char *chan_p, size_t len, info_cb cb, void *arg)
{
	struct backend_link *bl = be;
	NAME_BUF(chan, chan_p, len);
	Tern__Data__ChannelInfoRequest req = TERN__DATA__CHANNEL_INFO_REQUEST__INIT;
	req.channel = chan;
	return start_cb_call(route_of(bl, chan, len), "ChannelInfo", &req.base, &info_cbs,
			     (void (*)(void))cb, arg);
}

/* Ready to serve: some node answered Hello and has a usable data link (calls go there). */
static bool k_ready(void *be)
{
	struct backend_link *bl = be;
	for (unsigned i = 0; i < bl->nnodes; i++) {
		if (!bl->nodes[i].up)
			continue;
		for (unsigned k = 0; k < bl->k; k++)
			if (link_dialer_link(bl->nodes[i].data[k]))
				return true;
	}
	return false;
}

/* --- queues -------------------------------------------------------------------------------- */

/* Hands a Delivery to fn as a broker_delivery. */
static void deliver(broker_deliver_fn fn, void *arg, const Tern__Data__Delivery *pd)
{
	struct tern_msg *m = msg_from(pd->message);
	if (!m)
		return; /* malformed: the ack timeout gives it back */
	struct broker_delivery d = {
		.queue = pd->queue, .queue_len = strlen(pd->queue), .delivery_id = pd->id,
		.msg = m, .from_channel = pd->from_channel, .attempt = pd->attempt,
	};
	fn(arg, &d);
	msg_unref(m);
}

static void consumer_free(struct backend_consumer *c)
{
	list_remove(&c->link);
	free(c);
}

static void on_cons_msg(link_call *call, const ProtobufCMessage *msg, void *ud)
{
	struct backend_consumer *c = ud;
	(void)call;
	if (c->fn)
		deliver(c->fn, c->arg, (const void *)msg);
}

static void on_cons_done(link_call *call, const link_status *st, void *ud)
{
	struct backend_consumer *c = ud;
	(void)call;
	c->call = NULL;
	if (!c->fn) {
		consumer_free(c);
		return;
	}
	int err = status_err(st);
	if (err != TERN_EUNAVAIL && err != TERN_EINTERNAL) {
		c->failed = true; /* the node refused this consumer: retrying cannot help */
		fprintf(c->n->bl->log, "tern: consumer of %s refused by node %s: %s\n", c->queue,
			c->n->addr, st->message ? st->message : link_code_name(st->code));
		return;
	}
	resync_soon(c->n->bl);
}

static const link_call_cbs cons_cbs = {.on_msg = on_cons_msg, .on_done = on_cons_done};

static int cons_open(struct backend_consumer *c)
{
	if (c->call || c->failed)
		return 0;
	int rc = start_call(c->r, "Consume", 0, &cons_cbs, c, &c->call);
	if (rc != 0)
		return rc;
	Tern__Data__ConsumeRequest req = TERN__DATA__CONSUME_REQUEST__INIT;
	req.queue = c->queue;
	req.prefetch = c->prefetch;
	if (link_call_send(c->call, &req.base) != 0)
		link_call_cancel(c->call); /* on_done retries */
	return 0;
}

static int k_consume(void *be, const char *queue, size_t len, uint32_t prefetch,
		     broker_deliver_fn fn, void *arg, struct backend_consumer **out)
{
	struct backend_link *bl = be;
	if (len > TERN_NAME_MAX_BYTES || memchr(queue, 0, len))
		return TERN_EBADNAME;
	if (prefetch < 1 || prefetch > TERN_QUEUE_PREFETCH_MAX)
		return TERN_EBADREQ;
	struct backend_consumer *c = calloc(1, sizeof(*c) + len + 1);
	if (!c)
		return TERN_EUNAVAIL;
	memcpy(c->queue, queue, len);
	c->len = len;
	c->r = route_of(bl, c->queue, len);
	c->n = c->r.n;
	c->fn = fn;
	c->arg = arg;
	c->prefetch = prefetch;
	int rc = cons_open(c);
	if (rc != 0) {
		free(c);
		return rc;
	}
	list_insert_tail(&c->n->consumers, &c->link);
	*out = c;
	return 0;
}

static int k_set_prefetch(void *be, struct backend_consumer *c, uint32_t prefetch)
{
	(void)be;
	if (prefetch < 1 || prefetch > TERN_QUEUE_PREFETCH_MAX)
		return TERN_EBADREQ;
	c->prefetch = prefetch;
	if (c->call) {
		Tern__Data__ConsumeRequest req = TERN__DATA__CONSUME_REQUEST__INIT;
		req.prefetch = prefetch;
		if (link_call_send(c->call, &req.base) != 0)
			link_call_cancel(c->call); /* reopened with the new prefetch */
	}
	return 0;
}

static void k_cancel(void *be, struct backend_consumer *c)
{
	(void)be;
	c->fn = NULL;
	if (c->call)
		link_call_cancel(c->call); /* freed in on_done; the node gives its work back */
	else
		consumer_free(c);
}

typedef void (*err_cb)(void *arg, int err);

static void settle_done(link_call *c, const link_status *st, void *ud)
{
	struct cb_ctx *x = ud;
	const Tern__Data__SettleResponse *r =
		st->code == LINK_OK ? (const void *)link_call_last_msg(c) : NULL;
	int err = r ? (r->n_not_found ? TERN_ENOTFOUND : 0) : status_err(st);
	((err_cb)x->fn)(x->arg, r || err ? err : TERN_EINTERNAL);
	free(x);
}

static const link_call_cbs settle_cbs = {.on_done = settle_done};

static int k_settle(void *be, const char *queue_p, size_t qlen, const char *id_p, size_t idlen,
		    bool ack, bool requeue, err_cb cb, void *arg)
{
	struct backend_link *bl = be;
	NAME_BUF(queue, queue_p, qlen);
	char id[TERN_NAME_MAX_BYTES + 1];
	if (cstr(id, sizeof(id), id_p, idlen) != 0)
		return TERN_ENOTFOUND;
	char *ids[1] = {id};
	Tern__Data__SettleRequest req = TERN__DATA__SETTLE_REQUEST__INIT;
	req.queue = queue;
	req.n_ids = 1;
	req.ids = ids;
	req.ack = ack;
	req.requeue = requeue;
	return start_cb_call(route_of(bl, queue, qlen), "Settle", &req.base, &settle_cbs,
			     (void (*)(void))cb, arg);
}

static void pull_done(link_call *c, const link_status *st, void *ud)
{
	struct backend_pull *p = ud;
	list_remove(&p->link);
	const Tern__Data__PullResponse *r =
		st->code == LINK_OK ? (const void *)link_call_last_msg(c) : NULL;
	if (p->cb) {
		if (!r) {
			int err = status_err(st);
			p->cb(p->arg, err ? err : TERN_EINTERNAL, NULL, 0);
		} else {
			size_t n = 0;
			struct broker_delivery *ds =
				r->n_deliveries ? calloc(r->n_deliveries, sizeof(*ds)) : NULL;
			for (size_t i = 0; ds && i < r->n_deliveries; i++) {
				const Tern__Data__Delivery *pd = r->deliveries[i];
				struct tern_msg *m = msg_from(pd->message);
				if (!m)
					continue;
				ds[n++] = (struct broker_delivery){
					.queue = pd->queue, .queue_len = strlen(pd->queue),
					.delivery_id = pd->id, .msg = m,
					.from_channel = pd->from_channel, .attempt = pd->attempt,
				};
			}
			p->cb(p->arg, r->n_deliveries && !ds ? TERN_EUNAVAIL : 0, ds, n);
			for (size_t i = 0; i < n; i++)
				msg_unref(ds[i].msg);
			free(ds);
		}
	}
	free(p);
}

static const link_call_cbs pull_cbs = {.on_done = pull_done};

static int k_pull(void *be, const char *queue_p, size_t len, uint32_t max, uint64_t wait_ms,
		  broker_pull_cb cb, void *arg, struct backend_pull **out)
{
	struct backend_link *bl = be;
	NAME_BUF(queue, queue_p, len);
	struct backend_pull *p = calloc(1, sizeof(*p));
	if (!p)
		return TERN_EUNAVAIL;
	p->cb = cb;
	p->arg = arg;
	Tern__Data__PullRequest req = TERN__DATA__PULL_REQUEST__INIT;
	req.queue = queue;
	req.max = max;
	req.wait_ms = (uint32_t)wait_ms;
	int rc = unary(route_of(bl, queue, len), "Pull", &req.base, CALL_TIMEOUT_US + wait_ms * 1000,
		       &pull_cbs, p, &p->call);
	if (rc != 0) {
		free(p);
		return rc;
	}
	list_insert_tail(&bl->pulls, &p->link);
	*out = p;
	return 0;
}

static void k_pull_cancel(void *be, struct backend_pull *p)
{
	(void)be;
	p->cb = NULL;
	link_call_cancel(p->call); /* pull_done frees it */
}

static void conf_done(link_call *c, const link_status *st, void *ud)
{
	struct cb_ctx *x = ud;
	(void)c;
	((err_cb)x->fn)(x->arg, status_err(st));
	free(x);
}

static const link_call_cbs conf_cbs = {.on_done = conf_done};

static int k_queue_configure(void *be, const char *queue_p, size_t len,
			     const struct broker_qconf *conf, err_cb cb, void *arg,
			     const char **why)
{
	struct backend_link *bl = be;
	NAME_BUF(queue, queue_p, len);
	char dl[TERN_NAME_MAX_BYTES + 1] = "";
	char *binds[TERN_QUEUE_BINDS_MAX];
	char bindbuf[TERN_QUEUE_BINDS_MAX][TERN_NAME_MAX_BYTES + 1];
	if (conf->has_dead_letter &&
	    cstr(dl, sizeof(dl), conf->dead_letter, conf->dead_letter_len) != 0) {
		*why = "dead_letter: bad queue name";
		return TERN_EBADNAME;
	}
	if (conf->nbind > TERN_QUEUE_BINDS_MAX) {
		*why = "too many bindings";
		return TERN_EBADREQ;
	}
	for (size_t i = 0; i < conf->nbind; i++) {
		if (cstr(bindbuf[i], sizeof(bindbuf[i]), conf->bind[i], conf->bind_lens[i]) != 0) {
			*why = "bind: bad pattern";
			return TERN_EBADNAME;
		}
		binds[i] = bindbuf[i];
	}
	Tern__Data__QueueConfig req = TERN__DATA__QUEUE_CONFIG__INIT;
	req.queue = queue;
	req.has_ack_timeout = conf->has_ack_timeout;
	req.ack_timeout_ms = conf->ack_timeout_ms;
	req.has_max_attempts = conf->has_max_attempts;
	req.max_attempts = conf->max_attempts;
	req.has_dead_letter = conf->has_dead_letter;
	req.dead_letter = dl;
	req.has_bind = conf->has_bind;
	req.n_bind = conf->nbind;
	req.bind = binds;
	int rc = start_cb_call(route_of(bl, queue, len), "ConfigureQueue", &req.base, &conf_cbs,
			       (void (*)(void))cb, arg);
	if (rc != 0)
		*why = "the node owning this queue is unavailable";
	return rc;
}

typedef void (*qinfo_cb)(void *arg, int err, const struct broker_qinfo *info);

static void qinfo_done(link_call *c, const link_status *st, void *ud)
{
	struct cb_ctx *x = ud;
	const Tern__Data__QueueInfo *r =
		st->code == LINK_OK ? (const void *)link_call_last_msg(c) : NULL;
	if (!r) {
		int err = status_err(st);
		((qinfo_cb)x->fn)(x->arg, err ? err : TERN_EINTERNAL, NULL);
	} else {
		struct broker_qinfo q = {
			.name = r->name, .name_len = strlen(r->name), .ready = r->ready,
			.unacked = r->unacked, .consumers = r->consumers, .delivered = r->delivered,
			.redelivered = r->redelivered, .dead_lettered = r->dead_lettered,
			.ack_timeout_ms = r->ack_timeout_ms, .max_attempts = r->max_attempts,
			.dead_letter = r->dead_letter, .bind = (const char *const *)r->bind,
			.nbind = r->n_bind,
		};
		((qinfo_cb)x->fn)(x->arg, 0, &q);
	}
	free(x);
}

static const link_call_cbs qinfo_cbs = {.on_done = qinfo_done};

static int k_queue_info(void *be, const char *queue_p, size_t len, qinfo_cb cb, void *arg)
{
	struct backend_link *bl = be;
	NAME_BUF(queue, queue_p, len);
	Tern__Data__QueueInfoRequest req = TERN__DATA__QUEUE_INFO_REQUEST__INIT;
	req.queue = queue;
	return start_cb_call(route_of(bl, queue, len), "GetQueueInfo", &req.base, &qinfo_cbs,
			     (void (*)(void))cb, arg);
}

const struct backend_ops backend_link_ops = {
	.publish = k_publish,
	.subscribe = k_subscribe,
	.set_clients = k_set_clients,
	.unsubscribe = k_unsubscribe,
	.history = k_history,
	.channel_info = k_channel_info,
	.ready = k_ready,
	.enqueue = k_enqueue,
	.consume = k_consume,
	.set_prefetch = k_set_prefetch,
	.cancel = k_cancel,
	.settle = k_settle,
	.pull = k_pull,
	.pull_cancel = k_pull_cancel,
	.queue_configure = k_queue_configure,
	.queue_info = k_queue_info,
};

/* --- node state: control link, hello, heartbeats ----------------------------------------- */

/* Opens what the node should carry: subscription streams with their channels, consumers. */
static void node_sync(struct bnode *n)
{
	if (!n->up || n->bl->closing)
		return;
	for (unsigned k = 0; k < n->bl->k; k++) {
		struct sstream *ss = &n->ss[k];
		if (list_empty(&ss->subs) || ss_open(ss) != 0)
			continue;
		struct list *pos;
		for (pos = ss->subs.next; pos != &ss->subs; pos = pos->next) {
			struct backend_sub *s = container_of(pos, struct backend_sub, link);
			if (!s->removing)
				sub_add(s);
		}
	}
	struct list *pos;
	for (pos = n->consumers.next; pos != &n->consumers; pos = pos->next) {
		struct backend_consumer *c = container_of(pos, struct backend_consumer, link);
		if (c->fn && !c->call && cons_open(c) != 0)
			resync_soon(n->bl);
	}
}

static void on_resync(uv_timer_t *t)
{
	struct backend_link *bl = t->data;
	for (unsigned i = 0; i < bl->nnodes; i++)
		node_sync(&bl->nodes[i]);
}

static void node_down(struct bnode *n, const char *why)
{
	if (!n->up)
		return;
	n->up = false;
	n->down_total++;
	fprintf(n->bl->log, "tern: node %s down: %s\n", n->addr, why);
	if (n->hb)
		link_call_cancel(n->hb);
	/* Calls in flight on its data links end now with 50300 instead of waiting for them to
	 * time out; the dialers dial again with backoff. */
	link_status st = {.code = LINK_UNAVAILABLE, .retryable = 1, .message = "node down"};
	for (unsigned k = 0; k < n->bl->k; k++) {
		tern_link *l = link_dialer_link(n->data[k]);
		if (l)
			link_close(l, &st);
	}
}

static void on_hb_msg(link_call *c, const ProtobufCMessage *msg, void *ud)
{
	struct bnode *n = ud;
	const Tern__Control__Heartbeat *hb = (const void *)msg;
	(void)c;
	uint64_t now = uv_hrtime() / 1000;
	if (hb->sent_us && hb->sent_us <= now) {
		n->rtt_us = now - hb->sent_us;
		if (n->rtt_us > n->rtt_max_us)
			n->rtt_max_us = n->rtt_us;
	}
	n->hb_count++;
	if (hb->draining)
		node_down(n, "draining");
}

static void on_hb_done(link_call *c, const link_status *st, void *ud)
{
	struct bnode *n = ud;
	(void)c;
	(void)st;
	n->hb = NULL;
}

static const link_call_cbs hb_cbs = {.on_msg = on_hb_msg, .on_done = on_hb_done};

static void on_hb_timer(uv_timer_t *t)
{
	struct backend_link *bl = t->data;
	for (unsigned i = 0; i < bl->nnodes; i++) {
		struct bnode *n = &bl->nodes[i];
		tern_link *l = n->up ? link_dialer_link(n->ctl) : NULL;
		if (!l)
			continue;
		if (!n->hb && link_call_start(l, CTL_SVC, "Heartbeats", NULL, &hb_cbs, n, &n->hb) != 0)
			continue;
		Tern__Control__Heartbeat hb = TERN__CONTROL__HEARTBEAT__INIT;
		hb.id = (char *)bl->cfg->node_id;
		hb.seq = ++n->hb_seq;
		hb.sent_us = uv_hrtime() / 1000;
		hb.draining = bl->closing;
		link_call_send(n->hb, &hb.base); /* -EAGAIN: this beat is skipped */
	}
}

static void on_hello(link_call *c, const link_status *st, const ProtobufCMessage *resp, void *ud)
{
	struct bnode *n = ud;
	struct backend_link *bl = n->bl;
	if (st->code != LINK_OK || !resp) {
		fprintf(bl->log, "tern: node %s refused hello: %s %s\n", n->addr,
			link_code_name(st->code), st->message ? st->message : "");
		return; /* not up: requests for its names get 50300 */
	}
	const Tern__Control__HelloResponse *r = (const void *)resp;
	if (link_call_link(c) != link_dialer_link(n->ctl))
		return; /* a hello of a link that is already gone */
	snprintf(n->id, sizeof(n->id), "%s", r->id);
	n->up = true;
	fprintf(bl->log, "tern: node %s up (id %s, region %s)\n", n->addr, r->id, r->region);
	node_sync(n);
}

static void on_ctl_up(link_dialer *d, tern_link *l, void *ud)
{
	struct bnode *n = ud;
	struct backend_link *bl = n->bl;
	(void)d;
	Tern__Control__HelloRequest req = TERN__CONTROL__HELLO_REQUEST__INIT;
	req.id = (char *)bl->cfg->node_id;
	req.role = TERN__CONTROL__ROLE__ROLE_EDGE;
	req.region = (char *)bl->cfg->region;
	req.version = TERN_VERSION;
	req.data_links = bl->k;
	link_unary(l, CTL_SVC, "Hello", &req.base, NULL, on_hello, n); /* fails only if l is gone */
}

static void on_ctl_down(link_dialer *d, const link_status *st, uint32_t delay_ms, void *ud)
{
	struct bnode *n = ud;
	(void)d;
	(void)delay_ms;
	char why[160];
	snprintf(why, sizeof(why), "control link: %s%s%s", link_code_name(st->code),
		 st->message ? " " : "", st->message ? st->message : "");
	node_down(n, why);
}

static void on_data_up(link_dialer *d, tern_link *l, void *ud)
{
	struct bnode *n = ud;
	(void)d;
	(void)l;
	node_sync(n);
}

/* --- life cycle and metrics --------------------------------------------------------------- */

static int parse_nodes(struct backend_link *bl, char *why, size_t why_len)
{
	const char *p = bl->cfg->nodes;
	unsigned count = 1;
	for (const char *q = p; *q; q++)
		count += *q == ',';
	if (!*p) {
		snprintf(why, why_len, "no nodes given (--nodes HOST:PORT,...)");
		return -1;
	}
	if (count > TERN_NODES_MAX) {
		snprintf(why, why_len, "at most %d nodes", TERN_NODES_MAX);
		return -1;
	}
	bl->nodes = calloc(count, sizeof(*bl->nodes));
	if (!bl->nodes) {
		snprintf(why, why_len, "out of memory");
		return -1;
	}
	while (*p) {
		size_t len = strcspn(p, ",");
		struct bnode *n = &bl->nodes[bl->nnodes];
		if (len == 0 || len >= sizeof(n->addr)) {
			snprintf(why, why_len, "--nodes: empty or too long entry");
			return -1;
		}
		memcpy(n->addr, p, len);
		n->addr[len] = 0;
		if (config_split_hostport(n->addr, n->host, sizeof(n->host), &n->port) != 0 ||
		    n->port <= 0) {
			snprintf(why, why_len, "--nodes: expected HOST:PORT, got '%s'", n->addr);
			return -1;
		}
		for (unsigned i = 0; i < bl->nnodes; i++)
			if (strcmp(bl->nodes[i].addr, n->addr) == 0) {
				snprintf(why, why_len, "--nodes: '%s' given twice", n->addr);
				return -1;
			}
		bl->nnodes++;
		p += len;
		if (*p == ',')
			p++;
	}
	return 0;
}

struct backend_link *backend_link_new(uv_loop_t *loop, const struct tern_config *cfg, FILE *log,
				      char *why, size_t why_len)
{
	struct backend_link *bl = calloc(1, sizeof(*bl));
	if (!bl) {
		snprintf(why, why_len, "out of memory");
		return NULL;
	}
	bl->loop = loop;
	bl->cfg = cfg;
	bl->log = log;
	bl->k = (unsigned)cfg->links;
	if (parse_nodes(bl, why, why_len) != 0) {
		free(bl->nodes);
		free(bl);
		return NULL;
	}
	hmap_init(&bl->subs);
	list_init(&bl->pulls);
	bl->trace_prefix = (uint32_t)(uv_hrtime() ^ ((uint64_t)getpid() << 16));
	size_t ni = 0;
	if (cfg->log_calls != TERN_LOG_CALLS_OFF) {
		bl->mw_log.out = log;
		bl->mw_log.errors_only = cfg->log_calls == TERN_LOG_CALLS_ERRORS;
		bl->icpt[ni++] = link_mw_log_interceptor(&bl->mw_log);
	}
	bl->icpt[ni++] = link_mw_methods_interceptor(&bl->mw_methods);
	link_config base = {
		.node_id = cfg->node_id, .region = cfg->region, .interceptors = bl->icpt,
		.interceptor_count = ni, .ud = bl,
	};
	bl->ctl_cfg = base;
	bl->ctl_cfg.plane = LINK_PLANE_CONTROL;
	/* Liveness: a ping every quarter of the timeout, dead after four silent quarters. Small
	 * socket buffers keep a heartbeat from queueing behind anything. */
	bl->ctl_cfg.ping_interval_ms = (uint32_t)(cfg->node_timeout_ms / 4);
	bl->ctl_cfg.dead_after = 4;
	bl->ctl_cfg.handshake_timeout_ms = (uint32_t)cfg->node_timeout_ms;
	bl->ctl_cfg.sockbuf_bytes = 64 * 1024;
	bl->data_cfg = base;
	bl->data_cfg.plane = LINK_PLANE_DATA;
	bl->data_cfg.max_streams = 65536;
	bl->data_cfg.stream_sendbuf = 8u * 1024 * 1024;
	bl->data_cfg.handshake_timeout_ms = (uint32_t)cfg->node_timeout_ms;
	uv_timer_init(loop, &bl->hb_timer);
	uv_timer_init(loop, &bl->resync);
	bl->hb_timer.data = bl->resync.data = bl;
	for (unsigned i = 0; i < bl->nnodes; i++) {
		struct bnode *n = &bl->nodes[i];
		n->bl = bl;
		list_init(&n->consumers);
		link_dialer_opts co = {.on_up = on_ctl_up, .on_down = on_ctl_down, .ud = n};
		link_dialer_opts dopt = {.on_up = on_data_up, .ud = n};
		for (unsigned k = 0; k < bl->k; k++) {
			n->ss[k].n = n;
			n->ss[k].k = k;
			list_init(&n->ss[k].subs);
		}
		if (link_dialer_start(loop, &bl->ctl_cfg, n->host, n->port, &co, &n->ctl) != 0)
			goto fail;
		for (unsigned k = 0; k < bl->k; k++)
			if (link_dialer_start(loop, &bl->data_cfg, n->host, n->port, &dopt,
					      &n->data[k]) != 0)
				goto fail;
	}
	uint64_t beat = cfg->node_timeout_ms / 4;
	uv_timer_start(&bl->hb_timer, on_hb_timer, beat, beat);
	return bl;
fail:
	snprintf(why, why_len, "cannot start the links to the nodes");
	/* backend_link_close releases what was started; the loop finishes it. */
	backend_link_close(bl, NULL, NULL);
	return NULL;
}

static void close_step(void *arg)
{
	struct backend_link *bl = arg;
	if (--bl->closing_left)
		return;
	hmap_destroy(&bl->subs);
	if (bl->done)
		bl->done(bl->done_arg);
	free(bl->nodes);
	free(bl);
}

static void on_timer_closed(uv_handle_t *h) { close_step(h->data); }

void backend_link_close(struct backend_link *bl, void (*done)(void *arg), void *arg)
{
	bl->closing = true;
	bl->done = done;
	bl->done_arg = arg;
	bl->closing_left = 3; /* two timers, plus this function's own step */
	uv_close((uv_handle_t *)&bl->hb_timer, on_timer_closed);
	uv_close((uv_handle_t *)&bl->resync, on_timer_closed);
	for (unsigned i = 0; i < bl->nnodes; i++) {
		struct bnode *n = &bl->nodes[i];
		n->up = false;
		if (n->ctl) {
			bl->closing_left++;
			link_dialer_stop(n->ctl, close_step, bl);
		}
		for (unsigned k = 0; k < bl->k; k++)
			if (n->data[k]) {
				bl->closing_left++;
				link_dialer_stop(n->data[k], close_step, bl);
			}
	}
	close_step(bl);
}

void backend_link_release_pulls(struct backend_link *bl)
{
	struct list *pos;
	for (pos = bl->pulls.next; pos != &bl->pulls; pos = pos->next) {
		struct backend_pull *p = container_of(pos, struct backend_pull, link);
		broker_pull_cb cb = p->cb;
		p->cb = NULL;
		link_call_cancel(p->call); /* the node withdraws it; pull_done frees p later */
		if (cb)
			cb(p->arg, 0, NULL, 0);
	}
}

void backend_link_metrics(struct backend_link *bl, FILE *out)
{
	static const char *const help[][3] = {
		{"tern_node_up", "gauge", "1 when the node's control link is up and it said hello"},
		{"tern_node_down_total", "counter", "Times the node went from up to down"},
		{"tern_node_rtt_seconds", "gauge", "Last heartbeat round trip on the control link"},
		{"tern_node_rtt_max_seconds", "gauge", "Largest heartbeat round trip seen"},
		{"tern_node_heartbeats_total", "counter", "Heartbeats echoed by the node"},
		{"tern_node_data_links_up", "gauge", "Usable data links to the node"},
	};
	for (size_t m = 0; m < sizeof(help) / sizeof(help[0]); m++) {
		fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", help[m][0], help[m][2], help[m][0],
			help[m][1]);
		for (unsigned i = 0; i < bl->nnodes; i++) {
			struct bnode *n = &bl->nodes[i];
			unsigned links = 0;
			for (unsigned k = 0; k < bl->k; k++)
				links += link_dialer_link(n->data[k]) != NULL;
			fprintf(out, "%s{node=\"%s\"} ", help[m][0], n->addr);
			switch (m) {
			case 0: fprintf(out, "%d\n", n->up); break;
			case 1: fprintf(out, "%" PRIu64 "\n", n->down_total); break;
			case 2: fprintf(out, "%.6f\n", (double)n->rtt_us / 1e6); break;
			case 3: fprintf(out, "%.6f\n", (double)n->rtt_max_us / 1e6); break;
			case 4: fprintf(out, "%" PRIu64 "\n", n->hb_count); break;
			default: fprintf(out, "%u\n", links); break;
			}
		}
	}
	link_mw_methods_write(&bl->mw_methods, out);
}
