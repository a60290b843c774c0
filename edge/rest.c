/* REST over HTTP/1.1 (contract "REST"), plus /healthz, /metrics and the demo
 * page. A request object lives from the headers until both the connection's
 * transaction is done and every backend call it made has answered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern_err.h"
#include "rest_internal.h"
#include "tern_limits.h"
#include "names.h"

void req_put(struct rest_req *r)
{
	if (--r->refs)
		return;
	frame_unref(r->resp);
	fbuf_discard(&r->unknown);
	free(r->body);
	free(r->seqs);
	free(r->ids);
	free(r);
}

void respond(struct rest_req *r, int status, const char *ctype, struct frame *body)
{
	if (r->resp_ready) {
		frame_unref(body);
		return;
	}
	r->status = status;
	r->ctype = ctype;
	r->resp = body;
	if (body) /* else resp_static/resp_len were set by the caller */
		r->resp_len = body->len;
	r->resp_ready = true;
	if (r->wsi)
		lws_callback_on_writable(r->wsi);
}

void respond_error(struct rest_req *r, int err, const char *why)
{
	struct fbuf b;
	fbuf_init(&b, 160);
	wire_put_error(&b, err, why ? why : tern_err_str(err));
	respond(r, tern_err_status(err), "application/json", fbuf_finish(&b));
}

void respond_json(struct rest_req *r, int status, struct fbuf *b)
{
	respond(r, status, "application/json", fbuf_finish(b));
}

