"""Generalizers (C7, C19) and keyed pseudonyms (crypto-shredding)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import generalize as g
from streams import pseudonym
from streams.batch_outputs import _generalized
from streams.generalize import ip_prefix

pytestmark = pytest.mark.unit

KEY = bytes(range(32))


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("10.1.2.3", "10.1.2.0/24"),
        ("2001:db8:abcd:12:1::5", "2001:db8:abcd::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        ("fe80::1%eth0", "fe80::/48"),
        ("not-an-ip", None),
        ("1.2.3.400", None),
        ("1.2.3", None),
    ],
)
def test_ip_prefix_C19(ip: str, expected: str | None) -> None:
    """C19: IPv4 -> /24, IPv6 -> /48; unparsable -> dropped."""
    assert g.ip_prefix(ip) == expected


def test_other_generalizers() -> None:
    assert g.postal_region("94110-1234") == "941"
    assert g.postal_region("SW1A 1AA") == "SW1"
    assert g.postal_region("9") is None
    assert g.timestamp_hour(1_767_229_199_999) == 1_767_225_600_000
    assert [g.count_bucket(n) for n in (0, 5, 50, 12_345, 10**9)] == [
        "0",
        "1-9",
        "10-99",
        "10000-99999",
        "1000000+",
    ]
    assert g.age_band(2010, 2026) == "age_13_15"
    assert g.user_agent_family("Mozilla/5.0 Chrome/126.0 Safari/537.36") == "chrome"
    assert g.url_path("https://x.example/a/b?email=a@b.c#f") == "x.example/a/b"
    assert g.url_host("https://x.example/a?q=1") == "x.example"
    assert g.url_host("http://[::1") is None


def test_pseudonym_is_keyed_domain_separated_and_not_a_plain_hash() -> None:
    p = pseudonym.pseudonymize(KEY, "analytics:subject_pseudonym", "acct-1")
    assert p == pseudonym.subject_pseudonym(KEY, "analytics", "acct-1")
    assert len(p) == 32
    assert p != pseudonym.subject_pseudonym(KEY, "advertising", "acct-1")
    assert p != pseudonym.subject_pseudonym(bytes(32), "analytics", "acct-1")
    assert p not in hashlib.sha256(b"acct-1").hexdigest()
    with pytest.raises(ValueError):
        pseudonym.pseudonymize(b"short", "analytics", "acct-1")
    assert len(pseudonym.new_subject_key()) == pseudonym.KEY_BYTES
    pseudonym.forget_cache()
    assert pseudonym.pseudonymize.cache_info().currsize == 0


@given(st.binary(min_size=0, max_size=150), st.binary(max_size=300))
def test_cached_pad_hmac_equals_the_standard_library(key: bytes, msg: bytes) -> None:
    """The pad-caching HMAC is HMAC-SHA256 (RFC 2104) for any key length, before and
    after its pad cache is cleared."""
    expected = hmac.digest(key, msg, "sha256")
    assert pseudonym.hmac_sha256(key, msg) == expected
    assert pseudonym.hmac_sha256(key, msg) == expected  # cached pads
    pseudonym.forget_cache()
    assert pseudonym.hmac_sha256(key, msg) == expected


@given(st.one_of(st.ip_addresses(v=6), st.ip_addresses(v=4)))
def test_ip_prefix_equals_the_ipaddress_network_C19(ip: Any) -> None:
    """C19: the fast prefix is exactly the network ``ipaddress`` computes (IPv4-mapped IPv6
    addresses generalize as their IPv4 address)."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        expected = str(ipaddress.ip_network((mapped, 24), strict=False))
    else:
        expected = str(ipaddress.ip_network((ip, 24 if ip.version == 4 else 48), strict=False))
    g.ip_prefix.cache_clear()
    assert g.ip_prefix(str(ip)) == expected


_octet = st.one_of(st.integers(0, 999).map(str), st.integers(0, 255).map(lambda i: f"{i:03d}"),
                   st.sampled_from(["", "-1", "1a", "٣", " 1"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.lists(_octet, min_size=3, max_size=5).map(".".join),
                          st.ip_addresses().map(str), st.text(max_size=20), st.none()),
                max_size=40))
def test_columnar_ip_prefix_equals_ip_prefix(values: list[str | None]) -> None:
    """C19: the batch engine's native IPv4 parse plus ip_prefix for the rest (IPv6) gives
    exactly ip_prefix per value."""
    got = _generalized(pa.array(values, pa.string()), "ip_prefix", np.arange(len(values)))
    assert got.to_pylist() == [None if v is None else ip_prefix(v) for v in values]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12),
                          st.from_regex(r"[A-Za-z0-9 -]{0,9}", fullmatch=True),
                          st.none()), max_size=40))
def test_columnar_postal_region_equals_postal_region(values: list[str | None]) -> None:
    """C19: the batch engine's native ASCII postal region plus postal_region for the rest
    gives exactly postal_region per value."""
    got = _generalized(pa.array(values, pa.string()), "postal_region", np.arange(len(values)))
    assert got.to_pylist() == [None if v is None else g.postal_region(v) for v in values]
