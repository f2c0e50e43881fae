#!/usr/bin/env python3
"""Kernel integration test of the bulkhead-enforcer daemon: everything it promises.

Runs the real `bulkhead-enforcer` inside the hypervisor namespace of the lab that
tests/integration/run_reachability.py builds (imported, not copied), feeds it rulesets
compiled by the real `bulkheadctl` through its watched ruleset file, and checks against
the kernel: reachability with real traffic, element-level diffs against an `nft -f`
oracle, live quarantine, coexistence with a foreign table, SIGKILL during a large apply,
last-known-good restore, drift repair, corrupt state, invalid rulesets, and the decoded
drop events (fields, counts, losses) against the nft rule counters. See README.md here.

Exit codes: 0 all checks passed, 1 a check failed, 2 harness error, 77 root / nft /
network namespaces / veth / NFLOG missing (ctest: SKIP). Python 3.9+, stdlib only.
"""

import argparse
import atexit
import concurrent.futures
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.dont_write_bytecode = True  # leave no __pycache__ in tests/integration
import run_reachability as rr  # noqa: E402  (the lab, probes, matrix, nft normalisation)
import harness  # noqa: E402  (tests/lab_harness, on the path through run_reachability)
from harness import check, figure, report, section  # noqa: E402

SKIP = 77
PREFIX = "bhen-"  # namespaces bhen-<pid>-<scenario>-<role>, temp dir bhen-<pid>-*
ENFORCER_ID = "hv"
AGENT = str(HERE / "enf_agent.py")
LAB_AGENT = str(rr.HERE / "lab_agent.py")
log = rr.log
run = rr.run
HarnessError = rr.HarnessError
norm = rr.norm_addr


class Interrupted(Exception):
    pass


# --------------------------------------------------------------------------- results

ERRORS = {}   # scenario -> the harness error that ended it (exit 2)


def scenario_error(text):
    ERRORS[harness.current_section()] = text
    log("  ERROR %s" % text)


# --------------------------------------------------------------------------- events, metrics

