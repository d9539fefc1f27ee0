"""The SMTP DATA stream: where it ends, what it holds, and when to refuse it.

`DataDecoder` is sans-IO: it is fed the raw bytes a client sent after `354` (minus the
terminating `.` line) and writes the message, dot transparency undone, to a sink.
`read_data` is the asyncio side: it pulls those bytes from a StreamReader in blocks,
not line by line (a 2 KB message sent at once takes four reads instead of forty; a 5 MB
STL a few thousand instead of seventy thousand).

Invariants:
- Only CRLF "." CRLF ends DATA (RFC 5321 4.1.1.4), and only at a line start: `\\n.\\r\\n`,
  `\\r.\\n` and a "." in the middle of a long line never do (SMTP smuggling,
  CVE-2023-51766 class). Bytes after the terminator stay in the reader (PIPELINING).
- A bare CR or bare LF in a line (BARE_CR_LF), a line longer than the limit, CRLF
  included (LINE_TOO_LONG), or a message larger than the size limit after dot
  transparency (TOO_BIG) refuses the message; so does a sink that cannot take more
  (SINK_FULL). The first problem in line order is the one kept in `problem`; after it
  nothing more is written and the rest of DATA is drained, so the session stays in step.
- Blocks with none of those problems take a fast path (byte-string operations in C);
  any block with an anomaly is redone line by line with the rules above, so both paths
  give the same bytes and the same reply (a hypothesis test compares them).
- The Message-ID (first header line only, at most MESSAGE_ID_MAX octets) is read from
  the header section; the last such header wins.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

# Why a message is refused; gateway.smtp turns these into replies.
TOO_BIG = "too_big"
LINE_TOO_LONG = "line_too_long"
BARE_CR_LF = "bare_cr_lf"
SINK_FULL = "sink_full"

# A Message-ID longer than this is not recorded (RFC 5322 line limit, 998 octets).
MESSAGE_ID_MAX = 998

TERMINATOR = b"\r\n.\r\n"
_MESSAGE_ID = b"message-id:"
_REST_OF_LINE = re.compile(rb"[^\r\n]*\r\n")


class SinkFull(Exception):
    """Raised by a decoder's sink that cannot take more bytes (the problem is SINK_FULL)."""


class DataDecoder:
    """Turns the raw DATA stream into message bytes, checking it as it goes.

    `feed` may be given any slicing of the stream; `finish` ends it. `problem` says why
    the message is refused (None while it is fine)."""

    def __init__(self, sink: Callable[[bytes], None], *, line_limit: int, size_limit: int):
        self._sink = sink
        self._line_limit = line_limit
        self._size_limit = size_limit
        self._carry = b""  # the incomplete line at the end of what was fed
        self._in_headers = True
        self.size = 0
        self.problem: str | None = None
        self.message_id = ""

    def feed(self, data: bytes) -> None:
        if self.problem is not None:
            return
        buf = self._carry + data if self._carry else data
        cut = buf.rfind(b"\r\n") + 2
        if cut == 1:  # no line end yet
            self._carry = buf
        else:
            self._carry = buf[cut:]
            self._lines(buf[:cut] if cut < len(buf) else buf)
        if self.problem is None and len(self._carry) > self._line_limit:
            self.problem = LINE_TOO_LONG  # a line already too long, with no end in sight

    def finish(self) -> None:
        """The stream ended at a line start (the terminator's `.` line is not fed)."""
        if self.problem is None and self._carry:
            raise ValueError("DATA ended inside a line")  # read_data never does this

    def _lines(self, block: bytes) -> None:
        """Complete lines, CRLF-terminated, starting at a line start."""
        crlf = block.count(b"\r\n")
        if (
            block.count(b"\r") != crlf
            or block.count(b"\n") != crlf
            or (len(block) > self._line_limit and _has_long_line(block, self._line_limit))
        ):
            for piece in block.split(b"\r\n")[:-1]:
                self._line(piece)
                if self.problem is not None:
                    return
            return
        if block[:1] == b".":
            block = block[1:]
        self._keep(block.replace(b"\r\n.", b"\r\n"))

    def _line(self, body: bytes) -> None:
        """One line without its CRLF, by the rules in the module docstring (the slow
        path). Within a line, its length is checked before a bare CR or LF in it (a line
        found too long before its end is refused without waiting for the rest)."""
        if len(body) + 2 > self._line_limit:
            self.problem = LINE_TOO_LONG
            return
        if b"\r" in body or b"\n" in body:
            self.problem = BARE_CR_LF
            return
        self._keep(body[1:] + b"\r\n" if body[:1] == b"." else body + b"\r\n")

    def _keep(self, message: bytes) -> None:
        """Message bytes (dot transparency undone, whole lines): count, read the
        Message-ID while in the headers, write."""
        self.size += len(message)
        if self.size > self._size_limit:
            self.problem = TOO_BIG
            return
        if self._in_headers:
            self._headers(message)
        try:
            self._sink(message)
        except SinkFull:
            self.problem = SINK_FULL

    def discard_partial_line(self) -> None:
        """Forget the incomplete line fed so far: it was the terminator's start."""
        self._carry = b""

    def _headers(self, text: bytes) -> None:
        end = 0 if text.startswith(b"\r\n") else text.find(b"\r\n\r\n")
        if end >= 0:
            self._in_headers = False
            text = text[: end + 2]
        # Each line starting "Message-ID:" in any case (bytes.lower() folds ASCII letters
        # only) and ending in CRLF, as a regex would find it; found with string searches.
        lowered = text.lower()
        at = lowered.find(_MESSAGE_ID)
        while at >= 0:
            if at == 0 or text[at - 1] == 0x0A:  # at a line start
                line = _REST_OF_LINE.match(text, at + len(_MESSAGE_ID))
                if line is not None and line.end() - at <= MESSAGE_ID_MAX:
                    value = text[at + len(_MESSAGE_ID) : line.end() - 2]
                    self.message_id = value.strip().decode("ascii", "replace")
            at = lowered.find(_MESSAGE_ID, at + 1)


