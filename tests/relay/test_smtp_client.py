"""The relay's own SMTP client (connectors/smtp_client.py) on real loopback sockets.

Two kinds of peer: aiosmtpd (announces PIPELINING, answers each command as it reads
it) and `ScriptedServer`, a small server on asyncio.start_server whose every reply is
scripted. With PIPELINING it withholds the MAIL and RCPT replies until DATA arrives, so
a client that waited for each reply would hang; without it, it records any command
that arrived before the previous reply was sent.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from connectors.base import Status
from connectors.relay import RelayConnector
from connectors.smtp_client import mailbox_path
from gateway.config import ConnectorConfig
from tests import conftest
from tests.conftest import make_pki
from tests.relay._helpers import Sink, SinkHandler, message
from tests.relay.test_smtp_sink_peer import item

OK = b"250 2.0.0 ok\r\n"


@dataclass
class Script:
    pipelining: bool = True
    starttls: ssl.SSLContext | None = None
    # Sent right after "220 ready" to STARTTLS, in the same write (an injection attempt).
    after_starttls_reply: bytes = b""
    auth_login: tuple[str, str] | None = None  # offer only AUTH LOGIN, for these
    greeting: bytes = b"220 scripted.test ESMTP\r\n"
    ehlo: bytes | None = None  # the whole EHLO reply; None: built from the flags
    rcpt: dict[str, bytes] = field(default_factory=dict)  # address -> reply; else OK
    data: bytes | None = None  # reply to DATA; None: 354 if a RCPT was accepted, else 554
    finals: list[bytes] = field(default_factory=list)  # replies to the final dot, in turn
    # (across connections)
    close_after_body: bool = False  # hang up instead of answering the final dot
    close_idle_after: int = 0  # 421 and hang up after this many transactions (0: never)
    silent_after_body: bool = False  # never answer the final dot
    final_delay: float = 0.0  # seconds before answering the final dot


@dataclass
class Command:
    connection: int
    line: bytes
    tls: bool


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.commands: list[Command] = []
        self.bodies: list[bytes] = []  # DATA content as received: dot-stuffed, no final dot
        self.violations: list[bytes] = []  # commands sent before the previous reply
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.sleep(0)

    def lines(self, connection: int | None = None) -> list[bytes]:
        return [
            c.line.rstrip(b"\r\n")
            for c in self.commands
            if connection is None or c.connection == connection
        ]

    def _ehlo(self, tls: bool) -> bytes:
        if self.script.ehlo is not None:
            return self.script.ehlo
        keywords = ["8BITMIME", "SIZE 10240000"]
        if self.script.pipelining:
            keywords.append("PIPELINING")
        if self.script.starttls is not None and not tls:
            keywords.append("STARTTLS")
        if self.script.auth_login is not None:
            keywords.append("AUTH LOGIN")
        lines = ["scripted.test", *keywords]
        return b"".join(
            b"250" + (b" " if i == len(lines) - 1 else b"-") + k.encode() + b"\r\n"
            for i, k in enumerate(lines)
        )

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        self._writers.append(writer)
        try:
            await self._converse(connection, reader, writer)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError):
            pass
        finally:
            writer.transport.abort()

    async def _converse(
        self, connection: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        script = self.script
        lookahead: list[bytes] = []

        async def next_line() -> bytes:
            return lookahead.pop(0) if lookahead else await reader.readuntil(b"\n")

        async def reply(data: bytes) -> None:
            if not script.pipelining:
                # A command already on its way before this reply breaks RFC 5321 4.3.
                try:
                    async with asyncio.timeout(0.02):
                        early = await reader.readuntil(b"\n")
                except TimeoutError:
                    pass
                else:
                    self.violations.append(early)
                    lookahead.append(early)
            writer.write(data)
            await writer.drain()

        writer.write(script.greeting)
        withheld: list[bytes] = []
        accepted = 0
        transactions = 0
        while True:
            line = await next_line()
            tls = writer.get_extra_info("sslcontext") is not None
            self.commands.append(Command(connection, line, tls))
            verb = line[:4].upper()
            if verb == b"EHLO":
                await reply(self._ehlo(tls))
            elif verb == b"HELO":
                await reply(b"250 scripted.test\r\n")
            elif verb == b"STAR" and script.starttls is not None:
                await reply(b"220 2.0.0 ready\r\n" + script.after_starttls_reply)
                if script.after_starttls_reply:
                    await reader.read()  # a client that read on would now be fooled
                    return
                plain_transport = writer.transport
                try:
                    await writer.start_tls(script.starttls)
                except AttributeError:  # Python 3.11, the client refused the handshake
                    writer._transport = plain_transport  # type: ignore[attr-defined]
                    return
            elif verb == b"AUTH" and script.auth_login is not None:
                user, password = script.auth_login
                given_user = base64.b64decode(line.split()[2])
                await reply(b"334 UGFzc3dvcmQ6\r\n")
                given_password = base64.b64decode((await next_line()).strip())
                ok = (given_user, given_password) == (user.encode(), password.encode())
                await reply(b"235 2.7.0 ok\r\n" if ok else b"535 5.7.8 no\r\n")
            elif verb == b"MAIL":
                accepted = 0
                withheld.append(OK)
            elif verb == b"RCPT":
                address = line.split(b":", 1)[1].strip().strip(b"<>").decode()
                answer = script.rcpt.get(address, OK)
                accepted += answer.startswith(b"2")
                withheld.append(answer)
            elif verb == b"DATA":
                answer = script.data or (
                    b"354 go ahead\r\n" if accepted else b"554 5.5.1 no valid recipients\r\n"
                )
                for pending in withheld:  # in pipelining mode, every reply at once
                    writer.write(pending)
                withheld.clear()
                await reply(answer)
                if not answer.startswith(b"354"):
                    continue
                body = bytearray()
                while (piece := await next_line()) != b".\r\n":
                    body += piece
                self.bodies.append(bytes(body))
                if script.close_after_body:
                    return
                if script.silent_after_body:
                    await asyncio.sleep(3600)
                await asyncio.sleep(script.final_delay)
                await reply(script.finals.pop(0) if script.finals else OK)
                transactions += 1
                if transactions == script.close_idle_after:
                    writer.write(b"421 4.4.2 idle too long\r\n")
                    await writer.drain()
                    return
            elif verb == b"RSET":
                await reply(OK)
            elif verb == b"QUIT":
                await reply(b"221 2.0.0 bye\r\n")
                return
            else:
                await reply(b"502 5.5.2 unknown\r\n")
            if withheld and not script.pipelining:
                for pending in withheld:
                    await reply(pending)
                withheld.clear()


def relay_to(port: int, **settings: object) -> RelayConnector:
    options: dict[str, object] = {"host": "127.0.0.1", "tls": "none", **settings}
    return RelayConnector(
        ConnectorConfig(name="relay", type="relay", port=port, **options)  # type: ignore[arg-type]
    )


@asynccontextmanager
async def scripted(
    script: Script, connect: Callable[[int], RelayConnector] | None = None
) -> AsyncIterator[tuple[ScriptedServer, RelayConnector]]:
    """A scripted server and a relay connector to it (tls = none, 5 s timeout by default)."""
    server = await ScriptedServer(script).start()
    relay = connect(server.port) if connect else relay_to(server.port, timeout=5)
    try:
        yield server, relay
    finally:
        await relay.close()
        await server.stop()


def outcome(result: object) -> list[tuple[str, Status, str]]:
    return [(r.recipient, r.status, r.detail) for r in result.results]  # type: ignore[attr-defined]


MIXED = {
    "busy@lab.test": b"450 4.2.1 mailbox busy\r\n",
    "gone@lab.test": b"550 5.1.1 no such user Jeanne Dupont\r\n",
}
MIXED_RECIPIENTS = ("a@lab.test", "busy@lab.test", "gone@lab.test", "b@lab.test")
MIXED_OUTCOME = [
    ("a@lab.test", Status.DELIVERED, "250 from 127.0.0.1"),
    ("busy@lab.test", Status.TEMPFAIL, "450 4.2.1 from 127.0.0.1"),
    ("gone@lab.test", Status.PERMFAIL, "550 5.1.1 from 127.0.0.1"),
    ("b@lab.test", Status.DELIVERED, "250 from 127.0.0.1"),
]


async def test_pipelined_envelope_gets_each_recipient_its_own_reply() -> None:
    """The server answers nothing before DATA: only a pipelining client gets through."""
    async with scripted(Script(rcpt=dict(MIXED))) as (server, relay):
        first = await relay.deliver(item(*MIXED_RECIPIENTS))
        second = await relay.deliver(item("a@lab.test"))
    assert outcome(first) == MIXED_OUTCOME
    assert outcome(second) == [("a@lab.test", Status.DELIVERED, "250 from 127.0.0.1")]
    assert server.connections == 1
    assert server.lines()[1:] == [
        b"MAIL FROM:<dr@practice.test> SIZE=%d" % len(message()),
        *(b"RCPT TO:<%s>" % r.encode() for r in MIXED_RECIPIENTS),
        b"DATA",
        b"MAIL FROM:<dr@practice.test> SIZE=%d" % len(message()),
        b"RCPT TO:<a@lab.test>",
        b"DATA",
        b"QUIT",
    ]
    assert server.bodies == [message(), message()]


async def test_aiosmtpd_pipelined_mixed_replies_and_final_reply_for_accepted_only() -> None:
    refuse = {k: v.decode().strip() for k, v in MIXED.items()}
    sink = await Sink(SinkHandler(refuse_rcpt=refuse, data_script=["452 4.3.1 full"])).start()
    relay = relay_to(sink.port)
    try:
        full = await relay.deliver(item(*MIXED_RECIPIENTS))
        delivered = await relay.deliver(item(*MIXED_RECIPIENTS))
    finally:
        await relay.close()
        await sink.stop()
    # The DATA reply is for the accepted recipients; the refused keep their RCPT reply.
    assert outcome(full) == [
        ("a@lab.test", Status.TEMPFAIL, "452 4.3.1 from 127.0.0.1"),
        *MIXED_OUTCOME[1:3],
        ("b@lab.test", Status.TEMPFAIL, "452 4.3.1 from 127.0.0.1"),
    ]
    assert outcome(delivered) == MIXED_OUTCOME
    assert [(m.recipients, m.data) for m in sink.messages] == [
        (["a@lab.test", "b@lab.test"], message())
    ]
    assert sink.handler.connections == 1


async def test_without_pipelining_one_command_at_a_time() -> None:
    async with scripted(Script(pipelining=False, rcpt=dict(MIXED))) as (server, relay):
        first = await relay.deliver(item(*MIXED_RECIPIENTS))
        second = await relay.deliver(item("a@lab.test"))
    assert outcome(first) == MIXED_OUTCOME
    assert [r.status for r in second.results] == [Status.DELIVERED]
    assert server.violations == []
    assert server.connections == 1
    assert server.bodies == [message(), message()]


@pytest.mark.parametrize("pipelining", [True, False])
async def test_every_recipient_refused_sends_no_body_and_the_connection_is_reused(
    pipelining: bool,
) -> None:
    async with scripted(Script(pipelining=pipelining, rcpt=dict(MIXED))) as (server, relay):
        refused = await relay.deliver(item("busy@lab.test", "gone@lab.test"))
        delivered = await relay.deliver(item("a@lab.test"))
    assert outcome(refused) == MIXED_OUTCOME[1:3]
    assert [r.status for r in delivered.results] == [Status.DELIVERED]
    assert server.bodies == [message()]
    assert b"RSET" in server.lines()
    assert server.connections == 1


async def test_data_refused_applies_to_accepted_recipients_then_rset_and_reuse() -> None:
    async with scripted(Script(rcpt=dict(MIXED), data=b"554 5.3.4 not today\r\n")) as (
        server,
        relay,
    ):
        refused = await relay.deliver(item("a@lab.test", "gone@lab.test"))
        server.script.data = None
        delivered = await relay.deliver(item("a@lab.test"))
    assert outcome(refused) == [
        ("a@lab.test", Status.PERMFAIL, "554 5.3.4 from 127.0.0.1"),
        ("gone@lab.test", Status.PERMFAIL, "550 5.1.1 from 127.0.0.1"),
    ]
    assert [r.status for r in delivered.results] == [Status.DELIVERED]
    lines = server.lines()
    assert lines[lines.index(b"DATA") + 1] == b"RSET"
    assert server.bodies == [message()] and server.connections == 1


async def test_multi_line_replies_are_read_whole() -> None:
    script = Script(
        greeting=b"220-scripted.test ESMTP\r\n220-second line\r\n220 third\r\n",
        rcpt={"busy@lab.test": b"451-4.7.1 first line\r\n451 4.7.1 second line\r\n"},
        data=b"354-go\r\n354 ahead\r\n",
        finals=[b"250-2.0.0 queued\r\n250-as\r\n250 2.0.0 X1\r\n"],
    )
    async with scripted(script) as (server, relay):
        first = await relay.deliver(item("a@lab.test", "busy@lab.test"))
        second = await relay.deliver(item("a@lab.test"))
    assert outcome(first) == [
        ("a@lab.test", Status.DELIVERED, "250 from 127.0.0.1"),
        ("busy@lab.test", Status.TEMPFAIL, "451 4.7.1 from 127.0.0.1"),
    ]
    assert [r.status for r in second.results] == [Status.DELIVERED]
    assert server.connections == 1


@pytest.mark.parametrize(
    "bad_reply",
    [
        b"250-2.0.0 queued\r\n354 2.0.0 other code\r\n",  # a multi-line reply changing code
        b"2x0 2.0.0 queued\r\n",
        b"250" + b"x" * 9000 + b"\r\n",  # longer than REPLY_LINE_LIMIT
    ],
)
async def test_malformed_reply_is_a_temporary_failure_and_the_connection_is_dropped(
    bad_reply: bytes,
) -> None:
    async with scripted(Script(finals=[bad_reply])) as (server, relay):
        broken = await relay.deliver(item("a@lab.test"))
        fine = await relay.deliver(item("a@lab.test"))
    assert outcome(broken) == [("a@lab.test", Status.TEMPFAIL, "protocol error from 127.0.0.1")]
    assert [r.status for r in fine.results] == [Status.DELIVERED]
    assert server.connections == 2


async def test_server_closing_after_the_body_is_a_temporary_failure_and_not_retried() -> None:
    async with scripted(Script(close_after_body=True)) as (server, relay):
        first = await relay.deliver(item("a@lab.test"))  # fresh connection
        second = await relay.deliver(item("a@lab.test"))  # a new one: the first is gone
        server.script.close_after_body = False
        third = await relay.deliver(item("a@lab.test"))
    assert outcome(first) == [("a@lab.test", Status.TEMPFAIL, "disconnected by 127.0.0.1")]
    assert outcome(second) == outcome(first)
    assert [r.status for r in third.results] == [Status.DELIVERED]
    # One connection each; the lost ones were not tried again at once (the server may
    # have taken the body: the queue retries later).
    assert server.connections == 3 and len(server.bodies) == 3


async def test_421_mid_envelope_fails_the_transaction_and_drops_the_connection() -> None:
    async with scripted(Script(rcpt={"busy@lab.test": b"421 4.3.2 shutting down\r\n"})) as (
        server,
        relay,
    ):
        closing = await relay.deliver(item("a@lab.test", "busy@lab.test"))
        fine = await relay.deliver(item("a@lab.test"))
    assert [(r.status, r.detail) for r in closing.results] == [
        (Status.TEMPFAIL, "421 4.3.2 from 127.0.0.1")
    ] * 2
    assert [r.status for r in fine.results] == [Status.DELIVERED]
    assert server.connections == 2 and server.bodies == [message()]


async def test_idle_connection_dropped_by_the_server_is_replaced_once() -> None:
    """The 421 waits unread in the pooled connection: the MAIL gets it, one fresh try."""
    async with scripted(Script(close_idle_after=1)) as (server, relay):
        first = await relay.deliver(item("a@lab.test"))
        await asyncio.sleep(0.2)  # the server hangs up the idle connection
        second = await relay.deliver(item("a@lab.test"))
    assert [r.status for r in first.results + second.results] == [Status.DELIVERED] * 2
    assert server.connections == 2 and len(server.bodies) == 2


async def test_each_exchange_has_the_whole_timeout_from_its_own_start() -> None:
    """Replies 0.6 s after the final dot, with a 1 s timeout: in time, every time, although
    the second transaction ends more than 1 s after the connection's first command."""
    async with scripted(Script(final_delay=0.6), lambda port: relay_to(port, timeout=1.0)) as (
        server,
        relay,
    ):
        first = await relay.deliver(item("a@lab.test"))
        second = await relay.deliver(item("a@lab.test"))
    assert [r.status for r in first.results + second.results] == [Status.DELIVERED] * 2
    assert server.connections == 1


