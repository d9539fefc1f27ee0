"""Structured MIME headers: duplicates, unread lines and the text they can carry.

A part with two Content-Type, Content-Disposition or Content-Transfer-Encoding headers is
read differently by different readers (which one wins is not specified), and the walk
reads only the first: a name in the other would leave unscanned. So is a header block
with a line the parser does not read as a field. Such a message is held for every
inspecting route, with a reason naming the header and never its value; `deliver`
copies are unaffected. The structured headers that can carry text (Content-ID,
Content-Location, Message-ID, the other parameters of Content-Type and
Content-Disposition) are scanned at every occurrence and never rewritten: a finding
there holds transforming routes.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.pipeline.process import REASON_STRUCTURED
from gateway.verdicts import Action
from tests.pipeline._helpers import (
    LEGRAND,
    MULTIPART,
    PLANTED,
    assert_no_planted,
    attachment_message,
    b64,
    copy_for,
    inspecting_copies,
    message,
    run,
)
from tests.relay._helpers import LAB_AND_PRACTICE_ROUTES, EventLog, send_sync, wait_until
from tests.relay.conftest import portique_factory, sink  # noqa: F401 (fixtures)

STL = b"solid s\nendsolid s\n"
INSPECTING = inspecting_copies(LEGRAND.key)


def with_attachment(headers: bytes, body: bytes = STL, *, root: bytes = MULTIPART) -> bytes:
    """A lab order whose second part (an STL without identifiers) has the given headers."""
    return attachment_message(headers, body, root=root)


DUPLICATES = {
    "disposition": (
        "Content-Disposition",
        with_attachment(
            b"Content-Type: model/stl\r\n"
            b'Content-Disposition: attachment; filename="scan.stl"\r\n'
            b'Content-Disposition: attachment; filename="DUPONT_Jean.stl"\r\n'
        ),
    ),
    "type_name": (
        "Content-Type",
        with_attachment(
            b'Content-Type: model/stl; name="scan.stl"\r\n'
            b'Content-Type: model/stl; name="DUPONT_Jean.stl"\r\n'
        ),
    ),
    "transfer_encoding": (
        "Content-Transfer-Encoding",
        with_attachment(
            b"Content-Type: model/stl\r\nContent-Transfer-Encoding: 7bit\r\n"
            b"Content-Transfer-Encoding: base64\r\n",
            b64(b"solid DUPONT Jean\nendsolid\n"),
        ),
    ),
    # Another spelling of the name, the second header folded (the fallback parser's
    # shape), and a second boundary on the root's multipart header.
    "disposition_lower_case_folded": (
        "Content-Disposition",
        with_attachment(
            b"Content-Type: model/stl\r\n"
            b'Content-Disposition: attachment; filename="scan.stl"\r\n'
            b'content-disposition: attachment;\r\n\tfilename="DUPONT_Jean.stl"\r\n'
        ),
    ),
    "root_boundary": (
        "Content-Type",
        with_attachment(
            b"Content-Type: model/stl\r\n",
            root=MULTIPART + b"Content-Type: multipart/mixed; boundary=DUPONT\r\n",
        ),
    ),
}


def assert_held_everywhere_but_deliver(raw: bytes, reason: str) -> None:
    outcome = run(raw, *INSPECTING, copy_for(Action.DELIVER))
    *inspected, delivered = outcome.copies
    for copy in inspected:
        assert copy.verdict == "hold", (copy.copy.action, copy.verdict, copy.reason)
        assert copy.data is None
        assert copy.reason == reason
    assert delivered.verdict == "pass" and delivered.data is raw


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_a_duplicate_mime_header_holds_every_inspecting_route(case: str) -> None:
    header, raw = DUPLICATES[case]
    assert_held_everywhere_but_deliver(raw, f"ambiguous MIME headers (duplicate {header})")


def test_a_duplicate_in_an_embedded_message_holds() -> None:
    inner = DUPLICATES["disposition"][1]
    raw = (
        b"From: cabinet@cabinet-martin.fr\r\nTo: orders@labo.fr\r\nSubject: Fwd\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" + inner
    )
    assert_held_everywhere_but_deliver(
        raw, "ambiguous MIME headers (duplicate Content-Disposition)"
    )


@pytest.mark.parametrize(
    "headers",
    [
        # The obsolete syntax (RFC 5322 4.5): some readers take it as the header.
        b'Content-Type: model/stl\r\nContent-Disposition : attachment; filename="DUPONT.stl"\r\n',
        b'Content-Type: model/stl\r\nContent-Disposition: attachment\r\n; filename="DUPONT.stl"\r\n',
        # No blank line between the headers and the body: readers show the body.
        b"Content-Type: text/plain\r\nPatient DUPONT Jean\r\n",
    ],
)
def test_a_line_that_is_no_header_field_holds(headers: bytes) -> None:
    raw = with_attachment(headers, b"").replace(b"\r\n\r\n\r\n--B--", b"\r\n--B--")
    assert_held_everywhere_but_deliver(raw, "malformed MIME header block")


def test_the_held_name_reaches_no_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        for _header, raw in DUPLICATES.values():
            run(raw, *INSPECTING)
    assert_no_planted(repr(logs) + caplog.text)


def rewritten_for_the_lab(raw: bytes) -> bytes:
    """The lab copy's bytes, checked rewritten and free of the planted identifiers."""
    copy = run(raw).copies[0]
    assert copy.verdict == "rewritten", copy.reason
    assert copy.data is not None
    assert_no_planted(copy.data)
    return copy.data


