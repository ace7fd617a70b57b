"""The synthetic media-streaming population and its records: pure, seeded, no I/O.

``TrafficConfig`` holds every distribution. ``Population`` draws the accounts from it
(age band, jurisdiction, managed profile, devices, media servers with personal
libraries, e-mail). ``RECORDS`` builds one valid record per input schema as a plain
dict, consistent with the subject when one is given; ``consent_record`` and
``subject_request`` build the control records. Nothing reads the wall clock: times
derive from ``TrafficConfig.start_ms`` and the seed. The same objects back
``tests/factories.py``, so tests and the generator share one source of sample records.

Sensitive sample values carry markers (``@example.com`` e-mails, ``SECRET-`` tokens,
``/media/`` file names) so tests can grep outputs for leaks.
"""

from __future__ import annotations

import calendar
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

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


def _maybe(rng: random.Random, value: Any, p: float = 0.7) -> Any:
    return value if rng.random() < p else None


def year_of(ms: int) -> int:
    return time.gmtime(ms // 1000).tm_year


def birth_year_for(band: str, year: int, rng: random.Random) -> int | None:
    """A birth year that puts the subject unambiguously in ``band`` all ``year`` long."""
    spans = {"under_13": (6, 12), "age_13_15": (14, 16), "age_16_17": (17, 18),
             "adult": (19, 80)}
    if band not in spans:
        return None
    lo, hi = spans[band]
    return year - rng.randint(lo, hi)


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

    def head_share(self, k: int) -> float:
        """Expected share of plays going to the ``k`` most popular titles."""
        return self.cum[k - 1] / self.cum[-1]


class Population:
    """Every subject of a run and the catalog, drawn from ``config`` (deterministic)."""

    def __init__(self, config: TrafficConfig) -> None:
        self.config = config
        self.subjects = [make_subject(sid, config, random.Random(f"{config.seed}:{sid}"))
                         for sid in subject_ids(config.subjects)]
        self.catalog = Catalog(config.catalog_titles, config.zipf_exponent,
                               random.Random(f"{config.seed}:catalog"))


# --- records ---------------------------------------------------------------------------------

RecordFactory = Callable[[random.Random, str | None], dict[str, Any]]


def envelope(rng: random.Random, event_type: str, subject_id: str | None) -> dict[str, Any]:
    return {
        "event_id": uuid_of(rng.getrandbits(128)),
        "subject_id": subject_id or f"acct-{rng.randint(0, 9999):06d}",
        "event_time": BASE_TIME_MS + rng.randint(0, 30 * DAY_MS),
        "event_type": event_type,
    }


def playback(rng: random.Random, sid: str | None) -> dict[str, Any]:
    source = rng.choice(("catalog", "ad_supported", "personal"))
    rec = envelope(rng, rng.choice(("play", "pause", "resume", "seek", "stop", "complete",
                                    "ad_impression")), sid)
    rec.update(
        profile_id=_maybe(rng, f"prof-{rng.randint(1, 9999)}"),
        managed_profile=rng.random() < 0.1,
        device_id=device_id(rng),
        platform=rng.choice(PLATFORMS),
        app_version=f"{rng.randint(1, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 9)}",
        ip_address=ip_address(rng),
        postal_code=_maybe(rng, f"{rng.randint(10000, 99999)}"),
        country=rng.choice(COUNTRIES),
        latitude=_maybe(rng, rng.uniform(-80, 80), 0.2),
        longitude=_maybe(rng, rng.uniform(-170, 170), 0.2),
        content_id=f"{'local' if source == 'personal' else 'cat'}-{rng.randint(1, 99999)}",
        content_source=source,
        title=_maybe(rng, rng.choice(TITLES), 0.9),
        genre=_maybe(rng, rng.choice(GENRES)),
        content_rating=_maybe(rng, rng.choice(RATINGS)),
        file_name=file_name(rng) if source == "personal" and rng.random() < 0.5 else None,
        position_ms=rng.randint(0, 7_200_000),
        duration_ms=rng.randint(600_000, 10_800_000),
        bitrate_kbps=_maybe(rng, rng.randint(500, 40_000)),
        data_tier=rng.choice(("required", "required", "optional")),
        ad_id=f"ad-{rng.randint(1, 999)}" if source == "ad_supported" else None,
        inferred_segment=_maybe(rng, rng.choice(("sci_fi_fan", "night_owl", "family")), 0.4),
    )
    return rec


def activity(rng: random.Random, sid: str | None) -> dict[str, Any]:
    web = rng.random() < 0.5
    rec = envelope(rng, rng.choice(("page_view", "search", "click", "add_to_watchlist", "rate",
                                    "share", "sign_in")), sid)
    rec.update(
        profile_id=_maybe(rng, f"prof-{rng.randint(1, 9999)}"),
        managed_profile=rng.random() < 0.1,
        surface="web" if web else "app",
        cookie_scope=rng.choice(("essential", "functional", "analytics", "advertising"))
        if web else "none",
        session_id=uuid_of(rng.getrandbits(128)),
        device_id=device_id(rng),
        user_agent=rng.choice(USER_AGENTS),
        ip_address=ip_address(rng),
        page_url=_maybe(rng, f"https://watch.example.com/title/{rng.randint(1, 999)}"
                             f"?ref=mail&email={email(rng)}"),
        referrer=_maybe(rng, "https://www.search.example/?q=secret"),
        search_query=_maybe(rng, f"{rng.choice(TITLES)} {email(rng)}", 0.3),
        item_id=_maybe(rng, f"cat-{rng.randint(1, 99999)}"),
        user_rating=_maybe(rng, rng.randint(1, 5), 0.3),
        email=_maybe(rng, email(rng), 0.2),
        user_name=_maybe(rng, person_name(rng), 0.2),
        latitude=_maybe(rng, rng.uniform(-80, 80), 0.1),
        longitude=_maybe(rng, rng.uniform(-170, 170), 0.1),
        inferred_segment=_maybe(rng, "binge_watcher", 0.3),
    )
    return rec


def account(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = envelope(rng, rng.choice(("signup", "login", "logout", "password_change",
                                    "email_change", "profile_create", "plan_change")), sid)
    rec.update(
        profile_id=_maybe(rng, f"prof-{rng.randint(1, 9999)}"),
        managed_profile=False,
        email=email(rng),
        user_name=person_name(rng),
        full_name=_maybe(rng, person_name(rng)),
        device_id=device_id(rng),
        platform=rng.choice(PLATFORMS),
        ip_address=ip_address(rng),
        country=rng.choice(COUNTRIES),
        postal_code=_maybe(rng, f"{rng.randint(10000, 99999)}"),
        auth_method=rng.choice(("password", "sso", "magic_link", "pin")),
        password_hash=_maybe(rng, "SECRET-hash-" + uuid_of(rng.getrandbits(128)), 0.2),
        auth_token=_maybe(rng, "SECRET-token-" + uuid_of(rng.getrandbits(128)), 0.3),
        two_factor_enabled=rng.random() < 0.3,
        plan=_maybe(rng, rng.choice(("free", "pass_monthly", "pass_yearly"))),
    )
    return rec


def payment(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = envelope(rng, rng.choice(("charge", "refund", "subscription_start",
                                    "subscription_cancel", "payment_failed")), sid)
    rec.update(
        transaction_id=f"txn-{rng.getrandbits(40):010x}",
        plan=rng.choice(("pass_monthly", "pass_yearly", "lifetime")),
        amount_cents=rng.choice((499, 3999, 11999)),
        currency=rng.choice(("USD", "EUR", "SEK")),
        payment_processor=rng.choice(("braintree", "apple", "google")),
        card_brand=_maybe(rng, rng.choice(("visa", "mastercard"))),
        card_last4=_maybe(rng, f"{rng.randint(0, 9999):04d}"),
        billing_email=email(rng),
        full_name=_maybe(rng, person_name(rng)),
        billing_postal_code=_maybe(rng, f"{rng.randint(10000, 99999)}"),
        ip_address=ip_address(rng),
    )
    return rec


def _server_env(rng: random.Random, sid: str | None, types: tuple[str, ...]) -> dict[str, Any]:
    rec = envelope(rng, rng.choice(types), sid)
    rec["server_id"] = server_id_for(rec["subject_id"], rng.randint(0, 1))
    return rec


def server_config(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("server_created", "config_changed", "heartbeat"))
    rec.update(
        server_version=f"1.{rng.randint(30, 41)}.{rng.randint(0, 9)}",
        platform=rng.choice(("linux", "windows", "macos", "nas")),
        ip_address=ip_address(rng),
        local_ip=_maybe(rng, f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"),
        file_count=rng.randint(0, 200_000),
        library_count=rng.randint(0, 12),
        secure_connections=rng.choice(("required", "preferred", "disabled")),
        remote_access_enabled=rng.random() < 0.7,
        relay_enabled=rng.random() < 0.8,
        owner_email=email(rng),
        owner_user_name=person_name(rng),
        access_token=_maybe(rng, "SECRET-srv-" + uuid_of(rng.getrandbits(128))),
    )
    return rec


def crash(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("crash",))
    rec.update(
        server_version=f"1.{rng.randint(30, 41)}.0",
        platform=rng.choice(("linux", "windows")),
        crash_signature=f"SIGSEGV in transcoder+0x{rng.getrandbits(16):x}",
        stack_trace=f"#0 transcode() reading {file_name(rng)}",
        file_names=[file_name(rng) for _ in range(rng.randint(0, 3))],
        ip_address=ip_address(rng),
        owner_email=email(rng),
    )
    return rec


def notification(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("new_content", "playback_started", "server_update",
                                 "library_scan_complete"))
    rec.update(
        target_device_id=device_id(rng),
        title=_maybe(rng, f"New: {rng.choice(TITLES)}"),
        body=_maybe(rng, f"{person_name(rng)} started {rng.choice(TITLES)}"),
        delivered=rng.random() < 0.95,
    )
    return rec


def library(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("library_stats", "optional_playback_stats"))
    rec.update(
        section_type=rng.choice(("movie", "show", "music", "photo", "other")),
        item_count=rng.randint(0, 50_000),
        total_size_gb=round(rng.uniform(0, 20_000), 2),
        transcode_sessions=rng.randint(0, 50),
        direct_play_ratio=_maybe(rng, round(rng.random(), 3)),
        section_title=_maybe(rng, "Holiday videos " + str(rng.randint(2000, 2025))),
        item_title=_maybe(rng, rng.choice(TITLES)),
        file_name=_maybe(rng, file_name(rng), 0.3),
    )
    return rec


def relay(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("relay_session_end",))
    rec.update(
        relay_region=rng.choice(("us-east", "us-west", "eu-central")),
        bytes_transferred=rng.randint(0, 10**10),
        duration_ms=rng.randint(1_000, 10_000_000),
        throughput_kbps=round(rng.uniform(100, 50_000), 1),
        client_ip=ip_address(rng),
    )
    return rec


def metadata(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("match_lookup",))
    rec.update(
        media_kind=rng.choice(("movie", "episode", "track")),
        title_guess=rng.choice(TITLES),
        year=_maybe(rng, rng.randint(1950, 2025)),
        duration_ms=_maybe(rng, rng.randint(60_000, 10_000_000)),
        file_name=_maybe(rng, file_name(rng)),
        file_hash=_maybe(rng, f"{rng.getrandbits(64):016x}"),
        ip_address=ip_address(rng),
    )
    return rec


def integration(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("voice_request", "speaker_playback", "webhook_delivery",
                                 "automation_trigger"))
    rec.update(
        integration=rng.choice(("alexa", "sonos", "ifttt", "zapier", "smartthings", "webhook")),
        action=rng.choice(("play", "pause", "search", "notify")),
        success=rng.random() < 0.9,
        latency_ms=rng.randint(5, 5_000),
        requested_title=_maybe(rng, rng.choice(TITLES)),
        matched_metadata=_maybe(rng, {"title": rng.choice(TITLES), "file": file_name(rng)}),
        webhook_url=_maybe(rng, "https://hooks.example.com/SECRET-"
                           + uuid_of(rng.getrandbits(128)), 0.3),
        device_id=_maybe(rng, device_id(rng)),
    )
    return rec


RECORDS: dict[str, RecordFactory] = {
    "PlaybackEvent": playback,
    "ActivityEvent": activity,
    "AccountEvent": account,
    "PaymentEvent": payment,
    "ServerConfigEvent": server_config,
    "CrashReportEvent": crash,
    "PushNotificationEvent": notification,
    "ServerLibraryEvent": library,
    "RelayTransferEvent": relay,
    "MetadataMatchEvent": metadata,
    "IntegrationFulfilmentEvent": integration,
}


def personalize(schema: str, rec: dict[str, Any], subject: Subject,
                rng: random.Random) -> dict[str, Any]:
    """Make ``rec`` consistent with ``subject``: its devices, servers, e-mail, library."""
    dev, platform, ip = rng.choice(subject.devices)
    if "managed_profile" in rec:
        rec["managed_profile"] = subject.managed_profile and schema != "AccountEvent"
        rec["profile_id"] = subject.profile_id
    if "device_id" in rec and rec["device_id"] is not None:
        rec["device_id"] = dev
    if schema in ("PlaybackEvent", "AccountEvent"):
        rec.update(platform=platform, country=subject.country, ip_address=ip,
                   postal_code=subject.postal_code)
    elif "ip_address" in rec:
        rec["ip_address"] = ip
    if schema == "AccountEvent":
        rec.update(email=subject.email, user_name=subject.user_name)
    elif schema == "PaymentEvent":
        rec["billing_email"] = subject.email
    if "server_id" in rec:
        rec["server_id"] = rng.choice(subject.servers) if subject.servers else rec["server_id"]
        if "owner_email" in rec:
            rec["owner_email"] = subject.email
        if "owner_user_name" in rec:
            rec["owner_user_name"] = subject.user_name
        if subject.library and schema in ("CrashReportEvent", "ServerLibraryEvent",
                                          "MetadataMatchEvent", "IntegrationFulfilmentEvent"):
            title, fname = rng.choice(subject.library)
            for key in ("item_title", "title_guess", "requested_title"):
                if rec.get(key) is not None:
                    rec[key] = title
            if rec.get("file_name") is not None:
                rec["file_name"] = fname
            if schema == "CrashReportEvent" and "file_names" in rec:
                rec["file_names"] = [f for _, f in rng.sample(
                    subject.library, min(len(subject.library), len(rec["file_names"])))]
                rec["stack_trace"] = f"#0 transcode() reading {fname}"
    return rec


# --- control records -------------------------------------------------------------------------

def server_prefs(subject_id: str, rng: random.Random, count: int = 2,
                 **switches: bool | None) -> list[dict[str, Any]]:
    """Preference entries for the subject's servers (see ``server_id_for``)."""
    out = []
    for i in range(count):
        entry: dict[str, Any] = {"server_id": server_id_for(subject_id, i)}
        for key in ("crash_reports", "push_notifications", "optional_telemetry",
                    "metadata_matching"):
            entry[key] = switches.get(key, rng.choice((True, False, None)))
        out.append(entry)
    return out


def consent_record(subject: Subject, at_ms: int, rng: random.Random,
                   age_year: int | None = None) -> dict[str, Any]:
    """The subject's first consent record, effective ``at_ms``; age via band or birth year
    (a birth year keeps the subject in its band all of ``age_year``, default ``at_ms``'s)."""
    year = age_year or year_of(at_ms)
    by = birth_year_for(subject.age_band, year, rng) if rng.random() < 0.5 else None
    band = None if by is not None or subject.age_band == "unknown" else subject.age_band
    opt_in = subject.jurisdiction in ("EU", "GB")
    servers = [{"server_id": s, "crash_reports": not opt_in or rng.random() < 0.5,
                "push_notifications": True, "optional_telemetry": rng.choice((True, None)),
                "metadata_matching": rng.choice((True, False, None))} for s in subject.servers]
    return {
        "subject_id": subject.subject_id, "effective_at": at_ms, "recorded_at": at_ms,
        "policy_version": "2024-06-28", "jurisdiction": subject.jurisdiction,
        "birth_year": by, "age_band": band, "managed_profile": subject.managed_profile,
        "email": subject.email,
        "targeted_ads": rng.random() < 0.8 if not opt_in else rng.random() < 0.3,
        "activity_sharing": rng.random() < 0.3,
        "nonessential_cookies": rng.random() < (0.4 if opt_in else 0.85),
        "optional_playback_data": rng.random() < 0.7 if opt_in else None,
        "limit_sensitive": rng.random() < 0.05, "servers": servers,
    }


CONSENT_CHANGES = ("targeted_ads_off", "sharing_on", "sharing_off", "cookies_off",
                   "crash_reports_off", "notifications_off")


def consent_change(previous: dict[str, Any], at_ms: int, rng: random.Random) -> dict[str, Any]:
    """A later consent record: one switch flipped (opt-outs mostly), effective ``at_ms``."""
    rec = dict(previous, effective_at=at_ms, recorded_at=at_ms,
               servers=[dict(s) for s in previous["servers"]])
    change = rng.choice(CONSENT_CHANGES if rec["servers"] else CONSENT_CHANGES[:4])
    if change == "targeted_ads_off":
        rec["targeted_ads"] = False
    elif change in ("sharing_on", "sharing_off"):
        rec["activity_sharing"] = change == "sharing_on"
    elif change == "cookies_off":
        rec["nonessential_cookies"] = False
    else:
        key = "crash_reports" if change == "crash_reports_off" else "push_notifications"
        rng.choice(rec["servers"])[key] = False
    return rec


def subject_request(subject_id: str, requester_email: str, at_ms: int, rng: random.Random,
                    kind: str | None = None) -> dict[str, Any]:
    """A ``SubjectRequest``: mostly deletion and access, some correction and opt-out."""
    kind = kind or rng.choices(("delete", "access", "correct", "opt_out"), (4, 4, 1, 1))[0]
    return {
        "request_id": uuid_of(rng.getrandbits(128)), "type": kind, "subject_id": subject_id,
        "requester_email": requester_email, "agent_id": None, "submitted_at": at_ms,
        "correction": {"email": email(rng)} if kind == "correct" else None,
    }


def jan1_ms(year: int) -> int:
    return calendar.timegm((year, 1, 1, 0, 0, 0)) * 1000
