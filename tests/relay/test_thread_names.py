"""Portique's threads carry their names at the OS level (gateway/threads.py), so that
`top -H` and /proc tell the audit writer from the spool's sync thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from crypto.keys import Keyring
from gateway.audit import AuditTrail
from gateway.config import AuditConfig
from gateway.threads import name_os_thread, named_executor
from tests.relay._helpers import message, send_sync


def os_thread_names() -> set[str]:
    return {p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}


def test_a_named_executor_names_its_threads_cut_to_the_kernel_limit() -> None:
    with named_executor(2, "a-rather-long-prefix") as pool:
        name = pool.submit(lambda: Path("/proc/thread-self/comm").read_text().strip()).result()
    assert name == "a-rather-long-prefix_0"[:15]


def test_a_plain_thread_takes_its_python_name() -> None:
    seen: list[str] = []

    def run() -> None:
        name_os_thread()
        seen.append(Path("/proc/thread-self/comm").read_text().strip())

    thread = threading.Thread(target=run, name="audit-test")
    thread.start()
    thread.join()
    assert seen == ["audit-test"]


async def test_the_service_threads_are_named(portique_factory, sink) -> None:
    svc = await portique_factory(sink.port)
    await asyncio.to_thread(send_sync, svc.smtp_port, message())
    await sink.wait_for(1)
    assert "spool-sync_0" in os_thread_names()


def test_the_audit_writer_is_named(data_dir: Path, keyring: Keyring) -> None:
    with AuditTrail.open(data_dir, keyring, AuditConfig()) as trail:
        trail.append("decided", {"route": "lab"})
        assert "audit-writer" in os_thread_names()
