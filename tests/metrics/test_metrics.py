"""/metrics over a real aiohttp server on an ephemeral port, parsed with
prometheus_client's own parser after feeding the events a few messages produce."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from crypto.keys import Keyring
from gateway.audit import AuditTrail
from gateway.config import AuditConfig
from gateway.events import Event, EventBus
from gateway.metrics import Metrics, start_metrics_server
from gateway.smtp import CommitPastBudget

PLANTED = ("jeanne.durand@patient.mssante.fr", "1 84 12 75 123 456 78", "Durand")


def port_of(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])


@pytest.fixture
async def served() -> AsyncIterator[tuple[Metrics, str, dict[str, bool]]]:
    metrics = Metrics()
    ready = {"spool_writable": True, "keys_loaded": True, "audit_writable": True}
    runner = await start_metrics_server(metrics, "127.0.0.1:0", lambda: dict(ready))
    try:
        yield metrics, f"http://127.0.0.1:{port_of(runner)}", ready
    finally:
        await runner.cleanup()


def feed_a_few_messages(bus: EventBus) -> None:
    bus.emit(
        "received",
        spool_id="s1",
        client="127.0.0.1",
        user="cabinet",
        mail_from="dr@cabinet.test",
        recipients=["confrere@ortho.mssante.fr", PLANTED[0]],
        size=2048,
        message_id="<1@cabinet>",
    )
    bus.emit(
        "decided",
        spool_id="s1",
        copy_id="c1",
        route="mssante",
        action="pass",
        connector="mssante",
        verdict="pass",
        findings={"nir": 1, "name": 2},
    )
    bus.emit(
        "decided",
        spool_id="s1",
        copy_id="c2",
        route="lab",
        action="pseudonymise",
        connector="lab_https",
        verdict="rewritten",
        findings={"name": 2, "birth_date": 1},
    )
    bus.emit("queued", spool_id="s1", queue_id="q1", route="mssante", connector="mssante")
    bus.emit("queued", spool_id="s1", queue_id="q2", route="lab", connector="lab_https")
    bus.emit(
        "delivery",
        queue_id="q1",
        connector="mssante",
        status="delivered",
        attempt=1,
        latency_s=0.4,
        bytes=2100,
    )
    bus.emit(
        "delivery", queue_id="q2", connector="lab_https", status="tempfail", attempt=1, detail="x"
    )
    bus.emit("deferred", queue_id="q2", next_attempt_in_s=60, detail="503")
    bus.emit(
        "delivery", queue_id="q2", connector="lab_https", status="delivered", attempt=2, bytes=900
    )
    bus.emit("received", spool_id="s2", client="127.0.0.1", recipients=["a@b.test"], size=100)
    bus.emit(
        "decided",
        spool_id="s2",
        copy_id="c3",
        route="other",
        action="reject-if-phi",
        verdict="hold",
        findings={"phone": 1},
        reason=f"patient data for {PLANTED[2]}",
    )
    bus.emit("held", spool_id="s2", copy_id="c3", route="other", reason="phi")
    bus.emit("bounced", spool_id="s2", reason="phi", recipients=["a@b.test"])
    bus.emit("admin_login", user="alice", ok=False, client="127.0.0.1")
    bus.emit("lockdown", on=True, user="alice")


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    for got, v in found.get(name, []):
        if all(got.get(k) == want for k, want in labels.items()):
            return v
    raise AssertionError(f"no sample {name} {labels}; have {found.get(name)}")


async def fetch(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_metrics_families_and_labels_after_a_few_messages(
    served: tuple[Metrics, str, dict[str, bool]],
) -> None:
    metrics, base, _ = served
    bus = EventBus()
    bus.subscribe(metrics)
    feed_a_few_messages(bus)
    metrics.set_queue_depth(3)
    metrics.set_oldest_age(42.5)
    metrics.observe_scan_duration(0.02)
    metrics.observe_latency(1.5)
    metrics.set_audit_chain_ok(True)
    metrics.set_client_cert_expiry("mssante", 1_900_000_000)
    metrics.tls_handshake_failure("outbound", "mssante")
    metrics.commit_past_budget(CommitPastBudget.WITHDRAWN)

    status, ctype, text = await fetch(base + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    found = samples(text)

    assert value(found, "portique_messages_received_total", authenticated="true") == 1
    assert value(found, "portique_messages_received_total", authenticated="false") == 1
    assert (
        value(
            found,
            "portique_messages_processed_total",
            route="lab",
            action="pseudonymise",
            outcome="rewritten",
        )
        == 1
    )
    assert value(found, "portique_messages_processed_total", route="other", outcome="hold") == 1
    assert (
        value(
            found,
            "portique_messages_delivered_total",
            route="mssante",
            action="pass",
            outcome="delivered",
        )
        == 1
    )
    assert value(found, "portique_messages_delivered_total", route="lab", outcome="delivered") == 1
    assert value(found, "portique_messages_held_total", route="other") == 1
    assert value(found, "portique_bounces_total") == 1
    assert value(found, "portique_findings_total", type="name") == 4
    assert value(found, "portique_findings_total", type="nir") == 1
    assert value(found, "portique_findings_total", type="birth_date") == 1
    assert value(found, "portique_scan_duration_seconds_count") == 1
    assert value(found, "portique_scan_duration_seconds_bucket", le="0.025") == 1
    assert value(found, "portique_end_to_end_latency_seconds_count") == 1
    assert value(found, "portique_queue_depth") == 3
    assert value(found, "portique_queue_oldest_age_seconds") == 42.5
    assert value(found, "portique_delivery_attempts_total", connector="lab_https") == 2
    assert value(found, "portique_delivery_attempts_total", connector="mssante") == 1
    assert (
        value(found, "portique_delivery_failures_total", connector="lab_https", kind="tempfail")
        == 1
    )
    assert (
        value(
            found,
            "portique_tls_handshake_failures_total",
            direction="outbound",
            connector="mssante",
        )
        == 1
    )
    # Every outcome's series is there from the start (Prometheus' increase() misses
    # the first increment of a series that appears with it).
    past_budget = "portique_smtp_commits_past_budget_total"
    assert value(found, past_budget, outcome="withdrawn") == 1
    for outcome in ("accepted", "tempfail", "client_gone"):
        assert value(found, past_budget, outcome=outcome) == 0
    assert value(found, "portique_bytes_received_total") == 2148
    assert value(found, "portique_bytes_sent_total", connector="mssante") == 2100
    assert value(found, "portique_bytes_sent_total", connector="lab_https") == 900
    assert value(found, "portique_audit_chain_ok") == 1
    assert value(found, "portique_lockdown") == 1
    assert (
        value(found, "portique_client_cert_expiry_timestamp_seconds", connector="mssante")
        == 1_900_000_000
    )
    assert value(found, "portique_admin_logins_total", outcome="failure") == 1

    for planted in PLANTED:
        assert planted not in text
    assert "@" not in text


async def test_label_values_never_carry_addresses_or_free_text(
    served: tuple[Metrics, str, dict[str, bool]],
) -> None:
    metrics, base, _ = served
    bus = EventBus()
    bus.subscribe(metrics)
    bus.emit("decided", route=PLANTED[0], action="pass", verdict="pass", findings={PLANTED[1]: 1})
    bus.emit("delivery", connector="x" * 200, status="delivered", queue_id="q9")
    _, _, text = await fetch(base + "/metrics")
    found = samples(text)
    assert value(found, "portique_messages_processed_total", route="other", action="pass") == 1
    assert value(found, "portique_findings_total", type="other") == 1
    assert value(found, "portique_delivery_attempts_total", connector="other") == 1
    for planted in PLANTED[:2]:
        assert planted not in text


async def test_malformed_events_do_not_raise(served: tuple[Metrics, str, dict[str, Any]]) -> None:
    metrics, base, _ = served
    bus = EventBus()
    bus.subscribe(metrics, required=True)
    bus.emit("received", size="huge", recipients=None)
    bus.emit("decided", findings=["nir"], route=None)
    bus.emit("delivery", bytes=float("nan"), status=None)
    bus.emit("unknown-kind", whatever=object())
    status, _, text = await fetch(base + "/metrics")
    assert status == 200
    assert value(samples(text), "portique_events_total", kind="unknown-kind") == 1


async def test_healthz_and_readyz(served: tuple[Metrics, str, dict[str, bool]]) -> None:
    _, base, ready = served
    assert (await fetch(base + "/healthz"))[0] == 200
    status, ctype, body = await fetch(base + "/readyz")
    assert status == 200 and ctype.startswith("application/json")
    ready["audit_writable"] = False
    ready["spool_writable"] = False
    status, _, body = await fetch(base + "/readyz")
    assert status == 503
    assert '"failing": ["audit_writable", "spool_writable"]' in body


async def test_readyz_is_503_when_the_check_itself_fails() -> None:
    def broken() -> dict[str, bool]:
        raise RuntimeError("disk gone: /var/lib/portique")

    runner = await start_metrics_server(Metrics(), "127.0.0.1:0", broken)
    try:
        status, _, body = await fetch(f"http://127.0.0.1:{port_of(runner)}/readyz")
    finally:
        await runner.cleanup()
    assert status == 503
    assert "disk gone" not in body


def test_two_instances_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.set_queue_depth(5)
    assert second.registry.get_sample_value("portique_queue_depth") == 0
    assert first.registry.get_sample_value("portique_queue_depth") == 5


def test_remembered_copies_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.metrics as module

    monkeypatch.setattr(module, "_MAX_REMEMBERED_COPIES", 10)
    metrics = Metrics()
    bus = EventBus()
    bus.subscribe(metrics)
    emit = bus.emit
    for i in range(50):
        emit("queued", queue_id=f"q{i}", route="lab")
    assert len(metrics._copies) == 10


async def test_audit_chain_gauge_follows_the_real_trail(data_dir: Path, keyring: Keyring) -> None:
    trail = AuditTrail.open(data_dir, keyring, AuditConfig())
    metrics = Metrics()
    bus = EventBus()
    bus.subscribe(trail, required=True)
    bus.subscribe(metrics)

    def chain_ok() -> bool:
        status = trail.status()
        return status.ok and status.writable

    metrics.watch_audit_chain(chain_ok)
    runner = await start_metrics_server(metrics, "127.0.0.1:0", lambda: {"audit": True})
    url = f"http://127.0.0.1:{port_of(runner)}/metrics"
    try:
        bus.emit("received", size=10, recipients=["a@b.test"])
        _, _, text = await fetch(url)
        assert value(samples(text), "portique_audit_chain_ok") == 1
        conn = sqlite3.connect(data_dir / "audit.sqlite", isolation_level=None)
        conn.execute("DROP TRIGGER records_no_update")
        # The scrape checks records added since the previous one (a full verify()
        # covers the older ones): tamper with a record appended after the scrape.
        bus.emit("received", size=20, recipients=["c@d.test"])
        await trail.durable()  # emitted on the loop: committed by the group writer
        conn.execute("UPDATE records SET actor = 'mallory' WHERE seq = 2")
        conn.close()
        _, _, text = await fetch(url)
        assert value(samples(text), "portique_audit_chain_ok") == 0
    finally:
        await runner.cleanup()
        trail.close()


def test_remembered_labelled_children_count_per_label_set() -> None:
    """Metrics keeps each labelled child once made: every label set still counts
    apart, and values that are not label tokens still all count as "other"."""
    metrics = Metrics()
    bus = EventBus()
    bus.subscribe(metrics)
    for _ in range(3):
        bus.emit("decided", route="lab", action="pseudonymise", verdict="rewritten")
    for _ in range(2):
        bus.emit("decided", route="other", action="reject-if-phi", verdict="hold")
    bus.emit("decided", route="lab", action="pseudonymise", verdict="hold")
    bus.emit("decided", route="a@b.test", action="pass", verdict="pass")
    bus.emit("decided", route="c@d.test", action="pass", verdict="pass")
    for connector, status in [("relay", "delivered")] * 4 + [("relay", "tempfail")] * 2:
        bus.emit("delivery", connector=connector, status=status, queue_id="q")
    bus.emit("delivery", connector="mssante", status="tempfail", queue_id="q")

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    processed = "portique_messages_processed_total"
    lab = {"route": "lab", "action": "pseudonymise"}
    assert sample(processed, **lab, outcome="rewritten") == 3
    assert sample(processed, **lab, outcome="hold") == 1
    assert sample(processed, route="other", action="reject-if-phi", outcome="hold") == 2
    assert sample(processed, route="other", action="pass", outcome="pass") == 2
    assert sample("portique_delivery_attempts_total", connector="relay") == 6
    assert sample("portique_delivery_attempts_total", connector="mssante") == 1
    failures = "portique_delivery_failures_total"
    assert sample(failures, connector="relay", kind="tempfail") == 2
    assert sample(failures, connector="mssante", kind="tempfail") == 1
    assert sample("portique_events_total", kind="decided") == 8
    assert sample("portique_events_total", kind="delivery") == 7
    # A second instance has its own children: nothing counted there.
    other = Metrics()
    assert other.registry.get_sample_value(processed, {**lab, "outcome": "rewritten"}) is None
    other.emit(Event("decided", {"route": "lab", "action": "pseudonymise", "verdict": "hold"}))
    assert other.registry.get_sample_value(processed, {**lab, "outcome": "hold"}) == 1
    assert sample(processed, **lab, outcome="hold") == 1


def test_a_fast_path_delivery_naming_its_message_and_route_gets_the_action() -> None:
    """A fast-path copy is delivered under a queue id nobody announced: with the
    spool id and route in its event, its action comes from the decision."""
    metrics = Metrics()
    bus = EventBus()
    bus.subscribe(metrics)
    bus.emit("decided", spool_id="s1", copy_id="s1.0", route="lab", action="pseudonymise")
    bus.emit("delivery", queue_id="fresh", spool_id="s1", route="lab", status="delivered")
    bus.emit("delivery", queue_id="other", status="delivered")  # names nothing: unknown
    delivered = "portique_messages_delivered_total"
    labels = {"route": "lab", "action": "pseudonymise", "outcome": "delivered"}
    assert metrics.registry.get_sample_value(delivered, labels) == 1
    unknown = {"route": "unknown", "action": "unknown", "outcome": "delivered"}
    assert metrics.registry.get_sample_value(delivered, unknown) == 1


def test_updates_wait_for_a_flush_yet_no_reader_sees_them_stale() -> None:
    """Increments and observations are applied to prometheus_client by `flush`; the
    registry's own collection and the exposition flush first, so both count them."""
    import threading

    metrics = Metrics()
    bus = EventBus()
    bus.subscribe(metrics)
    counter = metrics._child(metrics.messages_delivered, "lab", "pseudonymise", "delivered")

    def deliver(n: int) -> None:
        for _ in range(n):
            bus.emit(
                "delivery",
                connector="relay",
                status="delivered",
                route="lab",
                action="pseudonymise",
                bytes=100,
            )

    threads = [threading.Thread(target=deliver, args=(500,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    metrics.observe_latency(0.2)
    # Not applied yet: the prometheus value itself has not moved.
    assert counter._value.get() == 0
    assert metrics.latency._sum.get() == 0
    # The registry's collection flushes first: every increment from every thread counts.
    labels = {"route": "lab", "action": "pseudonymise", "outcome": "delivered"}
    assert metrics.registry.get_sample_value("portique_messages_delivered_total", labels) == 2000
    assert counter._value.get() == 2000
    assert (
        metrics.registry.get_sample_value("portique_bytes_sent_total", {"connector": "relay"})
        == 200_000
    )
    assert metrics.registry.get_sample_value("portique_end_to_end_latency_seconds_count") == 1
    # The exposition flushes too.
    deliver(3)
    assert b'outcome="delivered",route="lab"} 2003.0' in metrics.exposition()
    # An explicit flush, and nothing is applied twice.
    deliver(1)
    metrics.flush()
    metrics.flush()
    assert counter._value.get() == 2004


def test_finding_and_event_kinds_count_under_their_labels_however_often_seen() -> None:
    from gateway.events import Event
    from gateway.metrics import Metrics

    metrics = Metrics()
    for _ in range(3):  # the memo of each kind's child is filled, then used
        metrics.emit(
            Event(
                "decided",
                {
                    "route": "lab",
                    "action": "pseudonymise",
                    "verdict": "rewritten",
                    "findings": {"nir": 2, "name": 1, "bad kind!": 4, "zero": 0},
                },
            )
        )
    metrics.emit(Event("odd kind?", {}))
    found = samples(metrics.exposition().decode())
    assert value(found, "portique_findings_total", type="nir") == 6
    assert value(found, "portique_findings_total", type="name") == 3
    assert value(found, "portique_findings_total", type="other") == 12  # not a label value
    assert not any(s.get("type") == "zero" for s, _ in found["portique_findings_total"])
    assert value(found, "portique_events_total", kind="decided") == 3
    assert value(found, "portique_events_total", kind="other") == 1


def test_label_values_are_remembered_only_when_they_are_tokens() -> None:
    """`_label` remembers the texts it keeps as label values (the same route and status
    names recur in every event); an address or free text reads "other" every time and
    is never kept."""
    from gateway import metrics as metrics_module

    rejected = ["jeanne.dupont@patient.mssante.fr", "free text, with spaces", "x" * 65]
    for _ in range(2):  # the second pass meets the memo
        assert metrics_module._label("lab-dupont.1") == "lab-dupont.1"
        assert [metrics_module._label(text) for text in rejected] == ["other"] * 3
        assert metrics_module._label("", "unknown") == "unknown"
    assert "lab-dupont.1" in metrics_module._known_tokens
    assert metrics_module._known_tokens.isdisjoint([*rejected, ""])
