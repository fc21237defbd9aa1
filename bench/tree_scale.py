#!/usr/bin/env python3
"""ocifs benchmark: the namespace tree at size (issue 11), on loopback.

    bench/tree_scale.py                       # build/ocifs
    OCIFS_BIN_BEFORE=/old/ocifs bench/tree_scale.py   # also an older binary

One real docker-registry holds a repository of BENCH_TAGS tags, a namespace
of BENCH_REPOS repositories and a repository of BENCH_ARTS distinct
artifacts; a FaultProxy in front of it answers /v2/_catalog with
BENCH_NAMES synthetic repositories under ``huge/``. For each binary, each on a
fresh mount and cache, it prints:

  * cold ``ls -l`` of the BENCH_TAGS-tag repository: seconds, registry requests,
    and the ratio to ``ls -l`` of a local directory of as many directories;
  * cold ``ls -l`` of the BENCH_REPOS-repository namespace: seconds, requests;
  * readdir of the BENCH_NAMES names (``ls -f``, one listing): seconds;
  * daemon RSS (VmRSS, MiB) after BENCH_LOOKUPS getxattr lookups (they always
    reach the daemon) spread over the BENCH_ARTS artifacts, from 8 threads,
    with the time they took and the manifest requests they made.

Environment: BENCH_TAGS (10000), BENCH_REPOS (2000), BENCH_NAMES (100000),
BENCH_ARTS (12000), BENCH_LOOKUPS (64000), BENCH_TIMEOUT (seconds per step,
120), OCIFS_BIN, OCIFS_BIN_BEFORE, BENCH_KEEP=1. Timings belong here, never in
tests. Exits non-zero when something is broken, not for a missed target.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [d for d in sys.path if os.path.abspath(d or ".") != _HERE]
SRC = os.path.dirname(_HERE)
sys.path.insert(0, os.path.join(SRC, "tests"))

from fixtures.faultproxy import FaultProxy  # noqa: E402
from fixtures.mount import OcifsMount  # noqa: E402
from fixtures.push import Client, push_artifact, tag  # noqa: E402
from fixtures.registry import Registry  # noqa: E402

TAGS = int(os.environ.get("BENCH_TAGS", "10000"))
REPOS = int(os.environ.get("BENCH_REPOS", "2000"))
NAMES = int(os.environ.get("BENCH_NAMES", "100000"))
ARTS = int(os.environ.get("BENCH_ARTS", "12000"))
LOOKUPS = int(os.environ.get("BENCH_LOOKUPS", "64000"))
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "120"))
OCIFS = os.environ.get("OCIFS_BIN", os.path.join(SRC, "build", "ocifs"))
BEFORE = os.environ.get("OCIFS_BIN_BEFORE")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def parallel(items, fn, threads=8):
    it = iter(items)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                x = next(it, None)
            if x is None:
                return
            fn(x)
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def setup(reg):
    c = Client(reg.host)
    log("pushing %d tags, %d repositories, %d artifacts..." % (TAGS, REPOS, ARTS))
    p = push_artifact(c, "scale/tags", ["t00000"], files=[("f.txt", b"f\n")])
    parallel(["t%05d" % i for i in range(1, TAGS)],
             lambda t: c.push_manifest("scale/tags", t, p.manifest, p.media_type))
    parallel(range(REPOS), lambda i: push_artifact(
        Client(reg.host), "scale/ns/r%04d" % i, ["1"], files=[("f.txt", b"%d\n" % i)]))
    a = push_artifact(c, "scale/arts", ["a00000"], files=[("f.txt", b"a\n")])
    body = json.loads(a.manifest)

    def one(i):
        m = dict(body, annotations={"n": str(i)})
        c.push_manifest("scale/arts", "a%05d" % i, json.dumps(m).encode(), a.media_type)
    parallel(range(1, ARTS), one)
    push_artifact(c, "huge/x", ["1"], files=[("f.txt", b"x\n")])


def timed(cmd):
    t0 = time.monotonic()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError("%s: %s" % (cmd, r.stderr.decode(errors="replace")[-500:]))
    return dt, r.stdout.count(b"\n")


class Results(dict):
    """Printed as they come: a long run still shows what it measured."""

    def __init__(self, label):
        super().__init__()
        self.label = label

    def __setitem__(self, k, v):
        super().__setitem__(k, v)
        log("  %s: %-45s %s" % (self.label, k, v))


def native_ls_l(work):
    """The baseline: `ls -l` of a local directory of TAGS directories (on
    the disk the bench works on, warm). ls -l also asks each entry for
    three xattrs (security.selinux and the two POSIX ACLs), which on a
    FUSE mount are three round trips to the daemon per entry."""
    d = os.path.join(work, "native-tags")
    os.makedirs(d, exist_ok=True)
    for i in range(TAGS):
        os.makedirs(os.path.join(d, "t%05d" % i), exist_ok=True)
    timed(["ls", "-l", d])
    return min(timed(["ls", "-l", d])[0] for _ in range(3))


def measure(binary, work, reg, proxy, label, native):
    out = Results(label)
    n = [0]

    def mount(host):
        n[0] += 1
        m = OcifsMount(binary, os.path.join(work, "mnt-%s-%d" % (label, n[0])),
                       os.path.join(work, "cache-%s-%d" % (label, n[0])),
                       opts=["registry=" + host, "insecure=" + host], logdir=work)
        m.mount()
        return m

    for what, rel in (("ls -l %d tags" % TAGS, "scale/tags"),
                      ("ls -l %d repositories" % REPOS, "scale/ns")):
        m = mount(reg.host)
        try:
            mark = reg.mark()
            try:
                dt, lines = timed(["ls", "-l", os.path.join(m.path, reg.host, rel)])
                line = "%.2f s, %d requests, %d lines" % (
                    dt, reg.count(None, ".*", since=mark), lines)
                if rel == "scale/tags":
                    line += " (%.1fx native ls -l of %d local dirs, %.3f s)" % (
                        dt / native, TAGS, native)
                out[what] = line
            except subprocess.TimeoutExpired:
                out[what] = "over %.0f s (stopped), %d requests so far" % (
                    TIMEOUT, reg.count(None, ".*", since=mark))
        finally:
            m.unmount(check=False)

    m = mount(proxy.host)
    try:
        d = os.path.join(m.path, proxy.host, "huge")
        try:
            dt, lines = timed(["ls", "-f", d])
            out["readdir %d names" % NAMES] = "%.2f s, %d names" % (dt, lines - 2)
        except subprocess.TimeoutExpired:
            out["readdir %d names" % NAMES] = "over %.0f s (stopped)" % TIMEOUT
    finally:
        m.unmount(check=False)

    m = mount(reg.host)
    try:
        base = os.path.join(m.path, reg.host, "scale", "arts")
        rnd = random.Random(1)
        paths = [os.path.join(base, "a%05d" % (i % ARTS)) for i in range(ARTS)]
        paths += [os.path.join(base, "a%05d" % rnd.randrange(ARTS))
                  for _ in range(LOOKUPS - ARTS)]
        errors = []

        def look(p):
            try:
                os.getxattr(p, "user.oci.digest")
            except OSError as e:
                errors.append(e.errno)
        mark = reg.mark()
        t0 = time.monotonic()
        parallel(paths, look)
        dt = time.monotonic() - t0
        # Tag answers older than tag_ttl (60 s) are asked again: a run
        # longer than that costs manifest requests beyond the first pass.
        out["RSS after %d lookups over %d artifacts" % (LOOKUPS, ARTS)] = \
            "%.1f MiB (%.1f s, %d errors, %d manifest requests)" % (
                m.memory_kib() / 1024, dt, len(errors),
                reg.count(None, r"/v2/.*/manifests/.*", since=mark))
    finally:
        m.unmount(check=False)
    return out


def main():
    work = tempfile.mkdtemp(prefix="ocifs-bench-tree.")
    reg = proxy = None
    try:
        reg = Registry(os.path.join(work, "reg"))
        setup(reg)
        proxy = FaultProxy(reg.url)
        names = ["huge/n%06d" % i for i in range(NAMES - 1)] + ["huge/x"]
        proxy.add(r"/v2/_catalog", "replace", body=json.dumps({"repositories": names}).encode(),
                  content_type="application/json", digest=False)
        results = []
        native = native_ls_l(work)
        for label, binary in (("before", BEFORE), ("after", OCIFS)):
            if binary:
                log("measuring %s (%s)..." % (label, binary))
                results.append((label, measure(binary, work, reg, proxy, label, native)))
        for label, r in results:
            print("%s:" % label)
            for k, v in r.items():
                print("  %-45s %s" % (k, v))
    finally:
        if proxy:
            proxy.stop()
        if reg:
            reg.stop()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
