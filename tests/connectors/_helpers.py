"""Test peers for the connectors: a fake MSSanté operator (aiosmtpd with STARTTLS and
client-certificate verification) on a real loopback socket, CRLs, and a TLS aiohttp
server for lab uploads. Everything binds 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from crypto.certs import Issued

SAMPLE_TRUST_LIST = (
    Path(__file__).resolve().parents[1] / "data" / "mssante" / "listeblanchemssante-sample.xml"
)
# Domains known to be in the sample (see tests/data/mssante).
LISTED_DOMAIN = "adsea29.mssante.fr"
VALID_INS = "279035121518989"  # ANS example patient address (key checked)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer_cert: dict[str, Any] | None
    cipher: tuple[str, str, int] | None


@dataclass
class OperatorHandler:
    """Records what arrives; refuses RCPT for local parts starting with refuse5/refuse4."""

    messages: list[Received] = field(default_factory=list)
    connections: int = 0

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if address.startswith("refuse5"):
            return "550 5.1.1 mailbox unknown"
        if address.startswith("refuse4"):
            return "451 4.2.0 try later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
        self.messages.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                peer_cert=ssl_object.getpeercert() if ssl_object else None,
                cipher=ssl_object.cipher() if ssl_object else None,
            )
        )
        return "250 2.0.0 queued as TEST"


class FakeOperator:
    """aiosmtpd in the test's own event loop, on 127.0.0.1 and an ephemeral port."""

    def __init__(
        self,
        tls_context: ssl.SSLContext | None,
        *,
        implicit: bool = False,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.handler = OperatorHandler()
        self.tls_context = tls_context
        self.implicit = implicit
        self.credentials = credentials
        self.server: asyncio.Server | None = None
        self.port = 0

    def _authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        given = (data.login.decode(), data.password.decode())
        ok = self.credentials is not None and given == self.credentials
        return AuthResult(success=ok, handled=False)

    def _factory(self) -> SMTPServer:
        self.handler.connections += 1
        if self.implicit:
            return SMTPServer(self.handler, hostname="operator.test")
        auth: dict[str, Any] = {}
        if self.credentials is not None:
            auth = {"authenticator": self._authenticate, "auth_required": True}
        return SMTPServer(
            self.handler,
            hostname="operator.test",
            tls_context=self.tls_context,
            require_starttls=self.tls_context is not None,
            **auth,
        )

    async def __aenter__(self) -> FakeOperator:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._factory, "127.0.0.1", 0, ssl=self.tls_context if self.implicit else None
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages


def operator_context(
    server: Issued,
    client_ca: Issued,
    directory: Path,
    *,
    require_client_cert: bool = True,
    max_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """Server context for the fake operator: its cert, and client certs verified."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, ca = directory / "op.pem", directory / "op.key", directory / "op-client-ca.pem"
    server.write(cert, key)
    ca.write_bytes(client_ca.cert_pem())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if max_version is not None:
        ctx.maximum_version = max_version
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(ca)
    return ctx


def make_crl(
    ca: Issued,
    revoked: Sequence[x509.Certificate] = (),
    *,
    next_update: dt.datetime | None = None,
    pem: bool = True,
) -> bytes:
    now = dt.datetime.now(dt.UTC)
    next_update = next_update or now + dt.timedelta(days=1)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(min(now - dt.timedelta(minutes=5), next_update - dt.timedelta(days=1)))
        .next_update(next_update)
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - dt.timedelta(minutes=1))
            .build()
        )
    crl = builder.sign(ca.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)


def message(
    subject: str = "Compte rendu", body: str = "Bonjour,\r\nvoici le compte rendu.\r\n"
) -> bytes:
    return (
        "From: cabinet@cabinet.test\r\n"
        "To: dr.martin@adsea29.mssante.fr\r\n"
        f"Subject: {subject}\r\n"
        "Message-ID: <abc123@cabinet.test>\r\n"
        "Date: Sun, 29 Nov 2026 05:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n" + body
    ).encode()
