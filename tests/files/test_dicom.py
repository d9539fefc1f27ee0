"""DICOM de-identification on pydicom's own test files (not written by Portique).

Checked afterwards with pydicom: no original PatientName/PatientID/BirthDate, pixel data
equal, private tags gone, UIDs remapped consistently within a message, the profile
recorded. Only files shipped inside the pydicom wheel are used (no download).
"""

from __future__ import annotations

import email
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.files import open_attachment
from gateway.files.base import RewriteSession
from gateway.files.dicom import DEIDENTIFICATION_METHOD
from gateway.scan.model import IdentifierKind
from gateway.verdicts import Action
from tests.pipeline._helpers import copy_for, lab_copy, message, run

SHIPPED = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm"]


def _shipped(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} not shipped with pydicom"
    return Path(str(path)).read_bytes()


def _attachments(raw: bytes) -> list[bytes]:
    msg = email.message_from_bytes(raw)
    out = []
    for part in msg.walk():
        if part.get_filename():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append(payload)
    return out


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_is_deidentified(name: str) -> None:
    data = _shipped(name)
    before = pydicom.dcmread(io.BytesIO(data))
    assert str(before.PatientName)  # these files carry a patient name
    raw = message(body="Radio jointe.\n", attachments=[(name, data, "application/dicom")])
    outcome = run(raw, lab_copy()).copies[0]
    assert outcome.verdict == "rewritten", outcome.reason
    assert outcome.data is not None
    (out,) = _attachments(outcome.data)
    after = pydicom.dcmread(io.BytesIO(out))
    assert str(after.PatientName) != str(before.PatientName)
    assert str(before.PatientName).split("^")[0] not in str(after.PatientName)
    if str(before.get("PatientID", "")):
        assert str(after.get("PatientID", "")) != str(before.PatientID)
        assert str(before.PatientID).encode() not in out
    assert str(after.get("PatientBirthDate", "")) == ""
    assert after.PatientIdentityRemoved == "YES"
    assert after.DeidentificationMethod == DEIDENTIFICATION_METHOD
    assert not any(elem.tag.is_private for elem in after.iterall())
    if "PixelData" in before:
        assert after.PixelData == before.PixelData
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if keyword in before:
            assert after[keyword].value != before[keyword].value
            assert str(after[keyword].value).startswith("2.25.")
    assert after.SOPClassUID == before.SOPClassUID  # standard UIDs stay


def test_uids_are_remapped_consistently_within_one_message() -> None:
    data = _shipped("CT_small.dcm")
    raw = message(
        body="Deux coupes.\n",
        attachments=[("a.dcm", data, "application/dicom"), ("b.dcm", data, "application/dicom")],
    )
    outcome = run(raw, lab_copy()).copies[0]
    assert outcome.data is not None
    first, second = (pydicom.dcmread(io.BytesIO(b)) for b in _attachments(outcome.data))
    assert first.StudyInstanceUID == second.StudyInstanceUID
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    # Another message (other bytes) gets other UIDs.
    other = run(raw.replace(b"Deux coupes.", b"Deux images."), lab_copy()).copies[0]
    assert other.data is not None
    third = pydicom.dcmread(io.BytesIO(_attachments(other.data)[0]))
    assert third.StudyInstanceUID != first.StudyInstanceUID


def test_rostered_patient_name_becomes_the_patient_token() -> None:
    ds = pydicom.dcmread(io.BytesIO(_shipped("CT_small.dcm")))
    ds.PatientName = "DUPONT^Jean"
    ds.PatientID = "DOS-4471"
    ds.PatientBirthDate = "19751102"
    ds.PatientAddress = "12 rue des Lilas, Lyon"
    buf = io.BytesIO()
    ds.save_as(buf)
    raw = message(
        body="Radio.\n", attachments=[("DUPONT_Jean.dcm", buf.getvalue(), "application/dicom")]
    )
    outcome = run(raw, lab_copy()).copies[0]
    assert outcome.verdict == "rewritten", outcome.reason
    assert outcome.data is not None
    out = _attachments(outcome.data)[0]
    after = pydicom.dcmread(io.BytesIO(out))
    token = str(after.PatientName)
    assert token.startswith("PAT-")
    assert str(after.PatientID) == token
    assert "PatientAddress" not in after
    for planted in (b"DUPONT", b"DOS-4471", b"19751102", b"Lilas"):
        assert planted not in out
    assert any(v.token == token for v in outcome.vault_entries)


