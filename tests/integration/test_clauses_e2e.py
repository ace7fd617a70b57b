"""Each clause the stream enforces (C1…C21), proved end to end on the real broker.

One scenario for the whole module: every clause gets its own subjects, all raw events and
consent records are produced first (the C1 opt-out *after* the events it governs), one
worker runs over them, and each test reads its clause's outcome off the output topics,
the drops, the dead letters and the request topic. Expected counts come from the pure
engine (``expected_outcomes``); the tests then assert each clause on what the broker holds.
"""

from __future__ import annotations

import base64
import os
import random
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.codec import default_codec
from streams.decisions import DeleteSubject, Dropped, Routed
from streams.infra import load_policy_for
from streams.settings import Settings
from tests.factories import BASE_TIME_MS, make_consent, make_record, sample_events, server_id_for
from tests.integration.harness import (
    expected_outcomes,
    pipeline_settings,
    produce,
    produce_events,
    read_topic,
    running_worker,
)

HOUR = 3_600_000
DAY = 24 * HOUR
T = BASE_TIME_MS + 10 * DAY  # when the C1 opt-out and the C2 sharing switch take effect
REGION = "us-west"  # not the policy file's own region: C12 proves the setting is stamped
LINKABLE = ("analytics", "advertising", "social", "crash_triage", "billing")
OUTPUTS = (*LINKABLE, "ml_training", "metadata_matching")
SERVER_SWITCHES = ("crash_reports", "push_notifications", "optional_telemetry",
                   "metadata_matching")


def subject_id(name: str) -> str:
    """Clause subjects' ids: never a substring of hex pseudonyms or ids."""
    return f"subj-{name}"


@dataclass
class Scenario:
    """The module's input: events and consent records, and which event ids prove what."""

    rng: random.Random = field(default_factory=lambda: random.Random(2024))
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    consents: list[dict[str, Any]] = field(default_factory=list)
    late_consents: list[dict[str, Any]] = field(default_factory=list)  # after the events
    tags: dict[str, list[str]] = field(default_factory=dict)

    def consent(self, name: str, *, late: bool = False, server0: dict[str, bool] | None = None,
                **overrides: Any) -> None:
        """An adult US-CA subject with every switch on unless overridden; ``server0``
        overrides the switches of the subject's first server (the second keeps all on)."""
        subject = subject_id(name)
        base = {"activity_sharing": False, "nonessential_cookies": True, "targeted_ads": True,
                "optional_playback_data": True, "limit_sensitive": False}
        servers = [{"server_id": server_id_for(subject, i), **dict.fromkeys(SERVER_SWITCHES, True),
                    **((server0 or {}) if i == 0 else {})} for i in range(2)]
        rec = make_consent(subject, self.rng, servers=servers, **(base | overrides))
        (self.late_consents if late else self.consents).append(rec)

    def event(self, tag: str, schema: str, name: str, *, server: int = 0,
              **overrides: Any) -> dict[str, Any]:
        subject = subject_id(name)
        defaults: dict[str, Any] = {}
        if schema == "PlaybackEvent":
            defaults = {"content_source": "catalog", "event_type": "play", "data_tier": "required",
                        "managed_profile": False, "file_name": None, "latitude": None,
                        "longitude": None}
        elif schema == "ActivityEvent":
            defaults = {"managed_profile": False, "surface": "app", "cookie_scope": "none"}
        rec = make_record(schema, self.rng, subject_id=subject, **(defaults | overrides))
        if "server_id" in rec and "server_id" not in overrides:
            rec["server_id"] = server_id_for(subject, server)
        self.events.append((schema, rec))
        self.tags.setdefault(tag, []).append(rec["event_id"])
        return rec

    def ids(self, tag: str) -> set[str]:
        return set(self.tags[tag])


