/* transport.c - one HTTP exchange with retries over one shared curl setup.
 *
 * Locks: tp->locks[] are curl's share locks, one per data kind;
 * tp->lock guards the host list and each host's scheme. Everything else
 * in struct transport is set at creation and read-only after.
 */
#include "transport.h"
#include "ref.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define RETRY_AFTER_MAX 30	/* seconds we are willing to wait */
#define RESUMES_MAX 32		/* resumed downloads per request */
#define WWW_AUTH_MAX 8192	/* bytes of WWW-Authenticate we keep */
#define REDIRECTS_MAX 5		/* redirects followed per attempt */
#define PEM_MAX (1u << 20)	/* one CA file */

static const char *const certs_dirs[] = { "/etc/docker/certs.d", "/etc/containers/certs.d" };

enum scheme { SCHEME_UNKNOWN, SCHEME_HTTPS, SCHEME_HTTP };

/* A host:port we talk to: a registry endpoint or a token realm. Immutable
 * once made, except @scheme. */
struct host {
	struct host *next;
	char *name;		/* "host[:port]" as in the URL */
	bool insecure;		/* -o insecure: TLS unverified, HTTP fallback */
	bool loopback;		/* plain HTTP first, then TLS (verified) */
	enum scheme scheme;	/* transport.lock */
	char *ca;		/* PEM: -o cafile and certs.d CAs, or NULL */
	size_t ca_len;
	char *cert, *key;	/* client certificate from certs.d, or NULL */
};

struct transport {
	CURLSH *share;
	pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
	char **insecure;	/* -o insecure names */
	char *ca;		/* -o cafile's contents */
	size_t ca_len;
	long timeout;
	unsigned retries;
	void (*trace)(void *, const char *, const char *, long, double);
	void *trace_arg;
	pthread_mutex_t lock;
	struct host *hosts;	/* lock */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access a, void *p)
{
	struct transport *tp = p;

	(void)h;
	(void)a;
	pthread_mutex_lock(&tp->locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *p)
{
	struct transport *tp = p;

	(void)h;
	pthread_mutex_unlock(&tp->locks[data]);
}

time_t now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* Free a string that held a secret. */
void free_secret(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* Append the file at @path to the buffer *@buf of *@len bytes. */
static int append_file(const char *path, char **buf, size_t *len)
{
	struct stat st;
	char *b;
	ssize_t n;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)PEM_MAX) {
		ret = -EINVAL;
		goto out_close;
	}
	b = realloc(*buf, *len + (size_t)st.st_size + 2);
	if (!b) {
		ret = -ENOMEM;
		goto out_close;
	}
	*buf = b;
	n = pread(fd, b + *len, (size_t)st.st_size, 0);
	if (n < 0) {
		ret = -errno;
		goto out_close;
	}
	*len += (size_t)n;
	b[(*len)++] = '\n';	/* PEM files need not end in one */
	b[*len] = '\0';
out_close:
	close(fd);
	return ret;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n > k && !strcmp(s + n - k, suffix);
}

/* docker's certs.d layout: every *.crt is a CA, a *.cert with the
 * matching *.key is a client certificate. */
static int load_certs_dir(struct host *h, const char *dir)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int ret = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char *path = NULL, *key = NULL;

		if (de->d_name[0] == '.')
			continue;
		if (asprintf(&path, "%s/%s", dir, de->d_name) < 0) {
			ret = -ENOMEM;
			break;
		}
		if (has_suffix(de->d_name, ".crt")) {
			ret = append_file(path, &h->ca, &h->ca_len);
			if (ret == -ENOMEM) {
				free(path);
				break;
			}
			ret = 0;
		} else if (has_suffix(de->d_name, ".cert") && !h->cert &&
			   asprintf(&key, "%.*s.key", (int)strlen(path) - 5, path) >= 0) {
			if (access(key, R_OK) == 0) {
				h->cert = path;
				h->key = key;
				path = key = NULL;
			}
		}
		free(key);
		free(path);
	}
	closedir(d);
	return ret;
}

static bool listed_insecure(struct transport *tp, const char *name)
{
	for (size_t i = 0; name && tp->insecure[i]; i++)
		if (!strcasecmp(tp->insecure[i], name))
			return true;
	return false;
}

static void host_free(struct host *h)
{
	free(h->name);
	free(h->ca);
	free(h->cert);
	free(h->key);
	free(h);
}

