"""Fixtures for the ocifs integration suite.

    registry          a real docker-registry on a free loopback port (one per module)
    registry_factory  more registries, per test: registry_factory(catalog_maxentries=2)
    ocifs_bin         $OCIFS_BIN or <repo>/build/ocifs; skips the test if missing
    mount_factory     mount_factory(opts=[...], cache=None, args=(), env=None, debug=None)
                      -> mounted OcifsMount (env: see fixtures/mount.py)
    mount             an OcifsMount with -o registry=<registry.host>, fresh cache

Every mount is unmounted at teardown (fusermount3 -u, then -uz), and a daemon log
showing a sanitizer report fails the test.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixtures.mount import DaemonLogError, OcifsMount  # noqa: E402
from fixtures.push import Client  # noqa: E402
from fixtures.registry import Registry  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the daemon and registry logs to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when not in ("call", "setup") or not rep.failed:
        return
    for m in getattr(item, "_ocifs_mounts", []):
        text = m.all_logs()
        if text:
            rep.sections.append(("ocifs log", text[-20000:]))
    for r in getattr(item, "_ocifs_registries", []):
        lines = r.log_text().splitlines()
        rep.sections.append(("registry log %s (tail)" % r.host, "\n".join(lines[-80:])))


def _tracked(node, attr):
    lst = getattr(node, attr, None)
    if lst is None:
        lst = []
        setattr(node, attr, lst)
    return lst


@pytest.fixture(autouse=True)
def _track_module_registry(request):
    if "registry" in request.fixturenames:
        _tracked(request.node, "_ocifs_registries").append(
            request.getfixturevalue("registry"))


@pytest.fixture(scope="session")
def ocifs_bin():
    path = os.environ.get("OCIFS_BIN") or os.path.join(REPO_ROOT, "build", "ocifs")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip("ocifs binary not found at %s (build it, or set OCIFS_BIN)" % path)
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is not available")
    return path


def _start_registry(tmpdir, **kw):
    try:
        return Registry(tmpdir, **kw)
    except FileNotFoundError:
        pytest.skip("docker-registry is not installed")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    r = _start_registry(tmp_path_factory.mktemp("registry"))
    yield r
    r.stop()


@pytest.fixture
def registry_factory(tmp_path, request):
    made = []

    def make(**kw):
        r = _start_registry(tmp_path / ("registry%d" % len(made)), **kw)
        made.append(r)
        _tracked(request.node, "_ocifs_registries").append(r)
        return r
    yield make
    for r in made:
        r.stop()


@pytest.fixture
def client(registry):
    return Client(registry.host)


@pytest.fixture
def mount_factory(ocifs_bin, tmp_path, request):
    mounts = _tracked(request.node, "_ocifs_mounts")

    def make(opts=(), cache=None, args=(), mount=True, env=None, debug=None):
        n = len(mounts)
        mnt = tmp_path / ("mnt%d" % n)
        cache = cache or tmp_path / ("cache%d" % n)
        m = OcifsMount(ocifs_bin, mnt, cache, opts=opts, args=args, logdir=tmp_path,
                       env=env, debug=debug)
        mounts.append(m)
        if mount:
            m.mount()
        return m
    yield make
    errors = []
    for m in mounts:
        try:
            m.unmount(check=True)
        except DaemonLogError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def mount(mount_factory, registry):
    return mount_factory(opts=["registry=" + registry.host])
