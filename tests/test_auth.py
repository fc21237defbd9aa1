"""Auth, TLS, redirects and transport faults, against real parts on loopback.

    content registry    a plain docker-registry holding the pushed artifacts
    auth registries     more docker-registry processes serving the same storage with
                        auth: htpasswd (Basic) or auth: token (+ tokenserver.py),
                        optionally behind TLS from a CA made here (pki.py)
    faultproxy.py       429/503/dropped connections, redirects to a BlobStore

Every daemon here runs with -d and a scratch HOME/DOCKER_CONFIG; its whole log is
grepped for the secrets it was given.
"""

import base64
import contextlib
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from fixtures.cache import cache_hexes, sha256_file
from fixtures.faultproxy import BlobStore, FaultProxy
from fixtures.pki import CA
from fixtures.push import Client, push_artifact, push_demo
from fixtures.registry import make_htpasswd
from fixtures.tokenserver import TokenServer
from fixtures.layout import layout_blob

MiB = 1024 * 1024
USER, PASSWORD = "alice", "pw-Alice-0123456789"
SERVICE = "ocifs-test-registry"


# --- helpers ------------------------------------------------------------------

def read(path):
    with open(path, "rb") as f:
        return f.read()




def os_error(path, timeout=60):
    """errno of reading ``path`` in a child process with a deadline; 0 if the
    read succeeds."""
    code = ("import sys\n"
            "try:\n"
            "    open(sys.argv[1], 'rb').read()\n"
            "    print(0)\n"
            "except OSError as e:\n"
            "    print(e.errno)\n")
    r = subprocess.run([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode()
    return int(r.stdout)


def b64(s):
    return base64.b64encode(s.encode()).decode()


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
    os.chmod(path, 0o600)
    return path


def isolated_env(tmp_path, **extra):
    """A daemon environment that sees no credentials but those a test writes."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home), "DOCKER_CONFIG": str(tmp_path / "docker"),
           "REGISTRY_AUTH_FILE": None, "XDG_RUNTIME_DIR": None,
           "XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}
    env.update(extra)
    return env


def docker_config(tmp_path, host, user=USER, password=PASSWORD, **entry):
    """$DOCKER_CONFIG/config.json with one "auths" entry for ``host``."""
    e = dict(entry)
    if user is not None:
        e["auth"] = b64("%s:%s" % (user, password))
    return write_json(str(tmp_path / "docker" / "config.json"), {"auths": {host: e}})


def assert_no_secrets(m, *secrets):
    text = m.all_logs()
    assert text, "no daemon log"
    for s in secrets:
        if s:
            assert s not in text, "secret %r... leaked into the log" % s[:12]






def art(m, host, repo, ref):
    return os.path.join(m.path, host, repo, ref)


# --- fixtures -----------------------------------------------------------------

@pytest.fixture(scope="module")
def content(tmp_path_factory):
    """A plain registry with the demo artifacts, a private one and a 3 MiB blob;
    auth registries serve its storage."""
    from conftest import _start_registry
    r = _start_registry(tmp_path_factory.mktemp("content"))
    c = Client(r.host)
    pushed = push_demo(c)
    pushed["private/app:1.0"] = push_artifact(
        c, "private/app", ["1.0"], files=[("secret.txt", b"classified\n", "text/plain")])
    pushed["demo/big:1"] = push_artifact(
        c, "demo/big", ["1"], files=[("big.bin", os.urandom(3 * MiB))])
    yield r, pushed
    r.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    ca = CA(tmp_path_factory.mktemp("pki"))
    cert, key = ca.issue("registry", ["127.0.0.1", "localhost"])
    return ca, cert, key


@pytest.fixture
def htpasswd(tmp_path):
    if not shutil.which("htpasswd"):
        pytest.skip("htpasswd (apache2-utils) is not installed")
    return make_htpasswd(str(tmp_path / "htpasswd"), {USER: PASSWORD, "bob": "bob-pw-987"})


def new_token_server(workdir, **kw):
    """A TokenServer for SERVICE (the test is skipped without its modules)."""
    pytest.importorskip("jwt", reason="python3-jwt is not installed")
    pytest.importorskip("cryptography", reason="python3-cryptography is not installed")
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    return TokenServer(workdir, service=SERVICE, **kw)


@pytest.fixture
def token_server(tmp_path):
    ts = new_token_server(tmp_path / "ts", users={USER: PASSWORD},
                          refresh_tokens={"refresh-Alice-5f2e9c": USER},
                          acl={USER: ["*"], None: ["demo/*", "registry:catalog"]})
    yield ts
    ts.stop()


def demo_paths(m, host, pushed):
    p = pushed["demo/hello:1.0"]
    d = art(m, host, "demo/hello", "1.0")
    return d, p


def assert_demo(m, host, pushed):
    d, p = demo_paths(m, host, pushed)
    assert read(os.path.join(d, "manifest.json")) == p.manifest
    assert read(os.path.join(d, "config.json")) == p.config.data
    assert read(os.path.join(d, "hello.txt")) == b"Hello from ocifs!\n"
    assert read(os.path.join(d, "README.md")) == p.layers[0].data


# --- Basic (htpasswd) behind TLS ------------------------------------------------

def test_basic_over_tls_with_cafile(content, pki, htpasswd, registry_factory,
                                    mount_factory, tmp_path):
    store, pushed = content
    ca, cert, key = pki
    reg = registry_factory(storage_dir=store.storage_dir, htpasswd=htpasswd,
                           tls=(cert, key), ca=ca.cert)
    docker_config(tmp_path, reg.host)
    m = mount_factory(opts=["registry=" + reg.host, "cafile=" + ca.cert], debug=True,
                      env=isolated_env(tmp_path))
    assert_demo(m, reg.host, pushed)
    big = pushed["demo/big:1"].layers[0]
    assert sha256_file(art(m, reg.host, "demo/big", "1") + "/big.bin") == big.hex
    assert big.hex in cache_hexes(m.cache)
    # Everything went over TLS, authenticated.
    log = m.log_text()
    assert "https://%s/v2/demo/hello/manifests/1.0 -> 200" % reg.host in log
    # Loopback registries are asked in plain HTTP first: one anonymous
    # request, answered 400 by the TLS server, then TLS for good.
    plain = [l for l in log.splitlines() if "GET http://%s" % reg.host in l]
    assert len(plain) == 1 and "-> 400" in plain[0], plain
    ok = reg.requests("GET", r"/v2/demo/.*", since=0)
    assert ok and any(a.status == 200 for a in ok)
    assert all(a.status in (200, 401, 404) for a in ok)
    assert_no_secrets(m, PASSWORD, b64("%s:%s" % (USER, PASSWORD)))


def test_tls_untrusted_without_cafile(content, pki, registry_factory, mount_factory,
                                      tmp_path):
    store, pushed = content
    ca, cert, key = pki
    reg = registry_factory(storage_dir=store.storage_dir, tls=(cert, key), ca=ca.cert)
    m = mount_factory(opts=["registry=" + reg.host], env=isolated_env(tmp_path))
    d, _ = demo_paths(m, reg.host, pushed)
    assert os_error(os.path.join(d, "hello.txt")) == errno.EIO
    assert re.search(r"TLS certificate of %s not trusted .*certificate" % re.escape(reg.host),
                     m.log_text()), m.log_text()
    # Never a silent fall back to plain HTTP: the registry only saw TLS.
    assert "http://%s" % reg.host not in m.log_text()

    # -o insecure=HOST: TLS without verification, for that host only.
    m2 = mount_factory(opts=["registry=" + reg.host, "insecure=" + reg.host],
                       env=isolated_env(tmp_path))
    assert_demo(m2, reg.host, pushed)


@pytest.mark.parametrize("certs_dir", ["/etc/docker/certs.d", "/etc/containers/certs.d"])
def test_tls_certs_d(content, pki, registry_factory, mount_factory, tmp_path, certs_dir):
    store, pushed = content
    ca, cert, key = pki
    reg = registry_factory(storage_dir=store.storage_dir, tls=(cert, key), ca=ca.cert)
    d = os.path.join(certs_dir, reg.host)
    try:
        os.makedirs(d)
    except OSError as e:
        pytest.skip("cannot write %s: %s" % (certs_dir, e))
    try:
        shutil.copy(ca.cert, os.path.join(d, "ca.crt"))
        m = mount_factory(opts=["registry=" + reg.host], env=isolated_env(tmp_path))
        assert_demo(m, reg.host, pushed)
    finally:
        shutil.rmtree(d)
        for p in (certs_dir, os.path.dirname(certs_dir)):
            try:
                os.rmdir(p)     # only if we made it and it is empty
            except OSError:
                break


def test_mutual_tls_client_cert_from_certs_d(content, pki, registry_factory,
                                             mount_factory, tmp_path):
    store, pushed = content
    ca, cert, key = pki
    ccert, ckey = ca.issue("client", [], client=True)
    reg = registry_factory(storage_dir=store.storage_dir, tls=(cert, key), ca=ca.cert,
                           clientcas=[ca.cert], client_cert=(ccert, ckey))
    d = os.path.join("/etc/docker/certs.d", reg.host)
    try:
        os.makedirs(d)
    except OSError as e:
        pytest.skip("cannot write /etc/docker/certs.d: %s" % e)
    try:
        m0 = mount_factory(opts=["registry=" + reg.host, "cafile=" + ca.cert],
                           env=isolated_env(tmp_path), debug=True)
        assert os_error(os.path.join(demo_paths(m0, reg.host, pushed)[0], "hello.txt")) \
            == errno.EIO
        # The server refused the handshake: no fall back to plain HTTP
        # after the one plain probe a loopback registry gets first.
        plain = [l for l in m0.log_text().splitlines() if "GET http://" in l]
        assert len(plain) == 1 and "-> 400" in plain[0], m0.log_text()
        shutil.copy(ca.cert, os.path.join(d, "ca.crt"))
        shutil.copy(ccert, os.path.join(d, "client.cert"))
        shutil.copy(ckey, os.path.join(d, "client.key"))
        m = mount_factory(opts=["registry=" + reg.host], env=isolated_env(tmp_path))
        assert_demo(m, reg.host, pushed)
    finally:
        shutil.rmtree(d)
        for p in ("/etc/docker/certs.d", "/etc/docker"):
            try:
                os.rmdir(p)
            except OSError:
                break


def test_basic_wrong_password(content, htpasswd, registry_factory, mount_factory, tmp_path):
    store, pushed = content
    reg = registry_factory(storage_dir=store.storage_dir, htpasswd=htpasswd)
    cfg = docker_config(tmp_path, reg.host, password="not-the-Password-42")
    m = mount_factory(opts=["registry=" + reg.host], debug=True, env=isolated_env(tmp_path))
    d, _ = demo_paths(m, reg.host, pushed)
    assert os_error(os.path.join(d, "hello.txt")) == errno.EACCES
    log = m.log_text()
    assert "%s refused the credentials from %s for demo/hello (UNAUTHORIZED)" % (
        reg.host, cfg) in log, log
    assert_no_secrets(m, "not-the-Password-42", b64("%s:not-the-Password-42" % USER))


def test_basic_no_credentials_then_login(content, htpasswd, registry_factory,
                                         mount_factory, tmp_path):
    store, pushed = content
    reg = registry_factory(storage_dir=store.storage_dir, htpasswd=htpasswd)
    m = mount_factory(opts=["registry=" + reg.host], debug=True, env=isolated_env(tmp_path))
    d, _ = demo_paths(m, reg.host, pushed)
    assert os_error(os.path.join(d, "hello.txt")) == errno.EACCES
    log = m.log_text()
    assert "%s refused anonymous access to demo/hello, and no credentials were found" % (
        reg.host) in log, log
    # `docker login` after the mount: the next challenge reads the new file.
    docker_config(tmp_path, "https://%s/v1/" % reg.host)
    assert read(os.path.join(d, "hello.txt")) == b"Hello from ocifs!\n"
    assert_no_secrets(m, PASSWORD)


def test_basic_credentials_sent_preemptively(content, htpasswd, registry_factory,
                                             mount_factory, tmp_path):
    """After the registry's first challenge, requests carry the credentials:
    one 401 for the mount, not one per request or per repository."""
    store, pushed = content
    reg = registry_factory(storage_dir=store.storage_dir, htpasswd=htpasswd)
    docker_config(tmp_path, reg.host)
    m = mount_factory(opts=["registry=" + reg.host], env=isolated_env(tmp_path))
    mark = reg.mark()
    assert_demo(m, reg.host, pushed)
    assert os.listdir(art(m, reg.host, "acme/tools/cli", "v1"))
    hits = reg.requests(None, r"/v2/.+", since=mark)
    assert sum(1 for a in hits if a.status == 401) == 1, [a.line for a in hits]


# --- credential helpers and podman files ------------------------------------

HELPER = """#!/bin/sh
# docker-credential-test: the credential helper protocol, logging what it gets.
echo "$@" >> "{log}.args"
url=$(cat)
printf '%s\\n' "$url" >> "{log}.stdin"
case "$url" in
{host}) printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{password}"}}\\n' "$url" ;;
*) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


