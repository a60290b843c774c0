/*
 * bench_null: the cheapest broker there can be, as the fan-out floor that the
 * harness itself sees. It speaks just enough of Tern's WebSocket protocol for
 * bench_fanout (subscribe, publish, ok, message; one channel) and delivers a
 * publish by writing the same pre-framed bytes to every subscriber with one
 * send() each, straight to the socket: no queue, no copy per subscriber, no
 * store. With one message in flight its CPU per delivery is the kernel's
 * send() cost under exactly the receiver, the harness, that every broker
 * faces, plus the little it costs to read a publish and answer it.
 *
 *   bench_null --port PORT      (listens on 127.0.0.1; SIGTERM/SIGINT end it)
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define NULL_SUBSCRIBERS_MAX 200000
#define NULL_FRAME_MAX (1024 * 1024) /* a client frame, at most */

struct nconn {
	char *in; /* a frame's pieces, until its last */
	size_t in_len;
};

static struct {
	int fds[NULL_SUBSCRIBERS_MAX];
	struct lws *wsis[NULL_SUBSCRIBERS_MAX];
	unsigned n;
	unsigned long long seq, dropped;
	char channel[256];
	volatile sig_atomic_t stop;
} B;

static void on_stop(int sig)
{
	(void)sig;
	B.stop = 1;
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

/* One message to every subscriber: one header + body, one send() each. */
static void deliver(const char *data, size_t data_len)
{
	static char frame[10 + NULL_FRAME_MAX + 64];
	char *body = frame + 10;
	int bl = snprintf(body, 64, "{\"op\":\"message\",\"seq\":%llu,\"data\":\"", B.seq);
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
	for (unsigned i = 0; i < B.n; i++)
		if (B.fds[i] >= 0 && send(B.fds[i], out, hl + len, MSG_NOSIGNAL | MSG_DONTWAIT) !=
					     (ssize_t)(hl + len)) {
			B.dropped++;
			B.fds[i] = -1;
			lws_set_timeout(B.wsis[i], PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
		}
}

static int on_frame(struct lws *wsi, const char *f, size_t len)
{
	const char *end = f + len, *ch = value(f, len, "\"channel\":\"");
	const char *che = ch ? memchr(ch, '"', (size_t)(end - ch)) : NULL;
	unsigned long long ref = number(value(f, len, "\"ref\":"), end);
	size_t chl = che ? (size_t)(che - ch) : 0;
	if (!che || chl >= sizeof(B.channel))
		return reply(wsi, "{\"op\":\"error\",\"ref\":%llu,\"code\":%llu}", ref, 40000);
	if (!B.channel[0] || (B.n == 0 && value(f, len, "\"op\":\"subscribe\""))) {
		memcpy(B.channel, ch, chl); /* a new run: its channel */
		B.channel[chl] = 0;
	}
	if (strlen(B.channel) != chl || memcmp(B.channel, ch, chl) != 0)
		return reply(wsi, "{\"op\":\"error\",\"ref\":%llu,\"code\":%llu}", ref, 40001);
	if (value(f, len, "\"op\":\"subscribe\"")) {
		if (B.n == NULL_SUBSCRIBERS_MAX)
			return reply(wsi, "{\"op\":\"error\",\"ref\":%llu,\"code\":%llu}", ref, 42900);
		B.wsis[B.n] = wsi;
		B.fds[B.n++] = lws_get_socket_fd(wsi);
		return reply(wsi, "{\"op\":\"ok\",\"ref\":%llu,\"seq\":%llu}", ref, B.seq);
	}
	const char *d = value(f, len, "\"data\":\"");
	const char *de = d ? memchr(d, '"', (size_t)(end - d)) : NULL;
	if (!value(f, len, "\"op\":\"publish\"") || !de)
		return reply(wsi, "{\"op\":\"error\",\"ref\":%llu,\"code\":%llu}", ref, 40000);
	B.seq++;
	deliver(d, (size_t)(de - d));
	return reply(wsi, "{\"op\":\"ok\",\"ref\":%llu,\"seq\":%llu}", ref, B.seq);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		    size_t len)
{
	struct nconn *c = user;
	switch (reason) {
	case LWS_CALLBACK_RECEIVE: {
		int last = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
		if (last && !c->in)
			return on_frame(wsi, in, len);
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
		int rc = on_frame(wsi, c->in, c->in_len);
		free(c->in);
		c->in = NULL;
		c->in_len = 0;
		return rc;
	}
	case LWS_CALLBACK_CLOSED:
		free(c->in);
		c->in = NULL;
		for (unsigned i = 0; i < B.n; i++)
			if (B.wsis[i] == wsi) {
				B.wsis[i] = B.wsis[--B.n];
				B.fds[i] = B.fds[B.n];
				break;
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
	signal(SIGTERM, on_stop);
	signal(SIGINT, on_stop);
	lws_set_log_level(LLL_ERR, NULL);
	memset(&info, 0, sizeof(info));
	info.port = port;
	info.iface = "127.0.0.1";
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
	struct lws_context *ctx = lws_create_context(&info);
	if (!ctx) {
		fprintf(stderr, "bench_null: cannot listen on 127.0.0.1:%d\n", port);
		return 1;
	}
	fprintf(stderr, "bench_null: listening on 127.0.0.1:%d\n", port);
	while (!B.stop && lws_service(ctx, 0) >= 0)
		;
	lws_context_destroy(ctx);
	fprintf(stderr, "bench_null: %llu messages, %llu subscribers dropped\n", B.seq, B.dropped);
	return B.dropped ? 1 : 0;
}
