"""The spool's envelope frame is byte for byte what the json module writes, so spool files
written before and after `Envelope.to_json` was hand-built open with either version."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.spool import Envelope

# Any text an envelope can carry, lone surrogates included: aiosmtpd decodes 8-bit
# command arguments with surrogateescape.
_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)


def json_module_bytes(envelope: Envelope) -> bytes:
    fields = asdict(envelope)
    fields["recipients"] = list(envelope.recipients)
    return json.dumps(fields, separators=(",", ":")).encode()


@settings(max_examples=500, deadline=None)
@given(
    mail_from=_TEXT,
    recipients=st.lists(_TEXT, max_size=4).map(tuple),
    client=_TEXT,
    helo=_TEXT,
    user=_TEXT,
    tls=st.booleans(),
    received_at=st.floats(min_value=0, max_value=4e9) | st.just(time.time()),
    smtp_utf8=st.booleans(),
)
@example(
    mail_from="",
    recipients=(),
    client="",
    helo="",
    user="",
    tls=False,
    received_at=0.0,
    smtp_utf8=False,
)
@example(
    mail_from='a"b\\c@x.test',
    recipients=("\udce9@lab.test", "é@lab.test"),
    client="::1",
    helo="\x00\x1f\x7f",
    user="\u2028",
    tls=True,
    received_at=1_790_000_000.25,
    smtp_utf8=True,
)
def test_envelope_json_is_what_the_json_module_writes(**fields: object) -> None:
    envelope = Envelope(**fields)  # type: ignore[arg-type]
    raw = envelope.to_json()
    assert raw == json_module_bytes(envelope)
    assert Envelope.from_json(raw) == envelope
