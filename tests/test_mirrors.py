"""Mirrors and pull-through caches (issue 8), against real parts on loopback.

    origin      the module's docker-registry, holding the artifacts
    mirror      a second docker-registry in proxy mode (``proxy: remoteurl:``
                the origin), fresh for each test
    ocifs       -o registry=<origin> -o mirror=<origin>=http://<mirror>

Who fetched what is read from the registries' access logs: ocifs's requests
carry the user agent ``ocifs/<version>``, the pull-through cache's own requests
to the origin ``Go-http-client/1.1``.  Faults of a mirror (5xx, reset, hang,
wrong bytes, 403) come from the project's fault proxy (fixtures/faultproxy.py)
put in front of it.

The contract checked here:

  * Blobs and manifests by digest go to the mirrors first, in order, then the
    origin; tags, tag lists and catalogs go to the origin unless
    ``-o mirror_tags=mirror``.  The tree keeps the origin's name.
  * A mirror that errs (connection refused, 5xx, reset, timeout) is asked once
    (no retries) and then skipped for ``mirror_backoff`` seconds; one that says
    404, 401 or 403 passes the request on and is asked again next time.
  * Bytes from a mirror that do not match their digest (corrupt, short, long,
    another blob; a manifest by digest too) are never served nor cached: "a
    mirror sent bytes that do not match; asking the next source", and the next
    source serves them.  Bytes a mirror sent before its connection dropped are
    not resumed from another source.  Every file in ``<cache>/blobs/sha256``
    hashes to its name.
  * Mirrors are asked under their own name: the origin's credentials are never
    sent to them.
  * ``mirrors_conf=PATH`` (and the default ``$XDG_CONFIG_HOME/ocifs/mirrors.conf``,
    ``~/.config/ocifs/mirrors.conf``) lists "ORIGIN URL [URL...]" lines, after
    the -o mirror entries; a bad spec is a clear message and exit status 1.
  * ``/.ocifs/stats`` counts ``hosts: {"host:port": {"requests", "errors"}}``.
  * With the origin down, a warm pull-through cache keeps serving.

With ``mirror_tags=mirror`` a lookup does not trust the mirror's catalog, which
a pull-through cache fills only with what it holds: it asks for the tag. With
the origin down, nested repositories (``o/app``) resolve although the probe of
``o`` with tag ``app`` fails: a longer reading that holds wins over a shorter
one that could not be asked.
"""

import base64
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time

import pytest

from fixtures.cache import cache_blobs, sha256_file
from fixtures.faultproxy import FaultProxy
from fixtures.mount import fusermount_unmount, is_mounted
from fixtures.push import Client, push_artifact
from fixtures.registry import make_htpasswd, wait_for
from fixtures.timing import within

KiB = 1024
MiB = 1024 * KiB
BLOBS = r"/v2/.*/blobs/sha256:[0-9a-f]{64}"
OCIFS_AGENT = "ocifs/"
WRONG_BYTES = "a mirror sent bytes that do not match; asking the next source"
USER, PASSWORD = "alice", "pw-Alice-0123456789"
MUSER, MPASSWORD = "mirror-bot", "pw-Mirror-9876543210"


# --- helpers ------------------------------------------------------------------

def read(path):
    with open(path, "rb") as f:
        return f.read()








def tmp_files(cache):
    root = os.path.join(str(cache), "tmp")
    return [os.path.join(d, n) for d, _, files in os.walk(root) for n in files]


def stats(m):
    return json.loads(read(os.path.join(m.path, ".ocifs", "stats")))


def host_stats(m, host):
    return stats(m)["hosts"].get(host, {"requests": 0, "errors": 0})


def art(m, host, repo, ref):
    return os.path.join(m.path, host, repo, ref)


def mirror_opt(origin, url):
    return "mirror=%s=%s" % (origin.host, url)


def blob_re(repo, blob):
    return r"/v2/%s/blobs/%s" % (re.escape(repo), re.escape(blob.digest))


def by_ocifs(reg, since, path_regex=".*", method="GET"):
    """Requests ocifs made to ``reg`` (its user agent) since mark ``since``."""
    return [a for a in reg.requests(method, path_regex, since)
            if a.agent.startswith(OCIFS_AGENT)]


def by_others(reg, since, path_regex=".*", method="GET"):
    """Requests somebody else (a pull-through cache) made to ``reg``."""
    return [a for a in reg.requests(method, path_regex, since)
            if not a.agent.startswith(OCIFS_AGENT)]


def statuses(entries):
    return [a.status for a in entries]


