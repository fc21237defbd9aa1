/* signatures.h - the -o verify=cosign:KEY policy: which artifacts may be
 * shown. See layers/cosign.h for what verifies.
 *
 * An artifact's signatures are looked for under cosign's tag
 * sha256-<hex>.sig first (one request; cosign's payloads need none, see
 * cosign.h), then among its OCI 1.1 referrers of type
 * application/vnd.dev.cosign.artifact.sig.v1+json or Sigstore bundles
 * (cosign 3's default, cosign_verify_bundle()). Signature manifests
 * and payloads go into the blob cache like any manifest and blob.
 * Verdicts are kept per registry/repository@digest: "verified" for the
 * mount's life, "refused" for tag_ttl (a signature may be pushed later).
 */
#ifndef OCIFS_SIGNATURES_H
#define OCIFS_SIGNATURES_H

struct tree;
struct signatures;
struct cosign_keys;

#define SIG_VERDICTS_MAX 4096	/* verdicts kept */
#define SIG_REFERRERS_MAX 8	/* referrer signature manifests checked */

/* Takes @keys (NULL: no policy, everything is shown). */
int signatures_new(struct cosign_keys *keys, struct signatures **out);
void signatures_free(struct signatures *s);

/* May @reg/@repo@@digest be shown? 0 when there is no policy or one of its
 * signatures verifies; -EKEYREJECTED when none does (one log line, naming
 * @what, what was found and why it failed, per refusal); or the error
 * that kept the signatures from being looked up (registry unreachable:
 * nothing is shown that is not verified). Only manifests and signature
 * payloads are fetched. */
int signatures_check(struct tree *t, const char *reg, const char *repo, const char *digest,
		     const char *what);

#endif
