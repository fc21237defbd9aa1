/* caller.c - the -o share policy, applied per FUSE request. See caller.h. */
#define FUSE_USE_VERSION 312

#include "caller.h"

#include <errno.h>
#include <fuse.h>
#include <string.h>
#include <unistd.h>

/* Set by caller_setup() once the session exists and before its threads
 * start; read-only after. Before it, every caller is the mounting user
 * (fuse_get_context() needs the session's thread key). */
static bool in_session;
static enum share_mode share = SHARE_NONE;
static bool others_allowed;
static uid_t owner;

int share_parse(const char *s, enum share_mode *out)
{
	static const char *const names[] = { [SHARE_NONE] = "none",
					     [SHARE_CACHED] = "cached",
					     [SHARE_ALL] = "all" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!strcmp(s, names[i])) {
			*out = (enum share_mode)i;
			return 0;
		}
	}
	return -EINVAL;
}

void caller_setup(enum share_mode mode, bool allowed)
{
	share = mode;
	others_allowed = allowed;
	owner = getuid();
	in_session = true;
}

/* Outside a FUSE request (the reference check at start) it is us. */
static bool is_owner(void)
{
	struct fuse_context *c = in_session ? fuse_get_context() : NULL;

	return !c || !c->fuse || c->uid == owner;
}

int caller_admit(const char *path)
{
	if (share != SHARE_NONE || !strcmp(path, "/") || is_owner())
		return 0;
	return -EACCES;
}

mode_t caller_mode(mode_t mode)
{
	return others_allowed && share == SHARE_NONE ? mode & ~(mode_t)077 : mode;
}

bool caller_may_fetch(void)
{
	return share == SHARE_ALL || is_owner();
}

bool caller_interrupted(void)
{
	return in_session && fuse_interrupted();
}
