"""Integration tests: platform-aware artifacts (issue 4), over a real registry.

The contract:

    ocifs -f -o cache=DIR[,platform=OS/ARCH[/VARIANT]][,max_extract=SIZE][,max_entries=N] MNT

  * an image index / Docker manifest list shows this platform's manifest as
    manifest.json (variant rules of the image-spec and containerd); the layout
    view /.ocifs/layout/... holds the whole index (index.json points at it,
    blobs/sha256/ every platform's manifest, config and layers); no match ->
    manifest.json is ENOENT and the log names the platforms on offer;
  * per-platform layers (mediaType ``.bin.<os>-<arch>``, descriptor ``platform``,
    or a title naming the platform): only this platform's is listed, also at the
    top under its title's base name (``entrypoint`` when untitled), 0555; the
    others are never fetched;
  * platform-suffixed tags (seed 002): ``0.0.1`` resolves to ``0.0.1-<os>-<arch>``;
  * legacy fallback (seed 000): ``entrypoint`` comes out of the multi-platform
    ``application/vnd.oras.v1`` tar.gz layer;
  * tar layers browse as ``<title>.d/`` (untitled: ``layer<N>.d/``);
  * malicious tars are refused with EIO and a log line naming layer and entry,
    and nothing is written outside the cache;
  * the binary runs straight from the mount; concurrent cold execs download once.

Artifacts are shaped like the seeds (``shared/seeds/000_*``, ``002_*``).  Each test
mounts afresh (own cache) so request counts start cold.
"""

import errno
import gzip
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import tarfile
import threading
import uuid

import pytest

from fixtures import push
from fixtures.push import Client, platform, push_artifact, push_index, sha256_digest
from fixtures.layout import layout_blob, layout_dir

MiB = 1024 * 1024
TITLE = push.TITLE
# A real ELF that prints a version (the "provider binary" of these tests).
ELF_PATH = "/usr/bin/sha256sum"
TOKEN = uuid.uuid4().hex[:10]           # names the files a malicious tar would plant
PLATFORMS4 = [("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"),
              ("darwin", "arm64")]


# --- helpers ------------------------------------------------------------------

def read(path):
    with open(path, "rb") as f:
        return f.read()


def run(cmd, timeout=60, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, **kw)


def art(m, host, repo, ref):
    return os.path.join(m.path, host, repo, ref)


def blob_file(d, digest):
    """The blob in the layout view of artifact directory d (fixtures/layout.py)."""
    return layout_blob(d, digest)


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def assert_binary(path, data):
    """A regular 0555 file holding ``data``."""
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode), (path, oct(st.st_mode))
    assert stat.S_IMODE(st.st_mode) == 0o555, (path, oct(st.st_mode))
    assert st.st_size == len(data), path
    assert read(path) == data, path


def gets(registry, repo, digest, since):
    return registry.count("GET", "/v2/%s/blobs/%s" % (re.escape(repo), re.escape(digest)),
                          since=since)


def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return None


def mount_opts(registry, plat=None, *more):
    o = ["registry=" + registry.host]
    if plat:
        o.append("platform=" + plat)
    return o + list(more)


def elf_version(path):
    r = run([path, "--version"])
    assert r.returncode == 0, (path, r.returncode, r.stderr)
    return r.stdout


# --- tar building -------------------------------------------------------------

def F(name, data, mode=0o644):
    return ("file", name, data, mode)


def D(name, mode=0o755):
    return ("dir", name, None, mode)


def SYM(name, target):
    return ("sym", name, target, 0o777)


def HARD(name, target):
    return ("hard", name, target, 0o644)


def CHR(name, major=1, minor=3):
    return ("chr", name, (major, minor), 0o666)


def FIFO(name):
    return ("fifo", name, None, 0o644)


def tar_bytes(entries, gz=True):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w",
                      format=tarfile.GNU_FORMAT) as t:
        for kind, name, data, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            ti.mtime = 1700000000
            ti.uname = ti.gname = "root"
            if kind == "file":
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
                continue
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, data
            elif kind == "chr":
                ti.type = tarfile.CHRTYPE
                ti.devmajor, ti.devminor = data
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            t.addfile(ti)
    return buf.getvalue()


def oras_dir_annotations(tar_gz):
    """What ``oras push`` puts on a directory it packed as tar+gzip."""
    return {"annotations": {
        "io.deis.oras.content.digest": sha256_digest(_gunzip(tar_gz)),
        "io.deis.oras.content.unpack": "true"}}


def _gunzip(b):
    return gzip.decompress(b)


# --- seed-shaped content ------------------------------------------------------

def provider_yaml(name, size):
    head = ("apiVersion: sourceplane.io/v1\nkind: Provider\nmetadata:\n"
            "  name: %s\n  version: v0.2.0\nspec:\n  runtime: binary\n"
            "  entrypoint: entrypoint\n  inputs:\n" % name)
    lines, i = [head], 0
    while sum(map(len, lines)) < size:
        lines.append("    - name: input_%03d\n      type: string\n"
                     "      description: a provider input number %d\n" % (i, i))
        i += 1
    return "".join(lines).encode()[:size]


