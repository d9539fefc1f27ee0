"""Rewritten parts go to the next hop in CRLF lines, and decode to exactly the rewritten text.

Regression: a long utf-8 quoted-printable line was re-encoded with "=\\r\\r\\n" (the encoder
already wrote CRLF, and every LF was then replaced by CRLF), so the lab received a soft line
break broken in two and a bare CR (reliability.md promise 7: output is CRLF only).
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.pipeline.message import encode_body
from tests.pipeline._helpers import assert_no_planted, engine, run

CRLF = b"\r\n"
# A CR not followed by LF, or an LF not preceded by CR.
BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
NAME = "DUPONT Jean"


def token() -> str:
    return engine().token_for_patient("patient-dupont", "labo.fr")


def _single_part(body: bytes, cte: str, charset: str = "utf-8") -> bytes:
    return (
        b"From: Dr Martin <cabinet@cabinet-martin.fr>\r\nTo: orders@labo.fr\r\n"
        b"Subject: Commande\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=sep\r\n\r\n"
        b"--sep\r\nContent-Type: text/plain; charset=" + charset.encode() + b"\r\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body + b"\r\n"
        b"--sep\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nMerci.\r\n"
        b"--sep--\r\n"
    )


def _encode(payload: bytes, cte: str) -> bytes:
    if cte == "quoted-printable":
        return quopri.encodestring(payload)  # CRLF in, CRLF out (binascii detects it)
    if cte == "base64":
        return base64.encodebytes(payload).replace(b"\n", CRLF)
    return payload


def _first_text_part(data: bytes) -> tuple[Message, bytes]:
    """Headers and raw body of the part under test, cut from the bytes (boundary "sep")."""
    start = data.index(b"--sep\r\n") + len(b"--sep\r\n")
    end = data.index(b"\r\n--sep", start)
    head, body = data[start:end].split(b"\r\n\r\n", 1)
    return message_from_bytes(head + b"\r\n\r\n", policy=compat32), body


def _decoded(data: bytes) -> bytes:
    """Decodes with binascii directly (not the pipeline's own decoder)."""
    headers, body = _first_text_part(data)
    cte = str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    if cte == "base64":
        return binascii.a2b_base64(body)
    return body


def test_long_quoted_printable_line_keeps_its_soft_breaks_whole() -> None:
    line = (
        f"Bonjour, merci de préparer pour {NAME} (dent 36, teinte A2) la prothèse suivante : "
        "couronne zircone monolithique, épaulement congé, contrôle occlusal soigné, "
        "livraison souhaitée avant le rendez-vous du patient, merci d'avance à toute l'équipe."
    )
    payload = (line + "\r\n" + line + "\r\n").encode("utf-8")
    raw = _single_part(_encode(payload, "quoted-printable"), "quoted-printable")
    assert b"=\r\n" in raw  # the input really has soft line breaks
    copy = run(raw).copies[0]
    assert copy.verdict == "rewritten", copy.reason
    assert copy.data is not None
    assert BARE_CR_OR_LF.search(copy.data) is None
    assert b"\r\r" not in copy.data
    assert all(len(line) <= 76 for line in _first_text_part(copy.data)[1].split(CRLF))
    expected = payload.decode("utf-8").replace(NAME, token()).encode("utf-8")
    assert _decoded(copy.data) == expected
    assert_no_planted(copy.data)


# Text without anything the engine could take for an identifier: lower-case letters
# without d, g, h, j (no roster name or first name can form), no digits, no "@".
_SAFE = "abcefikmnopqrstuvwxyz"
_chars = st.sampled_from(list(_SAFE) + list("éèàçüœ€ß") + ["=", " ", "\t", ".", ",", ";"])
_line = st.lists(_chars, max_size=300).map("".join)
_long_line = st.integers(min_value=80, max_value=1100).map(lambda n: ("a =é\t" * n)[:n])


@st.composite
def _texts(draw: st.DrawFn, *, allow_bare_cr: bool, max_line: int) -> str:
    lines = draw(st.lists(st.one_of(_line, _long_line), min_size=1, max_size=6))
    lines = [line[:max_line] for line in lines]
    where = draw(st.integers(min_value=0, max_value=len(lines) - 1))
    lines[where] = lines[where] + f" pour {NAME} " + lines[where][: draw(st.integers(0, 50))]
    if allow_bare_cr and draw(st.booleans()):
        at = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        lines[at] = lines[at] + "\r" + "suite"
    trailing = draw(st.sampled_from(["", " ", "\t", "  \t", "="]))
    return "\r\n".join(lines) + trailing + "\r\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cte=st.sampled_from(["quoted-printable", "base64", "8bit"]),
    charset=st.sampled_from(["utf-8", "iso-8859-15"]),
    data=st.data(),
)
def test_rewritten_part_is_crlf_and_decodes_to_the_rewritten_text(
    cte: str, charset: str, data: st.DataObject
) -> None:
    # A bare CR can reach a decoded payload through =0D or base64, never through 8bit.
    text = data.draw(_texts(allow_bare_cr=cte != "8bit", max_line=900 if cte == "8bit" else 2000))
    payload = text.encode(charset)
    raw = _single_part(_encode(payload, cte), cte, charset)
    copy = run(raw).copies[0]
    assert copy.verdict == "rewritten", copy.reason
    assert copy.data is not None
    assert BARE_CR_OR_LF.search(copy.data) is None
    expected = text.replace(NAME, token()).encode(charset)
    assert _decoded(copy.data) == expected
    assert NAME not in copy.data.decode("latin-1")


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=600)
    | st.lists(st.sampled_from([b"a", b"=", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\xc3\xa9"])).map(
        b"".join
    ),
    cte=st.sampled_from(["quoted-printable", "base64", "8bit", "7bit"]),
    binary=st.booleans(),
)
def test_encode_body_never_emits_a_bare_cr_or_lf(payload: bytes, cte: str, binary: bool) -> None:
    body, new_cte = encode_body(payload, cte, CRLF, binary=binary)
    assert BARE_CR_OR_LF.search(body) is None
    if new_cte == "quoted-printable":
        decoded = binascii.a2b_qp(body)
    elif new_cte == "base64":
        decoded = binascii.a2b_base64(body)
    else:
        decoded = body
    if binary:
        assert decoded == payload  # a file's bytes are never changed
    else:
        # A text payload's line breaks (CRLF or LF) are CRLF; every other byte is kept.
        assert decoded == payload.replace(b"\r\n", b"\n").replace(b"\n", CRLF)
