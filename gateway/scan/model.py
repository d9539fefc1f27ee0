"""The scanning core's public data model: what goes in, what comes out.

Trust boundary: field texts are untrusted (decoded from the network). Findings and
every other type here except `VaultEntry` never contain an identifier's value: a
finding is a type, a span and a keyed hash. `VaultEntry` carries an identity and
must only ever be handed to the encrypted vault; its repr is masked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol


def _compiled() -> bool:
    """True when mypyc compiled this module (a compiled function has no __code__)."""
    return not hasattr(_compiled, "__code__")


# Frozen dataclasses below built in the scan's hot path have their own __init__: compiled,
# a plain attribute store is mypyc's native slot store (~10 ns; Python callers still meet
# the frozen __setattr__ and its FrozenInstanceError); interpreted, it would meet that
# __setattr__, so object.__setattr__ stores past it, as a generated __init__ does. The
# generated __init__ runs interpreted even in a compiled module: ~1 us per object.
_COMPILED: Final = _compiled()
_set_attribute: Final = object.__setattr__


class IdentifierKind(StrEnum):
    NAME = "name"
    NIR = "nir"  # NIR / INS-NIR, key-checked, or a labelled 13/15-digit number
    IBAN = "iban"
    PHONE = "phone"
    EMAIL = "email"
    ADDRESS = "address"
    BIRTH_DATE = "birth_date"
    AGE = "age"  # an age given with its context ("âgé de 67 ans", "(72 ans)"): DOB-type
    PATIENT_ID = "patient_id"  # file or record numbers tied to a patient (DICOM PatientID, ...)
    BURNED_IN = "burned_in"  # an image flagged as carrying burned-in text


class FieldKind(StrEnum):
    """Where a text came from; detectors weigh context differently per kind."""

    BODY = "body"  # text/plain, HTML text nodes, document text
    SUBJECT = "subject"
    DISPLAY_NAME = "display_name"  # To/Cc display names
    FILENAME = "filename"  # attachment and archive entry names
    METADATA = "metadata"  # document properties, STL headers, PLY comments, XML values
    PERSON_NAME = "person_name"  # a field known to hold a person's name (DICOM PN, XML PatientName)
    IDENTIFIER = "identifier"  # a field known to hold a patient identifier (DICOM PatientID)
    DATE_OF_BIRTH = "date_of_birth"  # a field known to hold a birth date


@dataclass(frozen=True, slots=True, init=False)
class TextField:
    text: str
    kind: FieldKind = FieldKind.BODY

    def __init__(self, text: str, kind: FieldKind = FieldKind.BODY) -> None:
        # See _COMPILED: the pipeline builds one per header, text part and file name.
        if _COMPILED:
            self.text = text  # type: ignore[misc]
            self.kind = kind  # type: ignore[misc]
        else:
            _set_attribute(self, "text", text)
            _set_attribute(self, "kind", kind)

    def __repr__(self) -> str:  # the text may be PHI
        return f"TextField(kind={self.kind.value}, len={len(self.text)})"


@dataclass(frozen=True, slots=True, init=False)
class Finding:
    """One identifier found in one field. Never holds the value."""

    kind: IdentifierKind
    field: int  # index into the fields of the scan
    start: int
    end: int
    digest: str  # keyed hash (HMAC-SHA256, hex, truncated) of the normalised value
    patient: str | None = None  # opaque roster patient key when the roster links it

    def __init__(
        self,
        kind: IdentifierKind,
        field: int,
        start: int,
        end: int,
        digest: str,
        patient: str | None = None,
    ) -> None:
        # See _COMPILED: a dense 2 KB order yields about ten findings.
        if _COMPILED:
            self.kind = kind  # type: ignore[misc]
            self.field = field  # type: ignore[misc]
            self.start = start  # type: ignore[misc]
            self.end = end  # type: ignore[misc]
            self.digest = digest  # type: ignore[misc]
            self.patient = patient  # type: ignore[misc]
        else:
            _set_attribute(self, "kind", kind)
            _set_attribute(self, "field", field)
            _set_attribute(self, "start", start)
            _set_attribute(self, "end", end)
            _set_attribute(self, "digest", digest)
            _set_attribute(self, "patient", patient)


class TypeAction(StrEnum):
    PSEUDONYMISE = "pseudonymise"  # PAT-XXXXX-XXXXX token for linked identities, else [TYPE]
    REDACT = "redact"  # [TYPE] label
    GENERALISE = "generalise"  # dates of birth -> year only; ages -> decade band; others as redact
    REMOVE = "remove"  # drop the value
    KEEP = "keep"  # leave as is


@dataclass(frozen=True)
class TransformPolicy:
    """How to rewrite findings for one route copy."""

    audience: str  # recipient domain: tokens differ per audience
    default: TypeAction = TypeAction.PSEUDONYMISE
    overrides: Mapping[IdentifierKind, TypeAction] = field(default_factory=dict)

    def action_for(self, kind: IdentifierKind) -> TypeAction:
        return self.overrides.get(kind, self.default)


@dataclass(frozen=True, init=False)
class VaultEntry:
    """token -> identity, for the encrypted vault only."""

    token: str
    audience: str
    patient: str  # opaque roster key, or a digest for identities not on the roster
    identity: str = field(repr=False)  # "NOM Prénom (JJ/MM/AAAA)", PHI

    def __init__(self, token: str, audience: str, patient: str, identity: str) -> None:
        # See _COMPILED: one entry per token per rewritten message.
        if _COMPILED:
            self.token = token  # type: ignore[misc]
            self.audience = audience  # type: ignore[misc]
            self.patient = patient  # type: ignore[misc]
            self.identity = identity  # type: ignore[misc]
        else:
            _set_attribute(self, "token", token)
            _set_attribute(self, "audience", audience)
            _set_attribute(self, "patient", patient)
            _set_attribute(self, "identity", identity)

    def __repr__(self) -> str:
        return f"VaultEntry(token={self.token}, audience={self.audience})"


@dataclass(frozen=True, init=False)
class RewriteResult:
    texts: list[str]
    vault_entries: list[VaultEntry]

    def __init__(self, texts: list[str], vault_entries: list[VaultEntry]) -> None:
        # See _COMPILED: one per rewritten message.
        if _COMPILED:
            self.texts = texts  # type: ignore[misc]
            self.vault_entries = vault_entries  # type: ignore[misc]
        else:
            _set_attribute(self, "texts", texts)
            _set_attribute(self, "vault_entries", vault_entries)

    def __repr__(self) -> str:
        return f"RewriteResult(fields={len(self.texts)}, vault_entries={len(self.vault_entries)})"


# What `ScanEngine.scan_spans` reports per finding: kind, field index, start, end.
FoundSpan = tuple[IdentifierKind, int, int, int]


class ScanEngine(Protocol):
    """Built once (per config and roster), then shared read-only by every message.

    A message is scanned as a whole: all its fields at once, so that context from one
    part (a rostered name in the body) informs another (the same patient's birth date
    in an attachment).
    """

    def scan_fields(
        self, fields: Sequence[TextField], *, check: Callable[[], None] | None = None
    ) -> list[Finding]:
        """`check`, when given, is called between fields in every per-field loop; it raises
        (the pipeline's time budget: LimitExceeded) to stop a scan that runs too long."""
        ...

    def scan_spans(
        self, fields: Sequence[TextField], *, check: Callable[[], None] | None = None
    ) -> list[FoundSpan]:
        """The same scan, reporting each finding's (kind, field, start, end) only: no
        digest is computed. For the verification of a rewritten copy, which reads the
        spans alone (a finding's digest costs a keyed HMAC, a tenth of a small scan)."""
        ...

    def rewrite_fields(
        self,
        fields: Sequence[TextField],
        findings: Sequence[Finding],
        policy: TransformPolicy,
        *,
        check: Callable[[], None] | None = None,
    ) -> RewriteResult: ...

    def token_for_patient(self, patient: str, audience: str) -> str: ...

    def patient_for_email(self, address: str) -> str | None:
        """The roster patient whose e-mail this is (for own-data-only routes)."""
        ...
