"""gateway.scan._reread (the shape re-reads in C, with PCRE2) against the Python re-read it
replaces (HyperscanMatcher._reread, with `re`): the same candidates, in the same order,
for the hits Hyperscan reports on arbitrary folded text, on the corpus and on the dense
benchmark orders, and for arbitrary hits of every shape; used by the compiled build;
clear errors that never quote the text.

(tests/scan/test_matchers.py compares the matcher, C re-reads included, with finditer over
the whole text; tests/scan/test_compiled.py runs the plain-Python source, which re-reads
with `re`.)"""

from __future__ import annotations

import os
import struct
from functools import lru_cache

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

if os.environ.get("PORTIQUE_PURE_PYTHON") == "1":  # built without a compiler: no C module
    pytest.skip("PORTIQUE_PURE_PYTHON=1 build", allow_module_level=True)

from gateway.scan import _reread
from gateway.scan._fold import fold
from gateway.scan.matchers import (
    _EXACT,
    _LOCATE,
    _SPAN,
    _WINDOW,
    HyperscanMatcher,
    pcre2_pattern,
    split_by_field,
)
from gateway.scan.shapes import SHAPES
from tests.scan.corpus import corpus_and_dense_orders
from tests.scan.test_matchers import TOKENS

SECRET = "Eloise DUPONT 284037510812347"  # patient data: never in an error


@lru_cache(maxsize=1)
def matcher() -> HyperscanMatcher:
    return HyperscanMatcher([])


def _both(folded: str, groups: list[tuple[int, list[int]]]) -> tuple[list, list]:  # type: ignore[type-arg]
    """The C and Python re-reads' candidates; checks their split by field on the way."""
    data = folded.encode("ascii")
    rereader = matcher()._rereader
    assert rereader is not None
    native, python = rereader.candidates(data, groups), matcher()._reread(folded, data, groups)
    starts, lengths = _fields(folded)
    by_field = rereader.candidates_by_field(data, groups, starts, lengths)
    assert by_field == split_by_field(python, starts, lengths)
    packed = _packed(groups)
    assert rereader.candidates_by_field_packed(data, packed, starts, lengths) == by_field
    return native, python


def _packed(groups: list[tuple[int, list[int]]]) -> bytes:
    """The groups as `_hyperscan.Database.scan_grouped_packed` packs them."""
    return b"".join(
        struct.pack("=qqq", shape, spans[i], spans[i + 1])
        for shape, spans in groups
        for i in range(0, len(spans), 2)
    )


def _fields(joined: str) -> tuple[list[int], list[int]]:
    """Where the NUL-joined fields of `joined` start, and their lengths."""
    starts, lengths, position = [], [], 0
    for field in joined.split("\0"):
        starts.append(position)
        lengths.append(len(field))
        position += len(field) + 1
    return starts, lengths


def test_the_native_module_is_built_and_used() -> None:
    """`make test` installs libpcre2-dev before building: the matcher must not fall back to
    the `re` re-reads unnoticed."""
    assert str(_reread.__file__).endswith(".so"), "rebuild with libpcre2-dev: make clean venv"
    assert isinstance(matcher()._rereader, _reread.Rereader)
    assert HyperscanMatcher([], reread=False)._rereader is None
    # The shape hits reach it packed from the C Hyperscan module; the binding's as lists.
    assert matcher()._packed_db is matcher()._shape_db
    assert HyperscanMatcher([], native=False)._packed_db is None
    assert _reread.PCRE2_VERSION.startswith("10.")


def test_every_mode_is_exercised() -> None:
    """The shapes use every way of re-reading: exact starts, located starts, windows and
    spans taken as reported."""
    assert {plan.mode for plan in matcher()._plans} == {_EXACT, _LOCATE, _WINDOW, _SPAN}


FOLDED_TEXTS = st.lists(
    TOKENS
    | st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=12)
    | st.just("\0"),  # a message's fields are joined by NUL
    max_size=40,
).map("".join)