class EventLog:
    """The daemon's --events file (JSON lines), read incrementally."""

    def __init__(self, path):
        self.path = Path(path)
        self.pos = 0
        self.partial = b""
        self.events = []

    def refresh(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        self.pos += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            if line.strip():
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    self.events.append({"type": "_unparsable", "line": line[:200].decode("latin-1")})

    def mark(self):
        self.refresh()
        return len(self.events)

    def since(self, mark=0):
        self.refresh()
        return self.events[mark:]

    def wait(self, pred, since=0, timeout=10.0):
        """First event at index >= since satisfying pred, polled until the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            for i in range(since, len(self.events)):
                if pred(self.events[i]):
                    return i, self.events[i]
            if time.monotonic() >= deadline:
                return None, None
            time.sleep(0.02)


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
        except ValueError:
            continue
    return out


# --------------------------------------------------------------------------- the harness

class Harness:
    def __init__(self, args):
        self.args = args
        self.pid = os.getpid()
        harness.known_bugs.update(args.known_bug or [])
        self.tmp = Path(tempfile.mkdtemp(prefix="%s%d-" % (PREFIX, self.pid)))
        self.deadline = time.monotonic() + args.time_limit
        self.labs = []
        self.daemons = []
        self.compiled = {}
        self.oracles = {}
        self.oracle_ns = None
        self.policy = json.loads((rr.HERE / "lab-policy.json").read_text())
        self.inventory = json.loads((rr.HERE / "lab-inventory.json").read_text())
        self.foreign_ops = 0

    def tick(self):
        if time.monotonic() > self.deadline:
            raise HarnessError("time limit of %ss exceeded" % self.args.time_limit)

    # -- files
    def write_json(self, name, doc):
        path = self.tmp / name
        path.write_text(json.dumps(doc, indent=1))
        return str(path)

    def new_dir(self, name):
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- bulkheadctl
    def compile(self, spec, fmt, enforcer=ENFORCER_ID):
        key = (spec.policy, spec.inventory, tuple(spec.quarantine), fmt, enforcer)
        if key not in self.compiled:
            cmd = [self.args.bulkheadctl, "policy", "compile", "--policy", spec.policy,
                   "--inventory", spec.inventory, "--enforcer", enforcer, "--format", fmt]
            for q in spec.quarantine:
                cmd += ["--quarantine", q]
            self.compiled[key] = run(cmd, timeout=60).stdout
        return self.compiled[key]

    def classes(self, spec):
        return {p["interface"]: p["class"] for p in json.loads(self.compile(spec, "json"))["ports"]}

    def ruleset_hash(self, spec):
        return json.loads(self.compile(spec, "json"))["hash"]

    # -- the oracle: `nft -f` of the compiled nft text in a scratch namespace
    def oracle(self, spec):
        key = (spec.policy, spec.inventory, tuple(spec.quarantine))
        if key not in self.oracles:
            if self.oracle_ns is None:
                self.oracle_ns = "%s%d-oracle" % (PREFIX, self.pid)
                run(["ip", "netns", "add", self.oracle_ns])
            p = run(["ip", "netns", "exec", self.oracle_ns, "nft", "-f", "-"],
                    input=self.compile(spec, "nft"), check=False, timeout=60)
            if p.returncode != 0:
                raise HarnessError("oracle: nft -f rejected the compiled ruleset of %s: %s" % (
                    spec.label, p.stderr.strip()[:500]))
            doc = kernel_doc(self.oracle_ns)
            self.oracles[key] = {"doc": doc, "norm": rr.normalize_table(doc), "elements": set_elements(doc)}
        return self.oracles[key]

    # -- cleanup
    def cleanup(self):
        for d in list(self.daemons):
            d.kill()
        for lab in list(self.labs):
            lab.destroy()
        if self.oracle_ns:
            rr.delete_netns(self.oracle_ns)
        mine = "%s%d-" % (PREFIX, self.pid)
        for name in rr.list_netns():
            if name.startswith(mine):
                rr.delete_netns(name)
        shutil.rmtree(self.tmp, ignore_errors=True)


class EnfLab(rr.Lab):
    """run_reachability's lab, with namespaces named bhen-<pid>-<tag>-<role>."""

    def __init__(self, h, tag):
        super().__init__(h.inventory)
        self.h = h
        self.tag = tag
        h.labs.append(self)

    def add_ns(self, role):
        name = "%s%d-%s-%s" % (PREFIX, self.pid, self.tag, role)
        run(["ip", "netns", "add", name])
        self.namespaces[role] = name
        run(["ip", "netns", "exec", name, "sysctl", "-qw",
             "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
             "net.ipv6.conf.default.router_solicitations=0",
             "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"])
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def build_bare(self):
        """Only the hypervisor namespace (scenarios that need no traffic)."""
        self.add_ns("hv")

    def build_full(self):
        self.build()
        self.start_servers()

    def destroy(self):
        super().destroy()
        mine = "%s%d-%s-" % (PREFIX, self.pid, self.tag)
        for name in rr.list_netns():
            if name.startswith(mine):
                rr.delete_netns(name)
        if self in self.h.labs:
            self.h.labs.remove(self)

    def hv(self):
        return self.ns("hv")


class Daemon:
    """One bulkhead-enforcer process in a namespace (ip netns exec execs it: same pid)."""
    seq = 0

    def __init__(self, h, ns, rsdir, statedir, drift=30, repeat_ms=1000, extra=()):
        self.h, self.ns, self.rsdir, self.statedir = h, ns, Path(rsdir), Path(statedir)
        self.drift, self.repeat_ms, self.extra = drift, repeat_ms, list(extra)
        self.proc = None

    def start(self):
        Daemon.seq += 1
        n = Daemon.seq
        self.events = EventLog(self.h.tmp / ("events-%d.jsonl" % n))
        self.metrics_path = self.h.tmp / ("metrics-%d.prom" % n)
        self.stderr_path = self.h.tmp / ("daemon-%d.log" % n)
        cmd = ["ip", "netns", "exec", self.ns, self.h.args.enforcer, "--enforcer-id", ENFORCER_ID,
               "--ruleset", str(self.rsdir), "--state-dir", str(self.statedir),
               "--events", str(self.events.path), "--metrics-file", str(self.metrics_path),
               "--drift-interval", str(self.drift), "--repeat-window-ms", str(self.repeat_ms),
               "--flow-interval", "1"] + self.extra
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=True)
        self.started = time.monotonic()
        self.h.daemons.append(self)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_running(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " running, generation" in self.stderr():
                return True
            if not self.alive():
                return False
            time.sleep(0.02)
        return False

    def stop(self, timeout=5):
        """SIGTERM, wait; returns the exit code (SIGKILL after the timeout: -9)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self in self.h.daemons:
            self.h.daemons.remove(self)
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self in self.h.daemons:
            self.h.daemons.remove(self)

    def metrics(self):
        try:
            return parse_metrics(self.metrics_path.read_text())
        except OSError:
            return {}

    def wait_metric(self, name, pred, timeout=5):
        deadline = time.monotonic() + timeout
        while True:
            value = self.metrics().get(name)
            if value is not None and pred(value):
                return value
            if time.monotonic() >= deadline:
                return value
            time.sleep(0.05)

    def wait_applied(self, since=0, timeout=20):
        """The next outcome of taking a ruleset: applied, failed or rejected."""
        return self.events.wait(lambda e: e.get("type") in ("ruleset_applied", "apply_failed",
                                                             "ruleset_rejected"), since, timeout)

    def tail(self, n=8):
        return "\n".join(self.stderr().splitlines()[-n:])


def put_ruleset(rsdir, text):
    """Atomic replacement, as the controller would: write a temp file, rename it in."""
    rsdir = Path(rsdir)
    tmp = rsdir / ".ruleset.json.tmp"
    tmp.write_text(text)
    os.rename(tmp, rsdir / "ruleset.json")


# --------------------------------------------------------------------------- nft helpers

def nft_raw(ns, *args):
    p = run(["ip", "netns", "exec", ns, "nft"] + list(args), check=False, timeout=60)
    return p.stdout if p.returncode == 0 else None


def kernel_doc(ns, table="bulkhead"):
    text = nft_raw(ns, "-j", "list", "table", "inet", table)
    return json.loads(text) if text is not None else None


def set_elements(doc):
    out = {}
    for item in (doc or {}).get("nftables", []):
        kind, value = next(iter(item.items()))
        if kind in ("set", "map"):
            out[value["name"]] = frozenset(json.dumps(e, sort_keys=True) for e in value.get("elem", []))
    return out


def element_delta(before, after):
    delta = {}
    for name in set(before) | set(after):
        b, a = before.get(name, frozenset()), after.get(name, frozenset())
        if a != b:
            delta[name] = (a - b, b - a)
    return delta


def describe_delta(delta, limit=6):
    parts = []
    for name in sorted(delta)[:limit]:
        added, removed = delta[name]
        parts.append("%s +%d -%d %s" % (name, len(added), len(removed),
                                         (sorted(added) + ["-" + r for r in sorted(removed)])[:2]))
    return "; ".join(parts) + (" ..." if len(delta) > limit else "")


def describe_difference(kernel, oracle, limit=5):
    if kernel is None or oracle is None:
        return "table %s" % ("absent in the kernel" if kernel is None else "absent in the oracle")
    lines = []
    for key in sorted(set(kernel) | set(oracle)):
        if kernel.get(key) != oracle.get(key):
            lines.append("%s:\n  kernel: %s\n  oracle: %s" % (
                key, json.dumps(kernel.get(key), sort_keys=True)[:300],
                json.dumps(oracle.get(key), sort_keys=True)[:300]))
            if len(lines) >= limit:
                lines.append("...")
                break
    return "\n".join(lines)


def table_matches(h, ns, spec):
    """(ok, detail): the kernel's table inet bulkhead equals the oracle of spec."""
    got = rr.normalize_table(kernel_doc(ns))
    want = h.oracle(spec)["norm"]
    return got == want, describe_difference(got, want)


def prefix_counter(ns, chain, prefix):
    """Sum of the counters of the rules of `chain` that log `prefix` (the ground truth of
    how many packets the kernel logged with it)."""
    text = nft_raw(ns, "-j", "list", "chain", "inet", "bulkhead", chain)
    if text is None:
        raise HarnessError("cannot list chain %s" % chain)
    total = 0
    for item in json.loads(text)["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        exprs = rule.get("expr", [])
        if any(e.get("log", {}).get("prefix") == prefix for e in exprs if isinstance(e, dict)):
            for e in exprs:
                if isinstance(e, dict) and "counter" in e:
                    total += e["counter"].get("packets", 0)
    return total


def first_element_text(ns, set_name):
    """One element of a set as nft prints it (for `nft delete element`)."""
    text = nft_raw(ns, "list", "set", "inet", "bulkhead", set_name) or ""
    m = re.search(r"elements = \{(.*?)\}", text, re.S)
    if not m:
        return None
    return m.group(1).split(",")[0].strip()


class ForeignGuard:
    """`table inet foreign` (a base chain, a named counter, a set) in hv: must stay byte
    for byte identical (`nft -j list`, handles included) across everything the daemon does."""

    def __init__(self, h, ns):
        self.h, self.ns = h, ns
        self.install()

    def install(self):
        run(["ip", "netns", "exec", self.ns, "nft", "-f", "-"], input=rr.FOREIGN_TABLE)
        self.snapshot = nft_raw(self.ns, "-j", "list", "table", "inet", "foreign")

    def verify(self, after):
        now = nft_raw(self.ns, "-j", "list", "table", "inet", "foreign")
        self.h.foreign_ops += 1
        ok = now is not None and now == self.snapshot
        check("foreign table byte-identical after %s" % after, ok, (now or "table inet foreign is gone")[:500],
              section=SC4, quiet=True)
        if not ok and harness.current_section() != SC4:
            check("foreign table byte-identical after %s" % after, False)
        return ok


# --------------------------------------------------------------------------- traffic + events

def drop_key(e):
    l4 = e.get("icmp_type") if e.get("proto") in (1, 58) else e.get("dport")
    return (e.get("family"), norm(e.get("src")), norm(e.get("dst")), e.get("proto"), l4)


def check_traffic(h, lab, daemon, rows, family, classes, generation, title, mode="enf"):
    """Real traffic for `rows` (rr.Row); then the daemon's events must show exactly the
    expected drops (prefix, workload, interface, generation) per flow, and the expected
    allowed-flow summaries. Returns (pairs, passed)."""
    prober = rr.Prober(lab)
    mark = daemon.events.mark()
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=rr.WORKERS) as pool:
        outcomes = list(pool.map(lambda r: prober.attempt(r, family), rows))

    exp_drops, exp_allows, row_allow_keys = [], {}, []
    for row in rows:
        src, dst = lab.endpoints[row.src], lab.endpoints[row.dst]
        proto = rr.PROTO_NUMBER[(row.proto, family)]
        l4 = rr.ECHO_REQUEST[family] if row.proto == "icmp" else row.port
        tags = row.enf if mode == "enf" or row.mon is None else row.mon
        drops, allows = {}, set()
        for direction, reason, who in tags:
            if who is None:  # the quarantine chains: subject q, enforced in every mode
                ep = src if direction == "out" else dst
                subject, tag_mode = "q", "enf"
            else:
                ep = lab.endpoints[who]
                subject, tag_mode = classes[ep.iface], mode
            if reason == "allow":
                akey = (family, ep.iface, direction, norm(dst.addr(family)), proto, l4)
                exp_allows[akey] = {"workload": ep.workload, "subject": subject,
                                    "src": norm(src.addr(family)) if direction == "in" else None}
                allows.add(akey)
            else:
                drops["bh:%s:%s:%s:%s" % (tag_mode, direction, reason, subject)] = (ep, direction)
        exp_drops.append((prober.key(row, family), drops))
        row_allow_keys.append(({src.iface, dst.iface} - {None}, norm(dst.addr(family)), proto, l4, allows))

    def collect():
        evs = daemon.events.since(mark)
        by_key, allowed = {}, {}
        for e in evs:
            if e.get("type") in ("drop", "drop_summary"):
                by_key.setdefault(drop_key(e), []).append(e)
            elif e.get("type") == "allowed_flows":
                l4 = e.get("icmp_type") if e.get("proto") in (1, 58) else e.get("dport")
                akey = (e.get("family"), e.get("interface"), e.get("direction"), norm(e.get("dst")),
                        e.get("proto"), l4)
                allowed.setdefault(akey, []).append(e)
        return by_key, allowed

    deadline = time.monotonic() + 6.0
    while True:
        by_key, allowed = collect()
        done = all(set(d) <= {e.get("prefix") for e in by_key.get(k, [])} for k, d in exp_drops) \
            and all(a in allowed for a in exp_allows)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    by_key, allowed = collect()

    passed = 0
    for row, (ok, how), (key, drops), (ifaces, dst, proto, l4, allows) in zip(
            rows, outcomes, exp_drops, row_allow_keys):
        if mode == "mon":
            want_open = row.allowed or not any(w is None for _, _, w in row.enf)
        else:
            want_open = row.allowed
        problems = []
        if ok != want_open:
            problems.append("expected %s, %s (%s)" % ("to connect" if want_open else "to fail",
                                                      "connected" if ok else "failed", how))
        evs = by_key.get(key, [])
        got = {e.get("prefix") for e in evs}
        if got != set(drops):
            problems.append("drop events: missing %s, unexpected %s" % (
                sorted(set(drops) - got), sorted(got - set(drops))))
        for e in evs:
            want = drops.get(e.get("prefix"))
            if want is None:
                continue
            ep, direction = want
            iface_field = "indev" if direction == "out" else "outdev"
            bad = []
            if e.get("workload") != ep.workload:
                bad.append("workload %r != %r" % (e.get("workload"), ep.workload))
            if e.get(iface_field) != ep.iface:
                bad.append("%s %r != %r" % (iface_field, e.get(iface_field), ep.iface))
            if e.get("policy_generation") != generation:
                bad.append("policy_generation %r != %r" % (e.get("policy_generation"), generation))
            mon = e.get("prefix", "").startswith("bh:mon:")
            if e.get("would_drop") != mon or e.get("mode") != ("monitor" if mon else "enforce"):
                bad.append("mode %r would_drop %r" % (e.get("mode"), e.get("would_drop")))
            if e.get("direction") != direction or e.get("hook") != "forward" or e.get("group") != 10:
                bad.append("direction/hook/group %r/%r/%r" % (e.get("direction"), e.get("hook"), e.get("group")))
            if bad:
                problems.append("%s: %s" % (e.get("prefix"), ", ".join(bad)))
        seen_allow = {k for k in allowed if k[0] == family and k[1] in ifaces and k[3] == dst
                      and k[4] == proto and k[5] == l4}
        if seen_allow != allows:
            problems.append("allowed_flows: missing %s, unexpected %s" % (
                sorted(allows - seen_allow), sorted(seen_allow - allows)))
        for akey in allows & seen_allow:
            want = exp_allows[akey]
            for e in allowed[akey]:
                if e.get("workload") != want["workload"] or e.get("subject") != want["subject"] or \
                        (want["src"] and norm(e.get("src")) != want["src"]) or \
                        e.get("policy_generation") != generation:
                    problems.append("allowed_flows %s: %s" % (akey, {k: e.get(k) for k in (
                        "workload", "subject", "src", "policy_generation")}))
        label = "%s [v%d] %s%s" % (title, family, row.label(), " (%s)" % row.note if row.note else "")
        if problems:
            check(label, False, "; ".join(problems))
        else:
            passed += 1
            check(label, True, quiet=not h.args.verbose)
    log("  %s, IPv%d: %d pairs, %d passed, %d failed (%.1f s)" % (
        title, family, len(rows), passed, len(rows) - passed, time.monotonic() - start))
    return len(rows), passed


# --------------------------------------------------------------------------- specs

def make_specs(h):
    enforce = str(rr.HERE / "lab-policy.json")
    inventory = str(rr.HERE / "lab-inventory.json")
    monitor_doc = copy.deepcopy(h.policy)
    monitor_doc["defaults"]["mode"] = "monitor"
    monitor = h.write_json("policy-monitor.json", monitor_doc)
    ssh_doc = copy.deepcopy(h.policy)
    ssh_doc["services"].append({"name": "rdp-range", "entries": [{"protocol": "tcp", "ports": ["3388-3390"]}]})
    for rule in ssh_doc["rules"]:
        if rule["name"] == "admins-to-vdi":
            rule["services"] += ["ssh", "rdp-range"]
    ssh = h.write_json("policy-admin-ssh.json", ssh_doc)
    plus_doc = copy.deepcopy(h.inventory)
    plus_doc["workloads"].append(rr.EXTRA_VDI)
    plus = h.write_json("inventory-plus-vdi5.json", plus_doc)
    minus_doc = copy.deepcopy(plus_doc)
    minus_doc["workloads"] = [w for w in minus_doc["workloads"] if w["id"] != "vdi-4"]
    minus = h.write_json("inventory-plus-vdi5-minus-vdi4.json", minus_doc)
    other_doc = copy.deepcopy(h.inventory)
    other_doc["enforcers"] = [{"id": "hv-other"}]
    for w in other_doc["workloads"]:
        if w.get("enforcer") == "hv":
            w["enforcer"] = "hv-other"
    other = h.write_json("inventory-other-enforcer.json", other_doc)
    S = rr.Spec
    return {
        "enforce": S("lab policy", enforce, inventory),
        "monitor": S("lab policy, monitor mode", monitor, inventory),
        "q-vdi2": S("vdi-2 quarantined", enforce, inventory, ("vdi-2",)),
        "plus-vdi5": S("inventory + vdi-5", enforce, plus),
        "minus-vdi4": S("inventory + vdi-5 - vdi-4", enforce, minus),
        "admin-ssh": S("rule admins-to-vdi += ssh, tcp 3388-3390 (inventory + vdi-5 - vdi-4)", ssh, minus),
        "other-enforcer": S("ruleset of enforcer hv-other", enforce, other),
    }


def big_spec(h, vdis):
    """An inventory with `vdis` more VDIs on hv (non-adjacent addresses, so the segment sets
    cannot merge them into ranges): about 4 elements per VDI."""
    doc = copy.deepcopy(h.inventory)
    for i in range(vdis):
        a, b = divmod(i, 120)
        doc["workloads"].append({
            "id": "bvdi-%d" % i, "enforcer": "hv",
            "addresses": ["10.%d.%d.%d" % (20 + a // 200, a % 200, 2 * b + 2), "fd00:0:1:%x::%x" % (a, 2 * b + 2)],
            "labels": {"role": "vdi", "pool": "sales" if i % 2 else "dev"},
            "attachment": {"mode": "port", "interface": "bv%d" % i}})
    return rr.Spec("%d extra VDIs" % vdis, str(rr.HERE / "lab-policy.json"),
                   h.write_json("inventory-big.json", doc))


# Daemon bugs this test exposes (reported, not fixed here); see README.md.
KNOWN_BUGS = {
    "state-prev-rollback": "a corrupt state.json with a state.json.prev present makes the daemon replace the "
                           "kernel's (newer) table with the previous generation's ruleset",
}

SC1 = "1 apply + reachability"
SC2 = "2 element-level diffs"
SC3 = "3 live quarantine"
SC4 = "4 coexistence with a foreign table"
SC5A = "5a SIGKILL during a large apply"
SC5B = "5b restart / reboot restores last-known-good"
SC5C = "5c drift repair"
SC5D = "5d corrupt state file"
SC5E = "5e invalid ruleset file"
SC6 = "6 drop events"
SC7 = "7 tripwire: same-packet containment"
SC8 = "8 spoof guard"
SC9 = "9 spoof guard: MAC addresses"
SC10 = "10 host-mode tripwire: the sender's address blocked on the packet"


def start_with(h, lab, rsdir, statedir, spec, **kw):
    """Daemon in hv with `spec` in its ruleset dir; returns (daemon, applied event)."""
    if spec is not None:
        put_ruleset(rsdir, h.compile(spec, "json"))
    d = Daemon(h, lab.hv(), rsdir, statedir, **kw).start()
    if spec is None:
        return d, None
    _, ev = d.wait_applied(0, timeout=20)
    if ev is None or ev.get("type") != "ruleset_applied":
        raise HarnessError("daemon did not apply %s: %s\n%s" % (spec.label, ev, d.tail()))
    return d, ev


def switch(h, d, rsdir, spec, timeout=20):
    """Writes spec's ruleset into the watched dir; returns the next outcome event."""
    mark = d.events.mark()
    put_ruleset(rsdir, h.compile(spec, "json"))
    _, ev = d.wait_applied(mark, timeout)
    return ev


# --------------------------------------------------------------------------- scenario 1

def scenario_apply(h, specs):
    section(SC1)
    lab = EnfLab(h, "s1")
    try:
        lab.build_full()
        foreign = ForeignGuard(h, lab.hv())
        rsdir, st = h.new_dir("s1-rs"), h.new_dir("s1-state")
        d, ev = start_with(h, lab, rsdir, st, specs["enforce"])
        check("first ruleset applied as a full replace, generation 1, the compiler's hash",
                  ev.get("mode") == "replace" and ev.get("generation") == 1 and
                  ev.get("hash") == h.ruleset_hash(specs["enforce"]), ev)
        figure("first apply", "%d elements, %d us" % (ev.get("elements_added", 0), ev.get("latency_us", 0)))
        ok, detail = table_matches(h, lab.hv(), specs["enforce"])
        check("kernel table == nft -f oracle of the compiled ruleset", ok, detail)
        foreign.verify("the first apply")
        if h.args.inject_failure == "crash":
            raise HarnessError("--inject-failure crash: deliberate harness error with the daemon running")
        if h.args.inject_failure == "hang":
            log("(--inject-failure hang: sleeping; send SIGTERM/SIGINT to test the cleanup)")
            time.sleep(3600)
        matrix = rr.lab_matrix()
        if h.args.inject_failure == "expectation":
            matrix[0].allowed = True
            log("(--inject-failure expectation: vdi1 -> vdi2 now expected to connect)")
        classes = h.classes(specs["enforce"])
        pairs = passed = 0
        for family in (4, 6):
            h.tick()
            n, p = check_traffic(h, lab, d, matrix, family, classes, ev["generation"], "enforce")
            pairs, passed = pairs + n, passed + p
        figure("reachability", "%d pairs (25 per family, IPv4 + IPv6), %d passed" % (pairs, passed))
        check("daemon still running", d.alive())
        rc = d.stop()
        check("SIGTERM stops the daemon with exit code 0", rc == 0, "rc=%s\n%s" % (rc, d.tail()))
        _, stopped = d.events.wait(lambda e: e.get("type") == "stopped", 0, 1)
        check("a 'stopped' event is written", stopped is not None)
        ok, detail = table_matches(h, lab.hv(), specs["enforce"])
        check("table stays in force after the daemon stopped", ok, detail)
    finally:
        lab.destroy()


# --------------------------------------------------------------------------- scenario 2

def scenario_diffs(h, specs):
    section(SC2)
    lab = EnfLab(h, "s2")
    try:
        lab.build_bare()
        hv = lab.hv()
        foreign = ForeignGuard(h, hv)
        rsdir, st = h.new_dir("s2-rs"), h.new_dir("s2-state")
        d, ev = start_with(h, lab, rsdir, st, specs["enforce"])
        foreign.verify("the first apply")
        prev = "enforce"
        gen = ev["generation"]
        for key, what in (("plus-vdi5", "(a) inventory + one VDI"), ("minus-vdi4", "(b) one VDI removed"),
                          ("admin-ssh", "(c) a changed rule")):
            h.tick()
            before = kernel_doc(hv)
            ev = switch(h, d, rsdir, specs[key])
            if not check("%s: ruleset applied" % what,
                             ev is not None and ev.get("type") == "ruleset_applied", "%s\n%s" % (ev, d.tail())):
                continue
            check("%s: event mode diff, generation %d" % (what, gen + 1),
                      ev.get("mode") == "diff" and ev.get("generation") == gen + 1,
                      {k: ev.get(k) for k in ("mode", "generation")})
            gen = ev.get("generation", gen + 1)
            after = kernel_doc(hv)
            ok, detail = table_matches(h, hv, specs[key])
            check("%s: kernel table == nft -f oracle of the new inputs" % what, ok, detail)
            kernel_delta = element_delta(set_elements(before), set_elements(after))
            oracle_delta = element_delta(h.oracle(specs[prev])["elements"], h.oracle(specs[key])["elements"])
            check("%s: only the intended set elements changed (set by set)" % what,
                      kernel_delta == oracle_delta,
                      "kernel: %s\noracle: %s" % (describe_delta(kernel_delta), describe_delta(oracle_delta)))
            added = sum(len(a) for a, _ in kernel_delta.values())
            removed = sum(len(r) for _, r in kernel_delta.values())
            check("%s: event elements_added/removed == kernel element changes" % what,
                      (ev.get("elements_added"), ev.get("elements_removed")) == (added, removed),
                      "event +%s -%s, kernel +%d -%d" % (ev.get("elements_added"), ev.get("elements_removed"),
                                                         added, removed))
            figure(what, "mode %s, +%s -%s elements in %d sets (%s), %s us" % (
                ev.get("mode"), ev.get("elements_added"), ev.get("elements_removed"), len(kernel_delta),
                ", ".join(sorted(kernel_delta)), ev.get("latency_us")))
            foreign.verify("diff %s" % what)
            prev = key
        d.stop()
    finally:
        lab.destroy()


# --------------------------------------------------------------------------- scenario 3

def scenario_quarantine(h, specs):
    section(SC3)
    lab = EnfLab(h, "s3")
    holders = []
    try:
        lab.build_full()
        hv = lab.hv()
        foreign = ForeignGuard(h, hv)
        rsdir, st = h.new_dir("s3-rs"), h.new_dir("s3-state")
        d, ev = start_with(h, lab, rsdir, st, specs["enforce"])
        classes = h.classes(specs["enforce"])
        fs, vdi2 = lab.endpoints["fs"], lab.endpoints["vdi2"]
        for family in (4, 6):
            p = lab.spawn("vdi2", [sys.executable, LAB_AGENT, "hold", fs.addr(family), "445",
                                   "--bind", vdi2.addr(family)])
            holders.append((family, p))
            line = rr.read_line(p, 10) or ""
            if not line.startswith("connected"):
                raise HarnessError("v%d: vdi2 cannot open a TCP connection to fs:445: %r" % (family, line))

        def send(p, token, wait):
            p.stdin.write("send %s %s\n" % (token, wait))
            p.stdin.flush()
            return (rr.read_line(p, wait + 5) or "").split()[:2] == ["echo", token]

        for family, p in holders:
            check("v%d: vdi2's open connection to fs:445 passes data" % family, send(p, "before", 3))
        q_json = h.compile(specs["q-vdi2"], "json")
        mark = d.events.mark()
        t0 = time.monotonic()
        put_ruleset(rsdir, q_json)
        _, ev = d.wait_applied(mark, 10)
        applied_after = time.monotonic() - t0
        check("quarantine: event mode diff, elements_added 1, elements_removed 0",
                  ev is not None and ev.get("type") == "ruleset_applied" and ev.get("mode") == "diff"
                  and ev.get("elements_added") == 1 and ev.get("elements_removed") == 0, ev)
        figure("quarantine apply", "%s us in the kernel, event %.0f ms after the file was renamed" % (
            (ev or {}).get("latency_us"), applied_after * 1000))
        gen = (ev or {}).get("generation")
        ok, detail = table_matches(h, hv, specs["q-vdi2"])
        check("kernel table == oracle of the quarantined ruleset", ok, detail)
        foreign.verify("the quarantine diff")
        passed = {family: send(p, "during", 1.5) for family, p in holders}
        for family, went_through in passed.items():
            # Blocked, and the drop itself seen: the daemon's drop event of the quarantine rule.
            dst = norm(fs.v4 if family == 4 else fs.v6)
            _, fev = d.events.wait(lambda e: e.get("type") in ("drop", "drop_summary") and
                                   e.get("reason") == "quarantine" and e.get("indev") == "vdi2" and
                                   norm(e.get("dst")) == dst, mark, 3)
            check("v%d: the open connection stops passing data, its segments dropped by the quarantine rule"
                  % family, not went_through and fev is not None,
                  "data passed" if went_through else "no quarantine drop event toward %s" % dst)
        _, qev = d.events.wait(lambda e: e.get("type") in ("drop", "drop_summary") and
                               e.get("reason") == "quarantine" and e.get("indev") == "vdi2" and
                               norm(e.get("dst")) in (norm(fs.v4), norm(fs.v6)), mark, 3)
        check("its dropped segments are drop events: reason quarantine, subject q, workload vdi-2, "
                  "generation %s" % gen,
                  qev is not None and qev.get("workload") == "vdi-2" and qev.get("subject") == "q"
                  and qev.get("prefix") == "bh:enf:out:quarantine:q" and qev.get("policy_generation") == gen, qev)
        rows = [
            rr.Row("vdi2", "fs", "tcp", 445, False, [("out", "quarantine", None)], note="new connection"),
            rr.Row("vdi2", "fs", "icmp", None, False, [("out", "quarantine", None)]),
            rr.Row("vdi2", "edr", "tcp", 443, True, [], note="quarantine allow-list"),
            rr.Row("adm1", "vdi2", "tcp", 3389, True, [], note="quarantine allow_from"),
            rr.Row("adm1", "vdi2", "icmp", None, False, [("in", "quarantine", None)]),
            rr.Row("vdi1", "fs", "tcp", 445, True, [rr.O("allow", "vdi1")], note="others unaffected"),
        ]
        for family in (4, 6):
            check_traffic(h, lab, d, rows, family, classes, gen, "vdi2 quarantined")
        mark = d.events.mark()
        put_ruleset(rsdir, h.compile(specs["enforce"], "json"))
        _, ev = d.wait_applied(mark, 10)
        check("release: event mode diff, elements_removed 1",
                  ev is not None and ev.get("type") == "ruleset_applied" and ev.get("mode") == "diff"
                  and ev.get("elements_added") == 0 and ev.get("elements_removed") == 1, ev)
        ok, detail = table_matches(h, hv, specs["enforce"])
        check("kernel table == oracle of the released ruleset", ok, detail)
        foreign.verify("the release diff")
        released = [
            rr.Row("vdi2", "fs", "tcp", 445, True, [rr.O("allow", "vdi2")], note="new connections work again"),
            rr.Row("vdi2", "vdi1", "tcp", 3389, False, [rr.O("deny", "vdi2")]),
        ]
        for family in (4, 6):
            check_traffic(h, lab, d, released, family, classes, (ev or {}).get("generation"), "vdi2 released")
        for family, p in holders:
            figure("v%d held connection after the release (info)" % family,
                       "passes data again" if send(p, "after", 4) else "still silent")
        d.stop()
    finally:
        for _, p in holders:
            lab.stop_process(p)
        lab.destroy()


# --------------------------------------------------------------------------- scenario 4

def scenario_coexistence(h, specs):
    section(SC4)
    lab = EnfLab(h, "s4")
    try:
        lab.build_bare()
        hv = lab.hv()
        foreign = ForeignGuard(h, hv)
        rsdir, st = h.new_dir("s4-rs"), h.new_dir("s4-state")
        d, ev = start_with(h, lab, rsdir, st, specs["enforce"], drift=3600)
        check("after the first apply (replace)", foreign.verify("replace (first apply)"))
        ev = switch(h, d, rsdir, specs["q-vdi2"])
        check("after a diff (%s)" % (ev or {}).get("mode"), foreign.verify("diff (quarantine)"))
        # Drift repairs (full replaces) of three kinds of tampering with OUR table only.
        for label, cmd in (
                ("table deleted", ["delete", "table", "inet", "bulkhead"]),
                ("foreign rule in our chain", ["add", "rule", "inet", "bulkhead", "forward", "meta", "mark",
                                               "0x1", "accept"]),
                ("element added", ["add", "element", "inet", "bulkhead", "quarantined_ports", "{", "vdi3", "}"])):
            mark = d.events.mark()
            run(["ip", "netns", "exec", hv, "nft"] + cmd)
            os.kill(d.proc.pid, signal.SIGUSR1)
            _, rev = d.events.wait(lambda e: e.get("type") in ("drift_repaired", "drift_repair_failed"), mark, 5)
            check("drift (%s) repaired" % label, rev is not None and rev.get("type") == "drift_repaired", rev)
            ok, detail = table_matches(h, hv, specs["q-vdi2"])
            check("table == oracle after the repair of %s" % label, ok, detail)
            check("after the drift repair (%s)" % label, foreign.verify("drift repair (%s)" % label))
        d.stop()
        lab2_state = h.new_dir("s4-state-copy")
        shutil.copy2(st / "state.json", lab2_state / "state.json")
        run(["ip", "netns", "exec", hv, "nft", "delete", "table", "inet", "bulkhead"])
        d = Daemon(h, hv, h.new_dir("s4-rs-empty"), lab2_state).start()
        _, ev = d.events.wait(lambda e: e.get("type") == "ruleset_applied", 0, 10)
        check("restore after a deleted table", ev is not None and ev.get("mode") == "restore", ev)
        check("after the restore", foreign.verify("restore of last-known-good"))
        d.stop()
    finally:
        lab.destroy()


# --------------------------------------------------------------------------- scenario 5

def classify(h, ns, old_norm, new_norm):
    doc = kernel_doc(ns)
    if doc is None:
        return "absent", None
    got = rr.normalize_table(doc)
    if got == old_norm:
        return "old", None
    if got == new_norm:
        return "new", None
    return "MIX", got


def state_hash(statedir):
    try:
        return json.loads((Path(statedir) / "state.json").read_text()).get("hash")
    except (OSError, ValueError):
        return "unreadable"


def scenario_kill(h, specs):
    section(SC5A)
    lab = EnfLab(h, "s5a")
    try:
        lab.build_bare()
        hv = lab.hv()
        foreign = ForeignGuard(h, hv)
        old, big = specs["enforce"], big_spec(h, h.args.big_vdis)
        t = time.monotonic()
        big_json = h.compile(big, "json")
        figure("large ruleset", "%d VDIs on hv, compiled in %.2f s, %.1f MB JSON" % (
            h.args.big_vdis, time.monotonic() - t, len(big_json) / 1e6))
        old_norm, new_norm = h.oracle(old)["norm"], h.oracle(big)["norm"]
        n_elements = sum(len(v) for v in h.oracle(big)["elements"].values())
        figure("large ruleset in the kernel (nft -f oracle)", "%d set/map elements" % n_elements)
        old_hash, new_hash = h.ruleset_hash(old), h.ruleset_hash(big)
        # Last-known-good = the lab ruleset.
        base = h.new_dir("s5a-state-old")
        d, _ = start_with(h, lab, h.new_dir("s5a-rs-old"), base, old)
        d.stop()
        rs_big, rs_empty = h.new_dir("s5a-rs-big"), h.new_dir("s5a-rs-empty")
        put_ruleset(rs_big, big_json)
        # Reference run (not killed): how long from spawn to the applied event.
        ref_state = h.new_dir("s5a-state-ref")
        shutil.copy2(base / "state.json", ref_state / "state.json")
        d = Daemon(h, hv, rs_big, ref_state, extra=["--no-nflog"]).start()
        _, ev = d.events.wait(lambda e: e.get("type") == "ruleset_applied" and e.get("hash") == new_hash, 0, 30)
        t_ref = time.monotonic() - d.started
        if ev is None:
            raise HarnessError("reference apply of the large ruleset failed:\n%s" % d.tail())
        d.stop()
        figure("reference apply (old -> large)", "mode %s, +%s elements, %s us in the kernel, "
                   "%.0f ms from spawn to the event" % (ev.get("mode"), ev.get("elements_added"),
                                                        ev.get("latency_us"), t_ref * 1000))
        state, _ = classify(h, hv, old_norm, new_norm)
        check("reference apply: kernel == oracle of the large ruleset", state == "new", state)
        foreign.verify("the large apply")

        def reset_to_old():
            tmp = h.new_dir("s5a-state-reset")
            shutil.copy2(base / "state.json", tmp / "state.json")
            r = Daemon(h, hv, rs_empty, tmp, extra=["--no-nflog"]).start()
            ok = r.wait_running(30)
            r.stop()
            shutil.rmtree(tmp, ignore_errors=True)
            if not ok or classify(h, hv, old_norm, new_norm)[0] != "old":
                raise HarnessError("could not reset the kernel to the old ruleset:\n%s" % r.tail())

        trials = h.args.kill_trials
        outcomes = []
        for i in range(trials):
            h.tick()
            reset_to_old()
            diff_path = i % 2 == 0  # even: LKG = old, so the large ruleset is a diff; odd: replace
            tstate = h.new_dir("s5a-state-trial%d" % i)
            if diff_path:
                shutil.copy2(base / "state.json", tstate / "state.json")
            delay = t_ref * 1.3 * i / max(1, trials - 1)
            d = Daemon(h, hv, rs_big, tstate, extra=["--no-nflog"]).start()
            time.sleep(max(0.0, d.started + delay - time.monotonic()))  # the kill time under test
            d.kill()
            state, got = classify(h, hv, old_norm, new_norm)
            lkg = state_hash(tstate) if (tstate / "state.json").exists() else None
            check("trial %d (%s, SIGKILL at %.0f ms): kernel table is old, new or absent, never a mix"
                      % (i, "diff" if diff_path else "replace", delay * 1000),
                      state in ("absent", "old", "new"),
                      "" if got is None else describe_difference(got, new_norm))
            check("trial %d: state.json is absent or a whole ruleset (old or new)" % i,
                      lkg in (None, old_hash, new_hash), lkg)
            foreign.verify("SIGKILL trial %d" % i)
            # 5b: restart with the same state dir and no ruleset file: last-known-good first.
            restarted = "-"
            if lkg in (old_hash, new_hash):
                r = Daemon(h, hv, rs_empty, tstate, extra=["--no-nflog"]).start()
                _, rev = r.events.wait(lambda e: e.get("type") in ("ruleset_applied", "last_known_good_in_force",
                                                                    "last_known_good_failed"), 0, 30)
                r.wait_running(30)
                r.stop()
                want = "old" if lkg == old_hash else "new"
                after, _ = classify(h, hv, old_norm, new_norm)
                good = rev is not None and rev.get("hash") == lkg and (
                    rev.get("type") == "last_known_good_in_force" or rev.get("mode") == "restore")
                check("trial %d: restart re-applies last-known-good (%s) and the table equals it" % (i, want),
                          good and after == want,
                          "event %s, table %s" % (rev, after), section=SC5B)
                restarted = "%s -> %s" % ((rev or {}).get("mode") or (rev or {}).get("type"), after)
            else:
                # Killed before anything was persisted: no last-known-good; a restart must leave
                # the kernel's table as it is (never tear it down).
                raw = nft_raw(hv, "-j", "list", "table", "inet", "bulkhead")
                r = Daemon(h, hv, rs_empty, tstate, extra=["--no-nflog"]).start()
                r.wait_running(30)
                r.stop()
                applied = [e for e in r.events.since(0) if e.get("type") == "ruleset_applied"]
                check("trial %d: no last-known-good: restart leaves the kernel's table (%s) untouched" % (i, state),
                          not applied and nft_raw(hv, "-j", "list", "table", "inet", "bulkhead") == raw,
                          applied, section=SC5B)
                restarted = "nothing applied"
            outcomes.append("%d:%.0fms:%s/%s:%s" % (i, delay * 1000, state,
                                                    {None: "none", old_hash: "old", new_hash: "new"}.get(lkg, "?"),
                                                    restarted))
            shutil.rmtree(tstate, ignore_errors=True)
        figure("trials (index:kill delay:kernel/state.json:restart event -> table)", "  ".join(outcomes))
        kinds = [o.split(":")[2].split("/")[0] for o in outcomes]
        figure("kernel after SIGKILL", ", ".join("%s %d" % (k, kinds.count(k)) for k in
                                                     ("old", "new", "absent", "MIX") if kinds.count(k)))
    finally:
        lab.destroy()


def scenario_reboot(h, specs):
    section(SC5B)
    lab = EnfLab(h, "s5b")
    fresh = EnfLab(h, "s5b-reboot")
    try:
        lab.build_bare()
        hv = lab.hv()
        rsdir, st = h.new_dir("s5b-rs"), h.new_dir("s5b-state")
        d, ev = start_with(h, lab, rsdir, st, specs["enforce"])
        d.stop()
        lkg_hash = ev["hash"]
        # Plain restart: the table is intact; nothing is rewritten (handles unchanged).
        raw_before = nft_raw(hv, "-j", "list", "table", "inet", "bulkhead")
        empty = h.new_dir("s5b-rs-empty")
        d = Daemon(h, hv, empty, st).start()
        _, ev = d.events.wait(lambda e: e.get("type") in ("ruleset_applied", "last_known_good_in_force"), 0, 10)
        d.wait_running()
        check("restart with the table intact: last_known_good_in_force",
                  ev is not None and ev.get("type") == "last_known_good_in_force" and ev.get("hash") == lkg_hash, ev)
        check("restart with the table intact: table not rewritten (handles unchanged)",
                  nft_raw(hv, "-j", "list", "table", "inet", "bulkhead") == raw_before)
        d.stop()
        # Reboot simulation 1: the table is gone, the state dir survived.
        run(["ip", "netns", "exec", hv, "nft", "delete", "table", "inet", "bulkhead"])
        d = Daemon(h, hv, empty, st).start()
        i, ev = d.events.wait(lambda e: e.get("type") == "ruleset_applied", 0, 10)
        check("table deleted + restart, no ruleset file: first event is ruleset_applied mode restore",
                  ev is not None and ev.get("mode") == "restore" and ev.get("hash") == lkg_hash and i == 0, ev)
        ok, detail = table_matches(h, hv, specs["enforce"])
        check("restored table == oracle of last-known-good", ok, detail)
        d.stop()
        # Reboot simulation 2: a fresh network namespace (nothing in the kernel), the old state
        # dir, and a ruleset dir that already holds a *different* ruleset: LKG goes in first.
        fresh.build_bare()
        rs2 = h.new_dir("s5b-rs-fresh")
        put_ruleset(rs2, h.compile(specs["q-vdi2"], "json"))
        d = Daemon(h, fresh.hv(), rs2, st).start()
        d.wait_running()
        evs = [e for e in d.events.since(0) if e.get("type") == "ruleset_applied"]
        check("fresh namespace: restore of last-known-good, then the ruleset file as a diff",
                  len(evs) == 2 and evs[0].get("mode") == "restore" and evs[0].get("hash") == lkg_hash
                  and evs[1].get("mode") == "diff" and evs[1].get("hash") == h.ruleset_hash(specs["q-vdi2"]),
                  [{k: e.get(k) for k in ("mode", "hash", "generation")} for e in evs])
        ok, detail = table_matches(h, fresh.hv(), specs["q-vdi2"])
        check("fresh namespace: table == oracle of the ruleset file", ok, detail)
        d.stop()
    finally:
        fresh.destroy()
        lab.destroy()


def scenario_drift(h, specs):
    section(SC5C)
    lab = EnfLab(h, "s5c")
    try:
        lab.build_bare()
        hv = lab.hv()
        foreign = ForeignGuard(h, hv)
        rsdir, st = h.new_dir("s5c-rs"), h.new_dir("s5c-state")
        interval = 2
        d, ev = start_with(h, lab, rsdir, st, specs["enforce"], drift=interval)
        checks0 = d.wait_metric("bulkhead_enforcer_drift_checks_total", lambda v: v >= 2, interval * 2 + 3)
        check("no false drift on an untouched table (%s periodic checks)" % checks0,
                  not any(e.get("type") == "drift_detected" for e in d.events.since(0)) and (checks0 or 0) >= 2)
        repairs0 = d.metrics().get("bulkhead_enforcer_drift_repairs_total")
        mark = d.events.mark()
        t0 = time.monotonic()
        run(["ip", "netns", "exec", hv, "nft", "flush", "ruleset"])
        _, det = d.events.wait(lambda e: e.get("type") == "drift_detected", mark, interval + 3)
        _, rep_ev = d.events.wait(lambda e: e.get("type") in ("drift_repaired", "drift_repair_failed"), mark,
                                  interval + 3)
        took = time.monotonic() - t0
        check("nft flush ruleset: drift_detected + drift_repaired within the %d s interval (+1.5 s)" % interval,
                  det is not None and rep_ev is not None and rep_ev.get("type") == "drift_repaired"
                  and took <= interval + 1.5,
                  "detected %s, repaired %s, after %.2f s" % (det, rep_ev, took))
        figure("flush ruleset repaired after", "%.2f s (drift interval %d s), summary: %s" % (
            took, interval, (det or {}).get("summary", "")[:160]))
        ok, detail = table_matches(h, hv, specs["enforce"])
        check("after the repair: table == oracle", ok, detail)
        repairs1 = d.wait_metric("bulkhead_enforcer_drift_repairs_total", lambda v: v == (repairs0 or 0) + 1, 3)
        check("metric bulkhead_enforcer_drift_repairs_total %s -> %s" % (
            repairs0, repairs1), repairs1 == (repairs0 or 0) + 1)
        foreign.install()  # flush ruleset removed it too: a new snapshot from here on
        d.stop()
        # SIGUSR1 with a long interval: only the signal can trigger the check.
        put_ruleset(rsdir, h.compile(specs["q-vdi2"], "json"))
        d = Daemon(h, hv, rsdir, st, drift=3600).start()
        _, ev = d.events.wait(lambda e: e.get("type") == "ruleset_applied", 0, 10)
        check("quarantine ruleset applied (diff) after restart", ev is not None and ev.get("mode") == "diff", ev)
        d.wait_running()
        d.wait_metric("bulkhead_enforcer_drift_repairs_total", lambda v: True, 3)
        targets = [("quarantined_ports", '"vdi2"'), ("seg_vdi_4", first_element_text(hv, "seg_vdi_4")),
                   ("c06ffe5b0_out_allow4", first_element_text(hv, "c06ffe5b0_out_allow4"))]
        for set_name, elem in targets:
            h.tick()
            if not check("an element of %s to delete" % set_name, elem is not None):
                continue
            r0 = d.metrics().get("bulkhead_enforcer_drift_repairs_total", 0)
            mark = d.events.mark()
            run(["ip", "netns", "exec", hv, "nft", "delete", "element", "inet", "bulkhead", set_name,
                 "{ %s }" % elem])
            t0 = time.monotonic()
            os.kill(d.proc.pid, signal.SIGUSR1)
            _, det = d.events.wait(lambda e: e.get("type") == "drift_detected", mark, 5)
            _, rev = d.events.wait(lambda e: e.get("type") in ("drift_repaired", "drift_repair_failed"), mark, 5)
            took = time.monotonic() - t0
            check("deleted element %s of %s: SIGUSR1 -> drift_detected + drift_repaired (%.0f ms)" % (
                          elem, set_name, took * 1000),
                      det is not None and rev is not None and rev.get("type") == "drift_repaired", "detected %s, repaired %s" % (det, rev))
            ok, detail = table_matches(h, hv, specs["q-vdi2"])
            check("after the repair: table == oracle (%s restored)" % set_name, ok, detail)
            r1 = d.wait_metric("bulkhead_enforcer_drift_repairs_total", lambda v: v == r0 + 1, 3)
            check("drift_repairs_total %s -> %s" % (r0, r1), r1 == r0 + 1)
            if det:
                figure("drift summary (%s)" % set_name, det.get("summary", "")[:200])
            foreign.verify("repair of a deleted element of %s" % set_name)
        d.stop()
    finally:
        lab.destroy()


def scenario_corrupt(h, specs):
    section(SC5D)
    lab = EnfLab(h, "s5d")
    try:
        lab.build_bare()
        hv = lab.hv()
        foreign = ForeignGuard(h, hv)
        rsdir, base = h.new_dir("s5d-rs"), h.new_dir("s5d-state-base")
        d, ev1 = start_with(h, lab, rsdir, base, specs["enforce"])
        ev2 = switch(h, d, rsdir, specs["q-vdi2"])
        d.stop()
        if not (base / "state.json.prev").exists():
            raise HarnessError("no state.json.prev after two applies")
        good = (base / "state.json").read_bytes()
        tampered = good.replace(b"10.0.0.20", b"10.0.0.21")
        if tampered == good:
            raise HarnessError("cannot tamper with state.json (no 10.0.0.20 in it)")
        variants = [("truncated", good[:len(good) // 2]),
                    ("garbage", bytes((i * 37 + 11) % 256 for i in range(4096))),
                    ("tampered (address changed, hash kept)", tampered)]
        empty = h.new_dir("s5d-rs-empty")
        n = 0
        for with_prev in (False, True):
            for name, content in variants:
                h.tick()
                n += 1
                st = h.new_dir("s5d-state-%d" % n)
                shutil.copy2(base / "state.json", st / "state.json")
                if with_prev:
                    shutil.copy2(base / "state.json.prev", st / "state.json.prev")
                # The kernel holds the newest ruleset (vdi-2 quarantined).
                if classify(h, hv, h.oracle(specs["q-vdi2"])["norm"], None)[0] != "old":
                    reset = h.new_dir("s5d-state-reset-%d" % n)
                    shutil.copy2(base / "state.json", reset / "state.json")
                    r = Daemon(h, hv, empty, reset).start()
                    r.wait_running()
                    r.stop()
                (st / "state.json").write_bytes(content)
                raw_before = nft_raw(hv, "-j", "list", "table", "inet", "bulkhead")
                what = "%s state.json%s" % (name, ", state.json.prev present" if with_prev else ", no .prev")
                d = Daemon(h, hv, empty, st).start()
                _, cev = d.events.wait(lambda e: e.get("type") == "state_corrupt", 0, 10)
                running = d.wait_running()
                msg = (cev or {}).get("error", "")
                check("%s: state_corrupt event naming the file and where it was moved" % what,
                          cev is not None and "state.json" in msg and "corrupt-1" in msg, cev)
                check("%s: the corrupt file is kept as state.json.corrupt-1" % what,
                          (st / "state.json.corrupt-1").read_bytes() == content if
                          (st / "state.json.corrupt-1").exists() else False)
                check("%s: the daemon stays up" % what, running and d.alive(), d.tail())
                now_in_kernel = classify(h, hv, h.oracle(specs["q-vdi2"])["norm"], h.oracle(specs["enforce"])["norm"])[0]
                check("%s: the kernel's existing table is left untouched" % what,
                          nft_raw(hv, "-j", "list", "table", "inet", "bulkhead") == raw_before,
                          "before: generation %s (vdi-2 quarantined); after: %s; events: %s" % (
                              ev2.get("generation"),
                              {"old": "still that ruleset, but rewritten", "new": "generation %s's ruleset "
                               "(lab policy, vdi-2 NOT quarantined)" % ev1.get("generation")}.get(
                                  now_in_kernel, now_in_kernel),
                              [{k: e.get(k) for k in ("type", "mode", "hash", "generation") if k in e}
                               for e in d.events.since(0)]))
                if n == 1:
                    figure("state_corrupt message (truncated)", msg[:300])
                if name.startswith("tampered") and with_prev:
                    figure("state_corrupt message (tampered, with .prev)", msg[:300])
                if n == len(variants) * 2 or n == 1:
                    # A new valid ruleset file is applied normally.
                    spec = specs["admin-ssh"] if n == 1 else specs["plus-vdi5"]
                    ev = switch(h, d, empty, spec)
                    check("%s: a new valid ruleset file is then applied (%s)" % (what, (ev or {}).get("mode")),
                              ev is not None and ev.get("type") == "ruleset_applied", ev)
                    figure("generation after the corrupt start (%s)" % what, "%s (the lost state was generation %s)"
                               % ((ev or {}).get("generation"), ev2.get("generation")))
                    ok, detail = table_matches(h, hv, spec)
                    check("%s: table == oracle of the new ruleset" % what, ok, detail)
                    (empty / "ruleset.json").unlink()
                foreign.verify("start with a %s" % what)
                d.stop()
    finally:
        lab.destroy()


def scenario_invalid(h, specs):
    section(SC5E)
    lab = EnfLab(h, "s5e")
    try:
        lab.build_bare()
        hv = lab.hv()
        foreign = ForeignGuard(h, hv)
        rsdir, st = h.new_dir("s5e-rs"), h.new_dir("s5e-state")
        d, ev = start_with(h, lab, rsdir, st, specs["enforce"])
        gen = ev["generation"]
        good = json.loads(h.compile(specs["q-vdi2"], "json"))
        dangling = copy.deepcopy(good)
        dangling["sets"] = [s for s in dangling["sets"] if s.get("name") != "quarantined_ports"]
        cases = [
            ("bad JSON", '{"format": "bulkhead-ruleset/1", "chains": [ {', None),
            ("wrong enforcer id", h.compile(specs["other-enforcer"], "json", enforcer="hv-other"), "hv-other"),
            ("empty file", "", None),
            ("a rule referring to a missing set", json.dumps(dangling), None),
        ]
        for name, text, needle in cases:
            h.tick()
            raw_before = nft_raw(hv, "-j", "list", "table", "inet", "bulkhead")
            mark = d.events.mark()
            put_ruleset(rsdir, text)
            _, ev = d.wait_applied(mark, 5)
            if name == "empty file" and ev is None:
                check("%s: ignored (no event)" % name, True)
            else:
                check("%s: ruleset_rejected event" % name,
                          ev is not None and ev.get("type") == "ruleset_rejected" and
                          (needle is None or needle in ev.get("error", "")), ev)
                if ev is not None:
                    figure("rejection (%s)" % name, ev.get("error", "")[:200])
            check("%s: table unchanged (handles included)" % name,
                      nft_raw(hv, "-j", "list", "table", "inet", "bulkhead") == raw_before)
            check("%s: daemon stays up" % name, d.alive(), d.tail())
            foreign.verify("rejected ruleset (%s)" % name)
        ev = switch(h, d, rsdir, specs["q-vdi2"])
        check("a valid ruleset afterwards is applied as a diff of the one in force (generation %d)" % (gen + 1),
                  ev is not None and ev.get("type") == "ruleset_applied" and ev.get("mode") == "diff"
                  and ev.get("generation") == gen + 1, ev)
        ok, detail = table_matches(h, hv, specs["q-vdi2"])
        check("table == oracle", ok, detail)
        d.stop()
    finally:
        lab.destroy()


# --------------------------------------------------------------------------- scenario 6

def agent(lab, role, argv, timeout):
    p = run(["ip", "netns", "exec", lab.ns(role), sys.executable, AGENT] + argv, timeout=timeout)
    return json.loads(p.stdout.strip().splitlines()[-1])


def scan_check(h, lab, d, family, n, first_port, generation, classes, mode="enf"):
    """n blocked TCP connection attempts vdi1 -> vdi2, one port each."""
    hv = lab.hv()
    src, dst = lab.endpoints["vdi1"], lab.endpoints["vdi2"]
    c_src, c_dst = classes["vdi1"], classes["vdi2"]
    m = "enf" if mode == "enf" else "mon"
    out_prefix = "bh:%s:out:deny:%s" % (m, c_src)
    in_prefix = "bh:%s:in:deny:%s" % (m, c_dst)
    counter0 = prefix_counter(hv, c_src + "_out", out_prefix)
    in0 = prefix_counter(hv, c_dst + "_in", in_prefix)
    mark = d.events.mark()
    res = agent(lab, "vdi1", ["scan", src.addr(family), dst.addr(family), str(first_port), str(n),
                              "--hold", "1.5" if mode == "enf" else "0.5"], 30)
    ports = set(range(first_port, first_port + n))
    tag = "v%d %s, %d ports" % (family, "enforce" if mode == "enf" else "monitor", n)
    if mode == "enf":
        check("%s: no connection attempt succeeded" % tag, res["connected"] == 0, res)
    want_prefixes = [out_prefix] if mode == "enf" else [out_prefix, in_prefix]

    def ours(e):
        return e.get("type") in ("drop", "drop_summary") and e.get("family") == family and norm(e.get("dst")) == norm(dst.addr(family)) and \
            e.get("proto") == 6 and e.get("dport") in ports

    # Wait until every packet the kernel logged is accounted for by records (first
    # occurrences + summaries, which come when each repeat window closes).
    deadline = time.monotonic() + h.args.repeat_window_ms / 1000.0 + 6
    while True:
        counter = prefix_counter(hv, c_src + "_out", out_prefix) - counter0
        counter_in = prefix_counter(hv, c_dst + "_in", in_prefix) - in0 if mode != "enf" else 0
        evs = [e for e in d.events.since(mark) if ours(e)]
        total = sum(e.get("count", 1) for e in evs)
        if (total >= counter + counter_in and counter >= n) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    drops = [e for e in evs if e.get("type") == "drop"]
    summaries = [e for e in evs if e.get("type") == "drop_summary"]
    for prefix in want_prefixes:
        firsts = [e for e in drops if e.get("prefix") == prefix]
        got_ports = sorted(e.get("dport") for e in firsts)
        check("%s: exactly %d distinct drop events with prefix %s, one per port" % (tag, n, prefix),
                  len(firsts) == n and set(got_ports) == ports,
                  "%d events, %d distinct ports, %d duplicates" % (len(firsts), len(set(got_ports)),
                                                                   len(got_ports) - len(set(got_ports))))
        direction = prefix.split(":")[2]
        ep = src if direction == "out" else dst
        want = {"src": norm(src.addr(family)), "dst": norm(dst.addr(family)), "proto": 6, "proto_name": "tcp",
                "tcp_flags": "syn", "direction": direction, "reason": "deny",
                "mode": "enforce" if mode == "enf" else "monitor", "would_drop": mode != "enf",
                "workload": ep.workload, ("indev" if direction == "out" else "outdev"): ep.iface,
                "policy_generation": generation, "group": 10, "hook": "forward", "family": family,
                "subject": c_src if direction == "out" else c_dst}
        bad = []
        for e in firsts:
            diff = {k: e.get(k) for k, v in want.items() if (norm(e.get(k)) if k in ("src", "dst") else e.get(k)) != v}
            if diff:
                bad.append((e.get("dport"), diff))
        check("%s: fields of every %s event: %s" % (tag, direction, ", ".join(
            "%s=%s" % (k, v) for k, v in want.items() if k not in ("src", "dst", "family", "group"))), not bad,
            "%d bad, e.g. %s" % (len(bad), bad[:3]))
    delivered = sum(e.get("count", 1) for e in evs if e.get("prefix") == out_prefix)
    check("%s: drop events + summary counts (%d) == nft counter of the drop rules (%d)" % (tag, delivered, counter),
              delivered == counter)
    if mode != "enf":
        delivered_in = sum(e.get("count", 1) for e in evs if e.get("prefix") == in_prefix)
        check("%s: in-direction records (%d) == nft counter of %s (%d)" % (tag, delivered_in, in_prefix, counter_in),
                  delivered_in == counter_in)
    figure("scan %s" % tag, "%d SYNs logged by the kernel (counter), %d drop events, %d drop_summary "
               "(retransmissions folded: %d), agent %s" % (
                   counter, len(drops), len(summaries), sum(e.get("count", 0) for e in summaries), res))


def fresh_metrics(d, timeout=3):
    """Metrics written after this call (the file is rewritten once a second)."""
    try:
        before = d.metrics_path.stat().st_mtime_ns
    except OSError:
        before = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if d.metrics_path.stat().st_mtime_ns != before:
                break
        except OSError:
            pass
        time.sleep(0.05)
    return d.metrics()


def flood_check(h, lab, d, classes, first_port, stopped):
    """UDP flood vdi1 -> vdi2 (denied) over 1000 ports from 8 source ports. stopped: the
    daemon is SIGSTOPped during the flood, so its socket buffer overflows and the kernel
    drops NFLOG messages: the losses must be counted (sequence gaps), not hidden."""
    hv = lab.hv()
    tag = "flood%s" % (" with the daemon SIGSTOPped" if stopped else "")
    c1 = classes["vdi1"]
    prefix = "bh:enf:out:deny:%s" % c1
    g10 = '{group="10"}'
    counter0 = prefix_counter(hv, c1 + "_out", prefix)
    m0 = fresh_metrics(d)
    ev0 = m0.get("bulkhead_enforcer_nflog_events_total" + g10, 0)
    lost0 = m0.get("bulkhead_enforcer_nflog_lost_events_total" + g10, 0)
    enobufs0 = m0.get("bulkhead_enforcer_nflog_enobufs_total", 0)
    mark = d.events.mark()
    src, dst = lab.endpoints["vdi1"], lab.endpoints["vdi2"]
    nports = 1000
    if stopped:
        os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        res = agent(lab, "vdi1", ["flood", src.v4, dst.v4, str(first_port), str(nports),
                                  str(h.args.flood_packets), "--max-seconds", "20"], 40)
    finally:
        if stopped:
            os.kill(d.proc.pid, signal.SIGCONT)
    # One more logged packet after the burst: a loss at the very end of a burst is only
    # counted when the group's next message arrives (enforcer/nflog/README.md).
    tail_port = first_port + nports
    time.sleep(0.2 if stopped else 0)  # let the resumed daemon drain before the tail packet
    agent(lab, "vdi1", ["flood", src.v4, dst.v4, str(tail_port), "1", "1"], 10)
    ports = set(range(first_port, tail_port + 1))
    deadline = time.monotonic() + h.args.repeat_window_ms / 1000.0 + 8
    while True:
        counter = prefix_counter(hv, c1 + "_out", prefix) - counter0
        m = d.metrics()
        delivered = m.get("bulkhead_enforcer_nflog_events_total" + g10, 0) - ev0
        lost = m.get("bulkhead_enforcer_nflog_lost_events_total" + g10, 0) - lost0
        evs = [e for e in d.events.since(mark) if e.get("prefix") == prefix and e.get("proto") == 17
               and e.get("type") in ("drop", "drop_summary") and e.get("dport") in ports]
        recorded = sum(e.get("count", 1) for e in evs)
        if (delivered + lost >= counter and recorded >= delivered) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    enobufs = m.get("bulkhead_enforcer_nflog_enobufs_total", 0) - enobufs0
    firsts = [e for e in evs if e.get("type") == "drop"]
    distinct = {e.get("dport") for e in firsts}
    figure(tag, "%d UDP packets sent in %.2f s (%s pps, %d send errors) to %d ports + 1 tail packet; "
               "kernel logged (nft counter) %d; delivered %d; counted lost %d; enobufs episodes %d; records: "
               "%d drop + %d drop_summary carrying %d packets" % (
                   res["sent"], res["elapsed"], res["pps"], res["errors"], nports, counter, delivered, lost,
                   enobufs, len(firsts), len(evs) - len(firsts), recorded))
    check("%s: the kernel logged it (counter %d, %d sent)" % (tag, counter, res["sent"]), counter > 0)
    check("%s: delivered (%d) + counted lost (%d) >= packets the kernel logged (%d)" % (
                  tag, delivered, lost, counter),
              delivered + lost >= counter)
    check("%s: every delivered event is in a record: sum of counts over drop + drop_summary (%d) == "
              "delivered (%d)" % (tag, recorded, delivered),
              recorded == delivered)
    if delivered < counter:
        check("%s: every undelivered event is counted: lost %d == logged %d - delivered %d, enobufs %d" % (
                      tag, lost, counter, delivered, enobufs),
                  lost == counter - delivered and enobufs > 0)
    if lost == 0:
        check("%s: distinct targets never merged: %d drop events, %d ports + 1 tail" % (
                      tag, len(firsts), nports),
                  len(distinct) == len(firsts) == nports + 1)
    else:
        check("%s: one drop event per distinct target seen (%d events, %d ports)" % (
                      tag, len(firsts), len(distinct)),
                  len(distinct) == len(firsts))


def scenario_drops(h, specs):
    section(SC6)
    lab = EnfLab(h, "s6")
    try:
        lab.build_full()
        hv = lab.hv()
        foreign = ForeignGuard(h, hv)
        rsdir, st = h.new_dir("s6-rs"), h.new_dir("s6-state")
        d, ev = start_with(h, lab, rsdir, st, specs["enforce"], repeat_ms=h.args.repeat_window_ms)
        classes = h.classes(specs["enforce"])
        gen = ev["generation"]
        scan_check(h, lab, d, 4, h.args.scan_ports, 20000, gen, classes)
        h.tick()
        scan_check(h, lab, d, 6, h.args.scan_ports6, 21000, gen, classes)
        h.tick()
        # Monitor mode: would-drops, both ends' chains log.
        ev = switch(h, d, rsdir, specs["monitor"])
        check("monitor ruleset applied (%s)" % (
            (ev or {}).get("mode")), ev is not None and ev.get("type") == "ruleset_applied", ev)
        foreign.verify("switch to monitor mode")
        mclasses = h.classes(specs["monitor"])
        scan_check(h, lab, d, 4, 50, 22000, ev["generation"], mclasses, mode="mon")
        h.tick()
        ev = switch(h, d, rsdir, specs["enforce"])
        gen = ev["generation"]
        foreign.verify("switch back to enforce mode")
        flood_check(h, lab, d, classes, 30000, stopped=False)
        h.tick()
        flood_check(h, lab, d, classes, 40000, stopped=True)
        check("daemon survived the floods", d.alive())
        d.stop()
    finally:
        lab.destroy()


# --------------------------------------------------------------------------- scenario 7

def tripwire_specs(h):
    """The lab policy with its honeypot as a tripwire and automatic quarantine on, except for
    the dev pool (vdi3, vdi4), whose tripwires only log (dry-run guardrail)."""
    doc = copy.deepcopy(h.policy)
    for segment in doc["segments"]:
        if segment["name"] == "honeypot":
            segment["tripwire"] = True
    doc["response"] = {"auto_quarantine": {"mode": "on", "rules": [
        {"segments": ["dev-vdi"], "detectors": ["tripwire"], "mode": "dry-run"}]}}
    policy = h.write_json("policy-tripwire.json", doc)
    inventory = str(rr.HERE / "lab-inventory.json")
    S = rr.Spec
    return {"trip": S("tripwire policy", policy, inventory),
            "trip-q2": S("tripwire policy, vdi-2 quarantined", policy, inventory, ("vdi-2",)),
            "trip-q12": S("tripwire policy, vdi-1 and vdi-2 quarantined", policy, inventory, ("vdi-1", "vdi-2"))}


def set_members(ns, set_name):
    """The interface names in a set of ifnames (nft -j list set)."""
    text = nft_raw(ns, "-j", "list", "set", "inet", "bulkhead", set_name)
    if text is None:
        return None
    for item in json.loads(text)["nftables"]:
        if "set" in item:
            return sorted(e if isinstance(e, str) else json.dumps(e) for e in item["set"].get("elem", []))
    return []


def map_keys(ns, map_name):
    """A verdict map of ifnames as {interface: jump target} (nft -j list map)."""
    text = nft_raw(ns, "-j", "list", "map", "inet", "bulkhead", map_name)
    if text is None:
        return None
    for item in json.loads(text)["nftables"]:
        if "map" in item:
            return {key: verdict["jump"]["target"] for key, verdict in item["map"].get("elem", [])}
    return {}


ONE_DATAGRAM = ("import socket,sys\n"
                "f=socket.AF_INET6 if ':' in sys.argv[2] else socket.AF_INET\n"
                "s=socket.socket(f,socket.SOCK_DGRAM)\n"
                "s.bind((sys.argv[1],0))\n"
                "s.sendto(b'tripwire',(sys.argv[2],int(sys.argv[3])))\n")


def one_datagram(lab, role, src, dst, port):
    """Exactly one UDP packet from `role` (the tripwire's single conclusive packet)."""
    run(["ip", "netns", "exec", lab.ns(role), sys.executable, "-c", ONE_DATAGRAM, src, dst, str(port)])


def scenario_tripwire(h, specs):
    section(SC7)
    lab = EnfLab(h, "s7")
    holders = []
    try:
        lab.build_full()
        hv = lab.hv()
        t = tripwire_specs(h)
        rsdir, st = h.new_dir("s7-rs"), h.new_dir("s7-state")
        d, ev = start_with(h, lab, rsdir, st, t["trip"], drift=3600)
        ok, detail = table_matches(h, hv, t["trip"])
        check("tripwire ruleset applied; kernel table == nft -f oracle (dynset `add @quarantined_ports "
              "{ iifname }` byte-compatible)", ok, detail)
        armed = set_members(hv, "tripwire_ports")
        check("armed ports: vdi1, vdi2, adm1 (dev pool vdi3/vdi4 in dry-run: not armed)",
              armed == ["adm1", "vdi1", "vdi2"], armed)
        check("quarantined_ports empty before the tripwire", set_members(hv, "quarantined_ports") == [])
        classes = h.classes(t["trip"])
        prober = rr.Prober(lab)
        fs, vdi2, decoy = lab.endpoints["fs"], lab.endpoints["vdi2"], lab.endpoints["decoy"]
        # Positive controls: vdi2 reaches the file server (new connection), and holds one.
        for family in (4, 6):
            ok, why = prober.attempt(rr.Row("vdi2", "fs", "tcp", 445, True, []), family)
            check("v%d control before the tripwire: vdi2 -> fs tcp/445 accepted" % family, ok, why)
        p = lab.spawn("vdi2", [sys.executable, LAB_AGENT, "hold", fs.v4, "445", "--bind", vdi2.v4])
        holders.append(p)
        if not (rr.read_line(p, 10) or "").startswith("connected"):
            raise HarnessError("vdi2 cannot open a TCP connection to fs:445")

        def send(token, wait):
            p.stdin.write("send %s %s\n" % (token, wait))
            p.stdin.flush()
            return (rr.read_line(p, wait + 5) or "").split()[:2] == ["echo", token]

        check("vdi2's established connection to fs:445 passes data", send("before", 3))
        c2 = classes["vdi2"]
        trip_prefix = "bh:enf:out:tripwire:%s" % c2
        q_prefix = "bh:enf:out:quarantine:q"
        trip0 = prefix_counter(hv, c2 + "_out_tripwire", trip_prefix)
        q0 = prefix_counter(hv, "quarantine_out", q_prefix)
        mark = d.events.mark()
        # The single conclusive packet: one UDP datagram to the honeypot.
        one_datagram(lab, "vdi2", vdi2.v4, decoy.v4, 137)
        trip1 = prefix_counter(hv, c2 + "_out_tripwire", trip_prefix)
        check("the tripwire rule matched exactly the one packet (counter %d -> %d)" % (trip0, trip1),
              trip1 == trip0 + 1)
        members = set_members(hv, "quarantined_ports")
        check("the kernel itself put vdi2 into quarantined_ports on that packet", members == ["vdi2"], members)
        # The very next packets of vdi2, to a destination it was allowed to reach.
        nexts = {}
        for family in (4, 6):
            nexts[family] = prober.attempt(rr.Row("vdi2", "fs", "tcp", 445, False, []), family)[0]
        q1 = prefix_counter(hv, "quarantine_out", q_prefix)
        check("next packets vdi2 -> fs tcp/445 (v4, v6; accepted before) dropped in the quarantine chain "
              "(counter %d -> %d)" % (q0, q1), not nexts[4] and not nexts[6] and q1 >= q0 + 2, nexts)
        held_through = send("after", 1.5)
        q2 = prefix_counter(hv, "quarantine_out", q_prefix)
        check("the established connection stops passing data (quarantine counter %d -> %d)" % (q1, q2),
              not held_through and q2 > q1)
        _, tev = d.events.wait(lambda e: e.get("type") in ("drop", "drop_summary") and
                               e.get("reason") == "tripwire" and e.get("indev") == "vdi2", mark, 5)
        check("drop event: reason tripwire, workload vdi-2, prefix %s" % trip_prefix,
              tev is not None and tev.get("workload") == "vdi-2" and tev.get("prefix") == trip_prefix, tev)
        _, kev = d.events.wait(lambda e: e.get("type") == "kernel_contained", mark, 5)
        check("event kernel_contained: vdi-2 on vdi2, learnt from the NFLOG message",
              kev is not None and kev.get("workload") == "vdi-2" and kev.get("interface") == "vdi2"
              and kev.get("seen_by") == "nflog", kev)
        ok, detail = table_matches(h, hv, t["trip-q2"])
        check("kernel table == oracle of the same policy with vdi-2 quarantined", ok, detail)
        # Guardrail: vdi3 (dev pool, dry-run) touching the honeypot is only dropped and logged.
        mark3 = d.events.mark()
        one_datagram(lab, "vdi3", lab.endpoints["vdi3"].v4, decoy.v4, 137)
        _, dev = d.events.wait(lambda e: e.get("type") in ("drop", "drop_summary") and
                               e.get("indev") == "vdi3", mark3, 5)
        check("guardrail: vdi3 (tripwire in dry-run) -> honeypot logged as decoy, not contained",
              dev is not None and dev.get("reason") == "decoy" and set_members(hv, "quarantined_ports") == ["vdi2"],
              dev)
        ok, why = prober.attempt(rr.Row("vdi3", "fs", "tcp", 445, True, []), 4)
        check("guardrail: vdi3 still reaches fs tcp/445", ok, why)
        # Drift: the kernel's own addition is not drift; a real drift repair keeps it.
        mark = d.events.mark()
        checks0 = d.metrics().get("bulkhead_enforcer_drift_checks_total", 0)
        os.kill(d.proc.pid, signal.SIGUSR1)
        d.wait_metric("bulkhead_enforcer_drift_checks_total", lambda v: v > checks0, 5)
        check("drift check: the kernel-added port is not drift",
              not any(e.get("type") == "drift_detected" for e in d.events.since(mark)),
              d.events.since(mark))
        elem = first_element_text(hv, "decoys4")
        run(["ip", "netns", "exec", hv, "nft", "delete", "element", "inet", "bulkhead", "decoys4", "{ %s }" % elem])
        os.kill(d.proc.pid, signal.SIGUSR1)
        _, rev = d.events.wait(lambda e: e.get("type") in ("drift_repaired", "drift_repair_failed"), mark, 5)
        ok, detail = table_matches(h, hv, t["trip-q2"])
        check("real drift (element of decoys4 deleted) repaired; vdi2 still quarantined (table == oracle)",
              rev is not None and rev.get("type") == "drift_repaired" and ok, "%s\n%s" % (rev, detail))
        # Restart: the daemon keeps holding the port (state.json), the table is not rewritten.
        d.stop()
        state = json.loads((Path(st) / "state.json").read_text())
        check("state.json records the kernel's containment", state.get("kernel_contained") == ["vdi2"],
              state.get("kernel_contained"))
        # While the daemon is down, vdi1 trips too (over IPv6): the kernel contains it with
        # nobody listening.
        one_datagram(lab, "vdi1", lab.endpoints["vdi1"].v6, decoy.v6, 137)
        check("daemon down: the kernel still contains vdi1 on its IPv6 tripwire",
              set_members(hv, "quarantined_ports") == ["vdi1", "vdi2"], set_members(hv, "quarantined_ports"))
        d = Daemon(h, hv, rsdir, st, drift=3600).start()
        d.wait_running()
        _, kev = d.events.wait(lambda e: e.get("type") == "kernel_contained" and e.get("interface") == "vdi1", 0, 5)
        check("restart: vdi1's containment found by reading the set back and reported (kernel_contained)",
              kev is not None and kev.get("seen_by") == "read-back" and kev.get("workload") == "vdi-1", kev)
        ok, detail = table_matches(h, hv, t["trip-q12"])
        check("restart: both kept (table == oracle with vdi-1 and vdi-2 quarantined)", ok, detail)
        d.stop()
        # Reboot-like: the table is gone; the restore puts the held ports back.
        run(["ip", "netns", "exec", hv, "nft", "delete", "table", "inet", "bulkhead"])
        d = Daemon(h, hv, rsdir, st, drift=3600).start()
        d.wait_running()
        ok, detail = table_matches(h, hv, t["trip-q12"])
        check("table deleted + restart: the restore keeps both held ports", ok, detail)
        ok, _ = prober.attempt(rr.Row("vdi2", "fs", "tcp", 445, False, []), 4)
        check("after the restore vdi2 -> fs tcp/445 still dropped", not ok)
        # Someone else's element for a port no tripwire arms (vdi3) is drift, repaired away.
        mark = d.events.mark()
        run(["ip", "netns", "exec", hv, "nft", "add", "element", "inet", "bulkhead", "quarantined_ports", "{ vdi3 }"])
        os.kill(d.proc.pid, signal.SIGUSR1)
        _, rev = d.events.wait(lambda e: e.get("type") in ("drift_repaired", "drift_repair_failed"), mark, 5)
        members = set_members(hv, "quarantined_ports")
        check("an element added by hand for unarmed vdi3 is drift: repaired, vdi1 and vdi2 kept",
              rev is not None and rev.get("type") == "drift_repaired" and members == ["vdi1", "vdi2"],
              (rev, members))
        # Release: the source takes the quarantines over, then lifts them.
        # (The same elements as in force: an empty diff, so no ruleset_applied, only the adoption.)
        mark = d.events.mark()
        put_ruleset(rsdir, h.compile(t["trip-q12"], "json"))
        d.events.wait(lambda e: e.get("type") == "kernel_containment_adopted" and e.get("interface") == "vdi2",
                      mark, 10)
        adopted = sorted(e.get("interface") for e in d.events.since(mark)
                         if e.get("type") == "kernel_containment_adopted")
        check("the source's quarantine adopts the held ports", adopted == ["vdi1", "vdi2"], adopted)
        ev = switch(h, d, rsdir, t["trip"])
        check("release: diff, 2 elements removed", ev is not None and ev.get("mode") == "diff" and
              ev.get("elements_removed") == 2, ev)
        ok, detail = table_matches(h, hv, t["trip"])
        check("release: table == oracle of the unquarantined ruleset", ok, detail)
        ok, why = prober.attempt(rr.Row("vdi2", "fs", "tcp", 445, True, []), 4)
        check("release: vdi2 -> fs tcp/445 accepted again", ok, why)
        d.stop()
    finally:
        for p in holders:
            lab.stop_process(p)
        lab.destroy()


# --------------------------------------------------------------------------- scenario 8

def scenario_spoof(h, specs):
    section(SC8)
    lab = EnfLab(h, "s8")
    try:
        lab.build_full()
        hv = lab.hv()
        rsdir, st = h.new_dir("s8-rs"), h.new_dir("s8-state")
        d, ev = start_with(h, lab, rsdir, st, specs["enforce"], drift=3600)
        prober = rr.Prober(lab)
        vdi1, vdi2, adm1, fs = (lab.endpoints[k] for k in ("vdi1", "vdi2", "adm1", "fs"))
        # Neighbour discovery through the guard: caches flushed on both ends, then IPv6 works.
        run(["ip", "-n", lab.ns("vdi2"), "-6", "neigh", "flush", "dev", "eth0"])
        run(["ip", "-n", hv, "-6", "neigh", "flush", "dev", "vdi2"])
        for family in (4, 6):
            ok, why = prober.attempt(rr.Row("vdi2", "fs", "tcp", 445, True, []), family)
            check("v%d control: vdi2's own traffic passes the guard (vdi2 -> fs tcp/445; v6 after fresh "
                  "neighbour discovery)" % family, ok, why)
        prefix = "bh:enf:out:spoof:q"
        for what, forged in (("another VDI's address (vdi1)", vdi1.v4), ("the admin terminal's address", adm1.v4),
                             ("another VDI's IPv6 address (vdi1)", vdi1.v6)):
            h.tick()
            before = prefix_counter(hv, "spoof_guard", prefix)
            mark = d.events.mark()
            # A real forged packet: the address is added on vdi2's own interface for one send.
            plen = "128" if ":" in forged else "32"
            run(["ip", "-n", lab.ns("vdi2"), "addr", "add", "%s/%s" % (forged, plen), "dev", "eth0", "nodad"])
            try:
                one_datagram(lab, "vdi2", forged, fs.v6 if ":" in forged else fs.v4, 5000)
            finally:
                run(["ip", "-n", lab.ns("vdi2"), "addr", "del", "%s/%s" % (forged, plen), "dev", "eth0"])
            after = prefix_counter(hv, "spoof_guard", prefix)
            _, sev = d.events.wait(lambda e: e.get("type") in ("drop", "drop_summary") and e.get("reason") == "spoof"
                                   and norm(e.get("src")) == norm(forged), mark, 5)
            check("vdi2 sending from %s: dropped by the spoof guard (counter %d -> %d), logged as spoof, "
                  "workload vdi-2 on vdi2" % (what, before, after),
                  after == before + 1 and sev is not None and sev.get("workload") == "vdi-2"
                  and sev.get("indev") == "vdi2" and sev.get("prefix") == prefix, sev)
        ok, why = prober.attempt(rr.Row("vdi2", "fs", "tcp", 445, True, []), 4)
        check("vdi2's own traffic still passes after the forged packets", ok, why)
        d.stop()
    finally:
        lab.destroy()


# --------------------------------------------------------------------------- scenario 9

FORGE = str(HERE / "forge_frame.py")


def scapy_python():
    """An interpreter that imports scapy (python3-scapy installs it for Debian's python3,
    which need not be the interpreter running this harness)."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        if candidate and os.path.exists(candidate) and subprocess.run(
                [candidate, "-c", "import scapy.all"], capture_output=True).returncode == 0:
            return candidate
    return None


def link_mac(ns, iface):
    return json.loads(run(["ip", "-n", ns, "-j", "link", "show", iface]).stdout)[0]["address"]


def scenario_spoof_mac(h, specs):
    section(SC9)
    python = scapy_python()
    if python is None:
        check("python3-scapy is installed (scripts/install-deps.sh): needed to forge frames", False)
        return
    lab = EnfLab(h, "s9")
    try:
        lab.build_full()
        hv = lab.hv()
        vdi1, vdi2, fs = (lab.endpoints[k] for k in ("vdi1", "vdi2", "fs"))
        own = link_mac(lab.ns("vdi2"), "eth0")
        other_vdi = link_mac(lab.ns("vdi1"), "eth0")
        port = link_mac(hv, "vdi2")  # the hypervisor's end of vdi2's port: the frames' destination
        # The lab's inventory with the MACs its VDIs really have (vdi-3 keeps none: no MAC check).
        doc = copy.deepcopy(h.inventory)
        for w in doc["workloads"]:
            if w["id"] in ("vdi-1", "vdi-2"):
                w["mac"] = link_mac(lab.ns(w["attachment"]["interface"]), "eth0").upper().replace(":", "-")
        spec = rr.Spec("lab policy, inventory with MACs", str(rr.HERE / "lab-policy.json"),
                       h.write_json("inventory-macs.json", doc))
        rsdir, st = h.new_dir("s9-rs"), h.new_dir("s9-state")
        d, ev = start_with(h, lab, rsdir, st, spec, drift=3600)
        ok, detail = table_matches(h, hv, spec)
        check("ruleset with MACs applied; kernel table == nft -f oracle (`iifname . ether saddr @port_macs`, "
              "ether_addr elements byte-compatible)", ok, detail)
        macs = set_members(hv, "mac_guarded_ports")
        check("MAC-checked ports: vdi1, vdi2 (vdi3 has no MAC in the inventory)", macs == ["vdi1", "vdi2"], macs)
        prober = rr.Prober(lab)
        run(["ip", "-n", lab.ns("vdi2"), "-6", "neigh", "flush", "dev", "eth0"])
        run(["ip", "-n", hv, "-6", "neigh", "flush", "dev", "vdi2"])
        for family in (4, 6):
            ok, why = prober.attempt(rr.Row("vdi2", "fs", "tcp", 445, True, []), family)
            check("v%d control: vdi2's own traffic passes the MAC guard (vdi2 -> fs tcp/445; v6 after fresh "
                  "neighbour discovery)" % family, ok, why)
        spoof = "bh:enf:out:spoof:q"
        # The receiver counts what reaches it: a table of its own in the file server's
        # namespace counts the hand-made frames' SYNs (source port 40123), not the resets
        # vdi2's stack answers the SYN-ACKs with.
        srv = lab.ns("srv")
        run(["ip", "netns", "exec", srv, "nft", "-f", "-"], input=(
            "table inet receiver {\n chain pre {\n  type filter hook prerouting priority -300; policy accept;\n"
            "  tcp sport 40123 tcp flags & (syn | ack) == syn counter\n }\n}\n"))

        def received():
            doc = json.loads(run(["ip", "netns", "exec", srv, "nft", "-j", "list", "chain", "inet", "receiver",
                                  "pre"]).stdout)
            return sum(e["counter"]["packets"] for item in doc["nftables"] if "rule" in item
                       for e in item["rule"]["expr"] if isinstance(e, dict) and "counter" in e)

        def counters():
            return (prefix_counter(hv, "spoof_guard_mac", spoof), prefix_counter(hv, "spoof_guard", spoof),
                    received())

        def forge(*args, role="vdi2"):
            run(["ip", "netns", "exec", lab.ns(role), python, FORGE, "eth0"] + list(args), timeout=30)

        def settle(before, index):
            """Counters once counter `index` moved past `before` (deadline 3 s)."""
            deadline = time.monotonic() + 3
            now = counters()
            while now[index] <= before[index] and time.monotonic() < deadline:
                time.sleep(0.02)
                now = counters()
            return now

        # A marker after an honest frame: the same socket's next frame, a SYN from vdi2's own
        # MAC and address, which the receiver counts once the frames before it were handled.
        marker = ["+", own, port, "syn", vdi2.v4, fs.v4, "445"]
        h.tick()
        before = counters()
        forge(own, port, "syn", vdi2.v4, fs.v4, "445")
        after = settle(before, 2)
        check("a hand-made SYN from vdi2's own MAC and address passes the guard and reaches the file server "
              "(receiver's counter %d -> %d, spoof counters unchanged)" % (before[2], after[2]),
              after[2] == before[2] + 1 and after[:2] == before[:2], (before, after))
        # Each forged SYN goes to its own port: a distinct target, so its drop event is not
        # folded into the previous one's repeat summary.
        for what, forged, dport in (("another VDI's MAC (vdi1)", other_vdi, "445"),
                                    ("a made-up MAC", "02:00:00:00:be:ef", "3389")):
            for family in (4, 6):
                h.tick()
                before = counters()
                mark = d.events.mark()
                src, dst = (vdi2.v4, fs.v4) if family == 4 else (vdi2.v6, fs.v6)
                forge(forged, port, "syn", src, dst, dport, *marker)
                after = settle(before, 2)
                _, sev = d.events.wait(lambda e: e.get("type") in ("drop", "drop_summary") and
                                       e.get("reason") == "spoof" and (e.get("src_mac") or "").lower() == forged,
                                       mark, 5)
                check("v%d: vdi2 sending from %s (its own address): dropped by the MAC guard (counter %d -> %d), "
                      "never reaches the file server (only the marker does), logged as spoof with that MAC, "
                      "workload vdi-2" % (family, what, before[0], after[0]),
                      after[0] == before[0] + 1 and after[2] == before[2] + 1 and sev is not None
                      and sev.get("workload") == "vdi-2" and sev.get("prefix") == spoof, (before, after, sev))
        # DHCP: a client without an address asks from 0.0.0.0 with its own MAC.
        before = counters()
        forge(own, "-", "dhcp", *marker)
        after = settle(before, 2)
        check("DHCP discover from 0.0.0.0 with vdi2's own MAC passes the guard (spoof counters unchanged; "
              "the marker after it arrived)", after[2] == before[2] + 1 and after[:2] == before[:2], (before, after))
        before = counters()
        forge(other_vdi, "-", "dhcp", *marker)
        after = settle(before, 2)
        check("DHCP discover from 0.0.0.0 with vdi1's MAC on vdi2's port: dropped by the MAC guard "
              "(counter %d -> %d)" % (before[0], after[0]), after[0] == before[0] + 1, (before, after))
        # IPv6 duplicate address detection from :: with its own MAC.
        before = counters()
        forge(own, "-", "dad", vdi2.v6, *marker)
        after = settle(before, 2)
        check("IPv6 DAD (neighbour solicitation from ::) with vdi2's own MAC: not a spoof (counters unchanged; "
              "the marker after it arrived)", after[2] == before[2] + 1 and after[:2] == before[:2], (before, after))
        # A port whose workload has no MAC in the inventory is not MAC-checked.
        vdi3 = lab.endpoints["vdi3"]
        before = counters()
        forge("02:00:00:00:33:33", link_mac(hv, "vdi3"), "syn", vdi3.v4, fs.v4, "445", role="vdi3")
        after = settle(before, 2)
        check("vdi3 (no MAC in the inventory) sending from another MAC is not MAC-checked: it reaches the file "
              "server (receiver's counter %d -> %d)" % (before[2], after[2]),
              after[2] == before[2] + 1 and after[0] == before[0], (before, after))
        run(["ip", "-n", lab.ns("vdi2"), "-6", "neigh", "flush", "dev", "eth0"])
        for family in (4, 6):
            ok, why = prober.attempt(rr.Row("vdi2", "fs", "tcp", 445, True, []), family)
            check("v%d: vdi2's own traffic still passes after the forged frames" % family, ok, why)
        d.stop()
    finally:
        lab.destroy()


# --------------------------------------------------------------------------- scenario 10

def host_tripwire_specs(h):
    """The lab with the hypervisor as a host-mode workload of its own (hv-self, on the uplink)
    whose tripwire is telnet (tcp/udp 23) from the EDR server's addresses (edr-1, an
    unmanaged workload of the inventory) or the file server (fs-1, critical: spared); SSH
    from the EDR server is allowed (the positive control). Automatic quarantine on."""
    policy = copy.deepcopy(h.policy)
    policy["services"].append({"name": "telnet", "entries": [{"protocol": "tcp", "ports": [23]},
                                                            {"protocol": "udp", "ports": [23]}]})
    policy["segments"].append({"name": "hypervisors", "selector": {"labels": {"role": "hypervisor"}}})
    policy["rules"] += [
        {"name": "edr-ssh-to-hv", "action": "allow", "from": ["edr"], "to": ["hypervisors"], "services": ["ssh"]},
        {"name": "no-telnet-to-hv", "action": "deny", "from": ["edr", "file-servers"], "to": ["hypervisors"],
         "services": ["telnet"], "tripwire": True}]
    policy["response"] = {"auto_quarantine": {"mode": "on"}}
    inventory = copy.deepcopy(h.inventory)
    uplink4, uplink6 = rr.UPLINK4.split("/")[0], rr.UPLINK6.split("/")[0]
    inventory["workloads"] += [
        {"id": "hv-self", "enforcer": ENFORCER_ID, "addresses": [uplink4, uplink6],
         "labels": {"role": "hypervisor"}, "attachment": {"mode": "host", "interfaces": ["uplink"]}},
        {"id": "edr-1", "addresses": list(rr.EDR), "labels": {"role": "edr-server"}}]
    p = h.write_json("policy-host-tripwire.json", policy)
    i = h.write_json("inventory-host-tripwire.json", inventory)
    S = rr.Spec
    return {"trip": S("host-mode tripwire", p, i),
            "trip-q": S("host-mode tripwire, edr-1 quarantined", p, i, ("edr-1",))}


def scenario_host_tripwire(h, specs):
    section(SC10)
    lab = EnfLab(h, "s10")
    holders = []
    try:
        lab.build_full()
        hv = lab.hv()
        t = host_tripwire_specs(h)
        rsdir, st = h.new_dir("s10-rs"), h.new_dir("s10-state")
        d, ev = start_with(h, lab, rsdir, st, t["trip"], drift=3600)
        ok, detail = table_matches(h, hv, t["trip"])
        check("host-mode tripwire ruleset applied; kernel table == nft -f oracle (`add @blocked_sources4 "
              "{ ip saddr }` byte-compatible)", ok, detail)
        armed = map_keys(hv, "host_tripwires")
        check("armed: the uplink of hv-self (host mode), into its class's inbound tripwires",
              armed == {"uplink": h.classes(t["trip"])["uplink"] + "_in_tripwire"}, armed)
        check("blocked_sources4/6 empty before the tripwire",
              set_members(hv, "blocked_sources4") == [] and set_members(hv, "blocked_sources6") == [])
        cls = h.classes(t["trip"])["uplink"]
        prober = rr.Prober(lab)
        edr, fs, me = lab.endpoints["edr"], lab.endpoints["fs"], lab.endpoints["hv"]
        for family in (4, 6):
            ok, why = prober.attempt(rr.Row("edr", "hv", "tcp", 22, True, []), family)
            check("v%d control before the tripwire: edr -> hv tcp/22 accepted" % family, ok, why)
        p = lab.spawn("srv", [sys.executable, LAB_AGENT, "hold", me.v4, "22", "--bind", edr.v4])
        holders.append(p)
        if not (rr.read_line(p, 10) or "").startswith("connected"):
            raise HarnessError("edr cannot open a TCP connection to hv:22")

        def send(token, wait):
            p.stdin.write("send %s %s\n" % (token, wait))
            p.stdin.flush()
            return (rr.read_line(p, wait + 5) or "").split()[:2] == ["echo", token]

        check("edr's established connection to hv:22 passes data", send("before", 3))
        trip_prefix = "bh:enf:in:tripwire:%s" % cls
        block_prefix = "bh:enf:in:quarantine:q"
        trip0 = prefix_counter(hv, cls + "_in_tripwire", trip_prefix)
        b0 = prefix_counter(hv, "blocked_source", block_prefix)
        mark = d.events.mark()
        one_datagram(lab, "srv", edr.v4, me.v4, 23)
        trip1 = prefix_counter(hv, cls + "_in_tripwire", trip_prefix)
        check("the tripwire rule matched exactly the one packet (counter %d -> %d)" % (trip0, trip1),
              trip1 == trip0 + 1)
        members = set_members(hv, "blocked_sources4")
        check("the kernel itself put edr's IPv4 address into blocked_sources4 on that packet",
              members == [edr.v4], members)
        ok4, _ = prober.attempt(rr.Row("edr", "hv", "tcp", 22, False, []), 4)
        b1 = prefix_counter(hv, "blocked_source", block_prefix)
        check("next packets edr -> hv tcp/22 over IPv4 (accepted before) dropped as a blocked source "
              "(counter %d -> %d)" % (b0, b1), not ok4 and b1 > b0)
        held_through = send("after", 1.5)
        b2 = prefix_counter(hv, "blocked_source", block_prefix)
        check("the established connection stops passing data (counter %d -> %d)" % (b1, b2),
              not held_through and b2 > b1)
        ok6, why = prober.attempt(rr.Row("edr", "hv", "tcp", 22, True, []), 6)
        check("its IPv6 address is another sender: still accepted until it trips", ok6, why)
        _, tev = d.events.wait(lambda e: e.get("type") in ("drop", "drop_summary") and
                               e.get("reason") == "tripwire" and norm(e.get("src")) == norm(edr.v4), mark, 5)
        check("drop event: reason tripwire, direction in, prefix %s, attributed to the server hv-self" % trip_prefix,
              tev is not None and tev.get("prefix") == trip_prefix and tev.get("workload") == "hv-self", tev)
        _, kev = d.events.wait(lambda e: e.get("type") == "kernel_contained", mark, 5)
        check("event kernel_contained: source %s, set blocked_sources4, learnt from the NFLOG message, no "
              "workload (the server is not what is contained)" % edr.v4,
              kev is not None and norm(kev.get("source")) == norm(edr.v4) and kev.get("set") == "blocked_sources4"
              and kev.get("seen_by") == "nflog" and "workload" not in kev, kev)
        mark = d.events.mark()
        one_datagram(lab, "srv", edr.v6, me.v6, 23)
        members6 = set_members(hv, "blocked_sources6")
        check("IPv6: one datagram to udp/23 puts edr's IPv6 address into blocked_sources6",
              members6 is not None and [norm(m) for m in members6] == [norm(edr.v6)], members6)
        ok6, _ = prober.attempt(rr.Row("edr", "hv", "tcp", 22, False, []), 6)
        check("next packets edr -> hv tcp/22 over IPv6 dropped", not ok6)
        # Guardrail: the file server is critical: its telnet is a deny drop, it is not blocked.
        mark = d.events.mark()
        one_datagram(lab, "srv", fs.v4, me.v4, 23)
        _, fev = d.events.wait(lambda e: e.get("type") in ("drop", "drop_summary") and
                               norm(e.get("src")) == norm(fs.v4), mark, 5)
        check("guardrail: fs-1 (critical) -> hv udp/23 logged as deny, not blocked",
              fev is not None and fev.get("reason") == "deny" and set_members(hv, "blocked_sources4") == [edr.v4],
              fev)
        # Drift: the kernel's additions are not drift; a real drift repair keeps them.
        mark = d.events.mark()
        checks0 = d.metrics().get("bulkhead_enforcer_drift_checks_total", 0)
        os.kill(d.proc.pid, signal.SIGUSR1)
        d.wait_metric("bulkhead_enforcer_drift_checks_total", lambda v: v > checks0, 5)
        check("drift check: the kernel-added addresses are not drift",
              not any(e.get("type") == "drift_detected" for e in d.events.since(mark)), d.events.since(mark))
        elem = first_element_text(hv, "decoys4")
        run(["ip", "netns", "exec", hv, "nft", "delete", "element", "inet", "bulkhead", "decoys4", "{ %s }" % elem])
        os.kill(d.proc.pid, signal.SIGUSR1)
        _, rev = d.events.wait(lambda e: e.get("type") in ("drift_repaired", "drift_repair_failed"), mark, 5)
        ok, detail = table_matches(h, hv, t["trip-q"])
        check("real drift repaired; edr still blocked (table == oracle with edr-1 quarantined)",
              rev is not None and rev.get("type") == "drift_repaired" and ok, "%s\n%s" % (rev, detail))
        d.stop()
        state = json.loads((Path(st) / "state.json").read_text())
        blocked = sorted(norm(a) for a in state.get("kernel_blocked_sources", []))
        check("state.json records the blocked senders", blocked == sorted(norm(a) for a in rr.EDR), blocked)
        run(["ip", "netns", "exec", hv, "nft", "delete", "table", "inet", "bulkhead"])
        d = Daemon(h, hv, rsdir, st, drift=3600).start()
        d.wait_running()
        ok, detail = table_matches(h, hv, t["trip-q"])
        check("table deleted + restart: the restore keeps both blocked addresses", ok, detail)
        ok, _ = prober.attempt(rr.Row("edr", "hv", "tcp", 22, False, []), 4)
        check("after the restore edr -> hv tcp/22 still dropped", not ok)
        # Release: the source takes the block over (edr-1 quarantined), then lifts it.
        mark = d.events.mark()
        put_ruleset(rsdir, h.compile(t["trip-q"], "json"))
        deadline = time.monotonic() + 10
        while True:  # both adoptions come from the same apply
            adopted = sorted(norm(e.get("source")) for e in d.events.since(mark)
                             if e.get("type") == "kernel_containment_adopted")
            if len(adopted) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        check("the source's quarantine of edr-1 adopts both held addresses",
              adopted == sorted(norm(a) for a in rr.EDR), adopted)
        ev = switch(h, d, rsdir, t["trip"])
        check("release: diff, 2 elements removed", ev is not None and ev.get("mode") == "diff" and
              ev.get("elements_removed") == 2, ev)
        ok, detail = table_matches(h, hv, t["trip"])
        check("release: table == oracle of the unquarantined ruleset", ok, detail)
        for family in (4, 6):
            ok, why = prober.attempt(rr.Row("edr", "hv", "tcp", 22, True, []), family)
            check("v%d release: edr -> hv tcp/22 accepted again" % family, ok, why)
        d.stop()
    finally:
        for p in holders:
            lab.stop_process(p)
        lab.destroy()


# --------------------------------------------------------------------------- feature probe, main

def probe_features(args):
    if sys.platform != "linux":
        raise rr.SkipTest("not Linux")
    if os.geteuid() != 0:
        raise rr.SkipTest("needs root (network namespaces, nftables)")
    for tool in ("ip", "nft", "ping"):
        if shutil.which(tool) is None:
            raise rr.SkipTest("`%s` not found in PATH" % tool)
    rr.probe_features(args)  # netns, veth, nftables sets/conntrack/log, NFLOG


def leftovers(h):
    mine = "%s%d-" % (PREFIX, os.getpid())
    ns = [n for n in rr.list_netns() if n.startswith(mine)]
    procs = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(h.tmp).encode() in c for c in cmd) and any(b"bulkhead-enforcer" in c for c in cmd):
            procs.append(int(p.name))
    return ns, procs


def main():
    global PREFIX
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--enforcer", required=True, help="path of the bulkhead-enforcer binary")
    ap.add_argument("--bulkheadctl", required=True, help="path of the bulkheadctl binary")
    ap.add_argument("--only", default="", help="comma-separated scenarios to run: 1,2,3,4,5a,5b,5c,5d,5e,6,7,8,9,10")
    ap.add_argument("--ns-prefix", default=PREFIX,
                    help="prefix of namespaces and the temp dir (default %s; runs beside other labs use their own)"
                    % PREFIX)
    ap.add_argument("-v", "--verbose", action="store_true", help="print every passing check too")
    ap.add_argument("--time-limit", type=float, default=420, help="abort (and clean up) after S seconds")
    ap.add_argument("--kill-trials", type=int, default=10)
    ap.add_argument("--big-vdis", type=int, default=8000, help="extra VDIs of the large ruleset (5a)")
    ap.add_argument("--scan-ports", type=int, default=300)
    ap.add_argument("--scan-ports6", type=int, default=100)
    ap.add_argument("--flood-packets", type=int, default=100000)
    ap.add_argument("--repeat-window-ms", type=int, default=3000,
                    help="the daemon's repeat window in scenario 6 (> the 1 s SYN retransmission)")
    ap.add_argument("--known-bug", action="append", metavar="ID",
                    default=[b for b in os.environ.get("BULKHEAD_ENFIT_KNOWN_BUGS", "").split(",") if b],
                    help="list checks that expose this reported daemon bug as XFAIL instead of failing; also "
                         "env BULKHEAD_ENFIT_KNOWN_BUGS=ID,ID (IDs: %s)" % ", ".join(sorted(KNOWN_BUGS)))
    ap.add_argument("--inject-failure", choices=["expectation", "crash", "hang"],
                    default=os.environ.get("BULKHEAD_ENFIT_INJECT_FAILURE") or None,
                    help="fail on purpose in scenario 1 (to check the cleanup)")
    args = ap.parse_args()
    PREFIX = args.ns_prefix
    for path in (args.enforcer, args.bulkheadctl):
        if not os.access(path, os.X_OK):
            log("error: not executable: %s" % path)
            return 2
    args.enforcer = os.path.abspath(args.enforcer)
    args.bulkheadctl = os.path.abspath(args.bulkheadctl)

    def on_signal(signum, _frame):
        raise Interrupted("signal %d" % signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        probe_features(args)
    except rr.SkipTest as e:
        log("SKIP: %s" % e)
        return SKIP
    except Interrupted as e:
        log("interrupted (%s) during the feature probe" % e)
        return 2
    # Namespaces / temp dirs of earlier runs that were SIGKILLed (their pid is gone).
    for name in rr.list_netns():
        m = re.match(r"^%s(\d+)-" % re.escape(PREFIX), name)
        if m and int(m.group(1)) != os.getpid() and not rr.pid_alive(int(m.group(1))):
            log("sweeping stale namespace %s" % name)
            rr.delete_netns(name)
    for path in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        m = re.match(r"^%s(\d+)-" % re.escape(PREFIX), path.name)
        if m and path.is_dir() and not rr.pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)

    h = Harness(args)
    cleaned = []

    def cleanup():
        if cleaned:
            return
        cleaned.append(True)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        h.cleanup()
        ns, procs = leftovers(h)
        log("cleanup: %s; %s" % ("namespaces removed" if not ns else "namespaces LEFT: %s" % ns,
                                 "no daemon left" if not procs else "daemons LEFT: %s" % procs))

    atexit.register(cleanup)
    started = time.monotonic()
    log("bulkhead-enforcer kernel tests: namespaces %s%d-*, temp %s" % (PREFIX, h.pid, h.tmp))
    scenarios = [("1", scenario_apply), ("2", scenario_diffs), ("3", scenario_quarantine),
                 ("4", scenario_coexistence), ("5a", scenario_kill), ("5b", scenario_reboot),
                 ("5c", scenario_drift), ("5d", scenario_corrupt), ("5e", scenario_invalid),
                 ("6", scenario_drops), ("7", scenario_tripwire), ("8", scenario_spoof),
                 ("9", scenario_spoof_mac), ("10", scenario_host_tripwire)]
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    code = 0
    try:
        specs = make_specs(h)
        harness.SECTIONS.setdefault(SC4, {"passed": 0, "failed": 0})
        for key, fn in scenarios:
            if only and key not in only:
                continue
            t = time.monotonic()
            try:
                h.tick()
                fn(h, specs)
            except (HarnessError, OSError, subprocess.SubprocessError, KeyError, ValueError, TypeError,
                    AttributeError, IndexError) as e:
                scenario_error("%s: %s" % (type(e).__name__, e))
                if args.verbose or not isinstance(e, HarnessError):
                    traceback.print_exc()
                if "time limit" in str(e):
                    break
            log("  (scenario %s took %.1f s)" % (key, time.monotonic() - t))
        figure("foreign table checks", "%d operations (apply, diff, repair, restore, kill, rejection) "
               "across all scenarios" % h.foreign_ops, section=SC4)
    except Interrupted as e:
        log("\nINTERRUPTED (%s): tearing everything down" % e)
        code = 2
    finally:
        cleanup()
    for where, text in ERRORS.items():
        log("ERROR in scenario %s: %s" % (where, text.split("\n")[0][:300]))
    log("total time %.0f s" % (time.monotonic() - started))
    failed = report()
    if code == 0:
        code = 1 if failed else (2 if ERRORS else 0)
    log("result: %s" % {0: "PASS", 1: "FAIL", 2: "ERROR"}.get(code, code))
    return code


if __name__ == "__main__":
    sys.exit(main())
