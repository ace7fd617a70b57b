"""The generator's encoding shortcuts write exactly what fastavro writes (issue 8).

The hand-written encoder, the spliced templates and the bulk varints exist only for
speed; each is checked byte for byte against fastavro or the plain encoder.
"""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import numpy as np
import pytest

from streams.avro_fast import compile_fields, compile_type, encode_long
from streams.codec import default_codec
from streams.traffic_control import consent_change, consent_record, subject_request
from streams.traffic_layout import BodyLayout
from streams.traffic_model import FastRandom, Population, TrafficConfig
from streams.traffic_records import RECORDS
from streams.traffic_templates import SERVER_SCHEMAS, SUBJECT_FIELDS
from streams.traffic_varints import encode_longs, encode_times, encode_under_2_27

LONGS = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8193, 2**27, 2**28, 2**41 - 1, 2**41,
         -2**41, 2**62, -2**63, 2**63 - 1]


def _fastavro(schema: Any, value: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, value)
    return buf.getvalue()


def test_encode_long_matches_fastavro() -> None:
    rng = random.Random(1)
    values = LONGS + [rng.randint(-2**63, 2**63 - 1) for _ in range(2_000)] \
        + [rng.randint(-2**45, 2**45) for _ in range(2_000)]
    for v in values:
        assert encode_long(v) == _fastavro("long", v), v


@pytest.mark.parametrize("schema", ["ConsentRecord", "SubjectRequest"])
def test_control_record_encoder_matches_fastavro(schema: str) -> None:
    info = default_codec().catalog.get(schema)
    assert info is not None
    enc = compile_fields(info.parsed["fields"])
    rng = random.Random(2)
    population = Population(TrafficConfig(seed=2, subjects=200))
    for subject in population.subjects:
        if schema == "ConsentRecord":
            rec = consent_record(subject, 1_700_000_000_000, rng)
            rec = consent_change(rec, 1_700_000_000_001, rng) if rng.random() < 0.5 else rec
        else:
            rec = subject_request(subject.subject_id, subject.email, 1_700_000_000_000, rng)
        assert enc(rec) == _fastavro(info.parsed, rec)


@pytest.mark.parametrize("schema", sorted(RECORDS))
def test_spliced_template_matches_fastavro(schema: str) -> None:
    """A body template with its holes filled is the record's encoding, '%' bytes too."""
    info = default_codec().catalog.get(schema)
    assert info is not None
    body = info.parsed["fields"][4:]
    holes = SUBJECT_FIELDS.get(schema, ("server_id",) if schema in SERVER_SCHEMAS else ())
    layout = BodyLayout(body, (*holes, *(f["name"] for f in body[::3])))
    whole = compile_fields(body)
    strings = {f["name"] for f in body if f["type"] in ("string", ["null", "string"])}
    rng = random.Random(3)
    for n in range(100):
        rec = RECORDS[schema](rng, None)
        if n % 2:  # '%' in every string, and in a length byte (0x25: the zig-zag of -19)
            rec = {k: f"%{v}%" if k in strings and v is not None else v
                   for k, v in rec.items()}
            rec.update({k: -19 for k in ("file_count", "item_count", "latency_ms") if k in rec})
        assert layout.template(rec, b"\x25") % layout.run_values(rec) == b"\x25" + whole(rec)


def test_compile_type_matches_fastavro() -> None:
    assert compile_type(["null", "string"])("a%b") == _fastavro(["null", "string"], "a%b")
    assert compile_type(["null", "string"])(None) == b"\x00"
    assert compile_type("boolean")(True) == _fastavro("boolean", True)


def test_bulk_longs_match_encode_long() -> None:
    times = np.array([1_767_225_600_000 + i * 17 for i in range(1_000)], np.int64)
    assert encode_longs(times) == [encode_long(int(t)) for t in times]
    rng = random.Random(4)
    mixed = LONGS + [rng.randint(-2**63, 2**63 - 1) for _ in range(1_000)] \
        + [rng.randint(-20_000, 20_000) for _ in range(1_000)]
    assert encode_longs(mixed) == [encode_long(v) for v in mixed]
    assert encode_longs([]) == []


def test_event_times_in_two_pieces_are_their_longs() -> None:
    for start in (1_767_225_600_000, 0, 8_000, -5):
        times = np.cumsum(np.random.default_rng(1).integers(0, 41, 20_000)) + start
        lows, highs = encode_times(times)
        assert [a + b for a, b in zip(lows, highs, strict=True)] == encode_longs(times)
    assert [p.size for p in encode_times([])] == [0, 0]


def test_longs_under_2_27_in_two_pieces_are_their_longs() -> None:
    values = np.array([0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8193, 2**20, 10_800_000,
                       2**27 - 1, -2**27])
    first, rest = encode_under_2_27(values)
    assert [a + b for a, b in zip(first, rest, strict=True)] == encode_longs(values)
    with pytest.raises(ValueError):
        encode_under_2_27(np.array([2**27]))


def test_fast_random_draws_cover_their_ranges_evenly() -> None:
    rng = FastRandom(5)
    draws = [rng.randint(1, 6) for _ in range(60_000)]
    counts = np.bincount(draws, minlength=7)[1:]
    assert set(draws) == set(range(1, 7))
    assert np.all(np.abs(counts / 60_000 - 1 / 6) < 0.01)
    assert {rng.randrange(3) for _ in range(1_000)} == {0, 1, 2}
    assert {rng.choice("ab") for _ in range(1_000)} == {"a", "b"}
    assert 0 <= rng.randrange(10**15) < 10**15  # beyond 2**40: the exact method
    with pytest.raises(IndexError):
        rng.choice([])
