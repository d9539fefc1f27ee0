"""MSSanté connector against a fake operator: real loopback sockets, real mutual TLS.

The operator is aiosmtpd with STARTTLS that requires and verifies client certificates.
Each failure case checks that nothing arrived and that the reason is clear and PHI-free.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import email
import email.policy
import io
import ssl
import zipfile
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from connectors.base import DeliveryItem, Status
from connectors.mssante import MSSanteConnector, add_cda_headers, set_header
from crypto.certs import Issued, issue, make_ca
from gateway.config import ConnectorConfig
from gateway.errors import ConfigError
from tests.conftest import TestPKI as PKI
from tests.connectors._helpers import (
    LISTED_DOMAIN,
    SAMPLE_TRUST_LIST,
    VALID_INS,
    FakeOperator,
    make_crl,
    message,
    operator_context,
)

pytestmark = pytest.mark.timeout(60)

DR = f"dr.martin@{LISTED_DOMAIN}"
PATIENT_NAME = "Jeanne Dupontel"  # planted: must never appear in a detail


def make_cfg(pki: PKI, port: int, **over: object) -> ConnectorConfig:
    base = ConnectorConfig(
        name="mssante",
        type="mssante",
        host="127.0.0.1",
        port=port,
        client_cert=str(pki.client_cert),
        client_key=str(pki.client_key),
        ca_file=str(pki.ca_file),
        trust_list=str(SAMPLE_TRUST_LIST),
        nil="PORTIQUE-NIL-TEST",
        timeout=10.0,
    )
    return dataclasses.replace(base, **over)  # type: ignore[arg-type]


def item(*rcpts: str, data: bytes | None = None) -> DeliveryItem:
    body = f"Patient {PATIENT_NAME}, NIR {VALID_INS}.\r\n"
    return DeliveryItem(
        queue_id="q1",
        mail_from="cabinet@cabinet.test",
        recipients=rcpts or (DR,),
        data=data if data is not None else message(body=body),
    )


def assert_phi_free(detail: str) -> None:
    assert PATIENT_NAME not in detail
    assert VALID_INS not in detail
    assert "dr.martin" not in detail


@pytest.fixture
def op_ctx(pki: PKI, tmp_path: Path) -> ssl.SSLContext:
    return operator_context(pki.server, pki.ca, tmp_path / "op")


async def test_delivers_unchanged_with_client_certificate_verified(
    pki: PKI, op_ctx: ssl.SSLContext
) -> None:
    async with FakeOperator(op_ctx) as op:
        conn = MSSanteConnector(make_cfg(pki, op.port))
        it = item(DR, f"{VALID_INS}@patient.mssante.fr")
        result = await conn.deliver(it)
        await conn.close()
    assert [r.status for r in result.results] == [Status.DELIVERED, Status.DELIVERED]
    assert result.results[0].detail.startswith("250 2.0.0")
    assert len(op.messages) == 1
    got = op.messages[0]
    assert got.rcpt_tos == [DR, f"{VALID_INS}@patient.mssante.fr"]
    # Unchanged except for the X-MSS-NIL header put first.
    assert got.data.startswith(b"X-MSS-NIL: PORTIQUE-NIL-TEST\r\n")
    assert got.data.removeprefix(b"X-MSS-NIL: PORTIQUE-NIL-TEST\r\n") == it.data
    # The operator verified our client certificate.
    assert got.peer_cert is not None
    subject = dict(x[0] for x in got.peer_cert["subject"])
    assert subject["commonName"] == "portique-client.test"


async def test_pkcs12_client_certificate(pki: PKI, op_ctx: ssl.SSLContext, tmp_path: Path) -> None:
    p12 = tmp_path / "client.p12"
    p12.write_bytes(pki.client.pkcs12(b"s3cret"))
    async with FakeOperator(op_ctx) as op:
        cfg = make_cfg(
            pki, op.port, client_cert=str(p12), client_key="", client_cert_password="s3cret"
        )
        conn = MSSanteConnector(cfg)
        result = await conn.deliver(item())
        assert conn.client_cert_not_after() == pki.client.cert.not_valid_after_utc
    assert result.results[0].status == Status.DELIVERED
    assert op.messages[0].peer_cert is not None


async def test_wrong_pkcs12_password_defers(
    pki: PKI, op_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    p12 = tmp_path / "client.p12"
    p12.write_bytes(pki.client.pkcs12(b"s3cret"))
    async with FakeOperator(op_ctx) as op:
        cfg = make_cfg(
            pki, op.port, client_cert=str(p12), client_key="", client_cert_password="nope"
        )
        result = await MSSanteConnector(cfg).deliver(item())
    assert result.results[0].status == Status.TEMPFAIL
    assert "client_cert_password" in result.results[0].detail
    assert op.messages == [] and op.handler.connections == 0


async def test_untrusted_operator_certificate_defers(pki: PKI, tmp_path: Path) -> None:
    rogue_ca = make_ca("Rogue CA")
    rogue = issue(rogue_ca, "localhost", sans=["localhost", "127.0.0.1"])
    ctx = operator_context(rogue, pki.ca, tmp_path / "rogue")
    async with FakeOperator(ctx) as op:
        result = await MSSanteConnector(make_cfg(pki, op.port)).deliver(item())
    r = result.results[0]
    assert r.status == Status.TEMPFAIL
    assert "operator certificate refused" in r.detail
    assert "nothing sent" in r.detail
    assert_phi_free(r.detail)
    assert op.messages == []


async def test_hostname_mismatch_defers(pki: PKI, tmp_path: Path) -> None:
    other = issue(pki.ca, "elsewhere.test", sans=["elsewhere.test"])
    ctx = operator_context(other, pki.ca, tmp_path / "other")
    async with FakeOperator(ctx) as op:
        result = await MSSanteConnector(make_cfg(pki, op.port)).deliver(item())
    assert result.results[0].status == Status.TEMPFAIL
    assert "operator certificate refused" in result.results[0].detail
    assert op.messages == []


async def test_expired_operator_certificate_defers(pki: PKI, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = issue(
        pki.ca,
        "localhost",
        sans=["localhost", "127.0.0.1"],
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    ctx = operator_context(expired, pki.ca, tmp_path / "exp")
    async with FakeOperator(ctx) as op:
        result = await MSSanteConnector(make_cfg(pki, op.port)).deliver(item())
    assert result.results[0].status == Status.TEMPFAIL
    assert "expired" in result.results[0].detail
    assert op.messages == []


async def test_missing_client_certificate_defers(
    pki: PKI, op_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    async with FakeOperator(op_ctx) as op:
        cfg = make_cfg(pki, op.port, client_cert=str(tmp_path / "absent.pem"))
        result = await MSSanteConnector(cfg).deliver(item())
    r = result.results[0]
    assert r.status == Status.TEMPFAIL
    assert "client_cert" in r.detail and "cannot read" in r.detail
    assert op.messages == [] and op.handler.connections == 0


async def test_client_certificate_the_operator_does_not_trust_defers(
    pki: PKI, op_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    other_ca = make_ca("Other client CA")
    stranger = issue(other_ca, "stranger.test", client=True, server=False)
    stranger.write(tmp_path / "s.pem", tmp_path / "s.key")
    async with FakeOperator(op_ctx) as op:
        cfg = make_cfg(
            pki, op.port, client_cert=str(tmp_path / "s.pem"), client_key=str(tmp_path / "s.key")
        )
        result = await MSSanteConnector(cfg).deliver(item())
    r = result.results[0]
    assert r.status == Status.TEMPFAIL
    assert r.detail  # TLS alert or closed connection, said plainly
    assert_phi_free(r.detail)
    assert op.messages == []


async def test_expired_client_certificate_defers_without_connecting(
    pki: PKI, op_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    old = issue(
        pki.ca,
        "portique-client.test",
        client=True,
        server=False,
        not_before=now - dt.timedelta(days=400),
        not_after=now - dt.timedelta(days=1),
    )
    old.write(tmp_path / "old.pem", tmp_path / "old.key")
    async with FakeOperator(op_ctx) as op:
        cfg = make_cfg(
            pki,
            op.port,
            client_cert=str(tmp_path / "old.pem"),
            client_key=str(tmp_path / "old.key"),
        )
        conn = MSSanteConnector(cfg)
        result = await conn.deliver(item())
        assert conn.client_cert_not_after() < now
    assert result.results[0].status == Status.TEMPFAIL
    assert "client certificate expired" in result.results[0].detail
    assert op.handler.connections == 0


async def test_starttls_stripped_defers(pki: PKI) -> None:
    async with FakeOperator(None) as op:  # a peer (or a MITM) that does not offer STARTTLS
        result = await MSSanteConnector(make_cfg(pki, op.port)).deliver(item())
    r = result.results[0]
    assert r.status == Status.TEMPFAIL
    assert "did not offer STARTTLS" in r.detail
    assert op.handler.connections == 1
    assert op.messages == []


async def test_implicit_tls(pki: PKI, op_ctx: ssl.SSLContext) -> None:
    async with FakeOperator(op_ctx, implicit=True) as op:
        result = await MSSanteConnector(make_cfg(pki, op.port, implicit_tls=True)).deliver(item())
    assert result.results[0].status == Status.DELIVERED
    assert op.messages[0].peer_cert is not None


async def test_unreachable_operator_defers(pki: PKI) -> None:
    async with FakeOperator(None) as op:
        port = op.port
    result = await MSSanteConnector(make_cfg(pki, port)).deliver(item())
    assert result.results[0].status == Status.TEMPFAIL
    assert "unreachable" in result.results[0].detail


# --- revocation ----------------------------------------------------------------------


def crl_cfg(pki: PKI, port: int, crl: Path, **over: object) -> ConnectorConfig:
    return make_cfg(pki, port, crl_file=str(crl), **over)


async def test_revoked_operator_certificate_defers(pki: PKI, tmp_path: Path) -> None:
    revoked = issue(pki.ca, "localhost", sans=["localhost", "127.0.0.1"])
    crl = tmp_path / "ca.crl"
    crl.write_bytes(make_crl(pki.ca, [revoked.cert], pem=False))  # DER, as IGC-Santé publishes
    ctx = operator_context(revoked, pki.ca, tmp_path / "rev")
    async with FakeOperator(ctx) as op:
        result = await MSSanteConnector(crl_cfg(pki, op.port, crl)).deliver(item())
    assert result.results[0].status == Status.TEMPFAIL
    assert "revoked" in result.results[0].detail
    assert op.messages == []


async def test_crl_without_the_operator_delivers(
    pki: PKI, op_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    someone = issue(pki.ca, "someone-else.test")
    crl = tmp_path / "ca.crl"
    crl.write_bytes(make_crl(pki.ca, [someone.cert]))
    async with FakeOperator(op_ctx) as op:
        result = await MSSanteConnector(crl_cfg(pki, op.port, crl)).deliver(item())
    assert result.results[0].status == Status.DELIVERED
    assert len(op.messages) == 1


async def test_stale_or_forged_crl_defers(pki: PKI, op_ctx: ssl.SSLContext, tmp_path: Path) -> None:
    stale = tmp_path / "stale.crl"
    stale.write_bytes(make_crl(pki.ca, next_update=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    forged = tmp_path / "forged.crl"
    forged.write_bytes(make_crl(_forger(pki.ca)))
    async with FakeOperator(op_ctx) as op:
        r1 = await MSSanteConnector(crl_cfg(pki, op.port, stale)).deliver(item())
        r2 = await MSSanteConnector(crl_cfg(pki, op.port, forged)).deliver(item())
    assert r1.results[0].status == Status.TEMPFAIL
    assert "nextUpdate" in r1.results[0].detail
    assert r2.results[0].status == Status.TEMPFAIL
    assert "signature" in r2.results[0].detail
    assert op.handler.connections == 0


def _forger(ca: Issued) -> Issued:
    """A key that claims the CA's name but is not the CA's key."""
    fake = make_ca("x")
    return Issued(ca.cert, fake.key)


async def test_crl_from_url_kept_when_refresh_fails(pki: PKI, tmp_path: Path) -> None:
    revoked = issue(pki.ca, "localhost", sans=["localhost", "127.0.0.1"])
    good = make_crl(pki.ca, [revoked.cert])
    served = {"body": good}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=served["body"], content_type="application/pkix-crl")

    app = web.Application()
    app.router.add_get("/ca.crl", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    crl_file = tmp_path / "cache" / "ca.crl"
    ctx = operator_context(revoked, pki.ca, tmp_path / "rev")
    try:
        async with FakeOperator(ctx) as op:
            cfg = make_cfg(
                pki,
                op.port,
                crl_file=str(crl_file),
                crl_url=f"http://127.0.0.1:{port}/ca.crl",
                crl_refresh=0.0,
            )
            conn = MSSanteConnector(cfg)
            r1 = await conn.deliver(item())
            assert crl_file.read_bytes() == good  # last good copy kept on disk
            served["body"] = b"not a CRL"
            r2 = await conn.deliver(item())  # refresh fails: the last good CRL still applies
            assert conn.crl is not None and "CRL refused" in conn.crl.last_error
    finally:
        await runner.cleanup()
    assert r1.results[0].status == Status.TEMPFAIL and "revoked" in r1.results[0].detail
    assert r2.results[0].status == Status.TEMPFAIL and "revoked" in r2.results[0].detail
    assert crl_file.read_bytes() == good
    assert op.messages == []


# --- recipients, replies and policy --------------------------------------------------


async def test_recipients_off_the_trust_list_are_never_sent(
    pki: PKI, op_ctx: ssl.SSLContext
) -> None:
    rcpts = (
        DR,
        "someone@gmail.com",
        "x@evil.mssante.fr",  # suffix looks right, domain is not listed
        "123456789012345@patient.mssante.fr",  # bad INS key
        f"{VALID_INS}@patient.mssante.fr",
    )
    async with FakeOperator(op_ctx) as op:
        result = await MSSanteConnector(make_cfg(pki, op.port)).deliver(item(*rcpts))
    statuses = {r.recipient: (r.status, r.detail) for r in result.results}
    assert statuses["someone@gmail.com"] == (Status.PERMFAIL, "not on the MSSanté trust list")
    assert statuses["x@evil.mssante.fr"] == (Status.PERMFAIL, "not on the MSSanté trust list")
    assert statuses["123456789012345@patient.mssante.fr"] == (
        Status.PERMFAIL,
        "patient address is not a valid INS",
    )
    assert statuses[DR][0] == Status.DELIVERED
    assert op.messages[0].rcpt_tos == [DR, f"{VALID_INS}@patient.mssante.fr"]


async def test_operator_refusals_per_recipient(pki: PKI, op_ctx: ssl.SSLContext) -> None:
    rcpts = (f"refuse5@{LISTED_DOMAIN}", f"refuse4@{LISTED_DOMAIN}", DR)
    async with FakeOperator(op_ctx) as op:
        result = await MSSanteConnector(make_cfg(pki, op.port)).deliver(item(*rcpts))
    by = {r.recipient: r for r in result.results}
    assert (
        by[rcpts[0]].status == Status.PERMFAIL and by[rcpts[0]].detail == "550 5.1.1 from operator"
    )
    assert (
        by[rcpts[1]].status == Status.TEMPFAIL and by[rcpts[1]].detail == "451 4.2.0 from operator"
    )
    assert by[DR].status == Status.DELIVERED
    assert op.messages[0].rcpt_tos == [DR]


async def test_tls12_only_policy_uses_ans_ciphers(pki: PKI, tmp_path: Path) -> None:
    rsa_server = issue(pki.ca, "localhost", sans=["localhost", "127.0.0.1"], key_type="rsa")
    ctx = operator_context(rsa_server, pki.ca, tmp_path / "rsa")
    async with FakeOperator(ctx) as op:
        result = await MSSanteConnector(make_cfg(pki, op.port, tls_max_version="TLSv1.2")).deliver(
            item()
        )
    assert result.results[0].status == Status.DELIVERED
    cipher = op.messages[0].cipher
    assert cipher is not None
    assert cipher[1] == "TLSv1.2"
    assert cipher[0] == "ECDHE-RSA-AES256-GCM-SHA384"


async def test_tls12_policy_refuses_a_peer_without_ans_suites(
    pki: PKI, op_ctx: ssl.SSLContext
) -> None:
    # The default test operator has an EC certificate: no ECDHE-RSA suite can match.
    async with FakeOperator(op_ctx) as op:
        result = await MSSanteConnector(make_cfg(pki, op.port, tls_max_version="TLSv1.2")).deliver(
            item()
        )
    assert result.results[0].status == Status.TEMPFAIL
    assert "TLS handshake failed" in result.results[0].detail
    assert op.messages == []


async def test_trust_list_unreadable_defers(
    pki: PKI, op_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    async with FakeOperator(op_ctx) as op:
        cfg = make_cfg(pki, op.port, trust_list=str(tmp_path / "missing.xml"))
        result = await MSSanteConnector(cfg).deliver(item())
    assert result.results[0].status == Status.TEMPFAIL
    assert "trust list unavailable" in result.results[0].detail
    assert op.handler.connections == 0


def test_set_header_replaces_folded_header() -> None:
    data = b"Subject: a\r\nX-MSS-NIL: old\r\n value\r\nTo: b\r\n\r\nX-MSS-NIL: body\r\n"
    out = set_header(data, "X-MSS-NIL", "new")
    assert out == b"X-MSS-NIL: new\r\nSubject: a\r\nTo: b\r\n\r\nX-MSS-NIL: body\r\n"
    with pytest.raises(ValueError):
        set_header(data, "X-MSS-NIL", "a\r\nBcc: x@y")


async def test_minimum_version_is_enforced(pki: PKI, tmp_path: Path) -> None:
    ctx = operator_context(pki.server, pki.ca, tmp_path / "v12", max_version=ssl.TLSVersion.TLSv1_2)
    async with FakeOperator(ctx) as op:
        result = await MSSanteConnector(make_cfg(pki, op.port, tls_min_version="TLSv1.3")).deliver(
            item()
        )
    assert result.results[0].status == Status.TEMPFAIL
    assert "TLS handshake failed" in result.results[0].detail
    assert op.messages == []


def test_bad_tls_policy_is_a_config_error(pki: PKI) -> None:
    with pytest.raises(ConfigError, match="tls_min_version"):
        MSSanteConnector(make_cfg(pki, 25, tls_min_version="TLSv1.0"))
    with pytest.raises(ConfigError, match="tls_max_version"):
        MSSanteConnector(make_cfg(pki, 25, tls_max_version="SSLv3"))


async def test_dot_lines_and_bare_newlines_arrive_intact(pki: PKI, op_ctx: ssl.SSLContext) -> None:
    body = ".ligne qui commence par un point\r\n..deux points\r\n.\r\nfin\r\n"
    data = message(body=body)
    async with FakeOperator(op_ctx) as op:
        result = await MSSanteConnector(make_cfg(pki, op.port, nil="")).deliver(item(data=data))
    assert result.results[0].status == Status.DELIVERED
    assert op.messages[0].data == data  # no nil configured: byte-identical


def xdm_message(
    *cdas: bytes, filename: str = "IHE_XDM.ZIP", headers: str = "", truncate: bool = False
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("INDEX.HTM", "<html></html>")
        z.writestr("IHE_XDM/SUBSET01/METADATA.XML", "<SubmitObjectsRequest/>")
        for i, cda in enumerate(cdas, start=1):
            z.writestr(f"IHE_XDM/SUBSET01/DOC{i:04d}.XML", cda)
    msg = EmailMessage()
    msg["From"] = "cabinet@cabinet.test"
    msg["To"] = DR
    msg["Subject"] = "XDM/1.0/DDM+compte rendu"
    for line in filter(None, headers.split("\n")):
        name, _, value = line.partition(": ")
        msg[name] = value
    msg.set_content("Compte rendu joint.")
    archive = buf.getvalue()
    if truncate:
        archive = archive[: len(archive) // 2]
    msg.add_attachment(archive, maintype="application", subtype="zip", filename=filename)
    return msg.as_bytes(policy=email.policy.SMTP)


def cda(code: str, ins: bool) -> bytes:
    root = "1.2.250.1.213.1.4.8" if ins else "1.2.250.1.71.4.2.7"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ClinicalDocument xmlns="urn:hl7-org:v3">'
        f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1"/>'
        f'<recordTarget><patientRole><id root="{root}" extension="{VALID_INS}"/>'
        "</patientRole></recordTarget></ClinicalDocument>"
    ).encode()


def header_values(data: bytes, name: str) -> list[str]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    return [str(v) for v in msg.get_all(name, [])]


def test_cda_headers_added_only_with_an_xdm_cda() -> None:
    one = add_cda_headers(xdm_message(cda("11488-4", ins=True)))
    assert header_values(one, "X-MSS-CODECDA") == ["11488-4"]
    assert header_values(one, "X-MSS-INS") == ["O"]

    two = add_cda_headers(xdm_message(cda("11488-4", ins=False), cda("34112-3", ins=False)))
    assert header_values(two, "X-MSS-CODECDA") == ["11488-4,34112-3"]
    assert header_values(two, "X-MSS-INS") == ["N"]

    plain = message()
    assert add_cda_headers(plain) == plain  # no CDA: no header
    not_xdm = xdm_message(cda("11488-4", ins=True), filename="scan.zip")
    assert add_cda_headers(not_xdm) == not_xdm

    preset = xdm_message(cda("11488-4", ins=True), headers="X-MSS-CODECDA: 1\nX-MSS-INS: N")
    assert add_cda_headers(preset) == preset  # the sender's values are kept


def test_cda_inspection_survives_hostile_archives() -> None:
    bomb = b'<!DOCTYPE x [<!ENTITY a "aaaa">]><ClinicalDocument xmlns="urn:hl7-org:v3">&a;</ClinicalDocument>'
    for data in (
        xdm_message(bomb),
        xdm_message(b"not xml"),
        xdm_message(cda('"><x', ins=True)),
    ):
        out = add_cda_headers(data)
        assert header_values(out, "X-MSS-CODECDA") == []
    broken = xdm_message(cda("11488-4", ins=True), truncate=True)
    assert add_cda_headers(broken) == broken


async def test_operator_receives_cda_headers(pki: PKI, op_ctx: ssl.SSLContext) -> None:
    data = xdm_message(cda("11488-4", ins=True))
    async with FakeOperator(op_ctx) as op:
        result = await MSSanteConnector(make_cfg(pki, op.port)).deliver(item(data=data))
    assert result.results[0].status == Status.DELIVERED
    got = op.messages[0].data
    assert header_values(got, "X-MSS-NIL") == ["PORTIQUE-NIL-TEST"]
    assert header_values(got, "X-MSS-CODECDA") == ["11488-4"]
    assert header_values(got, "X-MSS-INS") == ["O"]


async def test_sasl_login_after_mutual_tls(pki: PKI, op_ctx: ssl.SSLContext) -> None:
    async with FakeOperator(op_ctx, credentials=("bal-app@x.mssante.fr", "s3cret")) as op:
        ok = await MSSanteConnector(
            make_cfg(pki, op.port, username="bal-app@x.mssante.fr", password="s3cret")
        ).deliver(item())
        bad = await MSSanteConnector(
            make_cfg(pki, op.port, username="bal-app@x.mssante.fr", password="wrong")
        ).deliver(item())
        none = await MSSanteConnector(make_cfg(pki, op.port)).deliver(item())
    assert ok.results[0].status == Status.DELIVERED
    assert bad.results[0].status == Status.TEMPFAIL
    assert bad.results[0].detail.startswith("operator refused authentication (535")
    assert "s3cret" not in bad.results[0].detail and "wrong" not in bad.results[0].detail
    assert none.results[0].status == Status.PERMFAIL  # 530 at MAIL: authentication required
    assert len(op.messages) == 1


async def test_cancelled_during_quit_closes_the_connection(
    pki: PKI, op_ctx: ssl.SSLContext
) -> None:
    """A delivery cancelled while the operator sits on QUIT (a stop, a timeout) does not
    leave the TLS connection open: the operator sees it closed."""
    quit_seen = asyncio.Event()
    servers: list[Any] = []

    async def slow_quit(server: Any, session: Any, envelope: Any) -> str:
        servers.append(server)
        quit_seen.set()
        await asyncio.sleep(30)
        return "221 Bye"

    async with FakeOperator(op_ctx) as op:
        op.handler.handle_QUIT = slow_quit  # type: ignore[attr-defined]
        conn = MSSanteConnector(make_cfg(pki, op.port))
        task = asyncio.create_task(conn.deliver(item(DR)))
        async with asyncio.timeout(10):
            await quit_seen.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with asyncio.timeout(5):
            while servers[0].transport is not None:  # noqa: ASYNC110 - aiosmtpd has no event for it
                await asyncio.sleep(0.02)
        await conn.close()
    assert len(op.messages) == 1  # the message itself was delivered before QUIT
