"""The engine on hand-written messages: what is found, what is kept, how it is rewritten."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from functools import lru_cache

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from crypto.pseudonym import TOKEN_PATTERN, patient_token, value_digest
from gateway.config import PracticeConfig, Practitioner
from gateway.scan import (
    FieldKind,
    IdentifierKind,
    RosterPatient,
    TextField,
    TransformPolicy,
    TypeAction,
    build_engine,
)
from gateway.scan.engine import (
    _NAME_BEARING,
    _NO_SPANS,
    _PRACTICE,
    Engine,
    _in_start_order,
    _is_upper_char,
    _is_upper_word,
    _PatientTokens,
)
from gateway.scan.matchers import word_view
from tests.scan.corpus import make_corpus

DIGEST_KEY = b"d" * 32
PSEUDONYM_KEY = b"p" * 32
PATIENT = RosterPatient(
    key="p-1",
    last_name="Dupont",
    first_name="Marie",
    birth_date=date(1984, 3, 12),
    phone="06 11 22 33 44",
    email="marie.dupont@example.org",
)
PRACTICE = PracticeConfig(
    name="Cabinet du Parc",
    addresses=("3 place de la Gare, 69002 Lyon",),
    phones=("04 78 00 00 00",),
    emails=("contact@cabinet-parc.fr",),
    practitioners=(Practitioner("Paul Martin", "10005173140"),),
)
ENGINES = ["hyperscan", "re"]


def _engine(engine: str, patients: tuple[RosterPatient, ...] = (PATIENT,)):  # type: ignore[no-untyped-def]
    return build_engine(
        patients=patients,
        practice=PRACTICE,
        digest_key=DIGEST_KEY,
        pseudonym_key=PSEUDONYM_KEY,
        engine=engine,
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_lab_order_rewritten_traps_kept(engine: str) -> None:
    text = (
        "Bonjour, pour Mme Marie DUPONT, née le 12/03/1984, tél. 06 11 22 33 44, "
        "NIR 2 84 03 75 108 123 47, 12 rue des Lilas, 75012 Paris.\n"
        "Couronne zircone sur 36, bridge 36-37, teinte A3.5, RDV le 14/11/2024, 450,00 €, "
        "commande CMD-2024-0456.\n"
        "Dr Paul Martin, RPPS 10005173140, 3 place de la Gare, 69002 Lyon, 04 78 00 00 00, "
        "contact@cabinet-parc.fr"
    )
    scan = _engine(engine)
    fields = [TextField(text)]
    findings = scan.scan_fields(fields)
    kinds = {f.kind for f in findings}
    assert {
        IdentifierKind.NAME,
        IdentifierKind.BIRTH_DATE,
        IdentifierKind.PHONE,
        IdentifierKind.NIR,
        IdentifierKind.ADDRESS,
    } <= kinds
    out = scan.rewrite_fields(fields, findings, TransformPolicy(audience="labo.fr")).texts[0]
    for planted in ("DUPONT", "Marie", "12/03/1984", "06 11 22 33 44", "108 123", "Lilas", "75012"):
        assert planted not in out
    for kept in (
        "36-37",
        "A3.5",
        "14/11/2024",
        "450,00 €",
        "CMD-2024-0456",
        "Dr Paul Martin",
        "10005173140",
        "3 place de la Gare, 69002 Lyon",
        "04 78 00 00 00",
        "contact@cabinet-parc.fr",
    ):
        assert kept in out
    token = scan.token_for_patient("p-1", "labo.fr")
    assert TOKEN_PATTERN.fullmatch(token)
    assert out.count(token) == 2  # the name and the linked phone number


@pytest.mark.parametrize("engine", ENGINES)
def test_nir_links_to_the_patient_whose_roster_nir_it_is_with_or_without_key(
    engine: str,
) -> None:
    keyed = replace(PATIENT, key="p-keyed", nir="2 84 03 75 108 123 47")
    bodied = replace(PATIENT, key="p-body", last_name="Durand", nir="1840575108124")
    fields = [TextField("NIR 284037510812347, puis NIR 1 84 05 75 108 124 31.")]
    both = _engine(engine, (keyed, bodied)).scan_fields(fields)
    assert [(f.kind, f.patient) for f in both] == [
        (IdentifierKind.NIR, "p-keyed"),
        (IdentifierKind.NIR, "p-body"),  # its 13-digit body is the roster's
    ]
    # Without any keyless roster NIR, the body is never looked up: the same findings.
    keyed_only = _engine(engine, (keyed,)).scan_fields(fields)
    assert [(f.kind, f.patient) for f in keyed_only] == [
        (IdentifierKind.NIR, "p-keyed"),
        (IdentifierKind.NIR, None),
    ]
    # A roster NIR with another key does not claim the body.
    other_key = replace(bodied, nir="184057510812440")
    assert [f.patient for f in _engine(engine, (other_key,)).scan_fields(fields)] == [None, None]


@pytest.mark.parametrize("engine", ENGINES)
def test_tokens_stable_per_audience(engine: str) -> None:
    scan = _engine(engine)
    fields = [TextField("Patiente : DUPONT Marie")]
    findings = scan.scan_fields(fields)
    a1 = scan.rewrite_fields(fields, findings, TransformPolicy(audience="labo-a.fr"))
    a2 = scan.rewrite_fields(fields, findings, TransformPolicy(audience="LABO-A.fr"))
    b = scan.rewrite_fields(fields, findings, TransformPolicy(audience="labo-b.fr"))
    assert a1.texts == a2.texts != b.texts
    (entry,) = a1.vault_entries
    assert entry.identity == "DUPONT Marie (12/03/1984)" and entry.patient == "p-1"
    assert "Marie" not in repr(a1) and "DUPONT" not in repr(entry)


@pytest.mark.parametrize(
    ("born", "shown"),
    [
        (date(1984, 3, 12), "DUPONT Marie (12/03/1984)"),
        (date(2001, 12, 1), "DUPONT Marie (01/12/2001)"),
        (date(9999, 12, 31), "DUPONT Marie (31/12/9999)"),
        (date(1000, 1, 1), "DUPONT Marie (01/01/1000)"),
        (date(999, 7, 4), f"DUPONT Marie ({date(999, 7, 4):%d/%m/%Y})"),  # strftime's year
        (None, "DUPONT Marie"),
    ],
)
def test_identity_shows_name_and_birth_date(born: date | None, shown: str) -> None:
    assert replace(PATIENT, birth_date=born).identity() == shown
    assert replace(PATIENT, first_name="", birth_date=None).identity() == "DUPONT"


@given(born=st.dates())
def test_identity_writes_every_birth_date_as_strftime_does(born: date) -> None:
    assert replace(PATIENT, birth_date=born).identity() == f"DUPONT Marie ({born:%d/%m/%Y})"


@pytest.mark.parametrize("engine", ENGINES)
def test_birth_date_of_rostered_patient_found_across_fields(engine: str) -> None:
    scan = _engine(engine)
    fields = [
        TextField("Commande pour Marie Dupont", FieldKind.SUBJECT),
        TextField("Modèle du 1984-03-12, livraison 2024-12-01"),
    ]
    findings = scan.scan_fields(fields)
    dates = [f for f in findings if f.kind is IdentifierKind.BIRTH_DATE]
    assert [(f.field, fields[1].text[f.start : f.end]) for f in dates] == [(1, "1984-03-12")]
    policy = TransformPolicy(
        audience="x", overrides={IdentifierKind.BIRTH_DATE: TypeAction.GENERALISE}
    )
    assert (
        scan.rewrite_fields(fields, findings, policy).texts[1]
        == "Modèle du 1984, livraison 2024-12-01"
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_filename_and_whole_fields(engine: str) -> None:
    scan = _engine(engine)
    fields = [
        TextField("DUPONT_Marie_2024-11-02.stl", FieldKind.FILENAME),
        TextField("LEGRAND^JEAN", FieldKind.PERSON_NAME),
        TextField("PID-778", FieldKind.IDENTIFIER),
        TextField("19500201", FieldKind.DATE_OF_BIRTH),
        TextField("MOREAU_Lucie_haut.stl", FieldKind.FILENAME),
    ]
    findings = scan.scan_fields(fields)
    out = scan.rewrite_fields(
        fields, findings, TransformPolicy(audience="lab", default=TypeAction.REDACT)
    ).texts
    assert out == ["[NOM]_2024-11-02.stl", "[NOM]", "[ID]", "[DDN]", "[NOM]_haut.stl"]


@pytest.mark.parametrize("engine", ENGINES)
def test_findings_carry_no_value(engine: str) -> None:
    scan = _engine(engine)
    findings = scan.scan_fields([TextField("NIR 2 84 03 75 108 123 47, marie.dupont@example.org")])
    assert {f.kind for f in findings} == {IdentifierKind.NIR, IdentifierKind.EMAIL}
    for f in findings:
        assert "284037510812347" not in repr(f) and "dupont" not in repr(f).lower()
        assert len(f.digest) == 16
    assert findings[1].patient == "p-1"  # the e-mail is linked through the roster
    assert scan.patient_for_email("Marie <Marie.Dupont@example.org>") == "p-1"
    assert scan.patient_for_email("other@example.org") is None


def test_finding_digests_are_crypto_value_digests() -> None:
    """The engine computes digests itself (compiled); they are crypto.pseudonym's."""
    scan = _engine("re")
    findings = scan.scan_fields([TextField("NIR 2 84 03 75 108 123 47, marie.dupont@example.org")])
    assert [f.digest for f in findings] == [
        value_digest(DIGEST_KEY, "nir", "284037510812347"),
        value_digest(DIGEST_KEY, "email", "marie.dupont@example.org"),
    ]
    for kind, value in (("name", "dupont marie"), ("phone", ""), ("address", "é\u2019x" * 40)):
        assert scan._value_digest(kind, value) == value_digest(DIGEST_KEY, kind, value)


