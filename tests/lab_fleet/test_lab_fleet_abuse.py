#!/usr/bin/env python3
"""Held under abuse (issue 14, acceptance 2), with the real controller, a real enforcer, the
real kernel and real packets:

  - the lab comes up with its controller and enforcers over TLS and the lab policy;
  - bench_fleet --join adds 2,000 simulated enforcers (one VDI each, the fleet generator's)
    to the same controller: they enroll, connect over TLS and ack their rulesets; then 500
    dashboard streams (GET /api/v1/stream) and 500 unauthenticated clients sending a request
    head one line every 2 s are opened on top, and /api/v1/health is probed over TLS;
  - meanwhile a quarantine through the API (POST /quarantines?wait_ms) is put in force on a
    real lab enforcer: its answer comes within the usual time (the lab suites' 5 s), the
    kernel's quarantine set holds the port, and the VDI's next probe is dropped by the
    quarantine (the drop counted and its NFLOG event stored) while its allow-list still
    answers;
  - bench_fleet then probes health again and exits 0 only when every simulated enforcer
    acked, every stream and slow head stayed open, health answered every probe with
    p99 < 100 ms and no simulated enforcer lost its channel; its figures are checked here too.

Runs under its own prefix, ports and management network; tears everything down in
`finally`. Every wait is a poll with a deadline. Exit 77 (skipped) when not root. Last
line: "N passed, N failed"."""
import json, os, resource, select, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from lab_harness import (BIN, EDR, FILE_SERVER, api, applied_quarantine, check, children, configure,  # noqa: E402
                         down_and_verify, expect_dropped, figure, in_ns, kill_children, lab_doc, lab_workload, log,
                         poll, report, up_with_lab_policy)

PREFIX, PORT, MGMT, TLS_PORT = "bhfab-", 18691, "10.254.82.0/24", 18943
configure(PREFIX, PORT, MGMT, TLS_PORT)
ENFORCERS, STREAMS, SLOW = 2000, 500, 500
EDR_443 = (EDR, "tcp", 443)  # a quarantined VDI's allow-list: the positive control
VICTIM = "vdi-002"


def read_json_lines(process, until, stop_at=None):
    """bench_fleet's stdout lines as JSON, up to the line for which stop_at(line) holds or
    until the deadline or EOF."""
    lines = []
    while time.monotonic() < until:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, min(1.0, until - time.monotonic())))
        if not ready:
            if process.poll() is not None:
                break
            continue
        text = process.stdout.readline()
        if not text:
            break
        try:
            line = json.loads(text)
        except ValueError:
            continue
        lines.append(line)
        if stop_at and stop_at(line):
            break
    return lines


