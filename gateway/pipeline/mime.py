"""Raw MIME tree: parse a message into parts by byte offsets, serialise it back.

Trust boundary: input is untrusted bytes from the network. Parsing never copies a body:
every part is a pair of offsets into the one message buffer, so a 50 MB attachment is
held once. Header blocks become stdlib `email` Messages (compat32, the model that accepts
what real mailers send): the common shape (every line a `Name: value` field or its folded
continuation, CRLF or LF endings, then the blank line) is read line by line with string
searches here (`_common_fields`), in a sixth of the time `BytesHeaderParser` takes;
anything else (a Unix From_ line, a line that is no field, a bare CR, no blank line) goes
to `BytesHeaderParser`. Both give the same Message (tests/pipeline/test_header_block.py
compares them with hypothesis and on the golden corpus). Each part keeps the Message's
fields as a list (`MimePart.fields`, `MimePart.get`), which the walk reads; for a block in
the common shape the Message itself is built from them only when something asks for it
(`MimePart.message`: parameters, boundaries, a charset in an uncommon spelling), which a
plain text part never does. Bodies are split on boundaries here so that the bytes of
every part that is not edited are carried over exactly.

Invariants:
- `serialise_part(root, {})` returns the input bytes unchanged.
- An edit replaces a part's header block and/or body; everything else (preambles,
  delimiters, epilogues, sibling parts) is copied byte for byte.
- Limits (FilesConfig): nesting depth `mime_max_depth` and part count `mime_max_parts`;
  exceeding either raises LimitExceeded. A multipart without any delimiter or a
  message/rfc822 with a transfer encoding raises ContentError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.header import Header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Final, TypeAlias

from gateway.config import FilesConfig
from gateway.errors import ContentError, LimitExceeded

_HEADER_START: Final = re.compile(rb"^[^ \t\r\n]", re.M)
# RFC 2046 5.1.1: a boundary is 1-70 characters; longer ones are refused.
MAX_BOUNDARY_LENGTH: Final = 70

# A parsed header block. typeshed's default Message says a header value is a str, but
# compat32 (header_fetch_parse) hands out an email.header.Header, charset unknown-8bit,
# for a value holding 8-bit bytes: `get` and `[]` return str | Header. (`raw_items`
# yields the stored str; this alias types it str | Header too, and readers str() it.)
# The compiled build checks declared types at run time, so the alias says what is there.
ParsedMessage: TypeAlias = "Message[str | Header, str]"


def _compiled() -> bool:
    """True when mypyc compiled this module (a compiled function has no __code__)."""
    return not hasattr(_compiled, "__code__")


# The classes built per part, per edit and per analysis have an __init__ of their own: the
# one @dataclass generates runs interpreted even in a compiled module (about 1 us per
# object). A frozen one stores its attributes as gateway/scan/model.py's Finding does:
# compiled, a plain store (mypyc's native slot store; Python callers still meet the frozen
# __setattr__); interpreted, object.__setattr__, as a generated __init__ does.
COMPILED: Final = _compiled()
set_attribute: Final = object.__setattr__


@dataclass(init=False)
class MimePart:
    """One entity. Offsets index the shared message buffer."""

    start: int
    header_end: int  # first body byte (after the blank line)
    end: int
    depth: int
    kind: str  # "multipart" | "message" | "leaf"
    children: list[MimePart]
    # multipart: raw pieces between children, as offsets: pieces[i] precedes children[i],
    # pieces[-1] follows the last child.
    pieces: list[tuple[int, int]]
    index: int  # position in parse order (edits are keyed by it)
    # Read by _common_fields: nothing follows the blank line (the Message's payload is "").
    common_shape: bool
    # Read once, at parse: the header fields as `message` stores them, as (name as written,
    # name lower-cased, value). The walk reads them here, not through the email package's
    # raw_items() and get(): Python code that copies the list, or lower-cases every name,
    # at each call (they were a tenth of the analysis of a small message).
    fields: list[tuple[str, str, str]] = field(repr=False)  # values may hold PHI: no repr
    content_type: str  # get_content_type(): "maintype/subtype"
    transfer_encoding: str  # lower-cased; "7bit" when absent (RFC 2045)
    # The header block as a compat32 Message (`message`), built from `fields` the first
    # time something asks for it when the block has the common shape: a plain text part
    # with a token charset never does (building it was a tenth of a lab order's parse).
    _message: ParsedMessage | None = field(repr=False)

    def __init__(
        self,
        start: int,
        header_end: int,
        end: int,
        fields: list[tuple[str, str, str]],
        message: ParsedMessage | None,
        depth: int,
        kind: str,
        index: int = 0,
    ) -> None:
        """`message` is the block's Message when the email package parsed it, None when
        the block has the common shape (`fields` then make it, when it is asked for)."""
        self.start = start
        self.header_end = header_end
        self.end = end
        self.depth = depth
        self.kind = kind
        self.children = []
        self.pieces = []
        self.index = index
        self.common_shape = message is None
        self._message = message
        self.fields = fields
        content_type = self.get("content-type")
        if content_type is None:
            # get_default_type(): "text/plain" for every block parsed on its own.
            self.content_type = "text/plain" if message is None else message.get_default_type()
        elif isinstance(content_type, str):  # what get_content_type() makes of it
            ctype = content_type.partition(";")[0].strip().lower()
            self.content_type = ctype if ctype.count("/") == 1 else "text/plain"
        else:
            self.content_type = self.message.get_content_type()
        encoding = self.get("content-transfer-encoding")
        self.transfer_encoding = "7bit" if encoding is None else str(encoding).strip().lower()

    @property
    def message(self) -> ParsedMessage:
        """The header block as a compat32 Message (headers only), as parse_header_block
        returns it."""
        message = self._message
        if message is None:
            message = _message_of(self.fields)
            self._message = message
        return message

    def get(self, name: str) -> str | Header | None:
        """`message.get(name)` for a lower-case `name`: the first field of that name, as
        stored when it is ASCII; any other value is asked of the Message, which hands one
        holding 8-bit bytes out as an email.header.Header (compat32)."""
        for _name, lower, value in self.fields:
            if lower == name:
                return value if value.isascii() else self.message.get(name)
        return None


@dataclass(frozen=True, init=False)
class PartEdit:
    # Header lines to replace: lower-case name -> full new line (no line ending), or None
    # to remove. Several stages may edit one part's headers; their edits are merged.
    headers: dict[str, bytes | None]
    # The new body, whole or in pieces written one after the other (pieces may be views
    # into the message buffer: a spliced base64 body is not copied before serialising).
    body: bytes | tuple[bytes | memoryview, ...] | None

    def __init__(
        self,
        headers: dict[str, bytes | None] | None = None,
        body: bytes | tuple[bytes | memoryview, ...] | None = None,
    ) -> None:
        if COMPILED:
            self.headers = {} if headers is None else headers  # type: ignore[misc]
            self.body = body  # type: ignore[misc]
        else:
            set_attribute(self, "headers", {} if headers is None else headers)
            set_attribute(self, "body", body)

    def merged(self, other: PartEdit) -> PartEdit:
        return PartEdit(
            {**self.headers, **other.headers}, other.body if other.body is not None else self.body
        )


# Header blocks already read, by their bytes: the fields of each block in the common shape
# (parse_message's `known`). Reading is a pure function of the bytes, so a block met again
# (the unchanged headers of a rewritten message, read once more by its verification) takes
# the fields read the first time. The lists are shared, never modified.
KnownBlocks: TypeAlias = "dict[bytes, list[tuple[str, str, str]]]"


class _ParseState:
    def __init__(self, buf: bytes, limits: FilesConfig, known: KnownBlocks | None) -> None:
        self.buf = buf
        self.limits = limits
        self.known = known
        self.parts: list[MimePart] = []
        # Where a header block's blank line is looked for first (_header_end).
        self.blank_lines = (
            (b"\n\r\n", b"\n\n") if line_ending(buf) == b"\r\n" else (b"\n\n", b"\n\r\n")
        )


def line_ending(buf: bytes) -> bytes:
    """The line ending of the message's first 4 KB: CRLF when it holds one or no LF."""
    if buf.find(b"\r\n", 0, 4096) >= 0 or buf.find(b"\n", 0, 4096) < 0:  # no copy
        return b"\r\n"
    return b"\n"