def test_tokens_are_crypto_patient_tokens() -> None:
    """The engine computes tokens itself (compiled, through the C digester where it is
    built, else hashlib's states); both are crypto.pseudonym's."""
    scan = _engine("re")
    hashlib_tokens = _PatientTokens(PSEUDONYM_KEY)
    hashlib_tokens._digester = None
    for patient in ("p-1", "n-0123456789abcdef", "é\u2019x" * 20):
        for audience in ("labo.example", " Labo.Example ", "ÉTÉ\u2019"):
            expected = patient_token(PSEUDONYM_KEY, audience, patient)
            assert scan.token_for_patient(patient, audience) == expected
            assert hashlib_tokens(patient, audience) == expected


def test_token_cache_is_bounded_and_keeps_tokens_right() -> None:
    tokens = _PatientTokens(PSEUDONYM_KEY, capacity=3)
    asked = [
        (f"p-{i % 5}", audience) for i in range(40) for audience in ("labo-a.fr", "LABO-B.fr ")
    ]
    for patient, audience in asked:
        assert tokens.token(patient, audience) == patient_token(PSEUDONYM_KEY, audience, patient)
        cached = sum(len(by_patient) for by_patient in tokens._cached.values())
        assert cached == tokens._cached_count <= 3
    assert tokens.token("p-1", "labo-a.fr") != tokens.token("p-1", "labo-b.fr")


