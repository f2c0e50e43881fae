"""What the lab suites (tests/lab_e2e, tests/lab_faults, tests/lab_analyzer,
tests/lab_restart) share on top of harness.py (check, poll, report): lab.py under the
suite's own prefix and state directory, commands in lab namespaces, the plain loopback API,
bringing the lab up with the lab policy active, probes, and `expect_dropped`, the one way a
suite asserts that traffic is blocked.

A suite calls configure() once with its own prefix, ports and management network, so that
suites can run beside each other and beside the demo. The suite's command line carries
--source-dir REPO and --bin-dir BIN."""
import json, subprocess, sys, time, urllib.error, urllib.parse, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import check, figure, log, poll, report, section  # noqa: E402,F401  (re-exported for the suites)

REPO = Path(sys.argv[sys.argv.index("--source-dir") + 1]) if "--source-dir" in sys.argv else \
    Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.argv[sys.argv.index("--bin-dir") + 1]) if "--bin-dir" in sys.argv else REPO / "build/bin"
LAB = REPO / "examples/lab/lab.py"
children = []     # background processes a suite started (killed in its `finally`)
_config = {}

FILE_SERVER, EDR, DECOY = "10.0.0.30", "10.0.0.20", "10.0.0.66"


def configure(prefix, port, mgmt, tls_port):
    _config.update(prefix=prefix, port=port, mgmt=mgmt, tls_port=tls_port)


def lab(state, command, *args, timeout=180):
    return subprocess.run([sys.executable, str(LAB), command, "--prefix", _config["prefix"], "--state-dir", state]
                          + list(args), capture_output=True, text=True, timeout=timeout)


def in_ns(state, ns, *argv, timeout=30):
    return lab(state, "exec", ns, "--", *argv, timeout=timeout)


def background(state, ns, *argv):
    """A process in a lab namespace (lab.py exec execs `ip netns exec`, which execs argv:
    the Popen's pid is the process itself)."""
    p = subprocess.Popen([sys.executable, str(LAB), "exec", "--prefix", _config["prefix"], "--state-dir", state, ns,
                          "--"] + list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    children.append(p)
    return p


def kill_children():
    """Kills every background process the suite started and is still running (its `finally`)."""
    for p in children:
        if p.poll() is None:
            p.kill()
            try:
                p.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError, OSError):
                pass


def down_and_verify(state):
    """lab.py down --purge, and no namespace of the suite's prefix left: the two checks
    every lab suite ends with (in `finally`)."""
    down = lab(state, "down", "--purge")
    check("lab down", down.returncode == 0, down.stderr[-1000:])
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    check("no namespace of the test left", _config["prefix"] not in left, left)


