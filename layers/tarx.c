/* tarx.c - tar extraction with libarchive, refusing anything unsafe. */
#include "tarx.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Walk @path's components, tracking depth; false if it ever goes above
 * the root. @start_depth is where the walk begins. ".." may only lead:
 * after a name it would climb out of wherever that name resolves to, and
 * the name may be a link ("d" -> "." makes "d/.." the root's parent). */
static bool walk_stays_inside(const char *path, int start_depth)
{
	int depth = start_depth;
	const char *p = path;
	bool named = false;

	while (*p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len == 2 && p[0] == '.' && p[1] == '.') {
			if (named || --depth < 0)
				return false;
		} else if (!(len == 0 || (len == 1 && p[0] == '.'))) {
			depth++;
			named = true;
		}
		if (!slash)
			break;
		p = slash + 1;
	}
	return true;
}

bool tarx_path_ok(const char *path)
{
	const char *p = path;

	if (!path || !*path || path[0] == '/')
		return false;
	for (const unsigned char *c = (const unsigned char *)path; *c; c++)
		if (*c < 0x20)
			return false;
	/* No ".." component at all, even one that would stay inside. */
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return false;
		if (!slash)
			break;
		p = slash + 1;
	}
	return true;
}

/* The number of directories above an entry once its name is normalised
 * as libarchive writes it: empty and "." components dropped, so "up/" is
 * "up" at the top and "a/./b/" is "b" inside "a". */
static int parent_depth(const char *path)
{
	int names = 0;

	for (const char *p = path; *p;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len && !(len == 1 && p[0] == '.'))
			names++;
		if (!slash)
			break;
		p = slash + 1;
	}
	return names ? names - 1 : 0;
}

bool tarx_symlink_ok(const char *path, const char *target)
{
	if (!target || !*target || target[0] == '/')
		return false;
	return walk_stays_inside(target, parent_depth(path));
}

/* Make every directory below @path ours to empty: extracted trees (and
 * those of older versions) may hold 0555 directories, where a user other
 * than root cannot unlink. Pre-order, so a directory is writable before
 * its entries are visited. */
static __thread bool unreadable_seen;	/* nftw callbacks take no argument */

static int make_writable(const char *p, const struct stat *st, int type, struct FTW *f)
{
	(void)f;
	if (type == FTW_DNR)
		unreadable_seen = true;
	if ((type == FTW_D || type == FTW_DNR) && (st->st_mode & 0700) != 0700)
		chmod(p, (st->st_mode & 07777) | 0700);
	return 0;
}

static int rm_one(const char *p, const struct stat *st, int type, struct FTW *f)
{
	(void)st;
	(void)f;
	if (type == FTW_DP)
		return rmdir(p) < 0 ? -1 : 0;
	return unlink(p) < 0 ? -1 : 0;
}

int tarx_remove_tree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	/* A directory unreadable even to us (mode 0) shows up as FTW_DNR:
	 * made readable, its entries are visited on the next pass. */
	for (int pass = 0; S_ISDIR(st.st_mode) && pass < 64; pass++) {
		unreadable_seen = false;
		if (nftw(path, make_writable, 32, FTW_PHYS | FTW_MOUNT) < 0 || !unreadable_seen)
			break;
	}
	if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
		return errno == ENOENT ? 0 : -errno;
	return 0;
}

static void refuse(struct tarx_error *err, const char *entry, const char *reason)
{
	snprintf(err->entry, sizeof(err->entry), "%s", entry ? entry : "?");
	snprintf(err->reason, sizeof(err->reason), "%s", reason ? reason : "refused");
}

/* Map libarchive's result once, here. */
static int archive_errno_of(struct archive *a)
{
	int e = archive_errno(a);

	if (e == ENOMEM || e == ENOSPC || e == EDQUOT || e == EIO)
		return -e;
	return -EINVAL;
}

/* The bytes @e's data takes on disk: its sparse map's extents, or its size. */
static uint64_t entry_footprint(struct archive_entry *e)
{
	la_int64_t off, len;
	uint64_t sum = 0;
	int64_t size = archive_entry_size(e);

	if (archive_entry_sparse_reset(e) == 0)
		return size > 0 ? (uint64_t)size : 0;
	while (archive_entry_sparse_next(e, &off, &len) == ARCHIVE_OK)
		if (len > 0)
			sum += (uint64_t)len;
	return sum;
}

/* The footprint @lim allows an archive of @archive_size bytes. */
static uint64_t footprint_max(const struct tarx_limits *lim, uint64_t archive_size)
{
	uint64_t max = lim->max_bytes;

	if (lim->max_ratio && archive_size <= max / lim->max_ratio) {
		uint64_t by_ratio = archive_size * lim->max_ratio;
		if (by_ratio < lim->ratio_floor)
			by_ratio = lim->ratio_floor;
		if (by_ratio < max)
			max = by_ratio;
	}
	return max;
}

/* Permission bits on disk: no set-id, nothing writable by group or
 * others; always readable by us, and directories writable and searchable
 * by us so that the tree can be removed again. */
static mode_t disk_perm(mode_t type, mode_t perm)
{
	perm &= 0755;
	return type == AE_IFDIR ? perm | 0700 : perm | 0400;
}

