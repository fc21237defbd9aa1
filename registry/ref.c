/* ref.c - reference parsing, following distribution/reference's grammar. */
#include "ref.h"

#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_alnum_lower(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* path-component := [a-z0-9]+ (separator [a-z0-9]+)*
 * separator := [_.] | "__" | [-]+ */
bool ref_valid_path_component(const char *s, size_t len)
{
	size_t i = 0;

	if (len == 0 || !is_alnum_lower(s[0]) || !is_alnum_lower(s[len - 1]))
		return false;
	while (i < len) {
		if (is_alnum_lower(s[i])) {
			i++;
			continue;
		}
		size_t j = i;
		if (s[i] == '.') {
			j++;
		} else if (s[i] == '_') {
			j++;
			if (j < len && s[j] == '_')
				j++;
		} else if (s[i] == '-') {
			while (j < len && s[j] == '-')
				j++;
		} else {
			return false;
		}
		if (j >= len || !is_alnum_lower(s[j]))
			return false;
		i = j;
	}
	return true;
}

bool ref_valid_repository(const char *s)
{
	size_t n = strlen(s);
	const char *p = s;

	if (n == 0 || n > REF_NAME_MAX)
		return false;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (!ref_valid_path_component(p, len))
			return false;
		if (!slash)
			return true;
		p = slash + 1;
	}
}

