#!/usr/bin/env python3
"""SIEM export end to end against a real receiver: Debian's rsyslogd (issue 16, acceptance 1 and 5).

The test starts rsyslogd itself, in the foreground, with a private work directory and no
system sockets: two TLS listeners (imtcp with the ossl driver; a throwaway CA and server
certificate made with the openssl CLI) and one UDP listener (imudp), each writing the raw
received messages (%rawmsg%, byte for byte) to its own file. A small TCP listener in this
script keeps the raw bytes of a plain TCP destination, so the octet counting (RFC 6587) is
checked on the wire too (rsyslog removes it).

It then starts the real bulkhead-controller with these destinations:

  soc-leef  tls  LEEF 2.0  drops, allowed flows, incidents, quarantines, audit, checkpoints
  soc-cef   tls  CEF       drops, incidents, quarantines, audit, checkpoints
  soc-ocsf  udp  OCSF      drops, incidents, quarantines, audit, checkpoints
  raw-cef   tcp  CEF       drops, quarantines, audit            (raw capture in this script)
  bad-ca    tls  CEF       drops, audit   trusts another CA      -> failing, untrusted
  nowhere   tcp  LEEF      drops          nobody listens         -> failing, unreachable

puts records through it as an enforcer and an operator would (enrollment, event uploads,
policy activation, an incident raised by the analyzer from a scan of drops with its automatic
quarantine, acknowledge and resolve, manual quarantines and releases, all audited), waits until
every good destination has nothing pending, stops rsyslogd, stores more records, checks that
/api/v1/evidence names the failure with records pending, restarts rsyslogd on the same ports
and waits again. Then every received message is parsed by the independent parsers in
siem_parse.py and compared field by field with the stored records read through the API
(/api/v1/events, /api/v1/incidents, /api/v1/quarantines/{workload}, /api/v1/audit) and with
the controller's checkpoint file: every record exactly once per subscribing destination (by
its stable id; re-sent duplicates are counted and must be byte-identical), in order per
stream. Finally, controller configurations with malformed destinations must be refused at
start with the JSON pointer named.

Each check prints PASS or FAIL; the last line is "N passed, N failed". Exit 1 when a check
failed, 77 (ctest: skipped) when rsyslogd or its ossl driver is missing. Usage:
  test_siem_export.py --controller build/bin/bulkhead-controller [--source-dir REPO] [--keep]
"""

import argparse
import calendar
import copy
import datetime
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lab_harness"))
sys.path.insert(0, str(HERE))
import harness  # noqa: E402
from harness import check, figure, log, poll, report, section  # noqa: E402
from siem_parse import (ParseError, get_path, parse_cef, parse_leef, parse_ocsf, parse_rfc5424,  # noqa: E402
                        split_octet_counted)

TOKENS = {"admin": "admin-token-siem-0123456789abcdef", "soc": "soc-token-siem-0123456789abcdef"}
CONTROLLER_NAME = "ctl-siemtest"
FACILITY = 20  # local4, the default (docs/siem.md)
SD_ID = "bulkhead@32473"
RSYSLOGD = "/usr/sbin/rsyslogd"
OSSL_DRIVER = "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so"
# A value that needs every escape the formats have: CEF's '\\', '=', '|' (header) and line
# breaks, LEEF's tab and line breaks, JSON's quotes, and non-ASCII UTF-8.
AWKWARD = 'contain: a=b c\\d|e "quoted"\ttab\nline\r\u00e9 \u65e5\u672c ] end'


# ------------------------------------------------------------------------ helpers --

def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ms_of(text):
    """'2026-12-07T16:00:00.123Z' -> ms since the epoch."""
    if isinstance(text, int):
        return text
    base, frac = text.rstrip("Z").split(".") if "." in text else (text.rstrip("Z"), "0")
    t = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(t.timetuple()) * 1000 + int((frac + "000")[:3])


