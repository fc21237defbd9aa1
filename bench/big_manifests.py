#!/usr/bin/env python3
"""ocifs benchmark: daemon memory while big manifests are looked up one after
another (issue 12's "61 x 4 MB manifests", issue 11's bounded views).

    bench/big_manifests.py                            # build/ocifs
    OCIFS_BIN_BEFORE=/old/ocifs bench/big_manifests.py  # also an older binary

One real docker-registry holds a repository of BENCH_TAGS tags, each a distinct
manifest of about 4 MB, in two shapes:

  * ``annotation``: one layer and one big annotation (the parsed view is about
    the manifest's size);
  * ``layers``: 4,096 layers with long titles (the parsed view, with an entry
    and strings per layer, is a few times the manifest's size).

For each binary, each shape and each BENCH_BOUNDS value of -o
artifacts_max_bytes, on a fresh mount and cache, it looks up every tag in turn
(a getxattr of the tag directory: one manifest each) and prints the daemon's
RSS before (baseline: mounted, the tag list read) and after, next to
baseline + the bound, and its peak (VmHWM: the views kept plus one lookup's
parse of a manifest). Environment: BENCH_TAGS (61),
BENCH_BOUNDS (64M,16M), BENCH_SHAPES (annotation,layers), OCIFS_BIN,
OCIFS_BIN_BEFORE, BENCH_KEEP=1. Timings belong here, never in tests; exits
non-zero when something is broken, not for a missed target.
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [d for d in sys.path if os.path.abspath(d or ".") != _HERE]
SRC = os.path.dirname(_HERE)
sys.path.insert(0, os.path.join(SRC, "tests"))

from fixtures.mount import OcifsMount  # noqa: E402
from fixtures.push import OCI_MANIFEST, Client  # noqa: E402
from fixtures.registry import Registry  # noqa: E402

TAGS = int(os.environ.get("BENCH_TAGS", "61"))
BOUNDS = os.environ.get("BENCH_BOUNDS", "64M,16M").split(",")
SHAPES = os.environ.get("BENCH_SHAPES", "annotation,layers").split(",")
OCIFS = os.environ.get("OCIFS_BIN", os.path.join(SRC, "build", "ocifs"))
BEFORE = os.environ.get("OCIFS_BIN_BEFORE")
TARGET = 4_000_000          # bytes per manifest (registries refuse over 4 MiB)
LAYERS = 4096               # manifest.h: MANIFEST_MAX_ENTRIES


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def desc(media_type, data):
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data)}


def manifest(shape, i, config, layer):
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "config": desc("application/vnd.oci.empty.v1+json", config)}
    lay = desc("application/octet-stream", layer)
    if shape == "annotation":
        m["layers"] = [dict(lay, annotations={"org.opencontainers.image.title": "f.txt"})]
        m["annotations"] = {"n": str(i), "pad": ""}
        m["annotations"]["pad"] = "x" * (TARGET - len(json.dumps(m)))
    else:
        # Titles of 4 path components, each < 256 bytes, long enough that
        # the manifest comes near TARGET.
        per = (TARGET // LAYERS) - len(json.dumps(lay)) - 80
        comp = max(8, per // 4 - 1)
        m["layers"] = [dict(lay, annotations={"org.opencontainers.image.title": "/".join(
            ("%d-%04d-%d-" % (i, k, c)).ljust(comp, "a") for c in range(4))})
            for k in range(LAYERS)]
        m["annotations"] = {"n": str(i)}
    return json.dumps(m, separators=(",", ":")).encode()


def setup(reg):
    c = Client(reg.host)
    config, layer = b"{}", b"layer\n"
    c.push_blob("big/annotation", config)
    c.push_blob("big/annotation", layer)
    c.push_blob("big/layers", config)
    c.push_blob("big/layers", layer)
    sizes = {}
    for shape in SHAPES:
        log("pushing %d %s manifests..." % (TAGS, shape))
        for i in range(TAGS):
            body = manifest(shape, i, config, layer)
            sizes[shape] = len(body)
            c.push_manifest("big/" + shape, "t%02d" % i, body, OCI_MANIFEST)
    return sizes


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)


def measure(binary, work, reg, label, shape, bound):
    name = "%s-%s-%s" % (label, shape, bound)
    m = OcifsMount(binary, os.path.join(work, "mnt-" + name), os.path.join(work, "cache-" + name),
                   opts=["registry=" + reg.host, "artifacts_max_bytes=" + bound], logdir=work)
    m.mount()
    try:
        repo = os.path.join(m.path, reg.host, "big", shape)
        tags = sorted(os.listdir(repo))
        assert len(tags) == TAGS, tags
        base = m.memory_kib() / 1024
        t0 = time.monotonic()
        for t in tags:
            os.getxattr(os.path.join(repo, t), "user.oci.digest")
        dt = time.monotonic() - t0
        peak, after = m.memory_kib("VmHWM") / 1024, m.memory_kib() / 1024
    finally:
        m.unmount(check=False)
    limit = base + parse_size(bound) / (1 << 20)
    # At rest the views are what is left; the peak adds one lookup's parse.
    return ("baseline %.1f MiB, after %.1f (baseline + bound %.1f: %s), peak %.1f (%.1f s)" %
            (base, after, limit, "within" if after <= limit + 0.5 else "OVER", peak, dt))


def main():
    work = tempfile.mkdtemp(prefix="ocifs-bench-big.")
    reg = None
    results = []
    try:
        reg = Registry(os.path.join(work, "reg"))
        sizes = setup(reg)
        for shape in SHAPES:
            log("%s: %d tags of %d bytes each" % (shape, TAGS, sizes[shape]))
        for label, binary in (("before", BEFORE), ("after", OCIFS)):
            if not binary:
                continue
            for shape in SHAPES:
                for bound in BOUNDS:
                    r = measure(binary, work, reg, label, shape, bound)
                    log("  %s %s artifacts_max_bytes=%s: %s" % (label, shape, bound, r))
                    results.append((label, shape, bound, r))
        for label, shape, bound, r in results:
            print("%-6s %-10s artifacts_max_bytes=%-4s %s" % (label, shape, bound, r))
    finally:
        if reg:
            reg.stop()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
