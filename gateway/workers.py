"""`workers = N` (or "auto"): one supervisor process and N worker processes.

Why: one process relays ~155 lab orders a second on 2 cores, its event-loop thread
busy and the second core mostly idle (load-tests/README.md, issue 7). Postfix spreads
the same work over several processes; so does this. Measured on the 2-core box with
`load-tests/compare_postfix.sh --rows postfix,pseudonymise --no-verify --workers W`
(2000 lab orders, 20 sessions; the box shared with other work, load 1.4-4.5):
workers = 1 172-226 msg/s over 6 runs, workers = "auto" (2) 198-344 msg/s over 6 runs
(344 vs 207 in back-to-back runs on the quietest minute).

Processes:
- The supervisor (`portique serve` when the config asks for more than one worker) holds
  no key, no patient data and parses nothing from the network, so it has nothing to
  crash on. It takes `<data_dir>/serve.lock` (one gateway per data_dir), reserves the
  SMTP port (a bound, non-listening SO_REUSEPORT socket: port 0 is resolved once, and
  the port stays ours while a worker restarts), starts the workers, prints the start-up
  line once all are ready, restarts a worker that dies (logged, with backoff) and, on
  SIGTERM or SIGINT, stops them all and exits 0.
- Every worker is a whole `Runtime` (gateway/runtime.py): it listens on the SMTP port
  with SO_REUSEPORT (the kernel spreads connections; a worker that is down gets none),
  spools into its own spool directory, runs its own pipeline, fast-path delivery and
  queue scheduler, and reloads the roster itself when the file changes.
- Worker 0 is also the one place for what must exist once: the control socket, the
  admin console, the /metrics endpoint and the audit duties (periodic checkpoints,
  daily verify, retention). They need a live service (queue, quarantine, vault, trail)
  to act on, which only a worker has; keeping them out of the supervisor keeps the
  supervisor trivial, at the price of a few seconds without console or metrics while
  worker 0 restarts.

Shared state and why it is safe:
- Spool: one directory per worker (gateway/spool.py), so an acknowledged message is
  recovered by exactly one process: the restarted worker of that directory.
- Queue, vault, quarantine, audit: SQLite files in WAL mode, every write a
  transaction. Stored queue entries are claimed before delivery (gateway/queue.py),
  so two workers never send the same entry; a worker's claims are released by its
  successor. The audit trail re-reads the chain tail inside its write transaction,
  so records from several workers chain in commit order.
- Lockdown: persisted in queue.db; each worker re-reads it at most LOCKDOWN_REFRESH
  seconds old (gateway/queue.py).
- Metrics: prometheus_client's multiprocess mode, files under
  `<data_dir>/metrics-multiproc/` (emptied at each start); worker 0's /metrics sums
  every worker's counters, those of dead workers included (gateway/metrics.py).

Invariants:
- Worker 0 starts alone first: it creates the keys, TLS certificate and databases
  (first creation of key files is not safe to race); the others start once it is ready.
- Fail closed on start: a worker that exits before it is ready stops the start (every
  worker is stopped, the exit status is that worker's), as one process would.
- A worker that dies later is restarted after RESTART_BACKOFF_FIRST seconds, doubling
  to RESTART_BACKOFF_MAX while it keeps dying within HEALTHY_RUN seconds.
- A worker that hangs is treated as dead: once ready, its event loop writes a heartbeat
  on the status pipe every HEARTBEAT_INTERVAL seconds; after `worker_hang_timeout`
  seconds without one the supervisor logs `worker_hung`, SIGKILLs it and restarts it
  (its acknowledged messages are in its spool directory, recovered by the successor).
- Workers die with the supervisor (PR_SET_PDEATHSIG): no orphan keeps the port.
- With `pin_workers` and no more workers than usable cores, worker N and every thread
  it starts keep to the N-th usable core (`pin_to_core`, before any thread starts).
- Worker 0's /readyz covers every worker: the supervisor rewrites STATUS_FILE each
  second (which workers are up: ready, and a heartbeat within the last 3 seconds), and
  `workers_up` is true only if that file is current and every worker in it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gateway.config import Config, parse_listen
from gateway.errors import ConfigError
from gateway.logging import get_logger
from gateway.metrics import MULTIPROC_ENV

log = get_logger("portique.workers")

# Seconds a new worker may take to be ready: keys, roster, engine compile (~1 s per
# 10,000 patients) and TLS set-up, N workers at once on 2 cores; generous for a
# loaded box, a bound for a stuck one.
START_TIMEOUT = 120.0
# Restart backoff, seconds: a worker crashing at start must not spin the CPU.
RESTART_BACKOFF_FIRST = 1.0
RESTART_BACKOFF_MAX = 30.0
# A worker that ran this long (seconds) before dying starts again with the first backoff.
HEALTHY_RUN = 60.0
# Seconds the supervisor waits for the workers after SIGTERM: their SMTP drain
# (service.SHUTDOWN_GRACE, 10 s), then the audit close; SIGKILL after that.
STOP_TIMEOUT = 40.0
# Seconds between a worker's heartbeats on its status pipe (from its event loop).
HEARTBEAT_INTERVAL = 1.0
# The supervisor's view of its workers, rewritten every HEARTBEAT_INTERVAL seconds for
# worker 0's /readyz: {"written": epoch seconds, "workers": [{"index", "pid", "up"}]}.
STATUS_FILE = "workers.status"
# /readyz counts the status file as current if written less than this long ago (s).
STATUS_FRESH = 5.0
# Where prometheus_client's multiprocess mode keeps each worker's values.
METRICS_DIR = "metrics-multiproc"
LOCK_FILE = "serve.lock"


@dataclass(frozen=True)
class WorkerSlot:
    """Which worker this process is: index `index` of `count` (0 of 1 without workers)."""

    index: int = 0
    count: int = 1

    @property
    def primary(self) -> bool:
        """Worker 0: control socket, console, /metrics, audit duties."""
        return self.index == 0

    @property
    def shared(self) -> bool:
        """Other processes share the data_dir: SO_REUSEPORT, re-read settings."""
        return self.count > 1

    @property
    def spool_subdir(self) -> str:
        return f"w{self.index}" if self.index else ""

    @property
    def claim_owner(self) -> str:
        return f"w{self.index}:{os.getpid()}"

    def owns_stale_claim(self, owner: str) -> bool:
        """Whether this worker releases a queue claim found at its start: those of
        an earlier process in its slot, and (worker 0) of slots that no longer exist."""
        slot, sep, _pid = owner.partition(":")
        if sep and slot == f"w{self.index}":
            return True
        if not self.primary:
            return False
        index = slot[1:] if sep and slot.startswith("w") else ""
        return not (index.isdigit() and int(index) < self.count)

    def orphan_spools(self, data_dir: Path) -> list[Path]:
        """Spool directories of workers beyond `count` (worker 0 adopts them)."""
        if not self.primary:
            return []
        spool = data_dir / "spool"
        if not spool.is_dir():
            return []
        return sorted(
            p
            for p in spool.iterdir()
            if p.is_dir()
            and p.name.startswith("w")
            and p.name[1:].isdigit()
            and int(p.name[1:]) >= self.count
        )


def workers_up(data_dir: Path, count: int) -> bool:
    """Worker 0's /readyz check: the supervisor's status file is current, lists
    `count` workers, and every one of them is up."""
    try:
        status = json.loads((data_dir / STATUS_FILE).read_text())
        workers = status["workers"]
        return (
            time.time() - float(status["written"]) < STATUS_FRESH
            and len(workers) == count
            and all(w["up"] is True for w in workers)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


# --- the worker side ------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerArgs:
    """What the supervisor tells a worker on its command line (`portique serve
    --worker-*`, hidden options)."""

    slot: WorkerSlot
    listen: str  # host:port of the SMTP listener, port resolved by the supervisor
    status_fd: int  # pipe: one JSON line when ready, then closed
    parent: int  # the supervisor's pid


def command_line(config_path: str | None, args: WorkerArgs) -> list[str]:
    """The argv that starts a worker: the same interpreter, `portique serve`."""
    argv = [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"]
    argv.append("serve")
    if config_path is not None:
        argv += ["-c", config_path]
    argv += [
        "--worker-index",
        str(args.slot.index),
        "--worker-count",
        str(args.slot.count),
        "--worker-listen",
        args.listen,
        "--worker-status-fd",
        str(args.status_fd),
        "--worker-parent",
        str(args.parent),
    ]
    return argv


def pin_to_core(slot: WorkerSlot) -> int | None:
    """Keep this worker process, and the threads it will start, to one core: the
    slot's index among the cores this process may use. Returns that core, or None
    (nothing changed) for a single process, more workers than usable cores, or a
    system without sched_setaffinity.

    Why: with the workers free to move, each one's event loop and its audit-writer and
    spool-sync threads were scheduled across both cores of the 2-core box, queued
    behind one another while a core sat idle (the machine 1.65-1.71 of 2 cores busy
    during compare_postfix's pseudonymising row) and carrying the pipeline's working
    set from one core's cache to the other. Pinned, the same row kept 1.90-1.92 cores
    busy and relayed 535-614 msg/s against 467-548 (five alternated pairs, 6,000
    messages each; load-tests/README.md)."""
    if slot.count < 2 or not hasattr(os, "sched_setaffinity"):
        return None
    usable = sorted(os.sched_getaffinity(0))
    if slot.count > len(usable):
        return None
    core = usable[slot.index]
    os.sched_setaffinity(0, {core})
    return core


def die_with_parent(parent: int) -> None:
    """Get SIGTERM (an orderly stop) if the supervisor dies, and exit now if it
    already has (Linux PR_SET_PDEATHSIG; elsewhere only the check)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(1)


class StatusPipe:
    """A worker's line to the supervisor: one JSON line when ready, then an empty line
    every HEARTBEAT_INTERVAL seconds from the event loop for as long as it turns."""

    def __init__(self, status_fd: int) -> None:
        self._fd = status_fd
        self._beating: asyncio.Task[None] | None = None

    def ready(self, described: dict[str, Any]) -> None:
        """The `on_ready` of a worker's runtime (called on its event loop)."""
        os.write(self._fd, json.dumps(described).encode() + b"\n")
        os.set_blocking(self._fd, False)  # a slow reader must never stall the loop
        self._beating = asyncio.get_running_loop().create_task(
            self._beat(), name="worker-heartbeat"
        )

    async def _beat(self) -> None:
        try:
            while True:
                await asyncio.sleep(HEARTBEAT_INTERVAL)
                try:
                    os.write(self._fd, b"\n")
                except BlockingIOError:
                    pass  # the pipe is full: the supervisor is behind, not us
                except OSError:
                    return  # the supervisor is gone (PDEATHSIG stops us anyway)
        finally:
            os.close(self._fd)


# --- the supervisor -------------------------------------------------------------------


class WorkerFailed(Exception):
    """A worker exited before it was ready during the first start."""

    def __init__(self, index: int, returncode: int) -> None:
        super().__init__(f"worker {index} exited with status {returncode}")
        self.index = index
        self.returncode = returncode


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    ready: asyncio.Future[dict[str, Any]] | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # Once ready: the status pipe, read for heartbeats, and when the last one came.
    heartbeats: tuple[asyncio.StreamReader, asyncio.BaseTransport] | None = field(
        default=None, repr=False
    )
    last_beat: float | None = None  # time.monotonic(); None while not ready


class Supervisor:
    """Starts `count` workers, keeps them running, stops them. `await run()`."""

    def __init__(self, cfg: Config, count: int) -> None:
        self.cfg = cfg
        self.count = count
        self.data_dir = cfg.data_dir
        self.metrics_dir = cfg.data_dir / METRICS_DIR
        source = Path(cfg.source)
        self.config_path = str(source) if source.is_file() else None
        self.host, self.port = parse_listen(cfg.smtp.listen)
        self._workers = [_Worker(i) for i in range(count)]
        self._stop = asyncio.Event()
        self._lock: IO[bytes] | None = None
        self._reserved: socket.socket | None = None

    # --- run ------------------------------------------------------------------------

    async def run(self) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._take_lock()
        try:
            self._reserve_port()
            self._reset_metrics_dir()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            described: dict[str, Any] | None = None
            # Worker 0 first: it creates the keys, the TLS certificate and the
            # databases, as one process would (key files are not safe to race on).
            for group in (self._workers[:1], self._workers[1:]):
                for worker in group:
                    worker.ready = loop.create_future()
                    worker.task = asyncio.create_task(
                        self._keep_running(worker), name=f"worker-{worker.index}"
                    )
                try:
                    ready = await self._wait_ready(group)
                except WorkerFailed as exc:
                    log.error("worker_start_failed", worker=exc.index, status=exc.returncode)
                    await self._stop_workers()
                    return exc.returncode if exc.returncode > 0 else 1
                if ready is None:  # stopped while starting
                    return await self._stop_workers()
                described = described or ready[0]
            assert described is not None
            from gateway.runtime import start_line

            described["smtp"] = f"{self.host}:{self.port}"
            # Logged before the start line: whoever waits for the start line on
            # stdout can rely on the pids already being in the log.
            log.info("workers_started", workers=self.count, pids=self.pids())
            status_writer = asyncio.create_task(self._write_status(), name="workers-status")
            print(start_line(self.cfg, described, self.count), flush=True)
            await self._stop.wait()
            status_writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status_writer
            return await self._stop_workers()
        finally:
            if self._reserved is not None:
                self._reserved.close()
            if self._lock is not None:
                self._lock.close()

    def status(self) -> dict[str, Any]:
        """Which workers are up: ready, with a heartbeat in the last 3 intervals."""
        now = time.monotonic()
        return {
            "written": time.time(),
            "workers": [
                {
                    "index": w.index,
                    "pid": w.proc.pid if w.proc is not None else None,
                    "up": w.last_beat is not None and now - w.last_beat < 3 * HEARTBEAT_INTERVAL,
                }
                for w in self._workers
            ],
        }

    async def _write_status(self) -> None:
        path = self.data_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        while True:
            try:
                tmp.write_text(json.dumps(self.status()))
                os.replace(tmp, path)
            except OSError as exc:  # a full disk: /readyz then reports the file stale
                log.warning("workers_status_not_written", error=type(exc).__name__)
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None]

    async def _wait_ready(self, group: list[_Worker]) -> list[dict[str, Any]] | None:
        """What each worker of `group` said when ready; None if asked to stop first.
        Raises WorkerFailed if one exits before it is ready."""
        readies = [w.ready for w in group if w.ready is not None]
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        everyone: asyncio.Future[list[dict[str, Any]]] = asyncio.gather(*readies)
        try:
            done, _ = await asyncio.wait([stop, everyone], return_when=asyncio.FIRST_COMPLETED)
            if everyone in done:
                return [dict(d) for d in everyone.result()]
            return None
        finally:
            stop.cancel()
            if not everyone.done():
                everyone.cancel()
            with contextlib.suppress(asyncio.CancelledError, WorkerFailed):
                await everyone

    def _take_lock(self) -> None:
        fh = open(self.data_dir / LOCK_FILE, "ab")  # noqa: SIM115 - held until run() ends
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise ConfigError(f"data_dir {self.data_dir}: another gateway is running") from None
        self._lock = fh

    def _reserve_port(self) -> None:
        """Bind (not listen) the SMTP address with SO_REUSEPORT: resolves port 0 once
        for every worker and keeps the port while one restarts. A bound socket that
        does not listen gets no connections."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"smtp.listen {self.cfg.smtp.listen}: cannot listen: {os.strerror(exc.errno or 0)}"
            ) from exc
        self._reserved = sock
        self.port = int(sock.getsockname()[1])

    def _reset_metrics_dir(self) -> None:
        """Counters start from zero at each start, as with one process."""
        self.metrics_dir.mkdir(exist_ok=True, mode=0o700)
        for stale in self.metrics_dir.glob("*.db"):
            stale.unlink(missing_ok=True)

    # --- one worker -----------------------------------------------------------------

    async def _keep_running(self, worker: _Worker) -> None:
        backoff = RESTART_BACKOFF_FIRST
        while not self._stop.is_set():
            started = time.monotonic()
            first = worker.ready is not None and not worker.ready.done()
            try:
                proc, described = await self._start(worker)
            except OSError as exc:  # cannot fork or exec now (no memory, no fds)
                log.error("worker_spawn_failed", worker=worker.index, error=type(exc).__name__)
                if first:
                    assert worker.ready is not None
                    worker.ready.set_exception(WorkerFailed(worker.index, 1))
                    return
                await self._pause(backoff)
                backoff = min(2 * backoff, RESTART_BACKOFF_MAX)
                continue
            if described is None:
                returncode = await proc.wait()
                if self._stop.is_set():
                    return
                if first:
                    assert worker.ready is not None
                    worker.ready.set_exception(WorkerFailed(worker.index, returncode))
                    return
            else:
                if first:
                    assert worker.ready is not None
                    worker.ready.set_result(described)
                else:
                    log.info(
                        "worker_restarted",
                        worker=worker.index,
                        pid=proc.pid,
                        restarts=worker.restarts,
                    )
                returncode = await self._watch(worker, proc)
            if self._stop.is_set():
                return
            log.error(
                "worker_exited",
                worker=worker.index,
                pid=proc.pid,
                status=returncode,
                restart_in_s=backoff,
            )
            self._forget(proc.pid)
            if time.monotonic() - started >= HEALTHY_RUN:
                backoff = RESTART_BACKOFF_FIRST
            await self._pause(backoff)
            backoff = min(2 * backoff, RESTART_BACKOFF_MAX)
            worker.restarts += 1

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if asked to stop meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _start(
        self, worker: _Worker
    ) -> tuple[asyncio.subprocess.Process, dict[str, Any] | None]:
        """Spawn the worker and wait for its ready line (None: it exited or hung)."""
        read_end, write_end = os.pipe()
        args = WorkerArgs(
            WorkerSlot(worker.index, self.count),
            f"{self.host}:{self.port}",
            write_end,
            os.getpid(),
        )
        env = {**os.environ, MULTIPROC_ENV: str(self.metrics_dir)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *command_line(self.config_path, args), pass_fds=(write_end,), env=env
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        worker.proc = proc
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb")
        )
        try:
            line = await asyncio.wait_for(reader.readline(), START_TIMEOUT)
        except TimeoutError:
            log.error("worker_start_timeout", worker=worker.index, pid=proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            line = b""
        except BaseException:
            transport.close()
            raise
        try:
            described = json.loads(line) if line else None
        except ValueError:
            described = None
        if not isinstance(described, dict):
            transport.close()
            return proc, None
        worker.heartbeats = (reader, transport)
        worker.last_beat = time.monotonic()
        return proc, described

    async def _watch(self, worker: _Worker, proc: asyncio.subprocess.Process) -> int:
        """Follow a ready worker's heartbeats until it exits; kill it if they stop
        for `worker_hang_timeout` seconds. Returns its exit status."""
        assert worker.heartbeats is not None
        reader, transport = worker.heartbeats
        timeout = self.cfg.worker_hang_timeout
        try:
            while True:
                try:
                    beat = await asyncio.wait_for(reader.readline(), timeout)
                except TimeoutError:
                    log.error("worker_hung", worker=worker.index, pid=proc.pid, silent_s=timeout)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    break
                if not beat:  # the pipe closed: the worker is exiting
                    break
                worker.last_beat = time.monotonic()
        finally:
            transport.close()
            worker.heartbeats = None
            worker.last_beat = None
        return await proc.wait()

    def _forget(self, pid: int) -> None:
        """A dead worker's live gauges leave the sums; its counters stay counted."""
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]

    # --- stop -----------------------------------------------------------------------

    async def _stop_workers(self) -> int:
        """SIGTERM every worker (421 to new sessions, in-flight work finished), wait,
        SIGKILL what is left after STOP_TIMEOUT. 0 if every worker stopped in time."""
        self._stop.set()
        live = [w.proc for w in self._workers if w.proc is not None and w.proc.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        status = 0
        if live:
            _, late = await asyncio.wait(
                [asyncio.create_task(p.wait()) for p in live], timeout=STOP_TIMEOUT
            )
            if late:
                status = 1
                for proc in live:
                    if proc.returncode is None:
                        log.error("worker_stop_timeout", pid=proc.pid)
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                await asyncio.gather(*late, return_exceptions=True)
        tasks = [w.task for w in self._workers if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.info("workers_stopped", workers=self.count)
        return status


def run_supervisor(cfg: Config, count: int) -> int:
    """`portique serve` with more than one worker."""
    return asyncio.run(Supervisor(cfg, count).run())
