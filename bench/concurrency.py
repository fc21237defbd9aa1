#!/usr/bin/env python3
"""ocifs benchmark: daemon memory while streaming a big blob, and many
concurrent cold readers of one blob next to a single reader.

    bench/concurrency.py            # BENCH_MIB=1024 READERS=64 by default

Prints, side by side:
  * peak RSS (VmHWM) of the ocifs daemon while a cold `cat` streams a
    BENCH_MIB blob (target <= 32 MiB), next to the blob size;
  * wall time of READERS concurrent cold readers of one blob vs one cold
    reader on a fresh mount (ratio, target ~1x), and the number of blob
    GETs the registry saw for the concurrent run (target 1).
Everything runs on loopback with the test fixtures (tests/fixtures); all
mounts and processes are cleaned up on exit.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "tests"))

from fixtures.cache import drain, sha256_file  # noqa: E402
from fixtures.mount import OcifsMount  # noqa: E402
from fixtures.push import Client, push_artifact  # noqa: E402
from fixtures.registry import Registry  # noqa: E402

OCIFS = os.environ.get("OCIFS_BIN", os.path.join(SRC, "build", "ocifs"))
MIB = int(os.environ.get("BENCH_MIB", "1024"))
READERS = int(os.environ.get("READERS", "64"))
SMALL_MIB = int(os.environ.get("BENCH_SMALL_MIB", "64"))






def big_blob(path, mib):
    # Random-ish but cheap: repeat a random MiB with a counter mixed in.
    seed = os.urandom(1 << 20)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(mib):
            block = i.to_bytes(8, "little") + seed[8:]
            f.write(block)
            h.update(block)
    return h.hexdigest()


def main():
    work = tempfile.mkdtemp(prefix="ocifs-bench-conc.")
    reg = None
    mounts = []
    try:
        reg = Registry(os.path.join(work, "reg"))
        c = Client(reg.host)
        big = os.path.join(work, "big.bin")
        print("generating and pushing a %d MiB blob..." % MIB, file=sys.stderr)
        big_hex = big_blob(big, MIB)
        # push through the client in one go would hold it in memory: the
        # push tool's CLI streams from the file.
        subprocess.run([sys.executable, os.path.join(SRC, "tests/fixtures/push.py"),
                        "artifact", reg.host, "bench/big:v1", "big.bin=" + big],
                       check=True, stdout=subprocess.DEVNULL)
        os.unlink(big)
        small = os.urandom(SMALL_MIB << 20)
        small_hex = hashlib.sha256(small).hexdigest()
        push_artifact(c, "bench/small", ["v1"], files=[("small.bin", small)])
        del small

        def fresh(name):
            m = OcifsMount(OCIFS, os.path.join(work, "mnt-" + name),
                           os.path.join(work, "cache-" + name),
                           opts=["registry=" + reg.host], logdir=work)
            m.mount()
            mounts.append(m)
            return m

        # 1. memory while streaming the big blob cold
        m = fresh("rss")
        base = m.memory_kib("VmHWM")
        p = os.path.join(m.path, reg.host, "bench/big/v1/big.bin")
        t0 = time.monotonic()
        got = sha256_file(p)
        t_big = time.monotonic() - t0
        peak = m.memory_kib("VmHWM")
        assert got == big_hex, "wrong bytes from the big blob"
        m.unmount()

        # 2. one cold reader vs READERS concurrent cold readers
        m = fresh("one")
        p = os.path.join(m.path, reg.host, "bench/small/v1/small.bin")
        os.stat(p)
        t0 = time.monotonic()
        drain(p)
        t_one = time.monotonic() - t0
        assert sha256_file(p) == small_hex
        m.unmount()

        m = fresh("many")
        p = os.path.join(m.path, reg.host, "bench/small/v1/small.bin")
        os.stat(p)
        mark = reg.mark()
        results = []
        barrier = threading.Barrier(READERS)

        def reader():
            barrier.wait()
            results.append(drain(p))

        threads = [threading.Thread(target=reader) for _ in range(READERS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_many = time.monotonic() - t0
        gets = reg.count("GET", r"/v2/bench/small/blobs/sha256:" + small_hex, since=mark)
        assert all(r == SMALL_MIB << 20 for r in results) and len(results) == READERS
        assert sha256_file(p) == small_hex
        # The same readers again, warm: the memory copying they cost anyway.
        results.clear()
        barrier = threading.Barrier(READERS)
        threads = [threading.Thread(target=reader) for _ in range(READERS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_warm = time.monotonic() - t0
        m.unmount()

        print()
        print("%-44s %12s %12s %8s %s" % ("measure", "ocifs", "reference", "ratio", "target"))
        print("%-44s %9.1f MiB %8d MiB %8s %s" % (
            "daemon peak RSS, cold cat of %d MiB" % MIB, peak / 1024, MIB, "-", "<= 32 MiB"))
        print("%-44s %9.1f MiB %12s %8s" % ("daemon RSS before the read", base / 1024, "", ""))
        print("%-44s %10.2f s %12s %8s (%.0f MiB/s)" % (
            "cold read time of the %d MiB blob" % MIB, t_big, "", "", MIB / t_big))
        print("%-44s %10.3f s %10.3f s %7.2fx %s" % (
            "%d cold readers vs 1 (%d MiB)" % (READERS, SMALL_MIB), t_many, t_one,
            t_many / t_one, "~1x"))
        print("%-44s %10.3f s %10.3f s %7.2fx %s" % (
            "%d cold readers vs the same %d warm" % (READERS, READERS), t_many, t_warm,
            t_many / t_warm, "(copying cost)"))
        print("%-44s %12d %12s %8s %s" % ("blob GETs for the %d readers" % READERS, gets, "", "",
                                           "1"))
    finally:
        for m in mounts:
            try:
                m.unmount()
            except Exception:
                pass
        if reg is not None:
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
