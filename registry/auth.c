/* auth.c - credentials from docker/podman files and helpers; challenges. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- WWW-Authenticate ---- */

static bool is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_t68char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("-._~+/", c));
}

static const char *skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

static size_t tchar_run(const char *p)
{
	size_t n = 0;

	while (is_tchar(p[n]))
		n++;
	return n;
}

/* Does an auth-param ("name = value") start at @p? Distinguishes it from
 * a token68 ("abc==") and from the next challenge's scheme. */
static bool looks_like_param(const char *p)
{
	size_t n = tchar_run(p);

	if (n == 0)
		return false;
	p = skip_ows(p + n);
	if (*p != '=')
		return false;
	p = skip_ows(p + 1);
	return *p && *p != '=' && *p != ',';
}

/* A token or quoted-string at *@pp into a new string; advances *@pp. */
static int parse_value(const char **pp, char **out)
{
	const char *p = *pp;
	char *v, *w;

	if (*p != '"') {
		size_t n = tchar_run(p);
		if (n == 0)
			return -EINVAL;
		if (!(*out = strndup(p, n)))
			return -ENOMEM;
		*pp = p + n;
		return 0;
	}
	p++;
	/* The unquoted value is never longer than the quoted one. */
	v = malloc(strlen(p) + 1);
	if (!v)
		return -ENOMEM;
	w = v;
	for (;; p++) {
		if (*p == '\0') {
			free(v);
			return -EINVAL;	/* unterminated */
		}
		if (*p == '"')
			break;
		if (*p == '\\') {
			p++;
			if (*p == '\0') {
				free(v);
				return -EINVAL;
			}
		}
		*w++ = *p;
	}
	*w = '\0';
	*out = v;
	*pp = p + 1;
	return 0;
}

