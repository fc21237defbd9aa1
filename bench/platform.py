#!/usr/bin/env python3
"""ocifs benchmark: running a seed-000 provider binary (issue 4).

    bench/platform.py

A provider artifact shaped like ``shared/seeds/000_*`` (config ``{}``, a
provider yaml layer, an assets layer, four ``application/vnd.sourceplane.bin.
<os>-<arch>`` layers of ~4.4 MB titled ``bin/<os>/<arch>/entrypoint``; this
machine's one is a real ELF that answers ``--version``, the others random
bytes) is pushed to a docker-registry started here, then, side by side:

  * bytes: what a cold ``MNT/<host>/<repo>/<tag>/entrypoint --version`` fetches
    from the registry (sum of the GET response sizes in the registry's access
    log, and ``/.ocifs/stats``), next to the size of that layer and of all the
    layers, and the % saved vs downloading every layer (the seed's own figure:
    75.8 %).  Target: the manifest and that layer, nothing else.
  * time: cold ``entrypoint --version`` from a fresh mount and cache (median of
    BENCH_RUNS) next to ``skopeo copy docker://HOST/REPO:TAG oci:DIR`` plus
    extracting this platform's binary from the OCI layout plus exec
    ``--version``.  Target: <= 0.5x.  skopeo's bytes (it fetches every layer)
    are shown too.

Environment:
  BENCH_RUNS   repetitions of each timing (median)  (default 3)
  OCIFS_BIN    the ocifs binary                      (default build/ocifs)
  BENCH_KEEP=1 keep the work directory for inspection

Everything runs on loopback with the test fixtures (tests/fixtures); all mounts
and processes are cleaned up on exit, also on failure or SIGINT/SIGTERM.  Exits
non-zero when something is broken (a tool missing, the binary's output wrong,
another platform's binary fetched), not for a missed target.  Needs
docker-registry, fusermount3 and skopeo (Debian: ``apt-get install skopeo``).
"""
import os
import sys

# This file is named like the stdlib module "platform": take its own directory
# off the import path so that nothing imports it in place of the stdlib one.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [d for d in sys.path if os.path.abspath(d or ".") != _HERE]

import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

SRC = os.path.dirname(_HERE)
sys.path.insert(0, os.path.join(SRC, "tests"))

from fixtures.mount import MountError, OcifsMount  # noqa: E402
from fixtures.push import Client, push_artifact  # noqa: E402
from fixtures.registry import Registry  # noqa: E402

OCIFS = os.environ.get("OCIFS_BIN", os.path.join(SRC, "build", "ocifs"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
REPO = "sourceplane/lite-ci"
TAG = "v0.2.0"
ELF_PATH = "/usr/bin/sha256sum"       # a real ELF that prints a version
# the seed's layer sizes (shared/seeds/000_*: 4.47KB, 3.01KB, ~4.4/4.2/4.5/4.4MB)
PROVIDER_SIZE = 4470
ASSETS_SIZE = 3010
BIN_SIZES = {("linux", "amd64"): 4400000, ("linux", "arm64"): 4200000,
             ("darwin", "amd64"): 4500000, ("darwin", "arm64"): 4400000}
SEED_SAVED = 75.8
TARGET_RATIO = 0.5
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class Broken(Exception):
    """Something does not work (as opposed to a missed target)."""


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)


def this_platform():
    arch = ARCHES.get(os.uname().machine)
    if not arch or not sys.platform.startswith("linux"):
        raise Broken("no seed-000 platform for %s/%s" % (sys.platform, os.uname().machine))
    return "linux", arch


def provider_yaml(size):
    head = ("apiVersion: sourceplane.io/v1\nkind: Provider\nmetadata:\n"
            "  name: lite\n  version: %s\nspec:\n  runtime: binary\n"
            "  entrypoint: entrypoint\n  inputs:\n" % TAG)
    out, i = [head], 0
    while sum(map(len, out)) < size:
        out.append("    - name: input_%03d\n      type: string\n"
                   "      description: a provider input number %d\n" % (i, i))
        i += 1
    return "".join(out).encode()[:size]


def assets_tgz(size):
    """A tar.gz of a small assets tree, about ``size`` bytes (the payload is
    random, so gzip does not shrink it: tune its length to hit the size)."""
    import io
    import tarfile

    def build(n):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for name, data in (("assets/schemas/provider.schema.json",
                                b'{"type":"object","properties":{"name":{"type":"string"}}}\n'),
                               ("assets/icon.bin", payload[:n])):
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
                t.addfile(ti, io.BytesIO(data))
        return buf.getvalue()

    payload = os.urandom(size)
    n = size
    for _ in range(8):
        b = build(max(n, 0))
        if abs(len(b) - size) <= 16:
            break
        n -= len(b) - size
    return b


def elf_padded(size):
    """The ELF with random bytes appended up to ``size``: trailing bytes after
    the ELF image do not change what runs."""
    with open(ELF_PATH, "rb") as f:
        elf = f.read()
    return elf + os.urandom(max(0, size - len(elf)))


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=300, **kw)