def test_unknown_engine_rejected() -> None:
    with pytest.raises(ValueError, match="unknown scan engine"):
        _engine("pcre")


@pytest.mark.parametrize("engine", ENGINES)
def test_one_engine_serves_many_threads(engine: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    scan = _engine(engine)
    texts = [
        f"Pour Mme Marie DUPONT, tél. 06 11 22 33 {i:02d}, NIR 2 84 03 75 108 123 47"
        for i in range(64)
    ]
    expected = [scan.scan_fields([TextField(t)]) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(lambda t: scan.scan_fields([TextField(t)]), texts)) == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_unrostered_name_one_token_whatever_the_order(engine: str) -> None:
    scan = _engine(engine, patients=())
    fields = [TextField("Patiente : LEGRAND Sophie"), TextField("Bonjour Sophie LEGRAND,")]
    findings = scan.scan_fields(fields)
    result = scan.rewrite_fields(fields, findings, TransformPolicy(audience="lab"))
    tokens = [TOKEN_PATTERN.search(t) for t in result.texts]
    assert all(tokens) and tokens[0].group() == tokens[1].group()  # type: ignore[union-attr]
    (entry,) = result.vault_entries
    assert entry.patient.startswith("n-") and entry.identity == "LEGRAND Sophie"


@pytest.mark.parametrize("engine", ENGINES)
def test_remove_and_keep_actions(engine: str) -> None:
    scan = _engine(engine)
    fields = [TextField("Mme Marie DUPONT, tél. 06 11 22 33 44, née le 12/03/1984")]
    findings = scan.scan_fields(fields)
    policy = TransformPolicy(
        audience="lab",
        default=TypeAction.REMOVE,
        overrides={IdentifierKind.PHONE: TypeAction.KEEP},
    )
    out = scan.rewrite_fields(fields, findings, policy)
    assert out.texts == ["Mme , tél. 06 11 22 33 44, née le "]
    assert out.vault_entries == []


@pytest.mark.parametrize(
    "label",
    ["né le", "née le", "né(e) le", "DDN :", "DDN", "date de naissance :", "Naissance :", "DOB:"],
)
def test_birth_date_labels(label: str) -> None:
    scan = _engine("auto", patients=())
    text = f"Patient suivi, {label} 03/04/1961, RDV le 05/12/2024"
    found = [text[f.start : f.end] for f in scan.scan_fields([TextField(text)])]
    assert found == ["03/04/1961"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("unit", "kind", "secret"),
    [
        ("06 12 34 56 78, ", IdentifierKind.PHONE, "34 56"),
        ("DUPONT Jean ", IdentifierKind.NAME, "DUPONT"),
        ("x.y@example.fr ", IdentifierKind.EMAIL, "example"),
        ("12 rue des Lilas 75012 Paris ", IdentifierKind.ADDRESS, "Lilas"),
        ("Dr Paul Martin et Mme Marie DUPONT. ", IdentifierKind.NAME, "DUPONT"),
    ],
)
def test_many_identifiers_in_one_field_stay_linear(
    unit: str, kind: IdentifierKind, secret: str
) -> None:
    """Thousands of findings in one field: overlap resolution and merging must not be
    quadratic (they were: 8,000 phone numbers took seconds, 30,000 names a minute)."""
    scan = _engine("auto", patients=())
    text = unit * 8000
    findings = scan.scan_fields([TextField(text)])
    assert findings and all(f.kind is kind for f in findings)
    out = scan.rewrite_fields([TextField(text)], findings, TransformPolicy(audience="lab"))
    assert secret not in out.texts[0]


COMPOUND = RosterPatient(
    key="p-2", last_name="de la Fontaine", first_name="Jean-Pierre", birth_date=date(1950, 11, 3)
)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("RDV pour Jean-Pierre DE LA FONTAINE demain", FieldKind.BODY),
        ("RDV pour DE LA FONTAINE Jean Pierre demain", FieldKind.BODY),
        ("merci pour jean-pierre de la fontaine, demain", FieldKind.BODY),
        ("2024-11-02_De-La-Fontaine-Jean-Pierre-UpperJaw.stl", FieldKind.FILENAME),
        ("DE_LA_FONTAINE_Jean-Pierre.stl", FieldKind.FILENAME),
    ],
)
def test_rostered_compound_names_in_any_order(engine: str, text: str, kind: FieldKind) -> None:
    scan = _engine(engine, patients=(PATIENT, COMPOUND))
    fields = [TextField(text, kind)]
    findings = scan.scan_fields(fields)
    assert any(f.patient == "p-2" for f in findings)
    out = scan.rewrite_fields(fields, findings, TransformPolicy(audience="lab")).texts[0]
    assert "fontaine" not in out.lower() and "pierre" not in out.lower()


