"""SMTP relay connector: delivers to an upstream smarthost (connectors/smtp_client.py).

Trust boundary: the upstream is reached over the network; its replies are untrusted
text and are reduced to their status codes before they reach logs, DSNs or events.

Invariants:
- `tls = "required"` (the default): STARTTLS (or implicit TLS on port 465) with the
  peer certificate verified against the system store or `ca_file`; no plaintext
  fallback, ever. A TLS failure is a temporary failure: the message waits.
- `tls = "starttls-opportunistic"`: STARTTLS when offered, unverified; `tls = "none"`:
  plaintext, which config validation allows only towards loopback hosts.
- Connection reuse: idle, authenticated connections to the upstream are kept and
  reused for the next delivery, at most `POOL_SIZE` of them, each for at most
  `IDLE_REUSE` seconds (servers time out idle clients after a few minutes). A
  connection whose state is uncertain (an error, a timeout, a cancellation, a 421) is
  closed, never reused.
- With PIPELINING offered (RFC 2920), MAIL, the RCPTs and DATA go out in one write.
  Each recipient's result is its RCPT reply if refused, else the reply to DATA or to
  the final dot.
- With `smime_cert` set, the message is S/MIME-encrypted (crypto.smime) before it
  leaves; if encryption fails, nothing is sent (temporary failure).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from connectors.base import DeliveryItem, DeliveryResult, RecipientResult, Status
from connectors.smtp_client import (
    Reply,
    SmtpAuthUnavailable,
    SmtpConnection,
    SmtpConnectionLost,
    SmtpError,
    SmtpProtocolError,
    SmtpReplyError,
    SmtpTlsUnavailable,
    TlsMode,
    TransactionReplies,
    is_helo_name,
    mailbox_path,
    open_smtp,
)
from gateway.config import ConnectorConfig
from gateway.errors import ConfigError
from gateway.logging import get_logger

log = get_logger("portique.connectors.relay")

# Idle connections kept per upstream: one per parallel delivery the queue allows by default.
POOL_SIZE = 4
# Reuse an idle connection only if it has been idle less than this, in seconds
# (RFC 5321 4.5.3.2.7: servers wait at least 5 minutes; many wait far less).
IDLE_REUSE = 20.0
_ACCEPTED = (250, 251)


@dataclass
class _Pooled:
    conn: SmtpConnection
    idle_since: float


def _short(code: int, message: str, host: str) -> str:
    """`550 5.1.1 from host`: the reply code and enhanced status only, never the text."""
    words = message.split(None, 1)
    enhanced = words[0] if words and words[0][:1] in "245" and words[0].count(".") == 2 else ""
    return " ".join(p for p in (str(code), enhanced, f"from {host}") if p)


def _status_for(code: int) -> Status:
    return Status.PERMFAIL if 500 <= code < 600 else Status.TEMPFAIL


def _refusal(reply: Reply, host: str) -> tuple[Status, str]:
    return _status_for(reply.code), _short(reply.code, reply.text, host)


class RelayConnector:
    # item.data may be a bytearray (read-only use here): see gateway/queue.py.
    accepts_buffer = True

    def __init__(self, cfg: ConnectorConfig) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._pool: list[_Pooled] = []
        # Connections out of the pool (delivering) and closes still running: close()
        # finishes both, so a stop never leaves a transport behind.
        self._in_use: set[SmtpConnection] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._helo_name = cfg.helo_name
        self._destination = f"{cfg.host}:{cfg.port}"  # cfg is frozen: formatted once
        self._tls_context_cache: ssl.SSLContext | None = None
        self._smime_cert: bytes | None = None
        if cfg.smime_cert:
            try:
                self._smime_cert = Path(cfg.smime_cert).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"connectors.{cfg.name}.smime_cert: cannot read {cfg.smime_cert}"
                ) from exc

    def destination(self, item: DeliveryItem) -> str:
        return self._destination

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.cfg.tls == "required":
            ctx = ssl.create_default_context(cafile=self.cfg.ca_file or None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            return ctx
        if self.cfg.tls == "starttls-opportunistic":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return None

    def _tls_mode(self) -> TlsMode:
        cfg = self.cfg
        if cfg.tls == "required":
            return "implicit" if cfg.port == 465 else "starttls"
        if cfg.tls == "starttls-opportunistic":
            return "opportunistic"
        return "none"

    async def _local_name(self) -> str:
        """`helo_name`, else this host's FQDN (looked up once, off the event loop)."""
        if not self._helo_name:
            name = await asyncio.to_thread(socket.getfqdn)
            self._helo_name = name if is_helo_name(name) else "localhost"
        return self._helo_name

    async def _connect(self) -> SmtpConnection:
        cfg = self.cfg
        mode = self._tls_mode()
        if mode != "none" and self._tls_context_cache is None:
            # Built once: loading the CA store for every connection is slow.
            self._tls_context_cache = self._tls_context()
        conn = await open_smtp(
            cfg.host,
            cfg.port or 25,
            tls=mode,
            tls_context=self._tls_context_cache if mode != "none" else None,
            helo_name=await self._local_name(),
            command_timeout=cfg.timeout,
        )
        try:
            if cfg.tls == "required" and not conn.tls:
                raise SmtpTlsUnavailable("TLS required but not negotiated")
            if cfg.username:
                await conn.login(cfg.username, cfg.password)
        except BaseException:
            # A refused login (or no TLS, or a cancel): the connection never reaches
            # the pool, so it is closed here, not left to the garbage collector.
            conn.abort()
            raise
        return conn

    async def _connection(self) -> tuple[SmtpConnection, bool]:
        now = time.monotonic()
        while self._pool:
            pooled = self._pool.pop()
            if pooled.conn.usable and now - pooled.idle_since < IDLE_REUSE:
                return pooled.conn, True
            await pooled.conn.quit()
        return await self._connect(), False

    def _release(self, conn: SmtpConnection) -> None:
        self._in_use.discard(conn)
        if conn.usable and len(self._pool) < POOL_SIZE:
            self._pool.append(_Pooled(conn, time.monotonic()))
        elif conn.broken:
            conn.abort()
        else:
            task = asyncio.ensure_future(conn.quit())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def deliver(self, item: DeliveryItem) -> DeliveryResult:
        data = item.data
        if self._smime_cert is not None:
            try:
                from crypto.smime import encrypt_message

                data = encrypt_message(data, self._smime_cert)
            except Exception as exc:
                log.error("smime_encrypt_failed", error=type(exc).__name__)
                return DeliveryResult.all(
                    item.recipients, Status.TEMPFAIL, "S/MIME encryption failed"
                )
        host = self.cfg.host
        try:
            sender = mailbox_path(item.mail_from)
        except ValueError:
            return DeliveryResult.all(item.recipients, Status.PERMFAIL, "sender not writable")
        unwritable: dict[str, RecipientResult] = {}
        paths: list[bytes] = []
        sent: list[str] = []
        for rcpt in item.recipients:
            try:
                paths.append(mailbox_path(rcpt))
                sent.append(rcpt)
            except ValueError:
                unwritable[rcpt] = RecipientResult(rcpt, Status.PERMFAIL, "address not writable")
        if not sent:
            return DeliveryResult(tuple(unwritable.values()))
        for attempt in (1, 2):
            try:
                conn, reused = await self._connection()
            except Exception as exc:  # foreign exceptions never escape a connector
                return DeliveryResult.all(
                    item.recipients, Status.TEMPFAIL, _connect_detail(exc, host)
                )
            self._in_use.add(conn)
            try:
                replies = await conn.send(
                    sender, paths, data_slices(data), options=_mail_options(conn, item, data)
                )
            except asyncio.CancelledError:
                self._in_use.discard(conn)
                conn.abort()  # cut off mid-transaction: the connection cannot be reused
                raise
            except SmtpConnectionLost as exc:
                self._in_use.discard(conn)
                conn.abort()
                if reused and attempt == 1 and not exc.after_body:
                    continue  # the upstream dropped an idle connection: one fresh try
                detail = (
                    f"disconnected by {host}"
                    if exc.reply is None
                    else _short(exc.reply.code, exc.reply.text, host)
                )
                return DeliveryResult.all(item.recipients, Status.TEMPFAIL, detail)
            except Exception as exc:
                self._in_use.discard(conn)
                conn.abort()
                return DeliveryResult.all(
                    item.recipients, Status.TEMPFAIL, _connect_detail(exc, host)
                )
            self._release(conn)
            results = _recipient_results(sent, replies, host)
            return DeliveryResult(tuple(unwritable.get(r) or results[r] for r in item.recipients))
        return DeliveryResult.all(item.recipients, Status.TEMPFAIL, f"disconnected by {host}")

    async def close(self) -> None:
        pool, self._pool = self._pool, []
        for pooled in pool:
            await pooled.conn.quit()
        in_use, self._in_use = self._in_use, set()
        for conn in in_use:
            conn.abort()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _mail_options(conn: SmtpConnection, item: DeliveryItem, data: bytes) -> list[bytes]:
    """SIZE, SMTPUTF8 and BODY=8BITMIME, each only when the server offers it."""
    extensions = conn.extensions
    options: list[bytes] = []
    if "SIZE" in extensions:
        options.append(b"SIZE=%d" % len(data))
    if "SMTPUTF8" in extensions and not (
        item.mail_from.isascii() and all(r.isascii() for r in item.recipients)
    ):
        options.append(b"SMTPUTF8")
    if "8BITMIME" in extensions and not data.isascii():
        options.append(b"BODY=8BITMIME")
    return options


