/* test_cosign.c - cosign keys, signatures, claims and signature manifests.
 *
 * The ECDSA vector is cosign's own (cmd/cosign/cli/verify/
 * verify_blob_attestation_test.go: its test key and the signature of
 * blobSLSAProvenanceSignature over the DSSE pre-authentication encoding);
 * the payload format is checked against cosign's pkg/cosign/
 * obsolete_test.go. The RSA, P-384 and Ed25519 vectors were made with
 * `openssl dgst -sha256 -sign` / `openssl pkeyutl -sign -rawin` over the
 * payload below.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cosign.h"
#include "manifest.h"
#include "simplesign.h"

static const char cosign_p256_pub[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESF79b1ToAtoakhBOHEU5UjnEiihV\n"
	"gZPFIp557+TOoDxf14FODWc+sIPETk0OgCplAk60doVXbCv33IU4rXZHrg==\n"
	"-----END PUBLIC KEY-----\n";
static const char cosign_dsse_pae[] =
	"DSSEv1 28 application/vnd.in-toto+json 295 "
	"{\"_type\":\"https://in-toto.io/Statement/v0.1\",\"predicateType\":"
	"\"https://slsa.dev/provenance/v0.2\",\"subject\":[{\"name\":\"blob\",\"digest\":"
	"{\"sha256\":\"658781cd4ed9bca60dacd09f7bb914bb51502e8b5d619f57f39a1d652596cc24\"}}],"
	"\"predicate\":{\"builder\":{\"id\":\"2\"},\"buildType\":\"x\",\"invocation\":"
	"{\"configSource\":{}}}}";
#define COSIGN_DSSE_SIG \
	"MEUCIA8KjZqkrt90fzBojSwwtj3Bqb41E6ruxQk97TLnpzdYAiEAzOAjOTzyvTHqbpFDAn6zhrg6EZv7kxK5faRoVGYMh2c="
static const char cosign_dsse_sig[] = COSIGN_DSSE_SIG;

static const char rsa_pub[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEApLEgY3Rr6uUDoJsnln8+\n"
	"YTmdhQirGLs+eHqrbiceNVqb5aVZoOC5zbuJaBl/0Dz7HAlwUj9KzmnP4w6P6z9Q\n"
	"1MoPfeFzpkHYrp6p3vpBtn/IIKTtvHYip5d2j1cX37fHdYtSlyz2aRoVUjYxotSk\n"
	"eAd2EUO6cPBiegvIIU2uSRx9gnL6nVn0ek/oC1AOQ1PqPPhVwViOIfJeOwskeSaM\n"
	"Buqc/gUkSC+NayzBKPnkVGCAXUvfi9sjBnggp2QghEklEyrqonSsaE3VIp1heQNf\n"
	"RBYj9oSfZkLFslzEd1OJOugrW5HzSGg8m5pMLNsB7BnCJZkiD+rEl2yCIelVX9KV\n"
	"cQIDAQAB\n"
	"-----END PUBLIC KEY-----\n";
static const char ed25519_pub[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MCowBQYDK2VwAyEA9KWTeh76FBOcAY0n5KmDwgwHShXj/Ey7CKndIhzHA48=\n"
	"-----END PUBLIC KEY-----\n";
static const char p384_pub[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAELI+qH1QnYNUtNJh0GXcjq4GBh98r5PwK\n"
	"MER5m9Xb6YqRraHkguN688KM4psYLXeC6+G3Y0MC/V9CbDtxW2fks/vO1ibO5+NQ\n"
	"9pUNkHDuU2qV6RUoj0WtSR6y+O2DwVUm\n"
	"-----END PUBLIC KEY-----\n";
static const char rsa1024_pub[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkt0qbXAEm9u6J0NBByff3nUCS\n"
	"5G/VppwFe0Sn+YKvz+bBFtsCD15lb3nAYMrUsBOifdR4wMKLQIt+NFZeJOTDYqnt\n"
	"eecKYQhwHIgvyRHpDy71JEYEQ+o6ieQYlNbm/OdDF6Q+cfVOxHSF3SmXj9JohicO\n"
	"BUFlWKyxxOlZCmYLUwIDAQAB\n"
	"-----END PUBLIC KEY-----\n";
static const char secp256k1_pub[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEE2IO+XXGHo4rbmn/VZTazeGUw0R6tMbz\n"
	"hv9i1FpDA5tV99y1Xn2DBDOrx4W5MDO886xPRpkpB0kv4aeapo3DSA==\n"
	"-----END PUBLIC KEY-----\n";

#define REG "127.0.0.1:5000"
#define REPO "seed/provider"
#define DIGEST "sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec"
#define OTHER "sha256:0000054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec"

/* cosign_payload_predict(REG, REPO, DIGEST, 0), signed by each key. */
static const char payload[] =
	"{\"critical\":{\"identity\":{\"docker-reference\":\"" REG "/" REPO "\"},"
	"\"image\":{\"docker-manifest-digest\":\"" DIGEST "\"},"
	"\"type\":\"cosign container image signature\"},\"optional\":null}";
