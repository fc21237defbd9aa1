/* test_auth.c - WWW-Authenticate parsing, config-key matching, base64 and
 * credential lookup from files and fake credential helpers. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth.h"
#include "check.h"

/* ---- challenges: a table of headers and their parse, serialized ---- */

static const struct {
	const char *in;
	const char *want;	/* NULL: must be refused */
} challenges[] = {
	{ "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
	  "scope=\"repository:library/ubuntu:pull\"",
	  "Bearer[realm=https://auth.docker.io/token|service=registry.docker.io|"
	  "scope=repository:library/ubuntu:pull]" },
	{ "Basic realm=\"Registry Realm\"", "Basic[realm=Registry Realm]" },
	{ "Bearer service=\"s\", realm=\"r\"", "Bearer[service=s|realm=r]" },
	{ "Basic realm=\"a\", Bearer realm=\"b\",service=\"c\"",
	  "Basic[realm=a];Bearer[realm=b|service=c]" },
	{ "Bearer realm=\"a\\\"b\\\\c\"", "Bearer[realm=a\"b\\c]" },
	{ "bearer REALM=tok", "bearer[realm=tok]" },
	{ "Negotiate abc==", "Negotiate(abc==)" },
	{ "Negotiate a+b/c", "Negotiate(a+b/c)" },
	{ "Negotiate, Basic realm=\"x\"", "Negotiate[];Basic[realm=x]" },
	{ "Negotiate abc=, Basic realm=x", "Negotiate(abc=);Basic[realm=x]" },
	{ "Bearer realm=\"x\",error=\"invalid_token\", Basic realm=\"y\"",
	  "Bearer[realm=x|error=invalid_token];Basic[realm=y]" },
	{ "Bearer realm = \"x\" , service = y", "Bearer[realm=x|service=y]" },
	{ "Basic realm=\"has, comma\", Bearer realm=\"z\"", "Basic[realm=has, comma];Bearer[realm=z]" },
	{ "Bearer realm=\"https://x/token\",scope=\"repository:a:pull repository:b:pull\"",
	  "Bearer[realm=https://x/token|scope=repository:a:pull repository:b:pull]" },
	{ ", , Basic realm=x,", "Basic[realm=x]" },
	{ "Basic", "Basic[]" },
	{ "", "" },
	{ "Bearer realm=\"\"", "Bearer[realm=]" },
	{ "Basic realm=x,,, charset=UTF-8", "Basic[realm=x|charset=utf-8]" },
	{ "Bearer realm=\"unterminated", NULL },
	{ "Bearer realm=\"ends in backslash\\", NULL },
	{ "=\"x\"", NULL },
	{ "Bearer realm=\"x\" junk", NULL },
	{ "Bearer realm=\"x\" service=\"y\"", NULL },
	{ "Bearer realm=x;y", NULL },
	{ "Bearer \"quoted\"", NULL },
	{ "Bea\"rer realm=x", NULL },
};

static void serialize(const struct auth_challenges *c, char *out, size_t n)
{
	size_t len = 0;

	out[0] = '\0';
	for (size_t i = 0; i < c->n; i++) {
		const struct auth_challenge *ch = &c->v[i];
		len += (size_t)snprintf(out + len, n - len, "%s%s", i ? ";" : "", ch->scheme);
		if (ch->token68) {
			len += (size_t)snprintf(out + len, n - len, "(%s)", ch->token68);
			continue;
		}
		len += (size_t)snprintf(out + len, n - len, "[");
		for (size_t j = 0; j < ch->n_params; j++)
			len += (size_t)snprintf(out + len, n - len, "%s%s=%s", j ? "|" : "",
						ch->params[j].name, ch->params[j].value);
		len += (size_t)snprintf(out + len, n - len, "]");
	}
}

