"""Candidate validation: checksums, labels and context for numbers, contacts and dates.

Input: a candidate span of folded text (see `_fold`) and its surroundings.
Output: a normalised value (for the keyed digest and roster linkage) or None.
Never raises on bad input; never logs a value.

Checksums follow python-stdnum (NIR key mod 97 with 2A/2B, IBAN ISO 7064 mod 97-10) and
python-phonenumbers (international numbers), as identifiers.md recommends. The NIR key
and the IBAN check are stdnum's arithmetic written here, so that they run compiled (the
IBAN's remainder taken a character at a time); tests compare both with stdnum.

Where setup.py has built gateway/scan/_validators.c, the hot validators (the birth label,
the dates, French phones, the NIR key, IBANs) run there, reading the candidate in place in
the folded text (the `*_at` functions take the text and the candidate's offsets: no
slice); each keeps its Python code here (`_*_py`) as the fallback, for the rare paths the C
leaves undecided (int()'s rules, non-ASCII text), and as the oracle
tests/scan/test_validators_native.py compares the C with. PORTIQUE_PURE_PYTHON=1 builds no
C: the Python runs, with the same results.
"""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING, Final

import phonenumbers

from gateway.scan._fold import is_ascii_letter, is_regex_word_code
from gateway.scan.patients import normalise_phone

if TYPE_CHECKING:
    from gateway.scan._validators import Validators

# How far before a number its label may stand ("NIR : ", "n° sécu  "), in characters.
LABEL_WINDOW: Final = 32
_NIR_LABEL: Final = re.compile(
    r"(?:\bnir|\bins(?:-nir)?|\bn ?o? ?ss|\bsecu|securite sociale|\bmatricule|"
    r"\bimmatriculation|\bnum(?:ero)? ?(?:de )?ss|\bssn?)\b[^a-z0-9]{0,12}$"
)
# A birth-date label directly before the date (only separators between them), looked
# for in the characters before the date: "date de naissance : le " is 23, 40 leaves room.
BIRTH_LABEL_WINDOW: Final = 40
# The labels, whole words ("né", "née", "nés", "nées", "DDN", ...) ...
_BIRTH_WORDS: Final = (
    "ne",
    "nee",
    "nes",
    "nees",
    "ddn",
    "date de naissance",
    "naissance",
    "date naiss",
    "dob",
    "birth date",
    "birthdate",
    "date of birth",
    "born",
)
# ... and "né(e)", a word only at its start (")" ends no word).
_BIRTH_WORDS_OPEN: Final = ("ne(e)", "ne (e)", "nee(e)", "nee (e)")
# The rule: a label ends the window, then up to 4 of " :.,-", maybe "le" and 1-3 of " :":
#     (?:\b(?:WORDS)\b|\b(?:OPEN))[ :.,-]{0,4}(?:le[ :]{1,3})?$
# Searched for, that regex is tried from each of the window's 40 starts (~10k
# instructions a window); matched on the reversed window, it still cost ~4k a date (the
# copy, lower-case, reversal and match), and every fifth date of a lab order met it. It
# is read here in place instead, from the window's end backwards (is_birth_label_before):
# each separator run is decided by its characters, so the labels need only be compared
# where the run before them ends. tests/scan/test_properties.py and
# test_detect_fast_paths.py check that both always agree. Where it is built, the same
# walk runs in C (gateway/scan/_validators.c, built with these constants): ~0.6k
# instructions a date, the call included, where this compiled Python took ~1.9k.
# The labels by their last word (the run of letters before the separators) ...
_BIRTH_LABELS_BY_LAST_WORD: Final = {
    last: tuple(word for word in _BIRTH_WORDS if word.rsplit(" ", 1)[-1] == last)
    for last in {word.rsplit(" ", 1)[-1] for word in _BIRTH_WORDS}
}
# ... what may follow a label, and the last characters of the labels: "nee", "nes",
# "ddn", "naissance", "naiss", "dob", "birth date", "date of birth", "born", "ne (e)";
# all as character codes.
_BIRTH_TAIL: Final = frozenset(ord(c) for c in " :.,-")
_BIRTH_LABEL_LAST: Final = frozenset(ord(c) for c in "esnbh)")
_MONTHS: Final = {
    m: i + 1
    for i, m in enumerate(
        "janvier fevrier mars avril mai juin juillet aout septembre octobre novembre decembre".split()
    )
}


