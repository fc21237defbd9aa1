/* cosign.c - cosign signature verification with OpenSSL EVP. See cosign.h. */
#include "cosign.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blobcache.h"
#include "ref.h"
#include "simplesign.h"

struct cosign_key {
	EVP_PKEY *pkey;
	bool prehash;		/* SHA-256 (ECDSA, RSA); Ed25519 signs the message */
	char name[320];		/* "<type> key <path>" for logs */
};

struct cosign_keys {
	struct cosign_key *v;
	size_t n;
};

/* Append to a fixed buffer, ending in "..." rather than cutting silently. */
static void why_add(char *why, size_t size, const char *fmt, ...)
{
	size_t used = strlen(why);
	va_list ap;
	int n;

	if (used + 4 >= size)
		return;
	va_start(ap, fmt);
	n = vsnprintf(why + used, size - used, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size - used)
		memcpy(why + size - 4, "...", 4);
}

static int read_capped(const char *path, char **out, size_t *len)
{
	char *buf;
	ssize_t n;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	buf = malloc(COSIGN_KEYFILE_MAX + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while ((n = read(fd, buf + got, COSIGN_KEYFILE_MAX + 1 - got)) > 0)
		got += (size_t)n;
	close(fd);
	if (n < 0 || got > COSIGN_KEYFILE_MAX) {
		free(buf);
		return n < 0 ? -EIO : -EFBIG;
	}
	*out = buf;
	*len = got;
	return 0;
}

/* The key's algorithm if ocifs verifies with it, else NULL and *why. */
static const char *key_kind(EVP_PKEY *pkey, bool *prehash, const char **why)
{
	char curve[64] = "";

	*prehash = true;
	switch (EVP_PKEY_get_base_id(pkey)) {
	case EVP_PKEY_EC:
		EVP_PKEY_get_utf8_string_param(pkey, "group", curve, sizeof(curve), NULL);
		if (!strcmp(curve, "prime256v1"))
			return "ECDSA P-256";
		if (!strcmp(curve, "secp384r1"))
			return "ECDSA P-384";
		if (!strcmp(curve, "secp521r1"))
			return "ECDSA P-521";
		*why = "an ECDSA key on a curve other than P-256, P-384 or P-521";
		return NULL;
	case EVP_PKEY_RSA:
		if (EVP_PKEY_get_bits(pkey) < 2048) {
			*why = "an RSA key shorter than 2048 bits";
			return NULL;
		}
		return "RSA";
	case EVP_PKEY_ED25519:
		*prehash = false;
		return "Ed25519";
	default:
		*why = "not an ECDSA, RSA or Ed25519 key";
		return NULL;
	}
}

static int key_load(const char *path, struct cosign_key *key, char *why, size_t whylen)
{
	const char *kind, *reason = "not a PEM public key (BEGIN PUBLIC KEY)";
	char *pem = NULL;
	size_t len = 0;
	BIO *bio;
	int ret = read_capped(path, &pem, &len);

	if (ret < 0) {
		snprintf(why, whylen, "verify=cosign:%s: %s", path,
			 ret == -EFBIG ? "larger than 64 KiB" : strerror(-ret));
		return ret;
	}
	bio = BIO_new_mem_buf(pem, (int)len);
	key->pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	free(pem);
	if (!key->pkey)
		goto out_refused;
	kind = key_kind(key->pkey, &key->prehash, &reason);
	if (!kind)
		goto out_refused;
	snprintf(key->name, sizeof(key->name), "%s key %.256s", kind, path);
	return 0;
out_refused:
	ERR_clear_error();
	EVP_PKEY_free(key->pkey);
	key->pkey = NULL;
	snprintf(why, whylen, "verify=cosign:%s: %s", path, reason);
	return -EINVAL;
}

int cosign_keys_load(const char *const *paths, size_t n, struct cosign_keys **out, char *why,
		     size_t whylen)
{
	struct cosign_keys *k;
	int ret = 0;

	if (n > COSIGN_KEYS_MAX) {
		snprintf(why, whylen, "more than %d verify= keys", COSIGN_KEYS_MAX);
		return -E2BIG;
	}
	k = calloc(1, sizeof(*k));
	if (!k || !(k->v = calloc(n ? n : 1, sizeof(*k->v)))) {
		free(k);
		return -ENOMEM;
	}
	for (; k->n < n; k->n++) {
		ret = key_load(paths[k->n], &k->v[k->n], why, whylen);
		if (ret < 0) {
			cosign_keys_free(k);
			return ret;
		}
	}
	*out = k;
	return 0;
}

void cosign_keys_free(struct cosign_keys *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n; i++)
		EVP_PKEY_free(k->v[i].pkey);
	free(k->v);
	free(k);
}

