"""The identifier shapes: one regular expression per candidate family.

Each pattern runs on folded text (see `_fold`: ASCII, accents stripped, case kept),
in two engines with the same syntax: Hyperscan (as a one-pass prefilter over all
shapes) and Python `re` (re.ASCII). Patterns therefore use only what both engines
share: classes, bounded repeats, alternation and `\\b`; no look-around, no
backreferences. A match is only a *candidate*: checksums, labels and context are
checked in Python afterwards (see `validators`).

`max_len` bounds a match (characters) so that a Hyperscan hit can be re-read by
Python `re` inside a small window.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ShapeName(StrEnum):
    NIR = "nir"
    IBAN = "iban"
    PHONE_FR = "phone_fr"
    PHONE_INTL = "phone_intl"
    EMAIL = "email"
    DATE_NUMERIC = "date_numeric"
    DATE_ISO = "date_iso"
    DATE_WORDS = "date_words"
    STREET = "street"
    POSTCODE_TOWN = "postcode_town"
    CIVILITY_NAME = "civility_name"
    INTRO_NAME = "intro_name"  # "patient(e)", "pour", salutations + capitalised words
    UPPER_FIRST = "upper_first"  # "DUPONT Jean"
    FIRST_UPPER = "first_upper"  # "Jean DUPONT"
    DOCTOR = "doctor"  # "Dr Martin": protected, never a patient


@dataclass(frozen=True)
class Shape:
    name: ShapeName
    pattern: str
    caseless: bool
    max_len: int  # characters; bounds the re-read window
    # Hyperscan reports the leftmost start ("SOM") of each match when the pattern allows;
    # for the two widest patterns it refuses ("Pattern is too large"), and the window
    # then starts `max_len` before the reported end instead.
    leftmost_start: bool = True


_SEP = r"[ .-]?"
_CAP = r"[A-Z](?:[a-z]+|'[A-Z][a-z]+)(?:[-'][A-Z]?[a-z]+)?"  # Jean, Jean-Pierre, N'Diaye
_UPPER = r"(?:[A-Z]')?[A-Z]{2,}(?:[-'][A-Z]{2,})*"  # DUPONT, MARTIN-DUBOIS, N'DIAYE
_WORD = r"(?:" + _CAP + "|" + _UPPER + ")"
_MONTHS = "janvier|fevrier|mars|avril|mai|juin|juillet|aout|septembre|octobre|novembre|decembre"
_STREET_TYPES = (
    "rue|avenue|av|bd|boulevard|chemin|allee|place|impasse|route|quai|cours|square|"
    "residence|lotissement|voie|passage|cite|hameau|sentier|faubourg|promenade|"
    "esplanade|parvis|chaussee|rond-point|villa|clos|domaine|lieu-dit"
)
_CIVILITY = r"(?:M\.|Mr\.?|Mme\.?|Mlle\.?|Madame|Monsieur|Mademoiselle|MME|MR|MLLE|MADAME|MONSIEUR)"

SHAPES: tuple[Shape, ...] = (
    Shape(
        ShapeName.NIR,
        r"\b[1-478]"
        + _SEP
        + r"\d\d"
        + _SEP
        + r"\d\d"
        + _SEP
        + r"(?:\d\d|2[ABab])"
        + _SEP
        + r"\d\d\d"
        + _SEP
        + r"\d\d\d(?:"
        + _SEP
        + r"\d\d)?\b",
        False,
        24,
    ),
    Shape(
        ShapeName.IBAN,
        r"\b[A-Z][A-Z]\d\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        False,
        42,
    ),
    Shape(
        ShapeName.PHONE_FR,
        r"(?:(?:\+|\b00)33 ?(?:\(0\) ?)?|\b0)[1-9](?:" + _SEP + r"\d\d){4}\b",
        False,
        24,
    ),
    Shape(
        ShapeName.PHONE_INTL,
        r"(?:\+|\b00)[1-9]\d{0,2}(?:[ .-]?\d){6,13}\b",
        False,
        30,
    ),
    Shape(
        ShapeName.EMAIL,
        r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,3}\.[A-Za-z]{2,24}\b",
        False,
        64 + 1 + 63 + 3 * 64 + 1 + 24,
        leftmost_start=False,
    ),
    Shape(ShapeName.DATE_NUMERIC, r"\b\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d\d)\b", False, 10),
    Shape(ShapeName.DATE_ISO, r"\b(?:19|20)\d\d-\d\d-\d\d\b", False, 10),
    Shape(
        ShapeName.DATE_WORDS,
        r"\b\d{1,2}(?:er)? (?:" + _MONTHS + r") (?:19|20)\d\d\b",
        True,
        20,
    ),
    Shape(
        ShapeName.STREET,
        r"\b\d{1,4}(?: ?(?:bis|ter|b))?,? (?:" + _STREET_TYPES + r")\.?(?: [A-Za-z'-]{1,30}){1,6}",
        True,
        4 + 4 + 1 + 1 + 12 + 1 + 6 * 31,
        leftmost_start=False,
    ),
    Shape(
        ShapeName.POSTCODE_TOWN,
        r"\b(?:0[1-9]|[1-8]\d|9[0-5]|97)\d\d\d [A-Z][A-Za-z'-]{1,40}(?:[ -][A-Z][A-Za-z'-]{1,40}){0,4}",
        False,
        220,
    ),
    Shape(
        ShapeName.CIVILITY_NAME,
        r"\b" + _CIVILITY + r"(?: " + _WORD + r"){1,4}",
        False,
        120,
    ),
    Shape(
        ShapeName.INTRO_NAME,
        r"\b(?:[Pp]atiente?|PATIENTE?|[Pp]our|POUR|[Bb]onjour|[Bb]onsoir|[Cc]her|[Cc]here|[Nn]om)"
        r"(?: ?:)?(?: " + _CIVILITY + r")?(?: " + _WORD + r"){1,4}",
        False,
        140,
    ),
    Shape(
        ShapeName.UPPER_FIRST, r"\b" + _UPPER + r"(?: " + _UPPER + r")? " + _CAP + r"\b", False, 80
    ),
    Shape(
        ShapeName.FIRST_UPPER, r"\b" + _CAP + r" " + _UPPER + r"(?: " + _UPPER + r")?\b", False, 80
    ),
    Shape(
        ShapeName.DOCTOR,
        r"\b(?:Dr|DR|Docteur|DOCTEUR|Pr|Professeur)\.?(?: " + _WORD + r"){1,3}",
        False,
        110,
    ),
)
