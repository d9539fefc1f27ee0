"""`portique serve [-c FILE]`: run the gateway until SIGTERM or SIGINT.

With `workers` above 1 (or "auto" on a multi-core machine) this process is the
supervisor of that many worker processes (gateway/workers.py); each worker is this
same command with the hidden `--worker-*` options.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="run the gateway")
    # Set by the supervisor for its workers only (gateway/workers.py:command_line).
    for name, kind in (
        ("--worker-index", int),
        ("--worker-count", int),
        ("--worker-listen", str),
        ("--worker-status-fd", int),
        ("--worker-parent", int),
    ):
        p.add_argument(name, type=kind, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses

    from gateway.config import load_config
    from gateway.logging import configure_logging

    cfg = load_config(args.config)
    configure_logging(cfg.log_level)
    worker = _worker_args(args)
    if worker is not None:
        from gateway.workers import die_with_parent, pin_to_core

        die_with_parent(worker.parent)
        import structlog

        structlog.contextvars.bind_contextvars(worker=worker.slot.index)
        if cfg.pin_workers:
            # Before any thread starts: threads inherit the process's CPU affinity.
            core = pin_to_core(worker.slot)
            if core is not None:
                structlog.get_logger("portique.workers").info("worker_pinned", core=core)
        cfg = dataclasses.replace(cfg, smtp=dataclasses.replace(cfg.smtp, listen=worker.listen))
    elif cfg.worker_count() > 1:
        from gateway.workers import run_supervisor

        return run_supervisor(cfg, cfg.worker_count())
    _tune_malloc()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    return int(runner(_serve(cfg, worker)))


def _worker_args(args: argparse.Namespace) -> Any:
    """The supervisor's instructions when this process is a worker, else None."""
    if args.worker_index is None:
        return None
    from gateway.workers import WorkerArgs, WorkerSlot

    return WorkerArgs(
        WorkerSlot(args.worker_index, args.worker_count),
        args.worker_listen,
        args.worker_status_fd,
        args.worker_parent,
    )


def _tune_malloc() -> None:
    """glibc: serve buffers of 256 KiB and more from mmap, so that the memory of a large
    message goes back to the system once it is sent (by default the threshold drifts up
    to 32 MiB and freed message buffers stay in the heap as RSS). Linux/glibc only."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        libc.mallopt(m_mmap_threshold, 256 * 1024)
    except (OSError, AttributeError):
        return


async def _serve(cfg: Any, worker: Any) -> int:
    # The whole product (engine, vault, audit, metrics, console): gateway/runtime.py.
    from gateway.runtime import run_until_signalled

    if worker is None:
        return await run_until_signalled(cfg)
    from gateway.workers import StatusPipe

    return await run_until_signalled(cfg, worker.slot, StatusPipe(worker.status_fd).ready)
