"""Independent parsers for what a SIEM receives from Bulkhead (tests only, stdlib only).

Written from the specifications, not from controller/siem/:
  * RFC 6587 / RFC 5425 octet counting: "<length> <message>" back to back;
  * RFC 5424 header and structured data (SD-PARAM values escape '"', '\\' and ']');
  * ArcSight CEF: seven '|'-separated header fields ('\\' and '|' escaped), extension
    key=value pairs separated by spaces, values escaping '\\', '=' and line breaks (\\n, \\r);
  * IBM QRadar LEEF 2.0: five header fields, the delimiter field (a character or its hex
    value "x09" / "0x09"), attributes split by the delimiter and at their first '=';
  * OCSF: one compact JSON object (duplicate keys refused).

Every parser raises ParseError with a reason on input that does not follow its grammar, so a
malformed message is a failed check, never a silently skipped line.
"""
import json
import re


class ParseError(ValueError):
    pass


# ----------------------------------------------------------------- octet counting --

def split_octet_counted(data: bytes):
    """RFC 6587 3.4.1 octet counting: returns the messages (bytes). The whole buffer must
    be consumed: a short or overlong frame is an error."""
    out = []
    i = 0
    while i < len(data):
        sp = data.find(b" ", i, i + 12)
        if sp <= i:
            raise ParseError(f"offset {i}: no MSG-LEN followed by a space: {data[i:i + 40]!r}")
        digits = data[i:sp]
        if not digits.isdigit() or digits.startswith(b"0"):
            raise ParseError(f"offset {i}: MSG-LEN {digits!r} is not a non-zero decimal")
        n = int(digits)
        start = sp + 1
        if start + n > len(data):
            raise ParseError(f"offset {i}: frame of {n} bytes runs past the end ({len(data) - start} left)")
        out.append(data[start:start + n])
        i = start + n
    return out


# ------------------------------------------------------------------------ RFC 5424 --

_HEADER = re.compile(rb"<(\d{1,3})>(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) ")
_TIMESTAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$")
_SD_NAME = re.compile(rb"[\x21-\x7e]{1,32}")


def _sd_name(data, i, stop):
    j = i
    while j < len(data) and data[j:j + 1] not in stop and 0x21 <= data[j] <= 0x7e:
        j += 1
    name = data[i:j]
    if not name or len(name) > 32 or not _SD_NAME.fullmatch(name):
        raise ParseError(f"bad SD name at {i}: {data[i:i + 20]!r}")
    return name.decode("ascii"), j


