/* serve.h - the files of an artifact: blobs and extracted layers. */
#ifndef OCIFS_SERVE_H
#define OCIFS_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tree;
struct artifact;
struct aentry;

/* Open a blob entry's cache file, fetching and verifying it first. An fd
 * or -errno (-EIO, logged, for bytes that fail verification). */
int serve_open_blob(struct tree *t, const struct artifact *a, const char *digest,
		    uint64_t size, bool is_manifest);

/* Where an entry lives below the cache root, for those served from the
 * extract area: inside an archive (@rest) or the fallback. Extracts the
 * layer first when needed. 0 or -errno. */
int serve_extracted_path(struct tree *t, struct artifact *a, const struct aentry *e,
			 const char *rest, char *out, size_t len);

/* Open @ext (from serve_extracted_path()) for openat() @flags without
 * leaving its layer's tree (links leading out are refused: -EIO, logged);
 * a tree evicted since is extracted again. An fd or -errno. */
int serve_open_extracted(struct tree *t, struct artifact *a, const char *ext, int flags);

#endif
