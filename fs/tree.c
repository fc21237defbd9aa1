/* tree.c - path resolution and caches behind the mount. See tree.h. */
#include "tree.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blobcache.h"
#include "client.h"
#include "log.h"
#include "manifest.h"
#include "ref.h"

#define PATH_COMPONENTS_MAX 64

/* One entry of an artifact directory. Strings borrowed from the manifest. */
struct aentry {
	char *path;		/* relative to the artifact dir, owned */
	bool dir;
	bool is_manifest;	/* fetched from /manifests/, not /blobs/ */
	const char *digest;
	uint64_t size;
	const char *media_type;
	const char *annotations;
};

/* A parsed manifest and its directory. Immutable once published; lives as
 * long as the tree (manifests are small and content-addressed). */
struct artifact {
	struct artifact *next;
	char *registry, *repo, *digest;
	struct manifest *m;
	uint64_t mlen;
	struct aentry *e;
	size_t n, cap;
};

/* A tag -> digest answer; digest NULL records "not a tag" (404). */
struct tagent {
	struct tagent *next;
	char *registry, *repo, *tag;
	char *digest;
	bool repo_exists;	/* 404 said MANIFEST_UNKNOWN, not NAME_UNKNOWN */
	time_t at;
};

/* A catalog (repo NULL) or tag list, with the error it gave. */
struct listent {
	struct listent *next;
	char *registry, *repo;
	struct strlist l;
	int err;
	time_t at;
};

struct tree {
	struct regclient *rc;
	struct blobcache *bc;
	unsigned tag_ttl;
	time_t started;
	pthread_mutex_t lock;
	struct strlist registries;	/* lock */
	struct artifact *arts;		/* lock: list head; artifacts immutable */
	struct tagent *tags;		/* lock */
	struct listent *lists;		/* lock */
};

static time_t now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void trace(void *arg, const char *method, const char *url, long status, double secs)
{
	(void)arg;
	log_msg(LOG_DEBUG, "%s %s -> %ld (%.3f s)", method, url, status, secs);
}

int tree_new(const struct tree_opts *o, struct tree **out)
{
	struct regclient_opts ro = {
		.insecure = o->insecure,
		.timeout = o->timeout,
		.retries = o->retries,
		.trace = trace,
	};
	struct tree *t;
	int ret;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	ret = blobcache_new(o->cache_dir, &t->bc);
	if (ret < 0)
		goto out_free;
	ret = -ENOMEM;
	t->rc = regclient_new(&ro);
	if (!t->rc)
		goto out_free;
	if (o->page_size)
		regclient_set_page_size(t->rc, o->page_size);
	t->tag_ttl = o->tag_ttl;
	t->started = time(NULL);
	pthread_mutex_init(&t->lock, NULL);
	for (size_t i = 0; o->registries && o->registries[i]; i++) {
		char **v = realloc(t->registries.v, (t->registries.n + 1) * sizeof(*v));
		if (!v)
			goto out_free;
		t->registries.v = v;
		if (!(v[t->registries.n] = strdup(o->registries[i])))
			goto out_free;
		t->registries.n++;
	}
	*out = t;
	return 0;
out_free:
	tree_free(t);
	return ret;
}

static void artifact_free(struct artifact *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->e[i].path);
	free(a->e);
	manifest_free(a->m);
	free(a->registry);
	free(a->repo);
	free(a->digest);
	free(a);
}

void tree_free(struct tree *t)
{
	if (!t)
		return;
	while (t->arts) {
		struct artifact *a = t->arts;
		t->arts = a->next;
		artifact_free(a);
	}
	while (t->tags) {
		struct tagent *e = t->tags;
		t->tags = e->next;
		free(e->registry);
		free(e->repo);
		free(e->tag);
		free(e->digest);
		free(e);
	}
	while (t->lists) {
		struct listent *e = t->lists;
		t->lists = e->next;
		free(e->registry);
		free(e->repo);
		strlist_release(&e->l);
		free(e);
	}
	strlist_release(&t->registries);
	regclient_free(t->rc);
	blobcache_free(t->bc);
	free(t);
}

