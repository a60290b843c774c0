/* Frame codec: see link_frame.h for the wire format. */
#include "link_frame.h"

#include <errno.h>
#include <string.h>

void link_frame_header_put(uint8_t *out, uint32_t length, uint8_t type, uint8_t flags,
                           uint32_t stream_id) {
  link_put_u32(out, length);
  out[4] = type;
  out[5] = flags;
  out[6] = 0;
  out[7] = 0;
  link_put_u32(out + 8, stream_id);
}

/* Per-type rules that the header alone can decide. */
static int check_type(const link_frame *f) {
  switch (f->type) {
  case LINK_FRAME_DATA:
  case LINK_FRAME_HEADERS:
  case LINK_FRAME_STATUS:
    return f->stream_id != 0 ? 0 : -EPROTO;
  case LINK_FRAME_RESET:
    return f->stream_id != 0 && f->length == 8 ? 0 : -EPROTO;
  case LINK_FRAME_SETTINGS:
    if (f->stream_id != 0) return -EPROTO;
    return (f->flags & LINK_FLAG_ACK) && f->length != 0 ? -EPROTO : 0;
  case LINK_FRAME_PING:
    return f->stream_id == 0 && f->length == 8 ? 0 : -EPROTO;
  case LINK_FRAME_GOAWAY:
    if (f->stream_id != 0 || f->length < 8) return -EPROTO;
    return f->length <= 8 + LINK_GOAWAY_TEXT_MAX ? 0 : -EPROTO;
  case LINK_FRAME_WINDOW:
    return f->length == 4 ? 0 : -EPROTO;
  default:
    return 0; /* unknown types are skipped by the caller */
  }
}

long link_frame_decode(const uint8_t *buf, size_t len, uint32_t max_payload, link_frame *f) {
  if (len < LINK_FRAME_HEADER_BYTES) return 0;
  f->length = link_get_u32(buf);
  f->type = buf[4];
  f->flags = buf[5];
  f->stream_id = link_get_u32(buf + 8);
  f->payload = buf + LINK_FRAME_HEADER_BYTES;
  if (f->length > max_payload) return -EMSGSIZE;
  if (f->stream_id > LINK_STREAM_ID_MAX) return -EPROTO;
  int rc = check_type(f);
  if (rc < 0) return rc;
  if (len - LINK_FRAME_HEADER_BYTES < f->length) return 0;
  return (long)(LINK_FRAME_HEADER_BYTES + f->length);
}

int link_frame_window(const link_frame *f, uint32_t *increment) {
  if (f->type != LINK_FRAME_WINDOW || f->length != 4) return -EPROTO;
  uint32_t v = link_get_u32(f->payload);
  if (v == 0 || v > LINK_WINDOW_INC_MAX) return -EPROTO;
  *increment = v;
  return 0;
}

int link_frame_reset(const link_frame *f, uint32_t *code, uint32_t *flags) {
  if (f->type != LINK_FRAME_RESET || f->length != 8) return -EPROTO;
  *code = link_get_u32(f->payload);
  *flags = link_get_u32(f->payload + 4);
  return 0;
}

int link_frame_goaway(const link_frame *f, uint32_t *last_id, uint32_t *code, const uint8_t **text,
                      size_t *text_len) {
  if (f->type != LINK_FRAME_GOAWAY || f->length < 8 || f->length > 8 + LINK_GOAWAY_TEXT_MAX)
    return -EPROTO;
  *last_id = link_get_u32(f->payload) & LINK_STREAM_ID_MAX;
  *code = link_get_u32(f->payload + 4);
  *text = f->payload + 8;
  *text_len = f->length - 8;
  return 0;
}

size_t link_frame_put_window(uint8_t *out, uint32_t stream_id, uint32_t increment) {
  link_frame_header_put(out, 4, LINK_FRAME_WINDOW, 0, stream_id);
  link_put_u32(out + LINK_FRAME_HEADER_BYTES, increment);
  return LINK_FRAME_HEADER_BYTES + 4;
}

size_t link_frame_put_reset(uint8_t *out, uint32_t stream_id, uint32_t code, uint32_t flags) {
  link_frame_header_put(out, 8, LINK_FRAME_RESET, 0, stream_id);
  link_put_u32(out + LINK_FRAME_HEADER_BYTES, code);
  link_put_u32(out + LINK_FRAME_HEADER_BYTES + 4, flags);
  return LINK_FRAME_HEADER_BYTES + 8;
}

size_t link_frame_put_ping(uint8_t *out, uint8_t flags, uint64_t opaque) {
  link_frame_header_put(out, 8, LINK_FRAME_PING, flags, 0);
  link_put_u32(out + LINK_FRAME_HEADER_BYTES, (uint32_t)(opaque >> 32));
  link_put_u32(out + LINK_FRAME_HEADER_BYTES + 4, (uint32_t)opaque);
  return LINK_FRAME_HEADER_BYTES + 8;
}

size_t link_frame_put_goaway(uint8_t *out, uint32_t last_id, uint32_t code, const char *text,
                             size_t text_len) {
  if (text_len > LINK_GOAWAY_TEXT_MAX) text_len = LINK_GOAWAY_TEXT_MAX;
  link_frame_header_put(out, (uint32_t)(8 + text_len), LINK_FRAME_GOAWAY, 0, 0);
  link_put_u32(out + LINK_FRAME_HEADER_BYTES, last_id);
  link_put_u32(out + LINK_FRAME_HEADER_BYTES + 4, code);
  if (text_len) memcpy(out + LINK_FRAME_HEADER_BYTES + 8, text, text_len);
  return LINK_FRAME_HEADER_BYTES + 8 + text_len;
}

int link_preface_check(const uint8_t *buf, size_t len) {
  static const uint8_t magic[LINK_PREFACE_BYTES] = LINK_PREFACE;
  size_t n = len < LINK_PREFACE_BYTES - 1 ? len : LINK_PREFACE_BYTES - 1;
  if (memcmp(buf, magic, n) != 0) return -EPROTO;
  if (len < LINK_PREFACE_BYTES) return 0;
  return buf[LINK_PREFACE_BYTES - 1] == LINK_VERSION ? 1 : -EPROTONOSUPPORT;
}

long link_msg_next(const uint8_t *buf, size_t len, uint32_t max_message, const uint8_t **msg,
                   uint32_t *msg_len) {
  if (len < 4) return 0;
  uint32_t n = link_get_u32(buf);
  if (n > max_message) return -EMSGSIZE;
  if (len - 4 < n) return 0;
  *msg = buf + 4;
  *msg_len = n;
  return (long)(4 + (size_t)n);
}