def parse_message(
    buf: bytes, limits: FilesConfig, known: KnownBlocks | None = None
) -> tuple[MimePart, list[MimePart]]:
    """The root part and every part in parse order. With `known`, a header block found
    there takes its fields, and every other block in the common shape is added to it."""
    state = _ParseState(buf, limits, known)
    root = _parse_entity(state, 0, len(buf), 0)
    return root, state.parts


def _parse_entity(state: _ParseState, start: int, end: int, depth: int) -> MimePart:
    limits = state.limits
    if depth > limits.mime_max_depth:
        raise LimitExceeded("message nested too deeply")
    if len(state.parts) >= limits.mime_max_parts:
        raise LimitExceeded("message has too many parts")
    buf = state.buf
    if buf.startswith(b"\n", start) or buf.startswith(b"\r\n", start):
        header_end = start + (1 if buf[start : start + 1] == b"\n" else 2)
    else:
        header_end = _header_end(buf, start, end, state.blank_lines)
    block = buf[start:header_end]
    known = state.known
    fields = None if known is None else known.get(block)
    message: ParsedMessage | None = None
    if fields is None:
        fields, message = _read_header_block(block)
        if known is not None and message is None:
            known[block] = fields
    part = MimePart(start, header_end, end, fields, message, depth, "leaf", len(state.parts))
    state.parts.append(part)
    content_type = part.content_type
    if content_type.startswith("multipart/"):  # get_content_maintype() == "multipart"
        _split_multipart(state, part)
    elif content_type in ("message/rfc822", "message/global"):
        if part.transfer_encoding not in ("7bit", "8bit", "binary"):
            raise ContentError("encoded embedded message")
        part.kind = "message"
        part.children.append(_parse_entity(state, header_end, end, depth + 1))
    return part