static bool fresh(struct tree *t, time_t at)
{
	return now() - at < (time_t)t->tag_ttl;
}

static void log_reg_error(const char *what, const struct reg_error *e, int ret)
{
	if (e->code[0])
		log_msg(LOG_ERR, "%s: %s (%s)", what, e->message, e->code);
	else if (e->message[0])
		log_msg(LOG_ERR, "%s: %s", what, e->message);
	else
		log_msg(LOG_ERR, "%s: %s", what, strerror(-ret));
}

/* ---- registries shown in / ---- */

/* A registry name as Docker tells one: has a '.' or ':' or is localhost. */
static bool registry_name_ok(const char *s)
{
	return ref_valid_registry(s) && (strchr(s, '.') || strchr(s, ':') ||
					 !strcmp(s, "localhost"));
}

static void registry_visit(struct tree *t, const char *reg)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->registries.n; i++)
		if (!strcmp(t->registries.v[i], reg))
			goto out;
	char **v = realloc(t->registries.v, (t->registries.n + 1) * sizeof(*v));
	if (v) {
		t->registries.v = v;
		if ((v[t->registries.n] = strdup(reg)))
			t->registries.n++;
	}
out:
	pthread_mutex_unlock(&t->lock);
}

/* ---- artifacts ---- */

static int art_add(struct artifact *a, const char *path, bool dir, const struct descriptor *d)
{
	for (size_t i = 0; i < a->n; i++)
		if (!strcmp(a->e[i].path, path))
			return a->e[i].dir && dir ? 0 : -EEXIST;
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		struct aentry *e = realloc(a->e, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		a->e = e;
		a->cap = cap;
	}
	struct aentry *e = &a->e[a->n];
	memset(e, 0, sizeof(*e));
	e->path = strdup(path);
	if (!e->path)
		return -ENOMEM;
	e->dir = dir;
	if (d) {
		e->digest = d->digest;
		e->size = d->size;
		e->media_type = d->media_type;
		e->annotations = d->annotations;
	}
	a->n++;
	return 0;
}

/* Add a file and the directories above it. */
static int art_add_file(struct artifact *a, const char *path, const struct descriptor *d)
{
	char buf[4096];
	int ret;

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = strchr(buf, '/'); p; p = strchr(p + 1, '/')) {
		*p = '\0';
		ret = art_add(a, buf, true, NULL);
		*p = '/';
		if (ret < 0)
			return ret;
	}
	return art_add(a, path, false, d);
}

static int art_add_blob(struct artifact *a, const struct descriptor *d, bool is_manifest)
{
	char path[96];
	int ret;

	snprintf(path, sizeof(path), "blobs/sha256/%s", d->digest + 7);
	ret = art_add_file(a, path, d);
	if (ret == -EEXIST)
		return 0;	/* the same blob twice */
	if (ret == 0)
		a->e[a->n - 1].is_manifest = is_manifest;
	return ret;
}

static int artifact_build(struct artifact *a, const char *content_type, const char *what)
{
	struct descriptor md = { 0 };	/* the manifest itself */
	struct manifest *m = a->m;
	int ret;

	(void)content_type;
	md.media_type = m->media_type;
	md.digest = a->digest;
	md.size = a->mlen;
	md.annotations = m->annotations;
	ret = art_add_file(a, "manifest.json", &md);
	if (ret == 0)
		a->e[a->n - 1].is_manifest = true;
	if (ret == 0)
		ret = art_add_blob(a, &md, true);
	if (ret < 0)
		return ret;
	if (m->has_config) {
		ret = art_add_file(a, "config.json", &m->config);
		if (ret == 0)
			ret = art_add_blob(a, &m->config, false);
		if (ret < 0)
			return ret;
	}
	for (size_t i = 0; i < m->n_layers; i++) {
		const struct descriptor *d = &m->layers[i];
		bool child_manifest = m->kind == MANIFEST_INDEX;

		ret = art_add_blob(a, d, child_manifest);
		if (ret < 0)
			return ret;
		if (!d->title || child_manifest)
			continue;
		ret = art_add_file(a, d->title, d);
		if (ret == -EEXIST) {
			log_msg(LOG_WARNING, "%s: layer %s: title \"%s\" clashes with another entry; "
				"it is only under blobs/", what, d->digest, d->title);
			continue;
		}
		if (ret < 0)
			return ret;
	}
	return 0;
}

