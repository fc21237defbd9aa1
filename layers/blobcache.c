/* blobcache.c - verified blob store with single-flight downloads. The
 * extracted trees are in blobtrees.c, pins and eviction in blobevict.c. */
#include "blobcache_impl.h"
#include "blobsink.h"
#include "cachedir.h"
#include "tarx.h"

#include <archive.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int blobcache_check(const char *root, char *why, size_t len)
{
	return cachedir_check_path(root, why, len);
}

/* The trees a dead session extracted and never synced (see tree_rename()
 * in blobtrees.c): they may be torn, so they go; their blobs are durable. */
static void remove_unsynced_trees(struct blobcache *bc, int session_fd)
{
	DIR *d = cachedir_opendir(session_fd, ".");
	size_t pl = strlen(BLOBCACHE_TREE_NOTE);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, BLOBCACHE_TREE_NOTE, pl) && strlen(e->d_name + pl) == 64 &&
		    !strchr(e->d_name + pl, '/') && e->d_name[pl] != '.')
			blobcache_tree_remove(bc, e->d_name + pl);
	closedir(d);
}

/* Remove what crashed processes left in tmp/: plain files, and session
 * directories whose owner no longer holds their lock (with the trees they
 * had not synced). Live sessions of other mounts sharing this cache are
 * left alone. */
static void clean_tmp(struct blobcache *bc)
{
	DIR *d = cachedir_opendir(bc->root_fd, "tmp");
	struct dirent *e;
	int fd;

	if (!d)
		return;
	fd = dirfd(d);
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
			remove_unsynced_trees(bc, sfd);
			snprintf(p, sizeof(p), "%s/tmp/%s", bc->root, e->d_name);
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

	ret = cachedir_mkdir_p(root);
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
	ret = cachedir_check(bc->root_fd, bc->root, true, NULL, 0);
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
		clean_tmp(bc);
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
		/* The trees we extracted reach the disk before the notes that
		 * would have them removed go (one syncfs for them all); if that
		 * fails, the notes stay for the next start. */
		if (!bc->unsynced_trees || syncfs(bc->session_fd) == 0) {
			snprintf(p, sizeof(p), "%s/%s", bc->root, bc->session);
			tarx_remove_tree(p);
		}
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
 * else can write? blobs/sha256 is private (cachedir_check()), so anything
 * else got there by accident or by root: dropped and fetched again. Not
 * hashed again: we hashed it before the rename, and fsync()ed it. */
static bool blob_trusted(const struct stat *st)
{
	return S_ISREG(st->st_mode) && cachedir_ours(st);
}

/* Open blobs/sha256/@hex if it is a blob we may serve (see blob_trusted());
 * anything else there is removed: -ENOENT, as when absent. */
static int open_trusted(struct blobcache *bc, const char *hex, struct stat *st)
{
	int fd;

	fd = openat(bc->blobs_fd, hex, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ELOOP)
			return -errno;
		unlinkat(bc->blobs_fd, hex, 0);	/* a symlink: never ours */
		return -ENOENT;
	}
	if (fstat(fd, st) < 0 || !blob_trusted(st)) {
		close(fd);
		unlinkat(bc->blobs_fd, hex, 0);
		return -ENOENT;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

static int open_existing(struct blobcache *bc, const char *digest, uint64_t size)
{
	const char *hex = hex_of(digest);
	struct stat st;
	int fd;

	fd = open_trusted(bc, hex, &st);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size == size)
		return fd;
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
int blobcache_durable_rename(int from_dfd, const char *from, int file_fd, int dfd, const char *name)
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
	ret = blobcache_durable_rename(bc->root_fd, tmp, tfd, bc->blobs_fd, hex_of(digest));
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

void blobcache_set_cancel(struct blobcache *bc, bool (*cancelled)(void))
{
	bc->cancelled = cancelled;
}

/* Wait under bc->lock for @f to be done: 0, or -EINTR once the waiter's
 * own cancelled() says so (asked about once a second). */
static int flight_wait(struct blobcache *bc, struct inflight *f)
{
	while (!f->done) {
		struct timespec ts;

		if (!bc->cancelled) {
			pthread_cond_wait(&f->cond, &bc->lock);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec++;
		pthread_cond_timedwait(&f->cond, &bc->lock, &ts);
		if (!f->done && bc->cancelled())
			return -EINTR;
	}
	return 0;
}

/* Run @fn once for @key however many threads ask at the same time: the
 * first runs it, the others wait and share its result (a waiter that is
 * cancelled leaves with -EINTR; the others go on waiting). */
int blobcache_single_flight(struct blobcache *bc, const char *key, int (*fn)(void *), void *arg)
{
	struct inflight *f, **pp;
	pthread_condattr_t ca;
	int ret;

	pthread_mutex_lock(&bc->lock);
	for (f = bc->inflight; f; f = f->next)
		if (!strcmp(f->key, key))
			break;
	if (f) {
		f->waiters++;
		ret = flight_wait(bc, f);
		if (ret == 0)
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
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->cond, &ca);
	pthread_condattr_destroy(&ca);
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
	ret = blobcache_single_flight(bc, key, download_job, &j);
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

	fd = open_trusted(bc, hex, &st);
	if (fd < 0)
		return fd;
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
