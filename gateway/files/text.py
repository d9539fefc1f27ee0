"""Plain-text attachments (notes, CSV exports, HTML saved as a file).

Trust boundary: untrusted bytes. Only bytes that decode as UTF-8, or as cp1252 without
control characters, count as text; anything else is left to other handlers or is an
unknown file. The whole text is one BODY field; the rebuilt file uses the same encoding
(characters it cannot encode become `?`, which can only remove information).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.errors import ContentError
from gateway.files.base import ExtractedFile, FileHandler, HandlerContext, RewriteSession
from gateway.scan.model import FieldKind, TextField

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def decode_text(data: bytes) -> tuple[str, str] | None:
    """(text, codec) if `data` is text, else None."""
    if data.startswith(b"\xef\xbb\xbf"):
        codec = "utf-8-sig"
    else:
        codec = "utf-8"
    for candidate in (codec, "cp1252"):
        try:
            text = data.decode(candidate)
        except UnicodeDecodeError:
            continue
        if _CONTROL.search(text):
            return None
        return text, candidate
    return None


class TextHandler(FileHandler):
    format = "text"

    def sniff(self, data: bytes) -> bool:
        return decode_text(data) is not None

    def extract(self, data: bytes, ctx: HandlerContext) -> ExtractedFile:
        decoded = decode_text(data)
        if decoded is None:
            raise ContentError("text file encoding is invalid")
        text, codec = decoded

        def rebuild(texts: Sequence[str], session: RewriteSession) -> bytes:
            return texts[0].encode(codec, "replace")

        return ExtractedFile("text", data, (TextField(text, FieldKind.BODY),), rebuild)


HANDLER: FileHandler = TextHandler()