@settings(max_examples=1500, deadline=None)
@given(folded=FOLDED_TEXTS)
@example(folded="Jean-Pierre DUPONT, N'Diaye D'ARTAGNAN et l'Marie MARTIN-DUBOIS LE ")
@example(folded="ecrire a jean.dupont@free.fr) ou au 07 10 87 54 21. " * 3 + "x a@cab.fr")
@example(folded="06 12 34 56 78\n")  # PCRE2's \Z would match before the final newline
def test_native_and_python_rereads_agree_on_hyperscan_hits(folded: str) -> None:
    groups = matcher()._shape_db.scan_grouped(folded.encode("ascii"))
    native, python = _both(folded, groups)
    assert native == python


def test_native_and_python_rereads_agree_on_the_corpus_and_the_dense_orders() -> None:
    texts = [
        "\0".join(fold(field.text) for field in fields) for fields in corpus_and_dense_orders(200)
    ]
    found = 0
    for folded in texts:
        groups = matcher()._shape_db.scan_grouped(folded.encode("ascii"))
        native, python = _both(folded, groups)
        assert native == python
        found += len(native)
    assert found > 5000  # every family, many times


@st.composite
def arbitrary_hits(draw: st.DrawFn) -> tuple[str, list[tuple[int, list[int]]]]:
    """Folded text and hits anywhere in it (sorted, within the text, a start reported with
    one or several ends), for any shapes: not only where Hyperscan would report them."""
    folded = draw(FOLDED_TEXTS.filter(lambda text: len(text) >= 3))
    groups = []
    for shape_index in sorted(draw(st.sets(st.integers(0, len(SHAPES) - 1), max_size=5))):
        pairs = draw(
            st.lists(
                st.integers(0, len(folded) - 2).flatmap(
                    lambda start: st.tuples(st.just(start), st.integers(start + 2, len(folded)))
                ),
                min_size=1,
                max_size=8,
                unique=True,
            )
        )
        groups.append((shape_index, [offset for pair in sorted(pairs) for offset in pair]))
    return folded, groups


@settings(max_examples=1000, deadline=None)
@given(case=arbitrary_hits())
def test_native_and_python_rereads_agree_on_arbitrary_hits(
    case: tuple[str, list[tuple[int, list[int]]]],
) -> None:
    folded, groups = case
    native, python = _both(folded, groups)
    assert native == python


def test_candidates_are_split_by_field_sorted_and_within_their_field() -> None:
    rereader = matcher()._rereader
    assert rereader is not None
    joined = "tel 06 12 34 56 78 le 02/11/2024\0\0ecrire a jean@free.fr ou 01 02 03 04 05"
    data = joined.encode("ascii")
    groups = matcher()._shape_db.scan_grouped(data)
    starts, lengths = _fields(joined)
    fields = rereader.candidates_by_field(data, groups, starts, lengths)
    assert [[(str(name), start, end) for name, start, end in f] for f in fields] == [
        [("phone_fr", 4, 18), ("date_numeric", 22, 32)],
        [],
        [("email", 9, 21), ("phone_fr", 25, 39)],
    ]
    # A span across a field's end (no shape's, but a caller's) is dropped, as in Python.
    span_shape = [plan.mode for plan in matcher()._plans].index(_SPAN)  # taken as reported
    across = [(span_shape, [10, 40])]
    assert len(rereader.candidates(data, across)) == 1
    assert rereader.candidates_by_field(data, across, starts, lengths) == [[], [], []]
    assert split_by_field(rereader.candidates(data, across), starts, lengths) == [[], [], []]
    for bad_starts, bad_lengths in [([], []), ([0], [1, 2]), ([5, 0], [1, 1]), ([0], [999])]:
        with pytest.raises(ValueError, match="starts and lengths|fields must be"):
            rereader.candidates_by_field(data, groups, bad_starts, bad_lengths)


def test_python_end_of_text_is_pcre2s_very_end() -> None:
    assert pcre2_pattern(r"\bA{2,30}\Z") == rb"\bA{2,30}\z"
    assert pcre2_pattern("[a-z]+") == b"[a-z]+"


