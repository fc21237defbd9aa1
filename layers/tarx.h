/* tarx.h - safe extraction of tar and tar+gzip layers with libarchive.
 *
 * Everything lands below one new directory; an archive with an entry
 * that could escape it (absolute or ".." paths, links leaving the root),
 * a device node or FIFO, or more bytes or entries than the limits allow is
 * refused as a whole: nothing of it is kept.
 */
#ifndef OCIFS_TARX_H
#define OCIFS_TARX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What an archive may expand to. Its footprint is the sum of the bytes
 * its regular files hold (a sparse file counts its data, not its holes,
 * and is written sparse). The footprint may not exceed @max_bytes, nor
 * @max_ratio times the archive's own size once past @ratio_floor (small
 * archives of small files are fine whatever their ratio). */
struct tarx_limits {
	uint64_t max_bytes;
	uint64_t max_entries;
	uint64_t max_ratio;	/* 0: no ratio limit */
	uint64_t ratio_floor;
};

#define TARX_DEFAULT_MAX_BYTES (4ull << 30)
#define TARX_DEFAULT_MAX_ENTRIES 100000ull
/* gzip tops out near 1030:1 on zeros; real layers are 2-10:1. */
#define TARX_DEFAULT_MAX_RATIO 100ull
#define TARX_DEFAULT_RATIO_FLOOR (16ull << 20)
#define TARX_DEFAULT_LIMITS                                                   \
	{ TARX_DEFAULT_MAX_BYTES, TARX_DEFAULT_MAX_ENTRIES, TARX_DEFAULT_MAX_RATIO, \
	  TARX_DEFAULT_RATIO_FLOOR }

/* Why an archive was refused: the entry and the reason ("" when none), both
 * copies of ours: libarchive's messages die with its handle. */
struct tarx_error {
	char entry[256];
	char reason[160];
	bool repeated;		/* a refusal reported before (blobcache) */
};

/* Extract the archive read from @src_fd into directory @dest_abs (an
 * absolute path that must not exist yet; it is created 0700). Entries keep
 * their permission bits without set-id bits and group/other write, plus
 * owner read (and, for directories, owner write and search): privacy comes
 * from the directories above @dest_abs. On success *@footprint (may be
 * NULL) is the extracted footprint in bytes. Returns 0,
 * -EPERM (refused entry: see @err), -EFBIG (limits), -EINVAL (not an
 * archive or corrupt), or another -errno. On failure @dest_abs may be
 * partly filled: the caller removes it. */
int tarx_extract(int src_fd, const char *dest_abs, const struct tarx_limits *lim,
		 struct tarx_error *err, uint64_t *footprint);

/* Is @path (an entry name) a safe relative path? Leading "./" allowed. */
bool tarx_path_ok(const char *path);

/* Does the link at entry @path with target @target stay inside the root?
 * Relative targets only, and ".." only at their start ("../x", not
 * "a/../x": "a" may be a link itself). */
bool tarx_symlink_ok(const char *path, const char *target);

/* Remove a directory tree (extraction leftovers), making its directories
 * writable first so that users other than root can empty 0555 ones. */
int tarx_remove_tree(const char *path);

#endif
