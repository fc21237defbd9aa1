/* tree.c - path resolution and caches behind the mount. See tree.h. */
#include "tree.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "artifact.h"
#include "blobcache.h"
#include "client.h"
#include "log.h"
#include "manifest.h"
#include "mirror.h"
#include "platform.h"
#include "ref.h"
#include "stats.h"

#define PATH_COMPONENTS_MAX 64

/* A resolved reference and its view. The view is immutable; the fallback
 * fields are filled on first use under tree.lock. Artifacts live as long
 * as the tree (manifests are small and content-addressed). */
struct artifact {
	struct artifact *next;
	char *registry, *repo;
	char *digest;		/* what the reference resolved to */
	struct aview *v;
	bool fallback_done;	/* tree.lock */
	int fallback_err;	/* tree.lock */
	char *fallback_path;	/* tree.lock: below the cache root */
};

/* A tag -> digest answer; digest NULL records "not a tag" (404). */
struct tagent {
	struct tagent *next;
	char *registry, *repo, *tag;
	char *digest;
	bool repo_exists;	/* 404 said MANIFEST_UNKNOWN, not NAME_UNKNOWN */
	time_t at;
	time_t warned;		/* last "using cached" warning */
};

/* A registry that stopped answering (refused, unreachable, timed out):
 * until @until it is not asked again, so that stale answers and cached
 * blobs are served at once instead of after a timeout per FUSE call. */
struct regstate {
	struct regstate *next;
	char name[256];
	time_t until;
	int err;
	char message[512];	/* reg_error.message */
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
	char root[2048];	/* prefix of every path; see tree_opts */
	struct stats *stats;
	struct regclient *rc;
	struct blobcache *bc;
	struct oci_platform platform;
	struct tarx_limits limits;
	unsigned tag_ttl;
	time_t started;
	pthread_mutex_t lock;
	struct strlist registries;	/* lock */
	struct regstate *down;		/* lock: registries not answering */
	struct tree_file *files;	/* lock: open files */
	long down_window;		/* seconds a silent registry is not asked */
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
	struct tree *t = arg;

	stats_request(t->stats, url, status, secs);
	log_msg(LOG_DEBUG, "%s %s -> %ld (%.3f s)", method, url, status, secs);
}

