"""The configuration files' JSON Schemas (packaging/schema/) and the daemons agree.

Each shipped configuration (packaging/config/) is valid under its schema; for each invalid
variant below, the schema rejects it AND the daemon refuses to start with exit status 2 and
a message naming the member (JSON pointer). The daemons stop at configuration checks, before
touching the network or the kernel. Exit status 77 when python3-jsonschema is missing.
"""
import json, subprocess, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab_harness"))
from harness import check, report  # noqa: E402

try:
    import jsonschema
except ImportError:
    print("SKIP: python3-jsonschema is not installed")
    sys.exit(77)

REPO = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.argv[sys.argv.index("--bin-dir") + 1])

CASES = {
    "enforcer": [
        ("unknown member", {"enforcer_id": "hv1", "ruleset": "/x", "dorp_group": 1}, "/dorp_group: unknown member"),
        ("wrong type", {"enforcer_id": "hv1", "ruleset": "/x", "drop_group": "10"}, "/drop_group: must be an integer"),
        ("out of range", {"enforcer_id": "hv1", "ruleset": "/x", "drift_interval": 0}, "/drift_interval: must be"),
        ("boolean", {"enforcer_id": "hv1", "ruleset": "/x", "no_nflog": "yes"}, "/no_nflog: must be true or false"),
        ("two ruleset sources", {"enforcer_id": "hv1", "ruleset": "/x", "controller": "https://c:1"},
         "/ruleset and /controller exclude each other"),
        ("port pattern matching everything", {"enforcer_id": "hv1", "ruleset": "/x", "port_patterns": ["vnet*", "*"]},
         "/port_patterns/1: "),
        ("port pattern with a colon", {"enforcer_id": "hv1", "ruleset": "/x", "port_patterns": ["tap:*"]},
         "/port_patterns/0: "),
        ("unknown port mode", {"enforcer_id": "hv1", "ruleset": "/x", "unknown_ports": "drop"},
         "/unknown_ports: must be"),
    ],
    "controller": [
        ("unknown member", {"plain_listen": "127.0.0.1:1", "lissen": "0.0.0.0:1"}, "/lissen: unknown member"),
        ("wrong type", {"plain_listen": "127.0.0.1:1", "threads": "8"}, "/threads: must be an integer"),
        ("out of range", {"plain_listen": "127.0.0.1:1", "heartbeat_interval_ms": 5}, "/heartbeat_interval_ms: must be"),
        ("webhooks", {"plain_listen": "127.0.0.1:1", "webhooks": "http://x"}, "/webhooks: must be an array"),
    ],
}


def main():
    with tempfile.TemporaryDirectory(prefix="bulkhead-config-schema-") as tmp:
        for kind, cases in CASES.items():
            schema = json.loads((REPO / ("packaging/schema/%s-config.schema.json" % kind)).read_text())
            jsonschema.Draft202012Validator.check_schema(schema)
            validator = jsonschema.Draft202012Validator(schema)
            shipped = json.loads((REPO / ("packaging/config/%s.json" % kind)).read_text())
            errors = [e.message for e in validator.iter_errors(shipped)]
            check("%s: packaging/config/%s.json is valid under its schema" % (kind, kind), not errors, errors)
            for name, document, message in cases:
                path = Path(tmp) / ("%s-%s.json" % (kind, name.replace(" ", "-")))
                path.write_text(json.dumps(document))
                check("%s: %s: the schema rejects it" % (kind, name), not validator.is_valid(document))
                r = subprocess.run([str(BIN / ("bulkhead-" + kind)), "--config", str(path)], capture_output=True,
                                   text=True, timeout=20)
                check("%s: %s: the daemon refuses to start, naming the member" % (kind, name),
                      r.returncode == 2 and (str(path) + ": " + message) in r.stderr, [r.returncode, r.stderr])
    return report()


if __name__ == "__main__":
    sys.exit(main())