def eventually(fn, timeout=5.0):
    """``fn()`` once truthy, or its last value after ``timeout``: a registry logs
    a request after answering it, which can be after our barrier request."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(0.05)


def logged(reg, since, path_regex, want, method="GET"):
    """The statuses of ocifs's requests to ``reg`` matching ``path_regex``, once
    they are ``want`` (or as they are after a deadline)."""
    def get():
        return statuses(by_ocifs(reg, since, path_regex, method))
    return want if eventually(lambda: get() == want) else get()


def b64(s):
    return base64.b64encode(s.encode()).decode()


# --- fixtures -----------------------------------------------------------------

class Content:
    pass


@pytest.fixture(scope="module")
def content(registry):
    """The artifacts, pushed once to the module's registry (the origin)."""
    c = Client(registry.host)
    rnd = random.Random(8)
    out = Content()
    out.small = push_artifact(c, "m/small", ["1"],
                              files=[("a.txt", b"alpha\n" * 100),
                                     ("b.bin", rnd.randbytes(100 * KiB)),
                                     ("c.bin", rnd.randbytes(300 * KiB))])
    # Over 4 MiB: hashed by the blob cache's hash thread as it downloads.
    out.big = push_artifact(c, "m/big", ["1"], files=[("big.bin", rnd.randbytes(8 * MiB))])
    out.bydigest = push_artifact(c, "m/bydigest", ["1"],
                                 files=[("x.bin", rnd.randbytes(50 * KiB))])
    # Many small blobs, each read once, for polling: "is the mirror used again?"
    out.many = push_artifact(c, "m/many", ["1"],
                             files=[("f%02d.bin" % i, rnd.randbytes(4 * KiB))
                                    for i in range(60)])
    out.moving = push_artifact(c, "m/moving", ["latest"], files=[("v.txt", b"new\n")])
    return out


@pytest.fixture
def mirror(registry, registry_factory):
    """A fresh pull-through cache (proxy mode) of the origin."""
    return registry_factory(name="mirror", proxy_remoteurl=registry.url)


@pytest.fixture
def faulty(request):
    """faulty(upstream_url) -> a FaultProxy in front of it, stopped at teardown."""
    made = []

    def make(url, seed=8):
        p = FaultProxy(url, seed=seed)
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


@pytest.fixture
def mounted(mount_factory, registry, tmp_path):
    """mounted(*opts, env=None) -> a mount of the origin with these options, a
    fresh cache, and no mirrors file of the user's (XDG_CONFIG_HOME empty)."""
    xdg = tmp_path / "xdg-empty"
    xdg.mkdir(exist_ok=True)

    def make(*opts, env=None, debug=None, registry_opt=True):
        e = {"XDG_CONFIG_HOME": str(xdg)}
        e.update(env or {})
        o = (["registry=" + registry.host] if registry_opt else []) + list(opts)
        return mount_factory(opts=o, env=e, debug=debug)
    return make


# --- reads through a pull-through cache -----------------------------------------

def test_reads_come_through_the_mirror(registry, content, mirror, mounted):
    small, big, bd = content.small, content.big, content.bydigest
    mo, mm = registry.mark(), mirror.mark()
    m = mounted(mirror_opt(registry, mirror.url))
    d = art(m, registry.host, "m/small", "1")
    assert sorted(os.listdir(d))[:2] == ["a.txt", "b.bin"]
    for b in small.layers:
        assert read(os.path.join(d, b.title)) == b.data, b.title
    f = os.path.join(art(m, registry.host, "m/big", "1"), "big.bin")
    assert within(lambda: sha256_file(f), 60, "read " + f)[0] == big.layers[0].hex
    # A manifest by digest goes to the mirror too.
    dd = art(m, registry.host, "m/bydigest", bd.digest)
    assert read(os.path.join(dd, "manifest.json")) == bd.manifest
    assert read(os.path.join(dd, "x.bin")) == bd.layers[0].data

    layers = [("m/small", b) for b in small.layers] + [("m/big", big.layers[0]),
                                                       ("m/bydigest", bd.layers[0])]
    for repo, b in layers:
        # ocifs asked the mirror, which answered...
        assert logged(mirror, mm, blob_re(repo, b), [200]) == [200]
        # ...after fetching from the origin itself; ocifs never asked the origin.
        assert eventually(lambda: any(a.status == 200 for a in
                                      by_others(registry, mo, blob_re(repo, b)))), \
            (b.title, [a.line for a in registry.access_log(mo)])
    assert by_ocifs(registry, mo, BLOBS, method=None) == [], \
        [a.line for a in by_ocifs(registry, mo, BLOBS, method=None)]
    assert logged(mirror, mm, r"/v2/m/bydigest/manifests/" + bd.digest, [200]) == [200]
    assert by_ocifs(registry, mo, r"/v2/.*/manifests/sha256:.*", method=None) == []
    # Tags are resolved at the origin (the default): the mirror saw none.
    for repo in ("m/small", "m/big"):
        assert logged(registry, mo, r"/v2/%s/manifests/1" % repo, [200]) == [200]
    assert by_ocifs(mirror, mm, r"/v2/.*/(manifests/[^s].*|tags/list)|/v2/_catalog",
                    method=None) == []
    # The tree keeps the origin's name; no entry for the mirror.
    assert mirror.host not in os.listdir(m.path)
    hosts = stats(m)["hosts"]
    assert hosts[mirror.host]["requests"] >= len(layers) + 1, hosts
    assert hosts[mirror.host]["errors"] == 0, hosts
    assert hosts[registry.host]["requests"] >= 2, hosts
    assert {b.hex for _, b in layers} <= set(cache_blobs(m.cache))
    assert tmp_files(m.cache) == []


