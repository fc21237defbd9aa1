/* resolve.c - path resolution: which registry, repository, reference
 * and inner path a mount path names, asking the registry only what the
 * caches cannot say. No state of its own (dircache.c holds the answers,
 * artifacts.c the views) and no hidden state: safe from any thread. */
#include "resolve.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
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

/* c[from..to) joined by '/'; @strip drops the leading '.' that marks a
 * sub-repository (repository names never start with one). */
static void join(char *out, size_t sz, char **comp, size_t from, size_t to, bool strip)
{
	size_t off = 0;

	out[0] = '\0';
	for (size_t i = from; i < to && off < sz; i++) {
		const char *s = comp[i] + (strip && comp[i][0] == '.');
		off += (size_t)snprintf(out + off, sz - off, "%s%s", i > from ? "/" : "", s);
	}
}

/* One reading of a path: repository @name with tag or digest @ref. */
struct cand {
	struct tree *t;
	const char *reg, *ref;
	char name[1024];
	size_t k;		/* c[1..k] is the repository */
	int ret;		/* 1: an artifact, 0: not a tag, -errno */
	bool repo_exists;	/* ret 0: the repository is there */
	struct reg_error err;	/* ret -EACCES: why, if not logged yet */
	struct artifact *art;
};

/* Why no reading of a path resolved: the longest one refused, logged by
 * resolve() once the path is final. The shorter readings are refused
 * all the time (Docker Hub denies a repository that does not exist as it
 * denies a private one): that alone is no error. */
struct refusal {
	char what[1200];	/* "<registry>/<repository>:<tag>" */
	struct reg_error err;	/* message empty: nothing to log */
};

static void cand_ask(struct cand *q)
{
	if (!strncmp(q->ref, "sha256:", 7)) {
		q->ret = artifact_by_digest(q->t, q->reg, q->name, q->ref, &q->art);
		if (q->ret == 0)
			q->ret = 1;
	} else {
		q->ret = artifact_by_tag_or_platform_tag(q->t, q->reg, q->name, q->ref, &q->art,
							 &q->repo_exists, &q->err);
	}
}

/* How the readings of a path go out. */
enum ask {
	ASK_PARALLEL,	/* all at once */
	ASK_CHALLENGED,	/* the first alone until the registry has challenged
			 * it (or it is answered), then the rest at once */
	ASK_SERIAL,	/* one after the other, on this thread */
};

/* Holds the readings after the first back until the registry's scheme and
 * challenge are known: a fresh mount's first 401 teaches them, so the
 * others then need no 401 of their own and fetch their tokens while the
 * first still waits for its answer (the token and the manifests in one
 * round trip each, as the minimum has it). */
struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool open;		/* lock: the first reading is done */
	struct tree *t;
	const char *reg;
};

struct cand_run {
	struct cand *q;
	struct gate *g;		/* NULL: go at once */
};

static void gate_wait(struct gate *g)
{
	struct timespec until;

	pthread_mutex_lock(&g->lock);
	/* The challenge arrives inside the client, which signals no one:
	 * look again every few milliseconds (first contact only). */
	while (!g->open && !regclient_challenged(g->t->rc, g->reg)) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 5 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&g->cond, &g->lock, &until);
	}
	pthread_mutex_unlock(&g->lock);
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

static void *cand_thread(void *arg)
{
	struct cand_run *run = arg;

	if (run->g)
		gate_wait(run->g);
	cand_ask(run->q);
	return NULL;
}

/* Ask every candidate at once, each on its own thread (the first on
 * ours): one round trip for all the readings of a path, not one per
 * level. Those answered from the caches cost no thread. */
static void cands_ask(struct tree *t, const char *reg, struct cand *q, const bool *known,
		      size_t m, enum ask how)
{
	pthread_t th[PATH_COMPONENTS_MAX];
	struct cand_run run[PATH_COMPONENTS_MAX];
	bool started[PATH_COMPONENTS_MAX] = { false };
	struct gate g = { .open = false };
	size_t first = m;

	if (how == ASK_CHALLENGED) {
		pthread_mutex_init(&g.lock, NULL);
		pthread_cond_init(&g.cond, NULL);
		g.t = t;
		g.reg = reg;
	}
	for (size_t i = 0; i < m; i++) {
		if (known[i])
			continue;
		if (first == m) {
			first = i;
		} else if (how != ASK_SERIAL) {
			run[i].q = &q[i];
			run[i].g = how == ASK_CHALLENGED ? &g : NULL;
			started[i] = pthread_create(&th[i], NULL, cand_thread, &run[i]) == 0;
		}
	}
	for (size_t i = 0; i < m; i++) {
		if (known[i] || i == first || !started[i])
			cand_ask(&q[i]);
		if (i == first && how == ASK_CHALLENGED)
			gate_open(&g);
	}
	for (size_t i = 0; i < m; i++)
		if (started[i])
			pthread_join(th[i], NULL);
	if (how == ASK_CHALLENGED) {
		pthread_cond_destroy(&g.cond);
		pthread_mutex_destroy(&g.lock);
	}
}

