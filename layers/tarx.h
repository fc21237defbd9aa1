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

struct tarx_limits {
	uint64_t max_bytes;	/* sum of regular file sizes */
	uint64_t max_entries;
};

#define TARX_DEFAULT_MAX_BYTES (4ull << 30)
#define TARX_DEFAULT_MAX_ENTRIES 100000ull

/* Why an archive was refused: the entry and the reason (static). */
struct tarx_error {
	char entry[256];
	const char *reason;
	bool repeated;		/* a refusal reported before (blobcache) */
};

/* Extract the archive read from @src_fd into directory @dest_abs (an
 * absolute path that must not exist yet; it is created). Returns 0,
 * -EPERM (refused entry: see @err), -EFBIG (limits), -EINVAL (not an
 * archive or corrupt), or another -errno. On failure @dest_abs may be
 * partly filled: the caller removes it. */
int tarx_extract(int src_fd, const char *dest_abs, const struct tarx_limits *lim,
		 struct tarx_error *err);

/* Is @path (an entry name) a safe relative path? Leading "./" allowed. */
bool tarx_path_ok(const char *path);

/* Does the link at entry @path with target @target stay inside the root?
 * Relative targets only, and ".." only at their start ("../x", not
 * "a/../x": "a" may be a link itself). */
bool tarx_symlink_ok(const char *path, const char *target);

/* Remove a directory tree (extraction leftovers). */
int tarx_remove_tree(const char *path);

#endif
