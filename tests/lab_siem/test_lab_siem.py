#!/usr/bin/env python3
"""SIEM export of a real lab run (issue 16, acceptance 1): Debian's rsyslogd as the receiver,
the lab's real controller, bulkhead-enforcer daemons applying nftables in network namespaces
and sending their NFLOG drops, a real nmap scan that the analyzer turns into an incident with
an automatic quarantine, and audited admin actions.

Reuses tests/siem_export (imported, not copied): the throwaway CA (openssl CLI), the rsyslogd
launcher (two TLS listeners with the ossl driver, one UDP listener, %rawmsg% to files), the raw
TCP receiver (octet counting on the wire), the independent parsers (siem_parse.py) and the
field-by-field comparison of every received message with the stored records (Run.compare).

  soc-leef  tls  LEEF 2.0  drops, allowed flows, incidents, quarantines, audit, checkpoints
  soc-cef   tls  CEF       drops, incidents, quarantines, audit, checkpoints
  soc-ocsf  udp  OCSF      drops, incidents, quarantines, audit, checkpoints
  raw-cef   tcp  CEF       drops, incidents, quarantines, audit   (raw capture in this script)

The controller is the lab's (root namespace, plain API on loopback), started by lab.py with
`--config` holding the SIEM destinations, the controller name and the checkpoint file, so
127.0.0.1 reaches the receivers. Every lab namespace, enforcer, the controller and rsyslogd
are stopped in `finally`, also on failure.

Exit 77 (skipped) when not root, or nmap, rsyslogd, its ossl driver or openssl is missing.
Last line: "N passed, N failed".
With a hot period of seconds the run also seals archive segments; at the end a consistent copy
of the controller's store (SQLite's backup API) and its segments verifies with `bulkheadctl
evidence verify`, and each of the six kinds of tampering of issue 16's acceptance 2 is named on
a copy: a changed byte in one of the lab's drop events, a deleted drop event, a deleted audit
entry, a truncated segment, two drop events swapped, and a chain rewritten consistently inside
the database that only the exported checkpoint file contradicts.
"""
import json, os, shutil, socket, subprocess, sys, tempfile, time, types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab_harness"))
sys.path.insert(0, str(HERE.parent / "siem_export"))
from lab_harness import (BIN, EDR, FILE_SERVER, REPO, api, applied_quarantine, check, configure, down_and_verify,  # noqa: E402
                         expect_dropped, figure, in_ns, incidents_of, kill_children, lab_doc, log, poll, report,
                         section, up_with_lab_policy)
import test_siem_export as siem  # noqa: E402

PREFIX, PORT, MGMT, TLS_PORT = "bhsiem-", 18791, "10.254.85.0/24", 19043
configure(PREFIX, PORT, MGMT, TLS_PORT)
PING_FS = (FILE_SERVER, "icmp", 0)      # the positive control of a VDI: allowed by the policy
RECORDS = ["drops", "incidents", "quarantines", "audit", "checkpoints"]


class LabClient(siem.Client):
    """siem_export's client with the lab's tokens (its defaults are bound at definition)."""

    def get(self, path, token=None, **kw):
        return self.request("GET", path, token=token or siem.TOKENS["soc"], **kw)

    def post(self, path, body=None, token=None, **kw):
        return self.request("POST", path, body=body, token=token or siem.TOKENS["admin"], **kw)