static int push_challenge(struct auth_challenges *c, const char *scheme, size_t n)
{
	struct auth_challenge *v;

	if (c->n >= AUTH_CHALLENGES_MAX)
		return -E2BIG;
	v = realloc(c->v, (c->n + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	c->v = v;
	memset(&v[c->n], 0, sizeof(v[c->n]));
	if (!(v[c->n].scheme = strndup(scheme, n)))
		return -ENOMEM;
	c->n++;
	return 0;
}

static int parse_param(const char **pp, struct auth_challenge *ch)
{
	const char *p = *pp;
	size_t n = tchar_run(p);
	struct auth_param *v;
	char *name, *value = NULL;
	int ret;

	if (ch->n_params >= AUTH_PARAMS_MAX)
		return -E2BIG;
	name = strndup(p, n);
	if (!name)
		return -ENOMEM;
	for (char *q = name; *q; q++)
		if (*q >= 'A' && *q <= 'Z')
			*q = (char)(*q - 'A' + 'a');
	p = skip_ows(skip_ows(p + n) + 1);	/* past '=' */
	ret = parse_value(&p, &value);
	if (ret < 0)
		goto out_free;
	ret = -ENOMEM;
	v = realloc(ch->params, (ch->n_params + 1) * sizeof(*v));
	if (!v)
		goto out_free;
	ch->params = v;
	v[ch->n_params].name = name;
	v[ch->n_params].value = value;
	ch->n_params++;
	*pp = p;
	return 0;
out_free:
	free(name);
	free(value);
	return ret;
}

/* challenge = scheme [ 1*SP ( token68 / #auth-param ) ], a comma list of
 * them; commas also separate parameters, so after each comma we look
 * ahead to tell a parameter from the next scheme. */
int auth_challenges_parse(const char *s, struct auth_challenges *out)
{
	struct auth_challenges c = { 0 };
	const char *p = s;
	int ret;

	for (;;) {
		struct auth_challenge *ch;
		size_t n;

		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		n = tchar_run(p);
		if (n == 0) {
			ret = -EINVAL;
			goto out_free;
		}
		ret = push_challenge(&c, p, n);
		if (ret < 0)
			goto out_free;
		ch = &c.v[c.n - 1];
		p += n;
		if (*p && *p != ' ' && *p != '\t' && *p != ',') {
			ret = -EINVAL;
			goto out_free;
		}
		p = skip_ows(p);
		if (*p && *p != ',' && !looks_like_param(p)) {
			/* token68: only as the whole of a challenge's data */
			const char *q = p;
			while (is_t68char(*q))
				q++;
			while (*q == '=')
				q++;
			if (q == p || (*skip_ows(q) && *skip_ows(q) != ',')) {
				ret = -EINVAL;
				goto out_free;
			}
			if (!(ch->token68 = strndup(p, (size_t)(q - p)))) {
				ret = -ENOMEM;
				goto out_free;
			}
			p = skip_ows(q);
			continue;
		}
		for (;;) {
			const char *q;

			if (looks_like_param(p)) {
				ret = parse_param(&p, ch);
				if (ret < 0)
					goto out_free;
				p = skip_ows(p);
			}
			if (!*p)
				break;
			if (*p != ',') {
				ret = -EINVAL;
				goto out_free;
			}
			q = p;
			while (*q == ',' || *q == ' ' || *q == '\t')
				q++;
			if (!looks_like_param(q))
				break;	/* the next challenge, or the end */
			p = q;
		}
	}
	*out = c;
	return 0;
out_free:
	auth_challenges_release(&c);
	return ret;
}

void auth_challenges_release(struct auth_challenges *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		struct auth_challenge *ch = &c->v[i];
		for (size_t j = 0; j < ch->n_params; j++) {
			free(ch->params[j].name);
			free(ch->params[j].value);
		}
		free(ch->params);
		free(ch->scheme);
		free(ch->token68);
	}
	free(c->v);
	c->v = NULL;
	c->n = 0;
}

const struct auth_challenge *auth_challenge_find(const struct auth_challenges *c,
						 const char *scheme)
{
	for (size_t i = 0; i < c->n; i++)
		if (!strcasecmp(c->v[i].scheme, scheme))
			return &c->v[i];
	return NULL;
}

const char *auth_challenge_param(const struct auth_challenge *c, const char *name)
{
	for (size_t i = 0; c && i < c->n_params; i++)
		if (!strcasecmp(c->params[i].name, name))
			return c->params[i].value;
	return NULL;
}

/* ---- base64 ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *auth_base64_encode(const void *data, size_t len)
{
	const unsigned char *p = data;
	char *out, *w;

	if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
		return NULL;
	out = malloc((len + 2) / 3 * 4 + 1);
	if (!out)
		return NULL;
	w = out;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		*w++ = b64[(v >> 18) & 63];
		*w++ = b64[(v >> 12) & 63];
		*w++ = i + 1 < len ? b64[(v >> 6) & 63] : '=';
		*w++ = i + 2 < len ? b64[v & 63] : '=';
	}
	*w = '\0';
	return out;
}

static int b64_value(char c)
{
	const char *q = c ? strchr(b64, c) : NULL;

	return q ? (int)(q - b64) : -1;
}

int auth_base64_decode(const char *s, char **out, size_t *out_len)
{
	size_t n = strlen(s), len = 0;
	uint32_t acc = 0;
	int bits = 0;
	char *buf;

	while (n && s[n - 1] == '=')
		n--;
	if (n % 4 == 1 || strlen(s) - n > 2)
		return -EINVAL;
	buf = malloc(n / 4 * 3 + 3);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int v = b64_value(s[i]);
		if (v < 0) {
			free(buf);
			return -EINVAL;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[len++] = (char)((acc >> bits) & 0xff);
		}
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;
}

int auth_basic_header(const struct auth_cred *c, char **out)
{
	char *pair = NULL, *enc, *h;
	int ret = -ENOMEM;

	if (!c->username || !c->password)
		return -EINVAL;
	if (asprintf(&pair, "%s:%s", c->username, c->password) < 0)
		return -ENOMEM;
	enc = auth_base64_encode(pair, strlen(pair));
	if (enc && asprintf(&h, "Basic %s", enc) >= 0) {
		*out = h;
		ret = 0;
	}
	/* The pair is a secret: do not leave it in freed memory. */
	explicit_bzero(pair, strlen(pair));
	free(pair);
	if (enc)
		explicit_bzero(enc, strlen(enc));
	free(enc);
	return ret;
}

