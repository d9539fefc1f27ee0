"""Audit-trail cryptography: canonical encoding, record MACs, Ed25519 checkpoints.

Trust boundary: the audit database and exported checkpoint files are untrusted input
when verified (anyone with file access may have edited them). The private signing key
(`Keyring.audit_signing_key`) and the digest key never leave this process.

Invariants:
- `canonical_json` is the one byte encoding that is hashed and signed: sorted keys,
  no whitespace, UTF-8. Signing and verifying the same mapping always agree.
- A checkpoint signature covers every field of its payload; `verify_signature` never
  raises on bad input, it returns False.
- The record MAC key is derived from the digest key with a fixed label, so a MAC
  for audit records cannot be replayed as a keyed hash of an identifier.
- `sha256_hex` and `record_mac` give exactly hashlib's and hmac's answers; they start
  from copies of prepared SHA-256 states (issue 7: the audit writer hashes and MACs
  every record, and each `hashlib.sha256()` / `hmac.new()` looks the algorithm up in
  OpenSSL again, and HMAC absorbs its key pads again, ~15 % of that thread).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from crypto.pseudonym import hmac_sha256

_MAC_LABEL = b"portique audit record mac v1"


def canonical_json(obj: Any) -> bytes:
    """The byte string that is hashed or signed for `obj` (JSON-compatible values only)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


# An empty SHA-256 state: copying it skips the per-call algorithm look-up of
# `hashlib.sha256()` (OpenSSL's EVP_MD fetch), which costs as much as hashing a record.
_EMPTY_SHA256 = hashlib.sha256()


def sha256_hex(data: bytes) -> str:
    """hashlib.sha256(data).hexdigest()."""
    state = _EMPTY_SHA256.copy()
    state.update(data)
    return state.hexdigest()


def record_mac_key(digest_key: bytes) -> bytes:
    """A key dedicated to audit-record MACs, derived from the digest key."""
    return hmac.new(digest_key, _MAC_LABEL, hashlib.sha256).digest()


def record_mac(mac_key: bytes, record_hash: str) -> str:
    """HMAC-SHA256 of the (hex, ASCII) record hash, hex: hmac.new(...).hexdigest(), from
    copies of the key's prepared states (crypto.pseudonym.keyed_hmac_states)."""
    return hmac_sha256(mac_key, record_hash).hex()


def check_record_mac(mac_key: bytes, record_hash: str, mac: str) -> bool:
    return hmac.compare_digest(record_mac(mac_key, record_hash), mac)


def public_key_of(key: Ed25519PrivateKey) -> Ed25519PublicKey:
    return key.public_key()


def public_key_text(key: Ed25519PublicKey) -> str:
    """Raw 32-byte public key, base64: short enough to print, pin and compare."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Parse `public_key_text` output; ValueError if it is not a raw Ed25519 key."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public key is not base64") from exc
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(key: Ed25519PublicKey) -> str:
    """Short fingerprint of a public key: first 16 hex digits of SHA-256 of its raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_payload(key: Ed25519PrivateKey, payload: Mapping[str, Any]) -> str:
    """Ed25519 signature of `canonical_json(payload)`, base64."""
    return base64.b64encode(key.sign(canonical_json(dict(payload)))).decode("ascii")


def verify_signature(key: Ed25519PublicKey, payload: Mapping[str, Any], signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, canonical_json(dict(payload)))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True
