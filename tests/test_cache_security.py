"""The cache on a shared machine (issue 12): private, trusted only when ours.

    ocifs -o cache=DIR ...

The contract checked here:

  * A cache directory (or one of blobs/, blobs/sha256, extract/, extract/sha256,
    tmp/) that another user owns or that group or others can write is refused at
    mount with a message naming the path and the fix, as OpenSSH's StrictModes;
    so is one below a directory others can write that is not sticky.
  * Everything ocifs creates is private: directories 0700, blobs 0400; another
    user (``setpriv`` to nobody) reads nothing of it.
  * A blob is served only if it is a regular file of the mounting user's: a
    symlink or someone else's file at ``blobs/sha256/<hex>`` is fetched again.
    An extracted tree is used only if it is a real directory of ours (paths
    inside it never follow a link out of it: tests/test_blobcache.c).
  * Disk: extracted trees count toward ``cache_max``; an archive that expands
    more than the ratio limit is refused; after eviction the legacy
    ``entrypoint`` is extracted again; as a user other than root, eviction and
    ``--cache-prune`` remove trees with read-only directories.
"""

import errno
import io
import os
import pwd
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile

import pytest

from fixtures.cache import cache_blobs
from fixtures.mount import MountError
from fixtures.push import Client, push_artifact
from fixtures.users import run_as_nobody, unshare_ok

from test_platform import D, F, oras_dir_annotations, tar_bytes

KiB = 1024
MiB = 1024 * KiB


def read(path):
    with open(path, "rb") as f:
        return f.read()


def art(m, host, repo, ref):
    return os.path.join(m.path, host, repo, ref)


def need_root_and_nobody():
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv")


def as_nobody(cmd, **kw):
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
                          + [str(c) for c in cmd], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60, **kw)


def mount_fails(mount_factory, registry, cache):
    m = mount_factory(opts=["registry=" + registry.host], cache=cache, mount=False)
    with pytest.raises(MountError):
        m.mount()
    return m.log_text()


@pytest.fixture(scope="module")
def content(registry):
    c = Client(registry.host)
    out = type("Content", (), {})()
    out.small = push_artifact(c, "sec/small", ["1"],
                              files=[("a.txt", b"the registry's bytes\n"),
                                     ("run.sh", b"#!/bin/sh\necho from the registry\n")])
    tree = tar_bytes([D("etc"), F("etc/conf", b"key: value\n"),
                      D("ro", 0o555), F("ro/tool", b"#!/bin/sh\necho tool\n", 0o755)])
    out.tree = push_artifact(c, "sec/tree", ["1"], files=[("rootfs.tar.gz", tree,
                                                           "application/octet-stream")])
    return out


# --- 1. StrictModes -------------------------------------------------------------

@pytest.mark.parametrize("sub", ["", "blobs", "blobs/sha256", "extract/sha256", "tmp"])
def test_cache_others_can_write_is_refused(sub, mount_factory, registry, content, tmp_path):
    cache = tmp_path / "shared"
    m = mount_factory(opts=["registry=" + registry.host], cache=cache)
    m.unmount()
    target = cache / sub if sub else cache
    os.chmod(target, 0o777)
    log = mount_fails(mount_factory, registry, cache)
    assert re.search(r"cache refused: %s is writable by group or others \(mode 0777\).*"
                     r"chmod -R go-w %s" % (re.escape(str(target)), re.escape(str(target))),
                     log), log


def test_cache_of_another_user_is_refused(mount_factory, registry, content, tmp_path):
    need_root_and_nobody()
    cache = tmp_path / "theirs"
    cache.mkdir(mode=0o700)
    shutil.chown(cache, "nobody", "nogroup")
    log = mount_fails(mount_factory, registry, cache)
    assert re.search(r"cache refused: %s belongs to uid %d, not to this user \(uid 0\)"
                     % (re.escape(str(cache)), pwd.getpwnam("nobody").pw_uid), log), log
    assert not (cache / "blobs").exists()


def test_cache_below_a_directory_others_can_write_is_refused(mount_factory, registry,
                                                            content, tmp_path):
    top = tmp_path / "open"
    top.mkdir()
    os.chmod(top, 0o777)
    log = mount_fails(mount_factory, registry, top / "cache")
    assert re.search(r"%s, above the cache directory, is writable by group or others "
                     r"\(mode 0777\) and not sticky" % re.escape(str(top)), log), log
    os.chmod(top, 0o1777)           # sticky, as /tmp: fine
    m = mount_factory(opts=["registry=" + registry.host], cache=top / "cache")
    assert read(os.path.join(art(m, registry.host, "sec/small", "1"), "a.txt")) == \
        content.small.layers[0].data


