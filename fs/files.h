/* files.h - the tree's open files (struct tree_file is in tree.h). */
#ifndef OCIFS_FILES_H
#define OCIFS_FILES_H

struct tree;
struct openfiles;

int openfiles_new(struct openfiles **out);

/* Release every file still open (a lazy unmount may end the daemon
 * before every release arrives), then free @of. */
void openfiles_free(struct tree *t, struct openfiles *of);

#endif
