"""Faults and bad input (issue 6): ocifs between a fault proxy and a real registry.

    registry <- FaultProxy (fixtures/faultproxy.py) <- ocifs -o registry=<proxy> <- us

The contract checked here:

  * 408/429/502/503/504 and dropped connections (reset, truncated body, stalled
    transfer) are retried up to ``retries`` times with backoff, Retry-After
    honored; a digest mismatch or a short body is EIO, a log line naming the
    digest, and nothing in ``<cache>/blobs``; persistent failure is an error
    after the bound, never a hang; ``timeout=`` bounds stalls.
  * Stale-if-error: with the registry gone, cached tags, listings and blobs keep
    working; uncached reads fail fast (EHOSTUNREACH / ETIMEDOUT / EIO).
  * ``kill -9`` mid-download leaves a cache the next mount uses; abandoned tmp
    sessions are removed on start, live ones of other mounts kept; a dead mount
    at the mount point is reported ("a previous mount there has died").
  * ``cache_max``: least recently used blobs (mtime = last open) are evicted,
    never one that is open; ``--cache-info`` / ``--cache-prune`` work offline.
  * Concurrency: one download per cold blob however many readers, lookups racing
    downloads, a lazy unmount during a download: no crash, no hang, exit 0.
  * Malformed manifests are refused (EIO, "malformed manifest ... <reason>"),
    unsafe titles dropped (the layer only under blobs/), duplicate titles: the
    first wins.

Above all: a read returns exactly the registry's bytes or fails; it never
returns wrong bytes, and every file in ``<cache>/blobs/sha256`` hashes to its
name.
"""

import errno
import fcntl
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait as futures_wait

import pytest

from fixtures.cache import cache_blobs, sha256_file
from fixtures.faultproxy import FaultProxy
from fixtures.mount import fusermount_unmount, is_mounted
from fixtures.push import (OCI_INDEX, OCI_MANIFEST, TITLE, Client,
                           push_artifact, sha256_digest)
from fixtures.registry import wait_for
from fixtures.timing import within as within_timed
from fixtures.layout import layout_blob, layout_dir

KiB = 1024
MiB = 1024 * KiB
UNREACHABLE = {errno.EHOSTUNREACH, errno.ETIMEDOUT, errno.EIO}
BLOBS = r"/v2/.*/blobs/sha256:[0-9a-f]{64}"
MANIFESTS = r"/v2/.*/manifests/.*"
# The seed of the proxy's fault draws and of the randomized run's plan; set
# OCIFS_FAULT_SEED to explore others (a failure prints the seed it ran with).
SEED = int(os.environ.get("OCIFS_FAULT_SEED", "6"))


# --- helpers ------------------------------------------------------------------

def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()




def read(path):
    with open(path, "rb") as f:
        return f.read()


def run(cmd, timeout=30):
    return subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


def within(fn, timeout, what):
    """fixtures.timing.within's value alone."""
    return within_timed(fn, timeout, what)[0]



def errno_of(fn, timeout=30, what="call"):
    """The errno ``fn()`` fails with (None if it succeeds), and the time it took."""
    t0 = time.monotonic()
    try:
        within(fn, timeout, what)
        return None, time.monotonic() - t0
    except OSError as e:
        return e.errno, time.monotonic() - t0




def tmp_entries(cache):
    """Everything under <cache>/tmp: [(relative path, is_dir)]."""
    root = os.path.join(str(cache), "tmp")
    out = []
    for dirpath, dirs, files in os.walk(root):
        for n in dirs:
            out.append((os.path.relpath(os.path.join(dirpath, n), root), True))
        for n in files:
            out.append((os.path.relpath(os.path.join(dirpath, n), root), False))
    return sorted(out)


