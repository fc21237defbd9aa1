/* platform.c - platform detection, normalization and matching. */
#include "platform.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

static const char *const oses[] = {
	"linux", "darwin", "windows", "freebsd", "netbsd", "openbsd", "dragonfly",
	"solaris", "illumos", "aix", "android", "ios", "plan9", "wasip1", "js",
};

/* Spellings seen in the wild -> OCI arch and default variant. */
static const struct {
	const char *name, *arch, *variant;
} arches[] = {
	{ "amd64", "amd64", "" },     { "x86_64", "amd64", "" },   { "x86-64", "amd64", "" },
	{ "arm64", "arm64", "v8" },   { "aarch64", "arm64", "v8" },
	{ "armv7l", "arm", "v7" },    { "armv7", "arm", "v7" },    { "armhf", "arm", "v7" },
	{ "armv6l", "arm", "v6" },    { "armv6", "arm", "v6" },    { "armel", "arm", "v6" },
	{ "armv5tel", "arm", "v5" },  { "arm", "arm", "v7" },
	{ "386", "386", "" },         { "i386", "386", "" },       { "i686", "386", "" },
	{ "ppc64le", "ppc64le", "" }, { "ppc64", "ppc64", "" },    { "s390x", "s390x", "" },
	{ "riscv64", "riscv64", "" }, { "loong64", "loong64", "" }, { "loongarch64", "loong64", "" },
	{ "mips64le", "mips64le", "" }, { "mips64", "mips64", "" }, { "mipsle", "mipsle", "" },
	{ "mips", "mips", "" },       { "wasm", "wasm", "" },
};

static int arch_index(const char *s, size_t len)
{
	for (size_t i = 0; i < sizeof(arches) / sizeof(arches[0]); i++)
		if (strlen(arches[i].name) == len && !strncmp(arches[i].name, s, len))
			return (int)i;
	return -1;
}

static int os_index(const char *s, size_t len)
{
	for (size_t i = 0; i < sizeof(oses) / sizeof(oses[0]); i++)
		if (strlen(oses[i]) == len && !strncmp(oses[i], s, len))
			return (int)i;
	return -1;
}

/* Fill arch and the default variant; a given variant wins. */
static int set_arch(struct oci_platform *p, const char *arch, size_t len, const char *variant)
{
	int i = arch_index(arch, len);

	if (i < 0)
		return -EINVAL;
	snprintf(p->arch, sizeof(p->arch), "%s", arches[i].arch);
	snprintf(p->variant, sizeof(p->variant), "%s",
		 variant && *variant ? variant : arches[i].variant);
	return 0;
}

int platform_current(struct oci_platform *out)
{
	struct utsname u;
	struct oci_platform p = { .os = "linux" };

	if (uname(&u) < 0)
		return -errno;
	if (!strcmp(u.sysname, "Darwin"))
		snprintf(p.os, sizeof(p.os), "darwin");
	else if (!strcmp(u.sysname, "FreeBSD"))
		snprintf(p.os, sizeof(p.os), "freebsd");
	if (set_arch(&p, u.machine, strlen(u.machine), NULL) < 0)
		return -ENOTSUP;
	*out = p;
	return 0;
}

int platform_parse(const char *s, struct oci_platform *out)
{
	struct oci_platform p = { 0 };
	const char *a, *v;

	a = strchr(s, '/');
	if (!a || a == s || (size_t)(a - s) >= sizeof(p.os))
		return -EINVAL;
	memcpy(p.os, s, (size_t)(a - s));
	if (os_index(p.os, strlen(p.os)) < 0)
		return -EINVAL;
	a++;
	v = strchr(a, '/');
	if (v && (strlen(v + 1) == 0 || strlen(v + 1) >= sizeof(p.variant) || strchr(v + 1, '/')))
		return -EINVAL;
	if (set_arch(&p, a, v ? (size_t)(v - a) : strlen(a), v ? v + 1 : NULL) < 0)
		return -EINVAL;
	*out = p;
	return 0;
}

void platform_format(const struct oci_platform *p, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s%s%s", p->os, p->arch, p->variant[0] ? "/" : "", p->variant);
}

int platform_score(const struct oci_platform *want, const char *os, const char *arch,
		   const char *variant)
{
	struct oci_platform have = { 0 };

	if (!os || !arch || strcmp(os, want->os) != 0)
		return 0;
	if (set_arch(&have, arch, strlen(arch), variant) < 0)
		return 0;
	if (strcmp(have.arch, want->arch) != 0)
		return 0;
	if (!strcmp(have.variant, want->variant))
		return 10;
	/* arm: a v7 machine runs v6 and v5 code; prefer the newest. */
	if (!strcmp(have.arch, "arm") && have.variant[0] == 'v' && want->variant[0] == 'v' &&
	    have.variant[1] < want->variant[1])
		return 1 + (have.variant[1] - '0');
	/* amd64 microarchitecture levels: v1 runs everywhere. */
	if (!strcmp(have.arch, "amd64") && (!strcmp(have.variant, "v1") || !have.variant[0]) &&
	    (!want->variant[0] || !strcmp(want->variant, "v1")))
		return 10;
	return 0;
}

