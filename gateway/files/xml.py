"""XML order and project files: 3Shape `.3ox`, exocad `.dentalProject`, and office parts.

Trust boundary: untrusted bytes. The document is first checked by defusedxml, which
refuses DTDs, entity declarations and external references (billion laughs, XXE); only a
well-formed document with none of those is rewritten. Output: the same bytes with only
text nodes, comments, CDATA and (optionally) attribute values rewritten, re-escaped.

Invariants: tags, namespace prefixes, declarations and whitespace are copied verbatim
(a lexical rewrite, not a re-serialisation), so consumers that rely on prefixes (OOXML's
mc:Ignorable) keep working.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException

from gateway.errors import ContentError
from gateway.files.base import ExtractedFile, FileHandler, HandlerContext, RewriteSession
from gateway.scan.model import FieldKind, TextField

_TOKEN = re.compile(
    r"<!--(?P<comment>.*?)-->"
    r"|<!\[CDATA\[(?P<cdata>.*?)\]\]>"
    r"|<\?.*?\?>"
    r"|<!.*?>"
    r"|(?P<tag><(?P<close>/?)(?P<name>[^\s/>]+)(?P<attrs>(?:[^>\"']|\"[^\"]*\"|'[^']*')*)>)"
    r"|(?P<text>[^<]+)",
    re.S,
)
_ATTR = re.compile(r"([^\s=]+)(\s*=\s*)(\"([^\"]*)\"|'([^']*)')")
_ENCODING_DECL = re.compile(rb"^<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]+)[\"']")
_PERSON_NAME_ELEMENTS = re.compile(r"(?i)(patient|first|last|given|family|sur)_?name$")
_IDENTIFIER_ELEMENTS = re.compile(r"(?i)patient_?(id|number|no)$")
_BIRTH_ELEMENTS = re.compile(r"(?i)(birth_?date|date_?of_?birth|dob)$")
# Sniffing reads the first 1 KiB for an XML declaration or a root element.
_SNIFF_BYTES = 1024


def _kind_for(name: str) -> FieldKind:
    local = name.rpartition(":")[2]
    if _PERSON_NAME_ELEMENTS.search(local):
        return FieldKind.PERSON_NAME
    if _IDENTIFIER_ELEMENTS.search(local):
        return FieldKind.IDENTIFIER
    if _BIRTH_ELEMENTS.search(local):
        return FieldKind.DATE_OF_BIRTH
    return FieldKind.METADATA


def _encoding_of(data: bytes) -> tuple[str, int]:
    """(codec, BOM length)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8", 3
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16", 0
    m = _ENCODING_DECL.match(data)
    return (m.group(1).decode("ascii").lower() if m else "utf-8"), 0


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    kind: str  # text | cdata | comment | attr
    quote: str = ""
    field: int = -1  # index of the field this span belongs to
    first_in_group: bool = True  # grouped spans: only the first receives rewritten text


@dataclass
class _Group:
    """The text runs of one paragraph (OOXML <w:p>, <a:p>, shared string <si>)."""

    field: int
    name: str
    parts: list[str]
    runs: int = 0  # text spans seen so far


# A text node of at least 4 KiB made only of base64 characters is an embedded binary
# (3Shape HPS geometry, inline images), not words: scanning it would find digit runs
# that look like phone numbers and rewriting them would corrupt the payload. It is kept
# as is, and the file counts as holding content no handler can scan (route setting).
MIN_BINARY_TEXT = 4096
MIN_BASE64_LINE = 40  # characters per whitespace-separated chunk, on average (MIME: 76)
_BASE64_TEXT = re.compile(r"\s*[A-Za-z0-9+/]+(?:\s+[A-Za-z0-9+/]+)*\s*=?\s*=?\s*")

# OOXML paragraph-like elements and the run elements whose text they join. Word splits a
# name across runs (spell check, revision marks); scanning each run alone would miss it.
OOXML_PARAGRAPHS = frozenset({"p", "si", "is"})
OOXML_RUN_TEXT = frozenset({"t"})
# ODF paragraphs and headings hold their text directly or in spans and links.
ODF_PARAGRAPHS = frozenset({"p", "h"})
ODF_RUN_TEXT = frozenset({"p", "h", "span", "a"})
# Empty elements that separate words inside a paragraph (OOXML tab/br/cr, ODF s/tab/
# line-break).
_WORD_BREAKS = frozenset({"tab", "br", "cr", "s", "line-break"})


def check_xml(data: bytes) -> None:
    """Raise ContentError unless `data` is well-formed XML with no DTD or entities."""
    try:
        SafeElementTree.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise ContentError("XML with a DTD or entity declarations") from exc
    except Exception as exc:
        raise ContentError("XML is not well-formed") from exc


def _local(name: str) -> str:
    return name.rpartition(":")[2]


