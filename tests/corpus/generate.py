#!/usr/bin/env python3
"""Bad-input corpus for bulkheadctl: the script that made every test vector.

Each case below is a broken (or, for a few controls, valid) policy or inventory plus
what bulkheadctl must say about it: the exit code and every diagnostic as
(JSON pointer, code, message fragment). Running

    python3 tests/corpus/generate.py            # rewrite policy/, inventory/, the good
                                                # documents and expectations.json
    python3 tests/corpus/generate.py --check    # fail if the committed files differ

keeps the committed vectors and this script in step (project convention: commit each
malformed-input case as a test vector with the small script that made it). Cases too
big to commit (the documents over the 16 MiB limit) are marked "generated_at_test_time";
run_corpus.py asks write_test_time_cases() for them and writes them into the build dir.

Policy cases run as `bulkheadctl policy validate FILE --inventory good-inventory.json`,
inventory cases as `bulkheadctl inventory validate FILE`. Most cases are one edit of
BASE_POLICY / BASE_INVENTORY (committed as good-policy.json / good-inventory.json), so
each expected pointer can be read off those two documents.

To add a case: add a Case to POLICY_CASES or INVENTORY_CASES, run this script, and commit
the new file together with the changed expectations.json. Standard library only.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
JSON_LIMIT = 16 * 1024 * 1024  # policies/json_reader.hpp JsonReadLimits::max_bytes
DEPTH_LIMIT = 32               # JsonReadLimits::max_depth

# --------------------------------------------------------------------------------------
# The valid documents every mutation starts from. Indices matter: pointers refer to them.

BASE_POLICY: dict[str, Any] = {
    "name": "corpus-base",
    "description": "Valid base policy for the bad-input corpus; every case edits a copy.",
    "defaults": {
        "action": "deny",
        "mode": "enforce",
        "log_drops": True,
        "log_group": 10,
        "log_allowed": True,
        "allowed_log_group": 11,
    },
    "services": [
        {"name": "smb", "entries": [{"protocol": "tcp", "ports": [445]}]},
        {"name": "dns", "entries": [{"protocol": "udp", "ports": [53]},
                                    {"protocol": "tcp", "ports": ["53"]}]},
        {"name": "ping", "entries": [{"protocol": "icmp", "types": ["echo-request"]}]},
    ],
    "segments": [
        {"name": "vdi", "selector": {"labels": {"role": "vdi"}}},
        {"name": "file-servers", "selector": {"labels": {"role": ["file-server"]}}},
        {"name": "dns", "selector": {"cidrs": ["10.0.0.53/32", "fd00::53/128"]}},
        {"name": "admins", "selector": {"workloads": ["admin-01"]}},
        {"name": "honeypot", "decoy": True, "selector": {"cidrs": ["10.9.9.0/24"]}},
    ],
    "rules": [
        {"name": "vdi-to-files", "action": "allow", "from": ["vdi"], "to": ["file-servers"],
         "services": ["smb", "ping"]},
        {"name": "vdi-to-dns", "action": "allow", "from": ["vdi"], "to": ["dns"],
         "services": ["dns"]},
        {"name": "admins-to-vdi", "action": "allow", "from": ["admins"], "to": ["vdi"],
         "services": ["any"]},
        {"name": "no-vdi-to-vdi", "action": "deny", "from": ["vdi"], "to": ["vdi"],
         "services": ["any"]},
        {"name": "nothing-to-honeypot", "action": "deny", "from": ["vdi"], "to": ["honeypot"],
         "services": ["any"]},
    ],
    "quarantine": {
        "allow": [{"to": ["dns"], "services": ["dns"]}],
        "allow_from": [{"from": ["admins"], "services": ["any"]}],
    },
}

# Workloads 0 and 2 share 10.1.0.1 and the interface name "vdi001" behind *different*
# enforcers: home/office collisions are normal (seed 000) and must be accepted.
BASE_INVENTORY: dict[str, Any] = {
    "enforcers": [
        {"id": "hv1", "description": "Hypervisor 1"},
        {"id": "hv2", "description": "Hypervisor 2"},
        {"id": "srv01"},
    ],
    "workloads": [
        {"id": "vdi-001", "enforcer": "hv1", "addresses": ["10.1.0.1", "fd00:10::1"],
         "mac": "52:54:00:01:00:01", "labels": {"role": "vdi"},
         "attachment": {"mode": "port", "interface": "vdi001"}},
        {"id": "vdi-002", "enforcer": "hv1", "addresses": ["10.1.0.2"],
         "mac": "52:54:00:01:00:02", "labels": {"role": "vdi"},
         "attachment": {"mode": "port", "interface": "vdi002"}},
        {"id": "vdi-101", "enforcer": "hv2", "addresses": ["10.1.0.1"],
         "mac": "52:54:00:02:00:01", "labels": {"role": "vdi"},
         "attachment": {"mode": "port", "interface": "vdi001"}},
        {"id": "admin-01", "enforcer": "hv2", "addresses": ["10.1.1.100"],
         "labels": {"role": "admin-terminal"},
         "attachment": {"mode": "port", "interface": "adm01"}},
        {"id": "fs-01", "addresses": ["10.0.0.30"], "labels": {"role": "file-server"},
         "hostname": "FS-01", "critical": True},
        {"id": "srv-01", "enforcer": "srv01", "addresses": ["10.0.0.40"],
         "labels": {"role": "server"},
         "attachment": {"mode": "host", "interfaces": ["eth0", "eth1"]}},
    ],
}

# --------------------------------------------------------------------------------------
# Building documents


class Lit:
    """Bytes spliced verbatim into the dumped document (numbers JSON allows but Python
    cannot dump, like 1e400, or strings with invalid UTF-8)."""

    def __init__(self, raw: str | bytes):
        self.raw = raw.encode() if isinstance(raw, str) else raw


def dump(doc: Any) -> bytes:
    literals: list[bytes] = []

    def strip(value: Any) -> Any:
        if isinstance(value, Lit):
            literals.append(value.raw)
            return f"@@LIT{len(literals) - 1}@@"
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    out = (pretty(strip(doc)) + "\n").encode()
    for i, raw in enumerate(literals):
        out = out.replace(f'"@@LIT{i}@@"'.encode(), raw)
    return out


def pretty(value: Any, indent: str = "") -> str:
    """Like json.dumps(indent=2), but a container that fits on one line stays on one line
    (the style of examples/), so that the files read like hand-written ones."""
    flat = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if not isinstance(value, (dict, list)) or len(indent) + len(flat) <= 96 or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {pretty(v, inner)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    items = [inner + pretty(v, inner) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + indent + "]"


def _walk(doc: Any, pointer: str) -> tuple[Any, str | int]:
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]
    parent = doc
    for t in tokens[:-1]:
        parent = parent[int(t)] if isinstance(parent, list) else parent[t]
    last = tokens[-1]
    return parent, (int(last) if isinstance(parent, list) and last != "-" else last)


def edit(base: dict, *ops: tuple) -> dict:
    """ops: ("set", pointer, value) | ("del", pointer) | ("rename", pointer, new_key)
    | ("append", pointer, value). "rename" keeps the member's position."""
    doc = copy.deepcopy(base)
    for op in ops:
        parent, key = _walk(doc, op[1])
        if op[0] == "set":
            parent[key] = op[2]
        elif op[0] == "del":
            del parent[key]
        elif op[0] == "append":
            (parent[key]).append(op[2])
        elif op[0] == "rename":
            items = [(op[2] if k == key else k, v) for k, v in parent.items()]
            parent.clear()
            parent.update(items)
        else:
            raise ValueError(op[0])
    return doc


def P(*ops: tuple) -> bytes:
    return dump(edit(BASE_POLICY, *ops))


def I(*ops: tuple) -> bytes:
    return dump(edit(BASE_INVENTORY, *ops))