def quarantine_in_kernel(state, hv, port):
    listed = in_ns(state, hv, "nft", "-j", "list", "set", "inet", "bulkhead", "quarantined_ports")
    if listed.returncode != 0:
        return False
    for item in json.loads(listed.stdout).get("nftables", []):
        if "set" in item and port in (item["set"].get("elem") or []):
            return True
    return False


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespaces, nftables)")
        return 77
    # Two connections per simulated enforcer, on both sides: the soft limit (1,024) is far too
    # low. The controller inherits it through lab.py.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    state = tempfile.mkdtemp(prefix="bulkhead-lab-fleet-")
    bench = None
    try:
        up = up_with_lab_policy(state)
        if not up:
            return report()
        admin, soc, _policy, _generation = up
        doc = lab_doc(state)
        mgmt_ip = doc["controller"]["tls_url"].split("//")[1].rsplit(":", 1)[0]  # https://ADDRESS:PORT
        bench = subprocess.Popen(
            [str(BIN / "bench_fleet"), "--join", "--host", "127.0.0.1", "--plain-port", str(PORT),
             "--tls-host", mgmt_ip, "--tls-port", str(TLS_PORT), "--ca", str(Path(state) / "pki/ca.crt"),
             "--server-name", "localhost", "--admin-token", admin, "--controller-pid", str(doc["controller"]["pid"]),
             "--enforcers", str(ENFORCERS), "--vdis", str(ENFORCERS), "--departments", "2", "--teams", "4",
             "--abuse-streams", str(STREAMS), "--abuse-slow", str(SLOW), "--health-probes", "100",
             "--phase-seconds", "240", "--log-level", "info"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(bench)
        lines = read_json_lines(bench, time.monotonic() + 600, lambda line: line.get("ready"))
        joined = next((line for line in lines if line.get("metric") == "join_all_acked"), None)
        check("%d simulated enforcers joined the lab's controller and acked their rulesets" % ENFORCERS,
              joined is not None and joined["acked"] == ENFORCERS and joined["value"] >= 0, joined)
        if joined:
            figure("simulated fleet: every enforcer acked after (ms)", round(joined["value"]))
        if not check("bench_fleet holds the fleet, %d dashboard streams and %d slow heads open" % (STREAMS, SLOW),
                     any(line.get("ready") for line in lines), lines[-3:]):
            return report()

        # The quarantine through the API on a real enforcer, under all of that.
        victim = lab_workload(state, VICTIM)
        started = time.monotonic()
        status, q = api("POST", "/quarantines?wait_ms=5000", soc, {"workload": VICTIM, "reason": "fleet abuse test"})
        answer_ms = (time.monotonic() - started) * 1000
        check("POST /quarantines?wait_ms=5000 answers 201 with the quarantine applied by %s" % victim["hypervisor"],
              status == 201 and all(e["state"] == "applied" for e in (q or {}).get("enforcers", [])) and
              bool((q or {}).get("enforcers")), (status, q))
        figure("quarantine through the API -> applied on the real enforcer, under abuse (ms)", round(answer_ms))
        check("... within the usual time (the lab suites' 5 s)", answer_ms < 5000, answer_ms)
        port = victim["interface"]
        check("the kernel's quarantined_ports on %s holds %s" % (victim["hypervisor"], port),
              poll(lambda: quarantine_in_kernel(state, victim["hypervisor"], port), 5, "quarantine in the kernel"))
        expect_dropped("quarantined %s -> file server tcp/445 (allowed before) dropped by its quarantine" % VICTIM,
                       state, VICTIM, FILE_SERVER, "tcp", 445, control=EDR_443, reason="quarantine", token=soc)
        check("applied_quarantine agrees", applied_quarantine(soc, VICTIM) is not None)
        status, released = api("DELETE", "/quarantines/%s?wait_ms=5000" % VICTIM, soc)
        check("release answers 200", status == 200, released)

        # bench_fleet probes health again and reports.
        bench.stdin.write("done\n")
        bench.stdin.flush()
        rest = read_json_lines(bench, time.monotonic() + 300)
        rc = bench.wait(timeout=120)
        health = next((line for line in rest if line.get("metric") == "health_p99_under_abuse"), None)
        lost = next((line for line in rest if line.get("metric") == "channels_lost_under_abuse"), None)
        if health:
            figure("/api/v1/health p99 under abuse (ms)", round(health["value"], 2))
        check("/api/v1/health answered every probe, p99 < 100 ms, with %d streams and %d slow heads open" % (STREAMS, SLOW),
              health is not None and health["failed_or_over_5s"] == 0 and 0 <= health["value"] < 100 and
              health["streams_open"] == STREAMS and health["slow_open"] == SLOW, health)
        check("no simulated enforcer lost its channel", lost is not None and lost["value"] == 0 and
              lost["channels_open"] == ENFORCERS, lost)
        check("bench_fleet --join exits 0", rc == 0, rc)
        return report()
    finally:
        if bench and bench.poll() is None:
            bench.kill()
        kill_children()
        down_and_verify(state)


if __name__ == "__main__":
    sys.exit(main())
