/* test_blobsink.c - the download sink: bytes and digest in one pass,
 * large writes, start over, the size cap, write errors. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blobsink.h"
#include "check.h"

static char dir[64];

/* The file is opened write-only: a sink that read its bytes back to hash
 * them would fail. */
static int tmpfile_wronly(const char *name, char path[128])
{
	snprintf(path, 128, "%s/%s", dir, name);
	return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
}

static void sha_hex(const void *p, size_t n, char hex[65])
{
	unsigned char md[32];
	unsigned int len = 0;

	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	blobsink_hex(md, hex);
}

static bool file_is(const char *path, const unsigned char *want, size_t n)
{
	unsigned char *got = malloc(n + 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t r = fd < 0 ? -1 : read(fd, got, n + 1);
	bool ok = r == (ssize_t)n && memcmp(got, want, n) == 0;

	if (fd >= 0)
		close(fd);
	free(got);
	return ok;
}

static unsigned char *pattern(size_t n, unsigned seed)
{
	unsigned char *p = malloc(n);

	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)((i + seed) * 2654435761u >> 13);
	return p;
}

/* Feed @n bytes in pieces of @step. */
static int feed(struct blobsink *s, const unsigned char *p, size_t n, size_t step)
{
	for (size_t off = 0; off < n; off += step) {
		int ret = blobsink_write(s, p + off, n - off < step ? n - off : step);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Bytes and digest come out right for piece sizes around the buffer's. */
static void test_pieces(void)
{
	static const size_t steps[] = { 1, 3, 16384, BLOBSINK_BUF - 1, BLOBSINK_BUF,
					 BLOBSINK_BUF + 7, 3 * BLOBSINK_BUF };
	size_t n = 3 * BLOBSINK_BUF + 12345;
	unsigned char *data = pattern(n, 1);
	char want[65], hex[65], path[128];

	sha_hex(data, n, want);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct blobsink *s = NULL;
		uint64_t len = 0;
		size_t m = steps[i] == 1 ? 70000 : n;	/* byte by byte: keep it short */
		char w[65];
		int fd = tmpfile_wronly("pieces", path);

		sha_hex(data, m, w);
		CHECK(fd >= 0 && blobsink_new(fd, n, &s) == 0);
		CHECK(feed(s, data, m, steps[i]) == 0);
		CHECK(blobsink_finish(s, hex, &len) == 0);
		CHECK(len == m);
		CHECK_STR(hex, m == n ? want : w);
		CHECK(file_is(path, data, m));
		blobsink_free(s);
		close(fd);
	}
	free(data);
}

/* A start over in the middle drops the first attempt from file and hash. */
static void test_restart(void)
{
	size_t n = 2 * BLOBSINK_BUF + 99;
	unsigned char *good = pattern(n, 2), *bad = pattern(n, 3);
	char want[65], hex[65], path[128];
	struct blobsink *s = NULL;
	uint64_t len = 0;
	int fd = tmpfile_wronly("restart", path);

	sha_hex(good, n, want);
	CHECK(fd >= 0 && blobsink_new(fd, n, &s) == 0);
	CHECK(feed(s, bad, BLOBSINK_BUF + 5000, 16384) == 0);
	CHECK(blobsink_write(s, NULL, 0) == 0);
	CHECK(feed(s, good, n, 16384) == 0);
	CHECK(blobsink_finish(s, hex, &len) == 0);
	CHECK(len == n);
	CHECK_STR(hex, want);
	CHECK(file_is(path, good, n));
	/* and after a finish (a mirror's wrong bytes), once more */
	CHECK(blobsink_write(s, NULL, 0) == 0);
	CHECK(feed(s, good, n, 65536) == 0);
	CHECK(blobsink_finish(s, hex, &len) == 0);
	CHECK_STR(hex, want);
	CHECK(file_is(path, good, n));
	blobsink_free(s);
	close(fd);
	free(good);
	free(bad);
}

/* More bytes than the descriptor promised are refused as they arrive. */
static void test_cap(void)
{
	unsigned char *data = pattern(5000, 4);
	char path[128];
	struct blobsink *s = NULL;
	int fd = tmpfile_wronly("cap", path);

	CHECK(fd >= 0 && blobsink_new(fd, 4096, &s) == 0);
	CHECK(blobsink_write(s, data, 4000) == 0);
	CHECK(blobsink_write(s, data, 97) == -EBADMSG);
	CHECK(blobsink_write(s, data, 96) == 0);	/* exactly the size: fine */
	CHECK(blobsink_write(s, data, 1) == -EBADMSG);
	blobsink_free(s);
	close(fd);
	free(data);
}

/* An empty blob has the empty digest; an fd that cannot be written fails
 * the download with its errno. */
static void test_empty_and_errors(void)
{
	char hex[65], want[65], path[128];
	struct blobsink *s = NULL;
	unsigned char *data = pattern(BLOBSINK_BUF, 5);
	uint64_t len = 1;
	int fd = tmpfile_wronly("empty", path);

	sha_hex("", 0, want);
	CHECK(fd >= 0 && blobsink_new(fd, 0, &s) == 0);
	CHECK(blobsink_finish(s, hex, &len) == 0);
	CHECK(len == 0);
	CHECK_STR(hex, want);
	blobsink_free(s);
	close(fd);

	fd = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && blobsink_new(fd, 2 * BLOBSINK_BUF, &s) == 0);
	CHECK(blobsink_write(s, data, BLOBSINK_BUF) == -EBADF);	/* a full buffer is written */
	blobsink_free(s);
	CHECK(blobsink_new(fd, 100, &s) == 0);
	CHECK(blobsink_write(s, data, 50) == 0);	/* buffered */
	CHECK(blobsink_finish(s, hex, &len) == -EBADF);
	blobsink_free(s);
	blobsink_free(NULL);
	close(fd);
	free(data);
}

int main(void)
{
	char p[128];

	snprintf(dir, sizeof(dir), "/tmp/ocifs-sink-XXXXXX");
	if (!mkdtemp(dir))
		return 77;
	test_pieces();
	test_restart();
	test_cap();
	test_empty_and_errors();
	for (const char *const *n = (const char *const[]){ "pieces", "restart", "cap", "empty",
							   NULL };
	     *n; n++) {
		snprintf(p, sizeof(p), "%s/%s", dir, *n);
		unlink(p);
	}
	rmdir(dir);
	return CHECK_DONE();
}