/* tag := [\w][\w.-]{0,127} */
bool ref_valid_tag(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > REF_TAG_MAX)
		return false;
	if (!(isalnum((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(isalnum(c) || c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

bool ref_valid_digest(const char *s)
{
	if (strncmp(s, "sha256:", 7) != 0)
		return false;
	s += 7;
	for (int i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[64] == '\0';
}

static bool valid_port(const char *p)
{
	size_t n = strlen(p);

	if (n == 0 || n > 5)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)p[i]))
			return false;
	return atoi(p) <= 65535;
}

/* host := domain-name | IPv4 | "[" IPv6 "]", then optional ":" port.
 * domain components: [a-zA-Z0-9] ([a-zA-Z0-9-]* [a-zA-Z0-9])? */
bool ref_valid_registry(const char *s)
{
	size_t n = strlen(s);
	const char *port = NULL;

	if (n == 0 || n > REF_NAME_MAX)
		return false;
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end == s + 1)
			return false;
		for (const char *p = s + 1; p < end; p++)
			if (!(isxdigit((unsigned char)*p) || *p == ':' || *p == '.'))
				return false;
		if (end[1] == '\0')
			return true;
		return end[1] == ':' && valid_port(end + 2);
	}
	port = strchr(s, ':');
	if (port && !valid_port(port + 1))
		return false;
	size_t hlen = port ? (size_t)(port - s) : n;
	size_t start = 0;
	if (hlen == 0)
		return false;
	for (size_t i = 0; i <= hlen; i++) {
		if (i < hlen && s[i] != '.') {
			unsigned char c = (unsigned char)s[i];
			/* Host names are case-insensitive; we want one spelling. */
			if (!(islower(c) || isdigit(c) || c == '-'))
				return false;
			continue;
		}
		/* end of a label: s[start..i) */
		if (i == start || s[start] == '-' || s[i - 1] == '-')
			return false;
		start = i + 1;
	}
	return true;
}

bool ref_registry_is_loopback(const char *registry)
{
	char host[64];
	struct in_addr a4;
	struct in6_addr a6;
	const char *end;
	size_t n;

	/* By address, never by text: "127.evil.test" is a name that resolves
	 * wherever its owner likes. */
	if (registry[0] == '[') {
		end = strchr(registry, ']');
		n = end ? (size_t)(end - registry - 1) : 0;
		if (!end || n >= sizeof(host) || (end[1] && end[1] != ':'))
			return false;
		memcpy(host, registry + 1, n);
		host[n] = '\0';
		return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
	}
	n = strcspn(registry, ":");
	if (n >= sizeof(host))
		return false;
	memcpy(host, registry, n);
	host[n] = '\0';
	if (!strcmp(host, "localhost"))
		return true;
	return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

const char *ref_registry_endpoint(const char *registry)
{
	if (strcmp(registry, "docker.io") == 0)
		return "registry-1.docker.io";
	return registry;
}

char *ref_registry_repository(const char *registry, const char *repository)
{
	char *s;

	if (strcmp(registry, "docker.io") == 0 && !strchr(repository, '/')) {
		if (asprintf(&s, "library/%s", repository) < 0)
			return NULL;
		return s;
	}
	return strdup(repository);
}

/* Docker's rule: the first component is a registry when it has a '.' or
 * ':' or is "localhost", or contains upper case (names never do). */
static bool looks_like_registry(const char *s, size_t len)
{
	if (len == 9 && strncmp(s, "localhost", 9) == 0)
		return true;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '.' || s[i] == ':' || isupper((unsigned char)s[i]))
			return true;
	return false;
}

int ref_parse(const char *s, struct ref *out, const char **why)
{
	const char *dummy;
	char *buf, *name, *at, *tag = NULL, *reg, *repo;
	struct ref r = { 0 };
	int ret = -EINVAL;

	if (!why)
		why = &dummy;
	*why = NULL;
	if (!s || !*s) {
		*why = "empty reference";
		return -EINVAL;
	}
	if (strlen(s) > 2 * REF_NAME_MAX) {
		*why = "reference too long";
		return -EINVAL;
	}
	buf = strdup(s);
	if (!buf)
		return -ENOMEM;
	name = buf;

	at = strchr(name, '@');
	if (at) {
		*at++ = '\0';
		if (!ref_valid_digest(at)) {
			*why = "invalid digest (want sha256:<64 lowercase hex>)";
			goto out_free;
		}
	}
	/* A ':' after the last '/' separates the tag. */
	char *slash = strrchr(name, '/');
	char *colon = strrchr(slash ? slash : name, ':');
	if (colon) {
		*colon = '\0';
		tag = colon + 1;
		if (!ref_valid_tag(tag)) {
			*why = "invalid tag";
			goto out_free;
		}
	}
	char *first = strchr(name, '/');
	if (first && looks_like_registry(name, (size_t)(first - name))) {
		*first = '\0';
		reg = name;
		repo = first + 1;
		if (!ref_valid_registry(reg)) {
			*why = "invalid registry host (lowercase host name or IP, optional :port)";
			goto out_free;
		}
	} else {
		reg = "docker.io";
		repo = name;
	}
	if (strcmp(reg, "index.docker.io") == 0 ||
	    strcmp(reg, "registry-1.docker.io") == 0)
		reg = "docker.io";
	if (!ref_valid_repository(repo)) {
		*why = "invalid repository name (lowercase letters, digits and separators)";
		goto out_free;
	}
	ret = -ENOMEM;
	r.registry = strdup(reg);
	if (strcmp(reg, "docker.io") == 0 && !strchr(repo, '/')) {
		if (asprintf(&r.repository, "library/%s", repo) < 0)
			r.repository = NULL;
	} else {
		r.repository = strdup(repo);
	}
	if (tag)
		r.tag = strdup(tag);
	else if (!at)
		r.tag = strdup("latest");
	if (at)
		r.digest = strdup(at);
	if (!r.registry || !r.repository || (!r.tag && !at) || (at && !r.digest)) {
		ref_release(&r);
		goto out_free;
	}
	/* The normalized name counts, as in Docker: "docker.io/library/" is
	 * part of a short name's length. */
	if (strlen(r.registry) + 1 + strlen(r.repository) > REF_NAME_MAX) {
		*why = "repository name too long";
		ref_release(&r);
		ret = -EINVAL;
		goto out_free;
	}
	*out = r;
	ret = 0;
out_free:
	free(buf);
	return ret;
}

void ref_release(struct ref *r)
{
	if (!r)
		return;
	free(r->registry);
	free(r->repository);
	free(r->tag);
	free(r->digest);
	memset(r, 0, sizeof(*r));
}
