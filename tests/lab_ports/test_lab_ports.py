#!/usr/bin/env python3
"""The hypervisor's real ports (issue 17): port discovery in the enforcer, workloads bound
by MAC, unknown ports, the libvirt adapter. Real controller and enforcers over TLS, the lab
policy, real packets; the enforcers run with --port-discovery (patterns vnet*, tap*, …) and
--libvirt-dir pointing at a directory this test writes libvirt live XML into.

  bound by MAC  the lab inventory with vdi-002's port named by nothing but its MAC: lab.py
                names the port vnetN (as libvirt would) with libvirt's tap MAC (fe: and the
                guest's other five octets). The enforcer binds it: vdi-002 -> vdi-001 is
                dropped (counter + stored NFLOG event attributed to vdi-002) while vdi-002
                reaches the file server; GET /api/v1/ports shows the port bound to vdi-002.
  refresh       libvirt live XML for the desktop (name, UUID, labels, <mac>, <target
                dev='vnet17'>) is written, the port is deleted and re-created as vnet17 with
                the same MACs: the kernel's egress_ports map names vnet17 for vdi-002's
                class within 1 s of the link's creation (measured, polled every 5 ms with a
                deadline; reported as a figure), the policy holds again (dropped probe with
                counter and an event attributed to vdi-002, positive control), and the API
                shows vnet17 with the domain's name, UUID and labels, and the desktop's
                address learnt from the neighbour table.
  offline       the controller is SIGKILLed and the desktop refreshed again (vnet23): the
                enforcer alone binds it within 1 s and the policy holds (counter and control;
                no event check while the controller is down). Then the enforcer is stopped,
                the desktop refreshed once more (vnet31) and the enforcer started, the
                controller still down: it binds vnet31 from the controller's ruleset it kept
                on disk. Once the controller is back the API shows vnet31, and the controller
                sent the enforcer no ruleset (its channel opened with the controller's hash:
                a kernel binding is no difference to repair).
  unknown port  a port vnet29 to a namespace whose MAC no workload has: isolated by default
                (its probe to the file server is blocked, the "unidentified" drop counter
                moves, an NFLOG event with reason unidentified is stored; positive control:
                vdi-001 reaches the file server over the same hypervisor) and listed by
                GET /api/v1/ports?state=unidentified.

Lab prefix bhprt-, a temporary state directory, mgmt 10.254.83.0/24, API 127.0.0.1:18593,
TLS 18845. Torn down in `finally` (also on failure or SIGTERM); no namespace left. Exit 77
(skipped) when not root. Last line: "N passed, N failed"."""
import json, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from lab_harness import (FILE_SERVER, REPO, api, check, configure, counted_drops, down_and_verify,  # noqa: E402
                         drop_counters, expect_dropped, figure, kill_children, lab, lab_doc, lab_workload, poll,
                         probe, reaches, report, section, up_with_lab_policy)

PREFIX, PORT, MGMT, TLS_PORT = "bhprt-", 18593, "10.254.83.0/24", 18845
configure(PREFIX, PORT, MGMT, TLS_PORT)
PING_FS = (FILE_SERVER, "icmp", 0)
HV = PREFIX + "hv1"
REFRESHED, REFRESHED_OFFLINE, REFRESHED_RESTART = "vnet17", "vnet23", "vnet31"
UNKNOWN_NS, UNKNOWN_PORT, UNKNOWN_ADDRESS = PREFIX + "unk", "vnet29", "10.1.0.99"
UNKNOWN_GUEST_MAC, UNKNOWN_TAP_MAC = "02:12:34:56:78:9a", "fe:12:34:56:78:9a"
DOMAIN_UUID = "3f2a9c1e-0b7d-4e55-9a1c-0d2f4b6e8a02"