def _header_end(buf: bytes, start: int, end: int, blank_lines: tuple[bytes, bytes]) -> int:
    """The end of the first blank line in buf[start:end], or `end`: where a search of the
    regex `\r?\n\r?\n` there would end. Its leftmost match is the first LF followed by
    LF or CRLF. Two `find`s: the regex could not skip ahead to a literal (its \r is
    optional) and was a sixth of a small message's analysis. `blank_lines` orders the two
    shapes so that the first one searched is the message's own (the other is only looked
    for before it): neither search runs past the first blank line of a well-formed part.
    """
    likely, other = blank_lines
    found = buf.find(likely, start, end)
    earlier = buf.find(other, start, end if found < 0 else found + 1)
    if earlier >= 0:  # before `found` (or there is none)
        return earlier + len(other)
    return end if found < 0 else found + len(likely)


def parse_header_block(block: bytes) -> ParsedMessage:
    """The header block (its blank line included) as a compat32 Message, headers only."""
    fields, message = _read_header_block(block)
    return _message_of(fields) if message is None else message


def _read_header_block(block: bytes) -> tuple[list[tuple[str, str, str]], ParsedMessage | None]:
    """The block's fields as MimePart keeps them, and the Message BytesHeaderParser made
    of it; None in its place when the block has the common shape (_message_of makes the
    same Message of the fields)."""
    text = block.decode("ascii", "surrogateescape")  # as BytesHeaderParser reads it
    common = _common_fields(text)
    if common is not None:
        return [(name, name.lower(), value) for name, value in common], None
    message = BytesHeaderParser(policy=compat32).parsebytes(block)
    return [(name, name.lower(), str(value)) for name, value in message.raw_items()], message


def _message_of(fields: list[tuple[str, str, str]]) -> ParsedMessage:
    """The Message of a header block in the common shape, from its fields: the (name,
    value) pairs are what compat32's `header_source_parse` makes of each field's lines
    (_common_fields), stored as the feed parser stores them."""
    message = Message(policy=compat32)
    for name, _lower, value in fields:
        message.set_raw(name, value)  # as the feed parser stores each field
    message.set_payload("")  # a headers-only parse of nothing after the blank line
    return message


