"""Delivery queue: durable per-copy entries, retries with backoff, DSNs, lockdown.

Trust boundary: entries come from the service (already decided copies); message bytes
are untrusted and stored only sealed (`<data_dir>/queue/<id>.msg`, AAD `queue:<id>`).
The index is SQLite (`<data_dir>/queue.db`, schema versioned by gateway/_sqlite.py).

Invariants:
- `enqueue()` returns only once the data files are fsync'ed and the rows committed
  (synchronous=FULL); the service removes the spool file only after that.
- A delivery attempt is recorded before the entry changes: recipients that got
  through are removed from the entry, the rest are retried or bounced. A crash
  between a delivery and the update may deliver twice, never lose.
- Temporary failures retry with exponential backoff (QueueConfig); past
  `give_up_after`, and on permanent failures, the sender gets a DSN (gateway/dsn.py).
  Never a bounce of a bounce: entries from `<>` produce no DSN.
- Per-destination concurrency: at most `per_destination_concurrency` deliveries to
  one `Connector.destination()` at a time, `max_deliveries` in all.
- Fast path (issue 7): a decided copy is delivered straight from memory when fewer than
  `max_deliveries` are in flight (`deliver_direct`; it waits in memory for its
  destination's slot), with no queue row or sealed file;
  only recipients that tempfail become a durable entry (and permfails a DSN). The
  caller keeps its spool entry until `deliver_direct` returns, so a crash in between
  re-processes the message: a duplicate, never a loss.
- Lockdown pauses all deliveries (persisted in the database, survives restart); mail
  is still accepted and spooled meanwhile. A copy already waiting for its destination's
  slot when the lockdown begins is not sent either: it is kept (queued) for later. Several worker processes (gateway/workers.py)
  re-read the setting at most LOCKDOWN_REFRESH seconds old, so a lockdown set in one
  stops new deliveries in every worker within that time.
- A stored entry is delivered by one process at a time: the scheduler claims due
  entries (`claimed_by`, one UPDATE that only takes unclaimed rows) before it starts
  them, and a retry or a stop gives the claim back. Claims of a process that died are
  released by its successor at start (`release_claims`): with one process, all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, cast

from connectors.base import Connector, DeliveryItem, DeliveryResult, RecipientResult, Status
from crypto.aead import Sealer
from gateway.config import QueueConfig
from gateway.deadlines import Deadlines
from gateway.dsn import FailedRecipient, build_dsn, status_from_detail
from gateway.errors import SpoolError
from gateway.events import EventBus
from gateway.logging import get_logger
from gateway.sealed_files import SealedFileStore
from gateway.spool import fsync_directory, new_spool_id, sync_filesystem
from gateway.threads import named_executor

log = get_logger("portique.queue")

MIGRATIONS = [
    """
    CREATE TABLE entries (
        id TEXT PRIMARY KEY,
        spool_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        route TEXT NOT NULL,
        connector TEXT NOT NULL,
        mail_from TEXT NOT NULL,
        recipients TEXT NOT NULL,
        message_id TEXT NOT NULL,
        safe_subject TEXT,
        size INTEGER NOT NULL,
        created REAL NOT NULL,
        next_attempt REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX entries_due ON entries (next_attempt);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)
    """,
    # Which process is delivering the entry ('' = nobody): worker processes share the
    # queue (issue 7), and two of them must never send the same entry.
    """
    ALTER TABLE entries ADD COLUMN claimed_by TEXT NOT NULL DEFAULT ''
    """,
]

KIND_MESSAGE = "message"  # a route copy of a received message
KIND_BOUNCE = "bounce"  # a DSN we generated (from <>)
KIND_NOTICE = "notice"  # a hold/reject notice we generated (from <>)

# Upper bound on one connector call, in seconds, beyond the connector's own timeouts:
# a stuck peer must not pin a delivery slot forever (RFC 5321 4.5.3.2.6: 10 min for DATA).
DELIVERY_TIMEOUT = 900.0
# Seconds a worker process trusts its reading of the lockdown setting when other
# processes share the queue: a SELECT per fast-path message was 1-2 % of samples, and
# half a second is prompt for an incident switch (the control reply comes first).
LOCKDOWN_REFRESH = 0.5


class MemoryBudget:
    """Bounds the message bytes held in memory at once by processing and delivery.

    Each message in processing or delivery holds its size for the duration; a message
    larger than the whole budget runs alone. Small messages barely touch it, so this
    only throttles when many large messages (scans, STL files) arrive together.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.used = 0
        self._waiting = 0  # holders waiting on the condition for room
        self._cond = asyncio.Condition()

    def hold(self, size: int) -> MemoryHold:
        """`async with budget.hold(size):` holds `size` bytes of the budget for the block."""
        return MemoryHold(self, size)


