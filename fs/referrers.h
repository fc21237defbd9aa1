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
#include <stddef.h>

struct tree;
struct manifest;
struct referrers;

#define REFERRERS_REGISTRIES_MAX 64	/* registries remembered without the API */

int referrers_new(struct referrers **out);
void referrers_free(struct referrers *rs);

/* The OCI 1.1 referrers index of @reg/@repo@@digest, of every artifact
 * type (callers check each entry's artifact_type). 0 and *out (an index;
 * none: no entries; caller frees with manifest_free()), *via says which
 * source answered (static), or -errno. */
int referrers_index(struct tree *t, const char *reg, const char *repo, const char *digest,
		    struct manifest **out, const char **via);

#define REFERRERS_MAX 256	/* referrers listed per artifact */
#define REFERRERS_CACHED 128	/* artifacts whose referrers are kept */

struct referrer {
	char digest[72];
	char type[256];		/* artifactType, else the first layer's (or the
				 * manifest's) media type */
	char tag[80];		/* cosign's tag it came from, "" for OCI referrers */
};

/* Every referrer of @reg/@repo@@digest: the OCI 1.1 ones and those under
 * cosign's sha256-<hex>.sig/.att/.sbom tags (looked up in the tag list).
 * Kept for tag_ttl. 0 and a copy in *out, *n (caller frees *out), or
 * -errno. */
int referrers_list(struct tree *t, const char *reg, const char *repo, const char *digest,
		   struct referrer **out, size_t *n);

/* /.ocifs/referrers/@sub ("" or "/<registry>/<repo>/<ref>[/<referrer
 * digest>[/<path>]]") into @r: R_REFERRERS for a subject's directory (and
 * the top, with no artifact), or the referrer's R_ARTIFACT, or what the
 * path names above an artifact. 0 or -errno. */
struct resolved;
int referrers_resolve(struct tree *t, const char *sub, unsigned flags, struct resolved *r);

/* The user.oci.referrers value of an artifact directory: a line
 * "<digest> <type>[ <tag>]" per referrer. Length, or -errno; @size 0
 * asks for the length. */
int referrers_xattr(struct tree *t, const char *reg, const char *repo, const char *digest,
		    char *buf, size_t size);

#endif