int tarx_extract(int src_fd, const char *dest_abs, const struct tarx_limits *lim,
		 struct tarx_error *err, uint64_t *footprint)
{
	struct archive *in, *out;
	struct archive_entry *e;
	uint64_t bytes = 0, entries = 0, max_bytes;
	char *full = NULL, *name = NULL;
	struct stat src;
	int ret = 0;

	err->entry[0] = '\0';
	err->reason[0] = '\0';
	err->repeated = false;
	if (fstat(src_fd, &src) < 0)
		return -errno;
	max_bytes = footprint_max(lim, (uint64_t)src.st_size);
	if (mkdir(dest_abs, 0700) < 0)
		return -errno;
	in = archive_read_new();
	out = archive_write_disk_new();
	if (!in || !out) {
		ret = -ENOMEM;
		goto out_free;
	}
	archive_read_support_filter_gzip(in);
	archive_read_support_filter_zstd(in);
	archive_read_support_filter_xz(in);
	archive_read_support_filter_bzip2(in);
	archive_read_support_format_tar(in);
	archive_read_support_format_gnutar(in);
	/* We validate paths ourselves and then make them absolute under
	 * @dest_abs; libarchive still refuses to write through symlinks.
	 * PERM: the modes disk_perm() chose, whatever the umask (libarchive
	 * reads it once, racily, in archive_write_disk_new()). SPARSE: runs of
	 * zeros become holes. */
	archive_write_disk_set_options(out, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
					    ARCHIVE_EXTRACT_SPARSE |
					    ARCHIVE_EXTRACT_SECURE_SYMLINKS |
					    ARCHIVE_EXTRACT_SECURE_NODOTDOT |
					    ARCHIVE_EXTRACT_NO_OVERWRITE_NEWER);
	if (archive_read_open_fd(in, src_fd, 1 << 16) != ARCHIVE_OK) {
		refuse(err, NULL, "not a tar archive");
		ret = -EINVAL;
		goto out_free;
	}
	for (;;) {
		int r = archive_read_next_header(in, &e);
		const char *link;
		mode_t type;

		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			refuse(err, NULL, entries ? "corrupt archive" : "not a tar archive");
			ret = archive_errno_of(in);
			goto out_free;
		}
		/* Our copy: setting the pathname below frees libarchive's,
		 * and refusals after that still name the entry. */
		free(name);
		name = archive_entry_pathname(e) ? strdup(archive_entry_pathname(e)) : NULL;
		if (archive_entry_pathname(e) && !name) {
			ret = -ENOMEM;
			goto out_free;
		}
		if (++entries > lim->max_entries) {
			refuse(err, name, "too many entries");
			ret = -EFBIG;
			goto out_free;
		}
		if (!tarx_path_ok(name)) {
			refuse(err, name, "absolute path or \"..\" in entry name");
			ret = -EPERM;
			goto out_free;
		}
		type = archive_entry_filetype(e);
		link = archive_entry_hardlink(e);
		/* Hard links may carry no file type of their own. */
		if (!link && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
			refuse(err, name, "device node, FIFO or socket");
			ret = -EPERM;
			goto out_free;
		}
		if (link) {
			if (!tarx_path_ok(link)) {
				refuse(err, name, "hard link outside the layer");
				ret = -EPERM;
				goto out_free;
			}
			free(full);
			if (asprintf(&full, "%s/%s", dest_abs, link) < 0) {
				ret = -ENOMEM;
				goto out_free;
			}
			archive_entry_set_hardlink(e, full);
		} else if (type == AE_IFLNK &&
			   !tarx_symlink_ok(name, archive_entry_symlink(e))) {
			refuse(err, name, "symbolic link pointing outside the layer");
			ret = -EPERM;
			goto out_free;
		}
		if (type == AE_IFREG) {
			if (archive_entry_size(e) < 0 ||
			    (bytes += entry_footprint(e)) > max_bytes) {
				refuse(err, name, bytes > lim->max_bytes ?
						  "extracted size over the limit" :
						  "expands more than the ratio limit allows");
				ret = -EFBIG;
				goto out_free;
			}
		}
		archive_entry_set_perm(e, disk_perm(type, archive_entry_perm(e)));
		free(full);
		if (asprintf(&full, "%s/%s", dest_abs, name) < 0) {
			ret = -ENOMEM;
			goto out_free;
		}
		archive_entry_set_pathname(e, full);
		r = archive_write_header(out, e);
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			refuse(err, name, archive_error_string(out));
			ret = archive_errno_of(out);
			goto out_free;
		}
		if (type == AE_IFREG && archive_entry_size(e) > 0) {
			const void *buf;
			size_t len;
			int64_t off;
			while ((r = archive_read_data_block(in, &buf, &len, &off)) == ARCHIVE_OK) {
				if (archive_write_data_block(out, buf, len, off) < 0) {
					refuse(err, name, archive_error_string(out));
					ret = archive_errno_of(out);
					goto out_free;
				}
			}
			if (r != ARCHIVE_EOF) {
				refuse(err, name, "corrupt archive data");
				ret = archive_errno_of(in);
				goto out_free;
			}
		}
		if (archive_write_finish_entry(out) < ARCHIVE_WARN) {
			refuse(err, name, archive_error_string(out));
			ret = archive_errno_of(out);
			goto out_free;
		}
	}
	if (footprint)
		*footprint = bytes;
out_free:
	free(full);
	free(name);
	if (out) {
		archive_write_close(out);
		archive_write_free(out);
	}
	if (in)
		archive_read_free(in);
	return ret;
}