static struct artifact *artifact_find(struct tree *t, const char *reg, const char *repo,
				      const char *digest)
{
	struct artifact *a;

	pthread_mutex_lock(&t->lock);
	for (a = t->arts; a; a = a->next)
		if (!strcmp(a->digest, digest) && !strcmp(a->repo, repo) &&
		    !strcmp(a->registry, reg))
			break;
	pthread_mutex_unlock(&t->lock);
	return a;
}

/* Parse verified manifest bytes into a published artifact. */
static int artifact_publish(struct tree *t, const char *reg, const char *repo,
			    const char *digest, const char *body, size_t len,
			    const char *content_type, const char *what, struct artifact **out)
{
	struct artifact *a, *b;
	const char *why = NULL;
	int ret;

	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->registry = strdup(reg);
	a->repo = strdup(repo);
	a->digest = strdup(digest);
	a->mlen = len;
	if (!a->registry || !a->repo || !a->digest) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = manifest_parse(body, len, content_type, &a->m, &why);
	if (ret < 0) {
		log_msg(LOG_ERR, "%s: malformed manifest %s: %s", what, digest,
			why ? why : strerror(-ret));
		ret = -EIO;
		goto out_free;
	}
	ret = artifact_build(a, content_type, what);
	if (ret < 0)
		goto out_free;
	pthread_mutex_lock(&t->lock);
	for (b = t->arts; b; b = b->next)
		if (!strcmp(b->digest, digest) && !strcmp(b->repo, repo) &&
		    !strcmp(b->registry, reg))
			break;
	if (!b) {
		a->next = t->arts;
		t->arts = a;
		b = a;
		a = NULL;
	}
	pthread_mutex_unlock(&t->lock);
	if (a)
		artifact_free(a);	/* another thread won the race */
	*out = b;
	return 0;
out_free:
	artifact_free(a);
	return ret;
}

/* The artifact for repo@digest: from memory, the blob cache, or the
 * registry (verified against the digest). */
static int artifact_by_digest(struct tree *t, const char *reg, const char *repo,
			      const char *digest, struct artifact **out)
{
	struct reg_manifest rm = { 0 };
	struct reg_error err;
	char what[1600], got[72];
	char *body = NULL;
	size_t len;
	int ret;

	if ((*out = artifact_find(t, reg, repo, digest)))
		return 0;
	snprintf(what, sizeof(what), "%s/%s@%s", reg, repo, digest);
	if (blobcache_read_all(t->bc, digest, MANIFEST_MAX_BYTES, &body, &len) == 0) {
		ret = artifact_publish(t, reg, repo, digest, body, len, NULL, what, out);
		free(body);
		return ret;
	}
	ret = regclient_get_manifest(t->rc, reg, repo, digest, &rm, &err);
	if (ret < 0) {
		if (ret != -ENOENT)
			log_reg_error(what, &err, ret);
		return ret;
	}
	blobcache_digest_of(rm.body, rm.len, got);
	if (strcmp(got, digest) != 0) {
		log_msg(LOG_ERR, "%s: registry sent a manifest that hashes to %s; refused", what,
			got);
		ret = -EIO;
		goto out_release;
	}
	ret = blobcache_put(t->bc, digest, rm.body, rm.len);
	if (ret < 0) {
		log_msg(LOG_ERR, "%s: cannot store manifest: %s", what, strerror(-ret));
		goto out_release;
	}
	ret = artifact_publish(t, reg, repo, digest, rm.body, rm.len, rm.content_type, what, out);
out_release:
	reg_manifest_release(&rm);
	return ret;
}

