"""The running gateway: config -> keys -> spool -> processing -> queue -> connectors.

Trust boundary: this is the I/O shell around the sans-IO pipeline. It owns every file,
socket and task; the pipeline only sees bytes and settings.

Order of work for one message (Postfix's after-queue model):
1. gateway/smtp streams DATA into the spool; 250 once it is durable.
2. A processing worker reads it back, plans one copy per route (gateway.routes),
   and runs `gateway.pipeline.process_message` off the event loop within
   `scan.message_budget` seconds.
3. Per copy: PASS/REWRITTEN -> vault entries stored first, then queued for delivery;
   HOLD -> quarantine + notice to the sender; REJECT -> notice to the sender.
4. Only when every copy is durably queued, quarantined or noticed is the spool file
   removed. A crash in between processes the message again: duplicates, never loss.

Invariants:
- Fail closed: an exception or timeout in the pipeline holds every copy whose action
  is not `deliver` (deliver copies get the original bytes, as the pipeline would).
- Events (gateway.events) are the one record of what happened; logs, audit and
  metrics subscribe to `service.events`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import itertools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from connectors.base import Connector
from crypto.aead import Sealer
from crypto.certs import ensure_self_signed
from crypto.keys import Keyring, init_keys, load_keys
from gateway.config import Config
from gateway.dsn import build_notice
from gateway.errors import PortiqueError, SpoolError
from gateway.events import EventBus, LogSink
from gateway.logging import get_logger
from gateway.pipeline import process_message
from gateway.pipeline.model import CopyOutcome, MessageOutcome, RouteCopy
from gateway.quarantine import HeldItem, Quarantine
from gateway.queue import (
    KIND_NOTICE,
    LOCKDOWN_REFRESH,
    DeliveryQueue,
    NewCopy,
    QueueStore,
    identifies_patient,
    memory_budget_for,
)
from gateway.routes import find_route, plan_copies
from gateway.scan.model import ScanEngine, VaultEntry
from gateway.smtp import Accepted, CommitPastBudget, Gate, SmtpServer, load_tls_context
from gateway.spool import Envelope, Spool, UnreadableSpoolEntry
from gateway.threads import named_executor
from gateway.verdicts import Action, Verdict
from gateway.workers import WorkerSlot

log = get_logger("portique.service")

# Pipeline threads: the pipeline is CPU-bound; two keep both cores of a small practice
# server busy without starving the event loop.
PROCESSING_WORKERS = 2
# Messages in processing at once: more than the threads, so that their storage waits
# (spool read, queue commit) overlap and share group commits.
PROCESSING_CONCURRENCY = 8
# Wait before retrying a message whose processing failed on local storage, in seconds.
PROCESSING_RETRY_DELAY = 30.0
# Bytes of accepted small messages kept in memory until processed (see _on_accepted).
ACCEPTED_DATA_MAX = 16 * 1024 * 1024
# Seconds the event loop waits beyond scan.message_budget before giving up on the
# pipeline thread: the pipeline checks its own budget between stages, so it normally
# returns its own hold first.
PIPELINE_BUDGET_SLACK = 1.0
# Single-part text messages up to this size run the pipeline on the event loop itself (a
# 2 KB order takes about half a millisecond): a hand-off to a pipeline thread and back
# costs more CPU than that (two thread switches, the GIL passed twice), and the loop would
# wait for it anyway. Anything else goes to the pipeline threads: a larger message, and
# any message with parts or a non-text body, however small (a crafted PDF or archive
# could keep a file handler busy, and the loop must keep serving sessions and beating
# its heartbeat; the outer time limit in _run_pipeline only guards a thread).
INLINE_PIPELINE_MAX = 16 * 1024
# After an inline pipeline, the pipelines of up to this many more small messages waiting
# in order of acceptance run straight away, back to back, while the CPU caches still hold
# the pipeline's code and data (scanner databases, compiled patterns, roster); each
# message's processing task then takes its ready outcome. Interleaved with SMTP sessions,
# audit and delivery work, the same call costs up to twice its tight-loop time. 8 such
# pipelines hold the loop about 5 ms (issue 7, load-tests/README.md).
PIPELINE_BATCH = 8
# The top-level type of a Content-Type header line (RFC 2045 token chars).
_CONTENT_TYPE = re.compile(rb"^content-type:\s*([a-z0-9!#$%&'*+.^_`|~-]+)\s*/", re.I | re.M)
# SIGTERM: seconds to let in-flight SMTP transactions finish while new ones get 421.
SHUTDOWN_GRACE = 10.0


class VaultStore(Protocol):
    def store(self, entries: Sequence[VaultEntry]) -> None: ...

    def holds_all(self, entries: Sequence[VaultEntry]) -> bool:
        """True only if every entry is already stored (answered without waiting)."""
        ...


@dataclass(frozen=True)
class ProcessResult:
    spool_id: str
    queued: tuple[str, ...]
    held: tuple[str, ...]
    rejected: int


class Service:
    def __init__(
        self,
        cfg: Config,
        *,
        engine: ScanEngine | None = None,
        vault: VaultStore | None = None,
        is_mssante: Callable[[str], bool] | None = None,
        connectors: Mapping[str, Connector] | None = None,
        clock: Callable[[], float] = time.time,
        keyring: Keyring | None = None,
        slot: WorkerSlot | None = None,
    ) -> None:
        self.cfg = cfg
        # Which worker process this is (gateway/workers.py); 0 of 1 without workers.
        self.slot = slot or WorkerSlot()
        self.engine = engine
        self.vault = vault
        self.is_mssante = is_mssante
        # Domain on the trust list (issue 5): a listed domain whose address MSSanté would
        # refuse (bad patient INS) is rejected instead of taking a later route.
        self.is_mssante_domain: Callable[[str], bool] | None = None
        self.clock = clock
        self.events = EventBus()
        self._keyring = keyring
        self._given_connectors = connectors
        self.connectors: Mapping[str, Connector] = {}
        self._processing: asyncio.Queue[str] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._busy: set[str] = set()
        # What the SMTP layer told with each 250, used once by the processing loop: the
        # size as the processing memory hold (a stat of the spool file per message was
        # 1.5 % of samples under load), and a small message's bytes (Accepted.data)
        # instead of reading the spool back. At most ACCEPTED_DATA_MAX bytes of data wait
        # here; beyond, and for recovered or retried entries, the spool is read.
        self._accepted: dict[str, Accepted] = {}
        self._accepted_data_bytes = 0
        # Outcomes computed ahead for accepted messages (see PIPELINE_BATCH), taken once
        # by their processing; a message that is retried computes its outcome again.
        self._ready: dict[str, _ReadyOutcome] = {}
        self._retry_handles: list[asyncio.TimerHandle] = []
        # Fast-path deliveries in flight (each drops its spool entry when done).
        self._direct_tasks: set[asyncio.Task[None]] = set()
        # Bytes of fast-path copies held in memory, waiting for or in delivery.
        self._direct_bytes = 0
        self.smtp: SmtpServer | None = None
        # Seconds each message spent in the pipeline (scan + transform), for the
        # scan-duration metric; the runtime sets it.
        self.on_pipeline_duration: Callable[[float], None] | None = None
        # What became of each DATA commit that ran past the DATA reply budget, for the
        # commits-past-budget metric; the runtime sets it (read at each report).
        self.on_commit_past_budget: Callable[[CommitPastBudget], None] | None = None
        self.control: Any = None
        self.started = False

    # --- lifecycle ----------------------------------------------------------------

    async def start(self, *, control_socket: bool = True) -> None:
        cfg = self.cfg
        data_dir = cfg.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._keyring is None:
            created = init_keys(data_dir)
            if created:
                log.info("keys_created", keys=created)
            self._keyring = load_keys(data_dir)
        self.events.subscribe(LogSink(self._keyring.digest_key))
        sealer = Sealer(self._keyring)
        slot = self.slot
        self.spool = Spool(data_dir, sealer, cfg.spool, subdir=slot.spool_subdir)
        self.store = QueueStore(data_dir, sealer)
        # Deliveries cut off by an earlier stop or crash of this slot's process.
        self.store.release_claims(o for o in self.store.claim_owners() if slot.owns_stale_claim(o))
        self.quarantine = Quarantine(data_dir, sealer)
        if self._given_connectors is not None:
            self.connectors = dict(self._given_connectors)
        else:
            from connectors.registry import build_connectors

            self.connectors = build_connectors(cfg)
        if self.is_mssante is None:
            # '@mssante' routes match the configured ANS trust list (issue 5); an
            # unreadable list stops the start (TrustListError) rather than re-route.
            from gateway.routes import mssante_predicates

            self.is_mssante, self.is_mssante_domain = mssante_predicates(cfg, self.connectors)
        self.queue = DeliveryQueue(
            self.store,
            cfg.queue,
            self.connectors,
            self.events,
            hostname=cfg.smtp.hostname,
            bounce_connector=self.notice_connector,
            clock=self.clock,
            memory=memory_budget_for(cfg.smtp.max_message_size),
            patient_addresses=self.identifies_patient,
            claim_owner=slot.claim_owner,
            lockdown_refresh=LOCKDOWN_REFRESH if slot.shared else None,
            route_actions={r.name: r.action for r in cfg.effective_routes()},
        )
        self._executor = named_executor(PROCESSING_WORKERS, "pipeline")
        self._io = named_executor(PROCESSING_WORKERS, "service-io")
        await self.spool.start()
        self._processing = asyncio.Queue()
        for orphan in slot.orphan_spools(data_dir):
            adopted = self.spool.adopt(orphan)
            if adopted:
                log.info("spool_adopted", entries=len(adopted), directory=orphan.name)
        for spool_id in self.spool.recover():
            self._processing.put_nowait(spool_id)
        self._workers = [
            asyncio.create_task(self._process_loop(), name=f"process-{i}")
            for i in range(PROCESSING_CONCURRENCY)
        ]
        await self.queue.start()
        gate = Gate(
            cfg.smtp,
            self.spool,
            self._on_accepted,
            self._tls_context(),
            accepted_durable=self.events.durable,
            on_commit_past_budget=self._commit_past_budget,
        )
        self.smtp = SmtpServer(gate, cfg.smtp.listen, reuse_port=slot.shared)
        await self.smtp.start()
        if control_socket:
            from gateway.control import ControlServer

            self.control = ControlServer(self, data_dir / "control.sock")
            await self.control.start()
        self.started = True
        log.info(
            "service_started",
            listen=f"{self.smtp.host}:{self.smtp.port}",
            data_dir=str(data_dir),
            connectors=sorted(self.connectors),
            lockdown=self.queue.lockdown,
        )

    def _tls_context(self) -> Any:
        smtp = self.cfg.smtp
        if smtp.tls_cert:
            cert, key = self.cfg.path(smtp.tls_cert), self.cfg.path(smtp.tls_key)
        else:
            cert = self.cfg.data_dir / "tls" / "smtp.pem"
            key = self.cfg.data_dir / "tls" / "smtp.key"
            ensure_self_signed(cert, key, smtp.hostname)
        return load_tls_context(smtp, cert, key)

    @property
    def smtp_port(self) -> int:
        assert self.smtp is not None
        return self.smtp.port

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """421 to new sessions, let transactions finish, then stop everything."""
        if not self.started:
            return
        self.started = False
        assert self.smtp is not None
        await self.smtp.drain(grace)
        await self.smtp.stop()
        if self.control is not None:
            await self.control.stop()
        for handle in self._retry_handles:
            handle.cancel()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._direct_tasks:
            # Let fast-path deliveries finish within the grace; what is cut off stays
            # in the spool and is processed again at the next start.
            _, pending = await asyncio.wait(set(self._direct_tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.queue.stop()
        for connector in self.connectors.values():
            try:
                await connector.close()
            except Exception as exc:
                log.warning("connector_close_failed", error=type(exc).__name__)
        await self.spool.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._io.shutdown(wait=True)
        self.store.close()
        self.quarantine.close()
        log.info("service_stopped")

    # --- acceptance and processing ------------------------------------------------

    def identifies_patient(self, addresses: Sequence[str]) -> bool:
        """Whether an event naming these addresses must mask them: a patient's own
        mailbox (patient.mssante.fr), a rostered patient's e-mail, or an address whose
        route sends to patients (own-data-only, reject-if-phi)."""
        if identifies_patient(addresses):
            return True
        engine = self.engine
        if engine is not None and any(engine.patient_for_email(a) is not None for a in addresses):
            return True
        routes = self.cfg.effective_routes()
        for address in addresses:
            route = find_route(routes, address, self.is_mssante)
            if route is not None and route.action in (Action.OWN_DATA_ONLY, Action.REJECT_IF_PHI):
                return True
        return False

    def _commit_past_budget(self, outcome: CommitPastBudget) -> None:
        """gateway/smtp's report of a DATA commit past its reply budget, passed on to
        `on_commit_past_budget` as it is at the time (set before or after `start`)."""
        if self.on_commit_past_budget is not None:
            self.on_commit_past_budget(outcome)

    def _on_accepted(self, accepted: Accepted) -> None:
        env = accepted.envelope
        self.events.emit(
            "received",
            spool_id=accepted.spool_id,
            client=env.client,
            user=env.user,
            mail_from=env.mail_from,
            recipients=list(env.recipients),
            size=accepted.size,
            message_id=accepted.message_id,
            identifies_patient=self.identifies_patient(env.recipients),
        )
        assert self._processing is not None
        if accepted.data is not None:
            if self._accepted_data_bytes + len(accepted.data) <= ACCEPTED_DATA_MAX:
                self._accepted_data_bytes += len(accepted.data)
            else:
                accepted = dataclasses.replace(accepted, data=None)
        self._accepted[accepted.spool_id] = accepted
        self._processing.put_nowait(accepted.spool_id)

    async def _process_loop(self) -> None:
        assert self._processing is not None
        while True:
            spool_id = await self._processing.get()
            accepted = self._accepted.pop(spool_id, None)
            size = accepted.size if accepted is not None else None
            received = None
            if accepted is not None and accepted.data is not None:
                self._accepted_data_bytes -= len(accepted.data)
                received = (accepted.envelope, accepted.data)
            if spool_id in self._busy:
                self._ready.pop(spool_id, None)
                continue
            self._busy.add(spool_id)
            try:
                if size is None:
                    size = self.spool.size_of(spool_id)
                async with self.queue.memory.hold(size):
                    await self.process_spooled(spool_id, received)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The spool file stays; try again later (and at restart).
                log.error("processing_failed", spool_id=spool_id, error=type(exc).__name__)
                loop = asyncio.get_running_loop()
                self._retry_handles.append(
                    loop.call_later(PROCESSING_RETRY_DELAY, self._processing.put_nowait, spool_id)
                )
            finally:
                self._busy.discard(spool_id)

    def _plan(self, envelope: Envelope, engine: ScanEngine | None) -> list[RouteCopy]:
        return plan_copies(
            envelope.recipients,
            self.cfg.effective_routes(),
            self.is_mssante,
            own_patient_of=engine.patient_for_email if engine is not None else None,
            is_mssante_domain=self.is_mssante_domain,
        )

    def _inline_outcome(
        self, raw: bytes, copies: Sequence[RouteCopy], engine: ScanEngine | None
    ) -> MessageOutcome:
        """The pipeline of a small text message (`runs_inline`), run on the event loop."""
        started = time.monotonic()
        try:
            outcome = process_message(
                raw,
                copies,
                engine,
                limits=self.cfg.files,
                budget_seconds=self.cfg.scan.message_budget,
            )
        except Exception as exc:
            log.error("pipeline_failed", error=type(exc).__name__)
            outcome = _fail_closed(copies, "content could not be processed", raw)
        if self.on_pipeline_duration is not None:
            self.on_pipeline_duration(time.monotonic() - started)
        return outcome

    def _run_waiting_pipelines(self) -> None:
        """Compute ahead the outcomes of up to PIPELINE_BATCH small messages waiting for
        processing, in order of acceptance (see PIPELINE_BATCH). Their routes are planned
        with the engine of the moment, which their outcome keeps, as processing would."""
        done = 0
        # The first few only: those at the front are already in processing or ready.
        for spool_id, accepted in itertools.islice(self._accepted.items(), 2 * PIPELINE_BATCH):
            if done == PIPELINE_BATCH:
                break
            raw = accepted.data
            if spool_id in self._ready or raw is None or not runs_inline(raw):
                continue
            engine = self.engine
            copies = self._plan(accepted.envelope, engine)
            self._ready[spool_id] = _ReadyOutcome(copies, self._inline_outcome(raw, copies, engine))
            done += 1

    async def _run_pipeline(
        self, raw: bytes, copies: Sequence[RouteCopy], engine: ScanEngine | None
    ) -> MessageOutcome:
        """The pipeline of any other message, in a pipeline thread, under a hard timeout."""
        loop = asyncio.get_running_loop()
        run = functools.partial(
            process_message,
            raw,
            copies,
            engine,
            limits=self.cfg.files,
            budget_seconds=self.cfg.scan.message_budget,
        )
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, run),
                # The pipeline stops itself at the budget (and holds); this outer
                # timeout, a second later, only catches a stage that never returns.
                self.cfg.scan.message_budget + PIPELINE_BUDGET_SLACK,
            )
        except TimeoutError:
            reason = "processing time budget exceeded"
        except Exception as exc:
            log.error("pipeline_failed", error=type(exc).__name__)
            reason = "content could not be processed"
        return _fail_closed(copies, reason, raw)

    async def process_spooled(
        self, spool_id: str, received: tuple[Envelope, bytes] | None = None
    ) -> ProcessResult | None:
        """Process a committed spool entry: its envelope and bytes as `received` with
        the 250 (a small message), else read back from the spool."""
        loop = asyncio.get_running_loop()
        try:
            if received is not None:
                envelope, raw = received
            else:
                envelope, raw = await loop.run_in_executor(self._io, self.spool.read, spool_id)
        except UnreadableSpoolEntry:
            where = self.spool.set_aside(spool_id)
            log.error("spool_entry_unreadable", spool_id=spool_id, moved_to=str(where))
            return None
        except SpoolError:
            if not (self.spool.active / spool_id).exists():
                return None  # already processed and removed
            raise
        # One engine for the whole message: the runtime may swap in a new one (roster
        # reload) at any time; routing and scanning must agree on the roster.
        ready = self._ready.pop(spool_id, None)
        if ready is not None:
            copies, outcome = ready.copies, ready.outcome
        else:
            engine = self.engine
            copies = self._plan(envelope, engine)
            if runs_inline(raw):
                outcome = self._inline_outcome(raw, copies, engine)
                self._run_waiting_pipelines()
            else:
                started = time.monotonic()
                outcome = await self._run_pipeline(raw, copies, engine)
                if self.on_pipeline_duration is not None:
                    self.on_pipeline_duration(time.monotonic() - started)
        message_id = _message_id(raw)
        to_queue: list[NewCopy] = []
        held: list[str] = []
        rejected = 0
        for index, co in enumerate(outcome.copies):
            copy = co.copy
            copy_id = f"{spool_id}.{index}"
            self.events.emit(
                "decided",
                spool_id=spool_id,
                copy_id=copy_id,
                route=copy.route,
                action=copy.action.value,
                connector=copy.connector,
                verdict=co.verdict.value,
                recipients=list(copy.recipients),
                findings=co.counts(),
                digests=[f.digest for f in co.findings],
                reason=co.reason,
                identifies_patient=copy.action in (Action.OWN_DATA_ONLY, Action.REJECT_IF_PHI)
                or self.identifies_patient(copy.recipients),
            )
            if co.verdict in (Verdict.PASS, Verdict.REWRITTEN) and co.data is not None:
                if co.vault_entries:
                    if self.vault is None:
                        # Tokens without their mapping must never leave: hold instead.
                        held.append(
                            await self._hold(
                                spool_id,
                                copy_id,
                                envelope,
                                co,
                                raw,
                                message_id,
                                "pseudonym vault unavailable",
                                outcome,
                            )
                        )
                        continue
                    if not self.vault.holds_all(co.vault_entries):
                        await loop.run_in_executor(self._io, self.vault.store, co.vault_entries)
                to_queue.append(
                    NewCopy(
                        spool_id=spool_id,
                        route=copy.route,
                        connector=copy.connector,
                        mail_from=envelope.mail_from,
                        recipients=copy.recipients,
                        data=co.data,
                        message_id=message_id,
                        safe_subject=outcome.safe_subject,
                        created=envelope.received_at,
                    )
                )
            elif co.verdict == Verdict.REJECT:
                rejected += 1
                self.events.emit(
                    "bounced",
                    spool_id=spool_id,
                    reason=co.reason,
                    recipients=list(copy.recipients),
                    identifies_patient=True,
                )
                to_queue.extend(self._notice(spool_id, envelope, co, "reject", message_id, outcome))
            else:
                held.append(
                    await self._hold(
                        spool_id,
                        copy_id,
                        envelope,
                        co,
                        raw,
                        message_id,
                        co.reason or "held",
                        outcome,
                    )
                )
        # The decided (and received) records must be durable before any copy can leave:
        # the audit trail commits them in groups off the loop (issue 7).
        await self.events.durable()
        # Fast path (issue 7): copies whose destination has a free slot go out straight
        # from memory; the others (and whatever tempfails) get a durable queue entry.
        # The spool entry stays the durable record until every copy is delivered,
        # queued or bounced: a crash in between re-processes it (duplicates, no loss).
        # Copies waiting in memory for the fast path are bounded like deliveries: at most
        # max_deliveries messages and the memory budget's bytes; beyond, a copy goes to the
        # durable queue (sealed on disk) instead of piling up in RAM behind a slow peer.
        direct: list[NewCopy] = []
        room = self.queue.memory.capacity - self._direct_bytes
        if len(self._direct_tasks) < self.cfg.queue.max_deliveries:
            for c in to_queue:
                if len(c.data) <= room and self.queue.can_deliver_direct(c):
                    direct.append(c)
                    room -= len(c.data)
        stored = [c for c in to_queue if not any(c is d for d in direct)]
        entries = await self.queue.enqueue(stored)
        if direct:
            in_memory = sum(len(c.data) for c in direct)
            self._direct_bytes += in_memory
            task = asyncio.create_task(
                self._finish_direct(spool_id, direct), name=f"direct-{spool_id}"
            )
            self._direct_tasks.add(task)
            task.add_done_callback(self._direct_tasks.discard)
            task.add_done_callback(lambda _t: self._release_direct(in_memory))
        else:
            self.spool.remove(spool_id)  # one unlink: less than a hand-off to a thread
        return ProcessResult(spool_id, tuple(e.id for e in entries), tuple(held), rejected)

    def _release_direct(self, size: int) -> None:
        self._direct_bytes -= size

    async def _finish_direct(self, spool_id: str, copies: Sequence[NewCopy]) -> None:
        """Deliver fast-path copies, then drop the spool entry. On any failure the entry
        stays and is processed again (now, after a delay, or at restart)."""
        loop = asyncio.get_running_loop()
        try:
            size = sum(len(c.data) for c in copies)
            async with self.queue.memory.hold(size):
                if len(copies) == 1:  # the common case: no task of its own (gather makes one)
                    await self.queue.deliver_direct(copies[0])
                else:
                    await asyncio.gather(*(self.queue.deliver_direct(c) for c in copies))
            self.spool.remove(spool_id)
        except asyncio.CancelledError:
            raise  # stopping: the spool entry is processed again at restart
        except Exception as exc:
            log.error("direct_delivery_failed", spool_id=spool_id, error=type(exc).__name__)
            assert self._processing is not None
            self._retry_handles.append(
                loop.call_later(PROCESSING_RETRY_DELAY, self._processing.put_nowait, spool_id)
            )

    async def _hold(
        self,
        spool_id: str,
        copy_id: str,
        envelope: Envelope,
        co: CopyOutcome,
        raw: bytes,
        message_id: str,
        reason: str,
        outcome: MessageOutcome,
    ) -> str:
        loop = asyncio.get_running_loop()
        copy = co.copy
        item = await loop.run_in_executor(
            None,
            lambda: self.quarantine.hold(
                spool_id=spool_id,
                route=copy.route,
                action=copy.action.value,
                connector=copy.connector,
                mail_from=envelope.mail_from,
                recipients=copy.recipients,
                data=raw,
                reason=reason,
                findings=co.counts(),
                message_id=message_id,
                created=envelope.received_at,
            ),
        )
        self.events.emit(
            "held",
            spool_id=spool_id,
            copy_id=copy_id,
            held_id=item.id,
            route=copy.route,
            reason=reason,
            findings=co.counts(),
        )
        notices = self._notice(spool_id, envelope, co, "hold", message_id, outcome, reason)
        await self.queue.enqueue(notices)
        return item.id

    def _notice(
        self,
        spool_id: str,
        envelope: Envelope,
        co: CopyOutcome,
        kind: str,
        message_id: str,
        outcome: MessageOutcome,
        reason: str | None = None,
    ) -> list[NewCopy]:
        if not envelope.mail_from:
            return []  # never notify the null sender
        data = build_notice(
            hostname=self.cfg.smtp.hostname,
            sender=envelope.mail_from,
            kind=kind,
            original_message_id=message_id,
            arrival=envelope.received_at,
            recipients=co.copy.recipients,
            reason=reason if reason is not None else (co.reason or kind),
            finding_counts=co.counts(),
            safe_subject=outcome.safe_subject,
            identifies_patient=lambda address: self.identifies_patient([address]),
        )
        return [
            NewCopy(
                spool_id=spool_id,
                route="notice",
                connector=self.notice_connector(envelope.mail_from),
                mail_from="",
                recipients=(envelope.mail_from,),
                data=data,
                kind=KIND_NOTICE,
            )
        ]

    def notice_connector(self, sender: str) -> str:
        """Where bounces and notices to a practice sender go: its route's connector."""
        route = find_route(self.cfg.effective_routes(), sender, self.is_mssante)
        if route is not None and route.connector in self.connectors:
            return route.connector
        for name in ("relay", "outbox"):
            if name in self.connectors:
                return name
        return next(iter(self.connectors), "")

    # --- operator actions ---------------------------------------------------------

    async def release_held(self, held_id: str, user: str, reason: str) -> str | None:
        """Queue a held copy as it was received (an audited admin act). Returns the queue id."""
        item: HeldItem | None = self.quarantine.show(held_id)
        if item is None:
            return None
        if not reason.strip():
            raise PortiqueError("a release needs a stated reason")
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(self._io, self.quarantine.data, held_id)
        entries = await self.queue.enqueue(
            [
                NewCopy(
                    spool_id=item.spool_id,
                    route=item.route,
                    connector=item.connector or self.notice_connector(item.mail_from),
                    mail_from=item.mail_from,
                    recipients=item.recipients,
                    data=data,
                    message_id=item.message_id,
                    created=item.created,
                )
            ]
        )
        self.quarantine.delete(held_id)
        self.events.emit(
            "released",
            spool_id=item.spool_id,
            copy_id=held_id,
            user=user,
            mode="original",
            reason=reason,
        )
        return entries[0].id

    def delete_held(self, held_id: str, user: str) -> bool:
        item = self.quarantine.show(held_id)
        ok = self.quarantine.delete(held_id)
        if ok and item is not None:
            self.events.emit("deleted", spool_id=item.spool_id, held_id=held_id, user=user)
        return ok

    def processing_idle(self) -> bool:
        """True when the spool is empty and no message is being processed."""
        assert self._processing is not None
        return not self.spool.pending_ids() and self._processing.empty() and not self._busy