def test_mirror_tags_mirror_resolves_tags_at_the_mirror(registry, content, mirror, mounted):
    small = content.small
    # A pull-through cache lists in its catalog only the repositories whose
    # blobs it holds (see the test below): pull one through it first.
    mc = Client(mirror.host)
    mc.get_blob("m/small", small.layers[0].digest)
    wait_for(lambda: "m/small" in mc.catalog(), 10, what="m/small in the mirror's catalog")
    mo, mm = registry.mark(), mirror.mark()
    m = mounted(mirror_opt(registry, mirror.url), "mirror_tags=mirror")
    assert "1" in os.listdir(os.path.join(m.path, registry.host, "m/small"))
    d = art(m, registry.host, "m/small", "1")
    for b in small.layers:
        assert read(os.path.join(d, b.title)) == b.data
    assert logged(mirror, mm, r"/v2/m/small/tags/list", [200]) == [200]
    assert eventually(lambda: 200 in statuses(by_ocifs(mirror, mm,
                                                      r"/v2/m/small/manifests/1")))
    # Everything went through the mirror: ocifs asked the origin only what the
    # mirror said 404 to (probes of "m:small" as a repository and tag).
    asked = by_ocifs(registry, mo, method=None)
    assert all(a.status == 404 for a in asked), [a.line for a in asked]
    for a in asked:
        assert eventually(lambda: 404 in statuses(by_ocifs(mirror, mm, re.escape(a.path)))), \
            a.line
    # The mirror asked the origin for the tag (distribution's proxy checks it).
    assert eventually(lambda: by_others(registry, mo, r"/v2/m/small/manifests/1", method=None))


def test_mirror_tags_mirror_with_a_cold_pull_through_cache(registry, content, mirror,
                                                          mounted):
    small = content.small
    m = mounted(mirror_opt(registry, mirror.url), "mirror_tags=mirror")
    d = art(m, registry.host, "m/small", "1")
    assert read(os.path.join(d, "a.txt")) == small.layers[0].data


def test_stale_tag_on_a_mirror(registry, content, registry_factory, mounted):
    """A mirror whose tag is stale: -o mirror_tags=origin (the default) reads the
    origin's tag, -o mirror_tags=mirror the mirror's."""
    stale = registry_factory(name="stale")             # a plain registry, not a proxy
    old = push_artifact(Client(stale.host), "m/moving", ["latest"],
                        files=[("v.txt", b"old\n")])
    new = content.moving
    m = mounted(mirror_opt(registry, stale.url))
    f = os.path.join(art(m, registry.host, "m/moving", "latest"), "v.txt")
    assert read(f) == b"new\n"
    m2 = mounted(mirror_opt(registry, stale.url), "mirror_tags=mirror")
    f2 = os.path.join(art(m2, registry.host, "m/moving", "latest"), "v.txt")
    assert read(f2) == b"old\n"
    assert read(os.path.join(art(m2, registry.host, "m/moving", "latest"),
                             "manifest.json")) == old.manifest
    assert read(os.path.join(art(m, registry.host, "m/moving", "latest"),
                             "manifest.json")) == new.manifest


@pytest.fixture
def origin_down(registry_factory, tmp_path):
    """An origin that has gone down after its mirror pulled everything through:
    (origin, mirror, {repo: Pushed}, mount options)."""
    origin = registry_factory(name="origin")
    c = Client(origin.host)
    pushed = {r: push_artifact(c, r, ["1"], files=[("app.bin", os.urandom(200 * KiB))])
              for r in ("app", "o/app")}
    mirror = registry_factory(name="mirror", proxy_remoteurl=origin.url)
    mc = Client(mirror.host)
    for r, p in pushed.items():
        mc.get_manifest(r, "1")
        mc.get_manifest(r, p.digest)
        mc.get_blob(r, p.layers[0].digest)
    # distribution stores a pulled blob behind the client's back: wait for it.
    wait_for(lambda: all(os.path.exists(mirror.blob_path(p.layers[0].digest))
                         for p in pushed.values()) and set(pushed) <= set(mc.catalog()),
             10, what="the mirror to hold the blobs")
    origin.stop()
    return origin, mirror, pushed, ["registry=" + origin.host,
                                    mirror_opt(origin, mirror.url), "timeout=3"]


def test_origin_down_a_warm_mirror_keeps_serving(origin_down, mounted):
    origin, mirror, pushed, opts = origin_down
    p = pushed["app"]

    def check(m, ref):
        f = os.path.join(art(m, origin.host, "app", ref), "app.bin")
        got, _ = within(lambda: read(f), 30, "read " + f)
        assert got == p.layers[0].data
    # By digest: from the mirror whatever mirror_tags says.
    check(mounted(*opts), p.digest)
    # By tag too with mirror_tags=mirror.
    m = mounted(*opts, "mirror_tags=mirror")
    check(m, "1")
    check(m, p.digest)


@pytest.mark.parametrize("tags", ["origin", "mirror"])
def test_origin_down_a_warm_mirror_serves_nested_repositories(tags, origin_down, mounted):
    origin, mirror, pushed, opts = origin_down
    p = pushed["o/app"]
    m = mounted(*opts, "mirror_tags=" + tags)
    f = os.path.join(art(m, origin.host, "o/app", p.digest), "app.bin")
    got, _ = within(lambda: read(f), 30, "read " + f)
    assert got == p.layers[0].data


# --- failover -------------------------------------------------------------------

