/* token.h - authentication of registry requests: challenges and tokens.
 *
 * Internal to registry/. A 401 from a registry is answered here: Bearer
 * challenges get a token from the realm (anonymously, with Basic
 * credentials, or with an identity token as OAuth2 refresh token in a
 * POST), Basic challenges get the credentials auth_lookup() finds. What a
 * challenge earned is kept per registry and scope until it expires, and
 * sent first by later requests. Thread-safe.
 */
#ifndef OCIFS_TOKEN_H
#define OCIFS_TOKEN_H

#include "transport.h"

struct tokens;

/* Token requests go through @tp (borrowed: it must outlive the cache).
 * @authfile (may be NULL) is -o authfile. NULL on ENOMEM. */
struct tokens *tokens_new(struct transport *tp, const char *authfile);
void tokens_free(struct tokens *tk);

/* Has @registry challenged us (Bearer or Basic) yet? Then its scheme
 * and challenge are known, and requests may go to it in parallel. */
bool tokens_challenged(struct tokens *tk, const char *registry);

/* Scopes @scopes[0..n) of @registry (of repositories @repos[i], as the
 * registry knows them, NULL for registry-wide scopes: for their
 * credentials) are about to be needed at
 * once. Until tokens_hint_drop(), a Bearer token fetched for @registry
 * also asks for every one of them that has no token, no fetch in flight
 * and the same credentials: one token request (repeated scope=) for all,
 * kept under each scope. Best effort: NULL when nothing is held. */
struct scope_hint *tokens_hint_add(struct tokens *tk, const char *registry,
				   const char *const *scopes, const char *const *repos, size_t n);
/* Withdraw @h (NULL: nothing). */
void tokens_hint_drop(struct tokens *tk, struct scope_hint *h);

/* Was @scope of @registry refused (insufficient_scope) with a token
 * asked for together with other scopes? Then the next request for it asks
 * for it alone: a token server may grant fewer scopes than asked. */
bool tokens_refused_shared(struct tokens *tk, const char *registry, const char *scope);

/* The hooks for struct req.authn, answering from @tk. */
void tokens_auth(struct tokens *tk, struct req_auth *out);

#endif
