/* client.c - distribution-spec requests over one shared curl setup. */
#include "client.h"
#include "auth.h"
#include "manifest.h"
#include "mirror.h"
#include "ref.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGES_MAX 10000
#define RETRY_AFTER_MAX 30	/* seconds we are willing to wait */
#define RESUMES_MAX 32		/* resumed downloads per request */
#define WWW_AUTH_MAX 8192	/* bytes of WWW-Authenticate we keep */
#define TOKEN_BODY_MAX (256u << 10)	/* a token server's answer */
#define TOKEN_MAX (64u << 10)	/* one token */
#define TOKEN_TTL_DEFAULT 60	/* seconds, when expires_in is absent */
#define TOKENS_MAX 1024		/* cached Authorization values */
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
	enum scheme scheme;	/* regclient.lock */
	char *ca;		/* PEM: -o cafile and certs.d CAs, or NULL */
	size_t ca_len;
	char *cert, *key;	/* client certificate from certs.d, or NULL */
};

/* What a challenge earned, per registry and scope. */
struct token {
	struct token *next;
	char *registry, *scope;	/* scope "" for registry-wide */
	char *header;		/* "Authorization: ..." or NULL while fetching */
	time_t expires;		/* monotonic seconds; 0: never (Basic) */
	bool fetching;		/* a thread is asking the token server */
	bool creds;		/* earned with credentials ... */
	char source[256];	/* ... from here */
};