static struct tagent *tag_find(struct tree *t, const char *reg, const char *repo,
			       const char *tag)
{
	for (struct tagent *e = t->tags; e; e = e->next)
		if (!strcmp(e->tag, tag) && !strcmp(e->repo, repo) && !strcmp(e->registry, reg))
			return e;
	return NULL;
}

static void tag_store(struct tree *t, const char *reg, const char *repo, const char *tag,
		      const char *digest, bool repo_exists)
{
	struct tagent *e;
	char *d = digest ? strdup(digest) : NULL;

	if (digest && !d)
		return;
	pthread_mutex_lock(&t->lock);
	e = tag_find(t, reg, repo, tag);
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
		e->next = t->tags;
		t->tags = e;
	}
	free(e->digest);
	e->digest = d;
	e->repo_exists = repo_exists;
	e->at = now();
out:
	pthread_mutex_unlock(&t->lock);
}

/* Resolve repo:tag. Returns 1 with *out for a tag, 0 when the registry
 * says there is no such tag (*repo_exists tells whether the repository
 * is there), or -errno. A registry that cannot be reached is answered from
 * the last known digest (stale-if-error). */
static int artifact_by_tag(struct tree *t, const char *reg, const char *repo,
			   const char *tag, struct artifact **out, bool *repo_exists)
{
	struct reg_manifest rm = { 0 };
	struct reg_error err;
	struct tagent *e;
	char what[1600], got[72], *stale = NULL;
	int ret;

	pthread_mutex_lock(&t->lock);
	e = tag_find(t, reg, repo, tag);
	if (e && fresh(t, e->at)) {
		char *d = e->digest ? strdup(e->digest) : NULL;
		bool exists = e->repo_exists;
		pthread_mutex_unlock(&t->lock);
		if (!d) {
			*repo_exists = exists;
			return 0;
		}
		ret = artifact_by_digest(t, reg, repo, d, out);
		free(d);
		return ret < 0 ? ret : 1;
	}
	if (e && e->digest)
		stale = strdup(e->digest);
	pthread_mutex_unlock(&t->lock);

	snprintf(what, sizeof(what), "%s/%s:%s", reg, repo, tag);
	ret = regclient_get_manifest(t->rc, reg, repo, tag, &rm, &err);
	if (ret == -ENOENT) {
		*repo_exists = !strcmp(err.code, "MANIFEST_UNKNOWN");
		tag_store(t, reg, repo, tag, NULL, *repo_exists);
		log_msg(LOG_DEBUG, "%s: %s", what, err.code[0] ? err.code : "not found");
		ret = 0;
		goto out_free;
	}
	if (ret < 0) {
		if (stale && ret != -EACCES) {
			log_msg(LOG_WARNING, "%s: registry unavailable (%s); using cached %s",
				what, err.message, stale);
			ret = artifact_by_digest(t, reg, repo, stale, out);
			ret = ret < 0 ? ret : 1;
			goto out_free;
		}
		log_reg_error(what, &err, ret);
		goto out_free;
	}
	blobcache_digest_of(rm.body, rm.len, got);
	if (rm.digest_header && strcmp(rm.digest_header, got) != 0) {
		log_msg(LOG_ERR, "%s: manifest hashes to %s but the registry says %s; refused",
			what, got, rm.digest_header);
		ret = -EIO;
		goto out_free;
	}
	if (!artifact_find(t, reg, repo, got)) {
		ret = blobcache_put(t->bc, got, rm.body, rm.len);
		if (ret == 0)
			ret = artifact_publish(t, reg, repo, got, rm.body, rm.len,
					       rm.content_type, what, out);
		if (ret < 0)
			goto out_free;
	}
	tag_store(t, reg, repo, tag, got, true);
	ret = artifact_by_digest(t, reg, repo, got, out);
	ret = ret < 0 ? ret : 1;
out_free:
	free(stale);
	reg_manifest_release(&rm);
	return ret;
}

