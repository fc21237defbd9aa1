/* cachedir.h - the cache's directories, private to the user.
 *
 * The cache root and the layout's directories (blobs/, blobs/sha256,
 * extract/, extract/sha256, tmp/) are created 0700 and used only if they
 * are ours and writable by no one else, and the directories above the root
 * root's or ours and writable by no one else unless sticky (/tmp): whoever
 * could write one could plant content that is served, and run, as the
 * real thing. One that others can only read (0755 from older versions) is
 * made 0700.
 */
#ifndef OCIFS_CACHEDIR_H
#define OCIFS_CACHEDIR_H

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

/* mkdir -p @path, creating what is missing 0700. 0 or -errno. */
int cachedir_mkdir_p(const char *path);

/* Check (and with @create, make) the layout below the open root @root_fd,
 * whose real path is @real. 0, or -EPERM / -ENOTDIR / -errno with @why
 * (may be NULL) naming the path and the fix. */
int cachedir_check(int root_fd, const char *real, bool create, char *why, size_t len);

/* The same for the path @root, creating nothing. */
int cachedir_check_path(const char *root, char *why, size_t len);

/* opendir() of @name below @dfd (no link followed), or NULL with errno. */
DIR *cachedir_opendir(int dfd, const char *name);

/* Is what @st describes ours, and writable by no one else? */
bool cachedir_ours(const struct stat *st);

#endif