def build_scenario() -> Scenario:
    sc = Scenario()
    # C1: ad-supported playback before and after an opt-out effective at T; the opt-out
    # record is produced after all events.
    sc.consent("c1")
    sc.consent("c1", late=True, targeted_ads=False, effective_at=T, recorded_at=T)
    for h in (-3, -2, -1):
        sc.event("c1-before", "PlaybackEvent", "c1", content_source="ad_supported",
                 event_time=T + h * HOUR)
    sc.event("c1-before", "PlaybackEvent", "c1", content_source="ad_supported",
             event_time=T - 1)
    for h in (0, 1, 2):
        sc.event("c1-after", "PlaybackEvent", "c1", content_source="ad_supported",
                 event_time=T + h * HOUR)
    # C2: sharing on / default (unset) / off / switched on at T; seek is not watch activity.
    sc.consent("c2-on", activity_sharing=True)
    sc.consent("c2-default", activity_sharing=None)
    sc.consent("c2-off", activity_sharing=False)
    sc.consent("c2-toggle", activity_sharing=False)
    sc.consent("c2-toggle", activity_sharing=True, effective_at=T, recorded_at=T)
    for subject in ("c2-on", "c2-default", "c2-off"):
        for event_type in ("play", "complete"):
            sc.event(subject, "PlaybackEvent", subject, event_type=event_type)
    sc.event("c2-on-seek", "PlaybackEvent", "c2-on", event_type="seek")
    sc.event("c2-toggle-before", "PlaybackEvent", "c2-toggle", event_time=T - HOUR)
    sc.event("c2-toggle-after", "PlaybackEvent", "c2-toggle", event_time=T + HOUR)
    # C3: non-essential cookie web events while cookies are off.
    sc.consent("c3-off", nonessential_cookies=False)
    sc.consent("c3-on", nonessential_cookies=True)
    for scope in ("functional", "analytics", "advertising"):
        sc.event("c3-off-nonessential", "ActivityEvent", "c3-off", surface="web",
                 cookie_scope=scope)
        sc.event("c3-on-nonessential", "ActivityEvent", "c3-on", surface="web",
                 cookie_scope=scope)
    sc.event("c3-off-essential", "ActivityEvent", "c3-off", surface="web",
             cookie_scope="essential")
    sc.event("c3-off-app", "ActivityEvent", "c3-off")
    # C4, C5, C6: a server owner switched crash reports / notifications / optional
    # telemetry off on the first server; the second server keeps them on.
    for clause, switch in (("c4", "crash_reports"), ("c5", "push_notifications"),
                           ("c6-server", "optional_telemetry")):
        sc.consent(clause, server0={switch: False})
    for server in (0, 1):
        sc.event(f"c4-server{server}", "CrashReportEvent", "c4", server=server,
                 file_names=[f"/media/private/C4-crash-{server}-{i}.mkv" for i in range(2)],
                 stack_trace=f"#0 transcode() reading /media/private/C4-crash-{server}-st.mkv")
        sc.event(f"c5-server{server}", "PushNotificationEvent", "c5", server=server,
                 title="New: C5-secret-title", body="Bjorn started C5-secret-body")
        sc.event(f"c6-server{server}", "ServerLibraryEvent", "c6-server", server=server)
    sc.consent("c6-playback", optional_playback_data=False)
    sc.event("c6-playback-optional", "PlaybackEvent", "c6-playback", data_tier="optional")
    sc.event("c6-playback-required", "PlaybackEvent", "c6-playback", data_tier="required")
    # C8: a subject known to be under 13.
    sc.consent("c8-child", birth_year=2016)
    for schema in ("PlaybackEvent", "ActivityEvent", "PaymentEvent", "CrashReportEvent"):
        sc.event("c8", schema, "c8-child", server=1)
    # C9 / C10: consented to everything, but under 16, unknown age, no consent record, or
    # a managed profile (by consent record or by the event's own flag).
    sc.consent("c9-14", birth_year=2011, activity_sharing=True)
    sc.consent("c9-band", birth_year=None, age_band="age_13_15", activity_sharing=True)
    sc.consent("c9-unknown", birth_year=None, age_band=None, activity_sharing=True)
    sc.consent("c10-managed", managed_profile=True, activity_sharing=True)
    sc.consent("c10-event", activity_sharing=True)
    for subject in ("c9-14", "c9-band", "c9-unknown", "c9-none"):
        sc.event("c9", "PlaybackEvent", subject, content_source="ad_supported")
        sc.event("c9", "ActivityEvent", subject)
    sc.event("c10", "PlaybackEvent", "c10-managed")
    sc.event("c10", "PlaybackEvent", "c10-event", managed_profile=True)
    # C11: integration fulfilment with a personal title and metadata.
    sc.consent("c11")
    sc.event("c11", "IntegrationFulfilmentEvent", "c11", requested_title="C11-requested-title",
             matched_metadata={"title": "C11-matched-title", "file": "/media/C11-file.mkv"})
    # C13: payment (billing only) and an inference (never to ads).
    sc.consent("c13")
    sc.event("c13-payment", "PaymentEvent", "c13", transaction_id="txn-C13-marker",
             amount_cents=12345)
    sc.event("c13-inferred", "PlaybackEvent", "c13", inferred_segment="C13-inferred-segment")
    # C16: precise location, credentials, card digits; and the limit-sensitive switch.
    sc.consent("c16")
    sc.consent("c16-limit", limit_sensitive=True)
    sc.event("c16", "PlaybackEvent", "c16", latitude=59.329321, longitude=18.068581)
    sc.event("c16", "ActivityEvent", "c16", latitude=59.329321, longitude=18.068581)
    sc.event("c16", "AccountEvent", "c16", password_hash="SECRET-C16-hash",
             auth_token="SECRET-C16-token")
    sc.event("c16", "PaymentEvent", "c16", card_last4="4242", card_brand="visa")
    sc.event("c16-limit", "PlaybackEvent", "c16-limit", inferred_segment="night_owl",
             postal_code="12345")
    # C17: personal content in playback, library data and metadata lookups.
    sc.consent("c17", activity_sharing=True)
    sc.event("c17-personal", "PlaybackEvent", "c17", content_source="personal",
             title="C17-home-video", file_name="/media/private/C17-home.mkv",
             genre="C17-genre", content_id="local-C17-content")
    sc.event("c17-library", "ServerLibraryEvent", "c17", section_title="C17-section",
             item_title="C17-item", file_name="/media/private/C17-library.mkv")
    sc.event("c17-lookup", "MetadataMatchEvent", "c17", title_guess="C17-guess",
             file_name="/media/private/C17-match.mkv", file_hash="c17c17c17c17c17c")
    # C18, C19: relay transfer metrics; configuration data.
    sc.consent("c18")
    sc.event("c18", "RelayTransferEvent", "c18")
    sc.consent("c19")
    sc.event("c19", "ServerConfigEvent", "c19", ip_address="203.0.113.77",
             local_ip="192.168.7.77", file_count=4321, access_token="SECRET-C19-token")
    # C21: ML training (added in 2024-06-28) only for subjects who consented to it.
    for subject, version in (("c21-old", "2023-09-01"), ("c21-unknown", "unpublished"),
                             ("c21-new", "2024-06-28")):
        sc.consent(subject, policy_version=version)
        for _ in range(3):
            sc.event(subject, "PlaybackEvent", subject, app_version=f"21.0.{subject}")
    # Realistic background traffic (half the subjects with a consent record).
    rng = random.Random(7)
    for schema, rec in sample_events(300, seed=5, subjects=30):
        sc.events.append((schema, rec))
        sc.tags.setdefault("mix", []).append(rec["event_id"])
    sc.consents += [make_consent(f"acct-{i:06d}", rng) for i in range(0, 30, 2)]
    return sc


