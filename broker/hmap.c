#include "hmap.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "tern_err.h"

uint64_t hmap_hash(const char *key, size_t klen)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < klen; i++) {
		h ^= (unsigned char)key[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

void hmap_init(struct hmap *m) { memset(m, 0, sizeof(*m)); }

void hmap_destroy(struct hmap *m)
{
	assert(m->count == 0);
	free(m->buckets);
	m->buckets = NULL;
	m->nbuckets = 0;
}

struct hmap_node *hmap_get(const struct hmap *m, const char *key, size_t klen)
{
	if (m->nbuckets == 0)
		return NULL;
	uint64_t h = hmap_hash(key, klen);
	for (struct hmap_node *n = m->buckets[h & (m->nbuckets - 1)]; n; n = n->next)
		if (n->hash == h && n->klen == klen && memcmp(n->key, key, klen) == 0)
			return n;
	return NULL;
}

static int grow(struct hmap *m)
{
	size_t nb = m->nbuckets ? m->nbuckets * 2 : 16;
	struct hmap_node **b = calloc(nb, sizeof(*b));
	if (!b)
		return TERN_EINTERNAL;
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct hmap_node *n = m->buckets[i], *next;
		for (; n; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = nb;
	return 0;
}

int hmap_put(struct hmap *m, struct hmap_node *n, const char *key, size_t klen)
{
	if (m->count >= m->nbuckets && grow(m) != 0)
		return TERN_EINTERNAL;
	n->hash = hmap_hash(key, klen);
	n->key = key;
	n->klen = klen;
	size_t i = n->hash & (m->nbuckets - 1);
	n->next = m->buckets[i];
	m->buckets[i] = n;
	m->count++;
	return 0;
}

void hmap_del(struct hmap *m, struct hmap_node *n)
{
	struct hmap_node **pp = &m->buckets[n->hash & (m->nbuckets - 1)];
	while (*pp != n) {
		assert(*pp != NULL);
		pp = &(*pp)->next;
	}
	*pp = n->next;
	n->next = NULL;
	m->count--;
}

struct hmap_node *hmap_next(const struct hmap *m, size_t *bucket, struct hmap_node *prev)
{
	if (prev && prev->next)
		return prev->next;
	size_t i = prev ? *bucket + 1 : *bucket;
	for (; i < m->nbuckets; i++) {
		if (m->buckets[i]) {
			*bucket = i;
			return m->buckets[i];
		}
	}
	*bucket = i;
	return NULL;
}
