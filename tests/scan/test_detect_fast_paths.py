"""Fast paths of the detection stage agree with the slow rules they stand in for.

Each test states the slow rule (or calls it) and checks, on generated inputs, that the
fast path decides exactly as it does.
"""

from __future__ import annotations

from functools import lru_cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban

from gateway.scan import Engine, IdentifierKind, TextField, build_engine, validators
from gateway.scan.engine import _within_sole_iban
from gateway.scan.shapes import ShapeName

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=2)
def engine(kind: str) -> Engine:
    return build_engine(digest_key=b"d" * 32, pseudonym_key=b"p" * 32, engine=kind)


# Numbers phonenumbers validates once "00" is read as "+" (UK, Germany, US, Belgium,
# Switzerland): ending an IBAN, "00" and one make a PHONE_INTL candidate that the slow
# rule validated, then dropped in the overlap resolution (the IBAN ranks first).
_VALID_INTERNATIONAL = ["442079460958", "4930901820", "12125550100", "3225123456", "41446681800"]


@SETTINGS
@given(
    number=st.sampled_from(_VALID_INTERNATIONAL),
    country_lead=st.sampled_from([("DE", ""), ("GB", "NWBK"), ("FR", "3000")]),
    before=st.sampled_from(["", "IBAN ", "Virement sur ", "RIB : "]),
    after=st.sampled_from(["", " merci", ", tél. +44 20 7946 0958", "."]),
    kind=st.sampled_from(["re", "hyperscan"]),
)
def test_a_phone_inside_an_iban_is_never_a_finding(
    number: str, country_lead: tuple[str, str], before: str, after: str, kind: str
) -> None:
    country, lead = country_lead
    bban = lead + "00" + number
    compact = country + stdnum_iban.calc_check_digits(country + "00" + bban) + bban
    written = " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    start, end = len(before), len(before) + len(written)
    text = before + written + after
    scan = engine(kind)
    phone_candidates = [
        text[s:e]
        for name, s, e in scan.matcher.shapes(text, text.encode())
        if name is ShapeName.PHONE_INTL and start < s < end
    ]
    assert phone_candidates  # the slow rule's phone, valid:
    assert validators.phone_intl_value(phone_candidates[0]) is not None
    findings = scan.scan_fields([TextField(text)])
    ibans = [(f.start, f.end) for f in findings if f.kind is IdentifierKind.IBAN]
    assert ibans == [(start, end)]
    phones = [f for f in findings if f.kind is IdentifierKind.PHONE]
    assert all(f.start >= end for f in phones)
    assert len(phones) == (1 if "+44" in after else 0)


def test_within_sole_iban_only_when_nothing_may_outrank_the_iban() -> None:
    iban = (ShapeName.IBAN, 10, 50)
    phone = (ShapeName.PHONE_INTL, 20, 40)
    ibans = [(10, 45, 50)]  # the span kept is shorter than the candidate
    assert _within_sole_iban(20, 40, ibans, [iban, phone])
    assert not _within_sole_iban(40, 48, ibans, [iban, phone])  # reaches past the span
    assert not _within_sole_iban(5, 20, ibans, [iban, phone])
    # Another NIR or IBAN candidate overlapping the IBAN could outrank it: validate.
    for other in [(ShapeName.NIR, 30, 60), (ShapeName.IBAN, 0, 12), (ShapeName.IBAN, 10, 30)]:
        assert not _within_sole_iban(20, 40, ibans, sorted([iban, phone, other]))
    # Other shapes rank after an IBAN: they change nothing.
    assert _within_sole_iban(20, 40, ibans, [iban, phone, (ShapeName.EMAIL, 12, 60)])
