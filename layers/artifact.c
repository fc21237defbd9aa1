/* artifact.c - the view of an artifact directory. See artifact.h. */
#include "artifact.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blobcache.h"

#define WALK_DEPTH_MAX 16
#define WALK_ENTRIES_MAX 20000

static struct aentry *add(struct aview *v, const char *path, enum aentry_kind kind)
{
	struct aentry *e;

	for (size_t i = 0; i < v->n; i++)
		if (!strcmp(v->e[i].path, path))
			return NULL;	/* taken */
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 32;
		e = realloc(v->e, cap * sizeof(*e));
		if (!e)
			return NULL;
		v->e = e;
		v->cap = cap;
		/* Generated entries point into themselves: follow the move. */
		for (size_t i = 0; i < v->n; i++)
			if (v->e[i].kind == AE_DATA)
				v->e[i].digest = v->e[i].data_digest;
	}
	e = &v->e[v->n];
	memset(e, 0, sizeof(*e));
	e->path = strdup(path);
	if (!e->path)
		return NULL;
	e->kind = kind;
	e->mode = kind == AE_DIR || kind == AE_ARCHIVE ? 0555 : 0444;
	v->n++;
	return e;
}

static bool taken(const struct aview *v, const char *path)
{
	for (size_t i = 0; i < v->n; i++)
		if (!strcmp(v->e[i].path, path))
			return true;
	return false;
}

/* Add the directories above @path; false if one is taken by a file. */
static bool add_parents(struct aview *v, const char *path)
{
	char buf[4096];

	if (strlen(path) >= sizeof(buf))
		return false;
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = strchr(buf, '/'); p; p = strchr(p + 1, '/')) {
		*p = '\0';
		const struct aentry *e = NULL;
		for (size_t i = 0; i < v->n; i++)
			if (!strcmp(v->e[i].path, buf))
				e = &v->e[i];
		if (e && e->kind != AE_DIR)
			return false;
		if (!e && !add(v, buf, AE_DIR))
			return false;
		*p = '/';
	}
	return true;
}

static struct aentry *add_file(struct aview *v, const char *path, enum aentry_kind kind,
			       const struct descriptor *d)
{
	struct aentry *e;

	if (taken(v, path) || !add_parents(v, path))
		return NULL;
	e = add(v, path, kind);
	if (e && d) {
		e->digest = d->digest;
		e->size = d->size;
		e->media_type = d->media_type;
		e->annotations = d->annotations;
	}
	return e;
}

static int add_blob(struct aview *v, const struct descriptor *d, enum aentry_kind kind)
{
	char path[96];

	snprintf(path, sizeof(path), "blobs/sha256/%s", d->digest + 7);
	if (taken(v, path))
		return 0;
	return add_file(v, path, kind, d) ? 0 : -ENOMEM;
}

static int add_data(struct aview *v, const char *path, char *data, const char *media_type)
{
	struct aentry *e;

	if (!data)
		return -ENOMEM;
	e = add_file(v, path, AE_DATA, NULL);
	if (!e) {
		free(data);
		return -ENOMEM;
	}
	e->data = data;
	e->size = strlen(data);
	e->media_type = media_type;
	blobcache_digest_of(data, e->size, e->data_digest);
	e->digest = e->data_digest;
	return 0;
}

