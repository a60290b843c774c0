/* An intrusive hash map keyed by byte strings (chained, power-of-two buckets,
 * grows at load factor 1). The entry embeds a struct hmap_node; the key bytes
 * belong to the entry and must stay put while it is in the map. */
#ifndef TERN_HMAP_H
#define TERN_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct hmap_node {
	struct hmap_node *next;
	uint64_t hash;
	const char *key;
	size_t klen;
};

struct hmap {
	struct hmap_node **buckets;
	size_t nbuckets; /* 0 or a power of two */
	size_t count;
};

/* FNV-1a, 64 bits: fast for short names, and the map is not exposed to
 * adversarial collisions beyond what a bounded chain walk tolerates. */
uint64_t hmap_hash(const char *key, size_t klen);

void hmap_init(struct hmap *m);
/* Frees the bucket array; asserts the map is empty (entries are the owner's). */
void hmap_destroy(struct hmap *m);
/* Returns the node with this key or NULL. */
struct hmap_node *hmap_get(const struct hmap *m, const char *key, size_t klen);
/* Inserts n under (key, klen), which must not be present. Returns 0 or
 * TERN_EINTERNAL when growing fails (the map is then unchanged). */
int hmap_put(struct hmap *m, struct hmap_node *n, const char *key, size_t klen);
/* Unlinks n, which must be in the map. */
void hmap_del(struct hmap *m, struct hmap_node *n);
/* Iteration: i starts at 0; returns NULL at the end. Not safe against puts. */
struct hmap_node *hmap_next(const struct hmap *m, size_t *bucket, struct hmap_node *prev);

#endif
