"""ZIP archives (3Shape `.3oxz`, exocad case folders, zipped scans), opened recursively.

Trust boundary: untrusted bytes, read by zipfile from memory. Every entry is sniffed and
handed to its own handler through `HandlerContext.open_entry`; entry names are scanned as
FILENAME fields.

Limits (FilesConfig; each exceeded limit raises LimitExceeded -> hold):
- nesting depth `zip_max_depth` (3: a `.3oxz` inside a case ZIP inside a mail ZIP);
- entry count `zip_max_entries`, total uncompressed size `zip_max_total_size`;
- compression ratio `zip_max_ratio` for entries above 1 MiB (zip bombs). Declared sizes
  are not trusted: reads are capped at the declared size plus one byte.
Entry names that could escape an extraction folder (absolute, `..`, backslashes, drive
letters), symbolic links and encrypted entries raise ContentError (-> hold with that
reason).

Invariant: the rebuilt archive has the same entries, order, timestamps and compression
methods; only rewritten names and rebuilt entry contents differ.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.errors import ContentError, LimitExceeded, UnsupportedContent
from gateway.files.base import ExtractedFile, FileHandler, HandlerContext, RewriteSession
from gateway.scan.model import FieldKind, IdentifierKind, TextField

# Ratio checks apply above 1 MiB: small XML parts compress well beyond 200:1 legitimately.
RATIO_FLOOR = 1024 * 1024  # bytes
_DRIVE = re.compile(r"^[A-Za-z]:")
# Unix mode bits in the high word of external_attr (zip "version made by" = Unix): an
# entry that unpacks as a symbolic link can point outside the extraction folder.
_FILE_TYPE_MASK = 0o170000
_SYMLINK = 0o120000


def check_entry_name(name: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or _DRIVE.match(name) or ".." in parts:
        raise ContentError("archive entry path escapes the archive")


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    # Indices of the entry name's path components (scanned one by one, so the engine sees
    # plain file names and the folder structure survives); empty when names are kept.
    name_fields: tuple[int, ...]
    content: ExtractedFile | None  # None: directory or unknown content kept as is
    raw: bytes
    offset: int  # index of the first content field


def read_entries(
    data: bytes, ctx: HandlerContext
) -> tuple[zipfile.ZipFile, list[tuple[zipfile.ZipInfo, bytes]]]:
    limits = ctx.limits
    if ctx.depth >= limits.zip_max_depth:
        raise LimitExceeded("archives nested too deeply")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except Exception as exc:  # zipfile raises many types on hostile input
        raise ContentError("ZIP archive cannot be read") from exc
    if len(infos) > limits.zip_max_entries:
        raise LimitExceeded("archive has too many entries")
    total = 0
    out: list[tuple[zipfile.ZipInfo, bytes]] = []
    for info in infos:
        check_entry_name(info.filename)
        if info.flag_bits & 0x1:
            raise ContentError("encrypted archive")
        if (info.external_attr >> 16) & _FILE_TYPE_MASK == _SYMLINK:
            raise ContentError("archive contains a symbolic link")
        if info.file_size > limits.zip_max_total_size - total:
            raise LimitExceeded("archive expands beyond the size limit")
        if info.file_size > RATIO_FLOOR and info.file_size > limits.zip_max_ratio * max(
            info.compress_size, 1
        ):
            raise LimitExceeded("archive compression ratio too high")
        try:
            with archive.open(info) as stream:
                content = stream.read(info.file_size + 1)
        except RuntimeError as exc:  # zipfile: "File is encrypted, password required"
            raise ContentError("encrypted archive") from exc
        except Exception as exc:  # BadZipFile, zlib.error, OSError, EOFError, ...
            raise ContentError("ZIP archive cannot be read") from exc
        if len(content) > info.file_size:
            raise LimitExceeded("archive entry larger than declared")
        total += len(content)
        out.append((info, content))
    return archive, out


def extract_archive(
    data: bytes,
    ctx: HandlerContext,
    format_name: str,
    *,
    open_xml_part: Callable[[bytes], ExtractedFile] | None = None,
    scan_entry_names: bool = True,
) -> ExtractedFile:
    """Entries opened through the dispatcher; `.xml`/`.rels` entries through
    `open_xml_part` when given. Office documents pass `scan_entry_names=False`: their
    part names (`[Content_Types].xml`, `word/document.xml`) are fixed by OOXML/ODF, and
    renaming one breaks the document."""
    archive, entries = read_entries(data, ctx)
    if ctx.open_entry is None:
        raise ContentError("archive handler used without a dispatcher")
    child_ctx = HandlerContext(ctx.limits, ctx.depth + 1, ctx.open_entry)
    fields: list[TextField] = []
    parsed: list[_Entry] = []
    unknown = 0
    notes: list[IdentifierKind] = []
    locked: set[int] = set()
    cleaned = False
    for info, raw in entries:
        name_fields: list[int] = []
        if scan_entry_names:
            for component in info.filename.split("/"):
                name_fields.append(len(fields))
                fields.append(TextField(component, FieldKind.FILENAME))
        content: ExtractedFile | None = None
        if not info.is_dir():
            try:
                if open_xml_part is not None and info.filename.endswith((".xml", ".rels")):
                    content = open_xml_part(raw)
                else:
                    content = ctx.open_entry(raw, child_ctx)
            except UnsupportedContent:
                unknown += 1
        offset = len(fields)
        if content is not None:
            fields.extend(content.fields)
            locked.update(offset + i for i in content.locked)
            notes.extend(content.notes)
            unknown += content.unknown
            cleaned = cleaned or content.cleaned
        parsed.append(_Entry(info, tuple(name_fields), content, raw, offset))
    comment = archive.comment

    def rebuild(texts: Sequence[str], session: RewriteSession) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as writer:
            writer.comment = comment
            for entry in parsed:
                name = entry.info.filename
                if entry.name_fields:
                    name = "/".join(
                        texts[i].replace("/", "_").replace("\\", "_") for i in entry.name_fields
                    )
                if name != entry.info.filename:
                    name = _safe_entry_name(name, entry.info.is_dir())
                payload = entry.raw
                if entry.content is not None:
                    n = len(entry.content.fields)
                    payload = entry.content.rebuild(texts[entry.offset : entry.offset + n], session)
                info = zipfile.ZipInfo(name, date_time=entry.info.date_time)
                info.compress_type = entry.info.compress_type
                info.external_attr = entry.info.external_attr
                info.create_system = entry.info.create_system
                writer.writestr(info, payload)
        return out.getvalue()

    return ExtractedFile(
        format_name,
        data,
        tuple(fields),
        rebuild,
        cleaned=cleaned,
        locked=frozenset(locked),
        notes=tuple(notes),
        unknown=unknown,
    )


def _safe_entry_name(name: str, is_dir: bool) -> str:
    parts = [p for p in name.replace("\\", "/").split("/") if p and p not in (".", "..")]
    cleaned = "/".join(p.replace(":", "_") for p in parts) or "file"
    return cleaned + "/" if is_dir and not cleaned.endswith("/") else cleaned


def is_zip(data: bytes) -> bool:
    return data.startswith((b"PK\x03\x04", b"PK\x05\x06"))


class ZipHandler(FileHandler):
    format = "zip"

    def sniff(self, data: bytes) -> bool:
        return is_zip(data)

    def extract(self, data: bytes, ctx: HandlerContext) -> ExtractedFile:
        return extract_archive(data, ctx, "zip")


HANDLER: FileHandler = ZipHandler()
