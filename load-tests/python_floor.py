"""The Python floor: the least a relay written in Python must do, as a reference row.

What it does per message, and nothing more: an asyncio Protocol (uvloop when installed)
reads the SMTP commands and the DATA, appends the message to a spool file and fsyncs it
(one fsync per event-loop iteration for every message completed in it: group commit)
before its 250, then relays it over one persistent, pipelined connection per process to
the sink. No scanning, no encryption, no audit trail, no queue database, no TLS, no
checks of any kind: it is not a gateway. `compare_postfix.sh --rows floor` runs it
under the same load as the other rows, to tell how much of the distance to Postfix is
the language's and how much is Portique's own work per message. It is never the bar.

A cost ladder: each option adds one of Portique's own components to the floor, so that
its cost per message can be read off the rate (smtp-source in, smtp-sink out):
- `--inbound aiosmtpd`: the SMTP server is aiosmtpd's (what `gateway/smtp.py` builds on)
  instead of the floor's Protocol, as shipped (its MAIL/RCPT addresses read by the email
  package's parser, which Portique's subclass skips for plain `<local@domain>`);
- `--audit`: Portique's audit trail (gateway/audit/trail.py, one per process, in
  SPOOL_DIR/audit-N): a "received" record made durable before the 250, then "decided"
  and "delivery" records, as the service writes them.

Usage: python_floor.py PORT SINK_PORT SPOOL_DIR [--processes N|auto]
           [--inbound protocol|aiosmtpd] [--audit]
Processes share the port with SO_REUSEPORT; SIGTERM stops them all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast


class GroupSpool:
    """Appends messages to one file; one fsync per loop iteration, then their 250s."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._waiting: list[tuple[bytes, asyncio.Future[None]]] = []

    def store(self, data: bytes) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((data, done))
        return done

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        os.write(self._fd, b"".join(data for data, _ in batch))
        os.fsync(self._fd)
        for _, done in batch:
            done.set_result(None)