async def test_silent_server_times_out_and_the_connection_is_not_reused() -> None:
    async with scripted(
        Script(silent_after_body=True), lambda port: relay_to(port, timeout=0.5)
    ) as (server, relay):
        silent = await relay.deliver(item("a@lab.test"))
        server.script.silent_after_body = False
        fine = await relay.deliver(item("a@lab.test"))
    assert outcome(silent) == [("a@lab.test", Status.TEMPFAIL, "timeout talking to 127.0.0.1")]
    assert [r.status for r in fine.results] == [Status.DELIVERED]
    assert server.connections == 2


async def test_ehlo_refused_falls_back_to_helo_without_extensions() -> None:
    async with scripted(Script(pipelining=False, ehlo=b"502 5.5.2 what\r\n")) as (server, relay):
        result = await relay.deliver(item("a@lab.test", "b@lab.test"))
    assert [r.status for r in result.results] == [Status.DELIVERED] * 2
    lines = server.lines()
    assert [line.split()[0] for line in lines[:2]] == [b"EHLO", b"HELO"]
    assert lines[2] == b"MAIL FROM:<dr@practice.test>"  # no SIZE: HELO has no extensions
    assert server.violations == []


async def test_auth_login_when_that_is_all_the_server_offers() -> None:
    server = await ScriptedServer(Script(auth_login=("practice", "s3cret"))).start()
    good = relay_to(server.port, timeout=5, username="practice", password="s3cret")
    bad = relay_to(server.port, timeout=5, username="practice", password="wrong")
    try:
        accepted = await good.deliver(item("a@lab.test"))
        refused = await bad.deliver(item("a@lab.test"))
    finally:
        await good.close()
        await bad.close()
        await server.stop()
    assert [r.status for r in accepted.results] == [Status.DELIVERED]
    assert outcome(refused) == [("a@lab.test", Status.TEMPFAIL, "535 5.7.8 from 127.0.0.1")]
    assert server.bodies == [message()]


