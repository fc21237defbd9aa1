/* token.c - answers to auth challenges, and the tokens they earned.
 *
 * A token is kept per registry and scope until it expires. Every scope
 * costs one token request per expiry for the whole mount: concurrent
 * requests needing the same scope wait for the one fetch in flight and
 * share its result, failure included (struct flight). A registry's last
 * challenge (Bearer realm and service, or Basic) is remembered, so the
 * first request of another repository gets its token (or credentials)
 * before it is sent, instead of after a 401.
 *
 * Several scopes in one request: while a caller has said which scopes it
 * is about to need at once (struct scope_hint: the readings of a path), a
 * token fetched for any of them asks for every one of them that has no
 * token and no fetch in flight and the same credentials (repeated
 * scope=); each gets its own flight, all landed by that one request, and
 * the token is kept under each scope. A token server grants the subset it
 * allows, so a scope refused with such a shared token (insufficient_scope)
 * is most likely denied: it fails at once, as a scope asked alone does,
 * but the next request for it asks for it alone (a token server may grant
 * fewer scopes than asked; tokens_refused_shared() tells the caller).
 *
 * A token that is a JWT says which of the scopes asked it grants (its
 * "access" claim, jwt.h). A request for a scope it does not grant is not
 * sent: it fails at once as the registry's 401 insufficient_scope to it
 * would (token_ungranted()). That is the common case while resolving a
 * path on registries like Docker Hub, whose token server grants no scope
 * of a repository that does not exist: the reading `ns:repo` of
 * `ns/repo/tag` costs no manifest request there.
 *
 * Locks: tk->lock guards the token table, the remembered challenges, the
 * hints and every field of their entries and of the flights;
 * tk->token_done is broadcast under it when a flight lands. Hints are
 * immutable from tokens_hint_add() to tokens_hint_drop(). tk->tp and
 * tk->authfile are set at creation and read-only after.
 */
#include "token.h"
#include "auth.h"
#include "jwt.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TOKEN_BODY_MAX (256u << 10)	/* a token server's answer */
#define TOKEN_MAX (64u << 10)	/* one token */
#define TOKEN_TTL_DEFAULT 60	/* seconds, when expires_in is absent */
#define TOKENS_MAX 1024		/* cached Authorization values */
#define TOKEN_BUCKETS 256	/* hash buckets of the token table */
#define CHALLENGES_MAX 256	/* registries whose challenge we remember */
#define SCOPES_MAX 64		/* scopes in one token request */
#define TOKEN_URL_MAX 16384	/* bytes of a token request's URL or body */
#define HINTS_MAX 256		/* scope hints held at once */
#define HINT_SCOPES_MAX REG_HINT_MAX	/* scopes in one hint */

/* A fetch in flight for one scope, waited for by every request needing
 * it. Landed with ret 0 and the entry gone: look again (the scope was
 * left out of the request after all). */
struct flight {
	unsigned refs;		/* the fetcher and each waiter */
	bool done;
	int ret;		/* once done: 0 or -errno ... */
	struct reg_error err;	/* ... and why */
};

/* What a challenge earned, per registry and scope. */
struct token {
	struct token *next;	/* hash chain */
	char *registry, *scope;	/* scope "" for registry-wide */
	char *header;		/* "Bearer ..." / "Basic ...", NULL if none yet */
	time_t expires;		/* monotonic seconds; 0: never (Basic) */
	struct flight *flight;	/* set while a fetch for it is in flight */
	bool shared;		/* asked for together with other scopes ... */
	bool refused;		/* ... and a registry refused it for this one */
	bool ungranted;		/* the token says it does not grant the scope */
	bool creds;		/* earned with credentials ... */
	char source[256];	/* ... from here */
};

/* Scopes of a registry about to be needed at once (tokens_hint_add()). */
struct scope_hint {
	struct scope_hint *next;
	char *registry;
	size_t n;
	char **scopes, **repos;	/* repos: as the registry knows them */
};

/* A registry's last challenge. */
struct challenge {
	struct challenge *next;
	char *registry;
	char *realm, *service;	/* Bearer; realm NULL: Basic */
};

