"""Integration tests: cosign signatures and referrers (issue 15), over a real registry.

The contract:

    ocifs -o verify=cosign:KEY.pub[,verify=cosign:OTHER.pub] ... MNT

  * an artifact is shown only when one of its cosign signatures verifies with one
    of the keys: a simple-signing payload layer whose annotation
    dev.cosignproject.cosign/signature signs the payload, which claims the digest
    the reference resolved to and names its repository;
  * signatures are found under cosign's sha256-<hex>.sig tag and as OCI 1.1
    referrers (the referrers API, else the sha256-<hex> tag-schema index);
  * anything else is EACCES with one log line naming the reference, what was
    found and why it failed, and nothing of the artifact is fetched beyond its
    manifest and signature;
  * a cosign payload costs no request (ocifs predicts cosign's bytes and checks
    them against the layer digest): a signed artifact costs one extra request;
  * verdicts are kept per manifest digest: a verified artifact keeps working
    while the registry is down;
  * /.ocifs/referrers/<registry>/<repo>/<ref>/ lists the referrers, and the
    artifact directory's user.oci.referrers xattr names them.

The signatures are made by fixtures/cosign.py in exactly cosign's format.
"""

import errno
import json
import os
import re
import time
import uuid

import pytest

from fixtures import cosign
from fixtures.cosign import Key, Signature, identity, sign_referrer, sign_tag, sig_tag
from fixtures.faultproxy import FaultProxy
from fixtures.push import (EMPTY_JSON, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, Client, descriptor,
                           platform, push_artifact, push_index, sha256_digest)
from fixtures.registry import wait_for

ELF_PATH = "/usr/bin/sha256sum"


def read(path):
    with open(path, "rb") as f:
        return f.read()


def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return None


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for kind in ("ecdsa", "rsa", "ed25519"):
        k = Key.generate(kind)
        k.path = k.write_pub(d / ("%s.pub" % kind))
        out[kind] = k
    other = Key.generate("ecdsa")
    other.path = other.write_pub(d / "other.pub")
    out["other"] = other
    return out


def provider(client, repo, tag="1.0"):
    """A seed-000 provider: one manifest, a binary layer per platform."""
    elf = read(ELF_PATH)
    files = []
    for os_name, arch in [("linux", "amd64"), ("linux", "arm64"), ("darwin", "arm64")]:
        data = elf if (os_name, arch) == ("linux", "amd64") else os.urandom(2048)
        files.append(("bin/%s-%s/provider" % (os_name, arch), data,
                      "application/vnd.sourceplane.bin.%s-%s" % (os_name, arch)))
    return push_artifact(client, repo, [tag], files,
                         artifact_type="application/vnd.sourceplane.provider.v1")


def new_repo(prefix="sig"):
    return "%s/%s" % (prefix, uuid.uuid4().hex[:10])


def vmount(mount_factory, registry, *keys_, opts=(), **kw):
    o = ["registry=" + registry.host, "platform=linux/amd64"]
    o += ["verify=cosign:" + k.path for k in keys_]
    return mount_factory(opts=o + list(opts), **kw)


def art(m, registry, repo, ref="1.0"):
    return os.path.join(m.path, registry.host, repo, ref)


def artifact_gets(registry, pushed, since):
    """GETs of the artifact's own blobs (config and layers)."""
    n = 0
    for b in pushed.blobs():
        n += registry.count("GET", "/v2/%s/blobs/%s" % (re.escape(pushed.repo),
                                                         re.escape(b.digest)), since=since)
    return n


def refused_line(m, ref):
    lines = [ln for ln in m.log_text().splitlines() if ref in ln and "verify=cosign" in ln]
    assert len(lines) == 1, m.log_text()
    return lines[0]