def api(method, path, token, body=None):
    """(status, JSON body), or (None, reason) when the controller does not answer."""
    data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "DELETE") else None)
    req = urllib.request.Request("http://127.0.0.1:%d/api/v1%s" % (_config["port"], path), data=data, method=method,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


def up_with_lab_policy(state, *extra_args, enforcer_metrics_port=None):
    """lab.py up with the real controller and enforcers (over TLS), the lab policy uploaded
    and activated, every enforcer acking it. With `enforcer_metrics_port`, each enforcer also
    serves GET /metrics on its hypervisor's management address (lab.json
    enforcers[].metrics_url). Returns (admin token, soc token, policy, generation), or None
    when the lab did not come up (already reported)."""
    if enforcer_metrics_port:
        extra_args += ("--enforcer-metrics-port", str(enforcer_metrics_port))
    up = lab(state, "up", "--api-listen", "127.0.0.1:%d" % _config["port"], "--mgmt-net", _config["mgmt"],
             "--tls-port", str(_config["tls_port"]), "--controller-bin", str(BIN / "bulkhead-controller"),
             "--enforcer-bin", str(BIN / "bulkhead-enforcer"), *extra_args)
    if not check("lab up with the real controller and enforcers over TLS", up.returncode == 0,
                 up.stdout[-3000:] + up.stderr[-3000:]):
        return None
    admin = (Path(state) / "tokens/lab-admin.token").read_text().strip()
    soc = (Path(state) / "tokens/lab-soc.token").read_text().strip()
    policy = json.loads((REPO / "examples/lab/policy.json").read_text())
    status, revision = api("POST", "/policies", admin, policy)
    check("upload the lab policy (201)", status == 201, revision)
    status, activated = api("POST", "/policies/%d/activate" % revision["id"], admin)
    check("activate it (200)", status == 200, activated)
    generation = activated["generation"]
    poll(lambda: all_in_sync(soc, generation), 20, "every enforcer acks generation %d" % generation)
    return admin, soc, policy, generation


def parse_prometheus(text):
    """{(name, ((label, value), ...)): value} of a Prometheus text page (version 0.0.4):
    comments skipped, labels sorted, escaped quotes and backslashes in label values undone.
    Raises ValueError on a line it cannot read (a malformed page is a failure, not a zero)."""
    samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        labels = []
        if "{" in line:
            name, rest = line.split("{", 1)
            i = 0
            while rest[i] != "}":
                eq = rest.index("=", i)
                key = rest[i:eq].strip().lstrip(",").strip()
                if rest[eq + 1] != '"':
                    raise ValueError("label %s without a quoted value: %r" % (key, line))
                j, value = eq + 2, []
                while rest[j] != '"':
                    if rest[j] == "\\":
                        j += 1
                        value.append("\n" if rest[j] == "n" else rest[j])
                    else:
                        value.append(rest[j])
                    j += 1
                labels.append((key, "".join(value)))
                i = j + 1
                while rest[i] in ", ":
                    i += 1
            fields = rest[i + 1:].split()
        else:
            name, *fields = line.split()
        if not fields:
            raise ValueError("a sample without a value: %r" % line)
        samples[(name.strip(), tuple(sorted(labels)))] = float(fields[0])
    return samples


def scrape(url, token=None, timeout=10):
    """The samples of the Prometheus page at `url` (parse_prometheus), or None when it does
    not answer 200."""
    headers = {"Authorization": "Bearer " + token} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
            return parse_prometheus(r.read().decode()) if r.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def controller_metrics(token):
    """The controller's GET /api/v1/metrics, parsed, or None."""
    return scrape("http://127.0.0.1:%d/api/v1/metrics" % _config["port"], token)


def sample(samples, name, **labels):
    """One sample's value; None when the page has no such series."""
    return (samples or {}).get((name, tuple(sorted(labels.items()))))


def sample_sum(samples, name):
    """The sum of every series of `name` (e.g. over an enforcer's NFLOG groups); None when none."""
    values = [v for (n, _), v in (samples or {}).items() if n == name]
    return sum(values) if values else None


def incidents_of(token, workload):
    """The incidents whose source is `workload` (any state), newest first."""
    status, body = api("GET", "/incidents?limit=1000&workload=" + urllib.parse.quote(workload, safe=""), token)
    return body["incidents"] if status == 200 else []


def applied_quarantine(token, workload):
    """GET /quarantines/{workload} when every enforcer of it has applied it; else None."""
    status, q = api("GET", "/quarantines/" + workload, token)
    if status == 200 and q.get("enforcers") and all(e["state"] == "applied" for e in q["enforcers"]):
        return q
    return None


def enforcers(token):
    status, body = api("GET", "/enforcers", token)
    return {e["id"]: e for e in body["enforcers"]} if status == 200 else {}


def all_in_sync(token, generation):
    """The enforcers by id when every one is connected, in sync and at `generation` or
    later; else None."""
    es = enforcers(token)
    return es if es and all(e["connected"] and e["in_sync"] and e["applied_generation"] >= generation
                            for e in es.values()) else None


# --------------------------------------------------------------------------- probes

# One probe from a namespace: prints "reached" (an answer: echo reply, TCP accept or
# refusal, ICMP port unreachable for UDP), "blocked" (silence until the timeout: the packets
# were dropped) or "error <reason>" (the probe failed for another reason: no route, bad
# address...; that is neither passing nor a proof of a drop).
PROBE = r"""
import socket, subprocess, sys
proto, host, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
try:
    if proto == "icmp":
        p = subprocess.run(["ping", "-6" if ":" in host else "-4", "-c1", "-W%d" % max(1, round(timeout)), host],
                           capture_output=True, text=True)
        print("reached" if p.returncode == 0 else "blocked" if p.returncode == 1 else "error ping %d %s"
              % (p.returncode, p.stderr.strip()))
    elif proto == "tcp":
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            print("reached")
        except ConnectionRefusedError:
            print("reached")
        except socket.timeout:
            print("blocked")
    elif proto == "udp":
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.connect((host, port))
        s.send(b"bulkhead probe")
        try:
            s.recv(100)
            print("reached")
        except ConnectionRefusedError:
            print("reached")
        except socket.timeout:
            print("blocked")
    else:
        print("error unknown protocol " + proto)
except OSError as e:
    print("error %s" % e)
"""


def probe(state, ns, host, proto="icmp", port=0, timeout=1.5):
    """'reached', 'blocked' or 'error ...' for one probe from lab namespace ns."""
    r = in_ns(state, ns, sys.executable, "-c", PROBE, proto, host, str(port), str(timeout), timeout=timeout + 20)
    return r.stdout.strip() or ("error exit %d %s" % (r.returncode, r.stderr.strip()[-300:]))


def reaches(state, ns, host, proto="icmp", port=0):
    """An allowed probe that must pass: True when it got an answer."""
    return probe(state, ns, host, proto, port, timeout=2) == "reached"


def lab_doc(state):
    return json.loads((Path(state) / "lab.json").read_text())


def lab_workload(state, ns):
    """lab.json's entry of the workload whose namespace is `ns` (short or full name)."""
    doc = lab_doc(state)
    for w in doc.get("workloads", []):
        if w["id"] == ns or w["namespace"] in (ns, _config["prefix"] + ns):
            return w
    return None


def drop_counters(state, hv):
    """{(chain, handle): (log prefix, packets)} of every counted drop rule in hypervisor hv's
    `inet bulkhead` table (docs/ruleset-design.md: each drop carries `counter` and a log
    prefix bh:<mode>:<dir>:<reason>:<subject>); None when nft cannot list it."""
    r = in_ns(state, hv, "nft", "-j", "list", "table", "inet", "bulkhead")
    if r.returncode != 0:
        return None
    counters = {}
    for item in json.loads(r.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        packets, prefix, drop = None, "", False
        for e in rule.get("expr", []):
            if "counter" in e:
                packets = (e["counter"] or {}).get("packets", 0)
            elif "log" in e:
                prefix = (e["log"] or {}).get("prefix", "")
            elif "drop" in e:
                drop = True
        if drop and packets is not None:
            counters[(rule["chain"], rule["handle"])] = (prefix, packets)
    return counters


def counted_drops(before, after, reason=None):
    """{log prefix: packets} of the drop rules whose counters moved (of `reason` only when
    given, e.g. "default", "deny", "decoy", "quarantine")."""
    moved = {}
    for key, (prefix, packets) in (after or {}).items():
        delta = packets - (before or {}).get(key, (prefix, 0))[1]
        if delta > 0 and (reason is None or (":%s:" % reason) in prefix):
            moved[prefix] = moved.get(prefix, 0) + delta
    return moved


def drop_events(token, workload, dst, proto, port, since_ms, reason=None):
    """The stored drop events of `workload` to dst (proto, port) with kernel time since_ms or later."""
    q = "/events?type=drop&limit=1000&order=asc&workload=%s&address=%s&from=%d" % (workload, dst, since_ms)
    if proto in ("tcp", "udp"):
        q += "&port=%d" % port
    status, body = api("GET", q, token)
    if status != 200:
        return []
    return [e for e in body["events"] if e.get("dst") == dst and e.get("proto_name", "").startswith(proto[:4])
            and (proto not in ("tcp", "udp") or e.get("dport") == port)
            and (reason is None or e.get("reason") == reason)]


def expect_dropped(name, state, ns, dst, proto="icmp", port=0, *, control, reason=None, hv=None, token=None,
                   event_wait=15):
    """The one negative check of the lab suites: a probe from namespace `ns` to dst (proto,
    port) is blocked, and the drop itself is seen, not just the silence:

      - the probe timed out ("blocked"), not failed for another reason ("error ...");
      - a counted drop rule (of `reason`, when given) in the hypervisor's `inet bulkhead`
        table counted it: its counter moved between before and after the probe (`hv`:
        the namespace's hypervisor by default, the one that filters its egress);
      - with a `token` (the controller is up to ask): the NFLOG drop event of that very
        probe stored by the controller (GET /events by workload, dst, port, from the
        probe's start), with `reason` when given;
      - the positive control `control` = (dst, proto, port), an allowed probe from the same
        namespace over the same hypervisor, got an answer (so the path itself works).
        control=None is allowed only for a namespace with nothing allowed (say why in name).

    One check, `name`, with every observation in its detail on failure. Returns the stored
    event (or True without a token) when everything held, else None."""
    w = lab_workload(state, ns)
    hv = hv or (w or {}).get("hypervisor")
    seen = {"hypervisor": hv}
    ok = True
    if control is not None:
        c_dst, c_proto, c_port = control
        seen["control"] = "%s %s/%s: %s" % (c_dst, c_proto, c_port, probe(state, ns, c_dst, c_proto, c_port, 2))
        ok = seen["control"].endswith(": reached")
    before = drop_counters(state, hv) if hv else None
    since_ms = int(time.time() * 1000) - 100
    seen["probe"] = probe(state, ns, dst, proto, port)
    ok = ok and seen["probe"] == "blocked"
    if hv:
        # The counters are read right after the probe's timeout: every packet it sent is counted.
        moved = counted_drops(before, drop_counters(state, hv), reason)
        seen["counted"] = moved
        ok = ok and before is not None and bool(moved)
    else:
        seen["counted"] = "no hypervisor for %s" % ns
        ok = False
    event = True
    if token is not None and ok:
        workload = (w or {}).get("id", ns)
        events = poll(lambda: drop_events(token, workload, dst, proto, port, since_ms, reason), event_wait)
        seen["event"] = events[0] if events else "no drop event of %s to %s %s/%s since %d" % (
            workload, dst, proto, port, since_ms)
        event = events[0] if events else None
        ok = ok and bool(events)
    check(name, ok, seen)
    return event if ok else None
