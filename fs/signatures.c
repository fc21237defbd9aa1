/* signatures.c - the verify= policy and its verdicts. signatures.lock
 * guards the verdict table; keys are read-only after creation. */
#include "signatures.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "artifacts.h"
#include "blobcache.h"
#include "client.h"
#include "cosign.h"
#include "log.h"
#include "manifest.h"
#include "referrers.h"
#include "ref.h"
#include "registries.h"
#include "serve.h"
#include "simplesign.h"
#include "tree_impl.h"

#define VERDICT_BUCKETS 256

struct verdict {
	struct verdict *next;
	int ret;		/* 0 verified, -EKEYREJECTED refused */
	time_t at;
	char key[];		/* "<registry>/<repo>@<digest>" */
};

struct signatures {
	struct cosign_keys *keys;	/* NULL: no policy; read-only */
	pthread_mutex_t lock;
	struct verdict *bucket[VERDICT_BUCKETS];	/* lock */
	size_t n;					/* lock */
};

int signatures_new(struct cosign_keys *keys, struct signatures **out)
{
	struct signatures *s = calloc(1, sizeof(*s));

	if (!s) {
		cosign_keys_free(keys);
		return -ENOMEM;
	}
	s->keys = keys;
	pthread_mutex_init(&s->lock, NULL);
	*out = s;
	return 0;
}

static void free_chain(struct verdict *v)
{
	while (v) {
		struct verdict *next = v->next;
		free(v);
		v = next;
	}
}

void signatures_free(struct signatures *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < VERDICT_BUCKETS; i++)
		free_chain(s->bucket[i]);
	cosign_keys_free(s->keys);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static size_t bucket_of(const char *key)
{
	size_t h = 5381;

	for (const unsigned char *c = (const unsigned char *)key; *c; c++)
		h = h * 33 + *c;
	return h % VERDICT_BUCKETS;
}

/* The verdict held for @key: 1 and *ret, or 0 (none, or a refusal that
 * is older than tag_ttl). */
static int verdict_get(struct tree *t, const char *key, int *ret)
{
	struct signatures *s = t->sigs;
	int found = 0;

	pthread_mutex_lock(&s->lock);
	for (struct verdict *v = s->bucket[bucket_of(key)]; v; v = v->next) {
		if (strcmp(v->key, key))
			continue;
		if (v->ret == 0 || tree_fresh(t, v->at)) {
			*ret = v->ret;
			found = 1;
		}
		break;
	}
	pthread_mutex_unlock(&s->lock);
	return found;
}

static void verdict_put(struct tree *t, const char *key, int ret)
{
	struct signatures *s = t->sigs;
	size_t b = bucket_of(key), len = strlen(key) + 1;
	struct verdict *v;

	pthread_mutex_lock(&s->lock);
	for (v = s->bucket[b]; v; v = v->next)
		if (!strcmp(v->key, key))
			break;
	if (!v) {
		/* Bounded: a full table drops this bucket's verdicts, which
		 * only costs asking again. */
		if (s->n >= SIG_VERDICTS_MAX) {
			for (struct verdict *o = s->bucket[b]; o; o = o->next)
				s->n--;
			free_chain(s->bucket[b]);
			s->bucket[b] = NULL;
		}
		v = malloc(sizeof(*v) + len);
		if (!v)
			goto out_unlock;
		memcpy(v->key, key, len);
		v->next = s->bucket[b];
		s->bucket[b] = v;
		s->n++;
	}
	v->ret = ret;
	v->at = tree_now();
out_unlock:
	pthread_mutex_unlock(&s->lock);
}

/* What was found, for the one log line. */
struct report {
	char text[1024];
};

static void report_add(struct report *r, const char *fmt, ...)
{
	size_t used = strlen(r->text);
	va_list ap;
	int n;

	if (used + 4 >= sizeof(r->text))
		return;
	if (used) {
		memcpy(r->text + used, "; ", 3);
		used += 2;
	}
	va_start(ap, fmt);
	n = vsnprintf(r->text + used, sizeof(r->text) - used, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(r->text) - used)
		memcpy(r->text + sizeof(r->text) - 4, "...", 4);
}

