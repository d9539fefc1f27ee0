"""Content sniffing and dispatch: which handler opens a file, decided by its bytes.

Trust boundary: untrusted bytes; the declared MIME type and file name are never trusted
(a `.stl` may be a ZIP, an `image/png` may be a PDF). Output: an ExtractedFile from the
first handler whose `sniff` accepts the bytes, or UnsupportedContent.

Order matters: specific magic numbers first (DICOM, PDF, office ZIPs before plain ZIPs,
images, PLY), then formats recognised by structure (binary STL by its size formula,
ASCII STL), then XML, OBJ, and plain text last.
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
