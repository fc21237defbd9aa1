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
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        ti = tarfile.TarInfo("inside.txt")
        ti.size = 3
        t.addfile(ti, io.BytesIO(b"in\n"))
    p = push_artifact(Client(registry.host), "view/untitled", ["v1"],
                      files=[("a.txt", b"titled\n", "text/plain"),
                             (None, b"untitled data\n", "application/octet-stream"),
                             (None, tar.getvalue(), push.OCI_LAYER_TAR)])
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
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        ti = tarfile.TarInfo("share/doc.txt")
        ti.size = 4
        t.addfile(ti, io.BytesIO(b"doc\n"))
    push_artifact(Client(registry.host), "view/tool", ["v1"],
                  files=[("bin/tool", b"#!/bin/sh\necho tool\n", "application/octet-stream"),
                         ("data.tar", tar.getvalue(), push.OCI_LAYER_TAR)])
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
