"""The transport of registry/ under hostile or broken servers, on loopback.

    trickles    a blob sent one byte every few seconds fails in about -o timeout
    error bodies an endless chunked 500 or 307 body is read up to REG_ERRBODY_MAX only
    redirects   -o insecure and certs.d client certificates are for the hosts they
                name, not for where a redirect leads; a redirect loop is ELOOP and
                does not make the registry "down"
    schemes     one dropped connection does not switch a plain-HTTP loopback
                registry to HTTPS
    headers     an oversized header fails that request only

Servers are the real docker-registry behind tests/fixtures/faultproxy.py, or small
socket servers written here for what the proxy cannot do (endless bodies).
"""

import errno
import json
import os
import socket
import threading
import time

import pytest

from fixtures.faultproxy import FaultProxy
from fixtures.push import Client, push_artifact, push_demo
from fixtures.registry import wait_for
from test_auth import os_error, pki, read  # noqa: F401 (pki: a fixture)

MiB = 1024 * 1024
REG_ERRBODY_MAX = 16384


@pytest.fixture(scope="module")
def content(tmp_path_factory):
    from conftest import _start_registry
    r = _start_registry(tmp_path_factory.mktemp("content"))
    c = Client(r.host)
    pushed = push_demo(c)
    pushed["demo/big:1"] = push_artifact(c, "demo/big", ["1"],
                                         files=[("big.bin", os.urandom(256 * 1024))])
    yield r, pushed
    r.stop()


@pytest.fixture
def proxy(content):
    store, _ = content
    p = FaultProxy(store.url)
    yield p
    p.stop()


def hello(m, host):
    return os.path.join(m.path, host, "demo", "hello", "1.0", "hello.txt")


def test_trickled_blob_fails_in_about_the_timeout(content, proxy, mount_factory):
    """1 byte every 2 s is below the minimum rate: the read fails (ETIMEDOUT)
    within a few timeouts, not after minutes of resumes (the deadline here is
    the test's bound on the whole read)."""
    _, pushed = content
    big = pushed["demo/big:1"].layers[0]
    proxy.add(r"/v2/demo/big/blobs/" + big.digest, "trickle", every=2)
    m = mount_factory(opts=["registry=" + proxy.host, "timeout=2", "retries=3"], debug=True)
    f = os.path.join(m.path, proxy.host, "demo", "big", "1", "big.bin")
    assert os_error(f, timeout=25) == errno.ETIMEDOUT
    assert "too slow" in m.log_text() or "stalled" in m.log_text(), m.log_text()
    # The registry answered, one body was slow: it is not "not answering",
    # and the next read goes to it at once.
    proxy.clear()
    assert read(hello(m, proxy.host)) == b"Hello from ocifs!\n"


def test_a_stalled_body_does_not_make_the_registry_not_answering(content, proxy,
                                                                 mount_factory):
    """A blob whose answer began and then stalled fails (ETIMEDOUT); the
    registry answered, so the next read is asked at once, not refused as
    "not answering" for a while."""
    _, pushed = content
    big = pushed["demo/big:1"].layers[0]
    proxy.add(r"/v2/demo/big/blobs/" + big.digest, "stall", after=1024, hold=30)
    m = mount_factory(opts=["registry=" + proxy.host, "timeout=2", "retries=0"])
    f = os.path.join(m.path, proxy.host, "demo", "big", "1", "big.bin")
    assert os_error(f, timeout=25) == errno.ETIMEDOUT
    assert "too slow" in m.log_text() or "stalled" in m.log_text(), m.log_text()
    proxy.clear()
    assert read(hello(m, proxy.host)) == b"Hello from ocifs!\n"
    assert "not asked again" not in m.log_text(), m.log_text()


