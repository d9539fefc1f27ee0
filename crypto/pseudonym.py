"""Keyed pseudonyms: patient tokens, patient keys and finding digests (HMAC-SHA256).

Trust boundary: inputs are identities (PHI) and secret keys; outputs are opaque
strings that may be logged, audited and sent to labs.

Invariants:
- A token is `PAT-` + 10 Crockford base32 characters in two groups of 5 (50 bits of
  HMAC-SHA256(pseudonym_key, audience + "\\n" + patient)). Same patient and audience
  give the same token; another audience gives an unrelated token.
- Digests are HMAC-SHA256 under the digest key, never a plain hash: identifier spaces
  (NIR, phone numbers) are small enough to brute-force an unkeyed hash.
- Nothing here logs or raises with an input value.
"""

from __future__ import annotations

import hashlib
import re

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TOKEN_PATTERN = re.compile(r"PAT-[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}")
# 50 bits: collisions become likely only around 2^25 (33 million) patients per lab.
TOKEN_BITS = 50
# Digest length in hex characters: 64 bits, enough to tell values apart in an audit.
DIGEST_HEX = 16


# SHA-256 block size in bytes (RFC 2104: keys longer than a block are hashed first).
_BLOCK_BYTES = 64
# Keyed prototypes kept per key: a keyring holds a handful of keys (pseudonym, digest), so
# 8 entries bound the cache even across key reloads in a long-lived process.
_MAX_PROTOTYPES = 8
_prototypes: dict[bytes, tuple[hashlib._Hash, hashlib._Hash]] = {}


def keyed_hmac_states(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 states that have absorbed the key's inner and outer pads (RFC 2104).

    Copying them costs less than absorbing the key again: two of the four SHA-256
    compressions of a short HMAC are the key pads, redone by every hmac.digest call.
    The HMAC of a message is then: inner = copy of the first, update(message); outer =
    copy of the second, update(inner.digest()); outer.digest() (as `hmac_sha256` does, and the
    scan engine for its finding digests).
    """
    prototype = _prototypes.get(key)
    if prototype is None:
        block = hashlib.sha256(key).digest() if len(key) > _BLOCK_BYTES else key
        block = block.ljust(_BLOCK_BYTES, b"\0")
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        if len(_prototypes) >= _MAX_PROTOTYPES:
            _prototypes.clear()
        prototype = _prototypes[key] = (inner, outer)
    return prototype


def hmac_sha256(key: bytes, message: str) -> bytes:
    """HMAC-SHA256(key, message): equal to hmac.digest, from copies of keyed prototypes."""
    inner_proto, outer_proto = keyed_hmac_states(key)
    inner = inner_proto.copy()
    inner.update(message.encode("utf-8"))
    outer = outer_proto.copy()
    outer.update(inner.digest())
    return outer.digest()


def normalise_audience(audience: str) -> str:
    return audience.strip().lower()


def patient_token(pseudonym_key: bytes, audience: str, patient: str) -> str:
    """The stable token of `patient` (an opaque patient key) for one audience."""
    raw = int.from_bytes(
        hmac_sha256(pseudonym_key, normalise_audience(audience) + "\n" + patient)[:8]
    )
    value = raw >> (64 - TOKEN_BITS)
    chars = [CROCKFORD[(value >> shift) & 31] for shift in range(45, -5, -5)]
    return "PAT-" + "".join(chars[:5]) + "-" + "".join(chars[5:])


def patient_key(pseudonym_key: bytes, normalised_identity: str) -> str:
    """Opaque, stable patient key from a normalised identity ("nom|prenom|aaaa-mm-jj").

    Keyed with the pseudonym key so that the key, like the tokens, survives a data-key
    rotation and cannot be recomputed without the keyring.
    """
    return "p-" + hmac_sha256(pseudonym_key, "patient\n" + normalised_identity).hex()[:24]


def value_digest(digest_key: bytes, kind: str, normalised_value: str) -> str:
    """Keyed hash of an identifier value, safe to log and audit."""
    return hmac_sha256(digest_key, kind + "\n" + normalised_value).hex()[:DIGEST_HEX]