struct tokens {
	struct transport *tp;
	char *authfile;
	pthread_mutex_t lock;
	pthread_cond_t token_done;	/* a flight landed */
	struct token *table[TOKEN_BUCKETS];	/* lock */
	size_t n_tokens;			/* lock */
	struct challenge *challenges;		/* lock */
	size_t n_challenges;			/* lock */
	struct scope_hint *hints;		/* lock */
	size_t n_hints;				/* lock */
};

static void token_free(struct token *t)
{
	free(t->registry);
	free(t->scope);
	free_secret(t->header);
	free(t);
}

static unsigned token_hash(const char *registry, const char *scope)
{
	unsigned h = 2166136261u;	/* FNV-1a */

	for (const char *p = registry; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ '\n') * 16777619u;
	for (const char *p = scope; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % TOKEN_BUCKETS;
}

/* ---- the token table (all under tk->lock) ---- */

static struct token *token_find(struct tokens *tk, const char *registry, const char *scope)
{
	for (struct token *t = tk->table[token_hash(registry, scope)]; t; t = t->next)
		if (!strcmp(t->registry, registry) && !strcmp(t->scope, scope))
			return t;
	return NULL;
}

static bool token_valid(const struct token *t)
{
	return t->header && (t->expires == 0 || now_mono() < t->expires);
}

/* Worth sending: valid, and not a shared token refused for this scope
 * (which is asked for alone next). */
static bool token_usable(const struct token *t)
{
	return token_valid(t) && !(t->shared && t->refused);
}

static void token_drop(struct tokens *tk, struct token *t)
{
	for (struct token **pp = &tk->table[token_hash(t->registry, t->scope)]; *pp;
	     pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			tk->n_tokens--;
			token_free(t);
			return;
		}
	}
}

/* Make room when full: drop expired entries, else some idle one. Entries
 * with a flight are never dropped (their fetcher holds them). */
static void token_make_room(struct tokens *tk)
{
	struct token *idle = NULL;

	for (size_t b = 0; b < TOKEN_BUCKETS; b++) {
		for (struct token *t = tk->table[b], *next; t; t = next) {
			next = t->next;
			if (t->flight)
				continue;
			if (!token_valid(t))
				token_drop(tk, t);
			else
				idle = t;
		}
	}
	if (tk->n_tokens >= TOKENS_MAX && idle)
		token_drop(tk, idle);
}

static struct token *token_add(struct tokens *tk, const char *registry, const char *scope)
{
	struct token *t;
	unsigned b;

	if (tk->n_tokens >= TOKENS_MAX)
		token_make_room(tk);
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->registry = strdup(registry);
	t->scope = strdup(scope);
	if (!t->registry || !t->scope) {
		token_free(t);
		return NULL;
	}
	b = token_hash(registry, scope);
	t->next = tk->table[b];
	tk->table[b] = t;
	tk->n_tokens++;
	return t;
}

static void token_copy_who(const struct token *t, struct auth_who *who)
{
	who->creds = t->creds;
	snprintf(who->source, sizeof(who->source), "%s", t->source);
}

/* ---- flights (under tk->lock) ---- */

static struct flight *flight_new(void)
{
	struct flight *f = calloc(1, sizeof(*f));

	if (f)
		f->refs = 1;
	return f;
}

static void flight_unref(struct flight *f)
{
	if (f && --f->refs == 0)
		free(f);
}

/* Wait for @f to land; its result, with its reason in @err on failure. */
static int flight_wait(struct tokens *tk, struct flight *f, struct reg_error *err)
{
	int ret;

	f->refs++;
	while (!f->done)
		pthread_cond_wait(&tk->token_done, &tk->lock);
	ret = f->ret;
	if (ret < 0)
		*err = f->err;
	flight_unref(f);
	return ret;
}

/* ---- scope hints ---- */

static void hint_free(struct scope_hint *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n; i++) {
		free(h->scopes[i]);
		free(h->repos[i]);
	}
	free(h->scopes);
	free(h->repos);
	free(h->registry);
	free(h);
}