# libvirt's live status file (/run/libvirt/qemu/<name>.xml): a <domstatus> around the domain.
LIVE_XML = """<domstatus state='running' reason='booted' pid='4242'>
  <monitor path='/var/lib/libvirt/qemu/domain-7-{name}/monitor.sock' type='unix'/>
  <vcpus>
    <vcpu id='0' pid='4250'/>
  </vcpus>
  <domain type='kvm' id='7'>
    <name>{name}</name>
    <uuid>{uuid}</uuid>
    <metadata>
      <bulkhead:labels xmlns:bulkhead="urn:bulkhead:libvirt:1">
        <bulkhead:label name="pool">sales</bulkhead:label>
        <bulkhead:label name="image">win11-2026-11</bulkhead:label>
      </bulkhead:labels>
    </metadata>
    <memory unit='KiB'>4194304</memory>
    <devices>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <interface type='ethernet'>
        <mac address='{mac}'/>
        <target dev='{target}' managed='no'/>
        <model type='virtio'/>
        <alias name='net0'/>
      </interface>
    </devices>
  </domain>
</domstatus>
"""


def sh(*argv, timeout=30, input=None):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)


def ip_batch(ns, lines):
    r = sh("ip", "-n", ns, "-batch", "-", input="\n".join(lines) + "\n")
    return r.returncode == 0, r.stderr


def egress_ports(hv):
    """{interface: chain} of the kernel's egress_ports verdict map in hv, or None."""
    r = sh("ip", "netns", "exec", hv, "nft", "-j", "list", "map", "inet", "bulkhead", "egress_ports", timeout=10)
    if r.returncode != 0:
        return None
    out = {}
    for item in json.loads(r.stdout).get("nftables", []):
        for element in (item.get("map") or {}).get("elem", []) or []:
            key, verdict = element
            target = (verdict.get("jump") or verdict.get("goto") or {}).get("target", "")
            out[key] = target
    return out


def ports_of(token, query=""):
    status, body = api("GET", "/ports" + query, token)
    return body.get("ports", []) if status == 200 else []


def port_named(token, interface, query="?enforcer=hv1"):
    found = [p for p in ports_of(token, query) if p.get("interface") == interface]
    return found[0] if found else None


def connect_port(hv, ns, port, port_mac, guest_mac, addresses):
    """A VM port as a hypervisor makes one: the port `port` in hv with libvirt's tap MAC, its
    guest end eth0 in ns with the guest's MAC, the lab's routed per-port addressing."""
    ok, err = ip_batch(hv, ["link add %s address %s type veth peer name eth0 address %s netns %s"
                            % (port, port_mac, guest_mac, ns)])
    if not ok:
        return False, err
    hv_lines = ["link set %s up" % port, "addr add fe80::1/64 dev %s nodad" % port]
    hv_lines += ["route add %s/%d dev %s" % (a, 128 if ":" in a else 32, port) for a in addresses]
    ns_lines = ["link set eth0 up"]
    ns_lines += ["addr add %s/%d dev eth0%s" % (a, 128 if ":" in a else 32, " nodad" if ":" in a else "")
                 for a in addresses]
    ns_lines += ["route add default via 169.254.1.1 dev eth0 onlink"]
    if any(":" in a for a in addresses):
        ns_lines += ["route add default via fe80::1 dev eth0"]
    ok1, err1 = ip_batch(hv, hv_lines)
    ok2, err2 = ip_batch(ns, ns_lines)
    return ok1 and ok2, err1 + err2


def refresh(w, guest_mac, tap_mac, port, chain):
    """Re-creates vdi-002's port as `port` (same MACs) and polls the kernel every 5 ms, with
    a 5 s deadline, until egress_ports sends `port` to vdi-002's class `chain`. Returns the
    seconds from just before the link's creation to then (None: not within the deadline)."""
    t0 = time.monotonic()
    ok, err = connect_port(HV, PREFIX + "vdi-002", port, tap_mac, guest_mac, w["addresses"])
    t_link = time.monotonic()
    check("port %s created with the same MACs (the refreshed desktop)" % port, ok, err)
    deadline = t0 + 5
    while time.monotonic() < deadline:
        if (egress_ports(HV) or {}).get(port) == chain:
            elapsed = time.monotonic() - t0
            figure("refresh to %s: vdi-002's class bound to the new port" % port,
                   "%.0f ms after the link's creation began (creating and addressing it took %.0f ms)"
                   % (elapsed * 1000, (t_link - t0) * 1000))
            return elapsed
        time.sleep(0.005)
    return None


