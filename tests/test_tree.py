"""Integration tests of the namespace tree at size: what listings and lookups
cost in registry requests, refused listings, thread-safe resolution.

Request counts come from the registry's access log (``registry.mark()`` /
``registry.count()``) or from a FaultProxy's log; timings belong in bench/.
"""

import errno
import json
import os
import random
import resource
import selectors
import socket
import stat
import subprocess
import threading
import time
import urllib.parse

import pytest

from fixtures.faultproxy import FaultProxy
from fixtures.push import Client, push_artifact, tag
from fixtures.registry import closed_port, wait_for


def run(cmd, timeout=120, check=True):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if check:
        assert r.returncode == 0, "%s -> %d: %s" % (cmd, r.returncode,
                                                   r.stderr.decode(errors="replace"))
    return r


def ls_l_names(path):
    """`ls -l` of path: {name: mode string}."""
    out = run(["ls", "-l", path]).stdout.decode()
    return {line.split()[-1]: line.split()[0] for line in out.splitlines()[1:]}


def test_ls_l_of_a_repository_costs_its_tag_list(registry_factory, mount_factory):
    """getattr of each tag directory is answered from the tag list just read:
    no manifest request per tag."""
    reg = registry_factory()
    c = Client(reg.host)
    p = push_artifact(c, "big/tags", ["t0000"], files=[("f", b"f\n")])
    tags = ["t%04d" % i for i in range(1, 400)]
    tag(c, "big/tags", p, *tags)
    m = mount_factory(opts=["registry=" + reg.host])
    mark = reg.mark()
    names = ls_l_names(os.path.join(m.path, reg.host, "big", "tags"))
    assert set(names) == {"t0000"} | set(tags)
    assert all(v.startswith("d") for v in names.values())
    assert reg.count({"GET", "HEAD"}, r"/v2/big/tags/manifests/.*", since=mark) == 0
    assert reg.count("GET", r"/v2/big/tags/tags/list", since=mark) == 1
    # Besides the tag list: the catalog, and whether "tags" is a tag of "big".
    assert reg.count(None, r".*", since=mark) <= 1 + 2
    # Inside a tag, the manifest is asked for once.
    mark = reg.mark()
    assert os.listdir(os.path.join(m.path, reg.host, "big", "tags", "t0123")) != []
    assert reg.count("GET", r"/v2/big/tags/manifests/t0123", since=mark) == 1


def test_ls_l_asks_the_daemon_for_no_xattr_per_entry(registry_factory, mount_factory):
    """ls -l asks each entry for its SELinux label and POSIX ACLs; ocifs
    has neither and says so (ENOTSUP, not ENODATA), so ls stops asking
    after the first entry: in the daemon's -d log, a handful of GETXATTR
    for 300 entries, not 3 each. user.oci.* still answer, other user.*
    names are ENODATA."""
    reg = registry_factory()
    c = Client(reg.host)
    p = push_artifact(c, "xa/tags", ["t000"], files=[("f", b"f\n")])
    tag(c, "xa/tags", p, *["t%03d" % i for i in range(1, 300)])
    m = mount_factory(opts=["registry=" + reg.host], debug=True)
    d = os.path.join(m.path, reg.host, "xa", "tags")
    assert len(ls_l_names(d)) == 300
    assert m.log_text().count("opcode: GETXATTR") <= 6
    t = os.path.join(d, "t000")
    assert os.getxattr(t, "user.oci.digest").decode() == p.digest
    for name, want in (("user.other", errno.ENODATA), ("security.selinux", errno.ENOTSUP),
                       ("system.posix_acl_access", errno.ENOTSUP)):
        with pytest.raises(OSError) as e:
            os.getxattr(t, name)
        assert e.value.errno == want, name


def test_ls_l_of_a_namespace_costs_the_catalog(registry_factory, mount_factory):
    reg = registry_factory()
    c = Client(reg.host)
    repos = ["ns/r%03d" % i for i in range(60)]
    for r in repos:
        push_artifact(c, r, ["1"], files=[("f", r.encode())])
    m = mount_factory(opts=["registry=" + reg.host])
    mark = reg.mark()
    names = ls_l_names(os.path.join(m.path, reg.host, "ns"))
    assert set(names) == {r.split("/")[1] for r in repos}
    assert reg.count({"GET", "HEAD"}, r"/v2/.*/manifests/.*", since=mark) == 0
    assert reg.count(None, r"/v2/.*/tags/list", since=mark) == 0


BIG_CATALOG = ["big/tags", "big/tags-x", "big/tags.y", "big/tags/sub", "big/tags/sub/deeper",
               "big/tagsz", "big/tagr", "big/a0", "big/z9"] + \
              ["fill/r%02d" % i for i in range(24)] + ["aaa/first"]


def push_big_catalog(reg):
    c = Client(reg.host)
    for r in BIG_CATALOG:
        push_artifact(c, r, ["1"], files=[("f", r.encode())])
    return c


def test_listing_a_repository_reads_its_part_of_a_big_catalog(registry_factory,
                                                                mount_factory):
    """The catalog has 34 names, 3 to a page (12 pages): `ls -l` of big/tags
    asks the catalog from just before "big/tags" (last=) and stops at the
    first name past the names that start with it, in the order
    distribution sorts by (path components, '/' first) as much as in byte
    order: 2 catalog pages, and the sub-repository is listed. Its
    neighbours ("big/tags-x", "big/tagr") are not its sub-repositories."""
    reg = registry_factory(catalog_maxentries=3)
    push_big_catalog(reg)
    m = mount_factory(opts=["registry=" + reg.host])
    h = os.path.join(m.path, reg.host)
    mark = reg.mark()
    assert set(ls_l_names(os.path.join(h, "big", "tags"))) == {"1", "sub"}
    got = reg.requests("GET", r"/v2/_catalog.*", since=mark)
    assert len(got) <= 2, [a.uri for a in got]
    assert "last=" in got[0].uri, got[0].uri
    # Deeper, a part of that part: nothing asked.
    mark = reg.mark()
    assert set(os.listdir(os.path.join(h, "big", "tags", "sub"))) == {"1", "deeper"}
    assert reg.count("GET", r"/v2/_catalog.*", since=mark) == 0
    # The namespace above: its own part, every neighbour in it.
    assert set(os.listdir(os.path.join(h, "big"))) == \
        {"tags", "tags-x", "tags.y", "tagsz", "tagr", "a0", "z9"}
    # The registry's top: the whole catalog, every page.
    mark = reg.mark()
    assert set(os.listdir(h)) == {"big", "fill", "aaa"}
    assert reg.count("GET", r"/v2/_catalog.*", since=mark) == 12