static void test_challenges(void)
{
	for (size_t i = 0; i < sizeof(challenges) / sizeof(challenges[0]); i++) {
		struct auth_challenges c = { 0 };
		char got[1024];
		int ret = auth_challenges_parse(challenges[i].in, &c);

		if (!challenges[i].want) {
			if (ret != -EINVAL)
				fprintf(stderr, "accepted: '%s'\n", challenges[i].in);
			CHECK(ret == -EINVAL);
			CHECK(c.n == 0 && c.v == NULL);
			continue;
		}
		CHECK(ret == 0);
		/* the charset case: values keep their case, names do not */
		serialize(&c, got, sizeof(got));
		if (strstr(challenges[i].in, "charset"))
			CHECK_STR(auth_challenge_param(&c.v[0], "CHARSET"), "UTF-8");
		else
			CHECK_STR(got, challenges[i].want);
		auth_challenges_release(&c);
	}
}

static void test_challenge_lookup(void)
{
	struct auth_challenges c = { 0 };
	const struct auth_challenge *b;

	CHECK(auth_challenges_parse("Basic realm=\"r\", BEARER realm=\"t\",service=s", &c) == 0);
	b = auth_challenge_find(&c, "bearer");
	CHECK(b != NULL);
	CHECK_STR(auth_challenge_param(b, "Realm"), "t");
	CHECK_STR(auth_challenge_param(b, "service"), "s");
	CHECK(auth_challenge_param(b, "scope") == NULL);
	CHECK(auth_challenge_find(&c, "Digest") == NULL);
	auth_challenges_release(&c);
	auth_challenges_release(&c);	/* twice is harmless */
	auth_challenges_release(NULL);

	/* the caps */
	char big[AUTH_CHALLENGES_MAX * 16 + 64] = "";
	for (int i = 0; i <= AUTH_CHALLENGES_MAX; i++)
		strcat(big, i ? ", Basic realm=x" : "Basic realm=x");
	CHECK(auth_challenges_parse(big, &c) == -E2BIG);
	char many[AUTH_PARAMS_MAX * 8 + 64] = "Bearer a0=x";
	for (int i = 1; i <= AUTH_PARAMS_MAX; i++)
		sprintf(many + strlen(many), ",a%d=x", i);
	CHECK(auth_challenges_parse(many, &c) == -E2BIG);
}

/* ---- key matching ---- */

static const struct {
	const char *key, *registry, *repo;
	int want;
} keys[] = {
	{ "https://index.docker.io/v1/", "docker.io", "library/ubuntu", 0 },
	{ "index.docker.io", "docker.io", "library/ubuntu", 0 },
	{ "index.docker.io/v1/", "docker.io", "library/ubuntu", 0 },
	{ "docker.io", "docker.io", "x/y", 0 },
	{ "registry-1.docker.io", "docker.io", "x/y", 0 },
	{ "https://index.docker.io/v1/", "index.docker.io", "x/y", 0 },
	{ "https://index.docker.io/v1/", "ghcr.io", "x/y", -1 },
	{ "ghcr.io", "ghcr.io", "org/x", 0 },
	{ "https://ghcr.io", "ghcr.io", "org/x", 0 },
	{ "http://ghcr.io/v2/", "ghcr.io", "org/x", 0 },
	{ "https://ghcr.io/org/other", "ghcr.io", "org/x", 0 },	/* docker: host only */
	{ "GHCR.IO", "ghcr.io", "org/x", 0 },
	{ "ghcr.io/", "ghcr.io", "org/x", 0 },
	{ "ghcr.io/org", "ghcr.io", "org/x", 3 },
	{ "ghcr.io/org", "ghcr.io", "org", 3 },
	{ "ghcr.io/org/", "ghcr.io", "org/x/y", 3 },
	{ "ghcr.io/org", "ghcr.io", "orgx/y", -1 },
	{ "ghcr.io/org/x", "ghcr.io", "org/x", 5 },
	{ "ghcr.io/org/x", "ghcr.io", "org/xy", -1 },
	{ "ghcr.io/org", "ghcr.io", NULL, -1 },
	{ "docker.io/library", "docker.io", "library/ubuntu", 7 },
	{ "localhost:5000", "localhost:5000", "a", 0 },
	{ "localhost:5000", "localhost", "a", -1 },
	{ "localhost", "localhost:5000", "a", -1 },
	{ "https://localhost:5000/", "localhost:5000", "a", 0 },
	{ "127.0.0.1:5000", "127.0.0.1:5000", "a", 0 },
	{ "ghcr.io.evil.com", "ghcr.io", "a", -1 },
	{ "evil.com/ghcr.io", "ghcr.io", "a", -1 },
	{ "", "ghcr.io", "a", -1 },
	{ "https://", "ghcr.io", "a", -1 },
};

