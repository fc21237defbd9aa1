/* test_token.c - several scopes in one token request (token.c's hints),
 * and what a JWT's "access" claim says (jwt.h).
 *
 * A loopback server plays both the registry and its token server: a
 * manifest request without a token granting repository:<name>:pull gets a
 * Bearer challenge (insufficient_scope when a token was sent), /token
 * hands out "tok<N>" granting the scopes asked, except @drop when asked
 * together with others (a token server that grants fewer than asked); in
 * JWT mode the token is a JWT whose "access" claim lists what it grants
 * (or, with no_access, has no such claim). One request per connection
 * (Connection: close), served one after the other on the server's thread;
 * the manifest requests are recorded. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "auth.h"
#include "check.h"
#include "client.h"
#include "jwt.h"

#define TOKENS_HELD 16
#define SCOPES_HELD 8
#define MANIFESTS_HELD 32
#define FAKE_JWT_MAX 2048

struct fake {
	int fd, port;
	pthread_t thread;
	pthread_mutex_t lock;
	const char *drop;	/* set before the first request ... */
	bool jwt, no_access;	/* ... JWT mode, without the claim */
	/* lock: the token requests seen, and the scopes each token grants */
	int n_tokens;
	char granted[TOKENS_HELD][SCOPES_HELD][128];
	int n_granted[TOKENS_HELD];
	char asked[TOKENS_HELD][512];	/* the query of each token request */
	char issued[TOKENS_HELD][FAKE_JWT_MAX];	/* JWT mode: each token */
	/* lock: the manifest requests seen ("name" of /v2/<name>/manifests/) */
	int n_manifests;
	char manifests[MANIFESTS_HELD][128];
};

/* base64url of @s, unpadded, into a new string (NULL on ENOMEM). */
static char *b64url(const char *s)
{
	char *e = auth_base64_encode(s, strlen(s)), *p;

	for (p = e; p && *p; p++) {
		if (*p == '+')
			*p = '-';
		else if (*p == '/')
			*p = '_';
		else if (*p == '=')
			*p = '\0';
	}
	return e;
}

/* A JWT with @payload (JSON), a header as token servers send and a
 * signature nobody checks here; into @out[0..len). */
static void make_jwt(const char *payload, char *out, size_t len)
{
	char *h = b64url("{\"typ\":\"JWT\",\"alg\":\"ES256\",\"kid\":\"PYYO:TEWU\"}");
	char *p = b64url(payload);

	snprintf(out, len, "%s.%s.QhflHPfbd6eVF4lM9bwYpFZIV0Pfikby", h ? h : "", p ? p : "");
	free(h);
	free(p);
}

/* "repository%3Aa%2Fx%3Apull" -> "repository:a/x:pull" */
static void unescape(const char *s, size_t n, char *out, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 1 < len; i++) {
		if (s[i] == '%' && i + 2 < n) {
			char hex[3] = { s[i + 1], s[i + 2], 0 };
			out[o++] = (char)strtol(hex, NULL, 16);
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
}

/* @src into @dst[0..n), cut if need be. */
static void put(char *dst, size_t n, const char *src)
{
	size_t l = strnlen(src, n - 1);

	memcpy(dst, src, l);
	dst[l] = '\0';
}

static void reply(int c, const char *status, const char *extra, const char *body)
{
	char head[1024];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %s\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n",
			 status, strlen(body), extra);

	if (write(c, head, (size_t)n) < 0 || write(c, body, strlen(body)) < 0)
		return;
}

