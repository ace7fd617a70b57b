"""Seeded factories for valid sample records of every input and control schema.

Plain dicts, ready for ``streams.codec.encode`` and ``streams.engine.decide``::

    rng = random.Random(7)
    rec = make_record("PlaybackEvent", rng, subject_id="acct-1")
    events = sample_events(1000, seed=0)          # realistic mix of all input schemas
    consent = make_consent("acct-1", rng, birth_year=1990)

Sensitive sample values use recognisable markers (``@example.com`` e-mails,
``SECRET-`` tokens, ``/media/`` file names) so tests can grep outputs for leaks.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

BASE_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

PLATFORMS = ("ios", "android", "web", "roku", "androidtv", "tvos", "windows")
COUNTRIES = ("US", "US", "US", "CA", "GB", "DE", "SE", "BR")
JURISDICTIONS = ("US-CA", "US-VA", "US-CO", "US", "EU", "GB", "ZZ")
TITLES = ("The Long Night", "Ocean Drift", "Paper Moons", "Quiet Harbor", "Iron Valley")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "PlexMobile/10.12 okhttp/4.12",
)

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


def subject_ids(n: int) -> list[str]:
    return [f"acct-{i:06d}" for i in range(n)]


def server_id_for(subject_id: str, i: int = 0) -> str:
    return f"srv-{subject_id}-{i}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.8:
        octets = (rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 99))
        return ".".join(map(str, octets))
    return "2001:db8:{:x}:{:x}::{:x}".format(*(rng.getrandbits(16) for _ in range(3)))


def _email(rng: random.Random) -> str:
    return f"user{rng.randint(1, 10**6)}@example.com"


def _name(rng: random.Random) -> str:
    return (
        rng.choice(("Alice", "Bjorn", "Chen", "Dana"))
        + "-"
        + rng.choice(("Smith", "Lund", "Okafor"))
    )


def _file(rng: random.Random) -> str:
    return f"/media/private/{rng.choice(TITLES).replace(' ', '.')}.{rng.randint(1990, 2025)}.mkv"


def _envelope(rng: random.Random, event_type: str, subject_id: str | None) -> dict[str, Any]:
    return {
        "event_id": _uuid(rng),
        "subject_id": subject_id or f"acct-{rng.randint(0, 9999):06d}",
        "event_time": BASE_TIME_MS + rng.randint(0, 30 * 24 * 3_600_000),
        "event_type": event_type,
    }


def _maybe(rng: random.Random, value: Any, p: float = 0.7) -> Any:
    return value if rng.random() < p else None


def _playback(rng: random.Random, sid: str | None) -> dict[str, Any]:
    source = rng.choice(("catalog", "ad_supported", "personal"))
    rec = _envelope(
        rng,
        rng.choice(("play", "pause", "resume", "seek", "stop", "complete", "ad_impression")),
        sid,
    )
    rec.update(
        profile_id=_maybe(rng, f"prof-{rng.randint(1, 9999)}"),
        managed_profile=rng.random() < 0.1,
        device_id=f"dev-{rng.getrandbits(48):012x}",
        platform=rng.choice(PLATFORMS),
        app_version=f"{rng.randint(1, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 9)}",
        ip_address=_ip(rng),
        postal_code=_maybe(rng, f"{rng.randint(10000, 99999)}"),
        country=rng.choice(COUNTRIES),
        latitude=_maybe(rng, rng.uniform(-80, 80), 0.2),
        longitude=_maybe(rng, rng.uniform(-170, 170), 0.2),
        content_id=f"{'local' if source == 'personal' else 'cat'}-{rng.randint(1, 99999)}",
        content_source=source,
        title=_maybe(rng, rng.choice(TITLES), 0.9),
        genre=_maybe(rng, rng.choice(("drama", "comedy", "documentary"))),
        content_rating=_maybe(rng, rng.choice(("G", "PG-13", "TV-MA"))),
        file_name=_file(rng) if source == "personal" and rng.random() < 0.5 else None,
        position_ms=rng.randint(0, 7_200_000),
        duration_ms=rng.randint(600_000, 10_800_000),
        bitrate_kbps=_maybe(rng, rng.randint(500, 40_000)),
        data_tier=rng.choice(("required", "required", "optional")),
        ad_id=f"ad-{rng.randint(1, 999)}" if source == "ad_supported" else None,
        inferred_segment=_maybe(rng, rng.choice(("sci_fi_fan", "night_owl", "family")), 0.4),
    )
    return rec


def _activity(rng: random.Random, sid: str | None) -> dict[str, Any]:
    web = rng.random() < 0.5
    rec = _envelope(
        rng,
        rng.choice(
            ("page_view", "search", "click", "add_to_watchlist", "rate", "share", "sign_in")
        ),
        sid,
    )
    rec.update(
        profile_id=_maybe(rng, f"prof-{rng.randint(1, 9999)}"),
        managed_profile=rng.random() < 0.1,
        surface="web" if web else "app",
        cookie_scope=rng.choice(("essential", "functional", "analytics", "advertising"))
        if web
        else "none",
        session_id=_uuid(rng),
        device_id=f"dev-{rng.getrandbits(48):012x}",
        user_agent=rng.choice(USER_AGENTS),
        ip_address=_ip(rng),
        page_url=_maybe(
            rng,
            f"https://watch.example.com/title/{rng.randint(1, 999)}?ref=mail&email={_email(rng)}",
        ),
        referrer=_maybe(rng, "https://www.search.example/?q=secret"),
        search_query=_maybe(rng, f"{rng.choice(TITLES)} {_email(rng)}", 0.3),
        item_id=_maybe(rng, f"cat-{rng.randint(1, 99999)}"),
        user_rating=_maybe(rng, rng.randint(1, 5), 0.3),
        email=_maybe(rng, _email(rng), 0.2),
        user_name=_maybe(rng, _name(rng), 0.2),
        latitude=_maybe(rng, rng.uniform(-80, 80), 0.1),
        longitude=_maybe(rng, rng.uniform(-170, 170), 0.1),
        inferred_segment=_maybe(rng, "binge_watcher", 0.3),
    )
    return rec


def _account(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _envelope(
        rng,
        rng.choice(
            (
                "signup",
                "login",
                "logout",
                "password_change",
                "email_change",
                "profile_create",
                "plan_change",
            )
        ),
        sid,
    )
    rec.update(
        profile_id=_maybe(rng, f"prof-{rng.randint(1, 9999)}"),
        managed_profile=False,
        email=_email(rng),
        user_name=_name(rng),
        full_name=_maybe(rng, _name(rng)),
        device_id=f"dev-{rng.getrandbits(48):012x}",
        platform=rng.choice(PLATFORMS),
        ip_address=_ip(rng),
        country=rng.choice(COUNTRIES),
        postal_code=_maybe(rng, f"{rng.randint(10000, 99999)}"),
        auth_method=rng.choice(("password", "sso", "magic_link", "pin")),
        password_hash=_maybe(rng, "SECRET-hash-" + _uuid(rng), 0.2),
        auth_token=_maybe(rng, "SECRET-token-" + _uuid(rng), 0.3),
        two_factor_enabled=rng.random() < 0.3,
        plan=_maybe(rng, rng.choice(("free", "pass_monthly", "pass_yearly"))),
    )
    return rec


def _payment(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _envelope(
        rng,
        rng.choice(
            ("charge", "refund", "subscription_start", "subscription_cancel", "payment_failed")
        ),
        sid,
    )
    rec.update(
        transaction_id=f"txn-{rng.getrandbits(40):010x}",
        plan=rng.choice(("pass_monthly", "pass_yearly", "lifetime")),
        amount_cents=rng.choice((499, 3999, 11999)),
        currency=rng.choice(("USD", "EUR", "SEK")),
        payment_processor=rng.choice(("braintree", "apple", "google")),
        card_brand=_maybe(rng, rng.choice(("visa", "mastercard"))),
        card_last4=_maybe(rng, f"{rng.randint(0, 9999):04d}"),
        billing_email=_email(rng),
        full_name=_maybe(rng, _name(rng)),
        billing_postal_code=_maybe(rng, f"{rng.randint(10000, 99999)}"),
        ip_address=_ip(rng),
    )
    return rec


def _server_env(rng: random.Random, sid: str | None, types: tuple[str, ...]) -> dict[str, Any]:
    rec = _envelope(rng, rng.choice(types), sid)
    rec["server_id"] = server_id_for(rec["subject_id"], rng.randint(0, 1))
    return rec


def _server_config(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("server_created", "config_changed", "heartbeat"))
    rec.update(
        server_version=f"1.{rng.randint(30, 41)}.{rng.randint(0, 9)}",
        platform=rng.choice(("linux", "windows", "macos", "nas")),
        ip_address=_ip(rng),
        local_ip=_maybe(rng, f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"),
        file_count=rng.randint(0, 200_000),
        library_count=rng.randint(0, 12),
        secure_connections=rng.choice(("required", "preferred", "disabled")),
        remote_access_enabled=rng.random() < 0.7,
        relay_enabled=rng.random() < 0.8,
        owner_email=_email(rng),
        owner_user_name=_name(rng),
        access_token=_maybe(rng, "SECRET-srv-" + _uuid(rng)),
    )
    return rec


def _crash(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("crash",))
    rec.update(
        server_version=f"1.{rng.randint(30, 41)}.0",
        platform=rng.choice(("linux", "windows")),
        crash_signature=f"SIGSEGV@transcoder+0x{rng.getrandbits(16):x}",
        stack_trace=f"#0 transcode() reading {_file(rng)}",
        file_names=[_file(rng) for _ in range(rng.randint(0, 3))],
        ip_address=_ip(rng),
        owner_email=_email(rng),
    )
    return rec


def _notification(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(
        rng, sid, ("new_content", "playback_started", "server_update", "library_scan_complete")
    )
    rec.update(
        target_device_id=f"dev-{rng.getrandbits(48):012x}",
        title=_maybe(rng, f"New: {rng.choice(TITLES)}"),
        body=_maybe(rng, f"{_name(rng)} started {rng.choice(TITLES)}"),
        delivered=rng.random() < 0.95,
    )
    return rec


def _library(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("library_stats", "optional_playback_stats"))
    rec.update(
        section_type=rng.choice(("movie", "show", "music", "photo", "other")),
        item_count=rng.randint(0, 50_000),
        total_size_gb=round(rng.uniform(0, 20_000), 2),
        transcode_sessions=rng.randint(0, 50),
        direct_play_ratio=_maybe(rng, round(rng.random(), 3)),
        section_title=_maybe(rng, "Holiday videos " + str(rng.randint(2000, 2025))),
        item_title=_maybe(rng, rng.choice(TITLES)),
        file_name=_maybe(rng, _file(rng), 0.3),
    )
    return rec


def _relay(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("relay_session_end",))
    rec.update(
        relay_region=rng.choice(("us-east", "us-west", "eu-central")),
        bytes_transferred=rng.randint(0, 10**10),
        duration_ms=rng.randint(1_000, 10_000_000),
        throughput_kbps=round(rng.uniform(100, 50_000), 1),
        client_ip=_ip(rng),
    )
    return rec


def _metadata(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(rng, sid, ("match_lookup",))
    rec.update(
        media_kind=rng.choice(("movie", "episode", "track")),
        title_guess=rng.choice(TITLES),
        year=_maybe(rng, rng.randint(1950, 2025)),
        duration_ms=_maybe(rng, rng.randint(60_000, 10_000_000)),
        file_name=_maybe(rng, _file(rng)),
        file_hash=_maybe(rng, f"{rng.getrandbits(64):016x}"),
        ip_address=_ip(rng),
    )
    return rec


def _integration(rng: random.Random, sid: str | None) -> dict[str, Any]:
    rec = _server_env(
        rng, sid, ("voice_request", "speaker_playback", "webhook_delivery", "automation_trigger")
    )
    rec.update(
        integration=rng.choice(("alexa", "sonos", "ifttt", "zapier", "smartthings", "webhook")),
        action=rng.choice(("play", "pause", "search", "notify")),
        success=rng.random() < 0.9,
        latency_ms=rng.randint(5, 5_000),
        requested_title=_maybe(rng, rng.choice(TITLES)),
        matched_metadata=_maybe(rng, {"title": rng.choice(TITLES), "file": _file(rng)}),
        webhook_url=_maybe(rng, "https://hooks.example.com/SECRET-" + _uuid(rng), 0.3),
        device_id=_maybe(rng, f"dev-{rng.getrandbits(48):012x}"),
    )
    return rec


FACTORIES: dict[str, Callable[[random.Random, str | None], dict[str, Any]]] = {
    "PlaybackEvent": _playback,
    "ActivityEvent": _activity,
    "AccountEvent": _account,
    "PaymentEvent": _payment,
    "ServerConfigEvent": _server_config,
    "CrashReportEvent": _crash,
    "PushNotificationEvent": _notification,
    "ServerLibraryEvent": _library,
    "RelayTransferEvent": _relay,
    "MetadataMatchEvent": _metadata,
    "IntegrationFulfilmentEvent": _integration,
}


def make_record(schema: str, rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """One valid record of input schema ``schema``; ``overrides`` replace fields."""
    rec = FACTORIES[schema](rng, overrides.get("subject_id"))
    rec.update(overrides)
    return rec


def sample_events(n: int, seed: int = 0, subjects: int = 1_000) -> list[tuple[str, dict[str, Any]]]:
    """``n`` (schema_name, record) pairs in the realistic ``MIX``."""
    rng = random.Random(seed)
    names = list(MIX)
    weights = list(MIX.values())
    sids = subject_ids(subjects)
    out = []
    for name in rng.choices(names, weights, k=n):
        out.append((name, FACTORIES[name](rng, rng.choice(sids))))
    return out


def make_servers(
    subject_id: str, rng: random.Random, **switches: bool | None
) -> list[dict[str, Any]]:
    """Server preference entries for the subject's two servers (see ``server_id_for``)."""
    out = []
    for i in range(2):
        entry: dict[str, Any] = {"server_id": server_id_for(subject_id, i)}
        for key in (
            "crash_reports",
            "push_notifications",
            "optional_telemetry",
            "metadata_matching",
        ):
            entry[key] = switches.get(key, rng.choice((True, False, None)))
        out.append(entry)
    return out