async def test_dot_stuffing_and_line_endings_on_the_wire_byte_for_byte() -> None:
    data = (
        b"Subject: points\n\n.first line\r\n..two dots\r\n.\r\nmiddle\rbare CR\n"
        b"line.\r\n.\r\n. space\r\nno final newline"
    )
    wire = (
        b"Subject: points\r\n\r\n..first line\r\n...two dots\r\n..\r\nmiddle\r\nbare CR\r\n"
        b"line.\r\n..\r\n.. space\r\nno final newline\r\n"
    )
    async with scripted(Script()) as (server, relay):
        result = await relay.deliver(item("a@lab.test", data=data))
    assert [r.status for r in result.results] == [Status.DELIVERED]
    assert server.bodies == [wire]


async def test_unwritable_addresses_are_refused_before_anything_is_sent() -> None:
    assert mailbox_path("") == b"<>"
    assert mailbox_path("dr@practice.test") == b"<dr@practice.test>"
    assert mailbox_path('"dr house"@practice.test') == b'<"dr house"@practice.test>'
    assert mailbox_path("médecin@cabinet.test") == "<médecin@cabinet.test>".encode()
    assert mailbox_path('"a\\"b"@c.test') == b'<"a\\"b"@c.test>'
    for smuggling in ("a@b.test> SIZE=1", "a@b.test\r\nRSET", "a b@c.test", '"a\nb"@c.test'):
        with pytest.raises(ValueError):
            mailbox_path(smuggling)
    async with scripted(Script()) as (server, relay):
        result = await relay.deliver(item("ok@lab.test", "x@lab.test\r\nRSET"))
    assert [r.status for r in result.results] == [Status.DELIVERED, Status.PERMFAIL]
    assert b"RSET" not in server.lines()
    assert [line for line in server.lines() if line.startswith(b"RCPT")] == [
        b"RCPT TO:<ok@lab.test>"
    ]


