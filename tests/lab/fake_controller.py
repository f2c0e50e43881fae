#!/usr/bin/env python3
"""A stand-in for bulkhead-controller in the lab test (stdlib only).

Takes the controller's flags (--data-dir, --listen, --tls-cert, --tls-key, --plain-listen,
--bootstrap-tokens; others ignored) and serves just enough of the API for lab.py's `up`:
GET /api/v1/openapi.json, POST /api/v1/enforcers/{id}/enrollment-token (admin bearer
token from the bootstrap file) and POST /api/v1/enforcers/enroll (over TLS).  Every
enrollment is appended to <data-dir>/enrolled.jsonl with the peer address, so the test can
see that each enforcer reached the TLS listener over the management network.

FAKE_CONTROLLER_MODE=hang: listen nowhere and ignore SIGTERM (a controller that never
becomes ready, to test that a failed `up` cleans up with SIGKILL).
"""

import json
import os
import re
import secrets
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def flag(name):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


def main():
    print("fake controller: %s" % " ".join(sys.argv[1:]), flush=True)
    if os.environ.get("FAKE_CONTROLLER_MODE") == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    data_dir = flag("--data-dir")
    boot = json.load(open(flag("--bootstrap-tokens")))
    admins = {t["token"] for t in boot["tokens"] if t["role"] == "admin"}
    lock = threading.Lock()
    tokens = {}  # enrollment token -> enforcer id

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            print("%s %s" % (self.client_address[0], fmt % args), flush=True)

        def reply(self, status, body):
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            try:
                return json.loads(self.rfile.read(n) or b"{}")
            except ValueError:
                return {}

        def do_GET(self):
            if self.path == "/api/v1/openapi.json":
                return self.reply(200, {"openapi": "3.0.3", "info": {"title": "fake"}})
            self.reply(404, {"error": "not found"})

        def do_PUT(self):
            # The lab loads its inventory before asking for enrollment tokens.
            if self.path == "/api/v1/inventory":
                req = self.body()
                auth = self.headers.get("Authorization", "")
                if auth[len("Bearer "):] not in admins:
                    return self.reply(401, {"error": "unauthorized"})
                if not isinstance(req.get("enforcers"), list):
                    return self.reply(422, {"error": "no enforcers"})
                return self.reply(200, {"enforcers": len(req["enforcers"]),
                                        "workloads": len(req.get("workloads", []))})
            self.reply(404, {"error": "not found"})

        def do_POST(self):
            m = re.fullmatch(r"/api/v1/enforcers/([^/]+)/enrollment-token", self.path)
            if m:
                self.body()
                auth = self.headers.get("Authorization", "")
                if auth[len("Bearer "):] not in admins:
                    return self.reply(401, {"error": "unauthorized"})
                token = secrets.token_urlsafe(24)
                with lock:
                    tokens[token] = m.group(1)
                return self.reply(201, {"enforcer": m.group(1), "token": token,
                                        "expires_at": "2099-01-01T00:00:00Z"})
            if self.path == "/api/v1/enforcers/enroll":
                req = self.body()
                with lock:
                    ok = tokens.get(req.get("token")) == req.get("enforcer")
                    if ok:
                        del tokens[req["token"]]
                if not ok:
                    return self.reply(401, {"error": "bad token"})
                with lock, open(os.path.join(data_dir, "enrolled.jsonl"), "a") as f:
                    f.write(json.dumps({"enforcer": req["enforcer"], "peer": self.client_address[0],
                                        "tls": isinstance(self.connection, ssl.SSLSocket)}) + "\n")
                return self.reply(201, {"enforcer": req["enforcer"], "credential": secrets.token_urlsafe(24)})
            self.reply(404, {"error": "not found"})

    def serve(hostport, tls):
        host, port = hostport.rsplit(":", 1)
        srv = ThreadingHTTPServer((host, int(port)), Handler)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(flag("--tls-cert"), flag("--tls-key"))
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()

    serve(flag("--listen"), True)
    serve(flag("--plain-listen"), False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
