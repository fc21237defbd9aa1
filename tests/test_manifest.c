/* test_manifest.c - manifest and index parsing, valid and malformed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "manifest.h"

#define H1 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define H2 "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DESC(mt, h, sz) "{\"mediaType\":\"" mt "\",\"digest\":\"sha256:" h "\",\"size\":" #sz

static const char oci[] =
	"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
	"\"artifactType\":\"application/vnd.sourceplane.provider.v1\","
	"\"config\":" DESC("application/vnd.oci.empty.v1+json", H1, 2) "},"
	"\"layers\":[" DESC("application/vnd.sourceplane.bin.linux-amd64", H2, 4400000)
	",\"annotations\":{\"org.opencontainers.image.title\":\"bin/lite\"}},"
	DESC("text/plain", H1, 0) ",\"annotations\":{\"org.opencontainers.image.title\":\"../evil\"}}],"
	"\"annotations\":{\"a\":\"b\"}}";

static const char docker[] =
	"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
	"\"config\":" DESC("application/vnd.docker.container.image.v1+json", H1, 10) "},"
	"\"layers\":[" DESC("application/vnd.docker.image.rootfs.diff.tar.gzip", H2, 20) "}]}";

static const char index_[] =
	"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
	"\"manifests\":[" DESC("application/vnd.oci.image.manifest.v1+json", H1, 100)
	",\"platform\":{\"os\":\"linux\",\"architecture\":\"arm\",\"variant\":\"v7\"}},"
	DESC("application/vnd.oci.image.manifest.v1+json", H2, 100)
	",\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}";

static const char *const malformed[] = {
	"",
	"not json",
	"[]",
	"{\"schemaVersion\":1}",
	"{\"schemaVersion\":2,\"layers\":[]}",	/* no config */
	"{\"schemaVersion\":2,\"config\":" DESC("x", H1, 1) "},\"layers\":{}}",
	"{\"schemaVersion\":2,\"config\":" DESC("x", H1, -1) "},\"layers\":[]}",
	"{\"schemaVersion\":2,\"config\":" DESC("x", H1, 1e3) "},\"layers\":[]}",
	"{\"schemaVersion\":2,\"config\":" DESC("x", H1, 999999999999999999) "},\"layers\":[]}",
	"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"sha512:" H1 "\",\"size\":1},\"layers\":[]}",
	"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"sha256:" H1 "0\",\"size\":1},\"layers\":[]}",
	"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"sha256:ABC\",\"size\":1},\"layers\":[]}",
	"{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:" H1 "\",\"size\":1},\"layers\":[]}",
	"{\"schemaVersion\":2,\"config\":" DESC("x", H1, 1) "},\"layers\":[1]}",
	"{\"schemaVersion\":2,\"schemaVersion\":2}",	/* duplicate keys */
	"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":5}",
	"{\"schemaVersion\":2,\"mediaType\":\"application/x-foo\",\"config\":" DESC("x", H1, 1) "},\"layers\":[]}",
};

/* What a parsed manifest holds is counted, as malloc rounds it: more than
 * its strings, growing with its layers. */
static void test_footprint(void)
{
	struct manifest *m1 = NULL, *m2 = NULL;
	const char *why;

	CHECK(manifest_alloc_size(0) == 0);
	CHECK(manifest_alloc_size(1) == 32);
	CHECK(manifest_alloc_size(24) == 32);
	CHECK(manifest_alloc_size(25) == 48);
	CHECK(manifest_footprint(NULL) == 0);
	CHECK(manifest_parse(docker, strlen(docker), NULL, &m1, &why) == 0);
	CHECK(manifest_parse(oci, strlen(oci), NULL, &m2, &why) == 0);
	if (m1 && m2) {
		size_t strs = strlen(m2->media_type) + strlen(m2->config.digest) +
			      strlen(m2->layers[0].digest) + strlen(m2->layers[0].title);
		CHECK(manifest_footprint(m1) > sizeof(*m1) + 2 * sizeof(struct descriptor));
		CHECK(manifest_footprint(m2) > manifest_footprint(m1));
		CHECK(manifest_footprint(m2) > sizeof(*m2) + 3 * sizeof(struct descriptor) + strs);
	}
	manifest_free(m1);
	manifest_free(m2);
}

