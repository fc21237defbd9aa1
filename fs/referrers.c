/* referrers.c - OCI 1.1 referrers, from the API or the tag-schema fallback.
 * referrers.lock guards the registries known to lack the API. */
#include "referrers.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blobcache.h"
#include "client.h"
#include "log.h"
#include "manifest.h"
#include "registries.h"
#include "tree_impl.h"

struct referrers {
	pthread_mutex_t lock;
	char no_api[REFERRERS_REGISTRIES_MAX][256];	/* lock */
	unsigned n_no_api;				/* lock */
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
		    const char *artifact_type, struct manifest **out, const char **via)
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
		ret = regclient_get_referrers(t->rc, reg, repo, digest, artifact_type, &rm, &err);
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
