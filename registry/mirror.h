/* mirror.h - pull-through mirrors of registries, in priority order, with
 * a back-off for those that fail.
 *
 * A spec is "ORIGIN=URL": ORIGIN a registry name as in the tree
 * ("docker.io", "ghcr.io", "127.0.0.1:5000"), URL "http://host[:port]",
 * "https://host[:port]" or a bare "host[:port]" (HTTPS, or plain HTTP
 * first on loopback). Specs for one origin keep their order. Thread-safe.
 */
#ifndef OCIFS_MIRROR_H
#define OCIFS_MIRROR_H

#include <stdbool.h>
#include <stddef.h>

#define MIRRORS_MAX 8	/* per origin */

struct mirror_ep {
	char authority[256];	/* "host[:port]" */
	bool plain;		/* http:// given */
	bool tls;		/* https:// given */
};

struct mirrors;

/* Check one spec; 0 or -EINVAL with *why (static). */
int mirror_spec_check(const char *spec, const char **why);

/* Build the set from NULL-terminated @specs (may be NULL: no mirrors).
 * @backoff is how long a failed mirror is skipped, in seconds. Returns 0
 * or -EINVAL (*why says why) or -ENOMEM. */
int mirrors_new(const char *const *specs, long backoff, struct mirrors **out,
		const char **why);
void mirrors_free(struct mirrors *m);

/* The mirrors of @origin not backing off, best first, copied into @out
 * (at most MIRRORS_MAX). Returns how many. */
size_t mirrors_for(struct mirrors *m, const char *origin, struct mirror_ep *out);

/* Every mirror of every origin (for setting up hosts): like
 * mirrors_for() but ignoring back-off. @i from 0 until it returns false. */
bool mirrors_each(struct mirrors *m, size_t i, struct mirror_ep *out);

/* @authority failed (unreachable, 5xx, timeout): skip it for a while. */
void mirrors_failed(struct mirrors *m, const char *authority);

#endif
