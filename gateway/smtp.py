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
- A 451 means "not accepted": past the DATA reply budget, a commit no sync pass has
  taken is withdrawn (451), and one a pass has taken is answered with that pass's
  outcome. A session that ends before its reply leaves nothing to deliver (SpoolWriter).
  What became of each commit past the budget is reported to `Gate.on_commit_past_budget`
  (`CommitPastBudget`: the metrics count them); a commit within it reports nothing.
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
import socket
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import (
    ALLOWED_BEFORE_STARTTLS,
    BOGUS_LIMIT,
    SMTP,
    AuthResult,
    LoginPassword,
    TLSSetupException,
    _AuthMechAttr,
    syntax,
)
from aiosmtpd.smtp import log as aiosmtpd_log

from gateway.config import SmtpConfig, SmtpUser, parse_listen
from gateway.deadlines import Deadlines
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


class CommitPastBudget(StrEnum):
    """What became of a DATA commit not yet durable when the DATA reply budget ran out:
    the `outcome` label of portique_smtp_commits_past_budget_total (gateway/metrics.py).
    A slow spool disk shows here first."""

    WITHDRAWN = "withdrawn"  # no sync pass had taken it: withdrawn, nothing spooled; 451
    ACCEPTED = "accepted"  # the pass that had taken it made it durable: 250
    TEMPFAIL = "tempfail"  # the pass that had taken it failed: 451
    # The session ended during that pass (the client left, or the gateway stopped): no
    # reply, and the entry the pass makes durable is dropped (SpoolWriter.abort).
    CLIENT_GONE = "client_gone"


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
        on_commit_past_budget: Callable[[CommitPastBudget], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.on_accepted = on_accepted
        # Awaited after on_accepted and before the 250: the events it emitted (the audit
        # "received" record, committed in groups off the loop) are durable by then.
        self.accepted_durable = accepted_durable
        # Told what became of each DATA commit that ran past `data_reply_budget` (never
        # called on the normal path: the commit within the budget).
        self.on_commit_past_budget = on_commit_past_budget
        self.tls_context = tls_context
        self.networks = [ipaddress.ip_network(n, strict=False) for n in cfg.allowed_networks]
        self.passwords = PasswordChecker(cfg.users)
        self.sessions = 0
        self.live: set[PortiqueSMTP] = set()
        self.draining = False
        self.transactions_in_flight = 0
        # Cuts a DATA commit off at `data_reply_budget` (TimeoutError, then 451): one
        # loop timer for all sessions rather than an asyncio.timeout per message.
        self.commit_deadlines = Deadlines(cfg.data_reply_budget)

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

# aiosmtpd's own replies to MAIL/RCPT, which PortiqueSMTP gives in its place.
_MAIL_SYNTAX = "501 Syntax: MAIL FROM: <address>"
_MAIL_SYNTAX_ESMTP = _MAIL_SYNTAX + " [SP <mail-parameters>]"
_RCPT_SYNTAX = "501 Syntax: RCPT TO: <address>"
_RCPT_SYNTAX_ESMTP = _RCPT_SYNTAX + " [SP <mail-parameters>]"
_MALFORMED_ADDRESS = "553 5.1.3 Error: malformed address"
_NO_PEER = object()  # PortiqueSMTP._peer_verdict before its first RCPT


_methods_found: dict[tuple[type, str], tuple[tuple[str, str], ...]] = {}


def _methods(cls: type, prefix: str) -> tuple[tuple[str, str], ...]:
    """The methods of `cls` named `prefix...`, as (what aiosmtpd calls them, attribute
    name): the command or hook name after the prefix; for `auth_*`, the AUTH mechanism
    (`__auth_mechanism_name__`, set by aiosmtpd's @auth_mechanism, else the name with
    "__" read as "-"). Found as aiosmtpd's SMTP.__init__ finds them, by their names in
    dir(); but once per class, where aiosmtpd looks on every new session."""
    found = _methods_found.get((cls, prefix))
    if found is None:
        names = [name for name in dir(cls) if name.startswith(prefix)]
        keys = [name.replace(prefix, "") for name in names]
        if prefix == "auth_":
            keys = [
                getattr(getattr(cls, name), "__auth_mechanism_name__", key.replace("__", "-"))
                for name, key in zip(names, keys, strict=True)
            ]
        found = _methods_found[cls, prefix] = tuple(zip(keys, names, strict=True))
    return found


class PortiqueSMTP(SMTP):
    """aiosmtpd's protocol machine with Portique's DATA, limits and replies.

    The commands of a transaction (MAIL, RCPT, DATA) are answered by Portique's code, and
    so is the command loop; everything else is aiosmtpd's (`SMTP.smtp_*`). The loop and
    MAIL/RCPT are aiosmtpd 1.4.6's, step for step and reply for reply, less the work
    Portique does not need per command: no line-by-line logging ("mail.log" is silenced,
    see SmtpServer.start: it would log addresses), no coroutine per precondition check or
    hook, one idle timer per session instead of one per command; and a session is set up
    as aiosmtpd's constructor sets it up, less its per-session introspection
    (`_init_aiosmtpd`). They rely on the settings
    passed below (no PROXY protocol, no command call limits, SMTPUTF8 on, decode_data
    off); tests/relay/test_smtp_commands_as_aiosmtpd.py compares the replies with
    aiosmtpd's own, line by line."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        cfg = gate.cfg
        # Read by aiosmtpd's StreamReader as its line limit (instance attribute on purpose).
        self.line_length_limit = cfg.max_line_length
        self._init_aiosmtpd(
            _Hooks(self),
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
        # When the session times out unless a command comes first (loop.time()).
        self._idle_deadline = 0.0
        # Per session: the peer and whether its network may relay; the HELO name as
        # given and as written in Received; the logger bound once (see `_log`).
        self._peer_verdict: tuple[Any, bool] = (_NO_PEER, False)
        self._helo: tuple[str, str] = ("", "")
        self._bound_log: Any = None

    def _init_aiosmtpd(
        self,
        handler: Any,
        *,
        data_size_limit: int,
        enable_SMTPUTF8: bool,
        decode_data: bool,
        hostname: str,
        ident: str,
        tls_context: ssl.SSLContext | None,
        require_starttls: bool,
        timeout: float,
        auth_required: bool,
        auth_require_tls: bool,
        authenticator: Callable[..., AuthResult],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """aiosmtpd 1.4.6's SMTP.__init__ with these arguments (the others left at their
        defaults: no PROXY protocol, no call limits, no excluded AUTH mechanism), less its
        introspection: it finds the `smtp_*`, `auth_*` and `handle_*` methods on each new
        session with dir() and inspect.getmembers, 1.4 M instructions per connection, where
        `_methods` looks them up once per class. The attributes set are the same,
        with the same values (tests/relay/test_smtp_commands_as_aiosmtpd.py compares them,
        and plays its dialogues against a session built by SMTP.__init__ itself)."""
        self.__ident__ = ident
        self.loop = loop
        super(SMTP, self).__init__(
            asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.event_handler = handler
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        # Class-wide limits, raised by each EHLO and reset by each new session (aiosmtpd).
        self.command_size_limits.clear()
        self.hostname = hostname or socket.getfqdn()
        self.tls_context = tls_context
        if tls_context:
            if tls_context.verify_mode not in {ssl.CERT_NONE, ssl.CERT_OPTIONAL}:
                aiosmtpd_log.warning(
                    "tls_context.verify_mode not in {CERT_NONE, CERT_OPTIONAL}; "
                    "this might cause client connection problems"
                )
            elif tls_context.check_hostname:
                aiosmtpd_log.warning(
                    "tls_context.check_hostname == True; this might cause client "
                    "connection problems"
                )
        self.require_starttls = tls_context and require_starttls
        self._timeout_duration = timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        if not auth_require_tls and auth_required:
            warnings.warn(
                "Requiring AUTH while not requiring TLS can lead to security vulnerabilities!",
                stacklevel=2,
            )
            aiosmtpd_log.warning("auth_required == True but auth_require_tls == False")
        self._auth_require_tls = auth_require_tls
        self._proxy_timeout = None
        self._authenticator = authenticator
        self._auth_callback = None
        self._auth_required = auth_required
        self._auth_methods = {
            mechanism: _AuthMechAttr(getattr(obj, name), obj is self)
            for obj in (self, handler)
            for mechanism, name in _methods(type(obj), "auth_")
        }
        self._handle_hooks = {
            hook: getattr(handler, name) for hook, name in _methods(type(handler), "handle_")
        }
        if "EHLO" in self._handle_hooks:
            raise TypeError("handle_EHLO hooks are not supported")  # aiosmtpd's two forms
        self._ehlo_hook_ver = None
        self._smtp_methods = {
            command: getattr(self, name) for command, name in _methods(type(self), "smtp_")
        }
        self._enforce_call_limit = False

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
            await self._serve_commands()
        finally:
            gate.sessions -= 1
            gate.live.discard(self)
            self._counted = False

    # --- the command loop ----------------------------------------------------------

    async def _serve_commands(self) -> None:
        """aiosmtpd 1.4.6's SMTP._handle_client after the PROXY step (not configured):
        read a line, check it, dispatch it to `smtp_<COMMAND>`. Same checks in the same
        order, same replies; see the class docstring for what it leaves out."""
        assert self.session is not None
        await self.push(f"220 {self.hostname} {self.__ident__}")
        bogus_budget = BOGUS_LIMIT
        while self.transport is not None:
            try:
                try:
                    line = await self._reader.readuntil()
                except asyncio.LimitOverrunError as error:
                    await self._discard_rest_of_line(error.consumed)
                    await self.push("500 Command line too long")
                    continue
                line = line.rstrip(b"\r\n")
                if not line:
                    await self.push("500 Error: bad syntax")
                    continue
                command_bytes, _, arg_bytes = line.partition(b" ")
                try:
                    command = command_bytes.upper().decode("ascii")
                except UnicodeDecodeError:
                    await self.push("500 Error: bad syntax")
                    continue
                # SMTPUTF8 on: any argument bytes are kept (surrogateescape), as aiosmtpd.
                arg = str(arg_bytes.strip(), "utf-8", "surrogateescape") if arg_bytes else None
                if self.session.extended_smtp:
                    size_limit = self.command_size_limits[command]
                else:
                    size_limit = self.command_size_limit
                if len(line) > size_limit:
                    await self.push("500 Command line too long")
                    continue
                if not self._tls_handshake_okay and command != "QUIT":
                    await self.push("554 Command refused due to lack of security")
                    continue
                if (
                    self.require_starttls
                    and not self._tls_protocol
                    and command not in ALLOWED_BEFORE_STARTTLS
                ):
                    await self.push("530 Must issue a STARTTLS command first")
                    continue
                method = self._smtp_methods.get(command)
                if method is None:
                    aiosmtpd_log.warning("%r unrecognised: %s", self.session.peer, command)
                    bogus_budget -= 1
                    if bogus_budget < 1:
                        aiosmtpd_log.warning("%r too many bogus commands", self.session.peer)
                        await self.push("502 5.5.1 Too many unrecognized commands, goodbye.")
                        self.transport.close()
                        continue
                    await self.push(f'500 Error: command "{command}" not recognized')
                    continue
                self._reset_timeout()
                await method(arg)
            except (asyncio.CancelledError, ConnectionResetError):
                # The connection went away (also during DATA).
                self._writer.close()
                raise
            except Exception as error:
                # Never the exception's text (module docstring): where aiosmtpd would
                # echo a failing handle_exception's error, the reply is a 451.
                try:
                    status = await self.handle_exception(error)
                except Exception:
                    status = R_TEMP_FAIL
                if isinstance(error, TLSSetupException):
                    assert self.transport is not None
                    self.transport.close()
                    self.connection_lost(error)
                else:
                    await self.push(status)

    async def _discard_rest_of_line(self, consumed: int) -> None:
        """Drop a command line longer than the reader's limit, up to its end."""
        await self._reader.read(consumed)
        while True:
            try:
                await self._reader.readuntil()
                return
            except asyncio.LimitOverrunError as more:
                await self._reader.read(more.consumed)

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Push the idle deadline back. aiosmtpd cancels and creates a timer on every
        command; here the timer stays armed and, when it fires before the deadline
        (commands came since), `_timeout_cb` re-arms it for the rest."""
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._idle_deadline = deadline
        timer = self._timeout_handle
        if timer is None or timer.cancelled() or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._timeout_cb)

    def _timeout_cb(self) -> None:
        remaining = self._idle_deadline - self.loop.time()
        if remaining > 0:
            self._timeout_handle = self.loop.call_later(remaining, self._timeout_cb)
            return
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    async def push(self, status: str | bytes) -> None:
        """aiosmtpd's push (UTF-8, as with SMTPUTF8 on) without its debug log line, and
        without StreamWriter.drain() when it would only return (two coroutines less per
        reply, 5 K instructions; write() sends the reply either way). drain() raises the
        reader's error; once the transport is closing (as it is when the connection is
        lost), waits for connection_lost and raises; and waits while writing is paused,
        which it can only be while the transport holds unsent bytes."""
        data = status.encode() if isinstance(status, str) else status
        writer = self._writer
        writer.write(data + b"\r\n")
        transport = writer.transport
        if (
            transport.is_closing()
            or transport.get_write_buffer_size()
            or self._reader.exception() is not None
        ):
            await writer.drain()

    async def handle_exception(self, error: Exception) -> str:
        self._log.warning("smtp_internal_error", error=type(error).__name__)
        if isinstance(error, DiskFullError):
            return R_DISK_LOW
        return R_TEMP_FAIL

    @property
    def _log(self) -> Any:
        """The module's logger, bound on first use: structlog's lazy proxy assembles a
        new logger on every call (~2.6 % of smtp_DATA under load). Per session, so a
        session started after a logging reconfiguration uses the new one."""
        if self._bound_log is None:
            self._bound_log = log.bind()
        return self._bound_log

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
        session = self.session
        assert session is not None
        if session.authenticated:
            return True
        peer, allowed = self._peer_verdict
        if peer != session.peer:  # the first time (the peer is fixed for a connection)
            allowed = self.gate.peer_allowed(session.peer)
            self._peer_verdict = (session.peer, allowed)
        return allowed

    def _helo_for_received(self, host_name: str) -> str:
        if self._helo[0] != host_name:
            self._helo = (host_name, _sanitize_helo(host_name))
        return self._helo[1]

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

    # --- MAIL and RCPT ---------------------------------------------------------------

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")  # for HELP, as aiosmtpd
    async def smtp_MAIL(self, arg: str | None) -> None:
        """aiosmtpd 1.4.6's SMTP.smtp_MAIL with Portique's sender checks called directly."""
        session, envelope = self.session, self.envelope
        assert session is not None and envelope is not None
        if not session.host_name or self._auth_required:
            await super().smtp_MAIL(arg)  # its "503 Error: send HELO first" or 530
            return
        syntaxerr = _MAIL_SYNTAX_ESMTP if session.extended_smtp else _MAIL_SYNTAX
        path = self._path_argument("FROM:", arg, syntaxerr)
        if isinstance(path, str):
            await self.push(path)
            return
        address, addrparams = path
        if envelope.mail_from:
            await self.push("503 Error: nested MAIL command")
            return
        mail_options = addrparams.upper().split()
        params = self._getparams(mail_options)
        if params is None:
            await self.push(syntaxerr)
            return
        if params.pop("BODY", "7BIT") not in ("7BIT", "8BITMIME"):  # decode_data is off
            await self.push("501 Error: BODY can only be one of 7BIT, 8BITMIME")
            return
        smtputf8 = params.pop("SMTPUTF8", False)
        if not isinstance(smtputf8, bool):
            await self.push("501 Error: SMTPUTF8 takes no arguments")
            return
        envelope.smtp_utf8 = smtputf8  # SMTPUTF8 is enabled
        size = params.pop("SIZE", None)
        if size:
            if isinstance(size, bool) or not size.isdigit():
                await self.push(syntaxerr)
                return
            if self.data_size_limit and int(size) > self.data_size_limit:
                await self.push("552 Error: message size exceeds fixed maximum message size")
                return
        if params:
            await self.push("555 MAIL FROM parameters not recognized or not implemented")
            return
        await self.push(self.accept_sender(envelope, address, mail_options))

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        """aiosmtpd 1.4.6's SMTP.smtp_RCPT with Portique's recipient checks called directly."""
        session, envelope = self.session, self.envelope
        assert session is not None and envelope is not None
        if not session.host_name or self._auth_required:
            await super().smtp_RCPT(arg)  # its "503 Error: send HELO first" or 530
            return
        if not envelope.mail_from:
            await self.push("503 Error: need MAIL command")
            return
        syntaxerr = _RCPT_SYNTAX_ESMTP if session.extended_smtp else _RCPT_SYNTAX
        path = self._path_argument("TO:", arg, syntaxerr)
        if isinstance(path, str):
            await self.push(path)
            return
        address, params = path
        rcpt_options = params.upper().split()
        params_dict = self._getparams(rcpt_options)
        if params_dict is None:
            await self.push(syntaxerr)
            return
        if params_dict:
            await self.push("555 RCPT TO parameters not recognized or not implemented")
            return
        await self.push(self.accept_recipient(envelope, address, rcpt_options))

    def _path_argument(
        self, keyword: str, arg: str | None, syntaxerr: str
    ) -> tuple[str, str] | str:
        """MAIL's or RCPT's argument read as aiosmtpd reads it: (address, parameters),
        or the reply that refuses it."""
        assert self.session is not None
        if arg is None:
            return syntaxerr
        arg = self._strip_command_keyword(keyword, arg)
        if arg is None:
            return syntaxerr
        address, params = self._getaddr(arg)
        if address is None:
            return _MALFORMED_ADDRESS
        if not address or (not self.session.extended_smtp and params):
            return syntaxerr
        assert params is not None
        return address, params

    def accept_sender(self, envelope: Any, address: str, options: list[str]) -> str:
        """Portique's MAIL FROM checks (disk guard, sender syntax); the reply."""
        gate = self.gate
        try:
            free = gate.spool.free_bytes()
        except OSError:
            return R_TEMP_FAIL
        if free < DISK_GUARD_FACTOR * gate.cfg.max_message_size:
            self._log.warning("smtp_disk_low", free_bytes=free)
            return R_DISK_LOW
        if address != "<>" and not address_ok(address):
            return "501 5.1.7 Bad sender address syntax"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    def accept_recipient(self, envelope: Any, address: str, options: list[str]) -> str:
        """Portique's RCPT TO checks (relay control, syntax, recipient limit); the reply."""
        if not self.relay_allowed():
            assert self.session is not None
            self._log.info("smtp_relay_denied", client=_peer_host(self.session.peer))
            return R_RELAY_DENIED
        if not address_ok(address):
            return "501 5.1.3 Bad recipient address syntax"
        if len(envelope.rcpt_tos) >= self.gate.cfg.max_recipients:
            return R_TOO_MANY_RCPTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return R_RCPT_OK

    # --- DATA ----------------------------------------------------------------------

    async def smtp_DATA(self, arg: str) -> None:
        session, transaction = self.session, self.envelope
        assert session is not None and transaction is not None
        if not session.host_name:
            await self.check_helo_needed()  # its "503 Error: send HELO first"
            return
        if not transaction.rcpt_tos:
            await self.push(R_NO_RCPT if transaction.mail_from else "503 5.5.1 Need RCPT")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        gate = self.gate
        spool_id = new_spool_id()
        envelope = Envelope(
            mail_from=_null_sender(transaction.mail_from or ""),
            recipients=tuple(transaction.rcpt_tos),
            client=_peer_host(session.peer),
            helo=self._helo_for_received(session.host_name),
            user=self.auth_user,
            tls=session.ssl is not None,
            smtp_utf8=transaction.smtp_utf8,
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
                self._log.info(
                    "smtp_transaction",
                    spool_id=spool_id,
                    client=envelope.client,
                    outcome="refused",
                    reply=problem[:3],
                )
                await self.push(problem)
                return
            try:
                try:
                    # The DATA reply budget: one timer for every session's commits (a
                    # cancellation that is not the budget's, the peer leaving, stays one).
                    await gate.commit_deadlines.run(writer.commit())
                except TimeoutError:
                    # A commit still queued was withdrawn: 451, and it is not spooled.
                    # One a sync pass had taken will be delivered, so a 451 would bring
                    # it twice (the client sends it again): its outcome is the reply,
                    # after a wait bounded by that pass's fsyncs, already under way.
                    if not writer.in_pass:
                        self._report_past_budget(CommitPastBudget.WITHDRAWN)
                        raise
                    self._log.warning("smtp_commit_past_budget", spool_id=spool_id)
                    await self._settle_past_budget(writer)
            except (SpoolError, TimeoutError, OSError) as exc:
                writer.abort()
                self._end_transaction()
                self._log.warning("smtp_spool_failed", spool_id=spool_id, error=type(exc).__name__)
                await self.push(R_TEMP_FAIL)
                return
            accepted = Accepted(spool_id, envelope, writer.size, message_id, writer.plaintext)
            self._end_transaction()
            try:
                gate.on_accepted(accepted)
                if gate.accepted_durable is not None:
                    await gate.accepted_durable()
            except Exception as exc:  # the message is durable; processing resumes at restart
                self._log.error("smtp_handoff_failed", spool_id=spool_id, error=type(exc).__name__)
            self._log.info(
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

    async def _settle_past_budget(self, writer: SpoolWriter) -> None:
        """`writer.settle()` for a commit whose sync pass the DATA reply budget ran out
        in, with the outcome reported (`_report_past_budget`)."""
        try:
            await writer.settle()
        except asyncio.CancelledError:
            self._report_past_budget(CommitPastBudget.CLIENT_GONE)
            raise
        except SpoolError:
            self._report_past_budget(CommitPastBudget.TEMPFAIL)
            raise
        self._report_past_budget(CommitPastBudget.ACCEPTED)

    def _report_past_budget(self, outcome: CommitPastBudget) -> None:
        report = self.gate.on_commit_past_budget
        if report is not None:
            report(outcome)

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
    """aiosmtpd handler hooks: Portique's MAIL and RCPT checks wherever aiosmtpd's own
    smtp_MAIL/smtp_RCPT run (PortiqueSMTP hands them the sessions without HELO, or with
    auth_required set). Without them aiosmtpd accepts every recipient: an open relay."""

    def __init__(self, proto: PortiqueSMTP) -> None:
        self.proto = proto

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return self.proto.accept_sender(envelope, address, options)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return self.proto.accept_recipient(envelope, address, options)


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