# -- STARTTLS ----------------------------------------------------------------------


def tls_relay(port: int, ca_file: Path) -> RelayConnector:
    return RelayConnector(
        ConnectorConfig(
            name="relay",
            type="relay",
            host="localhost",
            port=port,
            ca_file=str(ca_file),
            timeout=5,
        )
    )


async def test_starttls_verified_then_pipelined_over_tls(pki: conftest.TestPKI) -> None:
    async with scripted(
        Script(starttls=pki.server_context()), lambda port: tls_relay(port, pki.ca_file)
    ) as (server, relay):
        results = [await relay.deliver(item("a@lab.test")) for _ in range(2)]
    assert [r.status for res in results for r in res.results] == [Status.DELIVERED] * 2
    clear = [c.line for c in server.commands if not c.tls]
    assert [line.split()[0] for line in clear] == [b"EHLO", b"STARTTLS"]
    assert server.connections == 1 and server.bodies == [message(), message()]


async def test_starttls_verification_failure_sends_nothing_in_clear(
    pki: conftest.TestPKI, tmp_path: Path
) -> None:
    other_ca = make_pki(tmp_path / "other")
    async with scripted(
        Script(starttls=pki.server_context()), lambda port: tls_relay(port, other_ca.ca_file)
    ) as (server, relay):
        result = await relay.deliver(item("a@lab.test"))
    assert outcome(result) == [("a@lab.test", Status.TEMPFAIL, "TLS failure with localhost")]
    assert [c.line.split()[0] for c in server.commands] == [b"EHLO", b"STARTTLS"]
    assert server.bodies == []