#define PAYLOAD_DIGEST "sha256:e648c7aacdfded8b72c33ff2150be86df73648e8045f31719177b2fb16806874"
#define RSA_SIG \
	"K2jAXriyJvbLHHD7Cs75iMyoSCLs5ZkPJ8Lv5M4EW1f3yjWxTaS6AwjS43ijzBc3XQxvX99YVGoNMXa5rq6tf8zg" \
	"e+5t0oxGwaQS5UdtjROh1XJ1uzEYh013sKq30jfSpFcYVl69aYz8sfJJ933wH2c95fij42T3zaUFlVymQMV6usp1" \
	"z+T3qTtubRJtYEggQ3w4lJFq/S6XOa8WfTS2ywj1+ZbJOTQkYCjin5y8GggnqDQO4gkClVdIbfgx7cTXMpB3j5fT" \
	"bZu3gdFOpGEv7PbVJl7twMimQWfbKVgPah7FSanmySn+hu6dfpDCkE42XoxV4a+xChq5HQNfW/WK4w=="
#define ED25519_SIG \
	"9CiqB4573QJrF/gEEqSdkDwB8J/P06pTMWVMAArljbiv6BKVmv1UHLWlKUi/s2iA9RuXCofispiXBwAdsM73Ag=="
#define P384_SIG \
	"MGQCMELrneZ5epHNYSGkNofD59JFUrVdh+EqkQYnN3g7P/TJjIIiPbKhEugCgvpHlzKfvgIwH6KwnUkJQWbn+yex" \
	"8Q41zIF8D2U25LJGSzNmOxp9NzpTpk2qQtDd6dFycPJIFpLd"

/* The same claims with an optional section: not predictable, fetched. */
static const char payload2[] =
	"{\"critical\":{\"identity\":{\"docker-reference\":\"" REG "/" REPO "\"},"
	"\"image\":{\"docker-manifest-digest\":\"" DIGEST "\"},"
	"\"type\":\"cosign container image signature\"},\"optional\":{\"creator\":\"ci\"}}";
#define PAYLOAD2_DIGEST "sha256:ef1811986485d08c30dde2d0e82387e762b91fdfa9ad736f4939019462d668cb"
#define PAYLOAD2_ED25519_SIG \
	"IF51VBuV43hywYr3Ts8qEoPXnO0Y58Zc5t1EJrQ6S8c/em9SFimz9L72zluCPx6ypVnguHNMEru4xvjDJ1sSCA=="

static char tmpdir[64];

/* Write @pem to a file in tmpdir; returns its path (static ring). */
static const char *keyfile(const char *name, const char *pem)
{
	static char paths[8][128];
	static unsigned next;
	char *p = paths[next++ % 8];
	FILE *f;

	snprintf(p, 128, "%s/%s", tmpdir, name);
	f = fopen(p, "w");
	if (f) {
		fputs(pem, f);
		fclose(f);
	}
	return p;
}

static struct cosign_keys *load(const char *name, const char *pem)
{
	const char *path = keyfile(name, pem);
	struct cosign_keys *k = NULL;
	char why[256] = "";

	CHECK(cosign_keys_load(&path, 1, &k, why, sizeof(why)) == 0);
	return k;
}

