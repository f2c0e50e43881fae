#!/usr/bin/env python3
"""Kernel-semantics integration test of the Bulkhead ruleset compiler.

Builds a namespace lab (hypervisor "hv" with VDI ports vdi1..vdi5 and an admin port
adm1, a file-server namespace "srv" behind hv's "uplink"), loads what
`bulkheadctl policy compile --enforcer hv` emits with `nft -f -` into hv, and checks a
reachability matrix with real TCP/UDP/ICMP traffic plus the NFLOG record of every drop
(enforce + monitor, IPv4 + IPv6).  Then it checks the diff path in the kernel
(`bulkheadctl policy diff --format nft` applied with `nft -f` == loading the new ruleset
directly), live quarantine of a VDI with an open connection, and that a foreign nftables
table survives every load and diff untouched.  See README.md in this directory.

Exit codes: 0 all checks passed, 1 a check failed, 2 harness/setup error,
77 a required kernel or userspace feature is missing (ctest reports SKIP).
Python 3.9+, stdlib only; must run as root.
"""

import argparse
import atexit
import concurrent.futures
import copy
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab_harness"))
from harness import check, list_netns, log, report  # noqa: E402  (check(name, condition, detail): the suites' one harness)

PAIRS = [0]  # matrix pairs tested (each is a quiet check: the matrix prints its own table)
SKIP = 77
NS_PREFIX = "bhit-"  # namespaces are bhit-<pid>-<role>; the pid keeps parallel runs apart
DROP_GROUP = 10
ALLOW_GROUP = 11
TCP_PORTS = [22, 139, 443, 445, 3389, 9418]
UDP_PORTS = [137, 3389, 5000]
PROBE_TIMEOUT = 1.5  # seconds a denied TCP/UDP attempt waits before it counts as failed
PING_ATTEMPTS = 2
WORKERS = 12
CMD_TIMEOUT = 20  # seconds, any single helper command

HV_GATEWAY4 = "169.254.1.1"  # on hv's lo: answers the VDIs' ARP on every port (onlink gw)
HV_GATEWAY6 = "fe80::1"      # link-local on every hv port
UPLINK4, UPLINK6 = "10.0.0.1/24", "fd00:0:0:1::1/64"
SRV4, SRV6 = "10.0.0.30/24", "fd00:0:0:1::30/64"
EDR = ("10.0.0.20", "fd00:0:0:1::20")
DECOY = ("10.0.0.66", "fd00:0:0:1::66")

# The VDI the diff scenario adds with --new-inventory (its namespace exists from the
# start; until the diff, vdi5 is a port the ruleset does not know).
EXTRA_VDI = {
    "id": "vdi-5", "enforcer": "hv", "addresses": ["10.1.0.5", "fd00:0:0:10::5"],
    "labels": {"role": "vdi", "pool": "sales"}, "hostname": "VDI-5",
    "attachment": {"mode": "port", "interface": "vdi5"},
}


class SkipTest(Exception):
    pass


class HarnessError(Exception):
    pass


class Interrupted(Exception):
    pass


class Rejected(Exception):
    """nft refused what bulkheadctl emitted: a compiler bug, reported as a failure."""


# --------------------------------------------------------------------------- commands

def run(cmd, input=None, timeout=CMD_TIMEOUT, check=True):
    try:
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise HarnessError("timed out after %ss: %s" % (timeout, " ".join(cmd)))
    if check and p.returncode != 0:
        raise HarnessError("command failed (%d): %s\n%s%s" % (
            p.returncode, " ".join(cmd), p.stdout[-2000:], p.stderr[-2000:]))
    return p


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def delete_netns(name):
    """Kills what still runs inside one of *our* namespaces, then deletes it."""
    p = run(["ip", "netns", "pids", name], check=False, timeout=5)
    for word in p.stdout.split():
        if word.isdigit():
            try:
                os.kill(int(word), signal.SIGKILL)
            except OSError:
                pass
    run(["ip", "netns", "del", name], check=False, timeout=10)