def assert_refused(m, registry, pushed, since, why, ref=None):
    d = art(m, registry, pushed.repo)
    assert errno_of(os.listdir, d) == errno.EACCES
    assert errno_of(read, os.path.join(d, "provider")) == errno.EACCES
    assert artifact_gets(registry, pushed, since) == 0
    line = refused_line(m, ref or "%s/%s:1.0" % (registry.host, pushed.repo))
    assert why in line, line
    return line


# --- verification -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ecdsa", "rsa", "ed25519"])
def test_signed_artifact_is_served(registry, client, mount_factory, keys, kind):
    repo = new_repo()
    p = provider(client, repo)
    sign_tag(client, repo, p.digest, [Signature.make(keys[kind], identity(registry.host, repo),
                                                     p.digest)])
    m = vmount(mount_factory, registry, keys[kind])
    t0 = registry.mark()
    assert read(os.path.join(art(m, registry, repo), "provider")) == read(ELF_PATH)
    # one extra request: the .sig manifest; cosign's payload is predicted
    assert registry.count("GET", "/v2/%s/manifests/%s" % (repo, sig_tag(p.digest)), t0) == 1
    assert registry.count("GET", "/v2/%s/blobs/.*" % repo, t0) == 1   # the binary only
    assert registry.count("GET", "/v2/%s/referrers/.*" % repo, t0) == 0


def test_without_verify_no_signature_requests(registry, client, mount_factory):
    repo = new_repo()
    p = provider(client, repo)
    m = mount_factory(opts=["registry=" + registry.host, "platform=linux/amd64"])
    t0 = registry.mark()
    assert read(os.path.join(art(m, registry, repo), "provider")) == read(ELF_PATH)
    assert registry.count("GET", "/v2/%s/manifests/sha256-.*" % repo, t0) == 0
    assert p.digest


def test_other_key_refused(registry, client, mount_factory, keys):
    repo = new_repo()
    p = provider(client, repo)
    sign_tag(client, repo, p.digest, [Signature.make(keys["other"],
                                                     identity(registry.host, repo), p.digest)])
    m = vmount(mount_factory, registry, keys["ecdsa"])
    t0 = registry.mark()
    line = assert_refused(m, registry, p, t0, "not signed by the key")
    assert sig_tag(p.digest) in line


def test_any_of_several_keys(registry, client, mount_factory, keys):
    repo = new_repo()
    p = provider(client, repo)
    sign_tag(client, repo, p.digest, [Signature.make(keys["rsa"], identity(registry.host, repo),
                                                     p.digest)])
    m = vmount(mount_factory, registry, keys["ecdsa"], keys["rsa"])
    assert read(os.path.join(art(m, registry, repo), "provider")) == read(ELF_PATH)


def test_tampered_payload_refused(registry, client, mount_factory, keys):
    repo = new_repo()
    p = provider(client, repo)
    good = Signature.make(keys["ecdsa"], identity(registry.host, repo), p.digest,
                          optional={"creator": "ci"})
    bad = Signature(good.payload.replace(b'"ci"', b'"me"'), good.signature)
    sign_tag(client, repo, p.digest, [bad])
    m = vmount(mount_factory, registry, keys["ecdsa"])
    t0 = registry.mark()
    assert_refused(m, registry, p, t0, "not signed by the key")
    # the payload had to be fetched: it is not cosign's own
    assert registry.count("GET", "/v2/%s/blobs/.*" % repo, t0) == 1


def test_payload_for_another_digest_refused(registry, client, mount_factory, keys):
    repo = new_repo()
    p = provider(client, repo)
    q = provider(client, repo, tag="2.0")
    sign_tag(client, repo, p.digest, [Signature.make(keys["ecdsa"],
                                                     identity(registry.host, repo), q.digest)])
    m = vmount(mount_factory, registry, keys["ecdsa"])
    t0 = registry.mark()
    assert_refused(m, registry, p, t0, "payload is for " + q.digest)


