"""The DATA stream decoder and reader (gateway.smtp_data) against a line-by-line
statement of the rules: every slicing of the stream, fast path or slow, and through a
real loopback socket, gives the same message, Message-ID and refusal."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.smtp_data import (
    BARE_CR_LF,
    LINE_TOO_LONG,
    MESSAGE_ID_MAX,
    SINK_FULL,
    TOO_BIG,
    DataDecoder,
    SinkFull,
    _has_long_line,
    _longest_line,
    read_data,
)

LINE_LIMIT = 80
SIZE_LIMIT = 2_000


def rules(raw: bytes, line_limit: int, size_limit: int) -> tuple[str | None, bytes, str]:
    """The rules, one line at a time: (problem, message, Message-ID). `raw` is what
    came before the terminator line, so it is empty or ends with CRLF."""
    assert raw == b"" or raw.endswith(b"\r\n")
    out: list[bytes] = []
    size = 0
    in_headers = True
    message_id = ""
    for body in raw.split(b"\r\n")[:-1]:
        if len(body) + 2 > line_limit:
            return LINE_TOO_LONG, b"", ""
        if b"\r" in body or b"\n" in body:
            return BARE_CR_LF, b"", ""
        line = (body[1:] if body.startswith(b".") else body) + b"\r\n"
        size += len(line)
        if size > size_limit:
            return TOO_BIG, b"", ""
        if in_headers:
            if line == b"\r\n":
                in_headers = False
            elif line[:11].lower() == b"message-id:" and len(line) <= MESSAGE_ID_MAX:
                message_id = line[11:].strip().decode("ascii", "replace")
        out.append(line)
    return None, b"".join(out), message_id


def decode(pieces: list[bytes], line_limit: int = LINE_LIMIT) -> tuple[str | None, bytes, str]:
    written: list[bytes] = []
    decoder = DataDecoder(written.append, line_limit=line_limit, size_limit=SIZE_LIMIT)
    for piece in pieces:
        decoder.feed(piece)
    decoder.finish()
    return (
        decoder.problem,
        b"".join(written) if decoder.problem is None else b"",
        (decoder.message_id if decoder.problem is None else ""),
    )


# Lines built from the characters that matter: dots at line starts, stray CR and LF,
# header-like lines, long lines.
_fragment = st.sampled_from(
    [b"a", b"Z9", b".", b"..", b" ", b"\r", b"\n", b"\xe9", b"Message-ID: <x@y>", b"x" * 30]
    + [b"message-id:<l@y>", b"MESSAGE-ID:", b"Message-Id: <\xe9>", b"X-Message-ID: <n@y>"]
)
_line = st.lists(_fragment, max_size=5).map(b"".join)
_message_lines = st.lists(_line, max_size=25)


def _raw(lines: list[bytes]) -> bytes:
    # "." alone would be the terminator: the client dot-stuffs it (RFC 5321 4.5.2).
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def _sliced(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=400, deadline=None)
@given(_message_lines, st.lists(st.integers(min_value=0, max_value=3000), max_size=8))
def test_any_slicing_gives_what_the_line_rules_give(lines: list[bytes], cuts: list[int]) -> None:
    raw = _raw(lines)
    assert decode(_sliced(raw, cuts)) == rules(raw, LINE_LIMIT, SIZE_LIMIT)


def test_fast_path_undoes_dot_stuffing_and_reads_the_message_id() -> None:
    raw = b"Subject: x\r\nMessage-ID: <m-1@cabinet>\r\n\r\n..leading\r\n.\r\n..\r\nend\r\n"
    assert decode([raw]) == (None, rules(raw, LINE_LIMIT, SIZE_LIMIT)[1], "<m-1@cabinet>")
    assert decode([raw])[1].endswith(b"\r\n.leading\r\n\r\n.\r\nend\r\n")


def test_message_id_in_the_body_is_not_the_message_id() -> None:
    raw = b"Subject: x\r\n\r\nMessage-ID: <body@x>\r\n"
    assert decode([raw[:14], raw[14:]])[2] == ""


def test_a_line_without_end_longer_than_the_limit_is_refused_before_it_ends() -> None:
    written: list[bytes] = []
    decoder = DataDecoder(written.append, line_limit=LINE_LIMIT, size_limit=SIZE_LIMIT)
    decoder.feed(b"ok\r\n" + b"y" * (LINE_LIMIT + 1))
    assert decoder.problem == LINE_TOO_LONG


def test_a_sink_that_refuses_bytes_is_a_problem_not_an_exception() -> None:
    def full(_data: bytes) -> None:
        raise SinkFull

    decoder = DataDecoder(full, line_limit=LINE_LIMIT, size_limit=SIZE_LIMIT)
    decoder.feed(b"Subject: x\r\n\r\nbody\r\n")
    decoder.finish()
    assert decoder.problem == SINK_FULL


# --- read_data over a real loopback socket ---------------------------------------------


async def _read_over_socket(
    stream: bytes, cuts: list[int], line_limit: int
) -> tuple[tuple[str | None, bytes, str], bytes]:
    """Send `stream` in pieces to a loopback server running read_data; what it decoded
    and the line that followed the terminator (left in the reader)."""
    result: asyncio.Future[tuple[tuple[str | None, bytes, str], bytes]] = (
        asyncio.get_running_loop().create_future()
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        written: list[bytes] = []
        decoder = DataDecoder(written.append, line_limit=line_limit, size_limit=SIZE_LIMIT)
        try:
            await read_data(reader, decoder)
            after = await reader.readline()
            decoded = (
                decoder.problem,
                b"".join(written) if decoder.problem is None else b"",
                decoder.message_id if decoder.problem is None else "",
            )
            result.set_result((decoded, after))
        except Exception as exc:  # surfaced by the awaiting test
            result.set_exception(exc)
        finally:
            writer.close()
            await writer.wait_closed()

    # The reader's limit is the line limit, as aiosmtpd builds it.
    server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=line_limit)
    port = server.sockets[0].getsockname()[1]
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for piece in _sliced(stream, cuts):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)
            return await asyncio.wait_for(result, 10)
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_message_lines, st.lists(st.integers(min_value=0, max_value=3000), max_size=6))
def test_read_data_over_a_socket_stops_at_the_terminator_and_leaves_what_follows(
    lines: list[bytes], cuts: list[int]
) -> None:
    raw = _raw(lines)
    # A generated "line" holding CR LF "." CR LF is the terminator itself (the reader
    # rightly stops there; the embedded terminator has tests of its own below).
    assume(b"\r\n.\r\n" not in b"\r\n" + raw)
    stream = raw + b".\r\nQUIT\r\n"
    decoded, after = asyncio.run(_read_over_socket(stream, cuts, LINE_LIMIT))
    assert decoded == rules(raw, LINE_LIMIT, SIZE_LIMIT)
    assert after == b"QUIT\r\n"


@pytest.mark.parametrize("cut", range(0, 9))
async def test_terminator_split_anywhere_is_found(cut: int) -> None:
    raw = b"Subject: x\r\n\r\nline\r"  # the last line's CR, then its LF with the terminator
    stream = raw + b"\n.\r\nNOOP\r\n"
    at = len(raw) - 3 + cut
    decoded, after = await _read_over_socket(stream, [at, at + 1], LINE_LIMIT)
    assert decoded == (None, b"Subject: x\r\n\r\nline\r\n", "")
    assert after == b"NOOP\r\n"


async def test_empty_message_and_smuggled_terminators() -> None:
    assert (await _read_over_socket(b".\r\nQUIT\r\n", [1, 2], LINE_LIMIT)) == (
        (None, b"", ""),
        b"QUIT\r\n",
    )
    # "\n.\r\n" and "\r.\n" do not end DATA: they are bare LF / bare CR in a line.
    for smuggled in (b"a\n.\r\nMAIL FROM:<x@y>\r\n", b"a\r.\nMAIL FROM:<x@y>\r\n"):
        decoded, after = await _read_over_socket(smuggled + b".\r\nQUIT\r\n", [], LINE_LIMIT)
        assert decoded[0] == BARE_CR_LF
        assert after == b"QUIT\r\n"


async def test_a_dot_inside_a_long_line_does_not_end_data() -> None:
    long_line = b"x" * 1500 + b"\r\n.\r\n"[2:]  # ".\r\n" mid-line after 1,500 bytes
    stream = b"Subject: x\r\n\r\n" + long_line + b"tail\r\n.\r\nQUIT\r\n"
    decoded, after = await _read_over_socket(stream, [700, 1400], 1001)
    assert decoded[0] == LINE_TOO_LONG
    assert after == b"QUIT\r\n"


async def test_a_large_message_is_read_in_blocks_and_arrives_whole() -> None:
    lines = [b"%05d " % n + b"." * 60 for n in range(20_000)]  # 1.3 MB, dots everywhere
    raw = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    written: list[bytes] = []
    decoder = DataDecoder(written.append, line_limit=1001, size_limit=10_000_000)
    reader = asyncio.StreamReader(limit=1001)
    reader.feed_data(raw + b".\r\n")
    reader.feed_eof()
    await read_data(reader, decoder)
    assert decoder.problem is None
    assert b"".join(written) == rules(raw, 1001, 10_000_000)[1]
    assert len(written) < len(lines) / 10  # blocks, not lines


@settings(max_examples=600, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=120), min_size=1, max_size=40),
    st.integers(min_value=3, max_value=100),
)
def test_long_line_check_agrees_with_the_longest_line(lengths: list[int], limit: int) -> None:
    """The windowed search for an overlong line answers as measuring every line does."""
    block = b"".join(b"x" * n + b"\r\n" for n in lengths)
    assert _has_long_line(block, limit) == (_longest_line(block) > limit)