def test_a_part_ending_in_0_is_not_taken_for_the_whole_catalog(registry_factory,
                                                                 mount_factory):
    """distribution sorts its catalog by path components ('/' first): from
    last="app/~" (just before "app0") it answers "app-x" and "app.y" before
    "app0". Those are not a sign that it ignored last=: the part of app0 is
    its own, and the registry's top still lists every name."""
    reg = registry_factory()
    c = Client(reg.host)
    for r in ["aaa/first", "app", "app/z", "app-x", "app.y", "app0", "app0/sub", "b"]:
        push_artifact(c, r, ["1"], files=[("f", r.encode())])
    m = mount_factory(opts=["registry=" + reg.host])
    h = os.path.join(m.path, reg.host)
    assert set(os.listdir(os.path.join(h, "app0"))) == {"1", "sub"}
    assert set(os.listdir(h)) == {"aaa", "app", "app-x", "app.y", "app0", "b"}


def test_the_part_of_a_missing_name_is_not_taken_for_the_whole_catalog(registry_factory,
                                                                        mount_factory):
    """app/zz is no repository: just past last="app/zy~" distribution has
    "app-x" (path order), which sorts before "app/zz" in byte order; that
    alone does not say the registry ignored last=. The registry's top still
    lists every name."""
    reg = registry_factory()
    c = Client(reg.host)
    for r in ["aaa/first", "app/z", "app-x", "b"]:
        push_artifact(c, r, ["1"], files=[("f", r.encode())])
    m = mount_factory(opts=["registry=" + reg.host])
    h = os.path.join(m.path, reg.host)
    with pytest.raises(FileNotFoundError):
        os.listdir(os.path.join(h, "app", "zz"))
    assert set(os.listdir(h)) == {"aaa", "app", "app-x", "b"}


def test_a_name_too_long_for_a_repository_has_no_part_of_the_catalog(registry_factory,
                                                                      mount_factory):
    """a{200}/b{100} is longer than a repository name may be (255): nothing
    of the catalog is at or below it, so nothing is asked and nothing
    logged; it is no directory to list."""
    reg = registry_factory()
    c = Client(reg.host)
    push_artifact(c, "a/b", ["1"], files=[("f", b"a/b")])
    m = mount_factory(opts=["registry=" + reg.host])
    h = os.path.join(m.path, reg.host)
    mark = reg.mark()
    with pytest.raises(FileNotFoundError):
        os.listdir(os.path.join(h, "a" * 200, "b" * 100))
    assert reg.count("GET", r"/v2/_catalog.*", since=mark) == 0
    assert "_catalog" not in m.log_text()
    # Nor is a{200}/b{100} a repository (with tag c), or a{200}/b{100}/c
    # (with tag d): not asked, nothing logged, ENOENT (a{200}:b{100}, a
    # valid reading, is asked: 404).
    for p in [("a" * 200, "b" * 100, "c"), ("a" * 200, "b" * 100, "c", "d")]:
        with pytest.raises(FileNotFoundError):
            os.stat(os.path.join(h, *p))
    assert reg.count(None, r"/v2/a{200}/b.*", since=mark) == 0
    assert m.log_text() == "", m.log_text()


def test_a_stale_part_answers_below_it_while_the_catalog_is_down(registry_factory,
                                                                 mount_factory):
    """The part of ns, stale once tag_ttl has passed, answers for ns/a while
    the catalog cannot be reached, as a stale listing does: one warning
    that the last listing is shown, no error per directory below it."""
    reg = registry_factory()
    c = Client(reg.host)
    for r in ["ns/a/x", "ns/a/y", "ns/b"]:
        push_artifact(c, r, ["1"], files=[("f", r.encode())])
    proxy = FaultProxy(reg.url)
    try:
        m = mount_factory(opts=["insecure=" + proxy.host, "tag_ttl=1", "timeout=2",
                                "retries=0"])
        h = os.path.join(m.path, proxy.host)
        assert set(os.listdir(os.path.join(h, "ns"))) == {"a", "b"}
        t_warm = time.monotonic()
        proxy.add(r"/v2/_catalog", "reset")
        wait_for(lambda: time.monotonic() - t_warm > 1.2, 5, what="tag_ttl=1 to expire")
        for _ in range(3):
            assert set(os.listdir(os.path.join(h, "ns", "a"))) == {"x", "y"}
        assert proxy.seen(r"/v2/_catalog")[-1].action == "reset"
        log = m.log_text().splitlines()
        assert not [ln for ln in log if "_catalog" in ln], log
        assert len([ln for ln in log if "showing the last one" in ln]) == 1, log
    finally:
        proxy.stop()


def test_a_stale_not_a_tag_stands_only_while_the_registry_cannot_say(registry_factory,
                                                                     mount_factory):
    """sn/repo:2 was not a tag. Once tag_ttl has passed, the registry answers
    it with a manifest over 4 MiB: an answer, not a registry that cannot be
    reached, so "not a tag" no longer stands: EIO, as without it."""
    reg = registry_factory()
    c = Client(reg.host)
    push_artifact(c, "sn/repo", ["1"], files=[("f", b"sn/repo")])
    proxy = FaultProxy(reg.url)
    try:
        m = mount_factory(opts=["insecure=" + proxy.host, "tag_ttl=1", "retries=0"])
        two = os.path.join(m.path, proxy.host, "sn", "repo", "2", "f")
        with pytest.raises(FileNotFoundError):
            os.stat(two)
        t_cached = time.monotonic()
        proxy.add(r"/v2/sn/repo/manifests/2", "replace", body=b" " * (5 << 20))
        wait_for(lambda: time.monotonic() - t_cached > 1.2, 5, what="tag_ttl=1 to expire")
        with pytest.raises(OSError) as e:
            os.stat(two)
        assert e.value.errno == errno.EIO, e.value
        assert proxy.seen(r"/v2/sn/repo/manifests/2")[-1].action == "replace"
    finally:
        proxy.stop()


