#!/usr/bin/env python3
"""The analyzer inside the real controller, over its REST API: attribution of drops to
workloads and users, the incidents it raises, and the response rules (automatic quarantine
and its guardrails, pages, the SOAR webhook).

Starts `bulkhead-controller` on a free loopback port with a temporary data directory, an
inventory in which two workloads on different hypervisors hold the same private address,
a policy whose response section quarantines automatically (dry-run for servers, at most two
automatic quarantines a minute), and a SOAR webhook receiver that fails twice before it
accepts. Drop events are uploaded as the enforcers upload them (enrolled credentials).

Checks:
- attribution: the colliding address 10.1.0.1 held by vdi-001 (hv1) and vdi-201 (hv2) gives
  two incidents with their own users, MACs and hypervisors; an inbound drop from that address
  is neither of them; a VPN pool address held by alice, then by bob, gives one incident per
  session, each naming its user and session;
- response: quarantine, the per-minute rate limit (the third is refused and paged), dry-run
  for a segment's rule, a critical workload paged and never quarantined, an unmanaged (VPN)
  source paged; each audited with its reason;
- the scope graph (source, targets, other sources, segments) and its download form;
- webhooks: retried with the same delivery id, signed, in order;
- bad input: response rules naming unknown detectors or segments are refused with their
  JSON pointer and change nothing; a bad analyzer configuration or webhook URL stops the
  controller at start with a message naming it.

Usage: test_controller_analyzer.py --controller build/bin/bulkhead-controller [--source-dir REPO]
"""
import argparse
import hashlib
import hmac
import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "controller_api"))
import test_controller_api as api  # noqa: E402  (Client, Controller, check, poll, report, TOKENS)

check = api.check
TOKENS = api.TOKENS
WEBHOOK_SECRET = "webhook-secret-for-the-test-0123"
MINUTE_NS = 60 * 1_000_000_000


