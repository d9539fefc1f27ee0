"""lab_https connector against an aiohttp server over real TLS on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import BodyPartReader, web

from connectors.base import DeliveryItem, Status
from connectors.lab_https import LabHttpsConnector, safe_filename
from crypto.certs import issue, make_ca
from gateway.config import ConnectorConfig
from tests.conftest import TestPKI as PKI

pytestmark = pytest.mark.timeout(60)

TOKEN = "lab-token-dupont-0001"
STL = b"solid PAT-7KQ3M-2XF9A\nendsolid\n"


@dataclass
class LabServer:
    """Answers from `script` (status codes, then 201), recording what it got."""

    script: list[int] = field(default_factory=list)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        form: dict[str, Any] = {"headers": dict(request.headers), "parts": []}
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, BodyPartReader)
            body = await part.read()
            form["parts"].append(
                (part.name, part.filename, part.headers.get("Content-Type", ""), bytes(body))
            )
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        form["peercert"] = peer
        status = self.script.pop(0) if self.script else 201
        if status < 300:
            self.uploads.append(form)
        return web.json_response({"ok": status < 300}, status=status)


async def start_lab(ctx: ssl.SSLContext, lab: LabServer) -> web.AppRunner:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/api/cases", lab.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    lab.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner


@pytest.fixture
async def lab(pki: PKI) -> AsyncIterator[LabServer]:
    server = LabServer()
    runner = await start_lab(pki.server_context(), server)
    yield server
    await runner.cleanup()


def cfg_for(pki: PKI, port: int, **over: object) -> ConnectorConfig:
    base = ConnectorConfig(
        name="lab_dupont",
        type="lab_https",
        url=f"https://127.0.0.1:{port}/api/cases",
        token=TOKEN,
        ca_file=str(pki.ca_file),
        timeout=5.0,
    )
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def lab_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "cabinet@cabinet.test"
    msg["To"] = "commandes@labo-dupont.fr"
    msg["Subject"] = "Couronne 36 pour PAT-7KQ3M-2XF9A"
    msg.set_content("Teinte A2, patient PAT-7KQ3M-2XF9A.")
    msg.add_attachment(STL, maintype="model", subtype="stl", filename="PAT-7KQ3M-2XF9A_36.stl")
    msg.add_attachment(
        b"%PDF-1.4 bon", maintype="application", subtype="pdf", filename="../../bon.pdf"
    )
    return msg.as_bytes()


def item(data: bytes | None = None) -> DeliveryItem:
    return DeliveryItem(
        queue_id="q-lab-1",
        mail_from="cabinet@cabinet.test",
        recipients=("commandes@labo-dupont.fr",),
        data=data or lab_message(),
    )


async def test_multipart_upload_with_bearer_token(pki: PKI, lab: LabServer) -> None:
    conn = LabHttpsConnector(cfg_for(pki, lab.port))
    sent = item()
    result = await conn.deliver(sent)
    await conn.close()
    assert result.results[0].status == Status.DELIVERED
    assert result.results[0].detail == "HTTP 201 from lab"
    (upload,) = lab.uploads
    assert upload["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert upload["headers"]["Idempotency-Key"] == "q-lab-1"
    parts = {(name, fname): (ctype, body) for name, fname, ctype, body in upload["parts"]}
    assert parts[("queue_id", None)][1] == b"q-lab-1"
    assert parts[("recipients", None)][1] == b"commandes@labo-dupont.fr"
    assert parts[("message", "message.eml")] == ("message/rfc822", sent.data)
    assert parts[("files", "PAT-7KQ3M-2XF9A_36.stl")] == ("model/stl", STL)
    assert parts[("files", "bon.pdf")] == ("application/pdf", b"%PDF-1.4 bon")  # no path


async def test_manifest_upload(pki: PKI, lab: LabServer) -> None:
    conn = LabHttpsConnector(cfg_for(pki, lab.port, upload_format="manifest"))
    result = await conn.deliver(item())
    await conn.close()
    assert result.results[0].status == Status.DELIVERED
    parts = lab.uploads[0]["parts"]
    assert [p[0] for p in parts] == ["manifest", "message", "file1", "file2"]
    manifest = json.loads(parts[0][3])
    assert manifest["recipients"] == ["commandes@labo-dupont.fr"]
    by_field = {f["field"]: f for f in manifest["files"]}
    assert by_field["file1"]["sha256"] == hashlib.sha256(STL).hexdigest()
    assert by_field["file1"]["size"] == len(STL)
    assert parts[2][3] == STL


async def test_retries_on_503_then_delivers(pki: PKI, lab: LabServer) -> None:
    lab.script = [503]
    conn = LabHttpsConnector(cfg_for(pki, lab.port))
    first = await conn.deliver(item())
    second = await conn.deliver(item())
    await conn.close()
    assert first.results[0].status == Status.TEMPFAIL
    assert first.results[0].detail == "HTTP 503 from lab"
    assert second.results[0].status == Status.DELIVERED
    assert len(lab.uploads) == 1


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (429, Status.TEMPFAIL),
        (500, Status.TEMPFAIL),
        (400, Status.PERMFAIL),
        (403, Status.PERMFAIL),
        (302, Status.PERMFAIL),
    ],
)
async def test_status_mapping(pki: PKI, lab: LabServer, code: int, status: Status) -> None:
    lab.script = [code]
    conn = LabHttpsConnector(cfg_for(pki, lab.port))
    result = await conn.deliver(item())
    await conn.close()
    assert result.results[0].status == status
    assert lab.uploads == []


async def test_timeout_is_tempfail(pki: PKI, lab: LabServer) -> None:
    lab.delay = 2.0
    conn = LabHttpsConnector(cfg_for(pki, lab.port, timeout=0.3))
    result = await conn.deliver(item())
    await conn.close()
    assert result.results[0].status == Status.TEMPFAIL
    assert result.results[0].detail == "lab endpoint timed out"


async def test_untrusted_lab_certificate_is_tempfail(pki: PKI, tmp_path: Path) -> None:
    rogue_ca = make_ca("Rogue")
    rogue = issue(rogue_ca, "localhost", sans=["127.0.0.1"])
    rogue.write(tmp_path / "r.pem", tmp_path / "r.key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "r.pem", tmp_path / "r.key")
    server = LabServer()
    runner = await start_lab(ctx, server)
    try:
        conn = LabHttpsConnector(cfg_for(pki, server.port))
        result = await conn.deliver(item())
        await conn.close()
    finally:
        await runner.cleanup()
    assert result.results[0].status == Status.TEMPFAIL
    assert "lab certificate refused" in result.results[0].detail
    assert server.uploads == []


async def test_client_certificate_authentication(pki: PKI) -> None:
    server = LabServer()
    runner = await start_lab(pki.server_context(require_client_cert=True), server)
    try:
        without = LabHttpsConnector(cfg_for(pki, server.port, token=""))
        r1 = await without.deliver(item())
        await without.close()
        with_cert = LabHttpsConnector(
            cfg_for(
                pki,
                server.port,
                token="",
                client_cert=str(pki.client_cert),
                client_key=str(pki.client_key),
            )
        )
        r2 = await with_cert.deliver(item())
        await with_cert.close()
    finally:
        await runner.cleanup()
    assert r1.results[0].status == Status.TEMPFAIL
    assert r2.results[0].status == Status.DELIVERED
    assert "Authorization" not in server.uploads[0]["headers"]
    subject = dict(x[0] for x in server.uploads[0]["peercert"]["subject"])
    assert subject["commonName"] == "portique-client.test"


async def test_unreachable_is_tempfail(pki: PKI) -> None:
    server = LabServer()
    runner = await start_lab(pki.server_context(), server)
    port = server.port
    await runner.cleanup()
    conn = LabHttpsConnector(cfg_for(pki, port))
    result = await conn.deliver(item())
    await conn.close()
    assert result.results[0].status == Status.TEMPFAIL
    assert result.results[0].detail == "lab endpoint unreachable"


def test_safe_filename() -> None:
    assert safe_filename("../../etc/passwd", 1) == "passwd"
    assert safe_filename("C:\\x\\scan.stl", 1) == "scan.stl"
    assert safe_filename("a\r\nb.pdf", 1) == "ab.pdf"
    assert safe_filename(None, 3) == "file3.bin"
    assert safe_filename("..", 2) == "file2.bin"