def nir_value(candidate: str, before: str) -> str | None:
    """Normalised NIR if the candidate is key-valid, or labelled (a wrong key is still
    suspicious): `nir_value_at` of the candidate after the text before it."""
    return nir_value_at(before + candidate, len(before), len(before) + len(candidate))


def nir_value_at(text: str, start: int, end: int) -> str | None:
    """`nir_value(text[start:end], text[:start])`, the key checked in place in C where
    gateway/scan/_validators.c is built."""
    if _NATIVE_NIR_KEY_VALID is not None:
        nir = _NATIVE_NIR_KEY_VALID(text, start, end)
        if nir is None:  # not key-valid: maybe labelled
            if _is_nir_labelled(text[max(0, start - LABEL_WINDOW) : start]):
                return _nir_compact(text[start:end])
            return None
        if nir:
            return nir
    return _nir_value_py(text[start:end], text[max(0, start - LABEL_WINDOW) : start])


def _nir_value_py(candidate: str, before: str) -> str | None:
    """nir_value in Python (the fallback, and the C's oracle)."""
    # The NIR shape holds digits, "2A"/"2B" and the separators " ", "." and "-".
    compact = _nir_compact(candidate)
    # stdnum's key arithmetic on an already compact number: stdnum.fr.nir.is_valid would
    # first re-clean it, at 3x the cost.
    if (
        len(compact) == 15
        and compact[:5].isdigit()
        and compact[7:].isdigit()
        and (compact[5:7].isdigit() or compact[5:7] in ("2A", "2B"))
        and nir_check_digits(compact) == compact[13:]
    ):
        return compact
    return compact if _is_nir_labelled(before) else None


def _nir_compact(candidate: str) -> str:
    return candidate.upper().replace(" ", "").replace(".", "").replace("-", "")


def _is_nir_labelled(before: str) -> bool:
    """Whether a NIR label ends `before` (within LABEL_WINDOW characters)."""
    return _NIR_LABEL.search(before[-LABEL_WINDOW:].lower()) is not None


def nir_check_digits(compact: str) -> str:
    """`stdnum.fr.nir.calc_check_digits`: 97 minus the first 13 characters mod 97, Corsica's
    "2A" and "2B" read as 19 and 18. `compact` holds digits, but "2A"/"2B" at 5-6.
    Compiled here, not an interpreted call per NIR (tests/scan/test_properties.py)."""
    department = compact[5:7]
    if department == "2A":
        body = compact[:5] + "19" + compact[7:13]
    elif department == "2B":
        body = compact[:5] + "18" + compact[7:13]
    else:
        body = compact[:13]
    key = 97 - int(body) % 97  # 1-97, two digits: `str` (a format spec is a generic call)
    return str(key) if key >= 10 else "0" + str(key)


def iban_value(candidate: str) -> tuple[str, int] | None:
    """(normalised IBAN, length of the candidate kept) or None.

    The shape may swallow a trailing group of capitals ("... 189 CMD1"), so shorter
    prefixes are tried, group by group.
    """
    return iban_value_at(candidate, 0, len(candidate))


def iban_value_at(text: str, start: int, end: int) -> tuple[str, int] | None:
    """`iban_value(text[start:end])`, read in place in C where gateway/scan/_validators.c
    is built."""
    if _NATIVE_IBAN_VALUE is not None:
        found = _NATIVE_IBAN_VALUE(text, start, end)
        if not isinstance(found, str):  # "": undecided
            return found
    return _iban_value_py(text[start:end])