class MemoryHold:
    """One holder of a MemoryBudget's room, for an `async with` block (`MemoryBudget.hold`).

    A class rather than a contextlib.asynccontextmanager, which builds an async generator
    and its wrappers per use (twice per message: processing, then delivery).
    """

    __slots__ = ("_budget", "_size")

    def __init__(self, budget: MemoryBudget, size: int) -> None:
        self._budget = budget
        self._size = min(max(size, 1), budget.capacity)

    async def __aenter__(self) -> None:
        budget, size = self._budget, self._size
        if budget.used + size > budget.capacity:
            budget._waiting += 1
            try:
                async with budget._cond:
                    await budget._cond.wait_for(lambda: budget.used + size <= budget.capacity)
                    budget.used += size
            finally:
                budget._waiting -= 1
        else:
            # Room: taken at once, as the condition would give it (no await, so nothing
            # else runs on the loop in between). The common case: small mail.
            budget.used += size

    async def __aexit__(self, *exc_info: object) -> None:
        budget = self._budget
        budget.used -= self._size
        if budget._waiting:
            async with budget._cond:
                budget._cond.notify_all()


def memory_budget_for(max_message_size: int) -> MemoryBudget:
    # Two maximum-size messages in flight (each costs about twice its size while
    # processed or sent), and never less than 64 MiB so small mail flows freely:
    # keeps a 2-core, 4 GB practice server far from swapping (reliability promise 6).
    return MemoryBudget(max(2 * max_message_size, 64 * 1024 * 1024))


@dataclass(frozen=True)
class NewCopy:
    """One copy to queue: what to send, to whom, through which connector."""

    spool_id: str
    route: str
    connector: str
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes = field(repr=False)
    message_id: str = ""
    safe_subject: str | None = field(default=None, repr=False)
    kind: str = KIND_MESSAGE
    created: float | None = None  # arrival time; defaults to now


class QueueEntry(NamedTuple):
    """A queued copy as stored. A NamedTuple rather than a frozen dataclass: as immutable,
    and built (once per fast-path message) without an object.__setattr__ per field."""

    id: str
    spool_id: str
    kind: str
    route: str
    connector: str
    mail_from: str
    recipients: tuple[str, ...]
    message_id: str
    safe_subject: str | None
    size: int
    created: float
    next_attempt: float
    attempts: int
    last_error: str

    @classmethod
    def first_attempt(cls, queue_id: str, copy: NewCopy, now: float) -> QueueEntry:
        """The entry for a copy that has not been tried yet: due now."""
        return cls(
            id=queue_id,
            spool_id=copy.spool_id,
            kind=copy.kind,
            route=copy.route,
            connector=copy.connector,
            mail_from=copy.mail_from,
            recipients=tuple(copy.recipients),
            message_id=copy.message_id,
            safe_subject=copy.safe_subject,
            size=len(copy.data),
            created=copy.created if copy.created is not None else now,
            next_attempt=now,
            attempts=0,
            last_error="",
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "spool_id": self.spool_id,
            "kind": self.kind,
            "route": self.route,
            "connector": self.connector,
            "mail_from": self.mail_from,
            "recipients": list(self.recipients),
            "message_id": self.message_id,
            "size": self.size,
            "created": self.created,
            "next_attempt": self.next_attempt,
            "attempts": self.attempts,
            "last_error": self.last_error,
        }


