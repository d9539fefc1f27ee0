"""Message analysis: every text a message carries, as fields, and how to put them back.

Trust boundary: input is untrusted bytes (a whole message). `analyse_message` walks the
MIME tree (gateway/pipeline/mime.py) and collects TextFields from:
- every free-text header (Subject, Thread-Topic, Comments, X-*, Content-Description)
  and the display names of From/To/Cc/Reply-To/Sender/Bcc (addresses themselves are
  routing data and are never rewritten; structured headers are never touched);
- text/plain bodies and HTML text nodes, comments, script/style text and title/alt/href
  attribute values (tokenised in one linear pass; the markup is copied verbatim);
- attachment file names (Content-Disposition `filename`, Content-Type `name`; RFC 2231
  and RFC 2047 forms);
- the structured headers that can carry a name (Content-ID, Content-Location,
  Message-ID and the like, the other parameters of Content-Type and
  Content-Disposition): scanned at every occurrence, never rewritten; a finding there
  holds the message;
- every attachment, through the file handler its bytes select (gateway/files).
`MessageAnalysis.rebuild(texts, session)` produces the message with those texts, editing
only the parts whose texts changed (or whose handler cleans metadata).

Large attachments read by their head: a base64 body of at least HEAD_PATH_MIN_BYTES in
the layout mailers write (76-character lines of 57 bytes each, ending with the message's
line ending, the last line shorter) is checked without decoding it (strict base64 shape,
line layout, last line decoded for the exact size), then its first 72 lines are decoded
and `gateway.files.dispatch.open_head` decides the format from them and the size. When
that format keeps every field in its head (binary STL), the whole body is never decoded:
a rewrite re-encodes the first 72 lines only and splices the original's remaining lines
byte-identical after them, which is exactly what re-encoding the whole rewritten file
would write. The verification pass reads the output the same way (so a rewritten 100 MB
mesh is never held decoded); any other body, format or layout takes the whole-body path.

Invariants: no field text reaches an exception message; errors are ContentError with a
fixed reason. A part with two Content-Type, Content-Disposition or
Content-Transfer-Encoding headers is a ContentError ("ambiguous MIME headers (duplicate
...)"): readers disagree on which one wins, and this walk reads only the first. So is a
header block holding a line that is no header field ("malformed MIME header block").
Transfer encodings: 7bit, 8bit, binary, quoted-printable, base64 (base64 is decoded
strictly: a malformed body is a ContentError, never silently repaired).
Charsets: anything Python's codecs know (utf-8, iso-8859-1/15, cp1252, ...); an unknown
charset or bytes that do not decode in the declared one are a ContentError.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.errors import MessageError
from email.header import Header, decode_header, make_header
from email.message import Message
from email.utils import collapse_rfc2231_value, formataddr, getaddresses
from typing import Final, TypeAlias, final

from gateway.config import FilesConfig
from gateway.errors import ContentError, LimitExceeded, UnsupportedContent
from gateway.files.base import ExtractedFile, RewriteSession
from gateway.files.dispatch import HEAD_BYTES, open_attachment, open_head
from gateway.pipeline.mime import (
    COMPILED,
    KnownBlocks,
    MimePart,
    ParsedMessage,
    PartEdit,
    line_ending,
    parse_message,
    serialise_part,
    set_attribute,
)
from gateway.scan.model import FieldKind, IdentifierKind, TextField

# SMTP line limit (RFC 5321 4.5.3.1.6): 998 octets plus CRLF. Longer lines need an encoding.
MAX_LINE_LENGTH: Final = 998
_ADDRESS_HEADERS: Final = (
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "sender",
    "resent-from",
    "resent-to",
    "resent-cc",
)
_ADDRESS_HEADER_SET: Final = frozenset(_ADDRESS_HEADERS)

# The common shapes of an address header value, parsed without email.utils' general
# parser (a third of the cost of analysing a small message): `local@domain`,
# `<local@domain>` and `Display Name <local@domain>` whose display name is atoms
# separated by single spaces. Anything else (quotes, comments, dots or commas in the
# name, groups, several addresses) goes to `getaddresses`; both give the same pairs
# (tests/pipeline checks it with hypothesis).
_ATOM: Final = r"[\w!#$%&'*+\-/=?^`{|}~]+"
_ADDR_SPEC: Final = r"[\w.!#$%&'*+\-/=?^`{|}~]+@[\w.\-]+"
_SIMPLE_ADDRESS: Final = re.compile(
    rf"(?:(?P<display>{_ATOM}(?: {_ATOM})*) )?<(?P<angle>{_ADDR_SPEC})>|(?P<bare>{_ADDR_SPEC})"
)


def parse_address_list(values: Sequence[str]) -> list[tuple[str, str]]:
    """`email.utils.getaddresses(values)`, fast for the common one-address values."""
    pairs: list[tuple[str, str]] = []
    for value in values:
        stripped = value.strip()
        m = _SIMPLE_ADDRESS.fullmatch(stripped)
        if m is None or ".." in value or stripped.startswith("."):
            return getaddresses(list(values))
        address = m.group("angle") or m.group("bare")
        if address.startswith(".") or address.rpartition("@")[0].endswith("."):
            return getaddresses(list(values))
        pairs.append((m.group("display") or "", address))
    return pairs


# Headers with a machine syntax: never scanned or rewritten (rewriting would break them,
# and they carry no free text). Every other header (Subject, Thread-Topic, Comments,
# Keywords, Content-Description, X-*) is scanned as free text: Outlook copies the Subject
# into Thread-Topic, and practice software adds its own X- headers.
_STRUCTURED_HEADERS: Final = frozenset(
    {
        "received",
        "return-path",
        "message-id",
        "in-reply-to",
        "references",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-id",
        "content-location",
        "content-language",
        "content-md5",
        "dkim-signature",
        "domainkey-signature",
        "authentication-results",
        "received-spf",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "delivered-to",
        "x-original-to",
        "thread-index",
        "resent-date",
        "resent-message-id",
        "list-id",
        "list-unsubscribe",
        "list-post",
        "list-help",
        "list-subscribe",
        "list-owner",
        "list-archive",
        "precedence",
        "auto-submitted",
        "importance",
        "priority",
        "x-priority",
    }
)
# The MIME headers a part has at most one of (RFC 2045, RFC 2183). Readers disagree on
# which of two wins (a known smuggling vector), and this walk reads the first only: a
# file name or type in the other would leave unscanned. Two of one hold the message.
_SINGLE_MIME_HEADERS: Final = {
    "content-type": "Content-Type",
    "content-disposition": "Content-Disposition",
    "content-transfer-encoding": "Content-Transfer-Encoding",
}
# Structured headers whose text can carry a name, scanned at every occurrence as fields
# that are never rewritten (MessageAnalysis.structured: a finding the route transforms
# holds the message). Rewriting them would break what refers to them (`cid:` URLs,
# threads) or what they declare. Mailers write file names into Content-ID
# (`<DUPONT_Jean.png@...>`) and Content-Location (the file's path), practice software
# may put one into a Message-ID, and any parameter of Content-Type or
# Content-Disposition can hold text. Scanned as METADATA: the FILENAME rules read hex
# runs of ids as names. The other structured headers are left out: trace and routing
# headers hold addresses (every address is an EMAIL finding; addresses are routing data),
# signatures and Thread-Index are base64, the others dates and keywords.
_MESSAGE_ID_HEADERS: Final = frozenset(
    {"message-id", "resent-message-id", "in-reply-to", "references", "content-id"}
)
_SCANNED_STRUCTURED_HEADERS: Final = _MESSAGE_ID_HEADERS | frozenset(
    {
        "content-type",
        "content-disposition",
        "content-transfer-encoding",
        "content-location",
        "content-language",
        "mime-version",
    }
)
# A file name parameter (`name`, `filename`, and the RFC 2231 keys `name*`, `name*0`,
# `name*0*` that email.message's decode_params collapses) with its value, quoted or up
# to the next ";". A leaf's names are fields of their own (attachment_names); the rest
# of its Content-Type and Content-Disposition is scanned without them, so that a name
# there is rewritten, not held. Where this takes a value shorter than the email package
# does, the remainder is scanned: never less.
_FILE_NAME_PARAMETER: Final = re.compile(
    r';\s*(?:file)?name(?:\*|\*[0-9]+\*?)?\s*=\s*(?:"(?:[^"\\]|\\.)*"|[^;]*)', re.I
)
# A Content-Type value with one parameter, charset, whose value is a token (RFC 2045 5.1),
# bare or quoted: what get_content_charset returns for it is that token, lower-cased.
# The type holds its "/": the email package reads a first segment without one as a
# parameter, so "charset; charset=x" has the empty charset of its first "charset".
_COMMON_CHARSET: Final = re.compile(
    r'[^;"\\=/]*/[^;"\\=]*;\s*charset\s*=\s*(?P<quote>"?)(?P<charset>[A-Za-z0-9_.:+-]+)(?P=quote)\s*',
    re.IGNORECASE,
)
_BASE64_SHAPE: Final = re.compile(rb"[A-Za-z0-9+/\s]*(?:=\s*){0,2}")
# Base64 is encoded in slices of 57 * 1024 input bytes: 1024 lines of 76 characters each,
# so a 50 MB attachment never exists twice in encoded form.
_BASE64_SLICE: Final = 57 * 1024
# RFC 2045 6.8: encoded lines of at most 76 characters; every mailer writes exactly 76,
# which carry 57 bytes.
_BASE64_LINE_CHARS: Final = 76
_BASE64_LINE_BYTES: Final = 57
_BASE64_LAST_LINE: Final = re.compile(rb"[A-Za-z0-9+/]{1,76}={0,2}")
# Below this an attachment is simply decoded whole: the head path saves memory, not time.
HEAD_PATH_MIN_BYTES = 64 * 1024
_HEAD_LINES: Final = HEAD_BYTES // _BASE64_LINE_BYTES
# HTML is tokenised with `find`, in one linear pass: a regex with lazy or quoted-string
# alternatives rescans to the end of the body at every unterminated `<!--`, `<script` or
# quote, which hostile input can repeat to make the walk quadratic.
_HTML_RAW_TEXT: Final = re.compile(r"<(script|style)\b", re.I)
_HTML_ATTR: Final = re.compile(r"""\b(title|alt|href)(\s*=\s*)("([^"]*)"|'([^']*)')""", re.I)

