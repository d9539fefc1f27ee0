"""Shared builders for pipeline and file-handler tests: a real engine with fixed keys,
a small roster with planted identities, and message builders.

The planted identifiers below must never appear in a transformed output, a reason, or a
log line; tests grep for them.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from datetime import date
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from types import ModuleType

from gateway.pipeline import MessageOutcome, RouteCopy, process_message
from gateway.scan import RosterPatient, build_engine
from gateway.scan.model import (
    Finding,
    FoundSpan,
    RewriteResult,
    ScanEngine,
    TextField,
    TransformPolicy,
)
from gateway.verdicts import Action

DIGEST_KEY = b"D" * 32  # fixed keys: golden outputs must be deterministic
PSEUDONYM_KEY = b"P" * 32

DUPONT = RosterPatient(
    key="patient-dupont",
    last_name="DUPONT",
    first_name="Jean",
    birth_date=date(1975, 11, 2),
    nir="175119912611142",
    phone="0612345678",
    email="jean.dupont@example.org",
)
LEGRAND = RosterPatient(
    key="patient-legrand",
    last_name="LEGRAND",
    first_name="Sophie",
    birth_date=date(1982, 3, 14),
    email="sophie.legrand@example.org",
)
PLANTED = ("DUPONT", "Dupont", "LEGRAND", "Legrand", "02/11/1975", "0612345678", "06 12 34 56 78")

_ENGINE: ScanEngine | None = None


def engine() -> ScanEngine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = build_engine(
            patients=[DUPONT, LEGRAND], digest_key=DIGEST_KEY, pseudonym_key=PSEUDONYM_KEY
        )
    return _ENGINE


def lab_copy(**kw: object) -> RouteCopy:
    return RouteCopy("lab", Action.PSEUDONYMISE, "relay", ("orders@labo.fr",), "labo.fr", **kw)  # type: ignore[arg-type]


def copy_for(action: Action, **kw: object) -> RouteCopy:
    audience = "labo.fr" if action == Action.PSEUDONYMISE else ""
    return RouteCopy(action.value, action, "relay", ("x@example.net",), audience, **kw)  # type: ignore[arg-type]


def run(raw: bytes, *copies: RouteCopy, **kw: object) -> MessageOutcome:
    return process_message(raw, copies or (lab_copy(),), engine(), **kw)  # type: ignore[arg-type]


def outcome_digest(outcome: MessageOutcome) -> str:
    """A digest of everything an outcome decides: per copy its verdict, reason, bytes,
    findings and vault entries (identities included), then the safe subject."""
    digest = hashlib.sha256()
    for copy in outcome.copies:
        entries = [(v.token, v.audience, v.patient, v.identity) for v in copy.vault_entries]
        decision = (copy.verdict.value, copy.reason, copy.data, copy.findings, entries)
        digest.update(repr(decision).encode())
    digest.update(repr(outcome.safe_subject).encode())
    return digest.hexdigest()


def assert_no_planted(data: bytes | str, planted: Sequence[str] = PLANTED) -> None:
    text = data if isinstance(data, str) else data.decode("latin-1")
    for value in planted:
        assert value not in text, f"planted identifier left in output ({len(value)} chars)"


def message(
    body: str = "Bonjour,\nmerci pour la commande.\n",
    subject: str = "Commande",
    attachments: Sequence[tuple[str, bytes, str]] = (),
    html: str | None = None,
) -> bytes:
    """An Outlook/Thunderbird-like multipart message built by the stdlib."""
    msg = EmailMessage()
    msg["From"] = "Dr Martin <cabinet@cabinet-martin.fr>"
    msg["To"] = "Laboratoire <orders@labo.fr>"
    msg["Subject"] = subject
    msg["Message-ID"] = "<fixed-id@cabinet-martin.fr>"
    msg["Date"] = "Mon, 02 Dec 2024 10:00:00 +0100"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for name, data, ctype in attachments:
        main, sub = ctype.split("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes(policy=SMTP)


MULTIPART = b"Content-Type: multipart/mixed; boundary=B\r\n"


def attachment_message(headers: bytes, body: bytes, *, root: bytes = MULTIPART) -> bytes:
    """A lab order whose second part (an attachment) has the given header lines and body;
    `root` holds the root's header lines after the Subject."""
    return (
        b"From: Dr Martin <cabinet@cabinet-martin.fr>\r\nTo: orders@labo.fr\r\n"
        b"Subject: Commande\r\nMIME-Version: 1.0\r\n"
        + root
        + b"\r\n--B\r\nContent-Type: text/plain\r\n\r\nBonjour, ci-joint le scan.\r\n"
        + b"--B\r\n"
        + headers
        + b"\r\n"
        + body
        + b"\r\n--B--\r\n"
    )


def inspecting_copies(own_patient: str) -> tuple[RouteCopy, ...]:
    """One copy per inspecting action; own-data-only for the roster key `own_patient`."""
    return (
        lab_copy(),
        copy_for(Action.REDACT),
        copy_for(Action.REJECT_IF_PHI),
        copy_for(Action.OWN_DATA_ONLY, own_patient=own_patient),
    )


def load_test_messages() -> ModuleType:
    """load-tests/messages.py (load-tests/ is a folder of scripts, not a package)."""
    name = "portique_load_test_messages"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[2] / "load-tests" / "messages.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


class ExplodingEngine:
    """A fake at the scan seam (the real side is tested everywhere else): raises on demand."""

    def __init__(self, fail_in: str) -> None:
        self.fail_in = fail_in

    def scan_fields(
        self, fields: Sequence[TextField], *, check: Callable[[], None] | None = None
    ) -> list[Finding]:
        if self.fail_in == "scan":
            raise RuntimeError("boom DUPONT")
        return engine().scan_fields(fields, check=check)

    def scan_spans(
        self, fields: Sequence[TextField], *, check: Callable[[], None] | None = None
    ) -> list[FoundSpan]:
        if self.fail_in in ("scan", "verify"):  # the verification's scan
            raise RuntimeError("boom DUPONT")
        return engine().scan_spans(fields, check=check)

    def rewrite_fields(
        self,
        fields: Sequence[TextField],
        findings: Sequence[Finding],
        policy: TransformPolicy,
        *,
        check: Callable[[], None] | None = None,
    ) -> RewriteResult:
        if self.fail_in == "rewrite":
            raise RuntimeError("boom DUPONT")
        if self.fail_in == "identity":  # a broken rewriter that changes nothing
            return RewriteResult([f.text for f in fields], [])
        return engine().rewrite_fields(fields, findings, policy, check=check)

    def token_for_patient(self, patient: str, audience: str) -> str:
        return engine().token_for_patient(patient, audience)

    def patient_for_email(self, address: str) -> str | None:
        return engine().patient_for_email(address)
