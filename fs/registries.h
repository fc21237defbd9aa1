/* registries.h - the registries shown in / and those not answering. */
#ifndef OCIFS_REGISTRIES_H
#define OCIFS_REGISTRIES_H

#include <stdbool.h>

#include "client.h"

struct tree;
struct registries;

/* @names: NULL-terminated, listed in / from the start (may be NULL); at
 * most @max others (0: unbounded) that answered. */
int registries_new(const char *const *names, size_t max, struct registries **out);
void registries_free(struct registries *r);

/* List @reg in /. */
void registries_visit(struct registries *r, const char *reg);

/* Has @reg answered a request yet (listed by registries_visit())? */
bool registries_answered(struct registries *r, const char *reg);

/* A copy of the names for listing in / (short of memory: some of them);
 * the caller releases it. */
void registries_list(struct registries *r, struct strlist *out);

/* May @reg be asked now? 0; -EACCES for a request of another user that
 * the mount does not fetch for (tree_opts.may_fetch; reg_not_shared()
 * tells it); or the error @reg gave when it went silent (with @err saying
 * so). Registries with mirrors are always asked: the mirrors may answer. */
int reg_gate(struct tree *t, const char *reg, struct reg_error *err);

/* Was @err reg_gate()'s refusal of another user's request? That is no
 * answer of the registry: not cached, logged at debug level only. */
bool reg_not_shared(const struct reg_error *err);

/* Note how @reg answered: a transport failure (no HTTP status) starts
 * its silent period, anything else ends it; a success lists it in /. */
void reg_outcome(struct tree *t, const char *reg, int ret, const struct reg_error *err);

#endif
