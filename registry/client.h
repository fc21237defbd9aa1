/* client.h - the distribution-spec HTTP client.
 *
 * One struct regclient per mount: a curl share handle gives every thread
 * the same connection cache, DNS cache and TLS sessions. Each call is
 * synchronous and thread-safe. Registry names are the tree's names
 * ("docker.io"); the client maps them to endpoints and repository names.
 *
 * Every function returns 0 or a negative errno, mapped once in
 * reg_errno(): 404 -> ENOENT, 401/403 -> EACCES, 429 -> EAGAIN,
 * unreachable -> EHOSTUNREACH, timeout -> ETIMEDOUT, others -> EIO.
 * Details for the log land in a struct reg_error the caller provides.
 *
 * Auth (token.h): a registry's first request goes out anonymous; a 401 is
 * answered once per request, and the registry's challenge is remembered
 * so that later requests for other scopes get their token (or Basic
 * credentials) before they are sent. Bearer challenges get a token from
 * the realm for "repository:<name>:pull" (or "registry:catalog:*"),
 * anonymously, with Basic credentials, or with an identity token as
 * OAuth2 refresh token (POST); tokens are kept per registry and scope
 * until expires_in (default 60 s): one token request per scope and expiry,
 * shared with its failure by every request waiting for it; the scopes
 * hinted with regclient_hint_repos() share one request. A token that is
 * a JWT whose "access" claim leaves out a repository scope it was asked
 * for (jwt.h) is not sent for it: the request fails at once with EACCES,
 * as the registry's 401 insufficient_scope would. A realm that
 * fails is EACCES, naming the realm. Credentials come from auth_lookup()
 * (auth.h) when a token or header is made. The Authorization header
 * is never sent to another host:port on a redirect (curl drops custom
 * Authorization headers there; tests check it), never put in a URL, and
 * never given to the trace callback or to a reg_error.
 *
 * TLS: system CAs, plus -o cafile and every *.crt in
 * /etc/docker/certs.d/<host>/ and /etc/containers/certs.d/<host>/ (with
 * client.cert/client.key pairs as client certificates).
 */
#ifndef OCIFS_CLIENT_H
#define OCIFS_CLIENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#define REG_LIST_MAX 100000	/* tags or repositories in one listing */
#define REG_LIST_BYTES_MAX (32u << 20)	/* bytes of all pages of one listing */
#define REG_ERRBODY_MAX 16384	/* bytes of an error body we read */
#define REG_MIN_RATE 1024	/* bytes/s: slower over -o timeout fails */
#define REG_HINT_MAX 64		/* repositories in one regclient_hint_repos() */

struct reg_error {
	long status;		/* HTTP status, 0 if no response */
	char code[40];		/* registry error code, e.g. "MANIFEST_UNKNOWN" */
	char message[512];	/* registry message or transport error, or
				 * which credentials were refused */
};

struct regclient_opts {
	/* NULL-terminated registries (tree names or host:port) for which TLS
	 * is not verified, and plain HTTP is used when they do not speak
	 * TLS at all. Loopback registries always fall back to plain HTTP
	 * but verify TLS when they speak it. */
	const char *const *insecure;
	const char *cafile;		/* PEM CAs trusted besides the system's */
	const char *authfile;		/* the only credentials file (absolute) */
	long timeout;			/* seconds: connect, and stall on transfers */
	unsigned retries;		/* extra attempts for 429/5xx/dropped links
					 * in a row; a resumed download that made
					 * progress starts counting again */
	/* NULL-terminated "ORIGIN=URL" mirrors (see mirror.h), tried in
	 * order before the origin for content-addressed requests (blobs,
	 * manifests by digest), and for tags and listings too when
	 * @mirror_tags. A failing mirror is skipped for @mirror_backoff s. */
	const char *const *mirrors;
	bool mirror_tags;
	long mirror_backoff;
	/* Called after each HTTP exchange when set (debug log); never sees
	 * credentials. */
	void (*trace)(void *arg, const char *method, const char *url,
		      long status, double seconds);
	void *trace_arg;
};

struct strlist {
	char **v;
	size_t n;
};
void strlist_release(struct strlist *l);

struct regclient;

/* Returns NULL on ENOMEM or if curl cannot be set up. */
struct regclient *regclient_new(const struct regclient_opts *opts);
void regclient_free(struct regclient *rc);

/* A fetched manifest: body bytes, the Content-Type and the digest the
 * registry claims (Docker-Content-Digest, may be NULL). Caller releases. */
struct reg_manifest {
	char *body;
	size_t len;
	char *content_type;
	char *digest_header;
};
void reg_manifest_release(struct reg_manifest *m);

/* GET /v2/<repo>/manifests/<ref>. The body is capped at
 * MANIFEST_MAX_BYTES (-EFBIG beyond). By digest (and by tag with
 * mirror_tags) the mirrors are asked first; @skip and *source work as for
 * regclient_get_blob(). */
