"""A small outbound SMTP client on asyncio streams, with PIPELINING (RFC 2920).

Written for the relay connector's transaction phase: aiosmtplib's protocol drops a reply
that arrives before the previous one was read, so it cannot pipeline (load-tests/README.md).
This client reads replies from a StreamReader in the order the commands were sent, so
MAIL, every RCPT and DATA go out in one write when the server offers PIPELINING.

Trust boundary: everything the server sends is untrusted. Reply lines are bounded
(`REPLY_LINE_LIMIT` bytes, `REPLY_MAX_LINES` lines); a malformed reply is a protocol error.
Reply text is handed to the caller, who keeps only the code and enhanced status.
Addresses are the caller's, checked so that none can add a parameter or a command.

Invariants:
- The connection's TLS is decided by `open_smtp` alone: implicit TLS, STARTTLS required
  (not offered, refused or failed handshake: an error, nothing but EHLO and STARTTLS
  was sent in clear), STARTTLS when offered, or none. Verification is the SSL context's.
- Plaintext the server sent after its STARTTLS reply is never read as if it came over
  TLS (RFC 3207 section 6 / CVE-2011-0411): the connection is refused instead.
- Any error, timeout or cancellation inside a method leaves the connection `broken`: its
  state is uncertain, so it is closed, never reused. A 421 reply breaks it too (the
  server is closing the channel).
- Each exchange with the server (a command and its reply; the pipelined commands' replies;
  the body and its final reply) must end within `timeout` seconds of its start, else it
  raises TimeoutError. One loop timer per connection enforces that (`_timed`), not one
  per exchange: a timer per exchange was ~2 % of the gateway's instructions per message.
- After `send`, the connection is either broken or ready for the next MAIL (a
  transaction that did not reach the final dot is ended with RSET).
- Passwords never appear in exceptions (AUTH failures carry the server's reply only).
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, Literal, NamedTuple, TypeVar

from gateway.smtp import PLAIN_ADDRESS

# RFC 5321 4.5.3.1.5 allows 512 octets per reply line; real servers send longer EHLO
# lines (long AUTH lists), so allow 16 times that before calling the reply malformed.
REPLY_LINE_LIMIT = 8192
# A multi-line reply longer than this is not an SMTP server talking (EHLO sends ~15).
REPLY_MAX_LINES = 200
# Seconds a polite QUIT may take before the connection is just cut.
QUIT_TIMEOUT = 5.0

TlsMode = Literal["implicit", "starttls", "opportunistic", "none"]
T = TypeVar("T")


class SmtpError(Exception):
    """Base of this client's errors. Messages never contain data sent by the caller."""


class SmtpProtocolError(SmtpError):
    """The server's bytes are not an SMTP reply (or plaintext was injected at STARTTLS)."""


class SmtpTlsUnavailable(SmtpError):
    """TLS was required and the server did not offer STARTTLS."""


class SmtpAuthUnavailable(SmtpError):
    """Credentials are configured and the server offers no AUTH method this client has."""


