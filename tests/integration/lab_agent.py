#!/usr/bin/env python3
"""Traffic endpoints of the kernel integration lab (stdlib only).

Run inside a lab namespace with `ip netns exec <ns> python3 lab_agent.py ...`:

  serve --tcp 22,445 --udp 3389      dual-stack TCP and UDP echo servers on every address;
                                     prints "ready" once all are bound; exits at stdin EOF
  probe tcp|udp HOST PORT [--timeout S] [--bind SRC]
                                     one connection (TCP) or request/response (UDP) carrying
                                     a token that must come back; prints one JSON line;
                                     exit 0 when the echo came back, 1 otherwise
  hold HOST PORT [--timeout S] [--bind SRC]
                                     opens one TCP connection, prints "connected" (or
                                     "failed ..."), then per stdin line "send TOKEN SECONDS"
                                     prints "echo TOKEN" or "timeout TOKEN"; exits at EOF
"""

import json
import os
import select
import socket
import sys
import threading
import time


def dual_stack(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return s


def tcp_echo(conn):
    with conn:
        conn.settimeout(30)
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(data)
        except OSError:
            return


def tcp_server(sock):
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=tcp_echo, args=(conn,), daemon=True).start()


def udp_server(sock):
    # Answer from the address the request was sent to (the file-server namespace has
    # several), as a connected UDP client only accepts replies from its peer.
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    while True:
        try:
            data, ancdata, _flags, peer = sock.recvmsg(4096, socket.CMSG_SPACE(20))
        except OSError:
            return
        reply_from = []
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                reply_from = [(level, kind, value[:16] + b"\0\0\0\0")]
        try:
            sock.sendmsg([data], reply_from, 0, peer)
        except OSError:
            pass  # e.g. no route back: the client just sees no echo


def ports(text):
    return [int(p) for p in text.split(",") if p] if text else []


def serve(argv):
    tcp, udp = [], []
    i = 0
    while i < len(argv):
        if argv[i] == "--tcp":
            tcp = ports(argv[i + 1])
        elif argv[i] == "--udp":
            udp = ports(argv[i + 1])
        i += 2
    for port in tcp:
        s = dual_stack(socket.SOCK_STREAM)
        s.bind(("::", port))
        s.listen(64)
        threading.Thread(target=tcp_server, args=(s,), daemon=True).start()
    for port in udp:
        s = dual_stack(socket.SOCK_DGRAM)
        s.bind(("::", port))
        threading.Thread(target=udp_server, args=(s,), daemon=True).start()
    print("ready", flush=True)
    # Live as long as the harness holds our stdin open.
    while os.read(0, 4096):
        pass
    return 0


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def probe(argv):
    proto, host, port = argv[0], argv[1], int(argv[2])
    timeout = float(argv[argv.index("--timeout") + 1]) if "--timeout" in argv else 1.0
    token = ("bh-%d-%f" % (os.getpid(), time.time())).encode()
    deadline = time.monotonic() + timeout
    result = {"proto": proto, "host": host, "port": port, "ok": False}
    s = socket.socket(family_of(host), socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        if "--bind" in argv:
            s.bind((argv[argv.index("--bind") + 1], 0))
        if proto == "tcp":
            s.settimeout(timeout)
            s.connect((host, port))
            result["sport"] = s.getsockname()[1]
            s.sendall(token)
            got = b""
            while len(got) < len(token):
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError("connection closed before the echo")
                got += chunk
            result["ok"] = got == token
        else:
            s.connect((host, port))
            result["sport"] = s.getsockname()[1]
            # Request/response; resend a few times within the deadline (UDP may lose one).
            while not result["ok"]:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no UDP echo")
                s.send(token)
                ready, _, _ = select.select([s], [], [], min(0.3, remaining))
                if ready:
                    result["ok"] = s.recv(4096) == token
    except (OSError, TimeoutError) as e:
        result["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        s.close()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


def hold(argv):
    host, port = argv[0], int(argv[1])
    timeout = float(argv[argv.index("--timeout") + 1]) if "--timeout" in argv else 2.0
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if "--bind" in argv:
            s.bind((argv[argv.index("--bind") + 1], 0))
        s.connect((host, port))
    except OSError as e:
        print("failed %s" % e, flush=True)
        return 1
    print("connected %d" % s.getsockname()[1], flush=True)
    received = b""
    for line in sys.stdin:
        words = line.split()
        if len(words) != 3 or words[0] != "send":
            print("error bad command", flush=True)
            continue
        token, wait = words[1].encode(), float(words[2])
        try:
            s.sendall(token + b"\n")
        except OSError as e:
            print("timeout %s %s" % (words[1], e), flush=True)
            continue
        deadline = time.monotonic() + wait
        while token not in received and time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        if token in received:
            received = received.split(token, 1)[1]
            print("echo %s" % words[1], flush=True)
        else:
            print("timeout %s" % words[1], flush=True)
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    command, argv = sys.argv[1], sys.argv[2:]
    if command == "serve":
        return serve(argv)
    if command == "probe":
        return probe(argv)
    if command == "hold":
        return hold(argv)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, BrokenPipeError):
        sys.exit(1)
