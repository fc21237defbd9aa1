/* blobcache.c - verified blob store with single-flight downloads. */
#include "blobcache.h"
#include "blobsink.h"
#include "tarx.h"

#include <archive.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <linux/openat2.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

/* A download or extraction in progress. Protected by blobcache.lock. */
struct inflight {
	char key[80];
	bool done;
	int result;
	unsigned waiters;
	pthread_cond_t cond;
	struct inflight *next;
};

/* An archive we refused: remembered so we do not extract it again. */
struct xfail {
	char hex[65];
	int err;
	struct tarx_error why;
	struct xfail *next;
};

/* The disk space of an extracted tree, counted toward cache_max. */
struct xsize {
	char hex[65];
	uint64_t bytes;
	struct xsize *next;
};

/* A blob someone has open: eviction leaves it alone. */
struct pin {
	char hex[65];
	unsigned count;
	struct pin *next;
};

struct blobcache {
	int root_fd;		/* the cache root, all paths relative to it */
	int blobs_fd;		/* blobs/sha256, fsync()ed after each rename into it */
	int extract_fd;		/* extract/sha256, likewise */
	char *root;		/* its absolute path, for libarchive */
	int session_fd;		/* our tmp/ subdirectory, flock()ed while we live */
	char session[64];	/* its path below the root: "tmp/s.XXXXXX" */
	uint64_t max_bytes;	/* 0: unbounded */
	pthread_mutex_t lock;
	struct xfail *failed;		/* lock */
	struct inflight *inflight;	/* lock */
	struct pin *pins;		/* lock */
	struct xsize *sizes;		/* lock */
	uint64_t downloads;		/* lock */
};

static int mkdir_p(const char *path)
{
	char *buf = strdup(path);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(buf, 0700) < 0 && errno != EEXIST) {
				ret = -errno;
				break;
			}
			*p = c;
			if (!c)
				break;
		}
	}
	free(buf);
	return ret;
}

static void explain(char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void explain(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

/* OpenSSH's StrictModes for a directory of the cache: a real directory,
 * ours, not writable by group or others (who could plant blobs). One that
 * others can read is made private (caches of older versions were 0755). */
static int dir_trusted(int fd, const char *path, char *why, size_t len)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode)) {
		explain(why, len, "%s is not a directory; remove it", path);
		return -ENOTDIR;
	}
	if (st.st_uid != geteuid()) {
		explain(why, len, "%s belongs to uid %u, not to this user (uid %u): its owner "
			"could plant content; use a cache directory of your own (-o cache=DIR)",
			path, (unsigned)st.st_uid, (unsigned)geteuid());
		return -EPERM;
	}
	if (st.st_mode & 022) {
		explain(why, len, "%s is writable by group or others (mode %04o): they could "
			"plant content; remove it (rm -rf %s) or, if you trust everything in it, "
			"chmod -R go-w %s", path, (unsigned)(st.st_mode & 07777), path, path);
		return -EPERM;
	}
	if (st.st_mode & 077)
		fchmod(fd, 0700);
	return 0;
}

/* The directories above the cache: owned by root or us, and writable by
 * no one else unless sticky (/tmp), or whoever can write one could swap
 * the cache for theirs between two path lookups (libarchive works on
 * paths). */
static int ancestors_trusted(const char *real, char *why, size_t len)
{
	char *p = strdup(real);
	int ret = 0;

	if (!p)
		return -ENOMEM;
	for (char *slash = strrchr(p, '/'); slash; slash = strrchr(p, '/')) {
		struct stat st;

		slash[slash == p] = '\0';	/* keep "/" itself */
		if (stat(p, &st) < 0) {
			ret = -errno;
			break;
		}
		if (st.st_uid != 0 && st.st_uid != geteuid()) {
			explain(why, len, "%s, above the cache directory, belongs to uid %u: "
				"its owner could replace the cache; use a cache directory elsewhere",
				p, (unsigned)st.st_uid);
			ret = -EPERM;
			break;
		}
		if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)) {
			explain(why, len, "%s, above the cache directory, is writable by group or "
				"others (mode %04o) and not sticky: they could replace the cache; "
				"chmod go-w %s or use a cache directory elsewhere", p,
				(unsigned)(st.st_mode & 07777), p);
			ret = -EPERM;
			break;
		}
		if (slash == p)
			break;
	}
	free(p);
	return ret;
}