struct check {
	struct tree *t;
	const char *reg, *repo, *digest;
	struct report rep;
	int transport_err;	/* a lookup that failed for want of the registry */
	unsigned found;		/* signature layers seen */
	size_t key;		/* on success: the key, and where */
	char where[256];
	char sigman[72];	/* the signature manifest that verified */
};

/* Read a cached blob of at most @max bytes from @fd (closed). */
static int read_fd(int fd, size_t max, char **buf, size_t *len)
{
	char *b = malloc(max ? max : 1);
	size_t got = 0;
	ssize_t n = 0;

	if (!b) {
		close(fd);
		return -ENOMEM;
	}
	while (got < max && (n = read(fd, b + got, max - got)) > 0)
		got += (size_t)n;
	close(fd);
	if (n < 0) {
		free(b);
		return -EIO;
	}
	*buf = b;
	*len = got;
	return 0;
}

/* A blob or manifest of the artifact's repository, by digest, through the
 * blob cache (verified, and kept for offline use). */
static int fetch_cached(struct check *c, const char *digest, uint64_t size, bool manifest,
			size_t max, char **buf, size_t *len)
{
	struct artifact a = { .registry = (char *)c->reg, .repo = (char *)c->repo,
			      .digest = (char *)c->digest };
	int fd;

	if (size > max)
		return -EFBIG;
	fd = serve_open_blob(c->t, &a, digest, size, manifest);
	if (fd < 0)
		return fd;
	return read_fd(fd, (size_t)size, buf, len);
}

/* A fetch for @source that failed: reported; one that a reachable
 * registry would have answered is no verdict. */
static void fetch_failed(struct check *c, const char *source, const char *what, int err)
{
	report_add(&c->rep, "%s: %s not fetched (%s)", source, what, strerror(-err));
	if (err != -ENOENT && err != -EFBIG && err != -EIO)
		c->transport_err = err;
}

static int fetch_payload(void *arg, const struct descriptor *d, char **buf, size_t *len)
{
	return fetch_cached(arg, d->digest, d->size, false, COSIGN_PAYLOAD_MAX, buf, len);
}

/* Parse signature manifest @body from @source; a malformed one is a
 * refusal, reported. */
static int parse_sigman(struct check *c, const char *source, const char *body, size_t len,
			const char *ctype, struct manifest **m)
{
	const char *why = NULL;
	int ret = manifest_parse(body, len, ctype, m, &why);

	if (ret < 0) {
		report_add(&c->rep, "%s: malformed manifest (%s)", source,
			   why ? why : strerror(-ret));
		return ret == -ENOMEM ? ret : -EACCES;
	}
	return 0;
}

/* Verify signature manifest @body (from @source, digest @digest) for
 * the artifact. */
static int check_manifest(struct check *c, const char *source, const char *digest,
			  const char *body, size_t len, const char *ctype)
{
	struct cosign_outcome o;
	struct manifest *m = NULL;
	int ret = parse_sigman(c, source, body, len, ctype, &m);

	if (ret < 0)
		return ret;
	ret = cosign_verify_manifest(c->t->sigs->keys, m, c->reg, c->repo, c->digest,
				     fetch_payload, c, &o);
	manifest_free(m);
	c->found += o.signatures;
	if (ret == 0) {
		c->key = o.key;
		snprintf(c->sigman, sizeof(c->sigman), "%s", digest);
		snprintf(c->where, sizeof(c->where), "%s, payload %.19s%s", source, o.layer,
			 o.fetched ? "" : " (cosign's own, not fetched)");
		return 0;
	}
	report_add(&c->rep, "%s: %u signature%s: %s", source, o.signatures,
		   o.signatures == 1 ? "" : "s", o.why);
	if (ret != -EACCES && !c->transport_err)
		c->transport_err = ret;
	return ret;
}

