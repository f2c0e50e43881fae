#!/usr/bin/env python3
"""Faults in the lab (the controller's acceptance of crash safety), with the real controller and enforcers
over TLS, the real kernel and real packets:

  - the controller is SIGKILLed in the middle of a scan and restarted with the same command
    line and database: no drop event is lost or stored twice, the hypervisors keep their
    rules the whole time, the enforcers reconnect;
  - an enforcer is SIGKILLed: its hypervisor keeps the last-known-good ruleset (same nft
    text, traffic still filtered), the controller shows it disconnected and stale, and it
    resyncs when started again;
  - a policy that fails validation changes nothing anywhere (revision, generations, hashes,
    the kernel's tables byte for byte);
  - (from the end-to-end acceptance, strengthened) a TCP connection established before a
    quarantine carries no more data after it.

Every "dropped" check sees the drop itself (lab_harness.expect_dropped, or the drop rules'
counters around a background probe): the probe timed out, the hypervisor's drop rule
counted it, the controller stored its drop event when it was up to ask, and an allowed
probe on the same path got through.

Runs the lab under its own prefix, state directory, management network and ports, so it can
run beside the demo and lab_e2e; tears it down in `finally`, also on failure. Every wait is a
poll with a deadline. Exit 77 (skipped) when not root. Last line: "N passed, N failed"."""
import copy, datetime, json, os, re, shutil, signal, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from lab_harness import (EDR, all_in_sync, api, background, check, configure, counted_drops,  # noqa: E402
                         down_and_verify, drop_counters, drop_events, enforcers, expect_dropped, in_ns,
                         kill_children, lab, poll, reaches, report, up_with_lab_policy)

PREFIX, PORT, MGMT, TLS_PORT = "bhflt-", 18281, "10.254.78.0/24", 18543
configure(PREFIX, PORT, MGMT, TLS_PORT)
HEARTBEAT_MS = 1000       # the controller's heartbeat interval (the enforcer's dead-stream timeout is 3x)
FS = "10.0.0.30"          # the file server: SMB (tcp 445) and ping allowed from VDIs, nothing else
SCAN_BASE, SCAN_MAX, SCAN_INTERVAL = 20000, 2000, 0.02   # one UDP datagram per port, 50 per second

# One UDP datagram to each port from base on: a distinct (dst, dport) per packet, so each is
# exactly one drop event (the aggregator folds only identical repeats). Stops at EOF on
# stdin or after `most` ports, then prints how many it sent.
UDP_SCAN = r"""
import select, socket, sys
dst, base, most, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = 0
for port in range(base, base + most):
    s.sendto(b"bulkhead fault test", (dst, port))
    sent += 1
    if select.select([sys.stdin], [], [], interval)[0]:
        break
print(sent, flush=True)
"""

# An echo server on the file server's SMB port; prints every chunk it receives.
ECHO_SERVER = r"""
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(8)
print("listening", flush=True)
def serve(c):
    with c:
        while True:
            data = c.recv(4096)
            if not data:
                return
            print("got %r" % data, flush=True)
            c.sendall(data)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# Connects, proves the echo works, waits for a line on stdin (the test quarantines the VDI
# meanwhile), then sends again and reports what came back within the timeout.
TCP_CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(b"before\n")
print("before %r" % c.recv(100), flush=True)
sys.stdin.readline()
c.settimeout(float(sys.argv[3]))
try:
    c.sendall(b"after\n")
    data = c.recv(100)
    print("after echo %r" % data if data else "after closed", flush=True)
except socket.timeout:
    print("after timeout", flush=True)
except OSError as e:
    print("after error %s" % e, flush=True)
"""


def nft_ruleset(state, hv):
    """The hypervisor's ruleset without counter values (-s): what must not change."""
    r = in_ns(state, hv, "nft", "-s", "list", "ruleset")
    return r.stdout if r.returncode == 0 else "nft failed: " + r.stderr


def metric(state, hv, name):
    try:
        text = (Path(state) / "enforcers" / hv / "metrics.prom").read_text()
    except OSError:
        return None
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


PING_FS = ("10.0.0.30", "icmp", 0)   # a VDI's positive control: ping to the file server is allowed


