"""Builders for document fixtures: a text PDF, DOCX, XLSX, ODT, 3Shape/exocad XML, images."""

from __future__ import annotations

import io
import zipfile

from PIL import Image, PngImagePlugin


def text_pdf(text: str, title: str = "") -> bytes:
    """A one-page PDF with `text` drawn in Helvetica (PDF 32000-1 minimal structure)."""
    content = f"BT /F1 12 Tf 72 712 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(content)).encode() + b" >>\nstream\n" + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if title:
        objects.append(b"<< /Title (" + title.encode("latin-1") + b") /Author (Dr Martin) >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    info = f" /Info {len(objects)} 0 R" if title else ""
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def zip_of(entries: dict[str, bytes], *, stored_first: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        if stored_first is not None:
            archive.writestr(
                zipfile.ZipInfo(stored_first), entries[stored_first], zipfile.ZIP_STORED
            )
        for name, data in entries.items():
            if name != stored_first:
                archive.writestr(name, data)
    return buf.getvalue()


def docx(paragraph: str, author: str, extra: str = "") -> bytes:
    return zip_of(
        {
            "[Content_Types].xml": b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/></Types>',
            "word/document.xml": (
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
                'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" mc:Ignorable="w14">'
                f"<w:body><w:p><w:r><w:t>{paragraph}</w:t></w:r></w:p>{extra}</w:body></w:document>"
            ).encode(),
            "docProps/core.xml": (
                '<?xml version="1.0" encoding="UTF-8"?><cp:coreProperties '
                'xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
                'xmlns:dc="http://purl.org/dc/elements/1.1/">'
                f"<dc:title>Fiche {author}</dc:title><dc:creator>{author}</dc:creator></cp:coreProperties>"
            ).encode(),
        }
    )


def xlsx(cell: str) -> bytes:
    return zip_of(
        {
            "[Content_Types].xml": b'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>',
            "xl/sharedStrings.xml": (
                '<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
                f"<si><t>{cell}</t></si></sst>"
            ).encode(),
        }
    )


def odt(paragraph: str) -> bytes:
    return zip_of(
        {
            "mimetype": b"application/vnd.oasis.opendocument.text",
            "content.xml": (
                '<?xml version="1.0" encoding="UTF-8"?><office:document-content '
                'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
                'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0">'
                f"<office:body><office:text><text:p>{paragraph}</text:p></office:text></office:body>"
                "</office:document-content>"
            ).encode(),
        },
        stored_first="mimetype",
    )


def three_shape_order(patient: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<ThreeShapeOrder xmlns="http://schemas.3shape.com/3OX/OrderInterface/2011/01">\n'
        "  <ThreeShapeOrderNo>20241102-0042</ThreeShapeOrderNo>\n"
        f"  <Patient><PatientName>{patient}</PatientName><PatientBirthDate>02/11/1975</PatientBirthDate></Patient>\n"
        f'  <ModelElement Items="36 37" Comment="Couronne zircone pour {patient}"/>\n'
        "</ThreeShapeOrder>\n"
    ).encode()


def exocad_project(patient: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<DentalProject>\n'
        f"  <PatientName>{patient}</PatientName>\n"
        "  <PracticeName>Cabinet Martin</PracticeName>\n"
        "  <ProjectGUID>5b0e7c4e-8d1f-4d2e-9a57-0f6c1d2e3a4b</ProjectGUID>\n"
        "</DentalProject>\n"
    ).encode()


def png_with_text(text: str) -> tuple[bytes, bytes]:
    """(png bytes, raw pixel bytes)."""
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", text)
    info.add_itxt("Author", text, zip=True)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue(), image.tobytes()


def jpeg_with_exif(text: str) -> bytes:
    image = Image.new("RGB", (16, 16), (10, 200, 10))
    exif = Image.Exif()
    exif[0x010E] = text  # ImageDescription
    exif[0x013B] = text  # Artist
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif.tobytes(), comment=text.encode())
    return buf.getvalue()


def scanned_pdf() -> bytes:
    """A one-page PDF whose only content is an image (a scanned prescription)."""
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (255, 255, 255)).save(buf, format="PDF")
    return buf.getvalue()
