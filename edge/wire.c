#include "wire.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "tern_err.h"
#include "tern_limits.h"
#include "broker.h"

static const struct {
	const char *name;
	enum wire_op op;
} ops[] = {
	{"subscribe", WIRE_OP_SUBSCRIBE},
	{"unsubscribe", WIRE_OP_UNSUBSCRIBE},
	{"publish", WIRE_OP_PUBLISH},
	{"ping", WIRE_OP_PING},
	{"enqueue", WIRE_OP_ENQUEUE},
	{"consume", WIRE_OP_CONSUME},
	{"ack", WIRE_OP_ACK},
	{"nack", WIRE_OP_NACK},
	{"cancel", WIRE_OP_CANCEL},
};

int wire_get_u64(json_t *obj, const char *key, bool *has, uint64_t *out)
{
	json_t *v = json_object_get(obj, key);
	*has = false;
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return TERN_EBADREQ;
	*has = true;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_str(json_t *obj, const char *key, const char **s, size_t *len, bool *has)
{
	json_t *v = json_object_get(obj, key);
	*has = v != NULL;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return TERN_EBADREQ;
	*s = json_string_value(v);
	*len = json_string_length(v);
	return 0;
}

/* Strict base64 (RFC 4648 section 4, padded). Returns the decoded length or -1. */
static long b64_decode(const char *s, size_t n, unsigned char *out)
{
	if (n % 4 != 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			  (c >= '0' && c <= '9') || c == '+' || c == '/' ||
			  (c == '=' && (i == n - 1 || (i == n - 2 && s[n - 1] == '=')));
		if (!ok)
			return -1;
	}
	if (n == 0)
		return 0;
	int r = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
	if (r < 0)
		return -1;
	size_t pad = (s[n - 1] == '=') + (s[n - 2] == '=');
	return (long)r - (long)pad;
}

static int decode_data(json_t *data, bool b64, size_t max_data, struct wire_pub *pub,
		       const char **why)
{
	if (b64) {
		if (!json_is_string(data)) {
			*why = "data must be a base64 string when encoding is base64";
			return TERN_EBADREQ;
		}
		const char *s = json_string_value(data);
		size_t n = json_string_length(data);
		if (n / 4 * 3 > max_data + 2) {
			*why = "message data is larger than the limit";
			return TERN_ETOOLARGE;
		}
		pub->data = malloc(n / 4 * 3 + 3);
		if (!pub->data) {
			*why = "out of memory";
			return TERN_EUNAVAIL;
		}
		long r = b64_decode(s, n, pub->data);
		if (r < 0) {
			*why = "data is not valid base64";
			return TERN_EBADREQ;
		}
		pub->data_len = (size_t)r;
		pub->enc = TERN_ENC_BASE64;
	} else {
		size_t need = json_dumpb(data, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
		if (need == 0) {
			*why = "data cannot be encoded";
			return TERN_EBADREQ;
		}
		if (need > max_data) {
			*why = "message data is larger than the limit";
			return TERN_ETOOLARGE;
		}
		pub->data = malloc(need);
		if (!pub->data) {
			*why = "out of memory";
			return TERN_EUNAVAIL;
		}
		json_dumpb(data, (char *)pub->data, need, JSON_COMPACT | JSON_ENCODE_ANY);
		pub->data_len = need;
		pub->enc = TERN_ENC_JSON;
	}
	if (pub->data_len > max_data) {
		*why = "message data is larger than the limit";
		return TERN_ETOOLARGE;
	}
	return 0;
}

int wire_parse_pub(json_t *obj, size_t max_data, struct wire_pub *pub, const char **why)
{
	memset(pub, 0, sizeof(*pub));
	if (!json_is_object(obj)) {
		*why = "a message must be a JSON object";
		return TERN_EBADREQ;
	}
	json_t *data = json_object_get(obj, "data");
	if (!data) {
		*why = "missing field: data";
		return TERN_EBADREQ;
	}
	if (get_str(obj, "name", &pub->name, &pub->name_len, &pub->has_name) != 0) {
		*why = "name must be a string";
		return TERN_EBADREQ;
	}
	const char *enc = NULL, *idem = NULL;
	size_t enc_len = 0;
	bool has_enc, has_idem;
	if (get_str(obj, "encoding", &enc, &enc_len, &has_enc) != 0 ||
	    (has_enc && strcmp(enc, "base64") != 0 && strcmp(enc, "json") != 0)) {
		*why = "encoding must be \"base64\" or \"json\"";
		return TERN_EBADREQ;
	}
	if (get_str(obj, "idempotency_key", &idem, &pub->idem_len, &has_idem) != 0 ||
	    (has_idem && (pub->idem_len == 0 || pub->idem_len > TERN_IDEM_KEY_MAX_BYTES))) {
		*why = "idempotency_key must be a string of 1-128 bytes";
		return TERN_EBADREQ;
	}
	pub->idem = has_idem ? idem : NULL;
	if (pub->has_name && pub->name_len > TERN_EVENT_NAME_MAX_BYTES) {
		*why = "name is longer than 255 bytes";
		return TERN_EBADREQ;
	}
	return decode_data(data, has_enc && strcmp(enc, "base64") == 0, max_data, pub, why);
}

static int parse_queue_fields(struct wire_req *req, size_t max_data, const char **why)
{
	json_t *root = req->root;
	bool has;
	if (get_str(root, "queue", &req->queue, &req->queue_len, &has) != 0 || !has) {
		*why = has ? "queue must be a string" : "missing field: queue";
		return TERN_EBADREQ;
	}
	switch (req->op) {
	case WIRE_OP_ENQUEUE:
		return wire_parse_pub(root, max_data, &req->pub, why);
	case WIRE_OP_CONSUME: {
		uint64_t pf = TERN_QUEUE_PREFETCH_DEFAULT;
		if (wire_get_u64(root, "prefetch", &has, &pf) != 0 || (has && (pf < 1 ||
		    pf > TERN_QUEUE_PREFETCH_MAX))) {
			*why = "prefetch must be an integer from 1 to 1000";
			return TERN_EBADREQ;
		}
		req->prefetch = (uint32_t)pf;
		return 0;
	}
	case WIRE_OP_ACK:
	case WIRE_OP_NACK: {
		if (get_str(root, "delivery_id", &req->delivery_id, &req->delivery_id_len, &has) != 0 ||
		    !has) {
			*why = has ? "delivery_id must be a string" : "missing field: delivery_id";
			return TERN_EBADREQ;
		}
		json_t *rq = json_object_get(root, "requeue");
		if (rq && !json_is_boolean(rq)) {
			*why = "requeue must be true or false";
			return TERN_EBADREQ;
		}
		req->requeue = rq ? json_is_true(rq) : true;
		return 0;
	}
	default:
		return 0;
	}
}

static int parse_fields(struct wire_req *req, size_t max_data, const char **why)
{
	json_t *root = req->root;
	bool has;
	if (req->op == WIRE_OP_PING)
		return 0;
	if (req->op >= WIRE_OP_ENQUEUE)
		return parse_queue_fields(req, max_data, why);
	if (get_str(root, "channel", &req->channel, &req->channel_len, &has) != 0 || !has) {
		*why = has ? "channel must be a string" : "missing field: channel";
		return TERN_EBADREQ;
	}
	if (req->op == WIRE_OP_SUBSCRIBE) {
		if (wire_get_u64(root, "rewind", &req->has_rewind, &req->rewind) != 0) {
			*why = "rewind must be a non-negative integer";
			return TERN_EBADREQ;
		}
		if (wire_get_u64(root, "from_seq", &req->has_from, &req->from_seq) != 0) {
			*why = "from_seq must be a non-negative integer";
			return TERN_EBADREQ;
		}
		if (req->has_rewind && req->has_from) {
			*why = "give rewind or from_seq, not both";
			return TERN_EBADREQ;
		}
	} else if (req->op == WIRE_OP_PUBLISH) {
		return wire_parse_pub(root, max_data, &req->pub, why);
	}
	return 0;
}

int wire_parse_client(const char *buf, size_t len, size_t max_data, struct wire_req *req,
		      const char **why)
{
	json_error_t jerr;
	memset(req, 0, sizeof(*req));
	req->root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (!req->root) {
		*why = "invalid JSON";
		return TERN_EBADREQ;
	}
	if (!json_is_object(req->root)) {
		*why = "a frame must be a JSON object";
		return TERN_EBADREQ;
	}
	if (wire_get_u64(req->root, "ref", &req->has_ref, &req->ref) != 0) {
		*why = "ref must be a non-negative integer";
		return TERN_EBADREQ;
	}
	json_t *op = json_object_get(req->root, "op");
	if (!op || !json_is_string(op)) {
		*why = op ? "op must be a string" : "missing field: op";
		return TERN_EBADREQ;
	}
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(json_string_value(op), ops[i].name) == 0)
			req->op = ops[i].op;
	if (req->op == WIRE_OP_NONE) {
		*why = "unknown op";
		return TERN_EBADREQ;
	}
	return parse_fields(req, max_data, why);
}

void wire_req_free(struct wire_req *req)
{
	free(req->pub.data);
	req->pub.data = NULL;
	json_decref(req->root);
	req->root = NULL;
}

/* ,"data":<value>[,"encoding":"base64"] */
static void put_data(struct fbuf *b, const struct tern_msg *m)
{
	fbuf_puts(b, ",\"data\":");
	if (m->enc != TERN_ENC_BASE64) {
		fbuf_put(b, m->data, m->data_len);
		return;
	}
	size_t n = 4 * ((m->data_len + 2) / 3);
	char *tmp = malloc(n + 1);
	if (!tmp) {
		b->failed = 1;
		return;
	}
	EVP_EncodeBlock((unsigned char *)tmp, m->data, (int)m->data_len);
	fbuf_puts(b, "\"");
	fbuf_put(b, tmp, n);
	fbuf_puts(b, "\",\"encoding\":\"base64\"");
	free(tmp);
}

void wire_put_delivery(struct fbuf *b, const struct broker_delivery *d, bool with_op)
{
	const struct tern_msg *m = d->msg;
	fbuf_puts(b, with_op ? "{\"op\":\"delivery\",\"queue\":" : "{\"queue\":");
	fbuf_put_jstr(b, d->queue, d->queue_len);
	fbuf_printf(b, ",\"delivery_id\":\"%s\",\"id\":\"%s\"", d->delivery_id, m->id);
	if (d->from_channel) {
		fbuf_puts(b, ",\"channel\":");
		fbuf_put_jstr(b, m->chan, m->chan_len);
		if (m->has_name) {
			fbuf_puts(b, ",\"name\":");
			fbuf_put_jstr(b, m->name, m->name_len);
		}
	}
	put_data(b, m);
	fbuf_printf(b, ",\"attempt\":%u}", d->attempt);
}

void wire_put_msg(struct fbuf *b, const struct tern_msg *m, bool with_op)
{
	fbuf_puts(b, with_op ? "{\"op\":\"message\",\"channel\":" : "{\"channel\":");
	fbuf_put_jstr(b, m->chan, m->chan_len);
	fbuf_printf(b, ",\"seq\":%llu,\"id\":\"%s\"", (unsigned long long)m->seq, m->id);
	if (m->has_name) {
		fbuf_puts(b, ",\"name\":");
		fbuf_put_jstr(b, m->name, m->name_len);
	}
	put_data(b, m);
	fbuf_printf(b, ",\"ts\":%lld}", (long long)m->ts_ms);
}

struct frame *wire_msg_frame(const struct tern_msg *m)
{
	struct fbuf b;
	fbuf_init(&b, 96 + m->chan_len + m->name_len + m->data_len * 4 / 3);
	wire_put_msg(&b, m, true);
	struct frame *f = fbuf_finish(&b);
	if (f)
		f->kind = WIRE_FRAME_MESSAGE;
	return f;
}

struct frame *wire_ok_frame(bool has_ref, uint64_t ref, const char *extra)
{
	struct fbuf b;
	fbuf_init(&b, 64);
	fbuf_puts(&b, "{\"op\":\"ok\"");
	if (has_ref)
		fbuf_printf(&b, ",\"ref\":%llu", (unsigned long long)ref);
	fbuf_puts(&b, extra);
	fbuf_puts(&b, "}");
	return fbuf_finish(&b);
}

static void put_error_obj(struct fbuf *b, int err, const char *message)
{
	fbuf_printf(b, "{\"code\":%d,\"status\":%d,\"message\":", tern_err_code(err),
		    tern_err_status(err));
	fbuf_put_jstr(b, message, strlen(message));
	fbuf_printf(b, ",\"retryable\":%s}", tern_err_retryable(err) ? "true" : "false");
}

struct frame *wire_error_frame(bool has_ref, uint64_t ref, int err, const char *message)
{
	struct fbuf b;
	fbuf_init(&b, 160);
	fbuf_puts(&b, "{\"op\":\"error\"");
	if (has_ref)
		fbuf_printf(&b, ",\"ref\":%llu", (unsigned long long)ref);
	fbuf_puts(&b, ",\"error\":");
	put_error_obj(&b, err, message);
	fbuf_puts(&b, "}");
	return fbuf_finish(&b);
}

void wire_put_error(struct fbuf *b, int err, const char *message)
{
	fbuf_puts(b, "{\"error\":");
	put_error_obj(b, err, message);
	fbuf_puts(b, "}");
}