def nested(depth: int, open_: str, close: str, leaf: str = "0") -> str:
    return open_ * depth + leaf + close * depth


# --------------------------------------------------------------------------------------
# Cases. errors: (pointer, code, message fragment); "" is the document root.


@dataclass
class Case:
    name: str
    content: bytes | Callable[[], bytes]
    errors: list[tuple[str, str, str]]
    why: str
    exit: int = 1
    generated_at_test_time: bool = False
    extra: dict = field(default_factory=dict)


def E(pointer: str, code: str, message: str = "") -> tuple[str, str, str]:
    return (pointer, code, message)


INVENTORY_CASES: list[Case] = [
    # ---- malformed JSON
    Case("syntax-empty-file", b"", [E("", "syntax", "line 1, column 1")],
         "an empty file is not a JSON document"),
    Case("syntax-whitespace-only", b" \n\t\n", [E("", "syntax", "line 3, column 1")],
         "whitespace only: end of input before any value"),
    Case("syntax-truncated", b'{\n  "enforcers": [\n    {"id": "hv1"}\n  ],\n  "workloads": [',
         [E("/workloads/0", "syntax", "line 5, column 17")],
         "file cut off after the opening bracket of workloads"),
    Case("syntax-trailing-comma-array", b'{"enforcers": [{"id": "hv1"},], "workloads": []}',
         [E("/enforcers/1", "syntax", "line 1, column 30")],
         "trailing comma inside an array"),
    Case("syntax-trailing-comma-object", b'{"enforcers": [], "workloads": [],}',
         [E("/workloads", "syntax", "line 1, column 35")],
         "trailing comma after the last member (pointer: the member before it)"),
    Case("syntax-bad-escape", b'{"enforcers": [{"id": "hv\\q1"}], "workloads": []}',
         [E("/enforcers/0/id", "syntax", "forbidden character after backslash")],
         "\\q is not a JSON escape"),
    Case("syntax-bad-unicode-escape", b'{"enforcers": [{"id": "hv\\u12G4"}], "workloads": []}',
         [E("/enforcers/0/id", "syntax", "must be followed by 4 hex digits")],
         "\\u with a non-hex digit"),
    Case("syntax-lone-surrogate-escape", b'{"enforcers": [{"id": "hv\\ud800"}], "workloads": []}',
         [E("/enforcers/0/id", "syntax", "surrogate U+D800..U+DBFF must be followed by U+DC00..U+DFFF")],
         "a high surrogate escape without its low half"),
    Case("syntax-invalid-utf8", lambda: I(("set", "/workloads/0/labels/role", Lit(b'"v\xffdi"'))),
         [E("/workloads/0/labels/role", "syntax", "ill-formed UTF-8 byte")],
         "byte 0xFF never occurs in UTF-8"),
    Case("syntax-overlong-utf8", lambda: I(("set", "/workloads/0/hostname", Lit(b'"VDI\xc0\xaf001"'))),
         [E("/workloads/0/hostname", "syntax", "ill-formed UTF-8 byte")],
         "overlong encoding of '/' (C0 AF)"),
    Case("syntax-utf8-encoded-surrogate", lambda: I(("set", "/workloads/0/user", Lit(b'"\xed\xa0\x80"'))),
         [E("/workloads/0/user", "syntax", "ill-formed UTF-8 byte")],
         "CESU-style UTF-8 encoding of a surrogate (ED A0 80)"),
    Case("syntax-truncated-utf8", lambda: I(("set", "/workloads/0/user", Lit(b'"kimura\xe3\x81"'))),
         [E("/workloads/0/user", "syntax", "ill-formed UTF-8 byte")],
         "a three-byte sequence cut after two bytes"),
    Case("syntax-nul-in-string", b'{"enforcers": [{"id": "hv\x001"}], "workloads": []}',
         [E("/enforcers/0/id", "syntax", "line 1, column 26")],
         "a raw NUL byte inside a string"),
    Case("syntax-nul-between-tokens", b'{"enforcers": [], \x00"workloads": []}',
         [E("/enforcers", "syntax", "line 1, column 19")],
         "a raw NUL byte between members"),
    Case("syntax-nul-after-document", b'{"enforcers": [], "workloads": []}\x00{"junk": true}',
         [E("", "syntax", "line 1, column 35")],
         "a NUL byte after the document must not hide what follows it"),
    Case("syntax-bom-twice", b'\xef\xbb\xbf\xef\xbb\xbf{"enforcers": [], "workloads": []}',
         [E("", "syntax", "line 1, column 4")],
         "one leading UTF-8 BOM is tolerated (RFC 8259 8.1), a second is garbage"),
    Case("bom-then-unknown-field", b'\xef\xbb\xbf{"enforcers": [], "workloads": [], "segments": []}',
         [E("/segments", "unknown-field", 'unknown member "segments"')],
         "a leading BOM is skipped and the document still checked"),
    Case("syntax-bom-utf16", b'\xff\xfe{\x00}\x00',
         [E("", "syntax", "line 1, column 1")],
         "UTF-16 is not UTF-8"),
    Case("syntax-line-comment", b'{\n  // hypervisors\n  "enforcers": [],\n  "workloads": []\n}',
         [E("", "syntax", "line 2, column 3")],
         "JSON has no comments (use a \"comment\" member)"),
    Case("syntax-block-comment", b'{"enforcers": [/* none yet */], "workloads": []}',
         [E("/enforcers/0", "syntax", "line 1, column 16")],
         "JSON has no block comments"),
    Case("syntax-single-quotes", b"{'enforcers': [], 'workloads': []}",
         [E("", "syntax", "line 1, column 2")],
         "single-quoted strings"),
    Case("syntax-unquoted-key", b'{enforcers: [], "workloads": []}',
         [E("", "syntax", "line 1, column 2")],
         "unquoted member name"),
    Case("syntax-raw-tab-in-string", b'{"enforcers": [{"id": "hv\t1"}], "workloads": []}',
         [E("/enforcers/0/id", "syntax", "control character U+0009 (HT) must be escaped")],
         "control characters must be escaped"),
    Case("syntax-trailing-garbage", b'{"enforcers": [], "workloads": []} x',
         [E("", "syntax", "expected end of input")],
         "text after the document"),
    Case("syntax-two-documents", b'{"enforcers": [], "workloads": []}\n{"enforcers": [], "workloads": []}\n',
         [E("", "syntax", "line 2, column 1")],
         "two concatenated documents"),
    Case("syntax-nan", lambda: I(("set", "/workloads/4/critical", Lit("NaN"))),
         [E("/workloads/4/critical", "syntax", "invalid literal")],
         "NaN is not JSON"),
    # ---- huge numbers and deep nesting
    Case("number-overflow-1e400", lambda: I(("set", "/workloads/4/critical", Lit("1e400"))),
         [E("/workloads/4/critical", "syntax", "1e400")],
         "a number beyond double range"),
    Case("number-huge-integer-for-boolean",
         lambda: I(("set", "/workloads/4/critical", Lit("99999999999999999999999"))),
         [E("/workloads/4/critical", "wrong-type", "must be true or false")],
         "an integer beyond 64 bits where a boolean belongs"),
    Case("deep-nesting-arrays", nested(10_000, "[", "]").encode(),
         [E("/0" * DEPTH_LIMIT, "too-deep", "nesting deeper than 32 levels")],
         "10,000 nested arrays: stopped at the depth limit, no stack overflow"),
    Case("deep-nesting-objects", nested(10_000, '{"a":', "}").encode(),
         [E("/a" * DEPTH_LIMIT, "too-deep", "nesting deeper than 32 levels")],
         "10,000 nested objects"),
    Case("deep-nesting-in-labels",
         lambda: I(("set", "/workloads/0/labels/role", Lit(nested(40, "[", "]", '"vdi"')))),
         [E("/workloads/0/labels/role" + "/0" * (DEPTH_LIMIT - 4), "too-deep", "32 levels")],
         "nesting inside a real document, reported where it crosses the limit"),
    Case("too-large", b"", [E("", "too-large", "the limit is 16777216")],
         "an inventory one workload-list over 16 MiB (written at test time)",
         generated_at_test_time=True),
    Case("at-size-limit", b"", [],
         "exactly 16 MiB (written at test time) is still accepted", exit=0,
         generated_at_test_time=True),
    # ---- duplicate keys
    Case("duplicate-key-top-level",
         b'{\n  "enforcers": [{"id": "hv1"}],\n  "workloads": [],\n  "enforcers": []\n}',
         [E("/enforcers", "duplicate-key", 'key "enforcers" appears more than once')],
         "the second \"enforcers\" would silently win"),
    Case("duplicate-key-in-workload",
         lambda: I(("set", "/workloads/1/addresses", Lit('["10.1.0.2"], "addresses": ["10.1.0.9"]'))),
         [E("/workloads/1/addresses", "duplicate-key", 'key "addresses"')],
         "duplicate member inside an array element"),
    Case("duplicate-key-escaped-pointer",
         lambda: I(("set", "/workloads/0/labels", Lit('{"a/b~c": "1", "a/b~c": "2"}'))),
         [E("/workloads/0/labels/a~1b~0c", "duplicate-key", 'key "a/b~c"')],
         "'/' and '~' in the key are escaped in the pointer (RFC 6901)"),
    # ---- wrong types
    Case("wrong-type-root-array", b"[]\n",
         [E("", "wrong-type", "an inventory must be an object, not array")],
         "top level must be an object"),
    Case("wrong-type-root-null", b"null\n",
         [E("", "wrong-type", "an inventory must be an object, not null")],
         "top level null"),
    Case("wrong-type-enforcers-object", b'{"enforcers": {"hv1": {}}, "workloads": []}\n',
         [E("/enforcers", "wrong-type", "must be an array, not object")],
         "enforcers as a map instead of a list"),
    Case("wrong-type-enforcer-string", b'{"enforcers": ["hv1"], "workloads": []}\n',
         [E("/enforcers/0", "wrong-type", "an enforcer must be an object, not string")],
         "an enforcer given as a bare id"),
    Case("wrong-type-workload-string", lambda: I(("append", "/workloads", "vdi-003")),
         [E("/workloads/6", "wrong-type", "a workload must be an object, not string")],
         "a workload given as a bare id"),
    Case("wrong-type-workload-id-number", lambda: I(("set", "/workloads/4/id", 42)),
         [E("/workloads/4/id", "wrong-type", "must be a string, not integer")],
         "numeric id"),
    Case("wrong-type-critical-string", lambda: I(("set", "/workloads/4/critical", "yes")),
         [E("/workloads/4/critical", "wrong-type", "must be true or false, not string")],
         "\"yes\" is not a boolean"),
    Case("wrong-type-labels-array", lambda: I(("set", "/workloads/4/labels", ["file-server"])),
         [E("/workloads/4/labels", "wrong-type", "labels are an object of strings, not array")],
         "labels as a list"),
    Case("wrong-type-label-value-number", lambda: I(("set", "/workloads/4/labels/tier", 1)),
         [E("/workloads/4/labels/tier", "wrong-type", "label values are strings, not integer")],
         "label value not a string"),
    Case("wrong-type-address-number", lambda: I(("set", "/workloads/4/addresses/0", 167772190)),
         [E("/workloads/4/addresses/0", "wrong-type", "addresses are strings, not integer")],
         "an address as a 32-bit integer"),
    Case("wrong-type-addresses-string", lambda: I(("set", "/workloads/4/addresses", "10.0.0.30")),
         [E("/workloads/4/addresses", "wrong-type", "must be an array, not string")],
         "a single address without the list"),
    Case("wrong-type-attachment-string", lambda: I(("set", "/workloads/0/attachment", "vdi001")),
         [E("/workloads/0/attachment", "wrong-type", "an attachment must be an object, not string")],
         "attachment given as the interface name"),
    Case("wrong-type-interfaces-string",
         lambda: I(("set", "/workloads/5/attachment/interfaces", "eth0")),
         [E("/workloads/5/attachment/interfaces", "wrong-type", "must be an array, not string")],
         "host-mode interfaces as a string"),
    # ---- missing fields
    Case("missing-field-enforcers", b'{"workloads": []}\n',
         [E("", "missing-field", 'required member "enforcers" is missing')],
         "no enforcers member"),
    Case("missing-field-workloads", b'{"enforcers": []}\n',
         [E("", "missing-field", 'required member "workloads" is missing')],
         "no workloads member"),
    Case("missing-field-enforcer-id", lambda: I(("append", "/enforcers", {"description": "spare"})),
         [E("/enforcers/3", "missing-field", 'required member "id" is missing')],
         "an enforcer without id"),
    Case("missing-field-addresses", lambda: I(("del", "/workloads/4/addresses")),
         [E("/workloads/4", "missing-field", 'required member "addresses" is missing')],
         "a workload without addresses"),
    Case("missing-field-attachment", lambda: I(("del", "/workloads/1/attachment")),
         [E("/workloads/1", "missing-field", 'needs an "attachment"')],
         "a managed workload must say how it is attached"),
    Case("missing-field-enforcer-for-attachment", lambda: I(("del", "/workloads/1/enforcer")),
         [E("/workloads/1/attachment", "missing-field", 'an attached workload needs an "enforcer"')],
         "an attachment without an enforcer"),
    Case("missing-field-interface",
         lambda: I(("del", "/workloads/1/attachment/interface"), ("del", "/workloads/1/mac")),
         [E("/workloads/1/attachment", "missing-field", 'required member "interface" is missing')],
         "port mode with neither an interface nor a MAC to bind the port by"),
    Case("missing-field-mode", lambda: I(("del", "/workloads/1/attachment/mode")),
         [E("/workloads/1/attachment", "missing-field", 'required member "mode" is missing'),
          E("/workloads/1/attachment/interface", "unknown-field", 'unknown member "interface"')],
         "attachment without mode (interface then belongs to no mode)"),
    # ---- unknown fields
    Case("unknown-field-adresses-typo", lambda: I(("rename", "/workloads/4/addresses", "adresses")),
         [E("/workloads/4", "missing-field", 'required member "addresses" is missing'),
          E("/workloads/4/adresses", "unknown-field", 'unknown member "adresses"')],
         "a typo must not pass silently"),
    Case("unknown-field-top-level", lambda: I(("set", "/segments", [])),
         [E("/segments", "unknown-field", 'unknown member "segments"')],
         "policy member in the inventory"),
    Case("unknown-field-enforcer", lambda: I(("set", "/enforcers/0/name", "Hypervisor 1")),
         [E("/enforcers/0/name", "unknown-field", 'unknown member "name"')],
         "\"name\" instead of \"description\""),
    Case("unknown-field-interfaces-in-port-mode",
         lambda: I(("rename", "/workloads/1/attachment/interface", "interfaces"),
                   ("set", "/workloads/1/attachment/interfaces", ["vdi002"]),
                   ("del", "/workloads/1/mac")),
         [E("/workloads/1/attachment", "missing-field", 'required member "interface" is missing'),
          E("/workloads/1/attachment/interfaces", "unknown-field", 'unknown member "interfaces"')],
         "host-mode spelling in port mode"),
    # ---- references and names
    Case("unknown-reference-enforcer", lambda: I(("set", "/workloads/1/enforcer", "hv9")),
         [E("/workloads/1/enforcer", "unknown-reference", 'unknown enforcer "hv9"')],
         "a workload on an enforcer that is not listed"),
    Case("duplicate-name-workload", lambda: I(("set", "/workloads/1/id", "vdi-001")),
         [E("/workloads/1/id", "duplicate-name",
            'workload "vdi-001" is already defined at /workloads/0/id')],
         "two workloads with one id"),
    Case("duplicate-name-enforcer", lambda: I(("append", "/enforcers", {"id": "hv1"})),
         [E("/enforcers/3/id", "duplicate-name", 'enforcer "hv1" is already defined at /enforcers/0/id')],
         "two enforcers with one id"),
    Case("invalid-value-workload-id", lambda: I(("set", "/workloads/4/id", "fs 01")),
         [E("/workloads/4/id", "invalid-value", "is not a valid name")],
         "space in an id"),
    Case("invalid-value-workload-id-too-long", lambda: I(("set", "/workloads/4/id", "f" * 65)),
         [E("/workloads/4/id", "invalid-value", "is not a valid name (1-64 characters")],
         "65-character id"),
    Case("invalid-value-enforcer-id-empty", lambda: I(("append", "/enforcers", {"id": ""})),
         [E("/enforcers/3/id", "invalid-value", '"" is not a valid name')],
         "empty enforcer id"),
    Case("invalid-value-workload-id-empty", lambda: I(("append", "/workloads", {"id": "", "addresses": ["10.0.0.99"]})),
         [E("/workloads/6/id", "invalid-value", '"" is not a valid name')],
         "an empty workload id"),
    # ---- addresses
    Case("invalid-address-v4-octet", lambda: I(("set", "/workloads/4/addresses/0", "10.0.0.256")),
         [E("/workloads/4/addresses/0", "invalid-address", '"10.0.0.256" is not an IP address')],
         "octet over 255"),
    Case("invalid-address-v4-short", lambda: I(("set", "/workloads/4/addresses/0", "10.0.30")),
         [E("/workloads/4/addresses/0", "invalid-address", '"10.0.30" is not an IP address')],
         "three octets"),
    Case("invalid-address-v4-leading-zero", lambda: I(("set", "/workloads/4/addresses/0", "010.0.0.30")),
         [E("/workloads/4/addresses/0", "invalid-address", "is not an IP address")],
         "octal-looking octet"),
    Case("invalid-address-v6", lambda: I(("set", "/workloads/0/addresses/1", "fd00:10::zz")),
         [E("/workloads/0/addresses/1", "invalid-address", '"fd00:10::zz" is not an IP address')],
         "non-hex IPv6 group"),
    Case("invalid-address-v6-two-gaps", lambda: I(("set", "/workloads/0/addresses/1", "fd00::10::1")),
         [E("/workloads/0/addresses/1", "invalid-address", "is not an IP address")],
         "two :: in one IPv6 address"),
    Case("invalid-address-v6-zone", lambda: I(("set", "/workloads/0/addresses/1", "fe80::1%eth0")),
         [E("/workloads/0/addresses/1", "invalid-address", "is not an IP address")],
         "zone index"),
    Case("invalid-address-cidr", lambda: I(("set", "/workloads/4/addresses/0", "10.0.0.0/24")),
         [E("/workloads/4/addresses/0", "invalid-address", "is not an IP address")],
         "a CIDR block where one address belongs"),
    Case("invalid-address-empty", lambda: I(("set", "/workloads/4/addresses/0", "")),
         [E("/workloads/4/addresses/0", "invalid-address", '"" is not an IP address')],
         "empty string"),
    Case("invalid-address-embedded-nul",
         lambda: I(("set", "/workloads/4/addresses/0", "10.0.0.30\u0000evil")),
         [E("/workloads/4/addresses/0", "invalid-address", "is not an IP address")],
         "an escaped NUL must not truncate the address to 10.0.0.30"),
    Case("invalid-value-addresses-empty", lambda: I(("set", "/workloads/4/addresses", [])),
         [E("/workloads/4/addresses", "invalid-value", "a workload needs at least one address")],
         "no address at all"),
    # ---- other values
    Case("invalid-value-mac", lambda: I(("set", "/workloads/1/mac", "52:54:00:01:00")),
         [E("/workloads/1/mac", "invalid-value", "is not a MAC address")],
         "five octets"),
    Case("invalid-value-mac-garbage", lambda: I(("set", "/workloads/1/mac", "52:54:00:01:00:zz")),
         [E("/workloads/1/mac", "invalid-value", "is not a MAC address")],
         "non-hex MAC"),
    Case("invalid-value-attachment-mode", lambda: I(("set", "/workloads/1/attachment/mode", "bridge")),
         [E("/workloads/1/attachment/mode", "invalid-value", '"bridge" is not one of: port, host'),
          E("/workloads/1/attachment/interface", "unknown-field", 'unknown member "interface"')],
         "unknown attachment mode"),
    Case("invalid-value-interface-too-long",
         lambda: I(("set", "/workloads/1/attachment/interface", "vdi-interface-002")),
         [E("/workloads/1/attachment/interface", "invalid-value", "must be 1 to 15 characters")],
         "over IFNAMSIZ"),
    Case("invalid-value-interface-slash", lambda: I(("set", "/workloads/5/attachment/interfaces/1", "eth/1")),
         [E("/workloads/5/attachment/interfaces/1", "invalid-value",
            "contains a character Linux or nft does not accept")],
         "'/' in an interface name"),
    Case("invalid-value-host-interfaces-empty", lambda: I(("set", "/workloads/5/attachment/interfaces", [])),
         [E("/workloads/5/attachment/interfaces", "invalid-value", "must not be empty")],
         "host mode with no interface"),
    # ---- conflicts
    Case("conflict-duplicate-interface", lambda: I(("set", "/workloads/1/attachment/interface", "vdi001")),
         [E("/workloads/1/attachment", "conflict",
            'interface "vdi001" on enforcer "hv1" is already used at /workloads/0/attachment')],
         "two workloads on one port of one enforcer"),
    Case("conflict-duplicate-mac", lambda: I(("set", "/workloads/1/mac", "52-54-00-01-00-01")),
         [E("/workloads/1/mac", "conflict", "MAC 52:54:00:01:00:01 is already used at /workloads/0/mac")],
         "one MAC twice (other notation)"),
    Case("conflict-address-same-enforcer", lambda: I(("set", "/workloads/1/addresses/0", "10.1.0.1")),
         [E("/workloads/1/addresses/0", "conflict",
            "address 10.1.0.1 is already used at /workloads/0/addresses/0 behind the same enforcer")],
         "one address twice behind one enforcer"),
    Case("conflict-address-twice-in-workload",
         lambda: I(("set", "/workloads/1/addresses", ["10.1.0.2", "10.1.0.2"])),
         [E("/workloads/1/addresses/1", "conflict", "already used at /workloads/1/addresses/0")],
         "an address listed twice"),
    Case("conflict-two-host-mode-workloads",
         lambda: I(("append", "/workloads", {"id": "srv-02", "enforcer": "srv01",
                                             "addresses": ["10.0.0.41"],
                                             "attachment": {"mode": "host", "interfaces": ["eth2"]}})),
         [E("/workloads/6/attachment", "conflict",
            'enforcer "srv01" already protects a host-mode workload at /workloads/5/attachment')],
         "one host protects one workload"),
    # ---- several errors in one document: every one is reported
    Case("many-errors",
         lambda: I(("set", "/workloads/0/enforcer", "hv9"),
                   ("set", "/workloads/1/mac", "zz"),
                   ("set", "/workloads/2/addresses/0", "300.1.1.1"),
                   ("set", "/workloads/3/critical", "no"),
                   ("rename", "/workloads/4/hostname", "hostnme")),
         [E("/workloads/0/enforcer", "unknown-reference", 'unknown enforcer "hv9"'),
          E("/workloads/1/mac", "invalid-value", '"zz" is not a MAC address'),
          E("/workloads/2/addresses/0", "invalid-address", '"300.1.1.1"'),
          E("/workloads/3/critical", "wrong-type", "must be true or false"),
          E("/workloads/4/hostnme", "unknown-field", 'unknown member "hostnme"')],
         "five independent errors, all reported"),
]


