"""Ages given with their context, and streets with no house number after a residence word
(issue 3: "âgé de" among the birth-date contexts; postal addresses): what is found, what
durations and clinical "rue"/"place" are left alone, and what each action writes."""

from __future__ import annotations

import re
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.scan import (
    Engine,
    Finding,
    IdentifierKind,
    TextField,
    TransformPolicy,
    TypeAction,
    build_engine,
)
from gateway.scan.engine import _address_words

ENGINES = ["hyperscan", "re"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@lru_cache(maxsize=2)
def engine(kind: str) -> Engine:
    return build_engine(digest_key=b"d" * 32, pseudonym_key=b"p" * 32, engine=kind)


def _scan(kind: str, text: str) -> list[Finding]:
    findings = engine(kind).scan_fields([TextField(text)])
    other = engine("re" if kind == "hyperscan" else "hyperscan").scan_fields([TextField(text)])
    assert findings == other  # the two matchers agree on every example here
    return findings


def _spans(kind: str, text: str, of: IdentifierKind) -> list[str]:
    return [text[f.start : f.end] for f in _scan(kind, text) if f.kind is of]


def _rewrite(text: str, action: TypeAction) -> str:
    scan = engine("hyperscan")
    fields = [TextField(text)]
    policy = TransformPolicy(audience="labo.example", default=action)
    return scan.rewrite_fields(fields, scan.scan_fields(fields), policy).texts[0]


# -- ages ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("Patient âgé de 67 ans, vu ce jour.", "67 ans"),
        ("Enfant âgée de 8 ans, première consultation.", "8 ans"),
        ("M. Durand (72 ans) présente une mobilité de la 36.", "72 ans"),
        ("Une patiente de 45 ans consulte pour la 46.", "45 ans"),
        ("patient(e) de 30 ans", "30 ans"),
        ("Âge : 67 ans", "67 ans"),
        ("AGE: 12 ANS", "12 ANS"),
        ("un enfant de 1 an", "1 an"),
        ("bébé de 18 mois, éruption de la 51", "18 mois"),
        ("âgé(e) de 90ans", "90ans"),
        ("à l'âge de 5 ans", "5 ans"),
    ],
)
def test_age_with_context_is_found(kind: str, text: str, age: str) -> None:
    assert _spans(kind, text, IdentifierKind.AGE) == [age]


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize(
    "text",
    [
        "douleur depuis 3 ans sur la 36",
        "couronne sous garantie 5 ans",
        "implant sous garantie de 5 ans",
        "réévaluation dans 10 jours",
        "contrôle (3 mois)",
        "bridge posé il y a 12 ans",
        "une prothèse de 10 ans",
        "pendant 2 ans, puis tous les 6 mois",
        "âgé de 150 ans",  # not a human age
        "patient de 1234 ans",
        "page : 3 ans",
        "(3 ans de recul)",
        "couronne garantie (5 ans)",
        "suivi depuis (2 ans)",
    ],
)
def test_durations_are_not_ages(kind: str, text: str) -> None:
    assert _spans(kind, text, IdentifierKind.AGE) == []


def test_age_rewritten_per_action() -> None:
    text = "Patiente âgée de 67 ans, (94 ans pour son conjoint), bébé de 18 mois."
    assert _rewrite(text, TypeAction.PSEUDONYMISE) == (
        "Patiente âgée de [AGE], (94 ans pour son conjoint), bébé de [AGE]."
    )
    assert _rewrite(text, TypeAction.REDACT) == (
        "Patiente âgée de [AGE], (94 ans pour son conjoint), bébé de [AGE]."
    )
    assert _rewrite(text, TypeAction.GENERALISE) == (
        "Patiente âgée de 60-69 ans, (94 ans pour son conjoint), bébé de 0-9 ans."
    )
    assert _rewrite("Âge : 94 ans", TypeAction.GENERALISE) == "Âge : 90 ans et plus"
    assert _rewrite("(8 ans)", TypeAction.REMOVE) == "()"
    assert _rewrite("(8 ans)", TypeAction.KEEP) == "(8 ans)"


def test_age_policy_is_its_own_type() -> None:
    """A route may generalise ages and keep birth dates' default, or the reverse."""
    scan = engine("hyperscan")
    fields = [TextField("Patient âgé de 67 ans, né le 12/03/1957.")]
    policy = TransformPolicy(
        audience="labo.example",
        default=TypeAction.REDACT,
        overrides={IdentifierKind.AGE: TypeAction.GENERALISE},
    )
    result = scan.rewrite_fields(fields, scan.scan_fields(fields), policy)
    assert result.texts == ["Patient âgé de 60-69 ans, né le [DDN]."]


