"""One valid record per input schema, as a plain dict: the traffic model's events.

``RECORDS`` maps each input schema to a factory of a random record (consistent with the
subject id when one is given); ``subject_value`` says which of a population ``Subject``'s
own values (device, servers, e-mail, ...) a field takes, so an event is consistent with
its subject.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from streams.traffic_model import (
    BASE_TIME_MS,
    COUNTRIES,
    DAY_MS,
    GENRES,
    PLATFORMS,
    RATINGS,
    TITLES,
    USER_AGENTS,
    Subject,
    device_id,
    email,
    file_name,
    ip_address,
    person_name,
    server_id_for,
    uuid_of,
)

__all__ = ["RECORDS", "RecordFactory", "subject_value"]

RecordFactory = Callable[[random.Random, str | None], dict[str, Any]]


def _maybe(rng: random.Random, value: Any, p: float = 0.7) -> Any:
    return value if rng.random() < p else None


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


def subject_value(schema: str, field: str, subject: Subject, device: tuple[str, str, str],
                  server: int) -> Any:
    """The value ``subject`` gives ``field`` of a ``schema`` event: its profile, ``device``
    (id, platform, ip), e-mail, user name, location or its ``server``-th media server."""
    if field == "managed_profile":
        return subject.managed_profile and schema != "AccountEvent"  # accounts: the owner
    if field == "server_id":
        return (subject.servers[server] if subject.servers
                else server_id_for(subject.subject_id, server))
    return _SUBJECT_VALUE[field](subject, device)


_SUBJECT_VALUE: dict[str, Callable[[Subject, tuple[str, str, str]], Any]] = {
    "profile_id": lambda s, d: s.profile_id,
    "device_id": lambda s, d: d[0],
    "platform": lambda s, d: d[1],
    "ip_address": lambda s, d: d[2],
    "country": lambda s, d: s.country,
    "postal_code": lambda s, d: s.postal_code,
    "email": lambda s, d: s.email,
    "billing_email": lambda s, d: s.email,
    "owner_email": lambda s, d: s.email,
    "user_name": lambda s, d: s.user_name,
    "owner_user_name": lambda s, d: s.user_name,
}