/* cosign's tag-based discovery: sha256-<hex>.sig. */
static int check_sig_tag(struct check *c)
{
	struct reg_manifest rm = { 0 };
	struct reg_error err;
	char tag[80], got[72];
	int ret;

	snprintf(tag, sizeof(tag), "sha256-%.64s.sig", c->digest + 7);
	ret = reg_gate(c->t, c->reg, &err);
	if (ret == 0) {
		ret = regclient_get_manifest(c->t->rc, c->reg, c->repo, tag, 0, NULL, &rm, &err);
		reg_outcome(c->t, c->reg, ret, &err);
	}
	if (ret == -ENOENT) {
		report_add(&c->rep, "no %s tag", tag);
		return -EACCES;
	}
	if (ret < 0) {
		report_add(&c->rep, "%s: %s", tag, err.message[0] ? err.message : strerror(-ret));
		c->transport_err = ret;
		return ret;
	}
	blobcache_digest_of(rm.body, rm.len, got);
	if (rm.digest_header && strcmp(rm.digest_header, got)) {
		report_add(&c->rep, "%s: manifest hashes to %s, not %s", tag, got,
			   rm.digest_header);
		ret = -EACCES;
		goto out_release;
	}
	(void)blobcache_put(c->t->bc, got, rm.body, rm.len);	/* for offline use */
	ret = check_manifest(c, tag, got, rm.body, rm.len, rm.content_type);
out_release:
	reg_manifest_release(&rm);
	return ret;
}

/* A Sigstore bundle referrer (cosign 3's default): its bundle layers. */
static int check_bundle_manifest(struct check *c, const char *source, const char *digest,
				 const char *body, size_t len)
{
	struct manifest *m = NULL;
	int ret = parse_sigman(c, source, body, len, NULL, &m);

	if (ret < 0)
		return ret;
	ret = -EACCES;
	for (size_t i = 0; i < m->n_layers && ret != 0 && ret != -ENOMEM; i++) {
		const struct descriptor *d = &m->layers[i];
		char *bundle = NULL, reason[256];
		size_t blen = 0;
		int r;

		if (strcmp(d->media_type, SIGSTORE_BUNDLE_TYPE))
			continue;
		c->found++;
		r = fetch_cached(c, d->digest, d->size, false, BUNDLE_MAX, &bundle, &blen);
		if (r < 0) {
			fetch_failed(c, source, "bundle", r);
			continue;
		}
		r = cosign_verify_bundle(c->t->sigs->keys, bundle, blen, c->digest, &c->key, reason,
					 sizeof(reason));
		free(bundle);
		if (r == 0) {
			snprintf(c->sigman, sizeof(c->sigman), "%s", digest);
			snprintf(c->where, sizeof(c->where), "%.128s, Sigstore bundle %.19s", source,
				 d->digest);
			ret = 0;
		} else if (r == -ENOMEM) {
			ret = r;
		} else {
			report_add(&c->rep, "%s: bundle %.19s: %s", source, d->digest, reason);
		}
	}
	manifest_free(m);
	return ret;
}

static bool is_signature_type(const char *type)
{
	return type && (!strcmp(type, COSIGN_SIG_ARTIFACT_TYPE) ||
			!strcmp(type, SIGSTORE_BUNDLE_TYPE));
}

/* OCI 1.1 referrers that are cosign signatures: its own artifact type, or
 * Sigstore bundles. */
static int check_referrers(struct check *c)
{
	struct manifest *idx = NULL;
	const char *via = "referrers";
	unsigned seen = 0;
	int ret = referrers_index(c->t, c->reg, c->repo, c->digest, &idx, &via);

	if (ret < 0) {
		report_add(&c->rep, "referrers: %s", strerror(-ret));
		if (ret != -ENOMEM)
			c->transport_err = ret;
		return ret;
	}
	ret = -EACCES;
	for (size_t i = 0; i < idx->n_layers && ret != 0; i++) {
		const struct descriptor *d = &idx->layers[i];
		char *body = NULL, source[128];
		size_t len = 0;
		int r;

		if (!is_signature_type(d->artifact_type))
			continue;
		if (++seen > SIG_REFERRERS_MAX) {
			report_add(&c->rep, "more than %d referrer signatures: rest not checked",
				   SIG_REFERRERS_MAX);
			break;
		}
		snprintf(source, sizeof(source), "referrer %.19s", d->digest);
		r = fetch_cached(c, d->digest, d->size, true, MANIFEST_MAX_BYTES, &body, &len);
		if (r < 0) {
			fetch_failed(c, source, "manifest", r);
			continue;
		}
		if (!strcmp(d->artifact_type, SIGSTORE_BUNDLE_TYPE))
			ret = check_bundle_manifest(c, source, d->digest, body, len);
		else
			ret = check_manifest(c, source, d->digest, body, len, d->media_type);
		free(body);
	}
	if (!seen)
		report_add(&c->rep, "no cosign referrer (from %s)", via);
	manifest_free(idx);
	return ret;
}