def test_signature_of_another_repository_refused(registry, client, mount_factory, keys):
    a, b = new_repo(), new_repo()
    pa = provider(client, a)
    pb = provider(client, b)
    assert pa.digest != pb.digest or True
    # b's artifact, carrying a signature made for a (a copied .sig)
    sign_tag(client, b, pb.digest, [Signature.make(keys["ecdsa"], identity(registry.host, a),
                                                   pb.digest)])
    m = vmount(mount_factory, registry, keys["ecdsa"])
    t0 = registry.mark()
    assert_refused(m, registry, pb, t0, "another repository")


def test_missing_signature_refused(registry, client, mount_factory, keys):
    repo = new_repo()
    p = provider(client, repo)
    m = vmount(mount_factory, registry, keys["ecdsa"])
    t0 = registry.mark()
    line = assert_refused(m, registry, p, t0, "no signature")
    assert sig_tag(p.digest) in line
    # the .sig tag, the referrers API and its tag-schema fallback, once each
    assert registry.count("GET", "/v2/%s/manifests/%s" % (repo, sig_tag(p.digest)), t0) == 1
    assert registry.count("GET", "/v2/%s/referrers/%s" % (repo, p.digest), t0) == 1
    assert registry.count("GET", "/v2/%s/manifests/%s" % (
        repo, p.digest.replace(":", "-")), t0) == 1
    # the refusal is remembered: asking again costs nothing
    t1 = registry.mark()
    assert errno_of(os.listdir, art(m, registry, repo)) == errno.EACCES
    assert registry.count(None, "/v2/%s/.*" % repo, t1) == 0


def test_two_signatures_one_verifies(registry, client, mount_factory, keys):
    repo = new_repo()
    p = provider(client, repo)
    ident = identity(registry.host, repo)
    sign_tag(client, repo, p.digest, [Signature.make(keys["other"], ident, p.digest),
                                      Signature.make(keys["ecdsa"], ident, p.digest,
                                                     optional={"build": "42"})])
    m = vmount(mount_factory, registry, keys["ecdsa"])
    t0 = registry.mark()
    assert read(os.path.join(art(m, registry, repo), "provider")) == read(ELF_PATH)
    # the good one's payload is not cosign's default: fetched (1) + the binary (1)
    assert registry.count("GET", "/v2/%s/blobs/.*" % repo, t0) == 2


def two_platforms(client, repo):
    """An index tagged 1.0 over a linux/amd64 and a linux/arm64 manifest."""
    amd = push_artifact(client, repo, [], [("provider", read(ELF_PATH), None)])
    arm = push_artifact(client, repo, [], [("provider", os.urandom(512), None)])
    idx = push_index(client, repo, ["1.0"], [(amd, platform("linux", "amd64")),
                                             (arm, platform("linux", "arm64"))])
    return idx, amd


def test_index_signature_covers_its_platform_manifest(registry, client, mount_factory, keys):
    repo = new_repo()
    idx, _ = two_platforms(client, repo)
    sign_tag(client, repo, idx.digest, [Signature.make(keys["ecdsa"],
                                                       identity(registry.host, repo),
                                                       idx.digest)])
    m = vmount(mount_factory, registry, keys["ecdsa"])
    assert read(os.path.join(art(m, registry, repo), "provider")) == read(ELF_PATH)


def test_platform_manifest_signature_does_not_cover_the_index(registry, client,
                                                              mount_factory, keys):
    repo = new_repo()
    idx, amd = two_platforms(client, repo)
    sign_tag(client, repo, amd.digest, [Signature.make(keys["ecdsa"],
                                                       identity(registry.host, repo),
                                                       amd.digest)])
    m = vmount(mount_factory, registry, keys["ecdsa"])
    t0 = registry.mark()
    assert errno_of(os.listdir, art(m, registry, repo)) == errno.EACCES
    # nothing of the index's platform manifest was fetched for the refused index
    assert registry.count("GET", "/v2/%s/manifests/%s" % (repo, amd.digest), t0) == 0
    refused_line(m, "%s/%s:1.0" % (registry.host, repo))
    # the platform manifest by digest is signed
    assert read(os.path.join(art(m, registry, repo, amd.digest), "provider")) == read(ELF_PATH)
    assert idx.digest