/* The layout's directories, each created 0700 when missing and checked. */
static const char *const layout_dirs[] = {
	"blobs", "blobs/sha256", "extract", "extract/sha256", "tmp",
};

/* Create and check the layout under the open root @root_fd (whose real
 * path is @real). */
static int layout_trusted(int root_fd, const char *real, bool create, char *why, size_t len)
{
	char path[4200];
	int ret;

	ret = ancestors_trusted(real, why, len);
	if (ret == 0)
		ret = dir_trusted(root_fd, real, why, len);
	for (size_t i = 0; ret == 0 && i < sizeof(layout_dirs) / sizeof(layout_dirs[0]); i++) {
		int fd;

		snprintf(path, sizeof(path), "%s/%s", real, layout_dirs[i]);
		if (create && mkdirat(root_fd, layout_dirs[i], 0700) < 0 && errno != EEXIST) {
			explain(why, len, "cannot create %s: %s", path, strerror(errno));
			return -errno;
		}
		fd = openat(root_fd, layout_dirs[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			explain(why, len, "%s: %s", path,
				errno == ELOOP ? "a symbolic link, not a directory; remove it" :
						 strerror(errno));
			return ret;
		}
		ret = dir_trusted(fd, path, why, len);
		close(fd);
	}
	return ret;
}

int blobcache_check(const char *root, char *why, size_t len)
{
	char *real = realpath(root, NULL);
	int fd, ret;

	if (!real) {
		ret = -errno;
		explain(why, len, "%s: %s", root, strerror(errno));
		return ret;
	}
	fd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		explain(why, len, "%s: %s", real, strerror(errno));
	} else {
		ret = layout_trusted(fd, real, false, why, len);
		close(fd);
	}
	free(real);
	return ret;
}

/* Remove what crashed processes left in tmp/: plain files, and session
 * directories whose owner no longer holds their lock. Live sessions of
 * other mounts sharing this cache are left alone. */
