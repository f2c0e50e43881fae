#!/usr/bin/env python3
"""A controller restart (SIGKILL) in the middle of attacks and webhook deliveries: nothing
the analyzer was building and nothing the webhook outbox held may be lost or doubled.
Acceptance suite for the controller that keeps its analyzer state and its webhook outbox
across a crash; on a controller that keeps them in memory only, it fails (and says with
which figures).

One lab (real controller and enforcers over TLS, the lab policy, real packets), one
webhook receiver (an HTTP server in this process on 127.0.0.1, the controller started with
--webhook), one SIGKILL of the controller in the middle of everything:

  outbox      the receiver is down (nothing listens) while three VDIs touch the decoy:
              three critical incidents, three automatic quarantines; GET /api/v1/analyzer
              shows outbox.depth > 0. Then the controller is SIGKILLed, the receiver comes
              up, the controller restarts: the receiver gets every delivery (incident.opened
              of each incident, quarantine.created of each automatic quarantine,
              incident.page of each page) exactly once by X-Bulkhead-Delivery (a repeat
              only as a retry of the same id, X-Bulkhead-Attempt > 1), incident.opened
              before the incident's other deliveries; the outbox is empty afterwards.
  slow scan   vdi-003 sends one UDP datagram every 8 s to a new host (16 hosts: the
              slow-scan threshold; at most 8 targets per 60 s, below every fast rule), half
              before the kill, half after the restart: exactly one incident for vdi-003,
              with a slow-scan finding, whose timeline holds the drop event of every probe.
  fast scan   vdi-002 sends 20 UDP datagrams to 20 ports of one host: 10 (stored, the
              incident opened at the 10th: the policy's 10 distinct targets) before the
              kill, 10 while the controller is down: exactly one incident and one
              quarantine for vdi-002, no duplicate (incidents, audit, webhook), and the
              incident's event_count equals the stored drop events of the scan (20).
  split scan  the same from vdi-001 (released and its decoy incident resolved first), but 9
              datagrams (stored, below the threshold: no incident yet) before the kill and
              11 while it is down: the incident must open at the 10th target although the
              kill fell between the 9th and the 10th, exactly one incident and one new
              quarantine, event_count 20.
  beacon      vdi-103 connects to 198.51.100.7 tcp/443 every ~20 s (+-5 % seeded jitter, 9
              attempts: 8 intervals, the beaconing detector's minimum) across the restart:
              a beaconing finding for vdi-103 afterwards.

Every probe the checks count is one packet (a UDP datagram), so stored events can be
compared with probes sent one for one.

Thresholds (lab.py passes no --analyzer-config, so the analyzer's defaults of
controller/analyzer/README.md apply, plus the lab policy's response.incident): slow-scan
>= 16 distinct hosts in 30 min while no fast rule fired; distinct-targets (the policy) 10
distinct (host, protocol, port) in 60 s, which is also the scan window (host-sweep 16
hosts, vertical 16 ports, box 8 ports on 4 hosts); beaconing >= 8 intervals of >= 15 s
with cv <= 0.15, attempts closer than 5 s fold into one. The lab policy quarantines a VDI
automatically for any finding of medium severity or more.

Lab prefix bhrst-, a temporary state directory, mgmt 10.254.81.0/24, API 127.0.0.1:18591,
TLS 18843. About 5 minutes. Torn down in `finally` (also on failure or SIGTERM); no
namespace left. Exit 77 (skipped) when not root. Last line: "N passed, N failed"."""
import http.server, json, os, random, shutil, signal, sys, tempfile, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from harness import free_port  # noqa: E402
from lab_harness import (DECOY, FILE_SERVER, api, applied_quarantine, background, check, configure,  # noqa: E402
                         down_and_verify, expect_dropped, figure, incidents_of, kill_children, lab, poll, report,
                         section, up_with_lab_policy)

PREFIX, PORT, MGMT, TLS_PORT = "bhrst-", 18591, "10.254.81.0/24", 18843
configure(PREFIX, PORT, MGMT, TLS_PORT)
PING_FS = (FILE_SERVER, "icmp", 0)

