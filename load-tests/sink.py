"""Verifying SMTP sink for load tests: records when each load message arrives and checks
that none of its planted patient values survived.

Trust boundary: input is whatever the gateway under test relays (untrusted bytes). The
sink never prints a planted value: a leak is reported by kind (`name`, `nir`, ...), and
the message is identified by its `X-Load-Id`, which names the patient by pool index.

Invariants:
- An arrival's timestamp is `time.monotonic()` taken when the final dot is received,
  before any checking, so verification cost does not count as gateway latency.
  CLOCK_MONOTONIC is system-wide on Linux, so a sink in another process can be compared
  with the driver's clock.
- Every DATA gets `250` unless the sink was asked to refuse; a message without a valid
  `X-Load-Id` is counted as `unknown`, never dropped silently.

Use it in-process (`VerifyingSink.start()`, as driver.py does by default) or as its own
process, writing one JSON line per arrival:
    python load-tests/sink.py --port 0 --report arrivals.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiosmtpd.smtp import SMTP, Envelope, Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
import messages  # noqa: E402

# Sink-side size limit: the largest kind (5 MB STL) is ~6.8 MB once base64-encoded.
SINK_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Arrival:
    load_id: str  # "" when the message had no X-Load-Id
    arrived: float  # time.monotonic() at the final dot
    size: int  # bytes received
    leaks: tuple[str, ...]  # kinds of planted values found in the decoded message
    recipients: int

    def as_json(self) -> str:
        return json.dumps(
            {
                "id": self.load_id,
                "t": self.arrived,
                "size": self.size,
                "leaks": list(self.leaks),
                "rcpts": self.recipients,
            }
        )


def decoded_content(raw: bytes) -> bytes:
    """Headers plus every part's decoded payload (QP/base64 undone), for leak search."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    chunks = [raw.split(b"\r\n\r\n", 1)[0]]
    for part in msg.walk():
        if part.is_multipart():
            continue
        try:
            payload = part.get_payload(decode=True)
        except Exception:  # a malformed part: search its raw text instead
            payload = None
        if isinstance(payload, bytes):
            chunks.append(payload)
        else:
            raw_payload = part.get_payload()
            if isinstance(raw_payload, str):
                chunks.append(raw_payload.encode("utf-8", "replace"))
    # Header values may be RFC 2047 encoded: decode them too.
    for name, value in msg.items():
        try:
            text = str(email.header.make_header(email.header.decode_header(value)))
        except Exception:  # undecodable encoded-word: the raw header is already searched
            text = ""
        chunks.append(f"{name}: {text}".encode("utf-8", "replace"))
    return b"\n".join(chunks)


def load_id_of(raw: bytes) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line[:10].lower() == b"x-load-id:":
            return line[10:].strip().decode("ascii", "replace")
    return ""


def check_message(raw: bytes, seed: int, kinds: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """(load_id, leaked kinds) for one received message."""
    lid = load_id_of(raw)
    parsed = messages.parse_load_id(lid) if lid else None
    if parsed is None or parsed[2] == messages.FILE_KIND:
        return lid, ()
    return lid, messages.find_leaks(decoded_content(raw), parsed[3], seed, kinds)


@dataclass
class SinkState:
    seed: int = messages.DEFAULT_SEED
    kinds: tuple[str, ...] = messages.CHECKED_KINDS
    arrivals: list[Arrival] = field(default_factory=list)
    on_arrival: Callable[[Arrival], None] | None = None
    # Where received messages are kept for inspection (tests); None keeps nothing.
    keep: dict[str, bytes] | None = None
    refuse_with: str = ""  # e.g. "451 4.3.0 try later" to exercise client error paths


class SinkHandler:
    def __init__(self, state: SinkState) -> None:
        self.state = state

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        arrived = time.monotonic()
        if self.state.refuse_with:
            return self.state.refuse_with
        raw = envelope.original_content or b""
        lid, leaks = check_message(raw, self.state.seed, self.state.kinds)
        arrival = Arrival(lid, arrived, len(raw), leaks, len(envelope.rcpt_tos))
        self.state.arrivals.append(arrival)
        if self.state.keep is not None:
            self.state.keep[lid or f"unknown-{len(self.state.arrivals)}"] = raw
        if self.state.on_arrival is not None:
            self.state.on_arrival(arrival)
        return "250 2.0.0 Ok: queued"


class VerifyingSink:
    """An aiosmtpd server on the running loop; `port` is set once started."""

    def __init__(
        self,
        state: SinkState | None = None,
        host: str = "127.0.0.1",
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.state = state or SinkState()
        self.tls_context = tls_context
        self.host = host
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self, port: int = 0) -> VerifyingSink:
        loop = asyncio.get_running_loop()
        handler = SinkHandler(self.state)

        def factory() -> SMTP:
            return SMTP(
                handler,
                hostname="sink.load.test",
                data_size_limit=SINK_MAX_MESSAGE_SIZE,
                decode_data=False,
                enable_SMTPUTF8=True,
                loop=loop,
                tls_context=self.tls_context,
            )

        self._server = await loop.create_server(factory, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> VerifyingSink:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


async def serve(args: argparse.Namespace, out: TextIO) -> int:
    kinds = tuple(args.check.split(",")) if args.check else messages.CHECKED_KINDS
    stop = asyncio.Event()
    count = 0

    def record(arrival: Arrival) -> None:
        nonlocal count
        count += 1
        out.write(arrival.as_json() + "\n")
        if args.max_messages and count >= args.max_messages:
            stop.set()

    sink = VerifyingSink(SinkState(seed=args.seed, kinds=kinds, on_arrival=record), args.host)
    await sink.start(args.port)
    print(f"listening {sink.host}:{sink.port}", file=sys.stderr, flush=True)
    if args.port_file:
        write_port_file(Path(args.port_file), sink.port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sink.stop()
    return 0


def write_port_file(path: Path, port: int) -> None:
    """Atomically, so that a script polling for the file never reads it half-written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the bound port here")
    ap.add_argument("--report", help="append one JSON line per arrival (default: stdout)")
    ap.add_argument("--seed", type=int, default=messages.DEFAULT_SEED)
    ap.add_argument("--check", default="", help="kinds to check, e.g. name,nir,phone,email")
    ap.add_argument("--max-messages", type=int, default=0, help="exit after this many")
    args = ap.parse_args(argv)
    if not args.report:
        return asyncio.run(serve(args, sys.stdout))
    with open(args.report, "a", buffering=1) as out:
        return asyncio.run(serve(args, out))


if __name__ == "__main__":
    sys.exit(main())
