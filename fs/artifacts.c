/* artifacts.c - owns the artifact views: one per registry/repo@digest,
 * built from manifests fetched and verified against their digest (an
 * index is resolved to this platform's manifest), in a hashed table kept
 * in LRU order (lrumap.h). One lock, artifacts.lock, guards the table,
 * the lookups in flight, each artifact's references and its fallback and
 * layout fields; the views themselves are immutable. Beyond the bounds the
 * least recently used are taken out (freed once no request holds them)
 * and resolved again when next looked up: one manifest request, or none
 * from the blob cache. */
#include "artifacts.h"

#include <ctype.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "artifact.h"
#include "blobcache.h"
#include "client.h"
#include "dircache.h"
#include "log.h"
#include "lrumap.h"
#include "manifest.h"
#include "mirror.h"
#include "platform.h"
#include "ref.h"
#include "registries.h"
#include "signatures.h"
#include "stats.h"
#include "tree_impl.h"

/* One lookup of a reference that is not in memory (the GET by tag, or the
 * manifest by digest, and the view built from it) in flight: every other
 * lookup of the same reference waits for it and takes its outcome, failure
 * included, so N threads cost one request, not N (nor N timeouts). */
struct mflight {
	struct mflight *next;	/* artifacts.lock: artifacts.flights */
	char *key;		/* "reg/repo:tag" or "reg/repo@digest" */
	unsigned holders;	/* the leader and its waiters */
	bool done;
	int ret;		/* once done: the lookup's answer ... */
	bool repo_exists;	/* ... */
	struct reg_error err;	/* ... why it failed, if said (lookup_fn) ... */
	struct artifact *a;	/* ... with a reference for each waiter */
	pthread_cond_t cond;
};

struct artifacts {
	pthread_mutex_t lock;
	/* lock: by registry, repository and digest, most recently used
	 * first, within the count and the bytes (artifact_footprint()) */
	struct lrumap map;
	struct mflight *flights;	/* lock: as many as lookups in progress */
};

int artifacts_new(size_t max, uint64_t max_bytes, struct artifacts **out)
{
	struct artifacts *as = calloc(1, sizeof(*as));
	int ret;

	if (!as)
		return -ENOMEM;
	ret = lrumap_init(&as->map, max, max_bytes);
	if (ret < 0) {
		free(as);
		return ret;
	}
	pthread_mutex_init(&as->lock, NULL);
	*out = as;
	return 0;
}

static struct artifact *artifact_of(struct lrumap_node *n)
{
	return (struct artifact *)((char *)n - offsetof(struct artifact, node));
}

static void artifact_free(struct artifact *a)
{
	if (!a)
		return;
	lrumap_node_release(&a->node);
	aview_free(a->layout);	/* borrows from a->v */
	aview_free(a->v);
	free(a->fallback_path);
	free(a->registry);
	free(a->repo);
	free(a->digest);
	free(a);
}

static size_t str_size(const char *s)
{
	return s ? manifest_alloc_size(strlen(s) + 1) : 0;
}

/* The memory @a holds, its views' included: what artifacts_max_bytes
 * bounds. */
static size_t artifact_footprint(const struct artifact *a, const struct aview *layout)
{
	return manifest_alloc_size(sizeof(*a)) + str_size(a->registry) + str_size(a->repo) +
	       str_size(a->digest) + aview_footprint(a->v) + aview_footprint(layout);
}

static void warn_log(void *arg, bool expected, const char *msg)
{
	log_msg(expected ? LOG_INFO : LOG_WARNING, "%s: %s", (const char *)arg, msg);
}

/* Take the least recently used out while over a bound (never @keep,
 * just published); those no request holds are returned in a chain through
 * ->node.next to be freed outside the lock. artifacts.lock held. */
static struct artifact *lru_trim(struct artifacts *as, const struct artifact *keep)
{
	struct lrumap_node *n = lrumap_trim(&as->map, &keep->node), *next;
	struct artifact *dead = NULL;

