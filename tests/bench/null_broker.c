/*
 * bench_null: the cheapest broker there can be, as the fan-out floor that the
 * harness itself sees. It speaks just enough of Tern's WebSocket protocol for
 * bench_fanout (subscribe, publish, ok, message; any number of channels) and delivers a
 * publish by writing the same pre-framed bytes to every subscriber with one
 * send() each, straight to the socket: no queue, no copy per subscriber, no
 * store. With one message in flight its CPU per delivery is the kernel's
 * send() cost under exactly the receiver, the harness, that every broker
 * faces, plus the little it costs to read a publish and answer it.
 *
 *   bench_null --port PORT      (listens on 127.0.0.1; SIGTERM ends it)
 *
 * libwebsockets does the handshakes and reads the clients' frames (the rule
 * that we never write our own WebSocket framing holds: the frames it writes
 * by hand are the fixed server-to-client header of RFC 6455 section 5.2 in
 * front of bytes it built once). A subscriber whose send() would block or
 * fails is dropped and counted: with one message in flight that never
 * happens, and a run that saw it is no floor.
 */
#include <errno.h>
#include <libwebsockets.h>
#include <uv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define NULL_SUBSCRIBERS_MAX 200000
#define NULL_CHANNELS_MAX 65536
#define NULL_BUCKETS 16384 /* power of two */
#define NULL_FRAME_MAX (1024 * 1024) /* a client frame, at most */

struct nconn {
	char *in; /* a frame's pieces, until its last */
	size_t in_len;
	struct nchan *ch; /* subscribed to, or NULL */
	unsigned slot;    /* index in ch->subs */
};

struct nsub {
	int fd; /* -1 once dropped */
	struct lws *wsi;
};

struct nchan {
	struct nchan *next; /* in its bucket */
	char name[128];
	unsigned long long seq;
	struct nsub *subs;
	unsigned n, cap;
};

static struct {
	struct nchan *buckets[NULL_BUCKETS];
	unsigned channels, subscribers;
	unsigned long long published, dropped;
	struct lws_context *ctx;
} B;

/* The channel named name[0..len), made when `make`; NULL when unknown or
 * past the bounds. */
static struct nchan *channel(const char *name, size_t len, int make)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)name[i]) * 16777619u;
	struct nchan **b = &B.buckets[h & (NULL_BUCKETS - 1)], *c;
	for (c = *b; c; c = c->next)
		if (strlen(c->name) == len && memcmp(c->name, name, len) == 0)
			return c;
	if (!make || len >= sizeof(c->name) || B.channels == NULL_CHANNELS_MAX)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	memcpy(c->name, name, len);
	c->next = *b;
	*b = c;
	B.channels++;
	return c;
}

static void on_stop(uv_signal_t *h, int sig)
{
	(void)sig;
	uv_signal_stop(h);
	uv_close((uv_handle_t *)h, NULL);
	lws_context_destroy(B.ctx); /* closes lws's handles; the loop then ends */
}

/* Value of JSON key `key` (with its quotes and colon, e.g. "\"ref\":"), or
 * NULL. The harness's frames are ours: no spaces, no escapes in values. */
static const char *value(const char *f, size_t len, const char *key)
{
	const char *p = memmem(f, len, key, strlen(key));
	return p ? p + strlen(key) : NULL;
}

static unsigned long long number(const char *p, const char *end)
{
	unsigned long long v = 0;
	while (p && p < end && *p >= '0' && *p <= '9')
		v = v * 10 + (unsigned long long)(*p++ - '0');
	return v;
}

static int reply(struct lws *wsi, const char *fmt, unsigned long long a, unsigned long long b)
{
	unsigned char buf[LWS_PRE + 128];
	int n = snprintf((char *)buf + LWS_PRE, 128, fmt, a, b);
	return lws_write(wsi, buf + LWS_PRE, (size_t)n, LWS_WRITE_TEXT) < n ? -1 : 0;
}

/* One message to every subscriber of c: one header + body, one send() each. */
static void deliver(struct nchan *c, const char *data, size_t data_len)
{
	static char frame[10 + NULL_FRAME_MAX + 64];
	char *body = frame + 10;
	int bl = snprintf(body, 64, "{\"op\":\"message\",\"seq\":%llu,\"data\":\"", c->seq);
	memcpy(body + bl, data, data_len);
	memcpy(body + bl + data_len, "\"}", 2);
	size_t len = (size_t)bl + data_len + 2, hl;
	if (len < 126) {
		hl = 2;
		frame[8] = (char)0x81;
		frame[9] = (char)len;
	} else if (len < 65536) {
		hl = 4;
		frame[6] = (char)0x81;
		frame[7] = 126;
		frame[8] = (char)(len >> 8);
		frame[9] = (char)len;
	} else {
		hl = 10;
		frame[0] = (char)0x81;
		frame[1] = 127;
		for (int i = 0; i < 8; i++)
			frame[2 + i] = (char)((unsigned long long)len >> (56 - 8 * i));
	}
	const char *out = frame + 10 - hl;
	for (unsigned i = 0; i < c->n; i++) {
		struct nsub *s = &c->subs[i];
		if (s->fd >= 0 &&
		    send(s->fd, out, hl + len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)(hl + len)) {
			B.dropped++;
			s->fd = -1;
			lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
		}
	}
}

