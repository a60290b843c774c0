/*
 * The fan-out harness: one libuv loop, libwebsockets clients, one publisher
 * and N subscribers, phases bounded in count and time.
 *
 * Phases: connect the publisher; read the broker's RSS; connect and subscribe
 * the N subscribers at a bounded rate and concurrency; settle; read RSS and
 * CPU again; publish (one in flight, or at a rate); drain until every
 * subscriber has every message or nothing moves for drain_timeout_ms; read
 * CPU; tear down.
 *
 * Every subscriber checks each delivery against its own bitmap of message
 * indexes (exact loss and duplicate counts), the highest index it has seen
 * (reordering) and the channel `seq` it expects next (gaps).
 *
 * Reading: lws connects, does the handshake and the subscribe. Once a
 * subscriber is live, its socket is read here and its frames parsed by wslay
 * (Debian's libwslay): lws 4.1 parses a client's frames a byte at a time,
 * about 8 ns a byte, so with 4 KiB messages the harness, not the broker, set
 * the pace (78 % of its CPU in lws). No byte can be pending in lws then: a
 * broker sends nothing between a subscribe's answer and the first publish,
 * which waits for every subscriber.
 */
#include "fanout.h"
#include "http_pub.h"
#include "procs.h"

#include <errno.h>
#include <libwebsockets.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>
#include <wslay/wslay.h>

/* A frame larger than this is a protocol error for the benchmark: ours are
 * under 1 KiB, and reassembly must not grow without bound. */
#define FRAME_MAX_BYTES 65536
/* Room for one publish or subscribe frame after LWS_PRE: a 4 KiB message
 * with its JSON or HTTP framing. */
#define OUT_FRAME_BYTES 8192
/* The subscribe frame's ref; publishes use index + PUB_REF_BASE. */
#define SUB_REF 1
#define PUB_REF_BASE 1
/* Phase clock: connection pacing and timeouts are checked this often. */
#define TICK_MS 10
/* Teardown bound: lws closes 10 000 sockets in well under a second. */
#define TEARDOWN_MS 20000
/* Bitmaps of all subscribers together, at most (bytes). */
#define SEEN_MAX_BYTES (512ull << 20)
/* Spread over processes: how often the parent looks at the children's
 * deliveries while a message is in flight (they cannot wake its loop). */
#define SHARED_POLL_MS 1
/* Spread over processes: how long the parent waits for the children to
 * close their connections and report, after its own teardown. */
#define COLLECT_MS (TEARDOWN_MS + 10000)

enum phase {
	PH_PUB_CONNECT,
	PH_SUB_CONNECT,
	PH_SETTLE,
	PH_PUBLISH,
	PH_DRAIN,
	PH_TEARDOWN,
};

enum conn_state {
	CONN_IDLE,
	CONN_CONNECTING,
	CONN_OPEN,       /* WebSocket up, subscribe (or hello) not yet answered */
	CONN_READY,      /* subscribed (subscriber) or greeted (publisher) */
	CONN_CLOSED,
	CONN_FAILED,
};

struct harness;

struct conn {
	struct harness *h;
	struct lws *wsi;
	uint32_t id;             /* subscribers 0..N-1; the publisher is N */
	uint8_t state;
	bool need_hello, need_subscribe;
	bool subscribed;         /* got its subscribe OK at some point */
	uint16_t close_code;
	uint64_t next_seq;       /* channel seq expected next */
	uint64_t max_index;      /* highest message index seen, +1 */
	uint64_t received;
	char *frag;              /* reassembly of a frame split by lws */
	uint32_t frag_len, frag_cap;
	/* Live subscribers: read here, not by lws (see the top). */
	wslay_frame_context_ptr wf; /* non-NULL while read here */
	int raw_fd;              /* lws's socket, in h->raw_ep */
	uint64_t frame_got;      /* payload bytes of the current frame so far */
};

struct harness {
	const struct fanout_config *cfg;
	struct fanout_result *res;
	uv_loop_t loop;
	uv_timer_t tick;         /* phases, pacing, timeouts */
	uv_timer_t pub_timer;    /* RATE: the publishing clock */
	struct lws_context *ctx;
	struct lws_context *ctx_alive; /* NULLed by lws when fully destroyed */
	enum phase phase;
	uint64_t phase_start_ns;
	uint64_t progress_ns;    /* last time deliveries moved (drain) */

	struct conn *subs;       /* this process's: nsubs, ids sub_first.. */
	uint32_t sub_first, nsubs;
	struct fanout_shared *sh; /* NULL: one process (fanout/procs.h) */
	struct fanout_proc_slot *slot; /* this process's, with sh */
	uv_timer_t sh_poll;      /* parent with sh: children's deliveries */
	struct conn pub;
	struct fanout_http_pub *http; /* FANOUT_PUB_HTTP_POST: the publisher */
	uint64_t http_replies;   /* replies so far: the next is for this index */
	uint32_t started, connecting, subs_live;
	uint32_t nchan;          /* channels: cfg->channels, at least 1 */
	_Atomic uint32_t *chan_live; /* per channel: subscribers live on it
				    (in sh when spread: all processes') */
	uint64_t connect_start_ns, last_sub_ok_ns;

	uint8_t *seen;           /* N x seen_stride bits-as-bytes bitmap */
	size_t seen_stride;
	/* Per message index, in sh when spread (all processes'): subscribers
	 * that have it, and the seq from its publish OK. */
	_Atomic uint32_t *delivered;
	_Atomic uint64_t *msg_seq;
	uint64_t *sent_ns;       /* per message index: when its publish was written */
	uint64_t complete;       /* indexes below this reached every live subscriber */

	uint64_t next_index;     /* next message to publish */
	uint64_t allowed;        /* may publish indexes below this */
	uint64_t outstanding;    /* publishes awaiting OK */
	uint64_t publish_start_ns, last_send_ns, last_delivery_ns, inflight_sent_ns;
	struct fanout_proc_cpu cpu0, self0;
	char *payload;           /* msg_bytes - data_overhead */
	size_t payload_len;
	bool stop_publishing;
	bool publish_seen;       /* child: the parent started publishing */
	bool abandoned;          /* teardown overdue: lws handles left open */
	/* Live subscribers' sockets: in an epoll set of the harness's own (a
	 * socket may be in several sets; libuv's, where lws has it, no longer
	 * asks for input), which the loop polls as one descriptor. */
	int raw_ep;
	uv_poll_t raw_poll;
	bool raw_polling;
	/* What one read took from a live subscriber's socket, handed to wslay. */
	uint8_t rbuf[256 * 1024];
	size_t rpos, rlen;
};

static uint64_t ms_to_ns(uint64_t ms) { return ms * 1000000ull; }

/* Subscriber `id` is on channel id % nchan, message `index` goes to channel
 * index % nchan: with one channel, both are 0. */
static uint32_t chan_of(const struct harness *h, uint64_t n)
{
	return (uint32_t)(n % h->nchan);
}