	for (; n; n = next) {
		struct artifact *a = artifact_of(n);
		next = n->next;
		n->next = NULL;
		a->evicted = true;
		if (!a->refs) {
			n->next = dead ? &dead->node : NULL;
			dead = a;
		}
	}
	return dead;
}

/* Free a chain from lru_trim(): the bytes it held. */
static size_t free_chain(struct artifact *a)
{
	size_t bytes = 0;

	while (a) {
		struct artifact *next = a->node.next ? artifact_of(a->node.next) : NULL;
		bytes += a->node.bytes;
		artifact_free(a);
		a = next;
	}
	return bytes;
}

/* A big manifest's parse (jansson's tree, the copies) and the views it
 * pushed out leave their memory in malloc's free lists, in whichever
 * arena each FUSE thread used: give those pages back, so that the
 * daemon's RSS follows artifacts_max_bytes. It walks every arena, so only
 * after big ones. */
#define GIVE_BACK_MIN (1u << 20)

static void give_back(size_t bytes)
{
#ifdef __GLIBC__
	if (bytes >= GIVE_BACK_MIN)
		malloc_trim(0);
#else
	(void)bytes;
#endif
}

static void free_node(struct lrumap_node *n)
{
	artifact_free(artifact_of(n));
}

void artifacts_free(struct artifacts *as)
{
	if (!as)
		return;
	lrumap_release(&as->map, free_node);	/* no request is left at unmount */
	pthread_mutex_destroy(&as->lock);
	free(as);
}

void artifact_put(struct tree *t, struct artifact *a)
{
	bool dead;

	if (!a)
		return;
	pthread_mutex_lock(&t->arts->lock);
	dead = --a->refs == 0 && a->evicted;
	pthread_mutex_unlock(&t->arts->lock);
	if (dead) {
		size_t bytes = a->node.bytes;
		artifact_free(a);
		give_back(bytes);
	}
}

/* A lookup run by single_flight(): 0 or 1 with *out (a reference, or
 * NULL) and *repo_exists as artifact_by_*() answer, or -errno with @err
 * (zeroed by the caller) saying why when the lookup left the logging to
 * its caller. */
typedef int (*lookup_fn)(struct tree *t, void *arg, struct artifact **out, bool *repo_exists,
			 struct reg_error *err);

#define FLIGHT_RETRIES 8	/* leaders interrupted while we waited */

/* Wait under artifacts.lock for @f to be done: 0, or -EINTR once this
 * request is interrupted (asked about once a second), as the blob cache's
 * waiters do. */
static int mflight_wait(struct tree *t, struct mflight *f)
{
	while (!f->done) {
		struct timespec ts;

		if (!t->interrupted) {
			pthread_cond_wait(&f->cond, &t->arts->lock);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec++;
		pthread_cond_timedwait(&f->cond, &t->arts->lock, &ts);
		if (!f->done && t->interrupted())
			return -EINTR;
	}
	return 0;
}

/* artifacts.lock held: the lookup of @key in flight, or a new one led by
 * the caller (*lead set; NULL on ENOMEM). */
static struct mflight *mflight_get(struct artifacts *as, const char *key, bool *lead)
{
	struct mflight *f;
	pthread_condattr_t ca;

	for (f = as->flights; f; f = f->next)
		if (!strcmp(f->key, key)) {
			f->holders++;
			*lead = false;
			return f;
		}
	f = calloc(1, sizeof(*f));
	if (!f || !(f->key = strdup(key))) {
		free(f);
		return NULL;
	}
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->cond, &ca);
	pthread_condattr_destroy(&ca);
	f->holders = 1;
	f->next = as->flights;
	as->flights = f;
	*lead = true;
	return f;
}

/* artifacts.lock held: the lookup @f is done with @ret, @a, @exists
 * (@err when it failed); each waiter gets a reference of its own. */
