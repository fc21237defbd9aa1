#!/bin/bash
# One `fuzz` meson test: run a libFuzzer target for a bounded time.
#
#   run-fuzz.sh FUZZER SEED_CORPUS WORKDIR SECONDS [libFuzzer options...]
#
# The seed corpus (in the source tree) is only read; inputs that reach new
# coverage are written to WORKDIR/corpus and crashing inputs to
# WORKDIR/artifacts/. OCIFS_FUZZ_SECONDS overrides SECONDS. Exit status:
# 0 when nothing crashed, leaked or timed out, 1 otherwise.
set -euo pipefail

if [ $# -lt 4 ]; then
	echo "usage: $0 FUZZER SEED_CORPUS WORKDIR SECONDS [options]" >&2
	exit 2
fi
fuzzer=$1 seeds=$2 work=$3 seconds=${OCIFS_FUZZ_SECONDS:-$4}
shift 4

mkdir -p "$work/corpus" "$work/artifacts"
cd "$work"
echo "run-fuzz: $(basename "$fuzzer") for ${seconds}s, seeds $seeds"
# -timeout: one input taking this long is a hang (a bug too). libFuzzer's
# own exit code for a crash is 77, which meson counts as a skip: make every
# crash, leak and timeout a plain failure.
exec "$fuzzer" -max_total_time="$seconds" -print_final_stats=1 -timeout=20 \
	-error_exitcode=1 -timeout_exitcode=1 \
	-rss_limit_mb=2048 -artifact_prefix="$work/artifacts/" "$@" \
	"$work/corpus" "$seeds"