def rfc3339_ms(ms):
    t = datetime.datetime.fromtimestamp(ms // 1000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (ms % 1000)


class Client:
    def __init__(self, port):
        self.port = port

    def request(self, method, path, body=None, token=None, query=None, timeout=30):
        if query:
            path += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Accept": "application/json"}
        if data or method in ("POST", "PUT"):
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = "Bearer " + token
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data or None, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            return resp.status, parsed, raw
        finally:
            conn.close()

    def get(self, path, token=TOKENS["soc"], **kw):
        return self.request("GET", path, token=token, **kw)

    def post(self, path, body=None, token=TOKENS["admin"], **kw):
        return self.request("POST", path, body=body, token=token, **kw)


# ---------------------------------------------------------------------- receivers --

class Pki:
    """A throwaway CA with a server certificate for 127.0.0.1, and a second CA that signed
    nothing the receiver presents (for the untrusted destination)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = self.dir / "ca.pem", self.dir / "ca.key"
        self.other_ca, self.other_ca_key = self.dir / "other-ca.pem", self.dir / "other-ca.key"
        self.cert, self.key = self.dir / "server.pem", self.dir / "server.key"

    def _openssl(self, *args):
        r = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("openssl " + " ".join(map(str, args)) + ": " + r.stderr)

    def make(self):
        for cert, key, cn in ((self.ca, self.ca_key, "siemtest CA"), (self.other_ca, self.other_ca_key, "siemtest other CA")):
            self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                          "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={cn}",
                          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        csr = self.dir / "server.csr"
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", self.key,
                      "-out", csr, "-subj", "/CN=localhost")
        ext = self.dir / "server.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                       "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
                      "-out", self.cert, "-days", "2", "-extfile", ext)
        for k in (self.key, self.ca_key, self.other_ca_key):
            k.chmod(0o600)


class Rsyslog:
    """Debian's rsyslogd in the foreground: TLS listeners `tls` {name: port}, one UDP
    listener, each writing %rawmsg% and a newline to <dir>/<name>.log."""

    def __init__(self, directory, pki, tls_ports, udp_port, binary=RSYSLOGD):
        self.dir = Path(directory)
        self.work = self.dir / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.tls_ports = tls_ports
        self.udp_port = udp_port
        self.binary = binary
        self.conf = self.dir / "rsyslog.conf"
        self.pidfile = self.dir / "rsyslogd.pid"
        self.process = None
        self.probes = 0

    def file(self, name):
        return self.dir / f"{name}.log"

    def write_conf(self):
        lines = [
            f'global(workDirectory="{self.work}" maxMessageSize="64k"',
            '       parser.escapeControlCharactersOnReceive="off"',
            f'       defaultNetstreamDriverCAFile="{self.pki.ca}"',
            f'       defaultNetstreamDriverCertFile="{self.pki.cert}"',
            f'       defaultNetstreamDriverKeyFile="{self.pki.key}")',
            # No imuxsock, no imklog: nothing of the system's logging is touched.
            'module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")',
            'module(load="imudp")',
            'template(name="raw" type="string" string="%rawmsg%\\n")',
        ]
        for name, port in list(self.tls_ports.items()) + [("udp", self.udp_port)]:
            lines.append(f'ruleset(name="{name}") {{ action(type="omfile" file="{self.file(name)}" template="raw") }}')
        for name, port in self.tls_ports.items():
            lines.append(f'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="{name}")')
        lines.append(f'input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="udp" rcvbufSize="16m")')
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self):
        self.write_conf()
        check_conf = subprocess.run([self.binary, "-N1", "-f", str(self.conf)], capture_output=True, text=True, timeout=30)
        if check_conf.returncode != 0:
            raise RuntimeError("rsyslogd -N1 refused the configuration:\n" + check_conf.stdout + check_conf.stderr)
        log_file = open(self.dir / "rsyslogd.out", "ab")
        self.process = subprocess.Popen([self.binary, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                                        stdout=log_file, stderr=log_file)
        log_file.close()

        def tcp_up():
            if self.process.poll() is not None:
                return "exited"
            for port in self.tls_ports.values():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    return False
            return True
        if poll(tcp_up, 20, interval=0.05) is not True:
            raise RuntimeError("rsyslogd did not listen; output:\n" + (self.dir / "rsyslogd.out").read_text(errors="replace"))
        # UDP loses silently: send probes until one is written, so no record goes to a port
        # nobody reads yet. Probe lines carry MSGID "probe" and are skipped by the comparison.
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.probes += 1
        marker = f"probe-{self.probes}".encode()

        def udp_up():
            sock.sendto(b"<14>1 - - - - probe - " + marker, ("127.0.0.1", self.udp_port))
            path = self.file("udp")
            return path.exists() and marker in path.read_bytes()
        ok = poll(udp_up, 20, interval=0.1)
        sock.close()
        if not ok:
            raise RuntimeError("rsyslogd's UDP listener wrote nothing")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def messages(self, name):
        path = self.file(name)
        if not path.exists():
            return []
        data = path.read_bytes()
        return [line for line in data.split(b"\n") if line]


class RawTcpReceiver:
    """A plain TCP syslog receiver that keeps each connection's bytes as they arrived."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = []  # bytearray per accepted connection, in order
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            buf = bytearray()
            with self.lock:
                self.connections.append(buf)
            threading.Thread(target=self._read, args=(conn, buf), daemon=True).start()

    def _read(self, conn, buf):
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self.lock:
                    buf += data

    def frames(self):
        with self.lock:
            buffers = [bytes(b) for b in self.connections]
        out = []
        for b in buffers:
            out.extend(split_octet_counted(b))
        return out

    def close(self):
        self.stopping = True
        self.sock.close()


# --------------------------------------------------------------------- controller --

class Controller:
    def __init__(self, binary, workdir):
        self.binary = binary
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tokens = self.dir / "tokens.json"
        self.log_file = self.dir / "controller.log"
        self.checkpoints = self.dir / "checkpoints.jsonl"
        self.process = None
        self.port = None

    def config(self, destinations, port):
        return {"data_dir": str(self.dir / "data"), "plain_listen": f"127.0.0.1:{port}",
                "bootstrap_tokens": str(self.tokens), "heartbeat_interval_ms": 500,
                "controller_name": CONTROLLER_NAME, "evidence_checkpoint_interval_ms": 1000,
                "evidence_checkpoint_file": str(self.checkpoints), "siem": {"destinations": destinations}}

    def write_tokens(self):
        self.tokens.write_text(json.dumps({"tokens": [
            {"name": role + "-user", "role": role, "token": token} for role, token in TOKENS.items()]}))
        self.tokens.chmod(0o600)

    def start(self, destinations):
        self.write_tokens()
        for _ in range(5):
            self.port = free_port()
            conf = self.dir / "controller.json"
            conf.write_text(json.dumps(self.config(destinations, self.port), indent=1))
            out = open(self.log_file, "ab")
            self.process = subprocess.Popen([self.binary, "--config", str(conf)], stdout=out, stderr=out)
            out.close()
            client = Client(self.port)

            def up():
                if self.process.poll() is not None:
                    return "exited"
                try:
                    return client.get("/api/v1/health", token=None)[0] == 200
                except OSError:
                    return False
            state = poll(up, 20, interval=0.05)
            if state is True:
                return client
            self.stop()
            if state != "exited":
                break
        raise RuntimeError("bulkhead-controller did not come up; log:\n" + self.log_file.read_text(errors="replace")[-4000:])

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


# --------------------------------------------------------------- expected fields --
# What docs/siem.md says each record becomes, built from the API's view of the record.

def sev_of_event(e):
    if e["type"] in ("allowed_flow", "allowed_flows"):
        return 1
    return {"decoy": 7, "quarantine": 6}.get(e.get("reason", ""), 4)


def sev_of_incident(i):
    return {"critical": 10, "high": 8, "medium": 5}.get(i["severity"], 3)


def syslog_severity(sev10):
    return 2 if sev10 >= 9 else 3 if sev10 >= 7 else 4 if sev10 >= 5 else 5 if sev10 >= 3 else 6


def ocsf_severity(sev10):
    return 5 if sev10 >= 9 else 4 if sev10 >= 7 else 3 if sev10 >= 5 else 2 if sev10 >= 3 else 1


# The members of an uploaded event the store keeps only in its document (not as columns):
# sport, src_mac and physindev/indev (controller/domain/events.hpp). Their checks are apart so
# that a known bug in them (see README.md) leaves every other field checked.
FROM_DOCUMENT_ONLY = ("CEF spt:", "CEF smac:", "CEF deviceInboundInterface:", "LEEF srcPort:", "LEEF srcMAC:",
                      "LEEF inInterface:", "OCSF src_endpoint.port:", "OCSF src_endpoint.mac:",
                      "OCSF src_endpoint.interface_name:")

OCSF_SEVERITY_NAMES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}


class Expected:
    """One stored record as every format should carry it: stable id, syslog time and
    MSGID, 0-10 severity, CEF header and extension, LEEF attributes, OCSF members."""

    def __init__(self, stream, stable_id, at, msgid, sev, name):
        self.stream, self.id, self.at, self.msgid, self.sev, self.name = stream, stable_id, at, msgid, sev, name
        self.kv = []      # (cef key or None, leef key or None, value) in the documented order
        self.ocsf = {}    # dotted path -> value (lists and objects compared whole)
        self.time = at    # the record's own time (rt, devTime, OCSF time)
        self.category = stream

    def add(self, cef, leef, value):
        if value is None or value == "":
            return  # an unknown field is left out, not written empty
        self.kv.append((cef, leef, str(value)))

    def custom(self, cef_key, label_key, label, leef, value):
        if value is None or value == "":
            return
        self.kv.append((label_key, None, label))
        self.kv.append((cef_key, leef, str(value)))

    def cef_ext(self):
        ext = {"rt": str(self.time), "cat": self.category, "externalId": self.id}
        for cef, _, v in self.kv:
            if cef:
                ext[cef] = v
        return ext

    def leef_attrs(self):
        clean = lambda v: v.replace("\t", " ").replace("\n", " ").replace("\r", " ")  # noqa: E731
        attrs = {"devTime": rfc3339_ms(self.time), "devTimeFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSX",
                 "cat": self.category, "sev": str(max(1, self.sev)), "externalId": self.id}
        for _, leef, v in self.kv:
            if leef:
                attrs[leef] = clean(v)
        return attrs


def ocsf_common(x, class_uid, class_name, category_uid, category_name, activity_id, activity_name):
    sid = ocsf_severity(x.sev)
    x.ocsf.update({"class_uid": class_uid, "class_name": class_name, "category_uid": category_uid,
                   "category_name": category_name, "activity_id": activity_id, "activity_name": activity_name,
                   "type_uid": class_uid * 100 + activity_id, "type_name": f"{class_name}: {activity_name}",
                   "time": x.time, "severity_id": sid, "severity": OCSF_SEVERITY_NAMES[sid],
                   "metadata.version": "1.1.0", "metadata.uid": x.id, "metadata.product.name": "Bulkhead Controller",
                   "metadata.product.vendor_name": "Bulkhead"})


