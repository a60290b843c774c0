/*
 * Mosquitto as seen by the fan-out benchmark: MQTT 3.1.1 (OASIS standard,
 * 2014) over WebSocket, subprotocol "mqtt", one MQTT control packet per
 * binary frame (section 6.0), QoS 0 both ways.
 *
 * MQTT QoS 0 has no reply to PUBLISH and no sequence number: the table sets
 * publish_unacked, and loss, duplicates and reordering are judged from the
 * harness's own message index in the payload alone.
 *
 * Mosquitto 2.0 writes each packet as its own frame; a frame that is not
 * exactly one packet is reported as unreadable rather than guessed at.
 */
#include "fanout.h"

#include <stdio.h>
#include <string.h>

/* Packet types, section 2.2.1. */
enum {
	MQTT_CONNECT = 1,
	MQTT_CONNACK = 2,
	MQTT_PUBLISH = 3,
	MQTT_SUBSCRIBE = 8,
	MQTT_SUBACK = 9,
	MQTT_PINGRESP = 13,
};

/* Keep Alive in seconds (section 3.1.2.10): longer than any run, so the
 * harness never has to send PINGREQ. */
#define MQTT_KEEPALIVE_S 3600
/* Remaining Length is at most 4 bytes (section 2.2.3). */
#define MQTT_REMLEN_MAX 268435455u

/* Writes the fixed header: `byte0` and `remlen` as the section 2.2.3
 * varint. Returns its length, or -1 when `cap` is too small. */
static int put_fixed(unsigned char *out, size_t cap, unsigned byte0, size_t remlen)
{
	size_t n = 0;

	if (remlen > MQTT_REMLEN_MAX || cap < 5 + remlen)
		return -1;
	out[n++] = (unsigned char)byte0;
	do {
		unsigned char b = remlen % 128;

		remlen /= 128;
		out[n++] = (unsigned char)(remlen ? b | 0x80 : b);
	} while (remlen);
	return (int)n;
}

static void put_u16(unsigned char *out, size_t v)
{
	out[0] = (unsigned char)(v >> 8);
	out[1] = (unsigned char)v;
}

/* A UTF-8 string field: 2-byte length, then the bytes (section 1.5.3). */
static size_t put_str(unsigned char *out, const char *s, size_t len)
{
	put_u16(out, len);
	memcpy(out + 2, s, len);
	return 2 + len;
}

