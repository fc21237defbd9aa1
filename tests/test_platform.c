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

/* The messages a view told, joined by newlines. */
struct told {
	char text[8192];
	int expected, faults;
};

static void tell(void *arg, bool expected, const char *msg)
{
	struct told *t = arg;
	size_t n = strlen(t->text);

	snprintf(t->text + n, sizeof(t->text) - n, "%s\n", msg);
	if (expected)
		t->expected++;
	else
		t->faults++;
}

static struct aview *view_of(const char *json, const char *platform, struct told *t)
{
	struct oci_platform p = P(platform);
	struct manifest *m = NULL;
	struct aview *v = NULL;

	memset(t, 0, sizeof(*t));
	CHECK(manifest_parse(json, strlen(json), NULL, &m, NULL) == 0);
	if (m)
		CHECK(aview_build(NULL, NULL, 0, m, H("9"), strlen(json), &p, tell, t, &v) == 0);
	return v;
}

#define LAYER(mt, hex, size, ann) \
	"{\"mediaType\":\"" mt "\",\"digest\":\"" H(hex) "\",\"size\":" #size ann "}"
#define TITLE(t) ",\"annotations\":{\"org.opencontainers.image.title\":\"" t "\"}"
#define MANIFEST(layers) \
	"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\"," \
	"\"config\":{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"" H("0") \
	"\",\"size\":2},\"layers\":[" layers "]}"

/* What oras pull gives: an oras directory is a directory, untitled
 * layers are layer<N>, a refused or clashing title is told and shown
 * as layer<N>, other platforms' layers are told and left out. */