@dataclass
class Run:
    """What the broker holds after the worker ran over the scenario."""

    settings: Settings
    scenario: Scenario
    expected: dict[str, Any]
    messages: dict[str, list[Any]]  # topic name -> messages (every catalog topic)
    subject_keys: dict[str, bytes]
    master_key: bytes

    def topic(self, name: str) -> str:
        cat = self.settings.catalog
        return (cat.destination(name) if name in OUTPUTS else getattr(cat, name)).name

    def records(self, name: str) -> list[dict[str, Any]]:
        codec = default_codec()
        return [codec.decode(m.value())[1] for m in self.messages[self.topic(name)]
                if m.value() is not None]

    def raw(self, name: str) -> list[bytes]:
        """Key and value bytes of every message of a topic."""
        return [(m.key() or b"") + b"\x00" + (m.value() or b"")
                for m in self.messages[self.topic(name)]]

    def ids(self, name: str) -> set[str]:
        return {r["event_id"] for r in self.records(name)}

    def by_id(self, name: str) -> dict[str, dict[str, Any]]:
        return {r["event_id"]: r for r in self.records(name)}

    def drops(self) -> dict[str, tuple[str, str]]:
        return {r["event_id"]: (r["reason"], r["clause"]) for r in self.records("drops")}

    def anywhere(self, needle: str, *, outside: tuple[str, ...] = ()) -> list[str]:
        """Names of output/drop/dead-letter topics whose bytes hold ``needle``."""
        data = needle.encode()
        return [name for name in (*OUTPUTS, "drops", "dead_letters") if name not in outside
                and any(data in b for b in self.raw(name))]


