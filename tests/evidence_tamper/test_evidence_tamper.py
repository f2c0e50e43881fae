#!/usr/bin/env python3
"""Tamper evidence end to end (issue 16, acceptance 2 and 3).

Runs the real bulkhead-controller with its hot period set to seconds, so that a short run
seals archive segments: an enforcer uploads drops through the API for several seconds,
an admin quarantines and releases a workload and changes the inventory (audit entries),
signed checkpoints are written every second. Then, with the controller stopped:

  * an untouched data directory verifies (`bulkheadctl evidence verify`, exit 0) and
    `bulkheadctl evidence query` returns exactly what was uploaded, across the archive and
    the database;
  * on a fresh copy each, an attacker's change is found and the first broken record named
    (exit 1): a changed byte in one event, a deleted event, a deleted audit entry, a
    truncated archive segment, two events swapped, and a chain rewritten consistently inside
    the database (every link recomputed here, with this test's own implementation of the
    chain format) that only the exported checkpoint file contradicts.

A second run (YearInMiniature) keeps archive segments for seconds: they expire while the
controller runs, and the expiry is audited, the query and verify still agree with what was
stored, and an unaudited deletion is named.

The database is changed with Python's sqlite3, as an attacker with the file would. No
network namespaces: the enforcer's uploads are made through the API as the enforcer makes
them (the lab suites cover the enforcer itself).
"""
import argparse
import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "controller_api"))
sys.path.insert(0, str(HERE.parent / "lab_harness"))
from harness import check, poll, report  # noqa: E402
from test_controller_api import TOKENS, Controller  # noqa: E402

ADMIN = TOKENS["admin"]


def netstring(value):
    data = value if isinstance(value, bytes) else str(value).encode()
    return str(len(data)).encode() + b":" + data + b","


def event_record(row):
    """The canonical bytes of an event (controller/evidence/evidence_records.cpp, v1),
    written here independently of the controller's code."""
    (enforcer, seq, type_, time_ns, received_at, workload, direction, reason, src, dst, protocol, dport, count,
     document, clock_offset_ms) = row
    out = netstring("event/1") + netstring(enforcer) + netstring(seq) + netstring(type_) + netstring(time_ns)
    out += netstring(received_at) + netstring(workload) + netstring(direction) + netstring(reason)
    out += netstring(src) + netstring(dst) + netstring(protocol) + netstring("" if dport is None else dport)
    out += netstring(count) + netstring("" if clock_offset_ms is None else clock_offset_ms)
    out += netstring(document.encode() if isinstance(document, str) else document)
    return out


def link_hash(stream, sequence, previous, record):
    return hashlib.sha256(b"bulkhead-evidence-v1\0" + stream.encode() + b"\0" + sequence.to_bytes(8, "big") +
                          previous + record).digest()


def rewrite_drops_chain(db, from_id, previous):
    """What an attacker holding the database does after changing event `from_id`: recomputes
    the link of that event and of every later one from `previous` (the link before it), so
    that the database is consistent again."""
    rows = db.execute("SELECT id, enforcer, enforcer_seq, type, time_ns, received_at, workload, direction, reason, "
                      "src, dst, protocol, dport, event_count, document, clock_offset_ms FROM events "
                      "WHERE id >= ? ORDER BY id", (from_id,)).fetchall()
    for row in rows:
        previous = link_hash("drops", row[0], previous, event_record(row[1:]))
        db.execute("UPDATE events SET chain_hash = ? WHERE id = ?", (previous, row[0]))


def enroll_hv1(c, source_dir, what):
    """Puts the example inventory and enrolls enforcer hv1: (inventory, hv1's credential)."""
    inventory = json.loads((Path(source_dir) / "examples/vdi-pool/inventory.json").read_text())
    r = c.put("/api/v1/inventory", inventory, ADMIN)
    check(f"{what}: inventory put", r.status in (200, 204), r)
    token = c.post("/api/v1/enforcers/hv1/enrollment-token", None, ADMIN).json["token"]
    credential = c.post("/api/v1/enforcers/enroll", {"enforcer": "hv1", "token": token}).json["credential"]
    return inventory, credential


