"""The identifier shapes: one regular expression per candidate family.

Each pattern runs on folded text (see `_fold`: ASCII, accents stripped, case kept),
in engines with the same syntax: Hyperscan (as a one-pass prefilter over all shapes),
Python `re` (re.ASCII) and PCRE2 (which re-reads Hyperscan's hits where
gateway/scan/_reread.c is built). Patterns therefore use only what all of them share,
with the same meaning: classes, bounded repeats, alternation and `\\b` (and, in the
locators, which Hyperscan never runs, `\\Z`: PCRE2's `\\z`); no look-around, no
backreferences. A match is only a *candidate*: checksums, labels and context are
checked in Python afterwards (see `validators`).

`max_len` bounds a match (characters) so that a Hyperscan hit can be re-read inside a
small window. Where the full pattern is slow in Hyperscan (name patterns, e-mail:
measured 0.2-1.4 GB/s alone, and slower together), Hyperscan looks for a cheaper
`trigger` instead (see `Shape`). Every hit costs a re-read (a few hundred instructions
in C, a few thousand with `re`), so a trigger should fire about once per candidate: a
street triggers on its head from the house number's last digit (the number's start
located back from there), a "Jean DUPONT" or "DUPONT Jean" on the junction between its
words; not on a short fragment that fires on every "27-28" or "CMD-2024". A trigger
need not hold the pattern's anchors (`\b`) nor its finer classes: the re-read checks
them, and Hyperscan's automata pay for every alternation and bounded repeat on every
byte. ISO dates and dates in words, whose pattern allows one end per start, need no
re-read at all (`span_is_match`).

The triggers of the shapes led by a digit (NIR to postcode), of the two name-pair
junctions and of the titles before a name (civility, intro, doctor) are also written in
C (gateway/scan/_triggers.h): where gateway/scan/_hyperscan.c is built, a walk over the
bytes finds their hits in the same scan, and Hyperscan runs the other shapes (e-mail,
residence street). A change to one of those triggers here is a change there too:
tests/scan/test_triggers_native.py compares the two on generated texts.
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
    STREET_CONTEXT = "street_context"  # "demeurant rue des Lilas": a street with no number
    AGE = "age"  # "âgé de 67 ans", "patiente de 45 ans", "Âge : 8 ans", "(72 ans)"
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
    max_len: int  # characters: no match is longer (every repeat is bounded)
    # How Hyperscan finds where to re-read (see matchers.HyperscanMatcher):
    # - `trigger`: a cheap pattern present in every match, whose start lies at most
    #   `before` characters after the match's start. The full name patterns cost
    #   Hyperscan ~150 MB/s each on prose; their triggers cost next to nothing, and
    #   report once per match instead of once per possible end.
    # - no trigger: the pattern itself.
    # Either way Hyperscan reports the leftmost start (SOM) of each hit.
    trigger: str | None = None
    extra_triggers: tuple[str, ...] = ()  # alternatives, cheaper than one alternation
    before: int = 0
    # When set: the match starts where this pattern, searched in the `before` characters
    # ending at the anchor (trigger start + `locate_offset`), begins; it must end exactly
    # at the anchor (use `\Z`), and open with `\b` (no start lies inside a word).
    locate_start: str | None = None
    locate_offset: int = 0
    # Every character a match (or, with `locate_start`, a located run) can hold; None
    # when unbounded. A character outside it before a trigger is a barrier: no match
    # spans it, so the re-read starts right after it instead of `before` characters
    # back (an e-mail's local part, a name run: a few characters instead of 64-251).
    alphabet: str | None = None
    # True when Hyperscan's span is the match: no trigger (the pattern itself is in the
    # database), and once a match's start is fixed its end is too (every repeat and
    # alternative is decided by the characters, none by backtracking). A hit is then
    # taken as it is, with no `re` re-read; a start reported with two ends is re-read.
    span_is_match: bool = False


_SEP = r"[ .-]?"
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
# Name words, bounded (30 letters per part) so that every match has a maximum length.
_CAP = r"[A-Z](?:[a-z]{1,30}|'[A-Z][a-z]{1,30})(?:[-'][A-Z]?[a-z]{1,30})?"  # Jean, N'Diaye
_UPPER = r"(?:[A-Z]')?[A-Z]{2,30}(?:[-'][A-Z]{2,30}){0,3}"  # DUPONT, MARTIN-DUBOIS
_CAP_LEN = 1 + 32 + 32
_UPPER_LEN = 2 + 30 + 3 * 31
_WORD = r"(?:" + _CAP + "|" + _UPPER + ")"
_WORD_LEN = max(_CAP_LEN, _UPPER_LEN)
_MONTHS = "janvier|fevrier|mars|avril|mai|juin|juillet|aout|septembre|octobre|novembre|decembre"
_STREET_TYPES = (
    "rue|avenue|av|bd|boulevard|chemin|allee|place|impasse|route|quai|cours|square|"
    "residence|lotissement|voie|passage|cite|hameau|sentier|faubourg|promenade|"
    "esplanade|parvis|chaussee|rond-point|villa|clos|domaine|lieu-dit"
)
# The street head: a house number, "bis" or "ter", a street type.
_STREET_HEAD = r"\b\d{1,4}(?: ?(?:bis|ter))?,? (?:" + _STREET_TYPES + r")\b"
# A residence word right before a street with no house number: without one, "rue" or
# "place" in clinical text ("mise en place") is no address. The shape's match starts at
# the word; the address found starts at the street type (see engine).
STREET_CONTEXT_HEAD = (
    r"\b(?:demeurant|domicilie|residant|habitant|habite|adresse(?: postale)?)"
    r"(?:e|es|s|\(e\))?(?: ?:)? (?:au |a la |a )?"
)
# An age needs its context: a person noun or "âgé(e)" + "de", an "Âge :" label, or the
# parenthesised "(72 ans)". Durations ("depuis 3 ans", "garantie de 5 ans", "dans 10
# jours", "contrôle (3 mois)") have none of these.
_AGE_PERSON = r"age|patient|enfant|homme|femme|garcon|fillette|fille|adolescent|bebe|nourrisson"
AGE_VALUE = r"\d{1,3} ?(?:ans?|mois)\b"
STREET_TYPES = _STREET_TYPES  # the engine finds where the street starts after the head
_POSTCODE = r"\b(?:0[1-9]|[1-8]\d|9[0-5]|97)\d\d\d"
_CIVILITY = r"(?:M\.|Mr\.?|Mme\.?|Mlle\.?|Madame|Monsieur|Mademoiselle|MME|MR|MLLE|MADAME|MONSIEUR)"
_INTRO = r"\b(?:[Pp]atiente?|PATIENTE?|[Pp]our|POUR|[Bb]onjour|[Bb]onsoir|[Cc]here?|[Nn]om)(?: ?:)?"
_DOCTOR = r"\b(?:Dr|DR|Docteur|DOCTEUR|Pr|Professeur)\.?"

# Heads of the number shapes, each the start of every match and fixed once its start is
# (every separator is optional but never a digit): Hyperscan triggers reporting one hit per
# candidate start.
_NIR_BODY = (
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
    + r"\d\d\d"
)
_IBAN_HEAD = r"\b[A-Z][A-Z]\d\d(?: ?[A-Z0-9]{4}){2}"
_INTL_PREFIX = r"(?:\+|\b00)[1-9]"

SHAPES: tuple[Shape, ...] = (
    Shape(
        ShapeName.NIR,
        _NIR_BODY + r"(?:" + _SEP + r"\d\d)?\b",
        False,
        24,
        # The 13 characters before the key, with their exact start: one hit per start (the
        # whole pattern reported every end, with and without the key).
        trigger=_NIR_BODY,
    ),
    Shape(
        ShapeName.IBAN,
        r"\b[A-Z][A-Z]\d\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        True,  # "fr76 3000 ..." typed in lower case is still an IBAN
        44,
        # Country, key and two groups, with their exact start: one hit per start (the
        # whole pattern reported every end, one per group).
        trigger=_IBAN_HEAD,
    ),
    Shape(
        ShapeName.PHONE_FR,
        r"(?:(?:\+|\b00)33 ?(?:\(0\) ?)?|\b0)[1-9](?:" + _SEP + r"\d\d){4}\b",
        False,
        24,
        # The prefix, with its exact start (every match opens with "+33", "0033" or "0"
        # and a digit): the whole pattern in the database (taken as reported, one end
        # per start) cost a dense order's Hyperscan pass 11k of its 132k instructions,
        # and 9k a KB of prose (its digit groups run at every digit); the prefix fires
        # about seven times per lab order, each hit a C re-read of a few hundred. Three
        # expressions cost 3k less than one alternation.
        trigger=r"\+33",
        extra_triggers=(r"\b0033", r"\b0[1-9]"),
    ),
    Shape(
        ShapeName.PHONE_INTL,
        _INTL_PREFIX + r"\d{0,2}(?:[ .-]?\d){6,13}\b",
        False,
        30,
        # "+" or "00" and the first digit, with their exact start: one hit per start (the
        # whole pattern reported every end, one per digit group).
        trigger=_INTL_PREFIX,
    ),
    Shape(
        ShapeName.EMAIL,
        r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,3}\.[A-Za-z]{2,24}\b",
        False,
        64 + 1 + 63 + 3 * 64 + 1 + 24,
        trigger="@",
        before=64,
        alphabet=_LETTERS + _DIGITS + "._%+-@",
    ),
    Shape(
        ShapeName.DATE_NUMERIC,
        r"\b\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d\d)\b",
        False,
        10,
        # Day, month and their separators, with the exact start: about five hits per
        # lab order (dates, and a phone number's "06-57-"), where "\d[/.-]\d" fired on
        # every "27-28" and "CMD-2024". The whole pattern (taken as reported) cost the
        # Hyperscan pass 12k instructions a dense order, and 9k a KB of prose.
        trigger=r"\b\d{1,2}[/.-]\d{1,2}[/.-]",
    ),
    Shape(ShapeName.DATE_ISO, r"\b(?:19|20)\d\d-\d\d-\d\d\b", False, 10, span_is_match=True),
    Shape(
        ShapeName.DATE_WORDS,
        r"\b\d{1,2}(?:er)? (?:" + _MONTHS + r") (?:19|20)\d\d\b",
        True,
        20,
        span_is_match=True,  # no month name is another's prefix followed by a space
    ),
    Shape(
        ShapeName.STREET,
        _STREET_HEAD + r"\.?(?: [A-Za-z'-]{1,30}){1,6}",
        True,
        4 + 4 + 1 + 1 + 11 + 1 + 6 * 31,
        # The head from the house number's last digit, with its exact start: the
        # locator finds where the number starts (at most four digits back), then one
        # `match` there. The head with the number's first digit as its start (the
        # `\b\d{1,4}` in the trigger) cost a dense order's Hyperscan pass 8k of its
        # 105k instructions: Hyperscan tracked the start of every run of digits.
        trigger=r"\d,? (?:" + _STREET_TYPES + r")\b",
        extra_triggers=(r"\d ?(?:bis|ter),? (?:" + _STREET_TYPES + r")\b",),
        before=4,
        locate_start=r"\b\d{1,4}\Z",
        locate_offset=1,
        alphabet=_DIGITS,
    ),
    Shape(
        ShapeName.STREET_CONTEXT,
        STREET_CONTEXT_HEAD + r"(?:" + _STREET_TYPES + r")\b\.?(?: [A-Za-z'-]{1,30}){1,6}",
        True,
        len("adresse postale(e) : a la ") + len("lotissement.") + 6 * 31,
        # Head and street type with its exact start, as for STREET.
        trigger=STREET_CONTEXT_HEAD + r"(?:" + _STREET_TYPES + r")\b",
    ),
    Shape(
        ShapeName.AGE,
        r"(?:\b(?:"
        + _AGE_PERSON
        + r")(?:e|\(e\))?s? de |\bage ?: ?)"
        + AGE_VALUE
        + r"|\(\d{1,3} ?ans?\)",
        True,
        len("adolescent(e)s de ") + len("120 mois"),
        # The number's last digit and unit: the pattern itself, led by its alternation of
        # words and "(", costs the Hyperscan pass ~8 % on prose, these triggers ~3 %; they
        # fire on durations too ("depuis 3 ans"), rare outside clinical notes.
        trigger=r"\d ?ans?\b",
        extra_triggers=(r"\d ?mois\b",),
        before=len("adolescent(e)s de ") + 2,
    ),
    Shape(
        ShapeName.POSTCODE_TOWN,
        _POSTCODE + r" [A-Z][A-Za-z'-]{1,40}(?:[ -][A-Z][A-Za-z'-]{1,40}){0,4}",
        False,
        5 + 1 + 41 + 4 * 42,
        # Five digits, a space and a capital, with their exact start (a fixed width: the
        # start of each), the postcode's leading digits and \b left to the re-read:
        # with them, the trigger cost the Hyperscan pass 12k instructions a dense order.
        trigger=r"\d\d\d\d\d [A-Z]",
    ),
    Shape(
        ShapeName.CIVILITY_NAME,
        r"\b" + _CIVILITY + r"(?: " + _WORD + r"){1,4}",
        False,
        12 + 4 * (1 + _WORD_LEN),
        trigger=r"\b" + _CIVILITY + " [A-Z]",
    ),
    Shape(
        ShapeName.INTRO_NAME,
        _INTRO + r"(?: " + _CIVILITY + r")?(?: " + _WORD + r"){1,4}",
        False,
        10 + 13 + 4 * (1 + _WORD_LEN),
        trigger=_INTRO + " [A-Z]",
    ),
    Shape(
        ShapeName.UPPER_FIRST,
        r"\b" + _UPPER + r"(?: " + _UPPER + r")? " + _CAP + r"\b",
        False,
        2 * _UPPER_LEN + 2 + _CAP_LEN,
        # The junction "NT Je" of "DUPONT Jean" (rare in prose, ~3 GB/s); the match starts
        # at the one or two uppercase words that end at the junction's space.
        trigger=r"[A-Z][A-Z] [A-Z][a-z]",
        extra_triggers=(r"[A-Z][A-Z] [A-Z]'[A-Z]",),
        before=2 * _UPPER_LEN + 1,
        locate_start=r"\b" + _UPPER + r"(?: " + _UPPER + r")?\Z",
        locate_offset=2,
        alphabet=_LETTERS[:26] + "' -",
    ),
    Shape(
        ShapeName.FIRST_UPPER,
        r"\b" + _CAP + r" " + _UPPER + r"(?: " + _UPPER + r")?\b",
        False,
        _CAP_LEN + 2 + 2 * _UPPER_LEN,
        # The junction "n DU" of "Jean DUPONT" (as UPPER_FIRST's); the match starts at the
        # capitalised word that ends at the junction's space. A capitalised word ends in a
        # lower-case letter, an uppercase one opens with two capitals or a capital and an
        # apostrophe. The capitalised word and the junction with their exact start (SOM),
        # the trigger until the re-reads moved to C, cost a dense order's Hyperscan pass
        # 27k of its 142k instructions: bounded repeats are what Hyperscan's automata pay
        # for, and a located start costs the C re-read a few hundred.
        trigger=r"[a-z] [A-Z][A-Z]",
        extra_triggers=(r"[a-z] [A-Z]'[A-Z]",),
        before=_CAP_LEN,
        locate_start=r"\b" + _CAP + r"\Z",
        locate_offset=1,
        alphabet=_LETTERS + "'-",
    ),
    Shape(
        ShapeName.DOCTOR,
        _DOCTOR + r"(?: " + _WORD + r"){1,3}",
        False,
        11 + 3 * (1 + _WORD_LEN),
        trigger=_DOCTOR + " [A-Z]",
    ),
)