/* ---- listings ---- */

/* Fetch (or reuse) the catalog (@repo NULL) or a tag list. On success
 * *out is a copy the caller releases. */
static int listing(struct tree *t, const char *reg, const char *repo, bool fetch,
		   struct strlist *out)
{
	struct listent *e;
	struct strlist l = { 0 };
	struct reg_error err;
	int ret;

	pthread_mutex_lock(&t->lock);
	for (e = t->lists; e; e = e->next)
		if (!strcmp(e->registry, reg) && (repo ? e->repo && !strcmp(e->repo, repo) : !e->repo))
			break;
	if (e && (fresh(t, e->at) || !fetch)) {
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
		pthread_mutex_unlock(&t->lock);
		if (ret < 0)
			strlist_release(&l);
		else
			*out = l;
		return ret;
	}
	pthread_mutex_unlock(&t->lock);
	if (!fetch)
		return -EAGAIN;

	ret = repo ? regclient_list_tags(t->rc, reg, repo, &l, &err) :
		     regclient_list_catalog(t->rc, reg, &l, &err);
	if (ret < 0 && ret != -ENOENT && ret != -EACCES) {
		/* Unreachable: the last listing seen beats an error. */
		if (e) {
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
	pthread_mutex_lock(&t->lock);
	for (e = t->lists; e; e = e->next)
		if (!strcmp(e->registry, reg) && (repo ? e->repo && !strcmp(e->repo, repo) : !e->repo))
			break;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (e && (e->registry = strdup(reg)) && (!repo || (e->repo = strdup(repo)))) {
			e->next = t->lists;
			t->lists = e;
		} else if (e) {
			free(e->registry);
			free(e);
			e = NULL;
		}
	}
	if (e) {
		strlist_release(&e->l);
		e->err = ret;
		e->at = now();
		if (ret == 0) {
			e->l = l;
			l.v = NULL;
			l.n = 0;
		}
	}
	pthread_mutex_unlock(&t->lock);
	strlist_release(&l);
	return listing(t, reg, repo, false, out);
}

/* With a catalog at hand: is @name a repository (1) or a namespace above
 * one (2), or neither (0)? -errno when no catalog is available. */
static int catalog_kind(struct tree *t, const char *reg, const char *name, bool fetch)
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

/* ---- resolution ---- */

/* Worth asking for a manifest under @name? Not when a catalog we hold
 * says it is no repository: that saves a request per namespace level. */
static bool is_repo_candidate(struct tree *t, const char *reg, const char *name)
{
	int k = catalog_kind(t, reg, name, false);

	return k < 0 || k == 1;
}

enum rkind { R_ROOT, R_REGISTRY, R_NAMESPACE, R_ARTIFACT };

struct resolved {
	enum rkind kind;
	char reg[256];
	char name[1024];	/* namespace or repository */
	struct artifact *art;	/* R_ARTIFACT */
	char inner[4096];	/* path inside the artifact, "" for its root */
};

static int split(const char *path, char *buf, size_t bufsz, char **comp, size_t *n)
{
	*n = 0;
	if (strlen(path) >= bufsz)
		return -ENAMETOOLONG;
	snprintf(buf, bufsz, "%s", path);
	for (char *p = strtok(buf, "/"); p; p = strtok(NULL, "/")) {
		if (*n == PATH_COMPONENTS_MAX)
			return -ENOENT;
		comp[(*n)++] = p;
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

static int resolve(struct tree *t, const char *path, struct resolved *r)
{
	char buf[4096], *c[PATH_COMPONENTS_MAX];
	size_t n;
	bool repo_exists = false;
	int ret;

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
		registry_visit(t, c[0]);
		r->kind = R_REGISTRY;
		return 0;
	}
	/* c[1..k] a repository, c[k+1] a tag or digest? Shortest first. */
	for (size_t k = 1; k + 1 < n; k++) {
		if (!ref_valid_path_component(c[k], strlen(c[k])))
			return -ENOENT;
		join(r->name, sizeof(r->name), c, 1, k + 1);
		const char *ref = c[k + 1];
		if (!strncmp(ref, "sha256:", 7)) {
			if (!ref_valid_digest(ref))
				return -ENOENT;
			ret = artifact_by_digest(t, r->reg, r->name, ref, &r->art);
		} else if (ref_valid_tag(ref) && is_repo_candidate(t, r->reg, r->name)) {
			ret = artifact_by_tag(t, r->reg, r->name, ref, &r->art, &repo_exists);
			if (ret == 0)
				continue;
		} else {
			continue;
		}
		if (ret < 0)
			return ret;
		r->kind = R_ARTIFACT;
		join(r->inner, sizeof(r->inner), c, k + 2, n);
		return 0;
	}
	/* A namespace or repository directory. */
	if (!ref_valid_path_component(c[n - 1], strlen(c[n - 1])))
		return -ENOENT;
	join(r->name, sizeof(r->name), c, 1, n);
	r->kind = R_NAMESPACE;
	/* Depth 1 costs no request: a catalog seen already may say no. */
	ret = catalog_kind(t, r->reg, r->name, n > 2);
	if (ret == 0)
		return -ENOENT;
	if (ret > 0 || n == 2)
		return 0;
	/* No catalog here: below a repository only a repository can be. */
	if (repo_exists) {
		struct strlist tags = { 0 };
		ret = listing(t, r->reg, r->name, true, &tags);
		strlist_release(&tags);
		return ret < 0 ? -ENOENT : 0;
	}
	return 0;
}

static const struct aentry *art_lookup(const struct artifact *a, const char *inner)
{
	for (size_t i = 0; i < a->n; i++)
		if (!strcmp(a->e[i].path, inner))
			return &a->e[i];
	return NULL;
}

static void dir_attr(struct tree_attr *a)
{
	a->dir = true;
	a->size = 0;
	a->mode = 0555;
}

static void entry_attr(const struct aentry *e, struct tree_attr *a)
{
	if (e->dir) {
		dir_attr(a);
		return;
	}
	a->dir = false;
	a->size = e->size;
	a->mode = 0444;
}

int tree_getattr(struct tree *t, const char *path, struct tree_attr *out)
{
	struct resolved *r = malloc(sizeof(*r));
	const struct aentry *e;
	int ret;

	if (!r)
		return -ENOMEM;
	ret = resolve(t, path, r);
	if (ret < 0)
		goto out_free;
	if (r->kind != R_ARTIFACT || !r->inner[0]) {
		dir_attr(out);
		goto out_free;
	}
	e = art_lookup(r->art, r->inner);
	if (!e) {
		ret = -ENOENT;
		goto out_free;
	}
	entry_attr(e, out);
out_free:
	free(r);
	return ret;
}

/* Fill the unique next components of names under @prefix ("" = all). */
static int fill_children(const struct strlist *l, const char *prefix, tree_fill_fn fill,
			 void *ctx, struct strlist *seen)
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
		if (fill(ctx, name, &a))
			return 1;
	}
	return 0;
}

