/* registries.c - owns the registries shown in / (given and answered) and
 * those that stopped answering. Registries met while the mount runs are
 * two hashed tables (lrumap.h) of at most -o registries_max each, the
 * least recently used dropped first: those that have answered (a dropped
 * one leaves / until it answers again), and those silent that never did
 * (a dropped one is asked again), so that names that lead nowhere never
 * push a working registry out of /. registries.lock guards the tables
 * and every entry; the given names are read-only. */
#include "registries.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "lrumap.h"
#include "tree_impl.h"

/* A registry met. One that stopped answering (refused, unreachable,
 * timed out) is not asked again until @until, so that stale answers and
 * cached blobs are served at once instead of after a timeout per FUSE
 * call. Key: the registry's name. */
struct regent {
	struct lrumap_node node;	/* first: a node is its entry */
	bool answered;		/* has answered a request: shown in / */
	time_t until;
	int err;
	char message[512];	/* reg_error.message */
};

struct registries {
	pthread_mutex_t lock;
	struct strlist given;	/* shown in / from the start; read-only */
	struct lrumap met;	/* lock: struct regent, answered */
	struct lrumap quiet;	/* lock: struct regent, silent, never answered */
};

#define REG_KEY(reg) ((struct lrukey){ { (reg) }, 1 })

static void regent_free(struct lrumap_node *n)
{
	lrumap_node_release(n);
	free(n);
}

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

static bool names_have(const struct strlist *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->v[i], s))
			return true;
	return false;
}

int registries_new(const char *const *names, size_t max, struct registries **out)
{
	struct registries *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	pthread_mutex_init(&r->lock, NULL);
	/* Registries met, beyond those given: a mount asked for names on
	 * the command line of every tool run in it may meet many. */
	if (lrumap_init(&r->met, max, 0) < 0 || lrumap_init(&r->quiet, max, 0) < 0)
		goto out_free;
	for (size_t i = 0; names && names[i]; i++)
		if (!names_have(&r->given, names[i]) && names_add(&r->given, names[i]) < 0)
			goto out_free;
	*out = r;
	return 0;
out_free:
	registries_free(r);
	return -ENOMEM;
}

