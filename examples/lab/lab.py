#!/usr/bin/env python3
"""Bulkhead namespace lab: two hypervisors with VDIs, servers, a decoy, a controller.

  lab.py up     [--no-controller] [--no-enforcers] [--controller-bin B] [--enforcer-bin B] ...
  lab.py status [--json]
  lab.py down   [--purge]
  lab.py exec NS -- CMD [ARG...]      run CMD in the lab namespace NS (e.g. vdi-001, hv1)
  lab.py stop  NAME [--kill]          stop one lab process (controller, enforcer-hv1, ...)
  lab.py start NAME                   start it again with its recorded command line

Every namespace, and every interface the lab puts in the root namespace, starts with
--prefix (default "bh-lab-"); state (CA, certificates, tokens, pid files, logs, lab.json)
lives in --state-dir (default /run/bulkhead-lab).  See README.md next to this file.

Exit codes: 0 success; 1 failure (up cleaned up after itself, status found the lab
degraded); 2 usage error or no lab (status); 3 a lab with this prefix or state
directory already exists (up changed nothing).  Python 3.9+, stdlib only, run as root.
"""

import argparse
import contextlib
import datetime
import errno
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FORMAT = "bulkhead-lab/1"
MARKER = ".bulkhead-lab"          # marks a state directory as ours (down --purge checks it)
CMD_TIMEOUT = 30                  # seconds, any single helper command

# ---- the lab's fixed addressing (the VDIs and servers come from the inventory) ----------
GATEWAY4 = "169.254.1.1"          # on lo of every router namespace: the onlink default gw
GATEWAY6 = "fe80::1"              # on every router port facing a workload
CORE_SHORT = "core"
MGMT_IF = "mgmt0"                 # the management interface inside each hypervisor
UPLINK_IF = "uplink"              # each hypervisor's link to the core router
MGMT_TABLE = 100                  # hypervisor routing table holding the route to the controller;
                                  # only the hypervisor's own traffic (iif lo) looks it up, so
                                  # nothing a VDI sends is ever forwarded to the root namespace


def transit(index):
    """Addresses of the link hypervisor #index (1-based) <-> core."""
    return {
        "hv4": "10.254.%d.1/24" % index, "core4": "10.254.%d.254/24" % index,
        "hv6": "fd00:254:%x::1/64" % index, "core6": "fd00:254:%x::fe/64" % index,
    }


# Endpoints that are not inventory workloads: namespaces behind the core router, and extra
# addresses on a workload's namespace.  The policy names them by address (segments edr,
# dns, decoys).
EXTRA_NAMESPACES = [
    {"short": "edr", "role": "edr", "addresses": ["10.0.0.20", "fd00:0:0:1::20"],
     "mac": "52:54:00:00:00:20", "description": "EDR management server (quarantine allow-list)"},
    {"short": "decoy", "role": "decoy", "addresses": ["10.0.0.66", "fd00:0:0:1::66"],
     "mac": "52:54:00:00:00:66", "description": "decoy inside 10.0.0.64/28, fd00:0:0:1::60/124"},
]
EXTRA_ADDRESSES = {"fs-01": ["10.0.0.53", "fd00:0:0:1::53"]}  # DNS runs on the file server

WORKLOAD_SYSCTLS = [
    "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0",
    "net.ipv6.conf.default.router_solicitations=0",
    "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
]
ROUTER_SYSCTLS = WORKLOAD_SYSCTLS + [
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.forwarding=1",
]


class LabError(Exception):
    pass


class Interrupted(Exception):
    pass


def log(msg):
    print("lab: %s" % msg, file=sys.stderr, flush=True)


def run(cmd, input=None, timeout=CMD_TIMEOUT, check=True):
    try:
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError("timed out after %ss: %s" % (timeout, " ".join(cmd)))
    except FileNotFoundError:
        raise LabError("command not found: %s" % cmd[0])
    if check and p.returncode != 0:
        raise LabError("command failed (%d): %s\n%s%s" % (
            p.returncode, " ".join(cmd), p.stdout[-2000:], p.stderr[-2000:]))
    return p


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_private(path, text):
    """Writes a file readable by root only (0600), atomically."""
    path = Path(path)
    tmp = path.with_name("." + path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns a true value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LabError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 0.5)


# --------------------------------------------------------------------------- kernel state

def list_netns():
    p = run(["ip", "netns", "list"], check=False)
    return sorted(line.split()[0] for line in p.stdout.splitlines() if line.strip())


def lab_netns(prefix):
    return [n for n in list_netns() if n.startswith(prefix)]


def root_links(prefix):
    p = run(["ip", "-j", "link", "show"], check=False)
    try:
        links = json.loads(p.stdout or "[]")
    except ValueError:
        return []
    return sorted(l["ifname"] for l in links if l.get("ifname", "").startswith(prefix))


def netns_pids(name):
    p = run(["ip", "netns", "pids", name], check=False, timeout=10)
    return [int(w) for w in p.stdout.split() if w.isdigit()]


