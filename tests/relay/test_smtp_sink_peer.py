"""The relay connector against Postfix's own smtp-sink (C), a real peer that announces
PIPELINING and CHUNKING: a small message goes out in one write with its final dot, a
message larger than a slice is streamed in pieces, dot-stuffing is right, and every
message arrives whole over one connection. Needs Debian's postfix (make test installs it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.base import DeliveryItem, Status
from connectors.relay import DATA_SLICE, RelayConnector
from gateway.config import ConnectorConfig
from tests.relay._helpers import message

SMTP_SINK = "/usr/sbin/smtp-sink"


def relay_to(port: int) -> RelayConnector:
    return RelayConnector(
        ConnectorConfig(name="relay", type="relay", host="127.0.0.1", port=port, tls="none")
    )


def item(*recipients: str, data: bytes | None = None) -> DeliveryItem:
    return DeliveryItem(
        queue_id="q1",
        mail_from="dr@practice.test",
        recipients=recipients,
        data=data if data is not None else message(),
    )


@pytest.fixture
def smtp_sink() -> Iterator[tuple[int, Path]]:
    """A running smtp-sink on a free loopback port, dumping each transaction into a dir."""
    if not os.access(SMTP_SINK, os.X_OK):
        pytest.skip("Debian postfix not installed (make test installs it)")
    dump = Path(tempfile.mkdtemp(prefix="smtp-sink-", dir="/tmp"))
    dump.chmod(0o777)  # smtp-sink drops to nobody before writing
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = subprocess.Popen(
        [SMTP_SINK, "-u", "nobody", "-d", f"{dump}/m.", f"127.0.0.1:{port}", "16"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port, dump
    finally:
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(dump, ignore_errors=True)


def dumped_messages(dump: Path) -> list[bytes]:
    return [p.read_bytes() for p in dump.iterdir()]


async def test_small_and_multi_slice_messages_arrive_whole(
    smtp_sink: tuple[int, Path],
) -> None:
    port, dump = smtp_sink
    big_body = "".join(f"ligne {i:07d} du compte rendu\r\n" for i in range(DATA_SLICE // 20))
    messages = [
        message(message_id="<a@practice.test>"),
        message(message_id="<b@practice.test>", body=big_body),
        message(message_id="<c@practice.test>", body=".ligne qui commence par un point\r\n"),
    ]
    assert len(messages[1]) > DATA_SLICE
    relay = relay_to(port)
    try:
        for data in messages:
            result = await relay.deliver(item("lab@lab.test", data=data))
            assert [r.status for r in result.results] == [Status.DELIVERED], result
    finally:
        await relay.close()
    arrived = await asyncio.to_thread(dumped_messages, dump)
    assert len(arrived) == 3
    for data in messages:
        message_id = data.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0]
        (dumped,) = [d for d in arrived if b"Message-ID: " + message_id + b"\n" in d]
        # smtp-sink writes the envelope as X- headers, then the message with dot-stuffing
        # undone, in LF line endings, and a blank line.
        assert b"X-Rcpt-Args: <lab@lab.test>" in dumped
        assert b"X-Mail-Args: <dr@practice.test>\n" in dumped
        assert dumped.endswith(data.replace(b"\r\n", b"\n") + b"\n")
