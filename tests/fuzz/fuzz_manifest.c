/* fuzz_manifest.c - libFuzzer target for manifest and index parsing
 * (registry/manifest.h) and the artifact view built from the result
 * (layers/artifact.h).
 *
 * The input is the manifest body; the Content-Type passed along is picked
 * by the input's length (none, each manifest type, a bogus one). A parsed
 * manifest must keep the header's promises (valid digests, bounded sizes,
 * safe titles); the view built from it for linux/amd64 and linux/arm/v7
 * must succeed (there is no real out-of-memory here) and hold unique, safe
 * relative paths whose parents are directories, each found again by
 * aview_lookup(); blobs/sha256/<hex> must be exactly the blob of that digest.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "artifact.h"
#include "blobcache.h"
#include "manifest.h"
#include "platform.h"
#include "ref.h"


static const char *const content_types[] = {
	NULL,
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"text/plain",
};

static void check_descriptor(const struct descriptor *d)
{
	FUZZ_ASSERT(d->media_type && *d->media_type);
	FUZZ_ASSERT(d->digest && ref_valid_digest(d->digest));
	FUZZ_ASSERT(d->size <= DESCRIPTOR_MAX_SIZE);
	FUZZ_ASSERT(!d->title || manifest_title_is_safe(d->title));
	FUZZ_ASSERT(!d->has_platform || (d->platform.os && d->platform.architecture));
}

static void check_manifest(const struct manifest *m)
{
	FUZZ_ASSERT(m->media_type);
	FUZZ_ASSERT(m->n_layers <= MANIFEST_MAX_ENTRIES);
	FUZZ_ASSERT(m->n_layers == 0 || m->layers);
	FUZZ_ASSERT(m->kind == MANIFEST_IMAGE || !m->has_config);
	FUZZ_ASSERT(m->kind == MANIFEST_INDEX || m->has_config);
	if (m->has_config)
		check_descriptor(&m->config);
	for (size_t i = 0; i < m->n_layers; i++)
		check_descriptor(&m->layers[i]);
}

/* A path in the view: relative, no empty, "." or ".." component. */
static bool view_path_ok(const char *p)
{
	if (!*p || *p == '/')
		return false;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len == 0 || (len == 1 && p[0] == '.') ||
		    (len == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		if (!slash)
			return true;
		p = slash + 1;
	}
}

static void check_view(const struct aview *v, const struct oci_platform *p, bool layout)
{
	int fb[8];

	for (size_t i = 0; i < v->n; i++) {
		const struct aentry *e = &v->e[i];
		const char *rest;

		FUZZ_ASSERT(e->path && view_path_ok(e->path));
		FUZZ_ASSERT(e->kind == AE_DIR || e->kind == AE_FALLBACK || e->digest);
		FUZZ_ASSERT(e->kind != AE_DATA || e->data);
		for (size_t j = 0; j < i; j++)
			FUZZ_ASSERT(strcmp(v->e[j].path, e->path) != 0);
		FUZZ_ASSERT(aview_lookup(v, e->path, &rest) == e && rest == NULL);
		FUZZ_ASSERT(!e->digest || ref_valid_digest(e->digest));

		/* The layout view: blobs/sha256/<hex> holds exactly the blob of
		 * that digest, and nothing else lives under blobs/. The artifact
		 * view: what oras pull gives, so none of the layout's own data
		 * (a layer may well be titled "index.json": it is that layer). */
		if (!layout) {
			FUZZ_ASSERT(e->kind != AE_DATA);
		} else if (!strncmp(e->path, "blobs/", 6)) {
			if (!strcmp(e->path, "blobs/sha256")) {
				FUZZ_ASSERT(e->kind == AE_DIR);
			} else {
				FUZZ_ASSERT(!strncmp(e->path, "blobs/sha256/", 13));
				FUZZ_ASSERT(e->kind == AE_BLOB || e->kind == AE_MANIFEST ||
					    e->kind == AE_DATA);
				FUZZ_ASSERT(!strcmp(e->digest + 7, e->path + 13));
			}
		}

		/* Every parent is a directory entry. */
		char *parent = strdup(e->path);
		FUZZ_ASSERT(parent);
		for (char *s = strrchr(parent, '/'); s; s = strrchr(parent, '/')) {
			*s = '\0';
			const struct aentry *d = aview_lookup(v, parent, &rest);
			FUZZ_ASSERT(d && d->kind == AE_DIR && rest == NULL);
		}
		free(parent);
	}
	if (layout) {
		FUZZ_ASSERT(aview_lookup(v, "index.json", &(const char *){ NULL }));
		FUZZ_ASSERT(aview_lookup(v, "oci-layout", &(const char *){ NULL }));
		for (size_t i = 0; i < v->n; i++)
			FUZZ_ASSERT(!strcmp(v->e[i].path, "index.json") ||
				    !strcmp(v->e[i].path, "oci-layout") ||
				    !strncmp(v->e[i].path, "blobs", 5));
		return;
	}
	FUZZ_ASSERT(aview_lookup(v, "manifest.json", &(const char *){ NULL }) || !v->m);

	size_t n = aview_fallback_layers(v, p, fb, sizeof(fb) / sizeof(fb[0]));
	FUZZ_ASSERT(n <= sizeof(fb) / sizeof(fb[0]));
	for (size_t i = 0; i < n; i++)
		FUZZ_ASSERT(v->m && fb[i] >= 0 && (size_t)fb[i] < v->m->n_layers);
}

