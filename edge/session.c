/* WebSocket sessions speaking tern.v1.json: reassembly with a size check
 * before buffering, dispatch of client ops, and a bounded outbound queue of
 * shared frames written only when the socket is writable. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "tern_err.h"
#include "internal.h"
#include "tern_limits.h"

/* lws-write.h reserves 4 for the close opcode ("handled by lws_close_reason()"),
 * which does not reach the wire from a writeable callback in lws 4.1. */
#define LWS_WRITE_CLOSE_FRAME ((enum lws_write_protocol)4)

static void sessions_flush_cb(uv_check_t *h)
{
	sessions_flush(h->data);
}

static void sessions_linger_cb(uv_timer_t *t)
{
	sessions_flush(t->data);
}

/* Frames queued now go out after this loop turn's I/O, or, while the edge is behind, a
 * little later (see sessions_flush). */
static void arm_flush(struct edge *e)
{
	e->dirty_since_ns = uv_hrtime();
	if (e->lingering) {
		e->st.flush_lingers++;
		uv_timer_start(&e->linger, sessions_linger_cb, e->cfg->flush_linger_ms, 0);
	} else {
		uv_check_start(&e->flush, (uv_check_cb)sessions_flush_cb);
	}
}

struct pub_ctx {
	struct session *s;
	bool has_ref;
	uint64_t ref;
};

static struct session *session_new(struct edge *e, struct lws *wsi)
{
	struct session *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->e = e;
	s->wsi = wsi;
	s->refs = 1;
	list_init(&s->subs);
	list_init(&s->consumers);
	list_init(&s->dirty_link);
	list_insert_tail(&e->sessions, &s->link);
	snprintf(s->id, sizeof(s->id), "%s-%llx", e->conn_prefix,
		 (unsigned long long)++e->conn_counter);
	s->last_tx_ms = edge_now_ms(e);
	e->st.connections++;
	e->st.connections_total++;
	return s;
}

static void queue_clear(struct session *s)
{
	while (s->qlen) {
		frame_unref(s->q[s->qhead]);
		s->qhead = (s->qhead + 1) % s->qcap;
		s->qlen--;
	}
	s->qbytes = 0;
}

void session_put(struct session *s)
{
	if (--s->refs)
		return;
	session_undirty(s);
	queue_clear(s);
	free(s->q);
	free(s->rx);
	free(s);
}

static int queue_push(struct session *s, struct frame *f)
{
	if (s->qlen == s->qcap) {
		size_t cap = s->qcap ? s->qcap * 2 : 8;
		struct frame **q = malloc(cap * sizeof(*q));
		if (!q)
			return -1;
		for (size_t i = 0; i < s->qlen; i++)
			q[i] = s->q[(s->qhead + i) % s->qcap];
		free(s->q);
		s->q = q;
		s->qhead = 0;
		s->qcap = cap;
	}
	s->q[(s->qhead + s->qlen) % s->qcap] = frame_ref(f);
	s->qlen++;
	s->qbytes += f->len;
	return 0;
}

/* Ends the session after what is queued: the close frame carries code. For
 * 4008 the backlog is dropped first and only the error frame goes out, so a
 * slow reader's memory is released at once. */
void session_close(struct session *s, int code)
{
	if (!s->wsi || s->close_code)
		return;
	if (code == 4008) {
		queue_clear(s);
		s->e->st.slow_closes++;
		struct frame *f = wire_error_frame(false, 0, TERN_ESLOW, tern_err_str(TERN_ESLOW));
		if (f) {
			queue_push(s, f);
			frame_unref(f);
		}
	}
	s->close_code = code;
	echan_drop_session(s);
	qsession_drop(s);
	lws_callback_on_writable(s->wsi);
}

void session_send(struct session *s, struct frame *f)
{
	/* While going away (1001) replies still go out; subscriptions are gone. */
	if (!s->wsi || (s->close_code && s->close_code != 1001))
		return;
	if (s->qbytes + f->len > s->e->cfg->session_queue_max_bytes ||
	    s->qlen >= TERN_SESSION_QUEUE_FRAMES_MAX) {
		session_close(s, 4008);
		return;
	}
	if (queue_push(s, f) != 0) {
		session_close(s, 1011);
		return;
	}
	if (!list_linked(&s->dirty_link)) {
		struct edge *e = s->e;
		if (list_empty(&e->dirty))
			arm_flush(e);
		list_insert_tail(&e->dirty, &s->dirty_link);
	}
}

