#!/usr/bin/env python3
"""End to end in the lab (the controller's acceptance): the real controller and enforcers
over TLS, the lab policy activated through the API, real traffic, a real nmap scan from a
VDI, the incident, the automatic quarantine in force on the hypervisor, and the release.

Every "dropped" check (lab_harness.expect_dropped) sees the drop itself: the probe timed
out, the hypervisor's drop rule counted it, the controller stored its NFLOG drop event, and
an allowed probe from the same VDI got through just before.

Runs the lab under its own prefix, state directory, management network and API port, so
it can run beside the demo; tears it down in `finally`, also on failure. Exit 77 (skipped)
when not root or nmap is missing. Last line: "N passed, N failed"."""
import json, os, shutil, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from lab_harness import (EDR, FILE_SERVER, all_in_sync, api, applied_quarantine, background, check, configure,  # noqa: E402
                         down_and_verify, expect_dropped, in_ns, incidents_of, kill_children, poll, reaches, report,
                         up_with_lab_policy)

PREFIX, PORT, MGMT, TLS_PORT = "bhe2e-", 18181, "10.254.77.0/24", 18443
configure(PREFIX, PORT, MGMT, TLS_PORT)
DECOY_IP = "10.0.0.66"
PING_FS = (FILE_SERVER, "icmp", 0)      # the positive control of a VDI: allowed by the policy
EDR_443 = (EDR, "tcp", 443)             # the positive control of a quarantined VDI: its allow-list