def _recipient_results(
    recipients: list[str], replies: TransactionReplies, host: str
) -> dict[str, RecipientResult]:
    """Refused at RCPT: that reply. Accepted: the reply to DATA or to the final dot."""
    if replies.mail.code != 250:
        status, detail = _refusal(replies.mail, host)
        return {r: RecipientResult(r, status, detail) for r in recipients}
    if replies.final is not None and replies.final.code == 250:
        outcome = (Status.DELIVERED, f"250 from {host}")
    elif replies.final is not None:
        outcome = _refusal(replies.final, host)
    elif replies.data is not None:
        outcome = _refusal(replies.data, host)
    else:  # every recipient refused: DATA was not sent
        outcome = (Status.TEMPFAIL, "no answer")
    results: dict[str, RecipientResult] = {}
    for rcpt, reply in zip(recipients, replies.recipients, strict=True):
        status, detail = outcome if reply.code in _ACCEPTED else _refusal(reply, host)
        results[rcpt] = RecipientResult(rcpt, status, detail)
    return results


# DATA goes out in slices of about this many bytes, each dot-stuffed and CRLF-normalised
# on its own, with flow control in between: the message is never copied whole (a
# sendmail-style client makes several full copies plus a transport buffer).
DATA_SLICE = 256 * 1024
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")


