"""Integration tests: mount ocifs over a real docker-registry on loopback.

The contract (foundation issue):

    ocifs [-f] [-d] [-o cache=DIR,tag_ttl=SECONDS,registry=HOST,insecure=HOST] MOUNTPOINT

    /                                   configured registries + any visited
    /<registry>/                        first components of /v2/_catalog
    /<registry>/a/b/                    next components, plus tags if a/b is a repo
    /<registry>/<repo>/<tag>/           manifest.json, config.json, <title>..., layer<N>
    /.ocifs/layout/<registry>/<repo>/<tag>/   oci-layout, index.json, blobs/sha256/<hex>
    /<registry>/<repo>/sha256:<hex>/    the same, pinned (resolvable, not listed)

Each test mounts afresh (own cache) so request counts start cold.
"""

import errno
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import threading

import pytest

from fixtures.cache import cache_hexes, sha256_file
from fixtures import push
from fixtures.push import Client, push_artifact, push_demo, sha256_digest, tag
from fixtures.registry import closed_port
from fixtures.layout import layout_blob, layout_dir

MiB = 1024 * 1024
UNREACHABLE_ERRNOS = {errno.EIO, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                      errno.ENETUNREACH, errno.ETIMEDOUT, errno.ECONNRESET}


# --- helpers ----------------------------------------------------------------



def run(cmd, timeout=60, check=True):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if check:
        assert r.returncode == 0, "%s -> %d: %s" % (cmd, r.returncode,
                                                   r.stderr.decode(errors="replace"))
    return r




def read(path):
    with open(path, "rb") as f:
        return f.read()


def art(mount, host, repo, ref):
    return os.path.join(mount.path, host, repo, ref)


def blob_file(d, digest):
    """The blob in the layout view of artifact directory d (fixtures/layout.py)."""
    return layout_blob(d, digest)


