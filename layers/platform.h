/* platform.h - which OS/architecture this is, and which layers and
 * manifests are for it.
 *
 * Names are the OCI ones (GOOS/GOARCH): linux/amd64, linux/arm/v7,
 * darwin/arm64. Matching follows the image-spec and containerd:
 * arm64 == arm64/v8, arm defaults to v7 and runs v6 and v5 too, amd64
 * defaults to v1.
 */
#ifndef OCIFS_PLATFORM_H
#define OCIFS_PLATFORM_H

#include <stdbool.h>
#include <stddef.h>

#include "manifest.h"

struct oci_platform {
	char os[32];
	char arch[32];
	char variant[16];	/* "" when none */
};

/* This machine, from uname(2). Returns 0 or -ENOTSUP for an unknown
 * machine name. */
int platform_current(struct oci_platform *out);

/* "os/arch[/variant]", e.g. "linux/arm64/v8". 0 or -EINVAL. Names are
 * normalized (x86_64 -> amd64, aarch64 -> arm64, arm64/v8 -> arm64/v8). */
int platform_parse(const char *s, struct oci_platform *out);

/* "linux/amd64" or "linux/arm/v7", into @buf. */
void platform_format(const struct oci_platform *p, char *buf, size_t len);

/* How well a manifest for @os/@arch/@variant suits @want: 0 not at all,
 * higher is better. */
int platform_score(const struct oci_platform *want, const char *os, const char *arch,
		   const char *variant);

/* The index entry of @idx to use on @want, or -ENOENT. */
int platform_select(const struct manifest *idx, const struct oci_platform *want);

enum layer_class {
	LAYER_COMMON,		/* for every platform */
	LAYER_THIS,		/* for this platform */
	LAYER_OTHER,		/* for another platform: never fetch */
};

/* Classify a layer by its mediaType suffix ".bin.<os>-<arch>", its
 * descriptor's platform, or a platform named in its title. */
enum layer_class platform_layer_class(const struct descriptor *d,
				      const struct oci_platform *want);

/* Does @s name a platform (as "os-arch", "os_arch" or "os/arch" between
 * separators)? Fills @out when it does. */
bool platform_in_name(const char *s, struct oci_platform *out);

/* Is @d an archive we can open as a directory: a tar media type, a title
 * ending in .tar, .tar.gz or .tgz, or a directory oras packed? */
bool platform_layer_is_archive(const struct descriptor *d);

/* Is @d a directory `oras push DIR` packed (tar+gzip whose entries are
 * under <title>/, annotated io.deis.oras.content.unpack: "true")? */
bool platform_layer_is_oras_dir(const struct descriptor *d);

/* Might @d be a legacy multi-platform archive? Archives, and the generic
 * application/vnd.oras.v1 and application/gzip types (seed 000). */
bool platform_layer_may_hold_binaries(const struct descriptor *d);

#endif