# --- 2. private modes -------------------------------------------------------------

def test_everything_in_the_cache_is_private(mount_factory, registry, content, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)         # as older versions left it
    m = mount_factory(opts=["registry=" + registry.host], cache=cache)
    d = art(m, registry.host, "sec/tree", "1")
    assert read(os.path.join(d, "rootfs.tar.gz.d", "etc", "conf")) == b"key: value\n"
    assert read(os.path.join(art(m, registry.host, "sec/small", "1"), "a.txt"))
    for dirpath, dirs, files in os.walk(cache):
        rel = os.path.relpath(dirpath, cache)
        if rel.startswith("extract" + os.sep + "sha256" + os.sep):
            continue                # inside a tree: its own modes, below 0700
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700, dirpath
        if rel == os.path.join("blobs", "sha256"):
            for f in files:
                assert stat.S_IMODE(os.stat(os.path.join(dirpath, f)).st_mode) == 0o400, f
    tree = cache / "extract" / "sha256" / content.tree.layers[0].hex
    assert stat.S_IMODE(os.stat(tree).st_mode) == 0o700
    if os.geteuid() == 0 and shutil.which("setpriv"):
        blob = cache / "blobs" / "sha256" / content.small.layers[0].hex
        for p in (blob, tree / "etc" / "conf"):
            r = as_nobody(["cat", p])
            assert r.returncode != 0 and b"Permission denied" in r.stderr, (p, r)


# --- 1. planted content -------------------------------------------------------------

def plant_then_read(mount_factory, registry, content, tmp_path, plant):
    cache = tmp_path / "cache"
    m = mount_factory(opts=["registry=" + registry.host], cache=cache)
    m.unmount()
    layer = content.small.layers[1]
    path = cache / "blobs" / "sha256" / layer.hex
    fake = b"#!/bin/sh\necho PWNED uid=$(id -u)\n"[:layer.size].ljust(layer.size, b"#")
    plant(path, fake, tmp_path)
    m.mount()
    f = os.path.join(art(m, registry.host, "sec/small", "1"), "run.sh")
    assert read(f) == layer.data
    assert cache_blobs(cache).get(layer.hex) == layer.size
    assert not os.path.islink(path)


def test_planted_symlink_blob_is_not_followed(mount_factory, registry, content, tmp_path):
    def plant(path, fake, tmp):
        secret = tmp / "secret"
        secret.write_bytes(fake)
        os.symlink(secret, path)
    plant_then_read(mount_factory, registry, content, tmp_path, plant)


def test_planted_blob_of_another_user_is_not_served(mount_factory, registry, content,
                                                    tmp_path):
    need_root_and_nobody()

    def plant(path, fake, tmp):
        path.write_bytes(fake)
        shutil.chown(path, "nobody", "nogroup")
    plant_then_read(mount_factory, registry, content, tmp_path, plant)


def test_planted_extract_symlink_is_not_followed(mount_factory, registry, content, tmp_path):
    cache = tmp_path / "cache"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "etc").mkdir(parents=True)
    (elsewhere / "etc" / "conf").write_bytes(b"planted\n")
    m = mount_factory(opts=["registry=" + registry.host], cache=cache)
    m.unmount()
    os.symlink(elsewhere, cache / "extract" / "sha256" / content.tree.layers[0].hex)
    m.mount()
    d = os.path.join(art(m, registry.host, "sec/tree", "1"), "rootfs.tar.gz.d")
    assert read(os.path.join(d, "etc", "conf")) == b"key: value\n"
    assert not os.path.islink(cache / "extract" / "sha256" / content.tree.layers[0].hex)


# --- 7. disk --------------------------------------------------------------------------

