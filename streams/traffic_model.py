"""The synthetic media-streaming population: configuration, accounts, catalog; pure, seeded.

``TrafficConfig`` holds every distribution. ``Population`` draws the accounts from it
(age band, jurisdiction, managed profile, devices, media servers with personal
libraries, e-mail) and the service's Zipf-ranked catalog. The records built from them live
in ``traffic_records`` (input events) and ``traffic_control`` (consent records and
subject requests). Nothing reads the wall clock: times derive from
``TrafficConfig.start_ms`` and the seed. The same objects back ``tests/factories.py``, so
tests and the generator share one source of sample records.

Sensitive sample values carry markers (``@example.com`` e-mails, ``SECRET-`` tokens,
``/media/`` file names) so tests can grep outputs for leaks.
"""

from __future__ import annotations

import random
import time
from bisect import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from _typeshed import SupportsLenAndGetItem

_T = TypeVar("_T")

BASE_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS = 86_400_000

PLATFORMS = ("ios", "android", "web", "roku", "androidtv", "tvos", "windows")
COUNTRIES = ("US", "US", "US", "CA", "GB", "DE", "SE", "BR")
COUNTRY_OF = {"EU": ("DE", "SE", "FR", "NL"), "GB": ("GB",), "BR": ("BR",), "ZZ": ("XX",)}
TITLES = ("The Long Night", "Ocean Drift", "Paper Moons", "Quiet Harbor", "Iron Valley")
_WORDS_A = ("Long", "Quiet", "Iron", "Paper", "Silver", "Hidden", "Last", "Broken", "Golden",
            "Northern", "Burning", "Distant", "Crimson", "Frozen", "Wild", "Electric")
_WORDS_B = ("Night", "Harbor", "Valley", "Moons", "Drift", "River", "Empire", "Garden",
            "Signal", "Horizon", "Orchard", "Kingdom", "Machine", "Summer", "Island", "Road")
GENRES = ("drama", "comedy", "documentary", "thriller", "animation", "sci_fi")
RATINGS = ("G", "PG", "PG-13", "TV-14", "TV-MA", "R")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "PlexMobile/10.12 okhttp/4.12",
)
AGE_BANDS = ("under_13", "age_13_15", "age_16_17", "adult", "unknown")
BAD_KINDS = ("truncated", "wrong_magic", "unknown_schema", "random_bytes", "wrong_topic",
             "key_mismatch")

# Relative frequency of each input schema in generated traffic.
MIX: dict[str, int] = {
    "PlaybackEvent": 45,
    "ActivityEvent": 22,
    "AccountEvent": 3,
    "PaymentEvent": 2,
    "ServerConfigEvent": 5,
    "CrashReportEvent": 2,
    "PushNotificationEvent": 6,
    "ServerLibraryEvent": 6,
    "RelayTransferEvent": 5,
    "MetadataMatchEvent": 2,
    "IntegrationFulfilmentEvent": 2,
}


@dataclass(frozen=True)
class TrafficConfig:
    """Every knob of the synthetic traffic; shares need not sum to 1 (they are weights).

    ``consent_change_rate`` and ``request_rate`` are per input event; ``bad_fraction`` is
    the share of produced input messages replaced by a bad record (kinds drawn evenly
    from ``bad_kinds``). ``event_gap_ms`` is the mean event-time step between two events.
    """

    seed: int = 0
    subjects: int = 10_000
    start_ms: int = BASE_TIME_MS
    age_bands: Mapping[str, float] = field(default_factory=lambda: {
        "under_13": 0.03, "age_13_15": 0.06, "age_16_17": 0.05, "adult": 0.76, "unknown": 0.10})
    jurisdictions: Mapping[str, float] = field(default_factory=lambda: {
        "US-CA": 0.20, "US-CO": 0.04, "US-CT": 0.03, "US-UT": 0.03, "US-VA": 0.05,
        "US": 0.25, "EU": 0.20, "GB": 0.08, "BR": 0.07, "ZZ": 0.05})
    managed_profile_share: float = 0.08
    no_consent_share: float = 0.02
    server_owner_share: float = 0.35
    mix: Mapping[str, float] = field(default_factory=lambda: dict(MIX))
    catalog_titles: int = 5_000
    zipf_exponent: float = 1.1
    ad_supported_share: float = 0.3
    consent_change_rate: float = 0.002
    request_rate: float = 0.0005
    bad_fraction: float = 0.01
    bad_kinds: tuple[str, ...] = BAD_KINDS
    event_gap_ms: int = 20

    def __post_init__(self) -> None:
        unknown = set(self.bad_kinds) - set(BAD_KINDS)
        if unknown or not 0 <= self.bad_fraction < 1 or self.subjects < 1:
            raise ValueError(f"bad TrafficConfig: kinds {sorted(unknown)}, "
                             f"bad_fraction {self.bad_fraction}, subjects {self.subjects}")
        if set(self.age_bands) - set(AGE_BANDS) or set(self.mix) - set(MIX):
            raise ValueError("bad TrafficConfig: unknown age band or schema in mix")


class FastRandom(random.Random):
    """``random.Random`` drawing uniform integers by scaling ``random()``: several times
    faster than the exact rejection sampling, and as uniform as the model needs (a
    value's relative bias is at most width / 2**53; wider ranges than 2**40 use the exact
    method)."""

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        if stop is None:
            start, stop = 0, start
        width = stop - start
        if step != 1 or not 0 < width < 1 << 40:
            return super().randrange(start, stop, step)
        return start + int(self.random() * width)

    def randint(self, a: int, b: int) -> int:
        return self.randrange(a, b + 1)

    def choice(self, seq: SupportsLenAndGetItem[_T]) -> _T:
        if not seq:
            raise IndexError("cannot choose from an empty sequence")
        return seq[int(self.random() * len(seq))]