size_t cosign_keys_count(const struct cosign_keys *k)
{
	return k ? k->n : 0;
}

const char *cosign_key_name(const struct cosign_keys *k, size_t i)
{
	return i < k->n ? k->v[i].name : "?";
}

/* Decode base64 of at most @max_in characters (whitespace allowed, as
 * Go's decoder allows newlines) into @out, of room for inlen/4*3+3. */
static int base64_decode(const char *in, size_t max_in, unsigned char *out, size_t *outlen)
{
	EVP_ENCODE_CTX *ctx;
	size_t inlen = strlen(in);
	int n = 0, fin = 0, ret = -EINVAL;

	if (inlen > max_in)
		return -EINVAL;
	ctx = EVP_ENCODE_CTX_new();
	if (!ctx)
		return -ENOMEM;
	EVP_DecodeInit(ctx);
	if (EVP_DecodeUpdate(ctx, out, &n, (const unsigned char *)in, (int)inlen) >= 0 &&
	    EVP_DecodeFinal(ctx, out + n, &fin) == 1 && n + fin > 0) {
		*outlen = (size_t)(n + fin);
		ret = 0;
	}
	EVP_ENCODE_CTX_free(ctx);
	return ret;
}

static bool key_verifies(const struct cosign_key *key, const void *payload, size_t len,
			 const unsigned char *sig, size_t siglen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = false;

	if (!ctx)
		return false;
	if (EVP_DigestVerifyInit(ctx, NULL, key->prehash ? EVP_sha256() : NULL, NULL,
				 key->pkey) == 1)
		ok = EVP_DigestVerify(ctx, sig, siglen, payload, len) == 1;
	EVP_MD_CTX_free(ctx);
	/* A failed check leaves errors in this thread's queue, where curl's
	 * TLS code would find them later. */
	if (!ok)
		ERR_clear_error();
	return ok;
}

int cosign_verify_signature(const struct cosign_keys *k, const void *payload, size_t len,
			    const char *b64sig, size_t *which)
{
	unsigned char sig[COSIGN_SIG_MAX / 4 * 3 + 3];
	size_t siglen = 0;

	if (base64_decode(b64sig, COSIGN_SIG_MAX, sig, &siglen) < 0)
		return -EINVAL;
	for (size_t i = 0; i < k->n; i++) {
		if (key_verifies(&k->v[i], payload, len, sig, siglen)) {
			if (which)
				*which = i;
			return 0;
		}
	}
	return -EACCES;
}

int cosign_check_claims(const void *payload, size_t len, const char *registry, const char *repo,
			const char *digest, char *why, size_t whylen)
{
	struct simplesign s;
	struct ref r;
	const char *reason = NULL;
	int ret = simplesign_parse(payload, len, &s, &reason);

	if (ret < 0) {
		snprintf(why, whylen, "malformed payload (%s)", reason ? reason : strerror(-ret));
		return ret == -ENOMEM ? ret : -EINVAL;
	}
	ret = -EACCES;
	if (strcmp(s.type, COSIGN_CLAIM_TYPE)) {
		snprintf(why, whylen, "payload type is \"%.64s\", not \"" COSIGN_CLAIM_TYPE "\"",
			 s.type);
		goto out_release;
	}
	if (strcmp(s.digest, digest)) {
		snprintf(why, whylen, "payload is for %.80s", s.digest);
		goto out_release;
	}
	/* ref_parse() normalizes as Docker does, so "index.docker.io/x/y"
	 * names docker.io/x/y; a tag or digest in the identity is ignored. */
	if (ref_parse(s.reference, &r, NULL) < 0) {
		snprintf(why, whylen, "payload identity \"%.128s\" is not a reference",
			 s.reference);
		goto out_release;
	}
	if (strcmp(r.registry, registry) || strcmp(r.repository, repo))
		snprintf(why, whylen, "payload names another repository (%.200s)", s.reference);
	else
		ret = 0;
	ref_release(&r);
out_release:
	simplesign_release(&s);
	return ret;
}

