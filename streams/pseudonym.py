"""Keyed, domain-separated pseudonyms under a per-subject key (crypto-shredding).

``pseudonym = HMAC-SHA256(subject_key, domain || 0x00 || value)``, first 128 bits in hex.
Never a plain hash: without the subject's key nobody can recompute or confirm one, and
deleting the key (key shredding) makes every pseudonym already written unlinkable.
The domain separates destinations (``analytics:subject_pseudonym`` vs
``advertising:subject_pseudonym``) so outputs cannot be joined with each other; the
ML-training domain receives no pseudonym at all (C7).

Results are memoised in a bounded in-process cache for throughput, and so are each
key's HMAC pad states (RFC 2104: a one-shot ``hmac.digest`` re-derives them on every
call, most of its cost); call ``forget_cache()`` after shredding keys so no derived
value outlives them in memory.
"""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache
from typing import Any

__all__ = [
    "KEY_BYTES",
    "forget_cache",
    "hmac_sha256",
    "new_subject_key",
    "pseudonymize",
    "subject_pseudonym",
]

KEY_BYTES = 32
MIN_KEY_BYTES = 16
_BLOCK = 64  # SHA-256 block size
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
_PADS_LIMIT = 65_536
_pads: dict[bytes, tuple[Any, Any]] = {}  # key -> SHA-256 states after its inner/outer pad


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
    return hmac_sha256(key, domain.encode() + b"\x00" + value.encode())[:16].hex()


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 (equal to ``hmac.digest(key, msg, "sha256")``), pads cached per key."""
    pads = _pads.get(key)
    if pads is None:
        if len(_pads) >= _PADS_LIMIT:
            _pads.clear()
        k = (hashlib.sha256(key).digest() if len(key) > _BLOCK else key).ljust(_BLOCK, b"\x00")
        pads = _pads[key] = (hashlib.sha256(k.translate(_IPAD)),
                             hashlib.sha256(k.translate(_OPAD)))
    inner = pads[0].copy()
    inner.update(msg)
    outer = pads[1].copy()
    outer.update(inner.digest())
    return outer.digest()


def subject_pseudonym(key: bytes, domain: str, subject_id: str) -> str:
    """The ``subject_pseudonym`` a destination with ``pseudonym_domain=domain`` carries.

    Sinks use it to purge a subject's rows (before the key is shredded).
    """
    return pseudonymize(key, f"{domain}:subject_pseudonym", subject_id)


def forget_cache() -> None:
    """Drop every memoised pseudonym and pad state (call after shredding subject keys)."""
    pseudonymize.cache_clear()
    _pads.clear()