/* The readings @q[0..m) not @known, told to the client first: their
 * tokens then come in one token request (the repositories' scopes asked
 * together), not one each. */
static void cands_ask_all(struct tree *t, const char *reg, struct cand *q, const bool *known,
			  size_t m, enum ask how)
{
	const char *names[PATH_COMPONENTS_MAX];
	struct scope_hint *h = NULL;
	size_t n = 0;

	for (size_t i = 0; i < m; i++)
		if (!known[i])
			names[n++] = q[i].name;
	if (n > 1)
		h = regclient_hint_repos(t->rc, reg, names, n, false);
	cands_ask(t, reg, q, known, m, how);
	regclient_hint_drop(t->rc, h);
}

/* Was a reading refused with a token asked for together with other
 * scopes? Then asking again asks for its token alone. */
static bool cands_refused_shared(struct tree *t, const char *reg, const struct cand *q,
				 size_t m)
{
	for (size_t i = 0; i < m; i++)
		if (q[i].ret == -EACCES && regclient_refused_shared(t->rc, reg, q[i].name))
			return true;
	return false;
}

/* resolve() once; *@again (may be NULL) says whether a reading was
 * refused with a shared token; @why, which refusal to log when the path
 * is refused. */
static int resolve_once(struct tree *t, const char *path, unsigned flags, struct resolved *r,
			bool *again, struct refusal *why)
{
	char buf[4096], *c[PATH_COMPONENTS_MAX];
	bool dotted[PATH_COMPONENTS_MAX], known[PATH_COMPONENTS_MAX], shorter_known = true;
	struct cand *q = NULL;
	size_t n, m = 0;
	bool repo_exists = false, invalid = false;
	int ret, denied = 0;

	memset(r, 0, sizeof(*r));
	memset(why, 0, sizeof(*why));
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
		r->kind = R_REGISTRY;
		return 0;
	}
	/* ".name" is always the sub-repository "name", never a tag: the way
	 * past a tag that shadows it. */
	for (size_t i = 1; i < n; i++)
		dotted[i] = c[i][0] == '.';
	/* getattr of /<registry>/<a> and /<registry>/<a>/<b>: a directory
	 * whichever reading holds (a namespace, a repository, the artifact
	 * a:b); what it is is asked when something inside is looked up. */
	if ((flags & RESOLVE_DIR_OK) && n <= 3) {
		const char *a = c[1] + dotted[1], *b = n == 3 ? c[2] + dotted[2] : "x";
		if (!ref_valid_path_component(a, strlen(a)) ||
		    (!ref_valid_path_component(b, strlen(b)) && !ref_valid_tag(b) &&
		     !ref_valid_digest(b)))
			return -ENOENT;
		r->kind = R_NAMESPACE;
		join(r->name, sizeof(r->name), c, 1, n, true);
		return 0;
	}
	q = calloc(n, sizeof(*q));
	if (!q)
		return -ENOMEM;
	/* c[1..k] a repository, c[k+1] a tag or digest? Every reading up to
	 * the first the caches confirm; the shortest that holds wins. */
	for (size_t k = 1; k + 1 < n; k++) {
		const char *ref = c[k + 1];
		struct cand *x = &q[m];
		/* Past a name that cannot be a repository only the readings
		 * before it remain. */
		if (!ref_valid_path_component(c[k] + dotted[k], strlen(c[k] + dotted[k]))) {
			invalid = true;
			break;
		}
		if (dotted[k + 1])
			continue;
		if (!strncmp(ref, "sha256:", 7)) {
			if (!ref_valid_digest(ref)) {
				invalid = true;
				break;
			}
		} else if (!ref_valid_tag(ref)) {
			continue;
		}
		x->t = t;
		x->reg = r->reg;
		x->ref = ref;
		x->k = k;
		join(x->name, sizeof(x->name), c, 1, k + 1, true);
		/* Too long for a repository name: so are the longer ones. */
		if (!ref_valid_repository(x->name)) {
			invalid = true;
			break;
		}
		if (strncmp(ref, "sha256:", 7) && !is_repo_candidate(t, r->reg, x->name))
			continue;
		int kn = artifact_known(t, r->reg, x->name, ref);
		/* `ls -l` of a repository: its tags are directories, as the tag
		 * list just read says. */
		if ((flags & RESOLVE_DIR_OK) && k + 2 == n && shorter_known && kn != 1 &&
		    listing_has(t, r->reg, x->name, ref) == 1) {
			r->kind = R_ARTIFACT;
			snprintf(r->name, sizeof(r->name), "%s", x->name);
			ret = 0;
			goto out_free;
		}
		known[m++] = kn >= 0;
		shorter_known = shorter_known && kn >= 0;
		if (kn == 1)
			break;
	}
	/* Until a registry has answered once, its scheme, challenge and
	 * token are unknown: the first reading goes alone until its 401
	 * (or answer) teaches them. Another user's request is answered on
	 * its own thread (the share policy is per FUSE thread). */
	enum ask how = t->may_fetch && !t->may_fetch() ? ASK_SERIAL :
		       registries_answered(t->regs, r->reg) ? ASK_PARALLEL : ASK_CHALLENGED;
	cands_ask_all(t, r->reg, q, known, m, how);
	if (again)
		*again = cands_refused_shared(t, r->reg, q, m);
	int first_err = 0;
	for (size_t i = 0; i < m; i++) {
		ret = q[i].ret;
		if (ret == 0) {
			repo_exists = q[i].repo_exists;
			continue;
		}
		/* Refused by -o verify= (and logged): final. */
		if (ret == -EKEYREJECTED) {
			why->err.message[0] = '\0';
			ret = -EACCES;
			goto out_free;
		}
		/* Docker Hub and others deny what does not exist as they deny
		 * what is private: a longer prefix may still be the repository.
		 * So may it when a shorter reading could not be asked (a fault,
		 * the registry down and this one cached). */
		if (ret == -EACCES) {
			denied = ret;
			snprintf(why->what, sizeof(why->what), "%s/%s:%s", r->reg, q[i].name,
				 q[i].ref);
			why->err = q[i].err;
			continue;
		}
		if (ret < 0) {
			if (!first_err)
				first_err = ret;
			continue;
		}
		/* The shorter names denied or unknown are namespaces above this
		 * repository: not asked again for tag_ttl, whatever the tag. */
		for (size_t j = 0; j < i; j++)
			if (q[j].ret == -EACCES || (q[j].ret == 0 && !q[j].repo_exists))
				tags_store(t, r->reg, q[j].name, "", NULL, false);
		r->kind = R_ARTIFACT;
		r->art = q[i].art;
		q[i].art = NULL;
		snprintf(r->name, sizeof(r->name), "%s", q[i].name);
		join(r->inner, sizeof(r->inner), c, q[i].k + 2, n, false);
		ret = 0;
		goto out_free;
	}
	if (first_err) {
		ret = first_err;
		goto out_free;
	}
	for (size_t i = 0; i < m; i++)
		artifact_put(t, q[i].art);
	free(q);
	q = NULL;
	if (invalid)
		return -ENOENT;
	/* A namespace or repository directory. */
	if (!ref_valid_path_component(c[n - 1] + dotted[n - 1], strlen(c[n - 1] + dotted[n - 1])))
		return denied ? denied : -ENOENT;
	join(r->name, sizeof(r->name), c, 1, n, true);
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
out_free:
	for (size_t i = 0; q && i < m; i++)
		artifact_put(t, q[i].art);	/* the readings not taken */
	free(q);
	return ret;
}

