"""Builds the golden input messages in tests/golden/ (run once; the files are committed).

    .venv/bin/python -m tests.pipeline.golden_inputs   # writes missing tests/golden/*.in.eml

Then `PORTIQUE_REGOLD=1 .venv/bin/pytest tests/pipeline/test_golden.py` writes the expected
outputs, which a person reviews before committing. Every handler has at least one case.
"""

from __future__ import annotations

import io
import quopri
import struct
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from tests.files import _docs
from tests.pipeline._helpers import b64, message

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
BODY = "Bonjour,\nci-joint le dossier de DUPONT Jean (né le 02/11/1975).\nTeinte A2, dent 36.\n"


def _dicom() -> bytes:
    path = get_testdata_file("CT_small.dcm", download=False)
    assert path is not None
    ds = pydicom.dcmread(str(path))
    ds.PatientName = "DUPONT^Jean"
    ds.PatientID = "DOS-4471"
    ds.PatientBirthDate = "19751102"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _binary_stl() -> bytes:
    header = b"Exported for DUPONT Jean".ljust(80, b" ")
    facet = struct.pack("<12fH", 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 7)
    return header + struct.pack("<I", 2) + facet + facet


def _nested() -> bytes:
    inner = EmailMessage()
    inner["From"] = "Secretariat <secretariat@cabinet-martin.fr>"
    inner["Subject"] = "Ordonnance LEGRAND Sophie"
    inner["Date"] = "Mon, 02 Dec 2024 09:00:00 +0100"
    inner.set_content("Ordonnance pour LEGRAND Sophie, née le 14/03/1982.\n")
    inner.add_alternative("<p>Ordonnance pour <b>LEGRAND Sophie</b></p>", subtype="html")
    outer = EmailMessage()
    outer["From"] = "Dr Martin <cabinet@cabinet-martin.fr>"
    outer["To"] = "Laboratoire <orders@labo.fr>"
    outer["Subject"] = "TR: ordonnance"
    outer["Date"] = "Mon, 02 Dec 2024 10:00:00 +0100"
    outer["Message-ID"] = "<nested@cabinet-martin.fr>"
    outer.set_content("Voir le message transféré.\n")
    outer.add_attachment(inner)
    outer.set_boundary("golden-outer")
    return outer.as_bytes(policy=policy.SMTP)


def _latin1_rfc2231() -> bytes:
    text = "Prothèse pour Mme LEGRAND Sophie, tél 06 98 76 54 32.\n".encode("iso-8859-1")
    return (
        b"From: Dr Martin <cabinet@cabinet-martin.fr>\r\nTo: orders@labo.fr\r\n"
        b"Subject: =?iso-8859-1?q?Proth=E8se_LEGRAND?=\r\nMIME-Version: 1.0\r\n"
        b"Date: Mon, 02 Dec 2024 10:00:00 +0100\r\n"
        b"Content-Type: multipart/mixed; boundary=golden\r\n\r\n"
        b"--golden\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + quopri.encodestring(text).replace(b"\n", b"\r\n")
        + b"--golden\r\nContent-Type: model/stl\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment;\r\n filename*=iso-8859-1''LEGRAND_Sophie_h%E9micrania_2024-11-02.stl\r\n\r\n"
        + b64(
            b"solid LEGRAND\nfacet normal 0 0 1\n outer loop\n  vertex 0 0 0\n  vertex 1 0 0\n  vertex 0 1 0\n endloop\nendfacet\nendsolid LEGRAND\n"
        )
        + b"--golden--\r\n"
    )


def cases() -> dict[str, bytes]:
    png, _ = _docs.png_with_text("DUPONT Jean")
    from stl import Mode

    from tests.files.test_meshes import _trimesh_ply

    del Mode
    ply, _ = _trimesh_ply("ascii")
    obj = b"# Export DUPONT Jean\nmtllib DUPONT_Jean.mtl\no DUPONT_Jean\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
    mtl_zip = _docs.zip_of(
        {
            "DUPONT_Jean/DUPONT_Jean-UpperJaw.stl": _binary_stl(),
            "DUPONT_Jean/order.3oxz": _docs.zip_of(
                {"order.3ox": _docs.three_shape_order("DUPONT Jean")}
            ),
        }
    )
    att = "application/octet-stream"
    return {
        "01_text_html": message(
            body=BODY,
            subject="Couronne DUPONT Jean",
            html="<p>Bonjour,<br>dossier de <b>DUPONT Jean</b> &amp; radio.</p>",
        ),
        "02_stl_binary": message(
            body=BODY, attachments=[("DUPONT_Jean_2024-11-02.stl", _binary_stl(), "model/stl")]
        ),
        "03_stl_ascii_latin1_rfc2231": _latin1_rfc2231(),
        "04_ply": message(body=BODY, attachments=[("machoire.ply", ply, att)]),
        "05_obj": message(body=BODY, attachments=[("DUPONT_Jean.obj", obj, att)]),
        "06_dicom": message(body=BODY, attachments=[("pano.dcm", _dicom(), "application/dicom")]),
        "07_pdf_metadata": message(
            body="Fiche jointe.\n",
            attachments=[
                (
                    "fiche.pdf",
                    _docs.text_pdf("Couronne 36 zircone", title="Fiche DUPONT Jean"),
                    "application/pdf",
                )
            ],
        ),
        "08_pdf_with_phi_held": message(
            body=BODY,
            attachments=[("fiche.pdf", _docs.text_pdf("Patient DUPONT Jean"), "application/pdf")],
        ),
        "09_docx": message(
            body=BODY,
            attachments=[
                ("fiche.docx", _docs.docx("Couronne pour DUPONT Jean", "DUPONT Jean"), att)
            ],
        ),
        "10_xlsx": message(body=BODY, attachments=[("suivi.xlsx", _docs.xlsx("DUPONT Jean"), att)]),
        "11_odt": message(
            body=BODY, attachments=[("suivi.odt", _docs.odt("Patient DUPONT Jean"), att)]
        ),
        "12_3shape_xml": message(
            body=BODY,
            attachments=[("order.3ox", _docs.three_shape_order("DUPONT Jean"), "application/xml")],
        ),
        "13_exocad_xml": message(
            body=BODY,
            attachments=[("case.dentalProject", _docs.exocad_project("DUPONT Jean"), att)],
        ),
        "14_zip_nested": message(
            body=BODY, attachments=[("DUPONT_Jean.zip", mtl_zip, "application/zip")]
        ),
        "15_png": message(body=BODY, attachments=[("photo.png", png, "image/png")]),
        "16_jpeg": message(
            body=BODY,
            attachments=[("photo.jpg", _docs.jpeg_with_exif("DUPONT Jean"), "image/jpeg")],
        ),
        "17_nested_rfc822": _nested(),
    }


def write_missing() -> list[Path]:
    GOLDEN.mkdir(exist_ok=True)
    written = []
    for name, raw in cases().items():
        path = GOLDEN / f"{name}.in.eml"
        if not path.exists():
            path.write_bytes(raw)
            written.append(path)
    return written


if __name__ == "__main__":
    for p in write_missing():
        print(p)
