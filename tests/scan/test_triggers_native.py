"""The shape triggers gateway/scan/_triggers.h finds by a walk over the bytes, against
Hyperscan compiling the same shapes' trigger expressions: the same hits, on generated
texts around every trigger (short ones, read byte by byte, and longer ones, read 16 bytes
at a time with the edges byte by byte), on a corpus, and on a scan past 64 KB."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.scan._fold import fold
from gateway.scan.matchers import (
    HS_FLAG_CASELESS,
    HS_FLAG_SOM_LEFTMOST,
    native_hyperscan_available,
    native_trigger_names,
)
from gateway.scan.shapes import (
    _CIVILITY,
    _DOCTOR,
    _INTRO,
    _MONTHS,
    SHAPES,
    STREET_TYPES,
    Shape,
    ShapeName,
)
from tests.scan.corpus import make_corpus

pytestmark = pytest.mark.skipif(
    not native_hyperscan_available(), reason="gateway/scan/_hyperscan.c is not built"
)

# Each a hit of one kind or a near miss; mutated below, one character at a time.
_SEEDS = (
    "1 84 12 75 108 123",
    "2840275108123 45",
    "1.84.12.2A.108.123",
    "7-84-12-2b-108-123",
    "5 84 12 75 108 123",
    "9840275108123",
    "FR76 3000 6000 0112",
    "fr7630006000AB",
    "DE12 ABCD EFGH",
    "+33 6 12",
    "0033612",
    "06 12 34",
    "+44 20",
    "0044 20",
    "12/03/2024",
    "1.2.",
    "01-02-",
    "2024-11-02",
    "1999-01-01 ",
    "12 mars 2024",
    "1er Janvier 1999",
    "1ex mars 2024",
    "2ER MAI 1980",
    "3 AOUT 2020",
    "12 rue",
    "3 bis, avenue",
    "4ter bd",
    "5, place",
    "7 rond-point",
    "8 lieu-dit",
    "1 av.",
    "67 ans",
    "1 an",
    "3mois",
    "75012 Paris",
    "123456 A",
    "Jean DUPONT",
    "DUPONT Jean",
    "Marie D'ARC",
    "LE GALL N'Diaye",
    "jean DU",
    "AB C'D",
    "M. DUPONT",
    "Mme Jean",
    "Mlle. X",
    "MME DUPONT",
    "Madame Z",
    "xMme D",
    "1Mr D",
    "Nom : DUPONT",
    "nom: X",
    "Pour M. D",
    "patiente Marie",
    "PATIENT Y",
    "Bonjour Jean",
    "Chere Anne",
    "Dr. Martin",
    "DR MARTIN",
    "Professeur X",
    "_Dr X",
    "Mademoiselle Y",
    "Cher Mr. D",
    "Mme: D",
)
_EDITS = " .:-/,'0123456789aAbBeErRnNsSmMoOiItTuUvVdDzZ_\0+\xe9"
_JOINS = ("", " ", "\0", ", ", "x", "\n")


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    text = list(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(("replace", "insert", "delete")))
        if edit == "insert" or position == len(text):
            text.insert(position, draw(st.sampled_from(_EDITS)))
        elif edit == "replace":
            text[position] = draw(st.sampled_from(_EDITS))
        else:
            del text[position]
    return "".join(text)


_TEXTS = st.lists(st.tuples(_mutated(), st.sampled_from(_JOINS)), min_size=1, max_size=8).map(
    lambda parts: fold("".join(text + join for text, join in parts)).encode("ascii")
)


# The shapes whose triggers the walk finds.
_WALKED = frozenset(
    {
        ShapeName.NIR,
        ShapeName.IBAN,
        ShapeName.PHONE_FR,
        ShapeName.PHONE_INTL,
        ShapeName.DATE_NUMERIC,
        ShapeName.DATE_ISO,
        ShapeName.DATE_WORDS,
        ShapeName.STREET,
        ShapeName.AGE,
        ShapeName.POSTCODE_TOWN,
        ShapeName.UPPER_FIRST,
        ShapeName.FIRST_UPPER,
        ShapeName.CIVILITY_NAME,
        ShapeName.INTRO_NAME,
        ShapeName.DOCTOR,
    }
)


def _walked() -> list[Shape]:
    return [shape for shape in SHAPES if shape.name in _WALKED]


def _expressions(shapes: list[Shape]) -> tuple[list[bytes], list[int], list[int]]:
    """Each shape's trigger expressions as matchers.HyperscanMatcher compiles them."""
    expressions, ids, flags = [], [], []
    for shape in shapes:
        for pattern in (shape.trigger or shape.pattern, *shape.extra_triggers):
            expressions.append(pattern.encode("ascii"))
            ids.append(SHAPES.index(shape))
            flags.append(HS_FLAG_SOM_LEFTMOST | (HS_FLAG_CASELESS if shape.caseless else 0))
    return expressions, ids, flags


def _databases(shapes: list[Shape]) -> tuple[object, object]:
    """(Hyperscan on the expressions, the walk alone) for `shapes`."""
    from gateway.scan import _hyperscan

    hyperscan = _hyperscan.Database(*_expressions(shapes))
    walk = _hyperscan.Database(
        [], [], [], triggers=[(shape.name.value, SHAPES.index(shape)) for shape in shapes]
    )
    return hyperscan, walk


def test_the_digit_led_name_junction_and_title_shapes_are_walked() -> None:
    assert native_trigger_names() == _WALKED


