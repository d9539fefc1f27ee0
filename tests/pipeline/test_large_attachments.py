"""Large binary STL attachments read by their head and rebuilt by splicing base64 lines.

Meshes are written by numpy-stl (and read back by numpy-stl and trimesh). A spliced
output must be byte-identical to what re-encoding the whole rewritten mesh writes, decode
to exactly the rewritten mesh, and carry no planted name; any other layout falls back to
the whole-body path.
"""

from __future__ import annotations

import base64
import email
import io
import tracemalloc

import numpy as np
import pytest
import trimesh
from stl import Mode
from stl import mesh as stl_mesh

from gateway.errors import ContentError
from gateway.pipeline import message as message_module
from gateway.pipeline.message import HEAD_PATH_MIN_BYTES, analyse_message, standard_base64_layout
from gateway.pipeline.process import policy_for, verify_output
from gateway.verdicts import Verdict
from tests.pipeline._helpers import assert_no_planted, engine, lab_copy, run

HEADER_NAME = "Scan DUPONT Jean 02/11/1975"


def numpy_stl_mesh(facets: int) -> tuple[bytes, stl_mesh.Mesh]:
    rng = np.random.default_rng(facets)
    m = stl_mesh.Mesh(np.zeros(facets, dtype=stl_mesh.Mesh.dtype))
    m.vectors[:] = rng.normal(size=(facets, 3, 3)).astype(np.float32)
    m.attr[:, 0] = (np.arange(facets) % 65521).astype(np.uint16)
    buf = io.BytesIO()
    m.save("x", fh=buf, mode=Mode.BINARY)
    data = HEADER_NAME.encode().ljust(80, b" ") + buf.getvalue()[80:]
    return data, m


def stl_message(encoded: bytes, nl: bytes, *, blank_line_after: bool = False) -> bytes:
    """A multipart message with the STL's base64 body exactly as given, lines in `nl`."""
    head = nl.join(
        [
            b"From: Dr Martin <cabinet@cabinet-martin.fr>",
            b"To: Labo <orders@labo.fr>",
            b"Subject: Scan",
            b"MIME-Version: 1.0",
            b"Content-Type: multipart/mixed; boundary=xyz",
            b"",
            b"--xyz",
            b"Content-Type: text/plain; charset=utf-8",
            b"",
            b"Bonjour, le scan (dent 36).",
            b"--xyz",
            b"Content-Type: model/stl",
            b"Content-Transfer-Encoding: base64",
            b'Content-Disposition: attachment; filename="DUPONT_Jean.stl"',
            b"",
            b"",
        ]
    )
    body = encoded if encoded.endswith(nl) else encoded + nl
    if blank_line_after:
        body += nl
    return head + body + b"--xyz--" + nl


def standard_base64(data: bytes, nl: bytes) -> bytes:
    encoded = base64.encodebytes(data)
    return encoded.replace(b"\n", nl) if nl != b"\n" else encoded


def attachment_payload(out: bytes) -> bytes:
    parts = [p for p in email.message_from_bytes(out).walk() if p.get_filename()]
    assert len(parts) == 1
    assert "DUPONT" not in (parts[0].get_filename() or "")
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def rewritten(raw: bytes) -> bytes:
    outcome = run(raw).copies[0]
    assert outcome.verdict == Verdict.REWRITTEN, outcome.reason
    assert outcome.data is not None
    assert_no_planted(outcome.data)
    return outcome.data


def whole_body_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(message_module, "HEAD_PATH_MIN_BYTES", 1 << 62)


