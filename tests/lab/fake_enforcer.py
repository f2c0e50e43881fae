#!/usr/bin/env python3
"""A stand-in for bulkhead-enforcer in the lab test (stdlib only).

Takes the enforcer's controller-mode flags; with --enrollment-token it enrolls like the
real one (POST /api/v1/enforcers/enroll over TLS, trusting only --ca) and stores the
credential in <state-dir>/credential (0600); then it idles until SIGTERM.
FAKE_ENFORCER_IGNORE_TERM=1 makes it ignore SIGTERM (to test SIGKILL on `down`).
"""

import json
import os
import signal
import socket
import ssl
import sys
import time
import urllib.request


def flag(name):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


def main():
    print("fake enforcer: %s" % " ".join(sys.argv[1:]), flush=True)
    enforcer, controller, state = flag("--enforcer-id"), flag("--controller"), flag("--state-dir")
    token_file = flag("--enrollment-token")
    if token_file:
        token = open(token_file).read().strip()
        ctx = ssl.create_default_context(cafile=flag("--ca"))
        req = urllib.request.Request(controller + "/api/v1/enforcers/enroll", method="POST",
                                     data=json.dumps({"enforcer": enforcer, "token": token, "version": "fake",
                                                      "hostname": socket.gethostname()}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            credential = json.load(r)["credential"]
        tmp = os.path.join(state, ".credential.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, credential.encode() + b"\n")
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, os.path.join(state, "credential"))
        print("enrolled", flush=True)
    if os.environ.get("FAKE_ENFORCER_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