def test_registry_down_keeps_verified_artifact(registry_factory, mount_factory, keys):
    reg = registry_factory()
    c = Client(reg.host)
    repo = new_repo()
    p = provider(c, repo)
    sign_tag(c, repo, p.digest, [Signature.make(keys["ecdsa"], identity(reg.host, repo),
                                                p.digest)])
    m = vmount(mount_factory, reg, keys["ecdsa"], opts=["tag_ttl=1", "timeout=2"])
    path = os.path.join(art(m, reg, repo), "provider")
    assert read(path) == read(ELF_PATH)
    t_warm = time.monotonic()
    reg.stop()
    wait_for(lambda: time.monotonic() - t_warm > 1.2, 5, what="tag_ttl=1 to expire")
    # the tag answer is stale and the registry gone: the cached digest and its
    # verdict still serve
    assert read(path) == read(ELF_PATH)
    assert "provider" in os.listdir(os.path.dirname(path))


def signed_and_unsigned(registry, client, keys):
    """Two providers, the first signed by the ecdsa key under its .sig tag."""
    signed, unsigned = new_repo(), new_repo()
    p = provider(client, signed)
    sign_tag(client, signed, p.digest, [Signature.make(keys["ecdsa"],
                                                       identity(registry.host, signed),
                                                       p.digest)])
    return signed, p, unsigned, provider(client, unsigned)


def test_reference_mount_same_policy(registry, client, mount_factory, keys):
    from fixtures.mount import MountError
    signed, p, unsigned, _ = signed_and_unsigned(registry, client, keys)
    o = ["platform=linux/amd64", "verify=cosign:" + keys["ecdsa"].path]
    m = mount_factory(opts=o, args=["%s/%s:1.0" % (registry.host, signed)])
    assert read(os.path.join(m.path, "provider")) == read(ELF_PATH)
    bad = mount_factory(opts=o, args=["%s/%s:1.0" % (registry.host, unsigned)], mount=False)
    with pytest.raises(MountError) as e:
        bad.mount()
    assert "access denied" in str(e.value)
    assert "refused (verify=cosign): no signature" in str(e.value)


def test_new_mount_offline_verifies_from_the_cache(registry_factory, mount_factory, keys,
                                                  tmp_path):
    reg = registry_factory()
    c = Client(reg.host)
    # one-component names: offline, a nested name's first path probe (is
    # "sig" a repository with tag "<hex>"?) fails before the digest is reached
    signed, unsigned = new_repo().replace("/", "-"), new_repo().replace("/", "-")
    p = provider(c, signed)
    # not cosign's own payload: offline, the payload must come from the cache too
    sign_tag(c, signed, p.digest, [Signature.make(keys["ecdsa"], identity(reg.host, signed),
                                                  p.digest, optional={"build": "7"})])
    q = provider(c, unsigned)
    cache = tmp_path / "shared-cache"
    m = vmount(mount_factory, reg, keys["ecdsa"], cache=cache)
    assert read(os.path.join(art(m, reg, signed), "provider")) == read(ELF_PATH)
    plain = mount_factory(opts=["registry=" + reg.host, "platform=linux/amd64"], cache=cache)
    assert read(os.path.join(art(plain, reg, unsigned), "provider")) == read(ELF_PATH)
    m.unmount()
    plain.unmount()
    reg.stop()
    m2 = vmount(mount_factory, reg, keys["ecdsa"], cache=cache, opts=["timeout=2"])
    assert read(os.path.join(art(m2, reg, signed, p.digest), "provider")) == read(ELF_PATH)
    assert "verified (verify=cosign): cached signature manifest" in m2.log_text()
    # cached but never verified: not shown, and not taken for a refusal
    e = errno_of(os.listdir, art(m2, reg, unsigned, q.digest))
    assert e not in (None, errno.EACCES, errno.ENOENT), e
    assert "signatures could not be looked up" in m2.log_text()


