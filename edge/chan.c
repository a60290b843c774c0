/* Subscription aggregation: sessions subscribe to an edge_chan; the edge_chan
 * holds one upstream subscription. A session that asks for history gets it
 * page by page up to the seq the channel stood at when it subscribed, while
 * live messages after that seq are held for it, so it sees every seq once. */
#include <stdlib.h>
#include <string.h>

#include "tern_err.h"
#include "internal.h"
#include "tern_limits.h"
#include "names.h"

struct hist_req {
	struct esub *es; /* NULL once the subscription is gone */
};

static void esub_fetch(struct esub *es);

static void chan_free(struct edge_chan *ec)
{
	struct edge *e = ec->e;
	if (ec->up) {
		e->be_ops->unsubscribe(e->be, ec->up);
		e->st.upstream_subs--;
	}
	hmap_del(&e->chans, &ec->node);
	free(ec);
}

static void held_clear(struct esub *es)
{
	for (size_t i = 0; i < es->nheld; i++)
		frame_unref(es->held[i]);
	free(es->held);
	es->held = NULL;
	es->nheld = es->capheld = es->held_bytes = 0;
}

static void esub_free(struct esub *es)
{
	struct session *s = es->s;
	struct edge_chan *ec = es->ec;
	if (es->hist)
		es->hist->es = NULL;
	if (es->wait_drain)
		s->waiting_drain--;
	held_clear(es);
	list_remove(&es->chan_link);
	list_remove(&es->sess_link);
	s->nsubs--;
	s->e->st.subscriptions--;
	ec->nsubs--;
	free(es);
	if (ec->nsubs == 0)
		chan_free(ec);
	else if (ec->up)
		ec->e->be_ops->set_clients(ec->e->be, ec->up, ec->nsubs);
}

static void reply_subscribed(struct esub *es)
{
	char extra[48];
	snprintf(extra, sizeof(extra), ",\"seq\":%llu", (unsigned long long)es->boundary);
	session_send_ok(es->s, es->has_ref, es->ref, extra);
}

/* The channel is ready: fix the boundary, answer, start history if asked. */
static void esub_start(struct esub *es)
{
	uint64_t last = es->ec->last_seq;
	es->boundary = last;
	reply_subscribed(es);
	if (es->want_rewind && es->rewind > 0)
		es->hist_after = es->rewind >= last ? 0 : last - es->rewind;
	else if (es->want_from)
		es->hist_after = es->from_seq;
	else
		es->hist_after = last;
	if (es->hist_after >= last) {
		es->state = ES_LIVE;
		return;
	}
	es->state = ES_CATCHUP;
	esub_fetch(es);
}

static void esub_go_live(struct esub *es)
{
	struct session *s = es->s;
	es->state = ES_LIVE;
	for (size_t i = 0; i < es->nheld && s->close_code == 0; i++)
		session_send(s, es->held[i]);
	held_clear(es);
}

static void wait_for_drain(struct esub *es)
{
	if (!es->wait_drain) {
		es->wait_drain = true;
		es->s->waiting_drain++;
	}
}

/* Sends one page of history. It stops early when the session's queue is half
 * full, and resumes from the last seq sent once the queue drains, so catching
 * up never trips the slow-consumer bound on its own. */
static void hist_done(void *arg, int err, struct tern_msg **msgs, size_t n)
{
	struct hist_req *hr = arg;
	struct esub *es = hr->es;
	free(hr);
	if (es) {
		es->hist = NULL;
		struct session *s = es->s;
		size_t half = s->e->cfg->session_queue_max_bytes / 2;
		bool paused = false;
		for (size_t i = 0; i < n && s->close_code == 0; i++) {
			if (msgs[i]->seq <= es->hist_after || msgs[i]->seq > es->boundary)
				continue;
			if (s->qbytes > 0 && s->qbytes + msgs[i]->data_len > half) {
				paused = true;
				break;
			}
			struct frame *f = wire_msg_frame(msgs[i]);
			if (!f) {
				session_close(s, 1011);
				break;
			}
			session_send(s, f);
			frame_unref(f);
			es->hist_after = msgs[i]->seq;
		}
		if (err != 0 && s->close_code == 0)
			session_send_error(s, false, 0, err, "history could not be read");
		/* A short page means the store holds no more up to the boundary. */
		if (!paused && (err != 0 || n < TERN_HISTORY_PAGE_MAX))
			es->hist_after = es->boundary;
		if (s->close_code == 0) {
			if (es->hist_after >= es->boundary)
				esub_go_live(es);
			else if (paused)
				wait_for_drain(es);
			else
				esub_fetch(es);
		}
	}
	for (size_t i = 0; i < n; i++)
		msg_unref(msgs[i]);
	free(msgs);
}

