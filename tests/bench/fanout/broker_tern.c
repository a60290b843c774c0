/*
 * Tern as seen by the fan-out benchmark: WebSocket `GET /v1/ws`, subprotocol
 * `tern.v1.json`, one JSON object per text frame (CONTRACT.md, "WebSocket").
 *
 * Frames are read with a small key scanner rather than a JSON parser: the
 * harness reads every delivery of 10 000 subscribers on one core, and a full
 * parse would cost it more than the broker spends sending the frame. The
 * scanner is only sound for frames whose string values hold no unescaped
 * quote, which JSON guarantees, and whose payload is ours (no escapes).
 */
#include "fanout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tern_path(char *buf, size_t cap, const char *channel)
{
	int n = snprintf(buf, cap, "/v1/ws");

	return n < 0 || (size_t)n >= cap ? -1 : n;
}

static int tern_subscribe(char *buf, size_t cap, const char *channel, uint32_t ref)
{
	int n = snprintf(buf, cap, "{\"op\":\"subscribe\",\"channel\":\"%s\",\"ref\":%u}",
			 channel, ref);

	return n < 0 || (size_t)n >= cap ? -1 : n;
}

static int tern_publish(char *buf, size_t cap, const char *channel, uint64_t ref,
			const char *payload, size_t payload_len)
{
	int n = snprintf(buf, cap,
			 "{\"op\":\"publish\",\"channel\":\"%s\",\"ref\":%llu,\"data\":\"%.*s\"}",
			 channel, (unsigned long long)ref, (int)payload_len, payload);

	return n < 0 || (size_t)n >= cap ? -1 : n;
}

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Start of the value of object key `key` (given with its quotes, e.g.
 * "\"op\""), or NULL. A match counts only where a key can stand: after '{',
 * ',' or white space, and followed by ':'. */
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
		if (hit > frame && hit[-1] != '{' && hit[-1] != ',' && hit[-1] != ' ' &&
		    hit[-1] != '\n' && hit[-1] != '\t')
			continue;
		v = skip_ws(p, end);
		if (v < end && *v == ':')
			return skip_ws(v + 1, end);
	}
	return NULL;
}

/* Non-negative integer at `p`; -1 when there is none. */
static int64_t read_uint(const char *p, const char *end)
{
	int64_t v = 0;
	const char *start = p;

	while (p < end && *p >= '0' && *p <= '9' && p - start < 18)
		v = v * 10 + (*p++ - '0');
	return p == start ? -1 : v;
}

static bool value_is(const char *v, const char *end, const char *lit)
{
	size_t n = strlen(lit);

	return v && (size_t)(end - v) >= n && memcmp(v, lit, n) == 0;
}

static int tern_parse(const char *frame, size_t len, struct fanout_frame *out)
{
	const char *end = frame + len;
	const char *op = find_value(frame, end, "\"op\"");
	const char *v;
	int64_t n;

	memset(out, 0, sizeof(*out));
	out->ref = -1;
	if (!op || *op != '"')
		goto out_bad;
	if (value_is(op, end, "\"message\"")) {
		out->kind = FANOUT_FRAME_MESSAGE;
		v = find_value(frame, end, "\"data\"");
		if (!v || *v != '"')
			goto out_bad;
		out->data = v + 1;
		v = memchr(out->data, '"', (size_t)(end - out->data));
		if (!v)
			goto out_bad;
		out->data_len = (size_t)(v - out->data);
	} else if (value_is(op, end, "\"ok\"")) {
		out->kind = FANOUT_FRAME_OK;
	} else if (value_is(op, end, "\"error\"")) {
		out->kind = FANOUT_FRAME_ERROR;
	} else if (value_is(op, end, "\"connected\"")) {
		out->kind = FANOUT_FRAME_CONNECTED;
		return 0;
	} else {
		out->kind = FANOUT_FRAME_OTHER;
		return 0;
	}
	n = (v = find_value(frame, end, "\"seq\"")) ? read_uint(v, end) : -1;
	if (n >= 0)
		out->seq = (uint64_t)n;
	else if (out->kind == FANOUT_FRAME_MESSAGE)
		goto out_bad;
	out->ref = (v = find_value(frame, end, "\"ref\"")) ? read_uint(v, end) : -1;
	return 0;

out_bad:
	out->kind = FANOUT_FRAME_BAD;
	return -1;
}

const struct fanout_broker_ops fanout_broker_tern = {
	.name = "tern",
	.subprotocol = "tern.v1.json",
	.binary = false,
	.data_overhead = 2,
	.sub_path = tern_path,
	.pub_path = tern_path,
	.hello = NULL,
	.subscribe = tern_subscribe,
	.publish = tern_publish,
	.parse = tern_parse,
};

const struct fanout_broker_ops *fanout_broker_find(const char *name)
{
	static const struct fanout_broker_ops *const all[] = {
		&fanout_broker_tern,
		&fanout_broker_mosquitto,
		&fanout_broker_nchan,
	};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strcmp(all[i]->name, name) == 0)
			return all[i];
	return NULL;
}
