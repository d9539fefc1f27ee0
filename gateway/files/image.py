"""JPEG and PNG photographs: metadata stripped, pixels untouched.

Trust boundary: untrusted bytes, walked segment by segment (JPEG markers, PNG chunks)
without decoding pixels. Output: the same image without EXIF, XMP, IPTC/Photoshop
resources, JPEG comments and PNG text/eXIf/tIME chunks.

Invariants: JPEG entropy-coded data (from the first SOS to the end) and every PNG chunk
that is kept (IHDR, PLTE, IDAT, IEND, colour and physical-size chunks) are copied
byte-for-byte. Metadata text is extracted as fields so that reject-if-phi and
own-data-only routes see it; on a transforming route it is always removed, never
rewritten. A structure that cannot be walked raises ContentError (-> hold).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence

from gateway.errors import ContentError, LimitExceeded
from gateway.files.base import ExtractedFile, FileHandler, HandlerContext, RewriteSession
from gateway.scan.model import FieldKind, TextField

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# JPEG APPn markers that carry metadata: APP1 (EXIF, XMP), APP12 (Ducky/picture info),
# APP13 (IPTC / Photoshop IRB); COM (0xFE) is a free comment.
_JPEG_DROP = frozenset({0xE1, 0xEC, 0xED, 0xFE})
_JPEG_SOS = 0xDA
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_PNG_DROP = frozenset({b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"})
# A zTXt/iTXt chunk is decompressed for scanning up to 1 MiB: text metadata is small,
# and the cap stops a compressed-text bomb.
MAX_TEXT_CHUNK = 1024 * 1024
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e\xa0-\xff]{4,}")


def _printable_text(blob: bytes) -> str:
    return " ".join(m.group().decode("latin-1") for m in _PRINTABLE_RUN.finditer(blob))


def _walk_jpeg(data: bytes) -> tuple[list[bytes], list[str], bool]:
    """(kept pieces, metadata texts, anything dropped)."""
    if not data.startswith(JPEG_SOI):
        raise ContentError("JPEG structure is invalid")
    kept: list[bytes] = [JPEG_SOI]
    texts: list[str] = []
    dropped = False
    pos = 2
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise ContentError("JPEG structure is invalid")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            kept.append(data[pos : pos + 2])
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise ContentError("JPEG structure is invalid")
        if marker in _JPEG_DROP:
            dropped = True
            text = _printable_text(data[pos + 4 : end])
            if text:
                texts.append(text)
        else:
            kept.append(data[pos:end])
        if marker == _JPEG_SOS:
            kept.append(data[end:])  # entropy-coded data and everything after, verbatim
            return kept, texts, dropped
        pos = end


def _walk_png(data: bytes) -> tuple[list[bytes], list[str], bool]:
    kept: list[bytes] = [PNG_SIGNATURE]
    texts: list[str] = []
    dropped = False
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise ContentError("PNG structure is invalid")
        (length,) = struct.unpack_from(">I", data, pos)
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ContentError("PNG structure is invalid")
        body = data[pos + 8 : pos + 8 + length]
        if ctype in _PNG_DROP:
            dropped = True
            texts.append(_png_text(ctype, body))
        else:
            kept.append(data[pos:end])
        pos = end
        if ctype == b"IEND":
            kept.append(data[pos:])  # trailing bytes are kept as received
            break
    return kept, [t for t in texts if t], dropped


def _png_text(ctype: bytes, body: bytes) -> str:
    if ctype == b"zTXt":
        keyword, _, rest = body.partition(b"\x00")
        return keyword.decode("latin-1") + " " + _inflate(rest[1:]).decode("latin-1")
    if ctype == b"iTXt":
        keyword, _, rest = body.partition(b"\x00")
        compressed = rest[:1] == b"\x01"
        rest = rest[2:]
        _lang, _, rest = rest.partition(b"\x00")
        _translated, _, text = rest.partition(b"\x00")
        raw = _inflate(text) if compressed else text
        return keyword.decode("latin-1") + " " + raw.decode("utf-8", "replace")
    return _printable_text(body)


def _inflate(blob: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(blob, MAX_TEXT_CHUNK)
    except zlib.error as exc:
        raise ContentError("PNG text chunk is corrupt") from exc
    if inflater.unconsumed_tail:
        raise LimitExceeded("PNG text chunk too large")
    return out


class ImageHandler(FileHandler):
    format = "image"

    def sniff(self, data: bytes) -> bool:
        return data.startswith(PNG_SIGNATURE) or data.startswith(JPEG_SOI + b"\xff")

    def extract(self, data: bytes, ctx: HandlerContext) -> ExtractedFile:
        if data.startswith(PNG_SIGNATURE):
            kept, texts, dropped = _walk_png(data)
            name = "png"
        else:
            kept, texts, dropped = _walk_jpeg(data)
            name = "jpeg"
        stripped = b"".join(kept)

        def rebuild(new_texts: Sequence[str], session: RewriteSession) -> bytes:
            return stripped

        fields = tuple(TextField(t, FieldKind.METADATA) for t in texts)
        return ExtractedFile(name, data, fields, rebuild, cleaned=dropped)


HANDLER: FileHandler = ImageHandler()
