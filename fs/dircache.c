/* dircache.c - owns the directory caches: tag answers (tag -> digest, and
 * "not a tag") and listings (catalogs and tag lists) with the error they
 * gave. One lock, dircache.lock, guards both lists and every entry. */
#include "dircache.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "registries.h"
#include "tree_impl.h"

/* A tag -> digest answer; digest NULL records "not a tag" (404). */
struct tagent {
	struct tagent *next;
	char *registry, *repo, *tag;
	char *digest;
	bool repo_exists;	/* 404 said MANIFEST_UNKNOWN, not NAME_UNKNOWN */
	time_t at;
	time_t warned;		/* last "using cached" warning */
};

/* A catalog (repo NULL) or tag list, with the error it gave. */
struct listent {
	struct listent *next;
	char *registry, *repo;
	struct strlist l;
	int err;
	time_t at;
};

struct dircache {
	pthread_mutex_t lock;
	struct tagent *tags;	/* lock */
	struct listent *lists;	/* lock */
};

int dircache_new(struct dircache **out)
{
	struct dircache *dc = calloc(1, sizeof(*dc));

	if (!dc)
		return -ENOMEM;
	pthread_mutex_init(&dc->lock, NULL);
	*out = dc;
	return 0;
}

void dircache_free(struct dircache *dc)
{
	if (!dc)
		return;
	while (dc->tags) {
		struct tagent *e = dc->tags;
		dc->tags = e->next;
		free(e->registry);
		free(e->repo);
		free(e->tag);
		free(e->digest);
		free(e);
	}
	while (dc->lists) {
		struct listent *e = dc->lists;
		dc->lists = e->next;
		free(e->registry);
		free(e->repo);
		strlist_release(&e->l);
		free(e);
	}
	pthread_mutex_destroy(&dc->lock);
	free(dc);
}

/* ---- tag answers ---- */

/* dc->lock held. */
static struct tagent *tag_find(struct dircache *dc, const char *reg, const char *repo,
			       const char *tag)
{
	for (struct tagent *e = dc->tags; e; e = e->next)
		if (!strcmp(e->tag, tag) && !strcmp(e->repo, repo) && !strcmp(e->registry, reg))
			return e;
	return NULL;
}

int tags_lookup(struct tree *t, const char *reg, const char *repo, const char *tag,
		char **digest, bool *repo_exists)
{
	struct dircache *dc = t->dc;
	struct tagent *e;
	int ret = 0;

	*digest = NULL;
	pthread_mutex_lock(&dc->lock);
	e = tag_find(dc, reg, repo, tag);
	if (e && e->digest && !(*digest = strdup(e->digest)))
		ret = -ENOMEM;
	else if (e && tree_fresh(t, e->at)) {
		*repo_exists = e->repo_exists;
		ret = 1;
	}
	pthread_mutex_unlock(&dc->lock);
	return ret;
}

void tags_store(struct tree *t, const char *reg, const char *repo, const char *tag,
		const char *digest, bool repo_exists)
{
	struct dircache *dc = t->dc;
	struct tagent *e;
	char *d = digest ? strdup(digest) : NULL;

	if (digest && !d)
		return;
	pthread_mutex_lock(&dc->lock);
	e = tag_find(dc, reg, repo, tag);
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || !(e->registry = strdup(reg)) || !(e->repo = strdup(repo)) ||
		    !(e->tag = strdup(tag))) {
			if (e) {
				free(e->registry);
				free(e->repo);
				free(e);
			}
			free(d);
			goto out;
		}
		e->next = dc->tags;
		dc->tags = e;
	}
	free(e->digest);
	e->digest = d;
	e->repo_exists = repo_exists;
	e->at = tree_now();
out:
	pthread_mutex_unlock(&dc->lock);
}

bool tags_stale_warning_due(struct tree *t, const char *reg, const char *repo,
			    const char *tag)
{
	struct dircache *dc = t->dc;
	struct tagent *e;
	bool due = false;

	pthread_mutex_lock(&dc->lock);
	e = tag_find(dc, reg, repo, tag);
	if (e && tree_now() - e->warned >= t->down_window) {
		e->warned = tree_now();
		due = true;
	}
	pthread_mutex_unlock(&dc->lock);
	return due;
}

/* ---- listings ---- */

