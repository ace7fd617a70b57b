"""Benchmark the decision engine alone: one process, a realistic event mix.

``run()`` builds ``events`` seeded synthetic events over a population of subjects with
varied consent (jurisdictions, ages, managed profiles, opt-outs, switched-off servers,
some without any consent record), then times ``engine.decide`` over all of them.
``main()`` prints progress and one JSON object on its last line.
"""

from __future__ import annotations

import gc
import hashlib
import json
import random
import sys
import time
from collections import Counter
from functools import cache
from typing import Any

from streams import consent, engine
from streams.consent import SubjectHistory
from streams.policy import Policy, default_policy

__all__ = ["build_workload", "main", "run"]

BASE_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
JURISDICTIONS = ("US-CA", "US-VA", "US", "US", "US", "EU", "GB")
MIX = (
    ("PlaybackEvent", 45),
    ("ActivityEvent", 22),
    ("AccountEvent", 3),
    ("PaymentEvent", 2),
    ("ServerConfigEvent", 5),
    ("CrashReportEvent", 2),
    ("PushNotificationEvent", 6),
    ("ServerLibraryEvent", 6),
    ("RelayTransferEvent", 5),
    ("MetadataMatchEvent", 2),
    ("IntegrationFulfilmentEvent", 2),
)


def _consent_record(rng: random.Random, sid: str) -> dict[str, Any]:
    r = rng.random()
    birth_year = (
        None if r < 0.1 else (2015 if r < 0.12 else (2011 if r < 0.17 else rng.randint(1950, 2004)))
    )
    return {
        "subject_id": sid,
        "effective_at": BASE_TIME_MS - 86_400_000,
        "recorded_at": BASE_TIME_MS - 86_400_000,
        "policy_version": "2024-06-28" if rng.random() < 0.8 else "2023-09-01",
        "jurisdiction": rng.choice(JURISDICTIONS),
        "birth_year": birth_year,
        "age_band": None,
        "managed_profile": rng.random() < 0.05,
        "email": None,
        "targeted_ads": None if rng.random() < 0.7 else rng.random() < 0.5,
        "activity_sharing": rng.random() < 0.3,
        "nonessential_cookies": None if rng.random() < 0.5 else rng.random() < 0.5,
        "optional_playback_data": None,
        "limit_sensitive": rng.random() < 0.1,
        "servers": [
            {
                "server_id": f"srv-{sid}-{i}",
                "crash_reports": rng.random() < 0.8,
                "push_notifications": rng.random() < 0.8,
                "optional_telemetry": None,
                "metadata_matching": rng.random() < 0.5,
            }
            for i in range(2)
        ],
    }


@cache
def _ips(sid: str) -> tuple[str, ...]:
    # A subject uses a few addresses (home, mobile, work), not a new one per event.
    h = int(hashlib.sha256(sid.encode()).hexdigest(), 16)
    return tuple(
        f"{(h >> (8 * i)) % 223 + 1}.{(h >> 40) % 256}.{(h >> (48 + i)) % 256}.{i + 7}"
        for i in range(3)
    )