/* The host entry for @name ("host[:port]"), made on first use; @alias is
 * the registry's tree name when it differs ("docker.io"). */
static struct host *host_get(struct transport *tp, const char *name, const char *alias)
{
	struct host *h;

	pthread_mutex_lock(&tp->lock);
	for (h = tp->hosts; h; h = h->next)
		if (!strcasecmp(h->name, name))
			goto out_unlock;
	h = calloc(1, sizeof(*h));
	if (!h || !(h->name = strdup(name)))
		goto out_free;
	h->insecure = listed_insecure(tp, name) || listed_insecure(tp, alias);
	h->loopback = ref_registry_is_loopback(name);
	h->scheme = (h->insecure || h->loopback) ? SCHEME_UNKNOWN : SCHEME_HTTPS;
	if (tp->ca && !(h->ca = malloc(tp->ca_len + 1)))
		goto out_free;
	if (tp->ca) {
		memcpy(h->ca, tp->ca, tp->ca_len + 1);
		h->ca_len = tp->ca_len;
	}
	for (size_t i = 0; i < sizeof(certs_dirs) / sizeof(certs_dirs[0]); i++) {
		const char *names[2] = { name, alias };
		for (size_t j = 0; j < 2; j++) {
			char *dir;
			if (!names[j] || (j && !strcasecmp(names[0], names[1])))
				continue;
			if (asprintf(&dir, "%s/%s", certs_dirs[i], names[j]) < 0)
				goto out_free;
			int ret = load_certs_dir(h, dir);
			free(dir);
			if (ret < 0)
				goto out_free;
		}
	}
	h->next = tp->hosts;
	tp->hosts = h;
	goto out_unlock;
out_free:
	if (h)
		host_free(h);
	h = NULL;
out_unlock:
	pthread_mutex_unlock(&tp->lock);
	return h;
}
struct transport *transport_new(const struct regclient_opts *o)
{
	struct transport *tp;
	size_t n = 0;

	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return NULL;
	tp = calloc(1, sizeof(*tp));
	if (!tp)
		return NULL;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&tp->locks[i], NULL);
	pthread_mutex_init(&tp->lock, NULL);
	tp->timeout = o->timeout > 0 ? o->timeout : 30;
	tp->retries = o->retries;
	tp->trace = o->trace;
	tp->trace_arg = o->trace_arg;
	while (o->insecure && o->insecure[n])
		n++;
	tp->insecure = calloc(n + 1, sizeof(char *));
	if (!tp->insecure)
		goto out_free;
	for (size_t i = 0; i < n; i++)
		if (!(tp->insecure[i] = strdup(o->insecure[i])))
			goto out_free;
	/* Read now: the daemon may chdir or lose access later. */
	if (o->cafile && append_file(o->cafile, &tp->ca, &tp->ca_len) < 0)
		goto out_free;
	tp->share = curl_share_init();
	if (!tp->share)
		goto out_free;
	curl_share_setopt(tp->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(tp->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(tp->share, CURLSHOPT_USERDATA, tp);
	curl_share_setopt(tp->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_share_setopt(tp->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(tp->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	return tp;
out_free:
	transport_free(tp);
	return NULL;
}

void transport_free(struct transport *tp)
{
	if (!tp)
		return;
	if (tp->share)
		curl_share_cleanup(tp->share);
	for (size_t i = 0; tp->insecure && tp->insecure[i]; i++)
		free(tp->insecure[i]);
	free(tp->insecure);
	while (tp->hosts) {
		struct host *h = tp->hosts;
		tp->hosts = h->next;
		host_free(h);
	}
	free(tp->ca);
	pthread_mutex_destroy(&tp->lock);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&tp->locks[i]);
	free(tp);
}

void transport_set_scheme(struct transport *tp, const char *authority, bool plain)
{
	struct host *h = host_get(tp, authority, NULL);

	if (!h)
		return;
	pthread_mutex_lock(&tp->lock);
	h->scheme = plain ? SCHEME_HTTP : SCHEME_HTTPS;
	pthread_mutex_unlock(&tp->lock);
}

int transport_plain_ok(struct transport *tp, const char *authority)
{
	struct host *h = host_get(tp, authority, NULL);

	if (!h)
		return -ENOMEM;
	return h->loopback || h->insecure;
}

int reg_errno(long status, const char *code)
{
	if (code && (!strcmp(code, "NAME_UNKNOWN") || !strcmp(code, "MANIFEST_UNKNOWN") ||
		     !strcmp(code, "BLOB_UNKNOWN")))
		return -ENOENT;
	if (code && (!strcmp(code, "UNAUTHORIZED") || !strcmp(code, "DENIED")))
		return -EACCES;
	if (code && !strcmp(code, "TOOMANYREQUESTS"))
		return -EAGAIN;
	switch (status) {
	case 404:
		return -ENOENT;
	case 401:
	case 403:
		return -EACCES;
	case 429:
		return -EAGAIN;
	default:
		return -EIO;
	}
}

static int curl_errno(CURLcode c)
{
	switch (c) {
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_ABORTED_BY_CALLBACK:	/* on_progress: stalled */
		return -ETIMEDOUT;
	default:
		return -EIO;
	}
}
/* ---- one exchange ---- */

/* The calling thread's cancellation (regclient_cancel_bind()). */
static _Thread_local struct reg_cancel *bound_cancel;

struct reg_cancel *regclient_cancel_bind(struct reg_cancel *c)
{
	struct reg_cancel *old = bound_cancel;

	bound_cancel = c;
	return old;
}

bool reg_cancel_requested(struct reg_cancel *c)
{
	return c && (atomic_load(&c->requested) || (c->poll && c->poll(c->poll_arg)));
}

/* Called at least once a second while a transfer runs. It is cancelled
 * when asked to; it fails when the whole request (retries and resumes
 * included, waits and token fetches not) has run longer than twice -o
 * timeout plus REG_MIN_RATE's worth of the bytes it got, so that a
 * trickle fails in about two timeouts (one stalled attempt may still be
 * retried) while big downloads at any usable rate go on; and, because
 * curl's low-speed check averages over its window, it fails once nothing
 * arrived for the timeout. */
static int on_progress(void *p, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct xfer *x = p;
	struct timespec ts;
	double elapsed;

	(void)dltotal;
	(void)ultotal;
	if (reg_cancel_requested(x->cancel)) {
		x->cancelled = true;
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	elapsed = (double)(ts.tv_sec - x->started.tv_sec) +
		  (double)(ts.tv_nsec - x->started.tv_nsec) / 1e9;
	if (elapsed > 2.0 * (double)x->stall_limit + x->budget_extra +
			      (double)x->received / REG_MIN_RATE) {
		x->over_budget = true;
		return 1;
	}
	if (dlnow != x->seen || ulnow) {
		x->seen = dlnow;
		x->seen_at = ts;
		return 0;
	}
	return ts.tv_sec - x->seen_at.tv_sec > x->stall_limit;
}

void xfer_reset(struct xfer *x)
{
	free(x->buf);
	free(x->content_type);
	free(x->digest);
	free(x->link);
	free(x->www_auth);
	x->buf = x->content_type = x->digest = x->link = x->www_auth = NULL;
	x->len = 0;
	x->too_big = false;
	x->status = 0;
	x->retry_after = -1;
	x->range_start = -1;
	x->sink_err = 0;
	x->body_started = x->range_bad = x->progress = false;
	x->errbody_full = false;
	x->attempt_bytes = 0;
}

/* The first byte of a 2xx body (or its end, when empty): decide whether
 * the sink continues where it stopped or starts over. */
static int body_begin(struct xfer *x)
{
	x->body_started = true;
	if (x->resume_from > 0) {
		if (x->status == 206 && x->range_start == (long long)x->resume_from)
			return 0;
		if (x->status == 206) {
			x->range_bad = true;	/* not what we asked for */
			return -EIO;
		}
		/* 200: the server ignored Range and sends it all */
	}
	if (x->delivered == 0)
		return 0;
	x->delivered = 0;
	x->sink_err = x->sink(x->sink_arg, NULL, 0);
	return x->sink_err;
}

static size_t on_body(char *data, size_t sz, size_t nm, void *p)
{
	struct xfer *x = p;
	size_t n = sz * nm;
	size_t cap;

	if (x->status == 0)
		curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
	x->received += n;
	x->attempt_bytes += n;
	if (x->sink && x->status >= 200 && x->status < 300) {
		if (!x->body_started && body_begin(x) < 0)
			return 0;
		x->sink_err = x->sink(x->sink_arg, data, n);
		if (x->sink_err)
			return 0;
		x->delivered += n;
		x->progress = x->progress || n > 0;
		return n;
	}
	cap = (x->status >= 200 && x->status < 300) ? x->cap : REG_ERRBODY_MAX;
	if (x->len + n > cap) {
		x->too_big = true;
		if (x->status >= 200 && x->status < 300)
			return 0;	/* abort: a success body we cannot hold */
		/* An error body: keep its head and stop reading (it may never
		 * end); the attempt is judged by its status. */
		n = cap - x->len;
		x->errbody_full = true;
	}
	char *b = realloc(x->buf, x->len + n + 1);
	if (!b)
		return 0;
	x->buf = b;
	memcpy(x->buf + x->len, data, n);
	x->len += n;
	x->buf[x->len] = '\0';
	return x->errbody_full ? 0 : sz * nm;
}

static char *header_value(const char *line, size_t n, const char *name)
{
	size_t k = strlen(name);

	if (n <= k + 1 || strncasecmp(line, name, k) != 0 || line[k] != ':')
		return NULL;
	line += k + 1;
	n -= k + 1;
	while (n && (*line == ' ' || *line == '\t')) {
		line++;
		n--;
	}
	while (n && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' '))
		n--;
	return strndup(line, n);
}

/* Retry-After: delay-seconds or an HTTP-date. */
static long parse_retry_after(const char *v)
{
	char *end;
	long s = strtol(v, &end, 10);
	time_t t;

	if (end != v && *end == '\0')
		return s >= 0 ? s : -1;
	t = curl_getdate(v, NULL);
	if (t < 0)
		return -1;
	return t > time(NULL) ? (long)(t - time(NULL)) : 0;
}

static size_t on_header(char *line, size_t sz, size_t nm, void *p)
{
	struct xfer *x = p;
	size_t n = sz * nm;
	char *v;

	if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* A new response (after a redirect): forget the last one's headers. */
		free(x->content_type);
		free(x->digest);
		free(x->link);
		free(x->www_auth);
		x->content_type = x->digest = x->link = x->www_auth = NULL;
		x->status = 0;
		x->retry_after = -1;
		x->range_start = -1;
		return n;
	}
	if ((v = header_value(line, n, "Content-Type"))) {
		free(x->content_type);
		x->content_type = v;
	} else if ((v = header_value(line, n, "Docker-Content-Digest"))) {
		free(x->digest);
		x->digest = v;
	} else if ((v = header_value(line, n, "Link"))) {
		free(x->link);
		x->link = v;
	} else if ((v = header_value(line, n, "Retry-After"))) {
		x->retry_after = parse_retry_after(v);
		free(v);
	} else if ((v = header_value(line, n, "Content-Range"))) {
		char *end;
		if (!strncasecmp(v, "bytes ", 6)) {
			long long s = strtoll(v + 6, &end, 10);
			if (end != v + 6 && *end == '-' && s >= 0)
				x->range_start = s;
		}
		free(v);
	} else if ((v = header_value(line, n, "WWW-Authenticate"))) {
		/* Several headers are one comma-separated list (RFC 9110). */
		size_t have = x->www_auth ? strlen(x->www_auth) : 0;
		if (have + strlen(v) + 3 <= WWW_AUTH_MAX) {
			char *w = realloc(x->www_auth, have + strlen(v) + 3);
			if (w) {
				if (have)
					strcpy(w + have, ", ");
				strcpy(w + have + (have ? 2 : 0), v);
				x->www_auth = w;
			}
		}
		free(v);
	}
	return n;
}

static void parse_error_body(const char *body, size_t len, struct reg_error *err)
{
	json_t *root, *e;
	const char *code, *msg;

	if (!body || !len)
		return;
	root = json_loadb(body, len, 0, NULL);
	e = json_array_get(json_object_get(root, "errors"), 0);
	code = json_string_value(json_object_get(e, "code"));
	msg = json_string_value(json_object_get(e, "message"));
	if (code)
		snprintf(err->code, sizeof(err->code), "%s", code);
	if (msg)
		snprintf(err->message, sizeof(err->message), "%s", msg);
	json_decref(root);
}

static bool retryable_status(long s)
{
	return s == 408 || s == 429 || s == 502 || s == 503 || s == 504;
}

static bool retryable_curl(CURLcode c)
{
	return c == CURLE_RECV_ERROR || c == CURLE_SEND_ERROR || c == CURLE_GOT_NOTHING ||
	       c == CURLE_PARTIAL_FILE || c == CURLE_COULDNT_CONNECT ||
	       c == CURLE_OPERATION_TIMEDOUT || c == CURLE_ABORTED_BY_CALLBACK ||
	       c == CURLE_HTTP2 || c == CURLE_HTTP2_STREAM;
}

/* Loopback registries are plain HTTP nearly always (DESIGN): ask in plain
 * HTTP first there; elsewhere (-o insecure) TLS comes first. */
static bool plain_first(const struct host *h, enum scheme scheme)
{
	if (scheme != SCHEME_UNKNOWN)
		return scheme == SCHEME_HTTP;
	return h->loopback && !h->insecure;
}

/* TLS for @host: verified against the system CAs plus its own, or not at
 * all for -o insecure hosts. */
static void tls_setup(CURL *h, const struct host *host)
{
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, host->insecure ? 0L : 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, host->insecure ? 0L : 2L);
	if (host->ca) {
		/* With a blob, curl keeps the default CA path (/etc/ssl/certs on
		 * Debian): system CAs stay trusted. */
		struct curl_blob b = { host->ca, host->ca_len, CURL_BLOB_COPY };
		curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &b);
	}
	if (host->cert) {
		curl_easy_setopt(h, CURLOPT_SSLCERT, host->cert);
		curl_easy_setopt(h, CURLOPT_SSLKEY, host->key);
	}
}

