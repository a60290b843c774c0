/* REST for queues (contract "REST"): PUT/GET /v1/queues/{q},
 * POST /v1/queues/{q}/messages, /pull (long-poll), /ack and /nack. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "rest_internal.h"
#include "tern_err.h"

static void put_str_list(struct fbuf *b, const char *const *v, size_t n)
{
	fbuf_puts(b, "[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			fbuf_puts(b, ",");
		fbuf_put_jstr(b, v[i], strlen(v[i]));
	}
	fbuf_puts(b, "]");
}

/* --- GET and PUT /v1/queues/{q} --- */

static void info_reply(void *arg, int err, const struct broker_qinfo *q)
{
	struct rest_req *r = arg;
	if (err != 0) {
		respond_error(r, err, "queue info unavailable");
		req_put(r);
		return;
	}
	struct fbuf b;
	fbuf_init(&b, 256 + q->name_len);
	fbuf_puts(&b, "{\"queue\":");
	fbuf_put_jstr(&b, q->name, q->name_len);
	if (r->method == LWSHUMETH_PUT) {
		fbuf_printf(&b, ",\"ack_timeout_ms\":%llu,\"max_attempts\":%u,\"dead_letter\":",
			    (unsigned long long)q->ack_timeout_ms, q->max_attempts);
		fbuf_put_jstr(&b, q->dead_letter, strlen(q->dead_letter));
		fbuf_puts(&b, ",\"bind\":");
		put_str_list(&b, q->bind, q->nbind);
	} else {
		fbuf_printf(&b, ",\"ready\":%llu,\"unacked\":%llu,\"consumers\":%llu,"
				"\"delivered\":%llu,\"redelivered\":%llu,\"dead_lettered\":%llu",
			    (unsigned long long)q->ready, (unsigned long long)q->unacked,
			    (unsigned long long)q->consumers, (unsigned long long)q->delivered,
			    (unsigned long long)q->redelivered, (unsigned long long)q->dead_lettered);
	}
	fbuf_puts(&b, "}");
	respond_json(r, 200, &b);
	req_put(r);
}

static void ask_info(struct rest_req *r)
{
	r->refs++;
	int rc = r->e->be_ops->queue_info(r->e->be, r->chan, r->chan_len, info_reply, r);
	if (rc != 0) {
		r->refs--;
		respond_error(r, rc, "queue info unavailable");
	}
}

static void conf_done(void *arg, int err)
{
	struct rest_req *r = arg;
	if (err != 0)
		respond_error(r, err, "the settings could not be stored");
	else
		ask_info(r);
	req_put(r);
}

static int read_conf(json_t *root, struct broker_qconf *c, const char **pats, size_t *lens,
		     const char **why)
{
	const char *key;
	json_t *v;
	if (!json_is_object(root)) {
		*why = "the body must be a JSON object";
		return TERN_EBADREQ;
	}
	json_object_foreach(root, key, v) {
		if (strcmp(key, "ack_timeout_ms") == 0 && json_is_integer(v) &&
		    json_integer_value(v) >= 0) {
			c->has_ack_timeout = true;
			c->ack_timeout_ms = (uint64_t)json_integer_value(v);
		} else if (strcmp(key, "max_attempts") == 0 && json_is_integer(v) &&
			   json_integer_value(v) >= 0 && json_integer_value(v) <= UINT32_MAX) {
			c->has_max_attempts = true;
			c->max_attempts = (uint32_t)json_integer_value(v);
		} else if (strcmp(key, "dead_letter") == 0 && json_is_string(v)) {
			c->has_dead_letter = true;
			c->dead_letter = json_string_value(v);
			c->dead_letter_len = json_string_length(v);
		} else if (strcmp(key, "bind") == 0 && json_is_array(v) &&
			   json_array_size(v) <= TERN_QUEUE_BINDS_MAX) {
			c->has_bind = true;
			c->nbind = json_array_size(v);
			for (size_t i = 0; i < c->nbind; i++) {
				json_t *p = json_array_get(v, i);
				if (!json_is_string(p)) {
					*why = "bind must be a list of strings";
					return TERN_EBADREQ;
				}
				pats[i] = json_string_value(p);
				lens[i] = json_string_length(p);
			}
			c->bind = pats;
			c->bind_lens = lens;
		} else {
			*why = "unknown setting or wrong type (ack_timeout_ms, max_attempts, "
			       "dead_letter, bind)";
			return TERN_EBADREQ;
		}
	}
	return 0;
}

