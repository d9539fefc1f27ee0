"""The message pipeline runs compiled by mypyc (setup.py), and the same source run as
plain Python decides every copy of a message the same way, byte for byte.

Compared per message: each copy's verdict, reason, delivered bytes, findings and vault
entries, and the safe subject (tests/pipeline/_helpers.outcome_digest), over the golden
inputs, a few hundred load-test lab orders (and a few of its HTML orders with a PDF),
and HOSTILE below. The plain-Python side is tests/scan/test_compiled.run_from_source's
child, which reads gateway/scan and gateway/pipeline from source.

HOSTILE holds header values the email package returns in types typeshed does not
declare, which compiled code checks at run time: a value with 8-bit bytes is an
email.header.Header (compat32), an RFC 2231 parameter is a (charset, language, text)
tuple in get_params. Each must get the decision the plain source gives, and never the
internal-error HOLD a TypeError would cause.
"""

from __future__ import annotations

import functools
import json

import pytest

from gateway.pipeline import RouteCopy, process_message
from gateway.pipeline.process import REASON_INTERNAL
from gateway.roster import parse_roster_csv
from gateway.scan import build_engine
from gateway.scan.model import ScanEngine
from tests.pipeline._helpers import (
    DIGEST_KEY,
    DUPONT,
    LEGRAND,
    MULTIPART,
    PSEUDONYM_KEY,
    attachment_message,
    b64,
    inspecting_copies,
    load_test_messages,
    outcome_digest,
)
from tests.scan.test_compiled import (
    ROOT,
    assert_compiled_unless_built_pure,
    run_from_source,
)

GOLDEN = ROOT / "tests" / "golden"
LAB_ORDERS = 300
HTML_ORDERS = 6
ASCII_STL = b"solid DUPONT Jean\nendsolid DUPONT Jean\n"


def _attachment(headers: bytes, body: bytes = ASCII_STL, *, root: bytes = MULTIPART) -> bytes:
    """A message whose second part (by default an ASCII STL naming the patient) has the
    given header lines."""
    return attachment_message(headers, body, root=root)


def _text(content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"From: cabinet@cabinet-martin.fr\r\nTo: orders@labo.fr\r\nSubject: Commande\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: " + content_type + b"\r\n" + extra + b"\r\n" + body
    )


HOSTILE: dict[str, bytes] = {
    # RFC 6532 file names: raw UTF-8 (or Latin-1) bytes in a parameter. The header comes
    # back as a Header, its parameters as text with U+FFFD for the 8-bit bytes.
    "8bit_filename": _attachment(
        b"Content-Type: model/stl\r\n"
        b'Content-Disposition: attachment; filename="DUPONT_J\xc3\xa9r\xc3\xb4me.stl"\r\n'
    ),
    "8bit_name": _attachment(b'Content-Type: model/stl; name="DUPONT_J\xe9r\xf4me.stl"\r\n'),
    "8bit_transfer_encoding": _attachment(
        b"Content-Type: model/stl\r\nContent-Transfer-Encoding: base64\xe9\r\n",
        b64(ASCII_STL),
    ),
    "8bit_text_content_type": _text(
        b'text/plain; charset="utf-8"; format=fl\xe9wed',
        "Patient DUPONT Jean, né le 02/11/1975.\r\n".encode(),
        b"Content-Transfer-Encoding: 8bit\r\n",
    ),
    "8bit_html_content_type": _text(
        b'text/html; charset=utf-8; name="DUPONT_\xc3\xa9.html"',
        b"<p>Patient DUPONT Jean</p>\r\n",
    ),
    "8bit_boundary": _attachment(
        b"Content-Type: model/stl\r\n",
        root=b'Content-Type: multipart/mixed; boundary="B\xe9"\r\n',
    ),
    "8bit_address_subject_and_x_header": (
        b"From: J\xc3\xa9r\xc3\xb4me DUPONT <jd@example.org>\r\nTo: orders@labo.fr\r\n"
        b"Subject: Dossier DUPONT J\xe9r\xf4me\r\nX-Patient: LEGRAND Sophie \xe9\r\n"
        b"Content-Type: text/plain\r\n\r\nBonjour\r\n"
    ),
    # RFC 2231: Message.get_params gives (charset, language, text) tuples for these (for
    # parameter names of word characters only: email leaves `x-name*=` undecoded).
    "rfc2231_every_parameter": _attachment(
        b"Content-Type: model/stl; name*=utf-8''DUPONT_J%C3%A9r%C3%B4me.stl; comment*=iso-8859-1''%E9\r\n"
        b"Content-Disposition: attachment; filename*0*=utf-8''DUPONT_; filename*1=Jean.stl;"
        b" size*=us-ascii'en'40\r\n"
    ),
    "rfc2231_unknown_charset": _attachment(
        b"Content-Type: model/stl\r\n"
        b"Content-Disposition: attachment; filename*=x-unknown''DUPONT%E9.stl\r\n"
    ),
    "rfc2231_plain_and_extended_name": _attachment(
        b"Content-Type: model/stl; name=\"a.stl\"; name*=utf-8''DUPONT_Jean.stl\r\n"
    ),
    "rfc2231_charset": _text(b"text/plain; charset*=utf-8''utf-8", b"Patient DUPONT Jean\r\n"),
    "rfc2231_undecodable_charset": _text(
        b"text/plain; charset*=utf-8''%FF%FE", b"Patient DUPONT Jean\r\n"
    ),
    # A rewrite that cannot keep the declared charset re-renders Content-Type, with its
    # other parameters (an RFC 2231 tuple among them) carried over.
    "rfc2231_parameter_kept_when_charset_changes": _text(
        b"text/plain; charset=us-ascii; note*=utf-8''%C3%A9t%C3%A9",
        "Patient DUPONT Jean, prothèse à livrer.\r\n".encode(),
        b"Content-Transfer-Encoding: 8bit\r\n",
    ),
    "parameter_without_value": _attachment(
        b"Content-Type: model/stl; name=\r\nContent-Disposition: attachment; filename\r\n"
    ),
    "encoded_word_unknown_charset_name": _attachment(
        b'Content-Type: model/stl; name="=?x-nope?q?DUPONT?="\r\n'
    ),
    # Structured headers (tests/pipeline/test_structured_headers.py), with 8-bit values:
    # a duplicate is held, a scanned one comes back as a Header.
    "duplicate_8bit_disposition": _attachment(
        b"Content-Type: model/stl\r\n"
        b'Content-Disposition: attachment; filename="scan.stl"\r\n'
        b'Content-Disposition: attachment; filename="DUPONT_J\xc3\xa9r\xc3\xb4me.stl"\r\n'
    ),
    "8bit_content_id_and_location": _attachment(
        b'Content-Type: model/stl; x-note="DUPONT \xe9"\r\n'
        b"Content-ID: <DUPONT_J\xc3\xa9r\xc3\xb4me.stl@cabinet>\r\n"
        b"Content-Location: C:\\Patients\\DUPONT_\xe9.stl\r\n"
    ),
    "header_block_without_blank_line": _attachment(b"Content-Type: text/plain\r\nDUPONT Jean\r\n"),
    "embedded_message_8bit_headers": (
        b"From: cabinet@cabinet-martin.fr\r\nTo: orders@labo.fr\r\nSubject: Fwd\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
        + _attachment(
            b'Content-Type: model/stl; name="DUPONT_\xe9.stl"\r\n'
            b"Content-Disposition: attachment; filename*=utf-8''DUPONT_J%C3%A9r%C3%B4me.stl\r\n"
        )
    ),
}

