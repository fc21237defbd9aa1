/* dircache.c - owns the directory caches: tag answers (tag -> digest, "not
 * a tag", "a namespace, not a repository") and listings (tag lists, whole
 * catalogs, and parts of catalogs: a name and the names below it) with the
 * error they gave, each in a hashed table (lrumap.h)
 * bounded by -o tags_max, -o listings_max and -o listings_max_bytes, the
 * least recently used dropped first. A dropped answer only costs asking
 * again; but it is no longer there to answer from when the registry
 * cannot be reached (stale-if-error lasts as long as the entry).
 *
 * A listing being fetched has a flight: the other threads wanting it wait
 * for that one fetch (all its pages) and share its result, failure
 * included. Listings are immutable, reference-counted name sets, so that
 * a reader copies or searches one outside the lock while it is replaced
 * or evicted.
 *
 * One lock, dircache.lock, guards both tables, every entry, the flights
 * and the names' reference counts; dircache.landed is broadcast under it
 * when a flight lands. */
#include "dircache.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "lrumap.h"
#include "registries.h"
#include "tree_impl.h"

/* A digest computed here: "sha256:" and 64 hex digits. */
#define TAG_DIGEST_MAX 72

/* A tag -> digest answer; digest "" records "not a tag" (404). Key:
 * (registry, repository, tag). */
struct tagent {
	struct lrumap_node node;	/* first: a node is its entry */
	char digest[TAG_DIGEST_MAX];
	bool repo_exists;	/* 404 said MANIFEST_UNKNOWN, not NAME_UNKNOWN */
	time_t at;
	time_t warned;		/* last "using cached" warning */
};

/* A listing's names, sorted (strcmp) so that lookups are binary
 * searches; immutable once built. */
struct names {
	unsigned refs;		/* dircache.lock: entries, flights, readers */
	size_t n;
	size_t bytes;		/* what it holds: names, pointers, itself */
	char *v[];		/* into the chars that follow v[n - 1] */
};

/* Which listing: a tag list (@repo), or (@repo NULL) the part of the
 * catalog at and below @under, the whole catalog when @under is "".
 * Keys: (registry, repository), (registry, "", under), (registry). */
struct listid {
	const char *reg, *repo, *under;
};

/* A listing, keyed by its struct listid. */
struct listent {
	struct lrumap_node node;	/* first */
	struct names *names;	/* a reference; NULL when err */
	int err;		/* 0, -ENOENT or -EACCES (refused) */
	time_t at;
};

/* A listing being fetched, keyed as its listing; waited for by the
 * threads that want it too. */
struct flight {
	struct lrumap_node node;	/* first */
	unsigned refs;		/* the fetcher and each waiter */
	bool done;
	int ret;		/* once done: what the fetcher got ... */
	struct names *names;	/* ... a reference, when ret is 0 ... */
	int err;		/* ... and the listing's own error ... */
	time_t at;		/* ... fetched then */
};

struct dircache {
	pthread_mutex_t lock;
	pthread_cond_t landed;	/* a flight is done */
	struct lrumap tags;	/* lock: struct tagent */
	struct lrumap lists;	/* lock: struct listent */
	struct lrumap flights;	/* lock: struct flight, unbounded (one per fetch) */
};

/* What a reader holds of a listing: a reference to its names, or its
 * error. */
struct held {
	struct names *names;
	int err;
	time_t at;	/* when the listing was fetched */
};

/* A tag answer or a flight done with (no names held). */
static void entry_free(struct lrumap_node *n)
{
	lrumap_node_release(n);
	free(n);
}

/* dc->lock held. */
static void names_unref(struct names *s)
{
	if (s && --s->refs == 0)
		free(s);
}

/* dc->lock held. */
static struct names *names_ref(struct names *s)
{
	if (s)
		s->refs++;
	return s;
}