def check_version(r, expected, what):
    if r.returncode != 0 or r.stdout != expected:
        raise Broken("%s --version: exit %d, stdout %r, stderr %r (expected %r)"
                     % (what, r.returncode, r.stdout[:200], r.stderr[:500], expected[:200]))


def gets_summary(entries):
    """(GET bytes, [(method, path, status, size)]) of access-log entries."""
    rows = [(a.method, a.path, a.status, a.size) for a in entries]
    return sum(a.size for a in entries if a.method == "GET"), rows


def blob_digest_of(path):
    m = re.search(r"/blobs/(sha256:[0-9a-f]{64})$", path)
    return m.group(1) if m else None


def extract_from_layout(layout, os_name, arch, dest):
    """From an OCI layout: index.json -> manifest -> the layer whose mediaType
    ends in ``.bin.<os>-<arch>``; copy its blob to ``dest``, chmod +x."""
    def blob(digest):
        alg, hexd = digest.split(":", 1)
        return os.path.join(layout, "blobs", alg, hexd)

    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    with open(blob(index["manifests"][0]["digest"])) as f:
        manifest = json.load(f)
    suffix = ".bin.%s-%s" % (os_name, arch)
    layer = [l for l in manifest["layers"] if l["mediaType"].endswith(suffix)]
    if len(layer) != 1:
        raise Broken("the OCI layout of skopeo has %d %s layers" % (len(layer), suffix))
    shutil.copyfile(blob(layer[0]["digest"]), dest)
    os.chmod(dest, 0o755)