json_t *body_json(struct rest_req *r)
{
	json_error_t jerr;
	json_t *root = json_loadb((const char *)r->body, r->body_len,
				  JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (!root)
		respond_error(r, TERN_EBADREQ, "invalid JSON");
	return root;
}

/* --- POST /v1/channels/{ch}/messages --- */

static void batch_reply(struct rest_req *r, int err, uint64_t seq, const char *id)
{
	size_t i = r->ndone++;
	if (err != 0 && r->first_err == 0)
		r->first_err = err;
	if (err == 0) {
		r->seqs[i] = seq;
		snprintf(r->ids[i], TERN_MSG_ID_MAX, "%s", id);
		if (r->batch_seqs) /* channel publishes, as tern_messages_in_total says */
			r->e->st.messages_in++;
	}
	if (r->ndone < r->npub)
		return;
	if (r->first_err) {
		respond_error(r, r->first_err, "not all of the batch was accepted; retry it "
					       "(with idempotency keys nothing is stored twice)");
		return;
	}
	struct fbuf b;
	fbuf_init(&b, 32 + r->npub * 64);
	fbuf_puts(&b, "{\"messages\":[");
	for (size_t k = 0; k < r->npub; k++) {
		fbuf_printf(&b, "%s{\"id\":\"%s\"", k ? "," : "", r->ids[k]);
		if (r->batch_seqs)
			fbuf_printf(&b, ",\"seq\":%llu", (unsigned long long)r->seqs[k]);
		fbuf_puts(&b, "}");
	}
	fbuf_puts(&b, "]}");
	respond_json(r, 201, &b);
}

void rest_batch(struct rest_req *r, bool with_seqs,
		int (*submit)(struct rest_req *r, const struct wire_pub *p, const char **why))
{
	const char *why = NULL;
	json_t *root = body_json(r);
	if (!root)
		return;
	size_t n = json_is_array(root) ? json_array_size(root) : 1;
	if (n == 0 || n > TERN_REST_BATCH_MAX) {
		json_decref(root);
		respond_error(r, TERN_EBADREQ, "a batch holds 1-1000 messages");
		return;
	}
	struct wire_pub *pubs = calloc(n, sizeof(*pubs));
	r->seqs = calloc(n, sizeof(*r->seqs));
	r->ids = calloc(n, sizeof(*r->ids));
	r->batch_seqs = with_seqs;
	int rc = pubs && r->seqs && r->ids ? 0 : TERN_EUNAVAIL;
	/* Validate every message before submitting any: a bad batch stores nothing. */
	for (size_t i = 0; rc == 0 && i < n; i++) {
		json_t *m = json_is_array(root) ? json_array_get(root, i) : root;
		rc = wire_parse_pub(m, r->e->cfg->max_message_bytes, &pubs[i], &why);
	}
	r->npub = n;
	for (size_t i = 0; rc == 0 && i < n; i++) {
		r->refs++;
		int src = submit(r, &pubs[i], &why);
		if (src == 0)
			continue;
		r->refs--;
		if (i == 0) {
			rc = src;
			break;
		}
		/* Count the refused ones as done so the reply still comes. */
		r->first_err = r->first_err ? r->first_err : src;
		r->ndone += n - i;
		if (r->ndone == r->npub)
			respond_error(r, src, why);
		break;
	}
	if (rc != 0)
		respond_error(r, rc, why);
	for (size_t i = 0; pubs && i < n; i++)
		free(pubs[i].data);
	free(pubs);
	json_decref(root);
}

void rest_batch_done(void *arg, int err, uint64_t seq, const char *id)
{
	struct rest_req *r = arg;
	batch_reply(r, err, seq, id);
	req_put(r);
}

/* --- POST /v1/channels/{ch}/messages --- */

static int submit_publish(struct rest_req *r, const struct wire_pub *p, const char **why)
{
	struct broker_pub bp = {
		.chan = r->chan, .chan_len = r->chan_len,
		.name = p->has_name ? p->name : NULL, .name_len = p->name_len,
		.data = p->data, .data_len = p->data_len, .enc = p->enc,
		.idem_key = p->idem, .idem_len = p->idem_len,
	};
	return r->e->be_ops->publish(r->e->be, &bp, rest_batch_done, r, why);
}

static void post_messages(struct rest_req *r) { rest_batch(r, true, submit_publish); }

/* --- GET /v1/channels/{ch}/messages --- */

static void hist_done(void *arg, int err, struct tern_msg **msgs, size_t n)
{
	struct rest_req *r = arg;
	if (err != 0) {
		respond_error(r, err, "history could not be read");
	} else {
		size_t hint = 32;
		for (size_t i = 0; i < n; i++)
			hint += 128 + msgs[i]->data_len * 4 / 3 + msgs[i]->name_len;
		struct fbuf b;
		fbuf_init(&b, hint);
		fbuf_puts(&b, "{\"messages\":[");
		for (size_t i = 0; i < n; i++) {
			if (i)
				fbuf_puts(&b, ",");
			wire_put_msg(&b, msgs[i], false);
		}
		fbuf_puts(&b, "]}");
		respond_json(r, 200, &b);
	}
	for (size_t i = 0; i < n; i++)
		msg_unref(msgs[i]);
	free(msgs);
	req_put(r);
}

/* Finds key=value in the query string (already split on '&' by lws into
 * fragments we joined with '&'). Returns the value or NULL. */
static const char *query_get(const struct rest_req *r, const char *key, char *buf, size_t len)
{
	size_t kl = strlen(key);
	const char *p = r->query;
	while (*p) {
		const char *amp = strchr(p, '&');
		size_t fl = amp ? (size_t)(amp - p) : strlen(p);
		if (fl > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t vl = fl - kl - 1;
			if (vl >= len)
				vl = len - 1;
			memcpy(buf, p + kl + 1, vl);
			buf[vl] = 0;
			return buf;
		}
		p += fl + (amp ? 1 : 0);
	}
	return NULL;
}

static int query_u64(const struct rest_req *r, const char *key, uint64_t max, bool *has,
		     uint64_t *out)
{
	char buf[32];
	*has = false;
	const char *v = query_get(r, key, buf, sizeof(buf));
	if (!v)
		return 0;
	char *end;
	if (!*v || *v == '-' || *v == '+')
		return TERN_EBADREQ;
	unsigned long long n = strtoull(v, &end, 10);
	if (*end || n > max)
		return TERN_EBADREQ;
	*has = true;
	*out = n;
	return 0;
}

static void get_messages(struct rest_req *r)
{
	struct edge *e = r->e;
	uint64_t limit = TERN_HISTORY_PAGE_DEFAULT, from = 0;
	bool has_limit, has_from, backwards = false;
	char dir[16];
	int rc;
	if (query_u64(r, "limit", TERN_HISTORY_PAGE_MAX, &has_limit, &limit) != 0 ||
	    (has_limit && limit == 0)) {
		respond_error(r, TERN_EBADREQ, "limit must be an integer from 1 to 1000");
		return;
	}
	if (query_u64(r, "from_seq", UINT64_MAX, &has_from, &from) != 0) {
		respond_error(r, TERN_EBADREQ, "from_seq must be a non-negative integer");
		return;
	}
	if (query_get(r, "direction", dir, sizeof(dir))) {
		if (strcmp(dir, "backwards") == 0)
			backwards = true;
		else if (strcmp(dir, "forwards") != 0) {
			respond_error(r, TERN_EBADREQ, "direction must be forwards or backwards");
			return;
		}
	}
	struct broker_hist h = {
		.chan = r->chan, .chan_len = r->chan_len, .limit = (uint32_t)limit,
		.backwards = backwards,
		.after_seq = !backwards && has_from ? from : 0,
		.before_seq = backwards && has_from ? from : 0,
	};
	if (backwards && has_from && from == 0) {
		struct fbuf b; /* nothing is below seq 0 */
		fbuf_init(&b, 16);
		fbuf_puts(&b, "{\"messages\":[]}");
		respond_json(r, 200, &b);
		return;
	}
	r->refs++;
	rc = e->be_ops->history(e->be, &h, hist_done, r);
	if (rc != 0) {
		r->refs--;
		respond_error(r, rc, "history could not be read");
	}
}

/* --- GET /v1/channels/{ch} --- */

static void info_done(void *arg, int err, uint64_t last_seq, uint64_t subs)
{
	struct rest_req *r = arg;
	if (err != 0) {
		respond_error(r, err, "channel info unavailable");
	} else {
		struct fbuf b;
		fbuf_init(&b, 64 + r->chan_len);
		fbuf_puts(&b, "{\"channel\":");
		fbuf_put_jstr(&b, r->chan, r->chan_len);
		fbuf_printf(&b, ",\"subscribers\":%llu,\"last_seq\":%llu}",
			    (unsigned long long)subs, (unsigned long long)last_seq);
		respond_json(r, 200, &b);
	}
	req_put(r);
}

static void get_channel(struct rest_req *r)
{
	r->refs++;
	int rc = r->e->be_ops->channel_info(r->e->be, r->chan, r->chan_len, info_done, r);
	if (rc != 0) {
		r->refs--;
		respond_error(r, rc, "channel info unavailable");
	}
}

/* --- routing --- */

static void route_channels(struct rest_req *r, const char *rest)
{
	/* rest is "{ch}" or "{ch}/messages"; the name may itself hold '/'
	 * only in the info form, so split at the last "/messages". */
	size_t len = strlen(rest);
	static const char suffix[] = "/messages";
	size_t sl = sizeof(suffix) - 1;
	bool messages = len > sl && strcmp(rest + len - sl, suffix) == 0;
	size_t chan_len = messages ? len - sl : len;
	void (*handler)(struct rest_req *r) =
		messages && r->method == LWSHUMETH_POST ? post_messages
		: messages && r->method == LWSHUMETH_GET ? get_messages
		: !messages && r->method == LWSHUMETH_GET ? get_channel : NULL;
	if (!handler) {
		respond_error(r, -40500, "method not allowed");
		return;
	}
	/* The name is checked once here; handlers read it from r->chan. */
	const char *why;
	int rc = names_check_channel(rest, chan_len, &why);
	if (rc != 0) {
		respond_error(r, rc, why);
		return;
	}
	memcpy(r->chan, rest, chan_len);
	r->chan[chan_len] = 0;
	r->chan_len = chan_len;
	handler(r);
}

static void route(struct rest_req *r)
{
	struct edge *e = r->e;
	const unsigned char *data;
	size_t len;
	const char *ctype;
	e->st.http_requests++;
	if (r->body_too_large) {
		respond_error(r, TERN_ETOOLARGE, "request body is larger than the limit");
		return;
	}
	if (r->method == LWSHUMETH_OPTIONS) { /* CORS preflight */
		respond(r, 204, "text/plain", NULL);
		return;
	}
	if (strncmp(r->path, "/v1/channels/", 13) == 0) {
		route_channels(r, r->path + 13);
	} else if (strncmp(r->path, "/v1/queues/", 11) == 0) {
		rest_queue_route(r, r->path + 11);
	} else if (strcmp(r->path, "/healthz") == 0 && r->method == LWSHUMETH_GET) {
		struct fbuf b;
		fbuf_init(&b, 32);
		bool ok = e->be_ops->ready(e->be) && !e->shutting_down;
		fbuf_puts(&b, ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unavailable\"}");
		respond_json(r, ok ? 200 : 503, &b);
	} else if (strcmp(r->path, "/metrics") == 0 && r->method == LWSHUMETH_GET) {
		struct fbuf b;
		fbuf_init(&b, 4096);
		edge_metrics(e, &b);
		respond(r, 200, "text/plain; version=0.0.4", fbuf_finish(&b));
	} else if (r->method == LWSHUMETH_GET && static_lookup(r->path, &data, &len, &ctype) == 0) {
		r->resp_static = data;
		r->resp_len = len;
		respond(r, 200, ctype, NULL);
	} else {
		respond_error(r, TERN_ENOTFOUND, "no such endpoint");
	}
}

/* --- lws glue --- */

static int add_header(struct rest_req *r, const char *name, const char *value,
		      unsigned char **p, unsigned char *end)
{
	return lws_add_http_header_by_name(r->wsi, (const unsigned char *)name,
					   (const unsigned char *)value, (int)strlen(value), p, end);
}

/* CORS (Fetch standard, "CORS protocol"): browsers on other origins may call
 * the REST API; a preflight (OPTIONS) learns the methods and headers. */
static int add_cors(struct rest_req *r, unsigned char **p, unsigned char *end)
{
	const char *origin = r->e->cfg->cors_allow_origin;
	if (!origin[0])
		return 0;
	if (add_header(r, "access-control-allow-origin:", origin, p, end))
		return -1;
	if (r->method != LWSHUMETH_OPTIONS)
		return 0;
	return add_header(r, "access-control-allow-methods:", "GET, POST, PUT, OPTIONS", p, end) ||
	       add_header(r, "access-control-allow-headers:", "content-type, authorization", p,
			  end) ||
	       add_header(r, "access-control-max-age:", "600", p, end);
}

static int write_headers(struct rest_req *r)
{
	unsigned char buf[LWS_PRE + 1024], *start = buf + LWS_PRE, *p = start,
		      *end = buf + sizeof(buf) - 1;
	if (lws_add_http_common_headers(r->wsi, (unsigned)r->status, r->ctype,
					(lws_filepos_t)r->resp_len, &p, end) ||
	    add_header(r, "cache-control:", "no-store", &p, end) || add_cors(r, &p, end) ||
	    lws_finalize_write_http_header(r->wsi, start, &p, end))
		return -1;
	r->headers_sent = true;
	return 0;
}

/* The transaction is over: lws may reuse the connection for the next
 * request (keep-alive), so the request lets go of it now. */
/* The request no longer owes its connection anything. */
static void let_go(struct rest_req *r)
{
	if (r->wsi) {
		r->wsi = NULL;
		r->e->http_owed--;
	}
}

static int transaction_done(struct rest_req **pr)
{
	struct rest_req *r = *pr;
	struct lws *wsi = r->wsi;
	let_go(r);
	*pr = NULL;
	req_put(r);
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int on_http_writeable(struct rest_req **pr)
{
	struct rest_req *r = *pr;
	if (!r->resp_ready)
		return 0;
	if (!r->headers_sent && write_headers(r) != 0)
		return -1;
	const unsigned char *body = r->resp ? frame_payload(r->resp) : r->resp_static;
	/* Bounded chunks: a large history reply goes out over several turns. */
	unsigned char buf[LWS_PRE + 16384];
	while (r->resp_off < r->resp_len && !lws_send_pipe_choked(r->wsi)) {
		size_t n = r->resp_len - r->resp_off;
		if (n > sizeof(buf) - LWS_PRE)
			n = sizeof(buf) - LWS_PRE;
		memcpy(buf + LWS_PRE, body + r->resp_off, n);
		bool last = r->resp_off + n == r->resp_len;
		if (lws_write(r->wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP)
		    != (int)n)
			return -1;
		r->resp_off += n;
		break; /* one chunk per callback keeps the loop turn bounded */
	}
	if (r->resp_off < r->resp_len) {
		lws_callback_on_writable(r->wsi);
		return 0;
	}
	if (r->resp_len == 0 && lws_write(r->wsi, buf + LWS_PRE, 0, LWS_WRITE_HTTP_FINAL) < 0)
		return -1;
	return transaction_done(pr);
}

static void read_query(struct rest_req *r)
{
	size_t off = 0;
	for (int i = 0; i < 32; i++) {
		char frag[512];
		int n = lws_hdr_copy_fragment(r->wsi, frag, sizeof(frag), WSI_TOKEN_HTTP_URI_ARGS, i);
		if (n <= 0)
			break;
		if (off + (size_t)n + 2 >= sizeof(r->query))
			break;
		if (off)
			r->query[off++] = '&';
		memcpy(r->query + off, frag, (size_t)n);
		off += (size_t)n;
	}
	r->query[off] = 0;
}

static int on_http(struct lws *wsi, struct rest_req **pr, const char *uri, size_t len)
{
	struct edge *e = lws_context_user(lws_get_context(wsi));
	if (*pr) { /* a previous request on this connection never finished */
		rest_queue_gone(*pr);
		let_go(*pr);
		req_put(*pr);
		*pr = NULL;
	}
	struct rest_req *r = calloc(1, sizeof(*r));
	if (!r)
		return -1;
	r->e = e;
	r->wsi = wsi;
	r->refs = 1;
	e->http_owed++; /* a drain waits for it (edge_shutdown) */
	*pr = r;
	char *up;
	int ul;
	r->method = lws_http_get_uri_and_method(wsi, &up, &ul);
	snprintf(r->path, sizeof(r->path), "%.*s", (int)len, uri);
	read_query(r);
	/* lws 4.1 decodes %0A/%0D in the path and stops the request line there,
	 * leaving the HTTP version empty: the path we see is then a truncated
	 * name, which must not be served as if it were the one asked for. */
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP) == 0) {
		bool chan = strncmp(r->path, "/v1/channels/", 13) == 0;
		respond_error(r, chan ? TERN_EBADNAME : TERN_EBADREQ,
			      chan ? "name contains whitespace or a control character"
				   : "malformed request line");
		return 0;
	}
	if (r->method != LWSHUMETH_POST && r->method != LWSHUMETH_PUT) {
		route(r);
		return 0;
	}
	/* Check the declared length before buffering a byte of the body. */
	char cl[32];
	bool chunked = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
	unsigned long long declared = 0;
	if (lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
		declared = strtoull(cl, NULL, 10);
	if (declared > e->cfg->rest_max_body_bytes) {
		r->body_too_large = true;
		route(r);
	} else if (declared == 0 && !chunked) {
		route(r); /* no body is coming */
	}
	return 0;
}

static int on_body(struct rest_req *r, const void *in, size_t len)
{
	if (r->body_too_large || r->resp_ready)
		return 0;
	if (r->body_len + len > r->e->cfg->rest_max_body_bytes) {
		r->body_too_large = true;
		free(r->body);
		r->body = NULL;
		r->body_len = r->body_cap = 0;
		return 0;
	}
	if (r->body_len + len > r->body_cap) {
		size_t cap = r->body_cap ? r->body_cap * 2 : 4096;
		while (cap < r->body_len + len)
			cap *= 2;
		unsigned char *b = realloc(r->body, cap);
		if (!b)
			return -1;
		r->body = b;
		r->body_cap = cap;
	}
	memcpy(r->body + r->body_len, in, len);
	r->body_len += len;
	return 0;
}

int rest_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
		       void *in, size_t len)
{
	struct rest_req **pr = user;
	/* lws calls some of these without a user area when it refused the
	 * request itself (e.g. a %00 in the URI). */
	if (!pr)
		return reason == LWS_CALLBACK_HTTP ? -1 : 0;
	switch (reason) {
	case LWS_CALLBACK_HTTP:
		return on_http(wsi, pr, in, len);
	case LWS_CALLBACK_HTTP_BODY:
		return *pr ? on_body(*pr, in, len) : -1;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		if (*pr && !(*pr)->resp_ready)
			route(*pr);
		return 0;
	case LWS_CALLBACK_HTTP_WRITEABLE:
		return *pr ? on_http_writeable(pr) : 0;
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
	case LWS_CALLBACK_CLOSED_HTTP:
		if (*pr) {
			rest_queue_gone(*pr);
			let_go(*pr);
			req_put(*pr);
			*pr = NULL;
		}
		return 0;
	default:
		return 0;
	}
}
