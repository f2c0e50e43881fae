#!/usr/bin/env python3
"""Test of examples/lab/lab.py: the raw namespace topology, lab.json, up/down life cycle.

Runs beside a demo lab: its own --prefix (bhl<pid>-), --state-dir (a temp dir), --mgmt-net
and API port.  Phases:

1. `up --no-controller --no-enforcers`; lab.json against the namespaces, interfaces,
   addresses and MACs really present and against the inventory; the root namespace holds
   only the mgmt veth ends (link-scoped /32s, no IPv6, no default route); `status` is
   healthy; a second `up` refuses (exit 3) and leaves the lab alone.
2. Connectivity without any Bulkhead ruleset, IPv4 and IPv6, ping and TCP: VDI->VDI on the
   same and on the other hypervisor, VDI->file server (SMB, DNS address), VDI->EDR,
   VDI->decoy, admin->VDI (RDP, SSH); hypervisor->controller address over mgmt; and a VDI
   must NOT reach the controller address (no forwarding into the root namespace).
3. `down`: nothing with the prefix is left (namespaces, root links, processes); `down`
   again is a no-op.
4. Processes, with stand-ins for the controller and the enforcer (fake_*.py): `up` makes
   the CA/certs/tokens, starts the controller in the root namespace, gets enrollment tokens
   from its API, starts one enforcer per hypervisor namespace which enrolls over TLS on the
   mgmt network; pid files, lab.json, `status`; a dead enforcer makes `status` exit 1;
   `down` stops everything (one enforcer ignores SIGTERM: SIGKILL after --stop-timeout).
5. Failed `up`s clean up: --inject-failure topology, and a controller that never answers
   (and ignores SIGTERM); then `down` is a no-op.

Exit codes: 0 pass, 1 a check failed, 2 harness error, 77 skipped (not root, no netns...).
"""

import argparse
import ipaddress
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from harness import check, free_port, list_netns, log, poll, report  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LAB = REPO / "examples" / "lab" / "lab.py"
INVENTORY = REPO / "examples" / "lab" / "inventory.json"
SKIP = 77


class Failed(Exception):
    pass


def run(cmd, timeout=60, input=None, env=None):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, env=env)
    except subprocess.TimeoutExpired as e:
        raise Failed("timed out after %ss: %s" % (timeout, " ".join(map(str, cmd)))) from e


def root_links(prefix):
    p = run(["ip", "-j", "link", "show"])
    return sorted(l["ifname"] for l in json.loads(p.stdout or "[]") if l["ifname"].startswith(prefix))


