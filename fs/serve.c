/* serve.c - serves the files of an artifact: fetches blobs into the blob
 * cache (through mirrors, verified, with progress in the stats), extracts
 * archive layers and finds the legacy fallback binary. No state of its
 * own: the blob cache keeps the bytes, artifacts.c the fallback answer. */
#include "serve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "artifact.h"
#include "artifacts.h"
#include "blobcache.h"
#include "client.h"
#include "files.h"
#include "log.h"
#include "manifest.h"
#include "registries.h"
#include "stats.h"
#include "tree_impl.h"

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

/* Also where a reader's interrupt reaches the download at once, between
 * the registry's own checks (tree.c binds them to the thread). */
static int counting_sink(void *arg, const void *data, size_t len)
{
	struct fetch_ctx *f = arg;

	if (data && f->t->interrupted && f->t->interrupted())
		return -EINTR;

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
	if (ret == -EINTR)
		log_msg(LOG_INFO, "%s: the reader was interrupted; download dropped", what);
	else if (ret < 0 && ret != -EBADMSG && !reg_not_shared(&err) &&
		 (f->is_manifest || err.status || err.message[0]))
		log_reg_error(what, &err, ret);
	return ret;
}

/* Another reader's download that its interrupt ended is not ours to fail:
 * ask again (a bounded number of times), and download unless someone else
 * does, unless this request was interrupted too. */
static bool again_after_eintr(const struct tree *t, int ret, unsigned *tries)
{
	return ret == -EINTR && (*tries)++ < 8 && !(t->interrupted && t->interrupted());
}

int serve_open_blob(struct tree *t, const struct artifact *a, const char *digest,
		    uint64_t size, bool is_manifest)
{
	struct fetch_ctx f = { .t = t, .reg = a->registry, .repo = a->repo, .digest = digest,
			       .size = size, .is_manifest = is_manifest };
	unsigned tries = 0;
	int ret = blobcache_open(t->bc, digest, size, NULL, NULL);

	/* Not cached: this open waits on a download, its own or another's. */
	if (ret == -ENOENT) {
		ret = openfiles_wait_begin(t->files);
		if (ret < 0)
			return ret;
		do
			ret = blobcache_open(t->bc, digest, size, fetch_blob, &f);
		while (again_after_eintr(t, ret, &tries));
		openfiles_wait_end(t->files);
	}
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
	unsigned tries = 0;
	bool waits = !blobcache_extracted(t->bc, digest);
	int ret;

	/* Not there yet: this lookup waits on a download and an extraction,
	 * and takes a waiting slot as a cold open does. */
	if (waits) {
		ret = openfiles_wait_begin(t->files);
		if (ret < 0)
			return ret;
	}
	do
		ret = blobcache_extract(t->bc, digest, size, fetch_blob, &f, &t->limits, &err);
	while (again_after_eintr(t, ret, &tries));
	if (waits)
		openfiles_wait_end(t->files);

	if (f.fetched)
		stats_open(t->stats, false);	/* a download, like a cold open */
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
				err.entry[0] ? "\"" : "", err.reason[0] ? err.reason : strerror(-ret));
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

	if (artifact_fallback_known(t, a, &ret, out, len))
		return ret;

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
		dfd = blobcache_extracted_open(t->bc, d->digest, "", O_RDONLY | O_DIRECTORY);
		if (dfd < 0)
			return dfd;	/* evicted already: transient */
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
	artifact_fallback_remember(t, a, ret, out);
	return ret;
}

int serve_extracted_path(struct tree *t, struct artifact *a, const struct aentry *e,
			 const char *rest, char *out, size_t len)
{
	int ret;

	if (e->kind == AE_FALLBACK)
		return ensure_fallback(t, a, out, len);
	ret = extract(t, a, e->digest, e->size, false);
	if (ret < 0)
		return ret;
	snprintf(out, len, "extract/sha256/%s%s%s%s%s", e->digest + 7, e->subdir ? "/" : "",
		 e->subdir ? e->subdir : "", rest && *rest ? "/" : "", rest ? rest : "");
	/* oras pull refuses a directory layer with entries outside <title>/:
	 * one without <title>/ has nothing to show (ENOENT, and a log line). */
	if (e->subdir && !(rest && *rest) &&
	    faccessat(blobcache_root_fd(t->bc), out, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
		log_msg(LOG_WARNING, "%s/%s@%s: layer %s: an oras directory layer without a "
			"\"%s/\" inside; nothing of it is shown", a->registry, a->repo, a->digest,
			e->digest, e->subdir);
		return -ENOENT;
	}
	return 0;
}

/* The size of layer @digest of @a, for extracting it again. */
static int layer_size(const struct artifact *a, const char *digest, uint64_t *size)
{
	const struct manifest *m = a->v->m;

	for (size_t i = 0; i < m->n_layers; i++) {
		if (!strcmp(m->layers[i].digest, digest)) {
			*size = m->layers[i].size;
			return 0;
		}
	}
	return -ENOENT;
}

int serve_open_extracted(struct tree *t, struct artifact *a, const char *ext, int flags)
{
	static const char prefix[] = "extract/sha256/";
	const char *hex = ext + strlen(prefix), *rest;
	char digest[72];
	uint64_t size;
	int fd, ret;

	if (strncmp(ext, prefix, strlen(prefix)) || strlen(hex) < 64 ||
	    (hex[64] && hex[64] != '/'))
		return -EINVAL;
	snprintf(digest, sizeof(digest), "sha256:%.64s", hex);
	rest = hex[64] ? hex + 65 : "";
	fd = blobcache_extracted_open(t->bc, digest, rest, flags);
	if (fd == -ESTALE) {
		/* Evicted since it was extracted (the legacy fallback's path is
		 * remembered): extract it again, once. */
		ret = layer_size(a, digest, &size);
		if (ret == 0)
			ret = extract(t, a, digest, size, false);
		if (ret < 0)
			return ret;
		fd = blobcache_extracted_open(t->bc, digest, rest, flags);
	}
	if (fd == -EXDEV || fd == -ESTALE) {
		log_msg(LOG_ERR, "%s/%s@%s: %s: %s", a->registry, a->repo, a->digest, ext,
			fd == -EXDEV ? "a link leads out of the layer; refused" :
				       "extracted layer vanished");
		return -EIO;
	}
	return fd;
}
