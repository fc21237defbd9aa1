/* fuzz_wwwauth.c - libFuzzer target for the WWW-Authenticate parser and
 * the small parsers beside it (registry/auth.h).
 *
 * The input, as a string, is a WWW-Authenticate value for
 * auth_challenges_parse(). A parsed value must respect the caps, name its
 * schemes and parameters, leave @out untouched on failure, and survive a
 * round trip: written back canonically (quoted values, escapes) it parses
 * to the same challenges. The same bytes also go through base64 (encode
 * then decode is the identity; what decodes re-encodes and decodes to the
 * same bytes) and, split at NULs, through auth_key_match().
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "auth.h"


/* Append to a growing string; aborts on ENOMEM (none happens here). */
static void put(char **s, size_t *len, const char *add, size_t n)
{
	char *t = realloc(*s, *len + n + 1);

	FUZZ_ASSERT(t);
	memcpy(t + *len, add, n);
	*len += n;
	t[*len] = '\0';
	*s = t;
}

static char *canonical(const struct auth_challenges *c)
{
	char *s = NULL;
	size_t len = 0;

	put(&s, &len, "", 0);
	for (size_t i = 0; i < c->n; i++) {
		const struct auth_challenge *ch = &c->v[i];
		if (i)
			put(&s, &len, ", ", 2);
		put(&s, &len, ch->scheme, strlen(ch->scheme));
		if (ch->token68) {
			put(&s, &len, " ", 1);
			put(&s, &len, ch->token68, strlen(ch->token68));
		}
		for (size_t j = 0; j < ch->n_params; j++) {
			const char *v = ch->params[j].value;
			put(&s, &len, j ? ", " : " ", j ? 2 : 1);
			put(&s, &len, ch->params[j].name, strlen(ch->params[j].name));
			put(&s, &len, "=\"", 2);
			for (; *v; v++) {
				if (*v == '"' || *v == '\\')
					put(&s, &len, "\\", 1);
				put(&s, &len, v, 1);
			}
			put(&s, &len, "\"", 1);
		}
	}
	return s;
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static void check_challenges(const struct auth_challenges *c)
{
	struct auth_challenges again = { 0 };
	char *s;
	int ret;

	FUZZ_ASSERT(c->n <= AUTH_CHALLENGES_MAX);
	for (size_t i = 0; i < c->n; i++) {
		const struct auth_challenge *ch = &c->v[i];
		FUZZ_ASSERT(ch->scheme && *ch->scheme);
		FUZZ_ASSERT(!ch->token68 || ch->n_params == 0);
		FUZZ_ASSERT(ch->n_params <= AUTH_PARAMS_MAX);
		FUZZ_ASSERT(auth_challenge_find(c, ch->scheme) != NULL);
		for (size_t j = 0; j < ch->n_params; j++) {
			const char *name = ch->params[j].name;
			FUZZ_ASSERT(name && *name && ch->params[j].value);
			for (const char *q = name; *q; q++)
				FUZZ_ASSERT(!(*q >= 'A' && *q <= 'Z'));
			FUZZ_ASSERT(auth_challenge_param(ch, name) != NULL);
		}
		(void)auth_challenge_param(ch, "realm");
	}
	(void)auth_challenge_find(c, "bearer");
	(void)auth_challenge_find(c, "Basic");

	s = canonical(c);
	ret = auth_challenges_parse(s, &again);
	if (ret != 0)
		fprintf(stderr, "canonical form refused (%d): %s\n", ret, s);
	FUZZ_ASSERT(ret == 0);
	FUZZ_ASSERT(again.n == c->n);
	for (size_t i = 0; i < c->n; i++) {
		const struct auth_challenge *a = &c->v[i], *b = &again.v[i];
		FUZZ_ASSERT(!strcmp(a->scheme, b->scheme));
		FUZZ_ASSERT(same_str(a->token68, b->token68));
		FUZZ_ASSERT(a->n_params == b->n_params);
		for (size_t j = 0; j < a->n_params; j++) {
			FUZZ_ASSERT(!strcmp(a->params[j].name, b->params[j].name));
			FUZZ_ASSERT(!strcmp(a->params[j].value, b->params[j].value));
		}
	}
	auth_challenges_release(&again);
	free(s);
}

static void check_base64(const uint8_t *data, size_t size, const char *s)
{
	char *enc, *dec = NULL;
	size_t n = 0;

	enc = auth_base64_encode(data, size);
	FUZZ_ASSERT(enc);
	FUZZ_ASSERT(strlen(enc) == (size + 2) / 3 * 4);
	FUZZ_ASSERT(auth_base64_decode(enc, &dec, &n) == 0);
	FUZZ_ASSERT(n == size && !memcmp(dec, data, size) && dec[n] == '\0');
	free(enc);
	free(dec);

	dec = NULL;
	if (auth_base64_decode(s, &dec, &n) == 0) {
		char *dec2 = NULL;
		size_t n2 = 0;
		FUZZ_ASSERT(dec && dec[n] == '\0');
		enc = auth_base64_encode(dec, n);
		FUZZ_ASSERT(enc);
		FUZZ_ASSERT(auth_base64_decode(enc, &dec2, &n2) == 0);
		FUZZ_ASSERT(n2 == n && !memcmp(dec2, dec, n));
		free(enc);
		free(dec2);
		free(dec);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct auth_challenges c = { (struct auth_challenge *)0x1, 12345 };
	char *s = malloc(size + 3);
	int ret;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = s[size + 1] = s[size + 2] = '\0';

	ret = auth_challenges_parse(s, &c);
	FUZZ_ASSERT(ret == 0 || ret == -EINVAL || ret == -E2BIG);
	if (ret == 0) {
		check_challenges(&c);
		auth_challenges_release(&c);
		FUZZ_ASSERT(c.v == NULL && c.n == 0);
	} else {
		/* written only on success */
		FUZZ_ASSERT(c.v == (struct auth_challenge *)0x1 && c.n == 12345);
	}
	auth_challenges_release(NULL);

	check_base64(data, size, s);

	/* key \0 registry \0 repository */
	const char *key = s, *reg = key + strlen(key) + 1, *repo;
	if (reg > s + size)
		reg = s + size;
	repo = reg + strlen(reg) + 1;
	if (repo > s + size)
		repo = s + size;
	int m = auth_key_match(key, reg, *repo ? repo : NULL);
	FUZZ_ASSERT(m >= -1);
	FUZZ_ASSERT(auth_server_url(reg) != NULL);
	free(s);
	return 0;
}