static void clean_tmp(int root_fd, const char *root)
{
	int fd = openat(root_fd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *e;

	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((e = readdir(d))) {
		char p[4200];
		int sfd;

		if (e->d_name[0] == '.')
			continue;
		if (unlinkat(fd, e->d_name, 0) == 0)
			continue;
		sfd = openat(fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sfd < 0)
			continue;
		if (flock(sfd, LOCK_EX | LOCK_NB) == 0) {
			snprintf(p, sizeof(p), "%s/tmp/%s", root, e->d_name);
			tarx_remove_tree(p);
		}
		close(sfd);
	}
	closedir(d);
}

/* Our own tmp/ subdirectory, locked for as long as we live. Between our
 * mkdir and our flock another mount's clean_tmp() may take the lock of
 * the new, empty directory and remove it: then our flock fails, or
 * succeeds on a directory no longer linked; either way we try again under
 * another name. */
static int session_open(struct blobcache *bc)
{
	for (int tries = 0; tries < 16; tries++) {
		struct stat st;

		snprintf(bc->session, sizeof(bc->session), "tmp/s.%08x%04x", (unsigned)rand(),
			 (unsigned)getpid() & 0xffff);
		if (mkdirat(bc->root_fd, bc->session, 0700) < 0) {
			if (errno == EEXIST)
				continue;
			return -errno;
		}
		bc->session_fd = openat(bc->root_fd, bc->session,
					O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (bc->session_fd < 0) {
			if (errno == ENOENT)
				continue;
			return -errno;
		}
		if (flock(bc->session_fd, LOCK_EX | LOCK_NB) == 0 &&
		    fstat(bc->session_fd, &st) == 0 && st.st_nlink > 0)
			return 0;
		close(bc->session_fd);
		bc->session_fd = -1;
	}
	return -EEXIST;
}

int blobcache_new(const char *root, unsigned flags, struct blobcache **out)
{
	struct blobcache *bc;
	int ret;

	ret = mkdir_p(root);
	if (ret < 0)
		return ret;
	bc = calloc(1, sizeof(*bc));
	if (!bc)
		return -ENOMEM;
	bc->session_fd = bc->blobs_fd = bc->extract_fd = -1;
	bc->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bc->root_fd < 0) {
		ret = -errno;
		goto out_free;
	}
	bc->root = realpath(root, NULL);
	if (!bc->root) {
		ret = -errno;
		goto out_close;
	}
	/* blobcache_check() says what is wrong with a refused layout. */
	ret = layout_trusted(bc->root_fd, bc->root, true, NULL, 0);
	if (ret < 0)
		goto out_close;
	bc->blobs_fd = openat(bc->root_fd, "blobs/sha256",
			      O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	bc->extract_fd = openat(bc->root_fd, "extract/sha256",
				O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (bc->blobs_fd < 0 || bc->extract_fd < 0) {
		ret = -errno;
		goto out_close;
	}
	if (!(flags & BLOBCACHE_READONLY)) {
		clean_tmp(bc->root_fd, bc->root);
		ret = session_open(bc);
		if (ret < 0)
			goto out_close;
	}
	pthread_mutex_init(&bc->lock, NULL);
	*out = bc;
	return 0;
out_close:
	if (bc->session_fd >= 0)
		close(bc->session_fd);
	if (bc->blobs_fd >= 0)
		close(bc->blobs_fd);
	if (bc->extract_fd >= 0)
		close(bc->extract_fd);
	free(bc->root);
	close(bc->root_fd);
out_free:
	free(bc);
	return ret;
}

void blobcache_free(struct blobcache *bc)
{
	if (!bc)
		return;
	if (bc->session_fd >= 0) {
		char p[4200];
		snprintf(p, sizeof(p), "%s/%s", bc->root, bc->session);
		tarx_remove_tree(p);
		close(bc->session_fd);
	}
	close(bc->blobs_fd);
	close(bc->extract_fd);
	close(bc->root_fd);
	while (bc->pins) {
		struct pin *x = bc->pins;
		bc->pins = x->next;
		free(x);
	}
	while (bc->sizes) {
		struct xsize *x = bc->sizes;
		bc->sizes = x->next;
		free(x);
	}
	while (bc->failed) {
		struct xfail *x = bc->failed;
		bc->failed = x->next;
		free(x);
	}
	free(bc->root);
	pthread_mutex_destroy(&bc->lock);
	free(bc);
}

uint64_t blobcache_downloads(struct blobcache *bc)
{
	uint64_t n;

	pthread_mutex_lock(&bc->lock);
	n = bc->downloads;
	pthread_mutex_unlock(&bc->lock);
	return n;
}

static const char *hex_of(const char *digest)
{
	return digest + 7;	/* callers pass validated sha256:<hex> */
}

void blobcache_digest_of(const void *buf, size_t len, char out[72])
{
	unsigned char md[32];
	unsigned int mdlen = 0;

	EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL);
	memcpy(out, "sha256:", 7);
	blobsink_hex(md, out + 7);
}

#define FETCH_SOURCES_MAX 9	/* mirrors and origin asked for one blob */

/* Does the file at @fd hash to @hex? */
static bool file_matches(int fd, const char *hex)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char buf[65536], out[32];
	unsigned int outlen = 0;
	char got[65];
	off_t off = 0;
	ssize_t n;
	bool ok = false;

	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		goto out;
	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		EVP_DigestUpdate(md, buf, (size_t)n);
		off += n;
	}
	if (n == 0 && EVP_DigestFinal_ex(md, out, &outlen) == 1) {
		blobsink_hex(out, got);
		ok = strcmp(got, hex) == 0;
	}
out:
	EVP_MD_CTX_free(md);
	return ok;
}

/* Is the file at @fd one we may serve: a regular file of ours that no one
 * else can write? blobs/sha256 is private (layout_trusted()), so anything
 * else got there by accident or by root: dropped and fetched again. Not
 * hashed again: we hashed it before the rename, and fsync()ed it. */
static bool blob_trusted(const struct stat *st)
{
	return S_ISREG(st->st_mode) && st->st_uid == geteuid() && !(st->st_mode & 022);
}