def main():
    if os.geteuid() != 0 or shutil.which("nmap") is None:
        print("skipped: needs root and nmap")
        return 77
    state = tempfile.mkdtemp(prefix="bulkhead-e2e-")
    try:
        lab_up = up_with_lab_policy(state)
        if lab_up is None:
            return 1
        admin, soc, policy, _ = lab_up
        # Allowed and forbidden flows with real packets.
        check("vdi-001 -> file server ping passes", reaches(state, "vdi-001", FILE_SERVER))
        expect_dropped("vdi-001 -> vdi-002 (same hypervisor) ping dropped by the vdi -> vdi deny rule on hv1", state,
                       "vdi-001", "10.1.0.2", "icmp", control=PING_FS, reason="deny", token=soc)
        expect_dropped("vdi-001 -> vdi-101 (other hypervisor) ping dropped by the vdi -> vdi deny rule on hv1", state,
                       "vdi-001", "10.1.1.1", "icmp", control=PING_FS, reason="deny", token=soc)
        expect_dropped("vdi-001 -> file server tcp/80 (no rule) dropped by the default rule on hv1", state,
                       "vdi-001", FILE_SERVER, "tcp", 80, control=(FILE_SERVER, "tcp", 445), reason="default", token=soc)
        # A long-lived connection from vdi-002 to the file server must die on quarantine.
        holder = background(state, "vdi-002", "ping", "-i", "0.2", "-W", "1", "10.0.0.30")
        try:
            scan = in_ns(state, "vdi-002", "nmap", "-sT", "-Pn", "-n", "--max-retries", "0", "-p", "22,139,445,3389",
                         "10.1.0.0/30", "10.1.1.0/30", timeout=120)
            check("nmap ran in vdi-002", scan.returncode == 0)
            drops = poll(lambda: [e for e in api("GET", "/events?workload=vdi-002&type=drop&limit=200", soc)[1]["events"]
                                  if e["reason"] in ("default", "deny")], 15, "drop events of the scan reach the controller")
            if drops:
                e = drops[0]
                check("drop attributed to vdi-002 on hv1 via its port vdi002",
                      e["enforcer"] == "hv1" and e["src"] == "10.1.0.2" and e["direction"] == "out"
                      and e["indev"] == "vdi002" and e.get("proto_name") == "tcp")
            incident = poll(lambda: incidents_of(soc, "vdi-002"), 15, "an incident for vdi-002")
            if incident:
                check("incident explains: " + incident[0]["explanation"], "vdi-002 (user sato) tried" in incident[0]["explanation"])
            quarantine = poll(lambda: applied_quarantine(soc, "vdi-002"), 15, "automatic quarantine of vdi-002 applied on hv1")
            if quarantine:
                check("the quarantine is automatic, by the analyzer", quarantine["automatic"] and quarantine["actor"] == "analyzer")
            # tcp/445, not ping: the long-running ping to the same address must not stand in for the probe.
            expect_dropped("quarantined vdi-002 -> file server tcp/445 (allowed before) dropped by its quarantine",
                           state, "vdi-002", FILE_SERVER, "tcp", 445, control=EDR_443, reason="quarantine", token=soc)
        finally:
            holder.terminate()
            out, _ = holder.communicate(timeout=10)
        # The ping that ran across the quarantine stopped getting replies.
        replies = [line for line in out.splitlines() if "bytes from" in line]
        check("the long-running ping had replies before the quarantine (%d)" % len(replies), len(replies) > 0)
        status, released = api("DELETE", "/quarantines/vdi-002?wait_ms=5000", soc)
        check("DELETE releases vdi-002, acked by hv1", status == 200 and released["released"] and released["applied"])
        check("released vdi-002 reaches the file server again", reaches(state, "vdi-002", FILE_SERVER))
        expect_dropped("and VDI to VDI stays dropped (vdi-002 -> vdi-003 ping, deny rule)", state, "vdi-002",
                       "10.1.0.3", "icmp", control=PING_FS, reason="deny", token=soc)
        # One packet to the decoy is enough: a critical incident and the automatic quarantine.
        expect_dropped("vdi-103 -> decoy 10.0.0.66 ping dropped by the decoy rule on hv2", state, "vdi-103", DECOY_IP,
                       "icmp", control=PING_FS, reason="decoy", token=soc)
        decoy = poll(lambda: [i for i in incidents_of(soc, "vdi-103") if i["severity"] == "critical"], 15, "a critical incident for vdi-103's decoy touch")
        if decoy:
            check("incident explains: " + decoy[0]["explanation"],
                  "vdi-103 (user" in decoy[0]["explanation"] and "touched decoy 10.0.0.66" in decoy[0]["explanation"])
        contained = poll(lambda: applied_quarantine(soc, "vdi-103"), 15, "automatic quarantine of vdi-103 applied on hv2")
        if contained:
            check("decoy quarantine is automatic, on hv2", contained["automatic"] and contained["enforcers"][0]["enforcer"] == "hv2")
        # Only its quarantine allow-list: the EDR server (the positive control), and the admin's forensic access.
        expect_dropped("quarantined vdi-103 -> file server ping dropped by its quarantine", state, "vdi-103",
                       FILE_SERVER, "icmp", control=EDR_443, reason="quarantine", token=soc)
        expect_dropped("quarantined vdi-103 -> file server tcp/445 dropped by its quarantine", state, "vdi-103",
                       FILE_SERVER, "tcp", 445, control=EDR_443, reason="quarantine", token=soc)
        check("quarantined vdi-103 still reaches the EDR server (tcp/443)", reaches(state, "vdi-103", EDR, "tcp", 443))
        check("the admin terminal still reaches quarantined vdi-103 on ssh", reaches(state, "adm-01", "10.1.1.3", "tcp", 22))
        expect_dropped("quarantined vdi-103 -> vdi-102 tcp/445 dropped by its quarantine", state, "vdi-103", "10.1.1.2",
                       "tcp", 445, control=EDR_443, reason="quarantine", token=soc)
        status, released = api("DELETE", "/quarantines/vdi-103?wait_ms=5000", soc)
        check("DELETE releases vdi-103, acked by hv2", status == 200 and released["released"] and released["applied"])
        # The decoys as a tripwire: the kernel contains the VDI on that packet; the controller
        # records it ("contained by the kernel", with its incident) and a release lifts it.
        tripwired = json.loads(json.dumps(policy))
        for segment in tripwired["segments"]:
            if segment.get("decoy"):
                segment["tripwire"] = True
        status, revision = api("POST", "/policies", admin, tripwired)
        status2, activated = api("POST", "/policies/%d/activate" % revision["id"], admin) if status == 201 else (status, {})
        check("the lab policy with its decoys as tripwires activated", status == 201 and status2 == 200, activated)
        poll(lambda: all_in_sync(soc, activated.get("generation")), 20, "every enforcer acks the tripwire policy")
        expect_dropped("vdi-102 -> decoy 10.0.0.66 ping dropped by the tripwire rule on hv2", state, "vdi-102", DECOY_IP,
                       "icmp", control=PING_FS, reason="tripwire", token=soc)
        expect_dropped("vdi-102's next packets to the file server (allowed before) dropped by the quarantine the kernel "
                       "put in force", state, "vdi-102", FILE_SERVER, "icmp", control=EDR_443, reason="quarantine", token=soc)
        kernel = poll(lambda: applied_quarantine(soc, "vdi-102"), 15, "vdi-102's kernel containment recorded and applied")
        if kernel:
            check("the quarantine says contained by the kernel, with its incident",
                  kernel.get("contained_by") == "kernel" and kernel.get("actor") == "kernel"
                  and isinstance(kernel.get("incident"), int), kernel)
        status, released = api("DELETE", "/quarantines/vdi-102?wait_ms=5000", soc)
        check("DELETE releases vdi-102, acked by hv2", status == 200 and released["released"] and released["applied"], released)
        check("released vdi-102 reaches the file server again", poll(lambda: reaches(state, "vdi-102", FILE_SERVER), 10))
    finally:
        kill_children()
        down_and_verify(state)
        shutil.rmtree(state, ignore_errors=True)
    return report()


if __name__ == "__main__":
    sys.exit(main())