def sweep_stale_namespaces():
    """Removes namespaces left by an earlier run that was SIGKILLed (its pid is gone)."""
    for name in list_netns():
        m = re.match(r"^%s(\d+)-" % re.escape(NS_PREFIX), name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            log("sweeping stale namespace %s (pid %s is gone)" % (name, m.group(1)))
            delete_netns(name)
    for path in Path(tempfile.gettempdir()).glob(NS_PREFIX + "*"):
        m = re.match(r"^%s(\d+)-" % re.escape(NS_PREFIX), path.name)
        if m and path.is_dir() and not pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- the lab

@dataclass
class Endpoint:
    name: str
    ns_role: str
    v4: str
    v6: str
    iface: Optional[str] = None  # hv port interface, for managed workloads
    workload: Optional[str] = None

    def addr(self, family):
        return self.v4 if family == 4 else self.v6


class Lab:
    def __init__(self, inventory):
        self.pid = os.getpid()
        self.namespaces: Dict[str, str] = {}
        self.procs: List[subprocess.Popen] = []
        self.lock = threading.Lock()
        self.endpoints: Dict[str, Endpoint] = {}
        for w in inventory["workloads"] + [EXTRA_VDI]:
            v4 = next(a for a in w["addresses"] if ":" not in a)
            v6 = next(a for a in w["addresses"] if ":" in a)
            if w.get("attachment"):
                iface = w["attachment"]["interface"]
                self.endpoints[iface] = Endpoint(iface, iface, v4, v6, iface, w["id"])
            elif w.get("labels", {}).get("role") == "file-server":
                self.endpoints["fs"] = Endpoint("fs", "srv", v4, v6, None, w["id"])
        self.endpoints["edr"] = Endpoint("edr", "srv", *EDR)
        self.endpoints["decoy"] = Endpoint("decoy", "srv", *DECOY)
        # The hypervisor's own uplink address (informational probe only, see phase_quarantine).
        self.endpoints["hv"] = Endpoint("hv", "hv", UPLINK4.split("/")[0], UPLINK6.split("/")[0])
        self.ports = [e for e in self.endpoints.values() if e.iface]
        self.nflog = None

    def ns(self, role):
        return self.namespaces[role]

    # -- building
    def add_ns(self, role):
        name = "%s%d-%s" % (NS_PREFIX, self.pid, role)
        run(["ip", "netns", "add", name])
        self.namespaces[role] = name
        # Quiet, deterministic IPv6: no DAD, no router solicitations; no reverse-path filter.
        run(["ip", "netns", "exec", name, "sysctl", "-qw",
             "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
             "net.ipv6.conf.default.router_solicitations=0",
             "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"])
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def batch(self, role, lines):
        run(["ip", "-n", self.ns(role), "-batch", "-"], input="\n".join(lines) + "\n")

    def build(self):
        hv = self.add_ns("hv")
        run(["ip", "netns", "exec", hv, "sysctl", "-qw", "net.ipv4.ip_forward=1",
             "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.forwarding=1"])
        hv_lines = ["addr add %s/32 dev lo" % HV_GATEWAY4]
        for port in self.ports:
            ns = self.add_ns(port.ns_role)
            # Routed per-port model (like Calico): /32 + /128 on the workload, host routes
            # on the hypervisor, default routes onlink via the hypervisor's gateway.
            hv_lines += [
                "link add %s type veth peer name eth0 netns %s" % (port.iface, ns),
                "link set %s up" % port.iface,
                "addr add %s/64 dev %s nodad" % (HV_GATEWAY6, port.iface),
                "route add %s/32 dev %s" % (port.v4, port.iface),
                "route add %s/128 dev %s" % (port.v6, port.iface),
            ]
        srv = self.add_ns("srv")
        hv_lines += [
            "link add uplink type veth peer name eth0 netns %s" % srv,
            "link set uplink up",
            "addr add %s dev uplink" % UPLINK4,
            "addr add %s dev uplink nodad" % UPLINK6,
        ]
        self.batch("hv", hv_lines)
        for port in self.ports:
            self.batch(port.ns_role, [
                "link set eth0 up",
                "addr add %s/32 dev eth0" % port.v4,
                "addr add %s/128 dev eth0 nodad" % port.v6,
                "route add default via %s dev eth0 onlink" % HV_GATEWAY4,
                "route add default via %s dev eth0" % HV_GATEWAY6,
            ])
        self.batch("srv", [
            "link set eth0 up",
            "addr add %s dev eth0" % SRV4,
            "addr add %s dev eth0 nodad" % SRV6,
            "addr add %s/32 dev eth0" % EDR[0],
            "addr add %s/128 dev eth0 nodad" % EDR[1],
            "addr add %s/32 dev eth0" % DECOY[0],
            "addr add %s/128 dev eth0 nodad" % DECOY[1],
            "route add default via %s" % UPLINK4.split("/")[0],
            "route add default via %s" % UPLINK6.split("/")[0],
        ])

    # -- processes
    def spawn(self, role, argv, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(role)] + argv,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, bufsize=1,
                             start_new_session=True, **kw)
        with self.lock:
            self.procs.append(p)
        return p

    def start_servers(self):
        agent = str(HERE / "lab_agent.py")
        servers = []
        for role in sorted(set(e.ns_role for e in self.endpoints.values())):
            servers.append((role, self.spawn(role, [sys.executable, agent, "serve",
                                                     "--tcp", ",".join(map(str, TCP_PORTS)),
                                                     "--udp", ",".join(map(str, UDP_PORTS))])))
        for role, p in servers:
            line = read_line(p, 10)
            if line != "ready":
                raise HarnessError("echo server in %s did not start: %r %s" % (
                    role, line, p.stderr.read() if p.poll() is not None else ""))

    def stop_process(self, p):
        if p.poll() is None:
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    p.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass

    def destroy(self):
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            self.stop_process(p)
        for name in list(self.namespaces.values()):
            delete_netns(name)
        self.namespaces.clear()
        left = [n for n in list_netns() if n.startswith("%s%d-" % (NS_PREFIX, self.pid))]
        for name in left:  # e.g. one whose add raced with an interrupt
            delete_netns(name)

    # -- nftables in hv
    def nft(self, script=None, args=None, check=True):
        cmd = ["ip", "netns", "exec", self.ns("hv"), "nft"] + (args or ["-f", "-"])
        return run(cmd, input=script, check=check)

    def nft_json(self, table):
        p = self.nft(args=["-j", "list", "table", "inet", table], check=False)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout)


def read_line(p, timeout):
    """One stdout line of a child, bounded in time."""
    box = []
    t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return box[0].strip() if box else None


# --------------------------------------------------------------------------- NFLOG

class NflogCollector:
    def __init__(self, lab):
        self.records = []
        self.lock = threading.Lock()
        self.errors = []
        self.proc = lab.spawn("hv", [sys.executable, str(HERE / "nflog_reader.py"),
                                     str(DROP_GROUP), str(ALLOW_GROUP)])
        first = read_line(self.proc, 10)
        try:
            msg = json.loads(first or "{}")
        except ValueError:
            msg = {}
        if not msg.get("ready"):
            raise HarnessError("NFLOG reader did not start in hv: %r" % first)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if rec.get("overrun"):
                    self.errors.append("NFLOG socket overrun (records lost)")
                else:
                    self.records.append(rec)

    def mark(self):
        with self.lock:
            return len(self.records)

    def since(self, mark):
        with self.lock:
            return list(self.records[mark:])