/* ---- key matching ---- */

static bool is_docker_hub(const char *host, size_t n)
{
	static const char *const names[] = { "docker.io", "index.docker.io",
					     "registry-1.docker.io" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == n && !strncasecmp(host, names[i], n))
			return true;
	return false;
}

static bool host_eq(const char *a, size_t an, const char *b, size_t bn)
{
	if (is_docker_hub(a, an) && is_docker_hub(b, bn))
		return true;
	return an == bn && !strncasecmp(a, b, an);
}

const char *auth_server_url(const char *registry)
{
	if (is_docker_hub(registry, strlen(registry)))
		return "https://index.docker.io/v1/";
	return registry;
}

int auth_key_match(const char *key, const char *registry, const char *repository)
{
	const char *host = key, *slash, *path;
	bool scheme = false;
	size_t hn, pn;

	if (!strncasecmp(key, "https://", 8)) {
		host = key + 8;
		scheme = true;
	} else if (!strncasecmp(key, "http://", 7)) {
		host = key + 7;
		scheme = true;
	}
	slash = strchr(host, '/');
	hn = slash ? (size_t)(slash - host) : strlen(host);
	if (hn == 0 || !host_eq(host, hn, registry, strlen(registry)))
		return -1;
	path = slash ? slash + 1 : "";
	pn = strlen(path);
	while (pn && path[pn - 1] == '/')
		pn--;
	/* docker keys are hosts whatever their path ("https://host/v1/");
	 * podman's scheme-less keys with a path are repository namespaces. */
	if (scheme || pn == 0 || (pn == 2 && (!strncmp(path, "v1", 2) || !strncmp(path, "v2", 2))))
		return 0;
	if (!repository || strncmp(repository, path, pn) != 0 ||
	    (repository[pn] != '\0' && repository[pn] != '/'))
		return -1;
	return (int)pn;
}

/* ---- credentials ---- */

void auth_cred_release(struct auth_cred *c)
{
	if (!c)
		return;
	if (c->password)
		explicit_bzero(c->password, strlen(c->password));
	if (c->identitytoken)
		explicit_bzero(c->identitytoken, strlen(c->identitytoken));
	free(c->username);
	free(c->password);
	free(c->identitytoken);
	memset(c, 0, sizeof(*c));
}

static void why_add(char *why, size_t why_len, const char *fmt, ...)
{
	size_t n;
	va_list ap;

	if (!why || !why_len)
		return;
	n = strlen(why);
	if (n && n + 2 < why_len) {
		memcpy(why + n, "; ", 3);
		n += 2;
	}
	if (n + 1 >= why_len)
		return;
	va_start(ap, fmt);
	vsnprintf(why + n, why_len - n, fmt, ap);
	va_end(ap);
}

static int read_capped(const char *path, size_t max, char **out, size_t *out_len)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out_close;
	}
	ret = -EFBIG;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max)
		goto out_close;
	ret = -ENOMEM;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		goto out_close;
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out_free;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	close(fd);
	return 0;
out_free:
	free(buf);
out_close:
	close(fd);
	return ret;
}

