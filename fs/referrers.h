/* referrers.h - what refers to an artifact: OCI 1.1 referrers (signatures,
 * SBOMs, attestations pushed with a "subject") and cosign's tags.
 *
 * The referrers API (GET /v2/<repo>/referrers/<digest>) answers in one
 * request; a registry without it (404, as docker-registry 2.8) is
 * remembered, and its referrers come from the distribution-spec's
 * tag-schema fallback: the tag sha256-<hex> holding an index of them.
 */
#ifndef OCIFS_REFERRERS_H
#define OCIFS_REFERRERS_H

#include <stdbool.h>

struct tree;
struct manifest;
struct referrers;

#define REFERRERS_REGISTRIES_MAX 64	/* registries remembered without the API */

int referrers_new(struct referrers **out);
void referrers_free(struct referrers *rs);

/* The OCI 1.1 referrers index of @reg/@repo@@digest, asking the API to
 * filter by @artifact_type (NULL: all; a registry may not filter, nor
 * does the fallback: callers check each entry's artifact_type). 0 and
 * *out (an index; none: no entries; caller frees with manifest_free()),
 * *via says which source answered (static), or -errno. */
int referrers_index(struct tree *t, const char *reg, const char *repo, const char *digest,
		    const char *artifact_type, struct manifest **out, const char **via);

#endif
