/* mirror.c - mirror lists and their back-off. See mirror.h. */
#include "mirror.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ref.h"

struct entry {
	char origin[256];
	struct mirror_ep ep;
	time_t down_until;	/* mirrors.lock; monotonic seconds */
};

struct mirrors {
	pthread_mutex_t lock;
	long backoff;
	struct entry *v;
	size_t n;
};

static time_t now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* docker.io has two more names; the tree uses this one. */
static const char *canonical(const char *origin)
{
	if (!strcmp(origin, "index.docker.io") || !strcmp(origin, "registry-1.docker.io"))
		return "docker.io";
	return origin;
}

static int parse(const char *spec, struct entry *e, const char **why)
{
	const char *eq = strchr(spec, '='), *url;
	size_t ol;

	memset(e, 0, sizeof(*e));
	if (!eq || eq == spec) {
		*why = "want ORIGIN=URL";
		return -EINVAL;
	}
	ol = (size_t)(eq - spec);
	if (ol >= sizeof(e->origin)) {
		*why = "origin too long";
		return -EINVAL;
	}
	memcpy(e->origin, spec, ol);
	if (canonical(e->origin) != e->origin)
		snprintf(e->origin, sizeof(e->origin), "docker.io");
	if (!ref_valid_registry(e->origin)) {
		*why = "origin is not a registry name";
		return -EINVAL;
	}
	url = eq + 1;
	if (!strncmp(url, "http://", 7)) {
		e->ep.plain = true;
		url += 7;
	} else if (!strncmp(url, "https://", 8)) {
		e->ep.tls = true;
		url += 8;
	}
	size_t al = strcspn(url, "/");
	if (al == 0 || al >= sizeof(e->ep.authority) || (url[al] && strcmp(url + al, "/"))) {
		*why = "mirror URL must be [http[s]://]host[:port] (no path)";
		return -EINVAL;
	}
	memcpy(e->ep.authority, url, al);
	e->ep.authority[al] = '\0';
	if (!ref_valid_registry(e->ep.authority)) {
		*why = "mirror host is not a valid host[:port]";
		return -EINVAL;
	}
	return 0;
}

int mirror_spec_check(const char *spec, const char **why)
{
	struct entry e;

	return parse(spec, &e, why);
}

int mirrors_new(const char *const *specs, long backoff, struct mirrors **out, const char **why)
{
	struct mirrors *m = calloc(1, sizeof(*m));
	size_t n = 0;
	int ret;

	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	m->backoff = backoff > 0 ? backoff : 30;
	while (specs && specs[n])
		n++;
	m->v = calloc(n + 1, sizeof(*m->v));
	if (!m->v) {
		mirrors_free(m);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		ret = parse(specs[i], &m->v[m->n], why);
		if (ret < 0) {
			mirrors_free(m);
			return ret;
		}
		m->n++;
	}
	*out = m;
	return 0;
}

void mirrors_free(struct mirrors *m)
{
	if (!m)
		return;
	pthread_mutex_destroy(&m->lock);
	free(m->v);
	free(m);
}

size_t mirrors_for(struct mirrors *m, const char *origin, struct mirror_ep *out)
{
	size_t k = 0;
	time_t t = now();

	if (!m)
		return 0;
	origin = canonical(origin);
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n && k < MIRRORS_MAX; i++)
		if (!strcmp(m->v[i].origin, origin) && m->v[i].down_until <= t)
			out[k++] = m->v[i].ep;
	pthread_mutex_unlock(&m->lock);
	return k;
}

bool mirrors_each(struct mirrors *m, size_t i, struct mirror_ep *out)
{
	if (!m || i >= m->n)
		return false;
	*out = m->v[i].ep;
	return true;
}

void mirrors_failed(struct mirrors *m, const char *authority)
{
	time_t until = now() + m->backoff;

	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->v[i].ep.authority, authority))
			m->v[i].down_until = until;
	pthread_mutex_unlock(&m->lock);
}
