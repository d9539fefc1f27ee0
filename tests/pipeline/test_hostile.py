"""Hostile input: every case ends in a clear HOLD or REJECT with a PHI-free reason.

Never a crash (process_message never raises), never a pass-through of the original on an
inspecting route. `deliver` copies still get the original (MSSanté is allowed to).
"""

from __future__ import annotations

import io
import zipfile

import pytest

from gateway.pipeline import process_message
from gateway.verdicts import Action
from tests.files import _docs
from tests.pipeline._helpers import (
    PLANTED,
    ExplodingEngine,
    assert_no_planted,
    b64,
    copy_for,
    inspecting_copies,
    lab_copy,
    message,
    run,
)

INSPECTING = inspecting_copies("patient-dupont")


def assert_stopped(raw: bytes, reason_word: str = "") -> None:
    outcome = run(raw, *INSPECTING, copy_for(Action.DELIVER))
    *inspected, delivered = outcome.copies
    for copy in inspected:
        assert copy.verdict in ("hold", "reject"), (copy.copy.action, copy.verdict)
        assert copy.data is None
        assert copy.reason
        assert_no_planted(copy.reason)
        if reason_word:
            assert reason_word in copy.reason, copy.reason
    assert delivered.verdict == "pass" and delivered.data is raw


def _attach(name: str, data: bytes) -> bytes:
    return message(body="Ci-joint.\n", attachments=[(name, data, "application/zip")])


def test_zip_bomb_by_ratio() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.stl", b"\x00" * (20 * 1024 * 1024))
    assert_stopped(_attach("scan.zip", buf.getvalue()), "ratio")


def test_zip_bomb_by_nesting() -> None:
    data = _docs.zip_of({"a.txt": b"DUPONT Jean"})
    for level in range(4):
        data = _docs.zip_of({f"level{level}.zip": data})
    assert_stopped(_attach("nested.zip", data), "nested")