COPIES: tuple[RouteCopy, ...] = inspecting_copies(DUPONT.key)


@functools.cache
def corpus_engine() -> ScanEngine:
    """The test roster and the load-test messages' planted patients."""
    messages = load_test_messages()
    lines = ["last_name,first_name,birth_date,nir,phone,email"]
    for p in messages.patient_pool(messages.DEFAULT_SEED):
        lines.append(f"{p.last_name},{p.first_name},{p.birth_date},{p.nir},{p.phone},{p.email}")
    pool = parse_roster_csv("\n".join(lines).encode(), PSEUDONYM_KEY)
    return build_engine(
        patients=[DUPONT, LEGRAND, *pool], digest_key=DIGEST_KEY, pseudonym_key=PSEUDONYM_KEY
    )


def corpus() -> list[tuple[str, bytes]]:
    messages = load_test_messages()
    found = [(p.name, p.read_bytes()) for p in sorted(GOLDEN.glob("*.in.eml"))]
    for kind, count in (("lab", LAB_ORDERS), ("html", HTML_ORDERS)):
        found += [
            (load_id, raw)
            for load_id, _index, raw in messages.generate("cmp", count, kind, messages.DEFAULT_SEED)
        ]
    return found + sorted(HOSTILE.items())


def corpus_outcomes() -> str:
    """JSON [[message name, outcome digest]] of every corpus message's four copies."""
    engine = corpus_engine()
    return json.dumps(
        [[name, outcome_digest(process_message(raw, COPIES, engine))] for name, raw in corpus()]
    )


def test_pipeline_modules_are_compiled_unless_built_pure() -> None:
    assert_compiled_unless_built_pure(ROOT / "gateway" / "pipeline")


def test_compiled_and_plain_python_decide_every_copy_the_same() -> None:
    compiled = dict(json.loads(corpus_outcomes()))
    plain = dict(json.loads(run_from_source("tests.pipeline.test_compiled:corpus_outcomes")))
    assert len(compiled) == len(corpus()) > LAB_ORDERS
    assert plain.keys() == compiled.keys()
    assert [name for name in compiled if plain[name] != compiled[name]] == []


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_header_values_get_a_decision(name: str) -> None:
    outcome = process_message(HOSTILE[name], COPIES, corpus_engine())
    for copy in outcome.copies:
        assert copy.reason != REASON_INTERNAL, copy.copy.route