def test_credential_helper(content, htpasswd, registry_factory, mount_factory, tmp_path):
    store, pushed = content
    reg = registry_factory(storage_dir=store.storage_dir, htpasswd=htpasswd)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-test"
    helper.write_text(HELPER.format(log=tmp_path / "helper", host=reg.host, user=USER,
                                    password=PASSWORD))
    helper.chmod(0o755)
    write_json(str(tmp_path / "docker" / "config.json"),
               {"credHelpers": {reg.host: "test"}, "auths": {}})
    env = isolated_env(tmp_path, PATH="%s:%s" % (bindir, os.environ.get("PATH", "")))
    m = mount_factory(opts=["registry=" + reg.host], debug=True, env=env)
    assert_demo(m, reg.host, pushed)
    # The protocol: "get" as the only argument, the server URL on stdin.
    args = (tmp_path / "helper.args").read_text().split("\n")
    assert set(a for a in args if a) == {"get"}
    assert set((tmp_path / "helper.stdin").read_text().split()) == {reg.host}
    assert_no_secrets(m, PASSWORD)


def test_creds_store_falls_back_to_auths(content, htpasswd, registry_factory, mount_factory,
                                         tmp_path):
    """credsStore whose helper knows nothing of the host: the auths entry."""
    store, pushed = content
    reg = registry_factory(storage_dir=store.storage_dir, htpasswd=htpasswd)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-test"
    helper.write_text(HELPER.format(log=tmp_path / "helper", host="elsewhere.example",
                                    user="x", password="y"))
    helper.chmod(0o755)
    write_json(str(tmp_path / "docker" / "config.json"),
               {"credsStore": "test",
                "auths": {reg.host: {"auth": b64("%s:%s" % (USER, PASSWORD))}}})
    env = isolated_env(tmp_path, PATH="%s:%s" % (bindir, os.environ.get("PATH", "")))
    m = mount_factory(opts=["registry=" + reg.host], env=env)
    assert_demo(m, reg.host, pushed)
    assert reg.host in (tmp_path / "helper.stdin").read_text()