static bool binary_like(const struct descriptor *d)
{
	const char *mt = d->media_type;

	if (platform_layer_is_archive(d) || !strncmp(mt, "text/", 5) || strstr(mt, "json") ||
	    strstr(mt, "yaml"))
		return false;
	return true;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

static bool is_container_image(const struct manifest *m)
{
	const char *mt = m->has_config ? m->config.media_type : "";

	return !strcmp(mt, "application/vnd.oci.image.config.v1+json") ||
	       !strcmp(mt, "application/vnd.docker.container.image.v1+json");
}

/* A program the artifact names itself: a binary titled bin/..., .../bin/...
 * or .../entrypoint. Where there is one, no fallback is guessed. */
static bool titled_program(const struct descriptor *d)
{
	const char *t = d->title;

	return t && binary_like(d) &&
	       (!strncmp(t, "bin/", 4) || strstr(t, "/bin/") || !strcmp(base_name(t), "entrypoint"));
}

/* May @d hold the legacy fallback binary (seed 000: bin/<os>/<arch>/
 * entrypoint for every platform)? The generic oras types and untitled
 * archives may; a titled archive only if its title says bin or names a
 * platform (an oras directory holds only <title>/...: assets/ cannot), so
 * that "entrypoint" is not listed where it would then be ENOENT. */
static bool fallback_candidate(const struct descriptor *d)
{
	const char *t = d->title;

	if (!platform_layer_may_hold_binaries(d))
		return false;
	if (!t || (!platform_layer_is_oras_dir(d) && !platform_layer_is_archive(d)))
		return true;	/* untitled, or application/vnd.oras.v1 / gzip */
	return !strncmp(t, "bin", 3) || strstr(t, "/bin") || platform_in_name(t, NULL);
}

/* @s for a log line: printable ASCII as is, anything else as \xNN, so a
 * refused name cannot spoof the log either. */
static void escape(const char *s, char *out, size_t len)
{
	size_t o = 0;

	for (const unsigned char *c = (const unsigned char *)s; *c && o + 5 < len; c++) {
		if (*c >= 0x20 && *c < 0x7f && *c != '\\' && *c != '"')
			out[o++] = (char)*c;
		else
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", *c);
	}
	out[o] = '\0';
}

struct viewlog {
	aview_warn_fn fn;
	void *arg;
};

static void __attribute__((format(printf, 3, 4))) note(const struct viewlog *l, bool expected,
						       const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!l->fn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	l->fn(l->arg, expected, msg);
}

/* One layer of this platform (or of none) into the view. Names:
 * its title (an oras directory: the directory it was packed from), else
 * layer<N>; an archive also as <name>.d/; this platform's binary also at
 * the top, by the title's base name or as "entrypoint". */
static int add_layer(struct aview *v, size_t i, enum layer_class c, const struct viewlog *l)
{
	const struct descriptor *d = &v->m->layers[i];
	bool program = c == LAYER_THIS && binary_like(d);
	char name[4200], esc[1024];
	struct aentry *e = NULL;

	if (d->refused_title) {
		escape(d->refused_title, esc, sizeof(esc));
		note(l, false, "layer %s: title \"%s\" refused (not a plain relative name); "
		     "shown as layer%zu", d->digest, esc, i);
	}
	if (d->title && platform_layer_is_oras_dir(d)) {
		/* oras pull unpacks it into <title>/; so do we. */
		e = add_file(v, d->title, AE_ARCHIVE, d);
		if (e) {
			e->subdir = d->title;
			return 0;
		}
	} else if (d->title) {
		e = add_file(v, d->title, AE_BLOB, d);
	}
	if (!e && d->title) {
		escape(d->title, esc, sizeof(esc));
		note(l, false, "layer %s: title \"%s\" clashes with another entry; shown as "
		     "layer%zu", d->digest, esc, i);
	}
	if (!e) {
		snprintf(name, sizeof(name), "layer%zu", i);
		if (taken(v, name)) {	/* a title asked for it */
			note(l, false, "layer %s: \"%s\" is taken by a title; the layer is only "
			     "in the layout view", d->digest, name);
			return 0;
		}
		e = add_file(v, name, AE_BLOB, d);
		if (!e)
			return -ENOMEM;
	}
	if (program)
		e->mode = 0555;
	if (platform_layer_is_archive(d)) {
		snprintf(name, sizeof(name), "%s.d", e->path);
		if (!add_file(v, name, AE_ARCHIVE, d)) {
			escape(name, esc, sizeof(esc));
			note(l, false, "layer %s: \"%s\" clashes with another entry; its contents "
			     "are not browsable", d->digest, esc);
		}
	}
	if (program) {
		/* The binary at the top: by its base name, else "entrypoint". */
		const char *top = d->title && strchr(d->title, '/') ? base_name(d->title) :
				  !d->title ? "entrypoint" : NULL;
		if (top && (e = add_file(v, top, AE_BLOB, d)))
			e->mode = 0555;
	}
	return 0;
}

static int build_image(struct aview *v, const struct oci_platform *p, aview_warn_fn warn,
		       void *warn_arg)
{
	const struct manifest *m = v->m;
	const struct viewlog l = { warn, warn_arg };
	struct descriptor self = { 0 };
	bool have_this = false, have_candidate = false, have_program = false;
	struct aentry *e;
	int ret;

	self.media_type = m->media_type;
	self.digest = v->digest;
	self.size = v->len;
	self.annotations = m->annotations;
	if (!add_file(v, "manifest.json", AE_MANIFEST, &self))
		return -ENOMEM;
	if (m->has_config && !add_file(v, "config.json", AE_BLOB, &m->config))
		return -ENOMEM;
	/* Titled layers first: a title wins a name over layer<N> and over a
	 * base name shown at the top. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < m->n_layers; i++) {
			const struct descriptor *d = &m->layers[i];
			enum layer_class c = platform_layer_class(d, p);

			if (c == LAYER_OTHER) {
				if (pass == 0) {
					v->skipped += d->size;
					note(&l, true, "layer %s (%s, %llu bytes) is for another "
					     "platform; not shown", d->digest, d->media_type,
					     (unsigned long long)d->size);
				}
				continue;	/* not listed, never fetched */
			}
			if ((pass == 0) != (d->title != NULL))
				continue;
			have_this |= c == LAYER_THIS;
			have_candidate |= fallback_candidate(d);
			have_program |= titled_program(d);
			ret = add_layer(v, i, c, &l);
			if (ret < 0)
				return ret;
		}
	}
	/* Container images run through a runtime, not from the mount: only
	 * artifacts get the legacy fallback, and only those that name no
	 * program of their own. */
	if (!have_this && have_candidate && !have_program && !is_container_image(m) &&
	    !taken(v, "entrypoint")) {
		e = add_file(v, "entrypoint", AE_FALLBACK, NULL);
		if (!e)
			return -ENOMEM;
		e->mode = 0555;
	}
	return 0;
}