def os_call_in_child(fn, path, timeout=30):
    """Run ``os.<fn>(path)`` in a child process with a deadline (a hung FUSE
    request must fail the test, not the suite).  Returns ("ok", repr) or
    ("err", errno)."""
    code = ("import json, os, sys\n"
            "try:\n"
            "    r = os.%s(sys.argv[1])\n"
            "    print(json.dumps(['ok', repr(r)]))\n"
            "except OSError as e:\n"
            "    print(json.dumps(['err', e.errno]))\n" % fn)
    try:
        r = subprocess.run([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("os.%s(%r) still blocked after %ds" % (fn, path, timeout))
    assert r.returncode == 0, r.stderr.decode()
    return tuple(json.loads(r.stdout))




def assert_artifact(d, p):
    """Everything the tag dir ``d`` must show for the pushed artifact ``p``."""
    names = os.listdir(d)
    assert {"manifest.json", "config.json"} <= set(names), names
    # what oras pull gives, plus the metadata: no OCI layout in the
    # artifact directory (it is under /.ocifs/layout/)
    assert not {"blobs", "index.json", "oci-layout"} & set(names), names
    assert read(os.path.join(d, "manifest.json")) == p.manifest
    assert sha256_file(os.path.join(d, "manifest.json")) == p.hex
    assert os.stat(os.path.join(d, "manifest.json")).st_size == len(p.manifest)
    assert read(os.path.join(d, "config.json")) == p.config.data
    assert os.stat(os.path.join(d, "config.json")).st_size == p.config.size
    for layer in p.layers:
        if layer.title is not None:
            f = os.path.join(d, *layer.title.split("/"))
            assert os.stat(f).st_size == layer.size
            assert read(f) == layer.data, layer.title
    want = {p.hex, p.config.hex} | {l.hex for l in p.layers}
    layout = layout_dir(d)
    assert set(os.listdir(os.path.join(layout, "blobs", "sha256"))) == want
    assert os.listdir(os.path.join(layout, "blobs")) == ["sha256"]
    for b in [p.config] + p.layers:
        f = blob_file(d, b.digest)
        assert os.stat(f).st_size == b.size
        assert read(f) == b.data
    assert read(blob_file(d, p.digest)) == p.manifest


def count_blob_gets(registry, repo, since, digest=None):
    rx = "/v2/%s/blobs/%s" % (re.escape(repo), re.escape(digest) if digest else ".*")
    return registry.count("GET", rx, since=since)


# --- content ------------------------------------------------------------------

@pytest.fixture(scope="module")
def content(registry):
    c = Client(registry.host)
    out = dict(push_demo(c))
    out["custom"] = push_artifact(
        c, "art/custom", ["1.0"],
        files=[("README.md", b"# custom\n", "text/markdown"),
               ("bin/tool", os.urandom(4096), "application/vnd.ocifs.test.tool.v1"),
               ("docs/deep/er/note.txt", b"deep\n", "text/plain"),
               ("empty.txt", b"", "application/vnd.ocifs.test.empty"),
               (None, os.urandom(777), "application/vnd.ocifs.test.untitled")],
        config=b'{"custom":true}\n',
        config_media_type="application/vnd.ocifs.test.config.v1+json",
        artifact_type="application/vnd.ocifs.test.artifact.v1")
    out["emptycfg"] = push_artifact(c, "art/emptycfg", ["1"],
                                    files=[("a.txt", b"aaa\n")])
    out["docker"] = push_artifact(
        c, "art/docker", ["latest"], files=[(None, os.urandom(2048)),
                                            (None, os.urandom(100))],
        config=b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}',
        docker=True)
    out["nest/a"] = push_artifact(c, "nest/a", ["t1"], files=[("f", b"a")])
    out["nest/a/b"] = push_artifact(c, "nest/a/b", ["t2"], files=[("f", b"ab")])
    out["nest/a/b/c"] = push_artifact(c, "nest/a/b/c", ["t3"], files=[("f", b"abc")])
    out["big"] = push_artifact(c, "big/blob", ["8m"],
                               files=[("big.bin", os.urandom(8 * MiB))])
    out["manytags"] = push_artifact(c, "many/tags", ["t%03d" % i for i in range(150)],
                                    files=[("f", b"many")])
    pinned = push_artifact(c, "pinned/app", ["stable"], files=[("app", b"v1\n")])
    out["pinned"] = tag(c, "pinned/app", pinned, "also-stable")
    return out


# --- the tree -----------------------------------------------------------------

def test_root_lists_configured_registry(mount, registry):
    assert registry.host in os.listdir(mount.path)
    assert stat.S_ISDIR(os.stat(os.path.join(mount.path, registry.host)).st_mode)


def test_unlisted_host_resolves(mount_factory, registry, content):
    m = mount_factory()                       # no -o registry
    host_dir = os.path.join(m.path, registry.host)
    names = os.listdir(host_dir)
    assert {"demo", "acme", "art"} <= set(names)
    assert registry.host in os.listdir(m.path)  # visited hosts are listed


def test_registry_lists_first_components(mount, registry, content):
    want = {r.split("/")[0] for r in Client(registry.host).catalog()}
    assert set(os.listdir(os.path.join(mount.path, registry.host))) == want


def test_nested_namespaces(mount, registry, content):
    h = os.path.join(mount.path, registry.host)
    assert sorted(os.listdir(os.path.join(h, "nest"))) == ["a"]
    assert sorted(os.listdir(os.path.join(h, "nest", "a"))) == ["b", "t1"]
    assert sorted(os.listdir(os.path.join(h, "nest", "a", "b"))) == ["c", "t2"]
    assert sorted(os.listdir(os.path.join(h, "nest", "a", "b", "c"))) == ["t3"]
    for repo, t in (("nest/a", "t1"), ("nest/a/b", "t2"), ("nest/a/b/c", "t3")):
        assert_artifact(art(mount, registry.host, repo, t), content[repo])
    assert sorted(os.listdir(os.path.join(h, "acme", "tools"))) == ["cli"]
    assert sorted(os.listdir(os.path.join(h, "acme", "tools", "cli"))) == ["v1"]


def test_oci_artifact_custom_types(mount, registry, content):
    p = content["custom"]
    d = art(mount, registry.host, "art/custom", "1.0")
    m = json.loads(p.manifest)
    assert m["artifactType"] == "application/vnd.ocifs.test.artifact.v1"
    assert_artifact(d, p)
    names = set(os.listdir(d))
    assert {"README.md", "bin", "docs", "empty.txt"} <= names
    assert os.listdir(os.path.join(d, "bin")) == ["tool"]
    assert os.listdir(os.path.join(d, "docs", "deep", "er")) == ["note.txt"]
    untitled = p.layers[-1]
    assert untitled.title is None and read(blob_file(d, untitled.digest)) == untitled.data


def test_oci_empty_config(mount, registry, content):
    p = content["emptycfg"]
    d = art(mount, registry.host, "art/emptycfg", "1")
    assert p.config.media_type == push.OCI_EMPTY
    assert read(os.path.join(d, "config.json")) == b"{}"
    assert_artifact(d, p)


def test_docker_manifest(mount, registry, content):
    p = content["docker"]
    d = art(mount, registry.host, "art/docker", "latest")
    assert json.loads(read(os.path.join(d, "manifest.json")))["mediaType"] == \
        push.DOCKER_MANIFEST
    assert_artifact(d, p)


def test_demo_artifacts(mount, registry, content):
    assert_artifact(art(mount, registry.host, "demo/hello", "1.0"), content["demo/hello:1.0"])
    assert_artifact(art(mount, registry.host, "demo/hello", "latest"),
                    content["demo/hello:1.0"])
    assert_artifact(art(mount, registry.host, "acme/tools/cli", "v1"),
                    content["acme/tools/cli:v1"])
    assert_artifact(art(mount, registry.host, "demo/docker-style", "latest"),
                    content["demo/docker-style:latest"])
    d = art(mount, registry.host, "demo/hello", "1.0")
    out = run(["cat", os.path.join(d, "hello.txt")]).stdout
    assert out == b"Hello from ocifs!\n"


def test_modes_and_real_commands(mount, registry, content):
    p = content["custom"]
    d = art(mount, registry.host, "art/custom", "1.0")
    for path in (mount.path, os.path.join(mount.path, registry.host),
                 os.path.join(mount.path, registry.host, "art"),
                 os.path.join(mount.path, registry.host, "art", "custom")):
        st = os.stat(path)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555, path
    for dirpath, dirs, files in os.walk(d):
        for n in dirs:
            st = os.lstat(os.path.join(dirpath, n))
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555, n
        for n in files:
            st = os.lstat(os.path.join(dirpath, n))
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444, n
    tool = os.path.join(d, "bin", "tool")
    out = run(["stat", "-c", "%s %a %F", tool]).stdout.decode().split(None, 2)
    assert out == [str(p.layers[1].size), "444", "regular file\n"]
    assert run(["cat", os.path.join(d, "manifest.json")]).stdout == p.manifest
    out = run(["sha256sum", tool]).stdout.decode()
    assert out.split()[0] == p.layers[1].hex


def test_writes_fail_erofs(mount, registry, content):
    h = os.path.join(mount.path, registry.host)
    d = art(mount, registry.host, "art/custom", "1.0")
    mf = os.path.join(d, "manifest.json")
    attempts = [
        ("open w", lambda: open(mf, "wb")),
        ("open r+", lambda: open(mf, "r+b")),
        ("open a", lambda: open(mf, "ab")),
        ("create", lambda: open(os.path.join(d, "new.txt"), "wb")),
        ("mkdir in tag dir", lambda: os.mkdir(os.path.join(d, "newdir"))),
        ("unlink", lambda: os.unlink(mf)),
        ("rmdir", lambda: os.rmdir(os.path.join(d, "blobs"))),
        ("rename", lambda: os.rename(mf, os.path.join(d, "m2.json"))),
        ("chmod", lambda: os.chmod(mf, 0o644)),
        ("truncate", lambda: os.truncate(mf, 0)),
        ("symlink", lambda: os.symlink("manifest.json", os.path.join(d, "ln"))),
    ]
    for what, fn in attempts:
        with pytest.raises(OSError) as ei:
            fn()
        assert ei.value.errno == errno.EROFS, "%s: %s" % (what, ei.value)
    # Every name under a registry is a directory until something inside is
    # looked up (no request is made to say so): mkdir finds it there.
    with pytest.raises(FileExistsError):
        os.mkdir(os.path.join(h, "newrepo"))
    assert read(mf) == content["custom"].manifest


def test_zero_byte_blob(mount, registry, content):
    p = content["custom"]
    empty = p.layers[3]
    assert empty.size == 0 and empty.digest == sha256_digest(b"")
    d = art(mount, registry.host, "art/custom", "1.0")
    f = os.path.join(d, "empty.txt")
    assert os.stat(f).st_size == 0
    assert read(f) == b""
    assert run(["cat", f]).stdout == b""
    assert read(blob_file(d, empty.digest)) == b""
    assert run(["sha256sum", f]).stdout.decode().split()[0] == empty.hex


def test_large_blob(mount, registry, content):
    p = content["big"]
    layer = p.layers[0]
    d = art(mount, registry.host, "big/blob", "8m")
    f = os.path.join(d, "big.bin")
    assert os.stat(f).st_size == 8 * MiB
    assert run(["sha256sum", f]).stdout.decode().split()[0] == layer.hex
    assert sha256_file(f, chunk=65536) == layer.hex
    assert read(f) == layer.data
    assert sha256_file(blob_file(d, layer.digest)) == layer.hex
    # partial reads at odd offsets
    with open(f, "rb") as fh:
        fh.seek(3 * MiB + 12345)
        assert fh.read(100000) == layer.data[3 * MiB + 12345:3 * MiB + 112345]
        fh.seek(8 * MiB - 10)
        assert fh.read(100) == layer.data[-10:]


def test_many_tags(mount, registry, content):
    """150 tags.  docker-registry 2.8.2 ignores n/last on tags/list and returns
    them all at once; the listing must still be complete."""
    tags = {"t%03d" % i for i in range(150)}
    assert set(os.listdir(os.path.join(mount.path, registry.host, "many", "tags"))) == tags
    assert read(os.path.join(art(mount, registry.host, "many/tags", "t149"),
                             "manifest.json")) == content["manytags"].manifest


def test_catalog_pagination(registry_factory, mount_factory):
    """catalog.maxentries=2: /v2/_catalog answers 2 at a time with a Link header
    (and 400 PAGINATION_NUMBER_INVALID for n > 2)."""
    reg = registry_factory(catalog_maxentries=2)
    c = Client(reg.host)
    repos = ["p/a", "p/b", "p/c", "q", "r/s/t", "u", "v/w"]
    for r in repos:
        push_artifact(c, r, ["1"], files=[("f", r.encode())])
    m = mount_factory(opts=["registry=" + reg.host])
    h = os.path.join(m.path, reg.host)
    assert set(os.listdir(h)) == {"p", "q", "r", "u", "v"}
    assert set(os.listdir(os.path.join(h, "p"))) == {"a", "b", "c"}
    assert set(os.listdir(os.path.join(h, "v"))) == {"w"}
    assert os.listdir(os.path.join(h, "r", "s", "t")) == ["1"]


def test_tag_and_digest_dirs(mount, registry, content):
    p = content["pinned"]
    repo_dir = os.path.join(mount.path, registry.host, "pinned", "app")
    by_tag = art(mount, registry.host, "pinned/app", "stable")
    by_tag2 = art(mount, registry.host, "pinned/app", "also-stable")
    by_digest = art(mount, registry.host, "pinned/app", p.digest)
    for d in (by_tag, by_tag2, by_digest):
        assert read(os.path.join(d, "manifest.json")) == p.manifest
        assert sha256_file(os.path.join(d, "manifest.json")) == p.hex
        assert_artifact(d, p)
    assert sorted(os.listdir(by_tag)) == sorted(os.listdir(by_digest))
    assert stat.S_ISDIR(os.stat(by_digest).st_mode)
    assert sorted(os.listdir(repo_dir)) == ["also-stable", "stable"]  # digests not listed


# --- errors -------------------------------------------------------------------

def test_missing_repo_and_tag(mount, registry, content):
    h = os.path.join(mount.path, registry.host)
    # /<registry>/<a>/<b> is a directory whichever reading holds: stat asks
    # nothing; listing it finds nothing there.
    mark = registry.mark()
    assert stat.S_ISDIR(os.stat(os.path.join(h, "nosuchrepo", "nosuchtag")).st_mode)
    assert registry.count(None, ".*", since=mark) == 0
    with pytest.raises(FileNotFoundError):
        os.listdir(os.path.join(h, "nosuchrepo", "nosuchtag"))
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(h, "nosuchrepo", "nosuchtag", "x"))
    with pytest.raises(FileNotFoundError):
        os.listdir(os.path.join(h, "nosuchrepo"))
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(h, "demo", "hello", "nosuchtag"))
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(h, "demo", "nosuch", "1.0"))
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(h, "demo", "hello", "sha256:" + "0" * 64))
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(h, "demo", "hello", "1.0", "nosuchfile"))