@dataclass(frozen=True)
class _ReadyOutcome:
    """A message's pipeline outcome computed ahead, with the copies it was planned for."""

    copies: Sequence[RouteCopy]
    outcome: MessageOutcome


def _fail_closed(copies: Sequence[RouteCopy], reason: str, raw: bytes) -> MessageOutcome:
    """When the pipeline failed: only `deliver` copies go out, unchanged, as the pipeline
    would send them; every other copy is held with `reason`."""
    return MessageOutcome(
        tuple(
            CopyOutcome(c, Verdict.PASS, data=raw)
            if c.action == Action.DELIVER
            else CopyOutcome(c, Verdict.HOLD, reason=reason)
            for c in copies
        )
    )


def _message_id(raw: bytes) -> str:
    """The Message-ID header of the top-level header block, if any (no full parse)."""
    end = raw.find(b"\r\n\r\n")
    head = raw[: end if end >= 0 else min(len(raw), 65536)]
    for line in head.split(b"\r\n"):
        if line[:11].lower() == b"message-id:":
            return line[11:].strip().decode("ascii", "replace")[:998]
    return ""


def runs_inline(raw: bytes) -> bool:
    """A small message whose body is one text part: only the pipeline's own linear
    text handling runs, no file handler (see INLINE_PIPELINE_MAX)."""
    if len(raw) > INLINE_PIPELINE_MAX:
        return False
    ends = [at for at in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if at >= 0]
    head = raw[: min(ends)] if ends else raw
    declared = _CONTENT_TYPE.search(head)
    return declared is None or declared.group(1).lower() == b"text"
