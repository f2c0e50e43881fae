#!/usr/bin/env python3
"""End to end in the lab (the controller's acceptance): the real controller and enforcers
over TLS, the lab policy activated through the API, real traffic, a real nmap scan from a
VDI, the incident, the automatic quarantine in force on the hypervisor, and the release.

Every "dropped" check (lab_harness.expect_dropped) sees the drop itself: the probe timed
out, the hypervisor's drop rule counted it, the controller stored its NFLOG drop event, and
an allowed probe from the same VDI got through just before.

The metrics (issue 17): the controller's GET /api/v1/metrics and each enforcer's GET /metrics
(served on its hypervisor's management address, scraped from the root namespace) are parsed
and checked against the API's figures at the same moment, at each phase: the fleet (channels,
states, per enforcer generation, drift repairs, NFLOG received and lost, apply latency),
open incidents, quarantines in force (0, 1 while vdi-002 is quarantined, 0 after its
release), events ingested.

Runs the lab under its own prefix, state directory, management network and API port, so
it can run beside the demo; tears it down in `finally`, also on failure. Exit 77 (skipped)
when not root or nmap is missing. Last line: "N passed, N failed"."""
import json, os, shutil, signal, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from lab_harness import (EDR, FILE_SERVER, all_in_sync, api, applied_quarantine, background, check, configure,  # noqa: E402
                         controller_metrics, down_and_verify, enforcers, expect_dropped, figure, in_ns, incidents_of,
                         kill_children, lab_doc, poll, reaches, report, sample, sample_sum, scrape, section,
                         up_with_lab_policy)

PREFIX, PORT, MGMT, TLS_PORT = "bhe2e-", 18181, "10.254.77.0/24", 18443
ENFORCER_METRICS_PORT = 18190           # each enforcer's GET /metrics on its hypervisor's management address
configure(PREFIX, PORT, MGMT, TLS_PORT)
DECOY_IP = "10.0.0.66"
PING_FS = (FILE_SERVER, "icmp", 0)      # the positive control of a VDI: allowed by the policy
EDR_443 = (EDR, "tcp", 443)             # the positive control of a quarantined VDI: its allow-list


# ----------------------------------------------------------------------------- metrics
# The controller's GET /api/v1/metrics and each enforcer's GET /metrics, scraped over HTTP,
# against the API's own figures at the same moment. Each figure is a tuple of values obtained
# independently (the controller's metrics page, the API's JSON, the enforcer's own page); the
# figures move (heartbeats every 5 s, drops, acks), so the suite polls until every tuple
# agrees and then checks each one, so that a disagreement names its figure and its values.


def fleet_figures(state, soc):
    """{figure: (values...)} for the fleet: the controller's metrics, GET /enforcers, and each
    enforcer's own /metrics (from the root namespace, over the management link)."""
    metrics = controller_metrics(soc)
    listed = enforcers(soc)
    own = {e["id"]: scrape(e["metrics_url"]) for e in lab_doc(state)["enforcers"]}
    figures = {}
    connected = sum(1 for e in listed.values() if e["connected"])
    figures["control channels open (metrics) = enforcers connected (GET /enforcers)"] = (
        sample(metrics, "bulkhead_controller_channels_open"), connected)
    figures["enforcers connected (metrics) = GET /enforcers"] = (
        sample(metrics, "bulkhead_controller_enforcers_connected"), connected)
    figures["enforcers in sync (metrics) = GET /enforcers"] = (
        sample(metrics, "bulkhead_controller_enforcers_in_sync"), sum(1 for e in listed.values() if e["in_sync"]))
    figures["enforcers whose apply failed (metrics) = GET /enforcers"] = (
        sample(metrics, "bulkhead_controller_enforcers_apply_failed"),
        sum(1 for e in listed.values() if e.get("apply_state") == "failed"))
    for hv in sorted(own):
        e, page = listed.get(hv, {}), own[hv]
        nflog = e.get("details", {}).get("nflog", {})
        reported_ms = e.get("details", {}).get("apply_ms")

        def own_sum(name, page=page):
            # An enforcer lists NFLOG series per group once the group exists: none yet is 0.
            return None if page is None else (sample_sum(page, name) or 0)

        figures["%s applied generation: controller metrics = GET /enforcers = its own /metrics" % hv] = (
            sample(metrics, "bulkhead_controller_enforcer_applied_generation", enforcer=hv),
            # The controller's generation, which the enforcer's own page calls controller_generation
            # (its bulkhead_enforcer_applied_generation counts its own applies, another number).
            e.get("applied_generation"), sample(page, "bulkhead_enforcer_controller_generation"))
        figures["%s drift repairs: controller metrics = GET /enforcers = its own /metrics" % hv] = (
            sample(metrics, "bulkhead_controller_enforcer_drift_repairs_total", enforcer=hv),
            e.get("drift_repairs"), sample(page, "bulkhead_enforcer_drift_repairs_total"))
        figures["%s NFLOG events received: controller metrics = GET /enforcers = its own /metrics" % hv] = (
            sample(metrics, "bulkhead_controller_enforcer_nflog_events_total", enforcer=hv),
            nflog.get("received"), own_sum("bulkhead_enforcer_nflog_events_total"))
        figures["%s NFLOG events lost: controller metrics = GET /enforcers = its own /metrics" % hv] = (
            sample(metrics, "bulkhead_controller_enforcer_nflog_lost_events_total", enforcer=hv),
            nflog.get("lost"), own_sum("bulkhead_enforcer_nflog_lost_events_total"))
        latency = sample(metrics, "bulkhead_controller_enforcer_apply_latency_seconds", enforcer=hv)
        figures["%s apply latency (s): controller metrics = GET /enforcers apply_ms / 1000" % hv] = (
            None if latency is None else round(latency, 6),
            None if reported_ms is None else round(reported_ms / 1000, 6))
    return figures


