#!/usr/bin/env python3
"""One connection per enforcer (docs/control-channel.md, protocol 3), with the real
controller and the real enforcers of the lab over TLS:

  - the controller counts one channel socket per enforcer (bulkhead_controller_channel_sockets_open
    in GET /api/v1/metrics);
  - each enforcer process holds exactly one established TCP connection, to the controller's
    TLS port (its socket inodes in /proc/PID/fd matched against /proc/PID/net/tcp{,6}, which
    show the enforcer's own network namespace);
  - acks go up on it (every enforcer in sync at the active generation) and so do event
    uploads (each enforcer's ruleset_applied event stored by the controller);
  - it stays one: after several heartbeat intervals of statuses and uploads, the same one
    connection, the same one socket per enforcer on the controller.

Runs the lab under its own prefix, state directory, management network and ports; tears it
down in `finally`, also on failure. Every wait is a poll with a deadline. Exit 77 (skipped)
when not root. Last line: "N passed, N failed"."""
import os, re, shutil, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from lab_harness import (api, check, configure, down_and_verify, kill_children, lab_doc, poll,  # noqa: E402
                         report, up_with_lab_policy)

PREFIX, PORT, MGMT, TLS_PORT = "bh1c-", 18393, "10.254.84.0/24", 18645
configure(PREFIX, PORT, MGMT, TLS_PORT)


def metrics(token):
    """GET /api/v1/metrics as text (the API helper parses JSON; this one is Prometheus text)."""
    import urllib.request
    req = urllib.request.Request("http://127.0.0.1:%d/api/v1/metrics" % PORT,
                                 headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.read().decode()
    except OSError as e:
        return "unreachable: %s" % e


def gauge(text, name):
    """The sum of `name` over its listeners (the API listener and the enforcers' TLS one);
    None when the controller does not report it."""
    values = [float(v) for v in re.findall(r"^%s(?:\{[^}]*\})? (\S+)$" % re.escape(name), text, re.M)]
    return sum(values) if values else None


def established_tcp(pid):
    """[(remote port, local port)] of the established TCP connections process `pid` holds."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6"):
        with open("/proc/%d/net/%s" % (pid, table)) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if state == "01" and inode in inodes:  # 01: ESTABLISHED
                    found.append((int(remote.rsplit(":", 1)[1], 16), int(local.rsplit(":", 1)[1], 16)))
    return found


def ruleset_applied_events(token, enforcer):
    status, body = api("GET", "/events?type=ruleset_applied&limit=100&enforcer=" + enforcer, token)
    return body["events"] if status == 200 else []


def last_heartbeats(token):
    """{enforcer id: last_heartbeat} from GET /enforcers ({} when the controller does not answer)."""
    status, body = api("GET", "/enforcers", token)
    return {e["id"]: e.get("last_heartbeat") for e in body["enforcers"]} if status == 200 else {}


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespaces, nftables)")
        return 77
    if shutil.which("ip") is None or shutil.which("nft") is None:
        print("SKIP: ip or nft missing")
        return 77
    state = tempfile.mkdtemp(prefix="bulkhead-one-connection-")
    try:
        up = up_with_lab_policy(state)
        if up is None:
            return report()
        admin, soc, _policy, generation = up
        enforcers = {e["id"]: e["pid"] for e in lab_doc(state)["enforcers"]}
        check("the lab runs several enforcers", len(enforcers) >= 2, enforcers)

        # Acks: every enforcer in sync at the active generation (up_with_lab_policy polled for it).
        status, listed = api("GET", "/enforcers", soc)
        acked = status == 200 and len(listed["enforcers"]) == len(enforcers) and all(
            e["connected"] and e["in_sync"] and e["applied_generation"] >= generation for e in listed["enforcers"])
        check("acks arrived on the channel: every enforcer in sync at generation %d" % generation, acked, listed)

        # Uploads: each enforcer's ruleset_applied event stored by the controller.
        uploaded = poll(lambda: all(ruleset_applied_events(soc, hv) for hv in enforcers), 20)
        check("events uploaded on the channel: a ruleset_applied event of every enforcer", uploaded,
              {hv: len(ruleset_applied_events(soc, hv)) for hv in enforcers})

        def sockets_open():
            return gauge(metrics(admin), "bulkhead_controller_channel_sockets_open")

        open_now = poll(lambda: sockets_open() == len(enforcers), 15)
        check("the controller holds one channel socket per enforcer (%d)" % len(enforcers), open_now,
              "bulkhead_controller_channel_sockets_open = %s" % sockets_open())
        before = {hv: established_tcp(pid) for hv, pid in enforcers.items()}
        check("each enforcer holds exactly one TCP connection, to the controller's TLS port %d" % TLS_PORT,
              all(len(c) == 1 and c[0][0] == TLS_PORT for c in before.values()), before)

        # A few heartbeat intervals (5 s by default) of statuses later: the same one
        # connection (same local port), nothing opened beside it, and the statuses went up
        # as requests on the channel sockets.
        def socket_requests():
            return gauge(metrics(admin), "bulkhead_controller_channel_socket_requests_total") or 0
        requests_before = socket_requests()
        heartbeats_before = last_heartbeats(soc)
        moved = poll(lambda: (lambda now: bool(now) and all(now[hv] != heartbeats_before.get(hv)
                                                              for hv in enforcers))(last_heartbeats(soc)), 20)
        check("statuses kept going up: every enforcer's last heartbeat is newer", moved,
              {"before": heartbeats_before, "now": last_heartbeats(soc)})
        check("those statuses were requests on the channel sockets", socket_requests() >= requests_before + len(enforcers),
              {"before": requests_before, "now": socket_requests()})
        after = {hv: established_tcp(pid) for hv, pid in enforcers.items()}
        check("still the same one connection per enforcer after those heartbeats", after == before,
              {"before": before, "after": after})
        check("still one channel socket per enforcer on the controller", sockets_open() == len(enforcers),
              sockets_open())
    finally:
        kill_children()
        down_and_verify(state)
        shutil.rmtree(state, ignore_errors=True)
    return report()


if __name__ == "__main__":
    sys.exit(main())
