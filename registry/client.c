/* client.c - the distribution endpoints: manifests, blobs, tags/list,
 * _catalog, routed through mirrors (mirror.h) then the origin.
 *
 * Requests go through transport.h; their auth hooks are token.h's. A new
 * endpoint builds its path and scope, fills a struct req and calls
 * do_routed().
 */
#include "client.h"
#include "manifest.h"
#include "mirror.h"
#include "ref.h"
#include "token.h"
#include "transport.h"

#include <errno.h>
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGES_MAX 10000
#define CATALOG_SCOPE "registry:catalog:*"

/* Set at creation, read-only after; the parts lock their own state. */
struct regclient {
	struct transport *tp;
	struct tokens *tk;
	struct req_auth auth;		/* tk's hooks, for every registry request */
	struct mirrors *mirrors;	/* NULL: none */
	bool mirror_tags;		/* tags and listings from mirrors too */
	unsigned page_size;
};

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
	struct regclient *rc = calloc(1, sizeof(*rc));
	struct mirror_ep ep;
	const char *why = NULL;

	if (!rc)
		return NULL;
	rc->tp = transport_new(o);
	rc->tk = rc->tp ? tokens_new(rc->tp, o->authfile) : NULL;
	if (!rc->tk || mirrors_new(o->mirrors, o->mirror_backoff, &rc->mirrors, &why) < 0)
		goto out_free;
	tokens_auth(rc->tk, &rc->auth);
	rc->mirror_tags = o->mirror_tags;
	/* A mirror given as http:// or https:// is asked that way only. */
	for (size_t i = 0; mirrors_each(rc->mirrors, i, &ep); i++)
		if (ep.plain || ep.tls)
			transport_set_scheme(rc->tp, ep.authority, ep.plain);
	return rc;
out_free:
	regclient_free(rc);
	return NULL;
}

void regclient_free(struct regclient *rc)
{
	if (!rc)
		return;
	mirrors_free(rc->mirrors);
	tokens_free(rc->tk);
	transport_free(rc->tp);
	free(rc);
}

void regclient_set_page_size(struct regclient *rc, unsigned n)
{
	rc->page_size = n;
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
		ret = transport_request(rc->tp, &mrq, x, err);
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
	return transport_request(rc->tp, rq, x, err);
}

bool regclient_challenged(struct regclient *rc, const char *registry)
{
	return tokens_challenged(rc->tk, registry);
}

struct scope_hint *regclient_hint_repos(struct regclient *rc, const char *registry,
					const char *const *repos, size_t n, bool catalog)
{
	char *names[REG_HINT_MAX + 1] = { NULL }, *scopes[REG_HINT_MAX + 1] = { NULL };
	struct scope_hint *h = NULL;
	size_t i;

	if (n > REG_HINT_MAX)
		return NULL;
	for (i = 0; i < n; i++) {
		names[i] = ref_registry_repository(registry, repos[i]);
		scopes[i] = names[i] ? pull_scope(names[i]) : NULL;
		if (!scopes[i])
			goto out_free;
	}
	if (catalog && !(scopes[n] = strdup(CATALOG_SCOPE)))
		goto out_free;
	h = tokens_hint_add(rc->tk, registry, (const char *const *)scopes,
			    (const char *const *)names, n + catalog);
out_free:
	for (i = 0; i <= n; i++) {
		free(names[i]);
		free(scopes[i]);
	}
	return h;
}

void regclient_hint_drop(struct regclient *rc, struct scope_hint *h)
{
	tokens_hint_drop(rc->tk, h);
}