# --------------------------------------------------------------------------- bulkheadctl

class Ctl:
    def __init__(self, binary):
        self.binary = binary

    def compile(self, spec, fmt="nft"):
        cmd = [self.binary, "policy", "compile", "--policy", spec.policy, "--inventory",
               spec.inventory, "--enforcer", "hv", "--format", fmt]
        for q in spec.quarantine:
            cmd += ["--quarantine", q]
        out = run(cmd).stdout
        return json.loads(out) if fmt == "json" else out

    def diff(self, old, new):
        cmd = [self.binary, "policy", "diff", old.policy, new.policy, "--inventory", old.inventory,
               "--new-inventory", new.inventory, "--enforcer", "hv", "--format", "nft"]
        for q in old.quarantine:
            cmd += ["--old-quarantine", q]
        for q in new.quarantine:
            cmd += ["--new-quarantine", q]
        return run(cmd).stdout

    def classes(self, spec):
        doc = self.compile(spec, "json")
        return {p["interface"]: p["class"] for p in doc["ports"]}


@dataclass
class Spec:
    """One compile input: policy file, inventory file, quarantined workloads."""
    label: str
    policy: str
    inventory: str
    quarantine: Tuple[str, ...] = ()


# --------------------------------------------------------------------------- the matrix

@dataclass
class Row:
    src: str
    dst: str
    proto: str            # tcp | udp | icmp
    port: Optional[int]
    allowed: bool         # in enforce mode
    enf: List[Tuple[str, str, str]]   # (dir, reason, endpoint whose class) expected NFLOG
    mon: Optional[List[Tuple[str, str, str]]] = None  # monitor mode; None: same as enf
    note: str = ""

    def label(self):
        port = "/%d" % self.port if self.port else ""
        return "%s -> %s %s%s" % (self.src, self.dst, self.proto, port)


def O(reason, who):
    return ("out", reason, who)


def I(reason, who):
    return ("in", reason, who)


def lab_matrix():
    """The reachability matrix of lab-policy.json; every row runs in v4 and v6."""
    return [
        # VDI <-> VDI, both ends on hv: explicit deny "no-vdi-to-vdi" (in monitor mode the
        # would-drop returns and the destination's in-chain logs its own would-drop too).
        Row("vdi1", "vdi2", "tcp", 3389, False, [O("deny", "vdi1")], [O("deny", "vdi1"), I("deny", "vdi2")]),
        Row("vdi1", "vdi3", "icmp", None, False, [O("deny", "vdi1")], [O("deny", "vdi1"), I("deny", "vdi3")]),
        Row("vdi3", "vdi4", "udp", 3389, False, [O("deny", "vdi3")], [O("deny", "vdi3"), I("deny", "vdi4")]),
        Row("vdi4", "vdi1", "tcp", 445, False, [O("deny", "vdi4")], [O("deny", "vdi4"), I("deny", "vdi1")]),
        Row("vdi2", "vdi3", "tcp", 22, False, [O("deny", "vdi2")], [O("deny", "vdi2"), I("deny", "vdi3")]),
        # VDI -> file server / EDR / decoy across the uplink.
        Row("vdi1", "fs", "tcp", 445, True, [O("allow", "vdi1")]),
        Row("vdi2", "fs", "icmp", None, True, [O("allow", "vdi2")]),
        Row("vdi3", "fs", "tcp", 9418, True, [O("allow", "vdi3")], note="dev pool only"),
        Row("vdi1", "fs", "tcp", 9418, False, [O("default", "vdi1")], note="git: not for sales"),
        Row("vdi2", "fs", "tcp", 22, False, [O("default", "vdi2")]),
        Row("vdi2", "fs", "tcp", 139, False, [O("deny", "vdi2")], note="explicit no-netbios"),
        Row("vdi4", "fs", "udp", 137, False, [O("deny", "vdi4")], note="explicit no-netbios"),
        Row("vdi4", "edr", "tcp", 443, True, [O("allow", "vdi4")]),
        Row("vdi1", "edr", "tcp", 445, False, [O("default", "vdi1")]),
        Row("vdi2", "decoy", "tcp", 445, False, [O("decoy", "vdi2")]),
        Row("vdi3", "decoy", "icmp", None, False, [O("decoy", "vdi3")]),
        # Admin terminal (a port on hv) -> VDIs.
        Row("adm1", "vdi1", "tcp", 3389, True, [O("allow", "adm1"), I("allow", "vdi1")]),
        Row("adm1", "vdi3", "udp", 3389, True, [O("allow", "adm1"), I("allow", "vdi3")]),
        Row("adm1", "vdi4", "icmp", None, True, [O("allow", "adm1"), I("allow", "vdi4")]),
        Row("adm1", "vdi2", "tcp", 22, False, [O("default", "adm1")], [O("default", "adm1"), I("default", "vdi2")]),
        Row("adm1", "fs", "tcp", 445, False, [O("default", "adm1")]),
        # Towards the admin terminal, and inbound from the uplink.
        Row("vdi1", "adm1", "tcp", 3389, False, [O("default", "vdi1")], [O("default", "vdi1"), I("default", "adm1")]),
        Row("fs", "vdi2", "tcp", 3389, False, [I("deny", "vdi2")], note="explicit no-servers-to-vdi"),
        Row("fs", "vdi3", "icmp", None, False, [I("deny", "vdi3")], note="explicit no-servers-to-vdi"),
        Row("fs", "adm1", "udp", 5000, False, [I("default", "adm1")]),
    ]


