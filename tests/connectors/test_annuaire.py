"""Annuaire Santé FHIR check against an aiohttp server over loopback TLS."""

from __future__ import annotations

import dataclasses
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from connectors.base import DeliveryItem, Status
from connectors.mssante import MSSanteConnector
from crypto.tls import verified_client_context
from gateway.annuaire import AnnuaireClient
from gateway.config import ConnectorConfig
from tests.conftest import TestPKI as PKI
from tests.connectors._helpers import (
    LISTED_DOMAIN,
    SAMPLE_TRUST_LIST,
    VALID_INS,
    FakeOperator,
    message,
    operator_context,
)

pytestmark = pytest.mark.timeout(60)

KNOWN = f"dr.connu@{LISTED_DOMAIN}"


@dataclass
class Directory:
    known: set[str] = field(default_factory=lambda: {KNOWN})
    calls: list[tuple[str, str, str, float]] = field(default_factory=list)
    status: int = 200
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        address = request.query.get("mailbox-mss:exact", "")
        resource = request.match_info["resource"]
        self.calls.append(
            (resource, address, request.headers.get("ESANTE-API-KEY", ""), time.monotonic())
        )
        if self.status != 200:
            return web.Response(status=self.status)
        found = address in self.known and resource == "Practitioner"
        return web.json_response(
            {"resourceType": "Bundle", "type": "searchset", "total": int(found)}
        )


@pytest.fixture
async def directory(pki: PKI) -> AsyncIterator[Directory]:
    d = Directory()
    app = web.Application()
    app.router.add_get("/fhir/v2/{resource}", d.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
    await site.start()
    d.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield d
    await runner.cleanup()


def client(pki: PKI, d: Directory, rate: float = 50.0) -> AnnuaireClient:
    return AnnuaireClient(
        "key-123",
        f"https://127.0.0.1:{d.port}/fhir/v2",
        rate_per_second=rate,
        verify=verified_client_context(str(pki.ca_file)),
    )


async def test_known_unknown_cached_and_patients_never_sent(pki: PKI, directory: Directory) -> None:
    c = client(pki, directory)
    assert await c.mailbox_known(KNOWN) is True
    assert await c.mailbox_known(f"dr.inconnu@{LISTED_DOMAIN}") is False
    calls = len(directory.calls)
    assert await c.mailbox_known(KNOWN.upper()) is True  # cached
    assert await c.mailbox_known(f"{VALID_INS}@patient.mssante.fr") is None
    await c.close()
    assert len(directory.calls) == calls
    assert all(key == "key-123" for _, _, key, _ in directory.calls)
    assert not any(VALID_INS in addr for _, addr, _, _ in directory.calls)
    assert {r for r, _, _, _ in directory.calls} == {
        "PractitionerRole",
        "Practitioner",
        "Organization",
    }


async def test_rate_limit_spaces_requests(pki: PKI, directory: Directory) -> None:
    c = client(pki, directory, rate=20.0)
    for i in range(3):
        await c.mailbox_known(f"x{i}@{LISTED_DOMAIN}")  # 3 resources each: 9 requests
    await c.close()
    times = [t for _, _, _, t in directory.calls]
    assert len(times) == 9
    assert times[-1] - times[0] >= 8 * (1 / 20.0) * 0.9


async def test_errors_mean_not_checked(pki: PKI, directory: Directory) -> None:
    directory.status = 503
    c = client(pki, directory)
    assert await c.mailbox_known(KNOWN) is None
    await c.close()


async def test_connector_refuses_addresses_the_directory_does_not_know(
    pki: PKI, directory: Directory, tmp_path: Path
) -> None:
    op_ctx: ssl.SSLContext = operator_context(pki.server, pki.ca, tmp_path / "op")
    async with FakeOperator(op_ctx) as op:
        cfg = ConnectorConfig(
            name="mssante",
            type="mssante",
            host="127.0.0.1",
            port=op.port,
            client_cert=str(pki.client_cert),
            client_key=str(pki.client_key),
            ca_file=str(pki.ca_file),
            trust_list=str(SAMPLE_TRUST_LIST),
        )
        conn = MSSanteConnector(dataclasses.replace(cfg), annuaire=client(pki, directory))
        unknown = f"dr.inconnu@{LISTED_DOMAIN}"
        result = await conn.deliver(
            DeliveryItem("q", "cabinet@cabinet.test", (KNOWN, unknown), message())
        )
        await conn.close()
    by = {r.recipient: r for r in result.results}
    assert by[KNOWN].status == Status.DELIVERED
    assert by[unknown].status == Status.PERMFAIL
    assert by[unknown].detail == "not found in the Annuaire Santé"
    assert op.messages[0].rcpt_tos == [KNOWN]
