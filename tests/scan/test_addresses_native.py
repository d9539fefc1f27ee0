"""gateway.scan._names' AddressRules (the street and town trims in C) against the Python
they stand in for (engine._street_end_py, engine._town_end_py, the oracle): the same
results on every STREET, STREET_CONTEXT and POSTCODE_TOWN candidate of the corpus and of
the dense benchmark orders, on arbitrary text and offsets, and on a word's first
character for every code point; used by the compiled build; clear errors that never quote
the text.

(tests/scan/test_detect_fast_paths.py compares engine._street_end, C in the compiled
build, with a slower reading of the rule; tests/scan/test_compiled.py runs the
plain-Python source.)"""

from __future__ import annotations

import os
import sys
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

if os.environ.get("PORTIQUE_PURE_PYTHON") == "1":  # built without a compiler: no C module
    pytest.skip("PORTIQUE_PURE_PYTHON=1 build", allow_module_level=True)

from gateway.scan import _names, engine, names
from gateway.scan._fold import fold
from gateway.scan.matchers import HyperscanMatcher
from gateway.scan.shapes import ShapeName
from tests.scan.corpus import EXTRA_TEMPLATES, corpus_and_dense_orders, make_corpus

SECRET = "Eloise DUPONT 12 rue des Lilas 75012 Paris"  # patient data: never in an error
_STREETS = (ShapeName.STREET, ShapeName.STREET_CONTEXT)
_CHECKED = (*_STREETS, ShapeName.POSTCODE_TOWN)


def native() -> _names.AddressRules:
    assert engine._NATIVE_ADDRESS_RULES is not None
    return engine._NATIVE_ADDRESS_RULES


@lru_cache(maxsize=1)
def matcher() -> HyperscanMatcher:
    return HyperscanMatcher([])


def check_span(text: str, folded: str, start: int, end: int) -> None:
    """C and Python agree on folded[start:end] as a street and as a postcode and town
    (0 <= start <= end <= len(folded) == len(text))."""
    c = native()
    assert c.street_end(text, folded, start, end) == engine._street_end_py(text, folded, start, end)
    assert c.town_end(folded, start, end) == engine._town_end_py(folded, start, end)


def test_the_native_module_is_built_and_used() -> None:
    """The compiled build must not fall back to the Python trims unnoticed: the
    dispatchers call the C object's bound methods (which, unlike the Python, refuse
    folded text that is not ASCII), built over the engine's own word lists."""
    assert str(_names.__file__).endswith(".so")
    assert str(engine.__file__).endswith(".so"), "the compiled build: make"
    assert isinstance(engine._NATIVE_ADDRESS_RULES, _names.AddressRules)
    for method in (engine._NATIVE_STREET_END, engine._NATIVE_TOWN_END):
        assert getattr(method, "__self__", None) is engine._NATIVE_ADDRESS_RULES
    with pytest.raises(ValueError, match="must be ASCII"):
        engine._street_end("12 rue Éloi", "12 rue Éloi", 0, 11)
    with pytest.raises(ValueError, match="must be ASCII"):
        engine._town_end("75012 Évry", 0, 10)


# -- the corpus and the dense orders -------------------------------------------------


def test_native_and_python_agree_on_the_corpus_and_the_dense_orders() -> None:
    """Every candidate as the engine trims it: a STREET_CONTEXT one from its street type
    on (engine._STREET_CONTEXT_HEAD), and from its start too. The clinical notes
    (EXTRA_TEMPLATES) bring the streets with no house number."""
    seen = dict.fromkeys(_CHECKED, 0)
    outcomes = {"whole": 0, "trimmed": 0}
    notes, _ = make_corpus(300, seed=7, templates=EXTRA_TEMPLATES)
    for fields in corpus_and_dense_orders(300, orders=200) + [m.fields for m in notes]:
        for field in fields:
            text = field.text
            folded = fold(text)
            for name, start, end in matcher().shapes(folded, folded.encode("ascii")):
                if name not in seen:
                    continue
                seen[name] += 1
                check_span(text, folded, start, end)
                if name is ShapeName.STREET_CONTEXT:
                    head = engine._STREET_CONTEXT_HEAD.match(folded, start, end)
                    if head is not None:
                        check_span(text, folded, head.end(), end)
                if name in _STREETS:
                    street_end = native().street_end(text, folded, start, end)
                    outcomes["whole" if street_end == end else "trimmed"] += 1
    assert min(seen.values()) > 100, seen  # every shape, many times
    assert min(outcomes.values()) > 50, outcomes  # streets kept whole, and trimmed