static void serve_token(struct fake *f, int c, const char *query)
{
	char scopes[SCOPES_HELD][128], body[FAKE_JWT_MAX + 64];
	int n = 0, k;

	for (const char *p = query; (p = strstr(p, "scope=")) && n < SCOPES_HELD; n++) {
		p += 6;
		size_t len = strcspn(p, "& ");
		unescape(p, len, scopes[n], sizeof(scopes[n]));
		p += len;
	}
	pthread_mutex_lock(&f->lock);
	k = f->n_tokens < TOKENS_HELD ? f->n_tokens++ : TOKENS_HELD - 1;
	put(f->asked[k], sizeof(f->asked[k]), query);
	f->n_granted[k] = 0;
	for (int i = 0; i < n; i++)
		if (!(n > 1 && f->drop && !strcmp(scopes[i], f->drop)))
			put(f->granted[k][f->n_granted[k]++], sizeof(scopes[i]), scopes[i]);
	if (f->jwt) {
		char claims[1024];
		size_t o = (size_t)snprintf(claims, sizeof(claims), "{\"jti\":\"tok%d\"%s", k,
					    f->no_access ? "" : ",\"access\":[");
		for (int i = 0; !f->no_access && i < f->n_granted[k]; i++) {
			char name[128];
			const char *g = f->granted[k][i] + strlen("repository:");
			snprintf(name, sizeof(name), "%.*s", (int)(strrchr(g, ':') - g), g);
			o += (size_t)snprintf(claims + o, sizeof(claims) - o,
					      "%s{\"type\":\"repository\",\"name\":\"%s\","
					      "\"actions\":[\"pull\"]}", i ? "," : "", name);
		}
		snprintf(claims + o, sizeof(claims) - o, "%s}", f->no_access ? "" : "]");
		make_jwt(claims, f->issued[k], sizeof(f->issued[k]));
	}
	pthread_mutex_unlock(&f->lock);
	if (f->jwt)
		snprintf(body, sizeof(body), "{\"token\":\"%s\",\"expires_in\":300}",
			 f->issued[k]);
	else
		snprintf(body, sizeof(body), "{\"token\":\"tok%d\",\"expires_in\":300}", k);
	reply(c, "200 OK", "Content-Type: application/json\r\n", body);
}

/* Does the token in @auth ("Bearer tokN", or an issued JWT) grant @scope? */
static bool grants(struct fake *f, const char *auth, const char *scope)
{
	int k = -1;
	bool ok = false;

	pthread_mutex_lock(&f->lock);
	for (int i = 0; f->jwt && auth && i < f->n_tokens; i++)
		if (!strncmp(auth, "Bearer ", 7) && !strcmp(auth + 7, f->issued[i]))
			k = i;
	if (!f->jwt && (!auth || sscanf(auth, "Bearer tok%d", &k) != 1))
		k = -1;
	for (int i = 0; k >= 0 && k < TOKENS_HELD && i < f->n_granted[k]; i++)
		ok = ok || !strcmp(f->granted[k][i], scope);
	pthread_mutex_unlock(&f->lock);
	return ok;
}

static void serve_manifest(struct fake *f, int c, const char *path, const char *auth)
{
	char name[128], scope[160], www[512];
	const char *end = strstr(path, "/manifests/");

	if (!end || end - path - 4 >= (long)sizeof(name)) {
		reply(c, "404 Not Found", "", "");
		return;
	}
	snprintf(name, sizeof(name), "%.*s", (int)(end - path - 4), path + 4);
	snprintf(scope, sizeof(scope), "repository:%s:pull", name);
	pthread_mutex_lock(&f->lock);
	if (f->n_manifests < MANIFESTS_HELD)
		put(f->manifests[f->n_manifests++], sizeof(f->manifests[0]), name);
	pthread_mutex_unlock(&f->lock);
	if (grants(f, auth, scope)) {
		reply(c, "200 OK", "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n",
		      "{}");
		return;
	}
	snprintf(www, sizeof(www),
		 "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:%d/token\",service=\"fake\","
		 "scope=\"%s\"%s\r\n",
		 f->port, scope, auth ? ",error=\"insufficient_scope\"" : "");
	reply(c, "401 Unauthorized", www, "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}");
}