struct scope_hint *tokens_hint_add(struct tokens *tk, const char *registry,
				   const char *const *scopes, const char *const *repos, size_t n)
{
	struct scope_hint *h;

	if (n == 0 || n > HINT_SCOPES_MAX || !(h = calloc(1, sizeof(*h))))
		return NULL;
	h->registry = strdup(registry);
	h->scopes = calloc(n, sizeof(*h->scopes));
	h->repos = calloc(n, sizeof(*h->repos));
	if (!h->registry || !h->scopes || !h->repos)
		goto out_free;
	for (; h->n < n; h->n++) {
		h->scopes[h->n] = strdup(scopes[h->n]);
		h->repos[h->n] = repos[h->n] ? strdup(repos[h->n]) : NULL;
		if (!h->scopes[h->n] || (repos[h->n] && !h->repos[h->n])) {
			h->n++;
			goto out_free;
		}
	}
	pthread_mutex_lock(&tk->lock);
	if (tk->n_hints >= HINTS_MAX) {
		pthread_mutex_unlock(&tk->lock);
		goto out_free;
	}
	h->next = tk->hints;
	tk->hints = h;
	tk->n_hints++;
	pthread_mutex_unlock(&tk->lock);
	return h;
out_free:
	hint_free(h);
	return NULL;
}

void tokens_hint_drop(struct tokens *tk, struct scope_hint *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&tk->lock);
	for (struct scope_hint **pp = &tk->hints; *pp; pp = &(*pp)->next) {
		if (*pp == h) {
			*pp = h->next;
			tk->n_hints--;
			break;
		}
	}
	pthread_mutex_unlock(&tk->lock);
	hint_free(h);
}

/* For a fetch about to start: claim the hinted scopes of @registry that
 * have neither a token nor a fetch in flight, each with an entry and a
 * flight of its own, into @ts (with a copy of its repository in @repos),
 * at most @max. Returns how many. Under tk->lock. */
static size_t hint_claim(struct tokens *tk, const char *registry, struct token **ts,
			 char **repos, size_t max)
{
	size_t n = 0;

	for (struct scope_hint *h = tk->hints; h && n < max; h = h->next) {
		if (strcmp(h->registry, registry))
			continue;
		for (size_t i = 0; i < h->n && n < max; i++) {
			struct token *t = token_find(tk, registry, h->scopes[i]);
			struct flight *f;
			char *repo;

			if (t && (t->flight || token_valid(t)))
				continue;
			if (!t && !(t = token_add(tk, registry, h->scopes[i])))
				continue;
			repo = h->repos[i] ? strdup(h->repos[i]) : NULL;
			f = repo || !h->repos[i] ? flight_new() : NULL;
			if (!f) {
				free(repo);
				continue;
			}
			t->flight = f;
			free_secret(t->header);
			t->header = NULL;
			ts[n] = t;
			repos[n++] = repo;
		}
	}
	return n;
}

/* ---- remembered challenges (under tk->lock) ---- */

static struct challenge *challenge_find(struct tokens *tk, const char *registry)
{
	for (struct challenge *c = tk->challenges; c; c = c->next)
		if (!strcmp(c->registry, registry))
			return c;
	return NULL;
}

bool tokens_challenged(struct tokens *tk, const char *registry)
{
	bool known;

	pthread_mutex_lock(&tk->lock);
	known = challenge_find(tk, registry) != NULL;
	pthread_mutex_unlock(&tk->lock);
	return known;
}

static void challenge_free(struct challenge *c)
{
	free(c->registry);
	free(c->realm);
	free(c->service);
	free(c);
}

/* Remember that @registry challenged with Bearer @realm/@service (realm
 * NULL: Basic). Best effort: nothing is lost when it fails. */
