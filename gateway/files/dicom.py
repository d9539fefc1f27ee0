"""DICOM radiographs and CBCT volumes, de-identified per PS3.15 Annex E (Basic Profile).

Trust boundary: untrusted bytes, parsed by pydicom from memory (no file access). Output:
a DICOM file in which, following the Basic Application Level Confidentiality Profile
(Table E.1-1; summary in docs/identifiers.md section 2):
- PatientName and PatientID carry the route's rewritten text (the patient token on a
  pseudonymising route); they never keep their original value;
- PatientBirthDate and the other Z attributes are emptied, the X attributes removed,
  every date/time emptied, private tags, overlays, curves and icon images removed;
- instance UIDs are remapped consistently within the message (see RewriteSession);
- PatientIdentityRemoved = YES, DeidentificationMethod and its code sequence are set.

Invariants: PixelData is never modified. A `BurnedInAnnotation = YES` flag is reported as
a BURNED_IN note, which blocks every transforming route (the pixels may show the name).
A truncated or unparsable file raises ContentError (-> hold).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence

from gateway.errors import ContentError
from gateway.files.base import ExtractedFile, FileHandler, HandlerContext, RewriteSession
from gateway.scan.model import FieldKind, IdentifierKind, TextField

# pydicom reports invalid values by logging them ("Invalid value for VR DA: '<value>'"),
# and a value here is PHI. Portique validates what it writes itself (`_fit`), so value
# validation is off and pydicom's logger is silenced: nothing of a file reaches a log.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)

PREAMBLE_SIZE = 128  # bytes before the "DICM" magic (PS3.10 7.1)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"

# Z: emptied (type 2 attributes must stay present).
ZERO = (
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
)
# X (and X/Z/D, X/D: removal is allowed): identifying attributes dropped.
REMOVE = (
    "PatientAddress",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientTelephoneNumbers",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "PatientBirthTime",
    "PatientComments",
    "PatientInsurancePlanCodeSequence",
    "MilitaryRank",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "MedicalRecordLocator",
    "ResponsiblePerson",
    "StudyDescription",
    "SeriesDescription",
    "ImageComments",
    "RequestingPhysician",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
    "IconImageSequence",
    "RequestAttributesSequence",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence",
    "CurrentPatientLocation",
    "PatientState",
    "IssuerOfPatientID",
    "CountryOfResidence",
    "RegionOfResidence",
)
# Overlay (60xx) and curve (50xx) repeating groups may carry drawn text.
_REPEATING_GROUPS = ((0x5000, 0x50FF), (0x6000, 0x60FF))
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN"})
_DATE_VRS = frozenset({"DA", "DT", "TM"})
# UIDs that name standard things (SOP classes, transfer syntaxes) are not identifying.
_STANDARD_UID_ROOT = "1.2.840.10008."
_KEEP_UID_KEYWORDS = frozenset(
    {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID"}
)
DEIDENTIFICATION_METHOD = "PS3.15 Annex E Basic Application Confidentiality Profile"  # LO: <= 64
# Max value lengths in characters (PS3.5 table 6.2-1) for the VRs Portique writes text into.
_MAX_LENGTH = {"LO": 64, "SH": 16, "PN": 64, "ST": 1024, "LT": 10240}


def is_dicom(data: bytes) -> bool:
    return data[PREAMBLE_SIZE : PREAMBLE_SIZE + 4] == b"DICM"


def _person_name_text(value: Any) -> str:
    return " ".join(part for part in str(value).split("^") if part).strip()


def _dicom_date_text(value: Any) -> str:
    text = str(value)
    if len(text) == 8 and text.isdigit():
        return f"{text[6:8]}/{text[4:6]}/{text[0:4]}"
    return text


def _parse(data: bytes) -> FileDataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on many harmless deviations
            ds = pydicom.dcmread(io.BytesIO(data))
            keys = list(ds.keys())
            if not keys:
                raise ContentError("DICOM file is empty or truncated")
            last = ds.get_item(keys[-1])
            length = getattr(last, "length", None)
            tell = getattr(last, "value_tell", None)
            if length is not None and tell is not None:
                if length == _UNDEFINED_LENGTH:
                    if not data.endswith(_SEQUENCE_DELIMITER):
                        raise ContentError("DICOM file is truncated")
                elif tell + length != len(data):
                    raise ContentError("DICOM file is truncated")
            if "Rows" in ds and "PixelData" not in ds and "FloatPixelData" not in ds:
                raise ContentError("DICOM file is truncated")
            # Decode every element now, so parse errors surface here and not mid-rebuild.
            for _ in ds.iterall():
                pass
            for _ in ds.file_meta:
                pass
    except ContentError:
        raise
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise ContentError("DICOM file cannot be parsed") from exc
    except Exception as exc:  # pydicom raises many types on hostile input
        raise ContentError("DICOM file cannot be parsed") from exc
    return ds


class _Slot:
    """Marks a field written back into a kept text element (None: scanned only)."""

    __slots__ = ("tag", "vr")

    def __init__(self, _unused: None, tag: Any, vr: str) -> None:
        self.tag = tag
        self.vr = vr


def _walk_datasets(ds: Dataset) -> list[Dataset]:
    out = [ds]
    for elem in ds:
        if elem.VR == "SQ" and isinstance(elem.value, DicomSequence):
            for item in elem.value:
                out.extend(_walk_datasets(item))
    return out


class DicomHandler(FileHandler):
    format = "dicom"

    def sniff(self, data: bytes) -> bool:
        return is_dicom(data)

    def extract(self, data: bytes, ctx: HandlerContext) -> ExtractedFile:
        ds = _parse(data)
        fields: list[TextField] = []
        slots: list[_Slot | None] = []

        def add(text: str, kind: FieldKind, slot: _Slot | None) -> None:
            fields.append(TextField(text, kind))
            slots.append(slot)

        add(_person_name_text(ds.get("PatientName", "")), FieldKind.PERSON_NAME, None)
        add(str(ds.get("PatientID", "")), FieldKind.IDENTIFIER, None)
        add(_dicom_date_text(ds.get("PatientBirthDate", "")), FieldKind.DATE_OF_BIRTH, None)
        # Attributes the profile removes or empties are scanned too (for reject-if-phi and
        # own-data-only routes), but their rewritten text is never written back.
        for keyword in ZERO[1:] + REMOVE:
            value = ds.get(keyword)
            if value is not None and not isinstance(value, DicomSequence) and str(value):
                kind = FieldKind.PERSON_NAME if "Name" in keyword else FieldKind.METADATA
                add(str(value), kind, None)
        # Every other text element stays, rewritten where the scan finds something.
        for _item, elem in _text_elements(ds):
            text = _element_text(elem)
            kind = FieldKind.PERSON_NAME if elem.VR == "PN" else FieldKind.METADATA
            add(text, kind, _Slot(None, elem.tag, elem.VR))
        burned_in = str(ds.get("BurnedInAnnotation", "")).upper() == "YES"

        def rebuild(texts: Sequence[str], session: RewriteSession) -> bytes:
            return _deidentify(data, texts, slots, session)

        return ExtractedFile(
            "dicom",
            data,
            tuple(fields),
            rebuild,
            cleaned=True,
            notes=(IdentifierKind.BURNED_IN,) if burned_in else (),
        )


_SKIP_TEXT = frozenset({*ZERO, *REMOVE, "PatientName", "PatientID"})


def _element_text(elem: Any) -> str:
    return _person_name_text(elem.value) if elem.VR == "PN" else str(elem.value)


def _text_elements(ds: Dataset) -> list[tuple[Dataset, Any]]:
    """Text elements kept by the profile, in a fixed order (extract and rebuild agree)."""
    out = []
    for item in _walk_datasets(ds):
        for elem in item:
            if elem.VR not in _TEXT_VRS or elem.tag.is_private or elem.keyword in _SKIP_TEXT:
                continue
            if elem.VM != 1 or not isinstance(elem.value, str | pydicom.valuerep.PersonName):
                continue
            if _element_text(elem):
                out.append((item, elem))
    return out


def _token_in(text: str) -> str:
    for word in text.split():
        if word.startswith("PAT-"):
            return word
    return ""


def _fit(text: str, vr: str) -> str:
    limit = _MAX_LENGTH.get(vr)
    return text[:limit] if limit else text


def _deidentify(
    data: bytes, texts: Sequence[str], slots: Sequence[_Slot | None], session: RewriteSession
) -> bytes:
    try:
        return _deidentify_unguarded(data, texts, slots, session)
    except ContentError:
        raise
    except Exception as exc:  # pydicom raises many types on values it cannot encode
        raise ContentError("DICOM file cannot be rewritten") from exc


def _deidentify_unguarded(
    data: bytes, texts: Sequence[str], slots: Sequence[_Slot | None], session: RewriteSession
) -> bytes:
    ds = _parse(data)  # a fresh copy per route copy: rebuilding never mutates shared state
    original_name = _person_name_text(ds.get("PatientName", ""))
    original_id = str(ds.get("PatientID", ""))
    name, pid = texts[0], texts[1]
    if name == original_name:
        name = ""  # not recognised by the scan: Z (empty), never the original
    # Z/D: the patient's token when the name has one; else the rewritten value; never the
    # original.
    pid = _token_in(name) or (pid if pid != original_id else "")
    kept = [text for slot, text in zip(slots, texts, strict=True) if slot is not None]
    elements = _text_elements(ds)
    if len(elements) != len(kept):
        raise ContentError("DICOM file cannot be rewritten")
    for (_item, elem), text in zip(elements, kept, strict=True):
        if text != _element_text(elem):
            elem.value = _fit(text, elem.VR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.PatientName = _fit(name, "PN")
        ds.PatientID = _fit(pid, "LO")
        for keyword in ZERO:
            if keyword in ds:
                ds[keyword].value = ""
        for item in _walk_datasets(ds):
            _clean_dataset(item, session)
        ds.remove_private_tags()
        _remap_uids(ds.file_meta, session)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
        code = Dataset()
        code.CodeValue = "113100"
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        ds.DeidentificationMethodCodeSequence = DicomSequence([code])
        out = io.BytesIO()
        try:
            ds.save_as(out, enforce_file_format=False)
        except Exception as exc:
            raise ContentError("DICOM file cannot be rewritten") from exc
    return out.getvalue()


def _clean_dataset(ds: Dataset, session: RewriteSession) -> None:
    for keyword in REMOVE:
        if keyword in ds:
            del ds[keyword]
    doomed = [
        elem.tag
        for elem in ds
        if any(lo <= elem.tag.group <= hi for lo, hi in _REPEATING_GROUPS)
        and elem.tag != 0x7FE00010
    ]
    for tag in doomed:
        del ds[tag]
    for elem in ds:
        if elem.VR in _DATE_VRS and not elem.tag.is_private:
            elem.value = ""
    _remap_uids(ds, session)


def _remap_uids(ds: Dataset, session: RewriteSession) -> None:
    for elem in ds:
        if elem.VR != "UI" or elem.keyword in _KEEP_UID_KEYWORDS or not elem.value:
            continue
        remap: Callable[[str], str] = session.remap_uid
        if elem.VM > 1:
            elem.value = [
                uid if str(uid).startswith(_STANDARD_UID_ROOT) else remap(str(uid))
                for uid in elem.value
            ]
        elif not str(elem.value).startswith(_STANDARD_UID_ROOT):
            elem.value = remap(str(elem.value))


HANDLER: FileHandler = DicomHandler()
