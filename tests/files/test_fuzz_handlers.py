"""Hypothesis fuzzing of the file handlers: mutated real samples of every format.

Property: `open_attachment` either extracts fields that `rebuild` can write back, or
raises ContentError (a hold with a fixed reason); no foreign exception escapes.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ContentError
from gateway.files import open_attachment
from gateway.files.base import RewriteSession
from tests.files import _docs
from tests.pipeline.golden_inputs import _binary_stl, _dicom

SAMPLES = [
    _dicom(),
    _binary_stl(),
    b"ply\nformat ascii 1.0\ncomment DUPONT\nelement vertex 1\nproperty float x\nend_header\n1\n",
    b"# DUPONT\no DUPONT\nv 0 0 0\nv 1 0 0\nf 1 2\n",
    _docs.text_pdf("Patient DUPONT Jean", title="Fiche"),
    _docs.docx("Patient DUPONT Jean", "DUPONT"),
    _docs.odt("DUPONT Jean"),
    _docs.png_with_text("DUPONT Jean")[0],
    _docs.jpeg_with_exif("DUPONT Jean"),
    _docs.three_shape_order("DUPONT Jean"),
    _docs.zip_of({"DUPONT/scan.stl": _binary_stl()}),
]


@st.composite
def mutated_file(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 32))]
        else:
            del data[pos:]
    return bytes(data)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_file())
def test_handlers_extract_and_rebuild_or_refuse(data: bytes) -> None:
    try:
        extracted = open_attachment(data)
        rebuilt = extracted.rebuild([f.text + " x" for f in extracted.fields], RewriteSession(b"s"))
    except ContentError:
        return
    assert isinstance(rebuilt, bytes)