def _has_long_line(block: bytes, limit: int) -> bool:
    """Whether a line of `block` is longer than `limit`, CRLF included. `block` is whole
    CRLF-terminated lines with no other CR or LF.

    Such a line holds a run of at least limit - 1 bytes without LF, and any run that long
    covers a whole window of half its length aligned on that length: a block in which
    each of those windows holds an LF has no long line, which a few searches tell
    without splitting the block into lines."""
    window = (limit - 1) // 2
    if window > 0 and all(
        block.find(b"\n", start, start + window) >= 0
        for start in range(0, len(block) - window + 1, window)
    ):
        return False
    return _longest_line(block) > limit


def _longest_line(block: bytes) -> int:
    """Length of the longest CRLF-terminated line in `block`, CRLF included."""
    return max(map(len, block.split(b"\r\n"))) + 2


def _partial_terminator(tail: bytes) -> int:
    """Length of the longest end of `tail` that begins TERMINATOR without completing it."""
    for k in (4, 3, 2, 1):
        if tail.endswith(TERMINATOR[:k]):
            return k
    return 0


async def read_data(reader: asyncio.StreamReader, decoder: DataDecoder) -> None:
    """Feed `decoder` everything up to the DATA terminator, which is consumed; bytes
    after it stay in `reader`. Raises ConnectionResetError if the peer closes first."""
    tail = b"\r\n"  # DATA begins at a line start
    try:
        while True:
            started = _partial_terminator(tail)
            if started:
                # The terminator may straddle what was read and what comes: read just
                # enough to tell. Safe: a started terminator still owes that many bytes.
                chunk = await reader.readexactly(len(TERMINATOR) - started)
                if tail[-started:] + chunk == TERMINATOR:
                    if started == 1:  # the last line's LF came with the terminator
                        decoder.feed(b"\n")
                    elif started > 2:  # its "." (and CR) went to the decoder already
                        decoder.discard_partial_line()
                    break
            else:
                try:
                    chunk = await reader.readuntil(TERMINATOR)
                except asyncio.LimitOverrunError as exc:  # no terminator within the limit
                    chunk = await reader.readexactly(exc.consumed)
                    decoder.feed(chunk)
                    # readuntil looked for the terminator at each of these bytes (the
                    # bytes before them were checked as `tail`): none starts in them, so
                    # the next read is readuntil again, even if they end in CR LF.
                    tail = b""
                    continue
                else:
                    decoder.feed(chunk[:-3])  # keep the CRLF that ends the last line
                    break
            decoder.feed(chunk)
            tail = chunk[-4:] if len(chunk) >= 4 else (tail + chunk)[-4:]
    except asyncio.IncompleteReadError as exc:
        raise ConnectionResetError("peer closed during DATA") from exc
    decoder.finish()
