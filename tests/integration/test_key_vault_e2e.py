"""The key vault on the real broker: restore, master-key rotation, crypto-shredding.

Pseudonyms are stable across worker restarts (keys restored from the vault topic) and
across a master-key rotation (subject keys re-wrapped, not replaced); after a subject's
consent tombstone the worker tombstones the vault entry, forgets the key, and a later
event of that subject gets a different pseudonym: the old one cannot be re-derived.
"""

from __future__ import annotations

import base64
import os
import random
from pathlib import Path
from typing import Any

import pytest

from streams.codec import default_codec
from streams.key_rotation import rotate
from streams.key_vault import Keyring, KeyVaultError, fingerprint
from streams.ledger import LEDGER_KEY_ID, Ledger, ref_for
from streams.settings import Settings
from tests.factories import make_consent, make_record
from tests.integration.harness import (
    decoded,
    pipeline_settings,
    produce,
    produce_events,
    read_topic,
    running_worker,
)

SUBJECTS = [f"vault-{i}" for i in range(6)]


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _plays(subjects: list[str], seed: int) -> list[tuple[str, dict[str, Any]]]:
    """One catalog play per subject (always reaches analytics)."""
    rng = random.Random(seed)
    return [("PlaybackEvent", make_record(
        "PlaybackEvent", rng, subject_id=s, content_source="catalog", event_type="play",
        data_tier="required", managed_profile=False, file_name=None)) for s in subjects]


