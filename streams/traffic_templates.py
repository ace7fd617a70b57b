"""Pooled bodies of the non-playback input schemas, the subject's own fields spliced in.

Each schema keeps ``TEMPLATE_VARIANTS`` bodies built from the traffic model
(``traffic_records``); a body is rebuilt from the model after ``reuse`` events. The
subject's own fields (``SUBJECT_FIELDS``: profile, device, e-mail, user name, server id)
are holes, filled per (subject, server) with what ``subject_value`` gives them, so a
server event names one of its owner's servers and an account event the account's e-mail.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from typing import Any, Generic, TypeVar

import numpy as np

from streams.traffic_layout import BodyLayout
from streams.traffic_model import Population
from streams.traffic_records import RECORDS, subject_value

__all__ = ["SERVER_SCHEMAS", "SUBJECT_FIELDS", "TEMPLATE_REUSE", "TEMPLATE_VARIANTS",
           "TemplatePool", "TemplateSlots"]

T = TypeVar("T")

TEMPLATE_VARIANTS = 64
TEMPLATE_REUSE = 128
SERVER_SCHEMAS = frozenset({"ServerConfigEvent", "CrashReportEvent", "PushNotificationEvent",
                            "ServerLibraryEvent", "RelayTransferEvent", "MetadataMatchEvent",
                            "IntegrationFulfilmentEvent"})
_PROFILE = ("profile_id", "managed_profile", "device_id")
SUBJECT_FIELDS: dict[str, tuple[str, ...]] = {
    "ActivityEvent": _PROFILE, "AccountEvent": (*_PROFILE, "email", "user_name"),
    "PaymentEvent": ("billing_email",),
    "ServerConfigEvent": ("server_id", "owner_email", "owner_user_name"),
    "CrashReportEvent": ("server_id", "owner_email"),
}


class TemplateSlots(Generic[T]):
    """``TEMPLATE_VARIANTS`` templates, each replaced by a new one from ``build`` after
    ``reuse`` uses on average: the oldest is rebuilt for every ``reuse`` uses."""

    def __init__(self, build: Callable[[], T], reuse: int) -> None:
        self._build, self._reuse = build, reuse
        # Filled one by one: numpy would unpack a template that is a tuple.
        self._templates = np.empty(TEMPLATE_VARIANTS, object)
        for slot in range(TEMPLATE_VARIANTS):
            self._templates[slot] = build()
        self._oldest = 0
        self._due = 0.0  # rebuilds owed

    def pick(self, slots: np.ndarray) -> list[T]:
        """The templates at ``slots``, after rebuilding the oldest ones these uses wear out."""
        self._due += slots.size / self._reuse
        for _ in range(int(self._due)):
            self._templates[self._oldest] = self._build()
            self._oldest = (self._oldest + 1) % TEMPLATE_VARIANTS
        self._due -= int(self._due)
        chosen: list[T] = self._templates[slots].tolist()
        return chosen


class TemplatePool:
    """The pooled bodies of input schema ``name`` and its subjects' encoded hole values.

    ``body`` is the schema's fields after the envelope, ``types`` the encoded
    ``event_type`` of each symbol. Every subject's hole values are encoded up front, per
    ``subject * servers + server`` (its ``server``-th media server); pools whose holes
    are encoded alike share them through ``tables``.
    """

    def __init__(self, name: str, body: Sequence[Mapping[str, Any]], types: Mapping[str, bytes],
                 population: Population, servers: int, reuse: int, rng: random.Random,
                 tables: dict[tuple[Any, ...], tuple[np.ndarray, ...]]) -> None:
        self.name = name
        self.servers = servers
        holes = SUBJECT_FIELDS.get(name, ("server_id",) if name in SERVER_SCHEMAS else ())
        self._layout = BodyLayout(body, holes)
        self._types = types
        self._subjects = population.subjects
        self._reuse = reuse
        self._rng = rng
        self._slots = TemplateSlots(self._template, reuse)
        fields = {f["name"]: f["type"] for f in body}
        key = (name if "managed_profile" in holes else "",
               *((run, repr([fields[h] for h in run])) for run in self._layout.runs))
        if key not in tables:
            tables[key] = self._hole_table()
        self._holes = tables[key]

    def values(self, head: bytes, ids: list[bytes], sids: list[bytes],
               times: tuple[list[bytes], list[bytes]], holes: np.ndarray,
               slots: np.ndarray) -> list[bytes]:
        """Encoded records: envelope ``head``, event-id tails ``ids``, encoded subject ids
        and event times (two pieces), then the body of pooled template ``slots`` with the
        hole values at ``holes``, one per event."""
        runs = [column[holes].tolist() for column in self._holes]
        return list(map(operator.mod, self._slots.pick(slots),
                        zip(repeat(head), ids, sids, *times, *runs)))

    def _template(self) -> bytes:
        """A record's format: five %b for the envelope, then event type and body."""
        rec = RECORDS[self.name](self._rng, None)
        return b"%b%b%b%b%b" + self._layout.template(rec, self._types[rec["event_type"]])

    def _hole_table(self) -> tuple[np.ndarray, ...]:
        """Each subject's encoded hole values (one of its devices, each of its servers), a
        column per run of holes: events take their values column by column, no tuple each."""
        layout, name, rng = self._layout, self.name, self._rng
        table = tuple(np.empty(len(self._subjects) * self.servers, object) for _ in layout.runs)
        holes = [h for run in layout.runs for h in run]
        for i, subject in enumerate(self._subjects):
            device = subject.devices[rng.randrange(len(subject.devices))]
            for server in range(max(1, len(subject.servers))):
                values = layout.run_values(
                    {h: subject_value(name, h, subject, device, server) for h in holes})
                for column, value in zip(table, values, strict=True):
                    column[i * self.servers + server] = value
        return table
