"""One gateway process, assembled: what `portique serve` runs.

Builds, in order: keyring (created on first start) -> roster -> scan engine (compiled
once) -> vault -> audit trail (a *required* sink: an event that cannot be audited
fails its operation) -> metrics sink -> `Service` (SMTP, spool, pipeline, queue,
connectors, control socket) -> metrics HTTP server -> admin console; then runs the
background duties until asked to stop:
- roster watch: when `portique roster import` or `forget` replaces the sealed roster
  file, a new engine is compiled off the event loop and swapped in atomically (one
  attribute assignment); a message already in processing finishes with the engine it
  started with (the service reads the attribute once per message);
- metrics: a sink on the events, setters fed every GAUGE_INTERVAL (queue depth, oldest
  queued copy, lockdown, MSSanté client certificate expiry), scan duration from the
  service's pipeline timer and end-to-end latency from delivery events; counts flushed
  every metrics.FLUSH_INTERVAL in every worker, and at stop; /readyz checks
  service started, spool writable, keys loaded, audit writable, engine loaded, and
  with several workers that every worker is up (gateway/workers.py);
- audit duties: periodic signed checkpoints, the daily checkpoint e-mail (queued
  through the service like any other message), retention, and a daily full verify
  in a thread.

Trust boundary: this module only wires trusted parts together. It reads key files,
the sealed roster and config; it prints and logs addresses of its own listeners and
counts, never a patient value (the roster stays inside the engine).

Invariants:
- Fail closed on start: if the keyring, roster, engine, vault or audit trail cannot be
  opened, the gateway does not start (an exception names the part, not a value).
  A roster that fails to reload keeps the previous engine and logs an error naming
  the exception type: there is never a moment without an engine.
- A listener that cannot bind is a ConfigError naming its key (smtp.listen,
  metrics.listen, admin.listen).
- The checkpoint e-mail sender never blocks (see `_queue_checkpoint_email`).
- Orderly stop: console, metrics server, service (SMTP drain, queue), then the audit
  trail is closed in a thread (its closing checkpoint fsyncs) and the vault last.
- With worker processes (gateway/workers.py), every worker runs this whole runtime but
  only worker 0 (`WorkerSlot.primary`) runs the control socket, the console, the
  metrics server, the metric gauges and the audit duties: each exists once.
- A serving process (`run_until_signalled`) freezes its long-lived heap once started
  and after each roster reload (`settle_heap`), so garbage collections stay short.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from crypto.keys import Keyring, init_keys, load_keys
from gateway.audit import AuditTrail, patient_route_predicate
from gateway.config import Config
from gateway.errors import ConfigError
from gateway.events import Event
from gateway.logging import get_logger
from gateway.metrics import FLUSH_INTERVAL, Metrics, start_metrics_server
from gateway.queue import PATIENT_DOMAIN, NewCopy
from gateway.roster import ROSTER_FILE, load_roster
from gateway.scan import build_engine
from gateway.scan.model import ScanEngine
from gateway.service import Service
from gateway.vault import Vault
from gateway.workers import WorkerSlot, workers_up

log = get_logger("portique.runtime")

# Seconds between checks of the roster file's identity (mtime, size, inode): a stat()
# per second is free, and an import takes effect within about a second plus the
# compile time (~1 s for 10,000 patients).
ROSTER_POLL_INTERVAL = 1.0
# Seconds between metric setter updates (queue depth, oldest age, cert expiry): the
# default Prometheus scrape interval is 15 s; 5 s keeps gauges fresh for it.
GAUGE_INTERVAL = 5.0
# Seconds between audit duty rounds (checkpoint_if_due, checkpoint e-mail): the trail
# itself rate-limits checkpoints to hourly and e-mails to daily; a minute bounds how
# late either can be.
AUDIT_TICK = 60.0
# Seconds between retention passes and between full verifications of the chain: daily,
# as the issue asks; a full verify reads the whole trail, so not more often.
DAILY = 86_400.0


def _roster_signature(path: Path) -> tuple[int, int, int] | None:
    """Identity of the roster file as it stands: changes on every atomic replace."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def settle_heap() -> None:
    """Move everything alive now (config, keys, the compiled engine and its roster
    tables) out of the garbage collector's reach: it is never garbage, yet every full
    collection walked it, a 50-65 ms pause every few seconds under load (issue 7's
    latency). Unfrozen first, so that what the previous call froze and is garbage now
    (an engine replaced by a roster reload) is collected. For a serving process only:
    frozen objects are never collected, and a test process would keep its garbage."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _check_bind_error(key: str, listen: str, exc: OSError) -> None:
    """Turn a listener that cannot bind into a clear start-up error naming the key."""
    if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        raise ConfigError(f"{key} {listen}: cannot listen: {os.strerror(exc.errno)}") from exc


class _LatencySink:
    """Feeds the end-to-end latency histogram from delivered copies' age (accept ->
    delivered, seconds, as the queue reports it). Never raises into the event bus."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def emit(self, event: Event) -> None:
        fields = event.fields
        if event.kind != "delivery" or fields.get("status") != "delivered":
            return
        age = fields.get("age_s")
        if isinstance(age, int | float) and not isinstance(age, bool):
            self._metrics.observe_latency(float(age))