int cosign_payload_predict(const char *registry, const char *repo, const char *digest, unsigned i,
			   char *buf, size_t size)
{
	static const char *const optional[] = { "null", "{}" };
	/* go-containerregistry names Docker Hub "index.docker.io". */
	const char *host = strcmp(registry, "docker.io") ? registry : "index.docker.io";
	int n;

	if (i >= sizeof(optional) / sizeof(optional[0]))
		return -ENOENT;
	n = snprintf(buf, size,
		     "{\"critical\":{\"identity\":{\"docker-reference\":\"%s/%s\"},"
		     "\"image\":{\"docker-manifest-digest\":\"%s\"},"
		     "\"type\":\"" COSIGN_CLAIM_TYPE "\"},\"optional\":%s}",
		     host, repo, digest, optional[i]);
	if (n < 0 || (size_t)n >= size)
		return -ENOSPC;
	return n;
}

/* The payload bytes of layer @d without a request when they are the ones
 * cosign writes for this artifact. */
static bool predicted(const struct descriptor *d, const char *registry, const char *repo,
		      const char *digest, char *buf, size_t size, size_t *len)
{
	char got[72];
	int n;

	for (unsigned i = 0; (n = cosign_payload_predict(registry, repo, digest, i, buf, size)) >= 0;
	     i++) {
		if ((uint64_t)n != d->size)
			continue;
		blobcache_digest_of(buf, (size_t)n, got);
		if (!strcmp(got, d->digest)) {
			*len = (size_t)n;
			return true;
		}
	}
	return false;
}

static const char *short_digest(const char *d, char out[20])
{
	snprintf(out, 20, "%.19s", d);
	return out;
}

/* Check one payload layer: 0 verified, -EACCES/-EINVAL refused (why added),
 * or the fetch error. */
static int check_layer(const struct cosign_keys *k, const struct descriptor *d,
		       const char *payload, size_t len, const char *b64, const char *registry,
		       const char *repo, const char *digest, struct cosign_outcome *out)
{
	char why[256], sd[20];
	int ret = cosign_verify_signature(k, payload, len, b64, &out->key);

	if (ret == -EINVAL) {
		why_add(out->why, sizeof(out->why), "; %s: signature is not base64",
			short_digest(d->digest, sd));
		return ret;
	}
	if (ret < 0) {
		why_add(out->why, sizeof(out->why), "; %s: not signed by %s",
			short_digest(d->digest, sd), k->n == 1 ? "the key" : "any of the keys");
		return ret;
	}
	ret = cosign_check_claims(payload, len, registry, repo, digest, why, sizeof(why));
	if (ret < 0) {
		why_add(out->why, sizeof(out->why), "; %s: signed by %s but %s",
			short_digest(d->digest, sd), k->v[out->key].name, why);
		return ret;
	}
	snprintf(out->layer, sizeof(out->layer), "%s", d->digest);
	return 0;
}

