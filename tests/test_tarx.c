/* test_tarx.c - tar extraction: what is kept and what is refused. Builds
 * archives with libarchive's writer. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "tarx.h"

struct ent {
	const char *path;
	mode_t type;
	const char *data;	/* file data or link target */
	bool hard;
	mode_t mode;		/* 0: 0755 for directories, 06755 otherwise */
};

static int make_tar(const char *path, const struct ent *ents, size_t n, bool gzip)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e;

	archive_write_set_format_pax_restricted(a);
	if (gzip)
		archive_write_add_filter_gzip(a);
	if (archive_write_open_filename(a, path) != ARCHIVE_OK)
		return -1;
	for (size_t i = 0; i < n; i++) {
		e = archive_entry_new();
		archive_entry_set_pathname(e, ents[i].path);
		archive_entry_set_filetype(e, ents[i].type);
		archive_entry_set_perm(e, ents[i].mode ? ents[i].mode & 07777 :
					  ents[i].type == AE_IFDIR ? 0755 : 06755);
		if (ents[i].type == AE_IFREG && ents[i].hard) {
			archive_entry_set_hardlink(e, ents[i].data);
			archive_entry_set_size(e, 0);
		} else if (ents[i].type == AE_IFREG) {
			archive_entry_set_size(e, (la_int64_t)strlen(ents[i].data));
		} else if (ents[i].type == AE_IFLNK) {
			archive_entry_set_symlink(e, ents[i].data);
		}
		archive_write_header(a, e);
		if (ents[i].type == AE_IFREG && !ents[i].hard)
			archive_write_data(a, ents[i].data, strlen(ents[i].data));
		archive_entry_free(e);
	}
	archive_write_close(a);
	archive_write_free(a);
	return 0;
}

static char dir[256];
static int counter;

/* Extract @ents; returns tarx_extract's result. */
static int run(const struct ent *ents, size_t n, bool gzip, const struct tarx_limits *lim,
	       char *dest, struct tarx_error *err)
{
	char tar[300];
	int fd, ret;

	snprintf(tar, sizeof(tar), "%s/t%d.tar", dir, counter);
	snprintf(dest, 300, "%s/out%d", dir, counter++);
	if (make_tar(tar, ents, n, gzip) < 0)
		return -999;
	fd = open(tar, O_RDONLY);
	ret = tarx_extract(fd, dest, lim, err, NULL);
	close(fd);
	return ret;
}

static bool exists(const char *base, const char *rel)
{
	char p[600];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", base, rel);
	return lstat(p, &st) == 0;
}

static const struct tarx_limits lim = { 1 << 20, 100, 0, 0 };

static void test_good_archive(void)
{
	struct tarx_error err;
	char dest[300], p[600];
	struct stat st;

	/* A good archive, gzipped. */
	static const struct ent good[] = {
		{ "bin", AE_IFDIR, NULL, false, 0 },
		{ "bin/linux/amd64/entrypoint", AE_IFREG, "ELF", false, 0 },
		{ "./README", AE_IFREG, "hi\n", false, 0 },
		{ "bin/link", AE_IFLNK, "linux/amd64/entrypoint", false, 0 },
		{ "bin/up", AE_IFLNK, "../README", false, 0 },
		{ "hard", AE_IFREG, "README", true, 0 },
	};
	int gr = run(good, 6, true, &lim, dest, &err);
	if (gr) fprintf(stderr, "good: %d %s: %s\n", gr, err.entry, err.reason);
	CHECK(gr == 0);
	CHECK(exists(dest, "bin/linux/amd64/entrypoint"));
	CHECK(exists(dest, "README") && exists(dest, "hard") && exists(dest, "bin/up"));
	snprintf(p, sizeof(p), "%s/bin/linux/amd64/entrypoint", dest);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07000) == 0);	/* no set-id */
	CHECK(stat(p, &st) == 0 && (st.st_mode & 0100));		/* exec kept */
	tarx_remove_tree(dest);
	CHECK(!exists(dest, ""));
}

