"""Audit trail and metrics benchmark (issue 6): prints records/s and latencies.

Rows:
- append: durable appends, one caller at a time (one fsync'd SQLite transaction
  each) of a typical `decided` record; a message makes about 4 records (received,
  decided, queued, delivery), so the relay's 10 msg/s sustained target needs ~40
  records/s;
- append x8 threads: the same from 8 concurrent threads, each waiting for its own
  record: the group-commit writer shares one transaction and one fsync per batch;
- emit on loop: what the service does (issue 7): `emit` from 20 coroutines returns
  without waiting, and each awaits `durable()` after its record (one per message);
- verify: full verification (chain, MACs, checkpoint signatures) of the trail;
- search: one console page (50 records) filtered by recipient, with the total count;
- status: the incremental check the dashboard and /readyz make after one append;
- metrics: Metrics.emit of one event (the sink runs inline on the event bus);
- message events: what one relayed message costs in events (issue 7): `received`,
  `decided` and `delivery` through an EventBus wired as `portique serve` wires it
  (log sink at --log-level, the audit trail, metrics, latency), from 20 coroutines
  that each await `durable()` after every event as the service and the queue do.
  Prints the event loop's CPU per message (emits and their awaits) and the whole
  process's (the audit writer thread's encoding, hashing, SQLite and fsync included),
  user + system, as ranges over --repeat runs.

`--quick` runs every row on tiny input (used by a test). Usage:
    .venv/bin/python load-tests/bench_audit.py [--quick] [--records N] [--messages N]
        [--repeat N] [--log-level warning]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crypto.keys import init_keys, load_keys  # noqa: E402
from gateway.audit import AuditTrail  # noqa: E402
from gateway.config import AuditConfig  # noqa: E402
from gateway.events import Event, EventBus, LogSink  # noqa: E402
from gateway.logging import configure_logging  # noqa: E402
from gateway.metrics import Metrics  # noqa: E402
from gateway.runtime import _LatencySink  # noqa: E402

DECIDED = {
    "spool_id": "20261129T0450-abcdef",
    "copy_id": "20261129T0450-abcdef.1",
    "route": "labs",
    "action": "pseudonymise",
    "connector": "relay",
    "verdict": "rewritten",
    "recipients": ["commandes@labo-dupont.fr"],
    "findings": {"nir": 1, "name": 3, "birth_date": 1},
    "digests": ["9f2c4e1a77b0d3e5"] * 5,
    "message_id": "<20261129.1@cabinet-martin.fr>",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny input, for the test")
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=2000, help="for the message events row")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the message events row")
    parser.add_argument("--log-level", default="warning", help="as log_level in portique.toml")
    args = parser.parse_args()
    n = 20 if args.quick else args.records

    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        data_dir = Path(tmp)
        init_keys(data_dir)
        keyring = load_keys(data_dir)
        trail = AuditTrail.open(data_dir, keyring, AuditConfig())
        try:
            t0 = time.perf_counter()
            for _ in range(n):
                trail.append("decided", DECIDED)
            dt = time.perf_counter() - t0
            print(f"append   {n:>7} records  {n / dt:>9.0f} records/s  {dt / n * 1e3:.2f} ms each")

            threads = 8
            per_thread = max(1, n // threads)

            def appender() -> None:
                for _ in range(per_thread):
                    trail.append("decided", DECIDED)

            workers = [threading.Thread(target=appender) for _ in range(threads)]
            t0 = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            dt = time.perf_counter() - t0
            m = per_thread * threads
            print(f"append x{threads} threads {m:>5} records  {m / dt:>9.0f} records/s")

            async def emit_on_loop() -> float:
                async def one_message(count: int) -> float:
                    slowest = 0.0
                    for _ in range(count):
                        t = time.perf_counter()
                        trail.emit(Event("decided", DECIDED))
                        slowest = max(slowest, time.perf_counter() - t)
                        await trail.durable()
                    return slowest

                results = await asyncio.gather(*(one_message(max(1, n // 20)) for _ in range(20)))
                return max(results)

            t0 = time.perf_counter()
            slowest_emit = asyncio.run(emit_on_loop())
            dt = time.perf_counter() - t0
            m = max(1, n // 20) * 20
            print(
                f"emit on loop x20 {m:>6} records  {m / dt:>9.0f} records/s"
                f"  (loop blocked at most {slowest_emit * 1e3:.2f} ms per emit)"
            )

            t0 = time.perf_counter()
            result = trail.verify()
            dt = time.perf_counter() - t0
            assert result.ok, result.reason
            checked = result.records_checked
            print(f"verify   {checked:>7} records  {checked / dt:>9.0f} records/s")

            t0 = time.perf_counter()
            records, total = trail.search(recipient="commandes@labo-dupont.fr", limit=50)
            dt = time.perf_counter() - t0
            print(f"search   {total:>7} matches  {dt * 1e3:>9.1f} ms for a 50-record page")

            trail.append("delivery", {"queue_id": "q1", "status": "delivered"})
            t0 = time.perf_counter()
            assert trail.status().ok
            dt = time.perf_counter() - t0
            print(f"status   after 1 append  {dt * 1e3:>9.2f} ms")
        finally:
            trail.close()

    metrics = Metrics()
    event = Event("decided", DECIDED)
    m = n * 10
    t0 = time.perf_counter()
    for _ in range(m):
        metrics.emit(event)
    dt = time.perf_counter() - t0
    print(f"metrics  {m:>7} events   {m / dt:>9.0f} events/s  {dt / m * 1e6:.1f} us each")

    configure_logging(args.log_level, io.StringIO())
    messages = 40 if args.quick else args.messages
    runs = [message_events(messages) for _ in range(1 if args.quick else args.repeat)]
    loop_us = [loop for loop, _ in runs]
    process_us = [process for _, process in runs]
    print(
        f"message events {messages:>5} messages  loop {_span(loop_us)} us/msg"
        f"  process {_span(process_us)} us/msg  (log level {args.log_level})"
    )
    return 0


def _span(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def message_events(messages: int, sessions: int = 20) -> tuple[float, float]:
    """(event-loop CPU, process CPU) per message, microseconds, for `messages`
    messages' events on a fresh trail (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        data_dir = Path(tmp)
        init_keys(data_dir)
        keyring = load_keys(data_dir)
        trail = AuditTrail.open(
            data_dir,
            keyring,
            AuditConfig(),
            identifies_patient=lambda address: address.endswith("@patient.mssante.fr"),
        )
        metrics = Metrics()
        bus = EventBus()
        bus.subscribe(LogSink(keyring.digest_key))
        bus.subscribe(trail, required=True)
        bus.subscribe(metrics)
        bus.subscribe(_LatencySink(metrics))
        try:
            per_session = max(1, messages // sessions)

            async def session(n: int) -> None:
                for i in range(per_session):
                    await one_message(bus, f"20261129T1020{n:02d}{i:06d}-abcdef")

            async def run() -> float:
                started = time.thread_time()
                await asyncio.gather(*(session(n) for n in range(sessions)))
                return time.thread_time() - started

            asyncio.run(run())  # warm up: labelled metrics, regexes, the writer thread
            cpu0 = _cpu_seconds()
            loop_cpu = asyncio.run(run())
            process_cpu = _cpu_seconds() - cpu0
        finally:
            trail.close()
    done = per_session * sessions
    return loop_cpu / done * 1e6, process_cpu / done * 1e6


async def one_message(bus: EventBus, spool_id: str) -> None:
    """The events of one 2 KB lab order relayed on the fast path, with their waits."""
    bus.emit(
        "received",
        spool_id=spool_id,
        client="127.0.0.1",
        user=None,
        mail_from="cabinet@cabinet-martin.fr",
        recipients=["commandes@labo-dupont.fr"],
        size=2148,
        message_id=f"<{spool_id}@cabinet-martin.fr>",
        identifies_patient=False,
    )
    await bus.durable()  # the 250 waits for "received"
    bus.emit(
        "decided",
        **{**DECIDED, "spool_id": spool_id, "copy_id": f"{spool_id}.0", "reason": ""},
        identifies_patient=False,
    )
    await bus.durable()  # before the copy leaves
    bus.emit(
        "delivery",
        queue_id=f"{spool_id}-d",
        connector="relay",
        destination="labo-dupont.fr",
        status="delivered",
        detail="250 2.0.0 Ok: queued as 4dXyZ1",
        attempt=1,
        recipients=["commandes@labo-dupont.fr"],
        identifies_patient=False,
        latency_s=0.0123,
        age_s=0.051,
        bytes=2300,
    )
    await bus.durable()  # before the fast path forgets the copy


if __name__ == "__main__":
    sys.exit(main())
