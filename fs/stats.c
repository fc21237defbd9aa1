/* stats.c - counters for /.ocifs/stats. See stats.h. */
#include "stats.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define HOSTS_MAX 64
#define PROGRESS_LOG_MIN (64u << 20)	/* blobs smaller than this finish quickly */
#define PROGRESS_LOG_EVERY 5		/* seconds */

struct stats_download {
	char what[512];
	char digest[72];
	uint64_t done, total;
	double start, last_log;
	struct stats_download *next;
};

struct host_count {
	char host[256];
	uint64_t requests, errors;
};

struct stats {
	pthread_mutex_t lock;
	uint64_t requests, manifest_requests, blob_requests, list_requests, failed_requests;
	uint64_t cache_hits, cache_misses;
	uint64_t bytes_fetched, bytes_saved, bytes_served, downloads, downloads_failed;
	uint64_t unread_platforms;	/* other platforms' manifests not read */
	uint64_t lookups_waiting, lookups_shared;	/* stats_manifest_wait() */
	double download_seconds;
	struct host_count hosts[HOSTS_MAX];
	size_t n_hosts;
	struct stats_download *inflight;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct stats *stats_new(void)
{
	struct stats *s = calloc(1, sizeof(*s));

	if (s)
		pthread_mutex_init(&s->lock, NULL);
	return s;
}

void stats_free(struct stats *s)
{
	if (!s)
		return;
	while (s->inflight) {
		struct stats_download *d = s->inflight;
		s->inflight = d->next;
		free(d);
	}
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void stats_request(struct stats *s, const char *url, long status, double seconds)
{
	const char *host = strstr(url, "://");
	const char *path;
	size_t hl;

	(void)seconds;
	host = host ? host + 3 : url;
	hl = strcspn(host, "/?#");
	path = host + hl;
	pthread_mutex_lock(&s->lock);
	s->requests++;
	if (status < 200 || status >= 400)
		s->failed_requests++;
	/* Kinds are the registry API's (/v2/...): a redirect to storage is
	 * counted once, by the registry's own answer (the client traces each
	 * hop). */
	if (strncmp(path, "/v2/", 4))
		;
	else if (strstr(path, "/manifests/"))
		s->manifest_requests++;
	else if (strstr(path, "/blobs/"))
		s->blob_requests++;
	else if (strstr(path, "/tags/list") || strstr(path, "/_catalog"))
		s->list_requests++;
	size_t i;
	for (i = 0; i < s->n_hosts; i++)
		if (strlen(s->hosts[i].host) == hl && !strncmp(s->hosts[i].host, host, hl))
			break;
	if (i == s->n_hosts && s->n_hosts < HOSTS_MAX && hl < sizeof(s->hosts[0].host)) {
		memcpy(s->hosts[i].host, host, hl);
		s->hosts[i].host[hl] = '\0';
		s->n_hosts++;
	}
	if (i < s->n_hosts) {
		s->hosts[i].requests++;
		if (status < 200 || status >= 400)
			s->hosts[i].errors++;
	}
	pthread_mutex_unlock(&s->lock);
}

void stats_open(struct stats *s, bool hit)
{
	pthread_mutex_lock(&s->lock);
	if (hit)
		s->cache_hits++;
	else
		s->cache_misses++;
	pthread_mutex_unlock(&s->lock);
}

void stats_served(struct stats *s, uint64_t bytes)
{
	pthread_mutex_lock(&s->lock);
	s->bytes_served += bytes;
	pthread_mutex_unlock(&s->lock);
}

void stats_saved(struct stats *s, uint64_t bytes)
{
	pthread_mutex_lock(&s->lock);
	s->bytes_saved += bytes;
	pthread_mutex_unlock(&s->lock);
}

void stats_platform_unread(struct stats *s, int delta)
{
	pthread_mutex_lock(&s->lock);
	if (delta >= 0 || s->unread_platforms >= (uint64_t)-delta)
		s->unread_platforms += (uint64_t)(int64_t)delta;
	pthread_mutex_unlock(&s->lock);
}

void stats_manifest_wait(struct stats *s, int delta)
{
	pthread_mutex_lock(&s->lock);
	if (delta > 0) {
		s->lookups_waiting++;
		s->lookups_shared++;
	} else if (s->lookups_waiting) {
		s->lookups_waiting--;
	}
	pthread_mutex_unlock(&s->lock);
}

struct stats_download *stats_download_begin(struct stats *s, const char *what,
					    const char *digest, uint64_t total)
{
	struct stats_download *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	snprintf(d->what, sizeof(d->what), "%s", what);
	snprintf(d->digest, sizeof(d->digest), "%s", digest);
	d->total = total;
	d->start = d->last_log = now();
	pthread_mutex_lock(&s->lock);
	d->next = s->inflight;
	s->inflight = d;
	pthread_mutex_unlock(&s->lock);
	return d;
}

void stats_download_progress(struct stats *s, struct stats_download *d, uint64_t bytes,
			     bool restart)
{
	double t;
	bool log = false;
	uint64_t done = 0, total = 0;

	if (!d)
		return;
	pthread_mutex_lock(&s->lock);
	if (restart)
		d->done = 0;
	d->done += bytes;
	s->bytes_fetched += bytes;
	if (d->total >= PROGRESS_LOG_MIN && (t = now()) - d->last_log >= PROGRESS_LOG_EVERY) {
		d->last_log = t;
		log = true;
		done = d->done;
		total = d->total;
	}
	pthread_mutex_unlock(&s->lock);
	if (log)
		log_msg(LOG_INFO, "%s: %llu of %llu MiB (%llu%%)", d->what,
			(unsigned long long)(done >> 20), (unsigned long long)(total >> 20),
			(unsigned long long)(total ? done * 100 / total : 0));
}

void stats_download_end(struct stats *s, struct stats_download *d, int result)
{
	struct stats_download **pp;

	if (!d)
		return;
	pthread_mutex_lock(&s->lock);
	for (pp = &s->inflight; *pp && *pp != d; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = d->next;
	s->downloads++;
	if (result < 0)
		s->downloads_failed++;
	s->download_seconds += now() - d->start;
	pthread_mutex_unlock(&s->lock);
	free(d);
}

/* A growing buffer for the document. */
struct out {
	char *buf;
	size_t len, cap;
	int err;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->err)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->err = -EINVAL;
			return;
		}
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		size_t cap = o->cap * 2 + (size_t)n;
		char *b = realloc(o->buf, cap);
		if (!b) {
			o->err = -ENOMEM;
			return;
		}
		o->buf = b;
		o->cap = cap;
	}
}