def cleanup(mounts, services, work):
    """Unmount, stop each service (None allowed), remove work unless
    BENCH_KEEP=1: the end of every benchmark here, even a broken one."""
    for m in mounts:
        try:
            m.unmount(check=False)
        except Exception:
            pass
    for s in services:
        if s is not None:
            s.stop()
    if os.environ.get("BENCH_KEEP") == "1":
        print("kept %s" % work, file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


def main():
    missing = [t for t in ("docker-registry", "fusermount3", "skopeo") if not shutil.which(t)]
    if missing:
        raise Broken("%s not found (Debian: apt-get install -y %s)"
                     % (", ".join(missing), " ".join(
                         {"docker-registry": "docker-registry", "fusermount3": "fuse3",
                          "skopeo": "skopeo"}[t] for t in missing)))
    if not (os.path.isfile(OCIFS) and os.access(OCIFS, os.X_OK)):
        raise Broken("%s not found: build first (meson setup build && meson compile -C build)"
                     % OCIFS)
    if RUNS < 1:
        raise Broken("BENCH_RUNS must be >= 1")
    my_os, my_arch = this_platform()
    expected = run([ELF_PATH, "--version"]).stdout
    skopeo_global = [] if os.path.exists("/etc/containers/policy.json") else \
        ["--insecure-policy"]

    work = tempfile.mkdtemp(prefix="ocifs-bench-plat.")
    reg = None
    mounts = []
    try:
        # ---- registry and the artifact ------------------------------------------
        reg = Registry(os.path.join(work, "reg"))
        host = reg.host
        files = [("thin.provider.yaml", provider_yaml(PROVIDER_SIZE),
                  "application/vnd.sourceplane.provider.v1"),
                 ("assets", assets_tgz(ASSETS_SIZE), "application/vnd.sourceplane.assets.v1")]
        for (o, a), size in BIN_SIZES.items():
            data = elf_padded(size) if (o, a) == (my_os, my_arch) else os.urandom(size)
            files.append(("bin/%s/%s/entrypoint" % (o, a), data,
                          "application/vnd.sourceplane.bin.%s-%s" % (o, a)))
        print("pushing %s/%s:%s..." % (host, REPO, TAG), file=sys.stderr)
        p = push_artifact(Client(host), REPO, [TAG], files=files)   # config: {} (empty)
        mine = [l for l in p.layers
                if l.media_type == "application/vnd.sourceplane.bin.%s-%s" % (my_os, my_arch)][0]
        other_bins = {l.digest: l.media_type for l in p.layers
                      if ".bin." in l.media_type and l is not mine}
        all_layers = sum(l.size for l in p.layers)
        files = None
        ep_rel = os.path.join(host, REPO, TAG, "entrypoint")

        def fresh(name):
            m = OcifsMount(OCIFS, os.path.join(work, "mnt-" + name),
                           os.path.join(work, "cache-" + name),
                           opts=["registry=" + host], logdir=work)
            mounts.append(m)        # before mount(): a signal may come while it waits
            m.mount()
            return m

        def done(m):
            m.unmount()
            mounts.remove(m)
            shutil.rmtree(m.cache, ignore_errors=True)

        # ---- bytes: one cold exec through ocifs ---------------------------------
        m = fresh("bytes")
        mark = reg.mark()
        check_version(run([os.path.join(m.path, ep_rel), "--version"]), expected,
                      "ocifs " + ep_rel)
        entries = reg.access_log(since=mark)
        with open(os.path.join(m.path, ".ocifs", "stats")) as f:
            stats = json.load(f)
        done(m)
        o_bytes, o_rows = gets_summary(entries)
        o_blobs = {blob_digest_of(a.path) for a in entries if "/blobs/" in a.path} - {None}
        o_other_bins = sorted(other_bins[d] for d in o_blobs if d in other_bins)
        o_extra = sorted(d for d in o_blobs if d != mine.digest)
        o_manifests = sum(1 for a in entries if "/manifests/" in a.path)
        core = {"/v2/%s/manifests/%s" % (REPO, TAG), "/v2/%s/blobs/%s" % (REPO, mine.digest)}
        o_core = sum(a.size for a in entries if a.method == "GET" and a.path in core)
        o_other_rows = [r for r in o_rows if r[1] not in core]

        # ---- bytes: skopeo copy (untimed; warms the registry like the above) ----
        def skopeo_path(i):
            d = tempfile.mkdtemp(prefix="skopeo%d." % i, dir=work)
            layout = os.path.join(d, "layout")
            t0 = time.monotonic()
            r = run(["skopeo"] + skopeo_global + ["copy", "--quiet", "--src-tls-verify=false",
                     "docker://%s/%s:%s" % (host, REPO, TAG), "oci:" + layout])
            if r.returncode != 0:
                raise Broken("skopeo copy: exit %d: %s" % (r.returncode,
                                                            r.stderr.decode(errors="replace")))
            binary = os.path.join(d, "entrypoint")
            extract_from_layout(layout, my_os, my_arch, binary)
            r = run([binary, "--version"])
            t = time.monotonic() - t0
            check_version(r, expected, "skopeo-extracted entrypoint")
            shutil.rmtree(d, ignore_errors=True)
            return t

        mark = reg.mark()
        skopeo_path(0)
        s_entries = reg.access_log(since=mark)
        s_bytes, s_rows = gets_summary(s_entries)

        # ---- time: cold exec from a fresh mount vs skopeo + extract + exec -----
        print("timing (%d runs each)..." % RUNS, file=sys.stderr)
        t_ocifs, t_skopeo = [], []
        for i in range(RUNS):
            m = fresh("t%d" % i)
            ep = os.path.join(m.path, ep_rel)
            t0 = time.monotonic()
            r = run([ep, "--version"])
            t_ocifs.append(time.monotonic() - t0)
            check_version(r, expected, "ocifs " + ep_rel)
            done(m)
            t_skopeo.append(skopeo_path(i + 1))
        to, ts = statistics.median(t_ocifs), statistics.median(t_skopeo)

        # ---- report -------------------------------------------------------------
        def ok(b):
            return "ok" if b else "MISSED"

        def pct(part, whole):
            v = round(100.0 * (1 - part / whole), 1) if whole else 0.0
            return v if v != 0 else 0.0          # no "-0.0"

        target_bytes = len(p.manifest) + mine.size
        print()
        print("ocifs platform benchmark: %s/%s:%s, seed-000 shaped, this platform %s/%s"
              % (host, REPO, TAG, my_os, my_arch))
        print("layers: provider %d B, assets %d B, bin %s; all layers %d B; manifest %d B"
              % (p.layers[0].size, p.layers[1].size,
                 " ".join("%s-%s %d" % (o, a, s) for (o, a), s in BIN_SIZES.items()),
                 all_layers, len(p.manifest)))
        print()
        print("%-46s %12s %12s %8s %s" % ("bytes from the registry (cold exec)",
                                          "bytes", "% saved", "", "target"))
        print("%-46s %12d %11.1f%% %8s %s" % (
            "ocifs: GETs in the access log", o_bytes, pct(o_bytes, all_layers), "",
            "<= manifest + layer (%d)  %s" % (target_bytes, ok(o_bytes <= target_bytes))))
        print("%-46s %12d" % ("  of which the manifest and the layer", o_core))
        print("%-46s %12d   (%s)" % ("  of which other requests", o_bytes - o_core,
                                     ", ".join("%s %d" % (path, status) for _, path, status, _
                                               in o_other_rows) or "none"))
        print("%-46s %12d %11.1f%%" % ("ocifs: /.ocifs/stats bytes_fetched",
                                        stats["bytes_fetched"],
                                        pct(stats["bytes_fetched"], all_layers)))
        print("%-46s %12d" % ("ocifs: /.ocifs/stats bytes_saved_by_platform",
                              stats["bytes_saved_by_platform"]))
        print("%-46s %12d %11.1f%%   (the seed's own figure: %.1f %%)" % (
            "size of the %s-%s layer" % (my_os, my_arch), mine.size, pct(mine.size, all_layers),
            SEED_SAVED))
        print("%-46s %12d %11.1f%%" % ("size of all layers", all_layers, 0.0))
        print("%-46s %12d %11.1f%%   (%.2fx the bytes of ocifs)" % (
            "skopeo copy: GETs in the access log", s_bytes, pct(s_bytes, all_layers),
            s_bytes / o_bytes if o_bytes else float("inf")))
        print()
        print("%-46s %12s %12s" % ("registry requests (cold exec)", "ocifs", "target"))
        print("%-46s %12d %12d  %s" % ("manifest requests (access log)", o_manifests, 1,
                                       ok(o_manifests <= 1)))
        print("%-46s %12d %12d  %s" % ("  /.ocifs/stats manifest_requests",
                                       stats["manifest_requests"], 1,
                                       ok(stats["manifest_requests"] <= 1)))
        print("%-46s %12d %12d  %s" % ("  /.ocifs/stats failed_requests",
                                       stats["failed_requests"], 0,
                                       ok(stats["failed_requests"] == 0)))
        print("%-46s %12d %12d  %s" % ("other requests (access log)", len(o_other_rows),
                                       0, ok(not o_other_rows)))
        print("%-46s %12d %12d  %s" % ("blobs requested (access log, distinct)", len(o_blobs),
                                       1, ok(o_blobs == {mine.digest})))
        print("%-46s %12d %12d  %s" % ("  /.ocifs/stats blob_requests",
                                       stats["blob_requests"], 1,
                                       ok(stats["blob_requests"] <= 1)))
        print("%-46s %12d %12d  %s" % ("other platforms' binary layers requested",
                                       len(o_other_bins), 0, ok(not o_other_bins)))
        print()
        print("%-46s %12s %12s %8s %s" % ("time, median of %d" % RUNS, "ocifs", "skopeo path",
                                          "ratio", "target"))
        r = to / ts if ts else float("inf")
        print("%-46s %10.3f s %10.3f s %7.2fx %s  %s" % (
            "cold entrypoint --version vs copy+extract+exec", to, ts, r,
            "<= %.2fx" % TARGET_RATIO, ok(r <= TARGET_RATIO)))
        print("%-46s %s" % ("  ocifs runs", " ".join("%.3f" % t for t in t_ocifs)))
        print("%-46s %s" % ("  skopeo path runs", " ".join("%.3f" % t for t in t_skopeo)))
        print()
        print("requests seen by the registry:")
        for what, rows in (("ocifs cold exec", o_rows), ("skopeo copy", s_rows)):
            print("  %s:" % what)
            for method, path, status, size in rows:
                d = blob_digest_of(path)
                name = ""
                if d:
                    name = ({l.digest: l.title for l in p.layers}.get(d) or
                            ("config" if d == p.config.digest else "?"))
                print("    %-4s %-70s %3d %9d  %s" % (method, path if len(path) <= 70 else
                                                     path[:45] + "..." + path[-22:],
                                                     status, size, name))
        if o_other_bins:
            raise Broken("ocifs fetched another platform's binary layer: %s"
                         % ", ".join(o_other_bins))
        if o_extra:
            print("\nnote: ocifs also fetched %s" % ", ".join(o_extra))
    finally:
        cleanup(mounts, [reg], work)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        main()
    except (Broken, MountError) as e:
        print("platform: %s" % e, file=sys.stderr)
        sys.exit(1)