struct regclient {
	CURLSH *share;
	pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
	char **insecure;
	char *ca;		/* -o cafile's contents */
	size_t ca_len;
	char *authfile;
	long timeout;
	unsigned retries;
	struct mirrors *mirrors;	/* NULL: none */
	bool mirror_tags;		/* tags and listings from mirrors too */
	unsigned page_size;
	void (*trace)(void *, const char *, const char *, long, double);
	void *trace_arg;
	pthread_mutex_t lock;
	pthread_cond_t token_done;	/* a fetch finished */
	struct host *hosts;		/* lock */
	struct token *tokens;		/* lock, newest first */
	size_t n_tokens;		/* lock */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access a, void *p)
{
	struct regclient *rc = p;

	(void)h;
	(void)a;
	pthread_mutex_lock(&rc->locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *p)
{
	struct regclient *rc = p;

	(void)h;
	pthread_mutex_unlock(&rc->locks[data]);
}

static time_t now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* Free a string that held a secret. */
static void free_secret(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

void strlist_release(struct strlist *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static int strlist_push(struct strlist *l, const char *s)
{
	if (l->n >= REG_LIST_MAX)
		return -EFBIG;
	if ((l->n & (l->n - 1)) == 0 || l->n == 0) {
		size_t cap = l->n ? l->n * 2 : 16;
		char **v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
	}
	l->v[l->n] = strdup(s);
	if (!l->v[l->n])
		return -ENOMEM;
	l->n++;
	return 0;
}

void reg_manifest_release(struct reg_manifest *m)
{
	if (!m)
		return;
	free(m->body);
	free(m->content_type);
	free(m->digest_header);
	memset(m, 0, sizeof(*m));
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

static bool listed_insecure(struct regclient *rc, const char *name)
{
	for (size_t i = 0; name && rc->insecure[i]; i++)
		if (!strcasecmp(rc->insecure[i], name))
			return true;
	return false;
}

/* The host entry for @name ("host[:port]"), made on first use; @alias is
 * the registry's tree name when it differs ("docker.io"). */
static struct host *host_get(struct regclient *rc, const char *name, const char *alias)
{
	struct host *h;

	pthread_mutex_lock(&rc->lock);
	for (h = rc->hosts; h; h = h->next)
		if (!strcasecmp(h->name, name))
			goto out_unlock;
	h = calloc(1, sizeof(*h));
	if (!h || !(h->name = strdup(name)))
		goto out_free;
	h->insecure = listed_insecure(rc, name) || listed_insecure(rc, alias);
	h->loopback = ref_registry_is_loopback(name);
	h->scheme = (h->insecure || h->loopback) ? SCHEME_UNKNOWN : SCHEME_HTTPS;
	if (rc->ca && !(h->ca = malloc(rc->ca_len + 1)))
		goto out_free;
	if (rc->ca) {
		memcpy(h->ca, rc->ca, rc->ca_len + 1);
		h->ca_len = rc->ca_len;
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
	h->next = rc->hosts;
	rc->hosts = h;
	goto out_unlock;
out_free:
	if (h) {
		free(h->name);
		free(h->ca);
		free(h->cert);
		free(h->key);
		free(h);
	}
	h = NULL;
out_unlock:
	pthread_mutex_unlock(&rc->lock);
	return h;
}

struct regclient *regclient_new(const struct regclient_opts *o)
{
	struct regclient *rc;
	size_t n = 0;

	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return NULL;
	rc = calloc(1, sizeof(*rc));
	if (!rc)
		return NULL;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&rc->locks[i], NULL);
	pthread_mutex_init(&rc->lock, NULL);
	pthread_cond_init(&rc->token_done, NULL);
	rc->timeout = o->timeout > 0 ? o->timeout : 30;
	rc->retries = o->retries;
	rc->trace = o->trace;
	rc->trace_arg = o->trace_arg;
	while (o->insecure && o->insecure[n])
		n++;
	rc->insecure = calloc(n + 1, sizeof(char *));
	if (!rc->insecure)
		goto out_free;
	for (size_t i = 0; i < n; i++)
		if (!(rc->insecure[i] = strdup(o->insecure[i])))
			goto out_free;
	/* Read now: the daemon may chdir or lose access later. */
	if (o->cafile && append_file(o->cafile, &rc->ca, &rc->ca_len) < 0)
		goto out_free;
	const char *why = NULL;
	if (mirrors_new(o->mirrors, o->mirror_backoff, &rc->mirrors, &why) < 0)
		goto out_free;
	rc->mirror_tags = o->mirror_tags;
	if (o->authfile && !(rc->authfile = strdup(o->authfile)))
		goto out_free;
	rc->share = curl_share_init();
	if (!rc->share)
		goto out_free;
	curl_share_setopt(rc->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(rc->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(rc->share, CURLSHOPT_USERDATA, rc);
	curl_share_setopt(rc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_share_setopt(rc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(rc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	/* A mirror given as http:// or https:// is asked that way only. */
	struct mirror_ep ep;
	for (size_t i = 0; mirrors_each(rc->mirrors, i, &ep); i++) {
		struct host *mh = (ep.plain || ep.tls) ? host_get(rc, ep.authority, NULL) : NULL;
		if (mh)
			mh->scheme = ep.plain ? SCHEME_HTTP : SCHEME_HTTPS;
	}
	return rc;
out_free:
	regclient_free(rc);
	return NULL;
}

static void token_free(struct token *t)
{
	free(t->registry);
	free(t->scope);
	free_secret(t->header);
	free(t);
}

void regclient_free(struct regclient *rc)
{
	if (!rc)
		return;
	if (rc->share)
		curl_share_cleanup(rc->share);
	mirrors_free(rc->mirrors);
	for (size_t i = 0; rc->insecure && rc->insecure[i]; i++)
		free(rc->insecure[i]);
	free(rc->insecure);
	while (rc->hosts) {
		struct host *h = rc->hosts;
		rc->hosts = h->next;
		free(h->name);
		free(h->ca);
		free(h->cert);
		free(h->key);
		free(h);
	}
	while (rc->tokens) {
		struct token *t = rc->tokens;
		rc->tokens = t->next;
		token_free(t);
	}
	free(rc->ca);
	free(rc->authfile);
	pthread_cond_destroy(&rc->token_done);
	pthread_mutex_destroy(&rc->lock);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&rc->locks[i]);
	free(rc);
}

void regclient_set_page_size(struct regclient *rc, unsigned n)
{
	rc->page_size = n;
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

/* ---- the token cache ---- */

/* Under rc->lock. */
static struct token *token_find(struct regclient *rc, const char *registry, const char *scope)
{
	for (struct token *t = rc->tokens; t; t = t->next)
		if (!strcmp(t->registry, registry) && !strcmp(t->scope, scope))
			return t;
	return NULL;
}

static bool token_valid(const struct token *t)
{
	return t->header && (t->expires == 0 || now_mono() < t->expires);
}

/* Under rc->lock: unlink and free @t. */
static void token_drop(struct regclient *rc, struct token *t)
{
	for (struct token **pp = &rc->tokens; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			rc->n_tokens--;
			token_free(t);
			return;
		}
	}
}

/* Under rc->lock: a new entry, making room by dropping expired ones and
 * then the oldest idle one. */
static struct token *token_add(struct regclient *rc, const char *registry, const char *scope)
{
	struct token *t;

	if (rc->n_tokens >= TOKENS_MAX) {
		struct token *last = NULL;
		for (struct token *u = rc->tokens, *next; u; u = next) {
			next = u->next;
			if (!u->fetching && !token_valid(u))
				token_drop(rc, u);
			else if (!u->fetching)
				last = u;
		}
		if (rc->n_tokens >= TOKENS_MAX && last)
			token_drop(rc, last);
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->registry = strdup(registry);
	t->scope = strdup(scope);
	if (!t->registry || !t->scope) {
		token_free(t);
		return NULL;
	}
	t->next = rc->tokens;
	rc->tokens = t;
	rc->n_tokens++;
	return t;
}

/* What we know to send to @registry for @scope: a copy of the header, or
 * NULL. */
static char *token_cached(struct regclient *rc, const char *registry, const char *scope,
			  bool *creds, char *source, size_t source_len)
{
	struct token *t;
	char *h = NULL;

	pthread_mutex_lock(&rc->lock);
	t = token_find(rc, registry, scope);
	if (t && token_valid(t) && (h = strdup(t->header))) {
		*creds = t->creds;
		snprintf(source, source_len, "%s", t->source);
	}
	pthread_mutex_unlock(&rc->lock);
	return h;
}

/* ---- one exchange ---- */

/* A request: either to a registry (@registry and @path) or to an absolute
 * @url (a token realm). */
struct req {
	const char *method;	/* "GET" or "POST" */
	const char *registry;	/* tree name: auth and messages */
	const char *repo;	/* as the registry knows it, NULL registry-wide */
	const char *scope;	/* token scope */
	const char *path;	/* below the registry's base, with the query */
	const char *url;	/* absolute, instead of @registry/@path */
	const char *accept;
	const char *auth;	/* a fixed Authorization value (token requests) */
	const char *body;	/* POST form body */
	bool stream;		/* 2xx body to the sink, resumable */
	bool no_retry;		/* a mirror: fail over instead */
};

/* One exchange's state, shared by curl's callbacks. */
struct xfer {
	CURL *h;
	reg_sink_fn sink;	/* 2xx bodies go here when set ... */
	void *sink_arg;
	int sink_err;
	char *buf;		/* ... else here, up to cap */
	size_t len, cap;
	bool too_big;
	long status;		/* of the response being received */
	char *content_type, *digest, *link;
	char *www_auth;		/* WWW-Authenticate values joined by ", " */
	long retry_after;
	long long range_start;	/* Content-Range's first byte, -1 if none */
	/* Resuming: bytes the sink holds, the offset asked for in this
	 * attempt (0: whole body), whether this response's body began. */
	uint64_t delivered, resume_from;
	bool body_started, range_bad, no_range, progress;
	/* Stall detection (on_progress): bytes seen, and since when. */
	curl_off_t seen;
	struct timespec seen_at;
	long stall_limit;	/* seconds */
};

/* curl's low-speed check averages over its window, so a transfer that
 * stops after some bytes fails only seconds later: fail it once nothing
 * arrived for the timeout, as the option promises. */
static int on_progress(void *p, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct xfer *x = p;
	struct timespec ts;

	(void)dltotal;
	(void)ultotal;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (dlnow != x->seen || ulnow) {
		x->seen = dlnow;
		x->seen_at = ts;
		return 0;
	}
	return ts.tv_sec - x->seen_at.tv_sec > x->stall_limit;
}

/* Forget the last response (not what the sink holds). */
static void xfer_reset(struct xfer *x)
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
		n = cap - x->len;	/* error body: keep the head */
		if (n == 0)
			return sz * nm;
	}
	char *b = realloc(x->buf, x->len + n + 1);
	if (!b)
		return 0;
	x->buf = b;
	memcpy(x->buf + x->len, data, n);
	x->len += n;
	x->buf[x->len] = '\0';
	return sz * nm;
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

static void backoff(unsigned attempt, long retry_after)
{
	struct timespec ts;
	long ms;

	if (retry_after >= 0) {
		ms = (retry_after > RETRY_AFTER_MAX ? RETRY_AFTER_MAX : retry_after) * 1000;
	} else {
		/* 100 ms, 200 ms, 400 ms ... capped at 5 s, plus up to 50 % jitter. */
		ms = 100L << (attempt > 6 ? 6 : attempt);
		if (ms > 5000)
			ms = 5000;
		ms += rand() % (ms / 2 + 1);
	}
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	nanosleep(&ts, NULL);
}

/* TLS for @host: verified against the system CAs plus its own, or not at
 * all for -o insecure hosts. */
/* Loopback registries are plain HTTP nearly always (DESIGN): ask in plain
 * HTTP first there; elsewhere (-o insecure) TLS comes first. */
static bool plain_first(const struct host *h, enum scheme scheme)
{
	if (scheme != SCHEME_UNKNOWN)
		return scheme == SCHEME_HTTP;
	return h->loopback && !h->insecure;
}

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
static char *url_authority(const char *url)
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

static int answer_challenge(struct regclient *rc, const struct req *rq, const char *www,
			    const char *sent, char **out, bool *creds, char *source,
			    size_t source_len, struct reg_error *err);

/* Report an exchange to the trace callback. A redirect target's query is
 * left out: presigned storage URLs carry their signature there. */
static void trace(struct regclient *rc, const struct req *rq, CURL *h, const char *url,
		  long status, const struct timespec *t0, const struct timespec *t1)
{
	char *eff = NULL, *cut = NULL;
	const char *q;

	curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &eff);
	if (!eff)
		eff = (char *)url;
	if (strcmp(eff, url) && (q = strchr(eff, '?')) &&
	    asprintf(&cut, "%.*s?...", (int)(q - eff), eff) < 0)
		cut = NULL;
	rc->trace(rc->trace_arg, rq->method ? rq->method : "GET", cut ? cut : eff, status,
		  (double)(t1->tv_sec - t0->tv_sec) + (double)(t1->tv_nsec - t0->tv_nsec) / 1e9);
	free(cut);
}

static void denied_message(const struct req *rq, long status, bool creds, const char *source,
			   struct reg_error *err)
{
	const char *repo = rq->repo ? rq->repo : "the catalog";

	if (!err->code[0])
		snprintf(err->code, sizeof(err->code), "%s",
			 status == 403 ? "DENIED" : "UNAUTHORIZED");
	if (creds && status == 401)
		snprintf(err->message, sizeof(err->message),
			 "%s refused the credentials from %.250s for %s", rq->registry, source, repo);
	else if (creds)
		snprintf(err->message, sizeof(err->message),
			 "%s denied %s to the credentials from %.250s (no such repository, or no "
			 "permission)", rq->registry, repo, source);
	else
		snprintf(err->message, sizeof(err->message),
			 "%s refused anonymous access to %s, and no credentials were found for it "
			 "(docker login, or -o authfile=)", rq->registry, repo);
}

/* Perform one request with retries and, for registries, one answer to an
 * auth challenge. On 2xx returns 0 with @x holding the body (unless
 * streamed) and headers; otherwise -errno with @err filled. */
static int do_request(struct regclient *rc, const struct req *rq, struct xfer *x,
		      struct reg_error *err)
{
	char errbuf[CURL_ERROR_SIZE];
	char source[256] = "", range[32];
	char *authority = NULL, *auth = NULL, *url = NULL;
	bool creds = false, answered = false;
	unsigned failures = 0, resumes = 0;
	struct host *host;
	CURL *h;
	int ret = -ENOMEM;

	memset(err, 0, sizeof(*err));
	authority = rq->url ? url_authority(rq->url) :
			      strdup(ref_registry_endpoint(rq->registry));
	if (!authority) {
		snprintf(err->message, sizeof(err->message), "malformed URL");
		return rq->url ? -EINVAL : -ENOMEM;
	}
	host = host_get(rc, authority, rq->registry);
	if (!host)
		goto out_free;
	if (rq->registry)
		auth = token_cached(rc, rq->registry, rq->scope ? rq->scope : "", &creds, source,
				    sizeof(source));
	h = curl_easy_init();
	if (!h)
		goto out_free;
	x->h = h;
	curl_easy_setopt(h, CURLOPT_SHARE, rc->share);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
	/* Never CURLOPT_UNRESTRICTED_AUTH: Authorization stays with its host. */
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "ocifs/" OCIFS_VERSION);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, rc->timeout);
	/* A stalled transfer fails instead of hanging a FUSE call. */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, rc->timeout);
	x->stall_limit = rc->timeout;
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	if (!rq->stream)
		curl_easy_setopt(h, CURLOPT_TIMEOUT, rc->timeout * 4);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	if (rq->body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(rq->body));
	}
	tls_setup(h, host);

	for (;;) {
		struct curl_slist *hdrs = NULL, *l;
		const char *a = rq->auth ? rq->auth : auth;
		struct timespec t0, t1;
		enum scheme scheme;
		char *line = NULL;
		CURLcode cc;

		pthread_mutex_lock(&rc->lock);
		scheme = host->scheme;
		pthread_mutex_unlock(&rc->lock);
		free(url);
		url = NULL;
		ret = -ENOMEM;
		if (rq->url ? !(url = strdup(rq->url)) :
			      asprintf(&url, "%s://%s%s", plain_first(host, scheme) ? "http" : "https",
				       authority, rq->path) < 0) {
			url = NULL;
			break;
		}
		if (rq->accept && asprintf(&line, "Accept: %s", rq->accept) >= 0) {
			l = curl_slist_append(hdrs, line);
			hdrs = l ? l : hdrs;
			free(line);
		}
		if (a && asprintf(&line, "Authorization: %s", a) >= 0) {
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
		errbuf[0] = '\0';
		clock_gettime(CLOCK_MONOTONIC, &t0);
		x->seen = 0;
		x->seen_at = t0;
		cc = curl_easy_perform(h);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
		curl_slist_free_all(hdrs);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->status);
		if (rc->trace)
			trace(rc, rq, h, url, x->status, &t0, &t1);
		/* Loopback and insecure registries may not speak TLS at all: a
		 * handshake that failed without a TLS alert from the server
		 * ("wrong version number": it answered in plain HTTP) means
		 * plain HTTP, for this host, from now on. */
		if (scheme == SCHEME_UNKNOWN && !rq->url && plain_first(host, scheme)) {
			/* A TLS server asked in plain HTTP hangs up or says 400
			 * "... HTTPS ..." (Go, nginx): use TLS from now on. */
			bool tls = cc == CURLE_GOT_NOTHING || cc == CURLE_RECV_ERROR ||
				   (cc == CURLE_OK && x->status == 400 && x->buf &&
				    strcasestr(x->buf, "https"));
			pthread_mutex_lock(&rc->lock);
			if (tls)
				host->scheme = SCHEME_HTTPS;
			else if (x->status > 0)
				host->scheme = SCHEME_HTTP;
			pthread_mutex_unlock(&rc->lock);
			if (tls)
				continue;
		} else if (scheme == SCHEME_UNKNOWN && !rq->url) {
			bool plain = cc == CURLE_SSL_CONNECT_ERROR && !strstr(errbuf, "alert");
			pthread_mutex_lock(&rc->lock);
			if (plain)
				host->scheme = SCHEME_HTTP;
			else if (x->status > 0)
				host->scheme = SCHEME_HTTPS;
			pthread_mutex_unlock(&rc->lock);
			if (plain)
				continue;
		}
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
		if (cc == CURLE_WRITE_ERROR && x->too_big) {
			ret = -EFBIG;
			snprintf(err->message, sizeof(err->message), "response larger than %zu bytes",
				 x->cap);
			break;
		}
		if (x->progress && resumes < RESUMES_MAX) {
			/* The transfer moved: count failures in a row from here. */
			resumes++;
			failures = 0;
		}
		if (cc == CURLE_WRITE_ERROR && x->range_bad) {
			x->no_range = true;
			snprintf(err->message, sizeof(err->message),
				 "server answered a Range request with another range");
			ret = -EIO;
		} else if (cc != CURLE_OK) {
			err->status = 0;
			if (cc == CURLE_PEER_FAILED_VERIFICATION)
				snprintf(err->message, sizeof(err->message),
					 "TLS certificate of %s not trusted (%s); see -o cafile= "
					 "and -o insecure=", authority, errbuf[0] ? errbuf : "");
			else if (cc == CURLE_ABORTED_BY_CALLBACK)
				snprintf(err->message, sizeof(err->message),
					 "no data for %ld s (stalled)", rc->timeout);
			else
				snprintf(err->message, sizeof(err->message), "%s",
					 errbuf[0] ? errbuf : curl_easy_strerror(cc));
			ret = curl_errno(cc);
			if (!retryable_curl(cc))
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
			if (x->status == 401 && rq->registry && !answered) {
				char *next = NULL;
				answered = true;
				ret = answer_challenge(rc, rq, x->www_auth, auth, &next, &creds,
						       source, sizeof(source), err);
				if (ret < 0)
					break;
				free_secret(auth);
				auth = next;
				continue;
			}
			if ((x->status == 401 || x->status == 403) && rq->registry) {
				denied_message(rq, x->status, creds && auth, source, err);
				ret = -EACCES;
				break;
			}
			if (!retryable_status(x->status))
				break;
		}
		if (rq->no_retry || failures >= rc->retries) {
			if (rc->retries && !rq->no_retry)
				snprintf(err->message + strlen(err->message),
					 sizeof(err->message) - strlen(err->message),
					 " (gave up after %u retries)", rc->retries);
			break;
		}
		backoff(failures++, cc == CURLE_OK ? x->retry_after : -1);
	}
	curl_easy_cleanup(h);
	x->h = NULL;
out_free:
	free(url);
	free_secret(auth);
	free(authority);
	return ret;
}

/* ---- tokens ---- */

/* Percent-encode @s for a query or form value. Caller frees. */
static char *url_escape(const char *s)
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

/* A token goes into a header: refuse anything that could break out. */
static bool token_ok(const char *t)
{
	size_t n = strlen(t);

	if (n == 0 || n > TOKEN_MAX)
		return false;
	for (; *t; t++)
		if (*t <= ' ' || *t > '~')
			return false;
	return true;
}

/* Ask the token server at @realm for @scope; "Bearer <token>" into *@out
 * and its lifetime into *@ttl. */
static int fetch_token(struct regclient *rc, const struct req *rq, const char *realm,
		       const char *service, const char *scope, const struct auth_cred *c,
		       char **out, long *ttl, struct reg_error *err)
{
	struct xfer x = { .cap = TOKEN_BODY_MAX };
	struct req t = { .method = "GET", .accept = "application/json" };
	char *svc = NULL, *sc = NULL, *rt = NULL, *url = NULL, *body = NULL, *basic = NULL;
	char *authority = NULL;
	const char *tok;
	json_t *root = NULL;
	struct host *host;
	int ret = -ENOMEM;

	if (strncasecmp(realm, "https://", 8) && strncasecmp(realm, "http://", 7)) {
		snprintf(err->message, sizeof(err->message), "%s: token realm is not an HTTP URL",
			 rq->registry);
		return -EACCES;
	}
	svc = url_escape(service ? service : "");
	sc = url_escape(scope);
	authority = url_authority(realm);
	if (!svc || !sc || !authority)
		goto out_free;
	host = host_get(rc, authority, NULL);
	if (!host)
		goto out_free;
	/* Credentials go to a plain-HTTP realm only where plain HTTP is
	 * accepted anyway. */
	if (c && !strncasecmp(realm, "http://", 7) && !host->loopback && !host->insecure) {
		snprintf(err->message, sizeof(err->message),
			 "%s: token realm %s is plain HTTP; not sending credentials there",
			 rq->registry, authority);
		ret = -EACCES;
		goto out_free;
	}
	if (c && c->identitytoken) {
		/* The refresh token travels in a POST body, never in a URL. */
		rt = url_escape(c->identitytoken);
		if (!rt || asprintf(&body, "grant_type=refresh_token&refresh_token=%s&service=%s"
				    "&scope=%s&client_id=ocifs", rt, svc, sc) < 0) {
			body = NULL;
			goto out_free;
		}
		t.method = "POST";
		t.body = body;
		t.url = realm;
	} else {
		if (asprintf(&url, "%s%sservice=%s&scope=%s", realm, strchr(realm, '?') ? "&" : "?",
			     svc, sc) < 0) {
			url = NULL;
			goto out_free;
		}
		t.url = url;
		if (c && auth_basic_header(c, &basic) < 0)
			goto out_free;
		t.auth = basic;
	}
	ret = do_request(rc, &t, &x, err);
	if (ret < 0) {
		char why[sizeof(err->message)];
		snprintf(why, sizeof(why), "%s", err->message);
		if (err->status == 401 || err->status == 403) {
			ret = -EACCES;
			if (c)
				snprintf(err->message, sizeof(err->message),
					 "token server %s refused the credentials from %.250s for %s",
					 authority, c->source, rq->registry);
			else
				snprintf(err->message, sizeof(err->message),
					 "token server %s refused anonymous access to %s", authority,
					 rq->registry);
		} else {
			snprintf(err->message, sizeof(err->message), "token server %s: %.250s",
				 authority, why);
		}
		if (!err->code[0])
			snprintf(err->code, sizeof(err->code), "UNAUTHORIZED");
		goto out_free;
	}
	root = json_loadb(x.buf ? x.buf : "", x.len, 0, NULL);
	tok = json_string_value(json_object_get(root, "token"));
	if (!tok || !*tok)
		tok = json_string_value(json_object_get(root, "access_token"));
	if (!tok || !token_ok(tok)) {
		snprintf(err->message, sizeof(err->message), "token server %s: no usable token",
			 authority);
		ret = -EACCES;
		goto out_free;
	}
	json_t *exp = json_object_get(root, "expires_in");
	*ttl = json_is_integer(exp) && json_integer_value(exp) > 0 ?
		       (long)json_integer_value(exp) : TOKEN_TTL_DEFAULT;
	ret = asprintf(out, "Bearer %s", tok) < 0 ? -ENOMEM : 0;
out_free:
	if (root) {
		/* The answer held the token: scrub what jansson parsed from. */
		json_decref(root);
	}
	if (x.buf)
		explicit_bzero(x.buf, x.len);
	xfer_reset(&x);
	free_secret(body);
	free_secret(rt);
	free_secret(basic);
	free(url);
	free(svc);
	free(sc);
	free(authority);
	return ret;
}

/* Bearer: the header for (registry, scope), from the cache when another
 * thread got a newer one than @sent, else from the token server; one
 * fetch per key at a time. */
static int bearer(struct regclient *rc, const struct req *rq, const struct auth_challenge *ch,
		  const char *sent, char **out, bool *creds, char *source, size_t source_len,
		  struct reg_error *err)
{
	const char *realm = auth_challenge_param(ch, "realm");
	const char *scope = rq->scope ? rq->scope : auth_challenge_param(ch, "scope");
	const char *err_param = auth_challenge_param(ch, "error");
	struct auth_cred c = { 0 };
	struct token *t;
	char why[256], *hdr = NULL;
	time_t started;
	long ttl = 0;
	int ret, found;

	if (!realm) {
		snprintf(err->message, sizeof(err->message), "%s: Bearer challenge without realm",
			 rq->registry);
		return -EACCES;
	}
	if (!scope)
		scope = "";
	pthread_mutex_lock(&rc->lock);
	for (;;) {
		t = token_find(rc, rq->registry, scope);
		if (!t || !t->fetching)
			break;
		pthread_cond_wait(&rc->token_done, &rc->lock);
	}
	if (t && token_valid(t) && (!sent || strcmp(t->header, sent))) {
		*out = strdup(t->header);
		*creds = t->creds;
		snprintf(source, source_len, "%s", t->source);
		pthread_mutex_unlock(&rc->lock);
		return *out ? 0 : -ENOMEM;
	}
	if (t && token_valid(t) && sent && !strcmp(t->header, sent) && err_param &&
	    !strcmp(err_param, "insufficient_scope")) {
		/* A fresh token that does not grant the scope: asking again
		 * gets the same answer until the credentials change, which we
		 * notice when it expires. Registries answer this for missing
		 * repositories too, so it is common while resolving paths. */
		denied_message(rq, t->creds ? 403 : 401, t->creds, t->source, err);
		pthread_mutex_unlock(&rc->lock);
		return -EACCES;
	}
	if (!t)
		t = token_add(rc, rq->registry, scope);
	if (!t) {
		pthread_mutex_unlock(&rc->lock);
		return -ENOMEM;
	}
	t->fetching = true;
	free_secret(t->header);
	t->header = NULL;
	pthread_mutex_unlock(&rc->lock);

	struct auth_opts ao = { .authfile = rc->authfile };
	found = auth_lookup(&ao, rq->registry, rq->repo, &c, why, sizeof(why));
	started = now_mono();
	ret = fetch_token(rc, rq, realm, auth_challenge_param(ch, "service"), scope,
			  found == 0 ? &c : NULL, &hdr, &ttl, err);

	pthread_mutex_lock(&rc->lock);
	t->fetching = false;
	if (ret == 0) {
		t->header = hdr;
		/* Counted from before the request: never trusted too long. */
		t->expires = started + ttl;
		t->creds = found == 0;
		snprintf(t->source, sizeof(t->source), "%s", found == 0 ? c.source : "");
		*out = strdup(hdr);
		if (!*out)
			ret = -ENOMEM;
	} else {
		token_drop(rc, t);
	}
	pthread_cond_broadcast(&rc->token_done);
	pthread_mutex_unlock(&rc->lock);
	if (ret == 0) {
		*creds = found == 0;
		snprintf(source, source_len, "%s", found == 0 ? c.source : "");
	}
	auth_cred_release(&c);
	return ret;
}

static int basic(struct regclient *rc, const struct req *rq, const char *sent, char **out,
		 bool *creds, char *source, size_t source_len, struct reg_error *err)
{
	struct auth_opts ao = { .authfile = rc->authfile };
	const char *scope = rq->scope ? rq->scope : "";
	struct auth_cred c = { 0 };
	char why[256], *hdr = NULL;
	struct token *t;
	int ret;

	ret = auth_lookup(&ao, rq->registry, rq->repo, &c, why, sizeof(why));
	if (ret < 0 || !c.password) {
		denied_message(rq, 401, false, "", err);
		if (why[0])
			snprintf(err->message + strlen(err->message),
				 sizeof(err->message) - strlen(err->message), " [%s]", why);
		ret = -EACCES;
		goto out_release;
	}
	ret = auth_basic_header(&c, &hdr);
	if (ret < 0)
		goto out_release;
	if (sent && !strcmp(sent, hdr)) {
		/* What we sent was refused and nothing changed since. */
		denied_message(rq, 401, true, c.source, err);
		ret = -EACCES;
		goto out_release;
	}
	pthread_mutex_lock(&rc->lock);
	t = token_find(rc, rq->registry, scope);
	if (!t)
		t = token_add(rc, rq->registry, scope);
	if (t && !t->fetching) {
		char *copy = strdup(hdr);
		if (copy) {
			free_secret(t->header);
			t->header = copy;
			t->expires = 0;
			t->creds = true;
			snprintf(t->source, sizeof(t->source), "%s", c.source);
		}
	}
	pthread_mutex_unlock(&rc->lock);
	*out = hdr;
	hdr = NULL;
	*creds = true;
	snprintf(source, source_len, "%s", c.source);
out_release:
	free_secret(hdr);
	auth_cred_release(&c);
	return ret;
}

/* A 401 with challenges @www for request @rq, having sent @sent (or
 * nothing): the Authorization value to retry with, into *@out. */
static int answer_challenge(struct regclient *rc, const struct req *rq, const char *www,
			    const char *sent, char **out, bool *creds, char *source,
			    size_t source_len, struct reg_error *err)
{
	struct auth_challenges cs = { 0 };
	const struct auth_challenge *ch;
	int ret;

	if (!www || auth_challenges_parse(www, &cs) < 0 || cs.n == 0) {
		snprintf(err->message, sizeof(err->message),
			 "%s answered 401 without a usable WWW-Authenticate challenge",
			 rq->registry);
		if (!err->code[0])
			snprintf(err->code, sizeof(err->code), "UNAUTHORIZED");
		return -EACCES;
	}
	if ((ch = auth_challenge_find(&cs, "Bearer")))
		ret = bearer(rc, rq, ch, sent, out, creds, source, source_len, err);
	else if (auth_challenge_find(&cs, "Basic"))
		ret = basic(rc, rq, sent, out, creds, source, source_len, err);
	else {
		snprintf(err->message, sizeof(err->message),
			 "%s wants %s authentication, which ocifs does not speak", rq->registry,
			 cs.v[0].scheme);
		ret = -EACCES;
	}
	auth_challenges_release(&cs);
	return ret;
}

/* ---- the distribution API ---- */

/* "repository:<name>:pull" for @name (as the registry knows it). */
static char *pull_scope(const char *name)
{
	char *s;

	return asprintf(&s, "repository:%s:pull", name) < 0 ? NULL : s;
}

/* @rq through the mirrors of its registry, in order, then the registry
 * itself. Sources before @skip are passed over; *source (may be NULL)
 * tells which one answered: 0.. for mirrors, and the count of mirrors for
 * the origin. A mirror that errs is skipped for its back-off; one that
 * says 404 or 401/403 just passes the request on. Mirrors get no
 * retries, and never the origin's credentials: they are asked under
 * their own name. */
static int do_routed(struct regclient *rc, const struct req *rq, bool mirrored, unsigned skip,
		     unsigned *source, struct xfer *x, struct reg_error *err)
{
	struct mirror_ep ep[MIRRORS_MAX];
	size_t n = mirrored ? mirrors_for(rc->mirrors, rq->registry, ep) : 0;
	int ret;

	for (size_t i = skip; i < n; i++) {
		struct req mrq = *rq;
		mrq.registry = ep[i].authority;
		mrq.no_retry = true;
		if (source)
			*source = (unsigned)i;
		ret = do_request(rc, &mrq, x, err);
		if (ret == 0)
			return 0;
		/* The sink refused the bytes (e.g. more than the descriptor):
		 * the caller decides whether to ask the next source. */
		if (ret == -EBADMSG || (x->sink_err && ret == x->sink_err))
			return ret;
		if (ret != -ENOENT && ret != -EACCES)
			mirrors_failed(rc->mirrors, ep[i].authority);
		xfer_reset(x);
		/* What this mirror sent is not resumed elsewhere: if its bytes
		 * were wrong, the whole would fail at the end. Start over. */
		if (x->sink && x->delivered) {
			x->delivered = 0;
			ret = x->sink(x->sink_arg, NULL, 0);
			if (ret < 0)
				return ret;
		}
	}
	if (source)
		*source = (unsigned)n;
	return do_request(rc, rq, x, err);
}

unsigned regclient_mirror_count(struct regclient *rc, const char *registry)
{
	struct mirror_ep ep[MIRRORS_MAX];

	return (unsigned)mirrors_for(rc->mirrors, registry, ep);
}

/* A reference is content-addressed when it is a digest. */
static bool is_digest(const char *reference)
{
	return !strncmp(reference, "sha256:", 7);
}

int regclient_get_manifest(struct regclient *rc, const char *registry, const char *repo,
			   const char *reference, unsigned skip, unsigned *source,
			   struct reg_manifest *out, struct reg_error *err)
{
	struct xfer x = { .cap = MANIFEST_MAX_BYTES };
	char *name = NULL, *scope = NULL, *path = NULL;
	int ret = -ENOMEM;

	name = ref_registry_repository(registry, repo);
	scope = name ? pull_scope(name) : NULL;
	if (!scope || asprintf(&path, "/v2/%s/manifests/%s", name, reference) < 0) {
		path = NULL;
		goto out_free;
	}
	struct req rq = { .registry = registry, .repo = name, .scope = scope, .path = path,
			  .accept = MANIFEST_ACCEPT };
	ret = do_routed(rc, &rq, is_digest(reference) || rc->mirror_tags, skip, source, &x, err);
	if (ret < 0)
		goto out_free;
	out->body = x.buf ? x.buf : strdup("");
	out->len = x.len;
	out->content_type = x.content_type;
	out->digest_header = x.digest;
	x.buf = x.content_type = x.digest = NULL;
	if (!out->body) {
		reg_manifest_release(out);
		ret = -ENOMEM;
	}
out_free:
	xfer_reset(&x);
	free(path);
	free(scope);
	free(name);
	return ret;
}

/* Link: </v2/_catalog?last=x&n=100>; rel="next" -> the path and query to
 * ask next, or NULL. An absolute link keeps only its path: credentials
 * are for the registry's own host. */
static char *next_link(const char *link)
{
	const char *lt, *gt, *p;

	if (!link || !strstr(link, "rel=\"next\"") || !(lt = strchr(link, '<')) ||
	    !(gt = strchr(lt, '>')))
		return NULL;
	p = lt + 1;
	if (strncmp(p, "http://", 7) == 0 || strncmp(p, "https://", 8) == 0) {
		p = strchr(strstr(p, "://") + 3, '/');
		if (!p || p > gt)
			return NULL;
	}
	if (*p != '/')
		return NULL;
	return strndup(p, (size_t)(gt - p));
}

/* Fetch a paginated listing: @key names the JSON array in each page. */
static int list_pages(struct regclient *rc, const char *registry, const char *repo,
		      const char *scope, const char *first, const char *key,
		      struct strlist *out, struct reg_error *err)
{
	struct strlist l = { 0 };
	struct xfer x = { .cap = 8u << 20 };
	char *path = NULL;
	int ret = -ENOMEM;

	/* Ask for a page size only when told to: registries cap it and some
	 * answer 400 PAGINATION_NUMBER_INVALID above their cap. */
	if ((rc->page_size ? asprintf(&path, "%s?n=%u", first, rc->page_size) :
			     asprintf(&path, "%s", first)) < 0) {
		path = NULL;
		goto out_free;
	}
	for (int page = 0; path && page < PAGES_MAX; page++) {
		struct req rq = { .registry = registry, .repo = repo, .scope = scope,
				  .path = path, .accept = "application/json" };
		json_t *root, *arr;
		size_t count;

		ret = do_routed(rc, &rq, rc->mirror_tags, 0, NULL, &x, err);
		if (ret < 0)
			goto out_free;
		root = json_loadb(x.buf ? x.buf : "", x.len, 0, NULL);
		arr = json_object_get(root, key);
		if (!root || (!json_is_array(arr) && !json_is_null(arr) && arr)) {
			json_decref(root);
			snprintf(err->message, sizeof(err->message), "malformed %s listing", key);
			ret = -EIO;
			goto out_free;
		}
		for (size_t i = 0; i < json_array_size(arr); i++) {
			const char *s = json_string_value(json_array_get(arr, i));
			if (!s)
				continue;
			ret = strlist_push(&l, s);
			if (ret < 0) {
				json_decref(root);
				goto out_free;
			}
		}
		count = json_array_size(arr);
		json_decref(root);
		free(path);
		path = next_link(x.link);
		/* Stop on an empty page too: some registries loop. */
		if (count == 0) {
			free(path);
			path = NULL;
		}
	}
	ret = 0;
	*out = l;
	l.v = NULL;
	l.n = 0;
out_free:
	strlist_release(&l);
	xfer_reset(&x);
	free(path);
	return ret;
}

int regclient_list_tags(struct regclient *rc, const char *registry, const char *repo,
			struct strlist *out, struct reg_error *err)
{
	char *name = ref_registry_repository(registry, repo);
	char *scope = name ? pull_scope(name) : NULL;
	char *path = NULL;
	int ret = -ENOMEM;

	if (scope && asprintf(&path, "/v2/%s/tags/list", name) >= 0)
		ret = list_pages(rc, registry, name, scope, path, "tags", out, err);
	else
		path = NULL;
	free(path);
	free(scope);
	free(name);
	return ret;
}

int regclient_list_catalog(struct regclient *rc, const char *registry, struct strlist *out,
			   struct reg_error *err)
{
	/* Docker Hub names come back as library/x; the tree shows x too. */
	return list_pages(rc, registry, NULL, "registry:catalog:*", "/v2/_catalog",
			  "repositories", out, err);
}

int regclient_get_blob(struct regclient *rc, const char *registry, const char *repo,
		       const char *digest, reg_sink_fn sink, void *sink_arg, unsigned skip,
		       unsigned *source, struct reg_error *err)
{
	struct xfer x = { .sink = sink, .sink_arg = sink_arg };
	char *name = NULL, *scope = NULL, *path = NULL;
	int ret = -ENOMEM;

	name = ref_registry_repository(registry, repo);
	scope = name ? pull_scope(name) : NULL;
	if (scope && asprintf(&path, "/v2/%s/blobs/%s", name, digest) >= 0) {
		struct req rq = { .registry = registry, .repo = name, .scope = scope,
				  .path = path, .stream = true };
		ret = do_routed(rc, &rq, true, skip, source, &x, err);
	} else {
		path = NULL;
	}
	xfer_reset(&x);
	free(path);
	free(scope);
	free(name);
	return ret;
}

void regclient_print_versions(FILE *f)
{
	curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);

	fprintf(f, "libcurl %s (%s)\n", v->version, v->ssl_version ? v->ssl_version : "no TLS");
	fprintf(f, "jansson %s\n", jansson_version_str());
}
