"""gateway.scan._first_names (the roster-name stage's first-name and civility reads, and the
context names' value and roster look-up, in C) against the Python it stands in for
(Engine._first_name_before_py, _first_name_after_py, engine._after_civility_py,
Engine._context_name_py and _patient_for_name_words_py, the oracle): the same answers at
every roster literal hit and every context name of the corpus and of the dense benchmark
orders with a real roster, both directions, in file names and not; on arbitrary texts of
roster names, separators and civilities at every offset, and on word lists; the same
findings with the C and without; used by the compiled build; clear errors that never
quote the text.

(tests/scan/test_detect_fast_paths.py compares engine._after_civility, C in the compiled
build, with a slice-and-regex reading; tests/scan/test_compiled.py runs the plain-Python
source.)"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

if os.environ.get("PORTIQUE_PURE_PYTHON") == "1":  # built without a compiler: no C module
    pytest.skip("PORTIQUE_PURE_PYTHON=1 build", allow_module_level=True)

from gateway.scan import _first_names, build_engine
from gateway.scan import engine as engine_module
from gateway.scan._fold import fold
from gateway.scan.matchers import word_view
from gateway.scan.model import FieldKind, TextField
from gateway.scan.patients import RosterPatient
from tests.scan.corpus import PRACTICE, corpus_and_dense_orders, make_corpus

SECRET = "Eloise DUPONT 284037510812347"  # patient data: never in an error
KEYS: dict[str, Any] = {"digest_key": b"d" * 32, "pseudonym_key": b"p" * 32}


def _bench_scan() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load-tests"))
    try:
        import bench_scan
    finally:
        sys.path.pop(0)
    return bench_scan


@lru_cache(maxsize=1)
def roster_engine() -> engine_module.Engine:
    """An engine over bench_scan's 10,000 synthetic patients and the patients of the
    corpus and dense orders corpus_and_dense_orders(200) returns (as scan_outputs.py)."""
    bench_scan = _bench_scan()
    patients = (
        bench_scan.synthetic_roster(10_000)
        + list(bench_scan.dense_messages(200).patients)
        + make_corpus(200, seed=7)[1]
    )
    return build_engine(patients=patients, practice=PRACTICE, **KEYS)


SMALL_ROSTER = [
    ("Dupont", "Jean"),
    ("Dupont", "Jean-Pierre"),
    ("Dupont", "Marie Claire Anne"),
    ("Dupont", "Pierre"),
    ("Martin", "Anne"),
    ("Martin", "Jean Pierre"),
    ("Le Roux", "Jean"),
    ("Da Silva", "Marie-Claire"),
    ("Nguyen", "Van Anh"),
    ("O'Neil", "Sean"),
    ("Smith", "J2"),
    ("Jean", "Dupont"),  # a first name that is a surname too
]


@lru_cache(maxsize=1)
def small_engine() -> engine_module.Engine:
    patients = [
        RosterPatient(key=f"k-{i}", last_name=last, first_name=first)
        for i, (last, first) in enumerate(SMALL_ROSTER)
    ]
    return build_engine(patients=patients, **KEYS)


def check_hit(engine: engine_module.Engine, folded: str, start: int, end: int, surname: str) -> int:
    """C and Python agree on a surname at folded[start:end], in a file name and not, and
    on a civility before it. Returns how many first names were found."""
    native = engine._native_first_names
    assert native is not None
    found = 0
    for in_file_name in (False, True):
        expected = engine._first_name_before_py(folded, start, surname, in_file_name)
        assert native.before(folded, start, surname, in_file_name) == expected
        found += expected is not None
        pattern = engine_module._FIRST_AFTER_FILE if in_file_name else engine_module._FIRST_AFTER
        expected = engine._first_name_after_py(folded, end, surname, pattern, in_file_name)
        assert native.after(folded, end, surname, in_file_name) == expected
        found += expected is not None
    civilities = engine_module._NATIVE_CIVILITIES
    assert civilities is not None
    assert civilities.after(folded, start) is engine_module._after_civility_py(folded, start)
    return found


def check_words(engine: engine_module.Engine, folded: str) -> int:
    """C and Python agree on the walk over folded's roster words, in a file name and not
    (and on overlapping, nested and repeated words, which the engine never passes).
    Returns how many words were taken."""
    native = engine._native_first_names
    assert native is not None
    owners = engine._literal_owner
    hits = engine.matcher.literals(word_view(folded.encode("ascii")))
    every = sorted((s, e, owners[i]) for i, s, e in hits if owners[i] != engine_module._PRACTICE)
    words = engine._roster_words(folded, hits, engine_module._NO_SPANS)
    taken = 0
    for listed in (words, every):
        for in_file in (False, True):
            expected = engine._full_names_walk_py(folded, listed, in_file)
            assert native.full_names(folded, listed, in_file) == expected
            taken += len(expected or ())
    return taken


def test_the_native_module_is_built_and_used() -> None:
    """setup.py builds it with the compiled scan core: the engine must not fall back to
    its Python unnoticed, and builds it over its own roster tables and word lists."""
    assert str(_first_names.__file__).endswith(".so")
    assert str(engine_module.__file__).endswith(".so"), "the compiled build: make"
    engine = small_engine()
    assert isinstance(engine._native_first_names, _first_names.FirstNames)
    assert isinstance(engine_module._NATIVE_CIVILITIES, _first_names.Civilities)
    after = engine_module._NATIVE_AFTER_CIVILITY
    assert getattr(after, "__self__", None) is engine_module._NATIVE_CIVILITIES
    # The dispatcher is the C (which, unlike the Python, refuses text that is not ASCII).
    with pytest.raises(ValueError, match="must be ASCII"):
        engine_module._after_civility("Mme Éloïse", 4)
    # The tables it reads are the engine's: a full name found, in both orders.
    native = engine._native_first_names
    assert native.after("dupont jean-pierre", 6, "dupont", False) == (7, 18, "jean pierre")
    assert native.before("Jean DUPONT", 5, "dupont", False) == (0, 4, "jean")


def test_the_engine_reads_first_names_through_the_c_with_the_same_findings() -> None:
    """Scanning with the C and with the Python oracle (the engine's attribute set to None)
    gives the same findings, and the C is what the engine calls."""
    engine = small_engine()
    native = engine._native_first_names
    assert native is not None
    calls: list[str] = []

    class Spy:
        def before(self, *args: Any) -> Any:
            calls.append("before")
            return native.before(*args)

        def after(self, *args: Any) -> Any:
            calls.append("after")
            return native.after(*args)

        def full_names(self, *args: Any) -> Any:
            calls.append("full_names")
            return native.full_names(*args)

        def context_name(self, *args: Any) -> Any:
            calls.append("context_name")
            return native.context_name(*args)

        def patient_for_words(self, *args: Any) -> Any:
            calls.append("patient_for_words")
            return native.patient_for_words(*args)

    texts = [
        "Bonjour, patient DUPONT Jean-Pierre, vu avec Martin Anne et Anne MARTIN.",
        "Mme Le Roux : Jean Le Roux, Marie-Claire DA SILVA; Van Anh Nguyen",
        "Jean Pierre Martin, Smith J2, O'Neil Sean, Dupont",
    ]
    fields = [TextField(text) for text in texts] + [
        TextField("dupont_jean-pierre.stl", FieldKind.FILENAME),
        TextField("Martin-Anne_2024.pdf", FieldKind.FILENAME),
        TextField("Jean-Pierre DUPONT", FieldKind.DISPLAY_NAME),  # not simple: normalised
        TextField("Anne Martin", FieldKind.DISPLAY_NAME),
        TextField("Marie Claire Anne DUPONT", FieldKind.PERSON_NAME),  # a whole field
    ]
    with_c = engine.scan_fields(fields)
    try:
        engine._native_first_names = Spy()  # type: ignore[assignment]
        assert engine.scan_fields(fields) == with_c
        assert {"full_names", "context_name", "patient_for_words"} <= set(calls)
        engine._native_first_names = None
        assert engine.scan_fields(fields) == with_c
    finally:
        engine._native_first_names = native
    assert sum(f.kind.value == "name" for f in with_c) >= 11


def test_native_and_python_agree_at_every_roster_hit_of_the_corpus_and_dense_orders() -> None:
    engine = roster_engine()
    owners = engine._literal_owner
    hits = found = 0
    for fields in corpus_and_dense_orders(200):
        for field in fields:
            folded = fold(field.text)
            for index, start, end in engine.matcher.literals(word_view(folded.encode("ascii"))):
                if owners[index] == engine_module._PRACTICE:
                    continue
                found += check_hit(engine, folded, start, end, owners[index])
                hits += 1
    assert hits > 1500 and found > 1500  # names met often, with and without a first name


def test_native_and_python_walk_the_roster_words_of_the_corpus_and_dense_orders_alike() -> None:
    engine = roster_engine()
    taken = sum(
        check_words(engine, fold(field.text))
        for fields in corpus_and_dense_orders(200)
        for field in fields
    )
    assert taken > 1500


def test_scanning_with_and_without_the_c_gives_the_same_findings() -> None:
    engine = roster_engine()
    native = engine._native_first_names
    messages = corpus_and_dense_orders(60)
    with_c = [engine.scan_fields(fields) for fields in messages]
    as_file_names = [[TextField(f.text, FieldKind.FILENAME) for f in fields] for fields in messages]
    with_c_files = [engine.scan_fields(fields) for fields in as_file_names]
    try:
        engine._native_first_names = None
        assert [engine.scan_fields(fields) for fields in messages] == with_c
        assert [engine.scan_fields(fields) for fields in as_file_names] == with_c_files
    finally:
        engine._native_first_names = native


def test_after_civility_agrees_at_every_offset_of_the_corpus() -> None:
    civilities = engine_module._NATIVE_CIVILITIES
    assert civilities is not None
    true = 0
    for fields in corpus_and_dense_orders(40):
        for field in fields:
            folded = fold(field.text)
            for start in range(len(folded) + 1):
                expected = engine_module._after_civility_py(folded, start)
                assert civilities.after(folded, start) is expected
                true += expected
    assert true > 100


_SMALL_WORDS = sorted({w for pair in SMALL_ROSTER for part in pair for w in part.split()})
PIECES = (
    st.sampled_from(_SMALL_WORDS)
    | st.sampled_from(_SMALL_WORDS).map(str.upper)
    | st.sampled_from(_SMALL_WORDS).map(str.lower)
    | st.sampled_from(["jean", "pierre", "anne", "marie", "claire", "le", "roux", "van", "anh"])
    | st.sampled_from([" ", ",", "_", ".", "-", ":", "'", "  ", ", ", " - ", "__", " ,  ", "\n"])
    | st.sampled_from([" ", ",", "_", ".", "-", ":", "'"])
    | st.sampled_from(["M.", "Mme", "mme.", "MLLE.", "Madame", "Mademoiselle", "patiente"])
    | st.sampled_from(["Bonjour", "pour", "nom", "Chere", "cher", "Mr.", "mr", "xm.", "_nom"])
    | st.sampled_from(["jean" * 9, "x" * 40, "7", "2024", "J2", "a_b"])
    | st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=4)
)
TEXTS = st.lists(PIECES, max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(folded=TEXTS)
@example(folded="Jean-Pierre DUPONT, Dupont jean pierre")
@example(folded="x" * 66 + "jean dupont")  # the window cuts "xxx...jean"
@example(folded="x" * 65 + " jean dupont")
@example(folded="dupont " + "x" * 62 + "jean")
@example(folded="dupont ,jean" + "a" * 70)
@example(folded="Mademoiselle : Dupont, xmme Dupont, mme.:: Dupont, nom  :Dupont")
@example(folded="Marie Claire Anne Dupont Marie Claire Anne")
def test_native_and_python_agree_at_every_offset(folded: str) -> None:
    engine = small_engine()
    surnames = sorted({last for last, _ in engine.roster.full_names} | {"zz", "o'neil"})
    for offset in range(len(folded) + 1):
        for surname in surnames:
            check_hit(engine, folded, offset, offset, surname)
    check_words(engine, folded)
    # Every word at every offset: nested, repeated and overlapping ones too.
    words = [(o, min(o + 6, len(folded)), s) for o in range(len(folded) + 1) for s in surnames]
    for in_file in (False, True):
        expected = engine._full_names_walk_py(folded, words, in_file)
        assert engine._native_first_names.full_names(folded, words, in_file) == expected


def _runs(*lengths: int) -> str:
    return " ".join("a" * length for length in lengths)


@lru_cache(maxsize=1)
def window_engine() -> engine_module.Engine:
    """A roster whose surname "long" has first names of one letter in runs of every
    length: wherever the window cuts, what the reads keep is some patient's name."""
    firsts = {_runs(i) for i in range(1, 75)}
    firsts |= {_runs(30, i) for i in range(1, 75)} | {_runs(i, 30) for i in range(1, 75)}
    firsts |= {_runs(30, 30, i) for i in range(1, 75)} | {_runs(i, 30, 30) for i in range(1, 75)}
    patients = [
        RosterPatient(key=f"w-{i}", last_name="Long", first_name=first)
        for i, first in enumerate(sorted(firsts))
    ]
    return build_engine(patients=patients, **KEYS)


def test_native_and_python_agree_wherever_the_window_cuts() -> None:
    """The 70-character windows cut the first names at every character, both ways, with
    every joiner and separator: the C keeps what the Python keeps, and drops a word the
    window cut before a surname."""
    engine = window_engine()
    found = 0
    for k in range(0, 80):
        run = "a" * k
        for joiner in (" ", "-", "'"):
            after = "a" * 30 + joiner + "a" * 30 + joiner + run
            before = run + joiner + "a" * 30 + joiner + "a" * 30
            for separator in (" ", ", ", "_", ".-", "    "):
                for text in (
                    f"long{separator}{after}",
                    f"x long{separator}{'a' * k}{joiner}{'a' * 30}",
                    f"{before}{separator}long",
                    f"x{joiner}{before}{separator}long",
                    f"{'a' * 30}{joiner}{run}{separator}long",
                ):
                    for hit in range(len(text) - 3):
                        if text.startswith("long", hit):
                            found += check_hit(engine, text, hit, hit + 4, "long")
    assert found > 2000


def test_first_names_are_looked_up_lower_cased_and_as_stored() -> None:
    """The tables' words are read when the object is made (a word that no surname's
    container holds is never looked up); a word stored with a capital, not ASCII or not
    a str is never found, as `in` a frozenset of them finds none."""
    full_names = {("dupont", "jean"): ["k1"], ("dupont", "Marc"): ["k2"], ("nom", "eve"): ["k3"]}
    heads = {"dupont": ["jean", "Marc", "élie", 3], "nom": frozenset(["eve"])}
    tails = {"dupont": ("jean", "Marc"), "nom": {"eve"}}
    names = frozenset(p.split(" ", 1)[0] for pair in full_names for p in pair)
    table = _first_names.FirstNames(full_names, heads, tails, names, 70)
    assert table.after("DUPONT JEAN", 6, "dupont", False) == (7, 11, "jean")
    assert table.before("Jean Dupont", 5, "dupont", False) == (0, 4, "jean")
    assert table.after("dupont Marc", 6, "dupont", False) is None
    assert table.after("dupont eve", 6, "dupont", False) is None  # another surname's
    assert table.after("nom eve", 3, "nom", False) == (4, 7, "eve")
    assert table.after("nom eve", 3, "absent", False) is None
    # A surname that is no ASCII str is looked up in the dicts themselves (the C tables of
    # (surname, word) pairs hold the ASCII ones); a word longer than 64 letters is read
    # lower-cased outside the stack buffer.
    long_name = "b" * 80
    full_names.update({("müller", "anna"): ["k4"], ("dupont", long_name): ["k5"]})
    heads.update({"müller": frozenset(["anna"]), "dupont": ["jean", long_name]})
    tails.update({"müller": frozenset(["anna"]), "dupont": ("jean", long_name)})
    names = frozenset(p.split(" ", 1)[0] for pair in full_names for p in pair)
    table = _first_names.FirstNames(full_names, heads, tails, names, 200)
    assert table.after("x Anna", 1, "müller", False) == (2, 6, "anna")
    assert table.before("ANNA x", 5, "müller", False) == (0, 4, "anna")
    assert table.after("x anna", 1, "muller", False) is None
    assert table.after("x jean", 1, "müller", False) is None
    long_text = "dupont " + long_name.upper()
    assert table.after(long_text, 6, "dupont", False) == (7, 87, long_name)
    assert table.before(long_name + " dupont", 81, "dupont", False) == (0, 80, long_name)
    assert table.after(long_text[:-1] + "c", 6, "dupont", False) is None
    with pytest.raises(TypeError):
        _first_names.FirstNames(full_names, {"dupont": 3}, tails, 70)


def test_civility_words_and_tails_are_read_as_given() -> None:
    table = _first_names.Civilities(["mme", "Xy", "_b", "m."], iter(["me", "y", "_b", "m."]), 16)
    assert table.after("Mme Dupont", 4)
    assert table.after("MME:Dupont", 4)
    assert not table.after("xmme Dupont", 5)  # no word boundary before the word
    assert table.after("xmme Dupont", 1) is False
    assert not table.after("Xy Dupont", 3)  # stored with a capital: never found, as the regex
    assert table.after("a_b Dupont", 4) is False  # "_b" after a word character: no \b
    assert table.after(" _b Dupont", 4) is True  # "_" is a word character: \b after " "
    assert table.after("m. Dupont", 3)
    assert not table.after("mme    Dupont", 7)  # four of " :"
    assert not _first_names.Civilities(["mme"], [], 16).after("mme Dupont", 4)  # no tail
    assert not _first_names.Civilities(["mme"], ["me"], 3).after("mme Dupont", 4)  # window
    assert _first_names.Civilities(["mme"], ["me"], 4).after("xmme Dupont", 5)  # cut: \b


def test_bad_arguments_raise_clear_errors_that_quote_no_text() -> None:
    engine = small_engine()
    native = engine._native_first_names
    civilities = engine_module._NATIVE_CIVILITIES
    assert native is not None and civilities is not None
    size = len(SECRET)
    bad_hits: list[tuple[type[Exception], tuple[object, ...]]] = [
        (TypeError, (SECRET.encode(), 0, "dupont", False)),  # bytes, not str
        (TypeError, (SECRET, "0", "dupont", False)),
        (TypeError, (SECRET, 1.0, "dupont", False)),
        (TypeError, (SECRET, 0, b"dupont", False)),
        (TypeError, (SECRET, 0, None, False)),
        (TypeError, (SECRET, 0, "dupont", 1)),  # a bool, not any int
        (TypeError, (SECRET, 0, "dupont")),
        (TypeError, (SECRET, 0, "dupont", False, 1)),
        (ValueError, ("Éloïse DUPONT 2840375", 7, "dupont", False)),  # not folded: not ASCII
        (ValueError, (SECRET, -1, "dupont", False)),
        (ValueError, (SECRET, size + 1, "dupont", False)),
        (ValueError, (SECRET, 2**70, "dupont", False)),
        (ValueError, (SECRET, -(2**70), "dupont", False)),
    ]
    calls = [(method, bad) for method in (native.before, native.after) for bad in bad_hits]
    calls += [
        (civilities.after, bad)
        for bad in [
            (TypeError, (SECRET.encode(), 0)),
            (TypeError, (SECRET, "0")),
            (TypeError, (SECRET,)),
            (TypeError, (SECRET, 0, 1)),
            (ValueError, ("Éloïse DUPONT 2840375", 7)),
            (ValueError, (SECRET, -1)),
            (ValueError, (SECRET, size + 1)),
            (ValueError, (SECRET, 2**70)),
        ]
    ]
    for method, (error, args) in calls:
        with pytest.raises(error) as raised:
            method(*args)  # type: ignore[operator]
        message = str(raised.value)
        assert "DUPONT" not in message and "2840375" not in message and "Elo" not in message
    word = (0, 6, "dupont")
    bad_walks: list[tuple[type[Exception], tuple[object, ...]]] = [
        (TypeError, (SECRET.encode(), [word], False)),
        (TypeError, (SECRET, (word,), False)),  # a tuple, not a list
        (TypeError, (SECRET, [word], 0)),
        (TypeError, (SECRET, [word])),
        (TypeError, (SECRET, [word], False, 1)),
        (TypeError, (SECRET, [(0, 6)], False)),
        (TypeError, (SECRET, [[0, 6, "dupont"]], False)),
        (TypeError, (SECRET, [(0, 6, b"dupont")], False)),
        (TypeError, (SECRET, [(0, "6", "dupont")], False)),
        (TypeError, (SECRET, [word, (0.0, 6, "dupont")], False)),
        (ValueError, ("Éloïse DUPONT 2840375", [word], False)),
        (ValueError, (SECRET, [(-1, 6, "dupont")], False)),
        (ValueError, (SECRET, [(7, 6, "dupont")], False)),
        (ValueError, (SECRET, [(0, size + 1, "dupont")], False)),
        (ValueError, (SECRET, [word, (0, 2**70, "dupont")], False)),
        (ValueError, (SECRET, [(-(2**70), 6, "dupont")], False)),
    ]
    for error, args in bad_walks:
        with pytest.raises(error) as raised:
            native.full_names(*args)  # type: ignore[arg-type]
        message = str(raised.value)
        assert "DUPONT" not in message and "2840375" not in message and "Elo" not in message
    assert native.full_names(SECRET, [], False) is None
    assert native.full_names(SECRET, [(size, size, "dupont")], True) is None
    # At the text's ends, in range: answers, not errors.
    assert native.before(SECRET, 0, "dupont", False) is None
    assert native.after(SECRET, size, "dupont", True) is None
    assert civilities.after(SECRET, size) is False

    tables = (
        engine.roster.full_names,
        engine._first_heads,
        engine._first_tails,
        engine._name_heads,
    )
    with pytest.raises(TypeError):
        _first_names.FirstNames(*tables)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="must be dict"):
        _first_names.FirstNames(list(tables[0]), *tables[1:], 70)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 or more"):
        _first_names.FirstNames(*tables, -1)
    with pytest.raises(TypeError, match="must be str"):
        _first_names.Civilities([b"mme"], [], 16)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="must be ASCII"):
        _first_names.Civilities(["Éloïse"], [], 16)
    for word in ("", "mme:", "mme ", "x" * 33):
        with pytest.raises(ValueError, match="1 to 32 characters") as raised:
            _first_names.Civilities([word], [], 16)
    assert "mme" not in str(raised.value)
    with pytest.raises(ValueError, match="0 or more"):
        _first_names.Civilities([], [], -1)
    with pytest.raises(TypeError):
        _first_names.Civilities(3, [], 16)  # type: ignore[arg-type]


