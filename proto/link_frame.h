/* The link's frame codec: pure functions over byte buffers, no I/O, no allocation.
 *
 * Wire format (big endian). After the 8-byte preface (LINK_PREFACE) every byte is a frame:
 *   length u32 | type u8 | flags u8 | reserved u16 (sent 0, ignored) | stream id u32 | payload
 * length is always the payload length, so a reader skips frame types it does not know.
 * Stream ids: the dialer opens odd ids, the acceptor even ones, 0 is the link itself; the top bit
 * is reserved and must be 0.
 *
 *   DATA     stream   a slice of the stream's byte flow; END flag = sender half-closes.
 *                     The byte flow is messages, each a u32 length then that many bytes; frame
 *                     boundaries have nothing to do with message boundaries (gRPC's framing).
 *   HEADERS  stream   opens a call; payload is a tern.link.CallHeader.
 *   STATUS   stream   ends a call (sent by the side that accepted it); payload tern.link.Status.
 *   RESET    stream   abandons a stream; payload code u32 (a link_code) | flags u32
 *                     (bit 0: retryable, the call was not processed).
 *   SETTINGS 0        payload tern.link.Settings; ACK flag with an empty payload acknowledges.
 *   PING     0        8 opaque bytes; ACK flag = pong, echoing them.
 *   GOAWAY   0        last accepted stream id u32 | code u32 (a link_code, 0 for a drain) | text
 *                     (<= LINK_GOAWAY_TEXT_MAX). Drain sends it twice: first with 2^31-1, then,
 *                     after the pong of a ping sent with it, with the real last id (gRPC A9).
 *   WINDOW   0/stream increment u32 (1 .. 2^31-1) of the link's or the stream's credit.
 * Only DATA payload counts against the windows. */
#ifndef TERN_LINK_FRAME_H
#define TERN_LINK_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "link_limits.h"

enum link_frame_type {
  LINK_FRAME_DATA = 0,
  LINK_FRAME_HEADERS = 1,
  LINK_FRAME_STATUS = 2,
  LINK_FRAME_RESET = 3,
  LINK_FRAME_SETTINGS = 4,
  LINK_FRAME_PING = 5,
  LINK_FRAME_GOAWAY = 6,
  LINK_FRAME_WINDOW = 7,
};

#define LINK_FLAG_END 0x01u /* DATA: last frame of this direction */
#define LINK_FLAG_ACK 0x01u /* SETTINGS, PING: acknowledgement */
#define LINK_RESET_RETRYABLE 0x01u
#define LINK_STREAM_ID_MAX 0x7fffffffu
#define LINK_WINDOW_INC_MAX 0x7fffffffu

typedef struct link_frame {
  uint32_t length;
  uint8_t type;
  uint8_t flags;
  uint32_t stream_id;
  const uint8_t *payload; /* points into the decoded buffer */
} link_frame;

/* Writes a 12-byte frame header at out. */
void link_frame_header_put(uint8_t *out, uint32_t length, uint8_t type, uint8_t flags,
                           uint32_t stream_id);

/* Decodes the frame at the start of buf[0..len). Returns the frame's total size (> 0) and fills
 * *f, 0 when more bytes are needed, -EMSGSIZE when the announced length exceeds max_payload
 * (decided from the header alone, before anything is buffered) or -EPROTO when the header breaks
 * a rule of its type (stream id 0 where a stream is needed, fixed sizes of PING/WINDOW/RESET...).
 * Frames of unknown types decode fine; the caller skips them. */
long link_frame_decode(const uint8_t *buf, size_t len, uint32_t max_payload, link_frame *f);

/* Reads the u32 of a WINDOW frame. Returns 0, or -EPROTO for an increment of 0 or > 2^31-1. */
int link_frame_window(const link_frame *f, uint32_t *increment);
/* Reads a RESET frame's code and flags. Returns 0. */
int link_frame_reset(const link_frame *f, uint32_t *code, uint32_t *flags);
/* Reads a GOAWAY frame; text points into the frame. Returns 0 or -EPROTO. */
int link_frame_goaway(const link_frame *f, uint32_t *last_id, uint32_t *code, const uint8_t **text,
                      size_t *text_len);

/* Encoders of the fixed-layout frames into out (which must hold the returned byte count:
 * 12 + 4, 12 + 8, 12 + 8, 12 + 8 + text_len). Return the number of bytes written. */
size_t link_frame_put_window(uint8_t *out, uint32_t stream_id, uint32_t increment);
size_t link_frame_put_reset(uint8_t *out, uint32_t stream_id, uint32_t code, uint32_t flags);
size_t link_frame_put_ping(uint8_t *out, uint8_t flags, uint64_t opaque);
size_t link_frame_put_goaway(uint8_t *out, uint32_t last_id, uint32_t code, const char *text,
                             size_t text_len);

/* Checks the first bytes a peer sent against the preface. Returns 1 when buf holds the whole
 * preface of our version, 0 while the bytes so far are a prefix of it, -EPROTO when they are not
 * a link (HTTP, TLS, garbage), -EPROTONOSUPPORT for a link of another version. */
int link_preface_check(const uint8_t *buf, size_t len);

/* Finds the next whole message in a stream's byte flow buf[0..len). Returns its total size
 * (4 + *msg_len) with *msg pointing at its bytes, 0 when more bytes are needed, or -EMSGSIZE when
 * the announced size exceeds max_message (decided from the 4-byte prefix alone). */
long link_msg_next(const uint8_t *buf, size_t len, uint32_t max_message, const uint8_t **msg,
                   uint32_t *msg_len);

static inline uint32_t link_get_u32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void link_put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

#endif