DECOY_SOURCES = ["vdi-001", "vdi-101", "vdi-102"]
SLOW_SOURCE, SLOW_DELAY, SLOW_PORT = "vdi-003", 8.0, 8080
SLOW_TARGETS = ["10.0.0.%d" % n for n in range(100, 116)]    # 16 empty addresses, no decoy, no server
FAST_SOURCE, FAST_TARGET, FAST_BASE, FAST_HALF = "vdi-002", "10.0.0.200", 40001, 10
SPLIT_SOURCE, SPLIT_TARGET, SPLIT_BEFORE = "vdi-001", "10.0.0.201", 9   # one of the decoy sources, re-armed
BEACON_SOURCE, C2, BEACON_PORT = "vdi-103", "198.51.100.7", 443
BEACON_SEED, BEACON_PERIOD, BEACON_JITTER, BEACON_ATTEMPTS = 7, 20.0, 0.05, 9
KILL_AFTER = 60.0          # s after the slow scan's start: the kill (half of its probes sent)

# One UDP datagram to each (host, port) at the given offsets (s after the start); prints
# "<unix time> <host> <port>" per datagram.
SENDER = r"""
import socket, sys, time
items = [a.split(",") for a in sys.argv[1:]]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t0 = time.monotonic()
for at, host, port in items:
    time.sleep(max(0.0, t0 + float(at) - time.monotonic()))
    s.sendto(b"bulkhead restart test", (host, int(port)))
    print("%.3f %s %s" % (time.time(), host, port), flush=True)
"""

# An implant calling home: a TCP connect (2 s timeout) at each offset.
BEACON = r"""
import socket, sys, time
host, port, offsets = sys.argv[1], int(sys.argv[2]), [float(x) for x in sys.argv[3:]]
t0 = time.monotonic()
for i, at in enumerate(offsets):
    time.sleep(max(0.0, t0 + at - time.monotonic()))
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, port)); r = "connected"
    except OSError as e:
        r = type(e).__name__
    s.close()
    print("%.3f attempt %d %s" % (time.time(), i + 1, r), flush=True)
"""


