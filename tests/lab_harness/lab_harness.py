"""What the lab suites (tests/lab_e2e, tests/lab_faults) share: PASS/FAIL lines, lab.py
under the suite's own prefix and state directory, commands in lab namespaces, the plain
loopback API, polling with a deadline, and bringing the lab up with the lab policy active.

A suite calls configure() once with its own prefix, ports and management network, so that
suites can run beside each other and beside the demo."""
import json, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path

REPO = Path(sys.argv[sys.argv.index("--source-dir") + 1])
BIN = Path(sys.argv[sys.argv.index("--bin-dir") + 1])
LAB = REPO / "examples/lab/lab.py"
failures = []     # what failed, for the summary and the exit code
children = []     # background processes a suite started (killed in its `finally`)
_config = {}


def configure(prefix, port, mgmt, tls_port):
    _config.update(prefix=prefix, port=port, mgmt=mgmt, tls_port=tls_port)


def check(ok, what):
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)
    return ok


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


def poll(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    check(False, "within %ss: %s" % (seconds, what))
    return None


def up_with_lab_policy(state, *extra_args):
    """lab.py up with the real controller and enforcers (over TLS), the lab policy uploaded
    and activated, every enforcer acking it. Returns (admin token, soc token, policy,
    generation), or None when the lab did not come up (already reported)."""
    up = lab(state, "up", "--api-listen", "127.0.0.1:%d" % _config["port"], "--mgmt-net", _config["mgmt"],
             "--tls-port", str(_config["tls_port"]), "--controller-bin", str(BIN / "bulkhead-controller"),
             "--enforcer-bin", str(BIN / "bulkhead-enforcer"), *extra_args)
    if not check(up.returncode == 0, "lab up with the real controller and enforcers over TLS"):
        print(up.stdout[-3000:], up.stderr[-3000:])
        return None
    admin = (Path(state) / "tokens/lab-admin.token").read_text().strip()
    soc = (Path(state) / "tokens/lab-soc.token").read_text().strip()
    policy = json.loads((REPO / "examples/lab/policy.json").read_text())
    status, revision = api("POST", "/policies", admin, policy)
    check(status == 201, "upload the lab policy (201)")
    status, activated = api("POST", "/policies/%d/activate" % revision["id"], admin)
    check(status == 200, "activate it (200)")
    generation = activated["generation"]
    poll(lambda: all_in_sync(soc, generation), 20, "every enforcer acks generation %d" % generation)
    return admin, soc, policy, generation


def enforcers(token):
    status, body = api("GET", "/enforcers", token)
    return {e["id"]: e for e in body["enforcers"]} if status == 200 else {}


def all_in_sync(token, generation):
    """The enforcers by id when every one is connected, in sync and at `generation` or
    later; else None."""
    es = enforcers(token)
    return es if es and all(e["connected"] and e["in_sync"] and e["applied_generation"] >= generation
                            for e in es.values()) else None
