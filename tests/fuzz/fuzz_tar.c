/* fuzz_tar.c - libFuzzer target for safe tar extraction (layers/tarx.h).
 *
 * Each input is written to a memfd and extracted with tarx_extract() into
 * a fresh directory, removed afterwards. Checked, whether the archive was
 * accepted or refused:
 *   - nothing is created next to the destination (no escape by "..",
 *     absolute names or links);
 *   - every symbolic link that was kept resolves, if at all, beneath the
 *     destination (openat2 RESOLVE_BENEATH);
 *   - a refusal says why (read after the call: the reason must be ours,
 *     not libarchive's freed message), and the tree is removable.
 * The input is also split at its first NUL into an entry name and a link
 * target for tarx_path_ok() / tarx_symlink_ok(), and an accepted link is
 * checked against an independent lexical resolution.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fuzz.h"
#include "tarx.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

/* base/root/dest: dest is extracted to; root must hold nothing else, base
 * nothing but root. */
static char base[4096], root[4200], dest[4300];
static int memfd = -1;

static void cleanup_base(void)
{
	tarx_remove_tree(base);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");

	(void)argc;
	(void)argv;
	snprintf(base, sizeof(base), "%s/fuzz_tar.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(base)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(root, sizeof(root), "%s/root", base);
	snprintf(dest, sizeof(dest), "%s/dest", root);
	if (mkdir(root, 0755) < 0) {
		perror(root);
		exit(1);
	}
	atexit(cleanup_base);
	memfd = memfd_create("fuzz_tar", MFD_CLOEXEC);
	if (memfd < 0) {
		perror("memfd_create");
		exit(1);
	}
	return 0;
}

/* Names in @dir other than @only (NULL: none allowed). */
static void expect_only(const char *dir, const char *only)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	FUZZ_ASSERT(d);
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (!only || strcmp(de->d_name, only)) {
			fprintf(stderr, "%s/%s was created outside the destination\n", dir,
				de->d_name);
			abort();
		}
	}
	closedir(d);
}

static int dest_fd = -1;

static int check_link(const char *path, const struct stat *st, int type, struct FTW *f)
{
	struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_BENEATH };
	const char *rel = path + strlen(dest) + 1;
	long fd;

	(void)st;
	(void)f;
	if (type != FTW_SL && type != FTW_SLN)
		return 0;
	fd = syscall(SYS_openat2, dest_fd, rel, &how, sizeof(how));
	if (fd >= 0) {
		close((int)fd);
		return 0;
	}
	if (errno == EXDEV) {
		char target[4096];
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		target[n < 0 ? 0 : n] = '\0';
		fprintf(stderr, "symlink %s -> %s resolves outside the destination\n", rel,
			target);
		abort();
	}
	/* ENOENT (dangling), ELOOP, ENOTDIR: never leads outside */
	return 0;
}

static void extract(const uint8_t *data, size_t size)
{
	struct tarx_limits lim = { .max_bytes = 1 << 20, .max_entries = 256 };
	struct tarx_error err;
	int ret;

	if (ftruncate(memfd, 0) < 0 || pwrite(memfd, data, size, 0) != (ssize_t)size ||
	    lseek(memfd, 0, SEEK_SET) != 0) {
		perror("memfd");
		abort();
	}
	ret = tarx_extract(memfd, dest, &lim, &err, NULL);
	FUZZ_ASSERT(ret <= 0);
	/* Read the whole reason after the call: a message that died with
	 * libarchive's handle is a use after free ASan reports here. */
	FUZZ_ASSERT(memchr(err.reason, '\0', sizeof(err.reason)));
	FUZZ_ASSERT(strlen(err.reason) < sizeof(err.reason));
	if (ret == -EPERM || ret == -EFBIG)
		FUZZ_ASSERT(err.reason[0] != '\0');
	FUZZ_ASSERT(memchr(err.entry, '\0', sizeof(err.entry)));

	expect_only(base, "root");
	expect_only(root, "dest");
	dest_fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dest_fd >= 0) {
		nftw(dest, check_link, 16, FTW_PHYS);
		close(dest_fd);
		dest_fd = -1;
	}
	FUZZ_ASSERT(tarx_remove_tree(dest) == 0);
	expect_only(root, NULL);
}

/* Lexically resolve @target relative to dirname(@path); false if it goes
 * above the root. Independent of tarx.c's walk. */
static bool lexically_inside(const char *path, const char *target)
{
	char *buf;
	int depth = 0;
	const char *dir_end = strrchr(path, '/');
	bool ok = true;

	if (asprintf(&buf, "%.*s/%s", dir_end ? (int)(dir_end - path) : 0, path, target) < 0)
		abort();
	for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (!strcmp(c, "."))
			continue;
		if (!strcmp(c, "..")) {
			if (--depth < 0) {
				ok = false;
				break;
			}
		} else {
			depth++;
		}
	}
	free(buf);
	return ok;
}

static void check_names(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 2);
	const char *path, *target;

	if (!s)
		return;
	memcpy(s, data, size);
	s[size] = s[size + 1] = '\0';
	path = s;
	target = s + strlen(s) + 1;
	if (target > s + size)
		target = s + size;	/* no NUL: empty target */

	bool pok = tarx_path_ok(path);
	if (pok) {
		FUZZ_ASSERT(path[0] != '/');
		FUZZ_ASSERT(lexically_inside(path, "."));
	}
	if (pok && tarx_symlink_ok(path, target)) {
		FUZZ_ASSERT(*target && target[0] != '/');
		FUZZ_ASSERT(lexically_inside(path, target));
	}
	(void)tarx_symlink_ok(path, target);
	(void)tarx_path_ok(target);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_names(data, size);
	extract(data, size);
	return 0;
}
