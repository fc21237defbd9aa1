/* ocifs.c - FUSE front end: options, main, and thin callbacks that
 * translate to tree_*() calls (which return 0 or -errno). */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <malloc.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "caller.h"
#include "log.h"
#include "passthrough.h"
#include "platform.h"
#include "mirror.h"
#include "ref.h"
#include "tree.h"
#include "blobcache.h"
#include "client.h"
#include "cosign.h"

struct options {
	char *cache;
	char *cafile;
	char *authfile;
	unsigned tag_ttl;
	unsigned timeout;
	unsigned retries;
	unsigned page_size;
	char *platform;
	char *max_extract;
	unsigned long long max_entries;
	char *cache_max;
	unsigned artifacts_max;
	char *artifacts_max_bytes;
	unsigned tags_max;
	unsigned listings_max;
	char *listings_max_bytes;
	unsigned registries_max;
	int cache_info;
	int cache_prune;
	char *prune_age;
	int show_help;
	int show_version;
	int debug;
	char **registries;	/* NULL-terminated, owned */
	size_t n_registries;
	char **insecure;	/* NULL-terminated, owned */
	size_t n_insecure;
	char **mirrors;		/* NULL-terminated "ORIGIN=URL", owned */
	size_t n_mirrors;
	char *mirror_tags;
	unsigned mirror_backoff;
	char *mirrors_conf;
	char **verify;		/* NULL-terminated key paths of -o verify=cosign:, owned */
	size_t n_verify;
	unsigned max_threads;	/* FUSE workers */
	char *share;		/* -o share=none|cached|all */
	bool others_allowed;	/* allow_other or allow_root given */
	char *args[2];		/* positional: [SOURCE] MOUNTPOINT */
	size_t n_args;
};

enum { KEY_REGISTRY, KEY_INSECURE, KEY_MIRROR, KEY_VERIFY, KEY_DEBUG, KEY_ALLOW_OTHER };

#define OPT(t, p) { t, offsetof(struct options, p), 1 }
static const struct fuse_opt option_spec[] = {
	OPT("cache=%s", cache),
	OPT("tag_ttl=%u", tag_ttl),
	OPT("timeout=%u", timeout),
	OPT("retries=%u", retries),
	OPT("cafile=%s", cafile),
	OPT("authfile=%s", authfile),
	OPT("page_size=%u", page_size),
	OPT("platform=%s", platform),
	OPT("max_extract=%s", max_extract),
	OPT("max_entries=%llu", max_entries),
	OPT("cache_max=%s", cache_max),
	OPT("artifacts_max=%u", artifacts_max),
	OPT("artifacts_max_bytes=%s", artifacts_max_bytes),
	OPT("tags_max=%u", tags_max),
	OPT("listings_max=%u", listings_max),
	OPT("listings_max_bytes=%s", listings_max_bytes),
	OPT("registries_max=%u", registries_max),
	OPT("--cache-info", cache_info),
	OPT("--cache-prune", cache_prune),
	OPT("--cache-prune=%s", prune_age),
	OPT("-h", show_help),
	OPT("--help", show_help),
	OPT("-V", show_version),
	OPT("--version", show_version),
	FUSE_OPT_KEY("registry=%s", KEY_REGISTRY),
	FUSE_OPT_KEY("insecure=%s", KEY_INSECURE),
	FUSE_OPT_KEY("mirror=%s", KEY_MIRROR),
	FUSE_OPT_KEY("verify=%s", KEY_VERIFY),
	OPT("mirror_tags=%s", mirror_tags),
	OPT("mirror_backoff=%u", mirror_backoff),
	OPT("mirrors_conf=%s", mirrors_conf),
	/* Ours, not libfuse's: its default (10) is too few (see WORKERS_*). */
	OPT("max_threads=%u", max_threads),
	OPT("share=%s", share),
	FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
	FUSE_OPT_KEY("allow_root", KEY_ALLOW_OTHER),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("debug", KEY_DEBUG),
	FUSE_OPT_END
};

/* FUSE workers, and how many of them opens waiting on the network may
 * take: the rest stay free for lookups, ls and /.ocifs/stats. A waiting
 * open costs a thread, little else: enough that a parallel build's
 * readers of one cold tool all wait on its one download. */
#define MMAP_THRESHOLD (128 << 10)	/* bytes: glibc's initial default, kept */
#define WORKERS_DEFAULT 64
#define WORKERS_RESERVED 4

static struct tree *tree;

/* Append a copy of @s: fuse_opt's @arg does not outlive the callback. */
static int push(char ***v, size_t *n, const char *s)
{
	char **nv = realloc(*v, (*n + 2) * sizeof(*nv));

	if (!nv)
		return -1;
	*v = nv;
	if (!(nv[*n] = strdup(s)))
		return -1;
	(*n)++;
	nv[*n] = NULL;
	return 0;
}

