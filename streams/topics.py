"""The topic catalog: every topic the pipeline uses, declared once.

Raw, control and state topics are keyed by the plain UTF-8 subject id and share one
partition count, so a worker owns the same subjects on all of them (co-partitioning).
Subject-keyed compacted topics are where a deletion writes tombstones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SUBJECT_PARTITIONS = 4


@dataclass(frozen=True)
class Topic:
    name: str
    purpose: str
    partitions: int = SUBJECT_PARTITIONS
    cleanup_policy: str = "delete"  # "delete" or "compact"
    retention_ms: int = 7 * DAY_MS  # -1 keeps forever (compacted state)
    subject_keyed: bool = False  # key is the plain subject id: tombstone target on deletion
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def configs(self) -> dict[str, str]:
        """Broker-side configs the catalog owns for this topic."""
        return {"cleanup.policy": self.cleanup_policy,
                "retention.ms": str(self.retention_ms), **self.extra}


def _raw(name: str, purpose: str) -> Topic:
    return Topic(name, purpose, retention_ms=7 * DAY_MS, subject_keyed=True)


def _state(name: str, purpose: str) -> Topic:
    return Topic(name, purpose, cleanup_policy="compact", retention_ms=-1, subject_keyed=True,
                 # Tombstones stay visible one day so every reader sees the deletion; a
                 # segment rolls and is compacted within the hour even on a quiet topic, so
                 # a shredded key's older wrapped copies are really gone (C15).
                 extra={"delete.retention.ms": str(DAY_MS), "min.compaction.lag.ms": "0",
                        "segment.ms": str(HOUR_MS), "max.compaction.lag.ms": str(HOUR_MS)})


def _out(name: str, purpose: str, retention_ms: int) -> Topic:
    return Topic(name, purpose, retention_ms=retention_ms)


@dataclass(frozen=True)
class Catalog:
    """Every topic of one deployment. ``prefix`` namespaces them (e.g. per test run)."""

    raw_playback: Topic = _raw("raw.playback", "playback events from apps, web and media servers")
    raw_activity: Topic = _raw("raw.activity",
                               "app and web activity: account, payment, cookie-scoped web")
    raw_server: Topic = _raw("raw.server", "media-server telemetry")
    consent: Topic = _state("control.consent",
                            "consent and preferences per subject (effective-dated)")
    requests: Topic = Topic("control.requests",
                            "data-subject requests (delete, access, correct, opt-out)",
                            retention_ms=30 * DAY_MS, subject_keyed=True)
    key_vault: Topic = _state("privacy.key-vault", "per-subject pseudonymization keys, wrapped")
    consent_changelog: Topic = _state("privacy.consent-table-changelog",
                                      "the worker's consent table changelog")
    # Keyed by a keyed hash of the subject id, so the ledger itself never holds the id.
    deletion_ledger: Topic = Topic("privacy.deletion-ledger",
                                   "subjects deleted; replays must skip them",
                                   cleanup_policy="compact", retention_ms=-1)
    analytics: Topic = _out("out.analytics", "cleaned, pseudonymized events for analytics",
                            90 * DAY_MS)
    ml_training: Topic = _out("out.ml-training", "anonymized ML-training examples",
                              365 * DAY_MS)
    advertising: Topic = _out("out.advertising", "consented advertising audience records",
                              30 * DAY_MS)
    social: Topic = _out("out.social", "activity shared with friends while sharing is on",
                         30 * DAY_MS)
    crash_triage: Topic = _out("out.crash-triage",
                               "restricted crash reports (may hold file names)", 30 * DAY_MS)
    metadata_matching: Topic = _out("out.metadata-matching",
                                    "metadata lookups with no subject link", 7 * DAY_MS)
    billing: Topic = _out("out.billing", "payment and billing records, the billing path only",
                          90 * DAY_MS)
    aggregates: Topic = _out("out.aggregates", "hourly k-anonymous counts for analysts",
                             365 * DAY_MS)
    aggregate_partials: Topic = _out("privacy.aggregate-partials",
                                     "per-batch aggregate contributions, keyed by cell",
                                     2 * DAY_MS)
    dead_letters: Topic = _out("privacy.dead-letters",
                               "undecodable or invalid input, original bytes", 14 * DAY_MS)
    drops: Topic = _out("privacy.drops",
                        "one record per dropped event: event id, reason, clause", 14 * DAY_MS)
    # Sink purge commands of deletions: pseudonyms per destination, never a subject id.
    # Short retention: a command is carried out (and acknowledged on the audit topic)
    # within seconds; keeping the pseudonyms longer would keep a link.
    purge: Topic = Topic("privacy.purge", "sink purge commands of deletions (pseudonyms only)",
                         partitions=1, retention_ms=HOUR_MS)
    audit: Topic = _out("privacy.audit", "audit trail of data-subject requests, step by step",
                        3 * 365 * DAY_MS)

    @classmethod
    def with_prefix(cls, prefix: str) -> Catalog:
        """The same catalog with every topic name prefixed."""
        if not prefix:
            return cls()
        return cls(**{f.name: replace(getattr(cls(), f.name),
                                      name=prefix + getattr(cls(), f.name).name)
                      for f in fields(cls)})

    def __iter__(self) -> Iterator[Topic]:
        return (getattr(self, f.name) for f in fields(self))

    @property
    def raw(self) -> tuple[Topic, ...]:
        return (self.raw_playback, self.raw_activity, self.raw_server)

    def destination(self, name: str) -> Topic:
        """The output topic of a logical destination of the policy file."""
        topic = getattr(self, name, None)
        if name not in DESTINATIONS or topic is None:
            raise KeyError(f"unknown destination {name!r}")
        return topic

    def by_name(self, name: str) -> Topic:
        for topic in self:
            if topic.name == name:
                return topic
        raise KeyError(name)

    def subject_keyed_compacted(self) -> tuple[Topic, ...]:
        """Topics where a deletion must write a tombstone for the subject."""
        return tuple(t for t in self if t.subject_keyed and t.cleanup_policy == "compact")


# Logical destinations of the policy file; each is a Catalog field of the same name.
DESTINATIONS = ("analytics", "ml_training", "advertising", "social", "crash_triage",
                "metadata_matching", "billing", "aggregates")
CATALOG = Catalog()
