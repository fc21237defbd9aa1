/* listing.c - readdir: the names under / (registries), under a registry
 * or namespace (catalog and tags), and inside an artifact (its view or an
 * extracted layer). No state of its own: dircache.c holds the listings. */
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

static bool in_list(const struct strlist *l, const char *s, size_t len);

/* Fill the unique next components of names under @prefix ("" = all); a
 * name in @shadow (tags) is filled as ".name", the way to reach it. */
static int fill_children(const struct strlist *l, const char *prefix,
			 const struct strlist *shadow, tree_fill_fn fill, void *ctx,
			 struct strlist *seen)
{
	size_t pl = strlen(prefix);
	struct tree_attr a;

	dir_attr(&a);
	for (size_t i = 0; i < l->n; i++) {
		const char *s = l->v[i];
		if (pl && (strncmp(s, prefix, pl) || s[pl] != '/'))
			continue;
		s += pl ? pl + 1 : 0;
		size_t len = strcspn(s, "/");
		char name[256];
		bool dup = false;
		if (len == 0 || len >= sizeof(name))
			continue;
		memcpy(name, s, len);
		name[len] = '\0';
		for (size_t j = 0; j < seen->n && !dup; j++)
			dup = !strcmp(seen->v[j], name);
		if (dup)
			continue;
		char **v = realloc(seen->v, (seen->n + 1) * sizeof(*v));
		if (!v)
			return -ENOMEM;
		seen->v = v;
		if (!(v[seen->n] = strdup(name)))
			return -ENOMEM;
		seen->n++;
		if (shadow && in_list(shadow, name, len)) {
			char hidden[258];
			snprintf(hidden, sizeof(hidden), ".%s", name);
			if (fill(ctx, hidden, &a))
				return 1;
		} else if (fill(ctx, name, &a)) {
			return 1;
		}
	}
	return 0;
}

static bool in_list(const struct strlist *l, const char *s, size_t len)
{
	for (size_t i = 0; i < l->n; i++)
		if (strlen(l->v[i]) == len && !strncmp(l->v[i], s, len))
			return true;
	return false;
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

static int readdir_namespace(struct tree *t, struct resolved *r, tree_fill_fn fill, void *ctx)
{
	struct strlist cat = { 0 }, tags = { 0 }, seen = { 0 };
	int cret, tret = -ENOENT, ret = 0;
	struct tree_attr a;

	dir_attr(&a);
	cret = listing(t, r->reg, NULL, true, &cat);
	if (r->kind == R_REGISTRY) {
		if (cret == 0)
			ret = fill_children(&cat, r->name, NULL, fill, ctx, &seen);
		/* Registries without a catalog list nothing; lookups still work. */
		else if (cret != -EACCES && cret != -ENOENT && cret != -EIO)
			ret = cret;
		goto out;
	}
	if (cret < 0 || catalog_kind(t, r->reg, r->name, false) == 1)
		tret = listing(t, r->reg, r->name, true, &tags);
	/* Sub-repositories first; one that a tag shadows shows as ".name". */
	if (cret == 0) {
		ret = fill_children(&cat, r->name, tret == 0 ? &tags : NULL, fill, ctx, &seen);
		if (ret)
			goto out;
	}
	if (tret == 0) {
		for (size_t i = 0; i < tags.n && !ret; i++) {
			const char *tag = tags.v[i];
			size_t base = platform_tag_base(t, tag);
			if (!ref_valid_tag(tag))
				continue;
			ret = fill(ctx, tag, &a);
			/* Seed 002: "0.0.1" for "0.0.1-linux-amd64" when no "0.0.1". */
			if (!ret && base && !in_list(&tags, tag, base)) {
				char plain[REF_TAG_MAX + 1];
				snprintf(plain, sizeof(plain), "%.*s", (int)base, tag);
				ret = fill(ctx, plain, &a);
			}
		}
		ret = 0;
	} else if (seen.n == 0) {
		ret = tret;
	}
out:
	strlist_release(&cat);
	strlist_release(&tags);
	strlist_release(&seen);
	return ret < 0 ? ret : 0;
}

static int readdir_extracted(struct tree *t, struct artifact *art, const char *rel,
			     tree_fill_fn fill, void *ctx)
{
	int fd = serve_open_extracted(t, art, rel, O_RDONLY | O_DIRECTORY);
	struct dirent *de;
	struct tree_attr a;
	struct stat st;
	DIR *d;

	if (fd < 0)
		return fd;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		stat_attr(&st, &a);
		if (fill(ctx, de->d_name, &a))
			break;
	}
	closedir(d);
	return 0;
}

