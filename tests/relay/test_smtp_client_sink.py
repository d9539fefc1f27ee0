"""The relay's SMTP client against Postfix's smtp-sink (C), with and without PIPELINING
(`-p`): many transactions over one reused connection, each message arriving byte for
byte (dot-stuffing undone by the sink, line ends normalised), and the sink's own session
counter showing how many connections were used. Needs Debian's postfix.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.base import DeliveryItem, Status
from connectors.relay import DATA_SLICE, POOL_SIZE, RelayConnector
from gateway.config import ConnectorConfig
from tests.relay._helpers import wait_until

SMTP_SINK = "/usr/sbin/smtp-sink"


@dataclass
class RunningSink:
    port: int
    dump: Path
    counters: Path
    pipelining: bool

    def sessions(self) -> int:
        """Sessions the sink has seen end (its `-c` counters, last update)."""
        updates = re.findall(rb"sess=(\d+)", self.counters.read_bytes())
        return int(updates[-1]) if updates else 0

    def messages(self) -> list[bytes]:
        return [p.read_bytes() for p in self.dump.iterdir()]


def accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def launch_sink(pipelining: bool) -> tuple[subprocess.Popen[bytes], RunningSink]:
    work = Path(tempfile.mkdtemp(prefix="smtp-sink-client-", dir="/tmp"))
    work.chmod(0o755)
    (work / "dump").mkdir()
    (work / "dump").chmod(0o777)  # smtp-sink drops to nobody before writing
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = RunningSink(port, work / "dump", work / "counters", pipelining)
    flags = [] if pipelining else ["-p"]  # -p: do not announce PIPELINING
    with running.counters.open("wb") as out:
        args = ["-u", "nobody", "-c", *flags, "-d", f"{running.dump}/m.", f"127.0.0.1:{port}"]
        process = subprocess.Popen([SMTP_SINK, *args, "16"], stdout=out, stderr=subprocess.DEVNULL)
    return process, running


def stop_sink(process: subprocess.Popen[bytes], running: RunningSink) -> None:
    process.terminate()
    process.wait(10)
    shutil.rmtree(running.dump.parent, ignore_errors=True)


@pytest.fixture(params=[True, False], ids=["pipelining", "no-pipelining"])
async def sink(request: pytest.FixtureRequest) -> AsyncIterator[RunningSink]:
    if not os.access(SMTP_SINK, os.X_OK):
        pytest.skip("Debian postfix not installed (make test installs it)")
    process, running = await asyncio.to_thread(launch_sink, request.param)
    try:
        await wait_until(lambda: accepting(running.port), within=10)
        # That probe was a session of its own: wait until the sink has counted it.
        await wait_until(lambda: running.sessions() == 1, within=10)
        yield running
    finally:
        await asyncio.to_thread(stop_sink, process, running)


def relay_to(port: int) -> RelayConnector:
    return RelayConnector(
        ConnectorConfig(name="relay", type="relay", host="127.0.0.1", port=port, tls="none")
    )


def tricky_message(n: int) -> bytes:
    """Dots at line starts, a lone dot, mixed line ends, no final newline on odd ones."""
    body = (
        f"Subject: commande {n}\r\nMessage-ID: <{n}@practice.test>\r\n\r\n"
        ".premiere ligne\r\n..deux points\r\n.\r\nmilieu\nfin LF seule\n"
        "CR seul\rpuis . au milieu\r\n. espace\r\n"
    ).encode()
    if n % 3 == 2:  # one in three larger than a DATA slice: streamed in pieces
        body += b"".join(b".%07d ligne du compte rendu\r\n" % i for i in range(DATA_SLICE // 20))
    return body if n % 2 == 0 else body + b"derniere ligne sans fin"


def as_dumped(data: bytes) -> bytes:
    """What smtp-sink writes for a message: LF line ends, dots unstuffed, a blank line."""
    text = re.sub(rb"\r\n|\r|\n", b"\n", data)
    return (text if text.endswith(b"\n") else text + b"\n") + b"\n"


def recipients_of(n: int) -> tuple[str, ...]:
    return tuple(f"labo{i}@lab{n}.test" for i in range(1 + n % 3))


async def wait_for_sessions(sink: RunningSink, count: int) -> int:
    await wait_until(lambda: sink.sessions() >= count, within=10)
    return sink.sessions()


async def test_transactions_on_one_reused_connection_arrive_byte_for_byte(
    sink: RunningSink,
) -> None:
    relay = relay_to(sink.port)
    items = [
        DeliveryItem(f"q{n}", "dr@practice.test", recipients_of(n), tricky_message(n))
        for n in range(9)
    ]
    try:
        for item in items:
            result = await relay.deliver(item)
            assert [r.status for r in result.results] == [Status.DELIVERED] * len(
                item.recipients
            ), result
            (pooled,) = relay._pool
            assert pooled.conn.pipelining == sink.pipelining
    finally:
        await relay.close()
    assert await wait_for_sessions(sink, 2) == 2  # the probe, then one for all nine
    arrived = await asyncio.to_thread(sink.messages)
    assert len(arrived) == len(items)
    for item in items:
        marker = b"Message-ID: <%s@practice.test>\n" % item.queue_id[1:].encode()
        (dumped,) = [d for d in arrived if marker in d]
        envelope = dumped.split(b"Received: ", 1)[0]
        assert envelope.endswith(
            b"X-Mail-Args: <dr@practice.test>\n"
            + b"".join(b"X-Rcpt-Args: <%s>\n" % r.encode() for r in item.recipients)
        )
        assert dumped.endswith(as_dumped(item.data))


async def test_concurrent_deliveries_share_at_most_the_pool(sink: RunningSink) -> None:
    relay = relay_to(sink.port)
    items = [
        DeliveryItem(f"q{n}", "dr@practice.test", ("labo@lab.test",), tricky_message(2 * n))
        for n in range(4 * POOL_SIZE)
    ]
    try:
        for start in range(0, len(items), POOL_SIZE):
            batch = items[start : start + POOL_SIZE]
            results = await asyncio.gather(*(relay.deliver(i) for i in batch))
            assert [r.status for res in results for r in res.results] == [Status.DELIVERED] * len(
                batch
            )
    finally:
        await relay.close()
    sessions = await wait_for_sessions(sink, 2)
    assert sessions <= 1 + POOL_SIZE
    arrived = await asyncio.to_thread(sink.messages)
    assert len(arrived) == len(items)
    for item in items:  # each has its own Message-ID
        assert [d for d in arrived if d.endswith(as_dumped(item.data))] != []