# 1400 facets: 70,084 bytes (not a multiple of 57); 1389: 69,534 = 57 x 1,220 (a whole
# number of lines); 5003: 250,234 bytes (a last line of 10 bytes).
@pytest.mark.parametrize("facets", [1400, 1389, 5003])
@pytest.mark.parametrize("nl", [b"\r\n", b"\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("blank_line_after", [False, True])
def test_spliced_stl_is_what_re_encoding_the_whole_mesh_writes(
    facets: int, nl: bytes, blank_line_after: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, original = numpy_stl_mesh(facets)
    raw = stl_message(standard_base64(data, nl), nl, blank_line_after=blank_line_after)
    assert len(raw) > HEAD_PATH_MIN_BYTES
    spliced = rewritten(raw)
    payload = attachment_payload(spliced)
    assert len(payload) == len(data)
    assert payload[80:] == data[80:]  # count, facets, attribute bytes: bit-identical
    assert b"DUPONT" not in payload[:80] and b"1975" not in payload[:80]
    reread = stl_mesh.Mesh.from_file("x.stl", fh=io.BytesIO(payload))
    assert np.array_equal(reread.vectors, original.vectors)
    assert np.array_equal(reread.attr, original.attr)
    loaded = trimesh.load(io.BytesIO(payload), file_type="stl", process=False)
    assert len(loaded.faces) == facets

    whole_body_path(monkeypatch)
    assert rewritten(raw) == spliced  # byte for byte


@pytest.mark.parametrize("nl", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_header_is_read_without_decoding_the_whole_mesh(nl: bytes) -> None:
    data, _ = numpy_stl_mesh(40_000)  # 2 MB
    raw = stl_message(standard_base64(data, nl), nl)
    engine()  # built (and cached) outside the measurement
    tracemalloc.start()
    try:
        analysis = analyse_message(raw)
        _, analysis_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        outcome = run(raw).copies[0]
        _, process_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert any(f.text == HEADER_NAME for f in analysis.fields)
    assert analysis_peak < len(data) // 10
    # The output itself (one message-sized copy), and nothing else of that size.
    assert outcome.verdict == Verdict.REWRITTEN
    assert process_peak < len(raw) * 1.3


def test_verification_reads_the_header_of_a_spliced_mesh() -> None:
    data, _ = numpy_stl_mesh(1400)
    raw = stl_message(standard_base64(data, b"\r\n"), b"\r\n")
    # A rebuild that left the name in the header would be caught by the rescan.
    with pytest.raises(ContentError):
        verify_output(raw, engine(), policy_for(lab_copy()), None)


def relined(data: bytes, width: int, nl: bytes) -> bytes:
    flat = base64.b64encode(data)
    return nl.join(flat[i : i + width] for i in range(0, len(flat), width)) + nl


@pytest.mark.parametrize(
    "encode",
    [
        lambda d: relined(d, 64, b"\r\n"),  # another line length
        lambda d: relined(d, 76, b"\n"),  # LF lines in a CRLF message
        lambda d: standard_base64(d, b"\r\n").replace(b"\r\n", b" \r\n", 1),  # a blank
        lambda d: relined(d, 76, b"\r\n").replace(b"\r\n", b"", 1),  # two lines joined
    ],
    ids=["64-chars", "lf-in-crlf", "trailing-blank", "joined-lines"],
)
def test_other_layouts_fall_back_to_the_whole_body(encode: object) -> None:
    data, original = numpy_stl_mesh(1400)
    encoded = encode(data)  # type: ignore[operator]
    raw = stl_message(encoded, b"\r\n")
    start = raw.index(encoded)
    assert standard_base64_layout(raw, start, start + len(encoded), b"\r\n") is None
    payload = attachment_payload(rewritten(raw))
    assert payload[80:] == data[80:] and b"DUPONT" not in payload
    reread = stl_mesh.Mesh.from_file("x.stl", fh=io.BytesIO(payload))
    assert np.array_equal(reread.vectors, original.vectors)


@pytest.mark.parametrize("size", [57 * 100, 57 * 100 + 1, 57 * 100 + 2, 57 * 100 + 56])
@pytest.mark.parametrize("nl", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_standard_layout_gives_the_exact_size(size: int, nl: bytes) -> None:
    encoded = standard_base64((bytes(range(256)) * (size // 256 + 1))[:size], nl)
    for body in (encoded, encoded[: -len(nl)]):
        raw = b"x" + body + b"y"
        layout = standard_base64_layout(raw, 1, 1 + len(body), nl)
        assert layout == ((size - 1) // 57, size)


def test_malformed_last_line_still_holds() -> None:
    data, _ = numpy_stl_mesh(1400)
    encoded = standard_base64(data, b"\r\n") + b"Q\r\n"  # one character: no byte
    outcome = run(stl_message(encoded, b"\r\n")).copies[0]
    assert outcome.verdict == Verdict.HOLD
    assert outcome.data is None


@pytest.mark.parametrize("subdivisions", [3, 4])
def test_trimesh_export_with_a_name_in_its_header(
    subdivisions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    exported = sphere.export(file_type="stl")
    assert isinstance(exported, bytes)
    data = b"DUPONT Jean".ljust(80, b"\x00") + exported[80:]
    raw = stl_message(standard_base64(data, b"\r\n"), b"\r\n")
    spliced = rewritten(raw)
    payload = attachment_payload(spliced)
    assert payload[80:] == exported[80:] and b"DUPONT" not in payload
    loaded = trimesh.load(io.BytesIO(payload), file_type="stl", process=False)
    assert np.array_equal(loaded.triangles, sphere.triangles.astype(np.float32))
    whole_body_path(monkeypatch)
    assert rewritten(raw) == spliced