Rebuilder = Callable[[Sequence[str], RewriteSession], dict[int, PartEdit]]
# A MIME parameter's value as Message.get_param and get_params return it: a str, or the
# (charset, language, text) of an RFC 2231 extended value (`name*=utf-8''...`). typeshed
# types get_params' values as str only; the compiled build checks, so this says both.
ParamValue: TypeAlias = "str | tuple[str | None, str | None, str]"


@final
class AnalysisMemo:
    """What analysing a message computed from its header bytes alone, for the analysis of
    its rewritten output (verify_output), whose unchanged headers are the same bytes:
    the fields of each header block in the common shape (gateway/pipeline/mime.py's
    KnownBlocks), the (display name, address) pairs of each address header's values, and
    the codec name of each text part's Content-Type value (declared_charset).
    Each entry is a pure function of its key (no state, no limit, no time enters it), so
    the verification reads what a fresh analysis would; every part is still parsed, and
    every field scanned again. Holds one message's headers, for one process_message."""

    def __init__(self) -> None:
        self.header_blocks: KnownBlocks = {}
        self.address_lists: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        self.charsets: dict[str, str] = {}


@dataclass(init=False)
class MessageAnalysis:
    raw: bytes
    root: MimePart
    fields: list[TextField]
    locked: set[int]  # fields that cannot be rewritten (PDF text)
    # Fields read from _SCANNED_STRUCTURED_HEADERS: scanned, never rewritten.
    structured: set[int]
    notes: list[tuple[IdentifierKind, int]]  # (kind, field)
    unknown: int  # files no handler can scan
    cleaned: bool  # some handler removes metadata even without findings
    subject_field: int | None
    formats: list[str]
    memo: AnalysisMemo  # for the analysis of the rewritten output (verify_output)
    # (first field, end field, rebuilder, always): `always` rebuilders run even when their
    # texts are unchanged (handlers that clean metadata).
    _rebuilders: list[tuple[int, int, Rebuilder, bool]]

    def __init__(self, raw: bytes, root: MimePart, memo: AnalysisMemo) -> None:
        # Its own __init__, not @dataclass's (interpreted): see gateway/pipeline/mime.py.
        self.raw = raw
        self.root = root
        self.memo = memo
        self.fields = []
        self.locked = set()
        self.structured = set()
        self.notes = []
        self.unknown = 0
        self.cleaned = False
        self.subject_field = None
        self.formats = []
        self._rebuilders = []

    def add(self, text: str, kind: FieldKind) -> int:
        self.fields.append(TextField(text, kind))
        return len(self.fields) - 1

    def rebuild(
        self,
        texts: Sequence[str],
        session: RewriteSession,
        check: Callable[[], None] | None = None,
    ) -> bytes:
        """The message with `texts` in place of the fields; the input bytes if unchanged.

        `check` (the time budget) is called before each part is rebuilt."""
        if len(texts) != len(self.fields):
            raise ContentError("rewritten field count does not match the message")
        edits: dict[int, PartEdit] = {}
        for first, last, rebuilder, always in self._rebuilders:
            if check is not None:
                check()
            window = texts[first:last]
            if always or _differs(window, self.fields[first:last]):
                for index, edit in rebuilder(window, session).items():
                    edits[index] = edits[index].merged(edit) if index in edits else edit
        if not edits:
            return self.raw
        return serialise_part(self.raw, self.root, edits)