static int option_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *o = data;

	(void)outargs;
	switch (key) {
	case KEY_REGISTRY:
		return push(&o->registries, &o->n_registries, strchr(arg, '=') + 1);
	case KEY_INSECURE:
		return push(&o->insecure, &o->n_insecure, strchr(arg, '=') + 1);
	case KEY_MIRROR:
		return push(&o->mirrors, &o->n_mirrors, strchr(arg, '=') + 1);
	case KEY_VERIFY:	/* checked in main() */
		return push(&o->verify, &o->n_verify, strchr(arg, '=') + 1);
	case KEY_DEBUG:
		o->debug = 1;
		return 1;	/* keep it for libfuse too */
	case KEY_ALLOW_OTHER:
		o->others_allowed = true;
		return 1;	/* libfuse's */
	case FUSE_OPT_KEY_NONOPT:
		/* Collected here; main() passes the last on as the mount point. */
		if (o->n_args == 2) {
			fprintf(stderr, "ocifs: too many arguments: '%s'\n", arg);
			return -1;
		}
		if (!(o->args[o->n_args] = strdup(arg)))
			return -1;
		o->n_args++;
		return 0;
	default:
		return 1;
	}
}

static void fill_stat(const struct tree_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = caller_mode(a->mode);
	st->st_nlink = S_ISDIR(a->mode) ? 2 : 1;
	st->st_size = (off_t)a->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_atime = st->st_mtime = st->st_ctime = (time_t)a->mtime;
}

static void *oc_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	/* Cold reads come from a cache file: splice it to the kernel. */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	/* Better still: the kernel reads the cache file itself. */
	passthrough_init(conn);
	cfg->use_ino = 0;
	/* Tags move: let the kernel re-ask after a second; our caches answer. */
	cfg->entry_timeout = 1.0;
	cfg->attr_timeout = 1.0;
	cfg->negative_timeout = 1.0;
	return NULL;
}

static int oc_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct tree_attr a;
	int ret;

	(void)fi;
	ret = caller_admit(path);
	if (ret == 0)
		ret = tree_getattr(tree, path, &a);
	if (ret == 0)
		fill_stat(&a, st);
	return ret;
}

static struct tree_dir *dir_of(struct fuse_file_info *fi)
{
	return (struct tree_dir *)(uintptr_t)fi->fh;
}

/* The listing is read here, once per open: a missing directory must fail
 * here (glibc's readdir() takes ENOENT from getdents() for the end of the
 * directory), and a second pass must not cost a second listing. */
static int oc_opendir(const char *path, struct fuse_file_info *fi)
{
	struct tree_dir *d;
	int ret = caller_admit(path);

	if (ret == 0)
		ret = tree_opendir(tree, path, &d);
	if (ret == 0)
		fi->fh = (uint64_t)(uintptr_t)d;
	return ret;
}

/* Offsets are entry numbers: a large directory goes out in many calls
 * without being built again. Attributes go along (readdirplus), so that
 * `ls -l` needs no getattr per entry. */
static int oc_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct tree_dir *d = dir_of(fi);
	int ret = caller_admit(path);
	struct tree_attr a;
	struct stat st;
	const char *name;

	(void)flags;
	if (ret)
		return ret;
	for (size_t i = off < 0 ? 0 : (size_t)off;; i++) {
		if (i < 2) {
			if (filler(buf, i ? ".." : ".", NULL, (off_t)i + 1, 0))
				break;
			continue;
		}
		if (!(name = tree_dir_entry(d, i - 2, &a)))
			break;
		if (!a.mode) {
			if (filler(buf, name, NULL, (off_t)i + 1, 0))
				break;
			continue;
		}
		fill_stat(&a, &st);
		if (filler(buf, name, &st, (off_t)i + 1, FUSE_FILL_DIR_PLUS))
			break;
	}
	return 0;
}

static int oc_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	tree_closedir(dir_of(fi));
	return 0;
}

static struct tree_file *file_of(struct fuse_file_info *fi)
{
	return (struct tree_file *)(uintptr_t)fi->fh;
}

static int oc_open(const char *path, struct fuse_file_info *fi)
{
	struct tree_file *f;
	int ret;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EROFS;
	ret = caller_admit(path);
	if (ret == 0)
		ret = tree_open(tree, path, &f);
	if (ret < 0)
		return ret;
	if (f->direct) {
		fi->direct_io = 1;	/* generated: its size is known only now */
	} else {
		fi->keep_cache = 1;	/* content-addressed: never stale */
		/* Verified already: tree_open() returns only then. */
		ret = passthrough_open(path, f->fd, fi);
		if (ret < 0) {
			tree_release(tree, f);
			return ret;
		}
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	return 0;
}

static int oc_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	ssize_t n;

	(void)path;
	n = pread(file_of(fi)->fd, buf, size, off);
	if (n > 0)
		tree_count_read(tree, file_of(fi), (uint64_t)off, (size_t)n);
	return n < 0 ? -errno : (int)n;
}

