"""SMTP relay connector: delivers to an upstream smarthost with aiosmtplib.

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
  `IDLE_REUSE` seconds (servers time out idle clients after a few minutes).
- With `smime_cert` set, the message is S/MIME-encrypted (crypto.smime) before it
  leaves; if encryption fails, nothing is sent (temporary failure).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib

from connectors.base import DeliveryItem, DeliveryResult, RecipientResult, Status
from gateway.config import ConnectorConfig
from gateway.errors import ConfigError
from gateway.logging import get_logger
from gateway.smtp import PLAIN_ADDRESS

log = get_logger("portique.connectors.relay")

# Idle connections kept per upstream: one per parallel delivery the queue allows by default.
POOL_SIZE = 4
# Reuse an idle connection only if it has been idle less than this, in seconds
# (RFC 5321 4.5.3.2.7: servers wait at least 5 minutes; many wait far less).
IDLE_REUSE = 20.0


@dataclass
class _Pooled:
    client: aiosmtplib.SMTP
    idle_since: float


def _short(code: int, message: str, host: str) -> str:
    """`550 5.1.1 from host`: the reply code and enhanced status only, never the text."""
    words = message.split()
    enhanced = words[0] if words and words[0][:1] in "245" and words[0].count(".") == 2 else ""
    return " ".join(p for p in (str(code), enhanced, f"from {host}") if p)


def _status_for(code: int) -> Status:
    return Status.PERMFAIL if 500 <= code < 600 else Status.TEMPFAIL


class RelayConnector:
    # item.data may be a bytearray (read-only use here): see gateway/queue.py.
    accepts_buffer = True

    def __init__(self, cfg: ConnectorConfig) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self._pool: list[_Pooled] = []
        # Connections out of the pool (delivering) and closes still running: close()
        # finishes both, so a stop never leaves a transport behind.
        self._in_use: set[aiosmtplib.SMTP] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._smime_cert: bytes | None = None
        if cfg.smime_cert:
            try:
                self._smime_cert = Path(cfg.smime_cert).read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"connectors.{cfg.name}.smime_cert: cannot read {cfg.smime_cert}"
                ) from exc

    def destination(self, item: DeliveryItem) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

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

    async def _connect(self) -> aiosmtplib.SMTP:
        cfg = self.cfg
        implicit = cfg.tls == "required" and cfg.port == 465
        if cfg.tls == "required":
            start_tls: bool | None = not implicit
        elif cfg.tls == "starttls-opportunistic":
            start_tls = None
        else:
            start_tls = False
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port or (465 if implicit else 25),
            use_tls=implicit,
            start_tls=start_tls,
            tls_context=self._tls_context(),
            validate_certs=cfg.tls == "required",
            local_hostname=cfg.helo_name or None,
            timeout=cfg.timeout,
        )
        await client.connect()  # closes its own connection when it fails
        try:
            if cfg.tls == "required" and client.get_transport_info("sslcontext") is None:
                raise aiosmtplib.SMTPException("TLS required but not negotiated")
            if cfg.username:
                await client.login(cfg.username, cfg.password)
        except Exception:
            # A refused login (or no TLS): the connection never reaches the pool, so it
            # is closed here, not left to the garbage collector as an open socket.
            await _close_quietly(client)
            raise
        except BaseException:  # cancelled: no QUIT dialogue, just release the transport
            client.close()
            raise
        return client

    async def _client(self) -> tuple[aiosmtplib.SMTP, bool]:
        now = time.monotonic()
        while self._pool:
            pooled = self._pool.pop()
            if pooled.client.is_connected and now - pooled.idle_since < IDLE_REUSE:
                return pooled.client, True
            await _close_quietly(pooled.client)
        return await self._connect(), False

    def _release(self, client: aiosmtplib.SMTP) -> None:
        self._in_use.discard(client)
        if client.is_connected and len(self._pool) < POOL_SIZE:
            self._pool.append(_Pooled(client, time.monotonic()))
        else:
            task = asyncio.ensure_future(_close_quietly(client))
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
        for attempt in (1, 2):
            try:
                client, reused = await self._client()
            except ssl.SSLError:
                return DeliveryResult.all(item.recipients, Status.TEMPFAIL, "TLS failure")
            except aiosmtplib.SMTPAuthenticationError as exc:
                return DeliveryResult.all(
                    item.recipients, Status.TEMPFAIL, _short(exc.code, exc.message, host)
                )
            except (aiosmtplib.SMTPException, OSError) as exc:
                return DeliveryResult.all(
                    item.recipients, Status.TEMPFAIL, _connect_detail(exc, host)
                )
            self._in_use.add(client)
            try:
                errors = await send_streaming(client, item.mail_from, item.recipients, data)
            except asyncio.CancelledError:
                self._in_use.discard(client)
                client.close()  # cut off mid-transaction: the connection cannot be reused
                raise
            except aiosmtplib.SMTPServerDisconnected:
                self._in_use.discard(client)
                await _close_quietly(client)
                if reused and attempt == 1:
                    continue  # the upstream dropped an idle connection: one fresh try
                return DeliveryResult.all(
                    item.recipients, Status.TEMPFAIL, f"disconnected by {host}"
                )
            except aiosmtplib.SMTPRecipientsRefused as exc:
                self._release(client)
                refused = {r.recipient: r for r in exc.recipients}
                return DeliveryResult(
                    tuple(
                        RecipientResult(
                            rcpt,
                            _status_for(refused[rcpt].code) if rcpt in refused else Status.TEMPFAIL,
                            _short(refused[rcpt].code, refused[rcpt].message, host)
                            if rcpt in refused
                            else "no answer",
                        )
                        for rcpt in item.recipients
                    )
                )
            except aiosmtplib.SMTPResponseException as exc:
                await _reset_or_close(client, self)
                return DeliveryResult.all(
                    item.recipients, _status_for(exc.code), _short(exc.code, exc.message, host)
                )
            except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
                self._in_use.discard(client)
                await _close_quietly(client)
                return DeliveryResult.all(
                    item.recipients, Status.TEMPFAIL, _connect_detail(exc, host)
                )
            self._release(client)
            return DeliveryResult(
                tuple(
                    RecipientResult(
                        rcpt,
                        _status_for(errors[rcpt].code) if rcpt in errors else Status.DELIVERED,
                        _short(errors[rcpt].code, errors[rcpt].message, host)
                        if rcpt in errors
                        else f"250 from {host}",
                    )
                    for rcpt in item.recipients
                )
            )
        return DeliveryResult.all(item.recipients, Status.TEMPFAIL, f"disconnected by {host}")

    async def close(self) -> None:
        pool, self._pool = self._pool, []
        for pooled in pool:
            await _close_quietly(pooled.client)
        in_use, self._in_use = self._in_use, set()
        for client in in_use:
            client.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


# DATA goes out in slices of about this many bytes, each dot-stuffed and CRLF-normalised
# on its own, with flow control in between: the message is never copied whole (the
# aiosmtplib sendmail path makes three full copies plus a transport buffer).
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
        piece = _LINE_ENDINGS.sub(b"\r\n", bytes(view[start:end]))
        stuffed = piece.replace(b"\r\n.", b"\r\n..")
        if at_line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        at_line_start = stuffed.endswith(b"\r\n")
        yield stuffed
        start = end
    if not at_line_start:
        yield b"\r\n"


# Written in MAIL/RCPT exactly as aiosmtplib's quote_address would write it
# ("<" + address + ">"), without its parser.
_PLAIN_ADDRESS = re.compile(PLAIN_ADDRESS)


def _plain_path(address: str) -> bytes | None:
    """`<address>` as ASCII bytes for a plain address or the null sender; else None."""
    if not address:
        return b"<>"
    if _PLAIN_ADDRESS.fullmatch(address) is None:
        return None
    return b"<" + address.encode("ascii") + b">"


async def send_streaming(
    client: aiosmtplib.SMTP, sender: str, recipients: tuple[str, ...], data: bytes
) -> dict[str, aiosmtplib.SMTPResponse]:
    """MAIL, RCPT per recipient, then DATA streamed slice by slice; a message that fits
    in one slice goes out in one write with its final dot.

    Returns the refused recipients (like `sendmail`); raises SMTPRecipientsRefused if
    all are refused, SMTPSenderRefused / SMTPDataError on MAIL / DATA refusals.
    (No PIPELINING: aiosmtplib's protocol drops a reply that arrives before the previous
    one was read.)
    """
    options: list[str] = []
    if client.supports_extension("size"):
        options.append(f"SIZE={len(data)}")
    utf8 = not all(a.isascii() for a in (sender, *recipients))
    if utf8 and client.supports_extension("smtputf8"):
        options.append("SMTPUTF8")
    encoding = "utf-8" if utf8 else "ascii"
    refused: dict[str, aiosmtplib.SMTPResponse] = {}
    refusals: list[aiosmtplib.SMTPRecipientRefused] = []
    protocol = client.protocol
    maybe_paths = [_plain_path(a) for a in (sender, *recipients)]
    paths = [p for p in maybe_paths if p is not None]
    if protocol is None or client.is_ehlo_or_helo_needed or len(paths) != len(maybe_paths):
        # aiosmtplib's own commands: EHLO if needed, quoting by email's address parser.
        await client.mail(sender, options=options, encoding=encoding)
        for rcpt in recipients:
            try:
                await client.rcpt(rcpt, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[rcpt] = aiosmtplib.SMTPResponse(exc.code, exc.message)
                refusals.append(exc)
    else:
        # The usual plain addresses: the same commands, without parsing each address
        # again (quote_address was ~5 % of the event loop's time under load).
        timeout = client.timeout
        reply = await protocol.execute_command(
            b"MAIL", b"FROM:" + paths[0], *(o.encode("ascii") for o in options), timeout=timeout
        )
        if reply.code != 250:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
        for rcpt, path in zip(recipients, paths[1:], strict=True):
            reply = await protocol.execute_command(b"RCPT", b"TO:" + path, timeout=timeout)
            if reply.code not in (250, 251):
                refused[rcpt] = reply
                refusals.append(aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, rcpt))
    if len(refused) == len(recipients):
        await client.rset()
        raise aiosmtplib.SMTPRecipientsRefused(refusals)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("connection lost")
    reply = await protocol.execute_command(b"DATA", timeout=client.timeout)
    if reply.code != 354:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    pieces = data_slices(data)
    first = next(pieces, b"")
    following = next(pieces, None)
    if following is None:
        protocol.write(first + b".\r\n")  # the common case: the whole body in one write
    else:
        for piece in itertools.chain((first, following), pieces):
            protocol.write(piece)
            # Wait for the socket to take it before making the next slice (flow control).
            await protocol._drain_helper()
        protocol.write(b".\r\n")
    reply = await protocol.read_response(timeout=client.timeout)
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return refused


def _connect_detail(exc: BaseException, host: str) -> str:
    cause = exc.__cause__
    if isinstance(cause, ConnectionRefusedError | ssl.SSLError):
        exc = cause
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return f"timeout talking to {host}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _short(exc.code, exc.message, host)
    if isinstance(exc, ssl.SSLError) or "TLS" in type(exc).__name__:
        return f"TLS failure with {host}"
    if isinstance(exc, aiosmtplib.SMTPException) and "TLS" in str(exc):
        return f"TLS failure with {host}"
    return f"cannot connect to {host}"


async def _reset_or_close(client: aiosmtplib.SMTP, owner: RelayConnector) -> None:
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        owner._in_use.discard(client)
        await _close_quietly(client)
        return
    owner._release(client)


async def _close_quietly(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            await asyncio.wait_for(client.quit(), 5)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass
    finally:
        client.close()  # idempotent: releases the transport even after a failed QUIT