def _differs(texts: Sequence[str], fields: Sequence[TextField]) -> bool:
    return any(t != f.text for t, f in zip(texts, fields, strict=True))


def analyse_message(
    raw: bytes,
    limits: FilesConfig | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    memo: AnalysisMemo | None = None,
) -> MessageAnalysis:
    """Collect every field of `raw`. Raises ContentError (with a fixed reason).

    `memo`: another analysis' memo (the input's, when `raw` is its rewritten output)."""
    limits = limits or FilesConfig()
    memo = AnalysisMemo() if memo is None else memo
    root, parts = parse_message(raw, limits, memo.header_blocks)
    structured_texts = [text for part in parts for text in structured_header_values(part)]
    analysis = MessageAnalysis(raw, root, memo)
    nl = line_ending(raw)
    roots = frozenset({root.index} | {p.children[0].index for p in parts if p.kind == "message"})
    walker = _Walker(analysis, raw, nl, limits, deadline, clock, roots)
    walker.message_headers(root)
    for part in parts:
        if part.kind == "message":
            walker.message_headers(part.children[0])
    for part in parts:
        if part.kind == "leaf":
            walker.leaf(part)
    # Fields of no rebuilder's window: nothing writes them back, and a finding the route
    # transforms holds the message (gateway/pipeline/process.py).
    for text in structured_texts:
        if text.strip():
            analysis.structured.add(analysis.add(text, FieldKind.METADATA))
    return analysis


def structured_header_values(part: MimePart) -> list[str]:
    """The texts to scan of one part's _SCANNED_STRUCTURED_HEADERS, every occurrence.

    A msg-id `<left@right>` is scanned as `left right`: as an address the email detector
    would flag every one (`image001.png@01DA44C5.7F3B2A10`). A leaf's Content-Type and
    Content-Disposition are scanned without their file name parameters (those are
    scanned, and rewritten, as names).

    Raises ContentError when the part holds two of a _SINGLE_MIME_HEADERS header, or
    when its header block holds a line that is no header field (`Name : value` in the
    obsolete syntax, a body without the blank line before it): the parser leaves such
    lines out, and readers show them. The reasons never hold a value."""
    if not part.common_shape:  # a common-shape block has nothing after its blank line
        try:
            has_body = bool(part.message.get_payload())
        except (LookupError, ValueError) as exc:  # 8-bit text in a charset that is none
            raise ContentError("text part in an unknown charset") from exc
        if has_body:
            raise ContentError("malformed MIME header block")
    values: list[str] = []
    seen: set[str] = set()
    for _raw_name, lower, value in part.fields:
        name = lower.strip()
        if name in _SINGLE_MIME_HEADERS:
            if name in seen:
                title = _SINGLE_MIME_HEADERS[name]
                raise ContentError(f"ambiguous MIME headers (duplicate {title})")
            seen.add(name)
        if name not in _SCANNED_STRUCTURED_HEADERS:
            continue
        raw = value
        if (
            part.kind == "leaf"
            and name in ("content-type", "content-disposition")
            and "name" in raw.lower()  # which every match holds (no other letter folds to it)
        ):
            raw = _FILE_NAME_PARAMETER.sub(";", raw)
        text = decode_header_text(raw)
        if name in _MESSAGE_ID_HEADERS:
            text = text.replace("<", " ").replace(">", " ").replace("@", " ")
        values.append(text)
    return values


@dataclass(frozen=True, init=False)
class _Leaf:
    """Where one leaf part's texts sit among the fields: its file names (Content-Disposition
    filename, Content-Type name), its scanned headers, then its body's fields."""

    part: MimePart
    names: list[tuple[str, str]]
    name_indices: list[int]
    header_slots: list[tuple[str, int, int]]
    first: int  # its first field
    body_first: int  # its body's first field

    def __init__(
        self,
        part: MimePart,
        names: list[tuple[str, str]],
        name_indices: list[int],
        header_slots: list[tuple[str, int, int]],
        first: int,
        body_first: int,
    ) -> None:
        # Its own __init__, not @dataclass's (interpreted): see gateway/pipeline/mime.py.
        if COMPILED:
            self.part = part  # type: ignore[misc]
            self.names = names  # type: ignore[misc]
            self.name_indices = name_indices  # type: ignore[misc]
            self.header_slots = header_slots  # type: ignore[misc]
            self.first = first  # type: ignore[misc]
            self.body_first = body_first  # type: ignore[misc]
        else:
            set_attribute(self, "part", part)
            set_attribute(self, "names", names)
            set_attribute(self, "name_indices", name_indices)
            set_attribute(self, "header_slots", header_slots)
            set_attribute(self, "first", first)
            set_attribute(self, "body_first", body_first)