static void *fake_serve(void *arg)
{
	struct fake *f = arg;
	int c;

	while ((c = accept(f->fd, NULL, NULL)) >= 0) {
		struct timeval tv = { .tv_sec = 5 };
		char buf[8192], path[1024], *auth, *eol;
		size_t len = 0;
		ssize_t got;

		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		while (len < sizeof(buf) - 1 && (got = read(c, buf + len, sizeof(buf) - 1 - len)) > 0) {
			len += (size_t)got;
			buf[len] = '\0';
			/* A TLS probe is no HTTP: hang up at once. */
			if (buf[0] < 'A' || buf[0] > 'Z' || strstr(buf, "\r\n\r\n"))
				break;
		}
		buf[len] = '\0';
		if (len && buf[0] >= 'A' && buf[0] <= 'Z' &&
		    sscanf(buf, "GET %1023s", path) == 1) {
			auth = strcasestr(buf, "\r\nAuthorization: ");
			if (auth) {
				auth += 17;
				if ((eol = strstr(auth, "\r\n")))
					*eol = '\0';
			}
			if (!strncmp(path, "/token?", 7))
				serve_token(f, c, path + 7);
			else if (!strncmp(path, "/v2/", 4))
				serve_manifest(f, c, path, auth);
			else
				reply(c, "404 Not Found", "", "");
		}
		close(c);
	}
	return NULL;
}

static int fake_start_mode(struct fake *f, const char *drop, bool jwt, bool no_access)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	memset(f, 0, sizeof(*f));
	f->drop = drop;
	f->jwt = jwt;
	f->no_access = no_access;
	pthread_mutex_init(&f->lock, NULL);
	f->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (f->fd < 0 || bind(f->fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(f->fd, 16) < 0 || getsockname(f->fd, (struct sockaddr *)&a, &len) < 0)
		return -1;
	f->port = ntohs(a.sin_port);
	return pthread_create(&f->thread, NULL, fake_serve, f) == 0 ? 0 : -1;
}

static int fake_start(struct fake *f, const char *drop)
{
	return fake_start_mode(f, drop, false, false);
}

static void fake_stop(struct fake *f)
{
	shutdown(f->fd, SHUT_RDWR);
	close(f->fd);
	pthread_join(f->thread, NULL);
	pthread_mutex_destroy(&f->lock);
}

static int tokens_seen(struct fake *f)
{
	int n;

	pthread_mutex_lock(&f->lock);
	n = f->n_tokens;
	pthread_mutex_unlock(&f->lock);
	return n;
}

static bool asked_has(struct fake *f, int k, const char *escaped_scope)
{
	bool has;

	pthread_mutex_lock(&f->lock);
	has = k < f->n_tokens && strstr(f->asked[k], escaped_scope) != NULL;
	pthread_mutex_unlock(&f->lock);
	return has;
}

/* Manifest requests for @name seen so far. */
static int manifests_seen(struct fake *f, const char *name)
{
	int n = 0;

	pthread_mutex_lock(&f->lock);
	for (int i = 0; i < f->n_manifests; i++)
		n += !strcmp(f->manifests[i], name);
	pthread_mutex_unlock(&f->lock);
	return n;
}

static struct regclient *client(void)
{
	struct regclient_opts o = { .timeout = 5, .retries = 0,
				    .authfile = "/nonexistent/ocifs-test-auth.json" };
	return regclient_new(&o);
}

static int get_err(struct regclient *rc, struct fake *f, const char *repo,
		   struct reg_error *err)
{
	struct reg_manifest m = { 0 };
	char reg[32];
	int ret;

	memset(err, 0, sizeof(*err));
	snprintf(reg, sizeof(reg), "127.0.0.1:%d", f->port);
	ret = regclient_get_manifest(rc, reg, repo, "1", 0, NULL, &m, err);
	reg_manifest_release(&m);
	return ret;
}

static int get(struct regclient *rc, struct fake *f, const char *repo)
{
	struct reg_error err;

	return get_err(rc, f, repo, &err);
}

#define A_X "repository%3Aa%2Fx%3Apull"
#define B_Y "repository%3Ab%2Fy%3Apull"

/* Hinted repositories share one token request; without a hint each
 * scope has its own. */
static void test_hinted_scopes_share_a_token(void)
{
	const char *repos[] = { "a/x", "b/y" };
	struct regclient *rc = client();
	struct scope_hint *h;
	struct fake f;
	char reg[32];

	CHECK(rc && fake_start(&f, NULL) == 0);
	snprintf(reg, sizeof(reg), "127.0.0.1:%d", f.port);
	h = regclient_hint_repos(rc, reg, repos, 2, false);
	CHECK(h != NULL);
	CHECK(get(rc, &f, "a/x") == 0);
	CHECK(get(rc, &f, "b/y") == 0);
	regclient_hint_drop(rc, h);
	CHECK(tokens_seen(&f) == 1);
	CHECK(asked_has(&f, 0, A_X) && asked_has(&f, 0, B_Y));
	CHECK(get(rc, &f, "c/z") == 0);		/* not hinted: a token of its own */
	CHECK(tokens_seen(&f) == 2);
	CHECK(!asked_has(&f, 1, A_X) && !asked_has(&f, 1, B_Y));
	regclient_free(rc);
	fake_stop(&f);
}

