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

/* A catalog (repo NULL) or tag list, with the error it gave. The names
 * are sorted (strcmp) so that lookups are binary searches. */
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

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first name in sorted @l not below @key. */
static size_t lower_bound(const struct strlist *l, const char *key)
{
	size_t lo = 0, hi = l->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(l->v[mid], key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Is @name in sorted @l (1), a prefix of names in it ("name/...", 2), or
 * neither (0)? */
static int sorted_kind(const struct strlist *l, const char *name)
{
	size_t n = strlen(name), i = lower_bound(l, name);

	if (i < l->n && !strcmp(l->v[i], name))
		return 1;
	for (; i < l->n && !strncmp(l->v[i], name, n); i++)
		if (l->v[i][n] == '/')
			return 2;
		else if (l->v[i][n] > '/')
			break;
	return 0;
}

/* Say once, when a listing becomes refused, who refused it and why. */
static void log_refused(const char *reg, const char *repo, const struct reg_error *err)
{
	log_msg(LOG_ERR, "%s: %s%s refused (HTTP %ld%s%s%s%s%s)", reg,
		repo ? "the tag list of " : "the catalog", repo ? repo : "", err->status,
		err->message[0] ? ": " : "", err->message, err->code[0] ? " (" : "", err->code,
		err->code[0] ? ")" : "");
}

/* dc->lock held. */
static struct listent *list_find(struct dircache *dc, const char *reg, const char *repo)
{
	for (struct listent *e = dc->lists; e; e = e->next)
		if (!strcmp(e->registry, reg) && (repo ? e->repo && !strcmp(e->repo, repo) : !e->repo))
			return e;
	return NULL;
}

/* Hold a listing: a fresh one (fetched when @fetch), or the last one
 * seen when the registry cannot be reached. 0 when one is held (its own
 * error may be a refusal), -EAGAIN when none is and !@fetch, or -errno. */
static int listing_hold(struct tree *t, const char *reg, const char *repo, bool fetch)
{
	struct dircache *dc = t->dc;
	struct listent *e;
	struct strlist l = { 0 };
	struct reg_error err;
	bool held, said = false;
	int ret;

	pthread_mutex_lock(&dc->lock);
	e = list_find(dc, reg, repo);
	held = e != NULL;
	ret = e && (tree_fresh(t, e->at) || !fetch) ? 0 : -EAGAIN;
	pthread_mutex_unlock(&dc->lock);
	if (ret == 0 || !fetch)
		return ret;

	int gated = reg_gate(t, reg, &err);
	ret = gated;
	if (ret == 0) {
		ret = repo ? regclient_list_tags(t->rc, reg, repo, &l, &err) :
			     regclient_list_catalog(t->rc, reg, &l, &err);
		reg_outcome(t, reg, ret, &err);
	}
	/* Another user's request: the last listing, or nothing; never stored. */
	if (ret < 0 && reg_not_shared(&err))
		return held ? 0 : ret;
	if (ret < 0 && ret != -ENOENT && ret != -EACCES) {
		/* Unreachable: the last listing seen beats an error. */
		if (held) {
			if (!gated)
				log_msg(LOG_WARNING, "%s%s%s: listing failed (%s); showing the last one",
					reg, repo ? "/" : "", repo ? repo : "", err.message);
			return 0;
		}
		char what[1600];
		snprintf(what, sizeof(what), "%s%s%s", reg, repo ? "/" : "/_catalog",
			 repo ? repo : "");
		log_reg_error(what, &err, ret);
		return ret;
	}
	if (l.n > 1)
		qsort(l.v, l.n, sizeof(*l.v), cmp_str);
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
	} else if (ret == -EACCES && e->err == -EACCES) {
		said = true;	/* refused before: logged then */
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
	if (ret == -EACCES && !said)
		log_refused(reg, repo, &err);
	strlist_release(&l);
	return e ? 0 : -ENOMEM;
}

int listing(struct tree *t, const char *reg, const char *repo, bool fetch,
	    struct strlist *out)
{
	struct dircache *dc = t->dc;
	struct strlist l = { 0 };
	struct listent *e;
	int ret = listing_hold(t, reg, repo, fetch);

	if (ret < 0)
		return ret;
	pthread_mutex_lock(&dc->lock);
	e = list_find(dc, reg, repo);
	ret = e ? e->err : -EAGAIN;
	if (ret == 0 && e->l.n) {
		l.v = malloc(e->l.n * sizeof(*l.v));
		ret = l.v ? 0 : -ENOMEM;
	}
	for (size_t i = 0; ret == 0 && i < e->l.n; i++) {
		if (!(l.v[i] = strdup(e->l.v[i])))
			ret = -ENOMEM;
		else
			l.n++;
	}
	pthread_mutex_unlock(&dc->lock);
	if (ret < 0)
		strlist_release(&l);
	else
		*out = l;
	return ret;
}

int listing_has(struct tree *t, const char *reg, const char *repo, const char *name)
{
	struct dircache *dc = t->dc;
	struct listent *e;
	int ret = -EAGAIN;

	pthread_mutex_lock(&dc->lock);
	e = list_find(dc, reg, repo);
	if (e && e->err == 0 && tree_fresh(t, e->at))
		ret = sorted_kind(&e->l, name) == 1;
	pthread_mutex_unlock(&dc->lock);
	return ret;
}

int catalog_kind(struct tree *t, const char *reg, const char *name, bool fetch)
{
	struct dircache *dc = t->dc;
	struct listent *e;
	int ret = listing_hold(t, reg, NULL, fetch);

	if (ret < 0)
		return ret;
	pthread_mutex_lock(&dc->lock);
	e = list_find(dc, reg, NULL);
	ret = !e ? -EAGAIN : e->err ? e->err : sorted_kind(&e->l, name);
	pthread_mutex_unlock(&dc->lock);
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
