"""Keyed, domain-separated pseudonyms under a per-subject key (crypto-shredding).

``pseudonym = HMAC-SHA256(subject_key, domain || 0x00 || value)``, first 128 bits in hex.
Never a plain hash: without the subject's key nobody can recompute or confirm one, and
deleting the key (key shredding) makes every pseudonym already written unlinkable.
The domain separates destinations (``analytics:subject_pseudonym`` vs
``advertising:subject_pseudonym``) so outputs cannot be joined with each other; the
ML-training domain receives no pseudonym at all (C7).

Results are memoised in a bounded in-process cache for throughput; call
``forget_cache()`` after shredding keys so no derived value outlives them in memory.
"""

from __future__ import annotations

import hmac
import secrets
from functools import lru_cache

__all__ = [
    "KEY_BYTES",
    "forget_cache",
    "new_subject_key",
    "pseudonymize",
    "subject_pseudonym",
]

KEY_BYTES = 32
MIN_KEY_BYTES = 16


def new_subject_key() -> bytes:
    """A fresh random subject key."""
    return secrets.token_bytes(KEY_BYTES)


@lru_cache(maxsize=262_144)
def pseudonymize(key: bytes, domain: str, value: str) -> str:
    """The pseudonym of ``value`` in ``domain`` under ``key``."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"subject key must be at least {MIN_KEY_BYTES} bytes")
    if "\x00" in domain:
        raise ValueError("domain must not contain NUL")
    msg = domain.encode() + b"\x00" + value.encode()
    return hmac.digest(key, msg, "sha256")[:16].hex()


def subject_pseudonym(key: bytes, domain: str, subject_id: str) -> str:
    """The ``subject_pseudonym`` a destination with ``pseudonym_domain=domain`` carries.

    Sinks use it to purge a subject's rows (before the key is shredded).
    """
    return pseudonymize(key, f"{domain}:subject_pseudonym", subject_id)


def forget_cache() -> None:
    """Drop every memoised pseudonym (call after shredding subject keys)."""
    pseudonymize.cache_clear()