def data_slices(data: bytes) -> Iterator[bytes]:
    """The message as the next hop must see it: CRLF only, dot-stuffed, ending in CRLF."""
    view = memoryview(data)
    start = 0
    size = len(data)
    at_line_start = True
    while start < size:
        end = min(start + DATA_SLICE, size)
        if end < size:
            cut = data.rfind(b"\n", start, end)
            if cut < 0:
                cut = data.find(b"\n", end)
                end = size if cut < 0 else cut + 1
            else:
                end = cut + 1
        # bytes: a message in one slice is used as it is (a slice would copy it).
        piece = data if end - start == size and type(data) is bytes else bytes(view[start:end])
        carriage_returns = piece.count(b"\r")
        if carriage_returns == 0:  # LF only: a plain replace is ~10 times cheaper than the regex
            piece = piece.replace(b"\n", b"\r\n")
        elif not carriage_returns == piece.count(b"\n") == piece.count(b"\r\n"):  # mixed
            piece = _LINE_ENDINGS.sub(b"\r\n", piece)
        stuffed = piece.replace(b"\r\n.", b"\r\n..")
        if at_line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        at_line_start = stuffed.endswith(b"\r\n")
        yield stuffed
        start = end
    if not at_line_start:
        yield b"\r\n"


def _connect_detail(exc: Exception, host: str) -> str:
    """A PHI-free reason for a failure to open a session or to finish a transaction."""
    if not isinstance(exc, SmtpError | OSError | TimeoutError):
        log.error("relay_unexpected_error", error=type(exc).__name__)
    if isinstance(exc, SmtpReplyError):  # SmtpAuthError included: its code, not the text
        return _short(exc.reply.code, exc.reply.text, host)
    if isinstance(exc, TimeoutError):
        return f"timeout talking to {host}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(exc, ssl.SSLError | SmtpTlsUnavailable):
        return f"TLS failure with {host}"
    if isinstance(exc, SmtpAuthUnavailable):
        return f"no usable AUTH method at {host}"
    if isinstance(exc, SmtpConnectionLost):
        return f"disconnected by {host}"
    if isinstance(exc, SmtpProtocolError):
        return f"protocol error from {host}"
    return f"cannot connect to {host}"