def upload_paced(c, credential, seconds, per_batch, pause, event_of):
    """Uploads batches of `per_batch` events (event_of(i) for the i-th of a batch) as hv1 for
    `seconds`, `pause` seconds apart, spreading the bounded load over several segment periods.
    Returns the (enforcer, seq) of every event the controller accepted."""
    uploaded, seq = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bounded by the deadline
        batch = []
        for i in range(per_batch):
            seq += 1
            batch.append({"seq": seq, "event": {"count": 1, "time_ns": time.time_ns(), **event_of(i)}})
        r = c.post("/api/v1/enforcers/hv1/events", {"sent_ns": time.time_ns(), "events": batch}, credential)
        if not (r.status == 200 and r.json.get("accepted") == len(batch)):
            check("upload accepted", False, r)
            break
        uploaded += [("hv1", b["seq"]) for b in batch]
        time.sleep(pause)  # pacing, not a wait for a result
    return uploaded


class Run:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = Path(workdir)
        self.config = self.workdir / "controller.json"
        self.config.write_text(json.dumps({
            "evidence_checkpoint_interval_ms": 1000,
            "evidence_hot_period_ms": 3000,
            "evidence_segment_period_ms": 1000,
            "evidence_archive_interval_ms": 200,
        }))
        self.controller = Controller(args.controller, self.workdir, ["--config", str(self.config)])
        self.data_dir = self.controller.data_dir
        self.uploaded = []  # (enforcer, seq)

    def ctl(self, *argv, data_dir=None):
        cmd = [self.args.ctl, "evidence", *argv, "--data-dir", str(data_dir or self.data_dir)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def produce(self):
        c = self.controller.start()
        inventory, credential = enroll_hv1(c, self.args.source_dir, "tamper run")
        workload = next(w for w in inventory["workloads"] if w.get("enforcer") == "hv1")
        # ~7 s of uploads, 40 events each
        self.uploaded = upload_paced(c, credential, 7, 40, 0.25, lambda i: {
            "type": "drop", "direction": "out", "reason": "deny", "workload": workload["id"],
            "src": workload["addresses"][0], "dst": f"10.1.9.{i}", "proto_name": "tcp", "family": 4, "mode": "enforce",
            "dport": 445, "sport": 40000 + i})
        r = c.post("/api/v1/quarantines", {"workload": workload["id"], "reason": "tamper test"}, ADMIN)
        check("quarantine created", r.status in (200, 201), r)
        r = c.delete(f"/api/v1/quarantines/{workload['id']}", ADMIN)
        check("quarantine released", r.status in (200, 204), r)

        def archived():
            e = c.get("/api/v1/evidence", ADMIN).json or {}
            return e.get("archive", {}).get("segments", 0) >= 3 and e.get("checkpoints", {}).get("written", 0) >= 2
        check("segments sealed and checkpoints written while running", poll(archived, 20, interval=0.2),
              c.get("/api/v1/evidence", ADMIN).json)
        evidence = c.get("/api/v1/evidence", ADMIN).json
        print("archive:", json.dumps(evidence.get("archive")), flush=True)
        # The API's own query crosses the boundary too.
        r = c.get("/api/v1/events", ADMIN, query={"limit": 10000, "order": "asc"})
        api_events = sorted((e["enforcer"], e["enforcer_seq"]) for e in r.json.get("events", []))
        check("API: /api/v1/events returns every uploaded event across archive and database",
              api_events == sorted(self.uploaded), (len(api_events), len(self.uploaded)))
        # Newest first, in pages of 97 with next_before_id: every event once, in descending id
        # order, across the boundary (bounded by the number of pages it can take).
        pages, ids, before = 0, [], None
        while pages < 100:
            query = {"limit": 97, **({"before_id": before} if before else {})}
            r = c.get("/api/v1/events", ADMIN, query=query)
            pages += 1
            ids += [e["id"] for e in r.json.get("events", [])]
            before = r.json.get("next_before_id")
            if r.status != 200 or before is None:
                break
        check("API: paging newest first with before_id crosses the archive boundary, every event once",
              ids == sorted(ids, reverse=True) and len(ids) == len(set(ids)) == len(self.uploaded),
              (pages, len(ids), len(self.uploaded)))
        # An incident's timeline keeps the events that moved to the archive.
        archived_through = (evidence.get("archive") or {}).get("archived_through", 0)
        incidents = c.get("/api/v1/incidents", ADMIN, query={"limit": 1000}).json.get("incidents", [])
        oldest = min(incidents, key=lambda i: i["id"]) if incidents else None
        timeline = c.get(f"/api/v1/incidents/{oldest['id']}", ADMIN).json.get("timeline", []) if oldest else []
        check("API: the oldest incident's timeline still shows its archived events",
              any(e["id"] <= archived_through for e in timeline) and len({e["id"] for e in timeline}) == len(timeline),
              (archived_through, oldest, [e["id"] for e in timeline][:20]))
        # The histogram counts the archive too: one bucket over the whole run holds every drop.
        r = c.get("/api/v1/events/counts", ADMIN, query={"from": "2020-01-01T00:00:00Z", "bucket_ms": 86400000,
                                                         "to": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                             time.gmtime(time.time() + 60))})
        total = sum(b["events"] for b in (r.json or {}).get("buckets", []))
        check("API: /api/v1/events/counts counts archived and hot drops, each once",
              r.status == 200 and total == len(self.uploaded), (r.status, total, len(self.uploaded), r.json))
        self.controller.stop()

    def tampered(self, name):
        copy = self.workdir / ("copy-" + name)
        shutil.copytree(self.data_dir, copy)
        return copy

    def sql(self, data_dir, statements):
        db = sqlite3.connect(data_dir / "bulkhead.db")
        try:
            db.executescript(statements)
            db.commit()
        finally:
            db.close()

    def first_db_event(self, data_dir):
        db = sqlite3.connect(data_dir / "bulkhead.db")
        try:
            return db.execute("SELECT MIN(id), MAX(id) FROM events").fetchone()
        finally:
            db.close()

    def expect_break(self, name, data_dir, wanted, *extra):
        r = self.ctl("verify", *extra, data_dir=data_dir)
        ok = r.returncode == 1 and wanted in r.stdout
        check(f"verify names it: {name} -> '{wanted}'", ok, r.stdout + r.stderr)

    def attack(self):
        r = self.ctl("verify")
        check("untouched: verify exits 0", r.returncode == 0 and "evidence verifies" in r.stdout, r.stdout + r.stderr)
        print(r.stdout, flush=True)
        r = self.ctl("query")
        got = sorted((e["enforcer"], e["enforcer_seq"]) for e in map(json.loads, r.stdout.splitlines()))
        check("query: bulkheadctl evidence query returns exactly what was uploaded, archive and database",
              r.returncode == 0 and got == sorted(self.uploaded), (len(got), len(self.uploaded), r.stderr))
        low, high = self.first_db_event(self.data_dir)
        check("the database holds the newest events only (older ones are archived)", low is not None and low > 1,
              (low, high))
        segments = sorted((self.data_dir / "archive").glob("*.bhar"))
        check("segments on disk", len(segments) >= 3, segments)

        d = self.tampered("byte")
        self.sql(d, f"UPDATE events SET document = replace(document, '10.1.9.', '10.1.8.') WHERE id = {low + 2}")
        self.expect_break("a changed byte in one event", d, f"drops #{low + 2}: altered")

        d = self.tampered("deleted-event")
        self.sql(d, f"DELETE FROM events WHERE id = {low + 5}")
        self.expect_break("a deleted event", d, f"drops #{low + 5}: missing")

        d = self.tampered("deleted-audit")
        self.sql(d, "DELETE FROM audit_log WHERE chain_seq = 2")
        self.expect_break("a deleted audit entry", d, "audit #2: missing")

        d = self.tampered("swapped")
        a, b = low + 7, low + 8
        self.sql(d, f"""UPDATE events SET enforcer_seq = -enforcer_seq WHERE id IN ({a}, {b});
                        UPDATE events SET id = -id WHERE id IN ({a}, {b});
                        UPDATE events SET id = {b} WHERE id = -{a}; UPDATE events SET id = {a} WHERE id = -{b};
                        UPDATE events SET enforcer_seq = -enforcer_seq WHERE enforcer_seq < 0""")
        self.expect_break("two events swapped", d, f"drops #{a}: altered")

        d = self.tampered("truncated-segment")
        victim = d / "archive" / segments[1].name
        with open(victim, "r+b") as f:
            f.truncate(victim.stat().st_size - 7)
        r = self.ctl("verify", data_dir=d)
        check("verify names it: a truncated archive segment", r.returncode == 1 and "truncated" in r.stdout
              and segments[1].name in r.stdout, r.stdout + r.stderr)

        d = self.tampered("rewritten")
        target = low + 3
        db = sqlite3.connect(d / "bulkhead.db")
        try:
            db.execute(f"UPDATE events SET workload = 'vdi-nobody' WHERE id = {target}")
            previous = db.execute(f"SELECT chain_hash FROM events WHERE id = {target - 1}").fetchone()[0]
            rewrite_drops_chain(db, target, previous)
            db.execute("DELETE FROM evidence_checkpoints")
            db.commit()
        finally:
            db.close()
        empty = d / "no-checkpoints.jsonl"
        empty.write_text("")
        r = self.ctl("verify", "--checkpoints", str(empty), data_dir=d)
        check("a rewritten chain is consistent inside the database (verify without outside checkpoints passes)",
              r.returncode == 0, r.stdout + r.stderr)
        self.expect_break("a rewritten chain against the exported checkpoint file", d, "checkpoint-mismatch")