/* Before listing the directory @path names: the scopes of its tag list
 * and of the catalog, which listing asks for (list_namespace()), go in
 * the first token request of the path's resolution or listing. */
static struct scope_hint *list_hint(struct tree *t, const char *path)
{
	char buf[4096], *c[PATH_COMPONENTS_MAX], name[1024];
	const char *repos[1] = { name };
	size_t n;

	if (split(path, buf, sizeof(buf), c, &n) < 0 || n < 2 || !registry_name_ok(c[0]))
		return NULL;
	join(name, sizeof(name), c, 1, n, true);
	if (!ref_valid_repository(name))
		return NULL;
	return regclient_hint_repos(t->rc, c[0], repos, 1, true);
}

int resolve(struct tree *t, const char *path, unsigned flags, struct resolved *r)
{
	struct scope_hint *h = flags & RESOLVE_LIST ? list_hint(t, path) : NULL;
	struct refusal why;
	bool again = false;
	int ret;

	ret = resolve_once(t, path, flags, r, &again, &why);
	/* A token asked for several readings may lack one the token server
	 * grants alone (it grants what it allows, and some grant fewer
	 * scopes than asked): when the path failed and such a reading was
	 * refused, it is asked once more, with a token of its own. */
	if (ret < 0 && ret != -ENOMEM && again)
		ret = resolve_once(t, path, flags, r, NULL, &why);
	/* Refused, every reading: one line, naming the longest. */
	if (ret == -EACCES && why.err.message[0])
		log_reg_error(why.what, &why.err, ret);
	if (ret == 0 && r->kind == R_NAMESPACE)
		r->hint = h;
	else
		regclient_hint_drop(t->rc, h);
	return ret;
}
