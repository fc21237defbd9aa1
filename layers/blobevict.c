/* blobevict.c - pins, and least-recently-used eviction of blobs with
 * their extracted trees (prune, info). */
#include "blobcache_impl.h"
#include "cachedir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void blobcache_set_max(struct blobcache *bc, uint64_t max_bytes)
{
	bc->max_bytes = max_bytes;
}

void blobcache_pin(struct blobcache *bc, const char *digest)
{
	struct pin *p;

	pthread_mutex_lock(&bc->lock);
	for (p = bc->pins; p; p = p->next)
		if (!strcmp(p->hex, hex_of(digest)))
			break;
	if (!p && (p = calloc(1, sizeof(*p)))) {
		snprintf(p->hex, sizeof(p->hex), "%s", hex_of(digest));
		p->next = bc->pins;
		bc->pins = p;
	}
	if (p)
		p->count++;
	pthread_mutex_unlock(&bc->lock);
}

void blobcache_unpin(struct blobcache *bc, const char *digest)
{
	struct pin **pp, *p;

	pthread_mutex_lock(&bc->lock);
	for (pp = &bc->pins; (p = *pp); pp = &p->next) {
		if (strcmp(p->hex, hex_of(digest)))
			continue;
		if (--p->count == 0) {
			*pp = p->next;
			free(p);
		}
		break;
	}
	pthread_mutex_unlock(&bc->lock);
}

static bool pinned(struct blobcache *bc, const char *hex)
{
	for (struct pin *p = bc->pins; p; p = p->next)
		if (!strcmp(p->hex, hex))
			return true;
	return false;
}

/* A blob and its extracted tree, if any: evicted together. */
struct blob_ent {
	char hex[65];
	uint64_t size;		/* the blob's and the tree's */
	uint64_t tree;		/* the tree's alone */
	bool has_blob, has_tree;
	struct timespec used;
};

static bool is_hex64(const char *s)
{
	for (int i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[64] == '\0';
}

struct ents {
	struct blob_ent *v;
	size_t n, cap;
};

static struct blob_ent *ents_add(struct ents *e, const char *hex)
{
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 64;
		struct blob_ent *nv = realloc(e->v, cap * sizeof(*nv));
		if (!nv)
			return NULL;
		e->v = nv;
		e->cap = cap;
	}
	memset(&e->v[e->n], 0, sizeof(e->v[0]));
	memcpy(e->v[e->n].hex, hex, sizeof(e->v[0].hex));	/* 64 hex + NUL */
	return &e->v[e->n++];
}

static int by_hex(const void *a, const void *b)
{
	return strcmp(((const struct blob_ent *)a)->hex, ((const struct blob_ent *)b)->hex);
}

