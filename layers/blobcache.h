/* blobcache.h - the digest-addressed, verified blob store.
 *
 * Layout under the cache root, as in an OCI image layout:
 *   blobs/sha256/<hex>   verified content, never partial
 *   extract/sha256/<hex> the archive blob <hex>, extracted (see tarx.h)
 *   tmp/                 downloads in progress; emptied by blobcache_new()
 *
 * A blob enters blobs/ only by rename(2) after its SHA-256 matched, so a
 * crash at any point leaves a valid cache. Concurrent opens of one cold
 * blob share a single download ("single flight").
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

/* Store @len bytes that must hash to @digest (manifests). A
 * mismatch is -EBADMSG. Storing an existing blob is a no-op. */
int blobcache_put(struct blobcache *bc, const char *digest, const void *buf, size_t len);

/* Read a whole cached blob of at most @max bytes into a malloc'd buffer. */
int blobcache_read_all(struct blobcache *bc, const char *digest, size_t max,
		       char **out, size_t *out_len);

/* sha256:<hex> of @len bytes, into @out (72 bytes). */
void blobcache_digest_of(const void *buf, size_t len, char out[72]);

/* Bound blobs/ to @max_bytes (0: unbounded): after each download the
 * least recently used blobs that are not pinned are evicted (with their
 * extracted copies). */
void blobcache_set_max(struct blobcache *bc, uint64_t max_bytes);

/* Pin @digest while a reader has it open (counted); pinned blobs are
 * never evicted. */
void blobcache_pin(struct blobcache *bc, const char *digest);
void blobcache_unpin(struct blobcache *bc, const char *digest);

/* Evict unpinned blobs used before @older_than (0: no age limit), then
 * least recently used ones while blobs/ exceeds @max_bytes (0: no size
 * limit). Counts what went into *files and *bytes (may be NULL). */
int blobcache_prune(struct blobcache *bc, uint64_t max_bytes, time_t older_than,
		    uint64_t *files, uint64_t *bytes);

struct blobcache_info {
	uint64_t blobs, bytes;	/* in blobs/sha256 */
	uint64_t extracted;	/* archives in extract/sha256 */
	time_t oldest, newest;	/* last uses */
};
int blobcache_info(struct blobcache *bc, struct blobcache_info *out);

/* The number of downloads started since creation (tests, stats). */
uint64_t blobcache_downloads(struct blobcache *bc);

/* Make sure archive blob @digest is extracted at extract/sha256/<hex>/
 * below the root (fetching the blob first when needed). Concurrent calls
 * share one extraction; a refused archive stays refused (-EPERM, -EFBIG,
 * -EINVAL, with @err saying which entry and why) for this cache's life. */
int blobcache_extract(struct blobcache *bc, const char *digest, uint64_t size,
		      blobcache_fetch_fn fetch, void *arg, const struct tarx_limits *lim,
		      struct tarx_error *err);

/* The cache root as a directory fd, for *at() calls; borrowed. */
int blobcache_root_fd(struct blobcache *bc);

/* Print the version of OpenSSL's libcrypto in use. */
void blobcache_print_versions(FILE *f);

#endif