/* Name of channel `k` into `buf`: cfg->channel itself with one channel,
 * else cfg->channel + "-" + k. */
static const char *chan_name(const struct harness *h, uint32_t k, char *buf, size_t cap)
{
	if (h->nchan == 1)
		return h->cfg->channel;
	snprintf(buf, cap, "%s-%u", h->cfg->channel, k);
	return buf;
}

static void on_frame(struct harness *h, struct conn *c, const char *frame, size_t len);
static void raw_start(struct harness *h, struct conn *c);

/* A subscriber got its subscribe OK (or its handshake, for nchan). */
static void sub_live(struct harness *h, struct conn *c, uint64_t now)
{
	raw_start(h, c);
	c->state = CONN_READY;
	c->subscribed = true;
	h->subs_live++;
	atomic_fetch_add_explicit(&h->chan_live[chan_of(h, c->id)], 1, memory_order_relaxed);
	h->last_sub_ok_ns = now;
	if (h->sh) {
		/* Before the count: the parent reads the window once it sees N. */
		atomic_store_explicit(&h->slot->last_sub_ok_ns, now, memory_order_relaxed);
		atomic_fetch_add_explicit(&h->sh->chan_ever[chan_of(h, c->id)], 1,
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&h->sh->subs_live, 1, memory_order_release);
	}
}

/* Subscribers live in every process. */
static uint32_t live_total(const struct harness *h)
{
	return h->sh ? atomic_load_explicit(&h->sh->subs_live, memory_order_acquire)
		     : h->subs_live;
}

/* Deliveries in every process so far. */
static uint64_t deliveries_total(const struct harness *h)
{
	uint64_t n = 0;

	if (!h->sh)
		return h->res->deliveries;
	for (uint32_t k = 0; k < h->sh->procs; k++)
		n += atomic_load_explicit(&h->sh->slots[k].deliveries, memory_order_relaxed);
	return n;
}

/* The latest of every process's `field` (last delivery, last subscribe OK). */
static uint64_t slots_max(const struct harness *h, size_t field)
{
	uint64_t max = 0;

	for (uint32_t k = 0; k < h->sh->procs; k++) {
		_Atomic uint64_t *v = (_Atomic uint64_t *)((char *)&h->sh->slots[k] + field);
		uint64_t t = atomic_load_explicit(v, memory_order_relaxed);

		max = t > max ? t : max;
	}
	return max;
}

/* Publishes below this may be delivered: in a child the parent says so. */
static uint64_t sent_upto(const struct harness *h)
{
	return h->sh && h->cfg->proc != 0
		       ? atomic_load_explicit(&h->sh->sent_upto, memory_order_acquire)
		       : h->next_index;
}

static void fail(struct harness *h, const char *why)
{
	if (h->res->reason[0] == '\0')
		snprintf(h->res->reason, sizeof(h->res->reason), "%s", why);
}

static void set_phase(struct harness *h, enum phase p)
{
	h->phase = p;
	h->phase_start_ns = fanout_now_ns();
	/* Children follow the parent's phases: only the parent says them. */
	if (h->cfg->verbose && h->cfg->proc == 0)
		fprintf(stderr, "bench_fanout: phase %d at subscribed=%u delivered=%llu\n",
			(int)p, live_total(h), (unsigned long long)deliveries_total(h));
}

/* ---- connections -------------------------------------------------------- */

/* No validity (idle ping) timer: lws 4.1 re-inserts it into one sorted list
 * on every frame received, O(connections) per delivery, which cost the
 * harness 15 % of its CPU at 10 000 subscribers. Runs are short; a dead
 * broker shows as a drain timeout instead. */
static const lws_retry_bo_t no_validity = {
	.secs_since_valid_ping = 0,
	.secs_since_valid_hangup = 0,
};

static int conn_start(struct harness *h, struct conn *c, bool publisher)
{
	struct lws_client_connect_info ci;
	char path[512], host[64], name[256];
	const struct fanout_broker_ops *ops = h->cfg->ops;
	int n = publisher ? ops->pub_path(path, sizeof(path), h->cfg->channel)
			  : ops->sub_path(path, sizeof(path),
					  chan_name(h, chan_of(h, c->id), name, sizeof(name)));

	if (n < 0)
		return -EINVAL;
	snprintf(host, sizeof(host), "%s:%d", h->cfg->host, h->cfg->port);
	memset(&ci, 0, sizeof(ci));
	ci.context = h->ctx;
	ci.address = h->cfg->host;
	ci.port = h->cfg->port;
	ci.path = path;
	ci.host = host;
	ci.origin = host;
	ci.protocol = ops->subprotocol;
	ci.local_protocol_name = "bench-fanout";
	ci.opaque_user_data = c;
	ci.pwsi = &c->wsi;
	ci.retry_and_idle_policy = &no_validity;
	/* lws binds the socket to this address (port 0) before connecting:
	 * each source address has its own ~28 000 ephemeral ports. */
	if (!publisher && h->cfg->nsource_addrs)
		ci.iface = h->cfg->source_addrs[c->id % h->cfg->nsource_addrs];
	c->state = CONN_CONNECTING;
	if (!lws_client_connect_via_info(&ci)) {
		/* lws may already have reported CONNECTION_ERROR through the
		 * callback; only count a failure it did not report. */
		if (c->state == CONN_CONNECTING) {
			c->state = CONN_FAILED;
			c->wsi = NULL;
			return -ECONNREFUSED;
		}
		return 0;
	}
	return 0;
}

static void count_connect_failed(struct harness *h)
{
	h->res->connect_failed++;
	if (h->sh)
		atomic_fetch_add_explicit(&h->sh->connect_failed, 1, memory_order_relaxed);
}

static void pace_connects(struct harness *h)
{
	const struct fanout_config *cfg = h->cfg;
	uint64_t elapsed_ns = fanout_now_ns() - h->connect_start_ns;
	uint64_t budget = 1 + elapsed_ns * cfg->connect_rate / 1000000000ull;

	while (h->started < h->nsubs && h->started < budget &&
	       h->connecting < cfg->connect_concurrency) {
		struct conn *c = &h->subs[h->started++];

		h->connecting++;
		if (conn_start(h, c, false) < 0) {
			h->connecting--;
			count_connect_failed(h);
		}
	}
}

/* Builds and writes the subscriber's pending hello or subscribe frame.
 * Returns -1 to have lws close the connection. */
