/* A published message: one allocation holding the header, channel, event name
 * and data, shared by reference (the store, every subscriber's frame encoder).
 * Reference counts are atomic because ownership crosses the store thread. */
#ifndef TERN_MSG_H
#define TERN_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tern_enc {
	TERN_ENC_JSON = 0,   /* data is the compact JSON text of the value */
	TERN_ENC_BASE64 = 1, /* data is raw bytes, shown to JSON clients as base64 */
};

#define TERN_MSG_ID_MAX 40

struct tern_msg {
	uint32_t refs;
	uint8_t enc;
	bool has_name;
	uint64_t seq;	/* 0 until the store assigns it */
	int64_t ts_ms;	/* publish time, Unix ms */
	char id[TERN_MSG_ID_MAX];
	const char *chan;
	const char *name;
	const unsigned char *data;
	uint32_t chan_len, name_len, data_len;
};

/* Allocates a message with one reference, copying chan, name (NULL when the
 * publisher gave none) and data. Returns NULL when out of memory. */
struct tern_msg *msg_new(const char *chan, size_t chan_len, const char *name,
			 size_t name_len, const void *data, size_t data_len, int enc);
static inline struct tern_msg *msg_ref(struct tern_msg *m)
{
	__atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
	return m;
}
/* Drops one reference; frees the message with the last one. NULL is a no-op. */
void msg_unref(struct tern_msg *m);

#endif
