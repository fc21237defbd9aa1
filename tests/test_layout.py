"""Integration tests: copies of an artifact directory, and the layout view (issue 13).

    /<registry>/<repo>/<tag>/                  what oras pull gives for this platform:
                                               cp -r, rsync -a, tar -c fetch nothing of
                                               another platform
    /.ocifs/layout/<registry>/<repo>/<ref>/    the reference's complete OCI image layout
                                               (every kind of mount; not listed in /):
                                               oci-layout, index.json naming the whole index
                                               (or manifest), blobs/sha256/ for every
                                               platform's manifests, configs and layers,
                                               fetched when read

Real tools against the real registry: cp, rsync, tar, and skopeo copy --all oci:. run
from inside the layout directory, skopeo inspect, skopeo --override-arch arm64
inspect; digests are preserved.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest

from fixtures import push
from fixtures.push import Client, push_artifact, push_index, push_provider

ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}
ARCH = ARCHES.get(os.uname().machine, os.uname().machine)
OTHER_ARCH = "arm64" if ARCH != "arm64" else "amd64"


def read(path):
    with open(path, "rb") as f:
        return f.read()


def run(cmd, cwd=None, timeout=120):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                       timeout=timeout)
    assert r.returncode == 0, "%s -> %d:\n%s\n%s" % (
        cmd, r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))
    return r


def need(tool):
    if not shutil.which(tool):
        pytest.skip("%s is not installed" % tool)


def skopeo(*args, cwd=None):
    need("skopeo")
    pol = [] if os.path.exists("/etc/containers/policy.json") else ["--insecure-policy"]
    return run(["skopeo"] + pol + list(args), cwd=cwd)


def blob_gets(registry, repo, since):
    """{digest: GET count} of blob requests since the mark."""
    out = {}
    for a in registry.requests("GET", r"/v2/%s/blobs/sha256:[0-9a-f]{64}" % re.escape(repo),
                               since=since):
        d = a.path.rsplit("/", 1)[1]
        out[d] = out.get(d, 0) + 1
    return out


@pytest.fixture(scope="module")
def provider(registry):
    """Seed 000: one binary layer per platform (~1 MB each here)."""
    return push_provider(Client(registry.host), "lay/provider", "v1", bin_size=1000000)


@pytest.fixture(scope="module")
def multi(registry):
    """An image index over two platforms, each an OCI image with a layer."""
    c = Client(registry.host)
    kids = []
    for arch in (ARCH, OTHER_ARCH):
        cfg = json.dumps({"architecture": arch, "os": "linux",
                          "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        kids.append(push_artifact(c, "lay/multi", [], config=cfg,
                                  config_media_type=push.OCI_CONFIG,
                                  files=[(None, push.oras_dir_tgz(arch, {
                                      "payload": os.urandom(20000)}),
                                      push.OCI_LAYER_TAR_GZIP)]))
    return push_index(c, "lay/multi", ["1.0"], [(kids[0], push.platform("linux", ARCH)),
                                                (kids[1], push.platform("linux", OTHER_ARCH))])


COPIES = {
    "cp -r": lambda src, dst: run(["cp", "-r", src, dst]),
    "rsync -a": lambda src, dst: run(["rsync", "-a", src + "/", dst + "/"]),
    "tar -c": lambda src, dst: run(["sh", "-c", 'mkdir -p "$2" && tar -C "$1" -cf - . | '
                                    'tar -C "$2" -xf -', "sh", src, dst]),
}


@pytest.mark.parametrize("tool", sorted(COPIES))
def test_copy_fetches_only_this_platform(registry, mount_factory, provider, tmp_path, tool):
    """Installing a provider by copying its directory: the copy holds this
    platform's binary (runnable), and the registry saw no GET of another
    platform's layer; every GET is of a blob the copy holds, once."""
    need(tool.split()[0])
    m = mount_factory(opts=["registry=" + registry.host])
    src = os.path.join(m.path, registry.host, "lay/provider/v1")
    dst = str(tmp_path / "copy")
    mark = registry.mark()
    COPIES[tool](src, dst)
    registry.sync()
    gets = blob_gets(registry, "lay/provider", mark)
    mine = [l for l in provider.layers if l.title == "bin/linux/%s/entrypoint" % ARCH][0]
    others = [l for l in provider.layers if l.title and l.title.startswith("bin/")
              and l is not mine]
    for l in others:
        assert l.digest not in gets, ("another platform's layer fetched", l.title)
    assert gets.get(mine.digest) == 1, gets
    assert set(gets) <= {provider.config.digest} | {l.digest for l in provider.layers}
    assert all(n == 1 for n in gets.values()), gets
    names = sorted(os.listdir(dst))
    assert names == ["assets", "bin", "config.json", "entrypoint", "manifest.json",
                     "thin.provider.yaml"], names
    assert os.listdir(os.path.join(dst, "bin", "linux")) == [ARCH]
    assert read(os.path.join(dst, "entrypoint")) == mine.data
    r = run([os.path.join(dst, "entrypoint")])
    assert b"linux/%s" % ARCH.encode() in r.stdout
    assert read(os.path.join(dst, "assets", "README.md")) == b"lite provider assets\n"
    assert hashlib.sha256(read(os.path.join(dst, "manifest.json"))).hexdigest() == provider.hex
    s = json.loads(read(os.path.join(m.path, ".ocifs", "stats")))
    assert s["bytes_saved_by_platform"] == sum(l.size for l in others)


