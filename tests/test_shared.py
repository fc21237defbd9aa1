"""A mount shared by slow registries and other users (issue 12, points 3 and 5).

    registry <- FaultProxy (stall, trickle) <- ocifs <- cat, ls, a second user

The contract checked here:

  * FUSE workers: ``max_threads`` (default 64) is the number of workers; opens
    waiting on the network take at most ``max_threads - 4`` of them, more get
    EAGAIN at once, so ``ls`` and ``/.ocifs/stats`` always find a worker.
  * Interrupts: a reader killed (SIGKILL, SIGINT) while its open waits on a
    trickling download ends at once; the daemon drops that transfer, and
    another reader waiting on it is not handed the EINTR.
  * allow_other: requests of another user (``setpriv`` to nobody) never make
    the daemon look up credentials or contact a host, whatever path they name;
    ``-o share=`` says what they see: nothing (none, the default, with modes
    that say so), what the mount fetched already (cached), or everything with
    the mounting user's credentials (all).
"""

import base64
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile

import pytest

from fixtures.cache import cache_blobs
from fixtures.faultproxy import FaultProxy
from fixtures.push import OCI_LAYER_TAR_GZIP, Client, push_artifact
from fixtures.registry import make_htpasswd, wait_for
from fixtures.timing import within

KiB = 1024
BLOBS = r"/v2/.*/blobs/sha256:[0-9a-f]{64}"
RESERVED_WORKERS = 4        # fs/ocifs.c: workers kept for metadata


# --- helpers ------------------------------------------------------------------

def art(m, host, repo, ref):
    return os.path.join(m.path, host, repo, ref)