class Upstream:
    """One connection to the sink, reopened if it closes; MAIL/RCPT/DATA pipelined."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
        await reader.readuntil(b"\r\n")
        writer.write(b"EHLO floor\r\n")
        while (await reader.readuntil(b"\r\n"))[3:4] != b" ":
            pass
        return reader, writer

    async def send(self, sender: bytes, recipients: list[bytes], body: bytes) -> None:
        async with self._lock:
            for attempt in (1, 2):
                if self._reader is None or self._writer is None:
                    self._reader, self._writer = await self._open()
                reader, writer = self._reader, self._writer
                commands = [b"MAIL FROM:" + sender]
                commands += [b"RCPT TO:" + r for r in recipients]
                commands.append(b"DATA")
                try:
                    writer.write(b"\r\n".join(commands) + b"\r\n")
                    for _ in commands:
                        await reader.readuntil(b"\r\n")
                    writer.write(body + b".\r\n")
                    await reader.readuntil(b"\r\n")
                    return
                except (ConnectionError, asyncio.IncompleteReadError):
                    writer.close()
                    self._reader = self._writer = None
                    if attempt == 2:
                        return  # the sink is gone (it exits after its count)


class Relay:
    """What happens to a message once its DATA is in: `accept` before the 250, then
    `forward`. With an audit trail, the records the service would write around them."""

    def __init__(self, spool: GroupSpool, upstream: Upstream, audit: Any = None) -> None:
        self._spool, self._upstream, self._audit = spool, upstream, audit
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        self._event: Any = None
        if audit is not None:  # Portique's packages: imported once, not per record
            from gateway.events import Event

            self._event = Event

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record(self, kind: str, **fields: Any) -> None:
        self._audit.emit(self._event(kind, fields))

    async def accept(self, sender: bytes, recipients: list[bytes], body: bytes) -> None:
        if self._audit is not None:
            self._record(
                "received", spool_id="floor", client="127.0.0.1", mail_from=sender.decode(),
                recipients=[r.decode() for r in recipients], size=len(body),
            )  # fmt: skip
            await self._audit.durable()
        await self._spool.store(body)

    async def forward(self, sender: bytes, recipients: list[bytes], body: bytes) -> None:
        if self._audit is not None:
            self._record(
                "decided", spool_id="floor", copy_id="floor.0", route="labs",
                action="pseudonymise", connector="relay", verdict="rewritten",
                recipients=[r.decode() for r in recipients], findings={"name": 2, "nir": 1},
                digests=["0" * 16, "1" * 16, "2" * 16], reason="",
            )  # fmt: skip
        await self._upstream.send(sender, recipients, body)
        if self._audit is not None:
            self._record(
                "delivery", queue_id="floor", connector="relay", destination="127.0.0.1",
                status="delivered", detail="250 2.0.0 OK", attempt=1,
                recipients=[r.decode() for r in recipients], bytes=len(body),
            )  # fmt: skip


class Session(asyncio.Protocol):
    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._buffer = b""
        self._in_data = False
        self._sender = b""
        self._recipients: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(b"220 floor ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        replies: list[bytes] = []
        while True:
            if self._in_data:
                end = self._buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                body, self._buffer = self._buffer[: end + 2], self._buffer[end + 5 :]
                self._in_data = False
                self._relay.start(self._finish(self._sender, self._recipients, body))
                continue
            end = self._buffer.find(b"\r\n")
            if end < 0:
                break
            line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            verb = line[:4].upper()
            if verb == b"EHLO":
                replies.append(b"250-floor\r\n250 PIPELINING\r\n")
            elif verb == b"MAIL":
                self._sender, self._recipients = line[10:], []
                replies.append(b"250 2.1.0 OK\r\n")
            elif verb == b"RCPT":
                self._recipients.append(line[8:])
                replies.append(b"250 2.1.5 OK\r\n")
            elif verb == b"DATA":
                self._in_data = True
                replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb == b"QUIT":
                self._transport.write(b"".join(replies) + b"221 2.0.0 Bye\r\n")
                self._transport.close()
                return
            else:  # HELO, RSET, NOOP
                replies.append(b"250 OK\r\n")
        if replies:
            self._transport.write(b"".join(replies))

    async def _finish(self, sender: bytes, recipients: list[bytes], body: bytes) -> None:
        await self._relay.accept(sender, recipients, body)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"250 2.0.0 OK queued\r\n")
        await self._relay.forward(sender, recipients, body)


class AiosmtpdHandler:
    """The same relay behind aiosmtpd's SMTP server (`--inbound aiosmtpd`)."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        sender = b"<" + envelope.mail_from.encode() + b">"
        recipients = [b"<" + r.encode() + b">" for r in envelope.rcpt_tos]
        # aiosmtpd hands over the content unstuffed: stuff it again for the next hop.
        body = envelope.original_content.replace(b"\r\n.", b"\r\n..")
        if body.startswith(b"."):
            body = b"." + body
        await self._relay.accept(sender, recipients, body)
        self._relay.start(self._relay.forward(sender, recipients, body))
        return "250 2.0.0 OK queued"


async def serve(sock: socket.socket, options: argparse.Namespace, index: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    audit = None
    if options.audit:
        from crypto.keys import init_keys, load_keys
        from gateway.audit.trail import AuditTrail
        from gateway.config import AuditConfig

        data_dir = Path(options.spool_dir) / f"audit-{index}"
        init_keys(data_dir)
        audit = AuditTrail.open(data_dir, load_keys(data_dir), AuditConfig())
    relay = Relay(
        GroupSpool(f"{options.spool_dir}/spool.{index}"), Upstream(options.sink_port), audit
    )
    if options.inbound == "aiosmtpd":
        from aiosmtpd.smtp import SMTP

        handler = AiosmtpdHandler(relay)
        server = await loop.create_server(lambda: SMTP(handler, decode_data=False), sock=sock)
    else:
        server = await loop.create_server(lambda: Session(relay), sock=sock)
    await stop
    server.close()
    if audit is not None:
        audit.close()


def run_process(options: argparse.Namespace, index: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", options.port))
    sock.listen(256)
    try:
        import uvloop

        uvloop.run(serve(sock, options, index))
    except ImportError:
        asyncio.run(serve(sock, options, index))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("sink_port", type=int)
    parser.add_argument("spool_dir")
    parser.add_argument("--processes", default="1", help="N or auto (one per core)")
    parser.add_argument("--inbound", choices=("protocol", "aiosmtpd"), default="protocol")
    parser.add_argument("--audit", action="store_true")
    options = parser.parse_args()
    if options.audit:  # Portique's packages, from this checkout
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    wanted = options.processes
    processes = (os.cpu_count() or 1) if wanted == "auto" else int(wanted)
    children = []
    for index in range(1, processes):
        pid = os.fork()
        if pid == 0:
            run_process(options, index)
            os._exit(0)
        children.append(pid)
    run_process(options, 0)
    for child in children:
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