def test_expansion_ratio_is_refused(mount_factory, registry, tmp_path):
    """64 MiB of zeros gzip to ~64 KiB: 1000:1, over the 100:1 limit."""
    c = Client(registry.host)
    bomb = tar_bytes([F("zeros", b"\0" * (64 * MiB))])
    assert len(bomb) < 200 * KiB
    ok = tar_bytes([F("text", b"line\n" * 100000)])     # 500 KB, ~1000:1, under the floor
    p = push_artifact(c, "sec/bomb", ["1"], files=[("bomb.tgz", bomb, "application/gzip"),
                                                   ("ok.tgz", ok, "application/gzip")])
    m = mount_factory(opts=["registry=" + registry.host], cache=tmp_path / "cache")
    d = art(m, registry.host, "sec/bomb", "1")
    with pytest.raises(OSError) as e:
        os.listdir(os.path.join(d, "bomb.tgz.d"))
    assert e.value.errno == errno.EIO
    assert re.search(r"layer %s refused: entry \"zeros\": expands more than the ratio "
                     r"limit allows" % re.escape(p.layers[0].digest), m.log_text())
    assert read(os.path.join(d, "ok.tgz.d", "text")) == b"line\n" * 100000
    assert not (tmp_path / "cache" / "extract" / "sha256" / p.layers[0].hex).exists()


def du(path):
    total = 0
    for dirpath, dirs, files in os.walk(path):
        for n in dirs + files:
            total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
    return total


def test_extracted_trees_count_toward_cache_max(mount_factory, registry, tmp_path):
    c = Client(registry.host)
    layers = []
    for i in range(4):
        data = os.urandom(MiB)
        layers.append((data, tar_bytes([F("data", data)], gz=False)))
    p = push_artifact(c, "sec/trees", ["1"],
                      files=[("t%d.tar" % i, t, "application/x-tar") for i, (_, t) in
                             enumerate(layers)])
    cache = tmp_path / "cache"
    cache_max = 5 * MiB
    m = mount_factory(opts=["registry=" + registry.host, "cache_max=%d" % cache_max],
                      cache=cache)
    d = art(m, registry.host, "sec/trees", "1")
    for i, (data, _) in enumerate(layers):
        assert read(os.path.join(d, "t%d.tar.d" % i, "data")) == data
        # blob + tree: ~2 MiB each; 4 of them do not fit in 5 MiB
        assert du(cache / "blobs") + du(cache / "extract") <= cache_max + 512 * KiB, i
    trees = os.listdir(cache / "extract" / "sha256")
    assert 1 <= len(trees) < 4, trees
    assert p.layers[3].hex in trees


def test_legacy_entrypoint_comes_back_after_eviction(mount_factory, registry, tmp_path):
    c = Client(registry.host)
    script = b"#!/bin/sh\necho legacy entrypoint\n"
    tgz = tar_bytes([D("bin"), D("bin/linux"), D("bin/linux/amd64"), D("bin/linux/arm64"),
                     F("bin/linux/amd64/entrypoint", script, 0o755),
                     F("bin/linux/arm64/entrypoint", script, 0o755)])
    legacy = push_artifact(c, "sec/legacy", ["1"],
                           files=[("bin", tgz, "application/vnd.oras.v1",
                                   oras_dir_annotations(tgz))],
                           config=b"{}",
                           config_media_type="application/vnd.unknown.config.v1+json")
    filler = push_artifact(c, "sec/filler", ["1"], files=[("big.bin", os.urandom(2 * MiB))])
    cache = tmp_path / "cache"
    m = mount_factory(opts=["registry=" + registry.host, "platform=linux/amd64",
                            "cache_max=%d" % (MiB + 512 * KiB)], cache=cache)
    ep = os.path.join(art(m, registry.host, "sec/legacy", "1"), "entrypoint")
    assert subprocess.run(["sh", ep], stdout=subprocess.PIPE, timeout=30).stdout == \
        b"legacy entrypoint\n"
    # Reading a bigger blob evicts the layer and its tree.
    assert read(os.path.join(art(m, registry.host, "sec/filler", "1"), "big.bin")) == \
        filler.layers[0].data
    assert not (cache / "extract" / "sha256" / legacy.layers[0].hex).exists()
    assert read(ep) == script
    assert subprocess.run(["sh", ep], stdout=subprocess.PIPE, timeout=30).stdout == \
        b"legacy entrypoint\n"