PROTO_NUMBER = {("tcp", 4): 6, ("tcp", 6): 6, ("udp", 4): 17, ("udp", 6): 17,
                ("icmp", 4): 1, ("icmp", 6): 58}
ECHO_REQUEST = {4: 8, 6: 128}


def norm_addr(a):
    try:
        return str(ipaddress.ip_address(a))
    except (ValueError, TypeError):
        return a


class Prober:
    def __init__(self, lab):
        self.lab = lab
        self.agent = str(HERE / "lab_agent.py")

    def attempt(self, row, family):
        """Real traffic for one row; True when the echo came back."""
        src, dst = self.lab.endpoints[row.src], self.lab.endpoints[row.dst]
        ns = self.lab.ns(src.ns_role)
        if row.proto == "icmp":
            for _ in range(PING_ATTEMPTS):
                p = run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c1", "-W1",
                         "-%d" % family, "-I", src.addr(family), dst.addr(family)],
                        check=False, timeout=10)
                if p.returncode == 0:
                    return True, "echo reply"
            return False, "no echo reply"
        p = run(["ip", "netns", "exec", ns, sys.executable, self.agent, "probe", row.proto,
                 dst.addr(family), str(row.port), "--timeout", str(PROBE_TIMEOUT),
                 "--bind", src.addr(family)], check=False, timeout=15)
        try:
            res = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return False, "probe output %r %r" % (p.stdout, p.stderr)
        return bool(res.get("ok")), res.get("error", "echo")

    def key(self, row, family):
        src, dst = self.lab.endpoints[row.src], self.lab.endpoints[row.dst]
        return (family, norm_addr(src.addr(family)), norm_addr(dst.addr(family)),
                PROTO_NUMBER[(row.proto, family)],
                ECHO_REQUEST[family] if row.proto == "icmp" else row.port)


def record_key(rec):
    if rec.get("family") not in (4, 6):
        return None
    l4 = rec.get("icmp_type") if rec.get("proto") in (1, 58) else rec.get("dport")
    return (rec["family"], norm_addr(rec.get("src")), norm_addr(rec.get("dst")), rec.get("proto"), l4)


def run_matrix(lab, collector, rows, family, mode, classes, title, verbose=False):
    """Runs `rows` in parallel; mode 'enf' | 'mon' | None (no ruleset: all open, no logs)."""
    prober = Prober(lab)
    start = time.monotonic()
    mark = collector.mark()
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        outcomes = list(pool.map(lambda r: prober.attempt(r, family), rows))

    def expected_prefixes(row):
        if mode is None:
            return set()
        tags = row.enf if mode == "enf" or row.mon is None else row.mon
        out = set()
        for direction, reason, who in tags:
            if who is None:  # the quarantine chains: subject "q", enforced in every mode
                subject, tag_mode = "q", "enf"
            else:
                subject, tag_mode = classes.get(lab.endpoints[who].iface), mode
            if subject is None:
                raise HarnessError("no class for %s in the compiled ruleset" % who)
            group = ALLOW_GROUP if reason == "allow" else DROP_GROUP
            out.add((group, "bh:%s:%s:%s:%s" % (tag_mode, direction, reason, subject)))
        return out

    expected = {prober.key(r, family): expected_prefixes(r) for r in rows}
    # Poll (bounded) until every expected record arrived, then a short settle for extras.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        seen = {}
        for rec in collector.since(mark):
            seen.setdefault(record_key(rec), set()).add((rec.get("group"), rec.get("prefix")))
        if all(exp <= seen.get(k, set()) for k, exp in expected.items()):
            break
        time.sleep(0.05)
    time.sleep(0.3)
    by_key = {}
    for rec in collector.since(mark):
        by_key.setdefault(record_key(rec), []).append(rec)

    passed = 0
    failures = []
    for row, (ok, how) in zip(rows, outcomes):
        if mode is None:
            want_open = True
        elif mode == "mon":  # monitor: only the (always enforced) quarantine blocks
            want_open = row.allowed or not any(w is None for _, _, w in row.enf)
        else:
            want_open = row.allowed
        key = prober.key(row, family)
        recs = by_key.get(key, [])
        got = {(r.get("group"), r.get("prefix")) for r in recs}
        want = expected[key]
        problems = []
        if ok != want_open:
            problems.append("expected %s, %s (%s)" % ("to connect" if want_open else "to fail",
                                                      "connected" if ok else "failed", how))
        if got != want:
            missing = sorted(p for g, p in want - got)
            extra = sorted("%s (group %s)" % (p, g) for g, p in got - want)
            if missing:
                problems.append("NFLOG missing %s" % ", ".join(missing))
            if extra:
                problems.append("NFLOG unexpected %s" % ", ".join(extra))
        for r in recs:  # the record must name the right interfaces too
            if r.get("prefix", "").split(":")[2:3] == ["out"] and \
                    lab.endpoints[row.src].iface not in (None, r.get("indev")):
                problems.append("%s logged with indev %s" % (r.get("prefix"), r.get("indev")))
            if r.get("prefix", "").split(":")[2:3] == ["in"] and \
                    lab.endpoints[row.dst].iface not in (None, r.get("outdev")):
                problems.append("%s logged with outdev %s" % (r.get("prefix"), r.get("outdev")))
        detail = "%s [%s] %s" % (title, "v%d" % family, row.label())
        PAIRS[0] += 1
        check(detail, not problems, "; ".join(problems), quiet=True)
        if problems:
            failures.append("    FAIL %-26s %s" % (row.label(), "; ".join(problems)))
        else:
            passed += 1
            if verbose:
                log("    ok   %-26s %-8s %s" % (row.label(), "open" if ok else "blocked",
                                                 ", ".join(sorted(p for g, p in got)) or "-"))
    log("  %s, IPv%d: %d pairs, %d passed, %d failed (%.1f s)" % (
        title, family, len(rows), passed, len(rows) - passed, time.monotonic() - start))
    for f in failures:
        log(f)
    return not failures


