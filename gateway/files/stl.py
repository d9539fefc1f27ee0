"""STL (stereolithography) meshes: intra-oral scans sent to the prosthesis lab.

Trust boundary: untrusted bytes. Names hide in the binary 80-byte header and in ASCII
`solid NAME` / `endsolid NAME` lines (paulbourke.net/dataformats/stl). Output: the same
file with only those texts rewritten.

Invariants: geometry is bit-identical. For binary STL, bytes 80.. (triangle count,
normals, vertices and the per-facet attribute bytes) are copied verbatim; for ASCII STL
every line other than `solid`/`endsolid` is copied verbatim.

A binary STL's only text is its header, so `open_binary_head` reads one from its first
bytes and its size alone (the size formula decides it is binary): the pipeline uses it
to scan and rewrite a large mesh without decoding the whole attachment. Its rebuild
returns the new 80-byte header only; the caller puts the rest back verbatim.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

from gateway.errors import ContentError
from gateway.files.base import ExtractedFile, FileHandler, HandlerContext, RewriteSession
from gateway.scan.model import FieldKind, TextField

BINARY_HEADER_SIZE = 80  # bytes, fixed by the format
FACET_SIZE = 50  # bytes: 12 little-endian float32 + uint16 attribute byte count
_SOLID_LINE = re.compile(rb"^([ \t]*(?:end)?solid)([ \t]*)([^\r\n]*?)([ \t]*)(\r?\n|$)", re.M)
# ASCII STL sniffing looks at the first 4 KiB only: enough for `solid` and the first facet.
_ASCII_SNIFF_BYTES = 4096


def is_binary_stl(data: bytes) -> bool:
    if len(data) < BINARY_HEADER_SIZE + 4:
        return False
    (count,) = struct.unpack_from("<I", data, BINARY_HEADER_SIZE)
    return bool(len(data) == BINARY_HEADER_SIZE + 4 + FACET_SIZE * count)


def is_ascii_stl(data: bytes) -> bool:
    head = data[:_ASCII_SNIFF_BYTES].lstrip()
    return head.startswith(b"solid") and (b"facet" in head or b"endsolid" in head)


class StlHandler(FileHandler):
    format = "stl"

    def sniff(self, data: bytes) -> bool:
        return is_binary_stl(data) or is_ascii_stl(data)

    def extract(self, data: bytes, ctx: HandlerContext) -> ExtractedFile:
        if is_binary_stl(data):
            return _extract_binary(data)
        if is_ascii_stl(data):
            return _extract_ascii(data)
        raise ContentError("not a valid STL file")


def binary_stl_size_matches(head: bytes, size: int) -> bool:
    """`is_binary_stl` of a file of `size` bytes that begins with `head` (84 bytes at least)."""
    if size < BINARY_HEADER_SIZE + 4 or len(head) < BINARY_HEADER_SIZE + 4:
        return False
    (count,) = struct.unpack_from("<I", head, BINARY_HEADER_SIZE)
    return bool(size == BINARY_HEADER_SIZE + 4 + FACET_SIZE * count)


def open_binary_head(head: bytes, size: int) -> ExtractedFile | None:
    """The fields of a binary STL of `size` bytes from its first bytes, or None when the
    size formula says it is not a binary STL. `original` is the 80-byte header and the
    rebuild returns the new 80-byte header: the caller keeps bytes 80.. verbatim."""
    if not binary_stl_size_matches(head, size):
        return None
    header = head[:BINARY_HEADER_SIZE]

    def rebuild(texts: Sequence[str], session: RewriteSession) -> bytes:
        return binary_header(texts[0])

    return ExtractedFile("stl", header, (header_field(header),), rebuild)


def binary_header(text: str) -> bytes:
    """A binary STL header (exactly 80 bytes) carrying `text`."""
    new = text.encode("latin-1", "replace")[:BINARY_HEADER_SIZE]
    # A binary header must not begin with "solid" or readers take it for ASCII STL.
    if new.lstrip().lower().startswith(b"solid"):
        new = b"mesh " + new
    return new[:BINARY_HEADER_SIZE].ljust(BINARY_HEADER_SIZE, b" ")


def header_field(header: bytes) -> TextField:
    return TextField(header.rstrip(b"\x00 ").decode("latin-1"), FieldKind.METADATA)


def _extract_binary(data: bytes) -> ExtractedFile:
    def rebuild(texts: Sequence[str], session: RewriteSession) -> bytes:
        # join() over a memoryview: one copy of the mesh, not two.
        return b"".join((binary_header(texts[0]), memoryview(data)[BINARY_HEADER_SIZE:]))

    return ExtractedFile("stl", data, (header_field(data[:BINARY_HEADER_SIZE]),), rebuild)


def _extract_ascii(data: bytes) -> ExtractedFile:
    matches = list(_SOLID_LINE.finditer(data))
    if not matches:
        raise ContentError("not a valid STL file")
    fields = tuple(TextField(m.group(3).decode("latin-1"), FieldKind.METADATA) for m in matches)

    def rebuild(texts: Sequence[str], session: RewriteSession) -> bytes:
        out: list[bytes] = []
        pos = 0
        for m, text in zip(matches, texts, strict=True):
            out.append(data[pos : m.start()])
            name = text.replace("\r", " ").replace("\n", " ").encode("latin-1", "replace")
            out.append(m.group(1) + m.group(2) + name + m.group(4) + m.group(5))
            pos = m.end()
        out.append(data[pos:])
        return b"".join(out)

    return ExtractedFile("stl", data, fields, rebuild)


HANDLER: FileHandler = StlHandler()
