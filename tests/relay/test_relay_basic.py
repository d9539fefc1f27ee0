"""End to end through real sockets: client -> Portique -> aiosmtpd sink."""

from __future__ import annotations

import asyncio

from tests.relay._helpers import message, send_sync, strip_received


async def test_message_arrives_byte_identical_apart_from_received(portique_factory, sink):
    svc = await portique_factory(sink.port)
    data = message(body="Ligne 1\r\n.ligne avec point\r\n\r\nFin.\r\n")
    refused = await asyncio.to_thread(send_sync, svc.smtp_port, data)
    assert refused == {}
    (got,) = await sink.wait_for(1)
    assert got.mail_from == "dr@practice.test"
    assert got.recipients == ["lab@lab.test"]
    assert got.data.startswith(b"Received: from client.test ([127.0.0.1])")
    assert strip_received(got.data) == data