def _wait_counts(settings: Settings, expected: dict[str, Any], bad: int) -> None:
    """Read each output until it holds what the engine expects (exactly once: no more)."""
    want: Counter[str] = Counter()
    for decision in expected.values():
        if isinstance(decision, Routed):
            want.update(o.destination for o in decision.outputs)
        else:
            want["drops"] += 1
    want["dead_letters"] = bad
    cat = settings.catalog
    for name, n in want.items():
        topic = (cat.destination(name) if name in OUTPUTS else getattr(cat, name)).name
        read_topic(settings.kafka_bootstrap, topic, until=lambda m, n=n: len(m) >= n,
                   timeout=120)


BAD_RECORDS = [("bad-0", b"\x00\x00\x00\x03\xe7\x02"), ("bad-1", b"not avro at all"),
               ("bad-2", b"\x00\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")]


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    master_key = os.urandom(32)
    settings = pipeline_settings(
        kafka_bootstrap, tmp_path_factory.mktemp("clauses"),
        f"clauses-{uuid.uuid4().hex[:10]}.", PRIVACY_PIPELINE_REGION=REGION,
        PRIVACY_PIPELINE_MASTER_KEY=base64.b64encode(master_key).decode())
    cat = settings.catalog
    sc = build_scenario()
    policy = load_policy_for(settings)
    expected = expected_outcomes(sc.events, sc.consents + sc.late_consents, policy)
    produce(settings, cat.consent.name, [(c["subject_id"], c) for c in sc.consents],
            schema="ConsentRecord")
    produce_events(settings, sc.events)
    produce(settings, cat.raw_server.name, BAD_RECORDS)
    produce(settings, cat.consent.name, [(c["subject_id"], c) for c in sc.late_consents],
            schema="ConsentRecord")  # C1: the opt-out arrives after the events it governs
    with running_worker(settings) as worker:
        _wait_counts(settings, expected, len(BAD_RECORDS))
        read_topic(kafka_bootstrap, cat.requests.name, until=lambda m: len(m) >= 1)
        subject_keys = {s: k for store in worker.stores.values() for s, k in store.keys.items()}
    messages = {t.name: read_topic(kafka_bootstrap, t.name) for t in cat}
    yield Run(settings, sc, expected, messages, subject_keys, master_key)


def test_scenario_outcomes_match_the_engine_exactly_once(run: Run) -> None:
    """Every event: exactly the engine's outputs (no more, no fewer) or exactly one drop."""
    want: Counter[str] = Counter()
    for decision in run.expected.values():
        if isinstance(decision, Routed):
            want.update(o.destination for o in decision.outputs)
    for name in OUTPUTS:
        assert len(run.messages[run.topic(name)]) == want[name], name
        assert want[name] > 0, f"the scenario should route something to {name}"
    drops = run.drops()
    assert len(run.records("drops")) == len(drops)  # one drop record per event
    expected_drops = {i: (d.reason, d.clause) for i, d in run.expected.items()
                      if isinstance(d, Dropped | DeleteSubject)}
    assert drops == expected_drops
    for name in LINKABLE:
        ids = [r["event_id"] for r in run.records(name)]
        assert len(ids) == len(set(ids)), name
        assert not set(ids) & set(drops), name