static int readdir_namespace(struct tree *t, struct resolved *r, tree_fill_fn fill, void *ctx)
{
	struct strlist cat = { 0 }, tags = { 0 }, seen = { 0 };
	int cret, tret, ret = 0;
	bool is_repo;

	cret = listing(t, r->reg, NULL, true, &cat);
	if (cret == 0) {
		ret = fill_children(&cat, r->name, fill, ctx, &seen);
		if (ret)
			goto out;
	}
	if (r->kind == R_REGISTRY) {
		/* Registries without a catalog list nothing; lookups still work. */
		ret = (cret == -EACCES || cret == -ENOENT || cret == -EIO) ? 0 : cret;
		goto out;
	}
	is_repo = cret < 0 || catalog_kind(t, r->reg, r->name, false) == 1;
	tret = is_repo ? listing(t, r->reg, r->name, true, &tags) : -ENOENT;
	if (tret == 0) {
		struct tree_attr a;
		dir_attr(&a);
		for (size_t i = 0; i < tags.n && !ret; i++) {
			bool dup = false;
			for (size_t j = 0; j < seen.n && !dup; j++)
				dup = !strcmp(seen.v[j], tags.v[i]);
			if (!dup && ref_valid_tag(tags.v[i]))
				ret = fill(ctx, tags.v[i], &a);
		}
		ret = 0;
	} else if (seen.n == 0) {
		ret = tret == -ENOENT ? -ENOENT : tret;
	}
out:
	strlist_release(&cat);
	strlist_release(&tags);
	strlist_release(&seen);
	return ret < 0 ? ret : 0;
}

