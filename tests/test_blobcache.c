/* test_blobcache.c - the verified cache: store, verify, reject, single
 * flight, crash leftovers. */
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/openat2.h>
#include <sys/syscall.h>

#include <archive.h>
#include <archive_entry.h>

#include "blobcache.h"
#include "check.h"

static char root[256];

static int exists(const char *rel)
{
	char p[512];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	return stat(p, &st) == 0;
}

struct src {
	const char *data;
	size_t len;
	int calls;
	int fail_first;	/* deliver garbage then restart, as a retry would */
	size_t chunk;	/* bytes per sink call, 3 when 0 */
};

static int fetch(void *arg, reg_sink_fn sink, void *sink_arg, bool *retry)
{
	struct src *s = arg;
	int ret;

	(void)retry;
	__atomic_add_fetch(&s->calls, 1, __ATOMIC_SEQ_CST);
	usleep(20000);	/* widen the window for concurrent opens */
	if (s->fail_first) {
		ret = sink(sink_arg, "xx", 2);
		if (ret == 0)
			ret = sink(sink_arg, NULL, 0);
		if (ret < 0)
			return ret;
	}
	size_t step = s->chunk ? s->chunk : 3;
	for (size_t off = 0; off < s->len; off += step) {
		size_t n = s->len - off < step ? s->len - off : step;
		ret = sink(sink_arg, s->data + off, n);
		if (ret < 0)
			return ret;
	}
	return 0;
}

struct opener {
	struct blobcache *bc;
	const char *digest;
	struct src *src;
	int fd;
};

static void *open_thread(void *p)
{
	struct opener *o = p;

	o->fd = blobcache_open(o->bc, o->digest, o->src->len, fetch, o->src);
	return NULL;
}

/* A source that restarts a big blob (as a Range resume the server
 * ignored) many times: the hash thread must never take the file cut to
 * nothing by a restart for a short blob (issue 12: a good >= 4 MiB
 * download failed with EBADMSG). */
struct restarter {
	const char *data;
	size_t len;
	int restarts;
};

static int fetch_restarting(void *arg, reg_sink_fn sink, void *sink_arg, bool *retry)
{
	struct restarter *r = arg;
	int ret;

	(void)retry;
	for (int i = 0; i <= r->restarts; i++) {
		if (i > 0 && (ret = sink(sink_arg, NULL, 0)) < 0)
			return ret;
		size_t upto = i == r->restarts ? r->len : r->len / 2 + (size_t)i * 4096;
		for (size_t off = 0; off < upto; off += 65536) {
			size_t n = upto - off < 65536 ? upto - off : 65536;
			if ((ret = sink(sink_arg, r->data + off, n)) < 0)
				return ret;
		}
	}
	return 0;
}

static void test_restarts_of_a_big_blob_verify(void)
{
	size_t len = 5u << 20;
	char *big = malloc(len), d[72];
	struct blobcache *bc;
	int fd;

	for (size_t i = 0; i < len; i++)
		big[i] = (char)(i * 2246822519u >> 11);
	blobcache_digest_of(big, len, d);
	CHECK(blobcache_new(root, 0, &bc) == 0);
	for (int round = 0; round < 4; round++) {
		struct restarter r = { big, len, 40 };
		fd = blobcache_open(bc, d, len, fetch_restarting, &r);
		CHECK(fd >= 0);
		if (fd >= 0)
			close(fd);
		CHECK(blobcache_prune(bc, 1, 0, NULL, NULL) == 0);	/* evict: fetch again */
	}
	blobcache_free(bc);
	free(big);
}

/* Mounts sharing a cache start at the same time: none removes another's
 * new tmp session (between its mkdir and its flock), so every one can
 * download (issue 12). */
static void test_concurrent_starts_keep_their_sessions(void)
{
	enum { PROCS = 6, ROUNDS = 40 };
	pid_t pids[PROCS];
	int failed = 0;

	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		if (pids[p] == 0) {
			int bad = 0;
			for (int i = 0; i < ROUNDS; i++) {
				struct blobcache *bc;
				char d[72], data[32];
				snprintf(data, sizeof(data), "p%d-%d", p, i);
				blobcache_digest_of(data, strlen(data), d);
				srand((unsigned)(getpid() * 7919 + i));
				if (blobcache_new(root, 0, &bc) < 0) {
					bad++;
					continue;
				}
				if (blobcache_put(bc, d, data, strlen(data)) < 0)
					bad++;
				blobcache_free(bc);
			}
			_exit(bad ? 1 : 0);
		}
	}
	for (int p = 0; p < PROCS; p++) {
		int status = -1;
		waitpid(pids[p], &status, 0);
		failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	CHECK(failed == 0);
}