class Runtime:
    """Everything one `portique serve` process runs. `await start()`, then `await stop()`."""

    def __init__(
        self, cfg: Config, slot: WorkerSlot | None = None, *, settle_heap: bool = False
    ) -> None:
        self.cfg = cfg
        self.slot = slot or WorkerSlot()
        self._settle_heap = settle_heap
        self.keyring: Keyring | None = None
        self.engine: ScanEngine | None = None
        self.vault: Vault | None = None
        self.trail: AuditTrail | None = None
        self.metrics = Metrics()
        self.service: Service | None = None
        self.metrics_runner: Any = None
        self.console_runner: Any = None
        self.roster_patients = 0
        self.roster_reloads = 0
        self._roster_signature: tuple[int, int, int] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_verify_ok = True
        self._email_tasks: set[asyncio.Task[Any]] = set()

    # --- start ----------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        self._loop = asyncio.get_running_loop()
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = init_keys(cfg.data_dir)
        if created:
            log.info("keys_created", keys=created)
        keyring = self.keyring = load_keys(cfg.data_dir)
        self._roster_signature = _roster_signature(cfg.data_dir / ROSTER_FILE)
        self.engine, self.roster_patients = await asyncio.to_thread(self._compile_engine)
        self.vault = Vault.open(cfg.data_dir, keyring)
        try:
            self.trail = AuditTrail.open(
                cfg.data_dir,
                keyring,
                cfg.audit,
                email_sender=self._queue_checkpoint_email,
                email_from=f"portique@{cfg.smtp.hostname}",
                identifies_patient=self._address_identifies_patient(),
            )
            service = self.service = Service(
                cfg, engine=self.engine, vault=self.vault, keyring=keyring, slot=self.slot
            )
            # Required: an event the trail cannot record fails the operation emitting it.
            service.events.subscribe(self.trail, required=True)
            service.events.subscribe(self.metrics)
            service.events.subscribe(_LatencySink(self.metrics))
            service.on_pipeline_duration = self.metrics.observe_scan_duration
            service.on_commit_past_budget = self.metrics.commit_past_budget
            try:
                await service.start(control_socket=self.slot.primary)
            except OSError as exc:
                _check_bind_error("smtp.listen", cfg.smtp.listen, exc)
                raise
        except BaseException:
            await self._close_stores()
            raise
        self.metrics.watch_audit_chain(self._audit_chain_ok)
        primary = self.slot.primary
        if primary:
            self.metrics.set_lockdown(service.queue.lockdown)
        try:
            if cfg.metrics.enabled and primary:
                try:
                    self.metrics_runner = await start_metrics_server(
                        self.metrics, cfg.metrics.listen, self.readiness
                    )
                except OSError as exc:
                    _check_bind_error("metrics.listen", cfg.metrics.listen, exc)
                    raise
            if cfg.admin.enabled and primary:
                from gateway.admin import start_console

                try:
                    self.console_runner = await start_console(
                        service, self.trail, self.vault, keyring.digest_key
                    )
                except OSError as exc:
                    _check_bind_error("admin.listen", cfg.admin.listen, exc)
                    raise
        except BaseException:
            await self.stop()
            raise
        self._tasks = [
            asyncio.create_task(self._watch_roster(), name="roster-watch"),
            asyncio.create_task(self._flush_metrics(), name="metric-flush"),
        ]
        if primary:
            self._tasks += [
                asyncio.create_task(self._update_gauges(), name="metric-gauges"),
                asyncio.create_task(self._audit_duties(), name="audit-duties"),
            ]
        if self._settle_heap:
            settle_heap()
        log.info(
            "runtime_started",
            roster_patients=self.roster_patients,
            metrics=self.metrics_address or "off",
            admin=self.console_address or "off",
        )

    def _compile_engine(self) -> tuple[ScanEngine, int]:
        """Load the sealed roster and compile the engine (slow: run it in a thread)."""
        assert self.keyring is not None
        patients = load_roster(self.cfg.data_dir, self.keyring)
        engine = build_engine(
            patients=patients,
            practice=self.cfg.practice,
            digest_key=self.keyring.digest_key,
            pseudonym_key=self.keyring.pseudonym_key,
            engine=self.cfg.scan.engine,
        )
        return engine, len(patients)

    def _address_identifies_patient(self) -> Callable[[str], bool]:
        """Addresses the audit trail stores masked: patient routes, the patient
        MSSanté domain, and the e-mail of any rostered patient (current engine)."""
        on_patient_route = patient_route_predicate(self.cfg)

        def identifies_patient(address: str) -> bool:
            if address.lower().rpartition("@")[2].endswith(PATIENT_DOMAIN):
                return True
            engine = self.engine
            if engine is not None and engine.patient_for_email(address) is not None:
                return True
            return on_patient_route(address)

        return identifies_patient

    # --- addresses of the listeners (for the start-up line and tests) ---------------

    @staticmethod
    def _runner_address(runner: Any) -> str:
        if runner is None or not runner.addresses:
            return ""
        host, port = runner.addresses[0][:2]
        return f"{host}:{port}"

    @property
    def metrics_address(self) -> str:
        return self._runner_address(self.metrics_runner)

    @property
    def console_address(self) -> str:
        return self._runner_address(self.console_runner)

    # --- readiness and gauges -------------------------------------------------------

    def readiness(self) -> dict[str, bool]:
        """/readyz checks: each a cheap local probe, named, never with error text."""
        service = self.service
        spool_dir = service.spool.active if service is not None and service.started else None
        checks = {
            "service_started": service is not None and service.started,
            "spool_writable": spool_dir is not None and os.access(spool_dir, os.W_OK),
            "keys_loaded": self.keyring is not None,
            "audit_writable": self.trail is not None and self.trail.is_writable(),
            "engine_loaded": self.engine is not None,
        }
        if self.slot.shared:
            checks["workers_up"] = workers_up(self.cfg.data_dir, self.slot.count)
        return checks

    def _audit_chain_ok(self) -> bool:
        trail = self.trail
        if trail is None or not self._last_verify_ok:
            return False
        status = trail.status()
        return status.ok and status.writable

    def _queue_gauges(self) -> tuple[int, float]:
        assert self.service is not None
        entries = self.service.store.all()
        oldest = min((e.created for e in entries), default=None)
        return len(entries), (time.time() - oldest) if oldest is not None else 0.0

    def _client_cert_expiries(self) -> dict[str, float]:
        assert self.service is not None
        expiries: dict[str, float] = {}
        for name, connector in self.service.connectors.items():
            not_after = getattr(connector, "client_cert_not_after", None)
            if not_after is None:
                continue
            try:
                expiries[name] = not_after().timestamp()
            except Exception as exc:
                log.warning("client_cert_unreadable", connector=name, error=type(exc).__name__)
        return expiries

    async def refresh_gauges(self) -> None:
        """Feed the metric setters now (the runtime also does it every GAUGE_INTERVAL)."""
        assert self.service is not None
        depth, oldest_age = await asyncio.to_thread(self._queue_gauges)
        self.metrics.set_queue_depth(depth)
        self.metrics.set_oldest_age(oldest_age)
        self.metrics.set_lockdown(self.service.queue.lockdown)
        for name, ts in (await asyncio.to_thread(self._client_cert_expiries)).items():
            self.metrics.set_client_cert_expiry(name, ts)

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.metrics.flush()

    async def _update_gauges(self) -> None:
        while True:
            try:
                await self.refresh_gauges()
            except Exception as exc:
                log.warning("metric_gauges_failed", error=type(exc).__name__)
            await asyncio.sleep(GAUGE_INTERVAL)

    # --- roster reload --------------------------------------------------------------

    async def reload_roster(self) -> bool:
        """Compile an engine for the roster on disk and swap it in. False (old engine
        kept) if the roster cannot be read or compiled."""
        try:
            engine, count = await asyncio.to_thread(self._compile_engine)
        except Exception as exc:
            log.error("roster_reload_failed", error=type(exc).__name__)
            return False
        self.engine = engine
        if self.service is not None:
            self.service.engine = engine
        self.roster_patients = count
        self.roster_reloads += 1
        if self._settle_heap:
            settle_heap()  # the old engine is freed here, the new one frozen
        log.info("roster_reloaded", roster_patients=count)
        return True

    async def _watch_roster(self) -> None:
        path = self.cfg.data_dir / ROSTER_FILE
        while True:
            await asyncio.sleep(ROSTER_POLL_INTERVAL)
            signature = _roster_signature(path)
            if signature == self._roster_signature:
                continue
            self._roster_signature = signature
            await self.reload_roster()

    # --- audit duties ---------------------------------------------------------------

    def _queue_checkpoint_email(self, msg: EmailMessage) -> None:
        """EmailSender for the trail: queue the checkpoint e-mail through the service.

        Never blocks: the trail may call it from the event loop (a checkpoint written by
        an append) or from a thread holding the trail's lock, and queueing emits a
        "queued" event that the trail itself must record; waiting here would deadlock.
        So the enqueue is scheduled on the loop and a failure is logged as an error.
        The checkpoints stay in the trail (`portique audit export` re-exports them)."""
        service, loop = self.service, self._loop
        if service is None or loop is None or loop.is_closed() or not service.started:
            raise RuntimeError("service not running")
        from gateway.routes import find_route

        to = str(msg["To"])
        route = find_route(self.cfg.effective_routes(), to, service.is_mssante)
        copy = NewCopy(
            spool_id="audit-checkpoint",
            route=route.name if route is not None else "notice",
            connector=route.connector if route is not None else service.notice_connector(to),
            mail_from="",
            recipients=(to,),
            data=msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")),
        )

        def schedule() -> None:
            task = loop.create_task(service.queue.enqueue([copy]), name="checkpoint-email")
            self._email_tasks.add(task)
            task.add_done_callback(self._checkpoint_email_queued)

        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            schedule()
        else:
            loop.call_soon_threadsafe(schedule)

    def _checkpoint_email_queued(self, task: asyncio.Task[Any]) -> None:
        self._email_tasks.discard(task)
        if task.cancelled():
            log.error("audit_checkpoint_email_not_queued", error="cancelled")
        elif (exc := task.exception()) is not None:
            log.error("audit_checkpoint_email_not_queued", error=type(exc).__name__)
        else:
            log.info("audit_checkpoint_email_queued")

    def _audit_round(self, *, retention: bool, verify: bool) -> None:
        """One round of audit duties (blocking; runs in a thread)."""
        trail = self.trail
        if trail is None:
            return
        trail.checkpoint_if_due()
        trail.send_checkpoint_email()
        if retention:
            removed = trail.apply_retention()
            if removed:
                log.info("audit_pruned", records=removed)
        if verify:
            result = trail.verify()
            self._last_verify_ok = result.ok
            if result.ok:
                log.info("audit_verified", records=result.records_checked)
            else:
                log.error(
                    "audit_verify_failed",
                    first_bad_record=result.first_bad_record,
                    reason=result.reason,
                )

    async def _audit_duties(self) -> None:
        last_daily = time.monotonic()
        first = True
        while True:
            await asyncio.sleep(AUDIT_TICK)
            now = time.monotonic()
            daily = first or now - last_daily >= DAILY
            try:
                # The first round verifies too: a trail damaged while we were down
                # shows on the metric within a minute, not a day later.
                await asyncio.to_thread(self._audit_round, retention=daily, verify=daily)
            except Exception as exc:
                log.error("audit_duty_failed", error=type(exc).__name__)
            if daily:
                last_daily, first = now, False

    # --- stop -----------------------------------------------------------------------

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.console_runner is not None:
            with contextlib.suppress(Exception):
                await self.console_runner.cleanup()
            self.console_runner = None
        if self.metrics_runner is not None:
            with contextlib.suppress(Exception):
                await self.metrics_runner.cleanup()
            self.metrics_runner = None
        if self._email_tasks:
            await asyncio.gather(*self._email_tasks, return_exceptions=True)
        if self.service is not None:
            await self.service.stop()
        self.metrics.flush()  # what this worker counted, before it goes
        await self._close_stores()
        log.info("runtime_stopped")

    async def _close_stores(self) -> None:
        if self.trail is not None:
            trail, self.trail = self.trail, None
            try:
                await asyncio.to_thread(trail.close)
            except Exception as exc:
                log.error("audit_close_failed", error=type(exc).__name__)
        if self.vault is not None:
            vault, self.vault = self.vault, None
            vault.close()


