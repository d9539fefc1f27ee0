"""End to end: the real `portique serve` process runs the whole product.

practice client --SMTP--> `portique serve` (subprocess: runtime with roster, scan engine,
vault, audit trail, metrics, admin console) --relay--> an aiosmtpd sink in this test.

Planted identifiers of a rostered patient must never reach the lab copy, the gateway's
logs or its audit database; the lab's token re-identifies through the CLI; the audit
trail verifies after the gateway stops; a roster import takes effect without restart.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import smtplib
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from crypto.pseudonym import TOKEN_PATTERN
from tests.integration._serve import ServeProcess, run_cli
from tests.relay._helpers import Sink, wait_until

pytestmark = pytest.mark.timeout(120)

SENDER = "dr.martin@cabinet-du-parc.fr"
LAB = "commandes@labo-dupont.fr"
GMAIL = "ami.patient@gmail.com"
PATIENT_EMAIL = "jean.dupont@patients.example"

ROSTER_CSV = (
    "nom;prenom;date_naissance;nir;telephone;email\n"
    f"DUPONT;Jean;02/11/1975;175119912611142;06 12 34 56 78;{PATIENT_EMAIL}\n"
)
# Second patient, imported while the gateway runs (NIR key: 97 - 2850575112233 % 97 = 91).
ROUX_EMAIL = "camille.roux@example.org"
ROUX_NIR = "285057511223391"
ROSTER_CSV_WITH_ROUX = ROSTER_CSV + f"ROUX;Camille;14/05/1985;{ROUX_NIR};;{ROUX_EMAIL}\n"

PLANTED = (
    "DUPONT",
    "Dupont",
    "175119912611142",
    "1 75 11 99 126 111 42",
    "06 12 34 56 78",
    "0612345678",
    "02/11/1975",
    PATIENT_EMAIL,
)
LAB_ORDER = (
    "Bonjour,\r\n"
    "Couronne zircone sur 36, teinte A3, pour M. Jean DUPONT, né le 02/11/1975,\r\n"
    "NIR 1 75 11 99 126 111 42, tél. 06 12 34 56 78.\r\n"
    "Merci.\r\n"
)


def write_config(tmp: Path, sink_port: int) -> Path:
    config = tmp / "portique.toml"
    config.write_text(
        f"""
data_dir = "{tmp / "data"}"
log_level = "info"

[smtp]
listen = "127.0.0.1:0"
hostname = "portique.test"

[queue]
retry_initial = 0.2
retry_max = 1.0
poll_interval = 0.1

[connectors.relay]
host = "127.0.0.1"
port = {sink_port}
tls = "none"

[[routes]]
name = "labs"
match = ["*@labo-dupont.fr"]
action = "pseudonymise"
connector = "relay"

[[routes]]
name = "patients"
match = ["*@patients.example", "*@example.org"]
action = "own-data-only"
connector = "relay"

[[routes]]
name = "default"
match = ["*"]
action = "reject-if-phi"
connector = "relay"

[practice]
name = "Cabinet dentaire du Parc"
emails = ["{SENDER}"]

[admin]
listen = "127.0.0.1:0"

