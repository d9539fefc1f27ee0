"""The event bus and its log sink (gateway/events.py) beside the audit trail: the log
sink keeps one assembled logger but follows every reconfiguration (level, processors,
capture_logs), never logs a flagged address unmasked, and `durable()` waits for the
sinks that defer their writes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from crypto.keys import Keyring
from gateway.audit import AuditTrail
from gateway.config import AuditConfig
from gateway.events import EventBus, LogSink
from gateway.logging import configure_logging

PATIENT = "jeanne.durand@free.fr"


@pytest.fixture
def logging_restored() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_sink_follows_the_level_and_masks_flagged_addresses(
    logging_restored: None,
) -> None:
    bus = EventBus()
    bus.subscribe(LogSink(b"k" * 32))
    quiet = io.StringIO()
    configure_logging("warning", quiet)
    bus.emit("received", recipients=[PATIENT], identifies_patient=True, size=1)
    assert quiet.getvalue() == ""
    chatty = io.StringIO()
    configure_logging("info", chatty)  # a new configuration: the next event sees it
    bus.emit("received", recipients=[PATIENT], identifies_patient=True, size=2)
    bus.emit("delivery", recipients=["labo@labo.test"], status="delivered")
    (received, delivery) = lines(chatty)
    assert received["event"] == "received" and received["size"] == 2
    assert str(received["recipients"][0]).startswith("#")  # type: ignore[index]
    assert delivery["recipients"] == ["labo@labo.test"]  # not flagged: as it was
    assert "jeanne" not in chatty.getvalue()
    configure_logging("warning", quiet)
    bus.emit("received", size=3)
    assert quiet.getvalue() == "" and len(lines(chatty)) == 2


def test_log_sink_lines_reach_capture_logs(logging_restored: None) -> None:
    configure_logging("info", io.StringIO())
    sink = LogSink(b"k" * 32)
    sink_bus = EventBus()
    sink_bus.subscribe(sink)
    sink_bus.emit("received", size=1)  # assembled before the capture starts
    with capture_logs() as captured:  # edits the processors list in place
        sink_bus.emit("decided", route="lab", recipients=[PATIENT], identifies_patient=True)
    assert [entry["event"] for entry in captured] == ["decided"]
    assert PATIENT not in repr(captured)
    assert captured[0]["recipients"][0].endswith("@free.fr")


async def test_durable_waits_for_the_trail_whatever_the_subscription_order(
    data_dir: Path, keyring: Keyring
) -> None:
    trail = AuditTrail.open(data_dir, keyring, AuditConfig())
    bus = EventBus()
    bus.subscribe(LogSink(keyring.digest_key))
    bus.subscribe(trail, required=True)
    with trail._lock:  # the writer cannot commit yet
        bus.emit("received", size=1)
        bus.emit("decided", route="lab")
    await bus.durable()
    assert [r.kind for r in trail.iter_records()] == ["received", "decided"]
    trail.close()