def proc_start_time(pid):
    """The process's start time in clock ticks since boot (None when it does not exist)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def proc_alive(pid, start_time=None):
    """True when pid runs (and, if given, is the process that started at start_time)."""
    st = proc_start_time(pid)
    if st is None:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        return False
    return start_time is None or st == start_time


def proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_pids(pids, timeout, what):
    """SIGTERM to every (pid, start_time), SIGKILL to survivors after timeout seconds."""
    alive = [(pid, st) for pid, st in pids if proc_alive(pid, st)]
    for pid, _ in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    if alive:
        log("stopping %s: SIGTERM to %s" % (what, " ".join(str(p) for p, _ in alive)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(proc_alive(p, s) for p, s in alive):
        reap()
        time.sleep(0.05)
    survivors = [(p, s) for p, s in alive if proc_alive(p, s)]
    for pid, _ in survivors:
        log("%s: pid %d ignored SIGTERM for %.0fs, SIGKILL" % (what, pid, timeout))
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(proc_alive(p, s) for p, s in survivors):
        reap()
        time.sleep(0.05)
    return [p for p, s in survivors if proc_alive(p, s)]


_children = []


def reap():
    """Collects exit statuses of children this process started (so they are not zombies)."""
    for p in _children:
        with contextlib.suppress(Exception):
            p.poll()


# --------------------------------------------------------------------------- the model

def valid_prefix(prefix):
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", prefix or "") is not None


class Topology:
    """What the lab builds, derived from the inventory plus the fixed tables above."""

    def __init__(self, inventory, prefix, mgmt_net):
        self.prefix = prefix
        self.mgmt_net = mgmt_net
        hosts = list(mgmt_net.hosts())
        self.mgmt_controller = str(hosts[0])
        self.namespaces = []     # dicts as written to lab.json, in build order
        self.workloads = []
        self.hypervisors = []
        self.root_interfaces = []

        port_workloads = [w for w in inventory["workloads"] if w.get("attachment")]
        others = [w for w in inventory["workloads"] if not w.get("attachment")]
        used_hv = []
        for e in inventory["enforcers"]:
            if any(w["enforcer"] == e["id"] for w in port_workloads):
                used_hv.append(e["id"])
        if not used_hv:
            raise LabError("the inventory has no port-mode workloads: nothing to build")
        if len(used_hv) + 1 >= len(hosts):
            raise LabError("management network %s is too small for %d hypervisors" % (mgmt_net, len(used_hv)))
        for w in port_workloads:
            if w["attachment"].get("mode") != "port":
                raise LabError("workload %s: the lab builds port-mode workloads only" % w["id"])

        core = self.ns(CORE_SHORT, "router", description="core router: hypervisor uplinks and servers")
        for index, hv_id in enumerate(used_hv, start=1):
            t = transit(index)
            root_if = prefix + "m" + hv_id
            if len(root_if) > 15:
                raise LabError("interface name %r is longer than 15 characters: use a shorter --prefix"
                               % root_if)
            if len(hv_id) > 15:
                raise LabError("enforcer id %r is too long for an interface name on the core" % hv_id)
            mgmt_addr = str(hosts[index + 9]) if index + 9 < len(hosts) else str(hosts[index])
            hv = self.ns(hv_id, "hypervisor", hypervisor=hv_id, enforcer=hv_id,
                         description="hypervisor %s" % hv_id)
            hv["mgmt_address"] = mgmt_addr
            hv["interfaces"] += [
                {"name": "lo", "addresses": [GATEWAY4 + "/32"]},
                {"name": UPLINK_IF, "peer_namespace": core["name"], "peer_interface": hv_id,
                 "addresses": [t["hv4"], t["hv6"]]},
                {"name": MGMT_IF, "peer_namespace": None, "peer_interface": root_if,
                 "addresses": [mgmt_addr + "/32"]},
            ]
            hv["routes"] += ["default via %s" % t["core4"].split("/")[0],
                             "default via %s" % t["core6"].split("/")[0],
                             "%s/32 dev %s src %s table %d" % (self.mgmt_controller, MGMT_IF, mgmt_addr,
                                                               MGMT_TABLE)]
            hv["rules"] = ["iif lo lookup %d pref 100" % MGMT_TABLE]
            core["interfaces"].append({"name": hv_id, "peer_namespace": hv["name"], "peer_interface": UPLINK_IF,
                                       "addresses": [t["core4"], t["core6"]]})
            self.root_interfaces.append({"name": root_if, "peer_namespace": hv["name"],
                                         "peer_interface": MGMT_IF,
                                         "addresses": [self.mgmt_controller + "/32"],
                                         "routes": ["%s/32" % mgmt_addr]})
            self.hypervisors.append({"id": hv_id, "namespace": hv["name"], "mgmt_address": mgmt_addr,
                                     "mgmt_root_interface": root_if, "transit": t, "index": index})

            for w in port_workloads:
                if w["enforcer"] != hv_id:
                    continue
                # A workload bound by MAC has no interface name in the inventory: the
                # hypervisor names its port, as libvirt does (vnetN); the enforcer's port
                # discovery finds it by the MAC (docs/policy-format.md, Ports bound by MAC).
                iface = w["attachment"].get("interface") or "vnet%d" % port_workloads.index(w)
                mac = w.get("mac")
                vdi = self.ns(w["id"], w.get("labels", {}).get("role", "workload"), hypervisor=hv_id,
                              workload=w["id"], description=w.get("hostname", w["id"]))
                vdi["addresses"] = list(w["addresses"]) + EXTRA_ADDRESSES.get(w["id"], [])
                vdi["interfaces"].append({"name": "eth0", "peer_namespace": hv["name"], "peer_interface": iface,
                                          "mac": norm_mac(mac) if mac else None,
                                          "addresses": [host_cidr(a) for a in vdi["addresses"]]})
                vdi["routes"] += ["default via %s dev eth0 onlink" % GATEWAY4, "default via %s dev eth0" % GATEWAY6]
                hv["interfaces"].append({"name": iface, "peer_namespace": vdi["name"], "peer_interface": "eth0",
                                         "mac": port_mac(mac) if mac else None,
                                         "addresses": [GATEWAY6 + "/64"]})
                hv["routes"] += ["%s dev %s" % (host_cidr(a), iface) for a in vdi["addresses"]]
                core["routes"] += ["%s via %s" % (host_cidr(a), (t["hv4"] if ":" not in a else t["hv6"]).split("/")[0])
                                   for a in vdi["addresses"]]
                self.workloads.append({"id": w["id"], "namespace": vdi["name"], "hypervisor": hv_id,
                                       "enforcer": hv_id, "interface": iface, "addresses": list(w["addresses"]),
                                       "mac": mac, "role": vdi["role"], "managed": True})

        servers = []
        for w in others:
            servers.append({"short": w["id"], "role": w.get("labels", {}).get("role", "server"),
                            "workload": w["id"], "addresses": list(w["addresses"]) + EXTRA_ADDRESSES.get(w["id"], []),
                            "mac": w.get("mac"), "description": w.get("hostname", w["id"])})
        servers += [dict(e, workload=None) for e in EXTRA_NAMESPACES]
        core_ifs = set(i["name"] for i in core["interfaces"])
        for n, s in enumerate(servers, start=1):
            iface = s["short"] if (len(s["short"]) <= 15 and s["short"] not in core_ifs) else "srv%d" % n
            core_ifs.add(iface)
            srv = self.ns(s["short"], s["role"], workload=s["workload"], description=s["description"])
            srv["addresses"] = list(s["addresses"])
            srv["interfaces"].append({"name": "eth0", "peer_namespace": core["name"], "peer_interface": iface,
                                      "mac": norm_mac(s["mac"]) if s.get("mac") else None,
                                      "addresses": [host_cidr(a) for a in s["addresses"]]})
            srv["routes"] += ["default via %s dev eth0 onlink" % GATEWAY4, "default via %s dev eth0" % GATEWAY6]
            core["interfaces"].append({"name": iface, "peer_namespace": srv["name"], "peer_interface": "eth0",
                                       "addresses": [GATEWAY6 + "/64"]})
            core["routes"] += ["%s dev %s" % (host_cidr(a), iface) for a in s["addresses"]]
            if s["workload"]:
                inv_addresses = next(w["addresses"] for w in others if w["id"] == s["workload"])
                self.workloads.append({"id": s["workload"], "namespace": srv["name"], "hypervisor": None,
                                       "enforcer": None, "interface": None, "addresses": inv_addresses,
                                       "mac": s.get("mac"), "role": s["role"], "managed": False})
        core["interfaces"].insert(0, {"name": "lo", "addresses": [GATEWAY4 + "/32"]})

    def ns(self, short, role, hypervisor=None, workload=None, enforcer=None, description=""):
        entry = {"name": self.prefix + short, "short": short, "role": role, "hypervisor": hypervisor,
                 "workload": workload, "enforcer": enforcer, "description": description,
                 "addresses": [], "interfaces": [], "routes": []}
        if any(n["name"] == entry["name"] for n in self.namespaces):
            raise LabError("two lab namespaces would be called %s" % entry["name"])
        self.namespaces.append(entry)
        return entry

    def by_short(self, short):
        return next(n for n in self.namespaces if n["short"] == short)


def norm_mac(mac):
    return mac.lower().replace("-", ":")


def port_mac(mac):
    """The hypervisor side of a VDI's port, libvirt style: fe: + the VM's last five octets."""
    return "fe" + norm_mac(mac)[2:]


def host_cidr(addr):
    return "%s/%d" % (addr, 128 if ":" in addr else 32)


# --------------------------------------------------------------------------- building

def sysctl(ns, settings):
    run(["ip", "netns", "exec", ns, "sysctl", "-qw"] + settings)


def batch(ns, lines):
    if lines:
        run((["ip", "-n", ns] if ns else ["ip"]) + ["-batch", "-"], input="\n".join(lines) + "\n")


def addr_line(cidr, dev):
    return "addr add %s dev %s%s" % (cidr, dev, " nodad" if ":" in cidr else "")


def build_topology(topo, on_namespace_created):
    for n in topo.namespaces:
        run(["ip", "netns", "add", n["name"]])
        on_namespace_created(n["name"])
        sysctl(n["name"], ROUTER_SYSCTLS if n["role"] in ("router", "hypervisor") else WORKLOAD_SYSCTLS)
        run(["ip", "-n", n["name"], "link", "set", "lo", "up"])

    # Links are created from the router side: core -> hypervisors and servers, hypervisor -> VDIs.
    for n in topo.namespaces:
        if n["role"] not in ("router", "hypervisor"):
            continue
        lines = []
        for i in n["interfaces"]:
            if i["name"] == "lo":
                lines += [addr_line(a, "lo") for a in i["addresses"]]
                continue
            peer = i.get("peer_namespace")
            if peer and (n["role"] == "router" or peer != topo.by_short(CORE_SHORT)["name"]):
                lines.append("link add %s type veth peer name %s netns %s" % (i["name"], i["peer_interface"], peer))
        batch(n["name"], lines)

    # Management: root-side veth ends, IPv4 only, /32 routes, nothing else in the root namespace.
    for r in topo.root_interfaces:
        run(["ip", "link", "add", r["name"], "type", "veth", "peer", "name", r["peer_interface"],
             "netns", r["peer_namespace"]])
        with contextlib.suppress(OSError):
            Path("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % r["name"]).write_text("1\n")
        lines = ["link set %s up" % r["name"]]
        lines += ["addr add %s dev %s scope link" % (a, r["name"]) for a in r["addresses"]]
        lines += ["route add %s dev %s scope link src %s" % (rt, r["name"], topo.mgmt_controller) for rt in r["routes"]]
        batch(None, lines)

    # Addresses, MACs and routes in every namespace.
    for n in topo.namespaces:
        lines = []
        for i in n["interfaces"]:
            if i["name"] == "lo":
                continue
            if i["name"] == MGMT_IF:
                # IPv4 only; and never forward what arrives from the root namespace.
                sysctl(n["name"], ["net.ipv6.conf.%s.disable_ipv6=1" % MGMT_IF,
                                   "net.ipv4.conf.%s.forwarding=0" % MGMT_IF])
            if i.get("mac"):
                lines.append("link set %s address %s" % (i["name"], i["mac"]))
            lines.append("link set %s up" % i["name"])
            lines += [addr_line(a, i["name"]) for a in i["addresses"]]
        lines += ["route add %s" % rt for rt in n["routes"]]
        lines += ["rule add %s" % r for r in n.get("rules", [])]
        batch(n["name"], lines)


def check_mgmt_net_free(net):
    """Refuses a management network that overlaps anything routed in the root namespace."""
    p = run(["ip", "-j", "route", "show", "table", "all"], check=False)
    try:
        routes = json.loads(p.stdout or "[]")
    except ValueError:
        routes = []
    for r in routes:
        dst = r.get("dst", "")
        if dst in ("", "default") or r.get("type") in ("multicast", "broadcast"):
            continue
        try:
            other = ipaddress.ip_network(dst if "/" in dst else dst + ("/128" if ":" in dst else "/32"),
                                         strict=False)
        except ValueError:
            continue
        if other.version == net.version and other.overlaps(net) and other.prefixlen > 0:
            raise LabError("management network %s overlaps the root namespace's route %s dev %s; "
                           "choose another with --mgmt-net" % (net, dst, r.get("dev", "?")))


def check_port_free(host, port):
    """Refuses a port something listens on.  Connections of an earlier controller that
    linger after it stopped (for about a minute after a lab went down) can fail this probe's
    bind although the controller's own bind succeeds; so a failed bind is confirmed by
    connecting, and only a listener counts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise LabError("cannot use %s:%d for the controller's plain API: %s" % (host, port, e.strerror))
        in_use = e
    finally:
        s.close()
    probe = socket.socket(family, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect((host, port))
    except ConnectionRefusedError:
        return  # nothing listens: only closed connections hold the port
    except OSError:
        pass
    finally:
        probe.close()
    raise LabError("cannot use %s:%d for the controller's plain API: %s" % (host, port, in_use.strerror))


# --------------------------------------------------------------------------- PKI and tokens

def make_pki(state, mgmt_ip, days=825):
    """Lab CA (kept across ups) and a controller server certificate for mgmt_ip,
    127.0.0.1 and localhost (made anew on every up)."""
    pki = state / "pki"
    pki.mkdir(mode=0o700, exist_ok=True)
    ca_key, ca_crt = pki / "ca.key", pki / "ca.crt"
    if not (ca_key.exists() and ca_crt.exists()):
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "3650",
             "-subj", "/O=Bulkhead lab/CN=Bulkhead lab CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    key, csr, crt, ext = pki / "controller.key", pki / "controller.csr", pki / "controller.crt", pki / "controller.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectAltName=IP:%s,IP:127.0.0.1,DNS:localhost\n" % mgmt_ip)
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(csr), "-subj", "/O=Bulkhead lab/CN=bulkhead-controller"])
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(crt), "-days", str(days), "-sha256", "-extfile", str(ext)])
    for f in (ca_key, key):
        os.chmod(f, 0o600)
    csr.unlink()
    return {"ca_cert": str(ca_crt), "ca_key": str(ca_key), "cert": str(crt), "key": str(key)}