class YearInMiniature:
    """Issue 16, acceptance 3 on the real controller: retention of seconds instead of 400 days.
    Drops uploaded for several seconds pass from the database (hot period 2 s) into archive
    segments (1 s periods), and the oldest segments expire 3 s after their period while the
    controller runs. Then: every expiry is in the audit log and its segment is gone from the
    disk; `bulkheadctl evidence query` returns exactly the uploaded events that were not
    expired, across the remaining segments and the database; the store still verifies (the
    evidence legitimately starts after the audited expiries); and a segment deleted without an
    audited expiry, or an expiry's audit entry deleted, is named by verify."""

    def __init__(self, args, workdir):
        self.args = args
        self.workdir = Path(workdir) / "year"
        self.workdir.mkdir()
        config = self.workdir / "controller.json"
        config.write_text(json.dumps({
            "evidence_checkpoint_interval_ms": 1000,
            "evidence_hot_period_ms": 2000,
            "evidence_segment_period_ms": 1000,
            "evidence_archive_interval_ms": 200,
            "evidence_archive_retention_ms": 3000,
        }))
        self.controller = Controller(args.controller, self.workdir, ["--config", str(config)])
        self.data_dir = self.controller.data_dir
        self.uploaded = []  # (enforcer, seq) in upload order

    def ctl(self, *argv, data_dir=None):
        cmd = [self.args.ctl, "evidence", *argv, "--data-dir", str(data_dir or self.data_dir)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def expiries(self, c):
        r = c.get("/api/v1/audit", ADMIN, query={"action": "evidence.archive.expire", "limit": 1000})
        return sorted(r.json.get("entries", []), key=lambda a: a["id"]) if r.status == 200 else []

    def run(self):
        c = self.controller.start()
        _, credential = enroll_hv1(c, self.args.source_dir, "year in miniature")
        # ~8 s of uploads, 25 events each
        self.uploaded = upload_paced(c, credential, 8, 25, 0.2, lambda i: {
            "type": "drop", "direction": "out", "reason": "default", "workload": "vdi-001", "src": "10.1.0.1",
            "dst": f"10.1.7.{i}", "proto_name": "udp", "family": 4, "mode": "enforce", "dport": 137,
            "sport": 50000 + i})
        expired = poll(lambda: len(self.expiries(c)) >= 2 and self.expiries(c), 20, interval=0.2)
        check("year in miniature: segments expired while the controller ran (>= 2 audited expiries)",
              bool(expired), c.get("/api/v1/evidence", ADMIN).json)
        self.controller.stop()
        if not expired:
            return
        expired = self.expiries_from_db()
        names = [e["target"].removeprefix("archive/") for e in expired]
        check("every expiry is audited by the retention (actor, target, the segment's range)",
              all(e["actor"] == "retention" and e["target"].startswith("archive/") for e in expired)
              and all("first_sequence" in e["before"] and "last_sequence" in e["before"] for e in expired), expired)
        gone = [n for n in names if (self.data_dir / "archive" / n).exists()]
        check("every expired segment is gone from the disk", not gone, gone)
        remaining = sorted((self.data_dir / "archive").glob("*.bhar"))
        check("newer segments remain", len(remaining) >= 1, remaining)
        expired_count = sum(e["before"]["last_sequence"] - e["before"]["first_sequence"] + 1 for e in expired)
        first_kept = max(e["before"]["last_sequence"] for e in expired) + 1

        r = self.ctl("query")
        got = [json.loads(line) for line in r.stdout.splitlines()]
        check("query: nothing at or before the expired segments' last record", r.returncode == 0 and got
              and min(e["id"] for e in got) == first_kept, (first_kept, got[:1], r.stderr))
        check("query: exactly the uploaded events that did not expire, across the archive and the database",
              sorted((e["enforcer"], e["enforcer_seq"]) for e in got) == sorted(self.uploaded[expired_count:])
              and len(got) + expired_count == len(self.uploaded), (len(got), expired_count, len(self.uploaded)))
        r = self.ctl("verify")
        check("verify: the store with expired segments verifies (exit 0)",
              r.returncode == 0 and "evidence verifies" in r.stdout, r.stdout + r.stderr)

        copy = self.workdir / "copy-unaudited"
        shutil.copytree(self.data_dir, copy)
        (copy / "archive" / remaining[0].name).unlink()
        r = self.ctl("verify", data_dir=copy)
        check("verify: a segment deleted without an audited expiry is named",
              r.returncode == 1 and f"drops #{first_kept}: missing" in r.stdout, r.stdout + r.stderr)

        copy = self.workdir / "copy-expiry-unaudited"
        shutil.copytree(self.data_dir, copy)
        db = sqlite3.connect(copy / "bulkhead.db")
        try:
            db.execute("DELETE FROM audit_log WHERE id = ?", (expired[-1]["id"],))
            db.commit()
        finally:
            db.close()
        r = self.ctl("verify", data_dir=copy)
        # The drops stream is checked first: the records of that segment are now gone without
        # an audited expiry (the audit chain's own gap comes after it in the report).
        first = expired[-1]["before"]["first_sequence"]
        check("verify: an expiry's audit entry deleted is named (its records are gone unaudited)",
              r.returncode == 1 and f"drops #{first}: missing" in r.stdout
              and "expiry is not in the audit log" in r.stdout, r.stdout + r.stderr)

    def expiries_from_db(self):
        db = sqlite3.connect(self.data_dir / "bulkhead.db")
        try:
            rows = db.execute("SELECT id, actor, target, before_doc FROM audit_log WHERE action = "
                              "'evidence.archive.expire' ORDER BY id").fetchall()
        finally:
            db.close()
        return [{"id": i, "actor": a, "target": t, "before": json.loads(b)} for i, a, t, b in rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--controller", required=True)
    parser.add_argument("--ctl", required=True)
    parser.add_argument("--source-dir", default=str(HERE.parent.parent))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bulkhead-evidence-")
    run = Run(args, workdir)
    year = YearInMiniature(args, workdir)
    try:
        run.produce()
        run.attack()
        year.run()
    finally:
        run.controller.stop()
        year.controller.stop()
        if args.keep:
            print("kept", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return report()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