def test_burned_in_annotation_is_a_finding_and_holds_transforming_routes() -> None:
    ds = pydicom.dcmread(io.BytesIO(_shipped("CT_small.dcm")))
    ds.BurnedInAnnotation = "YES"
    buf = io.BytesIO()
    ds.save_as(buf)
    extracted = open_attachment(buf.getvalue())
    assert extracted.notes == (IdentifierKind.BURNED_IN,)
    raw = message(
        body="Panoramique.\n", attachments=[("pano.dcm", buf.getvalue(), "application/dicom")]
    )
    lab, screen = run(raw, lab_copy(), copy_for(Action.REJECT_IF_PHI)).copies
    assert lab.verdict == "hold" and "burned-in" in lab.reason
    assert screen.verdict == "reject"
    assert "burned_in" in lab.counts()


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_truncated_dicom_is_held(cut: float) -> None:
    data = _shipped("CT_small.dcm")
    truncated = data[: int(len(data) * cut)]
    raw = message(body="Radio.\n", attachments=[("x.dcm", truncated, "application/dicom")])
    outcome = run(raw, lab_copy(), copy_for(Action.REJECT_IF_PHI))
    for copy in outcome.copies:
        assert copy.verdict == "hold"
        assert copy.data is None
        assert "DICOM" in copy.reason


def test_rebuild_does_not_mutate_between_copies() -> None:
    data = _shipped("MR_small.dcm")
    extracted = open_attachment(data)
    texts = [f.text for f in extracted.fields]
    one = extracted.rebuild(texts, RewriteSession(salt=b"a"))
    two = extracted.rebuild(texts, RewriteSession(salt=b"a"))
    three = extracted.rebuild(texts, RewriteSession(salt=b"b"))
    assert one == two and one != three


def test_salt_derived_once_and_only_when_a_uid_is_remapped() -> None:
    """A session given the function that derives its salt (the pipeline's: a hash of the
    whole message) calls it once, at the first UID, and remaps as with the salt itself."""
    calls: list[int] = []

    def derive() -> bytes:
        calls.append(1)
        return b"a"

    data = _shipped("MR_small.dcm")
    extracted = open_attachment(data)
    texts = [f.text for f in extracted.fields]
    lazy = RewriteSession(salt=derive)
    assert calls == []
    assert extracted.rebuild(texts, lazy) == extracted.rebuild(texts, RewriteSession(salt=b"a"))
    assert calls == [1] and lazy.salt == b"a"
    extracted.rebuild(texts, lazy)
    assert calls == [1]
    untouched = RewriteSession(salt=derive)
    assert untouched.remap_uid("1.2.3") == RewriteSession(salt=b"a").remap_uid("1.2.3")
    assert len(calls) == 2


def test_invalid_values_never_reach_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    ds = pydicom.dcmread(io.BytesIO(_shipped("CT_small.dcm")))
    ds.PatientName = "DUPONT^Jean"
    buf = io.BytesIO()
    ds.save_as(buf)
    # A date element holding a name: pydicom would log "Invalid value for VR DA: ...".
    data = buf.getvalue().replace(b"CT1", b"DUP", 1)
    raw_ds = pydicom.dcmread(io.BytesIO(data))
    raw_ds.StudyDate = "DUPONT12"
    buf = io.BytesIO()
    raw_ds.save_as(buf)
    caplog.set_level("DEBUG")
    raw = message(body="Radio.\n", attachments=[("x.dcm", buf.getvalue(), "application/dicom")])
    run(raw, lab_copy(), copy_for(Action.REJECT_IF_PHI))
    for record in caplog.records:
        assert "DUPONT" not in record.getMessage()
