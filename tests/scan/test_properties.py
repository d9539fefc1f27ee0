"""Property tests (hypothesis): every valid NIR/IBAN/phone in every written form is found;
wrong-key numbers are not NIRs unless labelled; both matchers agree on arbitrary text."""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache

import phonenumbers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban
from stdnum.fr import nir as stdnum_nir
from stdnum.iso7064 import mod_97_10

from crypto.pseudonym import TOKEN_PATTERN, patient_token
from gateway.scan import (
    Engine,
    FieldKind,
    IdentifierKind,
    TextField,
    TransformPolicy,
    TypeAction,
    build_engine,
    validators,
)
from gateway.scan._fold import fold
from gateway.scan.matchers import compile_shape
from gateway.scan.shapes import SHAPES, STREET_TYPES

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONTEXT = st.sampled_from(
    ["", "Bonjour,", "merci de noter :", "voir ci-joint", "(urgent)", "le", "pour la 36 en A3,"]
)


@lru_cache(maxsize=2)
def engine(kind: str = "auto") -> Engine:
    return build_engine(digest_key=b"d" * 32, pseudonym_key=b"p" * 32, engine=kind)


def _found(text: str, written: str, kind: IdentifierKind) -> bool:
    start = text.index(written)
    return any(
        f.kind is kind and f.start <= start and start + len(written) <= f.end
        for f in engine().scan_fields([TextField(text)])
    )


@st.composite
def nir_bodies(draw: st.DrawFn) -> str:
    sex = draw(st.sampled_from("12"))
    year = draw(st.integers(0, 99))
    month = draw(st.one_of(st.integers(1, 12), st.integers(20, 99)))
    dept = draw(
        st.one_of(st.integers(1, 95).map(lambda d: f"{d:02d}"), st.sampled_from(["2A", "2B", "97"]))
    )
    commune = draw(st.integers(1, 999))
    order = draw(st.integers(1, 999))
    return f"{sex}{year:02d}{month:02d}{dept}{commune:03d}{order:03d}"


def write_grouped(number: str, separator: str) -> str:
    cuts = [1, 3, 5, 7, 10, 13]
    parts = [number[a:b] for a, b in zip([0, *cuts], [*cuts, len(number)], strict=True)]
    return separator.join(p for p in parts if p)


@SETTINGS
@given(
    body=nir_bodies(), separator=st.sampled_from(["", " ", ".", "-"]), before=CONTEXT, after=CONTEXT
)
def test_every_valid_nir_is_found(body: str, separator: str, before: str, after: str) -> None:
    written = write_grouped(body + stdnum_nir.calc_check_digits(body), separator)
    assert _found(f"{before} {written} {after}", written, IdentifierKind.NIR)


@SETTINGS
@given(
    body=nir_bodies(),
    wrong=st.integers(0, 99),
    label=st.sampled_from(["NIR", "INS :", "n° SS", "N° sécu", "numéro de sécurité sociale :"]),
)
def test_wrong_key_is_not_a_nir_unless_labelled(body: str, wrong: int, label: str) -> None:
    key = f"{wrong:02d}"
    if key == stdnum_nir.calc_check_digits(body):
        key = f"{(wrong + 1) % 100:02d}"
    written = body + key
    assert not _found(f"Référence de lot {written} reçue", written, IdentifierKind.NIR)
    assert _found(f"Patient {label} {written} reçu", written, IdentifierKind.NIR)


@SETTINGS
@given(body=nir_bodies(), key=st.text("0123456789", min_size=2, max_size=2))
def test_nir_check_digits_are_stdnum_s(body: str, key: str) -> None:
    assert validators.nir_check_digits(body + key) == stdnum_nir.calc_check_digits(body + key)


# The birth-label rule as first written: a forward search over the window before a date.
# validators matches its mirror image on the reversed window; both must always agree.
BIRTH_LABEL_FORWARD = re.compile(
    r"(?:\b(?:nee?s?|ddn|date de naissance|naissance|date naiss|dob|birth ?date|date of birth"
    r"|born)\b|\bnee? ?\(e\))[ :.,-]{0,4}(?:le[ :]{1,3})?$"
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.lists(
        st.sampled_from(
            [
                "née",
                "ne",
                "NÉ(E)",
                "né (e)",
                "nées",
                "DDN",
                "Date de naissance",
                "naiss",
                "dob",
                "birth",
                "date",
                " of ",
                "born",
                "x",
                "ano",
                " le",
                "LE",
                "le",
                " ",
                ":",
                ".",
                ",",
                "-",
                "(",
                ")",
            ]
        ),
        max_size=14,
    ).map("".join),
    cut=st.integers(0, 80),
)
def test_birth_label_is_the_forward_rule(text: str, cut: int) -> None:
    """is_birth_label_before (its pre-checks, and its regex on the reversed window) answers
    as the forward search of the rule over the window does."""
    folded = fold(text + " 12/03/1984")
    end = min(cut, len(folded))
    window = folded[max(0, end - validators.BIRTH_LABEL_WINDOW) : end].lower()
    expected = BIRTH_LABEL_FORWARD.search(window) is not None
    assert validators.is_birth_label_before(folded, end) is expected


