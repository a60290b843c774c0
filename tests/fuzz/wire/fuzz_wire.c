/* Fuzzes everything a client's bytes reach before the broker: the JSON frame
 * parser, the REST message decoder, name validation and the config reader.
 * The first input byte picks the parser so one corpus covers them all. For
 * every input that parses, the encoders run on the result and the output
 * must be JSON that parses again. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "frame.h"
#include "msg.h"
#include "names.h"
#include "tern_err.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_json(struct frame *f)
{
	if (!f)
		return;
	json_error_t e;
	json_t *j = json_loadb((const char *)frame_payload(f), f->len, JSON_ALLOW_NUL, &e);
	if (!j)
		abort(); /* an encoder produced invalid JSON */
	json_decref(j);
	frame_unref(f);
}

static void roundtrip(const char *chan, size_t chan_len, const struct wire_pub *p)
{
	struct tern_msg *m = msg_new(chan, chan_len, p->has_name ? p->name : NULL, p->name_len,
				     p->data, p->data_len, p->enc);
	if (!m)
		return;
	m->seq = 1;
	snprintf(m->id, sizeof(m->id), "fuzz-1");
	check_json(wire_msg_frame(m));
	msg_unref(m);
}

static void fuzz_frame(const char *buf, size_t len)
{
	struct wire_req req;
	const char *why = NULL;
	int rc = wire_parse_client(buf, len, 1024, &req, &why);
	if (rc != 0) {
		if (!why || tern_err_code(rc) < 40000)
			abort(); /* every refusal names its reason and a client code */
		check_json(wire_error_frame(req.has_ref, req.ref, rc, why));
	} else if (req.op == WIRE_OP_PUBLISH) {
		if (req.pub.data_len > 1024)
			abort(); /* the size limit held */
		names_check_channel(req.channel, req.channel_len, &why);
		roundtrip(req.channel, req.channel_len, &req.pub);
	}
	wire_req_free(&req);
}

static void fuzz_body(const char *buf, size_t len)
{
	json_error_t e;
	json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
	if (!j)
		return;
	size_t n = json_is_array(j) ? json_array_size(j) : 1;
	for (size_t i = 0; i < n && i < 64; i++) {
		struct wire_pub p;
		const char *why = NULL;
		json_t *m = json_is_array(j) ? json_array_get(j, i) : j;
		if (wire_parse_pub(m, 1024, &p, &why) == 0)
			roundtrip("c", 1, &p);
		free(p.data);
	}
	json_decref(j);
}

static void fuzz_config(const char *buf, size_t len)
{
	char path[] = "/tmp/tern-fuzz-config-XXXXXX", err[512];
	int fd = mkstemp(path);
	if (fd < 0)
		return;
	if (write(fd, buf, len) == (ssize_t)len) {
		struct tern_config c;
		config_defaults(&c);
		config_load_file(&c, path, err, sizeof(err));
	}
	close(fd);
	unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *buf = (const char *)data + 1;
	size_t len = size - 1;
	switch (data[0] % 4) {
	case 0:
		fuzz_frame(buf, len);
		break;
	case 1:
		fuzz_body(buf, len);
		break;
	case 2:
		names_check_channel(buf, len, NULL);
		names_check_queue(buf, len, NULL);
		break;
	default:
		fuzz_config(buf, len);
	}
	return 0;
}
