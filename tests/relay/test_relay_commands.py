"""The relay connector's MAIL and RCPT commands: plain, quoted and null addresses reach
the peer exactly as given (connectors/smtp_client.py writes them, never rewritten)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from connectors.base import DeliveryItem, Status
from connectors.relay import RelayConnector
from gateway.config import ConnectorConfig
from tests.relay._helpers import Sink, SinkHandler, message


@dataclass
class EnvelopeRecorder(SinkHandler):
    """Keeps each MAIL command's address and options; can refuse the sender."""

    mails: list[tuple[str, list[str]]] = field(default_factory=list)
    refuse_mail: str = ""

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.mails.append((address, list(options)))
        if self.refuse_mail:
            return self.refuse_mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


def relay_to(port: int) -> RelayConnector:
    return RelayConnector(
        ConnectorConfig(name="relay", type="relay", host="127.0.0.1", port=port, tls="none")
    )


def item(sender: str, *recipients: str) -> DeliveryItem:
    return DeliveryItem(queue_id="q1", mail_from=sender, recipients=recipients, data=message())


async def test_plain_quoted_and_null_senders_reach_the_peer_unchanged() -> None:
    recorder = EnvelopeRecorder(refuse_rcpt={"gone@lab.test": "550 5.1.1 no such user"})
    sink = await Sink(recorder).start()
    relay = relay_to(sink.port)
    try:
        plain = await relay.deliver(item("dr@practice.test", "ok@lab.test", "gone@lab.test"))
        quoted = await relay.deliver(item('"dr house"@practice.test', "ok@lab.test"))
        bounce = await relay.deliver(item("", "dr@practice.test"))
    finally:
        await relay.close()
        await sink.stop()
    assert [(r.recipient, r.status) for r in plain.results] == [
        ("ok@lab.test", Status.DELIVERED),
        ("gone@lab.test", Status.PERMFAIL),
    ]
    assert "550 5.1.1" in plain.results[1].detail
    assert [r.status for r in quoted.results + bounce.results] == [Status.DELIVERED] * 2
    # (This sink announces no SIZE, so no options; aiosmtpd reports the null path as "<>".)
    assert recorder.mails == [
        ("dr@practice.test", []),
        ('"dr house"@practice.test', []),
        ("<>", []),
    ]
    assert [(m.mail_from, m.recipients) for m in sink.messages] == [
        ("dr@practice.test", ["ok@lab.test"]),
        ('"dr house"@practice.test', ["ok@lab.test"]),
        ("<>", ["dr@practice.test"]),
    ]
    assert recorder.connections == 1  # all three over one connection


async def test_refused_sender_fails_every_recipient() -> None:
    recorder = EnvelopeRecorder(refuse_mail="550 5.7.1 sender not allowed")
    sink = await Sink(recorder).start()
    relay = relay_to(sink.port)
    try:
        result = await relay.deliver(item("dr@practice.test", "a@lab.test", "b@lab.test"))
    finally:
        await relay.close()
        await sink.stop()
    assert [r.status for r in result.results] == [Status.PERMFAIL, Status.PERMFAIL]
    assert all("550 5.7.1" in r.detail for r in result.results)
    assert sink.messages == []