def expected_event(e):
    allowed = e["type"] in ("allowed_flow", "allowed_flows")
    would_drop = bool(e.get("would_drop", False))
    received = ms_of(e["received_at"])
    x = Expected("drops", f"drops/{e['id']}", received, "allowed_flow" if allowed else "drop", sev_of_event(e),
                 "Connection allowed" if allowed else "Connection blocked")
    x.category = "allowed_flow" if allowed else "drop"
    x.time = e["time_ns"] // 1_000_000 if e.get("time_ns") else received
    src, dst = e.get("src", ""), e.get("dst", "")
    sport = e.get("sport", e.get("icmp_id"))
    x.add("c6a2" if ":" in src else "src", "src", src)
    x.add("c6a3" if ":" in dst else "dst", "dst", dst)
    x.add("spt", "srcPort", sport)
    x.add("dpt", "dstPort", e.get("dport"))
    x.add("proto", "proto", e.get("proto_name", "").upper())
    x.add("act", "action", "allowed" if allowed else "would-block" if would_drop else "blocked")
    x.add("reason", "reason", e.get("reason", ""))
    x.add("cnt", "eventCount", e.get("count", 1))
    direction = e.get("direction", "")
    if direction in ("in", "out"):
        x.add("deviceDirection", None, "0" if direction == "in" else "1")
        x.add(None, "direction", "inbound" if direction == "in" else "outbound")
    x.add("deviceExternalId", "enforcer", e["enforcer"])
    x.custom("cs1", "cs1Label", "workload", "workload", e.get("workload", ""))
    x.add("smac", "srcMAC", e.get("src_mac", ""))
    x.add("deviceInboundInterface", "inInterface", e.get("physindev") or e.get("indev", ""))
    x.custom("cn1", "cn1Label", "enforcerSequence", "enforcerSequence", e["enforcer_seq"])
    refused = not allowed and not would_drop
    ocsf_common(x, 4001, "Network Activity", 4, "Network Activity", 5 if refused else 6, "Refuse" if refused else "Traffic")
    source, destination = {"ip": src}, {"ip": dst}
    if sport is not None:
        source["port"] = sport
    if e.get("dport") is not None:
        destination["port"] = e["dport"]
    if e.get("src_mac"):
        source["mac"] = e["src_mac"]
    if e.get("physindev") or e.get("indev"):
        source["interface_name"] = e.get("physindev") or e.get("indev")
    if e.get("workload"):
        (destination if direction == "in" else source)["name"] = e["workload"]
    connection = {"protocol_name": e.get("proto_name", "")}
    if direction in ("in", "out"):
        connection["direction_id"] = 1 if direction == "in" else 2
    bulkhead = {"reason": e.get("reason", ""), "enforcer_seq": e["enforcer_seq"], "event_type": e["type"]}
    if would_drop:
        bulkhead["would_drop"] = True
    x.ocsf.update({"metadata.logged_time": received, "action_id": 2 if refused else 1,
                   "disposition_id": 2 if refused else 1, "count": e.get("count", 1), "dst_endpoint": destination, "device.hostname": e["enforcer"], "device.type_id": 9,
                   "unmapped.bulkhead": bulkhead})
    for k, v in connection.items():
        x.ocsf["connection_info." + k] = v
    for k, v in source.items():
        x.ocsf["src_endpoint." + k] = v
    x.src_endpoint_keys = set(source)
    if refused:
        x.ocsf["metadata.profiles"] = ["security_control"]
    return x


def expected_incident(i, version):
    state = i["state"]
    x = Expected("incidents", f"incidents/{i['id']}/v{version}", ms_of(i["updated_at"]), "incident." + state,
                 sev_of_incident(i), i["title"] or "Incident")
    x.category = "incident"
    user = i.get("details", {}).get("user") if isinstance(i.get("details"), dict) else None
    x.add("start", "openedTime", ms_of(i["opened_at"]))
    x.custom("cs1", "cs1Label", "workload", "workload", i["source_workload"])
    x.custom("cs2", "cs2Label", "incidentState", "state", state)
    x.custom("cs3", "cs3Label", "incidentSeverity", "incidentSeverity", i["severity"])
    x.add("suser", "usrName", user or "")
    x.add("cnt", "eventCount", i["event_count"])
    x.add("msg", "description", i["explanation"])
    x.custom("cn1", "cn1Label", "incidentVersion", "incidentVersion", version)
    x.custom("cn2", "cn2Label", "incidentId", "incidentId", i["id"])
    activity = (3, "Close") if state == "resolved" else (1, "Create") if version == 1 else (2, "Update")
    ocsf_common(x, 2004, "Detection Finding", 2, "Findings", *activity)
    bulkhead = {"incident_id": i["id"], "version": version, "severity": i["severity"], "state": state,
                "details": i.get("details")}
    if user:
        bulkhead["user"] = user
    x.ocsf.update({"status_id": {"resolved": 4, "acknowledged": 2}.get(state, 1), "message": i["explanation"],
                   "count": i["event_count"], "finding_info": {"uid": f"incidents/{i['id']}", "title": i["title"],
                   "desc": i["explanation"], "created_time": ms_of(i["opened_at"]), "modified_time": ms_of(i["updated_at"])},
                   "resources": [{"type": "workload", "name": i["source_workload"]}], "unmapped.bulkhead": bulkhead})
    return x


def expected_quarantine(q, released):
    """q: workload, reason, actor, automatic, incident, created_at (ms), released_at (ms),
    released_by, id (the quarantine id, from the received records)."""
    at = q["released_at"] if released else q["created_at"]
    x = Expected("quarantines", f"quarantines/{q['id']}" + ("/released" if released else ""), at,
                 "quarantine.released" if released else "quarantine.created", 3 if released else 8,
                 "Workload released from quarantine" if released else "Workload quarantined")
    x.category = "quarantine"
    x.add("act", "action", "release" if released else "quarantine")
    x.custom("cs1", "cs1Label", "workload", "workload", q["workload"])
    x.add("reason", "reason", q["reason"])
    x.add("suser", "usrName", q["released_by"] if released else q["actor"])
    x.custom("cs4", "cs4Label", "quarantineKind", "quarantineKind", "automatic" if q["automatic"] else "manual")
    if released:
        x.add("start", "quarantinedTime", q["created_at"])
    x.custom("cn2", "cn2Label", "incidentId", "incidentId", q["incident"] if q["incident"] is not None else "")
    x.custom("cn3", "cn3Label", "quarantineId", "quarantineId", q["id"])
    ocsf_common(x, 6003, "API Activity", 6, "Application Activity", *((4, "Delete") if released else (1, "Create")))
    bulkhead = {"quarantine_id": q["id"], "automatic": q["automatic"], "reason": q["reason"], "created_at": q["created_at"]}
    if q["incident"] is not None:
        bulkhead["incident_id"] = q["incident"]
    x.ocsf.update({"actor.user.name": q["released_by"] if released else q["actor"],
                   "api.operation": "quarantine.release" if released else "quarantine.create",
                   "resources": [{"type": "workload", "name": q["workload"]}], "status_id": 1, "message": q["reason"],
                   "unmapped.bulkhead": bulkhead})
    return x


def audit_activity(action):
    verb = action.rsplit(".", 1)[-1]
    if verb in ("create", "add", "import", "register"):
        return 1, "Create"
    if verb in ("read", "get", "list", "export"):
        return 2, "Read"
    if verb in ("delete", "remove", "release", "revoke"):
        return 4, "Delete"
    if verb in ("update", "activate", "set", "edit", "acknowledge", "resolve", "enable", "disable", "rename"):
        return 3, "Update"
    return 99, "Other"


def expected_audit(a):
    x = Expected("audit", f"audit/{a['id']}", ms_of(a["at"]), "audit." + a["action"], 2, "Audit: " + a["action"])
    x.add("suser", "usrName", a["actor"])
    x.add("spriv", "role", a["role"])
    x.add("act", "action", a["action"])
    x.custom("cs5", "cs5Label", "auditTarget", "resource", a["target"])
    x.custom("cn3", "cn3Label", "auditId", "auditId", a["id"])
    ocsf_common(x, 6003, "API Activity", 6, "Application Activity", *audit_activity(a["action"]))
    resource = {"uid": a["target"]}
    if "/" in a["target"]:
        resource["type"] = a["target"].split("/", 1)[0]
    x.ocsf.update({"actor.user.name": a["actor"], "api.operation": a["action"], "resources": [resource], "status_id": 1,
                   "unmapped.bulkhead": {"audit_id": a["id"], "role": a["role"], "before": a["before"], "after": a["after"]}})
    return x


