#!/usr/bin/env python3
"""ocifs benchmark: a far-away token registry (issue 11).

    bench/latency.py

A docker-registry with token auth (the tests' token server, anonymous pulls
allowed) holds a seed-000 shaped provider (pushed as bench/platform.py does)
and a repository of BENCH_TAGS tags. Both the registry and its token server
are reached through loopback proxies adding BENCH_DELAY seconds each way
(tests/fixtures/latency.py; default 0.025 = 50 ms RTT, TCP handshakes
included). Printed side by side, each the median of BENCH_RUNS cold runs:

  * ocifs: a fresh mount and cache, ``MNT/<host>/<repo>/<tag>/entrypoint
    --version``: wall time, registry requests (the registry's access log) and
    token requests (the token server's log), against two token servers over
    the same storage: one granting every scope asked for, of repositories that
    exist or not ("*"), and one granting only the repositories that exist
    ("sourceplane/*", "bench/*"), as Docker Hub does. ocifs asks the readings
    of the path (``sourceplane:lite-ci`` and ``sourceplane/lite-ci:v0.2.0``)
    in one token request; with the second server the token says the shorter
    one is refused, and its manifest request is not sent;
  * the physical minimum: on kept-alive connections, GET manifest -> 401, one
    token, the manifest, this platform's blob, verify its SHA-256, write it,
    exec ``--version`` (in this process: no interpreter start-up counted);
  * skopeo copy of the artifact to an OCI layout + extract + exec;

as ratios (targets: ocifs <= 1.25x the minimum, <= 0.7x skopeo), then cold
``ls -l`` of the tag directory and of the BENCH_TAGS-tag repository with their
request counts (the latter stopped after BENCH_LIST_TIMEOUT s; both against the
token server granting every scope).

Environment:
  BENCH_DELAY          one-way latency in seconds          (default 0.025)
  BENCH_RUNS           repetitions (median)                (default 3)
  BENCH_TAGS           tags of the big repository          (default 10000)
  BENCH_LIST_TIMEOUT   seconds for the big ls -l           (default 120)
  OCIFS_BIN            the ocifs binary                    (default build/ocifs)
  BENCH_KEEP=1         keep the work directory

The proxy is reusable: ``from fixtures.latency import LatencyProxy`` (see its
docstring); ``far_registry()`` below sets up the whole far-away registry for
other benchmarks. Exits non-zero when something is broken, not for a missed
target.
"""
import os
import sys

# bench/platform.py is named like the stdlib module: keep this directory off
# the import path (see platform.py).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [d for d in sys.path if os.path.abspath(d or ".") != _HERE]

import hashlib  # noqa: E402
import http.client  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402

SRC = os.path.dirname(_HERE)
sys.path.insert(0, os.path.join(SRC, "tests"))

from fixtures.latency import LatencyProxy, measure_rtt  # noqa: E402
from fixtures.mount import MountError, OcifsMount  # noqa: E402
from fixtures.push import MANIFEST_ACCEPT, Client, push_artifact  # noqa: E402
from fixtures.registry import Registry  # noqa: E402
from fixtures.tokenserver import TokenServer  # noqa: E402