def procs_mentioning(text):
    """Pids whose command line contains text (the unique state directory)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            found.append((int(d.name), cmd.strip()))
    return found


def pick_mgmt_net():
    """A /24 in 10.255.0.0/16 that nothing in the root namespace routes (not the demo's)."""
    routes = json.loads(run(["ip", "-j", "route", "show", "table", "all"]).stdout or "[]")
    used = []
    for r in routes:
        dst = r.get("dst", "")
        if dst and dst != "default" and ":" not in dst:
            try:
                used.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
            except ValueError:
                pass
    for third in [100 + (os.getpid() + i) % 150 for i in range(150)]:
        net = ipaddress.ip_network("10.255.%d.0/24" % third)
        if not any(u.overlaps(net) and u.prefixlen > 0 for u in used):
            return str(net)
    raise Failed("no free 10.255.x.0/24 for the management network")


class LabTest:
    def __init__(self, args):
        self.args = args
        self.prefix = "bhl%d-" % os.getpid()
        self.tmp = Path(tempfile.mkdtemp(prefix="bhlab-test-"))
        self.state = self.tmp / "state"
        self.mgmt_net = pick_mgmt_net()
        self.api_port = free_port()
        self.servers = []
        self.inventory = json.loads(INVENTORY.read_text())
        # Stand-ins run through wrappers, so file modes in the checkout do not matter.
        self.fake_controller = self.wrapper("fake-controller", HERE / "fake_controller.py")
        self.fake_enforcer = self.wrapper("fake-enforcer", HERE / "fake_enforcer.py")

    def wrapper(self, name, script):
        path = self.tmp / name
        path.write_text("#!/bin/sh\nexec %s %s \"$@\"\n" % (sys.executable, script))
        path.chmod(0o755)
        return str(path)

    def lab(self, *argv, timeout=90, env=None):
        cmd = [sys.executable, str(LAB)] + list(argv[:1]) + ["--prefix", self.prefix, "--state-dir",
                                                                str(self.state)] + list(argv[1:])
        e = dict(os.environ)
        e.pop("BULKHEAD_LAB_INJECT_FAILURE", None)
        e.update(env or {})
        p = run(cmd, timeout=timeout, env=e)
        if self.args.verbose or p.returncode not in (0, 3):
            log("    $ lab.py %s -> %d\n%s%s" % (" ".join(argv), p.returncode,
                                                  indent(p.stdout), indent(p.stderr)))
        return p

    def up_args(self, *extra):
        return ["up", "--mgmt-net", self.mgmt_net, "--api-listen", "127.0.0.1:%d" % self.api_port] + list(extra)

    def ns(self, short):
        return self.prefix + short

    def nothing_left(self, what):
        left_ns, left_links = list_netns(self.prefix), root_links(self.prefix)
        left_procs = procs_mentioning(str(self.state))
        check("%s: no namespace with prefix %s left" % (what, self.prefix), not left_ns, left_ns)
        check("%s: no root-namespace link with the prefix left" % what, not left_links, left_links)
        check("%s: no process of this lab left" % what, not left_procs, left_procs)
        pidfiles = list(self.state.glob("**/*.pid")) if self.state.exists() else []
        check("%s: no pid file left" % what, not pidfiles, pidfiles)
        check("%s: lab.json removed" % what, not (self.state / "lab.json").exists())

    # ------------------------------------------------------------------ phase 1
    def phase_topology(self):
        log("phase 1: up --no-controller --no-enforcers, lab.json vs the kernel")
        p = self.lab(*self.up_args("--no-controller", "--no-enforcers"))
        if not check("up --no-controller --no-enforcers exits 0", p.returncode == 0, p.stderr[-2000:]):
            raise Failed("up failed")
        doc = json.loads((self.state / "lab.json").read_text())
        self.doc = doc
        check("lab.json: format and state up", doc.get("format") == "bulkhead-lab/1" and doc.get("state") == "up")
        present = list_netns(self.prefix)
        described = sorted(n["name"] for n in doc["namespaces"])
        check("lab.json names exactly the namespaces present (%d)" % len(present), present == described,
                  "present %s\ndescribed %s" % (present, described))
        roles = {}
        for n in doc["namespaces"]:
            roles.setdefault(n["role"], []).append(n)
        hvs = roles.get("hypervisor", [])
        check("two hypervisor namespaces", len(hvs) == 2, [n["name"] for n in hvs])
        for hv in hvs:
            vdis = [n for n in doc["namespaces"] if n["hypervisor"] == hv["hypervisor"] and n["role"] == "vdi"]
            check("%s has >= 3 VDI namespaces" % hv["name"], len(vdis) >= 3, [v["name"] for v in vdis])
        for role in ("file-server", "admin-terminal", "decoy", "edr", "router"):
            check("namespace with role %s exists" % role, role in roles)
        # Every interface and address lab.json describes is in the kernel.
        bad = []
        for n in doc["namespaces"]:
            have = {l["ifname"]: l for l in json.loads(run(["ip", "-j", "-n", n["name"], "addr"]).stdout)}
            for i in n["interfaces"]:
                link = have.get(i["name"])
                if link is None:
                    bad.append("%s: no %s" % (n["name"], i["name"]))
                    continue
                addrs = ["%s/%d" % (a["local"], a["prefixlen"]) for a in link.get("addr_info", [])]
                bad += ["%s %s: no %s" % (n["name"], i["name"], a) for a in i["addresses"] if a not in addrs]
                if i.get("mac") and link.get("address") != i["mac"]:
                    bad.append("%s %s: mac %s != %s" % (n["name"], i["name"], link.get("address"), i["mac"]))
                if i["name"] != "lo" and "UP" not in link.get("flags", []):
                    bad.append("%s %s: down" % (n["name"], i["name"]))
        check("every interface, address and MAC of lab.json is in its namespace", not bad, "\n".join(bad))
        # Workloads: the inventory's ids, addresses, MACs and port interfaces.
        inv = {w["id"]: w for w in self.inventory["workloads"]}
        got = {w["id"]: w for w in doc["workloads"]}
        check("lab.json workloads == inventory workloads", sorted(inv) == sorted(got), (sorted(inv), sorted(got)))
        bad = []
        for wid, w in inv.items():
            g = got.get(wid)
            if not g:
                continue
            if sorted(g["addresses"]) != sorted(w["addresses"]):
                bad.append("%s: addresses %s" % (wid, g["addresses"]))
            ns_links = {l["ifname"]: l for l in json.loads(run(["ip", "-j", "-n", g["namespace"], "addr"]).stdout)}
            eth0 = ns_links.get("eth0", {})
            eth0_addrs = [a["local"] for a in eth0.get("addr_info", [])]
            bad += ["%s: %s not on eth0" % (wid, a) for a in w["addresses"]
                    if str(ipaddress.ip_address(a)) not in [str(ipaddress.ip_address(x)) for x in eth0_addrs]]
            if w.get("mac") and eth0.get("address") != w["mac"].lower():
                bad.append("%s: eth0 mac %s" % (wid, eth0.get("address")))
            if w.get("attachment"):
                hv_ns = self.ns(w["enforcer"])
                if g["hypervisor"] != w["enforcer"]:
                    bad.append("%s: hypervisor %s" % (wid, g["hypervisor"]))
                hv_links = [l["ifname"] for l in json.loads(run(["ip", "-j", "-n", hv_ns, "link"]).stdout)]
                if w["attachment"]["interface"] not in hv_links:
                    bad.append("%s: no port %s in %s" % (wid, w["attachment"]["interface"], hv_ns))
        check("workloads: addresses, MACs and port interfaces as in the inventory", not bad, "\n".join(bad))
        # The root namespace: only the mgmt veth ends, /32 link routes, no IPv6, no default route.
        links = root_links(self.prefix)
        expect = sorted(r["name"] for r in doc["mgmt"]["root_interfaces"])
        check("root namespace: exactly the mgmt links %s" % expect, links == expect and len(links) == 2, links)
        addrs = json.loads(run(["ip", "-j", "addr", "show"]).stdout)
        bad = []
        ctl = doc["mgmt"]["controller_address"]
        for l in addrs:
            if l["ifname"] in links:
                for a in l.get("addr_info", []):
                    if a["family"] != "inet" or a["local"] != ctl or a["prefixlen"] != 32:
                        bad.append("%s: %s/%s" % (l["ifname"], a["local"], a["prefixlen"]))
        check("root links carry only %s/32 (no IPv6, not even link-local)" % ctl, not bad, bad)
        routes = json.loads(run(["ip", "-j", "route", "show", "table", "all"]).stdout)
        routes += json.loads(run(["ip", "-j", "-6", "route", "show", "table", "all"]).stdout)
        bad = [r for r in routes if r.get("dev") in links and r.get("type", "unicast") == "unicast"
               and (r.get("gateway") or r.get("scope") != "link"
                    or "/" in r.get("dst", "default") and not r["dst"].endswith("/32"))]
        check("root namespace: no default or gateway route through the lab's links", not bad, bad)
        p = self.lab("status")
        check("status exits 0 and reports ok", p.returncode == 0 and "health: ok" in p.stdout, p.stdout[-1500:])
        p = self.lab("status", "--json")
        try:
            h = json.loads(p.stdout)["health"]
        except (ValueError, KeyError):
            h = {}
        check("status --json: health ok", h.get("ok") is True, p.stdout[-500:])
        before = list_netns(self.prefix)
        p = self.lab(*self.up_args("--no-controller", "--no-enforcers"))
        check("a second up refuses with exit 3", p.returncode == 3, p.returncode)
        check("... and leaves the running lab alone",
                  list_netns(self.prefix) == before and (self.state / "lab.json").exists())

    # ------------------------------------------------------------------ phase 2
    def start_server(self, short, ports):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(short), sys.executable, str(HERE / "agent.py"),
                              "serve", ",".join(map(str, ports))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.servers.append(p)
        box = []
        t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
        t.start()
        t.join(15)
        if not box or box[0].strip() != "ready":
            raise Failed("echo server in %s did not start: %r %s" % (short, box, p.stderr.read() if p.poll() is not None else ""))

    def stop_servers(self):
        for p in self.servers:
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
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=5)
        self.servers = []

    def addr(self, short, family, index=0):
        n = next(n for n in self.doc["namespaces"] if n["short"] == short)
        return [a for a in n["addresses"] if (":" in a) == (family == 6)][index]

    def ping(self, src, dst_addr, expect=True):
        """Polls: up to 5 pings of 1 s each until one answers (first packets resolve neighbours)."""
        def once():
            return run(["ip", "netns", "exec", self.ns(src), "ping", "-n", "-c1", "-W1", dst_addr],
                       timeout=10).returncode == 0
        if expect:
            return poll(once, 5, interval=0.1)
        return once()

    def tcp(self, src, dst_addr, port):
        def once():
            return run(["ip", "netns", "exec", self.ns(src), sys.executable, str(HERE / "agent.py"), "probe",
                        dst_addr, str(port), "2"], timeout=15).returncode == 0
        return poll(once, 6, interval=0.1)

    def phase_connectivity(self):
        log("phase 2: connectivity of the raw topology (no Bulkhead ruleset), IPv4 and IPv6")
        for short, ports in (("vdi-001", [22, 3389]), ("vdi-002", [3389]), ("vdi-101", [3389]),
                             ("vdi-103", [22]), ("fs-01", [445, 53]), ("edr", [443]), ("decoy", [445])):
            self.start_server(short, ports)
        checks = []
        for fam in (4, 6):
            a = lambda s, i=0: self.addr(s, fam, i)
            checks += [
                ("v%d ping vdi-001 -> vdi-002 (same hypervisor)" % fam, lambda f=fam: self.ping("vdi-001", self.addr("vdi-002", f))),
                ("v%d ping vdi-001 -> vdi-101 (other hypervisor)" % fam, lambda f=fam: self.ping("vdi-001", self.addr("vdi-101", f))),
                ("v%d ping vdi-102 -> vdi-003 (other hypervisor)" % fam, lambda f=fam: self.ping("vdi-102", self.addr("vdi-003", f))),
                ("v%d ping vdi-003 -> fs-01" % fam, lambda f=fam: self.ping("vdi-003", self.addr("fs-01", f))),
                ("v%d ping vdi-101 -> decoy" % fam, lambda f=fam: self.ping("vdi-101", self.addr("decoy", f))),
                ("v%d ping adm-01 -> vdi-102" % fam, lambda f=fam: self.ping("adm-01", self.addr("vdi-102", f))),
                ("v%d tcp vdi-001 -> vdi-002:3389 (same hypervisor)" % fam, lambda f=fam: self.tcp("vdi-001", self.addr("vdi-002", f), 3389)),
                ("v%d tcp vdi-003 -> vdi-101:3389 (other hypervisor)" % fam, lambda f=fam: self.tcp("vdi-003", self.addr("vdi-101", f), 3389)),
                ("v%d tcp vdi-102 -> fs-01:445 (SMB)" % fam, lambda f=fam: self.tcp("vdi-102", self.addr("fs-01", f), 445)),
                ("v%d tcp vdi-002 -> dns address:53 on fs-01" % fam, lambda f=fam: self.tcp("vdi-002", self.addr("fs-01", f, 1), 53)),
                ("v%d tcp vdi-103 -> edr:443" % fam, lambda f=fam: self.tcp("vdi-103", self.addr("edr", f), 443)),
                ("v%d tcp vdi-001 -> decoy:445" % fam, lambda f=fam: self.tcp("vdi-001", self.addr("decoy", f), 445)),
                ("v%d tcp adm-01 -> vdi-001:3389 (RDP)" % fam, lambda f=fam: self.tcp("adm-01", self.addr("vdi-001", f), 3389)),
                ("v%d tcp adm-01 -> vdi-103:22 (SSH)" % fam, lambda f=fam: self.tcp("adm-01", self.addr("vdi-103", f), 22)),
            ]
        ctl = self.doc["mgmt"]["controller_address"]
        checks += [
            ("hv1 -> controller address %s over mgmt" % ctl, lambda: self.ping("hv1", ctl)),
            ("hv2 -> controller address %s over mgmt" % ctl, lambda: self.ping("hv2", ctl)),
            ("vdi-001 cannot reach the controller address (no forwarding into the root namespace)",
             lambda: not self.ping("vdi-001", ctl, expect=False)),
            ("core has no route out of the lab (no default route)",
             lambda: run(["ip", "-n", self.ns("core"), "route", "get", "192.0.2.1"]).returncode != 0),
        ]
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda c: (c[0], c[1]()), checks))
        for what, ok in results:
            check(what, bool(ok))
        self.stop_servers()

    # ------------------------------------------------------------------ phase 3
    def phase_down(self, what="down"):
        p = self.lab("down", "--stop-timeout", "2")
        check("%s exits 0" % what, p.returncode == 0, p.stderr[-1500:])
        self.nothing_left(what)
        p = self.lab("down")
        check("%s again is a no-op (exit 0)" % what, p.returncode == 0, p.stderr[-500:])

    # ------------------------------------------------------------------ phase 4
    def phase_processes(self):
        log("phase 4: controller and enforcers (stand-ins): certificates, tokens, enrollment, pids")
        p = self.lab(*self.up_args("--controller-bin", self.fake_controller, "--enforcer-bin", self.fake_enforcer,
                                   "--ready-timeout", "20", "--stop-timeout", "2"),
                     env={"FAKE_ENFORCER_IGNORE_TERM": "1"})
        if not check("up with controller and enforcers exits 0", p.returncode == 0, p.stderr[-3000:]):
            return
        doc = json.loads((self.state / "lab.json").read_text())
        c = doc["controller"]
        ctl = doc["mgmt"]["controller_address"]
        check("lab.json: controller URLs",
                  c["api_url"] == "http://127.0.0.1:%d" % self.api_port and c["tls_url"] == "https://%s:8443" % ctl, (c["api_url"], c["tls_url"]))
        procs = {pr["name"]: pr for pr in doc["processes"]}
        check("lab.json: three processes", sorted(procs) == ["controller", "enforcer-hv1", "enforcer-hv2"],
                  sorted(procs))
        for name, pr in procs.items():
            pid_text = Path(pr["pid_file"]).read_text().strip() if Path(pr["pid_file"]).exists() else ""
            check("%s: pid file matches a running process" % name,
                      pid_text == str(pr["pid"]) and Path("/proc/%d" % pr["pid"]).exists(), pid_text)
            check("%s: log file %s exists" % (name, pr["log"]), Path(pr["log"]).exists())
        for e in doc["enforcers"]:
            in_ns = [int(x) for x in run(["ip", "netns", "pids", e["namespace"]]).stdout.split()]
            check("enforcer %s runs in %s" % (e["id"], e["namespace"]), e["pid"] in in_ns)
            cred = Path(e["credential"])
            check("enforcer %s enrolled: %s (0600)" % (e["id"], cred),
                      cred.exists() and stat.S_IMODE(cred.stat().st_mode) == 0o600)
        enrolled = [json.loads(l) for l in (Path(c["data_dir"]) / "enrolled.jsonl").read_text().splitlines()]
        want = sorted((h["id"], h["mgmt_address"]) for h in doc["hypervisors"])
        got = sorted((x["enforcer"], x["peer"]) for x in enrolled if x["tls"])
        check("each enforcer enrolled over TLS from its hypervisor's mgmt address", got == want, got)
        self_pids = [pr["pid"] for pr in doc["processes"] if pr["name"] == "controller"]
        in_any_ns = set()
        for n in list_netns(self.prefix):
            in_any_ns.update(int(x) for x in run(["ip", "netns", "pids", n]).stdout.split())
        check("the controller runs in the root namespace", self_pids and self_pids[0] not in in_any_ns)
        # Tokens and certificates.
        t = doc["tokens"]
        boot = json.loads(Path(t["bootstrap_file"]).read_text())
        check("bootstrap-tokens JSON: lab-admin/soc/automation",
                  sorted((x["name"], x["role"]) for x in boot["tokens"]) ==
                  [("lab-admin", "admin"), ("lab-automation", "automation"), ("lab-soc", "soc")])
        modes = [stat.S_IMODE(Path(t[k]).stat().st_mode) for k in ("bootstrap_file", "admin", "soc", "automation")]
        check("token files are 0600", all(m == 0o600 for m in modes), modes)
        check("admin token file == bootstrap entry",
                  Path(t["admin"]).read_text().strip() == next(x["token"] for x in boot["tokens"] if x["role"] == "admin"))
        text = run(["openssl", "x509", "-in", c["tls_cert"], "-noout", "-text"]).stdout
        check("controller certificate SANs: %s, 127.0.0.1, localhost" % ctl,
                  "IP Address:%s" % ctl in text and "IP Address:127.0.0.1" in text and "DNS:localhost" in text)
        v = run(["openssl", "verify", "-CAfile", doc["ca"]["cert"], c["tls_cert"]])
        check("controller certificate verifies against the lab CA", v.returncode == 0, v.stdout + v.stderr)
        p = self.lab("status")
        check("status: healthy with all processes running", p.returncode == 0, p.stdout[-1500:])
        # A dead enforcer is reported.
        victim = procs["enforcer-hv2"]["pid"]
        os.kill(victim, signal.SIGKILL)
        poll(lambda: not Path("/proc/%d" % victim).exists() or
             Path("/proc/%d/stat" % victim).read_text().rsplit(")", 1)[1].split()[0] == "Z", 5)
        p = self.lab("status")
        check("status exits 1 naming the dead enforcer", p.returncode == 1 and "enforcer-hv2" in p.stdout,
                  p.stdout[-800:])
        started = time.monotonic()
        self.phase_down("down with processes (an enforcer ignoring SIGTERM)")
        log("    (down took %.1f s)" % (time.monotonic() - started))

    # ------------------------------------------------------------------ phase 5
    def phase_failed_up(self):
        log("phase 5: a failed up cleans up after itself")
        p = self.lab(*self.up_args("--no-controller", "--no-enforcers", "--inject-failure", "topology"))
        check("up --inject-failure topology exits 1", p.returncode == 1, p.returncode)
        self.nothing_left("after the injected failure")
        p = self.lab(*self.up_args("--controller-bin", self.fake_controller, "--no-enforcers",
                                   "--ready-timeout", "2", "--stop-timeout", "1"),
                     env={"FAKE_CONTROLLER_MODE": "hang"})
        check("up with a controller that never answers exits 1 (timed out)",
                  p.returncode == 1 and "timed out" in p.stderr, p.stderr[-800:])
        self.nothing_left("after the controller timeout (SIGKILL)")
        p = self.lab("down")
        check("down after a failed up is a no-op (exit 0)", p.returncode == 0)
        p = self.lab("status")
        check("status without a lab exits 2", p.returncode == 2)

    def run(self):
        self.phase_topology()
        self.phase_connectivity()
        log("phase 3: down")
        self.phase_down()
        self.phase_processes()
        self.phase_failed_up()

    def cleanup(self):
        self.stop_servers()
        if list_netns(self.prefix) or root_links(self.prefix) or (self.state / "lab.json").exists():
            self.lab("down", "--stop-timeout", "1")
        for pid, _ in procs_mentioning(str(self.state)):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def indent(text):
    return "".join("      | %s\n" % l for l in text.splitlines()[-40:])


