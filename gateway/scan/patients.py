"""Rostered patients and the lookup tables the engine builds from them (sans-IO).

Trust boundary: a `RosterPatient` holds PHI; it lives only in memory and in the
encrypted roster file. Its repr is masked. `RosterIndex` maps normalised values
(names, NIR, phone, e-mail) to opaque patient keys; it is built once per engine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Final

from gateway.scan._fold import alnum_key, fold_key

_TWO_DIGITS: Final = [f"{n:02d}" for n in range(32)]  # a day or month, as identity() writes it
_NON_DIGIT: Final = re.compile(r"\D")
_ASCII_NON_DIGITS: Final = bytes(c for c in range(128) if not chr(c).isdigit())  # \D in ASCII


@dataclass(frozen=True)
class RosterPatient:
    """One patient of the practice. Every field but `key` is PHI."""

    key: str  # opaque stable id (keyed hash of normalised name + birth date)
    last_name: str = field(repr=False)
    first_name: str = field(repr=False, default="")
    birth_date: date | None = field(repr=False, default=None)
    nir: str = field(repr=False, default="")
    phone: str = field(repr=False, default="")
    email: str = field(repr=False, default="")
    address: str = field(repr=False, default="")

    def __repr__(self) -> str:
        return f"RosterPatient(key={self.key})"

    def identity(self) -> str:
        """The identity a re-identification shows: "NOM Prénom (JJ/MM/AAAA)"."""
        text = f"{self.last_name.upper()} {self.first_name}".strip()
        born = self.birth_date
        if born is not None:
            # Day and month read from a table of two-digit str, the year as an int: about
            # a third of slicing the ISO form (whose isoformat() call formats through
            # sprintf), which was a fifth of strftime. strftime for years before 1000,
            # which %Y does not pad.
            year = born.year
            if year >= 1000:
                text += f" ({_TWO_DIGITS[born.day]}/{_TWO_DIGITS[born.month]}/{year})"
            else:
                text += f" ({born:%d/%m/%Y})"
        return text


def normalise_name(name: str) -> str:
    """Folded, lower-case, one space between parts; hyphens and apostrophes count as spaces."""
    return normalise_folded_name(fold_key(name))


def normalise_folded_name(folded: str) -> str:
    r"""`normalise_name` for text already folded (see `_fold`): skips the second fold.

    One space for each run of whitespace, hyphens and apostrophes, none at the ends:
    the parts `str.split()` leaves once hyphens and apostrophes are spaces (the regex
    substitution of `[\s'-]+` it replaces reads the same whitespace, and cost ~9k
    instructions a name compiled; tests/scan/test_detect_fast_paths.py checks both agree)."""
    return " ".join(folded.lower().replace("-", " ").replace("'", " ").split())


def normalise_identity(last_name: str, first_name: str, birth_date: date | None) -> str:
    born = birth_date.isoformat() if birth_date else ""
    return f"{normalise_name(last_name)}|{normalise_name(first_name)}|{born}"


def normalise_phone(text: str) -> str:
    """Digits of a phone number in French national form when it is French (+33 -> 0)."""
    if text.isascii():  # every candidate: one C translate instead of a regex substitution
        digits = text.encode("ascii").translate(None, _ASCII_NON_DIGITS).decode("ascii")
    else:
        digits = _NON_DIGIT.sub("", text)
    if text.strip().startswith("+"):
        digits = "+" + digits
    elif digits.startswith("00"):
        digits = "+" + digits[2:]
    if digits.startswith("+33"):
        rest = digits[3:]
        if rest.startswith("0"):  # "+33 (0)6 ..."
            rest = rest[1:]
        digits = "0" + rest
    return digits


def normalise_email(text: str) -> str:
    return text.strip().lower()


def normalise_nir(text: str) -> str:
    return alnum_key(text).upper()


@dataclass
class RosterIndex:
    """Normalised values -> patient keys, and name words -> (patient, role)."""

    patients: dict[str, RosterPatient] = field(default_factory=dict)
    # normalised name word sequence -> set of (patient key, role) with role "last" or "first"
    words: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    full_names: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    nir: dict[str, str] = field(default_factory=dict)
    phone: dict[str, str] = field(default_factory=dict)
    email: dict[str, str] = field(default_factory=dict)
    birth_isos: dict[str, str] = field(default_factory=dict)  # birth dates, in ISO form
    # Per name word: every patient bearing it, and (sorted) those bearing it as surname.
    word_patients: dict[str, frozenset[str]] = field(default_factory=dict)
    surname_patients: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, patients: Iterable[RosterPatient]) -> RosterIndex:
        index = cls()
        for patient in patients:
            index.add(patient)
        index.word_patients = {w: frozenset(k for k, _r in o) for w, o in index.words.items()}
        index.surname_patients = {
            w: tuple(sorted(k for k, r in o if r == "last"))
            for w, o in index.words.items()
            if any(r == "last" for _k, r in o)
        }
        return index

    def add(self, patient: RosterPatient) -> None:
        self.patients[patient.key] = patient
        last = normalise_name(patient.last_name)
        first = normalise_name(patient.first_name)
        if last:
            self.words.setdefault(last, set()).add((patient.key, "last"))
        if first:
            self.words.setdefault(first, set()).add((patient.key, "first"))
        if last and first:
            self.full_names.setdefault((last, first), []).append(patient.key)
        if patient.nir:
            self.nir[normalise_nir(patient.nir)] = patient.key
        if patient.phone:
            self.phone[normalise_phone(patient.phone)] = patient.key
        if patient.email:
            self.email[normalise_email(patient.email)] = patient.key
        if patient.birth_date is not None:
            self.birth_isos[patient.key] = patient.birth_date.isoformat()

    def literals(self) -> Sequence[str]:
        """Every name word sequence to find in text, sorted for a stable automaton."""
        return sorted(self.words)
