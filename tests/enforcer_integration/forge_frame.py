#!/usr/bin/env python3
"""Sends one hand-made Ethernet frame on an interface (scapy): the spoof guard's kernel test
forges what a compromised VDI could send (another source MAC) beside what an honest one
sends (its own MAC, a DHCP request from 0.0.0.0, IPv6 DAD from ::).

    forge_frame.py IFACE FRAME [+ FRAME ...]     sent in that order, by one socket
    FRAME:  SRC_MAC DST_MAC syn SRC_IP DST_IP PORT    a TCP SYN from source port 40123
            SRC_MAC - dhcp                            a DHCP discover from 0.0.0.0
            SRC_MAC - dad TARGET_IPV6                 a neighbour solicitation from ::

Run inside the sender's network namespace by an interpreter that has scapy (Debian:
python3-scapy, which scripts/install-deps.sh installs)."""
import ipaddress
import sys

from scapy.all import BOOTP, DHCP, ICMPv6ND_NS, IP, IPv6, TCP, UDP, Ether, sendp  # noqa: E402


def frame(spec):
    src_mac, dst_mac, kind = spec[:3]
    if kind == "syn":
        src, dst, port = spec[3], spec[4], int(spec[5])
        l3 = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
        return Ether(src=src_mac, dst=dst_mac) / l3 / TCP(sport=40123, dport=port, flags="S", seq=1)
    if kind == "dhcp":
        chaddr = bytes.fromhex(src_mac.replace(":", ""))
        return (Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255") /
                UDP(sport=68, dport=67) / BOOTP(chaddr=chaddr, xid=0x1234) /
                DHCP(options=[("message-type", "discover"), "end"]))
    if kind == "dad":
        target = ipaddress.IPv6Address(spec[3])
        low = target.packed[-3:]
        solicited = str(ipaddress.IPv6Address(bytes.fromhex("ff0200000000000000000001ff") + low))
        multicast_mac = "33:33:ff:%02x:%02x:%02x" % tuple(low)
        return Ether(src=src_mac, dst=multicast_mac) / IPv6(src="::", dst=solicited, hlim=255) / \
            ICMPv6ND_NS(tgt=str(target))
    raise SystemExit("unknown frame kind %r" % kind)


def main(argv):
    iface, specs, current = argv[1], [], []
    for token in argv[2:]:
        if token == "+":
            specs.append(current)
            current = []
        else:
            current.append(token)
    specs.append(current)
    sendp([frame(spec) for spec in specs], iface=iface, verbose=False)


if __name__ == "__main__":
    main(sys.argv)