class _Writer:
    """The message's fields and bytes as its rebuilders write them back (_Walker.writer)."""

    def __init__(self, fields: list[TextField], raw: bytes, nl: bytes) -> None:
        self.fields = fields  # the analysis' fields, as read
        self.raw = raw
        self.nl = nl

    def free_text_replacements(
        self, slots: list[tuple[str, int, int]], texts: Sequence[str], first: int
    ) -> dict[str, bytes | None]:
        replacements: dict[str, bytes | None] = {}
        for raw_name, occurrence, index in slots:
            new = texts[index - first]
            if new != self.fields[index].text:
                key = f"{raw_name.lower()}#{occurrence}"
                replacements[key] = encode_header(raw_name, new, self.nl)
        return replacements

    def trim(self, part: MimePart, body: bytes) -> bytes:
        """Keep the original's trailing-newline shape (the delimiter brings its own CRLF)."""
        if part.end > part.header_end and self.raw[part.end - 1 : part.end] == b"\n":
            return body
        if body.endswith(b"\n") and len(body) < _BASE64_SLICE:
            return body.rstrip(b"\r\n")  # small bodies: a copy costs nothing
        return body

    def leaf_edit(
        self,
        leaf: _Leaf,
        texts: Sequence[str],
        extra: dict[str, bytes | None],
        body: bytes | tuple[bytes | memoryview, ...] | None,
    ) -> dict[int, PartEdit]:
        """The edit of one part, or none when neither its body, its file names nor its
        headers changed (the part is then carried over byte-identical)."""
        part, names = leaf.part, leaf.names
        new_names = [texts[i - leaf.first] for i in leaf.name_indices]
        unchanged_names = all(n == o for n, (_, o) in zip(new_names, names, strict=True))
        if body is None and not extra and unchanged_names:
            return {}
        headers = self.new_headers(part, names, new_names, extra)
        return {part.index: PartEdit(headers=headers, body=body)}

    def new_headers(
        self,
        part: MimePart,
        names: list[tuple[str, str]],
        new_names: list[str],
        extra: dict[str, bytes | None],
    ) -> dict[str, bytes | None]:
        replacements = dict(extra)
        for (where, old), new in zip(names, new_names, strict=True):
            if new == old:
                continue
            header = "Content-Disposition" if where == "filename" else "Content-Type"
            replacements[header.lower()] = render_param_header(
                part.message, header, where, new, self.nl, replacements.get(header.lower())
            )
        return replacements