@st.composite
def ibans(draw: st.DrawFn) -> str:
    country, length = draw(
        st.sampled_from([("FR", 23), ("DE", 18), ("BE", 12), ("ES", 20), ("IT", 0)])
    )
    if country == "IT":  # CIN letter + 22 digits
        bban = draw(st.sampled_from("ABCDEFGHIJ")) + draw(
            st.text("0123456789", min_size=22, max_size=22)
        )
    elif country == "FR":  # bank (5) branch (5) account (11) RIB key (2)
        rib = draw(st.text("0123456789", min_size=21, max_size=21))
        key = 97 - (89 * int(rib[:5]) + 15 * int(rib[5:10]) + 3 * int(rib[10:])) % 97
        bban = f"{rib}{key:02d}"
    else:
        bban = draw(st.text("0123456789", min_size=length, max_size=length))
    return country + stdnum_iban.calc_check_digits(country + "00" + bban) + bban


@SETTINGS
@given(compact=ibans(), grouped=st.booleans(), lower=st.booleans(), before=CONTEXT)
def test_every_valid_iban_is_found(compact: str, grouped: bool, lower: bool, before: str) -> None:
    assert stdnum_iban.is_valid(compact, check_country=False)
    written = (
        " ".join(compact[i : i + 4] for i in range(0, len(compact), 4)) if grouped else compact
    )
    written = written.lower() if lower else written  # typed in lower case: still an IBAN
    assert _found(f"{before} IBAN {written} merci", written, IdentifierKind.IBAN)


@SETTINGS
@given(compact=st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=15, max_size=34))
def test_iban_checksum_is_stdnum_mod_97_10(compact: str) -> None:
    """validators' translated mod 97 is stdnum's, on valid and random strings alike."""
    for text in (compact, _with_key(compact)):
        expected = mod_97_10.is_valid(text[4:] + text[:4])
        assert validators.iban_checksum_valid(text) is expected


def _with_key(compact: str) -> str:
    """`compact` with its 3rd-4th characters replaced by the valid IBAN check digits."""
    body = compact[:2] + "00" + compact[4:]
    return body[:2] + mod_97_10.calc_check_digits(body[4:] + body[:2]) + body[4:]


@SETTINGS
@given(
    digits=st.text("0123456789", min_size=8, max_size=8),
    lead=st.sampled_from("12345679"),
    form=st.sampled_from(["spaces", "dots", "dashes", "plain", "+33", "+33(0)", "0033"]),
    before=CONTEXT,
)
def test_every_french_phone_is_found(digits: str, lead: str, form: str, before: str) -> None:
    national = "0" + lead + digits
    pairs = [national[i : i + 2] for i in range(0, 10, 2)]
    written = {
        "spaces": " ".join(pairs),
        "dots": ".".join(pairs),
        "dashes": "-".join(pairs),
        "plain": national,
        "+33": "+33 " + lead + " " + " ".join(pairs[1:]),
        "+33(0)": "+33 (0)" + lead + " " + " ".join(pairs[1:]),
        "0033": "0033" + national[1:],
    }[form]
    assert _found(f"{before} tél. {written} merci", written, IdentifierKind.PHONE)


@settings(max_examples=40, deadline=None)
@given(region=st.sampled_from(["GB", "DE", "US", "BE", "CH", "ES", "IT", "MA", "SN", "CA"]))
def test_international_phone_with_plus_is_found(region: str) -> None:
    for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
        number = phonenumbers.example_number_for_type(region, kind)
        if number is None:
            continue
        written = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        assert _found(f"Joignable au {written} le soir", written, IdentifierKind.PHONE)


