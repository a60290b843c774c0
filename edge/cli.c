#include "cli.h"

#include <getopt.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern_limits.h"

struct cli {
	struct lws_context *ctx;
	int done, exit_code;
	const char *channel;
	char *body;	    /* pub: request body */
	size_t body_len;
	int status;	    /* pub: HTTP status */
	char *resp;	    /* response or ws frame being reassembled */
	size_t resp_len, resp_cap;
	char *sub_frame;    /* sub: the subscribe frame */
	/* sub: reconnecting resumes after the last seq printed */
	bool resume;	    /* sub: reconnect once a connection was made */
	bool reconnect, connected;
	json_t *sub_req;    /* the subscribe request (from_seq set on resume) */
	long long last_seq; /* -1 until a message was printed */
	unsigned backoff_ms;
	lws_sorted_usec_list_t retry; /* reconnect timer */
	struct lws_client_connect_info ci;
};

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static int append(struct cli *c, const void *in, size_t len)
{
	if (c->resp_len + len + 1 > c->resp_cap) {
		size_t cap = (c->resp_len + len + 1) * 2;
		if (cap > 64u * 1024 * 1024)
			return -1;
		char *p = realloc(c->resp, cap);
		if (!p)
			return -1;
		c->resp = p;
		c->resp_cap = cap;
	}
	memcpy(c->resp + c->resp_len, in, len);
	c->resp_len += len;
	c->resp[c->resp_len] = 0;
	return 0;
}

/* Percent-encodes a channel name for a URL path (RFC 3986 unreserved and ':' kept). */
static void path_escape(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *s && o + 4 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    strchr("-._~:", ch)) {
			out[o++] = (char)ch;
		} else {
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	out[o] = 0;
}

static int cb_pub(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		  size_t len)
{
	struct cli *c = lws_context_user(lws_get_context(wsi));
	switch (reason) {
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
		unsigned char **p = in, *end = *p + len;
		char cl[32];
		int n = snprintf(cl, sizeof(cl), "%zu", c->body_len);
		if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
						 (const unsigned char *)"application/json", 16, p, end) ||
		    lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH,
						 (const unsigned char *)cl, n, p, end))
			return -1;
		lws_client_http_body_pending(wsi, 1);
		lws_callback_on_writable(wsi);
		return 0;
	}
	case LWS_CALLBACK_CLIENT_HTTP_WRITEABLE: {
		unsigned char *buf = malloc(LWS_PRE + c->body_len);
		if (!buf)
			return -1;
		memcpy(buf + LWS_PRE, c->body, c->body_len);
		int n = lws_write(wsi, buf + LWS_PRE, c->body_len, LWS_WRITE_HTTP_FINAL);
		free(buf);
		lws_client_http_body_pending(wsi, 0);
		return n < 0 ? -1 : 0;
	}
	case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
		c->status = (int)lws_http_client_http_response(wsi);
		return 0;
	case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
		return append(c, in, len);
	case LWS_CALLBACK_RECEIVE_CLIENT_HTTP: {
		char buf[LWS_PRE + 4096], *px = buf + LWS_PRE;
		int lenx = sizeof(buf) - LWS_PRE;
		return lws_http_client_read(wsi, &px, &lenx) < 0 ? -1 : 0;
	}
	case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
		c->done = 1;
		return 0;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		fprintf(stderr, "tern pub: %s\n", in ? (const char *)in : "connection failed");
		c->exit_code = 1;
		c->done = 1;
		return 0;
	case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
		c->done = 1;
		return 0;
	default:
		return lws_callback_http_dummy(wsi, reason, user, in, len);
	}
}

static int send_text(struct lws *wsi, const char *s)
{
	size_t n = strlen(s);
	unsigned char *buf = malloc(LWS_PRE + n);
	if (!buf)
		return -1;
	memcpy(buf + LWS_PRE, s, n);
	int rc = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_TEXT);
	free(buf);
	return rc < (int)n ? -1 : 0;
}

/* Prints a message frame as one JSON line without its "op". */
static int sub_frame(struct cli *c)
{
	json_error_t jerr;
	json_t *j = json_loadb(c->resp, c->resp_len, JSON_ALLOW_NUL, &jerr);
	c->resp_len = 0;
	if (!j)
		return 0;
	const char *op = json_string_value(json_object_get(j, "op"));
	int rc = 0;
	if (op && strcmp(op, "message") == 0) {
		json_t *seq = json_object_get(j, "seq");
		if (json_is_integer(seq)) {
			if (json_integer_value(seq) <= c->last_seq) { /* seen before a reconnect */
				json_decref(j);
				return 0;
			}
			c->last_seq = json_integer_value(seq);
		}
		json_object_del(j, "op");
		char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
		if (s) {
			printf("%s\n", s);
			fflush(stdout);
			free(s);
		}
	} else if (op && strcmp(op, "error") == 0) {
		char *s = json_dumps(json_object_get(j, "error"), JSON_COMPACT);
		fprintf(stderr, "tern sub: %s\n", s ? s : "error");
		free(s);
		c->exit_code = 1;
		rc = -1;
	}
	json_decref(j);
	return rc;
}