class WebhookReceiver:
    """A SOAR stand-in: answers 503 to the first `failures` POSTs, then 200; keeps them all."""

    def __init__(self, failures):
        self.failures = failures
        self.received = []  # (status answered, headers dict, body bytes)
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status = 503 if len(receiver.received) < receiver.failures else 200
                    receiver.received.append((status, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self):
        with self.lock:
            return [(h, json.loads(b)) for s, h, b in self.received if s == 200]

    def all(self):
        with self.lock:
            return list(self.received)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def inventory_document(source_dir):
    inventory = json.loads((source_dir / "examples/vdi-pool/inventory.json").read_text())
    # vdi-201 on hv2 holds 10.1.0.1 as vdi-001 on hv1 does (two sites, one private range).
    inventory["workloads"].append({"id": "vdi-201", "enforcer": "hv2", "addresses": ["10.1.0.1"],
                                   "mac": "52:54:00:02:02:01", "labels": {"role": "vdi", "pool": "branch"},
                                   "user": "yamada", "hostname": "VDI-201",
                                   "attachment": {"mode": "port", "interface": "vdi201"}})
    inventory["workloads"].append({"id": "srv-01", "enforcer": "hv1", "addresses": ["10.1.0.200"],
                                   "labels": {"role": "server"}, "hostname": "DC-01", "critical": True,
                                   "attachment": {"mode": "port", "interface": "srv01"}})
    inventory["workloads"].append({"id": "srv-02", "enforcer": "hv1", "addresses": ["10.1.0.201"],
                                   "labels": {"role": "server"}, "hostname": "APP-02",
                                   "attachment": {"mode": "port", "interface": "srv02"}})
    return inventory


def policy_document(source_dir):
    policy = json.loads((source_dir / "examples/vdi-pool/policy.json").read_text())
    policy["segments"].append({"name": "servers", "selector": {"labels": {"role": "server"}}})
    policy["response"] = {
        "incident": {"distinct_targets": 5, "window_seconds": 60, "severity": "high"},
        "decoy_severity": "critical",
        "auto_quarantine": {"mode": "on", "min_severity": "high", "max_per_minute": 2,
                            "rules": [{"segments": ["servers"], "mode": "dry-run", "min_severity": "medium"}]},
    }
    return policy


class Suite:
    def __init__(self, client, source_dir, webhook):
        self.c = client
        self.src = source_dir
        self.webhook = webhook
        self.seq = {}
        self.credentials = {}
        self.inventory = inventory_document(source_dir)

    def admin(self):
        return TOKENS["admin"]

    def mac_of(self, workload):
        return next(w.get("mac", "") for w in self.inventory["workloads"] if w["id"] == workload)

    def port_of(self, workload):
        return next(w["attachment"]["interface"] for w in self.inventory["workloads"] if w["id"] == workload)

    def drop(self, workload, src, dst, port, t, direction="out", reason="default"):
        e = {"type": "drop", "count": 1, "time_ns": t, "direction": direction, "reason": reason, "src": src,
             "dst": dst, "proto_name": "tcp", "dport": port, "family": 4, "mode": "enforce", "workload": workload}
        if direction == "out":
            e["src_mac"] = self.mac_of(workload)
            e["indev"] = self.port_of(workload)
        else:
            e["indev"] = "uplink0"
        return e

    def upload(self, enforcer, events):
        batch = []
        for e in events:
            self.seq[enforcer] = self.seq.get(enforcer, 0) + 1
            batch.append({"seq": self.seq[enforcer], "event": e})
        return self.c.post(f"/api/v1/enforcers/{enforcer}/events", {"events": batch}, self.credentials[enforcer])

    def incidents_of(self, key):
        r = self.c.get("/api/v1/incidents", TOKENS["soc"], query={"workload": key})
        return r.json["incidents"] if r.status == 200 else []

    def wait_incident(self, key, predicate=lambda i: True, timeout=5):
        found = api.poll(lambda: [i for i in self.incidents_of(key) if predicate(i)] or None, timeout)
        return found[0] if found else None

    def audit(self, action):
        r = self.c.get("/api/v1/audit", self.admin(), query={"action": action, "limit": 100})
        return r.json["entries"] if r.status == 200 else []

    # --- set-up -------------------------------------------------------------------------
    def setup(self):
        t = self.admin()
        r = self.c.request("PUT", "/api/v1/inventory", self.inventory, t)
        check("setup: inventory with a colliding address accepted", r.status == 200, r)
        r = self.c.post("/api/v1/policies", policy_document(self.src), t)
        check("setup: policy uploaded", r.status == 201, r)
        a = self.c.post(f"/api/v1/policies/{r.json['id']}/activate", None, t)
        check("setup: policy activated", a.status == 200, a)
        for enforcer in ("hv1", "hv2"):
            r = self.c.post(f"/api/v1/enforcers/{enforcer}/enrollment-token", None, t)
            e = self.c.post("/api/v1/enforcers/enroll", {"enforcer": enforcer, "token": r.json["token"]})
            check(f"setup: {enforcer} enrolled", e.status == 201, e)
            self.credentials[enforcer] = e.json["credential"]

    # --- sections -----------------------------------------------------------------------
    def test_bad_response_rules(self):
        t = self.admin()
        before = (self.c.get("/api/v1/policies", t).json, self.c.get("/api/v1/health").json.get("active_revision"))
        for name, rules, extra, pointer in [
            ("unknown detector", [{"detectors": ["port-sniffing"], "mode": "on"}], {}, "/response/auto_quarantine/rules/0/detectors/0"),
            ("unknown segment", [{"segments": ["nope"], "mode": "on"}], {}, "/response/auto_quarantine/rules/0/segments/0"),
            ("missing mode", [{"segments": ["vdi"]}], {}, "/response/auto_quarantine/rules/0"),
            ("bad mode", [{"mode": "sometimes"}], {}, "/response/auto_quarantine/rules/0/mode"),
            ("unknown member", [{"mode": "on", "when": "always"}], {}, "/response/auto_quarantine/rules/0/when"),
            ("empty segments", [{"segments": [], "mode": "on"}], {}, "/response/auto_quarantine/rules/0/segments"),
            ("negative rate limit", [], {"max_per_minute": -1}, "/response/auto_quarantine/max_per_minute"),
        ]:
            policy = policy_document(self.src)
            policy["response"]["auto_quarantine"]["rules"] = rules
            policy["response"]["auto_quarantine"].update(extra)
            r = self.c.post("/api/v1/policies", policy, t)
            errors = (r.json or {}).get("error", {}).get("errors", []) if r.status == 422 else []
            check(f"policy: {name} -> 422 at {pointer}", any(e.get("pointer") == pointer for e in errors), r)
        after = (self.c.get("/api/v1/policies", t).json, self.c.get("/api/v1/health").json.get("active_revision"))
        check("policy: refused response rules change nothing", before == after)

    def test_colliding_addresses(self):
        now = time.time_ns()
        # vdi-001 (hv1) and vdi-201 (hv2) both hold 10.1.0.1; each tries 5 targets.
        r1 = self.upload("hv1", [self.drop("vdi-001", "10.1.0.1", "10.9.1.1", 7001 + i, now + i) for i in range(5)])
        r2 = self.upload("hv2", [self.drop("vdi-201", "10.1.0.1", "10.9.2.1", 7001 + i, now + i) for i in range(5)])
        check("collision: both batches stored", r1.status == 200 and r2.status == 200, (r1, r2))
        a = self.wait_incident("vdi-001")
        b = self.wait_incident("vdi-201")
        check("collision: one incident per workload, not one for the address", a is not None and b is not None
              and a["id"] != b["id"], (a, b))
        if a and b:
            aa, ba = a["details"].get("attribution", {}), b["details"].get("attribution", {})
            check("collision: vdi-001 attributed to kimura on hv1 (port vdi001, its MAC)",
                  aa.get("user") == "kimura" and aa.get("enforcer") == "hv1" and aa.get("port") == "vdi001"
                  and aa.get("mac") == "52:54:00:01:00:01" and aa.get("hostname") == "VDI-001"
                  and "vdi" in aa.get("segments", []), aa)
            check("collision: vdi-201 attributed to yamada on hv2 (port vdi201, its MAC)",
                  ba.get("user") == "yamada" and ba.get("enforcer") == "hv2" and ba.get("port") == "vdi201"
                  and ba.get("mac") == "52:54:00:02:02:01", ba)
            check("collision: explanations name each workload and user",
                  "vdi-001 (user kimura)" in a["explanation"] and "vdi-201 (user yamada)" in b["explanation"],
                  (a["explanation"], b["explanation"]))
            check("collision: each incident counts only its own 5 drops",
                  a["event_count"] == 5 and b["event_count"] == 5, (a["event_count"], b["event_count"]))
            check("collision: both quarantined automatically (the first two of the minute)",
                  [x["action"] for x in a["details"].get("response", [])] == ["quarantine"]
                  and [x["action"] for x in b["details"].get("response", [])] == ["quarantine"], (a["details"], b["details"]))
        for w in ("vdi-001", "vdi-201"):
            q = self.c.get(f"/api/v1/quarantines/{w}", TOKENS["soc"])
            check(f"collision: {w} quarantined by the analyzer", q.status == 200 and q.json.get("actor") == "analyzer", q)
        # An inbound drop on hv2 from 10.1.0.1: the address has two holders, so the sender is
        # neither workload: its own source (hv2 + interface + address), no user guessed.
        r = self.upload("hv2", [self.drop("vdi-101", "10.1.0.1", "10.1.1.1", 9000 + i, now + 100 + i, direction="in")
                                for i in range(5)])
        check("collision: inbound batch stored", r.status == 200, r)
        c = self.wait_incident("hv2/10.1.0.1")
        check("collision: inbound drops from the colliding address are a third, unattributed source",
              c is not None and c["details"]["attribution"].get("workload") == "" and c["details"]["attribution"].get("user") == ""
              and c["id"] not in (a and a["id"], b and b["id"]), c)
        if c:
            check("collision: an unattributed source is paged, not quarantined",
                  [x["action"] for x in c["details"].get("response", [])] == ["page"], c["details"].get("response"))
        if a and b:
            check("collision: vdi-001's and vdi-201's counts did not move",
                  self.c.get(f"/api/v1/incidents/{a['id']}", TOKENS["soc"]).json["event_count"] == 5
                  and self.c.get(f"/api/v1/incidents/{b['id']}", TOKENS["soc"]).json["event_count"] == 5)
        self.collision_incident = a

    def test_rate_limit(self):
        now = time.time_ns()
        # Third automatic quarantine inside one minute: refused, paged, audited.
        r = self.upload("hv1", [self.drop("vdi-002", "10.1.0.2", "10.9.1.1", 7101 + i, now + i) for i in range(5)])
        check("rate limit: vdi-002 batch stored", r.status == 200, r)
        i = self.wait_incident("vdi-002")
        actions = [x["action"] for x in (i or {}).get("details", {}).get("response", [])]
        check("rate limit: the third automatic quarantine of the minute is rate-limited", actions == ["rate-limited"], i)
        check("rate limit: vdi-002 NOT quarantined", self.c.get("/api/v1/quarantines/vdi-002", TOKENS["soc"]).status == 404)
        audit = self.audit("quarantine.rate-limited")
        check("rate limit: audited with the reason", len(audit) == 1 and "limit of 2" in json.dumps(audit[0]["after"]), audit)
        s = self.c.get("/api/v1/analyzer", TOKENS["soc"])
        check("analyzer status: 2 automatic quarantines in the last minute, limit 2",
              s.status == 200 and s.json["auto_quarantines_last_minute"] == 2 and s.json["max_auto_quarantines_per_minute"] == 2, s)

    def test_segment_rule_and_critical(self):
        now = time.time_ns()
        r = self.upload("hv1", [self.drop("srv-02", "10.1.0.201", "10.9.3.1", 7001 + i, now + i) for i in range(5)]
                        + [self.drop("srv-01", "10.1.0.200", "10.9.4.1", 7001 + i, now + i) for i in range(5)])
        check("servers: batch stored", r.status == 200, r)
        dry = self.wait_incident("srv-02")
        check("dry-run rule for segment servers: srv-02's incident records what would have been done",
              dry is not None and [x["action"] for x in dry["details"].get("response", [])] == ["dry-run"]
              and "dry_run_quarantine" in dry["details"], dry)
        check("dry-run: srv-02 not quarantined", self.c.get("/api/v1/quarantines/srv-02", TOKENS["soc"]).status == 404)
        check("dry-run: audited", any(e["target"] == "workload/srv-02" for e in self.audit("quarantine.dry-run")))
        crit = self.wait_incident("srv-01")
        check("critical workload srv-01: paged, never quarantined",
              crit is not None and [x["action"] for x in crit["details"].get("response", [])] == ["page"]
              and "critical" in crit["details"]["response"][0]["reason"], crit)
        check("critical: srv-01 not quarantined", self.c.get("/api/v1/quarantines/srv-01", TOKENS["soc"]).status == 404)
        check("critical: audited as incident.page", any(e["target"] == f"incident/{crit['id']}" for e in self.audit("incident.page"))
              if crit else False)

    def test_vpn_pool_changes_hands(self):
        t = self.admin()
        now_ms = int(time.time() * 1000)
        alice = self.c.post("/api/v1/vpn-sessions", {"user": "alice", "pool_address": "10.8.0.10", "real_address": "198.51.100.1",
                                                     "start_ms": now_ms - 10 * 60000, "end_ms": now_ms - 5 * 60000}, t)
        bob = self.c.post("/api/v1/vpn-sessions", {"user": "bob", "pool_address": "10.8.0.10", "real_address": "198.51.100.2",
                                                   "start_ms": now_ms - 5 * 60000}, t)
        check("vpn: two sessions on one pool address", alice.status == 201 and bob.status == 201, (alice, bob))
        t_alice = (now_ms - 8 * 60000) * 1_000_000
        t_bob = (now_ms - 1 * 60000) * 1_000_000
        events = [self.drop("vdi-003", "10.8.0.10", "10.1.0.3", 8001 + i, t_alice + i, direction="in") for i in range(5)]
        events += [self.drop("vdi-003", "10.8.0.10", "10.1.0.3", 8101 + i, t_bob + i, direction="in") for i in range(5)]
        r = self.upload("hv1", events)
        check("vpn: inbound drops from the pool address stored", r.status == 200, r)
        a = self.wait_incident(f"vpn:alice#{alice.json['id']}")
        b = self.wait_incident(f"vpn:bob#{bob.json['id']}")
        check("vpn: the drops during alice's session are alice's incident", a is not None
              and a["details"]["attribution"].get("vpn_session", {}).get("user") == "alice"
              and a["details"]["attribution"]["vpn_session"].get("real_address") == "198.51.100.1"
              and "user alice" in a["explanation"] and a["event_count"] == 5, a)
        check("vpn: the drops during bob's session are bob's, a separate incident", b is not None and a is not None
              and b["id"] != a["id"] and b["details"]["attribution"].get("vpn_session", {}).get("user") == "bob"
              and "user bob" in b["explanation"] and b["event_count"] == 5, b)
        check("vpn: a remote user is paged (no workload to quarantine)",
              a is not None and [x["action"] for x in a["details"].get("response", [])] == ["page"], a and a["details"].get("response"))

    def test_scope(self):
        a = getattr(self, "collision_incident", None)
        if not a:
            check("scope: needs the collision incident", False)
            return
        # Flow data: vdi-001's allowed DNS flows in the span (an enforcer's allowed-flow summary).
        t = time.time_ns()
        self.upload("hv1", [{"type": "allowed_flows", "count": 3, "first_seen_ns": t - 1000, "last_seen_ns": t,
                             "time_unix_ms": t // 1_000_000, "workload": "vdi-001", "interface": "vdi001",
                             "direction": "out", "subject": "vdi-001", "src": "10.1.0.1", "dst": "10.0.0.53",
                             "family": 4, "proto_name": "udp", "dport": 53}])
        r = self.c.get(f"/api/v1/incidents/{a['id']}/scope", TOKENS["soc"])
        check("scope: 200", r.status == 200 and r.json.get("schema") == "bulkhead.incident-scope.v1", r)
        if r.status != 200:
            return
        nodes = {n["id"]: n for n in r.json["nodes"]}
        edges = r.json["edges"]
        src = nodes.get("source:vdi-001", {})
        check("scope: the source node is vdi-001 with its user", src.get("kind") == "source" and src.get("user") == "kimura", src)
        check("scope: its target host 10.9.1.1 with 5 blocked services",
              any(e["source"] == "source:vdi-001" and e["target"] == "host:10.9.1.1" and e["kind"] == "blocked"
                  and e["blocked"] == 5 and len(e["services"]) == 5 for e in edges), edges)
        check("scope: flow data adds the allowed target (DNS) as an allowed edge",
              any(e["source"] == "source:vdi-001" and e["target"] == "host:10.0.0.53" and e["kind"] == "allowed"
                  and e["allowed"] == 3 and e["services"] == ["udp/53"] for e in edges), edges)
        check("scope: vdi-002, which tried the same host, is an other source",
              nodes.get("source:vdi-002", {}).get("kind") == "other-source"
              and any(e["source"] == "source:vdi-002" and e["target"] == "host:10.9.1.1" for e in edges), nodes)
        check("scope: vdi-201 (same address, other hypervisor, other targets) is not in it",
              "source:vdi-201" not in nodes, list(nodes))
        check("scope: segment vdi with member edges",
              nodes.get("segment:vdi", {}).get("kind") == "segment"
              and any(e["kind"] == "member" and e["source"] == "source:vdi-001" and e["target"] == "segment:vdi" for e in edges))
        d = self.c.get(f"/api/v1/incidents/{a['id']}/scope", TOKENS["automation"], query={"download": "1"})
        check("scope: download=1 is an attachment (SIEM export)",
              d.status == 200 and "attachment" in d.headers.get("content-disposition", "").lower(), d.headers)
        for q, status in [({"margin_s": -1}, 400), ({"margin_s": "x"}, 400)]:
            e = self.c.get(f"/api/v1/incidents/{a['id']}/scope", TOKENS["soc"], query=q)
            check(f"scope: bad {q} -> {status}", e.status == status, e)
        e = self.c.get("/api/v1/incidents/999999/scope", TOKENS["soc"])
        check("scope: unknown incident -> 404", e.status == 404, e)
        e = self.c.get(f"/api/v1/incidents/{a['id']}/scope", None)
        check("scope: no token -> 401", e.status == 401, e)

    def test_resolve_rearms(self):
        a = getattr(self, "collision_incident", None)
        if not a:
            return
        t = self.admin()
        self.c.delete("/api/v1/quarantines/vdi-001", t)
        r = self.c.post(f"/api/v1/incidents/{a['id']}/resolve", None, t)
        check("resolve: 200", r.status == 200, r)
        now = time.time_ns()
        self.upload("hv1", [self.drop("vdi-001", "10.1.0.1", "10.9.5.1", 7001 + i, now + i) for i in range(5)])
        again = self.wait_incident("vdi-001", lambda i: i["id"] != a["id"])
        check("resolve: the source's next scan opens a new incident at once, as a repeat offender",
              again is not None and again["details"].get("repeat_offender") is True, again)

    def test_exemptions(self):
        t = self.admin()
        now_ms = int(time.time() * 1000)
        before = self.c.get("/api/v1/analyzer/exemptions", TOKENS["soc"]).json
        for name, body, pointer in [
            ("no expiry", {"workload": "srv-02", "reason": "Nessus"}, ""),
            ("expired", {"workload": "srv-02", "reason": "Nessus", "expires_ms": now_ms - 1}, "/expires_ms"),
            ("beyond 90 days", {"workload": "srv-02", "reason": "Nessus", "expires_ms": now_ms + 91 * 86400000}, "/expires_ms"),
            ("workload and segment", {"workload": "srv-02", "segment": "servers", "reason": "x", "expires_ms": now_ms + 60000}, "/segment"),
            ("neither", {"reason": "x", "expires_ms": now_ms + 60000}, "/workload"),
            ("no reason", {"workload": "srv-02", "expires_ms": now_ms + 60000}, ""),
            ("unknown member", {"workload": "srv-02", "reason": "x", "expires_ms": now_ms + 60000, "forever": True}, "/forever"),
        ]:
            r = self.c.post("/api/v1/analyzer/exemptions", body, t)
            check(f"exemptions: {name} -> 400 at '{pointer}'", r.status == 400 and r.error.get("pointer") == pointer, r)
        r = self.c.post("/api/v1/analyzer/exemptions", {"workload": "srv-02", "reason": "x", "expires_ms": now_ms + 60000},
                        TOKENS["automation"])
        check("exemptions: automation role cannot add one -> 403", r.status == 403, r)
        check("exemptions: refused requests change nothing",
              self.c.get("/api/v1/analyzer/exemptions", TOKENS["soc"]).json == before)
        r = self.c.post("/api/v1/analyzer/exemptions", {"workload": "vdi-003", "enforcer": "hv1", "reason": "pentest CHG-7",
                                                        "expires_ms": now_ms + 3600000}, TOKENS["soc"])
        check("exemptions: the SOC exempts vdi-003 for an hour -> 201", r.status == 201 and r.json.get("id"), r)
        ex_id = r.json.get("id") if r.status == 201 else None
        now = time.time_ns()
        self.upload("hv1", [self.drop("vdi-003", "10.1.0.3", "10.9.6.1", 7001 + i, now + i) for i in range(8)])
        check("exemptions: an exempted scanner's scan opens no incident", self.incidents_of("vdi-003") == [],
              self.incidents_of("vdi-003"))
        check("exemptions: counted as exempted", self.c.get("/api/v1/analyzer", TOKENS["soc"]).json["totals"]["exempted"] >= 1)
        check("exemptions: audited", any(e["target"] == f"exemption/{ex_id}" for e in self.audit("analyzer.exemption.add")))
        r = self.c.delete(f"/api/v1/analyzer/exemptions/{ex_id}", TOKENS["soc"])
        check("exemptions: DELETE ends it", r.status == 200, r)
        check("exemptions: DELETE unknown -> 404", self.c.delete("/api/v1/analyzer/exemptions/9999", TOKENS["soc"]).status == 404)
        now = time.time_ns()
        self.upload("hv1", [self.drop("vdi-003", "10.1.0.3", "10.9.7.1", 7001 + i, now + i) for i in range(8)])
        check("exemptions: once ended, the next scan opens an incident", self.wait_incident("vdi-003") is not None)

    def test_webhooks(self):
        wanted = {"incident.opened", "quarantine.created", "incident.page"}
        ok = api.poll(lambda: wanted <= {body["type"] for _, body in self.webhook.accepted()}, 20, interval=0.1)
        received = self.webhook.all()
        check("webhooks: incident.opened, quarantine.created and incident.page delivered", ok,
              sorted({json.loads(b)["type"] for s, h, b in received}))
        first = received[:3]
        check("webhooks: the first delivery failed twice (503) and was retried with the same id",
              len(first) == 3 and [s for s, _, _ in first] == [503, 503, 200]
              and len({h.get("x-bulkhead-delivery") for _, h, _ in first}) == 1
              and [h.get("x-bulkhead-attempt") for _, h, _ in first] == ["1", "2", "3"], [(s, h) for s, h, _ in first])
        signed = all(h.get("x-bulkhead-signature") == "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), b, hashlib.sha256).hexdigest()
                     for _, h, b in received)
        check("webhooks: every body signed with HMAC-SHA256 of the shared secret", signed)
        opened = [body for _, body in self.webhook.accepted() if body["type"] == "incident.opened"]
        check("webhooks: incident.opened carries the incident and its explanation",
              opened and opened[0]["data"].get("explanation") and opened[0]["data"].get("id"), opened[:1])
        s = self.c.get("/api/v1/analyzer", TOKENS["soc"]).json
        check("analyzer status: webhook deliveries and retries counted",
              s["webhooks"]["delivered"] >= 3 and s["webhooks"]["retries"] >= 2 and s["webhooks"]["failed"] == 0, s["webhooks"])


def start_refusals(binary, workdir):
    """Bad analyzer configuration or webhook URL: the controller refuses to start, naming it."""
    bad = Path(workdir) / "analyzer-bad.json"
    bad.write_text(json.dumps({"host_sweep": {"min_hosts": 16, "min_host": 3}}))
    cases = [
        ("analyzer config with an unknown member", ["--analyzer-config", str(bad)], "min_host"),
        ("analyzer config not JSON", ["--analyzer-config", str(Path(workdir) / "missing.json")], "missing.json"),
        ("webhook URL not http(s)", ["--webhook", "ftp://soar.example/hook"], "ftp://soar.example/hook"),
    ]
    for name, extra, named in cases:
        p = subprocess.run([binary, "--data-dir", str(Path(workdir) / "refused"), "--plain-listen", "127.0.0.1:1"] + extra,
                           capture_output=True, text=True, timeout=20)
        check(f"start: {name} -> exit 2 naming it", p.returncode == 2 and named in p.stderr, (p.returncode, p.stderr))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--controller", required=True)
    parser.add_argument("--source-dir", default=str(HERE.parent.parent))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bulkhead-analyzer-api-")
    webhook = WebhookReceiver(failures=2)
    secret_file = Path(workdir) / "webhook.secret"
    secret_file.write_text(WEBHOOK_SECRET + "\n")
    secret_file.chmod(0o600)  # the controller refuses a secret other users can read
    controller = api.Controller(args.controller, workdir,
                                ["--webhook", f"http://127.0.0.1:{webhook.port}/soar/bulkhead",
                                 "--webhook-secret-file", str(secret_file)])
    try:
        start_refusals(args.controller, workdir)
        client = controller.start()
        suite = Suite(client, Path(args.source_dir), webhook)
        api.run_sections(suite, ["setup", "test_bad_response_rules", "test_colliding_addresses", "test_rate_limit",
                                 "test_segment_rule_and_critical", "test_vpn_pool_changes_hands", "test_scope",
                                 "test_resolve_rearms", "test_exemptions", "test_webhooks"], controller)
    finally:
        controller.stop()
        webhook.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return api.report()


if __name__ == "__main__":
    sys.exit(main())
