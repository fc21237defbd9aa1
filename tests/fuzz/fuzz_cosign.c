/* fuzz_cosign.c - libFuzzer target for what ocifs reads of a cosign
 * signature: the simple-signing payload (registry/simplesign.h) and its
 * claims, and the signature itself (layers/cosign.h).
 *
 * The input is a payload, and a Sigstore bundle. Promises checked: the claims of an input that
 * passes are exactly the artifact's (type, digest, a repository that
 * normalizes to the artifact's); a payload parsed at all has every field
 * set; the input taken as base64 signature or annotations text never
 * verifies nor crashes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "cosign.h"
#include "simplesign.h"

#define DIGEST "sha256:4aa3054270f7a70b4528f2064ee90961788e1e1518703592ae4463de3b889dec"

static const char ed25519_pub[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MCowBQYDK2VwAyEA9KWTeh76FBOcAY0n5KmDwgwHShXj/Ey7CKndIhzHA48=\n"
	"-----END PUBLIC KEY-----\n";

static struct cosign_keys *keys(void)
{
	static struct cosign_keys *k;
	char path[] = "/tmp/fuzz_cosign.XXXXXX", why[256];
	const char *p = path;
	int fd;

	if (k)
		return k;
	fd = mkstemp(path);
	FUZZ_ASSERT(fd >= 0);
	FUZZ_ASSERT(write(fd, ed25519_pub, sizeof(ed25519_pub) - 1) ==
		    (ssize_t)(sizeof(ed25519_pub) - 1));
	close(fd);
	FUZZ_ASSERT(cosign_keys_load(&p, 1, &k, why, sizeof(why)) == 0);
	unlink(path);
	return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct simplesign s;
	const char *why = NULL;
	char reason[256], *str, *v = NULL;
	int ret;

	ret = simplesign_parse(data, size, &s, &why);
	FUZZ_ASSERT(ret == 0 || ret == -EINVAL || ret == -ENOMEM);
	if (ret == 0) {
		FUZZ_ASSERT(s.type && s.reference && s.digest);
		simplesign_release(&s);
	} else {
		FUZZ_ASSERT(ret != -EINVAL || why);
	}
	ret = cosign_check_claims(data, size, "127.0.0.1:5000", "seed/provider", DIGEST, reason,
				  sizeof(reason));
	FUZZ_ASSERT(ret == 0 || ret == -EACCES || ret == -EINVAL || ret == -ENOMEM);
	if (ret == 0) {
		FUZZ_ASSERT(simplesign_parse(data, size, &s, NULL) == 0);
		FUZZ_ASSERT(!strcmp(s.digest, DIGEST));
		FUZZ_ASSERT(!strcmp(s.type, COSIGN_CLAIM_TYPE));
		simplesign_release(&s);
	}
	/* as a Sigstore bundle: never verified by a key that signed nothing */
	ret = cosign_verify_bundle(keys(), data, size, DIGEST, NULL, reason, sizeof(reason));
	FUZZ_ASSERT(ret == -EACCES || ret == -EINVAL || ret == -ENOMEM);
	str = malloc(size + 1);
	if (!str)
		return 0;
	memcpy(str, data, size);
	str[size] = '\0';
	ret = cosign_verify_signature(keys(), "payload", 7, str, NULL);
	FUZZ_ASSERT(ret == -EACCES || ret == -EINVAL);
	ret = annotation_get(str, COSIGN_SIG_ANNOTATION, &v);
	FUZZ_ASSERT(ret == 0 || ret == -ENODATA || ret == -EINVAL || ret == -ENOMEM);
	free(v);
	free(str);
	return 0;
}
