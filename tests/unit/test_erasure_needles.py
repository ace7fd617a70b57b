"""The erasure receipt's search for subject ids and pseudonyms in topic values (C15)."""

from __future__ import annotations

import random
import re

from streams.erasure import needle_pattern


def test_trie_pattern_finds_what_a_flat_alternation_finds() -> None:
    rng = random.Random(3)
    ids = [f"acct-{i:06d}".encode() for i in rng.sample(range(10_000), 300)]
    pseudonyms = [rng.randbytes(16).hex().encode() for _ in range(600)]
    needles = ids + pseudonyms + [b"acct-0001", b"acct-00012"]  # one a prefix of others
    flat = re.compile(b"|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))
    trie = needle_pattern(needles)
    values = [rng.randbytes(40) + rng.choice(needles) + rng.randbytes(8)
              + f"acct-{rng.randrange(10_000):06d}".encode() + rng.randbytes(30)
              for _ in range(400)] + [b"", b"acct-0001", b"acct-000123", b"xacct-00012y"]
    for value in values:
        assert set(trie.findall(value)) == set(flat.findall(value)), value
    assert trie.findall(b"acct-00012y") == [b"acct-00012"]  # the longest needle wins
    assert trie.findall(b"--acct-0001--") == [b"acct-0001"]