def session_is_live(path):
    """A tmp session directory is live while its daemon holds its flock."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def assert_tmp_only_live_sessions(cache, live=1):
    """<cache>/tmp holds ``live`` session directories, each locked by a live
    daemon, and no file at all (no download is in flight when called)."""
    entries = tmp_entries(cache)
    assert all(is_dir for _, is_dir in entries), "leftover tmp files: %s" % entries
    sessions = [p for p, _ in entries if "/" not in p]
    assert len(sessions) == live, entries
    for s in sessions:
        assert session_is_live(os.path.join(str(cache), "tmp", s)), \
            "tmp/%s is not held by a live daemon" % s


def partial_downloads(cache):
    """Sizes of the files under <cache>/tmp (downloads in progress)."""
    root = os.path.join(str(cache), "tmp")
    sizes = []
    for dirpath, _, files in os.walk(root):
        for n in files:
            try:
                sizes.append(os.path.getsize(os.path.join(dirpath, n)))
            except FileNotFoundError:
                pass
    return sizes


def art(m, host, repo, ref):
    return os.path.join(m.path, host, repo, ref)


def blob_path(d, digest):
    """The blob in the layout view of artifact directory d (fixtures/layout.py)."""
    return layout_blob(d, digest)


def reader_child(path):
    """A child process that reads ``path`` and prints its sha256 (or the errno)."""
    code = ("import hashlib, sys\n"
            "try:\n"
            "    h = hashlib.sha256()\n"
            "    with open(sys.argv[1], 'rb') as f:\n"
            "        for b in iter(lambda: f.read(1 << 16), b''):\n"
            "            h.update(b)\n"
            "    print('ok', h.hexdigest())\n"
            "except OSError as e:\n"
            "    print('err', e.errno)\n")
    return subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


# --- content --------------------------------------------------------------------

class Content:
    pass


@pytest.fixture(scope="module")
def content(registry):
    """Everything the tests read, pushed once per module."""
    c = Client(registry.host)
    rnd = random.Random(6)
    out = Content()

    def data(n):
        return rnd.randbytes(n)

    out.small = push_artifact(c, "f/small", ["1"],
                              files=[("a.txt", b"alpha\n" * 100),
                                     ("b.bin", data(100 * KiB))])
    out.big = push_artifact(c, "f/big", ["1"], files=[("big.bin", data(8 * MiB))])
    out.mid = push_artifact(c, "f/mid", ["1"], files=[("mid.bin", data(512 * KiB))])
    out.huge = push_artifact(c, "f/huge", ["1"], files=[("huge.bin", data(16 * MiB))])
    out.lru = push_artifact(c, "f/lru", ["1"],
                            files=[("%s.bin" % n, data(MiB)) for n in "abcdef"])
    # The randomized run: 40 blobs of mixed sizes over 8 artifacts.
    sizes = ([0, 1, 17, 100, 511, 1000, 2048, 4095] +
             [rnd.randrange(4 * KiB, 300 * KiB) for _ in range(16)] +
             [rnd.randrange(700 * KiB, 1300 * KiB) for _ in range(11)] +
             [rnd.randrange(2 * MiB, 3 * MiB) for _ in range(3)] +
             [4 * MiB + 1, 5 * MiB - 3])                   # hashed by the hash thread
    rnd.shuffle(sizes)
    out.rand = []
    for i in range(8):
        files = [("r%02d.bin" % j, data(sizes[i * 5 + j])) for j in range(5)]
        out.rand.append(push_artifact(c, "f/rand%d" % i, ["1"], files=files))
    # The base for the malformed-manifest table: real blobs to point at.
    out.mal = push_artifact(c, "f/mal", ["base"],
                            files=[("one.txt", b"one\n"), ("two.txt", b"two\n"),
                                   ("three.txt", b"three\n")])
    out.down = push_artifact(c, "f/down", ["1", "2"],
                             files=[("cached.txt", b"cached\n" * 1000),
                                    ("uncached.bin", data(64 * KiB))])
    out.down_other = push_artifact(c, "f/down-other", ["1"],
                                   files=[("x.bin", data(1000))])
    return out


@pytest.fixture
def proxy(registry):
    p = FaultProxy(registry.url, seed=SEED)
    yield p
    p.stop()


@pytest.fixture
def through(proxy, mount_factory):
    """through(*opts, cache=None) -> a mount whose only registry is the proxy."""
    def make(*opts, cache=None):
        return mount_factory(opts=["registry=" + proxy.host] + list(opts), cache=cache)
    return make


def blob_gets(proxy, digest):
    return proxy.seen(r"/v2/.*/blobs/" + re.escape(digest))


# --- each fault alone ------------------------------------------------------------

RETRIED = {
    "503 twice": ("status", dict(status=503), 2),
    "502": ("status", dict(status=502), 1),
    "504": ("status", dict(status=504), 1),
    "408": ("status", dict(status=408), 1),
    "reset mid-body twice": ("reset", dict(after=256 * KiB), 2),
    "reset before answering": ("reset", {}, 1),
    "truncated twice": ("truncate", dict(after=MiB), 2),
    "truncated after headers": ("truncate", dict(after=0), 1),
    "stalled after the headers": ("stall", dict(after=0, hold=30), 1),
}


@pytest.mark.parametrize("case", list(RETRIED))
def test_fault_is_retried(case, content, proxy, through):
    action, kw, times = RETRIED[case]
    big = content.big.layers[0]
    proxy.add(r"/v2/f/big/blobs/" + big.digest, action, times=times, **kw)
    m = through("timeout=2")
    f = os.path.join(art(m, proxy.host, "f/big", "1"), "big.bin")
    assert within(lambda: sha256_file(f), 30, "read " + f) == big.hex
    gets = blob_gets(proxy, big.digest)
    assert [g.action for g in gets] == [action] * times + ["forward"], \
        [(g.action, g.status, g.headers.get("Range")) for g in gets]
    assert cache_blobs(m.cache).get(big.hex) == big.size
    assert_tmp_only_live_sessions(m.cache)
    # Cached now: no more requests for it.
    assert within(lambda: sha256_file(f), 10, "re-read") == big.hex
    assert len(blob_gets(proxy, big.digest)) == times + 1


def test_manifest_faults_are_retried(content, proxy, through):
    p = content.small
    proxy.add(r"/v2/f/small/manifests/1", "status", method=None, status=503, times=1)
    proxy.add(r"/v2/f/small/manifests/1", "reset", method=None, times=1)
    proxy.add(r"/v2/f/small/manifests/1", "truncate", method=None, after=10, times=1)
    m = through("timeout=2")
    d = art(m, proxy.host, "f/small", "1")
    assert within(lambda: sorted(os.listdir(d)), 30, "ls " + d)[:2] == ["a.txt", "b.bin"]
    assert read(os.path.join(d, "manifest.json")) == p.manifest
    assert read(os.path.join(d, "b.bin")) == p.layers[1].data
    acts = [s.action for s in proxy.seen(r"/v2/f/small/manifests/1", method=None)]
    assert acts[:3] == ["status", "reset", "truncate"] and "forward" in acts[3:], acts


BAD_BODY = ["corrupt first byte", "corrupt middle", "corrupt last byte", "short",
            "long", "other blob"]
# Wrong bytes from the last source are fetched again this often (blobcache.c).
REFETCH_MAX = 3


def add_bad_body(proxy, content, case, times):
    mid = content.mid.layers[0]
    path = r"/v2/f/mid/blobs/" + mid.digest
    if case.startswith("corrupt"):
        off = {"first": 0, "middle": None, "last": mid.size - 1}[case.split()[1]]
        proxy.add(path, "corrupt", offset=off, times=times)
    elif case == "short":
        proxy.add(path, "replace", body=mid.data[:-1000], digest=False, times=times,
                  content_type="application/octet-stream")
    elif case == "long":
        proxy.add(path, "replace", body=mid.data + b"\0" * 1000, digest=False, times=times,
                  content_type="application/octet-stream")
    else:
        proxy.add(path, "replace", body=content.big.layers[0].data, digest=False,
                  times=times, content_type="application/octet-stream")
    return mid


@pytest.mark.parametrize("case", BAD_BODY)
def test_bad_blob_is_fetched_again(case, content, proxy, through):
    """Wrong bytes once (a flipped bit in transit): the same source is asked
    again and the read succeeds."""
    mid = add_bad_body(proxy, content, case, times=1)
    m = through()
    f = os.path.join(art(m, proxy.host, "f/mid", "1"), "mid.bin")
    assert within(lambda: read(f), 30, "read " + f) == mid.data
    assert cache_blobs(m.cache).get(mid.hex) == mid.size
    assert len(blob_gets(proxy, mid.digest)) == 2
    assert_tmp_only_live_sessions(m.cache)


@pytest.mark.parametrize("case", BAD_BODY)
def test_bad_blob_is_eio_and_never_cached(case, content, proxy, through):
    """Wrong bytes every time: EIO after the bound, nothing cached."""
    mid = add_bad_body(proxy, content, case, times=REFETCH_MAX + 1)
    m = through()
    f = os.path.join(art(m, proxy.host, "f/mid", "1"), "mid.bin")
    err, secs = errno_of(lambda: read(f), 30, "read " + f)
    assert err == errno.EIO
    # 100 + 200 + 400 ms of backoff, each with up to 50 % jitter.
    assert secs >= 0.7, secs
    assert len(blob_gets(proxy, mid.digest)) == REFETCH_MAX + 1
    assert mid.hex not in cache_blobs(m.cache)
    assert_tmp_only_live_sessions(m.cache)
    assert re.search(r"%s.*(failed verification|mismatch)" % re.escape(mid.digest),
                     m.log_text()), m.log_text()
    # No negative caching: the next open fetches again and succeeds.
    assert within(lambda: read(f), 30, "re-read " + f) == mid.data
    assert cache_blobs(m.cache).get(mid.hex) == mid.size
    assert len(blob_gets(proxy, mid.digest)) == REFETCH_MAX + 2


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_manifest_corrupted_once_is_fetched_again(by, content, proxy, through):
    """One flipped byte in a manifest, by tag (against Docker-Content-Digest)
    or by digest: asked again, and the artifact works."""
    p = content.small
    ref = "1" if by == "tag" else p.digest
    proxy.add(r"/v2/f/small/manifests/" + re.escape(ref), "corrupt", method=None,
              offset=40, times=1)
    m = through()
    d = art(m, proxy.host, "f/small", ref)
    assert within(lambda: read(os.path.join(d, "manifest.json")), 30, "read") == p.manifest
    assert read(os.path.join(d, "a.txt")) == p.layers[0].data
    acts = [s.action for s in proxy.seen(r"/v2/f/small/manifests/" + re.escape(ref),
                                         method=None)]
    assert acts[:2] == ["corrupt", "forward"], acts
    assert re.search(r"f/small[:@]%s: .*hashes to .*; fetching it again" % re.escape(ref),
                     m.log_text()), m.log_text()


def test_manifest_not_matching_its_digest_is_refused(content, proxy, through):
    """By tag, against Docker-Content-Digest; by digest, against the digest."""
    p = content.small
    other = content.mid.manifest
    proxy.add(r"/v2/f/small/manifests/1", "replace", method=None, body=other,
              digest=p.digest)
    proxy.add(r"/v2/f/small/manifests/" + p.digest, "replace", method=None, body=other)
    m = through()
    for ref in ("1", p.digest):
        d = art(m, proxy.host, "f/small", ref)
        err, _ = errno_of(lambda: os.listdir(d), 30, "ls " + d)
        assert err == errno.EIO, ref
    log = m.log_text()
    assert re.search(r"f/small:1: manifest hashes to %s but the registry says %s; refused"
                     % (re.escape(sha256_digest(other)), re.escape(p.digest)), log), log
    assert re.search(r"f/small@%s: registry sent a manifest that hashes to %s; refused"
                     % (re.escape(p.digest), re.escape(sha256_digest(other))), log), log
    assert p.hex not in cache_blobs(m.cache)
    assert sha256_hex(other) not in cache_blobs(m.cache)


def test_persistent_503_is_eio_after_the_bound(content, proxy, through):
    mid = content.mid.layers[0]
    path = r"/v2/f/mid/blobs/" + mid.digest
    proxy.add(path, "status", status=503)
    m = through("retries=2")
    f = os.path.join(art(m, proxy.host, "f/mid", "1"), "mid.bin")
    err, secs = errno_of(lambda: read(f), 30, "read " + f)
    assert err == errno.EIO
    # 100 ms + 200 ms of backoff, each with up to 50 % jitter.
    assert 0.3 <= secs < 5, secs
    assert [g.status for g in blob_gets(proxy, mid.digest)] == [503] * 3
    assert re.search(r"f/mid@%s: .*\(gave up after 2 retries\)" % re.escape(mid.digest),
                     m.log_text()), m.log_text()
    assert mid.hex not in cache_blobs(m.cache)
    assert_tmp_only_live_sessions(m.cache)


def test_persistent_429_is_eagain(content, proxy, through):
    mid = content.mid.layers[0]
    proxy.add(r"/v2/f/mid/blobs/" + mid.digest, "status", status=429,
              body=b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}')
    m = through("retries=1")
    f = os.path.join(art(m, proxy.host, "f/mid", "1"), "mid.bin")
    err, _ = errno_of(lambda: read(f), 30, "read " + f)
    assert err == errno.EAGAIN
    assert len(blob_gets(proxy, mid.digest)) == 2
    assert "TOOMANYREQUESTS" in m.log_text()


def test_retry_after_is_honored(content, proxy, through):
    mid = content.mid.layers[0]
    proxy.add(r"/v2/f/mid/blobs/" + mid.digest, "status", status=429,
              headers={"Retry-After": "1"}, times=1)
    m = through()
    f = os.path.join(art(m, proxy.host, "f/mid", "1"), "mid.bin")
    os.listdir(os.path.dirname(f))                  # the manifest is not timed
    t0 = time.monotonic()
    assert within(lambda: read(f), 30, "read " + f) == mid.data
    secs = time.monotonic() - t0
    assert 1.0 <= secs < 5, secs
    assert [g.status for g in blob_gets(proxy, mid.digest)] == [429, 200]


@pytest.mark.parametrize("after", [0, 64 * KiB], ids=["after the headers", "mid-body"])
def test_stall_fails_within_the_timeout(after, content, proxy, through):
    big = content.big.layers[0]
    proxy.add(r"/v2/f/big/blobs/" + big.digest, "stall", after=after, hold=60)
    m = through("timeout=2", "retries=0")
    f = os.path.join(art(m, proxy.host, "f/big", "1"), "big.bin")
    os.listdir(os.path.dirname(f))
    err, secs = errno_of(lambda: read(f), 20, "read " + f)
    assert err in (errno.ETIMEDOUT, errno.EIO), err
    # curl's LOW_SPEED_TIME averages over a few seconds: a stall after some
    # body bytes is noticed up to ~6 s late (8 s here), one before any at 2 s.
    assert 1.5 <= secs < 10, secs
    assert re.search(r"f/big@%s: .*(too slow|timed out|stalled)" % re.escape(big.digest),
                     m.log_text()), m.log_text()
    assert big.hex not in cache_blobs(m.cache)
    assert_tmp_only_live_sessions(m.cache)
    assert m.alive


def test_slow_drip_within_the_timeout_succeeds(content, proxy, through):
    mid = content.mid.layers[0]
    # 512 KiB at 128 KiB/s: twice the timeout, which a steady drip may take;
    # a timeout of 2 s leaves room for a loaded machine's scheduling gaps
    proxy.add(r"/v2/f/mid/blobs/" + mid.digest, "drip", rate=128 * KiB, times=1)
    m = through("timeout=2", "retries=0")
    f = os.path.join(art(m, proxy.host, "f/mid", "1"), "mid.bin")
    os.listdir(os.path.dirname(f))
    t0 = time.monotonic()
    assert within(lambda: read(f), 30, "read " + f) == mid.data
    assert time.monotonic() - t0 >= 3.0            # it really was slower than the timeout
    assert [g.action for g in blob_gets(proxy, mid.digest)] == ["drip"]


# --- the randomized run -------------------------------------------------------------

# Issue 12's fault run: each request, with probability 0.3 in all, gets one
# of these (rules are drawn in order, so each has 1 - 0.7 ** (1/6)).
P_EACH = 1 - 0.7 ** (1 / 6)
FAULTS_03 = [("status", dict(status=503)), ("status", dict(status=429)),
             ("reset", dict(after=1000)), ("truncate", dict(after=20 * KiB)),
             ("corrupt", {}), ("drip", dict(rate=1 * MiB))]


def test_cold_reads_under_faults_p03(registry, proxy, through):
    """30 cold reads (each a manifest by tag and a blob never fetched before)
    through a proxy faulting 30 % of requests: >= 29 correct, none wrong,
    every cached blob hashes to its name."""
    c = Client(registry.host)
    rnd = random.Random(SEED)
    arts = [push_artifact(c, "f/cold%02d" % i, ["1"],
                          files=[("b.bin", rnd.randbytes(rnd.randrange(64 * KiB, 1536 * KiB)))])
            for i in range(30)]
    for regex in (BLOBS, MANIFESTS):
        for action, kw in FAULTS_03:
            proxy.add(regex, action, method=None, prob=P_EACH, **kw)
    m = through("timeout=5")
    ok, wrong, failed = [], [], []
    for p in arts:
        f = os.path.join(art(m, proxy.host, p.repo, "1"), "b.bin")
        try:
            got = within(lambda: read(f), 60, "read " + f)
        except OSError as e:
            failed.append((p.repo, e.errno))
            continue
        (ok if got == p.layers[0].data else wrong).append(p.repo)
    print("seed %d: %d of %d cold reads correct, %d wrong, failed %s; requests %s"
          % (SEED, len(ok), len(arts), len(wrong), failed, proxy.actions(".*", method=None)))
    assert not wrong, "seed %d: WRONG BYTES: %s" % (SEED, wrong)
    assert len(ok) >= 29, "seed %d: failed %s" % (SEED, failed)
    cache_blobs(m.cache)            # every cached blob hashes to its name
    assert sum(proxy.actions(BLOBS, method=None).get(a, 0)
               for a in ("corrupt", "status", "reset", "truncate", "drip")) >= 5
    assert_tmp_only_live_sessions(m.cache)

def test_randomized_faults_never_return_wrong_bytes(content, proxy, through):
    """~300 reads (whole files and ranges, 6 threads) over 40 blobs, with every
    kind of fault at random (seeded) and a cache too small to hold them, so
    blobs are evicted and fetched again."""
    P = proxy
    for action, p, kw in [
            ("status", 0.05, dict(status=503)),
            ("status", 0.02, dict(status=502)),
            ("status", 0.02, dict(status=429, headers={"Retry-After": "0"})),
            ("reset", 0.03, dict(after=1000)),
            ("reset", 0.03, dict(after=300 * KiB)),
            ("reset", 0.02, {}),
            ("truncate", 0.03, dict(after=100)),
            ("truncate", 0.03, dict(after=500 * KiB)),
            ("corrupt", 0.03, {}),
            ("corrupt", 0.02, dict(offset=0)),
            ("drip", 0.04, dict(rate=8 * MiB)),
            ("stall", 0.01, dict(after=100, hold=30)),
    ]:
        P.add(BLOBS, action, prob=p, times=2 if action == "stall" else None, **kw)
    for action, p, kw in [("status", 0.03, dict(status=503)), ("reset", 0.02, {}),
                          ("corrupt", 0.02, dict(offset=40))]:
        P.add(MANIFESTS, action, method=None, prob=p, **kw)
    cache_max = 6 * MiB
    m = through("timeout=2", "tag_ttl=1", "cache_max=%d" % cache_max)
    files = []
    for p in content.rand:
        d = art(m, P.host, p.repo, "1")
        for layer in p.layers:
            files.append((os.path.join(d, layer.title), layer.data))
    rnd = random.Random(SEED)
    plan = []
    for _ in range(300):
        path, data = rnd.choice(files)
        if data and rnd.random() < 0.5:
            off = rnd.randrange(len(data))
            plan.append((path, data, off, rnd.randrange(1, 256 * KiB)))
        else:
            plan.append((path, data, 0, None))
    wrong, ok, failed = [], [], []
    lock = threading.Lock()

    def one(step):
        path, data, off, n = step
        try:
            with open(path, "rb") as f:
                if n is None:
                    got, want = f.read(), data
                else:
                    got, want = os.pread(f.fileno(), n, off), data[off:off + n]
        except OSError as e:
            with lock:
                failed.append(e.errno)
            return
        with lock:
            (ok if got == want else wrong).append((path, off, n, len(got), len(want)))

    deadline = 60
    pool = ThreadPoolExecutor(6)
    futures = [pool.submit(one, s) for s in plan]
    done, pending = futures_wait(futures, timeout=deadline)
    pool.shutdown(wait=not pending, cancel_futures=True)
    assert not pending, "%d of %d reads not done after %ds" % (len(pending), len(plan),
                                                             deadline)
    for f in done:
        f.result()
    assert not wrong, "seed %d: WRONG BYTES returned: %s" % (SEED, wrong[:10])
    acts = P.actions(BLOBS)
    print("seed %d: reads ok %d, failed %d %s; blob GETs %s"
          % (SEED, len(ok), len(failed), sorted(set(failed)), acts))
    assert len(ok) + len(failed) == len(plan)
    assert len(ok) >= len(plan) // 2, (len(ok), failed)
    assert set(failed) <= {errno.EIO, errno.ETIMEDOUT, errno.EAGAIN}, failed
    assert sum(n for a, n in acts.items() if a != "forward") >= 20, acts
    distinct = {layer.hex for p in content.rand for layer in p.layers}
    assert sum(acts.values()) > len(distinct) + 20      # evicted blobs came back
    cached = cache_blobs(m.cache)
    assert sum(cached.values()) <= cache_max + 5 * MiB, cached
    assert_tmp_only_live_sessions(m.cache)
    assert m.alive
    assert m.unmount() == 0
    cache_blobs(m.cache)
    assert tmp_entries(m.cache) == []


# --- the registry goes away ------------------------------------------------------------

def test_registry_down_serves_what_is_cached(content, registry, registry_factory,
                                             mount_factory):
    reg = registry_factory(storage_dir=registry.storage_dir)
    p = content.down
    m = mount_factory(opts=["registry=" + reg.host, "tag_ttl=1", "timeout=2",
                            "retries=1"])
    host = os.path.join(m.path, reg.host)
    d = art(m, reg.host, "f/down", "1")
    d2 = art(m, reg.host, "f/down", "2")
    warm = {
        "root": sorted(os.listdir(host)),
        "f": sorted(os.listdir(os.path.join(host, "f"))),
        "repo": sorted(os.listdir(os.path.join(host, "f", "down"))),
        "art": sorted(os.listdir(d)),
    }
    assert warm["repo"] == ["1", "2"]
    assert read(os.path.join(d, "cached.txt")) == p.layers[0].data
    assert read(os.path.join(d, "manifest.json")) == p.manifest
    os.listdir(d2)                                   # tag 2 resolved, nothing read
    t_warm = time.monotonic()

    reg.stop()
    wait_for(lambda: time.monotonic() - t_warm > 1.2, 5, what="tag_ttl=1 to expire")
    t0 = time.monotonic()
    assert within(lambda: sorted(os.listdir(d)), 15, "ls " + d) == warm["art"]
    assert within(lambda: read(os.path.join(d, "cached.txt")), 15, "cat") == \
        p.layers[0].data
    assert within(lambda: read(os.path.join(d, "manifest.json")), 15, "cat") == p.manifest
    assert within(lambda: sorted(os.listdir(os.path.join(host, "f", "down"))), 15,
                  "ls repo") == warm["repo"]
    assert within(lambda: sorted(os.listdir(os.path.join(host, "f"))), 15,
                  "ls namespace") == warm["f"]
    assert within(lambda: sorted(os.listdir(host)), 15, "ls registry") == warm["root"]
    assert time.monotonic() - t0 < 15
    log = m.log_text()
    assert re.search(r"f/down:1: registry unavailable \(.*\); using cached %s"
                     % re.escape(p.digest), log), log
    # Uncached: fail fast, with the errno of an unreachable registry.
    for what, fn in [
            ("uncached blob", lambda: read(os.path.join(d, "uncached.bin"))),
            ("uncached blob of tag 2", lambda: read(os.path.join(d2, "uncached.bin"))),
            ("unseen repository", lambda: os.listdir(art(m, reg.host, "f/down-other",
                                                         "1"))),
            ("unseen tag", lambda: os.listdir(art(m, reg.host, "f/down", "3")))]:
        err, secs = errno_of(fn, 15, what)
        assert err in UNREACHABLE, (what, err and errno.errorcode.get(err))
        assert secs < 6, (what, secs)
    assert m.alive
    # The registry comes back on the same port: everything works again, once
    # the silent period (up to `timeout`, 2 s here) is over.
    reg.start()

    def back():
        try:
            return within(lambda: read(os.path.join(d, "uncached.bin")), 15, "read")
        except OSError:
            return None
    assert wait_for(back, 15, what="the registry back") == p.layers[1].data
    cache_blobs(m.cache)


def test_registry_hung_serves_what_is_cached(content, proxy, through):
    """The registry accepts connections and never answers.  Once ``timeout``
    has shown it is not answering, the stale answers (tag, listings, blobs) are
    served and uncached reads fail with ETIMEDOUT: each command costs at most a
    couple of timeouts, not one per FUSE request it makes."""
    timeout = 1
    p = content.down
    m = through("tag_ttl=1", "timeout=%d" % timeout, "retries=0")
    d = art(m, proxy.host, "f/down", "1")
    repo = os.path.join(m.path, proxy.host, "f", "down")
    names = sorted(os.listdir(d))
    tags = sorted(os.listdir(repo))
    assert read(os.path.join(d, "cached.txt")) == p.layers[0].data
    t_warm = time.monotonic()
    proxy.add(r".*", "hang", method=None, hold=60)
    wait_for(lambda: time.monotonic() - t_warm > 1.2, 5, what="tag_ttl=1 to expire")
    took = {}
    for what, fn, want in [
            ("ls artifact", lambda: sorted(os.listdir(d)), names),
            ("cat cached", lambda: read(os.path.join(d, "cached.txt")), p.layers[0].data),
            ("ls repository", lambda: sorted(os.listdir(repo)), tags)]:
        t0 = time.monotonic()
        assert within(fn, 60, what) == want, what
        took[what] = round(time.monotonic() - t0, 1)
    err, secs = errno_of(lambda: read(os.path.join(d, "uncached.bin")), 60, "uncached")
    took["cat uncached"] = round(secs, 1)
    assert err in (errno.ETIMEDOUT, errno.EIO), err and errno.errorcode.get(err)
    assert re.search(r"f/down:1: registry unavailable \(.*\); using cached %s"
                     % re.escape(p.digest), m.log_text()), m.log_text()
    assert m.alive
    print("with the registry hung, timeout=%ds:" % timeout, took)
    assert max(took.values()) <= 2 * timeout + 1.5, \
        "seconds per command with timeout=%ds: %s" % (timeout, took)
    proxy.clear()
    proxy.close_connections()


# --- crashes ----------------------------------------------------------------------------

def test_kill9_during_download_then_remount(content, proxy, through, tmp_path):
    huge = content.huge.layers[0]
    proxy.add(r"/v2/f/huge/blobs/" + huge.digest, "drip", rate=2 * MiB)
    m = through("timeout=5")
    f = os.path.join(art(m, proxy.host, "f/huge", "1"), "huge.bin")
    os.listdir(os.path.dirname(f))
    reader = reader_child(f)
    try:
        wait_for(lambda: any(s > 256 * KiB for s in partial_downloads(m.cache)), 15,
                 what="a partial download in tmp/")
        m.proc.kill()
        assert m.proc.wait(10) == -9
        out, _ = reader.communicate(timeout=15)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    word, value = out.decode().split()
    print("reader when the daemon was killed:", word, value)
    assert word == "err" or value == huge.hex, out    # never wrong bytes
    assert fusermount_unmount(m.path, lazy=True) == 0
    assert not is_mounted(m.path)
    m.unmount()                                       # reaps the dead daemon's state
    assert huge.hex not in cache_blobs(m.cache)
    assert any(not is_dir for _, is_dir in tmp_entries(m.cache))   # the leftover
    proxy.clear()
    m.mount()
    assert_tmp_only_live_sessions(m.cache)            # the dead session is gone
    assert within(lambda: sha256_file(f), 30, "read " + f) == huge.hex
    assert cache_blobs(m.cache).get(huge.hex) == huge.size
    assert_tmp_only_live_sessions(m.cache)
    # A second mount sharing the cache keeps the first one's live session.
    m2 = through(cache=m.cache)
    assert_tmp_only_live_sessions(m.cache, live=2)
    assert read(os.path.join(art(m2, proxy.host, "f/huge", "1"), "huge.bin")) == huge.data
    assert m2.unmount() == 0
    assert_tmp_only_live_sessions(m.cache, live=1)


def ocifs_again(m, *opts):
    """Run ocifs -f on m's mount point again: (exit status, stderr, stacked).
    ``stacked``: it was still running after 5 s, i.e. it mounted."""
    p = subprocess.Popen([m.bin, "-f", "-o", "cache=%s" % m.cache] +
                         [a for o in opts for a in ("-o", o)] + [m.path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stacked = False
    try:
        _, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        stacked = True
        p.terminate()                     # it unmounts what it mounted, then exits
        _, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, err.decode(), stacked


def assert_dead_mount_reported(m, *opts):
    rc, err, stacked = ocifs_again(m, *opts)
    assert not stacked, ("ocifs mounted on top of the dead mount instead of reporting "
                         "it (still running after 5s); stderr: %s" % err)
    assert rc == 1, (rc, err)
    assert "a previous mount there has died" in err, err
    assert "fusermount3 -u %s" % m.path in err, err
    assert fusermount_unmount(m.path, lazy=True) == 0
    assert not is_mounted(m.path)


def test_dead_mount_is_reported(content, registry, mount_factory):
    """Right after the daemon died (the root's attributes may still be in the
    kernel's attribute cache), a new ocifs on the same mount point must see the
    dead mount, say so and exit 1, not mount on top of it."""
    m = mount_factory(opts=["registry=" + registry.host])
    os.listdir(m.path)
    m.proc.kill()
    assert m.proc.wait(10) == -9
    assert is_mounted(m.path)
    assert_dead_mount_reported(m, "registry=" + registry.host)
    m.unmount()
    m.mount()                                        # and it mounts again
    assert registry.host in os.listdir(m.path)


def test_dead_mount_is_reported_after_the_attribute_cache_expired(content, registry,
                                                                   mount_factory):
    m = mount_factory(opts=["registry=" + registry.host])
    os.listdir(m.path)
    t_last = time.monotonic()
    m.proc.kill()
    assert m.proc.wait(10) == -9
    # ocifs's attr_timeout is 1 s: let it pass (a time contract, not a sync).
    wait_for(lambda: time.monotonic() - t_last > 1.5, 5, what="attr_timeout to pass")
    assert_dead_mount_reported(m)
    m.unmount()


# --- the bounded cache ---------------------------------------------------------------------

def test_cache_cap_evicts_least_recently_used_never_open(content, registry, mount_factory,
                                                          ocifs_bin):
    p = content.lru
    L = {b.title[0]: b for b in p.layers}            # a..f, 1 MiB each
    cache_max = 3 * MiB + 512 * KiB
    m = mount_factory(opts=["registry=" + registry.host, "cache_max=%d" % cache_max])
    d = art(m, registry.host, p.repo, "1")
    last = [0]

    def touch(name):
        # mtimes come from the kernel's coarse clock: let it move on first, so
        # that each touch gets its own, later, timestamp.
        wait_for(lambda: time.time_ns() > last[0] + 20_000_000, 5, what="the clock")
        assert read(os.path.join(d, name + ".bin")) == L[name].data
        last[0] = os.stat(os.path.join(m.cache, "blobs", "sha256",
                                       L[name].hex)).st_mtime_ns

    def present():
        have = cache_blobs(m.cache)
        return "".join(n for n in sorted(L) if L[n].hex in have)

    for n in "abc":
        touch(n)
    assert present() == "abc"
    touch("a")                       # use order now: b c a
    touch("d")                       # over the cap: b goes
    assert present() == "acd"
    held = open(os.path.join(d, "c.bin"), "rb")      # c is open ...
    try:
        touch("a")
        touch("d")                   # ... and least recently used
        touch("e")                   # over the cap: c is skipped, a goes
        assert present() == "cde"    # (without the pin, c would have gone)
        assert held.read() == L["c"].data
        held.seek(12345)
        assert held.read(1000) == L["c"].data[12345:13345]
    finally:
        held.close()
    touch("f")                       # c is free again, and least recently used
    assert present() == "def"
    assert sum(cache_blobs(m.cache).values()) <= cache_max
    assert m.unmount() == 0

    # Offline: --cache-info and --cache-prune.
    have = cache_blobs(m.cache)
    r = run([ocifs_bin, "--cache-info", "-o", "cache=%s" % m.cache])
    assert r.returncode == 0, r.stderr
    info = r.stdout.decode()
    assert re.search(r"^blobs: %d$" % len(have), info, re.M), info
    assert re.search(r"^bytes: %d$" % sum(have.values()), info, re.M), info
    r = run([ocifs_bin, "--cache-prune", "-o", "cache=%s" % m.cache,
             "-o", "cache_max=%d" % (2 * MiB + 512 * KiB)])
    assert r.returncode == 0, r.stderr
    assert re.search(r"removed \d+ blobs", r.stdout.decode()), r.stdout
    assert present() == "ef"
    # By age: e was last used two hours ago (mtime = last use), f just now.
    past = time.time() - 7200
    os.utime(os.path.join(m.cache, "blobs", "sha256", L["e"].hex), (past, past))
    r = run([ocifs_bin, "--cache-prune=1h", "-o", "cache=%s" % m.cache])
    assert r.returncode == 0, r.stderr
    assert "removed 1 blobs, %d bytes" % MiB in r.stdout.decode(), r.stdout
    assert present() == "f"
    for h in cache_blobs(m.cache):
        os.utime(os.path.join(m.cache, "blobs", "sha256", h), (past, past))
    r = run([ocifs_bin, "--cache-prune=90m", "-o", "cache=%s" % m.cache])
    assert r.returncode == 0, r.stderr
    assert cache_blobs(m.cache) == {}
    assert tmp_entries(m.cache) == []


# --- concurrency ---------------------------------------------------------------------------

def test_concurrent_readers_lookups_and_a_lazy_unmount(content, proxy, through):
    big = content.big.layers[0]
    # Slow enough that every reader of the cold blob piles up on one download.
    proxy.add(r"/v2/f/big/blobs/" + big.digest, "drip", rate=16 * MiB)
    proxy.add(BLOBS, "drip", rate=32 * MiB)
    m = through("timeout=5")
    bigf = os.path.join(art(m, proxy.host, "f/big", "1"), "big.bin")
    others = [(os.path.join(art(m, proxy.host, p.repo, "1"), l.title), l.data)
              for p in content.rand for l in p.layers]
    errors, lock = [], threading.Lock()

    def check(cond, what):
        if not cond:
            with lock:
                errors.append(what)

    def big_reader():
        check(sha256_file(bigf) == big.hex, "wrong bytes from big.bin")

    def many_reader(i):
        for path, data in others[i::4]:
            check(read(path) == data, "wrong bytes from " + path)

    def lookups():
        # A lookup racing the download: the artifact dir, stat of its files.
        for _ in range(20):
            d = os.path.dirname(bigf)
            check("big.bin" in os.listdir(d), "big.bin not listed")
            check(os.stat(bigf).st_size == big.size, "size of big.bin")
            check(os.path.isdir(os.path.join(layout_dir(d), "blobs", "sha256")),
                  "the layout view's blobs/sha256")

    jobs = [big_reader] * 16 + [lambda i=i: many_reader(i) for i in range(4)] + \
        [lookups] * 4
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(j) for j in jobs]
        done, pending = futures_wait(futures, timeout=60)
        assert not pending, "%d readers hung" % len(pending)
        for f in done:
            f.result()
    assert not errors, errors
    assert len(blob_gets(proxy, big.digest)) == 1      # one download for 16 readers
    cache_blobs(m.cache)
    assert_tmp_only_live_sessions(m.cache)

    # A lazy unmount while a download runs: the reader gets the right bytes or
    # an error, the daemon exits by itself with status 0.
    huge = content.huge.layers[0]
    proxy.add(r"/v2/f/huge/blobs/" + huge.digest, "drip", rate=4 * MiB)
    f = os.path.join(art(m, proxy.host, "f/huge", "1"), "huge.bin")
    os.listdir(os.path.dirname(f))
    reader = reader_child(f)
    try:
        wait_for(lambda: any(s > 256 * KiB for s in partial_downloads(m.cache)), 15,
                 what="the download to start")
        assert fusermount_unmount(m.path, lazy=True) == 0
        out, _ = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    word, value = out.decode().split()
    print("reader during the lazy unmount:", word, value)
    assert (word, value) == ("ok", huge.hex) or word == "err", out
    proc = m.proc
    rc = proc.wait(15)
    assert rc == 0, m.log_text()
    m.unmount()
    cache_blobs(m.cache)
    assert tmp_entries(m.cache) == []


# --- malformed manifests -------------------------------------------------------------------

def _desc(b, **over):
    d = dict(b.descriptor)
    d.update(over)
    return d


def _manifest(base, layers=None, config=None, **top):
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "config": config if config is not None else base.config.descriptor,
         "layers": layers if layers is not None else [l.descriptor for l in base.layers]}
    m.update(top)
    return json.dumps(m).encode()


def _titled(b, title):
    d = dict(b.descriptor)
    d["annotations"] = {TITLE: title}
    return d


def malformed_cases(c):
    """name -> (manifest body, expectation).  Expectation: ("eio", reason regex)
    or ("ok", {visible title: layer}, [unsafe titles that must not appear])."""
    base = c.mal
    one, two, three = base.layers
    sha = "sha256:" + one.hex
    return {
        "invalid JSON": (b'{"schemaVersion": 2, "layers": [', ("eio", "not valid JSON")),
        "not an object": (b'[1, 2, 3]', ("eio", "not a JSON object")),
        "empty body": (b'', ("eio", "not valid JSON")),
        "duplicate keys": (b'{"schemaVersion": 2, "schemaVersion": 2}',
                           ("eio", "not valid JSON")),
        "schemaVersion 1": (_manifest(base, schemaVersion=1), ("eio", "schemaVersion")),
        "index mediaType on a manifest": (_manifest(base, mediaType=OCI_INDEX),
                                          ("eio", "manifests is not an array")),
        "unknown manifest mediaType": (_manifest(base, mediaType="text/html"),
                                       ("eio", "mediaType")),
        "no config": (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                  "layers": []}).encode(), ("eio", "without config")),
        "layers not an array": (_manifest(base, layers={"a": 1}),
                                ("eio", "layers is not an array")),
        "descriptor not an object": (_manifest(base, layers=["sha256:" + one.hex]),
                                     ("eio", "not an object")),
        "descriptor without mediaType": (_manifest(base, layers=[_desc(one, mediaType="")]),
                                         ("eio", "without mediaType")),
        "mediaType not a string": (_manifest(base, layers=[_desc(one, mediaType=42)]),
                                   ("eio", "without mediaType")),
        "negative size": (_manifest(base, layers=[_desc(one, size=-1)]), ("eio", "size")),
        "huge size": (_manifest(base, layers=[_desc(one, size=2 ** 63 - 1)]),
                      ("eio", "size")),
        "size beyond int64": (_manifest(base, layers=[_desc(one, size=2 ** 64)]),
                              ("eio", "")),
        "size as a string": (_manifest(base, layers=[_desc(one, size=str(one.size))]),
                             ("eio", "size")),
        "fractional size": (_manifest(base, layers=[_desc(one, size=1.5)]), ("eio", "size")),
        "negative config size": (_manifest(base, config=_desc(base.config, size=-2)),
                                 ("eio", "size")),
        "sha512 digest": (_manifest(base, layers=[_desc(one, digest="sha512:" + "ab" * 64)]),
                          ("eio", "digest")),
        "short digest": (_manifest(base, layers=[_desc(one, digest=sha[:-1])]),
                         ("eio", "digest")),
        "long digest": (_manifest(base, layers=[_desc(one, digest=sha + "0")]),
                        ("eio", "digest")),
        "uppercase digest": (_manifest(base, layers=[_desc(one, digest="sha256:" +
                                                           one.hex.upper())]),
                             ("eio", "digest")),
        "digest with a path": (_manifest(base, layers=[_desc(one, digest="sha256:../" +
                                                             one.hex[3:])]),
                               ("eio", "digest")),
        "no digest": (_manifest(base, layers=[{"mediaType": "x/y", "size": 1}]),
                      ("eio", "digest")),
        "over 4 MiB": (_manifest(base, annotations={"pad": "x" * (4 * MiB)}), ("eio", "")),
        "duplicate titles": (
            _manifest(base, layers=[_titled(one, "same.txt"), _titled(two, "same.txt"),
                                    three.descriptor]),
            ("ok", {"same.txt": one, "three.txt": three}, [])),
        "unsafe titles": (
            _manifest(base, layers=[
                _titled(one, "../escape-dotdot"), _titled(one, "a/../../escape-mid"),
                _titled(two, "/tmp/escape-abs"), _titled(two, "x//y"),
                _titled(three, "new\nline"),
                _titled(three, "tab\there"), _titled(three, "del\u007f"),
                _titled(three, ""), _titled(three, "."), _titled(three, "d/./e"),
                _titled(three, "trailing/"), _titled(two, "ok/fine.txt")]),
            ("ok", {"ok/fine.txt": two},
             ["escape-dotdot", "escape-mid", "escape-abs", "y", "line", "here",
              "del\x7f", "trailing", "e"])),
        # jansson refuses \u0000 in strings: the whole manifest, or just the title.
        "NUL in a title": (
            _manifest(base, layers=[_titled(one, "nul\u0000byte"), two.descriptor]),
            ("eio or dropped", "not valid JSON", {}, ["nul", "nul\x00byte"])),
    }


MALFORMED = ["invalid JSON", "not an object", "empty body", "duplicate keys",
             "schemaVersion 1", "index mediaType on a manifest",
             "unknown manifest mediaType", "no config",
             "layers not an array", "descriptor not an object",
             "descriptor without mediaType", "mediaType not a string", "negative size",
             "huge size", "size beyond int64", "size as a string", "fractional size",
             "negative config size", "sha512 digest", "short digest", "long digest",
             "uppercase digest", "digest with a path", "no digest", "over 4 MiB",
             "duplicate titles", "unsafe titles", "NUL in a title"]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_manifest(case, content, proxy, through, tmp_path):
    body, want = malformed_cases(content)[case]
    proxy.add(r"/v2/f/mal/manifests/bad", "replace", method=None, body=body,
              content_type=OCI_MANIFEST)
    before = set(os.listdir(tmp_path))
    m = through()
    d = art(m, proxy.host, "f/mal", "bad")
    if want[0] == "eio or dropped":
        err, _ = errno_of(lambda: os.listdir(d), 30, "ls " + d)
        if err is None:
            want = ("ok",) + want[2:]
        else:
            want = ("eio", want[1])
    if want[0] == "eio":
        err, _ = errno_of(lambda: os.listdir(d), 30, "ls " + d)
        assert err == errno.EIO, errno.errorcode.get(err, err)
        err, _ = errno_of(lambda: read(os.path.join(d, "manifest.json")), 30, "cat")
        assert err == errno.EIO, errno.errorcode.get(err, err)
        assert re.search(r"f/mal:bad: (malformed manifest sha256:[0-9a-f]{64}: .*%s|"
                         r".*larger than)" % want[1], m.log_text(), re.I), m.log_text()
    else:
        _, visible, unsafe = want
        names = within(lambda: os.listdir(d), 30, "ls " + d)
        for title, layer in visible.items():
            assert read(os.path.join(d, *title.split("/"))) == layer.data, title
        tops = {t.split("/")[0] for t in visible}
        # a refused or clashing title shows as layer<N> (tests/test_view.py)
        assert {n for n in names if not re.fullmatch(r"layer\d+", n)} - {
            "manifest.json", "config.json", "blobs", "oci-layout", "index.json"} == tops, names
        for bad in unsafe:
            for root, dirs, files in os.walk(d):
                assert bad not in dirs + files, (bad, root)
        for layer in content.mal.layers:
            if layer.descriptor["digest"] in body.decode():
                assert read(blob_path(d, layer.digest)) == layer.data
        if case == "duplicate titles":
            assert re.search(r"title \"same.txt\" clashes", m.log_text()), m.log_text()
    assert read(os.path.join(art(m, proxy.host, "f/mal", "base"), "one.txt")) == b"one\n"
    assert m.alive
    assert set(os.listdir(tmp_path)) - before <= {"mnt0", "cache0"} | \
        {n for n in os.listdir(tmp_path) if n.startswith("ocifs-")}
    assert sorted(os.listdir(m.cache)) == ["blobs", "extract", "tmp"]
    cache_blobs(m.cache)
    for root, dirs, files in os.walk(str(tmp_path)):
        dirs[:] = [n for n in dirs if os.path.join(root, n) != m.path]   # not the mount
        for n in dirs + files:
            assert not n.startswith("escape"), os.path.join(root, n)
