/* tree.c - the tree: owns its parts (tree_impl.h lists them) for the
 * mount's life, maps a mount path to a target, and answers getattr,
 * readlink and xattrs. See tree.h. */
#include "tree.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "artifact.h"
#include "artifacts.h"
#include "blobcache.h"
#include "client.h"
#include "dircache.h"
#include "files.h"
#include "log.h"
#include "manifest.h"
#include "referrers.h"
#include "registries.h"
#include "serve.h"
#include "signatures.h"
#include "stats.h"
#include "tree_impl.h"

time_t tree_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

bool tree_fresh(const struct tree *t, time_t at)
{
	return tree_now() - at < (time_t)t->tag_ttl;
}

void log_reg_at(int prio, const char *what, const struct reg_error *e, int ret)
{
	if (e->code[0])
		log_msg(prio, "%s: %s (%s)", what, e->message, e->code);
	else if (e->message[0])
		log_msg(prio, "%s: %s", what, e->message);
	else
		log_msg(prio, "%s: %s", what, strerror(-ret));
}

void log_reg_error(const char *what, const struct reg_error *e, int ret)
{
	log_reg_at(LOG_ERR, what, e, ret);
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
	if (!t || signatures_new(o->verify_keys, &t->sigs) < 0) {
		free(t);
		return -ENOMEM;
	}
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
	blobcache_set_cancel(t->bc, o->interrupted);
	t->tag_ttl = o->tag_ttl;
	t->down_window = o->timeout < 1 ? 1 : o->timeout > 10 ? 10 : o->timeout;
	t->may_fetch = o->may_fetch;
	t->interrupted = o->interrupted;
	t->platform = o->platform;
	t->limits = o->limits;
	ret = registries_new(o->registries, o->registries_max, &t->regs);
	struct dircache_limits dl = { o->tags_max, o->listings_max, o->listings_max_bytes };
	if (ret == 0)
		ret = dircache_new(&dl, &t->dc);
	if (ret == 0)
		ret = artifacts_new(o->artifacts_max, o->artifacts_max_bytes, &t->arts);
	if (ret == 0)
		ret = openfiles_new(o->max_waiting_opens, &t->files);
	if (ret == 0)
		ret = referrers_new(&t->refs);
	if (ret < 0)
		goto out_free;
	*out = t;
	return 0;
out_free:
	tree_free(t);
	return ret;
}

void tree_free(struct tree *t)
{
	if (!t)
		return;
	openfiles_free(t, t->files);
	referrers_free(t->refs);
	signatures_free(t->sigs);
	artifacts_free(t->arts);
	dircache_free(t->dc);
	registries_free(t->regs);
	regclient_free(t->rc);
	blobcache_free(t->bc);
	stats_free(t->stats);
	free(t);
}

void dir_attr(struct tree_attr *a)
{
	a->mode = S_IFDIR | 0555;
	a->size = 0;
	a->mtime = TREE_EPOCH;
}

void stat_attr(const struct stat *st, struct tree_attr *a)
{
	a->mode = (st->st_mode & S_IFMT) | (st->st_mode & 0555);
	a->size = (uint64_t)st->st_size;
	a->mtime = st->st_mtime;	/* the archive's (extracted with its times) */
}

void entry_attr(const struct aentry *e, int64_t mtime, struct tree_attr *a)
{
	if (e->kind == AE_DIR || e->kind == AE_ARCHIVE) {
		dir_attr(a);
	} else {
		a->mode = S_IFREG | e->mode;
		a->size = e->size;
	}
	a->mtime = mtime;
}

int64_t artifact_mtime(const struct artifact *a)
{
	const struct aview *v = a->v;

	if (v->m && v->m->created)
		return v->m->created;
	if (v->index && v->index->created)
		return v->index->created;
	return TREE_EPOCH;
}

