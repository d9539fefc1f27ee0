"""`portique check-config` reads the MSSanté client certificate and checks the NIL."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from crypto.certs import issue
from tests.conftest import TestPKI as PKI
from tests.integration._serve import run_cli

TRUST_LIST = Path(__file__).parent.parent / "data" / "mssante" / "listeblanchemssante-sample.xml"


def write_config(tmp: Path, cert: Path, key: Path, nil: str) -> Path:
    shutil.copy(TRUST_LIST, tmp / "trust.xml")
    config = tmp / "portique.toml"
    config.write_text(
        f"""
data_dir = "{tmp / "data"}"

[connectors.mssante]
host = "127.0.0.1"
port = 2587
client_cert = "{cert}"
client_key = "{key}"
ca_file = "{cert.parent / "ca.pem"}"
trust_list = "trust.xml"
nil = "{nil}"

[[routes]]
name = "mssante"
match = ["@mssante"]
action = "deliver"
connector = "mssante"
"""
    )
    return config


def test_reports_client_certificate_expiry_and_missing_nil(tmp_path: Path, pki: PKI) -> None:
    config = write_config(tmp_path, pki.client_cert, pki.client_key, nil="")
    done = run_cli(config, "check-config")
    assert done.returncode == 0, done.stdout + done.stderr
    expiry = pki.client.cert.not_valid_after_utc.strftime("%Y-%m-%d")
    assert f"client certificate expires on {expiry}" in done.stdout
    assert "WARNING connectors.mssante.nil is empty" in done.stdout

    config = write_config(tmp_path, pki.client_cert, pki.client_key, nil="Portique 1.0")
    done = run_cli(config, "check-config")
    assert done.returncode == 0
    assert "nil is empty" not in done.stdout
    assert "WARNING" not in done.stdout


def test_expired_or_soon_expiring_certificate(tmp_path: Path, pki: PKI) -> None:
    now = dt.datetime.now(dt.UTC)
    shutil.copy(pki.ca_file, tmp_path / "ca.pem")
    expired = issue(
        pki.ca,
        "expired.test",
        client=True,
        server=False,
        not_before=now - dt.timedelta(days=400),
        not_after=now - dt.timedelta(days=1),
    )
    expired.write(tmp_path / "expired.pem", tmp_path / "expired.key")
    config = write_config(tmp_path, tmp_path / "expired.pem", tmp_path / "expired.key", "P 1")
    done = run_cli(config, "check-config")
    assert done.returncode == 1
    assert "ERROR connectors.mssante: client certificate expired on" in done.stdout

    soon = issue(
        pki.ca,
        "soon.test",
        client=True,
        server=False,
        not_after=now + dt.timedelta(days=10),
    )
    soon.write(tmp_path / "soon.pem", tmp_path / "soon.key")
    config = write_config(tmp_path, tmp_path / "soon.pem", tmp_path / "soon.key", "P 1")
    done = run_cli(config, "check-config")
    assert done.returncode == 0
    assert "WARNING connectors.mssante: client certificate expires on" in done.stdout
    assert "renew it now" in done.stdout


def test_unreadable_certificate_fails_the_check(tmp_path: Path, pki: PKI) -> None:
    shutil.copy(pki.ca_file, tmp_path / "ca.pem")
    config = write_config(tmp_path, tmp_path / "missing.pem", tmp_path / "missing.key", "P 1")
    done = run_cli(config, "check-config")
    assert done.returncode == 1
    assert "ERROR connectors.mssante.client_cert" in done.stdout