AGE_CONTEXTS = st.sampled_from(
    ["âgé de {}", "âgée de {}", "Âgé(e) de {}", "({})", "patient de {}", "Patiente de {}",
     "enfant de {}", "homme de {}", "femme de {}", "Âge : {}", "age: {}", "AGE :{}"]
)  # fmt: skip
DURATIONS = st.sampled_from(
    ["depuis {}", "garantie {}", "garantie de {}", "dans {}", "il y a {}", "pendant {}",
     "tous les {}", "sous {}", "prothèse de {}", "bridge de {}", "durée : {}",
     "garantie ({})", "depuis ({})", "recul : ({})"]
)  # fmt: skip
UNITS = st.sampled_from([" ans", "ans", " an", " mois", " jours", " semaines"])
AROUND = st.sampled_from(["", "Bonjour, ", "Couronne sur la 36, ", "RDV le 14/11/2024. "])


@SETTINGS
@given(context=AGE_CONTEXTS, years=st.integers(0, 120), case=st.sampled_from([str, str.upper]))
def test_every_age_in_context_is_found(context: str, years: int, case: type[str]) -> None:
    unit = "an" if years == 1 else "ans"
    text = "Vu ce jour " + case(context.format(f"{years} {unit}")) + ", suivi."
    assert _spans("hyperscan", text, IdentifierKind.AGE) == [case(f"{years} {unit}")]


@SETTINGS
@given(duration=DURATIONS, number=st.integers(0, 999), unit=UNITS, before=AROUND)
def test_no_duration_is_an_age(duration: str, number: int, unit: str, before: str) -> None:
    text = before + duration.format(f"{number}{unit}") + "."
    assert _spans("hyperscan", text, IdentifierKind.AGE) == []


# -- streets with no house number ----------------------------------------------------


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize(
    ("text", "street"),
    [
        ("Mme Durand, demeurant rue des Lilas, consulte.", "rue des Lilas"),
        ("domicilié avenue Jean Jaurès à Lyon", "avenue Jean Jaurès"),
        ("Adresse : chemin des Vignes", "chemin des Vignes"),
        ("ADRESSE : Place de la République", "Place de la République"),
        ("domiciliée au lieu-dit Les Granges", "lieu-dit Les Granges"),
        ("résidant bd Gambetta.", "bd Gambetta"),
        ("habite impasse Saint-Exupéry", "impasse Saint-Exupéry"),
        # the practice's street, but someone's residence: fail closed
        ("demeurant place de la Gare", "place de la Gare"),
    ],
)
def test_street_after_residence_word_is_an_address(kind: str, text: str, street: str) -> None:
    assert _spans(kind, text, IdentifierKind.ADDRESS) == [street]


@pytest.mark.parametrize("kind", ENGINES)
def test_numberless_street_joins_its_postcode_and_town(kind: str) -> None:
    text = "Patient demeurant rue des Lilas, 69003 Lyon. Couronne sur la 36."
    assert _spans(kind, text, IdentifierKind.ADDRESS) == ["rue des Lilas, 69003 Lyon"]
    assert _rewrite(text, TypeAction.REDACT) == "Patient demeurant [ADRESSE]. Couronne sur la 36."


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize(
    "text",
    [
        "parking en face de la rue Gambetta",
        "mise en place de l'implant sur la 36",
        "la rue est fermée, RDV décalé",
        "Place Bellecour, le cabinet est au fond de la cour",
        "adresse : chemin des vignes",  # no capitalised name: nothing to take
        "demeurant à Lyon",
    ],
)
def test_street_without_residence_word_is_not_an_address(kind: str, text: str) -> None:
    assert _spans(kind, text, IdentifierKind.ADDRESS) == []


RESIDENCE = st.sampled_from(
    ["demeurant", "Demeurant", "domicilié", "domiciliée", "domicilié(e)", "résidant", "habite",
     "Adresse :", "adresse:", "adresse postale :"]
)  # fmt: skip
STREET_TYPE = st.sampled_from(
    ["rue", "avenue", "bd", "boulevard", "chemin", "allée", "place", "impasse", "route", "quai"]
)
STREET_NAME = st.sampled_from(
    ["des Lilas", "Victor Hugo", "de la République", "Jean Jaurès", "du Général de Gaulle",
     "Émile Zola", "Saint-Exupéry", "Gambetta"]
)  # fmt: skip


@SETTINGS
@given(residence=RESIDENCE, street_type=STREET_TYPE, name=STREET_NAME, before=AROUND)
def test_every_numberless_street_after_a_residence_word_is_found(
    residence: str, street_type: str, name: str, before: str
) -> None:
    street = f"{street_type} {name}"
    text = f"{before}Patient {residence} {street}, suivi."
    assert _spans("hyperscan", text, IdentifierKind.ADDRESS) == [street]


@SETTINGS
@given(
    text=st.text(alphabet="aZ'- 0,.\n", max_size=40),
    start=st.integers(0, 45),
    end=st.integers(0, 45),
)
def test_address_words_are_the_word_regex_runs(text: str, start: int, end: int) -> None:
    """The street and town trimming reads its words in place: the runs `[A-Za-z'-]+`
    finds in the text's [start, end) (both clipped to the text), as before."""
    end = min(end, len(text))
    expected = [m.span() for m in re.compile(r"[A-Za-z'-]+").finditer(text, start, end)]
    assert _address_words(text, start, end) == expected
