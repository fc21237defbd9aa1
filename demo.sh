#!/bin/bash
# ocifs demo: install what is needed, build, start a local registry, push a few
# artifacts, mount ocifs and look around.  The mount stays up afterwards.
#
#   ./demo.sh          set up (or set up again) and show the demo
#   ./demo.sh stop     unmount, stop the registry, remove the demo directory
#   ./demo.sh status   show what is running
#
# Run as root on Debian bookworm (or as a user with sudo for apt-get). It
# installs what ocifs and its test suite need (`meson test -C build` then runs
# with nothing skipped). The demo lives in a fresh private directory made with
# mktemp -d (or $OCIFS_DEMO_DIR, which must not exist yet); build/demo-state
# remembers it for `stop` and `status`.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="$SRC/build"
OCIFS="$BUILD/ocifs"
STATE_FILE="$BUILD/demo-state"
STATE=""

# Build, run, and test (.ci/run adds the sanitizer and fuzzing tools).
PACKAGES=(
	meson ninja-build pkg-config gcc
	libfuse3-dev fuse3
	libcurl4-openssl-dev libjansson-dev libssl-dev libarchive-dev
	docker-registry
	python3 python3-pytest
	apache2-utils openssl python3-jwt python3-cryptography
	curl attr groff-base man-db skopeo rsync oci-image-tool
	ca-certificates util-linux procps
)

if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo.sh: $*" >&2; exit 1; }

# show CMD...: print the command as typed, run it, never stop the demo on error
show() {
	printf '\n\033[36m$ %s\033[0m\n' "$*"
	local rc=0
	(cd "$MNT/$HOST" && eval "$*") || rc=$?
	if [ "$rc" -ne 0 ]; then
		printf '\033[33m(exit status %d)\033[0m\n' "$rc"
	fi
	return 0
}

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "need root to run: $*"
	fi
}

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
			missing+=("$p")
		fi
	done
	if [ "${#missing[@]}" -eq 0 ]; then
		say "Debian packages: all present"
		return
	fi
	say "Installing Debian packages: ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	as_root env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() {
	say "Building ocifs (meson + ninja)"
	if [ ! -f "$BUILD/build.ninja" ]; then
		meson setup "$BUILD" "$SRC"
	fi
	meson compile -C "$BUILD"
	[ -x "$OCIFS" ] || die "$OCIFS was not built"
}

is_our_registry() { # pid
	[ -n "$1" ] && [ -r "/proc/$1/cmdline" ] &&
		tr '\0' ' ' <"/proc/$1/cmdline" | grep -q "docker-registry serve $STATE/"
}

# also true for a dead mount whose daemon is gone (mountpoint(1) says no there)
is_mounted() {
	awk -v m="$MNT" '$2 == m { found = 1 } END { exit !found }' /proc/self/mounts
}

# The demo directory of the last run, if it is still ours: a real
# directory (not a symlink) owned by us and private.
load_state() {
	local d
	STATE=""
	[ -f "$STATE_FILE" ] || return 1
	d="$(cat "$STATE_FILE")"
	if [ -n "$d" ] && [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ]; then
		STATE="$d"
		MNT="$STATE/mnt"
		CACHE="$STATE/cache"
		return 0
	fi
	rm -f "$STATE_FILE"
	return 1
}

new_state() {
	if [ -n "${OCIFS_DEMO_DIR:-}" ]; then
		# mkdir without -p: fails if it exists (someone else's, a symlink)
		mkdir -m 0700 "$OCIFS_DEMO_DIR" || die "OCIFS_DEMO_DIR=$OCIFS_DEMO_DIR must not exist yet"
		STATE="$(cd "$OCIFS_DEMO_DIR" && pwd)"
	else
		STATE="$(mktemp -d "${TMPDIR:-/tmp}/ocifs-demo.XXXXXXXX")"
	fi
	MNT="$STATE/mnt"
	CACHE="$STATE/cache"
	mkdir "$MNT" "$CACHE"
	echo "$STATE" >"$STATE_FILE"
}

stop() {
	local pid
	load_state || return 0
	if is_mounted; then
		echo "unmounting $MNT"
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null ||
			umount -l "$MNT" 2>/dev/null || true
	fi
	if [ -f "$STATE/ocifs.pid" ]; then
		pid="$(cat "$STATE/ocifs.pid")"
		# the daemon exits on unmount; give it a moment, then insist
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null &&
			tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$MNT"; then
			kill "$pid" 2>/dev/null || true
		fi
	fi
	if [ -f "$STATE/registry.pid" ]; then
		pid="$(cat "$STATE/registry.pid")"
		if is_our_registry "$pid"; then
			echo "stopping docker-registry (pid $pid)"
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 50); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -9 "$pid" 2>/dev/null || true
		fi
	fi
	if [ -d "$STATE" ]; then
		if is_mounted; then
			die "$MNT is still mounted; not removing $STATE"
		fi
		rm -rf "$STATE"
	fi
	rm -f "$STATE_FILE"
}

status() {
	if ! load_state; then
		echo "demo not running"
		return 0
	fi
	echo "state:    $STATE"
	[ -f "$STATE/host" ] && echo "registry: $(cat "$STATE/host") (pid $(cat "$STATE/registry.pid" 2>/dev/null || echo ?))"
	if is_mounted; then echo "mount:    $MNT (mounted)"; else echo "mount:    $MNT (not mounted)"; fi
}