void session_undirty(struct session *s)
{
	if (list_linked(&s->dirty_link)) {
		list_remove(&s->dirty_link);
		list_init(&s->dirty_link);
	}
}

static void send_owned(struct session *s, struct frame *f)
{
	if (!f) {
		session_close(s, 1011);
		return;
	}
	session_send(s, f);
	frame_unref(f);
}

void session_send_ok(struct session *s, bool has_ref, uint64_t ref, const char *extra)
{
	if (has_ref)
		send_owned(s, wire_ok_frame(true, ref, extra ? extra : ""));
}

void session_send_error(struct session *s, bool has_ref, uint64_t ref, int err, const char *why)
{
	s->e->st.protocol_errors++;
	send_owned(s, wire_error_frame(has_ref, ref, err, why ? why : tern_err_str(err)));
}

static void set_rx_paused(struct session *s, bool paused)
{
	if (s->rx_paused == paused || !s->wsi)
		return;
	s->rx_paused = paused;
	lws_rx_flow_control(s->wsi, paused ? 0 : 1);
}

static void pub_done(void *arg, int err, uint64_t seq, const char *id)
{
	struct pub_ctx *pc = arg;
	struct session *s = pc->s;
	s->inflight--;
	if (s->wsi && s->close_code == 1001)
		lws_callback_on_writable(s->wsi);
	if (s->wsi && (!s->close_code || s->close_code == 1001)) {
		if (err != 0) {
			session_send_error(s, pc->has_ref, pc->ref, err, tern_err_str(err));
		} else {
			s->e->st.messages_in++;
			char extra[96];
			snprintf(extra, sizeof(extra), ",\"seq\":%llu,\"id\":\"%s\"",
				 (unsigned long long)seq, id);
			session_send_ok(s, pc->has_ref, pc->ref, extra);
		}
		if (s->inflight < TERN_SESSION_INFLIGHT_MAX / 2)
			set_rx_paused(s, false);
	}
	free(pc);
	session_put(s);
}

static int do_publish(struct session *s, struct wire_req *req, const char **why)
{
	struct edge *e = s->e;
	struct pub_ctx *pc = calloc(1, sizeof(*pc));
	if (!pc) {
		*why = "out of memory";
		return TERN_EUNAVAIL;
	}
	struct broker_pub p = {
		.chan = req->channel,
		.chan_len = req->channel_len,
		.name = req->pub.has_name ? req->pub.name : NULL,
		.name_len = req->pub.name_len,
		.data = req->pub.data,
		.data_len = req->pub.data_len,
		.enc = req->pub.enc,
		.idem_key = req->pub.idem,
		.idem_len = req->pub.idem_len,
	};
	pc->s = s;
	pc->has_ref = req->has_ref;
	pc->ref = req->ref;
	int rc = e->be_ops->publish(e->be, &p, pub_done, pc, why);
	if (rc != 0) {
		free(pc);
		return rc;
	}
	s->refs++;
	if (++s->inflight >= TERN_SESSION_INFLIGHT_MAX)
		set_rx_paused(s, true);
	return 0;
}

static void handle_frame(struct session *s, const char *buf, size_t len)
{
	struct wire_req req;
	const char *why = NULL;
	int rc = wire_parse_client(buf, len, s->e->cfg->max_message_bytes, &req, &why);
	if (rc == 0) {
		switch (req.op) {
		case WIRE_OP_SUBSCRIBE:
			rc = echan_subscribe(s, &req, &why);
			break;
		case WIRE_OP_UNSUBSCRIBE:
			echan_unsubscribe(s, req.channel, req.channel_len);
			session_send_ok(s, req.has_ref, req.ref, "");
			break;
		case WIRE_OP_PUBLISH:
			rc = do_publish(s, &req, &why);
			break;
		case WIRE_OP_PING: {
			char pong[48];
			if (req.has_ref)
				snprintf(pong, sizeof(pong), "{\"op\":\"pong\",\"ref\":%llu}",
					 (unsigned long long)req.ref);
			else
				snprintf(pong, sizeof(pong), "{\"op\":\"pong\"}");
			struct fbuf b;
			fbuf_init(&b, 48);
			fbuf_puts(&b, pong);
			send_owned(s, fbuf_finish(&b));
			break;
		}
		default:
			rc = qsession_handle(s, &req, &why);
		}
	}
	if (rc != 0)
		session_send_error(s, req.has_ref, req.ref, rc, why);
	wire_req_free(&req);
}

