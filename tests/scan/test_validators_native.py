"""gateway.scan._validators (the hot candidate validators in C) against the Python they
replace (validators.py's `_*_py` functions, the oracle): the same answers on arbitrary
text and offsets, on every date, phone, NIR and IBAN candidate of the corpus and the dense
benchmark orders, and before every date for the birth label; "undecided" only where
documented; used by the compiled build; clear errors that never quote the text.

(tests/scan/test_properties.py and test_detect_fast_paths.py compare the public
validators, C included, with stdnum and with the birth-label regex; tests/scan/
test_compiled.py runs the plain-Python source.)"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from datetime import date
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from stdnum.fr import nir as stdnum_nir

if os.environ.get("PORTIQUE_PURE_PYTHON") == "1":  # built without a compiler: no C module
    pytest.skip("PORTIQUE_PURE_PYTHON=1 build", allow_module_level=True)

from gateway.scan import _validators, validators
from gateway.scan._fold import fold
from gateway.scan.matchers import HyperscanMatcher
from gateway.scan.shapes import ShapeName
from tests.scan.corpus import (
    corpus_and_dense_orders,
    make_iban,
    write_iban,
    write_nir,
    write_phone,
)

SECRET = "Eloise DUPONT 284037510812347"  # patient data: never in an error
MONTHS = tuple(validators._MONTHS)
_DATES = (ShapeName.DATE_NUMERIC, ShapeName.DATE_ISO, ShapeName.DATE_WORDS)
_CHECKED = (*_DATES, ShapeName.PHONE_FR, ShapeName.NIR, ShapeName.IBAN)


def native() -> _validators.Validators:
    assert validators._NATIVE is not None
    return validators._NATIVE


@lru_cache(maxsize=1)
def matcher() -> HyperscanMatcher:
    return HyperscanMatcher([])


def test_the_native_module_is_built_and_used() -> None:
    """setup.py builds it with the compiled scan core: validators.py must not fall back to
    its Python unnoticed, and must build it with its own birth labels."""
    assert str(_validators.__file__).endswith(".so")
    assert isinstance(validators._NATIVE, _validators.Validators)
    for method in (
        validators._NATIVE_BIRTH_LABEL,
        validators._NATIVE_NUMERIC_DATE_ISO,
        validators._NATIVE_DATE_ISO,
        validators._NATIVE_PHONE_FR_VALUE,
        validators._NATIVE_NIR_KEY_VALID,
        validators._NATIVE_IBAN_VALUE,
    ):
        assert method is not None and getattr(method, "__self__", None) is validators._NATIVE


# -- the oracle ----------------------------------------------------------------------


def _numeric_date_undecided(candidate: str) -> bool:
    """Where the C leaves a DATE_NUMERIC reading to Python: three parts, one of them not
    1-4 ASCII digits (int()'s rules)."""
    parts = re.split(r"[/.-]", candidate)
    return len(parts) == 3 and not all(re.fullmatch(r"[0-9]{1,4}", part) for part in parts)


def _date_iso_undecided(candidate: str) -> bool:
    """Where the C leaves a date_iso reading to Python: anything but "dddd-dd-dd" and
    "d[er] month dddd" (1-4 ASCII digits each)."""
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", candidate):
        return False
    if re.match(r"[0-9]{4}-", candidate):
        return True
    words = candidate.lower().split()
    return not (
        len(words) == 3
        and words[1] in validators._MONTHS
        and re.fullmatch(r"[0-9]{1,4}", words[0].removesuffix("er"))
        and re.fullmatch(r"[0-9]{1,4}", words[2])
    )


def _outcome(read: Callable[..., object], *args: object) -> object:
    """What `read(*args)` returns, or the type it raises (the Python date readers let a
    year past a C int overflow: no shape matches one, and the C leaves it to them)."""
    try:
        return read(*args)
    except OverflowError as error:
        return type(error)


def check_span(text: str, start: int, end: int) -> None:
    """C and Python agree on text[start:end] as a candidate, and at `start` and `end` for
    the birth label; the public functions answer the Python's."""
    candidate, c = text[start:end], native()
    before = text[max(0, start - validators.LABEL_WINDOW) : start]
    ascii_text = text.isascii()
    for offset in (start, end):
        expected_label = validators._is_birth_label_before_py(text, offset)
        found = c.is_birth_label_before(text, offset)
        assert found is (expected_label if ascii_text else None)
        assert validators.is_birth_label_before(text, offset) is expected_label

    expected_day = _outcome(validators._numeric_date_iso_py, candidate)
    day = c.numeric_date_iso(text, start, end)
    if not ascii_text or _numeric_date_undecided(candidate):
        assert day == ""
    else:
        assert day == expected_day
    assert _outcome(validators.numeric_date_iso_at, text, start, end) == expected_day
    assert _outcome(validators.numeric_date_iso, candidate) == expected_day

    expected_day = _outcome(validators._date_iso_py, candidate)
    day = c.date_iso(text, start, end)
    assert day == ("" if not ascii_text or _date_iso_undecided(candidate) else expected_day)
    assert _outcome(validators.date_iso_at, text, start, end) == expected_day
    assert _outcome(validators.date_iso, candidate) == expected_day

    expected = validators._phone_fr_value_py(candidate)
    assert c.phone_fr_value(text, start, end) == (expected if ascii_text else "")
    assert validators.phone_fr_value(candidate) == expected

    expected = validators._nir_value_py(candidate, "")  # no label: the key alone
    assert c.nir_key_valid(text, start, end) == (expected if ascii_text else "")
    expected = validators._nir_value_py(candidate, before)
    assert validators.nir_value_at(text, start, end) == expected
    assert validators.nir_value(candidate, before) == expected
    # engine.py used to pass the 40 characters before the NIR, of which it read 32
    assert expected == validators._nir_value_py(candidate, text[max(0, start - 40) : start])

    expected_iban = validators._iban_value_py(candidate)
    assert c.iban_value(text, start, end) == (expected_iban if ascii_text else "")
    assert validators.iban_value_at(text, start, end) == expected_iban
    assert validators.iban_value(candidate) == expected_iban


# -- arbitrary text ------------------------------------------------------------------

_LABELS = [
    *validators._BIRTH_WORDS,
    *validators._BIRTH_WORDS_OPEN,
    "Nee",
    "NEE (E)",
    "Date de Naissance",
    "DDN",
    "BORN",
    "Ne(E)",
    "nele",
    "le",
    "Le",
    "LE",
    "nir",
    "n ss",
    "secu",
    "matricule",
]
_PIECES = st.sampled_from(
    [*"0123456789", "00", "01", "02", "12", "29", "30", "31", "84", "99", "1900", "1984"]
    + ["2000", "2024", "0000", "9999", "12345", " ", "  ", ".", "/", "-", ":", ",", "(", ")"]
    + ["+", "+33", "0033", "(0)", "2A", "2B", "2a", "2b", "FR76", "fr", "GB", "DE", "A", "Z"]
    + ["x", "_", "mars", "MAI", "Decembre", "aout", "1er", "1ER", "er", "\n", "\t", "\x1c"]
    + ["\x0b", "\x7f", "\x00", "fevrier ", " janvier ", "12 mars 1984", "1er mai 84"]
    + ["06 12 34 56 78", "+33 6 12 34 56 78", "1 84 03 75 108 123 47", "2840375108123 47"]
    + _LABELS
)
_NON_ASCII = st.sampled_from(["é", "١", "°", "\u2019", "ß", "\u212a"])


@st.composite
def valid_identifiers(draw: st.DrawFn) -> str:
    """A key-valid NIR (Corsica too), an IBAN or a phone number, in a written form."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    kind = draw(st.sampled_from(["nir", "iban", "phone"]))
    if kind == "nir":
        dept = draw(st.sampled_from(["2A", "2B", "75", "99", "01"]))
        body = f"{rng.choice('12')}{rng.randint(0, 99):02d}{rng.randint(1, 12):02d}{dept}"
        body += f"{rng.randint(0, 999):03d}{rng.randint(0, 999):03d}"
        nir = body + stdnum_nir.calc_check_digits(body)
        return write_nir(rng, nir.lower() if draw(st.booleans()) else nir)
    if kind == "iban":
        iban = write_iban(rng, make_iban(rng, draw(st.sampled_from(["FR", "DE"]))))
        return iban + draw(st.sampled_from(["", " CMD1", " AB", " 1234 X"]))
    phone = "0" + rng.choice("123456789") + "".join(rng.choice("0123456789") for _ in range(8))
    return write_phone(rng, phone)


@st.composite
def texts_and_spans(draw: st.DrawFn) -> tuple[str, int, int]:
    pieces = st.one_of(
        _PIECES,
        valid_identifiers(),
        st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=6),
    )
    if draw(st.integers(0, 9)) == 0:
        pieces = st.one_of(pieces, _NON_ASCII)
    text = "".join(draw(st.lists(pieces, max_size=14)))
    start = draw(st.integers(0, len(text)))
    end = draw(st.integers(start, len(text)))
    return text, start, end


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=texts_and_spans())
@example(case=("ne(e) le 01/02/1990", 9, 19))
@example(case=("nele 01/02/1990", 5, 15))
@example(case=("Date de naissance : le  29/02/1900", 24, 34))
@example(case=("xDDN 29/02/2000", 5, 15))
@example(case=("née 29.02.84", 4, 12))
@example(case=("DOB 31-04-2020 born 1984-02-29", 4, 14))
@example(case=("x" * 50 + "naissance: 1984-02-29", 61, 71))
@example(case=("1er Mars 1984", 0, 13))
@example(case=("29 fevrier 1900, 29\x1cFEVRIER\t2000", 17, 32))
@example(case=("31 avril 2024", 0, 13))
@example(case=("1984-3 mars 1984", 0, 16))
@example(case=("tel +33 (0)6 12 34 56 78", 4, 24))
@example(case=("  +33 0 6 12 34 56 78", 0, 21))
@example(case=("0033612345678", 0, 13))
@example(case=("0000612345678", 0, 13))
@example(case=("2 84 03 2A 108 123 47", 0, 21))
@example(case=("1 23 12 2b 000 000 97", 0, 21))
@example(case=("FR76 3000 6000 0112 3456 7890 189 CMD1", 0, 38))
def test_native_and_python_agree_on_arbitrary_text(case: tuple[str, int, int]) -> None:
    check_span(*case)


@settings(max_examples=1500, deadline=None)
@given(text=st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=60))
def test_native_and_python_agree_at_every_offset_of_arbitrary_ascii(text: str) -> None:
    for end in range(len(text) + 1):
        assert native().is_birth_label_before(text, end) is (
            validators._is_birth_label_before_py(text, end)
        )
    for start in range(0, len(text) + 1, 3):
        check_span(text, start, len(text))


# The birth-label rule (validators.py's comment), searched for forwards in the window.
_BIRTH_LABEL_RULE = re.compile(
    r"(?:\b(?:"
    + "|".join(re.escape(word) for word in validators._BIRTH_WORDS)
    + r")\b|\b(?:"
    + "|".join(re.escape(word) for word in validators._BIRTH_WORDS_OPEN)
    + r"))[ :.,-]{0,4}(?:le[ :]{1,3})?\Z"
)


@lru_cache(maxsize=64)
def _windowed(window: int) -> _validators.Validators:
    return _validators.Validators(
        validators._BIRTH_WORDS, validators._BIRTH_WORDS_OPEN, window, MONTHS
    )


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.sampled_from(_LABELS + [" ", ":", ".", "-", "x", "_", "7", "\n"])),
    window=st.integers(0, 45),
    data=st.data(),
)
@example(pieces=["dob", ": "], window=5, data=None)
@example(pieces=["xdob", ": "], window=5, data=None)
@example(pieces=["xdob", ": "], window=6, data=None)
def test_the_window_is_the_rules_at_any_width(
    pieces: list[str], window: int, data: st.DataObject | None
) -> None:
    """The window's start counts as a word boundary, and nothing before it is read: with
    the production window (40) no label reaches it, so smaller ones are checked here."""
    text = "".join(pieces)
    ends = [len(text)] if data is None else [len(text), data.draw(st.integers(0, len(text)))]
    for end in ends:
        expected = _BIRTH_LABEL_RULE.search(text[max(0, end - window) : end].lower()) is not None
        assert _windowed(window).is_birth_label_before(text, end) is expected
        if window == validators.BIRTH_LABEL_WINDOW:
            assert validators._is_birth_label_before_py(text, end) is expected


def test_iban_remainders_of_any_character_are_pythons() -> None:
    """iban_checksum_valid reads any character (a code below "0" steps the remainder
    negative, which Python's modulo brings back): the C must agree on such text too, where
    a valid remainder is one chance in 97."""
    rng, c = random.Random(3), native()
    alphabet = "0123456789ABCDEFXYZabz -./(:+*!#"
    for _ in range(30_000):
        text = rng.choice(["FR76", "DE", "GB33", "fr1"]) + "".join(
            rng.choice(alphabet) for _ in range(rng.randint(11, 34))
        )
        assert c.iban_value(text, 0, len(text)) == validators._iban_value_py(text), text


def test_leap_years_and_month_lengths() -> None:
    c = native()
    for year in (1900, 1984, 2000, 2023, 2024, 2100):
        for month in range(0, 14):
            for day in range(0, 33):
                text = f"{day:02d}/{month:02d}/{year}"
                assert c.numeric_date_iso(text, 0, len(text)) == (
                    validators._numeric_date_iso_py(text)
                )
                text = f"{year}-{month:02d}-{day:02d}"
                assert c.date_iso(text, 0, len(text)) == validators._date_iso_py(text)
    assert c.numeric_date_iso("29/02/00", 0, 8) == "2000-02-29"
    assert c.numeric_date_iso("29/02/31", 0, 8) is None  # 1931


# -- the corpus and the dense orders -------------------------------------------------


def _corpus_texts() -> list[str]:
    fields = corpus_and_dense_orders(300, orders=200)
    return [fold(field.text) for message in fields for field in message]


def test_native_and_python_agree_on_the_corpus_and_the_dense_orders() -> None:
    seen = dict.fromkeys(_CHECKED, 0)
    labelled = 0
    for folded in _corpus_texts():
        for name, start, end in matcher().shapes(folded, folded.encode("ascii")):
            if name not in seen:
                continue
            seen[name] += 1
            check_span(folded, start, end)
            if name in _DATES:
                labelled += validators.is_birth_label_before(folded, start)
            # The C decides every candidate.
            c, candidate = native(), folded[start:end]
            if name is ShapeName.DATE_NUMERIC:
                assert c.numeric_date_iso(folded, start, end) != "", candidate
            elif name in _DATES:
                assert c.date_iso(folded, start, end) != "", candidate
    assert min(seen.values()) >= 50, seen  # every family, many times
    assert labelled >= 50


# -- errors ----------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors_that_quote_no_text() -> None:
    c = native()
    methods = [c.numeric_date_iso, c.date_iso, c.phone_fr_value, c.nir_key_valid, c.iban_value]
    bad_calls: list[tuple[type[Exception], object, tuple[object, ...]]] = []
    for method in methods:
        bad_calls += [
            (TypeError, method, (SECRET,)),
            (TypeError, method, (SECRET, 0, 1, 2)),
            (TypeError, method, (SECRET.encode(), 0, 1)),
            (TypeError, method, (SECRET, "0", 1)),
            (TypeError, method, (SECRET, 0, 1.0)),
            (ValueError, method, (SECRET, -1, 3)),
            (ValueError, method, (SECRET, 5, 4)),
            (ValueError, method, (SECRET, 0, len(SECRET) + 1)),
            (ValueError, method, (SECRET, 0, 2**70)),
            (ValueError, method, (SECRET, -(2**70), 2**70)),
        ]
    bad_calls += [
        (TypeError, c.is_birth_label_before, (SECRET,)),
        (TypeError, c.is_birth_label_before, (SECRET.encode(), 3)),
        (TypeError, c.is_birth_label_before, (SECRET, None)),
        (ValueError, c.is_birth_label_before, (SECRET, -1)),
        (ValueError, c.is_birth_label_before, (SECRET, len(SECRET) + 1)),
        (ValueError, c.is_birth_label_before, (SECRET, 2**70)),
        (TypeError, _validators.Validators, ((SECRET,), (), 40)),
        (TypeError, _validators.Validators, ([SECRET], (), 40, MONTHS)),
        (TypeError, _validators.Validators, ((SECRET.encode(),), (), 40, MONTHS)),
        (TypeError, _validators.Validators, (("ne",), (), 40, list(MONTHS))),
        (ValueError, _validators.Validators, ((SECRET,), (), 40, MONTHS)),  # upper case
        (ValueError, _validators.Validators, (("née",), (), 40, MONTHS)),
        (ValueError, _validators.Validators, (("",), (), 40, MONTHS)),
        (ValueError, _validators.Validators, (("ne",), (), -1, MONTHS)),
        (ValueError, _validators.Validators, (("ne",), (), 40, MONTHS[:11])),
    ]
    for error, function, args in bad_calls:
        with pytest.raises(error) as raised:
            function(*args)  # type: ignore[operator]
        message = str(raised.value)
        assert SECRET not in message and "DUPONT" not in message and "2840375" not in message
    with pytest.raises(TypeError):
        _validators.Validators(("ne",), (), 40, MONTHS, window=40)  # type: ignore[call-arg]


def test_non_ascii_text_is_left_to_python() -> None:
    """Never folded text: the C answers "undecided" and the Python decides."""
    c, text = native(), "née le 12/03/1984 ١٢"
    assert c.is_birth_label_before(text, 7) is None
    assert validators.is_birth_label_before(text, 7) is False  # "é": no label
    for method in (c.numeric_date_iso, c.date_iso, c.phone_fr_value, c.nir_key_valid):
        assert method(text, 7, 17) == ""
    assert c.iban_value(text, 0, len(text)) == ""
    assert validators.numeric_date_iso_at(text, 7, 17) == "1984-03-12"


def test_labels_are_the_python_constants() -> None:
    """One definition: the C reads the tuples validators.py built it with."""
    custom = _validators.Validators(("dob",), ("x(y)",), 10, MONTHS)
    assert custom.is_birth_label_before("DOB: 1", 5) is True
    assert custom.is_birth_label_before("ne 1", 3) is False
    assert custom.is_birth_label_before("X(Y) le 1", 8) is True
    assert custom.is_birth_label_before("dob        : 1", 13) is False  # past the window
    assert date(1984, 3, 12).isoformat() == native().date_iso("1984-03-12", 0, 10)