def interrupted(_signum, _frame):
    raise KeyboardInterrupt


def main():
    if os.geteuid() != 0:
        print("skipped: needs root")
        return 77
    signal.signal(signal.SIGTERM, interrupted)
    state = tempfile.mkdtemp(prefix="bulkhead-ports-")        # lab.py wants it empty
    files = tempfile.mkdtemp(prefix="bulkhead-ports-files-")  # the inventory, libvirt's directory
    t_start = time.monotonic()
    try:
        section("lab, vdi-002 bound by MAC")
        inventory = json.loads((REPO / "examples/lab/inventory.json").read_text())
        vdi002 = next(w for w in inventory["workloads"] if w["id"] == "vdi-002")
        del vdi002["attachment"]["interface"]
        inventory_path = Path(files) / "inventory-by-mac.json"
        inventory_path.write_text(json.dumps(inventory, indent=1))
        libvirt_dir = Path(files) / "libvirt"
        libvirt_dir.mkdir()
        lab_up = up_with_lab_policy(state, "--inventory", str(inventory_path), "--enforcer-arg=--port-discovery",
                                    "--enforcer-arg=--libvirt-dir=%s" % libvirt_dir)
        if lab_up is None:
            return report()
        run(state, lab_up[1], vdi002, libvirt_dir)
    except KeyboardInterrupt:
        check("interrupted", False)
    finally:
        kill_children()
        section("teardown")
        down_and_verify(state)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(files, ignore_errors=True)
    print("total %.0f s" % (time.monotonic() - t_start))
    return report()