static int open_existing(struct blobcache *bc, const char *digest, uint64_t size)
{
	const char *hex = hex_of(digest);
	struct stat st;
	int fd;

	fd = openat(bc->blobs_fd, hex, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ELOOP)
			return -errno;
		unlinkat(bc->blobs_fd, hex, 0);	/* a symlink: never ours */
		return -ENOENT;
	}
	if (fstat(fd, &st) < 0 || !blob_trusted(&st)) {
		close(fd);
		unlinkat(bc->blobs_fd, hex, 0);
		return -ENOENT;
	}
	if ((uint64_t)st.st_size == size) {
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		return fd;
	}
	/* Sizes disagree: either the descriptor lies (the file is fine:
	 * refuse) or the file was cut short by a crash of the machine (drop
	 * it and fetch again). Rare, so hashing is affordable. */
	if (file_matches(fd, hex)) {
		close(fd);
		return -EBADMSG;
	}
	close(fd);
	unlinkat(bc->blobs_fd, hex, 0);
	return -ENOENT;
}

#define REFETCH_MAX BLOBCACHE_REFETCH_MAX
#define REFETCH_BACKOFF_MS 100

void blobcache_refetch_wait(int n)
{
	unsigned ms = REFETCH_BACKOFF_MS << (n - 1);
	struct timespec ts;

	ms += (unsigned)rand() % (ms / 2 + 1);
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Make the rename of @name into the directory @dfd durable: the file's
 * bytes reach the disk before its name does, and the name before we say
 * it is there (as containerd's content writer does). */
static int durable_rename(int from_dfd, const char *from, int file_fd, int dfd, const char *name)
{
	if (file_fd >= 0 && fsync(file_fd) < 0)
		return -errno;
	if (renameat(from_dfd, from, dfd, name) < 0)
		return -errno;
	if (fsync(dfd) < 0)
		return -errno;
	return 0;
}

/* Fetch into @sink, up to the verified digest; 0 or -errno. @refetch: how
 * often wrong bytes from the same source are fetched again. The sink
 * hashes the bytes as they arrive, so the digest is known the moment the
 * last byte is written. */
static int fetch_verified(struct blobsink *sink, const char *digest, uint64_t size,
			  int refetch, blobcache_fetch_fn fetch, void *arg)
{
	uint64_t got = 0;
	char hex[65];
	int ret, same = 0;

	/* Bounded: a source list is short, a broken one must not loop. */
	for (int attempt = 0;; attempt++) {
		bool retry = false;

		ret = fetch(arg, blobsink_write, sink, &retry);
		if (ret == 0)
			ret = blobsink_finish(sink, hex, &got);
		if (ret == 0 && (got != size || strcmp(hex, hex_of(digest)) != 0))
			ret = -EBADMSG;
		if (ret != -EBADMSG || attempt >= FETCH_SOURCES_MAX + REFETCH_MAX)
			return ret;
		/* Wrong bytes from a mirror: the next source. From the last
		 * source: the same again, a few times, after a pause. */
		if (!retry) {
			if (same >= refetch)
				return ret;
			blobcache_refetch_wait(++same);
		}
		ret = blobsink_write(sink, NULL, 0);
		if (ret < 0)
			return ret;
	}
}

/* Download into tmp/, verify, rename into blobs/. Called unlocked. */
static int download(struct blobcache *bc, const char *digest, uint64_t size, int refetch,
		    blobcache_fetch_fn fetch, void *arg)
{
	char tmp[128];
	struct blobsink *sink = NULL;
	int tfd = -1, ret;

	/* mkstemp() wants a path; we work relative to the root fd instead. */
	for (int tries = 0; tries < 16 && tfd < 0; tries++) {
		char name[128];
		snprintf(name, sizeof(name), "%s/%.16s.%08x%08x", bc->session, hex_of(digest),
			 (unsigned)rand(),
			 (unsigned)rand());
		tfd = openat(bc->root_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
		if (tfd >= 0)
			snprintf(tmp, sizeof(tmp), "%s", name);
		else if (errno != EEXIST)
			return -errno;
	}
	if (tfd < 0)
		return -EEXIST;
	ret = blobsink_new(tfd, size, &sink);
	if (ret < 0)
		goto out_unlink;
	ret = fetch_verified(sink, digest, size, refetch, fetch, arg);
	if (ret < 0)
		goto out_unlink;
	ret = durable_rename(bc->root_fd, tmp, tfd, bc->blobs_fd, hex_of(digest));
	if (ret < 0)
		goto out_unlink;
	blobsink_free(sink);
	close(tfd);
	return 0;
out_unlink:
	blobsink_free(sink);
	close(tfd);
	unlinkat(bc->root_fd, tmp, 0);
	return ret;
}

/* Run @fn once for @key however many threads ask at the same time: the
 * first runs it, the others wait and share its result. */
static int single_flight(struct blobcache *bc, const char *key, int (*fn)(void *), void *arg)
{
	struct inflight *f, **pp;
	int ret;

	pthread_mutex_lock(&bc->lock);
	for (f = bc->inflight; f; f = f->next)
		if (!strcmp(f->key, key))
			break;
	if (f) {
		f->waiters++;
		while (!f->done)
			pthread_cond_wait(&f->cond, &bc->lock);
		ret = f->result;
		if (--f->waiters == 0) {
			pthread_cond_destroy(&f->cond);
			free(f);
		}
		pthread_mutex_unlock(&bc->lock);
		return ret;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		pthread_mutex_unlock(&bc->lock);
		return -ENOMEM;
	}
	snprintf(f->key, sizeof(f->key), "%s", key);
	pthread_cond_init(&f->cond, NULL);
	f->waiters = 1;	/* ourselves */
	f->next = bc->inflight;
	bc->inflight = f;
	pthread_mutex_unlock(&bc->lock);

	ret = fn(arg);

	pthread_mutex_lock(&bc->lock);
	for (pp = &bc->inflight; *pp != f; pp = &(*pp)->next)
		;
	*pp = f->next;
	f->done = true;
	f->result = ret;
	pthread_cond_broadcast(&f->cond);
	if (--f->waiters == 0) {
		pthread_cond_destroy(&f->cond);
		free(f);
	}
	pthread_mutex_unlock(&bc->lock);
	return ret;
}

struct download_job {
	struct blobcache *bc;
	const char *digest;
	uint64_t size;
	int refetch;
	blobcache_fetch_fn fetch;
	void *arg;
};

static int download_job(void *p)
{
	struct download_job *j = p;
	int fd;

	/* It may have landed while we waited to lead. */
	fd = open_existing(j->bc, j->digest, j->size);
	if (fd >= 0) {
		close(fd);
		return 0;
	}
	if (fd != -ENOENT)
		return fd;
	pthread_mutex_lock(&j->bc->lock);
	j->bc->downloads++;
	pthread_mutex_unlock(&j->bc->lock);
	return download(j->bc, j->digest, j->size, j->refetch, j->fetch, j->arg);
}

static int open_or_fetch(struct blobcache *bc, const char *digest, uint64_t size, int refetch,
			 blobcache_fetch_fn fetch, void *arg)
{
	struct download_job j = { bc, digest, size, refetch, fetch, arg };
	char key[80];
	int fd, ret;

	fd = open_existing(bc, digest, size);
	if (fd >= 0) {
		/* Its mtime is its last use: eviction goes by it. */
		futimens(fd, NULL);
		return fd;
	}
	if (fd != -ENOENT || !fetch)
		return fd;
	snprintf(key, sizeof(key), "blob:%s", hex_of(digest));
	/* Pinned from download to open: making room for it must not
	 * evict it (with cache_max below its size it would be the only
	 * candidate). */
	blobcache_pin(bc, digest);
	ret = single_flight(bc, key, download_job, &j);
	if (ret == 0 && bc->max_bytes)
		blobcache_prune(bc, bc->max_bytes, 0, NULL, NULL);
	if (ret == 0)
		ret = open_existing(bc, digest, size);
	blobcache_unpin(bc, digest);
	return ret;
}

int blobcache_open(struct blobcache *bc, const char *digest, uint64_t size,
		   blobcache_fetch_fn fetch, void *arg)
{
	return open_or_fetch(bc, digest, size, REFETCH_MAX, fetch, arg);
}

struct membuf {
	const char *p;
	size_t len;
};

static int membuf_fetch(void *arg, reg_sink_fn sink, void *sink_arg, bool *retry)
{
	struct membuf *m = arg;

	(void)retry;
	return sink(sink_arg, m->p, m->len);
}

int blobcache_put(struct blobcache *bc, const char *digest, const void *buf, size_t len)
{
	struct membuf m = { buf, len };
	int fd;

	/* The same bytes again would not hash any better: no refetch. */
	fd = open_or_fetch(bc, digest, len, 0, membuf_fetch, &m);
	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

int blobcache_read_all(struct blobcache *bc, const char *digest, size_t max, char **out,
		       size_t *out_len)
{
	const char *hex = hex_of(digest);
	char check[72];
	struct stat st;
	char *buf;
	size_t got = 0;
	int fd, ret;

	fd = openat(bc->blobs_fd, hex, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ELOOP)
			return -errno;
		unlinkat(bc->blobs_fd, hex, 0);	/* a symlink: never ours */
		return -ENOENT;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out_close;
	}
	if (!blob_trusted(&st)) {
		unlinkat(bc->blobs_fd, hex, 0);
		ret = -ENOENT;
		goto out_close;
	}
	if ((uint64_t)st.st_size > max) {
		ret = -EFBIG;
		goto out_close;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out_close;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
		if (n <= 0) {
			free(buf);
			ret = n < 0 ? -errno : -EIO;
			goto out_close;
		}
		got += (size_t)n;
	}
	buf[got] = '\0';
	/* Small (manifests): cheap to check, unlike a blob served by fd. */
	blobcache_digest_of(buf, got, check);
	if (strcmp(check, digest)) {
		free(buf);
		unlinkat(bc->blobs_fd, hex, 0);
		ret = -ENOENT;
		goto out_close;
	}
	*out = buf;
	*out_len = got;
	ret = 0;
out_close:
	close(fd);
	return ret;
}

void blobcache_print_versions(FILE *f)
{
	fprintf(f, "%s\n", OpenSSL_version(OPENSSL_VERSION));
	fprintf(f, "%s\n", archive_version_details());
}

int blobcache_root_fd(struct blobcache *bc)
{
	return bc->root_fd;
}

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
static void remove_extracted(struct blobcache *bc, const char *hex)
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
	if (S_ISDIR(st.st_mode) && st.st_uid == geteuid() && !(st.st_mode & 022))
		return true;
	remove_extracted(bc, hex);
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
static uint64_t tree_bytes(struct blobcache *bc, const char *hex)
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

static void forget_tree_bytes(struct blobcache *bc, const char *hex)
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

/* Make an extracted tree's move from @rel (below the root) to
 * extract/sha256/@hex durable: libarchive does not fsync what it writes,
 * and a tree found after a crash is trusted like a blob. One syncfs()
 * flushes it all, cheaper than an fsync() per file. */
static int tree_rename(struct blobcache *bc, const char *rel, const char *hex)
{
	if (syncfs(bc->session_fd) < 0)
		return -errno;
	return durable_rename(bc->root_fd, rel, -1, bc->extract_fd, hex);
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
	if (ret < 0)
		tarx_remove_tree(tmp);
	if (ret == -EPERM || ret == -EFBIG || ret == -EINVAL)
		remember_refusal(bc, hex, ret, j->err);
	return ret;
}

int blobcache_extract(struct blobcache *bc, const char *digest, uint64_t size,
		      blobcache_fetch_fn fetch, void *arg, const struct tarx_limits *lim,
		      struct tarx_error *err)
{
	struct extract_job j = { bc, digest, size, fetch, arg, lim, err };
	const char *hex = hex_of(digest);
	char key[80];
	int ret;

	if (tree_trusted(bc, hex)) {
		/* A use of the tree is a use of its blob: LRU goes by it. */
		utimensat(bc->blobs_fd, hex, NULL, AT_SYMLINK_NOFOLLOW);
		return 0;
	}
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
	ret = single_flight(bc, key, extract_job, &j);
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
	if (fstat(dfd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 022)) {
		close(dfd);
		return -ESTALE;
	}
	while (*rel == '/')
		rel++;
	fd = syscall(SYS_openat2, dfd, *rel ? rel : ".", &how, sizeof(how));
	if (fd < 0 && errno == ENOSYS)	/* before Linux 5.6: follow no link at all */
		fd = open_nofollow_at(dfd, *rel ? rel : ".", flags);
	if (fd < 0)
		fd = -errno;
	close(dfd);
	return (int)fd;
}

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
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *e;
	DIR *d;
	int ret = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
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
	b = bsearch(&key, t->blobs->v, t->blobs->n, sizeof(key), by_hex);
	if (!b) {
		b = ents_add(&t->trees, hex);
		if (!b)
			return -ENOMEM;
		b->used = st->st_mtim;
	}
	b->has_tree = true;
	b->tree = tree_bytes(t->bc, hex);
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
			remove_extracted(bc, v[i].hex);
			forget_tree_bytes(bc, v[i].hex);
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