static mode_t mode_of(const char *rel)
{
	char p[512];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	return lstat(p, &st) == 0 ? st.st_mode & 07777 : (mode_t)-1;
}

/* Everything private: directories 0700, blobs 0400, whatever the umask. */
static void test_private_modes(void)
{
	struct blobcache *bc;
	char d[72], path[128];
	mode_t old = umask(0);

	blobcache_digest_of("private", 7, d);
	CHECK(blobcache_new(root, 0, &bc) == 0);
	CHECK(blobcache_put(bc, d, "private", 7) == 0);
	umask(old);
	CHECK(mode_of("") == 0700);
	CHECK(mode_of("blobs") == 0700 && mode_of("blobs/sha256") == 0700);
	CHECK(mode_of("extract") == 0700 && mode_of("extract/sha256") == 0700);
	CHECK(mode_of("tmp") == 0700);
	snprintf(path, sizeof(path), "blobs/sha256/%s", d + 7);
	CHECK(mode_of(path) == 0400);
	blobcache_free(bc);
}

/* StrictModes: a layout others can write, or that is not ours, is refused
 * with the path and the fix; one others can only read is made private. */
static void test_refuses_what_others_can_write(void)
{
	static const char *const dirs[] = { "", "blobs", "blobs/sha256", "extract/sha256", "tmp" };
	struct blobcache *bc;
	char p[512], why[1024];

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(p, sizeof(p), "%s%s%s", root, *dirs[i] ? "/" : "", dirs[i]);
		CHECK(chmod(p, 0777) == 0);
		CHECK(blobcache_new(root, 0, &bc) == -EPERM);
		why[0] = '\0';
		CHECK(blobcache_check(root, why, sizeof(why)) == -EPERM);
		CHECK(strstr(why, p) && strstr(why, "writable by group or others") &&
		      strstr(why, "chmod"));
		CHECK(chmod(p, 0755) == 0);
	}
	/* Readable by others (an older version's 0755): made private. */
	CHECK(blobcache_new(root, 0, &bc) == 0);
	blobcache_free(bc);
	CHECK(mode_of("") == 0700 && mode_of("blobs/sha256") == 0700);
	/* Someone else's: refused (as root we can make it someone else's). */
	if (geteuid() == 0) {
		snprintf(p, sizeof(p), "%s/extract", root);
		CHECK(chown(p, 65534, 65534) == 0);
		CHECK(blobcache_new(root, 0, &bc) == -EPERM);
		CHECK(blobcache_check(root, why, sizeof(why)) == -EPERM);
		CHECK(strstr(why, p) && strstr(why, "uid 65534"));
		CHECK(chown(p, 0, 0) == 0);
	}
	/* A directory above the cache that others can write, not sticky. */
	char top[300], nested[400];
	snprintf(top, sizeof(top), "%s/open", root);
	snprintf(nested, sizeof(nested), "%s/cache", top);
	CHECK(mkdir(top, 0700) == 0 && chmod(top, 0777) == 0);
	CHECK(blobcache_new(nested, 0, &bc) == -EPERM);
	CHECK(blobcache_check(nested, why, sizeof(why)) == -EPERM);
	CHECK(strstr(why, top) && strstr(why, "not sticky"));
	CHECK(chmod(top, 01777) == 0);	/* as /tmp: fine */
	CHECK(blobcache_new(nested, 0, &bc) == 0);
	blobcache_free(bc);
	snprintf(p, sizeof(p), "rm -rf '%s'", top);
	CHECK(system(p) == 0);
}

/* A blob is served only if it is a regular file of ours: a symlink or
 * another user's file of the right size is dropped and fetched again. */