def test_C1_opt_out_stops_advertising_from_its_effective_time(run: Run) -> None:
    """C1: events before the opt-out's effective time reach advertising, events at or after
    it do not (the opt-out record was produced after every one of these events), and the
    ad-supported playback is still processed for analytics."""
    ads, analytics = run.ids("advertising"), run.ids("analytics")
    before, after = run.scenario.ids("c1-before"), run.scenario.ids("c1-after")
    assert before <= ads
    assert not after & ads
    assert before | after <= analytics


def test_C2_social_only_while_sharing_is_on_default_off(run: Run) -> None:
    """C2: watch activity reaches social only while sharing is on; unset means off."""
    social, sc = run.ids("social"), run.scenario
    assert sc.ids("c2-on") <= social
    assert not (sc.ids("c2-default") | sc.ids("c2-off")) & social
    assert sc.ids("c2-toggle-after") <= social and not sc.ids("c2-toggle-before") & social
    assert not sc.ids("c2-on-seek") & social  # only play/complete are watch activity
    analytics = run.ids("analytics")
    assert sc.ids("c2-default") | sc.ids("c2-off") <= analytics


def test_C3_cookie_scoped_web_events_dropped_while_cookies_off(run: Run) -> None:
    """C3: non-essential-cookie web activity is dropped (named drop) while cookies are off."""
    drops, analytics, sc = run.drops(), run.ids("analytics"), run.scenario
    for event_id in sc.ids("c3-off-nonessential"):
        assert drops[event_id] == ("nonessential_cookies_off", "C3")
    for name in LINKABLE:
        assert not sc.ids("c3-off-nonessential") & run.ids(name), name
    assert sc.ids("c3-off-essential") | sc.ids("c3-off-app") | sc.ids("c3-on-nonessential") \
        <= analytics


def test_C4_crash_reports_dropped_when_disabled_file_names_only_in_crash_triage(run: Run) -> None:
    """C4: crash reports of a server that disabled them are dropped; the other server's go
    to crash-triage only, which is the only topic holding file names."""
    drops, triage, sc = run.drops(), run.by_id("crash_triage"), run.scenario
    for event_id in sc.ids("c4-server0"):
        assert drops[event_id] == ("crash_reports_disabled", "C4")
        assert event_id not in triage
    for event_id in sc.ids("c4-server1"):
        assert triage[event_id]["file_names"] == [
            f"/media/private/C4-crash-1-{i}.mkv" for i in range(2)]
    assert run.anywhere("C4-crash-0") == []
    assert run.anywhere("C4-crash-1") == ["crash_triage"]
    assert run.anywhere("/media/", outside=("crash_triage",)) == []


def test_C5_no_notifications_for_servers_that_disabled_them(run: Run) -> None:
    """C5: notifications of a server that disabled them are dropped; none carries content."""
    drops, analytics, sc = run.drops(), run.ids("analytics"), run.scenario
    for event_id in sc.ids("c5-server0"):
        assert drops[event_id] == ("push_notifications_disabled", "C5")
        assert event_id not in analytics
    assert sc.ids("c5-server1") <= analytics
    assert run.anywhere("C5-secret") == []


def test_C6_optional_telemetry_dropped_when_switched_off(run: Run) -> None:
    """C6: optional server/library data and optional playback data are dropped when off."""
    drops, analytics, sc = run.drops(), run.ids("analytics"), run.scenario
    for event_id in sc.ids("c6-server0"):
        assert drops[event_id] == ("optional_server_data_off", "C6")
    for event_id in sc.ids("c6-playback-optional"):
        assert drops[event_id] == ("optional_playback_data_off", "C6")
    assert sc.ids("c6-server1") | sc.ids("c6-playback-required") <= analytics


def _pseudonyms(run: Run) -> set[str]:
    """Every pseudonym any linkable output carries (subject, device, profile, server)."""
    out = set()
    for name in LINKABLE:
        for rec in run.records(name):
            out.add(rec["subject_pseudonym"])
            out.update(v for k, v in rec["attributes"].items() if k.endswith("_pseudonym"))
    return out


