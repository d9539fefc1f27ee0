"""`portique hash-password` prints an argon2id hash that verifies the password read from stdin."""

from __future__ import annotations

import io

import pytest
from argon2 import PasswordHasher

from gateway.cli import main


def test_hash_password_reads_stdin_and_prints_argon2id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-Mot-de-passe\n"))
    assert main(["hash-password", "--stdin"]) == 0
    digest = capsys.readouterr().out.strip()
    assert digest.startswith("$argon2id$")
    assert PasswordHasher().verify(digest, "s3cret-Mot-de-passe")
    assert "s3cret" not in digest


def test_hash_password_refuses_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["hash-password", "--stdin"]) == 2