def _iban_value_py(candidate: str) -> tuple[str, int] | None:
    """iban_value in Python (the fallback, and the C's oracle)."""
    text = candidate
    while True:
        compact = text.replace(" ", "").upper()
        if len(compact) < 15:
            return None
        # ISO 13616 mod 97 (stdnum's ISO 7064 Mod 97-10). National check digits (RIB key,
        # Belgian mod 97) are not required: a mistyped national key is still an IBAN.
        if compact[2:4].isdigit() and iban_checksum_valid(compact):
            return compact, len(text)
        cut = text.rfind(" ")
        if cut <= 4:
            return None
        text = text[:cut]


def iban_checksum_valid(compact: str) -> bool:
    """ISO 13616: the number rotated (country and key last) is 1 mod 97. `compact` is an
    IBAN shape without spaces, upper-cased: digits and A-Z only. Equal to stdnum's
    `mod_97_10.is_valid(compact[4:] + compact[:4])` (tests/scan/test_properties.py).

    ISO 7064 reads each letter as two digits (A=10 ... Z=35) and the whole as one
    decimal number; its remainder is taken here digit group by digit group, left to
    right (compiled, integer arithmetic), rather than by translating the characters
    (a dict look-up each) to a string of ~30 digits and parsing it."""
    remainder = 0
    for ch in compact[4:] + compact[:4]:
        code = ord(ch)
        if code >= 65:  # A-Z: 10-35, two digits
            remainder = (remainder * 100 + code - 55) % 97
        else:  # 0-9
            remainder = (remainder * 10 + code - 48) % 97
    return remainder == 1


def phone_fr_value(candidate: str) -> str | None:
    """The French national number (10 digits) of a PHONE_FR candidate, or None."""
    if _NATIVE_PHONE_FR_VALUE is not None:
        phone = _NATIVE_PHONE_FR_VALUE(candidate, 0, len(candidate))
        if phone is None or phone:  # "": undecided
            return phone
    return _phone_fr_value_py(candidate)


def _phone_fr_value_py(candidate: str) -> str | None:
    """phone_fr_value in Python (the fallback, and the C's oracle)."""
    number = normalise_phone(candidate)
    if len(number) == 10 and number[0] == "0" and number[1] != "0":
        return number
    return None