def _pseudonyms(settings: Settings, events: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """subject id -> analytics pseudonym of ``events`` (read until every event is there)."""
    subject_of = {e["event_id"]: e["subject_id"] for _, e in events}
    msgs = read_topic(settings.kafka_bootstrap, settings.catalog.analytics.name,
                      until=lambda m: subject_of.keys() <= {r["event_id"] for r in decoded(m)},
                      timeout=90)
    return {subject_of[r["event_id"]]: r["subject_pseudonym"] for r in decoded(msgs)
            if r["event_id"] in subject_of}


def _vault(settings: Settings) -> dict[str, bytes | None]:
    """subject id -> last vault record value (None: tombstone)."""
    return {m.key().decode(): m.value()
            for m in read_topic(settings.kafka_bootstrap, settings.catalog.key_vault.name)}


def _setup(bootstrap: str, home: Path, prefix: str, master: bytes) -> Settings:
    settings = pipeline_settings(bootstrap, home, prefix, PRIVACY_PIPELINE_MASTER_KEY=_b64(master))
    rng = random.Random(1)
    produce(settings, settings.catalog.consent.name,
            [(s, make_consent(s, rng)) for s in SUBJECTS], schema="ConsentRecord")
    return settings


def test_pseudonyms_stable_across_worker_restart(kafka_bootstrap: str, unique: str,
                                                 tmp_path: Path) -> None:
    """Issue 4 key vault: a restarted worker restores subject keys from the vault topic
    and derives the same pseudonyms; it writes no new key for a known subject."""
    settings = _setup(kafka_bootstrap, tmp_path, f"vault-a-{unique}.", os.urandom(32))
    first, second = _plays(SUBJECTS, 1), _plays(SUBJECTS, 2)
    produce_events(settings, first)
    with running_worker(settings):
        before = _pseudonyms(settings, first)
    produce_events(settings, second)
    with running_worker(settings) as worker:
        after = _pseudonyms(settings, second)
        held = {s for store in worker.stores.values() for s in store.keys}
    assert before == after and len(set(before.values())) == len(SUBJECTS)
    assert set(SUBJECTS) <= held
    vault = read_topic(kafka_bootstrap, settings.catalog.key_vault.name)
    assert sorted(m.key().decode() for m in vault) == sorted(SUBJECTS)  # one key each


def test_master_key_rotation_leaves_pseudonyms_unchanged(kafka_bootstrap: str, unique: str,
                                                         tmp_path: Path) -> None:
    """Issue 4: re-wrapping every vault entry (and the ledger key) under a new master key,
    then running with only the new key, gives the same pseudonyms; the old key can no
    longer unwrap anything, and the deletion ledger still works (C15)."""
    old, new = os.urandom(32), os.urandom(32)
    settings = _setup(kafka_bootstrap, tmp_path / "old", f"vault-b-{unique}.", old)
    cat = settings.catalog
    ledger = Ledger(Keyring(old))
    ledger_key = ledger.new_key_record()
    assert ledger.key is not None
    # The ledger value's format belongs to the requests work; the worker reads only keys.
    produce(settings, cat.deletion_ledger.name,
            [(LEDGER_KEY_ID, ledger_key[1]), (ref_for(ledger.key, "vault-erased"), b"erased")])
    first = _plays(SUBJECTS, 1)
    produce_events(settings, first)
    with running_worker(settings):
        before = _pseudonyms(settings, first)

    assert rotate(settings, new) == len(SUBJECTS) + 1  # every subject key + the ledger key
    for subject, value in _vault(settings).items():
        assert value is not None
        wrapped = default_codec().decode(value)[1]["wrapped_key"]
        assert wrapped[1:9] == fingerprint(new)
        with pytest.raises(KeyVaultError):
            Keyring(old).unwrap(subject, wrapped)
    assert rotate(settings, new) == 0  # idempotent: nothing left under the old key

    rotated = pipeline_settings(kafka_bootstrap, tmp_path / "new", f"vault-b-{unique}.",
                                PRIVACY_PIPELINE_MASTER_KEY=_b64(new))
    second = _plays(SUBJECTS, 2)
    erased = _plays(["vault-erased"], 3)
    produce_events(rotated, second + erased)
    with running_worker(rotated):
        after = _pseudonyms(rotated, second)
        drops = read_topic(kafka_bootstrap, cat.drops.name, until=lambda m: len(m) >= 1)
    assert before == after
    assert [(d["event_id"], d["reason"], d["clause"]) for d in decoded(drops)] == [
        (erased[0][1]["event_id"], "subject_erased", "C15")]


def test_consent_tombstone_shreds_the_subject_key(kafka_bootstrap: str, unique: str,
                                                  tmp_path: Path) -> None:
    """Issue 4 crypto-shredding: after a subject's consent tombstone the worker tombstones
    its vault entry and forgets the key; the subject's later events get a new pseudonym,
    also after a restart, so the old pseudonym cannot be re-derived by any component."""
    settings = _setup(kafka_bootstrap, tmp_path, f"vault-c-{unique}.", os.urandom(32))
    cat = settings.catalog
    gone, kept = SUBJECTS[0], SUBJECTS[1]
    first = _plays([gone, kept], 1)
    produce_events(settings, first)
    with running_worker(settings) as worker:
        old = _pseudonyms(settings, first)
        produce(settings, cat.consent.name, [(gone, None)])
        read_topic(kafka_bootstrap, cat.key_vault.name, timeout=60, until=lambda m: any(
            x.key() == gone.encode() and x.value() is None for x in m))
        assert _vault(settings)[gone] is None  # the last record for the key: a tombstone
        assert all(gone not in store.keys for store in worker.stores.values())
        assert any(kept in store.keys for store in worker.stores.values())
        second = _plays([gone, kept], 2)
        produce_events(settings, second)
        new = _pseudonyms(settings, second)
    assert new[gone] != old[gone] and new[kept] == old[kept]
    third = _plays([gone], 3)
    produce_events(settings, third)
    with running_worker(settings):
        restored = _pseudonyms(settings, third)
    assert restored[gone] == new[gone] != old[gone]
    changelog = {m.key(): m.value() for m in read_topic(kafka_bootstrap,
                                                        cat.consent_changelog.name)}
    assert changelog[gone.encode()] is None