static int mqtt_path(char *buf, size_t cap, const char *channel)
{
	int n = snprintf(buf, cap, "/mqtt");

	(void)channel;
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* CONNECT with Clean Session and a client id unique within one run
 * (section 3.1). */
static int mqtt_hello(char *buf, size_t cap, uint32_t conn_id)
{
	unsigned char *out = (unsigned char *)buf;
	char id[32];
	int idlen = snprintf(id, sizeof(id), "fanout-%u", conn_id);
	size_t remlen = 10 + 2 + (size_t)idlen;
	int n = put_fixed(out, cap, MQTT_CONNECT << 4, remlen);

	if (n < 0)
		return -1;
	n += (int)put_str(out + n, "MQTT", 4);
	out[n++] = 4;    /* protocol level 4: 3.1.1 */
	out[n++] = 0x02; /* Clean Session, no will, no credentials */
	put_u16(out + n, MQTT_KEEPALIVE_S);
	n += 2;
	n += (int)put_str(out + n, id, (size_t)idlen);
	return n;
}

/* SUBSCRIBE to `channel` at QoS 0; `ref` is the Packet Identifier the
 * SUBACK echoes (section 3.8). */
static int mqtt_subscribe(char *buf, size_t cap, const char *channel, uint32_t ref)
{
	unsigned char *out = (unsigned char *)buf;
	size_t tlen = strlen(channel);
	int n;

	if (ref == 0 || ref > 0xffff || tlen > 0xffff)
		return -1;
	/* Fixed header flags 0010 are required (section 3.8.1). */
	n = put_fixed(out, cap, MQTT_SUBSCRIBE << 4 | 0x2, 2 + 2 + tlen + 1);
	if (n < 0)
		return -1;
	put_u16(out + n, ref);
	n += 2;
	n += (int)put_str(out + n, channel, tlen);
	out[n++] = 0; /* requested QoS */
	return n;
}

/* PUBLISH at QoS 0, not retained: no Packet Identifier, no reply
 * (section 3.3). */
static int mqtt_publish(char *buf, size_t cap, const char *channel, uint64_t ref,
			const char *payload, size_t payload_len)
{
	unsigned char *out = (unsigned char *)buf;
	size_t tlen = strlen(channel);
	int n;

	(void)ref;
	if (tlen > 0xffff)
		return -1;
	n = put_fixed(out, cap, MQTT_PUBLISH << 4, 2 + tlen + payload_len);
	if (n < 0)
		return -1;
	n += (int)put_str(out + n, channel, tlen);
	memcpy(out + n, payload, payload_len);
	return n + (int)payload_len;
}

/* Reads the fixed header. Returns its length with *remlen set, or -1 when
 * the frame does not hold exactly one packet. */
static int get_fixed(const unsigned char *in, size_t len, size_t *remlen)
{
	size_t v = 0, mul = 1, n = 1;

	for (;;) {
		if (n >= len || n > 4)
			return -1;
		v += (size_t)(in[n] & 0x7f) * mul;
		mul *= 128;
		if (!(in[n++] & 0x80))
			break;
	}
	if (n + v != len)
		return -1;
	*remlen = v;
	return (int)n;
}

static int mqtt_parse(const char *frame, size_t len, struct fanout_frame *out)
{
	const unsigned char *in = (const unsigned char *)frame;
	size_t remlen, tlen;
	int n;

	memset(out, 0, sizeof(*out));
	out->ref = -1;
	n = len ? get_fixed(in, len, &remlen) : -1;
	if (n < 0)
		goto out_bad;
	in += n;
	switch (((const unsigned char *)frame)[0] >> 4) {
	case MQTT_CONNACK:
		if (remlen != 2)
			goto out_bad;
		/* Return code 0 is Connection Accepted (section 3.2.2.3). */
		out->kind = in[1] == 0 ? FANOUT_FRAME_CONNECTED : FANOUT_FRAME_ERROR;
		return 0;
	case MQTT_SUBACK:
		if (remlen != 3)
			goto out_bad;
		out->ref = in[0] << 8 | in[1];
		/* 0x80 is Failure (section 3.9.3). */
		out->kind = in[2] == 0x80 ? FANOUT_FRAME_ERROR : FANOUT_FRAME_OK;
		return 0;
	case MQTT_PUBLISH:
		if (remlen < 2)
			goto out_bad;
		tlen = (size_t)(in[0] << 8 | in[1]);
		/* QoS above 0 would add a Packet Identifier: we asked for 0. */
		if (frame[0] & 0x6 || 2 + tlen > remlen)
			goto out_bad;
		out->kind = FANOUT_FRAME_MESSAGE;
		out->data = (const char *)in + 2 + tlen;
		out->data_len = remlen - 2 - tlen;
		return 0;
	default:
		out->kind = FANOUT_FRAME_OTHER; /* PINGRESP and the like */
		return 0;
	}

out_bad:
	out->kind = FANOUT_FRAME_BAD;
	return -1;
}

const struct fanout_broker_ops fanout_broker_mosquitto = {
	.name = "mosquitto",
	.subprotocol = "mqtt",
	.binary = true,
	.data_overhead = 0,
	.sub_path = mqtt_path,
	.pub_path = mqtt_path,
	.hello = mqtt_hello,
	.subscribe = mqtt_subscribe,
	.publish = mqtt_publish,
	.parse = mqtt_parse,
	.pub_transport = FANOUT_PUB_WEBSOCKET,
	.publish_unacked = true,
};
