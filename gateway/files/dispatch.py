"""Content sniffing and dispatch: which handler opens a file, decided by its bytes.

Trust boundary: untrusted bytes; the declared MIME type and file name are never trusted
(a `.stl` may be a ZIP, an `image/png` may be a PDF). Output: an ExtractedFile from the
first handler whose `sniff` accepts the bytes, or UnsupportedContent.

Order matters: specific magic numbers first (DICOM, PDF, office ZIPs before plain ZIPs,
images, PLY), then formats recognised by structure (binary STL by its size formula,
ASCII STL), then XML, OBJ, and plain text last.

`open_head` decides a file from its first HEAD_BYTES bytes and its size, for the formats
whose every field lies in that head (binary STL). It relies on every handler before STL
deciding by a prefix no longer than HEAD_BYTES (DICOM 132 bytes, PDF 1024, ZIP and office
documents 4, images 8, PLY 5; tests/files checks it), so it finds the format `open_file`
would find for the whole file.
"""

from __future__ import annotations

from gateway.config import FilesConfig
from gateway.errors import UnsupportedContent
from gateway.files import dicom, image, obj, office, pdf, ply, stl, text, xml, zip
from gateway.files.base import ExtractedFile, FileHandler, HandlerContext

HANDLERS: tuple[FileHandler, ...] = (
    dicom.HANDLER,
    pdf.HANDLER,
    office.HANDLER,
    zip.HANDLER,
    image.HANDLER,
    ply.HANDLER,
    stl.HANDLER,
    xml.HANDLER,
    obj.HANDLER,
    text.HANDLER,
)


# 72 base64 lines of 57 bytes: more than any prefix a sniffer before STL reads (PDF 1024).
HEAD_BYTES = 72 * 57


def sniff_format(data: bytes) -> FileHandler | None:
    for handler in HANDLERS:
        if handler.sniff(data):
            return handler
    return None


def open_file(data: bytes, ctx: HandlerContext) -> ExtractedFile:
    """Extract the fields of one file. Raises UnsupportedContent or ContentError."""
    handler = sniff_format(data)
    if handler is None:
        raise UnsupportedContent("file type cannot be scanned")
    return handler.extract(data, ctx)


def open_attachment(data: bytes, limits: FilesConfig | None = None) -> ExtractedFile:
    """Entry point for one top-level attachment (archives recurse through open_file)."""
    ctx = HandlerContext(limits or FilesConfig(), 0, open_file)
    return open_file(data, ctx)


def open_head(head: bytes, size: int) -> ExtractedFile | None:
    """The fields of a file of `size` bytes that begins with `head` (HEAD_BYTES of them,
    or all), when its format keeps every field in the head; None when the whole file is
    needed (any other format, or one `open_file` would not take for a binary STL)."""
    for handler in HANDLERS:
        if handler is stl.HANDLER:
            return stl.open_binary_head(head, size)
        if handler.sniff(head):
            return None
    return None  # pragma: no cover - STL is in HANDLERS