def test_corrupted_blob(mount_factory, registry):
    c = Client(registry.host)
    good = os.urandom(100 * 1024)
    badb = os.urandom(300 * 1024)
    p = push_artifact(c, "corrupt/blob", ["1"], files=[("good.bin", good),
                                                       ("bad.bin", badb)])
    bad = p.layers[1]
    registry.corrupt_blob(bad.digest)
    m = mount_factory(opts=["registry=" + registry.host])
    d = art(m, registry.host, "corrupt/blob", "1")
    assert read(os.path.join(d, "good.bin")) == good
    assert os.stat(os.path.join(d, "bad.bin")).st_size == bad.size
    for path in (os.path.join(d, "bad.bin"), blob_file(d, bad.digest),
                 os.path.join(d, "bad.bin")):
        with pytest.raises(OSError) as ei:
            read(path)
        assert ei.value.errno == errno.EIO, ei.value
    assert not os.path.exists(os.path.join(m.cache, "blobs", "sha256", bad.hex))
    found = cache_hexes(m.cache)
    assert bad.hex not in found
    assert p.layers[0].hex in found
    assert m.alive


def test_concurrent_readers_one_download(mount, registry):
    c = Client(registry.host)
    data = os.urandom(4 * MiB)
    p = push_artifact(c, "conc/blob", ["1"], files=[("four.bin", data)])
    layer = p.layers[0]
    f = os.path.join(art(mount, registry.host, "conc/blob", "1"), "four.bin")
    mark = registry.mark()
    n = 16
    barrier = threading.Barrier(n)
    results = [None] * n

    def reader(i):
        try:
            barrier.wait(timeout=30)
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                while True:
                    b = fh.read(128 * 1024)
                    if not b:
                        break
                    h.update(b)
            results[i] = h.hexdigest()
        except Exception as e:          # reported below
            results[i] = e

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "readers still blocked after 60s"
    assert results == [layer.hex] * n
    assert count_blob_gets(registry, "conc/blob", mark, layer.digest) == 1