class _Walker:
    def __init__(
        self,
        analysis: MessageAnalysis,
        raw: bytes,
        nl: bytes,
        limits: FilesConfig,
        deadline: float | None,
        clock: Callable[[], float],
        message_roots: frozenset[int] = frozenset(),
    ) -> None:
        # Its own __init__, not @dataclass's (interpreted): see gateway/pipeline/mime.py.
        self.analysis = analysis
        self.raw = raw
        self.nl = nl
        self.limits = limits
        self.deadline = deadline
        self.clock = clock
        self.message_roots = message_roots
        # What the rebuilders use. They are kept by the analysis, so they must not hold
        # the walker (which holds the analysis): that cycle left every analysis (about 70
        # objects) to the cyclic garbage collector instead of reference counting.
        self.writer = _Writer(analysis.fields, raw, nl)

    def check_budget(self) -> None:
        if self.deadline is not None and self.clock() > self.deadline:
            raise LimitExceeded("message processing time budget exceeded")

    def register(self, first: int, rebuilder: Rebuilder, *, always: bool = False) -> None:
        last = len(self.analysis.fields)
        self.analysis._rebuilders.append((first, last, rebuilder, always))

    # --- message headers ------------------------------------------------------------

    def message_headers(self, part: MimePart) -> None:
        """Free-text headers and address display names of one message (root or embedded)."""
        analysis = self.analysis
        first = len(analysis.fields)
        text_slots = self.free_text_headers(part, with_subject=True)
        address_slots: list[tuple[str, list[tuple[str, str]], list[int | None]]] = []
        by_name: dict[str, list[str]] = {}
        address_lists = analysis.memo.address_lists
        for _raw_name, lower, value in part.fields:
            name = lower.strip()
            if name in _ADDRESS_HEADER_SET:
                by_name.setdefault(name, []).append(value)
        for name in _ADDRESS_HEADERS:
            values = by_name.get(name)
            if not values:
                continue
            key = tuple(values)
            pairs = address_lists.get(key)
            if pairs is None:
                pairs = parse_address_list([decode_header_text(v) for v in values])
                address_lists[key] = pairs
            indices: list[int | None] = []
            for display, _addr in pairs:
                indices.append(
                    analysis.add(display, FieldKind.DISPLAY_NAME) if display.strip() else None
                )
            address_slots.append((name, pairs, indices))
        nl = self.nl
        writer = self.writer

        def rebuild(texts: Sequence[str], session: RewriteSession) -> dict[int, PartEdit]:
            replacements = writer.free_text_replacements(text_slots, texts, first)
            for name, pairs, indices in address_slots:
                displays = [
                    texts[idx - first] if idx is not None else display
                    for (display, _addr), idx in zip(pairs, indices, strict=True)
                ]
                if displays == [display for display, _addr in pairs]:
                    continue  # no display name changed: the header stays as it is
                rendered = [
                    render_address(display, addr)
                    for display, (_old, addr) in zip(displays, pairs, strict=True)
                ]
                title = "-".join(w.capitalize() for w in name.split("-"))
                replacements[name] = fold_plain(title, ", ".join(rendered), nl)
            if not replacements:
                return {}
            return {part.index: PartEdit(headers=replacements)}

        self.register(first, rebuild)

    def free_text_headers(
        self, part: MimePart, *, with_subject: bool
    ) -> list[tuple[str, int, int]]:
        """[(header name as written, occurrence, field index)] for scanned headers."""
        analysis = self.analysis
        slots: list[tuple[str, int, int]] = []
        seen: dict[str, int] = {}
        # part.fields: the values as received (8-bit bytes as surrogate escapes, as
        # raw_items gives them); items() would turn those bytes into U+FFFD before we can
        # decode them.
        for raw_name, lower, value in part.fields:
            name = lower.strip()
            if name in _STRUCTURED_HEADERS or name in _ADDRESS_HEADER_SET:
                continue  # every field of that name is: its occurrences are never counted
            occurrence = seen.get(name, 0)
            seen[name] = occurrence + 1
            if name == "subject" and not with_subject:
                continue
            text = decode_header_text(value)
            if not text.strip():
                continue
            kind = FieldKind.SUBJECT if name == "subject" else FieldKind.METADATA
            index = analysis.add(text, kind)
            if name == "subject" and analysis.subject_field is None:
                analysis.subject_field = index
            slots.append((raw_name.strip(), occurrence, index))
        return slots

    # --- leaves ----------------------------------------------------------------------

    def leaf(self, part: MimePart) -> None:
        self.check_budget()
        analysis = self.analysis
        first = len(analysis.fields)
        names = attachment_names(part)
        name_indices = [analysis.add(n, FieldKind.FILENAME) for _, n in names]
        # A message's own headers were scanned by message_headers; a body part's free-text
        # headers (Content-Description, X-*) are scanned here.
        header_slots = (
            []
            if part.index in self.message_roots
            else self.free_text_headers(part, with_subject=True)
        )
        cte = part.transfer_encoding
        maintype, _, subtype = part.content_type.partition("/")
        leaf = _Leaf(part, names, name_indices, header_slots, first, len(analysis.fields))
        if not (maintype == "text" and subtype in ("plain", "html")):
            by_head = self.file_by_head(part)
            if by_head is not None:
                head_file, head = by_head
                self.add_extracted(head_file, name_indices)
                self.register(first, self._head_rebuilder(leaf, head_file, head))
                return
        payload = decode_body(memoryview(self.raw)[part.header_end : part.end], cte)
        if maintype == "text" and subtype in ("plain", "html") and b"\x00" not in payload:
            charset = declared_charset(part, analysis.memo.charsets)
            text = decode_text(payload, charset)
            if subtype == "html":
                segments = html_segments(text)
                for seg in segments:
                    analysis.add(seg.text, seg.kind)
            else:
                segments = []
                analysis.add(text, FieldKind.BODY)
            analysis.formats.append(f"text/{subtype}")

            def render(texts: Sequence[str]) -> str:
                return rebuild_html(text, segments, texts) if subtype == "html" else texts[0]

            self.register(first, self._text_rebuilder(leaf, charset, render))
            return
        if not payload and not names:
            self.register(first, lambda texts, session: {})
            return
        try:
            extracted: ExtractedFile | None = open_attachment(payload, self.limits)
        except UnsupportedContent:
            extracted = None
            analysis.unknown += 1
            analysis.formats.append("unknown")
        if extracted is not None:
            self.add_extracted(extracted, name_indices)
        rebuilder = self._file_rebuilder(leaf, extracted)
        self.register(first, rebuilder, always=bool(extracted and extracted.cleaned))
        if extracted is not None and extracted.cleaned:
            analysis.cleaned = True

    def add_extracted(self, extracted: ExtractedFile, name_indices: list[int]) -> None:
        analysis = self.analysis
        offset = len(analysis.fields)
        analysis.fields.extend(extracted.fields)
        analysis.locked.update(offset + i for i in extracted.locked)
        anchor = offset if extracted.fields else (name_indices[0] if name_indices else -1)
        analysis.notes.extend((kind, anchor) for kind in extracted.notes)
        analysis.unknown += extracted.unknown
        analysis.formats.append(extracted.format)

    def file_by_head(self, part: MimePart) -> tuple[ExtractedFile, bytes] | None:
        """(the attachment's fields read from its head, the decoded head) for a large
        base64 body in the standard layout whose format keeps every field in its head;
        None otherwise (the caller decodes the whole body, and reports its errors)."""
        if part.transfer_encoding != "base64":
            return None
        if part.end - part.header_end < HEAD_PATH_MIN_BYTES:
            return None
        layout = standard_base64_layout(self.raw, part.header_end, part.end, self.nl)
        if layout is None or layout[0] <= _HEAD_LINES:
            return None
        step = _BASE64_LINE_CHARS + len(self.nl)
        head_end = part.header_end + _HEAD_LINES * step
        head = binascii.a2b_base64(memoryview(self.raw)[part.header_end : head_end])
        extracted = open_head(head, layout[1])
        return None if extracted is None else (extracted, head)

    def _text_rebuilder(
        self,
        leaf: _Leaf,
        charset: str,
        render: Callable[[Sequence[str]], str],
    ) -> Rebuilder:
        fields = self.analysis.fields
        part = leaf.part
        nl = self.nl
        cte = part.transfer_encoding
        writer = self.writer

        def rebuild(texts: Sequence[str], session: RewriteSession) -> dict[int, PartEdit]:
            body_texts = texts[leaf.body_first - leaf.first :]
            originals = fields[leaf.body_first : leaf.body_first + len(body_texts)]
            extra = writer.free_text_replacements(leaf.header_slots, texts, leaf.first)
            body: bytes | None = None
            if _differs(body_texts, originals):
                new_text = render(body_texts)
                try:
                    payload = new_text.encode(charset)
                except (UnicodeEncodeError, LookupError):
                    payload = new_text.encode("utf-8")
                    extra["content-type"] = render_content_type_charset(part.message, "utf-8", nl)
                body, new_cte = encode_body(payload, cte, nl)
                body = writer.trim(part, body)
                if new_cte != cte:
                    extra["content-transfer-encoding"] = (
                        f"Content-Transfer-Encoding: {new_cte}".encode()
                    )
            return writer.leaf_edit(leaf, texts, extra, body)

        return rebuild

    def _file_rebuilder(
        self,
        leaf: _Leaf,
        extracted: ExtractedFile | None,
    ) -> Rebuilder:
        part = leaf.part
        nl = self.nl
        cte = part.transfer_encoding
        writer = self.writer

        def rebuild(texts: Sequence[str], session: RewriteSession) -> dict[int, PartEdit]:
            extra = writer.free_text_replacements(leaf.header_slots, texts, leaf.first)
            body: bytes | tuple[bytes, ...] | None = None
            if extracted is not None:
                new_payload = extracted.rebuild(texts[leaf.body_first - leaf.first :], session)
                if new_payload is not extracted.original:
                    final_newline = writer.raw[part.end - 1 : part.end] == b"\n"
                    if cte == "base64":
                        # What encode_body writes, in slices: serialising joins them once.
                        pieces = encode_base64_pieces(new_payload, nl, final_newline)
                        del new_payload
                        body, new_cte = tuple(pieces), cte
                    else:
                        body, new_cte = encode_body(
                            new_payload, cte, nl, binary=True, final_newline=final_newline
                        )
                    if new_cte != cte:
                        extra["content-transfer-encoding"] = (
                            f"Content-Transfer-Encoding: {new_cte}".encode()
                        )
            return writer.leaf_edit(leaf, texts, extra, body)

        return rebuild

    def _head_rebuilder(
        self,
        leaf: _Leaf,
        extracted: ExtractedFile,
        head: bytes,
    ) -> Rebuilder:
        """A file read by its head: the rewritten head's lines, then the original's other
        lines verbatim (the splice described in the module docstring)."""
        part = leaf.part
        nl = self.nl
        step = _BASE64_LINE_CHARS + len(nl)
        tail_start = part.header_end + len(head) // _BASE64_LINE_BYTES * step
        writer = self.writer

        def rebuild(texts: Sequence[str], session: RewriteSession) -> dict[int, PartEdit]:
            extra = writer.free_text_replacements(leaf.header_slots, texts, leaf.first)
            body: tuple[bytes | memoryview, ...] | None = None
            new_start = extracted.rebuild(texts[leaf.body_first - leaf.first :], session)
            if new_start is not extracted.original:
                if len(new_start) != len(extracted.original):
                    raise ContentError("file cannot be rebuilt")
                lines = encode_base64(new_start + head[len(new_start) :], nl)
                if len(lines) != tail_start - part.header_end:
                    raise ContentError("file cannot be rebuilt")  # pragma: no cover
                body = (lines, memoryview(writer.raw)[tail_start : part.end])
            return writer.leaf_edit(leaf, texts, extra, body)

        return rebuild