# --- The context names' value and roster look-up (Engine._context_name_py and
# _patient_for_name_words_py, the oracle) ---

_CONTEXT_SHAPES = frozenset(
    {
        engine_module.ShapeName.UPPER_FIRST,
        engine_module.ShapeName.FIRST_UPPER,
        engine_module.ShapeName.CIVILITY_NAME,
        engine_module.ShapeName.INTRO_NAME,
    }
)


def check_context_name(
    engine: engine_module.Engine, folded: str, start: int, end: int
) -> tuple[bool, str | None]:
    """The engine's context name of folded[start:end] (C) is the Python's, and so is the C
    look-up of its words. Returns whether the C left it to the Python (not simple), and
    the patient."""
    native = engine._native_first_names
    assert native is not None
    expected = engine._context_name_py(folded, start, end)
    got = engine._context_name(folded, start, end)
    assert (got.kind, got.start, got.end, got.value, got.patient) == (
        expected.kind,
        start,
        end,
        expected.value,
        expected.patient,
    )
    simple = native.context_name(folded, start, end)
    if simple is not None:
        assert simple == (expected.value, expected.patient)
    words = expected.value.split()
    assert native.patient_for_words(words) == expected.patient
    assert engine._patient_for_name_words_py(words) == expected.patient
    return simple is None, expected.patient