def phone_intl_value(candidate: str) -> str | None:
    if candidate.startswith(("+33", "0033")):
        return None  # French numbers are the PHONE_FR shape's, with its stricter form
    try:
        parsed = phonenumbers.parse(
            "+" + candidate.lstrip("+0") if candidate.startswith("00") else candidate, None
        )
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return normalise_phone(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def is_birth_label_before(text: str, end: int) -> bool:
    """Whether a birth-date label ends `text[:end]` (only separators, and maybe "le",
    between it and `end`), within BIRTH_LABEL_WINDOW characters. `text` is folded (ASCII).
    Read in C where gateway/scan/_validators.c is built."""
    if _NATIVE_BIRTH_LABEL is not None:
        found = _NATIVE_BIRTH_LABEL(text, end)
        if found is not None:  # None: undecided
            return found
    return _is_birth_label_before_py(text, end)


def _is_birth_label_before_py(text: str, end: int) -> bool:
    """is_birth_label_before in Python (the fallback, and the C's oracle).

    The rule's two readings, decided in place: "le" and 1-3 of " :" end the window and
    the label stands before "le", or the label stands before the window's end. The
    characters are read as codes: compiled, integer tests, where a one-character
    string's `.lower()` and `in` cost a call each."""
    low = max(0, end - BIRTH_LABEL_WINDOW)
    position = space_colon_run_start(text, low, end)
    if (
        1 <= end - position <= 3
        and position - 2 >= low
        and ord(text[position - 2]) | 0x20 == 0x6C  # "l" or "L"
        and ord(text[position - 1]) | 0x20 == 0x65  # "e" or "E"
        and _birth_label_ends(text, low, position - 2, True)
    ):
        return True
    return _birth_label_ends(text, low, end, False)


def space_colon_run_start(text: str, low: int, end: int) -> int:
    """Where the run of " " and ":" ending at `end` starts, not before `low` (read as
    codes: compiled, integer tests)."""
    position = end
    while position > low and (ord(text[position - 1]) == 0x20 or ord(text[position - 1]) == 0x3A):
        position -= 1
    return position


def _birth_label_ends(text: str, low: int, position: int, before_le: bool) -> bool:
    """Whether a label, then 0-4 of " :.,-", ends at `position`, not starting before
    `low` (the window's start, where the rule's word boundary holds). `before_le`: "le"
    follows `position`, so a word label needs a separator after it (a word boundary)."""
    tail = position
    while tail > low and ord(text[tail - 1]) in _BIRTH_TAIL:
        tail -= 1
    if position - tail > 4 or tail == low:
        return False  # every label ends with a letter or ")", neither a separator
    last = ord(text[tail - 1])
    if 0x41 <= last <= 0x5A:  # A-Z, lower-cased
        last |= 0x20
    if last not in _BIRTH_LABEL_LAST:
        return False  # most dates: no label ends with this character
    labels: tuple[str, ...]
    if last == 0x29:  # ")": "né(e)", "née (e)"
        labels = _BIRTH_WORDS_OPEN
    else:
        if before_le and tail == position:
            return False  # "nele": no word boundary after the label
        word_start = tail - 1
        while word_start > low and is_ascii_letter(ord(text[word_start - 1])):
            word_start -= 1
        found = _BIRTH_LABELS_BY_LAST_WORD.get(text[word_start:tail].lower())
        if found is None:
            return False
        labels = found
    for label in labels:
        start = tail - len(label)
        if (
            start >= low
            and (start == low or not is_regex_word_code(ord(text[start - 1])))
            and text[start:tail].lower() == label
        ):
            return True
    return False


def numeric_date_iso(candidate: str) -> str | None:
    """`parse_numeric_date(candidate)` in ISO form ("1984-03-12"), or None."""
    return numeric_date_iso_at(candidate, 0, len(candidate))


def numeric_date_iso_at(text: str, start: int, end: int) -> str | None:
    """`numeric_date_iso(text[start:end])`, read in place in C where
    gateway/scan/_validators.c is built."""
    if _NATIVE_NUMERIC_DATE_ISO is not None:
        day = _NATIVE_NUMERIC_DATE_ISO(text, start, end)
        if day is None or day:  # "": undecided
            return day
    return _numeric_date_iso_py(text[start:end])


def _numeric_date_iso_py(candidate: str) -> str | None:
    """numeric_date_iso in Python (the fallback, and the C's oracle).

    A DATE_NUMERIC candidate (its three numbers 1-4 ASCII digits) is read and checked
    here, in compiled code: building the `date` and its `isoformat()` cost ~8k
    instructions a birth date (two generic calls). Anything else takes that path."""
    parts = candidate.replace(".", "/").replace("-", "/").split("/")
    if len(parts) != 3:
        return None
    day, month, year = _short_number(parts[0]), _short_number(parts[1]), _short_number(parts[2])
    if day < 0 or month < 0 or year < 0:
        parsed = parse_numeric_date(candidate)
        return None if parsed is None else parsed.isoformat()
    if len(parts[2]) == 2:
        year += 2000 if year <= 30 else 1900  # as parse_numeric_date reads two-digit years
    return iso_date(year, month, day)


def date_iso(candidate: str) -> str | None:
    """`parse_date(candidate)` in ISO form, or None."""
    return date_iso_at(candidate, 0, len(candidate))


def date_iso_at(text: str, start: int, end: int) -> str | None:
    """`date_iso(text[start:end])`, read in place in C where gateway/scan/_validators.c
    is built."""
    if _NATIVE_DATE_ISO is not None:
        day = _NATIVE_DATE_ISO(text, start, end)
        if day is None or day:  # "": undecided
            return day
    return _date_iso_py(text[start:end])


def _date_iso_py(candidate: str) -> str | None:
    """date_iso in Python (the fallback, and the C's oracle): a DATE_ISO candidate
    ("1984-03-12", ASCII digits) is checked in compiled code (see _numeric_date_iso_py)."""
    if len(candidate) == 10 and candidate[4] == "-" and candidate[7] == "-":
        year = _short_number(candidate[:4])
        month, day = _short_number(candidate[5:7]), _short_number(candidate[8:])
        if year >= 0 and month >= 0 and day >= 0:
            return iso_date(year, month, day)
    parsed = parse_date(candidate)
    return None if parsed is None else parsed.isoformat()


def iso_date(year: int, month: int, day: int) -> str | None:
    """`date(year, month, day).isoformat()`, or None where `date` raises ValueError (the
    arguments are not past 9999)."""
    if not (1 <= year <= 9999 and 1 <= month <= 12 and 1 <= day <= 31):
        return None
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        if day > (29 if leap else 28):
            return None
    elif day > 30 and (month == 4 or month == 6 or month == 9 or month == 11):
        return None
    pair = _TWO_DIGITS  # a local: read five times
    return "".join([pair[year // 100], pair[year % 100], "-", pair[month], "-", pair[day]])


_TWO_DIGITS: Final = tuple(f"{n:02d}" for n in range(100))  # "00" ... "99"


def _short_number(text: str) -> int:
    """The value of `text` when it is 1-4 ASCII digits (what `int` reads, a digit at a
    time: compiled, `int()` of a string costs ~500 instructions), else -1."""
    if not 1 <= len(text) <= 4:
        return -1
    value = 0
    for ch in text:
        code = ord(ch)
        if not 0x30 <= code <= 0x39:
            return -1
        value = value * 10 + code - 0x30
    return value


def parse_date(candidate: str) -> date | None:
    """A date written dd/mm/yyyy, dd.mm.yy, yyyy-mm-dd or "12 mars 1984"; None if invalid."""
    text = candidate.lower()
    try:
        if text[:4].isdigit() and text[4:5] == "-":
            return date(int(text[:4]), int(text[5:7]), int(text[8:10]))
        words = text.split()
        if len(words) == 3 and words[1] in _MONTHS:
            day = int(words[0].removesuffix("er"))
            return date(int(words[2]), _MONTHS[words[1]], day)
    except ValueError:
        return None
    return parse_numeric_date(text)


def parse_numeric_date(candidate: str) -> date | None:
    """A date written dd/mm/yyyy or dd.mm.yy (the DATE_NUMERIC shape); None if invalid."""
    # Split on each "/", "." and "-", as re.split(r"[/.-]") would, at half its cost.
    parts = candidate.replace(".", "/").replace("-", "/").split("/")
    if len(parts) != 3:
        return None
    try:
        day, month, year = int(parts[0]), int(parts[1]), int(parts[2])
        if len(parts[2]) == 2:
            # Two-digit years: 00-30 read as 20xx, the rest as 19xx (birth dates skew old).
            year += 2000 if year <= 30 else 1900
        return date(year, month, day)
    except ValueError:
        return None


def _native_validators() -> Validators | None:
    """gateway/scan/_validators.c's validators, with this module's birth labels and month
    names (their one definition), or None where setup.py has not built it."""
    try:
        from gateway.scan._validators import Validators
    except ImportError:  # not built: the Python above, same results
        return None
    return Validators(_BIRTH_WORDS, _BIRTH_WORDS_OPEN, BIRTH_LABEL_WINDOW, tuple(_MONTHS))


# Its methods, bound once. Final: compiled, a static read and a direct (vectorcall) call.
_NATIVE: Final = _native_validators()
_NATIVE_BIRTH_LABEL: Final = None if _NATIVE is None else _NATIVE.is_birth_label_before
_NATIVE_NUMERIC_DATE_ISO: Final = None if _NATIVE is None else _NATIVE.numeric_date_iso
_NATIVE_DATE_ISO: Final = None if _NATIVE is None else _NATIVE.date_iso
_NATIVE_PHONE_FR_VALUE: Final = None if _NATIVE is None else _NATIVE.phone_fr_value
_NATIVE_NIR_KEY_VALID: Final = None if _NATIVE is None else _NATIVE.nir_key_valid
_NATIVE_IBAN_VALUE: Final = None if _NATIVE is None else _NATIVE.iban_value