def _common_fields(text: str) -> list[tuple[str, str]] | None:
    """The (name, value) fields of a header block in the common shape, or None.

    A field is a line `name:value` whose name is one or more characters of printable ASCII
    but ":" and " " (the class of email.feedparser's headerRE), followed by its folded
    continuation lines (starting with a blank); its value starts after the blanks that
    follow the colon and ends before the last line's ending, folds kept. A CR may only end
    a line (CRLF). The blank line ends the block, and nothing may follow it. (One regex
    match per field took twice the time of these string searches, compiled.)"""
    if not text.endswith("\n") or text.count("\r") != text.count("\r\n"):
        return None  # no final line ending, or a CR that does not end a line
    fields: list[tuple[str, str]] = []
    size = len(text)
    pos = 0
    while True:
        eol = text.find("\n", pos)  # always found: the text ends with one
        line_end = eol - 1 if eol > pos and text[eol - 1] == "\r" else eol
        if line_end == pos:  # the blank line, which must be the last one
            return fields if eol + 1 == size else None
        colon = text.find(":", pos, line_end)
        if colon <= pos:
            return None  # no colon, no name, or a continuation line with no field
        name = text[pos:colon]
        if not (name.isascii() and name.isprintable()) or " " in name:
            return None
        start = colon + 1
        while start < line_end and text[start] in " \t":
            start += 1
        end = line_end
        pos = eol + 1
        while pos < size and text[pos] in " \t":  # folded continuation lines
            eol = text.find("\n", pos)
            end = eol - 1 if text[eol - 1] == "\r" else eol
            pos = eol + 1
        fields.append((name, text[start:end]))


def _split_multipart(state: _ParseState, part: MimePart) -> None:
    boundary = part.message.get_boundary()
    if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH:
        raise ContentError("multipart part without a valid boundary")
    try:
        token = boundary.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ContentError("multipart part without a valid boundary") from exc
    matches = find_delimiters(state.buf, token, part.header_end, part.end)
    if not matches:
        raise ContentError("multipart part without delimiters")
    part.kind = "multipart"

    buf = state.buf

    def line_after(m: Delimiter) -> int:
        pos = m.end
        if buf.startswith(b"\n", pos):
            return pos + 1
        return pos

    def before_newline(pos: int) -> int:
        if pos >= 2 and buf[pos - 2 : pos] == b"\r\n":
            return pos - 2
        if pos >= 1 and buf[pos - 1 : pos] == b"\n":
            return pos - 1
        return pos

    closed = matches[-1].closing
    opening = matches if not closed else matches[:-1]
    piece_start = part.header_end
    for i, m in enumerate(opening):
        child_start = line_after(m)
        if i + 1 < len(matches):
            child_end = max(child_start, before_newline(matches[i + 1].start))
        else:
            child_end = part.end  # no closing delimiter: the last part runs to the end
        part.pieces.append((piece_start, child_start))
        part.children.append(_parse_entity(state, child_start, child_end, part.depth + 1))
        piece_start = child_end
    part.pieces.append((piece_start, part.end))
    if not part.children:
        raise ContentError("multipart part without delimiters")


@dataclass(frozen=True, init=False)
class Delimiter:
    start: int  # the first "-" of the delimiter line
    end: int  # after the delimiter and trailing blanks, before the line ending
    closing: bool

    def __init__(self, start: int, end: int, closing: bool) -> None:
        if COMPILED:
            self.start = start  # type: ignore[misc]
            self.end = end  # type: ignore[misc]
            self.closing = closing  # type: ignore[misc]
        else:
            set_attribute(self, "start", start)
            set_attribute(self, "end", end)
            set_attribute(self, "closing", closing)


