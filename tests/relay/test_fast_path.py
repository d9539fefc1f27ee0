"""Fast-path delivery (issue 7): a copy whose destination has a free slot is sent
straight from memory; only what tempfails gets a durable queue entry; the spool entry
stays until every copy is delivered, queued or bounced."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.queue import QueueStore
from tests.relay._helpers import EventLog, Sink, SinkHandler, message, send_sync, wait_until


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_idle_destination_gets_the_copy_without_a_queue_entry(
    portique_factory, sink, monkeypatch
):
    stored: list[int] = []
    real_add = QueueStore.add

    def counting_add(self, copies, now):
        stored.append(len(copies))
        return real_add(self, copies, now)

    monkeypatch.setattr(QueueStore, "add", counting_add)
    svc = await portique_factory(sink.port)
    log = EventLog()
    svc.events.subscribe(log)
    await asyncio.to_thread(send_sync, svc.smtp_port, message(body="Bonjour rapide.\r\n"))
    (got,) = await sink.wait_for(1)
    assert b"Bonjour rapide." in got.data
    await wait_until(lambda: svc.processing_idle() and svc.queue.idle)
    assert stored == []  # no durable queue entry was ever written
    assert svc.queue.list() == []
    assert [p for p in _files(svc.cfg.data_dir / "queue") if p.suffix in (".msg", ".tmp")] == []
    assert [e["status"] for e in log.kinds("delivery")] == ["delivered"]
    assert log.kinds("queued") == []


async def test_tempfail_on_the_fast_path_becomes_a_durable_entry_with_backoff(portique_factory):
    sink = await Sink(SinkHandler(data_script=["451 4.3.0 try later"])).start()
    try:
        svc = await portique_factory(sink.port, queue={"retry_initial": 30.0, "retry_max": 60.0})
        log = EventLog()
        svc.events.subscribe(log)
        before = time.time()
        await asyncio.to_thread(send_sync, svc.smtp_port, message())
        await wait_until(lambda: svc.processing_idle() and len(svc.queue.list()) == 1)
        (entry,) = svc.queue.list()
        # The fast attempt counts: the first retry waits the usual backoff.
        assert entry.attempts == 1
        assert entry.next_attempt >= before + 29
        assert entry.recipients == ("lab@lab.test",)
        assert "451" in entry.last_error
        assert sink.handler.attempts == 1 and sink.messages == []
        # The spool entry is gone only because the durable queue entry exists.
        assert svc.spool.pending_ids() == []
        assert [e["status"] for e in log.kinds("delivery")] == ["tempfail"]
        assert len(log.kinds("queued")) == 1 and len(log.kinds("deferred")) == 1
        # ... and a retry delivers it.
        assert svc.queue.retry(entry.id)
        await sink.wait_for(1)
        await wait_until(lambda: svc.queue.list() == [])
    finally:
        await sink.stop()


async def test_spool_entry_stays_until_the_fast_path_delivery_is_done(
    portique_factory, monkeypatch
):
    release = asyncio.Event()
    handler = SinkHandler()
    real_data = handler.handle_DATA

    async def slow_data(server, session, envelope):
        await release.wait()
        return await real_data(server, session, envelope)

    monkeypatch.setattr(handler, "handle_DATA", slow_data)
    sink = await Sink(handler).start()
    try:
        svc = await portique_factory(sink.port)
        await asyncio.to_thread(send_sync, svc.smtp_port, message())
        await wait_until(lambda: svc._direct_tasks)
        # Sent from memory, not yet confirmed: the spool entry is the durable record
        # (a crash now re-processes it at restart: a duplicate, never a loss).
        assert len(svc.spool.pending_ids()) == 1
        assert svc.queue.list() == []
        release.set()
        await sink.wait_for(1)
        await wait_until(lambda: svc.processing_idle() and not svc._direct_tasks)
        assert svc.spool.pending_ids() == []
    finally:
        release.set()
        await sink.stop()


async def test_the_250_waits_until_the_received_audit_record_is_durable(
    portique_factory, sink, keyring, tmp_path
):
    from gateway.audit import AuditTrail
    from gateway.config import AuditConfig

    trail = AuditTrail.open(tmp_path / "audit", keyring, AuditConfig())
    try:
        svc = await portique_factory(sink.port)
        svc.events.subscribe(trail, required=True)
        trail._lock.acquire()  # the group-commit writer cannot commit
        try:
            sending = asyncio.ensure_future(asyncio.to_thread(send_sync, svc.smtp_port, message()))
            await asyncio.sleep(0.5)
            assert not sending.done()  # no 250 while "received" is not on disk
            assert sink.messages == []
        finally:
            trail._lock.release()
        assert await sending == {}
        await sink.wait_for(1)
        await wait_until(lambda: svc.processing_idle() and svc.queue.idle)
        kinds = [r.kind for r in trail.iter_records()]
        assert kinds[:2] == ["received", "decided"] and "delivery" in kinds
        assert trail.verify().ok
    finally:
        trail.close()


class _HeldSink(SinkHandler):
    """Answers DATA only once `release` is set: a peer slower than the arrivals."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def handle_DATA(self, server, session, envelope):
        await self.release.wait()
        return await super().handle_DATA(server, session, envelope)