ALPHABET = st.sampled_from(
    list("0123456789 .-/@+()_\n,:'éÉ°")
    + [
        "Mme ",
        "DUPONT ",
        "Jean ",
        "rue ",
        "Dr ",
        "FR76 ",
        "né le ",
        "NIR ",
        "75012 Paris",
        "a",
        "Z",
        "LE ",
        "N'",
        "bis ",
        "pour ",
        "Marie-",
        "x@y.fr",
        "+33 ",
        "06",
        "2A",
        "Pr. ",
        "MARTIN",
        "âgée de ",
        "Âge : ",
        "patient de ",
        " ans",
        "an ",
        " mois",
        "demeurant ",
        "domicilié ",
        "Adresse : ",
        "place ",
        "Lilas ",
    ]
)


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(ALPHABET, max_size=60))
def test_hyperscan_and_re_agree_on_arbitrary_text(parts: list[str]) -> None:
    text = "".join(parts)
    fields = [TextField(text)]
    assert engine("hyperscan").scan_fields(fields) == engine("re").scan_fields(fields)


NAME_TOKENS = st.sampled_from(
    [
        "M.",
        "Mme",
        "Mme.",
        "Mr",
        "MADAME",
        "Patient",
        "patiente",
        "Pour",
        "Bonjour",
        "Nom",
        ":",
        "Dupont",
        "DUPONT",
        "Jean",
        "Jean-Pierre",
        "N'Diaye",
        "D'ARTAGNAN",
        "Le",
        "LE",
        "de",
        "De",
        "La",
        "Van",
        "Merci",
        "Facture",
        "FAC",
        "A",
        "Xy",
        "ROUX",
        "Da",
        "Silva",
    ]
)
NAME_SEPARATORS = st.sampled_from([" ", " ", " ", "  ", ", ", "\n", ": ", " : "])


@settings(max_examples=400, deadline=None)
@given(tokens=st.lists(st.tuples(NAME_TOKENS, NAME_SEPARATORS), max_size=12))
def test_name_span_shortcuts_read_as_the_word_regex(tokens: list[tuple[str, str]]) -> None:
    """trigger_name_span and pair_span (split on the shape's single spaces) give what
    name_words (the word regex) gives, on every CIVILITY/INTRO/pair match."""
    from gateway.scan import names
    from gateway.scan.matchers import compile_shape
    from gateway.scan.shapes import SHAPES, ShapeName

    text = "".join(token + separator for token, separator in tokens)
    for shape in SHAPES:
        pattern = compile_shape(shape)
        for m in pattern.finditer(text):
            start, end = m.span()
            if shape.name in (ShapeName.CIVILITY_NAME, ShapeName.INTRO_NAME):
                expected = names.context_name_span(text, start, end, skip_first=True)
                assert names.trigger_name_span(text, start, end) == expected
            elif shape.name in (ShapeName.UPPER_FIRST, ShapeName.FIRST_UPPER):
                words = names.name_words(text, start, end)
                reference = (
                    None
                    if not words or any(w[0] < 0 for w in words)
                    else (words[0][0], words[-1][1])
                )
                assert names.pair_span(text, start, end) == reference


@given(st.text())
def test_fold_keeps_length(text: str) -> None:
    assert len(fold(text)) == len(text)
    assert fold(text).isascii()


@given(patient=st.text(min_size=1, max_size=40), a=st.text(max_size=20), b=st.text(max_size=20))
def test_tokens_are_stable_and_per_audience(patient: str, a: str, b: str) -> None:
    key = b"k" * 32
    token = patient_token(key, a, patient)
    assert TOKEN_PATTERN.fullmatch(token)
    if a.upper().lower() == a.lower():
        assert patient_token(key, a.upper(), patient) == token  # audiences ignore case
    if a.strip().lower() != b.strip().lower():
        assert token != patient_token(key, b, patient)


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.text(max_size=300), min_size=1, max_size=4),
    kinds=st.lists(st.sampled_from(list(FieldKind)), min_size=4, max_size=4),
)
def test_any_text_scans_and_rewrites_without_error(
    texts: list[str], kinds: list[FieldKind]
) -> None:
    fields = [TextField(text, kind) for text, kind in zip(texts, kinds, strict=False)]
    scan = engine()
    findings = scan.scan_fields(fields)
    for f in findings:
        assert 0 <= f.start < f.end <= len(fields[f.field].text)
    for action in TypeAction:
        result = scan.rewrite_fields(
            fields, findings, TransformPolicy(audience="x", default=action)
        )
        assert len(result.texts) == len(fields)
        if action is TypeAction.KEEP:
            assert result.texts == texts[: len(fields)]


NUMBER_TEXT = st.lists(
    st.sampled_from(
        ["1", "2", "7", "0", "9", "00", "+", "2A", "2b", "FR", "de", "X", " ", ".", "-", "(", "\n"]
    ),
    max_size=60,
).map("".join)


