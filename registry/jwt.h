/* jwt.h - what a registry's Bearer token says it grants.
 *
 * Internal to registry/. Distribution's token spec: a token server answers
 * a token request with the intersection of the scopes asked and those it
 * allows, and a token that is a JWT carries it in the payload's claim
 * "access": [{"type":"repository","name":"ns/repo","actions":["pull"]}].
 * The registry refuses (401 insufficient_scope) a request the claim does
 * not cover. The claim is read here without checking the signature: only
 * to leave out a request the registry would refuse, never to trust the
 * token with anything more. Nothing here keeps the token or logs it.
 */
#ifndef OCIFS_JWT_H
#define OCIFS_JWT_H

#include <stddef.h>

#define JWT_PAYLOAD_MAX (32u << 10)	/* decoded payload bytes we read */

enum jwt_grant {
	JWT_UNKNOWN = -1,	/* the token says nothing of the scope */
	JWT_REFUSED = 0,	/* asked, and not granted: the registry refuses it */
	JWT_GRANTED = 1,
};

/* What @token (the bare token, without "Bearer ") says of each of
 * @scopes[0..n) (scopes it was asked for), into @out[i]. JWT_GRANTED or
 * JWT_REFUSED only for repository scopes ("repository:<name>:<actions>")
 * of a token that is a JWT (three base64url parts, a JSON header and
 * payload of at most JWT_PAYLOAD_MAX bytes) with a well-formed "access"
 * array; a scope is granted when the entries of its name grant each of
 * its actions (or "*"). JWT_UNKNOWN for everything else: other tokens, a
 * payload without the claim or that fails to parse, other scopes (the
 * catalog's), and every scope when an entry names repositories with a
 * wildcard (not the spec's, and not ours to interpret). */
void jwt_grants(const char *token, const char *const *scopes, size_t n, enum jwt_grant *out);

#endif