/* A scope the shared token lacks is refused once (as a denied one is),
 * then asked for alone. */
static void test_refused_shared_scope_asked_alone(void)
{
	const char *repos[] = { "a/x", "b/y" };
	struct regclient *rc = client();
	struct scope_hint *h;
	struct fake f;
	char reg[32];

	CHECK(rc && fake_start(&f, "repository:b/y:pull") == 0);
	snprintf(reg, sizeof(reg), "127.0.0.1:%d", f.port);
	h = regclient_hint_repos(rc, reg, repos, 2, false);
	CHECK(get(rc, &f, "a/x") == 0);
	CHECK(!regclient_refused_shared(rc, reg, "b/y"));
	CHECK(get(rc, &f, "b/y") == -EACCES);
	CHECK(regclient_refused_shared(rc, reg, "b/y"));
	CHECK(!regclient_refused_shared(rc, reg, "a/x"));
	regclient_hint_drop(rc, h);
	CHECK(tokens_seen(&f) == 1);
	CHECK(get(rc, &f, "b/y") == 0);
	CHECK(tokens_seen(&f) == 2);
	CHECK(asked_has(&f, 1, B_Y) && !asked_has(&f, 1, A_X));
	CHECK(!regclient_refused_shared(rc, reg, "b/y"));
	CHECK(get(rc, &f, "b/y") == 0 && get(rc, &f, "a/x") == 0);
	CHECK(tokens_seen(&f) == 2);
	regclient_free(rc);
	fake_stop(&f);
}

struct getter {
	struct regclient *rc;
	struct fake *f;
	const char *repo;
	pthread_barrier_t *go;
	int ret;
};

static void *getter_run(void *arg)
{
	struct getter *g = arg;

	pthread_barrier_wait(g->go);
	g->ret = get(g->rc, g->f, g->repo);
	return NULL;
}

/* Once the challenge is known, hinted requests from several threads at
 * once: one token request for all of them, whoever asks first. */
