/* The edge's lws context on the caller's libuv loop, its one protocol (HTTP
 * and WebSocket tern.v1.json on the same port), the periodic tick
 * (heartbeats, shutdown grace), metrics and graceful shutdown. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tern_err.h"
#include "internal.h"
#include "tern_limits.h"

uint64_t edge_now_ms(const struct edge *e) { return uv_now(e->loop); }

static int ws_path_ok(struct lws *wsi)
{
	char uri[64];
	int n = lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI);
	return n > 0 && strcmp(uri, "/v1/ws") == 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		    size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		return ws_path_ok(wsi) ? 0 : -1;
	case LWS_CALLBACK_ESTABLISHED:
	case LWS_CALLBACK_RECEIVE:
	case LWS_CALLBACK_SERVER_WRITEABLE:
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
	case LWS_CALLBACK_CLOSED:
		return session_ws_callback(wsi, reason, user, in, len);
	case LWS_CALLBACK_HTTP:
	case LWS_CALLBACK_HTTP_BODY:
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
	case LWS_CALLBACK_HTTP_WRITEABLE:
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		return rest_http_callback(wsi, reason, user, in, len);
	default:
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	}
}

/* Index 0 serves HTTP and WebSocket clients that offer no subprotocol; a
 * client that offers tern.v1.json gets it confirmed by name. */
static const struct lws_protocols protocols[] = {
	{
		.name = "tern.v1.json",
		.callback = callback,
		.per_session_data_size = sizeof(void *),
		/* lws allocates this per connection on its first read: kept small
		 * for idle connections; larger frames arrive in several pieces. */
		.rx_buffer_size = 1024,
		/* Without it lws cuts every send to rx_buffer_size. Frames go out
		 * with Tern's own sendmsg() (session.c, write_batch); lws writes
		 * what a full socket did not take of one, and close frames, each
		 * in one send. */
		.tx_packet_size = LWS_PRE + TERN_EDGE_WRITE_BATCH_BYTES,
	},
	{NULL, NULL, 0, 0, 0, NULL, 0}
};

/* Whether TERN_EDGE_FDS_SPARE_MIN more descriptors can be opened now. lws 4.1
 * opens a few as it starts (/dev/urandom, its wake-up eventfd); one it cannot
 * make it only logs, and the context it returns then keeps a timer running
 * after it is destroyed, so a stopped edge never left its loop. */
static bool fds_spare(void)
{
	int fds[TERN_EDGE_FDS_SPARE_MIN];
	int n = 0;
	while (n < TERN_EDGE_FDS_SPARE_MIN && (fds[n] = eventfd(0, EFD_CLOEXEC)) >= 0)
		n++;
	bool ok = n == TERN_EDGE_FDS_SPARE_MIN;
	while (n > 0)
		close(fds[--n]);
	return ok;
}

/* No lws validity timers: Tern sends its own heartbeats, and lws re-inserts a
 * connection's validity timer into a sorted list on every frame it receives,
 * O(connections) each time (secs_since_valid_hangup 0 turns it off). */
static const lws_retry_bo_t no_validity_timers = {.secs_since_valid_ping = 0,
						  .secs_since_valid_hangup = 0};

static void finish_shutdown(struct edge *e)
{
	uv_timer_stop(&e->tick);
	uv_check_stop(&e->flush);
	uv_timer_stop(&e->linger);
	uv_idle_stop(&e->more);
	while (!list_empty(&e->dirty))
		session_undirty(container_of(e->dirty.next, struct session, dirty_link));
	echan_drop_all(e);
	e->destroyed = true;
	lws_context_destroy(e->ctx); /* lws finishes closing on the loop */
	if (e->shutdown_done)
		e->shutdown_done(e->shutdown_arg);
}

static void on_tick(uv_timer_t *t)
{
	struct edge *e = t->data;
	if (e->shutting_down) {
		/* Done when every WebSocket client went and every HTTP request got
		 * its reply (long-polls are answered by the drain), or at the grace. */
		if ((list_empty(&e->sessions) && e->http_owed == 0) ||
		    edge_now_ms(e) - e->shutdown_started_ms >= TERN_SHUTDOWN_GRACE_MS)
			finish_shutdown(e);
		return;
	}
	sessions_tick(e);
}

void echan_drop_all(struct edge *e)
{
	while (!list_empty(&e->sessions)) {
		struct session *s = container_of(e->sessions.next, struct session, link);
		echan_drop_session(s);
		qsession_drop(s);
		list_remove(&s->link);
		list_init(&s->link);
	}
}