int platform_select(const struct manifest *idx, const struct oci_platform *want)
{
	int best = -ENOENT, best_score = 0;

	for (size_t i = 0; i < idx->n_layers; i++) {
		const struct descriptor *d = &idx->layers[i];
		int s;
		if (!d->has_platform)
			continue;
		s = platform_score(want, d->platform.os, d->platform.architecture,
				   d->platform.variant);
		if (s > best_score) {
			best_score = s;
			best = (int)i;
		}
	}
	return best;
}

static bool is_sep(char c)
{
	return c == '-' || c == '_' || c == '/' || c == '.';
}

bool platform_in_name(const char *s, struct oci_platform *out)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n; i++) {
		if (i > 0 && !is_sep(s[i - 1]))
			continue;
		for (size_t o = 0; o < sizeof(oses) / sizeof(oses[0]); o++) {
			size_t ol = strlen(oses[o]);
			if (strncmp(s + i, oses[o], ol) != 0)
				continue;
			char sep = s[i + ol];
			if (sep != '-' && sep != '_' && sep != '/')
				continue;
			const char *a = s + i + ol + 1;
			/* The longest arch name that ends at a separator or the end. */
			int best = -1;
			size_t best_len = 0;
			for (size_t k = 0; k < sizeof(arches) / sizeof(arches[0]); k++) {
				size_t al = strlen(arches[k].name);
				if (!strncmp(a, arches[k].name, al) &&
				    (a[al] == '\0' || is_sep(a[al])) && al > best_len) {
					best = (int)k;
					best_len = al;
				}
			}
			if (best < 0)
				continue;
			if (out) {
				struct oci_platform p = { 0 };
				const char *v = a + best_len;
				char variant[16] = "";
				/* "arm-v7", "arm64/v8": an explicit variant. */
				if ((v[0] == '-' || v[0] == '/' || v[0] == '_') && v[1] == 'v' &&
				    v[2] >= '0' && v[2] <= '9' && (v[3] == '\0' || is_sep(v[3])))
					snprintf(variant, sizeof(variant), "v%c", v[2]);
				snprintf(p.os, sizeof(p.os), "%s", oses[o]);
				set_arch(&p, arches[best].name, best_len, variant);
				*out = p;
			}
			return true;
		}
	}
	return false;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && !strcmp(s + n - k, suffix);
}

bool platform_layer_is_oras_dir(const struct descriptor *d)
{
	/* annotations is compact JSON (manifest.h): no spaces to expect. */
	return d->annotations &&
	       strstr(d->annotations, "\"io.deis.oras.content.unpack\":\"true\"");
}

bool platform_layer_is_archive(const struct descriptor *d)
{
	const char *mt = d->media_type;
	const char *t = d->title;

	if (!strcmp(mt, "application/x-tar") || !strcmp(mt, "application/x-gtar") ||
	    ends_with(mt, ".tar") || ends_with(mt, "+tar") || ends_with(mt, ".tar+gzip") ||
	    ends_with(mt, ".tar.gzip") || ends_with(mt, ".tar.gz") || ends_with(mt, "tar+zstd"))
		return true;
	if (platform_layer_is_oras_dir(d))
		return true;
	return t && (ends_with(t, ".tar") || ends_with(t, ".tar.gz") || ends_with(t, ".tgz"));
}

bool platform_layer_may_hold_binaries(const struct descriptor *d)
{
	return platform_layer_is_archive(d) || !strcmp(d->media_type, "application/vnd.oras.v1") ||
	       !strcmp(d->media_type, "application/gzip");
}

enum layer_class platform_layer_class(const struct descriptor *d,
				      const struct oci_platform *want)
{
	struct oci_platform p;
	const char *bin = strstr(d->media_type, ".bin.");

	if (d->has_platform)
		return platform_score(want, d->platform.os, d->platform.architecture,
				      d->platform.variant) ? LAYER_THIS : LAYER_OTHER;
	if (bin && platform_in_name(bin + 5, &p) && !strchr(bin + 5, '.'))
		return platform_score(want, p.os, p.arch, p.variant) ? LAYER_THIS : LAYER_OTHER;
	if (d->title && platform_in_name(d->title, &p))
		return platform_score(want, p.os, p.arch, p.variant) ? LAYER_THIS : LAYER_OTHER;
	return LAYER_COMMON;
}