# --------------------------------------------------------------------------- nft state

def strip_volatile(obj):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "handle":
                continue
            if k == "counter" and isinstance(v, dict) and "packets" in v:
                out[k] = dict(v, packets=0, bytes=0)
                continue
            out[k] = strip_volatile(v)
        return out
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def normalize_table(doc):
    """`nft -j list table` without handles, counter values and object order; rule order
    within a chain is kept (it is semantics)."""
    if doc is None:
        return None
    objects, rules = {}, {}
    for item in doc.get("nftables", []):
        kind, value = next(iter(item.items()))
        if kind == "metainfo":
            continue
        value = strip_volatile(value)
        if kind == "rule":
            rules.setdefault(value["chain"], []).append(value)
            continue
        if kind in ("set", "map") and "elem" in value:
            value["elem"] = sorted(value["elem"], key=lambda e: json.dumps(e, sort_keys=True))
        objects["%s %s" % (kind, value.get("name", ""))] = value
    for chain, lst in rules.items():
        objects["rules %s" % chain] = lst
    return objects


def describe_difference(a, b, limit=6):
    if a is None or b is None:
        return "table missing on one side"
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            lines.append("%s:\n  via diff: %s\n  direct:   %s" % (
                key, json.dumps(a.get(key), sort_keys=True)[:400],
                json.dumps(b.get(key), sort_keys=True)[:400]))
            if len(lines) >= limit:
                lines.append("...")
                break
    return "\n".join(lines)


FOREIGN_TABLE = """table inet foreign {
	counter foreign_hits {
	}
	set watched {
		type ipv4_addr
		elements = { 192.0.2.1 }
	}
	chain out {
		type filter hook output priority 100; policy accept;
		meta mark 0x0000beef counter name "foreign_hits" accept
		ip daddr @watched counter drop
	}
}
"""


# --------------------------------------------------------------------------- the test