@pytest.mark.parametrize("engine", ENGINES)
def test_first_name_alone_of_a_named_patient(engine: str) -> None:
    scan = _engine(engine)
    fields = [
        TextField("Commande pour DUPONT Marie", FieldKind.SUBJECT),
        TextField("Bonjour, Marie souhaite une teinte claire ; marie est un mot ici."),
    ]
    findings = scan.scan_fields(fields)
    out = scan.rewrite_fields(fields, findings, TransformPolicy(audience="lab")).texts[1]
    token = scan.token_for_patient("p-1", "lab")
    assert out == f"Bonjour, {token} souhaite une teinte claire ; marie est un mot ici."


@pytest.mark.parametrize("engine", ENGINES)
def test_first_name_alone_in_every_kind_of_field(engine: str) -> None:
    """The first name of a patient named in the message is found in each field, read
    from its slice of the message's word view (or its own view, for a whole field)."""
    scan = _engine(engine)
    fields = [
        TextField("Marie", FieldKind.SUBJECT),
        TextField("", FieldKind.BODY),
        TextField("MARIE_scan.stl", FieldKind.FILENAME),
        TextField("Dupont Marie", FieldKind.PERSON_NAME),
        TextField("Marie-Claire et Marie", FieldKind.DISPLAY_NAME),
        TextField("Bonjour Marie,\nDUPONT Marie est attendue. Marie\x00", FieldKind.BODY),
    ]
    found = {(f.field, f.start, f.end) for f in scan.scan_fields(fields)}
    for index, field in enumerate(fields):
        text = field.text
        for at in (i for i in range(len(text)) if text.lower().startswith("marie", i)):
            before = text[at - 1 : at]
            after = text[at + 5 : at + 6]
            if before.isalnum() or after.isalnum() or field.kind is FieldKind.PERSON_NAME:
                continue
            assert any(f == index and s <= at and at + 5 <= e for f, s, e in found), (index, at)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_surname_alone_guesses_its_one_patient_but_yields_to_a_longer_reading(
    engine: str,
) -> None:
    """A surname alone that one rostered patient bears is theirs ("Madame CHEVALLIER"),
    but "Noah CHEVALLIER", read in context, is another Chevallier: the whole name is
    replaced, by a token of its own (found by bench_scan: with a 10,000-patient roster,
    "Patient : PAT-... Mehdi" kept the first names of unrostered patients in clear)."""
    marc = RosterPatient(key="p-marc", last_name="Chevallier", first_name="Marc")
    scan = _engine(engine, (PATIENT, marc))
    policy = TransformPolicy(audience="lab")
    marc_token = scan.token_for_patient("p-marc", "lab")
    alone = [TextField("Bonjour Madame CHEVALLIER,", FieldKind.BODY)]
    out = scan.rewrite_fields(alone, scan.scan_fields(alone), policy).texts[0]
    assert out == f"Bonjour Madame {marc_token},"
    for text, kind in (
        ("Adressage patient - Noah CHEVALLIER", FieldKind.SUBJECT),
        ("Patient : CHEVALLIER Noah\nActe : couronne", FieldKind.BODY),
        ("Bonjour,\nNoah CHEVALLIER est attendu.", FieldKind.BODY),
    ):
        fields = [TextField(text, kind)]
        findings = scan.scan_fields(fields)
        out = scan.rewrite_fields(fields, findings, policy).texts[0]
        assert "Noah" not in out and "CHEVALLIER" not in out, text
        assert marc_token not in out
        assert [f.patient for f in findings if f.kind is IdentifierKind.NAME] == [None]
    # The rostered Marc is still Marc, by full name or by surname alone.
    fields = [TextField("Pour CHEVALLIER Marc ; M. CHEVALLIER viendra", FieldKind.BODY)]
    out = scan.rewrite_fields(fields, scan.scan_fields(fields), policy).texts[0]
    assert out == f"Pour {marc_token} ; M. {marc_token} viendra"


