/* files.c - owns the open files: opens what a path names (a cache file,
 * an extracted file, the stats document), pins its blob against eviction
 * and keeps the list of files open so tree_free() can release them; and
 * counts the opens waiting on the network. One lock, openfiles.lock,
 * guards the list and the count. */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "artifact.h"
#include "blobcache.h"
#include "log.h"
#include "serve.h"
#include "stats.h"
#include "tree_impl.h"

struct openfiles {
	pthread_mutex_t lock;
	struct tree_file *head;		/* lock */
	unsigned waiting;		/* lock: opens waiting on the network */
	unsigned max_waiting;		/* 0: any; read-only */
	bool warned;			/* lock: refusals said since the count
					 * was last below max_waiting */
};

int openfiles_new(unsigned max_waiting, struct openfiles **out)
{
	struct openfiles *of = calloc(1, sizeof(*of));

	if (!of)
		return -ENOMEM;
	pthread_mutex_init(&of->lock, NULL);
	of->max_waiting = max_waiting;
	*out = of;
	return 0;
}

/* Each waiting open holds one of the caller's (FUSE's) threads for as long
 * as a download takes: beyond the limit, fail at once rather than take the
 * threads that lookups and /.ocifs/stats need. */
int openfiles_wait_begin(struct openfiles *of)
{
	bool say = false;
	int ret = 0;

	pthread_mutex_lock(&of->lock);
	if (of->max_waiting && of->waiting >= of->max_waiting) {
		say = !of->warned;
		of->warned = true;
		ret = -EAGAIN;
	} else {
		of->waiting++;
	}
	pthread_mutex_unlock(&of->lock);
	if (say)
		log_msg(LOG_WARNING, "too many opens waiting on downloads (%u): more get EAGAIN "
			"until one ends (-o max_threads)", of->max_waiting);
	return ret;
}

void openfiles_wait_end(struct openfiles *of)
{
	pthread_mutex_lock(&of->lock);
	of->waiting--;
	if (of->waiting + 1 < of->max_waiting)
		of->warned = false;
	pthread_mutex_unlock(&of->lock);
}

void openfiles_free(struct tree *t, struct openfiles *of)
{
	if (!of)
		return;
	while (of->head)
		tree_release(t, of->head);
	pthread_mutex_destroy(&of->lock);
	free(of);
}

/* The stats document in an anonymous file. */
static int open_stats(struct tree *t)
{
	char *doc;
	size_t len, off = 0;
	int fd, ret;

	ret = stats_json(t->stats, &doc, &len);
	if (ret < 0)
		return ret;
	fd = memfd_create("ocifs-stats", MFD_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		goto out_free;
	}
	while (off < len) {
		ssize_t n = write(fd, doc + off, len - off);
		if (n < 0) {
			ret = -errno;
			close(fd);
			goto out_free;
		}
		off += (size_t)n;
	}
	ret = fd;
out_free:
	free(doc);
	return ret;
}

/* "extract/sha256/<hex>/..." -> "sha256:<hex>" */
static void layer_of_extracted(const char *rel, char out[72])
{
	snprintf(out, 72, "sha256:%.64s", rel + strlen("extract/sha256/"));
}

static int do_open(struct tree *t, struct target *g, struct tree_file *f)
{
	const struct aentry *e = g->e;
	int ret;

	if (g->r.kind == R_STATS) {
		f->direct = true;
		return open_stats(t);
	}
	if (g->ext[0]) {
		/* Pin first: eviction must not take the layer under us. */
		layer_of_extracted(g->ext, f->pin);
		blobcache_pin(t->bc, f->pin);
		ret = serve_open_extracted(t, g->r.art, g->ext, O_RDONLY | O_NOFOLLOW);
		if (ret >= 0)
			stats_open(t->stats, true);	/* served from the extracted layer */
		return ret == -ELOOP ? -EINVAL : ret;
	}
	if (!e || e->kind == AE_DIR || e->kind == AE_ARCHIVE)
		return -EISDIR;
	snprintf(f->pin, sizeof(f->pin), "%s", e->digest);
	blobcache_pin(t->bc, f->pin);
	if (e->kind == AE_DATA) {
		ret = blobcache_put(t->bc, e->digest, e->data, e->size);
		return ret < 0 ? ret : blobcache_open(t->bc, e->digest, e->size, NULL, NULL);
	}
	return serve_open_blob(t, g->r.art, e->digest, e->size, e->kind == AE_MANIFEST);
}

int tree_open(struct tree *t, const char *path, struct tree_file **out)
{
	struct tree_file *f = calloc(1, sizeof(*f));
	struct target *g;
	int ret;

	if (!f)
		return -ENOMEM;
	f->fd = -1;
	ret = target_new(t, path, 0, &g);
	if (ret == 0) {
		ret = do_open(t, g, f);
		target_free(t, g);
	}
	if (ret < 0) {
		if (f->pin[0])
			blobcache_unpin(t->bc, f->pin);
		free(f);
		return ret;
	}
	f->fd = ret;
	pthread_mutex_lock(&t->files->lock);
	f->next = t->files->head;
	if (t->files->head)
		t->files->head->prev = f;
	t->files->head = f;
	pthread_mutex_unlock(&t->files->lock);
	*out = f;
	return 0;
}

void tree_release(struct tree *t, struct tree_file *f)
{
	pthread_mutex_lock(&t->files->lock);
	if (f->prev)
		f->prev->next = f->next;
	else
		t->files->head = f->next;
	if (f->next)
		f->next->prev = f->prev;
	pthread_mutex_unlock(&t->files->lock);
	if (f->fd >= 0)
		close(f->fd);
	if (f->pin[0])
		blobcache_unpin(t->bc, f->pin);
	free(f);
}
