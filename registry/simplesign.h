/* simplesign.h - cosign's signature objects, as JSON.
 *
 * cosign stores a signature as a layer of a "signature manifest": the
 * layer's blob is a simple-signing payload (containers-signature(5), media
 * type COSIGN_PAYLOAD_TYPE), and the layer descriptor's annotation
 * COSIGN_SIG_ANNOTATION holds the base64 signature over the payload bytes.
 * This file only reads the JSON; layers/cosign.c decides what verifies.
 */
#ifndef OCIFS_SIMPLESIGN_H
#define OCIFS_SIMPLESIGN_H

#include <stddef.h>

#define COSIGN_PAYLOAD_TYPE "application/vnd.dev.cosign.simplesigning.v1+json"
#define COSIGN_SIG_ANNOTATION "dev.cosignproject.cosign/signature"
#define COSIGN_CLAIM_TYPE "cosign container image signature"
#define COSIGN_SIG_ARTIFACT_TYPE "application/vnd.dev.cosign.artifact.sig.v1+json"
/* cosign's payloads are ~250 bytes; optional claims may add some. */
#define COSIGN_PAYLOAD_MAX (64u << 10)
#define COSIGN_SIG_MAX 4096	/* base64 characters: RSA-8192 needs 1368 */

/* The critical claims of a payload. Every field is set on success. */
struct simplesign {
	char *type;		/* critical.type */
	char *reference;	/* critical.identity.docker-reference */
	char *digest;		/* critical.image.docker-manifest-digest */
};

/* Parse a payload. Keys match case-insensitively, as cosign's Go decoder
 * matches them ("Docker-manifest-digest" in cosign's own spec), but a key
 * that matches twice is refused. Returns 0, -EINVAL with *why (static) or
 * -ENOMEM. Release with simplesign_release(). */
int simplesign_parse(const void *buf, size_t len, struct simplesign *out, const char **why);
void simplesign_release(struct simplesign *s);

/* cosign 3's default: a Sigstore bundle, attached as an OCI referrer,
 * holding a DSSE envelope over an in-toto statement whose subject is the
 * image digest. */
#define SIGSTORE_BUNDLE_TYPE "application/vnd.dev.sigstore.bundle.v0.3+json"
#define COSIGN_SIGN_PREDICATE "https://sigstore.dev/cosign/sign/v1"
#define BUNDLE_MAX (1u << 20)	/* certificates and log entries included */
#define DSSE_SIGS_MAX 8

/* The DSSE envelope of a bundle: base64 strings, as found. */
struct dsse {
	char *payload_type;
	char *payload;			/* base64 */
	char *sigs[DSSE_SIGS_MAX];	/* base64 */
	size_t n_sigs;
};

/* Parse a bundle's dsseEnvelope. 0, -EINVAL with *why (static; also for
 * a bundle that holds a messageSignature instead) or -ENOMEM. Release
 * with dsse_release(). */
int bundle_dsse_parse(const void *buf, size_t len, struct dsse *out, const char **why);
void dsse_release(struct dsse *d);

/* Does in-toto statement @buf have @predicate_type and a subject with
 * sha256 digest @hex? 1 yes, 0 no (*why says which), -EINVAL malformed. */
int intoto_names(const void *buf, size_t len, const char *predicate_type, const char *hex,
		 const char **why);

/* The string value of annotation @key in @annotations (the compact JSON
 * object text of struct descriptor). 0 and *out (caller frees), -ENODATA
 * when absent or not a string, -EINVAL for bad JSON, -ENOMEM. */
int annotation_get(const char *annotations, const char *key, char **out);

#endif
