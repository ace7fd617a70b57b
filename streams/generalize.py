"""Generalizers: deterministic coarsening of quasi-identifiers (C7, C19).

Each generalizer maps one field value to a coarser one and is named in the schemas'
``privacy`` annotations (``"handling": "generalize", "method": "<name>"``). They are
pure, cheap, and total: a value they cannot parse becomes ``None`` (the field is then
left out) rather than leaking through unchanged.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "METHODS",
    "age_band",
    "count_bucket",
    "ip_prefix",
    "postal_region",
    "timestamp_hour",
    "url_host",
    "url_path",
    "user_agent_family",
]

HOUR_MS = 3_600_000
_V4_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:a.b.c.d


@lru_cache(maxsize=65_536)
def ip_prefix(value: str) -> str | None:
    """IPv4 -> its /24 network, IPv6 -> its /48 network; anything else -> None."""
    if ":" in value:
        try:  # the C parser and formatter: ipaddress costs ~100x more per new address
            packed = socket.inet_pton(socket.AF_INET6, value.split("%", 1)[0])
        except (OSError, ValueError):
            return None
        if packed[:12] == _V4_MAPPED:
            return ".".join(map(str, packed[12:15])) + ".0/24"
        return socket.inet_ntop(socket.AF_INET6, packed[:6] + bytes(10)) + "/48"
    parts = value.split(".")
    if len(parts) != 4:
        return None
    for p in parts:
        if not (p.isdigit() and p.isascii() and len(p) <= 3 and int(p) <= 255):
            return None
    return f"{int(parts[0])}.{int(parts[1])}.{int(parts[2])}.0/24"


@lru_cache(maxsize=65_536)
def postal_region(value: str) -> str | None:
    """A postal code -> its first three alphanumerics (the US "ZIP3" region rule)."""
    chars = "".join(c for c in value if c.isalnum()).upper()
    if len(chars) < 3:
        return None
    return chars[:3]


def timestamp_hour(value: int) -> int:
    """Epoch millis -> the start of its hour."""
    return value - value % HOUR_MS


_BUCKET_LABELS = ("1-9", "10-99", "100-999", "1000-9999", "10000-99999", "100000-999999")


def count_bucket(value: int | float) -> str:
    """A count -> an order-of-magnitude bucket label ("0", "1-9", "10-99", ..., "1000000+")."""
    if value < 1:
        return "0"
    digits = len(str(int(value)))
    return _BUCKET_LABELS[digits - 1] if digits <= len(_BUCKET_LABELS) else "1000000+"


def age_band(birth_year: int, at_year: int) -> str:
    """A birth year -> an age band at ``at_year``, rounding down (a child is never aged up)."""
    age = at_year - birth_year - 1
    if age < 13:
        return "under_13"
    if age < 16:
        return "age_13_15"
    if age < 18:
        return "age_16_17"
    return "adult"


_UA_FAMILIES = (
    ("Edg/", "edge"),
    ("OPR/", "opera"),
    ("Firefox/", "firefox"),
    ("Chrome/", "chrome"),
    ("Safari/", "safari"),
    ("Plex", "plex_app"),
    ("okhttp", "android_app"),
    ("CFNetwork", "ios_app"),
    ("Roku", "roku"),
)


@lru_cache(maxsize=4_096)
def user_agent_family(value: str) -> str:
    """A user agent -> a browser/app family; the version and device details are dropped."""
    for needle, family in _UA_FAMILIES:
        if needle in value:
            return family
    return "other"


@lru_cache(maxsize=16_384)
def url_path(value: str) -> str | None:
    """A URL -> host and path only: query strings and fragments may carry identifiers."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return f"{parts.netloc}{parts.path}" if parts.netloc or parts.path else None


@lru_cache(maxsize=16_384)
def url_host(value: str) -> str | None:
    """A URL -> its host name only."""
    try:
        host = urlsplit(value).hostname
    except ValueError:
        return None
    return host or None


# name -> (function, output kind): "str" values go to attribute maps, "num" to measures.
METHODS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "ip_prefix": (ip_prefix, "str"),
    "postal_region": (postal_region, "str"),
    "timestamp_hour": (timestamp_hour, "num"),
    "count_bucket": (count_bucket, "str"),
    "user_agent_family": (user_agent_family, "str"),
    "url_path": (url_path, "str"),
    "url_host": (url_host, "str"),
}