def _both_orders(engine: engine_module.Engine, value: str) -> bool:
    """Whether some cut of the name's words is rostered in both orders."""
    words = value.split()
    full_names = engine.roster.full_names
    return any(
        (" ".join(words[:cut]), " ".join(words[cut:])) in full_names
        and (" ".join(words[cut:]), " ".join(words[:cut])) in full_names
        for cut in range(1, len(words))
    )


@lru_cache(maxsize=1)
def swapped_roster_engine() -> engine_module.Engine:
    """roster_engine's patients, and one in three of the corpus and dense orders'
    patients again with their first and last names swapped: names rostered in both
    orders, under different keys."""
    bench_scan = _bench_scan()
    named = list(bench_scan.dense_messages(200).patients) + make_corpus(200, seed=7)[1]
    swapped = [
        RosterPatient(key=f"swap-{i}", last_name=p.first_name, first_name=p.last_name)
        for i, p in enumerate(named[::3])
        if p.first_name
    ]
    patients = bench_scan.synthetic_roster(10_000) + named + swapped
    return build_engine(patients=patients, practice=PRACTICE, **KEYS)


@pytest.mark.parametrize("swapped", [False, True])
def test_context_names_agree_at_every_name_span_of_the_corpus_and_dense_orders(
    swapped: bool,
) -> None:
    """Every UPPER_FIRST, FIRST_UPPER, CIVILITY_NAME and INTRO_NAME candidate (as found,
    and the pair or trigger span the engine reads), every run of name words (display
    names, file names with hyphens as spaces), and every span the engine's own scan
    asks for, with the 10,000-patient roster (and names rostered in both orders)."""
    engine = swapped_roster_engine() if swapped else roster_engine()
    native = engine._native_first_names
    assert native is not None
    spans: set[tuple[str, int, int]] = set()

    class Spy:
        def before(self, *args: Any) -> Any:
            return native.before(*args)

        def after(self, *args: Any) -> Any:
            return native.after(*args)

        def full_names(self, *args: Any) -> Any:
            return native.full_names(*args)

        def context_name(self, folded: str, start: int, end: int) -> Any:
            spans.add((folded, start, end))
            return native.context_name(folded, start, end)

        def patient_for_words(self, words: list[str]) -> Any:
            assert native.patient_for_words(words) == engine._patient_for_name_words_py(words)
            return native.patient_for_words(words)

    messages = corpus_and_dense_orders(200)
    try:
        engine._native_first_names = Spy()  # type: ignore[assignment]
        for fields in messages:
            engine.scan_fields(fields)
            engine.scan_fields([TextField(f.text, FieldKind.DISPLAY_NAME) for f in fields])
    finally:
        engine._native_first_names = native
    scanned = len(spans)
    for fields in messages:
        for field in fields:
            folded = fold(field.text)
            for name, start, end in engine.matcher.shapes(folded, folded.encode("ascii")):
                if name not in _CONTEXT_SHAPES:
                    continue
                spans.add((folded, start, end))
                for span in (
                    engine_module.name_rules.pair_span(folded, start, end),
                    engine_module.name_rules.trigger_name_span(folded, start, end),
                ):
                    if span is not None:
                        spans.add((folded, span[0], span[1]))
            for text in (folded, folded.replace("-", " ")):
                run: list[tuple[int, int]] = []
                for word in [*engine_module.name_rules.name_words(text, 0, len(text)), (-1, -1)]:
                    if word[0] >= 0:
                        run.append(word)
                    elif run:
                        spans.add((text, run[0][0], run[-1][1]))
                        run = []
    left = patients = both = 0
    for folded, start, end in sorted(spans):
        not_simple, patient = check_context_name(engine, folded, start, end)
        left += not_simple
        if patient is not None:
            patients += 1
            both += _both_orders(engine, folded[start:end].lower())
    assert scanned > 3000 and len(spans) > 6000
    assert patients > 1000 and left > 100 and (both > 100 or not swapped)


