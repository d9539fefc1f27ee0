"""PDF, office documents, XML order files, ZIP archives and photographs."""

from __future__ import annotations

import email
import io
import zipfile

import pypdf
from PIL import Image

from gateway.files import open_attachment, sniff_format
from gateway.verdicts import Action
from tests.files import _docs
from tests.pipeline._helpers import assert_no_planted, copy_for, lab_copy, message, run


def _only_attachment(raw: bytes) -> tuple[str, bytes]:
    msg = email.message_from_bytes(raw)
    for part in msg.walk():
        name = part.get_filename()
        if name:
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return name, payload
    raise AssertionError("no attachment")


def _send(name: str, data: bytes, *copies: object) -> tuple[object, ...]:
    raw = message(body="Ci-joint.\n", attachments=[(name, data, "application/octet-stream")])
    return run(raw, *(copies or (lab_copy(),))).copies  # type: ignore[arg-type]


def test_pdf_with_identifiers_is_held_on_transforming_routes_with_the_reason() -> None:
    pdf = _docs.text_pdf("Patient DUPONT Jean ne le 02/11/1975", title="Fiche DUPONT")
    lab, redact, screen = _send(
        "fiche.pdf", pdf, lab_copy(), copy_for(Action.REDACT), copy_for(Action.REJECT_IF_PHI)
    )
    assert lab.verdict == "hold" and "PDF" in lab.reason  # type: ignore[attr-defined]
    assert redact.verdict == "hold"  # type: ignore[attr-defined]
    assert screen.verdict == "reject"  # type: ignore[attr-defined]
    assert "DUPONT" not in lab.reason  # type: ignore[attr-defined]


def test_clean_pdf_has_its_metadata_removed() -> None:
    pdf = _docs.text_pdf("Couronne 36 zircone teinte A2", title="Fiche LEGRAND")
    assert pypdf.PdfReader(io.BytesIO(pdf)).metadata
    (lab,) = _send("fiche.pdf", pdf)
    assert lab.verdict == "rewritten", lab.reason  # type: ignore[attr-defined]
    _, out = _only_attachment(lab.data)  # type: ignore[attr-defined]
    reader = pypdf.PdfReader(io.BytesIO(out))
    assert not reader.metadata or "/Title" not in reader.metadata
    assert "Couronne 36" in reader.pages[0].extract_text()
    assert b"LEGRAND" not in out


def test_docx_text_and_properties_are_rewritten() -> None:
    data = _docs.docx("Couronne pour DUPONT Jean, dent 36", "DUPONT Jean")
    assert sniff_format(data).format == "office"  # type: ignore[union-attr]
    (lab,) = _send("DUPONT_Jean_fiche.docx", data)
    assert lab.verdict == "rewritten", lab.reason  # type: ignore[attr-defined]
    name, out = _only_attachment(lab.data)  # type: ignore[attr-defined]
    assert "DUPONT" not in name
    archive = zipfile.ZipFile(io.BytesIO(out))
    document = archive.read("word/document.xml")
    assert b"DUPONT" not in document and b"dent 36" in document
    assert b'mc:Ignorable="w14"' in document  # prefixes kept verbatim
    assert b"DUPONT" not in archive.read("docProps/core.xml")


def test_xlsx_and_odt_are_rewritten() -> None:
    (lab,) = _send("suivi.xlsx", _docs.xlsx("LEGRAND Sophie"))
    assert lab.verdict == "rewritten", lab.reason  # type: ignore[attr-defined]
    assert_no_planted(_only_attachment(lab.data)[1])  # type: ignore[attr-defined]
    (lab,) = _send("suivi.odt", _docs.odt("Patiente LEGRAND Sophie"))
    assert lab.verdict == "rewritten", lab.reason  # type: ignore[attr-defined]
    out = _only_attachment(lab.data)[1]  # type: ignore[attr-defined]
    archive = zipfile.ZipFile(io.BytesIO(out))
    assert archive.namelist()[0] == "mimetype"
    assert archive.getinfo("mimetype").compress_type == zipfile.ZIP_STORED
    assert b"LEGRAND" not in archive.read("content.xml")


