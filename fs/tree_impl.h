/* tree_impl.h - what the parts of the tree share; fs/ocifs.c uses tree.h.
 *
 * struct tree owns one of each part below. Each part owns its state and
 * the one lock that guards it; no part holds its lock while it calls
 * another part (or the registry), so there is no lock order to keep.
 *
 *   tree.c        the tree's lifetime; a mount path to a target;
 *                 getattr, readlink, xattrs
 *   resolve.c     path resolution: /<registry>/<repo...>/<ref>/<inner>
 *                 to what it names (no state of its own)
 *   registries.c  registries shown in / and registries not answering
 *   dircache.c    directory caches: tag answers (also "not a tag") and
 *                 listings (catalogs and tag lists), for tag_ttl
 *   artifacts.c   artifact views by digest, from verified manifests
 *   serve.c       the files of an artifact: blobs and extracted layers
 *   listing.c     readdir
 *   files.c       open files
 *   signatures.c  the verify= policy and its verdicts
 *   referrers.c   OCI 1.1 referrers (API or tag-schema fallback)
 */
#ifndef OCIFS_TREE_IMPL_H
#define OCIFS_TREE_IMPL_H

#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>

#include "artifact.h"
#include "client.h"
#include "platform.h"
#include "resolve.h"
#include "tarx.h"
#include "tree.h"

/* Set up by tree_new() and read-only afterwards: no lock. */
struct tree {
	char root[2048];	/* prefix of every path; see tree_opts */
	struct stats *stats;
	struct regclient *rc;
	struct blobcache *bc;
	struct oci_platform platform;
	struct tarx_limits limits;
	unsigned tag_ttl;
	long down_window;		/* seconds a silent registry is not asked */
	bool (*may_fetch)(void);	/* tree_opts */
	bool (*interrupted)(void);	/* tree_opts */
	struct registries *regs;	/* registries.c */
	struct dircache *dc;		/* dircache.c */
	struct artifacts *arts;		/* artifacts.c */
	struct openfiles *files;	/* files.c */
	struct signatures *sigs;	/* signatures.c: the verify= policy */
	struct referrers *refs;		/* referrers.c */
};

/* Monotonic seconds: cache ages. */
time_t tree_now(void);

/* Is an answer taken at @at still within tag_ttl? */
bool tree_fresh(const struct tree *t, time_t at);

/* Log @what's registry error @e (or @ret's strerror when it has none),
 * at LOG_ERR, or at @prio. */
void log_reg_error(const char *what, const struct reg_error *e, int ret);
void log_reg_at(int prio, const char *what, const struct reg_error *e, int ret);

/* Times come from content, never from the mount's clock, so that two
 * mounts stat alike (rsync -a from a second mount copies nothing):
 * namespace and tag directories have TREE_EPOCH; an artifact's entries
 * its manifest's org.opencontainers.image.created, else TREE_EPOCH;
 * extracted files the archive's own. */
#define TREE_EPOCH 0

void dir_attr(struct tree_attr *a);
void stat_attr(const struct stat *st, struct tree_attr *a);
void entry_attr(const struct aentry *e, int64_t mtime, struct tree_attr *a);

struct artifact;
/* The time of @a's entries (see TREE_EPOCH). */
int64_t artifact_mtime(const struct artifact *a);

/* A resolved mount path; for artifact entries also the entry (NULL for
 * the artifact root) and, inside archives, the path in the extract area. */
struct target {
	struct resolved r;
	const struct aview *view;	/* R_ARTIFACT: the artifact's, or its layout */
	const struct aentry *e;
	const char *rest;
	char ext[4200];		/* "" unless served from the extract area */
};

/* Resolve mount path @path into a heap target (it is large); the caller
 * frees it with target_free() (which drops its artifact's reference).
 * @flags: RESOLVE_*. 0 or -errno. */
int target_new(struct tree *t, const char *path, unsigned flags, struct target **out);
void target_free(struct tree *t, struct target *g);

#endif
