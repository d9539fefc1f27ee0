"""S/MIME encryption of a lab's copy to the lab's certificate (CMS EnvelopedData, AES-256).

Input: the pseudonymised copy (bytes, already transformed for this lab by the
pipeline) and the lab's certificate (PEM, RSA: cryptography's CMS envelope supports
RSA key transport). Output: an RFC 8551 `application/pkcs7-mime;
smime-type=enveloped-data` message.

Invariants:
- The whole copy (its headers and body) is the encrypted inner entity, byte for byte
  (PKCS7Options.Binary: no canonicalisation), so decrypting gives exactly the copy.
- Only the headers needed for delivery and threading stay outside in clear: From, To,
  Cc, Reply-To, Sender, Date, Message-ID, In-Reply-To, References, Subject (already
  pseudonymised) and MSSanté X-MSS-* headers. Nothing else leaks outside the envelope.
- The content cipher is AES-256-CBC (cryptography's envelope builder); the lab's
  certificate is checked for expiry before use.
"""

from __future__ import annotations

import datetime as dt
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from gateway.errors import ConfigError

OUTER_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "reply-to",
        "sender",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "subject",
    }
)
_FIELD = re.compile(rb"^([!-9;-~]+):")


def load_recipient_certificate(cert_pem: bytes, now: dt.datetime | None = None) -> x509.Certificate:
    """The lab certificate; ConfigError if unusable (not PEM, not RSA, expired)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ConfigError("smime_cert: not a PEM certificate") from exc
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise ConfigError("smime_cert: S/MIME encryption needs an RSA certificate")
    now = now or dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ConfigError("smime_cert: the lab certificate is expired or not yet valid")
    return cert


def outer_header_lines(data: bytes) -> list[bytes]:
    """The delivery headers of `data`, folded lines kept, each without its line end."""
    sep = b"\r\n" if b"\r\n" in data[:4096] else b"\n"
    head = data.partition(sep + sep)[0]
    out: list[bytes] = []
    keep = False
    for line in head.split(sep):
        if line[:1] in (b" ", b"\t"):
            if keep and out:
                out[-1] += b"\r\n" + line
            continue
        match = _FIELD.match(line)
        name = match.group(1).decode("ascii").lower() if match else ""
        keep = name in OUTER_HEADERS or name.startswith("x-mss-")
        if keep:
            out.append(line)
    return out


def encrypt_message(data: bytes, cert_pem: bytes) -> bytes:
    """Encrypt a whole message to `cert_pem`; returns an S/MIME message (CRLF lines)."""
    cert = load_recipient_certificate(cert_pem)
    smime = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(data)
        .set_content_encryption_algorithm(algorithms.AES256)
        .add_recipient(cert)
        .encrypt(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.Binary])
    )
    body = smime.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    outer = b"".join(line + b"\r\n" for line in outer_header_lines(data))
    return outer + body
