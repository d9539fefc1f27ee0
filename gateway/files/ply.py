"""PLY (Stanford polygon) meshes: intra-oral scans with colour.

Trust boundary: untrusted bytes. Names hide in the ASCII header before `end_header`:
`comment ...` lines (exocad / Shining 3D write `comment TextureFile <original file name>`)
and `obj_info ...` lines (Greg Turk's PLY specification). Output: the same file with only
those texts rewritten.

Invariant: the body after `end_header` (ascii or binary) is copied verbatim; element and
property lines are never changed, so geometry is bit-identical.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.errors import ContentError
from gateway.files.base import ExtractedFile, FileHandler, HandlerContext, RewriteSession
from gateway.scan.model import FieldKind, TextField

# A PLY header is a few hundred bytes; 64 KiB leaves room for long comment blocks while
# bounding the search for `end_header` in a large binary body.
MAX_HEADER_SIZE = 64 * 1024
_END_HEADER = re.compile(rb"(?:^|\n)end_header[ \t]*\r?\n")
_TEXT_LINE = re.compile(rb"^(comment|obj_info)([ \t]?)([^\r\n]*)(\r?)$", re.M)


class PlyHandler(FileHandler):
    format = "ply"

    def sniff(self, data: bytes) -> bool:
        return data.startswith((b"ply\n", b"ply\r\n"))

    def extract(self, data: bytes, ctx: HandlerContext) -> ExtractedFile:
        end = _END_HEADER.search(data, 0, MAX_HEADER_SIZE)
        if end is None or not self.sniff(data):
            raise ContentError("PLY header is malformed or too long")
        header = data[: end.end()]
        matches = list(_TEXT_LINE.finditer(header))
        fields = tuple(TextField(m.group(3).decode("latin-1"), FieldKind.METADATA) for m in matches)
        body_start = end.end()

        def rebuild(texts: Sequence[str], session: RewriteSession) -> bytes:
            out: list[bytes | memoryview] = []
            pos = 0
            for m, text in zip(matches, texts, strict=True):
                out.append(header[pos : m.start()])
                value = text.replace("\r", " ").replace("\n", " ").encode("latin-1", "replace")
                out.append(m.group(1) + (m.group(2) or b" ") + value + m.group(4))
                pos = m.end()
            out.append(header[pos:])
            out.append(memoryview(data)[body_start:])
            return b"".join(out)

        return ExtractedFile("ply", data, fields, rebuild)


HANDLER: FileHandler = PlyHandler()