def test_stopped_mirror_fails_over_then_is_used_again(registry, content, mirror, mounted):
    many = content.many.layers
    repo = "m/many"
    m = mounted(mirror_opt(registry, mirror.url), "mirror_backoff=1", "timeout=5")
    d = art(m, registry.host, repo, "1")
    files = iter(many)
    done = []

    def read_next():
        b = next(files)
        done.append(b)
        got, secs = within(lambda: read(os.path.join(d, b.title)), 30, "read " + b.title)
        assert got == b.data, b.title
        return b, secs

    mm = mirror.mark()
    b, _ = read_next()
    assert logged(mirror, mm, blob_re(repo, b), [200]) == [200]

    port = mirror.port
    mirror.stop()
    mo = registry.mark()
    b, secs = read_next()
    assert secs < 5, "failing over to the origin took %.1fs" % secs
    assert logged(registry, mo, blob_re(repo, b), [200]) == [200]
    h = host_stats(m, mirror.host)
    assert h["errors"] >= 1 and h["errors"] <= h["requests"], stats(m)["hosts"]
    # It keeps serving, from the origin, while the mirror is down.
    for _ in range(3):
        b, secs = read_next()
        assert secs < 5, secs
        assert logged(registry, mo, blob_re(repo, b), [200]) == [200]

    mirror.start()
    assert mirror.port == port
    mm = mirror.mark()
    deadline = time.monotonic() + 15
    while True:
        b, _ = read_next()
        if statuses(by_ocifs(mirror, mm, blob_re(repo, b))) == [200]:
            break
        assert time.monotonic() < deadline, \
            "the mirror was not asked again within 15s of its restart (mirror_backoff=1)"
        time.sleep(0.2)
    # Used for good again: the next blob comes from the mirror too.
    mo = registry.mark()
    b, _ = read_next()
    assert logged(mirror, mm, blob_re(repo, b), [200]) == [200]
    assert by_ocifs(registry, mo, BLOBS) == []
    assert {x.hex for x in done} <= set(cache_blobs(m.cache))
    assert tmp_files(m.cache) == []


ERRING = {
    "503": (dict(action="status", status=503), 2.0),
    "502": (dict(action="status", status=502), 2.0),
    "reset before answering": (dict(action="reset"), 2.0),
    "reset mid-body": (dict(action="reset", after=1000), 2.0),
    "hung (timeout)": (dict(action="hang", hold=30), 6.0),
}


@pytest.mark.parametrize("case", list(ERRING))
def test_erring_mirror_is_asked_once_then_skipped(case, registry, content, mirror, faulty,
                                                 mounted):
    kw, bound = ERRING[case]
    kw = dict(kw)
    small, repo = content.small, "m/small"
    proxy = faulty(mirror.url)
    proxy.add(BLOBS, kw.pop("action"), **kw)
    m = mounted(mirror_opt(registry, proxy.url), "mirror_backoff=60", "timeout=2",
                "retries=3")
    d = art(m, registry.host, repo, "1")
    a, b = small.layers[1], small.layers[2]
    mo = registry.mark()
    got, secs = within(lambda: read(os.path.join(d, a.title)), 30, "read " + a.title)
    assert got == a.data
    assert secs < bound, "failing over took %.1fs" % secs
    # Asked once: mirrors get no retries.
    assert len(proxy.seen(blob_re(repo, a))) == 1, proxy.actions(blob_re(repo, a))
    # (After a reset mid-body too: the origin is asked for all of it, not a Range.)
    assert logged(registry, mo, blob_re(repo, a), [200]) == [200]
    # Backed off: the next blob goes straight to the origin.
    got, secs = within(lambda: read(os.path.join(d, b.title)), 30, "read " + b.title)
    assert got == b.data
    assert secs < 2.0, secs
    assert proxy.seen(blob_re(repo, b)) == []
    assert logged(registry, mo, blob_re(repo, b), [200]) == [200]
    h = host_stats(m, proxy.host)
    assert h["requests"] >= 1, stats(m)["hosts"]
    # (stats count an error by HTTP status: a 200 cut short is not one.)
    if "mid-body" not in case:
        assert h["errors"] >= 1, stats(m)["hosts"]
    assert {a.hex, b.hex} <= set(cache_blobs(m.cache))
    assert tmp_files(m.cache) == []


def _refusing_mirror(how, registry, registry_factory, mirror, faulty, tmp_path):
    """A mirror that refuses: its URL, and seen(path_regex) -> the statuses of
    what ocifs asked it."""
    if how == "404 (empty registry)":
        r = registry_factory(name="empty")
        mark = r.mark()
        return r.url, r.host, lambda rx: statuses(by_ocifs(r, mark, rx))
    if how == "401 (registry with auth)":
        if not shutil.which("htpasswd"):
            pytest.skip("htpasswd (apache2-utils) is not installed")
        pw = make_htpasswd(str(tmp_path / "htpasswd"), {"somebody": "else-pw-123"})
        r = registry_factory(name="locked", proxy_remoteurl=registry.url, htpasswd=pw)
        mark = r.mark()
        return r.url, r.host, lambda rx: statuses(by_ocifs(r, mark, rx))
    p = faulty(mirror.url)
    p.add(r"/v2/.*", "status", method=None, status=403,
          body=b'{"errors":[{"code":"DENIED","message":"not for you"}]}')
    return p.url, p.host, lambda rx: [s.status for s in p.seen(rx)]


