#!/usr/bin/env python3
"""ocifs benchmark: what -o verify=cosign:KEY costs a cold exec (issue 15).

    bench/signatures.py

A seed-000 provider (one manifest, a binary layer per platform of ~4.4 MB,
titled bin/<os>/<arch>/entrypoint; this machine's a real ELF) is pushed to a
docker-registry started here and signed in cosign's format (tests/fixtures/
cosign.py, ECDSA P-256, under the sha256-<hex>.sig tag; a copy in another
repository as cosign 3 signs by default, a Sigstore bundle attached as an OCI
1.1 referrer, found through the sha256-<hex> tag-schema index since
docker-registry 2.8 lacks the referrers API). Then, side by side, a
cold ``MNT/<host>/<repo>/<tag>/entrypoint --version`` from a fresh mount and
cache, unverified and with -o verify=cosign:KEY:

  * requests and bytes the registry saw (its access log), and which requests
    verification added;
  * time (median of BENCH_RUNS), and the difference in round trips of the
    link;

at loopback and through a proxy that adds BENCH_DELAY_MS of one-way latency
(tests/fixtures/latency.py where it exists, else the small one below).
Target: at most one extra round trip.

Environment:
  BENCH_RUNS      repetitions of each timing (median)   (default 5)
  BENCH_DELAY_MS  one-way latency of the far link        (default 25)
  OCIFS_BIN       the ocifs binary                       (default build/ocifs)

All mounts and processes are cleaned up on exit, also on failure or SIGTERM.
Exits non-zero when something is broken (wrong output, verification refused),
not for a missed target.
"""
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "tests"))

from fixtures.cosign import (Key, Signature, bundle, identity, sign_bundle,  # noqa: E402
                             sign_tag)
from fixtures.mount import MountError, OcifsMount  # noqa: E402
from fixtures.push import Client, push_artifact  # noqa: E402
from fixtures.registry import Registry  # noqa: E402

OCIFS = os.environ.get("OCIFS_BIN", os.path.join(SRC, "build", "ocifs"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
DELAY = float(os.environ.get("BENCH_DELAY_MS", "25")) / 1000.0
REPO = "sourceplane/lite-ci"
REPO_BUNDLE = "sourceplane/lite-ci-bundle"   # the same, signed as cosign 3 does
TAG = "v0.2.0"
ELF_PATH = "/usr/bin/sha256sum"
BIN_SIZES = {("linux", "amd64"): 4400000, ("linux", "arm64"): 4200000,
             ("darwin", "amd64"): 4500000, ("darwin", "arm64"): 4400000}
ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}


class Broken(Exception):
    pass


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)


# ---- a minimal one-way-latency TCP proxy (when fixtures/latency.py is absent) ----