def test_ls_l_costs_one_manifest_request(mount, registry):
    c = Client(registry.host)
    p = push_artifact(c, "lsl/repo", ["1.0"],
                      files=[("README.md", os.urandom(1000)),
                             ("data.bin", os.urandom(2 * MiB))],
                      config=b'{"x":1}', config_media_type="application/vnd.lsl.config")
    d = art(mount, registry.host, "lsl/repo", "1.0")
    mark = registry.mark()
    out = run(["ls", "-l", d]).stdout.decode()
    sizes = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        sizes[fields[-1]] = fields[4]
    assert sizes["manifest.json"] == str(len(p.manifest))
    assert sizes["config.json"] == str(p.config.size)
    assert sizes["README.md"] == "1000"
    assert sizes["data.bin"] == str(2 * MiB)
    assert not {"blobs", "index.json", "oci-layout"} & set(sizes), sizes
    assert registry.count({"GET", "HEAD"}, "/v2/lsl/repo/manifests/.*", since=mark) == 1
    assert registry.count(None, "/v2/.*/blobs/.*", since=mark) == 0


def test_remount_reads_from_cache(mount, registry):
    c = Client(registry.host)
    p = push_artifact(c, "remount/repo", ["1"],
                      files=[("a.bin", os.urandom(MiB)), ("b.txt", b"bee\n")],
                      config=b'{"r":1}', config_media_type="application/vnd.remount.config")
    d = art(mount, registry.host, "remount/repo", "1")
    assert_artifact(d, p)
    mount.remount()
    mark = registry.mark()
    assert_artifact(d, p)
    assert run(["sha256sum", os.path.join(d, "a.bin")]).stdout.decode().split()[0] == \
        p.layers[0].hex
    assert count_blob_gets(registry, "remount/repo", mark) == 0