def response_figures(soc):
    """{figure: (values...)} for incidents and quarantines: the controller's metrics against
    GET /incidents?state=open and GET /quarantines; also the in-force list itself."""
    metrics = controller_metrics(soc)
    status, body = api("GET", "/incidents?state=open&limit=1000", soc)
    open_incidents = body["incidents"] if status == 200 else None
    status, body = api("GET", "/quarantines", soc)
    in_force = body["quarantines"] if status == 200 else None
    figures = {}
    figures["open incidents (metrics, all severities) = GET /incidents?state=open"] = (
        sample_sum(metrics, "bulkhead_controller_incidents_open"),
        None if open_incidents is None else len(open_incidents))
    for severity in ("low", "medium", "high", "critical"):
        figures["open %s incidents (metrics) = GET /incidents?state=open" % severity] = (
            sample(metrics, "bulkhead_controller_incidents_open", severity=severity),
            None if open_incidents is None else sum(1 for i in open_incidents if i["severity"] == severity))
    for mode, automatic in (("automatic", True), ("manual", False)):
        figures["%s quarantines in force (metrics) = GET /quarantines" % mode] = (
            sample(metrics, "bulkhead_controller_quarantines_in_force", mode=mode),
            None if in_force is None else sum(1 for q in in_force if bool(q.get("automatic")) == automatic))
    return figures, in_force


def agreeing(figures):
    return all(None not in values and len(set(values)) == 1 for values in figures.values())


def metrics_agree(when, take):
    """Polls `take()` (figures, or (figures, extra)) until every figure agrees (20 s), checks
    each, and returns the last take."""
    last = [None]

    def agreed():
        last[0] = take()
        figures = last[0][0] if isinstance(last[0], tuple) else last[0]
        return agreeing(figures)

    poll(agreed, 20, interval=0.5)
    figures = last[0][0] if isinstance(last[0], tuple) else last[0]
    for name, values in figures.items():
        check("%s: %s" % (when, name), None not in values and len(set(values)) == 1, values)
    return last[0]


def events_ingested(soc):
    return sample(controller_metrics(soc), "bulkhead_controller_drop_events_ingested_total")


def stored_events(soc):
    """How many drop events GET /events returns (the store is this lab's, fresh)."""
    status, body = api("GET", "/events?type=drop&limit=10000", soc)
    return len(body["events"]) if status == 200 else None


