"""STL, PLY and OBJ: names leave the headers, geometry stays bit-identical.

Meshes are written by numpy-stl and trimesh (not by Portique), with a patient name where
real exports put one.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import trimesh
from stl import Mode
from stl import mesh as stl_mesh

from gateway.files import open_attachment, sniff_format
from gateway.files.base import RewriteSession
from tests.pipeline._helpers import assert_no_planted, lab_copy, message, run

SESSION = RewriteSession(salt=b"s")


def _numpy_stl(name: str, mode: int) -> tuple[bytes, stl_mesh.Mesh]:
    rng = np.random.default_rng(7)
    m = stl_mesh.Mesh(np.zeros(64, dtype=stl_mesh.Mesh.dtype))
    m.vectors[:] = rng.normal(size=(64, 3, 3)).astype(np.float32)
    m.attr[:, 0] = np.arange(64, dtype=np.uint16)  # per-facet attribute bytes must survive
    buf = io.BytesIO()
    m.save(name, fh=buf, mode=mode)
    return buf.getvalue(), m


def _rewrite_through_pipeline(data: bytes, filename: str) -> bytes:
    raw = message(
        body="Scan de DUPONT Jean\n", attachments=[(filename, data, "application/octet-stream")]
    )
    outcome = run(raw).copies[0]
    assert outcome.verdict == "rewritten", outcome.reason
    assert outcome.data is not None
    assert_no_planted(outcome.data)
    import email

    msg = email.message_from_bytes(outcome.data)
    parts = [p for p in msg.walk() if p.get_filename()]
    assert len(parts) == 1
    assert "DUPONT" not in parts[0].get_filename()
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def test_binary_stl_from_numpy_stl_keeps_geometry_and_attributes() -> None:
    data, original = _numpy_stl("DUPONT_Jean", Mode.BINARY)
    assert b"DUPONT" in data[:80]
    out = _rewrite_through_pipeline(data, "DUPONT_Jean_2024-11-02.stl")
    assert b"DUPONT" not in out and b"Jean" not in out[:80]
    assert out[80:] == data[80:]  # count, normals, vertices, attribute bytes: bit-identical
    reread = stl_mesh.Mesh.from_file("x.stl", fh=io.BytesIO(out))
    assert np.array_equal(reread.vectors, original.vectors)
    assert np.array_equal(reread.attr, original.attr)
    assert not out[:80].lstrip().lower().startswith(b"solid")


def test_ascii_stl_from_numpy_stl_rewrites_solid_and_endsolid() -> None:
    data, original = _numpy_stl("DUPONT_Jean", Mode.ASCII)
    assert data.startswith(b"solid DUPONT_Jean")
    out = _rewrite_through_pipeline(data, "scan.stl")
    assert b"DUPONT" not in out
    head, tail = data.split(b"\n", 1)
    assert out.split(b"\n", 1)[1].rsplit(b"endsolid", 1)[0] == tail.rsplit(b"endsolid", 1)[0]
    reread = stl_mesh.Mesh.from_file("x.stl", fh=io.BytesIO(out))
    assert np.allclose(reread.vectors, original.vectors)


def test_binary_stl_header_starting_with_solid_is_not_mistaken_for_ascii() -> None:
    data = b"solid DUPONT".ljust(80, b" ") + struct.pack("<I", 1) + bytes(50)
    handler = sniff_format(data)
    assert handler is not None and handler.format == "stl"
    extracted = open_attachment(data)
    assert extracted.fields[0].text.startswith("solid DUPONT")
    rebuilt = extracted.rebuild(["solid PAT-X"], SESSION)
    assert len(rebuilt) == len(data) and rebuilt[80:] == data[80:]
    assert not rebuilt.lower().startswith(b"solid")


def _trimesh_ply(encoding: str) -> tuple[bytes, trimesh.Trimesh]:
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    data = box.export(file_type="ply", encoding=encoding)
    assert isinstance(data, bytes)
    # Exocad / Shining 3D put the original file name in a header comment.
    marker = b"comment https://github.com/mikedh/trimesh\n"
    assert marker in data
    data = data.replace(
        marker,
        marker + b"comment TextureFile DUPONT_Jean_scan.png\nobj_info patient DUPONT Jean\n",
        1,
    )
    return data, box


def test_binary_ply_from_trimesh_keeps_body_bit_identical() -> None:
    data, box = _trimesh_ply("binary")
    out = _rewrite_through_pipeline(data, "machoire.ply")
    assert b"DUPONT" not in out
    assert out.split(b"end_header\n", 1)[1] == data.split(b"end_header\n", 1)[1]
    reread = trimesh.load(io.BytesIO(out), file_type="ply")
    assert np.array_equal(reread.vertices, box.vertices)
    assert np.array_equal(reread.faces, box.faces)


def test_ascii_ply_from_trimesh_keeps_body() -> None:
    data, box = _trimesh_ply("ascii")
    out = _rewrite_through_pipeline(data, "machoire.ply")
    assert b"DUPONT" not in out
    assert out.split(b"end_header\n", 1)[1] == data.split(b"end_header\n", 1)[1]
    reread = trimesh.load(io.BytesIO(out), file_type="ply")
    assert np.allclose(reread.vertices, box.vertices)


def test_obj_and_mtl_names_are_rewritten_and_geometry_kept() -> None:
    box = trimesh.creation.box()
    obj = box.export(file_type="obj")
    assert isinstance(obj, str)
    data = (
        "# Export de DUPONT Jean\nmtllib DUPONT_Jean.mtl\no DUPONT_Jean_machoire\nusemtl dupont\n"
        + obj
    ).encode()
    assert sniff_format(data) is not None and sniff_format(data).format == "obj"  # type: ignore[union-attr]
    out = _rewrite_through_pipeline(data, "arcade.obj")
    assert b"DUPONT" not in out
    geometry = [ln for ln in data.splitlines() if ln.startswith((b"v ", b"f ", b"vn "))]
    assert geometry == [ln for ln in out.splitlines() if ln.startswith((b"v ", b"f ", b"vn "))]
    mtl = b"newmtl DUPONT_Jean\nKd 1.0 1.0 1.0\nmap_Kd DUPONT_Jean_texture.png\n"
    out_mtl = _rewrite_through_pipeline(mtl, "arcade.mtl")
    assert b"DUPONT" not in out_mtl and b"Kd 1.0 1.0 1.0" in out_mtl


def test_mesh_without_names_passes_unchanged() -> None:
    data, _ = _numpy_stl("scan", Mode.BINARY)
    raw = message(body="Bonjour\n", attachments=[("arcade.stl", data, "model/stl")])
    outcome = run(raw, lab_copy()).copies[0]
    assert outcome.verdict == "pass"
    assert outcome.data == raw