@pytest.mark.parametrize("how", ["404 (empty registry)", "401 (registry with auth)",
                                 "403 (fault proxy)"])
def test_refusing_mirror_passes_requests_on_without_backoff(
        how, registry, content, registry_factory, mirror, faulty, mounted, tmp_path):
    code = int(how[:3])
    url, host, seen = _refusing_mirror(how, registry, registry_factory, mirror, faulty,
                                       tmp_path)
    small, bd = content.small, content.bydigest
    mo = registry.mark()
    m = mounted(mirror_opt(registry, url), "mirror_backoff=300",
                env={"DOCKER_CONFIG": str(tmp_path / "no-docker-config"),
                     "REGISTRY_AUTH_FILE": None, "XDG_RUNTIME_DIR": None})
    d = art(m, registry.host, "m/small", "1")
    for b in small.layers:
        got, _ = within(lambda: read(os.path.join(d, b.title)), 30, "read " + b.title)
        assert got == b.data
        # Asked every time (no back-off after a refusal), then the origin.
        assert eventually(lambda: code in seen(blob_re("m/small", b))), (b.title, seen(".*"))
        assert 200 not in seen(blob_re("m/small", b))
        assert logged(registry, mo, blob_re("m/small", b), [200]) == [200]
    dd = art(m, registry.host, "m/bydigest", bd.digest)
    assert read(os.path.join(dd, "manifest.json")) == bd.manifest
    assert eventually(lambda: code in seen(r"/v2/m/bydigest/manifests/" + bd.digest))
    assert logged(registry, mo, r"/v2/m/bydigest/manifests/" + bd.digest, [200]) == [200]
    assert host_stats(m, host)["requests"] >= len(small.layers) + 1, stats(m)["hosts"]
    assert {b.hex for b in small.layers} <= set(cache_blobs(m.cache))


def test_mirrors_are_asked_in_order(registry, content, registry_factory, mirror, mounted):
    empty = registry_factory(name="empty")
    b = content.small.layers[1]
    path = blob_re("m/small", b)
    mo, mm, me = registry.mark(), mirror.mark(), empty.mark()
    m = mounted(mirror_opt(registry, empty.url), mirror_opt(registry, mirror.url))
    assert read(os.path.join(art(m, registry.host, "m/small", "1"), b.title)) == b.data
    assert logged(empty, me, path, [404]) == [404]
    assert logged(mirror, mm, path, [200]) == [200]
    assert by_ocifs(registry, mo, BLOBS) == []
    # The other way round, the first mirror answers and the second is not asked.
    b = content.small.layers[2]
    path = blob_re("m/small", b)
    mo, mm, me = registry.mark(), mirror.mark(), empty.mark()
    m2 = mounted(mirror_opt(registry, mirror.url), mirror_opt(registry, empty.url))
    assert read(os.path.join(art(m2, registry.host, "m/small", "1"), b.title)) == b.data
    assert logged(mirror, mm, path, [200]) == [200]
    assert by_ocifs(empty, me, method=None) == []
    assert by_ocifs(registry, mo, BLOBS) == []


def test_second_mirror_used_when_the_first_is_down(registry, content, registry_factory,
                                                   mirror, mounted):
    from fixtures.registry import closed_port
    b = content.small.layers[2]
    path = blob_re("m/small", b)
    mo, mm = registry.mark(), mirror.mark()
    dead = "http://127.0.0.1:%d" % closed_port()
    m = mounted(mirror_opt(registry, dead), mirror_opt(registry, mirror.url),
                "mirror_backoff=60")
    got, secs = within(lambda: read(os.path.join(art(m, registry.host, "m/small", "1"),
                                                 b.title)), 30, "read")
    assert got == b.data and secs < 5, secs
    assert logged(mirror, mm, path, [200]) == [200]
    assert by_ocifs(registry, mo, BLOBS) == []
    assert host_stats(m, dead[len("http://"):])["errors"] >= 1, stats(m)["hosts"]


# --- wrong bytes from a mirror ---------------------------------------------------

WRONG = ["corrupt", "corrupt first byte", "corrupt big blob", "short", "long",
         "another blob"]


def _wrong_rule(case, proxy, content, repo_blob):
    repo, b = repo_blob
    path = blob_re(repo, b)
    if case.startswith("corrupt"):
        proxy.add(path, "corrupt", offset=0 if "first" in case else None)
        return "corrupt"
    if case == "short":
        body = b.data[:-1000]
    elif case == "long":
        body = b.data + b"\0" * 1000
    else:
        body = content.small.layers[2].data
    proxy.add(path, "replace", body=body, digest=False,
              content_type="application/octet-stream")
    return "replace"