def test_layout_view_same_policy(registry, client, mount_factory, keys):
    signed, p, unsigned, q = signed_and_unsigned(registry, client, keys)
    m = vmount(mount_factory, registry, keys["ecdsa"])
    layout = os.path.join(m.path, ".ocifs", "layout", registry.host)
    index = json.loads(read(os.path.join(layout, signed, "1.0", "index.json")))
    assert index["manifests"][0]["digest"] == p.digest
    t0 = registry.mark()
    assert errno_of(os.listdir, os.path.join(layout, unsigned, "1.0")) == errno.EACCES
    assert errno_of(read, os.path.join(layout, unsigned, "1.0", "blobs", "sha256",
                                       q.layers[0].hex)) == errno.EACCES
    assert artifact_gets(registry, q, t0) == 0


# --- OCI 1.1 referrers --------------------------------------------------------

def test_referrer_signature_via_tag_schema(registry, client, mount_factory, keys):
    repo = new_repo()
    p = provider(client, repo)
    sign_referrer(client, repo, p, [Signature.make(keys["ecdsa"],
                                                   identity(registry.host, repo), p.digest)])
    m = vmount(mount_factory, registry, keys["ecdsa"])
    t0 = registry.mark()
    assert read(os.path.join(art(m, registry, repo), "provider")) == read(ELF_PATH)
    # .sig (404), referrers API (404), sha256-<hex> index, the referrer manifest
    assert registry.count("GET", "/v2/%s/manifests/%s" % (
        repo, p.digest.replace(":", "-")), t0) == 1
    assert registry.count("GET", "/v2/%s/manifests/sha256:.*" % repo, t0) == 1
    assert registry.count("GET", "/v2/%s/blobs/.*" % repo, t0) == 1   # the binary


def test_referrer_signature_via_referrers_api(registry, client, mount_factory, keys):
    """A registry with the referrers API (a proxy adding it to docker-registry):
    one referrers request, and the tag-schema index is not asked for."""
    repo = new_repo()
    p = provider(client, repo)
    proxy = FaultProxy(registry.url)
    try:
        # signed for the name the mount knows the registry by
        _, _, ref = sign_referrer(client, repo, p, [Signature.make(
            keys["ecdsa"], identity(proxy.host, repo), p.digest)], index_tag=False)
        proxy.add(r"/v2/%s/referrers/%s" % (repo, p.digest), "replace",
                  body=cosign.referrers_index([ref]), content_type=OCI_INDEX, digest=False)
        o = ["registry=" + proxy.host, "platform=linux/amd64",
             "verify=cosign:" + keys["ecdsa"].path]
        m = mount_factory(opts=o)
        d = os.path.join(m.path, proxy.host, repo, "1.0")
        assert read(os.path.join(d, "provider")) == read(ELF_PATH)
        assert len(proxy.seen(r"/v2/%s/referrers/.*" % repo)) == 1
        assert not proxy.seen(r"/v2/%s/manifests/%s" % (repo, p.digest.replace(":", "-")))
        assert len(proxy.seen(r"/v2/%s/manifests/%s" % (repo, ref["digest"]))) == 1
    finally:
        proxy.stop()


