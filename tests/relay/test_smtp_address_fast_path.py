"""PortiqueSMTP's fast MAIL/RCPT address parsing answers exactly as aiosmtpd's own."""

from __future__ import annotations

from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.smtp import PortiqueSMTP

_CHARS = st.sampled_from(list('aZ09.-_+@<> \t"()[]\\,:;é=') + ["SIZE=12", "BODY=8BITMIME"])


def outcome(parser: SMTP, arg: str) -> object:
    """The parse, or the exception type: aiosmtpd's parser raises on some malformed
    arguments (e.g. "<"), which the session turns into a 451; ours must do the same."""
    try:
        return parser._getaddr(arg)
    except Exception as exc:  # noqa: BLE001 - compared, not hidden
        return type(exc)


def parsers(limit: int) -> tuple[PortiqueSMTP, SMTP]:
    ours = object.__new__(PortiqueSMTP)
    theirs = object.__new__(SMTP)
    ours.local_part_limit = theirs.local_part_limit = limit
    return ours, theirs


@settings(max_examples=1500, deadline=None)
@given(st.lists(_CHARS, max_size=30).map("".join), st.sampled_from([0, 4, 64]))
@example("<dr@practice.test>", 0)
@example("<dr@practice.test> SIZE=2048 BODY=8BITMIME", 64)
@example("<averyverylonglocalpart@x.test>", 4)
@example("<a..b@x.test>", 0)
@example("<.a@x.test>", 0)
@example("<a@x.test.>", 0)
@example("<>", 0)
@example(" <a@b.c>", 0)
@example("<a@b.c>x", 0)
@example('<"quoted local"@b.c>', 0)
def test_same_answer_as_aiosmtpd(arg: str, limit: int) -> None:
    ours, theirs = parsers(limit)
    assert outcome(ours, arg) == outcome(theirs, arg)


@settings(max_examples=1000, deadline=None)
@given(
    st.from_regex(
        r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,12}@[A-Za-z0-9.-]{1,12}>( [A-Z]+=\w+)?", fullmatch=True
    ),
    st.sampled_from([0, 4, 64]),
)
def test_same_answer_on_address_shapes(arg: str, limit: int) -> None:
    """Arguments shaped like real MAIL/RCPT arguments, so that the fast path is taken."""
    ours, theirs = parsers(limit)
    assert outcome(ours, arg) == outcome(theirs, arg)
