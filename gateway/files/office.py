"""Office documents (DOCX, XLSX, ODT): ZIP archives of XML parts.

Trust boundary: untrusted bytes. The archive is read under the ZIP limits (gateway/files/
zip.py); every `.xml`/`.rels` part is rewritten by the XML handler on text nodes only
(attribute values in OOXML/ODF are styles and references), which covers body text,
shared strings, headers, comments and document properties (docProps/core.xml,
meta.xml). Other parts (images, thumbnails) go through their own handlers.

Word splits one name across several runs (`<w:r><w:t>DUP</w:t></w:r><w:r><w:t>ONT</w:t>`)
for spell checking and revision marks, so OOXML runs are joined per paragraph (`w:p`,
`a:p`, shared string `si`; ODF `text:p`/`text:h` with their spans) into one field; a
paragraph whose text changes is written into its first run (the other runs of that
paragraph lose their text, and with it their formatting).
"""

from __future__ import annotations

import io
import zipfile

from gateway.files.base import ExtractedFile, FileHandler, HandlerContext
from gateway.files.xml import (
    ODF_PARAGRAPHS,
    ODF_RUN_TEXT,
    OOXML_PARAGRAPHS,
    OOXML_RUN_TEXT,
    extract_xml,
)
from gateway.files.zip import extract_archive, is_zip

_OOXML_MARKERS = ("[Content_Types].xml",)
_ODF_MIMETYPE = b"application/vnd.oasis.opendocument."
# Sniffing reads the central directory, which zipfile does without decompressing.


def office_kind(data: bytes) -> str | None:
    if not is_zip(data):
        return None
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = set(archive.namelist())
        if any(marker in names for marker in _OOXML_MARKERS):
            if any(n.startswith("word/") for n in names):
                return "docx"
            if any(n.startswith("xl/") for n in names):
                return "xlsx"
            if any(n.startswith("ppt/") for n in names):
                return "pptx"
        if "mimetype" in names:
            info = archive.getinfo("mimetype")
            if info.file_size < 128 and not info.flag_bits & 0x1:
                if archive.read(info).startswith(_ODF_MIMETYPE):
                    return "odt"
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, KeyError):
        return None
    return None


class OfficeHandler(FileHandler):
    format = "office"

    def sniff(self, data: bytes) -> bool:
        return office_kind(data) is not None

    def extract(self, data: bytes, ctx: HandlerContext) -> ExtractedFile:
        kind = office_kind(data) or "office"
        if kind == "odt":
            return extract_archive(data, ctx, kind, open_xml_part=_odf_part, scan_entry_names=False)
        return extract_archive(data, ctx, kind, open_xml_part=_ooxml_part, scan_entry_names=False)


def _ooxml_part(data: bytes) -> ExtractedFile:
    return extract_xml(data, attributes=False, paragraphs=OOXML_PARAGRAPHS, run_text=OOXML_RUN_TEXT)


def _odf_part(data: bytes) -> ExtractedFile:
    return extract_xml(data, attributes=False, paragraphs=ODF_PARAGRAPHS, run_text=ODF_RUN_TEXT)


HANDLER: FileHandler = OfficeHandler()