@pytest.mark.parametrize("kind", ["ecdsa", "ed25519"])
def test_sigstore_bundle_referrer(registry, client, mount_factory, keys, kind):
    """cosign 3 sign --key: a Sigstore bundle (DSSE over an in-toto statement)."""
    repo = new_repo()
    p = provider(client, repo)
    cosign.sign_bundle(client, repo, p, cosign.bundle(keys[kind], p.digest))
    m = vmount(mount_factory, registry, keys[kind])
    t0 = registry.mark()
    assert read(os.path.join(art(m, registry, repo), "provider")) == read(ELF_PATH)
    # .sig (404), referrers API (404), the tag-schema index, the referrer
    # manifest, the bundle, then the binary
    assert registry.count("GET", "/v2/%s/blobs/.*" % repo, t0) == 2
    assert "Sigstore bundle" in m.log_text()


@pytest.mark.parametrize("case, why", [
    ("other key", "not signed by the key"),
    ("other digest", "statement is for another digest"),
    ("other predicate", "predicateType is not cosign's signature"),
])
def test_sigstore_bundle_refused(registry, client, mount_factory, keys, case, why):
    repo = new_repo()
    p = provider(client, repo)
    q = provider(client, repo, tag="2.0")
    b = {"other key": lambda: cosign.bundle(keys["other"], p.digest),
         "other digest": lambda: cosign.bundle(keys["ecdsa"], q.digest),
         "other predicate": lambda: cosign.bundle(keys["ecdsa"], p.digest,
                                                  "https://slsa.dev/provenance/v1")}[case]()
    cosign.sign_bundle(client, repo, p, b)
    m = vmount(mount_factory, registry, keys["ecdsa"])
    t0 = registry.mark()
    assert_refused(m, registry, p, t0, why)


# --- options ------------------------------------------------------------------

def test_bad_key_refuses_to_mount(registry, mount_factory, tmp_path):
    from fixtures.mount import MountError
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    for spec, why in [("cosign:" + str(bad), "BEGIN PUBLIC KEY"),
                      ("cosign:" + str(tmp_path / "missing.pub"), "No such file"),
                      ("gpg:" + str(bad), "cosign:")]:
        m = mount_factory(opts=["registry=" + registry.host, "verify=" + spec], mount=False)
        with pytest.raises(MountError) as e:
            m.mount()
        assert why in str(e.value), str(e.value)


# --- the referrers view -------------------------------------------------------

SBOM_TYPE = "application/spdx+json"


def push_sbom(client, subject, body=b'{"spdxVersion":"SPDX-2.3"}\n', index_tag=True):
    """An SBOM pushed as an OCI 1.1 referrer of ``subject`` (as ``oras attach``)."""
    cfg = client.push_blob(subject.repo, EMPTY_JSON, OCI_EMPTY)
    layer = client.push_blob(subject.repo, body, SBOM_TYPE,
                             annotations={"org.opencontainers.image.title": "sbom.spdx.json"})
    man = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "artifactType": SBOM_TYPE, "config": cfg, "layers": [layer],
                       "subject": descriptor(subject.manifest, subject.media_type)}).encode()
    digest = client.push_manifest(subject.repo, sha256_digest(man), man, OCI_MANIFEST)
    ref = descriptor(man, OCI_MANIFEST, artifact_type=SBOM_TYPE)
    if index_tag:
        cosign.add_to_referrers_index(client, subject.repo, subject.digest, ref)
    return digest, ref


def signed_with_sbom(registry, client, keys):
    """A provider with a .sig signature and an SBOM referrer."""
    repo = new_repo()
    p = provider(client, repo)
    sig_digest, _ = sign_tag(client, repo, p.digest, [Signature.make(
        keys["ecdsa"], identity(registry.host, repo), p.digest)])
    sbom_digest, _ = push_sbom(client, p)
    return repo, p, sig_digest, sbom_digest


def refdir(m, host, repo, ref="1.0"):
    return os.path.join(m.path, ".ocifs", "referrers", host, repo, ref)