def _event(rng: random.Random, schema: str, sid: str, n: int) -> dict[str, Any]:
    # A compact generator (the tests' factories are richer but slower to build 200k of).
    t = BASE_TIME_MS + rng.randrange(30 * 86_400_000)
    rec: dict[str, Any] = {
        "event_id": f"00000000-0000-4000-8000-{n:012d}",
        "subject_id": sid,
        "event_time": t,
    }
    ip = _ips(sid)[n % 3]
    server = {"server_id": f"srv-{sid}-{n % 2}"}
    if schema == "PlaybackEvent":
        src = rng.choice(("catalog", "ad_supported", "personal"))
        rec.update(
            event_type=rng.choice(("play", "pause", "stop", "complete", "seek")),
            profile_id=None,
            managed_profile=False,
            device_id=f"dev-{sid}",
            platform="roku",
            app_version="8.1.2",
            ip_address=ip,
            postal_code=f"{rng.randint(10000, 99999)}",
            country="US",
            latitude=None,
            longitude=None,
            content_id=f"cat-{n % 5000}",
            content_source=src,
            title="Ocean Drift",
            genre="drama",
            content_rating="PG-13",
            file_name="/media/x.mkv" if src == "personal" else None,
            position_ms=rng.randrange(7_200_000),
            duration_ms=7_200_000,
            bitrate_kbps=8000,
            data_tier="optional" if n % 5 == 0 else "required",
            ad_id="ad-1" if src == "ad_supported" else None,
            inferred_segment="family",
        )
    elif schema == "ActivityEvent":
        web = n % 2 == 0
        rec.update(
            event_type="page_view",
            profile_id=None,
            managed_profile=False,
            surface="web" if web else "app",
            cookie_scope=rng.choice(("essential", "analytics")) if web else "none",
            session_id=f"sess-{n % 977}",
            device_id=f"dev-{sid}",
            user_agent="Mozilla/5.0 Chrome/126.0 Safari/537.36",
            ip_address=ip,
            page_url=f"https://watch.example.com/title/{n % 300}?utm=x",
            referrer=None,
            search_query=None,
            item_id=f"cat-{n % 5000}",
            user_rating=None,
            email=None,
            user_name=None,
            latitude=None,
            longitude=None,
            inferred_segment=None,
        )
    elif schema == "AccountEvent":
        rec.update(
            event_type="login",
            profile_id=None,
            managed_profile=False,
            email="a@example.com",
            user_name="alice",
            full_name=None,
            device_id=f"dev-{sid}",
            platform="web",
            ip_address=ip,
            country="US",
            postal_code="94110",
            auth_method="password",
            password_hash=None,
            auth_token="SECRET",
            two_factor_enabled=True,
            plan="pass_monthly",
        )
    elif schema == "PaymentEvent":
        rec.update(
            event_type="charge",
            transaction_id=f"txn-{n}",
            plan="pass_yearly",
            amount_cents=3999,
            currency="USD",
            payment_processor="braintree",
            card_brand="visa",
            card_last4="4242",
            billing_email="a@example.com",
            full_name="Alice",
            billing_postal_code="94110",
            ip_address=ip,
        )
    elif schema == "ServerConfigEvent":
        rec.update(
            server,
            event_type="heartbeat",
            server_version="1.40.1",
            platform="linux",
            ip_address=ip,
            local_ip="192.168.1.2",
            file_count=rng.randrange(100_000),
            library_count=4,
            secure_connections="preferred",
            remote_access_enabled=True,
            relay_enabled=True,
            owner_email="a@example.com",
            owner_user_name="alice",
            access_token=None,
        )
    elif schema == "CrashReportEvent":
        rec.update(
            server,
            event_type="crash",
            server_version="1.40.1",
            platform="linux",
            crash_signature="SIGSEGV",
            stack_trace="#0 main",
            file_names=["/m/a.mkv"],
            ip_address=ip,
            owner_email="a@example.com",
        )
    elif schema == "PushNotificationEvent":
        rec.update(
            server,
            event_type="new_content",
            target_device_id=f"dev-{sid}",
            title="New: Ocean Drift",
            body=None,
            delivered=True,
        )
    elif schema == "ServerLibraryEvent":
        rec.update(
            server,
            event_type="library_stats",
            section_type="movie",
            item_count=rng.randrange(5000),
            total_size_gb=812.5,
            transcode_sessions=3,
            direct_play_ratio=0.7,
            section_title="Home movies",
            item_title=None,
            file_name=None,
        )
    elif schema == "RelayTransferEvent":
        rec.update(
            server,
            event_type="relay_session_end",
            relay_region="us-east",
            bytes_transferred=rng.randrange(10**9),
            duration_ms=600_000,
            throughput_kbps=4000.0,
            client_ip=ip,
        )
    elif schema == "MetadataMatchEvent":
        rec.update(
            server,
            event_type="match_lookup",
            media_kind="movie",
            title_guess="Ocean Drift",
            year=2019,
            duration_ms=6_000_000,
            file_name="/m/Ocean.Drift.mkv",
            file_hash=None,
            ip_address=ip,
        )
    else:
        rec.update(
            server,
            event_type="voice_request",
            integration="alexa",
            action="play",
            success=True,
            latency_ms=240,
            requested_title="Ocean Drift",
            matched_metadata=None,
            webhook_url=None,
            device_id=None,
        )
    return rec


def build_workload(
    events: int, seed: int = 0, subjects: int = 20_000
) -> list[tuple[str, dict[str, Any], Any, bytes]]:
    """``(schema, record, state, subject_key)`` tuples; ~3% of subjects have no consent."""
    rng = random.Random(seed)
    sids = [f"acct-{i:06d}" for i in range(subjects)]
    histories: dict[str, SubjectHistory | None] = {}
    keys: dict[str, bytes] = {}
    for sid in sids:
        keys[sid] = rng.randbytes(32)
        histories[sid] = (
            None if rng.random() < 0.03 else consent.apply(None, _consent_record(rng, sid))
        )
    names = [n for n, _ in MIX]
    weights = [w for _, w in MIX]
    work = []
    for n, schema in enumerate(rng.choices(names, weights, k=events)):
        sid = sids[int(rng.paretovariate(1.2)) % subjects]  # a few heavy subjects
        rec = _event(rng, schema, sid, n)
        hist = histories[sid]
        state = hist.at(rec["event_time"]) if hist is not None else None
        work.append((schema, rec, state, keys[sid]))
    return work


def run(
    events: int = 200_000, seed: int = 0, policy: Policy | None = None, progress: bool = False
) -> dict[str, Any]:
    """Time ``engine.decide`` over ``events`` events; returns ``events_per_s`` and counts."""
    policy = policy or default_policy()
    if progress:
        print(f"building {events} events (seed {seed}) ...", file=sys.stderr, flush=True)
    work = build_workload(events, seed)
    decide = engine.decide
    if progress:
        print("deciding ...", file=sys.stderr, flush=True)
    outcomes: Counter[str] = Counter()
    outputs = 0
    # The workload is input data a streaming worker would never hold all at once: keep
    # the cyclic GC from rescanning it on every collection while the engine runs.
    gc.collect()
    gc.freeze()
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        decisions = [decide(s, r, st, k, policy) for s, r, st, k in work]
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        gc.unfreeze()
    for d in decisions:
        if isinstance(d, engine.Routed):
            outcomes["routed"] += 1
            outputs += len(d.outputs)
        elif isinstance(d, engine.Dropped):
            outcomes[f"dropped:{d.reason}"] += 1
        else:
            outcomes["delete_subject"] += 1
    return {
        "benchmark": "policy_engine",
        "events": events,
        "seed": seed,
        "seconds": round(elapsed, 4),
        "cpu_seconds": round(cpu, 4),  # below "seconds" when other processes share the CPU
        "events_per_s": round(events / elapsed) if elapsed > 0 else None,
        "outputs": outputs,
        "outcomes": dict(sorted(outcomes.items())),
        "policy_version": policy.version,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m streams.bench_policy [events] [seed]``; last line is one JSON object."""
    args = sys.argv[1:] if argv is None else argv
    events = int(args[0]) if args else 200_000
    seed = int(args[1]) if len(args) > 1 else 0
    result = run(events, seed, progress=True)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