static void test_view_names(void)
{
	static const char oras[] = MANIFEST(
		LAYER("application/vnd.oci.image.layer.v1.tar+gzip", "1", 10,
		      ",\"annotations\":{\"io.deis.oras.content.digest\":\"" H("8") "\","
		      "\"io.deis.oras.content.unpack\":\"true\","
		      "\"org.opencontainers.image.title\":\"assets\"}") ","
		LAYER("application/octet-stream", "2", 20, "") ","
		LAYER("application/vnd.oci.image.layer.v1.tar", "3", 30, "") ","
		LAYER("text/plain", "4", 40, TITLE("../evil.txt")) ","
		LAYER("text/plain", "5", 50, TITLE("evil\xe2\x80\xae" "txt.exe")) ","
		LAYER("text/plain", "6", 60, TITLE("manifest.json")) ","
		LAYER("application/vnd.x.bin.linux-arm64", "7", 70, ""));
	struct told t;
	const char *rest;
	struct aview *v = view_of(oras, "linux/amd64", &t);

	if (!v)
		return;
	const struct aentry *e = aview_lookup(v, "assets", &rest);
	CHECK(e && e->kind == AE_ARCHIVE && e->subdir && !strcmp(e->subdir, "assets"));
	e = aview_lookup(v, "assets/schemas/x.json", &rest);
	CHECK(e && e->kind == AE_ARCHIVE && rest && !strcmp(rest, "schemas/x.json"));
	CHECK(aview_lookup(v, "assets.d", &rest) == NULL);	/* no raw archive beside it */
	e = aview_lookup(v, "layer1", &rest);
	CHECK(e && e->kind == AE_BLOB && e->size == 20 && e->mode == 0444);
	e = aview_lookup(v, "layer2", &rest);
	CHECK(e && e->kind == AE_BLOB && e->size == 30);
	e = aview_lookup(v, "layer2.d", &rest);
	CHECK(e && e->kind == AE_ARCHIVE && !e->subdir);
	CHECK(aview_lookup(v, "layer3", &rest) && aview_lookup(v, "layer4", &rest));
	e = aview_lookup(v, "layer5", &rest);
	CHECK(e && e->size == 60);
	e = aview_lookup(v, "manifest.json", &rest);
	CHECK(e && e->kind == AE_MANIFEST);
	CHECK(aview_lookup(v, "layer6", &rest) == NULL);
	for (size_t i = 0; i < v->n; i++)	/* the spoofing name is nowhere */
		CHECK(!strstr(v->e[i].path, "\xe2\x80\xae") && !strstr(v->e[i].path, ".."));
	CHECK(strstr(t.text, "layer " H("4") ": title \"../evil.txt\" refused"));
	CHECK(strstr(t.text, "title \"evil\\xe2\\x80\\xaetxt.exe\" refused"));
	CHECK(strstr(t.text, "shown as layer4"));
	CHECK(strstr(t.text, "layer " H("6") ": title \"manifest.json\" clashes"));
	CHECK(strstr(t.text, "layer " H("7") " (application/vnd.x.bin.linux-arm64, 70 bytes) is "
			     "for another platform"));
	CHECK(!strstr(t.text, "\xe2\x80\xae"));	/* the log cannot be spoofed either */
	CHECK(t.expected == 1 && t.faults == 3);
	CHECK(v->skipped == 70);
	aview_free(v);

	/* A titled program and a tar layer (issue 12): no fallback
	 * "entrypoint" that would then be ENOENT. */
	static const char tool[] = MANIFEST(
		LAYER("application/octet-stream", "1", 10, TITLE("bin/tool")) ","
		LAYER("application/vnd.oci.image.layer.v1.tar", "2", 20, TITLE("data.tar")));
	v = view_of(tool, "linux/amd64", &t);
	if (v) {
		CHECK(aview_lookup(v, "bin/tool", &rest) != NULL);
		CHECK(aview_lookup(v, "data.tar.d", &rest) != NULL);
		CHECK(aview_lookup(v, "entrypoint", &rest) == NULL);
		CHECK(t.faults == 0 && t.expected == 0);
		aview_free(v);
	}

	/* Seed 000's legacy shape (oras directories): the fallback stays. */
	static const char legacy[] = MANIFEST(
		LAYER("application/vnd.oras.v1", "1", 10, TITLE("thin.provider.yaml")) ","
		LAYER("application/vnd.oci.image.layer.v1.tar+gzip", "2", 20,
		      ",\"annotations\":{\"io.deis.oras.content.unpack\":\"true\","
		      "\"org.opencontainers.image.title\":\"bin\"}"));
	v = view_of(legacy, "linux/amd64", &t);
	if (v) {
		const struct aentry *f = aview_lookup(v, "entrypoint", &rest);
		CHECK(f && f->kind == AE_FALLBACK && f->mode == 0555);
		f = aview_lookup(v, "bin", &rest);
		CHECK(f && f->kind == AE_ARCHIVE && f->subdir && !strcmp(f->subdir, "bin"));
		aview_free(v);
	}

	/* This platform's untitled binary: layer<N> and "entrypoint". */
	static const char untitled[] = MANIFEST(
		LAYER("application/vnd.x.bin.linux-amd64", "1", 10, "") ","
		LAYER("application/vnd.x.bin.darwin-arm64", "2", 20, ""));
	v = view_of(untitled, "linux/amd64", &t);
	if (v) {
		const struct aentry *f = aview_lookup(v, "entrypoint", &rest);
		CHECK(f && f->kind == AE_BLOB && f->mode == 0555 && f->size == 10);
		f = aview_lookup(v, "layer0", &rest);
		CHECK(f && f->mode == 0555 && f->size == 10);
		CHECK(aview_lookup(v, "layer1", &rest) == NULL);
		CHECK(t.expected == 1);
		aview_free(v);
	}
}

/* The layout of an index: the index, every child manifest, and the
 * configs and layers of the children whose manifests are known. */
