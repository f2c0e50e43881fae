#!/usr/bin/env python3
"""Real attacks in the lab, detected and contained end to end (the analyzer's acceptance).

The real controller (analyzer on every stored drop) and enforcers over TLS, the lab policy
activated through the API, and real tools inside VDI namespaces:

  smb-worm     five VDIs at once try tcp/445 on ten neighbours (bash /dev/tcp loops):
               lateral-movement per source, and a fan-in incident about 10.0.0.20 tcp/445
  beaconing    vdi-103 calls 198.51.100.7 tcp/443 every 5 s +-1 s (seeded jitter), 26 times, each a
               real connect() the kernel retransmits after 1 s (attempts told apart by source port)
  slow-scan    vdi-003: nmap -sT --scan-delay 8s over 18 ports of the file server (below
               10 targets and 16 ports per 60 s, 16 ports after ~2 min)
  host-sweep   vdi-001: nmap -sn --min-rate 5000 of 10.0.0.0/24 (decoys excluded)
  vertical     vdi-002: nmap -sS --min-rate 5000 --top-ports 100 of the file server
  box          vdi-101: nmap -sT --min-rate 5000 of 8 ports on 4 addresses of hv1's VDI range
  decoy        vdi-102: one ping to 10.0.0.66

Each source gets its own VDI while it runs; the worm's VDIs are released and their
incidents resolved before they run the other attacks. For every attack: an incident for
the right workload (user, hostname, enforcer from the inventory), the expected rule among
its findings with an explanation, the response "quarantine" and the quarantine applied on
the VDI's hypervisor. Two quarantined VDIs are checked for real: their probes to the file
server are dropped by the quarantine rule (its counter moves, the controller stores each
probe's drop event), the EDR server still answers. The box scan's scope graph names the source, its
targets and a segment. A summary table ends the run.

Lab prefix bhana-, state /tmp/bhana-state, mgmt 10.254.80.0/24, API 127.0.0.1:18491, TLS
18743. Torn down in `finally`, also on failure or SIGTERM. Exit 77 (skipped) when not root
or nmap is missing."""
import datetime, json, os, random, select, shutil, signal, statistics, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from lab_harness import (REPO, api, background, check, configure, down_and_verify, expect_dropped,  # noqa: E402
                         kill_children, lab, reaches, report, up_with_lab_policy)
from lab_harness import applied_quarantine as harness_applied_quarantine  # noqa: E402
from lab_harness import incidents_of as harness_incidents_of  # noqa: E402

PREFIX, PORT, MGMT, TLS_PORT = "bhana-", 18491, "10.254.80.0/24", 18743
STATE = "/tmp/bhana-state"
configure(PREFIX, PORT, MGMT, TLS_PORT)

FILE_SERVER, EDR, DECOY = "10.0.0.30", "10.0.0.20", "10.0.0.66"
C2 = "198.51.100.7"                        # "the internet": the policy allows nothing there
WORM_SOURCES = ["vdi-001", "vdi-002", "vdi-003", "vdi-101", "vdi-102"]
WORM_TARGETS = ["10.0.0.%d" % n for n in range(20, 30)]   # EDR first, then empty addresses
# The other hypervisor's desktop range: vdi-101's probes are dropped on its own hypervisor
# (hv2) and counted for it. (A probe to a VDI on hv2 that is already quarantined is dropped by
# that VDI's quarantine instead, reason "quarantine", direction "in", and the analyzer skips
# it: the scanner's count would miss it.)
BOX_TARGETS = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"]
BOX_PORTS = "21,23,25,80,110,143,993,8080"               # no lateral-movement service
SLOW_PORTS = ("1080,1433,1521,2049,2181,3306,5432,5900,6379,7001,8000,8081,8888,9000,9090,9200,"
              "11211,27017")                              # 18, none a lateral-movement service