BOTH_ORDERS_TEXTS = [
    "Jean DUPONT et Dupont Jean, DUPONT Jean-Pierre",
    "Mme Marie Claire Anne DUPONT, Dupont Marie Claire Anne",
    "Jean Pierre MARTIN; Martin Jean-Pierre; Anne  Martin",
    "Le Roux Jean, Jean LE ROUX, Jean Le-Roux",
    "Da Silva Marie-Claire; MARIE CLAIRE DA SILVA; Marie'Claire Da Silva",
    "O'Neil Sean, Sean O'NEIL, Sean O Neil; Van Anh NGUYEN, Nguyen Van Anh",
    "Smith J2 et J2 SMITH;  dupont   jean ; Jean_Dupont x2 jean dupont",
]


@pytest.mark.parametrize("text", BOTH_ORDERS_TEXTS)
def test_context_names_agree_at_every_span_of_names_in_both_orders(text: str) -> None:
    """Every (start, end) of texts of the small roster's names: both orders, first names
    that are surnames too ("Jean", "Dupont"), multi-word names, hyphens, apostrophes,
    double spaces and "_" (the cases the C leaves to normalise_folded_name)."""
    engine = small_engine()
    left = patients = 0
    for start in range(len(text) + 1):
        for end in range(start, len(text) + 1):
            not_simple, patient = check_context_name(engine, text, start, end)
            left += not_simple
            patients += patient is not None
    assert left > 0 and patients > 0