# -- arbitrary text ------------------------------------------------------------------

_PIECES = st.sampled_from(
    [*engine._STREET_TYPE_WORDS, *engine._PARTICLES, *engine._TOWN_PARTICLES]
    + ["Rue", "RUE", "Av", "AVENUE", "Rond-Point", "lieu-dit", "av.", "12", "3", "bis", "ter"]
    + ["75012", "38000", "2A004", "Paris", "PARIS", "Saint-Cyr-sur-Loire", "Merci", "merci"]
    + ["Lilas", "lilas", "Éloi", "éloi", "ÉGLISE", "Œuvre", "œuvre", "Ça", "ßtr", "ªb"]
    + ["d'Alsace", "D'ALSACE", "l'Église", "L’Église", "d’", "’", "'", "-", "'-'", "--x", "x'"]
    + ["Saint-", "-Jean", "Jean-", "Zz'-'", "Mme", "M.", "pour", "Bonjour", "cordialement"]
    + [" ", " ", " ", "  ", ",", ", ", ".", ":", "\n", "\r\n", "\t", "\0", "_", "\u202f", "\xa0"]
    + ["²", "Ⅻ", "١", "€", "😀", "ǅ", "\u2160"]
)
_STOPWORD_FORMS = sorted(names.STOPWORDS)
_WORDS = (
    _PIECES
    | st.sampled_from(_STOPWORD_FORMS)
    | st.sampled_from(_STOPWORD_FORMS).map(str.capitalize)
    | st.sampled_from(_STOPWORD_FORMS).map(str.upper)
    | st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=4)
)


@st.composite
def texts_and_spans(draw: st.DrawFn) -> tuple[str, str, int, int]:
    """An original text (any character, most of them folding to letters, "'", "-" and
    digits), its folding, and a span of it."""
    pieces = draw(
        st.lists(st.tuples(_WORDS, st.sampled_from([" ", " ", "", ", ", "\n"])), max_size=16)
    )
    text = "".join(word + separator for word, separator in pieces)
    start = draw(st.integers(0, len(text)))
    end = draw(st.integers(start, len(text)))
    return text, fold(text), start, end


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=texts_and_spans())
@example(case=("12 rue de la Paix merci", "12 rue de la Paix merci", 0, 23))
@example(case=("12 Rue d'Alsace", "12 Rue d'Alsace", 0, 15))
@example(case=("rue l'Église", fold("rue l'Église"), 0, 12))
@example(case=("rue '-' Lilas", "rue '-' Lilas", 0, 13))
@example(case=("rue - Lilas", "rue - Lilas", 0, 11))
@example(case=("rue Lilas", "rue Lilas", 0, 9))  # the last word at the end of the text
@example(case=("rue Lilas", "rue Lilas", 0, 8))  # cut inside it
@example(case=("avenue", "avenue", 0, 6))
@example(case=("75012 Paris Merci", "75012 Paris Merci", 0, 17))
@example(case=("75012 Saint-Cyr-sur-Loire le", "75012 Saint-Cyr-sur-Loire le", 0, 28))
@example(case=("750", "750", 0, 3))  # start + 5 past the end, and the text
@example(case=("75012", "75012", 5, 5))
def test_native_and_python_agree_on_arbitrary_text(case: tuple[str, str, int, int]) -> None:
    check_span(*case)


@settings(max_examples=1500, deadline=None)
@given(
    folded=st.text(st.sampled_from("rRuUeEaAvVdDlLxX19'- ,\n"), max_size=40),
    written=st.lists(st.characters(exclude_categories=()), max_size=40),  # surrogates too
)
def test_native_and_python_agree_on_any_original_text(folded: str, written: list[str]) -> None:
    """Whatever the original's characters (astral, surrogates, Unicode digits and
    capitals that fold to "?"), at every start, as long as it has the folded text's
    length."""
    text = "".join(written[: len(folded)]) + folded[len(written) :]
    for start in range(len(folded) + 1):
        check_span(text, folded, start, len(folded))