void registries_free(struct registries *r)
{
	if (!r)
		return;
	lrumap_release(&r->met, regent_free);
	lrumap_release(&r->quiet, regent_free);
	strlist_release(&r->given);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

/* The entry for @reg, answered or not, made the most recently used of
 * its table; NULL if none. r->lock held. */
static struct regent *regent_find(struct registries *r, const char *reg)
{
	struct lrukey k = REG_KEY(reg);
	struct regent *e = (struct regent *)lrumap_get(&r->met, &k);

	return e ? e : (struct regent *)lrumap_get(&r->quiet, &k);
}

/* A new entry for @reg in @m (where it is not), the least recently used
 * dropped beyond the bound; NULL short of memory. r->lock held. */
static struct regent *regent_add(struct lrumap *m, const char *reg)
{
	struct lrukey k = REG_KEY(reg);
	struct regent *e = calloc(1, sizeof(*e));

	if (!e || lrumap_node_init(m, &e->node, &k, sizeof(*e)) < 0) {
		free(e);
		return NULL;
	}
	lrumap_add(m, &e->node);
	for (struct lrumap_node *n = lrumap_trim(m, &e->node), *next; n; n = next) {
		next = n->next;
		regent_free(n);
	}
	return e;
}

void registries_visit(struct registries *r, const char *reg)
{
	struct lrukey k = REG_KEY(reg);
	struct regent *e, *q;

	pthread_mutex_lock(&r->lock);
	e = (struct regent *)lrumap_get(&r->met, &k);
	if (!e) {
		/* Silent until now: it moves to the registries shown (what it
		 * said while silent is over; reg_outcome() follows). */
		q = (struct regent *)lrumap_peek(&r->quiet, &k);
		if (q) {
			lrumap_del(&r->quiet, &q->node);
			regent_free(&q->node);
		}
		e = regent_add(&r->met, reg);
	}
	if (e)
		e->answered = true;
	pthread_mutex_unlock(&r->lock);
}

void registries_list(struct registries *r, struct strlist *out)
{
	struct strlist l = { 0 };

	for (size_t i = 0; i < r->given.n; i++)
		if (names_add(&l, r->given.v[i]) < 0)
			goto out;
	pthread_mutex_lock(&r->lock);
	for (struct lrumap_node *n = r->met.head; n; n = n->next) {
		const char *name = lrumap_key_part(n, 0);
		if (((struct regent *)n)->answered && !names_have(&r->given, name) &&
		    names_add(&l, name) < 0)
			break;
	}
	pthread_mutex_unlock(&r->lock);
out:
	*out = l;
}

bool registries_answered(struct registries *r, const char *reg)
{
	struct regent *e;
	bool answered;

	pthread_mutex_lock(&r->lock);
	e = regent_find(r, reg);
	answered = e && e->answered;
	pthread_mutex_unlock(&r->lock);
	return answered;
}

/* reg_error.status of a refusal by whom it is for: HTTP has no such one. */
#define STATUS_NOT_SHARED (-1)

int reg_gate(struct tree *t, const char *reg, struct reg_error *err)
{
	struct registries *rs = t->regs;
	struct regent *e;
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
	e = regent_find(rs, reg);
	if (e && e->until > tree_now()) {
		memset(err, 0, sizeof(*err));
		snprintf(err->message, sizeof(err->message), "%.400s; not asked again for %lds",
			 e->message, (long)(e->until - tree_now()));
		ret = e->err;
	}
	pthread_mutex_unlock(&rs->lock);
	return ret;
}

bool reg_not_shared(const struct reg_error *err)
{
	return err->status == STATUS_NOT_SHARED;
}

/* Is a registry "@reg:PORT" known? A tool split a path at ':' (skopeo's
 * oci:PATH:REF, $PATH, docker -v). r->lock held. */
static bool split_at_colon(const struct registries *r, const char *reg)
{
	size_t l = strlen(reg);

	if (strchr(reg, ':'))
		return false;
	for (size_t i = 0; i < r->given.n; i++)
		if (!strncmp(r->given.v[i], reg, l) && r->given.v[i][l] == ':')
			return true;
	for (const struct lrumap_node *n = r->met.head; n; n = n->next) {
		const char *name = lrumap_key_part(n, 0);
		if (((const struct regent *)n)->answered && !strncmp(name, reg, l) &&
		    name[l] == ':')
			return true;
	}
	return false;
}

void reg_outcome(struct tree *t, const char *reg, int ret, const struct reg_error *err)
{
	bool silent = ret < 0 && err->status == 0 &&
		      (ret == -EHOSTUNREACH || ret == -ETIMEDOUT || ret == -EIO);
	struct registries *rs = t->regs;
	struct regent *e;
	bool split = false;

	/* Listed in / once something under it resolved: a name that never
	 * answered is no registry to show. */
	if (ret == 0)
		registries_visit(rs, reg);
	if (ret == -EBADMSG || regclient_mirror_count(t->rc, reg))
		return;
	pthread_mutex_lock(&rs->lock);
	e = regent_find(rs, reg);
	if (!e && silent) {
		split = split_at_colon(rs, reg);
		e = regent_add(&rs->quiet, reg);
	}
	if (e) {
		e->until = silent ? tree_now() + t->down_window : 0;
		e->err = ret;
		snprintf(e->message, sizeof(e->message), "%s", err->message);
	}
	pthread_mutex_unlock(&rs->lock);
	if (split)
		log_msg(LOG_WARNING, "%s: not reachable; a path with %s:PORT in it was probably "
			"split at ':' by the tool reading it (skopeo oci:PATH:REF, $PATH, docker -v): "
			"run skopeo from inside the directory (oci:.), or use a registry mount, a "
			"reference mount or a symlink", reg, reg);
}
