/* test_lrumap.c - the hashed LRU table: lookups, order, bounds, growth. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lrumap.h"

struct ent {
	struct lrumap_node node;	/* first: a node is its entry */
	int value;
};

static int freed;

static void ent_free(struct lrumap_node *n)
{
	lrumap_node_release(n);
	free(n);
	freed++;
}

static struct ent *add(struct lrumap *m, const char *a, const char *b, const char *c, int v,
		       size_t bytes)
{
	struct lrukey k = { { a, b, c }, c ? 3 : b ? 2 : 1 };
	struct ent *e = calloc(1, sizeof(*e));

	if (!e || lrumap_node_init(m, &e->node, &k, bytes) < 0) {
		free(e);
		return NULL;
	}
	e->value = v;
	lrumap_add(m, &e->node);
	return e;
}

static int get(struct lrumap *m, const char *a, const char *b, const char *c)
{
	struct lrukey k = { { a, b, c }, c ? 3 : b ? 2 : 1 };
	struct lrumap_node *n = lrumap_get(m, &k);

	return n ? ((struct ent *)n)->value : -1;
}

static void free_chain(struct lrumap_node *n)
{
	while (n) {
		struct lrumap_node *next = n->next;
		ent_free(n);
		n = next;
	}
}

static void test_keys_are_their_parts(void)
{
	struct lrumap m;

	CHECK(lrumap_init(&m, 0, 0) == 0);
	add(&m, "reg", "a", "b", 1, 0);
	add(&m, "reg", "ab", "", 2, 0);
	add(&m, "reg", "a/b", NULL, 3, 0);
	add(&m, "reg", NULL, NULL, 4, 0);
	CHECK(get(&m, "reg", "a", "b") == 1);
	CHECK(get(&m, "reg", "ab", "") == 2);
	CHECK(get(&m, "reg", "a/b", NULL) == 3);
	CHECK(get(&m, "reg", NULL, NULL) == 4);
	CHECK(get(&m, "reg", "a", NULL) == -1);
	CHECK(get(&m, "reg", "a", "") == -1);
	CHECK(get(&m, "re", NULL, NULL) == -1);
	struct lrukey k = { { "reg", "a", "b" }, 3 };
	CHECK_STR(lrumap_key_part(lrumap_peek(&m, &k), 0), "reg");
	CHECK_STR(lrumap_key_part(lrumap_peek(&m, &k), 2), "b");
	CHECK(m.n == 4);
	lrumap_release(&m, ent_free);
}

static void test_count_bound_evicts_least_recently_used(void)
{
	struct lrumap m;
	char name[16];

	CHECK(lrumap_init(&m, 3, 0) == 0);
	for (int i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "t%d", i);
		add(&m, "r", "x", name, i, 0);
	}
	CHECK(get(&m, "r", "x", "t0") == 0);	/* t1 is now the oldest */
	struct ent *e = add(&m, "r", "x", "t3", 3, 0);
	freed = 0;
	free_chain(lrumap_trim(&m, &e->node));
	CHECK(freed == 1);
	CHECK(m.n == 3);
	CHECK(get(&m, "r", "x", "t1") == -1);
	CHECK(get(&m, "r", "x", "t0") == 0 && get(&m, "r", "x", "t2") == 2 &&
	      get(&m, "r", "x", "t3") == 3);
	/* peek leaves the order alone: t0 stays the oldest */
	struct lrukey k = { { "r", "x", "t0" }, 3 };
	CHECK(lrumap_peek(&m, &k) != NULL);
	e = add(&m, "r", "x", "t4", 4, 0);
	free_chain(lrumap_trim(&m, &e->node));
	CHECK(get(&m, "r", "x", "t0") == -1);
	lrumap_release(&m, ent_free);
}

static void test_byte_bound_keeps_the_new_one(void)
{
	struct lrumap m;

	CHECK(lrumap_init(&m, 0, 1000) == 0);
	add(&m, "r", "a", NULL, 1, 400);
	add(&m, "r", "b", NULL, 2, 400);
	CHECK(m.bytes == 800 + 2 * (2 + 2));
	struct ent *big = add(&m, "r", "c", NULL, 3, 5000);
	freed = 0;
	free_chain(lrumap_trim(&m, &big->node));
	CHECK(freed == 2 && m.n == 1);	/* over the bound alone, but kept */
	CHECK(get(&m, "r", "c", NULL) == 3);
	lrumap_set_bytes(&m, &big->node, 10);
	CHECK(m.bytes == 10 + 4);
	add(&m, "r", "d", NULL, 4, 10);
	CHECK(lrumap_trim(&m, NULL) == NULL);
	lrumap_del(&m, &big->node);
	ent_free(&big->node);
	CHECK(m.n == 1 && m.bytes == 14 && get(&m, "r", "c", NULL) == -1);
	lrumap_release(&m, ent_free);
}

static void test_many_entries_grow_the_buckets(void)
{
	struct lrumap m;
	char name[16];
	int missing = 0;

	CHECK(lrumap_init(&m, 0, 0) == 0);
	for (int i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "%d", i);
		add(&m, "reg", "repo", name, i, 0);
	}
	CHECK(m.nbuckets >= 16384);
	for (int i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "%d", i);
		missing += get(&m, "reg", "repo", name) != i;
	}
	CHECK(missing == 0);
	/* delete every other one; the rest stay found */
	for (int i = 0; i < 20000; i += 2) {
		snprintf(name, sizeof(name), "%d", i);
		struct lrukey k = { { "reg", "repo", name }, 3 };
		struct lrumap_node *n = lrumap_peek(&m, &k);
		lrumap_del(&m, n);
		ent_free(n);
	}
	for (int i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "%d", i);
		missing += get(&m, "reg", "repo", name) != (i % 2 ? i : -1);
	}
	CHECK(missing == 0 && m.n == 10000);
	lrumap_release(&m, ent_free);
}

int main(void)
{
	test_keys_are_their_parts();
	test_count_bound_evicts_least_recently_used();
	test_byte_bound_keeps_the_new_one();
	test_many_entries_grow_the_buckets();
	return CHECK_DONE();
}