/* target_new() into @g. */
static int target_get(struct tree *t, const char *path, unsigned flags, struct target *g)
{
	const size_t ll = strlen(LAYOUT_DIR);
	bool layout = false;
	char full[4096];
	int ret;

	memset(&g->r, 0, sizeof(g->r));
	g->e = NULL;
	g->view = NULL;
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
		if (!strncmp(rest, "/referrers", 10) && (!rest[10] || rest[10] == '/')) {
			ret = referrers_resolve(t, rest + 10, flags, &g->r);
			goto out_resolved;
		}
		if (!strncmp(rest, LAYOUT_DIR, ll) && (rest[ll] == '/' || !rest[ll])) {
			/* The whole namespace, whatever the mount's root. */
			path = rest[ll] && rest[ll + 1] ? rest + ll : "/";
			layout = true;
		} else if (*rest == '/') {
			return -ENOENT;
		}
	}
	if (t->root[0] && !layout) {
		size_t rl = strlen(t->root), pl = strcmp(path, "/") ? strlen(path) : 0;
		if (rl + pl >= sizeof(full))
			return -ENAMETOOLONG;
		memcpy(full, t->root, rl);
		memcpy(full + rl, path, pl);
		full[rl + pl] = '\0';
		path = full;
	}
	ret = resolve(t, path, flags, &g->r);
out_resolved:
	if (ret < 0 || g->r.kind != R_ARTIFACT)
		return ret;
	/* A tag directory answered from the tag list (RESOLVE_DIR_OK): no
	 * view to look into. */
	if (!g->r.art)
		return g->r.inner[0] ? -ENOENT : 0;
	g->view = g->r.art->v;
	if (layout && (ret = artifact_layout(t, g->r.art, &g->view)) < 0)
		return ret;
	if (!g->r.inner[0])
		return 0;
	g->e = aview_lookup(g->view, g->r.inner, &g->rest);
	if (!g->e)
		return -ENOENT;
	if (g->rest || g->e->kind == AE_FALLBACK)
		return serve_extracted_path(t, g->r.art, g->e, g->rest, g->ext, sizeof(g->ext));
	return 0;
}

/* FUSE interrupts reach the registry's transfers, stalled ones and retry
 * waits included: each thread that asks the tree binds, once, a
 * cancellation that polls tree_opts.interrupted() (which reads the
 * thread's current request). Every request passes target_new(). */
static _Thread_local struct reg_cancel thread_cancel;

static bool poll_interrupted(void *arg)
{
	const struct tree *t = arg;

	return t->interrupted();
}

static void bind_interrupts(struct tree *t)
{
	if (!t->interrupted || thread_cancel.poll)
		return;
	thread_cancel.poll = poll_interrupted;
	thread_cancel.poll_arg = t;
	regclient_cancel_bind(&thread_cancel);
}

void target_free(struct tree *t, struct target *g)
{
	if (!g)
		return;
	artifact_put(t, g->r.art);
	regclient_hint_drop(t->rc, g->r.hint);
	free(g);
}