/* Which signature manifest verified an artifact, kept in the cache as
 * signatures/<sha256 of "<registry>/<repo>@<digest>">: a new mount that
 * cannot reach the registry verifies again from cached manifests and
 * payloads. The file is only a pointer; what it names is checked again. */
#define EVIDENCE_DIR "signatures"

static void evidence_path(const char *key, char out[96])
{
	char d[72];

	blobcache_digest_of(key, strlen(key), d);
	snprintf(out, 96, EVIDENCE_DIR "/%s", d + 7);
}

static void evidence_put(struct tree *t, const char *key, const char *sigman)
{
	int root = blobcache_root_fd(t->bc), fd;
	char path[96], line[80];
	int n = snprintf(line, sizeof(line), "%s\n", sigman);

	evidence_path(key, path);
	if (mkdirat(root, EVIDENCE_DIR, 0700) < 0 && errno != EEXIST)
		return;
	fd = openat(root, path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	/* A torn write is harmless: it names no valid digest. */
	if (write(fd, line, (size_t)n) != n)
		log_msg(LOG_DEBUG, "%s: evidence not kept", key);
	close(fd);
}

/* Verify again from the signature manifest that verified before. */
static int check_evidence(struct check *c, const char *key)
{
	char path[96], digest[80] = "", *body = NULL, source[128];
	size_t len = 0;
	ssize_t n;
	int fd, ret;

	evidence_path(key, path);
	fd = openat(blobcache_root_fd(c->t->bc), path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -ENOENT;
	n = read(fd, digest, sizeof(digest) - 1);
	close(fd);
	if (n < 72 || digest[71] != '\n')
		return -ENOENT;
	digest[71] = '\0';
	if (!ref_valid_digest(digest) ||
	    blobcache_read_all(c->t->bc, digest, MANIFEST_MAX_BYTES, &body, &len) < 0)
		return -ENOENT;
	snprintf(source, sizeof(source), "cached signature manifest %.19s", digest);
	ret = check_manifest(c, source, digest, body, len, NULL);
	free(body);
	return ret;
}

int signatures_check(struct tree *t, const char *reg, const char *repo, const char *digest,
		     const char *what)
{
	struct check c = { .t = t, .reg = reg, .repo = repo, .digest = digest };
	char key[1600];
	int ret;

	if (!cosign_keys_count(t->sigs->keys))
		return 0;
	snprintf(key, sizeof(key), "%s/%s@%s", reg, repo, digest);
	if (verdict_get(t, key, &ret))
		return ret;
	ret = check_sig_tag(&c);
	if (ret != 0 && ret != -ENOMEM)
		ret = check_referrers(&c);
	/* The registry cannot say: what verified before may still be cached. */
	if (ret != 0 && ret != -ENOMEM && c.transport_err && check_evidence(&c, key) == 0)
		ret = 0;
	if (ret == 0) {
		log_msg(LOG_INFO, "%s: verified (verify=cosign): %s by %s", what, c.where,
			cosign_key_name(t->sigs->keys, c.key));
		verdict_put(t, key, 0);
		evidence_put(t, key, c.sigman);
		return 0;
	}
	if (ret == -ENOMEM)
		return ret;
	if (c.transport_err) {
		/* Not a verdict: nothing is shown, and the next look asks again.
		 * Another user's look under -o share=cached asks no registry by
		 * design: no error of the mount's. */
		log_msg(t->may_fetch && !t->may_fetch() ? LOG_DEBUG : LOG_ERR,
			"%s: not shown (verify=cosign): signatures could not be looked "
			"up: %s", what, c.rep.text);
		return c.transport_err;
	}
	log_msg(LOG_ERR, "%s: refused (verify=cosign): %s%s", what,
		c.found ? "" : "no signature: ", c.rep.text);
	verdict_put(t, key, -EKEYREJECTED);
	return -EKEYREJECTED;
}