/* dc->lock held. */
static struct listent *list_find(struct dircache *dc, const char *reg, const char *repo)
{
	for (struct listent *e = dc->lists; e; e = e->next)
		if (!strcmp(e->registry, reg) && (repo ? e->repo && !strcmp(e->repo, repo) : !e->repo))
			return e;
	return NULL;
}

int listing(struct tree *t, const char *reg, const char *repo, bool fetch,
	    struct strlist *out)
{
	struct dircache *dc = t->dc;
	struct listent *e;
	struct strlist l = { 0 };
	struct reg_error err;
	int ret;

	pthread_mutex_lock(&dc->lock);
	e = list_find(dc, reg, repo);
	if (e && (tree_fresh(t, e->at) || !fetch)) {
		ret = e->err;
		for (size_t i = 0; ret == 0 && i < e->l.n; i++) {
			char **v = realloc(l.v, (l.n + 1) * sizeof(*v));
			if (!v || !(v[l.n] = strdup(e->l.v[i]))) {
				if (v)
					l.v = v;
				ret = -ENOMEM;
				break;
			}
			l.v = v;
			l.n++;
		}
		pthread_mutex_unlock(&dc->lock);
		if (ret < 0)
			strlist_release(&l);
		else
			*out = l;
		return ret;
	}
	pthread_mutex_unlock(&dc->lock);
	if (!fetch)
		return -EAGAIN;

	int gated = reg_gate(t, reg, &err);
	ret = gated;
	if (ret == 0) {
		ret = repo ? regclient_list_tags(t->rc, reg, repo, &l, &err) :
			     regclient_list_catalog(t->rc, reg, &l, &err);
		reg_outcome(t, reg, ret, &err);
	}
	/* Another user's request: the last listing, or nothing; never stored. */
	if (ret < 0 && reg_not_shared(&err))
		return e ? listing(t, reg, repo, false, out) : ret;
	if (ret < 0 && ret != -ENOENT && ret != -EACCES) {
		/* Unreachable: the last listing seen beats an error. */
		if (e) {
			if (!gated)
				log_msg(LOG_WARNING, "%s%s%s: listing failed (%s); showing the last one",
					reg, repo ? "/" : "", repo ? repo : "", err.message);
			return listing(t, reg, repo, false, out);
		}
		char what[1600];
		snprintf(what, sizeof(what), "%s%s%s", reg, repo ? "/" : "/_catalog",
			 repo ? repo : "");
		log_reg_error(what, &err, ret);
		return ret;
	}
	pthread_mutex_lock(&dc->lock);
	e = list_find(dc, reg, repo);
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (e && (e->registry = strdup(reg)) && (!repo || (e->repo = strdup(repo)))) {
			e->next = dc->lists;
			dc->lists = e;
		} else if (e) {
			free(e->registry);
			free(e);
			e = NULL;
		}
	}
	if (e) {
		strlist_release(&e->l);
		e->err = ret;
		e->at = tree_now();
		if (ret == 0) {
			e->l = l;
			l.v = NULL;
			l.n = 0;
		}
	}
	pthread_mutex_unlock(&dc->lock);
	strlist_release(&l);
	return listing(t, reg, repo, false, out);
}

int catalog_kind(struct tree *t, const char *reg, const char *name, bool fetch)
{
	struct strlist cat = { 0 };
	size_t n = strlen(name);
	int ret = listing(t, reg, NULL, fetch, &cat);

	if (ret < 0)
		return ret;
	for (size_t i = 0; i < cat.n; i++) {
		if (!strcmp(cat.v[i], name)) {
			ret = 1;
			break;
		}
		if (!strncmp(cat.v[i], name, n) && cat.v[i][n] == '/')
			ret = 2;
	}
	strlist_release(&cat);
	return ret;
}

int catalog_kind_current(struct tree *t, const char *reg, const char *name)
{
	struct dircache *dc = t->dc;
	struct listent *e;
	int ret = catalog_kind(t, reg, name, true);

	if (ret != 0)
		return ret;
	pthread_mutex_lock(&dc->lock);
	e = list_find(dc, reg, NULL);
	if (e && tree_now() - e->at >= 1) {
		e->at = 0;	/* stale: the next listing() fetches */
		ret = -EAGAIN;
	}
	pthread_mutex_unlock(&dc->lock);
	return ret == -EAGAIN ? catalog_kind(t, reg, name, true) : 0;
}