def test_three_shape_and_exocad_xml_are_rewritten() -> None:
    for name, data in (
        ("order.3ox", _docs.three_shape_order("DUPONT Jean")),
        ("case.dentalProject", _docs.exocad_project("DUPONT Jean")),
    ):
        (lab,) = _send(name, data)
        assert lab.verdict == "rewritten", lab.reason  # type: ignore[attr-defined]
        out = _only_attachment(lab.data)[1]  # type: ignore[attr-defined]
        assert_no_planted(out)
        assert b"20241102-0042" in out or b"ProjectGUID" in out


def test_zip_of_scans_recurses_and_rewrites_entry_names() -> None:
    from stl import Mode

    from tests.files.test_meshes import _numpy_stl

    stl, _ = _numpy_stl("DUPONT_Jean", Mode.BINARY)
    inner = _docs.zip_of({"order.3ox": _docs.three_shape_order("DUPONT Jean")})
    data = _docs.zip_of(
        {
            "DUPONT_Jean/DUPONT_Jean-UpperJaw.stl": stl,
            "DUPONT_Jean/order.3oxz": inner,
        }
    )
    (lab,) = _send("DUPONT_Jean.zip", data)
    assert lab.verdict == "rewritten", lab.reason  # type: ignore[attr-defined]
    out = _only_attachment(lab.data)[1]  # type: ignore[attr-defined]
    archive = zipfile.ZipFile(io.BytesIO(out))
    names = archive.namelist()
    assert all("DUPONT" not in n for n in names) and len(names) == 2
    upper = next(n for n in names if n.endswith("-UpperJaw.stl"))
    assert archive.read(upper)[80:] == stl[80:]
    nested = zipfile.ZipFile(
        io.BytesIO(archive.read(next(n for n in names if n.endswith(".3oxz"))))
    )
    assert b"DUPONT" not in nested.read("order.3ox")


def test_png_text_chunks_are_stripped_and_pixels_kept() -> None:
    png, pixels = _docs.png_with_text("DUPONT Jean")
    extracted = open_attachment(png)
    assert extracted.cleaned and extracted.fields
    (lab,) = _send("photo.png", png)
    assert lab.verdict == "rewritten", lab.reason  # type: ignore[attr-defined]
    out = _only_attachment(lab.data)[1]  # type: ignore[attr-defined]
    assert b"DUPONT" not in out and b"tEXt" not in out and b"iTXt" not in out
    assert Image.open(io.BytesIO(out)).tobytes() == pixels


def test_jpeg_exif_and_comment_are_stripped_and_scan_data_kept() -> None:
    jpeg = _docs.jpeg_with_exif("DUPONT Jean")
    (screen,) = _send("photo.jpg", jpeg, copy_for(Action.REJECT_IF_PHI))
    assert screen.verdict == "reject"  # type: ignore[attr-defined]  # metadata was scanned
    (lab,) = _send("photo.jpg", jpeg)
    out = _only_attachment(lab.data)[1]  # type: ignore[attr-defined]
    assert b"DUPONT" not in out and b"Exif" not in out
    sos = jpeg.index(b"\xff\xda")
    assert out.endswith(jpeg[sos:])  # entropy-coded data verbatim
    assert Image.open(io.BytesIO(out)).tobytes() == Image.open(io.BytesIO(jpeg)).tobytes()


def test_unknown_binary_follows_the_route_setting() -> None:
    blob = bytes(range(256)) * 4
    hold, passed, rejected, delivered = _send(
        "scan.bin",
        blob,
        lab_copy(),
        lab_copy(unknown_files="pass"),
        lab_copy(unknown_files="reject"),
        copy_for(Action.DELIVER),
    )
    assert hold.verdict == "hold" and "cannot be scanned" in hold.reason  # type: ignore[attr-defined]
    assert passed.verdict == "pass"  # type: ignore[attr-defined]
    assert rejected.verdict == "reject"  # type: ignore[attr-defined]
    assert delivered.verdict == "pass"  # type: ignore[attr-defined]


def test_declared_type_is_not_trusted() -> None:
    pdf = _docs.text_pdf("Patient DUPONT Jean")
    raw = message(body="Photo.\n", attachments=[("photo.png", pdf, "image/png")])
    (lab,) = run(raw).copies
    assert lab.verdict == "hold" and "PDF" in lab.reason


