#include "frame.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void frame_unref(struct frame *f)
{
	if (f && --f->refs == 0)
		free(f);
}

static int reserve(struct fbuf *b, size_t more)
{
	if (b->failed)
		return -1;
	struct frame *f = b->f;
	if (f->len + more <= f->cap)
		return 0;
	size_t cap = f->cap * 2;
	while (cap < f->len + more)
		cap *= 2;
	f = realloc(f, sizeof(*f) + LWS_PRE + cap);
	if (!f) {
		b->failed = 1;
		return -1;
	}
	f->cap = cap;
	b->f = f;
	return 0;
}

void fbuf_init(struct fbuf *b, size_t hint)
{
	size_t cap = hint < 64 ? 64 : hint;
	b->failed = 0;
	b->f = malloc(sizeof(*b->f) + LWS_PRE + cap);
	if (!b->f) {
		b->failed = 1;
		return;
	}
	b->f->refs = 1;
	b->f->len = 0;
	b->f->kind = 0;
	b->f->cap = cap;
}

void fbuf_put(struct fbuf *b, const void *p, size_t n)
{
	if (reserve(b, n) != 0)
		return;
	memcpy(frame_payload(b->f) + b->f->len, p, n);
	b->f->len += (uint32_t)n;
}

void fbuf_puts(struct fbuf *b, const char *s) { fbuf_put(b, s, strlen(s)); }

void fbuf_printf(struct fbuf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		b->failed = 1;
		return;
	}
	fbuf_put(b, tmp, (size_t)n);
}

void fbuf_put_jstr(struct fbuf *b, const char *s, size_t n)
{
	/* jansson's encoder does the escaping (RFC 8259 section 7). */
	json_t *j = json_stringn_nocheck(s, n);
	if (!j) {
		b->failed = 1;
		return;
	}
	size_t need = json_dumpb(j, NULL, 0, JSON_ENCODE_ANY);
	if (need == 0 || reserve(b, need) != 0) {
		b->failed = 1;
		json_decref(j);
		return;
	}
	json_dumpb(j, (char *)frame_payload(b->f) + b->f->len, need, JSON_ENCODE_ANY);
	b->f->len += (uint32_t)need;
	json_decref(j);
}

/* Writes the header of an unmasked, final text frame (RFC 6455 5.2) in front
 * of the payload. */
static void seal(struct frame *f)
{
	unsigned char *p = frame_payload(f);
	uint64_t n = f->len;
	if (n < 126) {
		f->hlen = 2;
		p[-1] = (unsigned char)n;
	} else if (n < 65536) {
		f->hlen = 4;
		p[-3] = 126;
		p[-2] = (unsigned char)(n >> 8);
		p[-1] = (unsigned char)n;
	} else {
		f->hlen = 10;
		p[-9] = 127;
		for (int i = 0; i < 8; i++)
			p[-8 + i] = (unsigned char)(n >> (56 - 8 * i));
	}
	p[-(int)f->hlen] = 0x81; /* FIN + text */
}

struct frame *fbuf_finish(struct fbuf *b)
{
	struct frame *f = b->f;
	b->f = NULL;
	if (b->failed) {
		free(f);
		return NULL;
	}
	seal(f);
	return f;
}

void fbuf_discard(struct fbuf *b)
{
	free(b->f);
	b->f = NULL;
}