bool regclient_refused_shared(struct regclient *rc, const char *registry, const char *repo)
{
	char *name = ref_registry_repository(registry, repo);
	char *scope = name ? pull_scope(name) : NULL;
	bool refused = scope && tokens_refused_shared(rc->tk, registry, scope);

	free(scope);
	free(name);
	return refused;
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

/* GET @name's document at /v2/<name>/@what (a manifest or a referrers
 * index), capped at MANIFEST_MAX_BYTES, through the mirrors when @routed. */
static int get_document(struct regclient *rc, const char *registry, const char *repo,
			const char *what, const char *accept, bool routed, unsigned skip,
			unsigned *source, struct reg_manifest *out, struct reg_error *err)
{
	struct xfer x = { .cap = MANIFEST_MAX_BYTES };
	char *name = NULL, *scope = NULL, *path = NULL;
	int ret = -ENOMEM;

	name = ref_registry_repository(registry, repo);
	scope = name ? pull_scope(name) : NULL;
	if (!scope || asprintf(&path, "/v2/%s/%s", name, what) < 0) {
		path = NULL;
		goto out_free;
	}
	struct req rq = { .authn = &rc->auth, .registry = registry, .repo = name,
			  .scope = scope, .path = path, .accept = accept };
	ret = do_routed(rc, &rq, routed, skip, source, &x, err);
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

int regclient_get_manifest(struct regclient *rc, const char *registry, const char *repo,
			   const char *reference, unsigned skip, unsigned *source,
			   struct reg_manifest *out, struct reg_error *err)
{
	char what[REF_TAG_MAX + 80];

	if ((size_t)snprintf(what, sizeof(what), "manifests/%s", reference) >= sizeof(what))
		return -EINVAL;
	return get_document(rc, registry, repo, what, MANIFEST_ACCEPT,
			    is_digest(reference) || rc->mirror_tags, skip, source, out, err);
}

int regclient_get_referrers(struct regclient *rc, const char *registry, const char *repo,
			    const char *digest, struct reg_manifest *out, struct reg_error *err)
{
	char what[128];

	if ((size_t)snprintf(what, sizeof(what), "referrers/%s", digest) >= sizeof(what))
		return -EINVAL;
	return get_document(rc, registry, repo, what, "application/vnd.oci.image.index.v1+json",
			    false, 0, NULL, out, err);
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

/* Compare repository names as distribution sorts its catalog: by path
 * components, '/' before every other character. */
static int path_cmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned x = *a == '/' ? 1 : (unsigned char)*a;
		unsigned y = *b == '/' ? 1 : (unsigned char)*b;
		if (x != y)
			return x < y ? -1 : 1;
		if (!x)
			return 0;
	}
}

/* One part of the catalog: @under and the names below "@under/". */
struct page_range {
	const char *under;
	size_t len;
	char last[REF_NAME_MAX + 2];	/* asked from after it (first_page()) */
	char prev[REF_NAME_MAX + 2];	/* the last name seen, last= at first */
	bool bytes, paths;	/* the names so far ascend in byte, path order */
	bool first;	/* no name seen yet */
	bool whole;	/* read from the top: every name is kept */
	bool seen;	/* a name that starts with @under seen */
	bool below;	/* a name below "@under/" seen */
};

/* Do the names of page @arr (those @valid) go on ascending from
 * rg->prev, in byte or path order? 1 yes; 0 its first name sorts before
 * last= in both: the registry ignored last= and started from the top;
 * -1 no: the catalog is not sorted (Quay's is in the order repositories
 * were made), so no part of it can be read alone. */
static int page_order(struct page_range *rg, json_t *arr, bool (*valid)(const char *))
{
	for (size_t i = 0; i < json_array_size(arr); i++) {
		const char *s = json_string_value(json_array_get(arr, i));

		if (!s || !valid(s))
			continue;
		rg->bytes = rg->bytes && strcmp(rg->prev, s) < 0;
		rg->paths = rg->paths && path_cmp(rg->prev, s) < 0;
		if (!rg->bytes && !rg->paths)
			return rg->first ? 0 : -1;
		rg->first = false;
		snprintf(rg->prev, sizeof(rg->prev), "%s", s);
	}
	return 1;
}

/* How @rg takes catalog name @s: 1 keep, 0 skip, -1 past the range.
 * The answer starts after rg->last in the order the registry sorts by:
 * bytes ("x-y" < "x/y" < "xz") or path components as distribution does
 * ("x/y" < "x-y" < "xz"). Names that start with @under come one after the
 * other in either; before them may come names that sort between last=
 * and @under in one order only (distribution answers "x-y" and "x.y"
 * between "x/~" and "x0"; in byte order "x/y" is past "x-z", in path
 * order before it). */
static int range_take(struct page_range *rg, const char *s)
{
	char c;

	if (!rg || rg->whole)
		return 1;
	if (strncmp(s, rg->under, rg->len)) {
		if (rg->seen)
			return -1;
		/* Past @under in both orders: it has no names. Else passed
		 * over, until its names or one past it. */
		return strcmp(s, rg->under) > 0 && path_cmp(s, rg->under) > 0 ? -1 : 0;
	}
	rg->seen = true;
	c = s[rg->len];
	if (c == '\0')
		return 1;
	if (c == '/') {
		rg->below = true;
		return 1;
	}
	/* "xz" is past "x/..." in both orders; "x-y" is past them only in
	 * the one where they came first. */
	return c > '/' || rg->below ? -1 : 0;
}

/* The first page's path: @first, from just before @rg's names when @rg,
 * with a page size only when told to (registries cap it and some answer
 * 400 PAGINATION_NUMBER_INVALID above their cap). NULL: no memory. */
static char *first_page(const struct regclient *rc, const char *first,
			const struct page_range *rg)
{
	char *esc = NULL, *path = NULL, n[32] = "";

	if (rc->page_size)
		snprintf(n, sizeof(n), "n=%u", rc->page_size);
	if (!rg) {
		if (asprintf(&path, "%s%s%s", first, n[0] ? "?" : "", n) < 0)
			path = NULL;
		return path;
	}
	esc = curl_easy_escape(NULL, rg->last, 0);
	if (esc && asprintf(&path, "%s?last=%s%s%s", first, esc, n[0] ? "&" : "", n) < 0)
		path = NULL;
	curl_free(esc);
	return path;
}

/* Fetch a paginated listing: @key names the JSON array in each page; names
 * that fail @valid are dropped (they could not be paths, and are where a
 * hostile registry would put its bulk); @rg (NULL: all) keeps one part of
 * the catalog. All pages together are capped at REG_LIST_BYTES_MAX. */
static int list_pages(struct regclient *rc, const char *registry, const char *repo,
		      const char *scope, const char *first, const char *key,
		      bool (*valid)(const char *), struct page_range *rg, struct strlist *out,
		      struct reg_error *err)
{
	struct strlist l = { 0 };
	struct xfer x = { 0 };
	size_t total = 0;
	char *path = first_page(rc, first, rg);
	int ret = -ENOMEM;

	for (int page = 0; path && page < PAGES_MAX; page++) {
		struct req rq = { .authn = &rc->auth, .registry = registry, .repo = repo,
				  .scope = scope, .path = path, .accept = "application/json" };
		json_t *root, *arr;
		size_t count;
		bool past = false;
		int order;

		x.cap = REG_LIST_BYTES_MAX - total;
		ret = do_routed(rc, &rq, rc->mirror_tags, 0, NULL, &x, err);
		if (ret == -EFBIG)
			snprintf(err->message, sizeof(err->message),
				 "%s listing larger than %u bytes", key, REG_LIST_BYTES_MAX);
		if (ret < 0)
			goto out_free;
		total += x.len;
		root = json_loadb(x.buf ? x.buf : "", x.len, 0, NULL);
		arr = json_object_get(root, key);
		if (!root || (!json_is_array(arr) && !json_is_null(arr) && arr)) {
			json_decref(root);
			snprintf(err->message, sizeof(err->message), "malformed %s listing", key);
			ret = -EIO;
			goto out_free;
		}
		/* A part from a registry that ignored last= is the whole
		 * catalog from here; from one that does not sort it, the
		 * whole catalog, asked again from the top. */
		order = rg && !rg->whole ? page_order(rg, arr, valid) : 1;
		if (order <= 0)
			rg->whole = true;
		if (order < 0) {
			json_decref(root);
			strlist_release(&l);
			free(path);
			path = first_page(rc, first, NULL);
			if (!path) {
				ret = -ENOMEM;
				goto out_free;
			}
			continue;
		}
		for (size_t i = 0; i < json_array_size(arr) && !past; i++) {
			const char *s = json_string_value(json_array_get(arr, i));
			int take;

			if (!s || !valid(s))
				continue;
			take = range_take(rg, s);
			past = take < 0;
			if (take <= 0)
				continue;
			ret = strlist_push(&l, s);
			if (ret == -EFBIG)
				snprintf(err->message, sizeof(err->message),
					 "%s listing longer than %u names", key, REG_LIST_MAX);
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
		if (count == 0 || past) {
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
		ret = list_pages(rc, registry, name, scope, path, "tags", ref_valid_tag, NULL, out,
				 err);
	else
		path = NULL;
	free(path);
	free(scope);
	free(name);
	return ret;
}

int regclient_list_catalog(struct regclient *rc, const char *registry, const char *under,
			   struct strlist *out, bool *whole, struct reg_error *err)
{
	struct page_range rg = { .under = under, .len = under ? strlen(under) : 0,
				 .bytes = true, .paths = true, .first = true };
	int ret;

	/* Nothing is at or below what cannot be a repository name: nothing
	 * to ask. */
	if (rg.len && !ref_valid_repository(under)) {
		*out = (struct strlist){ 0 };
		if (whole)
			*whole = false;
		return 0;
	}
	/* last= names what the answer starts after. @under with its last
	 * character lowered and "~" added sorts before @under and after
	 * every valid name that sorts before @under in byte order (no name
	 * character is above '~'); in path order, too, but for an @under
	 * ending in '0' ("x/~" is before "x-y"; range_take()). */
	if (rg.len)
		snprintf(rg.last, sizeof(rg.last), "%.*s%c~", (int)rg.len - 1, under,
			 under[rg.len - 1] - 1);
	memcpy(rg.prev, rg.last, sizeof(rg.prev));
	/* Docker Hub names come back as library/x; the tree shows x too. */
	ret = list_pages(rc, registry, NULL, CATALOG_SCOPE, "/v2/_catalog", "repositories",
			 ref_valid_repository, rg.len ? &rg : NULL, out, err);
	if (ret == 0 && whole)
		*whole = !rg.len || rg.whole;
	return ret;
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
		struct req rq = { .authn = &rc->auth, .registry = registry, .repo = name,
				  .scope = scope, .path = path, .stream = true };
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
