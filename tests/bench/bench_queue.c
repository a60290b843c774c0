/*
 * Durable-queue benchmark (issue 4, docs/bench-queue.md): P producers enqueue
 * and C consumers take and ack small messages through one durable queue,
 * measured end to end. Run by tests/bench/run_queue.sh against `tern dev` and,
 * in the same run, against RabbitMQ; the same workload shape for both:
 *
 *   tern:     WebSocket `tern.v1.json` (libwebsockets), `enqueue` with ref and
 *             a window of W awaiting their `ok` (ok = committed to SQLite) per
 *             producer, `consume` with prefetch F, one `ack` per delivery.
 *   rabbitmq: AMQP 0-9-1 (librabbitmq), a durable classic queue, persistent
 *             messages (delivery_mode 2), publisher confirms with the same
 *             window W, basic.qos prefetch F, manual basic.ack per delivery.
 *
 * Every message is `--bytes` long as the broker counts it (Tern: the JSON
 * text of `data`, a string, so its quotes count; RabbitMQ: the body) and
 * carries its index and CLOCK_MONOTONIC send time, so each delivery gives one
 * enqueue-to-delivery latency, and the index bitmap gives exact loss and
 * duplicate counts. Producers hold while more than `--backlog` messages are
 * enqueued and not yet acked, so a broker that takes work faster than it hands
 * it out is measured at a bounded queue depth, not by filling memory.
 *
 * The rate is messages / (first enqueue sent .. last ack sent), once every
 * message was delivered and acked exactly once. Broker CPU comes from
 * /proc/PID (schedstat of every thread, ns) over the same span.
 *
 * Output: key=value lines on stdout, `pass=1` when no message was lost,
 * duplicated or refused. Exit 0 pass, 1 fail, 2 usage or setup error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "fanout/fanout.h" /* fanout_proc_cpu, fanout_now_ns, fanout_self_cpu */

#include <errno.h>
#include <getopt.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#define MAX_CONNS 256
#define PAYLOAD_MIN 32
#define ID_MAX 128          /* longest delivery_id we keep for an ack */
#define FRAME_MAX 65536

struct cfg {
	const char *broker;
	const char *host;
	int port;
	int pid;
	const char *queue;
	uint64_t messages;
	uint32_t producers, consumers, window, prefetch, bytes;
	uint64_t backlog;
	uint32_t duration_ms;     /* whole run, at most */
	bool batch_writes;        /* tern: frames framed here, many per write */
	bool verbose;
};

/* Shared by all producers and consumers (threads for RabbitMQ, one loop for Tern). */
struct run {
	const struct cfg *cfg;
	uint64_t sent;            /* enqueues/publishes written */
	uint64_t confirmed;       /* their ok / confirm */
	uint64_t refused;         /* error replies, nacks */
	uint64_t delivered;       /* deliveries received (with duplicates) */
	uint64_t distinct;        /* distinct message indexes delivered */
	uint64_t dups;
	uint64_t redelivered;     /* attempt > 1 / redelivered flag */
	uint64_t acked;           /* acks written */
	uint64_t errors;          /* other error frames */
	uint8_t *seen;            /* per index */
	uint64_t t0_ns, t_end_ns;
	bool done, failed;
	char reason[256];
	pthread_mutex_t lat_lock;
	uint32_t *lat_us;         /* enqueue-to-delivery, µs, one per distinct delivery */
	uint64_t lat_n;
	struct fanout_proc_cpu cpu0, cpu1, self0, self1;
};

static void run_fail(struct run *r, const char *why)
{
	if (!__atomic_exchange_n(&r->failed, true, __ATOMIC_SEQ_CST))
		snprintf(r->reason, sizeof(r->reason), "%s", why);
}

/* ---- payload ---------------------------------------------------------------- */

static void put_hex16(char *out, uint64_t v)
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 15; i >= 0; i--, v >>= 4)
		out[i] = hex[v & 15];
}

