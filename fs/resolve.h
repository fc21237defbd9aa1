/* resolve.h - a path below the tree's root to what it names. */
#ifndef OCIFS_RESOLVE_H
#define OCIFS_RESOLVE_H

struct tree;
struct artifact;
struct scope_hint;

enum rkind {
	R_ROOT,
	R_REGISTRY,
	R_NAMESPACE,
	R_ARTIFACT,
	R_CONTROL,	/* /.ocifs: not listed */
	R_STATS,	/* /.ocifs/stats */
	R_REFERRERS,	/* /.ocifs/referrers/...: art's referrers, or the top (art NULL) */
};

#define CONTROL_DIR "/.ocifs"
/* /.ocifs/layout/<registry>/<repo>/<ref>/: the reference's complete OCI
 * image layout (every kind of mount; paths are the full namespace's). */
#define LAYOUT_DIR "/layout"

struct resolved {
	enum rkind kind;
	char reg[256];
	char name[1024];	/* namespace or repository */
	struct artifact *art;	/* R_ARTIFACT (NULL: see RESOLVE_DIR_OK);
				 * lives as long as the tree */
	char inner[4096];	/* path inside the artifact, "" for its root */
	struct scope_hint *hint;	/* RESOLVE_LIST of a namespace: the scopes
					 * its listing needs, held until
					 * regclient_hint_drop() */
};

/* For getattr: a tag directory named in the tag list held is answered
 * from it (art NULL), without its manifest. */
#define RESOLVE_DIR_OK 1u
/* For opendir: the directory is about to be listed (its tag list and the
 * catalog asked), so their tokens are asked for with the resolution's;
 * r->hint holds their scopes for the listing. */
#define RESOLVE_LIST 2u

/* Resolve the full path @path ("/<registry>/..."), asking the registry
 * where the caches cannot say. 0 and *r, or -errno. The rule (tree.h):
 * the shortest repository prefix followed by a tag or digest wins. */
int resolve(struct tree *t, const char *path, unsigned flags, struct resolved *r);

#endif
