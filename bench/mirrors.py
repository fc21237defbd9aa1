#!/usr/bin/env python3
"""ocifs benchmark: a fleet of mounts behind one pull-through cache (issue 8).

    bench/mirrors.py            # MOUNTS=8 BENCH_MIB=64 REPEAT=3 by default

MOUNTS ocifs daemons, each with a cache of its own (as on MOUNTS machines),
read the same BENCH_MIB artifact at the same moment.  Measured: the wall time
of the reads, and the bytes the origin sent (from its access log: every GET,
blobs and manifests, whoever asked), in copies of the artifact:

  * origin directly         -o registry=<origin>: each mount fetches its copy
                            (the reference: MOUNTS copies);
  * cold mirror             -o mirror=<origin>=<mirror>, the mirror a real
                            docker-registry in proxy mode that holds nothing yet;
  * one first, then the rest  one mount warms the cold mirror, the others follow;
  * warm mirror             the mirror holds the artifact (target: 0 copies).

Target: one copy from the origin for the whole fleet.  The origin's share is
decided by the pull-through cache, not by ocifs: distribution 2.8 streams each
request for a blob it does not hold yet from the origin on its own (and stores
one more copy), so concurrent cold readers cost a copy each.  The mirror's
share of ocifs's requests comes from /.ocifs/stats ("hosts").
Everything runs on loopback with the test fixtures (tests/fixtures); all mounts
and processes are cleaned up on exit.
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "tests"))

from fixtures.cache import drain, sha256_file  # noqa: E402
from fixtures.mount import OcifsMount  # noqa: E402
from fixtures.push import Client, push_artifact  # noqa: E402
from fixtures.registry import Registry, wait_for  # noqa: E402

OCIFS = os.environ.get("OCIFS_BIN", os.path.join(SRC, "build", "ocifs"))
MIB = int(os.environ.get("BENCH_MIB", "64"))
MOUNTS = int(os.environ.get("MOUNTS", "8"))
REPEAT = int(os.environ.get("REPEAT", "3"))
REPO, TAG, TITLE = "bench/fleet", "v1", "artifact.bin"






class Bench:
    def __init__(self, work):
        self.work = work
        self.mounts = []
        self.registries = []
        self.n = 0

    def registry(self, name, **kw):
        r = Registry(os.path.join(self.work, name), name=name, **kw)
        self.registries.append(r)
        return r

    def mount(self, opts):
        self.n += 1
        m = OcifsMount(OCIFS, os.path.join(self.work, "mnt%d" % self.n),
                       os.path.join(self.work, "cache%d" % self.n), opts=opts,
                       logdir=self.work,
                       env={"XDG_CONFIG_HOME": os.path.join(self.work, "xdg-empty")})
        m.mount()
        self.mounts.append(m)
        return m

    def cleanup(self):
        for m in self.mounts:
            try:
                m.unmount(check=False)
            except Exception:
                pass
        for r in self.registries:
            r.stop()


def origin_bytes(origin, since):
    """(all GET bytes, blob GET bytes) the origin sent since mark ``since``."""
    got = [a for a in origin.access_log(since) if a.method == "GET"]
    return (sum(a.size for a in got),
            sum(a.size for a in got if "/blobs/" in a.path))


def read_fleet(b, origin, opts, n, size, hexd):
    """``n`` fresh mounts with ``opts`` read the artifact at once: (seconds,
    mirror share of ocifs's requests or None, the mounts)."""
    ms = [b.mount(opts) for _ in range(n)]
    paths = [os.path.join(m.path, origin.host, REPO, TAG, TITLE) for m in ms]
    for p in paths:
        os.stat(p)                        # tag and manifest: not timed
    results = []
    barrier = threading.Barrier(n)

    def reader(p):
        barrier.wait()
        results.append(drain(p))
    threads = [threading.Thread(target=reader, args=(p,)) for p in paths]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    assert results == [size] * n, results
    for p in paths:
        assert sha256_file(p) == hexd, "wrong bytes at " + p
    total = mirrored = 0
    for m in ms:
        with open(os.path.join(m.path, ".ocifs", "stats")) as f:
            hosts = json.load(f)["hosts"]
        for h, c in hosts.items():
            total += c["requests"]
            if h != origin.host:
                mirrored += c["requests"]
    for m in ms:
        m.unmount()
        shutil.rmtree(m.cache, ignore_errors=True)    # same conditions for every run
    return secs, (mirrored / total if total else None)


def main():
    work = tempfile.mkdtemp(prefix="ocifs-bench-mirrors.")
    os.makedirs(os.path.join(work, "xdg-empty"))
    b = Bench(work)
    rows = []
    try:
        origin = b.registry("origin")
        print("pushing a %d MiB artifact..." % MIB, file=sys.stderr)
        data = os.urandom(MIB << 20)
        size, hexd = len(data), hashlib.sha256(data).hexdigest()
        pushed = push_artifact(Client(origin.host), REPO, [TAG], files=[(TITLE, data)])
        del data
        digest = pushed.layers[0].digest
        base = ["registry=" + origin.host]
        warm = b.registry("mirror-warm", proxy_remoteurl=origin.url)
        Client(warm.host).get_blob(REPO, digest)
        wait_for(lambda: os.path.exists(warm.blob_path(digest)), 60,
                 what="the warm mirror to store the blob")

        def ocifs_blob_gets(reg, since):
            return len([a for a in reg.requests("GET", r"/v2/.*/blobs/.*", since)
                        if a.agent.startswith("ocifs/")])

        def once(n, mirror, before):
            """One run on fresh mounts: (seconds of the first mount or None,
            seconds of the n, all bytes from the origin, blob copies from the
            origin, mirror share, "mirror/origin" blob GETs by ocifs)."""
            opts = base + (["mirror=%s=%s" % (origin.host, mirror.url)] if mirror else [])
            mark = origin.mark()
            mmark = mirror.mark() if mirror else 0
            t_first = None
            if before:
                t_first, _ = read_fleet(b, origin, opts, before, size, hexd)
            secs, share = read_fleet(b, origin, opts, n, size, hexd)
            if mirror:
                # distribution stores its copy behind the readers' backs: wait
                # for it, so that its GET is in the origin's log too.
                wait_for(lambda: os.path.exists(mirror.blob_path(digest)), 60,
                         what="the mirror to store the blob")
                time.sleep(0.5)
            allb, blobb = origin_bytes(origin, mark)
            gets = "%d/%d" % (ocifs_blob_gets(mirror, mmark) if mirror else 0,
                              ocifs_blob_gets(origin, mark))
            return t_first, secs, allb, blobb / size, share, gets

        def scenario(label, n, mirror=None, before=None):
            """REPEAT runs (a fresh cold mirror each, if ``mirror`` is a
            function); the median wall time, the traffic of every run."""
            runs = []
            for _ in range(REPEAT):
                mi = mirror() if callable(mirror) else mirror
                runs.append(once(n, mi, before))
                if callable(mirror):
                    mi.stop()
            med = sorted(runs, key=lambda r: r[1] + (r[0] or 0))[len(runs) // 2]
            copies = sorted({r[3] for r in runs})
            rows.append((label, med[0], med[1], med[2], copies, med[4], med[5]))
            print("  %s: %s" % (label, ", ".join("%.2fs" % (r[1] + (r[0] or 0))
                                                for r in runs)), file=sys.stderr)

        cold = [0]

        def cold_mirror():
            cold[0] += 1
            return b.registry("mirror-cold%d" % cold[0], proxy_remoteurl=origin.url)

        print("%d runs of each:" % REPEAT, file=sys.stderr)
        scenario("%d mounts, origin directly" % MOUNTS, MOUNTS)
        scenario("%d mounts, cold mirror, all at once" % MOUNTS, MOUNTS, mirror=cold_mirror)
        scenario("1 mount on a cold mirror, then %d" % (MOUNTS - 1), MOUNTS - 1,
                 mirror=cold_mirror, before=1)
        scenario("%d mounts, warm mirror" % MOUNTS, MOUNTS, mirror=warm)
    finally:
        b.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print("%-38s %11s %13s %7s %11s %6s  %s" % (
        "measure (%d MiB artifact, median of %d)" % (MIB, REPEAT), "wall time",
        "origin sent", "copies", "blob GETs", "mirror", "target"))
    print("%-38s %11s %13s %7s %11s %6s" % ("", "", "(access log)", "",
                                             "mirror/orig", "share"))
    ref = rows[0][2]
    for label, t_first, secs, allb, copies, share, gets in rows:
        wall = "%.2f s" % secs if t_first is None else "%.2f+%.2f s" % (t_first, secs)
        target = "(reference)" if not share else \
            ("0 copies" if "warm" in label else "1 copy")
        cp = "%.2f" % copies[0] if len(copies) == 1 else \
            "%.0f-%.0f" % (copies[0], copies[-1])
        print("%-38s %11s %9.1f MiB %7s %11s %6s  %s" % (
            label, wall, allb / (1 << 20), cp, gets,
            "-" if not share else "%.0f%%" % (100 * share), target))
    print()
    print("wall time against the origin directly:")
    for label, t_first, secs, *_ in rows[1:]:
        print("  %-36s %6.2fx" % (label, (secs + (t_first or 0)) / ref))
    print("(copies: the artifact's blob bytes the origin sent, over its size; mirror "
          "share: of ocifs's\n requests, from /.ocifs/stats \"hosts\": tags and "
          "manifests by tag went to the origin)")


if __name__ == "__main__":
    main()
