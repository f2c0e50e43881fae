#!/usr/bin/env python3
"""Time to contain (target: p99 < 5 ms from the detecting drop to the quarantine in force,
with the budget per stage; quarantine API -> in force p99 < 3 ms):
the driver of bench/benchmarks/contain.sh.

Brings up the namespace lab (examples/lab/lab.py) with the real bulkhead-controller and
bulkhead-enforcers under its own prefix, activates a policy derived from the lab's, and runs
three scenarios (docs/benchmarks.md, "Time to contain"):

  scan    one VDI sends one UDP datagram to each of N distinct blocked targets (N = the
          policy's incident.distinct_targets); the N-th drop completes the detection.
  decoy   one VDI sends one UDP datagram to the decoy 10.0.0.66; that drop is the detection.
  api     POST /api/v1/quarantines (no wait) on a new connection per request (urllib, the
          target's figure); the same on one kept-alive connection (as a SOAR client's
          session; shows what the script's connection set-up costs); and with ?wait_ms=5000.

Start of a scan/decoy run: the kernel timestamp of the completing drop, i.e. the detection's
`last_ns` as the controller recorded it on the incident (the NFLOG timestamp the enforcer
uploaded; checked to be `time_source: kernel` and to be the drop of the datagram we sent
last). Start of an api run: CLOCK_REALTIME just before the request is made (before urllib
builds it; on the kept-alive connection, before it is written). End: the
CLOCK_REALTIME stamp bench_contain_watch puts on the nf_tables notification that adds the
VDI's port interface to set `quarantined_ports` in the hypervisor's namespace. Same machine,
same clock. Between runs the quarantine is released (DELETE ?wait_ms, and the watcher must
see the element go), the incident resolved and 50 ms left for the enforcer to finish
persisting the release; source VDIs rotate over the lab's six, each run uses fresh
destination ports, and a VDI is reused only after the policy's detection window has
passed, so no detector state carries from one run into the next.

Prints one figure per line on stdout, tab-separated: metric, value, unit, target ("null"
for none), extra JSON members (may be empty). Progress goes to stderr. --out FILE gets every
sample. The lab is torn down on every exit path (also SIGINT/SIGTERM).

  contain_bench.py --repo R --bin-dir B --watch-bin W --state-dir S [--runs 100]
                   [--api-runs 100] [--out FILE]
"""
import argparse
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

PREFIX = "bhbench-"
API_PORT = 18381
MGMT_NET = "10.254.79.0/24"
TLS_PORT = 18643
SCAN_DESTINATION = "10.0.0.30"  # the file server: VDIs may reach it on tcp/445 and ping only
DECOY = "10.0.0.66"
WINDOW_SECONDS = 2              # the bench policy's detection window (the lab's is 60 s)
# The bench policy's automatic-quarantine guardrail. The lab's policy allows 10 automatic
# quarantines a minute and pages beyond; a run here quarantines one VDI every ~0.5 s, so
# from the 11th run on every detection would be rate-limited instead of contained. The
# bench times containment, not the guardrail: the limit goes to the schema's maximum.
MAX_AUTO_QUARANTINES_PER_MINUTE = 10000
WAIT_MS = 5000
RUN_TIMEOUT_S = 10.0
SETTLE_S = 0.05               # pause after each release
TRIPWIRE_PINGS = 200          # echo requests right after the tripwire packet

# Runs in each VDI namespace: one datagram per requested port, CLOCK_REALTIME read just
# before the last one is sent (a cross-check of the kernel timestamp).
SENDER = r"""
import json, signal, socket, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver ends it (stdin closed) or lab down does
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    t_last = 0
    for i, port in enumerate(cmd["ports"]):
        if i == len(cmd["ports"]) - 1:
            t_last = time.time_ns()
        try:
            s.sendto(b"bulkhead-bench-contain", (cmd["to"], port))
        except OSError:  # e.g. an ICMP error reported on the socket: the datagram is not ours to judge
            pass
    print(json.dumps({"t_last_send_ns": t_last}), flush=True)
"""

