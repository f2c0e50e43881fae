#!/usr/bin/env python3
"""Traffic generators for the enforcer daemon tests (stdlib only), run inside a lab
namespace with `ip netns exec <ns> python3 enf_agent.py ...`. Every command is bounded in
count and time and prints one JSON line.

  scan SRC DST FIRST_PORT N [--hold S]
      N non-blocking TCP connects from SRC to DST:FIRST_PORT..FIRST_PORT+N-1, all in
      flight at once; the sockets are kept S seconds (default 1.5, long enough for the
      kernel to retransmit each SYN once, at about 1 s), then closed. A SYN_SENT socket
      closes silently. Prints {"attempted", "connected", "refused", "elapsed"}.
  flood SRC DST FIRST_PORT NPORTS PACKETS [--sockets K] [--max-seconds S]
      PACKETS UDP datagrams from K sockets (K source ports, default 8) to DST, the
      destination port cycling over FIRST_PORT..FIRST_PORT+NPORTS-1; stops at PACKETS or
      after S seconds (default 15). Prints {"sent", "errors", "elapsed", "pps"}.
"""

import errno
import json
import select
import socket
import sys
import time


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def option(argv, name, default):
    if name in argv:
        return float(argv[argv.index(name) + 1])
    return default


def scan(argv):
    src, dst, first, n = argv[0], argv[1], int(argv[2]), int(argv[3])
    hold = option(argv, "--hold", 1.5)
    if not 0 < n <= 5000 or not 0 < hold <= 10:
        raise SystemExit("scan: N must be 1..5000 and --hold 0..10")
    start = time.monotonic()
    socks = []
    refused = 0
    for i in range(n):
        s = socket.socket(family_of(dst), socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((src, 0))
        rc = s.connect_ex((dst, first + i))
        if rc not in (0, errno.EINPROGRESS):
            refused += 1
        socks.append(s)
    connected = set()
    deadline = start + hold
    pending = list(socks)
    while time.monotonic() < deadline and pending:
        _, writable, _ = select.select([], pending, [], max(0.0, deadline - time.monotonic()))
        for s in writable:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected.add(s.fileno())
            else:
                refused += 1
            pending.remove(s)
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    for s in socks:
        s.close()
    print(json.dumps({"attempted": n, "connected": len(connected), "refused": refused,
                      "elapsed": round(time.monotonic() - start, 3)}), flush=True)
    return 0


def flood(argv):
    src, dst = argv[0], argv[1]
    first, nports, packets = int(argv[2]), int(argv[3]), int(argv[4])
    nsock = int(option(argv, "--sockets", 8))
    max_seconds = option(argv, "--max-seconds", 15)
    if not 0 < packets <= 2_000_000 or not 0 < nports <= 65536 - first or not 0 < max_seconds <= 60:
        raise SystemExit("flood: PACKETS 1..2e6, ports within 1..65535, --max-seconds 0..60")
    socks = []
    for _ in range(max(1, nsock)):
        s = socket.socket(family_of(dst), socket.SOCK_DGRAM)
        s.bind((src, 0))
        socks.append(s)
    payload = b"bulkhead-flood"
    start = time.monotonic()
    deadline = start + max_seconds
    sent = errors = 0
    i = 0
    while i < packets:
        if (i & 1023) == 0 and time.monotonic() > deadline:
            break
        try:
            socks[i % len(socks)].sendto(payload, (dst, first + (i % nports)))
            sent += 1
        except OSError:
            errors += 1
        i += 1
    elapsed = time.monotonic() - start
    for s in socks:
        s.close()
    print(json.dumps({"sent": sent, "errors": errors, "elapsed": round(elapsed, 3),
                      "pps": int(sent / elapsed) if elapsed > 0 else None}), flush=True)
    return 0


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("scan", "flood"):
        print(__doc__, file=sys.stderr)
        return 2
    return scan(sys.argv[2:]) if sys.argv[1] == "scan" else flood(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
