/* blobsink.c - hash and write a download in one pass, in large writes. */
#include "blobsink.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct blobsink {
	int fd;
	uint64_t want;		/* the descriptor's size: a cap */
	uint64_t got;		/* bytes taken since the start */
	uint64_t off;		/* file offset of the buffer's first byte */
	uint64_t synced;	/* bytes whose writeback was started */
	EVP_MD_CTX *md;		/* of the bytes taken so far */
	unsigned char *buf;
	size_t len, cap;	/* bytes in @buf, and its size */
};

void blobsink_hex(const unsigned char md[32], char hex[65])
{
	static const char x[] = "0123456789abcdef";

	for (int i = 0; i < 32; i++) {
		hex[2 * i] = x[md[i] >> 4];
		hex[2 * i + 1] = x[md[i] & 15];
	}
	hex[64] = '\0';
}

/* Write the buffer at the file's end. */
static int flush(struct blobsink *s)
{
	const unsigned char *p = s->buf;
	size_t left = s->len;

	while (left) {
		ssize_t n = pwrite(s->fd, p, left, (off_t)s->off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		left -= (size_t)n;
		s->off += (uint64_t)n;
	}
	s->len = 0;
	/* Start writing the last few MiB to disk now (without waiting):
	 * the fsync() before the rename then waits for little. Advice
	 * only, so its errors do not matter; fsync() reports real ones. */
	if (s->off - s->synced >= BLOBSINK_WRITEBACK) {
		sync_file_range(s->fd, (off_t)s->synced, (off_t)(s->off - s->synced),
				SYNC_FILE_RANGE_WRITE);
		s->synced = s->off;
	}
	return 0;
}

static int restart(struct blobsink *s)
{
	s->got = s->off = s->synced = 0;
	s->len = 0;
	if (ftruncate(s->fd, 0) < 0)
		return -errno;
	return EVP_DigestInit_ex(s->md, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

int blobsink_write(void *arg, const void *data, size_t len)
{
	struct blobsink *s = arg;
	const unsigned char *p = data;

	if (!data)
		return restart(s);
	if (len > s->want - s->got)
		return -EBADMSG;	/* longer than the descriptor says: stop early */
	s->got += len;
	/* Hashed now, while curl's copy is in the CPU's cache. */
	if (EVP_DigestUpdate(s->md, data, len) != 1)
		return -EIO;
	while (len) {
		size_t n = s->cap - s->len < len ? s->cap - s->len : len;
		int ret;

		memcpy(s->buf + s->len, p, n);
		s->len += n;
		p += n;
		len -= n;
		if (s->len == s->cap && (ret = flush(s)) < 0)
			return ret;
	}
	return 0;
}

int blobsink_finish(struct blobsink *s, char hex[65], uint64_t *len)
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	int ret;

	ret = s->len ? flush(s) : 0;
	if (ret < 0)
		return ret;
	if (EVP_DigestFinal_ex(s->md, md, &mdlen) != 1)
		return -EIO;	/* a start over initialises it again */
	blobsink_hex(md, hex);
	*len = s->got;
	return 0;
}

int blobsink_new(int fd, uint64_t want, struct blobsink **out)
{
	struct blobsink *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->fd = fd;
	s->want = want;
	s->cap = want < BLOBSINK_BUF ? (size_t)want + !want : BLOBSINK_BUF;
	s->buf = malloc(s->cap);
	s->md = EVP_MD_CTX_new();
	if (!s->buf || !s->md || EVP_DigestInit_ex(s->md, EVP_sha256(), NULL) != 1) {
		blobsink_free(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

void blobsink_free(struct blobsink *s)
{
	if (!s)
		return;
	EVP_MD_CTX_free(s->md);
	free(s->buf);
	free(s);
}
