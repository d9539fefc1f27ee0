"""Inbound SMTP: the only door into Portique, and the only module that speaks reply codes.

Trust boundary: everything here comes from the network. Peers are untrusted until
they are either in `smtp.allowed_networks` or authenticated (AUTH, only after
STARTTLS, against argon2id hashes from `smtp.users`).

Invariants:
- No open relay: a peer outside the allowed networks without AUTH gets `554 5.7.1`
  for every recipient.
- 250 after DATA only once the spool says the message is durable (fsync'ed), and
  after `accepted_durable` (the service's EventBus.durable: the audit trail's
  "received" record, committed in groups off the loop) has returned.
- DATA is streamed to the spool (sealed chunk by chunk); the message is never held
  twice in memory here, except a message of at most spool.KEEP_PLAINTEXT bytes, whose
  plaintext is handed to the service with the 250 so it is not read back.
- SMTP smuggling (CVE-2023-51766 class): a bare CR or bare LF inside DATA rejects the
  message with a 5xx; only CRLF.CRLF ends DATA, so `\\n.\\r\\n` and `\\r.\\n` never do.
- Commands pipelined before the TLS handshake completes are discarded (aiosmtpd
  >= 1.4.6 clears the plaintext buffer; a test checks it, CVE-2024-34083 class).
- Internal failures reply `451 4.3.0` (or `452 4.3.1` for low disk) and never echo
  exception text; the log records the exception type only.
- On shutdown, new sessions get `421 4.3.2`; transactions in flight finish.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from gateway.config import SmtpConfig, SmtpUser, parse_listen
from gateway.errors import DiskFullError, SpoolError
from gateway.logging import get_logger
from gateway.smtp_data import (
    BARE_CR_LF,
    LINE_TOO_LONG,
    SINK_FULL,
    TOO_BIG,
    DataDecoder,
    SinkFull,
    read_data,
)
from gateway.spool import Envelope, Spool, SpoolWriter, new_spool_id

log = get_logger("portique.smtp")

# Replies (RFC 5321 section 4.2, RFC 3463 enhanced codes). Kept here, and only here.
R_OK = "250 2.0.0 OK"
R_RCPT_OK = "250 2.1.5 OK"
R_QUEUED = "250 2.0.0 OK queued as {id}"
R_RELAY_DENIED = "554 5.7.1 Relay access denied"
R_TOO_MANY_RCPTS = "452 4.5.3 Too many recipients"
R_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
R_LINE_TOO_LONG = "500 5.5.6 Line too long (RFC 5321 4.5.3.1.6)"
R_BARE_CR_LF = "550 5.6.11 Bare CR or LF in message data (SMTP smuggling protection)"
R_TEMP_FAIL = "451 4.3.0 Temporary local problem, please try again later"
R_DISK_LOW = "452 4.3.1 Insufficient system storage, please try again later"
R_SHUTTING_DOWN = "421 4.3.2 Service shutting down, please try again later"
R_TOO_BUSY = "421 4.3.2 Too many connections, please try again later"
R_NO_RCPT = "554 5.5.1 No valid recipients"
R_DATA_START = "354 End data with <CR><LF>.<CR><LF>"
_DATA_REFUSALS = {
    TOO_BIG: R_TOO_BIG,
    LINE_TOO_LONG: R_LINE_TOO_LONG,
    BARE_CR_LF: R_BARE_CR_LF,
    SINK_FULL: R_TEMP_FAIL,
}

# Free disk needed to accept a new transaction, as a multiple of the maximum message
# size (sealed spool file, then one queue copy per route) (reliability promise 4).
DISK_GUARD_FACTOR = 1.5


@dataclass(frozen=True)
class Accepted:
    """What the SMTP layer tells the service after a 250."""

    spool_id: str
    envelope: Envelope
    size: int
    message_id: str
    # The spooled bytes of a small message (SpoolWriter.plaintext), else None.
    data: bytes | None = None


class PasswordChecker:
    """argon2id verification of `smtp.users`; never logs or echoes the password."""

    def __init__(self, users: tuple[SmtpUser, ...]) -> None:
        from argon2 import PasswordHasher

        self._hasher = PasswordHasher()
        self._users = {u.name: u.password_hash for u in users}

    def verify(self, login: str, password: str) -> bool:
        from argon2.exceptions import Argon2Error

        stored = self._users.get(login)
        if stored is None:
            return False
        try:
            return bool(self._hasher.verify(stored, password))
        except (Argon2Error, ValueError):
            return False


def _sanitize_helo(helo: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9.\-\[\]:_]", "?", helo or "")
    return clean[:64]  # a DNS name fits in 253; 64 keeps header lines short


class Gate:
    """Shared state for all sessions: config, spool, counters, shutdown flag."""

    def __init__(
        self,
        cfg: SmtpConfig,
        spool: Spool,
        on_accepted: Callable[[Accepted], None],
        tls_context: ssl.SSLContext | None,
        *,
        accepted_durable: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.on_accepted = on_accepted
        # Awaited after on_accepted and before the 250: the events it emitted (the audit
        # "received" record, committed in groups off the loop) are durable by then.
        self.accepted_durable = accepted_durable
        self.tls_context = tls_context
        self.networks = [ipaddress.ip_network(n, strict=False) for n in cfg.allowed_networks]
        self.passwords = PasswordChecker(cfg.users)
        self.sessions = 0
        self.live: set[PortiqueSMTP] = set()
        self.draining = False
        self.transactions_in_flight = 0

    def peer_allowed(self, peer: Any) -> bool:
        try:
            host = peer[0] if isinstance(peer, tuple) else str(peer)
            addr = ipaddress.ip_address(host.split("%")[0])
        except (ValueError, IndexError, TypeError):
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)


# A plain address: dot-atom local part, plain domain name (ASCII). Inbound, `<` it `>` is
# what aiosmtpd's parser (email._header_value_parser.get_angle_addr) returns unchanged
# as addr_spec, and anything else goes to that parser; outbound, connectors/smtp_client.py
# writes a plain address as is on MAIL/RCPT and checks any other before writing it.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_ADDRESS = rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_ANGLE_ADDRESS = re.compile(rf"<({PLAIN_ADDRESS})>(?=$|[ \t])")


class PortiqueSMTP(SMTP):
    """aiosmtpd's protocol machine with Portique's DATA, limits and replies."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        cfg = gate.cfg
        # Read by aiosmtpd's StreamReader as its line limit (instance attribute on purpose).
        self.line_length_limit = cfg.max_line_length
        super().__init__(
            handler=_Hooks(self),
            data_size_limit=cfg.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=cfg.hostname,
            ident="Portique ESMTP",
            tls_context=gate.tls_context,
            require_starttls=False,
            timeout=cfg.session_timeout,
            auth_required=False,
            auth_require_tls=True,
            authenticator=self._authenticate_user,
            loop=asyncio.get_running_loop(),
        )
        self.auth_user = ""
        self._counted = False

    # --- session admission ----------------------------------------------------------

    async def _handle_client(self) -> None:
        gate = self.gate
        if gate.draining or gate.sessions >= gate.cfg.max_sessions:
            await self.push(R_SHUTTING_DOWN if gate.draining else R_TOO_BUSY)
            if self.transport is not None:
                self.transport.close()
            return
        gate.sessions += 1
        gate.live.add(self)
        self._counted = True
        try:
            await super()._handle_client()
        finally:
            gate.sessions -= 1
            gate.live.discard(self)
            self._counted = False

    async def handle_exception(self, error: Exception) -> str:
        log.warning("smtp_internal_error", error=type(error).__name__)
        if isinstance(error, DiskFullError):
            return R_DISK_LOW
        return R_TEMP_FAIL

    def _authenticate_user(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or session.ssl is None:
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        ok = self.gate.passwords.verify(login, auth_data.password.decode("utf-8", "replace"))
        log.info("smtp_auth", user=login if ok else "", ok=ok, mechanism=mechanism)
        if ok:
            self.auth_user = login
            return AuthResult(success=True, handled=False, auth_data=login)
        return AuthResult(success=False, handled=False)

    def _end_transaction(self) -> None:
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    def relay_allowed(self) -> bool:
        assert self.session is not None
        return bool(self.session.authenticated) or self.gate.peer_allowed(self.session.peer)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's MAIL/RCPT address parsing, with a fast path for the usual
        `<dot-atom@domain>` (aiosmtpd runs email's header parser on every address: 6 % of
        the event loop's time under load). Same answers (tests/relay checks with
        hypothesis); anything else goes to aiosmtpd."""
        m = _PLAIN_ANGLE_ADDRESS.match(arg)
        if m is None:
            return super()._getaddr(arg)
        rest = arg[m.end() :].lstrip(" \t")  # the parser eats the whitespace after ">"
        if rest.startswith("("):
            return super()._getaddr(arg)  # a comment: also eaten, by the parser's rules
        address = m.group(1)
        if self.local_part_limit and address.rindex("@") > self.local_part_limit:
            return None, None
        return address, rest

    # --- DATA ----------------------------------------------------------------------

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push(R_NO_RCPT if self.envelope.mail_from else "503 5.5.1 Need RCPT")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        gate = self.gate
        spool_id = new_spool_id()
        envelope = Envelope(
            mail_from=_null_sender(self.envelope.mail_from or ""),
            recipients=tuple(self.envelope.rcpt_tos),
            client=_peer_host(self.session.peer),
            helo=_sanitize_helo(self.session.host_name or ""),
            user=self.auth_user,
            tls=self.session.ssl is not None,
            smtp_utf8=self.envelope.smtp_utf8,
        )
        started = time.monotonic()
        gate.transactions_in_flight += 1
        writer: SpoolWriter | None = None
        try:
            try:
                writer = gate.spool.open_writer(envelope, spool_id)
                writer.write(self._received_header(spool_id, envelope))
            except SpoolError:
                await self.push(R_TEMP_FAIL)
                self._end_transaction()
                return
            await self.push(R_DATA_START)
            problem, message_id = await self._receive_data(writer)
            if problem is not None:
                writer.abort()
                self._end_transaction()
                log.info(
                    "smtp_transaction",
                    spool_id=spool_id,
                    client=envelope.client,
                    outcome="refused",
                    reply=problem[:3],
                )
                await self.push(problem)
                return
            try:
                await asyncio.wait_for(writer.commit(), gate.cfg.data_reply_budget)
            except (SpoolError, TimeoutError, OSError) as exc:
                writer.abort()
                self._end_transaction()
                log.warning("smtp_spool_failed", spool_id=spool_id, error=type(exc).__name__)
                await self.push(R_TEMP_FAIL)
                return
            accepted = Accepted(spool_id, envelope, writer.size, message_id, writer.plaintext)
            self._end_transaction()
            try:
                gate.on_accepted(accepted)
                if gate.accepted_durable is not None:
                    await gate.accepted_durable()
            except Exception as exc:  # the message is durable; processing resumes at restart
                log.error("smtp_handoff_failed", spool_id=spool_id, error=type(exc).__name__)
            log.info(
                "smtp_transaction",
                spool_id=spool_id,
                client=envelope.client,
                user=envelope.user,
                tls=envelope.tls,
                recipients=len(envelope.recipients),
                size=writer.size,
                outcome="accepted",
                duration_s=round(time.monotonic() - started, 4),
            )
            await self.push(R_QUEUED.format(id=spool_id))
        except asyncio.CancelledError:
            if writer is not None:
                writer.abort()
            raise
        finally:
            gate.transactions_in_flight -= 1

    async def _receive_data(self, writer: SpoolWriter) -> tuple[str | None, str]:
        """Stream DATA into `writer`. Returns (refusal reply or None, Message-ID)."""

        def store(data: bytes) -> None:
            try:
                writer.write(data)
            except SpoolError as exc:
                raise SinkFull from exc

        decoder = DataDecoder(
            store, line_limit=self.line_length_limit, size_limit=self.gate.cfg.max_message_size
        )
        await read_data(self._reader, decoder)
        refusal = None if decoder.problem is None else _DATA_REFUSALS[decoder.problem]
        return refusal, decoder.message_id

    def _received_header(self, spool_id: str, envelope: Envelope) -> bytes:
        proto = "ESMTP"
        if envelope.tls:
            proto += "S"
        if envelope.user:
            proto += "A"
        stamp = _date_now()
        return (
            f"Received: from {envelope.helo or 'unknown'} ([{envelope.client}])\r\n"
            f"\tby {self.gate.cfg.hostname} (Portique) with {proto} id {spool_id};\r\n"
            f"\t{stamp}\r\n"
        ).encode("ascii", "replace")


_date_cache: tuple[int, str] = (0, "")


def _date_now() -> str:
    """RFC 5322 date of the current second, formatted once per second (per message,
    email.utils.formatdate was 1 % of the event loop's time under load)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, localtime=False))
    return _date_cache[1]


def _null_sender(address: str) -> str:
    """aiosmtpd keeps `MAIL FROM:<>` as "<>"; the spool records the null sender as ""."""
    return "" if address == "<>" else address


def _peer_host(peer: Any) -> str:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


# RFC 5321 4.5.3.1.3: a path is at most 256 octets, so an address at most 254.
ADDRESS_MAX = 254
_ADDRESS = re.compile(r"^[^\s<>@\x00-\x1f\x7f]+@[^\s<>@\x00-\x1f\x7f]+$")


def address_ok(address: str) -> bool:
    """A usable mailbox: local@domain, no spaces, brackets or control characters."""
    return len(address) <= ADDRESS_MAX and bool(_ADDRESS.match(address))


class _Hooks:
    """aiosmtpd handler hooks: relay control, disk guard and recipient limits."""

    def __init__(self, proto: PortiqueSMTP) -> None:
        self.proto = proto

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        gate = self.proto.gate
        try:
            free = gate.spool.free_bytes()
        except OSError:
            return R_TEMP_FAIL
        if free < DISK_GUARD_FACTOR * gate.cfg.max_message_size:
            log.warning("smtp_disk_low", free_bytes=free)
            return R_DISK_LOW
        if address != "<>" and not address_ok(address):
            return "501 5.1.7 Bad sender address syntax"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if not self.proto.relay_allowed():
            log.info("smtp_relay_denied", client=_peer_host(session.peer))
            return R_RELAY_DENIED
        if not address_ok(address):
            return "501 5.1.3 Bad recipient address syntax"
        if len(envelope.rcpt_tos) >= self.proto.gate.cfg.max_recipients:
            return R_TOO_MANY_RCPTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return R_RCPT_OK


def load_tls_context(cfg: SmtpConfig, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class SmtpServer:
    """The listening socket and its sessions."""

    def __init__(self, gate: Gate, listen: str, *, reuse_port: bool = False) -> None:
        self.gate = gate
        self.host, self.port = parse_listen(listen)
        # SO_REUSEPORT: worker processes (gateway/workers.py) each listen on the same
        # port and the kernel spreads the connections between them.
        self.reuse_port = reuse_port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        # aiosmtpd logs every command line (addresses included) on "mail.log" at INFO;
        # Portique logs its own PHI-aware events instead.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: PortiqueSMTP(self.gate),
            self.host or None,
            self.port,
            reuse_port=self.reuse_port or None,
        )
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])

    async def drain(self, grace: float) -> None:
        """Refuse new sessions with 421 and wait up to `grace` seconds for transactions."""
        self.gate.draining = True
        deadline = time.monotonic() + grace
        # Polling is fine here: it runs once, at shutdown, for a few seconds at most.
        while self.gate.transactions_in_flight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop listening and close the sessions still open (after `drain`)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for session in list(self.gate.live):
            if session.transport is not None:
                session.transport.close()
        await asyncio.sleep(0)  # let connection_lost callbacks run