def test_cache_layout(mount, registry, content):
    for key, repo, t in (("demo/hello:1.0", "demo/hello", "1.0"),
                         ("docker", "art/docker", "latest"),
                         ("custom", "art/custom", "1.0")):
        assert_artifact(art(mount, registry.host, repo, t), content[key])
    found = cache_hexes(mount.cache)
    for key in ("demo/hello:1.0", "docker", "custom"):
        for b in content[key].blobs():
            assert b.hex in found, (key, b.title, b.digest)
            assert os.path.isfile(os.path.join(mount.cache, "blobs", "sha256", b.hex))


def test_registry_stopped(registry_factory, mount_factory):
    reg = registry_factory()
    c = Client(reg.host)
    p = push_artifact(c, "gone/repo", ["1"], files=[("f.txt", b"here\n")])
    push_artifact(c, "gone/other", ["1"], files=[("g.txt", b"other\n")])
    m = mount_factory(opts=["registry=" + reg.host])
    assert read(os.path.join(art(m, reg.host, "gone/repo", "1"), "f.txt")) == b"here\n"
    reg.stop()
    h = os.path.join(m.path, reg.host)
    kind, err = os_call_in_child("listdir", os.path.join(h, "gone", "other"))
    assert kind == "err" and err in UNREACHABLE_ERRNOS, (kind, err)
    kind, err = os_call_in_child("stat", os.path.join(h, "gone", "other", "1", "g.txt"))
    assert kind == "err" and err in UNREACHABLE_ERRNOS, (kind, err)
    assert m.alive


