"""gateway.scan._names (the name rules in C) against the Python rules it stands in for
(names._pair_span_py, _trigger_name_span_py, _name_words_py, is_name_word): the same
results on arbitrary name-like text and offsets, and on every name candidate of the
corpus and of the dense benchmark orders; used by the compiled build; clear errors that
never quote the text.

(tests/scan/test_properties.py and test_detect_fast_paths.py compare names.pair_span,
trigger_name_span and name_words, C in the compiled build, with slower readings of the
rules; tests/scan/test_compiled.py runs the plain-Python source.)"""

from __future__ import annotations

import os
from functools import lru_cache

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

if os.environ.get("PORTIQUE_PURE_PYTHON") == "1":  # built without a compiler: no C module
    pytest.skip("PORTIQUE_PURE_PYTHON=1 build", allow_module_level=True)

from gateway.scan import _names, names
from gateway.scan._fold import fold
from gateway.scan.matchers import HyperscanMatcher
from gateway.scan.shapes import ShapeName
from tests.scan.corpus import corpus_and_dense_orders

SECRET = "Eloise DUPONT 284037510812347"  # patient data: never in an error

NAME_SHAPES = (
    ShapeName.UPPER_FIRST,
    ShapeName.FIRST_UPPER,
    ShapeName.CIVILITY_NAME,
    ShapeName.INTRO_NAME,
)


@lru_cache(maxsize=1)
def rules() -> _names.NameRules:
    return _names.NameRules(names.STOPWORDS, names.PARTICLES)


@lru_cache(maxsize=1)
def matcher() -> HyperscanMatcher:
    return HyperscanMatcher([])


def _assert_span_rules_agree(folded: str, start: int, end: int) -> None:
    """Every rule, C and Python, on folded[start:end] (0 <= start <= end <= len)."""
    native = rules()
    assert native.pair_span(folded, start, end) == names._pair_span_py(folded, start, end)
    assert native.trigger_name_span(folded, start, end) == names._trigger_name_span_py(
        folded, start, end
    )
    assert native.is_name_word(folded, start, end) is names.is_name_word(folded, start, end)
    assert native.name_words(folded, start, end) == names._name_words_py(folded, start, end)


_STOPWORD_FORMS = sorted(names.STOPWORDS | names.PARTICLES)
NAME_PIECES = (
    st.sampled_from(
        ["M.", "Mme", "Mme.", "MME", "Madame", "Mr", "Dr", "Pour", "pour", "POUR", "Bonjour"]
        + ["Patient", "patiente", "Nom", "Dupont", "DUPONT", "Jean", "Jean-Pierre", "N'Diaye"]
        + ["D'ARTAGNAN", "O'", "Le", "LE", "le", "De", "DE", "La", "Van", "Mac", "Da", "Silva"]
        + ["A", "B", "Xy", "x", "Mademoiselle", "MADEMOISELLE-", "Radiographies", "Zz'-'"]
        + [" ", " ", " ", " ", "  ", ".", ":", " : ", "..", "'", "-", "--", "\n", "\0", "7"]
    )
    | st.sampled_from(_STOPWORD_FORMS).map(str.capitalize)
    | st.sampled_from(_STOPWORD_FORMS).map(str.upper)
    | st.sampled_from(_STOPWORD_FORMS)
    | st.sampled_from(_STOPWORD_FORMS).map(lambda w: w.capitalize() + "'")
    | st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=4)
)
NAME_TEXTS = st.lists(NAME_PIECES, max_size=16).map("".join)
# Tokens mostly one space apart, as the name shapes match them: a trigger, ":" and "."
# tokens, civilities, particles, names and stopwords in every order.
SHAPED_TEXTS = st.lists(
    st.tuples(
        st.sampled_from(
            ["Pour", "Bonjour", "Mme", "M.", "Mme:", "Nom:", ":", ".", "..", ".:", "Le", "de"]
            + ["DE", "Van", "Dupont", "DUPONT", "Jean", "Jean-", "N'Diaye", "Merci", "X", "Xy"]
            + ["dupont"]
        ),
        st.sampled_from([" ", " ", " ", " ", " ", "  ", ", ", "\n", "-", "'", "."]),
    ),
    max_size=10,
).map(lambda tokens: "".join(token + separator for token, separator in tokens))


@settings(max_examples=2500, deadline=None)
@given(folded=NAME_TEXTS | SHAPED_TEXTS, cuts=st.tuples(st.integers(0, 120), st.integers(0, 120)))
@example(folded="Bonjour Mme Jean DUPONT Merci. De La Fontaine", cuts=(0, 200))
@example(folded="pour : M. Le Roux", cuts=(0, 17))
@example(folded="Le Le-", cuts=(0, 6))
@example(folded="Mademoiselle-'", cuts=(0, 14))
@example(folded=": Dupont Jean . Martin", cuts=(0, 21))
def test_native_and_python_rules_agree_on_any_span(folded: str, cuts: tuple[int, int]) -> None:
    start, end = min(min(cuts), len(folded)), min(max(cuts), len(folded))
    _assert_span_rules_agree(folded, start, end)
    # name_words reads any start and end as the Python's slicing does.
    native = rules()
    assert native.name_words(folded, cuts[0], cuts[1]) == names._name_words_py(
        folded, cuts[0], cuts[1]
    )
    assert native.name_words(folded, start, end + 50) == names._name_words_py(
        folded, start, end + 50
    )