TOKEN_ROLES = [("lab-admin", "admin"), ("lab-soc", "soc"), ("lab-automation", "automation")]


def make_tokens(state):
    """Random bearer tokens per role (kept across ups, so a persistent controller database
    and the files agree), one file each plus the --bootstrap-tokens JSON, all 0600."""
    d = state / "tokens"
    d.mkdir(mode=0o700, exist_ok=True)
    entries, files = [], {}
    for name, role in TOKEN_ROLES:
        path = d / (name + ".token")
        if path.exists() and path.read_text().strip():
            token = path.read_text().strip()
        else:
            token = secrets.token_urlsafe(32)
            write_private(path, token + "\n")
        entries.append({"name": name, "role": role, "token": token})
        files[role] = str(path)
    boot = d / "bootstrap-tokens.json"
    write_private(boot, json.dumps({"tokens": entries}, indent=2) + "\n")
    return {"bootstrap_file": str(boot), **files}


# --------------------------------------------------------------------------- controller API

def api_request(base_url, method, path, token=None, body=None, timeout=5.0):
    """One JSON request; returns (status, parsed body or text)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


def controller_answers(api_url):
    """True once the plain API answers any HTTP status on the OpenAPI document's path."""
    try:
        api_request(api_url, "GET", "/api/v1/openapi.json", timeout=1.0)
        return True
    except (OSError, urllib.error.URLError, ValueError):
        return False