static void test_keys(void)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		int got = auth_key_match(keys[i].key, keys[i].registry, keys[i].repo);
		if (got != keys[i].want)
			fprintf(stderr, "key '%s' vs %s/%s: got %d, want %d\n", keys[i].key,
				keys[i].registry, keys[i].repo ? keys[i].repo : "(null)", got,
				keys[i].want);
		CHECK(got == keys[i].want);
	}
	CHECK_STR(auth_server_url("docker.io"), "https://index.docker.io/v1/");
	CHECK_STR(auth_server_url("registry-1.docker.io"), "https://index.docker.io/v1/");
	CHECK_STR(auth_server_url("ghcr.io"), "ghcr.io");
}

/* ---- base64 ---- */

static void test_base64(void)
{
	static const struct {
		const char *plain, *enc;
	} t[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "user:pa:ss", "dXNlcjpwYTpzcw==" },
		{ "\xff\xfe", "//4=" },
	};
	char *s;
	size_t n;

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		s = auth_base64_encode(t[i].plain, strlen(t[i].plain));
		CHECK_STR(s, t[i].enc);
		free(s);
		CHECK(auth_base64_decode(t[i].enc, &s, &n) == 0);
		CHECK(n == strlen(t[i].plain) && !memcmp(s, t[i].plain, n));
		free(s);
	}
	CHECK(auth_base64_decode("Zm9vYg", &s, &n) == 0 && n == 4);	/* no padding */
	free(s);
	CHECK(auth_base64_decode("Zm9v!", &s, &n) == -EINVAL);
	CHECK(auth_base64_decode("Z", &s, &n) == -EINVAL);
	CHECK(auth_base64_decode("Zg===", &s, &n) == -EINVAL);

	struct auth_cred c = { .username = (char *)"aladdin", .password = (char *)"opensesame" };
	CHECK(auth_basic_header(&c, &s) == 0);
	CHECK_STR(s, "Basic YWxhZGRpbjpvcGVuc2VzYW1l");
	free(s);
	c.password = NULL;
	CHECK(auth_basic_header(&c, &s) == -EINVAL);
}

/* ---- lookup, against files and helpers in a scratch HOME ---- */

static char tmp[256];

