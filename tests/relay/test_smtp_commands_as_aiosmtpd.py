"""PortiqueSMTP's command loop, MAIL and RCPT give aiosmtpd's replies, line for line.

Each dialogue is played against two servers sharing one Gate (config, spool, relay
control) on loopback sockets: Portique's session, and the same session with aiosmtpd
1.4.6's own command loop, push, timer, smtp_MAIL and smtp_RCPT put back (which reach
Portique's checks through its hook object, as before Portique answered them itself). The
replies must be identical, byte for byte, including when the line is odd: lower case,
missing colon, spaces, parameters, non-ASCII and 8-bit bytes, overlong lines, commands
out of order. The lines go to both servers alternately, so that aiosmtpd's class-wide
command size limits (raised by each EHLO) are the same for both when read.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import socket
import ssl
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crypto.aead import Sealer
from crypto.keys import init_keys, load_keys
from gateway.smtp import Accepted, Gate, PortiqueSMTP
from gateway.spool import Spool
from tests.relay._helpers import make_config

CLOSED = "<connection closed>"


class AiosmtpdSession(PortiqueSMTP):
    """Portique's session with aiosmtpd's own per-command code: the reference."""

    _init_aiosmtpd = SMTP.__init__
    _serve_commands = SMTP._handle_client
    push = SMTP.push
    _reset_timeout = SMTP._reset_timeout
    _timeout_cb = SMTP._timeout_cb
    smtp_MAIL = SMTP.smtp_MAIL
    smtp_RCPT = SMTP.smtp_RCPT


@dataclass
class ServerPair:
    portique: int
    aiosmtpd: int
    accepted: list[Accepted]
    spool: Spool
    listeners: list[asyncio.AbstractServer]

    async def stop(self) -> None:
        for listener in self.listeners:
            listener.close()
        await self.spool.stop()


def _serve_pair(loop: asyncio.AbstractEventLoop, data_dir: Path, **smtp: object) -> ServerPair:
    """Both servers for one configuration, on `loop` (running in another thread)."""

    async def start() -> ServerPair:
        cfg = make_config(data_dir, 1, smtp=dict(smtp))  # the relay connector is never used
        keys = data_dir / "keys"
        keys.mkdir(parents=True)
        init_keys(keys)
        spool = Spool(data_dir, Sealer(load_keys(keys)), cfg.spool)
        await spool.start()
        accepted: list[Accepted] = []
        gate = Gate(cfg.smtp, spool, accepted.append, None)
        listeners = [
            await loop.create_server(lambda session=session: session(gate), "127.0.0.1", 0)  # type: ignore[misc]
            for session in (PortiqueSMTP, AiosmtpdSession)
        ]
        ports = [listener.sockets[0].getsockname()[1] for listener in listeners]
        return ServerPair(ports[0], ports[1], accepted, spool, listeners)

    return asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerPair]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    root = tmp_path_factory.mktemp("smtp-pairs")
    # "relay": the loopback peer may relay; "closed": it may not (554 for every RCPT);
    # small limits so that SIZE and the recipient limit are reached.
    pairs = {
        "relay": _serve_pair(
            loop, root / "relay", max_recipients=3, max_message_size=20_000, session_timeout=30
        ),
        "closed": _serve_pair(loop, root / "closed", allowed_networks=["10.0.0.0/8"]),
    }
    yield pairs
    for pair in pairs.values():
        asyncio.run_coroutine_threadsafe(pair.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


class Client:
    """A blocking byte-level client: one line out, one whole reply back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.closed = False

    def reply(self) -> str:
        lines = []
        while True:
            line = self._line()
            if line is None:
                self.closed = True
                lines.append(CLOSED)
                break
            lines.append(line.decode("utf-8", "surrogateescape"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        return "\n".join(lines)

    def _line(self) -> bytes | None:
        while b"\r\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def send(self, data: bytes) -> str:
        if self.closed:
            return CLOSED
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True
            return CLOSED
        return self.reply()

    def close(self) -> None:
        self.sock.close()


_QUEUED_ID = re.compile(r"(queued as )\w+")


def transcripts(pair: ServerPair, lines: list[bytes]) -> tuple[list[str], list[str]]:
    """Play `lines` (each with its line end) to both servers, alternately."""
    ours, theirs = Client(pair.portique), Client(pair.aiosmtpd)
    try:
        got = ([ours.reply()], [theirs.reply()])
        for line in lines:
            got[0].append(_QUEUED_ID.sub(r"\1<id>", ours.send(line)))
            got[1].append(_QUEUED_ID.sub(r"\1<id>", theirs.send(line)))
        return got
    finally:
        ours.close()
        theirs.close()


_VERBS = [b"MAIL", b"mail", b"Mail", b"RCPT", b"rcpt", b"EHLO", b"ehlo", b"HELO", b"RSET"]
_VERBS += [b"NOOP", b"VRFY", b"HELP", b"XFOO", b"AUTH", b"STARTTLS", b"M\xc3\xa9L"]
_PIECES = [b"FROM:", b"from:", b"FROM: ", b"FROM :", b"FROM", b"TO:", b"to:", b"TO: ", b"TO"]
_PIECES += [b"<dr@practice.test>", b"<lab@lab.test>", b"<>", b"< a@b.test >", b"a@b.test"]
_PIECES += [b"<@relay.test:a@b.test>", b'<"quoted part"@b.test>', b"<a@b.test", b"<a@>"]
_PIECES += [b"<\xc3\xa9l\xc3\xa8ve@b.test>", b"<\xe9@b.test>", b"<a@b.test> (comment)"]
_PIECES += [b"<a..b@x.test>", b"<a@[127.0.0.1]>", b"<a@b.test>x", b"client.test", b"PLAIN"]
_PIECES += [b" SIZE=100", b" SIZE=", b" SIZE=abc", b" size=1", b" SIZE=99999999", b" SIZE"]
_PIECES += [b" BODY=8BITMIME", b" BODY=7bit", b" body=binarymime", b" BODY", b" SMTPUTF8"]
_PIECES += [b" SMTPUTF8=yes", b" FOO=bar", b" X-Y=z", b" =x", b" SIZE=\xc2\xb2", b" \xff"]
_PIECES += [b" ", b"  ", b"\t", b":", b"\x00", b"\r"]
_ENDS = [b"\r\n", b"\r\n", b"\r\n", b"\n"]

_LINE = st.builds(
    lambda verb, gap, pieces, end: verb + gap + b"".join(pieces) + end,
    st.sampled_from(_VERBS),
    st.sampled_from([b" ", b"", b"  "]),
    st.lists(st.sampled_from(_PIECES), max_size=4),
    st.sampled_from(_ENDS),
)
_ODD_LINE = st.sampled_from(
    [
        b"\r\n",
        b" \r\n",
        b"\xff\r\n",
        b"MAIL FROM:<a@b.test> SIZE=1" + b"0" * 540 + b"\r\n",  # between the two limits
        b"MAIL FROM:<" + b"a" * 600 + b"@b.test>\r\n",
        b"NOOP " + b"x" * 1100 + b"\r\n",  # longer than the reader's line limit
        b"RCPT TO:<" + b"b" * 3000 + b"@b.test>\r\n",
    ]
)
_GREETED = [b"EHLO client.test\r\n", b"HELO client.test\r\n"]


def _dialogue() -> st.SearchStrategy[list[bytes]]:
    start = st.sampled_from([[], [_GREETED[0]], [_GREETED[1]]])
    body = st.lists(st.one_of(_LINE, _LINE, _LINE, _ODD_LINE), min_size=1, max_size=10)
    return st.builds(lambda a, b: a + b, start, body)


def _same(servers: dict[str, ServerPair], config: str, lines: list[bytes]) -> None:
    ours, theirs = transcripts(servers[config], lines)
    assert ours == theirs, "\n".join(
        f"{line!r}: {a!r} / {b!r}"
        for line, a, b in zip([b"<greeting>", *lines], ours, theirs, strict=True)
    )


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config=st.sampled_from(["relay", "closed"]), lines=_dialogue())
@example(config="relay", lines=[b"MAIL FROM:<a@b.test>\r\n"])
@example(config="relay", lines=[b"RCPT TO:<a@b.test>\r\n", b"XFOO\r\n"] + [b"XBAR\r\n"] * 5)
def test_replies_are_aiosmtpd_s(
    servers: dict[str, ServerPair], config: str, lines: list[bytes]
) -> None:
    _same(servers, config, lines)


_EHLO = b"EHLO client.test\r\n"
_FROM = b"MAIL FROM:<dr@practice.test>\r\n"
_TO = b"RCPT TO:<lab@lab.test>\r\n"

CASES: dict[str, list[bytes]] = {
    "mail before ehlo": [b"MAIL FROM:<dr@practice.test>\r\n", _EHLO, _FROM],
    "rcpt before mail": [_EHLO, _TO, _FROM, _TO],
    "nested mail": [_EHLO, _FROM, _FROM, b"MAIL FROM:bad\r\n"],
    "missing colon": [_EHLO, b"MAIL FROM <dr@practice.test>\r\n", b"MAIL <a@b.test>\r\n"],
    "space after colon": [_EHLO, b"MAIL FROM: <dr@practice.test>\r\n", b"RCPT TO: <l@l.test>\r\n"],
    "no argument": [_EHLO, b"MAIL\r\n", b"MAIL \r\n", _FROM, b"RCPT\r\n", b"RCPT TO:\r\n"],
    "lower case": [b"ehlo client.test\r\n", b"mail from:<dr@practice.test>\r\n", b"rcpt to:<a@b.t>\r\n"],
    "size": [_EHLO, b"MAIL FROM:<a@b.test> SIZE=20000\r\n", b"RSET\r\n", b"MAIL FROM:<a@b.test> SIZE=20001\r\n"],
    "size not a number": [_EHLO, b"MAIL FROM:<a@b.test> SIZE=1e3\r\n", b"MAIL FROM:<a@b.test> SIZE=\xc2\xb2\r\n"],
    "body": [_EHLO, b"MAIL FROM:<a@b.test> BODY=8BITMIME\r\n", b"RSET\r\n", b"MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n"],
    "smtputf8": [_EHLO, b"MAIL FROM:<\xc3\xa9@b.test> SMTPUTF8\r\n", b"RCPT TO:<\xc3\xa9@lab.test>\r\n"],
    "smtputf8 value": [_EHLO, b"MAIL FROM:<a@b.test> SMTPUTF8=1\r\n"],
    "unknown parameter": [_EHLO, b"MAIL FROM:<a@b.test> FOO=BAR\r\n", _FROM, b"RCPT TO:<a@b.test> NOTIFY=NEVER\r\n"],
    "parameters after helo": [b"HELO client.test\r\n", b"MAIL FROM:<a@b.test> SIZE=10\r\n", _FROM, b"RCPT TO:<l@l.test> X=1\r\n"],
    "null sender": [_EHLO, b"MAIL FROM:<>\r\n", _TO],
    "source route": [_EHLO, b"MAIL FROM:<@r.test:dr@practice.test>\r\n", b"RCPT TO:<@a.test,@b.test:l@l.test>\r\n"],
    "quoted local part": [_EHLO, b'MAIL FROM:<"dr who"@practice.test>\r\n', b'RCPT TO:<"l l"@l.test>\r\n'],
    "8-bit bytes": [_EHLO, b"MAIL FROM:<\xe9@practice.test>\r\n", _FROM, b"RCPT TO:<\xff@lab.test>\r\n"],
    "no angle brackets": [_EHLO, b"MAIL FROM:dr@practice.test\r\n", b"RCPT TO:lab@lab.test\r\n"],
    "recipient limit": [_EHLO, _FROM] + [b"RCPT TO:<l%d@lab.test>\r\n" % i for i in range(5)],
    "overlong": [_EHLO, b"MAIL FROM:<" + b"a" * 2000 + b"@b.test>\r\n", _FROM],
    "tab separator": [_EHLO, b"MAIL\tFROM:<a@b.test>\r\n", b"MAIL FROM:<a@b.test>\tSIZE=1\r\n"],
    "transaction": [_EHLO, _FROM, _TO, b"DATA\r\n", b"Subject: x\r\n\r\nbody\r\n.\r\n", _FROM, b"QUIT\r\n"],
    "data without recipient": [_EHLO, b"DATA\r\n", _FROM, b"DATA\r\n", b"RSET\r\n", b"NOOP\r\n"],
    "too many bogus commands": [b"XA\r\n", b"XB\r\n", b"XC\r\n", b"XD\r\n", b"XE\r\n", b"NOOP\r\n"],
}  # fmt: skip


@pytest.mark.parametrize("config", ["relay", "closed"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_tricky_cases_get_aiosmtpd_s_replies(
    servers: dict[str, ServerPair], config: str, case: str
) -> None:
    _same(servers, config, CASES[case])


def test_both_servers_accept_the_transaction(servers: dict[str, ServerPair]) -> None:
    """The comparison is not vacuous: a full transaction is accepted by both."""
    pair = servers["relay"]
    before = len(pair.accepted)
    ours, theirs = transcripts(pair, CASES["transaction"])
    assert ours == theirs
    assert ours[4].startswith("354") and ours[5] == "250 2.0.0 OK queued as <id>"
    assert len(pair.accepted) == before + 2


def test_reference_is_aiosmtpd_code() -> None:
    """The reference really runs aiosmtpd's methods, and Portique its own."""
    method: Callable[..., object]
    for name in (
        "_init_aiosmtpd",
        "_serve_commands",
        "smtp_MAIL",
        "smtp_RCPT",
        "push",
        "_reset_timeout",
    ):
        method = getattr(AiosmtpdSession, name)
        assert method.__module__ == "aiosmtpd.smtp"
        assert getattr(PortiqueSMTP, name).__module__ == "gateway.smtp"


class AiosmtpdSetUp(PortiqueSMTP):
    """Portique's session set up by aiosmtpd's own constructor."""

    _init_aiosmtpd = SMTP.__init__


def _comparable(value: object, session: PortiqueSMTP) -> object:
    """An attribute of a new session in a form two sessions can be compared in."""
    if value is session:
        return "<the session>"
    if inspect.ismethod(value):
        return ("method", value.__func__, _comparable(value.__self__, session))
    if isinstance(value, weakref.ref):
        return ("weakref", _comparable(value(), session))
    if isinstance(value, asyncio.StreamReader):
        return ("reader", value._limit)  # type: ignore[attr-defined]
    if isinstance(value, asyncio.Future):
        return ("future", value.done())
    if type(value).__name__ == "_Hooks":
        return ("hooks", _comparable(vars(value), session))
    if isinstance(value, dict):
        return {key: _comparable(item, session) for key, item in value.items()}
    if isinstance(value, tuple):
        return (type(value), *(_comparable(item, session) for item in value))
    return value


@pytest.mark.parametrize("tls", [False, True])
def test_sessions_are_set_up_as_aiosmtpd_sets_them_up(tmp_path: Path, tls: bool) -> None:
    """_init_aiosmtpd sets the attributes aiosmtpd's SMTP.__init__ sets, to the same
    values: the command, AUTH and hook tables, the reader's line limit, the timeout."""
    cfg = make_config(tmp_path, 1, smtp={"session_timeout": 42, "max_line_length": 2000})
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) if tls else None

    async def set_up() -> list[dict[str, object]]:
        gate = Gate(cfg.smtp, Spool.__new__(Spool), lambda accepted: None, context)
        sessions = [PortiqueSMTP(gate), AiosmtpdSetUp(gate)]
        return [_comparable(vars(session), session) for session in sessions]  # type: ignore[misc]

    ours, theirs = asyncio.run(set_up())
    assert ours == theirs
    assert ours["_smtp_methods"]["DATA"][1] is PortiqueSMTP.smtp_DATA  # type: ignore[index]
    assert set(ours["_auth_methods"]) == {"LOGIN", "PLAIN"}  # type: ignore[arg-type]
    assert ours["_timeout_duration"] == 42
