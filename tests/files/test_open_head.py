"""`open_head`: a file decided by its first HEAD_BYTES bytes and its size.

It must find what `open_file` finds for the whole file: the fields of a binary STL, and
None (decode the whole file) for every other format, including those sniffed before STL,
whose sniffers must decide by a prefix shorter than HEAD_BYTES.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from stl import Mode
from stl import mesh as stl_mesh

from gateway.files import open_attachment, sniff_format
from gateway.files.base import RewriteSession
from gateway.files.dispatch import HEAD_BYTES, open_head
from tests.files import _docs


def binary_stl(facets: int, header: bytes) -> bytes:
    m = stl_mesh.Mesh(np.zeros(facets, dtype=stl_mesh.Mesh.dtype))
    m.vectors[:] = np.random.default_rng(1).normal(size=(facets, 3, 3)).astype(np.float32)
    buf = io.BytesIO()
    m.save("x", fh=buf, mode=Mode.BINARY)
    return header.ljust(80, b" ") + buf.getvalue()[80:]


def ascii_stl(facets: int) -> bytes:
    m = stl_mesh.Mesh(np.zeros(facets, dtype=stl_mesh.Mesh.dtype))
    buf = io.BytesIO()
    m.save("DUPONT", fh=buf, mode=Mode.ASCII)
    return buf.getvalue()


def dicom() -> bytes:
    path = get_testdata_file("CT_small.dcm", download=False)
    assert path is not None
    return Path(str(path)).read_bytes()


def padded(data: bytes) -> bytes:
    """Formats that tolerate trailing bytes, made longer than the head."""
    return data + b"\x00" * (2 * HEAD_BYTES)


OTHERS = {
    "pdf": lambda: padded(_docs.text_pdf("DUPONT Jean", "DUPONT")),
    "docx": lambda: padded(_docs.docx("DUPONT Jean", "DUPONT")),
    "zip": lambda: padded(_docs.zip_of({"a.txt": b"DUPONT"})),
    "png": lambda: padded(_docs.png_with_text("DUPONT")[0]),
    "jpeg": lambda: padded(_docs.jpeg_with_exif("DUPONT")),
    "dicom": dicom,
    "ply": lambda: b"ply\nformat ascii 1.0\ncomment DUPONT\nend_header\n" + b"0 0 0\n" * 2000,
    "ascii-stl": lambda: ascii_stl(200),
    "text": lambda: b"DUPONT Jean\n" * 2000,
}


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_other_formats_are_left_to_the_whole_file(name: str) -> None:
    data = OTHERS[name]()
    assert len(data) > HEAD_BYTES
    head = data[:HEAD_BYTES]
    whole = sniff_format(data)
    if whole is not None and whole.format != "stl":
        # Decided by a prefix inside the head, as open_head relies on.
        assert sniff_format(head) is whole
    assert open_head(head, len(data)) is None


@pytest.mark.parametrize("facets", [100, 1401])
def test_binary_stl_head_gives_the_whole_file_fields(facets: int) -> None:
    data = binary_stl(facets, b"Scan DUPONT Jean")
    whole = open_attachment(data)
    by_head = open_head(data[:HEAD_BYTES], len(data))
    assert by_head is not None
    assert by_head.fields == whole.fields and by_head.format == whole.format
    session = RewriteSession(salt=b"s")
    texts = ["Scan PAT-AAAAA-BBBBB"]
    new_header = by_head.rebuild(texts, session)
    assert len(new_header) == 80
    assert new_header + data[80:] == whole.rebuild(texts, session)
    assert by_head.rebuild([whole.fields[0].text], session) is by_head.original


def test_binary_stl_head_with_a_wrong_size_is_not_taken() -> None:
    data = binary_stl(1401, b"Scan DUPONT Jean")
    assert open_head(data[:HEAD_BYTES], len(data) - 1) is None
    assert open_head(data[:HEAD_BYTES], len(data) + 50) is None


def test_header_starting_with_solid_is_rewritten_as_the_whole_file_would_be() -> None:
    data = binary_stl(1401, b"solid DUPONT")
    by_head = open_head(data[:HEAD_BYTES], len(data))
    assert by_head is not None
    session = RewriteSession(salt=b"s")
    texts = ["solid [NAME]"]
    assert by_head.rebuild(texts, session) + data[80:] == open_attachment(data).rebuild(
        texts, session
    )
