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
from collections.abc import Iterator
from typing import BinaryIO

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


# --- chunked sealing for large spool and queue files ------------------------------------
#
# A large message is sealed as a sequence of frames so that neither the writer nor the
# reader holds two whole copies of it. Frame: length (u32 BE) | sealed blob. Each blob's
# AAD is the caller's aad + frame index (u64 BE) + final flag (1 byte): frames cannot be
# reordered, dropped, or moved to another file, and a file cut short (no final frame)
# does not open.

_FRAME_LEN = struct.Struct(">I")
_FRAME_AAD = struct.Struct(">QB")
# 1 MiB of plaintext per frame: large enough that the 28-byte frame overhead is noise,
# small enough that a reader's working set stays bounded.
STREAM_CHUNK = 1024 * 1024


class StreamSealer:
    """Seals consecutive chunks of one stream; call `seal_chunk(..., final=True)` once, last."""

    def __init__(self, sealer: Sealer, aad: bytes) -> None:
        self._sealer = sealer
        self._aad = aad
        self._index = 0
        self._finished = False

    def seal_chunk(self, chunk: bytes, *, final: bool = False) -> bytes:
        if self._finished:
            raise SealError("stream already finished")
        blob = self._sealer.seal(chunk, self._aad + _FRAME_AAD.pack(self._index, int(final)))
        self._index += 1
        self._finished = final
        return _FRAME_LEN.pack(len(blob)) + blob


def open_stream(sealer: Sealer, fh: BinaryIO, aad: bytes) -> Iterator[bytes]:
    """Open, frame by frame, a stream written by a StreamSealer from a seekable binary file.

    Yields plaintext chunks in order; raises SealError on any tampering or truncation
    (the caller must not act on chunks already yielded before the whole stream opened).
    """
    start = fh.tell()
    size = fh.seek(0, 2) - start
    fh.seek(start)
    pos = 0
    index = 0
    while pos < size:
        head = fh.read(_FRAME_LEN.size)
        if len(head) != _FRAME_LEN.size:
            raise SealError("truncated frame header")
        (length,) = _FRAME_LEN.unpack(head)
        blob = fh.read(length)
        if len(blob) != length:
            raise SealError("truncated frame")
        pos += _FRAME_LEN.size + length
        final = pos == size
        yield sealer.open(blob, aad + _FRAME_AAD.pack(index, int(final)))
        index += 1
    if index == 0:
        raise SealError("empty sealed stream")


def open_stream_into(sealer: Sealer, fh: BinaryIO, aad: bytes) -> bytearray:
    """Open a whole stream into one buffer allocated once at its final size.

    Growing a buffer chunk by chunk costs up to twice the message in reallocations;
    the frame lengths give the plaintext size up front (each frame adds a fixed
    header and tag).
    """
    start = fh.tell()
    size = fh.seek(0, 2) - start
    fh.seek(start)
    plain = 0
    pos = 0
    while pos < size:
        head = fh.read(_FRAME_LEN.size)
        if len(head) != _FRAME_LEN.size:
            raise SealError("truncated frame header")
        (length,) = _FRAME_LEN.unpack(head)
        if length < HEADER_SIZE + 16:
            raise SealError("frame too short")
        plain += length - HEADER_SIZE - 16
        pos += _FRAME_LEN.size + length
        fh.seek(start + pos)
    if pos != size:
        raise SealError("truncated frame")
    fh.seek(start)
    out = bytearray(plain)
    offset = 0
    for chunk in open_stream(sealer, fh, aad):
        out[offset : offset + len(chunk)] = chunk
        offset += len(chunk)
    return out
