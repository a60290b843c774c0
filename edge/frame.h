/* Outbound frames: encoded once, shared by reference among every session that
 * sends them. The payload sits after LWS_PRE bytes of headroom so lws can put
 * the WebSocket header in front without a copy. lws writes that header into
 * the headroom on every send; it is the same bytes each time (same length,
 * same opcode, no masking from a server), so sharing is safe on one thread. */
#ifndef TERN_FRAME_H
#define TERN_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

struct frame {
	uint32_t refs;
	uint32_t len;  /* payload bytes at data + LWS_PRE */
	uint16_t kind; /* the owner's tag (the edge counts message frames) */
	uint8_t hlen;  /* WebSocket text-frame header right before the payload */
	size_t cap;    /* payload capacity */
	unsigned char data[];
};

/* RFC 6455 section 5.2: a server's header is at most 10 bytes (no mask). */
_Static_assert(LWS_PRE >= 10, "the headroom must hold a WebSocket header");

static inline unsigned char *frame_payload(struct frame *f) { return f->data + LWS_PRE; }
/* The whole WebSocket frame (header + payload), written once by fbuf_finish
 * so every session can send the same bytes as they are. */
static inline unsigned char *frame_wire(struct frame *f) { return f->data + LWS_PRE - f->hlen; }
static inline size_t frame_wire_len(const struct frame *f) { return f->len + f->hlen; }
static inline struct frame *frame_ref(struct frame *f)
{
	f->refs++;
	return f;
}
void frame_unref(struct frame *f);

/* A growable builder whose result becomes a frame without a copy. On an
 * allocation failure the builder remembers it; fbuf_finish then returns NULL. */
struct fbuf {
	struct frame *f;
	int failed;
};

void fbuf_init(struct fbuf *b, size_t hint);
void fbuf_put(struct fbuf *b, const void *p, size_t n);
void fbuf_puts(struct fbuf *b, const char *s);
void fbuf_printf(struct fbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal (quoted, escaped). s must be UTF-8. */
void fbuf_put_jstr(struct fbuf *b, const char *s, size_t n);
/* Returns the frame (one reference) or NULL if any step failed. */
struct frame *fbuf_finish(struct fbuf *b);
/* Drops the builder's frame without finishing it. */
void fbuf_discard(struct fbuf *b);

#endif
