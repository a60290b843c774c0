/*
 * nginx with nchan as seen by the fan-out benchmark: subscribers open a
 * WebSocket on /sub/CHANNEL (the URL alone subscribes; each message arrives
 * as one frame holding exactly the published body), and the publisher POSTs
 * each message to /pub/CHANNEL over one keep-alive HTTP/1.1 connection
 * (tests/bench/run_compare.sh writes the matching nginx.conf).
 *
 * nchan's plain WebSocket frames carry no message id, so loss, duplicates
 * and reordering are judged from the harness's index in the payload; the
 * POST's 2xx reply is the publish OK.
 */
#include "fanout.h"

#include <stdio.h>
#include <string.h>

static int nchan_sub_path(char *buf, size_t cap, const char *channel)
{
	int n = snprintf(buf, cap, "/sub/%s", channel);

	return n < 0 || (size_t)n >= cap ? -1 : n;
}

static int nchan_pub_path(char *buf, size_t cap, const char *channel)
{
	int n = snprintf(buf, cap, "/pub/%s", channel);

	return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* The URL subscribes: no frame. */
static int nchan_subscribe(char *buf, size_t cap, const char *channel, uint32_t ref)
{
	(void)buf;
	(void)cap;
	(void)channel;
	(void)ref;
	return 0;
}

/* A whole HTTP/1.1 request. nchan answers 201 (or 202 with no subscriber)
 * with a short text body (Accept: text/plain). */
static int nchan_publish(char *buf, size_t cap, const char *channel, uint64_t ref,
			 const char *payload, size_t payload_len)
{
	int n;

	(void)ref;
	n = snprintf(buf, cap,
		     "POST /pub/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n"
		     "Content-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
		     channel, payload_len);
	if (n < 0 || (size_t)n + payload_len > cap)
		return -1;
	memcpy(buf + n, payload, payload_len);
	return n + (int)payload_len;
}

static int nchan_parse(const char *frame, size_t len, struct fanout_frame *out)
{
	memset(out, 0, sizeof(*out));
	out->ref = -1;
	out->kind = FANOUT_FRAME_MESSAGE;
	out->data = frame;
	out->data_len = len;
	return 0;
}

const struct fanout_broker_ops fanout_broker_nchan = {
	.name = "nchan",
	.subprotocol = NULL,
	.binary = false,
	.data_overhead = 0,
	.sub_path = nchan_sub_path,
	.pub_path = nchan_pub_path,
	.hello = NULL,
	.subscribe = nchan_subscribe,
	.publish = nchan_publish,
	.parse = nchan_parse,
	.pub_transport = FANOUT_PUB_HTTP_POST,
	.publish_unacked = false,
};