NAME_TEXT = st.lists(
    st.sampled_from(
        ["Jean", "Jean-Pierre", "N'Diaye", "O'Neil", "DUPONT", "N'DIAYE", "AB-CD", "Ab-Cd"]
        + ["Marie", "LE", "Le", "D'", "X", "x", "3", "-", "'", " ", " ", "Mme ", "\n"]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(NUMBER_TEXT, NAME_TEXT))
def test_start_triggers_match_where_every_match_starts(text: str) -> None:
    """A shape re-read at its trigger's start (no `before`, no locator) is found only if its
    trigger matches where each of its matches starts: Hyperscan reports nothing else."""
    for shape in SHAPES:
        if shape.trigger is None or shape.before or shape.locate_start is not None:
            continue
        triggers = [
            compile_shape(replace(shape, pattern=pattern))
            for pattern in (shape.trigger, *shape.extra_triggers)
        ]
        for match in compile_shape(shape).finditer(text):
            assert any(t.match(text, match.start()) for t in triggers), (
                shape.name,
                text,
                match.group(),
            )
    fields = [TextField(text)]
    assert engine("hyperscan").scan_fields(fields) == engine("re").scan_fields(fields)


SPAN_TEXT = st.lists(
    st.sampled_from(
        ["1", "2", "3", "0", "9", "00", "19", "20", "+33 ", "(0) ", "0033", "/", ".", "-", " "]
        + ["1er", "er", " mars ", " mai ", " juin ", "JUILLET", "x", "\n", "Paris", "A"]
    ),
    max_size=40,
).map("".join)


# Street heads: house numbers of any length (the pattern takes 1-4 digits after a word
# boundary), "bis"/"ter" with or without a space, commas, every street type in any case.
STREET_TEXT = st.lists(
    st.one_of(
        st.from_regex(r"\A[0-9]{1,6}\Z"),
        st.sampled_from([" ", ",", ", ", "bis", " bis", "ter", " TER", "a", "x", "-", "\n"]),
        st.sampled_from(STREET_TYPES.split("|")).map(lambda t: f" {t} "),
        st.sampled_from(["Rue ", "AVENUE ", "des Lilas", "Gambetta", "de la Paix"]),
    ),
    max_size=16,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(SPAN_TEXT, NUMBER_TEXT, NAME_TEXT, STREET_TEXT))
def test_matchers_agree_on_candidates(text: str) -> None:
    """Both matchers give the same candidates where a Hyperscan hit is taken without a
    re-read (Shape.span_is_match: ISO dates, dates in words), re-read at its exact start
    only (a phone number's prefix, a numeric date's day and month, a postcode's digits; a
    capitalised word before capitals: "Jean-Pierre DUPONT", "N'Diaye MARTIN"), or at the
    start a locator finds (a street's house number, back from its last digit)."""
    assert any(shape.span_is_match for shape in SHAPES)
    data = text.encode("ascii")
    assert sorted(engine("hyperscan").matcher.shapes(text, data)) == sorted(
        engine("re").matcher.shapes(text, data)
    )


def _name_words_by_match_objects(folded: str, start: int, end: int) -> list[tuple[int, int]]:
    """names.name_words as first written, on the word regex's match objects."""
    from gateway.scan import names

    matches = list(names._WORD.finditer(folded, start, end))
    words: list[tuple[int, int]] = []
    for m in matches:
        word = m.group().lower().strip("'-")
        if word in names.STOPWORDS or len(word) < 2 or not m.group()[0].isupper():
            words.append((-1, -1))
        else:
            words.append((m.start(), m.end()))
    for i in range(len(matches) - 2, -1, -1):
        m = matches[i]
        if (
            words[i][0] < 0
            and words[i + 1][0] >= 0
            and m.group()[0].isupper()
            and m.group().lower() in names.PARTICLES
            and matches[i + 1].start() - m.end() == 1
        ):
            words[i] = (m.start(), m.end())
    return words


@settings(max_examples=500, deadline=None)
@given(
    tokens=st.lists(
        st.tuples(NAME_TOKENS, st.sampled_from([*NAME_SEPARATORS.elements, "-", "'", "9", "_"])),
        max_size=12,
    ),
    cuts=st.tuples(st.integers(0, 200), st.integers(0, 200)),
)
def test_name_words_reads_the_word_regex_matches(
    tokens: list[tuple[str, str]], cuts: tuple[int, int]
) -> None:
    from gateway.scan import names

    text = fold("".join(token + separator for token, separator in tokens))
    start, end = min(cuts), max(cuts)
    assert names.name_words(text, start, end) == _name_words_by_match_objects(text, start, end)