class Test:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bhit-%d-" % os.getpid()))
        self.ctl = Ctl(args.bulkheadctl)
        self.policy = json.loads((HERE / "lab-policy.json").read_text())
        self.inventory = json.loads((HERE / "lab-inventory.json").read_text())
        self.lab = Lab(self.inventory)
        self.collector = None
        self.foreign = None
        self.deadline = time.monotonic() + args.time_limit

    # -- files
    def write(self, name, doc):
        path = self.tmp / name
        path.write_text(json.dumps(doc, indent=1))
        return str(path)

    def specs(self):
        enforce = str(HERE / "lab-policy.json")
        inventory = str(HERE / "lab-inventory.json")
        monitor_doc = copy.deepcopy(self.policy)
        monitor_doc["defaults"]["mode"] = "monitor"
        monitor = self.write("lab-policy-monitor.json", monitor_doc)
        # A rule change whose new elements overlap old ones: tcp 3388-3390 swallows the
        # existing "admin . tcp . 3389" element (delete + add of overlapping intervals).
        ssh_doc = copy.deepcopy(self.policy)
        ssh_doc["services"].append({"name": "rdp-range",
                                    "entries": [{"protocol": "tcp", "ports": ["3388-3390"]}]})
        for rule in ssh_doc["rules"]:
            if rule["name"] == "admins-to-vdi":
                rule["services"] += ["ssh", "rdp-range"]
        ssh = self.write("lab-policy-admin-ssh.json", ssh_doc)
        plus_doc = copy.deepcopy(self.inventory)
        plus_doc["workloads"].append(EXTRA_VDI)
        plus = self.write("lab-inventory-vdi5.json", plus_doc)
        merged_doc = copy.deepcopy(self.inventory)
        for w in merged_doc["workloads"]:
            if w.get("labels", {}).get("pool") == "dev":
                w["labels"]["pool"] = "sales"
        merged = self.write("lab-inventory-no-dev.json", merged_doc)
        # A second hypervisor with 8 more VDIs (not in the lab: peers only). The vdi segment
        # then has more addresses than the compiler's shared-segment threshold (16), so hv's
        # classes look VDIs up in one host-wide set instead of crossing them into their own.
        fleet_doc = copy.deepcopy(self.inventory)
        fleet_doc["enforcers"].append({"id": "hv2", "description": "a hypervisor outside the lab"})
        for i in range(1, 9):
            fleet_doc["workloads"].append({
                "id": "vdi-1%02d" % i, "enforcer": "hv2",
                "addresses": ["10.1.1.%d" % i, "fd00:0:0:11::%x" % i],
                "labels": {"role": "vdi", "pool": "dev" if i % 2 == 0 else "sales"},
                "attachment": {"mode": "port", "interface": "vdi1%02d" % i}})
        fleet = self.write("lab-inventory-fleet.json", fleet_doc)
        fleet_doc["workloads"].append(EXTRA_VDI)
        fleet5 = self.write("lab-inventory-fleet-vdi5.json", fleet_doc)
        return {
            "enforce": Spec("enforce", enforce, inventory),
            "monitor": Spec("monitor", monitor, inventory),
            "admin-ssh": Spec("rule admins-to-vdi += ssh, tcp 3388-3390", ssh, inventory),
            "plus-vdi5": Spec("inventory + vdi-5", enforce, plus),
            "no-dev": Spec("dev pool merged into sales (class removed)", enforce, merged),
            "fleet": Spec("fleet of 2 hypervisors", enforce, fleet),
            "fleet-plus-vdi5": Spec("fleet + vdi-5", enforce, fleet5),
            "q-vdi2": Spec("vdi-2 quarantined", enforce, inventory, ("vdi-2",)),
            "monitor-q-vdi2": Spec("monitor, vdi-2 quarantined", monitor, inventory, ("vdi-2",)),
        }

    # -- guards
    def tick(self):
        if time.monotonic() > self.deadline:
            raise HarnessError("time limit of %ss exceeded" % self.args.time_limit)

    def check_foreign(self, after):
        now = self.lab.nft_json("foreign")
        strip = lambda d: [i for i in (d or {}).get("nftables", []) if "metainfo" not in i]
        ok = now is not None and strip(now) == strip(self.foreign)
        check("foreign table untouched after %s" % after, ok, json.dumps(strip(now))[:600], quiet=True)
        return ok

    def load(self, spec, why=None):
        self.tick()
        script = self.ctl.compile(spec)
        p = self.lab.nft(script, check=False)
        if p.returncode != 0:
            path = Path(tempfile.gettempdir()) / ("bulkhead-rejected-%d-%s.nft" % (
                os.getpid(), re.sub(r"\W+", "_", spec.label)))
            path.write_text(script)  # kept for the bug report
            raise Rejected("nft -f rejected the compiled ruleset for %s:\n%s\n--- script (%s) ---\n%s"
                           % (spec.label, p.stderr.strip(), path, script[:4000]))
        self.check_foreign(why or "loading %s" % spec.label)

    def apply_diff(self, old, new):
        self.tick()
        script = self.ctl.diff(old, new)
        p = self.lab.nft(script, check=False)
        ok = check("nft -f accepts diff %s -> %s" % (old.label, new.label), p.returncode == 0,
                                "%s\n--- script ---\n%s" % (p.stderr.strip(), script[:3000]))
        self.check_foreign("diff %s -> %s" % (old.label, new.label))
        return ok, script

    # -- phases
    def setup(self):
        log("building lab (namespaces %s%d-*)" % (NS_PREFIX, os.getpid()))
        self.lab.build()
        self.lab.start_servers()
        self.collector = NflogCollector(self.lab)
        self.lab.nft(FOREIGN_TABLE)
        self.foreign = self.lab.nft_json("foreign")

    def phase_baseline(self, matrix):
        log("baseline: no ruleset loaded, every pair must connect and nothing is logged")
        for family in (4, 6):
            run_matrix(self.lab, self.collector, matrix, family, None, {},
                       "baseline", self.args.verbose)

    def phase_matrix(self, spec, mode, matrix):
        self.load(spec)
        classes = self.ctl.classes(spec)
        shared = sorted(set(re.findall(r"^\tset (seg_\S+) \{", self.ctl.compile(spec), re.M)))
        log("%s: ruleset loaded (classes: %s%s)" % (spec.label, ", ".join(
            "%s=%s" % (i, c) for i, c in sorted(classes.items())),
            "; shared segment sets: " + ", ".join(shared) if shared else ""))
        for family in (4, 6):
            self.tick()
            run_matrix(self.lab, self.collector, matrix, family, mode, classes,
                       spec.label, self.args.verbose)

    def compare_state(self, name, old, new):
        """load(old); apply diff(old, new) == load(new); and back."""
        self.load(old)
        ok, script = self.apply_diff(old, new)
        via_diff = normalize_table(self.lab.nft_json("bulkhead"))
        kind = "full replace" if "delete table" in script else "incremental"
        self.load(new)
        direct = normalize_table(self.lab.nft_json("bulkhead"))
        check("diff %s -> %s (%s, %d lines) == direct load" % (
                               old.label, new.label, kind, script.count("\n")),
                           ok and via_diff == direct,
                           describe_difference(via_diff, direct))
        ok, script = self.apply_diff(new, old)
        via_diff = normalize_table(self.lab.nft_json("bulkhead"))
        self.load(old)
        direct = normalize_table(self.lab.nft_json("bulkhead"))
        check("diff %s -> %s (reverse, %d lines) == direct load" % (
                               new.label, old.label, script.count("\n")),
                           ok and via_diff == direct,
                           describe_difference(via_diff, direct))

    def phase_diffs(self, s):
        log("diff path: nft -f of `policy diff --format nft` must equal loading NEW directly")
        for key in ("plus-vdi5", "admin-ssh", "q-vdi2", "no-dev", "fleet", "monitor"):
            self.compare_state(key, s["enforce"], s[key])
        self.compare_state("monitor-q", s["monitor"], s["monitor-q-vdi2"])
        # Shared segment sets merge neighbouring hosts into ranges: adding vdi-5 replaces
        # the element 10.1.0.1-10.1.0.4 by 10.1.0.1-10.1.0.5 in one transaction.
        self.compare_state("fleet-plus-vdi5", s["fleet"], s["fleet-plus-vdi5"])

    def phase_added_vdi(self, s, old_key, new_key):
        log("adding a VDI with a diff (%s -> %s): vdi5 goes from unknown port to managed VDI"
            % (s[old_key].label, s[new_key].label))
        self.load(s[old_key])
        before = [
            Row("vdi5", "fs", "tcp", 445, True, []),
            Row("vdi5", "vdi1", "tcp", 3389, False, [I("default", "vdi1")]),
            Row("adm1", "vdi5", "tcp", 3389, False, [O("default", "adm1")]),
        ]
        run_matrix(self.lab, self.collector, before, 4, "enf", self.ctl.classes(s[old_key]),
                   "vdi5 unknown", self.args.verbose)
        self.apply_diff(s[old_key], s[new_key])
        after = [
            Row("vdi5", "fs", "tcp", 445, True, [O("allow", "vdi5")]),
            Row("vdi5", "vdi1", "tcp", 3389, False, [O("deny", "vdi5")]),
            Row("vdi1", "vdi5", "udp", 3389, False, [O("deny", "vdi1")]),
            Row("adm1", "vdi5", "tcp", 3389, True, [O("allow", "adm1"), I("allow", "vdi5")]),
            Row("vdi5", "decoy", "icmp", None, False, [O("decoy", "vdi5")]),
        ]
        classes = self.ctl.classes(s[new_key])
        for family in (4, 6):
            run_matrix(self.lab, self.collector, after, family, "enf", classes,
                       "vdi5 added by diff", self.args.verbose)

    def phase_quarantine(self, s):
        log("live quarantine of vdi2 (diff --new-quarantine) with an open TCP connection to fs:445")
        lab = self.lab
        self.load(s["enforce"])
        classes = self.ctl.classes(s["enforce"])
        for family in (4, 6):
            fs = lab.endpoints["fs"].addr(family)
            vdi2 = lab.endpoints["vdi2"].addr(family)
            holder = lab.spawn("vdi2", [sys.executable, str(HERE / "lab_agent.py"), "hold", fs,
                                        "445", "--bind", vdi2])
            try:
                line = read_line(holder, 10) or ""
                if not check("v%d: vdi2 opens a TCP connection to fs:445" % family, line.startswith("connected"), line):
                    continue

                def send(token, wait):
                    holder.stdin.write("send %s %s\n" % (token, wait))
                    holder.stdin.flush()
                    return (read_line(holder, wait + 5) or "").split()[:2] == ["echo", token]

                check("v%d: data passes on it before the quarantine" % family, send("before", 2))
                mark = self.collector.mark()
                self.apply_diff(s["enforce"], s["q-vdi2"])
                # Blocked, and the drop itself seen: the NFLOG record of the quarantine rule.
                passed = send("during", 1.5)
                deadline = time.monotonic() + 3
                logged = False
                while time.monotonic() < deadline and not logged:
                    logged = any(r.get("prefix") == "bh:enf:out:quarantine:q" and r.get("indev") == "vdi2"
                                 and norm_addr(r.get("dst")) == norm_addr(fs) for r in self.collector.since(mark))
                    time.sleep(0.05)
                check("v%d: the open connection stops passing data once quarantined, its dropped segments logged "
                      "as bh:enf:out:quarantine:q" % family, not passed and logged,
                      "data passed" if passed else "no NFLOG record of the quarantine rule")
                rows = [
                    Row("vdi2", "fs", "tcp", 445, False, [("out", "quarantine", None)]),
                    Row("vdi2", "fs", "icmp", None, False, [("out", "quarantine", None)]),
                    Row("vdi2", "edr", "tcp", 443, True, [], note="quarantine allow-list"),
                    Row("adm1", "vdi2", "tcp", 3389, True, [], note="quarantine allow_from"),
                    Row("adm1", "vdi2", "icmp", None, False, [("in", "quarantine", None)]),
                    Row("fs", "vdi2", "udp", 5000, False, [("in", "quarantine", None)]),
                    Row("vdi1", "fs", "tcp", 445, True, [O("allow", "vdi1")], note="others unaffected"),
                ]
                run_matrix(lab, self.collector, rows, family, "enf", classes,
                           "vdi2 quarantined", self.args.verbose)
                # The hypervisor's own stack is a peer too (input hook): a quarantined VDI
                # must not reach hv's sockets, and the attempt is logged as quarantine.
                mark = self.collector.mark()
                reach, how = Prober(lab).attempt(Row("vdi2", "hv", "tcp", 22, False, []), family)
                deadline = time.time() + 3
                logged = False
                while time.time() < deadline and not logged:
                    logged = any(r.get("prefix") == "bh:enf:out:quarantine:q" and r.get("indev") == "vdi2"
                                 and norm_addr(r.get("dst")) == norm_addr(lab.endpoints["hv"].addr(family))
                                 for r in self.collector.since(mark))
                    time.sleep(0.05)
                check("v%d: quarantined vdi2 cannot reach hv's own address %s tcp/22, the attempt logged as "
                      "bh:enf:out:quarantine:q" % (family, lab.endpoints["hv"].addr(family)), not reach and logged,
                      "reached (%s)" % how if reach else "no NFLOG record of the quarantine rule")
                self.apply_diff(s["q-vdi2"], s["enforce"])
                released = [
                    Row("vdi2", "fs", "tcp", 445, True, [O("allow", "vdi2")]),
                    Row("vdi2", "vdi1", "tcp", 3389, False, [O("deny", "vdi2")]),
                ]
                run_matrix(lab, self.collector, released, family, "enf", classes,
                           "vdi2 released", self.args.verbose)
                # Informational: whether TCP retransmission revives the held connection.
                log("  (info) v%d: held connection after release: %s" % (
                    family, "passes data again" if send("after", 4) else "still silent"))
            finally:
                lab.stop_process(holder)
        log("quarantine is enforced even when the policy only monitors")
        self.load(s["monitor-q-vdi2"])
        mclasses = self.ctl.classes(s["monitor-q-vdi2"])
        rows = [
            Row("vdi2", "fs", "tcp", 445, False, [("out", "quarantine", None)]),
            Row("vdi2", "edr", "tcp", 443, True, []),
            Row("vdi1", "vdi3", "tcp", 3389, False, [O("deny", "vdi1")], [O("deny", "vdi1"), I("deny", "vdi3")],
                note="monitor: would-drop only"),
        ]
        for family in (4, 6):
            run_matrix(lab, self.collector, rows, family, "mon", mclasses,
                       "monitor + vdi2 quarantined", self.args.verbose)

    def run(self):
        s = self.specs()
        self.setup()
        matrix = lab_matrix()
        if self.args.inject_failure == "expectation":
            matrix[0].allowed = True  # deliberately wrong: vdi1 -> vdi2 is denied
            log("(--inject-failure expectation: vdi1 -> vdi2 now expected to connect)")
        self.phase_baseline(matrix)
        if self.args.inject_failure == "crash":
            raise HarnessError("--inject-failure crash: deliberate harness error after lab setup")
        if self.args.inject_failure == "hang":
            log("(--inject-failure hang: sleeping; send SIGTERM/SIGINT to test cleanup)")
            time.sleep(3600)
        self.phase_matrix(s["enforce"], "enf", matrix)
        self.phase_matrix(s["monitor"], "mon", matrix)
        self.phase_matrix(s["fleet"], "enf", matrix)
        self.phase_diffs(s)
        self.phase_added_vdi(s, "enforce", "plus-vdi5")
        self.phase_added_vdi(s, "fleet", "fleet-plus-vdi5")
        self.phase_quarantine(s)
        if self.collector.errors:
            check("NFLOG reader", False, "; ".join(self.collector.errors))
        check("foreign table still present at the end", self.lab.nft_json("foreign") is not None)

    def cleanup(self):
        self.lab.destroy()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- probes