# --- header helpers -----------------------------------------------------------------


def decode_header_text(value: str) -> str:
    """RFC 2047 decoding; raw 8-bit headers (RFC 6532) read as UTF-8, else cp1252.

    Unknown charsets are a ContentError.
    """
    if not value.isascii():
        value = _redecode_8bit(value)
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, UnicodeDecodeError, ValueError, MessageError) as exc:
        # MessageError: CharsetError for a charset name that is no charset (8-bit bytes).
        raise ContentError("header in an unknown or invalid charset") from exc


def _redecode_8bit(value: str) -> str:
    """The parser keeps raw 8-bit header bytes as surrogate escapes; decode them for real."""
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


def encode_header(name: str, value: str, nl: bytes) -> bytes:
    value = value.replace("\r", " ").replace("\n", " ")
    if value.isascii():
        return fold_plain(name, value, nl)
    encoded = Header(value, "utf-8", header_name=name).encode(linesep=nl.decode())
    return f"{name}: {encoded}".encode("ascii")


def fold_plain(name: str, value: str, nl: bytes) -> bytes:
    """`Name: value`, folded at spaces so no line exceeds 78 characters where possible."""
    value = value.replace("\r", " ").replace("\n", " ")
    if not value.isascii():
        return encode_header(name, value, nl)
    words = value.split(" ")
    lines: list[str] = []
    current = f"{name}:"
    for word in words:
        if len(current) + 1 + len(word) > 78 and current.strip() != f"{name}:":
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    return nl.join(line.encode("ascii") for line in lines)


def attachment_names(part: MimePart) -> list[tuple[str, str]]:
    """[(param, decoded name)] for Content-Disposition filename and Content-Type name.

    Every spelling of the parameter counts, not only the first that `get_param` returns:
    `filename="scan.stl"; filename*=utf-8''DUPONT_Jean.stl` names the file twice, and
    mail readers that prefer the RFC 2231 form show the second. Each distinct name is a
    field; rewriting any of them writes the parameter once (render_param_header)."""
    out: list[tuple[str, str]] = []
    for param, header in (("filename", "content-disposition"), ("name", "content-type")):
        present = part.get(header)  # a Header when the value holds 8-bit bytes
        if present is None or (isinstance(present, str) and param not in present.lower()):
            # get_params would find nothing: every spelling of the parameter (RFC 2231
            # "name*", "name*0*" included) holds its name. Spares two parameter parses
            # per text body, which has no file name.
            continue
        try:
            params: Sequence[tuple[str, ParamValue]] = part.message.get_params([], header=header)
            values = [value for key, value in params[1:] if key.lower() == param]
        except (LookupError, ValueError, UnicodeError) as exc:
            raise ContentError("file name in an invalid encoding") from exc
        names: list[str] = []
        for value in values:
            try:
                text = collapse_rfc2231_value(value).strip()
            except (LookupError, UnicodeError) as exc:
                raise ContentError("file name in an invalid encoding") from exc
            name = decode_header_text(text)
            if name not in names:
                names.append(name)
        out.extend((param, name) for name in names)
    return out


def render_address(display: str, address: str) -> str:
    """`Display <address>`, the display name RFC 2047-encoded when not ASCII. An address
    that is not ASCII (raw 8-bit bytes in the header) cannot be written back as it came:
    a ContentError, never an exception from the email package."""
    if not address.isascii():
        raise ContentError("address header with a non-ASCII address cannot be rewritten")
    return formataddr((display, address), charset="utf-8")


def render_param_header(
    message: ParsedMessage,
    header: str,
    param: str,
    value: str,
    nl: bytes,
    current: bytes | None,
) -> bytes:
    """The header with `param` set to `value` (RFC 2231 when not ASCII), others kept."""
    params: Sequence[tuple[str, ParamValue]]
    if current is not None:
        base = current.decode("ascii").split(":", 1)[1]
        parsed = Message()
        parsed[header] = base.strip()
        params = parsed.get_params(header=header) or []
    else:
        params = message.get_params(header=header) or []
    value = value.replace("\r", " ").replace("\n", " ").replace("/", "_").replace("\\", "_")
    items: list[str] = []
    seen = False
    for index, (key, val) in enumerate(params):
        if index == 0:
            items.append(key)  # the type or disposition itself
            continue
        if key.lower().rstrip("*") == param:
            if seen:
                continue
            seen = True
            items.append(_param(param, value))
        else:
            items.append(_param(key, collapse_rfc2231_value(val)))
    if not seen:
        items.append(_param(param, value))
    rendered = f"{header}: " + f";{nl.decode()}\t".join(items)
    if not rendered.isascii():  # 8-bit bytes in the type or a parameter name
        raise ContentError("MIME header with non-ASCII characters cannot be rewritten")
    return rendered.encode("ascii")


def _param(key: str, value: str) -> str:
    if value.isascii():
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{key}="{quoted}"'
    from urllib.parse import quote

    return f"{key}*=utf-8''{quote(value, safe='')}"


def render_content_type_charset(message: ParsedMessage, charset: str, nl: bytes) -> bytes:
    return render_param_header(message, "Content-Type", "charset", charset, nl, None).replace(
        b'charset="' + charset.encode() + b'"', b"charset=" + charset.encode()
    )


# --- bodies -------------------------------------------------------------------------


