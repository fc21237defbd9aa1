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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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

/* A blob someone has open: eviction leaves it alone. */
struct pin {
	char hex[65];
	unsigned count;
	struct pin *next;
};

struct blobcache {
	int root_fd;		/* the cache root, all paths relative to it */
	char *root;		/* its absolute path, for libarchive */
	int session_fd;		/* our tmp/ subdirectory, flock()ed while we live */
	char session[64];	/* its path below the root: "tmp/s.XXXXXX" */
	uint64_t max_bytes;	/* 0: unbounded */
	pthread_mutex_t lock;
	struct xfail *failed;		/* lock */
	struct inflight *inflight;	/* lock */
	struct pin *pins;		/* lock */
	uint64_t downloads;		/* lock */
};

static int mkdir_p_at(int dfd, const char *path)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdirat(dfd, buf, 0755) < 0 && errno != EEXIST)
				return -errno;
			*p = c;
			if (!c)
				return 0;
		}
	}
}

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
			if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
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

/* Our own tmp/ subdirectory, locked for as long as we live. */
static int session_open(struct blobcache *bc)
{
	for (int tries = 0; tries < 16; tries++) {
		snprintf(bc->session, sizeof(bc->session), "tmp/s.%08x%04x", (unsigned)rand(),
			 (unsigned)getpid() & 0xffff);
		if (mkdirat(bc->root_fd, bc->session, 0700) < 0) {
			if (errno == EEXIST)
				continue;
			return -errno;
		}
		bc->session_fd = openat(bc->root_fd, bc->session,
					O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (bc->session_fd < 0)
			return -errno;
		if (flock(bc->session_fd, LOCK_EX | LOCK_NB) < 0)
			return -errno;
		return 0;
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
	bc->session_fd = -1;
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
	ret = mkdir_p_at(bc->root_fd, "blobs/sha256");
	if (ret == 0)
		ret = mkdir_p_at(bc->root_fd, "extract/sha256");
	if (ret == 0)
		ret = mkdir_p_at(bc->root_fd, "tmp");
	if (ret < 0)
		goto out_close;
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
	close(bc->root_fd);
	while (bc->pins) {
		struct pin *x = bc->pins;
		bc->pins = x->next;
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

static int final_path(const char *digest, char out[96])
{
	snprintf(out, 96, "blobs/sha256/%s", hex_of(digest));
	return 0;
}

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

static int open_existing(struct blobcache *bc, const char *digest, uint64_t size)
{
	char path[96];
	struct stat st;
	int fd;

	final_path(digest, path);
	fd = openat(bc->root_fd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) == 0 && (uint64_t)st.st_size == size)
		return fd;
	/* Sizes disagree: either the descriptor lies (the file is fine:
	 * refuse) or the file was cut short by a crash of the machine (drop
	 * it and fetch again). Rare, so hashing is affordable. */
	if (file_matches(fd, hex_of(digest))) {
		close(fd);
		return -EBADMSG;
	}
	close(fd);
	unlinkat(bc->root_fd, path, 0);
	return -ENOENT;
}

/* Download into tmp/, verify, rename into blobs/. Called unlocked. The
 * sink hashes the bytes as they arrive, so the digest is known the moment
 * the last byte is written. */
static int download(struct blobcache *bc, const char *digest, uint64_t size,
		    blobcache_fetch_fn fetch, void *arg)
{
	char tmp[128], path[96], hex[65];
	struct blobsink *sink = NULL;
	uint64_t got = 0;
	int tfd = -1, ret;

	/* mkstemp() wants a path; we work relative to the root fd instead. */
	for (int tries = 0; tries < 16 && tfd < 0; tries++) {
		char name[128];
		snprintf(name, sizeof(name), "%s/%.16s.%08x%08x", bc->session, hex_of(digest),
			 (unsigned)rand(),
			 (unsigned)rand());
		tfd = openat(bc->root_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
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
	/* Bounded: a source list is short, a broken one must not loop. */
	for (int attempt = 0;; attempt++) {
		bool retry = false;

		ret = fetch(arg, blobsink_write, sink, &retry);
		if (ret == 0)
			ret = blobsink_finish(sink, hex, &got);
		if (ret == 0 && (got != size || strcmp(hex, hex_of(digest)) != 0))
			ret = -EBADMSG;
		if (ret != -EBADMSG || !retry || attempt >= FETCH_SOURCES_MAX)
			break;
		/* Wrong bytes from one source (a mirror): start over with the next. */
		ret = blobsink_write(sink, NULL, 0);
		if (ret < 0)
			break;
	}
	if (ret < 0)
		goto out_unlink;
	final_path(digest, path);
	if (renameat(bc->root_fd, tmp, bc->root_fd, path) < 0) {
		ret = -errno;
		goto out_unlink;
	}
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
	return download(j->bc, j->digest, j->size, j->fetch, j->arg);
}

int blobcache_open(struct blobcache *bc, const char *digest, uint64_t size,
		   blobcache_fetch_fn fetch, void *arg)
{
	struct download_job j = { bc, digest, size, fetch, arg };
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
	ret = single_flight(bc, key, download_job, &j);
	if (ret < 0)
		return ret;
	if (bc->max_bytes)
		blobcache_prune(bc, bc->max_bytes, 0, NULL, NULL);
	return open_existing(bc, digest, size);
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

	fd = blobcache_open(bc, digest, len, membuf_fetch, &m);
	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

int blobcache_read_all(struct blobcache *bc, const char *digest, size_t max, char **out,
		       size_t *out_len)
{
	char path[96];
	struct stat st;
	char *buf;
	size_t got = 0;
	int fd, ret;

	final_path(digest, path);
	fd = openat(bc->root_fd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
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

struct extract_job {
	struct blobcache *bc;
	const char *digest;
	uint64_t size;
	blobcache_fetch_fn fetch;
	void *arg;
	const struct tarx_limits *lim;
	struct tarx_error *err;
};

static int extract_job(void *p)
{
	struct extract_job *j = p;
	char final[128], tmp[4200];
	struct stat st;
	int fd, ret;

	snprintf(final, sizeof(final), "extract/sha256/%s", hex_of(j->digest));
	if (fstatat(j->bc->root_fd, final, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	fd = blobcache_open(j->bc, j->digest, j->size, j->fetch, j->arg);
	if (fd < 0)
		return fd;
	snprintf(tmp, sizeof(tmp), "%s/%s/x.%.16s.%08x", j->bc->root, j->bc->session,
		 hex_of(j->digest),
		 (unsigned)rand());
	ret = tarx_extract(fd, tmp, j->lim, j->err, NULL);
	close(fd);
	if (ret == 0) {
		char dst[4200];
		snprintf(dst, sizeof(dst), "%s/%s", j->bc->root, final);
		if (rename(tmp, dst) < 0)
			ret = -errno;
	}
	if (ret < 0)
		tarx_remove_tree(tmp);
	if (ret == -EPERM || ret == -EFBIG || ret == -EINVAL) {
		struct xfail *x = calloc(1, sizeof(*x));
		if (x) {
			snprintf(x->hex, sizeof(x->hex), "%s", hex_of(j->digest));
			x->err = ret;
			x->why = *j->err;
			pthread_mutex_lock(&j->bc->lock);
			x->next = j->bc->failed;
			j->bc->failed = x;
			pthread_mutex_unlock(&j->bc->lock);
		}
	}
	return ret;
}

int blobcache_extract(struct blobcache *bc, const char *digest, uint64_t size,
		      blobcache_fetch_fn fetch, void *arg, const struct tarx_limits *lim,
		      struct tarx_error *err)
{
	struct extract_job j = { bc, digest, size, fetch, arg, lim, err };
	char key[80], final[128];
	struct stat st;
	int ret;

	snprintf(final, sizeof(final), "extract/sha256/%s", hex_of(digest));
	if (fstatat(bc->root_fd, final, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	pthread_mutex_lock(&bc->lock);
	for (struct xfail *x = bc->failed; x; x = x->next) {
		if (!strcmp(x->hex, hex_of(digest))) {
			*err = x->why;
			err->repeated = true;
			ret = x->err;
			pthread_mutex_unlock(&bc->lock);
			return ret;
		}
	}
	pthread_mutex_unlock(&bc->lock);
	err->entry[0] = '\0';
	err->reason = NULL;
	err->repeated = false;
	snprintf(key, sizeof(key), "extract:%s", hex_of(digest));
	ret = single_flight(bc, key, extract_job, &j);
	/* A waiter's @err is still empty: look the reason up. */
	if (ret < 0 && !err->reason) {
		pthread_mutex_lock(&bc->lock);
		for (struct xfail *x = bc->failed; x; x = x->next)
			if (!strcmp(x->hex, hex_of(digest))) {
				*err = x->why;
				err->repeated = true;	/* the leader reported it */
			}
		pthread_mutex_unlock(&bc->lock);
	}
	return ret;
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

struct blob_ent {
	char hex[65];
	uint64_t size;
	struct timespec used;
};

static bool is_hex64(const char *s)
{
	for (int i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[64] == '\0';
}

/* Every blob in blobs/sha256 with its size and last use. */
static int scan(struct blobcache *bc, struct blob_ent **out, size_t *n, uint64_t *total)
{
	struct blob_ent *v = NULL;
	size_t cap = 0;
	struct dirent *e;
	DIR *d;
	int fd;

	*n = 0;
	*total = 0;
	fd = openat(bc->root_fd, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((e = readdir(d))) {
		struct stat st;
		if (!is_hex64(e->d_name) || fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			struct blob_ent *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
		}
		memcpy(v[*n].hex, e->d_name, sizeof(v[*n].hex));	/* 64 hex + NUL */
		v[*n].size = (uint64_t)st.st_size;
		v[*n].used = st.st_mtim;
		*total += (uint64_t)st.st_size;
		(*n)++;
	}
	closedir(d);
	*out = v;
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
		char path[128];
		if (!old && (!max_bytes || total <= max_bytes))
			break;
		if (pinned(bc, v[i].hex))
			continue;	/* open or running: never evicted */
		snprintf(path, sizeof(path), "blobs/sha256/%s", v[i].hex);
		if (unlinkat(bc->root_fd, path, 0) < 0)
			continue;
		snprintf(path, sizeof(path), "%s/extract/sha256/%s", bc->root, v[i].hex);
		tarx_remove_tree(path);
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
	size_t n;
	int ret;

	ret = scan(bc, &v, &n, &info.bytes);
	if (ret < 0)
		return ret;
	info.blobs = n;
	for (size_t i = 0; i < n; i++) {
		if (!info.oldest || v[i].used.tv_sec < info.oldest)
			info.oldest = v[i].used.tv_sec;
		if (v[i].used.tv_sec > info.newest)
			info.newest = v[i].used.tv_sec;
	}
	free(v);
	int fd = openat(bc->root_fd, "extract/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (is_hex64(e->d_name))
			info.extracted++;
	if (d)
		closedir(d);
	else if (fd >= 0)
		close(fd);
	*out = info;
	return 0;
}
