"""Integration tests: the artifact directory is what ``oras pull`` gives (issue 13).

    /<registry>/<repo>/<tag>/   titled layers under their titles, an oras directory
                                layer (``io.deis.oras.content.unpack: "true"``) as the
                                directory it was pushed from, untitled layers as
                                ``layer<N>``, this platform's binary at the top,
                                ``manifest.json`` and ``config.json``

Every layer or entry left out of the view (another platform's layer, a title that
escapes or spoofs, a clash) gets one log line naming the artifact, the layer and
why.  The real registry, real mounts, real ls/cat/exec.
"""

import io
import os
import stat
import tarfile

from fixtures import push
from fixtures.push import Client, push_artifact

TITLE = push.TITLE
UNPACK = "io.deis.oras.content.unpack"
ELF_PATH = "/usr/bin/sha256sum"
OTHERS = [("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64")]
ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def this_arch():
    return ARCHES.get(os.uname().machine, os.uname().machine)


def oras_dir_layer(title, files):
    return (title, push.oras_dir_tgz(title, files), push.OCI_LAYER_TAR_GZIP,
            {"annotations": {UNPACK: "true"}})


def one_file_tar(name, data):
    """A plain tar holding one file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def log_lines(m, *words):
    return [ln for ln in m.log_text().splitlines() if all(w in ln for w in words)]


def test_oras_directory_is_a_directory(registry, mount_factory):
    """oras pull gives ``assets/…`` for a directory pushed as ``assets``: so does
    the mount, with no raw archive file and no ``assets.d`` beside it."""
    files = {"schemas/provider.schema.json": b'{"type":"object"}\n', "icon.bin": b"\x00icon"}
    p = push_artifact(Client(registry.host), "view/oras", ["v1"],
                      files=[oras_dir_layer("assets", files),
                             ("thin.provider.yaml", b"kind: Provider\n", "text/yaml")])
    m = mount_factory(opts=["registry=" + registry.host])
    d = os.path.join(m.path, registry.host, "view/oras/v1")
    assert set(os.listdir(d)) - {"oci-layout", "index.json", "blobs"} == \
        {"assets", "thin.provider.yaml", "manifest.json", "config.json"}
    assert stat.S_ISDIR(os.stat(os.path.join(d, "assets")).st_mode)
    assert sorted(os.listdir(os.path.join(d, "assets"))) == ["icon.bin", "schemas"]
    assert read(os.path.join(d, "assets/schemas/provider.schema.json")) == \
        files["schemas/provider.schema.json"]
    assert read(os.path.join(d, "assets/icon.bin")) == files["icon.bin"]
    assert os.getxattr(os.path.join(d, "assets"), "user.oci.digest").decode() == \
        p.layers[0].digest


def test_untitled_layers_are_layer_n(registry, mount_factory):
    """oras pull skips layers without a title; the mount keeps them reachable as
    ``layer<N>`` (N: the layer's index), archives also as ``layer<N>.d/``."""
    tar = one_file_tar("inside.txt", b"in\n")
    p = push_artifact(Client(registry.host), "view/untitled", ["v1"],
                      files=[("a.txt", b"titled\n", "text/plain"),
                             (None, b"untitled data\n", "application/octet-stream"),
                             (None, tar, push.OCI_LAYER_TAR)])
    m = mount_factory(opts=["registry=" + registry.host])
    d = os.path.join(m.path, registry.host, "view/untitled/v1")
    names = os.listdir(d)
    assert {"a.txt", "layer1", "layer2", "layer2.d"} <= set(names), names
    assert "layer0" not in names
    assert read(os.path.join(d, "layer1")) == p.layers[1].data
    assert read(os.path.join(d, "layer2")) == p.layers[2].data
    assert read(os.path.join(d, "layer2.d", "inside.txt")) == b"in\n"


def test_refused_titles_are_logged(registry, mount_factory):
    """A title that escapes (``../evil.txt``) or spoofs another name in ``ls``
    (U+202E RIGHT-TO-LEFT OVERRIDE) never becomes a name; each gets one log line
    naming the artifact, the layer and why, and the layer stays reachable as
    ``layer<N>``."""
    spoof = "evil\u202etxt.exe"            # shows as "evilexe.txt" in ls
    isolate = "a\u2066b"
    p = push_artifact(Client(registry.host), "view/evil", ["v1"],
                      files=[("../evil.txt", b"escape\n", "text/plain"),
                             (spoof, b"spoof\n", "text/plain"),
                             (isolate, b"isolate\n", "text/plain"),
                             ("ok.txt", b"fine\n", "text/plain")])
    m = mount_factory(opts=["registry=" + registry.host])
    d = os.path.join(m.path, registry.host, "view/evil/v1")
    names = os.listdir(d)
    assert "ok.txt" in names and {"layer0", "layer1", "layer2"} <= set(names), names
    assert not [n for n in names if "\u202e" in n or "\u2066" in n or ".." in n], names
    assert read(os.path.join(d, "layer0")) == b"escape\n"
    assert read(os.path.join(d, "layer1")) == b"spoof\n"
    assert not os.path.exists(os.path.join(m.path, registry.host, "view/evil/evil.txt"))
    ref = "%s/view/evil" % registry.host        # :v1 or @digest
    for i, layer in enumerate(p.layers[:3]):
        lines = log_lines(m, ref, "layer " + layer.digest, "refused", "layer%d" % i)
        assert len(lines) == 1, m.log_text()
    assert log_lines(m, '"../evil.txt"')
    # the log shows the override escaped, never the raw character
    assert "\u202e" not in m.log_text() and log_lines(m, "evil\\xe2\\x80\\xaetxt.exe")


def test_other_platform_layers_are_logged(registry, mount_factory):
    """Each layer left out for being another platform's: one log line."""
    me = ("linux", this_arch())
    files = [("bin/%s/%s/entrypoint" % pl, b"bin-%s-%s" % (pl[0].encode(), pl[1].encode()),
              "application/vnd.sourceplane.bin.%s-%s" % pl) for pl in [me] + OTHERS]
    p = push_artifact(Client(registry.host), "view/plat", ["v1"], files=files)
    m = mount_factory(opts=["registry=" + registry.host])
    d = os.path.join(m.path, registry.host, "view/plat/v1")
    assert read(os.path.join(d, "entrypoint")) == files[0][1]
    ref = "%s/view/plat" % registry.host
    for layer in p.layers[1:]:
        lines = log_lines(m, ref, "layer " + layer.digest, "another platform")
        assert len(lines) == 1, m.log_text()
    assert not log_lines(m, p.layers[0].digest)


def test_titled_program_no_phantom_entrypoint(registry, mount_factory):
    """Issue 12: an artifact with a titled ``bin/tool`` and a tar layer listed
    ``entrypoint`` (the legacy fallback) that was then ENOENT.  A program the
    artifact names itself means no fallback is guessed: every listed name stats."""
    tar = one_file_tar("share/doc.txt", b"doc\n")
    push_artifact(Client(registry.host), "view/tool", ["v1"],
                  files=[("bin/tool", b"#!/bin/sh\necho tool\n", "application/octet-stream"),
                         ("data.tar", tar, push.OCI_LAYER_TAR)])
    m = mount_factory(opts=["registry=" + registry.host])
    d = os.path.join(m.path, registry.host, "view/tool/v1")
    names = os.listdir(d)
    assert "entrypoint" not in names, names
    for n in names:
        os.stat(os.path.join(d, n))      # nothing listed is ENOENT
    assert read(os.path.join(d, "data.tar.d", "share", "doc.txt")) == b"doc\n"


def test_seed000_legacy_oras_directories(registry, mount_factory):
    """Seed 000's legacy artifact as oras pushes it: ``bin`` an oras directory
    holding every platform's ``bin/<os>/<arch>/entrypoint``.  ``bin/`` is that
    directory, and ``entrypoint`` (the legacy fallback) runs this platform's."""
    with open(ELF_PATH, "rb") as f:
        elf = f.read()
    bins = {"%s/%s/entrypoint" % pl: b"other %s/%s\n" % (pl[0].encode(), pl[1].encode())
            for pl in OTHERS}
    bins["linux/%s/entrypoint" % this_arch()] = elf
    push_artifact(Client(registry.host), "view/legacy", ["v1"],
                  files=[("thin.provider.yaml", b"kind: Provider\n", "application/vnd.oras.v1"),
                         oras_dir_layer("assets", {"a.json": b"{}\n"}),
                         oras_dir_layer("bin", bins)])
    m = mount_factory(opts=["registry=" + registry.host])
    d = os.path.join(m.path, registry.host, "view/legacy/v1")
    assert {"bin", "assets", "entrypoint", "thin.provider.yaml"} <= set(os.listdir(d))
    assert read(os.path.join(d, "bin/linux", this_arch(), "entrypoint")) == elf
    ep = os.path.join(d, "entrypoint")
    assert stat.S_IMODE(os.stat(ep).st_mode) == 0o555
    assert read(ep) == elf


# --- /.ocifs/stats after each kind of access (issue 13, point 8) ---------------

def stats(m):
    import json
    with open(os.path.join(m.path, ".ocifs", "stats")) as f:
        return json.load(f)


def delta(before, after, *keys):
    return {k: after[k] - before[k] for k in keys}


COUNTERS = ("manifest_requests", "blob_requests", "cache_hits", "cache_misses", "downloads",
            "bytes_fetched", "bytes_served_from_cache")


def test_stats_after_each_access(registry, mount_factory):
    """ls -l costs a manifest and no blob; a cold cat is one miss, one download;
    a warm cat one hit; the first read through a layer's ``.d/`` is one miss and
    one download (it was 0 misses and 1 download), the open after it a hit."""
    tar = one_file_tar("x.txt", b"xxxx\n")
    p = push_artifact(Client(registry.host), "view/stats", ["v1"],
                      files=[("a.txt", b"a" * 1000, "text/plain"),
                             ("t.tar", tar, push.OCI_LAYER_TAR)])
    m = mount_factory(opts=["registry=" + registry.host])
    d = os.path.join(m.path, registry.host, "view/stats/v1")
    s0 = stats(m)
    assert s0["downloads"] == s0["cache_misses"] == s0["cache_hits"] == 0

    os.listdir(d)
    [os.stat(os.path.join(d, n)) for n in os.listdir(d)]
    s1 = stats(m)
    got = delta(s0, s1, *COUNTERS)
    assert got["blob_requests"] == got["downloads"] == got["cache_misses"] == 0, got
    assert got["manifest_requests"] >= 1, got

    assert read(os.path.join(d, "a.txt")) == b"a" * 1000
    s2 = stats(m)
    got = delta(s1, s2, *COUNTERS)
    assert got == {"manifest_requests": 0, "blob_requests": 1, "cache_hits": 0,
                   "cache_misses": 1, "downloads": 1, "bytes_fetched": 1000,
                   "bytes_served_from_cache": 1000}, got

    assert read(os.path.join(d, "a.txt")) == b"a" * 1000
    s3 = stats(m)
    got = delta(s2, s3, *COUNTERS)
    assert got["cache_hits"] == 1 and got["downloads"] == got["cache_misses"] == 0, got
    assert got["blob_requests"] == 0, got

    assert read(os.path.join(d, "t.tar.d", "x.txt")) == b"xxxx\n"
    s4 = stats(m)
    got = delta(s3, s4, *COUNTERS)
    assert got["downloads"] == got["cache_misses"] == got["blob_requests"] == 1, got
    assert got["bytes_fetched"] == len(p.layers[1].data), got
    assert got["cache_hits"] == 1, got          # the open of x.txt, from the cache

    assert read(os.path.join(d, "t.tar.d", "x.txt")) == b"xxxx\n"
    s5 = stats(m)
    got = delta(s4, s5, *COUNTERS)
    assert got["downloads"] == got["cache_misses"] == 0 and got["cache_hits"] == 1, got
    assert s5["downloads"] == s5["cache_misses"]


def test_stats_bytes_saved_from_an_index(registry, mount_factory, tmp_path):
    """A platform chosen from an index: the other platforms' manifests, configs
    and layers count as saved once their manifests are known to the mount
    without a request (in the cache); until then they are counted in
    ``platform_manifests_unread``, never fetched just to be counted."""
    c = Client(registry.host)
    me = push.platform("linux", this_arch())
    other = push.platform("linux", "s390x" if this_arch() != "s390x" else "ppc64le")
    mine = push_artifact(c, "view/idx", [], files=[("tool", b"mine" * 100, "application/x-bin")])
    theirs = push_artifact(c, "view/idx", [], files=[("tool", b"theirs" * 5000,
                                                         "application/x-bin")])
    push.push_index(c, "view/idx", ["v1"], [(mine, me), (theirs, other)])
    cache = tmp_path / "shared-cache"
    m = mount_factory(opts=["registry=" + registry.host], cache=cache)
    d = os.path.join(m.path, registry.host, "view/idx/v1")
    assert read(os.path.join(d, "tool")) == b"mine" * 100
    s = stats(m)
    assert s["platform_manifests_unread"] == 1, s
    assert s["bytes_saved_by_platform"] == 0, s
    # the other platform's manifest read (by digest), then a fresh mount on
    # the same cache knows what choosing this platform saved
    other_manifest = os.path.join(m.path, registry.host, "view/idx", theirs.digest,
                                  "manifest.json")
    assert read(other_manifest) == theirs.manifest
    m.unmount()
    m2 = mount_factory(opts=["registry=" + registry.host], cache=cache)
    read(os.path.join(m2.path, registry.host, "view/idx/v1", "tool"))
    s = stats(m2)
    want = len(theirs.manifest) + len(theirs.config.data) + len(theirs.layers[0].data)
    assert s["bytes_saved_by_platform"] == want, s
    assert s["platform_manifests_unread"] == 0, s


def test_reference_xattrs_offline(mount_factory):
    """A reference mount whose registry cannot be reached still answers what
    is local: user.oci.reference (as normalized) and, for a digest, user.oci.digest;
    listxattr lists them. Nothing else is made up."""
    from fixtures.registry import closed_port
    host = "127.0.0.1:%d" % closed_port()
    digest = "sha256:" + "ab" * 32
    for ref, want, dig in (("%s/team/a/b:1.0" % host, "%s/team/a/b:1.0" % host, None),
                           ("%s/team/a@%s" % (host, digest), "%s/team/a@%s" % (host, digest),
                            digest)):
        m = mount_factory(args=[ref], opts=["timeout=1"])
        assert os.getxattr(m.path, "user.oci.reference").decode() == want
        names = os.listxattr(m.path)
        assert "user.oci.reference" in names, names
        if dig:
            assert os.getxattr(m.path, "user.oci.digest").decode() == dig
        else:
            try:
                os.getxattr(m.path, "user.oci.digest")
                assert False, "a digest made up offline"
            except OSError as e:
                assert e.errno != 0
        try:
            os.getxattr(m.path, "user.oci.mediaType")
            assert False, "a media type made up offline"
        except OSError:
            pass
        m.unmount()


def test_oras_directory_without_its_prefix(registry, mount_factory):
    """An oras directory layer whose entries are not under <title>/ (oras pull
    refuses it): nothing of it is shown, and a log line says why."""
    p = push_artifact(Client(registry.host), "view/orasbad", ["v1"],
                      files=[("assets", push.oras_dir_tgz("other", {"x": b"x\n"}),
                              push.OCI_LAYER_TAR_GZIP, {"annotations": {UNPACK: "true"}})])
    m = mount_factory(opts=["registry=" + registry.host])
    d = os.path.join(m.path, registry.host, "view/orasbad/v1")
    try:
        os.listdir(os.path.join(d, "assets"))
        assert False, "listed"
    except FileNotFoundError:
        pass
    assert log_lines(m, "view/orasbad", "layer " + p.layers[0].digest, '"assets/"'), \
        m.log_text()
