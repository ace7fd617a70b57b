"""A fast schemaless Avro encoder for the traffic generator's hot path.

fastavro's ``schemaless_writer`` costs tens of microseconds per record; the generator
needs a few. ``compile_fields`` turns a run of record fields into one function of a dict
returning the concatenated field encodings (an Avro record is exactly that), byte for
byte what fastavro writes (a unit test checks every input schema). Only the types the
input and control schemas use are supported; anything else raises ``TypeError`` when
compiling, never silently.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["compile_fields", "compile_type", "encode_long", "encode_string"]

Encoder = Callable[[Any], bytes]
_DOUBLE = struct.Struct("<d").pack
# Varints by table: every zig-zag value below 2**14 complete, and every 14-bit chunk in its
# continued form, so a long up to 2**41 (all the generator's timestamps) is at most three
# lookups. Encoding is the generator's per-event cost; the tables take about 1 MB.
_VAR14 = [bytes((z,)) if z < 0x80 else bytes(((z & 0x7F) | 0x80, z >> 7))
          for z in range(1 << 14)]
_CONT14 = [bytes(((z & 0x7F) | 0x80, (z >> 7) | 0x80)) for z in range(1 << 14)]


def encode_long(n: int) -> bytes:
    """Zig-zag varint of a long."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x4000:
        return _VAR14[z]
    if z < 0x1000_0000:
        return _CONT14[z & 0x3FFF] + _VAR14[z >> 14]
    if z < 0x400_0000_0000:
        return _CONT14[z & 0x3FFF] + _CONT14[(z >> 14) & 0x3FFF] + _VAR14[z >> 28]
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def encode_string(s: str) -> bytes:
    b = s.encode()
    return encode_long(len(b)) + b


def _boolean(v: Any) -> bytes:
    return b"\x01" if v else b"\x00"


def _double(v: Any) -> bytes:
    return _DOUBLE(float(v))


def compile_type(t: Any) -> Encoder:
    """An encoder of one value of Avro type ``t`` (as in a parsed schema)."""
    return _type_encoder(t)


def _type_encoder(t: Any) -> Encoder:
    if isinstance(t, list):
        return _union(t)
    if isinstance(t, dict):
        kind = t["type"]
        if kind == "enum":
            index = {s: encode_long(i) for i, s in enumerate(t["symbols"])}
            return index.__getitem__
        if kind == "array":
            return _array(_type_encoder(t["items"]))
        if kind == "map":
            return _map(_type_encoder(t["values"]))
        if kind == "record":
            return compile_fields(t["fields"])
        return _type_encoder(kind)
    simple: dict[str, Encoder] = {"string": encode_string, "long": encode_long,
                                  "int": encode_long, "boolean": _boolean, "double": _double,
                                  "null": lambda v: b""}
    if t not in simple:
        raise TypeError(f"avro_fast: unsupported type {t!r}")
    return simple[t]


def _union(branches: list[Any]) -> Encoder:
    if len(branches) != 2 or branches[0] != "null":
        raise TypeError(f"avro_fast: only [null, T] unions are supported, not {branches!r}")
    inner = _type_encoder(branches[1])

    def enc(v: Any) -> bytes:
        return b"\x00" if v is None else b"\x02" + inner(v)

    return enc


def _array(item: Encoder) -> Encoder:
    def enc(v: Sequence[Any]) -> bytes:
        if not v:
            return b"\x00"
        return encode_long(len(v)) + b"".join(map(item, v)) + b"\x00"

    return enc


def _map(value: Encoder) -> Encoder:
    def enc(v: Mapping[str, Any]) -> bytes:
        if not v:
            return b"\x00"
        return (encode_long(len(v)) + b"".join(encode_string(k) + value(x) for k, x in v.items())
                + b"\x00")

    return enc


def compile_fields(fields: Sequence[Mapping[str, Any]]) -> Callable[[Mapping[str, Any]], bytes]:
    """An encoder of the given record fields (in order) of a dict; missing keys use defaults."""
    plan = [(f["name"], _type_encoder(f["type"]), f.get("default")) for f in fields]

    def enc(record: Mapping[str, Any]) -> bytes:
        get = record.get
        return b"".join([e(get(name, default)) for name, e, default in plan])

    return enc
