"""What the engine decides for one event (frozen dataclasses, re-exported by engine)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Decision", "DeleteSubject", "Dropped", "Output", "Routed"]


@dataclass(frozen=True, slots=True)
class Output:
    """One cleaned record for a logical destination (``policy.destinations[destination]``)."""

    destination: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Routed:
    outputs: tuple[Output, ...]


@dataclass(frozen=True, slots=True)
class Dropped:
    """Nothing emitted: ``reason`` is a stable snake_case name, ``clause`` a clause id."""

    reason: str
    clause: str


@dataclass(frozen=True, slots=True)
class DeleteSubject:
    """Nothing emitted; the subject is known to be under 13: start a deletion (C8)."""

    clause: str = "C8"
    reason: str = "under_13"


Decision = Routed | Dropped | DeleteSubject


# Fast constructors for the engine's hot path: a frozen dataclass __init__ goes through
# object.__setattr__ per field, about twice the cost of setting the slots directly.
_new = object.__new__
_set_destination = vars(Output)["destination"].__set__
_set_record = vars(Output)["record"].__set__
_set_outputs = vars(Routed)["outputs"].__set__


def make_output(destination: str, record: dict[str, Any]) -> Output:
    """``Output(destination, record)``, faster."""
    out = _new(Output)
    _set_destination(out, destination)
    _set_record(out, record)
    return out


def make_routed(outputs: tuple[Output, ...]) -> Routed:
    """``Routed(outputs)``, faster."""
    routed = _new(Routed)
    _set_outputs(routed, outputs)
    return routed