def parse_rfc5424(message: bytes):
    """One RFC 5424 message -> dict(pri, facility, severity, version, timestamp, hostname,
    app_name, procid, msgid, sd: {sd_id: {param: value}}, sd_order, msg: bytes)."""
    m = _HEADER.match(message)
    if not m:
        raise ParseError(f"not an RFC 5424 header: {message[:80]!r}")
    pri = int(m.group(1))
    if pri > 191 or (m.group(1).startswith(b"0") and m.group(1) != b"0"):
        raise ParseError(f"PRI {m.group(1)!r} out of range")
    out = {"pri": pri, "facility": pri // 8, "severity": pri % 8, "version": int(m.group(2))}
    names = ("timestamp", "hostname", "app_name", "procid", "msgid")
    limits = (None, 255, 48, 128, 32)
    for k, (name, limit) in enumerate(zip(names, limits)):
        raw = m.group(3 + k)
        if any(b < 33 or b > 126 for b in raw):
            raise ParseError(f"{name} has non-printable bytes")
        if limit and len(raw) > limit:
            raise ParseError(f"{name} longer than {limit}")
        out[name] = raw.decode("ascii")
    if out["timestamp"] != "-" and not _TIMESTAMP.match(out["timestamp"]):
        raise ParseError(f"TIMESTAMP {out['timestamp']} is not RFC 3339")
    i = m.end()
    sd = {}
    order = []
    if message[i:i + 1] == b"-":
        i += 1
    elif message[i:i + 1] == b"[":
        while message[i:i + 1] == b"[":
            sd_id, i = _sd_name(message, i + 1, (b" ", b"]", b"=", b'"'))
            if sd_id in sd:
                raise ParseError(f"SD-ID {sd_id} twice")
            params = {}
            while message[i:i + 1] == b" ":
                name, i = _sd_name(message, i + 1, (b" ", b"]", b"=", b'"'))
                if message[i:i + 2] != b'="':
                    raise ParseError(f"SD-PARAM {name}: no =\" at {i}")
                i += 2
                value = bytearray()
                while True:
                    if i >= len(message):
                        raise ParseError("unterminated SD-PARAM value")
                    c = message[i:i + 1]
                    if c == b"\\" and message[i + 1:i + 2] in (b'"', b"\\", b"]"):
                        value += message[i + 1:i + 2]
                        i += 2
                    elif c == b'"':
                        i += 1
                        break
                    elif c == b"]":
                        raise ParseError("unescaped ] inside an SD-PARAM value")
                    else:
                        value += c
                        i += 1
                params[name] = value.decode("utf-8")
            if message[i:i + 1] != b"]":
                raise ParseError(f"SD-ELEMENT {sd_id} not closed at {i}: {message[i:i + 20]!r}")
            i += 1
            sd[sd_id] = params
            order.append(sd_id)
    else:
        raise ParseError(f"no STRUCTURED-DATA at {i}")
    if i == len(message):
        msg = b""
    elif message[i:i + 1] == b" ":
        msg = message[i + 1:]
    else:
        raise ParseError(f"no space between STRUCTURED-DATA and MSG at {i}")
    if msg.startswith(b"\xef\xbb\xbf"):
        raise ParseError("MSG starts with a BOM (CEF/LEEF parsers expect the text first)")
    out.update(sd=sd, sd_order=order, msg=msg)
    return out


# ------------------------------------------------------------------------------ CEF --

def _split_header(text, count, what):
    """The first `count` fields separated by unescaped '|' ('\\|' and '\\\\' unescaped),
    and the rest of the text after the count-th '|'."""
    fields = []
    cur = []
    i = 0
    while len(fields) < count:
        if i >= len(text):
            raise ParseError(f"{what}: {len(fields)} header fields, want {count}")
        c = text[i]
        if c == "\\":
            n = text[i + 1:i + 2]
            if n not in ("\\", "|"):
                raise ParseError(f"{what}: bad header escape \\{n}")
            cur.append(n)
            i += 2
        elif c == "|":
            fields.append("".join(cur))
            cur = []
            i += 1
        else:
            cur.append(c)
            i += 1
    return fields, text[i:]


def parse_cef(text: str):
    """-> dict(version, vendor, product, product_version, signature, name, severity,
    ext: {key: value}, ext_order: [keys])."""
    if not text.startswith("CEF:"):
        raise ParseError("CEF: does not start with CEF:")
    fields, rest = _split_header(text[4:], 7, "CEF")
    out = dict(zip(("version", "vendor", "product", "product_version", "signature", "name", "severity"), fields))
    pairs = []
    if rest:
        m = re.match(r"([A-Za-z0-9_]+)=", rest)
        if not m:
            raise ParseError(f"CEF extension does not start with key=: {rest[:40]!r}")
        key = m.group(1)
        value = []
        i = m.end()
        while i < len(rest):
            c = rest[i]
            if c == "\\":
                n = rest[i + 1:i + 2]
                unescaped = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}.get(n)
                if unescaped is None:
                    raise ParseError(f"CEF extension {key}: bad escape \\{n}")
                # a sentinel keeps an escaped '=' or space from looking like a separator
                value.append(("esc", unescaped))
                i += 2
            elif c == "=":
                # an unescaped '=' ends the previous value: the word before it is the next key
                k = len(value) - 1
                while k >= 0 and value[k] != ("lit", " "):
                    if value[k][0] == "esc" or not re.fullmatch(r"[A-Za-z0-9_]", value[k][1]):
                        raise ParseError(f"CEF extension {key}: unescaped '=' inside a value")
                    k -= 1
                if k < 0 or k == len(value) - 1:
                    raise ParseError(f"CEF extension {key}: unescaped '=' inside a value")
                pairs.append((key, "".join(v for _, v in value[:k])))
                key = "".join(v for _, v in value[k + 1:])
                value = []
                i += 1
            else:
                value.append(("lit", c))
                i += 1
        pairs.append((key, "".join(v for _, v in value)))
    ext = {}
    for k, v in pairs:
        if k in ext:
            raise ParseError(f"CEF extension key {k} twice")
        ext[k] = v
    out["ext"] = ext
    out["ext_order"] = [k for k, _ in pairs]
    return out


# ----------------------------------------------------------------------------- LEEF --

def parse_leef(text: str):
    """LEEF 2.0 -> dict(version, vendor, product, product_version, event_id, delimiter,
    attrs: {key: value}, attr_order)."""
    if not text.startswith("LEEF:"):
        raise ParseError("LEEF: does not start with LEEF:")
    fields, rest = _split_header(text[5:], 6, "LEEF")
    version, vendor, product, product_version, event_id, delim_spec = fields
    if version != "2.0":
        raise ParseError(f"LEEF version {version}, want 2.0")
    if re.fullmatch(r"(0x|x)[0-9A-Fa-f]{2,4}", delim_spec):
        delimiter = chr(int(delim_spec.split("x", 1)[1], 16))
    elif len(delim_spec) == 1:
        delimiter = delim_spec
    else:
        raise ParseError(f"LEEF delimiter field {delim_spec!r} is neither a character nor its hex value")
    attrs = {}
    order = []
    for part in rest.split(delimiter) if rest else []:
        if "=" not in part:
            raise ParseError(f"LEEF attribute without '=': {part[:40]!r}")
        k, v = part.split("=", 1)
        if not k or k in attrs:
            raise ParseError(f"LEEF attribute key {k!r} empty or twice")
        if "\n" in v or "\r" in v:
            raise ParseError(f"LEEF attribute {k} holds a line break")
        attrs[k] = v
        order.append(k)
    return dict(version=version, vendor=vendor, product=product, product_version=product_version,
                event_id=event_id, delimiter=delimiter, attrs=attrs, attr_order=order)


# ----------------------------------------------------------------------------- OCSF --

def parse_ocsf(text: str):
    def no_duplicates(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise ParseError(f"OCSF: key {k} twice")
            out[k] = v
        return out
    try:
        value = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise ParseError(f"OCSF: not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ParseError("OCSF: not a JSON object")
    return value


def get_path(obj, path):
    """'a.b.0.c' -> obj['a']['b'][0]['c'], or KeyError."""
    for part in path.split("."):
        if isinstance(obj, list):
            obj = obj[int(part)]
        else:
            obj = obj[part]
    return obj