static void test_planted_blobs_are_fetched_again(void)
{
	const char *good = "the real bytes\n";
	struct src s = { good, strlen(good), 0, 0, 0 };
	struct blobcache *bc;
	char d[72], path[512], target[512], buf[64];
	int fd;

	blobcache_digest_of(good, strlen(good), d);
	snprintf(path, sizeof(path), "%s/blobs/sha256/%s", root, d + 7);
	snprintf(target, sizeof(target), "%s/secret", root);
	FILE *f = fopen(target, "w");
	fputs("a secret, 15 b\n", f);	/* the same size */
	fclose(f);
	CHECK(blobcache_new(root, 0, &bc) == 0);
	for (int kind = 0; kind < 2; kind++) {
		unlink(path);
		if (kind == 0) {
			CHECK(symlink(target, path) == 0);
		} else {
			if (geteuid() != 0)
				break;
			CHECK(link(target, path) == 0 && chown(path, 65534, 65534) == 0);
		}
		int calls = s.calls;
		fd = blobcache_open(bc, d, strlen(good), fetch, &s);
		CHECK(fd >= 0 && s.calls == calls + 1);
		memset(buf, 0, sizeof(buf));
		CHECK(fd >= 0 && pread(fd, buf, sizeof(buf), 0) == (ssize_t)strlen(good));
		CHECK(!strcmp(buf, good));
		if (fd >= 0)
			close(fd);
	}
	blobcache_free(bc);
	unlink(target);
}

/* Wrong bytes from the last source are fetched again, up to 3 times. */
struct flaky {
	const char *data;
	size_t len;
	int bad;	/* the first @bad deliveries have a flipped byte */
	int calls;
};

static int fetch_flaky(void *arg, reg_sink_fn sink, void *sink_arg, bool *retry)
{
	struct flaky *f = arg;
	char buf[64];

	(void)retry;
	memcpy(buf, f->data, f->len);
	if (f->calls++ < f->bad)
		buf[f->len / 2] ^= 1;
	return sink(sink_arg, buf, f->len);
}

static void test_corruption_is_fetched_again(void)
{
	const char *data = "bytes that flip in transit";
	struct blobcache *bc;
	char d[72];
	int fd;

	blobcache_digest_of(data, strlen(data), d);
	CHECK(blobcache_new(root, 0, &bc) == 0);
	struct flaky twice = { data, strlen(data), 2, 0 };
	fd = blobcache_open(bc, d, strlen(data), fetch_flaky, &twice);
	CHECK(fd >= 0 && twice.calls == 3);
	if (fd >= 0)
		close(fd);
	CHECK(blobcache_prune(bc, 1, 0, NULL, NULL) == 0);
	struct flaky always = { data, strlen(data), 100, 0 };
	CHECK(blobcache_open(bc, d, strlen(data), fetch_flaky, &always) == -EBADMSG);
	CHECK(always.calls == 4);	/* once and 3 more */
	/* put(): the same bytes again would not help. */
	char d2[72];
	blobcache_digest_of("x", 1, d2);
	CHECK(blobcache_put(bc, d2, "y", 1) == -EBADMSG);
	blobcache_free(bc);
}

/* A download that waits for @go, and the waiters' per-thread cancel. */
struct gated {
	const char *data;
	size_t len;
	volatile int go, started;
};

static int fetch_gated(void *arg, reg_sink_fn sink, void *sink_arg, bool *retry)
{
	struct gated *g = arg;

	(void)retry;
	__atomic_store_n(&g->started, 1, __ATOMIC_SEQ_CST);
	while (!__atomic_load_n(&g->go, __ATOMIC_SEQ_CST))
		usleep(1000);
	return sink(sink_arg, g->data, g->len);
}

static _Thread_local bool cancel_me;

static bool cancelled(void)
{
	return cancel_me;
}

struct waiter {
	struct blobcache *bc;
	const char *digest;
	struct gated *g;
	bool cancel;
	int fd;
};

static void *wait_thread(void *p)
{
	struct waiter *w = p;

	cancel_me = w->cancel;
	w->fd = blobcache_open(w->bc, w->digest, w->g->len, fetch_gated, w->g);
	return NULL;
}

/* A cancelled waiter of another thread's download leaves with -EINTR
 * while it runs; the download and its other waiters go on. */