async def test_copies_behind_a_slow_peer_go_to_the_durable_queue_not_to_memory(
    portique_factory,
):
    """The fast path keeps at most `max_deliveries` messages in memory; copies arriving
    while those wait for a slow peer are sealed into the durable queue instead of piling
    up in RAM (200 sessions of 5 MB files once took a worker past 1 GB), and all arrive."""
    handler = _HeldSink()
    sink = await Sink(handler).start()
    try:
        svc = await portique_factory(sink.port, queue={"max_deliveries": 2})
        for n in range(6):
            await asyncio.to_thread(
                send_sync, svc.smtp_port, message(message_id=f"<slow{n}@practice.test>")
            )
        # (The spool keeps the fast-path messages' entries until they are delivered.)
        await wait_until(lambda: len(svc.queue.list()) >= 4)
        await asyncio.sleep(0.5)
        assert len(svc.queue.list()) == 4  # 2 in memory on the fast path, 4 on disk
        handler.release.set()
        await sink.wait_for(6, within=60)
        assert sorted(m.data.split(b"Message-ID: ")[1][:7] for m in sink.messages) == [
            f"<slow{n}@".encode() for n in range(6)
        ]
    finally:
        handler.release.set()
        await sink.stop()


async def test_a_small_message_is_processed_from_memory_a_large_one_from_the_spool(
    portique_factory, sink, monkeypatch
):
    """Up to spool.KEEP_PLAINTEXT bytes, the bytes spooled with the 250 are processed
    without reading the spool file back; a larger message is read back. Both arrive
    whole, with the Received header the spool holds."""
    from gateway.spool import KEEP_PLAINTEXT, Spool

    reads: list[str] = []
    real_read = Spool.read

    def counting_read(self, spool_id):
        reads.append(spool_id)
        return real_read(self, spool_id)

    monkeypatch.setattr(Spool, "read", counting_read)
    svc = await portique_factory(sink.port)
    small = "Petite commande.\r\n"
    large = "Ligne de commande assez longue pour remplir le message.\r\n" * (KEEP_PLAINTEXT // 50)
    await asyncio.to_thread(send_sync, svc.smtp_port, message(body=small))
    (first,) = await sink.wait_for(1)
    assert reads == []
    await asyncio.to_thread(send_sync, svc.smtp_port, message(body=large))
    _, second = await sink.wait_for(2)
    assert len(reads) == 1
    for got, body in ((first, small), (second, large)):
        assert got.data.startswith(b"Received: from ")
        assert got.data.replace(b"\r\n", b"\n").endswith(body.replace("\r\n", "\n").encode())
    await wait_until(lambda: svc.processing_idle() and svc.queue.idle)
