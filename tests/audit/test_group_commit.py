"""Audit group commit (issue 7): concurrent appends share a transaction, the chain and
checkpoint placement stay those of single appends, emits on the event loop do not
wait for the fsync, and a record that cannot be written fails closed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from crypto.keys import Keyring
from gateway.audit import AuditTrail
from gateway.config import AuditConfig
from gateway.errors import AuditError
from gateway.events import Event, EventBus

from ._helpers import count_chunks


def _count(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "audit.sqlite")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])
    finally:
        conn.close()


def test_concurrent_appends_share_commits_and_keep_chain_and_checkpoints(
    data_dir: Path, keyring: Keyring
) -> None:
    trail = AuditTrail.open(data_dir, keyring, AuditConfig(checkpoint_every=7))
    chunks = count_chunks(trail)
    seqs: list[int] = []
    seqs_lock = threading.Lock()

    def appender(n: int) -> None:
        for i in range(10):
            seq = trail.append("decided", {"thread": n, "i": i})
            with seqs_lock:
                seqs.append(seq)

    # Hold the writer back until all eight threads wait: their records must then be
    # committed in a few transactions, not eighty.
    with trail._lock:
        threads = [threading.Thread(target=appender, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(trail._pending) < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(30)
    assert sorted(seqs) == list(range(1, 81))
    assert max(chunks) > 1 and len(chunks) < 80
    result = trail.verify()
    assert result.ok, result.reason
    # Checkpoints exactly where one-at-a-time appends put them.
    assert [cp.seq for cp in trail.checkpoints()] == list(range(7, 81, 7))
    trail.close()


async def test_emit_on_the_loop_does_not_wait_and_durable_commits(
    data_dir: Path, keyring: Keyring
) -> None:
    trail = AuditTrail.open(data_dir, keyring, AuditConfig())
    bus = EventBus()
    bus.subscribe(trail, required=True)
    with trail._lock:  # the writer cannot commit: emit must still return at once
        started = time.monotonic()
        for i in range(5):
            bus.emit("received", size=i)
        assert time.monotonic() - started < 1.0
        assert _count(data_dir) == 0
    await bus.durable()
    assert _count(data_dir) == 5
    assert trail.verify().ok
    trail.close()


async def test_a_deferred_record_that_cannot_be_written_fails_closed(
    data_dir: Path, keyring: Keyring
) -> None:
    trail = AuditTrail.open(data_dir, keyring, AuditConfig())
    trail.append("received", {"size": 1})
    trail._conn.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(data_dir / "audit.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        trail.emit(Event("decided", {"size": 2}))
        with pytest.raises(AuditError):
            await trail.durable()
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The lost record makes every later deferred emit fail (the caller must not go on),
    # and readiness says so; the chain itself is intact.
    with pytest.raises(AuditError):
        trail.emit(Event("decided", {"size": 3}))
    assert not trail.is_writable()
    assert not trail.status().writable
    assert trail.verify().ok
    trail.close()


async def test_records_of_one_loop_iteration_wake_the_writer_once(
    data_dir: Path, keyring: Keyring
) -> None:
    """An idle writer is woken at the end of the loop's iteration, not per record: the
    twenty records emitted in one go are one transaction (they were up to twenty)."""
    trail = AuditTrail.open(data_dir, keyring, AuditConfig(checkpoint_every=0))
    trail.append("received", {"size": 0})  # the writer now exists and goes idle
    deadline = time.monotonic() + 10
    while not trail._writer_idle and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)  # the writer thread sets it: no loop event to await
    chunks = count_chunks(trail)
    for i in range(20):
        trail.emit(Event("decided", {"i": i}))
        # Blocking on purpose (the loop's iteration must not end): an idle writer woken
        # at once would commit these records one by one.
        time.sleep(0.001)  # noqa: ASYNC251
    await trail.durable()
    assert chunks == [20]
    # A blocking read on the loop's own thread before that wake-up has run: it wakes
    # the writer itself rather than waiting for the loop it is blocking.
    trail.emit(Event("decided", {"i": 20}))
    assert trail.status().records == 22
    trail.close()
