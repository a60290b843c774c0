/* The intrusive hash map and list. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "list.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct entry {
	struct hmap_node node;
	int value;
	int seen;
	size_t klen;
	char key[24];
};

static struct entry *entry_of(struct hmap_node *n)
{
	return n ? container_of(n, struct entry, node) : NULL;
}

static struct entry *lookup(const struct hmap *m, const char *key, size_t klen)
{
	return entry_of(hmap_get(m, key, klen));
}

static void hmap_empty_map(void **state)
{
	(void)state;
	struct hmap m;
	hmap_init(&m);
	assert_int_equal(m.count, 0);
	assert_null(hmap_get(&m, "a", 1));
	assert_null(hmap_get(&m, "", 0));
	size_t b = 0;
	assert_null(hmap_next(&m, &b, NULL));
	hmap_destroy(&m);
}

static void hmap_put_get_del(void **state)
{
	(void)state;
	struct hmap m;
	struct entry a = {.value = 1}, b = {.value = 2}, ab = {.value = 3}, e = {.value = 4},
		     nul = {.value = 5};
	hmap_init(&m);
	assert_int_equal(hmap_put(&m, &a.node, "a", 1), 0);
	assert_int_equal(hmap_put(&m, &b.node, "b", 1), 0);
	assert_int_equal(hmap_put(&m, &ab.node, "ab", 2), 0);
	assert_int_equal(hmap_put(&m, &e.node, "", 0), 0);
	/* Keys are byte strings: embedded NUL and length matter. */
	assert_int_equal(hmap_put(&m, &nul.node, "a\0b", 3), 0);
	assert_int_equal(m.count, 5);
	assert_ptr_equal(lookup(&m, "a", 1), &a);
	assert_ptr_equal(lookup(&m, "b", 1), &b);
	assert_ptr_equal(lookup(&m, "ab", 2), &ab);
	assert_ptr_equal(lookup(&m, "abc", 2), &ab); /* only klen bytes count */
	assert_ptr_equal(lookup(&m, "", 0), &e);
	assert_ptr_equal(lookup(&m, "a\0b", 3), &nul);
	assert_null(lookup(&m, "a\0c", 3));
	assert_null(lookup(&m, "A", 1));
	assert_null(lookup(&m, "abc", 3));

	hmap_del(&m, &a.node);
	assert_int_equal(m.count, 4);
	assert_null(lookup(&m, "a", 1));
	assert_ptr_equal(lookup(&m, "ab", 2), &ab);
	assert_ptr_equal(lookup(&m, "a\0b", 3), &nul);
	/* Reinserting under the same key works. */
	assert_int_equal(hmap_put(&m, &a.node, "a", 1), 0);
	assert_ptr_equal(lookup(&m, "a", 1), &a);

	hmap_del(&m, &a.node);
	hmap_del(&m, &b.node);
	hmap_del(&m, &ab.node);
	hmap_del(&m, &e.node);
	hmap_del(&m, &nul.node);
	assert_int_equal(m.count, 0);
	hmap_destroy(&m);
	assert_null(m.buckets);
}

static void hmap_hash_is_fnv1a(void **state)
{
	(void)state;
	/* FNV-1a 64 reference values. */
	assert_int_equal(hmap_hash("", 0), 0xcbf29ce484222325ULL);
	assert_int_equal(hmap_hash("a", 1), 0xaf63dc4c8601ec8cULL);
	assert_int_equal(hmap_hash("foobar", 6), 0x85944171f73967e8ULL);
	assert_int_not_equal(hmap_hash("a\0", 2), hmap_hash("a", 1));
}

/* Walks the whole map, marking entries; returns how many nodes were visited. */
static size_t walk(const struct hmap *m)
{
	size_t bucket = 0, n = 0;
	for (struct hmap_node *it = hmap_next(m, &bucket, NULL); it;
	     it = hmap_next(m, &bucket, it)) {
		entry_of(it)->seen++;
		n++;
	}
	return n;
}