int tree_readdir(struct tree *t, const char *path, tree_fill_fn fill, void *ctx)
{
	struct resolved *r = malloc(sizeof(*r));
	struct tree_attr a;
	int ret;

	if (!r)
		return -ENOMEM;
	ret = resolve(t, path, r);
	if (ret < 0)
		goto out_free;
	switch (r->kind) {
	case R_ROOT: {
		struct strlist regs = { 0 };
		pthread_mutex_lock(&t->lock);
		for (size_t i = 0; i < t->registries.n; i++) {
			char **v = realloc(regs.v, (regs.n + 1) * sizeof(*v));
			if (!v)
				break;
			regs.v = v;
			if (!(v[regs.n] = strdup(t->registries.v[i])))
				break;
			regs.n++;
		}
		pthread_mutex_unlock(&t->lock);
		dir_attr(&a);
		for (size_t i = 0; i < regs.n; i++)
			if (fill(ctx, regs.v[i], &a))
				break;
		strlist_release(&regs);
		break;
	}
	case R_REGISTRY:
	case R_NAMESPACE:
		ret = readdir_namespace(t, r, fill, ctx);
		break;
	case R_ARTIFACT: {
		const struct aentry *e = r->inner[0] ? art_lookup(r->art, r->inner) : NULL;
		size_t il = strlen(r->inner);
		if (r->inner[0] && (!e || !e->dir)) {
			ret = e ? -ENOTDIR : -ENOENT;
			break;
		}
		for (size_t i = 0; i < r->art->n; i++) {
			const struct aentry *c = &r->art->e[i];
			const char *rest = c->path;
			if (il) {
				if (strncmp(rest, r->inner, il) || rest[il] != '/')
					continue;
				rest += il + 1;
			}
			if (strchr(rest, '/'))
				continue;
			entry_attr(c, &a);
			if (fill(ctx, rest, &a))
				break;
		}
		break;
	}
	}
out_free:
	free(r);
	return ret;
}

struct fetch_ctx {
	struct tree *t;
	const char *reg, *repo, *digest;
	bool is_manifest;
};

static int fetch_blob(void *arg, reg_sink_fn sink, void *sink_arg)
{
	struct fetch_ctx *f = arg;
	struct reg_error err;
	char what[1600];
	int ret;

	snprintf(what, sizeof(what), "%s/%s@%s", f->reg, f->repo, f->digest);
	if (f->is_manifest) {
		struct reg_manifest rm = { 0 };
		ret = regclient_get_manifest(f->t->rc, f->reg, f->repo, f->digest, &rm, &err);
		if (ret == 0) {
			ret = sink(sink_arg, rm.body, rm.len);
			reg_manifest_release(&rm);
			return ret;
		}
	} else {
		ret = regclient_get_blob(f->t->rc, f->reg, f->repo, f->digest, sink, sink_arg, &err);
	}
	if (ret < 0 && ret != -EBADMSG)
		log_reg_error(what, &err, ret);
	return ret;
}