@pytest.mark.parametrize("case", WRONG)
def test_mirror_sending_wrong_bytes_is_passed_over(case, registry, content, mirror, faulty,
                                                   mounted):
    repo, b = ("m/big", content.big.layers[0]) if "big" in case else \
        ("m/small", content.small.layers[1])
    proxy = faulty(mirror.url)
    action = _wrong_rule(case, proxy, content, (repo, b))
    mo = registry.mark()
    m = mounted(mirror_opt(registry, proxy.url))
    f = os.path.join(art(m, registry.host, repo, "1"), b.title)
    n = 4 if "big" in case else 1
    results, errors = [], []

    def reader():
        try:
            results.append(sha256_file(f))
        except OSError as e:
            errors.append(e)
    threads = [threading.Thread(target=reader, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "readers still blocked after 60s"
    assert errors == [] and results == [b.hex] * n, (errors, results)
    # The mirror's answer was rejected, the origin's taken: once each.
    assert proxy.actions(blob_re(repo, b)) == {action: 1}
    assert logged(registry, mo, blob_re(repo, b), [200]) == [200]
    assert re.search(r"%s/%s@%s: %s" % (re.escape(registry.host), re.escape(repo),
                                        re.escape(b.digest), re.escape(WRONG_BYTES)),
                     m.log_text()), m.log_text()
    # Nothing wrong cached; the right bytes are, and are served from there.
    assert cache_blobs(m.cache).get(b.hex) == b.size
    assert tmp_files(m.cache) == []
    assert sha256_file(f) == b.hex
    assert proxy.actions(blob_re(repo, b)) == {action: 1}
    assert len(by_ocifs(registry, mo, blob_re(repo, b))) == 1


@pytest.mark.parametrize("fault", ["reset", "truncate"])
def test_mirror_sending_wrong_bytes_then_dropping_is_passed_over(fault, registry, content,
                                                                 mirror, faulty, mounted):
    """A mirror sends a wrong first byte, then drops the connection: what it
    sent is not resumed from the origin (the whole would fail verification):
    the origin is asked for everything."""
    repo, b = "m/small", content.small.layers[2]
    proxy = faulty(mirror.url)
    proxy.add(blob_re(repo, b), fault, after=64 * KiB, flip=[0])
    mo = registry.mark()
    m = mounted(mirror_opt(registry, proxy.url))
    f = os.path.join(art(m, registry.host, repo, "1"), b.title)
    try:
        got, _ = within(lambda: read(f), 30, "read " + b.title)
    except OSError as e:
        pytest.fail("read failed with %s; origin answered %s; log:\n%s" % (
            e, statuses(by_ocifs(registry, mo, blob_re(repo, b))), m.log_text()))
    finally:
        assert cache_blobs(m.cache).get(b.hex) in (None, b.size)
    assert got == b.data
    assert proxy.actions(blob_re(repo, b)) == {fault: 1}
    assert logged(registry, mo, blob_re(repo, b), [200]) == [200]
    assert cache_blobs(m.cache).get(b.hex) == b.size


@pytest.mark.parametrize("case", ["corrupt", "short", "long"])
def test_second_mirror_sending_wrong_bytes_is_passed_over(case, registry, content,
                                                          registry_factory, mirror, faulty,
                                                          mounted):
    """The first mirror says 404, the second sends wrong bytes: the origin's are
    taken, after asking the second mirror once."""
    empty = registry_factory(name="empty")
    repo, b = "m/small", content.small.layers[1]
    proxy = faulty(mirror.url)
    action = _wrong_rule(case, proxy, content, (repo, b))
    mo = registry.mark()
    m = mounted(mirror_opt(registry, empty.url), mirror_opt(registry, proxy.url))
    f = os.path.join(art(m, registry.host, repo, "1"), b.title)
    try:
        got, _ = within(lambda: read(f), 15, "read " + b.title)
    finally:
        asked = len(proxy.seen(blob_re(repo, b)))
    assert got == b.data
    assert asked == 1, "the second mirror was asked %d times" % asked
    assert proxy.actions(blob_re(repo, b)) == {action: 1}
    assert logged(registry, mo, blob_re(repo, b), [200]) == [200]
    assert cache_blobs(m.cache).get(b.hex) == b.size


def test_mirror_sending_a_wrong_manifest_is_passed_over(registry, content, mirror, faulty,
                                                        mounted):
    """A manifest by digest whose bytes from a mirror do not match: the next
    source (the origin) is asked; the wrong one is neither served nor cached."""
    bd, other = content.bydigest, content.small
    proxy = faulty(mirror.url)
    proxy.add(r"/v2/m/bydigest/manifests/" + bd.digest, "replace", method=None,
              body=other.manifest, digest=bd.digest)
    mo = registry.mark()
    m = mounted(mirror_opt(registry, proxy.url))
    d = art(m, registry.host, "m/bydigest", bd.digest)
    try:
        got, _ = within(lambda: read(os.path.join(d, "manifest.json")), 30, "read manifest")
    finally:
        # Whatever happens, the wrong manifest is neither served nor cached.
        assert other.hex not in cache_blobs(m.cache)
    assert got == bd.manifest
    assert eventually(lambda: 200 in statuses(
        by_ocifs(registry, mo, r"/v2/m/bydigest/manifests/" + bd.digest)))
    assert proxy.actions(r"/v2/m/bydigest/manifests/.*", method=None) == {"replace": 1}
    assert re.search(r"m/bydigest@%s: a mirror sent a manifest that hashes to %s"
                     % (re.escape(bd.digest), re.escape(other.digest)), m.log_text()), \
        m.log_text()


# --- auth: mirrors are asked under their own name ----------------------------------

@pytest.fixture
def auth_origin(registry_factory, tmp_path):
    """An origin that wants Basic auth (USER), serving the storage of a plain
    registry (the push tool has no auth): (origin, plain, the artifact)."""
    if not shutil.which("htpasswd"):
        pytest.skip("htpasswd (apache2-utils) is not installed")
    plain = registry_factory(name="plain")
    p = push_artifact(Client(plain.host), "private/app", ["1"],
                      files=[("secret.bin", os.urandom(64 * KiB))])
    pw = make_htpasswd(str(tmp_path / "origin.htpasswd"), {USER: PASSWORD})
    origin = registry_factory(name="origin", storage_dir=plain.storage_dir, htpasswd=pw)
    return origin, plain, p


def _docker_env(tmp_path, auths):
    d = tmp_path / "docker"
    d.mkdir(exist_ok=True)
    with open(d / "config.json", "w") as f:
        json.dump({"auths": {h: {"auth": b64("%s:%s" % up)} for h, up in auths.items()}}, f)
    os.chmod(d / "config.json", 0o600)
    return {"DOCKER_CONFIG": str(d), "REGISTRY_AUTH_FILE": None, "XDG_RUNTIME_DIR": None}


# The mirrors below pull through from the plain registry, which serves the
# origin's content without auth (distribution 2.8's proxy cannot answer a
# Basic challenge upstream): what matters is what ocifs sends them.

def test_origin_credentials_are_not_sent_to_a_mirror(auth_origin, registry_factory, faulty,
                                                     mounted, tmp_path):
    origin, plain, p = auth_origin
    mirror = registry_factory(name="mirror", proxy_remoteurl=plain.url)
    proxy = faulty(mirror.url)
    mo = origin.mark()
    m = mounted(mirror_opt(origin, proxy.url), registry_opt=False, debug=True,
                env=_docker_env(tmp_path, {origin.host: (USER, PASSWORD)}))
    d = art(m, origin.host, "private/app", "1")
    assert read(os.path.join(d, "secret.bin")) == p.layers[0].data
    # The origin was asked for the tag, with its credentials...
    assert eventually(lambda: 200 in statuses(
        by_ocifs(origin, mo, r"/v2/private/app/manifests/1")))
    assert by_ocifs(origin, mo, BLOBS) == []
    # ...the mirror for the blob, without.
    assert [s.status for s in proxy.seen(BLOBS)] == [200]
    sent = [s.headers.get("Authorization") for s in proxy.seen(".*", method=None)]
    assert sent and not any(sent), "the mirror was sent credentials: %s" % sent


def test_a_mirror_gets_its_own_credentials(auth_origin, registry_factory, faulty, mounted,
                                           tmp_path):
    origin, plain, p = auth_origin
    mpw = make_htpasswd(str(tmp_path / "mirror.htpasswd"), {MUSER: MPASSWORD})
    mirror = registry_factory(name="mirror", proxy_remoteurl=plain.url, htpasswd=mpw)
    proxy = faulty(mirror.url)
    mo = origin.mark()
    m = mounted(mirror_opt(origin, proxy.url), registry_opt=False,
                env=_docker_env(tmp_path, {origin.host: (USER, PASSWORD),
                                           proxy.host: (MUSER, MPASSWORD)}))
    d = art(m, origin.host, "private/app", "1")
    assert read(os.path.join(d, "secret.bin")) == p.layers[0].data
    assert [s.status for s in proxy.seen(BLOBS)][-1:] == [200], proxy.seen(BLOBS)
    sent = {s.headers.get("Authorization") for s in proxy.seen(".*", method=None)}
    assert "Basic " + b64("%s:%s" % (MUSER, MPASSWORD)) in sent, sent
    assert "Basic " + b64("%s:%s" % (USER, PASSWORD)) not in sent, sent
    assert by_ocifs(origin, mo, BLOBS) == []


# --- mirrors.conf ------------------------------------------------------------------

def _conf(path, text):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_mirrors_conf_file(registry, content, registry_factory, mirror, mounted, tmp_path):
    empty = registry_factory(name="empty")
    conf = _conf(tmp_path / "mirrors.conf",
                 "# ocifs mirrors\n\n"
                 "docker.io   mirror.gcr.io   # not used here\n"
                 "  %s\t%s %s  # two, in order\n" % (registry.host, empty.url, mirror.host))
    b = content.small.layers[1]
    path = blob_re("m/small", b)
    mo, mm, me = registry.mark(), mirror.mark(), empty.mark()
    m = mounted("mirrors_conf=" + conf)
    assert read(os.path.join(art(m, registry.host, "m/small", "1"), b.title)) == b.data
    assert logged(empty, me, path, [404]) == [404]
    # A bare host:port on loopback: plain HTTP.
    assert logged(mirror, mm, path, [200]) == [200]
    assert by_ocifs(registry, mo, BLOBS) == []


def test_mirror_options_come_before_the_file(registry, content, registry_factory, mirror,
                                             mounted, tmp_path):
    empty = registry_factory(name="empty")
    conf = _conf(tmp_path / "mirrors.conf", "%s %s\n" % (registry.host, mirror.url))
    b = content.small.layers[2]
    path = blob_re("m/small", b)
    mo, mm, me = registry.mark(), mirror.mark(), empty.mark()
    m = mounted(mirror_opt(registry, empty.url), "mirrors_conf=" + conf)
    assert read(os.path.join(art(m, registry.host, "m/small", "1"), b.title)) == b.data
    assert logged(empty, me, path, [404]) == [404]
    assert logged(mirror, mm, path, [200]) == [200]
    assert by_ocifs(registry, mo, BLOBS) == []


@pytest.mark.parametrize("where", ["XDG_CONFIG_HOME", "HOME"])
def test_default_mirrors_conf(where, registry, content, mirror, mounted, tmp_path):
    if where == "XDG_CONFIG_HOME":
        xdg = tmp_path / "xdg"
        _conf(xdg / "ocifs" / "mirrors.conf", "%s %s\n" % (registry.host, mirror.url))
        env = {"XDG_CONFIG_HOME": str(xdg)}
    else:
        home = tmp_path / "home"
        _conf(home / ".config" / "ocifs" / "mirrors.conf",
              "%s %s\n" % (registry.host, mirror.url))
        env = {"HOME": str(home), "XDG_CONFIG_HOME": None}
    b = content.small.layers[0]
    mo, mm = registry.mark(), mirror.mark()
    m = mounted(env=env)
    assert read(os.path.join(art(m, registry.host, "m/small", "1"), b.title)) == b.data
    assert logged(mirror, mm, blob_re("m/small", b), [200]) == [200]
    assert by_ocifs(registry, mo, BLOBS) == []


# --- bad specs --------------------------------------------------------------------

BAD = {
    "no origin": (["mirror=nonsense"], None, r"mirror 'nonsense': want ORIGIN=URL"),
    "empty origin": (["mirror==http://127.0.0.1:1"], None, r"want ORIGIN=URL"),
    "bad origin": (["mirror=not a registry!=http://127.0.0.1:1"], None,
                   r"origin is not a registry name"),
    "empty URL": (["mirror=127.0.0.1:5000="], None, r"mirror URL must be"),
    "URL with a path": (["mirror=127.0.0.1:5000=http://127.0.0.1:1/v2/"], None,
                        r"mirror '127\.0\.0\.1:5000=http://127\.0\.0\.1:1/v2/': "
                        r"mirror URL must be \[http\[s\]://\]host\[:port\] \(no path\)"),
    "other scheme": (["mirror=127.0.0.1:5000=ftp://127.0.0.1:1"], None, r"mirror URL must be"),
    "bad host": (["mirror=127.0.0.1:5000=http://bad host"], None,
                 r"mirror host is not a valid host\[:port\]"),
    "mirror_tags": (["mirror_tags=sometimes"], None,
                    r"-o mirror_tags=sometimes: want origin or mirror"),
    "missing file": (["mirrors_conf={tmp}/missing.conf"], None,
                     r"{tmp}/missing\.conf: No such file or directory"),
    "file: line without URL": (["mirrors_conf={conf}"], "# x\n127.0.0.1:5000\n",
                               r"{conf}:2: want ORIGIN URL \[URL\.\.\.\]"),
    "file: bad URL": (["mirrors_conf={conf}"], "127.0.0.1:5000 http://127.0.0.1:1 ftp://x/y\n",
                      r"mirror '127\.0\.0\.1:5000=ftp://x/y': mirror URL must be"),
}


def run_ocifs_expecting_failure(ocifs_bin, opts, mnt, env=None):
    """Run ocifs (not -f: a success would daemonize); unmount if it mounted."""
    cmd = [ocifs_bin]
    for o in opts:
        cmd += ["-o", o]
    try:
        r = subprocess.run(cmd + [str(mnt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30, env=env)
    finally:
        if is_mounted(str(mnt)):
            fusermount_unmount(str(mnt), lazy=True)
            pytest.fail("ocifs mounted with %s" % opts)
    return r


@pytest.mark.parametrize("case", list(BAD))
def test_bad_mirror_spec_is_a_clear_error(case, ocifs_bin, tmp_path):
    opts, conf_text, msg = BAD[case]
    conf = str(tmp_path / "mirrors.conf")
    if conf_text is not None:
        _conf(conf, conf_text)
    fmt = {"tmp": str(tmp_path), "conf": conf}
    opts = ["cache=%s" % (tmp_path / "cache")] + [o.format(**fmt) for o in opts]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "xdg-empty"))
    r = run_ocifs_expecting_failure(ocifs_bin, opts, mnt, env=env)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, (r.returncode, err)
    assert re.search("^ocifs: .*" + msg.format(**{k: re.escape(v) for k, v in fmt.items()}),
                     err, re.M), err
    assert len(err.splitlines()) <= 3, err


def test_mirrors_conf_that_is_a_directory_is_an_error(ocifs_bin, tmp_path):
    d = tmp_path / "confdir"
    d.mkdir()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run_ocifs_expecting_failure(ocifs_bin, ["cache=%s" % (tmp_path / "cache"),
                                                "mirrors_conf=%s" % d], mnt)
    assert r.returncode == 1, r.stderr.decode()
    assert str(d) in r.stderr.decode()
