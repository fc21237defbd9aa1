/* transport.h - one HTTP exchange, with retries, for the registry client.
 *
 * Internal to registry/. A struct transport holds what every request of a
 * mount shares: the curl share handle (connection cache, DNS cache, TLS
 * sessions), the hosts met so far (scheme, TLS trust, client
 * certificates), -o timeout and -o retries. transport_request() performs
 * one logical request: the scheme probe of loopback and insecure hosts,
 * retries with backoff for 429/5xx/dropped links, Range resume of a
 * streamed body, stall detection, error bodies capped at REG_ERRBODY_MAX.
 *
 * It knows nothing of tokens: a request to a registry carries a struct
 * req_auth whose hooks give the Authorization value to send first and the
 * answer to a 401 challenge (token.h implements them).
 */
#ifndef OCIFS_TRANSPORT_H
#define OCIFS_TRANSPORT_H

#include "client.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct transport;
struct req;

/* Who earned an Authorization value: for messages only. */
struct auth_who {
	bool creds;		/* credentials were used ... */
	char source[256];	/* ... from here */
};

/* Authentication of requests to a registry. Each hook returns a new
 * string the caller frees with free_secret(). */
struct req_auth {
	void *arg;
	/* The Authorization value to send on the first attempt into *@out
	 * (NULL: none), or -errno and @err: the request is not sent. */
	int (*cached)(void *arg, const struct req *rq, char **out, struct auth_who *who,
		      struct reg_error *err);
	/* A 401 with challenges @www (may be NULL), having sent @sent (or
	 * NULL): the value to retry with into *@out, or -errno and @err. */
	int (*answer)(void *arg, const struct req *rq, const char *www, const char *sent,
		      char **out, struct auth_who *who, struct reg_error *err);
	/* The retry was refused too (401/403): say so in @err. */
	void (*denied)(const struct req *rq, long status, const struct auth_who *who,
		       struct reg_error *err);
};

/* A request: either to a registry (@registry and @path) or to an absolute
 * @url (a token realm). */
struct req {
	const char *method;	/* "GET" (default) or "POST" */
	const char *registry;	/* tree name: auth and messages */
	const char *repo;	/* as the registry knows it, NULL registry-wide */
	const char *scope;	/* token scope */
	const char *path;	/* below the registry's base, with the query */
	const char *url;	/* absolute, instead of @registry/@path */
	const char *accept;
	const char *auth;	/* a fixed Authorization value (token requests) */
	const char *body;	/* POST form body */
	const struct req_auth *authn;	/* registry requests; NULL: none */
	bool stream;		/* 2xx body to the sink, resumable */
	bool no_retry;		/* a mirror: fail over instead */
};

/* One exchange's state, shared by curl's callbacks. The caller sets @cap
 * (or @sink), and reads the body and headers after a 0 return; then
 * xfer_reset() frees them. */
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
	/* The request's budget (on_progress): when it started, body bytes
	 * of all its attempts, seconds of Retry-After waits; this attempt's
	 * bytes. */
	struct timespec started;
	uint64_t received, attempt_bytes;
	double budget_extra;
	bool over_budget, cancelled;
	bool errbody_full;	/* an error body reached REG_ERRBODY_MAX */
	struct reg_cancel *cancel;	/* the caller's, or NULL */
};

/* NULL on ENOMEM or when curl cannot be set up. */
struct transport *transport_new(const struct regclient_opts *o);
void transport_free(struct transport *tp);

/* Perform @rq. On 2xx returns 0 with @x holding the body (unless
 * streamed) and headers; otherwise -errno with @err filled. */
int transport_request(struct transport *tp, const struct req *rq, struct xfer *x,
		      struct reg_error *err);

/* Forget the last response (not what the sink holds). */
void xfer_reset(struct xfer *x);

/* @authority ("host[:port]") is asked in plain HTTP only (@plain) or in
 * TLS only: a mirror given with its scheme. */
void transport_set_scheme(struct transport *tp, const char *authority, bool plain);

/* Whether plain HTTP is acceptable for @authority (loopback, or -o
 * insecure): 1, 0, or -ENOMEM. */
int transport_plain_ok(struct transport *tp, const char *authority);

/* "host[:port]" of absolute @url into a new string, or NULL. */
char *url_authority(const char *url);

/* Percent-encode @s for a query or form value. Caller frees. */
char *url_escape(const char *s);

/* Whether @c (may be NULL) asks to stop. */
bool reg_cancel_requested(struct reg_cancel *c);

/* Monotonic seconds. */
time_t now_mono(void);

/* Free a string that held a secret (NULL is fine). */
void free_secret(char *s);

#endif
