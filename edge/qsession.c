/* Queue ops on a WebSocket session: enqueue, consume (one consumer per queue
 * per connection), delivery frames, ack/nack and cancel. A connection that
 * goes away cancels its consumers, which gives their unacked deliveries back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "names.h"
#include "tern_err.h"

struct sconsumer {
	struct list link; /* in session->consumers */
	struct session *s;
	struct backend_consumer *c;
	size_t qlen;
	char queue[];
};

struct qreq {
	struct session *s;
	bool has_ref;
	uint64_t ref;
};

static struct qreq *qreq_new(struct session *s, const struct wire_req *req)
{
	struct qreq *q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->s = s;
	q->has_ref = req->has_ref;
	q->ref = req->ref;
	s->refs++;
	return q;
}

static void qreq_free(struct qreq *q)
{
	session_put(q->s);
	free(q);
}

static bool live(const struct session *s) { return s->wsi && !s->close_code; }

static void enq_done(void *arg, int err, uint64_t seq, const char *id)
{
	struct qreq *q = arg;
	(void)seq;
	if (live(q->s)) {
		if (err != 0) {
			session_send_error(q->s, q->has_ref, q->ref, err, tern_err_str(err));
		} else {
			char extra[64];
			snprintf(extra, sizeof(extra), ",\"id\":\"%s\"", id);
			session_send_ok(q->s, q->has_ref, q->ref, extra);
		}
	}
	qreq_free(q);
}

static int do_enqueue(struct session *s, const struct wire_req *req, const char **why)
{
	struct edge *e = s->e;
	struct qreq *q = qreq_new(s, req);
	if (!q) {
		*why = "out of memory";
		return TERN_EUNAVAIL;
	}
	struct broker_enq en = {
		.queue = req->queue, .queue_len = req->queue_len,
		.data = req->pub.data, .data_len = req->pub.data_len, .enc = req->pub.enc,
		.idem_key = req->pub.idem, .idem_len = req->pub.idem_len,
	};
	int rc = e->be_ops->enqueue(e->be, &en, enq_done, q, why);
	if (rc != 0)
		qreq_free(q);
	return rc;
}

static void on_delivery(void *arg, const struct broker_delivery *d)
{
	struct sconsumer *sc = arg;
	struct fbuf b;
	fbuf_init(&b, 160 + d->queue_len + d->msg->data_len * 4 / 3 + d->msg->chan_len);
	wire_put_delivery(&b, d, true);
	struct frame *f = fbuf_finish(&b);
	if (!f) {
		session_close(sc->s, 1011);
		return;
	}
	session_send(sc->s, f);
	frame_unref(f);
}

static struct sconsumer *find_consumer(struct session *s, const char *queue, size_t len)
{
	struct list *pos;
	for (pos = s->consumers.next; pos != &s->consumers; pos = pos->next) {
		struct sconsumer *sc = container_of(pos, struct sconsumer, link);
		if (sc->qlen == len && memcmp(sc->queue, queue, len) == 0)
			return sc;
	}
	return NULL;
}

static int do_consume(struct session *s, const struct wire_req *req, const char **why)
{
	struct edge *e = s->e;
	int rc = names_check_queue(req->queue, req->queue_len, why);
	if (rc != 0)
		return rc;
	struct sconsumer *sc = find_consumer(s, req->queue, req->queue_len);
	if (sc) { /* contract: consuming again updates prefetch */
		rc = e->be_ops->set_prefetch(e->be, sc->c, req->prefetch);
		if (rc == 0)
			session_send_ok(s, req->has_ref, req->ref, "");
		return rc;
	}
	sc = calloc(1, sizeof(*sc) + req->queue_len + 1);
	if (!sc) {
		*why = "out of memory";
		return TERN_EUNAVAIL;
	}
	memcpy(sc->queue, req->queue, req->queue_len);
	sc->qlen = req->queue_len;
	sc->s = s;
	/* The ok goes out before any delivery: the broker's first dispatch
	 * runs from its next poll, after this frame is queued. */
	rc = e->be_ops->consume(e->be, sc->queue, sc->qlen, req->prefetch, on_delivery, sc, &sc->c);
	if (rc != 0) {
		free(sc);
		*why = "cannot consume this queue";
		return rc;
	}
	list_insert_tail(&s->consumers, &sc->link);
	session_send_ok(s, req->has_ref, req->ref, "");
	return 0;
}

static void consumer_free(struct session *s, struct sconsumer *sc)
{
	list_remove(&sc->link);
	s->e->be_ops->cancel(s->e->be, sc->c);
	free(sc);
}

void qsession_drop(struct session *s)
{
	while (!list_empty(&s->consumers))
		consumer_free(s, container_of(s->consumers.next, struct sconsumer, link));
}

static void settle_done(void *arg, int err)
{
	struct qreq *q = arg;
	if (live(q->s)) {
		if (err != 0)
			session_send_error(q->s, q->has_ref, q->ref, err,
					   err == TERN_ENOTFOUND ? "unknown or stale delivery_id"
								 : tern_err_str(err));
		else
			session_send_ok(q->s, q->has_ref, q->ref, "");
	}
	qreq_free(q);
}

static int do_settle(struct session *s, const struct wire_req *req, const char **why)
{
	struct edge *e = s->e;
	int rc = names_check_queue(req->queue, req->queue_len, why);
	if (rc != 0)
		return rc;
	struct qreq *q = qreq_new(s, req);
	if (!q) {
		*why = "out of memory";
		return TERN_EUNAVAIL;
	}
	rc = e->be_ops->settle(e->be, req->queue, req->queue_len, req->delivery_id,
			       req->delivery_id_len, req->op == WIRE_OP_ACK, req->requeue,
			       settle_done, q);
	if (rc != 0) {
		qreq_free(q);
		*why = "cannot settle now";
	}
	return rc;
}

int qsession_handle(struct session *s, const struct wire_req *req, const char **why)
{
	switch (req->op) {
	case WIRE_OP_ENQUEUE:
		return do_enqueue(s, req, why);
	case WIRE_OP_CONSUME:
		return do_consume(s, req, why);
	case WIRE_OP_ACK:
	case WIRE_OP_NACK:
		return do_settle(s, req, why);
	case WIRE_OP_CANCEL: {
		int rc = names_check_queue(req->queue, req->queue_len, why);
		if (rc != 0)
			return rc;
		struct sconsumer *sc = find_consumer(s, req->queue, req->queue_len);
		if (sc)
			consumer_free(s, sc);
		session_send_ok(s, req->has_ref, req->ref, "");
		return 0;
	}
	default:
		*why = "unknown op";
		return TERN_EBADREQ;
	}
}