static void test_hinted_threads_share_one_fetch(void)
{
	const char *repos[] = { "a/x", "b/y", "c/z", "d/w" };
	struct regclient *rc = client();
	struct getter g[4];
	pthread_t th[4];
	pthread_barrier_t go;
	struct scope_hint *h;
	struct fake f;
	char reg[32];

	CHECK(rc && fake_start(&f, NULL) == 0);
	snprintf(reg, sizeof(reg), "127.0.0.1:%d", f.port);
	CHECK(get(rc, &f, "first/one") == 0);	/* the challenge, remembered */
	h = regclient_hint_repos(rc, reg, repos, 4, false);
	pthread_barrier_init(&go, NULL, 4);
	for (int i = 0; i < 4; i++) {
		g[i] = (struct getter){ .rc = rc, .f = &f, .repo = repos[i], .go = &go };
		CHECK(pthread_create(&th[i], NULL, getter_run, &g[i]) == 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK(g[i].ret == 0);
	}
	regclient_hint_drop(rc, h);
	pthread_barrier_destroy(&go);
	CHECK(tokens_seen(&f) == 2);
	regclient_free(rc);
	fake_stop(&f);
}

/* Bounds: an empty hint or one over REG_HINT_MAX holds nothing;
 * dropping NULL is fine. */
static void test_hint_bounds(void)
{
	const char *repos[REG_HINT_MAX + 1];
	struct regclient *rc = client();

	for (size_t i = 0; i <= REG_HINT_MAX; i++)
		repos[i] = "a/x";
	CHECK(regclient_hint_repos(rc, "127.0.0.1:1", repos, 0, false) == NULL);
	CHECK(regclient_hint_repos(rc, "127.0.0.1:1", repos, REG_HINT_MAX + 1, false) == NULL);
	regclient_hint_drop(rc, NULL);
	regclient_hint_drop(rc, regclient_hint_repos(rc, "127.0.0.1:1", repos, 1, true));
	regclient_free(rc);
}


/* ---- the "access" claim (jwt.h) ---- */

/* Real ES256 tokens (python3-jwt), claims as distribution's token server
 * writes them; the signatures are not checked. */
#define JWT_HEAD "eyJhbGciOiJFUzI1NiIsImtpZCI6IkFCQ0Q6RUZHSCIsInR5cCI6IkpXVCJ9."
#define JWT_CLAIMS "eyJpc3MiOiJvY2lmcy10ZXN0LWlzc3VlciIsInN1YiI6IiIsImF1ZCI6Im9jaWZzLXRlc3QtcmVnaXN0cnkiLCJleHAiOjE4MDAwMDAwMDAsIm5iZiI6MTcwMDAwMDAwMCwiaWF0IjoxNzAwMDAwMDAwLCJqdGkiOiIwMTIzNDU2Nzg5YWJjZGVmIiwiYWNjZXNzIjpb"
/* access: [{repository demo/hello [pull]}] */
static const char jwt_demo_hello[] = JWT_HEAD JWT_CLAIMS
	"eyJ0eXBlIjoicmVwb3NpdG9yeSIsIm5hbWUiOiJkZW1vL2hlbGxvIiwiYWN0aW9ucyI6WyJwdWxsIl19XX0."
	"G02JbJSs6a52_j146rWUKa_WOPkXiDl5GuJ2i2LN90ztB83ZcEcegltQ6QfmuWBgXX0MzvlTCQEvHKlz9zNMmQ";
/* access: [] (nothing granted: what Docker Hub answers for a missing repository) */
static const char jwt_empty[] = JWT_HEAD JWT_CLAIMS
	"XX0.WYqYwrH00wbLiso1i2fX80sDM7gF4OhcrMWuKUMlFAnyBLYKuQaFMPA54egx8nWYIdDgzztRPInUhxRGQlsw_g";
/* access: [{repository demo/hello [*]}, {registry catalog [*]}] */
static const char jwt_star[] = JWT_HEAD JWT_CLAIMS
	"eyJ0eXBlIjoicmVwb3NpdG9yeSIsIm5hbWUiOiJkZW1vL2hlbGxvIiwiYWN0aW9ucyI6WyIqIl19LHsidHlwZSI6"
	"InJlZ2lzdHJ5IiwibmFtZSI6ImNhdGFsb2ciLCJhY3Rpb25zIjpbIioiXX1dfQ."
	"qxL9s2dB8cRvJEhfKr39X-s5t2FdrQKWFAZDMhHTFTZeB4_IT4273jKrwc9ovMvB_MTkVss1hcqk_Q4lMwE-pQ";
/* access: [{repository "demo/<star>" [pull]}] (a wildcard: not the spec's) */
static const char jwt_wild[] = JWT_HEAD JWT_CLAIMS
	"eyJ0eXBlIjoicmVwb3NpdG9yeSIsIm5hbWUiOiJkZW1vLyoiLCJhY3Rpb25zIjpbInB1bGwiXX1dfQ."
	"RA-EQockiHOuwhYV8XHNJzbnTneiyw8OGSYhKASGbwL26vPDBZnFMHnfsYWd90HfNjqxiRWEkmWR86f3xFDUiw";
/* access: [{repository a/x [push]}, {repository a/x [pull]}] */
static const char jwt_split[] = JWT_HEAD JWT_CLAIMS
	"eyJ0eXBlIjoicmVwb3NpdG9yeSIsIm5hbWUiOiJhL3giLCJhY3Rpb25zIjpbInB1c2giXX0seyJ0eXBlIjoicmVw"
	"b3NpdG9yeSIsIm5hbWUiOiJhL3giLCJhY3Rpb25zIjpbInB1bGwiXX1dfQ."
	"Eh0gP6AUdns3_byy6w-3YAmFwB8E_cmrmktEIko9K-Q0Pw1gZQLTDY6KNiHWtynFyciW6vqmy10wLnnIy0yLXA";
/* no access claim */
static const char jwt_no_access[] =
	"eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJvY2lmcy10ZXN0LWlzc3VlciIsInN1YiI6IiIsImF1"
	"ZCI6Im9jaWZzLXRlc3QtcmVnaXN0cnkiLCJleHAiOjE4MDAwMDAwMDAsIm5iZiI6MTcwMDAwMDAwMCwiaWF0Ijox"
	"NzAwMDAwMDAwLCJqdGkiOiIwMTIzNDU2Nzg5YWJjZGVmIn0."
	"OVOiigsMDE7zckoK-8l6nJsuZh4Jjp3pvnLRcSFnmyOeMFtplH2VS2tecAXHN5PkUaGJXS75VWgvy0DoSIFftQ";
/* distribution's spec example (docs/spec/auth/jwt.md): its encoded claims
 * grant samalba/my-app ["push"] only */
static const char jwt_spec[] =
	"eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiIsImtpZCI6IlBZWU86VEVXVTpWN0pIOjI2SlY6QVFUWjpMSkMzOlNY"
	"Vko6WEdIQTozNEYyOjJMQVE6WlJNSzpaN1E2In0.eyJpc3MiOiJhdXRoLmRvY2tlci5jb20iLCJzdWIiOiJqbGhh"
	"d24iLCJhdWQiOiJyZWdpc3RyeS5kb2NrZXIuY29tIiwiZXhwIjoxNDE1Mzg3MzE1LCJuYmYiOjE0MTUzODcwMTUs"
	"ImlhdCI6MTQxNTM4NzAxNSwianRpIjoidFlKQ08xYzZjbnl5N2tBbjBjN3JLUGdiVjFIMWJGd3MiLCJhY2Nlc3Mi"
	"Olt7InR5cGUiOiJyZXBvc2l0b3J5IiwibmFtZSI6InNhbWFsYmEvbXktYXBwIiwiYWN0aW9ucyI6WyJwdXNoIl19"
	"XX0.QhflHPfbd6eVF4lM9bwYpFZIV0PfikbyXuLx959ykRTBpe3CYnzs6YBK8FToVb5R47920PVLrh8zuLzdCr9t3w";

static enum jwt_grant grant_of(const char *token, const char *scope)
{
	enum jwt_grant g = 42;

	jwt_grants(token, &scope, 1, &g);
	return g;
}

static void test_jwt_grants(void)
{
	static const struct {
		const char *token, *scope;
		enum jwt_grant want;
	} cases[] = {
		{ jwt_demo_hello, "repository:demo/hello:pull", JWT_GRANTED },
		{ jwt_demo_hello, "repository:demo:pull", JWT_REFUSED },
		{ jwt_demo_hello, "repository:demo/hello/x:pull", JWT_REFUSED },
		{ jwt_demo_hello, "repository:demo/hello:pull,push", JWT_REFUSED },
		{ jwt_demo_hello, "registry:catalog:*", JWT_UNKNOWN },
		{ jwt_demo_hello, "repository:demo/hello:", JWT_UNKNOWN },
		{ jwt_demo_hello, "", JWT_UNKNOWN },
		{ jwt_empty, "repository:demo:pull", JWT_REFUSED },
		{ jwt_empty, "registry:catalog:*", JWT_UNKNOWN },
		{ jwt_star, "repository:demo/hello:pull", JWT_GRANTED },
		{ jwt_star, "repository:demo/hello:pull,push", JWT_GRANTED },
		{ jwt_star, "repository:demo:pull", JWT_REFUSED },
		{ jwt_star, "registry:catalog:*", JWT_UNKNOWN },
		{ jwt_wild, "repository:demo/hello:pull", JWT_UNKNOWN },
		{ jwt_wild, "repository:other:pull", JWT_UNKNOWN },
		{ jwt_split, "repository:a/x:pull,push", JWT_GRANTED },
		{ jwt_split, "repository:a:pull", JWT_REFUSED },
		{ jwt_no_access, "repository:demo:pull", JWT_UNKNOWN },
		{ jwt_spec, "repository:samalba/my-app:push", JWT_GRANTED },
		{ jwt_spec, "repository:samalba/my-app:pull", JWT_REFUSED },
		/* not JWTs, or not ones we read */
		{ "tok1", "repository:demo:pull", JWT_UNKNOWN },
		{ "", "repository:demo:pull", JWT_UNKNOWN },
		{ "a.b.c", "repository:demo:pull", JWT_UNKNOWN },
		{ "..", "repository:demo:pull", JWT_UNKNOWN },
		{ JWT_HEAD "e30", "repository:demo:pull", JWT_UNKNOWN },	/* two parts */
		{ "djE6b2NpZnM6dGVzdA==", "repository:demo:pull", JWT_UNKNOWN },
	};
	const char *scopes[] = { "repository:demo/hello:pull", "registry:catalog:*",
				 "repository:demo:pull" };
	enum jwt_grant g[3];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum jwt_grant got = grant_of(cases[i].token, cases[i].scope);
		if (got != cases[i].want)
			fprintf(stderr, "case %zu (%s): got %d\n", i, cases[i].scope, got);
		CHECK(got == cases[i].want);
	}
	jwt_grants(jwt_demo_hello, scopes, 3, g);	/* several at once */
	CHECK(g[0] == JWT_GRANTED && g[1] == JWT_UNKNOWN && g[2] == JWT_REFUSED);
	/* A JWT with four parts, a signature that is not base64url */
	{
		char t[sizeof(jwt_demo_hello) + 8];
		snprintf(t, sizeof(t), "%s.e30", jwt_demo_hello);
		CHECK(grant_of(t, "repository:demo:pull") == JWT_UNKNOWN);
		snprintf(t, sizeof(t), "%s", jwt_demo_hello);
		t[strlen(t) - 1] = '=';
		CHECK(grant_of(t, "repository:demo:pull") == JWT_UNKNOWN);
	}
}