def test_C7_ml_output_holds_no_identifier_or_pseudonym(run: Run) -> None:
    """C7: ML examples carry no event id, no subject id, no pseudonym of any other output,
    and their time is coarsened to the hour."""
    examples, raw = run.records("ml_training"), run.raw("ml_training")
    assert examples
    pseudonyms = _pseudonyms(run)
    ids = {rec["event_id"] for _, rec in run.scenario.events}
    subjects = {rec["subject_id"] for _, rec in run.scenario.events}
    for rec in examples:
        assert "event_id" not in rec and "subject_pseudonym" not in rec
        assert not any(k.endswith("_pseudonym") for k in rec["features"])
        assert rec["event_hour"] % HOUR == 0
        assert not set(map(str, rec["features"].values())) & (pseudonyms | ids | subjects)
    for needle in pseudonyms | ids | subjects:
        assert not any(needle.encode() in b for b in raw), needle
    assert all(m.key() is None for m in run.messages[run.topic("ml_training")])


def test_C8_under_13_nothing_emitted_drop_and_deletion_request(run: Run) -> None:
    """C8: a subject known to be under 13: nothing in any output, a named drop per event,
    and a deletion request from the pipeline itself on control.requests."""
    drops, sc = run.drops(), run.scenario
    child = sc.ids("c8")
    for event_id in child:
        assert drops[event_id] == ("under_13", "C8")
    for name in LINKABLE:
        assert not child & run.ids(name), name
    assert run.anywhere(subject_id("c8-child")) == []
    requests = run.records("requests")
    assert requests and all(r["subject_id"] == subject_id("c8-child") for r in requests)
    for r in requests:
        assert r["type"] == "delete" and r["agent_id"] == "privacy-pipeline:C8"
        assert r["requester_email"] == ""
    keys = {m.key() for m in run.messages[run.topic("requests")]}
    assert keys == {subject_id("c8-child").encode()}


def test_C9_under_16_or_unknown_age_never_sold_or_shared(run: Run) -> None:
    """C9: under 16 (birth year or band), unknown age or no consent record: never in
    advertising or social (the third-party outputs), still in analytics."""
    c9 = run.scenario.ids("c9")
    assert not c9 & (run.ids("advertising") | run.ids("social"))
    assert c9 <= run.ids("analytics")


def test_C10_managed_profiles_get_no_ads_and_no_sharing(run: Run) -> None:
    """C10: managed profiles (by consent record or event flag) get child rules."""
    c10 = run.scenario.ids("c10")
    assert not c10 & (run.ids("advertising") | run.ids("social"))
    assert c10 <= run.ids("analytics")


def test_C11_integration_fulfilment_carries_no_personal_titles(run: Run) -> None:
    """C11: integration fulfilment reaches analytics without titles or metadata; no
    personal title from it appears in analytics, ML, ads or anywhere else."""
    assert run.scenario.ids("c11") <= run.ids("analytics")
    for needle in ("C11-requested-title", "C11-matched-title", "C11-file"):
        assert run.anywhere(needle) == [], needle


def test_C12_every_output_record_carries_the_processing_region(run: Run) -> None:
    """C12: every output, drop, dead-letter and key-vault record carries the configured
    processing region (us-west here, not the policy file's us-east)."""
    for name in (*OUTPUTS, "drops", "dead_letters", "key_vault"):
        records = run.records(name)
        assert records, name
        assert {r["processing_region"] for r in records} == {REGION}, name


PAYMENT_FIELDS = {"transaction_id", "amount_cents", "currency", "payment_processor",
                  "card_brand", "card_last4", "billing_email", "billing_region"}


