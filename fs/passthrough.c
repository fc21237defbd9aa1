/* passthrough.c - FUSE passthrough of verified cache files, or nothing. */
#define FUSE_USE_VERSION 312

#include "passthrough.h"

#include <errno.h>
#include <fuse.h>

#ifdef FUSE_CAP_PASSTHROUGH

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "log.h"

/* The kernel's backing-file registration (linux/fuse.h since 6.9; not in
 * every distribution's headers, and libfuse's copy is not installed). */
struct backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define BACKING_OPEN _IOW(229, 1, struct backing_map)
#define BACKING_CLOSE _IOW(229, 2, uint32_t)

/* One path open in one mode: passthrough with @id, or cached (@id 0). */
struct pt_ent {
	char *path;
	dev_t dev;		/* the backing file, to tell content apart */
	ino_t ino;
	int id;			/* backing id, 0: not passthrough */
	unsigned opens;
	struct pt_ent *next;
};

#define PT_BUCKETS 256

static struct {
	pthread_mutex_t lock;
	bool offered, wanted;		/* set once in passthrough_init() */
	int refused;			/* lock: errno of a refused registration */
	struct pt_ent *bucket[PT_BUCKETS];	/* lock */
} pt = { .lock = PTHREAD_MUTEX_INITIALIZER };

void passthrough_init(struct fuse_conn_info *conn)
{
	pt.offered = conn->capable & FUSE_CAP_PASSTHROUGH;
	if (pt.offered) {
		conn->want |= FUSE_CAP_PASSTHROUGH;
		pt.wanted = true;
	}
}

static unsigned hash(const char *s)
{
	unsigned h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h % PT_BUCKETS;
}

static struct pt_ent **find(const char *path)
{
	struct pt_ent **pp;

	for (pp = &pt.bucket[hash(path)]; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->path, path))
			break;
	return pp;
}

/* Register @fd with the kernel: its id, or 0 (and why in pt.refused). */
static int backing_open(int fd)
{
	struct fuse_context *c = fuse_get_context();
	struct backing_map map = { .fd = fd };
	int id;

	if (pt.refused)
		return 0;	/* EPERM stays EPERM: do not ask for every open */
	id = ioctl(fuse_session_fd(fuse_get_session(c->fuse)), BACKING_OPEN, &map);
	if (id > 0)
		return id;
	pt.refused = id < 0 ? errno : EINVAL;
	log_msg(LOG_DEBUG, "passthrough off: the kernel refused a backing file: %s",
		strerror(pt.refused));
	return 0;
}

static void backing_close(int id)
{
	uint32_t v = (uint32_t)id;

	ioctl(fuse_session_fd(fuse_get_session(fuse_get_context()->fuse)), BACKING_CLOSE, &v);
}

int passthrough_open(const char *path, int fd, struct fuse_file_info *fi)
{
	struct pt_ent **pp, *e;
	struct stat st;
	int ret = 0;

	if (!pt.wanted || fstat(fd, &st) < 0)
		return 0;
	pthread_mutex_lock(&pt.lock);
	pp = find(path);
	e = *pp;
	/* In cached mode other content may share the inode (the kernel
	 * drops the pages on open); a backing file cannot be swapped. */
	if (e && e->id && (e->dev != st.st_dev || e->ino != st.st_ino)) {
		ret = -EBUSY;
		goto out;
	}
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || !(e->path = strdup(path))) {
			free(e);
			ret = -ENOMEM;
			goto out;
		}
		e->dev = st.st_dev;
		e->ino = st.st_ino;
		e->id = backing_open(fd);
		*pp = e;
	}
	e->opens++;
	if (e->id) {
		fi->backing_id = e->id;
		fi->keep_cache = 0;	/* with it the kernel fails the open (EIO, 6.18) */
	}
out:
	pthread_mutex_unlock(&pt.lock);
	return ret;
}

void passthrough_release(const char *path)
{
	struct pt_ent **pp, *e;

	if (!pt.wanted || !path)
		return;
	pthread_mutex_lock(&pt.lock);
	pp = find(path);
	e = *pp;
	if (e && --e->opens == 0) {
		*pp = e->next;
		if (e->id)
			backing_close(e->id);
		free(e->path);
		free(e);
	}
	pthread_mutex_unlock(&pt.lock);
}

void passthrough_free(void)
{
	pthread_mutex_lock(&pt.lock);
	for (unsigned i = 0; i < PT_BUCKETS; i++) {
		while (pt.bucket[i]) {
			struct pt_ent *e = pt.bucket[i];
			pt.bucket[i] = e->next;
			free(e->path);
			free(e);
		}
	}
	pthread_mutex_unlock(&pt.lock);
}

void passthrough_print(FILE *f)
{
	fprintf(f, "FUSE passthrough: compiled in (used where the kernel offers it and "
		"backing files may be registered: CAP_SYS_ADMIN)\n");
}

#else /* libfuse without passthrough */

void passthrough_init(struct fuse_conn_info *conn)
{
	(void)conn;
}

int passthrough_open(const char *path, int fd, struct fuse_file_info *fi)
{
	(void)path;
	(void)fd;
	(void)fi;
	return 0;
}

void passthrough_release(const char *path)
{
	(void)path;
}

void passthrough_free(void)
{
}

void passthrough_print(FILE *f)
{
	fprintf(f, "FUSE passthrough: not compiled in (libfuse %s; it needs 3.17)\n",
		fuse_pkgversion());
}

#endif