static bool helper_name_ok(const char *s)
{
	if (!*s || strlen(s) > 64)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

static long ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Write @s to @fd, a pipe whose reader may be gone: a thread-local block
 * of SIGPIPE keeps the signal from killing us, and a pending one is
 * consumed before the mask is restored. */
static int write_pipe(int fd, const char *s, size_t n)
{
	sigset_t pipe_set, old;
	int ret = 0;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	while (n) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			ret = -errno;
			break;
		}
		s += w;
		n -= (size_t)w;
	}
	if (ret == -EPIPE) {
		struct timespec zero = { 0, 0 };
		sigtimedwait(&pipe_set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ret;
}

/* Run "docker-credential-<name> get" with @input on stdin; its stdout
 * (NUL-terminated, at most AUTH_HELPER_OUT_MAX bytes) into *@out and its
 * exit status into *@status. The helper gets no stderr and no fds of
 * ours beyond the two pipes. */
static int helper_run(const char *name, const char *input, unsigned timeout_ms, char **out,
		      int *status)
{
	posix_spawn_file_actions_t fa;
	char prog[96], *argv[3];
	int in[2] = { -1, -1 }, outp[2] = { -1, -1 };
	struct timespec t0;
	char *buf = NULL;
	size_t len = 0;
	pid_t pid = -1;
	int ret, st = 0;

	snprintf(prog, sizeof(prog), "docker-credential-%s", name);
	argv[0] = prog;
	argv[1] = (char *)"get";
	argv[2] = NULL;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(outp, O_CLOEXEC) < 0) {
		ret = -errno;
		goto out_close;
	}
	ret = -ENOMEM;
	buf = malloc(AUTH_HELPER_OUT_MAX + 1);
	if (!buf)
		goto out_close;
	if (posix_spawn_file_actions_init(&fa) != 0)
		goto out_close;
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	ret = -posix_spawnp(&pid, prog, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (ret < 0) {
		pid = -1;
		goto out_close;
	}
	close(in[0]);
	close(outp[1]);
	in[0] = outp[1] = -1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	write_pipe(in[1], input, strlen(input));	/* EPIPE: it will say why */
	close(in[1]);
	in[1] = -1;
	for (;;) {
		struct pollfd pfd = { .fd = outp[0], .events = POLLIN };
		long left = (long)timeout_ms - ms_since(&t0);
		ssize_t n;

		if (left <= 0) {
			ret = -ETIMEDOUT;
			goto out_kill;
		}
		if (poll(&pfd, 1, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			goto out_kill;
		}
		if (pfd.revents == 0)
			continue;
		n = read(outp[0], buf + len, AUTH_HELPER_OUT_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out_kill;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == AUTH_HELPER_OUT_MAX) {
			ret = -EFBIG;
			goto out_kill;
		}
	}
	buf[len] = '\0';
	/* Its stdout is closed; give it the rest of the time to exit. */
	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);
		struct timespec ms10 = { 0, 10000000 };

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			ret = -errno;
			goto out_kill;
		}
		if (ms_since(&t0) >= (long)timeout_ms) {
			ret = -ETIMEDOUT;
			goto out_kill;
		}
		nanosleep(&ms10, NULL);
	}
	pid = -1;
	*out = buf;
	buf = NULL;
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	ret = 0;
	goto out_close;
out_kill:
	kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	pid = -1;
out_close:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (outp[i] >= 0)
			close(outp[i]);
	}
	if (buf)
		explicit_bzero(buf, len);
	free(buf);
	return ret;
}

/* Ask credential helper @name for @registry's credentials. */
static int helper_get(const struct auth_opts *o, const char *name, const char *registry,
		      struct auth_cred *out, char *why, size_t why_len)
{
	unsigned timeout = o->helper_timeout_ms ? o->helper_timeout_ms : AUTH_HELPER_TIMEOUT_MS;
	const char *user, *secret;
	char *text = NULL;
	json_t *root = NULL;
	int status = 0, ret;