/* Let libfuse splice straight from the cache file. */
static int oc_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fuse_bufvec *v = malloc(sizeof(*v));

	(void)path;
	if (!v)
		return -ENOMEM;
	*v = FUSE_BUFVEC_INIT(size);
	tree_count_read(tree, file_of(fi), (uint64_t)off, size);
	v->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	v->buf[0].fd = file_of(fi)->fd;
	v->buf[0].pos = off;
	*bufp = v;
	return 0;
}

static int oc_readlink(const char *path, char *buf, size_t size)
{
	int ret = caller_admit(path);

	return ret ? ret : tree_readlink(tree, path, buf, size);
}

/* Files here are always ready. libfuse allocates a poll handle for the
 * filesystem to keep and leaks it when .poll is missing (Go programs such
 * as skopeo poll what they open; LeakSanitizer reported it): free it and
 * answer ENOSYS, so the kernel stops asking and uses its default mask as
 * it did before. */
static int oc_poll(const char *path, struct fuse_file_info *fi, struct fuse_pollhandle *ph,
		   unsigned *reventsp)
{
	(void)path;
	(void)fi;
	(void)reventsp;
	fuse_pollhandle_destroy(ph);
	return -ENOSYS;
}

static int oc_release(const char *path, struct fuse_file_info *fi)
{
	struct tree_file *f = file_of(fi);

	if (!f->direct)
		passthrough_release(path);
	tree_release(tree, f);
	return 0;
}

static int oc_getxattr(const char *path, const char *name, char *value, size_t size)
{
	/* Only user.oci.* names exist, answered without resolving the path.
	 * Other namespaces (security.*, the system.* ACLs, trusted.*) are
	 * not supported, and saying so, not "no such attribute", lets `ls
	 * -l` stop asking after the first entry (coreutils remembers it per
	 * device); ENODATA cost three round trips per entry. */
	if (strncmp(name, "user.", 5) != 0)
		return -EOPNOTSUPP;
	if (strncmp(name, "user.oci.", 9) != 0)
		return -ENODATA;
	if (caller_admit(path) < 0)
		return -EACCES;
	return tree_getxattr(tree, path, name, value, size);
}

static int oc_listxattr(const char *path, char *list, size_t size)
{
	int ret = caller_admit(path);

	return ret ? ret : tree_listxattr(tree, path, list, size);
}

static int oc_statfs(const char *path, struct statvfs *sv)
{
	(void)path;
	memset(sv, 0, sizeof(*sv));
	sv->f_bsize = 4096;
	sv->f_frsize = 4096;
	sv->f_namemax = 255;
	sv->f_flag = ST_RDONLY;
	return 0;
}

/* Everything that would change the tree. */
static int oc_erofs_mk(const char *p, mode_t m) { (void)p; (void)m; return -EROFS; }
static int oc_erofs_p(const char *p) { (void)p; return -EROFS; }
static int oc_erofs_pp(const char *a, const char *b) { (void)a; (void)b; return -EROFS; }
static int oc_erofs_rename(const char *a, const char *b, unsigned int f)
{ (void)a; (void)b; (void)f; return -EROFS; }
static int oc_erofs_chmod(const char *p, mode_t m, struct fuse_file_info *fi)
{ (void)p; (void)m; (void)fi; return -EROFS; }
static int oc_erofs_chown(const char *p, uid_t u, gid_t g, struct fuse_file_info *fi)
{ (void)p; (void)u; (void)g; (void)fi; return -EROFS; }
static int oc_erofs_truncate(const char *p, off_t o, struct fuse_file_info *fi)
{ (void)p; (void)o; (void)fi; return -EROFS; }
static int oc_erofs_create(const char *p, mode_t m, struct fuse_file_info *fi)
{ (void)p; (void)m; (void)fi; return -EROFS; }
static int oc_erofs_write(const char *p, const char *b, size_t s, off_t o,
			  struct fuse_file_info *fi)
{ (void)p; (void)b; (void)s; (void)o; (void)fi; return -EROFS; }
static int oc_erofs_utimens(const char *p, const struct timespec tv[2], struct fuse_file_info *fi)
{ (void)p; (void)tv; (void)fi; return -EROFS; }
static int oc_erofs_setxattr(const char *p, const char *n, const char *v, size_t s, int f)
{ (void)p; (void)n; (void)v; (void)s; (void)f; return -EROFS; }
static int oc_erofs_removexattr(const char *p, const char *n) { (void)p; (void)n; return -EROFS; }

static const struct fuse_operations oc_ops = {
	.init = oc_init,
	.getattr = oc_getattr,
	.opendir = oc_opendir,
	.readdir = oc_readdir,
	.releasedir = oc_releasedir,
	.open = oc_open,
	.read = oc_read,
	.read_buf = oc_read_buf,
	.release = oc_release,
	.readlink = oc_readlink,
	.poll = oc_poll,
	.getxattr = oc_getxattr,
	.listxattr = oc_listxattr,
	.statfs = oc_statfs,
	.mkdir = oc_erofs_mk,
	.unlink = oc_erofs_p,
	.rmdir = oc_erofs_p,
	.symlink = oc_erofs_pp,
	.link = oc_erofs_pp,
	.rename = oc_erofs_rename,
	.chmod = oc_erofs_chmod,
	.chown = oc_erofs_chown,
	.truncate = oc_erofs_truncate,
	.create = oc_erofs_create,
	.write = oc_erofs_write,
	.utimens = oc_erofs_utimens,
	.setxattr = oc_erofs_setxattr,
	.removexattr = oc_erofs_removexattr,
};

