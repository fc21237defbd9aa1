#!/bin/bash
# ocifs benchmark: reads of one big blob, cold (fresh cache), cached (new
# mount, blob in the cache) and warm (same mount again), side by side with
# curl and with a native read of the cached file; the daemon's peak RSS
# while a 1 GiB blob streams cold; and the registry requests made by `ls -l`
# of a tag directory.
#
#   bench/cold_warm.sh
#
# Environment:
#   BENCH_MIB    size of the blob in MiB            (default 256)
#   BENCH_RUNS   repetitions of each timing (median) (default 3)
#   BENCH_WARM_PASSES  reads averaged in one warm timing (default 5)
#   BENCH_RSS_MIB  size of the blob streamed for the RSS figure, 0 to skip
#                (default 1024)
#   OCIFS_BIN    the ocifs binary                    (default build/ocifs)
#   BENCH_KEEP=1 keep the work directory for inspection
#
# Everything runs on loopback: a docker-registry started here on a free port
# with its own storage, ocifs mounted with `-f` on temporary mount points with
# fresh caches.  All mounts and processes are cleaned up on exit.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OCIFS="${OCIFS_BIN:-$SRC/build/ocifs}"
MIB="${BENCH_MIB:-256}"
RUNS="${BENCH_RUNS:-3}"
RSS_MIB="${BENCH_RSS_MIB:-1024}"
WARM_PASSES="${BENCH_WARM_PASSES:-5}"
REPO="bench/blob"
TAG="v1"
TITLE="blob.bin"

if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi

die() { echo "cold_warm: $*" >&2; exit 1; }

[ -x "$OCIFS" ] || die "$OCIFS not found: build first (meson setup build && meson compile -C build)"
for t in docker-registry curl fusermount3 mountpoint sha256sum; do
	command -v "$t" >/dev/null || die "$t not found (see README: ./demo.sh installs the packages)"
done
case "$MIB" in '' | *[!0-9]*) die "BENCH_MIB must be a number of MiB" ;; esac
case "$RSS_MIB" in '' | *[!0-9]*) die "BENCH_RSS_MIB must be a number of MiB" ;; esac
case "$RUNS" in '' | *[!0-9]* | 0) die "BENCH_RUNS must be a positive number" ;; esac
case "$WARM_PASSES" in '' | *[!0-9]* | 0) die "BENCH_WARM_PASSES must be a positive number" ;; esac

WORK="$(mktemp -d /tmp/ocifs-bench.XXXXXX)"
REG_PID=""
MOUNTS=()   # mount points we made
OCIFS_PIDS=()