def _load_platform_bench():
    """bench/platform.py's provider builders (its name shadows the stdlib
    module, so load it under another)."""
    spec = importlib.util.spec_from_file_location("bench_platform",
                                                  os.path.join(_HERE, "platform.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


plat = _load_platform_bench()

OCIFS = os.environ.get("OCIFS_BIN", os.path.join(SRC, "build", "ocifs"))
DELAY = float(os.environ.get("BENCH_DELAY", "0.025"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
NTAGS = int(os.environ.get("BENCH_TAGS", "10000"))
LIST_TIMEOUT = float(os.environ.get("BENCH_LIST_TIMEOUT", "120"))
REPO, TAG = plat.REPO, plat.TAG
TAGS_REPO = "bench/tags"
TARGET_MIN, TARGET_SKOPEO = 1.25, 0.7
Broken = plat.Broken


class FarRegistry:
    """A token-auth docker-registry and its token server, each behind a
    LatencyProxy. ``host`` is the proxied registry ("127.0.0.1:PORT")."""

    def __init__(self, work, storage_dir, delay, acl=None):
        os.makedirs(work, exist_ok=True)
        self.ts = TokenServer(os.path.join(work, "ts"), acl=acl or {None: ["*"]})
        self.ts_proxy = LatencyProxy("127.0.0.1", self.ts.port, delay)
        cfg = self.ts.registry_config()
        cfg["realm"] = "http://%s/token" % self.ts_proxy.host
        self.reg = Registry(os.path.join(work, "far"), storage_dir=storage_dir, token=cfg)
        self.proxy = LatencyProxy("127.0.0.1", self.reg.port, delay)

    @property
    def host(self):
        return self.proxy.host

    def mark(self):
        return self.reg.mark(), len(self.ts.requests)

    def since(self, mark):
        """(registry access-log entries, token requests) since ``mark``."""
        return self.reg.access_log(since=mark[0]), self.ts.requests[mark[1]:]

    def stop(self):
        for p in (self.proxy, self.ts_proxy):
            p.stop()
        self.reg.stop()
        self.ts.stop()


def far_registry(work, delay=DELAY, push=None, acl=None):
    """Start a plain registry, call ``push(Client)`` on it, then serve its
    storage with token auth behind latency proxies. Returns a FarRegistry
    (caller stops it)."""
    plain = Registry(os.path.join(work, "push"))
    try:
        if push:
            push(Client(plain.host))
    finally:
        plain.stop()
    return FarRegistry(work, plain.storage_dir, delay, acl)


def clone_tags(storage_dir, repo, tag, n):
    """``n`` tags t00000... of ``repo``, all pointing where ``tag`` does, written
    straight into the registry's storage (pushing 10,000 tags over HTTP takes
    minutes; the registry reads tags from these files)."""
    tags = os.path.join(storage_dir, "docker", "registry", "v2", "repositories", repo,
                        "_manifests", "tags")
    src = os.path.join(tags, tag)
    for i in range(n):
        dst = os.path.join(tags, "t%05d" % i)
        if not os.path.exists(dst):
            shutil.copytree(src, dst)


# ---- the physical minimum ----------------------------------------------------

def parse_challenge(value):
    """'Bearer realm="...",service="...",scope="..."' -> dict."""
    scheme, _, rest = value.partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))


def minimum_flow(host, repo, tag, media_type, dest):
    """challenge, token, manifest, blob (verified, written), on kept-alive
    connections. Returns (seconds up to a runnable file, requests, token
    requests)."""
    t0 = time.monotonic()
    h, p = host.split(":")
    reg = http.client.HTTPConnection(h, int(p), timeout=60)
    path = "/v2/%s/manifests/%s" % (repo, tag)
    reg.request("GET", path, headers={"Accept": MANIFEST_ACCEPT})
    r = reg.getresponse()
    r.read()
    if r.status != 401:
        raise Broken("minimum flow: expected a 401 challenge, got %d" % r.status)
    scheme, ch = parse_challenge(r.getheader("WWW-Authenticate", ""))
    realm = urllib.parse.urlsplit(ch["realm"])
    tok = http.client.HTTPConnection(realm.hostname, realm.port, timeout=60)
    tok.request("GET", "%s?%s" % (realm.path, urllib.parse.urlencode(
        {"service": ch.get("service", ""), "scope": ch.get("scope", "")})))
    r = tok.getresponse()
    body = json.loads(r.read())
    auth = {"Authorization": "Bearer " + (body.get("token") or body["access_token"])}
    reg.request("GET", path, headers=dict(auth, Accept=MANIFEST_ACCEPT))
    r = reg.getresponse()
    manifest = json.loads(r.read())
    if r.status != 200:
        raise Broken("minimum flow: manifest %d" % r.status)
    layer = [d for d in manifest["layers"] if d["mediaType"] == media_type][0]
    reg.request("GET", "/v2/%s/blobs/%s" % (repo, layer["digest"]), headers=auth)
    r = reg.getresponse()
    hs = hashlib.sha256()
    with open(dest, "wb") as f:
        while True:
            chunk = r.read(256 << 10)
            if not chunk:
                break
            hs.update(chunk)
            f.write(chunk)
    if r.status != 200 or "sha256:" + hs.hexdigest() != layer["digest"]:
        raise Broken("minimum flow: blob %d or digest mismatch" % r.status)
    os.chmod(dest, 0o755)
    t = time.monotonic() - t0
    reg.close()
    tok.close()
    return t, 4, 1


# ---- the benchmark ----------------------------------------------------------

# subprocess vforks holding the GIL until the child's exec returns; exec of a
# file on the mount waits for the token server, a thread of this process:
# fork instead, so that the GIL is free while a child execs.
subprocess._USE_VFORK = False


def run(cmd, timeout=300, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, **kw)


def main():
    missing = [t for t in ("docker-registry", "fusermount3", "skopeo") if not shutil.which(t)]
    if missing:
        raise Broken("%s not found" % ", ".join(missing))
    if not (os.path.isfile(OCIFS) and os.access(OCIFS, os.X_OK)):
        raise Broken("%s not found: build first" % OCIFS)
    try:
        import jwt  # noqa: F401  (the token server signs with it)
    except ImportError:
        raise Broken("python3-jwt is not installed")
    my_os, my_arch = plat.this_platform()
    media_type = "application/vnd.sourceplane.bin.%s-%s" % (my_os, my_arch)
    expected = run([plat.ELF_PATH, "--version"]).stdout
    skopeo_global = [] if os.path.exists("/etc/containers/policy.json") else \
        ["--insecure-policy"]

    work = tempfile.mkdtemp(prefix="ocifs-bench-lat.")
    far = None
    mounts, services = [], []
    try:
        def push(c):
            files = [("thin.provider.yaml", plat.provider_yaml(plat.PROVIDER_SIZE),
                      "application/vnd.sourceplane.provider.v1"),
                     ("assets", plat.assets_tgz(plat.ASSETS_SIZE),
                      "application/vnd.sourceplane.assets.v1")]
            for (o, a), size in plat.BIN_SIZES.items():
                data = plat.elf_padded(size) if (o, a) == (my_os, my_arch) else \
                    os.urandom(size)
                files.append(("bin/%s/%s/entrypoint" % (o, a), data,
                              "application/vnd.sourceplane.bin.%s-%s" % (o, a)))
            print("pushing %s:%s and %s (%d tags)..." % (REPO, TAG, TAGS_REPO, NTAGS),
                  file=sys.stderr)
            push_artifact(c, REPO, [TAG], files=files)
            push_artifact(c, TAGS_REPO, ["seed"], files=[("x.txt", b"x\n", "text/plain")])

        far = far_registry(work, DELAY, push)
        clone_tags(far.reg.storage_dir, TAGS_REPO, "seed", NTAGS - 1)
        # The same storage behind a token server granting only what exists.
        strict = FarRegistry(os.path.join(work, "strict"), far.reg.storage_dir, DELAY,
                             acl={None: [REPO.split("/")[0] + "/*",
                                         TAGS_REPO.split("/")[0] + "/*"]})
        services.append(strict)
        print("connect + one request through the proxy: %.3f s" % measure_rtt(far.proxy),
              file=sys.stderr)
        host = far.host

        def fresh(name, at=far):
            m = OcifsMount(OCIFS, os.path.join(work, "mnt-" + name),
                           os.path.join(work, "cache-" + name),
                           opts=["registry=" + at.host], logdir=work,
                           debug=os.environ.get("BENCH_DEBUG") == "1")
            mounts.append(m)
            m.mount()
            return m

        def done(m):
            m.unmount(check=False)
            mounts.remove(m)
            shutil.rmtree(m.cache, ignore_errors=True)

        def counted(fn, at=far):
            mark = at.mark()
            t0 = time.monotonic()
            out = fn()
            t = time.monotonic() - t0
            regs, toks = at.since(mark)
            return t, len(regs), len(toks), regs, out

        print("timing (%d runs each, %.0f ms RTT)..." % (RUNS, 2000 * DELAY), file=sys.stderr)
        o_runs, os_runs, m_runs, s_runs = [], [], [], []
        o_rows = os_rows = []
        for i in range(RUNS):
            # ocifs: fresh mount and cache; the mount itself is not timed
            for at, name, runs in ((far, "x", o_runs), (strict, "s", os_runs)):
                m = fresh("%s%d" % (name, i), at)
                ep_rel = os.path.join(at.host, REPO, TAG, "entrypoint")
                ep = os.path.join(m.path, ep_rel)
                t, nreg, ntok, rows, r = counted(lambda: run([ep, "--version"]), at)
                plat.check_version(r, expected, "ocifs " + ep_rel)
                runs.append((t, nreg, ntok))
                if at is far:
                    o_rows = rows
                else:
                    os_rows = rows
                done(m)
            # the physical minimum, then exec
            dest = os.path.join(work, "min-entrypoint")

            def minimum():
                minimum_flow(host, REPO, TAG, media_type, dest)
                return run([dest, "--version"])
            t, nreg, ntok, _, r = counted(minimum)
            plat.check_version(r, expected, "minimum-flow entrypoint")
            m_runs.append((t, nreg, ntok))
            os.unlink(dest)
            # skopeo copy + extract + exec
            d = tempfile.mkdtemp(prefix="skopeo.", dir=work)

            def skopeo():
                r = run(["skopeo"] + skopeo_global + [
                    "copy", "--quiet", "--src-tls-verify=false",
                    "docker://%s/%s:%s" % (host, REPO, TAG), "oci:" + d + "/layout"])
                if r.returncode != 0:
                    raise Broken("skopeo copy: %s" % r.stderr.decode(errors="replace"))
                plat.extract_from_layout(d + "/layout", my_os, my_arch, d + "/entrypoint")
                return run([d + "/entrypoint", "--version"])
            t, nreg, ntok, _, r = counted(skopeo)
            plat.check_version(r, expected, "skopeo-extracted entrypoint")
            s_runs.append((t, nreg, ntok))
            shutil.rmtree(d, ignore_errors=True)

        def med(runs, k):
            return statistics.median(r[k] for r in runs)

        # cold ls -l of the tag directory, and of the big repository
        m = fresh("ls-tag")
        tag_dir = os.path.join(m.path, host, REPO, TAG)
        lt, lreg, ltok, l_rows, r = counted(lambda: run(["ls", "-l", tag_dir]))
        if r.returncode != 0:
            raise Broken("ls -l %s: %s" % (tag_dir, r.stderr.decode(errors="replace")))
        done(m)
        m = fresh("ls-big")
        big = os.path.join(m.path, host, TAGS_REPO)

        def ls_big():
            try:
                r = run(["ls", "-l", big], timeout=LIST_TIMEOUT)
                return r.returncode, r.stdout.count(b"\n")
            except subprocess.TimeoutExpired:
                return None, 0
        bt, breg, btok, _, (brc, blines) = counted(ls_big)
        done(m)

        # ---- report ---------------------------------------------------------
        def ok(b):
            return "ok" if b else "MISSED"

        tm, tsk = med(m_runs, 0), med(s_runs, 0)
        print()
        print("ocifs latency benchmark: token registry at %.0f ms RTT (one-way %.0f ms), "
              "%s:%s seed-000 shaped, median of %d" % (2000 * DELAY, 1000 * DELAY, REPO, TAG,
                                                       RUNS))
        print()
        print("%-44s %9s %9s %7s" % ("cold exec", "wall", "registry", "token"))
        ocifs_rows = (("ocifs, token server grants every scope", "grants *", o_runs),
                      ("ocifs, grants existing repositories only", "existing only", os_runs))
        for name, _, runs in ocifs_rows + (("physical minimum", None, m_runs),
                                           ("skopeo copy + exec", None, s_runs)):
            print("%-44s %7.3f s %9d %7d" % (name, med(runs, 0), med(runs, 1), med(runs, 2)))
        print()
        for _, short, runs in ocifs_rows:
            to = med(runs, 0)
            r1, r2 = to / tm, to / tsk
            print("%-44s %8.2fx  target <= %.2fx  %s" % (
                "ocifs (%s) / physical minimum" % short, r1, TARGET_MIN, ok(r1 <= TARGET_MIN)))
            print("%-44s %8.2fx  target <= %.2fx  %s" % (
                "ocifs (%s) / skopeo" % short, r2, TARGET_SKOPEO, ok(r2 <= TARGET_SKOPEO)))
        print("%-40s %s" % ("  ocifs (grants *) runs", " ".join("%.3f" % r[0] for r in o_runs)))
        print("%-40s %s" % ("  ocifs (existing only) runs",
                            " ".join("%.3f" % r[0] for r in os_runs)))
        print("%-40s %s" % ("  minimum runs", " ".join("%.3f" % r[0] for r in m_runs)))
        print("%-40s %s" % ("  skopeo runs", " ".join("%.3f" % r[0] for r in s_runs)))
        print()
        print("%-40s %9s %9s %7s" % ("cold ls -l", "wall", "registry", "token"))
        print("%-40s %7.3f s %9d %7d" % ("tag directory %s:%s" % (REPO, TAG), lt, lreg, ltok))
        big_t = ("%7.3f s" % bt) if brc == 0 else ("> %5.0f s" % LIST_TIMEOUT)
        print("%-40s %9s %9d %7d  (%d lines%s)" % (
            "%s, %d tags" % (TAGS_REPO, NTAGS), big_t, breg, btok, blines,
            "" if brc == 0 else ", stopped" if brc is None else ", exit %d" % brc))
        print()
        for what, rows in (("grants *", o_rows), ("existing only", os_rows)):
            print("ocifs cold exec (%s), requests of the last run:" % what)
            for a in rows:
                print("    %-4s %-72s %3d" % (a.method, a.path if len(a.path) <= 72 else
                                             a.path[:47] + "..." + a.path[-22:], a.status))
        print("ocifs cold ls -l of the tag directory, requests:")
        for a in l_rows:
            print("    %-4s %-72s %3d" % (a.method, a.path if len(a.path) <= 72 else
                                         a.path[:47] + "..." + a.path[-22:], a.status))
    finally:
        plat.cleanup(mounts, [far] + services, work)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, plat._sigterm)
    try:
        main()
    except (Broken, MountError) as e:
        print("latency: %s" % e, file=sys.stderr)
        sys.exit(1)