def assets_tgz():
    return tar_bytes([D("assets"), D("assets/schemas"),
                      F("assets/schemas/provider.schema.json",
                        json.dumps({"$schema": "http://json-schema.org/draft-07/schema#",
                                    "type": "object",
                                    "properties": {"name": {"type": "string"}}},
                                   indent=2).encode() * 8),
                      F("assets/README.md", b"# lite-ci assets\n" * 40)])


def fake_binary(os_name, arch, size):
    magic = b"\x7fELF" if os_name == "linux" else b"\xcf\xfa\xed\xfe"
    tag = ("fake %s/%s entrypoint\n" % (os_name, arch)).encode()
    return magic + tag + os.urandom(size - len(magic) - len(tag))


@pytest.fixture(scope="module")
def elf():
    return read(ELF_PATH)


@pytest.fixture(scope="module")
def elf_stdout():
    return elf_version(ELF_PATH)


@pytest.fixture(scope="module")
def seed000(registry, elf):
    """ghcr.io/sourceplane/lite-ci:v0.2.0, the new per-platform structure."""
    c = Client(registry.host)
    bins = {}
    for os_name, arch in PLATFORMS4:
        if (os_name, arch) == ("linux", "amd64"):
            bins[(os_name, arch)] = elf
        else:
            bins[(os_name, arch)] = fake_binary(os_name, arch, 200 * 1024 + len(bins))
    assets = assets_tgz()
    files = [("thin.provider.yaml", provider_yaml("lite", 4470),
              "application/vnd.sourceplane.provider.v1"),
             ("assets", assets, "application/vnd.sourceplane.assets.v1",
              oras_dir_annotations(assets))]
    for os_name, arch in PLATFORMS4:
        files.append(("bin/%s/%s/entrypoint" % (os_name, arch), bins[(os_name, arch)],
                      "application/vnd.sourceplane.bin.%s-%s" % (os_name, arch)))
    p = push_artifact(c, "sourceplane/lite-ci", ["v0.2.0"], files=files,
                      config=b'{"name":"lite","version":"v0.2.0"}',
                      config_media_type="application/vnd.sourceplane.provider.config.v1+json")
    p.bins = {"%s/%s" % k: v for k, v in bins.items()}
    p.bin_layer = {"%s/%s" % k: p.layers[2 + i] for i, k in enumerate(PLATFORMS4)}
    return p


@pytest.fixture(scope="module")
def legacy(registry, elf):
    """The legacy seed-000 provider: three application/vnd.oras.v1 layers, the
    last a tar.gz (an oras-packed directory) with every platform's binary."""
    c = Client(registry.host)
    bins = {}
    entries = [D("bin")]
    for os_name, arch in PLATFORMS4:
        data = elf if (os_name, arch) == ("linux", "amd64") else \
            fake_binary(os_name, arch, 150 * 1024 + len(bins))
        bins["%s/%s" % (os_name, arch)] = data
        entries += [D("bin/%s" % os_name), D("bin/%s/%s" % (os_name, arch)),
                    F("bin/%s/%s/entrypoint" % (os_name, arch), data, 0o755)]
    # de-duplicate directory entries, keep order
    seen, uniq = set(), []
    for e in entries:
        if e[1] not in seen:
            seen.add(e[1])
            uniq.append(e)
    bin_tgz = tar_bytes(uniq)
    assets = assets_tgz()
    files = [("thin.provider.yaml", provider_yaml("lite", 5332), "application/vnd.oras.v1"),
             ("assets", assets, "application/vnd.oras.v1", oras_dir_annotations(assets)),
             ("bin", bin_tgz, "application/vnd.oras.v1", oras_dir_annotations(bin_tgz))]
    p = push_artifact(c, "sourceplane/lite-legacy", ["v0.1.0"], files=files,
                      config=b"{}", config_media_type="application/vnd.unknown.config.v1+json")
    p.bins = bins
    return p


def push_plugin(c, repo, version, os_name, arch, elf):
    """One seed-002 plugin artifact, as ``oras push`` of push-plugins.sh makes it."""
    name = "schemahero-postgres-%s-%s" % (os_name, arch)
    binary = elf if (os_name, arch) == ("linux", "amd64") else \
        fake_binary(os_name, arch, 120 * 1024)
    tgz = tar_bytes([F(name, binary, 0o755)])
    sha_line = ("%s  %s.tar.gz\n" % (hashlib.sha256(tgz).hexdigest(), name)).encode()
    p = push_artifact(c, repo, ["%s-%s-%s" % (version, os_name, arch)],
                      files=[(name + ".tar.gz", tgz, "application/gzip"),
                             (name + ".tar.gz.sha256", sha_line, "text/plain")],
                      artifact_type="application/vnd.schemahero.plugin.v1+tar",
                      annotations={TITLE: "schemahero-postgres",
                                   "org.opencontainers.image.version": version})
    p.name, p.binary = name, binary
    return p


@pytest.fixture(scope="module")
def seed002(registry, elf):
    c = Client(registry.host)
    return {arch: push_plugin(c, "schemahero/plugins/postgres", "0.0.1", "linux", arch, elf)
            for arch in ("amd64", "arm64")}