/* Claims that are not what the spec says are no answer; nor is a
 * payload beyond JWT_PAYLOAD_MAX. */
static void test_jwt_malformed_and_capped(void)
{
	static const char *const payloads[] = {
		"{\"access\":\"demo\"}",
		"{\"access\":{}}",
		"{\"access\":[\"demo\"]}",
		"{\"access\":[{\"type\":\"repository\",\"name\":\"demo\"}]}",
		"{\"access\":[{\"type\":\"repository\",\"name\":\"a\",\"actions\":[1]}]}",
		"{\"access\":[{\"name\":\"a\",\"actions\":[]}]}",
		"{\"access\":null}",
		"[]",
		"not json",
	};
	char t[FAKE_JWT_MAX];
	char *big;
	size_t len;

	for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
		make_jwt(payloads[i], t, sizeof(t));
		CHECK(grant_of(t, "repository:demo:pull") == JWT_UNKNOWN);
	}
	make_jwt("{\"access\":[{\"type\":\"repository\",\"name\":\"a\",\"actions\":[\"pull\"]}]}",
		 t, sizeof(t));
	CHECK(grant_of(t, "repository:a:pull") == JWT_GRANTED);
	CHECK(grant_of(t, "repository:demo:pull") == JWT_REFUSED);
	/* At the cap and one byte past it: {"access":[],"pad":"xxx..."} */
	for (int over = 0; over < 2; over++) {
		char *payload = malloc(JWT_PAYLOAD_MAX + 2), *h, *p;
		if (!payload) {
			CHECK(payload != NULL);
			break;
		}
		len = JWT_PAYLOAD_MAX + (size_t)over;
		memcpy(payload, "{\"access\":[],\"pad\":\"", 20);
		memset(payload + 20, 'x', len - 22);
		memcpy(payload + len - 2, "\"}", 3);
		h = b64url("{\"alg\":\"ES256\"}");
		p = b64url(payload);
		CHECK(payload && h && p && asprintf(&big, "%s.%s.c2ln", h, p) > 0);
		CHECK(grant_of(big, "repository:demo:pull") == (over ? JWT_UNKNOWN : JWT_REFUSED));
		free(big);
		free(h);
		free(p);
		free(payload);
	}
}