static void hmap_many_keys_growth_iterate(void **state)
{
	(void)state;
	enum { COUNT = 20000 };
	struct entry *es = calloc(COUNT, sizeof(*es));
	assert_non_null(es);
	struct hmap m;
	hmap_init(&m);
	size_t prev_buckets = 0, growths = 0;
	for (int i = 0; i < COUNT; i++) {
		struct entry *e = &es[i];
		e->klen = (size_t)snprintf(e->key, sizeof(e->key), "chan:%d", i);
		e->value = i;
		assert_int_equal(hmap_put(&m, &e->node, e->key, e->klen), 0);
		assert_int_equal(m.count, (size_t)i + 1);
		/* Power-of-two buckets, load factor at most 1. */
		assert_true(m.nbuckets >= m.count);
		assert_int_equal(m.nbuckets & (m.nbuckets - 1), 0);
		if (m.nbuckets != prev_buckets) {
			growths++;
			prev_buckets = m.nbuckets;
		}
	}
	assert_true(growths >= 10);
	for (int i = 0; i < COUNT; i++) {
		char key[24];
		size_t kl = (size_t)snprintf(key, sizeof(key), "chan:%d", i);
		struct entry *e = lookup(&m, key, kl);
		assert_non_null(e);
		assert_int_equal(e->value, i);
	}
	assert_null(lookup(&m, "chan:20000", 10));

	/* Iteration visits every entry exactly once. */
	assert_int_equal(walk(&m), COUNT);
	for (int i = 0; i < COUNT; i++)
		assert_int_equal(es[i].seen, 1);

	/* Delete the odd ones; the even ones stay reachable. */
	for (int i = 1; i < COUNT; i += 2)
		hmap_del(&m, &es[i].node);
	assert_int_equal(m.count, COUNT / 2);
	for (int i = 0; i < COUNT; i++) {
		struct entry *e = lookup(&m, es[i].key, es[i].klen);
		if (i % 2)
			assert_null(e);
		else
			assert_ptr_equal(e, &es[i]);
		es[i].seen = 0;
	}
	assert_int_equal(walk(&m), COUNT / 2);
	for (int i = 0; i < COUNT; i++)
		assert_int_equal(es[i].seen, i % 2 ? 0 : 1);

	/* Drain the way store_free does: restart from the first node each time. */
	size_t b = 0, drained = 0;
	struct hmap_node *n;
	while ((n = hmap_next(&m, &b, NULL)) != NULL) {
		hmap_del(&m, n);
		drained++;
	}
	assert_int_equal(drained, COUNT / 2);
	assert_int_equal(m.count, 0);
	hmap_destroy(&m);
	free(es);
}

static void hmap_colliding_buckets(void **state)
{
	(void)state;
	/* More keys than buckets at the start share chains; deleting from the
	 * middle and the head of a chain keeps the others. */
	struct entry es[16];
	struct hmap m;
	hmap_init(&m);
	for (int i = 0; i < 16; i++) {
		es[i].klen = (size_t)snprintf(es[i].key, sizeof(es[i].key), "k%d", i);
		assert_int_equal(hmap_put(&m, &es[i].node, es[i].key, es[i].klen), 0);
	}
	for (int i = 0; i < 16; i += 3)
		hmap_del(&m, &es[i].node);
	for (int i = 0; i < 16; i++) {
		struct entry *e = lookup(&m, es[i].key, es[i].klen);
		if (i % 3 == 0)
			assert_null(e);
		else
			assert_ptr_equal(e, &es[i]);
	}
	for (int i = 0; i < 16; i++)
		if (i % 3)
			hmap_del(&m, &es[i].node);
	assert_int_equal(m.count, 0);
	hmap_destroy(&m);
}

struct item {
	struct list link;
	int v;
};

static void list_ops(void **state)
{
	(void)state;
	struct list head;
	struct item it[4];
	list_init(&head);
	assert_true(list_empty(&head));
	for (int i = 0; i < 4; i++) {
		it[i].v = i;
		list_insert_tail(&head, &it[i].link);
		assert_true(list_linked(&it[i].link));
	}
	assert_false(list_empty(&head));
	struct list *pos, *tmp;
	int want = 0;
	list_foreach_safe(pos, tmp, &head) {
		assert_int_equal(container_of(pos, struct item, link)->v, want++);
	}
	assert_int_equal(want, 4);
	/* Removing while iterating with the safe form. */
	list_foreach_safe(pos, tmp, &head) {
		struct item *x = container_of(pos, struct item, link);
		if (x->v % 2 == 0)
			list_remove(pos);
	}
	/* Removed links are poisoned. */
	assert_null(it[0].link.next);
	assert_null(it[0].link.prev);
	assert_false(list_linked(&it[0].link));
	assert_false(list_linked(&it[2].link));
	int got[4], n = 0;
	list_foreach_safe(pos, tmp, &head) got[n++] = container_of(pos, struct item, link)->v;
	assert_int_equal(n, 2);
	assert_int_equal(got[0], 1);
	assert_int_equal(got[1], 3);
	assert_ptr_equal(head.prev, &it[3].link);
	list_remove(&it[1].link);
	list_remove(&it[3].link);
	assert_true(list_empty(&head));
	assert_ptr_equal(head.next, &head);
	assert_ptr_equal(head.prev, &head);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(hmap_empty_map),
		cmocka_unit_test(hmap_put_get_del),
		cmocka_unit_test(hmap_hash_is_fnv1a),
		cmocka_unit_test(hmap_many_keys_growth_iterate),
		cmocka_unit_test(hmap_colliding_buckets),
		cmocka_unit_test(list_ops),
	};
	return h_run("hmap", tests, N(tests), argc, argv);
}