def cat(path):
    """A ``cat`` child reading ``path``; its stderr says why it failed."""
    return subprocess.Popen(["cat", path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def in_open(p):
    """Is child ``p`` inside open(2) (waiting on the daemon)?"""
    try:
        with open("/proc/%d/syscall" % p.pid) as f:
            nr = f.read().split()[0]
    except (OSError, IndexError):
        return False
    return nr in ("2", "257")       # open, openat (x86_64)


def tar_gz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def stats(m):
    with open(os.path.join(m.path, ".ocifs", "stats"), "rb") as f:
        return json.loads(f.read())


def blob_gets(proxy):
    return proxy.seen(BLOBS)


def as_other(*ops):
    """Run ``ops`` ((op, path) with op read, listdir or stat) as nobody; a
    list of (errno or 0, value): the bytes read, the sorted names, the mode."""
    code = ("import json, os, sys\n"
            "out = []\n"
            "for op, path in json.loads(sys.argv[1]):\n"
            "    try:\n"
            "        if op == 'read':\n"
            "            v = open(path, 'rb').read().decode('latin-1')\n"
            "        elif op == 'listdir':\n"
            "            v = sorted(os.listdir(path))\n"
            "        else:\n"
            "            v = os.stat(path).st_mode\n"
            "        out.append((0, v))\n"
            "    except OSError as e:\n"
            "        out.append((e.errno, None))\n"
            "print(json.dumps(out))\n")
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        sys.executable, "-c", code, json.dumps([list(o) for o in ops])],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return [tuple(x) for x in json.loads(r.stdout)]


def end_children(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()


# --- fixtures -----------------------------------------------------------------

N_FILES = 20
N_ARCHIVES = 6


@pytest.fixture(scope="module")
def content(registry):
    c = Client(registry.host)
    many = push_artifact(c, "s/many", ["1"],
                         files=[("f%02d.bin" % i, os.urandom(4 * KiB) + bytes([i]))
                                for i in range(N_FILES)])
    one = push_artifact(c, "s/one", ["1"], files=[("slow.bin", os.urandom(64 * KiB))])
    tgz = push_artifact(c, "s/tgz", ["1"], files=[("tool.tgz", tar_gz({"x.txt": b"x\n"}),
                                                   OCI_LAYER_TAR_GZIP)])
    tgzs = push_artifact(c, "s/tgzs", ["1"],
                         files=[("t%d.tgz" % i, tar_gz({"x%d.txt" % i: b"x\n"}),
                                 OCI_LAYER_TAR_GZIP) for i in range(N_ARCHIVES)])
    return {"many": many, "one": one, "tgz": tgz, "tgzs": tgzs}


@pytest.fixture
def proxy(registry):
    p = FaultProxy(registry.url)
    yield p
    p.stop()


@pytest.fixture
def through(proxy, mount_factory):
    def make(*opts):
        return mount_factory(opts=["registry=" + proxy.host, "retries=0"] + list(opts))
    return make


# --- FUSE workers ---------------------------------------------------------------

def waits_and_refusals(m, proxy, procs, waiting, what, also=None):
    """``procs`` all wait on stalled downloads: exactly ``waiting`` reach the
    registry, the others fail at once with EAGAIN, and the kept workers
    answer metadata (``ls``, the stats, ``also()``) meanwhile. Ends the
    children and the proxy."""
    try:
        wait_for(lambda: len(blob_gets(proxy)) >= waiting, 20,
                 what="%d blob GETs" % waiting)
        ended = lambda: [p for p in procs if p.poll() is not None]  # noqa: E731
        wait_for(lambda: len(ended()) >= len(procs) - waiting, 20,
                 what="%d %s refused" % (len(procs) - waiting, what))
        refused = ended()
        assert len(refused) == len(procs) - waiting
        for p in refused:
            assert p.returncode != 0
            assert b"Resource temporarily unavailable" in p.stderr.read()
        assert len(blob_gets(proxy)) == waiting
        names, _ = within(lambda: os.listdir(m.path), 10, "ls " + m.path)
        assert proxy.host in names
        doc, _ = within(lambda: stats(m), 10, "read /.ocifs/stats")
        assert len(doc["in_flight"]) == waiting
        if also:
            within(also, 10, "metadata while the opens wait")
    finally:
        end_children(procs)
        proxy.stop()
    for p in procs:
        p.wait(30)
    assert m.alive


@pytest.mark.parametrize("max_threads", [None, 8], ids=["default 64", "max_threads=8"])
def test_slow_opens_leave_workers_for_metadata(content, proxy, through, max_threads):
    """20 opens stalled on their downloads: up to max_threads - 4 wait, the
    rest get EAGAIN, and ls, stat and /.ocifs/stats are answered meanwhile."""
    workers = max_threads or 64
    waiting = min(N_FILES, workers - RESERVED_WORKERS)
    proxy.add(BLOBS, "stall", after=0, hold=120)
    opts = ["timeout=120"] + (["max_threads=%d" % max_threads] if max_threads else [])
    m = through(*opts)
    d = art(m, proxy.host, "s/many", "1")
    assert len(os.listdir(d)) >= N_FILES
    cats = [cat(os.path.join(d, "f%02d.bin" % i)) for i in range(N_FILES)]
    # A stat of a file whose open waits is metadata too.
    waits_and_refusals(m, proxy, cats, waiting, "readers",
                       also=lambda: os.stat(os.path.join(d, "f00.bin")))
    assert ("too many opens waiting" in m.log_text()) == (waiting < N_FILES)


def test_archive_directories_waiting_on_downloads_take_worker_slots(content, proxy, through):
    """Listing an archive layer's directory waits on its download and
    extraction as a cold open does: beyond max_threads - 4 such waits get
    EAGAIN at once, and metadata is still answered."""
    proxy.add(BLOBS, "stall", after=0, hold=120)
    m = through("timeout=120", "max_threads=8")
    d = art(m, proxy.host, "s/tgzs", "1")
    names = os.listdir(d)
    dirs = [os.path.join(d, "t%d.tgz.d" % i) for i in range(N_ARCHIVES)]
    assert all(os.path.basename(x) in names for x in dirs), names
    lss = [subprocess.Popen(["ls", x], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for x in dirs]
    waits_and_refusals(m, proxy, lss, 8 - RESERVED_WORKERS, "listings")


# --- interrupts -----------------------------------------------------------------

def trickling(content, proxy, through):
    """(layer, mount, path): s/one's blob behind 1 byte every 3 s, once."""
    one = content["one"].layers[0]
    proxy.add(r"/v2/s/one/blobs/" + one.digest, "trickle", every=3, times=1)
    m = through("timeout=30")
    f = os.path.join(art(m, proxy.host, "s/one", "1"), "slow.bin")
    os.listdir(os.path.dirname(f))
    return one, m, f


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_reader_of_a_trickling_blob_ends(content, proxy, through, sig):
    """1 byte every 3 s keeps any stall timer happy; the reader's signal must
    end its open anyway, and the daemon must drop the transfer."""
    one, m, f = trickling(content, proxy, through)
    p = cat(f)
    try:
        get = wait_for(lambda: blob_gets(proxy), 20, what="the blob GET")[0]
        assert p.poll() is None, "cat ended early"
        p.send_signal(sig)
        p.wait(10)
    finally:
        end_children([p])
    assert p.returncode == -sig
    # The download was dropped with its reader (no one else waits on it).
    assert get.done.wait(10), "the daemon still reads the trickle"
    assert one.hex not in cache_blobs(m.cache)
    # Nothing stuck: the next reader gets the blob (the rule was used up).
    with open(f, "rb") as fh:
        assert within(fh.read, 30, "read " + f)[0] == one.data
    assert m.alive


def test_killed_reader_of_a_stalled_blob_ends(content, proxy, through):
    """No byte at all after the headers: the interrupt still ends the
    download within a second or so, long before the stall limit."""
    one = content["one"].layers[0]
    proxy.add(r"/v2/s/one/blobs/" + one.digest, "stall", after=0, hold=120, times=1)
    m = through("timeout=60")
    f = os.path.join(art(m, proxy.host, "s/one", "1"), "slow.bin")
    os.listdir(os.path.dirname(f))
    p = cat(f)
    try:
        get = wait_for(lambda: blob_gets(proxy), 20, what="the blob GET")[0]
        wait_for(lambda: in_open(p), 10, what="cat blocked in open")
        p.kill()
        p.wait(10)
    finally:
        end_children([p])
    assert get.done.wait(10), "the daemon still waits on the stalled transfer"
    assert one.hex not in cache_blobs(m.cache)
    assert m.alive


def test_interrupt_does_not_fail_a_download_others_wait_on(content, proxy, through):
    """Two readers of one trickling blob: killing the one whose open downloads
    does not hand its EINTR to the other, which then gets the blob."""
    one, m, f = trickling(content, proxy, through)
    first = cat(f)
    second = None
    try:
        wait_for(lambda: blob_gets(proxy), 20, what="the blob GET")
        second = cat(f)
        wait_for(lambda: in_open(second), 10, what="the second reader blocked in open")
        first.kill()
        first.wait(10)
        # The trickle was dropped with its reader; the other asks again.
        assert second.wait(30) == 0, second.stderr.read()
    finally:
        end_children([first] + ([second] if second else []))
    assert [g.action for g in blob_gets(proxy)] == ["trickle", "forward"]
    assert one.hex in cache_blobs(m.cache)


def test_interrupt_does_not_fail_an_extraction_others_wait_on(content, proxy, through):
    """The same for an archive layer's directory: the second ls, waiting on
    the first one's download and extraction, lists it after the first is
    killed."""
    tgz = content["tgz"].layers[0]
    proxy.add(r"/v2/s/tgz/blobs/" + tgz.digest, "trickle", every=3, times=1)
    m = through("timeout=30")
    d = os.path.join(art(m, proxy.host, "s/tgz", "1"), "tool.tgz.d")
    os.listdir(os.path.dirname(d))
    ls = ["ls", d]
    first = subprocess.Popen(ls, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = None
    try:
        wait_for(lambda: blob_gets(proxy), 20, what="the layer GET")
        second = subprocess.Popen(ls, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: in_open(second), 10, what="the second ls blocked in open")
        first.kill()
        first.wait(10)
        out, err = second.communicate(timeout=30)
        assert second.returncode == 0, err
        assert out.split() == [b"x.txt"]
    finally:
        end_children([first] + ([second] if second else []))
    assert [g.action for g in blob_gets(proxy)] == ["trickle", "forward"]


def test_killed_reader_waiting_on_another_download_ends(content, proxy, through):
    """The second reader of a trickling blob waits on the first one's
    download: killing it ends it at once, and the download goes on."""
    one, m, f = trickling(content, proxy, through)
    first = cat(f)
    second = None
    try:
        get = wait_for(lambda: blob_gets(proxy), 20, what="the blob GET")[0]
        second = cat(f)
        wait_for(lambda: in_open(second), 10, what="the second reader blocked in open")
        second.kill()
        second.wait(10)
        assert first.poll() is None and not get.done.is_set()
    finally:
        end_children([first] + ([second] if second else []))
    assert len(blob_gets(proxy)) == 1


# --- allow_other ------------------------------------------------------------------

USER, PASSWORD = "alice", "pw-Alice-0123456789"
BASIC = "Basic " + base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()


@pytest.fixture(scope="module")
def pushed(registry):
    c = Client(registry.host)
    return {"demo": push_artifact(c, "demo/pub", ["1"], files=[("hello.txt", b"hello\n")]),
            "private": push_artifact(c, "private/app", ["1"],
                                     files=[("secret.txt", b"classified\n")])}


@pytest.fixture
def shared(pushed, registry, registry_factory, mount_factory, tmp_path):
    """shared(share) -> (mount, basic-auth registry, listener): a mount with
    allow_other (and -o share=SHARE unless None) by us, whose login covers
    the registry and a listener that answers every request with a Basic
    challenge (and records what it was sent)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts with allow_other, setpriv to nobody")
    if not shutil.which("setpriv") or not shutil.which("htpasswd"):
        pytest.skip("needs setpriv (util-linux) and htpasswd (apache2-utils)")
    # nobody must reach the mount point through pytest's private tmp dirs.
    d = str(tmp_path)
    while not os.stat(d).st_mode & 0o001:
        os.chmod(d, os.stat(d).st_mode | 0o711)
        d = os.path.dirname(d)
    reg = registry_factory(storage_dir=registry.storage_dir,
                           htpasswd=make_htpasswd(str(tmp_path / "htpasswd"),
                                                  {USER: PASSWORD}))
    listener = FaultProxy("http://127.0.0.1:1")
    listener.add(r".*", "status", status=401, method=None,
                 headers={"WWW-Authenticate": 'Basic realm="ocifs-test"'},
                 body=b'{"errors":[{"code":"UNAUTHORIZED","message":"log in"}]}')
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    cred = BASIC.split()[1]
    with open(home / ".docker" / "config.json", "w") as f:
        json.dump({"auths": {reg.host: {"auth": cred}, listener.host: {"auth": cred}}}, f)
    env = {"HOME": str(home), "DOCKER_CONFIG": None, "REGISTRY_AUTH_FILE": None,
           "XDG_RUNTIME_DIR": None, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}

    def make(share):
        opts = ["registry=" + reg.host, "allow_other"]
        if share:
            opts.append("share=" + share)
        return mount_factory(opts=opts, env=env, debug=True), reg, listener
    yield make
    listener.stop()


def paths(m, reg, pushed, listener):
    d = os.path.join(m.path, reg.host)
    return {"demo": os.path.join(d, "demo/pub/1/hello.txt"),
            "private": os.path.join(d, "private/app/1/secret.txt"),
            "probe": os.path.join(m.path, listener.host, "any", "repo")}


def assert_listener_unasked(listener):
    assert listener.log == [], [(s.method, s.path) for s in listener.log]


@pytest.mark.parametrize("share", [None, "none"], ids=["default", "share=none"])
def test_other_users_get_nothing_by_default(shared, pushed, share):
    m, reg, listener = shared(share)
    p = paths(m, reg, pushed, listener)
    with open(p["private"], "rb") as f:
        assert f.read() == b"classified\n"
    # Modes say what the kernel enforces: nothing for group and others.
    for q in (m.path, os.path.dirname(p["private"]), p["private"]):
        assert os.stat(q).st_mode & 0o077 == 0, (q, oct(os.stat(q).st_mode))
    since = reg.mark()
    got = as_other(("read", p["private"]), ("read", p["demo"]), ("listdir", m.path),
                   ("listdir", p["probe"]), ("stat", m.path))
    assert [e for e, _ in got] == [errno.EACCES] * 4 + [0]
    assert reg.requests(since=since) == []
    assert_listener_unasked(listener)
    assert listener.host not in os.listdir(m.path)


def test_share_cached_shows_only_what_the_mount_holds(shared, pushed):
    m, reg, listener = shared("cached")
    p = paths(m, reg, pushed, listener)
    with open(p["demo"], "rb") as f:
        assert f.read() == b"hello\n"
    assert os.stat(p["demo"]).st_mode & 0o004
    since = reg.mark()
    got = as_other(("read", p["demo"]), ("read", p["private"]),
                   ("listdir", os.path.dirname(p["demo"])), ("listdir", p["probe"]))
    assert got[0] == (0, "hello\n")
    assert got[1][0] == errno.EACCES
    assert got[2][0] == 0 and "hello.txt" in got[2][1]
    assert got[3][0] in (errno.EACCES, errno.ENOENT)
    # Nothing left the daemon for them: no registry request, no new host.
    assert reg.requests(since=since) == []
    assert_listener_unasked(listener)
    assert listener.host not in os.listdir(m.path)
    # The mounting user still reaches the rest.
    with open(p["private"], "rb") as f:
        assert f.read() == b"classified\n"
    assert as_other(("read", p["private"]))[0] == (0, "classified\n")


def test_share_all_lends_the_mounting_users_reach(shared, pushed):
    """The documented risk of share=all: another user reads private content and
    makes the daemon send the mounting user's password to a host they name."""
    m, reg, listener = shared("all")
    p = paths(m, reg, pushed, listener)
    got = as_other(("read", p["private"]), ("listdir", p["probe"]))
    assert got[0] == (0, "classified\n")
    assert any(s.headers.get("Authorization") == BASIC for s in listener.log), \
        [s.headers for s in listener.log]


def test_share_cached_verify_logs_no_error_for_another_users_look(
        shared, pushed, mount_factory, tmp_path):
    """With -o share=cached and -o verify=, another user's look at an artifact
    whose manifest the cache holds, unverified, asks nothing and shows
    nothing; that is the policy working, not an error of the mount's."""
    from fixtures.cosign import Key
    key = Key.generate("ecdsa")
    pub = key.write_pub(tmp_path / "k.pub")
    _, reg, _ = shared(None)    # the Basic-auth registry and its login
    cache = tmp_path / "shared-cache"
    env = {"HOME": str(tmp_path / "home"), "DOCKER_CONFIG": None, "REGISTRY_AUTH_FILE": None,
           "XDG_RUNTIME_DIR": None, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    first = mount_factory(opts=["registry=" + reg.host], cache=cache, env=env)
    with open(os.path.join(first.path, reg.host, "demo/pub/1/hello.txt"), "rb") as f:
        assert f.read() == b"hello\n"
    first.unmount()
    m = mount_factory(opts=["registry=" + reg.host, "allow_other", "share=cached",
                            "verify=cosign:" + str(pub)], cache=cache, env=env)
    since = reg.mark()
    p = os.path.join(m.path, reg.host, "demo/pub", pushed["demo"].digest, "hello.txt")
    got = as_other(("read", p))
    assert got[0][0] in (errno.EACCES, errno.ENOENT), got
    assert reg.requests(since=since) == []
    assert "verify=cosign" not in m.log_text(), m.log_text()