static void usage(const char *prog)
{
	printf("usage: %s [options] MOUNTPOINT            every registry\n"
	       "       %s [options] REGISTRY MOUNTPOINT   one registry's repositories\n"
	       "       %s [options] REFERENCE MOUNTPOINT  one artifact (e.g. ghcr.io/org/tool:v1)\n\n"
	       "Mount OCI / Docker registries as a read-only filesystem:\n"
	       "  MOUNTPOINT/<registry>/<repository>/<tag>/manifest.json ...\n\n"
	       "ocifs options:\n"
	       "    -o cache=DIR           blob cache (default $XDG_CACHE_HOME/ocifs\n"
	       "                           or ~/.cache/ocifs)\n"
	       "    -o tag_ttl=SECONDS     how long tag, tag-list and catalog answers\n"
	       "                           are trusted (default 60)\n"
	       "    -o registry=HOST       list HOST in the root directory (repeatable)\n"
	       "    -o insecure=HOST       HTTPS without certificate checks for HOST, or\n"
	       "                           plain HTTP if it does not speak TLS (repeatable;\n"
	       "                           localhost and 127.0.0.0/8 fall back to plain\n"
	       "                           HTTP without it, but check certificates)\n"
	       "    -o timeout=SECONDS     connect and stall timeout (default 30)\n"
	       "    -o retries=N           retries of 429/5xx/dropped requests in a row\n"
	       "                           (default 3)\n"
	       "    -o mirror=ORIGIN=URL   ask mirror URL ([http[s]://]host[:port]) before\n"
	       "                           registry ORIGIN (repeatable, in order)\n"
	       "    -o mirror_tags=origin|mirror\n"
	       "                           where tags and listings come from (default origin)\n"
	       "    -o mirror_backoff=SECONDS\n"
	       "                           how long a failing mirror is skipped (default 30)\n"
	       "    -o mirrors_conf=PATH   mirrors file (default ~/.config/ocifs/mirrors.conf\n"
	       "                           and /etc/ocifs/mirrors.conf)\n"
	       "    -o verify=cosign:PATH  show only artifacts with a cosign signature that\n"
	       "                           verifies with the PEM public key at PATH\n"
	       "                           (repeatable: any of the keys; see ocifs(1))\n"
	       "    -o cafile=PATH         trust the CAs in PATH (PEM) besides the system's\n"
	       "    -o authfile=PATH       read credentials only from PATH (docker\n"
	       "                           config.json or podman auth.json format)\n"
	       "    -o platform=OS/ARCH[/VARIANT]\n"
	       "                           whose binaries to show (default: this machine)\n"
	       "    -o max_extract=SIZE    cap on bytes extracted from one archive layer\n"
	       "                           (default 4G; K, M, G suffixes)\n"
	       "    -o max_entries=N       cap on entries in one archive layer (default 100000)\n"
	       "    -o cache_max=SIZE      evict least recently used blobs beyond SIZE\n"
	       "                           (default: unbounded; K, M, G, T suffixes)\n"
	       "    -o artifacts_max=N     parsed manifests kept in memory, least recently\n"
	       "                           used dropped first (default 2048; 0: unbounded)\n"
	       "    -o artifacts_max_bytes=SIZE\n"
	       "                           the memory they take, at most (default 64M)\n"
	       "    -o tags_max=N          tag answers (tag -> digest, \"not a tag\") kept,\n"
	       "                           least recently used dropped first (default 16384;\n"
	       "                           0: unbounded)\n"
	       "    -o listings_max=N      catalogs and tag lists kept (default 4096)\n"
	       "    -o listings_max_bytes=SIZE\n"
	       "                           the bytes of their names kept (default 32M)\n"
	       "    -o registries_max=N    registries that answered listed in / (default 1024)\n"
	       "    -o share=none|cached|all\n"
	       "                           with allow_other: what other users reach: nothing,\n"
	       "                           what the mount holds, or all as you (default none)\n"
	       "    -o max_threads=N       FUSE workers; opens waiting on the network take\n"
	       "                           at most N-4, more get EAGAIN (default 64)\n"
	       "    --cache-info           print what the cache holds and exit\n"
	       "    --cache-prune[=AGE]    remove blobs unused for AGE (e.g. 7d, 12h, 30m;\n"
	       "                           default 30d), and beyond cache_max if given\n"
	       "    -V   --version         print versions and exit\n"
	       "    -h   --help            print this help and exit\n\n",
	       prog, prog, prog);
}