def port(value: Any) -> bytes:
    return P(("set", "/services/0/entries/0/ports/0", value))


PORT = "/services/0/entries/0/ports/0"

POLICY_CASES: list[Case] = [
    # ---- malformed JSON
    Case("syntax-empty-file", b"", [E("", "syntax", "line 1, column 1")], "empty file"),
    Case("syntax-truncated", lambda: dump(BASE_POLICY)[:dump(BASE_POLICY).index(b'"rules"') + 16],
         [E("/rules/0", "syntax", "unexpected end of input")],
         "file cut off inside the rules"),
    Case("syntax-trailing-comma-rules",
         lambda: P(("set", "/rules/4/services", Lit('["any"],'))),
         [E("/rules/4/services", "syntax", "expected string literal")],
         "trailing comma after the last member of a rule"),
    Case("syntax-missing-colon", b'{"name" "x", "segments": [], "rules": []}',
         [E("/name", "syntax", "line 1, column 11")],
         "member without ':'"),
    # The number token "0" is complete before the error, so the pointer names the slot
    # after it (ports/1); line and column point at the offending text.
    Case("syntax-leading-zero-port", lambda: port(Lit("0445")),
         [E(PORT[:-1] + "1", "syntax", "line 13, column 66")],
         "leading zeros are not JSON"),
    Case("syntax-hex-port", lambda: port(Lit("0x1bd")),
         [E(PORT[:-1] + "1", "syntax", "line 13, column 64")],
         "hex literal"),
    Case("syntax-invalid-utf8-description",
         lambda: P(("set", "/segments/0/description", Lit(b'"VDIs \xfe"'))),
         [E("/segments/0/description", "syntax", "ill-formed UTF-8 byte")],
         "invalid UTF-8 in free text"),
    Case("syntax-latin1-name", lambda: P(("set", "/name", Lit(b'"pol\xedtica"'))),
         [E("/name", "syntax", "ill-formed UTF-8 byte")],
         "a Latin-1 file is not UTF-8"),
    Case("syntax-nul-in-name", lambda: P(("set", "/name", Lit(b'"corpus\x00base"'))),
         [E("/name", "syntax", "line 2, column 18")],
         "raw NUL inside a string"),
    Case("syntax-comment-in-rules",
         lambda: P(("set", "/rules/3/services", Lit('["any"] // never'))),
         [E("/rules/3/services", "syntax", "invalid literal")],
         "a line comment after a member"),
    Case("number-overflow-port-1e400", lambda: port(Lit("1e400")),
         [E(PORT, "syntax", "1e400")],
         "a port beyond double range"),
    Case("number-overflow-located-at-the-number",
         lambda: P(("set", "/description", "Ports like 1e400 do not exist."),
                   ("set", "/services/0/entries/0/ports/0", Lit("1e400"))),
         [E(PORT, "syntax", "line 13, column")],
         "the location is the number's, not an earlier string holding the same characters"),
    Case("number-overflow-log-group-negative", lambda: P(("set", "/defaults/log_group", Lit("-1e400"))),
         [E("/defaults/log_group", "syntax", "-1e400")],
         "negative overflow"),
    Case("deep-nesting-description",
         lambda: P(("set", "/description", Lit(nested(10_000, "[", "]")))),
         [E("/description" + "/0" * (DEPTH_LIMIT - 1), "too-deep", "nesting deeper than 32 levels")],
         "10,000 nested arrays as the value of a member"),
    Case("deep-nesting-selector",
         lambda: P(("set", "/segments/0/selector", Lit(nested(1_000, '{"labels":', "}", "{}")))),
         [E("/segments/0/selector" + "/labels" * (DEPTH_LIMIT - 3), "too-deep", "32 levels")],
         "1,000 nested selectors"),
    Case("too-large", b"", [E("", "too-large", "the limit is 16777216")],
         "a policy with a 17 MiB description (written at test time)",
         generated_at_test_time=True),
    # ---- duplicate keys
    Case("duplicate-key-rule-action",
         lambda: P(("set", "/rules/3/action", Lit('"deny", "action": "allow"'))),
         [E("/rules/3/action", "duplicate-key", 'key "action" appears more than once')],
         "a deny silently turned into an allow by a second key"),
    Case("duplicate-key-selector",
         lambda: P(("set", "/segments/2/selector", Lit('{"cidrs": ["10.0.0.53/32"], "cidrs": ["0.0.0.0/0"]}'))),
         [E("/segments/2/selector/cidrs", "duplicate-key", 'key "cidrs"')],
         "duplicate selector member"),
    # ---- wrong types
    Case("wrong-type-root-string", b'"corpus-base"\n',
         [E("", "wrong-type", "a policy must be an object, not string")], "top level string"),
    Case("wrong-type-name-number", lambda: P(("set", "/name", 7)),
         [E("/name", "wrong-type", "must be a string, not integer")], "numeric name"),
    Case("wrong-type-services-object", lambda: P(("set", "/services", {"smb": {}})),
         [E("/services", "wrong-type", "must be an array, not object"),
          E("/rules/0/services/0", "unknown-reference", 'unknown service "smb"'),
          E("/rules/1/services/0", "unknown-reference", 'unknown service "dns"'),
          E("/rules/0/services/1", "unknown-reference", 'unknown service "ping"'),
          E("/quarantine/allow/0/services/0", "unknown-reference", 'unknown service "dns"')],
         "services as a map (every reference to them then fails too)"),
    Case("wrong-type-service-entry-string", lambda: P(("set", "/services/0/entries/0", "tcp/445")),
         [E("/services/0/entries/0", "wrong-type", "a service entry must be an object, not string")],
         "service entry in shorthand"),
    Case("wrong-type-rules-object", lambda: P(("set", "/rules", {})),
         [E("/rules", "wrong-type", "must be an array, not object")], "rules as an object"),
    Case("wrong-type-rule-array", lambda: P(("set", "/rules/1", ["vdi", "dns", "dns"])),
         [E("/rules/1", "wrong-type", "a rule must be an object, not array")], "rule as a tuple"),
    Case("wrong-type-from-string", lambda: P(("set", "/rules/0/from", "vdi")),
         [E("/rules/0/from", "wrong-type", "must be an array, not string")], "from without a list"),
    Case("wrong-type-from-element", lambda: P(("set", "/rules/0/from/0", 42)),
         [E("/rules/0/from/0", "wrong-type", "must be a string, not integer")], "segment as a number"),
    Case("wrong-type-decoy-string", lambda: P(("set", "/segments/4/decoy", "true")),
         [E("/segments/4/decoy", "wrong-type", "must be true or false, not string")], "quoted boolean"),
    Case("wrong-type-defaults-array", lambda: P(("set", "/defaults", ["deny"])),
         [E("/defaults", "wrong-type", '"defaults" must be an object, not array')], "defaults as a list"),
    Case("wrong-type-log-group-string", lambda: P(("set", "/defaults/log_group", "10")),
         [E("/defaults/log_group", "wrong-type", "must be an integer, not string")], "quoted number"),
    Case("wrong-type-log-group-float", lambda: P(("set", "/defaults/log_group", 10.5)),
         [E("/defaults/log_group", "wrong-type", "must be an integer, not number")], "fractional group"),
    Case("wrong-type-log-drops-number", lambda: P(("set", "/defaults/log_drops", 1)),
         [E("/defaults/log_drops", "wrong-type", "must be true or false, not integer")], "1 for true"),
    Case("wrong-type-selector-array", lambda: P(("set", "/segments/0/selector", ["vdi-001"])),
         [E("/segments/0/selector", "wrong-type", "a selector must be an object, not array")],
         "selector as a list"),
    Case("wrong-type-labels-array", lambda: P(("set", "/segments/0/selector/labels", ["vdi"])),
         [E("/segments/0/selector/labels", "wrong-type", "must be an object of label: value")],
         "labels as a list"),
    Case("wrong-type-label-value-object", lambda: P(("set", "/segments/0/selector/labels/role", {"in": ["vdi"]})),
         [E("/segments/0/selector/labels/role", "wrong-type",
            "a label value is a string or an array of strings, not object")],
         "operator syntax from another product"),
    Case("wrong-type-label-values-element", lambda: P(("set", "/segments/1/selector/labels/role/0", True)),
         [E("/segments/1/selector/labels/role/0", "wrong-type", "label values are strings, not boolean")],
         "non-string in a value list"),
    Case("wrong-type-cidr-number", lambda: P(("set", "/segments/2/selector/cidrs/0", 167772213)),
         [E("/segments/2/selector/cidrs/0", "wrong-type", "CIDR blocks are strings, not integer")],
         "address as an integer"),
    Case("wrong-type-quarantine-array", lambda: P(("set", "/quarantine", [])),
         [E("/quarantine", "wrong-type", '"quarantine" must be an object, not array')], "quarantine as a list"),
    Case("wrong-type-port-boolean", lambda: port(True),
         [E(PORT, "wrong-type", 'port must be an integer or a "low-high" string, not boolean')], "true"),
    Case("wrong-type-port-null", lambda: port(None),
         [E(PORT, "wrong-type", "not null")], "null"),
    Case("wrong-type-port-object", lambda: port({"from": 1, "to": 2}),
         [E(PORT, "wrong-type", "not object")], "range as an object"),
    # ---- missing fields
    Case("missing-field-name", lambda: P(("del", "/name")),
         [E("", "missing-field", 'required member "name" is missing')], "no name"),
    Case("missing-field-segments-and-rules", b'{"name": "x"}\n',
         [E("", "missing-field", 'required member "segments" is missing'),
          E("", "missing-field", 'required member "rules" is missing')],
         "both required lists missing: both reported"),
    Case("missing-field-rule-services", lambda: P(("del", "/rules/2/services")),
         [E("/rules/2", "missing-field", 'required member "services" is missing')], "rule without services"),
    Case("missing-field-service-entries", lambda: P(("del", "/services/2/entries")),
         [E("/services/2", "missing-field", 'required member "entries" is missing')], "service without entries"),
    Case("missing-field-protocol", lambda: P(("del", "/services/1/entries/1/protocol")),
         [E("/services/1/entries/1", "missing-field", 'required member "protocol" is missing')],
         "entry without protocol"),
    Case("missing-field-selector", lambda: P(("del", "/segments/1/selector")),
         [E("/segments/1", "missing-field", 'required member "selector" is missing')],
         "segment without selector"),
    Case("missing-field-grant-to", lambda: P(("rename", "/quarantine/allow/0/to", "from")),
         [E("/quarantine/allow/0", "missing-field", 'required member "to" is missing'),
          E("/quarantine/allow/0/from", "unknown-field", 'unknown member "from"')],
         "allow grants name \"to\", allow_from grants \"from\""),
    # ---- unknown fields
    Case("unknown-field-acton-typo", lambda: P(("rename", "/rules/3/action", "acton")),
         [E("/rules/3", "missing-field", 'required member "action" is missing'),
          E("/rules/3/acton", "unknown-field", 'unknown member "acton"')],
         "a typo in a deny rule must not default to allow"),
    Case("unknown-field-segmnets-typo", b'{"name": "x", "segmnets": [], "rules": []}\n',
         [E("", "missing-field", 'required member "segments" is missing'),
          E("/segmnets", "unknown-field", 'unknown member "segmnets"')],
         "top-level typo"),
    Case("unknown-field-selector-label-typo", lambda: P(("rename", "/segments/0/selector/labels", "label")),
         [E("/segments/0/selector/label", "unknown-field", 'unknown member "label"'),
          E("/segments/0/selector", "empty-selector", 'a selector needs "labels", "workloads" or "cidrs"')],
         "selector typo leaves an empty selector"),
    Case("unknown-field-defaults-typo", lambda: P(("rename", "/defaults/log_group", "log_grp")),
         [E("/defaults/log_grp", "unknown-field", 'unknown member "log_grp"')], "defaults typo"),
    Case("unknown-field-port-typo", lambda: P(("rename", "/services/0/entries/0/ports", "port")),
         [E("/services/0/entries/0/port", "unknown-field", 'unknown member "port"')],
         "\"port\" would otherwise open every port"),
    # ---- references
    Case("unknown-reference-from-segment", lambda: P(("set", "/rules/0/from/0", "vdis")),
         [E("/rules/0/from/0", "unknown-reference", 'unknown segment "vdis"')], "misspelt segment"),
    Case("unknown-reference-to-segment", lambda: P(("set", "/rules/1/to/0", "dns-servers")),
         [E("/rules/1/to/0", "unknown-reference", 'unknown segment "dns-servers"')], "unknown target"),
    Case("unknown-reference-service", lambda: P(("set", "/rules/0/services/1", "icmp")),
         [E("/rules/0/services/1", "unknown-reference", 'unknown service "icmp"')], "unknown service"),
    Case("unknown-reference-quarantine-segment", lambda: P(("set", "/quarantine/allow/0/to/0", "edr")),
         [E("/quarantine/allow/0/to/0", "unknown-reference", 'unknown segment "edr"')],
         "quarantine grant to an unknown segment"),
    Case("unknown-reference-quarantine-from-service",
         lambda: P(("set", "/quarantine/allow_from/0/services/0", "forensics")),
         [E("/quarantine/allow_from/0/services/0", "unknown-reference", 'unknown service "forensics"')],
         "quarantine grant with an unknown service"),
    Case("unknown-reference-workload", lambda: P(("set", "/segments/3/selector/workloads/0", "admin-99")),
         [E("/segments/3/selector/workloads/0", "unknown-reference", 'unknown workload "admin-99"')],
         "needs the inventory (cross-check)"),
    Case("unknown-reference-after-wrong-type", lambda: P(("set", "/rules/0/from", [42, "nope"])),
         [E("/rules/0/from/0", "wrong-type", "must be a string, not integer"),
          E("/rules/0/from/1", "unknown-reference", 'unknown segment "nope"')],
         "the pointer must keep the index in the document, not in the filtered list"),
    # ---- names
    Case("duplicate-name-service", lambda: P(("set", "/services/2/name", "smb")),
         [E("/services/2/name", "duplicate-name", 'service "smb" is already defined at /services/0/name'),
          E("/rules/0/services/1", "unknown-reference", 'unknown service "ping"')],
         "two services with one name"),
    Case("duplicate-name-segment", lambda: P(("append", "/segments", {"name": "vdi", "selector": {"labels": {"pool": "dev"}}})),
         [E("/segments/5/name", "duplicate-name", 'segment "vdi" is already defined at /segments/0/name')],
         "two segments with one name"),
    Case("duplicate-name-rule", lambda: P(("set", "/rules/4/name", "vdi-to-files")),
         [E("/rules/4/name", "duplicate-name", 'rule "vdi-to-files" is already defined at /rules/0/name')],
         "two rules with one name"),
    Case("duplicate-name-service-any",
         lambda: P(("append", "/services", {"name": "any", "entries": [{"protocol": "tcp"}]})),
         [E("/services/3/name", "duplicate-name", '"any" is the built-in service')],
         "the built-in \"any\" cannot be redefined"),
    Case("invalid-value-rule-name", lambda: P(("set", "/rules/2/name", "admins to vdi")),
         [E("/rules/2/name", "invalid-value", "is not a valid name")], "spaces in a name"),
    Case("invalid-value-policy-name-empty", lambda: P(("set", "/name", "")),
         [E("/name", "invalid-value", '"" is not a valid name')],
         "names are 1-64 characters; an empty one must not pass"),
    Case("invalid-value-segment-name-empty",
         lambda: P(("append", "/segments", {"name": "", "selector": {"labels": {"pool": "dev"}}})),
         [E("/segments/5/name", "invalid-value", '"" is not a valid name')],
         "an empty segment name"),
    # ---- CIDR blocks
    Case("invalid-cidr-v4-prefix-33", lambda: P(("set", "/segments/2/selector/cidrs/0", "10.0.0.53/33")),
         [E("/segments/2/selector/cidrs/0", "invalid-address", "has an invalid prefix length (0..32)")], "/33"),
    Case("invalid-cidr-v6-prefix-129", lambda: P(("set", "/segments/2/selector/cidrs/1", "fd00::53/129")),
         [E("/segments/2/selector/cidrs/1", "invalid-address", "has an invalid prefix length (0..128)")], "/129"),
    Case("invalid-cidr-v4-host-bits", lambda: P(("set", "/segments/4/selector/cidrs/0", "10.9.9.1/24")),
         [E("/segments/4/selector/cidrs/0", "invalid-address", "host bits set (did you mean 10.9.9.0/24?)")],
         "host bits"),
    Case("invalid-cidr-v6-host-bits", lambda: P(("set", "/segments/2/selector/cidrs/1", "fd00::53/64")),
         [E("/segments/2/selector/cidrs/1", "invalid-address", "host bits set (did you mean fd00::/64?)")],
         "IPv6 host bits"),
    Case("invalid-cidr-v4-octet", lambda: P(("set", "/segments/2/selector/cidrs/0", "10.0.0.256/32")),
         [E("/segments/2/selector/cidrs/0", "invalid-address", "is not a CIDR block")], "octet over 255"),
    Case("invalid-cidr-v6-garbage", lambda: P(("set", "/segments/2/selector/cidrs/1", "fd00:::53/128")),
         [E("/segments/2/selector/cidrs/1", "invalid-address", "is not a CIDR block")], "triple colon"),
    Case("invalid-cidr-garbage", lambda: P(("set", "/segments/2/selector/cidrs/0", "dns.example.org")),
         [E("/segments/2/selector/cidrs/0", "invalid-address", '"dns.example.org" is not a CIDR block')],
         "a host name"),
    Case("invalid-cidr-empty-prefix", lambda: P(("set", "/segments/4/selector/cidrs/0", "10.9.9.0/")),
         [E("/segments/4/selector/cidrs/0", "invalid-address", "invalid prefix length")], "slash, no length"),
    Case("invalid-cidr-negative-prefix", lambda: P(("set", "/segments/4/selector/cidrs/0", "10.9.9.0/-8")),
         [E("/segments/4/selector/cidrs/0", "invalid-address", "invalid prefix length")], "negative length"),
    Case("invalid-cidr-two-prefixes", lambda: P(("set", "/segments/4/selector/cidrs/0", "10.9.9.0/24/8")),
         [E("/segments/4/selector/cidrs/0", "invalid-address", "invalid prefix length")], "two slashes"),
    Case("invalid-cidr-embedded-nul", lambda: P(("set", "/segments/4/selector/cidrs/0", "10.9.9.0\u0000/24")),
         [E("/segments/4/selector/cidrs/0", "invalid-address", "")],
         "an escaped NUL must not truncate the block to 10.9.9.0"),
    # ---- ports and ICMP types
    Case("invalid-port-65536", lambda: port(65536),
         [E(PORT, "invalid-port", "port 65536 is outside 0..65535")], "one past the top"),
    Case("invalid-port-negative", lambda: port(-1),
         [E(PORT, "invalid-port", "port -1 is outside 0..65535")], "negative"),
    Case("invalid-port-string-70000", lambda: port("70000"),
         [E(PORT, "invalid-port", 'port range "70000" is outside 0..65535')], "string form"),
    Case("invalid-port-range-above-max", lambda: port("1000-70000"),
         [E(PORT, "invalid-port", 'port range "1000-70000" is outside 0..65535')], "range end too high"),
    Case("invalid-port-huge-integer", lambda: port(Lit("99999999999999999999999")),
         [E(PORT, "invalid-port", "is outside 0..65535")],
         "an integer beyond 64 bits is an out-of-range port, not a type error"),
    Case("invalid-port-huge-string", lambda: port("99999999999999999999999"),
         [E(PORT, "invalid-port", "is outside 0..65535")], "beyond 64 bits in a string"),
    Case("invalid-port-exponent", lambda: port(Lit("1e9")),
         [E(PORT, "invalid-port", "is outside 0..65535")],
         "1e9 arrives as a JSON float, but it is a whole number: out of range, not a type error"),
    Case("invalid-port-fraction", lambda: port(1.5),
         [E(PORT, "wrong-type", "not number")], "1.5"),
    Case("reversed-range", lambda: port("10-5"),
         [E(PORT, "reversed-range", 'range "10-5" is reversed')], "low end above high end"),
    Case("invalid-port-garbage-string", lambda: port("http"),
         [E(PORT, "invalid-value", '"http" is not a port or a "low-high" range')], "a service name"),
    Case("invalid-port-open-range", lambda: port("8000-"),
         [E(PORT, "invalid-value", '"8000-" is not a port')], "range without an end"),
    Case("invalid-value-ports-empty", lambda: P(("set", "/services/0/entries/0/ports", [])),
         [E("/services/0/entries/0/ports", "invalid-value", 'omit "ports" to mean every port')], "empty list"),
    Case("invalid-value-ports-on-icmp", lambda: P(("set", "/services/2/entries/0/ports", [7])),
         [E("/services/2/entries/0/ports", "invalid-value", '"ports" only applies to tcp, udp and sctp')],
         "ports on ICMP"),
    Case("invalid-value-icmp-type-256", lambda: P(("set", "/services/2/entries/0/types/0", 256)),
         [E("/services/2/entries/0/types/0", "invalid-value", "ICMP type 256 is outside 0..255")], "type 256"),
    Case("invalid-value-icmp-type-name", lambda: P(("set", "/services/2/entries/0/types/0", "ping")),
         [E("/services/2/entries/0/types/0", "invalid-value", '"ping" is not a known icmp type name')],
         "unknown type name"),
    Case("invalid-value-log-group-70000", lambda: P(("set", "/defaults/log_group", 70000)),
         [E("/defaults/log_group", "invalid-value", "must be between 0 and 65535, got 70000")], "over 16 bits"),
    Case("invalid-value-log-group-huge-integer",
         lambda: P(("set", "/defaults/log_group", Lit("99999999999999999999999"))),
         [E("/defaults/log_group", "invalid-value", "must be between 0 and 65535")],
         "an integer beyond 64 bits is out of range, not a type error"),
    # ---- other values
    Case("invalid-value-action", lambda: P(("set", "/rules/0/action", "permit")),
         [E("/rules/0/action", "invalid-value", '"permit" is not one of: allow, deny')], "permit"),
    Case("invalid-value-protocol", lambda: P(("set", "/services/0/entries/0/protocol", "TCP")),
         [E("/services/0/entries/0/protocol", "invalid-value", '"TCP" is not one of: tcp, udp')], "upper case"),
    Case("invalid-value-mode", lambda: P(("set", "/defaults/mode", "audit")),
         [E("/defaults/mode", "invalid-value", '"audit" is not one of: enforce, monitor')], "unknown mode"),
    Case("invalid-value-empty-from", lambda: P(("set", "/rules/1/from", [])),
         [E("/rules/1/from", "invalid-value", "must not be empty")], "rule from nobody"),
    Case("invalid-value-entries-empty", lambda: P(("set", "/services/1/entries", [])),
         [E("/services/1/entries", "invalid-value", "a service needs at least one entry")], "service of nothing"),
    # ---- empty selectors
    Case("empty-selector-object", lambda: P(("set", "/segments/1/selector", {})),
         [E("/segments/1/selector", "empty-selector", 'a selector needs "labels", "workloads" or "cidrs"')],
         "selects nothing"),
    Case("empty-selector-labels", lambda: P(("set", "/segments/0/selector/labels", {})),
         [E("/segments/0/selector/labels", "empty-selector", "would match every workload")],
         "would select everything"),
    Case("empty-selector-label-values", lambda: P(("set", "/segments/1/selector/labels/role", [])),
         [E("/segments/1/selector/labels/role", "empty-selector", "an empty list of values matches nothing")],
         "empty any-of"),
    Case("empty-selector-workloads", lambda: P(("set", "/segments/3/selector/workloads", [])),
         [E("/segments/3/selector/workloads", "empty-selector", "an empty workload list selects nothing")],
         "no workloads"),
    Case("empty-selector-cidrs", lambda: P(("set", "/segments/4/selector/cidrs", [])),
         [E("/segments/4/selector/cidrs", "empty-selector", "an empty CIDR list selects nothing")],
         "no blocks"),
    # ---- conflicts
    Case("conflict-allow-to-decoy", lambda: P(("set", "/rules/4/action", "allow")),
         [E("/rules/4/to/0", "conflict", 'segment "honeypot" is a decoy')],
         "nothing may be allowed to reach a decoy"),
    Case("conflict-same-nflog-group", lambda: P(("set", "/defaults/allowed_log_group", 10)),
         [E("/defaults/allowed_log_group", "conflict", "must log to different NFLOG groups")],
         "drops and allowed flows in one NFLOG group"),
    # ---- several errors in one document
    Case("many-errors",
         lambda: P(("set", "/services/0/entries/0/ports/0", 70000),
                   ("set", "/segments/2/selector/cidrs/0", "10.0.0.53/8"),
                   ("set", "/segments/3/selector", {}),
                   ("rename", "/rules/2/action", "acton"),
                   ("set", "/rules/0/from/0", "vdis"),
                   ("set", "/quarantine/allow/0/services/0", "dnss")),
         [E(PORT, "invalid-port", "port 70000"),
          E("/segments/2/selector/cidrs/0", "invalid-address", "host bits set"),
          E("/segments/3/selector", "empty-selector", "a selector needs"),
          E("/rules/2", "missing-field", '"action"'),
          E("/rules/2/acton", "unknown-field", '"acton"'),
          E("/rules/0/from/0", "unknown-reference", 'unknown segment "vdis"'),
          E("/quarantine/allow/0/services/0", "unknown-reference", 'unknown service "dnss"')],
         "seven errors of six kinds, all reported"),
]