static int get_hex16(const char *in, uint64_t *v)
{
	uint64_t x = 0;

	for (int i = 0; i < 16; i++) {
		char c = in[i];

		x <<= 4;
		if (c >= '0' && c <= '9')
			x |= (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			x |= (uint64_t)(c - 'a' + 10);
		else
			return -1;
	}
	*v = x;
	return 0;
}

static void payload_make(char *buf, size_t len, uint64_t index, uint64_t sent_ns)
{
	put_hex16(buf, index);
	put_hex16(buf + 16, sent_ns);
	memset(buf + 32, '.', len - 32);
}

/* One delivery: latency, exactly-once bookkeeping, the end of the run. */
static void on_delivery(struct run *r, const char *p, size_t len, bool redelivered)
{
	uint64_t idx, sent, now = fanout_now_ns();

	__atomic_add_fetch(&r->delivered, 1, __ATOMIC_RELAXED);
	if (redelivered)
		__atomic_add_fetch(&r->redelivered, 1, __ATOMIC_RELAXED);
	if (len < PAYLOAD_MIN || get_hex16(p, &idx) < 0 || get_hex16(p + 16, &sent) < 0 ||
	    idx >= r->cfg->messages) {
		run_fail(r, "a delivery carried a payload that is not ours");
		return;
	}
	if (__atomic_exchange_n(&r->seen[idx], 1, __ATOMIC_RELAXED)) {
		__atomic_add_fetch(&r->dups, 1, __ATOMIC_RELAXED);
		return;
	}
	pthread_mutex_lock(&r->lat_lock);
	if (r->lat_n < r->cfg->messages)
		r->lat_us[r->lat_n++] = (uint32_t)((now - sent) / 1000 > UINT32_MAX ? UINT32_MAX : (now - sent) / 1000);
	pthread_mutex_unlock(&r->lat_lock);
	__atomic_add_fetch(&r->distinct, 1, __ATOMIC_RELAXED);
}

/* Called after an ack was written: the last one ends the measured span. */
static void on_acked(struct run *r)
{
	uint64_t n = __atomic_add_fetch(&r->acked, 1, __ATOMIC_SEQ_CST);

	if (n >= r->cfg->messages &&
	    __atomic_load_n(&r->distinct, __ATOMIC_SEQ_CST) >= r->cfg->messages &&
	    !__atomic_load_n(&r->done, __ATOMIC_SEQ_CST)) {
		uint64_t now = fanout_now_ns();

		if (!__atomic_exchange_n(&r->done, true, __ATOMIC_SEQ_CST)) {
			r->t_end_ns = now;
			if (r->cfg->pid > 0)
				fanout_proc_cpu(r->cfg->pid, &r->cpu1);
			fanout_self_cpu(&r->self1);
		}
	}
}

/* May a producer send one more? (backlog bound) */
static bool may_send(struct run *r)
{
	uint64_t sent = __atomic_load_n(&r->sent, __ATOMIC_RELAXED);
	uint64_t acked = __atomic_load_n(&r->acked, __ATOMIC_RELAXED);

	return sent - acked < r->cfg->backlog;
}

static void start_clock(struct run *r)
{
	if (r->cfg->pid > 0)
		fanout_proc_cpu(r->cfg->pid, &r->cpu0);
	fanout_self_cpu(&r->self0);
	r->t0_ns = fanout_now_ns();
}

/* ============================================================== Tern (lws) */

enum tstate { T_CONNECTING, T_GREETED, T_CONSUME_SENT, T_READY, T_CLOSED };

struct tconn {
	struct lws *wsi;
	int idx;
	bool producer;
	enum tstate state;
	/* producer: indexes idx, idx+P, ... */
	uint64_t next, outstanding;
	/* consumer: delivery ids waiting to be acked */
	char (*ring)[ID_MAX];
	uint8_t *ring_len;
	uint32_t ring_cap, head, tail;
	bool ping_sent, pong;
	char *rx;
	size_t rx_len;
};

static struct {
	struct run *r;
	const struct cfg *cfg;
	struct lws_context *ctx;
	struct tconn conns[MAX_CONNS];
	uint32_t n_conns, greeted, ready, pongs, closed;
	lws_sorted_usec_list_t sul;
	char *payload;
	size_t payload_len;
	bool started;
} T;

static void tern_tick(lws_sorted_usec_list_t *sul)
{
	lws_sul_schedule(T.ctx, 0, &T.sul, tern_tick, 20 * LWS_US_PER_MS);
}

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Start of the value of key `key` (with quotes), or NULL; see fanout/broker_tern.c. */
static const char *find_value(const char *frame, const char *end, const char *key)
{
	size_t klen = strlen(key);
	const char *p = frame;

	while (p < end) {
		const char *hit = memmem(p, (size_t)(end - p), key, klen);
		const char *v;

		if (!hit)
			return NULL;
		p = hit + klen;
		if (hit > frame && hit[-1] != '{' && hit[-1] != ',' && hit[-1] != ' ')
			continue;
		v = skip_ws(p, end);
		if (v < end && *v == ':')
			return skip_ws(v + 1, end);
	}
	return NULL;
}

static int64_t read_uint(const char *p, const char *end)
{
	int64_t v = 0;
	const char *s = p;

	while (p < end && *p >= '0' && *p <= '9' && p - s < 18)
		v = v * 10 + (*p++ - '0');
	return p == s ? -1 : v;
}

/* A JSON string value without escapes: [*out, *out + *len). */
static bool read_str(const char *v, const char *end, const char **out, size_t *len)
{
	const char *q;

	if (!v || v >= end || *v != '"')
		return false;
	q = memchr(v + 1, '"', (size_t)(end - v - 1));
	if (!q || memchr(v + 1, '\\', (size_t)(q - v - 1)))
		return false;
	*out = v + 1;
	*len = (size_t)(q - v - 1);
	return true;
}

static bool is_op(const char *v, const char *end, const char *lit)
{
	size_t n = strlen(lit);

	return v && (size_t)(end - v) >= n && memcmp(v, lit, n) == 0;
}

static void kick_producers(void)
{
	for (uint32_t i = 0; i < T.n_conns; i++) {
		struct tconn *c = &T.conns[i];

		if (c->producer && c->state == T_READY && c->outstanding < T.cfg->window &&
		    c->next < T.cfg->messages)
			lws_callback_on_writable(c->wsi);
	}
}

static void tern_frame(struct tconn *c, const char *f, size_t len)
{
	struct run *r = T.r;
	const char *end = f + len, *op = find_value(f, end, "\"op\""), *v;
	int64_t ref;

	if (!op) {
		run_fail(r, "tern: a frame without op");
		return;
	}
	if (is_op(op, end, "\"delivery\"")) {
		const char *id, *data;
		size_t id_len, data_len;
		int64_t attempt;

		if (!read_str(find_value(f, end, "\"delivery_id\""), end, &id, &id_len) ||
		    !read_str(find_value(f, end, "\"data\""), end, &data, &data_len) || id_len >= ID_MAX) {
			run_fail(r, "tern: unreadable delivery frame");
			return;
		}
		v = find_value(f, end, "\"attempt\"");
		attempt = v ? read_uint(v, end) : 1;
		on_delivery(r, data, data_len, attempt > 1);
		if ((c->tail - c->head) >= c->ring_cap) {
			run_fail(r, "tern: more unacked deliveries than prefetch");
			return;
		}
		memcpy(c->ring[c->tail % c->ring_cap], id, id_len);
		c->ring_len[c->tail % c->ring_cap] = (uint8_t)id_len;
		c->tail++;
		lws_callback_on_writable(c->wsi);
		return;
	}
	v = find_value(f, end, "\"ref\"");
	ref = v ? read_uint(v, end) : -1;
	if (is_op(op, end, "\"ok\"")) {
		if (c->producer && ref >= 1) {
			c->outstanding--;
			__atomic_add_fetch(&r->confirmed, 1, __ATOMIC_RELAXED);
			if (c->next < T.cfg->messages)
				lws_callback_on_writable(c->wsi);
		} else if (!c->producer && c->state == T_CONSUME_SENT) {
			c->state = T_READY;
			T.ready++;
		}
	} else if (is_op(op, end, "\"pong\"")) {
		if (!c->pong) {
			c->pong = true;
			T.pongs++;
		}
	} else if (is_op(op, end, "\"error\"")) {
		if (c->producer && ref >= 1) {
			c->outstanding--;
			__atomic_add_fetch(&r->refused, 1, __ATOMIC_RELAXED);
		} else {
			__atomic_add_fetch(&r->errors, 1, __ATOMIC_RELAXED);
		}
		if (T.cfg->verbose || r->errors + r->refused < 5)
			fprintf(stderr, "bench_queue: error frame: %.*s\n", (int)(len > 300 ? 300 : len), f);
		/* a refused enqueue or consume ends the run at once */
		if (c->producer || c->state == T_CONSUME_SENT) {
			char why[200];

			snprintf(why, sizeof(why), "tern: %s refused: %.*s", c->producer ? "enqueue" : "consume",
				 (int)(len > 120 ? 120 : len), f);
			run_fail(r, why);
		}
	} else if (is_op(op, end, "\"connected\"")) {
		c->state = T_GREETED;
		T.greeted++;
		lws_callback_on_writable(c->wsi);
	}
}

static int tern_write(struct tconn *c, char *out, int n)
{
	return lws_write(c->wsi, (unsigned char *)out, (size_t)n, LWS_WRITE_TEXT) < n ? -1 : 0;
}

/* --batch-writes: client frames (RFC 6455 5.2: FIN, text, masked) built here
 * side by side and handed to lws as raw bytes in one write, as the edge does
 * for its own frames; lws keeps what the socket did not take and sends it
 * before anything else. */
#define BATCH_BYTES 65536
static unsigned char batch_buf[LWS_PRE + BATCH_BYTES + 1024];
static size_t batch_used;
static uint64_t mask_state = 0x9e3779b97f4a7c15ull;

static void batch_frame(const char *payload, size_t n)
{
	unsigned char *o = batch_buf + LWS_PRE + batch_used;
	uint32_t key;
	size_t h = 0;

	mask_state ^= mask_state << 13;
	mask_state ^= mask_state >> 7;
	mask_state ^= mask_state << 17;
	key = (uint32_t)mask_state;
	o[h++] = 0x81;
	if (n < 126) {
		o[h++] = (unsigned char)(0x80 | n);
	} else {
		o[h++] = 0x80 | 126;
		o[h++] = (unsigned char)(n >> 8);
		o[h++] = (unsigned char)n;
	}
	memcpy(o + h, &key, 4);
	for (size_t i = 0; i < n; i++)
		o[h + 4 + i] = (unsigned char)payload[i] ^ ((const unsigned char *)&key)[i & 3];
	batch_used += h + 4 + n;
}

static int batch_flush(struct tconn *c)
{
	size_t n = batch_used;

	batch_used = 0;
	if (!n)
		return 0;
	return lws_write(c->wsi, batch_buf + LWS_PRE, n, LWS_WRITE_RAW) < (int)n ? -1 : 0;
}

static int tern_writeable(struct tconn *c)
{
	unsigned char buf[LWS_PRE + 1024];
	char *out = (char *)buf + LWS_PRE;
	struct run *r = T.r;
	int n;

	if (!c->producer && c->state == T_GREETED) {
		n = snprintf(out, 1024, "{\"op\":\"consume\",\"queue\":\"%s\",\"prefetch\":%u,\"ref\":1}",
			     T.cfg->queue, T.cfg->prefetch);
		c->state = T_CONSUME_SENT;
		return tern_write(c, out, n);
	}
	if (c->producer && c->state == T_GREETED) {
		c->state = T_READY;
		T.ready++;
	}
	if (c->state != T_READY)
		return 0;
	if (c->producer) {
		if (!T.started)
			return 0;
		while (c->next < T.cfg->messages && c->outstanding < T.cfg->window && may_send(r)) {
			uint64_t i = c->next;

			payload_make(T.payload, T.payload_len, i, fanout_now_ns());
			n = snprintf(out, 1024, "{\"op\":\"enqueue\",\"queue\":\"%s\",\"ref\":%llu,\"data\":\"%.*s\"}",
				     T.cfg->queue, (unsigned long long)i + 1, (int)T.payload_len, T.payload);
			if (T.cfg->batch_writes) {
				batch_frame(out, (size_t)n);
				c->next += T.cfg->producers;
				c->outstanding++;
				__atomic_add_fetch(&r->sent, 1, __ATOMIC_RELAXED);
				if (batch_used < BATCH_BYTES - 1024)
					continue;
				if (batch_flush(c) < 0)
					return -1;
				lws_callback_on_writable(c->wsi);
				break;
			}
			if (tern_write(c, out, n) < 0)
				return -1;
			c->next += T.cfg->producers;
			c->outstanding++;
			__atomic_add_fetch(&r->sent, 1, __ATOMIC_RELAXED);
			if (lws_send_pipe_choked(c->wsi)) {
				lws_callback_on_writable(c->wsi);
				break;
			}
		}
		return batch_flush(c);
	}
	/* consumer: acks, then the final ping */
	while (c->head != c->tail) {
		uint32_t k = c->head % c->ring_cap;

		n = snprintf(out, 1024, "{\"op\":\"ack\",\"queue\":\"%s\",\"delivery_id\":\"%.*s\"}",
			     T.cfg->queue, (int)c->ring_len[k], c->ring[k]);
		if (T.cfg->batch_writes) {
			batch_frame(out, (size_t)n);
			c->head++;
			on_acked(r);
			if (batch_used < BATCH_BYTES - 1024)
				continue;
			if (batch_flush(c) < 0)
				return -1;
			lws_callback_on_writable(c->wsi);
			break;
		}
		if (tern_write(c, out, n) < 0)
			return -1;
		c->head++;
		on_acked(r);
		if (lws_send_pipe_choked(c->wsi)) {
			lws_callback_on_writable(c->wsi);
			break;
		}
	}
	if (batch_flush(c) < 0)
		return -1;
	kick_producers();
	if (r->done && !c->ping_sent && c->head == c->tail) {
		n = snprintf(out, 1024, "{\"op\":\"ping\",\"ref\":424242}");
		c->ping_sent = true;
		return tern_write(c, out, n);
	}
	return 0;
}

static int tern_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
	struct tconn *c = lws_get_opaque_user_data(wsi);

	switch (reason) {
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		if (c) {
			c->state = T_CLOSED;
			c->wsi = NULL;
			T.closed++;
			run_fail(T.r, in ? (const char *)in : "tern: connection error");
		}
		return 0;
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		return 0;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (!c)
			return -1;
		if (c->rx_len + len > FRAME_MAX) {
			run_fail(T.r, "tern: frame over 64 KiB");
			return -1;
		}
		memcpy(c->rx + c->rx_len, in, len);
		c->rx_len += len;
		if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
			tern_frame(c, c->rx, c->rx_len);
			c->rx_len = 0;
		}
		return 0;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		return c ? tern_writeable(c) : 0;
	case LWS_CALLBACK_CLIENT_CLOSED:
		if (c && c->state != T_CLOSED) {
			c->state = T_CLOSED;
			c->wsi = NULL;
			T.closed++;
			if (!T.r->done)
				run_fail(T.r, "tern: the broker closed a connection during the run");
		}
		return 0;
	default:
		return 0;
	}
}

