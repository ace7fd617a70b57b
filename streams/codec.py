"""Wire format: Confluent framing around schemaless Avro.

    byte 0      magic byte 0
    bytes 1-4   schema id, big-endian unsigned (ids in ``schemas/index.yaml``)
    bytes 5-    schemaless Avro binary of the record

Timestamps are epoch-millis ints and uuids plain strings in memory (the codec reads and
writes with logical types stripped; the bytes are the same). Every failure raises
``SerializationError`` or a subclass; hostile bytes cannot hang the decoder or make it
allocate more than the input's size (fastavro reads from an in-memory buffer, which
returns at most the bytes present, and every byte must be consumed).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Mapping
from typing import Any

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


class Codec:
    """Encodes and decodes records of one schema catalog; schemas parsed once."""

    def __init__(self, catalog: SchemaCatalog) -> None:
        self._catalog = catalog
        self._headers = {s.id: _HEADER.pack(MAGIC, s.id) for s in catalog}

    @property
    def catalog(self) -> SchemaCatalog:
        return self._catalog

    def _schema(self, schema: int | str) -> SchemaInfo:
        info = self._catalog.get(schema)
        if info is None:
            raise UnknownSchemaError(f"unknown schema {schema!r}: not in the schema catalog")
        return info

    def encode(self, schema: int | str, record: Mapping[str, Any]) -> bytes:
        """Frame and encode ``record`` with the schema named by id or name."""
        info = self._schema(schema)
        buf = io.BytesIO()
        buf.write(self._headers[info.id])
        try:
            fastavro.schemaless_writer(buf, info.parsed, record, strict_allow_default=True)
        except Exception as exc:  # fastavro raises ValueError/TypeError/KeyError/...
            raise MalformedRecordError(
                f"record does not encode as {info.name} (id {info.id}): {type(exc).__name__}: {exc}"
            ) from exc
        return buf.getvalue()

    def header(self, schema: int | str) -> bytes:
        """The 5-byte frame header of the schema named by id or name."""
        return self._headers[self._schema(schema).id]

    def encode_many(self, schema: int | str, records: Iterable[Mapping[str, Any]]) -> list[bytes]:
        return [self.encode(schema, r) for r in records]

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Return ``(schema_name, record)`` for one framed message."""
        info, record = self.decode_info(data)
        return info.name, record

    def decode_info(self, data: bytes) -> tuple[SchemaInfo, dict[str, Any]]:
        """Like ``decode`` but returns the full ``SchemaInfo`` (id, role, topic)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FramingError(f"expected bytes, got {type(data).__name__}")
        size = len(data)
        if size < _HEADER.size:
            raise FramingError(f"message of {size} bytes is shorter than the 5-byte header")
        if size > MAX_MESSAGE_BYTES:
            raise FramingError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise FramingError(f"wrong magic byte {magic} (expected {MAGIC})")
        info = self._catalog.get(schema_id)
        if info is None:
            raise UnknownSchemaError(f"unknown schema id {schema_id}")
        buf = io.BytesIO(data)
        buf.seek(_HEADER.size)
        try:
            record = fastavro.schemaless_reader(buf, info.parsed, None)
        except UnicodeDecodeError as exc:
            raise MalformedRecordError(
                f"{info.name} (id {schema_id}): invalid UTF-8: {exc}"
            ) from exc
        except Exception as exc:  # EOFError, ValueError, IndexError, OverflowError, ...
            raise MalformedRecordError(
                f"{info.name} (id {schema_id}): truncated or corrupt Avro body: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if buf.tell() != size:
            raise MalformedRecordError(
                f"{info.name} (id {schema_id}): {size - buf.tell()} trailing bytes after the record"
            )
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