static void test_refusals(void)
{
	struct tarx_error err;
	char dest[300];

	/* Refusals: each is -EPERM or -EFBIG and names the entry. */
	static const struct {
		struct ent e;
		int want;
	} bad[] = {
		{ { "../evil", AE_IFREG, "x", false, 0 }, -EPERM },
		{ { "a/../../evil", AE_IFREG, "x", false, 0 }, -EPERM },
		{ { "/etc/evil", AE_IFREG, "x", false, 0 }, -EPERM },
		{ { "l", AE_IFLNK, "../outside", false, 0 }, -EPERM },
		{ { "a/l", AE_IFLNK, "../../outside", false, 0 }, -EPERM },
		{ { "l", AE_IFLNK, "/etc/passwd", false, 0 }, -EPERM },
		{ { "h", AE_IFREG, "../x", true, 0 }, -EPERM },
		{ { "up", AE_IFLNK, "dl/..", false, 0 }, -EPERM },
		{ { "dev", AE_IFCHR, NULL, false, 0 }, -EPERM },
		{ { "fifo", AE_IFIFO, NULL, false, 0 }, -EPERM },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int ret = run(&bad[i].e, 1, false, &lim, dest, &err);
		if (ret != bad[i].want) {
			fprintf(stderr, "bad[%zu] %s: got %d\n", i, bad[i].e.path, ret);
			check_failures++;
		}
		CHECK(err.reason[0] != '\0');
		CHECK(!strcmp(err.entry, bad[i].e.path) ||
		      (bad[i].e.path[0] == '/' && strstr(err.entry, "etc/evil")));
		tarx_remove_tree(dest);
	}
	CHECK(!exists(dir, "evil") && !exists("/etc", "evil") && !exists(dir, "x"));
}

static char big[2048];

static void test_limits(void)
{
	struct tarx_error err;
	char dest[300];

	/* Limits. */
	struct tarx_limits small = { 1000, 3, 0, 0 };
	struct ent bomb = { "big", AE_IFREG, big, false, 0 };
	CHECK(run(&bomb, 1, true, &small, dest, &err) == -EFBIG);
	tarx_remove_tree(dest);
	static const struct ent many[] = {
		{ "1", AE_IFREG, "", false, 0 }, { "2", AE_IFREG, "", false, 0 },
		{ "3", AE_IFREG, "", false, 0 }, { "4", AE_IFREG, "", false, 0 },
	};
	CHECK(run(many, 4, false, &small, dest, &err) == -EFBIG);
	CHECK_STR(err.entry, "4");
	tarx_remove_tree(dest);
}

static void test_not_an_archive(void)
{
	struct tarx_error err;
	char dest[300], p[600];

	/* Not an archive. */
	snprintf(p, sizeof(p), "%s/plain", dir);
	FILE *f = fopen(p, "w");
	fputs("kind: provider\nname: lite\n", f);
	fclose(f);
	int fd = open(p, O_RDONLY);
	snprintf(dest, sizeof(dest), "%s/outplain", dir);
	CHECK(tarx_extract(fd, dest, &lim, &err, NULL) == -EINVAL);
	close(fd);
	tarx_remove_tree(dest);
}

static void test_cut_short_names_the_entry(void)
{
	struct tarx_error err;
	char dest[300], p[600];
	int fd;

	/* Cut short inside an entry's data, after the entry was renamed under
	 * dest: the refusal still names the entry as the archive did (it
	 * used to read libarchive's freed copy: found by fuzz_tar). */
	struct ent cut = { "a/big", AE_IFREG, big, false, 0 };
	snprintf(p, sizeof(p), "%s/cut.tar", dir);
	CHECK(make_tar(p, &cut, 1, false) == 0);
	CHECK(truncate(p, 512 + 1024) == 0);
	fd = open(p, O_RDONLY);
	snprintf(dest, sizeof(dest), "%s/outcut", dir);
	CHECK(tarx_extract(fd, dest, &lim, &err, NULL) < 0);
	CHECK_STR(err.entry, "a/big");
	CHECK(err.reason[0] != '\0');
	close(fd);
	tarx_remove_tree(dest);
}

static void test_path_checks(void)
{
	/* Path checks, directly. */
	CHECK(tarx_path_ok("a/b"));
	CHECK(tarx_path_ok("./a"));
	CHECK(!tarx_path_ok(""));
	CHECK(!tarx_path_ok("a/../b"));
	CHECK(!tarx_path_ok("a\nb"));
	CHECK(tarx_symlink_ok("a/b/l", "../c"));
	CHECK(tarx_symlink_ok("a/l", "../c"));
	CHECK(!tarx_symlink_ok("l", "../c"));
	CHECK(!tarx_symlink_ok("a/l", "x/../../../c"));
	/* ".." after a name: the name may be a link ("x" -> "."), and then
	 * "x/../../c" from a/ is outside (found by fuzz_tar's physical check). */
	CHECK(!tarx_symlink_ok("a/l", "x/../../c"));
	CHECK(!tarx_symlink_ok("up", "dl/.."));
	CHECK(tarx_symlink_ok("a/b/l", "./../../c/./d"));
	CHECK(!tarx_symlink_ok("a/l", ""));
}

