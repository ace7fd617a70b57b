"""The native ``ip_prefix`` and ``postal_region`` (C7, C19 generalizers of the batch engine)
against the functions of ``streams.generalize``, wherever they say their answer is exact."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.generalize import METHODS
from streams.generalize_kernel import generalized


def _check(method: str, values: list[str | None], cut: int = 0) -> list[bool]:
    """Compare on ``values`` (sliced by ``cut``); which of them were answered natively."""
    array = pa.array(["pad"] * cut + values, pa.string()).slice(cut)
    results, exact = generalized(array, method)
    results.validate(full=True)
    func = METHODS[method][0]
    for value, result, native in zip(values, results.to_pylist(), exact.tolist(), strict=True):
        if value is None:
            assert native and result is None
        elif native:
            assert result == func(value), value
    return exact.tolist()


def test_ip_prefix_cases() -> None:
    values = ["10.1.2.3", "192.168.001.255", "0.0.0.0", "255.255.255.255", "256.1.1.1",
              "1.2.3", "1.2.3.4.5", "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4 ", "0001.2.3.4",
              "١.2.3.4", "1.2.3.٤", "", "a.b.c.d", None, "::ffff:1.2.3.4", "fe80::1%eth0"]
    native = _check("ip_prefix", values, cut=2)
    assert native == [True] * 17 + [False, False]  # embedded IPv4, zones: the function's


def test_ip6_prefix_cases() -> None:
    """Each zero-run shape of the first three groups, v4-mapped, and malformed inputs."""
    values = ["2001:db8:3c23:6628::1ef4", "2001:DB8:0:1::", "2001::1", "0:db8:1::", "::",
              "::1", "0:0:1::", "1:0:1::", "::ffff:102:304", "::ffff:0:0", "0:0:0:0:0:ffff:a:b",
              "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7",
              "1:2:3:4:5:6:7::8", ":1::", "1::2::3", "1:", "1::", ":::", "12345::", "1:2",
              "00000::", "ffff:ffff:ffff:ffff::"]
    assert all(_check("ip_prefix", values, cut=1))


_GROUPS = st.lists(st.text(st.sampled_from("0000123abcDEF"), max_size=5), min_size=1,
                   max_size=9)
_IP6ISH = st.one_of(
    st.text(st.sampled_from("0123456789abcdefABCDEF:::"), max_size=45),
    st.builds(lambda g: ":".join(g), _GROUPS),  # up to 9 groups of 0-5 digits
    st.builds(lambda g, at: ":".join(g[:at]) + "::" + ":".join(g[at:]), _GROUPS,
              st.integers(0, 9)))


def test_postal_region_cases() -> None:
    values = ["94107", "sw1a 1aa", "k1-aé", "ab", "", "--", "a-b-c-d", None, "é12", "12é",
              "1é23", "ß12"]
    native = _check("postal_region", values, cut=1)
    assert native == [True] * 8 + [False] * 4  # non-ASCII before the third: the function's


_IPISH = st.text(st.sampled_from("0123456789.:%abf ١٢"), max_size=20)


@pytest.mark.parametrize("method", ["ip_prefix", "postal_region"])
@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.none(), _IPISH, _IP6ISH, st.text(max_size=12)),
                      max_size=30),
       cut=st.integers(0, 3))
def test_equal_to_the_functions(method: str, values: list[str | None], cut: int) -> None:
    _check(method, values, cut)
