#!/usr/bin/env python3
"""Traffic endpoints for the lab test, run inside a lab namespace (stdlib only).

  serve PORT[,PORT...]     dual-stack TCP echo servers; prints "ready"; exits at stdin EOF
  probe HOST PORT [S]      one TCP connection whose token must come back within S seconds
                           (default 2); exit 0 when it did
"""

import os
import socket
import sys
import threading


def echo(conn):
    with conn:
        conn.settimeout(10)
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(data)
        except OSError:
            return


def accept_loop(sock):
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def serve(ports):
    for port in ports.split(","):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", int(port)))
        s.listen(16)
        threading.Thread(target=accept_loop, args=(s,), daemon=True).start()
    print("ready", flush=True)
    while os.read(0, 4096):
        pass
    return 0


def probe(host, port, timeout):
    token = ("lab-%d" % os.getpid()).encode()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect((host, port))
            s.sendall(token)
            got = b""
            while len(got) < len(token):
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        ok = got == token
        print("ok" if ok else "bad echo %r" % got, flush=True)
        return 0 if ok else 1
    except OSError as e:
        print("%s: %s" % (type(e).__name__, e), flush=True)
        return 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2]))
    if len(sys.argv) >= 4 and sys.argv[1] == "probe":
        sys.exit(probe(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 2.0))
    print(__doc__, file=sys.stderr)
    sys.exit(2)
