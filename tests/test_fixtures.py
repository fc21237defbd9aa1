"""Self-checks of the test fixtures (registry + push tool), no ocifs needed."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from fixtures import push
from fixtures.push import Client, push_artifact, push_index, sha256_digest
from fixtures.registry import Registry, closed_port, parse_access_line

HERE = os.path.dirname(os.path.abspath(__file__))
BLOB_RE = r"/v2/%s/blobs/sha256:[0-9a-f]{64}"


def curl(url, *args):
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-f", *args, url],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def curl_manifest(reg, repo, ref):
    return curl("%s/v2/%s/manifests/%s" % (reg.url, repo, ref),
                "-H", "Accept: " + push.MANIFEST_ACCEPT)


def test_registry_ready_and_paths(registry):
    assert registry.host == "127.0.0.1:%d" % registry.port
    assert registry.url == "http://" + registry.host
    assert json.loads(curl(registry.url + "/v2/")) == {}
    assert os.path.isdir(registry.storage_dir)


def test_access_log_parse():
    a = parse_access_line('127.0.0.1 - - [23/Nov/2026:12:10:59 +0000] '
                          '"HEAD /v2/x/manifests/y?a=b HTTP/1.1" 404 91 "" "curl/7.88.1"')
    assert (a.method, a.uri, a.path, a.status, a.size, a.agent) == \
        ("HEAD", "/v2/x/manifests/y?a=b", "/v2/x/manifests/y", 404, 91, "curl/7.88.1")
    assert parse_access_line('time="..." level=info msg="response completed"') is None


def test_oci_artifact_roundtrip(registry, client):
    data = os.urandom(3000)
    p = push_artifact(client, "fx/oci/art", ["v1", "v2"],
                      files=[("README.md", b"# hi\n", "text/markdown"),
                             ("bin/tool", data, "application/vnd.test.tool"),
                             ("empty", b""),
                             (None, b"untitled")],
                      config=b'{"a":1}', config_media_type="application/vnd.test.config+json",
                      artifact_type="application/vnd.test.artifact")
    m = json.loads(p.manifest)
    assert m["mediaType"] == push.OCI_MANIFEST
    assert m["artifactType"] == "application/vnd.test.artifact"
    assert m["config"]["mediaType"] == "application/vnd.test.config+json"
    assert [l.get("annotations", {}).get(push.TITLE) for l in m["layers"]] == \
        ["README.md", "bin/tool", "empty", None]
    for ref in ("v1", "v2", p.digest):
        assert curl_manifest(registry, "fx/oci/art", ref) == p.manifest
    assert sha256_digest(p.manifest) == p.digest
    for b in [p.config] + p.layers:
        assert curl("%s/v2/fx/oci/art/blobs/%s" % (registry.url, b.digest)) == b.data
        assert b.descriptor["size"] == len(b.data)
    assert p.layers[2].digest == sha256_digest(b"")
    assert sorted(client.tags("fx/oci/art")) == ["v1", "v2"]
    assert "fx/oci/art" in client.catalog()


def test_empty_config_and_docker_manifest(registry, client):
    p = push_artifact(client, "fx/empty", "1", files=[("a.txt", b"a")])
    assert p.config.data == b"{}" and p.config.media_type == push.OCI_EMPTY
    d = push_artifact(client, "fx/docker", "latest", files=[(None, os.urandom(100))],
                      config=b'{"os":"linux"}', docker=True)
    ct, body = client.get_manifest("fx/docker", "latest")
    assert ct == push.DOCKER_MANIFEST and body == d.manifest
    assert json.loads(body)["layers"][0]["mediaType"] == push.DOCKER_LAYER
    hdrs = curl("%s/v2/fx/docker/manifests/latest" % registry.url, "-I",
                "-H", "Accept: " + push.DOCKER_MANIFEST).decode().lower()
    assert "docker-content-digest: " + d.digest in hdrs


def test_index_with_platforms(registry, client):
    amd = push_artifact(client, "fx/multi", [], files=[("t", b"amd64")])
    arm = push_artifact(client, "fx/multi", [], files=[("t", b"arm64")])
    idx = push_index(client, "fx/multi", "1.0",
                     [(amd, push.platform("linux", "amd64")),
                      (arm, push.platform("linux", "arm64", "v8"))])
    body = curl_manifest(registry, "fx/multi", "1.0")
    assert body == idx.manifest
    doc = json.loads(body)
    assert doc["mediaType"] == push.OCI_INDEX
    assert [d["digest"] for d in doc["manifests"]] == [amd.digest, arm.digest]
    assert doc["manifests"][1]["platform"] == {"architecture": "arm64", "os": "linux",
                                               "variant": "v8"}


def test_count_and_mark(registry, client):
    p = push_artifact(client, "fx/count", "t", files=[("f", os.urandom(64))])
    m = registry.mark()
    assert registry.count(None, ".*", since=m) == 0
    for _ in range(3):
        client.get_blob("fx/count", p.layers[0].digest)
    curl_manifest(registry, "fx/count", "t")
    curl("%s/v2/fx/count/manifests/t" % registry.url, "-I",
         "-H", "Accept: " + push.OCI_MANIFEST)
    assert registry.count("GET", BLOB_RE % "fx/count", since=m) == 3
    assert registry.count("GET", "/v2/fx/count/blobs/" + p.layers[0].digest, since=m) == 3
    assert registry.count({"GET", "HEAD"}, "/v2/fx/count/manifests/.*", since=m) == 2
    assert registry.count("HEAD", "/v2/fx/count/manifests/t", since=m) == 1
    m2 = registry.mark()
    assert registry.count(None, ".*", since=m2) == 0
    # everything before the mark is still visible from 0
    assert registry.count("PUT", "/v2/fx/count/manifests/t") >= 1


def test_corrupt_blob(registry, client):
    data = os.urandom(5000)
    p = push_artifact(client, "fx/corrupt", "t", files=[("f", data)])
    path = registry.corrupt_blob(p.layers[0].digest)
    assert path.endswith("/blobs/sha256/%s/%s/data" % (p.layers[0].hex[:2], p.layers[0].hex))
    got = curl("%s/v2/fx/corrupt/blobs/%s" % (registry.url, p.layers[0].digest))
    assert len(got) == len(data) and got != data
    assert hashlib.sha256(got).hexdigest() != p.layers[0].hex


def test_tags_list_ignores_n(registry, client):
    """docker-registry 2.8.2 returns every tag (unsorted) and no Link header,
    whatever n/last say; the suite still needs >1 page worth of tags."""
    tags = ["t%03d" % i for i in range(150)]
    push_artifact(client, "fx/manytags", tags, files=[("f", b"x")])
    body = curl("%s/v2/fx/manytags/tags/list?n=10" % registry.url)
    assert sorted(json.loads(body)["tags"]) == tags
    assert sorted(client.tags("fx/manytags", n=10)) == tags


def test_catalog_pagination(registry_factory):
    reg = registry_factory(catalog_maxentries=2)
    c = Client(reg.host)
    repos = ["p/a", "p/b", "p/c", "q", "r/s/t"]
    for r in repos:
        push_artifact(c, r, "1", files=[("f", r.encode())])
    hdrs = curl(reg.url + "/v2/_catalog", "-D", "-").decode()
    assert 'Link: </v2/_catalog?last=p%2Fb&n=2>; rel="next"' in hdrs
    assert c.catalog() == repos        # follows Link without n
    assert c.catalog(n=1) == repos
    m = reg.mark()
    assert c.catalog(n=2) == repos
    assert reg.count("GET", "/v2/_catalog", since=m) == 3
    # n larger than catalog.maxentries is an error in 2.8.2
    r = subprocess.run(["curl", "-s", "--noproxy", "*", reg.url + "/v2/_catalog?n=3"],
                       stdout=subprocess.PIPE, timeout=30)
    assert b"PAGINATION_NUMBER_INVALID" in r.stdout


def test_registry_stop_restart(tmp_path):
    reg = Registry(tmp_path / "r")
    c = Client(reg.host)
    p = push_artifact(c, "fx/restart", "t", files=[("f", b"persist")])
    port = reg.port
    reg.stop()
    assert not reg.running
    r = subprocess.run(["curl", "-s", "--noproxy", "*", "-o", "/dev/null",
                        "-w", "%{http_code}", reg.url + "/v2/"], stdout=subprocess.PIPE)
    assert r.stdout == b"000"
    reg.start()
    try:
        assert reg.port == port
        assert c.get_blob("fx/restart", p.layers[0].digest) == b"persist"
    finally:
        reg.stop()


def test_closed_port_refuses():
    port = closed_port()
    r = subprocess.run(["curl", "-s", "--noproxy", "*", "http://127.0.0.1:%d/v2/" % port],
                       timeout=30)
    assert r.returncode == 7                      # couldn't connect


def test_push_cli_demo(registry):
    script = os.path.join(HERE, "fixtures", "push.py")
    r = subprocess.run([sys.executable, script, "demo", registry.host],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode().split()
    assert registry.host + "/demo/hello:1.0" in out
    c = Client(registry.host)
    for repo in ("demo/hello", "acme/tools/cli", "demo/docker-style"):
        assert repo in c.catalog()
    ct, body = c.get_manifest("demo/hello", "1.0")
    titles = [l["annotations"][push.TITLE] for l in json.loads(body)["layers"]]
    assert titles == ["README.md", "hello.txt"]
    ct, body = c.get_manifest("acme/tools/cli", "v1")
    assert json.loads(body)["layers"][0]["annotations"][push.TITLE] == "bin/tool"
    ct, _ = c.get_manifest("demo/docker-style", "latest")
    assert ct == push.DOCKER_MANIFEST


def test_push_cli_artifact(registry, tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"cli bytes")
    script = os.path.join(HERE, "fixtures", "push.py")
    r = subprocess.run([sys.executable, script, "artifact", registry.host, "fx/cli:1",
                        "sub/dir/data.bin=%s" % f, "--artifact-type", "application/x-t",
                        "--tag", "2"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    c = Client(registry.host)
    _, body = c.get_manifest("fx/cli", "2")
    m = json.loads(body)
    assert m["artifactType"] == "application/x-t"
    assert m["layers"][0]["annotations"][push.TITLE] == "sub/dir/data.bin"
    assert r.stdout.decode().strip() == "%s/fx/cli@%s" % (registry.host, sha256_digest(body))