def push_platform_child(c, repo, os_name, arch, variant=None):
    plat = "/".join(x for x in (os_name, arch, variant) if x)
    cfg = json.dumps({"architecture": arch, "os": os_name, "variant": variant,
                      "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    p = push_artifact(c, repo, [], files=[
        ("platform.txt", (plat + "\n").encode(), "text/plain"),
        ("payload.bin", os.urandom(2048), "application/octet-stream")],
        config=cfg, config_media_type=push.OCI_CONFIG)
    p.plat = plat
    return p, platform(os_name, arch, variant)


def push_docker_child(c, repo, os_name, arch):
    cfg = json.dumps({"architecture": arch, "os": os_name,
                      "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    p = push_artifact(c, repo, [], files=[(None, os.urandom(1500))], config=cfg,
                      docker=True)
    p.plat = "%s/%s" % (os_name, arch)
    return p, platform(os_name, arch)


@pytest.fixture(scope="module")
def indexes(registry):
    """Image indexes: the four-platform one plus the variant corner cases."""
    c = Client(registry.host)
    out = {}

    def index(repo, specs, docker=False):
        kids = [(push_docker_child if docker else push_platform_child)(c, repo, *s)
                for s in specs]
        p = push_index(c, repo, ["1"], kids, docker=docker)
        p.by_plat = {k.plat: k for k, _ in kids}
        out[repo] = p

    index("idx/four", [("linux", "amd64"), ("linux", "arm64", "v8"),
                       ("linux", "arm", "v7"), ("darwin", "arm64")])
    index("idx/arm64plain", [("linux", "amd64"), ("linux", "arm64")])
    index("idx/armv6v7", [("linux", "arm", "v6"), ("linux", "arm", "v7"),
                          ("linux", "amd64")])
    index("idx/armv6only", [("linux", "amd64"), ("linux", "arm", "v6")])
    index("idx/armv7only", [("linux", "amd64"), ("linux", "arm", "v7")])
    index("idx/dockerlist", [("linux", "arm64"), ("linux", "amd64"), ("windows", "amd64")],
          docker=True)
    return out


# --- 1. image index -----------------------------------------------------------

INDEX_CASES = [
    # (mount platform, index repo, expected child platform)
    (None, "idx/four", "linux/amd64"),
    ("linux/arm64", "idx/four", "linux/arm64/v8"),           # arm64 == arm64/v8
    ("linux/arm64/v8", "idx/arm64plain", "linux/arm64"),     # ... both ways
    ("darwin/arm64", "idx/four", "darwin/arm64"),
    ("linux/arm", "idx/armv6v7", "linux/arm/v7"),            # arm defaults to v7
    ("linux/arm/v6", "idx/armv6v7", "linux/arm/v6"),
    ("linux/arm/v7", "idx/armv6only", "linux/arm/v6"),       # v7 runs v6
    (None, "idx/dockerlist", "linux/amd64"),                 # Docker manifest list
]


@pytest.mark.parametrize("plat,repo,want", INDEX_CASES,
                         ids=["%s-%s" % (p or "default", r.split("/")[1])
                              for p, r, _ in INDEX_CASES])
def test_index_selects_platform(mount_factory, registry, indexes, plat, repo, want):
    idx = indexes[repo]
    child = idx.by_plat[want]
    m = mount_factory(opts=mount_opts(registry, plat))
    d = art(m, registry.host, repo, "1")
    mark = registry.mark()
    names = set(os.listdir(d))
    assert {"manifest.json", "config.json"} <= names, names
    assert not {"blobs", "index.json", "oci-layout"} & names, names
    mf = os.path.join(d, "manifest.json")
    assert read(mf) == child.manifest
    assert hashlib.sha256(read(mf)).hexdigest() == child.hex
    assert os.stat(mf).st_size == len(child.manifest)
    assert read(os.path.join(d, "config.json")) == child.config.data
    for layer in child.layers:
        if layer.title:
            assert read(os.path.join(d, layer.title)) == layer.data
        assert read(blob_file(d, layer.digest)) == layer.data
    if not idx.media_type == push.DOCKER_LIST:
        assert read(os.path.join(d, "platform.txt")) == (want + "\n").encode()
    # the layout view: the index itself by digest, index.json pointing at it,
    # and every platform's manifest, config and layers (listed, not fetched)
    lay = layout_dir(d)
    assert read(blob_file(d, idx.digest)) == idx.manifest
    listed = set(os.listdir(os.path.join(lay, "blobs", "sha256")))
    assert listed == {idx.hex} | {k.hex for k in idx.manifests} | \
        {b.hex for b in idx.blobs()}, listed
    layout = json.loads(read(os.path.join(lay, "index.json")))
    assert [(x["digest"], x["size"], x["mediaType"]) for x in layout["manifests"]] == \
        [(idx.digest, len(idx.manifest), idx.media_type)], layout
    assert json.loads(read(os.path.join(lay, "oci-layout"))) == {"imageLayoutVersion": "1.0.0"}
    # other platforms' configs and layers are never fetched
    others = [b for k in idx.manifests if k is not child for b in k.blobs()]
    for b in others:
        assert gets(registry, repo, b.digest, mark) == 0, (b.digest, "of another platform")


@pytest.mark.parametrize("plat,repo", [("linux/s390x", "idx/four"),
                                       ("linux/arm/v6", "idx/armv7only")])
def test_index_no_matching_platform(mount_factory, registry, indexes, plat, repo):
    idx = indexes[repo]
    m = mount_factory(opts=mount_opts(registry, plat))
    d = art(m, registry.host, repo, "1")
    mark = registry.mark()
    assert stat.S_ISDIR(os.stat(d).st_mode)
    names = os.listdir(d)
    assert "manifest.json" not in names and "config.json" not in names, names
    assert read(blob_file(d, idx.digest)) == idx.manifest
    layout = json.loads(read(os.path.join(layout_dir(d), "index.json")))
    assert [x["digest"] for x in layout["manifests"]] == [idx.digest]
    for name in ("manifest.json", "config.json", "platform.txt"):
        assert errno_of(os.stat, os.path.join(d, name)) == errno.ENOENT, name
        assert errno_of(read, os.path.join(d, name)) == errno.ENOENT, name
    lines = [ln for ln in m.log_text().splitlines() if "offers" in ln]
    assert lines, m.log_text()
    for k in idx.manifests:
        assert any(k.plat in ln for ln in lines), (k.plat, lines)
    assert any(plat in ln for ln in lines), lines
    assert registry.count("GET", "/v2/%s/blobs/.*" % repo, since=mark) == 0
    assert m.alive


# --- 2. per-platform layers (seed 000, new structure) -------------------------

SEED000_PLATS = [None, "linux/arm64", "darwin/amd64", "darwin/arm64"]


@pytest.mark.parametrize("plat", SEED000_PLATS, ids=[p or "default" for p in SEED000_PLATS])
def test_seed000_only_this_platform(mount_factory, registry, seed000, plat):
    p = seed000
    want = plat or "linux/amd64"
    os_name, arch = want.split("/")
    m = mount_factory(opts=mount_opts(registry, plat))
    d = art(m, registry.host, "sourceplane/lite-ci", "v0.2.0")
    mark = registry.mark()
    names = set(os.listdir(d))
    assert {"manifest.json", "config.json", "thin.provider.yaml", "assets",
            "bin", "entrypoint"} <= names, names
    assert not {"blobs", "index.json", "oci-layout"} & names, names
    assert read(os.path.join(d, "manifest.json")) == p.manifest
    # the binary: at its title path and at the top, 0555
    assert_binary(os.path.join(d, "bin", os_name, arch, "entrypoint"), p.bins[want])
    assert_binary(os.path.join(d, "entrypoint"), p.bins[want])
    assert os.listdir(os.path.join(d, "bin")) == [os_name]
    assert os.listdir(os.path.join(d, "bin", os_name)) == [arch]
    assert os.listdir(os.path.join(d, "bin", os_name, arch)) == ["entrypoint"]
    for o, a in PLATFORMS4:
        if (o, a) != (os_name, arch):
            assert not os.path.lexists(os.path.join(d, "bin", o, a)), (o, a)
            assert errno_of(os.stat, os.path.join(d, "bin", o, a, "entrypoint")) == \
                errno.ENOENT
    if os_name == "linux":
        assert not os.path.lexists(os.path.join(d, "bin", "darwin"))
    assert mode_of(os.path.join(d, "thin.provider.yaml")) == 0o444
    assert read(os.path.join(d, "thin.provider.yaml")) == p.layers[0].data
    # the layout view's blobs/sha256 lists every blob
    assert set(os.listdir(os.path.join(layout_dir(d), "blobs", "sha256"))) == \
        {p.hex, p.config.hex} | {l.hex for l in p.layers}
    # read everything visible, stat everything, run the binary where it can run
    other = [l for k, l in p.bin_layer.items() if k != want]
    for dirpath, dirs, files in os.walk(d):
        for n in files:
            read(os.path.join(dirpath, n))
    r = run(["ls", "-lR", d])
    assert r.returncode == 0, r.stderr
    if want == "linux/amd64":
        elf_version(os.path.join(d, "entrypoint"))
    for l in other:
        assert gets(registry, "sourceplane/lite-ci", l.digest, mark) == 0, \
            "layer %s of another platform was fetched" % l.title
    assert gets(registry, "sourceplane/lite-ci", p.bin_layer[want].digest, mark) == 1


def test_platform_in_title_and_descriptor(mount_factory, registry):
    c = Client(registry.host)
    amd, arm, mac = (os.urandom(3000) for _ in range(3))
    titled = push_artifact(c, "plat/titled", ["1"], files=[
        ("README.md", b"# tool\n", "text/markdown"),
        ("tool-linux-amd64", amd), ("tool-linux-arm64", arm), ("tool-darwin-arm64", mac)])
    descr = push_artifact(c, "plat/descr", ["1"], files=[
        ("LICENSE", b"MIT\n", "text/plain"),
        ("build-a/agent", amd, None, {"platform": platform("linux", "amd64")}),
        ("build-b/agent", arm, None, {"platform": platform("linux", "arm64")}),
        (None, mac, None, {"platform": platform("darwin", "arm64")})])
    m = mount_factory(opts=mount_opts(registry))
    mark = registry.mark()

    d = art(m, registry.host, "plat/titled", "1")
    names = set(os.listdir(d))
    assert {"README.md", "tool-linux-amd64"} <= names, names
    assert not names & {"tool-linux-arm64", "tool-darwin-arm64"}, names
    assert_binary(os.path.join(d, "tool-linux-amd64"), amd)
    assert mode_of(os.path.join(d, "README.md")) == 0o444
    assert errno_of(os.stat, os.path.join(d, "tool-linux-arm64")) == errno.ENOENT

    d = art(m, registry.host, "plat/descr", "1")
    names = set(os.listdir(d))
    assert {"LICENSE", "build-a", "agent"} <= names, names
    assert "build-b" not in names, names
    assert_binary(os.path.join(d, "agent"), amd)
    assert_binary(os.path.join(d, "build-a", "agent"), amd)
    assert mode_of(os.path.join(d, "LICENSE")) == 0o444

    for p in (titled, descr):
        for i in (2, 3):
            assert gets(registry, p.repo, p.layers[i].digest, mark) == 0, \
                (p.repo, i, "layer of another platform fetched")


def test_untitled_platform_layer_is_entrypoint(mount_factory, registry):
    """Issue 4: this platform's binary shows under its title's base name, "or
    `entrypoint` where it has no title"."""
    c = Client(registry.host)
    amd, arm = os.urandom(3000), os.urandom(3001)
    p = push_artifact(c, "plat/untitled", ["1"], files=[
        (None, arm, None, {"platform": platform("linux", "arm64")}),
        (None, amd, None, {"platform": platform("linux", "amd64")}),
        ("notes.txt", b"notes\n", "text/plain")])
    m = mount_factory(opts=mount_opts(registry))
    d = art(m, registry.host, "plat/untitled", "1")
    mark = registry.mark()
    try:
        names = set(os.listdir(d))
        assert {"notes.txt", "entrypoint"} <= names, names
        assert_binary(os.path.join(d, "entrypoint"), amd)
    finally:
        os.listdir(os.path.join(layout_dir(d), "blobs", "sha256"))
        assert gets(registry, p.repo, p.layers[0].digest, mark) == 0


# --- 3. platform-suffixed tags (seed 002) --------------------------------------

@pytest.mark.parametrize("plat", [None, "linux/arm64"], ids=["default", "linux-arm64"])
def test_seed002_suffixed_tags(mount_factory, registry, seed002, elf_stdout, plat):
    arch = "arm64" if plat else "amd64"
    p = seed002[arch]
    m = mount_factory(opts=mount_opts(registry, plat))
    repo_dir = os.path.join(m.path, registry.host, "schemahero", "plugins", "postgres")
    assert sorted(os.listdir(repo_dir)) == ["0.0.1", "0.0.1-linux-amd64", "0.0.1-linux-arm64"]
    d = os.path.join(repo_dir, "0.0.1")
    assert stat.S_ISDIR(os.stat(d).st_mode)
    assert read(os.path.join(d, "manifest.json")) == p.manifest
    assert json.loads(read(os.path.join(d, "manifest.json")))["artifactType"] == \
        "application/vnd.schemahero.plugin.v1+tar"
    assert read(os.path.join(repo_dir, "0.0.1-linux-%s" % arch, "manifest.json")) == p.manifest
    # the seed's own workflow, minus the download: verify the checksum in place
    r = run(["sha256sum", "-c", p.name + ".tar.gz.sha256"], cwd=d)
    assert r.returncode == 0 and b": OK" in r.stdout, (r.stdout, r.stderr)
    # ... minus tar -xzf and chmod +x: the archive browses as a directory
    inner = os.path.join(d, p.name + ".tar.gz.d", p.name)
    st = os.lstat(inner)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555
    assert read(inner) == p.binary
    if arch == "amd64":
        assert elf_version(inner) == elf_stdout


def test_plain_tag_wins_over_suffixed(mount_factory, registry, elf):
    c = Client(registry.host)
    suffixed = push_plugin(c, "schemahero/plugins/mysql", "0.0.2", "linux", "amd64", elf)
    plain = push_artifact(c, "schemahero/plugins/mysql", ["0.0.2"],
                          files=[("README.md", b"plain 0.0.2\n", "text/markdown")])
    assert plain.digest != suffixed.digest
    m = mount_factory(opts=mount_opts(registry))
    repo_dir = os.path.join(m.path, registry.host, "schemahero", "plugins", "mysql")
    assert sorted(os.listdir(repo_dir)) == ["0.0.2", "0.0.2-linux-amd64"]
    assert read(os.path.join(repo_dir, "0.0.2", "manifest.json")) == plain.manifest


# --- 4. legacy multi-platform fallback (seed 000) ------------------------------

LEGACY_PLATS = [None, "darwin/arm64", "linux/arm64"]


@pytest.mark.parametrize("plat", LEGACY_PLATS, ids=[p or "default" for p in LEGACY_PLATS])
def test_legacy_fallback(mount_factory, registry, legacy, elf_stdout, plat):
    p = legacy
    want = plat or "linux/amd64"
    m = mount_factory(opts=mount_opts(registry, plat))
    d = art(m, registry.host, "sourceplane/lite-legacy", "v0.1.0")
    names = set(os.listdir(d))
    assert {"manifest.json", "thin.provider.yaml", "assets", "bin", "entrypoint"} <= names, \
        names
    assert read(os.path.join(d, "thin.provider.yaml")) == p.layers[0].data
    ep = os.path.join(d, "entrypoint")
    assert_binary(ep, p.bins[want])
    if want == "linux/amd64":
        assert elf_version(ep) == elf_stdout
    log = m.log_text()
    assert re.search(r"legacy fallback", log, re.I), log
    assert p.layers[2].digest in log or p.layers[2].hex in log, log


# --- 5. tar layers as directories ----------------------------------------------

TOOL = b"#!/bin/sh\necho tool\n"
CONF = b"key: value\n"


def tree_entries(prefix=""):
    P = lambda n: prefix + n  # noqa: E731
    return [D(P("etc")), F(P("etc/config.yaml"), CONF, 0o644),
            # no entry for usr/ nor usr/bin/: implied directories
            F(P("usr/bin/tool"), TOOL, 0o755),
            SYM(P("usr/bin/alias"), "tool"),
            SYM(P("etc/tool-link"), "../usr/bin/tool"),
            F(P("secret"), b"s3cret\n", 0o600),
            F(P("run.sh"), b"#!/bin/sh\n", 0o700),
            D(P("usr/share/doc"), 0o700),
            F(P("usr/share/doc/empty"), b"", 0o644),
            HARD(P("hard"), P("etc/config.yaml"))]


# path -> (kind, mode, content or link target)
TREE_WANT = {
    "etc": ("dir", None, None),
    "etc/config.yaml": ("file", 0o444, CONF),
    "usr": ("dir", None, None),
    "usr/bin": ("dir", None, None),
    "usr/bin/tool": ("file", 0o555, TOOL),
    "usr/bin/alias": ("sym", None, "tool"),
    "etc/tool-link": ("sym", None, "../usr/bin/tool"),
    "secret": ("file", 0o400, b"s3cret\n"),
    "run.sh": ("file", 0o500, b"#!/bin/sh\n"),
    "usr/share": ("dir", None, None),
    "usr/share/doc": ("dir", None, None),
    "usr/share/doc/empty": ("file", 0o444, b""),
    "hard": ("file", 0o444, CONF),
}


def assert_tree(root):
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            full = os.path.join(dirpath, n)
            found[os.path.relpath(full, root)] = full
    assert set(found) == set(TREE_WANT), (root, sorted(found))
    for rel, (kind, mode, content) in TREE_WANT.items():
        full = found[rel]
        st = os.lstat(full)
        if kind == "dir":
            assert stat.S_ISDIR(st.st_mode), rel
            assert st.st_mode & 0o222 == 0 and st.st_mode & 0o500 == 0o500, (rel, oct(st.st_mode))
        elif kind == "file":
            assert stat.S_ISREG(st.st_mode), rel
            assert stat.S_IMODE(st.st_mode) == mode, (rel, oct(st.st_mode))
            assert st.st_size == len(content), rel
            assert read(full) == content, rel
        else:
            assert stat.S_ISLNK(st.st_mode), (rel, oct(st.st_mode))
            assert os.readlink(full) == content, rel
    # symlinks resolve inside the tree
    assert read(os.path.join(root, "usr", "bin", "alias")) == TOOL
    assert read(os.path.join(root, "etc", "tool-link")) == TOOL


def test_tar_layers_as_directories(mount_factory, registry):
    c = Client(registry.host)
    p = push_artifact(c, "tars/mixed", ["1"], files=[
        ("rootfs.tar.gz", tar_bytes(tree_entries()), push.OCI_LAYER_TAR_GZIP),
        ("plain.tar", tar_bytes(tree_entries(), gz=False), "application/octet-stream"),
        ("stuff.tgz", tar_bytes(tree_entries("./")), "application/octet-stream"),
        (None, tar_bytes(tree_entries(), gz=False), push.OCI_LAYER_TAR),
        ("notes.txt", b"not an archive\n", "text/plain"),
        (None, tar_bytes(tree_entries("./")), push.OCI_LAYER_TAR_GZIP)])
    m = mount_factory(opts=mount_opts(registry))
    d = art(m, registry.host, "tars/mixed", "1")
    mark = registry.mark()
    names = set(os.listdir(d))
    dirs = ["rootfs.tar.gz.d", "plain.tar.d", "stuff.tgz.d", "layer3.d", "layer5.d"]
    assert set(dirs) <= names, names
    assert "notes.txt.d" not in names and "layer4.d" not in names, names
    assert errno_of(os.stat, os.path.join(d, "notes.txt.d")) == errno.ENOENT
    for n in dirs:
        assert stat.S_ISDIR(os.stat(os.path.join(d, n)).st_mode), n
        assert_tree(os.path.join(d, n))
    # the layers themselves are still files with their own bytes
    assert read(os.path.join(d, "rootfs.tar.gz")) == p.layers[0].data
    assert read(os.path.join(d, "plain.tar")) == p.layers[1].data
    # browse again: everything comes from the extraction, one download per layer
    for n in dirs:
        assert_tree(os.path.join(d, n))
    for i in (0, 1, 2, 3, 5):
        assert gets(registry, "tars/mixed", p.layers[i].digest, mark) == 1, i


def test_docker_image_layers_as_directories(mount_factory, registry):
    c = Client(registry.host)
    p = push_artifact(c, "tars/dockerimg", ["latest"], docker=True, files=[
        (None, tar_bytes([D("bin"), F("bin/app", b"\x7fELFapp", 0o755)])),
        (None, tar_bytes([D("etc"), F("etc/hostname", b"box\n", 0o644),
                          SYM("etc/localtime", "../usr/share/zoneinfo/UTC")]))],
        config=b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}')
    assert p.layers[0].media_type == push.DOCKER_LAYER
    m = mount_factory(opts=mount_opts(registry))
    d = art(m, registry.host, "tars/dockerimg", "latest")
    assert {"layer0.d", "layer1.d"} <= set(os.listdir(d))
    f = os.path.join(d, "layer0.d", "bin", "app")
    assert read(f) == b"\x7fELFapp" and mode_of(f) == 0o555
    f = os.path.join(d, "layer1.d", "etc", "hostname")
    assert read(f) == b"box\n" and mode_of(f) == 0o444
    assert os.readlink(os.path.join(d, "layer1.d", "etc", "localtime")) == \
        "../usr/share/zoneinfo/UTC"


# --- 6. hardening ----------------------------------------------------------------

def E(name):
    return "%s-%s" % (name, TOKEN)


# case -> (tar entries, the entry the log must name (a regex))
MALICIOUS = {
    "dotdot": ([F("ok.txt", b"ok\n"), F("../" + E("evil"), b"evil\n")],
               re.escape("../" + E("evil"))),
    "dotdot-nested": ([D("a"), F("a/../../" + E("evil"), b"evil\n")],
                      re.escape("a/../../" + E("evil"))),
    "absolute": ([F("/etc/" + E("x"), b"evil\n")], re.escape("/etc/" + E("x"))),
    "absolute-tmp": ([F("/tmp/" + E("x"), b"evil\n")], re.escape("/tmp/" + E("x"))),
    "symlink-out": ([SYM("link", "../../" + E("outside"))], r"\blink\b"),
    "symlink-abs": ([SYM("link", "/etc/passwd")], r"\blink\b"),
    "symlink-write-through": ([SYM("up", "../../.."), F("up/" + E("evil"), b"evil\n")],
                              r"\bup\b"),
    "hardlink-out": ([F("ok.txt", b"ok\n"), HARD("hl", "../" + E("x"))], r"\bhl\b"),
    "chardev": ([D("dev"), CHR("dev/" + E("null"))], re.escape("dev/" + E("null"))),
    "fifo": ([FIFO(E("pipe"))], re.escape(E("pipe"))),
    "size-bomb": ([F("small.txt", b"small\n"), F("bomb.bin", b"\0" * (4 * MiB))],
                  r"bomb\.bin"),
    "too-many-entries": ([F("f%03d" % i, b"x") for i in range(20)], r"f0\d\d"),
}


def _leaks():
    """Paths outside any cache where a malicious entry of this run could have
    landed (names carry TOKEN), found non-recursively in the usual suspects."""
    spots = {"/", "/etc", "/tmp", os.getcwd(), os.path.dirname(os.getcwd())}
    out = []
    for s in spots:
        try:
            out += [os.path.join(s, n) for n in os.listdir(s) if TOKEN in n]
        except OSError:
            pass
    return out


def _walk_no_mounts(root):
    """Every path below ``root`` (mount points not entered)."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not os.path.ismount(os.path.join(dirpath, x))]
        out += [os.path.join(dirpath, n) for n in dirs + files]
    return out


def assert_tmp_clean(m):
    """While mounted, <cache>/tmp holds at most the daemon's own (empty)
    session directory: no file, no half-extracted tree."""
    tmpdir = os.path.join(m.cache, "tmp")
    left = _walk_no_mounts(tmpdir) if os.path.isdir(tmpdir) else []
    left = [x for x in left if not (os.path.isdir(x) and not os.path.islink(x)
                                    and os.path.dirname(x) == tmpdir and not os.listdir(x))]
    assert not left, left


@pytest.mark.parametrize("case", list(MALICIOUS))
def test_malicious_tar_refused(mount_factory, registry, tmp_path, case):
    entries, entry_rx = MALICIOUS[case]
    c = Client(registry.host)
    repo = "evil/" + case
    p = push_artifact(c, repo, ["1"], files=[
        ("README.md", b"# innocent\n", "text/markdown"),
        ("payload.tar.gz", tar_bytes(entries), push.OCI_LAYER_TAR_GZIP)])
    layer = p.layers[1]
    m = mount_factory(opts=mount_opts(registry, None, "max_extract=1M", "max_entries=10"))
    d = art(m, registry.host, repo, "1")
    try:
        assert "payload.tar.gz.d" in os.listdir(d)
        for _ in range(2):                       # refused, and stays refused
            with pytest.raises(OSError) as ei:
                os.listdir(os.path.join(d, "payload.tar.gz.d"))
            assert ei.value.errno == errno.EIO, ei.value
        # the rest of the artifact is unharmed
        assert read(os.path.join(d, "README.md")) == b"# innocent\n"
        assert read(os.path.join(d, "payload.tar.gz")) == layer.data
        lines = [ln for ln in m.log_text().splitlines() if layer.hex in ln]
        assert lines, "no log line names layer %s:\n%s" % (layer.digest, m.log_text())
        assert any(re.search(entry_rx, ln) for ln in lines), (entry_rx, lines)
        # nothing written outside the cache, nothing of the archive kept in it
        leaked = _leaks() + [x for x in _walk_no_mounts(str(tmp_path)) if TOKEN in
                             os.path.basename(x)]
        assert not leaked, leaked
        assert_tmp_clean(m)
        assert not os.path.lexists(os.path.join(m.cache, "extract", "sha256", layer.hex))
        assert m.alive
        m.unmount()
        tmpdir = os.path.join(m.cache, "tmp")
        assert not os.path.isdir(tmpdir) or os.listdir(tmpdir) == [], os.listdir(tmpdir)
    finally:
        for x in _leaks():                      # never leave a planted file behind
            try:
                os.unlink(x)
            except OSError:
                pass


def test_malicious_legacy_layer(mount_factory, registry, tmp_path, elf):
    """A legacy multi-platform layer that also tries a traversal: the binary is
    not served out of it and nothing lands outside the cache."""
    c = Client(registry.host)
    tgz = tar_bytes([D("bin"), D("bin/linux"), D("bin/linux/amd64"),
                     F("bin/linux/amd64/entrypoint", elf, 0o755),
                     F("../" + E("evil"), b"evil\n")])
    p = push_artifact(c, "evil/legacy", ["1"], files=[
        ("thin.provider.yaml", provider_yaml("evil", 600), "application/vnd.oras.v1"),
        ("bin", tgz, "application/vnd.oras.v1", oras_dir_annotations(tgz))])
    m = mount_factory(opts=mount_opts(registry))
    d = art(m, registry.host, "evil/legacy", "1")
    try:
        os.listdir(d)
        err = errno_of(read, os.path.join(d, "entrypoint"))
        assert err in (errno.EIO, errno.ENOENT), err
        lines = [ln for ln in m.log_text().splitlines() if p.layers[1].hex in ln]
        assert any(E("evil") in ln for ln in lines), m.log_text()
        assert not _leaks()
        assert not [x for x in _walk_no_mounts(str(tmp_path)) if TOKEN in os.path.basename(x)]
        assert not os.path.lexists(os.path.join(m.cache, "extract", "sha256", p.layers[1].hex))
        assert_tmp_clean(m)
    finally:
        for x in _leaks():
            try:
                os.unlink(x)
            except OSError:
                pass


# --- 7. exec ------------------------------------------------------------------

def test_exec_in_place(mount_factory, registry, seed000, elf_stdout, tmp_path):
    m = mount_factory(opts=mount_opts(registry))
    d = art(m, registry.host, "sourceplane/lite-ci", "v0.2.0")
    for path in (os.path.join(d, "entrypoint"),
                 os.path.join(d, "bin", "linux", "amd64", "entrypoint")):
        assert os.access(path, os.X_OK), path
        assert elf_version(path) == elf_stdout, path
    # a shell finds it on PATH too (through a symlink: the host's ":" would
    # split a PATH entry)
    link = os.path.join(str(tmp_path), "provider-bin")
    os.symlink(d, link)
    r = run(["sh", "-c", "entrypoint --version"],
            env=dict(os.environ, PATH=link + ":" + os.environ.get("PATH", "")))
    assert r.returncode == 0 and r.stdout == elf_stdout, r


def test_concurrent_cold_execs_one_download(mount_factory, registry, elf, elf_stdout):
    c = Client(registry.host)
    # trailing bytes after the ELF image do not change what runs; they make the
    # cold download long enough for the execs to overlap
    big = elf + os.urandom(8 * MiB)
    p = push_artifact(c, "exec/cold", ["1"], files=[
        ("thin.provider.yaml", provider_yaml("cold", 1000),
         "application/vnd.sourceplane.provider.v1"),
        ("bin/linux/amd64/entrypoint", big, "application/vnd.sourceplane.bin.linux-amd64"),
        ("bin/linux/arm64/entrypoint", os.urandom(4096),
         "application/vnd.sourceplane.bin.linux-arm64")])
    m = mount_factory(opts=mount_opts(registry))
    ep = os.path.join(art(m, registry.host, "exec/cold", "1"), "entrypoint")
    assert os.stat(ep).st_size == len(big)
    mark = registry.mark()
    n = 8
    barrier = threading.Barrier(n)
    results = [None] * n

    def go(i):
        try:
            barrier.wait(timeout=30)
            results[i] = run([ep, "--version"])
        except Exception as e:          # reported below
            results[i] = e

    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "execs still blocked after 90s"
    for r in results:
        assert isinstance(r, subprocess.CompletedProcess), r
        assert r.returncode == 0 and r.stdout == elf_stdout, (r.returncode, r.stderr)
    assert gets(registry, "exec/cold", p.layers[1].digest, mark) == 1
    assert gets(registry, "exec/cold", p.layers[2].digest, mark) == 0