/* "up/" -> ".." names the link "up" at the top once libarchive drops the
 * slash: one level out (issue 12). Names are normalised before levels are
 * counted. */
static void test_trailing_slash_link_is_refused(void)
{
	static const struct ent escapes[] = {
		{ "up/", AE_IFLNK, "..", false, 0 },
		{ "a/./", AE_IFLNK, "..", false, 0 },
		{ "./up//", AE_IFLNK, "..", false, 0 },
	};
	struct tarx_error err;
	char dest[300];

	for (size_t i = 0; i < sizeof(escapes) / sizeof(escapes[0]); i++) {
		int ret = run(&escapes[i], 1, false, &lim, dest, &err);
		if (ret != -EPERM) {
			fprintf(stderr, "%s -> ..: got %d\n", escapes[i].path, ret);
			check_failures++;
		}
		tarx_remove_tree(dest);
	}
	CHECK(!tarx_symlink_ok("up/", ".."));
	CHECK(!tarx_symlink_ok("a/./", ".."));
	CHECK(!tarx_symlink_ok("a//", "../x"));
	CHECK(tarx_symlink_ok("a/b/", ".."));
	CHECK(tarx_symlink_ok("a//b", "../x"));
}

static mode_t mode_at(const char *base, const char *rel)
{
	char p[600];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", base, rel);
	return lstat(p, &st) == 0 ? st.st_mode & 07777 : (mode_t)-1;
}

/* The top is private, entries keep their bits minus set-id and group or
 * other write, whatever the umask; we can always read and remove. */
static void test_modes_on_disk(void)
{
	static const struct ent ents[] = {
		{ "ro", AE_IFDIR, NULL, false, 0555 },
		{ "ro/tool", AE_IFREG, "x", false, 04775 },
		{ "ro/none", AE_IFREG, "x", false, 01000 },
		{ "secret", AE_IFREG, "x", false, 0600 },
		{ "shared", AE_IFREG, "x", false, 0666 },
	};
	struct tarx_error err;
	char dest[300];
	mode_t old = umask(0);

	CHECK(run(ents, 5, false, &lim, dest, &err) == 0);
	umask(old);
	CHECK(mode_at(dest, "") == 0700);
	CHECK(mode_at(dest, "ro") == 0755);
	CHECK(mode_at(dest, "ro/tool") == 0755);
	CHECK(mode_at(dest, "ro/none") == 0400);
	CHECK(mode_at(dest, "secret") == 0600);
	CHECK(mode_at(dest, "shared") == 0644);
	tarx_remove_tree(dest);
}

/* A tar holding one sparse file of @logical bytes with @data bytes of
 * data at its end. */
static int make_sparse_tar(const char *path, int64_t logical, size_t data)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();
	char *buf = malloc(data);

	memset(buf, 'd', data);
	archive_write_set_format_pax(a);
	if (archive_write_open_filename(a, path) != ARCHIVE_OK)
		return -1;
	archive_entry_set_pathname(e, "sparse");
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, logical);
	archive_entry_sparse_add_entry(e, logical - (int64_t)data, (int64_t)data);
	archive_write_header(a, e);
	archive_write_data(a, buf, data);
	archive_entry_free(e);
	archive_write_close(a);
	archive_write_free(a);
	free(buf);
	return 0;
}

/* libarchive refuses to write through a link ("d" -> "sub", then "d/x"):
 * its message is freed with its handle, so the reason must be our copy
 * (read it after the call: ASan and valgrind see a use after free). */
static void test_libarchive_refusal_reason_outlives_it(void)
{
	static const struct ent ents[] = {
		{ "sub", AE_IFDIR, NULL, false, 0 },
		{ "d", AE_IFLNK, "sub", false, 0 },
		{ "d/x", AE_IFREG, "x", false, 0 },
	};
	struct tarx_error err;
	char dest[300], copy[sizeof(err.reason)];

	CHECK(run(ents, 3, false, &lim, dest, &err) < 0);
	snprintf(copy, sizeof(copy), "%s", err.reason);
	CHECK(strlen(copy) > 0);
	CHECK_STR(err.entry, "d/x");
	tarx_remove_tree(dest);
}