def prepare_controller(api_url, admin_token, lab):
    """Run once the controller answers, before any enrollment token is asked for: the
    controller issues tokens only for enforcers its inventory knows, so the lab's inventory
    goes in first (PUT /api/v1/inventory, idempotent). The policy is left to the caller
    (the demo uploads and activates it; tests try their own)."""
    inventory = json.loads(Path(lab["inventory"]).read_text())
    inventory.pop("$schema", None)
    status, body = api_request(api_url, "PUT", "/api/v1/inventory", token=admin_token, body=inventory)
    if status != 200:
        raise LabError("loading the inventory into the controller: HTTP %s %s" % (status, str(body)[:300]))


def request_enrollment_token(api_url, admin_token, enforcer_id):
    """POST /api/v1/enforcers/{id}/enrollment-token (docs/control-channel.md) -> token."""
    status, body = api_request(api_url, "POST", "/api/v1/enforcers/%s/enrollment-token" % enforcer_id,
                               token=admin_token, body={})
    if status != 201 or not isinstance(body, dict) or not body.get("token"):
        raise LabError("enrollment token for %s: HTTP %s %s" % (enforcer_id, status, str(body)[:300]))
    return body["token"]


TLS_CHECK = r"""
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
try:
    with socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=2) as s:
        with ctx.wrap_socket(s, server_hostname=sys.argv[2]):
            pass
except Exception as e:
    print("%s: %s" % (type(e).__name__, e)); sys.exit(1)
"""


def tls_reachable(ns, ca, host, port):
    p = run(["ip", "netns", "exec", ns, sys.executable, "-c", TLS_CHECK, ca, host, str(port)],
            check=False, timeout=10)
    return p.returncode == 0, (p.stdout + p.stderr).strip()


# --------------------------------------------------------------------------- lab state

class State:
    def __init__(self, path):
        self.dir = Path(path)

    @property
    def lab_json(self):
        return self.dir / "lab.json"

    def load(self):
        try:
            return json.loads(self.lab_json.read_text())
        except (OSError, ValueError):
            return None

    def save(self, doc):
        tmp = self.lab_json.with_name(".lab.json.tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, self.lab_json)

    @contextlib.contextmanager
    def locked(self):
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise LabError("another lab.py holds %s/.lock" % self.dir)
            yield
        finally:
            os.close(fd)


def spawn(argv, log_path, pid_file, env=None):
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logf:
        logf.write(("---- %s %s\n" % (now_iso(), " ".join(argv))).encode())
        logf.flush()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             start_new_session=True, close_fds=True, cwd="/", env=env)
    _children.append(p)
    st = proc_start_time(p.pid)
    pid_file.write_text("%d\n" % p.pid)
    return p, st


def log_tail(path, lines=15):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    | " + l for l in text[-lines:])


# --------------------------------------------------------------------------- up

def default_bin(candidates):
    for c in candidates:
        if (REPO / c).exists():
            return str(REPO / c)
    return str(REPO / candidates[0])