/* Call @fn for each sha256 name in the directory @dfd. */
static int each_hex(int dfd, int (*fn)(void *, int, const char *, const struct stat *),
		    void *arg)
{
	DIR *d = cachedir_opendir(dfd, ".");
	struct dirent *e;
	int ret = 0, fd;

	if (!d)
		return -errno;
	fd = dirfd(d);
	while (ret == 0 && (e = readdir(d))) {
		struct stat st;
		if (is_hex64(e->d_name) && fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			ret = fn(arg, fd, e->d_name, &st);
	}
	closedir(d);
	return ret;
}

static int add_blob(void *arg, int dfd, const char *hex, const struct stat *st)
{
	struct blob_ent *b = ents_add(arg, hex);

	(void)dfd;
	if (!b)
		return -ENOMEM;
	b->size = (uint64_t)st->st_size;
	b->used = st->st_mtim;
	b->has_blob = true;
	return 0;
}

struct tree_scan {
	struct blobcache *bc;
	struct ents *blobs;	/* sorted by hex */
	struct ents trees;	/* trees without a blob */
};

static int add_tree(void *arg, int dfd, const char *hex, const struct stat *st)
{
	struct tree_scan *t = arg;
	struct blob_ent key, *b;

	(void)dfd;
	memcpy(key.hex, hex, sizeof(key.hex));
	b = t->blobs->n ? bsearch(&key, t->blobs->v, t->blobs->n, sizeof(key), by_hex) : NULL;
	if (!b) {
		b = ents_add(&t->trees, hex);
		if (!b)
			return -ENOMEM;
		b->used = st->st_mtim;
	}
	b->has_tree = true;
	b->tree = blobcache_tree_bytes(t->bc, hex);
	b->size += b->tree;
	return 0;
}

/* Every blob in blobs/sha256 with its size (its extracted tree's
 * included) and last use, and every tree whose blob is gone. */
static int scan(struct blobcache *bc, struct blob_ent **out, size_t *n, uint64_t *total)
{
	struct ents blobs = { 0 };
	struct tree_scan t = { bc, &blobs, { 0 } };
	int ret;

	ret = each_hex(bc->blobs_fd, add_blob, &blobs);
	if (ret == 0) {
		if (blobs.n)	/* qsort() and bsearch() want a non-NULL base */
			qsort(blobs.v, blobs.n, sizeof(*blobs.v), by_hex);
		ret = each_hex(bc->extract_fd, add_tree, &t);
	}
	for (size_t i = 0; ret == 0 && i < t.trees.n; i++)
		ret = ents_add(&blobs, t.trees.v[i].hex) ? 0 : -ENOMEM;
	if (ret < 0) {
		free(blobs.v);
		free(t.trees.v);
		return ret;
	}
	for (size_t i = 0; i < t.trees.n; i++)
		blobs.v[blobs.n - t.trees.n + i] = t.trees.v[i];
	free(t.trees.v);
	*total = 0;
	for (size_t i = 0; i < blobs.n; i++)
		*total += blobs.v[i].size;
	*out = blobs.v;
	*n = blobs.n;
	return 0;
}

static int by_use(const void *a, const void *b)
{
	const struct blob_ent *x = a, *y = b;

	if (x->used.tv_sec != y->used.tv_sec)
		return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
	if (x->used.tv_nsec != y->used.tv_nsec)
		return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
	return strcmp(x->hex, y->hex);
}

int blobcache_prune(struct blobcache *bc, uint64_t max_bytes, time_t older_than,
		    uint64_t *files, uint64_t *bytes)
{
	struct blob_ent *v = NULL;
	uint64_t total, nfiles = 0, nbytes = 0;
	size_t n;
	int ret;

	ret = scan(bc, &v, &n, &total);
	if (ret < 0)
		return ret;
	if (n)
		qsort(v, n, sizeof(*v), by_use);
	pthread_mutex_lock(&bc->lock);
	for (size_t i = 0; i < n; i++) {
		bool old = older_than && v[i].used.tv_sec < older_than;
		if (!old && (!max_bytes || total <= max_bytes))
			break;
		if (pinned(bc, v[i].hex))
			continue;	/* open or running: never evicted */
		if (unlinkat(bc->blobs_fd, v[i].hex, 0) < 0 && errno != ENOENT)
			continue;
		if (v[i].has_tree) {
			blobcache_tree_remove(bc, v[i].hex);
			blobcache_tree_forget(bc, v[i].hex);
		}
		total -= v[i].size;
		nfiles++;
		nbytes += v[i].size;
	}
	pthread_mutex_unlock(&bc->lock);
	free(v);
	if (files)
		*files = nfiles;
	if (bytes)
		*bytes = nbytes;
	return 0;
}

int blobcache_info(struct blobcache *bc, struct blobcache_info *out)
{
	struct blob_ent *v = NULL;
	struct blobcache_info info = { 0 };
	uint64_t total;
	size_t n;
	int ret;

	ret = scan(bc, &v, &n, &total);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++) {
		info.blobs += v[i].has_blob;
		info.bytes += v[i].size - v[i].tree;
		info.extracted += v[i].has_tree;
		info.extracted_bytes += v[i].tree;
		if (!info.oldest || v[i].used.tv_sec < info.oldest)
			info.oldest = v[i].used.tv_sec;
		if (v[i].used.tv_sec > info.newest)
			info.newest = v[i].used.tv_sec;
	}
	free(v);
	*out = info;
	return 0;
}