def byte_order_catalog(names, n=3):
    """/v2/_catalog as registries that sort it by bytes answer it (Harbor's
    SQL, ...; distribution sorts by path components): the names after
    last=, n to a page, a Link to the next page while there is one."""
    names = sorted(names)

    def answer(path):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        last = q.get("last", [""])[0]
        page = [x for x in names if x > last][:n]
        more = {}
        if page and page[-1] != names[-1]:
            more["Link"] = '</v2/_catalog?last=%s&n=%d>; rel="next"' % (
                urllib.parse.quote(page[-1], safe=""), n)
        return json.dumps({"repositories": page}).encode(), more
    return answer


def id_order_catalog(names, n=3):
    """/v2/_catalog as Quay answers it: in the order the repositories were
    made (by id), last= ignored, n to a page, a Link with a page token of
    its own to the next page."""
    def answer(path):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        start = int(q.get("next_page", ["0"])[0])
        page = names[start:start + n]
        more = {}
        if start + n < len(names):
            more["Link"] = '</v2/_catalog?n=%d&next_page=%d>; rel="next"' % (n, start + n)
        return json.dumps({"repositories": page}).encode(), more
    return answer


def catalog_proxy(reg, mount_factory, pushed, answer):
    """Push @pushed (tag "1"), mount through a FaultProxy whose /v2/_catalog
    is answer(path): (proxy, the registry's directory)."""
    c = Client(reg.host)
    for r in pushed:
        push_artifact(c, r, ["1"], files=[("f", r.encode())])
    proxy = FaultProxy(reg.url)
    proxy.add(r"/v2/_catalog", "replace", body=answer, content_type="application/json",
              digest=False)
    try:
        m = mount_factory(opts=["insecure=" + proxy.host])
    except BaseException:
        proxy.stop()
        raise
    return proxy, os.path.join(m.path, proxy.host)


def test_parts_of_an_unsorted_catalog(registry_factory, mount_factory):
    """A catalog in the order its repositories were made, that ignores
    last=: its first name ("zz/last") is past big/tags, but the next is
    before it: the catalog is not sorted, so no part of it can be read
    alone. It is read whole, from the top, once: big/tags has its
    sub-repository, and the top lists every name without asking again."""
    names = ["zz/last", "big/tags/sub", "aaa/first", "big/tags", "fill/x", "big/tagsz",
             "big/tags/sub/deeper"]
    proxy, h = catalog_proxy(registry_factory(), mount_factory, ["big/tags", "big/tags/sub"],
                             id_order_catalog(names))
    try:
        assert set(os.listdir(os.path.join(h, "big", "tags"))) == {"1", "sub"}
        # The first page from last=, then the 3 pages from the top.
        assert len(proxy.seen(r"/v2/_catalog")) == 1 + 3
        assert set(os.listdir(h)) == {"aaa", "big", "fill", "zz"}
        assert set(os.listdir(os.path.join(h, "big"))) == {"tags", "tagsz"}
        assert len(proxy.seen(r"/v2/_catalog")) == 1 + 3
    finally:
        proxy.stop()


def test_parts_of_a_catalog_sorted_by_bytes(registry_factory, mount_factory):
    """A catalog in byte order ("foo-bar" < "foo/x" < "foo0"), 3 names a page:
    a part is its own names, read from just before them; the part of a
    missing "foo-bar" (its next name "foo/x" sorts before it in path
    order) is empty, not the whole catalog: the top lists every name."""
    names = sorted(BIG_CATALOG + ["foo/x", "foo0"])
    proxy, h = catalog_proxy(registry_factory(), mount_factory,
                             ["big/tags", "big/tags/sub", "foo/x"], byte_order_catalog(names))
    try:
        assert set(ls_l_names(os.path.join(h, "big", "tags"))) == {"1", "sub"}
        # "big/tags", "big/tags-x", "big/tags.y" | "big/tags/sub", ... "big/tagsz"
        assert len(proxy.seen(r"/v2/_catalog")) == 2
        with pytest.raises(FileNotFoundError):
            os.listdir(os.path.join(h, "foo-bar"))
        assert set(os.listdir(h)) == {"aaa", "big", "fill", "foo", "foo0"}
    finally:
        proxy.stop()


def test_a_registry_ignoring_last_is_read_whole_once(registry_factory, mount_factory):
    """A catalog that answers from the top whatever last= says (a proxy
    serving the whole list): the part asked for is still right, and the
    whole list it got answers the next listing without a request."""
    reg = registry_factory()
    push_big_catalog(reg)
    proxy = FaultProxy(reg.url)
    try:
        proxy.add(r"/v2/_catalog", "replace",
                  body=json.dumps({"repositories": sorted(BIG_CATALOG)}).encode(),
                  content_type="application/json", digest=False)
        m = mount_factory(opts=["insecure=" + proxy.host])
        h = os.path.join(m.path, proxy.host)
        assert set(os.listdir(os.path.join(h, "big", "tags"))) == {"1", "sub"}
        assert len(proxy.seen(r"/v2/_catalog")) == 1
        assert set(os.listdir(os.path.join(h, "fill"))) == {"r%02d" % i for i in range(24)}
        assert set(os.listdir(h)) == {"big", "fill", "aaa"}
        assert len(proxy.seen(r"/v2/_catalog")) == 1
    finally:
        proxy.stop()


def test_readdir_lists_each_name_once_sorted(registry_factory, mount_factory):
    """Sub-repositories and tags merge into one sorted listing; a tag shadowing
    a sub-repository shows the sub-repository as .name."""
    reg = registry_factory()
    c = Client(reg.host)
    push_artifact(c, "m/app", ["2", "1", "x"], files=[("f", b"a")])
    push_artifact(c, "m/app/x", ["1"], files=[("f", b"b")])
    push_artifact(c, "m/app/y", ["1"], files=[("f", b"c")])
    push_artifact(c, "m/app/y/z", ["1"], files=[("f", b"d")])
    m = mount_factory(opts=["registry=" + reg.host])
    assert os.listdir(os.path.join(m.path, reg.host, "m", "app")) == [".x", "1", "2", "x", "y"]