def cmd_up(args):
    state = State(args.state_dir)
    prefix = args.prefix
    try:
        mgmt_net = ipaddress.ip_network(args.mgmt_net, strict=True)
    except ValueError as e:
        raise UsageError("--mgmt-net: %s" % e)
    if mgmt_net.version != 4 or mgmt_net.prefixlen > 27:
        raise UsageError("--mgmt-net must be an IPv4 network of at least /27")
    inventory = json.loads(Path(args.inventory).read_text())
    topo = Topology(inventory, prefix, mgmt_net)
    tls_host, tls_port = topo.mgmt_controller, args.tls_port
    api_host, api_port = parse_hostport(args.api_listen)
    if not ipaddress.ip_address(api_host).is_loopback:
        raise UsageError("--api-listen must be a loopback address (plain HTTP)")

    args.controller_bin = os.path.abspath(args.controller_bin)
    args.enforcer_bin = os.path.abspath(args.enforcer_bin)
    args.inventory, args.policy = os.path.abspath(args.inventory), os.path.abspath(args.policy)
    for b, flag, on in ((args.controller_bin, "--controller-bin", not args.no_controller),
                        (args.enforcer_bin, "--enforcer-bin", not args.no_enforcers)):
        if on and not os.access(b, os.X_OK):
            raise UsageError("%s: %s is not an executable file (build it, or pass %s)" % (
                flag, b, "--no-enforcers" if "enforcer" in flag else "--no-controller"))
    if not args.no_enforcers and args.no_controller and not args.controller_url:
        raise UsageError("--no-controller with enforcers needs --controller-url of a running controller")

    with state.locked():
        existing_ns, existing_links = lab_netns(prefix), root_links(prefix)
        if existing_ns or existing_links or state.lab_json.exists():
            log("a lab already exists (prefix %s, state %s): namespaces %s, root links %s%s; "
                "run `lab.py down` first" % (prefix, state.dir, existing_ns, existing_links,
                                             ", lab.json present" if state.lab_json.exists() else ""))
            return 3
        if any(state.dir.iterdir()) and not (state.dir / MARKER).exists():
            entries = [p.name for p in state.dir.iterdir() if p.name != ".lock"]
            if entries:
                raise UsageError("state directory %s is not empty and not a lab's (no %s)" % (state.dir, MARKER))
        os.chmod(state.dir, 0o700)
        (state.dir / MARKER).write_text("bulkhead lab state directory\n")
        check_mgmt_net_free(mgmt_net)
        if not args.no_controller:
            check_port_free(api_host, api_port)

        doc = {
            "format": FORMAT, "state": "starting", "created_at": now_iso(), "prefix": prefix,
            "state_dir": str(state.dir), "repo": str(REPO),
            "inventory": str(Path(args.inventory).resolve()), "policy": str(Path(args.policy).resolve()),
            "mgmt": {"network": str(mgmt_net), "controller_address": topo.mgmt_controller,
                     "root_interfaces": topo.root_interfaces},
            "namespaces": topo.namespaces, "workloads": topo.workloads,
            "hypervisors": topo.hypervisors,
            "controller": None, "enforcers": [], "processes": [],
            "ca": None, "tokens": None,
        }
        state.save(doc)  # first, so that `down` finds the prefix even after a SIGKILL mid-up

        def on_signal(signum, _frame):
            raise Interrupted("signal %d" % signum)

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            log("building %d namespaces with prefix %s" % (len(topo.namespaces), prefix))
            build_topology(topo, lambda name: None)
            if args.inject_failure == "topology":
                raise LabError("--inject-failure topology: deliberate failure after building the network")
            pki = make_pki(state.dir, tls_host)
            tokens = make_tokens(state.dir)
            doc["ca"] = {"cert": pki["ca_cert"], "key": pki["ca_key"]}
            doc["tokens"] = tokens
            controller_url = args.controller_url or "https://%s:%d" % (tls_host, tls_port)
            doc["controller"] = {
                "enabled": not args.no_controller, "api_url": "http://%s:%d" % (api_host, api_port),
                "tls_url": controller_url, "tls_cert": pki["cert"], "tls_key": pki["key"],
            }
            state.save(doc)
            if not args.no_controller:
                start_controller(args, state, doc, pki, tokens, api_host, api_port, tls_host, tls_port)
            if not args.no_enforcers:
                start_enforcers(args, state, doc, topo, pki, tokens)
            if args.inject_failure == "processes":
                raise LabError("--inject-failure processes: deliberate failure after starting the processes")
            doc["state"] = "up"
            doc["up_at"] = now_iso()
            state.save(doc)
        except BaseException as e:
            for s in old:
                signal.signal(s, signal.SIG_IGN)  # cleanup must finish
            log("up failed: %s" % (str(e) or type(e).__name__))
            log("cleaning up what was built")
            teardown(state, prefix, args.stop_timeout, quiet=False)
            if isinstance(e, (LabError, Interrupted, OSError, subprocess.SubprocessError)):
                return 1
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    print_summary(doc)
    return 0


def parse_hostport(text):
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        return host, int(port)
    except ValueError:
        raise UsageError("expected HOST:PORT with an IP address, not %r" % text)