static void test_keys_load_kinds(void)
{
	struct cosign_keys *k;

	k = load("p256.pub", cosign_p256_pub);
	CHECK(k && cosign_keys_count(k) == 1);
	CHECK(k && !strncmp(cosign_key_name(k, 0), "ECDSA P-256 key ", 16));
	cosign_keys_free(k);
	k = load("rsa.pub", rsa_pub);
	CHECK(k && !strncmp(cosign_key_name(k, 0), "RSA key ", 8));
	cosign_keys_free(k);
	k = load("ed.pub", ed25519_pub);
	CHECK(k && !strncmp(cosign_key_name(k, 0), "Ed25519 key ", 12));
	cosign_keys_free(k);
	k = load("p384.pub", p384_pub);
	CHECK(k && !strncmp(cosign_key_name(k, 0), "ECDSA P-384 key ", 16));
	cosign_keys_free(k);
	cosign_keys_free(NULL);
}

static void refused(const char *name, const char *pem, int want, const char *why_part)
{
	const char *path = pem ? keyfile(name, pem) : name;
	struct cosign_keys *k = NULL;
	char why[256] = "";
	int ret = cosign_keys_load(&path, 1, &k, why, sizeof(why));

	CHECK(ret == want);
	CHECK(k == NULL);
	CHECK(strstr(why, path) != NULL);
	if (!strstr(why, why_part)) {
		fprintf(stderr, "why: %s (want %s)\n", why, why_part);
		check_failures++;
	}
}

static void test_keys_load_refused(void)
{
	refused("rsa1024.pub", rsa1024_pub, -EINVAL, "shorter than 2048");
	refused("k1.pub", secp256k1_pub, -EINVAL, "curve");
	refused("garbage.pub", "not a key\n", -EINVAL, "BEGIN PUBLIC KEY");
	refused("priv.pub",
		"-----BEGIN PRIVATE KEY-----\n"
		"MC4CAQAwBQYDK2VwBCIEIBDkLqUVFgxCKhb7m6iIgr0SBQAJ8WNvhN5qfuUGpMdM\n"
		"-----END PRIVATE KEY-----\n",
		-EINVAL, "BEGIN PUBLIC KEY");
	refused("/nonexistent/key.pub", NULL, -ENOENT, "No such file");
}

static void test_keys_load_several(void)
{
	const char *paths[] = { keyfile("a.pub", rsa_pub), keyfile("b.pub", ed25519_pub),
				keyfile("c.pub", rsa1024_pub) };
	struct cosign_keys *k = NULL;
	char why[256] = "";
	size_t which = 99;

	CHECK(cosign_keys_load(paths, 2, &k, why, sizeof(why)) == 0);
	CHECK(cosign_keys_count(k) == 2);
	CHECK(cosign_verify_signature(k, payload, strlen(payload), ED25519_SIG, &which) == 0);
	CHECK(which == 1);
	CHECK(cosign_verify_signature(k, payload, strlen(payload), RSA_SIG, &which) == 0);
	CHECK(which == 0);
	cosign_keys_free(k);
	/* one bad file refuses the whole set, naming that file */
	CHECK(cosign_keys_load(paths, 3, &k, why, sizeof(why)) == -EINVAL);
	CHECK(strstr(why, "c.pub") != NULL);
}

static void test_verify_cosign_vector(void)
{
	struct cosign_keys *k = load("p256.pub", cosign_p256_pub);
	char tampered[sizeof(cosign_dsse_pae)];

	if (!k)
		return;
	CHECK(cosign_verify_signature(k, cosign_dsse_pae, strlen(cosign_dsse_pae),
				      cosign_dsse_sig, NULL) == 0);
	memcpy(tampered, cosign_dsse_pae, sizeof(tampered));
	tampered[strlen(tampered) - 3] = 'X';
	CHECK(cosign_verify_signature(k, tampered, strlen(tampered), cosign_dsse_sig, NULL) ==
	      -EACCES);
	/* the other keys' signatures are not this key's */
	CHECK(cosign_verify_signature(k, payload, strlen(payload), RSA_SIG, NULL) == -EACCES);
	cosign_keys_free(k);
}