static void esub_fetch(struct esub *es)
{
	struct session *s = es->s;
	struct edge *e = s->e;
	if (s->qbytes > e->cfg->session_queue_max_bytes / 2) {
		wait_for_drain(es);
		return;
	}
	struct hist_req *hr = calloc(1, sizeof(*hr));
	if (!hr) {
		session_close(s, 1011);
		return;
	}
	uint64_t left = es->boundary - es->hist_after;
	struct broker_hist h = {
		.chan = es->ec->name,
		.chan_len = es->ec->node.klen,
		.after_seq = es->hist_after,
		.before_seq = es->boundary + 1,
		.limit = left < TERN_HISTORY_PAGE_MAX ? (uint32_t)left : TERN_HISTORY_PAGE_MAX,
	};
	hr->es = es;
	int rc = e->be_ops->history(e->be, &h, hist_done, hr);
	if (rc != 0) {
		free(hr);
		session_send_error(s, false, 0, rc, "history could not be read");
		es->hist_after = es->boundary;
		esub_go_live(es);
		return;
	}
	es->hist = hr;
}

void echan_resume_drained(struct session *s)
{
	struct list *pos, *tmp;
	if (s->waiting_drain == 0 || s->qbytes > s->e->cfg->session_queue_max_bytes / 2)
		return;
	list_foreach_safe(pos, tmp, &s->subs) {
		struct esub *es = container_of(pos, struct esub, sess_link);
		if (es->wait_drain) {
			es->wait_drain = false;
			s->waiting_drain--;
			esub_fetch(es);
		}
	}
}

static void hold(struct esub *es, struct frame *f)
{
	struct session *s = es->s;
	if (es->held_bytes + s->qbytes + f->len > s->e->cfg->session_queue_max_bytes ||
	    es->nheld >= TERN_SESSION_QUEUE_FRAMES_MAX) {
		session_close(s, 4008);
		return;
	}
	if (es->nheld == es->capheld) {
		size_t cap = es->capheld ? es->capheld * 2 : 16;
		struct frame **h = realloc(es->held, cap * sizeof(*h));
		if (!h) {
			session_close(s, 1011);
			return;
		}
		es->held = h;
		es->capheld = cap;
	}
	es->held[es->nheld++] = frame_ref(f);
	es->held_bytes += f->len;
}

/* Upstream delivery: encode once, share the frame with every session. */
static void on_upstream_msg(void *arg, struct tern_msg *m)
{
	struct edge_chan *ec = arg;
	struct frame *f = NULL;
	struct list *pos, *tmp;
	ec->last_seq = m->seq;
	list_foreach_safe(pos, tmp, &ec->subs) {
		struct esub *es = container_of(pos, struct esub, chan_link);
		if (es->state == ES_WAIT_UPSTREAM || es->s->close_code != 0)
			continue;
		if (!f && !(f = wire_msg_frame(m))) {
			/* Out of memory: a gap must never be silent, so close. */
			session_close(es->s, 1011);
			continue;
		}
		if (es->state == ES_CATCHUP)
			hold(es, f);
		else
			session_send(es->s, f);
	}
	frame_unref(f);
}