static void put_queue(struct rest_req *r)
{
	const char *pats[TERN_QUEUE_BINDS_MAX], *why = NULL;
	size_t lens[TERN_QUEUE_BINDS_MAX];
	struct broker_qconf c = {0};
	json_t *root = body_json(r);
	if (!root)
		return;
	int rc = read_conf(root, &c, pats, lens, &why);
	if (rc == 0) {
		r->refs++;
		rc = r->e->be_ops->queue_configure(r->e->be, r->chan, r->chan_len, &c, conf_done, r,
						   &why);
		if (rc != 0)
			r->refs--;
	}
	if (rc != 0)
		respond_error(r, rc, why);
	json_decref(root);
}

/* --- POST /v1/queues/{q}/messages --- */

static int submit_enqueue(struct rest_req *r, const struct wire_pub *p, const char **why)
{
	struct broker_enq e = {
		.queue = r->chan, .queue_len = r->chan_len,
		.data = p->data, .data_len = p->data_len, .enc = p->enc,
		.idem_key = p->idem, .idem_len = p->idem_len,
	};
	return r->e->be_ops->enqueue(r->e->be, &e, rest_batch_done, r, why);
}

/* --- POST /v1/queues/{q}/pull --- */

static void pull_done(void *arg, int err, const struct broker_delivery *ds, size_t n)
{
	struct rest_req *r = arg;
	r->pull = NULL;
	if (err != 0) {
		respond_error(r, err, "pull failed");
	} else {
		size_t hint = 32;
		for (size_t i = 0; i < n; i++)
			hint += 160 + ds[i].msg->data_len * 4 / 3 + ds[i].msg->chan_len;
		struct fbuf b;
		fbuf_init(&b, hint);
		fbuf_puts(&b, "{\"deliveries\":[");
		for (size_t i = 0; i < n; i++) {
			if (i)
				fbuf_puts(&b, ",");
			wire_put_delivery(&b, &ds[i], false);
		}
		fbuf_puts(&b, "]}");
		respond_json(r, 200, &b);
	}
	req_put(r);
}

static void post_pull(struct rest_req *r)
{
	uint64_t max = 1, wait_ms = 0;
	if (r->e->shutting_down) { /* a drain answers long-polls; none starts now */
		respond_error(r, TERN_EUNAVAIL, "shutting down; retry on another server");
		return;
	}
	bool has;
	json_t *root = NULL;
	if (r->body_len) {
		if (!(root = body_json(r)))
			return;
		if (!json_is_object(root) ||
		    wire_get_u64(root, "max", &has, &max) != 0 || (has && (max < 1 || max > 1000)) ||
		    wire_get_u64(root, "wait_ms", &has, &wait_ms) != 0 || wait_ms > 30000) {
			json_decref(root);
			respond_error(r, TERN_EBADREQ, "max must be 1-1000 and wait_ms 0-30000");
			return;
		}
		json_decref(root);
	}
	r->refs++;
	int rc = r->e->be_ops->pull(r->e->be, r->chan, r->chan_len, (uint32_t)max, wait_ms,
				    pull_done, r, &r->pull);
	if (rc != 0) {
		r->refs--;
		respond_error(r, rc, "cannot pull now");
	}
}

void rest_queue_gone(struct rest_req *r)
{
	if (!r->pull)
		return;
	r->e->be_ops->pull_cancel(r->e->be, r->pull); /* its deliveries go back */
	r->pull = NULL;
	req_put(r);
}

/* --- POST /v1/queues/{q}/ack and /nack --- */

struct settle_ctx {
	struct rest_req *r;
	size_t len;
	char id[];
};

static void settle_reply(struct rest_req *r)
{
	struct fbuf b;
	size_t ok = r->nsettle - r->nunknown;
	if (r->nunknown == 0) {
		fbuf_init(&b, 48);
		fbuf_printf(&b, "{\"acked\":%zu}", ok); /* nack answers "as ack" */
		respond_json(r, 200, &b);
		return;
	}
	/* 40400 naming the ids; the known ones were settled all the same. */
	fbuf_puts(&r->unknown, "]");
	struct frame *list = fbuf_finish(&r->unknown);
	fbuf_init(&b, 160 + (list ? list->len * 2 : 0));
	fbuf_printf(&b, "{\"error\":{\"code\":40400,\"status\":404,\"message\":");
	char head[96];
	snprintf(head, sizeof(head), "%zu unknown or stale delivery id%s: ", r->nunknown,
		 r->nunknown == 1 ? "" : "s");
	struct fbuf msg;
	fbuf_init(&msg, 96 + (list ? list->len : 0));
	fbuf_puts(&msg, head);
	if (list)
		fbuf_put(&msg, frame_payload(list), list->len);
	struct frame *mf = fbuf_finish(&msg);
	if (mf)
		fbuf_put_jstr(&b, (const char *)frame_payload(mf), mf->len);
	fbuf_puts(&b, ",\"retryable\":false,\"delivery_ids\":");
	if (list)
		fbuf_put(&b, frame_payload(list), list->len);
	fbuf_puts(&b, "}}");
	frame_unref(mf);
	frame_unref(list);
	respond_json(r, 404, &b);
}