/* "host[:port]" of absolute @url into a new string, or NULL. */
char *url_authority(const char *url)
{
	CURLU *u = curl_url();
	char *host = NULL, *port = NULL, *s = NULL;

	if (!u)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		curl_url_get(u, CURLUPART_PORT, &port, 0);
		if (asprintf(&s, "%s%s%s", host, port ? ":" : "", port ? port : "") < 0)
			s = NULL;
	}
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return s;
}

/* Report one exchange to the trace callback. A redirect target's query is
 * left out: presigned storage URLs carry their signature there. */
static void trace(struct transport *tp, const struct req *rq, const char *url, bool redirected,
		  long status, const struct timespec *t0, const struct timespec *t1)
{
	char *cut = NULL;
	const char *q;

	if (redirected && (q = strchr(url, '?')) &&
	    asprintf(&cut, "%.*s?...", (int)(q - url), url) < 0)
		cut = NULL;
	tp->trace(tp->trace_arg, rq->method ? rq->method : "GET", cut ? cut : url, status,
		  (double)(t1->tv_sec - t0->tv_sec) + (double)(t1->tv_nsec - t0->tv_nsec) / 1e9);
	free(cut);
}

static bool is_redirect(long s)
{
	return s == 301 || s == 302 || s == 303 || s == 307 || s == 308;
}