def decode_body(body: bytes | memoryview, cte: str) -> bytes:
    """The decoded payload. `body` may be a memoryview into the message (no copy)."""
    if cte == "base64":
        # Strict shape check without copying: alphabet and whitespace only, padding only at
        # the very end. A lenient decoder would stop at an inner "=" and leave data that
        # another client may decode, unscanned.
        if _BASE64_SHAPE.fullmatch(body) is None:
            raise ContentError("malformed base64 body")
        try:
            return binascii.a2b_base64(body)
        except binascii.Error as exc:
            raise ContentError("malformed base64 body") from exc
    if cte == "quoted-printable":
        # quopri.decodestring's own body (binascii's decoder), without its Python frame.
        return binascii.a2b_qp(body)
    if cte in ("7bit", "8bit", "binary", ""):
        return bytes(body)
    raise ContentError("unsupported transfer encoding")


def encode_body(
    payload: bytes, cte: str, nl: bytes, *, binary: bool = False, final_newline: bool = True
) -> tuple[bytes, str]:
    """(encoded body, transfer encoding). Keeps the original encoding where it can.

    Every line of the result ends with `nl`: a text payload's line breaks (CRLF, LF) are
    written as `nl`, and a CR or LF that is not a line break is never emitted raw (QP
    escapes it as =0D/=0A; a binary payload that would carry one goes to base64). A bare
    CR or LF in the output would let the next hop see a different message (smuggling).
    """
    if cte == "quoted-printable" and not binary and nl in (b"\r\n", b"\n"):
        # encode_quoted_printable(canonical_line_breaks(payload, nl), nl), without writing
        # the line breaks as `nl` only to read them back as LF: with CRLF that round trip
        # gives the payload with CRLF read as LF; with LF, that reading applied twice.
        lines = payload.replace(b"\r\n", b"\n")
        if nl == b"\n":
            lines = lines.replace(b"\r\n", b"\n")  # "\r\r\n" -> "\r\n" -> "\n"
        return _encode_qp_lines(lines, nl), cte
    if not binary:
        payload = canonical_line_breaks(payload, nl)
    if cte == "quoted-printable" and not binary:
        return encode_quoted_printable(payload, nl), cte
    if cte in ("7bit", "8bit", "binary", "") and _fits_identity(payload, cte, nl):
        return payload, cte or "7bit"
    if cte != "base64" and not binary:
        return encode_quoted_printable(payload, nl), "quoted-printable"
    return encode_base64(payload, nl, final_newline=final_newline), "base64"


def canonical_line_breaks(text: bytes, nl: bytes) -> bytes:
    """A text payload with every CRLF or LF line break written as `nl` (bare CRs kept)."""
    lf_only = text.replace(b"\r\n", b"\n") if b"\r" in text else text
    return lf_only.replace(b"\n", nl) if nl != b"\n" else lf_only


def encode_quoted_printable(payload: bytes, nl: bytes) -> bytes:
    """RFC 2045 quoted-printable whose hard and soft line breaks are all `nl`.

    binascii.b2a_qp writes CRLF line breaks when the first line of its input ends with
    CRLF and LF otherwise, and passes a bare CR through unescaped in text mode. Feeding it
    CRLF text and then replacing LF by CRLF gave "=\r\r\n" (a soft break broken in two). So
    the encoder always sees LF-only lines; a line holding a bare CR is encoded on its own
    in binary mode, which escapes the CR as =0D.
    """
    return _encode_qp_lines(payload.replace(b"\r\n", b"\n"), nl)


def _encode_qp_lines(lines: bytes, nl: bytes) -> bytes:
    """encode_quoted_printable of a payload whose CRLF line breaks are already LF."""
    if b"\r" not in lines:
        encoded = binascii.b2a_qp(lines)
    else:
        encoded = b"\n".join(
            binascii.b2a_qp(line, istext=b"\r" not in line) for line in lines.split(b"\n")
        )
    return encoded.replace(b"\n", nl) if nl != b"\n" else encoded


def encode_base64(payload: bytes, nl: bytes, *, final_newline: bool = True) -> bytes:
    """RFC 2045 base64 in 76-character lines ending with `nl` (the last one optionally not)."""
    return b"".join(encode_base64_pieces(payload, nl, final_newline))


def encode_base64_pieces(payload: bytes, nl: bytes, final_newline: bool) -> list[bytes]:
    """`encode_base64` as consecutive slices of 1024 lines (not joined: no second copy)."""
    view = memoryview(payload)
    chunks = []
    for offset in range(0, len(payload), _BASE64_SLICE):
        encoded = base64.encodebytes(view[offset : offset + _BASE64_SLICE])
        chunks.append(encoded.replace(b"\n", nl) if nl != b"\n" else encoded)
    if chunks and not final_newline:
        chunks[-1] = chunks[-1].rstrip(b"\r\n")
    return chunks


def standard_base64_layout(raw: bytes, start: int, end: int, nl: bytes) -> tuple[int, int] | None:
    """(full lines, decoded size) of the base64 body raw[start:end] when it is valid and
    in the standard layout: full lines of 76 characters, each followed by `nl`, then one
    last line of 1 to 76 characters (with or without `nl`). None for anything else.

    Checked without copying the body: the strict shape regex, the line endings at their
    stride, a count of every whitespace byte, and the last line decoded. Full lines then
    hold 57 bytes each (no padding can precede the last line), so the size is exact and
    decoding them in any slices of whole lines gives what decoding the body at once does.
    """
    body = memoryview(raw)[start:end]
    if _BASE64_SHAPE.fullmatch(body) is None:
        return None
    step = _BASE64_LINE_CHARS + len(nl)
    full, rest = divmod(end - start, step)
    if rest == 0:
        full -= 1  # the last line is a full one, its line ending included
    last_start = start + full * step
    last = raw[last_start:end]
    if last.endswith(nl):
        last = last[: -len(nl)]
    if _BASE64_LAST_LINE.fullmatch(last) is None:
        return None
    lines_end = last_start
    if bytes(body[_BASE64_LINE_CHARS : lines_end - start : step]) != nl[:1] * full:
        return None
    if len(nl) == 2 and bytes(body[_BASE64_LINE_CHARS + 1 : lines_end - start : step]) != (
        b"\n" * full
    ):
        return None
    # The line endings are where they should be; no other whitespace may be anywhere.
    endings = full + (1 if raw[last_start:end].endswith(nl) else 0)
    if raw.count(b"\n", start, end) != endings:
        return None
    if raw.count(b"\r", start, end) != (endings if nl == b"\r\n" else 0):
        return None
    if any(raw.count(blank, start, end) for blank in (b" ", b"\t", b"\x0b", b"\x0c")):
        return None
    try:
        size = full * _BASE64_LINE_BYTES + len(binascii.a2b_base64(last))
    except binascii.Error:
        return None
    return full, size