def start_controller(args, state, doc, pki, tokens, api_host, api_port, tls_host, tls_port):
    cdir = state.dir / "controller"
    (cdir / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [args.controller_bin, "--data-dir", str(cdir / "data"),
            "--listen", "%s:%d" % (tls_host, tls_port), "--tls-cert", pki["cert"], "--tls-key", pki["key"],
            "--plain-listen", "%s:%d" % (api_host, api_port), "--bootstrap-tokens", tokens["bootstrap_file"]]
    argv += args.controller_arg or []
    log_path, pid_file = cdir / "controller.log", cdir / "controller.pid"
    log("starting the controller: %s" % " ".join(argv))
    p, st = spawn(argv, log_path, pid_file)
    proc = {"name": "controller", "namespace": None, "pid": p.pid, "start_time": st,
            "pid_file": str(pid_file), "log": str(log_path), "argv": argv}
    doc["processes"].append(proc)
    doc["controller"].update(pid=p.pid, pid_file=str(pid_file), log=str(log_path), data_dir=str(cdir / "data"),
                             binary=args.controller_bin)
    state.save(doc)
    api_url = doc["controller"]["api_url"]

    def ready():
        if p.poll() is not None:
            raise LabError("the controller exited with status %s:\n%s" % (p.returncode, log_tail(log_path)))
        return controller_answers(api_url)

    try:
        wait_until(ready, args.ready_timeout, what="the controller's API on %s" % api_url)
    except LabError as e:
        raise LabError("%s\n%s" % (e, log_tail(log_path)))
    # TLS on the management network, seen from every hypervisor, verified against the CA.
    for hv in doc["hypervisors"]:
        last = [""]

        def tls_ok(hv=hv):
            if p.poll() is not None:
                raise LabError("the controller exited with status %s" % p.returncode)
            ok, msg = tls_reachable(hv["namespace"], pki["ca_cert"], tls_host, tls_port)
            last[0] = msg
            return ok

        try:
            wait_until(tls_ok, args.ready_timeout, interval=0.2,
                       what="TLS to %s:%d from %s" % (tls_host, tls_port, hv["namespace"]))
        except LabError as e:
            raise LabError("%s (last error: %s)" % (e, last[0]))
    admin = Path(tokens["admin"]).read_text().strip()
    prepare_controller(api_url, admin, doc)
    log("controller ready: %s (TLS %s)" % (api_url, doc["controller"]["tls_url"]))


def start_enforcers(args, state, doc, topo, pki, tokens):
    api_url = doc["controller"]["api_url"]
    admin = Path(tokens["admin"]).read_text().strip()
    started = []
    for hv in topo.hypervisors:
        edir = state.dir / "enforcers" / hv["id"]
        sdir = edir / "state"
        sdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        credential = sdir / "credential"
        token_file = edir / "enrollment-token"
        argv = ["ip", "netns", "exec", hv["namespace"], args.enforcer_bin, "--enforcer-id", hv["id"],
                "--controller", doc["controller"]["tls_url"], "--ca", pki["ca_cert"], "--state-dir", str(sdir),
                "--events", str(edir / "events.jsonl"), "--metrics-file", str(edir / "metrics.prom")]
        metrics_url = None
        if args.enforcer_metrics_port:
            # GET /metrics on the hypervisor's management address, reachable from the root
            # namespace over its management link (as a Prometheus on the management network).
            argv += ["--metrics-listen", "%s:%d" % (hv["mgmt_address"], args.enforcer_metrics_port)]
            metrics_url = "http://%s:%d/metrics" % (hv["mgmt_address"], args.enforcer_metrics_port)
        if not credential.exists():
            write_private(token_file, request_enrollment_token(api_url, admin, hv["id"]) + "\n")
            argv += ["--enrollment-token", str(token_file)]
        argv += args.enforcer_arg or []
        log_path, pid_file = edir / "enforcer.log", edir / "enforcer.pid"
        log("starting enforcer %s in %s" % (hv["id"], hv["namespace"]))
        p, st = spawn(argv, log_path, pid_file)
        proc = {"name": "enforcer-" + hv["id"], "namespace": hv["namespace"], "pid": p.pid, "start_time": st,
                "pid_file": str(pid_file), "log": str(log_path), "argv": argv}
        doc["processes"].append(proc)
        doc["enforcers"].append({"id": hv["id"], "namespace": hv["namespace"], "pid": p.pid,
                                 "pid_file": str(pid_file), "log": str(log_path), "state_dir": str(sdir),
                                 "credential": str(credential), "enrollment_token_file": str(token_file),
                                 "events": str(edir / "events.jsonl"), "metrics": str(edir / "metrics.prom"),
                                 "metrics_url": metrics_url})
        state.save(doc)
        started.append((hv, p, credential, log_path))
    # Started = enrolled (the credential is on disk) and still running.
    for hv, p, credential, log_path in started:
        def enrolled(p=p, credential=credential, log_path=log_path, hv=hv):
            if p.poll() is not None:
                raise LabError("enforcer %s exited with status %s:\n%s" % (hv["id"], p.returncode,
                                                                           log_tail(log_path)))
            return credential.exists()

        try:
            wait_until(enrolled, args.ready_timeout, what="enforcer %s to enroll (%s)" % (hv["id"], credential))
        except LabError as e:
            raise LabError("%s\n%s" % (e, log_tail(log_path)))
    log("enforcers enrolled: %s" % ", ".join(hv["id"] for hv, *_ in started))


def print_summary(doc):
    print("lab up: %d namespaces with prefix %s; description in %s/lab.json" % (
        len(doc["namespaces"]), doc["prefix"], doc["state_dir"]))
    for n in doc["namespaces"]:
        addrs = ", ".join(n["addresses"]) if n["addresses"] else ", ".join(
            a for i in n["interfaces"] if i["name"] not in ("lo",) for a in i["addresses"] if not a.startswith("fe80"))
        print("  %-18s %-15s %s" % (n["name"], n["role"], addrs))
    c = doc.get("controller") or {}
    if c.get("enabled"):
        print("controller: API %s  TLS %s  (log %s)" % (c["api_url"], c["tls_url"], c.get("log")))
        print("admin token: %s" % doc["tokens"]["admin"])
    for e in doc.get("enforcers", []):
        print("enforcer %s: pid %s, log %s" % (e["id"], e["pid"], e["log"]))
    print("try: %s exec vdi-001 -- ping -c1 10.1.1.1" % sys.argv[0])


# --------------------------------------------------------------------------- down

def teardown(state, prefix, stop_timeout, quiet=False):
    """Stops the lab's processes, deletes its namespaces and root-side links, removes pid
    files and lab.json.  Safe to call repeatedly and on a half-built lab.  Returns the list
    of things it could not remove."""
    doc = state.load() or {}
    procs = []
    for p in doc.get("processes", []):
        pid, st = p.get("pid"), p.get("start_time")
        if pid and proc_alive(pid, st):
            procs.append((p["name"], pid, st))
    # pid files without lab.json entries (e.g. lab.json lost): accept a pid only when its
    # command line names this state directory, so a recycled pid is never signalled.
    known = set(pid for _, pid, _ in procs)
    for pf in list(state.dir.glob("controller/*.pid")) + list(state.dir.glob("enforcers/*/*.pid")):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pf.read_text().split()[0])
            if pid not in known and proc_alive(pid) and str(state.dir) in proc_cmdline(pid):
                procs.append((pf.stem, pid, proc_start_time(pid)))
    # Enforcers first (they would only reconnect), then the controller.
    procs.sort(key=lambda t: t[0] == "controller")
    left = []
    if procs:
        left += ["pid %d" % p for p in stop_pids([(pid, st) for n, pid, st in procs if n != "controller"],
                                                  stop_timeout, "enforcers")]
        left += ["pid %d" % p for p in stop_pids([(pid, st) for n, pid, st in procs if n == "controller"],
                                                  stop_timeout, "controller")]
    # Whatever else still runs inside the lab's namespaces (shells, servers, nmap...).
    namespaces = lab_netns(prefix)
    others = []
    for ns in namespaces:
        others += [(pid, proc_start_time(pid)) for pid in netns_pids(ns) if pid != os.getpid()]
    if others:
        left += ["pid %d" % p for p in stop_pids(others, min(stop_timeout, 5), "processes in lab namespaces")]
    for ns in namespaces:
        run(["ip", "netns", "del", ns], check=False, timeout=15)
    for link in root_links(prefix):
        run(["ip", "link", "del", link], check=False, timeout=15)
    # Namespace teardown is asynchronous in the kernel: wait for the veths to go away.
    try:
        wait_until(lambda: not lab_netns(prefix) and not root_links(prefix), 15,
                   what="the lab's namespaces and links to disappear")
    except LabError:
        left += lab_netns(prefix) + root_links(prefix)
    for pf in list(state.dir.glob("controller/*.pid")) + list(state.dir.glob("enforcers/*/*.pid")):
        with contextlib.suppress(OSError):
            pf.unlink()
    if not left:
        with contextlib.suppress(OSError):
            state.lab_json.unlink()
    if not quiet:
        log("down: %s" % ("clean" if not left else "LEFT: %s" % ", ".join(map(str, left))))
    return left