# Runs in a VDI namespace for the tripwire scenario: `count` ICMP echo requests to `to`, as
# fast as the socket takes them, after one UDP datagram to `tripwire` (none for the
# control); answers how many echo replies came back within `listen_s` (a reply is a
# packet that got through, both ways).
PINGER = r"""
import json, os, select, signal, socket, struct, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ident = os.getpid() & 0xFFFF

def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd.get("tripwire"):
        udp.sendto(b"bulkhead-bench-tripwire", (cmd["tripwire"], cmd.get("tripwire_port", 40000)))
    sent = 0
    base = cmd["first_seq"]
    for i in range(cmd["count"]):
        header = struct.pack("!BBHHH", 8, 0, 0, ident, (base + i) & 0xFFFF)
        payload = b"bulkhead"
        packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, (base + i) & 0xFFFF) + payload
        try:
            raw.sendto(packet, (cmd["to"], 0))
            sent += 1
        except OSError:
            pass
    replies = set()
    deadline = time.monotonic() + cmd["listen_s"]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if not select.select([raw], [], [], left)[0]:
            continue
        data = raw.recv(2048)
        icmp = data[(data[0] & 0x0F) * 4:]
        if len(icmp) >= 8:
            kind, _, _, rid, seq = struct.unpack("!BBHHH", icmp[:8])
            if kind == 0 and rid == ident and (seq - base) & 0xFFFF < cmd["count"]:
                replies.add(seq)
    print(json.dumps({"sent": sent, "replies": len(replies)}), flush=True)
"""


# The stages of one containment (docs/benchmarks.md, "Time to contain"): name, from, to, over
# the stamps of GET /analyzer/containments plus the watcher's "in_force". Contiguous: they
# add up to the whole time to contain.
STAGES = [
    ("nflog_delivery", "kernel", "enforcer_received"),        # nfnetlink_log holding it
    ("enforcer", "enforcer_received", "enforcer_sent"),        # aggregation, spool, uploader
    ("upload", "enforcer_sent", "controller_received"),        # channel socket, a worker
    ("store", "controller_received", "stored"),                # parse, commit
    ("detect", "stored", "detected"),                          # analysis queue, engine
    ("record", "detected", "recorded"),                        # incident and finding committed
    ("quarantine", "recorded", "pushed"),                      # committed, host recompiled, diff handed to its channel
    ("apply", "pushed", "in_force"),                           # to the enforcer, one nf_tables batch
]


def log(msg):
    print("contain: " + msg, file=sys.stderr, flush=True)


class Failure(Exception):
    pass


# ----------------------------------------------------------------------------- statistics