free_port() {
	"$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_registry() {
	local port
	port="$(free_port)"
	HOST="127.0.0.1:$port"
	mkdir "$STATE/registry-data"
	cat >"$STATE/registry.yml" <<-EOF
		version: 0.1
		log:
		  level: warn
		  accesslog:
		    disabled: false
		storage:
		  filesystem:
		    rootdirectory: $STATE/registry-data
		  delete:
		    enabled: true
		http:
		  addr: $HOST
		  secret: ocifs-demo-not-secret
	EOF
	say "Starting docker-registry on $HOST"
	# setsid: the registry outlives this script and the terminal
	setsid docker-registry serve "$STATE/registry.yml" \
		</dev/null >"$STATE/registry.log" 2>&1 &
	echo $! >"$STATE/registry.pid"
	echo "$HOST" >"$STATE/host"
	local deadline=$((SECONDS + 20))
	until curl -sf -o /dev/null "http://$HOST/v2/"; do
		if ! kill -0 "$(cat "$STATE/registry.pid")" 2>/dev/null; then
			cat "$STATE/registry.log" >&2
			die "docker-registry exited"
		fi
		[ "$SECONDS" -lt "$deadline" ] || die "docker-registry did not answer on $HOST"
		sleep 0.1
	done
	echo "registry up: http://$HOST/v2/ (log: $STATE/registry.log)"
}

push_demo() {
	say "Pushing demo artifacts"
	[ -f "$SRC/tests/fixtures/push.py" ] || die "tests/fixtures/push.py not found"
	"$PYTHON" "$SRC/tests/fixtures/push.py" demo "$HOST"
	# seed 000: a provider with one binary layer per platform (~4.4 MB each)
	"$PYTHON" "$SRC/tests/fixtures/push.py" provider "$HOST" sourceplane/lite-ci:v0.2.0
}

mount_ocifs() {
	say "Mounting ocifs on $MNT"
	printf '\033[36m$ %s\033[0m\n' "build/ocifs -o registry=$HOST -o cache=$CACHE $MNT"
	"$OCIFS" -o "registry=$HOST" -o "cache=$CACHE" "$MNT" 2>"$STATE/ocifs.log" ||
		{ cat "$STATE/ocifs.log" >&2; die "ocifs failed to mount"; }
	local deadline=$((SECONDS + 20))
	until mountpoint -q "$MNT"; do
		[ "$SECONDS" -lt "$deadline" ] || die "$MNT did not become a mount point"
		sleep 0.1
	done
	# remember the daemon (it detached itself) so that `stop` can find it
	local pid
	for pid in $(pgrep -x ocifs 2>/dev/null || true); do
		if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$MNT"; then
			echo "$pid" >"$STATE/ocifs.pid"
		fi
	done
}

tour() {
	local T="demo/hello/1.0"
	say "Looking around (commands run in $MNT/$HOST)"
	printf '\033[36m$ ls %s\033[0m\n' "$MNT"
	ls "$MNT" || true
	show "ls"
	show "ls demo acme/tools"
	show "ls demo/hello"
	show "ls -l $T"
	show "cat $T/hello.txt"
	show "cat $T/README.md"
	show "cat $T/manifest.json | $PYTHON -m json.tool"
	show "cat $T/config.json"
	show "sha256sum $T/*"
	show "ls -lR acme/tools/cli/v1"
	show "sh acme/tools/cli/v1/bin/tool"
	show "ls -l demo/docker-style/latest"
	local P="sourceplane/lite-ci/v0.2.0"
	say "A provider built for four platforms (shared/seeds/000): only this machine's binary is there"
	show "ls -l $P"
	show "ls -lR $P/bin $P/assets"
	show "$P/entrypoint"
	say "Installing it is a copy: this platform's bytes only"
	show "cp -r $P $STATE/lite && ls $STATE/lite && $STATE/lite/entrypoint"
	say "The other platforms' layers were never downloaded"
	show "grep -E '\"(blob_requests|bytes_fetched|bytes_saved_by_platform)\"' $MNT/.ocifs/stats"
	say "Every platform is in the OCI image layout view, fetched only when read"
	show "ls $MNT/.ocifs/layout/$HOST/$P $MNT/.ocifs/layout/$HOST/$P/blobs/sha256"
	show "cd $MNT/.ocifs/layout/$HOST/$P && skopeo --insecure-policy inspect --raw oci:. | sha256sum && getfattr --absolute-names --only-values -n user.oci.digest $MNT/$HOST/$P; echo"
	say "Every blob read so far was fetched once, verified and cached by digest"
	show "ls $CACHE/blobs/sha256"
	say "The mount is read-only"
	show "touch $T/new-file"
}

start() {
	install_packages
	build
	if load_state; then
		say "Stopping the previous demo"
		stop
	fi
	new_state
	start_registry
	push_demo
	mount_ocifs
	tour
	say "The demo is still running"
	cat <<-EOF
		  mount:     $MNT   (try: ls $MNT/$HOST/demo/hello/1.0)
		  registry:  http://$HOST   (pid $(cat "$STATE/registry.pid"), log $STATE/registry.log)
		  cache:     $CACHE

		Stop everything with:   ./demo.sh stop
		(or by hand: fusermount3 -u $MNT; kill $(cat "$STATE/registry.pid"); rm -rf $STATE)
	EOF
}

case "${1:-start}" in
start) start ;;
stop) stop; echo "demo stopped" ;;
status) status ;;
-h | --help | help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' ;;
*) die "unknown command '$1' (use: start, stop, status)" ;;
esac
