/* cosign.h - cosign signatures checked against public keys (-o verify=cosign:KEY).
 *
 * What verifies, as `cosign verify --key` decides it: a layer of a
 * signature manifest whose media type is COSIGN_PAYLOAD_TYPE, whose
 * annotation COSIGN_SIG_ANNOTATION is a base64 signature over the layer's
 * bytes (the simple-signing payload) made by one of the keys, and whose
 * payload claims critical.type "cosign container image signature",
 * critical.image.docker-manifest-digest = the artifact's digest and
 * critical.identity.docker-reference = the artifact's repository (cosign
 * itself ignores the identity; ocifs refuses a signature copied from
 * another repository).
 *
 * Keys are PKIX PEM public keys ("BEGIN PUBLIC KEY", as `cosign
 * generate-key-pair` and `openssl pkey -pubout` write them):
 *   ECDSA P-256/P-384/P-521  ASN.1 DER signature over SHA-256 of the payload
 *   RSA >= 2048 bits         PKCS #1 v1.5 over SHA-256
 *   Ed25519                  pure Ed25519 over the payload (not Ed25519ph)
 *
 * cosign_verify_bundle() checks cosign 3's default format instead.
 *
 * No network here: payload blobs come through a callback, and most never
 * need it: cosign writes its payload deterministically, so the bytes it
 * would have written for this artifact are tried first, and used when
 * they hash to the layer's digest (content addressing makes them as good
 * as fetched). Keyless signatures (Fulcio certificates, Rekor) are not
 * checked: a layer verifies only by a configured key.
 */
#ifndef OCIFS_COSIGN_H
#define OCIFS_COSIGN_H

#include <stdbool.h>
#include <stddef.h>

#include "manifest.h"

#define COSIGN_KEYS_MAX 64		/* -o verify= options */
#define COSIGN_KEYFILE_MAX (64u << 10)	/* bytes of one PEM file */
#define COSIGN_FETCH_MAX 16		/* payload blobs fetched per manifest */
#define COSIGN_WHY_MAX 512

struct cosign_keys;

/* Load the PEM public keys at @paths (@n of them). 0 and *out (free with
 * cosign_keys_free()), or -errno with @why (@whylen bytes) naming the file
 * and what is wrong with it. */
int cosign_keys_load(const char *const *paths, size_t n, struct cosign_keys **out, char *why,
		     size_t whylen);
void cosign_keys_free(struct cosign_keys *k);
size_t cosign_keys_count(const struct cosign_keys *k);
/* "ECDSA P-256 key /etc/ocifs/release.pub"; borrowed. */
const char *cosign_key_name(const struct cosign_keys *k, size_t i);

/* 0 when base64 @b64sig is a signature over @payload by one of the keys
 * (*which = its index, may be NULL), -EACCES when none verifies, -EINVAL
 * when @b64sig is not base64 or too long. */
int cosign_verify_signature(const struct cosign_keys *k, const void *payload, size_t len,
			    const char *b64sig, size_t *which);

/* 0 when @payload claims what an artifact at @registry/@repo (the tree's
 * names: "docker.io", "library/ubuntu") with manifest @digest needs, else
 * -EACCES (or -EINVAL for a malformed payload) with @why saying which
 * claim is off. */
int cosign_check_claims(const void *payload, size_t len, const char *registry, const char *repo,
			const char *digest, char *why, size_t whylen);

/* The payload cosign writes for (@registry, @repo, @digest), variant @i
 * (0: "optional":null, 1: "optional":{}). Returns its length, written to
 * @buf, or -ENOENT when there is no variant @i, -ENOSPC when @size is too
 * small. */
int cosign_payload_predict(const char *registry, const char *repo, const char *digest, unsigned i,
			   char *buf, size_t size);

/* Fetch payload blob @d ("sha256:" verified, at most COSIGN_PAYLOAD_MAX
 * bytes) into a malloc'd buffer the caller frees. 0 or -errno. */
typedef int (*cosign_fetch_fn)(void *arg, const struct descriptor *d, char **buf, size_t *len);

struct cosign_outcome {
	size_t key;		/* the key that verified */
	char layer[72];		/* the payload layer that verified */
	unsigned signatures;	/* payload layers seen */
	unsigned fetched;	/* payload blobs fetched */
	char why[COSIGN_WHY_MAX];	/* what was found, why nothing verified */
};

/* Check signature manifest @sig for the artifact @registry/@repo@@digest.
 * 0 when a layer verifies; -EACCES when none does (out->why says what was
 * found and why each failed); a fetch error (not -EACCES: -EIO,
 * -EHOSTUNREACH, ...) when a payload that might have verified could not be
 * fetched. @out is always written. */
int cosign_verify_manifest(const struct cosign_keys *k, const struct manifest *sig,
			   const char *registry, const char *repo, const char *digest,
			   cosign_fetch_fn fetch, void *arg, struct cosign_outcome *out);

/* cosign 3's default format: Sigstore bundle @bundle (SIGSTORE_BUNDLE_TYPE)
 * whose DSSE envelope is signed by one of the keys (*which) and holds an
 * in-toto statement of predicate COSIGN_SIGN_PREDICATE with @digest as a
 * subject. The statement names no repository, and the bundle's
 * transparency-log entries and certificates are not checked (keys only).
 * 0, -EACCES or -EINVAL with @why, -ENOMEM. */
int cosign_verify_bundle(const struct cosign_keys *k, const void *bundle, size_t len,
			 const char *digest, size_t *which, char *why, size_t whylen);

#endif