int target_new(struct tree *t, const char *path, unsigned flags, struct target **out)
{
	struct target *g = malloc(sizeof(*g));
	int ret;

	if (!g)
		return -ENOMEM;
	bind_interrupts(t);
	ret = target_get(t, path, flags, g);
	if (ret < 0) {
		target_free(t, g);
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

	ret = target_new(t, path, RESOLVE_DIR_OK, &g);
	if (ret < 0)
		return ret;
	if (g->ext[0]) {
		int fd = serve_open_extracted(t, g->r.art, g->ext, O_PATH | O_NOFOLLOW);
		if (fd < 0) {
			ret = fd;
			goto out_free;
		}
		ret = fstat(fd, &st) < 0 ? -errno : 0;
		close(fd);
		if (ret < 0)
			goto out_free;
		stat_attr(&st, out);
		if (g->e->kind == AE_FALLBACK)
			out->mode = S_IFREG | 0555;
	} else if (g->e) {
		entry_attr(g->e, artifact_mtime(g->r.art), out);
	} else if (g->r.kind == R_STATS) {
		out->mode = S_IFREG | 0444;
		out->size = 0;	/* generated on open; read with direct I/O */
		out->mtime = TREE_EPOCH;
	} else {
		dir_attr(out);
	}
out_free:
	target_free(t, g);
	return ret;
}
int tree_check_root(struct tree *t)
{
	struct target *g;
	int ret = target_new(t, "/", 0, &g);

	if (ret == 0)
		target_free(t, g);
	return ret;
}

void tree_count_read(struct tree *t, const struct tree_file *f, uint64_t off, size_t size)
{
	struct stat st;

	/* The stats document itself is not content served from the cache;
	 * a splice read asks for more than the file may hold. */
	if (f->direct || fstat(f->fd, &st) < 0 || off >= (uint64_t)st.st_size)
		return;
	stats_served(t->stats, (uint64_t)st.st_size - off < size ? (uint64_t)st.st_size - off :
								    size);
}

int tree_readlink(struct tree *t, const char *path, char *buf, size_t size)
{
	struct target *g;
	ssize_t n;
	int ret;

	ret = target_new(t, path, 0, &g);
	if (ret < 0)
		return ret;
	if (!g->ext[0] || size == 0) {
		ret = -EINVAL;
		goto out_free;
	}
	ret = serve_open_extracted(t, g->r.art, g->ext, O_PATH | O_NOFOLLOW);
	if (ret < 0)
		goto out_free;
	n = readlinkat(ret, "", buf, size - 1);
	close(ret);
	ret = 0;
	if (n < 0) {
		ret = -errno;
		goto out_free;
	}
	buf[n] = '\0';
out_free:
	target_free(t, g);
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

/* A reference mount's root attributes that need no request: the
 * reference as normalized ("docker.io/library/ubuntu:latest", or @digest),
 * and the digest it pins. NULL when @name is not one of them. */
static const char *local_root_xattr(const struct tree *t, const char *name, char *out,
				    size_t len)
{
	const char *ref = strrchr(t->root, '/');
	size_t slashes = 0, off = 0;

	for (const char *c = t->root; *c; c++)
		slashes += *c == '/';
	if (slashes < 3 || !ref)	/* not "/<registry>/<repo>/<ref>" */
		return NULL;
	ref++;
	if (!strcmp(name, "user.oci.reference")) {
		/* "/reg/a/.b/ref" (fs/ocifs.c root_of) -> "reg/a/b:ref" */
		const char *c = t->root + 1;
		for (size_t i = 0; c < ref - 1 && off + 1 < len; i++) {
			size_t n = strcspn(c, "/");
			bool dot = i >= 2 && *c == '.';	/* ".b": repository part b */
			off += (size_t)snprintf(out + off, len - off, "%s%.*s", i ? "/" : "",
						(int)(n - dot), c + dot);
			c += n + 1;
		}
		if (off + 1 < len)
			snprintf(out + off, len - off, "%c%s", strncmp(ref, "sha256:", 7) ? ':' : '@',
				 ref);
		return out;
	}
	if (!strcmp(name, "user.oci.digest") && !strncmp(ref, "sha256:", 7))
		return ref;
	return NULL;
}

int tree_getxattr(struct tree *t, const char *path, const char *name, char *buf, size_t size)
{
	struct target *g;
	const struct aentry *e;
	char num[32], local[2048];
	const char *val = NULL;
	int ret;

	ret = target_new(t, path, 0, &g);
	/* The registry cannot say (unreachable): what the mount knows. */
	if (ret < 0 && ret != -ENOENT && ret != -ENOMEM && !strcmp(path, "/") &&
	    (val = local_root_xattr(t, name, local, sizeof(local))))
		return put_xattr(val, buf, size);
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
	} else if (!e && !strcmp(name, "user.oci.referrers")) {
		/* Asked by name only (not in listxattr): it costs requests. */
		ret = referrers_xattr(t, g->r.reg, g->r.art->repo, g->r.art->digest, buf, size);
		goto out_free;
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
	target_free(t, g);
	return ret;
}

int tree_listxattr(struct tree *t, const char *path, char *buf, size_t size)
{
	static const char *const names[] = { "user.oci.digest", "user.oci.mediaType",
					     "user.oci.size", "user.oci.annotations",
					     "user.oci.artifactType", "user.oci.reference" };
	size_t off = 0;
	int err = 0;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int n = tree_getxattr(t, path, names[i], NULL, 0);
		size_t len = strlen(names[i]) + 1;
		if (n == -ENODATA)
			continue;
		/* Offline, a reference mount's root still has what is local. */
		if (n < 0 && !err)
			err = n;
		if (n < 0)
			continue;
		if (size) {
			if (off + len > size)
				return -ERANGE;
			memcpy(buf + off, names[i], len);
		}
		off += len;
	}
	return off || !err ? (int)off : err;
}