def probe():
    if os.geteuid() != 0:
        raise Failed("SKIP: needs root")
    for tool in ("ip", "ping", "openssl"):
        if shutil.which(tool) is None:
            raise Failed("SKIP: %s not found" % tool)
    name = "bhlprobe%d" % os.getpid()
    p = run(["ip", "netns", "add", name])
    if p.returncode != 0:
        raise Failed("SKIP: cannot create a network namespace: %s" % p.stderr.strip())
    try:
        p = run(["ip", "-n", name, "link", "add", "a0", "type", "veth", "peer", "name", "a1"])
        if p.returncode != 0:
            raise Failed("SKIP: no veth: %s" % p.stderr.strip())
    finally:
        run(["ip", "netns", "del", name])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--time-limit", type=float, default=240, help="abort (and clean up) after S seconds")
    args = ap.parse_args()
    try:
        probe()
    except Failed as e:
        log(str(e))
        return SKIP if str(e).startswith("SKIP") else 2

    class Timeout(Exception):
        pass

    def on_signal(signum, _frame):
        raise Timeout("signal %d" % signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(s, on_signal)
    signal.alarm(int(args.time_limit))
    test = LabTest(args)
    log("lab test: prefix %s, state %s, mgmt %s, api port %d" % (test.prefix, test.state, test.mgmt_net,
                                                                 test.api_port))
    code = 0
    started = time.monotonic()
    try:
        test.run()
    except (Failed, Timeout, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
        log("ERROR: %s: %s" % (type(e).__name__, e))
        code = 2
    finally:
        signal.alarm(0)
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        test.cleanup()
        left = list_netns(test.prefix) + root_links(test.prefix)
        if left:
            log("cleanup LEFT: %s" % left)
            code = code or 1
    log("total %.0f s" % (time.monotonic() - started))
    if report() and code == 0:
        code = 1
    log("result: %s" % {0: "PASS", 1: "FAIL", 2: "ERROR"}[code])
    return code


if __name__ == "__main__":
    sys.exit(main())
