"""AES-256-GCM sealing for data at rest (spool, quarantine, vault, roster).

Format of a sealed blob: b"PQ1" | version (u32 BE) | nonce (12 bytes) | ciphertext+tag.
The key version lets old blobs open after a data-key rotation. The caller's `aad`
(a purpose label such as b"spool:<id>") binds a blob to its place, so a blob copied
to another place does not open.

Random 96-bit nonces: safe for far more than the 2^32 messages per key NIST allows
for random nonces over a practice's lifetime; rotate the data key yearly regardless.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.keys import Keyring

MAGIC = b"PQ1"
_HEADER = struct.Struct(">3sI12s")
HEADER_SIZE = _HEADER.size


class SealError(Exception):
    """A blob does not open: wrong key, wrong place, or tampered. Carries no content."""


class Sealer:
    def __init__(self, ring: Keyring) -> None:
        self._ciphers = {v: AESGCM(k) for v, k in ring.data_keys.items()}
        self._version = ring.current_data_version

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        head = _HEADER.pack(MAGIC, self._version, nonce)
        return head + self._ciphers[self._version].encrypt(nonce, plaintext, head + aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < HEADER_SIZE + 16:
            raise SealError("sealed blob too short")
        magic, version, _nonce = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise SealError("not a sealed blob")
        cipher = self._ciphers.get(version)
        if cipher is None:
            raise SealError(f"no data key version {version}")
        head = blob[:HEADER_SIZE]
        try:
            return cipher.decrypt(_nonce, blob[HEADER_SIZE:], head + aad)
        except InvalidTag as exc:
            raise SealError("sealed blob does not authenticate") from exc
