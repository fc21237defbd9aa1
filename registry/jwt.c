/* jwt.c - the "access" claim of a registry token (distribution's token
 * spec), read to know which asked scopes its token server left out. */
#include "jwt.h"
#include "auth.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static bool b64url_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* The base64url part @s[0..n) (unpadded) decoded into a JSON object:
 * NULL when it is none, or beyond JWT_PAYLOAD_MAX. The decoded bytes are
 * scrubbed: they are part of a credential. */
static json_t *part_json(const char *s, size_t n)
{
	char *std, *dec = NULL;
	size_t len = 0;
	json_t *root = NULL;

	if (n == 0 || n > (size_t)JWT_PAYLOAD_MAX / 3 * 4 + 3)
		return NULL;
	std = malloc(n + 1);
	if (!std)
		return NULL;
	for (size_t i = 0; i < n; i++)
		std[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
	std[n] = '\0';
	if (auth_base64_decode(std, &dec, &len) == 0 && len <= JWT_PAYLOAD_MAX) {
		root = json_loadb(dec, len, 0, NULL);
		if (!json_is_object(root)) {
			json_decref(root);
			root = NULL;
		}
	}
	if (dec) {
		explicit_bzero(dec, len);
		free(dec);
	}
	explicit_bzero(std, n);
	free(std);
	return root;
}

/* The payload of @token when it is a JWT (header.payload.signature, each
 * base64url, the header and payload JSON objects), else NULL. */
static json_t *jwt_payload(const char *token)
{
	const char *dot[2] = { NULL, NULL }, *p;
	size_t dots = 0;
	json_t *header, *payload;

	for (p = token; *p; p++) {
		if (*p == '.') {
			if (dots == 2)
				return NULL;
			dot[dots++] = p;
		} else if (!b64url_char(*p)) {
			return NULL;
		}
	}
	if (dots != 2)
		return NULL;
	header = part_json(token, (size_t)(dot[0] - token));
	if (!header)
		return NULL;
	json_decref(header);
	payload = part_json(dot[0] + 1, (size_t)(dot[1] - dot[0] - 1));
	return payload;
}

/* Is the claim @access an array of well-formed entries ({"type": string,
 * "name": string, "actions": [string...]}) naming no repository with a
 * wildcard? Otherwise it says nothing we may rely on. */
static bool access_ok(json_t *access)
{
	size_t i, j;
	json_t *e, *a;

	if (!json_is_array(access))
		return false;
	json_array_foreach(access, i, e) {
		const char *type = json_string_value(json_object_get(e, "type"));
		const char *name = json_string_value(json_object_get(e, "name"));
		json_t *actions = json_object_get(e, "actions");

		if (!type || !name || !json_is_array(actions))
			return false;
		json_array_foreach(actions, j, a)
			if (!json_is_string(a))
				return false;
		if (!strcmp(type, "repository") && strpbrk(name, "*?["))
			return false;
	}
	return true;
}

/* Do the entries of @access for repository @name[0..nlen) grant @action
 * [0..alen)? */
static bool access_grants(json_t *access, const char *name, size_t nlen, const char *action,
			  size_t alen)
{
	size_t i, j;
	json_t *e, *a;

	json_array_foreach(access, i, e) {
		const char *en = json_string_value(json_object_get(e, "name"));

		if (strcmp(json_string_value(json_object_get(e, "type")), "repository") ||
		    strlen(en) != nlen || strncmp(en, name, nlen))
			continue;
		json_array_foreach(json_object_get(e, "actions"), j, a) {
			const char *s = json_string_value(a);
			if (!strcmp(s, "*") || (strlen(s) == alen && !strncmp(s, action, alen)))
				return true;
		}
	}
	return false;
}

/* What @access says of @scope. */
static enum jwt_grant scope_grant(json_t *access, const char *scope)
{
	static const char type[] = "repository:";
	const char *name = scope + sizeof(type) - 1, *colon, *a;

	if (strncmp(scope, type, sizeof(type) - 1))
		return JWT_UNKNOWN;
	colon = strrchr(name, ':');
	if (!colon || colon == name || !colon[1])
		return JWT_UNKNOWN;
	for (a = colon + 1; *a;) {
		size_t alen = strcspn(a, ",");
		if (alen && !access_grants(access, name, (size_t)(colon - name), a, alen))
			return JWT_REFUSED;
		a += alen + (a[alen] == ',');
	}
	return JWT_GRANTED;
}

void jwt_grants(const char *token, const char *const *scopes, size_t n, enum jwt_grant *out)
{
	json_t *payload = jwt_payload(token);
	json_t *access = json_object_get(payload, "access");
	bool ok = access_ok(access);

	for (size_t i = 0; i < n; i++)
		out[i] = ok ? scope_grant(access, scopes[i]) : JWT_UNKNOWN;
	json_decref(payload);
}
