/* simplesign.c - simple-signing payloads and signature annotations. */
#include "simplesign.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The one member of @obj named @key in any case, or NULL (also when two
 * match: a payload that says two things says nothing). */
static json_t *member(json_t *obj, const char *key, const char **why)
{
	json_t *found = NULL, *v;
	const char *k;

	json_object_foreach(obj, k, v) {
		if (strcasecmp(k, key))
			continue;
		if (found) {
			*why = "a claim appears twice";
			return NULL;
		}
		found = v;
	}
	return found;
}

static int claim(json_t *obj, const char *key, char **out, const char **why)
{
	const char *s = json_string_value(member(obj, key, why));

	if (!s) {
		if (!*why)
			*why = "a critical claim is missing or not a string";
		return -EINVAL;
	}
	*out = strdup(s);
	return *out ? 0 : -ENOMEM;
}

int simplesign_parse(const void *buf, size_t len, struct simplesign *out, const char **why)
{
	struct simplesign s = { 0 };
	json_t *root, *crit, *id, *img;
	const char *dummy;
	int ret = -EINVAL;

	if (!why)
		why = &dummy;
	*why = NULL;
	if (len > COSIGN_PAYLOAD_MAX) {
		*why = "payload larger than 64 KiB";
		return -EINVAL;
	}
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root)) {
		*why = "payload is not a JSON object";
		goto out_json;
	}
	crit = member(root, "critical", why);
	if (!json_is_object(crit)) {
		if (!*why)
			*why = "payload has no critical section";
		goto out_json;
	}
	id = member(crit, "identity", why);
	img = member(crit, "image", why);
	if (!json_is_object(id) || !json_is_object(img)) {
		if (!*why)
			*why = "critical identity or image is not an object";
		goto out_json;
	}
	ret = claim(crit, "type", &s.type, why);
	if (ret == 0)
		ret = claim(id, "docker-reference", &s.reference, why);
	if (ret == 0)
		ret = claim(img, "docker-manifest-digest", &s.digest, why);
	if (ret < 0) {
		simplesign_release(&s);
		goto out_json;
	}
	*out = s;
out_json:
	json_decref(root);
	return ret;
}

void simplesign_release(struct simplesign *s)
{
	free(s->type);
	free(s->reference);
	free(s->digest);
	memset(s, 0, sizeof(*s));
}

int annotation_get(const char *annotations, const char *key, char **out)
{
	json_t *root;
	const char *s;
	int ret = -ENODATA;

	if (!annotations)
		return -ENODATA;
	root = json_loads(annotations, 0, NULL);
	if (!json_is_object(root)) {
		json_decref(root);
		return -EINVAL;
	}
	s = json_string_value(json_object_get(root, key));
	if (s) {
		*out = strdup(s);
		ret = *out ? 0 : -ENOMEM;
	}
	json_decref(root);
	return ret;
}