static void mflight_land(struct artifacts *as, struct mflight *f, int ret, struct artifact *a,
			 bool exists, const struct reg_error *err)
{
	struct mflight **pp;

	for (pp = &as->flights; *pp != f; pp = &(*pp)->next)
		;
	*pp = f->next;
	f->done = true;
	f->ret = ret;
	f->repo_exists = exists;
	if (ret < 0)
		f->err = *err;
	f->a = ret < 0 ? NULL : a;
	if (f->a)
		f->a->refs += f->holders - 1;
	pthread_cond_broadcast(&f->cond);
}

/* artifacts.lock held; the last holder frees @f after the unlock. */
static bool mflight_leave(struct mflight *f)
{
	return --f->holders == 0;
}

static void mflight_free(struct mflight *f)
{
	if (!f)
		return;
	pthread_cond_destroy(&f->cond);
	free(f->key);
	free(f);
}

/* Run @fn for @key once however many lookups ask at the same time: the
 * first runs it, the others wait and share its answer, failure included
 * (and its reason in @err, zeroed first). A waiter whose own request is
 * interrupted leaves with -EINTR; one whose leader's request was asks
 * again. */
static int single_flight(struct tree *t, const char *key, lookup_fn fn, void *arg,
			 struct artifact **out, bool *repo_exists, struct reg_error *err)
{
	struct artifacts *as = t->arts;
	unsigned tries = 0;
	struct artifact *a;
	struct mflight *f;
	bool lead, exists, last;
	int ret;

	memset(err, 0, sizeof(*err));
	/* Another user's request asks no registry (reg_gate()): nothing
	 * to share, and it must not answer for the mount's owner's. */
	if (t->may_fetch && !t->may_fetch())
		return fn(t, arg, out, repo_exists, err);
again:
	a = NULL;
	exists = false;
	pthread_mutex_lock(&as->lock);
	f = mflight_get(as, key, &lead);
	pthread_mutex_unlock(&as->lock);
	if (!f)
		return fn(t, arg, out, repo_exists, err);	/* alone, then */
	if (lead) {
		ret = fn(t, arg, &a, &exists, err);
		pthread_mutex_lock(&as->lock);
		mflight_land(as, f, ret, a, exists, err);
	} else {
		stats_manifest_wait(t->stats, 1);
		pthread_mutex_lock(&as->lock);
		ret = mflight_wait(t, f);
		if (ret == 0) {
			ret = f->ret;
			exists = f->repo_exists;
			a = f->a;	/* its reference was taken for us */
			if (ret < 0)
				*err = f->err;
		}
	}
	last = mflight_leave(f);
	pthread_mutex_unlock(&as->lock);
	if (last)
		mflight_free(f);
	if (!lead) {
		stats_manifest_wait(t->stats, -1);
		if (ret == -EINTR && tries++ < FLIGHT_RETRIES &&
		    !(t->interrupted && t->interrupted()))
			goto again;
	}
	if (ret >= 0) {
		*out = a;
		*repo_exists = exists;
	}
	return ret;
}

/* artifacts.lock held: the listed one for repo@digest, or NULL; @touch
 * makes it the most recently used. */
static struct artifact *lru_find(struct artifacts *as, const char *reg, const char *repo,
				 const char *digest, bool touch)
{
	const struct lrukey k = { { reg, repo, digest }, 3 };
	struct lrumap_node *n = touch ? lrumap_get(&as->map, &k) : lrumap_peek(&as->map, &k);

	return n ? artifact_of(n) : NULL;
}

/* The artifact for repo@digest in memory, with a reference, or NULL. */
static struct artifact *artifact_find(struct tree *t, const char *reg, const char *repo,
				      const char *digest)
{
	struct artifact *a;

	pthread_mutex_lock(&t->arts->lock);
	a = lru_find(t->arts, reg, repo, digest, true);
	if (a)
		a->refs++;
	pthread_mutex_unlock(&t->arts->lock);
	return a;
}

