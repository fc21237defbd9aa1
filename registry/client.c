/* client.c - distribution-spec requests over one shared curl setup. */
#include "client.h"
#include "manifest.h"
#include "ref.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define PAGES_MAX 10000
#define RETRY_AFTER_MAX 30	/* seconds we are willing to wait */

struct regclient {
	CURLSH *share;
	pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
	char **insecure;
	long timeout;
	unsigned retries;
	unsigned page_size;
	void (*trace)(void *, const char *, const char *, long, double);
	void *trace_arg;
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
	rc->share = curl_share_init();
	if (!rc->share)
		goto out_free;
	curl_share_setopt(rc->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(rc->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(rc->share, CURLSHOPT_USERDATA, rc);
	curl_share_setopt(rc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_share_setopt(rc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(rc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	return rc;
out_free:
	regclient_free(rc);
	return NULL;
}

void regclient_free(struct regclient *rc)
{
	if (!rc)
		return;
	if (rc->share)
		curl_share_cleanup(rc->share);
	for (size_t i = 0; rc->insecure && rc->insecure[i]; i++)
		free(rc->insecure[i]);
	free(rc->insecure);
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
		return -ETIMEDOUT;
	default:
		return -EIO;
	}
}

static bool host_is_insecure(struct regclient *rc, const char *registry)
{
	if (ref_registry_is_loopback(registry))
		return true;
	for (size_t i = 0; rc->insecure[i]; i++)
		if (!strcmp(rc->insecure[i], registry))
			return true;
	return false;
}

static char *base_url(struct regclient *rc, const char *registry)
{
	char *s;

	if (asprintf(&s, "%s://%s", host_is_insecure(rc, registry) ? "http" : "https",
		     ref_registry_endpoint(registry)) < 0)
		return NULL;
	return s;
}

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
	long retry_after;
};

static void xfer_reset(struct xfer *x)
{
	free(x->buf);
	free(x->content_type);
	free(x->digest);
	free(x->link);
	x->buf = x->content_type = x->digest = x->link = NULL;
	x->len = 0;
	x->too_big = false;
	x->status = 0;
	x->retry_after = -1;
	x->sink_err = 0;
}

static size_t on_body(char *data, size_t sz, size_t nm, void *p)
{
	struct xfer *x = p;
	size_t n = sz * nm;
	size_t cap;

	if (x->status == 0)
		curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
	if (x->sink && x->status >= 200 && x->status < 300) {
		x->sink_err = x->sink(x->sink_arg, data, n);
		return x->sink_err ? 0 : n;
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
		x->content_type = x->digest = x->link = NULL;
		x->status = 0;
		x->retry_after = -1;
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
		char *end;
		long s = strtol(v, &end, 10);
		if (end != v && *end == '\0' && s >= 0)
			x->retry_after = s;
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
	       c == CURLE_OPERATION_TIMEDOUT;
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

/* Perform one request with retries. On 2xx returns 0 with @x holding the
 * body (unless streamed) and headers; otherwise -errno with @err filled. */
static int do_request(struct regclient *rc, const char *url, const char *accept,
		      bool stream, struct xfer *x, struct reg_error *err)
{
	struct curl_slist *hdrs = NULL;
	char *accept_hdr = NULL;
	CURL *h;
	int ret = -EIO;

	memset(err, 0, sizeof(*err));
	h = curl_easy_init();
	if (!h)
		return -ENOMEM;
	if (accept) {
		if (asprintf(&accept_hdr, "Accept: %s", accept) < 0) {
			ret = -ENOMEM;
			goto out_easy;
		}
		hdrs = curl_slist_append(hdrs, accept_hdr);
	}
	x->h = h;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_SHARE, rc->share);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "ocifs/" OCIFS_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, rc->timeout);
	/* A stalled transfer fails instead of hanging a FUSE call. */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, rc->timeout);
	if (!stream)
		curl_easy_setopt(h, CURLOPT_TIMEOUT, rc->timeout * 4);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);

	for (unsigned attempt = 0;; attempt++) {
		struct timespec t0, t1;
		CURLcode cc;

		xfer_reset(x);
		if (stream && attempt > 0) {
			ret = x->sink(x->sink_arg, NULL, 0);
			if (ret < 0)
				break;
		}
		clock_gettime(CLOCK_MONOTONIC, &t0);
		cc = curl_easy_perform(h);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->status);
		if (rc->trace) {
			char *eff = NULL;
			curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &eff);
			rc->trace(rc->trace_arg, "GET", eff ? eff : url, x->status,
				  (double)(t1.tv_sec - t0.tv_sec) +
					  (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
		}
		if (x->sink_err) {
			ret = x->sink_err;
			snprintf(err->message, sizeof(err->message), "local write failed: %s",
				 strerror(-ret));
			break;
		}
		if (cc == CURLE_OK && x->status >= 200 && x->status < 300) {
			ret = 0;
			break;
		}
		if (cc == CURLE_WRITE_ERROR && x->too_big) {
			ret = -EFBIG;
			snprintf(err->message, sizeof(err->message), "response larger than %zu bytes",
				 x->cap);
			break;
		}
		if (cc != CURLE_OK) {
			err->status = 0;
			snprintf(err->message, sizeof(err->message), "%s", curl_easy_strerror(cc));
			ret = curl_errno(cc);
			if (!retryable_curl(cc) || attempt >= rc->retries)
				break;
			backoff(attempt, -1);
			continue;
		}
		err->status = x->status;
		err->code[0] = err->message[0] = '\0';
		parse_error_body(x->buf, x->len, err);
		if (!err->message[0])
			snprintf(err->message, sizeof(err->message), "HTTP %ld", x->status);
		ret = reg_errno(x->status, err->code);
		if (!retryable_status(x->status) || attempt >= rc->retries)
			break;
		backoff(attempt, x->retry_after);
	}
	curl_slist_free_all(hdrs);
	free(accept_hdr);
out_easy:
	curl_easy_cleanup(h);
	x->h = NULL;
	return ret;
}

int regclient_get_manifest(struct regclient *rc, const char *registry, const char *repo,
			   const char *reference, struct reg_manifest *out,
			   struct reg_error *err)
{
	struct xfer x = { .cap = MANIFEST_MAX_BYTES };
	char *base = NULL, *name = NULL, *url = NULL;
	int ret = -ENOMEM;