def test_one_of_each_header_is_unaffected() -> None:
    """The same part with the name in a single Content-Disposition is rewritten."""
    raw = with_attachment(
        b'Content-Type: model/stl; name="scan.stl"\r\n'
        b'Content-Disposition: attachment; filename="DUPONT_Jean.stl"; size=19\r\n'
        b"Content-ID: <scan.stl@cabinet-martin.fr>\r\n"
    )
    rewritten_for_the_lab(raw)


def test_repeated_free_text_headers_are_scanned_at_every_occurrence() -> None:
    """Subject and Content-Description are free text: a second one is rewritten."""
    raw = (
        b"From: Dr Martin <cabinet@cabinet-martin.fr>\r\nTo: orders@labo.fr\r\n"
        b"Subject: Commande\r\nSubject: Couronne DUPONT Jean\r\n"
        b"Content-Description: scan\r\nContent-Description: arcade DUPONT\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nBonjour\r\n"
    )
    data = rewritten_for_the_lab(raw)
    assert b"Subject: Commande\r\nSubject: Couronne PAT-" in data
    assert b"Content-Description: scan\r\nContent-Description: arcade PAT-" in data


IN_STRUCTURED_HEADERS = {
    "content_id": (b"Content-ID: <DUPONT_Jean.png@cabinet-martin.fr>\r\n", MULTIPART),
    "second_content_id": (
        b"Content-ID: <scan@cabinet-martin.fr>\r\nContent-ID: <DUPONT_Jean.png@x>\r\n",
        MULTIPART,
    ),
    "content_location": (
        b"Content-Location: file:///C:/Patients/DUPONT_Jean/scan.stl\r\n",
        MULTIPART,
    ),
    "encoded_content_location": (
        b"Content-Location: scan.stl\r\nContent-Location: =?utf-8?q?DUPONT=5FJean.stl?=\r\n",
        MULTIPART,
    ),
    "content_type_parameter": (
        b'Content-Type: model/stl; x-patient="DUPONT Jean"\r\n',
        MULTIPART,
    ),
    "disposition_parameter": (
        b'Content-Disposition: attachment; x-patient="DUPONT Jean"\r\n',
        MULTIPART,
    ),
    "folded_into_content_type": (
        b"Content-Type: model/stl\r\n X-Patient: DUPONT Jean\r\n",
        MULTIPART,
    ),
    "message_id": (b"", b"Message-ID: <DUPONT.42@cabinet-martin.fr>\r\n" + MULTIPART),
    "references": (b"", b"References: <a@x> <DUPONT.Jean@cabinet-martin.fr>\r\n" + MULTIPART),
    "multipart_name": (b"", b'Content-Type: multipart/mixed; boundary=B; name="DUPONT.zip"\r\n'),
    "unknown_name_spelling": (
        b'Content-Disposition: attachment; filename**="DUPONT.stl"\r\n',
        MULTIPART,
    ),
}


