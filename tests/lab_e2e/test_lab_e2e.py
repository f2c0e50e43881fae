#!/usr/bin/env python3
"""End to end in the lab (issue 4, acceptance 1): the real controller and enforcers over TLS,
the lab policy activated through the API, real traffic, a real nmap scan from a VDI, the
incident, the automatic quarantine in force on the hypervisor, and the release.

Runs the lab under its own prefix, state directory, management network and API port, so
it can run beside the demo; tears it down in `finally`, also on failure. Exit 77 (skipped)
when not root or nmap is missing."""
import os, shutil, subprocess, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from lab_harness import api, background, check, configure, failures, in_ns, lab, poll, up_with_lab_policy  # noqa: E402

PREFIX, PORT, MGMT, TLS_PORT = "bhe2e-", 18181, "10.254.77.0/24", 18443
configure(PREFIX, PORT, MGMT, TLS_PORT)


PROBE = ("import socket,sys\ns=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
         "s.settimeout(2)\ntry:\n s.connect((sys.argv[1],int(sys.argv[2])));print('reached')\n"
         "except ConnectionRefusedError:\n print('reached')\nexcept OSError:\n print('blocked')\n")


def tcp_reaches(state, ns, host, port):
    """A TCP connect from namespace ns: an answer (accepted or refused) means the packets
    passed the enforcer; silence until the timeout means they were dropped."""
    r = in_ns(state, ns, sys.executable, "-c", PROBE, host, str(port))
    return r.stdout.strip() == "reached"


def main():
    if os.geteuid() != 0 or shutil.which("nmap") is None:
        print("skipped: needs root and nmap")
        return 77
    state = tempfile.mkdtemp(prefix="bulkhead-e2e-")
    try:
        lab_up = up_with_lab_policy(state)
        if lab_up is None:
            return 1
        _, soc, _, _ = lab_up
        # Allowed and forbidden flows with real packets.
        check(in_ns(state, "vdi-001", "ping", "-c1", "-W2", "10.0.0.30").returncode == 0, "vdi-001 -> file server ping passes")
        check(in_ns(state, "vdi-001", "ping", "-c1", "-W1", "10.1.0.2").returncode != 0, "vdi-001 -> vdi-002 (same hypervisor) dropped")
        check(in_ns(state, "vdi-001", "ping", "-c1", "-W1", "10.1.1.1").returncode != 0, "vdi-001 -> vdi-101 (other hypervisor) dropped")
        # A long-lived connection from vdi-002 to the file server must die on quarantine.
        holder = background(state, "vdi-002", "ping", "-i", "0.2", "-W", "1", "10.0.0.30")
        try:
            scan = in_ns(state, "vdi-002", "nmap", "-sT", "-Pn", "-n", "--max-retries", "0", "-p", "22,139,445,3389",
                         "10.1.0.0/30", "10.1.1.0/30", timeout=120)
            check(scan.returncode == 0, "nmap ran in vdi-002")
            drops = poll(lambda: [e for e in api("GET", "/events?workload=vdi-002&type=drop&limit=200", soc)[1]["events"]
                                  if e["reason"] in ("default", "deny")], 15, "drop events of the scan reach the controller")
            if drops:
                e = drops[0]
                check(e["enforcer"] == "hv1" and e["src"] == "10.1.0.2" and e["direction"] == "out"
                      and e["indev"] == "vdi002" and e.get("proto_name") == "tcp",
                      "drop attributed to vdi-002 on hv1 via its port vdi002")
            incident = poll(lambda: api("GET", "/incidents?workload=vdi-002", soc)[1]["incidents"], 15, "an incident for vdi-002")
            if incident:
                check("vdi-002 (user sato) tried" in incident[0]["explanation"], "incident explains: " + incident[0]["explanation"])
            quarantine = poll(lambda: (lambda r: r[1] if r[0] == 200 and r[1]["enforcers"][0]["state"] == "applied" else None)(
                api("GET", "/quarantines/vdi-002", soc)), 15, "automatic quarantine of vdi-002 applied on hv1")
            if quarantine:
                check(quarantine["automatic"] and quarantine["actor"] == "analyzer", "the quarantine is automatic, by the analyzer")
            check(in_ns(state, "vdi-002", "ping", "-c1", "-W1", "10.0.0.30").returncode != 0, "quarantined vdi-002 cannot reach the file server")
        finally:
            holder.terminate()
            out, _ = holder.communicate(timeout=10)
        # The ping that ran across the quarantine stopped getting replies.
        replies = [line for line in out.splitlines() if "bytes from" in line]
        check(len(replies) > 0, "the long-running ping had replies before the quarantine (%d)" % len(replies))
        status, released = api("DELETE", "/quarantines/vdi-002?wait_ms=5000", soc)
        check(status == 200 and released["released"] and released["applied"], "DELETE releases vdi-002, acked by hv1")
        check(in_ns(state, "vdi-002", "ping", "-c1", "-W2", "10.0.0.30").returncode == 0, "released vdi-002 reaches the file server again")
        check(in_ns(state, "vdi-002", "ping", "-c1", "-W1", "10.1.0.3").returncode != 0, "and VDI to VDI stays dropped")
        # One packet to the decoy is enough: a critical incident and the automatic quarantine.
        check(in_ns(state, "vdi-103", "ping", "-c1", "-W1", "10.0.0.66").returncode != 0, "vdi-103 -> decoy 10.0.0.66 dropped")
        decoy = poll(lambda: [i for i in api("GET", "/incidents?workload=vdi-103", soc)[1]["incidents"]
                              if i["severity"] == "critical"], 15, "a critical incident for vdi-103's decoy touch")
        if decoy:
            check("vdi-103 (user" in decoy[0]["explanation"] and "touched decoy 10.0.0.66" in decoy[0]["explanation"],
                  "incident explains: " + decoy[0]["explanation"])
        contained = poll(lambda: (lambda r: r[1] if r[0] == 200 and r[1]["enforcers"][0]["state"] == "applied" else None)(
            api("GET", "/quarantines/vdi-103", soc)), 15, "automatic quarantine of vdi-103 applied on hv2")
        if contained:
            check(contained["automatic"] and contained["enforcers"][0]["enforcer"] == "hv2", "decoy quarantine is automatic, on hv2")
        check(in_ns(state, "vdi-103", "ping", "-c1", "-W1", "10.0.0.30").returncode != 0, "quarantined vdi-103 cannot reach the file server")
        check(not tcp_reaches(state, "vdi-103", "10.0.0.30", 445), "quarantined vdi-103: file server tcp/445 blocked")
        # Only its quarantine allow-list: the EDR server, and the admin's forensic access.
        check(tcp_reaches(state, "vdi-103", "10.0.0.20", 443), "quarantined vdi-103 still reaches the EDR server (tcp/443)")
        check(tcp_reaches(state, "adm-01", "10.1.1.3", 22), "the admin terminal still reaches quarantined vdi-103 on ssh")
        check(not tcp_reaches(state, "vdi-103", "10.1.1.2", 445), "quarantined vdi-103 -> vdi-102 tcp/445 blocked")
        status, released = api("DELETE", "/quarantines/vdi-103?wait_ms=5000", soc)
        check(status == 200 and released["released"] and released["applied"], "DELETE releases vdi-103, acked by hv2")
    finally:
        down = lab(state, "down", "--purge")
        check(down.returncode == 0, "lab down")
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        check(PREFIX not in left, "no namespace of the test left")
        shutil.rmtree(state, ignore_errors=True)
    print("%d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