static void test_cancelled_waiter_leaves(void)
{
	const char *data = "a download that takes its time";
	struct gated g = { data, strlen(data), 0, 0 };
	struct blobcache *bc;
	char d[72];
	pthread_t lt, ct, wt;

	blobcache_digest_of(data, strlen(data), d);
	CHECK(blobcache_new(root, 0, &bc) == 0);
	blobcache_set_cancel(bc, cancelled);
	struct waiter leader = { bc, d, &g, false, -1 };
	struct waiter quitter = { bc, d, &g, true, -1 };
	struct waiter stayer = { bc, d, &g, false, -1 };
	pthread_create(&lt, NULL, wait_thread, &leader);
	while (!__atomic_load_n(&g.started, __ATOMIC_SEQ_CST))
		usleep(1000);
	pthread_create(&ct, NULL, wait_thread, &quitter);
	pthread_create(&wt, NULL, wait_thread, &stayer);
	pthread_join(ct, NULL);		/* returns while the download waits */
	CHECK(quitter.fd == -EINTR);
	CHECK(!__atomic_load_n(&g.go, __ATOMIC_SEQ_CST));
	__atomic_store_n(&g.go, 1, __ATOMIC_SEQ_CST);
	pthread_join(lt, NULL);
	pthread_join(wt, NULL);
	CHECK(leader.fd >= 0 && stayer.fd >= 0);
	if (leader.fd >= 0)
		close(leader.fd);
	if (stayer.fd >= 0)
		close(stayer.fd);
	blobcache_free(bc);
}

/* Paths inside an extracted tree follow links only while they stay
 * inside; a tree that is not a real directory of ours is not there. */
static void test_extracted_open_stays_inside(void)
{
	struct blobcache *bc;
	char d[72], p[700], outside[300];
	int fd;

	blobcache_digest_of("a tree", 6, d);
	CHECK(blobcache_new(root, 0, &bc) == 0);
	CHECK(blobcache_extracted_open(bc, d, "", O_RDONLY | O_DIRECTORY) == -ESTALE);
	snprintf(outside, sizeof(outside), "%s/outside", root);
	CHECK(mkdir(outside, 0700) == 0);
	snprintf(p, sizeof(p), "%s/secret", outside);
	close(open(p, O_CREAT | O_WRONLY, 0600));
	/* A planted link in place of the tree. */
	snprintf(p, sizeof(p), "%s/extract/sha256/%s", root, d + 7);
	CHECK(symlink(outside, p) == 0);
	CHECK(blobcache_extracted_open(bc, d, "secret", O_RDONLY) == -ESTALE);
	CHECK(unlink(p) == 0);
	/* A real tree with links inside and out. */
	CHECK(mkdir(p, 0700) == 0);
	snprintf(p, sizeof(p), "%s/extract/sha256/%s/sub", root, d + 7);
	CHECK(mkdir(p, 0700) == 0);
	snprintf(p, sizeof(p), "%s/extract/sha256/%s/sub/file", root, d + 7);
	close(open(p, O_CREAT | O_WRONLY, 0600));
	snprintf(p, sizeof(p), "%s/extract/sha256/%s/in", root, d + 7);
	CHECK(symlink("sub", p) == 0);
	snprintf(p, sizeof(p), "%s/extract/sha256/%s/out", root, d + 7);
	CHECK(symlink(outside, p) == 0);
	snprintf(p, sizeof(p), "%s/extract/sha256/%s/up", root, d + 7);
	CHECK(symlink("../../../outside", p) == 0);
	/* Without openat2 (before Linux 5.6, valgrind) no link is followed. */
	struct open_how how = { .flags = O_PATH };
	bool beneath = syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof(how)) >= 0 ||
		       errno != ENOSYS;
	fd = blobcache_extracted_open(bc, d, "in/file", O_RDONLY);
	CHECK(beneath ? fd >= 0 : fd < 0);
	if (fd >= 0)
		close(fd);
	fd = blobcache_extracted_open(bc, d, "sub/file", O_RDONLY);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	CHECK(blobcache_extracted_open(bc, d, "out/secret", O_RDONLY) == (beneath ? -EXDEV : -ENOTDIR));
	CHECK(blobcache_extracted_open(bc, d, "up/secret", O_RDONLY) == (beneath ? -EXDEV : -ENOTDIR));
	CHECK(blobcache_extracted_open(bc, d, "../../../outside/secret", O_RDONLY) == -EXDEV);
	fd = blobcache_extracted_open(bc, d, "out", O_PATH | O_NOFOLLOW);	/* lstat */
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	blobcache_free(bc);
	snprintf(p, sizeof(p), "rm -rf '%s' '%s/extract/sha256/%s'", outside, root, d + 7);
	CHECK(system(p) == 0);
}