def test_C13_ads_hold_no_payment_or_inference_payment_only_in_billing(run: Run) -> None:
    """C13: payment events reach billing only; ads records never hold payment fields or
    inferences (the inference does reach internal analytics)."""
    sc = run.scenario
    billing = run.by_id("billing")
    for event_id in sc.ids("c13-payment"):
        assert billing[event_id]["amount_cents"] == 12345
    payment_ids = {rec["event_id"] for schema, rec in sc.events if schema == "PaymentEvent"}
    for name in LINKABLE:
        if name != "billing":
            assert not payment_ids & run.ids(name), name
    assert run.anywhere("txn-C13-marker") == ["billing"]
    ads = run.records("advertising")
    assert sc.ids("c13-inferred") <= {r["event_id"] for r in ads}
    for rec in ads:
        assert not PAYMENT_FIELDS & (set(rec) | set(rec["attributes"]) | set(rec["measures"]))
        assert "inferred_segment" not in rec["attributes"]
    assert run.anywhere("C13-inferred-segment") == ["analytics"]


def _values(rec: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for v in rec.values():
        if isinstance(v, dict):
            out.extend([*v.keys(), *v.values()])
        elif isinstance(v, list):
            out.extend(v)
        else:
            out.append(v)
    return out


def test_C16_sensitive_fields_never_in_analytics_ml_or_ads(run: Run) -> None:
    """C16: precise location, credentials and card digits never reach analytics, ML or
    ads (nor any other output); limit-sensitive drops location and inferences too."""
    for name in OUTPUTS:
        for rec in run.records(name):
            values = _values(rec)
            assert 59.329321 not in values and 18.068581 not in values, name
            assert "4242" not in map(str, values), name
            assert not {"latitude", "longitude", "card_last4"} & set(rec.get("attributes", {}))
    assert run.anywhere("SECRET-") == [] and run.anywhere("59.329321") == []
    assert run.scenario.ids("c16") - run.ids("analytics") - run.ids("billing") == set()
    limited = run.by_id("analytics")
    for event_id in run.scenario.ids("c16-limit"):
        attrs = limited[event_id]["attributes"]
        assert not {"ip_prefix", "postal_region", "country", "inferred_segment"} & set(attrs)


def test_C17_personal_content_never_leaves_lookups_unlinked(run: Run) -> None:
    """C17: personal titles, file names and metadata never leave (file names only in crash
    triage); personal playback never reaches third parties; metadata lookups leave with
    no subject link."""
    sc = run.scenario
    for needle in ("C17-home", "C17-genre", "C17-section", "C17-item", "C17-library",
                   "C17-match", "local-C17-content", "c17c17c17c17c17c"):
        assert run.anywhere(needle) == [], needle
    personal = sc.ids("c17-personal")
    assert personal <= run.ids("analytics")
    assert not personal & (run.ids("advertising") | run.ids("social"))
    lookups = [r for r in run.records("metadata_matching") if r.get("title_guess") == "C17-guess"]
    assert len(lookups) == 1
    assert run.anywhere("C17-guess") == ["metadata_matching"]
    lookup_event = next(rec for schema, rec in sc.events
                        if rec["event_id"] in sc.ids("c17-lookup"))
    for rec in run.records("metadata_matching"):
        assert "event_id" not in rec and "subject_pseudonym" not in rec
        assert not any(k.endswith("_pseudonym") for k in rec["attributes"])
    for needle in (lookup_event["event_id"], subject_id("c17"), lookup_event["server_id"],
                   lookup_event["ip_address"]):
        assert not any(needle.encode() in b for b in run.raw("metadata_matching")), needle
    assert all(m.key() is None for m in run.messages[run.topic("metadata_matching")])


def test_C18_relay_outputs_carry_transfer_metrics_only(run: Run) -> None:
    """C18: relay events leave as transfer metrics only (no payload or content field)."""
    analytics = run.by_id("analytics")
    relay_ids = {rec["event_id"] for schema, rec in run.scenario.events
                 if schema == "RelayTransferEvent"}
    assert run.scenario.ids("c18") <= set(analytics)
    for event_id in relay_ids & set(analytics):
        rec = analytics[event_id]
        assert set(rec["measures"]) == {"bytes_transferred", "duration_ms", "throughput_kbps"}
        assert set(rec["attributes"]) <= {"server_pseudonym", "relay_region",
                                          "client_ip_prefix"}


def test_C19_configuration_data_pseudonymized_and_generalized(run: Run) -> None:
    """C19: configuration data leaves only generalized (IP /24, file-count bucket) and
    pseudonymized (server); no raw IP, owner identity or token."""
    (event_id,) = run.scenario.ids("c19")
    rec = run.by_id("analytics")[event_id]
    assert rec["attributes"]["ip_prefix"] == "203.0.113.0/24"
    assert rec["attributes"]["file_count_bucket"] == "1000-9999"
    server = server_id_for(subject_id("c19"), 0)
    assert rec["attributes"]["server_pseudonym"] != server
    for needle in ("203.0.113.77", "192.168.7.77", "SECRET-C19-token", server):
        assert run.anywhere(needle) == [], needle


def test_C21_new_purpose_only_for_subjects_who_consented_to_it(run: Run) -> None:
    """C21: ML training (added in policy 2024-06-28) receives only subjects who consented
    to that version; an older or unknown version: analytics only."""
    versions = Counter(r["features"].get("app_version") for r in run.records("ml_training"))
    assert versions["21.0.c21-new"] == 3
    assert versions["21.0.c21-old"] == 0 and versions["21.0.c21-unknown"] == 0
    sc = run.scenario
    assert sc.ids("c21-old") | sc.ids("c21-unknown") | sc.ids("c21-new") <= run.ids("analytics")


EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


def _personal_needles(sc: Scenario) -> set[str]:
    """Every raw e-mail, user name, full IP, subject, server and device id produced."""
    needles: set[str] = set()
    for _, rec in sc.events:
        needles.add(rec["subject_id"])
        for name in ("email", "user_name", "full_name", "owner_email", "owner_user_name",
                     "billing_email", "ip_address", "client_ip", "local_ip", "server_id",
                     "device_id", "target_device_id"):
            if rec.get(name):
                needles.add(rec[name])
        for v in rec.values():
            if isinstance(v, str):
                needles.update(EMAIL.findall(v))
    needles.update(c["email"] for c in sc.consents + sc.late_consents if c.get("email"))
    return needles


def test_dictionary_attack_finds_no_personal_data_in_any_output(run: Run) -> None:
    """Issue 9 (5) / C7, C16, C19: no output, drop or dead-letter record holds any raw
    e-mail, user name, full IP, subject, server or device id of the produced events; ML
    values never equal an analytics pseudonym."""
    needles = _personal_needles(run.scenario)
    assert len(needles) > 200
    blobs = {name: run.raw(name) for name in (*OUTPUTS, "drops", "dead_letters")}
    hits = sorted((needle, name) for needle in needles for name, raw in blobs.items()
                  if any(needle.encode() in b for b in raw))
    assert hits == []
    analytics_pseudonyms = {r["subject_pseudonym"] for r in run.records("analytics")}
    analytics_pseudonyms |= {v for r in run.records("analytics")
                             for k, v in r["attributes"].items() if k.endswith("_pseudonym")}
    for rec in run.records("ml_training"):
        assert not set(map(str, _values(rec))) & analytics_pseudonyms


def test_master_and_subject_keys_appear_in_no_topic(run: Run) -> None:
    """Issue 9 (5): neither the master key nor any subject key (raw, hex or base64) is in
    any topic of the catalog, raw and state topics included."""
    secrets_ = [run.master_key, *run.subject_keys.values()]
    assert len(run.subject_keys) > 20
    forms = [f for k in secrets_ for f in (k, k.hex().encode(), base64.b64encode(k),
                                             base64.urlsafe_b64encode(k))]
    for topic, messages in run.messages.items():
        for m in messages:
            blob = (m.key() or b"") + (m.value() or b"") + b"".join(
                v or b"" for _, v in (m.headers() or ()))
            assert not any(f in blob for f in forms), topic


def test_scenario_is_not_vacuous() -> None:
    """The scenario's clause tags each hold events (guards the tests above)."""
    sc = build_scenario()
    assert all(sc.tags.values()) and len(sc.tags) > 30
    assert len({rec["event_id"] for _, rec in sc.events}) == len(sc.events)