struct step {
	int ret;
	struct reg_error err;
	bool refused_shared;
};

/* Hinted a/x and b/y, b/y left out of their shared token: b/y first (the
 * challenged request), then a/x, b/y again, and b/y after the hint (asked
 * alone). Each step's result into @st[0..4); the manifest requests for
 * b/y after each into @seen[0..4). */
static void drop_scenario(bool jwt, bool no_access, struct step *st, int *seen, char *reg,
			  size_t reglen)
{
	const char *repos[] = { "a/x", "b/y" };
	const char *order[] = { "b/y", "a/x", "b/y", "b/y" };
	struct regclient *rc = client();
	struct scope_hint *h;
	struct fake f;

	CHECK(rc && fake_start_mode(&f, "repository:b/y:pull", jwt, no_access) == 0);
	snprintf(reg, reglen, "127.0.0.1:%d", f.port);
	h = regclient_hint_repos(rc, reg, repos, 2, false);
	for (int i = 0; i < 4; i++) {
		if (i == 3)
			regclient_hint_drop(rc, h);
		st[i].ret = get_err(rc, &f, order[i], &st[i].err);
		st[i].refused_shared = regclient_refused_shared(rc, reg, "b/y");
		seen[i] = manifests_seen(&f, "b/y");
	}
	CHECK(tokens_seen(&f) == 2);
	CHECK(asked_has(&f, 1, B_Y) && !asked_has(&f, 1, A_X));
	regclient_free(rc);
	fake_stop(&f);
}

