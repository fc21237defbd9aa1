/* referrers.c - OCI 1.1 referrers, from the API or the tag-schema fallback,
 * and cosign's tags; the /.ocifs/referrers view. referrers.lock guards the
 * registries known to lack the API and the kept lists. */
#include "referrers.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifacts.h"
#include "blobcache.h"
#include "client.h"
#include "dircache.h"
#include "ref.h"
#include "resolve.h"
#include "log.h"
#include "manifest.h"
#include "registries.h"
#include "tree_impl.h"

/* The referrers of one artifact, as listed at @at. */
struct kept {
	char key[1600];		/* "<registry>/<repo>@<digest>", "" when unused */
	struct referrer *v;
	size_t n;
	time_t at;
};

struct referrers {
	pthread_mutex_t lock;
	char no_api[REFERRERS_REGISTRIES_MAX][256];	/* lock */
	unsigned n_no_api;				/* lock */
	struct kept kept[REFERRERS_CACHED];		/* lock */
	unsigned next;					/* lock: slot to reuse */
};

int referrers_new(struct referrers **out)
{
	struct referrers *rs = calloc(1, sizeof(*rs));

	if (!rs)
		return -ENOMEM;
	pthread_mutex_init(&rs->lock, NULL);
	*out = rs;
	return 0;
}

void referrers_free(struct referrers *rs)
{
	if (!rs)
		return;
	for (unsigned i = 0; i < REFERRERS_CACHED; i++)
		free(rs->kept[i].v);
	pthread_mutex_destroy(&rs->lock);
	free(rs);
}

static bool lacks_api(struct referrers *rs, const char *reg)
{
	bool no = false;

	pthread_mutex_lock(&rs->lock);
	for (unsigned i = 0; i < rs->n_no_api && !no; i++)
		no = !strcmp(rs->no_api[i], reg);
	pthread_mutex_unlock(&rs->lock);
	return no;
}

static void note_no_api(struct referrers *rs, const char *reg)
{
	pthread_mutex_lock(&rs->lock);
	if (rs->n_no_api < REFERRERS_REGISTRIES_MAX)
		snprintf(rs->no_api[rs->n_no_api++], sizeof(rs->no_api[0]), "%s", reg);
	pthread_mutex_unlock(&rs->lock);
}

/* An index from the registry: size-capped by the client, parsed. A body
 * that is no index is refused (-EIO). */
static int parse_index(const char *what, struct reg_manifest *rm, struct manifest **out)
{
	const char *why = NULL;
	struct manifest *m = NULL;
	int ret = manifest_parse(rm->body, rm->len, rm->content_type, &m, &why);

	if (ret == 0 && m->kind != MANIFEST_INDEX) {
		why = "not an image index";
		manifest_free(m);
		ret = -EINVAL;
	}
	if (ret < 0) {
		log_msg(LOG_ERR, "%s: malformed referrers index: %s", what,
			why ? why : strerror(-ret));
		return ret == -ENOMEM ? ret : -EIO;
	}
	*out = m;
	return 0;
}

static int empty_index(struct manifest **out)
{
	static const char empty[] = "{\"schemaVersion\":2,\"mediaType\":"
				    "\"application/vnd.oci.image.index.v1+json\",\"manifests\":[]}";

	return manifest_parse(empty, sizeof(empty) - 1, NULL, out, NULL);
}

int referrers_index(struct tree *t, const char *reg, const char *repo, const char *digest,
		    struct manifest **out, const char **via)
{
	struct reg_manifest rm = { 0 };
	struct reg_error err;
	char what[1600], tag[80];
	int ret;

	snprintf(what, sizeof(what), "%s/%s@%s", reg, repo, digest);
	ret = reg_gate(t, reg, &err);
	if (ret < 0)
		return ret;
	if (!lacks_api(t->refs, reg)) {
		ret = regclient_get_referrers(t->rc, reg, repo, digest, &rm, &err);
		reg_outcome(t, reg, ret, &err);
		if (ret == 0) {
			*via = "the referrers API";
			ret = parse_index(what, &rm, out);
			reg_manifest_release(&rm);
			return ret;
		}
		if (ret != -ENOENT)
			return ret;
		log_msg(LOG_DEBUG, "%s: no referrers API; using the tag-schema fallback", reg);
		note_no_api(t->refs, reg);
	}
	/* The tag-schema fallback: sha256-<hex> names the index. */
	snprintf(tag, sizeof(tag), "sha256-%.64s", digest + 7);
	*via = "the sha256-<hex> tag";
	ret = regclient_get_manifest(t->rc, reg, repo, tag, 0, NULL, &rm, &err);
	reg_outcome(t, reg, ret, &err);
	if (ret == -ENOENT)
		return empty_index(out);
	if (ret == 0)
		ret = parse_index(what, &rm, out);
	reg_manifest_release(&rm);
	return ret;
}