def make_consent(subject_id: str, rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """A valid ``ConsentRecord`` for ``subject_id`` (an adult in the US unless overridden)."""
    rec: dict[str, Any] = {
        "subject_id": subject_id,
        "effective_at": BASE_TIME_MS - 86_400_000,
        "recorded_at": BASE_TIME_MS - 86_400_000,
        "policy_version": "2024-06-28",
        "jurisdiction": "US-CA",
        "birth_year": rng.randint(1950, 2000),
        "age_band": None,
        "managed_profile": False,
        "email": _email(rng),
        "targeted_ads": True,
        "activity_sharing": rng.choice((True, False)),
        "nonessential_cookies": rng.choice((True, False)),
        "optional_playback_data": True,
        "limit_sensitive": False,
        "servers": make_servers(
            subject_id,
            rng,
            crash_reports=True,
            push_notifications=True,
            optional_telemetry=True,
            metadata_matching=True,
        ),
    }
    rec.update(overrides)
    return rec


def make_request(subject_id: str, rng: random.Random, **overrides: Any) -> dict[str, Any]:
    """A valid ``SubjectRequest``."""
    rec: dict[str, Any] = {
        "request_id": _uuid(rng),
        "type": rng.choice(("delete", "access", "correct", "opt_out")),
        "subject_id": subject_id,
        "requester_email": _email(rng),
        "agent_id": None,
        "submitted_at": BASE_TIME_MS + rng.randint(0, 86_400_000),
        "correction": None,
    }
    if rec["type"] == "correct":
        rec["correction"] = {"email": _email(rng)}
    rec.update(overrides)
    return rec