static int sub_writeable(struct harness *h, struct conn *c)
{
	unsigned char buf[LWS_PRE + OUT_FRAME_BYTES];
	char *out = (char *)buf + LWS_PRE;
	const struct fanout_broker_ops *ops = h->cfg->ops;
	char name[256];
	int n;

	if (c->need_hello) {
		c->need_hello = false;
		n = ops->hello(out, OUT_FRAME_BYTES, c->id);
	} else if (c->need_subscribe) {
		c->need_subscribe = false;
		n = ops->subscribe(out, OUT_FRAME_BYTES,
				   chan_name(h, chan_of(h, c->id), name, sizeof(name)), SUB_REF);
	} else {
		return 0;
	}
	if (n < 0)
		return -1;
	if (n > 0 && lws_write(c->wsi, buf + LWS_PRE, (size_t)n,
			       ops->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < n)
		return -1;
	if (c->need_subscribe)
		lws_callback_on_writable(c->wsi);
	return 0;
}

static void advance_complete(struct harness *h);

/* Records publish `i`, written at `now`. */
static void pub_sent(struct harness *h, uint64_t i, uint64_t now)
{
	h->sent_ns[i] = now;
	if (i == 0)
		h->publish_start_ns = now;
	h->last_send_ns = now;
	h->inflight_sent_ns = now;
	h->next_index++;
	h->res->published++;
	if (h->cfg->ops->publish_unacked) {
		/* Written is all the broker will ever confirm. */
		h->res->acked++;
		atomic_store_explicit(&h->msg_seq[i], UINT64_MAX, memory_order_relaxed);
		if (i == h->complete)
			advance_complete(h);
	} else {
		h->outstanding++;
	}
}

/* Spread over processes: publish `i` may now arrive at any subscriber, so a
 * child must not count it as unreadable. Said before it is written. */
static void pub_announce(struct harness *h, uint64_t i)
{
	if (h->sh)
		atomic_store_explicit(&h->sh->sent_upto, i + 1, memory_order_release);
}

static bool pub_may_send(const struct harness *h)
{
	return !h->stop_publishing && h->next_index < h->allowed &&
	       h->outstanding < h->cfg->window;
}

/* Writes publishes while the scheduler allows, the window has room and the
 * socket takes them. Returns -1 to have lws close the connection. */
static int pub_writeable(struct harness *h)
{
	unsigned char buf[LWS_PRE + OUT_FRAME_BYTES];
	char *out = (char *)buf + LWS_PRE;
	const struct fanout_broker_ops *ops = h->cfg->ops;
	struct conn *c = &h->pub;

	if (c->need_hello)
		return sub_writeable(h, c);
	while (pub_may_send(h)) {
		uint64_t i = h->next_index, now = fanout_now_ns();
		char name[256];
		int n;

		fanout_payload_make(h->payload, h->payload_len, i, now);
		n = ops->publish(out, OUT_FRAME_BYTES,
				 chan_name(h, chan_of(h, i), name, sizeof(name)), i + PUB_REF_BASE,
				 h->payload, h->payload_len);
		if (n <= 0)
			return -1;
		pub_announce(h, i);
		if (lws_write(c->wsi, buf + LWS_PRE, (size_t)n,
			      ops->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < n)
			return -1;
		pub_sent(h, i, now);
		if (lws_send_pipe_choked(c->wsi)) {
			lws_callback_on_writable(c->wsi);
			break;
		}
	}
	return 0;
}

/* The same over HTTP: queues requests until the output is choked; replies
 * kick it again. */
static void pub_http_send(struct harness *h)
{
	char out[OUT_FRAME_BYTES];

	while (pub_may_send(h) && !fanout_http_pub_choked(h->http)) {
		uint64_t i = h->next_index, now = fanout_now_ns();
		char name[256];
		int n, rc;

		fanout_payload_make(h->payload, h->payload_len, i, now);
		n = h->cfg->ops->publish(out, sizeof(out),
					 chan_name(h, chan_of(h, i), name, sizeof(name)),
					 i + PUB_REF_BASE,
					 h->payload, h->payload_len);
		pub_announce(h, i);
		rc = n > 0 ? fanout_http_pub_send(h->http, out, (size_t)n) : -EINVAL;
		if (rc == -EAGAIN)
			break;
		if (rc < 0) {
			fail(h, "publisher could not send");
			h->stop_publishing = true;
			break;
		}
		pub_sent(h, i, now);
	}
}

static void pub_kick(struct harness *h)
{
	if (h->pub.state != CONN_READY || !pub_may_send(h))
		return;
	if (h->http)
		pub_http_send(h);
	else
		lws_callback_on_writable(h->pub.wsi);
}

/* ---- deliveries ---------------------------------------------------------- */

/* INFLIGHT1: the next message goes out once the last one reached every
 * live subscriber and was acknowledged. RATE: only tracks completeness. */
static void advance_complete(struct harness *h)
{
	while (h->complete < h->next_index &&
	       atomic_load_explicit(&h->delivered[h->complete], memory_order_relaxed) >=
		       atomic_load_explicit(&h->chan_live[chan_of(h, h->complete)],
					    memory_order_relaxed) &&
	       atomic_load_explicit(&h->msg_seq[h->complete], memory_order_relaxed) != 0)
		h->complete++;
	if (h->cfg->mode == FANOUT_MODE_INFLIGHT1 && h->phase == PH_PUBLISH &&
	    h->complete == h->next_index && h->allowed == h->next_index &&
	    h->allowed < h->cfg->messages) {
		h->allowed++;
		pub_kick(h);
	}
}

static void on_message(struct harness *h, struct conn *c, const struct fanout_frame *f,
		       uint64_t now)
{
	struct fanout_result *res = h->res;
	uint64_t index, sent_ns;
	uint8_t *seen;

	if (c->state != CONN_READY || fanout_payload_read(f->data, f->data_len, &index,
							  &sent_ns) < 0 ||
	    index >= sent_upto(h)) {
		res->bad_frames++;
		return;
	}
	if (f->seq != 0) {
		uint64_t want = atomic_load_explicit(&h->msg_seq[index], memory_order_relaxed);

		if (f->seq > c->next_seq)
			res->seq_gaps += f->seq - c->next_seq;
		if (f->seq >= c->next_seq)
			c->next_seq = f->seq + 1;
		if (want != 0 && want != f->seq)
			res->seq_mismatch++;
	}
	seen = h->seen + (size_t)(c->id - h->sub_first) * h->seen_stride;
	if (seen[index >> 3] & (1u << (index & 7))) {
		res->duplicated++;
		return;
	}
	seen[index >> 3] |= (uint8_t)(1u << (index & 7));
	if (index + 1 < c->max_index)
		res->reordered++;
	else
		c->max_index = index + 1;
	c->received++;
	res->deliveries++;
	atomic_fetch_add_explicit(&h->delivered[index], 1, memory_order_relaxed);
	h->last_delivery_ns = now;
	if (h->sh) {
		atomic_store_explicit(&h->slot->last_delivery_ns, now, memory_order_relaxed);
		atomic_store_explicit(&h->slot->deliveries, res->deliveries, memory_order_relaxed);
	}
	fanout_hist_record(&res->latency, now > sent_ns ? now - sent_ns : 0);
	if (index == h->complete)
		advance_complete(h);
}

/* An OK or ERROR to a publish, whichever transport carried it. */
static void on_pub_reply(struct harness *h, const struct fanout_frame *f, const char *frame,
			 size_t len, uint64_t now)
{
	struct fanout_result *res = h->res;
	uint64_t i;

	if (f->ref < PUB_REF_BASE || (uint64_t)f->ref - PUB_REF_BASE >= h->next_index) {
		res->bad_frames++;
		return;
	}
	i = (uint64_t)f->ref - PUB_REF_BASE;
	h->outstanding--;
	if (f->kind == FANOUT_FRAME_ERROR) {
		res->publish_errors++;
		fprintf(stderr, "bench_fanout: publish %llu refused: %.*s\n",
			(unsigned long long)i, (int)(len > 200 ? 200 : len), frame);
		h->stop_publishing = true;
		return;
	}
	res->acked++;
	fanout_hist_record(&res->ack, now - h->sent_ns[i]);
	atomic_store_explicit(&h->msg_seq[i], f->seq ? f->seq : UINT64_MAX, memory_order_relaxed);
	if (i == h->complete)
		advance_complete(h);
	pub_kick(h);
}

static void on_frame(struct harness *h, struct conn *c, const char *frame, size_t len)
{
	struct fanout_result *res = h->res;
	struct fanout_frame f;
	uint64_t now = fanout_now_ns();

	if (h->cfg->ops->parse(frame, len, &f) < 0) {
		res->bad_frames++;
		if (h->cfg->verbose)
			fprintf(stderr, "bench_fanout: unreadable frame: %.*s\n",
				(int)(len > 200 ? 200 : len), frame);
		return;
	}
	if (f.kind == FANOUT_FRAME_MESSAGE && c != &h->pub) {
		on_message(h, c, &f, now);
	} else if (f.kind == FANOUT_FRAME_CONNECTED && c == &h->pub && c->state == CONN_OPEN) {
		/* A protocol with a hello (MQTT CONNECT) publishes once the
		 * broker accepted it; without one the publisher is ready at the
		 * handshake. */
		c->state = CONN_READY;
	} else if (c == &h->pub && (f.kind == FANOUT_FRAME_OK || f.kind == FANOUT_FRAME_ERROR)) {
		on_pub_reply(h, &f, frame, len, now);
	} else if (f.kind == FANOUT_FRAME_OK && f.ref == SUB_REF && c->state == CONN_OPEN) {
		c->next_seq = f.seq + 1;
		sub_live(h, c, now);
	} else if (f.kind == FANOUT_FRAME_ERROR) {
		res->errors++;
		if (res->errors <= 3)
			fprintf(stderr, "bench_fanout: error frame on connection %u: %.*s\n",
				c->id, (int)(len > 200 ? 200 : len), frame);
	}
}

/* Collects one frame, possibly in several pieces (final: this is its last).
 * Returns -1 on a frame over FRAME_MAX_BYTES. */
static int collect(struct harness *h, struct conn *c, const char *in, size_t len, bool final)
{
	if (final && c->frag_len == 0) {
		on_frame(h, c, in, len);
		return 0;
	}
	if (c->frag_len + len > FRAME_MAX_BYTES)
		return -1;
	if (c->frag_len + len > c->frag_cap) {
		uint32_t cap = (uint32_t)(c->frag_len + len) * 2;
		char *p = realloc(c->frag, cap);

		if (!p)
			return -1;
		c->frag = p;
		c->frag_cap = cap;
	}
	memcpy(c->frag + c->frag_len, in, len);
	c->frag_len += (uint32_t)len;
	if (final) {
		on_frame(h, c, c->frag, c->frag_len);
		c->frag_len = 0;
	}
	return 0;
}

static int on_receive(struct harness *h, struct conn *c, struct lws *wsi,
		      const char *in, size_t len)
{
	return collect(h, c, in, len,
		       lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0);
}

/* ---- reading live subscribers (wslay) ---------------------------------- */

static ssize_t raw_feed(uint8_t *buf, size_t len, int flags, void *arg)
{
	struct harness *h = ((struct conn *)arg)->h;
	size_t n = h->rlen - h->rpos < len ? h->rlen - h->rpos : len;

	(void)flags;
	memcpy(buf, h->rbuf + h->rpos, n);
	h->rpos += n;
	return (ssize_t)n; /* 0: wslay_frame_recv says WSLAY_ERR_WANT_READ */
}

static const struct wslay_frame_callbacks raw_cbs = { .recv_callback = raw_feed };

static void raw_stop(struct conn *c)
{
	if (!c->wf)
		return;
	epoll_ctl(c->h->raw_ep, EPOLL_CTL_DEL, c->raw_fd, NULL);
	wslay_frame_context_free(c->wf);
	c->wf = NULL;
}

/* One chunk of a frame's payload: data frames are collected as lws's pieces are
 * (whole frames in one chunk, the usual case, go straight to on_frame); a close
 * frame's code is kept; pings and pongs are ignored (no broker here pings). */
static int raw_chunk(struct harness *h, struct conn *c, const struct wslay_frame_iocb *io)
{
	bool last = c->frame_got + io->data_length == io->payload_length;

	if (io->opcode == WSLAY_CONNECTION_CLOSE) {
		if (c->frame_got == 0 && io->data_length >= 2)
			c->close_code = (uint16_t)(io->data[0] << 8 | io->data[1]);
	} else if (io->opcode <= WSLAY_BINARY_FRAME &&
		   collect(h, c, (const char *)io->data, io->data_length, last && io->fin) < 0) {
		return -1;
	}
	c->frame_got = last ? 0 : c->frame_got + io->data_length;
	return 0;
}

/* Gives reading back to lws, which then sees the end of the connection and
 * closes it as it would have (LWS_CALLBACK_CLIENT_CLOSED, on_gone). */
static void raw_end(struct conn *c)
{
	raw_stop(c);
	if (c->wsi)
		lws_rx_flow_control(c->wsi, 1);
}

/* Reads what one live subscriber's socket holds, at most 16 full buffers. */
static void raw_read(struct harness *h, struct conn *c)
{
	struct wslay_frame_iocb io;
	ssize_t n, r;

	for (int reads = 0; reads < 16 && c->wf; reads++) {
		n = read(c->raw_fd, h->rbuf, sizeof(h->rbuf));
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			raw_end(c); /* the peer closed, or the socket failed */
			return;
		}
		h->rpos = 0;
		h->rlen = (size_t)n;
		while ((r = wslay_frame_recv(c->wf, &io)) >= 0)
			if (raw_chunk(h, c, &io) < 0)
				break;
		if (r != WSLAY_ERR_WANT_READ) {
			h->res->bad_frames++;
			raw_end(c);
			return;
		}
		if ((size_t)n < sizeof(h->rbuf))
			return;
	}
}

static void on_raw(uv_poll_t *p, int status, int events)
{
	struct harness *h = p->data;
	struct epoll_event ev[256];
	int n;

	(void)status;
	(void)events;
	/* Level-triggered: what is left over is reported again next turn. */
	n = epoll_wait(h->raw_ep, ev, 256, 0);
	for (int i = 0; i < n; i++)
		raw_read(h, ev[i].data.ptr);
}

/* Takes a live subscriber's reading over from lws: lws stops reading its
 * socket (rx flow control), and the harness's epoll set watches it. On
 * failure lws keeps reading, more slowly, and nothing is lost. */
static void raw_start(struct harness *h, struct conn *c)
{
	int fd = c->wsi ? lws_get_socket_fd(c->wsi) : -1;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

	if (fd < 0 || c->wf || h->raw_ep < 0)
		return;
	if (!h->raw_polling) {
		if (uv_poll_init(&h->loop, &h->raw_poll, h->raw_ep) != 0)
			return;
		h->raw_poll.data = h;
		uv_poll_start(&h->raw_poll, UV_READABLE, on_raw);
		h->raw_polling = true;
	}
	if (wslay_frame_context_init(&c->wf, &raw_cbs, c) != 0) {
		c->wf = NULL;
		return;
	}
	c->raw_fd = fd;
	c->frame_got = 0;
	if (epoll_ctl(h->raw_ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
		wslay_frame_context_free(c->wf);
		c->wf = NULL;
		return;
	}
	lws_rx_flow_control(c->wsi, 0);
}

static void on_gone(struct harness *h, struct conn *c, bool failed)
{
	uint8_t was = c->state;

	raw_stop(c);
	c->wsi = NULL;
	if (was == CONN_CLOSED || was == CONN_FAILED || was == CONN_IDLE)
		return;
	if (was == CONN_CONNECTING && c != &h->pub)
		h->connecting--;
	c->state = failed ? CONN_FAILED : CONN_CLOSED;
	if (h->phase == PH_TEARDOWN)
		return;
	if (was == CONN_CONNECTING || (was == CONN_OPEN && failed)) {
		count_connect_failed(h);
		return;
	}
	if (c == &h->pub) {
		fail(h, "publisher connection closed");
		h->stop_publishing = true;
		return;
	}
	h->res->closed_by_broker++;
	if (c->close_code == 4008)
		h->res->slow_consumer++;
	if (was == CONN_READY) {
		h->subs_live--;
		atomic_fetch_sub_explicit(&h->chan_live[chan_of(h, c->id)], 1,
					  memory_order_relaxed);
		if (h->sh)
			atomic_fetch_sub_explicit(&h->sh->subs_live, 1, memory_order_relaxed);
		advance_complete(h);
	}
}

/* ---- HTTP publisher ---------------------------------------------------------- */

static void on_http_connect(struct fanout_http_pub *p, int status, void *data)
{
	struct harness *h = data;

	(void)p;
	if (status < 0) {
		h->pub.state = CONN_FAILED;
		return;
	}
	h->pub.state = CONN_READY;
}

/* Replies come in request order: the n-th answers publish n. A body is
 * only kept for the error message. */
static void on_http_reply(struct fanout_http_pub *p, int status, const char *body,
			  size_t body_len, void *data)
{
	struct harness *h = data;
	struct fanout_frame f = {
		.kind = status >= 200 && status < 300 ? FANOUT_FRAME_OK : FANOUT_FRAME_ERROR,
		.ref = (int64_t)(h->http_replies++ + PUB_REF_BASE),
	};

	(void)p;
	if (h->phase == PH_TEARDOWN)
		return;
	on_pub_reply(h, &f, body, body_len, fanout_now_ns());
}

static void on_http_error(struct fanout_http_pub *p, int status, void *data)
{
	struct harness *h = data;

	(void)p;
	if (h->cfg->verbose)
		fprintf(stderr, "bench_fanout: publisher connection: %s\n", uv_strerror(status));
	h->pub.state = CONN_CLOSED;
	if (h->phase == PH_TEARDOWN)
		return;
	fail(h, "publisher connection closed");
	h->stop_publishing = true;
}

static const struct fanout_http_pub_cbs http_cbs = {
	.on_connect = on_http_connect,
	.on_reply = on_http_reply,
	.on_error = on_http_error,
};

/* Connects the publisher over the broker's publish transport. */
static int pub_start(struct harness *h)
{
	int rc;

	if (h->cfg->ops->pub_transport == FANOUT_PUB_WEBSOCKET)
		return conn_start(h, &h->pub, true);
	h->pub.state = CONN_CONNECTING;
	rc = fanout_http_pub_open(&h->http, &h->loop, h->cfg->host, h->cfg->port, &http_cbs, h);
	if (rc < 0) {
		h->pub.state = CONN_FAILED;
		h->http = NULL;
	}
	return rc;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
		    void *in, size_t len)
{
	struct conn *c = lws_get_opaque_user_data(wsi);
	struct harness *h = c ? c->h : NULL;

	if (!c)
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	switch (reason) {
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		if (h->cfg->verbose && h->res->connect_failed < 3)
			fprintf(stderr, "bench_fanout: connect %u failed: %s\n", c->id,
				in ? (const char *)in : "?");
		on_gone(h, c, true);
		break;
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		c->wsi = wsi;
		if (c != &h->pub)
			h->connecting--;
		c->state = CONN_OPEN;
		c->need_hello = h->cfg->ops->hello != NULL;
		c->need_subscribe = c != &h->pub;
		if (c == &h->pub && !c->need_hello) {
			c->state = CONN_READY;
		} else if (c != &h->pub && !c->need_hello) {
			char probe[8];

			/* A broker that subscribes by path alone has no frame
			 * to send: the handshake is the OK. */
			if (h->cfg->ops->subscribe(probe, sizeof(probe), h->cfg->channel,
						   SUB_REF) == 0) {
				c->need_subscribe = false;
				c->next_seq = 1;
				sub_live(h, c, fanout_now_ns());
			}
		}
		if (c->need_hello || c->need_subscribe)
			lws_callback_on_writable(wsi);
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (h->phase == PH_TEARDOWN)
			return -1;
		return c == &h->pub ? pub_writeable(h) : sub_writeable(h, c);
	case LWS_CALLBACK_CLIENT_RECEIVE:
		return on_receive(h, c, wsi, in, len);
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (in && len >= 2)
			c->close_code = (uint16_t)(((const uint8_t *)in)[0] << 8 |
						   ((const uint8_t *)in)[1]);
		break;
	case LWS_CALLBACK_CLIENT_CLOSED:
		on_gone(h, c, false);
		break;
	default:
		break;
	}
	return 0;
}

static const struct lws_protocols protocols[] = {
	{ .name = "bench-fanout", .callback = callback, .rx_buffer_size = 4096 },
	{ .name = NULL },
};

/* ---- phases --------------------------------------------------------------- */

static void read_server(struct harness *h, struct fanout_proc_cpu *cpu, uint64_t *rss)
{
	const struct fanout_config *cfg = h->cfg;

	if (cfg->server_pid_count == 0)
		return;
	if ((cpu && fanout_proc_set_cpu(cfg->server_pids, cfg->server_pid_count, cpu) < 0) ||
	    (rss && fanout_proc_set_rss(cfg->server_pids, cfg->server_pid_count, rss) < 0)) {
		h->res->have_server = false;
		fail(h, "cannot read /proc of the server pid");
	}
}

static void on_pub_timer(uv_timer_t *t)
{
	struct harness *h = t->data;
	const struct fanout_config *cfg = h->cfg;
	uint64_t elapsed_ns = fanout_now_ns() - h->phase_start_ns;
	uint64_t due = (uint64_t)((double)elapsed_ns * 1e-9 * cfg->rate / cfg->burst + 1) *
		       cfg->burst;

	if (due > cfg->messages)
		due = cfg->messages;
	/* Hold the publisher while the subscribers are too far behind: a rate
	 * the system cannot carry then shows as a lower achieved rate. */
	if (due > h->complete + cfg->backlog_max) {
		due = h->complete + cfg->backlog_max;
		h->res->held_ticks++;
	}
	if (due > h->allowed) {
		h->allowed = due;
		pub_kick(h);
	}
}

/* The parent, spread over processes: the children's deliveries do not wake
 * its loop, so it looks at the shared counts every SHARED_POLL_MS. */
static void on_sh_poll(uv_timer_t *t)
{
	struct harness *h = t->data;

	if (h->phase == PH_PUBLISH || h->phase == PH_DRAIN)
		advance_complete(h);
}

static void start_publish(struct harness *h)
{
	const struct fanout_config *cfg = h->cfg;

	read_server(h, &h->cpu0, NULL);
	fanout_self_cpu(&h->self0);
	set_phase(h, PH_PUBLISH);
	h->progress_ns = h->phase_start_ns;
	if (h->sh)
		uv_timer_start(&h->sh_poll, on_sh_poll, SHARED_POLL_MS, SHARED_POLL_MS);
	if (cfg->mode == FANOUT_MODE_INFLIGHT1) {
		h->allowed = 1;
		pub_kick(h);
	} else {
		double tick_ms = 1000.0 * cfg->burst / cfg->rate;
		uint64_t repeat = tick_ms < 1 ? 1 : (uint64_t)tick_ms;

		uv_timer_start(&h->pub_timer, on_pub_timer, 0, repeat);
	}
}

static void finish(struct harness *h)
{
	struct fanout_result *res = h->res;
	struct fanout_proc_cpu cpu1, self1;

	uv_timer_stop(&h->pub_timer);
	if (h->sh && h->cfg->proc == 0) {
		/* The children close their connections while this one does. */
		atomic_store_explicit(&h->sh->stop, 1, memory_order_release);
		uv_timer_stop(&h->sh_poll);
		h->last_delivery_ns = slots_max(h, offsetof(struct fanout_proc_slot,
							    last_delivery_ns));
	}
	read_server(h, &cpu1, NULL);
	fanout_self_cpu(&self1);
	res->broker_cpu.user_us = cpu1.user_us - h->cpu0.user_us;
	res->broker_cpu.sys_us = cpu1.sys_us - h->cpu0.sys_us;
	res->broker_cpu.oncpu_ns = cpu1.oncpu_ns - h->cpu0.oncpu_ns;
	res->broker_cpu.runq_wait_ns = cpu1.runq_wait_ns - h->cpu0.runq_wait_ns;
	res->harness_cpu.user_us = self1.user_us - h->self0.user_us;
	res->harness_cpu.sys_us = self1.sys_us - h->self0.sys_us;
	res->harness_cpu.oncpu_ns = self1.oncpu_ns - h->self0.oncpu_ns;
	res->harness_cpu.runq_wait_ns = self1.runq_wait_ns - h->self0.runq_wait_ns;
	if (h->publish_start_ns) {
		res->publish_ns = h->last_send_ns - h->publish_start_ns;
		if (h->last_delivery_ns > h->publish_start_ns)
			res->deliver_ns = h->last_delivery_ns - h->publish_start_ns;
	}
	if (res->publish_ns > 0)
		res->publish_rate = (double)(res->published - 1) * 1e9 / (double)res->publish_ns;
	set_phase(h, PH_TEARDOWN);
}

/* Ends the publish phase once everything was sent, the time bound passed,
 * or one in-flight message is overdue. */
static void check_publish(struct harness *h, uint64_t now)
{
	const struct fanout_config *cfg = h->cfg;
	uint64_t in_phase = now - h->phase_start_ns;

	if (h->stop_publishing || h->next_index >= cfg->messages ||
	    in_phase > ms_to_ns(cfg->duration_ms)) {
		h->stop_publishing = true;
		h->progress_ns = now;
		set_phase(h, PH_DRAIN);
		return;
	}
	if (cfg->mode == FANOUT_MODE_INFLIGHT1 && h->next_index > 0 &&
	    h->complete < h->next_index &&
	    now - h->inflight_sent_ns > ms_to_ns(cfg->message_timeout_ms)) {
		fail(h, "a message did not reach every subscriber within message_timeout_ms");
		h->stop_publishing = true;
		h->progress_ns = now;
		set_phase(h, PH_DRAIN);
	}
}

static void check_drain(struct harness *h, uint64_t now)
{
	uint64_t last = h->sh ? slots_max(h, offsetof(struct fanout_proc_slot, last_delivery_ns))
			      : h->last_delivery_ns;

	/* A child's delivery may be later than this tick's `now`. */
	if (last > h->progress_ns)
		h->progress_ns = last < now ? last : now;
	if ((h->complete >= h->next_index && h->outstanding == 0) ||
	    now - h->progress_ns > ms_to_ns(h->cfg->drain_timeout_ms) ||
	    now - h->phase_start_ns > ms_to_ns(h->cfg->drain_max_ms) ||
	    live_total(h) == 0)
		finish(h);
}

/* This process starts connecting its subscribers now; spread over
 * processes, the connect window opens at the earliest start of any, and the
 * parent tells the children to start. */
static void connect_begin(struct harness *h, uint64_t now)
{
	uint64_t first;

	h->connect_start_ns = now;
	set_phase(h, PH_SUB_CONNECT);
	if (!h->sh)
		return;
	first = atomic_load_explicit(&h->sh->first_connect_ns, memory_order_relaxed);
	while (now < first && !atomic_compare_exchange_weak(&h->sh->first_connect_ns, &first, now))
		;
	if (h->cfg->proc == 0)
		atomic_store_explicit(&h->sh->go, 1, memory_order_release);
}

/* The parent's connect phase: done once every subscriber of every process
 * is live; failed at the time bound, or a second after every connection
 * was tried when some failed. */
static void check_connect(struct harness *h, uint64_t in_phase)
{
	const struct fanout_config *cfg = h->cfg;
	bool tried;

	if (live_total(h) == cfg->subscribers) {
		h->res->connect_ns = h->last_sub_ok_ns - h->connect_start_ns;
		if (h->sh)
			h->res->connect_ns =
				slots_max(h, offsetof(struct fanout_proc_slot, last_sub_ok_ns)) -
				atomic_load(&h->sh->first_connect_ns);
		set_phase(h, PH_SETTLE);
		return;
	}
	if (h->sh) {
		uint32_t failed = atomic_load(&h->sh->connect_failed);

		tried = failed > 0 && live_total(h) + failed >= cfg->subscribers;
	} else {
		tried = h->started == cfg->subscribers && h->connecting == 0 &&
			h->res->connect_failed > 0;
	}
	if (in_phase > ms_to_ns(cfg->connect_timeout_ms) || (tried && in_phase > ms_to_ns(1000))) {
		fail(h, "not every subscriber could connect and subscribe");
		finish(h);
	}
}

/* A child follows the parent: connects its share once told to, then holds
 * its subscribers (on_message counts their deliveries) until told to stop.
 * A parent that dies takes it along (PR_SET_PDEATHSIG). */
static void child_follow(struct harness *h, uint64_t now)
{
	struct fanout_shared *sh = h->sh;

	if (atomic_load_explicit(&sh->stop, memory_order_acquire)) {
		finish(h);
		return;
	}
	if (h->phase == PH_PUB_CONNECT) {
		if (atomic_load_explicit(&sh->go, memory_order_acquire))
			connect_begin(h, now);
		return;
	}
	pace_connects(h);
	/* Its CPU over the broadcast, as the parent measures its own. */
	if (!h->publish_seen && atomic_load_explicit(&sh->sent_upto, memory_order_relaxed) > 0) {
		h->publish_seen = true;
		fanout_self_cpu(&h->self0);
	}
}

static void teardown(struct harness *h);

static void on_tick(uv_timer_t *t)
{
	struct harness *h = t->data;
	const struct fanout_config *cfg = h->cfg;
	uint64_t now = fanout_now_ns(), in_phase = now - h->phase_start_ns;
	char why[sizeof(h->res->reason)];

	if (h->sh && h->phase != PH_TEARDOWN) {
		if (cfg->proc != 0) {
			child_follow(h, now);
			return;
		}
		if (fanout_procs_check(h->sh, why, sizeof(why)) < 0) {
			fail(h, why);
			finish(h);
			return;
		}
	}
	switch (h->phase) {
	case PH_PUB_CONNECT:
		if (h->pub.state == CONN_READY) {
			read_server(h, NULL, &h->res->rss_before);
			read_server(h, &h->cpu0, NULL);
			connect_begin(h, now);
		} else if (h->pub.state >= CONN_CLOSED || in_phase > ms_to_ns(cfg->connect_timeout_ms)) {
			fail(h, "publisher could not connect");
			finish(h);
		}
		break;
	case PH_SUB_CONNECT:
		pace_connects(h);
		check_connect(h, in_phase);
		break;
	case PH_SETTLE:
		if (in_phase >= ms_to_ns(cfg->settle_ms)) {
			struct fanout_proc_cpu cpu;

			read_server(h, &cpu, &h->res->rss_after);
			h->res->broker_connect_cpu.user_us = cpu.user_us - h->cpu0.user_us;
			h->res->broker_connect_cpu.sys_us = cpu.sys_us - h->cpu0.sys_us;
			start_publish(h);
		}
		break;
	case PH_PUBLISH:
		check_publish(h, now);
		break;
	case PH_DRAIN:
		check_drain(h, now);
		break;
	case PH_TEARDOWN:
		if (h->ctx) {
			teardown(h);
		} else if (in_phase > ms_to_ns(TEARDOWN_MS)) {
			fprintf(stderr, "bench_fanout: teardown overdue, leaving the loop\n");
			h->abandoned = true;
			uv_stop(&h->loop);
		}
		break;
	}
}

static void teardown(struct harness *h)
{
	struct lws_context *ctx = h->ctx;

	/* lws closes its sockets and its libuv handles on our loop; the loop
	 * ends when they and our timers are closed. */
	h->ctx = NULL;
	lws_context_destroy(ctx);
	if (h->http) {
		fanout_http_pub_close(h->http);
		h->http = NULL;
	}
	uv_close((uv_handle_t *)&h->pub_timer, NULL);
	if (h->sh && h->cfg->proc == 0)
		uv_close((uv_handle_t *)&h->sh_poll, NULL);
	if (h->raw_polling) {
		uv_close((uv_handle_t *)&h->raw_poll, NULL);
		h->raw_polling = false;
	}
	h->phase_start_ns = fanout_now_ns();
	uv_unref((uv_handle_t *)&h->tick);
}

/* ---- setup -------------------------------------------------------------------- */

static int alloc_state(struct harness *h)
{
	const struct fanout_config *cfg = h->cfg;
	uint64_t seen_bytes;

	h->seen_stride = (size_t)((cfg->messages + 7) / 8);
	seen_bytes = (uint64_t)h->seen_stride * h->nsubs;
	if (seen_bytes > SEEN_MAX_BYTES)
		return -E2BIG;
	h->nchan = cfg->channels > 1 ? cfg->channels : 1;
	if (h->sh) {
		if (h->sh->messages != cfg->messages || h->sh->nchan != h->nchan)
			return -EINVAL;
		h->chan_live = h->sh->chan_live;
		h->delivered = h->sh->delivered;
		h->msg_seq = h->sh->msg_seq;
	} else {
		h->chan_live = calloc(h->nchan, sizeof(*h->chan_live));
		h->delivered = calloc(cfg->messages, sizeof(*h->delivered));
		h->msg_seq = calloc(cfg->messages, sizeof(*h->msg_seq));
	}
	h->subs = calloc(h->nsubs ? h->nsubs : 1, sizeof(*h->subs));
	h->seen = calloc(seen_bytes ? seen_bytes : 1, 1);
	h->sent_ns = calloc(cfg->messages, sizeof(*h->sent_ns));
	h->payload_len = cfg->msg_bytes - cfg->ops->data_overhead;
	h->payload = malloc(h->payload_len);
	if (!h->chan_live || !h->subs || !h->seen || !h->delivered || !h->msg_seq || !h->sent_ns ||
	    !h->payload)
		return -ENOMEM;
	for (uint32_t i = 0; i < h->nsubs; i++) {
		h->subs[i].h = h;
		h->subs[i].id = h->sub_first + i;
	}
	h->pub.h = h;
	h->pub.id = cfg->subscribers;
	return 0;
}

static void free_state(struct harness *h)
{
	if (h->subs)
		for (uint32_t i = 0; i < h->nsubs; i++) {
			raw_stop(&h->subs[i]); /* one lws never reported closed */
			free(h->subs[i].frag);
		}
	free(h->pub.frag);
	free(h->subs);
	if (!h->sh) { /* else they are in the shared region */
		free((void *)h->chan_live);
		free((void *)h->delivered);
		free((void *)h->msg_seq);
	}
	free(h->seen);
	free(h->sent_ns);
	free(h->payload);
	if (h->raw_ep >= 0)
		close(h->raw_ep);
	h->raw_ep = -1;
}

static int create_context(struct harness *h)
{
	struct lws_context_creation_info info;
	void *loops[1] = { &h->loop };

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_LIBUV;
	info.foreign_loops = loops;
	/* No fd_limit_per_thread: given one, lws 4.1 finds a socket's wsi by a
	 * linear search of its table (over half the harness's CPU at 10 000
	 * connections); sized from RLIMIT_NOFILE, it indexes by fd. */
	/* Reads of 64 KiB rather than lws's 4 KiB: fewer recv() and wake-ups per
	 * delivery with 4 KiB messages, for every broker alike. */
	info.pt_serv_buf_size = 65536;
	info.timeout_secs = 20;
	info.connect_timeout_secs = 10;
	info.pcontext = &h->ctx_alive;
	h->ctx = lws_create_context(&info);
	h->ctx_alive = h->ctx;
	return h->ctx ? 0 : -ENOMEM;
}

static void summarize(struct harness *h)
{
	struct fanout_result *res = h->res;
	const struct fanout_config *cfg = h->cfg;
	/* Spread over processes, every process counted its subscribers into
	 * sh->chan_ever as they subscribed; alone, they are counted here. */
	_Atomic uint32_t *ever = h->sh ? h->sh->chan_ever : h->chan_live;

	res->subscribed = 0;
	if (!h->sh) {
		for (uint32_t k = 0; k < h->nchan; k++)
			atomic_store_explicit(&h->chan_live[k], 0, memory_order_relaxed);
		for (uint32_t i = 0; i < h->nsubs; i++)
			if (h->subs[i].subscribed)
				atomic_fetch_add_explicit(&h->chan_live[chan_of(h, h->subs[i].id)],
							  1, memory_order_relaxed);
	}
	for (uint32_t k = 0; k < h->nchan; k++)
		res->subscribed += atomic_load_explicit(&ever[k], memory_order_relaxed);
	/* Message i is expected by every subscriber ever subscribed to its
	 * channel (with one channel: published x subscribed). */
	res->expected = 0;
	for (uint64_t i = 0; i < res->published; i++)
		res->expected += atomic_load_explicit(&ever[chan_of(h, i)], memory_order_relaxed);
	res->lost = res->expected > res->deliveries ? res->expected - res->deliveries : 0;
	if (res->subscribed < cfg->subscribers)
		fail(h, "not every subscriber subscribed");
	else if (res->closed_by_broker)
		fail(h, "subscribers were closed by the broker");
	else if (res->lost)
		fail(h, "deliveries lost");
	else if (res->duplicated || res->reordered || res->seq_gaps || res->seq_mismatch)
		fail(h, "duplicated, reordered or mis-sequenced deliveries");
	else if (res->acked != res->published || res->publish_errors)
		fail(h, "not every publish was acknowledged");
	else if (res->errors || res->bad_frames)
		fail(h, "error or unreadable frames");
	else if (res->published == 0)
		fail(h, "nothing was published");
	res->pass = res->reason[0] == '\0';
}

int fanout_run(const struct fanout_config *cfg, struct fanout_result *res)
{
	struct harness *h;
	bool parent = !cfg->shared || cfg->proc == 0;
	char why[sizeof(res->reason)];
	int rc;

	memset(res, 0, sizeof(*res));
	fanout_hist_init(&res->latency);
	fanout_hist_init(&res->ack);
	res->have_server = cfg->server_pid_count != 0;
	if (cfg->msg_bytes < FANOUT_PAYLOAD_MIN + cfg->ops->data_overhead || cfg->messages == 0 ||
	    cfg->burst == 0 || cfg->window == 0 || cfg->connect_rate == 0 ||
	    cfg->connect_concurrency == 0 || (cfg->mode == FANOUT_MODE_RATE && cfg->rate <= 0))
		return -EINVAL;
	if (cfg->shared && (cfg->mode != FANOUT_MODE_INFLIGHT1 || cfg->proc >= cfg->shared->procs ||
			    (uint64_t)cfg->sub_first + cfg->sub_count > cfg->subscribers))
		return -EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->cfg = cfg;
	h->res = res;
	h->raw_ep = epoll_create1(EPOLL_CLOEXEC); /* -1: lws reads everything */
	h->sh = cfg->shared;
	h->sub_first = h->sh ? cfg->sub_first : 0;
	h->nsubs = h->sh ? cfg->sub_count : cfg->subscribers;
	if (h->sh)
		h->slot = &h->sh->slots[cfg->proc];
	fanout_raise_nofile(h->nsubs + 64);
	rc = alloc_state(h);
	if (rc < 0)
		goto out_free;
	rc = uv_loop_init(&h->loop);
	if (rc < 0)
		goto out_free;
	uv_timer_init(&h->loop, &h->tick);
	uv_timer_init(&h->loop, &h->pub_timer);
	h->tick.data = h;
	h->pub_timer.data = h;
	if (h->sh && parent) {
		uv_timer_init(&h->loop, &h->sh_poll);
		h->sh_poll.data = h;
	}
	rc = create_context(h);
	if (rc < 0)
		goto out_close_loop;
	set_phase(h, PH_PUB_CONNECT);
	/* A child has no publisher: it waits in this phase for the parent's go. */
	rc = parent ? pub_start(h) : 0;
	if (rc < 0) {
		fail(h, "publisher could not connect");
		finish(h);
	}
	uv_timer_start(&h->tick, on_tick, TICK_MS, TICK_MS);
	uv_run(&h->loop, UV_RUN_DEFAULT);
	/* The children's figures go into res before it is judged; a child's
	 * own res is raw figures for the parent, never judged. */
	if (h->sh && parent && fanout_procs_collect(h->sh, COLLECT_MS, res, why, sizeof(why)) < 0)
		fail(h, why);
	if (parent)
		summarize(h);
	rc = 0;
	if (h->abandoned)
		return 0; /* lws still points into h: it is left to the exit */
	uv_close((uv_handle_t *)&h->tick, NULL);
	uv_run(&h->loop, UV_RUN_DEFAULT);
	/* With a foreign loop, lws 4.1 finishes destroying the context on a
	 * second call, once its handles are closed (its foreign-loop example
	 * does the same). */
	if (h->ctx_alive) {
		lws_context_destroy(h->ctx_alive);
		uv_run(&h->loop, UV_RUN_DEFAULT);
	}
out_close_loop:
	if (h->ctx) {
		lws_context_destroy(h->ctx);
		uv_close((uv_handle_t *)&h->pub_timer, NULL);
		uv_close((uv_handle_t *)&h->tick, NULL);
		uv_run(&h->loop, UV_RUN_DEFAULT);
	}
	if (uv_loop_close(&h->loop) != 0)
		fprintf(stderr, "bench_fanout: loop still has handles at close\n");
out_free:
	free_state(h);
	free(h);
	return rc;
}