/* ---- every referrer: OCI 1.1 and cosign's tags ---- */

static const char *const cosign_suffixes[] = { "sig", "att", "sbom" };

static void referrer_set(struct referrer *r, const char *digest, const char *type,
			 const char *tag)
{
	snprintf(r->digest, sizeof(r->digest), "%s", digest);
	snprintf(r->type, sizeof(r->type), "%s", type ? type : "");
	snprintf(r->tag, sizeof(r->tag), "%s", tag ? tag : "");
}

/* The manifest under cosign's tag @tag, as a referrer. 1 when added. */
static int cosign_tag_referrer(struct tree *t, const char *reg, const char *repo,
			       const char *tag, struct referrer *r)
{
	struct reg_manifest rm = { 0 };
	struct reg_error err;
	struct manifest *m = NULL;
	char got[72];
	int ret = reg_gate(t, reg, &err);

	if (ret == 0) {
		ret = regclient_get_manifest(t->rc, reg, repo, tag, 0, NULL, &rm, &err);
		reg_outcome(t, reg, ret, &err);
	}
	if (ret < 0)
		return ret == -ENOENT ? 0 : ret;
	blobcache_digest_of(rm.body, rm.len, got);
	if (rm.digest_header && strcmp(rm.digest_header, got)) {
		ret = -EIO;
		goto out_release;
	}
	(void)blobcache_put(t->bc, got, rm.body, rm.len);
	ret = manifest_parse(rm.body, rm.len, rm.content_type, &m, NULL);
	if (ret < 0) {
		ret = ret == -ENOMEM ? ret : 0;	/* not a manifest: not listed */
		goto out_release;
	}
	referrer_set(r, got, m->artifact_type ? m->artifact_type :
			     m->n_layers ? m->layers[0].media_type : m->media_type, tag);
	manifest_free(m);
	ret = 1;
out_release:
	reg_manifest_release(&rm);
	return ret;
}

static bool in_tags(const struct strlist *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->v[i], s))
			return true;
	return false;
}

static int list_fetch(struct tree *t, const char *reg, const char *repo, const char *digest,
		      struct referrer **out, size_t *n)
{
	struct referrer *v = calloc(REFERRERS_MAX, sizeof(*v));
	struct manifest *idx = NULL;
	struct strlist tags = { 0 };
	const char *via = NULL;
	size_t k = 0;
	int ret;

	if (!v)
		return -ENOMEM;
	ret = referrers_index(t, reg, repo, digest, &idx, &via);
	if (ret < 0)
		goto out_free;
	for (size_t i = 0; i < idx->n_layers && k < REFERRERS_MAX; i++)
		referrer_set(&v[k++], idx->layers[i].digest,
			     idx->layers[i].artifact_type ? idx->layers[i].artifact_type :
							    idx->layers[i].media_type, NULL);
	manifest_free(idx);
	/* cosign's tags, where the tag list (one request per repository,
	 * kept like any listing) has them */
	if (listing(t, reg, repo, true, &tags) == 0) {
		for (size_t i = 0; i < 3 && k < REFERRERS_MAX; i++) {
			char tag[80];
			snprintf(tag, sizeof(tag), "sha256-%.64s.%s", digest + 7, cosign_suffixes[i]);
			if (!in_tags(&tags, tag))
				continue;
			ret = cosign_tag_referrer(t, reg, repo, tag, &v[k]);
			if (ret < 0)
				break;
			k += (size_t)ret;
			ret = 0;
		}
		strlist_release(&tags);
	}
	if (ret < 0)
		goto out_free;
	*out = v;
	*n = k;
	return 0;
out_free:
	free(v);
	return ret;
}

