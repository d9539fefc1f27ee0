"""S/MIME encryption to a lab certificate, decrypted with the lab's key."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from crypto.certs import issue, make_ca
from crypto.smime import encrypt_message, outer_header_lines
from gateway.errors import ConfigError

PSEUDONYMISED = (
    b"From: cabinet@cabinet.test\r\n"
    b"To: commandes@labo-dupont.fr\r\n"
    b"Subject: Couronne 36 pour PAT-7KQ3M-2XF9A\r\n"
    b"Message-ID: <m1@cabinet.test>\r\n"
    b"Date: Sun, 29 Nov 2026 05:00:00 +0000\r\n"
    b"X-Practice-Note: interne\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Teinte A2, patient PAT-7KQ3M-2XF9A, n\xc3\xa9e 1980.\r\n"
)


def test_encrypted_message_decrypts_to_the_pseudonymised_content() -> None:
    ca = make_ca("Lab CA", key_type="rsa")
    lab = issue(ca, "labo-dupont.fr", email=True, server=False, key_type="rsa")
    out = encrypt_message(PSEUDONYMISED, lab.cert_pem())

    assert b"Teinte A2" not in out and b"1980" not in out
    msg = email.message_from_bytes(out, policy=email.policy.default)
    assert msg.get_content_type() == "application/pkcs7-mime"
    assert msg.get_param("smime-type") == "enveloped-data"
    assert msg["To"] == "commandes@labo-dupont.fr"
    assert msg["Message-ID"] == "<m1@cabinet.test>"
    assert msg["X-Practice-Note"] is None  # only delivery headers stay outside

    decrypted = pkcs7.pkcs7_decrypt_smime(out, lab.cert, lab.key, [])  # type: ignore[arg-type]
    assert decrypted == PSEUDONYMISED


def test_content_cipher_is_aes256() -> None:
    ca = make_ca("Lab CA", key_type="rsa")
    lab = issue(ca, "labo-dupont.fr", email=True, server=False, key_type="rsa")
    out = encrypt_message(PSEUDONYMISED, lab.cert_pem())
    msg = email.message_from_bytes(out, policy=email.policy.default)
    der = msg.get_payload(decode=True)
    assert isinstance(der, bytes)
    aes256_cbc_oid = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42
    aes128_cbc_oid = bytes.fromhex("0609608648016503040102")  # 2.16.840.1.101.3.4.1.2
    assert aes256_cbc_oid in der
    assert aes128_cbc_oid not in der


def test_wrong_key_cannot_decrypt() -> None:
    ca = make_ca("Lab CA", key_type="rsa")
    lab = issue(ca, "labo-dupont.fr", email=True, server=False, key_type="rsa")
    other = issue(ca, "labo-autre.fr", email=True, server=False, key_type="rsa")
    out = encrypt_message(PSEUDONYMISED, lab.cert_pem())
    with pytest.raises(ValueError):
        pkcs7.pkcs7_decrypt_smime(out, other.cert, other.key, [])  # type: ignore[arg-type]


def test_unusable_certificates_are_config_errors() -> None:
    ca = make_ca("Lab CA", key_type="rsa")
    ec_cert = issue(ca, "ec.test", email=True, server=False)
    now = dt.datetime.now(dt.UTC)
    expired = issue(
        ca,
        "old.test",
        key_type="rsa",
        not_before=now - dt.timedelta(days=9),
        not_after=now - dt.timedelta(days=1),
    )
    with pytest.raises(ConfigError, match="RSA"):
        encrypt_message(PSEUDONYMISED, ec_cert.cert_pem())
    with pytest.raises(ConfigError, match="expired"):
        encrypt_message(PSEUDONYMISED, expired.cert_pem())
    with pytest.raises(ConfigError, match="PEM"):
        encrypt_message(PSEUDONYMISED, ca.cert.public_bytes(serialization.Encoding.DER))


def test_outer_headers_keep_folded_lines() -> None:
    data = b"Subject: a\r\n long\r\nX-Secret: s\r\n more\r\nTo: x@y\r\n\r\nbody"
    assert outer_header_lines(data) == [b"Subject: a\r\n long", b"To: x@y"]
