/* listing.c - readdir: the names under / (registries), under a registry
 * or namespace (catalog and tags), and inside an artifact (its view or an
 * extracted layer). A listing is built once, at opendir, into a struct
 * tree_dir that only its FUSE handle uses (no lock); sorting it makes
 * "each name once" O(n log n). The listings themselves are dircache.c's. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifact.h"
#include "artifacts.h"
#include "blobcache.h"
#include "dircache.h"
#include "ref.h"
#include "referrers.h"
#include "registries.h"
#include "serve.h"
#include "tree_impl.h"

struct dent {
	char *name;
	struct tree_attr a;
	size_t seq;		/* order added: the first of equal names wins */
};

struct tree_dir {
	struct dent *v;
	size_t n, cap;
};

static int dir_add(struct tree_dir *d, const char *name, size_t len, const struct tree_attr *a)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		struct dent *v = realloc(d->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		d->v = v;
		d->cap = cap;
	}
	if (!(d->v[d->n].name = strndup(name, len)))
		return -ENOMEM;
	d->v[d->n].a = *a;
	d->v[d->n].seq = d->n;
	d->n++;
	return 0;
}

static int cmp_dent(const void *x, const void *y)
{
	const struct dent *a = x, *b = y;
	int c = strcmp(a->name, b->name);

	return c ? c : a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Sort, and keep the first entry added of each name. */
static void dir_finish(struct tree_dir *d)
{
	size_t out = 0;

	if (d->n > 1)
		qsort(d->v, d->n, sizeof(*d->v), cmp_dent);
	for (size_t i = 0; i < d->n; i++) {
		if (out && !strcmp(d->v[out - 1].name, d->v[i].name)) {
			free(d->v[i].name);
			continue;
		}
		d->v[out++] = d->v[i];
	}
	d->n = out;
}

void tree_closedir(struct tree_dir *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n; i++)
		free(d->v[i].name);
	free(d->v);
	free(d);
}

const char *tree_dir_entry(const struct tree_dir *d, size_t i, struct tree_attr *a)
{
	if (i >= d->n)
		return NULL;
	*a = d->v[i].a;
	return d->v[i].name;
}

