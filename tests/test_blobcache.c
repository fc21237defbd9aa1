/* test_blobcache.c - the verified cache: store, verify, reject, single
 * flight, crash leftovers. */
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
	CHECK(truncate(path, 3) == 0);
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

	/* Nothing stays in tmp/ once both are gone. */
	blobcache_free(bc);
	snprintf(path, sizeof(path), "find '%s/tmp' -mindepth 1 | grep -q .", root);
	CHECK(system(path) != 0);
	snprintf(path, sizeof(path), "rm -rf '%s'", root);
	CHECK(system(path) == 0);
	return CHECK_DONE();
}
