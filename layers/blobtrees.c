/* blobtrees.c - archive blobs extracted below extract/sha256/<hex>/:
 * single-flight extraction, refusals remembered, trees trusted only when
 * ours and resolved inside without following links out, their disk space
 * counted for eviction. */
#include "blobcache_impl.h"
#include "cachedir.h"
#include "tarx.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* openat() of @rel below @dfd following no symbolic link on the way. */
static long open_nofollow_at(int dfd, const char *rel, int flags)
{
	char *buf = strdup(rel), *save = NULL, *next;
	int cur = dfd;
	long fd = -1;

	if (!buf) {
		errno = ENOMEM;
		return -1;
	}
	for (char *c = strtok_r(buf, "/", &save); c; c = next) {
		next = strtok_r(NULL, "/", &save);
		if (!strcmp(c, "..")) {
			errno = EXDEV;
			fd = -1;
			break;
		}
		fd = openat(cur, c, next ? O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC :
					   flags | O_NOFOLLOW | O_CLOEXEC);
		if (cur != dfd)
			close(cur);
		cur = (int)fd;
		if (fd < 0 || !next)
			break;
	}
	free(buf);
	return fd;
}

/* Remove whatever is at extract/sha256/@hex. */
void blobcache_tree_remove(struct blobcache *bc, const char *hex)
{
	char p[4200];

	if (unlinkat(bc->extract_fd, hex, 0) == 0)
		return;	/* a file or a link: never ours */
	snprintf(p, sizeof(p), "%s/extract/sha256/%s", bc->root, hex);
	tarx_remove_tree(p);
}

/* An extracted tree we may serve: a real directory of ours that no one
 * else can write. Anything else there is removed (and extracted again). */