static int copy_out(const struct referrer *v, size_t n, struct referrer **out, size_t *on)
{
	*out = malloc((n ? n : 1) * sizeof(**out));
	if (!*out)
		return -ENOMEM;
	memcpy(*out, v, n * sizeof(*v));
	*on = n;
	return 0;
}

int referrers_list(struct tree *t, const char *reg, const char *repo, const char *digest,
		   struct referrer **out, size_t *n)
{
	struct referrers *rs = t->refs;
	struct referrer *v = NULL;
	char key[1600];
	size_t k = 0;
	int ret = -ENOENT;

	snprintf(key, sizeof(key), "%s/%s@%s", reg, repo, digest);
	pthread_mutex_lock(&rs->lock);
	for (unsigned i = 0; i < REFERRERS_CACHED; i++) {
		struct kept *e = &rs->kept[i];
		if (!strcmp(e->key, key) && tree_fresh(t, e->at)) {
			ret = copy_out(e->v, e->n, out, n);
			break;
		}
	}
	pthread_mutex_unlock(&rs->lock);
	if (ret != -ENOENT)
		return ret;
	ret = list_fetch(t, reg, repo, digest, &v, &k);
	if (ret < 0)
		return ret;
	ret = copy_out(v, k, out, n);
	pthread_mutex_lock(&rs->lock);
	struct kept *e = &rs->kept[rs->next];
	rs->next = (rs->next + 1) % REFERRERS_CACHED;
	free(e->v);
	snprintf(e->key, sizeof(e->key), "%s", key);
	e->v = v;
	e->n = k;
	e->at = tree_now();
	pthread_mutex_unlock(&rs->lock);
	return ret;
}

int referrers_resolve(struct tree *t, const char *sub, unsigned flags, struct resolved *r)
{
	struct referrer *v = NULL;
	struct artifact *ref = NULL;
	char digest[72], *slash;
	size_t n = 0;
	bool found = false;
	int ret;

	memset(r, 0, sizeof(*r));
	if (!*sub) {
		r->kind = R_REFERRERS;
		return 0;
	}
	ret = resolve(t, sub, flags, r);
	if (ret < 0 || r->kind != R_ARTIFACT)
		return ret;
	if (!r->inner[0]) {
		r->kind = R_REFERRERS;
		return 0;
	}
	/* <referrer digest>[/<path>]: one of this artifact's referrers */
	slash = strchr(r->inner, '/');
	if ((slash ? (size_t)(slash - r->inner) : strlen(r->inner)) >= sizeof(digest))
		return -ENOENT;
	snprintf(digest, sizeof(digest), "%.*s",
		 (int)(slash ? (size_t)(slash - r->inner) : strlen(r->inner)), r->inner);
	if (!ref_valid_digest(digest))
		return -ENOENT;
	ret = referrers_list(t, r->reg, r->name, r->art->digest, &v, &n);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n && !found; i++)
		found = !strcmp(v[i].digest, digest);
	free(v);
	if (!found)
		return -ENOENT;
	ret = artifact_by_digest(t, r->reg, r->name, digest, &ref);
	if (ret < 0)
		return ret == -EKEYREJECTED ? -EACCES : ret;
	artifact_put(t, r->art);
	r->art = ref;
	memmove(r->inner, slash ? slash + 1 : "", strlen(slash ? slash + 1 : "") + 1);
	return 0;
}

int referrers_xattr(struct tree *t, const char *reg, const char *repo, const char *digest,
		    char *buf, size_t size)
{
	struct referrer *v = NULL;
	size_t n = 0, off = 0;
	int ret = referrers_list(t, reg, repo, digest, &v, &n);

	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++) {
		char line[512];
		int len = snprintf(line, sizeof(line), "%s %s%s%s\n", v[i].digest, v[i].type,
				   v[i].tag[0] ? " " : "", v[i].tag);
		if (len < 0 || (size_t)len >= sizeof(line))
			continue;
		if (size && off + (size_t)len > size) {
			ret = -ERANGE;
			break;
		}
		if (size)
			memcpy(buf + off, line, (size_t)len);
		off += (size_t)len;
	}
	free(v);
	return ret < 0 ? ret : (int)off;
}