/* Sleep @ms, in slices, returning early (-EINTR) when the request is
 * cancelled. */
static int sleep_ms(const struct xfer *x, long ms)
{
	while (ms > 0) {
		long slice = ms > 100 ? 100 : ms;
		struct timespec ts = { 0, slice * 1000000L };

		if (reg_cancel_requested(x->cancel))
			return -EINTR;
		nanosleep(&ts, NULL);
		ms -= slice;
	}
	return reg_cancel_requested(x->cancel) ? -EINTR : 0;
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Wait before retry @attempt: Retry-After when the server said so, else
 * exponential backoff. Waiting is not held against the budget. */
static int backoff(struct xfer *x, unsigned attempt, long retry_after)
{
	struct timespec t0;
	long ms;
	int ret;

	if (retry_after >= 0) {
		ms = (retry_after > RETRY_AFTER_MAX ? RETRY_AFTER_MAX : retry_after) * 1000;
	} else {
		/* 100 ms, 200 ms, 400 ms ... capped at 5 s, plus up to 50 % jitter. */
		ms = 100L << (attempt > 6 ? 6 : attempt);
		if (ms > 5000)
			ms = 5000;
		ms += rand() % (ms / 2 + 1);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ret = sleep_ms(x, ms);
	x->budget_extra += seconds_since(&t0);
	return ret;
}

static void handle_setup(struct transport *tp, CURL *h, const struct req *rq, struct xfer *x,
			 char *errbuf)
{
	curl_easy_setopt(h, CURLOPT_SHARE, tp->share);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	/* Redirects are followed by transport_request(), which gives each
	 * host its own TLS settings and Authorization only to the origin. */
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "ocifs/" OCIFS_VERSION);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, tp->timeout);
	/* Slower than REG_MIN_RATE over -o timeout fails the attempt. */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, (long)REG_MIN_RATE);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, tp->timeout);
	x->stall_limit = tp->timeout;
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	if (!rq->stream)
		curl_easy_setopt(h, CURLOPT_TIMEOUT, tp->timeout * 4);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	if (rq->body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(rq->body));
	}
}