	if (!helper_name_ok(name)) {
		why_add(why, why_len, "credential helper name \"%.64s\" refused", name);
		return -EINVAL;
	}
	ret = helper_run(name, auth_server_url(registry), timeout, &text, &status);
	if (ret < 0) {
		why_add(why, why_len, "docker-credential-%s: %s", name,
			ret == -ENOENT ? "not found on PATH" : strerror(-ret));
		return ret;
	}
	if (status != 0) {
		/* The protocol's "no such entry" answer is not an error. */
		if (strstr(text, "credentials not found")) {
			ret = -ENOENT;
		} else if (status == 127) {
			/* what a spawn that could not exec reports on some systems */
			why_add(why, why_len, "docker-credential-%s: not found on PATH", name);
			ret = -ENOENT;
		} else {
			why_add(why, why_len, "docker-credential-%s get failed (exit status %d)",
				name, status);
			ret = -EIO;
		}
		goto out_free;
	}
	root = json_loads(text, 0, NULL);
	user = json_string_value(json_object_get(root, "Username"));
	secret = json_string_value(json_object_get(root, "Secret"));
	if (!user || !secret || !*secret) {
		why_add(why, why_len, "docker-credential-%s: malformed answer", name);
		ret = -EIO;
		goto out_free;
	}
	memset(out, 0, sizeof(*out));
	ret = -ENOMEM;
	/* docker's convention: an identity token comes as user "<token>". */
	if (!strcmp(user, "<token>")) {
		if (!(out->identitytoken = strdup(secret)))
			goto out_free;
	} else if (!(out->username = strdup(user)) || !(out->password = strdup(secret))) {
		auth_cred_release(out);
		goto out_free;
	}
	snprintf(out->source, sizeof(out->source), "docker-credential-%s", name);
	ret = 0;
out_free:
	json_decref(root);
	if (text)
		explicit_bzero(text, strlen(text));
	free(text);
	return ret;
}

/* An "auths" entry into @out; -ENOENT if it holds nothing usable. */
static int entry_cred(json_t *e, const char *path, struct auth_cred *out)
{
	const char *auth = json_string_value(json_object_get(e, "auth"));
	const char *user = json_string_value(json_object_get(e, "username"));
	const char *pass = json_string_value(json_object_get(e, "password"));
	const char *idt = json_string_value(json_object_get(e, "identitytoken"));
	struct auth_cred c = { 0 };
	char *dec = NULL;
	size_t dlen;
	int ret;

	if (auth && *auth) {
		char *colon;
		ret = auth_base64_decode(auth, &dec, &dlen);
		if (ret < 0)
			return ret;
		colon = strchr(dec, ':');
		if (!colon || strlen(dec) != dlen) {
			ret = -EINVAL;
			goto out_free;
		}
		*colon = '\0';
		user = dec;
		pass = colon + 1;
	}
	if (idt && !*idt)
		idt = NULL;
	if (pass && !*pass)
		pass = NULL;
	ret = -ENOENT;
	if (!idt && (!user || !*user || !pass))
		goto out_free;
	ret = -ENOMEM;
	if (user && *user && !(c.username = strdup(user)))
		goto out_free;
	if (pass && !(c.password = strdup(pass)))
		goto out_free;
	if (idt && !(c.identitytoken = strdup(idt)))
		goto out_free;
	snprintf(c.source, sizeof(c.source), "%s", path);
	*out = c;
	memset(&c, 0, sizeof(c));
	ret = 0;
out_free:
	auth_cred_release(&c);
	if (dec) {
		explicit_bzero(dec, dlen);
		free(dec);
	}
	return ret;
}

