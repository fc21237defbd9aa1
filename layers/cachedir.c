/* cachedir.c - the cache's directories: created private, used only when
 * ours (OpenSSH's StrictModes). */
#include "cachedir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool cachedir_ours(const struct stat *st)
{
	return st->st_uid == geteuid() && !(st->st_mode & 022);
}

DIR *cachedir_opendir(int dfd, const char *name)
{
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d;

	if (fd < 0)
		return NULL;
	d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		errno = e;
	}
	return d;
}

int cachedir_mkdir_p(const char *path)
{
	char *buf = strdup(path);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(buf, 0700) < 0 && errno != EEXIST) {
				ret = -errno;
				break;
			}
			*p = c;
			if (!c)
				break;
		}
	}
	free(buf);
	return ret;
}

static void explain(char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void explain(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

/* OpenSSH's StrictModes for a directory of the cache: a real directory,
 * ours, not writable by group or others (who could plant blobs). One that
 * others can read is made private (caches of older versions were 0755). */
static int dir_trusted(int fd, const char *path, char *why, size_t len)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode)) {
		explain(why, len, "%s is not a directory; remove it", path);
		return -ENOTDIR;
	}
	if (st.st_uid != geteuid()) {
		explain(why, len, "%s belongs to uid %u, not to this user (uid %u): its owner "
			"could plant content; use a cache directory of your own (-o cache=DIR)",
			path, (unsigned)st.st_uid, (unsigned)geteuid());
		return -EPERM;
	}
	if (st.st_mode & 022) {
		explain(why, len, "%s is writable by group or others (mode %04o): they could "
			"plant content; remove it (rm -rf %s) or, if you trust everything in it, "
			"chmod -R go-w %s", path, (unsigned)(st.st_mode & 07777), path, path);
		return -EPERM;
	}
	if (st.st_mode & 077)
		fchmod(fd, 0700);
	return 0;
}

/* The directories above the cache: owned by root or us, and writable by
 * no one else unless sticky (/tmp), or whoever can write one could swap
 * the cache for theirs between two path lookups (libarchive works on
 * paths). */
static int ancestors_trusted(const char *real, char *why, size_t len)
{
	char *p = strdup(real);
	int ret = 0;

	if (!p)
		return -ENOMEM;
	for (char *slash = strrchr(p, '/'); slash; slash = strrchr(p, '/')) {
		struct stat st;

		slash[slash == p] = '\0';	/* keep "/" itself */
		if (stat(p, &st) < 0) {
			ret = -errno;
			break;
		}
		if (st.st_uid != 0 && st.st_uid != geteuid()) {
			explain(why, len, "%s, above the cache directory, belongs to uid %u: "
				"its owner could replace the cache; use a cache directory elsewhere",
				p, (unsigned)st.st_uid);
			ret = -EPERM;
			break;
		}
		if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)) {
			explain(why, len, "%s, above the cache directory, is writable by group or "
				"others (mode %04o) and not sticky: they could replace the cache; "
				"chmod go-w %s or use a cache directory elsewhere", p,
				(unsigned)(st.st_mode & 07777), p);
			ret = -EPERM;
			break;
		}
		if (slash == p)
			break;
	}
	free(p);
	return ret;
}

/* The layout's directories, each created 0700 when missing and checked. */
static const char *const layout_dirs[] = {
	"blobs", "blobs/sha256", "extract", "extract/sha256", "tmp",
};

int cachedir_check(int root_fd, const char *real, bool create, char *why, size_t len)
{
	char path[4200];
	int ret;

	ret = ancestors_trusted(real, why, len);
	if (ret == 0)
		ret = dir_trusted(root_fd, real, why, len);
	for (size_t i = 0; ret == 0 && i < sizeof(layout_dirs) / sizeof(layout_dirs[0]); i++) {
		int fd;

		snprintf(path, sizeof(path), "%s/%s", real, layout_dirs[i]);
		if (create && mkdirat(root_fd, layout_dirs[i], 0700) < 0 && errno != EEXIST) {
			ret = -errno;
			explain(why, len, "cannot create %s: %s", path, strerror(-ret));
			return ret;
		}
		fd = openat(root_fd, layout_dirs[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			explain(why, len, "%s: %s", path,
				errno == ELOOP ? "a symbolic link, not a directory; remove it" :
						 strerror(errno));
			return ret;
		}
		ret = dir_trusted(fd, path, why, len);
		close(fd);
	}
	return ret;
}

int cachedir_check_path(const char *root, char *why, size_t len)
{
	char *real = realpath(root, NULL);
	int fd, ret;

	if (!real) {
		ret = -errno;
		explain(why, len, "%s: %s", root, strerror(errno));
		return ret;
	}
	fd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		explain(why, len, "%s: %s", real, strerror(errno));
	} else {
		ret = cachedir_check(fd, real, false, why, len);
		close(fd);
	}
	free(real);
	return ret;
}