static bool tree_trusted(struct blobcache *bc, const char *hex)
{
	struct stat st;

	if (fstatat(bc->extract_fd, hex, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return false;
	if (S_ISDIR(st.st_mode) && cachedir_ours(&st))
		return true;
	blobcache_tree_remove(bc, hex);
	return false;
}

static __thread uint64_t du_sum;	/* nftw callbacks take no argument */

static int du_one(const char *p, const struct stat *st, int type, struct FTW *f)
{
	(void)p;
	(void)type;
	(void)f;
	du_sum += (uint64_t)st->st_blocks * 512;
	return 0;
}

/* The disk space the tree of @hex takes, remembered (trees do not change). */
uint64_t blobcache_tree_bytes(struct blobcache *bc, const char *hex)
{
	struct xsize *x;
	char p[4200];

	pthread_mutex_lock(&bc->lock);
	for (x = bc->sizes; x; x = x->next)
		if (!strcmp(x->hex, hex))
			break;
	pthread_mutex_unlock(&bc->lock);
	if (x)
		return x->bytes;
	snprintf(p, sizeof(p), "%s/extract/sha256/%s", bc->root, hex);
	du_sum = 0;
	if (nftw(p, du_one, 16, FTW_PHYS | FTW_MOUNT) < 0)
		return 0;
	x = calloc(1, sizeof(*x));
	if (!x)
		return du_sum;
	memcpy(x->hex, hex, sizeof(x->hex));
	x->bytes = du_sum;
	pthread_mutex_lock(&bc->lock);
	x->next = bc->sizes;
	bc->sizes = x;
	pthread_mutex_unlock(&bc->lock);
	return x->bytes;
}

void blobcache_tree_forget(struct blobcache *bc, const char *hex)
{
	for (struct xsize **pp = &bc->sizes, *x; (x = *pp); pp = &x->next) {
		if (!strcmp(x->hex, hex)) {
			*pp = x->next;
			free(x);
			return;
		}
	}
}

struct extract_job {
	struct blobcache *bc;
	const char *digest;
	uint64_t size;
	blobcache_fetch_fn fetch;
	void *arg;
	const struct tarx_limits *lim;
	struct tarx_error *err;
};

/* Move an extracted tree from @rel (below the root) to extract/sha256/@hex.
 * libarchive does not fsync what it writes, and a tree found after a
 * crash is trusted like a blob; but a syncfs() per layer cost as much as
 * its download (bench/durability.py). So the tree is synced once, at
 * blobcache_free(), and until then our session notes it, durably before
 * the rename: if we die first (the machine or the process), the next
 * start finds the note in our dead session and removes the tree, to be
 * extracted again from its blob, which is durable (blobcache_clean_tmp()). */
static int tree_rename(struct blobcache *bc, const char *rel, const char *hex)
{
	char note[80];
	int fd;

	snprintf(note, sizeof(note), BLOBCACHE_TREE_NOTE "%s", hex);
	fd = openat(bc->session_fd, note, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	close(fd);
	if (fsync(bc->session_fd) < 0)
		return -errno;
	pthread_mutex_lock(&bc->lock);
	bc->unsynced_trees++;
	pthread_mutex_unlock(&bc->lock);
	return blobcache_durable_rename(bc->root_fd, rel, -1, bc->extract_fd, hex);
}

static void remember_refusal(struct blobcache *bc, const char *hex, int err,
			     const struct tarx_error *why)
{
	struct xfail *x = calloc(1, sizeof(*x));

	if (!x)
		return;
	snprintf(x->hex, sizeof(x->hex), "%s", hex);
	x->err = err;
	x->why = *why;
	pthread_mutex_lock(&bc->lock);
	x->next = bc->failed;
	bc->failed = x;
	pthread_mutex_unlock(&bc->lock);
}

static bool tree_exists_at(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static int extract_job(void *p)
{
	struct extract_job *j = p;
	struct blobcache *bc = j->bc;
	const char *hex = hex_of(j->digest);
	struct tarx_limits lim = *j->lim;
	char rel[128], tmp[4300];
	int fd, ret;

	if (tree_trusted(bc, hex))
		return 0;
	fd = blobcache_open(bc, j->digest, j->size, j->fetch, j->arg);
	if (fd < 0)
		return fd;
	/* The tree counts toward cache_max: one bigger than the whole cache
	 * could never be kept. */
	if (bc->max_bytes && bc->max_bytes < lim.max_bytes)
		lim.max_bytes = bc->max_bytes;
	snprintf(rel, sizeof(rel), "%s/x.%.16s.%08x", bc->session, hex, (unsigned)rand());
	snprintf(tmp, sizeof(tmp), "%s/%s", bc->root, rel);
	ret = tarx_extract(fd, tmp, &lim, j->err, NULL);
	close(fd);
	if (ret == 0)
		ret = tree_rename(bc, rel, hex);
	if ((ret == -ENOTEMPTY || ret == -EEXIST) && tree_trusted(bc, hex))
		ret = 0;	/* another mount sharing the cache was first */
	if (ret < 0 || tree_exists_at(tmp))
		tarx_remove_tree(tmp);
	if (ret == -EPERM || ret == -EFBIG || ret == -EINVAL)
		remember_refusal(bc, hex, ret, j->err);
	return ret;
}

bool blobcache_extracted(struct blobcache *bc, const char *digest)
{
	return tree_trusted(bc, hex_of(digest));
}

int blobcache_extract(struct blobcache *bc, const char *digest, uint64_t size,
		      blobcache_fetch_fn fetch, void *arg, const struct tarx_limits *lim,
		      struct tarx_error *err)
{
	struct extract_job j = { bc, digest, size, fetch, arg, lim, err };
	const char *hex = hex_of(digest);
	char key[80];
	int ret;

	if (tree_trusted(bc, hex))
		return 0;
	pthread_mutex_lock(&bc->lock);
	for (struct xfail *x = bc->failed; x; x = x->next) {
		if (!strcmp(x->hex, hex)) {
			*err = x->why;
			err->repeated = true;
			ret = x->err;
			pthread_mutex_unlock(&bc->lock);
			return ret;
		}
	}
	pthread_mutex_unlock(&bc->lock);
	err->entry[0] = '\0';
	err->reason[0] = '\0';
	err->repeated = false;
	snprintf(key, sizeof(key), "extract:%s", hex);
	/* Pinned from download through extraction: evicting the blob then
	 * would take the tree with it. */
	blobcache_pin(bc, digest);
	ret = blobcache_single_flight(bc, key, extract_job, &j);
	if (ret == 0 && bc->max_bytes)
		blobcache_prune(bc, bc->max_bytes, 0, NULL, NULL);
	blobcache_unpin(bc, digest);
	/* A waiter's @err is still empty: look the reason up. */
	if (ret < 0 && !err->reason[0]) {
		pthread_mutex_lock(&bc->lock);
		for (struct xfail *x = bc->failed; x; x = x->next)
			if (!strcmp(x->hex, hex)) {
				*err = x->why;
				err->repeated = true;	/* the leader reported it */
			}
		pthread_mutex_unlock(&bc->lock);
	}
	return ret;
}

int blobcache_extracted_open(struct blobcache *bc, const char *digest, const char *rel,
			     int flags)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	struct stat st;
	long fd;
	int dfd;

	dfd = openat(bc->extract_fd, hex_of(digest), O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
							      O_CLOEXEC);
	if (dfd < 0)
		return errno == ENOENT || errno == ELOOP || errno == ENOTDIR ? -ESTALE : -errno;
	if (fstat(dfd, &st) < 0 || !cachedir_ours(&st)) {
		close(dfd);
		return -ESTALE;
	}
	while (*rel == '/')
		rel++;
	/* Reading or listing the tree is a use of its blob (LRU goes by the
	 * blob's mtime); a stat (O_PATH) is not worth a write. */
	if (!(flags & O_PATH))
		utimensat(bc->blobs_fd, hex_of(digest), NULL, AT_SYMLINK_NOFOLLOW);
	fd = syscall(SYS_openat2, dfd, *rel ? rel : ".", &how, sizeof(how));
	if (fd < 0 && errno == ENOSYS)	/* before Linux 5.6: follow no link at all */
		fd = open_nofollow_at(dfd, *rel ? rel : ".", flags);
	if (fd < 0)
		fd = -errno;
	close(dfd);
	return (int)fd;
}