# Valid controls: they keep the harness honest (a wrong --inventory path would make
# every case fail with exit 2, not pass).
GOOD_CASES: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("good-policy.json", "policy", lambda: dump(BASE_POLICY), "the base policy is valid"),
    ("good-inventory.json", "inventory", lambda: dump(BASE_INVENTORY),
     "the base inventory is valid, with an address and an interface name reused behind "
     "different enforcers"),
]


# --------------------------------------------------------------------------------------
# Files written at test time (too big to commit)


def write_test_time_cases(out_dir: Path) -> None:
    """Writes the generated_at_test_time cases under out_dir/{policy,inventory}/."""
    (out_dir / "policy").mkdir(parents=True, exist_ok=True)
    (out_dir / "inventory").mkdir(parents=True, exist_ok=True)

    # A real-looking inventory just over the limit: many workloads, not padding.
    workloads = []
    size = 0
    n = 0
    while size <= JSON_LIMIT + 1024:
        w = {"id": f"vdi-{n:06d}", "enforcer": f"hv{n % 50}",
             "addresses": [f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"],
             "labels": {"role": "vdi", "pool": f"pool-{n % 97}"},
             "attachment": {"mode": "port", "interface": f"v{n:06d}"}}
        workloads.append(w)
        size += len(json.dumps(w)) + 2
        n += 1
    doc = {"enforcers": [{"id": f"hv{i}"} for i in range(50)], "workloads": workloads}
    data = json.dumps(doc).encode()
    assert len(data) > JSON_LIMIT
    (out_dir / "inventory" / "too-large.json").write_bytes(data)

    # Exactly at the limit: a valid document padded with trailing whitespace.
    small = json.dumps(BASE_INVENTORY).encode()
    (out_dir / "inventory" / "at-size-limit.json").write_bytes(
        small + b" " * (JSON_LIMIT - len(small) - 1) + b"\n")

    policy = copy.deepcopy(BASE_POLICY)
    policy["description"] = "x" * (JSON_LIMIT + 1024 * 1024)
    (out_dir / "policy" / "too-large.json").write_bytes(json.dumps(policy).encode())


# --------------------------------------------------------------------------------------
# Manifest and files


def all_files() -> tuple[dict[str, bytes], dict[str, Any]]:
    files: dict[str, bytes] = {}
    cases: list[dict[str, Any]] = []
    for kind, case_list in (("inventory", INVENTORY_CASES), ("policy", POLICY_CASES)):
        names = set()
        for c in case_list:
            if c.name in names:
                raise SystemExit(f"duplicate case name {kind}/{c.name}")
            names.add(c.name)
            rel = f"{kind}/{c.name}.json"
            if not c.generated_at_test_time:
                files[rel] = c.content() if callable(c.content) else c.content
            entry: dict[str, Any] = {"file": rel, "kind": kind, "exit": c.exit,
                                     "why": c.why,
                                     "errors": [{"pointer": p, "code": code, "message": m}
                                                for p, code, m in c.errors]}
            if c.generated_at_test_time:
                entry["generated_at_test_time"] = True
            cases.append(entry)
    for rel, kind, content, why in GOOD_CASES:
        files[rel] = content()
        cases.append({"file": rel, "kind": kind, "exit": 0, "why": why, "errors": []})
    manifest = {
        "comment": [
            "Written by generate.py; do not edit by hand. For each file: the exit code of",
            "`bulkheadctl inventory validate FILE` or `bulkheadctl policy validate FILE",
            "--inventory good-inventory.json`, and every diagnostic it must print as",
            "'POINTER: CODE' plus a message fragment (pointer \"\" prints as",
            "'(document root)'). run_corpus.py checks text and --format json output.",
        ],
        "good_inventory": "good-inventory.json",
        "cases": cases,
    }
    files["expectations.json"] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
    return files, manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare the committed files with what this script writes")
    parser.add_argument("--test-time-cases", metavar="DIR", type=Path,
                        help="only write the large generated_at_test_time files into DIR")
    args = parser.parse_args()

    if args.test_time_cases:
        write_test_time_cases(args.test_time_cases)
        return 0

    files, manifest = all_files()
    committed = {str(p.relative_to(HERE)) for sub in ("policy", "inventory")
                 for p in (HERE / sub).glob("*.json")} if (HERE / "policy").exists() else set()
    stale = sorted(committed - set(files))
    if args.check:
        problems = [f"{rel}: differs from generate.py" for rel, data in files.items()
                    if not (HERE / rel).is_file() or (HERE / rel).read_bytes() != data]
        problems += [f"{rel}: not made by generate.py (add it as a case)" for rel in stale]
        for p in problems:
            print(p, file=sys.stderr)
        print(f"corpus vectors: {len(files)} files checked, {len(problems)} out of date")
        return 1 if problems else 0
    for rel, data in files.items():
        path = HERE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(files)} files ({len(manifest['cases'])} cases) under {HERE}")
    for rel in stale:  # never deleted here: it may be a hand-made reproducer to turn into a case
        print(f"{rel}: not made by generate.py; delete it or add it as a case", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
