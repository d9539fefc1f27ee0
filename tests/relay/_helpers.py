"""Helpers for relay tests: an aiosmtpd sink on an ephemeral port, configs, clients.

The sink is a real SMTP server on 127.0.0.1 (aiosmtpd), in the test's event loop,
recording exactly the bytes it received; it can be scripted to answer 4xx/5xx.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from gateway.config import Config, parse_config


@dataclass
class Received:
    mail_from: str
    recipients: list[str]
    data: bytes


@dataclass
class SinkHandler:
    # Replies to DATA, used in order; once exhausted, "250 OK".
    data_script: list[str] = field(default_factory=list)
    # Recipients refused at RCPT with this reply.
    refuse_rcpt: dict[str, str] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    attempts: int = 0
    connections: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse_rcpt:
            return self.refuse_rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.attempts += 1
        if self.data_script:
            reply = self.data_script.pop(0)
            if not reply.startswith("250"):
                return reply
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        self.arrived.set()
        return "250 OK"


class Sink:
    def __init__(
        self, handler: SinkHandler | None = None, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.handler = handler or SinkHandler()
        self.tls_context = tls_context
        self.server: asyncio.Server | None = None
        self.port = 0
        self.protocols: list[SMTP] = []

    async def start(self) -> Sink:
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            self.handler.connections += 1
            proto = SMTP(
                self.handler,
                hostname="sink.test",
                tls_context=self.tls_context,
                require_starttls=self.tls_context is not None,
                loop=loop,
                data_size_limit=None,
            )
            self.protocols.append(proto)
            return proto

        self.server = await loop.create_server(factory, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for proto in self.protocols:
            if proto.transport is not None:
                proto.transport.close()
        await asyncio.sleep(0)

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    async def wait_for(self, count: int, within: float = 20.0) -> list[Received]:
        async with asyncio.timeout(within):
            while len(self.handler.messages) < count:
                self.handler.arrived.clear()
                await self.handler.arrived.wait()
        return self.handler.messages


def make_config(
    data_dir: Path,
    sink_port: int | None,
    *,
    routes: Sequence[dict[str, Any]] | None = None,
    smtp: dict[str, Any] | None = None,
    queue: dict[str, Any] | None = None,
    spool: dict[str, Any] | None = None,
    relay: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Config:
    raw: dict[str, Any] = {
        "data_dir": str(data_dir),
        "smtp": {"listen": "127.0.0.1:0", "hostname": "portique.test", **(smtp or {})},
        "queue": {"retry_initial": 0.2, "retry_max": 1.0, "poll_interval": 0.1, **(queue or {})},
        "spool": {"group_commit_window_ms": 1.0, **(spool or {})},
        "connectors": {},
        "routes": list(routes)
        if routes is not None
        else [{"name": "all", "match": ["*"], "action": "deliver", "connector": "relay"}],
    }
    if sink_port is not None:
        raw["connectors"]["relay"] = {
            "host": "127.0.0.1",
            "port": sink_port,
            "tls": "none",
            **(relay or {}),
        }
    raw.update(extra or {})
    return parse_config(raw)


# A lab route that transforms and the practice's own domain delivered as is (where the
# sender's notices go), both through the relay connector.
LAB_AND_PRACTICE_ROUTES = [
    {"name": "labs", "match": ["*@lab.test"], "action": "pseudonymise", "connector": "relay"},
    {"name": "practice", "match": ["*@practice.test"], "action": "deliver", "connector": "relay"},
]


def message(
    subject: str = "Hello", body: str = "Bonjour.\r\n", message_id: str = "<m1@practice.test>"
) -> bytes:
    return (
        f"From: dr@practice.test\r\nTo: lab@lab.test\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\nDate: Sun, 29 Nov 2026 05:00:00 +0000\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


def strip_received(data: bytes) -> bytes:
    """Remove the first header if it is our Received header (with its folded lines)."""
    assert data.startswith(b"Received: "), data[:80]
    lines = data.split(b"\r\n")
    i = 1
    while lines[i].startswith((b"\t", b" ")):
        i += 1
    return b"\r\n".join(lines[i:])


def send_sync(
    port: int,
    data: bytes,
    *,
    sender: str = "dr@practice.test",
    rcpts: Sequence[str] = ("lab@lab.test",),
) -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        return c.sendmail(sender, list(rcpts), data)


class RawClient:
    """A byte-level SMTP client for dialogues smtplib refuses to produce."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def reply(self) -> str:
        lines = []
        async with asyncio.timeout(10):
            while True:
                line = (await self.reader.readline()).decode()
                if not line:
                    break
                lines.append(line.rstrip("\r\n"))
                if len(line) < 4 or line[3] != "-":
                    break
        return "\n".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str) -> str:
        await self.send(line.encode() + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def wait_until(predicate: Any, within: float = 20.0, step: float = 0.02) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling state owned by the code under test
            await asyncio.sleep(step)


class EventLog:
    """An event sink for tests: every event, in order."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [dict(e.fields) for e in self.events if e.kind == kind]


class HeldSyncPass:
    """Seam: the spool's sync pass (run off the loop) waits while held. The pass has
    started by then: the group-commit loop has taken its batch, and commits queued
    after it wait for the next pass."""

    def __init__(self, spool: Any, monkeypatch: Any) -> None:
        self.released = threading.Event()
        self.released.set()
        self.started = 0  # passes that reached the sync thread
        self.finished = 0  # passes that ended there (made durable or failed)
        make_durable = spool._make_durable

        def held_make_durable(*args: Any) -> Any:
            self.started += 1
            self.released.wait(10)
            try:
                return make_durable(*args)
            finally:
                self.finished += 1

        monkeypatch.setattr(spool, "_make_durable", held_make_durable)

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()
