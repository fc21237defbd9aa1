/* artifacts.h - artifact views by digest, built from verified manifests. */
#ifndef OCIFS_ARTIFACTS_H
#define OCIFS_ARTIFACTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lrumap.h"

struct tree;
struct aview;
struct artifacts;
struct reg_error;

/* A resolved reference and its view. Immutable once published; kept,
 * most recently used first, within artifacts_max and artifacts_max_bytes
 * (tree_opts; the views' memory). Each holder of a pointer beyond
 * artifacts.lock holds a reference (artifact_put() drops it), so eviction
 * frees only one no request is using. */
struct artifact {
	/* artifacts.lock: in the table of artifacts.c, keyed by registry,
	 * repo and digest; its bytes are the memory it holds, views
	 * included, counted against artifacts_max_bytes */
	struct lrumap_node node;
	unsigned refs;		/* artifacts.lock */
	bool evicted;		/* artifacts.lock: out of the table, freed at refs 0 */
	char *registry, *repo;
	char *digest;		/* what the reference resolved to */
	struct aview *v;
	/* The legacy fallback binary, found on first use (serve.c);
	 * artifacts.lock: use artifact_fallback_*(). */
	bool fallback_done;
	int fallback_err;
	char *fallback_path;	/* below the cache root */
	struct aview *layout;	/* artifacts.lock: artifact_layout() */
};

/* Keep at most @max artifacts and @max_bytes of their memory, parsed
 * views and layouts included (0: unbounded). */
int artifacts_new(size_t max, uint64_t max_bytes, struct artifacts **out);
void artifacts_free(struct artifacts *as);

/* The artifact for repo@digest: from memory, the blob cache, or the
 * registry (verified against the digest). 0 and *out (a reference: drop
 * it with artifact_put()), or -errno. */
int artifact_by_digest(struct tree *t, const char *reg, const char *repo,
		       const char *digest, struct artifact **out);

/* Drop a reference taken by artifact_by_*() (NULL: nothing). */
void artifact_put(struct tree *t, struct artifact *a);

/* Resolve repo:tag. Returns 1 with *out (a reference) for a tag, 0 when the registry
 * says there is no such tag (*repo_exists tells whether the repository
 * is there), or -errno. Other failures are logged; a refusal (-EACCES) is
 * logged at debug level only, its reason in @why (message empty when
 * there is nothing to say), for the caller to log if it is final. A
 * registry that cannot be reached is answered from the last known digest
 * (stale-if-error). Seed 002: "0.0.1" resolves to "0.0.1-linux-amd64" on
 * linux/amd64 where the registry has no plain "0.0.1". */
int artifact_by_tag_or_platform_tag(struct tree *t, const char *reg, const char *repo,
				    const char *tag, struct artifact **out, bool *repo_exists,
				    struct reg_error *why);

/* The complete OCI image layout of @a, every platform (artifact.h),
 * built on first use: reads every platform's manifest of an index (from
 * the cache, else the registry), no config or layer. 0 and *out
 * (owned by @a, valid while its reference is held), or -errno. */
int artifact_layout(struct tree *t, struct artifact *a, const struct aview **out);

/* What the caches say of repo:ref (tag or digest) without asking: 1 an
 * artifact, 0 not one, -EAGAIN unknown. */
int artifact_known(struct tree *t, const char *reg, const char *repo, const char *ref);

/* The fallback's outcome when known: true, with *err and (on 0) @out. */
bool artifact_fallback_known(struct tree *t, struct artifact *a, int *err, char *out,
			     size_t len);

/* Remember the fallback's outcome (the first one stored wins). */
void artifact_fallback_remember(struct tree *t, struct artifact *a, int err, const char *path);

#endif
