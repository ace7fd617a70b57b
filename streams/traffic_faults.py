"""Bad records: a share of the generated input messages, broken the ways real ones break."""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["RAW_TOPICS", "corrupt"]

RAW_TOPICS = ("raw.playback", "raw.activity", "raw.server")


def corrupt(rng: random.Random, kind: str, topic: str, key: bytes, value: bytes,
            keys: Sequence[bytes]) -> tuple[str, bytes, bytes]:
    """The message (topic, key, value) broken as ``kind`` (one of ``BAD_KINDS``); ``keys``
    are every subject's key (a mismatched key is another subject's)."""
    if kind == "truncated":
        value = value[:rng.randint(6, len(value) - 1)]
    elif kind == "wrong_magic":
        value = bytes([rng.randint(1, 255)]) + value[1:]
    elif kind == "unknown_schema":
        value = b"\x00" + rng.randint(9_000, 9_999).to_bytes(4, "big") + value[5:]
    elif kind == "random_bytes":
        value = bytes([rng.randint(1, 255)]) + rng.randbytes(rng.randint(4, 60))
    elif kind == "wrong_topic":
        topic = rng.choice([t for t in RAW_TOPICS if t != topic])
    elif kind == "key_mismatch":
        other = rng.randrange(len(keys))
        key = keys[other if keys[other] != key else (other + 1) % len(keys)]
    else:
        raise ValueError(f"unknown bad record kind {kind!r}")
    return topic, key, value
