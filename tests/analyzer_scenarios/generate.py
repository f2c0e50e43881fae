#!/usr/bin/env python3
"""Writes the analyzer scenario suite: labelled drop-event files, one per scenario.

Each scenario is a day of the fleet in inventory.json reduced to what the enforcers log: the
packets the policy drops, as `enforcer/nflog/drop_event.cpp` `to_json` writes them, folded by
the enforcer's EventAggregator (the first packet of a (workload, interfaces, src, dst,
protocol, port or ICMP type, direction, reason) key is emitted at once, repeats within 1 s
become one "drop_summary" when the window closes), with the controller's "enforcer" added,
in time order as the controller stores them. Beside each NAME.jsonl, NAME.labels.json says
which sources are attackers (and which detectors should name them) and which are benign.

    generate.py --out DIR [--seed N] [-k NAME]

Standard library only; deterministic (fixed seeds: the same arguments write the same bytes).
The tools are modelled on their real behaviour (see README.md): nmap's timing comes from
nmap 7.93 `--packet-trace` runs against a network that drops everything (bursts of 10 probes
a second, each unanswered probe sent twice, about 2 s apart; `-sT` connects twice, each
connect's SYN retransmitted by the kernel after 1 s), its port lists from nmap-services.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import ipaddress
import json
import random
import sys
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
NS = 1_000_000_000
DAY0 = datetime.datetime(2026, 11, 23, 8, 0, tzinfo=datetime.timezone.utc)  # a Monday, 08:00 UTC
T0 = int(DAY0.timestamp()) * NS
POLICY_GENERATION = 7
LOG_GROUP = 10
REPEAT_WINDOW_NS = NS  # the enforcer's --repeat-window-ms default (1000)
MAX_ATTEMPTS_PER_WINDOW = 3  # new source ports a window lets through (enforcer/nflog/event_aggregator.hpp)

# Top ports by nmap-services frequency (nmap 7.93): what `nmap` (default: top 1000 TCP),
# `nmap -F` (top 100) and `nmap -sU -F` probe.
NMAP_TOP_TCP_1000 = (
    "1,3-4,6-7,9,13,17,19-26,30,32-33,37,42-43,49,53,70,79-85,88-90,99-100,106,109-111,113,119,12"
    "5,135,139,143-144,146,161,163,179,199,211-212,222,254-256,259,264,280,301,306,311,340,366,38"
    "9,406-407,416-417,425,427,443-445,458,464-465,481,497,500,512-515,524,541,543-545,548,554-55"
    "5,563,587,593,616-617,625,631,636,646,648,666-668,683,687,691,700,705,711,714,720,722,726,74"
    "9,765,777,783,787,800-801,808,843,873,880,888,898,900-903,911-912,981,987,990,992-993,995,99"
    "9-1002,1007,1009-1011,1021-1100,1102,1104-1108,1110-1114,1117,1119,1121-1124,1126,1130-1132,"
    "1137-1138,1141,1145,1147-1149,1151-1152,1154,1163-1166,1169,1174-1175,1183,1185-1187,1192,11"
    "98-1199,1201,1213,1216-1218,1233-1234,1236,1244,1247-1248,1259,1271-1272,1277,1287,1296,1300"
    "-1301,1309-1311,1322,1328,1334,1352,1417,1433-1434,1443,1455,1461,1494,1500-1501,1503,1521,1"
    "524,1533,1556,1580,1583,1594,1600,1641,1658,1666,1687-1688,1700,1717-1721,1723,1755,1761,178"
    "2-1783,1801,1805,1812,1839-1840,1862-1864,1875,1900,1914,1935,1947,1971-1972,1974,1984,1998-"
    "2010,2013,2020-2022,2030,2033-2035,2038,2040-2043,2045-2049,2065,2068,2099-2100,2103,2105-210"
    "7,2111,2119,2121,2126,2135,2144,2160-2161,2170,2179,2190-2191,2196,2200,2222,2251,2260,2288,2"
    "301,2323,2366,2381-2383,2393-2394,2399,2401,2492,2500,2522,2525,2557,2601-2602,2604-2605,2607"
    "-2608,2638,2701-2702,2710,2717-2718,2725,2800,2809,2811,2869,2875,2909-2910,2920,2967-2968,29"
    "98,3000-3001,3003,3005-3007,3011,3013,3017,3030-3031,3052,3071,3077,3128,3168,3211,3221,3260-"
    "3261,3268-3269,3283,3300-3301,3306,3322-3325,3333,3351,3367,3369-3372,3389-3390,3404,3476,349"
    "3,3517,3527,3546,3551,3580,3659,3689-3690,3703,3737,3766,3784,3800-3801,3809,3814,3826-3828,3"
    "851,3869,3871,3878,3880,3889,3905,3914,3918,3920,3945,3971,3986,3995,3998,4000-4006,4045,4111"
    ",4125-4126,4129,4224,4242,4279,4321,4343,4443-4446,4449,4550,4567,4662,4848,4899-4900,4998,50"
    "00-5004,5009,5030,5033,5050-5051,5054,5060-5061,5080,5087,5100-5102,5120,5190,5200,5214,5221-"
    "5222,5225-5226,5269,5280,5298,5357,5405,5414,5431-5432,5440,5500,5510,5544,5550,5555,5560,556"
    "6,5631,5633,5666,5678-5679,5718,5730,5800-5802,5810-5811,5815,5822,5825,5850,5859,5862,5877,5"
    "900-5904,5906-5907,5910-5911,5915,5922,5925,5950,5952,5959-5963,5987-5989,5998-6007,6009,6025"
    ",6059,6100-6101,6106,6112,6123,6129,6156,6346,6389,6502,6510,6543,6547,6565-6567,6580,6646,66"
    "66-6669,6689,6692,6699,6779,6788-6789,6792,6839,6881,6901,6969,7000-7002,7004,7007,7019,7025,"
    "7070,7100,7103,7106,7200-7201,7402,7435,7443,7496,7512,7625,7627,7676,7741,7777-7778,7800,791"
    "1,7920-7921,7937-7938,7999-8002,8007-8011,8021-8022,8031,8042,8045,8080-8090,8093,8099-8100,8"
    "180-8181,8192-8194,8200,8222,8254,8290-8292,8300,8333,8383,8400,8402,8443,8500,8600,8649,8651"
    "-8652,8654,8701,8800,8873,8888,8899,8994,9000-9003,9009-9011,9040,9050,9071,9080-9081,9090-90"
    "91,9099-9103,9110-9111,9200,9207,9220,9290,9415,9418,9485,9500,9502-9503,9535,9575,9593-9595,"
    "9618,9666,9876-9878,9898,9900,9917,9929,9943-9944,9968,9998-10004,10009-10010,10012,10024-100"
    "25,10082,10180,10215,10243,10566,10616-10617,10621,10626,10628-10629,10778,11110-11111,11967,"
    "12000,12174,12265,12345,13456,13722,13782-13783,14000,14238,14441-14442,15000,15002-15004,156"
    "60,15742,16000-16001,16012,16016,16018,16080,16113,16992-16993,17877,17988,18040,18101,18988,"
    "19101,19283,19315,19350,19780,19801,19842,20000,20005,20031,20221-20222,20828,21571,22939,230"
    "02,24444,24800,25734-25735,26214,27000,27352-27353,27355-27356,27715,28201,30000,30718,30951,"
    "31038,31337,32768-32785,33354,33899,34571-34573,35500,38292,40193,40911,41511,42510,44176,444"
    "42-44443,44501,45100,48080,49152-49161,49163,49165,49167,49175-49176,49400,49999-50003,50006,"
    "50300,50389,50500,50636,50800,51103,51493,52673,52822,52848,52869,54045,54328,55055-55056,555"
    "55,55600,56737-56738,57294,57797,58080,60020,60443,61532,61900,62078,63331,64623,64680,65000,"
    "65129,65389"
)
NMAP_TOP_TCP_100 = (
    "7,9,13,21-23,25-26,37,53,79-81,88,106,110-111,113,119,135,139,143-144,179,199,389,427,443-445"
    ",465,513-515,543-544,548,554,587,631,646,873,990,993,995,1025-1029,1110,1433,1720,1723,1755,1"
    "900,2000-2001,2049,2121,2717,3000,3128,3306,3389,3986,4899,5000,5009,5051,5060,5101,5190,5357"
    ",5432,5631,5666,5800,5900,6000-6001,6646,7070,8000,8008-8009,8080-8081,8443,8888,9100,9999-10"
    "000,32768,49152-49157"
)
NMAP_TOP_UDP_100 = (
    "7,9,17,19,49,53,67-69,80,88,111,120,123,135-139,158,161-162,177,427,443,445,497,500,514-515,5"
    "18,520,593,623,626,631,996-999,1022-1023,1025-1030,1433-1434,1645-1646,1701,1718-1719,1812-18"
    "13,1900,2000,2048-2049,2222-2223,3283,3456,3703,4444,4500,5000,5060,5353,5632,9200,10000,1718"
    "5,20031,30718,31337,32768-32769,32771,32815,33281,49152-49154,49156,49181-49182,49185-49186,4"
    "9188,49190-49194,49200-49201,65024"
)


def port_list(text: str) -> list[int]:
    ports: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        ports.extend(range(int(low), int(high or low) + 1))
    return ports


# ------------------------------------------------------------------ the fleet -------------

@dataclass(frozen=True)
class Workload:
    id: str
    enforcer: str
    address: str
    mac: str
    interface: str
    user: str
    labels: tuple
    ifindex: int

    @property
    def key(self) -> str:
        """How the labels and the report name a source: enforcer/workload."""
        return f"{self.enforcer}/{self.id}"

    @property
    def role(self) -> str:
        return dict(self.labels).get("role", "")

    @property
    def policy_class(self) -> str:
        """A stable stand-in for the compiler's class name (the prefix's subject)."""
        text = ",".join(f"{k}={v}" for k, v in self.labels)
        return "c" + hashlib.sha1(text.encode()).hexdigest()[:8]


class Fleet:
    def __init__(self, inventory_path: Path):
        doc = json.loads(inventory_path.read_text())
        self.managed: dict[str, Workload] = {}
        self.by_address: dict[str, str] = {}  # address -> workload id (managed or not)
        self.labels_of: dict[str, dict] = {}
        next_ifindex: dict[str, int] = {}
        for w in doc["workloads"]:
            address = w["addresses"][0]
            self.by_address[address] = w["id"]
            self.labels_of[w["id"]] = w.get("labels", {})
            if "enforcer" not in w:
                continue
            enforcer = w["enforcer"]
            next_ifindex[enforcer] = next_ifindex.get(enforcer, 10) + 1
            self.managed[w["id"]] = Workload(
                id=w["id"], enforcer=enforcer, address=address, mac=w["mac"],
                interface=w["attachment"]["interface"], user=w.get("user", ""),
                labels=tuple(sorted(w.get("labels", {}).items())),
                ifindex=next_ifindex[enforcer])

    def __getitem__(self, workload_id: str) -> Workload:
        return self.managed[workload_id]

    def vdis(self, enforcer: str | None = None) -> list[Workload]:
        return [w for w in self.managed.values()
                if w.role == "vdi" and (enforcer is None or w.enforcer == enforcer)]


UPLINK = ("uplink0", 2)
GATEWAY_MAC = "ee:ee:ee:ee:ee:ee"  # the hypervisor's side of every port (routed ports)
DECOYS = ipaddress.ip_network("10.0.0.64/28")
HV_GATEWAY = {"hv1": "10.1.0.254", "hv2": "10.1.1.254"}  # each VDI subnet's gateway on its hypervisor
SUBNET_BROADCAST = {"hv1": "10.1.0.255", "hv2": "10.1.1.255"}


def is_local_delivery(dst: str) -> bool:
    """Broadcast and multicast end in the hypervisor's input hook, not forward."""
    a = ipaddress.ip_address(dst)
    return a.is_multicast or dst == "255.255.255.255" or dst.endswith(".255") or dst in HV_GATEWAY.values()