static int readdir_artifact(struct tree *t, struct target *g, tree_fill_fn fill, void *ctx)
{
	const struct aview *v = g->view;
	const char *inner = g->r.inner;
	size_t il = strlen(inner);
	struct tree_attr a;

	if (g->ext[0])
		return readdir_extracted(t, g->r.art, g->ext, fill, ctx);
	if (g->e && g->e->kind == AE_ARCHIVE) {
		char rel[4200];
		int ret = serve_extracted_path(t, g->r.art, g->e, NULL, rel, sizeof(rel));
		return ret < 0 ? ret : readdir_extracted(t, g->r.art, rel, fill, ctx);
	}
	if (g->e && g->e->kind != AE_DIR)
		return -ENOTDIR;
	for (size_t i = 0; i < v->n; i++) {
		const struct aentry *c = &v->e[i];
		const char *rest = c->path;
		if (il) {
			if (strncmp(rest, inner, il) || rest[il] != '/')
				continue;
			rest += il + 1;
		}
		if (strchr(rest, '/'))
			continue;
		entry_attr(c, &a);
		if (fill(ctx, rest, &a))
			break;
	}
	return 0;
}

/* /.ocifs/referrers: the registries; below a subject, its referrers. */
static int readdir_referrers(struct tree *t, struct target *g, tree_fill_fn fill, void *ctx)
{
	struct referrer *v = NULL;
	struct tree_attr a;
	size_t n = 0;
	int ret;

	dir_attr(&a);
	if (!g->r.art) {
		struct strlist regs = { 0 };
		registries_list(t->regs, &regs);
		for (size_t i = 0; i < regs.n; i++)
			if (fill(ctx, regs.v[i], &a))
				break;
		strlist_release(&regs);
		return 0;
	}
	ret = referrers_list(t, g->r.reg, g->r.art->repo, g->r.art->digest, &v, &n);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++)
		if (fill(ctx, v[i].digest, &a))
			break;
	free(v);
	return 0;
}

int tree_readdir(struct tree *t, const char *path, tree_fill_fn fill, void *ctx)
{
	struct target *g;
	struct tree_attr a;
	int ret;

	ret = target_new(t, path, &g);
	if (ret < 0)
		return ret;
	switch (g->r.kind) {
	case R_ROOT: {
		struct strlist regs = { 0 };
		registries_list(t->regs, &regs);
		dir_attr(&a);
		for (size_t i = 0; i < regs.n; i++)
			if (fill(ctx, regs.v[i], &a))
				break;
		strlist_release(&regs);
		break;
	}
	case R_REGISTRY:
	case R_NAMESPACE:
		ret = readdir_namespace(t, &g->r, fill, ctx);
		break;
	case R_ARTIFACT:
		ret = readdir_artifact(t, g, fill, ctx);
		break;
	case R_CONTROL:
		a.mode = S_IFREG | 0444;
		a.size = 0;
		if (fill(ctx, "stats", &a))
			break;
		dir_attr(&a);
		if (fill(ctx, LAYOUT_DIR + 1, &a))
			break;
		fill(ctx, "referrers", &a);
		break;
	case R_REFERRERS:
		ret = readdir_referrers(t, g, fill, ctx);
		break;
	case R_STATS:
		ret = -ENOTDIR;
		break;
	}
	free(g);
	return ret;
}