int regclient_get_manifest(struct regclient *rc, const char *registry,
			   const char *repo, const char *reference, unsigned skip,
			   unsigned *source, struct reg_manifest *out,
			   struct reg_error *err);

/* GET /v2/<repo>/referrers/<digest>: the OCI 1.1 referrers index (an
 * image index), unfiltered: ocifs wants several artifact types at once.
 * -ENOENT when the registry lacks the API (404). Never asked of mirrors:
 * a mirror knows nothing of referrers pushed since. */
int regclient_get_referrers(struct regclient *rc, const char *registry, const char *repo,
			    const char *digest, struct reg_manifest *out, struct reg_error *err);

/* GET /v2/<repo>/tags/list, following pagination. Names that are not
 * valid tags are left out; more than REG_LIST_MAX names or
 * REG_LIST_BYTES_MAX bytes of pages is -EFBIG. */
int regclient_list_tags(struct regclient *rc, const char *registry,
			const char *repo, struct strlist *out,
			struct reg_error *err);

/* GET /v2/_catalog, following pagination; the same rules, for repository
 * names. @under NULL or "": the whole catalog. Else only @under and the
 * names below "@under/": asked from just before them (last=) and stopped
 * once past them, so that one repository's part of a big catalog costs a
 * page, not every page (none when @under cannot be a repository name:
 * no name). A registry that ignores last= is read whole;
 * *@whole (may be NULL) says whether the result is the whole catalog. */
int regclient_list_catalog(struct regclient *rc, const char *registry, const char *under,
			   struct strlist *out, bool *whole, struct reg_error *err);

/* Receives a blob's bytes in order. An interrupted download is resumed
 * with a Range request: the sink just gets the rest, as if nothing
 * happened. Only when the server sends the whole blob again does the sink
 * first get (NULL, 0), meaning "start over: forget what you got". Return
 * 0 or -errno to abort. */
typedef int (*reg_sink_fn)(void *arg, const void *data, size_t len);

/* GET /v2/<repo>/blobs/<digest>, from the registry's mirrors first (see
 * regclient_opts), following redirects, streaming to @sink. The caller
 * verifies the digest; when the bytes were wrong it may ask again with
 * @skip = *source + 1 to pass over the source that sent them. *source
 * (may be NULL) is the mirror's index, or the mirror count for the
 * origin; regclient_mirror_count() tells that count. */
int regclient_get_blob(struct regclient *rc, const char *registry,
		       const char *repo, const char *digest, reg_sink_fn sink,
		       void *sink_arg, unsigned skip, unsigned *source,
		       struct reg_error *err);

/* Has @registry sent an auth challenge yet (its scheme and challenge
 * known: later requests need no 401 of their own)? */
bool regclient_challenged(struct regclient *rc, const char *registry);

/* Repositories @repos[0..n) of @registry (tree names), and its catalog
 * when @catalog, are about to be asked at once (the readings of a path,
 * a listing). Until regclient_hint_drop(), a token fetched for @registry
 * also asks for the scope of each of them that has none: one token
 * request for all (repeated scope=). Best effort: NULL when nothing is
 * held. */
struct scope_hint;
struct scope_hint *regclient_hint_repos(struct regclient *rc, const char *registry,
					const char *const *repos, size_t n, bool catalog);
void regclient_hint_drop(struct regclient *rc, struct scope_hint *h);

/* Was @repo of @registry last refused with a token that was asked for
 * together with other scopes (a token server may grant fewer scopes than
 * asked)? Then asking again asks for its token alone. */
bool regclient_refused_shared(struct regclient *rc, const char *registry, const char *repo);

/* How many mirrors @registry has now (back-off aside). */
unsigned regclient_mirror_count(struct regclient *rc, const char *registry);

/* Cancelling requests (FUSE interrupts). Bind a struct reg_cancel to a
 * thread with regclient_cancel_bind(); every request that thread makes
 * then checks it before it starts, at least once a second while it
 * transfers, and while it waits to retry: once @requested is set (from
 * any thread, e.g. libfuse's interrupt callback) or @poll returns true
 * (in the bound thread, e.g. a wrapper of fuse_interrupted()), the call
 * returns -EINTR. A download shared by several readers (blobcache.h's
 * single flight) ends for all of them: bind it only where the caller
 * alone waits for the result, or let the others ask again. */
struct reg_cancel {
	atomic_bool requested;
	bool (*poll)(void *arg);	/* may be NULL */
	void *poll_arg;
};

/* Bind @c (NULL: none; borrowed until unbound) to the calling thread;
 * returns the previous binding, to restore. */
struct reg_cancel *regclient_cancel_bind(struct reg_cancel *c);

/* The errno for an HTTP status and registry error code. */
int reg_errno(long status, const char *code);

/* Set the page size asked for in listings; 0 (the default) lets the
 * registry choose. */
void regclient_set_page_size(struct regclient *rc, unsigned n);

/* Print the versions of libcurl and jansson in use, a line each. */
void regclient_print_versions(FILE *f);

#endif
