/* manifest.c - manifest and index parsing with jansson. */
#include "manifest.h"
#include "ref.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TITLE_KEY "org.opencontainers.image.title"

/* Characters that make a name display as another one: C1 controls,
 * the bidirectional marks, embeddings, overrides and isolates (U+061C,
 * U+200E-U+200F, U+202A-U+202E, U+2066-U+2069) and the line and paragraph
 * separators (U+2028-U+2029). @c is UTF-8 (jansson checked it). */
static bool spoofing_char(const unsigned char *c)
{
	if (c[0] == 0xc2)
		return c[1] >= 0x80 && c[1] <= 0x9f;
	if (c[0] == 0xd8)
		return c[1] == 0x9c;
	if (c[0] == 0xe2 && c[1] == 0x80)
		return (c[2] >= 0x8e && c[2] <= 0x8f) || (c[2] >= 0xa8 && c[2] <= 0xae);
	if (c[0] == 0xe2 && c[1] == 0x81)
		return c[2] >= 0xa6 && c[2] <= 0xa9;
	return false;
}

bool manifest_title_is_safe(const char *t)
{
	const char *p = t;

	if (!t || !*t || *t == '/')
		return false;
	for (const unsigned char *c = (const unsigned char *)t; *c; c++)
		if (*c < 0x20 || *c == 0x7f || spoofing_char(c))
			return false;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len == 0 || len > 255)
			return false;
		if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		if (!slash)
			return true;
		p = slash + 1;
	}
}

static char *dup_str(json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? strdup(s) : NULL;
}

static void descriptor_release(struct descriptor *d)
{
	free(d->media_type);
	free(d->digest);
	free(d->title);
	free(d->refused_title);
	free(d->artifact_type);
	free(d->annotations);
	free(d->platform.os);
	free(d->platform.architecture);
	free(d->platform.variant);
}

static char *annotations_text(json_t *obj)
{
	json_t *a = json_object_get(obj, "annotations");

	if (!json_is_object(a))
		return NULL;
	return json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
}

/* "2024-05-01T12:00:00Z", "...T12:00:00.5+02:00": seconds since the
 * epoch; 0 for anything else (no guessing at other formats). */
static int64_t rfc3339_seconds(const char *s)
{
	int y, mo, d, h, mi, sec, n = 0, off = 0;
	struct tm tm = { 0 };
	time_t t;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
	    n != 19 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return 0;
	s += n;
	if (*s == '.')
		for (s++; *s >= '0' && *s <= '9'; s++)
			;
	if ((*s == '+' || *s == '-') && strlen(s) == 6 && s[3] == ':') {
		int oh, om;
		if (sscanf(s + 1, "%2d:%2d", &oh, &om) != 2 || oh > 23 || om > 59)
			return 0;
		off = (oh * 60 + om) * 60 * (*s == '+' ? 1 : -1);
	} else if (strcmp(s, "Z") && strcmp(s, "z")) {
		return 0;
	}
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	return t < 0 ? 0 : (int64_t)t - off;
}

static int64_t created_of(json_t *obj)
{
	json_t *a = json_object_get(obj, "annotations");
	const char *v = json_string_value(json_object_get(a, "org.opencontainers.image.created"));

	return v ? rfc3339_seconds(v) : 0;
}

static int descriptor_parse(json_t *j, struct descriptor *d, const char **why)
{
	json_t *size, *plat;
	const char *digest, *mt;

	memset(d, 0, sizeof(*d));
	if (!json_is_object(j)) {
		*why = "descriptor is not an object";
		return -EINVAL;
	}
	mt = json_string_value(json_object_get(j, "mediaType"));
	digest = json_string_value(json_object_get(j, "digest"));
	size = json_object_get(j, "size");
	if (!mt || !*mt) {
		*why = "descriptor without mediaType";
		return -EINVAL;
	}
	if (!digest || !ref_valid_digest(digest)) {
		*why = "descriptor digest missing or not sha256:<64 hex>";
		return -EINVAL;
	}
	if (!json_is_integer(size) || json_integer_value(size) < 0 ||
	    (uint64_t)json_integer_value(size) > DESCRIPTOR_MAX_SIZE) {
		*why = "descriptor size missing, negative or too large";
		return -EINVAL;
	}
	d->size = (uint64_t)json_integer_value(size);
	d->media_type = strdup(mt);
	d->digest = strdup(digest);
	d->artifact_type = dup_str(j, "artifactType");
	d->annotations = annotations_text(j);
	if (!d->media_type || !d->digest)
		goto out_nomem;

	json_t *ann = json_object_get(j, "annotations");
	const char *title = json_string_value(json_object_get(ann, TITLE_KEY));
	if (title && manifest_title_is_safe(title))
		d->title = strdup(title);
	else if (title)
		d->refused_title = strdup(title);
	if (title && !d->title && !d->refused_title)
		goto out_nomem;

	plat = json_object_get(j, "platform");
	if (json_is_object(plat)) {
		d->platform.os = dup_str(plat, "os");
		d->platform.architecture = dup_str(plat, "architecture");
		d->platform.variant = dup_str(plat, "variant");
		d->has_platform = d->platform.os && d->platform.architecture;
	}
	return 0;
out_nomem:
	descriptor_release(d);
	return -ENOMEM;
}