def probe_features(args):
    """Raises SkipTest naming what is missing."""
    if sys.platform != "linux":
        raise SkipTest("not Linux")
    if os.geteuid() != 0:
        raise SkipTest("needs root (network namespaces, nftables)")
    for tool in ("ip", "nft", "ping"):
        if shutil.which(tool) is None:
            raise SkipTest("`%s` not found in PATH" % tool)
    name = "%s%d-probe" % (NS_PREFIX, os.getpid())
    p = run(["ip", "netns", "add", name], check=False)
    if p.returncode != 0:
        raise SkipTest("cannot create a network namespace: %s" % p.stderr.strip())
    try:
        p = run(["ip", "-n", name, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"],
                check=False)
        if p.returncode != 0:
            raise SkipTest("no veth support: %s" % p.stderr.strip())
        p = run(["ip", "netns", "exec", name, "nft", "-f", "-"], check=False, input=(
            "table inet bhprobe {\n set s { type ipv4_addr . inet_proto . inet_service; flags interval; }\n"
            " chain c { type filter hook forward priority 0; policy accept;\n"
            "  ct state established accept\n"
            "  ip daddr . meta l4proto . th dport @s counter log prefix \"probe\" group 10 drop\n }\n}\n"))
        if p.returncode != 0:
            raise SkipTest("nftables cannot load a table with sets/conntrack/NFLOG: %s" % p.stderr.strip())
        p = run(["ip", "netns", "exec", name, sys.executable, str(HERE / "nflog_reader.py"), "--probe",
                 str(DROP_GROUP)], check=False, timeout=10)
        if p.returncode != 0:
            raise SkipTest("NFLOG (nfnetlink_log) unavailable: %s%s" % (p.stdout.strip(), p.stderr.strip()))
    finally:
        delete_netns(name)


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bulkheadctl", required=True, help="path of the bulkheadctl binary")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every pair")
    ap.add_argument("--time-limit", type=float, default=240, help="abort (and clean up) after S seconds")
    ap.add_argument("--inject-failure", choices=["expectation", "crash", "hang"],
                    default=os.environ.get("BULKHEAD_IT_INJECT_FAILURE") or None,
                    help="fail on purpose (to check cleanup); also env BULKHEAD_IT_INJECT_FAILURE")
    args = ap.parse_args()
    if not os.access(args.bulkheadctl, os.X_OK):
        log("error: bulkheadctl not executable: %s" % args.bulkheadctl)
        return 2

    def on_signal(signum, _frame):
        raise Interrupted("signal %d" % signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    try:
        probe_features(args)
    except SkipTest as e:
        log("SKIP: %s" % e)
        return SKIP
    except Interrupted as e:
        log("interrupted (%s) during the feature probe" % e)
        return 2
    sweep_stale_namespaces()

    test = None
    cleaned = []

    def cleanup():
        if cleaned or test is None:
            return
        cleaned.append(True)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # cleanup must finish
        test.cleanup()
        mine = [n for n in list_netns() if n.startswith("%s%d-" % (NS_PREFIX, os.getpid()))]
        log("cleanup: namespaces removed%s" % ("" if not mine else ", LEFT: %s" % mine))

    atexit.register(cleanup)
    started = time.monotonic()
    code = 0
    try:
        test = Test(args)
        test.run()
    except Interrupted as e:
        log("\nINTERRUPTED (%s): tearing the lab down" % e)
        code = 2
    except Rejected as e:
        log("\nFAIL: %s" % e)
        check("nft accepts the compiled ruleset", False, str(e).split("\n")[0])
        code = 1
    except (HarnessError, OSError, subprocess.SubprocessError) as e:
        log("\nERROR: %s" % e)
        code = 2
    finally:
        cleanup()
    if test is not None:
        log("")
        log("=" * 72)
        log("%d pairs tested (each one check), %.0f s" % (PAIRS[0], time.monotonic() - started))
        if report() and code == 0:
            code = 1
        if code == 0 and PAIRS[0] == 0:
            code = 2
    log("result: %s" % {0: "PASS", 1: "FAIL", 2: "ERROR"}.get(code, code))
    return code


if __name__ == "__main__":
    sys.exit(main())