class EndlessBody:
    """Answers every request with ``status`` and a chunked body that never ends
    (until the client goes); counts the body bytes each connection got out."""

    def __init__(self, status, location=None):
        self.status = status
        self.location = location
        self.sent = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(c,), daemon=True).start()

    def _answer(self, c):
        sent = 0
        idx = len(self.sent)
        self.sent.append(0)
        try:
            c.recv(65536)
            head = "HTTP/1.1 %d Oops\r\nTransfer-Encoding: chunked\r\n" % self.status
            if self.location:
                head += "Location: %s\r\n" % self.location
            head += "Content-Type: application/json\r\n\r\n"
            c.sendall(head.encode())
            chunk = b"x" * 4096
            frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
            deadline = time.monotonic() + 60
            while not self.stopping and time.monotonic() < deadline:
                c.sendall(frame)
                sent += len(chunk)
                self.sent[idx] = sent
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


@pytest.mark.parametrize("status", [500, 307])
def test_endless_error_body_is_capped(mount_factory, status):
    srv = EndlessBody(status, location="/v2/again" if status == 307 else None)
    try:
        m = mount_factory(opts=["registry=" + srv.host, "timeout=5", "retries=0"], debug=True)
        f = os.path.join(m.path, srv.host, "demo", "hello", "1.0", "hello.txt")
        err = os_error(f, timeout=30)
        assert err in (errno.EIO, errno.ELOOP, errno.ENOENT), err
        # Each answer was read up to the cap (plus what was in flight), not
        # for as long as the server kept sending.
        assert srv.sent and max(srv.sent) < 64 * REG_ERRBODY_MAX + 4 * MiB, srv.sent
        assert all(n < 64 * REG_ERRBODY_MAX + 4 * MiB for n in srv.sent), srv.sent
    finally:
        srv.stop()


def test_redirect_loop_is_eloop_and_the_registry_stays_up(content, proxy, mount_factory):
    _, pushed = content
    p = pushed["demo/hello:1.0"]
    loop = r"/v2/demo/hello/blobs/" + p.layers[0].digest
    proxy.add(loop, "status", status=301,
              headers={"Location": "http://%s/v2/demo/hello/blobs/%s" % (proxy.host,
                                                                          p.layers[0].digest)})
    m = mount_factory(opts=["registry=" + proxy.host], debug=True)
    d = os.path.join(m.path, proxy.host, "demo", "hello", "1.0")
    assert os_error(os.path.join(d, "README.md")) == errno.ELOOP    # layers[0]
    assert "more than 5 redirects" in m.log_text()
    # Not "not asked again for 10 s": the rest of the registry answers now.
    assert read(os.path.join(d, "hello.txt")) == b"Hello from ocifs!\n"
    assert "not asked again" not in m.log_text()


def test_oversized_header_fails_that_request_only(content, proxy, mount_factory):
    _, pushed = content
    p = pushed["demo/hello:1.0"]
    proxy.add(r"/v2/demo/hello/blobs/" + p.layers[0].digest, "status", status=200,
              headers={"X-Huge": "a" * (300 * 1024)})
    m = mount_factory(opts=["registry=" + proxy.host, "retries=0"], debug=True)
    d = os.path.join(m.path, proxy.host, "demo", "hello", "1.0")
    assert os_error(os.path.join(d, "README.md")) != 0     # layers[0]
    assert read(os.path.join(d, "hello.txt")) == b"Hello from ocifs!\n"
    assert "not asked again" not in m.log_text()


def test_one_reset_keeps_a_loopback_registry_on_plain_http(content, proxy, mount_factory):
    """The mount's first request is cut without an answer: that is not a TLS
    server; the next requests still go in plain HTTP and work."""
    proxy.add(r"/v2/.*", "reset", times=1)
    m = mount_factory(opts=["registry=" + proxy.host, "retries=2"], debug=True)
    assert read(hello(m, proxy.host)) == b"Hello from ocifs!\n"
    first = proxy.seen(r"/v2/.*")
    assert first[0].action == "reset"
    assert all(s.status for s in first[1:])
    # After the one TLS try that found a plain server, every request went out
    # in plain HTTP (a TLS one would not reach the proxy's log as a request).
    assert len(first) >= 3, [(s.path, s.action, s.status) for s in first]