int tree_open(struct tree *t, const char *path)
{
	struct resolved *r = malloc(sizeof(*r));
	const struct aentry *e;
	int ret;

	if (!r)
		return -ENOMEM;
	ret = resolve(t, path, r);
	if (ret < 0)
		goto out_free;
	if (r->kind != R_ARTIFACT || !r->inner[0]) {
		ret = -EISDIR;
		goto out_free;
	}
	e = art_lookup(r->art, r->inner);
	if (!e) {
		ret = -ENOENT;
		goto out_free;
	}
	if (e->dir) {
		ret = -EISDIR;
		goto out_free;
	}
	struct fetch_ctx f = { t, r->reg, r->art->repo, e->digest, e->is_manifest };
	ret = blobcache_open(t->bc, e->digest, e->size, fetch_blob, &f);
	if (ret == -EBADMSG) {
		log_msg(LOG_ERR, "%s/%s@%s: blob %s failed verification (digest or size "
			"mismatch); not cached", r->reg, r->art->repo, r->art->digest, e->digest);
		ret = -EIO;
	} else if (ret == -ENOENT) {
		/* The descriptor named it; the registry does not have it. */
		ret = -EIO;
	}
out_free:
	free(r);
	return ret;
}

static int put_xattr(const char *val, char *buf, size_t size)
{
	size_t len = strlen(val);

	if (size == 0)
		return (int)len;
	if (len > size)
		return -ERANGE;
	memcpy(buf, val, len);
	return (int)len;
}

int tree_getxattr(struct tree *t, const char *path, const char *name, char *buf, size_t size)
{
	struct resolved *r = malloc(sizeof(*r));
	const struct aentry *e = NULL;
	char num[32];
	const char *val = NULL;
	int ret;

	if (!r)
		return -ENOMEM;
	ret = resolve(t, path, r);
	if (ret < 0)
		goto out_free;
	ret = -ENODATA;
	if (r->kind != R_ARTIFACT)
		goto out_free;
	if (r->inner[0]) {
		e = art_lookup(r->art, r->inner);
		if (!e) {
			ret = -ENOENT;
			goto out_free;
		}
		if (e->dir)
			goto out_free;
		if (!strcmp(name, "user.oci.digest"))
			val = e->digest;
		else if (!strcmp(name, "user.oci.mediaType"))
			val = e->media_type;
		else if (!strcmp(name, "user.oci.annotations"))
			val = e->annotations;
		else if (!strcmp(name, "user.oci.size")) {
			snprintf(num, sizeof(num), "%llu", (unsigned long long)e->size);
			val = num;
		}
	} else {
		if (!strcmp(name, "user.oci.digest"))
			val = r->art->digest;
		else if (!strcmp(name, "user.oci.mediaType"))
			val = r->art->m->media_type;
		else if (!strcmp(name, "user.oci.artifactType"))
			val = r->art->m->artifact_type;
		else if (!strcmp(name, "user.oci.annotations"))
			val = r->art->m->annotations;
	}
	if (val)
		ret = put_xattr(val, buf, size);
out_free:
	free(r);
	return ret;
}

int tree_listxattr(struct tree *t, const char *path, char *buf, size_t size)
{
	static const char *const names[] = { "user.oci.digest", "user.oci.mediaType",
					     "user.oci.size", "user.oci.annotations",
					     "user.oci.artifactType" };
	size_t off = 0;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int n = tree_getxattr(t, path, names[i], NULL, 0);
		size_t len = strlen(names[i]) + 1;
		if (n == -ENODATA)
			continue;
		if (n < 0)
			return n;
		if (size) {
			if (off + len > size)
				return -ERANGE;
			memcpy(buf + off, names[i], len);
		}
		off += len;
	}
	return (int)off;
}