def _serve_delay_proxy(upstream_port, delay):
    """Runs in a child process: forwards 127.0.0.1:<printed port> to the
    upstream, each chunk delivered ``delay`` s after it arrived (in order), and
    a new connection's first bytes no earlier than 1.5 RTT after connect."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    print(ls.getsockname()[1], flush=True)

    def pump(src, dst, first_at):
        import queue
        q = queue.Queue()

        def writer():
            while True:
                due, data = q.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if data is None:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return
        threading.Thread(target=writer, daemon=True).start()
        while True:
            try:
                data = src.recv(256 << 10)
            except OSError:
                data = b""
            q.put((max(time.monotonic() + delay, first_at), data or None))
            if not data:
                return

    while True:
        c, _ = ls.accept()
        u = socket.create_connection(("127.0.0.1", upstream_port))
        first = time.monotonic() + 3 * delay
        threading.Thread(target=pump, args=(c, u, first), daemon=True).start()
        threading.Thread(target=pump, args=(u, c, 0), daemon=True).start()


class DelayProxy:
    def __init__(self, upstream_port, delay):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--proxy",
                                      str(upstream_port), str(delay)],
                                     stdout=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())

    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


def latency_proxy(reg_port, delay):
    try:
        from fixtures.latency import LatencyProxy
        return LatencyProxy("127.0.0.1", reg_port, delay=delay), "tests/fixtures/latency.py"
    except ImportError:
        return DelayProxy(reg_port, delay), "bench/signatures.py's own"


# ---- the benchmark -----------------------------------------------------------

def run(cmd):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)


def main():
    if not (os.path.isfile(OCIFS) and os.access(OCIFS, os.X_OK)):
        raise Broken("%s not found: build first" % OCIFS)
    arch = ARCHES.get(os.uname().machine)
    if not arch:
        raise Broken("no seed-000 platform for %s" % os.uname().machine)
    expected = run([ELF_PATH, "--version"]).stdout
    work = tempfile.mkdtemp(prefix="ocifs-bench-sig.")
    reg = proxy = None
    mounts = []
    try:
        reg = Registry(os.path.join(work, "reg"))
        proxy, proxy_kind = latency_proxy(int(reg.host.rsplit(":", 1)[1]), DELAY)
        c = Client(reg.host)
        with open(ELF_PATH, "rb") as f:
            elf = f.read()
        files = []
        for (o, a), size in BIN_SIZES.items():
            data = elf + os.urandom(size - len(elf)) if (o, a) == ("linux", arch) else \
                os.urandom(size)
            files.append(("bin/%s/%s/entrypoint" % (o, a), data,
                          "application/vnd.sourceplane.bin.%s-%s" % (o, a)))
        p = push_artifact(c, REPO, [TAG], files=files)
        pb = push_artifact(c, REPO_BUNDLE, [TAG], files=files)
        key = Key.generate("ecdsa")
        pub = key.write_pub(os.path.join(work, "cosign.pub"))
        # the identity names the registry as each mount knows it
        sign_tag(c, REPO, p.digest, [Signature.make(key, identity(h, REPO), p.digest)
                                     for h in (reg.host, proxy.host)])
        sign_bundle(c, REPO_BUNDLE, pb, bundle(key, pb.digest))

        def cold(host, verify, repo=REPO):
            name = "m%d" % len(mounts)
            opts = ["registry=" + host, "platform=linux/" + arch]
            if verify:
                opts.append("verify=cosign:" + pub)
            m = OcifsMount(OCIFS, os.path.join(work, "mnt-" + name),
                           os.path.join(work, "cache-" + name), opts=opts, logdir=work)
            mounts.append(m)
            m.mount()
            ep = os.path.join(m.path, host, repo, TAG, "entrypoint")
            mark = reg.mark()
            t0 = time.monotonic()
            r = run([ep, "--version"])
            t = time.monotonic() - t0
            entries = reg.access_log(since=mark)
            if r.returncode != 0 or r.stdout != expected:
                raise Broken("%s --version: exit %d %r\n%s" % (ep, r.returncode, r.stderr,
                                                               m.log_text()))
            m.unmount()
            mounts.remove(m)
            shutil.rmtree(m.cache, ignore_errors=True)
            return t, entries

        print("ocifs signature benchmark: %s/%s:%s, seed-000 shaped (4 binaries, ~4.4 MB), "
              "cold entrypoint --version, median of %d" % (reg.host, REPO, TAG, RUNS))
        print("far link: %.0f ms one way (%.0f ms RTT) through %s proxy"
              % (DELAY * 1000, 2 * DELAY * 1000, proxy_kind))
        print()
        print("%-34s %9s %9s %9s %10s %10s %10s  %s" % (
            "link, signature", "requests", "+verify", "+bytes", "unverified", "verified",
            "extra", "extra RTTs (target <= 1; ok within 0.25 of noise)"))
        rows = []
        for link, host, rtt in (("loopback", reg.host, 0.0),
                                ("%.0f ms RTT" % (2 * DELAY * 1000), proxy.host, 2 * DELAY)):
            tu, eu = [], None
            tv = {"cosign .sig tag": [], "Sigstore bundle": []}
            ev = {}
            for _ in range(RUNS):
                t, eu = cold(host, False)
                tu.append(t)
                t, ev["cosign .sig tag"] = cold(host, True)
                tv["cosign .sig tag"].append(t)
                t, ev["Sigstore bundle"] = cold(host, True, REPO_BUNDLE)
                tv["Sigstore bundle"].append(t)
            mu = statistics.median(tu)
            # what an unverified cold exec asks of each repository (untimed)
            plain = {"cosign .sig tag": eu, "Sigstore bundle": cold(host, False, REPO_BUNDLE)[1]}
            for kind in tv:
                base = {(a.method, a.path) for a in plain[kind]}
                mv = statistics.median(tv[kind])
                extra = mv - mu
                extra_rtt = extra / rtt if rtt else float("nan")
                added = [a for a in ev[kind] if (a.method, a.path) not in base]
                print("%-34s %9d %9d %9d %8.3f s %8.3f s %8.3f s  %s" % (
                    "%s, %s" % (link, kind), len(plain[kind]),
                    len(ev[kind]) - len(plain[kind]),
                    sum(a.size for a in added if a.method == "GET"), mu, mv, extra,
                    ("%.2f  %s" % (extra_rtt, "ok" if extra_rtt <= 1.25 else "MISSED"))
                    if rtt else "-"))
                rows.append(("%s, %s" % (link, kind), added, tu, tv[kind]))
        print()
        for what, added, tu, tvk in rows:
            print("%s: requests verification added: %s" % (what, ", ".join(
                "%s %s %d (%d B)" % (a.method, a.path if len(a.path) < 60 else
                                     a.path[:40] + "..." + a.path[-12:], a.status, a.size)
                for a in added) or "none"))
            print("  unverified runs: %s" % " ".join("%.3f" % t for t in tu))
            print("  verified runs:   %s" % " ".join("%.3f" % t for t in tvk))
    finally:
        for m in mounts:
            try:
                m.unmount(check=False)
            except Exception:
                pass
        if proxy is not None:
            proxy.stop()
        if reg is not None:
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--proxy":
        _serve_delay_proxy(int(sys.argv[2]), float(sys.argv[3]))
        sys.exit(0)
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        main()
    except (Broken, MountError) as e:
        print("signatures: %s" % e, file=sys.stderr)
        sys.exit(1)