@pytest.mark.parametrize("where", ["xdg_runtime", "registry_auth_file", "authfile"])
def test_podman_auth_json(content, htpasswd, registry_factory, mount_factory, tmp_path, where):
    store, pushed = content
    reg = registry_factory(storage_dir=store.storage_dir, htpasswd=htpasswd)
    auth = {"auths": {reg.host: {"auth": b64("%s:%s" % (USER, PASSWORD))}}}
    # A docker config with wrong credentials: podman's file must win.
    docker_config(tmp_path, reg.host, password="wrong-docker-pw")
    opts = ["registry=" + reg.host]
    env = isolated_env(tmp_path)
    if where == "xdg_runtime":
        write_json(str(tmp_path / "run" / "containers" / "auth.json"), auth)
        env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    elif where == "registry_auth_file":
        env["REGISTRY_AUTH_FILE"] = write_json(str(tmp_path / "raf.json"), auth)
    else:
        path = write_json(str(tmp_path / "cfg" / "my-auth.json"), auth)
        # relative to the cwd at mount time, and the daemon chdirs to /
        opts.append("authfile=" + os.path.relpath(path))
    m = mount_factory(opts=opts, env=env)
    assert_demo(m, reg.host, pushed)


def test_authfile_missing_fails_the_mount(mount_factory, tmp_path):
    m = mount_factory(opts=["authfile=" + str(tmp_path / "nope.json")], mount=False)
    with pytest.raises(Exception) as e:
        m.mount()
    assert "authfile=" in str(e.value)


