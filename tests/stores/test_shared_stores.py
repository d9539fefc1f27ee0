"""Stores shared by worker processes (gateway/workers.py): real processes, one data_dir.

- Two processes claiming due queue entries at once never get the same entry, and
  together get every one; a retry or a stop gives a claim back; a successor releases
  a dead worker's claims.
- Two processes appending to the audit trail at once make one chain that verifies.
- A lockdown set through one process's queue is seen by another's within its refresh.
- A spool directory whose worker no longer exists is adopted by worker 0.
- A lockdown also keeps a copy that was waiting for a delivery slot when it began.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path
from typing import Any

from connectors.base import DeliveryItem, DeliveryResult, FakeConnector
from crypto.aead import Sealer
from crypto.keys import Keyring, load_keys
from gateway.audit import AuditTrail
from gateway.config import AuditConfig, QueueConfig, SpoolConfig
from gateway.events import EventBus
from gateway.queue import DeliveryQueue, NewCopy, QueueStore
from gateway.spool import Envelope, Spool
from gateway.workers import WorkerSlot

ENTRIES = 120
APPENDS_PER_PROCESS = 200


def _copy(n: int) -> NewCopy:
    return NewCopy(
        spool_id=f"s{n}",
        route="labs",
        connector="relay",
        mail_from="dr@cabinet.test",
        recipients=("lab@labo.test",),
        data=b"Subject: x\r\n\r\nbody\r\n",
    )


def _claim_all(data_dir: str, owner: str, out: multiprocessing.Queue[list[str]]) -> None:
    """In a child process: claim in small batches until nothing is left."""
    store = QueueStore(Path(data_dir), Sealer(load_keys(Path(data_dir))))
    claimed: list[str] = []
    try:
        while batch := store.claim_due(time.time() + 60, owner, set(), 3):
            claimed += [e.id for e in batch]
    finally:
        store.close()
    out.put(claimed)


def _append_records(data_dir: str, who: str, count: int, go: Any) -> None:
    """In a child process: append `count` audit records, each committed on return,
    once both processes have the trail open (`go`, a multiprocessing barrier)."""
    trail = AuditTrail.open(Path(data_dir), load_keys(Path(data_dir)), AuditConfig())
    go.wait(60)
    try:
        for n in range(count):
            trail.append("test_record", {"writer": who, "n": n})
            # A pause as between a worker's group commits: a process that re-takes
            # the write lock at once starves the other's busy-wait (SQLite backs off).
            time.sleep(0.002)
    finally:
        trail.close()


def _spawn() -> multiprocessing.context.SpawnContext:
    return multiprocessing.get_context("spawn")


def test_two_processes_never_claim_the_same_entry(data_dir: Path, keyring: Keyring) -> None:
    store = QueueStore(data_dir, Sealer(keyring))
    try:
        added = {e.id for e in store.add([_copy(n) for n in range(ENTRIES)], time.time())}
    finally:
        store.close()
    ctx = _spawn()
    out: multiprocessing.Queue[list[str]] = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(data_dir), f"w{i}:1", out)) for i in range(2)]
    for p in procs:
        p.start()
    first, second = out.get(timeout=60), out.get(timeout=60)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert not set(first) & set(second)
    assert set(first) | set(second) == added
    assert len(first) + len(second) == ENTRIES


def test_claims_are_given_back_by_retry_stop_and_successor(
    data_dir: Path, keyring: Keyring
) -> None:
    store = QueueStore(data_dir, Sealer(keyring))
    try:
        a, b, c = store.add([_copy(n) for n in range(3)], time.time())
        now = time.time() + 1
        assert {e.id for e in store.claim_due(now, "w1:100", set(), 10)} == {a.id, b.id, c.id}
        assert store.claim_due(now, "w0:200", set(), 10) == []
        # A deferred attempt gives its entry back (due again later, to anyone).
        store.reschedule(a.id, a.recipients, now - 1, "tempfail")
        assert [e.id for e in store.claim_due(now, "w0:200", set(), 10)] == [a.id]
        # Worker 1's successor releases what its dead predecessor held, not worker 0's.
        successor = WorkerSlot(1, 2)
        stale = [o for o in store.claim_owners() if successor.owns_stale_claim(o)]
        assert stale == ["w1:100"]
        assert store.release_claims(stale) == 2
        assert {e.id for e in store.claim_due(now, "w1:300", set(), 10)} == {b.id, c.id}
        assert store.claim_owners() == {"w0:200", "w1:300"}
    finally:
        store.close()


def test_stale_claims_belong_to_the_slot_or_to_worker_0() -> None:
    alone, first, second = WorkerSlot(), WorkerSlot(0, 2), WorkerSlot(1, 2)
    for owner in ("w0:1", "w1:1", "w5:1", "p123"):
        assert alone.owns_stale_claim(owner)  # one process: every claim is stale
    assert first.owns_stale_claim("w0:1") and first.owns_stale_claim("w2:1")
    assert not first.owns_stale_claim("w1:1")
    assert second.owns_stale_claim("w1:1")
    assert not second.owns_stale_claim("w0:1") and not second.owns_stale_claim("w2:1")


async def test_a_queue_stops_itself_and_gives_its_claims_back(
    data_dir: Path, keyring: Keyring
) -> None:
    store = QueueStore(data_dir, Sealer(keyring))
    queue = DeliveryQueue(
        store,
        QueueConfig(),
        {},
        EventBus(),
        hostname="portique.test",
        bounce_connector=lambda _s: "",
        claim_owner="w0:1",
    )
    try:
        (entry,) = store.add([_copy(0)], time.time())
        assert store.claim_due(time.time() + 1, "w0:1", set(), 1)
        await queue.start()
        await queue.stop()
        assert store.claim_owners() == set()
        assert store.get(entry.id) is not None
    finally:
        store.close()


async def test_a_lockdown_set_in_one_process_reaches_the_other(
    data_dir: Path, keyring: Keyring
) -> None:
    stores = [QueueStore(data_dir, Sealer(keyring)) for _ in range(2)]
    queues = [
        DeliveryQueue(
            store,
            QueueConfig(),
            {},
            EventBus(),
            hostname="portique.test",
            bounce_connector=lambda _s: "",
            lockdown_refresh=0.05,
        )
        for store in stores
    ]
    try:
        assert not queues[1].lockdown
        queues[0].set_lockdown(True, user="test")
        await asyncio.sleep(0.1)
        assert queues[1].lockdown
        queues[0].set_lockdown(False, user="test")
        await asyncio.sleep(0.1)
        assert not queues[1].lockdown
    finally:
        for store in stores:
            store.close()


def test_two_processes_append_one_chain_that_verifies(data_dir: Path, keyring: Keyring) -> None:
    # Created first, as worker 0 does before the others start (concurrent first opens
    # are tested in tests/stores/test_migrate.py).
    AuditTrail.open(data_dir, keyring, AuditConfig()).close()
    ctx = _spawn()
    go = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_append_records, args=(str(data_dir), who, APPENDS_PER_PROCESS, go))
        for who in ("w0", "w1")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    trail = AuditTrail.open_readonly(data_dir, keyring, AuditConfig())
    try:
        result = trail.verify()
        records = list(trail.iter_records())
    finally:
        trail.close()
    assert result.ok, result.reason
    assert [r.seq for r in records] == list(range(1, 2 * APPENDS_PER_PROCESS + 1))
    writers = [r.fields["writer"] for r in records]
    assert writers.count("w0") == writers.count("w1") == APPENDS_PER_PROCESS
    # Interleaved, not one process after the other: the appends really overlapped.
    switches = sum(1 for x, y in zip(writers, writers[1:], strict=False) if x != y)
    assert switches > 1


async def test_worker_0_adopts_the_spool_of_a_worker_that_no_longer_exists(
    data_dir: Path, keyring: Keyring
) -> None:
    sealer = Sealer(keyring)
    gone = Spool(data_dir, sealer, SpoolConfig(), subdir="w3")
    await gone.start()
    writer = gone.open_writer(Envelope("dr@cabinet.test", ("lab@labo.test",)))
    writer.write(b"Subject: x\r\n\r\nbody\r\n")
    await writer.commit()
    await gone.stop()
    (gone.incoming / "never-answered.tmp").write_bytes(b"partial")

    worker_0 = WorkerSlot(0, 2)
    orphans = worker_0.orphan_spools(data_dir)
    assert orphans == [data_dir / "spool" / "w3"]
    assert WorkerSlot(1, 2).orphan_spools(data_dir) == []
    assert WorkerSlot(0, 4).orphan_spools(data_dir) == []  # worker 3 exists again
    spool = Spool(data_dir, sealer, SpoolConfig(), subdir=worker_0.spool_subdir)
    assert spool.adopt(orphans[0]) == [writer.spool_id]
    assert spool.pending_ids() == [writer.spool_id]
    envelope, body = spool.read(writer.spool_id)
    assert envelope.recipients == ("lab@labo.test",) and body.endswith(b"body\r\n")
    assert list(gone.active.iterdir()) == [] and list(gone.incoming.iterdir()) == []


class GatedConnector(FakeConnector):
    """The fake connector, holding each delivery until `gate` opens."""

    def __init__(self) -> None:
        super().__init__("gated")
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def deliver(self, item: DeliveryItem) -> DeliveryResult:
        self.started.set()
        await self.gate.wait()
        return await super().deliver(item)


async def test_a_copy_waiting_for_its_slot_is_kept_when_a_lockdown_begins(
    data_dir: Path, keyring: Keyring
) -> None:
    store = QueueStore(data_dir, Sealer(keyring))
    connector = GatedConnector()
    queue = DeliveryQueue(
        store,
        QueueConfig(per_destination_concurrency=1, poll_interval=0.05),
        {"gated": connector},
        EventBus(),
        hostname="portique.test",
        bounce_connector=lambda _s: "gated",
    )
    await queue.start()
    try:
        first, second = (
            NewCopy(
                spool_id=f"s{n}",
                route="labs",
                connector="gated",
                mail_from="dr@cabinet.test",
                recipients=(f"lab{n}@labo.test",),
                data=b"Subject: x\r\n\r\nbody\r\n",
            )
            for n in range(2)
        )
        sending = asyncio.create_task(queue.deliver_direct(first))
        await connector.started.wait()
        waiting = asyncio.create_task(queue.deliver_direct(second))  # no free slot
        await asyncio.sleep(0.05)
        queue.set_lockdown(True, user="test")
        connector.gate.set()
        await asyncio.gather(sending, waiting)
        assert [i.recipients for i in connector.delivered] == [("lab0@labo.test",)]
        assert [e.recipients for e in store.all()] == [("lab1@labo.test",)]  # kept, durably

        queue.set_lockdown(False, user="test")
        async with asyncio.timeout(10):
            while len(connector.delivered) < 2:  # noqa: ASYNC110 - the queue's own scheduler
                await asyncio.sleep(0.02)
        assert connector.delivered[1].recipients == ("lab1@labo.test",)
    finally:
        await queue.stop()
        store.close()


def _affinity_after_pinning(index: int, count: int, pin: bool) -> tuple[int | None, list[int]]:
    """In a child process (pinning the test process would last): pin_to_core's answer
    and the process's usable cores afterwards."""
    import os

    from gateway.workers import pin_to_core

    core = pin_to_core(WorkerSlot(index, count)) if pin else None
    return core, sorted(os.sched_getaffinity(0))


def test_pin_to_core_keeps_a_worker_to_its_own_core_only_when_there_is_one() -> None:
    import os
    from concurrent.futures import ProcessPoolExecutor

    cores = sorted(os.sched_getaffinity(0))
    context = multiprocessing.get_context("spawn")
    cases = [(0, 1), (1, len(cores)), (0, len(cores) + 1)]
    # A new process per case: a pinned process stays pinned.
    with ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=1) as pool:
        results = [pool.submit(_affinity_after_pinning, i, n, True).result() for i, n in cases]
        unpinned = pool.submit(_affinity_after_pinning, 0, 1, False).result()
    assert unpinned == (None, cores)
    assert results[0] == (None, cores)  # a single process is never pinned
    if len(cores) >= 2:
        assert results[1] == (cores[1], [cores[1]])  # worker 1 of N: the second core
    assert results[2] == (None, cores)  # more workers than cores: left to the kernel