async def test_starttls_not_offered_when_required_sends_nothing_in_clear(
    pki: conftest.TestPKI,
) -> None:
    no_starttls = Script()
    async with scripted(no_starttls, lambda port: tls_relay(port, pki.ca_file)) as (server, relay):
        result = await relay.deliver(item("a@lab.test"))
    assert outcome(result) == [("a@lab.test", Status.TEMPFAIL, "TLS failure with localhost")]
    assert [c.line.split()[0] for c in server.commands] == [b"EHLO"]


async def test_plaintext_injected_after_the_starttls_reply_is_refused(
    pki: conftest.TestPKI,
) -> None:
    injected = b"250-scripted.test\r\n250 AUTH PLAIN\r\n"
    script = Script(starttls=pki.server_context(), after_starttls_reply=injected)
    async with scripted(script, lambda port: tls_relay(port, pki.ca_file)) as (server, relay):
        result = await relay.deliver(item("a@lab.test"))
    assert outcome(result) == [("a@lab.test", Status.TEMPFAIL, "protocol error from localhost")]
    assert [c.line.split()[0] for c in server.commands] == [b"EHLO", b"STARTTLS"]


@pytest.mark.parametrize("offered", [True, False])
async def test_opportunistic_starttls_when_offered_else_plaintext(
    pki: conftest.TestPKI, offered: bool
) -> None:
    script = Script(starttls=pki.server_context() if offered else None)

    def opportunistic(port: int) -> RelayConnector:
        return relay_to(port, tls="starttls-opportunistic", timeout=5)

    async with scripted(script, opportunistic) as (server, relay):
        result = await relay.deliver(item("a@lab.test"))
    assert [r.status for r in result.results] == [Status.DELIVERED]
    mail = next(c for c in server.commands if c.line.startswith(b"MAIL"))
    assert mail.tls == offered