class SmtpReplyError(SmtpError):
    """An unexpected reply while opening the session (greeting, EHLO/HELO, STARTTLS)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"unexpected reply {reply.code}")
        self.reply = reply


class SmtpAuthError(SmtpReplyError):
    """The server refused the credentials (its reply is kept, never the password)."""


class SmtpConnectionLost(SmtpError):
    """The server closed the connection (or answered 421, its closing reply).

    `after_body` is False when the loss came before the body was sent: the server
    cannot have taken the message (on a reused connection: an idle one it had dropped).
    """

    def __init__(self, *, after_body: bool = False, reply: Reply | None = None) -> None:
        super().__init__("connection lost" if reply is None else f"closing reply {reply.code}")
        self.after_body = after_body
        self.reply = reply


# Replies are NamedTuples, not frozen dataclasses: as immutable, and built (three or
# more per message) with one call instead of an object.__setattr__ per field.
class Reply(NamedTuple):
    code: int
    # The reply's lines without their codes, joined by "\n". Untrusted server text.
    text: str


class TransactionReplies(NamedTuple):
    """What the server answered to one mail transaction, in command order."""

    mail: Reply
    recipients: tuple[Reply, ...]  # one per RCPT; empty if MAIL was refused unpipelined
    data: Reply | None  # the reply to DATA (354 to go on); None if DATA was not sent
    final: Reply | None  # the reply after the final dot; None if no body was sent


def _line_code(line: bytes) -> int:
    code = line[:3]
    if len(line) < 4 or not code.isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
        raise SmtpProtocolError("malformed reply line")
    return int(code)


_ATOM_ADDRESS = re.compile(PLAIN_ADDRESS)
# Never on a command line, quoted or not: they would end it or hide what follows.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Outside a quoted local part, these would end the path or start a new parameter.
_UNSAFE_IN_PATH = re.compile(r'[\s<>"]')
_QUOTED_LOCAL_PART = re.compile(r'^"(?:[^"\\]|\\.)*"(?=@)')


def mailbox_path(address: str) -> bytes:
    """`<address>` as it goes on a MAIL or RCPT line; `<>` for the null sender.

    The address is written as given (UTF-8 for an internationalised one), never
    rewritten: one that cannot go on a command line unchanged (control characters;
    spaces, angle brackets or quotes outside a quoted local part) raises ValueError.
    """
    if not address or address == "<>":
        return b"<>"
    if _ATOM_ADDRESS.fullmatch(address) is None:
        unquoted = _QUOTED_LOCAL_PART.sub("", address, count=1)
        if _CONTROL.search(address) or _UNSAFE_IN_PATH.search(unquoted):
            raise ValueError("address not writable on an SMTP command line")
    return b"<" + address.encode("utf-8") + b">"


class SmtpConnection:
    """One SMTP session, opened by `open_smtp`; not safe for concurrent use."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        helo_name: str,
        timeout: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._helo = helo_name.encode("ascii")
        # Seconds each exchange may take; fixed for the connection's life (see `_timed`).
        self.timeout = timeout
        # Upper-cased EHLO keyword -> its parameters; empty after HELO.
        self.extensions: dict[str, str] = {}
        self.broken = False
        self._loop = asyncio.get_running_loop()
        # Loop time by which the exchange under way must end; None between exchanges.
        self._deadline: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None  # see `_timed`
        self._timed_out = False

    # -- state -----------------------------------------------------------------

    @property
    def tls(self) -> bool:
        return self._writer.get_extra_info("sslcontext") is not None

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    @property
    def usable(self) -> bool:
        """Neither broken nor closed by the server, as far as can be seen without I/O."""
        return not (self.broken or self._writer.is_closing() or self._reader.at_eof())

    def abort(self) -> None:
        """Cut the connection now (no QUIT): for a broken or cancelled session."""
        self.broken = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._writer.transport.abort()

    # -- timeouts --------------------------------------------------------------

    async def _timed(self, exchange: Coroutine[Any, Any, T]) -> T:
        """`await exchange`, or TimeoutError once `timeout` seconds have passed.

        Same outcome as `asyncio.timeout(self.timeout)` around it, for less work: that
        makes, pushes on the loop's heap and cancels a timer per exchange (three per
        message). Here an exchange only sets `_deadline`; the watchdog, armed once, fires
        at the deadline it was armed for and re-arms itself for the current one if that
        is later (then at most once per `timeout` seconds under steady traffic). When a
        deadline passes, the watchdog aborts the transport: the exchange's pending read or
        drain fails at once, and whatever it raises is replaced by TimeoutError. The
        connection is then unusable, as after any timeout.
        """
        deadline = self._loop.time() + self.timeout
        self._deadline = deadline
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(deadline, self._check_deadline)
        try:
            result = await exchange
        except Exception as exc:  # not CancelledError: the watchdog never cancels
            if self._timed_out:
                raise TimeoutError("no reply in time") from exc
            raise
        finally:
            self._deadline = None
        if self._timed_out:  # the deadline passed as the last reply came in
            raise TimeoutError("no reply in time")
        return result

    def _check_deadline(self) -> None:
        """The watchdog: end the exchange under way if its deadline has passed."""
        self._watchdog = None
        deadline = self._deadline
        if deadline is None:  # between exchanges (idle in a pool): stays unarmed
            return
        if self._loop.time() < deadline:  # a later exchange than the one it was armed for
            self._watchdog = self._loop.call_at(deadline, self._check_deadline)
            return
        self._timed_out = True
        self.abort()

    async def quit(self) -> None:
        """QUIT politely if the session is sound, then close; never raises."""
        try:
            async with asyncio.timeout(QUIT_TIMEOUT):
                if self.usable:
                    self._writer.write(b"QUIT\r\n")
                    await self._read_reply()
                self._writer.close()
                await self._writer.wait_closed()
        except (SmtpError, OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self.abort()  # idempotent; releases the transport even after a failed QUIT

    # -- replies ---------------------------------------------------------------

    async def _read_reply(self) -> Reply:
        reader = self._reader
        try:
            line = await reader.readuntil(b"\n")
            code = _line_code(line)
            if line[3:4] != b"-":
                return Reply(code, line[4:].decode("utf-8", "replace").rstrip("\r\n"))
            lines = [line[4:]]
            while True:
                line = await reader.readuntil(b"\n")
                if _line_code(line) != code:
                    raise SmtpProtocolError("multi-line reply changed its code")
                lines.append(line[4:])
                if line[3:4] != b"-":
                    break
                if len(lines) >= REPLY_MAX_LINES:
                    raise SmtpProtocolError("reply too long")
        except asyncio.LimitOverrunError as exc:
            raise SmtpProtocolError("reply line too long") from exc
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise SmtpConnectionLost() from exc
        text = b"\n".join(part.rstrip(b"\r\n") for part in lines)
        return Reply(code, text.decode("utf-8", "replace"))

    async def _command(self, line: bytes) -> Reply:
        self._writer.write(line + b"\r\n")
        reply = await self._timed(self._read_reply())
        if reply.code == 421:
            raise SmtpConnectionLost(reply=reply)
        return reply

    # -- session set-up ----------------------------------------------------------

    async def _greet(self) -> None:
        greeting = await self._timed(self._read_reply())
        if greeting.code != 220:
            raise SmtpReplyError(greeting)
        await self._hello()

    async def _hello(self) -> None:
        reply = await self._command(b"EHLO " + self._helo)
        if reply.code == 250:
            self.extensions = _parse_ehlo(reply.text)
            return
        self.extensions = {}
        reply = await self._command(b"HELO " + self._helo)
        if reply.code != 250:
            raise SmtpReplyError(reply)

    async def _starttls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        reply = await self._command(b"STARTTLS")
        if reply.code != 220:
            raise SmtpReplyError(reply)
        # Anything already buffered was sent in clear after the 220: an injection attempt.
        # (StreamReader has no public look at its buffer; if the private one ever goes
        # away, every STARTTLS fails here rather than the check passing unseen.)
        buffered = getattr(self._reader, "_buffer", None)
        if buffered is None or len(buffered):
            raise SmtpProtocolError("plaintext after the STARTTLS reply")
        plain_transport = self._writer.transport
        try:
            await self._writer.start_tls(
                context, server_hostname=server_hostname, ssl_handshake_timeout=self.timeout
            )
        except AttributeError:
            if self._writer.transport is not None:
                raise
        if self._writer.transport is None:
            # Python 3.11: a peer that hangs up just after the handshake leaves the
            # writer with no transport (and start_tls may raise AttributeError on it);
            # put the old one back so that it can be closed.
            self._writer._transport = plain_transport
            raise SmtpConnectionLost()
        # RFC 3207 4.2: forget what the server said before TLS, and ask again.
        await self._hello()

    async def login(self, username: str, password: str) -> None:
        """AUTH PLAIN, else AUTH LOGIN (as offered); SmtpAuthError if both refuse."""
        try:
            offered = self.extensions.get("AUTH", "").upper().split()
            methods = [m for m in ("PLAIN", "LOGIN") if m in offered]
            if not methods:
                raise SmtpAuthUnavailable("no AUTH PLAIN or LOGIN offered")
            refusal: Reply | None = None
            for method in methods:
                reply = await self._authenticate(method, username, password)
                if reply.code == 235:
                    return
                refusal = reply
            assert refusal is not None
            raise SmtpAuthError(refusal)
        except BaseException:
            self.broken = True
            raise

    async def _authenticate(self, method: str, username: str, password: str) -> Reply:
        user = username.encode("utf-8")
        secret = password.encode("utf-8")
        if method == "PLAIN":
            token = base64.b64encode(b"\0" + user + b"\0" + secret)
            return await self._command(b"AUTH PLAIN " + token)
        reply = await self._command(b"AUTH LOGIN " + base64.b64encode(user))
        if reply.code != 334:
            return reply
        return await self._command(base64.b64encode(secret))

    # -- mail transaction ------------------------------------------------------

    async def send(
        self,
        sender: bytes,
        recipients: Sequence[bytes],
        body: Iterable[bytes],
        *,
        options: Sequence[bytes] = (),
    ) -> TransactionReplies:
        """One mail transaction: MAIL FROM:sender, RCPT TO:each, DATA, body, final dot.

        `sender` and `recipients` are paths from `mailbox_path`. `body` is the message
        in wire form (CRLF line ends, dot-stuffed, ending in CRLF), in slices; the final
        dot is added here. With PIPELINING, MAIL, the RCPTs and DATA go out in one write
        and the body in as few writes as its slices; otherwise one command at a time.
        Raises SmtpConnectionLost (saying whether the body had been sent),
        SmtpProtocolError, TimeoutError or OSError; the connection is then broken.
        """
        mail = b" ".join((b"MAIL FROM:" + sender, *options))
        rcpts = [b"RCPT TO:" + path for path in recipients]
        try:
            if self.pipelining:
                replies = await self._send_pipelined(mail, rcpts, body)
            else:
                replies = await self._send_stepwise(mail, rcpts, body)
            if replies.final is None:
                await self._reset()
            return replies
        except BaseException:
            self.broken = True
            raise

    async def _send_pipelined(
        self, mail: bytes, rcpts: list[bytes], body: Iterable[bytes]
    ) -> TransactionReplies:
        self._writer.write(b"\r\n".join((mail, *rcpts, b"DATA\r\n")))
        replies = await self._timed(self._read_replies(len(rcpts) + 2))
        mail_reply, data_reply = replies[0], replies[-1]
        rcpt_replies = tuple(replies[1:-1])
        if data_reply.code != 354:
            return TransactionReplies(mail_reply, rcpt_replies, data_reply, None)
        accepted = mail_reply.code == 250 and any(r.code in (250, 251) for r in rcpt_replies)
        # RFC 2920 3.1: DATA accepted with no valid recipient: send just the dot.
        final = await self._send_body(body if accepted else ())
        return TransactionReplies(mail_reply, rcpt_replies, data_reply, final)

    async def _read_replies(self, count: int) -> list[Reply]:
        """The replies to `count` pipelined commands; SmtpConnectionLost at a 421."""
        replies: list[Reply] = []
        for _ in range(count):
            reply = await self._read_reply()
            if reply.code == 421:
                raise SmtpConnectionLost(reply=reply)
            replies.append(reply)
        return replies

    async def _send_stepwise(
        self, mail: bytes, rcpts: list[bytes], body: Iterable[bytes]
    ) -> TransactionReplies:
        mail_reply = await self._command(mail)
        if mail_reply.code != 250:
            return TransactionReplies(mail_reply, (), None, None)
        rcpt_replies = tuple([await self._command(rcpt) for rcpt in rcpts])
        if not any(r.code in (250, 251) for r in rcpt_replies):
            return TransactionReplies(mail_reply, rcpt_replies, None, None)
        data = await self._command(b"DATA")
        if data.code != 354:
            return TransactionReplies(mail_reply, rcpt_replies, data, None)
        final = await self._send_body(body)
        return TransactionReplies(mail_reply, rcpt_replies, data, final)

    async def _send_body(self, body: Iterable[bytes]) -> Reply:
        try:
            reply = await self._timed(self._write_body(body))
        except (SmtpConnectionLost, ConnectionError) as exc:
            raise SmtpConnectionLost(after_body=True) from exc
        if reply.code == 421:
            raise SmtpConnectionLost(after_body=True, reply=reply)
        return reply

    async def _write_body(self, body: Iterable[bytes]) -> Reply:
        """Write the body and the final dot, and read the reply."""
        writer = self._writer
        pieces = iter(body)
        first = next(pieces, b"")
        following = next(pieces, None)
        if following is None:
            writer.write(first + b".\r\n")  # the common case: one write
        else:
            writer.write(first)
            writer.write(following)
            await writer.drain()
            for piece in pieces:
                writer.write(piece)
                # Let the socket take it before making the next slice.
                await writer.drain()
            writer.write(b".\r\n")
        return await self._read_reply()

    async def _reset(self) -> None:
        reply = await self._command(b"RSET")
        if reply.code != 250:
            raise SmtpProtocolError("RSET refused")


def is_helo_name(name: str) -> bool:
    """Whether `name` can follow EHLO as it is: ASCII, not empty, no spaces."""
    return bool(name) and name.isascii() and not any(c.isspace() for c in name)


def _parse_ehlo(text: str) -> dict[str, str]:
    extensions: dict[str, str] = {}
    for line in text.split("\n")[1:]:  # the first line is the server's name
        keyword, _, params = line.strip().replace("=", " ", 1).partition(" ")
        if keyword:
            extensions[keyword.upper()] = params.strip()
    return extensions


async def open_smtp(
    host: str,
    port: int,
    *,
    tls: TlsMode,
    tls_context: ssl.SSLContext | None,
    helo_name: str,
    command_timeout: float,
) -> SmtpConnection:
    """Connect, read the greeting, EHLO (HELO if refused) and set up TLS per `tls`.

    Raises OSError (ConnectionRefusedError...), ssl.SSLError (verification included),
    TimeoutError, SmtpTlsUnavailable, SmtpReplyError, SmtpConnectionLost or
    SmtpProtocolError; a connection that fails to open is closed before the raise.
    """
    if tls != "none" and tls_context is None:
        raise ValueError("a TLS mode needs an SSL context")
    if not is_helo_name(helo_name):
        raise ValueError("the EHLO name must be ASCII without spaces")
    implicit = tls == "implicit"
    timeout = command_timeout
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            host,
            port,
            ssl=tls_context if implicit else None,
            server_hostname=host if implicit else None,
            ssl_handshake_timeout=timeout if implicit else None,
            limit=REPLY_LINE_LIMIT,
        )
    conn = SmtpConnection(reader, writer, helo_name=helo_name, timeout=timeout)
    try:
        await conn._greet()
        if tls in ("starttls", "opportunistic") and tls_context is not None:
            if "STARTTLS" in conn.extensions:
                await conn._starttls(tls_context, host)
            elif tls == "starttls":
                raise SmtpTlsUnavailable("STARTTLS not offered")
    except BaseException:
        conn.abort()
        raise
    return conn
