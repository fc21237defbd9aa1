/* tree.h - the namespace: registries, repositories, tags, artifacts.
 *
 * Paths are the mount's paths ("/127.0.0.1:5000/a/b/1.0/manifest.json").
 * The tree resolves them lazily against the registry, caching manifests by
 * digest (for the mount's life) and tag answers, tag lists and catalogs
 * for tag_ttl seconds. No FUSE here: fs/ocifs.c translates.
 *
 * Name resolution, for /<registry>/<c1>/.../<cn>: the shortest prefix
 * c1..ck that is a repository with c(k+1) as a tag or digest wins, so a
 * tag shadows a sub-repository of the same name (reach that one through a
 * registry or reference mount, or by its catalog path under a digest).
 */
#ifndef OCIFS_TREE_H
#define OCIFS_TREE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "platform.h"
#include "tarx.h"

struct tree_opts {
	const char *root;		/* "" (all registries), "/<registry>" or
					 * "/<registry>/<repo>/<ref>" (one artifact) */
	const char *cache_dir;
	unsigned tag_ttl;		/* seconds */
	const char *const *registries;	/* NULL-terminated, shown in / */
	const char *const *insecure;	/* NULL-terminated */
	const char *cafile;		/* extra trusted CAs (PEM), or NULL */
	const char *authfile;		/* the only credentials file, or NULL */
	const char *const *mirrors;	/* "ORIGIN=URL", NULL-terminated, or NULL */
	bool mirror_tags;		/* tags and listings from mirrors too */
	unsigned mirror_backoff;	/* seconds */
	long timeout;			/* seconds */
	unsigned retries;
	unsigned page_size;		/* listing page size asked for */
	struct oci_platform platform;	/* whose binaries to show */
	struct tarx_limits limits;	/* for extracting archive layers */
	uint64_t cache_max;		/* bytes, 0 = unbounded */
	unsigned artifacts_max;		/* artifact views kept, 0 = unbounded */
	uint64_t artifacts_max_bytes;	/* their memory, 0 = unbounded */
	unsigned tags_max;		/* tag answers kept, 0 = unbounded */
	unsigned listings_max;		/* catalogs and tag lists kept, 0 = unbounded */
	uint64_t listings_max_bytes;	/* their names' bytes, 0 = unbounded */
	unsigned registries_max;	/* registries that answered, listed in /; 0 = unbounded */
	/* -o verify=cosign: keys (cosign.h), or NULL: show everything.
	 * tree_new() takes them, also when it fails. */
	struct cosign_keys *verify_keys;
	/* Opens that may wait on the network (a download, or another
	 * reader's download of the same blob) at once; more get -EAGAIN at
	 * once, so that the caller's threads are not all taken. 0: any. */
	unsigned max_waiting_opens;
	/* Asked on the thread of each request; NULL: true, and false.
	 * may_fetch() false (another user's request on an allow_other
	 * mount): the request is answered from what the tree and the blob
	 * cache hold, and makes no registry request and no registry appear
	 * in "/". interrupted(): the kernel gave up on the request (its
	 * reader got a signal): its download stops, with -EINTR. */
	bool (*may_fetch)(void);
	bool (*interrupted)(void);
};

struct tree;

int tree_new(const struct tree_opts *o, struct tree **out);
void tree_free(struct tree *t);

struct tree_attr {
	mode_t mode;	/* type and permission bits */
	uint64_t size;
	int64_t mtime;	/* mtime and ctime, seconds since the epoch, from content */
};

int tree_getattr(struct tree *t, const char *path, struct tree_attr *out);

/* A directory's entries, read once at opendir: sorted by name, each
 * name once. */
struct tree_dir;

/* Read directory @path. 0 and *out (free with tree_closedir()), or
 * -errno: a missing directory fails here, not at its first entry. */
int tree_opendir(struct tree *t, const char *path, struct tree_dir **out);

/* Entry @i of @d and its attributes (mode 0: ask getattr), or NULL past
 * the last one. */
const char *tree_dir_entry(const struct tree_dir *d, size_t i, struct tree_attr *a);

void tree_closedir(struct tree_dir *d);

/* An open file: an fd into the cache, and the blob pinned against
 * eviction until tree_release(). */
struct tree_file {
	int fd;
	bool direct;		/* size unknown up front (/.ocifs/stats) */
	char pin[72];		/* digest pinned, "" if none */
	struct tree_file *prev, *next;	/* files.c: openfiles.lock */
};

/* Open the file at @path for reading, downloading and verifying first if
 * needed. 0 and *out, or -errno. The tree owns the file: tree_release()
 * frees it, and tree_free() frees any still open (a lazy unmount may end
 * the daemon before every release arrives). */
int tree_open(struct tree *t, const char *path, struct tree_file **out);
void tree_release(struct tree *t, struct tree_file *f);

/* Count a read of @size bytes at @off of @f handed to the kernel from
 * the cache (stats): what the file holds there, nothing for /.ocifs/stats. */
void tree_count_read(struct tree *t, const struct tree_file *f, uint64_t off, size_t size);

/* Resolve the mount's root now (reference mounts check their reference
 * at start). 0 or -errno. */
int tree_check_root(struct tree *t);

/* The target of the symlink at @path (inside an archive layer). */
int tree_readlink(struct tree *t, const char *path, char *buf, size_t size);

/* Extended attribute @name of @path into @buf (size 0: return the
 * length). -ENODATA when absent. */
int tree_getxattr(struct tree *t, const char *path, const char *name, char *buf, size_t size);
int tree_listxattr(struct tree *t, const char *path, char *buf, size_t size);

#endif
