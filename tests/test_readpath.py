"""Integration tests: the read path of big blobs (issue 14).

A cold read downloads, hashes and writes in one pass and serves nothing
before the whole blob matched; a cached blob is served from its cache
file, by the kernel itself where FUSE passthrough is compiled in
(libfuse >= 3.17), offered (kernel >= 6.9) and allowed (CAP_SYS_ADMIN).
Timings are in bench/cold_warm.sh, not here.
"""

import hashlib
import json
import mmap
import os
import re
import subprocess
import threading

import pytest

from fixtures.push import Client, push_artifact


def version_lines(ocifs_bin):
    return subprocess.run([str(ocifs_bin), "--version"], check=True,
                          stdout=subprocess.PIPE).stdout.decode().splitlines()


def passthrough_compiled(ocifs_bin):
    return any(line.startswith("FUSE passthrough: compiled in")
               for line in version_lines(ocifs_bin))


def kernel_at_least(major, minor):
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return m and (int(m.group(1)), int(m.group(2))) >= (major, minor)


def stats(m):
    with open(os.path.join(m.path, ".ocifs", "stats"), "rb") as f:
        return json.loads(f.read())


# Pieces of every size around the sink's 128 KiB buffer and curl's 16 KiB.
BIG = bytes((i * 2654435761 >> 13) & 0xFF for i in range(5 * 1024 * 1024 + 12345))
BIG_HEX = hashlib.sha256(BIG).hexdigest()


@pytest.fixture(scope="module")
def big(registry):
    push_artifact(Client(registry.host), "read/big", ["1"], files=[("big.bin", BIG)])
    return "%s/read/big/1/big.bin" % registry.host


def test_version_says_whether_passthrough_is_compiled_in(ocifs_bin):
    lines = version_lines(ocifs_bin)
    fuse = [line for line in lines if line.startswith("libfuse ")][0]
    major, minor = map(int, fuse.split()[1].split(".")[:2])
    pt = [line for line in lines if line.startswith("FUSE passthrough: ")]
    assert len(pt) == 1, lines
    assert pt[0].startswith("FUSE passthrough: compiled in") == ((major, minor) >= (3, 17)), lines


def test_cold_read_is_the_blob_and_the_cache_file(mount_factory, registry, big):
    m = mount_factory(opts=["registry=" + registry.host])
    with open(os.path.join(m.path, big), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == BIG_HEX
    with open(os.path.join(m.cache, "blobs", "sha256", BIG_HEX), "rb") as f:
        assert f.read() == BIG


def test_cached_blob_in_a_new_mount_reads_whole(mount_factory, registry, big, tmp_path):
    cache = tmp_path / "shared-cache"
    m = mount_factory(opts=["registry=" + registry.host], cache=cache)
    with open(os.path.join(m.path, big), "rb") as f:
        f.read()
    m.unmount()
    m2 = mount_factory(opts=["registry=" + registry.host], cache=cache)
    before = registry.mark()
    p = os.path.join(m2.path, big)
    # Reads of every size and offset, and a mapping, see the same bytes.
    with open(p, "rb") as f:
        for off, n in ((0, 1), (131071, 2), (1 << 20, 1 << 20), (len(BIG) - 5, 100)):
            f.seek(off)
            assert f.read(n) == BIG[off:off + n]
        mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        assert hashlib.sha256(mm).hexdigest() == BIG_HEX
        mm.close()
    registry.sync()
    assert registry.count("GET", r".*/blobs/.*", since=before) == 0


def test_concurrent_opens_passthrough_or_daemon(mount_factory, registry, big, ocifs_bin):
    """Opens of one path at once all read the verified bytes. Where
    passthrough is compiled in and usable, the daemon sees none of the
    reads, and the opens share one backing file (the kernel fails a second
    open of an inode with another one); elsewhere (libfuse < 3.17, as on
    Debian bookworm) every byte goes through the daemon and is counted."""
    passthrough = (passthrough_compiled(ocifs_bin) and os.geteuid() == 0
                   and kernel_at_least(6, 9))
    m = mount_factory(opts=["registry=" + registry.host])
    p = os.path.join(m.path, big)
    got = []

    def reader():
        with open(p, "rb") as f:
            got.append(hashlib.sha256(f.read()).hexdigest())

    with open(p, "rb") as held:
        ts = [threading.Thread(target=reader) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert hashlib.sha256(held.read()).hexdigest() == BIG_HEX
    assert got == [BIG_HEX] * 4
    served = stats(m)["bytes_served_from_cache"]
    if passthrough:
        assert served == 0
    else:
        # keep_cache lets the kernel serve later opens from its page
        # cache: at least one full read came through the daemon
        assert served >= len(BIG)
