"""Wavefront OBJ meshes and their MTL material libraries.

Trust boundary: untrusted bytes. Names hide in `#` comments, `o`/`g` object and group
names, `mtllib`/`usemtl` references, `newmtl` names and texture map file names (`map_*`)
in MTL files. Output: the same file with only those texts rewritten.

Invariant: vertex, normal, texture-coordinate and face lines are copied verbatim, so the
geometry is bit-identical.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.errors import ContentError
from gateway.files.base import ExtractedFile, FileHandler, HandlerContext, RewriteSession
from gateway.scan.model import FieldKind, TextField

_OBJ_STATEMENTS = frozenset(
    b"v vt vn vp f l p o g s mtllib usemtl newmtl Ka Kd Ks Ke Ns Ni d Tr Tf illum "
    b"map_Ka map_Kd map_Ks map_Ns map_d map_bump bump disp decal refl cstype deg curv "
    b"surf parm end".split()
)
# Statements whose argument is free text or a file name that may carry a patient name.
_TEXT_STATEMENT = re.compile(
    rb"^([ \t]*)(\#|o|g|mtllib|usemtl|newmtl|map_K[ads]|map_Ns|map_d|map_bump|bump|disp|decal|refl)"
    rb"([ \t]*)([^\r\n]*?)([ \t]*\r?)$",
    re.M,
)
# Sniffing reads the first 4 KiB: the first statements decide the format.
_SNIFF_BYTES = 4096
_SNIFF_MIN_STATEMENTS = 2  # avoid classifying a one-line text file as a mesh


class ObjHandler(FileHandler):
    format = "obj"

    def sniff(self, data: bytes) -> bool:
        head = data[:_SNIFF_BYTES]
        if b"\x00" in head:
            return False
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            # A multi-byte character may be cut at the sniff boundary; latin-1 for sniffing.
            text = head.decode("latin-1")
        lines = [ln.strip() for ln in text.splitlines()]
        if len(data) > _SNIFF_BYTES and lines:
            lines = lines[:-1]  # the last line may be cut
        statements = [ln for ln in lines if ln and not ln.startswith("#")]
        if len(statements) < _SNIFF_MIN_STATEMENTS:
            return False
        return all(ln.split()[0].encode() in _OBJ_STATEMENTS for ln in statements)

    def extract(self, data: bytes, ctx: HandlerContext) -> ExtractedFile:
        if b"\x00" in data:
            raise ContentError("OBJ file contains binary data")
        matches = [m for m in _TEXT_STATEMENT.finditer(data) if m.group(4) or m.group(2) == b"#"]
        try:
            fields = tuple(
                TextField(m.group(4).decode("utf-8"), FieldKind.METADATA) for m in matches
            )
        except UnicodeDecodeError:
            fields = tuple(
                TextField(m.group(4).decode("latin-1"), FieldKind.METADATA) for m in matches
            )
            encoding = "latin-1"
        else:
            encoding = "utf-8"

        def rebuild(texts: Sequence[str], session: RewriteSession) -> bytes:
            out: list[bytes | memoryview] = []
            pos = 0
            view = memoryview(data)
            for m, text in zip(matches, texts, strict=True):
                out.append(view[pos : m.start()])
                value = text.replace("\r", " ").replace("\n", " ").encode(encoding, "replace")
                sep = m.group(3) or (b"" if m.group(2) == b"#" else b" ")
                out.append(m.group(1) + m.group(2) + sep + value + m.group(5))
                pos = m.end()
            out.append(view[pos:])
            return b"".join(out)

        return ExtractedFile("obj", data, fields, rebuild)


HANDLER: FileHandler = ObjHandler()