/* Is repo@digest in memory? */
static bool artifact_listed(struct tree *t, const char *reg, const char *repo,
			    const char *digest)
{
	bool listed;

	pthread_mutex_lock(&t->arts->lock);
	listed = lru_find(t->arts, reg, repo, digest, false) != NULL;
	pthread_mutex_unlock(&t->arts->lock);
	return listed;
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
	for (unsigned skip = 0, source = 0, same = 0;;) {
		ret = reg_gate(t, reg, &err);
		if (ret == 0) {
			ret = regclient_get_manifest(t->rc, reg, repo, digest, skip, &source, &rm,
						     &err);
			reg_outcome(t, reg, ret, &err);
		}
		if (ret < 0) {
			if (ret != -ENOENT && !reg_not_shared(&err))
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
			skip = source + 1;
			continue;
		}
		/* The last source: a bit flipped in transit is worth asking
		 * again, as the cache does for blobs. */
		if (same < BLOBCACHE_REFETCH_MAX) {
			log_msg(LOG_WARNING, "%s: registry sent a manifest that hashes to %s; "
				"fetching it again", what, got);
			reg_manifest_release(&rm);
			blobcache_refetch_wait(++same);
			skip = source;
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

/* What choosing this platform from an index saved: the other platforms'
 * manifests, configs and layers, as far as this mount knows them without a
 * request (manifests already in the cache). The rest is counted as unread
 * platform manifests: never fetched only to be counted. */
static void count_other_platforms(struct tree *t, const struct aview *v)
{
	uint64_t saved = 0;
	int unread = 0;

	for (size_t i = 0; i < v->index->n_layers; i++) {
		const struct descriptor *d = &v->index->layers[i];
		struct manifest *m = NULL;
		char *body = NULL;
		size_t len = 0;

		if (v->digest && !strcmp(d->digest, v->digest))
			continue;
		if (blobcache_read_all(t->bc, d->digest, MANIFEST_MAX_BYTES, &body, &len) < 0 ||
		    manifest_parse(body, len, d->media_type, &m, &(const char *){ NULL }) < 0) {
			unread++;
		} else {
			saved += d->size + (m->has_config ? m->config.size : 0);
			for (size_t k = 0; m->kind == MANIFEST_IMAGE && k < m->n_layers; k++)
				saved += m->layers[k].size;
		}
		manifest_free(m);
		free(body);
	}
	stats_saved(t->stats, saved);
	stats_platform_unread(t->stats, unread);
}

/* Build the view of verified manifest bytes (choosing this platform's
 * manifest from an index) and publish it. */
static int artifact_publish(struct tree *t, const char *reg, const char *repo,
			    const char *digest, const char *body, size_t len,
			    const char *content_type, const char *what, struct artifact **out)
{
	struct manifest *top = NULL, *child = NULL;
	struct artifact *a, *b, *dead = NULL;
	char *cbody = NULL, *ctype = NULL;
	const char *cdigest = NULL;
	size_t clen = 0, freed = 0;
	int ret;

	ret = parse_or_log(what, digest, body, len, content_type, &top);
	if (ret < 0)
		return ret;
	/* The policy first: nothing more of an unverified artifact is fetched. */
	ret = signatures_check(t, reg, repo, digest, what);
	if (ret < 0) {
		manifest_free(top);
		return ret;
	}
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
	ret = lrumap_node_init(&t->arts->map, &a->node,
			       &(const struct lrukey){ { reg, repo, digest }, 3 },
			       artifact_footprint(a, NULL));
	if (ret < 0)
		goto out_free;
	pthread_mutex_lock(&t->arts->lock);
	b = lru_find(t->arts, reg, repo, digest, true);
	if (!b) {
		lrumap_add(&t->arts->map, &a->node);
		dead = lru_trim(t->arts, a);
		b = a;
		a = NULL;
	}
	b->refs++;
	pthread_mutex_unlock(&t->arts->lock);
	freed = free_chain(dead);
	if (a) {
		artifact_free(a);	/* another thread won the race */
	} else {
		stats_saved(t->stats, b->v->skipped);
		if (b->v->index)
			count_other_platforms(t, b->v);
	}
	*out = b;
	ret = 0;
	goto out_body;
out_free:
	artifact_free(a);
out_body:
	free(cbody);
	free(ctype);
	give_back(len + clen + freed);
	return ret;
}

struct digest_job {
	const char *reg, *repo, *digest;
	const char *what;
};

/* The artifact for repo@digest from the cache or the registry (failures
 * logged by manifest_bytes()). */
static int digest_job(struct tree *t, void *arg, struct artifact **out, bool *repo_exists,
		      struct reg_error *err)
{
	struct digest_job *j = arg;
	char *body = NULL, *ctype = NULL;
	size_t len = 0;
	int ret;

	(void)repo_exists;
	(void)err;
	/* It may have landed while we waited to lead. */
	if ((*out = artifact_find(t, j->reg, j->repo, j->digest)))
		return 0;
	ret = manifest_bytes(t, j->reg, j->repo, j->digest, &body, &len, &ctype);
	if (ret == 0)
		ret = artifact_publish(t, j->reg, j->repo, j->digest, body, len, ctype, j->what,
				       out);
	free(body);
	free(ctype);
	return ret;
}

int artifact_by_digest(struct tree *t, const char *reg, const char *repo,
		       const char *digest, struct artifact **out)
{
	char what[1600];
	struct digest_job j = { reg, repo, digest, what };
	struct reg_error err;
	bool exists;

	if ((*out = artifact_find(t, reg, repo, digest)))
		return 0;
	snprintf(what, sizeof(what), "%s/%s@%s", reg, repo, digest);
	return single_flight(t, what, digest_job, &j, out, &exists, &err);
}

/* GET the manifest of repo:tag into @rm; one that does not hash to the
 * registry's Docker-Content-Digest is fetched again (bounded, with
 * backoff), then refused with -EIO. */
static int tag_manifest(struct tree *t, const char *reg, const char *repo, const char *tag,
			const char *what, struct reg_manifest *rm, struct reg_error *err)
{
	char got[72];
	int ret;

	for (int same = 0;; same++) {
		ret = reg_gate(t, reg, err);
		if (ret == 0) {
			ret = regclient_get_manifest(t->rc, reg, repo, tag, 0, NULL, rm, err);
			reg_outcome(t, reg, ret, err);
		}
		if (ret < 0)
			return ret;
		blobcache_digest_of(rm->body, rm->len, got);
		if (!rm->digest_header || !strcmp(rm->digest_header, got))
			return 0;
		if (same >= BLOBCACHE_REFETCH_MAX) {
			log_msg(LOG_ERR, "%s: manifest hashes to %s but the registry says %s; "
				"refused", what, got, rm->digest_header);
			err->status = 200;	/* it answered */
			snprintf(err->message, sizeof(err->message), "manifest does not hash "
				 "to its digest");
			return -EIO;
		}
		log_msg(LOG_WARNING, "%s: manifest hashes to %s but the registry says %s; "
			"fetching it again", what, got, rm->digest_header);
		reg_manifest_release(rm);
		blobcache_refetch_wait(same + 1);
	}
}

/* What the caches say of repo:tag: 1 with *out for a tag, 0 "not a tag"
 * (*repo_exists set), -EAGAIN when the registry is to be asked (*stale:
 * the last answer known, a digest or "" for "not a tag" with *repo_exists
 * set, or NULL; the caller frees it), or -errno. */
static int tag_cached(struct tree *t, const char *reg, const char *repo, const char *tag,
		      struct artifact **out, bool *repo_exists, char **stale)
{
	bool exists = false;
	int ret;

	*stale = NULL;
	/* A namespace above a repository (resolve.c): no tag of its own. */
	if (tags_lookup(t, reg, repo, "", stale, &exists) == 1 && !*stale) {
		*repo_exists = false;
		return 0;
	}
	free(*stale);
	*stale = NULL;
	ret = tags_lookup(t, reg, repo, tag, stale, &exists);
	if (ret < 0)
		return ret;
	if (ret == 0) {
		*repo_exists = exists;
		return -EAGAIN;
	}
	if (!*stale) {
		*repo_exists = exists;
		return 0;
	}
	ret = artifact_by_digest(t, reg, repo, *stale, out);
	free(*stale);
	*stale = NULL;
	return ret < 0 ? ret : 1;
}

/* Could the registry not say what repo:tag is (@ret, @err from asking)?
 * Unreachable, or answering 5xx or 429; not a registry that answered
 * with a manifest too big or that does not hash. */
static bool cannot_say(int ret, const struct reg_error *err)
{
	return ret != -EFBIG && (err->status == 0 || err->status >= 500 || err->status == 429);
}

/* The last answer known (tag_cached()'s @stale) while the registry
 * cannot say: "not a tag" still, or the artifact of the last digest. */
static int tag_stale(struct tree *t, const char *reg, const char *repo, const char *stale,
		     struct artifact **out)
{
	int ret;

	if (!stale[0])
		return 0;
	ret = artifact_by_digest(t, reg, repo, stale, out);
	return ret < 0 ? ret : 1;
}

/* Ask the registry for repo:tag (@stale as tag_cached() gives it; *@repo_exists
 * goes with a stale "not a tag") and answer as artifact_by_tag(). */
static int tag_fetch(struct tree *t, const char *reg, const char *repo, const char *tag,
		     const char *stale, const char *what, struct artifact **out,
		     bool *repo_exists, struct reg_error *why)
{
	struct reg_manifest rm = { 0 };
	struct reg_error err = { 0 };	/* not every failure says why */
	char got[72];
	int ret;

	ret = tag_manifest(t, reg, repo, tag, what, &rm, &err);
	if (ret == -ENOENT) {
		*repo_exists = !strcmp(err.code, "MANIFEST_UNKNOWN");
		tags_store(t, reg, repo, tag, NULL, *repo_exists);
		log_msg(LOG_DEBUG, "%s: %s", what, err.code[0] ? err.code : "not found");
		ret = 0;
		goto out_free;
	}
	if (ret < 0) {
		/* Another user's request gets the last answer, asking nothing. */
		if (stale && reg_not_shared(&err)) {
			ret = tag_stale(t, reg, repo, stale, out);
			goto out_free;
		}
		if (reg_not_shared(&err))
			goto out_free;
		/* A stale digest stands for any failure but a refusal; "not a
		 * tag" only while the registry cannot say otherwise. */
		if (stale && ret != -EACCES && (stale[0] || cannot_say(ret, &err))) {
			if (tags_stale_warning_due(t, reg, repo, tag))
				log_msg(stale[0] ? LOG_WARNING : LOG_DEBUG,
					"%s: registry unavailable (%s); using cached %s", what,
					err.message, stale[0] ? stale : "\"not a tag\"");
			ret = tag_stale(t, reg, repo, stale, out);
			goto out_free;
		}
		if (ret == -EACCES) {
			/* Refused: one reading of a path among others (resolve.c),
			 * whose caller logs it if no reading resolves. */
			log_reg_at(LOG_DEBUG, what, &err, ret);
			*why = err;
			goto out_free;
		}
		log_reg_error(what, &err, ret);
		if (ret == -EFBIG)
			ret = -EIO;	/* a manifest over 4 MiB: refused */
		goto out_free;
	}
	blobcache_digest_of(rm.body, rm.len, got);
	if (!artifact_listed(t, reg, repo, got)) {
		struct artifact *pub = NULL;
		ret = blobcache_put(t->bc, got, rm.body, rm.len);
		if (ret == 0)
			ret = artifact_publish(t, reg, repo, got, rm.body, rm.len,
					       rm.content_type, what, &pub);
		/* Refused by the policy: the tag answer stands (and the
		 * verdict is kept), so asking again costs no request. */
		if (ret == -EKEYREJECTED)
			tags_store(t, reg, repo, tag, got, true);
		if (ret < 0)
			goto out_free;
		tags_store(t, reg, repo, tag, got, true);
		*out = pub;
		ret = 1;
		goto out_free;
	}
	tags_store(t, reg, repo, tag, got, true);
	ret = artifact_by_digest(t, reg, repo, got, out);
	ret = ret < 0 ? ret : 1;
out_free:
	reg_manifest_release(&rm);
	return ret;
}

struct tag_job {
	const char *reg, *repo, *tag;
	const char *what;
};

static int tag_job(struct tree *t, void *arg, struct artifact **out, bool *repo_exists,
		   struct reg_error *err)
{
	struct tag_job *j = arg;
	char *stale = NULL;
	int ret;

	/* It may have landed while we waited to lead. */
	ret = tag_cached(t, j->reg, j->repo, j->tag, out, repo_exists, &stale);
	if (ret == -EAGAIN)
		ret = tag_fetch(t, j->reg, j->repo, j->tag, stale, j->what, out, repo_exists,
				err);
	free(stale);
	return ret;
}

/* Resolve repo:tag. Returns 1 with *out for a tag, 0 when the registry
 * says there is no such tag (*repo_exists tells whether the repository
 * is there), or -errno (a refusal's reason, not logged, in @why). A
 * registry that cannot be reached is answered from the last known digest
 * (stale-if-error). Lookups of one tag at the same time share one
 * request. */
static int artifact_by_tag(struct tree *t, const char *reg, const char *repo,
			   const char *tag, struct artifact **out, bool *repo_exists,
			   struct reg_error *why)
{
	char what[1600], *stale = NULL;
	struct tag_job j = { reg, repo, tag, what };
	int ret;

	memset(why, 0, sizeof(*why));
	ret = tag_cached(t, reg, repo, tag, out, repo_exists, &stale);
	free(stale);
	if (ret != -EAGAIN)
		return ret;
	snprintf(what, sizeof(what), "%s/%s:%s", reg, repo, tag);
	return single_flight(t, what, tag_job, &j, out, repo_exists, why);
}

/* The platform-suffixed tag to try for @tag ("0.0.1" ->
 * "0.0.1-linux-amd64"), if any. Only version-like tags are split per
 * platform; this spares a probe per namespace level ("acme" in
 * acme/tools/cli). */
static bool platform_alt_tag(const struct tree *t, const char *tag, char *alt, size_t len)
{
	if (platform_in_name(tag, NULL))
		return false;
	if (!(isdigit((unsigned char)tag[0]) ||
	      (tag[0] == 'v' && isdigit((unsigned char)tag[1])) || !strcmp(tag, "latest")))
		return false;
	snprintf(alt, len, "%s-%s-%s", tag, t->platform.os, t->platform.arch);
	return ref_valid_tag(alt);
}

int artifact_by_tag_or_platform_tag(struct tree *t, const char *reg, const char *repo,
				    const char *tag, struct artifact **out, bool *repo_exists,
				    struct reg_error *why)
{
	char alt[REF_TAG_MAX + 64];
	bool exists = false;
	int ret = artifact_by_tag(t, reg, repo, tag, out, repo_exists, why);

	if (ret != 0 || !*repo_exists || !platform_alt_tag(t, tag, alt, sizeof(alt)))
		return ret;
	return artifact_by_tag(t, reg, repo, alt, out, &exists, why);
}

int artifact_known(struct tree *t, const char *reg, const char *repo, const char *ref)
{
	char alt[REF_TAG_MAX + 64], *d = NULL;
	bool exists = false;
	int ret;

	if (!strncmp(ref, "sha256:", 7))
		return artifact_listed(t, reg, repo, ref) ? 1 : -EAGAIN;
	if (tags_lookup(t, reg, repo, "", &d, &exists) == 1 && !d)
		return 0;
	free(d);
	d = NULL;
	ret = tags_lookup(t, reg, repo, ref, &d, &exists);
	if (ret == 1 && !d && exists && platform_alt_tag(t, ref, alt, sizeof(alt)))
		ret = tags_lookup(t, reg, repo, alt, &d, &exists);
	if (ret < 0)
		return ret;
	ret = ret == 1 ? d != NULL : -EAGAIN;
	free(d);
	return ret;
}

bool artifact_fallback_known(struct tree *t, struct artifact *a, int *err, char *out,
			     size_t len)
{
	bool known;

	pthread_mutex_lock(&t->arts->lock);
	known = a->fallback_done;
	if (known) {
		*err = a->fallback_err;
		if (*err == 0)
			snprintf(out, len, "%s", a->fallback_path);
	}
	pthread_mutex_unlock(&t->arts->lock);
	return known;
}

void artifact_fallback_remember(struct tree *t, struct artifact *a, int err, const char *path)
{
	pthread_mutex_lock(&t->arts->lock);
	if (!a->fallback_done) {
		a->fallback_done = true;
		a->fallback_err = err;
		if (err == 0 && !(a->fallback_path = strdup(path)))
			a->fallback_done = false;
	}
	pthread_mutex_unlock(&t->arts->lock);
}

int artifact_layout(struct tree *t, struct artifact *a, const struct aview **out)
{
	const struct aview *v = a->v;
	const struct manifest *top = v->index ? v->index : v->m;
	uint64_t len = v->index ? v->index_len : v->len;
	struct manifest **children = NULL;
	struct artifact *dead = NULL;
	struct aview *l = NULL;
	char what[1600];
	size_t bytes;
	int ret;

	pthread_mutex_lock(&t->arts->lock);
	l = a->layout;
	pthread_mutex_unlock(&t->arts->lock);
	if (l) {
		*out = l;
		return 0;
	}
	snprintf(what, sizeof(what), "%s/%s@%s", a->registry, a->repo, a->digest);
	if (top->kind == MANIFEST_INDEX && top->n_layers) {
		children = calloc(top->n_layers, sizeof(*children));
		if (!children)
			return -ENOMEM;
	}
	/* Every platform's manifest (small; cached), so that blobs/sha256/
	 * lists their configs and layers, which are fetched only when read.
	 * One that cannot be read leaves its blobs out, with a log line. */
	for (size_t i = 0; children && i < top->n_layers; i++) {
		const struct descriptor *d = &top->layers[i];
		char *body = NULL, *ctype = NULL;
		size_t blen = 0;

		ret = manifest_bytes(t, a->registry, a->repo, d->digest, &body, &blen, &ctype);
		if (ret == 0)
			ret = parse_or_log(what, d->digest, body, blen,
					   ctype ? ctype : d->media_type, &children[i]);
		if (ret < 0)
			log_msg(LOG_WARNING, "%s: layout: manifest %s unreadable (%s); its blobs "
				"are left out", what, d->digest, strerror(-ret));
		free(body);
		free(ctype);
		if (ret == -ENOMEM) {
			for (size_t k = 0; k < top->n_layers; k++)
				manifest_free(children[k]);
			free(children);
			return ret;
		}
	}
	ret = aview_build_layout(top, a->digest, len, children, &l);
	if (ret < 0)
		return ret;
	bytes = artifact_footprint(a, l);
	pthread_mutex_lock(&t->arts->lock);
	if (!a->layout) {
		a->layout = l;
		l = NULL;
		/* The layout counts too; it may push others out. */
		if (!a->evicted) {
			lrumap_set_bytes(&t->arts->map, &a->node, bytes);
			dead = lru_trim(t->arts, a);
		}
	}
	*out = a->layout;
	pthread_mutex_unlock(&t->arts->lock);
	give_back(free_chain(dead));
	aview_free(l);	/* another thread built it first */
	return 0;
}