class LabRun(siem.Run):
    """siem_export's Run with the lab in place of the API-fed controller: the same receivers,
    waits and comparison (Run.wait_delivered, Run.compare)."""

    def __init__(self, args, tmp):
        super().__init__(args, tmp)
        self.state = str(tmp / "lab")
        os.mkdir(self.state, 0o700)
        self.lab_started = False

    def cleanup(self):
        # Run.cleanup stops rsyslogd and the raw receiver (self.controller is not a process here).
        kill_children()
        if self.lab_started:
            down_and_verify(self.state)
        super().cleanup()

    def main(self):
        self.version = subprocess.run([str(BIN / "bulkhead-controller"), "--version"], capture_output=True,
                                      text=True, timeout=30).stdout.split()[-1]
        section("receivers")
        self.pki = siem.Pki(self.tmp / "pki")
        self.pki.make()
        tls_ports = {"tls-leef": siem.free_port(), "tls-cef": siem.free_port()}
        self.rsyslog = siem.Rsyslog(self.tmp / "rsyslog", self.pki, tls_ports, siem.free_port(socket.SOCK_DGRAM))
        self.rsyslog.start()
        check("rsyslogd: two TLS listeners and a UDP listener up", True)
        self.raw = siem.RawTcpReceiver()
        addr = lambda port: "127.0.0.1:%d" % port  # noqa: E731
        self.destinations = [
            {"name": "soc-leef", "transport": "tls", "address": addr(tls_ports["tls-leef"]), "format": "leef",
             "records": RECORDS + ["allowed_flows"], "ca_file": str(self.pki.ca), "rate_limit_per_second": 100000},
            {"name": "soc-cef", "transport": "tls", "address": addr(tls_ports["tls-cef"]), "format": "cef",
             "records": RECORDS, "ca_file": str(self.pki.ca), "server_name": "localhost",
             "rate_limit_per_second": 100000},
            {"name": "soc-ocsf", "transport": "udp", "address": addr(self.rsyslog.udp_port), "format": "ocsf",
             "records": RECORDS, "rate_limit_per_second": 100000},
            {"name": "raw-cef", "transport": "tcp", "address": addr(self.raw.port), "format": "cef",
             "records": ["drops", "incidents", "quarantines", "audit"], "rate_limit_per_second": 100000},
        ]
        self.good = [d["name"] for d in self.destinations]
        self.receiver_of = {"soc-leef": ("rsyslog", "tls-leef"), "soc-cef": ("rsyslog", "tls-cef"),
                            "soc-ocsf": ("rsyslog", "udp"), "raw-cef": ("raw", None)}
        checkpoints = self.tmp / "checkpoints.jsonl"
        self.controller = types.SimpleNamespace(checkpoints=checkpoints, stop=lambda: None)
        config = self.tmp / "controller-siem.json"
        config.write_text(json.dumps({"controller_name": siem.CONTROLLER_NAME, "evidence_checkpoint_interval_ms": 1000,
                                      "evidence_checkpoint_file": str(checkpoints),
                                      # A hot period of seconds: the run also seals archive segments,
                                      # which the export and the evidence checks then read.
                                      "evidence_hot_period_ms": 5000, "evidence_segment_period_ms": 1000,
                                      "evidence_archive_interval_ms": 300,
                                      "siem": {"destinations": self.destinations}}, indent=1))

        section("lab up")
        self.lab_started = True
        # --flow-interval 1: the enforcers' allowed-flow summaries (the lab policy logs allowed
        # connections) arrive within the run.
        lab_up = up_with_lab_policy(self.state, "--controller-arg=--config=%s" % config,
                                    "--enforcer-arg=--flow-interval=1")
        if lab_up is None:
            return
        admin, soc, _, _ = lab_up
        siem.TOKENS.update(admin=admin, soc=soc)   # Run's API calls name siem.TOKENS at call time
        self.c = LabClient(PORT)
        self.pid = lab_doc(self.state)["controller"]["pid"]
        self.workloads = [w["id"] for w in lab_doc(self.state)["workloads"]]
        status = self.evidence()
        check("evidence: lists the four destinations",
              sorted(d["name"] for d in status) == sorted(self.good), status)
        self.wait_delivered("lab up: enrollment, inventory, policy")

        section("real traffic, scan, incident, quarantines")
        self.traffic(admin, soc)
        self.wait_delivered("the lab run's drops, incident, quarantines and audit", seconds=120)
        figure("evidence after the run", {d["name"]: {k: d.get(k) for k in ("state", "delivered", "pending")}
                                           for d in self.evidence()})

        section("field by field")
        self.compare()
        self.lab_content()

        section("the lab run's evidence, and tampering with it")
        self.evidence_of_the_run()

    def evidence_of_the_run(self):
        """Issue 16, acceptance 2 on a store made by this lab run: a consistent copy of the
        controller's database (SQLite's backup API, while it runs) with its archive segments
        verifies, and each of the six kinds of tampering is found by `bulkheadctl evidence
        verify`, which names the first broken record: a changed byte in one of the lab's drop
        events, a deleted drop event, a deleted audit entry, a truncated archive segment, two
        drop events swapped, and the drops chain rewritten consistently inside the database
        (every link recomputed with evidence_tamper's independent implementation of the chain
        format) that only the exported checkpoint file contradicts."""
        import sqlite3
        sys.path.insert(0, str(HERE.parent / "evidence_tamper"))
        from test_evidence_tamper import rewrite_drops_chain  # the test's own chain format, not the controller's
        data_dir = Path(lab_doc(self.state)["controller"]["data_dir"])
        ctl = str(BIN / "bulkheadctl")
        soc = siem.TOKENS["soc"]

        # Fresh drops of the lab (vdi-001 -> vdi-002, denied, four ports: four events), so that
        # the database (hot period 5 s) holds several of the lab's own drops side by side when
        # the copy is taken, and a checkpoint that names them has been exported.
        ports = (7101, 7102, 7103, 7104)
        for port in ports:
            in_ns(self.state, "vdi-001", "timeout", "0.5", "bash", "-c", "exec 3<>/dev/tcp/10.1.0.2/%d" % port)

        def burst_stored():
            status, body = api("GET", "/events?workload=vdi-001&limit=1000", soc)
            found = [e for e in body.get("events", []) if e["type"] == "drop" and e.get("dst") == "10.1.0.2"
                     and e.get("dport") in ports] if status == 200 else []
            return len({e["dport"] for e in found}) == len(ports) and sorted(e["id"] for e in found)
        burst = poll(burst_stored, 20, "the burst's four drops of vdi-001 -> vdi-002 stored")

        def exported_checkpoint():
            lines = [json.loads(line) for line in self.controller.checkpoints.read_text().splitlines() if line.strip()]
            return burst and any(c["heads"].get("drops", {}).get("sequence", 0) >= burst[-1] for c in lines)
        poll(exported_checkpoint, 10, "a signed checkpoint naming the burst exported to the checkpoint file")

        base = self.tmp / "evidence-base"
        (base / "evidence").mkdir(parents=True)
        source = sqlite3.connect(data_dir / "bulkhead.db")
        target = sqlite3.connect(base / "bulkhead.db")
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        shutil.copy(data_dir / "evidence" / "signing-key.pem.pub", base / "evidence")
        if (data_dir / "archive").exists():
            shutil.copytree(data_dir / "archive", base / "archive")
        # The outside copy of the checkpoints, as far as the copied store reaches: lines written
        # after the backup name records the copy does not have.
        checkpoints = self.tmp / "evidence-checkpoints.jsonl"
        db = sqlite3.connect(base / "bulkhead.db")
        try:
            heads = {"drops": db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0],
                     "audit": db.execute("SELECT COALESCE(MAX(chain_seq), 0) FROM audit_log").fetchone()[0]}
            heads.update(db.execute("SELECT stream, MAX(sequence) FROM evidence_changes GROUP BY stream").fetchall())
            in_db = [row[0] for row in db.execute("SELECT id FROM events WHERE id >= ? ORDER BY id", (burst[0] if burst else 0,))]
        finally:
            db.close()
        kept = [line for line in self.controller.checkpoints.read_text().splitlines() if line.strip() and all(
            head["sequence"] <= heads.get(stream, 0) for stream, head in json.loads(line)["heads"].items())]
        checkpoints.write_text("\n".join(kept) + "\n")
        check("the copied database holds the burst's drops", bool(burst) and set(burst) <= set(in_db), (burst, in_db))
        if not burst or not set(burst) <= set(in_db):
            return

        def copy_of(name):
            copy = self.tmp / ("evidence-" + name)
            shutil.copytree(base, copy)
            return copy

        def verify(copy, *extra):
            return subprocess.run([ctl, "evidence", "verify", "--data-dir", str(copy), *extra], capture_output=True,
                                  text=True, timeout=120)

        def change(copy, *statements):
            db = sqlite3.connect(copy / "bulkhead.db")
            try:
                for statement in statements:
                    db.execute(*statement) if isinstance(statement, tuple) else db.execute(statement)
                db.commit()
            finally:
                db.close()

        r = verify(copy_of("untouched"), "--checkpoints", str(checkpoints))
        check("evidence: a copy of the lab run's store and archive verifies, with the exported checkpoints (exit 0)",
              r.returncode == 0 and "evidence verifies" in r.stdout, r.stdout + r.stderr)
        segments = sorted((base / "archive").glob("*.bhar"))
        check("evidence: the lab run sealed archive segments (hot period of seconds)", len(segments) >= 1, segments)
        figure("evidence verify of the lab run", r.stdout.strip().replace("\n", "; "))

        a, b, c = burst[0], burst[1], burst[2]
        copy = copy_of("changed-byte")
        change(copy, ("UPDATE events SET document = replace(document, '\"drop\"', '\"dr0p\"') WHERE id = ?", (c,)))
        r = verify(copy)
        check("evidence: a changed byte in one of the lab's drop events is named",
              r.returncode == 1 and ("drops #%d: altered" % c) in r.stdout, r.stdout + r.stderr)

        copy = copy_of("deleted-event")
        change(copy, ("DELETE FROM events WHERE id = ?", (b,)))
        r = verify(copy)
        check("evidence: a deleted drop event of the lab run is named",
              r.returncode == 1 and ("drops #%d: missing" % b) in r.stdout, r.stdout + r.stderr)

        copy = copy_of("deleted-audit")
        change(copy, "DELETE FROM audit_log WHERE chain_seq = 3")
        r = verify(copy)
        check("evidence: a deleted audit entry of the lab run is named",
              r.returncode == 1 and "audit #3: missing" in r.stdout, r.stdout + r.stderr)

        # Two neighbours in the database, swapped with their ids (enforcer_seq made unique on the way).
        pair = next(((x, y) for x, y in zip(in_db, in_db[1:]) if y == x + 1), None)
        check("two neighbouring drop events in the copied database", pair is not None, in_db)
        if pair:
            x, y = pair
            copy = copy_of("swapped")
            change(copy, ("UPDATE events SET enforcer_seq = -enforcer_seq WHERE id IN (?, ?)", (x, y)),
                   ("UPDATE events SET id = -id WHERE id IN (?, ?)", (x, y)),
                   ("UPDATE events SET id = ? WHERE id = ?", (y, -x)), ("UPDATE events SET id = ? WHERE id = ?", (x, -y)),
                   "UPDATE events SET enforcer_seq = -enforcer_seq WHERE enforcer_seq < 0")
            r = verify(copy)
            check("evidence: two of the lab's drop events swapped are named",
                  r.returncode == 1 and ("drops #%d: altered" % x) in r.stdout, r.stdout + r.stderr)

        if segments:
            copy = copy_of("truncated-segment")
            victim = copy / "archive" / segments[0].name
            with open(victim, "r+b") as f:
                f.truncate(victim.stat().st_size - 5)
            r = verify(copy)
            check("evidence: a truncated archive segment of the lab run is named",
                  r.returncode == 1 and "truncated" in r.stdout and segments[0].name in r.stdout, r.stdout + r.stderr)

        # The attacker who holds the database rewrites vdi-001's burst as another workload's and
        # recomputes every later link, and deletes the checkpoints the database keeps: the
        # database is consistent again; only the exported checkpoints disagree.
        copy = copy_of("rewritten")
        db = sqlite3.connect(copy / "bulkhead.db")
        try:
            previous = db.execute("SELECT chain_hash FROM events WHERE id = ?", (a - 1,)).fetchone()
            if previous is None:  # the event before the burst was archived: the segment's last link
                previous = db.execute("SELECT hash FROM evidence_chain_start WHERE stream = 'drops'").fetchone()
            previous = previous[0]
            db.execute("UPDATE events SET workload = 'vdi-nobody' WHERE id = ?", (a,))
            rewrite_drops_chain(db, a, previous)
            db.execute("DELETE FROM evidence_checkpoints")
            db.commit()
        finally:
            db.close()
        empty = self.tmp / "no-checkpoints.jsonl"
        empty.write_text("")
        r = verify(copy, "--checkpoints", str(empty))
        check("evidence: the rewritten lab chain is consistent inside the database (verify without outside checkpoints passes)",
              r.returncode == 0, r.stdout + r.stderr)
        r = verify(copy, "--checkpoints", str(checkpoints))
        check("evidence: the rewritten lab chain contradicts the exported checkpoint file, which verify names",
              r.returncode == 1 and "checkpoint-mismatch" in r.stdout, r.stdout + r.stderr)

    def stored(self):
        """Run.stored(), with the enforcers' allowed-flow summaries (stored type
        "allowed_flows", enforcer/nflog/README.md) named "allowed_flow" as Run.compare's filter
        expects (siem_export uploads that type itself). Only soc-leef subscribes to allowed
        flows, and LEEF carries no event type, so the rename changes no compared field.
        A summary has no time_ns: its time is last_seen_ns (else time_unix_ms), the rule by
        which an uploaded event's time is stored (controller/services/event_batch.cpp), which
        Run's expected_event would otherwise replace with received_at."""
        events, audit, incidents, quarantines = super().stored()
        for e in events:
            if e["type"] == "allowed_flows":
                e["type"] = "allowed_flow"
                if "time_ns" not in e:
                    e["time_ns"] = e.get("last_seen_ns") or e["time_unix_ms"] * 1_000_000
        return events, audit, incidents, quarantines

    def lab_content(self):
        """The records compared above are the lab run's: NFLOG drops from both enforcers, the
        scan's incident, the analyzer's automatic quarantine, the admin's manual one."""
        section("the compared records are the lab run's")
        events, audit, incidents, quarantines = self.stored()
        drops = [e for e in events if e["type"] == "drop"]
        check("drops stored by both enforcers (hv1, hv2) from their NFLOG groups, each with its interface",
              {e["enforcer"] for e in drops} == {"hv1", "hv2"} and all(e.get("indev") for e in drops),
              sorted({(e["enforcer"], e.get("indev")) for e in drops}))
        check("drops of reasons deny, default and quarantine (the kernel's rules)",
              {"deny", "default", "quarantine"} <= {e.get("reason") for e in drops}, sorted({e.get("reason") for e in drops}))
        check("vdi-002's scan drops (nmap from vdi-002 to several VDIs)",
              len({e["dst"] for e in drops if e.get("workload") == "vdi-002" and e.get("reason") in ("deny", "default")}) >= 3,
              [(e["dst"], e.get("dport")) for e in drops if e.get("workload") == "vdi-002"])
        check("allowed-flow summaries of the enforcers stored (exported to soc-leef)",
              any(e["type"] == "allowed_flow" for e in events), sorted({e["type"] for e in events}))
        check("the scan's incident: vdi-002, resolved", [(i["source_workload"], i["state"]) for i in incidents]
              == [("vdi-002", "resolved")], incidents)
        auto = [q for q in quarantines if q["workload"] == "vdi-002" and q["released_at"]]
        check("vdi-002: the analyzer's automatic quarantine for the incident, released",
              len(auto) == 1 and auto[0]["automatic"] and auto[0]["actor"] == "analyzer"
              and auto[0]["incident"] == self.incident, auto)
        manual = [q for q in quarantines if q["workload"] == "vdi-103" and q["released_at"]]
        check("vdi-103: the admin's manual quarantine, released by the admin",
              len(manual) == 1 and not manual[0]["automatic"] and manual[0]["reason"] == "SOC: manual containment"
              and manual[0]["released_by"] == manual[0]["actor"], manual)
        actions = [a["action"] for a in audit]
        check("audit: the incident's acknowledge and resolve, quarantine create and release",
              all(any(a.startswith(p) for a in actions) for p in ("incident.ack", "incident.resolve", "quarantine.create"))
              and any(a.startswith("quarantine.") and a != "quarantine.create" for a in actions), actions)

    def traffic(self, admin, soc):
        expect_dropped("vdi-001 -> vdi-002 ping dropped by the vdi -> vdi deny rule on hv1", self.state,
                       "vdi-001", "10.1.0.2", "icmp", control=PING_FS, reason="deny", token=soc)
        last_allowed_ms = int(time.time() * 1000) - 100
        expect_dropped("vdi-101 -> file server tcp/80 (no rule) dropped by the default rule on hv2", self.state,
                       "vdi-101", FILE_SERVER, "tcp", 80, control=(FILE_SERVER, "tcp", 445), reason="default",
                       token=soc)
        scan = in_ns(self.state, "vdi-002", "nmap", "-sT", "-Pn", "-n", "--max-retries", "0", "-p",
                     "22,139,445,3389", "10.1.0.0/30", "10.1.1.0/30", timeout=120)
        check("nmap ran in vdi-002", scan.returncode == 0, scan.stderr[-500:])
        incident = poll(lambda: incidents_of(soc, "vdi-002"), 20, "the analyzer opens an incident for vdi-002")
        quarantine = poll(lambda: applied_quarantine(soc, "vdi-002"), 20,
                          "automatic quarantine of vdi-002 applied on hv1")
        if quarantine:
            check("the quarantine is automatic, by the analyzer",
                  quarantine["automatic"] and quarantine["actor"] == "analyzer", quarantine)
        expect_dropped("quarantined vdi-002 -> file server tcp/445 dropped by its quarantine", self.state, "vdi-002",
                       FILE_SERVER, "tcp", 445, control=(EDR, "tcp", 443), reason="quarantine", token=soc)
        if incident:
            # The scan's drops are all in: later versions of this incident come from the SOC alone.
            self.incident = incident[0]["id"]
            s1, b1 = api("POST", "/incidents/%d/acknowledge" % self.incident, soc)
            s2, b2 = api("POST", "/incidents/%d/resolve" % self.incident, admin)
            check("the scan incident acknowledged (soc) and resolved (admin): audited, new versions",
                  (s1, s2) == (200, 200), (b1, b2))
        status, released = api("DELETE", "/quarantines/vdi-002?wait_ms=5000", soc)
        check("DELETE releases vdi-002, acked by hv1", status == 200 and released.get("released")
              and released.get("applied"), released)
        # An admin action on another workload: a manual quarantine and its release, audited.
        status, body = api("POST", "/quarantines", admin, {"workload": "vdi-103", "reason": "SOC: manual containment"})
        check("vdi-103 quarantined by hand (admin)", status in (200, 201), body)
        poll(lambda: applied_quarantine(soc, "vdi-103"), 20, "vdi-103's manual quarantine applied on hv2")
        status, released = api("DELETE", "/quarantines/vdi-103?wait_ms=5000", admin)
        check("DELETE releases vdi-103, acked by hv2", status == 200 and released.get("released"), released)
        # The control of the vdi-101 probe above (vdi-101 -> file server tcp/445) is the run's
        # last connection an allow rule logs (a quarantine's allow-list logs none): once its
        # allowed-flow summary is stored, the enforcers send no more events, and the comparison
        # sees every event the destinations were sent.

        def last_flow():
            status, body = api("GET", "/events?workload=vdi-101&limit=1000", soc)
            return status == 200 and [e for e in body["events"] if e["type"] in ("allowed_flow", "allowed_flows")
                                      and e.get("dst") == FILE_SERVER and e.get("dport") == 445
                                      and siem.ms_of(e["received_at"]) >= last_allowed_ms]
        poll(last_flow, 20, "the allowed-flow summary of vdi-101 -> file server tcp/445 stored")


