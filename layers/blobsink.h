/* blobsink.h - where a blob download's bytes go: into a file and a
 * SHA-256 in one pass, in large writes.
 *
 * The transport hands over small pieces (curl: at most 16 KiB a call).
 * The sink hashes each piece at once, while curl's copy of it is still in
 * the CPU's cache, and gathers the pieces in a buffer of BLOBSINK_BUF
 * bytes written with one write(2). The file is never read back, so the
 * digest is known the moment the last byte is written.
 *
 * Measured on a 2-core machine (256 MiB blob, loopback registry): hashing
 * in a second thread doubled the CPU time and was slower; buffers of
 * 1 MiB were slower than 128 KiB ones (they no longer fit in the L2 cache
 * beside curl's).
 *
 * Every BLOBSINK_WRITEBACK bytes the sink starts their writeback to disk
 * (sync_file_range(2), not waiting), so that the fsync(2) the cache makes
 * before the rename finds little left to write: for 256 MiB here it took
 * 0.005 s instead of 0.12 s.
 *
 * Memory: one buffer, of min(blob size, BLOBSINK_BUF) bytes. One thread
 * at a time uses a sink.
 */
#ifndef OCIFS_BLOBSINK_H
#define OCIFS_BLOBSINK_H

#include <stddef.h>
#include <stdint.h>

#define BLOBSINK_BUF (128u << 10)	/* bytes per write(2), and the buffer's cap */
#define BLOBSINK_WRITEBACK (8u << 20)	/* writeback started every so many bytes */

struct blobsink;

/* A sink writing into @fd (empty, at offset 0) for a blob of @want bytes:
 * bytes past @want are refused (-EBADMSG) as they arrive. 0 and *out, or
 * -errno. The fd stays the caller's. */
int blobsink_new(int fd, uint64_t want, struct blobsink **out);

/* reg_sink_fn: take @len bytes at @data. (NULL, 0) starts over: what was
 * taken is dropped from the file and the hash. 0 or -errno. */
int blobsink_write(void *sink, const void *data, size_t len);

/* Write out what is buffered. 0 and the SHA-256 of everything taken
 * since the last start in @hex (64 hex digits and NUL) and its length in
 * *len, or -errno. Only a start over may follow. */
int blobsink_finish(struct blobsink *s, char hex[65], uint64_t *len);

/* NULL is fine. */
void blobsink_free(struct blobsink *s);

/* A 32-byte SHA-256 in lower-case hex (64 digits and NUL). */
void blobsink_hex(const unsigned char md[32], char hex[65]);

#endif