static int error(struct lws *wsi, unsigned long long ref, unsigned code)
{
	return reply(wsi, "{\"op\":\"error\",\"ref\":%llu,\"code\":%llu}", ref, code);
}

static int on_frame(struct lws *wsi, struct nconn *nc, const char *f, size_t len)
{
	const char *end = f + len, *name = value(f, len, "\"channel\":\"");
	const char *ne = name ? memchr(name, '"', (size_t)(end - name)) : NULL;
	unsigned long long ref = number(value(f, len, "\"ref\":"), end);
	if (!ne)
		return error(wsi, ref, 40000);
	if (value(f, len, "\"op\":\"subscribe\"")) {
		struct nchan *c = channel(name, (size_t)(ne - name), 1);
		if (!c || nc->ch || B.subscribers == NULL_SUBSCRIBERS_MAX)
			return error(wsi, ref, !c ? 40001 : 42900);
		if (c->n == c->cap) {
			unsigned cap = c->cap ? 2 * c->cap : 8;
			struct nsub *s = realloc(c->subs, cap * sizeof(*s));
			if (!s)
				return error(wsi, ref, 50000);
			c->subs = s;
			c->cap = cap;
		}
		nc->ch = c;
		nc->slot = c->n;
		c->subs[c->n++] = (struct nsub){lws_get_socket_fd(wsi), wsi};
		B.subscribers++;
		return reply(wsi, "{\"op\":\"ok\",\"ref\":%llu,\"seq\":%llu}", ref, c->seq);
	}
	const char *d = value(f, len, "\"data\":\"");
	const char *de = d ? memchr(d, '"', (size_t)(end - d)) : NULL;
	if (!value(f, len, "\"op\":\"publish\"") || !de)
		return error(wsi, ref, 40000);
	struct nchan *c = channel(name, (size_t)(ne - name), 1);
	if (!c)
		return error(wsi, ref, 40001);
	c->seq++;
	B.published++;
	deliver(c, d, (size_t)(de - d));
	return reply(wsi, "{\"op\":\"ok\",\"ref\":%llu,\"seq\":%llu}", ref, c->seq);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		    size_t len)
{
	struct nconn *c = user;
	switch (reason) {
	case LWS_CALLBACK_RECEIVE: {
		int last = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
		if (last && !c->in)
			return on_frame(wsi, c, in, len);
		if (c->in_len + len > NULL_FRAME_MAX)
			return -1;
		char *p = realloc(c->in, c->in_len + len);
		if (!p)
			return -1;
		memcpy(p + c->in_len, in, len);
		c->in = p;
		c->in_len += len;
		if (!last)
			return 0;
		int rc = on_frame(wsi, c, c->in, c->in_len);
		free(c->in);
		c->in = NULL;
		c->in_len = 0;
		return rc;
	}
	case LWS_CALLBACK_CLOSED:
		free(c->in);
		c->in = NULL;
		if (c->ch) { /* the last subscriber takes its slot */
			struct nchan *ch = c->ch;
			ch->subs[c->slot] = ch->subs[--ch->n];
			if (c->slot < ch->n)
				((struct nconn *)lws_wsi_user(ch->subs[c->slot].wsi))->slot = c->slot;
			c->ch = NULL;
			B.subscribers--;
		}
		return 0;
	default:
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	}
}

int main(int argc, char **argv)
{
	static const struct lws_protocols protocols[] = {
		{"tern.v1.json", callback, sizeof(struct nconn), 65536, 0, NULL, 0},
		{NULL, NULL, 0, 0, 0, NULL, 0},
	};
	struct lws_context_creation_info info;
	struct rlimit rl;
	int port = argc == 3 && strcmp(argv[1], "--port") == 0 ? atoi(argv[2]) : 0;
	if (port <= 0 || port > 65535) {
		fprintf(stderr, "usage: bench_null --port PORT\n");
		return 2;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	lws_set_log_level(LLL_ERR, NULL);
	/* libuv's epoll loop, as Tern's edge: lws's own loop polls every
	 * descriptor on every wake-up, 10 000 of them in a many-channel run. */
	uv_loop_t loop;
	uv_signal_t sigterm;
	void *loops[1] = {&loop};
	uv_loop_init(&loop);
	memset(&info, 0, sizeof(info));
	info.port = port;
	info.iface = "127.0.0.1";
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_DISABLE_IPV6 | LWS_SERVER_OPTION_LIBUV;
	info.foreign_loops = loops;
	B.ctx = lws_create_context(&info);
	if (!B.ctx) {
		fprintf(stderr, "bench_null: cannot listen on 127.0.0.1:%d\n", port);
		return 1;
	}
	uv_signal_init(&loop, &sigterm);
	uv_signal_start(&sigterm, on_stop, SIGTERM);
	fprintf(stderr, "bench_null: listening on 127.0.0.1:%d\n", port);
	uv_run(&loop, UV_RUN_DEFAULT);
	lws_context_destroy(B.ctx);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	fprintf(stderr, "bench_null: %llu messages on %u channels, %llu deliveries dropped\n",
		B.published, B.channels, B.dropped);
	for (unsigned i = 0; i < NULL_BUCKETS; i++)
		while (B.buckets[i]) {
			struct nchan *c = B.buckets[i];
			B.buckets[i] = c->next;
			free(c->subs);
			free(c);
		}
	return B.dropped ? 1 : 0;
}