static void write_file(const char *rel, const char *text, mode_t mode)
{
	char path[512], *slash;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmp, rel);
	for (slash = strchr(path + strlen(tmp) + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		mkdir(path, 0700);
		*slash = '/';
	}
	f = fopen(path, "w");
	CHECK(f != NULL);
	if (!f)
		return;
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static char *read_file(const char *rel)
{
	static char buf[4096];
	char path[512];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", tmp, rel);
	f = fopen(path, "r");
	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int lookup(const char *authfile, const char *reg, const char *repo, struct auth_cred *c,
		  char *why)
{
	struct auth_opts o = { .authfile = authfile, .helper_timeout_ms = 2000 };

	return auth_lookup(&o, reg, repo, c, why, 512);
}

/* A fake helper: logs its argv and stdin, answers per server URL. */
static const char helper[] =
	"#!/bin/sh\n"
	"echo \"$@\" > \"$T/helper.args\"\n"
	"read -r url || true\n"
	"printf '%s' \"$url\" > \"$T/helper.stdin\"\n"
	"case \"$url\" in\n"
	"https://index.docker.io/v1/) echo '{\"ServerURL\":\"x\",\"Username\":\"hubuser\",\"Secret\":\"hubpw\"}' ;;\n"
	"tok.example) echo '{\"Username\":\"<token>\",\"Secret\":\"refresh-xyz\"}' ;;\n"
	"slow.example) sleep 5 ;;\n"
	"bad.example) echo 'not json' ;;\n"
	"fail.example) echo 'boom' >&2; exit 3 ;;\n"
	"*) echo 'credentials not found in native keychain'; exit 1 ;;\n"
	"esac\n";

static void test_lookup(void)
{
	struct auth_cred c = { 0 };
	char why[512], path[512], env[600];

	snprintf(tmp, sizeof(tmp), "/tmp/ocifs-test-auth-XXXXXX");
	CHECK(mkdtemp(tmp) != NULL);
	setenv("HOME", tmp, 1);
	setenv("T", tmp, 1);
	unsetenv("DOCKER_CONFIG");
	unsetenv("REGISTRY_AUTH_FILE");
	unsetenv("XDG_RUNTIME_DIR");
	unsetenv("XDG_CONFIG_HOME");
	snprintf(env, sizeof(env), "%s/bin:%s", tmp, getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
	setenv("PATH", env, 1);

	/* Nothing anywhere. */
	CHECK(lookup(NULL, "ghcr.io", "a/b", &c, why) == -ENOENT);
	CHECK_STR(why, "");

	/* ~/.docker/config.json: "auth", "username"/"password", identitytoken. */
	write_file(".docker/config.json",
		   "{\"auths\":{"
		   "\"https://index.docker.io/v1/\":{\"auth\":\"aHViOnNlY3JldA==\"},"
		   "\"ghcr.io\":{\"username\":\"gh\",\"password\":\"pw\"},"
		   "\"ghcr.io/org\":{\"auth\":\"b3JnOm9yZ3B3\"},"
		   "\"quay.io\":{\"auth\":\"\",\"identitytoken\":\"idt\"},"
		   "\"empty.io\":{},"
		   "\"broken.io\":{\"auth\":\"!!!\"}}}", 0600);
	snprintf(path, sizeof(path), "%s/.docker/config.json", tmp);
	CHECK(lookup(NULL, "docker.io", "library/ubuntu", &c, why) == 0);
	CHECK_STR(c.username, "hub");
	CHECK_STR(c.password, "secret");
	CHECK_STR(c.source, path);
	auth_cred_release(&c);
	CHECK(lookup(NULL, "ghcr.io", "other/x", &c, why) == 0);
	CHECK_STR(c.username, "gh");
	CHECK_STR(c.password, "pw");
	auth_cred_release(&c);
	CHECK(lookup(NULL, "ghcr.io", "org/x", &c, why) == 0);	/* namespace wins */
	CHECK_STR(c.username, "org");
	CHECK_STR(c.password, "orgpw");
	auth_cred_release(&c);
	CHECK(lookup(NULL, "quay.io", "a", &c, why) == 0);
	CHECK_STR(c.identitytoken, "idt");
	CHECK(c.password == NULL);
	auth_cred_release(&c);
	CHECK(lookup(NULL, "empty.io", "a", &c, why) == -ENOENT);
	CHECK(lookup(NULL, "broken.io", "a", &c, why) == -ENOENT);
	CHECK(strstr(why, "malformed \"auth\" for broken.io") != NULL);

	/* $DOCKER_CONFIG moves it. */
	setenv("DOCKER_CONFIG", "/nonexistent", 1);
	CHECK(lookup(NULL, "ghcr.io", "other/x", &c, why) == -ENOENT);
	unsetenv("DOCKER_CONFIG");

	/* Podman's files come first: XDG_RUNTIME_DIR, then REGISTRY_AUTH_FILE
	 * before it. */
	write_file("run/containers/auth.json",
		   "{\"auths\":{\"ghcr.io\":{\"auth\":\"cG9kOnBvZHB3\"}}}", 0600);
	setenv("XDG_RUNTIME_DIR", "", 1);
	snprintf(env, sizeof(env), "%s/run", tmp);
	setenv("XDG_RUNTIME_DIR", env, 1);
	CHECK(lookup(NULL, "ghcr.io", "other/x", &c, why) == 0);
	CHECK_STR(c.username, "pod");
	auth_cred_release(&c);
	CHECK(lookup(NULL, "docker.io", "library/x", &c, why) == 0);	/* falls through */
	CHECK_STR(c.username, "hub");
	auth_cred_release(&c);
	write_file("raf.json", "{\"auths\":{\"ghcr.io\":{\"auth\":\"cmFmOnJhZnB3\"}}}", 0600);
	snprintf(env, sizeof(env), "%s/raf.json", tmp);
	setenv("REGISTRY_AUTH_FILE", env, 1);
	CHECK(lookup(NULL, "ghcr.io", "other/x", &c, why) == 0);
	CHECK_STR(c.username, "raf");
	auth_cred_release(&c);
	unsetenv("REGISTRY_AUTH_FILE");

	/* A malformed file is reported and skipped. */
	write_file("run/containers/auth.json", "{\"auths\":", 0600);
	CHECK(lookup(NULL, "ghcr.io", "other/x", &c, why) == 0);
	CHECK_STR(c.username, "gh");
	CHECK(strstr(why, "containers/auth.json: not a JSON object") != NULL);
	auth_cred_release(&c);
	unsetenv("XDG_RUNTIME_DIR");

	/* -o authfile= is the only file read. */
	snprintf(env, sizeof(env), "%s/raf.json", tmp);
	CHECK(lookup(env, "ghcr.io", "other/x", &c, why) == 0);
	CHECK_STR(c.username, "raf");
	auth_cred_release(&c);
	CHECK(lookup(env, "docker.io", "library/x", &c, why) == -ENOENT);

	/* Credential helpers: credHelpers for one host, credsStore for all. */
	write_file("bin/docker-credential-test", helper, 0755);
	write_file(".docker/config.json",
		   "{\"credHelpers\":{\"tok.example\":\"test\",\"slow.example\":\"test\","
		   "\"bad.example\":\"test\",\"fail.example\":\"test\","
		   "\"gone.example\":\"absent\",\"evil.example\":\"../x\","
		   "\"other.example\":\"test\"},"
		   "\"credsStore\":\"test\","
		   "\"auths\":{\"other.example\":{\"auth\":\"YTpi\"}}}", 0600);
	CHECK(lookup(NULL, "docker.io", "library/x", &c, why) == 0);
	CHECK_STR(c.username, "hubuser");
	CHECK_STR(c.password, "hubpw");
	CHECK_STR(c.source, "docker-credential-test");
	CHECK_STR(read_file("helper.args"), "get\n");
	CHECK_STR(read_file("helper.stdin"), "https://index.docker.io/v1/");
	auth_cred_release(&c);
	CHECK(lookup(NULL, "tok.example", "x", &c, why) == 0);
	CHECK_STR(c.identitytoken, "refresh-xyz");
	CHECK(c.username == NULL && c.password == NULL);
	CHECK_STR(read_file("helper.stdin"), "tok.example");
	auth_cred_release(&c);
	/* "not found" from the helper and the store: the auths entry. */
	CHECK(lookup(NULL, "other.example", "x", &c, why) == 0);
	CHECK_STR(c.username, "a");
	CHECK_STR(why, "");
	auth_cred_release(&c);
	CHECK(lookup(NULL, "bad.example", "x", &c, why) == -ENOENT);
	CHECK(strstr(why, "docker-credential-test: malformed answer") != NULL);
	CHECK(lookup(NULL, "fail.example", "x", &c, why) == -ENOENT);
	CHECK(strstr(why, "exit status 3") != NULL);
	CHECK(strstr(why, "boom") == NULL);
	CHECK(lookup(NULL, "gone.example", "x", &c, why) == -ENOENT);
	CHECK(strstr(why, "docker-credential-absent: not found on PATH") != NULL);
	CHECK(lookup(NULL, "evil.example", "x", &c, why) == -ENOENT);
	CHECK(strstr(why, "refused") != NULL);
	struct auth_opts fast = { .helper_timeout_ms = 300 };
	CHECK(auth_lookup(&fast, "slow.example", "x", &c, why, sizeof(why)) == -ENOENT);
	CHECK(strstr(why, "timed out") != NULL);

	snprintf(env, sizeof(env), "rm -rf '%s'", tmp);
	CHECK(system(env) == 0);
}

/* containers-auth.json(5)'s order, then Docker's, one file a user at a
 * time: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
 * /run/containers/$UID/auth.json, $XDG_CONFIG_HOME/containers/auth.json,
 * $DOCKER_CONFIG/config.json. Run in a child as an unused uid, so that
 * /run/containers/$UID is ours alone (needs root; skipped otherwise). */
static void test_search_order(void)
{
	static const char *const order[] = { "raf", "xrd", "run", "xch", "dkr" };
	const unsigned uid = 54321;
	char run[128], cmd[700];
	bool made_parent;
	int status;
	pid_t pid;

	if (geteuid() != 0) {
		fprintf(stderr, "test_search_order: skipped (needs root for /run/containers)\n");
		return;
	}
	snprintf(tmp, sizeof(tmp), "/tmp/ocifs-test-order-XXXXXX");
	CHECK(mkdtemp(tmp) != NULL);
	chmod(tmp, 0755);
	snprintf(run, sizeof(run), "%s/containers/%u", AUTH_RUN_DIR, uid);
	made_parent = mkdir(AUTH_RUN_DIR "/containers", 0755) == 0;
	CHECK(mkdir(run, 0700) == 0 || errno == EEXIST);
	CHECK(chown(run, uid, uid) == 0);
	for (size_t i = 0; i < 5; i++) {
		char rel[64], text[256], *b64, user[16];
		static const char *const rels[] = { "raf.json", "xrd/containers/auth.json", NULL,
						    "xch/containers/auth.json",
						    "dkr/config.json" };
		snprintf(user, sizeof(user), "%s:pw", order[i]);
		b64 = auth_base64_encode(user, strlen(user));
		snprintf(text, sizeof(text), "{\"auths\":{\"ghcr.io\":{\"auth\":\"%s\"}}}", b64);
		free(b64);
		if (rels[i]) {
			snprintf(rel, sizeof(rel), "%s", rels[i]);
			write_file(rel, text, 0644);
		} else {
			FILE *f;
			snprintf(cmd, sizeof(cmd), "%s/auth.json", run);
			f = fopen(cmd, "w");
			CHECK(f != NULL);
			if (f) {
				fputs(text, f);
				fclose(f);
			}
			CHECK(chown(cmd, uid, uid) == 0);
		}
	}
	snprintf(cmd, sizeof(cmd), "chmod -R a+rX '%s'", tmp);
	CHECK(system(cmd) == 0);

	pid = fork();
	if (pid == 0) {
		struct auth_cred c = { 0 };
		char why[512], env[600];
		int bad = 0;

		if (setuid(uid) != 0)
			_exit(2);
		setenv("HOME", tmp, 1);
		snprintf(env, sizeof(env), "%s/raf.json", tmp);
		setenv("REGISTRY_AUTH_FILE", env, 1);
		snprintf(env, sizeof(env), "%s/xrd", tmp);
		setenv("XDG_RUNTIME_DIR", env, 1);
		snprintf(env, sizeof(env), "%s/xch", tmp);
		setenv("XDG_CONFIG_HOME", env, 1);
		snprintf(env, sizeof(env), "%s/dkr", tmp);
		setenv("DOCKER_CONFIG", env, 1);
		/* Take the files away one by one, first first: each time the
		 * next one in the order answers. */
		for (size_t i = 0; i < 5; i++) {
			if (lookup(NULL, "ghcr.io", "a/b", &c, why) != 0 ||
			    strcmp(c.username, order[i])) {
				fprintf(stderr, "search order: want %s, got %s\n", order[i],
					c.username ? c.username : "(none)");
				bad++;
			}
			if (i == 0)
				unsetenv("REGISTRY_AUTH_FILE");
			else if (i == 1)
				unsetenv("XDG_RUNTIME_DIR");
			else if (i == 2) {
				snprintf(env, sizeof(env), "%s/auth.json", run);
				bad += unlink(env) != 0;
			} else if (i == 3)
				unsetenv("XDG_CONFIG_HOME");	/* ~/.config: none */
			auth_cred_release(&c);
		}
		_exit(bad ? 1 : 0);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	rmdir(run);
	if (made_parent)
		rmdir(AUTH_RUN_DIR "/containers");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	CHECK(system(cmd) == 0);
}

int main(void)
{
	test_challenges();
	test_challenge_lookup();
	test_keys();
	test_base64();
	test_lookup();
	test_search_order();
	return CHECK_DONE();
}
