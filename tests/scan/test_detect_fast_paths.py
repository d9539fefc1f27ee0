"""Fast paths of the detection stage agree with the slow rules they stand in for.

Each test states the slow rule (or calls it) and checks, on generated inputs, that the
fast path decides exactly as it does.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from datetime import date
from functools import lru_cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban

from gateway.scan import (
    Engine,
    IdentifierKind,
    TextField,
    build_engine,
    names,
    patients,
    validators,
)
from gateway.scan import engine as engine_module
from gateway.scan._fold import fold
from gateway.scan.engine import (
    _by_rank,
    _count_below,
    _is_address_gap,
    _rank,
    _ranks_before,
    _Span,
    _SpanIndex,
    _within_sole_iban,
)
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


# The regex validators.is_birth_label_before ran before it read the window in place: the
# birth-label rule's mirror image, matched at the start of the reversed window.
_BIRTH_LABEL_REVERSED = re.compile(
    r"(?:[ :]{1,3}el)?[ :.,-]{0,4}(?:\b(?:"
    + "|".join(re.escape(word[::-1]) for word in validators._BIRTH_WORDS)
    + ")|"
    + "|".join(re.escape(word[::-1]) for word in validators._BIRTH_WORDS_OPEN)
    + r")\b"
)
_LABEL_PIECES = [
    *("ne", "NEE", "nes", "nées", "DDN", "date", "de", "naissance", "naiss", "dob"),
    *("birth", "Born", "of", "(e)", "(E)", "le", "Le", "x", "_", "7", "é", "?", "\n"),
    *(" ", " ", ":", ".", ",", "-", "(", ")"),
]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.sampled_from(_LABEL_PIECES), max_size=16),
    cut=st.integers(0, 90),
)
def test_birth_label_reading_is_the_rule(pieces: list[str], cut: int) -> None:
    folded = fold("".join(pieces) + " 12/03/1984")
    end = min(cut, len(folded))
    window = folded[max(0, end - validators.BIRTH_LABEL_WINDOW) : end].lower()
    expected = _BIRTH_LABEL_REVERSED.match(window[::-1]) is not None
    assert validators.is_birth_label_before(folded, end) is expected


# names.pair_span and names.trigger_name_span as written before they read their words in
# place (split on spaces, `.strip()`, `.isupper()`): both must answer alike on any text.
def _pair_span_by_split(folded: str, start: int, end: int) -> tuple[int, int] | None:
    name_follows = False
    for word in reversed(folded[start:end].split(" ")):
        low = word.lower()
        bare = low.strip("'-")
        if (bare in names.STOPWORDS or len(bare) < 2 or not word[:1].isupper()) and not (
            name_follows and word[:1].isupper() and low in names.PARTICLES
        ):
            return None
        name_follows = True
    return start, end


def _trigger_name_span_by_split(folded: str, start: int, end: int) -> tuple[int, int] | None:
    tokens = folded[start:end].split(" ")
    trigger = 0
    while trigger < len(tokens) and not tokens[trigger].rstrip(".:"):
        trigger += 1
    name_start = name_end = -1
    next_is_name = False
    next_start = -1
    token_end = end
    for i in range(len(tokens) - 1, trigger, -1):
        token = tokens[i]
        token_start = token_end - len(token)
        token_end = token_start - 1
        word = token.rstrip(".:")
        if not word:
            continue
        word_end = token_start + len(word)
        low = word.lower()
        bare = low.strip("'-")
        is_name = not (bare in names.STOPWORDS or len(bare) < 2 or not word[0].isupper())
        if (
            not is_name
            and next_is_name
            and word[0].isupper()
            and low in names.PARTICLES
            and next_start - word_end == 1
        ):
            is_name = True
        if is_name:
            if not next_is_name:
                name_end = word_end
            name_start = token_start
        next_is_name = is_name
        next_start = token_start
    return (name_start, name_end) if name_start >= 0 else None


_NAME_PIECES = [
    *("M.", "Mme", "Madame", "Pour", "Bonjour", "Dupont", "DUPONT", "Jean-Pierre", "N'Diaye"),
    *("D'", "-", "'", "Le", "LE", "de", "De", "Van", "Merci", "Nom", "A", "Xy", "x", "7"),
    *(" ", " ", " ", "  ", ".", ":", " : ", "..", "\n", "?"),
]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.sampled_from(_NAME_PIECES), max_size=14),
    cut=st.tuples(st.integers(0, 60), st.integers(0, 60)),
)
def test_name_spans_read_in_place_as_split(pieces: list[str], cut: tuple[int, int]) -> None:
    folded = fold("".join(pieces))
    start, end = min(cut[0], len(folded)), min(max(cut), len(folded))
    assert names.pair_span(folded, start, end) == _pair_span_by_split(folded, start, end)
    expected = _trigger_name_span_by_split(folded, start, end)
    assert names.trigger_name_span(folded, start, end) == expected


def _built_span(
    kind: IdentifierKind, start: int, length: int, patient: str | None, guessed: bool
) -> _Span:
    """A span; a patient guessed from a surname alone where `guessed` (and a patient)."""
    return _Span(kind, start, start + length, "v", patient, guessed and patient is not None)


_NONEMPTY_SPAN = st.builds(
    _built_span,
    st.sampled_from(list(IdentifierKind)),
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=1, max_value=60),
    st.sampled_from([None, "p-a", "p-b"]),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(spans=st.lists(_NONEMPTY_SPAN, min_size=1, max_size=80))
def test_by_rank_is_the_stable_sort_by_rank(spans: list[_Span]) -> None:
    # By identity: among equal ranks, the order of arrival shows.
    assert [id(s) for s in _by_rank(spans)] == [id(s) for s in sorted(spans, key=_rank)]


# Two spans of a cluster drawn close together, so that ties on priority, roster link
# (rostered, guessed or none), length and start all occur.
_CLOSE_SPAN = st.builds(
    _built_span,
    st.sampled_from([IdentifierKind.NAME, IdentifierKind.NIR, IdentifierKind.IBAN]),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=1, max_value=3),
    st.sampled_from([None, "p-a"]),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(span=_CLOSE_SPAN, other=st.one_of(_CLOSE_SPAN, _NONEMPTY_SPAN))
def test_ranks_before_is_the_rank_order(span: _Span, other: _Span) -> None:
    assert _ranks_before(span, other) == (_rank(span) < _rank(other))
    assert _ranks_before(other, span) == (_rank(other) < _rank(span))


# patients.normalise_folded_name as first written: one regex substitution, then strip.
_NAME_SEPARATORS = re.compile(r"[\s\-']+")
_NAME_CHARACTERS = st.sampled_from(
    [" ", "  ", "-", "'", "\t", "\n", "\x1c", "\x85", "\xa0", "\u2003", "\u3000", "a", "B", "é"]
    + ["Jean", "N'DIAYE", "Le", "x1", "_", "."]
)


@settings(max_examples=600, deadline=None)
@given(pieces=st.lists(_NAME_CHARACTERS, max_size=12))
def test_normalised_name_is_the_regex_substitution(pieces: list[str]) -> None:
    text = "".join(pieces)
    expected = _NAME_SEPARATORS.sub(" ", text.lower()).strip()
    assert patients.normalise_folded_name(text) == expected
    assert patients.normalise_name(text) == _NAME_SEPARATORS.sub(" ", fold(text).lower()).strip()


_ADDRESS_GAP = re.compile(r"[ ,\n\r-]{1,4}")  # what _is_address_gap reads in place


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(" ,\n\r-a1.\t", max_size=8),
    cut=st.tuples(st.integers(-2, 10), st.integers(-2, 10)),
)
def test_address_gap_read_in_place_is_the_regex(text: str, cut: tuple[int, int]) -> None:
    start, end = max(0, cut[0]), max(0, min(cut[1], len(text)))
    expected = _ADDRESS_GAP.fullmatch(text, start, end) is not None
    assert _is_address_gap(text, start, end) is expected


# engine._after_civility and engine._street_end as written before they read their text
# in place (a lower-cased slice, .rstrip(), .strip(), .split(), .isupper()).
def _after_civility_by_slice(folded: str, start: int) -> bool:
    tails = ("m.", "mr", "r.", "me", "e.", "le", "ur", "lle", "nt", "te", "er", "re", "om")
    before = folded[max(0, start - 16) : start].lower()
    if not before.rstrip(" :").endswith(tails):
        return False
    return engine_module._CIVILITY_BEFORE.search(before) is not None


_ADDRESS_WORD = re.compile(r"[A-Za-z'-]+")


def _street_end_by_strip(text: str, folded: str, start: int, end: int) -> int:
    type_end = -1
    last_end = start
    taken = False
    for m in _ADDRESS_WORD.finditer(folded, start, end):
        word_start, word_end = m.span()
        word = m.group().lower()
        if type_end < 0:
            if word in engine_module._STREET_TYPE_WORDS:
                type_end = last_end = word_end
            continue
        low = word.strip("'-")
        if low in engine_module._PARTICLES or low.split("'")[0] in engine_module._PARTICLES:
            continue
        first = text[word_start]
        if first.isupper() or first.isdigit():
            last_end = word_end
            taken = True
            continue
        break
    return last_end if taken else start


_STREET_PIECES = [
    *("12", "bis", "rue", "Rue", "AVENUE", "av.", "de", "la", "La", "d'", "D'Alsace", "l'Église"),
    *("Saint-", "Éloi", "des", "Lilas", "x", "-", "'", "é", "É", ",", "Mme", "M.", "Mr", "pour"),
    *("monsieur", "Patiente", "nom", "Bonjour", " ", " ", "  ", ":", " : ", "\n", "²", "Ⅻ"),
]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.sampled_from(_STREET_PIECES), max_size=14),
    cut=st.tuples(st.integers(0, 80), st.integers(0, 80)),
)
def test_civility_and_street_reads_in_place_as_by_slice(
    pieces: list[str], cut: tuple[int, int]
) -> None:
    text = "".join(pieces)
    folded = fold(text)
    start, end = min(cut[0], len(folded)), min(max(cut), len(folded))
    assert engine_module._after_civility(folded, start) is _after_civility_by_slice(folded, start)
    expected = _street_end_by_strip(text, folded, start, end)
    assert engine_module._street_end(text, folded, start, end) == expected


def _outcome(parse: Callable[[str], object], text: str) -> object:
    """What `parse(text)` returns (a date in ISO form), or the type it raises (the date
    parsers let a year past a C int overflow: no shape matches one)."""
    try:
        day = parse(text)
    except OverflowError as error:
        return type(error)
    return day.isoformat() if isinstance(day, date) else day


_DATE_PIECES = st.sampled_from(
    ["0", "1", "2", "9", "00", "01", "12", "29", "30", "31", "02", "1984", "2000", "1900"]
    + ["0000", "2024", "99", "/", "/", ".", "-", "-", " ", "a", "١", "12345", "+1", "er"]
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_DATE_PIECES, max_size=7))
def test_dates_in_iso_form_are_the_date_parsers(pieces: list[str]) -> None:
    """numeric_date_iso and date_iso answer parse_numeric_date and parse_date (then
    isoformat), whatever the text."""
    text = "".join(pieces)
    expected = _outcome(validators.parse_numeric_date, text)
    assert _outcome(validators.numeric_date_iso, text) == expected
    assert _outcome(validators.date_iso, text) == _outcome(validators.parse_date, text)


@settings(max_examples=1500, deadline=None)
@given(year=st.integers(0, 9999), month=st.integers(0, 13), day=st.integers(0, 32))
def test_iso_date_is_the_date_type(year: int, month: int, day: int) -> None:
    try:
        expected: str | None = date(year, month, day).isoformat()
    except ValueError:
        expected = None
    assert validators.iso_date(year, month, day) == expected


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.integers(-5, 30), max_size=12), bound=st.integers(-8, 34))
def test_count_below_is_bisect_left(values: list[int], bound: int) -> None:
    """The compiled binary search the span indexes use instead of the bisect module's."""
    values.sort()  # duplicates included: the count stops before the first equal value
    assert _count_below(values, bound) == bisect.bisect_left(values, bound)
    assert _count_below(values, bound) == sum(1 for value in values if value < bound)


@settings(max_examples=400, deadline=None)
@given(
    spans=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 12)).map(lambda p: (p[0], p[0] + p[1])),
        max_size=8,
    ),
    probe=st.tuples(st.integers(0, 50), st.integers(0, 12)).map(lambda p: (p[0], p[0] + p[1])),
)
def test_span_index_answers_as_a_scan_of_its_spans(
    spans: list[tuple[int, int]], probe: tuple[int, int]
) -> None:
    index = _SpanIndex(spans)
    start, end = probe
    assert bool(index) == bool(spans)
    assert index.overlaps(start, end) == any(s < end and start < e for s, e in spans)
    assert index.contains(start, end) == any(s <= start and end <= e for s, e in spans)