static int lookup_file(const struct auth_opts *o, const char *path, const char *registry,
		       const char *repository, struct auth_cred *out, char *why, size_t why_len)
{
	json_t *root, *helpers, *auths, *v, *best = NULL;
	const char *key, *store;
	int best_score = -1;
	char *text = NULL;
	size_t len = 0;
	int ret;

	ret = read_capped(path, AUTH_FILE_MAX, &text, &len);
	if (ret == -ENOENT || ret == -ENOTDIR)
		return -ENOENT;
	if (ret < 0) {
		why_add(why, why_len, "%s: %s", path,
			ret == -EFBIG ? "not a regular file of at most 1 MiB" : strerror(-ret));
		return ret;
	}
	root = json_loadb(text, len, 0, NULL);
	explicit_bzero(text, len);
	free(text);
	if (!json_is_object(root)) {
		why_add(why, why_len, "%s: not a JSON object", path);
		json_decref(root);
		return -EINVAL;
	}
	helpers = json_object_get(root, "credHelpers");
	json_object_foreach(helpers, key, v) {
		if (json_is_string(v) && auth_key_match(key, registry, NULL) >= 0) {
			ret = helper_get(o, json_string_value(v), registry, out, why, why_len);
			if (ret != -ENOENT)
				goto out_root;
			break;
		}
	}
	store = json_string_value(json_object_get(root, "credsStore"));
	if (store && *store) {
		ret = helper_get(o, store, registry, out, why, why_len);
		if (ret != -ENOENT)
			goto out_root;
	}
	/* Falling back to "auths" behind a store costs nothing: with a store
	 * its entries are empty. The most specific key with credentials wins. */
	auths = json_object_get(root, "auths");
	json_object_foreach(auths, key, v) {
		int score = auth_key_match(key, registry, repository);
		struct auth_cred c;
		if (score <= best_score || !json_is_object(v))
			continue;
		ret = entry_cred(v, path, &c);
		if (ret == -EINVAL)
			why_add(why, why_len, "%s: malformed \"auth\" for %.100s", path, key);
		if (ret < 0)
			continue;
		auth_cred_release(&c);
		best = v;
		best_score = score;
	}
	ret = best ? entry_cred(best, path, out) : -ENOENT;
out_root:
	json_decref(root);
	return ret;
}

static char *home_dir(void)
{
	const char *h = getenv("HOME");
	struct passwd pw, *res = NULL;
	char buf[4096];

	if (h && *h)
		return strdup(h);
	if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) == 0 && res && res->pw_dir)
		return strdup(res->pw_dir);
	return NULL;
}

/* The files auth_lookup() reads, in order, into @paths (caller frees):
 * containers-auth.json(5)'s search order, then Docker's. */
static size_t auth_files(const struct auth_opts *o, char *paths[AUTH_FILES_MAX])
{
	const char *e;
	char *home = NULL;
	size_t n = 0;

	if (o->authfile) {
		paths[n] = strdup(o->authfile);
		return paths[n] ? 1 : 0;
	}
	home = home_dir();
	if ((e = getenv("REGISTRY_AUTH_FILE")) && *e)
		paths[n++] = strdup(e);
	if ((e = getenv("XDG_RUNTIME_DIR")) && *e &&
	    asprintf(&paths[n], "%s/containers/auth.json", e) >= 0)
		n++;
	/* Where podman logs in as root without XDG_RUNTIME_DIR (sudo, cron,
	 * systemd units). */
	if (asprintf(&paths[n], "%s/containers/%u/auth.json", AUTH_RUN_DIR,
		     (unsigned)getuid()) >= 0)
		n++;
	if ((e = getenv("XDG_CONFIG_HOME")) && *e) {
		if (asprintf(&paths[n], "%s/containers/auth.json", e) >= 0)
			n++;
	} else if (home && asprintf(&paths[n], "%s/.config/containers/auth.json", home) >= 0) {
		n++;
	}
	if ((e = getenv("DOCKER_CONFIG")) && *e) {
		if (asprintf(&paths[n], "%s/config.json", e) >= 0)
			n++;
	} else if (home && asprintf(&paths[n], "%s/.docker/config.json", home) >= 0) {
		n++;
	}
	free(home);
	return n;
}

int auth_lookup(const struct auth_opts *o, const char *registry, const char *repository,
		struct auth_cred *out, char *why, size_t why_len)
{
	char *paths[AUTH_FILES_MAX] = { 0 };
	size_t n = auth_files(o, paths);
	struct auth_cred c = { 0 };
	int ret = -ENOENT;

	if (why && why_len)
		why[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (!paths[i])
			continue;
		ret = lookup_file(o, paths[i], registry, repository, &c, why, why_len);
		if (ret == 0 || ret == -ENOMEM)
			break;
		ret = -ENOENT;
	}
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	if (ret == 0)
		*out = c;
	return ret;
}