static void verify_kind(const char *name, const char *pem, const char *sig)
{
	struct cosign_keys *k = load(name, pem);
	char tampered[sizeof(payload)];

	if (!k)
		return;
	CHECK(cosign_verify_signature(k, payload, strlen(payload), sig, NULL) == 0);
	memcpy(tampered, payload, sizeof(payload));
	tampered[10] ^= 1;
	CHECK(cosign_verify_signature(k, tampered, strlen(tampered), sig, NULL) == -EACCES);
	CHECK(cosign_verify_signature(k, payload, strlen(payload) - 1, sig, NULL) == -EACCES);
	cosign_keys_free(k);
}

static void test_verify_kinds(void)
{
	verify_kind("rsa.pub", rsa_pub, RSA_SIG);
	verify_kind("ed.pub", ed25519_pub, ED25519_SIG);
	verify_kind("p384.pub", p384_pub, P384_SIG);
}

static void test_verify_bad_base64(void)
{
	struct cosign_keys *k = load("ed.pub", ed25519_pub);
	char huge[COSIGN_SIG_MAX + 8];

	if (!k)
		return;
	CHECK(cosign_verify_signature(k, payload, strlen(payload), "***", NULL) == -EINVAL);
	CHECK(cosign_verify_signature(k, payload, strlen(payload), "", NULL) == -EINVAL);
	memset(huge, 'A', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	CHECK(cosign_verify_signature(k, payload, strlen(payload), huge, NULL) == -EINVAL);
	cosign_keys_free(k);
}

static void test_predict(void)
{
	char buf[1024];
	int n;

	/* byte for byte what cosign's ObsoletePayload test expects */
	n = cosign_payload_predict("docker.io", "namespace/image",
				   "sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec",
				   0, buf, sizeof(buf));
	CHECK(n > 0);
	CHECK_STR(buf, "{\"critical\":{\"identity\":{\"docker-reference\":\"index.docker.io/namespace/"
		       "image\"},\"image\":{\"docker-manifest-digest\":\"sha256:4aa3054270f7a70b452"
		       "8f2064ee90961788e1e1518703592ae4463de3b889dec\"},\"type\":\"cosign container "
		       "image signature\"},\"optional\":null}");
	n = cosign_payload_predict(REG, REPO, DIGEST, 0, buf, sizeof(buf));
	CHECK(n == (int)strlen(payload));
	CHECK_STR(buf, payload);
	CHECK(cosign_payload_predict(REG, REPO, DIGEST, 1, buf, sizeof(buf)) > 0);
	CHECK(strstr(buf, "\"optional\":{}}") != NULL);
	CHECK(cosign_payload_predict(REG, REPO, DIGEST, 2, buf, sizeof(buf)) == -ENOENT);
	CHECK(cosign_payload_predict(REG, REPO, DIGEST, 0, buf, 20) == -ENOSPC);
}

static int claims(const char *json, const char *reg, const char *repo, const char *digest,
		  const char *why_part)
{
	char why[256] = "";
	int ret = cosign_check_claims(json, strlen(json), reg, repo, digest, why, sizeof(why));

	if (why_part && !strstr(why, why_part)) {
		fprintf(stderr, "claims why: %s (want %s)\n", why, why_part);
		check_failures++;
	}
	return ret;
}

#define CLAIMS(ref, dig, type)                                                                 \
	"{\"critical\":{\"identity\":{\"docker-reference\":\"" ref "\"},\"image\":"            \
	"{\"docker-manifest-digest\":\"" dig "\"},\"type\":\"" type "\"},\"optional\":null}"
#define TYPE "cosign container image signature"

static void test_claims(void)
{
	CHECK(claims(payload, REG, REPO, DIGEST, NULL) == 0);
	CHECK(claims(payload, REG, REPO, OTHER, "payload is for " DIGEST) == -EACCES);
	CHECK(claims(payload, REG, "seed/other", DIGEST, "another repository") == -EACCES);
	CHECK(claims(payload, "127.0.0.1:5001", REPO, DIGEST, "another repository") == -EACCES);
	CHECK(claims(CLAIMS(REG "/" REPO, DIGEST, "atomic container signature"), REG, REPO,
		     DIGEST, "payload type") == -EACCES);
	/* Docker Hub's names normalize as Docker does; a tag is ignored */
	CHECK(claims(CLAIMS("index.docker.io/library/ubuntu", DIGEST, TYPE), "docker.io",
		     "library/ubuntu", DIGEST, NULL) == 0);
	CHECK(claims(CLAIMS("ubuntu", DIGEST, TYPE), "docker.io", "library/ubuntu", DIGEST,
		     NULL) == 0);
	CHECK(claims(CLAIMS(REG "/" REPO ":1.0", DIGEST, TYPE), REG, REPO, DIGEST, NULL) == 0);
	CHECK(claims(CLAIMS("not a ref!", DIGEST, TYPE), REG, REPO, DIGEST, "not a reference") ==
	      -EACCES);
	/* keys in any case, as cosign's Go decoder reads them */
	CHECK(claims("{\"critical\":{\"identity\":{\"docker-reference\":\"" REG "/" REPO "\"},"
		     "\"image\":{\"Docker-manifest-digest\":\"" DIGEST "\"},\"Type\":\"" TYPE "\"}}",
		     REG, REPO, DIGEST, NULL) == 0);
}

static void test_claims_malformed(void)
{
	static const char *const bad[] = {
		"",
		"[]",
		"{}",
		"{\"critical\":5}",
		"{\"critical\":{\"identity\":{},\"image\":{},\"type\":\"x\"}}",
		"{\"critical\":{\"identity\":{\"docker-reference\":1},\"image\":{\"docker-manifest-"
		"digest\":\"" DIGEST "\"},\"type\":\"" TYPE "\"}}",
		/* the same claim twice, in two spellings */
		"{\"critical\":{\"identity\":{\"docker-reference\":\"" REG "/" REPO "\"},\"image\":"
		"{\"docker-manifest-digest\":\"" DIGEST "\",\"Docker-Manifest-Digest\":\"" OTHER
		"\"},\"type\":\"" TYPE "\"}}",
		"{\"critical\":{\"identity\":{\"docker-reference\":\"" REG "/" REPO "\"},\"image\":"
		"{\"docker-manifest-digest\":\"" DIGEST "\"},\"type\":\"" TYPE "\"},\"critical\":{}}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (claims(bad[i], REG, REPO, DIGEST, "malformed payload") != -EINVAL) {
			fprintf(stderr, "malformed payload %zu accepted\n", i);
			check_failures++;
		}
	}
}