void edge_shutdown(struct edge *e, void (*done)(void *arg), void *arg)
{
	if (e->shutting_down)
		return;
	e->shutting_down = true;
	e->shutdown_started_ms = edge_now_ms(e);
	e->shutdown_done = done;
	e->shutdown_arg = arg;
	edge_listen_close(e); /* with workers, new connections go to the others */
	struct list *pos, *tmp;
	list_foreach_safe(pos, tmp, &e->sessions)
		session_close(container_of(pos, struct session, link), 1001);
	uv_timer_start(&e->tick, on_tick, 50, 50);
}

/* A listen host may be a name ("localhost"): resolved once at start (the loop
 * is not running yet, so a blocking lookup harms nobody), IPv4 first. */
static int resolve_host(char *host, size_t len, char *why, size_t why_len)
{
	struct in6_addr a6;
	struct in_addr a4;
	if (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1)
		return 0;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG}, *res, *ai;
	int rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc != 0) {
		snprintf(why, why_len, "cannot listen on %s: %s", host, gai_strerror(rc));
		return TERN_EBADREQ;
	}
	const struct addrinfo *pick = NULL;
	for (ai = res; ai; ai = ai->ai_next)
		if (!pick || (ai->ai_family == AF_INET && pick->ai_family != AF_INET))
			pick = ai;
	char buf[INET6_ADDRSTRLEN] = "";
	if (pick && pick->ai_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)pick->ai_addr)->sin_addr, buf, sizeof(buf));
	else if (pick)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr, buf, sizeof(buf));
	freeaddrinfo(res);
	if (!buf[0] || strlen(buf) >= len) {
		snprintf(why, why_len, "cannot listen on %s: no usable address", host);
		return TERN_EBADREQ;
	}
	memcpy(host, buf, strlen(buf) + 1);
	return 0;
}

static struct frame *static_frame(const char *text)
{
	struct fbuf b;
	fbuf_init(&b, strlen(text));
	fbuf_puts(&b, text);
	return fbuf_finish(&b);
}

int edge_start(struct edge **out, const struct edge_config *ec, char *why, size_t why_len)
{
	char host[256];
	int port;
	if (config_split_hostport(ec->cfg->listen, host, sizeof(host), &port) != 0) {
		snprintf(why, why_len, "bad listen address '%s'", ec->cfg->listen);
		return TERN_EBADREQ;
	}
	int rc = resolve_host(host, sizeof(host), why, why_len);
	if (rc != 0)
		return rc;
	struct edge *e = calloc(1, sizeof(*e));
	if (!e) {
		snprintf(why, why_len, "out of memory");
		return TERN_EINTERNAL;
	}
	e->loop = ec->loop;
	e->cfg = ec->cfg;
	e->be_ops = ec->be_ops;
	e->be = ec->be;
	e->metrics_extra = ec->metrics_extra;
	e->metrics_arg = ec->metrics_arg;
	hmap_init(&e->chans);
	list_init(&e->sessions);
	rc = edge_listen_open(e, host, port, ec->listen_share, why, why_len);
	if (rc != 0) {
		free(e);
		return rc;
	}
	unsigned char rnd[6];
	RAND_bytes(rnd, sizeof(rnd));
	for (int i = 0; i < 6; i++)
		snprintf(e->conn_prefix + 2 * i, 3, "%02x", rnd[i]);
	e->hb_frame = static_frame("{\"op\":\"heartbeat\"}");
	uv_timer_init(e->loop, &e->tick);
	e->tick.data = e;
	list_init(&e->dirty);
	uv_check_init(e->loop, &e->flush);
	e->flush.data = e;
	uv_timer_init(e->loop, &e->linger);
	e->linger.data = e;
	uv_idle_init(e->loop, &e->more);
	e->more.data = e;

	struct lws_context_creation_info info;
	void *loops[1] = {e->loop};
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN_SERVER; /* listen.c listens */
	info.protocols = protocols;
	info.user = e;
	info.options = LWS_SERVER_OPTION_LIBUV;
	if (!strchr(host, ':'))
		info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
	info.foreign_loops = loops;
	info.pcontext = &e->ctx;
	info.timeout_secs = (unsigned)ec->cfg->handshake_timeout_s;
	info.keepalive_timeout = (int)ec->cfg->handshake_timeout_s;
	info.timeout_secs_ah_idle = (unsigned)ec->cfg->handshake_timeout_s;
	info.max_http_header_data = 4096;
	info.server_string = "tern";
	info.retry_and_idle_policy = &no_validity_timers;
	bool fds_ok = fds_spare();
	e->ctx = e->hb_frame && fds_ok ? lws_create_context(&info) : NULL;
	e->listen_vhost = e->ctx ? lws_get_vhost_by_name(e->ctx, "default") : NULL;
	if (e->ctx && !e->listen_vhost) {
		lws_context_destroy(e->ctx);
		e->ctx = NULL;
	}
	if (!e->ctx) {
		snprintf(why, why_len, "cannot listen on %s:%d%s", host, port,
			 fds_ok ? "" : ": Too many open files");
		/* The handles are on the loop now: e is freed once they are
		 * closed, when the caller runs the loop (as after edge_free). */
		edge_free(e);
		return TERN_EINTERNAL;
	}
	edge_listen_start(e);
	uint64_t every = ec->cfg->heartbeat_ms / 4;
	uv_timer_start(&e->tick, on_tick, every < 1000 ? every : 1000, every < 1000 ? every : 1000);
	*out = e;
	return 0;
}

