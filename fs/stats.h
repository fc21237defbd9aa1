/* stats.h - the counters behind /.ocifs/stats (seed 004's metrics).
 *
 * Thread-safe; every function takes the stats lock briefly. Downloads in
 * flight are tracked with a handle from stats_download_begin().
 */
#ifndef OCIFS_STATS_H
#define OCIFS_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct stats;
struct stats_download;

struct stats *stats_new(void);
void stats_free(struct stats *s);

/* One HTTP exchange, classified by its URL's path. */
void stats_request(struct stats *s, const char *url, long status, double seconds);

/* Opens of cached files: a hit when no download was needed. */
void stats_open(struct stats *s, bool hit);

/* Bytes served to readers from the cache. */
void stats_served(struct stats *s, uint64_t bytes);

/* Bytes of other platforms' layers (and, from an index, manifests and
 * configs) that an artifact did not need. */
void stats_saved(struct stats *s, uint64_t bytes);

/* Other platforms' manifests of an index that were not read, so whose
 * layers bytes_saved_by_platform cannot count (+n when an index is
 * resolved, -1 when one of them is read later, e.g. by the layout view). */
void stats_platform_unread(struct stats *s, int delta);

/* A lookup waiting for another's fetch of the same manifest (+1), and done
 * waiting (-1): lookups_waiting now, lookups_shared in all. */
void stats_manifest_wait(struct stats *s, int delta);

/* A blob download: begin (NULL on ENOMEM: the calls below accept NULL),
 * progress (bytes since the last call; 0 with @restart starts over) and
 * end. Progress logs a line every few seconds for big blobs when @log. */
struct stats_download *stats_download_begin(struct stats *s, const char *what,
					    const char *digest, uint64_t total);
void stats_download_progress(struct stats *s, struct stats_download *d, uint64_t bytes,
			     bool restart);
void stats_download_end(struct stats *s, struct stats_download *d, int result);

/* The stats as a JSON document, malloc'd, into *out. 0 or -ENOMEM. */
int stats_json(struct stats *s, char **out, size_t *len);

#endif
