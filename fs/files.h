/* files.h - the tree's open files (struct tree_file is in tree.h). */
#ifndef OCIFS_FILES_H
#define OCIFS_FILES_H

struct tree;
struct openfiles;

/* @max_waiting: opens that may wait on the network at once (0: any). */
int openfiles_new(unsigned max_waiting, struct openfiles **out);

/* An open is about to wait on the network: 0, or -EAGAIN when
 * max_waiting opens wait already. Pair a 0 with openfiles_wait_end(). */
int openfiles_wait_begin(struct openfiles *of);
void openfiles_wait_end(struct openfiles *of);

/* Release every file still open (a lazy unmount may end the daemon
 * before every release arrives), then free @of. */
void openfiles_free(struct tree *t, struct openfiles *of);

#endif
