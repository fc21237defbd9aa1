/* blobcache_impl.h - what blobcache.c, blobtrees.c (extracted trees) and
 * blobevict.c (pins and eviction) share. Not for users of blobcache.h.
 */
#ifndef OCIFS_BLOBCACHE_IMPL_H
#define OCIFS_BLOBCACHE_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "blobcache.h"

/* A download or extraction in progress. Protected by blobcache.lock. */
struct inflight {
	char key[80];
	bool done;
	int result;
	unsigned waiters;
	pthread_cond_t cond;
	struct inflight *next;
};

/* An archive we refused: remembered so we do not extract it again. */
struct xfail {
	char hex[65];
	int err;
	struct tarx_error why;
	struct xfail *next;
};

/* The disk space of an extracted tree, counted toward cache_max. */
struct xsize {
	char hex[65];
	uint64_t bytes;
	struct xsize *next;
};

/* A blob someone has open: eviction leaves it alone. */
struct pin {
	char hex[65];
	unsigned count;
	struct pin *next;
};

struct blobcache {
	int root_fd;		/* the cache root, all paths relative to it */
	int blobs_fd;		/* blobs/sha256, fsync()ed after each rename into it */
	int extract_fd;		/* extract/sha256, likewise */
	char *root;		/* its absolute path, for libarchive */
	int session_fd;		/* our tmp/ subdirectory, flock()ed while we live */
	char session[64];	/* its path below the root: "tmp/s.XXXXXX" */
	uint64_t max_bytes;	/* 0: unbounded */
	bool (*cancelled)(void);	/* blobcache_set_cancel(); read-only after */
	pthread_mutex_t lock;
	struct xfail *failed;		/* lock */
	struct inflight *inflight;	/* lock */
	struct pin *pins;		/* lock */
	struct xsize *sizes;		/* lock */
	uint64_t downloads;		/* lock */
	unsigned unsynced_trees;	/* lock: extracted, noted in our session */
};

static inline const char *hex_of(const char *digest)
{
	return digest + 7;	/* callers pass validated sha256:<hex> */
}

/* Run @fn once for @key however many threads ask at the same time; a
 * waiter that is cancelled (blobcache_set_cancel()) leaves with -EINTR. */
int blobcache_single_flight(struct blobcache *bc, const char *key, int (*fn)(void *), void *arg);

/* rename @from (below @from_dfd) to @name in @dfd durably: @file_fd (-1:
 * none) synced before, @dfd after. 0 or -errno. */
int blobcache_durable_rename(int from_dfd, const char *from, int file_fd, int dfd,
			     const char *name);

/* A tree extracted but not yet synced is noted in the session directory
 * under this prefix and its hex. */
#define BLOBCACHE_TREE_NOTE "t."

/* blobtrees.c: remove whatever is at extract/sha256/@hex; the disk space
 * of that tree (measured once, remembered); forget it (lock held). */
void blobcache_tree_remove(struct blobcache *bc, const char *hex);
uint64_t blobcache_tree_bytes(struct blobcache *bc, const char *hex);
void blobcache_tree_forget(struct blobcache *bc, const char *hex);

#endif