int main(void)
{
	struct manifest *m = NULL;
	const char *why;

	test_footprint();
	CHECK(manifest_parse(oci, strlen(oci), NULL, &m, &why) == 0);
	if (m) {
		CHECK(m->kind == MANIFEST_IMAGE);
		CHECK_STR(m->artifact_type, "application/vnd.sourceplane.provider.v1");
		CHECK(m->has_config);
		CHECK(m->config.size == 2);
		CHECK(m->n_layers == 2);
		CHECK_STR(m->layers[0].title, "bin/lite");
		CHECK(m->layers[0].size == 4400000);
		CHECK(m->layers[1].title == NULL);	/* unsafe title dropped */
		CHECK_STR(m->layers[1].refused_title, "../evil");	/* kept for the log */
		CHECK(m->layers[0].refused_title == NULL);
		CHECK(m->layers[1].size == 0);
		CHECK_STR(m->annotations, "{\"a\":\"b\"}");
		manifest_free(m);
		m = NULL;
	}
	CHECK(manifest_parse(docker, strlen(docker), NULL, &m, &why) == 0);
	if (m) {
		CHECK(m->kind == MANIFEST_IMAGE);
		CHECK_STR(m->media_type, "application/vnd.docker.distribution.manifest.v2+json");
		CHECK(m->n_layers == 1);
		manifest_free(m);
		m = NULL;
	}
	CHECK(manifest_parse(index_, strlen(index_), NULL, &m, &why) == 0);
	if (m) {
		CHECK(m->kind == MANIFEST_INDEX);
		CHECK(m->n_layers == 2);
		CHECK(m->layers[0].has_platform);
		CHECK_STR(m->layers[0].platform.variant, "v7");
		CHECK(m->layers[1].platform.variant == NULL);
		manifest_free(m);
		m = NULL;
	}
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
		why = NULL;
		int ret = manifest_parse(malformed[i], strlen(malformed[i]), NULL, &m, &why);
		if (ret != -EINVAL) {
			fprintf(stderr, "malformed[%zu] gave %d\n", i, ret);
			check_failures++;
			if (ret == 0) {
				manifest_free(m);
				m = NULL;
			}
		}
		CHECK(why != NULL);
		CHECK(m == NULL);
	}
	/* Size cap before parsing. */
	size_t big = MANIFEST_MAX_BYTES + 1;
	char *buf = malloc(big);
	memset(buf, ' ', big);
	CHECK(manifest_parse(buf, big, NULL, &m, &why) == -EFBIG);
	free(buf);

	static const struct {
		const char *t;
		int ok;
	} titles[] = {
		{ "a", 1 }, { "a/b", 1 }, { "bin/linux/amd64/entrypoint", 1 }, { "a.b..c", 1 },
		{ "", 0 }, { "/a", 0 }, { "a/../b", 0 }, { "..", 0 }, { ".", 0 }, { "a//b", 0 },
		{ "a/", 0 }, { "a\nb", 0 }, { "a\x7f", 0 }, { "a/./b", 0 },
		/* names that display as other names */
		{ "evil\xe2\x80\xae" "txt.exe", 0 },	/* U+202E RIGHT-TO-LEFT OVERRIDE */
		{ "a\xe2\x80\xaa" "b", 0 }, { "a\xe2\x81\xa6" "b", 0 }, { "a\xe2\x81\xa9", 0 },
		{ "a\xe2\x80\x8f", 0 }, { "a\xd8\x9c", 0 }, { "a\xc2\x85" "b", 0 },
		{ "a\xe2\x80\xa8" "b", 0 },
		/* ordinary non-ASCII stays */
		{ "caf\xc3\xa9/\xe2\x82\xac.txt", 1 }, { "\xe2\x80\x94" "dash", 1 },
		{ "\xd8\xa8", 1 }, { "\xc2\xa9", 1 },
	};
	for (size_t i = 0; i < sizeof(titles) / sizeof(titles[0]); i++)
		if (manifest_title_is_safe(titles[i].t) != titles[i].ok) {
			fprintf(stderr, "title \"%s\": want %d\n", titles[i].t, titles[i].ok);
			check_failures++;
		}
	/* org.opencontainers.image.created: stat times derive from it. */
	static const struct {
		const char *v;
		long long want;
	} created[] = {
		{ "2024-05-01T12:00:00Z", 1714564800 }, { "2024-05-01T12:00:00.123Z", 1714564800 },
		{ "2024-05-01T14:00:00+02:00", 1714564800 }, { "2024-05-01T11:30:00-00:30", 1714564800 },
		{ "2024-05-01", 0 }, { "yesterday", 0 }, { "2024-13-01T00:00:00Z", 0 },
		{ "2024-05-01T12:00:00", 0 }, { "1960-01-01T00:00:00Z", 0 },
	};
	for (size_t i = 0; i < sizeof(created) / sizeof(created[0]); i++) {
		char doc[512];
		snprintf(doc, sizeof(doc), "{\"schemaVersion\":2,\"mediaType\":"
			 "\"application/vnd.oci.image.manifest.v1+json\",\"config\":"
			 DESC("application/vnd.oci.empty.v1+json", H1, 2) "},\"layers\":[],"
			 "\"annotations\":{\"org.opencontainers.image.created\":\"%s\"}}",
			 created[i].v);
		m = NULL;
		CHECK(manifest_parse(doc, strlen(doc), NULL, &m, &why) == 0);
		if (m && m->created != created[i].want) {
			fprintf(stderr, "created \"%s\": %lld, want %lld\n", created[i].v,
				(long long)m->created, created[i].want);
			check_failures++;
		}
		manifest_free(m);
	}
	CHECK(manifest_parse(oci, strlen(oci), NULL, &m, &why) == 0);
	CHECK(m && m->created == 0);
	manifest_free(m);
	manifest_free(NULL);
	return CHECK_DONE();
}