def percentile(values, p):
    """Nearest-rank percentile: the smallest sample with at least p % of the samples at or
    below it. With fewer than 100 samples p99 is the maximum."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summary(values):
    return {"count": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values), "min": min(values)}


# ----------------------------------------------------------------------------------- lab

class Lab:
    def __init__(self, args):
        self.args = args
        self.lab_py = Path(args.repo) / "examples/lab/lab.py"
        self.state = Path(args.state_dir)
        self.up_done = False

    def run(self, *argv, timeout=240):
        return subprocess.run([sys.executable, str(self.lab_py), *argv, "--prefix", PREFIX,
                               "--state-dir", str(self.state)], capture_output=True, text=True, timeout=timeout)

    def down(self):
        p = self.run("down", "--purge", timeout=120)
        if p.returncode != 0:
            log("lab down failed: " + (p.stdout + p.stderr)[-2000:])
        return p.returncode == 0

    def up(self):
        # A lab left by a killed earlier run (same prefix and state directory) goes first.
        self.down()
        b = Path(self.args.bin_dir)
        p = self.run("up", "--api-listen", "127.0.0.1:%d" % API_PORT, "--mgmt-net", MGMT_NET,
                     "--tls-port", str(TLS_PORT), "--controller-bin", str(b / "bulkhead-controller"),
                     "--enforcer-bin", str(b / "bulkhead-enforcer"),
                     *["--enforcer-arg=" + a for a in self.args.enforcer_arg])
        if p.returncode != 0:
            raise Failure("lab up failed (exit %d):\n%s" % (p.returncode, (p.stdout + p.stderr)[-3000:]))
        self.up_done = True
        self.doc = json.loads((self.state / "lab.json").read_text())
        self.admin = (self.state / "tokens/lab-admin.token").read_text().strip()


def api(method, path, token, body=None, timeout=15):
    data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "DELETE") else None)
    req = urllib.request.Request("http://127.0.0.1:%d/api/v1%s" % (API_PORT, path), data=data, method=method,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def expect(status_body, ok, what):
    status, body = status_body
    if status not in ok:
        raise Failure("%s: HTTP %s %s" % (what, status, json.dumps(body)[:500]))
    return body


# ------------------------------------------------------------------------------ watchers

class Watchers:
    """bench_contain_watch in every hypervisor namespace; events in arrival order."""

    def __init__(self, watch_bin, hypervisors):
        self.cond = threading.Condition()
        self.events = []  # (hypervisor, record)
        self.procs = []
        self.ready = set()
        self.realtime = {}
        self.problems = []
        for hv in hypervisors:
            p = subprocess.Popen(["ip", "netns", "exec", hv["namespace"], watch_bin, "--max-seconds", "900"],
                                 stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, bufsize=1)
            self.procs.append(p)
            threading.Thread(target=self._read, args=(hv["id"], p), daemon=True).start()
        deadline = time.monotonic() + 10
        with self.cond:
            while len(self.ready) < len(hypervisors):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure("bench_contain_watch not ready in every hypervisor namespace")
                self.cond.wait(left)

    def _read(self, hv, p):
        for line in p.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                if record.get("ready"):
                    self.ready.add(hv)
                    self.realtime[hv] = record.get("realtime_priority", False)
                elif record.get("overrun") or record.get("unparsable"):
                    self.problems.append((hv, record))
                else:
                    self.events.append((hv, record))
                self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.events)

    def wait(self, start, hv, key, op, timeout=RUN_TIMEOUT_S):
        """The first event at index >= start for (hv, key, op), or None on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.events)):
                    ehv, rec = self.events[i]
                    if ehv == hv and rec.get("key") == key and rec.get("op") == op:
                        return rec
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Sender:
    def __init__(self, namespace, program=SENDER):
        self.p = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-u", "-c", program],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        if json.loads(self.p.stdout.readline() or "{}").get("ready") is not True:
            raise Failure("sender in %s did not start" % namespace)

    def send(self, to, ports):
        self.p.stdin.write(json.dumps({"to": to, "ports": ports}) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())["t_last_send_ns"]

    def ask(self, command):
        self.p.stdin.write(json.dumps(command) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def stop(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


# ------------------------------------------------------------------------------ scenarios

def parse_ms_time(text):
    """Controller times ("2026-11-23T10:00:00.123Z") -> ns since the epoch."""
    from datetime import datetime, timezone
    t = datetime.strptime(text.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc)
    return int(round(t.timestamp() * 1000)) * 1_000_000


class Bench:
    def __init__(self, args, lab):
        self.args = args
        self.lab = lab
        self.token = lab.admin
        self.vdis = [w for w in lab.doc["workloads"] if w.get("role") == "vdi" and w.get("managed", True)]
        self.hv_ns = {h["id"]: h["namespace"] for h in lab.doc["hypervisors"]}
        self.last_used = {}
        self.next_port = 20000
        self.samples = {"scan": [], "decoy": [], "api": [], "api_keepalive": [], "api_wait": [], "tripwire": []}
        self.failures = {"scan": 0, "decoy": 0, "api": 0, "api_keepalive": 0, "api_wait": 0, "tripwire": 0}

    def setup(self):
        policy = json.loads((Path(self.args.repo) / "examples/lab/policy.json").read_text())
        policy.pop("$schema", None)
        policy["name"] = "lab-bench-contain"
        policy["description"] = ("examples/lab/policy.json with a %d s detection window, for "
                                 "bench/benchmarks/contain.sh" % WINDOW_SECONDS)
        response = policy.setdefault("response", {})
        response.setdefault("incident", {})["window_seconds"] = WINDOW_SECONDS
        response["auto_quarantine"] = {"mode": "on", "min_severity": "high",
                                       "max_per_minute": MAX_AUTO_QUARANTINES_PER_MINUTE}
        self.threshold = response["incident"].get("distinct_targets", 10)
        self.policy = policy
        revision = expect(api("POST", "/policies", self.token, policy), (201,), "upload the bench policy")
        activated = expect(api("POST", "/policies/%d/activate" % revision["id"], self.token), (200,), "activate it")
        generation = activated["generation"]
        deadline = time.monotonic() + 30
        while True:
            enforcers = expect(api("GET", "/enforcers", self.token), (200,), "list enforcers")["enforcers"]
            if enforcers and all(e["in_sync"] and e["applied_generation"] >= generation for e in enforcers):
                break
            if time.monotonic() > deadline:
                raise Failure("enforcers did not ack generation %d: %s" % (generation, json.dumps(enforcers)[:800]))
            time.sleep(0.1)
        log("policy active (generation %d, distinct_targets %d, window %d s); enforcers in sync"
            % (generation, self.threshold, WINDOW_SECONDS))
        self.watchers = Watchers(self.args.watch_bin, self.lab.doc["hypervisors"])
        log("watchers ready (SCHED_FIFO: %s)" % json.dumps(self.watchers.realtime))
        self.senders = {w["id"]: Sender(w["namespace"]) for w in self.vdis}

    def teardown(self):
        for s in getattr(self, "senders", {}).values():
            s.stop()
        if hasattr(self, "watchers"):
            self.watchers.stop()

    def pick_vdi(self, run):
        vdi = self.vdis[run % len(self.vdis)]
        since = time.monotonic() - self.last_used.get(vdi["id"], -1e9)
        if since < WINDOW_SECONDS + 0.5:
            time.sleep(WINDOW_SECONDS + 0.5 - since)
        return vdi

    def ports(self, n):
        first = self.next_port
        self.next_port += n
        return list(range(first, first + n))

    def release(self, vdi, incident_id=None):
        mark = self.watchers.mark()
        body = expect(api("DELETE", "/quarantines/%s?wait_ms=%d" % (vdi["id"], WAIT_MS), self.token), (200,),
                      "release " + vdi["id"])
        if body.get("released") and self.watchers.wait(mark, vdi["hypervisor"], vdi["interface"], "del") is None:
            raise Failure("the quarantine element of %s was not removed" % vdi["id"])
        if incident_id is not None:
            expect(api("POST", "/incidents/%d/resolve" % incident_id, self.token), (200,), "resolve incident")
        self.last_used[vdi["id"]] = time.monotonic()
        # Let the enforcer finish the release (it persists state after acking) so that each run
        # measures one quarantine on an idle system, not one queued behind the previous release.
        time.sleep(SETTLE_S)

    def detection_run(self, kind, run):
        vdi = self.pick_vdi(run)
        hv, iface = vdi["hypervisor"], vdi["interface"]
        if kind == "scan":
            to, ports = SCAN_DESTINATION, self.ports(self.threshold)
        else:
            to, ports = DECOY, self.ports(1)
        mark = self.watchers.mark()
        t_send = self.senders[vdi["id"]].send(to, ports)
        element = self.watchers.wait(mark, hv, iface, "add")
        incidents = expect(api("GET", "/incidents?workload=%s&state=open&limit=5" % vdi["id"], self.token), (200,),
                           "incidents of " + vdi["id"])["incidents"]
        incident = incidents[0] if incidents else None
        try:
            if element is None and incident is not None and "paged" in (incident.get("details") or {}):
                # The response planner paged instead of quarantining (rate limit, or a rule
                # of the policy): the run measured nothing, and says why.
                raise Failure("run %d (%s from %s): incident %d paged instead of quarantined: %s" % (
                    run, kind, vdi["id"], incident["id"], incident["details"]["paged"].get("reason")))
            if element is None or incident is None:
                raise Failure("run %d (%s from %s): %s within %.0f s" % (
                    run, kind, vdi["id"], "no quarantine element" if element is None else "no incident",
                    RUN_TIMEOUT_S))
            finding = incident["details"]["findings"][-1]
            expected_kind = "distinct-targets" if kind == "scan" else "decoy"
            if finding["kind"] != expected_kind:
                raise Failure("run %d: detection kind %s, expected %s" % (run, finding["kind"], expected_kind))
            # The completing drop as the controller stored it: the datagram we sent last.
            events = expect(api("GET", "/events?workload=%s&port=%d&type=drop&limit=5" % (vdi["id"], ports[-1]),
                                self.token), (200,), "the completing drop event")["events"]
            completing = [e for e in events if e.get("dst") == to]
            if not completing:
                raise Failure("run %d: no stored drop event for %s port %d" % (run, to, ports[-1]))
            event = completing[0]
            if event.get("time_source") != "kernel":
                raise Failure("run %d: the drop's time_source is %r, not the kernel's" % (run, event.get("time_source")))
            last_ns = int(finding["last_ns"])
            if last_ns != int(event["time_ns"]):
                raise Failure("run %d: the detection was completed by another drop (last_ns %d, our last datagram %d)"
                              % (run, last_ns, int(event["time_ns"])))
            quarantine = expect(api("GET", "/quarantines/%s" % vdi["id"], self.token), (200,), "quarantine record")
            if not quarantine.get("automatic") or quarantine.get("incident") != incident["id"]:
                raise Failure("run %d: the quarantine is not the automatic one of incident %d" % (run, incident["id"]))
            t_force = int(element["t_ns"])
            sample = {
                "run": run, "vdi": vdi["id"], "hypervisor": hv, "targets": len(ports),
                "contain_ms": (t_force - last_ns) / 1e6,
                "send_to_kernel_ms": (last_ns - t_send) / 1e6,  # a cross-check of the kernel's stamp
            }
            sample.update(self.stage_budget(run, incident["id"], event, last_ns, t_force))
            self.samples[kind].append(sample)
            log("%s run %2d %s: %.2f ms (%s)" % (kind, run, vdi["id"], sample["contain_ms"], ", ".join(
                "%s %.2f" % (stage, sample["stage_ms"][stage]) for stage, _, _ in STAGES)))
        except Failure as e:
            self.failures[kind] += 1
            log(str(e))
        finally:
            self.release(vdi, incident["id"] if incident else None)

    def stage_budget(self, run, incident_id, event, last_ns, t_force):
        """The containment's timeline as the controller recorded it (GET /analyzer/containments),
        checked to be this run's, as per-stage durations ending with the element in force."""
        listed = expect(api("GET", "/analyzer/containments?incident=%d" % incident_id, self.token), (200,),
                        "containment timeline")["containments"]
        if not listed:
            raise Failure("run %d: no containment timeline for incident %d" % (run, incident_id))
        timeline = listed[0]
        stamps = dict(timeline["stages_ns"])
        if int(timeline["event"]) != int(event["id"]) or stamps.get("kernel") != last_ns:
            raise Failure("run %d: the timeline is of event %s, not our completing drop %s" % (
                run, timeline["event"], event["id"]))
        stamps["in_force"] = t_force
        missing = [name for _, _, name in STAGES if stamps.get(name) is None]
        if missing:
            raise Failure("run %d: the timeline lacks %s: %s" % (run, ", ".join(missing), json.dumps(timeline)))
        return {"stage_ms": {stage: (stamps[end] - stamps[start]) / 1e6 for stage, start, end in STAGES}}

    def keepalive_post(self, path, body):
        """POST on one HTTP/1.1 connection kept open across runs (as a SOAR client's session
        does), so the figure leaves out this script's connection set-up and urllib."""
        import http.client
        data = json.dumps(body).encode()
        headers = {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"}
        for attempt in (0, 1):
            if getattr(self, "keepalive", None) is None:
                self.keepalive = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=15)
                self.keepalive.connect()
            t0 = time.time_ns()
            try:
                self.keepalive.request("POST", "/api/v1" + path, body=data, headers=headers)
                response = self.keepalive.getresponse()
                raw = response.read()
                return t0, response.status, json.loads(raw) if raw else {}
            except (http.client.HTTPException, OSError):
                self.keepalive.close()
                self.keepalive = None
                if attempt:
                    raise
        raise Failure("unreachable")

    def api_run(self, run, wait, keepalive=False):
        vdi = self.vdis[run % len(self.vdis)]
        hv, iface = vdi["hypervisor"], vdi["interface"]
        kind = "api_wait" if wait else ("api_keepalive" if keepalive else "api")
        path = "/quarantines" + ("?wait_ms=%d" % WAIT_MS if wait else "")
        mark = self.watchers.mark()
        request = {"workload": vdi["id"], "reason": "bench/contain api run %d" % run}
        if keepalive:
            t0, status, body = self.keepalive_post(path, request)
        else:
            t0 = time.time_ns()
            status, body = api("POST", path, self.token, request)
        t_resp = time.time_ns()
        try:
            if status != 201:
                raise Failure("api run %d: HTTP %s %s" % (run, status, json.dumps(body)[:300]))
            element = self.watchers.wait(mark, hv, iface, "add")
            if element is None:
                raise Failure("api run %d: no quarantine element for %s within %.0f s" % (run, vdi["id"], RUN_TIMEOUT_S))
            applied = [e["state"] for e in body.get("enforcers", [])] == ["applied"]
            if wait and not applied:
                raise Failure("api run %d: POST with wait_ms answered before the enforcer acked: %s"
                              % (run, json.dumps(body.get("enforcers"))))
            sample = {"run": run, "vdi": vdi["id"], "in_force_ms": (int(element["t_ns"]) - t0) / 1e6,
                      "response_ms": (t_resp - t0) / 1e6, "acked_in_response": applied}
            self.samples[kind].append(sample)
        except Failure as e:
            self.failures[kind] += 1
            log(str(e))
        finally:
            self.release(vdi)

    def tripwire_runs(self, runs):
        """The decoy as a tripwire (the policy's decoy segments get "tripwire": true): one UDP
        datagram to the decoy, then TRIPWIRE_PINGS echo requests to the file server (which the
        VDI may ping) as fast as the socket takes them. Every reply is a packet that got
        through after the tripwire; the figure must be 0. The control, the same pings just
        before without the tripwire, must all be answered."""
        if runs <= 0:
            return
        policy = json.loads(json.dumps(self.policy))
        policy["name"] = "lab-bench-contain-tripwire"
        for segment in policy["segments"]:
            if segment.get("decoy"):
                segment["tripwire"] = True
        revision = expect(api("POST", "/policies", self.token, policy), (201,), "upload the tripwire policy")
        activated = expect(api("POST", "/policies/%d/activate" % revision["id"], self.token), (200,), "activate it")
        self.wait_in_sync(activated["generation"])
        log("tripwire policy active (generation %d)" % activated["generation"])
        pingers = {}
        try:
            for run in range(runs):
                vdi = self.pick_vdi(run)
                if vdi["id"] not in pingers:
                    pingers[vdi["id"]] = Sender(vdi["namespace"], PINGER)
                pinger = pingers[vdi["id"]]
                try:
                    control = pinger.ask({"to": SCAN_DESTINATION, "count": TRIPWIRE_PINGS, "first_seq": 0,
                                          "listen_s": 0.5})
                    hit = pinger.ask({"tripwire": DECOY, "to": SCAN_DESTINATION, "count": TRIPWIRE_PINGS,
                                      "first_seq": 1000, "listen_s": 0.5})
                    recorded = None
                    deadline = time.monotonic() + RUN_TIMEOUT_S
                    while time.monotonic() < deadline and recorded is None:
                        status, q = api("GET", "/quarantines/%s" % vdi["id"], self.token)
                        if status == 200 and q.get("contained_by") == "kernel":
                            recorded = q
                        else:
                            time.sleep(0.02)
                    sample = {"run": run, "vdi": vdi["id"], "control_sent": control["sent"],
                              "control_replies": control["replies"], "sent": hit["sent"],
                              "through": hit["replies"], "recorded_by_controller": recorded is not None}
                    self.samples["tripwire"].append(sample)
                    log("tripwire run %d %s: control %d/%d answered, after the tripwire %d of %d through, %s" % (
                        run, vdi["id"], control["replies"], control["sent"], hit["replies"], hit["sent"],
                        "recorded as contained by the kernel" if recorded else "NOT recorded by the controller"))
                    if control["replies"] != control["sent"] or recorded is None:
                        self.failures["tripwire"] += 1
                finally:
                    self.release(vdi, recorded.get("incident") if recorded else None)
        finally:
            for p in pingers.values():
                p.stop()

    def wait_in_sync(self, generation):
        deadline = time.monotonic() + 30
        while True:
            enforcers = expect(api("GET", "/enforcers", self.token), (200,), "list enforcers")["enforcers"]
            if enforcers and all(e["in_sync"] and e["applied_generation"] >= generation for e in enforcers):
                return
            if time.monotonic() > deadline:
                raise Failure("enforcers did not ack generation %d: %s" % (generation, json.dumps(enforcers)[:800]))
            time.sleep(0.1)

    def run_all(self):
        for run in range(self.args.runs):
            self.detection_run("scan", run)
        for run in range(self.args.runs):
            self.detection_run("decoy", run)
        for run in range(self.args.api_runs):
            self.api_run(run, wait=False)
        for run in range(self.args.api_runs):
            self.api_run(run, wait=False, keepalive=True)
        for run in range(self.args.api_runs):
            self.api_run(run, wait=True)
        self.tripwire_runs(self.args.tripwire_runs)
        for kind in ("api", "api_keepalive", "api_wait"):
            s = [x["in_force_ms"] for x in self.samples[kind]]
            if s:
                log("%s: %d runs, in force p50 %.1f ms, p99 %.1f ms" % (kind, len(s), percentile(s, 50), percentile(s, 99)))
        if self.watchers.problems:
            log("watcher problems: %s" % json.dumps(self.watchers.problems)[:500])


# -------------------------------------------------------------------------------- figures

def figures(bench):
    out = []

    def fig(metric, value, unit, target=None, met=None, **extra):
        members = dict(extra)
        if target is not None:
            members["met"] = met
        out.append((metric, value, unit, target, members))

    def ms(v):
        return round(v, 1)

    for kind, label in (("scan", "scan"), ("decoy", "decoy")):
        values = [x["contain_ms"] for x in bench.samples[kind]]
        runs = len(values)
        if runs:
            s = summary(values)
            fig("contain_%s_p50" % label, ms(s["p50"]), "ms")
            fig("contain_%s_p99" % label, ms(s["p99"]), "ms", "p99 < 5 ms", s["p99"] < 5, runs=runs,
                p99_is_max=runs < 100)
            fig("contain_%s_max" % label, ms(s["max"]), "ms")
            for stage, _, _ in STAGES:
                part = [x["stage_ms"][stage] for x in bench.samples[kind]]
                fig("contain_%s_stage_%s_p50" % (label, stage), round(percentile(part, 50), 2), "ms")
                fig("contain_%s_stage_%s_p99" % (label, stage), round(percentile(part, 99), 2), "ms")
        fig("contain_%s_runs" % label, runs, "runs", "≥ 20", runs >= 20)
        fig("contain_%s_failed_runs" % label, bench.failures[kind], "runs")
    if bench.samples["scan"]:
        fig("contain_scan_targets", bench.samples["scan"][0]["targets"], "targets")
    for kind, label in (("api", "quarantine_api"), ("api_keepalive", "quarantine_api_keepalive"),
                        ("api_wait", "quarantine_api_wait")):
        values = [x["in_force_ms"] for x in bench.samples[kind]]
        runs = len(values)
        if runs:
            s = summary(values)
            target = "p99 < 3 ms" if kind == "api" else None
            fig("%s_to_in_force_p50" % label, ms(s["p50"]), "ms")
            if target:
                fig("%s_to_in_force_p99" % label, ms(s["p99"]), "ms", target, s["p99"] < 3, runs=runs,
                    p99_is_max=runs < 100)
            else:
                fig("%s_to_in_force_p99" % label, ms(s["p99"]), "ms", runs=runs, p99_is_max=runs < 100)
            fig("%s_to_in_force_max" % label, ms(s["max"]), "ms")
            r = summary([x["response_ms"] for x in bench.samples[kind]])
            fig("%s_response_p50" % label, ms(r["p50"]), "ms")
            fig("%s_response_p99" % label, ms(r["p99"]), "ms")
        fig("%s_runs" % label, runs, "runs")
        fig("%s_failed_runs" % label, bench.failures[kind], "runs")
    trips = bench.samples["tripwire"]
    if trips:
        through = sum(x["through"] for x in trips)
        fig("contain_tripwire_packets_through", through, "packets", "0", through == 0, runs=len(trips),
            sent=sum(x["sent"] for x in trips))
        fig("contain_tripwire_control_answered", sum(x["control_replies"] for x in trips), "packets",
            sent=sum(x["control_sent"] for x in trips))
    fig("contain_tripwire_runs", len(trips), "runs")
    fig("contain_tripwire_failed_runs", bench.failures["tripwire"], "runs")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--watch-bin", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--api-runs", type=int, default=100)
    ap.add_argument("--tripwire-runs", type=int, default=10)
    ap.add_argument("--out")
    ap.add_argument("--enforcer-arg", action="append", default=[],
                    help="one more argument for every lab enforcer (e.g. --port-discovery, as packaged)")
    args = ap.parse_args()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    lab = Lab(args)
    bench = None
    status = 0
    try:
        t = time.monotonic()
        log("lab up (prefix %s, API 127.0.0.1:%d, mgmt %s, state %s)" % (PREFIX, API_PORT, MGMT_NET, args.state_dir))
        lab.up()
        log("lab up in %.1f s" % (time.monotonic() - t))
        bench = Bench(args, lab)
        bench.setup()
        bench.run_all()
        if args.out:
            Path(args.out).write_text(json.dumps({"samples": bench.samples, "failures": bench.failures,
                                                  "watcher_realtime": bench.watchers.realtime,
                                                  "watcher_problems": bench.watchers.problems}, indent=1))
        for metric, value, unit, target, extra in figures(bench):
            print("\t".join([metric, json.dumps(value), unit, target or "null",
                             json.dumps(extra, ensure_ascii=False, separators=(",", ":"))[1:-1]]), flush=True)
        # Any failed run fails the benchmark: figures from the runs that worked would hide a
        # path that no longer contains (a guardrail, a timeout) behind good percentiles.
        failed = {kind: n for kind, n in bench.failures.items() if n}
        if failed:
            log("failed runs: %s" % json.dumps(failed))
            status = 1
        if not bench.samples["scan"] or not bench.samples["decoy"] or not bench.samples["api"]:
            status = 1
    except Failure as e:
        log(str(e))
        status = 1
    except KeyboardInterrupt as e:
        log("interrupted" + (" (%s)" % e if str(e) else ""))
        status = 130
    finally:
        if bench is not None:
            bench.teardown()
        if lab.up_done or lab.state.exists():
            log("lab down")
            if not lab.down():
                status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
