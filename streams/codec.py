"""Wire format: Confluent framing around schemaless Avro.

    byte 0      magic byte 0
    bytes 1-4   schema id, big-endian unsigned (ids in ``schemas/index.yaml``)
    bytes 5-    schemaless Avro binary of the record

Timestamps are epoch-millis ints and uuids plain strings in memory (the codec reads and
writes with logical types stripped; the bytes are the same). Every failure raises
``SerializationError`` or a subclass; hostile bytes cannot hang the decoder or make it
allocate more than the input's size (the reader checks every length against the bytes
present), and every byte must be consumed.

Decoding (every consumed event) uses cavro's compiled schemas: about 40% of the
instructions fastavro's reader spends on an input event; encoding stays with fastavro,
which is the cheaper writer for the map-heavy output records (callgrind counts in
issue 4's note). A unit test checks both directions against fastavro on every schema.
cavro does not report where a decode stopped, so the body is decoded followed by a
random 8-byte end marker read as an Avro ``fixed``: a record that does not end exactly
where the message does reads something else there (or runs out of input) and is
rejected as having trailing bytes.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import cavro
import fastavro

from streams.errors import SerializationError
from streams.schema_catalog import SchemaCatalog, SchemaInfo, default_catalog

__all__ = [
    "MAGIC",
    "Codec",
    "FramingError",
    "MalformedRecordError",
    "UnknownSchemaError",
    "decode",
    "default_codec",
    "encode",
    "schema_id_of",
]

MAGIC = 0
_HEADER = struct.Struct(">bI")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # larger than any broker message we accept


class FramingError(SerializationError):
    """The bytes are not Confluent-framed (too short, wrong magic byte, too large)."""


class UnknownSchemaError(SerializationError):
    """The framing names a schema id (or the caller a name) the catalog does not hold."""


class MalformedRecordError(SerializationError):
    """The Avro body does not decode with its schema, or a record does not encode."""


_OPTIONS = cavro.DEFAULT_OPTIONS.replace(
    logical_types=(),  # ints and strings in memory, as documented above
    record_decodes_to_dict=True,
)


def _end_marker() -> bytes:
    """8 random bytes with no period: a shifted copy never matches itself."""
    while True:
        marker = os.urandom(8)
        if all(marker[k:] != marker[:-k] for k in range(1, 8)):
            return marker


class Codec:
    """Encodes and decodes records of one schema catalog; schemas compiled once."""

    def __init__(self, catalog: SchemaCatalog) -> None:
        self._catalog = catalog
        self._end = _end_marker()
        # by id and by name: (info, header, decoder of body + end marker); every schema
        # is self-contained (no named type defined in another file).
        self._schemas: dict[int | str, tuple[SchemaInfo, bytes, Callable[[bytes], Any]]] = {}
        for info in catalog:
            framed = cavro.Schema(
                {"type": "record", "name": "Framed", "namespace": "_codec",
                 "fields": [{"name": "body", "type": info.raw},
                            {"name": "end", "type": {"type": "fixed", "name": "End",
                                                     "size": len(self._end)}}]},
                options=_OPTIONS)
            entry = (info, _HEADER.pack(MAGIC, info.id), framed.binary_decode)
            self._schemas[info.id] = self._schemas[info.name] = entry

    @property
    def catalog(self) -> SchemaCatalog:
        return self._catalog

    def encode(self, schema: int | str, record: Mapping[str, Any]) -> bytes:
        """Frame and encode ``record`` with the schema named by id or name."""
        entry = self._schemas.get(schema)
        if entry is None:
            raise UnknownSchemaError(f"unknown schema {schema!r}: not in the schema catalog")
        info, header, _ = entry
        buf = io.BytesIO()
        buf.write(header)
        try:
            fastavro.schemaless_writer(buf, info.parsed, record, strict_allow_default=True)
        except Exception as exc:  # fastavro raises ValueError/TypeError/KeyError/...
            raise MalformedRecordError(
                f"record does not encode as {info.name} (id {info.id}): {type(exc).__name__}: {exc}"
            ) from exc
        return buf.getvalue()

    def encode_many(self, schema: int | str, records: Iterable[Mapping[str, Any]]) -> list[bytes]:
        return [self.encode(schema, r) for r in records]

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return ``(schema_name, record)`` for one framed message."""
        info, record = self.decode_info(data)
        return info.name, record

    def decode_info(self, data: bytes) -> tuple[SchemaInfo, dict[str, Any]]:
        """Like ``decode`` but returns the full ``SchemaInfo`` (id, role, topic)."""
        if not isinstance(data, bytes):
            if not isinstance(data, bytearray | memoryview):
                raise FramingError(f"expected bytes, got {type(data).__name__}")
            data = bytes(data)
        size = len(data)
        if size < _HEADER.size:
            raise FramingError(f"message of {size} bytes is shorter than the 5-byte header")
        if size > MAX_MESSAGE_BYTES:
            raise FramingError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise FramingError(f"wrong magic byte {magic} (expected {MAGIC})")
        entry = self._schemas.get(schema_id)
        if entry is None:
            raise UnknownSchemaError(f"unknown schema id {schema_id}")
        info, _, read = entry
        try:
            framed = read(data[_HEADER.size:] + self._end)
        except UnicodeDecodeError as exc:
            raise MalformedRecordError(
                f"{info.name} (id {schema_id}): invalid UTF-8: {exc}"
            ) from exc
        except Exception as exc:  # EOFError, ValueError, IndexError, OverflowError, ...
            raise MalformedRecordError(
                f"{info.name} (id {schema_id}): truncated or corrupt Avro body: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if framed["end"] != self._end:
            raise MalformedRecordError(
                f"{info.name} (id {schema_id}): trailing bytes after the record")
        record = framed["body"]
        if not isinstance(record, dict):
            raise MalformedRecordError(f"{info.name} (id {schema_id}): body is not a record")
        return info, record

    def decode_many(self, messages: Iterable[bytes]) -> list[tuple[str, dict[str, Any]]]:
        return [self.decode(m) for m in messages]


def schema_id_of(data: bytes) -> int:
    """The schema id in a framed message's header (no body decoding)."""
    if len(data) < _HEADER.size or data[0] != MAGIC:
        raise FramingError("not a Confluent-framed message")
    return int(_HEADER.unpack_from(data)[1])


_default: Codec | None = None


def default_codec() -> Codec:
    """A codec over the shipped schema catalog (built once)."""
    global _default
    if _default is None:
        _default = Codec(default_catalog())
    return _default


def encode(schema: int | str, record: Mapping[str, Any]) -> bytes:
    """Encode with the shipped catalog; see ``Codec.encode``."""
    return default_codec().encode(schema, record)


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decode with the shipped catalog; see ``Codec.decode``."""
    return default_codec().decode(data)