/* Our strings are registry names, references and digests: only printable
 * ASCII without quotes, but be safe. */
static void put_str(struct out *o, const char *s)
{
	put(o, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			put(o, "\\%c", c);
		else if (c < 0x20)
			put(o, "\\u%04x", c);
		else
			put(o, "%c", c);
	}
	put(o, "\"");
}

int stats_json(struct stats *s, char **out, size_t *len)
{
	struct out o = { .buf = malloc(1024), .cap = 1024 };
	double t = now();

	if (!o.buf)
		return -ENOMEM;
	o.buf[0] = '\0';
	pthread_mutex_lock(&s->lock);
	put(&o, "{\n  \"requests\": %llu,\n  \"manifest_requests\": %llu,\n"
		"  \"blob_requests\": %llu,\n  \"list_requests\": %llu,\n"
		"  \"failed_requests\": %llu,\n",
	    (unsigned long long)s->requests, (unsigned long long)s->manifest_requests,
	    (unsigned long long)s->blob_requests, (unsigned long long)s->list_requests,
	    (unsigned long long)s->failed_requests);
	put(&o, "  \"cache_hits\": %llu,\n  \"cache_misses\": %llu,\n"
		"  \"bytes_fetched\": %llu,\n  \"bytes_served_from_cache\": %llu,\n"
		"  \"bytes_saved_by_platform\": %llu,\n"
		"  \"platform_manifests_unread\": %llu,\n"
		"  \"downloads\": %llu,\n  \"downloads_failed\": %llu,\n"
		"  \"download_seconds\": %.3f,\n"
		"  \"lookups_waiting\": %llu,\n  \"lookups_shared\": %llu,\n",
	    (unsigned long long)s->cache_hits, (unsigned long long)s->cache_misses,
	    (unsigned long long)s->bytes_fetched, (unsigned long long)s->bytes_served,
	    (unsigned long long)s->bytes_saved, (unsigned long long)s->unread_platforms,
	    (unsigned long long)s->downloads, (unsigned long long)s->downloads_failed,
	    s->download_seconds, (unsigned long long)s->lookups_waiting,
	    (unsigned long long)s->lookups_shared);
	put(&o, "  \"hosts\": {");
	for (size_t i = 0; i < s->n_hosts; i++) {
		put(&o, "%s\n    ", i ? "," : "");
		put_str(&o, s->hosts[i].host);
		put(&o, ": {\"requests\": %llu, \"errors\": %llu}",
		    (unsigned long long)s->hosts[i].requests,
		    (unsigned long long)s->hosts[i].errors);
	}
	put(&o, "%s},\n  \"in_flight\": [", s->n_hosts ? "\n  " : "");
	for (struct stats_download *d = s->inflight; d; d = d->next) {
		put(&o, "%s\n    {\"reference\": ", d == s->inflight ? "" : ",");
		put_str(&o, d->what);
		put(&o, ", \"digest\": ");
		put_str(&o, d->digest);
		put(&o, ", \"bytes_done\": %llu, \"bytes_total\": %llu, \"seconds\": %.1f}",
		    (unsigned long long)d->done, (unsigned long long)d->total, t - d->start);
	}
	put(&o, "%s]\n}\n", s->inflight ? "\n  " : "");
	pthread_mutex_unlock(&s->lock);
	if (o.err) {
		free(o.buf);
		return o.err;
	}
	*out = o.buf;
	*len = o.len;
	return 0;
}