def cmd_down(args):
    state = State(args.state_dir)
    doc = state.load() if state.dir.exists() else None
    prefixes = [args.prefix]
    if doc and doc.get("prefix") and doc["prefix"] != args.prefix:
        # lab.json knows the prefix the lab was built with; an explicit --prefix is torn down too.
        prefixes = [doc["prefix"]] + ([args.prefix] if args.prefix_given else [])
    if not state.dir.exists() and not any(lab_netns(p) or root_links(p) for p in prefixes):
        log("down: nothing to do (no %s, nothing with prefix %s)" % (state.dir, args.prefix))
        return 0
    left = []
    with state.locked():
        for prefix in prefixes:
            left += teardown(state, prefix, args.stop_timeout)
    if args.purge and not left:
        if (state.dir / MARKER).exists():
            shutil.rmtree(state.dir, ignore_errors=True)
            log("purged %s" % state.dir)
        else:
            log("not purging %s: no %s marker" % (state.dir, MARKER))
    return 0 if not left else 1


# --------------------------------------------------------------------------- status

def addresses_in(ns):
    p = run(["ip", "-j", "-n", ns, "addr", "show"], check=False)
    try:
        data = json.loads(p.stdout or "[]")
    except ValueError:
        return {}
    out = {}
    for link in data:
        out[link["ifname"]] = {"mac": link.get("address"), "up": "UP" in link.get("flags", []),
                               "addresses": ["%s/%d" % (a["local"], a["prefixlen"]) for a in link.get("addr_info", [])]}
    return out


def health(doc, prefix):
    problems = []
    present = set(lab_netns(prefix))
    expected = set(n["name"] for n in doc.get("namespaces", []))
    for name in sorted(expected - present):
        problems.append("namespace %s is missing" % name)
    for name in sorted(present - expected):
        problems.append("namespace %s exists but is not in lab.json" % name)
    links = set(root_links(prefix))
    for r in doc.get("mgmt", {}).get("root_interfaces", []):
        if r["name"] not in links:
            problems.append("root interface %s is missing" % r["name"])
    for n in doc.get("namespaces", []):
        if n["name"] not in present:
            continue
        have = addresses_in(n["name"])
        for i in n["interfaces"]:
            got = have.get(i["name"])
            if got is None:
                problems.append("%s: interface %s is missing" % (n["name"], i["name"]))
                continue
            for a in i["addresses"]:
                if a not in got["addresses"]:
                    problems.append("%s: %s lacks %s" % (n["name"], i["name"], a))
    procs = []
    for p in doc.get("processes", []):
        alive = proc_alive(p["pid"], p.get("start_time"))
        procs.append({"name": p["name"], "pid": p["pid"], "alive": alive, "log": p["log"]})
        if not alive:
            problems.append("process %s (pid %s) is not running; log %s" % (p["name"], p["pid"], p["log"]))
    if doc.get("state") != "up":
        problems.append("lab.json says state %r: an up did not finish (run down)" % doc.get("state"))
    return {"ok": not problems, "problems": problems, "processes": procs}


def cmd_status(args):
    state = State(args.state_dir)
    doc = state.load()
    if doc is None:
        stray = lab_netns(args.prefix) + root_links(args.prefix)
        print("no lab described in %s%s" % (state.lab_json, "; stray: %s (run down)" % stray if stray else ""))
        return 2
    h = health(doc, doc.get("prefix", args.prefix))
    if args.json:
        print(json.dumps(dict(doc, health=h), indent=2))
    else:
        print("lab %s (prefix %s, state %s, up since %s)" % (
            doc["state_dir"], doc["prefix"], doc.get("state"), doc.get("up_at", "-")))
        print("%-18s %-15s %-5s %s" % ("namespace", "role", "hv", "addresses"))
        for n in doc["namespaces"]:
            addrs = n["addresses"] or [a for i in n["interfaces"] if i["name"] != "lo"
                                       for a in i["addresses"] if not a.startswith("fe80")]
            print("%-18s %-15s %-5s %s" % (n["name"], n["role"], n.get("hypervisor") or "-", ", ".join(addrs)))
        c = doc.get("controller") or {}
        if c:
            print("controller: %s  API %s  TLS %s" % ("enabled" if c.get("enabled") else "not started",
                                                      c.get("api_url"), c.get("tls_url")))
        if doc.get("ca"):
            print("CA: %s" % doc["ca"]["cert"])
        if doc.get("tokens"):
            print("tokens: admin %s, soc %s, automation %s" % (doc["tokens"]["admin"], doc["tokens"]["soc"],
                                                               doc["tokens"]["automation"]))
        for p in h["processes"]:
            print("process %-14s pid %-7s %-8s log %s" % (p["name"], p["pid"], "running" if p["alive"] else "DEAD",
                                                         p["log"]))
        print("health: %s" % ("ok" if h["ok"] else "DEGRADED"))
        for pr in h["problems"]:
            print("  - " + pr)
    return 0 if h["ok"] else 1


# --------------------------------------------------------------------------- stop / start

def lab_process(doc, name):
    """The processes[] entry of lab.json called name (controller, enforcer-<hv>)."""
    for p in doc.get("processes", []):
        if p["name"] == name:
            return p
    raise UsageError("no lab process %r (have: %s)" % (
        name, ", ".join(p["name"] for p in doc.get("processes", [])) or "none"))


def loaded_lab(state):
    """lab.json of a lab that is up (UsageError otherwise)."""
    doc = state.load()
    if doc is None or doc.get("state") != "up":
        raise UsageError("no lab that is up in %s" % state.dir)
    return doc


def cmd_stop(args):
    """Stops one lab process and leaves everything else (namespaces, tables, other
    processes) as it is: SIGTERM then SIGKILL after --stop-timeout, or SIGKILL at once with
    --kill (a crash).  Already stopped is fine."""
    state = State(args.state_dir)
    loaded_lab(state)  # before locking: the lock would create a missing state directory
    with state.locked():
        p = lab_process(loaded_lab(state), args.name)
        pid, st = p["pid"], p.get("start_time")
        if not proc_alive(pid, st):
            log("%s (pid %d) is not running" % (args.name, pid))
            return 0
        if args.kill:
            log("%s: SIGKILL to %d" % (args.name, pid))
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(LabError):
                wait_until(lambda: not proc_alive(pid, st), 5, what="pid %d to die" % pid)
            left = [pid] if proc_alive(pid, st) else []
        else:
            left = stop_pids([(pid, st)], args.stop_timeout, args.name)
    if left:
        raise LabError("%s (pid %d) is still running" % (args.name, pid))
    log("%s stopped" % args.name)
    return 0


