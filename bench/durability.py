#!/usr/bin/env python3
"""What the cache's durability costs, and what re-hashing would cost instead.

    bench/durability.py [DIR]         (default: a temporary directory under
                                       $XDG_CACHE_HOME or ~/.cache, where the
                                       cache would live)

A blob enters blobs/sha256 as layers/blobcache.c does it: written to a temp
file, fsync()ed, renamed, and its directory fsync()ed. For each size this
prints the time of write + rename alone, the time the two fsync()s add, and,
for the alternative of trusting nothing on disk, the time SHA-256 takes to
hash the cached file again (from the page cache) on its first open in a
mount. Then the same for an extracted tree (1000 files of 4 KiB and one of
16 MiB, as a small layer): what a syncfs(2) per extraction would cost (the
cache makes one at unmount instead, and notes unsynced trees in its session). Median of BENCH_RUNS (default 5). Nothing ocifs-specific
runs: these are the system calls the cache makes, on the file system it
would use.
"""

import ctypes
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time

SIZES = [4 << 10, 256 << 10, 4 << 20, 64 << 20, 256 << 20]
RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def one(d, data, sync):
    tmp, final = os.path.join(d, "tmp.blob"), os.path.join(d, "blob")
    t0 = time.perf_counter()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
    for off in range(0, len(data), 128 << 10):
        os.write(fd, data[off:off + (128 << 10)])
    if sync:
        os.fsync(fd)
    os.close(fd)
    os.rename(tmp, final)
    if sync:
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
    secs = time.perf_counter() - t0
    os.unlink(final)
    return secs


def rehash(path):
    t0 = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return time.perf_counter() - t0


LIBC = ctypes.CDLL(None, use_errno=True)


def tree(d, sync):
    top = os.path.join(d, "tree")
    t0 = time.perf_counter()
    os.mkdir(top, 0o700)
    small = os.urandom(4096)
    for i in range(1000):
        with open(os.path.join(top, "f%04d" % i), "wb") as f:
            f.write(small)
    with open(os.path.join(top, "big"), "wb") as f:
        f.write(os.urandom(16 << 20))
    if sync:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        if LIBC.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs")
        os.close(fd)
    os.rename(top, top + ".done")
    secs = time.perf_counter() - t0
    shutil.rmtree(top + ".done")
    return secs


def human(n):
    return "%d KiB" % (n >> 10) if n < 1 << 20 else "%d MiB" % (n >> 20)


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else \
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    os.makedirs(base, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ocifs-durability-", dir=base) as d:
        print("file system of %s, median of %d" % (d, RUNS))
        print("%-8s %12s %12s %12s %14s" % ("size", "no fsync", "fsync", "added",
                                             "re-hash once"))
        for size in SIZES:
            data = os.urandom(size)
            plain = statistics.median(one(d, data, False) for _ in range(RUNS))
            synced = statistics.median(one(d, data, True) for _ in range(RUNS))
            path = os.path.join(d, "cached")
            with open(path, "wb") as f:
                f.write(data)
            hashed = statistics.median(rehash(path) for _ in range(RUNS))
            os.unlink(path)
            print("%-8s %10.2f ms %10.2f ms %10.2f ms %12.2f ms" % (
                human(size), plain * 1e3, synced * 1e3, (synced - plain) * 1e3,
                hashed * 1e3))
        plain = statistics.median(tree(d, False) for _ in range(RUNS))
        synced = statistics.median(tree(d, True) for _ in range(RUNS))
        print("tree of 1000 x 4 KiB + 16 MiB: %.2f ms, with syncfs %.2f ms, added %.2f ms"
              % (plain * 1e3, synced * 1e3, (synced - plain) * 1e3))


if __name__ == "__main__":
    main()
