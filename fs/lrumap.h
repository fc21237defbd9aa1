/* lrumap.h - a hashed table whose entries are kept most recently used
 * first, within a bound on their count and one on their bytes.
 *
 * Intrusive: the user embeds a struct lrumap_node in its entries and owns
 * them; the map allocates only its buckets (and each node's key, in
 * lrumap_node_init()). Lookups and updates are O(1). There is no lock:
 * the map's user guards it with its own and says which. Keys are one to
 * LRUMAP_PARTS strings (registry, repository, tag), hashed with a seed
 * drawn per map, compared part by part.
 */
#ifndef OCIFS_LRUMAP_H
#define OCIFS_LRUMAP_H

#include <stddef.h>
#include <stdint.h>

#define LRUMAP_PARTS 3

/* A key to look up: @n strings (none NULL). ("a", "b") and ("a/b") differ. */
struct lrukey {
	const char *part[LRUMAP_PARTS];
	size_t n;
};

struct lrumap_node {
	struct lrumap_node *chain;	/* the bucket's next */
	struct lrumap_node *prev, *next;	/* the LRU list, most recent first */
	uint64_t hash;
	char *key;	/* the parts back to back, each NUL-terminated */
	size_t keylen;
	size_t bytes;	/* counted against the map's max_bytes */
};

struct lrumap {
	struct lrumap_node **buckets;
	size_t nbuckets;	/* a power of two */
	struct lrumap_node *head, *tail;
	size_t n;
	uint64_t bytes;		/* the nodes' bytes */
	size_t max;		/* 0: unbounded */
	uint64_t max_bytes;	/* 0: unbounded */
	uint64_t seed;
};

/* An empty map for at most @max entries and @max_bytes (0: unbounded). */
int lrumap_init(struct lrumap *m, size_t max, uint64_t max_bytes);

/* Free every entry still in @m with @free_entry (which must call
 * lrumap_node_release()), then the buckets. */
void lrumap_release(struct lrumap *m, void (*free_entry)(struct lrumap_node *));

/* Give @node the key @k, hashed for @m, and @bytes (its own size; the
 * key's are added): 0 or -ENOMEM. lrumap_node_release() frees the key;
 * it accepts a node whose init failed or never ran (zeroed). */
int lrumap_node_init(const struct lrumap *m, struct lrumap_node *node, const struct lrukey *k,
		     size_t bytes);
void lrumap_node_release(struct lrumap_node *node);

/* Part @i of @node's key (i < the parts it was made with). */
const char *lrumap_key_part(const struct lrumap_node *node, size_t i);

/* The entry for @k, made the most recently used; NULL if none. */
struct lrumap_node *lrumap_get(struct lrumap *m, const struct lrukey *k);

/* The entry for @k, its place left alone; NULL if none. */
struct lrumap_node *lrumap_peek(const struct lrumap *m, const struct lrukey *k);

/* Add @node (initialised, its key not in @m) as the most recently used.
 * Short of memory for more buckets it goes in the ones there are. */
void lrumap_add(struct lrumap *m, struct lrumap_node *node);

/* Take @node out of @m (the caller frees it). */
void lrumap_del(struct lrumap *m, struct lrumap_node *node);

/* @node (in @m) now counts @bytes, its key added. */
void lrumap_set_bytes(struct lrumap *m, struct lrumap_node *node, size_t bytes);

/* While @m is over a bound, take out its least recently used entry, never
 * @keep (NULL: any). Returns the entries taken, chained through ->next,
 * for the caller to free (outside its lock if it likes); NULL if none. */
struct lrumap_node *lrumap_trim(struct lrumap *m, const struct lrumap_node *keep);

#endif