/* Where the next attempt goes: the origin (a registry endpoint or a token
 * realm), or a redirect target. */
struct target {
	char *url;		/* redirect target, NULL: the origin */
	struct host *host;	/* its host entry */
	unsigned hops;		/* redirects followed */
	bool post_to_get;	/* a 301/302/303 made a POST a GET */
};

/* The scheme probe of loopback and insecure registries, after an attempt
 * at the origin while its scheme is unknown. Returns true when the
 * attempt is to be made again (in the other scheme). */
static bool probe_scheme(struct transport *tp, struct host *host, enum scheme scheme,
			 bool *try_tls, CURLcode cc, const struct xfer *x, const char *errbuf)
{
	bool plain = plain_first(host, scheme) && !*try_tls;
	enum scheme found = SCHEME_UNKNOWN;
	bool again = false;

	if (plain) {
		/* A TLS server asked in plain HTTP says 400 "... HTTPS ..."
		 * (Go, nginx): TLS from now on. Or it hangs up, which a plain
		 * server may do once too: try TLS for this attempt only, and
		 * let that decide. */
		if (cc == CURLE_OK && x->status == 400 && x->buf && strcasestr(x->buf, "https"))
			found = SCHEME_HTTPS, again = true;
		else if (cc == CURLE_GOT_NOTHING || cc == CURLE_RECV_ERROR)
			*try_tls = again = true;
		else if (x->status > 0)
			found = SCHEME_HTTP;
	} else {
		/* A handshake that failed without a TLS alert from the server
		 * ("wrong version number": it answered in plain HTTP) means
		 * plain HTTP. */
		bool is_plain = cc == CURLE_SSL_CONNECT_ERROR && !strstr(errbuf, "alert");
		if (is_plain)
			found = SCHEME_HTTP, again = true;
		else if (x->status > 0)
			found = SCHEME_HTTPS;
		*try_tls = false;
	}
	if (found != SCHEME_UNKNOWN) {
		pthread_mutex_lock(&tp->lock);
		host->scheme = found;
		pthread_mutex_unlock(&tp->lock);
	}
	return again;
}