static char *layout_index(const char *media_type, const char *digest, uint64_t size)
{
	char *s;

	if (asprintf(&s,
		     "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"%s\","
		     "\"digest\":\"%s\",\"size\":%llu}]}\n",
		     media_type, digest, (unsigned long long)size) < 0)
		return NULL;
	return s;
}

int aview_build(struct manifest *index, const char *index_digest, uint64_t index_len,
		struct manifest *m, const char *digest, uint64_t len,
		const struct oci_platform *p, aview_warn_fn warn, void *warn_arg,
		struct aview **out)
{
	struct aview *v = calloc(1, sizeof(*v));
	int ret = -ENOMEM;

	if (!v) {
		manifest_free(index);
		manifest_free(m);
		return -ENOMEM;
	}
	v->index = index;
	v->m = m;
	v->index_len = index_len;
	v->len = len;
	if ((index_digest && !(v->index_digest = strdup(index_digest))) ||
	    (digest && !(v->digest = strdup(digest))))
		goto out_free;
	for (size_t i = 0, off = 0; index && i < index->n_layers; i++) {
		const struct descriptor *d = &index->layers[i];
		if (d->has_platform && off < sizeof(v->offered))
			off += (size_t)snprintf(v->offered + off, sizeof(v->offered) - off,
						"%s%s/%s%s%s", off ? ", " : "", d->platform.os,
						d->platform.architecture,
						d->platform.variant ? "/" : "",
						d->platform.variant ? d->platform.variant : "");
	}
	if (m) {
		ret = build_image(v, p, warn, warn_arg);
		if (ret < 0)
			goto out_free;
	}
	*out = v;
	return 0;
out_free:
	aview_free(v);
	return ret;
}

/* The blobs of @m into the layout: its config and layers. */
static int add_image_blobs(struct aview *v, const struct manifest *m)
{
	int ret = 0;

	if (m->kind != MANIFEST_IMAGE)
		return 0;	/* an index inside an index: its manifests only */
	if (m->has_config)
		ret = add_blob(v, &m->config, AE_BLOB);
	for (size_t i = 0; ret == 0 && i < m->n_layers; i++)
		ret = add_blob(v, &m->layers[i], AE_BLOB);
	return ret;
}

int aview_build_layout(const struct manifest *top, const char *digest, uint64_t len,
		       struct manifest **children, struct aview **out)
{
	struct aview *v = calloc(1, sizeof(*v));
	size_t n = top->kind == MANIFEST_INDEX ? top->n_layers : 0;
	struct descriptor self = { 0 };
	int ret = -ENOMEM;

	if (!v) {
		for (size_t i = 0; children && i < n; i++)
			manifest_free(children[i]);
		free(children);
		return -ENOMEM;
	}
	v->owned = children;
	v->n_owned = children ? n : 0;
	v->len = len;
	if (!(v->digest = strdup(digest)))
		goto out_free;
	ret = add_data(v, "oci-layout", strdup("{\"imageLayoutVersion\":\"1.0.0\"}\n"),
		       "application/json");
	if (ret == 0)
		ret = add_data(v, "index.json", layout_index(top->media_type, v->digest, len),
			       "application/vnd.oci.image.index.v1+json");
	self.media_type = top->media_type;
	self.digest = v->digest;
	self.size = len;
	self.annotations = top->annotations;
	if (ret == 0)
		ret = add_blob(v, &self, AE_MANIFEST);
	if (ret == 0 && top->kind == MANIFEST_IMAGE)
		ret = add_image_blobs(v, top);
	for (size_t i = 0; ret == 0 && i < n; i++) {
		ret = add_blob(v, &top->layers[i], AE_MANIFEST);
		if (ret == 0 && children && children[i])
			ret = add_image_blobs(v, children[i]);
	}
	if (ret < 0)
		goto out_free;
	*out = v;
	return 0;
out_free:
	aview_free(v);
	return ret;
}