def scan_events(token, workload, enforcer, sent):
    """The stored drop events of one UDP scan: its workload, to the file server, its ports."""
    status, body = api("GET", "/events?workload=%s&type=drop&limit=10000&order=asc" % workload, token)
    if status != 200:
        return None
    return [e for e in body["events"] if e.get("dst") == FS and e.get("proto_name") == "udp"
            and e.get("enforcer") == enforcer and SCAN_BASE <= e.get("dport", 0) < SCAN_BASE + (sent or SCAN_MAX)]


def gone(pid):
    """The process is gone (or a zombie nobody reaped yet)."""
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def epoch_ms(text):
    """The API's RFC 3339 UTC time with milliseconds -> ms since the epoch."""
    return int(datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp() * 1000)


def stop_ping(p):
    """SIGINT a background ping; (the icmp_seq numbers that got a reply, packets transmitted)."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=10)
    sent = re.search(r"(\d+) packets transmitted", out)
    return sorted(int(m) for m in re.findall(r"bytes from .* icmp_seq=(\d+)", out)), int(sent.group(1)) if sent else 0


def main():
    if os.geteuid() != 0:
        print("skipped: needs root")
        return 77
    state = tempfile.mkdtemp(prefix="bulkhead-faults-")
    started = time.monotonic()
    try:
        # ---- 1. the lab, the policy, every enforcer acks -----------------------------------
        lab_up = up_with_lab_policy(state, "--controller-arg=--heartbeat-interval-ms=%d" % HEARTBEAT_MS)
        if lab_up is None:
            return 1
        admin, soc, policy, _ = lab_up

        # ---- 4. a policy that fails validation changes nothing anywhere --------------------
        check_invalid_policy(state, admin, soc, policy)

        # ---- 2. controller SIGKILLed mid-scan ----------------------------------------------
        check_controller_restart(state, admin, soc, policy)

        # ---- 3. enforcer SIGKILLed ---------------------------------------------------------
        check_enforcer_kill(state, soc)

        # ---- (lab_e2e, strengthened) an established TCP connection dies with the quarantine -
        check_connection_dies(state, soc)
    finally:
        kill_children()
        down_and_verify(state)
        shutil.rmtree(state, ignore_errors=True)
    print("total %.1fs" % (time.monotonic() - started))
    return report()


def check_invalid_policy(state, admin, soc, policy):
    active_before = api("GET", "/policies/active", soc)
    revisions_before = api("GET", "/policies", soc)
    enforcers_before = enforcers(soc)
    rules_before = {hv: nft_ruleset(state, hv) for hv in enforcers_before}

    unknown_segment = copy.deepcopy(policy)
    unknown_segment["rules"][0]["to"] = ["no-such-segment"]
    wrong_type = copy.deepcopy(policy)
    wrong_type["defaults"]["action"] = 7
    for bad, where, what in ((unknown_segment, "/rules/0/to/0", "a rule naming an unknown segment"),
                             (wrong_type, "/defaults/action", "a number where an action belongs")):
        status, body = api("POST", "/policies", admin, bad)
        error = body.get("error", {}) if isinstance(body, dict) else {}
        pointers = [error.get("pointer")] + [d.get("pointer") for d in error.get("errors", [])]
        check("invalid policy (%s) refused: HTTP %s, pointer %s in %s" % (what, status, where, pointers),
              status is not None and 400 <= status < 500 and where in pointers)
    status, _ = api("POST", "/policies/999999/activate", admin)
    check("activating a revision that does not exist is 404 (%s)" % status, status == 404)

    # Give any push a full heartbeat round to show up: every enforcer reports again.
    poll(lambda: all((enforcers(soc).get(i) or {}).get("last_heartbeat", "") > e["last_heartbeat"]
                     for i, e in enforcers_before.items()), 10, "every enforcer reports after the refused uploads")
    check("the active revision is unchanged", api("GET", "/policies/active", soc) == active_before)
    check("no revision was stored", api("GET", "/policies", soc) == revisions_before)
    after = enforcers(soc)
    for i, e in enforcers_before.items():
        keys = ("desired_generation", "desired_hash", "applied_generation", "applied_hash", "in_sync")
        check("%s: desired and applied generation %d, hash %s unchanged" % (i, e["applied_generation"], e["applied_hash"]),
              all(after[i][k] == e[k] for k in keys))
        check("%s: the kernel's ruleset is byte-identical" % i,
              nft_ruleset(state, i) == rules_before[i] and "table inet bulkhead" in rules_before[i])


def check_controller_restart(state, admin, soc, policy):
    # Auto-quarantine off: the scan's drops must all stay "default" drops under one ruleset.
    quiet = copy.deepcopy(policy)
    quiet["name"] = "lab-no-auto-quarantine"
    quiet["response"]["auto_quarantine"]["mode"] = "off"
    status, revision = api("POST", "/policies", admin, quiet)
    status2, activated = api("POST", "/policies/%d/activate" % revision["id"], admin) if status == 201 else (status, {})
    if not check("activate the lab policy with auto-quarantine off (%s)" % status2, status2 == 200):
        return
    generation = activated["generation"]
    if not poll(lambda: all_in_sync(soc, generation), 20, "every enforcer acks generation %d" % generation):
        return
    rules_before = {hv: nft_ruleset(state, hv) for hv in ("hv1", "hv2")}

    # Probes across the whole outage: allowed pings must all be answered, forbidden never.
    counters_before = {hv: drop_counters(state, hv) for hv in ("hv1", "hv2")}
    since_ms = int(time.time() * 1000) - 100
    forbidden_dst = (("vdi-003", "10.1.0.1"), ("vdi-103", "10.1.0.3"))
    allowed = {ns: background(state, ns, "ping", "-i", "0.2", "-W", "1", FS) for ns in ("vdi-001", "vdi-101")}
    forbidden = {ns: background(state, ns, "ping", "-i", "0.2", "-W", "1", dst)
                 for ns, dst in forbidden_dst}
    scans = {("vdi-002", "hv1"): background(state, "vdi-002", sys.executable, "-c", UDP_SCAN, FS, str(SCAN_BASE),
                                            str(SCAN_MAX), str(SCAN_INTERVAL)),
             ("vdi-102", "hv2"): background(state, "vdi-102", sys.executable, "-c", UDP_SCAN, FS, str(SCAN_BASE),
                                            str(SCAN_MAX), str(SCAN_INTERVAL))}
    stored_before = poll(lambda: all(len(scan_events(soc, w, e, None) or []) >= 20 for w, e in scans),
                         15, "the scans' drop events reach the controller before the kill")
    check("both scans (vdi-002 on hv1, vdi-102 on hv2) are being stored when the controller dies", bool(stored_before))
    pid = json.loads((Path(state) / "lab.json").read_text())["controller"]["pid"]
    killed = lab(state, "stop", "controller", "--kill")
    check("controller (pid %d) SIGKILLed mid-scan" % pid,
          killed.returncode == 0 and gone(pid))
    check("the controller's API is gone", api("GET", "/health", soc)[0] is None)
    down_at = time.monotonic()

    # While it is down: events pile up in each enforcer's disk spool, the rules stay.
    poll(lambda: all((metric(state, hv, "bulkhead_enforcer_spool_events") or 0) >= 100 for hv in ("hv1", "hv2")),
         20, "each enforcer spools >= 100 events on disk while the controller is down")
    for hv in ("hv1", "hv2"):
        check("%s keeps its ruleset while the controller is down" % hv, nft_ruleset(state, hv) == rules_before[hv])
    check("while the controller is down: vdi-002 -> file server ping passes", reaches(state, "vdi-002", FS))
    # No token: the controller is down, the drop rule's counter is the proof. UDP, not ping: the
    # background pings between VDIs move hv2's ICMP deny rule, nothing else moves the UDP one.
    expect_dropped("while the controller is down: vdi-102 -> vdi-103 udp/5000 dropped by hv2's deny rule", state,
                   "vdi-102", "10.1.1.3", "udp", 5000, control=PING_FS, reason="deny")

    restarted = lab(state, "start", "controller")
    check("controller restarted with the same command line and database (down %.1fs)"
          % (time.monotonic() - down_at), restarted.returncode == 0)
    if restarted.returncode != 0:
        print(restarted.stderr[-2000:])
    t0 = time.monotonic()
    synced = poll(lambda: all_in_sync(soc, generation), 30, "every enforcer reconnects and is in sync")
    if synced:
        check("enforcers reconnected and in sync with generation %d %.1fs after the restart"
              % (generation, time.monotonic() - t0), True)
    for hv in ("hv1", "hv2"):
        check("%s: ruleset byte-identical after the reconnect" % hv, nft_ruleset(state, hv) == rules_before[hv])

    # Stop the scans; every datagram sent must be exactly one stored event.
    sent = {}
    for key, p in scans.items():
        out, err = p.communicate(input="", timeout=15)
        sent[key] = int(out.strip()) if p.returncode == 0 and out.strip().isdigit() else None
        check("scan from %s ran (%s datagrams)" % (key[0], sent[key] or err[-300:]), sent[key] is not None)
    if any(v is None for v in sent.values()):
        return
    poll(lambda: all(len(scan_events(soc, w, e, n) or []) >= n for (w, e), n in sent.items()), 30,
         "every scan datagram stored")
    poll(lambda: all(metric(state, hv, "bulkhead_enforcer_spool_events") == 0 for hv in ("hv1", "hv2")), 15,
         "both spools drained (the controller confirmed everything)")
    for (workload, enforcer), n in sent.items():
        events = scan_events(soc, workload, enforcer, n) or []
        ports = sorted(e["dport"] for e in events)
        seqs = set((e["enforcer"], e["enforcer_seq"]) for e in events)
        check("%s: %d datagrams sent, %d drop events stored, one per port, %d distinct (enforcer, seq)"
              % (workload, n, len(events), len(seqs)),
              len(events) == n and ports == list(range(SCAN_BASE, SCAN_BASE + n)) and len(seqs) == n)
        check("%s: every stored event is a default drop attributed to %s" % (workload, workload),
              all(e["reason"] == "default" and e["workload"] == workload for e in events))
        status, body = api("GET", "/events?workload=%s&type=drop_summary&limit=1000" % workload, soc)
        summaries = [e for e in body["events"] if e.get("dst") == FS and e.get("proto_name") == "udp"] \
            if status == 200 else None
        check("%s: no repeat summaries (no datagram counted twice)" % workload, summaries == [])

    for ns, p in allowed.items():
        seqs, _ = stop_ping(p)
        check("%s -> file server: every ping answered across the outage (%d, no gap)" % (ns, len(seqs)),
              len(seqs) >= 10 and seqs == list(range(1, len(seqs) + 1)))
    stopped = {ns: stop_ping(p) for ns, p in forbidden.items()}
    counters_after = {hv: drop_counters(state, hv) for hv in ("hv1", "hv2")}   # after the last ping went out
    for ns, (seqs, transmitted) in stopped.items():
        hv = "hv1" if ns == "vdi-003" else "hv2"
        deny = sum(counted_drops(counters_before[hv], counters_after[hv], "deny").values())
        dst = dict(forbidden_dst)[ns]
        stored = drop_events(soc, ns, dst, "icmp", 0, since_ms, "deny")
        check("%s -> another VDI: no ping answered across the outage, each one dropped by %s's deny rule "
              "(%d sent, %d answered, deny counter +%d, %d stored deny events)" % (ns, hv, transmitted, len(seqs), deny,
                                                                                len(stored)),
              transmitted >= 10 and seqs == [] and deny >= transmitted and len(stored) >= 1)


def check_enforcer_kill(state, soc):
    before = enforcers(soc)["hv2"]
    rules_before = nft_ruleset(state, "hv2")

    def hv2_disconnected():
        e = enforcers(soc).get("hv2")
        return e if e and not e["connected"] else None

    def hv2_stale():  # hv1 keeps reporting, hv2's last heartbeat stays where it was
        es = enforcers(soc)
        behind = es and epoch_ms(es["hv1"]["last_heartbeat"]) - epoch_ms(es["hv2"]["last_heartbeat"])
        return es if es and behind >= 3 * HEARTBEAT_MS else None

    def hv2_back():
        e = enforcers(soc).get("hv2")
        return e if e and e["connected"] and e["in_sync"] and e["last_heartbeat"] > before["last_heartbeat"] else None

    killed = lab(state, "stop", "enforcer-hv2", "--kill")
    check("enforcer hv2 SIGKILLed", killed.returncode == 0)
    t0 = time.monotonic()
    if poll(hv2_disconnected, 20, "the controller shows hv2 disconnected"):
        check("the controller shows hv2 connected: false (%.1fs after the kill)" % (time.monotonic() - t0), True)
    stale = poll(hv2_stale, 15, "hv2's last heartbeat falls behind hv1's by 3 intervals")
    if stale:
        check("hv2 stale (last heartbeat %s, hv1 %s), last applied generation %d kept"
              % (stale["hv2"]["last_heartbeat"], stale["hv1"]["last_heartbeat"], before["applied_generation"]),
              stale["hv2"]["applied_generation"] == before["applied_generation"]
              and stale["hv2"]["applied_hash"] == before["applied_hash"])
    rules = nft_ruleset(state, "hv2")
    check("hv2 without its enforcer keeps the last-known-good ruleset, byte-identical",
          rules == rules_before and "table inet bulkhead" in rules)
    check("without its enforcer: vdi-101 -> file server passes", reaches(state, "vdi-101", FS))
    # No token: without its enforcer nobody reads hv2's NFLOG; the drop rule's counter is the proof.
    expect_dropped("without its enforcer: vdi-101 -> vdi-102 (same hypervisor) dropped by hv2's deny rule", state,
                   "vdi-101", "10.1.1.2", "icmp", control=PING_FS, reason="deny")
    expect_dropped("without its enforcer: vdi-102 -> vdi-001 (other hypervisor) dropped by hv2's deny rule", state,
                   "vdi-102", "10.1.0.1", "icmp", control=PING_FS, reason="deny")

    restarted = lab(state, "start", "enforcer-hv2")
    check("enforcer hv2 started again", restarted.returncode == 0)
    back = poll(hv2_back, 30, "hv2 reconnects and reports in sync")
    if back:
        check("hv2 back, connected and in sync at generation %d" % back["applied_generation"],
              back["applied_generation"] == before["applied_generation"])
    check("hv2 ruleset byte-identical after the restart", nft_ruleset(state, "hv2") == rules_before)
    expect_dropped("after the restart: vdi-101 -> vdi-102 still dropped (deny rule, drop event stored)", state,
                   "vdi-101", "10.1.1.2", "icmp", control=PING_FS, reason="deny", token=soc)


def check_connection_dies(state, soc):
    server = background(state, "fs-01", sys.executable, "-c", ECHO_SERVER, FS, "445")
    if not check("echo server on %s:445 (SMB, allowed)" % FS, server.stdout.readline().strip() == "listening"):
        return
    client = background(state, "vdi-002", sys.executable, "-c", TCP_CLIENT, FS, "445", "3")
    first = client.stdout.readline().strip()
    if not check("vdi-002 opens a TCP connection to %s:445, echo works (%s)" % (FS, first), first == "before b'before\\n'"):
        return
    status, q = api("POST", "/quarantines?wait_ms=5000", soc, {"workload": "vdi-002", "reason": "fault test"})
    check("quarantine vdi-002, applied by hv1 (%s)" % status,
          status == 201 and all(e["state"] == "applied" for e in q["enforcers"]))
    before = drop_counters(state, "hv1")
    out, _ = client.communicate(input="go\n", timeout=20)
    moved = counted_drops(before, drop_counters(state, "hv1"), "quarantine")
    check("the established connection carries nothing after the quarantine (%s), hv1's quarantine rule dropped it "
          "(%s)" % (out.strip(), moved), out.strip().startswith("after") and "echo" not in out and moved)
    check("quarantined vdi-002 still reaches the EDR server (tcp/443): the path works", reaches(state, "vdi-002", EDR, "tcp", 443))
    server.kill()
    received, _ = server.communicate(timeout=10)
    check("the file server never received the data sent after the quarantine", "after" not in received)
    status, released = api("DELETE", "/quarantines/vdi-002?wait_ms=5000", soc)
    check("release vdi-002, acked by hv1", status == 200 and released["released"] and released["applied"])
    check("released vdi-002 reaches the file server again", reaches(state, "vdi-002", FS))


if __name__ == "__main__":
    sys.exit(main())
