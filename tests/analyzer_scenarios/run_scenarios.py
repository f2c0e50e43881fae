#!/usr/bin/env python3
"""Runs the analyzer over every labelled scenario and scores it against its labels.

For each scenario written by generate.py (NAME.jsonl + NAME.labels.json), runs

    bulkheadctl analyze replay NAME.jsonl --inventory inventory.json --config analyzer.json
                                          [--policy policy.json] --json

and reports per scenario: attack sources detected / labelled (an incident whose source is
that enforcer/workload), whether an expected detector named it, the detectors that fired,
benign sources with an incident (false positives, even when not quarantined), benign sources
quarantined (must be none) and incidents about a target (fan-in, never a source's fault).

    run_scenarios.py --bulkheadctl build/bin/bulkheadctl [--work-dir DIR] [--report FILE.md]
                     [--seed N] [-k NAME] [--no-policy] [--no-generate]

Exit 0 when every attack source is detected and no benign source is quarantined; 1 when not;
2 when the tool failed (a crash, a timeout, an error exit or output that is not the JSON
expected). Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import generate  # noqa: E402

sys.path.insert(0, str(HERE.parent / "lab_harness"))
from harness import check, report  # noqa: E402  (check(name, condition, detail): the suites' one harness)

TIMEOUT_SECONDS = 300
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "UndefinedBehaviorSanitizer")


def supports_policy(ctl: str) -> bool:
    proc = subprocess.run([ctl, "analyze", "replay", "--help"], capture_output=True, text=True,
                          timeout=60)
    return "--policy" in proc.stdout + proc.stderr


def source_key(incident: dict) -> str | None:
    """enforcer/workload, or enforcer/port/address for a source without a workload."""
    if incident.get("about_target") or incident.get("subject_kind") == "target":
        return None
    src = incident.get("source") or {}
    enforcer = src.get("enforcer", incident.get("enforcer", ""))
    workload = src.get("workload", incident.get("workload", ""))
    if workload:
        return f"{enforcer}/{workload}"
    return "/".join([enforcer, src.get("port", incident.get("port", "")),
                     src.get("address", incident.get("address", ""))])


def actions_of(incident: dict) -> set[str]:
    kinds = {a.get("action", "") for a in incident.get("actions", [])}
    if incident.get("quarantined"):
        kinds.add("quarantine")
    return kinds


def rules_of(incident: dict) -> list[str]:
    return sorted(incident.get("findings", {}).keys())


def run_one(ctl: str, labels: dict, work: Path, use_policy: bool) -> dict:
    argv = [ctl, "analyze", "replay", str(work / labels["file"]),
            "--inventory", str(HERE / "inventory.json"), "--config", str(HERE / "analyzer.json")]
    if use_policy:
        argv += ["--policy", str(HERE / "policy.json")]
    argv.append("--json")
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_SECONDS} s", "argv": argv}
    elapsed = time.monotonic() - started
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode < 0:
        return {"error": f"killed by {signal.Signals(-proc.returncode).name}", "argv": argv,
                "stderr": err}
    for marker in SANITIZER_MARKERS:
        if marker in err:
            return {"error": f"sanitizer report ({marker})", "argv": argv, "stderr": err}
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}", "argv": argv, "stderr": err}
    try:
        doc = json.loads(out)
        incidents = doc["incidents"]
        totals = doc["totals"]
    except (ValueError, KeyError, TypeError) as e:
        return {"error": f"output is not the expected JSON ({e})", "argv": argv, "stderr": err}
    return {"incidents": incidents, "totals": totals, "seconds": elapsed, "argv": argv}


def evaluate(labels: dict, result: dict, use_policy: bool) -> dict:
    by_source: dict[str, list[dict]] = {}
    about_targets = []
    for incident in result["incidents"]:
        key = source_key(incident)
        if key is None:
            about_targets.append(incident)
        else:
            by_source.setdefault(key, []).append(incident)
    row = {"scenario": labels["scenario"], "kind": labels["kind"], "title": labels["title"],
           "attackers": [], "benign_fp": [], "benign_quarantined": [], "benign_dry_run": [],
           "targets": [], "unlabelled": [], "totals": result["totals"]}
    for key, attacker in labels["attackers"].items():
        incidents = by_source.get(key, [])
        fired = sorted({r for i in incidents for r in rules_of(i)})
        # when the first finding fired (the drop that crossed a threshold), not the start
        # of the window it counted
        first_opened = min((f["last_ns"] for i in incidents for f in i.get("timeline", [])[:1]),
                           default=None)
        delay = None
        if first_opened is not None and "first_ns" in attacker:
            delay = (first_opened - attacker["first_ns"]) / 1e9
        acts = set().union(*(actions_of(i) for i in incidents)) if incidents else set()
        row["attackers"].append({
            "source": key, "what": attacker["what"], "detected": bool(incidents),
            "expected": attacker["expect"], "expected_hit": bool(set(fired) & set(attacker["expect"])),
            "fired": fired, "delay_s": delay, "beacon": attacker.get("beacon"),
            "severity": max((i["severity"] for i in incidents), key=SEVERITIES.index, default=""),
            "actions": sorted(a for a in acts if a)})
    for key in labels["benign"]:
        for incident in by_source.get(key, []):
            entry = {"source": key, "rules": rules_of(incident), "severity": incident["severity"],
                     "explanation": (incident.get("timeline") or [{}])[0].get("explanation", ""),
                     "actions": sorted(actions_of(incident))}
            row["benign_fp"].append(entry)
            if "quarantine" in entry["actions"]:
                row["benign_quarantined"].append(entry)
            if "dry-run" in entry["actions"]:
                row["benign_dry_run"].append(entry)
    known = set(labels["attackers"]) | set(labels["benign"])
    row["unlabelled"] = sorted(k for k in by_source if k not in known)
    for incident in about_targets:
        first = (incident.get("timeline") or [{}])[0]
        row["targets"].append({"subject": incident["subject"], "severity": incident["severity"],
                               "classification": first.get("classification", ""),
                               "explanation": first.get("explanation", "")})
    detected = sum(a["detected"] for a in row["attackers"])
    row["passed"] = (detected == len(row["attackers"]) and not row["benign_quarantined"]
                     and not row["unlabelled"])
    # A scenario the analyzer is known to fail (its labels say why) is reported, not gating;
    # once it passes, its label must go (strict: an unexpected pass fails the suite).
    row["known_weakness"] = labels.get("known_weakness", "")
    if row["known_weakness"] and labels["kind"] == "benign" and not use_policy:
        row["result"] = "pass (quarantine not evaluated)"  # nothing to say without --policy
        row["gating_ok"] = True
    elif row["known_weakness"]:
        row["result"] = "FAIL: now passes, drop known_weakness" if row["passed"] else "known weakness"
        row["gating_ok"] = not row["passed"]
    else:
        row["result"] = "pass" if row["passed"] else "FAIL"
        row["gating_ok"] = row["passed"]
    return row


SEVERITIES = ["", "low", "medium", "high", "critical"]


def short_rules(rules: list[str]) -> str:
    return ", ".join(rules) if rules else "-"


def table(rows: list[dict], markdown: bool) -> str:
    head = ["scenario", "kind", "attack sources detected", "expected detector", "detectors fired",
            "time to detect", "attackers quarantined", "benign sources", "benign with incident (FP)",
            "benign quarantined", "fan-in (target) incidents", "result"]
    lines = []
    for r in rows:
        attackers = r["attackers"]
        n = len(attackers)
        det = sum(a["detected"] for a in attackers)
        exp = sum(a["expected_hit"] for a in attackers)
        fired = sorted({f for a in attackers for f in a["fired"]})
        delays = [a["delay_s"] for a in attackers if a["delay_s"] is not None]
        quarantined = sum("quarantine" in a["actions"] for a in attackers)
        dry = sum("dry-run" in a["actions"] and "quarantine" not in a["actions"] for a in attackers)
        fp_sources = sorted({f["source"] for f in r["benign_fp"]})
        fp_rules = sorted({x for f in r["benign_fp"] for x in f["rules"]})
        benign_n = r["benign_count"]
        lines.append([
            r["scenario"], r["kind"],
            f"{det}/{n} ({100 * det // n} %)" if n else "-",
            f"{exp}/{n}" if n else "-",
            short_rules(fired) if n else "-",
            (format_delay(max(delays)) if len(delays) == 1 else
             f"{format_delay(min(delays))}..{format_delay(max(delays))}") if delays else "-",
            (f"{quarantined}/{n}" + (f" (+{dry} dry-run)" if dry else "")) if n else "-",
            str(benign_n),
            f"{len(fp_sources)} ({short_rules(fp_rules)})" if fp_sources else "0",
            str(len({f['source'] for f in r['benign_quarantined']})),
            str(len(r["targets"])),
            r["result"]])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
        return "\n".join(out)
    short_head = ["scenario", "kind", "detected", "expected", "detectors fired", "to detect",
                  "quarantined", "benign", "benign FP", "benign Q", "fan-in", "result"]
    widths = [max([len(short_head[i])] + [len(l[i]) for l in lines]) for i in range(len(head))]
    out = ["  ".join(h.ljust(w) for h, w in zip(short_head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def format_delay(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def beacon_table(rows: list[dict], markdown: bool) -> str:
    """The labelled beacons by protocol and period (rows) and jitter (columns): detected or
    not, and the time to detection in periods (first packet to the first finding)."""
    cells: dict[tuple, dict] = {}
    jitters: set = set()
    for r in rows:
        for a in r["attackers"]:
            b = a.get("beacon")
            if not b:
                continue
            jitters.add(b["jitter"])
            if not a["detected"]:
                text = "missed"
            elif a["delay_s"] is None:
                text = "yes"
            else:
                text = f"{a['delay_s'] / b['period_s']:.1f}"
                if not a["expected_hit"]:
                    text += f" ({', '.join(a['fired'])})"
            cells[(b["protocol"], b["period_s"], b["jitter"])] = text
    if not cells:
        return ""
    order = {"tcp": 0, "udp": 1, "icmp": 2}
    lines_keys = sorted({(p, s) for p, s, _ in cells}, key=lambda k: (order.get(k[0], 9), k[1]))
    cols = sorted(jitters)
    head = ["beacon"] + [f"±{j:.0%}" for j in cols]
    lines = [[f"{p} {generate.period_text(s)}"] + [cells.get((p, s, j), "-") for j in cols]
             for p, s in lines_keys]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max([len(head[i])] + [len(l[i]) for l in lines]) for i in range(len(head))]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def details(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["known_weakness"]:
            out.append(f"- {r['scenario']}: known weakness: {r['known_weakness']}")
        for a in r["attackers"]:
            if not a["detected"]:
                out.append(f"- **{r['scenario']}**: attack source {a['source']} ({a['what']}) "
                           f"NOT detected (expected {', '.join(a['expected'])})")
            elif not a["expected_hit"]:
                out.append(f"- {r['scenario']}: {a['source']} detected by {', '.join(a['fired'])}, "
                           f"not by the expected {', '.join(a['expected'])}")
        for f in r["benign_fp"]:
            verdict = "QUARANTINED" if "quarantine" in f["actions"] else (
                "dry-run quarantine" if "dry-run" in f["actions"] else "not quarantined")
            acts = f" (actions: {', '.join(f['actions'])})" if f["actions"] else ""
            out.append(f"- {r['scenario']}: benign {f['source']}: {f['severity']} incident "
                       f"({', '.join(f['rules'])}), {verdict}{acts}: {f['explanation']}")
        for k in r["unlabelled"]:
            out.append(f"- **{r['scenario']}**: incident on an unlabelled source {k}")
        seen = set()
        for t in r["targets"]:
            kind = (t["classification"], t["severity"])
            if kind in seen:
                continue
            seen.add(kind)
            same = sum((x["classification"], x["severity"]) == kind for x in r["targets"])
            out.append(f"- {r['scenario']}: {same} fan-in incident(s) about a target, "
                       f"{t['classification'] or 'unclassified'} ({t['severity']}), e.g. {t['explanation']}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bulkheadctl", required=True)
    parser.add_argument("--work-dir", type=Path, help="where the scenario files are (or go)")
    parser.add_argument("--report", type=Path, help="also write the table as Markdown here")
    parser.add_argument("--json-report", type=Path, help="write every evaluation as JSON here")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("-k", dest="only", help="only scenarios whose name contains this")
    parser.add_argument("--no-generate", action="store_true",
                        help="use the files already in --work-dir")
    parser.add_argument("--no-policy", action="store_true",
                        help="run without --policy (incidents only, no response actions)")
    args = parser.parse_args(argv)

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bh-scenarios-"))
    if not args.no_generate:
        gen_args = ["--out", str(work), "--seed", str(args.seed)]
        if args.only:
            gen_args += ["-k", args.only]
        if generate.main(gen_args) != 0:
            return 2
    manifest = json.loads((work / "manifest.json").read_text())
    use_policy = not args.no_policy and supports_policy(args.bulkheadctl)
    if not use_policy:
        print("note: replay runs without --policy: no response actions, quarantine not evaluated"
              + ("" if args.no_policy else " (this bulkheadctl has no --policy)"))

    rows = []
    broken = []
    for labels in manifest["scenarios"]:
        if args.only and args.only not in labels["scenario"]:
            continue
        result = run_one(args.bulkheadctl, labels, work, use_policy)
        if "error" in result:
            broken.append((labels["scenario"], result))
            continue
        row = evaluate(labels, result, use_policy)
        row["benign_count"] = len(labels["benign"])
        row["seconds"] = result["seconds"]
        rows.append(row)

    print()
    print(table(rows, markdown=False))
    beacons = beacon_table(rows, markdown=False)
    if beacons:
        print("\nBeacons detected (periods from the first packet to the first finding; missed: none):")
        print(beacons)
    notes = details(rows)
    if notes:
        print("\nDetails:")
        print("\n".join(notes))
    attack_sources = [a for r in rows for a in r["attackers"]]
    detected = sum(a["detected"] for a in attack_sources)
    benign_total = sum(r["benign_count"] for r in rows)
    fp_total = len({(r["scenario"], f["source"]) for r in rows for f in r["benign_fp"]})
    q_total = len({(r["scenario"], f["source"]) for r in rows for f in r["benign_quarantined"]})
    weak = [r["scenario"] for r in rows if r["known_weakness"] and not r["passed"]]
    gating = [a for r in rows if not r["known_weakness"] for a in r["attackers"]]
    summary = (f"attack sources detected: {detected}/{len(attack_sources)} "
               f"({sum(a['detected'] for a in gating)}/{len(gating)} outside the known weaknesses); "
               f"benign sources with an "
               f"incident: {fp_total}/{benign_total}; benign sources quarantined: {q_total}; "
               f"response actions evaluated: {'yes' if use_policy else 'no (no --policy)'}"
               + (f"; known weaknesses (reported, not gating): {', '.join(weak)}" if weak else ""))
    print("\n" + summary)
    for name, result in broken:
        print(f"\nERROR {name}: {result['error']}\n  {' '.join(result['argv'])}\n"
              f"  {result.get('stderr', '').strip()[:2000]}")

    if args.report:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        md = [f"Analyzer scenario suite (tests/analyzer_scenarios, seed {manifest['seed']}), {stamp}, "
              f"response actions {'evaluated (--policy policy.json)' if use_policy else 'not evaluated (no --policy)'}.",
              "", table(rows, markdown=True), "", summary + "."]
        if beacons:
            md += ["", "Beacons detected (periods from the first packet to the first finding):", "",
                   beacon_table(rows, markdown=True)]
        if notes:
            md += ["", "Details:", ""] + notes
        if broken:
            md += ["", "Errors:", ""] + [f"- {n}: {r['error']}" for n, r in broken]
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text("\n".join(md) + "\n")
    if args.json_report:
        args.json_report.write_text(json.dumps({"rows": rows, "broken": [
            {"scenario": n, **r} for n, r in broken]}, indent=2) + "\n")

    # One check per scenario (a known weakness passes while it still fails, and fails once it passes).
    print()
    for r in rows:
        check("scenario %s: %s" % (r["scenario"], r["result"]), r["gating_ok"], r.get("known_weakness", ""))
    for name, result in broken:
        check("scenario %s: replayed" % name, False, result["error"])
    failed = report()
    if broken:
        return 2
    return failed


if __name__ == "__main__":
    sys.exit(main())
