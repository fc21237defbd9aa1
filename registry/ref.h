/* ref.h - OCI/Docker image references.
 *
 * A reference is "[registry/]repository[:tag][@digest]", parsed and
 * normalized the way Docker does it:
 *   ubuntu                 -> docker.io/library/ubuntu:latest
 *   localhost:5000/a/b:1   -> registry "localhost:5000", repository "a/b", tag "1"
 *   index.docker.io/x/y    -> docker.io/x/y:latest
 * Components are validated against the distribution grammar.
 */
#ifndef OCIFS_REF_H
#define OCIFS_REF_H

#include <stdbool.h>
#include <stddef.h>

#define REF_NAME_MAX 255	/* registry + "/" + repository, as Docker limits */
#define REF_TAG_MAX 128

struct ref {
	char *registry;		/* "docker.io", "ghcr.io", "127.0.0.1:5000" */
	char *repository;	/* "library/ubuntu" */
	char *tag;		/* NULL when only a digest was given */
	char *digest;		/* "sha256:<64 hex>" or NULL */
};

/* Parse and normalize @s into @out. Returns 0, -EINVAL for a malformed
 * reference or -ENOMEM. @out is written only on success; release it with
 * ref_release(). When @why is not NULL it receives a static explanation. */
int ref_parse(const char *s, struct ref *out, const char **why);
void ref_release(struct ref *r);

/* Validators for single components; no normalization. */
bool ref_valid_registry(const char *s);
bool ref_valid_path_component(const char *s, size_t len);
bool ref_valid_repository(const char *s);
bool ref_valid_tag(const char *s);
bool ref_valid_digest(const char *s);	/* sha256 only: what we can verify */

/* True when plain HTTP is the default for @registry ("host[:port]"):
 * "localhost", an IPv4 literal in 127.0.0.0/8, or [::1]. Names that only
 * look like one ("127.evil.test") are not. */
bool ref_registry_is_loopback(const char *registry);

/* The host actually contacted for @registry ("docker.io" ->
 * "registry-1.docker.io"); borrowed static or @registry itself. */
const char *ref_registry_endpoint(const char *registry);

/* The repository name as the registry knows it: Docker Hub's single
 * component names get "library/". Caller frees. NULL on ENOMEM. */
char *ref_registry_repository(const char *registry, const char *repository);

#endif