def _first_names_in_own_view(
    field: TextField, folded: str, first_names: list[tuple[str, str, bytes]]
) -> list[tuple[int, int, str, str]]:
    """The reference: each name searched in the field's own word view, by name then start,
    kept where capitalised or in a name-bearing field."""
    words = word_view(folded.encode("ascii")).decode("ascii")
    found = []
    for key, first, literal in first_names:
        needle = literal.decode("ascii")
        at = words.find(needle)
        while at >= 0:
            start, end = at, at + len(needle) - 2  # the view is padded by one space
            if field.text[start : start + 1].isupper() or field.kind in _NAME_BEARING:
                found.append((start, end, first, key))
            at = words.find(needle, at + 1)
    return found


@pytest.mark.parametrize("engine", ENGINES)
def test_first_names_found_once_in_the_message_view_are_each_fields_own(engine: str) -> None:
    """`_first_names_in_view` finds, for each field of one search of the message's word
    view, what a search of that field's own view finds, in the same order; a name across
    two fields is in neither. A whole field is searched in its own view ([index], [0])."""
    messages, roster = make_corpus(40, seed=5, extra_roster=0)
    marie_claire = replace(PATIENT, key="marie-claire", first_name="Marie Claire")
    scan = _engine(engine, (*roster, marie_claire))
    named = {p.key for p in roster} | {marie_claire.key}
    first_names = scan._first_name_literals(named)
    assert scan._first_name_literals(named) == first_names  # the cached forms alike
    compared = 0
    for message in messages:
        fields = [
            *message.fields,
            TextField("Pour DUPONT Marie", FieldKind.SUBJECT),  # "marie claire" across two
            TextField("Claire, Marie et MARIE CLAIRE", FieldKind.BODY),
            TextField("Marie Claire", FieldKind.PERSON_NAME),  # a whole field: not in view
        ]
        folded = scan._fold_fields(fields)
        count = len(fields)
        scanned = [
            i for i in range(count) if folded[i] and fields[i].kind is not FieldKind.PERSON_NAME
        ]
        view_starts = [-1] * count
        view = scan._match_message(
            folded, scanned, [[] for _ in fields], [[] for _ in fields], view_starts
        )
        protected = [_NO_SPANS] * count
        starts = [view_starts[index] for index in scanned]
        in_view = scan._first_names_in_view(
            fields, folded, view, scanned, starts, first_names, protected
        )
        assert set(in_view) <= set(scanned)
        for index in range(count):
            if index not in scanned:  # the whole field, in its own view
                own_view = word_view(folded[index].encode("ascii"))
                in_view.update(
                    scan._first_names_in_view(
                        fields, folded, own_view, [index], [0], first_names, protected
                    )
                )
            found = [(s.start, s.end, s.value, s.patient) for s in in_view.get(index, [])]
            own = _first_names_in_own_view(fields[index], folded[index], first_names)
            assert found == own, (index, fields[index].kind)
            compared += len(own)
        assert in_view[count - 1]  # "Marie Claire", the whole field
        spans = in_view[count - 2]
        assert [(s.start, s.end) for s in spans if s.patient == marie_claire.key] == [(17, 29)]
    assert compared > 100


