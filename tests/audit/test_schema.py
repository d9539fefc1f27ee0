"""The audit trail's schema 2 (issue 7): a trail written under schema 1 is migrated at
open and still verifies, searches and prunes; the rows of one transaction go in with
grouped INSERTs; a constraint failure leaves none of its transaction's records."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import gateway.audit.trail as trail_module
from crypto.keys import Keyring
from gateway.audit import AuditTrail
from gateway.audit.trail import DB_NAME, _PendingRecord
from gateway.config import AuditConfig
from gateway.errors import AuditError
from gateway.events import mask_address

from ._helpers import count_chunks

PATIENT = "jeanne.durand@patient.mssante.fr"
LAB = "commandes@labo-dupont.fr"
SENDER = "cabinet@cabinet-martin.fr"


def _write_messages(trail: AuditTrail, first: int, n: int) -> None:
    for i in range(first, first + n):
        trail.append(
            "received",
            {
                "spool_id": f"s{i}",
                "mail_from": SENDER,
                # A recipient named twice: one row per address and role.
                "recipients": [LAB, PATIENT, LAB.upper()],
                "message_id": f"<m{i}@cabinet-martin.fr>",
            },
        )
        trail.append("delivery", {"queue_id": f"q{i}", "recipients": [LAB]})


def _take_tickets(trail: AuditTrail, batch: list[_PendingRecord]) -> None:
    """Number `batch` as `_submit` would, for a test that hands it to the writer's
    `_commit_batch` itself (one transaction of a chosen size)."""
    with trail._guard:
        for pending in batch:
            trail._submitted += 1
            pending.ticket = trail._submitted


def _search_view(trail: AuditTrail) -> dict[str, list[int]]:
    def seqs(**query: str) -> list[int]:
        records, total = trail.search(limit=1000, **query)  # type: ignore[arg-type]
        assert total == len(records)
        return [r.seq for r in records]

    return {
        "to lab": seqs(recipient=LAB),
        "to patient": seqs(recipient=PATIENT),
        "from sender": seqs(sender=SENDER),
        "message": seqs(message_id="<m3@cabinet-martin.fr>"),
        "deliveries": seqs(kind="delivery"),
    }


def test_a_schema_1_trail_is_migrated_and_still_verifies_searches_and_prunes(
    data_dir: Path, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [datetime(2026, 11, 1, tzinfo=UTC)]
    config = AuditConfig(checkpoint_every=4)
    with monkeypatch.context() as old_release:
        old_release.setattr(trail_module, "_MIGRATIONS", trail_module._MIGRATIONS[:1])
        with AuditTrail.open(data_dir, keyring, config, clock=lambda: clock[0]) as trail:
            _write_messages(trail, 0, 6)
            before = _search_view(trail)
    raw = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
        # Schema 1 took an address twice for one record (releases before it did).
        raw.execute("INSERT INTO record_addresses VALUES (1, 'to', ?)", (LAB,))
        assert raw.execute("SELECT COUNT(*) FROM record_addresses WHERE seq = 1").fetchone() == (4,)
    finally:
        raw.close()

    clock[0] += timedelta(days=2)
    with AuditTrail.open(data_dir, keyring, config, clock=lambda: clock[0]) as trail:
        assert trail.verify().ok
        assert _search_view(trail) == before
        rows = trail._conn.execute("SELECT role, address FROM record_addresses WHERE seq = 1")
        masked = mask_address(PATIENT, keyring.digest_key)
        assert sorted(rows) == [("from", SENDER), ("to", masked), ("to", LAB)]
        assert before["to lab"] and before["to patient"] and before["message"]
        _write_messages(trail, 6, 2)  # new records beside the migrated ones
        assert trail.verify().ok
        assert trail.prune(clock[0] - timedelta(days=1)) == 12
        after = _search_view(trail)
        assert after["to lab"] == [16, 15, 14, 13] and after["message"] == []
        assert trail.verify().ok
    raw = sqlite3.connect(data_dir / DB_NAME)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
        # One row per address and role; pruned records took their addresses with them.
        assert raw.execute("SELECT MIN(seq) FROM record_addresses").fetchone() == (13,)
        assert raw.execute("SELECT COUNT(*) FROM record_addresses WHERE seq = 15").fetchone() == (
            3,
        )
        indexes = {
            row[0]: row[1]
            for row in raw.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
        }
        assert "record_addresses_seq" not in indexes
        assert "WHERE message_id IS NOT NULL" in indexes["records_message_id"]
    finally:
        raw.close()


def test_a_large_transaction_goes_in_whole_and_verifies(data_dir: Path, keyring: Keyring) -> None:
    """77 records (64 + 8 + 4 + 1 per INSERT) and their 154 address rows, one commit."""
    with AuditTrail.open(data_dir, keyring, AuditConfig(checkpoint_every=1000)) as trail:
        chunks = count_chunks(trail)
        batch = [
            _PendingRecord(
                "received",
                "system",
                {"spool_id": f"s{i}", "mail_from": SENDER, "recipients": [f"r{i}@labo.fr"]},
                deferred=False,
            )
            for i in range(77)
        ]
        _take_tickets(trail, batch)
        trail._commit_batch(batch)
        assert chunks == [77]
        assert [p.seq for p in batch] == list(range(1, 78))
        assert all(p.error is None for p in batch)
        records, total = trail.search(recipient="r70@labo.fr")
        assert total == 1 and records[0].seq == 71
        assert trail.search(sender=SENDER)[1] == 77
        assert trail.verify().ok


def test_a_constraint_failure_leaves_none_of_its_transaction(
    data_dir: Path, keyring: Keyring
) -> None:
    """An address row in the way of the fourth record of a ten-record transaction (left
    there by someone with file access): the whole transaction is refused (fail closed),
    none of its records or addresses is stored, and later appends still work."""
    with AuditTrail.open(data_dir, keyring, AuditConfig()) as trail:
        assert trail.append("received", {"spool_id": "s0"}) == 1
        raw = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
        try:
            raw.execute("INSERT INTO record_addresses VALUES (5, 'to', 'x@labo.fr')")
        finally:
            raw.close()
        batch = [
            _PendingRecord("received", "system", {"recipients": ["x@labo.fr"]}, deferred=False)
            for _ in range(10)
        ]
        _take_tickets(trail, batch)
        trail._commit_batch(batch)
        assert all(isinstance(p.error, AuditError) for p in batch)
        assert not trail._conn.in_transaction
        assert trail.append("received", {"spool_id": "s11"}) == 2
        conn = sqlite3.connect(data_dir / DB_NAME)
        try:
            assert conn.execute("SELECT seq FROM records ORDER BY seq").fetchall() == [(1,), (2,)]
            assert conn.execute("SELECT seq FROM record_addresses").fetchall() == [(5,)]
        finally:
            conn.close()