# --- Bearer tokens ---------------------------------------------------------------

@pytest.fixture
def token_registry(content, token_server, registry_factory):
    store, _ = content
    return registry_factory(storage_dir=store.storage_dir, token=token_server.registry_config())


def scope_requests(ts, repo):
    return [r for r in ts.requests if "repository:%s:pull" % repo in r.scopes]


def test_token_anonymous_pull(content, token_server, token_registry, mount_factory, tmp_path):
    _, pushed = content
    reg = token_registry
    m = mount_factory(opts=["registry=" + reg.host], debug=True, env=isolated_env(tmp_path))
    assert sorted(os.listdir(os.path.join(m.path, reg.host))) == ["acme", "demo", "private"]
    assert_demo(m, reg.host, pushed)
    reqs = scope_requests(token_server, "demo/hello")
    assert len(reqs) == 1, token_server.requests
    r = reqs[0]
    assert (r.method, r.service, r.user, r.status) == ("GET", SERVICE, None, 200)
    assert "Authorization" not in r.headers
    assert any(s == "registry:catalog:*" for t in token_server.requests for s in t.scopes)
    assert_no_secrets(m, *token_server.issued)


def test_token_with_credentials_reused(content, token_server, token_registry, mount_factory,
                                       tmp_path):
    """Basic credentials at the token server; one token for many reads of a scope."""
    _, pushed = content
    reg = token_registry
    docker_config(tmp_path, reg.host)
    m = mount_factory(opts=["registry=" + reg.host], debug=True, env=isolated_env(tmp_path))
    p = pushed["private/app:1.0"]
    d = art(m, reg.host, "private/app", "1.0")
    assert read(os.path.join(d, "secret.txt")) == b"classified\n"
    assert read(os.path.join(d, "manifest.json")) == p.manifest
    assert read(os.path.join(d, "config.json")) == p.config.data
    for b in [p.config] + p.layers:
        assert read(layout_blob(d, b.digest)) == b.data
    assert sorted(os.listdir(os.path.join(m.path, reg.host, "private", "app"))) == ["1.0"]
    reqs = scope_requests(token_server, "private/app")
    assert len(reqs) == 1, [(r.method, r.scopes) for r in token_server.requests]
    assert reqs[0].user == USER and reqs[0].service == SERVICE
    assert_no_secrets(m, PASSWORD, b64("%s:%s" % (USER, PASSWORD)), *token_server.issued)


def test_token_concurrent_readers(content, token_server, token_registry, mount_factory,
                                  tmp_path):
    """Readers in many threads of a cold mount: one token request for the scope
    (the kernel serializes most of the first lookups; client.c's single flight
    per scope covers the rest)."""
    import threading
    _, pushed = content
    reg = token_registry
    m = mount_factory(opts=["registry=" + reg.host], env=isolated_env(tmp_path))
    p = pushed["demo/hello:1.0"]
    go = threading.Barrier(8)
    errors = []

    def reader(i):
        try:
            go.wait(10)
            d = art(m, reg.host, "demo/hello", ("1.0", "latest")[i % 2])
            b = ([p.config] + p.layers)[i % 3]
            assert read(layout_blob(d, b.digest)) == b.data
        except Exception as e:     # reported below, in the main thread
            errors.append(e)
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(scope_requests(token_server, "demo/hello")) == 1, token_server.requests


def test_token_expiry(content, token_server, token_registry, mount_factory, tmp_path):
    _, pushed = content
    reg = token_registry
    """A token is used until its expires_in, then fetched again once. (The
    registry accepts it longer: only ocifs's clock is under test. A phase
    slower than the lifetime, on a loaded machine, may fairly need two.)"""
    life = 4
    token_server.expires_in = life
    token_server.jwt_ttl = 300
    m = mount_factory(opts=["registry=" + reg.host], env=isolated_env(tmp_path))
    d, p = demo_paths(m, reg.host, pushed)
    t0 = time.monotonic()
    assert read(os.path.join(d, "hello.txt")) == b"Hello from ocifs!\n"
    took = time.monotonic() - t0
    n1 = len(scope_requests(token_server, "demo/hello"))
    assert n1 == 1 or took >= life, (n1, took)
    # Past the lifetime of the last token fetched (fetched before t0 + took).
    time.sleep(max(0.0, t0 + took + life + 0.5 - time.monotonic()))
    t1 = time.monotonic()
    assert read(os.path.join(d, "README.md")) == p.layers[0].data
    took = time.monotonic() - t1
    n2 = len(scope_requests(token_server, "demo/hello"))
    assert n2 == n1 + 1 or (n2 > n1 and took >= life), (n1, n2, took)


def test_token_rejected_early_is_renewed(content, token_server, token_registry,
                                         mount_factory, tmp_path):
    """A cached token the registry stops accepting before its expires_in (401
    invalid_token; here: the registry now trusts another issuer) is replaced
    once and the read succeeds."""
    _, pushed = content
    reg = token_registry
    m = mount_factory(opts=["registry=" + reg.host], env=isolated_env(tmp_path))
    d, p = demo_paths(m, reg.host, pushed)
    assert read(os.path.join(d, "hello.txt")) == b"Hello from ocifs!\n"
    assert len(scope_requests(token_server, "demo/hello")) == 1
    token_server.issuer = "another-issuer"
    reg.token = token_server.registry_config()
    reg.stop()
    reg.start()
    assert read(os.path.join(d, "README.md")) == p.layers[0].data
    assert len(scope_requests(token_server, "demo/hello")) == 2