def expected_checkpoint(line):
    c = json.loads(line)
    x = Expected("checkpoint", f"checkpoint/{c['at_ms']}", c["at_ms"], "checkpoint", 1, "Evidence checkpoint")
    x.custom("cs5", "cs5Label", "controller", "controller", c["controller"])
    x.custom("cs6", "cs6Label", "checkpoint", "checkpoint", line)
    ocsf_common(x, 0, "Base Event", 0, "Uncategorized", 99, "Other")
    x.ocsf.update({"message": "Evidence checkpoint of " + c["controller"], "unmapped.bulkhead_checkpoint": c})
    return x


# ------------------------------------------------------------------- comparison --

def compare_message(dest, fmt, raw, x, version, pid):
    """Field-by-field differences between one received message and the expected record;
    [] when they agree."""
    problems = []

    def want(what, got, expected):
        if got != expected:
            problems.append(f"{what}: got {got!r}, want {expected!r}")
    m = parse_rfc5424(raw)
    want("PRI", m["pri"], FACILITY * 8 + syslog_severity(x.sev))
    want("VERSION", m["version"], 1)
    want("TIMESTAMP", m["timestamp"], rfc3339_ms(x.at))
    want("HOSTNAME", m["hostname"], CONTROLLER_NAME)
    want("APP-NAME", m["app_name"], "bulkhead-controller")
    want("PROCID", m["procid"], str(pid))
    want("MSGID", m["msgid"], x.msgid[:32])
    want("STRUCTURED-DATA", m["sd"], {SD_ID: {"id": x.id}})
    body = m["msg"].decode("utf-8")
    if fmt == "cef":
        c = parse_cef(body)
        want("CEF header", [c[k] for k in ("version", "vendor", "product", "product_version", "signature", "name", "severity")],
             ["0", "Bulkhead", "Bulkhead Controller", version, x.msgid, x.name.replace("\n", " ").replace("\r", " "), str(x.sev)])
        exp = x.cef_ext()
        for k in sorted(set(exp) | set(c["ext"])):
            want(f"CEF {k}", c["ext"].get(k), exp.get(k))
        for label_key in [k for k in c["ext"] if k.endswith("Label")]:
            if label_key[:-5] not in c["ext"]:
                problems.append(f"CEF {label_key} without its value {label_key[:-5]}")
    elif fmt == "leef":
        lf = parse_leef(body)
        want("LEEF header", [lf["vendor"], lf["product"], lf["product_version"], lf["event_id"], lf["delimiter"]],
             ["Bulkhead", "Bulkhead Controller", version, x.msgid, "\t"])
        exp = x.leef_attrs()
        for k in sorted(set(exp) | set(lf["attrs"])):
            want(f"LEEF {k}", lf["attrs"].get(k), exp.get(k))
    else:
        o = parse_ocsf(body)
        want("OCSF metadata.product.version", get_path(o, "metadata.product.version") if "metadata" in o else None, version)
        if hasattr(x, "src_endpoint_keys"):
            extra = set(o.get("src_endpoint", {})) - x.src_endpoint_keys
            if extra:
                problems.append(f"OCSF src_endpoint: unexpected members {sorted(extra)}")
        for path, value in x.ocsf.items():
            try:
                got = get_path(o, path)
            except (KeyError, IndexError, TypeError):
                got = "<missing>"
            want("OCSF " + path, got, value)
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--controller", required=True)
    ap.add_argument("--source-dir", default=str(HERE.parent.parent))
    ap.add_argument("--rsyslogd", default=RSYSLOGD)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--known-bug", action="append", default=[],
                    help="a reported, not yet fixed bug: its checks are XFAIL (see README.md)")
    args = ap.parse_args()
    harness.known_bugs.update(args.known_bug)
    for need, why in ((args.rsyslogd, "rsyslogd"), (OSSL_DRIVER, "rsyslog's ossl driver (rsyslog-openssl)")):
        if not os.path.exists(need):
            print(f"SKIP: {why} not installed ({need})")
            return 77
    if not shutil.which("openssl"):
        print("SKIP: the openssl CLI is not installed")
        return 77
    tmp = Path(tempfile.mkdtemp(prefix="bulkhead-siem-"))
    log(f"working in {tmp}")
    run = Run(args, tmp)
    try:
        run.main()
    except Exception:  # a broken step is a failed check with its traceback, and cleanup still runs
        import traceback
        check("the run completed without an exception", False, traceback.format_exc())
    finally:
        run.cleanup()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return report()