def find_delimiters(buf: bytes, token: bytes, start: int, end: int) -> list[Delimiter]:
    """Delimiter lines `--token` / `--token--` (RFC 2046 5.1.1) within [start, end).

    A plain `find` loop, not a MULTILINE regex: a 50 MB base64 body has a million line
    starts, and the loop only stops where the boundary text actually occurs.
    """
    marker = b"--" + token
    found: list[Delimiter] = []
    pos = start
    while True:
        at = buf.find(marker, pos, end)
        if at < 0:
            return found
        pos = at + len(marker)
        if at != start and buf[at - 1 : at] != b"\n":
            continue  # not at a line start
        after = pos
        closing = buf.startswith(b"--", after) and after + 2 <= end
        if closing:
            after += 2
        while after < end and buf[after : after + 1] in (b" ", b"\t"):
            after += 1
        if after < end and buf[after : after + 1] not in (b"\r", b"\n"):
            continue  # the boundary is a prefix of a longer word
        if buf[after : after + 1] == b"\r":
            if after + 1 < end and buf[after + 1 : after + 2] != b"\n":
                continue
            line_end = after + 1  # the "\n" is consumed by the caller
        else:
            line_end = after
        found.append(Delimiter(at, line_end, closing))
        if closing:
            return found


def serialise_part(buf: bytes, part: MimePart, edits: dict[int, PartEdit]) -> bytes:
    out: list[bytes | memoryview] = []
    _serialise_into(memoryview(buf), part, edits, out, line_ending(buf))
    return b"".join(out)


def _changed(part: MimePart, edits: dict[int, PartEdit]) -> bool:
    if part.index in edits:
        return True
    return any(_changed(child, edits) for child in part.children)


def _serialise_into(
    view: memoryview,
    part: MimePart,
    edits: dict[int, PartEdit],
    out: list[bytes | memoryview],
    nl: bytes,
) -> None:
    if not _changed(part, edits):
        out.append(view[part.start : part.end])
        return
    edit = edits.get(part.index, PartEdit())
    block = view[part.start : part.header_end]
    out.append(replace_headers(bytes(block), edit.headers, nl) if edit.headers else block)
    if isinstance(edit.body, tuple):
        out.extend(edit.body)
    elif edit.body is not None:
        out.append(edit.body)
    elif part.kind == "multipart":
        for (p_start, p_end), child in zip(part.pieces, part.children, strict=False):
            out.append(view[p_start:p_end])
            _serialise_into(view, child, edits, out, nl)
        last_start, last_end = part.pieces[-1]
        out.append(view[last_start:last_end])
    elif part.kind == "message":
        _serialise_into(view, part.children[0], edits, out, nl)
    else:
        out.append(view[part.header_end : part.end])


def split_header_lines(block: bytes) -> list[bytes]:
    """Logical header lines (with their folded continuations and line endings)."""
    starts = [m.start() for m in _HEADER_START.finditer(block)]
    lines = []
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else len(block)
        lines.append(block[s:e])
    return lines


def replace_headers(block: bytes, replacements: dict[str, bytes | None], nl: bytes) -> bytes:
    """A header block with the named headers replaced, removed or added.

    Keys of `replacements` are a lower-case header name (the first occurrence is replaced,
    later ones dropped, and the header is added when missing) or `name#N` (only the N-th
    occurrence, counted from 0). A value is the full new line without its line ending, or
    None to remove the line. Every other line is copied verbatim.
    """
    body_sep_len = 0
    if block.endswith(b"\r\n\r\n"):
        body_sep_len = 2
    elif block.endswith(b"\n\n"):
        body_sep_len = 1
    elif block in (b"\r\n", b"\n"):
        body_sep_len = len(block)
    head = block[: len(block) - body_sep_len] if body_sep_len else block
    sep = block[len(block) - body_sep_len :] if body_sep_len else nl
    lines = split_header_lines(head) if head not in (b"\r\n", b"\n") else []
    pending = {k: v for k, v in replacements.items() if "#" not in k}
    seen: dict[str, int] = {}
    out: list[bytes] = []
    for line in lines:
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        occurrence = seen.get(name, 0)
        seen[name] = occurrence + 1
        key = f"{name}#{occurrence}"
        if key in replacements:
            new = replacements[key]
            if new is not None:
                out.append(new + nl)
            continue
        if name in pending:
            new = pending.pop(name)
            if new is not None:
                out.append(new + nl)
            continue
        if name in replacements:  # a duplicate of a replaced header: drop it
            continue
        out.append(line if line.endswith(b"\n") else line + nl)
    for new_line in pending.values():
        if new_line is not None:
            out.append(new_line + nl)
    return b"".join(out) + sep
