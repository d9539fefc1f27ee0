"""File handlers (sans-IO): one module per format, all behind gateway.files.base.

Each handler turns untrusted bytes into text fields (for the scan) and rebuilds the file
from rewritten fields; gateway.files.dispatch picks the handler by content sniffing.
"""

from gateway.files.base import ExtractedFile, FileHandler, HandlerContext, RewriteSession
from gateway.files.dispatch import open_attachment, open_file, sniff_format

__all__ = [
    "ExtractedFile",
    "FileHandler",
    "HandlerContext",
    "RewriteSession",
    "open_attachment",
    "open_file",
    "sniff_format",
]
