"""A record body cut at its holes: the rest is encoded once and reused as a template.

The generator encodes a body (an input record's fields after the envelope) once and
reuses it for many events; the fields that must differ per subject or per event (the
holes) are encoded on their own and spliced in. ``BodyLayout.template`` turns a record
into a bytes %-format with one ``%b`` per hole, so splicing is one C-level
``template % hole_values``: an Avro record is exactly its field encodings concatenated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streams.avro_fast import Encoder, compile_fields, compile_type

__all__ = ["BodyLayout"]


class BodyLayout:
    """The fields of a body, split at ``holes`` (kept in field order)."""

    def __init__(self, fields: Sequence[Mapping[str, Any]], holes: Iterable[str]) -> None:
        names = [f["name"] for f in fields]
        at = sorted({names.index(h) for h in holes})
        self.holes = tuple(names[i] for i in at)
        starts = [0, *(i + 1 for i in at)]
        ends = [*at, len(names)]
        self._segments = [compile_fields(fields[a:b]) for a, b in zip(starts, ends, strict=True)]
        self.encoders: dict[str, Encoder] = {names[i]: compile_type(fields[i]["type"])
                                             for i in at}

    def template(self, rec: Mapping[str, Any], prefix: bytes = b"") -> bytes:
        """``prefix`` and the body of ``rec`` as a %-format whose ``%b`` are the holes."""
        parts = [prefix + self._segments[0](rec), *(seg(rec) for seg in self._segments[1:])]
        return b"%b".join(p.replace(b"%", b"%%") for p in parts)

    def hole_values(self, rec: Mapping[str, Any],
                    names: Sequence[str] | None = None) -> tuple[bytes, ...]:
        """The encoded values in ``rec`` of the holes ``names`` (default: all, in order)."""
        return tuple([self.encoders[n](rec[n]) for n in names or self.holes])