def test_patients_are_the_least_key_of_the_first_pair_found() -> None:
    """min() of the keys (not the first rostered); (left, right) before (right, left);
    the shortest left part first; an empty list of keys is no patient, as in Python."""
    full_names = {
        ("dupont", "jean"): ["k9", "k10", "k5"],
        ("jean", "dupont"): ["k1"],
        ("le roux", "marie claire"): ["k7"],
        ("marie", "claire le roux"): ["k8"],
        ("vide", "eve"): [],
        ("eve", "vide"): ["k3"],
    }
    heads = frozenset(p.split(" ", 1)[0] for pair in full_names for p in pair)
    table = _first_names.FirstNames(full_names, {}, {}, heads, 70)
    assert table.patient_for_words(["dupont", "jean"]) == "k10"
    assert table.context_name("Dupont JEAN", 0, 11) == ("dupont jean", "k10")
    assert table.patient_for_words(["jean", "dupont"]) == "k1"
    assert table.context_name("x Jean Dupont", 2, 13) == ("jean dupont", "k1")
    assert table.patient_for_words(["marie", "claire", "le", "roux"]) == "k8"
    assert table.patient_for_words(["le", "roux", "marie", "claire"]) == "k7"
    assert table.context_name("Le Roux Marie Claire", 0, 20) == ("le roux marie claire", "k7")
    assert table.patient_for_words(["vide", "eve"]) == "k3"  # [] or ["k3"]
    assert table.patient_for_words(["eve", "vide"]) == "k3"
    assert table.patient_for_words(["jean"]) is None
    assert table.patient_for_words([]) is None
    assert table.patient_for_words(["dupont", "jean", "x"]) is None
    assert table.patient_for_words(["Dupont", "jean"]) is None  # looked up as written
    assert table.patient_for_words(["dupont jean"]) is None
    # Words with spaces: the first is a name head only as a whole word, as in Python.
    assert table.patient_for_words(["le roux", "marie claire"]) is None
    assert table.patient_for_words(["marie", "claire le roux"]) == "k8"
    assert table.context_name("Le Roux", 0, 7) == ("le roux", None)
    assert table.context_name("", 0, 0) is None  # "".isalnum() is False: the Python decides
    for not_simple in ("Jean-Dupont", "jean  dupont", " jean", "jean ", "jean_dupont", "a.b"):
        assert table.context_name(not_simple, 0, len(not_simple)) is None