/* Frames larger than this close the connection with 1009 (contract: twice
 * the message size limit); smaller ones are parsed and judged field by field. */
static size_t frame_limit(const struct session *s) { return 2 * s->e->cfg->max_message_bytes; }

static int on_receive(struct session *s, const void *in, size_t len)
{
	struct lws *wsi = s->wsi;
	size_t remaining = lws_remaining_packet_payload(wsi);
	if (s->close_code)
		return 0;
	if (s->rx_discard) {
		/* Reading the rest before closing means the client's socket has
		 * nothing unread when we close, so our close frame is not lost to a
		 * reset. A client that keeps sending far past the limit is cut off. */
		s->rx_discarded += len;
		if ((lws_is_final_fragment(wsi) && remaining == 0) ||
		    s->rx_discarded > 16 * frame_limit(s))
			session_close(s, 1009);
		return 0;
	}
	if (s->rxlen + len + remaining > frame_limit(s)) {
		session_send_error(s, false, 0, TERN_ETOOLARGE,
				   "frame is larger than twice the message size limit");
		s->rx_discard = true;
		s->rx_discarded = s->rxlen + len;
		s->rxlen = 0;
		free(s->rx);
		s->rx = NULL;
		s->rxcap = 0;
		if (lws_is_final_fragment(wsi) && remaining == 0)
			session_close(s, 1009);
		return 0;
	}
	bool whole = lws_is_first_fragment(wsi) && lws_is_final_fragment(wsi) && remaining == 0;
	if (whole && s->rxlen == 0) {
		handle_frame(s, in, len);
		return 0;
	}
	if (s->rxlen + len > s->rxcap) {
		size_t cap = s->rxlen + len + remaining;
		unsigned char *rx = realloc(s->rx, cap);
		if (!rx) {
			session_close(s, 1011);
			return 0;
		}
		s->rx = rx;
		s->rxcap = cap;
	}
	memcpy(s->rx + s->rxlen, in, len);
	s->rxlen += len;
	if (lws_is_final_fragment(wsi) && remaining == 0) {
		handle_frame(s, (const char *)s->rx, s->rxlen);
		s->rxlen = 0;
		if (s->rxcap > 64 * 1024) { /* do not keep a large buffer while idle */
			free(s->rx);
			s->rx = NULL;
			s->rxcap = 0;
		}
	}
	return 0;
}

/* Takes n frames off the head of s's queue: they are on the wire or with lws. */
static void queue_pop_sent(struct session *s, int n)
{
	struct edge *e = s->e;
	for (int i = 0; i < n; i++) {
		struct frame *f = s->q[s->qhead];
		s->qhead = (s->qhead + 1) % s->qcap;
		s->qlen--;
		s->qbytes -= f->len;
		e->st.bytes_out += f->len;
		e->st.messages_out += f->kind == WIRE_FRAME_MESSAGE;
		frame_unref(f);
	}
}

/* Everything queued for a connection goes out in as few writes as possible:
 * frames carry their WebSocket header already (frame_wire), so one sendmsg()
 * gathers several of them straight from the shared frames, nothing copied.
 * When the socket takes only part, the frame it cut goes to lws with what is
 * left of it (lws keeps those bytes and sends them before anything else, its
 * own control frames included), and the frames after it stay queued for the
 * writable callback. Only called while lws holds nothing unsent. 0: all
 * written; 1: the socket is full (and lws may hold a frame's rest); -1: the
 * connection failed. */
