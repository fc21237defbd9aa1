#!/usr/bin/env python3
"""Count the results of one `meson test` run over every suite.

Reads:
  BUILD/meson-logs/testlog.json  one JSON object per line, one per meson test;
                                 every test except `integration` is a unit test
  BUILD/pytest.xml               pytest's --junitxml report, written by
                                 tests/run-integration.sh (the `integration`
                                 meson test); each <testcase> counts once

Prints a short breakdown, then as its LAST line exactly
    N passed, N failed, N skipped
Exit status: 0 when nothing failed and at least one test passed, 1 otherwise.

Usage: summary.py [BUILD_DIR]   (default: build)
"""

import json
import os
import sys
import xml.etree.ElementTree as ET

INTEGRATION = "integration"

# meson's TestResult values
PASS_RESULTS = {"OK", "EXPECTEDFAIL"}
SKIP_RESULTS = {"SKIP"}
# everything else (FAIL, UNEXPECTEDPASS, TIMEOUT, ERROR, INTERRUPT, ...) fails


class Counts:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []  # names of failed tests

    def add(self, other):
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        self.failures += other.failures

    def describe(self):
        return "passed=%d failed=%d skipped=%d" % (
            self.passed, self.failed, self.skipped)


def read_testlog(path):
    """Return (unit Counts, integration entry or None, error string or None)."""
    unit = Counts()
    integration = None
    if not os.path.exists(path):
        return unit, None, "%s not found (did meson test run?)" % path
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                return unit, integration, "%s:%d: not JSON" % (path, lineno)
            name = entry.get("name", "?")
            result = str(entry.get("result", "")).upper()
            if name == INTEGRATION or name.endswith(" / " + INTEGRATION):
                # a later entry (rerun) replaces an earlier one
                integration = entry
                continue
            if result in PASS_RESULTS:
                unit.passed += 1
            elif result in SKIP_RESULTS:
                unit.skipped += 1
            else:
                unit.failed += 1
                unit.failures.append("%s (%s)" % (name, result or "no result"))
    return unit, integration, None


def read_junit(path):
    """Return (Counts, error string or None) from a pytest junit xml file."""
    c = Counts()
    if not os.path.exists(path):
        return c, "%s not found" % path
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        return c, "%s: cannot parse: %s" % (path, e)

    # pytest may emit two <testcase> elements for one test (e.g. a failure in
    # the call and an error in teardown): keep the worst outcome per test.
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    outcome = {}
    order = []
    for tc in root.iter("testcase"):
        key = (tc.get("classname", ""), tc.get("name", ""), tc.get("file", ""))
        if tc.find("failure") is not None or tc.find("error") is not None:
            o = "failed"
        elif tc.find("skipped") is not None:
            o = "skipped"
        else:
            o = "passed"
        if key not in outcome:
            order.append(key)
            outcome[key] = o
        elif rank[o] > rank[outcome[key]]:
            outcome[key] = o
    for key in order:
        o = outcome[key]
        if o == "passed":
            c.passed += 1
        elif o == "skipped":
            c.skipped += 1
        else:
            c.failed += 1
            cls, name, _ = key
            c.failures.append("%s::%s" % (cls, name) if cls else name)

    # errors outside any test (collection errors) appear as <testcase> with
    # an <error>, already counted; a suite-level errors= attribute without
    # testcases would otherwise be lost
    if not order:
        for ts in root.iter("testsuite"):
            n = int(ts.get("errors", "0") or 0)
            if n:
                c.failed += n
                c.failures.append("pytest: %d error(s) outside tests" % n)
    return c, None


def main(argv):
    build = argv[1] if len(argv) > 1 else "build"
    testlog = os.path.join(build, "meson-logs", "testlog.json")
    junit = os.environ.get("OCIFS_JUNIT") or os.path.join(build, "pytest.xml")

    notes = []
    unit, integ, err = read_testlog(testlog)
    if err:
        notes.append(err)

    py, jerr = read_junit(junit)
    integ_result = str(integ.get("result", "")).upper() if integ else None

    if integ is None:
        notes.append("meson test %r did not run" % INTEGRATION)
        if jerr:
            # no integration suite at all: count it as one failure so that a
            # missing suite never passes silently
            py.failed += 1
            py.failures.append("%s (not run)" % INTEGRATION)
    elif integ_result in SKIP_RESULTS:
        notes.append("meson test %r skipped" % INTEGRATION)
        if jerr or (py.passed + py.failed + py.skipped) == 0:
            py.skipped += 1
    elif jerr:
        py.failed += 1
        py.failures.append("%s (%s; %s)" % (INTEGRATION, integ_result, jerr))
    elif integ_result not in PASS_RESULTS and integ_result not in SKIP_RESULTS \
            and py.failed == 0:
        # pytest's report says all passed but the wrapper failed (crash,
        # timeout, non-zero exit after the report): that is a failure too
        py.failed += 1
        py.failures.append("%s (meson: %s)" % (INTEGRATION, integ_result))

    total = Counts()
    total.add(unit)
    total.add(py)

    print("---- test summary ----")
    print("  meson unit tests:     %s" % unit.describe())
    print("  pytest integration:   %s" % py.describe())
    for n in notes:
        print("  note: %s" % n)
    for f in total.failures:
        print("  FAILED %s" % f)
    if total.passed + total.failed == 0:
        print("  note: no test ran")
    print("%d passed, %d failed, %d skipped"
          % (total.passed, total.failed, total.skipped))
    sys.stdout.flush()
    if total.failed or total.passed + total.failed == 0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