def _plan(pattern: bytes = b"[0-9]+", mode: int = _EXACT, **changes: object) -> tuple:  # type: ignore[type-arg]
    plan = {
        "name": "shape",
        "mode": mode,
        "pattern": pattern,
        "caseless": False,
        "before": 0,
        "max_len": 40,
        "alphabet": b"",
        "locate": b"",
        "offset": 0,
    }
    plan.update(changes)
    return tuple(plan.values())


def test_bad_plans_and_inputs_raise_clear_errors_that_quote_no_text() -> None:
    with pytest.raises(TypeError):
        _reread.Rereader([("shape",)])
    with pytest.raises(TypeError, match="a plan is a tuple"):
        _reread.Rereader([["shape"]])
    with pytest.raises(ValueError, match="invalid plan"):
        _reread.Rereader([_plan(mode=7)])
    with pytest.raises(ValueError, match="invalid plan"):
        _reread.Rereader([_plan(mode=_LOCATE)])  # a located shape needs its locator
    with pytest.raises(ValueError, match="invalid plan"):
        _reread.Rereader([_plan(alphabet=b"\x01" * 3)])
    with pytest.raises(ValueError, match="must not match the empty string"):
        _reread.Rereader([_plan(rb"\b[0-9]*")])
    with pytest.raises(ValueError, match="pattern at offset 7: missing closing parenthesis"):
        _reread.Rereader([_plan(b"[0-9]+(")])
    rereader = _reread.Rereader([_plan()])
    data = SECRET.encode("ascii")
    bad_inputs: list[tuple[type[Exception], object, object]] = [
        (TypeError, SECRET, []),  # str, not bytes
        (TypeError, data, [(0,)]),
        (TypeError, data, [(0, [1, 2, 3])]),  # not pairs
        (ValueError, data, [(1, [0, 2])]),  # no such plan
        (ValueError, data, [(0, [0, len(data) + 1])]),  # past the text
        (ValueError, data, [(0, [5, 9, 1, 3])]),  # not sorted
        (TypeError, data, [(0, ["DUPONT", 3])]),
    ]
    for error, text, groups in bad_inputs:
        with pytest.raises(error) as raised:
            rereader.candidates(text, groups)  # type: ignore[arg-type]
        assert "DUPONT" not in str(raised.value) and "2840375" not in str(raised.value)
    # The packed form: triples of native long long, checked as the lists are.
    field = ([0], [len(data)])
    bad_packed: list[tuple[type[Exception], object, bytes]] = [
        (TypeError, SECRET, _packed([(0, [14, 16])])),  # str, not bytes
        (ValueError, data, _packed([(0, [14, 16])])[:-1]),  # not whole triples
        (ValueError, data, _packed([(1, [0, 2])])),  # no such plan
        (ValueError, data, _packed([(-1, [0, 2])])),
        (ValueError, data, _packed([(0, [0, len(data) + 1])])),  # past the text
        (ValueError, data, _packed([(0, [5, 9, 1, 3])])),  # not sorted
        (ValueError, data, _packed([(0, [9, 5])])),  # ends before it starts
    ]
    for error, text, packed in bad_packed:
        with pytest.raises(error) as raised:
            rereader.candidates_by_field_packed(text, packed, *field)  # type: ignore[arg-type]
        assert "DUPONT" not in str(raised.value) and "2840375" not in str(raised.value)
    assert rereader.candidates_by_field_packed(data, b"", *field) == [[]]
    assert rereader.candidates_by_field_packed(data, _packed([(0, [14, 16])]), *field) == [
        [("shape", 14, 29)]
    ]
    assert rereader.candidates(data, [(0, [14, 16])]) == [("shape", 14, 29)]


def test_a_failed_match_raises_and_quotes_no_text() -> None:
    """A match PCRE2 cannot complete (here: its JIT stack, 1 MB, runs out) raises, and the
    scan fails (the message is held) rather than dropping the candidate."""
    rereader = _reread.Rereader([_plan(rb"(?:(D)|U)*Z", max_len=10**7)])
    data = b"DU" * 500_000
    with pytest.raises(RuntimeError, match=r"PCRE2 error -\d+") as raised:
        rereader.candidates(data, [(0, [0, 2])])
    assert "DU" not in str(raised.value)