/* A small tar holding one file, in memory. */
static size_t make_tar(char *buf, size_t cap, const char *content)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();
	size_t used = 0;

	archive_write_set_format_pax_restricted(a);
	archive_write_open_memory(a, buf, cap, &used);
	archive_entry_set_pathname(e, "etc/conf");
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, (la_int64_t)strlen(content));
	archive_write_header(a, e);
	archive_write_data(a, content, strlen(content));
	archive_entry_free(e);
	archive_write_close(a);
	archive_write_free(a);
	return used;
}

/* A tree is synced when the cache is freed; one extracted by a process
 * that died first may be torn, so the next start removes it (to be
 * extracted again from its durable blob). */
static void test_unsynced_trees_of_a_dead_session_go(void)
{
	static char tar[16384];
	size_t len = make_tar(tar, sizeof(tar), "k: v\n\n");
	struct tarx_limits lim = TARX_DEFAULT_LIMITS;
	char d[72], tree[128];

	blobcache_digest_of(tar, len, d);
	snprintf(tree, sizeof(tree), "extract/sha256/%s", d + 7);
	for (int dies = 0; dies < 2; dies++) {
		pid_t pid = fork();
		if (pid == 0) {
			struct blobcache *bc;
			struct tarx_error err;
			if (blobcache_new(root, 0, &bc) < 0 || blobcache_put(bc, d, tar, len) < 0 ||
			    blobcache_extract(bc, d, len, NULL, NULL, &lim, &err) < 0)
				_exit(1);
			if (!dies)
				blobcache_free(bc);
			_exit(0);	/* dies: no blobcache_free(), as a crash */
		}
		int status = -1;
		CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		CHECK(exists(tree));
		struct blobcache *bc;
		CHECK(blobcache_new(root, 0, &bc) == 0);	/* cleans tmp/ */
		CHECK(dies ? !exists(tree) : exists(tree));
		CHECK(blobcache_prune(bc, 1, 0, NULL, NULL) == 0);
		blobcache_free(bc);
	}
}

/* Opening or listing inside a tree is a use of its blob for eviction; a
 * stat is not. */
static void test_reading_a_tree_is_a_use(void)
{
	static char ta[16384], tb[16384];
	size_t la = make_tar(ta, sizeof(ta), "tree a\n"), lb = make_tar(tb, sizeof(tb), "tree b\n");
	struct tarx_limits lim = TARX_DEFAULT_LIMITS;
	struct timespec old[2] = { { 1000, 0 }, { 1000, 0 } };
	struct tarx_error err;
	struct blobcache *bc;
	struct stat st;
	char da[72], db[72], p[600];
	int fd;

	blobcache_digest_of(ta, la, da);
	blobcache_digest_of(tb, lb, db);
	CHECK(blobcache_new(root, 0, &bc) == 0);
	CHECK(blobcache_put(bc, da, ta, la) == 0 && blobcache_put(bc, db, tb, lb) == 0);
	CHECK(blobcache_extract(bc, da, la, NULL, NULL, &lim, &err) == 0);
	CHECK(blobcache_extract(bc, db, lb, NULL, NULL, &lim, &err) == 0);
	for (int i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/blobs/sha256/%s", root, (i ? db : da) + 7);
		CHECK(utimensat(AT_FDCWD, p, old, 0) == 0);
	}
	fd = blobcache_extracted_open(bc, db, "etc/conf", O_PATH | O_NOFOLLOW);
	CHECK(fd >= 0);
	close(fd);
	CHECK(stat(p, &st) == 0 && st.st_mtime == 1000);	/* b: a stat, no use */
	fd = blobcache_extracted_open(bc, da, "etc/conf", O_RDONLY);
	CHECK(fd >= 0);
	close(fd);
	struct blobcache_info info;
	CHECK(blobcache_info(bc, &info) == 0 && info.extracted == 2);
	/* Room for one blob and its tree: b, used longest ago, goes. */
	CHECK(blobcache_prune(bc, info.bytes + info.extracted_bytes - 1, 0, NULL, NULL) == 0);
	CHECK(blobcache_extracted_open(bc, db, "", O_RDONLY | O_DIRECTORY) == -ESTALE);
	fd = blobcache_extracted_open(bc, da, "", O_RDONLY | O_DIRECTORY);
	CHECK(fd >= 0);
	close(fd);
	CHECK(blobcache_prune(bc, 1, 0, NULL, NULL) == 0);
	blobcache_free(bc);
}

