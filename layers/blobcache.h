/* blobcache.h - the digest-addressed, verified blob store.
 *
 * Layout under the cache root, as in an OCI image layout:
 *   blobs/sha256/<hex>   verified content, never partial
 *   extract/sha256/<hex> the archive blob <hex>, extracted (see tarx.h)
 *   tmp/                 downloads in progress; emptied by blobcache_new()
 *
 * Everything is private to the user: directories 0700, blobs 0400, and a
 * layout that others could write is refused (blobcache_check()). A blob
 * enters blobs/ only by rename(2) after its SHA-256 matched and its bytes
 * were fsync()ed (the directory too, after), so a crash at any point, the
 * machine's included, leaves a valid cache: a blob found there is a
 * regular file of ours of the right size, trusted without hashing it
 * again. An extracted tree is synced when the cache is freed; one a
 * crashed process left unsynced is removed at the next start (its blob
 * is durable: it is extracted again). Concurrent opens of one cold blob
 * share a single download
 * ("single flight"). Bytes that fail verification are fetched again, from
 * the next source or, from the last one, up to 3 times with backoff.
 */
#ifndef OCIFS_BLOBCACHE_H
#define OCIFS_BLOBCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <time.h>

#include "client.h"	/* reg_sink_fn */
#include "tarx.h"

struct blobcache;

#define BLOBCACHE_READONLY 1u	/* inspect or prune only: no tmp session */

/* Create (mkdir -p) the layout under @root, clear what crashed processes
 * left in tmp/ and start our own tmp/ session (a locked subdirectory, so
 * mounts may share a cache). Returns 0 and *out, or -errno. Free with
 * blobcache_free(). */
int blobcache_new(const char *root, unsigned flags, struct blobcache **out);
void blobcache_free(struct blobcache *bc);

/* The cache must be private to us: its root and the layout's directories
 * are ours and writable by no one else, and the directories above the
 * root are root's or ours, writable by no one else unless sticky (as
 * OpenSSH's StrictModes). blobcache_new() refuses anything else with
 * -EPERM (or -ENOTDIR); this says why, naming the path and the fix, in
 * @why. Returns 0 or that -errno. */
int blobcache_check(const char *root, char *why, size_t len);

/* Produces the blob's bytes by calling @sink; returns 0 or -errno. Sets
 * *retry when another source could be asked should these bytes prove
 * wrong: the cache then starts over and calls it again. */
typedef int (*blobcache_fetch_fn)(void *arg, reg_sink_fn sink, void *sink_arg, bool *retry);

/* Open @digest ("sha256:<hex>") read-only, downloading it with @fetch when
 * absent. @size is the expected size from the descriptor. Returns an fd
 * the caller closes, or -ENOENT (absent and @fetch NULL), -EBADMSG (digest
 * or size mismatch: nothing is kept), or the fetch error. */
int blobcache_open(struct blobcache *bc, const char *digest, uint64_t size,
		   blobcache_fetch_fn fetch, void *arg);

/* Bytes that fail verification and came from the last source there is
 * (the origin, a flipped bit in transit, a proxy's bad cache) are fetched
 * again this many times; before the @n-th time (from 1) wait with
 * blobcache_refetch_wait(): 100 ms doubling each time, up to 50 % jitter.
 * blobcache_open() does so itself; callers verifying other bytes
 * (manifests by tag) use the same policy. */
#define BLOBCACHE_REFETCH_MAX 3
void blobcache_refetch_wait(int n);

/* Store @len bytes that must hash to @digest (manifests). A
 * mismatch is -EBADMSG. Storing an existing blob is a no-op. */
int blobcache_put(struct blobcache *bc, const char *digest, const void *buf, size_t len);

/* Read a whole cached blob of at most @max bytes into a malloc'd buffer
 * (NUL-terminated), checking that it hashes to @digest (manifests: small);
 * one that does not is dropped: -ENOENT, as when absent. */
int blobcache_read_all(struct blobcache *bc, const char *digest, size_t max,
		       char **out, size_t *out_len);

/* sha256:<hex> of @len bytes, into @out (72 bytes). */
void blobcache_digest_of(const void *buf, size_t len, char out[72]);

/* Bound the cache to @max_bytes (0: unbounded), blobs and extracted trees
 * together: after each download or extraction the least recently used
 * blobs that are not pinned are evicted with their trees. */
void blobcache_set_max(struct blobcache *bc, uint64_t max_bytes);

/* A caller that waits on another thread's download or extraction of the
 * same blob asks @cancelled, on its own thread, about once a second, and
 * leaves with -EINTR when it says so; the download goes on for the
 * others. Set before the cache is shared between threads. */
void blobcache_set_cancel(struct blobcache *bc, bool (*cancelled)(void));

/* Pin @digest while a reader has it open (counted); pinned blobs are
 * never evicted. */
void blobcache_pin(struct blobcache *bc, const char *digest);
void blobcache_unpin(struct blobcache *bc, const char *digest);

/* Evict unpinned blobs (with their trees) used before @older_than (0: no
 * age limit), then least recently used ones while blobs and trees exceed
 * @max_bytes (0: no size limit). Counts what went into *files and *bytes
 * (may be NULL). */
int blobcache_prune(struct blobcache *bc, uint64_t max_bytes, time_t older_than,
		    uint64_t *files, uint64_t *bytes);

struct blobcache_info {
	uint64_t blobs, bytes;	/* in blobs/sha256 */
	uint64_t extracted;	/* archives in extract/sha256 */
	uint64_t extracted_bytes;	/* the disk space they take */
	time_t oldest, newest;	/* last uses */
};
int blobcache_info(struct blobcache *bc, struct blobcache_info *out);

/* The number of downloads started since creation (tests, stats). */
uint64_t blobcache_downloads(struct blobcache *bc);

/* Make sure archive blob @digest is extracted at extract/sha256/<hex>/
 * below the root (fetching the blob first when needed). Concurrent calls
 * share one extraction; a refused archive stays refused (-EPERM, -EFBIG,
 * -EINVAL, with @err saying which entry and why) for this cache's life.
 * The tree counts toward the cache's bound, so it is limited to that too,
 * and may be evicted once nothing has it pinned: callers that find it
 * gone (-ESTALE from blobcache_extracted_open()) call this again. */
int blobcache_extract(struct blobcache *bc, const char *digest, uint64_t size,
		      blobcache_fetch_fn fetch, void *arg, const struct tarx_limits *lim,
		      struct tarx_error *err);

/* Is archive blob @digest extracted, a tree of ours, now? (A cheap check
 * before blobcache_extract(), which may wait for a download.) */
bool blobcache_extracted(struct blobcache *bc, const char *digest);

/* Open @rel ("" for the top) inside the extracted tree of @digest, for
 * openat() @flags (O_PATH | O_NOFOLLOW to lstat, O_DIRECTORY to list).
 * Symbolic links inside are followed only while they stay inside
 * (openat2 RESOLVE_BENEATH; before Linux 5.6 none is followed). Returns
 * an fd the caller closes, -ESTALE when no tree of ours is there (evicted:
 * extract it again), -EXDEV for a link that leads out, or another -errno. */
int blobcache_extracted_open(struct blobcache *bc, const char *digest, const char *rel,
			     int flags);

/* The cache root as a directory fd, for *at() calls; borrowed. */
int blobcache_root_fd(struct blobcache *bc);

/* Print the version of OpenSSL's libcrypto in use. */
void blobcache_print_versions(FILE *f);

#endif