int cosign_verify_manifest(const struct cosign_keys *k, const struct manifest *sig,
			   const char *registry, const char *repo, const char *digest,
			   cosign_fetch_fn fetch, void *arg, struct cosign_outcome *out)
{
	char guess[1024], sd[20];
	int ret = -EACCES, fetch_err = 0;

	memset(out, 0, sizeof(*out));
	/* Two passes: layers whose payload is predicted cost nothing, so a
	 * manifest with one good signature among many needs no request. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < sig->n_layers; i++) {
			const struct descriptor *d = &sig->layers[i];
			char *b64 = NULL, *payload = NULL;
			size_t len = 0;
			bool guessed;
			int r;

			if (strcmp(d->media_type, COSIGN_PAYLOAD_TYPE))
				continue;
			guessed = predicted(d, registry, repo, digest, guess, sizeof(guess), &len);
			if (guessed != (pass == 0))
				continue;
			out->signatures++;
			if (annotation_get(d->annotations, COSIGN_SIG_ANNOTATION, &b64) < 0) {
				why_add(out->why, sizeof(out->why), "; %s: no %s annotation",
					short_digest(d->digest, sd), COSIGN_SIG_ANNOTATION);
				continue;
			}
			if (!guessed) {
				if (d->size > COSIGN_PAYLOAD_MAX) {
					why_add(out->why, sizeof(out->why),
						"; %s: payload larger than 64 KiB",
						short_digest(d->digest, sd));
					free(b64);
					continue;
				}
				if (out->fetched >= COSIGN_FETCH_MAX) {
					why_add(out->why, sizeof(out->why),
						"; more than %d payloads to fetch: rest not checked",
						COSIGN_FETCH_MAX);
					free(b64);
					goto out_done;
				}
				out->fetched++;
				r = fetch(arg, d, &payload, &len);
				if (r < 0) {
					why_add(out->why, sizeof(out->why),
						"; %s: payload not fetched (%s)",
						short_digest(d->digest, sd), strerror(-r));
					if (r != -ENOENT && r != -EBADMSG)
						fetch_err = r;
					free(b64);
					continue;
				}
			}
			r = check_layer(k, d, guessed ? guess : payload, len, b64, registry, repo,
					digest, out);
			free(b64);
			free(payload);
			if (r == 0) {
				out->why[0] = '\0';
				return 0;
			}
		}
	}
out_done:
	if (!out->signatures)
		why_add(out->why, sizeof(out->why), "; no %s layer", COSIGN_PAYLOAD_TYPE);
	if (fetch_err)
		ret = fetch_err;
	/* drop the leading "; " */
	if (!strncmp(out->why, "; ", 2))
		memmove(out->why, out->why + 2, strlen(out->why + 2) + 1);
	return ret;
}

int cosign_verify_bundle(const struct cosign_keys *k, const void *bundle, size_t len,
			 const char *digest, size_t *which, char *why, size_t whylen)
{
	const size_t b64max = COSIGN_PAYLOAD_MAX / 3 * 4 + 4;
	unsigned char *payload = NULL;
	char *pae = NULL, head[320];
	const char *reason = NULL;
	struct dsse d;
	size_t plen = 0, hlen, key = 0;
	int ret = bundle_dsse_parse(bundle, len, &d, &reason);

	if (ret < 0) {
		snprintf(why, whylen, "malformed bundle (%s)", reason ? reason : strerror(-ret));
		return ret == -ENOMEM ? ret : -EINVAL;
	}
	ret = -ENOMEM;
	if (strlen(d.payload) > b64max || strlen(d.payload_type) > 256) {
		snprintf(why, whylen, "DSSE payload larger than 64 KiB");
		ret = -EINVAL;
		goto out_release;
	}
	payload = malloc(strlen(d.payload) / 4 * 3 + 3);
	if (!payload)
		goto out_release;
	if (base64_decode(d.payload, b64max, payload, &plen) < 0) {
		snprintf(why, whylen, "DSSE payload is not base64");
		ret = -EINVAL;
		goto out_release;
	}
	/* DSSE signs the pre-authentication encoding, not the payload. */
	hlen = (size_t)snprintf(head, sizeof(head), "DSSEv1 %zu %s %zu ", strlen(d.payload_type),
				d.payload_type, plen);
	pae = malloc(hlen + plen);
	if (!pae)
		goto out_release;
	memcpy(pae, head, hlen);
	memcpy(pae + hlen, payload, plen);
	ret = -EACCES;
	for (size_t i = 0; i < d.n_sigs && ret < 0; i++)
		if (cosign_verify_signature(k, pae, hlen + plen, d.sigs[i], &key) == 0)
			ret = 0;
	if (ret < 0) {
		snprintf(why, whylen, "not signed by %s", k->n == 1 ? "the key" : "any of the keys");
		goto out_release;
	}
	ret = intoto_names(payload, plen, COSIGN_SIGN_PREDICATE, digest + 7, &reason);
	if (ret == 1) {
		if (which)
			*which = key;
		ret = 0;
	} else {
		snprintf(why, whylen, "signed by %s but %s", k->v[key].name, reason);
		ret = ret < 0 ? -EINVAL : -EACCES;
	}
out_release:
	free(pae);
	free(payload);
	dsse_release(&d);
	return ret;
}