def test_referrers_listed_and_browsable(registry, client, mount_factory, keys):
    repo, p, sig_digest, sbom_digest = signed_with_sbom(registry, client, keys)
    m = mount_factory(opts=["registry=" + registry.host, "platform=linux/amd64"])
    assert "referrers" in os.listdir(os.path.join(m.path, ".ocifs"))
    t0 = registry.mark()
    d = refdir(m, registry.host, repo)
    assert sorted(os.listdir(d)) == sorted([sig_digest, sbom_digest])
    # the referrers API probe (404 on docker-registry 2.8), the tag-schema
    # index, the tag list (for cosign's tags) and the .sig manifest
    assert registry.count("GET", "/v2/%s/referrers/.*" % repo, t0) == 1
    assert registry.count("GET", "/v2/%s/manifests/%s" % (
        repo, p.digest.replace(":", "-")), t0) == 1
    assert registry.count("GET", "/v2/%s/tags/list" % repo, t0) == 1
    assert registry.count("GET", "/v2/%s/manifests/%s" % (repo, sig_tag(p.digest)), t0) == 1
    assert registry.count("GET", "/v2/%s/blobs/.*" % repo, t0) == 0
    # each referrer is an artifact directory
    assert read(os.path.join(d, sbom_digest, "sbom.spdx.json")) == \
        b'{"spdxVersion":"SPDX-2.3"}\n'
    assert "manifest.json" in os.listdir(os.path.join(d, sig_digest))
    # listed again within tag_ttl: no request; a digest that is no referrer: ENOENT
    t1 = registry.mark()
    assert sorted(os.listdir(d)) == sorted([sig_digest, sbom_digest])
    assert registry.count(None, "/v2/.*", t1) == 0
    assert errno_of(os.listdir, os.path.join(d, p.digest)) == errno.ENOENT


def test_referrers_xattr(registry, client, mount_factory, keys):
    repo, p, sig_digest, sbom_digest = signed_with_sbom(registry, client, keys)
    m = mount_factory(opts=["registry=" + registry.host, "platform=linux/amd64"])
    a = art(m, registry, repo)
    os.listdir(a)
    t0 = registry.mark()
    # listing the xattrs (cp -a, rsync -X) costs nothing: the name is not listed
    assert "user.oci.referrers" not in os.listxattr(a)
    assert registry.count(None, "/v2/.*", t0) == 0
    lines = os.getxattr(a, "user.oci.referrers").decode().splitlines()
    assert sorted(lines) == sorted([
        "%s %s" % (sbom_digest, SBOM_TYPE),
        "%s %s %s" % (sig_digest, cosign.PAYLOAD_TYPE, sig_tag(p.digest))])


def test_referrers_via_api_one_request(registry, client, mount_factory):
    repo = new_repo()
    p = provider(client, repo)
    proxy = FaultProxy(registry.url)
    try:
        sbom_digest, ref = push_sbom(client, p, index_tag=False)
        proxy.add(r"/v2/%s/referrers/%s" % (repo, p.digest), "replace",
                  body=cosign.referrers_index([ref]), content_type=OCI_INDEX, digest=False)
        m = mount_factory(opts=["registry=" + proxy.host, "platform=linux/amd64"])
        os.listdir(os.path.join(m.path, proxy.host, repo, "1.0"))
        n = len(proxy.log)
        assert os.listdir(refdir(m, proxy.host, repo)) == [sbom_digest]
        seen = [s.path for s in proxy.log[n:]]
        # the referrers API, and the tag list once per repository (cosign's tags)
        assert seen.count("/v2/%s/referrers/%s" % (repo, p.digest)) == 1
        assert "/v2/%s/manifests/%s" % (repo, p.digest.replace(":", "-")) not in seen
        assert len(seen) == 2, seen
    finally:
        proxy.stop()


def test_referrers_of_refused_artifact_hidden(registry, client, mount_factory, keys):
    repo = new_repo()
    p = provider(client, repo)
    push_sbom(client, p)
    m = vmount(mount_factory, registry, keys["ecdsa"])
    assert errno_of(os.listdir, refdir(m, registry.host, repo)) == errno.EACCES
