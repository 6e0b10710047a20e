import os
import sys

# helpers.py is shared by tests/unit and tests/e2e.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_runtest_logreport(report):
    """Records each skipped test in $PROFWATCH_SKIP_LOG (``reason<TAB>test``), the file that
    scripts/test.sh tallies, so that a skip is counted like the Rust tests' skips."""
    path = os.environ.get("PROFWATCH_SKIP_LOG")
    if not path or not report.skipped:
        return
    if getattr(report, "wasxfail", None) is not None:  # an expected failure: its reason, not its traceback
        reason = "expected failure: %s" % (report.wasxfail or "no reason given")
    else:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.replace("Skipped: ", "", 1)
    reason = " ".join(reason.split())[:300]  # one line of the tally
    with open(path, "a", encoding="utf-8") as f:
        f.write("python: %s\t%s\n" % (reason, report.nodeid))
