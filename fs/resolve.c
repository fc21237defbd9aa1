/* resolve.c - path resolution: which registry, repository, reference
 * and inner path a mount path names, asking the registry only what the
 * caches cannot say. No state of its own (dircache.c holds the answers,
 * artifacts.c the views) and no hidden state: safe from any thread. */
#include "resolve.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "artifacts.h"
#include "dircache.h"
#include "ref.h"
#include "registries.h"
#include "tree_impl.h"

#define PATH_COMPONENTS_MAX 64

/* A registry name as Docker tells one: has a '.' or ':' or is localhost. */
static bool registry_name_ok(const char *s)
{
	return ref_valid_registry(s) && (strchr(s, '.') || strchr(s, ':') ||
					 !strcmp(s, "localhost"));
}

/* Worth asking for a manifest under @name? Not when a catalog we hold
 * says it is a namespace only: that saves a request per namespace level.
 * A name the catalog lacks is asked all the same: the catalog may predate
 * it (or be a pull-through cache's partial one). */
static bool is_repo_candidate(struct tree *t, const char *reg, const char *name)
{
	return catalog_kind(t, reg, name, false) != 2;
}

/* Split @path into its non-empty components, in @buf. A hand loop, not
 * strtok(): strtok's state is shared by every FUSE thread. */
static int split(const char *path, char *buf, size_t bufsz, char **comp, size_t *n)
{
	size_t len = strlen(path);
	char *p;

	*n = 0;
	if (len >= bufsz)
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (p = buf; *p;) {
		if (*p == '/') {
			*p++ = '\0';
			continue;
		}
		if (*n == PATH_COMPONENTS_MAX)
			return -ENOENT;
		comp[(*n)++] = p;
		p += strcspn(p, "/");
	}
	return 0;
}

static void join(char *out, size_t sz, char **comp, size_t from, size_t to)
{
	size_t off = 0;

	out[0] = '\0';
	for (size_t i = from; i < to && off < sz; i++)
		off += (size_t)snprintf(out + off, sz - off, "%s%s", i > from ? "/" : "", comp[i]);
}

int resolve(struct tree *t, const char *path, struct resolved *r)
{
	char buf[4096], *c[PATH_COMPONENTS_MAX];
	size_t n;
	bool repo_exists = false;
	int ret, denied = 0;

	memset(r, 0, sizeof(*r));
	ret = split(path, buf, sizeof(buf), c, &n);
	if (ret < 0)
		return ret;
	if (n == 0) {
		r->kind = R_ROOT;
		return 0;
	}
	if (!registry_name_ok(c[0]))
		return -ENOENT;
	snprintf(r->reg, sizeof(r->reg), "%s", c[0]);
	if (n == 1) {
		/* Another user's lookup names no registry into / for everyone. */
		if (!t->may_fetch || t->may_fetch())
			registries_visit(t->regs, c[0]);
		r->kind = R_REGISTRY;
		return 0;
	}
	/* c[1..k] a repository, c[k+1] a tag or digest? Shortest first. */
	for (size_t k = 1; k + 1 < n; k++) {
		/* ".name" is always the sub-repository "name", never a tag: the
		 * way past a tag that shadows it. */
		if (c[k][0] == '.')
			c[k]++;
		if (!ref_valid_path_component(c[k], strlen(c[k])))
			return -ENOENT;
		join(r->name, sizeof(r->name), c, 1, k + 1);
		const char *ref = c[k + 1];
		if (!strncmp(ref, "sha256:", 7)) {
			if (!ref_valid_digest(ref))
				return -ENOENT;
			ret = artifact_by_digest(t, r->reg, r->name, ref, &r->art);
		} else if (ref_valid_tag(ref) && is_repo_candidate(t, r->reg, r->name)) {
			ret = artifact_by_tag_or_platform_tag(t, r->reg, r->name, ref, &r->art,
							      &repo_exists);
			if (ret == 0)
				continue;
		} else {
			continue;
		}
		/* Refused by -o verify= (and logged): final. */
		if (ret == -EKEYREJECTED)
			return -EACCES;
		/* Docker Hub and others deny what does not exist as they deny
		 * what is private: a longer prefix may still be the repository. */
		if (ret == -EACCES) {
			denied = ret;
			continue;
		}
		if (ret < 0)
			return ret;
		r->kind = R_ARTIFACT;
		join(r->inner, sizeof(r->inner), c, k + 2, n);
		return 0;
	}
	/* A namespace or repository directory. */
	if (c[n - 1][0] == '.')
		c[n - 1]++;
	if (!ref_valid_path_component(c[n - 1], strlen(c[n - 1])))
		return denied ? denied : -ENOENT;
	join(r->name, sizeof(r->name), c, 1, n);
	r->kind = R_NAMESPACE;
	/* Depth 1 costs no request: a catalog seen already may say no. */
	ret = catalog_kind(t, r->reg, r->name, false);
	if (n > 2 || ret == 0)	/* depth 1 fetches nothing, but rechecks a "no" */
		ret = catalog_kind_current(t, r->reg, r->name);
	if (ret == 0)
		return denied ? denied : -ENOENT;
	if (ret > 0 || n == 2)
		return 0;
	/* /<registry>/<a>/<b> may list the tags of a/b (denied as a tag of
	 * a); deeper paths below denied prefixes stay denied. */
	if (denied && n > 3)
		return denied;
	/* No catalog here: below a repository only a repository can be. */
	if (repo_exists) {
		struct strlist tags = { 0 };
		ret = listing(t, r->reg, r->name, true, &tags);
		strlist_release(&tags);
		return ret < 0 ? -ENOENT : 0;
	}
	return 0;
}