def _name_words() -> st.SearchStrategy[str]:
    """Words of the 10,000-patient roster (every 37th full name) and of the small one,
    common name words and random ones. Drawn from the engines, so built at the first
    draw (st.deferred), not when the tests are collected."""
    roster_words = sorted(
        {
            w
            for pair in list(roster_engine().roster.full_names)[::37]
            for part in pair
            for w in part.split()
        }
    )
    small_word_lists = sorted({part for pair in small_engine().roster.full_names for part in pair})
    return (
        st.sampled_from(roster_words)
        | st.sampled_from(small_word_lists)
        | st.sampled_from(["jean", "dupont", "marie", "le", "roux", "de", "la", "van", "anh"])
        | st.text(st.sampled_from("abcdejlnoprtu019 -'_"), max_size=6)
    )


NAME_WORDS = st.deferred(_name_words)


@settings(max_examples=300, deadline=None)
@given(words=st.lists(NAME_WORDS, max_size=6), upper=st.booleans())
@example(words=["jean", "dupont"], upper=False)
@example(words=["dupont", "jean", "pierre"], upper=True)
@example(words=["marie", "claire", "anne", "dupont"], upper=False)
@example(words=["", "jean", "dupont"], upper=False)
@example(words=["jean", "", "dupont"], upper=False)
def test_native_and_python_agree_on_word_lists(words: list[str], upper: bool) -> None:
    """Word lists of roster words (of the 10,000-patient roster and the small one) and
    random ones, looked up as they are and as the text of a context name."""
    for engine in (roster_engine(), small_engine()):
        native = engine._native_first_names
        assert native is not None
        assert native.patient_for_words(words) == engine._patient_for_name_words_py(words)
        text = " ".join(words)
        folded = "Mme " + (text.upper() if upper else text.title()) + ", vu"
        for start in (0, 4):
            for end in (4 + len(text), len(folded)):
                check_context_name(engine, folded, start, end)