class Run:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.src = Path(args.source_dir)
        self.rsyslog = None
        self.raw = None
        self.controller = None
        self.seq = {"hv1": 0, "hv2": 0}
        self.enforcer_tokens = {}
        self.outage_window = (0, 0)

    def cleanup(self):
        for stop in (lambda: self.controller and self.controller.stop(), lambda: self.rsyslog and self.rsyslog.stop(),
                     lambda: self.raw and self.raw.close()):
            try:
                stop()
            except Exception as e:  # keep cleaning up; say what failed
                log(f"cleanup: {e}")

    # --- the run ----------------------------------------------------------------------
    def main(self):
        self.version = subprocess.run([self.args.controller, "--version"], capture_output=True, text=True,
                                      timeout=30).stdout.split()[-1]
        self.bad_config()
        section("receivers")
        pki = Pki(self.tmp / "pki")
        pki.make()
        self.pki = pki
        tls_ports = {"tls-leef": free_port(), "tls-cef": free_port()}
        self.rsyslog = Rsyslog(self.tmp / "rsyslog", pki, tls_ports, free_port(socket.SOCK_DGRAM), self.args.rsyslogd)
        self.rsyslog.start()
        check("rsyslogd: TLS listeners and a UDP listener up", True)
        self.raw = RawTcpReceiver()
        nowhere = free_port()
        addr = lambda port: f"127.0.0.1:{port}"  # noqa: E731
        everything = ["drops", "incidents", "quarantines", "audit", "checkpoints"]
        self.destinations = [
            {"name": "soc-leef", "transport": "tls", "address": addr(tls_ports["tls-leef"]), "format": "leef",
             "records": ["drops", "allowed_flows", "incidents", "quarantines", "audit", "checkpoints"],
             "ca_file": str(pki.ca), "rate_limit_per_second": 100000},
            {"name": "soc-cef", "transport": "tls", "address": addr(tls_ports["tls-cef"]), "format": "cef",
             "records": everything, "ca_file": str(pki.ca), "server_name": "localhost", "rate_limit_per_second": 100000},
            {"name": "soc-ocsf", "transport": "udp", "address": addr(self.rsyslog.udp_port), "format": "ocsf",
             "records": everything, "rate_limit_per_second": 100000},
            {"name": "raw-cef", "transport": "tcp", "address": addr(self.raw.port), "format": "cef",
             "records": ["drops", "quarantines", "audit"], "rate_limit_per_second": 100000},
            {"name": "bad-ca", "transport": "tls", "address": addr(tls_ports["tls-leef"]), "format": "cef",
             "records": ["drops", "audit"], "ca_file": str(pki.other_ca)},
            {"name": "nowhere", "transport": "tcp", "address": addr(nowhere), "format": "leef", "records": ["drops"]},
        ]
        self.good = ["soc-leef", "soc-cef", "soc-ocsf", "raw-cef"]
        self.receiver_of = {"soc-leef": ("rsyslog", "tls-leef"), "soc-cef": ("rsyslog", "tls-cef"),
                            "soc-ocsf": ("rsyslog", "udp"), "raw-cef": ("raw", None)}
        self.controller = Controller(self.args.controller, self.tmp / "controller")
        self.c = self.controller.start(self.destinations)
        self.pid = self.controller.process.pid
        check("controller: started with six SIEM destinations", True)
        status = self.evidence()
        check("evidence: lists the six destinations", sorted(d["name"] for d in status) ==
              sorted(d["name"] for d in self.destinations), status)

        section("records, receivers up")
        self.put_records()
        self.wait_delivered("records stored with the receivers up")
        self.bad_receivers()

        section("receiver stopped mid-run")
        self.outage()

        section("field by field")
        self.compare()

    # --- API plumbing --------------------------------------------------------------------
    def evidence(self):
        status, body, raw = self.c.get("/api/v1/evidence")
        return body["siem"] if status == 200 else []

    def by_name(self):
        return {d["name"]: d for d in self.evidence()}

    def wait_delivered(self, what, seconds=90):
        def done():
            s = self.by_name()
            return all(s[n]["pending"] == 0 and s[n]["state"] == "delivering" for n in self.good) and s
        s = poll(done, seconds, f"every good destination delivering with 0 pending after: {what}", interval=0.2)
        if not s:
            log(json.dumps({n: {k: v for k, v in d.items() if k != "sources"} for n, d in self.by_name().items()}, indent=1))
        return s

    def upload(self, enforcer, events, sent_ns=None):
        batch = []
        for e in events:
            self.seq[enforcer] += 1
            batch.append({"seq": self.seq[enforcer], "event": e})
        body = {"events": batch}
        if sent_ns:
            body["sent_ns"] = sent_ns
        status, answer, _ = self.c.post(f"/api/v1/enforcers/{enforcer}/events", body, token=self.enforcer_tokens[enforcer])
        return status == 200 and answer.get("accepted") == len(events), answer

    def drop(self, i, base_ns):
        """Drop i of a realistic mix: IPv4 and IPv6, in and out, every reason, sport, MAC,
        interface, monitor mode, an allowed-flow summary every 7th."""
        # Workloads outside the inventory, each toward one target (per family), so that the
        # bulk does not cross the analyzer's thresholds: the incidents come from the scan below.
        k = i % 3
        wl = ["bulk-a", "bulk-b", "bulk-c"][k]
        v6 = i % 5 == 0
        e = {"type": "drop", "count": 1 + i % 4, "time_ns": base_ns + i * 1000, "direction": "out" if i % 4 else "in",
             "reason": ["default", "deny", "decoy", "quarantine"][i % 4], "workload": wl,
             "src": f"2001:db8:1::{1 + k}" if v6 else f"192.0.2.{1 + k}",
             "dst": "2001:db8:2::7" if v6 else "198.51.100.7", "proto_name": ["tcp", "udp", "icmp"][k],
             "family": 6 if v6 else 4, "mode": "enforce"}
        if e["proto_name"] != "icmp":
            e["dport"] = [22, 445][k]
            e["sport"] = 40000 + i
        if i % 2:
            e["src_mac"] = "52:54:00:12:34:%02x" % (i % 256)
            e["physindev"] = f"vnet{i % 3}"
        if i % 11 == 0:
            e["mode"] = "monitor"
            e["would_drop"] = True
        if i % 7 == 0:
            e = {"type": "allowed_flow", "count": 3 + i, "time_ns": base_ns + i * 1000, "direction": "out", "reason": "allow",
                 "workload": wl, "src": f"192.0.2.{1 + k}", "dst": "198.51.100.7", "proto_name": "tcp", "dport": 445}
        if i == 13:
            e["workload"] = "odd " + AWKWARD  # every escape, in a drop's workload
        return e

    # --- phase 1 ---------------------------------------------------------------------------
    def put_records(self):
        inventory = json.loads((self.src / "examples/vdi-pool/inventory.json").read_text())
        policy = json.loads((self.src / "examples/vdi-pool/policy.json").read_text())
        self.workloads = [w["id"] for w in inventory["workloads"]]
        s, b, _ = self.c.request("PUT", "/api/v1/inventory", inventory, token=TOKENS["admin"])
        check("inventory PUT -> 200 (audited)", s == 200, b)
        policy["response"] = {"incident": {"distinct_targets": 3, "window_seconds": 60, "severity": "high"},
                              "auto_quarantine": {"mode": "on", "min_severity": "high"}}
        s, b, _ = self.c.post("/api/v1/policies", policy)
        check("policy upload -> 201 (audited)", s == 201, b)
        s, b2, _ = self.c.post(f"/api/v1/policies/{b['id']}/activate") if s == 201 else (0, None, None)
        check("policy activate -> 200 (audited)", s == 200, b2)
        for enforcer in ("hv1", "hv2"):
            s, b, _ = self.c.post(f"/api/v1/enforcers/{enforcer}/enrollment-token")
            s2, b2, _ = self.c.post("/api/v1/enforcers/enroll", {"enforcer": enforcer, "token": b["token"]}, token=None)
            check(f"{enforcer}: enrolled as an enforcer does", s == 201 and s2 == 201, (b, b2))
            self.enforcer_tokens[enforcer] = b2["credential"]
        base = time.time_ns()
        ok = all(self.upload("hv1", [self.drop(i, base) for i in range(k, k + 200)])[0] for k in (0, 200, 400))
        check("hv1: 600 events (drops of every reason, IPv4 and IPv6, allowed flows) uploaded", ok)

        # A scan: drops from vdi-101 to three distinct targets cross the policy's incident
        # threshold; the analyzer opens a high incident and quarantines vdi-101 automatically.
        t = time.time_ns()
        scan = [{"type": "drop", "count": 1, "time_ns": t + k, "direction": "out", "reason": "deny", "workload": "vdi-101",
                 "src": "10.1.1.1", "dst": dst, "proto_name": "tcp", "dport": port, "sport": 50000 + k, "family": 4,
                 "mode": "enforce"} for k, (dst, port) in enumerate([("10.1.9.2", 8080), ("10.1.9.3", 8443), ("10.1.9.4", 9000)])]
        ok, answer = self.upload("hv2", scan, sent_ns=time.time_ns())
        check("hv2: a scan of three distinct targets uploaded", ok, answer)

        def incident():
            s, b, _ = self.c.get("/api/v1/incidents", query={"workload": "vdi-101"})
            return b["incidents"][0] if s == 200 and b["incidents"] else None
        inc = poll(incident, 20, "the analyzer opens an incident for vdi-101")
        self.incident = inc["id"] if inc else None
        q = poll(lambda: self.c.get("/api/v1/quarantines/vdi-101")[0] == 200, 20, "vdi-101 quarantined automatically")
        check("incident: open, high, vdi-101 quarantined automatically", inc and inc["state"] == "open" and q, inc)
        if self.incident:
            s1 = self.c.post(f"/api/v1/incidents/{self.incident}/acknowledge", token=TOKENS["soc"])[0]
            s2 = self.c.post(f"/api/v1/incidents/{self.incident}/notes", {"text": "seen " + AWKWARD}, token=TOKENS["soc"])[0]
            s3 = self.c.post(f"/api/v1/incidents/{self.incident}/resolve")[0]
            check("incident: acknowledged, noted, resolved (new versions, audited)", (s1, s2, s3) == (200, 201, 200), (s1, s2, s3))
        s = self.c.request("DELETE", "/api/v1/quarantines/vdi-101", token=TOKENS["admin"])[0]
        check("vdi-101: released", s == 200, s)
        # Manual quarantines: one with every awkward character in its reason, released; one
        # naming the incident, left in force.
        s, b, _ = self.c.post("/api/v1/quarantines", {"workload": "vdi-002", "reason": AWKWARD})
        check("vdi-002: quarantined by hand with an awkward reason", s in (200, 201), b)
        s = self.c.request("DELETE", "/api/v1/quarantines/vdi-002", token=TOKENS["soc"])[0]
        check("vdi-002: released by the soc user", s == 200, s)
        body = {"workload": "vdi-003", "reason": "answers the incident"}
        if self.incident:
            body["incident"] = self.incident
        s, b, _ = self.c.post("/api/v1/quarantines", body)
        check("vdi-003: quarantined by hand for the incident", s in (200, 201), b)

    def bad_receivers(self):
        """Acceptance 5: an untrusted TLS receiver and an unreachable one are reported, and
        their records stay pending (never dropped)."""
        s = self.by_name()
        bad, nowhere = s["bad-ca"], s["nowhere"]
        check("bad-ca (receiver's certificate from another CA): failing, last_error_kind untrusted",
              bad["state"] == "failing" and bad["last_error_kind"] == "untrusted" and bad["last_error"], bad)
        check("bad-ca: nothing delivered, records pending, oldest pending age reported",
              bad["delivered"] == 0 and bad["pending"] >= 600 and (bad["oldest_pending_age_ms"] or 0) > 0, bad)
        check("nowhere (nobody listens): failing, last_error_kind unreachable",
              nowhere["state"] == "failing" and nowhere["last_error_kind"] == "unreachable" and nowhere["last_error"], nowhere)
        check("nowhere: nothing delivered, records pending", nowhere["delivered"] == 0 and nowhere["pending"] >= 600, nowhere)
        cursors = {x["source"]: x["delivered_through"] for x in bad["sources"]}
        heads = {x["source"]: x["head"] for x in bad["sources"]}
        check("bad-ca: its cursors did not move past anything (delivered_through < head)",
              all(cursors[k] < heads[k] for k in ("events", "audit")), bad["sources"])
        s, _, raw = self.c.get("/api/v1/metrics")
        text = raw.decode()
        check("metrics: bulkhead_siem_up 0 for bad-ca and nowhere, 1 for soc-cef",
              'bulkhead_siem_up{destination="bad-ca"} 0' in text and 'bulkhead_siem_up{destination="nowhere"} 0' in text
              and 'bulkhead_siem_up{destination="soc-cef"} 1' in text, text[-1500:])
        pending = [line for line in text.splitlines() if line.startswith('bulkhead_siem_pending_records{destination="bad-ca"}')]
        check("metrics: bulkhead_siem_pending_records for bad-ca > 0", pending and int(pending[0].split()[-1]) > 0, pending)

    # --- phase 2 -------------------------------------------------------------------------
    def outage(self):
        before = self.by_name()
        self.rsyslog.stop()
        down_at = time.monotonic()
        outage_start = int(time.time() * 1000)
        check("rsyslogd stopped (SIGTERM, it writes what it accepted)", self.rsyslog.process is None)
        base = time.time_ns()
        ok = all(self.upload("hv1", [self.drop(1000 + i, base) for i in range(k, k + 200)])[0] for k in (0, 200))
        check("while the receiver is down: 400 more events uploaded", ok)
        s1 = self.c.post("/api/v1/quarantines", {"workload": "vdi-102", "reason": "while the SIEM was down"})[0]
        s2 = self.c.request("DELETE", "/api/v1/quarantines/vdi-102", token=TOKENS["admin"])[0]
        check("while the receiver is down: vdi-102 quarantined and released (audited)", s1 in (200, 201) and s2 == 200, (s1, s2))

        def failing():
            s = self.by_name()
            return time.monotonic() - down_at >= 4 and all(
                s[n]["state"] == "failing" and s[n]["pending"] > 0 and s[n]["last_error"] and s[n]["failures"] >= 3
                for n in ("soc-leef", "soc-cef")) and s
        s = poll(failing, 60, "the TLS destinations report failing, records pending, the error named, retried")
        if s:
            for n in ("soc-leef", "soc-cef"):
                d = s[n]
                check(f"{n}: failing with last_error_kind unreachable or closed, pending {d['pending']}",
                      d["last_error_kind"] in ("unreachable", "closed") and d["oldest_pending_age_ms"] is not None, d)
                log(f"  {n}: {d['last_error_kind']}: {d['last_error']}")
                events_before = {x["source"]: x["delivered_through"] for x in before[n]["sources"]}
                events_now = {x["source"]: x["delivered_through"] for x in d["sources"]}
                check(f"{n}: no cursor moved while the receiver was down", events_now == events_before, (events_before, events_now))
            o = s["soc-ocsf"]
            figure("soc-ocsf (UDP) during the outage", f"state {o['state']}, kind {o['last_error_kind'] or '-'}, pending {o['pending']}")
            check("raw-cef (its receiver stayed up): still delivering", s["raw-cef"]["state"] == "delivering", s["raw-cef"])
        self.rsyslog.start()
        # Records stored up to the UDP listener's first probe may still have gone to a closed port.
        self.outage_window = (outage_start, int(time.time() * 1000))
        figure("receiver down for", "%.1f s" % (time.monotonic() - down_at))
        t0 = time.monotonic()
        if self.wait_delivered("rsyslogd restarted on the same ports", seconds=120):
            figure("catch-up after the restart", "%.1f s" % (time.monotonic() - t0))

    # --- comparison ----------------------------------------------------------------------
    def stored(self):
        events = []
        after = 0
        while True:
            s, b, _ = self.c.get("/api/v1/events", query={"order": "asc", "limit": 10000, "after_id": after})
            events += b["events"]
            if "next_after_id" not in b:
                break
            after = b["next_after_id"]
        audit = []
        before = None
        while True:
            q = {"limit": 1000}
            if before:
                q["before_id"] = before
            s, b, _ = self.c.get("/api/v1/audit", token=TOKENS["admin"], query=q)
            if not b["entries"]:
                break
            audit += b["entries"]
            before = min(a["id"] for a in b["entries"])
            if len(b["entries"]) < 1000:
                break
        audit.sort(key=lambda a: a["id"])
        s, b, _ = self.c.get("/api/v1/incidents", query={"limit": 1000})
        incidents = sorted(b["incidents"], key=lambda i: i["id"])
        incidents = [self.c.get(f"/api/v1/incidents/{i['id']}")[1] for i in incidents]
        # Every quarantine as stored: GET /api/v1/quarantines/{workload} shows a quarantined
        # workload's history with exact times (every workload is quarantined at the end of
        # the run for this); whether each was automatic and for which incident is in its
        # quarantine.create audit entry, the n-th of the workload's for its n-th quarantine.
        creates = {}
        for a in audit:
            if a["action"] == "quarantine.create" and a["target"].startswith("workload/"):
                creates.setdefault(a["target"].split("/", 1)[1], []).append(a)
        quarantines = []  # dicts as expected_quarantine takes them, without the id
        for w in self.workloads:
            s, b, _ = self.c.get(f"/api/v1/quarantines/{urllib.parse.quote(w)}")
            if s != 200:
                check(f"quarantines: {w} is quarantined at the end (its history readable)", False, (s, b))
                continue
            history = sorted(b.get("history", []), key=lambda h: ms_of(h["created_at"]))
            audited = creates.get(w, [])
            if len(history) != len(audited):
                check(f"quarantines: {w}: one quarantine.create audit entry per quarantine in its history", False,
                      (history, audited))
                continue
            for h, a in zip(history, audited):
                after = a.get("after") or {}
                quarantines.append({"workload": w, "reason": h["reason"], "actor": h["actor"],
                                    "automatic": bool(after.get("automatic")), "incident": after.get("incident"),
                                    "created_at": ms_of(h["created_at"]),
                                    "released_at": ms_of(h["released_at"]) if h.get("released_at") else None,
                                    "released_by": h.get("released_by", "")})
        return events, audit, incidents, quarantines

    def received(self, name):
        kind, file = self.receiver_of[name]
        raw = self.raw.frames() if kind == "raw" else self.rsyslog.messages(file)
        out = []
        for r in raw:
            try:
                m = parse_rfc5424(r)
            except ParseError as e:
                check(f"{name}: every received message is RFC 5424", False, f"{e}: {r[:200]!r}")
                continue
            if m["msgid"] == "probe":
                continue
            out.append((m["sd"].get(SD_ID, {}).get("id", ""), r))
        return out

    def compare(self):
        # Quarantine every workload not in quarantine, so that every workload's history is
        # readable (stored()); these are records like any other, delivered and compared.
        for w in self.workloads:
            if self.c.get(f"/api/v1/quarantines/{urllib.parse.quote(w)}")[0] == 404:
                s, b, _ = self.c.post("/api/v1/quarantines", {"workload": w, "reason": "end of run: show the history"})
                check(f"end of run: {w} quarantined", s in (200, 201), b)
        self.checkpoints_before = len([x for x in self.controller.checkpoints.read_text().splitlines() if x.strip()])
        self.wait_delivered("the end-of-run quarantines")
        events, audit, incidents, quarantines = self.stored()
        checkpoint_lines = [line for line in self.controller.checkpoints.read_text().splitlines() if line.strip()]
        figure("stored", f"{len(events)} events, {len(audit)} audit entries, {len(incidents)} incidents, "
               f"{len(quarantines)} quarantines, {len(checkpoint_lines)} checkpoints")
        check("the run stored drops, allowed flows, an incident, quarantines with releases and audit entries",
              any(e["type"] == "allowed_flow" for e in events) and incidents and
              any(q["released_at"] for q in quarantines) and audit, (len(events), len(incidents), len(quarantines)))
        subscriptions = {d["name"]: set(d["records"]) for d in self.destinations}
        per_dest = {name: self.received(name) for name in self.good}

        # Quarantine ids are not in the API: they come from the received records (cn3 /
        # quarantineId / unmapped.bulkhead.quarantine_id) and must agree across destinations.
        incident_versions = {}  # destination -> [(incident id, version)] in arrival order
        quarantine_ids = {}     # (workload, created_at ms) -> id, per destination

        for name in self.good:
            fmt = next(d["format"] for d in self.destinations if d["name"] == name)
            msgs = per_dest[name]
            first = {}
            duplicates = 0
            dup_differ = []
            order = []
            for sid, raw in msgs:
                if sid in first:
                    duplicates += 1
                    if first[sid] != raw:
                        dup_differ.append(sid)
                    continue
                first[sid] = raw
                order.append(sid)
            figure(f"{name}: messages received", f"{len(msgs)} ({duplicates} re-sent duplicates)")
            check(f"{name}: re-sent duplicates carry the same stable id and the same bytes", not dup_differ, dup_differ[:5])
            streams = {}
            for sid in order:
                streams.setdefault(sid.split("/", 1)[0], []).append(sid)

            def parsed_body(raw):
                body = parse_rfc5424(raw)["msg"].decode()
                return parse_cef(body)["ext"] if fmt == "cef" else parse_leef(body)["attrs"] if fmt == "leef" else parse_ocsf(body)

            # drops and allowed flows
            wanted = [e for e in events if (e["type"] == "drop" and "drops" in subscriptions[name]) or
                      (e["type"] == "allowed_flow" and "allowed_flows" in subscriptions[name])]
            got = streams.get("drops", [])
            want_ids = [f"drops/{e['id']}" for e in wanted]
            at_of = {f"drops/{e['id']}": ms_of(e["received_at"]) for e in wanted}
            self.sequence(name, f"every stored event it subscribes to arrived exactly once, in order ({len(want_ids)})",
                          got, want_ids, at_of)
            bad, missing_from_document = [], []
            for e in wanted:
                sid = f"drops/{e['id']}"
                if sid in first:
                    p = compare_message(name, fmt, first[sid], expected_event(e), self.version, self.pid)
                    core = [x for x in p if not x.startswith(FROM_DOCUMENT_ONLY)]
                    if core:
                        bad.append((sid, core[:4]))
                    if len(core) < len(p):
                        missing_from_document.append((sid, [x for x in p if x.startswith(FROM_DOCUMENT_ONLY)][:3]))
            check(f"{name}: events field by field ({len(wanted)})", not bad, bad[:3])
            check(f"{name}: events carry the source port, source MAC and interface uploaded with them",
                  not missing_from_document, missing_from_document[:2], bug="siem-event-document-fields")

            # audit
            if "audit" in subscriptions[name]:
                got = streams.get("audit", [])
                want_ids = [f"audit/{a['id']}" for a in audit]
                self.sequence(name, f"every audit entry exactly once, in order ({len(want_ids)})", got, want_ids,
                              {f"audit/{a['id']}": ms_of(a["at"]) for a in audit})
                bad = [(f"audit/{a['id']}", p[:4]) for a in audit if f"audit/{a['id']}" in first
                       for p in [compare_message(name, fmt, first[f"audit/{a['id']}"], expected_audit(a), self.version, self.pid)] if p]
                check(f"{name}: audit entries field by field", not bad, bad[:3])

            # quarantines: created and released records, in the order they happened
            if "quarantines" in subscriptions[name]:
                got = streams.get("quarantines", [])
                ids = {}
                happenings = []
                for q in quarantines:
                    happenings.append((q["created_at"], 0, q, False))
                    if q["released_at"]:
                        happenings.append((q["released_at"], 1, q, True))
                happenings.sort(key=lambda x: (x[0], x[1]))
                # each created record's id, from what arrived (the API does not show it)
                for sid in got:
                    if sid.endswith("/released"):
                        continue
                    body = parsed_body(first[sid])
                    if fmt == "ocsf":
                        key = (body["resources"][0]["name"], body["unmapped"]["bulkhead"]["created_at"])
                    elif fmt == "cef":
                        key = (body.get("cs1"), int(body.get("rt", 0)))
                    else:
                        key = (body.get("workload"), ms_of(body["devTime"]))
                    ids[key] = int(sid.split("/")[1])
                quarantine_ids[name] = ids
                want_ids = []
                bad = []
                for at, _, q, released in happenings:
                    qid = ids.get((q["workload"], q["created_at"]))
                    if qid is None:
                        want_ids.append(f"quarantines/?{q['workload']}@{q['created_at']}")
                        continue
                    sid = f"quarantines/{qid}" + ("/released" if released else "")
                    want_ids.append(sid)
                    if sid in first:
                        p = compare_message(name, fmt, first[sid], expected_quarantine(dict(q, id=qid), released),
                                            self.version, self.pid)
                        if p:
                            bad.append((sid, p[:4]))
                # Changes within one millisecond have no order the API shows: the received order
                # must follow time, and hold the same records.
                at_of = {sid: at for sid, (at, *_rest) in zip(want_ids, happenings)}
                in_time = [at_of.get(sid, 0) for sid in got]
                check(f"{name}: quarantines and releases arrive in the order they happened",
                      in_time == sorted(in_time), list(zip(got, in_time)))
                self.sequence(name, f"every quarantine and release exactly once ({len(want_ids)})",
                              sorted(got, key=lambda sid: (at_of.get(sid, 0), sid)),
                              sorted(want_ids, key=lambda sid: (at_of.get(sid, 0), sid)), at_of)
                check(f"{name}: quarantines field by field (workload, reason with every escape, actor, kind, incident, times)",
                      not bad, bad[:3])

            # incidents: versions 1..n of each, in order; the last equals the API's incident
            if "incidents" in subscriptions[name]:
                got = streams.get("incidents", [])
                pairs = [(int(s.split("/")[1]), int(s.split("/")[2][1:])) for s in got]
                incident_versions[name] = pairs
                ok = True
                for i in incidents:
                    versions = [v for iid, v in pairs if iid == i["id"]]
                    if not versions or versions != sorted(set(versions)):
                        ok = False
                    elif versions != list(range(1, len(versions) + 1)):
                        # UDP may lose a change sent while the receiver was down (see sequence())
                        ok = ok and self.transport(name) == "udp"
                        figure(f"{name}: incident {i['id']} versions lost over UDP",
                               sorted(set(range(1, versions[-1] + 1)) - set(versions)))
                check(f"{name}: every incident arrived as versions 1..n in order ({len(pairs)} changes of {len(incidents)} incidents)",
                      ok and {iid for iid, _ in pairs} == {i["id"] for i in incidents}, pairs)
                bad = []
                for i in incidents:
                    versions = [v for iid, v in pairs if iid == i["id"]]
                    if not versions:
                        continue
                    sid = f"incidents/{i['id']}/v{versions[-1]}"
                    p = compare_message(name, fmt, first[sid], expected_incident(i, versions[-1]), self.version, self.pid)
                    if p:
                        bad.append((sid, p[:4]))
                check(f"{name}: each incident's last version field by field against /api/v1/incidents/{{id}}", not bad, bad[:3])
                if self.incident:
                    states = []
                    for iid, v in pairs:
                        if iid == self.incident:
                            b = parsed_body(first[f"incidents/{iid}/v{v}"])
                            states.append(b.get("cs2") if fmt == "cef" else b.get("state") if fmt == "leef"
                                          else b["unmapped"]["bulkhead"]["state"])
                    dedup = [s for k, s in enumerate(states) if k == 0 or states[k - 1] != s]
                    check(f"{name}: the scan incident went open -> acknowledged -> resolved", dedup == ["open", "acknowledged", "resolved"], states)

            # checkpoints: each one the controller wrote to its file, from the first after the
            # start, in order, each carrying the file's line
            if "checkpoints" in subscriptions[name]:
                got = streams.get("checkpoint", [])
                # All written before the last wait for 0 pending must be there; later ones may be.
                file_ids = [f"checkpoint/{json.loads(line)['at_ms']}" for line in checkpoint_lines]
                want_ids = file_ids[:max(len(got), self.checkpoints_before)]
                check(f"{name}: checkpoints received: at least 3", len(got) >= 3, got)
                if self.transport(name) == "udp":
                    want_ids = [sid for sid in file_ids if sid in set(got) or file_ids.index(sid) < self.checkpoints_before]
                self.sequence(name, f"every checkpoint in the file arrived once, in order ({len(got)}, "
                              f"{self.checkpoints_before} written before the last wait)", got, want_ids,
                              {f"checkpoint/{json.loads(line)['at_ms']}": json.loads(line)["at_ms"] for line in checkpoint_lines})
                bad = []
                for line in checkpoint_lines:
                    x = expected_checkpoint(line)
                    if x.id in first:
                        p = compare_message(name, fmt, first[x.id], x, self.version, self.pid)
                        if p:
                            bad.append((x.id, p[:4]))
                check(f"{name}: checkpoints field by field (the signed JSON line itself)", not bad, bad[:3])
            extra = set(streams) - {"drops", "audit", "quarantines", "incidents", "checkpoint"}
            check(f"{name}: nothing it does not subscribe to", not extra and
                  ("incidents" in subscriptions[name] or "incidents" not in streams) and
                  ("checkpoints" in subscriptions[name] or "checkpoint" not in streams), sorted(streams))
        if len(incident_versions) > 1:
            check("incidents: every destination received the same changes in the same order",
                  len({json.dumps(v) for v in incident_versions.values()}) == 1, incident_versions)
        if len(quarantine_ids) > 1:
            check("quarantines: every destination names each quarantine by the same id",
                  len({json.dumps(sorted(v.items())) for v in quarantine_ids.values()}) == 1, quarantine_ids)

    def transport(self, name):
        return next(d["transport"] for d in self.destinations if d["name"] == name)

    def sequence(self, name, what, got, want_ids, at_of):
        """got must equal want_ids. Over UDP a record sent while the receiver was down can be
        lost without the sender knowing (RFC 5426 has no acknowledgement; the connected
        socket reports the ICMP port-unreachable only on a later send, so a batch of one
        record is lost and the cursor moves on): there, records stored during the outage
        may be missing (counted as a figure), nothing else, and the order must hold."""
        if self.transport(name) != "udp" or got == want_ids:
            return check(f"{name}: {what}", got == want_ids, self.diff(got, want_ids))
        have = set(got)
        lost = [sid for sid in want_ids if sid not in have]
        start, end = self.outage_window
        outside = [sid for sid in lost if not (start <= at_of.get(sid, 0) <= end)]
        figure(f"{name}: lost over UDP while the receiver was down ({what.split(' (')[0]})", len(lost))
        return check(f"{name}: {what}, except records stored while the UDP receiver was down",
                     not outside and got == [sid for sid in want_ids if sid in have], dict(self.diff(got, want_ids), lost_outside_outage=outside[:10]))

    @staticmethod
    def diff(got, want):
        g, w = set(got), set(want)
        return {"missing": sorted(w - g)[:10], "unexpected": sorted(g - w)[:10], "got": len(got), "want": len(want),
                "first_out_of_order": next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), None)}

    # --- acceptance 5: malformed destinations are refused at start ------------------------
    def bad_config(self):
        section("malformed destinations refused at start")
        good = {"name": "soc", "transport": "tls", "address": "127.0.0.1:6514", "format": "leef",
                "records": ["drops"], "ca_file": "/nonexistent/ca.pem"}
        cases = [
            ("format not one of cef, leef, ocsf", [dict(good, format="syslog")], "/siem/destinations/0/format"),
            ("tls without ca_file", [{k: v for k, v in good.items() if k != "ca_file"}], "/siem/destinations/0/ca_file"),
            ("port out of range", [dict(good, address="127.0.0.1:70000")], "/siem/destinations/0/address"),
            ("address without a port", [dict(good, transport="udp", address="127.0.0.1")], "/siem/destinations/0/address"),
            ("empty records", [dict(good, records=[])], "/siem/destinations/0/records"),
            ("unknown record kind", [dict(good, records=["drops", "dns"])], "/siem/destinations/0/records/1"),
            ("unknown key", [dict(good, colour="red")], "/siem/destinations/0/colour"),
            ("rate limit 0", [dict(good, rate_limit_per_second=0)], "/siem/destinations/0/rate_limit_per_second"),
            ("two destinations with one name", [good, dict(good)], "/siem/destinations/1/name"),
            ("bad name", [dict(good, name="SOC One")], "/siem/destinations/0/name"),
            ("file transport with a relative path", [{"name": "f", "transport": "file", "path": "siem.log", "format": "cef",
                                                      "records": ["audit"]}], "/siem/destinations/0/path"),
        ]
        work = self.tmp / "bad-config"
        ctl = Controller(self.args.controller, work)
        ctl.write_tokens()
        for what, destinations, pointer in cases:
            conf = work / "controller.json"
            port = free_port()
            conf.write_text(json.dumps(ctl.config(destinations, port)))
            try:
                r = subprocess.run([self.args.controller, "--config", str(conf)], capture_output=True, text=True, timeout=30)
            except subprocess.TimeoutExpired:
                check(f"config {what}: refused at start", False, "still running after 30 s (it started)")
                continue
            out = r.stdout + r.stderr
            check(f"config {what}: refused at start (exit {r.returncode}), names {pointer}",
                  r.returncode != 0 and pointer + ":" in out, out[-600:])


if __name__ == "__main__":
    sys.exit(main())