def describe(runtime: Runtime) -> dict[str, Any]:
    """Where a started runtime listens, for the start-up line (see `start_line`)."""
    service = runtime.service
    assert service is not None and service.smtp is not None
    return {
        "smtp": f"{service.smtp.host}:{service.smtp_port}",
        "metrics": runtime.metrics_address,
        "admin": runtime.console_address,
        "roster_patients": runtime.roster_patients,
    }


def start_line(cfg: Config, described: dict[str, Any], workers: int = 1) -> str:
    """The one line `portique serve` prints once it is ready (tests parse it)."""
    parts = [f"portique: listening on {described['smtp']}"]
    if described.get("metrics"):
        parts.append(f"metrics on {described['metrics']}")
    if described.get("admin"):
        parts.append(f"admin console on https://{described['admin']}")
    parts.append(f"roster of {described.get('roster_patients', 0)} patients")
    if workers > 1:
        parts.append(f"{workers} workers")
    parts.append(f"data in {cfg.data_dir}")
    return ", ".join(parts)


async def run_until_signalled(
    cfg: Config,
    slot: WorkerSlot | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Start the runtime, say where it listens, run until SIGTERM/SIGINT, stop.

    Alone, it prints the start-up line; a worker (`slot`) hands the same facts to
    `on_ready` instead (the supervisor prints one line for all workers)."""
    import signal

    runtime = Runtime(cfg, slot, settle_heap=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    if on_ready is not None:
        on_ready(describe(runtime))
    else:
        print(start_line(cfg, describe(runtime)), flush=True)
    await stop.wait()
    await runtime.stop()
    return 0
