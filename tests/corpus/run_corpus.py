#!/usr/bin/env python3
"""Runs bulkheadctl on every case of the bad-input corpus (expectations.json).

Each case runs twice, with the default text output and with --format json. A run fails if
  - the process died by a signal or timed out (a crash or a hang),
  - stderr shows an AddressSanitizer/LeakSanitizer report or a UBSan "runtime error:",
  - the exit code differs from the expected one,
  - text: an expected "POINTER: CODE" or message fragment is missing from stdout+stderr,
  - json: stdout is not one JSON document {"valid": ..., "errors": [...]}, or its errors
    are not exactly the expected (pointer, code) pairs, each message holding its fragment.
The corpus must also match the directory: a file without an expectation fails, and so
does an expectation without a file.

    run_corpus.py --bulkheadctl build/bin/bulkheadctl [--work-dir DIR] [--jobs N] [-k TEXT]

Standard library only. ASAN_OPTIONS/UBSAN_OPTIONS default to leak checking and
halt-on-error when the environment does not set them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer")
TIMEOUT_SECONDS = 120


def shown_pointer(pointer: str) -> str:
    return pointer if pointer else "(document root)"


def command(ctl: str, case: dict, path: Path, corpus: Path, manifest: dict) -> list[str]:
    if case["kind"] == "inventory":
        return [ctl, "inventory", "validate", str(path)]
    return [ctl, "policy", "validate", str(path), "--inventory",
            str(corpus / manifest["good_inventory"])]


def check_run(case: dict, mode: str, argv: list[str]) -> list[str]:
    """Runs one command; returns the problems found (empty: passed)."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return [f"timed out after {TIMEOUT_SECONDS}s"]
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    problems: list[str] = []
    if proc.returncode < 0:
        problems.append(f"killed by signal {signal.Signals(-proc.returncode).name}")
    for marker in SANITIZER_MARKERS:
        if marker in err:
            problems.append(f"sanitizer report ({marker!r}) on stderr")
            break
    if proc.returncode != case["exit"]:
        problems.append(f"exit code {proc.returncode}, expected {case['exit']}")

    if mode == "text":
        both = out + err
        for e in case["errors"]:
            located = f"{shown_pointer(e['pointer'])}: {e['code']}"
            if located not in both:
                problems.append(f"missing {located!r}")
            elif e["message"] and e["message"] not in both:
                problems.append(f"missing message fragment {e['message']!r} (for {located})")
        if case["exit"] == 0 and "valid (" not in out:
            problems.append("no 'valid (...)' summary on stdout")
    else:
        try:
            doc = json.loads(out)
        except ValueError as exc:
            doc = None
            if proc.returncode >= 0:
                problems.append(f"stdout is not JSON ({exc})")
        if doc is not None:
            problems += check_json(case, doc)
    if problems:
        tail = (out + err).strip().splitlines()[-12:]
        problems.append("output:\n      " + "\n      ".join(tail or ["(none)"]))
    return problems


def check_json(case: dict, doc: object) -> list[str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("errors"), list) \
            or not isinstance(doc.get("valid"), bool):
        return ['JSON output is not {"valid": bool, "errors": [...]}']
    problems = []
    if doc["valid"] != (case["exit"] == 0):
        problems.append(f"\"valid\" is {doc['valid']}")
    got = [(e.get("pointer"), e.get("code"), e.get("message", "")) for e in doc["errors"]]
    unmatched = list(got)
    for e in case["errors"]:
        hit = next((g for g in unmatched if g[0] == e["pointer"] and g[1] == e["code"]
                    and e["message"] in g[2]), None)
        if hit is None:
            problems.append(f"json: no error {shown_pointer(e['pointer'])}: {e['code']}"
                            + (f" with {e['message']!r}" if e["message"] else ""))
        else:
            unmatched.remove(hit)
    for g in unmatched:
        problems.append(f"json: unexpected error {shown_pointer(g[0])}: {g[1]}: {g[2]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the bad-input corpus")
    parser.add_argument("--bulkheadctl", required=True)
    parser.add_argument("--corpus", type=Path, default=HERE,
                        help="directory holding expectations.json (default: this script's)")
    parser.add_argument("--work-dir", type=Path,
                        help="where the large generated cases go (default: a temp dir)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-k", dest="only", help="only cases whose file name contains this")
    args = parser.parse_args()

    os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    os.environ.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")

    corpus = args.corpus.resolve()
    manifest = json.loads((corpus / "expectations.json").read_text())
    cases = manifest["cases"]

    problems_by_case: dict[str, list[str]] = {}
    listed = {c["file"] for c in cases if not c.get("generated_at_test_time")}
    on_disk = {str(p.relative_to(corpus)) for sub in ("policy", "inventory")
               for p in (corpus / sub).glob("*.json")}
    for rel in sorted(on_disk - listed):
        problems_by_case[rel] = ["file has no entry in expectations.json"]
    for rel in sorted(listed - on_disk - {c["file"] for c in cases if "/" not in c["file"]}):
        problems_by_case[rel] = ["listed in expectations.json but missing"]

    with tempfile.TemporaryDirectory(prefix="bulkhead-corpus-") as tmp:
        work = args.work_dir.resolve() if args.work_dir else Path(tmp)
        if any(c.get("generated_at_test_time") for c in cases):
            sys.path.insert(0, str(corpus))
            import generate  # noqa: E402  (the same script that wrote the committed files)
            generate.write_test_time_cases(work)

        runs = []
        for case in cases:
            if args.only and args.only not in case["file"]:
                continue
            base = work if case.get("generated_at_test_time") else corpus
            path = base / case["file"]
            if not path.is_file():
                problems_by_case.setdefault(case["file"], []).append(f"{path} does not exist")
                continue
            argv = command(args.bulkheadctl, case, path, corpus, manifest)
            runs.append((case, "text", argv))
            runs.append((case, "json", argv + ["--format", "json"]))

        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(lambda r: (r[0], r[1], check_run(*r)), runs))

    failed_runs = 0
    for case, mode, problems in results:
        if problems:
            failed_runs += 1
            problems_by_case.setdefault(case["file"], []).extend(
                f"[{mode}] {p}" for p in problems)

    for rel, problems in sorted(problems_by_case.items()):
        print(f"FAIL {rel}")
        for p in problems:
            print(f"    {p}")
    n_cases = len({r[0]["file"] for r in runs})
    print(f"bad_input_corpus: {n_cases} cases, {len(results)} runs: "
          f"{len(results) - failed_runs} passed, {failed_runs} failed; "
          f"{len(problems_by_case)} case(s) with problems")
    return 1 if problems_by_case else 0


if __name__ == "__main__":
    sys.exit(main())