def test_a_first_character_reads_as_str_isupper_and_isdigit_at_every_code_point() -> None:
    """The C reads a written word's first character with Py_UNICODE_ISUPPER and
    Py_UNICODE_ISDIGIT: what str.isupper() and str.isdigit() say of that one character,
    for every code point (surrogates too)."""
    c = native()
    folded = "rue Xy"
    taken = 0
    for code in range(sys.maxunicode + 1):
        character = chr(code)
        text = "rue " + character + "y"
        expected = 6 if character.isupper() or character.isdigit() else 0
        assert engine._street_end_py(text, folded, 0, 6) == expected
        assert c.street_end(text, folded, 0, 6) == expected, hex(code)
        taken += expected > 0
    assert taken > 2000  # Unicode's capitals and digits, beyond ASCII's 36


def test_words_are_looked_up_lower_cased_and_as_stored() -> None:
    rules = _names.AddressRules(["rue", "Quai"], ["de", "", "la"], ["merci", "le"], ["le"])
    assert rules.street_end("12 RUE DE Paix x", "12 RUE DE Paix x", 0, 16) == 14
    assert rules.street_end("Quai Paix", "Quai Paix", 0, 9) == 0  # stored with a capital
    # "" is a particle here: a word of "'" and "-" alone is skipped, not the name's end.
    assert rules.street_end("rue '-' Paix", "rue '-' Paix", 0, 12) == 12
    assert native().street_end("rue '-' Paix", "rue '-' Paix", 0, 12) == 0
    assert rules.town_end("75012 Paris le Merci", 0, 20) == 14  # "le": a town particle
    assert rules.town_end("75012 Paris MERCI le", 0, 20) == 11


def test_bad_arguments_raise_clear_errors_that_quote_no_text() -> None:
    words = sorted(engine._PARTICLES)
    with pytest.raises(TypeError):
        _names.AddressRules(words, words, words)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="street_types must be str"):
        _names.AddressRules([b"rue"], words, words, words)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="town_particles must be ASCII"):
        _names.AddressRules(words, words, words, ["Éloïse"])
    with pytest.raises(TypeError):
        _names.AddressRules(3, words, words, words)  # type: ignore[arg-type]
    c, size = native(), len(SECRET)
    span_calls: list[tuple[type[Exception], tuple[object, ...]]] = [
        (TypeError, (SECRET.encode(), 0, size)),  # bytes, not str
        (TypeError, (SECRET, "0", size)),
        (TypeError, (SECRET, 0, 1.0)),
        (TypeError, (SECRET, None, size)),
        (TypeError, (SECRET, 0)),
        (TypeError, (SECRET, 0, size, 1, 2)),
        (ValueError, ("Éloïse DUPONT 12 rue des Lilas", 0, 6)),  # not folded: not ASCII
        (ValueError, (SECRET, -1, size)),
        (ValueError, (SECRET, 0, -1)),
        (ValueError, (SECRET, 0, size + 1)),  # past the text
        (ValueError, (SECRET, 5, 4)),  # start after end
        (ValueError, (SECRET, 2**70, size)),
        (ValueError, (SECRET, 0, 2**70)),
        (ValueError, (SECRET, 0, -(2**70))),
    ]
    calls: list[tuple[type[Exception], object, tuple[object, ...]]] = [
        (error, c.town_end, args) for error, args in span_calls
    ]
    # street_end: the original text first, then the same calls.
    calls += [
        (error, c.street_end, (SECRET, *args)) for error, args in span_calls if len(args) == 3
    ]
    calls += [
        (TypeError, c.street_end, (SECRET, SECRET, 0)),
        (TypeError, c.street_end, (SECRET, SECRET, 0, size, 1)),
        (TypeError, c.street_end, (SECRET.encode(), SECRET, 0, size)),
        (TypeError, c.street_end, (None, SECRET, 0, size)),
        (ValueError, c.street_end, (SECRET + "x", SECRET, 0, size)),  # not its folding
        (ValueError, c.street_end, (SECRET[:-1], SECRET, 0, size - 1)),
        (ValueError, c.street_end, ("", SECRET, 0, 0)),
    ]
    for error, method, args in calls:
        with pytest.raises(error) as raised:
            method(*args)  # type: ignore[operator]
        message = str(raised.value)
        assert "DUPONT" not in message and "Lilas" not in message and "Elo" not in message
        assert "75012" not in message and "Paris" not in message
