"""The one check and report API of the Python test suites (stdlib only, nothing read from
the command line at import).

    from harness import check, poll, report, section
    check("vdi-001 -> file server ping passes", ok, detail)   # name, condition, detail
    ...
    sys.exit(report())    # prints the failed checks and "N passed, N failed"; exit code

Every check prints one line, `PASS name` or `FAIL name: detail` (detail only on failure; a
non-string detail is rendered as JSON). `section(name)` groups the checks that follow (a
scenario, a phase; `check(..., section=...)` counts one elsewhere); `report()` then lists
each section's counts before the totals. A
suite's last line is always "N passed, N failed" (CI and ctest logs read that line).

`bug=ID` on a check names a reported, not yet fixed bug the check exposes: when the suite
was started with that id among `known_bugs` (e.g. a --known-bug flag), its failure is listed
as XFAIL and does not fail the run.

`figure(name, value)` records a measured value printed with the summary (durations,
counts): figures are not checks.

`poll(predicate, seconds, what)` waits for a truthy value with a deadline; with `what` a
timeout is itself a failed check "within Ns: what".
"""
import json
import subprocess
import sys
import time

RESULTS = {"passed": 0, "failed": 0}
FAILURES = []         # names (and first detail line) of the failed checks, for the summary
XFAILS = []           # failed checks of known bugs
FIGURES = []          # (section, name, value)
SECTIONS = {}         # section -> {"passed": n, "failed": n}
known_bugs = set()
_current = [None]


def log(msg=""):
    print(msg, flush=True)


def _text(detail, limit=1500):
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def section(name):
    """The checks that follow belong to `name` (reported per section by report())."""
    _current[0] = name
    SECTIONS.setdefault(name, {"passed": 0, "failed": 0})
    log("--- %s" % name)


def current_section():
    return _current[0]


def check(name, condition, detail="", quiet=False, bug=None, section=None):
    """Records one check; returns bool(condition). quiet: print the line only on failure;
    section: count it for that section instead of the current one."""
    ok = bool(condition)
    where = section or _current[0]
    if where is not None:
        SECTIONS.setdefault(where, {"passed": 0, "failed": 0})
    if not ok and bug is not None and bug in known_bugs:
        XFAILS.append("%s [%s]" % (name, bug))
        log("XFAIL %s (known bug %s)%s" % (name, bug, (": " + _text(detail)) if detail != "" else ""))
        return False
    RESULTS["passed" if ok else "failed"] += 1
    if where is not None:
        SECTIONS[where]["passed" if ok else "failed"] += 1
    if ok:
        if not quiet:
            log("PASS %s" % name)
    else:
        shown = _text(detail) if detail != "" else ""
        FAILURES.append((where, name + (": " + shown.split("\n")[0][:200] if shown else "")))
        log("FAIL %s%s" % (name, (": " + shown) if shown else ""))
    return ok


def figure(name, value, section=None):
    FIGURES.append((section or _current[0], name, value))
    log("  (figure) %s: %s" % (name, value))


def failed():
    return RESULTS["failed"] > 0


def report():
    """Prints the sections, the failed checks, the figures and "N passed, N failed";
    returns the exit code (1 when a check failed)."""
    if SECTIONS:
        log("")
        for name, counts in SECTIONS.items():
            log("%-4s %s: %d passed, %d failed" % ("FAIL" if counts["failed"] else "PASS", name,
                                                   counts["passed"], counts["failed"]))
    if FAILURES:
        log("failed checks:")
        for where, what in FAILURES:
            log("  %s%s" % ("[%s] " % where if where else "", what))
    for x in XFAILS:
        log("XFAIL (known bug): %s" % x)
    for where, name, value in FIGURES:
        log("figure %s%s: %s" % ("[%s] " % where if where else "", name, value))
    log("%d passed, %d failed" % (RESULTS["passed"], RESULTS["failed"]))
    return 1 if RESULTS["failed"] else 0


def poll(predicate, seconds, what=None, interval=0.1):
    """Calls predicate until it returns a truthy value or `seconds` pass; returns the last
    value. With `what`, a timeout is a failed check."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    if not value and what is not None:
        check("within %ss: %s" % (seconds, what), False)
    return value


def run(cmd, timeout=60, input=None, env=None):
    """subprocess.run with captured text output and a timeout (raises TimeoutExpired)."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, input=input,
                          env=env)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def list_netns(prefix=""):
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return sorted(line.split()[0] for line in p.stdout.splitlines()
                  if line.split() and line.split()[0].startswith(prefix))


if __name__ == "__main__":
    sys.exit("a module: import it from a test suite")