/* A JWT that does not grant a scope it was asked for: the request for it
 * is not sent, and fails exactly as the registry's 401 to it does with an
 * opaque token (same results, errors and "ask alone next" state). A JWT
 * without the claim is sent as an opaque token is. */
static void test_jwt_ungranted_not_sent(void)
{
	struct step opaque[4], jwt[4], plain[4];
	int seen_opaque[4], seen_jwt[4], seen_plain[4];
	char reg_o[32], reg_j[32], reg_p[32], want[512];

	drop_scenario(false, false, opaque, seen_opaque, reg_o, sizeof(reg_o));
	drop_scenario(true, false, jwt, seen_jwt, reg_j, sizeof(reg_j));
	drop_scenario(true, true, plain, seen_plain, reg_p, sizeof(reg_p));
	for (int i = 0; i < 4; i++) {
		const char *regs[] = { reg_o, reg_j, reg_p };
		struct step *runs[] = { opaque, jwt, plain };
		CHECK(opaque[i].ret == jwt[i].ret && opaque[i].ret == plain[i].ret);
		CHECK(opaque[i].refused_shared == jwt[i].refused_shared);
		CHECK(opaque[i].refused_shared == plain[i].refused_shared);
		for (int r = 0; r < 3; r++) {
			if (runs[r][i].ret == 0)
				continue;
			snprintf(want, sizeof(want),
				 "%s refused anonymous access to b/y, and no credentials were found "
				 "for it (docker login, or -o authfile=)", regs[r]);
			CHECK_STR(runs[r][i].err.message, want);
			CHECK_STR(runs[r][i].err.code, "UNAUTHORIZED");
			CHECK(runs[r][i].err.status == 401);
		}
	}
	CHECK(opaque[0].ret == -EACCES && opaque[1].ret == 0 && opaque[2].ret == -EACCES &&
	      opaque[3].ret == 0);
	CHECK(!opaque[0].refused_shared && !opaque[1].refused_shared &&
	      opaque[2].refused_shared && !opaque[3].refused_shared);
	/* Opaque and claimless tokens: b/y's challenge, its retry with the
	 * shared token, once more with it, then with its own. The JWT: only
	 * the challenge, and the request with its own token. */
	static const int want_opaque[4] = { 2, 2, 3, 4 }, want_jwt[4] = { 1, 1, 1, 2 };
	for (int i = 0; i < 4; i++) {
		CHECK(seen_opaque[i] == want_opaque[i]);
		CHECK(seen_plain[i] == want_opaque[i]);
		CHECK(seen_jwt[i] == want_jwt[i]);
	}
}

int main(void)
{
	test_hinted_scopes_share_a_token();
	test_refused_shared_scope_asked_alone();
	test_hinted_threads_share_one_fetch();
	test_hint_bounds();
	test_jwt_grants();
	test_jwt_malformed_and_capped();
	test_jwt_ungranted_not_sent();
	return CHECK_DONE();
}