def cmd_start(args):
    """Starts one stopped lab process again with the command line, log and pid file
    recorded in lab.json (so the controller finds its database, an enforcer its credential,
    last-known-good and spool), records the new pid, and waits until it is ready: the
    controller when its API answers, an enforcer when it has rewritten its metrics file
    (its last-known-good is in force and its main loop runs)."""
    state = State(args.state_dir)
    loaded_lab(state)  # before locking: the lock would create a missing state directory
    with state.locked():
        doc = loaded_lab(state)
        p = lab_process(doc, args.name)
        if proc_alive(p["pid"], p.get("start_time")):
            log("%s already runs (pid %d)" % (args.name, p["pid"]))
            return 0
        started_at = time.time()
        child, st = spawn(p["argv"], Path(p["log"]), Path(p["pid_file"]))
        p.update(pid=child.pid, start_time=st)
        enforcer = next((e for e in doc.get("enforcers", []) if "enforcer-" + e["id"] == args.name), None)
        if args.name == "controller":
            doc["controller"]["pid"] = child.pid
        elif enforcer is not None:
            enforcer["pid"] = child.pid
        state.save(doc)
        log("started %s: pid %d" % (args.name, child.pid))

        def ready():
            if child.poll() is not None:
                raise LabError("%s exited with status %s:\n%s" % (args.name, child.returncode, log_tail(p["log"])))
            if args.name == "controller":
                return controller_answers(doc["controller"]["api_url"])
            if enforcer is not None and enforcer.get("metrics"):
                with contextlib.suppress(OSError):
                    return os.stat(enforcer["metrics"]).st_mtime >= started_at
                return False
            return True

        wait_until(ready, args.ready_timeout, what="%s to be ready" % args.name)
    return 0


# --------------------------------------------------------------------------- exec

def cmd_exec(args):
    cmd = list(args.argv)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("exec: give a command after --")
    name = args.namespace if args.namespace.startswith(args.prefix) else args.prefix + args.namespace
    if name not in list_netns():
        raise UsageError("no namespace %s (have: %s)" % (name, ", ".join(lab_netns(args.prefix)) or "none"))
    os.execvp("ip", ["ip", "netns", "exec", name] + cmd)


# --------------------------------------------------------------------------- main

class UsageError(Exception):
    pass


def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", default=None, help="namespace/interface prefix (default bh-lab-)")
    common.add_argument("--state-dir", default="/run/bulkhead-lab", help="default /run/bulkhead-lab")
    common.add_argument("--stop-timeout", type=float, default=10.0,
                        help="seconds between SIGTERM and SIGKILL (default 10)")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="see examples/lab/README.md")
    sub = ap.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", parents=[common], help="build the lab and start controller and enforcers")
    up.add_argument("--inventory", default=str(HERE / "inventory.json"))
    up.add_argument("--policy", default=str(HERE / "policy.json"), help="recorded in lab.json (the demo loads it)")
    up.add_argument("--controller-bin", default=default_bin(["build/bin/bulkhead-controller",
                                                             "build/controller/bulkhead-controller"]))
    up.add_argument("--enforcer-bin", default=default_bin(["build/bin/bulkhead-enforcer",
                                                           "build/enforcer/daemon/bulkhead-enforcer"]))
    up.add_argument("--no-controller", action="store_true", help="build the network only, no controller")
    up.add_argument("--no-enforcers", action="store_true", help="start no enforcers")
    up.add_argument("--controller-url", help="with --no-controller: enforcers use this controller instead")
    up.add_argument("--controller-arg", action="append", metavar="ARG", help="extra controller argument (repeat)")
    up.add_argument("--enforcer-arg", action="append", metavar="ARG", help="extra enforcer argument (repeat)")
    up.add_argument("--enforcer-metrics-port", type=int, default=0, metavar="PORT",
                    help="each enforcer also serves GET /metrics on its hypervisor's management address at PORT "
                         "(lab.json: enforcers[].metrics_url; default 0: off)")
    up.add_argument("--mgmt-net", default="10.255.0.0/24",
                    help="IPv4 management network; the controller gets its first address (default 10.255.0.0/24)")
    up.add_argument("--tls-port", type=int, default=8443, help="controller TLS port on the mgmt address")
    up.add_argument("--api-listen", default="127.0.0.1:8080", help="controller plain HTTP, loopback only")
    up.add_argument("--ready-timeout", type=float, default=30.0,
                    help="seconds to wait for the controller to answer and each enforcer to enroll")
    up.add_argument("--inject-failure", choices=["topology", "processes"],
                    default=os.environ.get("BULKHEAD_LAB_INJECT_FAILURE") or None,
                    help="fail on purpose at that stage (to test the cleanup)")

    down = sub.add_parser("down", parents=[common], help="stop everything and delete the namespaces")
    down.add_argument("--purge", action="store_true", help="also delete the state directory (CA, tokens, logs)")

    st = sub.add_parser("status", parents=[common], help="print lab.json and check it")
    st.add_argument("--json", action="store_true", help="lab.json plus a health section, as JSON")

    stop = sub.add_parser("stop", parents=[common], help="stop one lab process (the rest stays)")
    stop.add_argument("name", help="controller, enforcer-hv1, ... (processes[] in lab.json)")
    stop.add_argument("--kill", action="store_true", help="SIGKILL at once (a crash), not SIGTERM")

    start = sub.add_parser("start", parents=[common], help="start a stopped lab process again")
    start.add_argument("name", help="controller, enforcer-hv1, ... (processes[] in lab.json)")
    start.add_argument("--ready-timeout", type=float, default=30.0, help="seconds to wait until it is ready")

    ex = sub.add_parser("exec", parents=[common], help="run a command in a lab namespace")
    ex.add_argument("namespace", help="short name (vdi-001, hv1, fs-01, core...) or full name")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD")

    args = ap.parse_args(argv)
    args.prefix_given = args.prefix is not None
    if args.prefix is None:
        args.prefix = "bh-lab-"
    try:
        if not valid_prefix(args.prefix):
            raise UsageError("--prefix: letters, digits, . _ - only, starting with a letter or digit")
        args.state_dir = os.path.abspath(args.state_dir)
        if args.command != "exec" and os.geteuid() != 0:
            raise UsageError("must run as root (network namespaces)")
        return {"up": cmd_up, "down": cmd_down, "status": cmd_status, "exec": cmd_exec,
                "stop": cmd_stop, "start": cmd_start}[args.command](args)
    except UsageError as e:
        log("error: %s" % e)
        return 2
    except LabError as e:
        log("error: %s" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
