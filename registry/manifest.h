/* manifest.h - OCI / Docker v2 manifests and indexes.
 *
 * manifest_parse() validates what ocifs relies on (digests, sizes, titles)
 * and keeps the rest as opaque JSON text for xattrs. Bytes are never
 * re-serialized: callers serve the original manifest bytes.
 */
#ifndef OCIFS_MANIFEST_H
#define OCIFS_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MANIFEST_MAX_BYTES (4u << 20)	/* registries refuse larger ones too */
#define MANIFEST_MAX_ENTRIES 4096	/* layers or child manifests */
#define DESCRIPTOR_MAX_SIZE (1ull << 46)	/* 64 TiB: larger is a lie */

/* The Accept header value for manifest GETs: every type we parse. */
#define MANIFEST_ACCEPT                                            \
	"application/vnd.oci.image.manifest.v1+json, "             \
	"application/vnd.oci.image.index.v1+json, "                \
	"application/vnd.docker.distribution.manifest.v2+json, "   \
	"application/vnd.docker.distribution.manifest.list.v2+json"

enum manifest_kind {
	MANIFEST_IMAGE,		/* config + layers */
	MANIFEST_INDEX,		/* list of platform manifests */
};

struct platform {
	char *os;
	char *architecture;
	char *variant;		/* may be NULL */
};

struct descriptor {
	char *media_type;
	char *digest;		/* validated "sha256:<hex>" */
	uint64_t size;
	char *title;		/* org.opencontainers.image.title if safe, else NULL */
	char *refused_title;	/* the title as sent when it was not safe, else NULL
				 * (for messages only: escape it before printing) */
	char *artifact_type;	/* may be NULL */
	char *annotations;	/* compact JSON object text, NULL if none */
	bool has_platform;
	struct platform platform;
};

struct manifest {
	enum manifest_kind kind;
	char *media_type;	/* from the body, else the Content-Type */
	char *artifact_type;	/* may be NULL */
	char *annotations;	/* compact JSON, NULL if none */
	int64_t created;	/* org.opencontainers.image.created (RFC 3339),
				 * seconds since the epoch; 0 if absent or not
				 * RFC 3339 */
	bool has_config;
	struct descriptor config;
	struct descriptor *layers;	/* image: layers; index: manifests */
	size_t n_layers;
};

/* Parse @len bytes at @buf. @content_type (may be NULL) is used when the
 * body carries no mediaType. Returns 0 and a manifest the caller frees with
 * manifest_free(), -EINVAL (bad JSON or structure; *why explains, static
 * or pointing into nothing the caller owns), -EFBIG (too large), -ENOMEM. */
int manifest_parse(const void *buf, size_t len, const char *content_type,
		   struct manifest **out, const char **why);
void manifest_free(struct manifest *m);

/* The heap bytes @m holds (its strings and arrays, as malloc rounds
 * them); 0 for NULL. What a cache of parsed manifests counts. */
size_t manifest_footprint(const struct manifest *m);

/* The heap bytes one allocation of @n bytes takes (glibc's rounding). */
size_t manifest_alloc_size(size_t n);

/* A title is safe as a relative path: no empty, "." or ".." components,
 * no leading '/', no control characters (C0, DEL, C1), no bidirectional
 * marks, overrides or isolates (U+202E makes "exe.txt" look like "txt.exe"
 * in ls), components < 256 bytes. */
bool manifest_title_is_safe(const char *title);

#endif
