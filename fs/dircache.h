/* dircache.h - directory caches: tag answers and listings, for tag_ttl,
 * the least recently used dropped beyond their bounds. */
#ifndef OCIFS_DIRCACHE_H
#define OCIFS_DIRCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"

struct tree;
struct dircache;

/* The bounds, 0 meaning none (tree_opts): tag answers kept, listings
 * kept, and the bytes of their names. */
struct dircache_limits {
	size_t tags_max;
	size_t listings_max;
	uint64_t listings_max_bytes;
};

int dircache_new(const struct dircache_limits *lim, struct dircache **out);
void dircache_free(struct dircache *dc);

/* The answer held for reg/repo:tag. 1: fresh, *digest (NULL for "not a
 * tag") and *repo_exists set. 0: none fresh; *digest is the last answer
 * known (stale-if-error; gone once the answer is evicted): a digest, ""
 * for "not a tag" (*repo_exists set), or NULL for none. -ENOMEM. Caller
 * frees *digest. */
int tags_lookup(struct tree *t, const char *reg, const char *repo, const char *tag,
		char **digest, bool *repo_exists);

/* Remember reg/repo:tag -> @digest; NULL records "not a tag" (404), with
 * @repo_exists telling whether the repository is there. Tag "" (never a
 * tag) with NULL records "a namespace, not a repository". */
void tags_store(struct tree *t, const char *reg, const char *repo, const char *tag,
		const char *digest, bool repo_exists);

/* Say "using cached" once per silent period and tag, not per FUSE call. */
bool tags_stale_warning_due(struct tree *t, const char *reg, const char *repo,
			    const char *tag);

/* The catalog (@repo NULL) or a tag list, sorted: the one held, else
 * (@fetch) from the registry, one fetch (all pages) however many threads
 * ask at once; they share its result, failure included. On success *out
 * is a copy the caller releases; -EAGAIN when none is held and !@fetch;
 * -EINTR when the request was interrupted while waiting for another's
 * fetch. A refusal (401/403) is -EACCES, logged once (registry, listing,
 * reason) when it starts. */
int listing(struct tree *t, const char *reg, const char *repo, bool fetch,
	    struct strlist *out);

/* The catalog's names at and below @name ("" for all), as listing() does
 * and from the part of the catalog that covers them: @name's own
 * (regclient_list_catalog() with under), an ancestor's or the whole
 * catalog, whichever is held fresh; else, when @fetch, @name's own
 * part, fetched. The list may hold more names than asked for (callers
 * keep those below @name). */
int catalog_under(struct tree *t, const char *reg, const char *name, bool fetch,
		  struct strlist *out);

/* Does the fresh listing held for @repo (NULL: the catalog) have @name
 * (1) or not (0)? -EAGAIN when none is held fresh. Asks nothing. */
int listing_has(struct tree *t, const char *reg, const char *repo, const char *name);

/* With the part of the catalog that covers @name at hand (see
 * catalog_under(); @fetch: fetched if none is held): is @name a
 * repository (1) or a namespace above one (2), or neither (0)? -errno
 * when no catalog is available. */
int catalog_kind(struct tree *t, const char *reg, const char *name, bool fetch);

/* catalog_kind() that, before saying "no such name", refreshes a catalog
 * older than a second: a repository pushed since must not be ENOENT for
 * the rest of tag_ttl. */
int catalog_kind_current(struct tree *t, const char *reg, const char *name);

#endif