def test_token_refresh_token(content, token_server, token_registry, mount_factory, tmp_path):
    """An identitytoken is used as OAuth2 refresh token, in a POST body."""
    _, pushed = content
    reg = token_registry
    token_server.field = "access_token"
    rt = "refresh-Alice-5f2e9c"
    docker_config(tmp_path, reg.host, user=None, identitytoken=rt)
    m = mount_factory(opts=["registry=" + reg.host], debug=True, env=isolated_env(tmp_path))
    d = art(m, reg.host, "private/app", "1.0")
    assert read(os.path.join(d, "secret.txt")) == b"classified\n"
    reqs = scope_requests(token_server, "private/app")
    assert len(reqs) == 1
    r = reqs[0]
    assert (r.method, r.grant_type, r.user, r.service) == ("POST", "refresh_token", USER, SERVICE)
    assert "Authorization" not in r.headers
    assert_no_secrets(m, rt, *token_server.issued)


def test_token_server_refuses_credentials(content, token_server, token_registry,
                                          mount_factory, tmp_path):
    _, pushed = content
    reg = token_registry
    cfg = docker_config(tmp_path, reg.host, password="wrong-Token-pw-1")
    m = mount_factory(opts=["registry=" + reg.host], debug=True, env=isolated_env(tmp_path))
    d = art(m, reg.host, "private/app", "1.0")
    assert os_error(os.path.join(d, "secret.txt")) == errno.EACCES
    log = m.log_text()
    assert "token server 127.0.0.1:%d refused the credentials from %s for %s" % (
        token_server.port, cfg, reg.host) in log, log
    assert_no_secrets(m, "wrong-Token-pw-1")


def test_token_private_without_credentials(content, token_server, token_registry,
                                           mount_factory, tmp_path):
    _, pushed = content
    reg = token_registry
    m = mount_factory(opts=["registry=" + reg.host], env=isolated_env(tmp_path))
    d = art(m, reg.host, "private/app", "1.0")
    assert os_error(os.path.join(d, "secret.txt")) == errno.EACCES
    assert "%s refused anonymous access to private/app" % reg.host in m.log_text()
    # Public repositories of the same registry still work.
    assert_demo(m, reg.host, pushed)


def test_token_one_challenge_per_registry(content, token_server, token_registry,
                                          mount_factory, tmp_path):
    """A registry's challenge is remembered: the first request for another
    repository already carries a token for it (no 401 first), and no scope is
    asked for twice. Only the mount's first request is challenged (`demo:hello`,
    anonymous; the token it earns says it lacks `demo`, so it is not sent
    again)."""
    _, pushed = content
    reg = token_registry
    m = mount_factory(opts=["registry=" + reg.host], env=isolated_env(tmp_path))
    mark = reg.mark()
    assert_demo(m, reg.host, pushed)
    assert os.listdir(art(m, reg.host, "demo/docker-style", "latest"))
    got = reg.requests(None, r"/v2/.+", since=mark)
    challenged = {a.path for a in got if a.status == 401}
    assert challenged == {got[0].path}, [(a.path, a.status) for a in got]
    scopes = [s for r in token_server.requests for s in r.scopes]
    assert "repository:demo/docker-style:pull" in scopes
    assert len(scopes) == len(set(scopes)), scopes


def test_token_first_readings_overlap(content, token_server, token_registry, mount_factory,
                                     tmp_path):
    """On a fresh mount the readings of a path wait only for the registry's
    first 401, not for the first reading's answer: the proxy holds the
    answer to `demo:hello` with a token until the request for
    `demo/hello:1.0` has come (10 s at most), which a one-after-the-other
    resolution never sends in time. (The token server grants `demo` here, as
    one granting scopes of repositories that do not exist does: else the
    token says `demo` is refused and `demo:hello` is not sent with it.) Same
    requests as before: only the first reading is challenged, each scope is
    asked for once."""
    _, pushed = content
    token_server.acl[None] = ["demo*", "registry:catalog"]
    proxy = FaultProxy(token_registry.url)
    try:
        proxy.add(r"/v2/demo/manifests/hello", "await", until=r"/v2/demo/hello/manifests/1\.0",
                  hold=10)
        m = mount_factory(opts=["registry=" + proxy.host], env=isolated_env(tmp_path))
        d, _ = demo_paths(m, proxy.host, pushed)
        assert read(os.path.join(d, "hello.txt")) == b"Hello from ocifs!\n"
        held = [s for s in proxy.seen(r"/v2/demo/manifests/hello") if s.awaited is not None]
        assert held and all(s.awaited for s in held), [(s.status, s.awaited) for s in held]
        got = proxy.seen(r"/v2/.+")
        assert {s.path for s in got if s.status == 401} == {"/v2/demo/manifests/hello"}, \
            [(s.path, s.status) for s in got]
        scopes = [s for r in token_server.requests for s in r.scopes]
        assert len(scopes) == len(set(scopes)), scopes
    finally:
        proxy.stop()