def extract_xml(
    data: bytes,
    *,
    attributes: bool,
    format_name: str = "xml",
    paragraphs: frozenset[str] = frozenset(),
    run_text: frozenset[str] = frozenset(),
) -> ExtractedFile:
    """Fields of an XML document; `paragraphs`/`run_text` join runs into one field each.

    A joined paragraph whose text changes is written back into its first run, and its
    other runs are emptied: the formatting of those runs is lost, the text is not.
    """
    check_xml(data)
    codec, bom = _encoding_of(data)
    try:
        text = data[bom:].decode(codec)
    except (LookupError, UnicodeDecodeError) as exc:
        raise ContentError("XML encoding is invalid") from exc
    spans: list[_Span] = []
    fields: list[TextField] = []
    groups: list[_Group] = []
    group: _Group | None = None
    stack: list[str] = []  # open elements, to know which element a text node is in
    opaque = 0  # base64 payloads: neither scanned nor rewritten

    def single(span: _Span, value: str, kind: FieldKind) -> None:
        spans.append(_Span(span.start, span.end, span.kind, span.quote, len(fields)))
        fields.append(TextField(value, kind))

    for m in _TOKEN.finditer(text):
        if m.group("tag") is not None:
            name = m.group("name")
            local = _local(name)
            closing = bool(m.group("close"))
            empty = m.group("tag").endswith("/>")
            if closing:
                if stack and stack[-1] == name:
                    stack.pop()
            elif not empty:
                stack.append(name)
            if local in paragraphs and not empty:
                if closing and group is not None and group.name == name:
                    group = None
                elif not closing and group is None:
                    group = _Group(len(fields), name, [])
                    groups.append(group)
                    fields.append(TextField("", FieldKind.BODY))  # filled in below
            elif group is not None and empty and local in _WORD_BREAKS:
                group.parts.append(" ")
            if attributes and not closing:
                base = m.start("attrs")
                for a in _ATTR.finditer(m.group("attrs")):
                    if a.group(1).startswith("xmlns"):
                        continue
                    index = 4 if a.group(4) is not None else 5
                    value = a.group(index)
                    if value.strip():
                        span = _Span(
                            base + a.start(index), base + a.end(index), "attr", a.group(3)[0]
                        )
                        single(span, html.unescape(value), _kind_for(a.group(1)))
        elif m.group("text") is not None:
            raw = m.group("text")
            current = stack[-1] if stack else ""
            if group is not None and _local(current) in run_text:
                first = group.runs == 0
                group.runs += 1
                spans.append(_Span(m.start("text"), m.end("text"), "text", "", group.field, first))
                group.parts.append(html.unescape(raw))
            elif (
                len(raw) >= MIN_BINARY_TEXT
                and len(raw.split()) * MIN_BASE64_LINE <= len(raw)  # long lines, not prose
                and _BASE64_TEXT.fullmatch(raw)
            ):
                opaque += 1  # an embedded binary (3Shape HPS geometry, images): not text
            elif raw.strip():
                single(
                    _Span(m.start("text"), m.end("text"), "text"),
                    html.unescape(raw),
                    _kind_for(current),
                )
        elif m.group("cdata") is not None:
            if m.group("cdata").strip():
                single(
                    _Span(m.start("cdata"), m.end("cdata"), "cdata"),
                    m.group("cdata"),
                    _kind_for(stack[-1] if stack else ""),
                )
        elif m.group("comment") is not None and m.group("comment").strip():
            single(
                _Span(m.start("comment"), m.end("comment"), "comment"),
                m.group("comment"),
                FieldKind.METADATA,
            )
    for g in groups:
        fields[g.field] = TextField("".join(g.parts), FieldKind.BODY)
    grouped_fields = {g.field for g in groups}

    def rebuild(texts: Sequence[str], session: RewriteSession) -> bytes:
        out: list[str] = []
        pos = 0
        for span in spans:
            new, old = texts[span.field], fields[span.field].text
            out.append(text[pos : span.start])
            if new == old:
                out.append(text[span.start : span.end])
            elif span.field in grouped_fields:
                out.append(escape(new) if span.first_in_group else "")
            elif span.kind == "text":
                out.append(escape(new))
            elif span.kind == "attr":
                out.append(escape(new, {span.quote: "&quot;" if span.quote == '"' else "&apos;"}))
            elif span.kind == "cdata":
                out.append(new.replace("]]>", "]] >"))
            else:
                out.append(new.replace("--", "- -"))
            pos = span.end
        out.append(text[pos:])
        rebuilt = data[:bom] + "".join(out).encode(codec, "xmlcharrefreplace")
        check_xml(rebuilt)
        return rebuilt

    return ExtractedFile(format_name, data, tuple(fields), rebuild, unknown=min(opaque, 1))


class XmlHandler(FileHandler):
    format = "xml"

    def sniff(self, data: bytes) -> bool:
        head = data[:_SNIFF_BYTES]
        if head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
            return True
        stripped = head.lstrip()
        lowered = stripped[:32].lower()
        if b"\x00" in head or lowered.startswith((b"<html", b"<!doctype html")):
            return False  # HTML is text, handled by the text handler
        return stripped.startswith(b"<?xml") or (
            stripped.startswith(b"<")
            and (stripped[1:2].isalpha() or lowered.startswith(b"<!doctype"))
        )

    def extract(self, data: bytes, ctx: HandlerContext) -> ExtractedFile:
        return extract_xml(data, attributes=True)


HANDLER: FileHandler = XmlHandler()
