#!/bin/bash
# The `integration` meson test: runs the pytest suite in tests/ against the
# freshly built ocifs and writes pytest's junit report to $BUILD/pytest.xml
# (read by .ci/summary.py).
#
# Environment (meson.build sets both; defaults for a manual run):
#   OCIFS_BIN  path of the built ocifs binary   (default: $BUILD/ocifs)
#   BUILD      the meson build directory        (default: <source>/build)
#   PYTHON     interpreter that has pytest      (default: /usr/bin/python3)
# Extra arguments are passed to pytest (e.g. -k name, -x).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-$SRC/build}"
BUILD="$(cd "$BUILD" && pwd)"
OCIFS_BIN="${OCIFS_BIN:-$BUILD/ocifs}"
case "$OCIFS_BIN" in
/*) ;;
*) OCIFS_BIN="$(pwd)/$OCIFS_BIN" ;;
esac
export BUILD OCIFS_BIN

if [ -z "${PYTHON:-}" ]; then
	# Debian's python3 carries python3-pytest; a pyenv python3 earlier in
	# PATH may not
	if [ -x /usr/bin/python3 ]; then
		PYTHON=/usr/bin/python3
	else
		PYTHON=python3
	fi
fi
export PYTHON

if [ ! -x "$OCIFS_BIN" ]; then
	echo "run-integration: $OCIFS_BIN not found or not executable" >&2
	exit 1
fi

JUNIT="$BUILD/pytest.xml"
rm -f "$JUNIT"

cd "$SRC"
set +e
"$PYTHON" -m pytest tests -q -rfEs -p no:cacheprovider \
	--junitxml="$JUNIT" -o junit_family=xunit2 "$@"
rc=$?
set -e

case "$rc" in
0) exit 0 ;;
5)
	# pytest collected no test: tell meson "skipped", summary.py reports it
	echo "run-integration: pytest collected no tests" >&2
	exit 77
	;;
*) exit "$rc" ;;
esac