int tree_new(const struct tree_opts *o, struct tree **out)
{
	struct regclient_opts ro = {
		.insecure = o->insecure,
		.cafile = o->cafile,
		.authfile = o->authfile,
		.mirrors = o->mirrors,
		.mirror_tags = o->mirror_tags,
		.mirror_backoff = o->mirror_backoff,
		.timeout = o->timeout,
		.retries = o->retries,
		.trace = trace,
	};
	struct tree *t;
	int ret;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	ro.trace_arg = t;
	snprintf(t->root, sizeof(t->root), "%s", o->root ? o->root : "");
	t->stats = stats_new();
	if (!t->stats) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = blobcache_new(o->cache_dir, 0, &t->bc);
	if (ret < 0)
		goto out_free;
	ret = -ENOMEM;
	t->rc = regclient_new(&ro);
	if (!t->rc)
		goto out_free;
	if (o->page_size)
		regclient_set_page_size(t->rc, o->page_size);
	blobcache_set_max(t->bc, o->cache_max);
	t->tag_ttl = o->tag_ttl;
	t->down_window = o->timeout < 1 ? 1 : o->timeout > 10 ? 10 : o->timeout;
	t->platform = o->platform;
	t->limits = o->limits;
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
	if (!a)
		return;
	aview_free(a->v);
	free(a->fallback_path);
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
	while (t->files)
		tree_release(t, t->files);
	while (t->down) {
		struct regstate *r = t->down;
		t->down = r->next;
		free(r);
	}
	strlist_release(&t->registries);
	regclient_free(t->rc);
	blobcache_free(t->bc);
	stats_free(t->stats);
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

static void warn_log(void *arg, const char *msg)
{
	log_msg(LOG_WARNING, "%s: %s", (const char *)arg, msg);
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

/* May @reg be asked now? 0, or the error it gave when it went silent
 * (with @err saying so). Registries with mirrors are always asked: the
 * mirrors may answer. */
static int reg_gate(struct tree *t, const char *reg, struct reg_error *err)
{
	int ret = 0;

	if (regclient_mirror_count(t->rc, reg))
		return 0;
	pthread_mutex_lock(&t->lock);
	for (struct regstate *r = t->down; r; r = r->next) {
		if (strcmp(r->name, reg) || r->until <= now())
			continue;
		memset(err, 0, sizeof(*err));
		snprintf(err->message, sizeof(err->message), "%.400s; not asked again for %lds",
			 r->message, (long)(r->until - now()));
		ret = r->err;
		break;
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}

/* Note how @reg answered: a transport failure (no HTTP status) starts
 * its silent period, anything else ends it. */
static void reg_outcome(struct tree *t, const char *reg, int ret, const struct reg_error *err)
{
	bool silent = ret < 0 && err->status == 0 &&
		      (ret == -EHOSTUNREACH || ret == -ETIMEDOUT || ret == -EIO);
	struct regstate *r;

	if (ret == -EBADMSG || regclient_mirror_count(t->rc, reg))
		return;
	pthread_mutex_lock(&t->lock);
	for (r = t->down; r; r = r->next)
		if (!strcmp(r->name, reg))
			break;
	if (!r && silent && (r = calloc(1, sizeof(*r)))) {
		snprintf(r->name, sizeof(r->name), "%s", reg);
		r->next = t->down;
		t->down = r;
	}
	if (r) {
		r->until = silent ? now() + t->down_window : 0;
		r->err = ret;
		snprintf(r->message, sizeof(r->message), "%s", err->message);
	}
	pthread_mutex_unlock(&t->lock);
}

/* Manifest bytes for repo@digest, verified: from the cache, else from the
 * registry (and then cached). Caller frees *body and *ctype. */
static int manifest_bytes(struct tree *t, const char *reg, const char *repo,
			  const char *digest, char **body, size_t *len, char **ctype)
{
	struct reg_manifest rm = { 0 };
	struct reg_error err;
	char what[1600], got[72];
	int ret;

	*ctype = NULL;
	if (blobcache_read_all(t->bc, digest, MANIFEST_MAX_BYTES, body, len) == 0)
		return 0;
	snprintf(what, sizeof(what), "%s/%s@%s", reg, repo, digest);
	for (unsigned skip = 0, source = 0;; skip = source + 1) {
		ret = reg_gate(t, reg, &err);
		if (ret == 0) {
			ret = regclient_get_manifest(t->rc, reg, repo, digest, skip, &source, &rm,
						     &err);
			reg_outcome(t, reg, ret, &err);
		}
		if (ret < 0) {
			if (ret != -ENOENT)
				log_reg_error(what, &err, ret);
			return ret == -EFBIG ? -EIO : ret;
		}
		blobcache_digest_of(rm.body, rm.len, got);
		if (!strcmp(got, digest))
			break;
		if (source < regclient_mirror_count(t->rc, reg) && skip < MIRRORS_MAX) {
			log_msg(LOG_WARNING, "%s: a mirror sent a manifest that hashes to %s; asking "
				"the next source", what, got);
			reg_manifest_release(&rm);
			continue;
		}
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
	*body = rm.body;
	*len = rm.len;
	*ctype = rm.content_type;
	rm.body = rm.content_type = NULL;
out_release:
	reg_manifest_release(&rm);
	return ret;
}

static int parse_or_log(const char *what, const char *digest, const char *body, size_t len,
			const char *ctype, struct manifest **m)
{
	const char *why = NULL;
	int ret = manifest_parse(body, len, ctype, m, &why);

	if (ret < 0) {
		log_msg(LOG_ERR, "%s: malformed manifest %s: %s", what, digest,
			why ? why : strerror(-ret));
		return -EIO;
	}
	return 0;
}

/* Build the view of verified manifest bytes (choosing this platform's
 * manifest from an index) and publish it. */
static int artifact_publish(struct tree *t, const char *reg, const char *repo,
			    const char *digest, const char *body, size_t len,
			    const char *content_type, const char *what, struct artifact **out)
{
	struct manifest *top = NULL, *child = NULL;
	struct artifact *a, *b;
	char *cbody = NULL, *ctype = NULL;
	const char *cdigest = NULL;
	size_t clen = 0;
	int ret;

	ret = parse_or_log(what, digest, body, len, content_type, &top);
	if (ret < 0)
		return ret;
	a = calloc(1, sizeof(*a));
	if (!a) {
		manifest_free(top);
		return -ENOMEM;
	}
	a->registry = strdup(reg);
	a->repo = strdup(repo);
	a->digest = strdup(digest);
	if (!a->registry || !a->repo || !a->digest) {
		manifest_free(top);
		ret = -ENOMEM;
		goto out_free;
	}
	if (top->kind == MANIFEST_INDEX) {
		int i = platform_select(top, &t->platform);
		if (i >= 0) {
			cdigest = top->layers[i].digest;
			ret = manifest_bytes(t, reg, repo, cdigest, &cbody, &clen, &ctype);
			if (ret == 0)
				ret = parse_or_log(what, cdigest, cbody, clen,
						   ctype ? ctype : top->layers[i].media_type, &child);
			if (ret == 0 && child->kind != MANIFEST_IMAGE) {
				log_msg(LOG_ERR, "%s: %s is an index inside an index; refused", what,
					cdigest);
				ret = -EIO;
			}
			if (ret < 0) {
				manifest_free(top);
				manifest_free(child);
				goto out_free;
			}
		}
		ret = aview_build(top, digest, len, child, cdigest, clen, &t->platform, warn_log,
				  (void *)what, &a->v);
	} else {
		ret = aview_build(NULL, NULL, 0, top, digest, len, &t->platform, warn_log,
				  (void *)what, &a->v);
	}
	if (ret < 0)
		goto out_free;
	if (a->v->index && !a->v->m) {
		char p[64];
		platform_format(&t->platform, p, sizeof(p));
		log_msg(LOG_WARNING, "%s: the index has no manifest for %s; it offers: %s", what,
			p, a->v->offered[0] ? a->v->offered : "no platforms");
	}
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
	else
		stats_saved(t->stats, b->v->skipped);
	*out = b;
	ret = 0;
	goto out_body;
out_free:
	artifact_free(a);
out_body:
	free(cbody);
	free(ctype);
	return ret;
}

/* The artifact for repo@digest: from memory, the blob cache, or the
 * registry (verified against the digest). */
static int artifact_by_digest(struct tree *t, const char *reg, const char *repo,
			      const char *digest, struct artifact **out)
{
	char what[1600], *body = NULL, *ctype = NULL;
	size_t len = 0;
	int ret;

	if ((*out = artifact_find(t, reg, repo, digest)))
		return 0;
	snprintf(what, sizeof(what), "%s/%s@%s", reg, repo, digest);
	ret = manifest_bytes(t, reg, repo, digest, &body, &len, &ctype);
	if (ret == 0)
		ret = artifact_publish(t, reg, repo, digest, body, len, ctype, what, out);
	free(body);
	free(ctype);
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

/* Say "using cached" once per silent period and tag, not per FUSE call. */
static bool stale_warning_due(struct tree *t, const char *reg, const char *repo,
			      const char *tag)
{
	struct tagent *e;
	bool due = false;

	pthread_mutex_lock(&t->lock);
	e = tag_find(t, reg, repo, tag);
	if (e && now() - e->warned >= t->down_window) {
		e->warned = now();
		due = true;
	}
	pthread_mutex_unlock(&t->lock);
	return due;
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
	ret = reg_gate(t, reg, &err);
	if (ret == 0) {
		ret = regclient_get_manifest(t->rc, reg, repo, tag, 0, NULL, &rm, &err);
		reg_outcome(t, reg, ret, &err);
	}
	if (ret == -ENOENT) {
		*repo_exists = !strcmp(err.code, "MANIFEST_UNKNOWN");
		tag_store(t, reg, repo, tag, NULL, *repo_exists);
		log_msg(LOG_DEBUG, "%s: %s", what, err.code[0] ? err.code : "not found");
		ret = 0;
		goto out_free;
	}
	if (ret < 0) {
		if (stale && ret != -EACCES) {
			if (stale_warning_due(t, reg, repo, tag))
				log_msg(LOG_WARNING, "%s: registry unavailable (%s); using cached %s",
					what, err.message, stale);
			ret = artifact_by_digest(t, reg, repo, stale, out);
			ret = ret < 0 ? ret : 1;
			goto out_free;
		}
		log_reg_error(what, &err, ret);
		if (ret == -EFBIG)
			ret = -EIO;	/* a manifest over 4 MiB: refused */
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

/* Seed 002: "0.0.1" resolves to "0.0.1-linux-amd64" on linux/amd64 where
 * the registry has no plain "0.0.1". */
static int artifact_by_tag_or_platform_tag(struct tree *t, const char *reg, const char *repo,
					   const char *tag, struct artifact **out,
					   bool *repo_exists)
{
	char alt[REF_TAG_MAX + 64];
	bool exists = false;
	int ret = artifact_by_tag(t, reg, repo, tag, out, repo_exists);

	if (ret != 0 || !*repo_exists || platform_in_name(tag, NULL))
		return ret;
	/* Only version-like tags are split per platform; this spares a probe
	 * per namespace level ("acme" in acme/tools/cli). */
	if (!(isdigit((unsigned char)tag[0]) ||
	      (tag[0] == 'v' && isdigit((unsigned char)tag[1])) || !strcmp(tag, "latest")))
		return 0;
	snprintf(alt, sizeof(alt), "%s-%s-%s", tag, t->platform.os, t->platform.arch);
	if (!ref_valid_tag(alt))
		return 0;
	return artifact_by_tag(t, reg, repo, alt, out, &exists);
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

	int gated = reg_gate(t, reg, &err);
	ret = gated;
	if (ret == 0) {
		ret = repo ? regclient_list_tags(t->rc, reg, repo, &l, &err) :
			     regclient_list_catalog(t->rc, reg, &l, &err);
		reg_outcome(t, reg, ret, &err);
	}
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
 * says it is a namespace only: that saves a request per namespace level.
 * A name the catalog lacks is asked all the same: the catalog may predate
 * it (or be a pull-through cache's partial one). */
static bool is_repo_candidate(struct tree *t, const char *reg, const char *name)
{
	return catalog_kind(t, reg, name, false) != 2;
}

/* catalog_kind() that, before saying "no such name", refreshes a catalog
 * older than a second: a repository pushed since must not be ENOENT for
 * the rest of tag_ttl. */
static int catalog_kind_current(struct tree *t, const char *reg, const char *name)
{
	int ret = catalog_kind(t, reg, name, true);

	if (ret != 0)
		return ret;
	pthread_mutex_lock(&t->lock);
	for (struct listent *e = t->lists; e; e = e->next) {
		if (strcmp(e->registry, reg) || e->repo)
			continue;
		if (now() - e->at >= 1) {
			e->at = 0;	/* stale: the next listing() fetches */
			ret = -EAGAIN;
		}
		break;
	}
	pthread_mutex_unlock(&t->lock);
	return ret == -EAGAIN ? catalog_kind(t, reg, name, true) : 0;
}

enum rkind {
	R_ROOT,
	R_REGISTRY,
	R_NAMESPACE,
	R_ARTIFACT,
	R_CONTROL,	/* /.ocifs: not listed */
	R_STATS,	/* /.ocifs/stats */
};

#define CONTROL_DIR "/.ocifs"

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
		registry_visit(t, c[0]);
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

/* ---- serving artifact entries ---- */

struct fetch_ctx {
	struct tree *t;
	const char *reg, *repo, *digest;
	uint64_t size;
	bool is_manifest;
	bool fetched;		/* set when a download happened */
	unsigned skip;		/* sources that sent wrong bytes */
	/* Between the registry and the cache's sink: counts progress. */
	reg_sink_fn sink;
	void *sink_arg;
	struct stats_download *progress;
};

static int counting_sink(void *arg, const void *data, size_t len)
{
	struct fetch_ctx *f = arg;

	stats_download_progress(f->t->stats, f->progress, data ? len : 0, !data);
	return f->sink(f->sink_arg, data, len);
}

static int fetch_blob(void *arg, reg_sink_fn sink, void *sink_arg, bool *retry)
{
	struct fetch_ctx *f = arg;
	unsigned source = 0;
	struct reg_error err;
	char what[1600];
	int ret;

	f->fetched = true;
	if (f->skip)
		log_msg(LOG_WARNING, "%s/%s@%s: a mirror sent bytes that do not match; asking "
			"the next source", f->reg, f->repo, f->digest);
	f->sink = sink;
	f->sink_arg = sink_arg;
	snprintf(what, sizeof(what), "%s/%s@%s", f->reg, f->repo, f->digest);
	f->progress = stats_download_begin(f->t->stats, what, f->digest, f->size);
	ret = reg_gate(f->t, f->reg, &err);
	if (ret < 0) {
		/* not asked: the registry is silent */
	} else if (f->is_manifest) {
		struct reg_manifest rm = { 0 };
		ret = regclient_get_manifest(f->t->rc, f->reg, f->repo, f->digest, f->skip,
					     &source, &rm, &err);
		reg_outcome(f->t, f->reg, ret, &err);
		if (ret == 0) {
			ret = counting_sink(f, rm.body, rm.len);
			reg_manifest_release(&rm);
		}
		if (source < regclient_mirror_count(f->t->rc, f->reg)) {
			f->skip = source + 1;
			*retry = true;
		}
	} else {
		ret = regclient_get_blob(f->t->rc, f->reg, f->repo, f->digest, counting_sink, f,
					 f->skip, &source, &err);
		reg_outcome(f->t, f->reg, ret, &err);
		/* A mirror's bytes that prove wrong: the next source is asked. */
		if (source < regclient_mirror_count(f->t->rc, f->reg)) {
			f->skip = source + 1;
			*retry = true;
			if (ret == -EBADMSG || ret == 0)
				log_msg(LOG_DEBUG, "%s: from mirror %u", what, source);
		}
	}
	stats_download_end(f->t->stats, f->progress, ret);
	f->progress = NULL;
	if (ret < 0 && ret != -EBADMSG && (f->is_manifest || err.status || err.message[0]))
		log_reg_error(what, &err, ret);
	return ret;
}

/* Open a blob entry's cache file, fetching and verifying it first. */
static int open_blob(struct tree *t, const struct artifact *a, const char *digest,
		     uint64_t size, bool is_manifest)
{
	struct fetch_ctx f = { .t = t, .reg = a->registry, .repo = a->repo, .digest = digest,
			       .size = size, .is_manifest = is_manifest };
	int ret = blobcache_open(t->bc, digest, size, fetch_blob, &f);

	stats_open(t->stats, !f.fetched);

	if (ret == -EBADMSG) {
		log_msg(LOG_ERR, "%s/%s@%s: blob %s failed verification (digest or size "
			"mismatch); not cached", a->registry, a->repo, a->digest, digest);
		return -EIO;
	}
	if (ret == -ENOENT)	/* the descriptor named it; the registry lacks it */
		return -EIO;
	return ret;
}

/* Extract archive layer @digest; -EIO (and a log line) when refused. */
static int extract(struct tree *t, const struct artifact *a, const char *digest, uint64_t size,
		   bool quiet_if_not_tar)
{
	struct fetch_ctx f = { .t = t, .reg = a->registry, .repo = a->repo, .digest = digest,
			       .size = size };
	struct tarx_error err;
	int ret = blobcache_extract(t->bc, digest, size, fetch_blob, &f, &t->limits, &err);

	if (ret == -EBADMSG) {
		log_msg(LOG_ERR, "%s/%s@%s: layer %s failed verification; not cached",
			a->registry, a->repo, a->digest, digest);
		return -EIO;
	}
	if (ret == -EINVAL && quiet_if_not_tar)
		return ret;
	if (ret == -EPERM || ret == -EFBIG || ret == -EINVAL) {
		if (!err.repeated)
			log_msg(LOG_ERR, "%s/%s@%s: layer %s refused%s%s%s: %s", a->registry, a->repo,
				a->digest, digest, err.entry[0] ? ": entry \"" : "", err.entry,
				err.entry[0] ? "\"" : "", err.reason ? err.reason : strerror(-ret));
		return -EIO;
	}
	return ret;
}

/* Find the legacy fallback binary: this platform's file inside a
 * multi-platform archive layer (seed 000). */
static int ensure_fallback(struct tree *t, struct artifact *a, char *out, size_t len)
{
	int cand[16], ret = -ENOENT;
	size_t n;
	char plat[64];

	pthread_mutex_lock(&t->lock);
	if (a->fallback_done) {
		ret = a->fallback_err;
		if (ret == 0)
			snprintf(out, len, "%s", a->fallback_path);
		pthread_mutex_unlock(&t->lock);
		return ret;
	}
	pthread_mutex_unlock(&t->lock);

	platform_format(&t->platform, plat, sizeof(plat));
	n = aview_fallback_layers(a->v, &t->platform, cand, 16);
	for (size_t i = 0; i < n; i++) {
		const struct descriptor *d = &a->v->m->layers[cand[i]];
		char dir[96], rel[4096];
		int dfd;

		ret = extract(t, a, d->digest, d->size, true);
		if (ret == -EINVAL || ret == -EIO)
			continue;	/* not a tar, or refused: try the next */
		if (ret < 0)
			return ret;	/* transient: do not remember */
		snprintf(dir, sizeof(dir), "extract/sha256/%s", d->digest + 7);
		dfd = openat(blobcache_root_fd(t->bc), dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return -errno;
		ret = aview_find_entrypoint(dfd, &t->platform, rel, sizeof(rel));
		close(dfd);
		if (ret == 0) {
			snprintf(out, len, "%s/%s", dir, rel);
			log_msg(LOG_INFO, "%s/%s@%s: no %s layer; using %s from multi-platform "
				"layer %s (legacy fallback)", a->registry, a->repo, a->digest, plat,
				rel, d->digest);
			break;
		}
	}
	if (ret < 0) {
		ret = -ENOENT;
		log_msg(LOG_WARNING, "%s/%s@%s: no binary for %s in any layer", a->registry,
			a->repo, a->digest, plat);
	}
	pthread_mutex_lock(&t->lock);
	if (!a->fallback_done) {
		a->fallback_done = true;
		a->fallback_err = ret;
		if (ret == 0 && !(a->fallback_path = strdup(out)))
			a->fallback_done = false;
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}

/* Where an entry lives below the cache root, for those served from the
 * extract area: inside an archive (@rest) or the fallback. */
static int extracted_path(struct tree *t, struct artifact *a, const struct aentry *e,
			  const char *rest, char *out, size_t len)
{
	int ret;

	if (e->kind == AE_FALLBACK)
		return ensure_fallback(t, a, out, len);
	ret = extract(t, a, e->digest, e->size, false);
	if (ret < 0)
		return ret;
	snprintf(out, len, "extract/sha256/%s%s%s", e->digest + 7, rest && *rest ? "/" : "",
		 rest ? rest : "");
	return 0;
}

static void dir_attr(struct tree_attr *a)
{
	a->mode = S_IFDIR | 0555;
	a->size = 0;
}

static void stat_attr(const struct stat *st, struct tree_attr *a)
{
	a->mode = (st->st_mode & S_IFMT) | (st->st_mode & 0555);
	a->size = (uint64_t)st->st_size;
}

static void entry_attr(const struct aentry *e, struct tree_attr *a)
{
	if (e->kind == AE_DIR || e->kind == AE_ARCHIVE) {
		dir_attr(a);
		return;
	}
	a->mode = S_IFREG | e->mode;
	a->size = e->size;
}

/* Resolve @path; for artifact entries also find the entry (NULL for the
 * artifact root) and, inside archives, the path in the extract area. */
struct target {
	struct resolved r;
	const struct aentry *e;
	const char *rest;
	char ext[4200];		/* "" unless served from the extract area */
};

static int target_get(struct tree *t, const char *path, struct target *g)
{
	char full[4096];
	int ret;

	g->e = NULL;
	g->rest = NULL;
	g->ext[0] = '\0';
	/* The control directory sits at the mount's root in every mode. */
	if (!strncmp(path, CONTROL_DIR, strlen(CONTROL_DIR))) {
		const char *rest = path + strlen(CONTROL_DIR);
		memset(&g->r, 0, sizeof(g->r));
		if (!*rest) {
			g->r.kind = R_CONTROL;
			return 0;
		}
		if (!strcmp(rest, "/stats")) {
			g->r.kind = R_STATS;
			return 0;
		}
		if (*rest == '/')
			return -ENOENT;
	}
	if (t->root[0]) {
		size_t rl = strlen(t->root), pl = strcmp(path, "/") ? strlen(path) : 0;
		if (rl + pl >= sizeof(full))
			return -ENAMETOOLONG;
		memcpy(full, t->root, rl);
		memcpy(full + rl, path, pl);
		full[rl + pl] = '\0';
		path = full;
	}
	ret = resolve(t, path, &g->r);
	if (ret < 0 || g->r.kind != R_ARTIFACT || !g->r.inner[0])
		return ret;
	g->e = aview_lookup(g->r.art->v, g->r.inner, &g->rest);
	if (!g->e)
		return -ENOENT;
	if (g->rest || g->e->kind == AE_FALLBACK)
		return extracted_path(t, g->r.art, g->e, g->rest, g->ext, sizeof(g->ext));
	return 0;
}

/* target_get() into a heap target (it is large); the caller frees it. */
static int target_new(struct tree *t, const char *path, struct target **out)
{
	struct target *g = malloc(sizeof(*g));
	int ret;

	if (!g)
		return -ENOMEM;
	ret = target_get(t, path, g);
	if (ret < 0) {
		free(g);
		return ret;
	}
	*out = g;
	return 0;
}

int tree_getattr(struct tree *t, const char *path, struct tree_attr *out)
{
	struct target *g;
	struct stat st;
	int ret;

	/* The mount point itself is a directory whatever the registry says:
	 * a reference mount stays usable (and /.ocifs reachable) while its
	 * registry is down. */
	if (!strcmp(path, "/")) {
		dir_attr(out);
		return 0;
	}

	ret = target_new(t, path, &g);
	if (ret < 0)
		return ret;
	if (g->ext[0]) {
		if (fstatat(blobcache_root_fd(t->bc), g->ext, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			ret = -errno;
			goto out_free;
		}
		stat_attr(&st, out);
		if (g->e->kind == AE_FALLBACK)
			out->mode = S_IFREG | 0555;
	} else if (g->e) {
		entry_attr(g->e, out);
	} else if (g->r.kind == R_STATS) {
		out->mode = S_IFREG | 0444;
		out->size = 0;	/* generated on open; read with direct I/O */
	} else {
		dir_attr(out);
	}
out_free:
	free(g);
	return ret;
}

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

static int readdir_extracted(struct tree *t, const char *rel, tree_fill_fn fill, void *ctx)
{
	int fd = openat(blobcache_root_fd(t->bc), rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
							    O_CLOEXEC);
	struct dirent *de;
	struct tree_attr a;
	struct stat st;
	DIR *d;

	if (fd < 0)
		return -errno;
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
	const struct aview *v = g->r.art->v;
	const char *inner = g->r.inner;
	size_t il = strlen(inner);
	struct tree_attr a;

	if (g->ext[0])
		return readdir_extracted(t, g->ext, fill, ctx);
	if (g->e && g->e->kind == AE_ARCHIVE) {
		char rel[4200];
		int ret = extracted_path(t, g->r.art, g->e, NULL, rel, sizeof(rel));
		return ret < 0 ? ret : readdir_extracted(t, rel, fill, ctx);
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
		ret = readdir_namespace(t, &g->r, fill, ctx);
		break;
	case R_ARTIFACT:
		ret = readdir_artifact(t, g, fill, ctx);
		break;
	case R_CONTROL:
		a.mode = S_IFREG | 0444;
		a.size = 0;
		fill(ctx, "stats", &a);
		break;
	case R_STATS:
		ret = -ENOTDIR;
		break;
	}
	free(g);
	return ret;
}

/* The stats document in an anonymous file. */
static int open_stats(struct tree *t)
{
	char *doc;
	size_t len, off = 0;
	int fd, ret;

	ret = stats_json(t->stats, &doc, &len);
	if (ret < 0)
		return ret;
	fd = memfd_create("ocifs-stats", MFD_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		goto out_free;
	}
	while (off < len) {
		ssize_t n = write(fd, doc + off, len - off);
		if (n < 0) {
			ret = -errno;
			close(fd);
			goto out_free;
		}
		off += (size_t)n;
	}
	ret = fd;
out_free:
	free(doc);
	return ret;
}

/* "extract/sha256/<hex>/..." -> "sha256:<hex>" */
static void layer_of_extracted(const char *rel, char out[72])
{
	snprintf(out, 72, "sha256:%.64s", rel + strlen("extract/sha256/"));
}

static int do_open(struct tree *t, struct target *g, struct tree_file *f)
{
	const struct aentry *e = g->e;
	int ret;

	if (g->r.kind == R_STATS) {
		f->direct = true;
		return open_stats(t);
	}
	if (g->ext[0]) {
		/* Pin first: eviction must not take the layer under us. */
		layer_of_extracted(g->ext, f->pin);
		blobcache_pin(t->bc, f->pin);
		ret = openat(blobcache_root_fd(t->bc), g->ext, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (ret < 0)
			ret = errno == ELOOP ? -EINVAL : -errno;
		return ret;
	}
	if (!e || e->kind == AE_DIR || e->kind == AE_ARCHIVE)
		return -EISDIR;
	snprintf(f->pin, sizeof(f->pin), "%s", e->digest);
	blobcache_pin(t->bc, f->pin);
	if (e->kind == AE_DATA) {
		ret = blobcache_put(t->bc, e->digest, e->data, e->size);
		return ret < 0 ? ret : blobcache_open(t->bc, e->digest, e->size, NULL, NULL);
	}
	return open_blob(t, g->r.art, e->digest, e->size, e->kind == AE_MANIFEST);
}

int tree_open(struct tree *t, const char *path, struct tree_file **out)
{
	struct tree_file *f = calloc(1, sizeof(*f));
	struct target *g;
	int ret;

	if (!f)
		return -ENOMEM;
	f->fd = -1;
	ret = target_new(t, path, &g);
	if (ret == 0) {
		ret = do_open(t, g, f);
		free(g);
	}
	if (ret < 0) {
		if (f->pin[0])
			blobcache_unpin(t->bc, f->pin);
		free(f);
		return ret;
	}
	f->fd = ret;
	pthread_mutex_lock(&t->lock);
	f->next = t->files;
	if (t->files)
		t->files->prev = f;
	t->files = f;
	pthread_mutex_unlock(&t->lock);
	*out = f;
	return 0;
}

void tree_release(struct tree *t, struct tree_file *f)
{
	pthread_mutex_lock(&t->lock);
	if (f->prev)
		f->prev->next = f->next;
	else
		t->files = f->next;
	if (f->next)
		f->next->prev = f->prev;
	pthread_mutex_unlock(&t->lock);
	if (f->fd >= 0)
		close(f->fd);
	if (f->pin[0])
		blobcache_unpin(t->bc, f->pin);
	free(f);
}

int tree_check_root(struct tree *t)
{
	struct target *g;
	int ret = target_new(t, "/", &g);

	if (ret == 0)
		free(g);
	return ret;
}

void tree_count_read(struct tree *t, size_t bytes)
{
	stats_served(t->stats, bytes);
}

int tree_readlink(struct tree *t, const char *path, char *buf, size_t size)
{
	struct target *g;
	ssize_t n;
	int ret;

	ret = target_new(t, path, &g);
	if (ret < 0)
		return ret;
	if (!g->ext[0] || size == 0) {
		ret = -EINVAL;
		goto out_free;
	}
	n = readlinkat(blobcache_root_fd(t->bc), g->ext, buf, size - 1);
	if (n < 0) {
		ret = -errno;
		goto out_free;
	}
	buf[n] = '\0';
out_free:
	free(g);
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
	struct target *g;
	const struct aentry *e;
	char num[32];
	const char *val = NULL;
	int ret;

	ret = target_new(t, path, &g);
	if (ret < 0)
		return ret;
	ret = -ENODATA;
	if (g->r.kind != R_ARTIFACT || g->rest)
		goto out_free;
	e = g->e;
	if (e && e->kind != AE_DIR && e->kind != AE_FALLBACK) {
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
	} else if (!e) {
		const struct aview *v = g->r.art->v;
		const struct manifest *m = v->m ? v->m : v->index;
		if (!strcmp(name, "user.oci.digest"))
			val = g->r.art->digest;
		else if (!strcmp(name, "user.oci.mediaType"))
			val = v->index ? v->index->media_type : m->media_type;
		else if (!strcmp(name, "user.oci.artifactType"))
			val = m->artifact_type;
		else if (!strcmp(name, "user.oci.annotations"))
			val = m->annotations;
		else if (!strcmp(name, "user.oci.reference")) {
			snprintf(g->ext, sizeof(g->ext), "%s/%s@%s", g->r.reg, g->r.art->repo,
				 g->r.art->digest);
			val = g->ext;
		}
	}
	if (val)
		ret = put_xattr(val, buf, size);
out_free:
	free(g);
	return ret;
}

int tree_listxattr(struct tree *t, const char *path, char *buf, size_t size)
{
	static const char *const names[] = { "user.oci.digest", "user.oci.mediaType",
					     "user.oci.size", "user.oci.annotations",
					     "user.oci.artifactType", "user.oci.reference" };
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