def refusing_proxy(reg, path_regex):
    p = FaultProxy(reg.url)
    p.add(path_regex, "status", status=401, headers={"WWW-Authenticate": 'Basic realm="r"'},
          body=b'{"errors":[{"code":"UNAUTHORIZED","message":"catalog is private"}]}')
    return p


def test_refused_catalog_is_eacces_and_logged_once(registry_factory, mount_factory):
    reg = registry_factory()
    c = Client(reg.host)
    push_artifact(c, "open/repo", ["1"], files=[("f.txt", b"open\n")])
    proxy = refusing_proxy(reg, r"/v2/_catalog")
    try:
        m = mount_factory(opts=["insecure=" + proxy.host])
        h = os.path.join(m.path, proxy.host)
        for _ in range(2):
            with pytest.raises(OSError) as e:
                os.listdir(h)
            assert e.value.errno == errno.EACCES
        # Other paths keep working, by tag (no catalog needed).
        with open(os.path.join(h, "open", "repo", "1", "f.txt"), "rb") as f:
            assert f.read() == b"open\n"
        # A repository lists its tags; a namespace, which only the catalog
        # could list, is refused too. The refusal is the registry's, said
        # once, not once per part of the catalog.
        assert os.listdir(os.path.join(h, "open", "repo")) == ["1"]
        for d in ("open", "other"):
            with pytest.raises(OSError) as e:
                os.listdir(os.path.join(h, d))
            assert e.value.errno == errno.EACCES, d
        lines = [ln for ln in m.log_text().splitlines() if "refused" in ln]
        assert len(lines) == 1, lines
        assert proxy.host in lines[0] and "catalog" in lines[0] and "401" in lines[0], lines
    finally:
        proxy.stop()


def test_refused_tag_list_is_eacces(registry_factory, mount_factory):
    reg = registry_factory()
    c = Client(reg.host)
    push_artifact(c, "hid/repo", ["1"], files=[("f.txt", b"x\n")])
    proxy = refusing_proxy(reg, r"/v2/.*/tags/list")
    try:
        m = mount_factory(opts=["insecure=" + proxy.host])
        d = os.path.join(m.path, proxy.host, "hid", "repo")
        with pytest.raises(OSError) as e:
            os.listdir(d)
        assert e.value.errno == errno.EACCES
        assert os.path.isfile(os.path.join(d, "1", "f.txt"))
        lines = [ln for ln in m.log_text().splitlines() if "refused" in ln]
        assert len(lines) == 1 and "tag list of hid/repo" in lines[0], lines
    finally:
        proxy.stop()


def test_names_that_failed_to_resolve_are_not_listed(mount_factory, registry):
    m = mount_factory(opts=["timeout=2", "retries=0"])
    ghost = "127.0.0.1:%d" % closed_port()
    with pytest.raises(OSError):
        os.listdir(os.path.join(m.path, ghost))
    assert ghost not in os.listdir(m.path)
    os.listdir(os.path.join(m.path, registry.host))
    assert registry.host in os.listdir(m.path)


class EmptyRegistries:
    """n registries on loopback ports, each answering any request with an
    empty catalog (Connection: close), served by one selector thread."""

    BODY = b'{"repositories":[]}'

    def __init__(self, n):
        self.sel = selectors.DefaultSelector()
        self.hosts = []
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(8)
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, None)
            self.hosts.append("127.0.0.1:%d" % s.getsockname()[1])
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            for key, _ in self.sel.select(0.1):
                if key.data is None:
                    try:
                        c, _ = key.fileobj.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    self.sel.register(c, selectors.EVENT_READ, bytearray())
                    continue
                try:
                    chunk = key.fileobj.recv(65536)
                except OSError:
                    chunk = b""
                key.data.extend(chunk)
                if chunk and b"\r\n\r\n" not in key.data:
                    continue
                self.sel.unregister(key.fileobj)
                if chunk:
                    key.fileobj.setblocking(True)
                    key.fileobj.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                                        % (len(self.BODY), self.BODY))
                key.fileobj.close()

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=10)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()


def test_root_lists_the_registries_used_most_recently(mount_factory):
    """/ lists the 1,024 registries that answered most recently (besides
    -o registry=): the 1,025th to answer pushes out the least recently used."""
    n = 1025
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 512:
        pytest.skip("needs %d file descriptors" % (n + 512))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n + 512), hard))
    regs = EmptyRegistries(n)
    try:
        m = mount_factory(opts=["timeout=5"])
        for h in regs.hosts:
            assert os.listdir(os.path.join(m.path, h)) == []
        listed = set(os.listdir(m.path))
        assert regs.hosts[0] not in listed
        assert set(regs.hosts[1:]) <= listed
    finally:
        regs.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_registries_max_bounds_the_registries_listed(mount_factory):
    """-o registries_max=3: of 4 registries that answered, / lists the 3 used
    most recently; the one dropped is listed again once it answers again."""
    regs = EmptyRegistries(4)
    try:
        m = mount_factory(opts=["timeout=5", "registries_max=3", "tag_ttl=1"])
        for h in regs.hosts:
            assert os.listdir(os.path.join(m.path, h)) == []
        assert set(os.listdir(m.path)) == set(regs.hosts[1:])
        # Listed again once it answers (its catalog, asked again past tag_ttl).
        wait_for(lambda: os.listdir(os.path.join(m.path, regs.hosts[0])) == [] and
                 regs.hosts[0] in os.listdir(m.path), 10, what="the dropped one listed again")
        listed = set(os.listdir(m.path))
        assert regs.hosts[0] in listed and len(listed) == 3 and listed <= set(regs.hosts)
    finally:
        regs.stop()


def test_names_that_lead_nowhere_do_not_push_registries_out_of_root(registry_factory,
                                                                     mount_factory):
    """-o registries_max=2: two registries answer, then ten names that lead
    nowhere (closed ports) are looked up: the two are still listed in /."""
    regs = [registry_factory() for _ in range(2)]
    m = mount_factory(opts=["timeout=2", "retries=0", "registries_max=2"])
    for r in regs:
        os.listdir(os.path.join(m.path, r.host))
    for _ in range(10):
        with pytest.raises(OSError):
            os.listdir(os.path.join(m.path, "127.0.0.1:%d" % closed_port()))
    assert set(os.listdir(m.path)) == {r.host for r in regs}