static void warn(void *arg, bool expected, const char *msg)
{
	(void)arg;
	(void)expected;
	FUZZ_ASSERT(msg && *msg);
}

static void view_for(const uint8_t *data, size_t size, const char *ct, const char *digest,
		     const char *platform)
{
	struct oci_platform p;
	struct manifest *m = NULL;
	struct aview *v = NULL;
	int ret;

	FUZZ_ASSERT(platform_parse(platform, &p) == 0);
	if (manifest_parse(data, size, ct, &m, NULL) != 0)
		return;
	if (m->kind == MANIFEST_INDEX) {
		int i = platform_select(m, &p);
		FUZZ_ASSERT(i == -ENOENT || (i >= 0 && (size_t)i < m->n_layers));
		ret = aview_build(m, digest, size, NULL, NULL, 0, &p, warn, NULL, &v);
	} else {
		for (size_t i = 0; i < m->n_layers; i++) {
			(void)platform_layer_class(&m->layers[i], &p);
			(void)platform_layer_is_archive(&m->layers[i]);
		}
		ret = aview_build(NULL, NULL, 0, m, digest, size, &p, warn, NULL, &v);
	}
	if (ret != 0)
		fprintf(stderr, "aview_build: %s\n", strerror(-ret));
	FUZZ_ASSERT(ret == 0);
	check_view(v, &p, false);
	/* The layout view of the same manifest (an index's children unknown:
	 * only the manifests themselves; an image: every blob). */
	const struct manifest *top = v->index ? v->index : v->m;
	struct aview *l = NULL;
	ret = aview_build_layout(top, digest, size, NULL, &l);
	FUZZ_ASSERT(ret == 0);
	check_view(l, &p, true);
	aview_free(l);
	aview_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *ct = content_types[size % (sizeof(content_types) / sizeof(content_types[0]))];
	struct manifest *m = (struct manifest *)0x1;	/* must stay untouched on failure */
	const char *why = NULL;
	char digest[72];
	int ret;

	ret = manifest_parse(data, size, ct, &m, &why);
	FUZZ_ASSERT(ret == 0 || ret == -EINVAL || ret == -EFBIG);
	if (ret < 0) {
		FUZZ_ASSERT(why != NULL);
		FUZZ_ASSERT(m == (struct manifest *)0x1);
		return 0;
	}
	check_manifest(m);
	manifest_free(m);
	manifest_free(NULL);

	blobcache_digest_of(data, size, digest);
	view_for(data, size, ct, digest, "linux/amd64");
	view_for(data, size, ct, digest, "linux/arm/v7");
	return 0;
}
