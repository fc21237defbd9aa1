/* registries.c - owns the registries shown in / (given and visited) and
 * the registries that stopped answering. One lock, registries.lock,
 * guards both lists. */
#include "registries.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tree_impl.h"

/* A registry that stopped answering (refused, unreachable, timed out):
 * until @until it is not asked again, so that stale answers and cached
 * blobs are served at once instead of after a timeout per FUSE call. */
struct regstate {
	struct regstate *next;
	char name[256];
	time_t until;
	int err;
	char message[512];	/* reg_error.message */
};

struct registries {
	pthread_mutex_t lock;
	struct strlist names;		/* lock: shown in / */
	struct strlist answered;	/* lock: have answered a request */
	struct regstate *down;		/* lock: registries not answering */
};

static int names_add(struct strlist *l, const char *s)
{
	char **v = realloc(l->v, (l->n + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	l->v = v;
	if (!(v[l->n] = strdup(s)))
		return -ENOMEM;
	l->n++;
	return 0;
}

int registries_new(const char *const *names, struct registries **out)
{
	struct registries *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	pthread_mutex_init(&r->lock, NULL);
	for (size_t i = 0; names && names[i]; i++) {
		if (names_add(&r->names, names[i]) < 0) {
			registries_free(r);
			return -ENOMEM;
		}
	}
	*out = r;
	return 0;
}

void registries_free(struct registries *r)
{
	if (!r)
		return;
	while (r->down) {
		struct regstate *s = r->down;
		r->down = s->next;
		free(s);
	}
	strlist_release(&r->names);
	strlist_release(&r->answered);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

/* Add @s to @l unless there; r->lock held. */
static void names_put(struct strlist *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->v[i], s))
			return;
	names_add(l, s);
}

void registries_visit(struct registries *r, const char *reg)
{
	pthread_mutex_lock(&r->lock);
	names_put(&r->names, reg);
	names_put(&r->answered, reg);
	pthread_mutex_unlock(&r->lock);
}

void registries_list(struct registries *r, struct strlist *out)
{
	struct strlist l = { 0 };

	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < r->names.n; i++)
		if (names_add(&l, r->names.v[i]) < 0)
			break;
	pthread_mutex_unlock(&r->lock);
	*out = l;
}

/* reg_error.status of a refusal by whom it is for: HTTP has no such one. */
#define STATUS_NOT_SHARED (-1)

bool registries_answered(struct registries *r, const char *reg)
{
	bool found = false;

	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < r->answered.n && !found; i++)
		found = !strcmp(r->answered.v[i], reg);
	pthread_mutex_unlock(&r->lock);
	return found;
}

int reg_gate(struct tree *t, const char *reg, struct reg_error *err)
{
	struct registries *rs = t->regs;
	int ret = 0;

	if (t->may_fetch && !t->may_fetch()) {
		memset(err, 0, sizeof(*err));
		err->status = STATUS_NOT_SHARED;
		snprintf(err->message, sizeof(err->message), "not asked for another user "
			 "(-o share)");
		log_msg(LOG_DEBUG, "%s: %s", reg, err->message);
		return -EACCES;
	}
	if (regclient_mirror_count(t->rc, reg))
		return 0;
	pthread_mutex_lock(&rs->lock);
	for (struct regstate *r = rs->down; r; r = r->next) {
		if (strcmp(r->name, reg) || r->until <= tree_now())
			continue;
		memset(err, 0, sizeof(*err));
		snprintf(err->message, sizeof(err->message), "%.400s; not asked again for %lds",
			 r->message, (long)(r->until - tree_now()));
		ret = r->err;
		break;
	}
	pthread_mutex_unlock(&rs->lock);
	return ret;
}

bool reg_not_shared(const struct reg_error *err)
{
	return err->status == STATUS_NOT_SHARED;
}

void reg_outcome(struct tree *t, const char *reg, int ret, const struct reg_error *err)
{
	bool silent = ret < 0 && err->status == 0 &&
		      (ret == -EHOSTUNREACH || ret == -ETIMEDOUT || ret == -EIO);
	struct registries *rs = t->regs;
	struct regstate *r;
	const char *split = NULL;

	/* Listed in / once something under it resolved: a name that never
	 * answered is no registry to show. */
	if (ret == 0)
		registries_visit(rs, reg);
	if (ret == -EBADMSG || regclient_mirror_count(t->rc, reg))
		return;
	pthread_mutex_lock(&rs->lock);
	for (r = rs->down; r; r = r->next)
		if (!strcmp(r->name, reg))
			break;
	if (!r && silent && (r = calloc(1, sizeof(*r)))) {
		snprintf(r->name, sizeof(r->name), "%s", reg);
		r->next = rs->down;
		rs->down = r;
		/* "127.0.0.1" failing while "127.0.0.1:5000" is known: a tool
		 * split the path at ':' (skopeo's oci:PATH:REF, $PATH, docker -v). */
		for (size_t i = 0, l = strlen(reg); !strchr(reg, ':') && i < rs->names.n; i++)
			if (!strncmp(rs->names.v[i], reg, l) && rs->names.v[i][l] == ':')
				split = reg;
	}
	if (r) {
		r->until = silent ? tree_now() + t->down_window : 0;
		r->err = ret;
		snprintf(r->message, sizeof(r->message), "%s", err->message);
	}
	pthread_mutex_unlock(&rs->lock);
	if (split)
		log_msg(LOG_WARNING, "%s: not reachable; a path with %s:PORT in it was probably "
			"split at ':' by the tool reading it (skopeo oci:PATH:REF, $PATH, docker -v): "
			"run skopeo from inside the directory (oci:.), or use a registry mount, a "
			"reference mount or a symlink", reg, reg);
}
