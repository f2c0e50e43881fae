#!/usr/bin/env python3
"""REST API v1 of bulkhead-controller, end to end over HTTP: every endpoint against the OpenAPI document.

Starts the real `bulkhead-controller` on a free loopback port with a temporary data
directory and bootstrap tokens for admin, soc and automation, then checks:

  * the served OpenAPI document validates (openapi-spec-validator when installed; always
    our own reference, path-parameter and operation-id checks) and equals the file in
    the repository; every documented operation is served (no `no-such-route`) and an
    undocumented path is not;
  * every protected operation answers 401 without a token (and with a bad one) and 403 for
    every role the document does not list, and such refused requests change nothing
    (the state and the audit log are compared before and after);
  * every endpoint's success path and its bad input: invalid JSON (with the pointer),
    unknown members, wrong types, missing members, bad query and path parameters, unknown
    ids, conflicts (ambiguous address -> 409 with candidates, nothing to roll back,
    acknowledging a resolved incident), oversized bodies -> 413;
  * quarantine idempotency, activation of a revision that no longer fits changes nothing,
    rollback, enrollment with a one-time token, the enforcer credential confined to its own
    id's channel/status/events, event ingest with duplicate seqs counted, event queries and
    counts, incidents raised from drops that cross the policy's response.incident threshold
    with automatic quarantine on and in dry-run, the NDJSON channel (hello, ruleset, diff
    after a quarantine, heartbeat) and the SSE stream (drops, incident, quarantine; the
    access_token query parameter works there only).

Each check prints a PASS or FAIL line; the last line is "N passed, N failed". Exit status
1 when any check failed. Usage:
  test_controller_api.py --controller build/bin/bulkhead-controller [--source-dir REPO] [--keep]
"""

import argparse
import base64
import copy
import hashlib
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent

TOKENS = {
    "admin": "admin-token-0123456789abcdef",
    "soc": "soc-token-0123456789abcdef",
    "automation": "automation-token-0123456789abcdef",
}
HEARTBEAT_MS = 300

# --------------------------------------------------------------------------- reporting --
# check(name, condition, detail), poll and report: the suites' one harness (tests/lab_harness/harness.py).
sys.path.insert(0, str(HERE.parent / "lab_harness"))
from harness import check, free_port, poll, report  # noqa: E402,F401  (re-exported for test_controller_analyzer)


# ------------------------------------------------------------------------------ client --

class Response:
    def __init__(self, status, body, headers):
        self.status = status
        self.raw = body
        self.headers = headers
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def error(self):
        if isinstance(self.json, dict) and isinstance(self.json.get("error"), dict):
            return self.json["error"]
        return {}

    def __repr__(self):
        text = self.raw.decode("utf-8", "replace") if isinstance(self.raw, bytes) else str(self.raw)
        return f"{self.status} {text[:600]}"