/* The reconnect timer: lws runs it from its own loop (lws_service blocks
 * while no connection is open, so the loop itself cannot poll for it). */
static void on_retry(lws_sorted_usec_list_t *sul)
{
	struct cli *c = lws_container_of(sul, struct cli, retry);
	if (!lws_client_connect_via_info(&c->ci)) { /* again after the next backoff */
		c->backoff_ms = c->backoff_ms < 5000 ? c->backoff_ms * 2 : 5000;
		lws_sul_schedule(c->ctx, 0, &c->retry, on_retry,
				 (lws_usec_t)c->backoff_ms * LWS_US_PER_MS);
	}
}

static int cb_sub(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		  size_t len)
{
	struct cli *c = lws_context_user(lws_get_context(wsi));
	switch (reason) {
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		/* A first connection that fails is a wrong URL or a server not
		 * started: one line and exit. Once connected, a lost connection
		 * is a restart or a network blip: reconnect and resume. */
		c->reconnect = c->resume;
		c->connected = true;
		c->backoff_ms = 0;
		if (c->reconnect && c->last_seq >= 0) { /* resume: nothing missed, nothing twice */
			json_object_del(c->sub_req, "rewind");
			json_object_set_new(c->sub_req, "from_seq", json_integer(c->last_seq));
		}
		free(c->sub_frame);
		c->sub_frame = json_dumps(c->sub_req, JSON_COMPACT);
		lws_callback_on_writable(wsi);
		return 0;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (!c->sub_frame)
			return 0;
		if (send_text(wsi, c->sub_frame) != 0)
			return -1;
		free(c->sub_frame);
		c->sub_frame = NULL;
		return 0;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (append(c, in, len) != 0)
			return -1;
		if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0)
			return sub_frame(c);
		return 0;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
	case LWS_CALLBACK_CLIENT_CLOSED:
		if (interrupted || c->exit_code != 0)
			c->done = 1;
		else if (!c->reconnect) {
			fprintf(stderr, "tern sub: %s\n", reason == LWS_CALLBACK_CLIENT_CLOSED
							   ? "connection closed by the server"
							   : in ? (const char *)in : "connection failed");
			c->exit_code = 1;
			c->done = 1;
		} else {
			/* Exponential backoff, 250 ms to 5 s; resumes with from_seq. */
			c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 250;
			if (c->backoff_ms > 5000)
				c->backoff_ms = 5000;
			if (c->connected)
				fprintf(stderr, "tern sub: connection lost; reconnecting\n");
			c->connected = false;
			lws_sul_schedule(c->ctx, 0, &c->retry, on_retry,
					 (lws_usec_t)c->backoff_ms * LWS_US_PER_MS);
		}
		return 0;
	default:
		return 0;
	}
}

static const struct lws_protocols pub_protocols[] = {
	{.name = "tern-cli-http", .callback = cb_pub}, {NULL, NULL, 0, 0, 0, NULL, 0}};
static const struct lws_protocols sub_protocols[] = {
	{.name = "tern.v1.json", .callback = cb_sub, .rx_buffer_size = 65536},
	{NULL, NULL, 0, 0, 0, NULL, 0}};

/* Connects to url + path and runs until done. Returns the exit code. */
static int run(struct cli *c, const char *url, const char *path, const char *method,
	       const struct lws_protocols *protocols, const char *prefix)
{
	char ubuf[512];
	const char *scheme, *host, *upath;
	int port;
	snprintf(ubuf, sizeof(ubuf), "%s", url);
	if (lws_parse_uri(ubuf, &scheme, &host, &port, &upath) || strcmp(scheme, "http") != 0) {
		fprintf(stderr, "%s: --url must look like http://HOST:PORT\n", prefix);
		return 2;
	}
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.user = c;
	info.timeout_secs = 10;
	info.connect_timeout_secs = 10;
	lws_set_log_level(LLL_ERR, NULL);
	c->ctx = lws_create_context(&info);
	if (!c->ctx) {
		fprintf(stderr, "%s: cannot start the client\n", prefix);
		return 1;
	}
	struct lws_client_connect_info ci;
	memset(&ci, 0, sizeof(ci));
	ci.context = c->ctx;
	ci.address = host;
	ci.port = port;
	ci.path = path;
	ci.host = host;
	ci.origin = host;
	ci.method = method;
	ci.protocol = method ? NULL : "tern.v1.json";
	ci.local_protocol_name = protocols[0].name;
	ci.alpn = "http/1.1";
	c->ci = ci; /* its strings point into ubuf, alive until return */
	if (!lws_client_connect_via_info(&ci)) {
		fprintf(stderr, "%s: cannot connect to %s\n", prefix, url);
		lws_context_destroy(c->ctx);
		return 1;
	}
	signal(SIGINT, on_sigint);
	signal(SIGTERM, on_sigint);
	while (!c->done && !interrupted)
		if (lws_service(c->ctx, 0) < 0)
			break;
	lws_sul_cancel(&c->retry);
	lws_context_destroy(c->ctx);
	return c->exit_code;
}

