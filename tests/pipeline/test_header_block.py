"""The common-shape header reader (gateway/pipeline/mime.py) gives exactly the Message
that email's BytesHeaderParser gives, and the pipeline's outcome does not depend on
which of the two read a header block.

Compared: every attribute of the Message (headers as stored, payload, Unix From_,
charset, preamble, epilogue, default type, policy) and the types of its defects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.config import FilesConfig
from gateway.pipeline import mime
from gateway.pipeline.message import content_charset
from gateway.pipeline.mime import parse_header_block, parse_message
from tests.pipeline._helpers import lab_copy, load_test_messages, outcome_digest, run
from tests.scan.test_compiled import run_from_source

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


def _state(message: Message) -> dict[str, object]:
    state = dict(vars(message))
    state["defects"] = [type(defect) for defect in message.defects]
    return state


def _reference(block: bytes) -> dict[str, object]:
    return _state(BytesHeaderParser(policy=compat32).parsebytes(block))


def _takes_fast_path(block: bytes) -> bool:
    text = block.decode("ascii", "surrogateescape")
    return mime._common_fields(text) is not None


def _corpus() -> Iterator[tuple[str, bytes]]:
    """The golden inputs and outputs, and load-tests/messages.py's three kinds."""
    for path in sorted(GOLDEN.glob("*.eml")):
        yield path.name, path.read_bytes()
    messages = load_test_messages()
    for kind in ("lab", "html", "stl"):
        for load_id, _index, raw in messages.generate("hdr", 12, kind, messages.DEFAULT_SEED):
            yield load_id, raw


def _header_blocks(raw: bytes) -> list[bytes]:
    _root, parts = parse_message(raw, FilesConfig())
    return [raw[part.start : part.header_end] for part in parts]


# Pieces that matter to header syntax: names, colons, blanks, every line ending, a Unix
# From_ line, 8-bit bytes, NUL, an encoded word, parameters.
_PIECES = st.sampled_from(
    [
        b"Subject",
        b"X-a",
        b"From ",
        b"From",
        b":",
        b": ",
        b" ",
        b"\t",
        b"\r",
        b"\n",
        b"\r\n",
        b"\r\n\r\n",
        b"\n\n",
        b"v",
        b"\xc3\xa9",
        b"\xff",
        b"\x00",
        b"=?utf-8?q?=C3=A9?=",
        b'; name="a b"',
        b"a b",
    ]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_PIECES, max_size=16).map(b"".join))
@example(b"From: a <b@c>\r\nSubject: x\r\n  y\r\nX:\r\n\tz\r\nY:  \r\n\r\n")
@example(b"\r\n")
@example(b"A: b\nC: d\r\n\r\n")
@example(b"From someone Sun Nov 29\nSubject: a\n\n")
@example(b"Subject: a\rX: b\r\n\r\n")
@example(b": no name\r\n\r\n")
@example(b" continued first\r\nA: b\r\n\r\n")
@example(b"Subject: no blank line\r\n")
@example(b"Bad header\r\nA: b\r\n\r\n")
def test_same_message_as_bytes_header_parser(block: bytes) -> None:
    assert _state(parse_header_block(block)) == _reference(block)


_NAME = st.text(st.sampled_from("abcXYZ-_0!#~"), min_size=1, max_size=10)
_VALUE = st.text(st.sampled_from([*"ab c\t;=\"'<>@:é", "\udcff"]), max_size=20)
_ENDING = st.sampled_from(["\r\n", "\n"])


