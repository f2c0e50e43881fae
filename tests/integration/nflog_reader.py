#!/usr/bin/env python3
"""Minimal NFLOG reader (stdlib only) for the kernel integration lab.

Binds the given NFLOG groups on a NETLINK_NETFILTER socket of the network namespace
it runs in (start it with `ip netns exec <ns> python3 nflog_reader.py GROUP...`) and
prints one JSON object per logged packet on stdout, flushed:

    {"group": 10, "prefix": "bh:enf:out:deny:c06ffe5b0", "family": 4,
     "indev": "vdi1", "outdev": "vdi2", "src": "10.1.0.1", "dst": "10.1.0.2",
     "proto": 6, "sport": 40000, "dport": 3389, "icmp_type": null, "t": 1700000000.1}

The first line is {"ready": true, "groups": [...]} once every bind was acknowledged
by the kernel; on a setup error one {"error": "..."} line is printed and the exit code
is 3.  With --probe the reader binds, prints the ready line and exits 0.
It exits when stdin reaches end of file (its parent went away) or on SIGTERM.
"""

import errno
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2

NFULA_PACKET_HDR = 1
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10

COPY_RANGE = 128  # enough for an IPv6 header + extension-free TCP/UDP/ICMP header


def nlattr(kind, payload):
    length = 4 + len(payload)
    pad = (4 - length % 4) % 4
    return struct.pack("=HH", length, kind) + payload + b"\0" * pad


def config_message(seq, group, attrs, family=socket.AF_UNSPEC):
    body = struct.pack("=BBH", family, 0, socket.htons(group)) + b"".join(attrs)
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def parse_attrs(data):
    attrs = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        attrs[kind & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return attrs


def ifname(index_bytes):
    if not index_bytes:
        return None
    index = struct.unpack("!I", index_bytes[:4])[0]
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)


def parse_l4(proto, data, record):
    if proto in (6, 17, 132) and len(data) >= 4:
        record["sport"], record["dport"] = struct.unpack_from("!HH", data, 0)
    elif proto in (1, 58) and len(data) >= 1:
        record["icmp_type"] = data[0]


def parse_payload(payload, record):
    record.update(family=None, src=None, dst=None, proto=None, sport=None, dport=None, icmp_type=None)
    if not payload:
        return
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        record["family"] = 4
        record["proto"] = payload[9]
        record["src"] = str(ipaddress.IPv4Address(payload[12:16]))
        record["dst"] = str(ipaddress.IPv4Address(payload[16:20]))
        parse_l4(payload[9], payload[ihl:], record)
    elif version == 6 and len(payload) >= 40:
        record["family"] = 6
        record["src"] = str(ipaddress.IPv6Address(payload[8:24]))
        record["dst"] = str(ipaddress.IPv6Address(payload[24:40]))
        # Skip the common extension headers (hop-by-hop, routing, destination options).
        nexthdr, offset = payload[6], 40
        while nexthdr in (0, 43, 60) and offset + 2 <= len(payload):
            nexthdr, offset = payload[offset], offset + (payload[offset + 1] + 1) * 8
        record["proto"] = nexthdr
        parse_l4(nexthdr, payload[offset:], record)


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def bind_groups(sock, groups):
    """Binds every group; returns None or an error string."""
    seq = int(time.time()) & 0xFFFF
    pending = {}
    for group in groups:
        for attrs in (
            [nlattr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND))],
            [
                nlattr(NFULA_CFG_MODE, struct.pack("!IBB", COPY_RANGE, NFULNL_COPY_PACKET, 0)),
                nlattr(NFULA_CFG_QTHRESH, struct.pack("!I", 1)),
                nlattr(NFULA_CFG_TIMEOUT, struct.pack("!I", 0)),
                nlattr(NFULA_CFG_NLBUFSIZ, struct.pack("!I", 65536)),
            ],
        ):
            seq += 1
            pending[seq] = group
            sock.send(config_message(seq, group, attrs))
    deadline = time.monotonic() + 5.0
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "no acknowledgement from the kernel for NFLOG config"
        ready, _, _ = select.select([sock], [], [], remaining)
        if not ready:
            continue
        data = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
            if kind == NLMSG_ERROR:
                code = struct.unpack_from("=i", data, offset + 16)[0]
                group = pending.pop(seq, None)
                if code != 0:
                    return "NFLOG config for group %s failed: %s" % (group, os.strerror(-code))
            offset += (length + 3) & ~3
    return None


def main():
    args = [a for a in sys.argv[1:] if a != "--probe"]
    probe = "--probe" in sys.argv[1:]
    try:
        groups = [int(a) for a in args]
    except ValueError:
        groups = []
    if not groups:
        emit({"error": "usage: nflog_reader.py [--probe] GROUP..."})
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((0, 0))
    except OSError as e:
        emit({"error": "NETLINK_NETFILTER socket: %s" % e})
        return 3
    error = bind_groups(sock, groups)
    if error:
        emit({"error": error})
        return 3
    emit({"ready": True, "groups": groups})
    if probe:
        return 0
    watch = [sock]
    stdin_open = True
    try:
        os.fstat(0)
        watch.append(sys.stdin)
    except OSError:
        stdin_open = False
    while True:
        ready, _, _ = select.select(watch, [], [], 1.0)
        if stdin_open and sys.stdin in ready:
            if not os.read(0, 4096):
                return 0
        if sock not in ready:
            continue
        try:
            data = sock.recv(1 << 20)
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                emit({"overrun": True})
                continue
            raise
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
            if length < 16:
                break
            if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
                _family, _version, res_id = struct.unpack_from("!BBH", data, offset + 16)
                attrs = parse_attrs(data[offset + 20 : offset + length])
                record = {
                    "group": res_id,
                    "prefix": attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode(errors="replace"),
                    "indev": ifname(attrs.get(NFULA_IFINDEX_INDEV)),
                    "outdev": ifname(attrs.get(NFULA_IFINDEX_OUTDEV)),
                    "t": time.time(),
                }
                parse_payload(attrs.get(NFULA_PAYLOAD, b""), record)
                emit(record)
            offset += (length + 3) & ~3


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, BrokenPipeError):
        sys.exit(0)