def test_resolution_is_thread_safe(registry_factory, mount_factory):
    """16 threads resolve distinct paths (xattrs always reach the daemon) tens
    of thousands of times: every answer is the right one."""
    reg = registry_factory()
    c = Client(reg.host)
    want = {}
    for i in range(8):
        repo = "mt/r%d" % i if i % 2 else "mt/deep/er/r%d" % i
        for t in ("1", "2"):
            p = push_artifact(c, repo, [t], files=[("f%d.txt" % j, b"%s:%s:%d" % (
                repo.encode(), t.encode(), j)) for j in range(3)])
            for j, layer in enumerate(p.layers):
                want[os.path.join(repo, t, "f%d.txt" % j)] = layer.digest
    m = mount_factory(opts=["registry=" + reg.host])
    paths = sorted(want)
    wrong, errors = [], []

    def worker(seed):
        rnd = random.Random(seed)
        for _ in range(2000):
            rel = rnd.choice(paths)
            try:
                got = os.getxattr(os.path.join(m.path, reg.host, rel), "user.oci.digest")
            except OSError as e:
                errors.append((rel, e.errno))
                continue
            if got.decode() != want[rel]:
                wrong.append((rel, got))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and wrong == []
    st = os.stat(os.path.join(m.path, reg.host, paths[0]))
    assert stat.S_ISREG(st.st_mode)


def test_times_come_from_content(registry_factory, mount_factory, tmp_path):
    """Two mounts with their own caches stat the same artifact alike: files
    carry the manifest's org.opencontainers.image.created, else the epoch;
    directories the epoch. rsync -a from the second mount copies nothing."""
    reg = registry_factory()
    c = Client(reg.host)
    push_artifact(c, "times/dated", ["1"], files=[("a.txt", b"a\n"), ("b/c.txt", b"c\n")],
                  annotations={"org.opencontainers.image.created": "2024-05-01T14:00:00+02:00"})
    push_artifact(c, "times/undated", ["1"], files=[("u.txt", b"u\n")])
    mounts = [mount_factory(opts=["registry=" + reg.host]) for _ in range(2)]

    def stats(m, rel):
        st = os.stat(os.path.join(m.path, reg.host, rel))
        return (st.st_mode, st.st_size, st.st_mtime, st.st_ctime)
    for rel in ("times", "times/dated", "times/dated/1", "times/dated/1/a.txt",
                "times/dated/1/b", "times/dated/1/manifest.json", "times/undated/1/u.txt"):
        assert stats(mounts[0], rel) == stats(mounts[1], rel), rel
    assert stats(mounts[0], "times/dated/1/a.txt")[2] == 1714564800
    assert stats(mounts[0], "times/dated/1/b")[2] == 1714564800
    assert stats(mounts[0], "times/undated/1/u.txt")[2] == 0
    assert stats(mounts[0], "times/dated/1")[2] == 0
    dest = str(tmp_path / "copy")
    src = [os.path.join(m.path, reg.host, "times", "dated", "1") + "/" for m in mounts]
    run(["rsync", "-a", src[0], dest])
    out = run(["rsync", "-a", "--stats", src[1], dest]).stdout.decode()
    assert "Number of regular files transferred: 0" in out, out


# --- bounded artifact views (-o artifacts_max) --------------------------------

def push_many(reg, n):
    c = Client(reg.host)
    return [push_artifact(c, "lru/r%d" % i, ["1"], files=[("f", b"artifact %d\n" % i * 500)])
            for i in range(n)]


def read_f(m, reg, i):
    with open(os.path.join(m.path, reg.host, "lru", "r%d" % i, "1", "f"), "rb") as f:
        return f.read()


def read_all_uncached(m, reg, pushed):
    """Read every artifact of push_many() once, then remove their manifests
    from the blob cache (so that resolving one again shows as a request);
    the registry's mark after that."""
    for i in range(len(pushed)):
        assert read_f(m, reg, i) == b"artifact %d\n" % i * 500
    for p in pushed:
        os.unlink(os.path.join(m.cache, "blobs", "sha256", p.hex))
    return reg.mark()


def test_evicted_artifact_is_resolved_again(registry_factory, mount_factory):
    """Beyond artifacts_max the least recently used view is dropped: reading
    it again asks for its manifest once (its copy in the blob cache removed
    here, so that the request shows); one still kept costs nothing."""
    reg = registry_factory()
    pushed = push_many(reg, 10)
    m = mount_factory(opts=["registry=" + reg.host, "artifacts_max=4"])
    mark = read_all_uncached(m, reg, pushed)
    assert read_f(m, reg, 0) == b"artifact 0\n" * 500
    assert reg.count({"GET", "HEAD"}, r"/v2/lru/r0/manifests/.*", since=mark) == 1
    mark = reg.mark()
    assert read_f(m, reg, 9) == b"artifact 9\n" * 500
    assert reg.count({"GET", "HEAD"}, r"/v2/lru/.*/manifests/.*", since=mark) == 0


def test_artifacts_max_bytes_counts_the_views_memory(registry_factory, mount_factory):
    """artifacts_max_bytes bounds what the views take in memory, more than
    their manifests' bytes: at twice one manifest's length, two views do not
    fit, so the older is resolved again (its manifest asked for, its copy in
    the blob cache removed here so that the request shows)."""
    reg = registry_factory()
    pushed = push_many(reg, 2)
    assert len(pushed[0].manifest) == len(pushed[1].manifest)
    m = mount_factory(opts=["registry=" + reg.host, "tag_ttl=600",
                            "artifacts_max_bytes=%d" % (2 * len(pushed[0].manifest))])
    mark = read_all_uncached(m, reg, pushed)
    assert read_f(m, reg, 1) == b"artifact 1\n" * 500
    assert reg.count({"GET", "HEAD"}, r"/v2/lru/.*/manifests/.*", since=mark) == 0
    assert read_f(m, reg, 0) == b"artifact 0\n" * 500
    assert reg.count({"GET", "HEAD"}, r"/v2/lru/r0/manifests/.*", since=mark) == 1