_COLUMNS = (
    "id, spool_id, kind, route, connector, mail_from, recipients, message_id, "
    "safe_subject, size, created, next_attempt, attempts, last_error"
)


def _entry(row: tuple[object, ...]) -> QueueEntry:
    values = list(row)
    values[6] = tuple(json.loads(str(values[6])))
    return QueueEntry(*values)  # type: ignore[arg-type]


# Patient mailboxes on MSSanté: an address there identifies a patient (gateway/events.py).
PATIENT_DOMAIN = "patient.mssante.fr"


def identifies_patient(addresses: Sequence[str]) -> bool:
    """Whether any address is a patient's own mailbox, so sinks must mask it."""
    return any(a.lower().rpartition("@")[2].endswith(PATIENT_DOMAIN) for a in addresses)


def _fdatasync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


class QueueStore(SealedFileStore):
    """The durable part: SQLite index + sealed data files. Thread-safe, no asyncio."""

    def __init__(self, data_dir: Path, sealer: Sealer) -> None:
        super().__init__(data_dir, sealer, kind="queue", migrations=MIGRATIONS)

    def add(self, copies: Sequence[NewCopy], now: float) -> list[QueueEntry]:
        """Write every data file, make them durable in one pass, then commit all rows.

        One copy: fdatasync. Several: one syncfs(2) for all their data (see
        gateway/spool.py); then the renames, one directory fsync, one transaction.
        """
        entries = []
        written: list[Path] = []
        try:
            for c in copies:
                qid = new_spool_id()
                path = self._path(qid)
                self.write_sealed(path.with_suffix(".tmp"), qid, c.data, sync=len(copies) == 1)
                written.append(path)
                entries.append(QueueEntry.first_attempt(qid, c, now))
            if len(copies) > 1:
                fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    if not sync_filesystem(fd):
                        for path in written:
                            _fdatasync_path(path.with_suffix(".tmp"))
                finally:
                    os.close(fd)
            for path in written:
                os.rename(path.with_suffix(".tmp"), path)
            fsync_directory(self.dir)
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for e in entries:
                        self._db.execute(
                            f"INSERT INTO entries ({_COLUMNS}) VALUES "
                            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (
                                e.id,
                                e.spool_id,
                                e.kind,
                                e.route,
                                e.connector,
                                e.mail_from,
                                json.dumps(list(e.recipients)),
                                e.message_id,
                                e.safe_subject,
                                e.size,
                                e.created,
                                e.next_attempt,
                                0,
                                "",
                            ),
                        )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except (OSError, sqlite3.Error) as exc:
            for path in written:
                path.unlink(missing_ok=True)
                path.with_suffix(".tmp").unlink(missing_ok=True)
            raise SpoolError("cannot queue a message") from exc
        return entries

    def load(self, queue_id: str) -> bytearray:
        return self.read_sealed(queue_id)

    def get(self, queue_id: str) -> QueueEntry | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE id = ?", (queue_id,)
            ).fetchone()
        return _entry(row) if row else None

    def all(self) -> list[QueueEntry]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM entries ORDER BY created, id"
            ).fetchall()
        return [_entry(r) for r in rows]

    def claim_due(self, now: float, owner: str, exclude: set[str], limit: int) -> list[QueueEntry]:
        """Claim up to `limit` due, unclaimed entries for `owner` and return them.

        A read first (no lock in WAL mode: the common case, nothing due, writes
        nothing), then one UPDATE that takes only rows still unclaimed, so two
        processes never get the same entry. The claim is not fsync'ed: one lost in a
        power cut leaves the entry unclaimed, which is what a restart does anyway."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM entries WHERE next_attempt <= ? AND claimed_by = '' "
                "ORDER BY next_attempt, id LIMIT ?",
                (now, limit + len(exclude)),
            ).fetchall()
            ids = [str(r[0]) for r in rows if r[0] not in exclude][:limit]
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            with self._relaxed_sync():
                claimed = self._db.execute(
                    f"UPDATE entries SET claimed_by = ? WHERE claimed_by = '' "
                    f"AND id IN ({marks}) RETURNING {_COLUMNS}",
                    (owner, *ids),
                ).fetchall()
        entries = sorted((_entry(r) for r in claimed), key=lambda e: (e.next_attempt, e.id))
        return entries

    def claim_owners(self) -> set[str]:
        """Every process name holding a claim now."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT claimed_by FROM entries WHERE claimed_by != ''"
            ).fetchall()
        return {str(r[0]) for r in rows}

    def release_claims(self, owners: Iterable[str]) -> int:
        """Give back the claims of these processes (dead, or stopping); returns how many."""
        released = 0
        with self._lock:
            for owner in owners:
                cur = self._db.execute(
                    "UPDATE entries SET claimed_by = '' WHERE claimed_by = ?", (owner,)
                )
                released += cur.rowcount
        return released

    def release(self, queue_id: str) -> None:
        """Give back the claim on one entry (its attempt ended without an update)."""
        with self._lock:
            self._db.execute("UPDATE entries SET claimed_by = '' WHERE id = ?", (queue_id,))

    @contextlib.contextmanager
    def _relaxed_sync(self) -> Iterator[None]:
        """synchronous=NORMAL for one statement: the WAL is not fsync'ed for it; the
        next durable commit covers it (caller holds the lock)."""
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def next_due(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_attempt) FROM entries").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def reschedule(
        self, queue_id: str, recipients: Sequence[str], next_attempt: float, error: str
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE entries SET recipients = ?, next_attempt = ?, attempts = attempts + 1, "
                "last_error = ?, claimed_by = '' WHERE id = ?",
                (json.dumps(list(recipients)), next_attempt, error, queue_id),
            )

    def set_next_attempt(self, queue_id: str, when: float) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE entries SET next_attempt = ? WHERE id = ?", (when, queue_id)
            )
        return cur.rowcount > 0

    def remove(self, queue_id: str, *, durable: bool = True) -> bool:
        """Delete an entry. `durable=False` after a delivery: the WAL is not fsync'ed
        for this commit (the next durable commit covers it); a crash may then deliver
        the entry again, which is a duplicate, never a loss."""
        with self._lock, self._relaxed_sync() if not durable else contextlib.nullcontext():
            cur = self._db.execute("DELETE FROM entries WHERE id = ?", (queue_id,))
        self._path(queue_id).unlink(missing_ok=True)
        return cur.rowcount > 0

    def setting(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_setting(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


class DeliveryQueue:
    """Schedules deliveries of the stored entries through the connectors."""

    def __init__(
        self,
        store: QueueStore,
        cfg: QueueConfig,
        connectors: Mapping[str, Connector],
        events: EventBus,
        *,
        hostname: str,
        bounce_connector: Callable[[str], str],
        clock: Callable[[], float] = time.time,
        memory: MemoryBudget | None = None,
        patient_addresses: Callable[[Sequence[str]], bool] = identifies_patient,
        claim_owner: str | None = None,
        lockdown_refresh: float | None = None,
        route_actions: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        # Route name -> action, for delivery events: an entry queued by another worker
        # (or before a restart) is labelled by its route, not "unknown".
        self.route_actions = dict(route_actions or {})
        # This process's name on the entries it delivers (see QueueStore.claim_due).
        self.claim_owner = claim_owner or f"p{os.getpid()}"
        # Which recipients make an event patient-identifying (masked by every sink):
        # the service widens the default (patient.mssante.fr) to rostered patients.
        self.patient_addresses = patient_addresses
        self.cfg = cfg
        self.connectors = connectors
        self.events = events
        self.hostname = hostname
        self.bounce_connector = bounce_connector
        self.clock = clock
        self.memory = memory or memory_budget_for(64 * 1024 * 1024)
        self._in_flight: set[str] = set()
        # Blocking store work (fsync, decrypt) runs here, not in the loop's default pool.
        self._io = named_executor(4, "queue-io")
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_destination: dict[str, asyncio.Semaphore] = {}
        self._deadlines = Deadlines(DELIVERY_TIMEOUT)
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._enqueue_pending: list[tuple[list[NewCopy], asyncio.Future[list[QueueEntry]]]] = []
        self._enqueue_task: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._lockdown: bool | None = None  # cached lockdown setting (see `lockdown`)
        # None: this process makes every change, the cache is always right. Seconds:
        # other processes share the setting, re-read it when older than that.
        self._lockdown_refresh = lockdown_refresh
        self._lockdown_read_at = 0.0

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._runner = asyncio.create_task(self._run(), name="queue-scheduler")

    async def stop(self) -> None:
        self._stopping = True
        self.wake()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
            self._runner = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._io.shutdown(wait=True)
        try:
            # Deliveries cut off by the stop: another process may take them now.
            self.store.release_claims([self.claim_owner])
        except sqlite3.Error as exc:
            log.warning("queue_claims_not_released", error=type(exc).__name__)

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    @property
    def idle(self) -> bool:
        return not self._in_flight

    # --- operator API -------------------------------------------------------------

    async def enqueue(self, copies: Sequence[NewCopy]) -> list[QueueEntry]:
        """Durably queue copies, then schedule them.

        Group commit: requests that arrive while a commit is running are written
        together by the next one (one sync pass and one transaction for all).
        """
        if not copies:
            return []
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[QueueEntry]] = loop.create_future()
        self._enqueue_pending.append((list(copies), done))
        if self._enqueue_task is None or self._enqueue_task.done():
            self._enqueue_task = asyncio.create_task(self._commit_enqueues())
        entries = await done
        for e in entries:
            self.events.emit(
                "queued",
                spool_id=e.spool_id,
                queue_id=e.id,
                route=e.route,
                connector=e.connector,
                recipients=list(e.recipients),
                entry_kind=e.kind,
                identifies_patient=self.patient_addresses(e.recipients),
            )
        self.wake()
        return entries

    def can_deliver_direct(self, copy: NewCopy) -> bool:
        """Whether `copy` may take the fast path now: a received message's copy, no
        lockdown, its connector known, room under `max_deliveries`."""
        if self._stopping or copy.kind != KIND_MESSAGE:
            return False
        # A busy destination does not send the copy to disk: it waits for a slot in
        # memory (the spool entry is its durable record), bounded by max_deliveries.
        if copy.connector not in self.connectors:
            return False
        if len(self._in_flight) >= self.cfg.max_deliveries:
            return False
        return not self.lockdown

    async def deliver_direct(self, copy: NewCopy) -> None:
        """Fast path: deliver `copy` now from memory. Recipients that tempfail are queued
        durably (first retry after the usual backoff); permfails get a DSN. Returns once
        every recipient is delivered, queued or bounced; raises (SpoolError, AuditError)
        if that could not be made durable: the caller then keeps its spool entry."""
        now = self.clock()
        entry = QueueEntry.first_attempt(new_spool_id(), copy, now)
        connector = self.connectors.get(copy.connector)
        if connector is None:  # can_deliver_direct said yes: only a reload removes one
            await self.enqueue([copy])
            return
        self._in_flight.add(entry.id)
        try:
            await self._attempt_with(entry, connector, copy.data, direct=copy)
        finally:
            self._in_flight.discard(entry.id)

    async def _commit_enqueues(self) -> None:
        loop = asyncio.get_running_loop()
        while self._enqueue_pending:
            batch, self._enqueue_pending = self._enqueue_pending, []
            flat = [c for copies, _ in batch for c in copies]
            try:
                entries = await loop.run_in_executor(self._io, self.store.add, flat, self.clock())
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(
                            exc if isinstance(exc, SpoolError) else SpoolError("cannot queue")
                        )
                continue
            offset = 0
            for copies, fut in batch:
                if not fut.done():
                    fut.set_result(entries[offset : offset + len(copies)])
                offset += len(copies)

    def list(self) -> list[QueueEntry]:
        return self.store.all()

    def show(self, queue_id: str) -> QueueEntry | None:
        return self.store.get(queue_id)

    def retry(self, queue_id: str) -> bool:
        ok = self.store.set_next_attempt(queue_id, self.clock())
        self.wake()
        return ok

    def delete(self, queue_id: str, user: str = "") -> bool:
        ok = self.store.remove(queue_id)
        if ok:
            self.events.emit("deleted", queue_id=queue_id, user=user)
        return ok

    @property
    def lockdown(self) -> bool:
        # Read once, then kept: every change goes through set_lockdown (the control
        # socket and the console call it); a SELECT per dispatch was 1-2 % of samples.
        # With other worker processes, re-read when older than `lockdown_refresh`.
        refresh = self._lockdown_refresh
        if self._lockdown is None or (
            refresh is not None and time.monotonic() - self._lockdown_read_at >= refresh
        ):
            self._lockdown = self.store.setting("lockdown") == "on"
            self._lockdown_read_at = time.monotonic()
        return self._lockdown

    def set_lockdown(self, on: bool, user: str = "") -> None:
        self.store.set_setting("lockdown", "on" if on else "off")
        self._lockdown = on
        self._lockdown_read_at = time.monotonic()
        self.events.emit("lockdown", on=on, user=user)
        self.wake()

    # --- scheduling ---------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            try:
                await self.dispatch_due()
            except Exception as exc:  # a broken row must not stop the scheduler
                log.error("queue_dispatch_failed", error=type(exc).__name__)
            try:
                async with asyncio.timeout(self.cfg.poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def dispatch_due(self) -> int:
        """Start deliveries for entries that are due now. Returns how many started.

        The claim runs off the event loop: it writes, and with worker processes it may
        wait for another process's transaction on queue.db."""
        if self.lockdown:
            return 0
        room = self.cfg.max_deliveries - len(self._in_flight)
        if room <= 0:
            return 0
        loop = asyncio.get_running_loop()
        claimed = await loop.run_in_executor(
            self._io,
            self.store.claim_due,
            self.clock(),
            self.claim_owner,
            set(self._in_flight),
            room,
        )
        # Fast-path deliveries may have taken slots meanwhile: give back the excess.
        room = max(0, self.cfg.max_deliveries - len(self._in_flight))
        for entry in claimed[room:]:
            await loop.run_in_executor(self._io, self.store.release, entry.id)
        for entry in claimed[:room]:
            self._in_flight.add(entry.id)
            task = asyncio.create_task(self._deliver(entry), name=f"deliver-{entry.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return min(room, len(claimed))

    def _semaphore(self, destination: str) -> asyncio.Semaphore:
        sem = self._per_destination.get(destination)
        if sem is None:
            sem = asyncio.Semaphore(self.cfg.per_destination_concurrency)
            self._per_destination[destination] = sem
        return sem

    async def _deliver(self, entry: QueueEntry) -> None:
        try:
            async with self.memory.hold(entry.size):
                await self._attempt(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("queue_attempt_failed", queue_id=entry.id, error=type(exc).__name__)
            try:
                self._defer(entry, list(entry.recipients), "internal error")
            except Exception as defer_exc:
                log.error("queue_defer_failed", queue_id=entry.id, error=type(defer_exc).__name__)
                with contextlib.suppress(Exception):
                    self.store.release(entry.id)
        finally:
            self._in_flight.discard(entry.id)
            self.wake()

    async def _attempt(self, entry: QueueEntry) -> None:
        connector = self.connectors.get(entry.connector)
        if connector is None:
            self._defer(entry, list(entry.recipients), f"no connector {entry.connector!r}")
            return
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(self._io, self.store.load, entry.id)
        except SpoolError:
            # The entry's data is gone or tampered with: nothing can be sent; tell the sender.
            log.error("queue_data_unreadable", queue_id=entry.id)
            await self._bounce(
                entry,
                [FailedRecipient(r, "4.3.0", "local storage error") for r in entry.recipients],
                gave_up=True,
            )
            self.store.remove(entry.id)
            return
        item = DeliveryItem(
            queue_id=entry.id,
            mail_from=entry.mail_from,
            recipients=entry.recipients,
            # Connectors that declare `accepts_buffer` take the bytearray as it is (a
            # copy would double a large message in memory); the others get bytes.
            data=cast(bytes, data) if getattr(connector, "accepts_buffer", False) else bytes(data),
            route=entry.route,
            attempt=entry.attempts + 1,
        )
        del data
        await self._attempt_with(entry, connector, item, direct=None)

    async def _attempt_with(
        self,
        entry: QueueEntry,
        connector: Connector,
        payload: DeliveryItem | bytes,
        *,
        direct: NewCopy | None,
    ) -> None:
        """One delivery attempt of `entry` and what follows from its result. `direct`:
        the copy of a fast-path delivery (`payload` is its data, no stored entry)."""
        loop = asyncio.get_running_loop()
        if isinstance(payload, DeliveryItem):
            item = payload
        else:
            assert direct is not None
            # As for stored entries: only `accepts_buffer` connectors take a bytearray.
            data = payload if getattr(connector, "accepts_buffer", False) else bytes(payload)
            item = _direct_item(direct, entry.attempts + 1, entry.id, data)
        destination = connector.destination(item)
        started = time.monotonic()
        async with self._semaphore(destination):
            if self.lockdown:
                # Set while this copy waited for its destination's slot: it stays here.
                await self._hold_for_lockdown(entry, direct)
                return
            try:
                # No task per delivery (wait_for), no timer either (asyncio.timeout).
                result = await self._deadlines.run(connector.deliver(item))
            except TimeoutError:
                result = DeliveryResult.all(entry.recipients, Status.TEMPFAIL, "timeout")
            except Exception as exc:  # a connector bug is a temporary failure, never a loss
                log.error("connector_failed", connector=entry.connector, error=type(exc).__name__)
                result = DeliveryResult.all(entry.recipients, Status.TEMPFAIL, "connector error")
        latency = time.monotonic() - started
        # The results by status and who answered, in one pass over them.
        by_status: dict[Status, list[RecipientResult]] = {}
        answered = set()
        for r in result.results:
            by_status.setdefault(r.status, []).append(r)
            answered.add(r.recipient)
        for status in (Status.DELIVERED, Status.TEMPFAIL, Status.PERMFAIL):
            group = by_status.get(status)
            if group:
                self.events.emit(
                    "delivery",
                    queue_id=entry.id,
                    route=entry.route,
                    action=self.route_actions.get(entry.route, ""),
                    connector=entry.connector,
                    destination=destination,
                    status=status.value,
                    detail=group[0].detail,
                    attempt=item.attempt,
                    recipients=[r.recipient for r in group],
                    identifies_patient=self.patient_addresses(entry.recipients),
                    latency_s=round(latency, 4),
                    # Accept -> this attempt, seconds: the end-to-end latency metric.
                    age_s=round(max(0.0, self.clock() - entry.created), 3),
                    bytes=len(item.data),
                )
        temp = by_status.get(Status.TEMPFAIL, [])
        # A recipient the connector did not report on is retried, never dropped.
        temp_rcpts = [r.recipient for r in temp] + [
            r for r in entry.recipients if r not in answered
        ]
        perm = by_status.get(Status.PERMFAIL)
        if perm:
            await self._bounce(
                entry,
                [
                    FailedRecipient(r.recipient, status_from_detail(r.detail, True), r.detail)
                    for r in perm
                ],
                gave_up=False,
            )
        if not temp_rcpts:
            # The delivery record is durable before the entry is forgotten (issue 7).
            await self.events.durable()
            if direct is None:
                # unlink and the commit block on the journal: keep them off the event loop.
                await loop.run_in_executor(
                    self._io, lambda: self.store.remove(entry.id, durable=False)
                )
            return
        detail = temp[0].detail if temp else "no answer for recipient"
        if direct is not None:
            # Only now does the copy need a durable entry: the recipients still to do,
            # first retry after the usual backoff (this attempt counts).
            (queued,) = await self.enqueue([_with_recipients(direct, temp_rcpts)])
            self._defer(queued, temp_rcpts, detail)
            await self.events.durable()
            return
        if self.clock() - entry.created >= self.cfg.give_up_after:
            await self._bounce(
                entry,
                [
                    FailedRecipient(
                        r,
                        status_from_detail(detail, False).replace("4.", "5.", 1),
                        f"gave up: {detail}",
                    )
                    for r in temp_rcpts
                ],
                gave_up=True,
            )
            self.store.remove(entry.id)
            return
        self._defer(entry, temp_rcpts, detail)

    async def _hold_for_lockdown(self, entry: QueueEntry, direct: NewCopy | None) -> None:
        """A lockdown began while `entry` waited for a delivery slot: do not send it. A
        fast-path copy becomes a durable entry (dispatched when the lockdown ends); a
        stored entry gives its claim back, unchanged."""
        if direct is not None:
            await self.enqueue([direct])
            await self.events.durable()
        else:
            self.store.release(entry.id)

    def backoff(self, attempts: int) -> float:
        """Seconds before retry number `attempts + 1`."""
        delay = self.cfg.retry_initial * (self.cfg.retry_factor ** max(0, attempts))
        return float(min(delay, self.cfg.retry_max))

    def _defer(self, entry: QueueEntry, recipients: Sequence[str], detail: str) -> None:
        delay = self.backoff(entry.attempts)
        self.store.reschedule(entry.id, recipients, self.clock() + delay, detail)
        self.events.emit(
            "deferred", queue_id=entry.id, next_attempt_in_s=round(delay, 3), detail=detail
        )

    async def _bounce(
        self, entry: QueueEntry, failed: Sequence[FailedRecipient], *, gave_up: bool
    ) -> None:
        reason = failed[0].reason if failed else ""
        if not entry.mail_from or entry.kind != KIND_MESSAGE:
            # Never a bounce of a bounce (or of our own notices).
            self.events.emit(
                "bounced",
                queue_id=entry.id,
                reason=reason,
                recipients=[f.address for f in failed],
                identifies_patient=self.patient_addresses(entry.recipients),
                dsn=False,
            )
            return
        dsn = build_dsn(
            hostname=self.hostname,
            sender=entry.mail_from,
            original_message_id=entry.message_id,
            arrival=entry.created,
            failed=failed,
            gave_up=gave_up,
            safe_subject=entry.safe_subject,
            identifies_patient=lambda address: self.patient_addresses([address]),
        )
        await self.enqueue(
            [
                NewCopy(
                    spool_id=entry.spool_id,
                    route="dsn",
                    connector=self.bounce_connector(entry.mail_from),
                    mail_from="",
                    recipients=(entry.mail_from,),
                    data=dsn,
                    kind=KIND_BOUNCE,
                )
            ]
        )
        self.events.emit(
            "bounced",
            queue_id=entry.id,
            reason=reason,
            recipients=[f.address for f in failed],
            identifies_patient=self.patient_addresses(entry.recipients),
            dsn=True,
        )


def _direct_item(
    copy: NewCopy, attempt: int, queue_id: str = "", data: bytes | None = None
) -> DeliveryItem:
    """The DeliveryItem of a fast-path copy."""
    return DeliveryItem(
        queue_id=queue_id,
        mail_from=copy.mail_from,
        recipients=tuple(copy.recipients),
        data=copy.data if data is None else data,
        route=copy.route,
        attempt=attempt,
    )


def _with_recipients(copy: NewCopy, recipients: Sequence[str]) -> NewCopy:
    return NewCopy(
        spool_id=copy.spool_id,
        route=copy.route,
        connector=copy.connector,
        mail_from=copy.mail_from,
        recipients=tuple(recipients),
        data=copy.data,
        message_id=copy.message_id,
        safe_subject=copy.safe_subject,
        created=copy.created,
        kind=copy.kind,
    )
