/* Private to edge/: a REST request and the reply helpers rest.c and
 * rest_queue.c share. */
#ifndef TERN_REST_INTERNAL_H
#define TERN_REST_INTERNAL_H

#include "internal.h"
#include "tern_limits.h"

struct rest_req {
	struct edge *e;
	struct lws *wsi; /* NULL once lws closed the connection */
	uint32_t refs;
	int method;
	char path[1024];
	char query[1024];
	unsigned char *body;
	size_t body_len, body_cap;
	bool body_too_large;
	/* response */
	int status;
	const char *ctype;
	struct frame *resp;
	const unsigned char *resp_static;
	size_t resp_len, resp_off;
	bool resp_ready, headers_sent;
	/* batch publish */
	size_t npub, ndone;
	int first_err;
	uint64_t *seqs;
	char (*ids)[TERN_MSG_ID_MAX];
	/* queue requests in flight */
	struct backend_pull *pull;
	size_t nsettle, nsettled, nunknown;
	bool batch_seqs; /* the batch reply carries seqs (channels) */
	struct fbuf unknown; /* the unknown ids, as a JSON list body */
	/* channel name for GET handlers */
	char chan[TERN_NAME_MAX_BYTES + 1];
	size_t chan_len;
};


/* Drops a reference; frees the request with the last one. */
void req_put(struct rest_req *r);
/* Sets the reply (taking body) and asks lws for a writable callback. */
void respond(struct rest_req *r, int status, const char *ctype, struct frame *body);
void respond_error(struct rest_req *r, int err, const char *why);
void respond_json(struct rest_req *r, int status, struct fbuf *b);
/* Parses the body as JSON (NULL with a 40000 reply when it is not). */
json_t *body_json(struct rest_req *r);

/* A batch of messages (one object or an array of 1-1000) for r->chan: all
 * validated before any is submitted; submit(r, p, why) hands one on with
 * rest_batch_done(r, ...) as its completion, which drops the reference
 * rest_batch took for it. The reply, 201 {"messages":[{"id"[,"seq"]}]} in
 * order, goes out when the last one is done. */
void rest_batch(struct rest_req *r, bool with_seqs,
		int (*submit)(struct rest_req *r, const struct wire_pub *p, const char **why));
void rest_batch_done(void *arg, int err, uint64_t seq, const char *id);

/* Routes /v1/queues/{q}[/messages|/pull|/ack|/nack]; rest is after "/v1/queues/". */
void rest_queue_route(struct rest_req *r, const char *rest);
/* The connection went away: withdraws a waiting pull. */
void rest_queue_gone(struct rest_req *r);

#endif
