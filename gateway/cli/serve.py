"""`portique serve [-c FILE]`: run the gateway until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="run the gateway")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.config import load_config
    from gateway.logging import configure_logging

    cfg = load_config(args.config)
    configure_logging(cfg.log_level)
    _tune_malloc()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    return int(runner(_serve(cfg)))


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


async def _serve(cfg: Any) -> int:
    # The whole product (engine, vault, audit, metrics, console): gateway/runtime.py.
    from gateway.runtime import run_until_signalled

    return await run_until_signalled(cfg)