/* e goes once the last of its own handles has closed. */
static void on_handle_closed(uv_handle_t *h)
{
	struct edge *e = h->data;
	if (--e->handles_open)
		return;
	hmap_destroy(&e->chans);
	free(e);
}

void edge_free(struct edge *e)
{
	/* With a foreign loop lws finishes in two steps: the first destroy
	 * closes its handles, this one (after the loop ran) frees the rest.
	 * pcontext NULLs e->ctx once nothing is left. */
	if (e->ctx)
		lws_context_destroy(e->ctx);
	frame_unref(e->hb_frame);
	edge_listen_close(e);
	uv_handle_t *handles[] = {(uv_handle_t *)&e->tick, (uv_handle_t *)&e->flush,
				  (uv_handle_t *)&e->linger, (uv_handle_t *)&e->more,
				  (uv_handle_t *)&e->listen_poll, (uv_handle_t *)&e->listen_pause};
	size_t n = sizeof(handles) / sizeof(handles[0]);
	e->handles_open = n; /* the callbacks run on a later loop turn */
	for (size_t i = 0; i < n; i++)
		uv_close(handles[i], on_handle_closed);
}

void edge_metric(struct fbuf *b, const char *name, const char *type, const char *help,
		 uint64_t v)
{
	fbuf_printf(b, "# HELP %s %s\n", name, help);
	fbuf_printf(b, "# TYPE %s %s\n%s %llu\n", name, type, name, (unsigned long long)v);
}

void edge_metrics(struct edge *e, struct fbuf *b)
{
	const struct edge_stats *st = &e->st;
	edge_metric(b, "tern_connections", "gauge", "WebSocket connections open", st->connections);
	edge_metric(b, "tern_connections_total", "counter", "WebSocket connections accepted",
		    st->connections_total);
	edge_metric(b, "tern_subscriptions", "gauge", "Channel subscriptions held by sessions",
		    st->subscriptions);
	edge_metric(b, "tern_edge_upstream_subscriptions", "gauge",
		    "Channels with one upstream subscription", st->upstream_subs);
	edge_metric(b, "tern_messages_in_total", "counter", "Messages published and acknowledged",
		    st->messages_in);
	edge_metric(b, "tern_messages_out_total", "counter", "Message frames written to clients",
		    st->messages_out);
	edge_metric(b, "tern_bytes_out_total", "counter", "WebSocket payload bytes written",
		    st->bytes_out);
	edge_metric(b, "tern_slow_consumer_closes_total", "counter",
		    "Sessions closed with 4008 (slow consumer)", st->slow_closes);
	edge_metric(b, "tern_client_errors_total", "counter", "Error frames sent to WebSocket clients",
		    st->protocol_errors);
	edge_metric(b, "tern_http_requests_total", "counter", "HTTP requests served", st->http_requests);
	edge_metric(b, "tern_client_writes_total", "counter",
		    "Writes to WebSocket clients, each carrying one or more frames", st->client_writes);
	edge_metric(b, "tern_flush_lingers_total", "counter",
		    "Flushes that waited flush_linger_ms for more frames, the edge being behind",
		    st->flush_lingers);
	if (e->metrics_extra)
		e->metrics_extra(e->metrics_arg, b);
}