static size_t str_size(const char *s)
{
	return s ? manifest_alloc_size(strlen(s) + 1) : 0;
}

size_t aview_footprint(const struct aview *v)
{
	size_t n;

	if (!v)
		return 0;
	/* What aview_free() frees. */
	n = manifest_alloc_size(sizeof(*v)) + manifest_alloc_size(v->cap * sizeof(*v->e)) +
	    manifest_footprint(v->index) + manifest_footprint(v->m) +
	    str_size(v->index_digest) + str_size(v->digest) +
	    manifest_alloc_size(v->n_owned * sizeof(*v->owned));
	for (size_t i = 0; i < v->n_owned; i++)
		n += manifest_footprint(v->owned[i]);
	for (size_t i = 0; i < v->n; i++)
		n += str_size(v->e[i].path) + str_size(v->e[i].data);
	return n;
}

void aview_free(struct aview *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n_owned; i++)
		manifest_free(v->owned[i]);
	free(v->owned);
	for (size_t i = 0; i < v->n; i++) {
		free(v->e[i].path);
		free(v->e[i].data);
	}
	free(v->e);
	manifest_free(v->index);
	manifest_free(v->m);
	free(v->index_digest);
	free(v->digest);
	free(v);
}

const struct aentry *aview_lookup(const struct aview *v, const char *path, const char **rest)
{
	*rest = NULL;
	for (size_t i = 0; i < v->n; i++) {
		const struct aentry *e = &v->e[i];
		size_t l = strlen(e->path);
		if (!strcmp(e->path, path))
			return e;
		if (e->kind == AE_ARCHIVE && !strncmp(path, e->path, l) && path[l] == '/') {
			*rest = path + l + 1;
			return e;
		}
	}
	return NULL;
}

size_t aview_fallback_layers(const struct aview *v, const struct oci_platform *p, int *out,
			     size_t max)
{
	size_t n = 0;

	if (!v->m)
		return 0;
	for (size_t i = 0; i < v->m->n_layers && n < max; i++) {
		const struct descriptor *d = &v->m->layers[i];
		if (fallback_candidate(d) && platform_layer_class(d, p) != LAYER_OTHER)
			out[n++] = (int)i;
	}
	/* Largest first: the multi-platform binaries dwarf the rest. */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && v->m->layers[out[j]].size > v->m->layers[out[j - 1]].size; j--) {
			int t = out[j];
			out[j] = out[j - 1];
			out[j - 1] = t;
		}
	return n;
}

/* Depth-first search for a regular file naming @p, preferring
 * "entrypoint". @rel is the path so far. */
static int walk(int dirfd, const char *rel, int depth, const struct oci_platform *p,
		char *best, size_t len, int *budget)
{
	DIR *d;
	struct dirent *de;
	int fd = dup(dirfd);

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d)) && --*budget > 0) {
		char path[4096];
		struct stat st;
		struct oci_platform q;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode) && depth < WALK_DEPTH_MAX) {
			int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
			if (sub >= 0) {
				walk(sub, path, depth + 1, p, best, len, budget);
				close(sub);
			}
		} else if (S_ISREG(st.st_mode) && platform_in_name(path, &q) &&
			   platform_score(p, q.os, q.arch, q.variant)) {
			bool is_ep = !strcmp(de->d_name, "entrypoint");
			if (!best[0] || (is_ep && strcmp(base_name(best), "entrypoint")) ||
			    (is_ep == !strcmp(base_name(best), "entrypoint") &&
			     strcmp(path, best) < 0))
				snprintf(best, len, "%s", path);
		}
	}
	closedir(d);
	return 0;
}

int aview_find_entrypoint(int dirfd, const struct oci_platform *p, char *out, size_t len)
{
	int budget = WALK_ENTRIES_MAX;
	char best[4096] = "";

	walk(dirfd, "", 0, p, best, sizeof(best), &budget);
	if (!best[0])
		return -ENOENT;
	snprintf(out, len, "%s", best);
	return 0;
}
