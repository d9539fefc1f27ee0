"""PDF prescriptions and "fiches de liaison", via pypdf.

Trust boundary: untrusted bytes, parsed by pypdf from memory. Page text is extracted and
scanned, but a PDF's text cannot be rewritten safely (glyph runs, fonts, incremental
updates), so page-text fields are `locked`: an identifier in them holds the copy on a
transforming route (with that reason). Document metadata (Info dictionary: Title, Author,
Subject, Keywords, ...; XMP packet) is always removed on a transforming route.

A page that is an image without a text layer (a scanned prescription) cannot be scanned:
it counts as an unknown file, so the route's unknown-file setting applies (hold by
default).

Invariants: encrypted PDFs and PDFs pypdf cannot read raise ContentError (-> hold).
Page content streams are carried over by pypdf's writer unchanged.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any

from pypdf import PdfReader, PdfWriter
from pypdf.generic import NameObject

from gateway.errors import ContentError, LimitExceeded
from gateway.files.base import ExtractedFile, FileHandler, HandlerContext, RewriteSession
from gateway.scan.model import FieldKind, TextField

# pypdf logs what it repairs in a damaged file; a log line must never quote a document,
# so its logger is silenced (the hold reason says what went wrong).
logging.getLogger("pypdf").setLevel(logging.CRITICAL + 1)

# Prescriptions are 1-5 pages; 500 pages bounds text extraction time on hostile files.
MAX_PAGES = 500
# Fewer characters than this on a page with images: a scanned page, not a text page.
MIN_TEXT_CHARS = 20
# pypdf finds the header within the first KiB (PDF 32000-1 7.5.2 allows leading junk).
_SNIFF_BYTES = 1024


class PdfHandler(FileHandler):
    format = "pdf"

    def sniff(self, data: bytes) -> bool:
        return b"%PDF-" in data[:_SNIFF_BYTES]

    def extract(self, data: bytes, ctx: HandlerContext) -> ExtractedFile:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reader = PdfReader(io.BytesIO(data), strict=False)
                if reader.is_encrypted:
                    raise ContentError("encrypted PDF")
                if len(reader.pages) > MAX_PAGES:
                    raise LimitExceeded("PDF has too many pages")
                pages = [page.extract_text() or "" for page in reader.pages]
                # A page with images and no text layer is a scan: its content (a
                # prescription, a name) is pixels no handler reads, so it counts as a file
                # that cannot be scanned (per-route pass/hold/reject, hold by default).
                scanned_pages = sum(
                    1
                    for page, text in zip(reader.pages, pages, strict=True)
                    if len(text.strip()) < MIN_TEXT_CHARS and _has_images(page)
                )
                info = reader.metadata
                meta = [str(v) for v in (info or {}).values() if isinstance(v, str) and v]
                root = reader.trailer["/Root"]
                xmp = root.get("/Metadata") if hasattr(root, "get") else None
                xmp_text = ""
                if xmp is not None:
                    xmp_text = xmp.get_object().get_data().decode("utf-8", "replace")
        except ContentError:
            raise
        except Exception as exc:  # pypdf raises many types on hostile input
            raise ContentError("PDF cannot be parsed") from exc
        fields = [TextField(text, FieldKind.BODY) for text in pages]
        locked = frozenset(range(len(fields)))
        fields += [TextField(text, FieldKind.METADATA) for text in meta]
        if xmp_text:
            fields.append(TextField(xmp_text, FieldKind.METADATA))
        has_metadata = bool(meta or xmp_text)

        def rebuild(texts: Sequence[str], session: RewriteSession) -> bytes:
            # Reaching here means no locked (page text) field changed: the pipeline holds
            # the copy otherwise. Only metadata is removed.
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data), strict=False))
                    writer.metadata = None
                    root = writer._root_object
                    if NameObject("/Metadata") in root:
                        del root[NameObject("/Metadata")]
                    out = io.BytesIO()
                    writer.write(out)
            except Exception as exc:
                raise ContentError("PDF cannot be rewritten") from exc
            return out.getvalue()

        return ExtractedFile(
            "pdf",
            data,
            tuple(fields),
            rebuild,
            cleaned=has_metadata,
            locked=locked,
            unknown=scanned_pages,
        )


def _has_images(page: Any) -> bool:
    resources = page.get("/Resources")
    if resources is None:
        return False
    xobjects = resources.get_object().get("/XObject")
    if xobjects is None:
        return False
    for ref in xobjects.get_object().values():
        if ref.get_object().get("/Subtype") == "/Image":
            return True
    return False


HANDLER: FileHandler = PdfHandler()