@pytest.mark.parametrize("engine", ENGINES)
def test_rewrite_takes_findings_in_any_order(engine: str) -> None:
    """rewrite_fields walks each field's run of findings when they come in field order
    (as scan_fields gives them); a caller's in another order, or naming no field, give the
    same texts."""
    scan = _engine(engine)
    fields = [
        TextField("Commande pour DUPONT Marie", FieldKind.SUBJECT),
        TextField("NIR 1 84 12 75 108 123 45, tel 06 12 34 56 78."),
        TextField("Rien ici."),
        TextField("Mme DUPONT Marie, née le 12/03/1984, marie.dupont@example.org"),
    ]
    findings = scan.scan_fields(fields)
    assert len({f.field for f in findings}) == 3
    policy = TransformPolicy(audience="lab")
    expected = scan.rewrite_fields(fields, findings, policy).texts
    assert [text == field.text for text, field in zip(expected, fields, strict=True)] == [
        False,
        False,
        True,
        False,
    ]
    stray = [replace(findings[0], field=-1), replace(findings[0], field=len(fields))]
    for shuffled in (findings[::-1], findings[1::2] + findings[::2], stray + findings + stray):
        assert scan.rewrite_fields(fields, shuffled, policy).texts == expected


@given(text=st.text(min_size=2, max_size=12), cut=st.integers(min_value=0, max_value=10))
@example(text="N°", cut=0)  # "°" folds to "o" but is no lower-case letter: isupper() holds
@example(text="ÉMILE", cut=0)
@example(text="Émile", cut=0)
@example(text="A1", cut=0)
@example(text="1a", cut=0)
@example(text="ǅA", cut=0)  # a title-case letter
def test_upper_case_tests_answer_as_str_isupper(text: str, cut: int) -> None:
    """The single names' capitals tests, which answer ASCII letters without str.isupper(),
    answer as it does."""
    start = min(cut, len(text) - 2)
    assert _is_upper_word(text, start, len(text)) is text[start:].isupper()
    for char in text:
        assert _is_upper_char(char) is char.isupper()


@lru_cache(maxsize=1)
def _one_patient_engine() -> Engine:
    return build_engine(patients=[PATIENT], digest_key=b"d" * 32, pseudonym_key=b"p" * 32)


_hit = st.tuples(
    st.integers(min_value=0, max_value=5),  # literal index
    st.integers(min_value=0, max_value=30),  # start
    st.integers(min_value=0, max_value=6),  # length
).map(lambda h: (h[0], h[1], h[1] + h[2]))


@given(hits=st.lists(_hit, max_size=12), by_end=st.booleans())
def test_roster_words_read_hits_by_start_longest_first(
    hits: list[tuple[int, int, int]], by_end: bool
) -> None:
    """Roster words are read by start, the longest first, then literal index, whether the
    hits come in that order already (read as they are) or not (sorted)."""
    if by_end:  # as Hyperscan reports them
        hits.sort(key=lambda h: h[2])
    expected_order = sorted(hits, key=lambda h: (h[1], -h[2], h[0]))
    assert _in_start_order(hits, 40, 6) == expected_order
    engine = _one_patient_engine()
    owners = engine._literal_owner
    hits = [(index % len(owners), s, e) for index, s, e in hits]
    words, last_end = [], -1
    for index, start, end in sorted(hits, key=lambda h: (h[1], -h[2], h[0])):
        if owners[index] != _PRACTICE and start >= last_end:
            words.append((start, end, owners[index]))
            last_end = end
    assert engine._roster_words("x" * 40, hits, _NO_SPANS) == words
