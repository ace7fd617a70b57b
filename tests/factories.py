"""Seeded sample records for tests: a thin wrapper over the traffic model.

The traffic model is the single source of sample records; these helpers keep the
signatures tests use::

    rng = random.Random(7)
    rec = make_record("PlaybackEvent", rng, subject_id="acct-1")
    events = sample_events(1000, seed=0)          # realistic mix of all input schemas
    consent = make_consent("acct-1", rng, birth_year=1990)

Sensitive sample values use recognisable markers (``@example.com`` e-mails,
``SECRET-`` tokens, ``/media/`` file names) so tests can grep outputs for leaks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from sinks.base import Batch, TopicPartition
from streams import codec
from streams.avro_columns import decode_columns
from streams.traffic_control import server_prefs, subject_request
from streams.traffic_model import BASE_TIME_MS, MIX, email, server_id_for, subject_ids
from streams.traffic_records import RECORDS

__all__ = ["BASE_TIME_MS", "FACTORIES", "MIX", "batch_of", "decoded", "make_consent",
           "make_record", "make_request", "make_servers", "sample_events", "server_id_for",
           "subject_ids"]

FACTORIES = RECORDS


def make_record(schema: str, rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """One valid record of input schema ``schema``; ``overrides`` replace fields."""
    rec = RECORDS[schema](rng, overrides.get("subject_id"))
    rec.update(overrides)
    return rec


def sample_events(n: int, seed: int = 0, subjects: int = 1_000) -> list[tuple[str, dict[str, Any]]]:
    """``n`` (schema_name, record) pairs in the realistic ``MIX``."""
    rng = random.Random(seed)
    sids = subject_ids(subjects)
    return [(name, RECORDS[name](rng, rng.choice(sids)))
            for name in rng.choices(list(MIX), list(MIX.values()), k=n)]


def make_servers(subject_id: str, rng: random.Random, **switches: bool | None
                 ) -> list[dict[str, Any]]:
    """Server preference entries for the subject's two servers (see ``server_id_for``)."""
    return server_prefs(subject_id, rng, 2, **switches)


def make_consent(subject_id: str, rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """A valid ``ConsentRecord`` for ``subject_id`` (an adult in US-CA unless overridden)."""
    rec: dict[str, Any] = {
        "subject_id": subject_id,
        "effective_at": BASE_TIME_MS - 86_400_000,
        "recorded_at": BASE_TIME_MS - 86_400_000,
        "policy_version": "2024-06-28",
        "jurisdiction": "US-CA",
        "birth_year": rng.randint(1950, 2000),
        "age_band": None,
        "managed_profile": False,
        "email": email(rng),
        "targeted_ads": True,
        "activity_sharing": rng.choice((True, False)),
        "nonessential_cookies": rng.choice((True, False)),
        "optional_playback_data": True,
        "limit_sensitive": False,
        "authorized_agents": [],
        "servers": make_servers(subject_id, rng, crash_reports=True, push_notifications=True,
                                optional_telemetry=True, metadata_matching=True),
    }
    rec.update(overrides)
    return rec


def make_request(subject_id: str, rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """A valid ``SubjectRequest`` of any type."""
    kind = rng.choice(("delete", "access", "correct", "opt_out"))
    rec = subject_request(subject_id, email(rng), BASE_TIME_MS + rng.randint(0, 86_400_000),
                          rng, kind)
    rec.update(overrides)
    return rec


def decoded(schema: str, records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """``records`` as a sink receives them: encoded, then decoded by the batch decoder."""
    batch = decode_columns([codec.encode(schema, r) for r in records])
    assert not batch.errors and len(batch.parts) == 1, batch.errors
    return batch.parts[0].table


def batch_of(tp: TopicPartition, schema: str, records: Sequence[Mapping[str, Any]],
             offsets: Sequence[int]) -> Batch:
    return Batch.of(tp, decoded(schema, records), offsets)
