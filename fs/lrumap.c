/* lrumap.c - hashed table with LRU order and count/byte bounds (lrumap.h). */
#include "lrumap.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define BUCKETS_MIN 64

int lrumap_init(struct lrumap *m, size_t max, uint64_t max_bytes)
{
	memset(m, 0, sizeof(*m));
	m->buckets = calloc(BUCKETS_MIN, sizeof(*m->buckets));
	if (!m->buckets)
		return -ENOMEM;
	m->nbuckets = BUCKETS_MIN;
	m->max = max;
	m->max_bytes = max_bytes;
	/* A per-map seed: the chains a set of names fills differ per mount. */
	if (getrandom(&m->seed, sizeof(m->seed), GRND_NONBLOCK) != sizeof(m->seed))
		m->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)m;
	return 0;
}

void lrumap_release(struct lrumap *m, void (*free_entry)(struct lrumap_node *))
{
	struct lrumap_node *n = m->head;

	while (n) {
		struct lrumap_node *next = n->next;
		free_entry(n);
		n = next;
	}
	free(m->buckets);
	memset(m, 0, sizeof(*m));
}

/* FNV-1a over the parts and their NULs from a seeded basis, then
 * splitmix64's finaliser so that the low bits (the bucket) mix well. */
static uint64_t key_hash(uint64_t seed, const struct lrukey *k, size_t *len)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ seed;
	size_t total = 0;

	for (size_t i = 0; i < k->n; i++) {
		const unsigned char *p = (const unsigned char *)k->part[i];
		do {
			h = (h ^ *p) * 0x100000001b3ULL;
			total++;
		} while (*p++);
	}
	*len = total;
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebULL;
	return h ^ (h >> 31);
}

static bool key_equal(const struct lrumap_node *node, const struct lrukey *k)
{
	const char *s = node->key;

	for (size_t i = 0; i < k->n; i++) {
		size_t l = strlen(k->part[i]) + 1;
		if ((size_t)(s - node->key) + l > node->keylen || memcmp(s, k->part[i], l))
			return false;
		s += l;
	}
	return (size_t)(s - node->key) == node->keylen;
}

int lrumap_node_init(const struct lrumap *m, struct lrumap_node *node, const struct lrukey *k,
		     size_t bytes)
{
	char *p;

	memset(node, 0, sizeof(*node));
	node->hash = key_hash(m->seed, k, &node->keylen);
	node->key = p = malloc(node->keylen);
	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < k->n; i++) {
		size_t l = strlen(k->part[i]) + 1;
		memcpy(p, k->part[i], l);
		p += l;
	}
	node->bytes = bytes + node->keylen;
	return 0;
}

void lrumap_node_release(struct lrumap_node *node)
{
	free(node->key);
	node->key = NULL;
}

const char *lrumap_key_part(const struct lrumap_node *node, size_t i)
{
	const char *s = node->key;

	while (i--)
		s += strlen(s) + 1;
	return s;
}

static struct lrumap_node *find(const struct lrumap *m, const struct lrukey *k)
{
	size_t len;
	uint64_t h = key_hash(m->seed, k, &len);

	for (struct lrumap_node *n = m->buckets[h & (m->nbuckets - 1)]; n; n = n->chain)
		if (n->hash == h && n->keylen == len && key_equal(n, k))
			return n;
	return NULL;
}

static void lru_unlink(struct lrumap *m, struct lrumap_node *n)
{
	if (n->prev)
		n->prev->next = n->next;
	else
		m->head = n->next;
	if (n->next)
		n->next->prev = n->prev;
	else
		m->tail = n->prev;
	n->prev = n->next = NULL;
}

static void lru_push(struct lrumap *m, struct lrumap_node *n)
{
	n->prev = NULL;
	n->next = m->head;
	if (m->head)
		m->head->prev = n;
	else
		m->tail = n;
	m->head = n;
}

struct lrumap_node *lrumap_peek(const struct lrumap *m, const struct lrukey *k)
{
	return find(m, k);
}

struct lrumap_node *lrumap_get(struct lrumap *m, const struct lrukey *k)
{
	struct lrumap_node *n = find(m, k);

	if (n && n != m->head) {
		lru_unlink(m, n);
		lru_push(m, n);
	}
	return n;
}

/* Twice the buckets once there are more entries than buckets; the old
 * ones stay when there is no memory for more. */
static void grow(struct lrumap *m)
{
	size_t nb = m->nbuckets * 2;
	struct lrumap_node **b;

	if (m->n <= m->nbuckets || nb > SIZE_MAX / sizeof(*b) || !(b = calloc(nb, sizeof(*b))))
		return;
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct lrumap_node *n = m->buckets[i];
		while (n) {
			struct lrumap_node *next = n->chain;
			n->chain = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
			n = next;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = nb;
}

void lrumap_add(struct lrumap *m, struct lrumap_node *node)
{
	size_t i = node->hash & (m->nbuckets - 1);

	node->chain = m->buckets[i];
	m->buckets[i] = node;
	lru_push(m, node);
	m->n++;
	m->bytes += node->bytes;
	grow(m);
}

void lrumap_del(struct lrumap *m, struct lrumap_node *node)
{
	struct lrumap_node **pp = &m->buckets[node->hash & (m->nbuckets - 1)];

	while (*pp != node)
		pp = &(*pp)->chain;
	*pp = node->chain;
	node->chain = NULL;
	lru_unlink(m, node);
	m->n--;
	m->bytes -= node->bytes;
}

void lrumap_set_bytes(struct lrumap *m, struct lrumap_node *node, size_t bytes)
{
	m->bytes -= node->bytes;
	node->bytes = bytes + node->keylen;
	m->bytes += node->bytes;
}

struct lrumap_node *lrumap_trim(struct lrumap *m, const struct lrumap_node *keep)
{
	struct lrumap_node *dead = NULL, *n = m->tail;

	while (n && ((m->max && m->n > m->max) || (m->max_bytes && m->bytes > m->max_bytes))) {
		struct lrumap_node *prev = n->prev;
		if (n != keep) {
			lrumap_del(m, n);
			n->next = dead;
			dead = n;
		}
		n = prev;
	}
	return dead;
}