def run(state, soc, vdi002, libvirt_dir):
    w = lab_workload(state, "vdi-002")
    vdi001 = lab_workload(state, "vdi-001")
    first_port = w["interface"]
    check("lab.py named vdi-002's port like a hypervisor would (%s)" % first_port, first_port.startswith("vnet"), w)
    bound = poll(lambda: (port_named(soc, first_port) or {}).get("workload") == "vdi-002" and
                 port_named(soc, first_port), 15, "GET /ports shows %s bound to vdi-002" % first_port)
    check("the port was identified by the tap convention (fe: + the guest MAC's other octets)",
          bound and bound.get("identified_by") == "tap-convention" and bound.get("mac") == vdi002["mac"].lower(), bound)
    expect_dropped("vdi-002 -> vdi-001 dropped on its discovered port, event attributed to vdi-002", state,
                   "vdi-002", vdi001["addresses"][0], "icmp", control=PING_FS, token=soc)
    chain_of_vdi002 = (egress_ports(HV) or {}).get(first_port)
    check("vdi-002's class is bound to %s in the kernel (%s)" % (first_port, chain_of_vdi002), bool(chain_of_vdi002))

    # ---- refresh: the desktop comes back under a new tap name, same MAC ---------------------
    section("refresh: new port name, same MAC")
    (libvirt_dir / "desk-002.xml").write_text(LIVE_XML.format(name="desk-002", uuid=DOMAIN_UUID,
                                                              mac=vdi002["mac"], target=REFRESHED))
    r = sh("ip", "-n", HV, "link", "del", first_port)
    check("port %s deleted (the desktop logged off)" % first_port, r.returncode == 0, r.stderr)
    poll(lambda: first_port not in (egress_ports(HV) or {first_port: 1}), 5,
         "the kernel binding of %s is gone with it" % first_port)
    guest_mac = vdi002["mac"].lower()
    tap_mac = "fe" + guest_mac[2:]
    measured = refresh(w, guest_mac, tap_mac, REFRESHED, chain_of_vdi002)
    check("vdi-002's policy is in force on %s within 1 s of the port appearing" % REFRESHED,
          measured is not None and measured < 1.0, "not within 5 s" if measured is None else "%.3f s" % measured)
    expect_dropped("after the refresh vdi-002 -> vdi-001 is dropped again, the event attributed to vdi-002", state,
                   "vdi-002", vdi001["addresses"][0], "icmp", control=PING_FS, token=soc)
    refreshed = poll(lambda: (port_named(soc, REFRESHED) or {}).get("domain") and port_named(soc, REFRESHED), 15,
                     "GET /ports shows %s with libvirt's domain" % REFRESHED)
    domain = (refreshed or {}).get("domain") or {}
    check("the API shows the current interface bound to vdi-002, identified by libvirt",
          refreshed and refreshed.get("workload") == "vdi-002" and refreshed.get("identified_by") == "libvirt",
          refreshed)
    check("libvirt's live XML gave the domain's name, UUID and labels",
          domain.get("name") == "desk-002" and domain.get("uuid") == DOMAIN_UUID and
          domain.get("labels") == {"pool": "sales", "image": "win11-2026-11"}, domain)
    check("the old port is no longer listed", port_named(soc, first_port) is None, ports_of(soc, "?enforcer=hv1"))
    # The replies to vdi-002's probes were routed out of vnet17: the hypervisor resolved the
    # desktop's address there (a neighbour entry), which port discovery learns.
    learnt = poll(lambda: w["addresses"][0] in ((port_named(soc, REFRESHED) or {}).get("addresses") or []), 15,
                  "GET /ports shows %s's address %s learnt from the neighbour table" % (REFRESHED, w["addresses"][0]))
    check("the port's addresses are learnt from the neighbour table", bool(learnt), port_named(soc, REFRESHED))

    # ---- the same with the controller down -------------------------------------------------
    section("refresh with the controller down")
    stopped = lab(state, "stop", "controller", "--kill")
    check("controller SIGKILLed", stopped.returncode == 0, stopped.stderr[-500:])
    (libvirt_dir / "desk-002.xml").write_text(LIVE_XML.format(name="desk-002", uuid=DOMAIN_UUID,
                                                              mac=vdi002["mac"], target=REFRESHED_OFFLINE))
    r = sh("ip", "-n", HV, "link", "del", REFRESHED)
    check("port %s deleted" % REFRESHED, r.returncode == 0, r.stderr)
    measured = refresh(w, guest_mac, tap_mac, REFRESHED_OFFLINE, chain_of_vdi002)
    check("with the controller down, vdi-002's policy is in force on %s within 1 s" % REFRESHED_OFFLINE,
          measured is not None and measured < 1.0, "not within 5 s" if measured is None else "%.3f s" % measured)
    # No token: the controller is down, so there is no stored event to ask for.
    expect_dropped("controller down: vdi-002 -> vdi-001 dropped on %s" % REFRESHED_OFFLINE, state, "vdi-002",
                   vdi001["addresses"][0], "icmp", control=PING_FS)

    section("enforcer restart, controller still down")
    stopped = lab(state, "stop", "enforcer-hv1")
    check("enforcer hv1 stopped", stopped.returncode == 0, stopped.stderr[-500:])
    (libvirt_dir / "desk-002.xml").write_text(LIVE_XML.format(name="desk-002", uuid=DOMAIN_UUID,
                                                              mac=vdi002["mac"], target=REFRESHED_RESTART))
    r = sh("ip", "-n", HV, "link", "del", REFRESHED_OFFLINE)
    check("port %s deleted while the enforcer is down" % REFRESHED_OFFLINE, r.returncode == 0, r.stderr)
    ok, err = connect_port(HV, PREFIX + "vdi-002", REFRESHED_RESTART, tap_mac, guest_mac, w["addresses"])
    check("port %s created while the enforcer is down" % REFRESHED_RESTART, ok, err)
    t0 = time.monotonic()
    started = lab(state, "start", "enforcer-hv1")
    check("enforcer hv1 started (controller down)", started.returncode == 0, started.stderr[-500:])
    bound = poll(lambda: (egress_ports(HV) or {}).get(REFRESHED_RESTART) == chain_of_vdi002, 5,
                 "the restarted enforcer binds %s to vdi-002's class from its saved ruleset" % REFRESHED_RESTART)
    if bound:
        figure("enforcer start to %s bound (controller down)" % REFRESHED_RESTART,
               "%.0f ms, lab.py's start and readiness wait included" % ((time.monotonic() - t0) * 1000))
    expect_dropped("enforcer restarted, controller down: vdi-002 -> vdi-001 dropped on %s" % REFRESHED_RESTART,
                   state, "vdi-002", vdi001["addresses"][0], "icmp", control=PING_FS)  # no token: controller down

    log_path = Path(next(p["log"] for p in lab_doc(state)["processes"] if p["name"] == "enforcer-hv1"))
    rulesets_before = log_path.read_text(errors="replace").count("applied generation")
    started = lab(state, "start", "controller")
    check("controller started again", started.returncode == 0, started.stderr[-500:])
    back = poll(lambda: (port_named(soc, REFRESHED_RESTART) or {}).get("workload") == "vdi-002" and
                port_named(soc, REFRESHED_RESTART), 20,
                "after the controller's restart GET /ports shows %s bound to vdi-002" % REFRESHED_RESTART)
    # libvirt's file was rewritten in place (same name, new <target>): re-read all the same.
    check("the API follows the refreshes made while it was down, from libvirt's rewritten file",
          back and back.get("identified_by") == "libvirt", back)
    status, hv1 = api("GET", "/enforcers/hv1", soc)
    rulesets_after = log_path.read_text(errors="replace").count("applied generation")
    check("hv1 is in sync and the controller sent it no ruleset (the kernel binding is not a difference)",
          status == 200 and hv1.get("in_sync") and rulesets_after == rulesets_before,
          {"in_sync": (hv1 or {}).get("in_sync"), "rulesets applied from the channel": rulesets_after - rulesets_before})

    # ---- a port nobody knows --------------------------------------------------------------
    section("unknown port")
    r = sh("ip", "netns", "add", UNKNOWN_NS)
    check("namespace for an unknown VM", r.returncode == 0, r.stderr)
    sh("ip", "-n", UNKNOWN_NS, "link", "set", "lo", "up")
    ok, err = connect_port(HV, UNKNOWN_NS, UNKNOWN_PORT, UNKNOWN_TAP_MAC, UNKNOWN_GUEST_MAC, [UNKNOWN_ADDRESS])
    check("port %s created for a MAC no workload has" % UNKNOWN_PORT, ok, err)
    listed = poll(lambda: port_named(soc, UNKNOWN_PORT, "?state=unidentified"), 15,
                  "GET /ports?state=unidentified lists %s" % UNKNOWN_PORT)
    check("listed as unidentified on hv1 with its MAC", listed and listed.get("enforcer") == "hv1" and
          listed.get("mac") == UNKNOWN_TAP_MAC and "workload" not in listed, listed)
    control = reaches(state, "vdi-001", FILE_SERVER)
    before = drop_counters(state, "hv1")
    since_ms = int(time.time() * 1000) - 100
    result = probe(state, "unk", FILE_SERVER)
    moved = counted_drops(before, drop_counters(state, "hv1"), "unidentified")
    check("the unknown port is isolated: its ping to the file server is blocked, the unidentified drop counter "
          "moves, vdi-001 reaches the file server over the same hypervisor",
          control and result == "blocked" and bool(moved),
          {"control": control, "probe": result, "counted": moved})

    def stored():
        status, body = api("GET", "/events?type=drop&reason=unidentified&order=asc&limit=100&from=%d" % since_ms, soc)
        return [e for e in (body or {}).get("events", []) if e.get("indev") == UNKNOWN_PORT and
                e.get("dst") == FILE_SERVER] if status == 200 else []
    events = poll(stored, 15, "the controller stored the unidentified drop event of the probe")
    check("the drop event names the port and no workload",
          events and not events[0].get("workload") and events[0].get("src") == UNKNOWN_ADDRESS, events[:1])
    status, body = api("GET", "/enforcers/hv1", soc)
    reported = [p["interface"] for p in ((body or {}).get("details") or {}).get("ports", [])]
    check("GET /enforcers/hv1 carries the ports it reported", status == 200 and UNKNOWN_PORT in reported and
          REFRESHED_RESTART in reported, reported)


if __name__ == "__main__":
    sys.exit(main())