/* A sparse file stays sparse and counts its data, not its holes. */
static void test_sparse_stays_sparse(void)
{
	struct tarx_limits l = { 1 << 20, 100, 0, 0 };
	struct tarx_error err;
	char tar[300], dest[300], p[600];
	uint64_t footprint = 0;
	struct stat st;
	int fd;

	snprintf(tar, sizeof(tar), "%s/sparse.tar", dir);
	snprintf(dest, sizeof(dest), "%s/outsparse", dir);
	CHECK(make_sparse_tar(tar, 256 << 20, 4096) == 0);
	fd = open(tar, O_RDONLY);
	CHECK(tarx_extract(fd, dest, &l, &err, &footprint) == 0);
	close(fd);
	CHECK(footprint == 4096);
	snprintf(p, sizeof(p), "%s/sparse", dest);
	CHECK(stat(p, &st) == 0 && st.st_size == 256 << 20);
	CHECK(st.st_blocks * 512 < 1 << 20);
	tarx_remove_tree(dest);
}

/* A small gzip of zeros that would expand past the ratio is refused. */
static void test_expansion_ratio(void)
{
	struct tarx_limits l = { 1ull << 30, 100, 100, 1 << 20 };
	struct tarx_error err;
	char *zeros = calloc(1, 8 << 20);
	char tar[300], dest[300];
	uint64_t footprint = 0;
	int fd;

	memset(zeros, '0', (8 << 20) - 1);	/* 8 MiB of '0' gzips to ~8 KiB */
	struct ent bomb = { "zeros", AE_IFREG, zeros, false, 0644 };
	snprintf(tar, sizeof(tar), "%s/ratio.tgz", dir);
	snprintf(dest, sizeof(dest), "%s/outratio", dir);
	CHECK(make_tar(tar, &bomb, 1, true) == 0);
	fd = open(tar, O_RDONLY);
	CHECK(tarx_extract(fd, dest, &l, &err, &footprint) == -EFBIG);
	CHECK(strstr(err.reason, "ratio") != NULL);
	CHECK_STR(err.entry, "zeros");
	tarx_remove_tree(dest);
	/* Under the floor any ratio is fine. */
	l.ratio_floor = 16 << 20;
	lseek(fd, 0, SEEK_SET);
	CHECK(tarx_extract(fd, dest, &l, &err, &footprint) == 0);
	CHECK(footprint == (8 << 20) - 1);
	close(fd);
	tarx_remove_tree(dest);
	free(zeros);
}

/* As a user other than root: a tree with 0555 and 0 directories (as older
 * versions and other tools leave them) is removed. */
static void test_remove_readonly_tree_as_nobody(void)
{
	char top[300], p[700];
	pid_t pid;
	int status = -1;

	snprintf(top, sizeof(top), "%s/nobody", dir);
	CHECK(mkdir(top, 0700) == 0);
	if (geteuid() == 0) {
		CHECK(chmod(dir, 0711) == 0);	/* nobody passes through */
		CHECK(chown(top, 65534, 65534) == 0);
	}
	pid = fork();
	if (pid == 0) {
		if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
			_exit(2);
		snprintf(p, sizeof(p), "%s/t", top);
		mkdir(p, 0755);
		snprintf(p, sizeof(p), "%s/t/ro", top);
		mkdir(p, 0755);
		snprintf(p, sizeof(p), "%s/t/ro/file", top);
		close(open(p, O_CREAT | O_WRONLY, 0444));
		snprintf(p, sizeof(p), "%s/t/ro/closed", top);
		mkdir(p, 0755);
		snprintf(p, sizeof(p), "%s/t/ro/closed/file", top);
		close(open(p, O_CREAT | O_WRONLY, 0444));
		snprintf(p, sizeof(p), "%s/t/ro/closed", top);
		chmod(p, 0);
		snprintf(p, sizeof(p), "%s/t/ro", top);
		chmod(p, 0555);
		snprintf(p, sizeof(p), "%s/t", top);
		chmod(p, 0555);
		_exit(tarx_remove_tree(p) == 0 && !exists(p, "") ? 0 : 1);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	tarx_remove_tree(top);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ocifs-tarx-XXXXXX");
	if (!mkdtemp(dir))
		return 77;
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';

	test_good_archive();
	test_refusals();
	test_limits();
	test_not_an_archive();
	test_cut_short_names_the_entry();
	test_path_checks();
	test_trailing_slash_link_is_refused();
	test_modes_on_disk();
	test_libarchive_refusal_reason_outlives_it();
	test_sparse_stays_sparse();
	test_expansion_ratio();
	test_remove_readonly_tree_as_nobody();

	tarx_remove_tree(dir);
	return CHECK_DONE();
}