[metrics]
listen = "127.0.0.1:0"
"""
    )
    return config


def message(to: str, body: str, subject: str = "Commande couronne 36") -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Message-ID: <serve-1@cabinet-du-parc.fr>\r\nDate: Sun, 29 Nov 2026 05:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}"
    ).encode()


def send(port: int, rcpts: list[str], data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("cabinet.test")
        refused = client.sendmail(SENDER, rcpts, data)
    assert refused == {}


def body_text(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def http_get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as resp:  # noqa: S310
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = await Sink().start()
    yield s
    await s.stop()


def import_roster(config: Path, csv_text: str) -> str:
    csv_path = config.parent / "roster.csv"
    csv_path.write_text(csv_text, encoding="utf-8")
    done = run_cli(config, "roster", "import", str(csv_path))
    assert done.returncode == 0, done.stderr
    csv_path.unlink()
    return done.stdout


async def test_serve_runs_the_whole_product(tmp_path: Path, sink: Sink) -> None:
    config = write_config(tmp_path, sink.port)
    assert run_cli(config, "keys", "init").returncode == 0
    import_roster(config, ROSTER_CSV)
    gateway = ServeProcess(config).start()
    try:
        assert gateway.metrics_port and gateway.admin_port

        # One lab order to the lab (pseudonymised), a gmail friend (reject-if-phi: the
        # sender gets a notice) and the patient's own rostered address (own data only).
        await asyncio.to_thread(
            send, gateway.smtp_port, [LAB, GMAIL, PATIENT_EMAIL], message(LAB, LAB_ORDER)
        )
        await wait_until(
            lambda: {r for m in sink.messages for r in m.recipients} >= {LAB, SENDER},
            within=30,
        )
        lab_copy = next(m for m in sink.messages if LAB in m.recipients)
        lab_text = lab_copy.data.decode("utf-8", "replace") + body_text(lab_copy.data)
        for value in PLANTED:
            assert value not in lab_text, value
        assert "Couronne zircone sur 36, teinte A3" in lab_text  # the order survives
        tokens = set(TOKEN_PATTERN.findall(lab_text))
        assert tokens, lab_text

        # The gmail copy is not sent; the sender is told, without patient data.
        assert all(GMAIL not in m.recipients for m in sink.messages)
        notice = next(m for m in sink.messages if SENDER in m.recipients)
        assert notice.mail_from in ("", "<>")
        notice_text = notice.data.decode("utf-8", "replace")
        # The refused recipient is named by its domain only: a bounce names no patient.
        assert "@gmail.com" in notice_text
        assert "ami.patient" not in notice_text
        for value in PLANTED:
            assert value not in notice_text, value

        # The lab's token re-identifies (audited) through the CLI.
        token = sorted(tokens)[0]
        shown = await asyncio.to_thread(
            run_cli, config, "reidentify", token, "--reason", "appel du laboratoire"
        )
        assert shown.returncode == 0, shown.stderr
        assert "DUPONT" in shown.stdout.upper()

        # Metrics and readiness on the metrics port.
        status, body = await asyncio.to_thread(
            http_get, f"http://127.0.0.1:{gateway.metrics_port}/readyz"
        )
        assert status == 200, body
        ready = json.loads(body)
        assert ready["ready"] and ready["checks"]["audit_writable"], ready
        status, body = await asyncio.to_thread(
            http_get, f"http://127.0.0.1:{gateway.metrics_port}/metrics"
        )
        assert status == 200
        metrics = body.decode()
        assert "portique_" in metrics
        for value in PLANTED:
            assert value not in metrics, value

        # The admin console answers over TLS, with the certificate it generated.
        tls = ssl.create_default_context(cafile=str(tmp_path / "data" / "admin" / "tls.pem"))
        tls.check_hostname = False
        status, page = await asyncio.to_thread(
            http_get, f"https://127.0.0.1:{gateway.admin_port}/login", tls
        )
        assert status == 200
        assert b"<form" in page.lower()
    finally:
        exit_status = await asyncio.to_thread(gateway.stop)
    assert exit_status == 0, gateway.stderr_tail()

    verified = await asyncio.to_thread(run_cli, config, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # No planted value in the gateway's logs, nor in the audit database's bytes.
    logs = gateway.output()
    assert "decided" in logs and "delivery" in logs  # the logs are there to grep
    for value in PLANTED:
        assert value not in logs, value
    audit_bytes = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("audit.sqlite*"))
    assert b"reidentified" in audit_bytes
    for value in PLANTED:
        assert value.encode() not in audit_bytes, value


async def test_roster_import_takes_effect_without_restart(tmp_path: Path, sink: Sink) -> None:
    config = write_config(tmp_path, sink.port)
    assert run_cli(config, "keys", "init").returncode == 0
    assert "no restart needed" not in import_roster(config, ROSTER_CSV)  # none running
    gateway = ServeProcess(config).start()
    own_data = message(
        ROUX_EMAIL, f"Bonjour Mme ROUX,\r\nVotre NIR {ROUX_NIR} pour le devis.\r\n", "Devis"
    )
    try:
        # Not rostered yet: on the patients route but nobody's own address, so her
        # NIR is not hers to receive: it never reaches her (removed, or held).
        await asyncio.to_thread(send, gateway.smtp_port, [ROUX_EMAIL], own_data)
        await wait_until(lambda: len(sink.messages) >= 1, within=30)
        await asyncio.sleep(0.5)  # a notice and a copy may both come
        assert all(ROUX_NIR not in body_text(m.data) for m in sink.messages)
        before = len(sink.messages)

        said = import_roster(config, ROSTER_CSV_WITH_ROUX)
        assert "no restart needed" in said
        await wait_until(lambda: "roster_reloaded" in gateway.output(), within=30)

        # Now rostered: her own data reaches her, with no restart in between.
        await asyncio.to_thread(send, gateway.smtp_port, [ROUX_EMAIL], own_data)
        await wait_until(
            lambda: any(ROUX_EMAIL in m.recipients for m in sink.messages[before:]), within=30
        )
        delivered = next(m for m in sink.messages[before:] if ROUX_EMAIL in m.recipients)
        assert ROUX_NIR in body_text(delivered.data)
    finally:
        exit_status = await asyncio.to_thread(gateway.stop)
    assert exit_status == 0, gateway.stderr_tail()
    logs = gateway.output()
    assert "roster_reloaded" in logs
    for value in (ROUX_NIR, ROUX_EMAIL, "ROUX"):
        assert value not in logs, value


def test_a_busy_port_is_a_clear_start_up_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, 2525)
        config.write_text(
            config.read_text().replace(
                '[metrics]\nlisten = "127.0.0.1:0"', f'[metrics]\nlisten = "127.0.0.1:{port}"'
            )
        )
        done = run_cli(config, "serve", timeout=60)
    assert done.returncode == 2
    assert f"metrics.listen 127.0.0.1:{port}: cannot listen" in done.stderr
    assert "Traceback" not in done.stderr
