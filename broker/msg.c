#include "msg.h"

#include <stdlib.h>
#include <string.h>

struct tern_msg *msg_new(const char *chan, size_t chan_len, const char *name,
			 size_t name_len, const void *data, size_t data_len, int enc)
{
	size_t extra = chan_len + 1 + (name ? name_len + 1 : 0) + data_len + 1;
	struct tern_msg *m = malloc(sizeof(*m) + extra);
	if (!m)
		return NULL;
	memset(m, 0, sizeof(*m));
	char *p = (char *)(m + 1);
	m->refs = 1;
	m->enc = (uint8_t)enc;
	memcpy(p, chan, chan_len);
	p[chan_len] = 0;
	m->chan = p;
	m->chan_len = (uint32_t)chan_len;
	p += chan_len + 1;
	if (name) {
		memcpy(p, name, name_len);
		p[name_len] = 0;
		m->name = p;
		m->name_len = (uint32_t)name_len;
		m->has_name = true;
		p += name_len + 1;
	}
	if (data_len)
		memcpy(p, data, data_len);
	p[data_len] = 0;
	m->data = (unsigned char *)p;
	m->data_len = (uint32_t)data_len;
	return m;
}

void msg_unref(struct tern_msg *m)
{
	if (m && __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(m);
}