static int write_batch(struct session *s, int *frames)
{
	struct edge *e = s->e;
	struct iovec iov[TERN_SESSION_WRITES_PER_TURN];
	size_t used = 0;
	int n = 0;
	while (n < (int)s->qlen && n < TERN_SESSION_WRITES_PER_TURN) {
		struct frame *f = s->q[(s->qhead + n) % s->qcap];
		size_t wl = frame_wire_len(f);
		if (n > 0 && used + wl > TERN_EDGE_WRITE_BATCH_BYTES)
			break;
		iov[n].iov_base = frame_wire(f);
		iov[n].iov_len = wl;
		used += wl;
		n++;
	}
	e->st.client_writes++;
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
	ssize_t w = sendmsg(lws_get_socket_fd(s->wsi), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (w < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -1;
		w = 0;
	}
	int done = 0;
	size_t left = (size_t)w;
	while (done < n && left >= iov[done].iov_len)
		left -= iov[done++].iov_len;
	bool full = done < n;
	if (full && left > 0) { /* cut inside a frame: lws sends the rest of it */
		unsigned char *rest = (unsigned char *)iov[done].iov_base + left;
		size_t rl = iov[done].iov_len - left;
		if (lws_write(s->wsi, rest, rl, LWS_WRITE_HTTP) < (int)rl)
			return -1;
		done++;
	}
	queue_pop_sent(s, done);
	*frames += done;
	/* Full, even when the frame cut was the batch's last: lws holds its rest. */
	return full ? 1 : 0;
}

/* Writes s's queue until it is empty, the socket is full or
 * TERN_SESSION_WRITES_PER_TURN frames went out (*frames counts them): 0, or -1
 * when the connection failed. Only while lws holds nothing unsent (write_batch
 * hands lws bytes only when the socket is full, and then stops). */
static int write_queue(struct session *s, int *frames)
{
	int r = 0;
	while (r == 0 && s->qlen && *frames < TERN_SESSION_WRITES_PER_TURN)
		r = write_batch(s, frames);
	if (r < 0)
		return -1;
	if (*frames)
		s->last_tx_ms = edge_now_ms(s->e);
	return 0;
}

/* Writes s's queue now, without waiting for a writable event: a socket
 * usually has room, and arming POLLOUT per delivery (an epoll_ctl each way)
 * cost as much as the send itself. Only a socket that is full, or a close to
 * send, waits for lws's writable callback. */
static int flush_now(struct session *s)
{
	int n = 0;
	if (!s->wsi)
		return 0;
	if (s->close_code || lws_partial_buffered(s->wsi)) {
		lws_callback_on_writable(s->wsi);
		return 0;
	}
	if (write_queue(s, &n) != 0) {
		session_close(s, 1011);
		return n;
	}
	if (s->qlen)
		lws_callback_on_writable(s->wsi);
	else
		echan_resume_drained(s);
	return n;
}

static void on_more(uv_idle_t *h)
{
	(void)h; /* only keeps the loop from blocking: the check writes */
}

/* Writes dirty sessions' queues, at most TERN_EDGE_FLUSH_SESSIONS_PER_TURN of them: the
 * rest go out on the next turns (the check stays armed, and an idle handle keeps the poll
 * between from blocking), so a broadcast to 100 000 sessions leaves the loop free to read
 * links and accept clients in between. A send() costs about the same for one frame as for
 * ten, so when messages arrive faster than the edge writes them (a flush that took
 * TERN_EDGE_LINGER_BUSY_US or more found, on average, TERN_EDGE_LINGER_FRAMES or more
 * frames per session, arriving at TERN_EDGE_LINGER_RATE a second or more), the next flush
 * waits flush_linger_ms for more to join each write: fewer, larger writes while the edge
 * is behind, at most flush_linger_ms added to latency then, and nothing added while it
 * keeps up (a slower arrival rate turns lingering off again). */
void sessions_flush(struct edge *e)
{
	size_t sessions = 0, frames = 0;
	uint64_t start = uv_hrtime();
	while (!list_empty(&e->dirty) && sessions < TERN_EDGE_FLUSH_SESSIONS_PER_TURN) {
		struct session *s = container_of(e->dirty.next, struct session, dirty_link);
		session_undirty(s);
		frames += (size_t)flush_now(s);
		sessions++;
	}
	/* Behind: writing takes real time (this flush took TERN_EDGE_LINGER_BUSY_US or
	 * more: a few clients are never worth the latency), messages arrive faster than
	 * TERN_EDGE_LINGER_RATE a second per session (frames over the time since the first
	 * of them was queued), and, to start lingering, two or more frames per session in
	 * this flush. The rate, not the frames alone, keeps it on: a linger of 25 ms holds
	 * 2.5 frames of a 100 messages/s stream, which is not behind. */
	uint64_t now = uv_hrtime(), since = now - e->dirty_since_ns;
	bool fast = (double)frames * 1e9 >= (double)sessions * TERN_EDGE_LINGER_RATE * (double)since;
	bool busy = now - start >= TERN_EDGE_LINGER_BUSY_US * 1000ull;
	e->lingering = e->cfg->flush_linger_ms > 0 && sessions > 0 && fast && busy &&
		       (e->lingering || frames >= sessions * TERN_EDGE_LINGER_FRAMES);
	uv_timer_stop(&e->linger);
	if (!list_empty(&e->dirty)) {
		/* Called from the linger timer, the check may not be armed yet. */
		uv_check_start(&e->flush, (uv_check_cb)sessions_flush_cb);
		uv_idle_start(&e->more, on_more);
		return;
	}
	uv_check_stop(&e->flush);
	uv_idle_stop(&e->more);
}

static int on_writeable(struct session *s)
{
	struct lws *wsi = s->wsi;
	int n = 0;
	if (!lws_partial_buffered(wsi) && write_queue(s, &n) != 0)
		return -1;
	if (s->qlen || lws_partial_buffered(wsi)) {
		lws_callback_on_writable(wsi);
		return 0;
	}
	/* Going away waits for the answers to publishes in flight. */
	if (s->close_code && (s->close_code != 1001 || s->inflight == 0)) {
		static const char *const reasons[] = {"slow consumer", "going away", "too large",
						      "internal error", "closing"};
		const char *r = s->close_code == 4008 ? reasons[0]
			       : s->close_code == 1001 ? reasons[1]
			       : s->close_code == 1009 ? reasons[2]
			       : s->close_code == 1011 ? reasons[3] : reasons[4];
		/* lws 4.1 drops a reason set with lws_close_reason when the close
		 * starts from a writeable callback, so the close frame is written
		 * here; the client's reply (or the timeout) ends the connection. */
		if (!s->close_sent) {
			unsigned char buf[LWS_PRE + 2 + 32];
			size_t rl = strlen(r);
			buf[LWS_PRE] = (unsigned char)(s->close_code >> 8);
			buf[LWS_PRE + 1] = (unsigned char)(s->close_code & 0xff);
			memcpy(buf + LWS_PRE + 2, r, rl);
			s->close_sent = true;
			if (lws_write(wsi, buf + LWS_PRE, 2 + rl, LWS_WRITE_CLOSE_FRAME) < 0)
				return -1;
			lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_ACK, 5);
		}
		return 0;
	}
	echan_resume_drained(s);
	return 0;
}