/* The manifest types we parse (and ask for in Accept). */
static bool known_type(const char *mt)
{
	return !strcmp(mt, "application/vnd.oci.image.manifest.v1+json") ||
	       !strcmp(mt, "application/vnd.oci.image.index.v1+json") ||
	       !strcmp(mt, "application/vnd.docker.distribution.manifest.v2+json") ||
	       !strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json");
}

static bool is_index_type(const char *mt)
{
	return mt && (strcmp(mt, "application/vnd.oci.image.index.v1+json") == 0 ||
		      strcmp(mt, "application/vnd.docker.distribution.manifest.list.v2+json") == 0);
}

int manifest_parse(const void *buf, size_t len, const char *content_type,
		   struct manifest **out, const char **why)
{
	const char *dummy, *mt;
	json_error_t jerr;
	json_t *root, *arr, *cfg;
	struct manifest *m;
	int ret = -EINVAL;

	if (!why)
		why = &dummy;
	*why = NULL;
	if (len > MANIFEST_MAX_BYTES) {
		*why = "manifest larger than 4 MiB";
		return -EFBIG;
	}
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		*why = "manifest is not valid JSON";
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		ret = -ENOMEM;
		goto out_json;
	}
	if (!json_is_object(root)) {
		*why = "manifest is not a JSON object";
		goto out_free;
	}
	json_t *sv = json_object_get(root, "schemaVersion");
	if (!json_is_integer(sv) || json_integer_value(sv) != 2) {
		*why = "manifest schemaVersion is not 2";
		goto out_free;
	}
	mt = json_string_value(json_object_get(root, "mediaType"));
	if (mt && !known_type(mt)) {
		*why = "unsupported manifest mediaType";
		goto out_free;
	}
	if (!mt && content_type && known_type(content_type))
		mt = content_type;
	if (!mt) {
		/* OCI allows omitting mediaType: tell by shape. */
		mt = json_object_get(root, "manifests") ?
			"application/vnd.oci.image.index.v1+json" :
			"application/vnd.oci.image.manifest.v1+json";
	}
	m->kind = is_index_type(mt) ? MANIFEST_INDEX : MANIFEST_IMAGE;
	if (m->kind == MANIFEST_IMAGE && json_object_get(root, "manifests") &&
	    !json_object_get(root, "layers"))
		m->kind = MANIFEST_INDEX;
	m->media_type = strdup(mt);
	m->artifact_type = dup_str(root, "artifactType");
	m->annotations = annotations_text(root);
	m->created = created_of(root);
	if (!m->media_type) {
		ret = -ENOMEM;
		goto out_free;
	}

	if (m->kind == MANIFEST_IMAGE) {
		cfg = json_object_get(root, "config");
		if (!cfg) {
			*why = "image manifest without config";
			goto out_free;
		}
		ret = descriptor_parse(cfg, &m->config, why);
		if (ret < 0)
			goto out_free;
		m->has_config = true;
		arr = json_object_get(root, "layers");
	} else {
		arr = json_object_get(root, "manifests");
	}
	ret = -EINVAL;
	if (!json_is_array(arr)) {
		*why = m->kind == MANIFEST_IMAGE ? "manifest layers is not an array" :
						   "index manifests is not an array";
		goto out_free;
	}
	if (json_array_size(arr) > MANIFEST_MAX_ENTRIES) {
		*why = "too many entries in manifest";
		goto out_free;
	}
	m->layers = calloc(json_array_size(arr) + 1, sizeof(*m->layers));
	if (!m->layers) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < json_array_size(arr); i++) {
		ret = descriptor_parse(json_array_get(arr, i), &m->layers[i], why);
		if (ret < 0)
			goto out_free;
		m->n_layers++;
	}
	json_decref(root);
	*out = m;
	return 0;
out_free:
	manifest_free(m);
out_json:
	json_decref(root);
	return ret;
}

size_t manifest_alloc_size(size_t n)
{
	/* glibc: n + a size word, in 16-byte steps, 32 at least. */
	size_t c = (n + sizeof(size_t) + 15) & ~(size_t)15;

	return n ? (c < 32 ? 32 : c) : 0;
}

static size_t str_size(const char *s)
{
	return s ? manifest_alloc_size(strlen(s) + 1) : 0;
}

static size_t descriptor_footprint(const struct descriptor *d)
{
	return str_size(d->media_type) + str_size(d->digest) + str_size(d->title) +
	       str_size(d->refused_title) + str_size(d->artifact_type) +
	       str_size(d->annotations) + str_size(d->platform.os) +
	       str_size(d->platform.architecture) + str_size(d->platform.variant);
}

size_t manifest_footprint(const struct manifest *m)
{
	size_t n;

	if (!m)
		return 0;
	n = manifest_alloc_size(sizeof(*m)) + str_size(m->media_type) +
	    str_size(m->artifact_type) + str_size(m->annotations);
	if (m->has_config)
		n += descriptor_footprint(&m->config);
	if (m->layers)
		n += manifest_alloc_size((m->n_layers + 1) * sizeof(*m->layers));
	for (size_t i = 0; i < m->n_layers; i++)
		n += descriptor_footprint(&m->layers[i]);
	return n;
}

void manifest_free(struct manifest *m)
{
	if (!m)
		return;
	free(m->media_type);
	free(m->artifact_type);
	free(m->annotations);
	if (m->has_config)
		descriptor_release(&m->config);
	for (size_t i = 0; i < m->n_layers; i++)
		descriptor_release(&m->layers[i]);
	free(m->layers);
	free(m);
}