@pytest.mark.parametrize("case", sorted(IN_STRUCTURED_HEADERS))
def test_a_name_in_a_structured_header_holds_transforming_routes(case: str) -> None:
    headers, root = IN_STRUCTURED_HEADERS[case]
    if not headers.lower().startswith(b"content-type"):
        headers = b"Content-Type: model/stl\r\n" + headers
    raw = with_attachment(headers, root=root)
    lab, redact, reject_if_phi, not_own, delivered = run(
        raw, *INSPECTING, copy_for(Action.DELIVER)
    ).copies
    for copy in (lab, redact):
        assert copy.verdict == "hold", (copy.copy.action, copy.reason)
        assert copy.reason == REASON_STRUCTURED
        assert copy.data is None and copy.findings
    assert reject_if_phi.verdict == "reject" and reject_if_phi.data is None
    assert not_own.verdict == "reject" and not_own.data is None
    assert delivered.verdict == "pass" and delivered.data is raw


@pytest.mark.parametrize(
    "parameters",
    [
        b'filename ="DUPONT_Jean.stl"',
        b"filename*=utf-8''DUPONT_Jean.stl; size=19",
        b"filename*0*=utf-8''DUPONT_; filename*1=\"Jean.stl\"",
        b"filename=\"DUPONT_Jean.stl\"; filename*=utf-8''scan.stl",
        b'filename="DUPONT_\\"Jean.stl"',
        b'filename="DUPONT_Jean;stl"',
        b'filename="DUPONT_Jean.stl',
    ],
)
def test_file_name_parameters_are_rewritten_not_held(parameters: bytes) -> None:
    """The names taken out of the scanned Content-Disposition are those scanned as names."""
    raw = with_attachment(
        b"Content-Type: model/stl\r\nContent-Disposition: attachment; " + parameters + b"\r\n"
    )
    outcome = run(raw, *INSPECTING)
    lab = outcome.copies[0]
    assert lab.verdict == "rewritten", lab.reason
    for copy in outcome.copies:
        if copy.data is not None:
            assert_no_planted(copy.data)


def test_a_clean_content_id_and_message_id_do_not_hold() -> None:
    """Content-IDs and Message-IDs as Outlook, Apple Mail and Python write them."""
    raw = message(
        body="Patient DUPONT Jean\n",
        html='<p>Patient DUPONT Jean <img src="cid:image001.png@01DA44C5.7F3B2A10"></p>',
    )
    raw = raw.replace(
        b"Content-Type: text/html",
        b"Content-ID: <image001.png@01DA44C5.7F3B2A10>\r\n"
        b"Content-Location: image001.png\r\nContent-Type: text/html",
    ).replace(
        b"Message-ID: <fixed-id@cabinet-martin.fr>",
        b"Message-ID: <F1E2D3C4-1234-5678-9ABC-DEF012345678@cabinet-martin.fr>\r\n"
        b"In-Reply-To: <173301234567.12345.6123456789012345678@cabinet-martin.fr>",
    )
    data = rewritten_for_the_lab(raw)
    assert b"Content-ID: <image001.png@01DA44C5.7F3B2A10>" in data


async def test_the_service_holds_a_duplicate_and_tells_the_sender_without_the_name(
    portique_factory: Any,  # noqa: F811
    sink: Any,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    log = EventLog()
    raw = DUPLICATES["disposition"][1].replace(STL, STL.replace(b"\n", b"\r\n"))
    raw = raw.replace(b"orders@labo.fr", b"lab@lab.test")
    raw = raw.replace(b"cabinet@cabinet-martin.fr", b"dr@practice.test")
    with capture_logs() as logs:
        svc = await portique_factory(
            sink.port,
            routes=LAB_AND_PRACTICE_ROUTES,
        )
        svc.events.subscribe(log)
        await asyncio.to_thread(send_sync, svc.smtp_port, raw)
        (notice,) = await sink.wait_for(1)
        await wait_until(lambda: svc.processing_idle() and svc.quarantine.list())
    assert notice.recipients == ["dr@practice.test"]
    (held,) = svc.quarantine.list()
    assert held.route == "labs"
    assert held.reason == "ambiguous MIME headers (duplicate Content-Disposition)"
    notice_text = email.message_from_bytes(notice.data, policy=email.policy.default)
    texts = [p.get_content() for p in notice_text.walk() if p.get_content_maintype() == "text"]
    assert any("duplicate Content-Disposition" in t for t in texts), texts
    logged = json.dumps(logs, default=str) + caplog.text + json.dumps(log.kinds("held"))
    for value in (*PLANTED, "DUPONT_Jean"):
        assert value not in logged