def test_big_manifests_leave_memory_within_artifacts_max_bytes(registry_factory,
                                                              mount_factory):
    """Manifests of almost 4 MB (one big annotation) looked up one after
    another: the daemon's RSS after them stays within artifacts_max_bytes
    plus one lookup's leftovers, however many there were (their parse trees
    and the views pushed out are given back to the system, whichever FUSE
    thread freed them)."""
    reg = registry_factory()
    c = Client(reg.host)
    tags = ["t%02d" % i for i in range(16)]
    for i, t in enumerate(tags):
        push_artifact(c, "big/a", [t], files=[("f.txt", b"f\n")],
                      annotations={"n": str(i), "pad": "x" * 3_900_000})
    m = mount_factory(opts=["registry=" + reg.host, "artifacts_max_bytes=8M"])
    repo = os.path.join(m.path, reg.host, "big", "a")
    assert sorted(os.listdir(repo)) == tags
    base = m.memory_kib()
    for t in tags:
        assert os.getxattr(os.path.join(repo, t), "user.oci.digest").startswith(b"sha256:")
    # Under ASan the lookups and evictions still run (its use-after-free
    # check), but its allocator keeps what is freed: RSS says nothing there.
    if not m.sanitized:
        grown = (m.memory_kib() - base) / 1024
        assert grown < 8 + 8, "RSS grew by %.1f MiB" % grown


def test_open_file_outlives_eviction(registry_factory, mount_factory):
    reg = registry_factory()
    push_many(reg, 10)
    m = mount_factory(opts=["registry=" + reg.host, "artifacts_max=2"])
    want = b"artifact 0\n" * 500
    with open(os.path.join(m.path, reg.host, "lru", "r0", "1", "f"), "rb") as f:
        head = f.read(100)
        d = os.open(os.path.join(m.path, reg.host, "lru", "r0", "1"), os.O_RDONLY)
        for i in range(1, 10):
            assert read_f(m, reg, i) == b"artifact %d\n" % i * 500
        assert sorted(os.listdir(d)) == sorted(os.listdir(
            os.path.join(m.path, reg.host, "lru", "r0", "1")))
        os.close(d)
        assert head + f.read() == want


def test_eviction_under_concurrent_reads(registry_factory, mount_factory):
    """Threads reading more artifacts than are kept: every read is right
    (under ASan this is the use-after-free check of the references)."""
    reg = registry_factory()
    push_many(reg, 10)
    m = mount_factory(opts=["registry=" + reg.host, "artifacts_max=2"])
    errors = []

    def reader(seed):
        rnd = random.Random(seed)
        for _ in range(30):
            i = rnd.randrange(10)
            try:
                if read_f(m, reg, i) != b"artifact %d\n" % i * 500:
                    errors.append(i)
            except OSError as e:
                errors.append(e)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --- single flight of manifest fetches ------------------------------------------

def mount_stats(m):
    with open(os.path.join(m.path, ".ocifs", "stats"), "rb") as f:
        return json.loads(f.read())


@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize("fault", ["slow", "500"])
def test_concurrent_lookups_share_one_manifest_request(registry_factory, mount_factory, by,
                                                       fault):
    """16 lookups at once of a tag whose manifest is not in memory cost one
    manifest request (by tag; by digest when the tag is known but its view
    and cached manifest are gone), held by the proxy until the other 15
    wait for it (or, without sharing, until 16 requests came). A 500 is
    shared too: 16 errors, one request."""
    reg = registry_factory()
    c = Client(reg.host)
    pushed = [push_artifact(c, "flight/app", [str(i)], files=[("f.txt", b"%d\n" % i)])
              for i in range(2)]
    proxy = FaultProxy(reg.url)
    gate = threading.Event()
    try:
        m = mount_factory(opts=["registry=" + proxy.host, "insecure=" + proxy.host,
                                "artifacts_max=1", "tag_ttl=600"])
        repo = os.path.join(m.path, proxy.host, "flight", "app")
        assert sorted(os.listdir(repo)) == ["0", "1"]
        d = os.path.join(repo, "0")
        os.stat(d)          # a tag directory, from the tag list
        if by == "tag":
            path = r"/v2/flight/app/manifests/0"
        else:
            path = r"/v2/flight/app/manifests/" + pushed[0].digest
            assert os.getxattr(d, "user.oci.digest").decode() == pushed[0].digest
            os.listdir(os.path.join(repo, "1"))   # artifacts_max=1: 0's view goes
            os.unlink(os.path.join(m.cache, "blobs", "sha256", pushed[0].hex))
        if fault == "500":
            proxy.add(path, "status", status=500, gate=gate, hold=30)
        else:
            proxy.add(path, "forward", gate=gate, hold=30)
        assert proxy.seen(path) == []
        out = []

        def look():
            try:
                out.append(os.getxattr(d, "user.oci.digest").decode())
            except OSError as e:
                out.append(e.errno)
        threads = [threading.Thread(target=look) for _ in range(16)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(proxy.seen(path)) >= 16 or
                     mount_stats(m).get("lookups_waiting", 0) >= 15,
                     timeout=20, what="16 lookups under way")
        finally:
            gate.set()
            for t in threads:
                t.join()
        assert len(proxy.seen(path, method=None)) == 1
        if fault == "500":
            assert out == [errno.EIO] * 16
        else:
            assert out == [pushed[0].digest] * 16
        assert mount_stats(m)["lookups_waiting"] == 0
    finally:
        gate.set()
        proxy.stop()