@st.composite
def _common_blocks(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        lines.append(f"{draw(_NAME)}:{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}")
        lines[-1] += draw(_VALUE) + draw(_ENDING)
        for _ in range(draw(st.integers(0, 2))):  # folded continuation lines
            lines.append(draw(st.sampled_from([" ", "\t", "  "])) + draw(_VALUE) + draw(_ENDING))
    lines.append(draw(_ENDING))
    return "".join(lines).encode("utf-8", "surrogateescape")


@settings(max_examples=1000, deadline=None)
@given(_common_blocks())
def test_common_shapes_take_the_fast_path(block: bytes) -> None:
    """Blocks shaped like real mail, so that the fast path is what gets compared."""
    assert _takes_fast_path(block)
    assert _state(parse_header_block(block)) == _reference(block)


def test_corpus_header_blocks() -> None:
    """Every part's header block of the golden corpus and of the load-test messages; the
    load-test messages (what the throughput figures measure) all take the fast path."""
    compared = 0
    for name, raw in _corpus():
        for block in _header_blocks(raw):
            assert _state(parse_header_block(block)) == _reference(block), name
            if not name.endswith(".eml"):
                assert _takes_fast_path(block), name
            compared += 1
    assert compared > 100


def _reader_corpus() -> list[bytes]:
    return [raw for name, raw in _corpus() if name.endswith(".in.eml") or ".lab." in name]


def outcomes_with_the_email_parser_only() -> str:
    """JSON of the corpus' outcome digests with every block read by BytesHeaderParser.
    Run from plain-Python source: the compiled parse_header_block calls
    _common_fields directly, past any replacement of the module attribute."""
    mime._common_fields = lambda text: None
    return json.dumps([outcome_digest(run(raw, lab_copy())) for raw in _reader_corpus()])


def test_pipeline_outcome_independent_of_the_reader() -> None:
    """Outcomes (verdict, bytes, findings, vault entries, reason, safe subject) on the
    corpus are the same when every block goes through BytesHeaderParser."""
    fast = [outcome_digest(run(raw, lab_copy())) for raw in _reader_corpus()]
    assert len(fast) > 20
    target = "tests.pipeline.test_header_block:outcomes_with_the_email_parser_only"
    assert json.loads(run_from_source(target)) == fast


# Parsed header values hold ASCII and surrogate escapes of 8-bit bytes (never a decoded
# non-ASCII character): the pieces do too.
_CONTENT_TYPE_PIECES = st.sampled_from(
    ["text/plain", "charset", "CharSet", "name", "=", "utf-8", "ISO-8859-1", '"', ";", " "]
    + ["\t", "\r\n ", "\\", "*", "'", "x", "\udce9", "format=flowed"]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_CONTENT_TYPE_PIECES, max_size=10).map("".join))
@example("text/plain; charset=utf-8")
@example('text/plain; charset="UTF-8" ')
@example("charset=x; charset=utf-8")
@example('text/plain; charset="utf-8')
@example("text/plain; charset*=utf-8''x")
@example("charset;charset=charset")  # no type: the email package's first "charset" is empty
def test_content_charset_as_get_content_charset(value: str) -> None:
    message = Message()
    message.set_raw("Content-Type", value)
    assert content_charset(message) == message.get_content_charset()


def _parts_state(raw: bytes, known: mime.KnownBlocks | None) -> list[object]:
    _root, parts = parse_message(raw, FilesConfig(), known)
    return [
        (p.start, p.header_end, p.end, p.kind, p.fields, p.content_type, p.transfer_encoding)
        + (p.common_shape, _state(p.message))
        for p in parts
    ]


def test_known_blocks_give_what_a_fresh_read_gives() -> None:
    """A block read from `known` (the verification's reading of unchanged headers) gives
    the part a fresh read gives: fields, type, encoding, shape and Message."""
    known: mime.KnownBlocks = {}
    hits = 0
    for _name, raw in _corpus():
        fresh = _parts_state(raw, None)
        assert _parts_state(raw, known) == fresh  # filling `known`
        before = len(known)
        assert _parts_state(raw, known) == fresh  # reading from it
        assert len(known) == before
        hits += before > 0
    assert hits > 20


def test_analysis_of_the_output_same_with_the_input_memo() -> None:
    """The rewritten output analysed with the input's memo (as verify_output does) has
    the fields, and the same rebuild, as analysed on its own."""
    from gateway.pipeline.message import analyse_message

    compared = 0
    for _name, raw in _corpus():
        outcome = run(raw, lab_copy())
        data = outcome.copies[0].data
        if data is None or data is raw:
            continue
        first = analyse_message(raw)
        shared = analyse_message(data, memo=first.memo)
        alone = analyse_message(data)
        assert shared.fields == alone.fields
        assert (shared.structured, shared.locked, shared.notes, shared.formats) == (
            alone.structured,
            alone.locked,
            alone.notes,
            alone.formats,
        )
        assert shared.memo is first.memo and first.memo.header_blocks
        compared += 1
    assert compared > 20
