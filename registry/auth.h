/* auth.h - registry credentials and WWW-Authenticate challenges.
 *
 * Credentials come from what `docker login`, `podman login` and `oras
 * login` already wrote; nothing here talks HTTP (client.c does). Files are
 * read on every auth_lookup(), so a login after the mount takes effect at
 * the next challenge.
 *
 * Where auth_lookup() looks, first match wins:
 *   1. -o authfile=PATH when given, and then nothing else;
 *   2. $REGISTRY_AUTH_FILE;
 *   3. $XDG_RUNTIME_DIR/containers/auth.json          (podman);
 *   4. /run/containers/$UID/auth.json  (podman as root without
 *      XDG_RUNTIME_DIR: sudo, cron, systemd units);
 *   5. $XDG_CONFIG_HOME/containers/auth.json, default ~/.config/...;
 *   6. $DOCKER_CONFIG/config.json, default ~/.docker/config.json.
 * (1-5 are containers-auth.json(5)'s order.)
 * Inside one file: "credHelpers" for the registry, then "credsStore", then
 * "auths" ("auth" = base64 user:password, or "username"/"password", and
 * "identitytoken").
 *
 * Keys match the way docker and podman match them (auth_key_match()):
 * "https://index.docker.io/v1/" and "docker.io" are Docker Hub; a key with
 * a scheme is reduced to its host ("https://ghcr.io/v2/" is ghcr.io); a key
 * without a scheme but with a path is a podman namespace
 * ("quay.io/org" covers quay.io/org/x) and beats a bare host.
 *
 * Credential helpers run as docker-credential-<name> get, found on PATH,
 * without a shell, with the server URL on stdin and JSON on stdout; the
 * secret never appears on a command line or in the environment.
 */
#ifndef OCIFS_AUTH_H
#define OCIFS_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#define AUTH_FILE_MAX (1u << 20)	/* bytes of one auth file we read */
#define AUTH_HELPER_OUT_MAX 65536	/* bytes of a helper's answer */
#define AUTH_HELPER_TIMEOUT_MS 10000
#define AUTH_CHALLENGES_MAX 16		/* challenges in one header */
#define AUTH_PARAMS_MAX 32		/* parameters of one challenge */
#define AUTH_FILES_MAX 6		/* files in the search order */
#define AUTH_RUN_DIR "/run"		/* of /run/containers/$UID/auth.json */

/* ---- WWW-Authenticate (RFC 7235) ---- */

struct auth_param {
	char *name;	/* lowercased */
	char *value;	/* unquoted, escapes resolved */
};

struct auth_challenge {
	char *scheme;	/* as sent; compare case-insensitively */
	char *token68;	/* "Negotiate abc==" style, else NULL */
	struct auth_param *params;
	size_t n_params;
};

struct auth_challenges {
	struct auth_challenge *v;
	size_t n;
};

/* Parse a WWW-Authenticate value (several headers joined with ", " are one
 * value). Challenges and parameters come in any order; values are tokens
 * or quoted strings with backslash escapes. Returns 0 and *out (release
 * with auth_challenges_release()), -EINVAL when malformed, -E2BIG beyond
 * the caps above, or -ENOMEM. */
int auth_challenges_parse(const char *s, struct auth_challenges *out);
void auth_challenges_release(struct auth_challenges *c);

/* The first challenge of @scheme (case-insensitive), or NULL; borrowed. */
const struct auth_challenge *auth_challenge_find(const struct auth_challenges *c,
						 const char *scheme);
/* The value of parameter @name, or NULL; borrowed. */
const char *auth_challenge_param(const struct auth_challenge *c, const char *name);

/* ---- credentials ---- */

struct auth_cred {
	char *username;
	char *password;		/* NULL with an identity token */
	char *identitytoken;	/* an OAuth2 refresh token, or NULL */
	char source[256];	/* where they came from, for messages: a file
				 * path or "docker-credential-<name>"; never
				 * the secret */
};
void auth_cred_release(struct auth_cred *c);

struct auth_opts {
	const char *authfile;		/* absolute path; the only file when set */
	unsigned helper_timeout_ms;	/* 0: AUTH_HELPER_TIMEOUT_MS */
};

/* Credentials for @registry (a tree name: "docker.io", "ghcr.io",
 * "127.0.0.1:5000") and @repository (as the registry knows it,
 * "library/ubuntu"; may be NULL for registry-wide requests). Returns 0
 * and *out, -ENOENT when no source has any, or another -errno. Problems
 * met on the way (a malformed file, a failing helper) are described in
 * @why (may be NULL) whatever the result; sources after a broken one are
 * still tried. */
int auth_lookup(const struct auth_opts *o, const char *registry, const char *repository,
		struct auth_cred *out, char *why, size_t why_len);

/* How well config key @key matches @registry/@repository: -1 not at all,
 * 0 the host, n > 0 a namespace of n characters (longer is better). */
int auth_key_match(const char *key, const char *registry, const char *repository);

/* The server URL docker uses for @registry with credential helpers and as
 * the "auths" key: "https://index.docker.io/v1/" for Docker Hub, else
 * @registry itself. Borrowed. */
const char *auth_server_url(const char *registry);

/* "Basic base64(user:password)" for @c. Caller frees. -EINVAL without a
 * password, -ENOMEM. */
int auth_basic_header(const struct auth_cred *c, char **out);

/* Standard base64 with padding. auth_base64_decode() accepts missing
 * padding and returns a NUL-terminated buffer; -EINVAL when malformed.
 * Callers free. */
char *auth_base64_encode(const void *data, size_t len);
int auth_base64_decode(const char *s, char **out, size_t *out_len);

#endif