static void on_upstream_ready(void *arg, int err, uint64_t last_seq)
{
	struct edge_chan *ec = arg;
	struct list *pos, *tmp;
	if (err != 0) {
		ec->up = NULL;
		ec->e->st.upstream_subs--;
		list_foreach_safe(pos, tmp, &ec->subs) {
			struct esub *es = container_of(pos, struct esub, chan_link);
			session_send_error(es->s, es->has_ref, es->ref, err, "subscribe failed");
			esub_free(es); /* frees ec with the last one */
		}
		return;
	}
	ec->ready = true;
	ec->last_seq = last_seq;
	list_foreach_safe(pos, tmp, &ec->subs) {
		struct esub *es = container_of(pos, struct esub, chan_link);
		if (es->state == ES_WAIT_UPSTREAM)
			esub_start(es);
	}
}

static struct edge_chan *chan_get(struct edge *e, const char *name, size_t len, int *err)
{
	struct hmap_node *n = hmap_get(&e->chans, name, len);
	if (n)
		return container_of(n, struct edge_chan, node);
	struct edge_chan *ec = calloc(1, sizeof(*ec) + len + 1);
	if (!ec) {
		*err = TERN_EUNAVAIL;
		return NULL;
	}
	memcpy(ec->name, name, len);
	ec->e = e;
	list_init(&ec->subs);
	if (hmap_put(&e->chans, &ec->node, ec->name, len) != 0) {
		free(ec);
		*err = TERN_EUNAVAIL;
		return NULL;
	}
	*err = e->be_ops->subscribe(e->be, ec->name, len, 1, on_upstream_msg, ec,
				    on_upstream_ready, ec, &ec->up);
	if (*err != 0) {
		ec->up = NULL;
		hmap_del(&e->chans, &ec->node);
		free(ec);
		return NULL;
	}
	e->st.upstream_subs++;
	return ec;
}

static struct esub *find_sub(struct session *s, const char *name, size_t len)
{
	struct list *pos, *tmp;
	list_foreach_safe(pos, tmp, &s->subs) {
		struct esub *es = container_of(pos, struct esub, sess_link);
		if (es->ec->node.klen == len && memcmp(es->ec->name, name, len) == 0)
			return es;
	}
	return NULL;
}

int echan_subscribe(struct session *s, const struct wire_req *req, const char **why)
{
	struct edge *e = s->e;
	int rc = names_check_channel(req->channel, req->channel_len, why);
	if (rc != 0)
		return rc;
	struct esub *es = find_sub(s, req->channel, req->channel_len);
	if (es) { /* contract: subscribing again is a no-op ok */
		char extra[48];
		snprintf(extra, sizeof(extra), ",\"seq\":%llu",
			 (unsigned long long)es->ec->last_seq);
		session_send_ok(s, req->has_ref, req->ref, extra);
		return 0;
	}
	if (s->nsubs >= TERN_SESSION_SUBS_MAX) {
		*why = "too many subscriptions on this connection";
		return TERN_ERATELIMIT;
	}
	es = calloc(1, sizeof(*es));
	struct edge_chan *ec = es ? chan_get(e, req->channel, req->channel_len, &rc) : NULL;
	if (!ec) {
		free(es);
		*why = "cannot subscribe now";
		return rc ? rc : TERN_EUNAVAIL;
	}
	es->s = s;
	es->ec = ec;
	es->has_ref = req->has_ref;
	es->ref = req->ref;
	es->want_rewind = req->has_rewind;
	es->rewind = req->rewind;
	es->want_from = req->has_from;
	es->from_seq = req->from_seq;
	es->state = ES_WAIT_UPSTREAM;
	list_insert_tail(&ec->subs, &es->chan_link);
	list_insert_tail(&s->subs, &es->sess_link);
	ec->nsubs++;
	s->nsubs++;
	e->st.subscriptions++;
	if (ec->up && ec->nsubs > 1)
		e->be_ops->set_clients(e->be, ec->up, ec->nsubs);
	if (ec->ready)
		esub_start(es);
	return 0;
}

void echan_unsubscribe(struct session *s, const char *name, size_t len)
{
	struct esub *es = find_sub(s, name, len);
	if (es)
		esub_free(es);
}

void echan_drop_session(struct session *s)
{
	while (!list_empty(&s->subs))
		esub_free(container_of(s->subs.next, struct esub, sess_link));
}