def test_prune_as_another_user_removes_read_only_trees(ocifs_bin, tmp_path):
    """As nobody: a cache of nobody's holding a tree with 0555 directories."""
    need_root_and_nobody()
    top = tempfile.mkdtemp(prefix="ocifs-prune-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        cache = os.path.join(top, "cache")
        hexd = "ab" * 32
        for sub in ("blobs/sha256", "extract/sha256", "tmp"):
            os.makedirs(os.path.join(cache, sub), mode=0o700)
        with open(os.path.join(cache, "blobs", "sha256", hexd), "wb") as f:
            f.write(b"x" * 1000)
        tree = os.path.join(cache, "extract", "sha256", hexd)
        os.makedirs(os.path.join(tree, "ro", "deeper"))
        with open(os.path.join(tree, "ro", "deeper", "f"), "wb") as f:
            f.write(b"f")
        for dirpath, dirs, files in os.walk(top):
            shutil.chown(dirpath, "nobody", "nogroup")
            for n in files:
                shutil.chown(os.path.join(dirpath, n), "nobody", "nogroup")
        os.chmod(os.path.join(tree, "ro", "deeper"), 0o555)
        os.chmod(os.path.join(tree, "ro"), 0o555)
        os.utime(os.path.join(cache, "blobs", "sha256", hexd), (1000, 1000))
        r = as_nobody([ocifs_bin, "-o", "cache=" + cache, "--cache-prune=1d"])
        assert r.returncode == 0, r.stderr.decode()
        assert os.listdir(os.path.join(cache, "blobs", "sha256")) == []
        assert os.listdir(os.path.join(cache, "extract", "sha256")) == [], \
            "the tree with 0555 directories is still there"
    finally:
        subprocess.run(["rm", "-rf", top])


USER_SCRIPT = r"""
as_user "$TOP/ocifs" -o "cache=$TOP/cache,cache_max=$CACHE_MAX" "$HOST" "$TOP/mnt"
as_user cat "$TOP/mnt/sec/ro/1/ro.tar.d/ro/deeper/f" > "$TOP/first"
ls "$TOP/cache/extract/sha256" > "$TOP/trees.before"
as_user cat "$TOP/mnt/sec/filler2/1/big.bin" > /dev/null
ls "$TOP/cache/extract/sha256" > "$TOP/trees.after"
as_user cat "$TOP/mnt/sec/ro/1/ro.tar.d/ro/deeper/f" > "$TOP/again"
as_user fusermount3 -u "$TOP/mnt"
"""


def test_eviction_as_another_user_removes_read_only_trees(ocifs_bin, registry):
    """A mount as nobody: a layer with 0555 directories is extracted, evicted
    by cache_max (its tree removed, not left behind), and extracted again."""
    need_root_and_nobody()
    if not unshare_ok():
        pytest.skip("needs unshare -m")
    c = Client(registry.host)
    tree = tar_bytes([D("ro", 0o555), D("ro/deeper", 0o555), F("ro/deeper/f", b"deep\n")],
                     gz=False)
    p = push_artifact(c, "sec/ro", ["1"], files=[("ro.tar", tree, "application/x-tar")])
    push_artifact(c, "sec/filler2", ["1"], files=[("big.bin", os.urandom(2 * MiB))])
    top = tempfile.mkdtemp(prefix="ocifs-user-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        shutil.copy2(ocifs_bin, os.path.join(top, "ocifs"))
        for d in ("mnt", "cache"):
            os.mkdir(os.path.join(top, d), 0o700)
            shutil.chown(os.path.join(top, d), "nobody", "nogroup")
        env = dict(os.environ, TOP=top, HOST=registry.host, CACHE_MAX=str(MiB))
        r = run_as_nobody(USER_SCRIPT, env)
        if r.returncode != 0 and b"mknod" in r.stderr:
            pytest.skip("cannot make a device node here: %s" % r.stderr.decode())
        assert r.returncode == 0, r.stderr.decode()
        assert read(os.path.join(top, "first")) == b"deep\n"
        assert read(os.path.join(top, "trees.before")).split() == [p.layers[0].hex.encode()]
        assert read(os.path.join(top, "trees.after")) == b"", "the tree was not removed"
        assert read(os.path.join(top, "again")) == b"deep\n"
    finally:
        mnt = os.path.join(top, "mnt")
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", mnt])
        subprocess.run(["rm", "-rf", top])


@pytest.mark.parametrize("unit", ["test_blobcache", "test_tarx"])
def test_cache_unit_tests_pass_as_another_user(unit, ocifs_bin):
    """The cache's own unit tests, as nobody (no root to ignore modes)."""
    need_root_and_nobody()
    build = os.environ.get("BUILD") or os.path.dirname(str(ocifs_bin))
    exe = os.path.join(build, "tests", unit)
    if not os.path.exists(exe):
        pytest.skip("%s not built" % exe)
    r = as_nobody([exe], cwd="/tmp")
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
