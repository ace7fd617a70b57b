"""Master-key rotation: re-wrap every subject key and the deletion-ledger key.

Rotation re-wraps; the subject keys themselves, and so every pseudonym, stay the same.
Procedure: (1) roll the workers to ``PRIVACY_PIPELINE_MASTER_KEY=new`` with
``PRIVACY_PIPELINE_PREVIOUS_MASTER_KEYS=old`` (they unwrap both and wrap new keys under the
new one); (2) ``privacy-pipeline keys rotate`` re-wraps what is still under an old key;
(3) remove the old key from ``PRIVACY_PIPELINE_PREVIOUS_MASTER_KEYS``.

Workers keep writing the vault meanwhile (new keys, tombstones when a subject is erased).
A re-wrapped entry landing after a worker's tombstone would bring a shredded key back, so
after writing, ``rotate`` reads what was appended meanwhile and writes again, after its own
entry, the latest record a worker wrote for that subject before it (the worker's record
wins, as it would have without the rotation).

``plan_rewraps`` is pure; ``rotate`` is the Kafka I/O around it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from streams import kafka_clients
from streams.codec import Codec, default_codec
from streams.errors import BrokerError
from streams.key_vault import Keyring
from streams.ledger import LEDGER_KEY_ID
from streams.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["plan_rewraps", "rotate"]

Offsets = dict[int, int]


def plan_rewraps(vault: Mapping[bytes, bytes | None], ledger_key: bytes | None,
                 keyring: Keyring, codec: Codec) -> tuple[dict[bytes, bytes], bytes | None]:
    """(vault records to write, new ledger-key value) for entries not under the current key.

    ``vault`` is the latest value per key of the vault topic (None = tombstone: skipped).
    Raises ``KeyVaultError`` if an entry cannot be unwrapped with any key of ``keyring``.
    """
    out: dict[bytes, bytes] = {}
    for key, value in vault.items():
        if value is None:
            continue
        _, entry = codec.decode(value)
        if keyring.needs_rewrap(entry["wrapped_key"]):
            entry["wrapped_key"] = keyring.rewrap(entry["subject_id"], entry["wrapped_key"])
            out[key] = codec.encode("KeyVaultEntry", entry)
    new_ledger = None
    if ledger_key is not None and keyring.needs_rewrap(ledger_key):
        new_ledger = keyring.rewrap(LEDGER_KEY_ID, ledger_key)
    return out, new_ledger


def _read(bootstrap: str, topic: str, start: Offsets | None,
          timeout: float = 120.0) -> tuple[list[Any], Offsets]:
    """Committed messages of ``topic`` from ``start`` (default: the beginning) to the end
    as it is now; returns them and the end offsets."""
    reader = kafka_clients.consumer(bootstrap, f"rotate-{uuid.uuid4().hex}",
                                    **{"isolation.level": "read_committed"})
    try:
        md = reader.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions)
        ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts}
        begin = {p: (start or {}).get(p, 0) for p in parts}
        pending = {p for p in parts if begin[p] < ends[p]}
        reader.assign([TopicPartition(topic, p, begin[p]) for p in pending])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in reader.consume(10_000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise BrokerError(f"reading {topic}: {err.str()}")
                out.append(msg)
                if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                    pending.discard(msg.partition())
            # Transaction markers take offsets too: past the last record is the end.
            for tp in reader.position([TopicPartition(topic, p) for p in pending]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
        if pending:
            raise BrokerError(f"reading {topic} did not reach the end of {sorted(pending)}")
        return out, ends
    finally:
        reader.close()


def _write(bootstrap: str, topic: str, records: Mapping[bytes, bytes | None]) -> None:
    producer = kafka_clients.producer(bootstrap)
    for key, value in records.items():
        producer.produce(topic, key=key, value=value)
    if producer.flush(60) != 0:
        raise BrokerError(f"writing re-wrapped keys to {topic} timed out")


def _repair(bootstrap: str, topic: str, ours: Mapping[bytes, bytes | None],
            since: Offsets) -> int:
    """Re-write every record another writer put before ours, appended since ``since``."""
    appended, _ = _read(bootstrap, topic, since)
    before: dict[bytes, bytes | None] = {}
    landed: set[bytes] = set()
    for msg in appended:
        key = msg.key()
        if key not in ours or key in landed:
            continue
        if msg.value() is not None and msg.value() == ours[key]:
            landed.add(key)
        else:
            before[key] = msg.value()
    if before:
        log.warning("key rotation: %d keys were written meanwhile; re-writing those records",
                    len(before))
        _write(bootstrap, topic, before)
    return len(before)


def rotate(settings: Settings, new_master_key: bytes) -> int:
    """Re-wrap every live vault entry and the ledger key under ``new_master_key``.

    Old entries are unwrapped with the settings' master key and previous master keys.
    Returns how many records were re-wrapped.
    """
    keyring = Keyring(new_master_key, (settings.master_key, *settings.previous_master_keys))
    codec = default_codec()
    bootstrap, cat = settings.kafka_bootstrap, settings.catalog
    vault_msgs, vault_end = _read(bootstrap, cat.key_vault.name, None)
    ledger_msgs, ledger_end = _read(bootstrap, cat.deletion_ledger.name, None)
    vault = {m.key(): m.value() for m in vault_msgs if m.key() is not None}
    ledger_key = None
    for m in ledger_msgs:
        if m.key() == LEDGER_KEY_ID.encode():
            ledger_key = m.value()
    entries, new_ledger = plan_rewraps(vault, ledger_key, keyring, codec)
    _write(bootstrap, cat.key_vault.name, entries)
    _repair(bootstrap, cat.key_vault.name, entries, vault_end)
    if new_ledger is not None:
        ledger_record: dict[bytes, bytes | None] = {LEDGER_KEY_ID.encode(): new_ledger}
        _write(bootstrap, cat.deletion_ledger.name, ledger_record)
        _repair(bootstrap, cat.deletion_ledger.name, ledger_record, ledger_end)
    n = len(entries) + (new_ledger is not None)
    log.info("key rotation: re-wrapped %d of %d vault entries%s", len(entries),
             sum(v is not None for v in vault.values()),
             " and the ledger key" if new_ledger is not None else "")
    return n
