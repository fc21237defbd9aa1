/* test_ref.c - reference parsing: tables of valid and invalid references. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ref.h"

#define D64 "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static const struct {
	const char *in, *registry, *repository, *tag, *digest;
} valid[] = {
	{ "ubuntu", "docker.io", "library/ubuntu", "latest", NULL },
	{ "ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", NULL },
	{ "library/ubuntu", "docker.io", "library/ubuntu", "latest", NULL },
	{ "docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", NULL },
	{ "index.docker.io/foo/bar", "docker.io", "foo/bar", "latest", NULL },
	{ "registry-1.docker.io/x", "docker.io", "library/x", "latest", NULL },
	{ "ghcr.io/sourceplane/lite-ci:v0.2.0", "ghcr.io", "sourceplane/lite-ci", "v0.2.0", NULL },
	{ "localhost:5000/a/b:1", "localhost:5000", "a/b", "1", NULL },
	{ "localhost/a", "localhost", "a", "latest", NULL },
	{ "127.0.0.1:5000/a/b/c:tag", "127.0.0.1:5000", "a/b/c", "tag", NULL },
	{ "host:5000/a/b:tag@" D64, "host:5000", "a/b", "tag", D64 },
	{ "ghcr.io/org/tool@" D64, "ghcr.io", "org/tool", NULL, D64 },
	{ "[::1]:5000/x:y", "[::1]:5000", "x", "y", NULL },
	{ "a.b-c.example.com/x__y/z.w-v---u:_T-1.x", "a.b-c.example.com", "x__y/z.w-v---u", "_T-1.x", NULL },
};

static const char *const invalid[] = {
	"",
	"UPPER/case:tag",
	"Ubuntu",
	"ubuntu:",
	"ubuntu:-x",
	"ubuntu::x",
	"a//b",
	"/a",
	"a/",
	"a/-b",
	"a/b-",
	"a/b_-c",
	"a/b___c",
	"a/.b",
	"ghcr.io/",
	"ghcr.io/org/tool@sha256:abc",
	"ghcr.io/org/tool@sha512:0123",
	"ghcr.io/org/tool@" D64 "0",
	"ghcr.io/org/tool@SHA256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	"host:99999/a",
	"host:/a",
	"-host.io/a",
	"host-.io/a",
	"ex..ample.com/a",
	"[::1/x",
	"a:b:c",
	("repo:" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
	"a/b c",
	"a/b\n",
	"Registry/x",
	"GHCR.io/x",
};

int main(void)
{
	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		struct ref r;
		const char *why = NULL;
		int ret = ref_parse(valid[i].in, &r, &why);
		if (ret != 0) {
			fprintf(stderr, "valid[%zu] %s: %d (%s)\n", i, valid[i].in, ret, why);
			check_failures++;
			continue;
		}
		CHECK_STR(r.registry, valid[i].registry);
		CHECK_STR(r.repository, valid[i].repository);
		if (valid[i].tag)
			CHECK_STR(r.tag, valid[i].tag);
		else
			CHECK(r.tag == NULL);
		if (valid[i].digest)
			CHECK_STR(r.digest, valid[i].digest);
		else
			CHECK(r.digest == NULL);
		ref_release(&r);
		CHECK(r.registry == NULL);
	}
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		struct ref r = { 0 };
		const char *why = NULL;
		int ret = ref_parse(invalid[i], &r, &why);
		if (ret != -EINVAL) {
			fprintf(stderr, "invalid[%zu] \"%s\": accepted\n", i, invalid[i]);
			check_failures++;
			if (ret == 0)
				ref_release(&r);
			continue;
		}
		CHECK(why != NULL);
		CHECK(r.registry == NULL);	/* untouched on failure */
	}

	/* Name length: 255 in all. */
	char longname[300];
	memset(longname, 'a', sizeof(longname));
	longname[299] = '\0';
	struct ref r;
	CHECK(ref_parse(longname, &r, NULL) == -EINVAL);
	/* ... counted after normalization (found by fuzz_ref): 239 bytes are
	 * "docker.io/library/" + 239 = 257 in all, and the canonical form of
	 * what ref_parse() accepts must parse again. */
	longname[239] = '\0';
	CHECK(ref_parse(longname, &r, NULL) == -EINVAL);
	longname[255 - 18] = '\0';	/* 237: exactly 255 normalized */
	CHECK(ref_parse(longname, &r, NULL) == 0 && strlen(r.repository) == 245);
	ref_release(&r);

	CHECK(ref_registry_is_loopback("127.0.0.1:5000"));
	CHECK(ref_registry_is_loopback("localhost:80"));
	CHECK(ref_registry_is_loopback("localhost"));
	CHECK(ref_registry_is_loopback("[::1]:5000"));
	CHECK(!ref_registry_is_loopback("localhost.example.com"));
	/* Loopback by address, not by text. */
	CHECK(ref_registry_is_loopback("127.1.2.3:5000"));
	CHECK(ref_registry_is_loopback("127.255.255.254"));
	CHECK(!ref_registry_is_loopback("127.evil.test"));
	CHECK(!ref_registry_is_loopback("127.evil.test:5000"));
	CHECK(!ref_registry_is_loopback("127.0.0.1.nip.io"));
	CHECK(!ref_registry_is_loopback("127.1"));
	CHECK(!ref_registry_is_loopback("128.0.0.1"));
	CHECK(!ref_registry_is_loopback("[::2]:5000"));
	CHECK(!ref_registry_is_loopback("[::1"));
	CHECK(ref_registry_is_loopback("[::1]"));
	CHECK(!ref_registry_is_loopback("localhostx"));
	CHECK(!ref_registry_is_loopback("ghcr.io"));
	CHECK_STR(ref_registry_endpoint("docker.io"), "registry-1.docker.io");
	CHECK_STR(ref_registry_endpoint("ghcr.io"), "ghcr.io");
	char *n = ref_registry_repository("docker.io", "ubuntu");
	CHECK_STR(n, "library/ubuntu");
	free(n);
	n = ref_registry_repository("ghcr.io", "ubuntu");
	CHECK_STR(n, "ubuntu");
	free(n);
	return CHECK_DONE();
}
