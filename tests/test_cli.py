"""Integration tests: ocifs as a command among others (issue 7, "fits the ecosystem").

    ocifs [options] MOUNTPOINT                 every registry
    ocifs [options] REGISTRY MOUNTPOINT        root = one registry's repositories
    ocifs [options] REFERENCE MOUNTPOINT       root = one artifact
    ocifs --help | --version
    mount -t fuse.ocifs REGISTRY MOUNTPOINT -o ...   (mount.fuse3 runs `ocifs`)
    /etc/fstab: REGISTRY MOUNTPOINT fuse.ocifs noauto,x-systemd.automount,_netdev,... 0 0

plus the man page (groff clean, installed by meson), /.ocifs/stats, the
user.oci.* extended attributes, the OCI image layout view read by skopeo, and
the -d request log.

Tools used besides the suite's own: getfattr (attr), groff (groff-base),
skopeo, meson, mount.fuse3 (fuse3), unshare/setpriv/mount (util-linux).  A
test whose tool is missing is skipped.
"""

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time

import pytest

from fixtures.users import run_as_nobody
from fixtures.mount import fusermount_unmount, is_mounted
from fixtures.push import (OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR_GZIP, OCI_MANIFEST,
                           TITLE, Client, Pushed, Blob, oci_manifest, platform,
                           push_artifact, push_demo, push_index, sha256_digest)
from fixtures.registry import closed_port, wait_for

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAN_PAGE = os.path.join(REPO_ROOT, "man", "ocifs.1")
README = os.path.join(REPO_ROOT, "README.md")

# Every ocifs -o option, and the defaults --help must state.
OPTIONS = ["cache", "tag_ttl", "registry", "insecure", "timeout", "retries",
           "platform", "max_extract", "max_entries"]
DEFAULTS = {"tag_ttl": "60", "timeout": "30", "retries": "3", "max_extract": "4G",
            "max_entries": "100000", "share": "none", "max_threads": "64",
            "artifacts_max": "2048", "artifacts_max_bytes": "64M", "tags_max": "16384",
            "listings_max": "4096", "listings_max_bytes": "32M"}
STATS_KEYS = ["requests", "manifest_requests", "blob_requests", "list_requests",
              "failed_requests", "cache_hits", "cache_misses", "bytes_fetched",
              "bytes_served_from_cache", "bytes_saved_by_platform",
              "platform_manifests_unread", "downloads", "downloads_failed",
              "download_seconds", "lookups_waiting", "lookups_shared", "hosts",
              "in_flight"]
FILE_XATTRS = ["user.oci.digest", "user.oci.mediaType", "user.oci.size",
               "user.oci.annotations"]
DIR_XATTRS = ["user.oci.digest", "user.oci.mediaType", "user.oci.artifactType",
              "user.oci.annotations", "user.oci.reference"]
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --- helpers ----------------------------------------------------------------

def run(cmd, timeout=60, check=True, env=None, input=None):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, env=env, input=input)
    if check:
        assert r.returncode == 0, "%s -> %d:\n%s\n%s" % (
            cmd, r.returncode, r.stdout.decode(errors="replace"),
            r.stderr.decode(errors="replace"))
    return r


def need(tool):
    path = shutil.which(tool) or shutil.which(tool, path=SAFE_PATH)
    if not path:
        pytest.skip("%s is not installed" % tool)
    return path


def read(path):
    with open(path, "rb") as f:
        return f.read()


def sha256_file(path):
    return hashlib.sha256(read(path)).hexdigest()


def stats(root):
    """The parsed /.ocifs/stats of the mount at ``root``."""
    return json.loads(read(os.path.join(root, ".ocifs", "stats")))


def man_text():
    """The man page as plain text, one long line per paragraph (groff,
    no hyphenation), so that names can be searched as they read."""
    need("groff")
    r = run(["groff", "-man", "-Tascii", "-P-c", "-P-b", "-P-o", "-P-u", "-rLL=2000n",
             "-rHY=0", MAN_PAGE])
    return r.stdout.decode()


def assert_not_mounted(mnt):
    assert not is_mounted(str(mnt)), "%s is mounted" % mnt


def run_ocifs_expect_failure(ocifs_bin, args, mnt, timeout=30):
    """Run ocifs (not -f: a success would daemonize); return the result,
    unmounting if it mounted after all."""
    try:
        r = run([ocifs_bin] + list(args) + [str(mnt)], timeout=timeout, check=False)
    finally:
        if is_mounted(str(mnt)):
            fusermount_unmount(str(mnt), lazy=True)
    return r


def parse_getfattr(text):
    """``getfattr -d`` output -> {file: {name: bytes}} (text encoding: values
    in double quotes, with backslash escapes and \\ooo octal)."""
    out, cur = {}, None
    for line in text.splitlines():
        if line.startswith("# file: "):
            cur = out.setdefault(line[len("# file: "):], {})
        elif "=" in line and cur is not None:
            name, _, val = line.partition("=")
            assert val.startswith('"') and val.endswith('"'), line
            val = val[1:-1]
            buf, i = bytearray(), 0
            while i < len(val):
                ch = val[i]
                if ch == "\\" and re.match(r"[0-7]{3}", val[i + 1:i + 4]):
                    buf.append(int(val[i + 1:i + 4], 8))
                    i += 4
                elif ch == "\\" and i + 1 < len(val):
                    buf += val[i + 1].encode()
                    i += 2
                else:
                    buf += ch.encode()
                    i += 1
            cur[name] = bytes(buf)
    return out