	base = base_url(rc, registry);
	name = ref_registry_repository(registry, repo);
	if (!base || !name || asprintf(&url, "%s/v2/%s/manifests/%s", base, name, reference) < 0)
		goto out_free;
	ret = do_request(rc, url, MANIFEST_ACCEPT, false, &x, err);
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
	free(url);
	free(base);
	free(name);
	return ret;
}

/* Link: </v2/_catalog?last=x&n=100>; rel="next" -> absolute URL or NULL. */
static char *next_link(const char *base, const char *link)
{
	const char *lt, *gt;
	char *s;

	if (!link || !strstr(link, "rel=\"next\"") || !(lt = strchr(link, '<')) ||
	    !(gt = strchr(lt, '>')))
		return NULL;
	if (strncmp(lt + 1, "http://", 7) == 0 || strncmp(lt + 1, "https://", 8) == 0)
		return strndup(lt + 1, (size_t)(gt - lt - 1));
	if (lt[1] != '/')
		return NULL;
	if (asprintf(&s, "%s%.*s", base, (int)(gt - lt - 1), lt + 1) < 0)
		return NULL;
	return s;
}

/* Fetch a paginated listing: @key names the JSON array in each page. */
static int list_pages(struct regclient *rc, const char *registry, const char *first,
		      const char *key, const char *strip, struct strlist *out,
		      struct reg_error *err)
{
	struct strlist l = { 0 };
	struct xfer x = { .cap = 8u << 20 };
	char *base, *url = NULL;
	int ret = -ENOMEM;
	size_t strip_len = strip ? strlen(strip) : 0;

	base = base_url(rc, registry);
	/* Ask for a page size only when told to: registries cap it and some
	 * answer 400 PAGINATION_NUMBER_INVALID above their cap. */
	if (!base || (rc->page_size ?
			      asprintf(&url, "%s%s?n=%u", base, first, rc->page_size) :
			      asprintf(&url, "%s%s", base, first)) < 0)
		goto out_free;
	for (int page = 0; url && page < PAGES_MAX; page++) {
		json_t *root, *arr;
		size_t count;

		ret = do_request(rc, url, "application/json", false, &x, err);
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
			if (strip_len && strncmp(s, strip, strip_len) == 0)
				s += strip_len;
			ret = strlist_push(&l, s);
			if (ret < 0) {
				json_decref(root);
				goto out_free;
			}
		}
		count = json_array_size(arr);
		json_decref(root);
		free(url);
		url = next_link(base, x.link);
		/* Stop on an empty page too: some registries loop. */
		if (count == 0) {
			free(url);
			url = NULL;
		}
	}
	ret = 0;
	*out = l;
	l.v = NULL;
	l.n = 0;
out_free:
	strlist_release(&l);
	xfer_reset(&x);
	free(url);
	free(base);
	return ret;
}

int regclient_list_tags(struct regclient *rc, const char *registry, const char *repo,
			struct strlist *out, struct reg_error *err)
{
	char *name = ref_registry_repository(registry, repo);
	char *path = NULL;
	int ret = -ENOMEM;

	if (name && asprintf(&path, "/v2/%s/tags/list", name) >= 0)
		ret = list_pages(rc, registry, path, "tags", NULL, out, err);
	free(path);
	free(name);
	return ret;
}

int regclient_list_catalog(struct regclient *rc, const char *registry, struct strlist *out,
			   struct reg_error *err)
{
	/* Docker Hub names come back as library/x; the tree shows x too. */
	return list_pages(rc, registry, "/v2/_catalog", "repositories", NULL, out, err);
}

int regclient_get_blob(struct regclient *rc, const char *registry, const char *repo,
		       const char *digest, reg_sink_fn sink, void *sink_arg,
		       struct reg_error *err)
{
	struct xfer x = { .sink = sink, .sink_arg = sink_arg };
	char *base = NULL, *name = NULL, *url = NULL;
	int ret = -ENOMEM;

	base = base_url(rc, registry);
	name = ref_registry_repository(registry, repo);
	if (base && name && asprintf(&url, "%s/v2/%s/blobs/%s", base, name, digest) >= 0)
		ret = do_request(rc, url, NULL, true, &x, err);
	xfer_reset(&x);
	free(url);
	free(base);
	free(name);
	return ret;
}

void regclient_print_versions(FILE *f)
{
	curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);

	fprintf(f, "libcurl %s (%s)\n", v->version, v->ssl_version ? v->ssl_version : "no TLS");
	fprintf(f, "jansson %s\n", jansson_version_str());
}