static void test_annotation_get(void)
{
	char *v = NULL;

	CHECK(annotation_get("{\"a\":\"1\",\"b\":\"2\"}", "b", &v) == 0);
	CHECK_STR(v, "2");
	free(v);
	CHECK(annotation_get("{\"a\":1}", "a", &v) == -ENODATA);
	CHECK(annotation_get("{\"a\":\"1\"}", "c", &v) == -ENODATA);
	CHECK(annotation_get(NULL, "c", &v) == -ENODATA);
	CHECK(annotation_get("nope", "c", &v) == -EINVAL);
}

/* ---- signature manifests ---- */

struct fetcher {
	unsigned calls;
	int fail;		/* error to return, 0: serve payload2 */
};

static int fetch(void *arg, const struct descriptor *d, char **buf, size_t *len)
{
	struct fetcher *f = arg;

	f->calls++;
	if (f->fail)
		return f->fail;
	if (strcmp(d->digest, PAYLOAD2_DIGEST))
		return -ENOENT;
	*buf = strdup(payload2);
	*len = strlen(payload2);
	return *buf ? 0 : -ENOMEM;
}

#define LAYER(digest, size, sig)                                                             \
	"{\"mediaType\":\"" COSIGN_PAYLOAD_TYPE "\",\"digest\":\"" digest "\",\"size\":" #size \
	",\"annotations\":{\"" COSIGN_SIG_ANNOTATION "\":\"" sig "\"}}"
#define SIGMAN(layers)                                                                       \
	"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","  \
	"\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":"  \
	"\"" OTHER "\",\"size\":233},\"layers\":[" layers "]}"

static int verify_json(const char *json, const char *key_pem, struct fetcher *f,
		       struct cosign_outcome *out)
{
	struct cosign_keys *k = load("k.pub", key_pem);
	struct manifest *m = NULL;
	int ret = -1;