class Client:
    def __init__(self, port):
        self.port = port
        self.log = []  # (method, path, status, parsed JSON body or None, content type) of every answer

    def request(self, method, path, body=None, token=None, raw=None, query=None, headers=None, timeout=20):
        if query:
            path = path + "?" + urllib.parse.urlencode(query)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        h = {"Accept": "application/json"}
        if data or method in ("POST", "PUT"):
            h["Content-Type"] = "application/json"
            h["Content-Length"] = str(len(data))
        if token:
            h["Authorization"] = "Bearer " + token
        if headers:
            h.update(headers)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data if (data or method in ("POST", "PUT")) else None, headers=h)
            resp = conn.getresponse()
            payload = resp.read()
            answer = Response(resp.status, payload, {k.lower(): v for k, v in resp.getheaders()})
            self.log.append((method, path.split("?", 1)[0], resp.status, answer.json, answer.headers.get("content-type", "")))
            return answer
        finally:
            conn.close()

    def get(self, path, token=None, **kw):
        return self.request("GET", path, token=token, **kw)

    def post(self, path, body=None, token=None, **kw):
        return self.request("POST", path, body=body, token=token, **kw)

    def put(self, path, body=None, token=None, **kw):
        return self.request("PUT", path, body=body, token=token, **kw)

    def delete(self, path, token=None, **kw):
        return self.request("DELETE", path, token=token, **kw)

    def oversized(self, method, path, token, size):
        """Announces a body of `size` bytes and sends as much of it as the server takes."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        try:
            head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n")
            sock.sendall(head.encode())
            chunk = b" " * 65536
            sent = 0
            try:
                sock.settimeout(0.5)
                while sent < size:
                    n = sock.send(chunk[: min(len(chunk), size - sent)])
                    sent += n
            except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
                pass
            sock.settimeout(20)
            data = b""
            try:
                while True:
                    part = sock.recv(65536)
                    if not part:
                        break
                    data += part
                    if b"\r\n\r\n" in data:
                        header, _, rest = data.partition(b"\r\n\r\n")
                        m = re.search(rb"content-length:\s*(\d+)", header, re.I)
                        if m and len(rest) >= int(m.group(1)):
                            break
            except (ConnectionResetError, socket.timeout):
                pass
            header, _, rest = data.partition(b"\r\n\r\n")
            status_line = header.split(b"\r\n", 1)[0].decode("latin-1") if header else ""
            m = re.match(r"HTTP/1\.[01] (\d+)", status_line)
            return Response(int(m.group(1)) if m else 0, rest, {})
        finally:
            sock.close()


class LineStream:
    """A streaming GET (NDJSON channel or SSE) read by a thread into a queue of lines."""

    def __init__(self, port, path, token=None, query=None):
        if query:
            path = path + "?" + urllib.parse.urlencode(query)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": "Bearer " + token} if token else {}
        self.conn.request("GET", path, headers=headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.content_type = self.response.getheader("Content-Type", "")
        self.lines = queue.Queue()
        self.closed = threading.Event()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = self.response.read()

    def _read(self):
        try:
            while True:
                line = self.response.readline()
                if not line:
                    break
                self.lines.put(line.decode("utf-8", "replace").rstrip("\n"))
        except Exception:  # the test closes the socket under the reader
            pass
        finally:
            self.closed.set()

    def next_line(self, timeout):
        try:
            return self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def close(self):
        try:
            self.conn.sock and self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


class ChannelReader(LineStream):
    def next_message(self, timeout=5.0, want=None):
        """Next NDJSON message (of type `want`, skipping others) before the deadline."""
        end = time.monotonic() + timeout
        while True:
            line = self.next_line(end - time.monotonic())
            if line is None:
                return None
            if not line.strip():
                continue
            message = json.loads(line)
            if want is None or message.get("type") == want:
                return message


class ChannelSocket:
    """The control channel as a WebSocket (protocol 3), with a minimal RFC 6455 client written
    here (text frames, client masking, ping/pong, close): Debian's Python has no WebSocket
    module and the test must see the frames the controller really sends."""

    def __init__(self, port, path, token=None, query=None):
        if query:
            path = path + "?" + urllib.parse.urlencode(query)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        self.sock.sendall((head + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        header, _, self.pending = data.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d+)", lines[0] if lines else "")
        self.status = int(m.group(1)) if m else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        self.messages = queue.Queue()
        self.closed = threading.Event()
        self.send_lock = threading.Lock()
        self.body = b""
        if self.status == 101:
            expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            self.accept_ok = self.headers.get("sec-websocket-accept") == expected
            threading.Thread(target=self._read, daemon=True).start()
        else:
            length = int(self.headers.get("content-length", "0"))
            self.body = self.pending
            while len(self.body) < length:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.body += chunk
            self.sock.close()
            self.closed.set()

    def _recv_exact(self, n):
        while len(self.pending) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.pending += chunk
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def _read(self):
        self.sock.settimeout(None)
        fragments = b""
        try:
            while True:
                b0, b1 = self._recv_exact(2)
                opcode, length = b0 & 0x0F, b1 & 0x7F
                if length == 126:
                    length = int.from_bytes(self._recv_exact(2), "big")
                elif length == 127:
                    length = int.from_bytes(self._recv_exact(8), "big")
                mask = self._recv_exact(4) if b1 & 0x80 else None
                payload = self._recv_exact(length)
                if mask:
                    payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
                if opcode == 0x8:
                    break
                if opcode == 0x9:
                    self._send_frame(0xA, payload)
                    continue
                if opcode in (0x1, 0x0):
                    fragments += payload
                    if b0 & 0x80:
                        self.messages.put(json.loads(fragments.decode("utf-8")))
                        fragments = b""
        except (EOFError, OSError, ValueError):
            pass
        finally:
            self.closed.set()

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        with self.send_lock:
            self.sock.sendall(head + mask + masked)

    def send_text(self, text):
        self._send_frame(0x1, text.encode("utf-8") if isinstance(text, str) else text)

    def request(self, kind, request_id, body):
        """Sends one request (head line, newline, body) and returns its reply (or None)."""
        raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
        raw = raw.encode() if isinstance(raw, str) else raw
        self.send_text(json.dumps({"request": kind, "id": request_id}).encode() + b"\n" + raw)
        return self.next_message(5, want="reply", request_id=request_id)

    def next_message(self, timeout=5.0, want=None, request_id=None):
        end = time.monotonic() + timeout
        while True:
            try:
                message = self.messages.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                return None
            if want is not None and message.get("type") != want:
                continue
            if request_id is not None and message.get("id") != request_id:
                continue
            return message

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class SseReader(LineStream):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.events = []

    def collect(self, timeout):
        """Reads frames for up to `timeout` seconds into self.events."""
        end = time.monotonic() + timeout
        frame = {}
        while time.monotonic() < end:
            line = self.next_line(min(0.1, end - time.monotonic()))
            if line is None:
                continue
            if line == "":
                if "event" in frame:
                    self.events.append(frame)
                frame = {}
            elif line.startswith(":"):
                continue
            else:
                key, _, value = line.partition(":")
                frame[key] = value[1:] if value.startswith(" ") else value

    def wait_for(self, predicate, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for e in self.events:
                if predicate(e):
                    return e
            self.collect(0.1)
        for e in self.events:
            if predicate(e):
                return e
        return None


# ---------------------------------------------------------------------------- process --

class Controller:
    def __init__(self, binary, workdir, extra_args=()):
        self.binary = binary
        self.extra_args = list(extra_args)  # appended to the command line
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.tokens_file = self.workdir / "tokens.json"
        self.log_file = self.workdir / "controller.log"
        self.process = None
        self.port = None

    def start(self):
        self.tokens_file.write_text(json.dumps({"tokens": [
            {"name": role + "-user", "role": role, "token": token} for role, token in TOKENS.items()]}))
        self.tokens_file.chmod(0o600)  # the controller refuses a token file other users can read
        for attempt in range(5):
            self.port = free_port()
            log = open(self.log_file, "ab")
            self.process = subprocess.Popen(
                [self.binary, "--data-dir", str(self.data_dir), "--plain-listen", f"127.0.0.1:{self.port}",
                 "--bootstrap-tokens", str(self.tokens_file), "--heartbeat-interval-ms", str(HEARTBEAT_MS)]
                + self.extra_args,
                stdout=log, stderr=log)
            log.close()
            client = Client(self.port)

            def up():
                if self.process.poll() is not None:
                    return "exited"
                try:
                    return client.get("/api/v1/health").status == 200
                except OSError:
                    return False
            state = poll(up, 15, interval=0.05)
            if state is True:
                return client
            self.stop()
            if state != "exited":
                break
        raise RuntimeError("bulkhead-controller did not come up; log:\n" + self.log_file.read_text(errors="replace"))

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


# ------------------------------------------------------------------------------ OpenAPI --

def validate_openapi(document):
    """Returns (validator name, list of problems)."""
    problems = []
    name = None
    try:
        from openapi_spec_validator import validate as osv_validate  # pip package, when present
        name = "openapi-spec-validator"
        try:
            osv_validate(document)
        except Exception as e:  # the validator's own exception types differ between versions
            problems.append(f"{type(e).__name__}: {e}")
    except ImportError:
        # Debian 12 packages no OpenAPI validator; the structural checks below (references,
        # path parameters, operation ids, required top-level members) still run.
        name = "structural checks only (openapi-spec-validator not installed)"
        for key in ("openapi", "info", "paths"):
            if key not in document:
                problems.append(f"/: missing {key}")
        if not str(document.get("openapi", "")).startswith("3.0."):
            problems.append("/openapi: not an OpenAPI 3.0.x document")
    # What the meta-schema cannot see: local references resolve, path templates and path
    # parameters agree, operation ids are unique.
    def resolve(ref):
        node = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def walk(node, where):
        if isinstance(node, dict):
            if "$ref" in node and isinstance(node["$ref"], str):
                if not node["$ref"].startswith("#/") or resolve(node["$ref"]) is None:
                    problems.append(f"{where}: unresolved $ref {node['$ref']}")
            for k, v in node.items():
                walk(v, where + "/" + str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")
    walk(document, "")
    ids = []
    for path, item in document.get("paths", {}).items():
        names = re.findall(r"\{([^}]+)\}", path)
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
                continue
            ids.append(operation.get("operationId"))
            declared = []
            for p in operation.get("parameters", []):
                p = resolve(p["$ref"]) if "$ref" in p else p
                if p and p.get("in") == "path":
                    declared.append(p["name"])
            if sorted(declared) != sorted(names):
                problems.append(f"{method.upper()} {path}: path parameters {declared} != template {names}")
    if len(ids) != len(set(ids)) or None in ids:
        problems.append("operationIds missing or not unique")
    return name, problems


def schema_validator(document, schema):
    """A jsonschema validator for an OpenAPI 3.0 Schema Object of `document` (nullable
    becomes anyOf [schema, null]; $refs resolve inside the document)."""
    import jsonschema

    def convert(node):
        if isinstance(node, dict):
            out = {k: convert(v) for k, v in node.items() if k not in ("discriminator", "nullable", "example")}
            if node.get("nullable") is True:
                return {"anyOf": [out, {"type": "null"}]}
            return out
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node
    root = {"components": convert(document.get("components", {}))}
    root.update(convert(schema))
    return jsonschema.Draft4Validator(root)


def match_template(document, path):
    """The documented path template `path` is an instance of (literal segments win)."""
    best = None
    for template in document.get("paths", {}):
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            score = template.count("{")
            if best is None or score < best[0]:
                best = (score, template)
    return best[1] if best else None


# ----------------------------------------------------------------------------- the suite --

class Suite:
    def __init__(self, client, source_dir, controller):
        self.c = client
        self.src = Path(source_dir)
        self.controller = controller
        self.policy = json.loads((self.src / "examples/vdi-pool/policy.json").read_text())
        self.inventory = json.loads((self.src / "examples/vdi-pool/inventory.json").read_text())
        self.openapi = None
        self.enforcer_tokens = {}
        self.seq = {"hv1": 0, "hv2": 0}
        self.t0_ns = time.time_ns()

    # --- helpers ---------------------------------------------------------------------
    def admin(self):
        return TOKENS["admin"]

    def snapshot(self):
        """Everything a refused request must not change, as the admin sees it."""
        t = self.admin()
        parts = {}
        for name, path, q in [("audit", "/api/v1/audit", {"limit": 1000}), ("policies", "/api/v1/policies", None),
                              ("inventory", "/api/v1/inventory", None), ("quarantines", "/api/v1/quarantines", None),
                              ("incidents", "/api/v1/incidents", {"limit": 1000}), ("vpn", "/api/v1/vpn-sessions", {"limit": 10000}),
                              ("events", "/api/v1/events", {"limit": 10000}), ("enforcers", "/api/v1/enforcers", None)]:
            r = self.c.get(path, t, query=q)
            body = copy.deepcopy(r.json)
            if name == "enforcers" and isinstance(body, dict):
                for e in body.get("enforcers", []):  # heartbeats and connections move on their own
                    for k in ("last_heartbeat", "connected", "clock_offset_ms", "details"):
                        e.pop(k, None)
            parts[name] = (r.status, body)
        h = self.c.get("/api/v1/health").json or {}
        parts["health"] = (h.get("active_revision"), h.get("generation"))
        return parts

    def unchanged(self, name, before):
        after = self.snapshot()
        diff = [k for k in before if before[k] != after[k]]
        return check(name, not diff, f"changed: {diff}")

    def expect_error(self, name, r, status, code=None, pointer=None, parameter=None):
        ok = r.status == status and isinstance(r.json, dict) and "error" in r.json \
            and isinstance(r.error.get("code"), str) and isinstance(r.error.get("message"), str)
        if ok and code is not None:
            ok = r.error.get("code") == code
        if ok and pointer is not None:
            ok = r.error.get("pointer") == pointer or any(
                e.get("pointer") == pointer for e in r.error.get("errors", []) if isinstance(e, dict))
        if ok and parameter is not None:
            ok = r.error.get("parameter") == parameter
        want = f"{status}" + (f" {code}" if code else "") + (f" pointer {pointer}" if pointer is not None else "") + \
            (f" parameter {parameter}" if parameter else "")
        return check(name, ok, f"want {want}, got {r!r}")

    def drop(self, workload, dst, port, reason="deny", direction="out", proto="tcp", src=None, time_ns=None):
        e = {"type": "drop", "count": 1, "time_ns": time_ns or time.time_ns(), "direction": direction, "reason": reason,
             "workload": workload, "src": src or self.address_of(workload), "dst": dst, "proto_name": proto,
             "family": 4, "mode": "enforce"}
        if port is not None:
            e["dport"] = port
        return e

    def address_of(self, workload):
        for w in self.inventory["workloads"]:
            if w["id"] == workload:
                return w["addresses"][0]
        return "10.9.9.9"

    def upload(self, enforcer, events, token=None, sent_ns=None):
        batch = []
        for e in events:
            self.seq[enforcer] += 1
            batch.append({"seq": self.seq[enforcer], "event": e})
        body = {"events": batch} if sent_ns is None else {"sent_ns": sent_ns, "events": batch}
        return self.c.post(f"/api/v1/enforcers/{enforcer}/events", body,
                           token or self.enforcer_tokens[enforcer]), batch

    def policy_with(self, **response):
        p = copy.deepcopy(self.policy)
        p["response"] = response
        return p

    def upload_and_activate(self, policy):
        r = self.c.post("/api/v1/policies", policy, self.admin())
        if r.status != 201:
            return None, r
        a = self.c.post(f"/api/v1/policies/{r.json['id']}/activate", None, self.admin())
        return r.json["id"], a

    # --- sections ----------------------------------------------------------------------
    def test_openapi(self):
        r = self.c.get("/api/v1/openapi.json")
        check("openapi: served without a token, 200 JSON", r.status == 200 and isinstance(r.json, dict), r)
        self.openapi = r.json
        repo = json.loads((self.src / "controller/server/openapi.json").read_text())
        check("openapi: served document equals controller/server/openapi.json", r.json == repo)
        name, problems = validate_openapi(r.json)
        check(f"openapi: document validates ({name})", name is not None and not problems, problems[:10])
        check("openapi: version 3.0.3", r.json.get("openapi") == "3.0.3")
        # Every documented operation is served: without a token each protected one is 401
        # (never no-such-route), each public one anything but no-such-route.
        missing = []
        for path, item in r.json["paths"].items():
            concrete = re.sub(r"\{[^}]+\}", "x1", path)
            for method, operation in item.items():
                if method == "get" and path == "/api/v1/stream":
                    s = SseReader(self.c.port, concrete)
                    status, code = s.status, (json.loads(s.body).get("error", {}).get("code") if s.status != 200 else None)
                    s.close()
                elif method == "get" and path.endswith("/channel"):
                    s = ChannelReader(self.c.port, concrete)
                    status, code = s.status, (json.loads(s.body).get("error", {}).get("code") if s.status != 200 else None)
                    s.close()
                else:
                    resp = self.c.request(method.upper(), concrete)
                    status, code = resp.status, resp.error.get("code")
                protected = operation.get("security", None) != []
                if code == "no-such-route" or (protected and status != 401):
                    missing.append(f"{method.upper()} {path}: {status} {code}")
        check("openapi: every documented operation is served (401 without a token, never no-such-route)", not missing, missing)
        r = self.c.get("/api/v1/not-a-route", self.admin())
        self.expect_error("openapi: an undocumented path is 404 no-such-route", r, 404, "no-such-route")
        r = self.c.request("PATCH", "/api/v1/policies", token=self.admin())
        check("openapi: an undocumented method on a documented path is refused (4xx)", 400 <= r.status < 500, r)

    def test_health_whoami(self):
        r = self.c.get("/api/v1/health")
        check("health: 200 ok without a token", r.status == 200 and r.json.get("status") == "ok", r)
        for role, token in TOKENS.items():
            r = self.c.get("/api/v1/whoami", token)
            check(f"whoami: {role} token names its role", r.status == 200 and r.json == {"name": role + "-user", "role": role}, r)
        r = self.c.get("/api/v1/whoami", "not-a-valid-token-at-all")
        self.expect_error("whoami: unknown token -> 401", r, 401, "unauthenticated")
        check("whoami: 401 carries WWW-Authenticate: Bearer", r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers)
        r = self.c.get("/api/v1/whoami", query={"access_token": TOKENS["soc"]})
        self.expect_error("whoami: access_token query parameter is not accepted outside /stream -> 401", r, 401, "unauthenticated")
        # Metrics: the Prometheus text format for any API token, the limits among them.
        self.expect_error("metrics: without a token -> 401", self.c.get("/api/v1/metrics"), 401, "unauthenticated")
        r = self.c.get("/api/v1/metrics", TOKENS["soc"])
        text = r.raw.decode(errors="replace")
        check("metrics: 200 text/plain version 0.0.4",
              r.status == 200 and r.headers.get("content-type", "").startswith("text/plain; version=0.0.4"), r.headers)
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        check("metrics: the plain listener's open connections (this one among them)",
              samples.get('bulkhead_controller_connections_open{listener="plain"}', 0) >= 1, text[:2000])
        check("metrics: its configured limits",
              samples.get('bulkhead_controller_limit{limit="max_connections_per_client",listener="plain"}', 0) > 0 and
              samples.get('bulkhead_controller_limit{limit="header_timeout_seconds",listener="plain"}', 0) > 0,
              [k for k in samples if "limit" in k])
        check("metrics: requests counted, channels and the outbox reported",
              samples.get('bulkhead_controller_requests_total{listener="plain"}', 0) >= 1 and
              "bulkhead_controller_channels_open" in samples and "bulkhead_controller_outbox_depth" in samples and
              samples.get("bulkhead_controller_store_readable") == 1, sorted(samples)[:80])
        check("metrics: each family described with HELP and TYPE",
              "# TYPE bulkhead_controller_requests_total counter" in text and
              "# TYPE bulkhead_controller_connections_open gauge" in text and
              "# HELP bulkhead_controller_limit " in text, text[:1500])
        # A second controller on the same address must fail to start, not share the port
        # (SO_REUSEPORT would let the kernel split connections between the two).
        other = self.controller.workdir / "second"
        other.mkdir(exist_ok=True)
        second = subprocess.run([self.controller.binary, "--data-dir", str(other), "--plain-listen",
                                 f"127.0.0.1:{self.controller.port}"], capture_output=True, text=True, timeout=30)
        check("listen: a second controller on a taken address exits non-zero naming it",
              second.returncode != 0 and f"cannot listen on 127.0.0.1:{self.controller.port}" in second.stderr,
              (second.returncode, second.stderr[-300:]))
        check("listen: the first controller still answers", self.c.get("/api/v1/health").status == 200)

    def test_inventory(self):
        t = self.admin()
        before = self.snapshot()
        r = self.c.put("/api/v1/inventory", raw=b'{"enforcers": [], "workloads": [}', token=t)
        self.expect_error("inventory PUT: invalid JSON -> 400 invalid-json", r, 400, "invalid-json")
        check("inventory PUT: invalid JSON error has a pointer and a located diagnostic (line, column)",
              "pointer" in r.error and r.error.get("errors") and "line 1, column 33" in r.error["errors"][0].get("message", ""), r)
        r = self.c.put("/api/v1/inventory", raw=b'{"enforcers": [], "enforcers": [], "workloads": []}', token=t)
        self.expect_error("inventory PUT: duplicate key -> 400 invalid-json", r, 400, "invalid-json", pointer="/enforcers")
        r = self.c.put("/api/v1/inventory", raw=b"", token=t)
        self.expect_error("inventory PUT: empty body -> 400 empty-body", r, 400, "empty-body")
        bad = copy.deepcopy(self.inventory)
        bad["bogus"] = 1
        r = self.c.put("/api/v1/inventory", bad, t)
        self.expect_error("inventory PUT: unknown member -> 422 with pointer /bogus", r, 422, "invalid-document", pointer="/bogus")
        bad = copy.deepcopy(self.inventory)
        bad["workloads"][0]["addresses"] = "10.1.0.1"
        r = self.c.put("/api/v1/inventory", bad, t)
        self.expect_error("inventory PUT: wrong type -> 422 with pointer /workloads/0/addresses", r, 422, "invalid-document",
                          pointer="/workloads/0/addresses")
        bad = {"enforcers": self.inventory["enforcers"]}
        r = self.c.put("/api/v1/inventory", bad, t)
        self.expect_error("inventory PUT: missing workloads -> 422", r, 422, "invalid-document")
        r = self.c.put("/api/v1/inventory", [1, 2], t)
        check("inventory PUT: array body -> 4xx", r.status in (400, 422) and "error" in (r.json or {}), r)
        self.unchanged("inventory PUT: refused bodies change nothing", before)

        r = self.c.put("/api/v1/inventory", self.inventory, t)
        check("inventory PUT: example inventory -> 200 with counts", r.status == 200 and r.json.get("workloads") == len(self.inventory["workloads"])
              and r.json.get("enforcers") == 2, r)
        r = self.c.get("/api/v1/inventory", TOKENS["automation"])
        check("inventory GET: returns what was stored", r.status == 200 and
              sorted(w["id"] for w in r.json["workloads"]) == sorted(w["id"] for w in self.inventory["workloads"]), r)
        r = self.c.get("/api/v1/workloads", TOKENS["soc"])
        check("workloads GET: lists every workload", r.status == 200 and len(r.json["workloads"]) == len(self.inventory["workloads"]), r)
        r = self.c.get("/api/v1/workloads/vdi-001", TOKENS["soc"])
        check("workload GET: vdi-001 with its user", r.status == 200 and r.json.get("user") == "kimura", r)
        r = self.c.get("/api/v1/workloads/no-such-workload", TOKENS["soc"])
        self.expect_error("workload GET: unknown id -> 404", r, 404, "not-found")
        audit = self.c.get("/api/v1/audit", t, query={"action": "inventory.replace"})
        check("inventory PUT: audited with actor and before/after", audit.status == 200 and audit.json["entries"]
              and audit.json["entries"][0]["actor"] == "admin-user" and audit.json["entries"][0]["after"] is not None, audit)

        # One workload: PUT, bad PUTs, DELETE.
        before = self.snapshot()
        r = self.c.put("/api/v1/workloads/vdi-004", {"id": "vdi-005", "addresses": ["10.1.0.4"]}, t)
        self.expect_error("workload PUT: id differs from the path -> 400 pointer /id", r, 400, "invalid-value", pointer="/id")
        r = self.c.put("/api/v1/workloads/vdi-004", {"addresses": ["10.1.0.4"], "enforcer": "hv1", "colour": "red",
                                                      "attachment": {"mode": "port", "interface": "vdi004"}}, t)
        self.expect_error("workload PUT: unknown member -> 422 with its pointer", r, 422, "invalid-document")
        check("workload PUT: unknown member's pointer names it", any("colour" in (e.get("pointer") or "") for e in r.error.get("errors", [])), r)
        r = self.c.put("/api/v1/workloads/vdi-004", {"addresses": "10.1.0.4"}, t)
        self.expect_error("workload PUT: wrong type -> 422", r, 422, "invalid-document")
        r = self.c.put("/api/v1/workloads/vdi-004", {"enforcer": "hv1"}, t)
        self.expect_error("workload PUT: missing addresses -> 422", r, 422, "invalid-document")
        r = self.c.put("/api/v1/workloads/vdi-004", "text", t)
        self.expect_error("workload PUT: a string body -> 400 wrong-type", r, 400, "wrong-type", pointer="")
        r = self.c.put("/api/v1/workloads/vdi-004", raw=b'{"addresses": [', token=t)
        self.expect_error("workload PUT: invalid JSON -> 400", r, 400, "invalid-json")
        r = self.c.put("/api/v1/workloads/vdi-004", {"addresses": ["10.1.0.4"], "enforcer": "hv9",
                                                      "attachment": {"mode": "port", "interface": "vdi004"}}, t)
        check("workload PUT: unknown enforcer -> 422", r.status == 422, r)
        self.unchanged("workload PUT: refused bodies change nothing", before)
        vdi4 = {"enforcer": "hv1", "addresses": ["10.1.0.4"], "labels": {"role": "vdi", "pool": "dev"}, "user": "mori",
                "attachment": {"mode": "port", "interface": "vdi004"}}
        r = self.c.put("/api/v1/workloads/vdi-004", vdi4, t)
        check("workload PUT: new workload vdi-004 -> 200", r.status == 200 and r.json.get("upserted") == 1, r)
        r = self.c.get("/api/v1/workloads/vdi-004", t)
        check("workload PUT: stored with the path's id", r.status == 200 and r.json.get("id") == "vdi-004" and r.json.get("user") == "mori", r)
        r = self.c.delete("/api/v1/workloads/vdi-004", t)
        check("workload DELETE: 200 deleted 1", r.status == 200 and r.json.get("deleted") == 1, r)
        r = self.c.delete("/api/v1/workloads/vdi-004", t)
        self.expect_error("workload DELETE: again -> 404", r, 404, "not-found")

        # Bulk.
        before = self.snapshot()
        for name, body, status, code, pointer in [
            ("unknown member", {"upsert": [], "bogus": 1}, 400, "unknown-field", "/bogus"),
            ("upsert not an array", {"upsert": {}}, 400, "wrong-type", "/upsert"),
            ("delete not an array", {"delete": "vdi-001"}, 400, "wrong-type", "/delete"),
            ("delete item not a string", {"delete": [5]}, 400, "wrong-type", "/delete/0"),
            ("upsert item without id", {"upsert": [{"addresses": ["10.1.0.9"]}]}, 400, "invalid-value", "/upsert/0"),
            ("not an object", [1], 400, "wrong-type", ""),
        ]:
            r = self.c.post("/api/v1/workloads/bulk", body, t)
            self.expect_error(f"workloads bulk: {name} -> {status} {code}", r, status, code, pointer=pointer)
        r = self.c.post("/api/v1/workloads/bulk", {"upsert": [dict(vdi4, id="vdi-004"), {"id": "vdi-006", "addresses": "x"}]}, t)
        self.expect_error("workloads bulk: one invalid workload -> 422, all or nothing", r, 422, "invalid-document")
        self.unchanged("workloads bulk: refused bodies change nothing (none of the batch stored)", before)
        r = self.c.post("/api/v1/workloads/bulk", {"upsert": [dict(vdi4, id="vdi-004"),
                                                              dict(vdi4, id="vdi-005", addresses=["10.1.0.5"], attachment={"mode": "port", "interface": "vdi005"})],
                                                   "delete": []}, t)
        check("workloads bulk: two upserts -> 200", r.status == 200 and r.json.get("upserted") == 2, r)
        r = self.c.post("/api/v1/workloads/bulk", {"delete": ["vdi-005"]}, t)
        check("workloads bulk: delete -> 200 deleted 1", r.status == 200 and r.json.get("deleted") == 1, r)
        check("workloads bulk: vdi-005 gone", self.c.get("/api/v1/workloads/vdi-005", t).status == 404)

        # A duplicate address on the other hypervisor (overlapping networks): the address
        # alone is ambiguous for quarantine.
        dup = {"enforcer": "hv2", "addresses": ["10.1.0.2"], "labels": {"role": "vdi", "pool": "dev"},
               "attachment": {"mode": "port", "interface": "vdi199"}}
        r = self.c.put("/api/v1/workloads/vdi-199", dup, t)
        self.dup_ok = check("workload PUT: vdi-199 on hv2 sharing 10.1.0.2 with vdi-002 -> 200", r.status == 200, r)

    def test_vpn(self):
        t = self.admin()
        before = self.snapshot()
        for name, body, code, pointer in [
            ("missing user", {"pool_address": "10.8.0.5"}, "missing-field", None),
            ("user wrong type", {"user": 5, "pool_address": "10.8.0.5"}, "wrong-type", "/user"),
            ("missing pool_address", {"user": "kimura"}, "missing-field", None),
            ("bad pool_address", {"user": "kimura", "pool_address": "10.8.0.500"}, "invalid-address", "/pool_address"),
            ("unknown member", {"user": "kimura", "pool_address": "10.8.0.5", "until": 1}, "unknown-field", "/until"),
            ("end before start", {"user": "kimura", "pool_address": "10.8.0.5", "start_ms": 2000, "end_ms": 1000}, "invalid-value", "/end_ms"),
            ("real_address wrong type", {"user": "kimura", "pool_address": "10.8.0.5", "real_address": 7}, "wrong-type", "/real_address"),
        ]:
            r = self.c.post("/api/v1/vpn-sessions", body, t)
            self.expect_error(f"vpn POST: {name} -> 400 {code}", r, 400, code, pointer=pointer)
        r = self.c.post("/api/v1/vpn-sessions", raw=b"{user}", token=t)
        self.expect_error("vpn POST: invalid JSON -> 400 invalid-json", r, 400, "invalid-json")
        self.unchanged("vpn POST: refused bodies change nothing", before)
        # Wrong types of the optional times (checked apart: the service stores these).
        r = self.c.post("/api/v1/vpn-sessions", {"user": "kimura", "pool_address": "10.8.0.5", "start_ms": "yesterday"}, t)
        self.expect_error("vpn POST: start_ms wrong type -> 400 pointer /start_ms", r, 400, pointer="/start_ms")
        r = self.c.post("/api/v1/vpn-sessions", {"user": "kimura", "pool_address": "10.8.0.5", "end_ms": "tomorrow"}, t)
        self.expect_error("vpn POST: end_ms wrong type -> 400 pointer /end_ms", r, 400, pointer="/end_ms")
        now = int(time.time() * 1000)
        r = self.c.post("/api/v1/vpn-sessions", {"user": "kimura", "pool_address": "10.8.0.5", "real_address": "198.51.100.7",
                                                 "start_ms": now - 60000}, t)
        check("vpn POST: 201 with id", r.status == 201 and isinstance(r.json.get("id"), int) and r.json.get("end") is None, r)
        sid = r.json.get("id") if r.json else None
        r = self.c.get("/api/v1/vpn-sessions", TOKENS["soc"], query={"active_at": now})
        check("vpn GET: the open session is active now", r.status == 200 and any(s["id"] == sid for s in r.json["sessions"]), r)
        r = self.c.get("/api/v1/vpn-sessions", TOKENS["soc"], query={"active_at": now - 120000})
        check("vpn GET: not active before its start", r.status == 200 and not any(s["id"] == sid for s in r.json["sessions"]), r)
        for q, p in [({"active_at": "noon"}, "active_at"), ({"limit": 0}, "limit"), ({"limit": 10001}, "limit"), ({"limit": "x"}, "limit")]:
            r = self.c.get("/api/v1/vpn-sessions", TOKENS["soc"], query=q)
            self.expect_error(f"vpn GET: bad {q} -> 400 invalid-parameter", r, 400, "invalid-parameter", parameter=p)
        r = self.c.post(f"/api/v1/vpn-sessions/{sid}/end", {"end_ms": now, "why": 1}, t)
        self.expect_error("vpn end: unknown member -> 400", r, 400, "unknown-field", pointer="/why")
        r = self.c.post("/api/v1/vpn-sessions/abc/end", None, t)
        self.expect_error("vpn end: non-numeric id -> 400", r, 400, "invalid-parameter")
        r = self.c.post("/api/v1/vpn-sessions/99999/end", None, t)
        self.expect_error("vpn end: unknown id -> 404", r, 404, "not-found")
        r = self.c.post(f"/api/v1/vpn-sessions/{sid}/end", None, t)
        check("vpn end: no body -> 200", r.status == 200 and r.json.get("id") == sid, r)
        r = self.c.get("/api/v1/vpn-sessions", TOKENS["soc"], query={"active_at": int(time.time() * 1000) + 1000})
        check("vpn end: no longer active", r.status == 200 and not any(s["id"] == sid for s in r.json["sessions"]), r)

    def test_policies(self):
        t = self.admin()
        r = self.c.get("/api/v1/policies/active", TOKENS["soc"])
        self.expect_error("policy active: none yet -> 404", r, 404, "not-found")
        before = self.snapshot()
        r = self.c.post("/api/v1/policies/rollback", None, t)
        self.expect_error("policy rollback: nothing to roll back -> 409", r, 409, "nothing-to-roll-back")
        for path in ("/api/v1/policies/validate", "/api/v1/policies"):
            short = path.rsplit("/", 1)[1]
            r = self.c.post(path, raw=b'{"name": "x",\n "rules": [,]}', token=t)
            self.expect_error(f"policy {short}: invalid JSON -> 400 with pointer", r, 400, "invalid-json")
            check(f"policy {short}: invalid JSON located (pointer, line 2)", "pointer" in r.error and "line 2," in r.error["errors"][0].get("message", ""), r)
            bad = copy.deepcopy(self.policy)
            bad["colour"] = "red"
            r = self.c.post(path, bad, t)
            self.expect_error(f"policy {short}: unknown member -> 422 pointer /colour", r, 422, "invalid-document", pointer="/colour")
            bad = copy.deepcopy(self.policy)
            bad["rules"][0]["from"] = "vdi"
            r = self.c.post(path, bad, t)
            self.expect_error(f"policy {short}: wrong type -> 422 pointer /rules/0/from", r, 422, "invalid-document", pointer="/rules/0/from")
            bad = copy.deepcopy(self.policy)
            del bad["segments"]
            r = self.c.post(path, bad, t)
            self.expect_error(f"policy {short}: missing segments -> 422", r, 422, "invalid-document")
            bad = copy.deepcopy(self.policy)
            bad["rules"][0]["to"] = ["fileservers"]
            r = self.c.post(path, bad, t)
            self.expect_error(f"policy {short}: unknown segment -> 422 pointer /rules/0/to/0", r, 422, "invalid-document", pointer="/rules/0/to/0")
            bad = copy.deepcopy(self.policy)
            bad["response"] = {"incident": {"distinct_targets": 0}}
            r = self.c.post(path, bad, t)
            self.expect_error(f"policy {short}: response.incident.distinct_targets 0 -> 422", r, 422, "invalid-document",
                              pointer="/response/incident/distinct_targets")
            r = self.c.post(path, None, t)
            self.expect_error(f"policy {short}: empty body -> 400", r, 400, "empty-body")
            # A valid policy with anything but a JSON type is refused, not stored as a draft.
            for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml", None):
                h = {"Content-Type": content_type} if content_type else {"Content-Type": ""}
                r = self.c.post(path, self.policy, t, headers=h)
                self.expect_error(f"policy {short}: sent as {content_type or 'no type'} -> 415", r, 415,
                                  "unsupported-media-type")
            if short == "validate":  # the positive control (validate stores nothing)
                r = self.c.post(path, self.policy, t, headers={"Content-Type": "Application/JSON; charset=utf-8"})
                check("policy validate: application/json with a charset is JSON", r.status == 200, r)
        self.unchanged("policy: refused uploads and rollback change nothing", before)

        r = self.c.post("/api/v1/policies/validate", self.policy, t)
        check("policy validate: example -> 200 valid, enforcers hv1 hv2", r.status == 200 and r.json.get("valid") is True
              and sorted(r.json.get("enforcers", [])) == ["hv1", "hv2"], r)
        check("policy validate: stores nothing", self.c.get("/api/v1/policies", t).json == {"revisions": []})

        p1 = self.policy_with(incident={"distinct_targets": 3, "window_seconds": 60, "severity": "high"},
                              auto_quarantine={"mode": "on", "min_severity": "high"})
        r = self.c.post("/api/v1/policies", p1, t)
        check("policy upload: 201 draft", r.status == 201 and r.json.get("state") == "draft" and r.json.get("author") == "admin-user", r)
        self.rev1 = r.json["id"]
        r = self.c.get("/api/v1/policies", TOKENS["automation"])
        check("policy list: has the draft", r.status == 200 and [x["id"] for x in r.json["revisions"]] == [self.rev1], r)
        for q in ({"limit": 0}, {"limit": 1001}, {"limit": "ten"}):
            r = self.c.get("/api/v1/policies", t, query=q)
            self.expect_error(f"policy list: bad {q} -> 400", r, 400, "invalid-parameter", parameter="limit")
        r = self.c.get(f"/api/v1/policies/{self.rev1}", TOKENS["soc"])
        check("policy get: document as uploaded", r.status == 200 and r.json.get("document") == p1, r)
        for path, code, status in [("/api/v1/policies/abc", "invalid-parameter", 400), ("/api/v1/policies/0", "invalid-parameter", 400),
                                   ("/api/v1/policies/99999", "not-found", 404)]:
            self.expect_error(f"policy get: {path} -> {status}", self.c.get(path, t), status, code)
        r = self.c.get(f"/api/v1/policies/{self.rev1}/diff", TOKENS["soc"])
        check("policy diff: against nothing active, adds elements for hv1 and hv2", r.status == 200 and r.json.get("against") is None
              and sorted(e["enforcer"] for e in r.json["enforcers"]) == ["hv1", "hv2"] and r.json["elements_added"] > 0, r)
        self.expect_error("policy diff: unknown id -> 404", self.c.get("/api/v1/policies/99999/diff", t), 404, "not-found")
        self.expect_error("policy diff: bad id -> 400", self.c.get("/api/v1/policies/x/diff", t), 400, "invalid-parameter")
        r = self.c.post(f"/api/v1/policies/{self.rev1}/what-if", None, TOKENS["soc"], query={"from": "2026-01-01T00:00:00Z"})
        ok = r.status == 200 and r.json.get("revision") == self.rev1
        if ok:
            j = r.json
            changed = j["newly_allowed"] + j["newly_blocked"] + j["newly_enforced"] + j["newly_monitored"]
            ok = (all(isinstance(j[k], int) and j[k] >= 0 for k in
                      ("events", "unchanged", "newly_allowed", "newly_blocked", "newly_enforced", "newly_monitored"))
                  and j["unchanged"] + changed <= j["events"]
                  and sum(g["events"] for g in j["groups"]) == changed)
        check("policy what-if: 200 with consistent counts (changes = sum of the groups, within the events evaluated)",
              ok, r)
        for q, p in [({"from": "yesterday"}, "from"), ({"to": "2026-13-01"}, "to"), ({"limit": 0}, "limit"),
                     ({"from": 2000, "to": 1000}, "from")]:
            r = self.c.post(f"/api/v1/policies/{self.rev1}/what-if", None, TOKENS["soc"], query=q)
            self.expect_error(f"policy what-if: bad {q} -> 400", r, 400, "invalid-parameter", parameter=p)
        r = self.c.post("/api/v1/policies/99999/what-if", None, TOKENS["soc"])
        self.expect_error("policy what-if: unknown id -> 404", r, 404, "not-found")

        before = self.snapshot()
        self.expect_error("policy activate: unknown id -> 404", self.c.post("/api/v1/policies/99999/activate", None, t), 404, "not-found")
        self.expect_error("policy activate: bad id -> 400", self.c.post("/api/v1/policies/-3/activate", None, t), 400, "invalid-parameter")
        self.unchanged("policy activate: refused activations change nothing", before)
        r = self.c.post(f"/api/v1/policies/{self.rev1}/activate", None, t)
        check("policy activate: 200 active with a generation", r.status == 200 and r.json.get("state") == "active"
              and r.json.get("generation", 0) > 0, r)
        r = self.c.get("/api/v1/policies/active", TOKENS["automation"])
        check("policy active: the activated revision", r.status == 200 and r.json.get("id") == self.rev1, r)
        r = self.c.post(f"/api/v1/policies/{self.rev1}/activate", None, t)
        check("policy activate: activating the active revision again is harmless (2xx or 409)", r.status in (200, 409), r)
        h = self.c.get("/api/v1/health").json
        check("health: names the active revision", h.get("active_revision") == self.rev1, h)

        # A revision that no longer fits: it names vdi-004, which is then deleted (the active
        # policy does not need it, so the deletion is allowed).
        p2 = copy.deepcopy(p1)
        p2["segments"].append({"name": "special", "selector": {"workloads": ["vdi-004"]}})
        p2["rules"].append({"name": "special-to-fs", "action": "allow", "from": ["special"], "to": ["file-servers"], "services": ["smb"]})
        r = self.c.post("/api/v1/policies", p2, t)
        check("policy upload: revision naming vdi-004 -> 201", r.status == 201, r)
        rev_ill = r.json["id"] if r.status == 201 else None
        r = self.c.delete("/api/v1/workloads/vdi-004", t)
        check("workload DELETE: vdi-004, unused by the active policy -> 200", r.status == 200, r)
        before = self.snapshot()
        r = self.c.post(f"/api/v1/policies/{rev_ill}/activate", None, t)
        self.expect_error("policy activate: revision that no longer fits the inventory -> 422", r, 422, "invalid-document")
        self.unchanged("policy activate: ill-fitting revision changes nothing (active, generation, audit)", before)
        r = self.c.get(f"/api/v1/policies/{rev_ill}/diff", t)
        check("policy diff: of an ill-fitting revision -> 422 (not 5xx)", r.status == 422, r)

        # Rollback: activate a second revision, roll back to the first.
        p3 = self.policy_with(incident={"distinct_targets": 3, "window_seconds": 60, "severity": "high"},
                              auto_quarantine={"mode": "dry-run", "min_severity": "high"})
        rev3, a = self.upload_and_activate(p3)
        check("policy activate: second revision (dry-run) -> 200", a.status == 200, a)
        r = self.c.get(f"/api/v1/policies/{self.rev1}", t)
        check("policy activate: first revision superseded", r.json.get("state") == "superseded", r)
        r = self.c.post("/api/v1/policies/rollback", None, t)
        check("policy rollback: 200, first revision active again", r.status == 200 and r.json.get("id") == self.rev1, r)
        r = self.c.get("/api/v1/policies/active", t)
        check("policy rollback: active is the first revision", r.json.get("id") == self.rev1, r)
        self.rev_dry = rev3
        audit = self.c.get("/api/v1/audit", t, query={"action": "policy.activate"}).json["entries"]
        check("policy activate/rollback: audited with before/after", len(audit) >= 2 and audit[0]["after"] == {"active_revision": self.rev1}
              and audit[0]["before"] == {"active_revision": rev3} and audit[1]["after"] == {"active_revision": rev3}
              and audit[1]["before"] == {"active_revision": self.rev1}, audit)
        # Inventory changes must fit the active policy.
        before = self.snapshot()
        r = self.c.delete("/api/v1/workloads/vdi-001", t)
        check("workload DELETE: still fits (selector by label) -> 200", r.status == 200, r)
        r = self.c.put("/api/v1/workloads/vdi-001", {k: v for k, v in self.inventory["workloads"][0].items() if k != "id"}, t)
        check("workload PUT: vdi-001 back -> 200", r.status == 200, r)

    def test_enrollment(self):
        t = self.admin()
        r = self.c.get("/api/v1/enforcers", TOKENS["soc"])
        check("enforcers GET: hv1 and hv2, not enrolled", r.status == 200 and sorted(e["id"] for e in r.json["enforcers"]) == ["hv1", "hv2"]
              and all(e["enrolled_at"] is None for e in r.json["enforcers"]), r)
        r = self.c.get("/api/v1/enforcers/hv1", TOKENS["automation"])
        check("enforcer GET: hv1 has a desired generation", r.status == 200 and r.json.get("desired_generation", 0) > 0, r)
        self.expect_error("enforcer GET: unknown -> 404", self.c.get("/api/v1/enforcers/hv9", t), 404, "not-found")
        before = self.snapshot()
        self.expect_error("enrollment-token: unknown enforcer -> 404", self.c.post("/api/v1/enforcers/hv9/enrollment-token", None, t), 404, "not-found")
        for name, body, status, code in [
            ("invalid JSON", b"{", 400, "invalid-json"),
            ("unknown member", {"enforcer": "hv1", "token": "x" * 64, "os": "linux"}, 400, "unknown-field"),
            ("missing token", {"enforcer": "hv1"}, 400, "missing-field"),
            ("token wrong type", {"enforcer": "hv1", "token": 12}, 400, "wrong-type"),
            ("wrong token", {"enforcer": "hv1", "token": "0" * 64}, 401, "enrollment-refused"),
        ]:
            if isinstance(body, bytes):
                r = self.c.post("/api/v1/enforcers/enroll", raw=body)
            else:
                r = self.c.post("/api/v1/enforcers/enroll", body)
            self.expect_error(f"enroll: {name} -> {status}", r, status, code)
        self.unchanged("enroll: refused enrollments change nothing", before)
        for enforcer in ("hv1", "hv2"):
            r = self.c.post(f"/api/v1/enforcers/{enforcer}/enrollment-token", None, t)
            check(f"enrollment-token: {enforcer} -> 201 token", r.status == 201 and len(r.json.get("token", "")) >= 32
                  and r.json.get("enforcer") == enforcer, r)
            token = r.json["token"]
            if enforcer == "hv1":
                r = self.c.post("/api/v1/enforcers/enroll", {"enforcer": "hv2", "token": token})
                self.expect_error("enroll: hv1's token for hv2 -> 401", r, 401, "enrollment-refused")
            r = self.c.post("/api/v1/enforcers/enroll", {"enforcer": enforcer, "token": token, "version": "0.4.0", "hostname": enforcer + ".lab"})
            check(f"enroll: {enforcer} -> 201 credential", r.status == 201 and len(r.json.get("credential", "")) >= 32, r)
            self.enforcer_tokens[enforcer] = r.json["credential"]
            r = self.c.post("/api/v1/enforcers/enroll", {"enforcer": enforcer, "token": token})
            self.expect_error(f"enroll: {enforcer}'s one-time token used twice -> 401", r, 401, "enrollment-refused")
        r = self.c.get("/api/v1/enforcers/hv1", t)
        check("enforcer GET: hv1 enrolled with version and hostname", r.json.get("enrolled_at") and r.json.get("version") == "0.4.0"
              and r.json.get("hostname") == "hv1.lab", r)
        r = self.c.get("/api/v1/whoami", self.enforcer_tokens["hv1"])
        self.expect_error("enforcer credential: normal API route (whoami) -> 403", r, 403, "forbidden")
        r = self.c.get("/api/v1/events", self.enforcer_tokens["hv1"])
        self.expect_error("enforcer credential: GET /events -> 403", r, 403, "forbidden")
        before = self.snapshot()
        r = self.c.post("/api/v1/enforcers/hv2/status", {"generation": 1, "hash": "x"}, self.enforcer_tokens["hv1"])
        self.expect_error("enforcer credential: hv1 reporting status for hv2 -> 403", r, 403, "forbidden")
        r, _ = self.upload("hv2", [self.drop("vdi-101", "10.1.1.2", 445)], token=self.enforcer_tokens["hv1"])
        self.seq["hv2"] -= 1
        self.expect_error("enforcer credential: hv1 uploading events for hv2 -> 403", r, 403, "forbidden")
        s = ChannelReader(self.c.port, "/api/v1/enforcers/hv2/channel", self.enforcer_tokens["hv1"])
        check("enforcer credential: hv1 opening hv2's channel -> 403", s.status == 403, s.status)
        s.close()
        s = ChannelReader(self.c.port, "/api/v1/enforcers/hv1/channel", TOKENS["admin"])
        check("channel: an admin token -> 403 (enforcer role only)", s.status == 403, s.status)
        s.close()
        self.unchanged("enforcer credential: refused requests change nothing", before)
        # Re-enrolling replaces the credential.
        r = self.c.post("/api/v1/enforcers/hv2/enrollment-token", None, t)
        r = self.c.post("/api/v1/enforcers/enroll", {"enforcer": "hv2", "token": r.json["token"]})
        old = self.enforcer_tokens["hv2"]
        self.enforcer_tokens["hv2"] = r.json["credential"]
        r = self.c.post("/api/v1/enforcers/hv2/status", {"generation": 0, "hash": ""}, old)
        self.expect_error("enroll again: the old credential stops working -> 401", r, 401, "unauthenticated")
        r = self.c.post("/api/v1/enforcers/hv2/status", {"generation": 0, "hash": ""}, self.enforcer_tokens["hv2"])
        check("enroll again: the new credential works", r.status == 200, r)

    def test_status(self):
        e = self.enforcer_tokens["hv2"]
        for name, raw, code in [("array body", b"[1]", "wrong-type"), ("invalid JSON", b"{\"generation\": }", "invalid-json"),
                                ("empty body", b"", "empty-body")]:
            r = self.c.post("/api/v1/enforcers/hv2/status", raw=raw, token=e)
            self.expect_error(f"status: {name} -> 400", r, 400, code)
        desired = self.c.get("/api/v1/enforcers/hv2", self.admin()).json
        now_ms = int(time.time() * 1000)
        r = self.c.post("/api/v1/enforcers/hv2/status", {"generation": desired["desired_generation"], "hash": desired["desired_hash"],
                                                         "state": "applied", "enforcer_time_ms": now_ms + 5000, "version": "0.4.1",
                                                         "drift_repairs": 2}, e)
        check("status: ack -> 200 controller_time_ms", r.status == 200 and isinstance(r.json.get("controller_time_ms"), int), r)
        s = self.c.get("/api/v1/enforcers/hv2", TOKENS["soc"]).json
        check("status: enforcer in sync with heartbeat, drift, version, clock offset", s.get("in_sync") is True and s.get("last_heartbeat")
              and s.get("drift_repairs") == 2 and s.get("version") == "0.4.1" and 4000 <= s.get("clock_offset_ms", 0) <= 6000, s)
        r = self.c.post("/api/v1/enforcers/hv2/status", {"generation": "seven"}, e)
        check("status: wrong type for generation -> 400 with pointer /generation", r.status == 400 and r.error.get("pointer") == "/generation", r)
        r = self.c.post("/api/v1/enforcers/hv9/status", {}, e)
        self.expect_error("status: unknown enforcer id -> 403 (not its own)", r, 403, "forbidden")

    def test_channel(self):
        e = self.enforcer_tokens["hv1"]
        for q, p in [({"generation": -1}, "generation"), ({"generation": "x"}, "generation"), ({"hash": "h" * 129}, "hash")]:
            s = ChannelReader(self.c.port, "/api/v1/enforcers/hv1/channel", e, query=q)
            body = json.loads(s.body) if s.status != 200 else {}
            check(f"channel: bad {q} -> 400 invalid-parameter", s.status == 400 and body.get("error", {}).get("parameter") == p, (s.status, body))
            s.close()
        ch = ChannelReader(self.c.port, "/api/v1/enforcers/hv1/channel", e, query={"generation": 0, "hash": ""})
        try:
            check("channel: 200 application/x-ndjson", ch.status == 200 and ch.content_type.startswith("application/x-ndjson"), (ch.status, ch.content_type))
            hello = ch.next_message(5)
            check("channel: hello first", hello is not None and hello.get("type") == "hello" and hello.get("heartbeat_interval_ms") == HEARTBEAT_MS
                  and hello.get("desired_generation", 0) > 0, hello)
            full = ch.next_message(5)
            check("channel: then the full ruleset", full is not None and full.get("type") == "ruleset" and full.get("ruleset", {}).get("enforcer") == "hv1"
                  and full.get("generation") == hello.get("desired_generation"), str(full)[:300])
            r = self.c.get("/api/v1/enforcers/hv1", self.admin())
            check("channel: enforcer shows connected", r.json.get("connected") is True, r)
            hb = ch.next_message(HEARTBEAT_MS / 1000 * 5)
            check("channel: heartbeat when nothing changes", hb is not None and hb.get("type") == "heartbeat", hb)
            # Ack the ruleset, then quarantine vdi-002 (hv1): one diff on the open stream.
            self.c.post("/api/v1/enforcers/hv1/status", {"generation": full["generation"], "hash": full["hash"], "state": "applied"}, e)
            q = self.c.post("/api/v1/quarantines", {"workload": "vdi-002", "reason": "channel test"}, TOKENS["automation"])
            check("channel: quarantine vdi-002 -> 201", q.status == 201, q)
            diff = ch.next_message(5, want=None)
            while diff is not None and diff.get("type") == "heartbeat":
                diff = ch.next_message(5)
            check("channel: a diff follows the quarantine, based on the acked ruleset", diff is not None and diff.get("type") == "diff"
                  and diff.get("base_hash") == full["hash"] and diff.get("generation", 0) > full["generation"], str(diff)[:400])
            r = self.c.get("/api/v1/quarantines/vdi-002", TOKENS["soc"])
            check("quarantine GET: per-enforcer state pending before the ack", r.status == 200 and r.json["enforcers"][0]["enforcer"] == "hv1"
                  and r.json["enforcers"][0]["state"] == "pending", r)
            if diff:
                self.c.post("/api/v1/enforcers/hv1/status", {"generation": diff["generation"], "hash": diff["hash"], "state": "applied"}, e)
            r = self.c.get("/api/v1/quarantines/vdi-002", TOKENS["soc"])
            check("quarantine GET: applied on hv1 after the ack", r.status == 200 and r.json["enforcers"][0]["state"] == "applied", r)
            # Release with wait_ms: answered applied once the enforcer acks (the test acks
            # from a thread as soon as the diff arrives).
            acked = {}

            def ack_next():
                m = ch.next_message(5)
                while m is not None and m.get("type") == "heartbeat":
                    m = ch.next_message(5)
                acked["message"] = m
                if m:
                    self.c.post("/api/v1/enforcers/hv1/status", {"generation": m["generation"], "hash": m["hash"], "state": "applied"}, e)
            th = threading.Thread(target=ack_next)
            th.start()
            r = self.c.delete("/api/v1/quarantines/vdi-002", TOKENS["automation"], query={"wait_ms": 5000})
            th.join(10)
            check("quarantine DELETE wait_ms: released and applied once the enforcer acked", r.status == 200 and r.json.get("released") is True
                  and r.json.get("applied") is True and (acked.get("message") or {}).get("type") == "diff", (r, acked))
            # A newer stream for the same enforcer ends this one.
            ch2 = ChannelReader(self.c.port, "/api/v1/enforcers/hv1/channel", e, query={"generation": acked["message"]["generation"] if acked.get("message") else 0,
                                                                                      "hash": acked["message"]["hash"] if acked.get("message") else ""})
            h2 = ch2.next_message(5)
            check("channel: second stream says hello", h2 is not None and h2.get("type") == "hello", h2)
            nxt = ch2.next_message(HEARTBEAT_MS / 1000 * 5)
            check("channel: up-to-date enforcer gets no ruleset, just heartbeats", nxt is not None and nxt.get("type") == "heartbeat", nxt)
            check("channel: the older stream is closed", ch.closed.wait(HEARTBEAT_MS / 1000 * 5), "still open")
            ch2.close()
        finally:
            ch.close()

    def test_channel_socket(self):
        """Protocol 3: one WebSocket carries hv2's rulesets down and its acks and uploads up."""
        e2 = self.enforcer_tokens["hv2"]
        path = "/api/v1/enforcers/hv2/channel"
        s = ChannelSocket(self.c.port, path)
        check("channel socket: no credential -> 401, no upgrade", s.status == 401, (s.status, s.body[:200]))
        s = ChannelSocket(self.c.port, path, self.enforcer_tokens["hv1"])
        check("channel socket: another enforcer's credential -> 403, no upgrade", s.status == 403, (s.status, s.body[:200]))
        s = ChannelSocket(self.c.port, path, e2, query={"generation": -1})
        check("channel socket: bad generation -> 400 before the upgrade", s.status == 400
              and json.loads(s.body or b"{}").get("error", {}).get("parameter") == "generation", (s.status, s.body[:200]))
        ws = ChannelSocket(self.c.port, path, e2, query={"generation": 0, "hash": "", "hash_format": 2})
        try:
            check("channel socket: 101 with the right Sec-WebSocket-Accept", ws.status == 101 and ws.accept_ok, (ws.status, ws.headers))
            hello = ws.next_message(5)
            check("channel socket: hello first", hello is not None and hello.get("type") == "hello", hello)
            full = ws.next_message(5)
            check("channel socket: then the full ruleset for hv2", full is not None and full.get("type") == "ruleset"
                  and full.get("ruleset", {}).get("enforcer") == "hv2", str(full)[:300])
            metrics = self.c.get("/api/v1/metrics", TOKENS["soc"]).raw.decode(errors="replace")
            check("channel socket: counted in bulkhead_controller_channel_sockets_open",
                  re.search(r'^bulkhead_controller_channel_sockets_open\{listener="plain"\} 1(\.0)?$', metrics, re.M) is not None,
                  [line for line in metrics.splitlines() if "sockets_open" in line])
            now_ms = int(time.time() * 1000)
            r = ws.request("status", 1, {"generation": full["generation"], "hash": full["hash"], "state": "applied",
                                         "enforcer_time_ms": now_ms, "hash_format": 2, "version": "socket-test"})
            check("channel socket: a status up the socket is answered 200 with controller_time_ms",
                  r is not None and r.get("status") == 200 and isinstance(r.get("body", {}).get("controller_time_ms"), int), r)
            st = self.c.get("/api/v1/enforcers/hv2", TOKENS["soc"]).json
            check("channel socket: hv2 connected, in sync, version from the socket's status",
                  st.get("connected") is True and st.get("in_sync") is True and st.get("version") == "socket-test", st)
            r = ws.request("status", 2, {"generation": "seven"})
            check("channel socket: a status with a wrong type -> reply 400 with pointer /generation",
                  r is not None and r.get("status") == 400 and r["body"]["error"].get("pointer") == "/generation", r)
            r = ws.request("status", 3, b'{"generation": 1,')
            check("channel socket: invalid JSON -> reply 400 invalid-json", r is not None and r.get("status") == 400
                  and r["body"]["error"].get("code") == "invalid-json" and "pointer" in r["body"]["error"], r)
            r = ws.request("reboot", 4, {})
            check("channel socket: an unknown request -> reply 400 unknown-request, the socket stays",
                  r is not None and r.get("status") == 400 and r["body"]["error"].get("code") == "unknown-request"
                  and not ws.closed.is_set(), r)
            self.seq["hv2"] += 1
            seq = self.seq["hv2"]
            r = ws.request("events", 5, {"events": [{"seq": seq, "event": self.drop("admin-01", "10.9.8.7", 4444)}]})
            check("channel socket: an upload up the socket -> reply 200, 1 accepted through its seq",
                  r is not None and r.get("status") == 200 and r["body"].get("accepted") == 1 and r["body"].get("through_seq") == seq, r)
            r = ws.request("events", 6, {"events": [{"seq": seq, "event": self.drop("admin-01", "10.9.8.7", 4444)}]})
            check("channel socket: the same batch again -> a duplicate, not stored twice",
                  r is not None and r.get("status") == 200 and r["body"].get("duplicates") == 1 and r["body"].get("accepted") == 0, r)
            stored = self.c.get("/api/v1/events", TOKENS["soc"], query={"workload": "admin-01", "limit": 100}).json.get("events", [])
            check("channel socket: the uploaded drop is in the drop log", any(ev.get("dst") == "10.9.8.7" and ev.get("dport") == 4444
                                                                               for ev in stored), stored[:3])
            # A quarantine on hv2 reaches it as a diff on the socket; the ack goes up the same
            # socket and the quarantine request waiting on it answers "applied".
            answered = {}

            def ack_next():
                m = ws.next_message(5, want="diff")
                answered["diff"] = m
                if m:
                    answered["reply"] = ws.request("status", 7, {"generation": m["generation"], "hash": m["hash"], "state": "applied",
                                                                  "hash_format": 2})
            th = threading.Thread(target=ack_next)
            th.start()
            r = self.c.post("/api/v1/quarantines", {"workload": "vdi-101", "reason": "socket test"}, TOKENS["automation"],
                            query={"wait_ms": 5000})
            th.join(10)
            check("channel socket: quarantine of vdi-101 applied once the ack came up the socket",
                  r.status == 201 and [x.get("state") for x in r.json.get("enforcers", [])] == ["applied"]
                  and (answered.get("diff") or {}).get("base_hash") == full["hash"]
                  and (answered.get("reply") or {}).get("status") == 200, (r, str(answered)[:300]))
            th = threading.Thread(target=lambda: answered.update(release=ws.next_message(5, want="diff")))
            th.start()
            r = self.c.delete("/api/v1/quarantines/vdi-101", TOKENS["automation"])
            th.join(10)
            check("channel socket: the release comes down as a diff too", r.status == 200 and answered.get("release") is not None, r)
            rel = answered.get("release") or {}
            if rel:
                ws.request("status", 8, {"generation": rel["generation"], "hash": rel["hash"], "state": "applied", "hash_format": 2})
            # A message that is not a request breaks the protocol: the controller closes.
            ws.send_text("not a request")
            check("channel socket: a message without a head line closes the connection", ws.closed.wait(5), "still open")
            check("channel socket: the controller still answers", self.c.get("/api/v1/health").status == 200)
            check("channel socket: closed sockets leave the gauge", poll(lambda: re.search(
                r'^bulkhead_controller_channel_sockets_open\{listener="plain"\} 0(\.0)?$',
                self.c.get("/api/v1/metrics", TOKENS["soc"]).raw.decode(errors="replace"), re.M) is not None, 5), "gauge not back to 0")
        finally:
            ws.close()

    def test_quarantine(self):
        a = TOKENS["automation"]
        t = self.admin()
        before = self.snapshot()
        for name, body, status, code, pointer in [
            ("both workload and address", {"workload": "vdi-001", "address": "10.1.0.1"}, 400, "invalid-value", ""),
            ("neither workload nor address", {"reason": "x"}, 400, "invalid-value", ""),
            ("unknown member", {"workload": "vdi-001", "why": "x"}, 400, "unknown-field", "/why"),
            ("workload wrong type", {"workload": 5}, 400, "wrong-type", "/workload"),
            ("reason wrong type", {"workload": "vdi-001", "reason": ["x"]}, 400, "wrong-type", "/reason"),
            ("incident wrong type", {"workload": "vdi-001", "incident": "one"}, 400, "wrong-type", "/incident"),
            ("not an IP address", {"address": "10.1.0.300"}, 400, "invalid-address", "/address"),
            ("not an object", ["vdi-001"], 400, "wrong-type", ""),
            ("unknown workload", {"workload": "vdi-999"}, 404, "not-found", None),
            ("address nobody holds", {"address": "10.99.0.1"}, 404, "not-found", "/address"),
            ("unknown incident", {"workload": "vdi-001", "incident": 99999}, 404, "not-found", "/incident"),
        ]:
            r = self.c.post("/api/v1/quarantines", body, a)
            self.expect_error(f"quarantine POST: {name} -> {status} {code}", r, status, code, pointer=pointer)
        r = self.c.post("/api/v1/quarantines", raw=b'{"workload": "vdi-001"', token=a)
        self.expect_error("quarantine POST: invalid JSON -> 400 with pointer", r, 400, "invalid-json")
        check("quarantine POST: invalid JSON has a pointer", "pointer" in r.error, r)
        for q in ({"wait_ms": "soon"}, {"wait_ms": -1}, {"wait_ms": 10001}):
            r = self.c.post("/api/v1/quarantines", {"workload": "vdi-001"}, a, query=q)
            self.expect_error(f"quarantine POST: bad {q} -> 400", r, 400, "invalid-parameter", parameter="wait_ms")
        if getattr(self, "dup_ok", False):
            r = self.c.post("/api/v1/quarantines", {"address": "10.1.0.2"}, a)
            self.expect_error("quarantine POST: ambiguous address -> 409 ambiguous", r, 409, "ambiguous", pointer="/address")
            cands = sorted((c.get("workload"), c.get("enforcer")) for c in r.error.get("candidates", []))
            check("quarantine POST: 409 lists the candidates", cands == [("vdi-002", "hv1"), ("vdi-199", "hv2")], r)
        r = self.c.post("/api/v1/quarantines", {"workload": "vdi-001"}, a, query={"wait_ms": 10001})
        self.unchanged("quarantine POST: refused requests change nothing", before)
        if getattr(self, "dup_ok", False):
            r = self.c.post("/api/v1/quarantines", {"address": "10.1.0.2", "enforcer": "hv2", "reason": "narrowed"}, a)
            check("quarantine POST: address narrowed by enforcer -> 201 vdi-199", r.status == 201 and r.json.get("workload") == "vdi-199", r)
            self.c.delete("/api/v1/quarantines/vdi-199", a)

        # A workload without an enforcer (fs-01, an unmanaged peer marked critical): a human
        # may still quarantine it; the answer must be 2xx, or a 4xx that stored nothing.
        snap = self.snapshot()
        r = self.c.post("/api/v1/quarantines", {"workload": "fs-01", "reason": "manual"}, a)
        check("quarantine POST: unmanaged critical workload fs-01 by a human -> 201 (never 5xx)", r.status == 201, r)
        if r.status >= 500 or 400 <= r.status < 500:
            after = self.snapshot()
            check("quarantine POST: a refused/failed quarantine of fs-01 stored nothing (no quarantine, no audit entry)",
                  after["quarantines"] == snap["quarantines"] and after["audit"] == snap["audit"],
                  {"quarantines": after["quarantines"][1]})
        r = self.c.delete("/api/v1/quarantines/fs-01", a)
        check("quarantine DELETE: fs-01 -> 200 (never 5xx)", r.status == 200, r)
        check("quarantine: fs-01 not left quarantined", self.c.get("/api/v1/quarantines/fs-01", t).status == 404)
        # The same IPv6 address written differently (upper case, leading zeros) names the same workload.
        for text in ("FD00:0:0:10::3", "fd00:0000:0:10:0::3"):
            r = self.c.post("/api/v1/quarantines", {"address": text, "reason": "case"}, a)
            check(f"quarantine POST: address {text} resolves to vdi-003 (fd00:0:0:10::3)", r.status in (200, 201) and r.json.get("workload") == "vdi-003", r)
        self.c.delete("/api/v1/quarantines/vdi-003", a)

        audit_before = len(self.c.get("/api/v1/audit", t, query={"limit": 1000}).json["entries"])
        r1 = self.c.post("/api/v1/quarantines", {"address": "10.1.1.2", "reason": "suspicious"}, a)
        check("quarantine POST: by unambiguous address -> 201 vdi-102 created", r1.status == 201 and r1.json.get("workload") == "vdi-102"
              and r1.json.get("created") is True and r1.json.get("actor") == "automation-user" and r1.json.get("reason") == "suspicious", r1)
        snap = self.snapshot()
        r2 = self.c.post("/api/v1/quarantines", {"workload": "vdi-102", "reason": "again"}, a)
        check("quarantine POST: twice -> 200 created false", r2.status == 200 and r2.json.get("created") is False
              and r2.json.get("reason") == "suspicious", r2)
        self.unchanged("quarantine POST: the second POST changes nothing (no audit entry)", snap)
        audit_after = self.c.get("/api/v1/audit", t, query={"limit": 1000}).json["entries"]
        check("quarantine POST: exactly one quarantine.create audited", len(audit_after) == audit_before + 1
              and audit_after[0]["action"] == "quarantine.create" and audit_after[0]["target"] == "workload/vdi-102", audit_after[:2])
        r = self.c.get("/api/v1/quarantines", TOKENS["soc"])
        check("quarantines GET: lists vdi-102", r.status == 200 and [q["workload"] for q in r.json["quarantines"]] == ["vdi-102"], r)
        r = self.c.get("/api/v1/quarantines/vdi-102", TOKENS["automation"])
        check("quarantine GET: vdi-102 with hv2 state and history", r.status == 200 and r.json["enforcers"][0]["enforcer"] == "hv2"
              and isinstance(r.json.get("history"), list), r)
        r = self.c.get("/api/v1/workloads/vdi-102", TOKENS["soc"])
        check("workload GET: shows its quarantine", r.status == 200 and r.json.get("quarantine", {}).get("workload") == "vdi-102", r)
        self.expect_error("quarantine GET: not quarantined -> 404", self.c.get("/api/v1/quarantines/vdi-101", t), 404, "not-found")
        for q in ({"wait_ms": "x"}, {"wait_ms": 20000}):
            r = self.c.delete("/api/v1/quarantines/vdi-102", a, query=q)
            self.expect_error(f"quarantine DELETE: bad {q} -> 400", r, 400, "invalid-parameter", parameter="wait_ms")
        check("quarantine DELETE: bad wait_ms released nothing", self.c.get("/api/v1/quarantines/vdi-102", t).status == 200)
        r = self.c.delete("/api/v1/quarantines/vdi-102", TOKENS["soc"])
        check("quarantine DELETE: 200 released", r.status == 200 and r.json.get("released") is True, r)
        snap = self.snapshot()
        r = self.c.delete("/api/v1/quarantines/vdi-102", TOKENS["soc"])
        check("quarantine DELETE: twice -> 200 released false", r.status == 200 and r.json.get("released") is False, r)
        self.unchanged("quarantine DELETE: the second DELETE changes nothing", snap)
        r = self.c.get("/api/v1/quarantines/vdi-102", t)
        self.expect_error("quarantine GET: after release -> 404", r, 404, "not-found")
        r = self.c.delete("/api/v1/quarantines/no-such-workload", a)
        check("quarantine DELETE: unknown workload -> 200 released false or 404", r.status in (200, 404), r)
        audit = self.c.get("/api/v1/audit", t, query={"action": "quarantine.release", "actor": "soc-user"}).json["entries"]
        check("quarantine DELETE: one release audited for soc-user", len(audit) == 1 and audit[0]["target"] == "workload/vdi-102", audit)

    def test_events(self):
        e1 = self.enforcer_tokens["hv1"]
        # Make sure the active policy does not quarantine automatically here.
        before = self.snapshot()
        for name, body, status, code, pointer in [
            ("events not an array", {"events": {}}, 400, "wrong-type", "/events"),
            ("missing events", {}, 400, "wrong-type", "/events"),
            ("unknown member", {"events": [], "extra": 1}, 400, "unknown-field", "/extra"),
            ("seq 0", {"events": [{"seq": 0, "event": {"type": "drop"}}]}, 400, "invalid-value", "/events/0/seq"),
            ("seq wrong type", {"events": [{"seq": "1", "event": {"type": "drop"}}]}, 400, "invalid-value", "/events/0/seq"),
            ("event without type", {"events": [{"seq": 1, "event": {"dst": "10.1.0.2"}}]}, 400, "invalid-value", "/events/0/event"),
            ("second item bad (nothing half-stored)", {"events": [{"seq": 900001, "event": self.drop("vdi-001", "10.0.0.30", 22)},
                                                                   {"seq": 900002}]}, 400, "invalid-value", "/events/1/event"),
        ]:
            r = self.c.post("/api/v1/enforcers/hv1/events", body, e1)
            self.expect_error(f"events POST: {name} -> {status}", r, status, code, pointer=pointer)
        r = self.c.post("/api/v1/enforcers/hv1/events", raw=b'{"events": [{"seq": 1,}]}', token=e1)
        self.expect_error("events POST: invalid JSON -> 400", r, 400, "invalid-json")
        big = {"events": [{"seq": 800000 + i, "event": {"type": "heartbeat"}} for i in range(5001)]}
        r = self.c.post("/api/v1/enforcers/hv1/events", big, e1)
        self.expect_error("events POST: 5,001 events -> 413 too-large", r, 413, "too-large")
        self.unchanged("events POST: refused batches store nothing", before)

        base = time.time_ns()
        events = [self.drop("vdi-001", "10.0.0.30", 22, reason="default", time_ns=base + i * 1000) for i in range(3)] + \
                 [self.drop("vdi-001", "10.0.0.31", 3389, reason="default", time_ns=base + 5000),
                  {"type": "allowed_flow", "count": 4, "time_ns": base + 6000, "direction": "out", "reason": "allow",
                   "workload": "vdi-001", "src": "10.1.0.1", "dst": "10.0.0.30", "proto_name": "tcp", "dport": 445}]
        r, batch = self.upload("hv1", events)
        check("events POST: 5 new -> accepted 5, duplicates 0", r.status == 200 and r.json == {"accepted": 5, "duplicates": 0,
              "through_seq": batch[-1]["seq"]}, r)
        r = self.c.post("/api/v1/enforcers/hv1/events", {"events": batch}, e1)
        check("events POST: the same batch again -> accepted 0, duplicates 5", r.status == 200 and r.json.get("accepted") == 0
              and r.json.get("duplicates") == 5, r)
        self.seq["hv1"] += 1
        extra = {"seq": self.seq["hv1"], "event": self.drop("vdi-001", "10.0.0.30", 22, reason="default", time_ns=base + 7000)}
        r = self.c.post("/api/v1/enforcers/hv1/events", {"events": batch[-2:] + [extra]}, e1)
        check("events POST: overlapping batch -> accepted 1, duplicates 2", r.status == 200 and r.json.get("accepted") == 1
              and r.json.get("duplicates") == 2 and r.json.get("through_seq") == extra["seq"], r)
        r = self.c.post("/api/v1/enforcers/hv1/events", {"events": []}, e1)
        check("events POST: empty batch -> 200 accepted 0", r.status == 200 and r.json.get("accepted") == 0, r)

        s = TOKENS["soc"]
        q = {"enforcer": "hv1", "from": base // 1_000_000, "to": base // 1_000_000 + 1000}
        r = self.c.get("/api/v1/events", s, query=q)
        check("events GET: 6 stored once each", r.status == 200 and len(r.json["events"]) == 6, r)
        check("events GET: newest first by default", r.status == 200 and [e["id"] for e in r.json["events"]] == sorted((e["id"] for e in r.json["events"]), reverse=True), r)
        check("events GET: event keeps its fields plus enforcer/seq/received_at", r.status == 200 and all(
            e.get("enforcer") == "hv1" and e.get("enforcer_seq") and e.get("received_at") and e.get("workload") == "vdi-001" for e in r.json["events"]), r)
        for filt, n in [({"port": 22}, 4), ({"port": 3389}, 1), ({"reason": "allow"}, 1), ({"reason": "default"}, 5),
                        ({"type": "allowed_flow"}, 1), ({"address": "10.0.0.31"}, 1), ({"workload": "vdi-001"}, 6),
                        ({"workload": "vdi-002"}, 0), ({"enforcer": "hv2"}, 0), ({"address": "10.1.0.1"}, 6)]:
            r = self.c.get("/api/v1/events", s, query=dict(q, **filt))
            check(f"events GET: filter {filt} -> {n}", r.status == 200 and len(r.json["events"]) == n, r)
        r = self.c.get("/api/v1/events", s, query=dict(q, limit=4, order="asc"))
        check("events GET: limit 4 asc gives next_after_id", r.status == 200 and len(r.json["events"]) == 4 and "next_after_id" in r.json, r)
        if r.status == 200 and "next_after_id" in r.json:
            r2 = self.c.get("/api/v1/events", s, query=dict(q, limit=4, after_id=r.json["next_after_id"]))
            ids = [e["id"] for e in r.json["events"] + r2.json["events"]]
            check("events GET: paging with after_id reads the rest, oldest first", len(r2.json["events"]) == 2 and ids == sorted(set(ids)), r2)
        r = self.c.get("/api/v1/events", s, query=dict(q, **{"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00.5Z"}))
        check("events GET: RFC 3339 range with no events -> []", r.status == 200 and r.json["events"] == [], r)
        for bad, p in [({"port": 70000}, "port"), ({"port": "ssh"}, "port"), ({"reason": "bogus"}, "reason"), ({"order": "up"}, "order"),
                       ({"from": "last week"}, "from"), ({"to": "2026-02-30T25:00:00Z"}, "to"), ({"limit": 0}, "limit"),
                       ({"limit": 10001}, "limit"), ({"after_id": -1}, "after_id"), ({"workload": "w" * 257}, "workload")]:
            r = self.c.get("/api/v1/events", s, query=bad)
            self.expect_error(f"events GET: bad {bad if len(str(bad)) < 60 else list(bad)} -> 400", r, 400, "invalid-parameter", parameter=p)

        cq = {"enforcer": "hv1", "from": base // 1_000_000 - 60000, "to": base // 1_000_000 + 60000, "bucket_ms": 60000}
        r = self.c.get("/api/v1/events/counts", s, query=cq)
        total = sum(b["events"] for b in r.json["buckets"]) if r.status == 200 else None
        check("events counts: drops only by default: 5 in the range", r.status == 200 and total == 5 and r.json["bucket_ns"] == 60000 * 1_000_000, r)
        r = self.c.get("/api/v1/events/counts", s, query=dict(cq, type="allowed_flow"))
        check("events counts: type allowed_flow sums its count (4)", r.status == 200 and sum(b["events"] for b in r.json["buckets"]) == 4, r)
        r = self.c.get("/api/v1/events/counts", s, query=dict(cq, port=22))
        check("events counts: port 22 -> 4", r.status == 200 and sum(b["events"] for b in r.json["buckets"]) == 4, r)
        r = self.c.get("/api/v1/incidents", s, query={"workload": "vdi-001"})
        check("events: two distinct targets stay below the policy's threshold of 3 (no incident)", r.status == 200 and r.json["incidents"] == [], r)
        for bad, p in [({"bucket_ms": 0}, "bucket_ms"), ({"bucket_ms": "1m"}, "bucket_ms"), ({"from": 2000, "to": 1000}, "from"),
                       ({"from": 0, "to": 86_400_000 * 365, "bucket_ms": 1000}, "bucket_ms"), ({"reason": "nope"}, "reason")]:
            r = self.c.get("/api/v1/events/counts", s, query=bad)
            self.expect_error(f"events counts: bad {bad} -> 400", r, 400, "invalid-parameter", parameter=p)
        self.events_base = base

        # What-if over these stored events: a draft that also allows VDIs to reach the file
        # servers on ssh newly allows the four tcp/22 drops, by its new rule, and leaves the
        # rest as it was.
        draft = copy.deepcopy(self.policy)
        draft["services"].append({"name": "ssh", "entries": [{"protocol": "tcp", "ports": [22]}]})
        draft["rules"].append({"name": "vdi-ssh-to-file-servers", "action": "allow", "from": ["vdi"],
                               "to": ["file-servers"], "services": ["ssh"]})
        r = self.c.post("/api/v1/policies", draft, self.admin())
        check("what-if: draft uploaded", r.status == 201, r)
        if r.status == 201:
            w = self.c.post(f"/api/v1/policies/{r.json['id']}/what-if", None, s,
                            query={"from": base // 1_000_000, "to": base // 1_000_000 + 1000})
            j = w.json if w.status == 200 else {}
            groups = j.get("groups", [])
            check("what-if: 6 events evaluated, the 4 ssh drops newly allowed, nothing newly blocked",
                  w.status == 200 and j["events"] == 6 and j["newly_allowed"] == 4 and j["newly_blocked"] == 0
                  and j["unchanged"] == 2, w)
            check("what-if: one group, newly-allowed by rule vdi-ssh-to-file-servers, samples name the events",
                  len(groups) == 1 and groups[0]["change"] == "newly-allowed" and groups[0]["events"] == 4
                  and "vdi-ssh-to-file-servers" in groups[0]["rules"]
                  and all(x["dst"] == "10.0.0.30" and x["port"] == 22 for x in groups[0]["sample"]), w)

    def test_incidents_and_stream(self):
        t = self.admin()
        sse_none = SseReader(self.c.port, "/api/v1/stream")
        check("stream: no token -> 401", sse_none.status == 401, sse_none.status)
        sse_none.close()
        sse_bad = SseReader(self.c.port, "/api/v1/stream", query={"access_token": "nope-nope-nope-nope"})
        check("stream: bad access_token -> 401", sse_bad.status == 401, sse_bad.status)
        sse_bad.close()
        sse = SseReader(self.c.port, "/api/v1/stream", query={"access_token": TOKENS["soc"]})
        try:
            check("stream: access_token query parameter -> 200 text/event-stream", sse.status == 200 and sse.content_type.startswith("text/event-stream"),
                  (sse.status, sse.content_type))
            hello = sse.wait_for(lambda e: e.get("event") == "hello", 5)
            check("stream: hello first", hello is not None and sse.events and sse.events[0].get("event") == "hello", sse.events[:2])

            # The active policy (rev1): incident at 3 distinct targets in 60 s, high,
            # automatic quarantine on from high. Two targets: no incident yet.
            base = time.time_ns()
            # Ports and hosts no other detector weighs (VDI -> VDI file sharing, a user toward an
            # admin terminal, lateral-movement services: those fire on their own, see below).
            r, _ = self.upload("hv2", [self.drop("vdi-101", "10.1.9.2", 8080, time_ns=base), self.drop("vdi-101", "10.1.9.2", 8080, time_ns=base + 1),
                                       self.drop("vdi-101", "10.1.9.3", 8443, time_ns=base + 2)])
            check("incidents: 3 drops to 2 distinct targets ingested", r.status == 200 and r.json.get("accepted") == 3, r)
            r = self.c.get("/api/v1/incidents", TOKENS["soc"], query={"workload": "vdi-101"})
            check("incidents: below the threshold -> none", r.status == 200 and r.json["incidents"] == [], r)
            drops = sse.wait_for(lambda e: e.get("event") == "drops" and "vdi-101" in e.get("data", ""), 5)
            check("stream: drops event with the ingested drops", drops is not None and len(json.loads(drops["data"])) == 3, drops)
            completing = self.drop("vdi-101", "10.1.9.2", 9000, time_ns=base + 3)
            completing["received_ns"] = base + 4  # as an enforcer stamps the NFLOG delivery
            before_upload = time.time_ns()
            r, _ = self.upload("hv2", [completing], sent_ns=base + 5)
            check("incidents: third distinct target ingested", r.status == 200, r)
            r = self.c.get("/api/v1/incidents", TOKENS["soc"], query={"workload": "vdi-101"})
            inc = r.json["incidents"][0] if r.status == 200 and r.json["incidents"] else None
            check("incidents: threshold crossed -> one open high incident for vdi-101 (user tanaka)", inc is not None and inc["state"] == "open"
                  and inc["severity"] == "high" and inc.get("user") == "tanaka" and len(r.json["incidents"]) == 1, r)
            q = self.c.get("/api/v1/quarantines/vdi-101", TOKENS["soc"])
            check("incidents: auto-quarantine on -> vdi-101 quarantined automatically, linked to the incident",
                  q.status == 200 and q.json.get("automatic") is True and q.json.get("actor") == "analyzer"
                  and inc is not None and q.json.get("incident") == inc["id"], q)
            ev = sse.wait_for(lambda e: e.get("event") == "incident" and "vdi-101" in e.get("data", ""), 5)
            check("stream: incident event (opened)", ev is not None and json.loads(ev["data"]).get("action") == "opened", ev)
            ev = sse.wait_for(lambda e: e.get("event") == "quarantine" and "vdi-101" in e.get("data", ""), 5)
            check("stream: quarantine event (created)", ev is not None and json.loads(ev["data"]).get("action") == "created", ev)
            check("stream: events carry ids", all("id" in e for e in sse.events if e.get("event") != "hello"), sse.events[-3:])
            audit = self.c.get("/api/v1/audit", t, query={"action": "quarantine.create", "actor": "analyzer"}).json["entries"]
            check("incidents: automatic quarantine audited as analyzer", len(audit) == 1 and audit[0]["target"] == "workload/vdi-101", audit)
            if inc:
                # Where time to contain went: the stages of this containment, in order.
                tl = self.c.get("/api/v1/analyzer/containments", TOKENS["soc"], query={"incident": inc["id"]})
                lst = tl.json.get("containments", []) if tl.status == 200 else []
                st = lst[0]["stages_ns"] if lst else {}
                order = ["controller_received", "stored", "detected", "recorded", "quarantined"]
                check("containments: one timeline for the incident, the completing drop's kernel, delivery and send stamps",
                      len(lst) == 1 and lst[0]["workload"] == "vdi-101" and lst[0]["enforcer"] == "hv2"
                      and st.get("kernel") == base + 3 and st.get("enforcer_received") == base + 4
                      and st.get("enforcer_sent") == base + 5 and lst[0]["generation"] >= 1, tl)
                check("containments: the controller's stages are stamped in order after the upload",
                      all(isinstance(st.get(k), int) for k in order) and st["controller_received"] >= before_upload
                      and all(st[a] <= st[b] for a, b in zip(order, order[1:])), st)
                check("containments: hv2 has no channel open here, so nothing was pushed", st.get("pushed") is None, st)
                other = self.c.get("/api/v1/analyzer/containments", TOKENS["soc"], query={"incident": inc["id"] + 100000})
                check("containments: another incident's -> empty list", other.status == 200 and other.json["containments"] == [], other)
                bad = self.c.get("/api/v1/analyzer/containments", TOKENS["soc"], query={"limit": "0"})
                self.expect_error("containments: limit 0 -> 400 naming the parameter", bad, 400, parameter="limit")
            r, _ = self.upload("hv2", [self.drop("vdi-101", "10.1.9.2", 9001)], sent_ns=-1)
            self.expect_error("events: a negative sent_ns -> 400 at /sent_ns", r, 400, code="invalid-value", pointer="/sent_ns")
            if inc:
                d = self.c.get(f"/api/v1/incidents/{inc['id']}", TOKENS["automation"])
                check("incident GET: timeline of its events, source workload, targets", d.status == 200 and len(d.json.get("timeline", [])) >= 3
                      and d.json.get("source", {}).get("id") == "vdi-101" and len(d.json.get("targets", {})) >= 3
                      and d.json.get("quarantine", {}).get("workload") == "vdi-101", d)
                check("incident GET: event_count equals the events in its timeline", d.status == 200 and d.json.get("event_count") == len(d.json.get("timeline", [])),
                      {"event_count": d.json.get("event_count"), "timeline": len(d.json.get("timeline", []))})
                # Drops after the incident (source quarantined, reason quarantine) fold into it.
                r, _ = self.upload("hv2", [self.drop("vdi-101", "10.1.1.2", 139, reason="quarantine", time_ns=base + 10)])
                d2 = self.c.get(f"/api/v1/incidents/{inc['id']}", TOKENS["soc"])
                check("incident: later drops of the source join its open incident", d2.status == 200 and
                      len(d2.json.get("timeline", [])) == len(d.json.get("timeline", [])) + 1, (len(d2.json.get("timeline", [])), len(d.json.get("timeline", []))))
                self.incident = inc["id"]

            # Dry-run: activate the dry-run revision, scan from vdi-102 on hv2.
            a = self.c.post(f"/api/v1/policies/{self.rev_dry}/activate", None, t)
            check("incidents: dry-run revision activated", a.status == 200, a)
            base = time.time_ns()
            r, _ = self.upload("hv2", [self.drop("vdi-102", "10.1.1.1", p, time_ns=base + p) for p in (21, 22, 23, 25)])
            r = self.c.get("/api/v1/incidents", TOKENS["soc"], query={"workload": "vdi-102"})
            inc2 = r.json["incidents"][0] if r.status == 200 and r.json["incidents"] else None
            check("incidents dry-run: incident raised for vdi-102", inc2 is not None, r)
            check("incidents dry-run: vdi-102 NOT quarantined", self.c.get("/api/v1/quarantines/vdi-102", t).status == 404)
            check("incidents dry-run: the incident records the quarantine it would have made",
                  inc2 is not None and "dry_run_quarantine" in inc2.get("details", {}), inc2)
            audit = self.c.get("/api/v1/audit", t, query={"action": "quarantine.dry-run"}).json["entries"]
            check("incidents dry-run: audited as quarantine.dry-run", len(audit) == 1 and audit[0]["target"] == "workload/vdi-102", audit)
            # Inbound drops attributed by source address (direction in, the destination's enforcer).
            r = self.c.post(f"/api/v1/policies/{self.rev1}/activate", None, t)
            base = time.time_ns()
            r, _ = self.upload("hv1", [self.drop("vdi-003", "10.1.0.3", p, direction="in", src="10.1.0.1", time_ns=base + p) for p in (80, 81, 82)])
            r = self.c.get("/api/v1/incidents", TOKENS["soc"], query={"workload": "vdi-001"})
            check("incidents: inbound drops attributed to the source by address (vdi-001)", r.status == 200 and len(r.json["incidents"]) == 1, r)
            q = self.c.get("/api/v1/quarantines/vdi-001", TOKENS["soc"])
            check("incidents: ...and vdi-001 quarantined (auto on again after re-activation)", q.status == 200 and q.json.get("automatic") is True, q)
        finally:
            sse.close()

        # Incident API.
        r = self.c.get("/api/v1/incidents", TOKENS["soc"])
        check("incidents GET: three incidents, newest first", r.status == 200 and len(r.json["incidents"]) == 3
              and [i["id"] for i in r.json["incidents"]] == sorted((i["id"] for i in r.json["incidents"]), reverse=True), r)
        r = self.c.get("/api/v1/incidents", TOKENS["soc"], query={"limit": 1})
        check("incidents GET: limit 1", r.status == 200 and len(r.json["incidents"]) == 1, r)
        if r.status == 200 and r.json["incidents"]:
            r2 = self.c.get("/api/v1/incidents", TOKENS["soc"], query={"before_id": r.json["incidents"][0]["id"]})
            check("incidents GET: before_id pages to the two older", r2.status == 200 and len(r2.json["incidents"]) == 2, r2)
        for bad, p in [({"state": "closed"}, "state"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"before_id": 0}, "before_id"),
                       ({"before_id": "x"}, "before_id")]:
            self.expect_error(f"incidents GET: bad {bad} -> 400", self.c.get("/api/v1/incidents", TOKENS["soc"], query=bad), 400, "invalid-parameter", parameter=p)
        iid = getattr(self, "incident", None)
        if iid is None:
            check("incidents: an incident exists for the remaining checks", False)
            return
        for path in (f"/api/v1/incidents/abc", "/api/v1/incidents/0"):
            self.expect_error(f"incident GET: {path} -> 400", self.c.get(path, t), 400, "invalid-parameter")
        self.expect_error("incident GET: unknown -> 404", self.c.get("/api/v1/incidents/99999", t), 404, "not-found")
        before = self.snapshot()
        for name, path, body, status, code in [
            ("acknowledge unknown", "/api/v1/incidents/99999/acknowledge", None, 404, "not-found"),
            ("acknowledge bad id", "/api/v1/incidents/x/acknowledge", None, 400, "invalid-parameter"),
            ("resolve unknown", "/api/v1/incidents/99999/resolve", None, 404, "not-found"),
            ("resolve bad id", "/api/v1/incidents/-1/resolve", None, 400, "invalid-parameter"),
            ("note unknown incident", "/api/v1/incidents/99999/notes", {"text": "x"}, 404, "not-found"),
            ("note bad id", "/api/v1/incidents/x/notes", {"text": "x"}, 400, "invalid-parameter"),
            ("note missing text", f"/api/v1/incidents/{iid}/notes", {}, 400, "missing-field"),
            ("note text wrong type", f"/api/v1/incidents/{iid}/notes", {"text": 5}, 400, "wrong-type"),
            ("note empty text", f"/api/v1/incidents/{iid}/notes", {"text": ""}, 400, "wrong-type"),
            ("note unknown member", f"/api/v1/incidents/{iid}/notes", {"text": "x", "by": "me"}, 400, "unknown-field"),
            ("note too long", f"/api/v1/incidents/{iid}/notes", {"text": "x" * 16385}, 400, "invalid-value"),
        ]:
            self.expect_error(f"incident {name} -> {status}", self.c.post(path, body, TOKENS["soc"]), status, code)
        r = self.c.post(f"/api/v1/incidents/{iid}/notes", raw=b'{"text": "x"', token=TOKENS["soc"])
        self.expect_error("incident note: invalid JSON -> 400", r, 400, "invalid-json")
        self.unchanged("incident: refused changes change nothing", before)
        r = self.c.post(f"/api/v1/incidents/{iid}/acknowledge", None, TOKENS["soc"])
        check("incident acknowledge: 200 acknowledged", r.status == 200 and r.json.get("state") == "acknowledged", r)
        r = self.c.post(f"/api/v1/incidents/{iid}/notes", {"text": "looked at it"}, TOKENS["soc"])
        check("incident note: 201 with author", r.status == 201 and r.json.get("author") == "soc-user" and r.json.get("text") == "looked at it", r)
        r = self.c.get("/api/v1/incidents", TOKENS["soc"], query={"state": "acknowledged"})
        check("incidents GET: state filter", r.status == 200 and [i["id"] for i in r.json["incidents"]] == [iid], r)
        r = self.c.post(f"/api/v1/incidents/{iid}/resolve", None, t)
        check("incident resolve: 200 resolved", r.status == 200 and r.json.get("state") == "resolved", r)
        before = self.snapshot()
        r = self.c.post(f"/api/v1/incidents/{iid}/acknowledge", None, TOKENS["soc"])
        self.expect_error("incident acknowledge: resolved -> 409", r, 409, "conflict")
        self.unchanged("incident acknowledge: refused 409 changes nothing", before)
        d = self.c.get(f"/api/v1/incidents/{iid}", TOKENS["soc"])
        check("incident GET: note listed, state resolved", d.status == 200 and d.json.get("state") == "resolved"
              and [n["text"] for n in d.json.get("notes", [])] == ["looked at it"], d)
        audit = self.c.get("/api/v1/audit", t, query={"limit": 10}).json["entries"]
        check("incident: acknowledge, note, resolve audited", {"incident.acknowledge", "incident.note", "incident.resolve"} <=
              {e["action"] for e in audit}, [e["action"] for e in audit])

        # A tripwire: hv2's kernel quarantined vdi-102 on the packet itself (policy rev1, auto
        # quarantine on). The enforcer reports the drop (reason tripwire) and kernel_contained;
        # the controller records the quarantine as contained by the kernel, with its incident.
        base = time.time_ns()
        contained = {"type": "kernel_contained", "time_unix_ms": base // 1_000_000, "workload": "vdi-102",
                     "interface": "vdi102", "set": "quarantined_ports", "seen_by": "nflog", "generation": 1}
        r, _ = self.upload("hv2", [self.drop("vdi-102", "10.1.1.1", 445, reason="tripwire", time_ns=base), contained])
        check("tripwire: the drop and kernel_contained ingested", r.status == 200 and r.json.get("accepted") == 2, r)
        q = self.c.get("/api/v1/quarantines/vdi-102", TOKENS["soc"])
        check("tripwire: vdi-102 quarantined, contained_by kernel (actor kernel, automatic), linked to an incident",
              q.status == 200 and q.json.get("contained_by") == "kernel" and q.json.get("actor") == "kernel"
              and q.json.get("automatic") is True and isinstance(q.json.get("incident"), int), q)
        if q.status == 200 and isinstance(q.json.get("incident"), int):
            d = self.c.get(f"/api/v1/incidents/{q.json['incident']}", TOKENS["soc"])
            check("tripwire: its incident is vdi-102's and shows the quarantine",
                  d.status == 200 and d.json.get("source", {}).get("id") == "vdi-102"
                  and d.json.get("quarantine", {}).get("contained_by") == "kernel", d)
        lst = self.c.get("/api/v1/quarantines", TOKENS["soc"])
        check("tripwire: the quarantine list shows it as contained by the kernel",
              lst.status == 200 and any(x["workload"] == "vdi-102" and x.get("contained_by") == "kernel"
                                        for x in lst.json["quarantines"]), lst)
        r = self.c.delete("/api/v1/quarantines/vdi-102", TOKENS["soc"])
        check("tripwire: a release lifts it like any other -> 200 released", r.status == 200 and r.json.get("released") is True, r)
        check("tripwire: released -> 404", self.c.get("/api/v1/quarantines/vdi-102", TOKENS["soc"]).status == 404)

        # A host-mode tripwire: the enforcer's kernel blocked a sender's address (no port, no
        # workload in the report); the controller quarantines the managed workload holding it.
        # (vdi-102: released just above, so its quarantine here can only be this one.)
        sender = self.address_of("vdi-102")
        blocked = {"type": "kernel_contained", "time_unix_ms": time.time_ns() // 1_000_000, "source": sender,
                   "set": "blocked_sources4", "seen_by": "nflog", "generation": 1}
        r, _ = self.upload("hv1", [blocked])
        check("host-mode tripwire: kernel_contained with a source address ingested",
              r.status == 200 and r.json.get("accepted") == 1, r)
        q = self.c.get("/api/v1/quarantines/vdi-102", TOKENS["soc"])
        check("host-mode tripwire: the sender's workload vdi-102 quarantined, contained_by kernel",
              q.status == 200 and q.json.get("contained_by") == "kernel" and q.json.get("actor") == "kernel", q)
        r = self.c.delete("/api/v1/quarantines/vdi-102", TOKENS["soc"])
        check("host-mode tripwire: released like any other -> 200", r.status == 200 and r.json.get("released") is True, r)
        unknown = dict(blocked, source="203.0.113.9")
        r, _ = self.upload("hv1", [unknown])
        check("host-mode tripwire: an address no workload holds is stored, nothing quarantined",
              r.status == 200 and r.json.get("accepted") == 1 and
              not any(x.get("contained_by") == "kernel" for x in
                      self.c.get("/api/v1/quarantines", TOKENS["soc"]).json["quarantines"]), r)

    def test_exemptions(self):
        # The full behaviour is in tests/controller_analyzer; here: the round trip, for the
        # document's every-operation and response-schema checks.
        r = self.c.post("/api/v1/analyzer/exemptions", {"segment": "vdi", "reason": "schema round trip",
                                                        "expires_ms": int(time.time() * 1000) + 60000}, TOKENS["soc"])
        check("exemptions: POST -> 201", r.status == 201, r)
        if r.status == 201:
            check("exemptions: listed", any(e["id"] == r.json["id"] for e in
                                            self.c.get("/api/v1/analyzer/exemptions", TOKENS["automation"]).json["exemptions"]))
            d = self.c.delete(f"/api/v1/analyzer/exemptions/{r.json['id']}", TOKENS["soc"])
            check("exemptions: DELETE -> 200", d.status == 200, d)

    def test_audit(self):
        t = self.admin()
        r = self.c.get("/api/v1/audit", TOKENS["soc"])
        check("audit GET: soc reads the audit log, newest first", r.status == 200 and r.json["entries"]
              and [e["id"] for e in r.json["entries"]] == sorted((e["id"] for e in r.json["entries"]), reverse=True), r)
        r = self.c.get("/api/v1/audit", t, query={"action": "policy.upload"})
        check("audit GET: action filter", r.status == 200 and r.json["entries"] and all(e["action"] == "policy.upload" for e in r.json["entries"]), r)
        r = self.c.get("/api/v1/audit", t, query={"actor": "nobody"})
        check("audit GET: actor filter with no match -> []", r.status == 200 and r.json["entries"] == [], r)
        r = self.c.get("/api/v1/audit", t, query={"limit": 2})
        check("audit GET: limit 2", r.status == 200 and len(r.json["entries"]) == 2, r)
        if r.status == 200 and r.json["entries"]:
            r2 = self.c.get("/api/v1/audit", t, query={"before_id": r.json["entries"][-1]["id"], "limit": 1})
            check("audit GET: before_id pages", r2.status == 200 and r2.json["entries"][0]["id"] < r.json["entries"][-1]["id"], r2)
        r = self.c.get("/api/v1/audit", t, query={"from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z"})
        check("audit GET: time range with nothing -> []", r.status == 200 and r.json["entries"] == [], r)
        for bad, p in [({"limit": 0}, "limit"), ({"from": "x"}, "from"), ({"before_id": 0}, "before_id"), ({"action": "a" * 129}, "action")]:
            self.expect_error(f"audit GET: bad {bad if len(str(bad)) < 40 else list(bad)} -> 400", self.c.get("/api/v1/audit", t, query=bad), 400, "invalid-parameter", parameter=p)

    def test_oversized(self):
        before = self.snapshot()
        size = 16 * 1024 * 1024 + 1
        for method, path in [("POST", "/api/v1/policies"), ("PUT", "/api/v1/inventory"), ("POST", "/api/v1/quarantines"),
                             ("POST", "/api/v1/workloads/bulk")]:
            r = self.c.oversized(method, path, self.admin(), size)
            self.expect_error(f"oversized: {method} {path} with 16 MiB + 1 -> 413", r, 413, "too-large")
        r = self.c.oversized("POST", "/api/v1/enforcers/hv1/events", self.enforcer_tokens["hv1"], size)
        self.expect_error("oversized: event batch of 16 MiB + 1 -> 413", r, 413, "too-large")
        self.unchanged("oversized: refused bodies change nothing", before)

    def test_response_schemas(self):
        """Every JSON answer the suite received conforms to the schema the document gives
        for its operation and status (or `default`)."""
        try:
            import jsonschema  # noqa: F401
        except ImportError:
            check("response schemas: python3-jsonschema available", False, "install python3-jsonschema")
            return
        groups = {}
        for method, path, status, body, ctype in self.c.log:
            template = match_template(self.openapi, path)
            operation = (self.openapi["paths"].get(template) or {}).get(method.lower()) if template else None
            key = (method, template or path, status)
            g = groups.setdefault(key, {"count": 0, "problems": []})
            g["count"] += 1
            if operation is None:
                if not (status in (404, 405, 400) and isinstance(body, dict) and "error" in body):
                    g["problems"].append(f"undocumented {method} {path} answered {status}")
                continue
            responses = operation["responses"]
            spec = responses.get(str(status)) or responses.get("default")
            if spec is None:
                g["problems"].append(f"status {status} not documented")
                continue
            if "$ref" in spec:
                spec = self.openapi["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
            content = spec.get("content", {})
            if "application/json" not in content:
                continue
            if not ctype.startswith("application/json") or body is None:
                g["problems"].append(f"not a JSON body ({ctype})")
                continue
            validator = schema_validator(self.openapi, content["application/json"]["schema"])
            for e in list(validator.iter_errors(body))[:2]:
                g["problems"].append("/" + "/".join(map(str, e.absolute_path)) + ": " + e.message[:200])
        bad = {f"{m} {t} {st}": g["problems"][:3] for (m, t, st), g in groups.items() if g["problems"]}
        total = sum(g["count"] for g in groups.values())
        check(f"response schemas: all {total} JSON answers ({len(groups)} operation/status pairs) match the OpenAPI document", not bad, bad)
        documented = {(m.upper(), t) for t, item in self.openapi["paths"].items() for m in item}
        seen_ok = {(m, t) for (m, t, st) in groups if 200 <= st < 300}
        streams = {("GET", "/api/v1/stream"), ("GET", "/api/v1/enforcers/{id}/channel")}
        missing = sorted(f"{m} {t}" for m, t in documented - seen_ok - streams)
        check("response schemas: every non-streaming operation was exercised with a 2xx answer", not missing, missing)

    def sample_request(self, method, path):
        """A request that would succeed for an allowed role (so a 403 is about the role)."""
        concrete = path.replace("{workload}", "vdi-002")
        concrete = re.sub(r"/policies/\{id\}", f"/policies/{getattr(self, 'rev1', 1)}", concrete)
        concrete = re.sub(r"/incidents/\{id\}", f"/incidents/{getattr(self, 'incident', 1)}", concrete)
        concrete = re.sub(r"/vpn-sessions/\{id\}", "/vpn-sessions/1", concrete)
        concrete = re.sub(r"/workloads/\{id\}", "/workloads/vdi-003", concrete)
        concrete = re.sub(r"/enforcers/\{id\}", "/enforcers/hv1", concrete)
        bodies = {
            "/api/v1/policies/validate": self.policy, "/api/v1/policies": self.policy, "/api/v1/inventory": self.inventory,
            "/api/v1/workloads/bulk": {"delete": ["vdi-003"]}, "/api/v1/workloads/{id}": {"addresses": ["10.1.0.3"]},
            "/api/v1/vpn-sessions": {"user": "x", "pool_address": "10.8.0.9"}, "/api/v1/incidents/{id}/notes": {"text": "x"},
            "/api/v1/quarantines": {"workload": "vdi-003"}, "/api/v1/enforcers/{id}/status": {"generation": 0, "hash": ""},
            "/api/v1/enforcers/{id}/events": {"events": [{"seq": 990000, "event": self.drop("vdi-001", "10.0.0.30", 1)}]},
        }
        body = bodies.get(path) if method in ("POST", "PUT") else None
        return concrete, body

    def test_roles(self):
        """401 without/with a bad token and 403 for every role the document does not list,
        on every protected operation; nothing changes."""
        tokens = dict(TOKENS, enforcer=self.enforcer_tokens["hv1"])
        before = self.snapshot()
        n401 = n403 = 0
        bad = []
        for path, item in self.openapi["paths"].items():
            for method, op in item.items():
                if op.get("security") == []:
                    continue
                allowed = set(op.get("x-bulkhead-roles", []))
                concrete, body = self.sample_request(method.upper(), path)
                streaming = path in ("/api/v1/stream", "/api/v1/enforcers/{id}/channel")
                for who, token in [("no token", None), ("bad token", "x" * 40)] + [(role, tok) for role, tok in tokens.items() if role not in allowed]:
                    if streaming:
                        s = LineStream(self.c.port, concrete, token)
                        status = s.status
                        code = json.loads(s.body).get("error", {}).get("code") if status != 200 else None
                        s.close()
                    else:
                        r = self.c.request(method.upper(), concrete, body=body, token=token)
                        status, code = r.status, r.error.get("code")
                    want = (401, "unauthenticated") if token in (None, "x" * 40) else (403, "forbidden")
                    if (status, code) != want:
                        bad.append(f"{method.upper()} {path} as {who}: {status} {code}, want {want[0]}")
                    elif want[0] == 401:
                        n401 += 1
                    else:
                        n403 += 1
        check(f"roles: every protected operation refuses no/bad token with 401 ({n401}) and roles lacking permission with 403 ({n403})",
              not bad, bad)
        check("roles: the matrix covered every protected operation", n401 >= 2 * 39 and n403 >= 39, (n401, n403))
        self.unchanged("roles: refused requests change nothing (state and audit log)", before)
        # Allowed roles pass the gate (a 2xx/4xx that is not 401/403) on read routes.
        gate = []
        for path, item in self.openapi["paths"].items():
            op = item.get("get")
            if not op or op.get("security") == [] or path in ("/api/v1/stream", "/api/v1/enforcers/{id}/channel"):
                continue
            concrete, _ = self.sample_request("GET", path)
            for role in op.get("x-bulkhead-roles", []):
                r = self.c.get(concrete, tokens[role])
                if r.status in (401, 403) or r.status >= 500:
                    gate.append(f"GET {path} as {role}: {r.status}")
        check("roles: every role the document lists gets through on GET routes", not gate, gate)


def run_sections(suite, sections, controller):
    """Runs the suite's sections in order; an exception fails its section, a dead controller
    ends the run; then the controller's log must hold no internal error."""
    for section in sections:
        print(f"--- {section}", flush=True)
        try:
            getattr(suite, section)()
        except Exception:
            check(f"{section}: ran to the end without an exception", False, traceback.format_exc())
        if controller.process is None or controller.process.poll() is not None:
            check(f"{section}: controller still running", False, controller.log_file.read_text(errors="replace")[-3000:])
            break
    log = controller.log_file.read_text(errors="replace")
    check("controller log: no internal errors", "internal error" not in log, log[-2000:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--controller", required=True, help="path of bulkhead-controller")
    parser.add_argument("--source-dir", default=str(HERE.parent.parent))
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bulkhead-api-")
    controller = Controller(args.controller, workdir)
    try:
        client = controller.start()
        suite = Suite(client, args.source_dir, controller)
        run_sections(suite, ["test_openapi", "test_health_whoami", "test_inventory", "test_vpn", "test_policies",
                             "test_enrollment", "test_status", "test_channel", "test_channel_socket", "test_quarantine", "test_events",
                             "test_incidents_and_stream", "test_exemptions", "test_audit", "test_roles", "test_oversized",
                             "test_response_schemas"], controller)
    finally:
        controller.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")
    return report()


if __name__ == "__main__":
    sys.exit(main())