class Flight:
    """Two ls of the tag directory flight/app/0 (known from its tag list),
    whose manifest the proxy holds until ``gate`` is set: ``first`` asks for
    it (``get``, the proxy's record of its GET), ``second`` waits on it."""

    def __init__(self, registry_factory, mount_factory):
        reg = registry_factory()
        push_artifact(Client(reg.host), "flight/app", ["0"], files=[("f.txt", b"0\n")])
        self.gate = threading.Event()
        self.proxy = FaultProxy(reg.url)
        self.m = mount_factory(opts=["registry=" + self.proxy.host,
                                     "insecure=" + self.proxy.host])
        repo = os.path.join(self.m.path, self.proxy.host, "flight", "app")
        assert os.listdir(repo) == ["0"]
        self.path = r"/v2/flight/app/manifests/0"
        self.proxy.add(self.path, "forward", gate=self.gate, hold=60)
        self.ls = ["ls", os.path.join(repo, "0")]
        self.first = self.second = None

    def __enter__(self):
        try:
            self.first = subprocess.Popen(self.ls, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE)
            self.get = wait_for(lambda: self.proxy.seen(self.path), 20,
                                what="the manifest GET")[0]
            self.second = subprocess.Popen(self.ls, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE)
            wait_for(lambda: mount_stats(self.m)["lookups_waiting"] == 1, 20,
                     what="the second ls waiting")
        except BaseException:
            self.__exit__()
            raise
        return self

    def listed(self, p):
        """Release the manifest; did ls @p list the artifact?"""
        self.gate.set()
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        return b"f.txt" in out.split()

    def __exit__(self, *exc):
        self.gate.set()
        for p in (self.first, self.second):
            if p and p.poll() is None:
                p.kill()
        self.proxy.stop()

    def gets(self):
        return len(self.proxy.seen(self.path, method=None))


def test_killed_lookup_waiting_on_a_manifest_ends(registry_factory, mount_factory):
    """An ls waiting on another's fetch of the manifest ends when killed
    (the daemon answers its interrupt), long before the answer comes; the
    fetch goes on for the first ls."""
    with Flight(registry_factory, mount_factory) as f:
        f.second.kill()
        f.second.wait(10)
        assert mount_stats(f.m)["lookups_waiting"] == 0
        assert f.first.poll() is None
        assert f.listed(f.first)
    assert f.gets() == 1


def test_interrupted_manifest_fetch_does_not_fail_its_waiters(registry_factory,
                                                              mount_factory):
    """The ls whose request fetches the manifest is killed: the transfer is
    dropped, and the ls waiting on it asks again instead of taking its
    EINTR."""
    with Flight(registry_factory, mount_factory) as f:
        f.first.kill()
        f.first.wait(10)
        assert f.get.done.wait(10), "the daemon still waits on the killed ls's transfer"
        assert f.listed(f.second)
    assert f.gets() == 2


def test_tag_directory_from_the_tag_list_once_its_prefix_is_known(registry_factory,
                                                                   mount_factory):
    """getattr of a tag directory that the tag list names is answered from
    the list, no manifest asked, also once the shorter reading of its path
    (ns:app) is known not to be a tag (this crashed the daemon: a target
    without a view was looked into)."""
    reg = registry_factory()
    c = Client(reg.host)
    for t in ("0", "1"):
        push_artifact(c, "ns/app", [t], files=[("f.txt", t.encode())])
    m = mount_factory(opts=["registry=" + reg.host])
    # The tag list, read through the layout tree: no dentries for the tags
    # in the artifact tree, so the stat below reaches the daemon.
    assert sorted(os.listdir(os.path.join(m.path, ".ocifs", "layout", reg.host, "ns",
                                          "app"))) == ["0", "1"]
    assert "f.txt" in os.listdir(os.path.join(m.path, reg.host, "ns", "app", "0"))
    mark = reg.mark()
    assert stat.S_ISDIR(os.stat(os.path.join(m.path, reg.host, "ns", "app", "1")).st_mode)
    assert reg.count({"GET", "HEAD"}, r"/v2/ns/app/manifests/.*", since=mark) == 0
    assert m.alive


# --- bounded directory caches (-o tags_max, listings_max, listings_max_bytes) ---

def push_tags(reg, repo, n):
    """n tags a000... of repo, each on a manifest of its own: {tag: digest}."""
    c = Client(reg.host)
    p = push_artifact(c, repo, ["a000"], files=[("f", b"f\n")])
    body = json.loads(p.manifest)
    want = {"a000": p.digest}
    for i in range(1, n):
        m = json.dumps(dict(body, annotations={"n": str(i)})).encode()
        want["a%03d" % i] = c.push_manifest(repo, "a%03d" % i, m, p.media_type)
    return want


def tag_digest(m, reg, repo, t):
    return os.getxattr(os.path.join(m.path, reg.host, repo, t), "user.oci.digest").decode()


def test_tag_answers_beyond_tags_max_are_asked_again(registry_factory, mount_factory):
    """With tags_max=4, 12 tags resolve right; the oldest answers are
    dropped: the first tag costs one manifest request again (well within
    tag_ttl), the most recent ones none."""
    reg = registry_factory()
    want = push_tags(reg, "tm", 12)
    m = mount_factory(opts=["registry=" + reg.host, "tags_max=4", "tag_ttl=600"])
    for t, d in sorted(want.items()):
        assert tag_digest(m, reg, "tm", t) == d
    mark = reg.mark()
    assert tag_digest(m, reg, "tm", "a000") == want["a000"]
    assert reg.count({"GET", "HEAD"}, r"/v2/tm/manifests/.*", since=mark) == 1
    assert reg.count({"GET", "HEAD"}, r"/v2/tm/manifests/a000", since=mark) == 1
    mark = reg.mark()
    for t in ("a009", "a010", "a011", "a000"):
        assert tag_digest(m, reg, "tm", t) == want[t]
    assert reg.count({"GET", "HEAD"}, r"/v2/tm/manifests/.*", since=mark) == 0


def test_evicted_tag_answer_no_longer_serves_offline(registry_factory, mount_factory):
    """Stale-if-error lasts as long as the answer is kept: with the registry
    gone, the two tags still kept (tags_max=2) resolve to their last digest;
    the one dropped is an error."""
    reg = registry_factory()
    want = push_tags(reg, "so", 3)
    m = mount_factory(opts=["registry=" + reg.host, "tags_max=2", "tag_ttl=1", "timeout=2",
                            "retries=0"])
    for t in sorted(want):
        assert tag_digest(m, reg, "so", t) == want[t]
    t_warm = time.monotonic()
    reg.stop()
    wait_for(lambda: time.monotonic() - t_warm > 1.2, 5, what="tag_ttl=1 to expire")
    assert tag_digest(m, reg, "so", "a002") == want["a002"]
    assert tag_digest(m, reg, "so", "a001") == want["a001"]
    with pytest.raises(OSError):
        tag_digest(m, reg, "so", "a000")


