/* test_token.c - several scopes in one token request (token.c's hints).
 *
 * A loopback server plays both the registry and its token server: a
 * manifest request without a token granting repository:<name>:pull gets a
 * Bearer challenge (insufficient_scope when a token was sent), /token
 * hands out "tok<N>" granting the scopes asked, except @drop when asked
 * together with others (a token server that grants fewer than asked).
 * One request per connection (Connection: close), served one after the
 * other on the server's thread. */
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

#include "check.h"
#include "client.h"

#define TOKENS_HELD 16
#define SCOPES_HELD 8

struct fake {
	int fd, port;
	pthread_t thread;
	pthread_mutex_t lock;
	const char *drop;	/* set before the first request */
	/* lock: the token requests seen, and the scopes each token grants */
	int n_tokens;
	char granted[TOKENS_HELD][SCOPES_HELD][128];
	int n_granted[TOKENS_HELD];
	char asked[TOKENS_HELD][512];	/* the query of each token request */
};

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
	char scopes[SCOPES_HELD][128], body[64];
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
	pthread_mutex_unlock(&f->lock);
	snprintf(body, sizeof(body), "{\"token\":\"tok%d\",\"expires_in\":300}", k);
	reply(c, "200 OK", "Content-Type: application/json\r\n", body);
}

/* Does the token in @auth ("Bearer tokN") grant @scope? */
static bool grants(struct fake *f, const char *auth, const char *scope)
{
	int k;
	bool ok = false;

	if (!auth || sscanf(auth, "Bearer tok%d", &k) != 1 || k < 0 || k >= TOKENS_HELD)
		return false;
	pthread_mutex_lock(&f->lock);
	for (int i = 0; i < f->n_granted[k]; i++)
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

static int fake_start(struct fake *f, const char *drop)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	memset(f, 0, sizeof(*f));
	f->drop = drop;
	pthread_mutex_init(&f->lock, NULL);
	f->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (f->fd < 0 || bind(f->fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(f->fd, 16) < 0 || getsockname(f->fd, (struct sockaddr *)&a, &len) < 0)
		return -1;
	f->port = ntohs(a.sin_port);
	return pthread_create(&f->thread, NULL, fake_serve, f) == 0 ? 0 : -1;
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

static struct regclient *client(void)
{
	struct regclient_opts o = { .timeout = 5, .retries = 0,
				    .authfile = "/nonexistent/ocifs-test-auth.json" };
	return regclient_new(&o);
}

static int get(struct regclient *rc, struct fake *f, const char *repo)
{
	struct reg_manifest m = { 0 };
	struct reg_error err = { 0 };
	char reg[32];
	int ret;

	snprintf(reg, sizeof(reg), "127.0.0.1:%d", f->port);
	ret = regclient_get_manifest(rc, reg, repo, "1", 0, NULL, &m, &err);
	reg_manifest_release(&m);
	return ret;
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

int main(void)
{
	test_hinted_scopes_share_a_token();
	test_refused_shared_scope_asked_alone();
	test_hinted_threads_share_one_fetch();
	test_hint_bounds();
	return CHECK_DONE();
}