/* "10G", "512M", "4096" -> bytes; -1 when malformed. */
static long long parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	unsigned shift = 0;

	if (end == s || *s == '-')
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v > (1ull << (62 - shift)))
		return -1;
	return (long long)(v << shift);
}

/* -o @name=@val (NULL: @dflt) as a size into *out; false, said on stderr,
 * when malformed. */
static bool size_opt(const char *name, const char *val, long long dflt, long long *out)
{
	*out = val ? parse_size(val) : dflt;
	if (*out >= 0)
		return true;
	fprintf(stderr, "ocifs: -o %s=%s: not a size\n", name, val);
	return false;
}

/* SOURCE is a registry ("ghcr.io", "localhost:5000") or a reference
 * ("ghcr.io/org/tool:v1", "ubuntu"): the tree path the mount's root shows. */
static int root_of(const char *src, char *out, size_t len)
{
	struct ref r;
	const char *why = NULL;
	int ret;

	if (!strchr(src, '/') && ref_valid_registry(src) &&
	    (strchr(src, '.') || strchr(src, ':') || !strcmp(src, "localhost"))) {
		snprintf(out, len, "/%s", src);
		return 0;
	}
	ret = ref_parse(src, &r, &why);
	if (ret < 0) {
		fprintf(stderr, "ocifs: '%s': not a registry or reference: %s\n", src,
			why ? why : strerror(-ret));
		return ret;
	}
	/* "/reg/a/.b/.c/ref": ".name" is always a repository component, so a
	 * tag "b" of "a" cannot take the reference's path elsewhere. */
	size_t off = (size_t)snprintf(out, len, "/%s", r.registry);
	for (const char *c = r.repository; *c && off < len;) {
		size_t n = strcspn(c, "/");
		off += (size_t)snprintf(out + off, len - off, "/%s%.*s", c == r.repository ? "" : ".",
					(int)n, c);
		c += n + (c[n] == '/');
	}
	if (off < len)
		snprintf(out + off, len - off, "/%s", r.digest ? r.digest : r.tag);
	ref_release(&r);
	return 0;
}

/* "7d", "12h", "30m", "90s", "3600" -> seconds; -1 when malformed. */
static long long parse_age(const char *s)
{
	char *end;
	long long v = strtoll(s, &end, 10);

	if (end == s || v < 0)
		return -1;
	switch (*end) {
	case 'd': v *= 86400; end++; break;
	case 'h': v *= 3600; end++; break;
	case 'm': v *= 60; end++; break;
	case 's': end++; break;
	default: break;
	}
	return *end ? -1 : v;
}

/* Why the cache at @dir could not be used: a refused layout says which
 * directory and what to do. */
static void cache_error(const char *dir, int err)
{
	char why[1024];

	if (blobcache_check(dir, why, sizeof(why)) < 0)
		fprintf(stderr, "ocifs: cache refused: %s\n", why);
	else
		fprintf(stderr, "ocifs: cache %s: %s\n", dir, strerror(-err));
}

/* --cache-info and --cache-prune: work on the cache without mounting. */
static int cache_command(const struct options *o, long long max_bytes)
{
	struct blobcache *bc;
	struct blobcache_info info;
	int ret;

	ret = blobcache_new(o->cache, BLOBCACHE_READONLY, &bc);
	if (ret < 0) {
		cache_error(o->cache, ret);
		return 1;
	}
	if (o->cache_prune || o->prune_age) {
		long long age = parse_age(o->prune_age ? o->prune_age : "30d");
		uint64_t files = 0, bytes = 0;
		if (age < 0) {
			fprintf(stderr, "ocifs: --cache-prune=%s: want an age like 7d, 12h, 30m\n",
				o->prune_age);
			blobcache_free(bc);
			return 1;
		}
		ret = blobcache_prune(bc, max_bytes > 0 ? (uint64_t)max_bytes : 0,
				      time(NULL) - age, &files, &bytes);
		if (ret < 0) {
			fprintf(stderr, "ocifs: prune %s: %s\n", o->cache, strerror(-ret));
			blobcache_free(bc);
			return 1;
		}
		printf("removed %llu blobs, %llu bytes\n", (unsigned long long)files,
		       (unsigned long long)bytes);
	}
	ret = blobcache_info(bc, &info);
	blobcache_free(bc);
	if (ret < 0) {
		fprintf(stderr, "ocifs: cache %s: %s\n", o->cache, strerror(-ret));
		return 1;
	}
	printf("cache: %s\nblobs: %llu\nbytes: %llu\nextracted archives: %llu\n"
	       "extracted bytes: %llu\n", o->cache,
	       (unsigned long long)info.blobs, (unsigned long long)info.bytes,
	       (unsigned long long)info.extracted, (unsigned long long)info.extracted_bytes);
	if (info.blobs) {
		char a[64], b[64];
		strftime(a, sizeof(a), "%Y-%m-%d %H:%M:%S", localtime(&info.oldest));
		strftime(b, sizeof(b), "%Y-%m-%d %H:%M:%S", localtime(&info.newest));
		printf("least recently used: %s\nmost recently used: %s\n", a, b);
	}
	return 0;
}