def test_insecure_does_not_follow_a_redirect(content, pki, registry_factory, proxy,
                                             mount_factory):
    """-o insecure=REGISTRY is for that registry: a blob it redirects to another
    host with an untrusted certificate fails verification."""
    store, pushed = content
    ca, cert, key = pki
    p = pushed["demo/hello:1.0"]
    tls = registry_factory(storage_dir=store.storage_dir, tls=(cert, key), ca=ca.cert)
    layer = p.layers[0]
    proxy.add(r"/v2/demo/hello/blobs/" + layer.digest, "redirect",
              location=lambda path: "https://%s%s" % (tls.host, path))
    m = mount_factory(opts=["registry=" + proxy.host, "insecure=" + proxy.host,
                            "retries=0"], debug=True)
    d = os.path.join(m.path, proxy.host, "demo", "hello", "1.0")
    assert os_error(os.path.join(d, "README.md")) == errno.EIO     # layers[0]
    assert "TLS certificate of %s not trusted" % tls.host in m.log_text(), m.log_text()


# --- listings ----------------------------------------------------------------------

def test_invalid_tag_names_are_dropped(content, proxy, mount_factory):
    proxy.add(r"/v2/demo/hello/tags/list", "replace", digest=False,
              content_type="application/json",
              body=json.dumps({"name": "demo/hello", "tags": [
                  "1.0", "bad/name", "../up", "a" * 200, "-dash", "latest", ""]}).encode())
    m = mount_factory(opts=["registry=" + proxy.host], debug=True)
    assert sorted(os.listdir(os.path.join(m.path, proxy.host, "demo", "hello"))) == \
        ["1.0", "latest"]


def test_chained_tag_pages_are_capped_in_bytes(content, proxy, mount_factory):
    """Pages of one 1 MiB (invalid) tag each, chained with Link: the listing
    stops at REG_LIST_BYTES_MAX (32 MiB) with EFBIG, and the daemon never
    holds the pages. (The chain ends after 40 pages, so that a client
    without the cap lists it, instead of growing without bound.)"""
    page = json.dumps({"name": "demo/hello", "tags": ["x" * MiB]}).encode()
    proxy.add(r"/v2/demo/hello/tags/list", "replace", digest=False, times=40,
              content_type="application/json", body=page,
              headers={"Link": '</v2/demo/hello/tags/list?n=1&last=x>; rel="next"'})
    m = mount_factory(opts=["registry=" + proxy.host], debug=True)
    base = m.memory_kib("VmHWM")
    d = os.path.join(m.path, proxy.host, "demo", "hello")
    try:
        os.listdir(d)
        got = 0
    except OSError as e:
        got = e.errno
    assert got == errno.EFBIG, os.strerror(got) if got else "listed"
    pages = len(proxy.seen(r"/v2/demo/hello/tags/list"))
    assert 30 <= pages <= 34, pages
    assert "tags listing larger than 33554432 bytes" in m.log_text()
    with open("/proc/%d/maps" % m.proc.pid) as f:
        asan = "libasan" in f.read()       # its quarantine keeps freed memory
    if not asan:
        assert m.memory_kib("VmHWM") - base < 48 * 1024


def test_redirected_blobs_are_counted(content, proxy, mount_factory):
    """A blob the registry redirects to storage is one blob request in
    /.ocifs/stats (the registry's 307), whatever the storage path looks like;
    the storage GET is one more request, to its own host."""
    from fixtures.faultproxy import BlobStore
    store, pushed = content
    blobs = BlobStore(store)
    try:
        proxy.add(r"/v2/.*/blobs/sha256:[0-9a-f]+", "redirect",
                  location=lambda path: "http://127.0.0.1:%d/storage/%s?sig=1"
                  % (blobs.port, path.rsplit("/", 1)[1]))
        m = mount_factory(opts=["registry=" + proxy.host], debug=True)
        assert read(hello(m, proxy.host)) == b"Hello from ocifs!\n"
        with open(os.path.join(m.path, ".ocifs", "stats")) as f:
            stats = json.load(f)
        assert stats["blob_requests"] == 1, stats
        assert len(blobs.seen) == 1
        assert "127.0.0.1:%d" % blobs.port in json.dumps(stats["hosts"]), stats
    finally:
        blobs.stop()