def test_scanned_pdf_without_text_layer_counts_as_unscannable() -> None:
    pdf = _docs.scanned_pdf()
    assert open_attachment(pdf).unknown == 1
    hold, passed = _send("ordonnance.pdf", pdf, lab_copy(), lab_copy(unknown_files="pass"))
    assert hold.verdict == "hold" and "cannot be scanned" in hold.reason  # type: ignore[attr-defined]
    assert passed.verdict in ("pass", "rewritten")  # type: ignore[attr-defined]


def test_docx_name_split_across_runs_is_found_and_rewritten() -> None:
    import re

    paragraph = (
        'Patient DUP</w:t></w:r><w:proofErr w:type="spellStart"/><w:r><w:rPr><w:b/></w:rPr>'
        '<w:t>ONT</w:t></w:r><w:r><w:t xml:space="preserve"> Jean</w:t></w:r><w:r><w:tab/>'
        "<w:t>dent 36"
    )
    untouched = "<w:p><w:r><w:t>Teinte </w:t></w:r><w:r><w:t>A2</w:t></w:r></w:p>"
    data = _docs.docx(paragraph, "Dr Martin", extra=untouched)
    (lab,) = _send("fiche.docx", data)
    assert lab.verdict == "rewritten", lab.reason  # type: ignore[attr-defined]
    out = _only_attachment(lab.data)[1]  # type: ignore[attr-defined]
    document = zipfile.ZipFile(io.BytesIO(out)).read("word/document.xml").decode()
    text = "".join(re.findall(r"<w:t[^>]*>([^<]*)</w:t>", document))
    assert "DUP" not in text and "Jean" not in text
    assert "Patient PAT-" in text and "dent 36" in text
    assert untouched in document  # a paragraph without findings is byte-identical
    assert "<w:tab/>" in document and "<w:b/>" in document


def test_odt_name_split_across_spans_is_found_and_rewritten() -> None:
    import re

    paragraph = (
        'Patiente <text:span text:style-name="T1">LEG</text:span>RAND<text:s/>Sophie, dent 36'
    )
    (lab,) = _send("suivi.odt", _docs.odt(paragraph))
    assert lab.verdict == "rewritten", lab.reason  # type: ignore[attr-defined]
    out = _only_attachment(lab.data)[1]  # type: ignore[attr-defined]
    content = zipfile.ZipFile(io.BytesIO(out)).read("content.xml").decode()
    text = re.sub(r"<[^>]+>", "", content)
    assert "LEG" not in text and "Sophie" not in text
    assert "dent 36" in text and "PAT-" in text


def test_xml_with_embedded_base64_payload_keeps_it_and_counts_it_unscannable() -> None:
    import base64
    import os

    payload = base64.encodebytes(os.urandom(6000)).decode()
    xml = (
        '<?xml version="1.0" encoding="utf-8"?><HPS><Properties><Property name="Patient" '
        f'value="DUPONT Jean"/></Properties><CE>{payload}</CE></HPS>'
    ).encode()
    extracted = open_attachment(xml)
    assert extracted.unknown == 1
    assert all(len(f.text) < 1000 for f in extracted.fields)
    hold, passed = _send("scan.xml", xml, lab_copy(), lab_copy(unknown_files="pass"))
    assert hold.verdict == "hold"  # type: ignore[attr-defined]
    assert passed.verdict == "rewritten"  # type: ignore[attr-defined]
    out = _only_attachment(passed.data)[1]  # type: ignore[attr-defined]
    assert payload.encode() in out and b"DUPONT" not in out


def test_office_part_names_are_never_rewritten() -> None:
    data = _docs.docx("Couronne pour DUPONT Jean", "DUPONT Jean")
    extracted = open_attachment(data)
    assert all(f.kind != "filename" for f in extracted.fields)
    (lab,) = _send("fiche.docx", data)
    out = _only_attachment(lab.data)[1]  # type: ignore[attr-defined]
    assert (
        zipfile.ZipFile(io.BytesIO(out)).namelist() == zipfile.ZipFile(io.BytesIO(data)).namelist()
    )