def push_listed(reg, repos, ntags=2):
    c = Client(reg.host)
    for r in repos:
        p = push_artifact(c, r, ["t000"], files=[("f", r.encode())])
        tag(c, r, p, *["t%03d" % i for i in range(1, ntags)])


def tags_lists(reg, repo, mark):
    return reg.count("GET", r"/v2/%s/tags/list" % repo, since=mark)


def test_listings_beyond_listings_max_are_fetched_again(registry_factory, mount_factory):
    reg = registry_factory()
    push_listed(reg, ["lm/r0", "lm/r1", "lm/r2"])
    m = mount_factory(opts=["registry=" + reg.host, "listings_max=2", "tag_ttl=600"])
    d = os.path.join(m.path, reg.host, "lm")
    for i in range(3):
        assert sorted(os.listdir(os.path.join(d, "r%d" % i))) == ["t000", "t001"]
    mark = reg.mark()
    assert sorted(os.listdir(os.path.join(d, "r0"))) == ["t000", "t001"]
    assert tags_lists(reg, "lm/r0", mark) == 1
    mark = reg.mark()
    assert sorted(os.listdir(os.path.join(d, "r0"))) == ["t000", "t001"]
    assert tags_lists(reg, "lm/r0", mark) == 0


def test_listings_beyond_listings_max_bytes_are_fetched_again(registry_factory,
                                                              mount_factory):
    """A 200-tag list is over listings_max_bytes=2K alone: kept while it is
    the newest, dropped for the next listing, fetched again when listed."""
    reg = registry_factory()
    push_listed(reg, ["lb/big"], ntags=200)
    push_listed(reg, ["lb/small"], ntags=1)
    m = mount_factory(opts=["registry=" + reg.host, "listings_max_bytes=2K",
                            "tag_ttl=600"])
    d = os.path.join(m.path, reg.host, "lb")
    mark = reg.mark()
    assert len(os.listdir(os.path.join(d, "big"))) == 200
    assert tags_lists(reg, "lb/big", mark) == 1
    assert os.listdir(os.path.join(d, "small")) == ["t000"]
    mark = reg.mark()
    assert len(os.listdir(os.path.join(d, "big"))) == 200
    assert tags_lists(reg, "lb/big", mark) == 1


def test_concurrent_listings_share_one_fetch(registry_factory, mount_factory):
    """8 threads list one uncached repository at once: its part of the catalog
    (itself and 4 sub-repositories: 3 pages here) and the tag list are
    fetched once, all their pages, and shared:
    as many requests as one `ls` alone on a fresh mount makes. The proxy
    holds the first answer of each until a second request for it comes (2 s
    at most), which threads fetching on their own would send."""
    reg = registry_factory()
    push_listed(reg, ["sf/repo"], ntags=120)
    push_listed(reg, ["sf/repo/s%d" % i for i in range(4)], ntags=1)
    proxy = FaultProxy(reg.url)
    want = ["s%d" % i for i in range(4)] + ["t%03d" % i for i in range(120)]
    lists = (r"/v2/_catalog", r"/v2/sf/repo/tags/list")

    def fetches():
        return [len(proxy.seen(p)) for p in lists]
    try:
        opts = ["registry=" + proxy.host, "page_size=2"]
        m = mount_factory(opts=opts)
        assert sorted(os.listdir(os.path.join(m.path, proxy.host, "sf", "repo"))) == want
        one = fetches()
        assert one[0] == 3, one
        for p in lists:
            proxy.add(p, "await", until=p, hold=2, auth=False, times=1)
        m = mount_factory(opts=opts)
        d = os.path.join(m.path, proxy.host, "sf", "repo")
        got, errors = [], []

        def lister():
            try:
                got.append(sorted(os.listdir(d)))
            except OSError as e:
                errors.append(e)
        threads = [threading.Thread(target=lister) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert got == [want] * 8
        assert [b - a for a, b in zip(one, fetches())] == one
    finally:
        proxy.stop()


def test_concurrent_listings_share_one_failure(registry_factory, mount_factory):
    """A tag list that fails (503, held until a second request comes, 2 s at
    most): the threads listing it at once wait for the one request and all
    get its error, not a request each."""
    reg = registry_factory()
    push_listed(reg, ["sx/repo"])
    proxy = FaultProxy(reg.url)
    try:
        p = r"/v2/sx/repo/tags/list"
        proxy.add(p, "await", until=p, hold=2, auth=False, status=503)
        m = mount_factory(opts=["registry=" + proxy.host, "retries=0"])
        d = os.path.join(m.path, proxy.host, "sx", "repo")
        errs = []

        def lister():
            try:
                os.listdir(d)
                errs.append(0)
            except OSError as e:
                errs.append(e.errno)
        threads = [threading.Thread(target=lister) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errs == [errno.EIO] * 8, errs
        assert len(proxy.seen(p)) == 1
    finally:
        proxy.stop()


def test_dircache_eviction_under_concurrent_lookups(registry_factory, mount_factory):
    """16 threads resolve 48 distinct tags through tags_max=8 while 4 list
    three repositories through listings_max=2: every answer is right (under
    ASan: no use of an evicted entry)."""
    reg = registry_factory()
    want = push_tags(reg, "tc", 48)
    push_listed(reg, ["tl/r0", "tl/r1", "tl/r2"])
    m = mount_factory(opts=["registry=" + reg.host, "tags_max=8", "listings_max=2"])
    wrong, errors = [], []

    def resolver(seed):
        rnd = random.Random(seed)
        for _ in range(150):
            t = rnd.choice(sorted(want))
            try:
                if tag_digest(m, reg, "tc", t) != want[t]:
                    wrong.append(t)
            except OSError as e:
                errors.append((t, e.errno))

    def lister(seed):
        rnd = random.Random(seed)
        for _ in range(60):
            d = os.path.join(m.path, reg.host, "tl", "r%d" % rnd.randrange(3))
            try:
                if sorted(os.listdir(d)) != ["t000", "t001"]:
                    wrong.append(d)
            except OSError as e:
                errors.append((d, e.errno))
    threads = [threading.Thread(target=resolver, args=(s,)) for s in range(16)]
    threads += [threading.Thread(target=lister, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and wrong == []