/* dc->lock held. */
static void listent_free(struct lrumap_node *n)
{
	names_unref(((struct listent *)n)->names);
	lrumap_node_release(n);
	free(n);
}

/* dc->lock held. */
static void free_chain(struct lrumap_node *n, void (*free_entry)(struct lrumap_node *))
{
	while (n) {
		struct lrumap_node *next = n->next;
		free_entry(n);
		n = next;
	}
}

int dircache_new(const struct dircache_limits *lim, struct dircache **out)
{
	struct dircache *dc = calloc(1, sizeof(*dc));
	pthread_condattr_t ca;

	if (!dc)
		return -ENOMEM;
	if (lrumap_init(&dc->tags, lim->tags_max, 0) < 0 ||
	    lrumap_init(&dc->lists, lim->listings_max, lim->listings_max_bytes) < 0 ||
	    lrumap_init(&dc->flights, 0, 0) < 0) {
		lrumap_release(&dc->tags, entry_free);
		lrumap_release(&dc->lists, listent_free);
		free(dc);
		return -ENOMEM;
	}
	pthread_mutex_init(&dc->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&dc->landed, &ca);
	pthread_condattr_destroy(&ca);
	*out = dc;
	return 0;
}

void dircache_free(struct dircache *dc)
{
	if (!dc)
		return;
	/* No request is left at unmount, so no flight either. */
	lrumap_release(&dc->tags, entry_free);
	lrumap_release(&dc->lists, listent_free);
	lrumap_release(&dc->flights, entry_free);
	pthread_cond_destroy(&dc->landed);
	pthread_mutex_destroy(&dc->lock);
	free(dc);
}

/* ---- tag answers ---- */

#define TAG_KEY(reg, repo, tag) ((struct lrukey){ { (reg), (repo), (tag) }, 3 })

int tags_lookup(struct tree *t, const char *reg, const char *repo, const char *tag,
		char **digest, bool *repo_exists)
{
	struct dircache *dc = t->dc;
	struct lrukey k = TAG_KEY(reg, repo, tag);
	struct tagent *e;
	int ret = 0;

	*digest = NULL;
	pthread_mutex_lock(&dc->lock);
	e = (struct tagent *)lrumap_get(&dc->tags, &k);
	if (e && tree_fresh(t, e->at)) {
		if (e->digest[0] && !(*digest = strdup(e->digest)))
			ret = -ENOMEM;
		else
			ret = 1;
	} else if (e && !(*digest = strdup(e->digest))) {
		ret = -ENOMEM;	/* stale: "" for "not a tag" */
	}
	if (e)
		*repo_exists = e->repo_exists;
	pthread_mutex_unlock(&dc->lock);
	return ret;
}

void tags_store(struct tree *t, const char *reg, const char *repo, const char *tag,
		const char *digest, bool repo_exists)
{
	struct dircache *dc = t->dc;
	struct lrukey k = TAG_KEY(reg, repo, tag);
	struct tagent *e;

	if (digest && strlen(digest) >= TAG_DIGEST_MAX)
		return;	/* not one computed here: not kept */
	pthread_mutex_lock(&dc->lock);
	e = (struct tagent *)lrumap_get(&dc->tags, &k);
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || lrumap_node_init(&dc->tags, &e->node, &k, sizeof(*e)) < 0) {
			free(e);
			goto out;	/* short of memory: asked again next time */
		}
		lrumap_add(&dc->tags, &e->node);
		free_chain(lrumap_trim(&dc->tags, &e->node), entry_free);
	}
	snprintf(e->digest, sizeof(e->digest), "%s", digest ? digest : "");
	e->repo_exists = repo_exists;
	e->at = tree_now();
out:
	pthread_mutex_unlock(&dc->lock);
}