/* Why an attempt that did not complete failed, into @err; its errno. */
static int transfer_error(struct transport *tp, const struct xfer *x, CURLcode cc,
			  const char *authority, const char *errbuf, struct reg_error *err)
{
	err->status = 0;
	if (x->cancelled) {
		snprintf(err->message, sizeof(err->message), "cancelled");
		return -EINTR;
	}
	if (x->over_budget) {
		/* It answers, only too slowly: not a registry that is down. */
		err->status = x->status;
		snprintf(err->message, sizeof(err->message),
			 "too slow: less than %d bytes/s after %ld s", REG_MIN_RATE, tp->timeout);
		return -ETIMEDOUT;
	}
	if (cc == CURLE_PEER_FAILED_VERIFICATION)
		snprintf(err->message, sizeof(err->message),
			 "TLS certificate of %s not trusted (%s); see -o cafile= and -o insecure=",
			 authority, errbuf[0] ? errbuf : "");
	else if (cc == CURLE_ABORTED_BY_CALLBACK)
		snprintf(err->message, sizeof(err->message), "no data for %ld s (stalled)",
			 tp->timeout);
	else if (cc == CURLE_OPERATION_TIMEDOUT && x->status > 0)
		snprintf(err->message, sizeof(err->message),
			 "too slow: less than %d bytes/s for %ld s", REG_MIN_RATE, tp->timeout);
	else
		snprintf(err->message, sizeof(err->message), "%s",
			 errbuf[0] ? errbuf : curl_easy_strerror(cc));
	/* Stalled or slow once its answer began: the registry answers (one
	 * body is slow: a CDN, a big blob), it is not down. */
	if ((cc == CURLE_ABORTED_BY_CALLBACK || cc == CURLE_OPERATION_TIMEDOUT) &&
	    x->status > 0)
		err->status = x->status;
	return curl_errno(cc);
}