/* A mount point whose daemon died answers ENOTCONN: say so, and how to
 * clear it, instead of libfuse's bare error. */
static bool stale_mount(const char *mnt)
{
	struct statvfs sv;

	/* statfs always reaches the daemon; stat may be answered from the
	 * kernel's attribute cache for a second after the daemon died. */
	if (statvfs(mnt, &sv) == 0 || errno != ENOTCONN)
		return false;
	fprintf(stderr, "ocifs: %s: a previous mount there has died (transport endpoint is "
		"not connected);\nunmount it first: fusermount3 -u %s\n", mnt, mnt);
	return true;
}

/* A mirrors file: "ORIGIN URL [URL...]" a line, '#' comments. Its
 * entries follow those of -o mirror. A missing default file is fine. */
static int read_mirrors_conf(struct options *o, const char *path, bool must_exist)
{
	FILE *f = fopen(path, "re");
	char line[4096];
	int lineno = 0, ret = 0;

	if (!f) {
		if (!must_exist && errno == ENOENT)
			return 0;
		fprintf(stderr, "ocifs: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *origin, *url;
		lineno++;
		*strchrnul(line, '#') = '\0';
		origin = strtok_r(line, " \t\r\n", &save);
		if (!origin)
			continue;
		if (!(url = strtok_r(NULL, " \t\r\n", &save))) {
			fprintf(stderr, "ocifs: %s:%d: want ORIGIN URL [URL...]\n", path, lineno);
			ret = -1;
			break;
		}
		for (; url; url = strtok_r(NULL, " \t\r\n", &save)) {
			char *spec;
			if (asprintf(&spec, "%s=%s", origin, url) < 0 ||
			    push(&o->mirrors, &o->n_mirrors, spec) < 0) {
				ret = -1;
				break;
			}
			free(spec);
		}
	}
	if (ret == 0 && ferror(f)) {
		fprintf(stderr, "ocifs: %s: %s\n", path, strerror(errno ? errno : EIO));
		ret = -1;
	}
	fclose(f);
	return ret;
}

/* -o mirror entries and the mirrors files, checked. 0 or -1. */
static int setup_mirrors(struct options *o)
{
	const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	const char *why = NULL;
	char user[4096] = "";

	if (o->mirrors_conf) {
		if (read_mirrors_conf(o, o->mirrors_conf, true) < 0)
			return -1;
	} else {
		if (x && *x == '/')
			snprintf(user, sizeof(user), "%s/ocifs/mirrors.conf", x);
		else if (home && *home)
			snprintf(user, sizeof(user), "%s/.config/ocifs/mirrors.conf", home);
		if ((user[0] && read_mirrors_conf(o, user, false) < 0) ||
		    read_mirrors_conf(o, "/etc/ocifs/mirrors.conf", false) < 0)
			return -1;
	}
	for (size_t i = 0; i < o->n_mirrors; i++) {
		if (mirror_spec_check(o->mirrors[i], &why) < 0) {
			fprintf(stderr, "ocifs: mirror '%s': %s\n", o->mirrors[i], why);
			return -1;
		}
	}
	if (o->mirror_tags && strcmp(o->mirror_tags, "origin") && strcmp(o->mirror_tags, "mirror")) {
		fprintf(stderr, "ocifs: -o mirror_tags=%s: want origin or mirror\n", o->mirror_tags);
		return -1;
	}
	return 0;
}

static char *default_cache(void)
{
	const char *x = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	char *s = NULL;

	if (x && *x == '/') {
		if (asprintf(&s, "%s/ocifs", x) < 0)
			s = NULL;
	} else if (home && *home) {
		if (asprintf(&s, "%s/.cache/ocifs", home) < 0)
			s = NULL;
	}
	return s;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = { .artifacts_max = 2048, .tags_max = 16384, .listings_max = 4096,
			     .registries_max = 1024, .tag_ttl = 60, .timeout = 30, .retries = 3,
			     .max_threads = WORKERS_DEFAULT };
	struct fuse_cmdline_opts cl = { 0 };
	struct fuse_loop_config *loop = NULL;
	struct fuse *fuse = NULL;
	struct tree_opts to;
	struct cosign_keys *keys = NULL;	/* until tree_new() takes them */
	char root[2048] = "";
	int ret = 1;

#ifdef __GLIBC__
	/* Big buffers (manifests, listings, their parse trees' strings) go
	 * back to the system when freed: glibc's threshold would otherwise
	 * rise past them after the first free and keep them in the heap,
	 * and the daemon's RSS would not follow artifacts_max_bytes. */
	mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
#endif

	if (fuse_opt_parse(&args, &o, option_spec, option_proc) == -1)
		return 1;
	if (o.show_version) {
		printf("ocifs %s\n", OCIFS_VERSION);
		printf("libfuse %s\n", fuse_pkgversion());
		passthrough_print(stdout);
		regclient_print_versions(stdout);
		blobcache_print_versions(stdout);
		ret = 0;
		goto out_args;
	}
	if (o.n_args > 0 && fuse_opt_add_arg(&args, o.args[o.n_args - 1]) != 0)
		goto out_args;
	if (fuse_parse_cmdline(&args, &cl) != 0)
		goto out_args;
	if (o.show_help || cl.show_help) {
		usage(argv[0]);
		printf("FUSE options:\n");
		fuse_cmdline_help();
		fuse_lib_help(&args);
		ret = 0;
		goto out_args;
	}
	if (o.cache_info || o.cache_prune || o.prune_age) {
		long long max = o.cache_max ? parse_size(o.cache_max) : 0;
		if (!o.cache)
			o.cache = default_cache();
		if (!o.cache || max < 0) {
			fprintf(stderr, "ocifs: need a cache directory (-o cache=DIR) and a valid "
				"cache_max\n");
			goto out_args;
		}
		ret = cache_command(&o, max);
		goto out_args;
	}
	if (!cl.mountpoint) {
		fprintf(stderr, "%s: no mount point given\nTry '%s --help'.\n", argv[0], argv[0]);
		goto out_args;
	}
	if (stale_mount(cl.mountpoint))
		goto out_args;
	if (o.n_args == 2) {
		ret = root_of(o.args[0], root, sizeof(root));
		if (ret) {
			ret = 1;
			goto out_args;
		}
	}
	if (!o.cache)
		o.cache = default_cache();
	if (!o.cache) {
		fprintf(stderr, "ocifs: no cache directory: set -o cache=DIR or HOME\n");
		goto out_args;
	}
	log_setup(o.debug, false);

	struct oci_platform plat;
	ret = o.platform ? platform_parse(o.platform, &plat) : platform_current(&plat);
	if (ret < 0) {
		if (o.platform)
			fprintf(stderr, "ocifs: -o platform=%s: want OS/ARCH[/VARIANT], e.g. "
				"linux/arm64 or linux/arm/v7\n", o.platform);
		else
			fprintf(stderr, "ocifs: unknown machine; set -o platform=OS/ARCH\n");
		ret = 1;
		goto out_args;
	}
	struct tarx_limits lim = TARX_DEFAULT_LIMITS;
	long long extract_max, cache_max, arts_bytes, lists_bytes;
	if (!size_opt("max_extract", o.max_extract, (long long)lim.max_bytes, &extract_max) ||
	    !size_opt("cache_max", o.cache_max, 0, &cache_max) ||
	    !size_opt("artifacts_max_bytes", o.artifacts_max_bytes, 64LL << 20, &arts_bytes) ||
	    !size_opt("listings_max_bytes", o.listings_max_bytes, 32LL << 20, &lists_bytes)) {
		ret = 1;
		goto out_args;
	}
	lim.max_bytes = (uint64_t)extract_max;
	if (o.max_entries)
		lim.max_entries = o.max_entries;

	enum share_mode share = SHARE_NONE;
	if (o.share && share_parse(o.share, &share) < 0) {
		fprintf(stderr, "ocifs: -o share=%s: want none, cached or all\n", o.share);
		ret = 1;
		goto out_args;
	}
	if (o.max_threads < 1) {
		fprintf(stderr, "ocifs: -o max_threads=0: want at least 1 worker\n");
		ret = 1;
		goto out_args;
	}
	if (setup_mirrors(&o) < 0) {
		ret = 1;
		goto out_args;
	}

	/* Checked now for a clear message; the credentials file is re-read
	 * at each challenge, after fuse_daemonize() moved us to /. */
	if (o.cafile && access(o.cafile, R_OK) != 0) {
		fprintf(stderr, "ocifs: -o cafile=%s: %s\n", o.cafile, strerror(errno));
		ret = 1;
		goto out_args;
	}
	if (o.authfile) {
		char *abs = realpath(o.authfile, NULL);
		if (!abs || access(abs, R_OK) != 0) {
			fprintf(stderr, "ocifs: -o authfile=%s: %s\n", o.authfile, strerror(errno));
			free(abs);
			ret = 1;
			goto out_args;
		}
		free(o.authfile);
		o.authfile = abs;
	}

	for (size_t i = 0; i < o.n_verify; i++) {
		if (strncmp(o.verify[i], "cosign:", 7) || !o.verify[i][7]) {
			fprintf(stderr, "ocifs: -o verify=%s: want verify=cosign:PATH (a public "
				"key)\n", o.verify[i]);
			ret = 1;
			goto out_args;
		}
		memmove(o.verify[i], o.verify[i] + 7, strlen(o.verify[i] + 7) + 1);
	}
	if (o.n_verify) {
		char why[512] = "";
		ret = cosign_keys_load((const char *const *)o.verify, o.n_verify, &keys, why,
				       sizeof(why));
		if (ret < 0) {
			fprintf(stderr, "ocifs: -o %s\n", why[0] ? why : strerror(-ret));
			ret = 1;
			goto out_args;
		}
	}

	to = (struct tree_opts){
		.root = root,
		.cache_dir = o.cache,
		.tag_ttl = o.tag_ttl,
		.registries = (const char *const *)o.registries,
		.insecure = (const char *const *)o.insecure,
		.cafile = o.cafile,
		.authfile = o.authfile,
		.timeout = o.timeout,
		.retries = o.retries,
		.page_size = o.page_size,
		.platform = plat,
		.limits = lim,
		.cache_max = (uint64_t)cache_max,
		.artifacts_max = o.artifacts_max,
		.artifacts_max_bytes = (uint64_t)arts_bytes,
		.tags_max = o.tags_max,
		.listings_max = o.listings_max,
		.listings_max_bytes = (uint64_t)lists_bytes,
		.registries_max = o.registries_max,
		.mirrors = (const char *const *)o.mirrors,
		.mirror_tags = o.mirror_tags && !strcmp(o.mirror_tags, "mirror"),
		.mirror_backoff = o.mirror_backoff,
		.verify_keys = keys,
		.max_waiting_opens = cl.singlethread ? 0 :
				     o.max_threads > WORKERS_RESERVED ?
				     o.max_threads - WORKERS_RESERVED : 1,
		.may_fetch = caller_may_fetch,
		.interrupted = caller_interrupted,
	};
	ret = tree_new(&to, &tree);
	if (ret < 0) {
		cache_error(o.cache, ret);
		ret = 1;
		goto out_args;
	}
	ret = 1;
	if (o.n_args == 2 && strchr(o.args[0], '/')) {
		/* A reference mount fails now if the reference does not exist;
		 * a registry that is down only gets a warning (fstab, _netdev). */
		int r = tree_check_root(tree);
		if (r == -ENOENT || r == -EACCES) {
			fprintf(stderr, "ocifs: %s: %s\n", o.args[0],
				r == -ENOENT ? "no such repository or tag" : "access denied");
			goto out_tree;
		}
		if (r < 0)
			fprintf(stderr, "ocifs: warning: %s: %s; mounting anyway\n", o.args[0],
				strerror(-r));
	}

	/* Read-only at the kernel too: writes fail with EROFS before us. */
	/* The source shows in mount(8) and df, like sshfs's host:path. */
	char fsopt[600];
	snprintf(fsopt, sizeof(fsopt), "-oro,default_permissions,subtype=ocifs,fsname=%s",
		 o.n_args == 2 && !strpbrk(o.args[0], ",\\") ? o.args[0] : "ocifs");
	fuse_opt_add_arg(&args, fsopt);
	fuse = fuse_new(&args, &oc_ops, sizeof(oc_ops), NULL);
	if (!fuse)
		goto out_tree;
	caller_setup(share, o.others_allowed);
	if (fuse_mount(fuse, cl.mountpoint) != 0)
		goto out_destroy;
	if (fuse_daemonize(cl.foreground) != 0)
		goto out_unmount;
	if (!cl.foreground)
		log_setup(o.debug, true);
	if (fuse_set_signal_handlers(fuse_get_session(fuse)) != 0)
		goto out_unmount;
	if (cl.singlethread) {
		ret = fuse_loop(fuse) ? 1 : 0;
	} else {
		loop = fuse_loop_cfg_create();
		if (!loop)
			goto out_signals;
		fuse_loop_cfg_set_clone_fd(loop, (unsigned)cl.clone_fd);
		fuse_loop_cfg_set_max_threads(loop, o.max_threads);
		if (cl.max_idle_threads != UINT_MAX)
			fuse_loop_cfg_set_idle_threads(loop, cl.max_idle_threads);
		ret = fuse_loop_mt(fuse, loop) ? 1 : 0;
	}
out_signals:
	fuse_remove_signal_handlers(fuse_get_session(fuse));
out_unmount:
	fuse_unmount(fuse);
out_destroy:
	fuse_destroy(fuse);
	fuse_loop_cfg_destroy(loop);
	passthrough_free();
out_tree:
	tree_free(tree);
out_args:
	free(cl.mountpoint);
	free(o.args[0]);
	free(o.args[1]);
	for (size_t i = 0; i < o.n_registries; i++)
		free(o.registries[i]);
	for (size_t i = 0; i < o.n_insecure; i++)
		free(o.insecure[i]);
	for (size_t i = 0; i < o.n_mirrors; i++)
		free(o.mirrors[i]);
	free(o.mirrors);
	for (size_t i = 0; i < o.n_verify; i++)
		free(o.verify[i]);
	free(o.verify);
	free(o.mirror_tags);
	free(o.mirrors_conf);
	free(o.share);
	free(o.registries);
	free(o.insecure);
	free(o.cache);
	free(o.cafile);
	free(o.authfile);
	free(o.platform);
	free(o.max_extract);
	free(o.cache_max);
	free(o.artifacts_max_bytes);
	free(o.listings_max_bytes);
	free(o.prune_age);
	fuse_opt_free_args(&args);
	return ret;
}