	CHECK(manifest_parse(json, strlen(json), NULL, &m, NULL) == 0);
	if (k && m)
		ret = cosign_verify_manifest(k, m, REG, REPO, DIGEST, fetch, f, out);
	manifest_free(m);
	cosign_keys_free(k);
	return ret;
}

static void test_manifest_predicted_payload(void)
{
	struct fetcher f = { 0 };
	struct cosign_outcome o;

	CHECK(verify_json(SIGMAN(LAYER(PAYLOAD_DIGEST, 244, ED25519_SIG)),
			  ed25519_pub, &f, &o) == 0);
	CHECK(f.calls == 0);
	CHECK(o.fetched == 0 && o.signatures == 1);
	CHECK_STR(o.layer, PAYLOAD_DIGEST);
}

static void test_manifest_fetched_payload(void)
{
	struct fetcher f = { 0 };
	struct cosign_outcome o;

	CHECK(verify_json(SIGMAN(LAYER(PAYLOAD2_DIGEST, 256, PAYLOAD2_ED25519_SIG)),
			  ed25519_pub, &f, &o) == 0);
	CHECK(f.calls == 1 && o.fetched == 1);
	/* a transport error is passed on, not taken for a bad signature */
	f = (struct fetcher){ .fail = -EHOSTUNREACH };
	CHECK(verify_json(SIGMAN(LAYER(PAYLOAD2_DIGEST, 256, "IF51")), ed25519_pub, &f, &o) ==
	      -EHOSTUNREACH);
	CHECK(strstr(o.why, "payload not fetched") != NULL);
}

static void test_manifest_one_of_two(void)
{
	struct fetcher f = { 0 };
	struct cosign_outcome o;

	/* the fetched one verifies with the key; the predicted one is RSA's */
	CHECK(verify_json(SIGMAN(LAYER(PAYLOAD_DIGEST, 244, RSA_SIG) ","
				 LAYER(PAYLOAD2_DIGEST, 256, PAYLOAD2_ED25519_SIG)),
			  ed25519_pub, &f, &o) == 0);
	CHECK(o.signatures == 2 && o.fetched == 1);
	CHECK_STR(o.layer, PAYLOAD2_DIGEST);
}

static void test_manifest_refused(void)
{
	struct fetcher f = { 0 };
	struct cosign_outcome o;

	CHECK(verify_json(SIGMAN(LAYER(PAYLOAD_DIGEST, 244, ED25519_SIG)),
			  rsa_pub, &f, &o) == -EACCES);
	CHECK(strstr(o.why, "not signed by the key") != NULL);
	CHECK(verify_json(SIGMAN(""), rsa_pub, &f, &o) == -EACCES);
	CHECK(strstr(o.why, "no " COSIGN_PAYLOAD_TYPE " layer") != NULL);
	CHECK(verify_json(SIGMAN("{\"mediaType\":\"" COSIGN_PAYLOAD_TYPE "\",\"digest\":\"" OTHER
				 "\",\"size\":10}"),
			  rsa_pub, &f, &o) == -EACCES);
	CHECK(strstr(o.why, "no " COSIGN_SIG_ANNOTATION " annotation") != NULL);
	CHECK(f.calls == 0);
	CHECK(verify_json(SIGMAN(LAYER(OTHER, 100000, "AAAA")), rsa_pub, &f, &o) == -EACCES);
	CHECK(strstr(o.why, "larger than 64 KiB") != NULL);
	CHECK(f.calls == 0);
}

/* ---- Sigstore bundles (cosign 3) ---- */

#define ENVELOPE(payload, sig)                                                               \
	"{\"mediaType\":\"" SIGSTORE_BUNDLE_TYPE "\",\"verificationMaterial\":{},"            \
	"\"dsseEnvelope\":{\"payload\":\"" payload "\",\"payloadType\":"                    \
	"\"application/vnd.in-toto+json\",\"signatures\":[{\"sig\":\"" sig "\"}]}}"

