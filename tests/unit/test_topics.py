"""The topic catalog declares each topic once, consistently."""

from __future__ import annotations

from streams.topics import CATALOG, DESTINATIONS, Catalog


def test_names_are_unique() -> None:
    names = [t.name for t in CATALOG]
    assert len(names) == len(set(names))


def test_subject_keyed_inputs_are_co_partitioned() -> None:
    keyed = [t for t in CATALOG if t.subject_keyed]
    assert len({t.partitions for t in keyed}) == 1
    assert {t.name for t in CATALOG.raw} <= {t.name for t in keyed}


def test_every_destination_has_an_output_topic() -> None:
    for name in DESTINATIONS:
        assert CATALOG.destination(name).cleanup_policy == "delete"


def test_deletion_tombstones_target_compacted_subject_state() -> None:
    names = {t.name for t in CATALOG.subject_keyed_compacted()}
    assert names == {"control.consent", "privacy.key-vault", "privacy.consent-table-changelog"}
    # The ledger must survive deletions; it is keyed by a keyed hash, not the subject id.
    assert "privacy.deletion-ledger" not in names


def test_prefix_keeps_configs() -> None:
    prefixed = Catalog.with_prefix("t1.")
    assert prefixed.consent.name == "t1.control.consent"
    assert prefixed.consent.configs == CATALOG.consent.configs