int transport_request(struct transport *tp, const struct req *rq, struct xfer *x,
		      struct reg_error *err)
{
	char errbuf[CURL_ERROR_SIZE];
	char range[32];
	char *authority = NULL, *auth = NULL, *url = NULL;
	struct auth_who who = { 0 };
	struct target to = { 0 };
	bool answered = false, try_tls = false;
	unsigned failures = 0, resumes = 0;
	struct host *host;
	CURL *h;
	int ret = -ENOMEM;

	memset(err, 0, sizeof(*err));
	x->cancel = bound_cancel;
	x->received = 0;
	x->budget_extra = 0;
	authority = rq->url ? url_authority(rq->url) :
			      strdup(ref_registry_endpoint(rq->registry));
	if (!authority) {
		snprintf(err->message, sizeof(err->message), "malformed URL");
		return rq->url ? -EINVAL : -ENOMEM;
	}
	host = host_get(tp, authority, rq->registry);
	if (!host)
		goto out_free;
	if (rq->authn && (ret = rq->authn->cached(rq->authn->arg, rq, &auth, &who, err)) < 0)
		goto out_free;
	clock_gettime(CLOCK_MONOTONIC, &x->started);	/* token fetches not counted */
	ret = -ENOMEM;
	h = curl_easy_init();
	if (!h)
		goto out_free;
	x->h = h;
	handle_setup(tp, h, rq, x, errbuf);