static void settle_done(void *arg, int err)
{
	struct settle_ctx *c = arg;
	struct rest_req *r = c->r;
	r->nsettled++;
	if (err != 0) {
		fbuf_puts(&r->unknown, r->nunknown++ ? "," : "");
		fbuf_put_jstr(&r->unknown, c->id, c->len);
	}
	if (r->nsettled == r->nsettle)
		settle_reply(r);
	free(c);
	req_put(r);
}

static void post_settle(struct rest_req *r, bool ack)
{
	json_t *root = body_json(r);
	if (!root)
		return;
	json_t *ids = json_object_get(root, "delivery_ids");
	json_t *rq = json_object_get(root, "requeue");
	if (!json_is_object(root) || !json_is_array(ids) ||
	    json_array_size(ids) > TERN_QUEUE_PULL_MAX || (rq && !json_is_boolean(rq))) {
		json_decref(root);
		respond_error(r, TERN_EBADREQ, "delivery_ids must be a list of up to 1000 strings"
					       " and requeue true or false");
		return;
	}
	for (size_t i = 0; i < json_array_size(ids); i++) {
		if (!json_is_string(json_array_get(ids, i))) {
			json_decref(root);
			respond_error(r, TERN_EBADREQ, "delivery_ids must be strings");
			return;
		}
	}
	r->nsettle = json_array_size(ids);
	fbuf_init(&r->unknown, 64);
	fbuf_puts(&r->unknown, "[");
	r->refs++; /* held while the loop below runs */
	for (size_t i = 0; i < r->nsettle; i++) {
		json_t *v = json_array_get(ids, i);
		size_t len = json_string_length(v);
		struct settle_ctx *c = calloc(1, sizeof(*c) + len + 1);
		int rc = c ? 0 : TERN_EUNAVAIL;
		if (c) {
			memcpy(c->id, json_string_value(v), len);
			c->len = len;
			c->r = r;
			r->refs++;
			rc = r->e->be_ops->settle(r->e->be, r->chan, r->chan_len, c->id, len, ack,
						  rq ? json_is_true(rq) : true, settle_done, c);
			if (rc != 0) {
				r->refs--;
				free(c);
			}
		}
		if (rc != 0) { /* counted as unknown so the reply still comes */
			r->nsettled++;
			fbuf_puts(&r->unknown, r->nunknown++ ? "," : "");
			fbuf_put_jstr(&r->unknown, json_string_value(v), len);
		}
	}
	if (r->nsettle == 0 || r->nsettled == r->nsettle)
		settle_reply(r);
	req_put(r);
	json_decref(root);
}

/* --- routing --- */

static bool strip_suffix(const char *rest, const char *suffix, size_t *name_len)
{
	size_t len = strlen(rest), sl = strlen(suffix);
	if (len <= sl || strcmp(rest + len - sl, suffix) != 0)
		return false;
	*name_len = len - sl;
	return true;
}

void rest_queue_route(struct rest_req *r, const char *rest)
{
	static const char *const suffixes[] = {"/messages", "/pull", "/ack", "/nack"};
	size_t name_len = strlen(rest);
	int which = -1;
	for (int i = 0; i < 4 && which < 0; i++)
		if (strip_suffix(rest, suffixes[i], &name_len))
			which = i;
	const char *why;
	/* "/v1/queues/{q}/other": not a sub-resource we have. */
	if (memchr(rest, '/', name_len)) {
		respond_error(r, TERN_ENOTFOUND, "no such endpoint");
		return;
	}
	int rc = names_check_queue(rest, name_len, &why);
	if (rc != 0) {
		respond_error(r, rc, why);
		return;
	}
	memcpy(r->chan, rest, name_len);
	r->chan[name_len] = 0;
	r->chan_len = name_len;
	if (which < 0 && r->method == LWSHUMETH_GET)
		ask_info(r);
	else if (which < 0 && r->method == LWSHUMETH_PUT)
		put_queue(r);
	else if (which == 0 && r->method == LWSHUMETH_POST)
		rest_batch(r, false, submit_enqueue);
	else if (which > 0 && r->method == LWSHUMETH_POST)
		which == 1 ? post_pull(r) : post_settle(r, which == 2);
	else
		respond_error(r, -40500, "method not allowed");
}