def test_layout_not_listed_and_in_every_mount(registry, mount_factory, multi):
    """/.ocifs/layout/<registry>/<repo>/<ref>/ in an all-registries, a registry
    and a reference mount; .ocifs is not listed in /; by tag and by digest."""
    want = {"oci-layout", "index.json", "blobs"}
    m = mount_factory(opts=["registry=" + registry.host])
    assert ".ocifs" not in os.listdir(m.path)
    lay = os.path.join(m.path, ".ocifs", "layout", registry.host, "lay/multi")
    assert set(os.listdir(os.path.join(lay, "1.0"))) == want
    assert set(os.listdir(os.path.join(lay, multi.digest))) == want
    for args in ([registry.host], [registry.host + "/lay/multi:1.0"]):
        m2 = mount_factory(args=args)
        assert ".ocifs" not in os.listdir(m2.path)
        lay2 = os.path.join(m2.path, ".ocifs", "layout", registry.host, "lay/multi", "1.0")
        assert set(os.listdir(lay2)) == want
        idx = json.loads(read(os.path.join(lay2, "index.json")))
        assert [x["digest"] for x in idx["manifests"]] == [multi.digest]


def test_layout_lists_every_platform_fetches_lazily(registry, mount_factory, multi):
    """blobs/sha256 lists the index, every platform's manifest, config and
    layers; listing it reads the manifests only, no config or layer."""
    m = mount_factory(opts=["registry=" + registry.host])
    lay = os.path.join(m.path, ".ocifs", "layout", registry.host, "lay/multi", "1.0")
    mark = registry.mark()
    names = set(os.listdir(os.path.join(lay, "blobs", "sha256")))
    want = {multi.hex} | {k.hex for k in multi.manifests} | {b.hex for b in multi.blobs()}
    assert names == want
    for b in multi.blobs():
        assert os.stat(os.path.join(lay, "blobs", "sha256", b.hex)).st_size == b.size
    registry.sync()
    assert blob_gets(registry, "lay/multi", mark) == {}
    other = multi.manifests[1]
    assert read(os.path.join(lay, "blobs", "sha256", other.layers[0].hex)) == \
        other.layers[0].data
    registry.sync()
    assert blob_gets(registry, "lay/multi", mark) == {other.layers[0].digest: 1}


def test_skopeo_copy_all_from_inside(registry, mount_factory, multi, tmp_path):
    """skopeo copy --all oci:. run from inside the layout directory copies every
    platform; the index and manifest digests are preserved."""
    m = mount_factory(opts=["registry=" + registry.host])
    lay = os.path.join(m.path, ".ocifs", "layout", registry.host, "lay/multi", "1.0")
    dst = tmp_path / "all"
    skopeo("copy", "-q", "--all", "oci:.", "oci:%s:x" % dst, cwd=lay)
    out = json.loads(read(str(dst / "index.json")))
    assert [x["digest"] for x in out["manifests"]] == [multi.digest]
    assert read(str(dst / "blobs/sha256" / multi.hex)) == multi.manifest
    for k in multi.manifests:
        assert read(str(dst / "blobs/sha256" / k.hex)) == k.manifest
        for b in k.blobs():
            assert read(str(dst / "blobs/sha256" / b.hex)) == b.data


