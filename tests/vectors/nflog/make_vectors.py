#!/usr/bin/env python3
"""Generates the NFLOG decoder's malformed-input vectors (and a few valid ones).

Each vector is one binary file: a netlink message or datagram laid out as the kernel's
nfnetlink_log builds it (host-order netlink and attribute headers, big-endian payloads),
then damaged in one specific way. manifest.json lists every file with what the decoder
must say about it; tests/unit/test_enforcer_nflog_vectors.cpp runs them all, and the files
double as the fuzz target's seed corpus (enforcer/nflog/fuzz_nflog_decoder.cpp).

    python3 tests/vectors/nflog/make_vectors.py   # rewrites *.bin and manifest.json here

Standard library only; deterministic output.
"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

NFULNL_MSG_PACKET = 0x0400  # (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_MULTI = 2
NFPROTO_IPV4, NFPROTO_IPV6, NFPROTO_ARP = 2, 10, 3

(NFULA_PACKET_HDR, NFULA_MARK, NFULA_TIMESTAMP, NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV,
 NFULA_IFINDEX_PHYSINDEV, NFULA_IFINDEX_PHYSOUTDEV, NFULA_HWADDR, NFULA_PAYLOAD, NFULA_PREFIX,
 NFULA_UID, NFULA_SEQ, NFULA_SEQ_GLOBAL, NFULA_GID, NFULA_HWTYPE, NFULA_HWHEADER,
 NFULA_HWLEN) = range(1, 18)

PREFIX = b"bh:enf:out:deny:c1\0"


def pad4(b):
    return b + b"\0" * ((4 - len(b) % 4) % 4)


def attr(kind, value, length=None):
    """An attribute; `length` overrides nla_len (to lie about it)."""
    return pad4(struct.pack("=HH", 4 + len(value) if length is None else length, kind) + value)


def be32_attr(kind, v):
    return attr(kind, struct.pack(">I", v))


def nlmsg(body, msg_type=NFULNL_MSG_PACKET, length=None, flags=0):
    total = 16 + len(body)
    return struct.pack("=IHHII", total if length is None else length, msg_type, flags, 0, 0) + body


def nfgen(family=NFPROTO_IPV4, group=10, version=0):
    return struct.pack("=BB", family, version) + struct.pack(">H", group)


def packet_hdr(hw_protocol=0x0800, hook=2):
    return attr(NFULA_PACKET_HDR, struct.pack(">HBB", hw_protocol, hook, 0))


def ipv4(proto=6, transport=b"", ihl=5, total=None, frag=0, options=b"", version=4):
    header_len = ihl * 4
    tot = total if total is not None else 20 + len(options) + len(transport)
    head = struct.pack(">BBHHHBBH4s4s", (version << 4) | ihl, 0, tot, 0x1234, frag, 64, proto, 0,
                       bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    del header_len
    return head + options + transport


def ipv6(next_header, rest, payload_length=None):
    src = bytes.fromhex("fd000000000000000000000000000001")
    dst = bytes.fromhex("fd000000000000000000000000000002")
    plen = len(rest) if payload_length is None else payload_length
    return struct.pack(">IHBB", 0x60000000, plen, next_header, 64) + src + dst + rest


def tcp(sport=40000, dport=3389, flags=0x02):
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 64240, 0, 0)


def udp(sport=5353, dport=53):
    return struct.pack(">HHHH", sport, dport, 8, 0)


def ext(next_header, units=0):
    body = bytes([next_header, units, 1, 8 * (units + 1) - 4]) + b"\0" * (8 * (units + 1) - 4)
    return body


def frag6(next_header, offset_units, more):
    return struct.pack(">BBHI", next_header, 0, (offset_units << 3) | int(more), 0xabcdef01)


def message(payload=None, prefix=PREFIX, family=NFPROTO_IPV4, hdr=None, extra=b"", seq=0,
            timestamp=(1700000000, 123456), group=10):
    body = nfgen(family, group)
    body += hdr if hdr is not None else packet_hdr(0x86DD if family == NFPROTO_IPV6 else 0x0800)
    if prefix is not None:
        body += attr(NFULA_PREFIX, prefix)
    body += be32_attr(NFULA_IFINDEX_INDEV, 4) + be32_attr(NFULA_IFINDEX_OUTDEV, 9)
    if timestamp is not None:
        body += attr(NFULA_TIMESTAMP, struct.pack(">QQ", *timestamp))
    if seq is not None:
        body += be32_attr(NFULA_SEQ, seq) + be32_attr(NFULA_SEQ_GLOBAL, seq + 100)
    body += extra
    if payload is not None:
        body += attr(NFULA_PAYLOAD, payload)
    return nlmsg(body)


def done():
    return nlmsg(nfgen(0, 0), msg_type=NLMSG_DONE, flags=NLM_F_MULTI)


SYN = ipv4(6, tcp())
VECTORS = []


def vector(name, data, expect, description, level="message", notes=(), events=None,
           anomalies=None):
    VECTORS.append({"file": name + ".bin", "level": level, "expect": expect,
                    "notes": list(notes), "events": events, "anomalies": anomalies or {},
                    "description": description, "data": data})


# ---- valid references -------------------------------------------------------------------
vector("ok_ipv4_tcp_syn", message(SYN), "ok", "reference: IPv4 TCP SYN, forward hook")
vector("ok_ipv6_udp_dstopts", message(ipv6(60, ext(17) + udp()), family=NFPROTO_IPV6), "ok",
       "reference: IPv6, destination options, UDP")

# ---- netlink framing --------------------------------------------------------------------
vector("empty", b"", "truncated_netlink_header", "zero bytes")
vector("garbage_10_bytes", bytes(range(10)), "truncated_netlink_header", "shorter than a nlmsghdr")
vector("nlmsg_len_beyond_buffer", message(SYN)[:-8], "bad_netlink_length",
       "nlmsg_len says more than the buffer holds")
vector("nlmsg_len_below_header", nlmsg(b"", length=8), "bad_netlink_length", "nlmsg_len 8 < 16")
vector("nlmsg_len_max", struct.pack("=IHHII", 0xFFFFFFFF, NFULNL_MSG_PACKET, 0, 0, 0) + b"\0" * 64,
       "bad_netlink_length", "nlmsg_len 0xffffffff (padding arithmetic must not wrap)")
vector("not_a_packet_message", nlmsg(nfgen(), msg_type=0x0401), "not_nflog_packet",
       "an NFULNL_MSG_CONFIG message")
vector("no_nfgenmsg", nlmsg(b""), "truncated_nfgenmsg", "16-byte message, no nfgenmsg")
vector("nfnetlink_version_1", nlmsg(nfgen(version=1) + packet_hdr()), "unsupported_nfnetlink_version",
       "nfgenmsg.version 1")

# ---- attributes -------------------------------------------------------------------------
vector("attribute_len_2", nlmsg(nfgen() + struct.pack("=HH", 2, NFULA_PACKET_HDR) + b"\0" * 8),
       "bad_attribute_length", "nla_len 2 < 4")
vector("attribute_len_beyond_message",
       nlmsg(nfgen() + packet_hdr() + struct.pack("=HH", 200, NFULA_PAYLOAD) + SYN),
       "bad_attribute_length", "payload attribute claims 200 bytes, 40 follow")
vector("attribute_len_0xffff",
       nlmsg(nfgen() + struct.pack("=HH", 0xFFFF, NFULA_PREFIX) + PREFIX),
       "bad_attribute_length", "nla_len 0xffff")
vector("trailing_attribute_bytes", nlmsg(nfgen() + packet_hdr() + b"\x01\x02"),
       "trailing_attribute_bytes", "2 bytes after the last attribute")
vector("duplicate_prefix", message(SYN, extra=attr(NFULA_PREFIX, PREFIX)), "duplicate_attribute",
       "NFULA_PREFIX twice")
vector("short_packet_hdr", message(SYN, hdr=attr(NFULA_PACKET_HDR, b"\x08\x00")),
       "bad_attribute_length", "NFULA_PACKET_HDR with 2 of its 4 bytes")
vector("short_timestamp",
       nlmsg(nfgen() + packet_hdr() + attr(NFULA_PREFIX, PREFIX) + attr(NFULA_TIMESTAMP, b"\0" * 8)
             + attr(NFULA_PAYLOAD, SYN)),
       "bad_attribute_length", "NFULA_TIMESTAMP with 8 of 16 bytes")
vector("short_seq", message(SYN, seq=None, extra=attr(NFULA_SEQ, b"\0\0")), "bad_attribute_length",
       "NFULA_SEQ with 2 bytes")
vector("short_ifindex",
       nlmsg(nfgen() + packet_hdr() + attr(NFULA_IFINDEX_INDEV, b"\0")), "bad_attribute_length",
       "NFULA_IFINDEX_INDEV with 1 byte")
vector("hwaddr_len_200", message(SYN, extra=attr(NFULA_HWADDR, struct.pack(">HH", 200, 0) + b"\0" * 8)),
       "bad_hwaddr_length", "hw_addrlen 200 > 8")
vector("hwaddr_len_beyond_attribute",
       message(SYN, extra=attr(NFULA_HWADDR, struct.pack(">HH", 8, 0) + b"\0" * 2)),
       "bad_attribute_length", "hw_addrlen 8, 2 bytes of address")
vector("unterminated_prefix", message(SYN, prefix=b"bh:enf:out:deny:c1"), "unterminated_prefix",
       "NFULA_PREFIX without its NUL")
vector("missing_packet_hdr", nlmsg(nfgen() + attr(NFULA_PREFIX, PREFIX) + attr(NFULA_PAYLOAD, SYN)),
       "missing_packet_header", "no NFULA_PACKET_HDR")
vector("missing_payload", message(None), "missing_payload", "no NFULA_PAYLOAD (copy mode meta)")
vector("missing_prefix", message(SYN, prefix=None), "missing_prefix", "no NFULA_PREFIX")
vector("foreign_prefix", message(SYN, prefix=b"IN=eth0 OUT= \0"), "foreign_prefix",
       "a prefix of somebody else's rule")
vector("prefix_bad_reason", message(SYN, prefix=b"bh:enf:out:because:c1\0"), "foreign_prefix",
       "bh: grammar with an unknown reason")
vector("arp_family", message(b"\0" * 28, family=NFPROTO_ARP, hdr=packet_hdr(0x0806)),
       "unsupported_family", "NFPROTO_ARP, EtherType 0x0806")

# ---- network header ---------------------------------------------------------------------
vector("ipv4_19_bytes", message(SYN[:19]), "truncated_ipv4_header", "19 bytes of IPv4 header")
vector("ipv4_ihl_4", message(ipv4(6, tcp(), ihl=4)), "bad_ipv4_ihl", "IHL 4 (16 bytes)")
vector("ipv4_ihl_15_short", message(ipv4(6, tcp(), ihl=15)[:40]), "truncated_ipv4_options",
       "IHL 15 (60 bytes), 40 copied")
vector("ipv4_total_length_10", message(ipv4(6, tcp(), total=10)), "bad_ipv4_total_length",
       "total length 10 < 20")
vector("ipv4_version_6", message(ipv4(6, tcp(), version=6)), "ip_version_mismatch",
       "NFPROTO_IPV4, version nibble 6")
vector("ipv6_39_bytes", message(ipv6(6, tcp())[:39], family=NFPROTO_IPV6), "truncated_ipv6_header",
       "39 bytes of IPv6 header")
vector("ipv6_version_4", message(SYN + b"\0" * 20, family=NFPROTO_IPV6), "ip_version_mismatch",
       "NFPROTO_IPV6, an IPv4 packet")

# ---- decoded, with a note ---------------------------------------------------------------
vector("ipv4_tcp_cut_at_10", message(ipv4(6, tcp())[:30]), "ok",
       "copy range ends 10 bytes into TCP: ports, no flags", notes=["l4_truncated"])
vector("ipv4_tcp_packet_too_short", message(ipv4(6, tcp(), total=30)), "ok",
       "total length leaves 10 bytes for TCP", notes=["l4_malformed"])
vector("ipv4_later_fragment", message(ipv4(17, udp(), frag=0x0010)), "ok",
       "fragment offset 128: no ports", notes=["non_first_fragment"])
vector("ipv6_nine_extension_headers",
       message(ipv6(60, b"".join(ext(60) for _ in range(8)) + ext(17) + udp()), family=NFPROTO_IPV6),
       "ok", "nine destination-options headers: the walker stops at eight",
       notes=["ipv6_extension_limit"])
vector("ipv6_extension_beyond_capture", message(ipv6(0, ext(17, 30) + udp())[:60], family=NFPROTO_IPV6),
       "ok", "a 248-byte hop-by-hop header, 60 bytes copied", notes=["l4_truncated"])
vector("ipv6_extension_beyond_packet", message(ipv6(60, ext(17, 30)[:16], payload_length=16),
                                               family=NFPROTO_IPV6),
       "ok", "an extension header longer than the packet", notes=["l4_malformed"])
vector("ipv6_ah_huge", message(ipv6(51, bytes([17, 255]) + b"\0" * 6 + udp()), family=NFPROTO_IPV6),
       "ok", "AH claiming (255+2)*4 bytes", notes=["l4_malformed"])
vector("ipv6_later_fragment", message(ipv6(44, frag6(17, 185, False) + udp()), family=NFPROTO_IPV6),
       "ok", "IPv6 fragment offset 1480: no ports", notes=["non_first_fragment"])
vector("timestamp_usec_2e6", message(SYN, timestamp=(1700000000, 2000000)), "ok",
       "usec 2,000,000: receive time instead", notes=["bad_timestamp"])
vector("timestamp_sec_max", message(SYN, timestamp=(0xFFFFFFFFFFFFFFFF, 0)), "ok",
       "sec 2^64-1 would overflow int64 ns", notes=["bad_timestamp"])

# ---- datagrams --------------------------------------------------------------------------
vector("datagram_two_and_done", pad4(message(SYN, seq=0)) + pad4(message(SYN, seq=1)) + done(), "ok",
       "a batch: two messages and NLMSG_DONE", level="datagram", events=2)
vector("datagram_then_bad_length", pad4(message(SYN, seq=0)) + struct.pack("=IHHII", 4096, 0x0400, 0, 0, 0),
       "ok", "a good message, then a header claiming 4096 bytes", level="datagram", events=1,
       anomalies={"bad_netlink_length": 1})
vector("datagram_error_message", nlmsg(struct.pack("=i", -22) + b"\0" * 16, msg_type=NLMSG_ERROR), "ok",
       "an NLMSG_ERROR in the log stream", level="datagram", events=0)
vector("datagram_good_bad_good", pad4(message(SYN, seq=0)) + pad4(message(SYN, prefix=None, seq=1))
       + pad4(message(SYN, seq=2)), "ok", "a rejected message between two good ones",
       level="datagram", events=2, anomalies={"missing_prefix": 1})


def main():
    for old in os.listdir(HERE):
        if old.endswith(".bin"):
            os.remove(os.path.join(HERE, old))
    manifest = []
    for v in VECTORS:
        with open(os.path.join(HERE, v["file"]), "wb") as f:
            f.write(v["data"])
        entry = {k: v[k] for k in ("file", "level", "expect", "notes", "description")}
        if v["level"] == "datagram":
            entry["events"] = v["events"]
            entry["anomalies"] = v["anomalies"]
        manifest.append(entry)
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump({"generator": "make_vectors.py", "vectors": manifest}, f, indent=2)
        f.write("\n")
    print(f"{len(manifest)} vectors written to {HERE}")


if __name__ == "__main__":
    main()