# The fast scans run at nmap --min-rate: at nmap's default timing the first probes go
# unanswered, nmap waits for their timeout, and the policy's distinct-targets rule (10 targets)
# has the VDI quarantined (~0.3 s) before 16 hosts or ports were ever tried: the incident then
# says "tried 10 targets", never host-sweep / port-scan-vertical / port-scan-box.
MIN_RATE = "5000"
# The box scan's rule needs 8 ports on 4 hosts: about 26 of its 32 probes must be dropped by
# the policy (and logged) before the distinct-targets rule's quarantine, which lands 3-5 ms
# after the 10th, turns the rest into quarantine drops (the contained workload's own attempts
# detect nothing new). nmap paces its probes even at --min-rate 50000 and lost that race in
# 1 of 3 runs once containment got under 5 ms, and 32 connect()s from Python take ~5 ms.
# So the box scan is a burst of 32 non-blocking connect()s (SYNs to 8 ports on 4 hosts, as
# nmap -sT sends) sent while hv2's enforcer is stopped (SIGSTOP): the kernel logs every probe
# as a policy drop, NFLOG holds them, and the enforcer, resumed once the burst is out,
# uploads them together. The rule is judged on the whole scan, as in a slower lab.
BOX_BURST = """
import socket, sys, time
ports = [int(p) for p in sys.argv[1].split(",")]
held = []
for host in sys.argv[2:]:
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
        held.append(s)
print("sent", flush=True)
time.sleep(1.5)
"""
SLOW_DELAY = 8                                            # s between probes: <= 8 targets per 60 s
# Under 15 s a period is judged over 16 intervals (controller/analyzer/README.md): 26 attempts
# leave ten periods of room.
BEACON_SEED, BEACON_PERIOD, BEACON_JITTER, BEACON_ATTEMPTS = 3, 5.0, 0.20, 26
BEACON_INTERVALS_JUDGED = 16

INVENTORY = {w["id"]: w for w in json.loads((REPO / "examples/lab/inventory.json").read_text())["workloads"]}

# An implant calling home: a TCP connect (2 s timeout) at each time of the schedule.
BEACON = ("import socket,sys,time\n"
          "host,port=sys.argv[1],int(sys.argv[2]); gaps=[float(x) for x in sys.argv[3:]]\n"
          "t0=time.monotonic(); at=0.0\n"
          "for i in range(len(gaps)+1):\n"
          " time.sleep(max(0.0,t0+at-time.monotonic()))\n"
          " s=socket.socket(); s.settimeout(2)\n"
          " try:\n  s.connect((host,port)); r='connected'\n"
          " except OSError as e:\n  r=type(e).__name__\n"
          " s.close(); print('%.3f attempt %d %s'%(time.time(),i+1,r),flush=True)\n"
          " if i<len(gaps): at+=gaps[i]\n")

# A worm's spreading loop: one connect to tcp/445 per neighbour, one second each.
WORM = 'for h in "$@"; do timeout 1 bash -c "exec 3<>/dev/tcp/$h/445" 2>/dev/null; done; exit 0'


class Attack:
    """One attack: what ran where, what should detect it, and what was observed."""

    def __init__(self, name, source, rule, tool, expect_quarantine=True, deadline=60):
        self.name, self.source, self.rule, self.tool = name, source, rule, tool
        self.expect_quarantine = expect_quarantine
        self.hv = INVENTORY[source]["enforcer"] if source in INVENTORY else None
        self.after_id = max([i["id"] for i in incidents_of(source)], default=0)
        self.started = time.time()
        self.deadline = time.monotonic() + deadline
        self.process = None
        self.incident = self.finding = self.quarantine = None
        self.detected = self.contained = None   # seconds after the start
        self.first = None                        # (rule, seconds): the incident's first finding

    def done(self):
        return self.incident is not None and (self.contained is not None or not self.expect_quarantine)

    def step(self):
        """One look at the controller: the incident with the rule, then the quarantine."""
        if self.incident is None:
            for i in incidents_of(self.source):
                f = rule_finding(i, self.rule)
                if i["id"] > self.after_id and f is not None:
                    self.incident, self.finding = i, f
                    self.detected = parse_time(f.get("at") or i["opened_at"]) - self.started
                    first = (i["details"].get("findings") or [f])[0]
                    self.first = (first.get("rule"), parse_time(i["opened_at"]) - self.started)
                    break
        if self.incident is not None and self.expect_quarantine and self.contained is None:
            q = applied_quarantine(self.source)
            if q is not None and q.get("incident") == self.incident["id"]:
                self.quarantine, self.contained = q, time.time() - self.started
        if self.incident is not None:   # keep the latest view (findings and responses grow)
            fresh = api("GET", "/incidents/%d" % self.incident["id"], SOC[0])
            if fresh[0] == 200:
                self.incident = fresh[1]


SOC = [None]   # the SOC token, once the lab is up


def parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def incidents_of(source):
    return harness_incidents_of(SOC[0], source)


def rule_finding(incident, rule):
    for f in (incident.get("details") or {}).get("findings") or []:
        if f.get("rule") == rule or f.get("kind") == rule:
            return f
    return None


def applied_quarantine(workload):
    return harness_applied_quarantine(SOC[0], workload)