int main(void)
{
	struct blobcache *bc;
	char digest[72], empty[72], path[600];
	const char *hello = "hello, registry\n";
	char buf[64];
	int fd;

	snprintf(root, sizeof(root), "/tmp/ocifs-bc-XXXXXX");
	if (!mkdtemp(root))
		return 77;
	/* A leftover from a crash must be cleaned at start. */
	snprintf(path, sizeof(path), "%s/tmp", root);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/tmp/partial", root);
	FILE *f = fopen(path, "w");
	fputs("junk", f);
	fclose(f);

	CHECK(blobcache_new(root, 0, &bc) == 0);
	CHECK(!exists("tmp/partial"));
	CHECK(exists("blobs/sha256"));

	blobcache_digest_of(hello, strlen(hello), digest);
	blobcache_digest_of("", 0, empty);
	CHECK_STR(empty, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

	/* Absent without a fetcher. */
	CHECK(blobcache_open(bc, digest, strlen(hello), NULL, NULL) == -ENOENT);

	/* Wrong bytes are refused and leave nothing behind. */
	struct src bad = { "hello, r3gistry\n", 16, 0, 0, 0 };
	CHECK(blobcache_open(bc, digest, 16, fetch, &bad) == -EBADMSG);
	snprintf(path, sizeof(path), "blobs/sha256/%s", digest + 7);
	CHECK(!exists(path));
	/* Too long is refused too. */
	struct src longer = { "hello, registry\n!", 17, 0, 0, 0 };
	CHECK(blobcache_open(bc, digest, 16, fetch, &longer) == -EBADMSG);
	CHECK(!exists(path));

	/* Sixteen concurrent opens, one fetch (with a restart in it). */
	struct src good = { hello, strlen(hello), 0, 1, 0 };
	pthread_t th[16];
	struct opener op[16];
	for (int i = 0; i < 16; i++) {
		op[i] = (struct opener){ bc, digest, &good, -1 };
		pthread_create(&th[i], NULL, open_thread, &op[i]);
	}
	for (int i = 0; i < 16; i++) {
		pthread_join(th[i], NULL);
		CHECK(op[i].fd >= 0);
		if (op[i].fd >= 0) {
			memset(buf, 0, sizeof(buf));
			CHECK(pread(op[i].fd, buf, sizeof(buf), 0) == (ssize_t)strlen(hello));
			CHECK(memcmp(buf, hello, strlen(hello)) == 0);
			close(op[i].fd);
		}
	}
	CHECK(good.calls == 1);
	CHECK(exists(path));

	/* Cached now: no fetch. */
	fd = blobcache_open(bc, digest, strlen(hello), fetch, &good);
	CHECK(fd >= 0 && good.calls == 1);
	close(fd);

	/* A cached file of the wrong size is dropped and fetched again. */
	snprintf(path, sizeof(path), "%s/blobs/sha256/%s", root, digest + 7);
	CHECK(chmod(path, 0600) == 0 && truncate(path, 3) == 0);	/* 0400: ours to cut */
	fd = blobcache_open(bc, digest, strlen(hello), fetch, &good);
	CHECK(fd >= 0 && good.calls == 2);
	close(fd);

	/* Zero-byte blobs and put(). */
	CHECK(blobcache_put(bc, empty, "", 0) == 0);
	fd = blobcache_open(bc, empty, 0, NULL, NULL);
	CHECK(fd >= 0);
	close(fd);
	CHECK(blobcache_put(bc, digest, hello, strlen(hello)) == 0);	/* no-op */
	/* A descriptor that lies about the size of a good blob: refused, kept. */
	CHECK(blobcache_open(bc, digest, 4, NULL, NULL) == -EBADMSG);
	CHECK(exists(path + strlen(root) + 1));
	char d2[72];
	blobcache_digest_of("abc", 3, d2);
	CHECK(blobcache_put(bc, d2, "abd", 3) == -EBADMSG);

	char *all = NULL;
	size_t len = 0;
	CHECK(blobcache_read_all(bc, digest, 1024, &all, &len) == 0);
	CHECK(len == strlen(hello) && all && memcmp(all, hello, len) == 0);
	free(all);
	CHECK(blobcache_read_all(bc, digest, 4, &all, &len) == -EFBIG);

	/* A big blob is hashed by a second thread; a restart mid-way and a
	 * corrupted byte are still caught. */
	size_t big_len = 6u << 20;
	char *big = malloc(big_len), dbig[72];
	for (size_t i = 0; i < big_len; i++)
		big[i] = (char)(i * 2654435761u >> 13);
	blobcache_digest_of(big, big_len, dbig);
	struct src bigsrc = { big, big_len, 0, 1, 65536 };
	fd = blobcache_open(bc, dbig, big_len, fetch, &bigsrc);
	CHECK(fd >= 0);
	if (fd >= 0) {
		char *back = malloc(big_len);
		CHECK(pread(fd, back, big_len, 0) == (ssize_t)big_len);
		CHECK(memcmp(back, big, big_len) == 0);
		free(back);
		close(fd);
	}
	char dbig2[72];
	big[big_len / 2] ^= 1;
	blobcache_digest_of(big, big_len, dbig2);
	big[big_len / 2] ^= 1;	/* serve the original bytes under the other digest */
	struct src badbig = { big, big_len, 0, 0, 65536 };
	CHECK(blobcache_open(bc, dbig2, big_len, fetch, &badbig) == -EBADMSG);
	free(big);

	/* LRU eviction: three blobs, oldest first out, pinned ones stay. */
	char da[72], db[72], dc[72];
	struct timespec old[2] = { { 1000, 0 }, { 1000, 0 } };
	blobcache_digest_of("aaaa", 4, da);
	blobcache_digest_of("bbbb", 4, db);
	blobcache_digest_of("cccc", 4, dc);
	CHECK(blobcache_put(bc, da, "aaaa", 4) == 0);
	CHECK(blobcache_put(bc, db, "bbbb", 4) == 0);
	CHECK(blobcache_put(bc, dc, "cccc", 4) == 0);
	snprintf(path, sizeof(path), "%s/blobs/sha256/%s", root, da + 7);
	CHECK(utimensat(AT_FDCWD, path, old, 0) == 0);	/* a: least recent */
	old[0].tv_sec = old[1].tv_sec = 2000;
	snprintf(path, sizeof(path), "%s/blobs/sha256/%s", root, db + 7);
	CHECK(utimensat(AT_FDCWD, path, old, 0) == 0);	/* b: next */
	blobcache_pin(bc, da);
	struct blobcache_info info;
	CHECK(blobcache_info(bc, &info) == 0);
	uint64_t files = 0, bytes = 0, before = info.bytes;
	/* Room for all but 4 bytes: a is pinned, so b goes. */
	CHECK(blobcache_prune(bc, before - 4, 0, &files, &bytes) == 0);
	CHECK(files == 1 && bytes == 4);
	snprintf(path, sizeof(path), "blobs/sha256/%s", db + 7);
	CHECK(!exists(path));
	snprintf(path, sizeof(path), "blobs/sha256/%s", da + 7);
	CHECK(exists(path));
	blobcache_unpin(bc, da);
	/* By age: a (t=1000) goes, c (now) stays. */
	CHECK(blobcache_prune(bc, 0, 1500, &files, &bytes) == 0);
	CHECK(files == 1 && !exists(path));
	snprintf(path, sizeof(path), "blobs/sha256/%s", dc + 7);
	CHECK(exists(path));
	/* Opening refreshes the last use. */
	fd = blobcache_open(bc, dc, 4, NULL, NULL);
	CHECK(fd >= 0);
	close(fd);
	CHECK(blobcache_prune(bc, 0, time(NULL) - 60, &files, &bytes) == 0 && files == 0);

	/* A second cache on the same root keeps the first one's session. */
	struct blobcache *bc2;
	CHECK(blobcache_new(root, 0, &bc2) == 0);
	CHECK(blobcache_put(bc, d2, "abc", 3) == 0);	/* bc's tmp session lives */
	CHECK(blobcache_open(bc2, digest, strlen(hello), fetch, &good) >= 0);
	blobcache_free(bc2);

	test_private_modes();
	test_unsynced_trees_of_a_dead_session_go();
	test_reading_a_tree_is_a_use();
	test_extracted_open_stays_inside();
	test_refuses_what_others_can_write();
	test_planted_blobs_are_fetched_again();
	test_corruption_is_fetched_again();
	test_cancelled_waiter_leaves();
	test_restarts_of_a_big_blob_verify();
	test_concurrent_starts_keep_their_sessions();

	/* Nothing stays in tmp/ once both are gone. */
	blobcache_free(bc);
	snprintf(path, sizeof(path), "find '%s/tmp' -mindepth 1 | grep -q .", root);
	CHECK(system(path) != 0);
	snprintf(path, sizeof(path), "rm -rf '%s'", root);
	CHECK(system(path) == 0);
	return CHECK_DONE();
}