class Receiver:
    """The SOAR stand-in: an HTTP server on 127.0.0.1 that answers 200 to every POST and
    keeps (arrival time, delivery id, attempt, event header, parsed body). Down = nothing
    listens on the port (connection refused)."""

    def __init__(self, port):
        self.port, self.received, self.server, self.lock = port, [], None, threading.Lock()

    def start(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                with receiver.lock:
                    receiver.received.append({"t": time.time(), "id": self.headers.get("X-Bulkhead-Delivery"),
                                              "attempt": int(self.headers.get("X-Bulkhead-Attempt") or 0),
                                              "event": self.headers.get("X-Bulkhead-Event"), "body": doc})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def snapshot(self):
        with self.lock:
            return list(self.received)


def incident(token, iid):
    status, body = api("GET", "/incidents/%d" % iid, token)
    return body if status == 200 else None


def findings(inc):
    return [f.get("rule") or f.get("kind") for f in ((inc or {}).get("details") or {}).get("findings") or []]


def stored_drops(token, workload, since_ms, dsts=None, dport=None):
    """Every stored drop event of `workload` since since_ms (to dsts / dport when given)."""
    events, after = [], 0
    for _ in range(20):
        status, body = api("GET", "/events?type=drop&workload=%s&from=%d&order=asc&limit=10000&after_id=%d"
                           % (workload, since_ms, after), token)
        if status != 200 or not body["events"]:
            break
        events += body["events"]
        after = body["events"][-1]["id"]
        if len(body["events"]) < 10000:
            break
    return [e for e in events if (dsts is None or e.get("dst") in dsts) and (dport is None or e.get("dport") == dport)]


def audit(token, action):
    status, body = api("GET", "/audit?limit=1000&action=%s" % action, token)
    return body.get("entries", body.get("audit", [])) if status == 200 and isinstance(body, dict) else []


def analyzer_status(token):
    status, body = api("GET", "/analyzer", token)
    return body if status == 200 else None


def outbox(token):
    a = analyzer_status(token)
    return (a or {}).get("outbox")


def beacon_offsets():
    rng = random.Random(BEACON_SEED)
    at, offsets = 0.0, [0.0]
    for _ in range(BEACON_ATTEMPTS - 1):
        at += round(BEACON_PERIOD * (1 + rng.uniform(-BEACON_JITTER, BEACON_JITTER)), 2)
        offsets.append(round(at, 2))
    return offsets


def interrupted(*_):
    raise KeyboardInterrupt()


def main():
    if os.geteuid() != 0:
        print("skipped: needs root")
        return 77
    signal.signal(signal.SIGTERM, interrupted)
    state = tempfile.mkdtemp(prefix="bulkhead-restart-")
    receiver = Receiver(free_port())
    t_start = time.monotonic()
    try:
        section("lab")
        lab_up = up_with_lab_policy(state, "--controller-arg=--webhook=http://127.0.0.1:%d/bulkhead" % receiver.port)
        if lab_up is None:
            return report()
        run(state, lab_up[1], receiver)
    except KeyboardInterrupt:
        check("interrupted", False)
    finally:
        receiver.stop()
        kill_children()
        section("teardown")
        down_and_verify(state)
        shutil.rmtree(state, ignore_errors=True)
    print("total %.0f s" % (time.monotonic() - t_start))
    return report()


def run(state, soc, receiver):
    # ---- outbox: three incidents while the receiver is down ------------------------------
    section("outbox, before the kill")
    for vdi in DECOY_SOURCES:
        expect_dropped("%s -> decoy %s ping dropped by the decoy rule" % (vdi, DECOY), state, vdi, DECOY, "icmp",
                       control=PING_FS, reason="decoy", token=soc)
    decoy_incidents = {}
    for vdi in DECOY_SOURCES:
        inc = poll(lambda: [i for i in incidents_of(soc, vdi) if i["severity"] == "critical"], 15,
                   "a critical incident for %s's decoy touch" % vdi)
        q = poll(lambda: applied_quarantine(soc, vdi), 15, "automatic quarantine of %s applied" % vdi)
        if inc:
            decoy_incidents[vdi] = inc[0]["id"]
        check("%s: one incident %s, quarantine automatic for it" % (vdi, [i["id"] for i in inc or []]),
              inc and len(inc) == 1 and q and q.get("automatic") and q.get("incident") == inc[0]["id"], q)
    # The split scan's source is a decoy source: released and its incident resolved (re-armed).
    status, released = api("DELETE", "/quarantines/%s?wait_ms=5000" % SPLIT_SOURCE, soc)
    check("release %s, acked" % SPLIT_SOURCE, status == 200 and released.get("released") and released.get("applied"),
          released)
    if SPLIT_SOURCE in decoy_incidents:
        status, _ = api("POST", "/incidents/%d/resolve" % decoy_incidents[SPLIT_SOURCE], soc)
        check("resolve %s's decoy incident %d" % (SPLIT_SOURCE, decoy_incidents[SPLIT_SOURCE]), status == 200)
    rearmed_after = max(decoy_incidents.values(), default=0)
    box = poll(lambda: (lambda o: o if isinstance(o, dict) and o.get("depth", 0) > 0 else None)(outbox(soc)), 5)
    a = analyzer_status(soc) or {}
    figure("GET /analyzer while the receiver is down: outbox", a.get("outbox"))
    figure("GET /analyzer while the receiver is down: webhooks", a.get("webhooks"))
    check("GET /analyzer shows the outbox holding deliveries while the receiver is down (outbox.depth > 0, "
          "oldest_age_ms)", box and "oldest_age_ms" in box, {"outbox": a.get("outbox"), "webhooks": a.get("webhooks")})

    # ---- the attacks, across the kill ----------------------------------------------------
    section("attacks, until the kill")
    t0 = time.time()
    attacks_since = int(t0 * 1000) - 500
    slow = background(state, SLOW_SOURCE, sys.executable, "-c", SENDER,
                      *["%.1f,%s,%d" % (i * SLOW_DELAY, h, SLOW_PORT) for i, h in enumerate(SLOW_TARGETS)])
    offsets = beacon_offsets()
    beacon = background(state, BEACON_SOURCE, sys.executable, "-c", BEACON, C2, str(BEACON_PORT), *map(str, offsets))
    figure("beacon offsets (s)", " ".join("%.1f" % o for o in offsets))
    time.sleep(max(0.0, t0 + KILL_AFTER - 3 - time.time()))   # the attacks' own pacing: half of each before the kill

    fast_ports = list(range(FAST_BASE, FAST_BASE + 2 * FAST_HALF))
    first = background(state, FAST_SOURCE, sys.executable, "-c", SENDER,
                       *["%.2f,%s,%d" % (i * 0.1, FAST_TARGET, p) for i, p in enumerate(fast_ports[:FAST_HALF])])
    first.communicate(timeout=30)
    stored = poll(lambda: len(stored_drops(soc, FAST_SOURCE, attacks_since, {FAST_TARGET})) >= FAST_HALF, 15,
                  "the fast scan's first %d drops stored before the kill" % FAST_HALF)
    fast_before = incidents_of(soc, FAST_SOURCE)
    split_ports = list(range(FAST_BASE, FAST_BASE + 2 * FAST_HALF))
    split1 = background(state, SPLIT_SOURCE, sys.executable, "-c", SENDER,
                        *["%.2f,%s,%d" % (i * 0.1, SPLIT_TARGET, p) for i, p in enumerate(split_ports[:SPLIT_BEFORE])])
    split1.communicate(timeout=30)
    poll(lambda: len(stored_drops(soc, SPLIT_SOURCE, attacks_since, {SPLIT_TARGET})) >= SPLIT_BEFORE, 15,
         "the split scan's first %d drops stored before the kill" % SPLIT_BEFORE)
    split_before = [i for i in incidents_of(soc, SPLIT_SOURCE) if i["id"] > rearmed_after]
    check("split scan: no incident for %s after %d targets, before the kill (%s)"
          % (SPLIT_SOURCE, SPLIT_BEFORE, [(i["id"], i["event_count"]) for i in split_before]), not split_before)
    expected_at_kill = expected_deliveries(soc)
    figure("fast scan: incidents of %s at the kill" % FAST_SOURCE,
           [(i["id"], i["event_count"], findings(i)) for i in fast_before])
    slow_sent_before = sum(1 for i in range(len(SLOW_TARGETS)) if i * SLOW_DELAY <= time.time() - t0)
    beacon_before = sum(1 for o in offsets if o <= time.time() - t0)

    section("kill -9 and restart")
    pid = json.loads((Path(state) / "lab.json").read_text())["controller"]["pid"]
    killed = lab(state, "stop", "controller", "--kill")
    check("controller (pid %d) SIGKILLed %.0f s into the attacks (slow scan %d/%d probes sent, beacon %d/%d, fast "
          "scan %d/%d stored)" % (pid, time.time() - t0, slow_sent_before, len(SLOW_TARGETS), beacon_before,
                                  len(offsets), FAST_HALF if stored else -1, 2 * FAST_HALF),
          killed.returncode == 0 and api("GET", "/health", soc)[0] is None, killed.stderr[-500:])
    down_at = time.monotonic()
    second = background(state, FAST_SOURCE, sys.executable, "-c", SENDER,
                        *["%.2f,%s,%d" % (i * 0.1, FAST_TARGET, p) for i, p in enumerate(fast_ports[FAST_HALF:])])
    split2 = background(state, SPLIT_SOURCE, sys.executable, "-c", SENDER,
                        *["%.2f,%s,%d" % (i * 0.1, SPLIT_TARGET, p) for i, p in enumerate(split_ports[SPLIT_BEFORE:])])
    second.communicate(timeout=30)
    split2.communicate(timeout=30)
    receiver.start()
    time.sleep(max(0.0, down_at + 3 - time.monotonic()))      # down for a few seconds, as a crash would be
    restarted = lab(state, "start", "controller")
    check("controller restarted with the same command line and database (down %.1f s)"
          % (time.monotonic() - down_at), restarted.returncode == 0, restarted.stderr[-2000:])
    if restarted.returncode != 0:
        check("the controller did not come back: the checks after the restart were not run", False,
              restarted.stdout[-1000:])
        return
    poll(lambda: api("GET", "/enforcers", soc)[0] == 200 and all(
        e["connected"] and e["in_sync"] for e in api("GET", "/enforcers", soc)[1]["enforcers"]), 30,
        "every enforcer reconnects and is in sync")

    # ---- fast scan -------------------------------------------------------------------------
    section("fast scan across the kill")
    events = poll(lambda: (lambda ev: ev if len(ev) >= 2 * FAST_HALF else None)(
        stored_drops(soc, FAST_SOURCE, attacks_since, {FAST_TARGET})), 30,
        "all %d drops of the fast scan stored" % (2 * FAST_HALF)) or \
        stored_drops(soc, FAST_SOURCE, attacks_since, {FAST_TARGET})
    ports = sorted(e.get("dport") for e in events)
    check("fast scan: %d datagrams sent, %d drop events stored, one per port (%s)"
          % (2 * FAST_HALF, len(events), ", ".join("%s x%d" % (r, sum(1 for e in events if e.get("reason") == r))
                                                  for r in sorted({e.get("reason") for e in events}))),
          ports == fast_ports, ports)
    # The analyzer's verdict on the last drops: its incident counts them all (or the deadline passes).
    poll(lambda: any(i["event_count"] >= len(events) for i in incidents_of(soc, FAST_SOURCE)), 10)
    incs = incidents_of(soc, FAST_SOURCE)
    check("fast scan: exactly one incident for %s after the restart (%s)"
          % (FAST_SOURCE, [(i["id"], i["state"], i["event_count"], findings(i)) for i in incs]), len(incs) == 1)
    if incs:
        inc = incident(soc, incs[-1]["id"]) or incs[-1]
        figure("fast scan incident event_count", "%s (drops stored: %d)" % (inc["event_count"], len(events)))
        check("fast scan: the incident's event_count counts every drop (event_count %s, stored drops %d)"
              % (inc["event_count"], len(events)), inc["event_count"] == len(events) == 2 * FAST_HALF)
        timeline = {e["id"] for e in inc.get("timeline", [])}
        missing = [e["id"] for e in events if e["id"] not in timeline]
        check("fast scan: the incident's timeline holds every drop (%d of %d)" % (len(events) - len(missing),
                                                                              len(events)), not missing, missing)
    creates = [e for e in audit(soc, "quarantine.create") if e.get("target") == "workload/" + FAST_SOURCE]
    q = applied_quarantine(soc, FAST_SOURCE)
    check("fast scan: exactly one quarantine of %s (audit quarantine.create x%d, applied: %s, for incident %s)"
          % (FAST_SOURCE, len(creates), bool(q), (q or {}).get("incident")),
          len(creates) == 1 and q is not None and incs and q.get("incident") == incs[-1]["id"])

    section("split scan across the kill")
    events = poll(lambda: (lambda ev: ev if len(ev) >= len(split_ports) else None)(
        stored_drops(soc, SPLIT_SOURCE, attacks_since, {SPLIT_TARGET})), 30,
        "all %d drops of the split scan stored" % len(split_ports)) or \
        stored_drops(soc, SPLIT_SOURCE, attacks_since, {SPLIT_TARGET})
    check("split scan: %d datagrams sent, %d drop events stored, one per port" % (len(split_ports), len(events)),
          sorted(e.get("dport") for e in events) == split_ports)
    poll(lambda: any(i["id"] > rearmed_after and i["event_count"] >= len(events)
                     for i in incidents_of(soc, SPLIT_SOURCE)), 10)
    incs = [i for i in incidents_of(soc, SPLIT_SOURCE) if i["id"] > rearmed_after]
    check("split scan: exactly one new incident for %s after the restart (%s)"
          % (SPLIT_SOURCE, [(i["id"], i["state"], i["event_count"], findings(i)) for i in incs]), len(incs) == 1)
    if incs:
        inc = incident(soc, incs[-1]["id"]) or incs[-1]
        figure("split scan incident event_count", "%s (drops stored: %d)" % (inc["event_count"], len(events)))
        check("split scan: the incident's event_count counts every drop (event_count %s, stored drops %d)"
              % (inc["event_count"], len(events)), inc["event_count"] == len(events) == len(split_ports))
        timeline = {e["id"] for e in inc.get("timeline", [])}
        missing = [e["id"] for e in events if e["id"] not in timeline]
        check("split scan: the incident's timeline holds every drop (%d of %d)" % (len(events) - len(missing),
                                                                               len(events)), not missing, missing)
        first = ((inc.get("details") or {}).get("findings") or [{}])[0]
        figure("split scan: first finding", {k: first.get(k) for k in ("rule", "at", "distinct_targets")})
    creates = [e for e in audit(soc, "quarantine.create") if e.get("target") == "workload/" + SPLIT_SOURCE]
    q = applied_quarantine(soc, SPLIT_SOURCE)
    check("split scan: exactly one new quarantine of %s (audit quarantine.create x%d in all, the decoy's and this "
          "one; applied: %s, for incident %s)" % (SPLIT_SOURCE, len(creates), bool(q), (q or {}).get("incident")),
          len(creates) == 2 and q is not None and incs and q.get("incident") == incs[-1]["id"])

    # ---- slow scan and beacon: run to their end ------------------------------------------
    section("slow scan across the kill")
    slow_out, _ = slow.communicate(timeout=max(30, t0 + len(SLOW_TARGETS) * SLOW_DELAY + 30 - time.time()))
    sent = [line.split() for line in slow_out.splitlines() if line.strip()]
    check("slow scan: %d probes sent every %.0f s, %d before the kill" % (len(sent), SLOW_DELAY, slow_sent_before),
          len(sent) == len(SLOW_TARGETS) and 0 < slow_sent_before < len(SLOW_TARGETS))
    slow_events = poll(lambda: (lambda ev: ev if len({e["dst"] for e in ev}) >= len(SLOW_TARGETS) else None)(
        stored_drops(soc, SLOW_SOURCE, attacks_since, set(SLOW_TARGETS), SLOW_PORT)), 30,
        "every slow-scan probe stored") or stored_drops(soc, SLOW_SOURCE, attacks_since, set(SLOW_TARGETS), SLOW_PORT)
    check("slow scan: one stored drop event per probe (%d probes, %d events, %d hosts)"
          % (len(sent), len(slow_events), len({e['dst'] for e in slow_events})),
          len(slow_events) == len(sent) == len({e["dst"] for e in slow_events}))
    slow_inc = poll(lambda: [i for i in incidents_of(soc, SLOW_SOURCE) if "slow-scan" in findings(incident(soc, i["id"]))],
                    20)
    all_slow = incidents_of(soc, SLOW_SOURCE)
    check("slow scan: exactly one incident for %s, with a slow-scan finding (incidents: %s)"
          % (SLOW_SOURCE, [(i["id"], i["event_count"], findings(i)) for i in all_slow]),
          slow_inc and len(all_slow) == 1)
    if slow_inc:
        inc = incident(soc, slow_inc[0]["id"])
        timeline = {e["id"] for e in (inc or {}).get("timeline", [])}
        missing = sorted(e["dst"] for e in slow_events if e["id"] not in timeline)
        check("slow scan: the incident's timeline holds every probe's drop event (%d of %d; missing %s)"
              % (len(slow_events) - len(missing), len(slow_events), missing), slow_events and not missing)
        check("slow scan: no fast rule fired (findings %s)" % findings(inc),
              not {"host-sweep", "port-scan-vertical", "port-scan-box", "distinct-targets"} & set(findings(inc)))

    section("beacon across the kill")
    beacon_out, _ = beacon.communicate(timeout=max(30, t0 + offsets[-1] + 30 - time.time()))
    attempts = [line for line in beacon_out.splitlines() if " attempt " in line]
    check("beacon: %d attempts, %d before the kill, none connected" % (len(attempts), beacon_before),
          len(attempts) == len(offsets) and not any(line.endswith("connected") for line in attempts), attempts)
    beacon_inc = poll(lambda: [i for i in incidents_of(soc, BEACON_SOURCE)
                               if "beaconing" in findings(incident(soc, i["id"]))], 20)
    check("beacon: a beaconing finding for %s after the restart (incidents: %s)" % (
        BEACON_SOURCE, [(i["id"], findings(i)) for i in incidents_of(soc, BEACON_SOURCE)]), beacon_inc)

    # ---- outbox: every delivery, exactly once by id, in order per incident ---------------
    section("outbox, after the restart")
    expected = expected_deliveries(soc) | expected_at_kill
    figure("deliveries expected (type, incident)", sorted(expected))

    def delivered():
        got = {(r["event"], incident_of(r)) for r in receiver.snapshot()}
        return expected <= got

    poll(delivered, 60)
    received = receiver.snapshot()
    figure("deliveries received", len(received))
    got = {}
    for r in received:
        got.setdefault((r["event"], incident_of(r)), set()).add(r["id"])
    missing = sorted(k for k in expected if k not in got)
    check("every delivery arrived: incident.opened of every incident, quarantine.created, incident.page "
          "(%d expected, %d missing: %s)" % (len(expected), len(missing), missing), not missing)
    decoy_missing = [k for k in missing if k[1] in set(decoy_incidents.values())]
    check("the three decoy incidents' deliveries (queued while the receiver was down, across the kill) arrived "
          "(missing: %s)" % decoy_missing, decoy_incidents and not decoy_missing)
    doubled = {k: sorted(v) for k, v in got.items() if len(v) > 1}
    check("no delivery twice under different ids (%s)" % doubled, not doubled)
    by_id = {}
    for r in received:
        by_id.setdefault(r["id"], []).append(r)
    bad_repeats = {i: [x["attempt"] for x in rs] for i, rs in by_id.items()
                   if len(rs) > 1 and not all(x["attempt"] > 1 for x in rs[1:])}
    check("a delivery id repeats only as a retry (X-Bulkhead-Attempt > 1): %s" % bad_repeats, not bad_repeats)
    bodies_ok = [r for r in received if isinstance(r["body"], dict) and r["body"].get("id") == r["id"]
                 and r["body"].get("type") == r["event"] and "data" in r["body"]]
    check("every body is {id, type, data} with the header's delivery id and type (%d of %d)"
          % (len(bodies_ok), len(received)), received and len(bodies_ok) == len(received))
    check("every body carries \"at_ms\", the time the change was committed (webhook.hpp's contract) "
          "(%d of %d; members seen: %s)"
          % (sum(1 for r in received if isinstance(r["body"], dict) and isinstance(r["body"].get("at_ms"), int)),
             len(received), sorted({k for r in received if isinstance(r["body"], dict) for k in r["body"]})),
          received and all(isinstance(r["body"], dict) and isinstance(r["body"].get("at_ms"), int) for r in received))
    order = []
    first_at = {}
    for r in received:
        first_at.setdefault((r["event"], incident_of(r)), r["t"])
    for (event, iid), t in first_at.items():
        opened = first_at.get(("incident.opened", iid))
        if event != "incident.opened" and iid is not None and (opened is None or opened > t):
            order.append((event, iid))
    check("per incident, incident.opened arrives before its other deliveries (out of order: %s)" % order, not order)
    box = poll(lambda: (lambda o: o if isinstance(o, dict) and o.get("depth") == 0 else None)(outbox(soc)), 30)
    check("GET /analyzer shows the outbox empty after delivery (outbox %s)" % (outbox(soc),), box)


def incident_of(r):
    """The incident id a received delivery is about."""
    data = (r.get("body") or {}).get("data") or {}
    if r.get("event", "").startswith("incident.opened") or r.get("event", "") == "incident.escalated":
        return data.get("id")
    return (data.get("incident") or {}).get("id")


def expected_deliveries(token):
    """(type, incident id) of every delivery the controller owes: incident.opened for every
    incident, quarantine.created for every automatic quarantine of an incident (the audit's
    quarantine.create with automatic and incident), incident.page for every audited page."""
    status, body = api("GET", "/incidents?limit=1000", token)
    expected = {("incident.opened", i["id"]) for i in body.get("incidents", [])} if status == 200 else set()
    for e in audit(token, "quarantine.create"):
        after = e.get("after") or {}
        if after.get("automatic") and after.get("incident"):
            expected.add(("quarantine.created", after["incident"]))
    for e in audit(token, "incident.page"):
        target = e.get("target", "")
        if target.startswith("incident/"):
            expected.add(("incident.page", int(target.split("/", 1)[1])))
    return expected


if __name__ == "__main__":
    sys.exit(main())