def test_unreachable_host(mount_factory):
    m = mount_factory()
    host = "127.0.0.1:%d" % closed_port()
    kind, err = os_call_in_child("listdir", os.path.join(m.path, host))
    assert kind == "err" and err in UNREACHABLE_ERRNOS, (kind, err)
    assert m.alive


def test_tag_shadows_subrepository(mount_factory, registry):
    """A tag and a sub-repository with the same name: the tag wins, the
    sub-repository is listed and reachable as ".name"."""
    c = Client(registry.host)
    push_artifact(c, "shadow", ["b"], files=[("tag.txt", b"the tag\n")])
    push_artifact(c, "shadow/b", ["1"], files=[("repo.txt", b"the sub-repository\n")])
    m = mount_factory(opts=["registry=" + registry.host])
    d = os.path.join(m.path, registry.host, "shadow")
    names = set(os.listdir(d))
    assert {"b", ".b"} <= names
    assert read(os.path.join(d, "b", "tag.txt")) == b"the tag\n"
    assert os.listdir(os.path.join(d, ".b")) == ["1"]
    assert read(os.path.join(d, ".b", "1", "repo.txt")) == b"the sub-repository\n"


def test_repository_pushed_after_the_catalog_was_read(mount_factory, registry):
    """A catalog read before a push must not hide the new repository (nor
    its tags) for tag_ttl: lookups ask for the tag, whatever the catalog
    held says, and a name the catalog lacks is still a directory."""
    c = Client(registry.host)
    m = mount_factory(opts=["registry=" + registry.host, "tag_ttl=600"])
    host = os.path.join(m.path, registry.host)
    before = set(os.listdir(host))                  # the catalog, cached
    assert "late" not in before
    push_artifact(c, "late/comer", ["1"], files=[("x.txt", b"late\n")])
    mark = registry.mark()
    assert read(os.path.join(host, "late", "comer", "1", "x.txt")) == b"late\n"
    assert stat.S_ISDIR(os.stat(os.path.join(host, "late")).st_mode)
    assert registry.count("GET", "/v2/late/comer/manifests/1", since=mark) == 1