def track(attacks, what, until=None):
    """Polls every unfinished attack until `until` (default: all of `attacks`) are done or
    each one's deadline passes; reports the ones that did not finish."""
    until = until or attacks
    while True:
        pending = [a for a in attacks if not a.done() and time.monotonic() < a.deadline]
        for a in pending:
            a.step()
        if all(a.done() or time.monotonic() >= a.deadline for a in until):
            break
        time.sleep(0.1)
    for a in until:
        if not a.done():
            check("%s from %s: %s (incident %s, contained %s)" % (
                a.name, a.source, what, a.incident["id"] if a.incident else None, a.contained), False)
            if a.incident is None:
                print("  incidents of %s: %s" % (a.source, json.dumps(incidents_of(a.source))[:3000]))


def verify(a):
    """The assertions every attack shares: attribution, the rule's explanation, the response
    and the quarantine on the right hypervisor."""
    if a.incident is None:
        return
    status, fresh = api("GET", "/incidents/%d" % a.incident["id"], SOC[0])
    if status == 200:
        a.incident = fresh
    i, f = a.incident, a.finding
    d = i.get("details") or {}
    inv = INVENTORY[a.source]
    att = d.get("attribution") or {}
    check("%s: incident %d attributed to %s (user %s, %s) on %s port %s, segment vdi" % (
              a.name, i["id"], a.source, att.get("user"), att.get("hostname"), att.get("enforcer"), att.get("port")),
          i["source_workload"] == a.source and att.get("workload") == a.source and att.get("enforcer") == a.hv
          and att.get("user") == inv["user"] and att.get("hostname") == inv["hostname"]
          and att.get("port") == inv["attachment"]["interface"] and "vdi" in (att.get("segments") or []))
    expl = f.get("explanation") or ""
    check("%s: finding %s explains: %s" % (a.name, a.rule, expl),
          ("%s (user %s)" % (a.source, inv["user"])) in expl)
    check("%s: details.detectors counts %s: %s" % (
        a.name, a.rule, d.get("detectors")), d.get("detectors", {}).get(a.rule, 0) >= 1)
    actions = [r.get("action") for r in d.get("response") or []]
    check("%s: the response is quarantine (%s)" % (
        a.name, "; ".join("%s: %s" % (r.get("action"), r.get("reason")) for r in d.get("response") or [])), "quarantine" in actions)
    q = a.quarantine
    check("%s: automatic quarantine of %s applied on %s" % (a.name, a.source, a.hv),
          q is not None and q["automatic"] and q["actor"] == "analyzer"
          and [e["enforcer"] for e in q["enforcers"]] == [a.hv])


def pings(ns, host):
    return reaches(STATE, ns, host)


def contained_for_real(ns):
    """The quarantine drops for real (its rule counts the probes, the controller stores the
    drops), and the quarantine's allow-list (EDR tcp/443) still answers."""
    edr = (EDR, "tcp", 443)
    expect_dropped("quarantined %s: its ping to the file server is dropped by the quarantine" % ns, STATE, ns,
                   FILE_SERVER, "icmp", control=edr, reason="quarantine", token=SOC[0])
    expect_dropped("quarantined %s: file server tcp/445 dropped by the quarantine" % ns, STATE, ns, FILE_SERVER,
                   "tcp", 445, control=edr, reason="quarantine", token=SOC[0])


def start(attack, ns, *argv):
    attack.started = time.time()
    attack.process = background(STATE, ns, *argv)
    return attack


def finish(processes, seconds):
    """Waits (bounded) for attack tools to exit; kills what is left."""
    deadline = time.monotonic() + seconds
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            check("attack tool pid %d still runs after %ss: killed" % (p.pid, seconds), False)
            p.kill()
            p.wait(timeout=10)


def release_and_resolve(attacks):
    for a in attacks:
        status, r = api("DELETE", "/quarantines/%s?wait_ms=5000" % a.source, SOC[0])
        check("release %s, acked by %s" % (a.source, a.hv),
              status == 200 and r.get("released") and r.get("applied"))
        if a.incident is not None:
            status, _ = api("POST", "/incidents/%d/resolve" % a.incident["id"], SOC[0])
            check("resolve incident %d of %s" % (a.incident["id"], a.source), status == 200)