def test_context_name_and_patient_for_words_bad_arguments_quote_no_text() -> None:
    engine = small_engine()
    native = engine._native_first_names
    assert native is not None
    size = len(SECRET)
    calls: list[tuple[Any, type[Exception], tuple[object, ...]]] = [
        (native.context_name, error, args)
        for error, args in [
            (TypeError, (SECRET.encode(), 0, 6)),
            (TypeError, (SECRET, "0", 6)),
            (TypeError, (SECRET, 0, 6.0)),
            (TypeError, (SECRET, 0)),
            (TypeError, (SECRET, 0, 6, 7)),
            (ValueError, ("Éloïse DUPONT 2840375", 0, 6)),
            (ValueError, (SECRET, -1, 6)),
            (ValueError, (SECRET, 0, size + 1)),
            (ValueError, (SECRET, 7, 6)),  # start after end
            (ValueError, (SECRET, 0, 2**70)),
            (ValueError, (SECRET, -(2**70), 6)),
        ]
    ]
    calls += [
        (native.patient_for_words, error, args)
        for error, args in [
            (TypeError, (tuple(SECRET.split()),)),
            (TypeError, (SECRET,)),
            (TypeError, ([b"eloise", "dupont"],)),
            (TypeError, (["eloise", None],)),
            (TypeError, ()),
            (TypeError, (SECRET.split(), 1)),
            (ValueError, (["éloïse", "dupont", "2840375"],)),
        ]
    ]
    for method, error, args in calls:
        with pytest.raises(error) as raised:
            method(*args)
        message = str(raised.value)
        assert "DUPONT" not in message and "2840375" not in message and "Elo" not in message
        assert "dupont" not in message and "loïse" not in message
    # At the text's ends, in range: answers, not errors.
    assert native.context_name(SECRET, size, size) is None
    assert native.context_name(SECRET, 0, 6) == ("eloise", None)
    tables = (engine.roster.full_names, engine._first_heads, engine._first_tails)
    with pytest.raises(TypeError, match="must be a frozenset"):
        _first_names.FirstNames(*tables, list(engine._name_heads), 70)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="first word of each part") as missing:
        _first_names.FirstNames(*tables, engine._name_heads - {"dupont"}, 70)
    assert "dupont" not in str(missing.value)