def _fits_identity(payload: bytes, cte: str, nl: bytes) -> bool:
    """True when `payload` can go out unencoded: lines within the SMTP limit, no NUL, and
    no CR or LF outside an `nl` line break."""
    if b"\x00" in payload:
        return False
    if payload.count(b"\r") != payload.count(b"\r\n"):
        return False  # a bare CR
    if nl == b"\r\n" and payload.count(b"\n") != payload.count(b"\r\n"):
        return False  # a bare LF in a CRLF message
    if cte in ("7bit", "") and not payload.isascii():
        return False
    return all(len(line) <= MAX_LINE_LENGTH for line in payload.split(b"\n"))


def declared_charset(part: MimePart, known: dict[str, str] | None = None) -> str:
    """The codec name of the part's charset parameter; "" when none is declared.

    `known` (AnalysisMemo.charsets): the names already found, by Content-Type value."""
    value = part.get("content-type")
    if known is not None and isinstance(value, str):
        name = known.get(value)
        if name is None:
            name = declared_charset(part)
            known[value] = name
        return name
    charset = _common_charset(value)
    if charset is None:  # not the common shape: the Message is built only for this
        charset = part.message.get_content_charset()
    if charset is None:
        return ""
    try:
        return codecs.lookup(charset).name
    except (LookupError, ValueError) as exc:  # ValueError: a NUL in the name
        raise ContentError("text part in an unknown charset") from exc


def content_charset(message: ParsedMessage) -> str | None:
    """`message.get_content_charset()`, read directly for the common `type/subtype;
    charset=token` (quoted or not) and by the email package for anything else: its
    general parameter parse was 5 % of a lab order's pipeline time."""
    charset = _common_charset(message.get("content-type"))
    return message.get_content_charset() if charset is None else charset


def _common_charset(value: str | Header | None) -> str | None:
    """The charset of a Content-Type value (the first one, as `get` returns it) in the
    common shape, lower-cased as get_content_charset returns it; None for any other
    value (the caller then asks the email package)."""
    if isinstance(value, str):  # a Header when the value holds 8-bit bytes
        common = _COMMON_CHARSET.fullmatch(value)
        if common is not None:
            return common["charset"].lower()
    return None


def decode_text(payload: bytes, charset: str) -> str:
    if not charset or charset == "ascii":
        # Undeclared or us-ascii with 8-bit bytes: mailers in France mean utf-8 or cp1252.
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            charset = "cp1252"
    try:
        return payload.decode(charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ContentError("text part does not match its charset") from exc


# --- HTML ---------------------------------------------------------------------------


@dataclass(frozen=True, init=False)
class HtmlSegment:
    start: int
    end: int
    text: str
    kind: FieldKind
    mode: str  # text | raw | attr | comment
    quote: str

    def __init__(
        self, start: int, end: int, text: str, kind: FieldKind, mode: str, quote: str = ""
    ) -> None:
        # Its own __init__, not @dataclass's (interpreted): see gateway/pipeline/mime.py.
        if COMPILED:
            self.start = start  # type: ignore[misc]
            self.end = end  # type: ignore[misc]
            self.text = text  # type: ignore[misc]
            self.kind = kind  # type: ignore[misc]
            self.mode = mode  # type: ignore[misc]
            self.quote = quote  # type: ignore[misc]
        else:
            set_attribute(self, "start", start)
            set_attribute(self, "end", end)
            set_attribute(self, "text", text)
            set_attribute(self, "kind", kind)
            set_attribute(self, "mode", mode)
            set_attribute(self, "quote", quote)


def html_segments(source: str) -> list[HtmlSegment]:
    """Text nodes, comments, script/style content and title/alt/href values, in order."""
    out: list[HtmlSegment] = []
    lowered = source.lower()
    pos, size = 0, len(source)

    def add(start: int, end: int, kind: FieldKind, mode: str, quote: str = "") -> None:
        raw = source[start:end]
        if raw.strip():
            text = html.unescape(raw) if mode in ("text", "attr") else raw
            out.append(HtmlSegment(start, end, text, kind, mode, quote))

    search = 0
    while pos < size:
        lt = source.find("<", search)
        if lt < 0:
            add(pos, size, FieldKind.BODY, "text")
            break
        following = source[lt + 1 : lt + 2]
        if not (following.isalpha() or following in ("/", "!", "?")):
            search = lt + 1  # "a < b": the "<" is text (HTML tokenisation)
            continue
        if lt > pos:
            add(pos, lt, FieldKind.BODY, "text")
        if source.startswith("<!--", lt):
            close = source.find("-->", lt + 4)
            end = close if close >= 0 else size
            add(lt + 4, end, FieldKind.METADATA, "comment")
            pos = search = end + 3 if close >= 0 else size
            continue
        gt = source.find(">", lt + 1)
        if gt < 0:
            add(lt, size, FieldKind.BODY, "text")  # a lone "<" and what follows: text
            break
        tag = source[lt : gt + 1]
        for m in _HTML_ATTR.finditer(tag):
            group = 4 if m.group(4) is not None else 5
            add(lt + m.start(group), lt + m.end(group), FieldKind.METADATA, "attr", m.group(3)[0])
        pos = search = gt + 1
        raw_open = _HTML_RAW_TEXT.match(tag)
        if raw_open is not None:
            close = lowered.find("</" + raw_open.group(1).lower(), pos)
            end = close if close >= 0 else size
            add(pos, end, FieldKind.METADATA, "raw")
            pos = search = end
    return out


def rebuild_html(source: str, segments: Sequence[HtmlSegment], texts: Sequence[str]) -> str:
    out: list[str] = []
    pos = 0
    for seg, new in zip(segments, texts, strict=True):
        out.append(source[pos : seg.start])
        if new == seg.text:
            out.append(source[seg.start : seg.end])
        elif seg.mode == "text":
            out.append(html.escape(new, quote=False))
        elif seg.mode == "attr":
            out.append(html.escape(new, quote=True))
        elif seg.mode == "raw":
            out.append(new.replace("</", "<\\/"))
        else:
            out.append(new.replace("--", "- -"))
        pos = seg.end
    out.append(source[pos:])
    return "".join(out)