static const struct lws_protocols tern_protocols[] = {
	{ "bench-queue", tern_cb, 0, 4096, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 },
};

static const lws_retry_bo_t no_validity = { .secs_since_valid_ping = 0, .secs_since_valid_hangup = 0 };

static int tern_run(const struct cfg *cfg, struct run *r)
{
	struct lws_context_creation_info info;
	uint64_t deadline, t_done = 0;
	char host[64];

	memset(&T, 0, sizeof(T));
	T.r = r;
	T.cfg = cfg;
	T.payload_len = cfg->bytes - 2; /* the JSON string's quotes count */
	T.payload = calloc(1, T.payload_len + 1);
	lws_set_log_level(LLL_ERR, NULL);
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = tern_protocols;
	info.fd_limit_per_thread = 1024;
	T.ctx = lws_create_context(&info);
	if (!T.ctx || !T.payload)
		return -ENOMEM;
	lws_sul_schedule(T.ctx, 0, &T.sul, tern_tick, 20 * LWS_US_PER_MS);
	snprintf(host, sizeof(host), "%s:%d", cfg->host, cfg->port);
	T.n_conns = cfg->producers + cfg->consumers;
	for (uint32_t i = 0; i < T.n_conns; i++) {
		struct tconn *c = &T.conns[i];
		struct lws_client_connect_info ci;

		c->producer = i < cfg->producers;
		c->idx = c->producer ? (int)i : (int)(i - cfg->producers);
		c->next = c->producer ? i : 0;
		c->rx = malloc(FRAME_MAX);
		if (!c->producer) {
			c->ring_cap = cfg->prefetch + 16;
			c->ring = calloc(c->ring_cap, ID_MAX);
			c->ring_len = calloc(c->ring_cap, 1);
		}
		memset(&ci, 0, sizeof(ci));
		ci.context = T.ctx;
		ci.address = cfg->host;
		ci.port = cfg->port;
		ci.path = "/v1/ws";
		ci.host = host;
		ci.origin = host;
		ci.protocol = "tern.v1.json";
		ci.local_protocol_name = "bench-queue";
		ci.opaque_user_data = c;
		ci.pwsi = &c->wsi;
		ci.retry_and_idle_policy = &no_validity;
		c->state = T_CONNECTING;
		if (!lws_client_connect_via_info(&ci) && c->state == T_CONNECTING) {
			run_fail(r, "tern: connect failed");
			break;
		}
	}
	deadline = fanout_now_ns() + (uint64_t)cfg->duration_ms * 1000000ull;
	while (!r->failed && fanout_now_ns() < deadline) {
		lws_service(T.ctx, 0);
		if (!T.started && T.ready == T.n_conns) {
			T.started = true;
			start_clock(r);
			kick_producers();
		}
		if (r->done && !t_done) {
			t_done = fanout_now_ns();
			for (uint32_t i = 0; i < T.n_conns; i++)
				if (!T.conns[i].producer && T.conns[i].wsi)
					lws_callback_on_writable(T.conns[i].wsi);
		}
		/* after the last ack: every consumer's pong (its acks were read), then a
		 * short idle to catch late duplicates */
		if (t_done && T.pongs == cfg->consumers && fanout_now_ns() - t_done > 500000000ull)
			break;
	}
	if (!r->done)
		run_fail(r, T.started ? "tern: not every message was delivered and acked in time"
				      : "tern: connections not ready in time");
	else if (T.pongs < cfg->consumers)
		run_fail(r, "tern: a consumer got no pong after its last ack");
	lws_context_destroy(T.ctx);
	for (uint32_t i = 0; i < T.n_conns; i++) {
		free(T.conns[i].rx);
		free(T.conns[i].ring);
		free(T.conns[i].ring_len);
	}
	free(T.payload);
	return 0;
}

