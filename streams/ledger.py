"""The deletion ledger: who was deleted, without keeping who they were.

Entries are keyed by a *ledger ref*, a keyed HMAC of the subject id under the ledger
key, so a replay of raw events can recognise a deleted subject while the ledger itself
never holds a subject id. The ledger key is random, stored in the ledger topic itself
under a reserved key, wrapped by the master key (rotation re-wraps it; refs never
change). It is created by the first deletion: until then nobody is erased.
"""

from __future__ import annotations

import hashlib
import hmac

from streams.key_vault import Keyring
from streams.pseudonym import new_subject_key

LEDGER_KEY_ID = "__ledger-key__"
_MEMO_LIMIT = 1 << 20  # refs memoised per reader: the worker asks for every event


def ref_for(ledger_key: bytes, subject_id: str) -> str:
    return hmac.new(ledger_key, subject_id.encode(), hashlib.sha256).hexdigest()[:32]


class Ledger:
    """What a reader of the ledger topic knows: the ledger key and the erased refs."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._key: bytes | None = None
        self._memo: dict[str, str] = {}  # subject id -> ref under the current key
        self.refs: set[str] = set()

    @property
    def key(self) -> bytes | None:
        return self._key

    @key.setter
    def key(self, value: bytes | None) -> None:
        self._key = value
        self._memo.clear()

    def observe(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one ledger-topic record in (any order; tombstones are ignored)."""
        if key is None or value is None:
            return
        name = key.decode("utf-8", "replace")
        if name == LEDGER_KEY_ID:
            self.key = self._keyring.unwrap(LEDGER_KEY_ID, value)
        else:
            self.refs.add(name)

    def ref(self, subject_id: str) -> str | None:
        ref = self._memo.get(subject_id)
        if ref is None and self._key is not None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            ref = self._memo[subject_id] = ref_for(self._key, subject_id)
        return ref

    def is_erased(self, subject_id: str) -> bool:
        return bool(self.refs) and self.ref(subject_id) in self.refs

    def new_key_record(self) -> tuple[bytes, bytes]:
        """(key, value) creating the ledger key; the caller produces it once."""
        self.key = new_subject_key()
        return LEDGER_KEY_ID.encode(), self._keyring.wrap(LEDGER_KEY_ID, self.key)
