/* token.c - answers to auth challenges, and the tokens they earned.
 *
 * Locks: tk->lock guards the token list, its count and every entry's
 * fields; tk->token_done is signalled (under tk->lock) when a fetch ends.
 * tk->tp and tk->authfile are set at creation and read-only after.
 */
#include "token.h"
#include "auth.h"

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

struct tokens {
	struct transport *tp;
	char *authfile;
	pthread_mutex_t lock;
	pthread_cond_t token_done;	/* a fetch finished */
	struct token *tokens;		/* lock, newest first */
	size_t n_tokens;		/* lock */
};

static void token_free(struct token *t)
{
	free(t->registry);
	free(t->scope);
	free_secret(t->header);
	free(t);
}
/* ---- the token cache ---- */

/* Under tk->lock. */
static struct token *token_find(struct tokens *tk, const char *registry, const char *scope)
{
	for (struct token *t = tk->tokens; t; t = t->next)
		if (!strcmp(t->registry, registry) && !strcmp(t->scope, scope))
			return t;
	return NULL;
}

static bool token_valid(const struct token *t)
{
	return t->header && (t->expires == 0 || now_mono() < t->expires);
}

/* Under tk->lock: unlink and free @t. */
static void token_drop(struct tokens *tk, struct token *t)
{
	for (struct token **pp = &tk->tokens; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			tk->n_tokens--;
			token_free(t);
			return;
		}
	}
}

/* Under tk->lock: a new entry, making room by dropping expired ones and
 * then the oldest idle one. */
static struct token *token_add(struct tokens *tk, const char *registry, const char *scope)
{
	struct token *t;

	if (tk->n_tokens >= TOKENS_MAX) {
		struct token *last = NULL;
		for (struct token *u = tk->tokens, *next; u; u = next) {
			next = u->next;
			if (!u->fetching && !token_valid(u))
				token_drop(tk, u);
			else if (!u->fetching)
				last = u;
		}
		if (tk->n_tokens >= TOKENS_MAX && last)
			token_drop(tk, last);
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
	t->next = tk->tokens;
	tk->tokens = t;
	tk->n_tokens++;
	return t;
}

/* What we know to send to @registry for @scope: a copy of the header, or
 * NULL. */
static char *token_cached(struct tokens *tk, const char *registry, const char *scope,
			  bool *creds, char *source, size_t source_len)
{
	struct token *t;
	char *h = NULL;

	pthread_mutex_lock(&tk->lock);
	t = token_find(tk, registry, scope);
	if (t && token_valid(t) && (h = strdup(t->header))) {
		*creds = t->creds;
		snprintf(source, source_len, "%s", t->source);
	}
	pthread_mutex_unlock(&tk->lock);
	return h;
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
static int fetch_token(struct tokens *tk, const struct req *rq, const char *realm,
		       const char *service, const char *scope, const struct auth_cred *c,
		       char **out, long *ttl, struct reg_error *err)
{
	struct xfer x = { .cap = TOKEN_BODY_MAX };
	struct req t = { .method = "GET", .accept = "application/json" };
	char *svc = NULL, *sc = NULL, *rt = NULL, *url = NULL, *body = NULL, *basic = NULL;
	char *authority = NULL;
	const char *tok;
	json_t *root = NULL;
	int plain_ok, ret = -ENOMEM;

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
	ret = transport_request(tk->tp, &t, &x, err);
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
static int bearer(struct tokens *tk, const struct req *rq, const struct auth_challenge *ch,
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
	pthread_mutex_lock(&tk->lock);
	for (;;) {
		t = token_find(tk, rq->registry, scope);
		if (!t || !t->fetching)
			break;
		pthread_cond_wait(&tk->token_done, &tk->lock);
	}
	if (t && token_valid(t) && (!sent || strcmp(t->header, sent))) {
		*out = strdup(t->header);
		*creds = t->creds;
		snprintf(source, source_len, "%s", t->source);
		pthread_mutex_unlock(&tk->lock);
		return *out ? 0 : -ENOMEM;
	}
	if (t && token_valid(t) && sent && !strcmp(t->header, sent) && err_param &&
	    !strcmp(err_param, "insufficient_scope")) {
		/* A fresh token that does not grant the scope: asking again
		 * gets the same answer until the credentials change, which we
		 * notice when it expires. Registries answer this for missing
		 * repositories too, so it is common while resolving paths. */
		denied_message(rq, t->creds ? 403 : 401, t->creds, t->source, err);
		pthread_mutex_unlock(&tk->lock);
		return -EACCES;
	}
	if (!t)
		t = token_add(tk, rq->registry, scope);
	if (!t) {
		pthread_mutex_unlock(&tk->lock);
		return -ENOMEM;
	}
	t->fetching = true;
	free_secret(t->header);
	t->header = NULL;
	pthread_mutex_unlock(&tk->lock);

	struct auth_opts ao = { .authfile = tk->authfile };
	found = auth_lookup(&ao, rq->registry, rq->repo, &c, why, sizeof(why));
	started = now_mono();
	ret = fetch_token(tk, rq, realm, auth_challenge_param(ch, "service"), scope,
			  found == 0 ? &c : NULL, &hdr, &ttl, err);

	pthread_mutex_lock(&tk->lock);
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
		token_drop(tk, t);
	}
	pthread_cond_broadcast(&tk->token_done);
	pthread_mutex_unlock(&tk->lock);
	if (ret == 0) {
		*creds = found == 0;
		snprintf(source, source_len, "%s", found == 0 ? c.source : "");
	}
	auth_cred_release(&c);
	return ret;
}

static int basic(struct tokens *tk, const struct req *rq, const char *sent, char **out,
		 bool *creds, char *source, size_t source_len, struct reg_error *err)
{
	struct auth_opts ao = { .authfile = tk->authfile };
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
	pthread_mutex_lock(&tk->lock);
	t = token_find(tk, rq->registry, scope);
	if (!t)
		t = token_add(tk, rq->registry, scope);
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
	pthread_mutex_unlock(&tk->lock);
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
static int answer_challenge(struct tokens *tk, const struct req *rq, const char *www,
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
		ret = bearer(tk, rq, ch, sent, out, creds, source, source_len, err);
	else if (auth_challenge_find(&cs, "Basic"))
		ret = basic(tk, rq, sent, out, creds, source, source_len, err);
	else {
		snprintf(err->message, sizeof(err->message),
			 "%s wants %s authentication, which ocifs does not speak", rq->registry,
			 cs.v[0].scheme);
		ret = -EACCES;
	}
	auth_challenges_release(&cs);
	return ret;
}

static char *hook_cached(void *arg, const struct req *rq, struct auth_who *who)
{
	return token_cached(arg, rq->registry, rq->scope ? rq->scope : "", &who->creds,
			    who->source, sizeof(who->source));
}

static int hook_answer(void *arg, const struct req *rq, const char *www, const char *sent,
		       char **out, struct auth_who *who, struct reg_error *err)
{
	return answer_challenge(arg, rq, www, sent, out, &who->creds, who->source,
				sizeof(who->source), err);
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
	while (tk->tokens) {
		struct token *t = tk->tokens;
		tk->tokens = t->next;
		token_free(t);
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
