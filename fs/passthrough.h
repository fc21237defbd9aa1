/* passthrough.h - FUSE passthrough: reads of an open cache file go from
 * the kernel straight to that file, without a round trip to the daemon.
 *
 * Compiled in when the libfuse built against has it (3.17 and later:
 * FUSE_CAP_PASSTHROUGH); used when the kernel offers it (6.9 and later)
 * and lets us register backing files (CAP_SYS_ADMIN). Otherwise every
 * call here is a no-op and reads go through oc_read_buf().
 *
 * The kernel wants every open of one FUSE inode in the same mode, and in
 * passthrough mode with the same backing file: the opens of one path
 * share one registration, counted, for as long as any is open.
 */
#ifndef OCIFS_PASSTHROUGH_H
#define OCIFS_PASSTHROUGH_H

#include <stdbool.h>
#include <stdio.h>

struct fuse_conn_info;
struct fuse_file_info;

/* In .init: ask for passthrough if the kernel offers it. */
void passthrough_init(struct fuse_conn_info *conn);

/* Open @path, whose content is the verified cache file @fd, in
 * passthrough mode when possible: fills fi->backing_id (and clears
 * fi->keep_cache, which the kernel refuses beside it). 0, or -EBUSY when
 * @path is open with another file's content (a tag moved while its old
 * content is open; the kernel cannot mix the two on one inode). */
int passthrough_open(const char *path, int fd, struct fuse_file_info *fi);

/* The open of @path that passthrough_open() accepted is closed. */
void passthrough_release(const char *path);

/* After the session ended: forget the opens still counted (a lazy
 * unmount ends the daemon before every release arrives). */
void passthrough_free(void);

/* Whether reads bypass the daemon: "on", "off (why)". For --version and
 * the debug log. */
void passthrough_print(FILE *f);

#endif