def cat(path):
    """The bytes `cat path` prints (a real cat, in a child process)."""
    return subprocess.run(["cat", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          check=True, timeout=60).stdout


@contextlib.contextmanager
def catalog_token_registry(content, registry_factory, mount_factory, tmp_path, catalog):
    """A token registry serving ``content`` whose catalog is "allowed",
    "refused" (the token server grants no catalog: 401) or "absent" (a proxy
    answers 404), anonymous pulls of demo/* only, and a fresh mount of it
    through the proxy: yields (token server, proxy, mount)."""
    store, _ = content
    acl = ["demo/*"] + (["registry:catalog"] if catalog != "refused" else [])
    ts = new_token_server(tmp_path / "ts", acl={None: acl})
    reg = registry_factory(storage_dir=store.storage_dir, token=ts.registry_config())
    proxy = FaultProxy(reg.url)
    try:
        if catalog == "absent":
            proxy.add(r"/v2/_catalog", "status", status=404)
        yield ts, proxy, mount_factory(opts=["registry=" + proxy.host],
                                       env=isolated_env(tmp_path))
    finally:
        proxy.stop()
        ts.stop()


@pytest.mark.parametrize("catalog", ["refused", "absent"])
def test_token_fresh_path_costs_one_token(content, registry_factory, mount_factory, tmp_path,
                                          catalog):
    """From a fresh mount, `cat <reg>/demo/hello/1.0/hello.txt` costs the minimum:
    one challenge (the anonymous `demo:hello`), one token request carrying the
    scopes of both readings (`demo:hello` and `demo/hello:1.0`), one manifest
    request (`demo/hello:1.0`) and the blob. The token server grants no
    `repository:demo:pull` (`demo` does not exist here, as Docker Hub grants no
    scope of a missing repository), and the token (a JWT) says so: the reading
    `demo:hello` is not asked again with it. On a registry whose catalog is
    refused (the token server grants no catalog: 401) and on one without a
    catalog (404), as Docker Hub and GHCR are."""
    _, pushed = content
    with catalog_token_registry(content, registry_factory, mount_factory, tmp_path,
                                catalog) as (ts, proxy, m):
        p = pushed["demo/hello:1.0"]
        assert cat(os.path.join(m.path, proxy.host, "demo", "hello", "1.0", "hello.txt")) == \
            b"Hello from ocifs!\n"
        assert [sorted(r.scopes) for r in ts.requests] == \
            [["repository:demo/hello:pull", "repository:demo:pull"]], ts.requests
        got = proxy.seen(r"/v2/.+")
        first, rest = got[0], got[1:]
        assert (first.path, first.status) == ("/v2/demo/manifests/hello", 401)
        assert "Authorization" not in first.headers
        assert all("Authorization" in s.headers for s in rest)
        hello = [b for b in p.layers if b.data == b"Hello from ocifs!\n"][0]
        assert [(s.path, s.status) for s in rest] == [
            ("/v2/demo/hello/manifests/1.0", 200),
            ("/v2/demo/hello/blobs/" + hello.digest, 200)], [(s.path, s.status) for s in got]
        # The catalog is what the test says it is: refused is EACCES.
        top = os.path.join(m.path, proxy.host)
        if catalog == "refused":
            with pytest.raises(PermissionError):
                os.listdir(top)
        else:
            os.listdir(top)
        assert [s.status for s in proxy.seen(r"/v2/_catalog")][-1:] == \
            [401 if catalog == "refused" else 404]


@pytest.mark.parametrize("catalog", ["allowed", "refused", "absent"])
def test_token_fresh_listing_costs_one_token(content, registry_factory, mount_factory,
                                             tmp_path, catalog):
    """From a fresh mount, `ls -l <reg>/demo/hello` needs the reading `demo:hello`,
    the catalog and the tag list of demo/hello: their scopes go in one token
    request (the challenge of the first request is the only anonymous one)."""
    with catalog_token_registry(content, registry_factory, mount_factory, tmp_path,
                                catalog) as (ts, proxy, m):
        out = subprocess.run(["ls", "-l", os.path.join(m.path, proxy.host, "demo", "hello")],
                             stdout=subprocess.PIPE, check=True, timeout=60).stdout.decode()
        assert [line.split()[-1] for line in out.splitlines()[1:]] == ["1.0", "latest"], out
        assert [sorted(r.scopes) for r in ts.requests] == [
            ["registry:catalog:*", "repository:demo/hello:pull", "repository:demo:pull"]], \
            ts.requests
        got = proxy.seen(r"/v2/.+")
        assert [s.path for s in got if "Authorization" not in s.headers] == [got[0].path]
        assert len(proxy.seen(r"/v2/demo/hello/tags/list")) == 1


def test_token_server_granting_fewer_scopes_than_asked(content, registry_factory,
                                                       mount_factory, tmp_path):
    """A token server that leaves a scope out of a token asked for several (here
    `demo/hello`, asked with `demo`; both are allowed): the reading refused with
    that token asks for its own and still resolves, one token request more for
    its repository; the other reading is not asked again. (The first, failed
    pass asks the catalog whether the path is a directory, with a token of its
    own.)"""
    store, pushed = content
    ts = new_token_server(tmp_path / "ts", acl={None: ["demo*"]})
    ts.drop_scope = "repository:demo/hello:pull"
    reg = registry_factory(storage_dir=store.storage_dir, token=ts.registry_config())
    try:
        m = mount_factory(opts=["registry=" + reg.host], env=isolated_env(tmp_path))
        d = os.path.join(m.path, reg.host, "demo", "hello", "1.0")
        assert cat(os.path.join(d, "hello.txt")) == b"Hello from ocifs!\n"
        assert cat(os.path.join(d, "README.md")) == pushed["demo/hello:1.0"].layers[0].data
        repo_scopes = [sorted(s for s in r.scopes if s.startswith("repository:"))
                       for r in ts.requests]
        assert [s for s in repo_scopes if s] == [
            ["repository:demo/hello:pull", "repository:demo:pull"],
            ["repository:demo/hello:pull"]], ts.requests
        assert reg.count("GET", r"/v2/demo/manifests/hello") == 2    # challenge, 404
    finally:
        ts.stop()


def test_token_granted_shorter_reading_is_still_asked(content, registry_factory,
                                                      mount_factory, tmp_path):
    """A token server that grants the shorter reading's scope (`demo`, ACL
    "demo*", though no such repository exists): the token does not rule it
    out, so `demo:hello` is asked with it (404) beside `demo/hello:1.0`, in the
    same round, and the path resolves; one token request for both. Only the
    scopes a token says it lacks are skipped."""
    store, _ = content
    ts = new_token_server(tmp_path / "ts", acl={None: ["demo*"]})
    reg = registry_factory(storage_dir=store.storage_dir, token=ts.registry_config())
    try:
        m = mount_factory(opts=["registry=" + reg.host], env=isolated_env(tmp_path))
        mark = reg.mark()
        d = os.path.join(m.path, reg.host, "demo", "hello", "1.0")
        assert cat(os.path.join(d, "hello.txt")) == b"Hello from ocifs!\n"
        assert [sorted(r.scopes) for r in ts.requests] == \
            [["repository:demo/hello:pull", "repository:demo:pull"]], ts.requests
        got = [(a.path, a.status) for a in reg.requests("GET", r"/v2/.+/manifests/.+",
                                                        since=mark)]
        assert sorted(got) == sorted([("/v2/demo/manifests/hello", 401),
                                      ("/v2/demo/manifests/hello", 404),
                                      ("/v2/demo/hello/manifests/1.0", 200)]), got
    finally:
        ts.stop()


def test_token_refusal_logged_once_per_refused_path(content, token_server, token_registry,
                                                    mount_factory, tmp_path):
    """A reading refused while another reading of the same path resolves is no
    error: a fresh-mount `cat <reg>/demo/hello/1.0/hello.txt`, whose reading
    `demo:hello` is refused (the token server grants demo/* only), logs no
    refusal at all. A path no reading of which resolves (private/app without
    credentials: `private:app` and `private/app:1.0` both refused) logs exactly
    one line, naming the registry and the repository."""
    _, pushed = content
    reg = token_registry
    m = mount_factory(opts=["registry=" + reg.host], debug=False, env=isolated_env(tmp_path))
    assert cat(os.path.join(m.path, reg.host, "demo", "hello", "1.0", "hello.txt")) == \
        b"Hello from ocifs!\n"
    words = ("refused", "denied", "UNAUTHORIZED")
    log = m.log_text()
    assert not [line for line in log.splitlines() if any(w in line for w in words)], log
    d = art(m, reg.host, "private/app", "1.0")
    assert os_error(os.path.join(d, "secret.txt")) == errno.EACCES
    lines = [line for line in m.log_text().splitlines() if any(w in line for w in words)]
    assert len(lines) == 1, lines
    assert "%s refused anonymous access to private/app" % reg.host in lines[0], lines


def test_token_failure_is_shared(content, token_server, registry_factory, mount_factory,
                                 tmp_path):
    """Concurrent requests needing the same token share one fetch and also its
    failure: a hung token server costs one token request and one timeout, not
    one per waiter. The error is EACCES naming the realm and the registry."""
    import threading
    store, pushed = content
    tproxy = FaultProxy("http://127.0.0.1:%d" % token_server.port)
    cfg = token_server.registry_config()
    cfg["realm"] = "http://%s/token" % tproxy.host
    reg = registry_factory(storage_dir=store.storage_dir, token=cfg)
    token_server.expires_in = 2
    m = mount_factory(opts=["registry=" + reg.host, "timeout=2", "retries=0"],
                      env=isolated_env(tmp_path))
    d, p = demo_paths(m, reg.host, pushed)
    assert os.path.isdir(d)         # manifest known; then let the token expire
    time.sleep(2.5)
    tproxy.add(r"/token", "hang", method=None, hold=30)
    seen = len(tproxy.seen(r"/token", method=None))
    blobs = [layout_blob(d, b.digest) for b in [p.config] + p.layers]
    errs = {}

    def reader(path):
        errs[path] = os_error(path)
    threads = [threading.Thread(target=reader, args=(b,)) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(errs.values()) == {errno.EACCES}, errs
    assert len(tproxy.seen(r"/token", method=None)) - seen == 1
    assert "token server %s (realm of %s)" % (tproxy.host, reg.host) in m.log_text()
    # The token server is back: the next request fetches anew.
    tproxy.clear()
    assert read(blobs[0]) == p.config.data
    tproxy.stop()


def test_token_realm_refused(content, token_server, registry_factory, mount_factory,
                             tmp_path):
    """A realm that refuses connections: EACCES and a message naming the realm
    and the registry (not ENOENT, not silence)."""
    from fixtures.registry import closed_port
    store, pushed = content
    port = closed_port()
    cfg = token_server.registry_config()
    cfg["realm"] = "http://127.0.0.1:%d/token" % port
    reg = registry_factory(storage_dir=store.storage_dir, token=cfg)
    m = mount_factory(opts=["registry=" + reg.host, "retries=0"], env=isolated_env(tmp_path))
    f = os.path.join(m.path, reg.host, "demo", "hello", "1.0", "hello.txt")
    assert os_error(f) == errno.EACCES
    assert "token server 127.0.0.1:%d (realm of %s)" % (port, reg.host) in m.log_text()


# --- redirects -------------------------------------------------------------------

@pytest.mark.parametrize("auth", ["basic", "token"])
@pytest.mark.parametrize("target", ["127.0.0.1", "localhost"])
def test_redirect_never_carries_authorization(content, htpasswd, token_server,
                                              registry_factory, mount_factory, tmp_path,
                                              auth, target):
    """Blob GETs answered with 307 to another host:port (object storage): the
    storage never sees Authorization, though the registry did."""
    store, pushed = content
    if auth == "basic":
        reg = registry_factory(storage_dir=store.storage_dir, htpasswd=htpasswd)
    else:
        reg = registry_factory(storage_dir=store.storage_dir,
                               token=token_server.registry_config())
    blobs = BlobStore(reg)
    proxy = FaultProxy(reg.url)
    try:
        sig = "X-Amz-Signature=presigned-0b5e7d"     # a presigned URL's secret
        proxy.add(r"/v2/.*/blobs/sha256:[0-9a-f]+", "redirect",
                  location=lambda path: blobs.url(path.rsplit("/", 1)[1], host=target,
                                                  query="?" + sig))
        docker_config(tmp_path, proxy.host)
        m = mount_factory(opts=["registry=" + proxy.host], debug=True,
                          env=isolated_env(tmp_path))
        p = pushed["private/app:1.0"]
        d = art(m, proxy.host, "private/app", "1.0")
        assert read(os.path.join(d, "secret.txt")) == b"classified\n"
        assert read(os.path.join(d, "config.json")) == p.config.data
        redirected = [s for s in proxy.seen(r"/v2/.*/blobs/.*") if s.status == 307]
        assert redirected and all("Authorization" in s.headers for s in redirected)
        assert len(blobs.seen) >= 2
        for h in blobs.seen:
            assert not any(k.lower() in ("authorization", "cookie") for k in h), h
        assert_no_secrets(m, PASSWORD, b64("%s:%s" % (USER, PASSWORD)), sig,
                          *token_server.issued)
        assert re.search(r"GET http://%s:%d/blobs/sha256:[0-9a-f]+\?\.\.\. -> 200"
                         % (target, blobs.port), m.log_text())
    finally:
        proxy.stop()
        blobs.stop()


# --- faults ----------------------------------------------------------------------

@pytest.fixture
def proxied(content, mount_factory, tmp_path):
    """A fault proxy in front of the content registry, and a mount through it."""
    store, pushed = content
    proxy = FaultProxy(store.url)

    def mount(*opts):
        return mount_factory(opts=["registry=" + proxy.host] + list(opts), debug=True,
                             env=isolated_env(tmp_path))
    yield proxy, mount, pushed
    proxy.stop()


def test_retry_after_429_and_503(proxied):
    proxy, mount, pushed = proxied
    proxy.add(r"/v2/demo/hello/manifests/1.0", "status", status=429,
              headers={"Retry-After": "1"}, times=1)
    proxy.add(r"/v2/demo/hello/blobs/.*", "status", status=503, times=2)
    m = mount()
    t0 = time.monotonic()
    assert_demo(m, proxy.host, pushed)
    assert time.monotonic() - t0 >= 1.0       # Retry-After was honored
    assert [s.status for s in proxy.seen(r"/v2/demo/hello/manifests/1.0")][:2] == [429, 200]
    assert sum(1 for s in proxy.seen(r"/v2/demo/hello/blobs/.*") if s.status == 503) == 2
    cache_hexes(m.cache)


def test_dropped_blob_resumes_with_range(proxied):
    proxy, mount, pushed = proxied
    big = pushed["demo/big:1"].layers[0]
    proxy.add(r"/v2/demo/big/blobs/" + big.digest, "drop", after=MiB, times=1)
    proxy.add(r"/v2/demo/big/blobs/" + big.digest, "drop", after=MiB, times=1)
    m = mount()
    f = art(m, proxy.host, "demo/big", "1") + "/big.bin"
    assert sha256_file(f) == big.hex
    gets = proxy.seen(r"/v2/demo/big/blobs/" + big.digest)
    assert len(gets) == 3, [(s.status, s.headers.get("Range")) for s in gets]
    assert "Range" not in gets[0].headers
    assert gets[1].headers.get("Range") == "bytes=%d-" % MiB
    assert gets[2].headers.get("Range") == "bytes=%d-" % (2 * MiB)
    assert gets[2].status == 206
    assert big.hex in cache_hexes(m.cache)


def test_dropped_blob_without_range_support_starts_over(proxied):
    proxy, mount, pushed = proxied
    big = pushed["demo/big:1"].layers[0]
    path = r"/v2/demo/big/blobs/" + big.digest
    proxy.add(path, "drop", after=MiB, times=1)
    proxy.add(path, "norange")
    m = mount()
    f = art(m, proxy.host, "demo/big", "1") + "/big.bin"
    assert sha256_file(f) == big.hex
    gets = proxy.seen(path)
    assert len(gets) == 2 and gets[1].status == 200
    assert big.hex in cache_hexes(m.cache)


def test_connection_reset_is_retried(proxied):
    proxy, mount, pushed = proxied
    proxy.add(r"/v2/demo/hello/blobs/.*", "reset", times=2)
    m = mount()
    assert_demo(m, proxy.host, pushed)


def test_retry_bound_gives_eio(proxied):
    proxy, mount, pushed = proxied
    big = pushed["demo/big:1"].layers[0]
    path = r"/v2/demo/big/blobs/" + big.digest
    proxy.add(path, "status", status=503)
    m = mount("retries=2")
    f = art(m, proxy.host, "demo/big", "1") + "/big.bin"
    assert os_error(f) == errno.EIO
    assert len(proxy.seen(path)) == 3
    assert re.search(r"demo/big@%s: injected \(gave up after 2 retries\) \(UNAVAILABLE\)"
                     % re.escape(big.digest), m.log_text()), m.log_text()
    assert big.hex not in cache_hexes(m.cache)
    # The registry recovers: the same mount reads it.
    proxy.clear()
    assert sha256_file(f) == big.hex