/* ========================================================== RabbitMQ (AMQP) */

struct rconn {
	struct run *r;
	int idx;
	amqp_connection_state_t conn;
};

static int amqp_ok(amqp_rpc_reply_t x, const char *what, struct run *r)
{
	char buf[200];

	if (x.reply_type == AMQP_RESPONSE_NORMAL)
		return 0;
	if (x.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
		snprintf(buf, sizeof(buf), "rabbitmq: %s: %s", what, amqp_error_string2(x.library_error));
	else if (x.reply.id == AMQP_CONNECTION_CLOSE_METHOD || x.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_t *m = x.reply.decoded; /* same layout for connection.close */

		snprintf(buf, sizeof(buf), "rabbitmq: %s: server closed %u %.*s", what, m->reply_code,
			 (int)m->reply_text.len, (char *)m->reply_text.bytes);
	} else
		snprintf(buf, sizeof(buf), "rabbitmq: %s: reply type %d", what, (int)x.reply_type);
	if (r)
		run_fail(r, buf);
	else
		fprintf(stderr, "%s\n", buf);
	return -1;
}

static amqp_connection_state_t rabbit_connect(const struct cfg *cfg, struct run *r)
{
	amqp_connection_state_t conn = amqp_new_connection();
	amqp_socket_t *sock = amqp_tcp_socket_new(conn);

	if (!sock || amqp_socket_open(sock, cfg->host, cfg->port) != AMQP_STATUS_OK) {
		if (r)
			run_fail(r, "rabbitmq: cannot connect");
		amqp_destroy_connection(conn);
		return NULL;
	}
	if (amqp_ok(amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login", r) ||
	    (amqp_channel_open(conn, 1), amqp_ok(amqp_get_rpc_reply(conn), "channel.open", r))) {
		amqp_destroy_connection(conn);
		return NULL;
	}
	return conn;
}

static void rabbit_close(amqp_connection_state_t conn)
{
	amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
	amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
}

static pthread_barrier_t rabbit_ready;

/* Reads confirms until `outstanding` is below `limit` (or, with limit 0, until
 * the deadline passes with nothing read). Returns the new outstanding. */
static uint64_t rabbit_confirms(struct rconn *rc, uint64_t *through, uint64_t published, uint64_t *confirmed,
				uint64_t limit, bool block)
{
	struct run *r = rc->r;

	while (published - *confirmed >= limit || !block) {
		amqp_frame_t frame;
		struct timeval tv = { block ? 1 : 0, 0 };
		int st;

		if (!block && !amqp_frames_enqueued(rc->conn) && !amqp_data_in_buffer(rc->conn)) {
			tv.tv_sec = 0;
			tv.tv_usec = 0;
		}
		st = amqp_simple_wait_frame_noblock(rc->conn, &frame, &tv);
		if (st == AMQP_STATUS_TIMEOUT) {
			if (!block || r->failed || r->done)
				break;
			continue;
		}
		if (st != AMQP_STATUS_OK) {
			run_fail(r, "rabbitmq: producer connection failed");
			break;
		}
		if (frame.frame_type != AMQP_FRAME_METHOD)
			continue;
		if (frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
			amqp_basic_ack_t *a = frame.payload.method.decoded;
			uint64_t n = a->multiple ? a->delivery_tag - *through : 1;

			if (a->multiple || a->delivery_tag == *through + 1)
				*through = a->delivery_tag;
			*confirmed += n;
			__atomic_add_fetch(&r->confirmed, n, __ATOMIC_RELAXED);
		} else if (frame.payload.method.id == AMQP_BASIC_NACK_METHOD) {
			amqp_basic_nack_t *a = frame.payload.method.decoded;
			uint64_t n = a->multiple ? a->delivery_tag - *through : 1;

			if (a->multiple || a->delivery_tag == *through + 1)
				*through = a->delivery_tag;
			*confirmed += n;
			__atomic_add_fetch(&r->refused, n, __ATOMIC_RELAXED);
		} else if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
			   frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
			run_fail(r, "rabbitmq: the broker closed the producer's channel");
			break;
		}
		amqp_maybe_release_buffers(rc->conn);
	}
	return published - *confirmed;
}

static void *rabbit_producer(void *arg)
{
	struct rconn *rc = arg;
	struct run *r = rc->r;
	const struct cfg *cfg = r->cfg;
	amqp_basic_properties_t props;
	char *body = malloc(cfg->bytes);
	uint64_t published = 0, confirmed = 0, through = 0;

	pthread_barrier_wait(&rabbit_ready);
	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
	props.delivery_mode = 2; /* persistent */
	for (uint64_t i = (uint64_t)rc->idx; i < cfg->messages && !r->failed; i += cfg->producers) {
		amqp_bytes_t b = { cfg->bytes, body };

		while (!may_send(r) && !r->failed) {
			rabbit_confirms(rc, &through, published, &confirmed, 0, false);
			usleep(50);
		}
		payload_make(body, cfg->bytes, i, fanout_now_ns());
		if (amqp_basic_publish(rc->conn, 1, amqp_empty_bytes, amqp_cstring_bytes(cfg->queue), 0, 0,
				       &props, b) != AMQP_STATUS_OK) {
			run_fail(r, "rabbitmq: basic.publish failed");
			break;
		}
		published++;
		__atomic_add_fetch(&r->sent, 1, __ATOMIC_RELAXED);
		if (published - confirmed >= cfg->window)
			rabbit_confirms(rc, &through, published, &confirmed, cfg->window, true);
	}
	while (published > confirmed && !r->failed && !r->done)
		rabbit_confirms(rc, &through, published, &confirmed, 1, true);
	free(body);
	return NULL;
}

static void *rabbit_consumer(void *arg)
{
	struct rconn *rc = arg;
	struct run *r = rc->r;
	const struct cfg *cfg = r->cfg;

	amqp_basic_qos(rc->conn, 1, 0, (uint16_t)cfg->prefetch, 0);
	if (amqp_ok(amqp_get_rpc_reply(rc->conn), "basic.qos", r))
		goto out;
	amqp_basic_consume(rc->conn, 1, amqp_cstring_bytes(cfg->queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
	if (amqp_ok(amqp_get_rpc_reply(rc->conn), "basic.consume", r))
		goto out;
out:
	pthread_barrier_wait(&rabbit_ready);
	while (!r->failed && !r->done) {
		amqp_envelope_t env;
		struct timeval tv = { 0, 200000 };
		amqp_rpc_reply_t x;

		amqp_maybe_release_buffers(rc->conn);
		x = amqp_consume_message(rc->conn, &env, &tv, 0);
		if (x.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && x.library_error == AMQP_STATUS_TIMEOUT)
			continue;
		if (x.reply_type != AMQP_RESPONSE_NORMAL) {
			if (x.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
			    x.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
				/* a frame other than a delivery (e.g. a late method): read and drop it */
				amqp_frame_t f;

				if (amqp_simple_wait_frame(rc->conn, &f) == AMQP_STATUS_OK)
					continue;
			}
			amqp_ok(x, "consume", r);
			break;
		}
		on_delivery(r, env.message.body.bytes, env.message.body.len, env.redelivered);
		if (amqp_basic_ack(rc->conn, 1, env.delivery_tag, 0) != AMQP_STATUS_OK) {
			amqp_destroy_envelope(&env);
			run_fail(r, "rabbitmq: basic.ack failed");
			break;
		}
		amqp_destroy_envelope(&env);
		on_acked(r);
	}
	return NULL;
}

static int rabbit_run(const struct cfg *cfg, struct run *r)
{
	uint32_t n = cfg->producers + cfg->consumers;
	struct rconn rcs[MAX_CONNS];
	pthread_t th[MAX_CONNS];
	amqp_connection_state_t admin = NULL;
	uint64_t deadline;

	/* The broker may still be booting: retry the first connection for 60 s. */
	for (int i = 0; i < 600 && !admin; i++) {
		admin = rabbit_connect(cfg, NULL);
		if (!admin)
			usleep(100000);
	}
	if (!admin) {
		run_fail(r, "rabbitmq: no AMQP connection within 60 s");
		return 0;
	}
	amqp_queue_declare(admin, 1, amqp_cstring_bytes(cfg->queue), 0, 1 /* durable */, 0, 0, amqp_empty_table);
	if (amqp_ok(amqp_get_rpc_reply(admin), "queue.declare", r))
		return 0;
	amqp_queue_purge(admin, 1, amqp_cstring_bytes(cfg->queue));
	if (amqp_ok(amqp_get_rpc_reply(admin), "queue.purge", r))
		return 0;
	for (uint32_t i = 0; i < n; i++) {
		rcs[i].r = r;
		rcs[i].idx = (int)(i < cfg->producers ? i : i - cfg->producers);
		rcs[i].conn = rabbit_connect(cfg, r);
		if (!rcs[i].conn)
			return 0;
		if (i < cfg->producers) {
			amqp_confirm_select(rcs[i].conn, 1);
			if (amqp_ok(amqp_get_rpc_reply(rcs[i].conn), "confirm.select", r))
				return 0;
		}
	}
	pthread_barrier_init(&rabbit_ready, NULL, n + 1);
	for (uint32_t i = 0; i < n; i++)
		pthread_create(&th[i], NULL, i < cfg->producers ? rabbit_producer : rabbit_consumer, &rcs[i]);
	pthread_barrier_wait(&rabbit_ready);
	start_clock(r);
	deadline = r->t0_ns + (uint64_t)cfg->duration_ms * 1000000ull;
	while (!r->done && !r->failed && fanout_now_ns() < deadline)
		usleep(10000);
	if (!r->done)
		run_fail(r, "rabbitmq: not every message was delivered and acked in time");
	else
		usleep(500000); /* catch late duplicates */
	__atomic_store_n(&r->done, true, __ATOMIC_SEQ_CST);
	for (uint32_t i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	for (uint32_t i = 0; i < n; i++)
		rabbit_close(rcs[i].conn);
	/* every ack was taken: nothing is left in the queue once the consumers are gone */
	if (!r->failed) {
		amqp_queue_declare_ok_t *ok = NULL;

		for (int i = 0; i < 50; i++) {
			ok = amqp_queue_declare(admin, 1, amqp_cstring_bytes(cfg->queue), 1 /* passive */, 1, 0, 0,
						amqp_empty_table);
			if (!ok || ok->message_count == 0)
				break;
			usleep(100000);
		}
		if (!ok)
			run_fail(r, "rabbitmq: passive queue.declare after the run failed");
		else if (ok->message_count)
			run_fail(r, "rabbitmq: messages left in the queue after every ack");
	}
	rabbit_close(admin);
	return 0;
}

/* ================================================================== main */

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static uint32_t quantile(const uint32_t *v, uint64_t n, double q)
{
	uint64_t i;

	if (!n)
		return 0;
	i = (uint64_t)(q * (double)n);
	if (i >= n)
		i = n - 1;
	return v[i];
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_queue --broker tern|rabbitmq --port N [--host 127.0.0.1] [--pid PID]\n"
		"       [--queue NAME] [--messages N] [--producers P] [--consumers C] [--window W]\n"
		"       [--prefetch F] [--bytes B] [--backlog N] [--duration-ms MS] [--batch-writes]\n"
		"       [--verbose]\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "broker", 1, NULL, 'b' }, { "host", 1, NULL, 'h' }, { "port", 1, NULL, 'p' },
		{ "pid", 1, NULL, 'P' }, { "queue", 1, NULL, 'q' }, { "messages", 1, NULL, 'n' },
		{ "producers", 1, NULL, 'r' }, { "consumers", 1, NULL, 'c' }, { "window", 1, NULL, 'w' },
		{ "prefetch", 1, NULL, 'f' }, { "bytes", 1, NULL, 'B' }, { "backlog", 1, NULL, 'k' },
		{ "duration-ms", 1, NULL, 'd' }, { "verbose", 0, NULL, 'v' },
		{ "batch-writes", 0, NULL, 'W' }, { NULL, 0, NULL, 0 },
	};
	struct cfg cfg = {
		.broker = NULL, .host = "127.0.0.1", .port = 0, .pid = 0, .queue = "bench-queue",
		.messages = 200000, .producers = 2, .consumers = 2, .window = 256, .prefetch = 256,
		.bytes = 64, .backlog = 20000, .duration_ms = 120000,
	};
	struct run r;
	double secs, rate;
	int o, rc;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'b': cfg.broker = optarg; break;
		case 'h': cfg.host = optarg; break;
		case 'p': cfg.port = atoi(optarg); break;
		case 'P': cfg.pid = atoi(optarg); break;
		case 'q': cfg.queue = optarg; break;
		case 'n': cfg.messages = strtoull(optarg, NULL, 10); break;
		case 'r': cfg.producers = (uint32_t)atoi(optarg); break;
		case 'c': cfg.consumers = (uint32_t)atoi(optarg); break;
		case 'w': cfg.window = (uint32_t)atoi(optarg); break;
		case 'f': cfg.prefetch = (uint32_t)atoi(optarg); break;
		case 'B': cfg.bytes = (uint32_t)atoi(optarg); break;
		case 'k': cfg.backlog = strtoull(optarg, NULL, 10); break;
		case 'd': cfg.duration_ms = (uint32_t)atoi(optarg); break;
		case 'v': cfg.verbose = true; break;
		case 'W': cfg.batch_writes = true; break;
		default: usage(); return 2;
		}
	}
	if (!cfg.broker || cfg.port <= 0 || !cfg.messages || !cfg.producers || !cfg.consumers ||
	    cfg.producers + cfg.consumers > MAX_CONNS || !cfg.window || !cfg.prefetch || cfg.prefetch > 65535 ||
	    cfg.bytes < PAYLOAD_MIN + 2 || cfg.bytes > 4096 || !cfg.backlog || strlen(cfg.queue) > 200 ||
	    strpbrk(cfg.queue, "\"\\ ")) {
		usage();
		return 2;
	}
	memset(&r, 0, sizeof(r));
	r.cfg = &cfg;
	r.seen = calloc(cfg.messages, 1);
	r.lat_us = calloc(cfg.messages, sizeof(uint32_t));
	pthread_mutex_init(&r.lat_lock, NULL);
	if (!r.seen || !r.lat_us) {
		fprintf(stderr, "bench_queue: out of memory for %llu messages\n", (unsigned long long)cfg.messages);
		free(r.seen);
		free(r.lat_us);
		return 2;
	}
	if (strcmp(cfg.broker, "tern") == 0)
		rc = tern_run(&cfg, &r);
	else if (strcmp(cfg.broker, "rabbitmq") == 0)
		rc = rabbit_run(&cfg, &r);
	else
		rc = -EINVAL;
	if (rc < 0) {
		fprintf(stderr, "bench_queue: harness could not start: %s\n", strerror(-rc));
		free(r.seen);
		free(r.lat_us);
		return 2;
	}
	if (!r.failed && (r.distinct != cfg.messages || r.dups || r.refused || r.errors))
		run_fail(&r, r.dups ? "duplicate deliveries" : r.refused ? "enqueues refused" :
			     r.errors ? "error frames" : "messages lost");
	qsort(r.lat_us, r.lat_n, sizeof(uint32_t), cmp_u32);
	secs = r.done && r.t_end_ns > r.t0_ns ? (double)(r.t_end_ns - r.t0_ns) / 1e9 : 0;
	rate = secs > 0 ? (double)cfg.messages / secs : 0;
	printf("broker=%s\n", cfg.broker);
	printf("batch_writes=%d\n", cfg.batch_writes && strcmp(cfg.broker, "tern") == 0);
	printf("messages=%llu\nproducers=%u\nconsumers=%u\nwindow=%u\nprefetch=%u\nbytes=%u\nbacklog=%llu\n",
	       (unsigned long long)cfg.messages, cfg.producers, cfg.consumers, cfg.window, cfg.prefetch, cfg.bytes,
	       (unsigned long long)cfg.backlog);
	printf("sent=%llu\nconfirmed=%llu\nrefused=%llu\ndelivered=%llu\ndistinct=%llu\nlost=%llu\n"
	       "duplicated=%llu\nredelivered=%llu\nacked=%llu\nerrors=%llu\n",
	       (unsigned long long)r.sent, (unsigned long long)r.confirmed, (unsigned long long)r.refused,
	       (unsigned long long)r.delivered, (unsigned long long)r.distinct,
	       (unsigned long long)(cfg.messages - r.distinct), (unsigned long long)r.dups,
	       (unsigned long long)r.redelivered, (unsigned long long)r.acked, (unsigned long long)r.errors);
	printf("seconds=%.3f\nrate=%.0f\n", secs, rate);
	printf("latency_p50_us=%u\nlatency_p99_us=%u\nlatency_p999_us=%u\nlatency_max_us=%u\n",
	       quantile(r.lat_us, r.lat_n, 0.50), quantile(r.lat_us, r.lat_n, 0.99),
	       quantile(r.lat_us, r.lat_n, 0.999), r.lat_n ? r.lat_us[r.lat_n - 1] : 0);
	if (cfg.pid > 0 && r.done) {
		uint64_t oncpu = r.cpu1.oncpu_ns - r.cpu0.oncpu_ns;
		uint64_t ticks_us = (r.cpu1.user_us + r.cpu1.sys_us) - (r.cpu0.user_us + r.cpu0.sys_us);

		printf("broker_cpu_us_per_msg=%.2f\n",
		       (oncpu ? (double)oncpu / 1000.0 : (double)ticks_us) / (double)cfg.messages);
		printf("broker_cpu_cores=%.2f\n", secs > 0 ? (oncpu ? oncpu / 1e9 : ticks_us / 1e6) / secs : 0);
		printf("broker_runq_wait_ms=%.0f\n", (double)(r.cpu1.runq_wait_ns - r.cpu0.runq_wait_ns) / 1e6);
	}
	if (r.done) {
		uint64_t self_us = (r.self1.user_us + r.self1.sys_us) - (r.self0.user_us + r.self0.sys_us);

		printf("harness_cpu_us_per_msg=%.2f\n", (double)self_us / (double)cfg.messages);
	}
	printf("pass=%d\n", r.failed ? 0 : 1);
	if (r.failed)
		printf("reason=%s\n", r.reason);
	fflush(stdout);
	free(r.seen);
	free(r.lat_us);
	pthread_mutex_destroy(&r.lat_lock);
	return r.failed ? 1 : 0;
}