static void test_layout_of_index(void)
{
	static const char idx[] =
		"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
		"\"manifests\":["
		"{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" H("a")
		"\",\"size\":100,\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
		"{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" H("b")
		"\",\"size\":200,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}}]}";
	static const char child[] = MANIFEST(LAYER("application/octet-stream", "1", 10, ""));
	struct manifest *top = NULL, **kids = calloc(2, sizeof(*kids));
	struct aview *l = NULL;
	const char *rest;

	CHECK(kids && manifest_parse(idx, strlen(idx), NULL, &top, NULL) == 0);
	CHECK(manifest_parse(child, strlen(child), NULL, &kids[0], NULL) == 0);
	if (!top || !kids)
		return;
	CHECK(aview_build_layout(top, H("9"), strlen(idx), kids, &l) == 0);
	if (l) {
		const struct aentry *e = aview_lookup(l, "index.json", &rest);
		CHECK(e && strstr(e->data, "\"mediaType\":\"application/vnd.oci.image.index.v1+json\""));
		CHECK(e && strstr(e->data, H("9")));
		const char *want[] = { "9", "a", "b", "0", "1" };
		for (size_t i = 0; i < 5; i++) {
			char path[96];
			snprintf(path, sizeof(path), "blobs/sha256/%s123456789abcdef0123456789abcdef"
				 "0123456789abcdef0123456789abcdef", want[i]);
			e = aview_lookup(l, path, &rest);
			CHECK(e != NULL);
			CHECK(e && (i < 3) == (e->kind == AE_MANIFEST));
		}
		e = aview_lookup(l, "blobs/sha256/b123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", &rest);
		CHECK(e && e->size == 200);
		CHECK(l->n == 4 + 5);
		/* Its footprint: its own manifests (kids) and entries, not @top. */
		CHECK(aview_footprint(l) > manifest_footprint(kids[0]) + l->n * sizeof(*l->e));
		CHECK(aview_footprint(NULL) == 0);
		aview_free(l);
	}
	manifest_free(top);
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
		/* what oras pull gives: no layout here, nothing of darwin */
		CHECK(aview_lookup(v, "oci-layout", &rest) == NULL);
		CHECK(aview_lookup(v, "index.json", &rest) == NULL);
		CHECK(aview_lookup(v, "blobs", &rest) == NULL);
		for (size_t i = 0; i < v->n; i++)
			CHECK(!v->e[i].digest || strcmp(v->e[i].digest, H("3")));
		/* the layout view: every blob is addressable, other platforms' too */
		struct aview *l = NULL;
		CHECK(aview_build_layout(v->m, H("9"), strlen(seed000), NULL, &l) == 0);
		if (l) {
			e = aview_lookup(l, "index.json", &rest);
			CHECK(e && e->kind == AE_DATA && strstr(e->data, H("9")));
			CHECK(aview_lookup(l, "oci-layout", &rest) != NULL);
			for (const char *c = "01239"; *c; c++) {
				char path[96];
				snprintf(path, sizeof(path), "blobs/sha256/%c123456789abcdef0123456789"
					 "abcdef0123456789abcdef0123456789abcdef", *c);
				e = aview_lookup(l, path, &rest);
				CHECK(e && (e->kind == AE_BLOB || e->kind == AE_MANIFEST));
			}
			CHECK(l->n == 2 + 2 + 5);	/* files, blobs/, blobs/sha256/, 5 blobs */
			aview_free(l);
		}
		aview_free(v);
	}

	/* Titles that ask for the OCI layout's names (found by
	 * fuzz_manifest): the artifact view has no layout, so they are plain
	 * names; in the layout view blobs/sha256/<hex> is always the blob of
	 * that digest. */
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
		const struct aentry *e = aview_lookup(v, "index.json", &rest);
		CHECK(e && e->kind == AE_BLOB && !strcmp(e->digest, H("2")));
		e = aview_lookup(v, "bin/linux/amd64/oci-layout", &rest);
		CHECK(e && e->kind == AE_BLOB && e->size == 10);
		e = aview_lookup(v, "blobs/x", &rest);
		CHECK(e && e->kind == AE_BLOB && e->size == 40);
		struct aview *l = NULL;
		CHECK(aview_build_layout(v->m, H("9"), strlen(grabby), NULL, &l) == 0);
		if (l) {
			e = aview_lookup(l, "index.json", &rest);
			CHECK(e && e->kind == AE_DATA && strstr(e->data, H("9")));
			e = aview_lookup(l, "blobs/sha256/4123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", &rest);
			CHECK(e && e->size == 50 && !strcmp(e->digest, H("4")));
			CHECK(aview_lookup(l, "blobs/x", &rest) == NULL);
			aview_free(l);
		}
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
	struct aview *l = NULL;
	if (v)
		CHECK(aview_build_layout(v->m, H("9"), many_len, NULL, &l) == 0);
	if (l) {
		CHECK(l->n > 100);
		const char *gen[] = { "oci-layout", "index.json" };
		for (size_t i = 0; i < 2; i++) {
			const struct aentry *e = aview_lookup(l, gen[i], &rest);
			CHECK(e && e->kind == AE_DATA && e->digest == e->data_digest);
			CHECK(e && !strncmp(e->digest, "sha256:", 7) && strlen(e->digest) == 71);
		}
		aview_free(l);
	}
	aview_free(v);
	free(many);
	test_view_names();
	test_layout_of_index();
	return CHECK_DONE();
}