/* A cosign-sign statement for DIGEST, signed by the Ed25519 key. */
#define SIGN_STATEMENT_B64                                                                   \
	"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEiLCJzdWJqZWN0IjpbeyJkaWdlc3Qi"   \
	"Onsic2hhMjU2IjoiNGFhMzA1NDI3MGY3YTcwYjQ1MjhmMjA2NGVlOTA5NjE3ODhlMWUxNTE4NzAzNTkyYWU0"   \
	"NDYzZGUzYjg4OWRlYyJ9fV0sInByZWRpY2F0ZVR5cGUiOiJodHRwczovL3NpZ3N0b3JlLmRldi9jb3NpZ24v"   \
	"c2lnbi92MSIsInByZWRpY2F0ZSI6e319"
#define SIGN_STATEMENT_SIG                                                                   \
	"czGUZE9es4v48nR09HDxgX0Aw7LFoI0yUd9XbI2XRwGE1eaIOIzwNXj1odpiatcyR8tavjJNR2Km0z48+7yDCg=="
/* cosign's own DSSE vector (verify_blob_attestation_test.go): an SLSA
 * provenance statement, signed by cosign's test key. */
#define SLSA_STATEMENT_B64                                                                   \
	"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjAuMSIsInByZWRpY2F0ZVR5cGUiOiJo"   \
	"dHRwczovL3Nsc2EuZGV2L3Byb3ZlbmFuY2UvdjAuMiIsInN1YmplY3QiOlt7Im5hbWUiOiJibG9iIiwiZGln"   \
	"ZXN0Ijp7InNoYTI1NiI6IjY1ODc4MWNkNGVkOWJjYTYwZGFjZDA5ZjdiYjkxNGJiNTE1MDJlOGI1ZDYxOWY1"   \
	"N2YzOWExZDY1MjU5NmNjMjQifX1dLCJwcmVkaWNhdGUiOnsiYnVpbGRlciI6eyJpZCI6IjIifSwiYnVpbGRU"   \
	"eXBlIjoieCIsImludm9jYXRpb24iOnsiY29uZmlnU291cmNlIjp7fX19fQ=="

static int bundle_check(const char *bundle, const char *pem, const char *digest,
			const char *why_part)
{
	struct cosign_keys *k = load("b.pub", pem);
	char why[256] = "";
	size_t which = 9;
	int ret = -1;

	if (k)
		ret = cosign_verify_bundle(k, bundle, strlen(bundle), digest, &which, why,
					   sizeof(why));
	if (why_part && !strstr(why, why_part)) {
		fprintf(stderr, "bundle why: %s (want %s)\n", why, why_part);
		check_failures++;
	}
	if (ret == 0)
		CHECK(which == 0);
	cosign_keys_free(k);
	return ret;
}

static void test_bundle(void)
{
	const char *good = ENVELOPE(SIGN_STATEMENT_B64, SIGN_STATEMENT_SIG);

	CHECK(bundle_check(good, ed25519_pub, DIGEST, NULL) == 0);
	CHECK(bundle_check(good, ed25519_pub, OTHER, "another digest") == -EACCES);
	CHECK(bundle_check(good, rsa_pub, DIGEST, "not signed by the key") == -EACCES);
	/* cosign's vector: the signature verifies, the statement is no cosign sign */
	CHECK(bundle_check(ENVELOPE(SLSA_STATEMENT_B64, COSIGN_DSSE_SIG), cosign_p256_pub,
			   "sha256:658781cd4ed9bca60dacd09f7bb914bb51502e8b5d619f57f39a1d652596cc24",
			   "predicateType") == -EACCES);
	CHECK(bundle_check("{\"messageSignature\":{}}", ed25519_pub, DIGEST, "no DSSE") ==
	      -EINVAL);
	CHECK(bundle_check(ENVELOPE("***", SIGN_STATEMENT_SIG), ed25519_pub, DIGEST,
			   "not base64") == -EINVAL);
}

int main(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_cosign.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_keys_load_kinds();
	test_keys_load_refused();
	test_keys_load_several();
	test_verify_cosign_vector();
	test_verify_kinds();
	test_verify_bad_base64();
	test_predict();
	test_claims();
	test_claims_malformed();
	test_annotation_get();
	test_manifest_predicted_payload();
	test_manifest_fetched_payload();
	test_manifest_one_of_two();
	test_manifest_refused();
	test_bundle();
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return CHECK_DONE();
}