@cache
def _all() -> tuple[object, object]:
    return _databases(_walked())


@cache
def _alone(name: ShapeName) -> tuple[object, object]:
    return _databases([shape for shape in SHAPES if shape.name is name])


@settings(max_examples=1500, deadline=None)
@given(_TEXTS)
def test_the_walk_finds_hyperscans_hits(data: bytes) -> None:
    hyperscan, walk = _all()
    assert walk.scan_grouped(data) == hyperscan.scan_grouped(data)  # type: ignore[attr-defined]
    assert sorted(walk.scan(data)) == sorted(hyperscan.scan(data))  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(_TEXTS, st.sampled_from(sorted(_WALKED)))
def test_each_kind_alone_finds_its_own_hits_only(data: bytes, name: ShapeName) -> None:
    hyperscan, walk = _alone(name)
    assert walk.scan_grouped(data) == hyperscan.scan_grouped(data)  # type: ignore[attr-defined]


def _spellings(alternation: str) -> list[str]:
    """Every spelling of the words of a shapes.py title alternation ("(?:M\\.|Mr\\.?|...)",
    with classes such as "[Pp]" and one optional character before "?")."""
    body = alternation[alternation.index("(?:") + 3 : alternation.index(")")]
    spellings: list[str] = []
    for word in body.split("|"):
        forms = [""]
        position = 0
        while position < len(word):
            if word[position] == "[":
                close = word.index("]", position)
                choices = list(word[position + 1 : close])
                position = close + 1
            elif word[position] == "\\":
                choices = [word[position + 1]]
                position += 2
            else:
                choices = [word[position]]
                position += 1
            if position < len(word) and word[position] == "?":
                choices.append("")
                position += 1
            forms = [form + choice for form in forms for choice in choices]
        spellings.extend(forms)
    return spellings


def _listed_word_texts() -> list[str]:
    """Each word of shapes.py's lists in the context its trigger reads it in: the C walk
    copies the lists, and a word it lacks would never be found."""
    texts = []
    for street_type in STREET_TYPES.split("|"):
        texts += [f"12 {street_type} X", f"3 bis, {street_type.upper()}", f"7{street_type}"]
    for month in _MONTHS.split("|"):
        texts += [f"1er {month} 2024", f"12 {month.upper()} 1999", f"3 {month}2020"]
    texts += ["5 ans", "1 an", "3 mois", "67 ANS)", "2 moisx"]
    for title in _spellings(_CIVILITY) + _spellings(_INTRO) + _spellings(_DOCTOR):
        texts += [f"{title} D", f"{title}. D", f"{title}: D", f"{title} : D", f"x{title} D"]
    return texts


def test_every_listed_word_and_title_is_walked_as_hyperscan_reads_it() -> None:
    hyperscan, walk = _all()
    texts = _listed_word_texts()
    found = 0
    for text in texts:
        data = text.encode("ascii")
        hits = hyperscan.scan_grouped(data)  # type: ignore[attr-defined]
        assert walk.scan_grouped(data) == hits, text  # type: ignore[attr-defined]
        found += bool(hits)
    assert found >= 150  # half the texts hold a hit (the rest near misses): not vacuous


def test_the_walk_and_hyperscan_agree_on_a_corpus_and_past_64_kb() -> None:
    messages, _ = make_corpus(80, seed=13)
    texts = ["\0".join(fold(field.text) for field in message.fields) for message in messages]
    hyperscan, walk = _all()
    found = 0
    for text in texts:
        data = text.encode("ascii")
        hits = hyperscan.scan_grouped(data)  # type: ignore[attr-defined]
        assert walk.scan_grouped(data) == hits  # type: ignore[attr-defined]
        found += len(hits)
    assert found > 400  # the corpus holds every kind: the comparison is not vacuous
    large = "\n".join(texts * 2).encode("ascii")
    assert len(large) > 65536  # scanned with the GIL released, no Hyperscan scratch
    assert walk.scan_grouped(large) == hyperscan.scan_grouped(large)  # type: ignore[attr-defined]


def test_a_database_mixes_expressions_and_walked_triggers() -> None:
    from gateway.scan import _hyperscan

    email = SHAPES.index(next(s for s in SHAPES if s.name is ShapeName.EMAIL))
    phone = SHAPES.index(next(s for s in SHAPES if s.name is ShapeName.PHONE_FR))
    database = _hyperscan.Database(
        [b"@"], [email], [HS_FLAG_SOM_LEFTMOST], triggers=[("phone_fr", phone)]
    )
    data = b"a@b.fr 06 12 34 56 78 +33 6"
    assert database.scan_grouped(data) == [(phone, [7, 9, 22, 25]), (email, [1, 2])]


def test_wrong_triggers_are_refused() -> None:
    from gateway.scan import _hyperscan

    with pytest.raises(ValueError, match="built-in kind"):
        _hyperscan.Database([], [], [], triggers=[("email", 4)])
    with pytest.raises(ValueError, match="built-in kind"):
        _hyperscan.Database([], [], [], triggers=[("nir", -1)])
    with pytest.raises(ValueError, match="non-empty unless triggers"):
        _hyperscan.Database([], [], [])
    with pytest.raises(ValueError, match="never with literals"):
        _hyperscan.Database([b"dupont"], [0], 0, literal=True, triggers=[("nir", 0)])
    with pytest.raises(TypeError):
        _hyperscan.Database([], [], [], triggers="nir")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _hyperscan.Database([], [], [], triggers=[("nir",)])  # type: ignore[list-item]
