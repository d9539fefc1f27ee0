"""The MIME walk: what is scanned, what is rewritten, and that the rest stays byte-identical."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from html.parser import HTMLParser

import pytest

from gateway.config import FilesConfig
from gateway.pipeline.message import analyse_message
from gateway.pipeline.mime import parse_message, serialise_part
from gateway.scan.model import FieldKind
from gateway.verdicts import Action
from tests.pipeline._helpers import (
    assert_no_planted,
    b64,
    copy_for,
    engine,
    lab_copy,
    message,
    run,
)

CRLF = b"\r\n"


def _parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    for part in msg.walk():
        assert not [d for d in part.defects if "Boundary" in type(d).__name__], part.defects
    return msg


def test_serialise_without_edits_is_identity() -> None:
    raw = message(
        body="Bonjour\n", html="<p>Bonjour</p>", attachments=[("a.txt", b"x\n", "text/plain")]
    )
    root, parts = parse_message(raw, FilesConfig())
    assert len(parts) == 5
    assert serialise_part(raw, root, {}) == raw


def test_clean_message_passes_with_original_bytes() -> None:
    raw = message(body="Couronne zircone sur 36, teinte A2.\n", subject="Commande 42")
    outcome = run(raw, lab_copy(), copy_for(Action.REDACT), copy_for(Action.REJECT_IF_PHI))
    for copy in outcome.copies:
        assert copy.verdict == "pass"
        assert copy.data is raw
    assert outcome.safe_subject == "Commande 42"


def test_unchanged_parts_are_carried_over_byte_identical() -> None:
    other = "Teinte A2, livraison lundi.\n" * 3
    raw = message(
        body="Patient DUPONT Jean.\n",
        attachments=[
            ("notes.txt", other.encode(), "text/plain"),
            ("x.bin", b"\x00" * 10, "application/x-foo"),
        ],
    )
    outcome = run(raw, lab_copy(unknown_files="pass")).copies[0]
    assert outcome.verdict == "rewritten"
    assert outcome.data is not None
    in_root, in_parts = parse_message(raw, FilesConfig())
    out_root, out_parts = parse_message(outcome.data, FilesConfig())
    assert len(in_parts) == len(out_parts)
    changed = 0
    for a, b in zip(in_parts[1:], out_parts[1:], strict=True):
        same = raw[a.start : a.end] == outcome.data[b.start : b.end]
        changed += not same
    assert changed == 1  # only the body part


@pytest.mark.parametrize(
    ("charset", "cte"),
    [
        ("utf-8", "base64"),
        ("iso-8859-1", "quoted-printable"),
        ("iso-8859-15", "8bit"),
        ("cp1252", "quoted-printable"),
        ("windows-1252", "base64"),
    ],
)
def test_charsets_and_transfer_encodings(charset: str, cte: str) -> None:
    text = "Prothèse pour M. DUPONT Jean, tél 06 12 34 56 78 — coût 120 €.\n"
    if charset.startswith("iso-8859"):
        text = text.replace("—", "-")
    if charset == "iso-8859-1":
        text = text.replace("€", "EUR")
    payload = text.encode(charset)
    if cte == "base64":
        body = b64(payload)
    elif cte == "quoted-printable":
        import quopri

        body = quopri.encodestring(payload).replace(b"\n", CRLF)
    else:
        body = payload.replace(b"\n", CRLF)
    raw = (
        b"From: a@cabinet.fr\r\nTo: b@labo.fr\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body
    )
    outcome = run(raw).copies[0]
    assert outcome.verdict == "rewritten", outcome.reason
    assert outcome.data is not None
    msg = _parsed(outcome.data)
    content = msg.get_content()
    assert "DUPONT" not in content and "06 12 34 56 78" not in content
    assert "Prothèse" in content and "120" in content
    assert_no_planted(outcome.data)


def test_invalid_charsets_hold() -> None:
    for header, body in (
        (b"text/plain; charset=x-no-such-charset", b"DUPONT Jean"),
        (b"text/plain; charset=utf-8", b"DUPONT \xff\xfe Jean"),
    ):
        raw = b"Subject: x\r\nContent-Type: " + header + b"\r\n\r\n" + body
        lab, screen, mssante = run(
            raw, lab_copy(), copy_for(Action.REJECT_IF_PHI), copy_for(Action.DELIVER)
        ).copies
        assert lab.verdict == "hold" and lab.data is None
        assert "charset" in lab.reason
        assert screen.verdict == "hold"
        assert mssante.verdict == "pass" and mssante.data == raw
    raw = b"Subject: =?x-bogus?q?DUPONT?=\r\n\r\nbonjour"
    assert run(raw).copies[0].verdict == "hold"


def test_rfc2231_and_rfc2047_file_names_are_rewritten() -> None:
    stl = b"solid x\nendsolid x\n"
    raw = (
        b"Subject: Scans\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nBonjour\r\n"
        b"--B\r\nContent-Type: model/stl\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''DUPONT_J%C3%A9r%C3%B4me_Jean_2024-11-02.stl\r\n"
        b"\r\n" + stl + b"\r\n"
        b'--B\r\nContent-Type: model/stl; name="=?utf-8?q?DUPONT=5FJean=5Fbas.stl?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(stl) + b"--B--\r\n"
    )
    outcome = run(raw).copies[0]
    assert outcome.verdict == "rewritten", outcome.reason
    assert outcome.data is not None
    assert b"DUPONT" not in outcome.data
    names = [p.get_filename() for p in _parsed(outcome.data).walk() if p.get_filename()]
    assert len(names) == 2
    assert all(n.startswith("PAT-") for n in names), names
    assert names[0].endswith("_2024-11-02.stl")


@pytest.mark.parametrize(
    "parameters",
    [
        b"filename=\"scan.stl\"; filename*=utf-8''DUPONT_Jean.stl",
        b"filename*=utf-8''scan.stl; filename=\"DUPONT_Jean.stl\"",
        b"filename=\"scan.stl\"; filename*0*=utf-8''DUPONT_; filename*1=Jean.stl",
        b"filename=\"DUPONT_Jean.stl\"; filename*=utf-8''DUPONT_Jean.stl",
    ],
)
def test_every_spelling_of_a_file_name_is_scanned(parameters: bytes) -> None:
    """A name given twice (plain and RFC 2231): readers that prefer the second show it."""
    raw = (
        b"Subject: Scan\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nBonjour\r\n"
        b"--B\r\nContent-Type: model/stl\r\nContent-Disposition: attachment; "
        + parameters
        + b"\r\n\r\nsolid x\nendsolid x\n\r\n--B--\r\n"
    )
    outcome = run(raw).copies[0]
    assert outcome.verdict == "rewritten", outcome.reason
    assert outcome.data is not None
    assert b"DUPONT" not in outcome.data
    names = [p.get_filename() for p in _parsed(outcome.data).walk() if p.get_filename()]
    assert len(names) == 1 and names[0].startswith("PAT-"), names
    assert outcome.data.count(b"filename") == 1


def test_file_name_uses_the_same_token_as_the_body() -> None:
    raw = message(
        body="Scan de DUPONT Jean.\n",
        attachments=[("DUPONT_Jean_2024-11-02.stl", b"solid s\nendsolid s\n", "model/stl")],
    )
    outcome = run(raw).copies[0]
    assert outcome.data is not None
    msg = _parsed(outcome.data)
    body = msg.get_body(("plain",))
    assert body is not None
    token = body.get_content().split()[2].rstrip(".")
    assert token.startswith("PAT-")
    names = [p.get_filename() for p in msg.walk() if p.get_filename()]
    assert names == [f"{token}_2024-11-02.stl"]


def test_subject_and_patient_display_names_only() -> None:
    msg = EmailMessage()
    msg["From"] = "Dr Martin <cabinet@cabinet-martin.fr>"
    msg["To"] = "Laboratoire Dentaire <orders@labo.fr>"
    msg["Cc"] = "Jean DUPONT <jean.dupont@example.org>"
    msg["Subject"] = "Résultats de DUPONT Jean"
    msg.set_content("Bonjour.\n")
    raw = msg.as_bytes(policy=policy.SMTP)
    analysis = analyse_message(raw)
    kinds = [f.kind for f in analysis.fields]
    assert kinds.count(FieldKind.DISPLAY_NAME) == 3 and FieldKind.SUBJECT in kinds
    outcome = run(raw)
    copy = outcome.copies[0]
    assert copy.verdict == "rewritten" and copy.data is not None
    out = _parsed(copy.data)
    assert "DUPONT" not in str(out["Subject"]) and "Résultats" in str(out["Subject"])
    assert "DUPONT" not in str(out["Cc"].addresses[0].display_name)
    assert out["Cc"].addresses[0].addr_spec == "jean.dupont@example.org"  # routing data kept
    assert str(out["To"]) == "Laboratoire Dentaire <orders@labo.fr>"
    assert str(out["From"]) == "Dr Martin <cabinet@cabinet-martin.fr>"
    assert outcome.safe_subject is not None and "DUPONT" not in outcome.safe_subject
    assert "Résultats" in outcome.safe_subject


class _StrictHTML(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag not in ("br", "img", "meta"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag


def test_html_text_nodes_are_rewritten_and_markup_stays_valid() -> None:
    html = (
        '<html><head><title>Fiche DUPONT</title></head><body><p class="x">Patient '
        '<b>DUPONT Jean</b> &amp; suivi</p><a href="mailto:jean.dupont@example.org" '
        'title="DUPONT Jean">contact</a><!-- DUPONT --></body></html>'
    )
    raw = message(body="Patient DUPONT Jean.\n", html=html)
    outcome = run(raw).copies[0]
    assert outcome.verdict == "rewritten" and outcome.data is not None
    part = _parsed(outcome.data).get_body(("html",))
    assert part is not None
    out_html = part.get_content()
    assert "DUPONT" not in out_html and "jean.dupont@example.org" not in out_html
    assert "&amp; suivi" in out_html and 'class="x"' in out_html
    parser = _StrictHTML()
    parser.feed(out_html)
    parser.close()
    assert parser.stack == []


def test_nested_rfc822_and_alternative_are_walked() -> None:
    inner = EmailMessage()
    inner["Subject"] = "Ordonnance DUPONT Jean"
    inner["From"] = "x@cabinet.fr"
    inner.set_content("Pour DUPONT Jean.\n")
    inner.add_alternative("<p>Pour <i>DUPONT Jean</i></p>", subtype="html")
    outer = EmailMessage()
    outer["Subject"] = "Fwd: ordonnance"
    outer["From"] = "a@cabinet.fr"
    outer.set_content("Voir le message joint.\n")
    outer.add_attachment(inner)
    raw = outer.as_bytes(policy=policy.SMTP)
    outcome = run(raw).copies[0]
    assert outcome.verdict == "rewritten" and outcome.data is not None
    assert_no_planted(outcome.data)
    out = _parsed(outcome.data)
    attached = [p for p in out.walk() if p.get_content_type() == "message/rfc822"]
    assert len(attached) == 1
    embedded = attached[0].get_content()
    assert "PAT-" in str(embedded["Subject"])


def test_findings_carry_no_values_and_reasons_no_identifiers() -> None:
    raw = message(body="DUPONT Jean, NIR 1 75 11 99 126 111 42, tel 06 12 34 56 78\n")
    outcome = run(raw, copy_for(Action.REJECT_IF_PHI))
    copy = outcome.copies[0]
    assert copy.verdict == "reject"
    assert_no_planted(copy.reason)
    assert_no_planted(repr(copy))
    assert "name" in copy.reason


def test_own_data_only_route() -> None:
    raw = message(body="Vos résultats, DUPONT Jean.\n")
    own = run(raw, copy_for(Action.OWN_DATA_ONLY, own_patient="patient-dupont")).copies[0]
    assert own.verdict == "pass" and own.data is raw
    other = run(raw, copy_for(Action.OWN_DATA_ONLY, own_patient="patient-legrand")).copies[0]
    assert other.verdict == "reject"
    unknown = run(raw, copy_for(Action.OWN_DATA_ONLY)).copies[0]
    assert unknown.verdict == "reject"
    assert engine().patient_for_email("jean.dupont@example.org") == "patient-dupont"


def test_route_actions_without_scan() -> None:
    raw = message(body="DUPONT Jean\n")
    hold, reject, deliver = run(
        raw, copy_for(Action.HOLD), copy_for(Action.REJECT), copy_for(Action.DELIVER)
    ).copies
    assert hold.verdict == "hold" and hold.data is None
    assert reject.verdict == "reject" and reject.data is None
    assert deliver.verdict == "pass" and deliver.data is raw


def test_redact_route_uses_labels_and_no_vault_entries() -> None:
    raw = message(body="Patient DUPONT Jean\n")
    copy = run(raw, copy_for(Action.REDACT)).copies[0]
    assert copy.verdict == "rewritten" and copy.data is not None
    assert b"PAT-" not in copy.data and b"DUPONT" not in copy.data
    assert copy.vault_entries == ()
    lab = run(raw).copies[0]
    assert lab.vault_entries and all(v.audience == "labo.fr" for v in lab.vault_entries)


def test_free_text_headers_are_scanned_and_structured_ones_kept() -> None:
    raw = (
        b"From: Dr Martin <cabinet@cabinet-martin.fr>\r\nTo: orders@labo.fr\r\n"
        b"Subject: Couronne\r\nThread-Topic: Couronne DUPONT Jean\r\n"
        b"Comments: rien\r\nComments: pour DUPONT Jean\r\n"
        b"X-Patient: DUPONT Jean\r\nMessage-ID: <order.42@cabinet-martin.fr>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain\r\n\r\nBonjour\r\n"
        b"--B\r\nContent-Type: model/stl\r\nContent-Description: arcade de DUPONT Jean\r\n\r\n"
        b"solid s\nendsolid s\n\r\n--B--\r\n"
    )
    copy = run(raw).copies[0]
    assert copy.verdict == "rewritten", copy.reason
    assert copy.data is not None
    head = copy.data.split(b"\r\n\r\n", 1)[0]
    assert b"Thread-Topic: Couronne PAT-" in head
    assert b"Comments: rien\r\nComments: pour PAT-" in head
    assert b"X-Patient: PAT-" in head
    assert b"Message-ID: <order.42@cabinet-martin.fr>" in head  # structured: untouched
    assert b"Content-Description: arcade de PAT-" in copy.data
    assert b"DUPONT" not in copy.data


def test_raw_utf8_headers_are_decoded_and_rewritten() -> None:
    raw = (
        "From: cabinet@cabinet-martin.fr\r\nTo: Jean DUPONT <jean.dupont@example.org>\r\n"
        "Subject: Résultats de DUPONT Jean\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Bonjour.\r\n"
    ).encode()
    copy = run(raw).copies[0]
    assert copy.verdict == "rewritten", copy.reason
    assert copy.data is not None and b"DUPONT" not in copy.data
    subject = _parsed(copy.data)["Subject"]
    assert str(subject).startswith("Résultats de PAT-")