bool tags_stale_warning_due(struct tree *t, const char *reg, const char *repo,
			    const char *tag)
{
	struct dircache *dc = t->dc;
	struct lrukey k = TAG_KEY(reg, repo, tag);
	struct tagent *e;
	bool due = false;

	pthread_mutex_lock(&dc->lock);
	e = (struct tagent *)lrumap_peek(&dc->tags, &k);
	if (e && tree_now() - e->warned >= t->down_window) {
		e->warned = tree_now();
		due = true;
	}
	pthread_mutex_unlock(&dc->lock);
	return due;
}

/* ---- listings ---- */

static struct lrukey list_key(const struct listid *id)
{
	if (id->repo)
		return (struct lrukey){ { id->reg, id->repo }, 2 };
	if (id->under[0])
		return (struct lrukey){ { id->reg, "", id->under }, 3 };
	return (struct lrukey){ { id->reg }, 1 };
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* @l sorted into one block (one reference). 0 or -ENOMEM. */
static int names_new(struct strlist *l, struct names **out)
{
	size_t chars = 0, bytes;
	struct names *s;
	char *p;

	if (l->n > 1)
		qsort(l->v, l->n, sizeof(*l->v), cmp_str);
	for (size_t i = 0; i < l->n; i++)
		chars += strlen(l->v[i]) + 1;
	bytes = sizeof(*s) + l->n * sizeof(char *) + chars;
	s = malloc(bytes);
	if (!s)
		return -ENOMEM;
	s->refs = 1;
	s->n = l->n;
	s->bytes = bytes;
	p = (char *)&s->v[l->n];
	for (size_t i = 0; i < l->n; i++) {
		size_t len = strlen(l->v[i]) + 1;
		memcpy(p, l->v[i], len);
		s->v[i] = p;
		p += len;
	}
	*out = s;
	return 0;
}

/* The first name in sorted @s not below @key. */
static size_t lower_bound(const struct names *s, const char *key)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(s->v[mid], key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Is @name in sorted @s (1), a prefix of names in it ("name/...", 2), or
 * neither (0)? */
static int sorted_kind(const struct names *s, const char *name)
{
	size_t n = strlen(name), i = lower_bound(s, name);

	if (i < s->n && !strcmp(s->v[i], name))
		return 1;
	for (; i < s->n && !strncmp(s->v[i], name, n); i++)
		if (s->v[i][n] == '/')
			return 2;
		else if (s->v[i][n] > '/')
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

static void held_release(struct dircache *dc, struct held *h)
{
	if (!h->names)
		return;
	pthread_mutex_lock(&dc->lock);
	names_unref(h->names);
	pthread_mutex_unlock(&dc->lock);
	h->names = NULL;
}

/* Store what a fetch of @reg/@repo gave (@ret 0 with @l, -ENOENT or
 * -EACCES) and hold it in @out. 0 or -ENOMEM. */
static int listing_store(struct tree *t, const struct listid *id, int ret, struct strlist *l,
			 const struct reg_error *err, struct held *out)
{
	struct dircache *dc = t->dc;
	struct lrukey k = list_key(id);
	struct names *s = NULL;
	struct listent *e;
	bool said = false;

	if (ret == 0 && names_new(l, &s) < 0)
		return -ENOMEM;
	pthread_mutex_lock(&dc->lock);
	e = (struct listent *)lrumap_get(&dc->lists, &k);
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || lrumap_node_init(&dc->lists, &e->node, &k, sizeof(*e)) < 0) {
			names_unref(s);
			pthread_mutex_unlock(&dc->lock);
			free(e);
			return -ENOMEM;
		}
		lrumap_add(&dc->lists, &e->node);
	} else if (ret == -EACCES && e->err == -EACCES) {
		said = true;	/* refused before: logged then */
	}
	names_unref(e->names);
	e->names = s;
	e->err = ret;
	e->at = tree_now();
	lrumap_set_bytes(&dc->lists, &e->node, sizeof(*e) + (s ? s->bytes : 0));
	free_chain(lrumap_trim(&dc->lists, &e->node), listent_free);
	out->names = names_ref(s);
	out->err = ret;
	out->at = e->at;
	pthread_mutex_unlock(&dc->lock);
	if (ret == -EACCES && !said)
		log_refused(id->reg, id->repo, err);
	return 0;
}

/* Fetch listing @id, store it and hold it in @out; @old is what was held
 * before (stale, or none), answered instead when the registry cannot be
 * reached. 0 or -errno; @old is taken either way. */
static int listing_fetch(struct tree *t, const struct listid *id, struct held *old,
			 bool was_held, struct held *out)
{
	const char *reg = id->reg, *repo = id->repo;
	struct listid whole = { .reg = reg, .under = "" };
	struct strlist l = { 0 };
	struct reg_error err = { 0 };	/* not every failure says why */
	bool all = false;
	int gated, ret;

	gated = ret = reg_gate(t, reg, &err);
	if (ret == 0) {
		ret = repo ? regclient_list_tags(t->rc, reg, repo, &l, &err) :
			     regclient_list_catalog(t->rc, reg, id->under, &l, &all, &err);
		reg_outcome(t, reg, ret, &err);
	}
	/* Another user's request: the last listing, or nothing; never stored. */
	if (ret < 0 && reg_not_shared(&err) && was_held)
		goto out_old;
	if (ret < 0 && reg_not_shared(&err))
		goto out_release;
	if (ret < 0 && ret != -ENOENT && ret != -EACCES) {
		/* Unreachable: the last listing seen beats an error. */
		if (was_held) {
			if (!gated)
				log_msg(LOG_WARNING, "%s%s%s: listing failed (%s); showing the last one",
					reg, repo ? "/" : "", repo ? repo : "", err.message);
			goto out_old;
		}
		char what[1600];
		snprintf(what, sizeof(what), "%s%s%s", reg, repo ? "/" : "/_catalog",
			 repo ? repo : "");
		log_reg_error(what, &err, ret);
		goto out_release;
	}
	/* A part of the catalog that came whole (the registry ignored last=),
	 * or a catalog refused or absent, answers for every part: kept as
	 * the whole catalog, it is asked once, and a refusal logged once. */
	if (!repo && (all || ret < 0))
		id = &whole;
	ret = listing_store(t, id, ret, &l, &err, out);
out_release:
	held_release(t->dc, old);
	strlist_release(&l);
	return ret;
out_old:
	*out = *old;
	strlist_release(&l);
	return 0;
}

/* dc->lock held: wait for @f to land. 0, or -EINTR when this request was
 * interrupted meanwhile (the fetch goes on for the others). */
static int flight_wait(struct tree *t, struct flight *f)
{
	struct dircache *dc = t->dc;

	while (!f->done) {
		struct timespec ts;

		if (!t->interrupted) {
			pthread_cond_wait(&dc->landed, &dc->lock);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec++;
		pthread_cond_timedwait(&dc->landed, &dc->lock, &ts);
		if (!f->done && t->interrupted())
			return -EINTR;
	}
	return 0;
}

/* dc->lock held. */
static void flight_unref(struct flight *f)
{
	if (--f->refs)
		return;
	names_unref(f->names);
	lrumap_node_release(&f->node);
	free(f);
}

/* Hold listing @id: a fresh one (fetched when @fetch, once for all the
 * threads asking), or the last one seen when the registry cannot be
 * reached: its own, else @cover (may be NULL; a stale listing held by the
 * caller that answers for @id, such as an ancestor's part). 0 with *out
 * (its error may be a refusal; release it with held_release()), -EAGAIN
 * when none is held and !@fetch, or -errno. */
static int listing_hold(struct tree *t, const struct listid *id, bool fetch,
			const struct held *cover, struct held *out)
{
	struct dircache *dc = t->dc;
	struct lrukey k = list_key(id);
	struct held old = { 0 };
	struct listent *e;
	struct flight *f;
	bool was_held;
	int ret;

	pthread_mutex_lock(&dc->lock);
	e = (struct listent *)lrumap_get(&dc->lists, &k);
	if (e && (tree_fresh(t, e->at) || !fetch)) {
		out->names = names_ref(e->names);
		out->err = e->err;
		out->at = e->at;
		pthread_mutex_unlock(&dc->lock);
		return 0;
	}
	if (!fetch) {
		pthread_mutex_unlock(&dc->lock);
		return -EAGAIN;
	}
	f = (struct flight *)lrumap_peek(&dc->flights, &k);
	if (f) {
		f->refs++;
		ret = flight_wait(t, f);
		if (ret == 0)
			ret = f->ret;
		if (ret == 0) {
			out->names = names_ref(f->names);
			out->err = f->err;
			out->at = f->at;
		}
		flight_unref(f);
		pthread_mutex_unlock(&dc->lock);
		return ret;
	}
	was_held = e || cover;
	if (e) {
		old.names = names_ref(e->names);
		old.err = e->err;
		old.at = e->at;
	} else if (cover) {
		old.names = names_ref(cover->names);
		old.err = cover->err;
		old.at = cover->at;
	}
	/* Another user's request fetches nothing (reg_gate()): no flight
	 * for others to wait on. Short of memory: a fetch of one's own. */
	f = NULL;
	if (!(t->may_fetch && !t->may_fetch()) && (f = calloc(1, sizeof(*f)))) {
		if (lrumap_node_init(&dc->flights, &f->node, &k, 0) == 0) {
			f->refs = 1;
			lrumap_add(&dc->flights, &f->node);
		} else {
			free(f);
			f = NULL;
		}
	}
	pthread_mutex_unlock(&dc->lock);

	ret = listing_fetch(t, id, &old, was_held, out);
	if (!f)
		return ret;
	pthread_mutex_lock(&dc->lock);
	lrumap_del(&dc->flights, &f->node);
	f->done = true;
	f->ret = ret;
	if (ret == 0) {
		f->names = names_ref(out->names);
		f->err = out->err;
		f->at = out->at;
	}
	pthread_cond_broadcast(&dc->landed);
	flight_unref(f);
	pthread_mutex_unlock(&dc->lock);
	return ret;
}

/* @h's names copied to *@out (0) or its error; @h released either way. */
static int held_copy(struct dircache *dc, struct held *h, struct strlist *out)
{
	struct strlist l = { 0 };
	int ret = h->err;

	/* A copy of names that stay put while held: outside the lock. */
	if (ret == 0 && h->names->n) {
		l.v = malloc(h->names->n * sizeof(*l.v));
		ret = l.v ? 0 : -ENOMEM;
	}
	for (size_t i = 0; ret == 0 && i < h->names->n; i++) {
		if (!(l.v[i] = strdup(h->names->v[i])))
			ret = -ENOMEM;
		else
			l.n++;
	}
	held_release(dc, h);
	if (ret < 0)
		strlist_release(&l);
	else
		*out = l;
	return ret;
}

int listing(struct tree *t, const char *reg, const char *repo, bool fetch,
	    struct strlist *out)
{
	struct listid id = { .reg = reg, .repo = repo, .under = "" };
	struct held h;
	int ret = listing_hold(t, &id, fetch, NULL, &h);

	return ret < 0 ? ret : held_copy(t->dc, &h, out);
}

/* Hold the catalog's names at and below @name: from the closest part of
 * it held that covers them (@name's own, an ancestor's, the whole
 * catalog), fresh ones first; else (@fetch) @name's own part, fetched;
 * else (!@fetch) one held stale, or -EAGAIN. */
static int catalog_hold(struct tree *t, const char *reg, const char *name, bool fetch,
			struct held *out)
{
	struct dircache *dc = t->dc;
	char p[1024];
	struct listent *found = NULL;	/* the closest fresh, else the closest */
	struct listid id = { .reg = reg, .under = p };
	struct held old = { 0 };
	int ret;

	if (strlen(name) >= sizeof(p))
		return -ENAMETOOLONG;
	snprintf(p, sizeof(p), "%s", name);
	pthread_mutex_lock(&dc->lock);
	for (;;) {
		struct lrukey k = list_key(&id);
		struct listent *e = (struct listent *)lrumap_get(&dc->lists, &k);
		char *slash = strrchr(p, '/');

		if (e && tree_fresh(t, e->at)) {
			found = e;
			break;
		}
		if (e && !found)
			found = e;
		if (!p[0])
			break;
		if (slash)
			*slash = '\0';
		else
			p[0] = '\0';
	}
	if (found) {
		old.names = names_ref(found->names);
		old.err = found->err;
		old.at = found->at;
	}
	pthread_mutex_unlock(&dc->lock);
	if (found && (!fetch || tree_fresh(t, old.at))) {
		*out = old;
		return 0;
	}
	if (!fetch)
		return -EAGAIN;
	snprintf(p, sizeof(p), "%s", name);
	/* Unreachable: a stale part that covers @name beats an error (and
	 * is shown as the last listing, with a warning, not an error). */
	ret = listing_hold(t, &id, true, found ? &old : NULL, out);
	if (ret < 0 && ret != -ENOMEM && found) {
		*out = old;
		return 0;
	}
	held_release(dc, &old);
	return ret;
}

int catalog_under(struct tree *t, const char *reg, const char *name, bool fetch,
		  struct strlist *out)
{
	struct held h;
	int ret = catalog_hold(t, reg, name, fetch, &h);

	return ret < 0 ? ret : held_copy(t->dc, &h, out);
}

int listing_has(struct tree *t, const char *reg, const char *repo, const char *name)
{
	struct dircache *dc = t->dc;
	struct listid id = { .reg = reg, .repo = repo, .under = "" };
	struct lrukey k = list_key(&id);
	struct listent *e;
	int ret = -EAGAIN;

	pthread_mutex_lock(&dc->lock);
	e = (struct listent *)lrumap_get(&dc->lists, &k);
	if (e && e->err == 0 && tree_fresh(t, e->at))
		ret = sorted_kind(e->names, name) == 1;
	pthread_mutex_unlock(&dc->lock);
	return ret;
}

int catalog_kind(struct tree *t, const char *reg, const char *name, bool fetch)
{
	struct held h;
	int ret = catalog_hold(t, reg, name, fetch, &h);

	if (ret < 0)
		return ret;
	ret = h.err ? h.err : sorted_kind(h.names, name);
	held_release(t->dc, &h);
	return ret;
}

int catalog_kind_current(struct tree *t, const char *reg, const char *name)
{
	struct dircache *dc = t->dc;
	struct listid id = { .reg = reg, .under = name };
	struct held h, again;
	struct listent *e;
	struct lrukey k;
	int ret = catalog_hold(t, reg, name, true, &h);

	if (ret < 0)
		return ret;
	ret = h.err ? h.err : sorted_kind(h.names, name);
	if (ret != 0 || tree_now() - h.at < 1) {
		held_release(dc, &h);
		return ret;
	}
	/* "No" from a listing older than a second: @name's own part, asked
	 * again (an ancestor's would cost all of its pages); unreachable,
	 * the "no" stands. */
	k = list_key(&id);
	pthread_mutex_lock(&dc->lock);
	e = (struct listent *)lrumap_peek(&dc->lists, &k);
	if (e)
		e->at = 0;	/* stale: the next hold fetches */
	pthread_mutex_unlock(&dc->lock);
	ret = listing_hold(t, &id, true, &h, &again);
	held_release(dc, &h);
	if (ret < 0)
		return 0;
	ret = again.err ? again.err : sorted_kind(again.names, name);
	held_release(dc, &again);
	return ret;
}