cleanup() {
	local m p
	set +e
	for m in "${MOUNTS[@]}"; do
		if awk -v m="$m" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; then
			fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
		fi
	done
	for p in "${OCIFS_PIDS[@]}"; do
		for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	if [ -n "$REG_PID" ]; then
		kill "$REG_PID" 2>/dev/null
		wait "$REG_PID" 2>/dev/null
	fi
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		echo "kept $WORK" >&2
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# elapsed START END -> seconds (float)
elapsed() { "$PYTHON" -c 'import sys; print("%.6f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# time_cmd CMD... -> seconds on stdout, command output discarded
time_cmd() {
	local t0 t1
	t0=$EPOCHREALTIME
	"$@" >/dev/null
	t1=$EPOCHREALTIME
	elapsed "$t0" "$t1"
}
# time_passes N CMD... -> mean seconds of N runs of CMD (for short warm reads)
time_passes() {
	local n=$1 t0 t1 k
	shift
	t0=$EPOCHREALTIME
	for ((k = 0; k < n; k++)); do "$@" >/dev/null; done
	t1=$EPOCHREALTIME
	"$PYTHON" -c 'import sys; print("%.6f" % ((float(sys.argv[2]) - float(sys.argv[1])) / int(sys.argv[3])))' "$t0" "$t1" "$n"
}

# ---- registry --------------------------------------------------------------

PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
HOST="127.0.0.1:$PORT"
mkdir -p "$WORK/registry-data"
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $WORK/registry-data
http:
  addr: $HOST
  secret: ocifs-bench-not-secret
EOF
docker-registry serve "$WORK/registry.yml" </dev/null >"$WORK/registry.log" 2>&1 &
REG_PID=$!
deadline=$((SECONDS + 20))
until curl -sf -o /dev/null "http://$HOST/v2/"; do
	kill -0 "$REG_PID" 2>/dev/null || { cat "$WORK/registry.log" >&2; die "docker-registry exited"; }
	[ "$SECONDS" -lt "$deadline" ] || die "docker-registry did not answer on $HOST"
	sleep 0.1
done

# ---- the artifact -----------------------------------------------------------

echo "generating a ${MIB} MiB random blob..." >&2
head -c "$((MIB * 1024 * 1024))" /dev/urandom >"$WORK/$TITLE"
HEX="$(sha256sum "$WORK/$TITLE" | cut -d' ' -f1)"
SIZE="$(stat -c %s "$WORK/$TITLE")"
echo "pushing it to $HOST/$REPO:$TAG..." >&2
"$PYTHON" "$SRC/tests/fixtures/push.py" artifact "$HOST" "$REPO:$TAG" \
	"$TITLE=$WORK/$TITLE" --artifact-type application/vnd.ocifs.bench.v1 >/dev/null
rm -f "$WORK/$TITLE"
BLOB_URL="http://$HOST/v2/$REPO/blobs/sha256:$HEX"
curl -sf -o /dev/null "$BLOB_URL" || die "blob not served at $BLOB_URL"
if [ "$RSS_MIB" -gt 0 ]; then
	echo "generating and pushing a ${RSS_MIB} MiB blob for the RSS figure..." >&2
	head -c "$((RSS_MIB * 1024 * 1024))" /dev/urandom >"$WORK/$TITLE"
	"$PYTHON" "$SRC/tests/fixtures/push.py" artifact "$HOST" "$REPO:big" \
		"$TITLE=$WORK/$TITLE" --artifact-type application/vnd.ocifs.bench.v1 >/dev/null
	rm -f "$WORK/$TITLE"
fi

# ---- mounts -----------------------------------------------------------------

N_MOUNT=0
# fresh_mount [CACHE] -> sets MNT to a new mount point, OCIFS_PID to its
# daemon, and CACHE to a new empty cache (or to the one given)
fresh_mount() {
	N_MOUNT=$((N_MOUNT + 1))
	MNT="$WORK/mnt$N_MOUNT"
	CACHE="${1:-$WORK/cache$N_MOUNT}"
	mkdir -p "$MNT" "$CACHE"
	MOUNTS+=("$MNT")
	"$OCIFS" -f -o "cache=$CACHE" "$MNT" 2>"$WORK/ocifs$N_MOUNT.log" &
	OCIFS_PIDS+=("$!")
	OCIFS_PID=$!
	local pid=$! deadline=$((SECONDS + 20))
	until mountpoint -q "$MNT"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			cat "$WORK/ocifs$N_MOUNT.log" >&2
			die "ocifs exited before mounting $MNT"
		fi
		[ "$SECONDS" -lt "$deadline" ] || die "$MNT not mounted after 20 s"
		sleep 0.05
	done
}
unmount() {
	fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true
}

# access-log lines for /v2/ requests (the registry writes one per request)
log_requests() { grep -E '"(GET|HEAD|POST|PUT|PATCH|DELETE) /v2/' "$WORK/registry.log" || true; }
log_count() { log_requests | wc -l; }
# requests_during CMD...: run CMD, print "count<TAB>request lines"
requests_during() {
	local before after
	sleep 0.3 # let the registry flush earlier lines
	before="$(log_count)"
	"$@" >/dev/null 2>&1 || true
	sleep 0.5
	after="$(log_count)"
	REQ_N=$((after - before))
	REQ_LINES="$(log_requests | tail -n +"$((before + 1))" | sed -E 's/.*"((GET|HEAD|POST|PUT|PATCH|DELETE) [^ ]*) HTTP[^"]*" ([0-9]+).*/\1 -> \3/')"
}

ART="$REPO/$TAG"

# ---- cold, cached, warm: ocifs cat vs curl and native cat ----------------------

# hwm PID -> the process's peak resident set in KiB (VmHWM)
hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
curl_sha() { curl -s "$BLOB_URL" | sha256sum; }

echo "measuring ($RUNS runs each)..." >&2
curl -s -o /dev/null "$BLOB_URL" # warm the registry's own page cache for all
cold=() curls=() curlfile=() curlsha=() cached=() cachednat=() warm=() native=()
for _ in $(seq "$RUNS"); do
	curls+=("$(time_cmd curl -s -o /dev/null "$BLOB_URL")")
	curlfile+=("$(time_cmd curl -s -o "$WORK/curl.out" "$BLOB_URL")")
	rm -f "$WORK/curl.out"
	curlsha+=("$(time_cmd curl_sha)")

	# cold: fresh mount, empty cache
	fresh_mount
	F="$MNT/$HOST/$ART/$TITLE"
	cold+=("$(time_cmd cat "$F")")
	# warm: same mount, second read (kernel page cache kept); a warm read
	# takes tens of ms, so each figure is the mean of WARM_PASSES reads
	warm+=("$(time_passes "$WARM_PASSES" cat "$F")")
	CACHED="$CACHE/blobs/sha256/$HEX"
	[ -f "$CACHED" ] || die "cached file $CACHED not found after reading $F"
	cat "$CACHED" >/dev/null # native read, page cache warm like the warm cat
	native+=("$(time_passes "$WARM_PASSES" cat "$CACHED")")
	got="$(sha256sum <"$F" | cut -d' ' -f1)"
	[ "$got" = "$HEX" ] || die "read through ocifs: sha256 $got, expected $HEX"
	unmount

	# cached: a new mount over the same cache; the first cat goes through
	# the daemon (no kernel page cache for the new mount), the cache file is
	# in the page cache like for the native cat it is compared with
	fresh_mount "$CACHE"
	F="$MNT/$HOST/$ART/$TITLE"
	stat "$F" >/dev/null # the manifest, not part of the read
	cat "$CACHED" >/dev/null
	cached+=("$(time_cmd cat "$F")")
	cachednat+=("$(time_cmd cat "$CACHED")")
	unmount
	rm -rf "$CACHE" # keep the disk use to one copy
done
T_COLD="$(median "${cold[@]}")"
T_CURL="$(median "${curls[@]}")"
T_CURLFILE="$(median "${curlfile[@]}")"
T_CURLSHA="$(median "${curlsha[@]}")"
T_CACHED="$(median "${cached[@]}")"
T_CACHEDNAT="$(median "${cachednat[@]}")"
T_WARM="$(median "${warm[@]}")"
T_NATIVE="$(median "${native[@]}")"

# ---- memory: the daemon's peak RSS while a big blob streams cold ------------------

RSS_KIB=0 RSS_BASE_KIB=0
if [ "$RSS_MIB" -gt 0 ]; then
	echo "streaming the ${RSS_MIB} MiB blob cold for the RSS figure..." >&2
	fresh_mount
	stat "$MNT/$HOST/$REPO/big/$TITLE" >/dev/null
	RSS_BASE_KIB="$(hwm "$OCIFS_PID")"
	cat "$MNT/$HOST/$REPO/big/$TITLE" >/dev/null
	RSS_KIB="$(hwm "$OCIFS_PID")"
	unmount
	rm -rf "$CACHE"
fi

# ---- ls -l: registry requests, cold and warm -----------------------------------

fresh_mount
requests_during ls -l "$MNT/$HOST/$ART/"
COLD_LS_N=$REQ_N COLD_LS_LINES=$REQ_LINES
requests_during ls -l "$MNT/$HOST/$ART/"
WARM_LS_N=$REQ_N WARM_LS_LINES=$REQ_LINES
# the tag directory alone, once its parents were looked up: fresh mount again,
# walk the parents first, then count
unmount
fresh_mount
ls "$MNT/$HOST/$REPO" >/dev/null 2>&1 || true
requests_during ls -l "$MNT/$HOST/$ART/"
TAG_LS_N=$REQ_N TAG_LS_LINES=$REQ_LINES
unmount

# ---- report ---------------------------------------------------------------------

# what the read path was: libfuse, passthrough compiled in or not, kernel
SETUP="$("$OCIFS" --version | grep -E '^(libfuse|FUSE passthrough)' | paste -sd ';' -); kernel $(uname -r)"
[ "$(id -u)" = 0 ] || SETUP="$SETUP; not root (no passthrough)"

"$PYTHON" - "$SIZE" "$RUNS" "$HOST/$ART/$TITLE" "$WARM_PASSES" "$SETUP" \
	"$T_COLD" "$T_CURL" "$T_CURLFILE" "$T_CURLSHA" "$T_CACHED" "$T_CACHEDNAT" "$T_WARM" "$T_NATIVE" \
	"$RSS_MIB" "$RSS_KIB" "$RSS_BASE_KIB" "$COLD_LS_N" "$WARM_LS_N" "$TAG_LS_N" <<'PY'
import sys
size, runs = int(sys.argv[1]), int(sys.argv[2])
path, passes, setup = sys.argv[3], int(sys.argv[4]), sys.argv[5]
cold, curl, curlfile, curlsha, cached, cachednat, warm, native = map(float, sys.argv[6:14])
rss_mib, rss_kib, rss_base_kib = map(int, sys.argv[14:17])
cold_ls, warm_ls, tag_ls = map(int, sys.argv[17:20])
mib = size / (1 << 20)

def rate(t):
    return mib / t if t > 0 else float("inf")

def ratio(a, b):
    return a / b if b > 0 else float("inf")

def ok(b):
    return "ok" if b else "MISSED"

def row(what, t_ocifs, t_ref, r, target, verdict, note=""):
    print("%-40s %9.3f s %9.3f s %8.2fx %10s  %-6s %s" % (what, t_ocifs, t_ref, r, target,
                                                         verdict, note))

print()
print("ocifs big-blob benchmark: %s (%.0f MiB), median of %d runs"
      "; warm figures average %d reads" % (path, mib, runs, passes))
print(setup)
print()
print("%-40s %11s %11s %9s %10s" % ("", "ocifs", "reference", "ratio", "target"))
r = ratio(cold, curlfile)
row("cold cat  vs  curl -o FILE", cold, curlfile, r, "<= 1.30x", ok(r <= 1.3), "(time)")
r = ratio(cold, curlsha)
row("cold cat  vs  curl | sha256sum", cold, curlsha, r, "-", "", "(time)")
r = ratio(cold, curl)
row("cold cat  vs  curl -o /dev/null", cold, curl, r, "-", "", "(time, unverified, no disk)")
r = ratio(rate(cached), rate(cachednat))
row("cached cat, new mount  vs  native cat", cached, cachednat, r, ">= 0.70x", ok(r >= 0.7),
    "(speed: %.0f vs %.0f MiB/s)" % (rate(cached), rate(cachednat)))
r = ratio(rate(warm), rate(native))
row("warm cat  vs  native cat", warm, native, r, ">= 0.90x", ok(r >= 0.9),
    "(speed: %.0f vs %.0f MiB/s)" % (rate(warm), rate(native)))
if rss_mib:
    print("%-40s %9.1f MiB %21s %10s  %-6s (%d MiB blob; %.1f MiB before the read)" % (
        "daemon peak RSS, cold cat", rss_kib / 1024, "", "<= 32 MiB", ok(rss_kib <= 32 << 10),
        rss_mib, rss_base_kib / 1024))
print()
print("%-40s %11s %11s" % ("registry requests by ls -l", "requests", "target"))
print("%-40s %11d %11d  %s" % ("cold (fresh mount and cache)", cold_ls, 1, ok(cold_ls <= 1)))
print("%-40s %11d %11d  %s" % ("  tag dir only (parents looked up)", tag_ls, 1, ok(tag_ls <= 1)))
print("%-40s %11d %11d  %s" % ("warm (repeat, same mount)", warm_ls, 0, ok(warm_ls == 0)))
PY
echo
echo "requests seen by the registry:"
echo "  cold ls -l:"; printf '%s\n' "${COLD_LS_LINES:-(none)}" | sed 's/^/    /'
echo "  tag dir only:"; printf '%s\n' "${TAG_LS_LINES:-(none)}" | sed 's/^/    /'
echo "  warm ls -l:"; printf '%s\n' "${WARM_LS_LINES:-(none)}" | sed 's/^/    /'
