/* fuzz_ref.c - libFuzzer target for reference parsing (registry/ref.h).
 *
 * The input, as a string, goes to ref_parse() and to every validator.
 * Beyond "no crash, no leak" it checks what callers rely on:
 *   - a parsed reference has valid components, a tag or a digest, and a
 *     name (registry/repository) of at most REF_NAME_MAX bytes;
 *   - normalization is idempotent: the canonical form of a parsed
 *     reference parses back to the same fields;
 *   - a string a validator accepts is accepted in its place by ref_parse().
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ref.h"


static bool streq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static void check_parsed(const struct ref *r)
{
	struct ref again;
	const char *why;
	char *canon;
	int ret;

	FUZZ_ASSERT(r->registry && r->repository);
	FUZZ_ASSERT(r->tag || r->digest);
	FUZZ_ASSERT(ref_valid_registry(r->registry));
	FUZZ_ASSERT(ref_valid_repository(r->repository));
	FUZZ_ASSERT(!r->tag || ref_valid_tag(r->tag));
	FUZZ_ASSERT(!r->digest || ref_valid_digest(r->digest));
	FUZZ_ASSERT(strlen(r->registry) + 1 + strlen(r->repository) <= REF_NAME_MAX);
	FUZZ_ASSERT(strcmp(r->registry, "index.docker.io") != 0);

	/* The helpers callers apply to a parsed reference. */
	(void)ref_registry_is_loopback(r->registry);
	FUZZ_ASSERT(ref_registry_endpoint(r->registry) != NULL);
	char *rr = ref_registry_repository(r->registry, r->repository);
	FUZZ_ASSERT(rr && ref_valid_repository(rr));
	free(rr);

	if (asprintf(&canon, "%s/%s%s%s%s%s", r->registry, r->repository,
		     r->tag ? ":" : "", r->tag ? r->tag : "", r->digest ? "@" : "",
		     r->digest ? r->digest : "") < 0)
		abort();
	ret = ref_parse(canon, &again, &why);
	if (ret != 0)
		fprintf(stderr, "canonical form \"%s\" refused: %s\n", canon, why ? why : "?");
	FUZZ_ASSERT(ret == 0);
	FUZZ_ASSERT(streq(again.registry, r->registry));
	FUZZ_ASSERT(streq(again.repository, r->repository));
	FUZZ_ASSERT(streq(again.tag, r->tag));
	FUZZ_ASSERT(streq(again.digest, r->digest));
	ref_release(&again);
	free(canon);
}

/* A component a validator accepts must be accepted by ref_parse() in its
 * place in an otherwise valid reference. */
static void check_in_place(const char *fmt, const char *s)
{
	struct ref r;
	char *full;

	if (asprintf(&full, fmt, s) < 0)
		abort();
	FUZZ_ASSERT(ref_parse(full, &r, NULL) == 0);
	ref_release(&r);
	free(full);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ref r = { 0 };
	const char *why = NULL;
	char *s;
	int ret;

	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';

	/* Length-delimited: embedded NULs and all. */
	(void)ref_valid_path_component(s, size);

	ret = ref_parse(s, &r, &why);
	FUZZ_ASSERT(ret == 0 || ret == -EINVAL);
	if (ret == 0) {
		check_parsed(&r);
		ref_release(&r);
	} else {
		FUZZ_ASSERT(why != NULL);
		/* out is written only on success */
		FUZZ_ASSERT(!r.registry && !r.repository && !r.tag && !r.digest);
	}
	ref_release(NULL);

	if (ref_valid_tag(s))
		check_in_place("example.com/a:%s", s);
	if (ref_valid_digest(s))
		check_in_place("example.com/a@%s", s);
	if (ref_valid_repository(s) && strlen(s) + strlen("example.com/") <= REF_NAME_MAX)
		check_in_place("example.com/%s", s);
	/* A first component is a registry only when it looks like a host
	 * (Docker's rule); "foo/a" is docker.io/foo/a. */
	if (ref_valid_registry(s) && strlen(s) + 2 <= REF_NAME_MAX &&
	    (strpbrk(s, ".:") || !strcmp(s, "localhost")))
		check_in_place("%s/a", s);
	free(s);
	return 0;
}