def main():
    if os.geteuid() != 0 or shutil.which("nmap") is None:
        print("skipped: needs root and nmap")
        return 77
    state = tempfile.mkdtemp(prefix="bulkhead-e2e-")
    try:
        lab_up = up_with_lab_policy(state, enforcer_metrics_port=ENFORCER_METRICS_PORT)
        if lab_up is None:
            return 1
        admin, soc, policy, _ = lab_up
        section("metrics")
        check("every enforcer serves /metrics on its management address (lab.json metrics_url)",
              all(e.get("metrics_url") for e in lab_doc(state)["enforcers"]), lab_doc(state)["enforcers"])
        metrics_agree("with the lab policy", lambda: fleet_figures(state, soc))
        figures, in_force = metrics_agree("before any traffic", lambda: response_figures(soc))
        check("no quarantine in force before any traffic (GET /quarantines)", in_force == [], in_force)
        ingested_before = events_ingested(soc)
        section("traffic")
        # Allowed and forbidden flows with real packets.
        check("vdi-001 -> file server ping passes", reaches(state, "vdi-001", FILE_SERVER))
        expect_dropped("vdi-001 -> vdi-002 (same hypervisor) ping dropped by the vdi -> vdi deny rule on hv1", state,
                       "vdi-001", "10.1.0.2", "icmp", control=PING_FS, reason="deny", token=soc)
        expect_dropped("vdi-001 -> vdi-101 (other hypervisor) ping dropped by the vdi -> vdi deny rule on hv1", state,
                       "vdi-001", "10.1.1.1", "icmp", control=PING_FS, reason="deny", token=soc)
        expect_dropped("vdi-001 -> file server tcp/80 (no rule) dropped by the default rule on hv1", state,
                       "vdi-001", FILE_SERVER, "tcp", 80, control=(FILE_SERVER, "tcp", 445), reason="default", token=soc)
        # The three drops above were stored (expect_dropped saw each event): ingest counted them.
        section("metrics")
        seen = [None, None]

        def ingest_figures():
            seen[0] = stored_events(soc)      # first: the counter read after it can only be higher
            seen[1] = events_ingested(soc)
            return None not in seen and seen[1] >= seen[0] > 0 and seen[1] > (ingested_before or 0)

        poll(ingest_figures, 20)
        check("drop events ingested (metrics) >= the drop events GET /events returns", None not in seen and seen[1] >= seen[0] > 0,
              {"ingested": seen[1], "stored": seen[0]})
        check("drop events ingested grew with the suite's own probes", seen[1] is not None and ingested_before is not None
              and seen[1] > ingested_before, {"before": ingested_before, "after": seen[1]})
        figure("drop events ingested / stored after the first probes", "%s / %s" % (seen[1], seen[0]))
        section("traffic")
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
            section("metrics")
            figures, in_force = metrics_agree("vdi-002 quarantined", lambda: response_figures(soc))
            quarantined_during = [q["workload"] for q in in_force or []]
            check("GET /quarantines lists vdi-002 alone, automatic, while it is in force",
                  quarantined_during == ["vdi-002"], in_force)
            check("the metrics say 1 automatic quarantine in force while vdi-002 is",
                  figures["automatic quarantines in force (metrics) = GET /quarantines"][0] == 1, figures)
            check("the metrics count vdi-002's open incident",
                  (figures["open incidents (metrics, all severities) = GET /incidents?state=open"][0] or 0) >= 1, figures)
            section("traffic")
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
        section("metrics")
        figures, in_force = metrics_agree("vdi-002 released", lambda: response_figures(soc))
        check("GET /quarantines no longer lists vdi-002", in_force is not None
              and "vdi-002" not in [q["workload"] for q in in_force], in_force)
        check("the metrics say 0 quarantines in force once vdi-002 is released",
              figures["automatic quarantines in force (metrics) = GET /quarantines"][0] == 0
              and figures["manual quarantines in force (metrics) = GET /quarantines"][0] == 0, figures)
        section("traffic")
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
        # After the scan, the quarantines and the tripwire policy: the fleet's figures again,
        # now with NFLOG traffic and new generations behind them.
        section("metrics")
        # A drift on hv1 (its table deleted behind its enforcer's back; SIGUSR1 checks at once), so
        # that the drift repairs compared below are not all zero. Its own page counts the repair
        # first; the controller learns it with the next heartbeat.
        hv1 = next(e for e in lab_doc(state)["enforcers"] if e["id"] == "hv1")
        hv1_drift_before = sample(scrape(hv1["metrics_url"]), "bulkhead_enforcer_drift_repairs_total")
        deleted = in_ns(state, "hv1", "nft", "delete", "table", "inet", "bulkhead")
        check("hv1's table inet bulkhead deleted behind its enforcer's back", deleted.returncode == 0, deleted.stderr)
        os.kill(hv1["pid"], signal.SIGUSR1)
        poll(lambda: (sample(scrape(hv1["metrics_url"]), "bulkhead_enforcer_drift_repairs_total") or 0)
             > (hv1_drift_before or 0), 10, "hv1 repairs the drift (its own /metrics counts it)")
        fleet = metrics_agree("at the end", lambda: fleet_figures(state, soc))
        hv1_drift = fleet.get("hv1 drift repairs: controller metrics = GET /enforcers = its own /metrics")
        check("hv1's drift repair reached the controller's metrics and GET /enforcers",
              hv1_drift is not None and hv1_drift_before is not None and (hv1_drift[0] or 0) == hv1_drift_before + 1,
              {"before": hv1_drift_before, "after": hv1_drift})
        received = {hv: values[0] for name, values in fleet.items() for hv in ("hv1", "hv2")
                    if name.startswith(hv + " NFLOG events received")}
        check("hv1 and hv2 each report NFLOG events received after the suite's drops (metrics)",
              all((v or 0) > 0 for v in received.values()) and len(received) == 2, received)
        figure("NFLOG events received (hv1, hv2)", "%s, %s" % (received.get("hv1"), received.get("hv2")))
        for name, values in sorted(fleet.items()):
            if "generation" in name or "drift" in name or "lost" in name or "channels" in name:
                figure("at the end: " + name.split(":")[0], str(values))
        figures, _ = metrics_agree("at the end", lambda: response_figures(soc))
        figure("open incidents at the end (metrics = API)",
               str(figures["open incidents (metrics, all severities) = GET /incidents?state=open"]))
    finally:
        kill_children()
        down_and_verify(state)
        shutil.rmtree(state, ignore_errors=True)
    return report()


if __name__ == "__main__":
    sys.exit(main())
