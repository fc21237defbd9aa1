#!/usr/bin/env python3
"""Count the results of one or more `meson test` runs over every suite.

Each RUN names a meson build directory and what ran in it:

  BUILD_DIR[:LOG][=SUITE,SUITE...]

  BUILD_DIR/meson-logs/testlog.json   one JSON object per line, one per meson
      (testlog-LOG.json with :LOG,   test; the suite is read from the test's
      as written by `meson test      name ("ocifs:unit / ref"); every test
      --setup LOG` or --wrap=LOG)    but `integration` counts once
  BUILD_DIR/pytest.xml               pytest's --junitxml report, written by
                                     tests/run-integration.sh (the
                                     `integration` meson test); each
                                     <testcase> counts once

SUITEs are the suites that run must have run (default: unit,integration);
a run whose testlog is missing, or that ran none of an expected suite's
tests, counts as a failure, so that a step that never ran cannot pass.
`integration` is read from pytest.xml whenever it is expected or ran.
For fuzz tests the libFuzzer statistics (executions) are shown.

Examples:
  summary.py build                        one build: unit + integration
  summary.py build build-asan build:valgrind=unit build-fuzz=fuzz

Prints a short breakdown, then as its LAST line exactly
    N passed, N failed, N skipped
summed over every run. Exit status: 0 when nothing failed and at least one
test passed, 1 otherwise. $OCIFS_JUNIT overrides the first run's pytest.xml.

Usage: summary.py [RUN ...]   (default: build)
"""

import json
import os
import re
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


def suite_of(name):
    """"ocifs:unit / ref" -> "unit"; a bare name counts as a unit test."""
    head = name.split(" / ", 1)[0] if " / " in name else ""
    return head.rsplit(":", 1)[-1] if head else "unit"


FUZZ_STAT = re.compile(r"stat::number_of_executed_units:\s*(\d+)")


def read_testlog(path):
    """Return ({suite: Counts} without integration, integration entry or None,
    {fuzz test name: executions}, error string or None)."""
    suites = {}
    integration = None
    fuzz_execs = {}
    if not os.path.exists(path):
        return suites, None, fuzz_execs, "%s not found (did meson test run?)" % path
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                return suites, integration, fuzz_execs, "%s:%d: not JSON" % (path, lineno)
            name = entry.get("name", "?")
            result = str(entry.get("result", "")).upper()
            if name == INTEGRATION or name.endswith(" / " + INTEGRATION):
                # a later entry (rerun) replaces an earlier one
                integration = entry
                continue
            suite = suite_of(name)
            c = suites.setdefault(suite, Counts())
            if result in PASS_RESULTS:
                c.passed += 1
            elif result in SKIP_RESULTS:
                c.skipped += 1
            else:
                c.failed += 1
                c.failures.append("%s (%s)" % (name, result or "no result"))
            if suite == "fuzz":
                out = (entry.get("stdout") or "") + (entry.get("stderr") or "")
                m = FUZZ_STAT.findall(out)
                if m:
                    fuzz_execs[name] = int(m[-1])
    return suites, integration, fuzz_execs, None


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


def integration_counts(integ, junit, expected, notes, label):
    """Counts of the pytest suite of one run, from its meson entry and junit."""
    py, jerr = read_junit(junit)
    integ_result = str(integ.get("result", "")).upper() if integ else None

    if integ is None:
        if not expected:
            return None
        notes.append("%s: meson test %r did not run" % (label, INTEGRATION))
        if jerr:
            # no integration suite at all: count it as one failure so that a
            # missing suite never passes silently
            py.failed += 1
            py.failures.append("%s: %s (not run)" % (label, INTEGRATION))
    elif integ_result in SKIP_RESULTS:
        notes.append("%s: meson test %r skipped" % (label, INTEGRATION))
        if jerr or (py.passed + py.failed + py.skipped) == 0:
            py.skipped += 1
    elif jerr:
        py.failed += 1
        py.failures.append("%s: %s (%s; %s)" % (label, INTEGRATION, integ_result, jerr))
    elif integ_result not in PASS_RESULTS and integ_result not in SKIP_RESULTS \
            and py.failed == 0:
        # pytest's report says all passed but the wrapper failed (crash,
        # timeout, non-zero exit after the report): that is a failure too
        py.failed += 1
        py.failures.append("%s: %s (meson: %s)" % (label, INTEGRATION, integ_result))
    if label:
        py.failures = [f if f.startswith(label + ":") else "%s: %s" % (label, f)
                       for f in py.failures]
    return py


def parse_run(spec):
    """"DIR[:LOG][=SUITE,...]" -> (label, dir, testlog path, expected suites)."""
    suites = ["unit", INTEGRATION]
    if "=" in spec:
        spec, s = spec.split("=", 1)
        suites = [x for x in s.split(",") if x]
    build, log = spec, None
    if ":" in spec:
        build, log = spec.rsplit(":", 1)
    name = "testlog-%s.json" % log if log else "testlog.json"
    label = "%s:%s" % (build, log) if log else build
    return label, build, os.path.join(build, "meson-logs", name), suites


def main(argv):
    runs = argv[1:] or ["build"]
    total = Counts()
    notes = []
    lines = []
    fuzz_lines = []

    for i, spec in enumerate(runs):
        label, build, testlog, expected = parse_run(spec)
        suites, integ, fuzz_execs, err = read_testlog(testlog)
        if err:
            notes.append(err)
            c = Counts()
            c.failed += 1
            c.failures.append("%s: no test results (%s)" % (label, err))
            total.add(c)
            lines.append("  %-22s %s" % (label, "not run"))
            continue
        for suite in expected:
            if suite == INTEGRATION:
                continue
            c = suites.get(suite)
            if c is None or c.passed + c.failed + c.skipped == 0:
                c = suites.setdefault(suite, Counts())
                c.failed += 1
                c.failures.append("suite %r did not run" % suite)
        for suite in sorted(suites):
            c = suites[suite]
            c.failures = ["%s: %s" % (label, f) for f in c.failures]
            lines.append("  %-22s %-12s %s" % (label, "meson " + suite, c.describe()))
            total.add(c)
        junit = os.path.join(build, "pytest.xml")
        if i == 0 and os.environ.get("OCIFS_JUNIT"):
            junit = os.environ["OCIFS_JUNIT"]
        py = integration_counts(integ, junit, INTEGRATION in expected, notes, label)
        if py is not None:
            lines.append("  %-22s %-12s %s" % (label, "pytest", py.describe()))
            total.add(py)
        for name in sorted(fuzz_execs):
            fuzz_lines.append("  %-22s %s: %d executions" % (label, name, fuzz_execs[name]))

    print("---- test summary ----")
    for line in lines + fuzz_lines:
        print(line)
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