static void cli_free(struct cli *c)
{
	json_decref(c->sub_req);
	free(c->body);
	free(c->resp);
	free(c->sub_frame);
}

int tern_cli_pub(int argc, char **argv)
{
	static const struct option opts[] = {
		{"url", required_argument, NULL, 'u'}, {"name", required_argument, NULL, 'n'},
		{NULL, 0, NULL, 0}};
	const char *url = "http://127.0.0.1:8080", *name = NULL;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt == 'u')
			url = optarg;
		else if (opt == 'n')
			name = optarg;
		else
			return 2;
	}
	if (argc - optind != 2) {
		fprintf(stderr, "usage: tern pub [--url URL] [--name EVENT] CHANNEL DATA\n");
		return 2;
	}
	struct cli c = {0};
	const char *data = argv[optind + 1];
	json_error_t jerr;
	/* DATA is JSON when it parses as JSON, otherwise a string. */
	json_t *dv = json_loads(data, JSON_DECODE_ANY, &jerr);
	if (!dv)
		dv = json_string(data);
	json_t *body = json_object();
	if (!dv || !body) {
		fprintf(stderr, "tern pub: DATA is not valid UTF-8\n");
		json_decref(dv);
		json_decref(body);
		return 2;
	}
	if (name)
		json_object_set_new(body, "name", json_string(name));
	json_object_set_new(body, "data", dv);
	c.body = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	c.body_len = c.body ? strlen(c.body) : 0;
	char esc[3 * TERN_NAME_MAX_BYTES + 1], path[3 * TERN_NAME_MAX_BYTES + 64];
	path_escape(argv[optind], esc, sizeof(esc));
	snprintf(path, sizeof(path), "/v1/channels/%s/messages", esc);
	int rc = run(&c, url, path, "POST", pub_protocols, "tern pub");
	if (rc == 0) {
		if (c.status == 201) {
			printf("%s\n", c.resp ? c.resp : "");
		} else {
			fprintf(stderr, "tern pub: HTTP %d %s\n", c.status, c.resp ? c.resp : "");
			rc = 1;
		}
	}
	cli_free(&c);
	return rc;
}

int tern_cli_sub(int argc, char **argv)
{
	static const struct option opts[] = {
		{"url", required_argument, NULL, 'u'}, {"rewind", required_argument, NULL, 'r'},
		{"from-seq", required_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
	const char *url = "http://127.0.0.1:8080", *rewind = NULL, *from = NULL;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt == 'u')
			url = optarg;
		else if (opt == 'r')
			rewind = optarg;
		else if (opt == 'f')
			from = optarg;
		else
			return 2;
	}
	if (argc - optind != 1 || (rewind && from)) {
		fprintf(stderr, "usage: tern sub [--url URL] [--rewind N | --from-seq N] CHANNEL\n");
		return 2;
	}
	struct cli c = {0};
	json_t *f = json_pack("{s:s, s:s, s:i}", "op", "subscribe", "channel", argv[optind],
			      "ref", 1);
	const char *num = rewind ? rewind : from;
	if (f && num) {
		char *end;
		long long v = strtoll(num, &end, 10);
		if (*end || v < 0) {
			fprintf(stderr, "tern sub: %s must be a non-negative integer\n",
				rewind ? "--rewind" : "--from-seq");
			json_decref(f);
			return 2;
		}
		json_object_set_new(f, rewind ? "rewind" : "from_seq", json_integer(v));
	}
	c.sub_req = f;
	c.last_seq = -1;
	c.resume = true;
	char *check = f ? json_dumps(f, JSON_COMPACT) : NULL;
	if (!check) {
		fprintf(stderr, "tern sub: CHANNEL is not valid UTF-8\n");
		json_decref(f);
		return 2;
	}
	free(check);
	int rc = run(&c, url, "/v1/ws", NULL, sub_protocols, "tern sub");
	cli_free(&c);
	return rc;
}
