"""Per-subject pseudonymization keys, wrapped by a master key (crypto-shredding).

Each subject gets 32 random bytes. Only the wrapped form ever leaves memory: AES-256-GCM
under the master key, with the subject id as associated data so a wrapped key cannot be
moved to another subject. A wrapped key names the master key that wrapped it (a short
fingerprint), so after a rotation workers holding old and new master keys read both.
Rotating re-wraps; the subject key itself, and so every pseudonym, stays the same.
Destroying the wrapped key (a tombstone in the vault topic) makes the pseudonyms
already written unlinkable: nobody can recompute them.

Pure: no Kafka here. The worker keeps the vault as a table whose changelog is the
compacted ``privacy.key-vault`` topic.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from streams.errors import PipelineError

FORMAT_VERSION = 1
_HEADER = struct.Struct(">B8s12s")  # version, master fingerprint, nonce


class KeyVaultError(PipelineError):
    """A wrapped key cannot be unwrapped: unknown master key or tampered bytes."""


def fingerprint(master_key: bytes) -> bytes:
    """A public, non-reversible 8-byte name for a master key."""
    return hmac.new(master_key, b"privacy-pipeline master key id", hashlib.sha256).digest()[:8]


class Keyring:
    """The current master key (wraps) and older ones (only unwrap, during a rotation)."""

    def __init__(self, current: bytes, previous: Iterable[bytes] = ()) -> None:
        self._current = current
        self._current_id = fingerprint(current)
        self._by_id = {fingerprint(k): AESGCM(k) for k in (current, *previous)}

    @property
    def current_id(self) -> bytes:
        return self._current_id

    def wrap(self, subject_id: str, subject_key: bytes) -> bytes:
        nonce = os.urandom(12)
        sealed = self._by_id[self._current_id].encrypt(nonce, subject_key, subject_id.encode())
        return _HEADER.pack(FORMAT_VERSION, self._current_id, nonce) + sealed

    def unwrap(self, subject_id: str, wrapped: bytes) -> bytes:
        if len(wrapped) < _HEADER.size:
            raise KeyVaultError("wrapped key too short")
        version, key_id, nonce = _HEADER.unpack_from(wrapped)
        if version != FORMAT_VERSION:
            raise KeyVaultError(f"wrapped key format {version} is not {FORMAT_VERSION}")
        aead = self._by_id.get(key_id)
        if aead is None:
            raise KeyVaultError(f"wrapped by master key {key_id.hex()}, which this keyring "
                                "does not hold")
        try:
            return aead.decrypt(nonce, wrapped[_HEADER.size:], subject_id.encode())
        except InvalidTag:
            raise KeyVaultError("wrapped key failed authentication") from None

    def needs_rewrap(self, wrapped: bytes) -> bool:
        return wrapped[1:9] != self._current_id

    def rewrap(self, subject_id: str, wrapped: bytes) -> bytes:
        """The same subject key wrapped under the current master key."""
        return self.wrap(subject_id, self.unwrap(subject_id, wrapped))