def test_skopeo_inspect(registry, mount_factory, multi):
    """skopeo inspect oci:. (raw: the index's own bytes), and with
    --override-arch the other platform's image."""
    m = mount_factory(opts=["registry=" + registry.host])
    lay = os.path.join(m.path, ".ocifs", "layout", registry.host, "lay/multi", "1.0")
    raw = skopeo("inspect", "--raw", "oci:.", cwd=lay).stdout
    assert raw == multi.manifest
    mine = json.loads(skopeo("inspect", "oci:.", cwd=lay).stdout)
    assert mine["Digest"] == multi.digest and mine["Architecture"] == ARCH
    assert mine["Layers"] == [multi.manifests[0].layers[0].digest]
    other = json.loads(skopeo("--override-arch", OTHER_ARCH, "inspect", "oci:.",
                              cwd=lay).stdout)
    assert other["Architecture"] == OTHER_ARCH
    assert other["Layers"] == [multi.manifests[1].layers[0].digest]
    cfg = json.loads(skopeo("--override-arch", OTHER_ARCH, "inspect", "--config", "oci:.",
                            cwd=lay).stdout)
    assert cfg["architecture"] == OTHER_ARCH


def test_layout_of_a_manifest(registry, mount_factory, provider, tmp_path):
    """A single manifest's layout: index.json names it; skopeo copies every
    layer of it (all platforms: the layout is complete), digest preserved."""
    m = mount_factory(opts=["registry=" + registry.host])
    lay = os.path.join(m.path, ".ocifs", "layout", registry.host, "lay/provider", "v1")
    idx = json.loads(read(os.path.join(lay, "index.json")))
    assert idx["manifests"] == [{"mediaType": push.OCI_MANIFEST, "digest": provider.digest,
                                 "size": len(provider.manifest)}]
    assert set(os.listdir(os.path.join(lay, "blobs", "sha256"))) == \
        {provider.hex, provider.config.hex} | {l.hex for l in provider.layers}
    skopeo("copy", "-q", "oci:.", "dir:%s" % (tmp_path / "d"), cwd=lay)
    assert hashlib.sha256(read(str(tmp_path / "d/manifest.json"))).hexdigest() == provider.hex


def split_copy(registry, mount_factory, tmp_path):
    """skopeo copy oci:MNT/.ocifs/layout/127.0.0.1:PORT/... (fails: split at ':')."""
    push.push_demo(Client(registry.host))
    m = mount_factory(opts=["registry=" + registry.host, "timeout=2"])
    lay = os.path.join(m.path, ".ocifs", "layout", registry.host, "demo/hello/1.0")
    need("skopeo")
    pol = [] if os.path.exists("/etc/containers/policy.json") else ["--insecure-policy"]
    r = subprocess.run(["skopeo"] + pol + ["copy", "oci:" + lay, "dir:%s" % (tmp_path / "x")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert r.returncode != 0
    return m, lay


def test_colon_split_path_hint(registry, mount_factory, tmp_path):
    """skopeo splits oci:PATH:REF at the first ':': MNT/.ocifs/layout/127.0.0.1:PORT/…
    makes ocifs look up a registry named 127.0.0.1.  The copy fails and the
    log says why and what avoids it; from inside the directory (oci:.) or
    through a symlink the same copy works."""
    m, lay = split_copy(registry, mount_factory, tmp_path)
    bare = registry.host.split(":")[0]
    hint = [ln for ln in m.log_text().splitlines()
            if ln.startswith("ocifs: %s: " % bare) and "split at ':'" in ln]
    assert len(hint) == 1, m.log_text()
    assert "registry mount" in hint[0] and "symlink" in hint[0] and "oci:." in hint[0]
    skopeo("copy", "-q", "oci:.", "dir:%s" % (tmp_path / "ok"), cwd=lay)
    os.symlink(lay, str(tmp_path / "link"))
    skopeo("copy", "-q", "oci:%s" % (tmp_path / "link"), "dir:%s" % (tmp_path / "ok2"))
    assert read(str(tmp_path / "ok2" / "manifest.json")) == \
        read(str(tmp_path / "ok" / "manifest.json"))


def test_colon_split_path_leaves_no_ghost(registry, mount_factory, tmp_path):
    """After skopeo's split lookup of 127.0.0.1, / lists only the real registry
    (a registry is listed once something under it answered)."""
    m, _ = split_copy(registry, mount_factory, tmp_path)
    assert os.listdir(m.path) == [registry.host]            # no ghost "127.0.0.1"


def test_oci_image_tool_validates(registry, mount_factory, multi):
    """oci-image-tool (Debian's, image-spec 1.0) validates the layout of an
    image index: no layer<N>.d/ or other extra entries for it to walk into."""
    need("oci-image-tool")
    m = mount_factory(opts=["registry=" + registry.host])
    lay = os.path.join(m.path, ".ocifs", "layout", registry.host, "lay/multi", "1.0")
    r = run(["oci-image-tool", "validate", "--type", "image", "."], cwd=lay)
    assert b"Validation succeeded" in r.stdout + r.stderr