	for (;;) {
		struct curl_slist *hdrs = NULL, *l;
		const char *a = rq->auth ? rq->auth : auth;
		struct host *th = to.url ? to.host : host;
		struct timespec t0, t1;
		enum scheme scheme;
		char *line = NULL, *next;
		CURLcode cc;

		if (reg_cancel_requested(x->cancel)) {
			snprintf(err->message, sizeof(err->message), "cancelled");
			ret = -EINTR;
			break;
		}
		pthread_mutex_lock(&tp->lock);
		scheme = host->scheme;
		pthread_mutex_unlock(&tp->lock);
		free(url);
		url = NULL;
		ret = -ENOMEM;
		if (to.url ? !(url = strdup(to.url)) :
		    rq->url ? !(url = strdup(rq->url)) :
			      asprintf(&url, "%s://%s%s",
				       plain_first(host, scheme) && !try_tls ? "http" : "https",
				       authority, rq->path) < 0) {
			url = NULL;
			break;
		}
		if (rq->accept && asprintf(&line, "Accept: %s", rq->accept) >= 0) {
			l = curl_slist_append(hdrs, line);
			hdrs = l ? l : hdrs;
			free(line);
		}
		/* Authorization only for the origin's host:port, never for a
		 * host a redirect leads to. */
		if (a && th == host && asprintf(&line, "Authorization: %s", a) >= 0) {
			l = curl_slist_append(hdrs, line);
			hdrs = l ? l : hdrs;
			free_secret(line);
		}
		xfer_reset(x);
		memset(err, 0, sizeof(*err));	/* the last attempt tells */
		x->resume_from = rq->stream && !x->no_range ? x->delivered : 0;
		snprintf(range, sizeof(range), "%llu-", (unsigned long long)x->resume_from);
		curl_easy_setopt(h, CURLOPT_RANGE, x->resume_from ? range : NULL);
		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
		/* 303, and 301/302 of a POST, become a GET (as browsers do). */
		if (rq->body && !(to.url && to.post_to_get))
			curl_easy_setopt(h, CURLOPT_POST, 1L);
		else
			curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
		tls_setup(h, th);
		errbuf[0] = '\0';
		clock_gettime(CLOCK_MONOTONIC, &t0);
		x->seen = 0;
		x->seen_at = t0;
		cc = curl_easy_perform(h);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
		curl_slist_free_all(hdrs);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->status);
		if (cc == CURLE_WRITE_ERROR && x->errbody_full)
			cc = CURLE_OK;	/* an error body cut at REG_ERRBODY_MAX */
		if (tp->trace)
			trace(tp, rq, url, to.url != NULL, x->status, &t0, &t1);
		if (scheme == SCHEME_UNKNOWN && !rq->url && !to.url &&
		    probe_scheme(tp, host, scheme, &try_tls, cc, x, errbuf))
			continue;
		try_tls = false;
		if (x->sink_err) {
			ret = x->sink_err;
			snprintf(err->message, sizeof(err->message), "local write failed: %s",
				 strerror(-ret));
			break;
		}
		if (cc == CURLE_OK && x->status >= 200 && x->status < 300) {
			ret = 0;
			if (rq->stream && !x->body_started && body_begin(x) < 0)
				ret = x->sink_err ? x->sink_err : -EIO;
			break;
		}
		if (cc == CURLE_OK && is_redirect(x->status) &&
		    curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &next) == CURLE_OK && next) {
			char *ta;
			if (++to.hops > REDIRECTS_MAX) {
				snprintf(err->message, sizeof(err->message),
					 "more than %d redirects (last to %.300s)", REDIRECTS_MAX,
					 next);
				err->status = x->status;
				ret = -ELOOP;
				break;
			}
			to.post_to_get = to.post_to_get || x->status == 303 ||
					 x->status == 301 || x->status == 302;
			free(to.url);
			ret = -ENOMEM;
			if (!(to.url = strdup(next)) || !(ta = url_authority(next)))
				break;
			/* The target gets its own TLS trust: -o insecure and
			 * client certificates are for the hosts they name. */
			to.host = strcasecmp(ta, authority) ? host_get(tp, ta, NULL) : host;
			free(ta);
			if (!to.host)
				break;
			continue;
		}
		if (cc == CURLE_WRITE_ERROR && x->too_big) {
			ret = -EFBIG;
			snprintf(err->message, sizeof(err->message), "response larger than %zu bytes",
				 x->cap);
			break;
		}
		/* The transfer moved, at no less than the minimum rate: count
		 * failures in a row from here. */
		if (x->progress && resumes < RESUMES_MAX &&
		    x->attempt_bytes >= REG_MIN_RATE * (uint64_t)(t1.tv_sec - t0.tv_sec)) {
			resumes++;
			failures = 0;
		}
		if (cc == CURLE_WRITE_ERROR && x->range_bad) {
			x->no_range = true;
			snprintf(err->message, sizeof(err->message),
				 "server answered a Range request with another range");
			ret = -EIO;
		} else if (cc != CURLE_OK) {
			ret = transfer_error(tp, x, cc, th->name, errbuf, err);
			if (ret == -EINTR || x->over_budget || !retryable_curl(cc))
				break;
		} else if (x->status == 416 && x->resume_from) {
			/* Our range is not what the server has: fetch it whole. */
			x->no_range = true;
			continue;
		} else {
			err->status = x->status;
			err->code[0] = err->message[0] = '\0';
			parse_error_body(x->buf, x->len, err);
			if (!err->message[0])
				snprintf(err->message, sizeof(err->message), "HTTP %ld", x->status);
			ret = reg_errno(x->status, err->code);
			if (x->status == 401 && rq->authn && !answered && th == host) {
				char *fresh = NULL;
				struct timespec ta;
				answered = true;
				clock_gettime(CLOCK_MONOTONIC, &ta);
				ret = rq->authn->answer(rq->authn->arg, rq, x->www_auth, auth, &fresh,
							&who, err);
				x->budget_extra += seconds_since(&ta);
				if (ret < 0)
					break;
				free_secret(auth);
				auth = fresh;
				continue;
			}
			if ((x->status == 401 || x->status == 403) && rq->authn && th == host) {
				who.creds = who.creds && auth;
				rq->authn->denied(rq, x->status, &who, err);
				ret = -EACCES;
				break;
			}
			if (!retryable_status(x->status))
				break;
		}
		if (rq->no_retry || failures >= tp->retries) {
			if (tp->retries && !rq->no_retry)
				snprintf(err->message + strlen(err->message),
					 sizeof(err->message) - strlen(err->message),
					 " (gave up after %u retries)", tp->retries);
			break;
		}
		/* A retry starts at the origin: a redirect target (a presigned
		 * URL) may be what failed, or may have expired. */
		free(to.url);
		to.url = NULL;
		to.hops = 0;
		if (backoff(x, failures++, cc == CURLE_OK ? x->retry_after : -1) < 0) {
			ret = -EINTR;
			snprintf(err->message, sizeof(err->message), "cancelled");
			break;
		}
	}
	curl_easy_cleanup(h);
	x->h = NULL;
out_free:
	free(to.url);
	free(url);
	free_secret(auth);
	free(authority);
	return ret;
}

/* Percent-encode @s for a query or form value. Caller frees. */
char *url_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1), *w = out;

	if (!out)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (isalnum(*p) || strchr("-._~", *p)) {
			*w++ = (char)*p;
		} else {
			*w++ = '%';
			*w++ = hex[*p >> 4];
			*w++ = hex[*p & 15];
		}
	}
	*w = '\0';
	return out;
}