static void send_connected(struct session *s)
{
	struct fbuf b;
	fbuf_init(&b, 160);
	fbuf_printf(&b, "{\"op\":\"connected\",\"connection_id\":\"%s\",\"heartbeat_ms\":%llu,"
			"\"max_message_bytes\":%llu}", s->id,
		    (unsigned long long)s->e->cfg->heartbeat_ms,
		    (unsigned long long)s->e->cfg->max_message_bytes);
	send_owned(s, fbuf_finish(&b));
}

static void on_closed(struct session *s)
{
	struct edge *e = s->e;
	echan_drop_session(s);
	qsession_drop(s);
	session_undirty(s);
	list_remove(&s->link);
	s->wsi = NULL;
	e->st.connections--;
	session_put(s);
}

int session_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
			void *in, size_t len)
{
	struct session **ps = user;
	struct edge *e = lws_context_user(lws_get_context(wsi));
	if (!ps)
		return reason == LWS_CALLBACK_CLOSED ? 0 : -1;
	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED:
		if (e->shutting_down)
			return -1;
		*ps = session_new(e, wsi);
		if (!*ps)
			return -1;
		send_connected(*ps);
		return 0;
	case LWS_CALLBACK_RECEIVE:
		return *ps ? on_receive(*ps, in, len) : -1;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return *ps ? on_writeable(*ps) : -1;
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		/* After our own close frame this is the client's reply: the
		 * handshake is complete, so close without echoing another. */
		return *ps && (*ps)->close_sent ? -1 : 0;
	case LWS_CALLBACK_CLOSED:
		if (*ps)
			on_closed(*ps);
		*ps = NULL;
		return 0;
	default:
		return 0;
	}
}

void sessions_tick(struct edge *e)
{
	uint64_t now = edge_now_ms(e);
	struct list *pos, *tmp;
	list_foreach_safe(pos, tmp, &e->sessions) {
		struct session *s = container_of(pos, struct session, link);
		if (s->qlen == 0 && !s->close_code && now - s->last_tx_ms >= e->cfg->heartbeat_ms) {
			session_send(s, e->hb_frame);
			s->last_tx_ms = now;
		}
	}
}
