/* The JSON wire format of the client contract (tern.v1.json and REST bodies):
 * parsing client frames into requests, and encoding server frames. Parsing
 * goes through jansson; nothing here touches a socket, so it is fuzzed as is. */
#ifndef TERN_WIRE_H
#define TERN_WIRE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "msg.h"

enum wire_op {
	WIRE_OP_NONE = 0,
	WIRE_OP_SUBSCRIBE,
	WIRE_OP_UNSUBSCRIBE,
	WIRE_OP_PUBLISH,
	WIRE_OP_PING,
	WIRE_OP_ENQUEUE,
	WIRE_OP_CONSUME,
	WIRE_OP_ACK,
	WIRE_OP_NACK,
	WIRE_OP_CANCEL,
};

/* A message to publish, as decoded from `data`, `name`, `encoding` and
 * `idempotency_key`. data is owned (free it); the strings point into the JSON
 * document the publish came from. */
struct wire_pub {
	const char *name;
	size_t name_len;
	bool has_name;
	unsigned char *data;
	size_t data_len;
	int enc;
	const char *idem;
	size_t idem_len;
};

struct wire_req {
	json_t *root; /* owns every string below */
	enum wire_op op;
	bool has_ref;
	uint64_t ref;
	const char *channel;
	size_t channel_len;
	bool has_rewind, has_from;
	uint64_t rewind, from_seq;
	struct wire_pub pub;
	/* queue ops */
	const char *queue;
	size_t queue_len;
	uint32_t prefetch;   /* consume: 1-1000, default 10 */
	const char *delivery_id;
	size_t delivery_id_len;
	bool requeue;	     /* nack: default true */
};

/* Parses one client frame. Returns 0 with req filled, or a Tern error with
 * *why set; req->has_ref/ref are valid either way (false when the frame had no
 * usable ref), so the error reply can carry it. Always call wire_req_free. */
int wire_parse_client(const char *buf, size_t len, size_t max_data, struct wire_req *req,
		      const char **why);
void wire_req_free(struct wire_req *req);

/* Decodes a message object ({"name":..,"data":..,"encoding":..,
 * "idempotency_key":..}) into pub. data must be present; its size (the compact
 * JSON text, or the decoded base64 bytes) must not exceed max_data. */
int wire_parse_pub(json_t *obj, size_t max_data, struct wire_pub *pub, const char **why);

/* Reads an optional non-negative integer field. Returns 0 (present: *has set),
 * or TERN_EBADREQ when present with another type or a negative value. */
int wire_get_u64(json_t *obj, const char *key, bool *has, uint64_t *out);

/* Appends a message object: {"channel":..,"seq":..,"id":..,"name":..,
 * "data":..,"encoding":..,"ts":..}; with_op prefixes "op":"message". */
void wire_put_msg(struct fbuf *b, const struct tern_msg *m, bool with_op);
#define WIRE_FRAME_MESSAGE 1
/* A whole `message` frame for m (kind WIRE_FRAME_MESSAGE). NULL when out of memory. */
struct frame *wire_msg_frame(const struct tern_msg *m);
struct broker_delivery;
/* Appends a delivery object ({"queue":..,"delivery_id":..,"id":..,["channel":..,
 * "name":..,]"data":..,["encoding":..,]"attempt":N}); with_op prefixes
 * "op":"delivery". */
void wire_put_delivery(struct fbuf *b, const struct broker_delivery *d, bool with_op);
/* {"op":"ok"[,"ref":N]<extra>}; extra is "" or starts with ','. */
struct frame *wire_ok_frame(bool has_ref, uint64_t ref, const char *extra);
/* {"op":"error"[,"ref":N],"error":{...}} */
struct frame *wire_error_frame(bool has_ref, uint64_t ref, int err, const char *message);
/* The error object alone, for REST bodies: {"error":{...}} */
void wire_put_error(struct fbuf *b, int err, const char *message);

#endif