def dst_mac_of(dst: str) -> str:
    a = ipaddress.ip_address(dst)
    if a.is_multicast:
        b = a.packed
        return "01:00:5e:%02x:%02x:%02x" % (b[1] & 0x7F, b[2], b[3])
    if dst == "255.255.255.255" or dst.endswith(".255"):
        return "ff:ff:ff:ff:ff:ff"
    return GATEWAY_MAC


# ------------------------------------------------------------------ packets and events ----

@dataclass
class Packet:
    t_ns: int
    src: Workload
    dst: str
    proto: int  # 1 icmp, 6 tcp, 17 udp
    dport: int | None = None
    sport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None  # echo: identifier (one per ping process) and sequence
    icmp_seq: int | None = None
    tcp_flags: str | None = None
    ip_len: int = 60
    src_address: str | None = None  # DHCP DISCOVER leaves from 0.0.0.0


PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}
TCP_FLAG_BITS = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32}


def utc_text(t_ns: int) -> str:
    s, rest = divmod(t_ns, NS)
    d = datetime.datetime.fromtimestamp(s, datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % (rest // 1000)


class Enforcer:
    """One hypervisor's logging path: NFLOG sequence numbers, interfaces, the aggregator."""

    def __init__(self, name: str, fleet: Fleet):
        self.name = name
        self.fleet = fleet
        self.seq = 0
        self.open: dict[tuple, dict] = {}  # aggregator windows by key, insertion = open order
        self.out: list[tuple[int, int, dict]] = []  # (time_ns, order, event)
        self.order = 0

    def reason_of(self, p: Packet) -> str:
        if ipaddress.ip_address(p.dst) in DECOYS:
            return "decoy"
        dst_id = self.fleet.by_address.get(p.dst)
        if p.src.role == "vdi" and dst_id and self.fleet.labels_of.get(dst_id, {}).get("role") == "vdi":
            return "deny"  # the explicit rule no-vdi-to-vdi
        return "default"

    def emit(self, t_ns: int, event: dict) -> None:
        self.order += 1
        self.out.append((t_ns, self.order, event))

    def close_windows(self, now_ns: int) -> None:
        while self.open:
            key, window = next(iter(self.open.items()))
            if now_ns - window["opened"] < REPEAT_WINDOW_NS:
                break
            del self.open[key]
            if window["count"]:
                self.emit(window["opened"] + REPEAT_WINDOW_NS, self.summary(window))

    def summary(self, window: dict) -> dict:
        j = dict(window["first"])
        for key in ("seq", "seq_global", "sport", "icmp_id", "icmp_seq", "tcp_flags", "tcp_flags_raw", "ip_len",
                    "mark", "notes", "time", "time_ns", "time_source"):
            j.pop(key, None)
        j["type"] = "drop_summary"
        j["count"] = window["count"]
        j["total"] = window["count"] + 1
        j["time_unix_ms"] = window["last"] // 1_000_000
        j["first_seen_ns"] = window["first"]["time_ns"]
        j["first_seen"] = utc_text(window["first"]["time_ns"])
        j["last_seen_ns"] = window["last"]
        j["last_seen"] = utc_text(window["last"])
        j["window_ms"] = REPEAT_WINDOW_NS // 1_000_000
        j["closed_by"] = "window"
        j["enforcer"] = self.name
        return j

    def add(self, p: Packet) -> None:
        self.close_windows(p.t_ns)
        self.seq += 1
        reason = self.reason_of(p)
        local = is_local_delivery(p.dst)
        dst_id = self.fleet.by_address.get(p.dst)
        dst_local = self.fleet.managed.get(dst_id) if dst_id else None
        if local:
            hook, outdev = "input", None
        elif dst_local is not None and dst_local.enforcer == self.name:
            hook, outdev = "forward", (dst_local.interface, dst_local.ifindex)
        else:
            hook, outdev = "forward", UPLINK
        subject = p.src.policy_class
        e = {"type": "drop", "count": 1, "time_ns": p.t_ns, "time_unix_ms": p.t_ns // 1_000_000,
             "time": utc_text(p.t_ns), "time_source": "kernel", "group": LOG_GROUP,
             "seq": self.seq, "seq_global": self.seq, "hook": hook,
             "prefix": f"bh:enf:out:{reason}:{subject}", "mode": "enforce", "direction": "out",
             "reason": reason, "subject": subject,
             "indev_ifindex": p.src.ifindex, "indev": p.src.interface}
        if outdev:
            e["outdev_ifindex"] = outdev[1]
            e["outdev"] = outdev[0]
        e["src_mac"] = p.src.mac
        e["dst_mac"] = dst_mac_of(p.dst)
        e["family"] = 4
        e["src"] = p.src_address or p.src.address
        e["dst"] = p.dst
        e["proto"] = p.proto
        e["proto_name"] = PROTO_NAMES[p.proto]
        if p.sport is not None:
            e["sport"] = p.sport
        if p.dport is not None:
            e["dport"] = p.dport
        if p.icmp_type is not None:
            e["icmp_type"] = p.icmp_type
            e["icmp_code"] = p.icmp_code or 0
        if p.icmp_id is not None:
            e["icmp_id"] = p.icmp_id
            e["icmp_seq"] = p.icmp_seq
        if p.tcp_flags:
            e["tcp_flags"] = p.tcp_flags
            e["tcp_flags_raw"] = sum(TCP_FLAG_BITS[f] for f in p.tcp_flags.split(","))
        e["ip_len"] = p.ip_len
        e["workload"] = p.src.id
        e["would_drop"] = False
        e["policy_generation"] = POLICY_GENERATION
        e["enforcer"] = self.name  # added by the controller when it stores the event
        target = (p.proto, p.dport) if p.proto != 1 else (p.proto, (p.icmp_type, p.icmp_code))
        key = (p.src.id, p.src.interface, outdev, e["src"], p.dst, target, reason)
        window = self.open.get(key)
        if window is not None:
            # A new source port within the window is a new connection attempt, emitted at once
            # (up to MAX_ATTEMPTS_PER_WINDOW of them, as the enforcer's aggregator does).
            attempt = p.sport or p.icmp_id  # an ICMP echo's identifier stands for the port
            first = window["first"].get("sport") or window["first"].get("icmp_id")
            if attempt and attempt != first and attempt not in window["ports"] \
                    and len(window["ports"]) < MAX_ATTEMPTS_PER_WINDOW:
                window["ports"].append(attempt)
                self.emit(p.t_ns, e)
                return
            window["count"] += 1
            window["last"] = p.t_ns
            return
        self.emit(p.t_ns, e)
        self.open[key] = {"opened": p.t_ns, "first": e, "count": 0, "last": p.t_ns, "ports": []}

    def finish(self) -> None:
        for window in self.open.values():
            if window["count"]:
                self.emit(window["opened"] + REPEAT_WINDOW_NS, self.summary(window))
        self.open.clear()


# ------------------------------------------------------------------ scenarios -------------

@dataclass
class Scenario:
    name: str
    kind: str  # "attack" | "benign"
    title: str
    start_ns: int
    rng: random.Random
    packets: list = field(default_factory=list)
    attackers: dict = field(default_factory=dict)  # key -> {"expect": [...], "what": "..."}
    notes: list = field(default_factory=list)
    icmp_ids: int = 0x3000  # the last ICMP echo identifier handed out
    known_weakness: str = ""  # the analyzer is known to fail it (README.md): reported, not gating

    def at(self, seconds: float) -> int:
        return self.start_ns + int(round(seconds * NS))

    def attacker(self, w: Workload, expect: list[str], what: str) -> None:
        self.attackers[w.key] = {"expect": expect, "what": what}

    # ---- packet helpers (t in seconds from the scenario's start) ----

    def ephemeral(self, w: Workload) -> int:
        # Windows' dynamic port range; Linux's (32768-60999) for the servers
        return self.rng.randint(49152, 65535) if w.role in ("vdi", "admin-terminal") else self.rng.randint(32768, 60999)

    def syn(self, t: float, src: Workload, dst: str, dport: int, retransmits=(0.0,), sport=None,
            flags="syn", ip_len=60) -> None:
        """One connection attempt: the SYN and its kernel retransmits (offsets in seconds)."""
        sport = sport or self.ephemeral(src)
        for offset in retransmits:
            # a retransmit fires when its timer expires: never early, a few ms late
            late = self.rng.uniform(0.0005, 0.004) if offset else 0.0
            self.packets.append(Packet(self.at(t + offset + late), src, dst, 6,
                                       dport=dport, sport=sport, tcp_flags=flags, ip_len=ip_len))

    def udp(self, t: float, src: Workload, dst: str, dport: int, sport=None, ip_len=78,
            src_address=None) -> None:
        self.packets.append(Packet(self.at(t), src, dst, 17, dport=dport,
                                   sport=sport or self.ephemeral(src), ip_len=ip_len,
                                   src_address=src_address))

    def icmp(self, t: float, src: Workload, dst: str, icmp_type: int, ip_len=28) -> None:
        # An echo request from a process of its own (`ping -c1`, an implant's raw socket): a new
        # identifier each time (a counter, so the scenario's random draws stay as they were).
        echo = icmp_type == 8
        if echo:
            self.icmp_ids += 1
        self.packets.append(Packet(self.at(t), src, dst, 1, icmp_type=icmp_type, icmp_code=0,
                                   icmp_id=(self.icmp_ids & 0xFFFF) if echo else None,
                                   icmp_seq=1 if echo else None, ip_len=ip_len))


# Connection attempts' SYN retransmits (seconds after the first SYN), by stack:
WINDOWS_SYN = (0.0, 3.0, 9.0)  # InitialRto 3 s, MaxSynRetransmissions 2 (Windows 10/11 defaults)
LINUX_SYN_10S = (0.0, 1.0, 3.0, 7.0)  # RTO 1 s doubling, the caller's connect timeout 10 s
LINUX_SYN_30S = (0.0, 1.0, 3.0, 7.0, 15.0)  # connect timeout 30 s
BEACON_SYN = (0.0, 1.0, 3.0)  # the implant's connect gives up after ~5 s


def nmap_probe_schedule(sc: Scenario, probes: list, start: float, burst: int = 10,
                        period: float = 1.0, retry_after: float = 2.0, tries: int = 2) -> list:
    """nmap against targets that never answer (as measured with --packet-trace): every
    `period` s a burst of `burst` probes, due retransmissions first, then new probes; each
    probe is sent `tries` times. Returns [(t, probe)] in send order."""
    pending = deque(probes)
    retry: deque = deque()
    out = []
    t = start
    while pending or retry:
        sent = 0
        while sent < burst and (retry and retry[0][0] <= t + 1e-9 or pending):
            if retry and retry[0][0] <= t + 1e-9:
                _, probe, k = retry.popleft()
            else:
                probe, k = pending.popleft(), 1
            out.append((t + sent * 0.00002, probe))
            if k < tries:
                retry.append((t + retry_after, probe, k + 1))
            sent += 1
        if sent == 0 and retry:
            t = max(t + period, retry[0][0])
            continue
        t += period + sc.rng.uniform(0.0, 0.012)
    return out


def nmap_tcp_scan(sc: Scenario, src: Workload, hosts: list[str], ports: list[int], start: float,
                  connect: bool = False) -> float:
    """`nmap -Pn -sS` (or -sT) of `ports` on `hosts`: one random port order, each port tried
    on every host of the group in turn, 10 probes a second in all (measured: 5 hosts x 100
    ports x 2 probes took 100 s, as one host's 1000 ports). Returns the end time (s)."""
    order = list(ports)
    sc.rng.shuffle(order)
    probes = [(h, port) for port in order for h in hosts]
    schedule = nmap_probe_schedule(sc, probes, start)
    raw_sport = sc.rng.randint(33000, 65000)
    end = start
    for t, (h, port) in schedule:
        if connect:
            # connect(): the kernel's SYN, retransmitted after 1 s while nmap waits
            sc.syn(t, src, h, port, retransmits=(0.0, 1.0))
        else:
            sc.syn(t, src, h, port, retransmits=(0.0,), sport=raw_sport, ip_len=44)
        end = t
    return end + 2.0


def nmap_ping_sweep(sc: Scenario, src: Workload, hosts: list[str], start: float) -> float:
    """`nmap -sn` from a non-local subnet (root): ICMP echo, TCP SYN 443, TCP ACK 80, ICMP
    timestamp per host, each sent twice."""
    probes = []
    for h in hosts:
        for kind in ("echo", "syn443", "ack80", "timestamp"):
            probes.append((h, kind))
    schedule = nmap_probe_schedule(sc, probes, start)
    sport = sc.rng.randint(33000, 65000)
    for t, (h, kind) in schedule:
        if kind == "echo":
            sc.icmp(t, src, h, 8, ip_len=28)
        elif kind == "timestamp":
            sc.icmp(t, src, h, 13, ip_len=40)
        elif kind == "syn443":
            sc.syn(t, src, h, 443, sport=sport, ip_len=44)
        else:
            sc.syn(t, src, h, 80, sport=sport, flags="ack", ip_len=40)
    return schedule[-1][0] + 2.0


def subnet_hosts(prefix: str, first: int = 1, last: int = 254) -> list[str]:
    return [f"{prefix}.{i}" for i in range(first, last + 1)]


def poisson_times(rng: random.Random, start: float, end: float, mean_gap: float) -> list[float]:
    out = []
    t = start + rng.expovariate(1.0 / mean_gap)
    while t < end:
        out.append(t)
        t += rng.expovariate(1.0 / mean_gap)
    return out


# ---- benign chatter models (also the background of the attack scenarios) ----

def dhcp_netbios_chatter(sc: Scenario, vdis: list[Workload], duration: float,
                         boot_spread: float = 2700.0, browser_share: int = 4) -> None:
    """What a Windows VDI pool broadcasts over a day, all dropped by the default deny of the
    hypervisor's input chain (the DHCP proxy still answers: it reads a packet socket, ahead
    of netfilter):
      - DHCP (udp 68 -> 67): DISCOVER/REQUEST from 0.0.0.0 to 255.255.255.255 at boot; the
        renewal at T1 (unicast to the gateway, retried at half the time left, at least 60 s)
        and the rebinding REQUEST broadcast at T2 (lease 2 h); DHCPINFORM (WPAD) at logon
        and now and then;
      - NetBIOS name service (udp 137 -> subnet broadcast): name registration at boot (3
        names, each sent 3 times 750 ms apart), name queries (3 times 750 ms apart) whenever
        a single-label name misses DNS;
      - NetBIOS datagram (udp 138): browser host announcements from the legacy images
        (every `browser_share`-th VDI): 1, 2, 4, 8, 12 min after boot, then every 12 min."""
    rng = sc.rng
    lease = 7200.0
    for n, w in enumerate(vdis):
        bcast = SUBNET_BROADCAST[w.enforcer]
        gw = HV_GATEWAY[w.enforcer]
        boot = rng.uniform(0, boot_spread)
        # DHCP at boot: DISCOVER, then REQUEST ~ 10-300 ms later (the proxy's OFFER)
        xid_gap = rng.uniform(0.01, 0.3)
        sc.udp(boot, w, "255.255.255.255", 67, sport=68, ip_len=328, src_address="0.0.0.0")
        sc.udp(boot + xid_gap, w, "255.255.255.255", 67, sport=68, ip_len=340, src_address="0.0.0.0")
        lease_start = boot + xid_gap
        while True:
            t1, t2 = lease_start + lease / 2, lease_start + lease * 0.875
            if t1 >= duration:
                break
            t = t1
            while t < t2 and t < duration:  # unicast renewals, dropped on the host's input
                sc.udp(t, w, gw, 67, sport=68, ip_len=340)
                t += max(60.0, (t2 - t) / 2)
            if t2 >= duration:
                break
            sc.udp(t2, w, "255.255.255.255", 67, sport=68, ip_len=340)  # rebinding: answered
            lease_start = t2 + rng.uniform(0.01, 0.2)
        for t in [boot + rng.uniform(30, 90)] + poisson_times(rng, boot, duration, 5400.0):
            if t < duration:
                sc.udp(t, w, "255.255.255.255", 67, sport=68, ip_len=300)  # DHCPINFORM
                sc.udp(t + rng.uniform(0.5, 0.9), w, "255.255.255.255", 67, sport=68, ip_len=300)
        # NetBIOS name registration at boot: 3 names x 3 broadcasts
        for name in range(3):
            t = boot + 2.0 + name * 0.05 + rng.uniform(0, 0.02)
            for k in range(3):
                sc.udp(t + 0.75 * k, w, bcast, 137, sport=137, ip_len=96)
        # name queries for single-label names missing in DNS
        for t in poisson_times(rng, boot + 60, duration, 1200.0):
            for k in range(3):
                sc.udp(t + 0.75 * k, w, bcast, 137, sport=137, ip_len=78)
        if browser_share and n % browser_share == 0:
            t = boot + 60.0
            step = 60.0
            while t < duration:
                sc.udp(t + rng.uniform(-0.05, 0.05), w, bcast, 138, sport=138, ip_len=229)
                t += step
                step = min(step * 2, 720.0)


def discovery_multicast(sc: Scenario, vdis: list[Workload], duration: float,
                        boot_spread: float = 2700.0) -> None:
    """Windows name and device discovery: on a single-label name miss, LLMNR (udp 5355 ->
    224.0.0.252: sent, resent 100 ms later, and once more after 1 s) and mDNS (udp 5353 ->
    224.0.0.251); SSDP M-SEARCH (udp 1900 -> 239.255.255.250, 4 sends within 3 s) when
    Explorer or a media app looks for devices; WS-Discovery Probe (udp 3702 ->
    239.255.255.250, 3 sends with growing random delays) at logon and from Function
    Discovery now and then. Dropped on the hypervisor's input chain."""
    rng = sc.rng
    for w in vdis:
        boot = rng.uniform(0, boot_spread)
        for t in [boot + rng.uniform(20, 60)] + poisson_times(rng, boot, duration, 3600.0):
            for k, delay in enumerate((0.0, rng.uniform(0.05, 0.25), rng.uniform(0.3, 0.8))):
                sc.udp(t + delay + k * 0.2, w, "239.255.255.250", 3702, ip_len=684)
        for t in poisson_times(rng, boot + 60, duration, 900.0):
            sc.udp(t, w, "224.0.0.252", 5355, ip_len=60)
            sc.udp(t + 0.1, w, "224.0.0.252", 5355, ip_len=60)
            sc.udp(t + 1.1, w, "224.0.0.252", 5355, ip_len=60)
            sc.udp(t + 0.002, w, "224.0.0.251", 5353, sport=5353, ip_len=68)
        for t in [boot + rng.uniform(30, 120)] + poisson_times(rng, boot, duration, 2400.0):
            for k in range(4):
                sc.udp(t + k * rng.uniform(0.7, 1.0), w, "239.255.255.250", 1900, ip_len=153)


def background(sc: Scenario, fleet: Fleet, duration: float, count: int = 10,
               exclude: tuple = ()) -> None:
    """A light office background for the attack scenarios: `count` VDIs' broadcast and
    multicast chatter (benign sources the report checks too)."""
    pool = [w for w in fleet.vdis() if w.id not in exclude]
    chosen = sc.rng.sample(pool, count)
    dhcp_netbios_chatter(sc, chosen, duration, boot_spread=min(600.0, duration / 2))
    discovery_multicast(sc, chosen[: count // 2], duration, boot_spread=min(600.0, duration / 2))


# ------------------------------------------------------------------ the suite -------------

SCENARIOS = []


def scenario(name: str, kind: str, title: str, day: int = 0, hour: float = 0.0,
             known_weakness: str = ""):
    def register(build):
        SCENARIOS.append((name, kind, title, day, hour, known_weakness, build))
        return build
    return register


SERVERS = subnet_hosts("10.0.0")


@scenario("nmap-sn-sweep", "attack", "nmap -sn ping sweep of the server /24 from a VDI")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-007"]
    sc.attacker(src, ["host-sweep"], "nmap -sn 10.0.0.0/24")
    end = nmap_ping_sweep(sc, src, SERVERS, start=120.0)
    sc.notes.append(f"256 hosts x 4 probes x 2 in {end - 120:.0f} s (10 probes/s, as measured)")
    background(sc, fleet, end + 600, exclude=(src.id,))


@scenario("nmap-sS-one-host", "attack", "nmap -sS top 1000 ports of one server (after -sn found it 'down', -Pn)")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-012"]
    sc.attacker(src, ["port-scan-vertical"], "nmap -sS 10.0.0.62, then nmap -Pn -sS 10.0.0.62")
    nmap_ping_sweep(sc, src, ["10.0.0.62"], start=100.0)  # host discovery: "host seems down"
    end = nmap_tcp_scan(sc, src, ["10.0.0.62"], port_list(NMAP_TOP_TCP_1000), start=130.0)
    background(sc, fleet, end + 600, exclude=(src.id,))


@scenario("nmap-sT-one-host", "attack", "nmap -sT (connect) top 1000 ports of one server from a VDI")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-104"]
    sc.attacker(src, ["port-scan-vertical"], "nmap -Pn -sT 10.0.0.61")
    end = nmap_tcp_scan(sc, src, ["10.0.0.61"], port_list(NMAP_TOP_TCP_1000), start=60.0, connect=True)
    background(sc, fleet, end + 600, exclude=(src.id,))


@scenario("nmap-sS-five-hosts", "attack", "nmap -sS top 1000 ports of five servers at once")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-015"]
    sc.attacker(src, ["port-scan-box", "port-scan-vertical"], "nmap -Pn -sS 10.0.0.58-62")
    hosts = [f"10.0.0.{i}" for i in range(58, 63)]  # below the decoys (10.0.0.64/28)
    end = nmap_tcp_scan(sc, src, hosts, port_list(NMAP_TOP_TCP_1000), start=60.0)
    background(sc, fleet, end + 600, exclude=(src.id,))


@scenario("nmap-sT-few-hosts-F", "attack", "nmap -sT -F (top 100) on three hosts of the VDI subnet from a VDI")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-118"]
    sc.attacker(src, ["port-scan-vertical", "vdi-file-sharing"], "nmap -Pn -sT -F 10.1.1.3,7,9")  # 3 hosts: no box (>= 4)
    hosts = ["10.1.1.3", "10.1.1.7", "10.1.1.9"]
    end = nmap_tcp_scan(sc, src, hosts, port_list(NMAP_TOP_TCP_100), start=60.0, connect=True)
    background(sc, fleet, end + 600, exclude=(src.id,))


@scenario("slow-vertical-T1", "attack", "nmap -sS -T1 -F: one probe every 15 s for 50 min on one server")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-020"]
    sc.attacker(src, ["slow-scan"], "nmap -Pn -sS -T1 -F 10.0.0.61")
    ports = port_list(NMAP_TOP_TCP_100)
    sc.rng.shuffle(ports)
    t = 60.0
    sport = sc.rng.randint(33000, 65000)
    for port in ports + ports:  # -T1 is serial: each unanswered port probed again, 15 s apart
        sc.syn(t, src, "10.0.0.61", port, sport=sport, ip_len=44)
        t += 15.0 + sc.rng.uniform(0, 0.01)
    sc.notes.append(f"{2 * len(ports)} probes over {(t - 60) / 60:.0f} min")
    background(sc, fleet, t + 300, exclude=(src.id,))


@scenario("slow-sweep-445", "attack", "slow SMB sweep from a VDI: one host every 15 s (-T1 -p445) over 10.0.0.0/25")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-108"]
    sc.attacker(src, ["lateral-movement", "slow-scan"], "nmap -Pn -sS -T1 -p445 10.0.0.0/25")
    hosts = subnet_hosts("10.0.0", 1, 126)
    hosts = [h for h in hosts if h != "10.0.0.30"]  # fs-01 answers on 445: not a drop
    sc.rng.shuffle(hosts)
    t = 60.0
    for h in hosts + hosts:
        sc.syn(t, src, h, 445, ip_len=44)
        t += 15.0
    background(sc, fleet, t + 300, exclude=(src.id,))


@scenario("slow-sweep-web-server", "attack", "compromised web server sweeps tcp/8080 over the /24, one probe every 15 s")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["web-01"]
    sc.attacker(src, ["slow-scan"], "nmap -Pn -sS -T1 -p8080 10.0.0.0/24 from web-01 (non-user source)")
    hosts = [h for h in SERVERS if h != src.address]
    sc.rng.shuffle(hosts)
    t = 60.0
    for h in hosts[:150]:
        sc.syn(t, src, h, 8080, ip_len=44)
        sc.syn(t + 15.0 * 150, src, h, 8080, ip_len=44)  # the second round, as -T1 does
        t += 15.0
    background(sc, fleet, 60 + 15.0 * 300 + 300)


@scenario("smb-worm-fanout", "attack", "SMB worm: five infected VDIs, one after another, try 445/139 on their /24 and random addresses")
def _(sc: Scenario, fleet: Fleet) -> None:
    infected = [fleet[i] for i in ("vdi-003", "vdi-009", "vdi-021", "vdi-105", "vdi-117")]
    starts = [60.0, 105.0, 160.0, 230.0, 320.0]
    for w, start in zip(infected, starts):
        sc.attacker(w, ["lateral-movement", "vdi-file-sharing", "host-sweep"],
                    "worm: tcp/445 and tcp/139 to its /24, then random addresses")
        prefix = w.address.rsplit(".", 1)[0]
        local = [h for h in subnet_hosts(prefix) if h != w.address]
        t = start
        for h in local:  # the LAN pass: ~8 new hosts a second
            sc.syn(t, w, h, 445, retransmits=(0.0, 3.0))
            sc.syn(t + 0.01, w, h, 139, retransmits=(0.0, 3.0))
            t += sc.rng.uniform(0.08, 0.17)
        for _ in range(200):  # then random Internet addresses, slower
            h = "%d.%d.%d.%d" % (sc.rng.choice([23, 45, 62, 81, 91, 103, 151, 176, 185, 212]),
                                 sc.rng.randint(0, 255), sc.rng.randint(0, 255), sc.rng.randint(1, 254))
            sc.syn(t, w, h, 445, retransmits=(0.0, 3.0))
            t += sc.rng.uniform(0.2, 0.6)
    background(sc, fleet, 1500.0, exclude=tuple(w.id for w in infected))


@scenario("decoy-touch", "attack", "one packet to a decoy address")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-025"]
    sc.attacker(src, ["decoy"], "one SYN to 10.0.0.66 tcp/22")
    sc.syn(300.0, src, "10.0.0.66", 22)
    background(sc, fleet, 1200.0, exclude=(src.id,))


@scenario("beacon-30s-jitter", "attack", "C2 beacon every 30 s +-20 % to a blocked external address, 15 min")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-110"]
    sc.attacker(src, ["beaconing"], "HTTPS beacon to 203.0.113.50, sleep 30 s, jitter +-20 %")
    t = 60.0
    while t < 60.0 + 15 * 60:
        sc.syn(t, src, "203.0.113.50", 443, retransmits=BEACON_SYN)
        t += 30.0 * sc.rng.uniform(0.8, 1.2)
    background(sc, fleet, 1500.0, exclude=(src.id,))


@scenario("beacon-5min-jitter", "attack", "C2 beacon every 5 min +-20 % over 2 h (slower implant)")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-027"]
    sc.attacker(src, ["beaconing"], "HTTPS beacon to 198.51.100.77, sleep 300 s, jitter +-20 %")
    t = 60.0
    while t < 60.0 + 2 * 3600:
        sc.syn(t, src, "198.51.100.77", 443, retransmits=BEACON_SYN)
        t += 300.0 * sc.rng.uniform(0.8, 1.2)
    background(sc, fleet, 2 * 3600 + 600.0, exclude=(src.id,))


@scenario("beacon-10s-jitter", "attack", "C2 beacon every 10 s +-20 % to a blocked external address, 10 min")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-029"]
    sc.attacker(src, ["beaconing"], "HTTPS beacon to 203.0.113.80, sleep 10 s, jitter +-20 % (an operator's interactive sleep)")
    t = 60.0
    while t < 60.0 + 10 * 60:
        sc.syn(t, src, "203.0.113.80", 443, retransmits=BEACON_SYN)
        t += 10.0 * sc.rng.uniform(0.8, 1.2)
    background(sc, fleet, 1200.0, exclude=(src.id,))


@scenario("patient-smb-recon-server", "attack", "an operator on a compromised server tries tcp/445 on one host every ~2.5 min for 2.5 h")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["web-01"]
    sc.attacker(src, ["lateral-movement", "slow-scan"], "manual SMB recon, one host every 130-170 s")
    hosts = [h for h in SERVERS if ipaddress.ip_address(h) not in DECOYS and h not in (src.address, "10.0.0.30")]
    sc.rng.shuffle(hosts)
    t = 60.0
    for h in hosts[:60]:
        sc.syn(t, src, h, 445, retransmits=LINUX_SYN_10S)
        t += sc.rng.uniform(130.0, 170.0)
    background(sc, fleet, t + 300)


# The beacon matrix: per protocol and period, one VDI per jitter (uniform +-J around the
# period, from one attempt's start to the next). TCP: a SYN and the kernel's retransmits at
# 1 s and 3 s from one source port, a new port per attempt (a new connect); UDP: a new socket,
# hence port, per datagram; ICMP: one echo request per attempt (no port). The run lasts the
# periods the analyzer needs (16 under 15 s, 8 above) and a margin.
BEACON_JITTERS = (0.0, 0.1, 0.2, 0.3)
BEACON_MATRIX = (
    ("tcp", 2.0), ("tcp", 5.0), ("tcp", 10.0), ("tcp", 30.0), ("tcp", 300.0), ("tcp", 3600.0),
    ("udp", 2.0), ("udp", 30.0), ("icmp", 2.0), ("icmp", 30.0), ("icmp", 300.0),
)
# Destinations nobody manages (TEST-NET-3), one per beacon so every series stands alone.
BEACON_VDIS = ("vdi-004", "vdi-011", "vdi-102", "vdi-113")  # one per jitter


def period_text(period: float) -> str:
    return f"{period / 3600:g}h" if period >= 3600 else f"{period / 60:g}min" if period >= 60 else f"{period:g}s"


def beacon_matrix_scenario(protocol: str, period: float):
    name = f"beacon-{protocol}-{period_text(period)}"

    @scenario(name, "attack", f"C2 beacons over {protocol} every {period_text(period)}, jitter 0, 10, 20 and 30 %")
    def _(sc: Scenario, fleet: Fleet) -> None:
        # Judged from 8 intervals at 15 s or more, 16 below; +-30 % jitter needs ~12 (the
        # analyzer README's envelope): 20 periods leave room to measure the time to detection.
        duration = period * 20 + 60.0
        for k, jitter in enumerate(BEACON_JITTERS):
            src = fleet[BEACON_VDIS[k]]
            dst = f"203.0.113.{100 + k}"
            sc.attacker(src, ["beaconing"], f"{protocol} beacon to {dst} every {period_text(period)} +-{jitter:.0%}")
            sc.attackers[src.key]["beacon"] = {"protocol": protocol, "period_s": period, "jitter": jitter}
            t = 60.0 + sc.rng.uniform(0.0, period)
            while t < 60.0 + duration:
                if protocol == "tcp":
                    sc.syn(t, src, dst, 443, retransmits=BEACON_SYN)
                elif protocol == "udp":
                    sc.udp(t, src, dst, 53, ip_len=74)
                else:
                    sc.icmp(t, src, dst, 8, ip_len=84)
                t += period * sc.rng.uniform(1.0 - jitter, 1.0 + jitter)
        background(sc, fleet, duration + 120.0, exclude=tuple(fleet[v].id for v in BEACON_VDIS))


for _protocol, _period in BEACON_MATRIX:
    beacon_matrix_scenario(_protocol, _period)


@scenario("vuln-scanner-after-expiry", "attack",
          "the scanner scans again the next day, after its exemption expired (control: must be detected)",
          day=1, hour=1.0)
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["scn-01"]
    sc.attacker(src, ["port-scan-box", "port-scan-vertical", "host-sweep"],
                "Nessus SYN scan after the exemption's expiry (2026-11-23T20:00Z)")
    vuln_scan(sc, src, [f"10.0.0.{i}" for i in (60, 61, 62, 80, 81)], start=60.0)


def vuln_scan(sc: Scenario, src: Workload, hosts: list[str], start: float, udp: bool = True) -> float:
    """A vulnerability scanner's discovery and port scan: ICMP echo and TCP pings (22, 80,
    139, 443, 445, 3389), then a SYN scan of the top 1000 TCP ports (5 hosts at a time,
    ~200 probes a second per host, each unanswered probe retried once), then the top 100
    UDP ports."""
    t = start
    for h in hosts:
        sc.icmp(t, src, h, 8)
        for port in (22, 80, 139, 443, 445, 3389):
            sc.syn(t + 0.001, src, h, port, retransmits=(0.0, 1.0), ip_len=44)
        t += 0.05
    t += 5.0
    ports = port_list(NMAP_TOP_TCP_1000)
    for group in range(0, len(hosts), 5):
        batch = hosts[group:group + 5]
        end = t
        for h in batch:
            order = list(ports)
            sc.rng.shuffle(order)
            for i, port in enumerate(order):
                pt = t + i * 0.005
                sc.syn(pt, src, h, port, retransmits=(0.0, 1.5), ip_len=44)
                end = max(end, pt + 1.5)
        t = end + 2.0
    if udp:
        uports = port_list(NMAP_TOP_UDP_100)
        for h in hosts:
            for i, port in enumerate(uports):
                sc.udp(t + i * 0.05, src, h, port, ip_len=60)
                sc.udp(t + i * 0.05 + 1.0, src, h, port, ip_len=60)
            t += len(uports) * 0.05 + 1.0
    return t


# ---- benign ----

@scenario("backup-hourly-retries", "benign", "misconfigured backup job: hourly, 3 tries 60 s apart, to a closed port, for 24 h")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["app-01"]
    for hour in range(24):
        t = hour * 3600.0 + 17 * 60 + sc.rng.uniform(0.05, 0.6)  # cron 17 * * * *
        for attempt in range(3):
            sc.syn(t + attempt * 60.0, src, "10.0.0.40", 9102, retransmits=LINUX_SYN_30S)
    sc.notes.append("bacula-fd pointed at 9102 (director) instead of 9103; Linux SYN retransmits 1, 3, 7, 15 s")


@scenario("backup-hourly-single", "benign", "cron @hourly port check to a closed port, one attempt an hour, for 24 h")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["app-01"]
    for hour in range(24):
        t = hour * 3600.0 + sc.rng.uniform(0.02, 0.9)  # cron start latency
        sc.syn(t, src, "10.0.0.40", 873, retransmits=LINUX_SYN_10S)
    sc.notes.append("`nc -z -w 10 bk-01 873` from cron every hour: the most periodic benign traffic there is")


@scenario("dhcp-netbios-chatter", "benign", "DHCP and NetBIOS broadcasts from 60 VDIs over 8 h")
def _(sc: Scenario, fleet: Fleet) -> None:
    dhcp_netbios_chatter(sc, fleet.vdis(), 8 * 3600.0)


@scenario("windows-discovery-multicast", "benign", "LLMNR, mDNS, SSDP and WS-Discovery multicast from 60 VDIs over 8 h")
def _(sc: Scenario, fleet: Fleet) -> None:
    discovery_multicast(sc, fleet.vdis(), 8 * 3600.0)


@scenario("admin-rdp-denied-once", "benign", "the admin's legitimate RDP to a server the policy forgot, denied once")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["adm-01"]
    sc.syn(600.0, src, "10.0.0.62", 3389, retransmits=WINDOWS_SYN)
    background(sc, fleet, 1800.0)


@scenario("denied-share-retry", "benign", "a user retries a denied intranet share by hand, 4 times in 5 min")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-014"]  # sales: fs-02 is the dev pool's
    for t in (300.0, 330.0, 395.0, 560.0):
        # Explorer: SMB on 445 and NetBIOS session on 139 at once, then the WebDAV redirector
        sc.syn(t, src, "10.0.0.31", 445, retransmits=WINDOWS_SYN)
        sc.syn(t + 0.002, src, "10.0.0.31", 139, retransmits=WINDOWS_SYN)
        sc.syn(t + 12.0, src, "10.0.0.31", 80, retransmits=WINDOWS_SYN)
    background(sc, fleet, 1800.0, exclude=(src.id,))


@scenario("printer-denied", "benign", "five sales VDIs print to a printer the policy forgot (RAW 9100 + SNMP status)")
def _(sc: Scenario, fleet: Fleet) -> None:
    users = [fleet[f"vdi-{i:03d}"] for i in (2, 4, 6, 8, 10)]
    for w in users:
        for t in poisson_times(sc.rng, 0, 8 * 3600.0, 5400.0):
            for attempt in range(3):  # the port monitor's retries while the job waits
                sc.udp(t + attempt * 30.0, w, "10.0.0.50", 161, ip_len=82)
                sc.udp(t + attempt * 30.0 + 1.0, w, "10.0.0.50", 161, ip_len=82)
                sc.syn(t + attempt * 30.0 + 0.05, w, "10.0.0.50", 9100, retransmits=WINDOWS_SYN)
    background(sc, fleet, 8 * 3600.0, exclude=tuple(w.id for w in users))


@scenario("monitoring-check-5min", "benign", "a health check every 5 min to a port the policy forgot, for 8 h")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["app-01"]
    t = 0.0
    while t < 8 * 3600:
        sc.syn(t + sc.rng.uniform(0.0, 0.3), src, "10.0.0.62", 8080, retransmits=LINUX_SYN_10S)
        t += 300.0
    sc.notes.append("the monitoring agent's HTTP check of app-02:8080, every 300 s (systemd timer)")


@scenario("retry-backoff", "benign", "three VDIs' applications retry a blocked service with exponential back-off, each connect a new port")
def _(sc: Scenario, fleet: Fleet) -> None:
    # 1, 2, 4, ... s after each failed connect, 12 tries, then the client gives up (a client
    # library's defaults); the user reopens the application every 2 h. (A loop that keeps
    # retrying at a fixed cap forever is periodic, and reported as beaconing: README.)
    for n, (w, dst, port) in enumerate(((fleet["vdi-005"], "10.0.0.80", 8443),
                                        (fleet["vdi-105"], "198.51.100.20", 443),
                                        (fleet["vdi-124"], "10.0.0.81", 5432))):
        start = 120.0 + 600.0 * n
        while start < 8 * 3600:
            t, delay = start, 1.0
            for _ in range(12):
                sc.syn(t, w, dst, port, retransmits=LINUX_SYN_10S if w.role != "vdi" else WINDOWS_SYN)
                t += 10.0 + delay * sc.rng.uniform(0.8, 1.2)  # after the connect timeout
                delay *= 2
            start += 2 * 3600
    background(sc, fleet, 8 * 3600.0, exclude=("vdi-005", "vdi-105", "vdi-124"))


@scenario("ntp-dns-retries", "benign", "NTP polls and DNS retries toward blocked servers from VDIs and a server")
def _(sc: Scenario, fleet: Fleet) -> None:
    # Toward a blocked pool server: iburst (4 requests 2 s apart), then a poll every 64 s
    # doubling to 1024 s while unreachable. ntpd sends from port 123; chronyd from a new
    # ephemeral port per request (its default).
    ntp_clients = ((fleet["app-01"], 123), (fleet["vdi-009"], None))
    for w, fixed in ntp_clients:
        t, poll = 30.0, 64.0
        for k in range(4):
            sc.udp(t + 2.0 * k, w, "203.0.113.123", 123, sport=fixed, ip_len=76)
        t += 6.0
        while t < 8 * 3600:
            t += poll * sc.rng.uniform(0.95, 1.05)
            sc.udp(t, w, "203.0.113.123", 123, sport=fixed, ip_len=76)
            poll = min(poll * 2, 1024.0)
    # A desktop's DNS client (the resolver built into its OS) asking a blocked DNS server: each query tried twice 5 s
    # apart from its own port, queries when the user does something (Poisson, ~every 40 s).
    w = fleet["vdi-019"]
    for t in poisson_times(sc.rng, 0, 8 * 3600.0, 40.0):
        port = sc.ephemeral(w)
        sc.udp(t, w, "198.51.100.53", 53, sport=port, ip_len=70)
        sc.udp(t + 5.0, w, "198.51.100.53", 53, sport=port, ip_len=70)
    background(sc, fleet, 8 * 3600.0, exclude=("vdi-009", "vdi-019"))


@scenario("logon-drive-mapping", "benign", "a logon script maps two drives on two file servers the user's pool may not reach")
def _(sc: Scenario, fleet: Fleet) -> None:
    src = fleet["vdi-014"]
    t = 420.0  # logon
    for k, server in enumerate(("10.0.0.31", "10.0.0.32")):  # net use P: \\fs-02\projects, S: \\fs-03\archive
        sc.syn(t + k * 0.4, src, server, 445, retransmits=WINDOWS_SYN)
        sc.syn(t + k * 0.4 + 0.002, src, server, 139, retransmits=WINDOWS_SYN)
    background(sc, fleet, 1800.0, exclude=(src.id,))


@scenario("vuln-scanner-exempted", "benign", "two sanctioned scanners (segment and named exemptions) scan servers and VDIs")
def _(sc: Scenario, fleet: Fleet) -> None:
    t = vuln_scan(sc, fleet["scn-01"], [f"10.0.0.{i}" for i in (10, 31, 32, 40, 50, 60, 61, 62, 80, 81)], start=60.0)
    vdi_hosts = [w.address for w in fleet.vdis("hv1")[:5] + fleet.vdis("hv2")[:5]]
    vuln_scan(sc, fleet["scn-02"], vdi_hosts, start=300.0, udp=False)
    sc.notes.append("exempted until 2026-11-23T20:00Z by analyzer.json")


def build_all(fleet: Fleet, seed: int, only: str | None) -> list[Scenario]:
    built = []
    for name, kind, title, day, hour, known_weakness, build in SCENARIOS:
        if only and only not in name:
            continue
        rng = random.Random(seed * 1_000_003 + zlib.crc32(name.encode()))
        start = T0 + (day * 86400 + int(hour * 3600)) * NS
        sc = Scenario(name=name, kind=kind, title=title, start_ns=start, rng=rng,
                      known_weakness=known_weakness)
        build(sc, fleet)
        built.append(sc)
    return built


def write(sc: Scenario, fleet: Fleet, out: Path) -> dict:
    enforcers = {name: Enforcer(name, fleet) for name in ("hv1", "hv2")}
    sc.packets.sort(key=lambda p: (p.t_ns, p.src.id))
    for p in sc.packets:
        enforcers[p.src.enforcer].add(p)
    events = []
    for e in enforcers.values():
        e.finish()
        events.extend((t, e.name, order, ev) for t, order, ev in e.out)
    events.sort(key=lambda x: (x[0], x[1], x[2]))
    path = out / f"{sc.name}.jsonl"
    with path.open("w") as f:
        for _, _, _, ev in events:
            f.write(json.dumps(ev, separators=(",", ":")) + "\n")
    sources = sorted({p.src.key for p in sc.packets})
    labels = {
        "scenario": sc.name, "kind": sc.kind, "title": sc.title, "notes": sc.notes,
        "start": utc_text(sc.start_ns),
        "duration_s": round((sc.packets[-1].t_ns - sc.packets[0].t_ns) / NS, 1) if sc.packets else 0,
        "packets": len(sc.packets),
        "events": sum(1 for *_, ev in events if ev["type"] == "drop"),
        "summaries": sum(1 for *_, ev in events if ev["type"] == "drop_summary"),
        "known_weakness": sc.known_weakness,
        "attackers": sc.attackers,
        "benign": [s for s in sources if s not in sc.attackers],
        "file": path.name,
    }
    for key, attacker in sc.attackers.items():
        times = [p.t_ns for p in sc.packets if p.src.key == key]
        if times:
            attacker["first_ns"] = min(times)
            attacker["packets"] = len(times)
    missing = [k for k in sc.attackers if k not in sources]
    if missing:
        raise SystemExit(f"{sc.name}: attacker without a packet: {missing}")
    (out / f"{sc.name}.labels.json").write_text(json.dumps(labels, indent=2) + "\n")
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for the scenario files")
    parser.add_argument("--seed", type=int, default=5, help="the suite's seed (default 5)")
    parser.add_argument("--inventory", type=Path, default=HERE / "inventory.json")
    parser.add_argument("-k", dest="only", help="only scenarios whose name contains this")
    args = parser.parse_args(argv)
    fleet = Fleet(args.inventory)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {"seed": args.seed, "scenarios": []}
    for sc in build_all(fleet, args.seed, args.only):
        labels = write(sc, fleet, args.out)
        manifest["scenarios"].append(labels)
        print(f"{sc.name:28} {sc.kind:7} {labels['packets']:7} packets {labels['events']:7} drop events "
              f"{labels['summaries']:5} summaries {labels['duration_s']:9.0f} s")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