def main():
    if os.geteuid() != 0 or shutil.which("nmap") is None:
        print("skipped: needs root and nmap")
        return 77
    for need, why in ((siem.RSYSLOGD, "rsyslogd"), (siem.OSSL_DRIVER, "rsyslog's ossl driver (rsyslog-openssl)")):
        if not os.path.exists(need):
            print("skipped: %s not installed (%s)" % (why, need))
            return 77
    if not shutil.which("openssl"):
        print("skipped: the openssl CLI is not installed")
        return 77
    tmp = Path(tempfile.mkdtemp(prefix="bulkhead-lab-siem-"))
    log("working in %s" % tmp)
    started = time.monotonic()
    run = None
    try:
        run = LabRun(types.SimpleNamespace(controller=str(BIN / "bulkhead-controller"), source_dir=str(REPO)), tmp)
        run.main()
    except Exception:  # a broken step is a failed check with its traceback; cleanup still runs
        import traceback
        check("the run completed without an exception", False, traceback.format_exc())
    finally:
        if run is not None:
            run.cleanup()
        if "--keep" not in sys.argv:
            shutil.rmtree(tmp, ignore_errors=True)
    figure("run time", "%.0f s" % (time.monotonic() - started))
    return report()


if __name__ == "__main__":
    sys.exit(main())
