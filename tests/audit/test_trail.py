"""AuditTrail behaviour: durable appends, masking, search, status, pruning, e-mail."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from crypto.keys import Keyring
from gateway.audit import AuditTrail
from gateway.config import AuditConfig
from gateway.errors import AuditError
from gateway.events import Event, EventBus, mask_address

from ._helpers import fill


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def test_append_returns_consecutive_numbers_that_survive_reopening(
    data_dir: Path, keyring: Keyring
) -> None:
    with AuditTrail.open(data_dir, keyring, AuditConfig()) as trail:
        assert trail.append("config_reload", {"user": "alice"}, actor="alice") == 1
        assert trail.append("lockdown", {"on": True}, actor="alice") == 2
    with AuditTrail.open(data_dir, keyring, AuditConfig()) as trail:
        assert trail.append("lockdown", {"on": False}, actor="bob") == 3
        records, total = trail.search()
        assert total == 3
        assert [r.seq for r in records] == [3, 2, 1]
        assert records[0].actor == "bob"
        assert records[0].fields == {"on": False}
        assert records[1].prev_hash == records[2].hash
        assert trail.verify().ok


def test_close_writes_a_signed_checkpoint(data_dir: Path, keyring: Keyring) -> None:
    with AuditTrail.open(data_dir, keyring, AuditConfig(checkpoint_every=4)) as trail:
        fill(trail, 10)
        assert [cp.seq for cp in trail.checkpoints()] == [4, 8]
    with AuditTrail.open_readonly(data_dir, keyring, AuditConfig()) as trail:
        cps = trail.checkpoints()
        assert [(cp.seq, cp.kind) for cp in cps] == [
            (4, "periodic"),
            (8, "periodic"),
            (10, "close"),
        ]
        result = trail.verify()
        assert result.ok and result.last_checkpoint == 10 and result.records_checked == 10


def test_append_failure_raises_audit_error(data_dir: Path, keyring: Keyring) -> None:
    trail = AuditTrail.open(data_dir, keyring, AuditConfig())
    trail.append("received", {"size": 1})
    # Another process holds the write lock past the busy timeout: the write must fail
    # loudly rather than be lost silently.
    trail._conn.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(data_dir / "audit.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(AuditError, match="cannot write"):
            trail.append("received", {"size": 2})
        assert not trail.status().writable
        assert not trail.is_writable()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert trail.append("received", {"size": 3}) == 2
    assert trail.is_writable()
    trail.close()
    with pytest.raises(AuditError):
        trail.append("received", {})


def test_patient_addresses_are_masked_and_still_searchable(
    data_dir: Path, keyring: Keyring
) -> None:
    bus = EventBus()
    with AuditTrail.open(data_dir, keyring, AuditConfig()) as trail:
        bus.subscribe(trail, required=True)
        bus.emit(
            "received",
            mail_from="dr.martin@cabinet-martin.fr",
            recipients=["jeanne.durand@patient.mssante.fr", "labo@prothese-sud.fr"],
            message_id="<abc@cabinet>",
            size=1234,
        )
        bus.emit(
            "decided",
            route="patient-copy",
            action="own-data-only",
            recipients=["jeanne.d@gmail.com"],
            identifies_patient=True,
            reason="own data only for jeanne.d@gmail.com",
        )
        received, decided = sorted(trail.search()[0], key=lambda r: r.seq)
        key = keyring.digest_key
        assert received.fields["recipients"] == [
            mask_address("jeanne.durand@patient.mssante.fr", key),
            "labo@prothese-sud.fr",
        ]
        assert received.fields["mail_from"] == "dr.martin@cabinet-martin.fr"
        assert decided.fields["recipients"] == [mask_address("jeanne.d@gmail.com", key)]
        assert "jeanne" not in decided.fields["reason"]

        # Search by the full address: hashed the same way.
        hits, total = trail.search(recipient="Jeanne.Durand@patient.mssante.fr")
        assert total == 1 and hits[0].seq == received.seq
        hits, total = trail.search(recipient="jeanne.d@gmail.com")
        assert total == 1 and hits[0].seq == decided.seq
        hits, total = trail.search(sender="dr.martin@cabinet-martin.fr")
        assert total == 1
        assert trail.search(recipient="someone.else@patient.mssante.fr")[1] == 0


def test_search_filters_and_pages(data_dir: Path, keyring: Keyring) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 8, 0, tzinfo=UTC))
    with AuditTrail.open(data_dir, keyring, AuditConfig(), clock=clock) as trail:
        for i in range(30):
            clock.advance(minutes=1)
            trail.append(
                "decided",
                {
                    "route": "lab" if i % 3 == 0 else "mssante",
                    "action": "pseudonymise" if i % 3 == 0 else "pass",
                    "message_id": f"<m{i}@x>",
                },
            )
        assert trail.search(route="lab")[1] == 10
        assert trail.search(route="lab", action="pass")[1] == 0
        assert trail.search(message_id="<m7@x>")[0][0].fields["message_id"] == "<m7@x>"
        assert trail.search(kind="received")[1] == 0
        start = datetime(2026, 3, 1, 8, 10, tzinfo=UTC)
        records, total = trail.search(since=start, until=start + timedelta(minutes=5))
        assert total == 5
        assert [r.seq for r in records] == [14, 13, 12, 11, 10]
        page1, total = trail.search(limit=7)
        page2, _ = trail.search(limit=7, offset=7)
        assert total == 30
        assert [r.seq for r in page1 + page2] == list(range(30, 16, -1))


def test_prune_keeps_the_rest_verifiable(data_dir: Path, keyring: Keyring) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    cfg = AuditConfig(checkpoint_every=4, retention_days=0)
    with AuditTrail.open(data_dir, keyring, cfg, clock=clock) as trail:
        for _ in range(10):
            clock.advance(days=1)
            fill(trail, 1)
        removed = trail.prune(datetime(2026, 1, 6, 12, tzinfo=UTC))
        assert removed == 5
        status = trail.status()
        assert status.pruned_through == 5
        assert status.ok
        records, total = trail.search(limit=100)
        assert total == 6  # records 6..10 and the audit_pruned record
        assert records[0].kind == "audit_pruned"
        assert records[0].fields == {"through": 5, "removed": 5}
        assert trail.verify().ok
        fill(trail, 3)
        assert trail.prune(datetime(2026, 1, 2, tzinfo=UTC)) == 0
    with AuditTrail.open_readonly(data_dir, keyring, cfg) as trail:
        result = trail.verify()
        assert result.ok, result.reason
        assert result.records_checked == 9


def test_pruned_prefix_without_signed_checkpoint_is_caught(
    data_dir: Path, keyring: Keyring
) -> None:
    with AuditTrail.open(data_dir, keyring, AuditConfig(checkpoint_every=100)) as trail:
        fill(trail, 8)
    conn = sqlite3.connect(data_dir / "audit.sqlite", isolation_level=None)
    conn.execute("UPDATE prune_mark SET through = 3")
    conn.execute("DELETE FROM records WHERE seq <= 3")  # allowed by the guard now
    conn.close()
    with AuditTrail.open_readonly(data_dir, keyring, AuditConfig()) as trail:
        result = trail.verify()
        assert not result.ok
        assert result.first_bad_record == 1


def test_retention_prunes_automatically_at_open(data_dir: Path, keyring: Keyring) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    cfg = AuditConfig(retention_days=30, checkpoint_every=1000)
    with AuditTrail.open(data_dir, keyring, cfg, clock=clock) as trail:
        fill(trail, 4)
        clock.advance(days=20)
        fill(trail, 3)
    clock.advance(days=15)  # the first four are now 35 days old
    with AuditTrail.open(data_dir, keyring, cfg, clock=clock) as trail:
        assert trail.status().pruned_through == 4
        assert trail.verify().ok


def test_status_notices_damage_incrementally(data_dir: Path, keyring: Keyring) -> None:
    trail = AuditTrail.open(data_dir, keyring, AuditConfig())
    fill(trail, 5)
    assert trail.status().ok
    conn = sqlite3.connect(data_dir / "audit.sqlite", isolation_level=None)
    conn.execute("DROP TRIGGER records_no_update")
    fill(trail, 2)
    conn.execute("UPDATE records SET actor = 'mallory' WHERE seq = 6")
    conn.close()
    status = trail.status()
    assert not status.ok
    assert "record 6" in status.reason
    trail.close()


def test_daily_checkpoint_email(data_dir: Path, keyring: Keyring, tmp_path: Path) -> None:
    sent: list[EmailMessage] = []
    clock = FakeClock(datetime(2026, 5, 4, 9, 0, tzinfo=UTC))
    cfg = AuditConfig(checkpoint_every=3, export_email="dpo@cabinet-martin.fr")
    with AuditTrail.open(
        data_dir, keyring, cfg, email_sender=sent.append, email_from="portique@cabinet", clock=clock
    ) as trail:
        fill(trail, 3)  # first checkpoint: first e-mail
        assert len(sent) == 1
        fill(trail, 6)  # two more checkpoints the same day: no e-mail
        assert len(sent) == 1
        clock.advance(days=1, minutes=1)
        fill(trail, 3)
        assert len(sent) == 2
    msg = sent[1]
    assert msg["To"] == "dpo@cabinet-martin.fr"
    (attachment,) = list(msg.iter_attachments())
    exported = tmp_path / "from-mail.jsonl"
    exported.write_bytes(attachment.get_content())
    assert len(exported.read_text().splitlines()) == 3  # checkpoints at 6, 9, 12
    with AuditTrail.open_readonly(data_dir, keyring, cfg) as trail:
        result = trail.verify(against=exported)
        assert result.ok, result.reason
        assert result.exported_checkpoints_checked == 3


def test_event_actor_is_the_acting_user(data_dir: Path, keyring: Keyring) -> None:
    with AuditTrail.open(data_dir, keyring, AuditConfig()) as trail:
        trail.emit(Event("released", {"user": "alice", "mode": "without-held-parts"}))
        trail.emit(Event("delivery", {"queue_id": "q1", "status": "delivered"}))
        released, delivery = sorted(trail.search()[0], key=lambda r: r.seq)
        assert released.actor == "alice"
        assert delivery.actor == "system"
        assert trail.search(action="without-held-parts")[1] == 1


def test_readonly_trail_refuses_writes(data_dir: Path, keyring: Keyring) -> None:
    with AuditTrail.open(data_dir, keyring, AuditConfig()) as trail:
        fill(trail, 2)
    with AuditTrail.open_readonly(data_dir, keyring, AuditConfig()) as trail:
        with pytest.raises(AuditError):
            trail.append("received", {})
        assert trail.search()[1] == 2
    with pytest.raises(AuditError, match="no audit trail"):
        AuditTrail.open_readonly(data_dir / "nowhere", keyring, AuditConfig())


def test_prune_refuses_to_sign_a_damaged_prefix(data_dir: Path, keyring: Keyring) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    cfg = AuditConfig(checkpoint_every=100, retention_days=0)
    trail = AuditTrail.open(data_dir, keyring, cfg, clock=clock)
    for _ in range(6):
        clock.advance(days=1)
        fill(trail, 1)
    conn = sqlite3.connect(data_dir / "audit.sqlite", isolation_level=None)
    conn.execute("DROP TRIGGER records_no_update")
    conn.execute("UPDATE records SET actor = 'mallory' WHERE seq = 2")
    conn.close()
    with pytest.raises(AuditError, match="prune refused.*record 2"):
        trail.prune(datetime(2026, 1, 5, tzinfo=UTC))
    assert trail.search()[1] == 6  # nothing removed
    assert not trail.status().ok
    trail.close()


def test_quiet_trail_is_checkpointed_hourly(data_dir: Path, keyring: Keyring) -> None:
    clock = FakeClock(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    cfg = AuditConfig(checkpoint_every=1000)
    with AuditTrail.open(data_dir, keyring, cfg, clock=clock) as trail:
        fill(trail, 3)
        clock.advance(minutes=30)
        fill(trail, 1)
        assert trail.checkpoints() == []
        assert not trail.checkpoint_if_due()
        clock.advance(minutes=31)
        assert trail.checkpoint_if_due()  # a timer's call covers the burst at once
        assert [cp.seq for cp in trail.checkpoints()] == [4]
        assert not trail.checkpoint_if_due()  # nothing new
        clock.advance(hours=2)
        fill(trail, 1)  # the first append after a quiet hour signs itself
        assert [cp.seq for cp in trail.checkpoints()] == [4, 5]