def getfattr(path):
    need("getfattr")
    r = run(["getfattr", "--absolute-names", "-d", "-m", "^user\\.oci\\.", path])
    return parse_getfattr(r.stdout.decode()).get(path, {})


def pids_running(binary, needle):
    """Pids of processes running ``binary`` whose command line holds ``needle``."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            exe = os.readlink("/proc/%s/exe" % pid)
            argv = read("/proc/%s/cmdline" % pid).split(b"\0")
        except OSError:
            continue
        if exe == os.path.realpath(binary) and any(needle.encode() in a for a in argv):
            out.append(int(pid))
    return out


def wait_gone(binary, needle, timeout=10):
    """Wait for the daemons we started (found by binary and mount point) to
    exit; end them if they do not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pids_running(binary, needle):
            return True
        time.sleep(0.05)
    for pid in pids_running(binary, needle):
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
    return False


def tar_gz(files):
    """A tar+gzip layer holding ``files`` ({name: bytes}); returns
    (compressed, uncompressed)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 0
            tf.addfile(ti, io.BytesIO(data))
    u = raw.getvalue()
    return gzip.compress(u, mtime=0), u


def push_image(c, repo, tags, arch, files):
    """A small OCI container image (OCI config, one tar+gzip layer)."""
    gz, raw = tar_gz(files)
    layer = Blob(gz, OCI_LAYER_TAR_GZIP)
    layer.descriptor = c.push_blob(repo, gz, OCI_LAYER_TAR_GZIP)
    cfg_bytes = json.dumps({"architecture": arch, "os": "linux",
                            "config": {"Cmd": ["/bin/sh"]},
                            "rootfs": {"type": "layers",
                                       "diff_ids": [sha256_digest(raw)]}}).encode()
    cfg = Blob(cfg_bytes, OCI_CONFIG)
    cfg.descriptor = c.push_blob(repo, cfg_bytes, OCI_CONFIG)
    body = oci_manifest(cfg.descriptor, [layer.descriptor])
    digest = c.push_manifest(repo, sha256_digest(body), body, OCI_MANIFEST)
    for t in tags:
        c.push_manifest(repo, t, body, OCI_MANIFEST)
    return Pushed(repo, list(tags), digest, body, OCI_MANIFEST, cfg, [layer])


# --- content ------------------------------------------------------------------

@pytest.fixture(scope="module")
def content(registry):
    c = Client(registry.host)
    out = dict(push_demo(c))
    # An artifact with annotations on the manifest and on a layer (with a
    # quote and a non-ASCII character, to see getfattr's escaping).
    repo = "cli/annotated"
    ann = {TITLE: "tool.txt", "com.example.layer": 'say "hi" \u00e9'}
    data = b"annotated layer\n"
    layer = Blob(data, "application/vnd.example.tool.v1", "tool.txt")
    layer.descriptor = c.push_blob(repo, data, layer.media_type, annotations=ann)
    cfg = Blob(b"{}", "application/vnd.oci.empty.v1+json")
    cfg.descriptor = c.push_blob(repo, b"{}", cfg.media_type)
    mann = {"org.opencontainers.image.description": "an annotated artifact",
            "org.opencontainers.image.version": "1.0"}
    body = oci_manifest(cfg.descriptor, [layer.descriptor],
                        artifact_type="application/vnd.example.tool.artifact.v1",
                        annotations=mann)
    digest = c.push_manifest(repo, "1.0", body, OCI_MANIFEST)
    out["annotated"] = Pushed(repo, ["1.0"], digest, body, OCI_MANIFEST, cfg, [layer])
    out["annotated"].annotations = mann
    out["annotated"].layer_annotations = ann
    # Container images: one alone, two behind an index.
    out["image"] = push_image(c, "img/app", ["1.0"], "amd64",
                              {"etc/hello": b"hello from a layer\n"})
    kids = [(push_image(c, "img/multi", [], a, {"arch": a.encode()}), platform("linux", a))
            for a in ("amd64", "arm64")]
    out["multi"] = push_index(c, "img/multi", ["1"], kids)
    # Per-platform layers in one manifest (seed 000 media types).
    out["plat"] = push_artifact(
        c, "plat/tool", ["1"],
        files=[("tool", os.urandom(3000), "application/vnd.ocifs.test.bin.linux-amd64"),
               ("tool", os.urandom(5000), "application/vnd.ocifs.test.bin.linux-arm64"),
               ("README.md", b"per-platform tool\n", "text/markdown")])
    # A tag and a sub-repository with the same name.
    out["shadow-tag"] = push_artifact(c, "cli/shadow", ["x"], files=[("tag.txt", b"tag\n")])
    out["shadow-repo"] = push_artifact(c, "cli/shadow/x", ["1"],
                                       files=[("repo.txt", b"sub-repository\n")])
    return out


@pytest.fixture(scope="module")
def help_text(ocifs_bin):
    """The ocifs part of --help (FUSE's own options follow "FUSE options:")."""
    r = run([ocifs_bin, "--help"])
    return r.stdout.decode().split("FUSE options:")[0]


# --- --help, --version, bad command lines -----------------------------------

@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_option_with_default(ocifs_bin, flag):
    r = run([ocifs_bin, flag])
    out = r.stdout.decode()
    for form in ("MOUNTPOINT", "REGISTRY MOUNTPOINT", "REFERENCE MOUNTPOINT"):
        assert form in out, form
    for name in OPTIONS:
        assert re.search(r"-o %s=" % name, out), "--help does not list -o %s=" % name
    for name, default in DEFAULTS.items():
        line = re.search(r"-o %s=.*?(?=\n    -)" % name, out, re.S).group(0)
        assert "default %s" % default in line, (name, line)
    assert "XDG_CACHE_HOME" in out and ".cache/ocifs" in out
    for fuse_opt in ("-f ", "-d ", "-s ", "allow_other", "--version"):
        assert fuse_opt in out, fuse_opt
    assert r.stderr == b""


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_names_all_components(ocifs_bin, flag):
    out = run([ocifs_bin, flag]).stdout.decode()
    want = re.search(r"version\s*:\s*'([^']+)'", read(os.path.join(REPO_ROOT, "meson.build"))
                     .decode()).group(1)
    assert re.search(r"^ocifs %s$" % re.escape(want), out, re.M), out
    for lib in ("libfuse", "libcurl", "jansson", "OpenSSL", "libarchive"):
        assert re.search(r"^%s \d+\.\d+" % lib, out, re.M), (lib, out)


@pytest.mark.parametrize("args,named", [
    (["-o", "bogus"], "bogus"),
    (["-o", "cache=/nonexistent/x,frobnicate=1"], "frobnicate=1"),
    (["--frobnicate"], "--frobnicate"),
])
def test_unknown_option_is_named(ocifs_bin, tmp_path, args, named):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run_ocifs_expect_failure(ocifs_bin, args, mnt)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert "unknown option" in err and named in err, err
    assert_not_mounted(mnt)


@pytest.mark.parametrize("opt", ["platform=foo/bar", "max_extract=lots", "max_entries=x",
                                 "timeout=soon", "share=everyone", "max_threads=0",
                                 "artifacts_max_bytes=lots", "listings_max_bytes=lots"])
def test_bad_option_value_is_named(ocifs_bin, tmp_path, opt):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run_ocifs_expect_failure(ocifs_bin, ["-o", "cache=%s" % (tmp_path / "c"),
                                             "-o", opt], mnt)
    assert r.returncode != 0
    assert opt.split("=")[0] in r.stderr.decode(), r.stderr.decode()
    assert_not_mounted(mnt)


@pytest.mark.parametrize("ref", ["UPPER/case:tag", "example.com/Repo:tag",
                                 "example.com/repo:bad tag", "example.com/repo@sha256:123"])
def test_bad_reference(ocifs_bin, tmp_path, ref):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run_ocifs_expect_failure(ocifs_bin, ["-o", "cache=%s" % (tmp_path / "c"), ref], mnt)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert ref in err and "not a registry or reference" in err, err
    assert len(err.strip().splitlines()) == 1, err      # one clear line
    assert_not_mounted(mnt)


def test_usage_errors(ocifs_bin, tmp_path):
    r = run([ocifs_bin], check=False)
    assert r.returncode != 0 and b"no mount point" in r.stderr
    r = run([ocifs_bin, "a.example", "b", "c"], check=False)
    assert r.returncode != 0 and b"too many arguments" in r.stderr


@pytest.mark.parametrize("what", ["repository", "tag"])
def test_missing_reference(ocifs_bin, tmp_path, registry, content, what):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    ref = registry.host + ("/no/such:1" if what == "repository" else "/demo/hello:nope")
    r = run_ocifs_expect_failure(ocifs_bin, ["-o", "cache=%s" % (tmp_path / "c"), ref], mnt)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert ref in err and "no such repository or tag" in err, err
    assert_not_mounted(mnt)


def test_unreachable_registry_mounts_anyway(ocifs_bin, registry_factory, tmp_path):
    """fstab with _netdev: a registry that is down at mount time gets a
    warning, not a failed mount; the artifact appears once it is back."""
    reg = registry_factory()
    push_artifact(Client(reg.host), "some/tool", ["v1"], files=[("t.txt", b"tool\n")])
    reg.stop()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    ref = reg.host + "/some/tool:v1"
    r = run([ocifs_bin, "-o", "cache=%s,timeout=2,retries=0" % (tmp_path / "c"), ref,
             str(mnt)], timeout=60, check=False)       # daemonizes once mounted
    try:
        assert r.returncode == 0, r.stderr.decode()
        assert b"warning" in r.stderr and b"mounting anyway" in r.stderr, r.stderr
        assert ref.encode() in r.stderr
        assert is_mounted(str(mnt))
        reg.start()
        # A registry that went silent is not asked again for up to
        # `timeout` seconds (2 here): poll for the artifact with a deadline.
        def back():
            try:
                return read(os.path.join(str(mnt), "t.txt")) == b"tool\n"
            except OSError:
                return False
        wait_for(back, 15, what="the artifact once the registry is back")
        assert stats(str(mnt))["failed_requests"] >= 1
    finally:
        if is_mounted(str(mnt)):
            fusermount_unmount(str(mnt))
        wait_gone(ocifs_bin, str(mnt))


def test_reference_mount_usable_while_registry_down(ocifs_bin, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run([ocifs_bin, "-o", "cache=%s,timeout=2,retries=0" % (tmp_path / "c"),
         "127.0.0.1:%d/some/tool:v1" % closed_port(), str(mnt)], timeout=60)
    try:
        assert stat.S_ISDIR(os.stat(str(mnt)).st_mode)
        assert stats(str(mnt))["failed_requests"] >= 1
    finally:
        if is_mounted(str(mnt)):
            fusermount_unmount(str(mnt))
        wait_gone(ocifs_bin, str(mnt))


# --- the three forms ------------------------------------------------------------

def test_form_all_registries(mount_factory, registry, content):
    m = mount_factory(opts=["registry=" + registry.host])
    assert os.listdir(m.path) == [registry.host]            # .ocifs not listed
    d = os.path.join(m.path, registry.host, "demo", "hello", "1.0")
    assert read(os.path.join(d, "hello.txt")) == b"Hello from ocifs!\n"
    assert sorted(os.listdir(os.path.join(m.path, ".ocifs"))) == ["layout", "referrers", "stats"]


def test_form_registry(mount_factory, registry, content):
    m = mount_factory(args=[registry.host])
    names = set(os.listdir(m.path))
    assert {"demo", "acme", "img", "cli"} <= names and registry.host not in names
    assert ".ocifs" not in names
    assert read(os.path.join(m.path, "demo", "hello", "1.0", "hello.txt")) == \
        b"Hello from ocifs!\n"
    assert read(os.path.join(m.path, "acme", "tools", "cli", "v1", "bin", "tool")) == \
        content["acme/tools/cli:v1"].layers[0].data
    assert stats(m.path)["requests"] >= 1


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_form_reference(mount_factory, registry, content, by):
    p = content["demo/hello:1.0"]
    ref = "%s/demo/hello%s" % (registry.host, ":1.0" if by == "tag" else "@" + p.digest)
    m = mount_factory(args=[ref])
    names = set(os.listdir(m.path))
    assert {"manifest.json", "config.json", "README.md", "hello.txt"} == names, names
    assert ".ocifs" not in names
    assert read(os.path.join(m.path, "manifest.json")) == p.manifest
    assert read(os.path.join(m.path, "hello.txt")) == b"Hello from ocifs!\n"
    # the layout view, under the full namespace's path in a reference mount too
    lay = os.path.join(m.path, ".ocifs", "layout", registry.host, "demo", "hello",
                       "1.0" if by == "tag" else p.digest)
    assert sha256_file(os.path.join(lay, "blobs", "sha256", p.hex)) == p.hex
    assert stats(m.path)["manifest_requests"] >= 1


def test_form_reference_to_index_picks_platform(mount_factory, registry, content):
    idx = content["multi"]
    m = mount_factory(opts=["platform=linux/arm64"], args=[registry.host + "/img/multi:1"])
    arm = idx.manifests[1]
    assert read(os.path.join(m.path, "manifest.json")) == arm.manifest
    assert read(os.path.join(m.path, "config.json")) == arm.config.data
    lay = os.path.join(m.path, ".ocifs", "layout", registry.host, "img", "multi", "1")
    layout = json.loads(read(os.path.join(lay, "index.json")))
    assert layout["manifests"][0]["digest"] == idx.digest
    assert layout["manifests"][0]["mediaType"] == OCI_INDEX


def test_mount_is_read_only_fuse_ocifs(mount_factory, registry):
    m = mount_factory(args=[registry.host])
    with open("/proc/self/mountinfo") as f:
        line = next(l for l in f if l.split()[4] == os.path.realpath(m.path))
    fields = line.split()
    sep = fields.index("-")
    assert fields[sep + 1] == "fuse.ocifs"
    assert fields[sep + 2] == registry.host         # fsname: the source
    assert "ro" in fields[5].split(",")
    assert os.statvfs(m.path).f_flag & os.ST_RDONLY


def test_tag_shadows_subrepository(mount_factory, registry, content):
    m = mount_factory(args=[registry.host])
    d = os.path.join(m.path, "cli", "shadow")
    assert set(os.listdir(d)) == {"x", ".x"}
    assert read(os.path.join(d, "x", "tag.txt")) == b"tag\n"
    assert read(os.path.join(d, ".x", "1", "repo.txt")) == b"sub-repository\n"


def test_reference_mount_of_shadowed_subrepository(mount_factory, registry, content):
    m = mount_factory(args=[registry.host + "/cli/shadow/x:1"])
    assert read(os.path.join(m.path, "repo.txt")) == b"sub-repository\n"


# --- mount(8), mount.fuse3, fstab, non-root ----------------------------------------

def _build_dir(ocifs_bin):
    for d in (os.environ.get("BUILD"), os.path.dirname(os.path.abspath(ocifs_bin)),
              os.path.join(REPO_ROOT, "build")):
        if d and os.path.isdir(os.path.join(d, "meson-private")):
            return d
    return None


@pytest.fixture(scope="module")
def installed(ocifs_bin, tmp_path_factory):
    """``meson install --destdir`` of the build into a temporary directory:
    {"bin": path of the installed ocifs, "man": of the installed ocifs.1}."""
    need("meson")
    build = _build_dir(ocifs_bin)
    if not build:
        pytest.skip("no meson build directory for %s" % ocifs_bin)
    dest = tmp_path_factory.mktemp("destdir")
    run(["meson", "install", "-C", build, "--no-rebuild", "--destdir", str(dest)],
        timeout=300)
    found = {}
    for dirpath, _, files in os.walk(str(dest)):
        for f in files:
            p = os.path.join(dirpath, f)
            if f == "ocifs" and os.path.basename(dirpath) == "bin":
                found["bin"] = p
            elif f == "ocifs.1" and dirpath.endswith(os.path.join("man", "man1")):
                found["man"] = p
    assert "bin" in found, "meson install installed no bin/ocifs under %s" % dest
    return found


def test_meson_install_installs_binary_and_man_page(installed):
    assert os.access(installed["bin"], os.X_OK)
    assert read(installed["man"]) == read(MAN_PAGE)
    assert run([installed["bin"], "--version"]).stdout.startswith(b"ocifs ")


def test_mount_fuse3_helper(installed, registry, content, tmp_path):
    """What `mount -t fuse.ocifs SRC MNT -o OPTS` runs: mount.fuse3, which
    starts the `ocifs` found on PATH as `ocifs SRC MNT -o OPTS`."""
    helper = need("mount.fuse3")
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    env = dict(os.environ, PATH=os.path.dirname(installed["bin"]) + ":" + SAFE_PATH)
    try:
        run([helper, registry.host, str(mnt), "-t", "ocifs",
             "-o", "cache=%s,tag_ttl=5" % cache], env=env, timeout=30)
        assert is_mounted(str(mnt))
        assert pids_running(installed["bin"], str(mnt)), "no daemon from the installed ocifs"
        assert read(os.path.join(str(mnt), "demo", "hello", "1.0", "hello.txt")) == \
            b"Hello from ocifs!\n"
        assert os.path.isdir(os.path.join(str(cache), "blobs", "sha256"))
    finally:
        if is_mounted(str(mnt)):
            run(["umount", str(mnt)], check=False) if os.geteuid() == 0 else \
                fusermount_unmount(str(mnt))
        if is_mounted(str(mnt)):
            fusermount_unmount(str(mnt), lazy=True)
        assert wait_gone(installed["bin"], str(mnt)), "the daemon did not exit on umount"


def _unshare_ok():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


MOUNT_SCRIPT = r"""
set -eu
trap 'umount -l "$MNT" 2>/dev/null || true' EXIT
# mount(8) clears PATH before it runs helpers; mount.fuse3's /bin/sh then
# looks in the default PATH, where /usr/local/bin is: put ours there.
mount --bind "$BINDIR" /usr/local/bin
mount -t fuse.ocifs "$HOST" "$MNT" -o "cache=$CACHE"
grep " $MNT " /proc/self/mountinfo > "$OUT/mountinfo.t"
cat "$MNT/demo/hello/1.0/hello.txt" > "$OUT/hello.t"
umount "$MNT"
mount -T "$FSTAB" "$MNT"
grep " $MNT " /proc/self/mountinfo > "$OUT/mountinfo.fstab"
cat "$MNT/demo/hello/1.0/hello.txt" > "$OUT/hello.fstab"
umount "$MNT"
"""


def test_mount_t_fuse_ocifs_and_fstab(installed, registry, content, tmp_path):
    """`mount -t fuse.ocifs` and the fstab line of the man page, with the
    installed ocifs, in a private mount namespace (to put it on mount's
    default PATH without touching the system)."""
    need("mount.fuse3")
    if not _unshare_ok():
        pytest.skip("needs root and unshare -m")
    mnt, cache, out = tmp_path / "mnt", tmp_path / "cache", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text("# from man ocifs\n%s %s fuse.ocifs noauto,x-systemd.automount,"
                     "_netdev,allow_other,cache=%s 0 0\n" % (registry.host, mnt, cache))
    env = dict(os.environ, MNT=str(mnt), CACHE=str(cache), OUT=str(out), FSTAB=str(fstab),
               HOST=registry.host, BINDIR=os.path.dirname(installed["bin"]))
    try:
        run(["unshare", "-m", "--propagation", "private", "sh", "-c", MOUNT_SCRIPT],
            env=env, timeout=60)
    finally:
        assert wait_gone(installed["bin"], str(mnt)), "the daemon did not exit on umount"
    for how in ("t", "fstab"):
        assert read(str(out / ("hello." + how))) == b"Hello from ocifs!\n"
        fields = read(str(out / ("mountinfo." + how))).decode().split()
        sep = fields.index("-")
        assert fields[sep + 1] == "fuse.ocifs", fields
        assert "ro" in fields[5].split(","), fields
    assert "allow_other" in read(str(out / "mountinfo.fstab")).decode()
    assert os.path.isdir(str(cache / "blobs" / "sha256"))


USER_SCRIPT = r"""
as_user "$TOP/ocifs" -o "cache=$TOP/cache" "$HOST" "$TOP/mnt"
grep " $TOP/mnt " /proc/self/mountinfo > "$TOP/mountinfo"
as_user cat "$TOP/mnt/demo/hello/1.0/hello.txt" > "$TOP/hello"
as_user fusermount3 -u "$TOP/mnt"
"""


def test_non_root_mount_with_fusermount3(ocifs_bin, registry, content):
    for tool in ("setpriv", "fusermount3", "mknod"):
        need(tool)
    if not _unshare_ok():
        pytest.skip("needs root and unshare -m (to act as another user)")
    top = tempfile.mkdtemp(prefix="ocifs-user-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        shutil.copy2(ocifs_bin, os.path.join(top, "ocifs"))
        for d in ("mnt", "cache"):
            os.mkdir(os.path.join(top, d))
            shutil.chown(os.path.join(top, d), "nobody", "nogroup")
        for f in ("mountinfo", "hello"):
            open(os.path.join(top, f), "w").close()
        env = dict(os.environ, TOP=top, HOST=registry.host)
        try:
            r = run_as_nobody(USER_SCRIPT, env)
        finally:
            wait_gone(os.path.join(top, "ocifs"), top)
        if r.returncode != 0 and b"mknod" in r.stderr:
            pytest.skip("cannot make a device node here: %s" % r.stderr.decode())
        assert r.returncode == 0, r.stderr.decode()
        info = read(os.path.join(top, "mountinfo")).decode()
        assert "fuse.ocifs" in info and "user_id=65534" in info, info
        assert read(os.path.join(top, "hello")) == b"Hello from ocifs!\n"
    finally:
        if is_mounted(os.path.join(top, "mnt")):
            fusermount_unmount(os.path.join(top, "mnt"), lazy=True)
        shutil.rmtree(top, ignore_errors=True)


# --- man page and README ---------------------------------------------------------

def test_man_page_groff_clean():
    need("groff")
    r = run(["groff", "-man", "-ww", "-z", MAN_PAGE])
    assert r.stdout == b"" and r.stderr == b"", r.stderr.decode()


def test_man_page_renders_with_man():
    need("man")
    env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0")
    r = run(["man", "--warnings", "-l", MAN_PAGE], env=env)
    assert b"OCIFS(1)" in r.stdout or b"OCIFS" in r.stdout
    assert r.stderr == b"", r.stderr.decode()


def test_man_page_documents_every_option(help_text):
    text = man_text()
    names = set(re.findall(r"-o (\w+)=", help_text)) | set(OPTIONS)
    for name in sorted(names):
        assert "%s=" % name in text, "man page lacks -o %s=" % name
    for long_opt in re.findall(r"(--[a-z][a-z-]+)", help_text):
        assert long_opt in text, "man page lacks %s" % long_opt


def test_man_page_documents_ecosystem_parts():
    text = man_text()
    for s in (STATS_KEYS + FILE_XATTRS + DIR_XATTRS + [
            "/.ocifs/stats", "oci-layout", "index.json", "blobs/sha256",
            "extract/sha256", "REGISTRY", "REFERENCE", "fuse.ocifs",
            "x-systemd.automount", "_netdev", "XDG_CACHE_HOME", "HOME",
            "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO",
            "ENOENT", "EACCES", "EIO", "EAGAIN", "EROFS", "entrypoint",
            "layerN.d/", "title.d/", ".bin.os-arch", "0.0.1-linux-amd64", "skopeo"]):
        assert s in text, "man page does not mention %r" % s


def test_readme_documents_every_option(help_text):
    text = read(README).decode()
    for name in sorted(set(re.findall(r"-o (\w+)=", help_text)) | set(OPTIONS)):
        assert "%s=" % name in text, "README lacks -o %s=" % name
    # The two-command quick start stays.
    assert "./demo.sh\n    meson test -C build --print-errorlogs" in text


# --- /.ocifs/stats ------------------------------------------------------------------

def test_stats_file(mount_factory, registry):
    m = mount_factory(args=[registry.host])
    f = os.path.join(m.path, ".ocifs", "stats")
    st = os.stat(f)
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert stat.S_IMODE(st.st_mode) == 0o444
    doc = json.loads(run(["cat", f]).stdout)             # cat sees the content
    assert list(doc) == STATS_KEYS
    assert isinstance(doc["hosts"], dict) and doc["in_flight"] == []
    assert ".ocifs" not in os.listdir(m.path)


def test_stats_cold_then_warm(mount_factory, registry, content):
    p = content["demo/hello:1.0"]
    hello = next(l for l in p.layers if l.title == "hello.txt")
    m = mount_factory(args=[registry.host])
    d = os.path.join(m.path, "demo", "hello", "1.0")
    f = os.path.join(d, "hello.txt")
    os.listdir(d)                                     # the manifest, no blob
    s0 = stats(m.path)
    assert s0["manifest_requests"] >= 1 and s0["blob_requests"] == 0
    assert s0["bytes_fetched"] == 0
    mark = registry.mark()
    assert read(f) == hello.data                      # cold
    s1 = stats(m.path)
    assert s1["blob_requests"] == s0["blob_requests"] + 1
    assert s1["cache_misses"] == s0["cache_misses"] + 1
    assert s1["cache_hits"] == s0["cache_hits"]
    assert s1["bytes_fetched"] == s0["bytes_fetched"] + hello.size
    assert s1["downloads"] == s0["downloads"] + 1
    assert s1["downloads_failed"] == s0["downloads_failed"] == 0
    assert s1["download_seconds"] >= s0["download_seconds"]
    assert s1["requests"] == s0["requests"] + 1
    assert s1["hosts"][registry.host]["requests"] == s1["requests"]
    assert s1["in_flight"] == []
    assert registry.count("GET", "/v2/demo/hello/blobs/.*", since=mark) == 1

    assert read(f) == hello.data                      # warm, same mount
    s2 = stats(m.path)
    assert s2["cache_hits"] == s1["cache_hits"] + 1
    assert (s2["blob_requests"], s2["bytes_fetched"]) == (s1["blob_requests"],
                                                          s1["bytes_fetched"])

    m.remount()                                       # same cache, fresh counters
    os.listdir(d)
    t0 = stats(m.path)
    mark = registry.mark()
    assert read(f) == hello.data
    t1 = stats(m.path)
    assert t1["cache_hits"] == t0["cache_hits"] + 1
    assert t1["cache_misses"] == t0["cache_misses"]
    assert t1["blob_requests"] == t0["blob_requests"] == 0
    assert t1["bytes_fetched"] == 0 and t1["downloads"] == 0
    assert registry.count("GET", "/v2/.*/blobs/.*", since=mark) == 0


def test_stats_bytes_saved_by_platform(mount_factory, registry, content):
    p = content["plat"]
    amd, arm = p.layers[0], p.layers[1]
    m = mount_factory(opts=["platform=linux/amd64"], args=[registry.host])
    d = os.path.join(m.path, "plat", "tool", "1")
    mark = registry.mark()
    assert sorted(os.listdir(d)) == ["README.md", "config.json", "manifest.json", "tool"]
    assert read(os.path.join(d, "tool")) == amd.data
    s = stats(m.path)
    assert s["bytes_saved_by_platform"] == arm.size
    assert s["bytes_fetched"] == amd.size
    assert registry.count("GET", "/v2/plat/tool/blobs/%s" % arm.digest, since=mark) == 0


# --- -d request log --------------------------------------------------------------------

@pytest.mark.parametrize("flag", [["-d"], ["-o", "debug"]])
def test_debug_logs_requests(mount_factory, registry, content, flag):
    m = mount_factory(args=flag + [registry.host])
    d = os.path.join(m.path, "demo", "hello", "1.0")
    assert read(os.path.join(d, "hello.txt")) == b"Hello from ocifs!\n"
    log = m.log_text()
    base = re.escape("http://%s/v2/demo/hello/" % registry.host)
    assert re.search(r"GET %smanifests/1\.0 -> 200 \(\d+\.\d{3} s\)" % base, log), log[-3000:]
    assert re.search(r"GET %sblobs/sha256:[0-9a-f]{64} -> 200 \(\d+\.\d{3} s\)" % base, log)
    os_err = os.path.exists(os.path.join(m.path, "demo", "hello", "nope"))
    assert not os_err
    assert re.search(r"%smanifests/nope -> 404 " % base, m.log_text())


# --- extended attributes -----------------------------------------------------------------

def test_xattrs_of_a_layer_file(mount_factory, registry, content):
    p = content["annotated"]
    layer = p.layers[0]
    m = mount_factory(args=[registry.host])
    d = os.path.join(m.path, "cli", "annotated", "1.0")
    f = os.path.join(d, "tool.txt")
    attrs = getfattr(f)
    assert sorted(attrs) == sorted(FILE_XATTRS)
    assert attrs["user.oci.digest"] == layer.digest.encode()
    assert attrs["user.oci.mediaType"] == b"application/vnd.example.tool.v1"
    assert attrs["user.oci.size"] == str(layer.size).encode()
    assert json.loads(attrs["user.oci.annotations"]) == p.layer_annotations
    assert attrs == {n: os.getxattr(f, n) for n in FILE_XATTRS}
    assert sorted(os.listxattr(f)) == sorted(FILE_XATTRS)
    # The same blob in the layout view, and the manifest and config files.
    lay = os.path.join(m.path, ".ocifs", "layout", registry.host, "cli", "annotated", "1.0")
    assert getfattr(os.path.join(lay, "blobs", "sha256", layer.hex)) == attrs
    mf = getfattr(os.path.join(d, "manifest.json"))
    assert mf["user.oci.digest"] == p.digest.encode()
    assert mf["user.oci.mediaType"] == OCI_MANIFEST.encode()
    assert mf["user.oci.size"] == str(len(p.manifest)).encode()
    cf = getfattr(os.path.join(d, "config.json"))
    assert cf["user.oci.digest"] == p.config.digest.encode()
    assert cf["user.oci.mediaType"] == p.config.media_type.encode()
    # Reading the attributes fetched no blob.
    assert stats(m.path)["blob_requests"] == 0


def test_xattrs_of_an_artifact_dir(mount_factory, registry, content):
    p = content["annotated"]
    m = mount_factory(args=[registry.host])
    d = os.path.join(m.path, "cli", "annotated", "1.0")
    attrs = getfattr(d)
    assert sorted(attrs) == sorted(DIR_XATTRS)
    assert attrs["user.oci.digest"] == p.digest.encode()
    assert attrs["user.oci.mediaType"] == OCI_MANIFEST.encode()
    assert attrs["user.oci.artifactType"] == b"application/vnd.example.tool.artifact.v1"
    assert json.loads(attrs["user.oci.annotations"]) == p.annotations
    assert attrs["user.oci.reference"] == ("%s/cli/annotated@%s" % (
        registry.host, p.digest)).encode()
    # The pinned directory says the same.
    assert getfattr(os.path.join(m.path, "cli", "annotated", p.digest)) == attrs
    # Not an artifact: nothing; and attributes cannot be set.
    assert getfattr(os.path.join(m.path, "cli")) == {}
    with pytest.raises(OSError) as e:
        os.setxattr(os.path.join(d, "tool.txt"), "user.test", b"x")
    assert e.value.errno in (30, 95), e.value      # EROFS (or EOPNOTSUPP)


def test_xattrs_of_an_index_dir(mount_factory, registry, content):
    idx = content["multi"]
    m = mount_factory(args=[registry.host])
    attrs = getfattr(os.path.join(m.path, "img", "multi", "1"))
    assert attrs["user.oci.digest"] == idx.digest.encode()
    assert attrs["user.oci.mediaType"] == OCI_INDEX.encode()
    assert attrs["user.oci.reference"] == ("%s/img/multi@%s" % (
        registry.host, idx.digest)).encode()


def test_xattrs_in_a_reference_mount(mount_factory, registry, content):
    p = content["annotated"]
    m = mount_factory(args=[registry.host + "/cli/annotated:1.0"])
    assert getfattr(m.path)["user.oci.digest"] == p.digest.encode()
    assert getfattr(os.path.join(m.path, "tool.txt"))["user.oci.digest"] == \
        p.layers[0].digest.encode()


# --- the OCI image layout view: skopeo ------------------------------------------------

def skopeo_copy(layout, dest, *extra):
    """skopeo copy oci:. from inside @layout (its path has host:port in it,
    and skopeo splits oci:PATH:REF at ':')."""
    need("skopeo")
    return run(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", layout,
                "skopeo", "--insecure-policy", "copy", "-q"] + list(extra) +
               ["oci:.", "dir:" + dest], timeout=120)


def layout_of(m, host, repo, ref):
    return os.path.join(m.path, ".ocifs", "layout", host, repo, ref)


def assert_dir_copy(dest, p):
    """skopeo's dir: copy of ``p``: the same manifest bytes, every blob."""
    assert sha256_file(os.path.join(dest, "manifest.json")) == p.hex
    assert read(os.path.join(dest, "manifest.json")) == p.manifest
    for b in [p.config] + p.layers:
        assert sha256_file(os.path.join(dest, b.hex)) == b.hex


def test_oci_layout_files(mount_factory, registry, content):
    p = content["image"]
    m = mount_factory(args=[registry.host + "/img/app:1.0"])
    lay = layout_of(m, registry.host, "img/app", "1.0")
    assert json.loads(read(os.path.join(lay, "oci-layout"))) == \
        {"imageLayoutVersion": "1.0.0"}
    layout = json.loads(read(os.path.join(lay, "index.json")))
    assert layout["schemaVersion"] == 2
    assert layout["manifests"] == [{"mediaType": OCI_MANIFEST, "digest": p.digest,
                                    "size": len(p.manifest)}]
    assert set(os.listdir(os.path.join(lay, "blobs", "sha256"))) == \
        {p.hex, p.config.hex, p.layers[0].hex}
    assert sorted(os.listdir(lay)) == ["blobs", "index.json", "oci-layout"]


def test_skopeo_copy_from_reference_mount(mount_factory, registry, content, tmp_path):
    p = content["image"]
    m = mount_factory(args=[registry.host + "/img/app:1.0"])
    mark = registry.mark()
    skopeo_copy(layout_of(m, registry.host, "img/app", "1.0"), str(tmp_path / "copy"))
    assert_dir_copy(str(tmp_path / "copy"), p)
    # Lazily, and each blob once.
    for b in [p.config] + p.layers:
        assert registry.count("GET", "/v2/img/app/blobs/%s" % b.digest, since=mark) == 1


@pytest.mark.parametrize("key,repo,tag", [("demo/hello:1.0", "demo/hello", "1.0"),
                                          ("demo/docker-style:latest",
                                           "demo/docker-style", "latest")])
def test_skopeo_copy_through_symlink(mount_factory, registry, content, tmp_path,
                                     key, repo, tag):
    """skopeo's oci: splits PATH:REF at ':', and the layout view has
    127.0.0.1:PORT in its paths: a symlink without ':' reaches it."""
    p = content[key]
    m = mount_factory(opts=["registry=" + registry.host])
    link = tmp_path / "artifact"
    os.symlink(layout_of(m, registry.host, repo, tag), str(link))
    need("skopeo")
    run(["skopeo", "--insecure-policy", "copy", "-q", "oci:" + str(link),
         "dir:" + str(tmp_path / "copy")], timeout=120)
    assert_dir_copy(str(tmp_path / "copy"), p)


def test_skopeo_copy_index_picks_platform(mount_factory, registry, content, tmp_path):
    idx = content["multi"]
    m = mount_factory(opts=["platform=linux/arm64"], args=[registry.host + "/img/multi:1"])
    skopeo_copy(layout_of(m, registry.host, "img/multi", "1"), str(tmp_path / "copy"),
                "--override-os", "linux", "--override-arch", "arm64")
    assert_dir_copy(str(tmp_path / "copy"), idx.manifests[1])
