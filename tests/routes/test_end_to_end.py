"""Routing end to end through the in-process gateway, with real sockets and real TLS.

practice client --SMTP--> Portique (Service: spool, pipeline with the real scan
engine, vault, queue) --> a fake MSSanté operator (aiosmtpd, STARTTLS, client
certificates required), an SMTP sink standing for the relay (labs and ordinary
mail), and an aiohttp lab endpoint over TLS (lab_https).

Planted patient identifiers must reach only the MSSanté operator.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import BodyPartReader, web

from crypto.aead import Sealer
from crypto.certs import issue, make_ca
from crypto.keys import Keyring
from crypto.pseudonym import TOKEN_PATTERN
from gateway._sqlite import open_database
from gateway.cli import main
from gateway.config import parse_config
from gateway.scan import RosterPatient, build_engine
from gateway.service import Service
from gateway.vault import MIGRATIONS as VAULT_MIGRATIONS
from gateway.vault import VAULT_FILE, Vault
from tests.conftest import TestPKI as PKI
from tests.connectors._helpers import (
    LISTED_DOMAIN,
    SAMPLE_TRUST_LIST,
    FakeOperator,
    operator_context,
)
from tests.relay._helpers import Sink, send_sync, wait_until

pytestmark = pytest.mark.timeout(120)

DUPONT = RosterPatient(
    key="patient-dupont",
    last_name="DUPONT",
    first_name="Jean",
    birth_date=date(1975, 11, 2),
    nir="175119912611142",
    phone="0612345678",
    email="jean.dupont@patients.example",
)
LEGRAND = RosterPatient(
    key="patient-legrand",
    last_name="LEGRAND",
    first_name="Sophie",
    birth_date=date(1982, 3, 14),
    email="sophie.legrand@patients.example",
)
PLANTED = ("DUPONT", "Dupont", "175119912611142", "02/11/1975", "LEGRAND", "Legrand")
SENDER = "secretariat@cabinet.test"
DR = f"dr.martin@{LISTED_DOMAIN}"
LAB = "commandes@labo-dupont.fr"
LAB2 = "atelier@labo-martin.fr"
LAB_HTTPS = "depot@labo-nord.fr"
GMAIL = "ami.patient@gmail.com"


def message(to: str, body: str, subject: str = "Couronne 36") -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Message-ID: <e2e-1@cabinet.test>\r\nDate: Sun, 29 Nov 2026 05:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}\r\n"
    ).encode()


PHI_BODY = (
    "Bonjour, pour M. Jean DUPONT, né le 02/11/1975, NIR 175119912611142 : "
    "couronne zircone sur 36, teinte A3."
)


@dataclass
class LabEndpoint:
    uploads: list[dict[str, bytes]]
    port: int = 0


@dataclass
class Rig:
    service: Service
    operator: FakeOperator
    sink: Sink
    lab: LabEndpoint
    config_file: Path

    def sink_for(self, rcpt: str) -> list[bytes]:
        return [m.data for m in self.sink.messages if rcpt in m.recipients]


async def _start_lab(pki: PKI) -> tuple[web.AppRunner, LabEndpoint]:
    lab = LabEndpoint(uploads=[])

    async def handle(request: web.Request) -> web.Response:
        parts: dict[str, bytes] = {}
        async for part in await request.multipart():
            assert isinstance(part, BodyPartReader)
            parts[part.name or ""] = bytes(await part.read())
        lab.uploads.append(parts)
        return web.json_response({"ok": True}, status=201)

    app = web.Application()
    app.router.add_post("/cases", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
    await site.start()
    lab.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, lab


@pytest.fixture
async def rig(
    request: pytest.FixtureRequest,
    pki: PKI,
    tmp_path: Path,
    data_dir: Path,
    keyring: Keyring,
) -> AsyncIterator[Rig]:
    # Indirect parameter: "untrusted-operator" (operator certificate from another CA) or
    # "missing-client-cert" (the configured client certificate file is absent).
    variant = getattr(request, "param", "")
    sink = await Sink().start()
    lab_runner, lab = await _start_lab(pki)
    operator_cert = pki.server
    if variant == "untrusted-operator":
        operator_cert = issue(make_ca("Rogue CA"), "localhost", sans=["localhost", "127.0.0.1"])
    client_cert = pki.client_cert
    if variant == "missing-client-cert":
        client_cert = tmp_path / "absent-client.pem"
    op_ctx = operator_context(operator_cert, pki.ca, tmp_path / "operator")
    operator = FakeOperator(op_ctx)
    await operator.__aenter__()
    raw: dict[str, Any] = {
        "data_dir": str(data_dir),
        "smtp": {"listen": "127.0.0.1:0", "hostname": "portique.test"},
        "queue": {"retry_initial": 0.2, "retry_max": 1.0, "poll_interval": 0.1},
        "spool": {"group_commit_window_ms": 1.0},
        "connectors": {
            "relay": {"host": "127.0.0.1", "port": sink.port, "tls": "none"},
            "mssante": {
                "host": "127.0.0.1",
                "port": operator.port,
                "client_cert": str(client_cert),
                "client_key": str(pki.client_key),
                "ca_file": str(pki.ca_file),
                "trust_list": str(SAMPLE_TRUST_LIST),
                "nil": "PORTIQUE-E2E",
            },
            "lab_nord": {
                "type": "lab_https",
                "url": f"https://127.0.0.1:{lab.port}/cases",
                "token": "tok-nord",
                "ca_file": str(pki.ca_file),
            },
        },
        "routes": [
            {"name": "mssante", "match": ["@mssante"], "action": "deliver", "connector": "mssante"},
            {
                "name": "labs",
                "match": ["*@labo-dupont.fr", "*@labo-martin.fr"],
                "action": "pseudonymise",
                "connector": "relay",
            },
            {
                "name": "lab-upload",
                "match": ["*@labo-nord.fr"],
                "action": "pseudonymise",
                "connector": "lab_nord",
            },
            {
                "name": "reminders",
                "match": ["*@patients.example"],
                "action": "own-data-only",
                "connector": "relay",
            },
            {"name": "default", "match": ["*"], "action": "reject-if-phi", "connector": "relay"},
        ],
    }
    cfg = parse_config(raw)
    config_file = tmp_path / "portique.toml"
    config_file.write_text(f'data_dir = "{data_dir}"\n')
    engine = build_engine(
        patients=(DUPONT, LEGRAND),
        digest_key=keyring.digest_key,
        pseudonym_key=keyring.pseudonym_key,
    )
    # The service stores vault entries from worker threads.
    vault = Vault(
        open_database(data_dir / VAULT_FILE, VAULT_MIGRATIONS, check_same_thread=False),
        Sealer(keyring),
    )
    # No is_mssante given: the service builds it from the mssante connector's trust list.
    svc = Service(cfg, engine=engine, vault=vault, keyring=keyring)
    await svc.start(control_socket=False)
    try:
        yield Rig(svc, operator, sink, lab, config_file)
    finally:
        await svc.stop(grace=0.5)
        vault.close()
        await operator.__aexit__(None, None, None)
        await sink.stop()
        await lab_runner.cleanup()


async def send(rig: Rig, rcpts: list[str], data: bytes) -> None:
    refused = await asyncio.to_thread(
        send_sync, rig.service.smtp_port, data, sender=SENDER, rcpts=rcpts
    )
    assert refused == {}


def body_text(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def assert_no_phi(data: bytes) -> None:
    for text in (data.decode("utf-8", "replace"), body_text(data)):
        for value in PLANTED:
            assert value not in text, value


async def test_three_recipients_three_different_copies(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    data = message(f"{DR}, {LAB}, {GMAIL}", PHI_BODY)
    await send(rig, [DR, LAB, GMAIL], data)

    # MSSanté: unchanged, over mutual TLS.
    await wait_until(lambda: len(rig.operator.messages) == 1)
    got = rig.operator.messages[0]
    assert got.rcpt_tos == [DR]
    assert got.peer_cert is not None
    assert got.data.startswith(b"X-MSS-NIL: PORTIQUE-E2E\r\n")
    assert data.split(b"\r\n\r\n", 1)[1] in got.data  # body byte-identical
    assert b"175119912611142" in got.data

    # Lab: pseudonymised; the ordinary recipient: nothing, the sender gets a notice.
    await wait_until(lambda: rig.sink_for(LAB) and rig.sink_for(SENDER))
    (lab_copy,) = rig.sink_for(LAB)
    assert_no_phi(lab_copy)
    tokens = set(TOKEN_PATTERN.findall(lab_copy.decode()))
    assert len(tokens) == 1
    assert "teinte A3" in body_text(lab_copy)
    await asyncio.sleep(0.5)
    assert rig.sink_for(GMAIL) == []
    (notice,) = rig.sink_for(SENDER)
    assert_no_phi(notice)
    assert b"MSSant" in notice  # tells the sender what to use instead

    # The token maps back to the patient, for this lab, through the audited CLI.
    (token,) = tokens
    code = await asyncio.to_thread(
        main,
        ["reidentify", token, "--reason", "le labo demande le dossier", "-c", str(rig.config_file)],
    )
    assert code == 0

    # No planted identifier in any log line written along the way (the reidentify
    # output itself is the one place an identity is printed, and is left out here).
    logs = capsys.readouterr()
    log_text = "\n".join(
        line for line in (logs.out + logs.err).splitlines() if not line.startswith(token)
    )
    assert "decided" in log_text and "delivery" in log_text  # the logs were captured
    for value in PLANTED:
        assert value not in log_text, value


async def test_reidentify_prints_patient_and_lab(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    await send(rig, [LAB], message(LAB, PHI_BODY))
    await wait_until(lambda: rig.sink_for(LAB))
    (token,) = set(TOKEN_PATTERN.findall(rig.sink_for(LAB)[0].decode()))
    capsys.readouterr()
    code = await asyncio.to_thread(
        main, ["reidentify", token, "--reason", "appel du labo", "-c", str(rig.config_file)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert token in out and "labo-dupont.fr" in out and "DUPONT" in out


async def test_two_labs_get_different_tokens(rig: Rig) -> None:
    await send(rig, [LAB, LAB2, LAB_HTTPS], message(f"{LAB}, {LAB2}, {LAB_HTTPS}", PHI_BODY))
    await wait_until(lambda: rig.sink_for(LAB) and rig.sink_for(LAB2) and rig.lab.uploads)
    t1 = set(TOKEN_PATTERN.findall(rig.sink_for(LAB)[0].decode()))
    t2 = set(TOKEN_PATTERN.findall(rig.sink_for(LAB2)[0].decode()))
    upload = rig.lab.uploads[0]
    t3 = set(TOKEN_PATTERN.findall(upload["message"].decode()))
    assert len(t1) == len(t2) == len(t3) == 1
    assert len(t1 | t2 | t3) == 3
    for copy in (rig.sink_for(LAB)[0], rig.sink_for(LAB2)[0], upload["message"]):
        assert_no_phi(copy)
    assert rig.sink_for(LAB)[0] != rig.sink_for(LAB2)[0]


async def test_own_data_only_reminders(rig: Rig) -> None:
    own = message(DUPONT.email, "Rappel : Jean DUPONT, rendez-vous le 12/12 à 9h.", "Rappel")
    other = message(
        DUPONT.email, "Rappel : Sophie LEGRAND, née le 14/03/1982, rendez-vous à 10h.", "Rappel"
    )
    await send(rig, [DUPONT.email], own)
    await wait_until(lambda: rig.sink_for(DUPONT.email))
    (got,) = rig.sink_for(DUPONT.email)
    assert "Jean DUPONT" in body_text(got)  # the patient's own data reaches the patient

    await send(rig, [DUPONT.email], other)
    await wait_until(lambda: rig.sink_for(SENDER))
    await asyncio.sleep(0.5)
    assert len(rig.sink_for(DUPONT.email)) == 1  # the other patient's reminder never left
    (notice,) = rig.sink_for(SENDER)
    assert_no_phi(notice)


async def test_ordinary_recipient_without_findings_is_delivered(rig: Rig) -> None:
    await send(rig, [GMAIL], message(GMAIL, "Merci pour le déjeuner, à jeudi."))
    await wait_until(lambda: rig.sink_for(GMAIL))
    assert "Merci pour le déjeuner" in body_text(rig.sink_for(GMAIL)[0])


async def test_unreachable_operator_keeps_the_message_queued(rig: Rig) -> None:
    await rig.operator.__aexit__(None, None, None)  # operator down
    await send(rig, [DR], message(DR, PHI_BODY))

    def waiting() -> list[Any]:
        return [e for e in rig.service.queue.list() if e.connector == "mssante" and e.attempts >= 2]

    await wait_until(waiting)
    (entry,) = waiting()
    assert entry.recipients == (DR,)
    assert "unreachable" in entry.last_error
    assert rig.operator.messages == []
    # Never re-routed: nothing with the patient's data went anywhere else.
    for m in rig.sink.messages:
        assert_no_phi(m.data)
    assert re.search(rb"DUPONT", b"".join(m.data for m in rig.sink.messages)) is None


@pytest.mark.parametrize(
    ("rig", "reason"),
    [
        ("untrusted-operator", "operator certificate refused"),
        ("missing-client-cert", "cannot read"),
    ],
    indirect=["rig"],
)
async def test_tls_trust_failures_keep_the_message_queued(rig: Rig, reason: str) -> None:
    await send(rig, [DR, LAB], message(f"{DR}, {LAB}", PHI_BODY))
    await wait_until(lambda: rig.sink_for(LAB))  # the lab copy is unaffected

    def waiting() -> list[Any]:
        return [e for e in rig.service.queue.list() if e.connector == "mssante" and e.attempts >= 2]

    await wait_until(waiting)
    (entry,) = waiting()
    assert entry.recipients == (DR,)
    assert reason in entry.last_error
    assert rig.operator.messages == []
    # Nothing with the patient's identity went anywhere else.
    for m in rig.sink.messages:
        assert_no_phi(m.data)
        assert DR not in m.recipients


async def test_patient_address_with_a_bad_ins_is_rejected_not_rerouted(rig: Rig) -> None:
    good = "279035121518989@patient.mssante.fr"
    bad = "279035121518988@patient.mssante.fr"  # wrong key
    await send(rig, [good, bad], message(f"{good}, {bad}", PHI_BODY))
    await wait_until(lambda: rig.operator.messages and rig.sink_for(SENDER))
    assert [m.rcpt_tos for m in rig.operator.messages] == [[good]]
    await asyncio.sleep(0.3)
    assert rig.sink_for(bad) == []  # not sent through the ordinary relay either
    (notice,) = rig.sink_for(SENDER)
    assert_no_phi(notice)