static void challenge_remember(struct tokens *tk, const char *registry, const char *realm,
			       const char *service)
{
	struct challenge *c = challenge_find(tk, registry);
	char *r = realm ? strdup(realm) : NULL, *s = service ? strdup(service) : NULL;

	if ((realm && !r) || (service && !s))
		goto out_free;
	if (!c) {
		if (tk->n_challenges >= CHALLENGES_MAX)
			goto out_free;
		c = calloc(1, sizeof(*c));
		if (!c || !(c->registry = strdup(registry))) {
			free(c);
			goto out_free;
		}
		c->next = tk->challenges;
		tk->challenges = c;
		tk->n_challenges++;
	}
	free(c->realm);
	free(c->service);
	c->realm = r;
	c->service = s;
	return;
out_free:
	free(r);
	free(s);
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

/* Token @t (valid, under tk->lock) does not grant its scope: fail the
 * request that would carry it as the registry's answer would, without
 * sending it. @retry: the token answers the request's challenge, whose
 * retry's 401 is final (transport.c: the denied hook); else it would be
 * sent first, and the 401 insufficient_scope come back to bearer(). */
static int token_ungranted(struct token *t, const struct req *rq, bool retry,
			   struct reg_error *err)
{
	err->status = 401;
	if (!err->code[0])
		snprintf(err->code, sizeof(err->code), "UNAUTHORIZED");
	if (retry) {
		denied_message(rq, 401, t->creds, t->source, err);
	} else {
		t->refused = t->shared;
		denied_message(rq, t->creds ? 403 : 401, t->creds, t->source, err);
	}
	return -EACCES;
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

/* "service=S&scope=A&scope=B..." for a token request, escaped; NULL on
 * ENOMEM or beyond TOKEN_URL_MAX. */
static char *token_query(const char *service, const char *const *scopes, size_t n)
{
	char *q = url_escape(service ? service : ""), *s, *more;

	if (!q || asprintf(&s, "service=%s", q) < 0)
		s = NULL;
	free(q);
	for (size_t i = 0; s && i < n; i++) {
		q = url_escape(scopes[i]);
		if (!q || asprintf(&more, "%s&scope=%s", s, q) < 0)
			more = NULL;
		free(q);
		free(s);
		s = more;
		if (s && strlen(s) > TOKEN_URL_MAX) {
			free(s);
			s = NULL;
		}
	}
	return s;
}

/* Ask the token server at @realm for @scopes (one request, repeated
 * scope=); "Bearer <token>" into *@out and its lifetime into *@ttl. */
static int fetch_token(struct tokens *tk, const struct req *rq, const char *realm,
		       const char *service, const char *const *scopes, size_t n,
		       const struct auth_cred *c, char **out, long *ttl, struct reg_error *err)
{
	struct xfer x = { .cap = TOKEN_BODY_MAX };
	struct req t = { .method = "GET", .accept = "application/json" };
	char *query = NULL, *rt = NULL, *url = NULL, *body = NULL, *basic = NULL;
	char *authority = NULL;
	const char *tok;
	json_t *root = NULL;
	int plain_ok, ret = -ENOMEM;

	if (strncasecmp(realm, "https://", 8) && strncasecmp(realm, "http://", 7)) {
		snprintf(err->message, sizeof(err->message), "%s: token realm is not an HTTP URL",
			 rq->registry);
		return -EACCES;
	}
	query = token_query(service, scopes, n);
	authority = url_authority(realm);
	if (!query || !authority)
		goto out_free;
	plain_ok = transport_plain_ok(tk->tp, authority);
	if (plain_ok < 0)
		goto out_free;
	/* Credentials go to a plain-HTTP realm only where plain HTTP is
	 * accepted anyway. */
	if (c && !strncasecmp(realm, "http://", 7) && !plain_ok) {
		snprintf(err->message, sizeof(err->message),
			 "%s: token realm %s is plain HTTP; not sending credentials there",
			 rq->registry, authority);
		ret = -EACCES;
		goto out_free;
	}
	if (c && c->identitytoken) {
		/* The refresh token travels in a POST body, never in a URL. */
		rt = url_escape(c->identitytoken);
		if (!rt || asprintf(&body, "grant_type=refresh_token&refresh_token=%s&%s"
				    "&client_id=ocifs", rt, query) < 0) {
			body = NULL;
			goto out_free;
		}
		t.method = "POST";
		t.body = body;
		t.url = realm;
	} else {
		if (asprintf(&url, "%s%s%s", realm, strchr(realm, '?') ? "&" : "?", query) < 0) {
			url = NULL;
			goto out_free;
		}
		t.url = url;
		if (c && auth_basic_header(c, &basic) < 0)
			goto out_free;
		t.auth = basic;
	}
	ret = transport_request(tk->tp, &t, &x, err);
	if (ret < 0) {
		/* Whatever went wrong at the realm, the registry's answer is
		 * "not authorized": EACCES, naming the realm and the registry. */
		char why[sizeof(err->message)];
		snprintf(why, sizeof(why), "%s", err->message);
		if (err->status == 401 || err->status == 403) {
			if (c)
				snprintf(err->message, sizeof(err->message),
					 "token server %s refused the credentials from %.250s for %s",
					 authority, c->source, rq->registry);
			else
				snprintf(err->message, sizeof(err->message),
					 "token server %s refused anonymous access to %s", authority,
					 rq->registry);
		} else {
			snprintf(err->message, sizeof(err->message),
				 "token server %s (realm of %s): %.250s", authority, rq->registry,
				 why);
		}
		if (ret != -ENOMEM)
			ret = -EACCES;
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
	free(query);
	free(authority);
	return ret;
}

static bool str_same(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

/* Would @repo of @registry be asked for with the credentials @c (auth_lookup()
 * result @found)? Only then may its scope share their token request. */
static bool creds_same(struct tokens *tk, const char *registry, const char *repo, int found,
		       const struct auth_cred *c)
{
	struct auth_opts ao = { .authfile = tk->authfile };
	struct auth_cred o = { 0 };
	int got = auth_lookup(&ao, registry, repo, &o, NULL, 0);
	bool same = got == 0 && found == 0 ?
			    str_same(o.username, c->username) && str_same(o.password, c->password) &&
				    str_same(o.identitytoken, c->identitytoken) &&
				    !strcmp(o.source, c->source) :
			    got != 0 && found != 0;

	auth_cred_release(&o);
	return same;
}

/* Ask @realm once for the scopes of @ts[0..n) (entries of rq->registry
 * the caller claimed, each with its flight; called without tk->lock)
 * with the credentials for rq->repo, and land the flights: every waiter
 * gets the result. @ts[i] for i > 0 is a hinted scope of repository
 * @repos[i]: it stays in the request only if that repository has the
 * same credentials, else its flight lands empty and its waiters fetch
 * their own. On success the header of @ts[0] goes to *@out (may be NULL),
 * unless the token does not grant its scope: then rq fails as
 * token_ungranted() says (@retry). */
static int fetch_flight(struct tokens *tk, const struct req *rq, const char *realm,
			const char *service, struct token **ts, char *const *repos, size_t n,
			bool retry, char **out, struct auth_who *who, struct reg_error *err)
{
	struct auth_opts ao = { .authfile = tk->authfile };
	const char *scopes[SCOPES_MAX];
	enum jwt_grant grant[SCOPES_MAX];
	bool asked[SCOPES_MAX];
	struct auth_cred c = { 0 };
	char why[256], *hdr = NULL;
	size_t k = 0;
	time_t started;
	long ttl = 0;
	int ret, found;

	found = auth_lookup(&ao, rq->registry, rq->repo, &c, why, sizeof(why));
	/* Entries with a flight are never freed by others: reading their
	 * immutable scope without the lock is safe. */
	for (size_t i = 0; i < n; i++) {
		asked[i] = i == 0 || creds_same(tk, rq->registry, repos[i], found, &c);
		if (asked[i])
			scopes[k++] = ts[i]->scope;
	}
	started = now_mono();
	ret = fetch_token(tk, rq, realm, service, scopes, k, found == 0 ? &c : NULL, &hdr, &ttl,
			  err);
	if (ret == 0)
		jwt_grants(hdr + strlen("Bearer "), scopes, k, grant);

	pthread_mutex_lock(&tk->lock);
	for (size_t i = 0, j = 0; i < n; i++) {
		struct token *t = ts[i];
		struct flight *f = t->flight;
		int r = asked[i] ? ret : 0;

		t->flight = NULL;
		if (r == 0 && asked[i] && !(t->header = strdup(hdr)))
			r = -ENOMEM;
		if (r < 0 || !asked[i]) {
			token_drop(tk, t);
		} else {
			/* Counted from before the request: never trusted too long. */
			t->expires = started + ttl;
			t->shared = k > 1;
			t->refused = false;
			t->ungranted = grant[j] == JWT_REFUSED;
			t->creds = found == 0;
			snprintf(t->source, sizeof(t->source), "%s", found == 0 ? c.source : "");
			if (i == 0 && who)
				token_copy_who(t, who);
		}
		if (i == 0)
			ret = r;
		if (asked[i])
			j++;
		f->done = true;
		f->ret = r;
		if (r < 0)
			f->err = *err;
		flight_unref(f);
	}
	/* The fetch succeeded for every waiter; each decides whether it
	 * may send what the token grants. */
	if (ret == 0 && ts[0]->ungranted)
		ret = token_ungranted(ts[0], rq, retry, err);
	pthread_cond_broadcast(&tk->token_done);
	pthread_mutex_unlock(&tk->lock);
	if (ret == 0 && out) {
		*out = hdr;
		hdr = NULL;
	}
	free_secret(hdr);
	auth_cred_release(&c);
	return ret;
}

/* Bearer: the header for (registry, scope), from the cache when another
 * thread got a newer one than @sent, else from the token server, asking
 * in the same request for the hinted scopes that have none. A fetch in
 * flight for the scope is waited for, and its failure shared. @retry: the
 * header answers a challenge to the request (else it is sent first). */
static int bearer(struct tokens *tk, const struct req *rq, const char *realm,
		  const char *service, const char *scope, const char *sent, bool insufficient,
		  bool retry, char **out, struct auth_who *who, struct reg_error *err)
{
	struct token *ts[SCOPES_MAX], *t;
	char *repos[SCOPES_MAX] = { NULL };
	struct flight *f;
	size_t n = 1;
	bool alone;
	int ret;

	pthread_mutex_lock(&tk->lock);
	for (;;) {
		t = token_find(tk, rq->registry, scope);
		if (!t || !t->flight)
			break;
		ret = flight_wait(tk, t->flight, err);
		if (ret < 0) {
			pthread_mutex_unlock(&tk->lock);
			return ret;
		}
	}
	if (t && token_usable(t) && (!sent || strcmp(t->header, sent))) {
		if (t->ungranted) {
			ret = token_ungranted(t, rq, retry, err);
			pthread_mutex_unlock(&tk->lock);
			return ret;
		}
		*out = strdup(t->header);
		token_copy_who(t, who);
		pthread_mutex_unlock(&tk->lock);
		return *out ? 0 : -ENOMEM;
	}
	if (t && token_valid(t) && sent && insufficient && !strcmp(t->header, sent)) {
		/* A fresh token that does not grant the scope: asking again
		 * gets the same answer until the credentials change, which we
		 * notice when it expires. Registries answer this for missing
		 * repositories too, so it is common while resolving paths.
		 * Asked with other scopes, the scope may have been left out:
		 * the next request for it asks for it alone. */
		t->refused = t->shared;
		denied_message(rq, t->creds ? 403 : 401, t->creds, t->source, err);
		pthread_mutex_unlock(&tk->lock);
		return -EACCES;
	}
	alone = t && t->shared && t->refused;
	if (!t)
		t = token_add(tk, rq->registry, scope);
	f = t ? flight_new() : NULL;
	if (!f) {
		pthread_mutex_unlock(&tk->lock);
		return -ENOMEM;
	}
	t->flight = f;
	free_secret(t->header);
	t->header = NULL;
	ts[0] = t;
	if (!alone)
		n += hint_claim(tk, rq->registry, ts + 1, repos + 1, SCOPES_MAX - 1);
	pthread_mutex_unlock(&tk->lock);
	ret = fetch_flight(tk, rq, realm, service, ts, repos, n, retry, out, who, err);
	for (size_t i = 1; i < n; i++)
		free(repos[i]);
	return ret;
}

bool tokens_refused_shared(struct tokens *tk, const char *registry, const char *scope)
{
	struct token *t;
	bool refused;

	pthread_mutex_lock(&tk->lock);
	t = token_find(tk, registry, scope);
	refused = t && !t->flight && token_valid(t) && t->shared && t->refused;
	pthread_mutex_unlock(&tk->lock);
	return refused;
}

/* Basic: the credentials for rq->repo. @challenged: the registry asked
 * for them in a 401 to this very request (else we send them unasked,
 * having seen its Basic challenge before: *@out NULL when there are none). */
static int basic(struct tokens *tk, const struct req *rq, const char *sent, bool challenged,
		 char **out, struct auth_who *who, struct reg_error *err)
{
	struct auth_opts ao = { .authfile = tk->authfile };
	const char *scope = rq->scope ? rq->scope : "";
	struct auth_cred c = { 0 };
	char why[256], *hdr = NULL;
	struct token *t;
	int ret;

	ret = auth_lookup(&ao, rq->registry, rq->repo, &c, why, sizeof(why));
	if ((ret < 0 || !c.password) && !challenged) {
		ret = 0;
		goto out_release;
	}
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
	pthread_mutex_lock(&tk->lock);
	t = token_find(tk, rq->registry, scope);
	if (!t)
		t = token_add(tk, rq->registry, scope);
	if (t && !t->flight) {
		char *copy = strdup(hdr);
		if (copy) {
			free_secret(t->header);
			t->header = copy;
			t->expires = 0;
			t->ungranted = false;
			t->creds = true;
			snprintf(t->source, sizeof(t->source), "%s", c.source);
		}
	}
	pthread_mutex_unlock(&tk->lock);
	*out = hdr;
	hdr = NULL;
	who->creds = true;
	snprintf(who->source, sizeof(who->source), "%s", c.source);
out_release:
	free_secret(hdr);
	auth_cred_release(&c);
	return ret;
}

/* A 401 with challenges @www for request @rq, having sent @sent (or
 * nothing): the Authorization value to retry with, into *@out. */
static int answer_challenge(struct tokens *tk, const struct req *rq, const char *www,
			    const char *sent, char **out, struct auth_who *who,
			    struct reg_error *err)
{
	struct auth_challenges cs = { 0 };
	const struct auth_challenge *ch;
	const char *realm, *scope, *error;
	int ret;

	if (!www || auth_challenges_parse(www, &cs) < 0 || cs.n == 0) {
		snprintf(err->message, sizeof(err->message),
			 "%s answered 401 without a usable WWW-Authenticate challenge",
			 rq->registry);
		if (!err->code[0])
			snprintf(err->code, sizeof(err->code), "UNAUTHORIZED");
		return -EACCES;
	}
	if ((ch = auth_challenge_find(&cs, "Bearer"))) {
		realm = auth_challenge_param(ch, "realm");
		scope = rq->scope ? rq->scope : auth_challenge_param(ch, "scope");
		error = auth_challenge_param(ch, "error");
		if (!realm || (strncasecmp(realm, "https://", 8) && strncasecmp(realm, "http://", 7))) {
			snprintf(err->message, sizeof(err->message),
				 "%s: Bearer challenge without an HTTP realm", rq->registry);
			ret = -EACCES;
			goto out_release;
		}
		pthread_mutex_lock(&tk->lock);
		challenge_remember(tk, rq->registry, realm, auth_challenge_param(ch, "service"));
		pthread_mutex_unlock(&tk->lock);
		ret = bearer(tk, rq, realm, auth_challenge_param(ch, "service"), scope ? scope : "",
			     sent, error && !strcmp(error, "insufficient_scope"), true, out, who,
			     err);
	} else if (auth_challenge_find(&cs, "Basic")) {
		pthread_mutex_lock(&tk->lock);
		challenge_remember(tk, rq->registry, NULL, NULL);
		pthread_mutex_unlock(&tk->lock);
		ret = basic(tk, rq, sent, true, out, who, err);
	} else {
		snprintf(err->message, sizeof(err->message),
			 "%s wants %s authentication, which ocifs does not speak", rq->registry,
			 cs.v[0].scheme);
		ret = -EACCES;
	}
out_release:
	auth_challenges_release(&cs);
	return ret;
}

/* Before the first attempt: what we have for the request's scope, or what
 * the registry's remembered challenge earns for it, saving a 401. */
static int hook_cached(void *arg, const struct req *rq, char **out, struct auth_who *who,
		       struct reg_error *err)
{
	struct tokens *tk = arg;
	const char *scope = rq->scope ? rq->scope : "";
	struct challenge *c;
	char *realm = NULL, *service = NULL;
	struct token *t;
	bool bearer_known;
	int ret;

	*out = NULL;
	pthread_mutex_lock(&tk->lock);
	while ((t = token_find(tk, rq->registry, scope)) && t->flight) {
		ret = flight_wait(tk, t->flight, err);
		if (ret < 0) {
			pthread_mutex_unlock(&tk->lock);
			return ret;
		}
	}
	if (t && token_usable(t)) {
		if (t->ungranted) {
			ret = token_ungranted(t, rq, false, err);
			pthread_mutex_unlock(&tk->lock);
			return ret;
		}
		*out = strdup(t->header);
		token_copy_who(t, who);
		pthread_mutex_unlock(&tk->lock);
		return *out ? 0 : -ENOMEM;
	}
	c = *scope ? challenge_find(tk, rq->registry) : NULL;
	bearer_known = c && c->realm;
	if (bearer_known && (!(realm = strdup(c->realm)) ||
			     (c->service && !(service = strdup(c->service))))) {
		pthread_mutex_unlock(&tk->lock);
		free(realm);
		return -ENOMEM;
	}
	pthread_mutex_unlock(&tk->lock);
	if (bearer_known)
		ret = bearer(tk, rq, realm, service, scope, NULL, false, false, out, who, err);
	else if (c)
		ret = basic(tk, rq, NULL, false, out, who, err);
	else
		ret = 0;
	free(realm);
	free(service);
	return ret;
}

static int hook_answer(void *arg, const struct req *rq, const char *www, const char *sent,
		       char **out, struct auth_who *who, struct reg_error *err)
{
	return answer_challenge(arg, rq, www, sent, out, who, err);
}

static void hook_denied(const struct req *rq, long status, const struct auth_who *who,
			struct reg_error *err)
{
	denied_message(rq, status, who->creds, who->source, err);
}

struct tokens *tokens_new(struct transport *tp, const char *authfile)
{
	struct tokens *tk = calloc(1, sizeof(*tk));

	if (!tk)
		return NULL;
	tk->tp = tp;
	if (authfile && !(tk->authfile = strdup(authfile))) {
		free(tk);
		return NULL;
	}
	pthread_mutex_init(&tk->lock, NULL);
	pthread_cond_init(&tk->token_done, NULL);
	return tk;
}

void tokens_free(struct tokens *tk)
{
	if (!tk)
		return;
	for (size_t b = 0; b < TOKEN_BUCKETS; b++) {
		while (tk->table[b]) {
			struct token *t = tk->table[b];
			tk->table[b] = t->next;
			token_free(t);
		}
	}
	while (tk->challenges) {
		struct challenge *c = tk->challenges;
		tk->challenges = c->next;
		challenge_free(c);
	}
	while (tk->hints) {
		struct scope_hint *h = tk->hints;
		tk->hints = h->next;
		hint_free(h);
	}
	free(tk->authfile);
	pthread_cond_destroy(&tk->token_done);
	pthread_mutex_destroy(&tk->lock);
	free(tk);
}

void tokens_auth(struct tokens *tk, struct req_auth *out)
{
	*out = (struct req_auth){ .arg = tk, .cached = hook_cached, .answer = hook_answer,
				  .denied = hook_denied };
}