@settings(max_examples=1000, deadline=None)
@given(folded=NAME_TEXTS | SHAPED_TEXTS)
def test_native_and_python_rules_agree_on_the_name_candidates(folded: str) -> None:
    for name, start, end in matcher().shapes(folded, folded.encode("ascii")):
        if name in NAME_SHAPES:
            _assert_span_rules_agree(folded, start, end)


def test_native_and_python_rules_agree_on_the_corpus_and_the_dense_orders() -> None:
    texts = [fold(field.text) for fields in corpus_and_dense_orders(200) for field in fields]
    found = 0
    for folded in texts:
        assert rules().name_words(folded, 0, len(folded)) == names._name_words_py(
            folded, 0, len(folded)
        )
        for name, start, end in matcher().shapes(folded, folded.encode("ascii")):
            if name in NAME_SHAPES:
                _assert_span_rules_agree(folded, start, end)
                found += 1
    assert found > 1000  # every name shape, many times


def test_the_native_module_is_built_and_used() -> None:
    """The compiled build must not fall back to the Python rules unnoticed: the dispatchers
    are the C object's methods (which, unlike the Python, refuse text that is not ASCII)."""
    assert str(_names.__file__).endswith(".so")
    assert str(names.__file__).endswith(".so"), "the compiled build: make"
    assert isinstance(names._NATIVE, _names.NameRules)
    for dispatch in (names.pair_span, names.trigger_name_span, names.name_words):
        with pytest.raises(ValueError, match="must be ASCII"):
            dispatch("Éloïse DUPONT", 0, 13)


def test_words_are_looked_up_lower_cased_and_as_stored() -> None:
    table = _names.NameRules(["abc", "abc", "de", "", "Xy"], iter(["le"]))
    assert not table.is_name_word("Abc", 0, 3)  # a stopword, in any case
    assert not table.is_name_word("ABC'-", 0, 5)
    assert table.is_name_word("Abcd", 0, 4)
    assert table.is_name_word("Xy", 0, 2)  # stored with a capital: never found, as in Python
    assert not table.is_name_word("Xy", 0, 1)
    assert table.pair_span("Le Dupont", 0, 9) == (0, 9)
    assert table.pair_span("De Dupont", 0, 9) is None
    assert _names.NameRules([], []).pair_span("De Dupont", 0, 9) == (0, 9)


def test_bad_arguments_raise_clear_errors_that_quote_no_text() -> None:
    with pytest.raises(TypeError):
        _names.NameRules(names.STOPWORDS)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="stopwords must be str"):
        _names.NameRules([b"le"], [])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="particles must be ASCII"):
        _names.NameRules([], ["Éloïse"])
    with pytest.raises(TypeError):
        _names.NameRules(3, [])  # type: ignore[arg-type]
    native = rules()
    size = len(SECRET)
    bad_calls: list[tuple[type[Exception], tuple[object, ...]]] = [
        (TypeError, (SECRET.encode(), 0, size)),  # bytes, not str
        (TypeError, (SECRET, "0", size)),
        (TypeError, (SECRET, 0, 1.0)),
        (TypeError, (SECRET, 0)),
        (TypeError, (SECRET, 0, size, 1)),
        (ValueError, ("Éloïse DUPONT 2840375", 0, 6)),  # not folded: not ASCII
        (ValueError, (SECRET, -1, size)),
        (ValueError, (SECRET, 0, -1)),
        (ValueError, (SECRET, 2**70, size)),
        (ValueError, (SECRET, 0, -(2**70))),
    ]
    strict_calls: list[tuple[type[Exception], tuple[object, ...]]] = [
        (ValueError, (SECRET, 0, size + 1)),  # past the text
        (ValueError, (SECRET, 5, 4)),  # start after end
        (ValueError, (SECRET, 0, 2**70)),
    ]
    methods = [native.pair_span, native.trigger_name_span, native.is_name_word]
    calls = [(method, bad) for method in [*methods, native.name_words] for bad in bad_calls]
    calls += [(method, bad) for method in methods for bad in strict_calls]
    for method, (error, args) in calls:
        with pytest.raises(error) as raised:
            method(*args)
        message = str(raised.value)
        assert "DUPONT" not in message and "2840375" not in message and "Elo" not in message
    # name_words alone reads an end past the text as the text's end, an empty span as [].
    assert native.name_words(SECRET, 0, size + 9) == names._name_words_py(SECRET, 0, size + 9)
    assert native.name_words(SECRET, 7, 3) == [] == names._name_words_py(SECRET, 7, 3)
    assert native.name_words(SECRET, size + 4, size + 9) == []
