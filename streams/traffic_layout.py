"""A record body cut at its holes: the rest is encoded once and reused as a template.

The generator encodes a body (an input record's fields after the envelope) once and
reuses it for many events; the fields that must differ per subject or per event (the
holes) are encoded on their own and spliced in. ``BodyLayout.template`` turns a record
into a bytes %-format with one ``%b`` per run of adjacent holes, so splicing is one C-level
``template % run_values``: an Avro record is exactly its field encodings concatenated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streams.avro_fast import Encoder, compile_fields, compile_type

__all__ = ["BodyLayout"]


class BodyLayout:
    """The fields of a body, split at ``holes``; ``runs`` are the holes grouped into runs
    of adjacent fields, in field order."""

    def __init__(self, fields: Sequence[Mapping[str, Any]], holes: Iterable[str]) -> None:
        names = [f["name"] for f in fields]
        runs: list[list[int]] = []
        for i in sorted({names.index(h) for h in holes}):
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        self.runs = tuple(tuple(names[i] for i in run) for run in runs)
        starts = [0, *(run[-1] + 1 for run in runs)]
        ends = [*(run[0] for run in runs), len(names)]
        self._segments = [compile_fields(fields[a:b]) for a, b in zip(starts, ends, strict=True)]
        self.encoders: dict[str, Encoder] = {names[i]: compile_type(fields[i]["type"])
                                             for run in runs for i in run}

    def template(self, rec: Mapping[str, Any], prefix: bytes = b"") -> bytes:
        """``prefix`` and the body of ``rec`` as a %-format, one ``%b`` per run of holes."""
        parts = [prefix + self._segments[0](rec), *(seg(rec) for seg in self._segments[1:])]
        return b"%b".join(p.replace(b"%", b"%%") for p in parts)

    def encode(self, rec: Mapping[str, Any], names: Iterable[str]) -> bytes:
        """The encodings of the holes ``names`` in ``rec``, concatenated."""
        return b"".join([self.encoders[n](rec[n]) for n in names])

    def run_values(self, rec: Mapping[str, Any]) -> tuple[bytes, ...]:
        """What fills each run of holes in ``template``, from ``rec``."""
        return tuple([self.encode(rec, run) for run in self.runs])