def subject_ids(n: int) -> list[str]:
    return [f"acct-{i:06d}" for i in range(n)]


def server_id_for(subject_id: str, i: int = 0) -> str:
    return f"srv-{subject_id}-{i}"


def uuid_of(bits: int) -> str:
    """A version-4-shaped uuid string from 128 random bits (no ``uuid`` module: faster)."""
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[bits & 3]}{h[17:20]}-{h[20:32]}"


def ip_address(rng: random.Random) -> str:
    if rng.random() < 0.8:
        octets = (rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 99))
        return ".".join(map(str, octets))
    return "2001:db8:{:x}:{:x}::{:x}".format(*(rng.getrandbits(16) for _ in range(3)))


def email(rng: random.Random) -> str:
    return f"user{rng.randint(1, 10**6)}@example.com"


def person_name(rng: random.Random) -> str:
    return (rng.choice(("Alice", "Bjorn", "Chen", "Dana", "Emeka", "Farah"))
            + "-" + rng.choice(("Smith", "Lund", "Okafor", "Garcia", "Nilsson")))


def file_name(rng: random.Random, title: str | None = None) -> str:
    title = title or rng.choice(TITLES)
    return f"/media/private/{title.replace(' ', '.')}.{rng.randint(1990, 2025)}.mkv"


def device_id(rng: random.Random) -> str:
    return f"dev-{rng.getrandbits(48):012x}"



def year_of(ms: int) -> int:
    return time.gmtime(ms // 1000).tm_year


@dataclass(slots=True)
class Subject:
    """One account: who it is, where, its devices, servers and personal library."""

    subject_id: str
    age_band: str
    jurisdiction: str
    managed_profile: bool
    has_consent: bool
    email: str
    user_name: str
    country: str
    postal_code: str
    devices: list[tuple[str, str, str]]  # (device_id, platform, ip)
    servers: list[str]
    library: list[tuple[str, str]]  # (title, file name) on the subject's own servers
    profile_id: str


def make_subject(subject_id: str, config: TrafficConfig, rng: random.Random) -> Subject:
    band = rng.choices(list(config.age_bands), list(config.age_bands.values()))[0]
    jur = rng.choices(list(config.jurisdictions), list(config.jurisdictions.values()))[0]
    country = rng.choice(COUNTRY_OF.get(jur, ("US",)))
    devices = [(device_id(rng), rng.choice(PLATFORMS), ip_address(rng))
               for _ in range(rng.randint(1, 4))]
    owner = rng.random() < config.server_owner_share
    servers = [server_id_for(subject_id, i) for i in range(rng.randint(1, 2))] if owner else []
    library = [(t, file_name(rng, t)) for t in (
        f"{rng.choice(_WORDS_A)} {rng.choice(_WORDS_B)} {rng.randint(1, 99)}"
        for _ in range(rng.randint(5, 30) if owner else 0))]
    return Subject(subject_id=subject_id, age_band=band, jurisdiction=jur,
                   managed_profile=rng.random() < config.managed_profile_share,
                   has_consent=rng.random() >= config.no_consent_share,
                   email=email(rng), user_name=person_name(rng), country=country,
                   postal_code=f"{rng.randint(10000, 99999)}", devices=devices,
                   servers=servers, library=library, profile_id=f"prof-{rng.randint(1, 9999)}")


class Catalog:
    """The service's own catalog: ``n`` titles, popularity Zipf(``exponent``) by rank."""

    def __init__(self, n: int, exponent: float, rng: random.Random) -> None:
        self.titles = [f"{_WORDS_A[i % 16]} {_WORDS_B[(i // 16) % 16]}"
                       + (f" {i // 256 + 1}" if i >= 256 else "") for i in range(n)]
        self.genres = [rng.choice(GENRES) for _ in range(n)]
        self.ratings = [rng.choice(RATINGS) for _ in range(n)]
        self.durations = [rng.randint(20, 180) * 60_000 for _ in range(n)]
        self.cum = list(accumulate(1.0 / (rank + 1) ** exponent for rank in range(n)))
        self._ranks = range(n)

    def pick(self, rng: random.Random) -> int:
        """A title rank (0 = most popular)."""
        return rng.choices(self._ranks, cum_weights=self.cum)[0]

    def rank_at(self, u: float) -> int:
        """The title rank at quantile ``u`` of the popularity (``u`` uniform: a Zipf draw)."""
        return bisect(self.cum, u * self.cum[-1], 0, len(self.cum) - 1)

    def head_share(self, k: int) -> float:
        """Expected share of plays going to the ``k`` most popular titles."""
        return self.cum[k - 1] / self.cum[-1]


class Population:
    """Every subject of a run and the catalog, drawn from ``config`` (deterministic)."""

    def __init__(self, config: TrafficConfig) -> None:
        self.config = config
        self.subjects = [make_subject(sid, config, FastRandom(f"{config.seed}:{sid}"))
                         for sid in subject_ids(config.subjects)]
        self.catalog = Catalog(config.catalog_titles, config.zipf_exponent,
                               FastRandom(f"{config.seed}:catalog"))
