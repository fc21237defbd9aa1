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

void dsse_release(struct dsse *d)
{
	free(d->payload_type);
	free(d->payload);
	for (size_t i = 0; i < d->n_sigs; i++)
		free(d->sigs[i]);
	memset(d, 0, sizeof(*d));
}

int bundle_dsse_parse(const void *buf, size_t len, struct dsse *out, const char **why)
{
	struct dsse d = { 0 };
	json_t *root, *env, *sigs;
	const char *pt, *pl;
	int ret = -EINVAL;

	*why = NULL;
	if (len > BUNDLE_MAX) {
		*why = "bundle larger than 1 MiB";
		return -EINVAL;
	}
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
	env = json_object_get(root, "dsseEnvelope");
	sigs = json_object_get(env, "signatures");
	pt = json_string_value(json_object_get(env, "payloadType"));
	pl = json_string_value(json_object_get(env, "payload"));
	if (!json_is_object(root)) {
		*why = "bundle is not a JSON object";
		goto out_json;
	}
	if (!json_is_object(env)) {
		*why = "bundle holds no DSSE envelope";
		goto out_json;
	}
	if (!pt || !pl || !json_is_array(sigs)) {
		*why = "DSSE envelope without payloadType, payload or signatures";
		goto out_json;
	}
	ret = -ENOMEM;
	if (!(d.payload_type = strdup(pt)) || !(d.payload = strdup(pl)))
		goto out_release;
	for (size_t i = 0; i < json_array_size(sigs) && d.n_sigs < DSSE_SIGS_MAX; i++) {
		const char *s = json_string_value(json_object_get(json_array_get(sigs, i), "sig"));
		if (!s)
			continue;
		if (!(d.sigs[d.n_sigs] = strdup(s)))
			goto out_release;
		d.n_sigs++;
	}
	*out = d;
	json_decref(root);
	return 0;
out_release:
	dsse_release(&d);
out_json:
	json_decref(root);
	return ret;
}

int intoto_names(const void *buf, size_t len, const char *predicate_type, const char *hex,
		 const char **why)
{
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL), *subj;
	const char *pt = json_string_value(json_object_get(root, "predicateType"));
	int ret = 0;

	*why = NULL;
	subj = json_object_get(root, "subject");
	if (!json_is_object(root) || !json_is_array(subj)) {
		*why = "statement is not an in-toto statement";
		json_decref(root);
		return -EINVAL;
	}
	if (!pt || strcmp(pt, predicate_type)) {
		*why = "statement's predicateType is not cosign's signature";
		goto out_json;
	}
	for (size_t i = 0; i < json_array_size(subj) && !ret; i++) {
		json_t *dg = json_object_get(json_array_get(subj, i), "digest");
		const char *h = json_string_value(json_object_get(dg, "sha256"));
		ret = h && !strcmp(h, hex);
	}
	if (!ret)
		*why = "statement is for another digest";
out_json:
	json_decref(root);
	return ret;
}