def test_zip_with_too_many_entries() -> None:
    data = _docs.zip_of({f"f{i}.txt": b"x" for i in range(60)})
    from gateway.config import FilesConfig

    outcome = run(_attach("many.zip", data), lab_copy(), limits=FilesConfig(zip_max_entries=50))
    assert outcome.copies[0].verdict == "hold"
    assert "entries" in outcome.copies[0].reason


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/abs/path.stl", "a/../../b.stl", "C:/x.stl", "a\\..\\b"]
)
def test_path_traversal_zip(name: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(zipfile.ZipInfo(name), b"solid x\nendsolid x\n")
    assert_stopped(_attach("case.zip", buf.getvalue()), "escapes")


def test_encrypted_zip_is_held() -> None:
    data = bytearray(_docs.zip_of({"a.txt": b"DUPONT Jean"}))
    # Set the "encrypted" flag bit in the local and central headers.
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        pos = data.find(sig)
        flag_at = pos + (6 if sig == b"PK\x03\x04" else 8)
        data[flag_at] |= 0x1
    assert_stopped(_attach("secret.zip", bytes(data)), "encrypted")


def test_xml_billion_laughs() -> None:
    lol = (
        b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(
            b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
            for i in range(1, 10)
        )
        + b"]>\n<lolz>&lol9;</lolz>\n"
    )
    assert_stopped(message(attachments=[("order.3ox", lol, "application/xml")]), "XML")


def test_xml_external_entity() -> None:
    xxe = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
    assert_stopped(message(attachments=[("order.xml", xxe, "text/xml")]), "XML")


def test_truncated_dicom() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm", download=False)
    assert path is not None
    from pathlib import Path

    data = Path(str(path)).read_bytes()[:20000]
    assert_stopped(message(attachments=[("ct.dcm", data, "application/dicom")]), "DICOM")


@pytest.mark.parametrize("body", [b"!!!not base64!!!\r\n", b"QUJD=QUJD\r\n", b"QUJDR\r\n"])
def test_malformed_base64(body: bytes) -> None:
    raw = (
        b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nDUPONT Jean\r\n"
        b"--B\r\nContent-Type: application/octet-stream; name=scan.stl\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"--B--\r\n"
    )
    assert_stopped(raw, "base64")


def test_hundred_level_nested_multipart() -> None:
    raw = b"DUPONT Jean\r\n"
    for level in range(100):
        raw = (
            b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (level, level)
            + raw
            + b"\r\n--b%d--\r\n" % level
        )
    assert_stopped(b"Subject: deep\r\nMIME-Version: 1.0\r\n" + raw, "nested")


def test_ten_thousand_parts() -> None:
    parts = b"".join(
        b"--B\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(10_000)
    )
    raw = (
        b"Subject: many\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        + parts
        + b"--B--\r\n"
    )
    assert_stopped(raw, "parts")


def test_multipart_without_delimiters_and_bad_boundaries() -> None:
    assert_stopped(
        b"Subject: x\r\nContent-Type: multipart/mixed; boundary=NOPE\r\n\r\nDUPONT Jean\r\n"
    )
    assert_stopped(b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\nDUPONT Jean\r\n")


def test_unknown_transfer_encoding_and_encoded_rfc822() -> None:
    assert_stopped(
        b"Subject: x\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
    )
    assert_stopped(
        b"Subject: x\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b64(b"Subject: DUPONT\r\n\r\nDUPONT Jean")
    )


@pytest.mark.parametrize("stage", ["scan", "rewrite", "verify"])
def test_engine_failure_holds_without_echoing_the_exception(stage: str) -> None:
    raw = message(body="Patient DUPONT Jean\n")
    outcome = process_message(
        raw,
        (lab_copy(), copy_for(Action.DELIVER)),
        ExplodingEngine(stage),  # type: ignore[arg-type]
    )
    lab, deliver = outcome.copies
    assert lab.verdict == "hold" and lab.data is None
    assert "boom" not in lab.reason and "DUPONT" not in lab.reason
    assert deliver.verdict == "pass"


def test_rewriter_that_changes_nothing_is_caught_by_verification() -> None:
    raw = message(body="Patient DUPONT Jean, tel 06 12 34 56 78\n")
    outcome = process_message(raw, (lab_copy(),), ExplodingEngine("identity"))  # type: ignore[arg-type]
    assert outcome.copies[0].verdict == "hold"
    assert outcome.copies[0].data is None


def test_no_engine_holds() -> None:
    raw = message(body="Bonjour\n")
    outcome = process_message(raw, (lab_copy(), copy_for(Action.DELIVER)), None)
    assert outcome.copies[0].verdict == "hold"
    assert outcome.copies[1].verdict == "pass"


def test_time_budget_exceeded_holds() -> None:
    ticks = iter(range(0, 10_000, 100))
    outcome = process_message(
        message(body="Bonjour\n", attachments=[("a.txt", b"x", "text/plain")]),
        (lab_copy(),),
        ExplodingEngine("none"),  # type: ignore[arg-type]
        budget_seconds=50,
        clock=lambda: float(next(ticks)),
    )
    assert outcome.copies[0].verdict == "hold"
    assert "budget" in outcome.copies[0].reason


def test_invalid_route_overrides_hold() -> None:
    raw = message(body="Patient DUPONT Jean\n")
    copy = run(raw, lab_copy(overrides={"shoe_size": "keep"})).copies[0]
    assert copy.verdict == "hold" and "overrides" in copy.reason


def test_planted_values_are_what_we_think() -> None:
    assert "DUPONT" in PLANTED  # guards the helper itself


@pytest.mark.parametrize("unit", ["<!--", "<script>", '<a title="', "<", "< x "])
def test_html_tokeniser_stays_linear_on_unterminated_constructs(unit: str) -> None:
    import time

    html = "<p>DUPONT Jean</p>" + unit * 50_000
    raw = message(body="x\n", html=html)
    started = time.perf_counter()
    outcome = run(raw, lab_copy(), copy_for(Action.DELIVER))
    assert time.perf_counter() - started < 10  # quadratic behaviour would take minutes
    assert outcome.copies[0].verdict in ("rewritten", "hold")
    if outcome.copies[0].data is not None:
        assert_no_planted(outcome.copies[0].data)


def test_text_between_lone_angle_brackets_is_scanned() -> None:
    from gateway.pipeline.message import html_segments

    texts = [s.text for s in html_segments("<p>age < 18 et DUPONT Jean > 3</p>")]
    assert any("DUPONT Jean" in t for t in texts)


def test_symlink_in_zip_is_held() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "../../../etc/passwd")
    assert_stopped(_attach("case.zip", buf.getvalue()), "symbolic link")


def test_safe_subject_failure_leaves_the_subject_out() -> None:
    raw = message(body="Bonjour\n", subject="Couronne DUPONT Jean")
    outcome = process_message(raw, (lab_copy(),), ExplodingEngine("rewrite"))  # type: ignore[arg-type]
    assert outcome.copies[0].verdict == "hold"
    assert outcome.safe_subject is None
    ok = run(raw, lab_copy())
    assert ok.safe_subject is not None and "DUPONT" not in ok.safe_subject