/* Is @s (@len bytes) in sorted @l? */
static bool in_sorted(const struct strlist *l, const char *s, size_t len)
{
	size_t lo = 0, hi = l->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strncmp(l->v[mid], s, len);
		if (c == 0 && l->v[mid][len])
			c = 1;
		if (c == 0)
			return true;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* Add the next components of names under @prefix ("" = all); a name in
 * sorted @shadow (tags) is added as ".name", the way to reach it. The
 * count added, or -errno. */
static long add_children(struct tree_dir *d, const struct strlist *l, const char *prefix,
			 const struct strlist *shadow)
{
	size_t pl = strlen(prefix);
	struct tree_attr a;
	long added = 0;

	dir_attr(&a);
	for (size_t i = 0; i < l->n; i++) {
		const char *s = l->v[i];
		char hidden[258];
		size_t len;
		int ret;

		if (pl && (strncmp(s, prefix, pl) || s[pl] != '/'))
			continue;
		s += pl ? pl + 1 : 0;
		len = strcspn(s, "/");
		if (len == 0 || len >= 256)
			continue;
		if (shadow && in_sorted(shadow, s, len)) {
			snprintf(hidden, sizeof(hidden), ".%.*s", (int)len, s);
			ret = dir_add(d, hidden, len + 1, &a);
		} else {
			ret = dir_add(d, s, len, &a);
		}
		if (ret < 0)
			return ret;
		added++;
	}
	return added;
}

/* "0.0.1-linux-amd64" on linux/amd64 -> length of "0.0.1", else 0. */
static size_t platform_tag_base(const struct tree *t, const char *tag)
{
	char suffix[80];
	size_t n = strlen(tag), k;

	snprintf(suffix, sizeof(suffix), "-%s-%s", t->platform.os, t->platform.arch);
	k = strlen(suffix);
	if (n > k && !strcmp(tag + n - k, suffix))
		return n - k;
	return 0;
}

static int add_tags(struct tree *t, struct tree_dir *d, const struct strlist *tags)
{
	struct tree_attr a;
	int ret = 0;

	dir_attr(&a);
	for (size_t i = 0; i < tags->n && ret == 0; i++) {
		const char *tag = tags->v[i];
		size_t base = platform_tag_base(t, tag);
		if (!ref_valid_tag(tag))
			continue;
		ret = dir_add(d, tag, strlen(tag), &a);
		/* Seed 002: "0.0.1" for "0.0.1-linux-amd64" when no "0.0.1". */
		if (ret == 0 && base && !in_sorted(tags, tag, base))
			ret = dir_add(d, tag, base, &a);
	}
	return ret;
}

static int list_namespace(struct tree *t, struct resolved *r, struct tree_dir *d)
{
	struct strlist cat = { 0 }, tags = { 0 };
	int cret, tret = -ENOENT, ret = 0;
	long subs = 0;

	/* Only the part of the catalog at and below this name: one page of
	 * a big catalog, not all of them. */
	cret = r->kind == R_REGISTRY ? listing(t, r->reg, NULL, true, &cat) :
				       catalog_under(t, r->reg, r->name, true, &cat);
	if (r->kind == R_REGISTRY) {
		if (cret == 0)
			subs = add_children(d, &cat, r->name, NULL);
		/* Registries without a catalog list nothing; lookups still
		 * work. A refused one says so (listing() logged why). */
		else if (cret != -ENOENT && cret != -EIO)
			ret = cret;
		goto out;
	}
	/* The name a repository? The part just read says (asked again, it
	 * may be gone already: evicted by other listings). */
	if (cret < 0 || in_sorted(&cat, r->name, strlen(r->name)))
		tret = listing(t, r->reg, r->name, true, &tags);
	/* Sub-repositories first; one that a tag shadows shows as ".name". */
	if (cret == 0) {
		subs = add_children(d, &cat, r->name, tret == 0 ? &tags : NULL);
		if (subs < 0)
			goto out;
	}
	if (tret == 0)
		ret = add_tags(t, d, &tags);
	/* No tag list, and the catalog that would list what is below is
	 * refused: refused too (as the registry's top is), not absent. */
	else if (subs == 0)
		ret = tret == -ENOENT && cret == -EACCES ? cret : tret;
out:
	strlist_release(&cat);
	strlist_release(&tags);
	return subs < 0 ? (int)subs : ret;
}

static int list_extracted(struct tree *t, struct artifact *art, const char *rel,
			  struct tree_dir *d)
{
	int fd = serve_open_extracted(t, art, rel, O_RDONLY | O_DIRECTORY);
	struct dirent *de;
	struct tree_attr a;
	struct stat st;
	int ret = 0;
	DIR *dir;

	if (fd < 0)
		return fd;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -errno;
	}
	while (ret == 0 && (de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		stat_attr(&st, &a);
		ret = dir_add(d, de->d_name, strlen(de->d_name), &a);
	}
	closedir(dir);
	return ret;
}

static int list_artifact(struct tree *t, struct target *g, struct tree_dir *d)
{
	const struct aview *v = g->view;
	const char *inner = g->r.inner;
	size_t il = strlen(inner);
	struct tree_attr a;
	int ret = 0;

	if (g->ext[0])
		return list_extracted(t, g->r.art, g->ext, d);
	if (g->e && g->e->kind == AE_ARCHIVE) {
		char rel[4200];
		ret = serve_extracted_path(t, g->r.art, g->e, NULL, rel, sizeof(rel));
		return ret < 0 ? ret : list_extracted(t, g->r.art, rel, d);
	}
	if (g->e && g->e->kind != AE_DIR)
		return -ENOTDIR;
	for (size_t i = 0; i < v->n && ret == 0; i++) {
		const struct aentry *c = &v->e[i];
		const char *rest = c->path;
		if (il) {
			if (strncmp(rest, inner, il) || rest[il] != '/')
				continue;
			rest += il + 1;
		}
		if (strchr(rest, '/'))
			continue;
		entry_attr(c, artifact_mtime(g->r.art), &a);
		if (c->kind == AE_FALLBACK)
			a.mode = 0;	/* its size is known once found */
		ret = dir_add(d, rest, strlen(rest), &a);
	}
	return ret;
}

static int list_root(struct tree *t, struct tree_dir *d)
{
	struct strlist regs = { 0 };
	struct tree_attr a;
	int ret = 0;

	registries_list(t->regs, &regs);
	dir_attr(&a);
	for (size_t i = 0; i < regs.n && ret == 0; i++)
		ret = dir_add(d, regs.v[i], strlen(regs.v[i]), &a);
	strlist_release(&regs);
	return ret;
}

/* /.ocifs/referrers: the registries; below a subject, its referrers. */
static int list_referrers(struct tree *t, struct target *g, struct tree_dir *d)
{
	struct referrer *v = NULL;
	struct tree_attr a;
	size_t n = 0;
	int ret;

	if (!g->r.art)
		return list_root(t, d);
	ret = referrers_list(t, g->r.reg, g->r.art->repo, g->r.art->digest, &v, &n);
	if (ret < 0)
		return ret;
	dir_attr(&a);
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = dir_add(d, v[i].digest, strlen(v[i].digest), &a);
	free(v);
	return ret;
}

int tree_opendir(struct tree *t, const char *path, struct tree_dir **out)
{
	struct tree_dir *d = calloc(1, sizeof(*d));
	struct target *g = NULL;
	struct tree_attr a;
	int ret;

	if (!d)
		return -ENOMEM;
	ret = target_new(t, path, RESOLVE_LIST, &g);
	if (ret < 0)
		goto out_free;
	switch (g->r.kind) {
	case R_ROOT:
		ret = list_root(t, d);
		break;
	case R_REGISTRY:
	case R_NAMESPACE:
		ret = list_namespace(t, &g->r, d);
		break;
	case R_ARTIFACT:
		ret = list_artifact(t, g, d);
		break;
	case R_CONTROL:
		a.mode = S_IFREG | 0444;
		a.size = 0;
		a.mtime = TREE_EPOCH;
		ret = dir_add(d, "stats", 5, &a);
		dir_attr(&a);
		if (ret == 0)
			ret = dir_add(d, &LAYOUT_DIR[1], strlen(&LAYOUT_DIR[1]), &a);
		if (ret == 0)
			ret = dir_add(d, "referrers", 9, &a);
		break;
	case R_REFERRERS:
		ret = list_referrers(t, g, d);
		break;
	case R_STATS:
		ret = -ENOTDIR;
		break;
	}
	target_free(t, g);
	if (ret < 0)
		goto out_free;
	dir_finish(d);
	*out = d;
	return 0;
out_free:
	tree_closedir(d);
	return ret;
}
