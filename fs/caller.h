/* caller.h - who asks: the user who mounted, or another one.
 *
 * With -o allow_other (or allow_root) other users reach the daemon, which
 * runs with the mounting user's credentials. What they may reach is the
 * mount's -o share= choice:
 *
 *   none    (default) nothing below the mount point: EACCES, and the modes
 *           shown lose their group and other bits, so that the kernel
 *           (default_permissions) refuses them up front;
 *   cached  what the mount holds already: the tree answers them from its
 *           caches and never asks a registry for them (no credential is
 *           looked up, no host contacted, no registry named into "/");
 *   all     everything, as the mounting user: with that user's credentials,
 *           to any registry they name.
 *
 * Everything here is read on FUSE worker threads: the policy is set once
 * before the session starts, and the caller is libfuse's per-request,
 * per-thread fuse_get_context().
 */
#ifndef OCIFS_CALLER_H
#define OCIFS_CALLER_H

#include <stdbool.h>
#include <sys/types.h>

enum share_mode { SHARE_NONE, SHARE_CACHED, SHARE_ALL };

/* "none", "cached", "all" -> *out; -EINVAL otherwise. */
int share_parse(const char *s, enum share_mode *out);

/* Once fuse_new() made the session, before its loop: the policy, and
 * whether other users can reach the mount at all (allow_other or
 * allow_root given). Until then every caller counts as the mounting user. */
void caller_setup(enum share_mode mode, bool others_allowed);

/* 0 if the caller of this request may go on with @path, else -EACCES.
 * The mount point itself may always be looked at (stat, statfs). */
int caller_admit(const char *path);

/* Mode bits to show: without their group and other bits where other users
 * are refused (share=none with allow_other). */
mode_t caller_mode(mode_t mode);

/* For the tree (tree_opts): may this request make the tree contact a
 * registry or name a new one? Only the mounting user's, unless share=all. */
bool caller_may_fetch(void);

/* For the tree: has the kernel interrupted this request (the reader was
 * killed, or got a signal)? */
bool caller_interrupted(void);

#endif