def rate_limit_room(needed, seconds):
    """Waits until `needed` more automatic quarantines fit in the policy's per-minute limit."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, a = api("GET", "/analyzer", SOC[0])
        if status == 200 and a["auto_quarantines_last_minute"] + needed <= a["max_auto_quarantines_per_minute"]:
            return True
        time.sleep(0.5)
    return check("room for %d automatic quarantines within %ss" % (needed, seconds), False)


def beacon_schedule():
    rng = random.Random(BEACON_SEED)
    gaps = [round(BEACON_PERIOD * (1 + rng.uniform(-BEACON_JITTER, BEACON_JITTER)), 2)
            for _ in range(BEACON_ATTEMPTS - 1)]
    return gaps


def fmt(seconds):
    return "-" if seconds is None else ("%.1f s" % seconds if seconds < 120 else "%d min %02d s" % divmod(round(seconds), 60))


def interrupted(*_):
    raise KeyboardInterrupt()


def main():
    if os.geteuid() != 0 or shutil.which("nmap") is None:
        print("skipped: needs root and nmap")
        return 77
    # SIGTERM (ctest's timeout) unwinds through `finally`: the lab always comes down.
    signal.signal(signal.SIGTERM, interrupted)
    lab(STATE, "down", "--purge")    # a lab a killed run left behind (idempotent)
    t0 = time.monotonic()
    attacks = []
    try:
        lab_up = up_with_lab_policy(STATE)
        if lab_up is None:
            return 1
        SOC[0] = lab_up[1]
        check("before the attacks vdi-101 and vdi-103 ping the file server",
              pings("vdi-101", FILE_SERVER) and pings("vdi-103", FILE_SERVER))

        # The long one first: the beacon runs through every other phase.
        gaps = beacon_schedule()
        judged = gaps[:BEACON_INTERVALS_JUDGED]
        cv = statistics.pstdev(judged) / statistics.mean(judged)
        print("beacon gaps (s): %s; cv of the first %d: %.3f" % (
            " ".join("%.1f" % g for g in gaps), len(judged), cv), flush=True)
        beacon = start(Attack("beaconing", "vdi-103", "beaconing", "python connect() every 5 s +-1 s",
                              deadline=sum(gaps) + 30),
                       "vdi-103", sys.executable, "-c", BEACON, C2, "443", *map(str, gaps))
        attacks.append(beacon)

        # SMB worm: five VDIs spread on tcp/445 at once.
        worm = []
        for vdi in WORM_SOURCES:
            worm.append(start(Attack("smb-worm", vdi, "lateral-movement", "bash /dev/tcp loop, tcp/445 x10"),
                              vdi, "bash", "-c", WORM, "worm", *WORM_TARGETS))
        fan_in = Attack("smb-worm fan-in", "target:%s tcp/445" % WORM_TARGETS[0], "fan-in", "(the 5 worms)",
                        expect_quarantine=False)
        fan_in.started = worm[0].started
        attacks += worm + [fan_in]
        track(worm + [fan_in, beacon], "detected and contained", until=worm + [fan_in])
        for a in worm:
            verify(a)
        if fan_in.incident is not None:
            d, f = fan_in.incident["details"], fan_in.finding
            check("fan-in incident %d about %s: %s (%s)" % (fan_in.incident["id"], fan_in.source,
                                                           f.get("classification"), f.get("explanation")),
                  d.get("subject_kind") == "target" and f.get("classification") == "worm-like"
                  and f.get("distinct_targets", 0) >= 5)
            check("the fan-in incident quarantines nothing itself (its sources answer for their own)",
                  all(r.get("action") != "quarantine" for r in d.get("response") or []))
        contained_for_real("vdi-101")
        finish([a.process for a in worm], 30)
        release_and_resolve(worm)
        check("released vdi-101 pings the file server again", pings("vdi-101", FILE_SERVER))

        # Short attacks, and the slow scan beside them, each from its own VDI.
        rate_limit_room(4, 70)
        slow = start(Attack("slow-scan", "vdi-003", "slow-scan", "nmap -sT --scan-delay %ds, 18 ports" % SLOW_DELAY,
                            deadline=SLOW_DELAY * 18 + 90),
                     "vdi-003", "nmap", "-sT", "-Pn", "-n", "--max-retries", "0", "--scan-delay", "%ds" % SLOW_DELAY,
                     "--max-scan-delay", "%ds" % SLOW_DELAY, "-p", SLOW_PORTS, FILE_SERVER)
        sweep = start(Attack("host sweep", "vdi-001", "host-sweep", "nmap -sn --min-rate 5000 10.0.0.0/24"),
                      "vdi-001", "nmap", "-sn", "-n", "--min-rate", MIN_RATE, "--exclude", "10.0.0.64/28",
                      "10.0.0.0/24")
        vertical = start(Attack("SYN port scan", "vdi-002", "port-scan-vertical", "nmap -sS --min-rate 5000 --top-ports 100"),
                         "vdi-002", "nmap", "-sS", "-Pn", "-n", "--min-rate", MIN_RATE, "--max-retries", "0",
                         "--top-ports", "100", FILE_SERVER)
        hv2_enforcer = int((Path(STATE) / "enforcers" / "hv2" / "enforcer.pid").read_text())
        os.kill(hv2_enforcer, signal.SIGSTOP)
        try:
            box = start(Attack("connect port scan", "vdi-101", "port-scan-box", "a burst of 32 connect()s, 8 ports x 4 hosts"),
                        "vdi-101", sys.executable, "-c", BOX_BURST, BOX_PORTS, *BOX_TARGETS)
            ready, _, _ = select.select([box.process.stdout], [], [], 10)
            check("the box burst was sent while hv2's enforcer was stopped",
                  bool(ready) and box.process.stdout.readline().strip() == "sent")
        finally:
            os.kill(hv2_enforcer, signal.SIGCONT)
        decoy = start(Attack("decoy touch", "vdi-102", "decoy", "ping -c1 10.0.0.66"),
                      "vdi-102", "ping", "-c1", "-W1", DECOY)
        short = [sweep, vertical, box, decoy]
        attacks += [slow] + short
        track(short + [slow, beacon], "detected and contained", until=short)
        for a in short:
            verify(a)
        if decoy.finding is not None:
            check("the decoy finding names %s" % DECOY, DECOY in decoy.finding.get("explanation", ""))
        finish([a.process for a in short], 120)

        # The box scan's scope graph: the source, its targets, its segment.
        if box.incident is not None:
            status, scope = api("GET", "/incidents/%d/scope" % box.incident["id"], SOC[0])
            if check("GET /incidents/%d/scope (200)" % box.incident["id"], status == 200):
                nodes = {n["id"]: n for n in scope["nodes"]}
                edges = {(e["source"], e["target"], e["kind"]) for e in scope["edges"]}
                src = nodes.get("source:vdi-101", {})
                check("scope names the source vdi-101 (user %s)" % src.get("user"),
                      src.get("kind") == "source" and src.get("user") == INVENTORY["vdi-101"]["user"])
                targets = {n.get("address"): n for n in nodes.values() if n["kind"] == "target"}
                check("scope names every scanned address as a blocked target: %s" % sorted(t for t in targets if t),
                      all(t in targets and ("source:vdi-101", "host:" + t, "blocked") in edges for t in BOX_TARGETS))
                check("scope resolves target 10.1.0.1 to workload vdi-001",
                      targets.get("10.1.0.1", {}).get("workload") == "vdi-001")
                check("scope names the segment vdi and the source's membership",
                      "segment:vdi" in nodes and ("source:vdi-101", "segment:vdi", "member") in edges)

        # The long ones.
        track([slow, beacon], "detected and contained", until=[slow])
        verify(slow)
        if slow.finding is not None:
            f = slow.finding
            check("slow scan stayed below every fast rule: %s ports, detectors %s" % (
                      f.get("distinct_ports"), slow.incident["details"].get("detectors")),
                  f.get("distinct_ports", 0) >= 16 and not any(rule_finding(slow.incident, r) for r in (
                "host-sweep", "port-scan-vertical", "port-scan-box", "distinct-targets")))
        track([beacon], "detected and contained")
        verify(beacon)
        if beacon.finding is not None:
            check("beacon finding names %s, periodicity %.2f" % (C2, beacon.finding.get("score", 0)),
                  C2 in beacon.finding.get("explanation", "") and beacon.finding.get("score", 0) >= 0.85)
            contained_for_real("vdi-103")
        finish([slow.process, beacon.process], 90)
    except KeyboardInterrupt:
        check("interrupted", False)
    finally:
        kill_children()
        down_and_verify(STATE)

    row = "%-17s %-8s %-43s %-18s %-11s %-29s %-12s"
    print("\n" + row % ("attack", "source", "tool", "rule", "detected", "first finding (incident)", "contained"))
    for a in attacks:
        print(row % (a.name, a.source if not a.source.startswith("target:") else "5 VDIs", a.tool, a.rule,
                     fmt(a.detected), "%s %s" % (a.first[0], fmt(a.first[1])) if a.first else "-",
                     fmt(a.contained) if a.expect_quarantine else "n/a (target)"))
    print("(seconds after each attack's start: detected = the rule's finding, contained = quarantine applied on the "
          "hypervisor; the slow scan and the beacon take minutes by design)")
    print("total %.0f s" % (time.monotonic() - t0))
    return report()


if __name__ == "__main__":
    sys.exit(main())
