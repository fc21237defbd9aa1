/* test_platform.c - platform names, matching, layer classes, the view. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h"
#include "check.h"
#include "platform.h"

#define H(c) "sha256:" c "123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static struct oci_platform P(const char *s)
{
	struct oci_platform p;

	if (platform_parse(s, &p) != 0) {
		fprintf(stderr, "cannot parse %s\n", s);
		exit(1);
	}
	return p;
}

static struct descriptor desc(const char *mt, const char *title)
{
	struct descriptor d = { 0 };

	d.media_type = (char *)mt;
	d.digest = (char *)H("0");
	d.title = (char *)title;
	return d;
}

int main(void)
{
	struct oci_platform p, cur;
	char buf[64];

	CHECK(platform_current(&cur) == 0);
	CHECK(cur.os[0] && cur.arch[0]);

	static const struct {
		const char *in, *out;
	} parse[] = {
		{ "linux/amd64", "linux/amd64" },     { "linux/x86_64", "linux/amd64" },
		{ "linux/aarch64", "linux/arm64/v8" }, { "linux/arm64", "linux/arm64/v8" },
		{ "linux/arm", "linux/arm/v7" },       { "linux/arm/v6", "linux/arm/v6" },
		{ "darwin/arm64", "darwin/arm64/v8" }, { "linux/386", "linux/386" },
		{ "windows/amd64", "windows/amd64" },  { "linux/riscv64", "linux/riscv64" },
	};
	for (size_t i = 0; i < sizeof(parse) / sizeof(parse[0]); i++) {
		CHECK(platform_parse(parse[i].in, &p) == 0);
		platform_format(&p, buf, sizeof(buf));
		CHECK_STR(buf, parse[i].out);
	}
	static const char *const bad[] = { "", "linux", "linux/", "/amd64", "plan10/amd64",
					   "linux/z80", "linux/arm/", "linux/arm/v7/x" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(platform_parse(bad[i], &p) == -EINVAL);

	/* Matching, as containerd does it. */
	p = P("linux/arm64");
	CHECK(platform_score(&p, "linux", "arm64", NULL) > 0);
	CHECK(platform_score(&p, "linux", "arm64", "v8") > 0);
	CHECK(platform_score(&p, "linux", "amd64", NULL) == 0);
	CHECK(platform_score(&p, "darwin", "arm64", NULL) == 0);
	p = P("linux/arm/v7");
	CHECK(platform_score(&p, "linux", "arm", NULL) == 10);
	CHECK(platform_score(&p, "linux", "arm", "v7") == 10);
	CHECK(platform_score(&p, "linux", "arm", "v6") > 0);
	CHECK(platform_score(&p, "linux", "arm", "v6") < 10);
	CHECK(platform_score(&p, "linux", "arm", "v8") == 0);
	p = P("linux/arm/v6");
	CHECK(platform_score(&p, "linux", "arm", "v7") == 0);

	/* Names in titles. */
	static const struct {
		const char *name, *plat;
	} names[] = {
		{ "bin/linux/amd64/entrypoint", "linux/amd64" },
		{ "tool-linux-amd64", "linux/amd64" },
		{ "tool_darwin_arm64.tar.gz", "darwin/arm64/v8" },
		{ "schemahero-postgres-linux-amd64.tar.gz.sha256", "linux/amd64" },
		{ "oras_1.2.0_linux_x86_64.tar.gz", "linux/amd64" },
		{ "x-linux-arm-v6", "linux/arm/v6" },
		{ "linux-arm64", "linux/arm64/v8" },
		{ "README.md", NULL },
		{ "linuxamd64", NULL },
		{ "mylinux-amd64", NULL },
		{ "linux-amd64x", NULL },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		bool found = platform_in_name(names[i].name, &p);
		CHECK(found == (names[i].plat != NULL));
		if (found && names[i].plat) {
			platform_format(&p, buf, sizeof(buf));
			if (strcmp(buf, names[i].plat)) {
				fprintf(stderr, "%s: got %s want %s\n", names[i].name, buf,
					names[i].plat);
				check_failures++;
			}
		}
	}

	/* Layer classes. */
	p = P("linux/amd64");
	struct descriptor d = desc("application/vnd.sourceplane.bin.linux-amd64", "bin/linux/amd64/entrypoint");
	CHECK(platform_layer_class(&d, &p) == LAYER_THIS);
	d = desc("application/vnd.sourceplane.bin.darwin-arm64", NULL);
	CHECK(platform_layer_class(&d, &p) == LAYER_OTHER);
	d = desc("application/vnd.sourceplane.provider.v1", "thin.provider.yaml");
	CHECK(platform_layer_class(&d, &p) == LAYER_COMMON);
	d = desc("application/octet-stream", "tool-linux-arm64");
	CHECK(platform_layer_class(&d, &p) == LAYER_OTHER);
	d = desc("application/octet-stream", NULL);
	d.has_platform = true;
	d.platform.os = "linux";
	d.platform.architecture = "amd64";
	CHECK(platform_layer_class(&d, &p) == LAYER_THIS);

	d = desc("application/vnd.oci.image.layer.v1.tar+gzip", NULL);
	CHECK(platform_layer_is_archive(&d));
	d = desc("application/gzip", "x.tar.gz");
	CHECK(platform_layer_is_archive(&d));
	d = desc("application/vnd.oras.v1", "thin.provider.yaml");
	CHECK(!platform_layer_is_archive(&d));
	CHECK(platform_layer_may_hold_binaries(&d));
	d = desc("text/plain", "x.txt");
	CHECK(!platform_layer_is_archive(&d) && !platform_layer_may_hold_binaries(&d));

	/* The view of a seed-000 provider on linux/amd64. */
	static const char seed000[] =
		"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		"\"config\":{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"" H("0") "\",\"size\":2},"
		"\"layers\":["
		"{\"mediaType\":\"application/vnd.sourceplane.provider.v1\",\"digest\":\"" H("1") "\",\"size\":10,"
		"\"annotations\":{\"org.opencontainers.image.title\":\"thin.provider.yaml\"}},"
		"{\"mediaType\":\"application/vnd.sourceplane.bin.linux-amd64\",\"digest\":\"" H("2") "\",\"size\":20,"
		"\"annotations\":{\"org.opencontainers.image.title\":\"bin/linux/amd64/entrypoint\"}},"
		"{\"mediaType\":\"application/vnd.sourceplane.bin.darwin-arm64\",\"digest\":\"" H("3") "\",\"size\":30,"
		"\"annotations\":{\"org.opencontainers.image.title\":\"bin/darwin/arm64/entrypoint\"}}]}";
	struct manifest *m = NULL;
	struct aview *v = NULL;
	const char *rest;
	CHECK(manifest_parse(seed000, strlen(seed000), NULL, &m, NULL) == 0);
	CHECK(aview_build(NULL, NULL, 0, m, H("9"), strlen(seed000), &p, NULL, NULL, &v) == 0);
	if (v) {
		const struct aentry *e = aview_lookup(v, "entrypoint", &rest);
		CHECK(e && e->kind == AE_BLOB && e->mode == 0555 && e->size == 20);
		e = aview_lookup(v, "bin/linux/amd64/entrypoint", &rest);
		CHECK(e && e->mode == 0555);
		CHECK(aview_lookup(v, "bin/darwin", &rest) == NULL);
		CHECK(aview_lookup(v, "bin/darwin/arm64/entrypoint", &rest) == NULL);
		e = aview_lookup(v, "thin.provider.yaml", &rest);
		CHECK(e && e->mode == 0444);
		CHECK(aview_lookup(v, "manifest.json", &rest) != NULL);
		CHECK(aview_lookup(v, "oci-layout", &rest) != NULL);
		e = aview_lookup(v, "index.json", &rest);
		CHECK(e && e->kind == AE_DATA && strstr(e->data, H("9")));
		/* every blob is addressable, other platforms' too */
		CHECK(aview_lookup(v, "blobs/sha256/3123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", &rest) != NULL);
		aview_free(v);
	}

	/* Titles that ask for the OCI layout's names (found by
	 * fuzz_manifest): they stay only under blobs/, the view is still
	 * built, and blobs/sha256/<hex> is always the blob of that digest. */
	static const char grabby[] =
		"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		"\"config\":{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"" H("0") "\",\"size\":2},"
		"\"layers\":["
		"{\"mediaType\":\"application/vnd.sourceplane.bin.linux-amd64\",\"digest\":\"" H("1") "\",\"size\":10,"
		"\"annotations\":{\"org.opencontainers.image.title\":\"bin/linux/amd64/oci-layout\"}},"
		"{\"mediaType\":\"text/plain\",\"digest\":\"" H("2") "\",\"size\":20,"
		"\"annotations\":{\"org.opencontainers.image.title\":\"index.json\"}},"
		"{\"mediaType\":\"text/plain\",\"digest\":\"" H("3") "\",\"size\":30,"
		"\"annotations\":{\"org.opencontainers.image.title\":\"blobs/sha256/4123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}},"
		"{\"mediaType\":\"application/tar\",\"digest\":\"" H("5") "\",\"size\":40,"
		"\"annotations\":{\"org.opencontainers.image.title\":\"blobs/x\"}},"
		"{\"mediaType\":\"text/plain\",\"digest\":\"" H("4") "\",\"size\":50}]}";
	m = NULL;
	v = NULL;
	p = P("linux/amd64");
	CHECK(manifest_parse(grabby, strlen(grabby), NULL, &m, NULL) == 0);
	CHECK(aview_build(NULL, NULL, 0, m, H("9"), strlen(grabby), &p, NULL, NULL, &v) == 0);
	if (v) {
		const struct aentry *e = aview_lookup(v, "oci-layout", &rest);
		CHECK(e && e->kind == AE_DATA);
		e = aview_lookup(v, "index.json", &rest);
		CHECK(e && e->kind == AE_DATA && strstr(e->data, H("9")));
		e = aview_lookup(v, "bin/linux/amd64/oci-layout", &rest);
		CHECK(e && e->kind == AE_BLOB && e->size == 10);
		e = aview_lookup(v, "blobs/sha256/4123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", &rest);
		CHECK(e && e->size == 50 && !strcmp(e->digest, H("4")));
		CHECK(aview_lookup(v, "blobs/x", &rest) == NULL);
		CHECK(aview_lookup(v, "blobs/x.d", &rest) == NULL);
		aview_free(v);
	}

	/* Enough layers to grow the entry table several times: generated
	 * entries (oci-layout, index.json) keep a valid digest (they pointed
	 * into the old table: found by fuzz_manifest). */
	char *many = NULL;
	size_t many_len = 0;
	FILE *f = open_memstream(&many, &many_len);
	fprintf(f, "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/json\","
		"\"digest\":\"%s\",\"size\":2},\"layers\":[", H("0"));
	for (int i = 0; i < 100; i++)
		fprintf(f, "%s{\"mediaType\":\"text/plain\",\"digest\":\"sha256:%064x\",\"size\":1}",
			i ? "," : "", i + 1);
	fprintf(f, "]}");
	fclose(f);
	m = NULL;
	v = NULL;
	CHECK(manifest_parse(many, many_len, NULL, &m, NULL) == 0);
	CHECK(aview_build(NULL, NULL, 0, m, H("9"), many_len, &p, NULL, NULL, &v) == 0);
	if (v) {
		CHECK(v->n > 100);
		const char *gen[] = { "oci-layout", "index.json" };
		for (size_t i = 0; i < 2; i++) {
			const struct aentry *e = aview_lookup(v, gen[i], &rest);
			CHECK(e && e->kind == AE_DATA && e->digest == e->data_digest);
			CHECK(e && !strncmp(e->digest, "sha256:", 7) && strlen(e->digest) == 71);
		}
		aview_free(v);
	}
	free(many);
	return CHECK_DONE();
}
