"""The scan engine: find patient identifiers in a whole message, then rewrite them.

Trust boundary: field texts are untrusted. Findings carry kind, span, keyed digest
and an opaque patient key, never a value. `RewriteResult.vault_entries` carries
identities and goes only to the encrypted vault.

Invariants:
- Built once per config and roster (`build_engine`); the matcher's databases are
  compiled then, never per message. Scanning holds no mutable state, so one engine
  serves every message (and thread).
- Both matchers ("hyperscan", "re") yield the same candidates, so the same findings.
- Findings of one field never overlap: a higher-priority kind (NIR, IBAN, e-mail,
  phone) wins over a name, which wins over an address, which wins over a date.
- The practice's own details and the names after "Dr" are never findings.
- Rewriting replaces every finding's span; nothing of the span survives unless the
  action is KEEP (or GENERALISE keeps a birth year, or an age's decade band).
- An age ("âgé de 67 ans", "(72 ans)") is a finding only with its context (see
  shapes.AGE); its span is the number and unit ("67 ans"): pseudonymise and redact write
  "[AGE]", generalise a ten-year band ("60-69 ans"; "90 ans et plus", as HIPAA's
  safe harbour groups ages over 89). A street with no house number is an address only
  after a residence word ("demeurant", "domicilié", "adresse :"); the span starts at
  the street type. Such a street is never taken for the practice's own address.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from crypto.pseudonym import (
    CROCKFORD,
    DIGEST_HEX,
    TOKEN_BITS,
    keyed_hmac_states,
    normalise_audience,
)
from gateway.config import PracticeConfig
from gateway.scan import names as name_rules
from gateway.scan import validators
from gateway.scan._fold import alnum_key, fold
from gateway.scan.matchers import (
    CandidateMatcher,
    find_all,
    in_packed_order,
    literal_form,
    make_matcher,
    word_view,
)
from gateway.scan.model import (
    FieldKind,
    Finding,
    FoundSpan,
    IdentifierKind,
    RewriteResult,
    TextField,
    TransformPolicy,
    TypeAction,
    VaultEntry,
)
from gateway.scan.patients import (
    RosterIndex,
    RosterPatient,
    normalise_email,
    normalise_folded_name,
    normalise_name,
    normalise_phone,
)
from gateway.scan.shapes import AGE_VALUE, STREET_CONTEXT_HEAD, STREET_TYPES, ShapeName

if TYPE_CHECKING:
    from hashlib import _Hash

    from gateway.scan._digest import Digester
    from gateway.scan._first_names import Civilities, FirstNames
    from gateway.scan._names import AddressRules


class _Shape:
    """ShapeName members as plain class attributes: reading one costs ~40 ns, through
    the Enum class ~180 ns (Python 3.11), and validation reads a dozen per candidate."""

    NIR: Final = ShapeName.NIR
    IBAN: Final = ShapeName.IBAN
    PHONE_FR: Final = ShapeName.PHONE_FR
    PHONE_INTL: Final = ShapeName.PHONE_INTL
    EMAIL: Final = ShapeName.EMAIL
    DATE_NUMERIC: Final = ShapeName.DATE_NUMERIC
    DATE_ISO: Final = ShapeName.DATE_ISO
    DATE_WORDS: Final = ShapeName.DATE_WORDS
    STREET: Final = ShapeName.STREET
    STREET_CONTEXT: Final = ShapeName.STREET_CONTEXT
    AGE: Final = ShapeName.AGE
    POSTCODE_TOWN: Final = ShapeName.POSTCODE_TOWN
    CIVILITY_NAME: Final = ShapeName.CIVILITY_NAME
    INTRO_NAME: Final = ShapeName.INTRO_NAME
    UPPER_FIRST: Final = ShapeName.UPPER_FIRST
    FIRST_UPPER: Final = ShapeName.FIRST_UPPER
    DOCTOR: Final = ShapeName.DOCTOR


class _Kind:
    """IdentifierKind members as plain class attributes (see _Shape)."""

    NAME: Final = IdentifierKind.NAME
    NIR: Final = IdentifierKind.NIR
    IBAN: Final = IdentifierKind.IBAN
    PHONE: Final = IdentifierKind.PHONE
    EMAIL: Final = IdentifierKind.EMAIL
    ADDRESS: Final = IdentifierKind.ADDRESS
    BIRTH_DATE: Final = IdentifierKind.BIRTH_DATE
    AGE: Final = IdentifierKind.AGE
    PATIENT_ID: Final = IdentifierKind.PATIENT_ID
    BURNED_IN: Final = IdentifierKind.BURNED_IN


class _Field:
    """FieldKind members as plain class attributes (see _Shape)."""

    BODY: Final = FieldKind.BODY
    SUBJECT: Final = FieldKind.SUBJECT
    DISPLAY_NAME: Final = FieldKind.DISPLAY_NAME
    FILENAME: Final = FieldKind.FILENAME
    METADATA: Final = FieldKind.METADATA
    PERSON_NAME: Final = FieldKind.PERSON_NAME
    IDENTIFIER: Final = FieldKind.IDENTIFIER
    DATE_OF_BIRTH: Final = FieldKind.DATE_OF_BIRTH


LABELS: dict[IdentifierKind, str] = {
    _Kind.NAME: "[NOM]",
    _Kind.NIR: "[NIR]",
    _Kind.IBAN: "[IBAN]",
    _Kind.PHONE: "[TEL]",
    _Kind.EMAIL: "[EMAIL]",
    _Kind.ADDRESS: "[ADRESSE]",
    _Kind.BIRTH_DATE: "[DDN]",
    _Kind.AGE: "[AGE]",
    _Kind.PATIENT_ID: "[ID]",
    _Kind.BURNED_IN: "[IMAGE]",
}
_KIND_VALUE: Final = {kind: kind.value for kind in IdentifierKind}  # a dict read, not a property
# Lower number wins an overlap.
_PRIORITY: Final = {
    _Kind.NIR: 0,
    _Kind.IBAN: 0,
    _Kind.EMAIL: 1,
    _Kind.PHONE: 2,
    _Kind.PATIENT_ID: 2,
    _Kind.NAME: 3,
    _Kind.ADDRESS: 4,
    _Kind.BIRTH_DATE: 5,
    _Kind.AGE: 5,
    _Kind.BURNED_IN: 6,
}
# Kinds replaced by the patient's token when pseudonymised (issue 3: "a name, and the
# NIR/phone/email of the same patient"); other kinds get their type label.
_TOKEN_KINDS: Final = frozenset(
    {
        _Kind.NAME,
        _Kind.NIR,
        _Kind.PHONE,
        _Kind.EMAIL,
        _Kind.PATIENT_ID,
    }
)
_PRACTICE: Final = "\x00practice"  # literal owner marking the practice's own names
_FIELD_SEPARATOR: Final = "\x00"  # never part of a shape; the literal word view reads it as a space
_FIRST_NAME_FORMS: Final = 65_536  # distinct first names whose forms an engine keeps
# Fields where a rostered surname alone is a name: short, name-bearing places.
_NAME_BEARING: Final = frozenset(
    {_Field.SUBJECT, _Field.DISPLAY_NAME, _Field.FILENAME, _Field.METADATA}
)
# The civility and intro words that may stand before a surname, each after a word
# boundary and before 1-3 of " :": one definition, for the regex and for
# gateway/scan/_first_names.c.
_CIVILITY_WORDS: Final = (
    *("m.", "mr", "mr.", "mme", "mme.", "mlle", "mlle.", "madame", "monsieur"),
    *("mademoiselle", "patient", "patiente", "pour", "bonjour", "cher", "chere", "nom"),
)
_CIVILITY_BEFORE: Final = re.compile(
    "(?:" + "|".join([r"\b" + re.escape(word) for word in _CIVILITY_WORDS]) + ")[ :]{1,3}$"
)
# How far back a civility may stand before a surname ("Mademoiselle : " is 14), and how
# far back labels are looked for ("numéro de sécurité sociale : " is 30), in characters.
_CIVILITY_WINDOW: Final = 16
_CONTEXT_WINDOW: Final = 40
# A first name next to a surname: 1-3 separators, then up to three words ("Jean",
# "Jean-Pierre", "Marie Claire"); in file names "_", "." and "-" separate too. The window
# bounds how far the words may reach (characters).
_FIRST_NAME_WINDOW: Final = 70
_FIRST_AFTER: Final = re.compile(r"[ ,]{1,3}([a-z0-9]+(?:[ '-][a-z0-9]+){0,2})")
_FIRST_AFTER_FILE: Final = re.compile(r"[ ,_.-]{1,3}([a-z0-9]+(?:[ '-][a-z0-9]+){0,2})")
_WORDS: Final = re.compile(r"[a-z0-9]+(?:[ '-][a-z0-9]+){0,2}")  # symmetric: read reversed too
_ALNUM_RUN: Final = re.compile(r"[a-z0-9]+")
_PAIR_GAP: Final = re.compile(r"[ ,]{1,3}")
_YEAR: Final = re.compile(r"(?:19|20)\d\d")
# In an AGE candidate: the number and its unit (the finding's span), and the oldest age.
_AGE_VALUE: Final = re.compile(AGE_VALUE, re.ASCII | re.IGNORECASE)
_AGE_NUMBER: Final = re.compile(r"(\d{1,3}) ?(ans?|mois)")
_MAX_AGE_YEARS: Final = 120
# "(5 ans)" after one of these is a duration ("garantie (5 ans)"), not the patient's age.
_DURATION_BEFORE: Final = re.compile(
    r"\b(?:garantie|depuis|pendant|durant|duree|recul|delai|dans|sous|il y a|tous les|"
    r"chaque|apres|avant|environ|soit)\W{0,3}$"
)
# In a STREET_CONTEXT candidate: the residence word before the street type.
_STREET_CONTEXT_HEAD: Final = re.compile(
    STREET_CONTEXT_HEAD + r"(?=(?:" + STREET_TYPES + r")\b)", re.ASCII | re.IGNORECASE
)
_PARTICLES: Final = frozenset(
    "de du des la le l d aux au en sur sous saint st sainte ste les".split()
)


# Fields that are one identifier as a whole, and its kind.
_WHOLE_FIELD_KINDS: Final = {
    _Field.PERSON_NAME: _Kind.NAME,
    _Field.IDENTIFIER: _Kind.PATIENT_ID,
    _Field.DATE_OF_BIRTH: _Kind.BIRTH_DATE,
}
# No roster word consumed (shared, never changed).
_NONE_USED: Final[frozenset[int]] = frozenset()


def _in_start_order(
    hits: list[tuple[int, int, int]], length: int, literals: int
) -> list[tuple[int, int, int]]:
    """Literal hits (index, start, end) of a field of `length` characters, `literals`
    literals in all, sorted by start, the longest first, then index: each packed in one
    int, sorted as plain ints."""
    stride = length + 1  # no hit ends past the field
    packed = [(s * stride + length - e) * literals + i for i, s, e in hits]
    packed.sort()
    return [
        (key % literals, key // literals // stride, length - key // literals % stride)
        for key in packed
    ]


def _by_start(spans: list[_Span]) -> list[_Span]:
    """Spans by start, stable: `spans` itself when already in order (a field's spans
    often are: one stage's, in candidate order), where the sort would copy it."""
    for i in range(1, len(spans)):
        if spans[i].start < spans[i - 1].start:
            break
    else:
        return spans
    count = len(spans)
    return in_packed_order(spans, [span.start * count + i for i, span in enumerate(spans)])


@dataclass(init=False, slots=True, unsafe_hash=True)  # hashable (tests); never changed once built
class _Span:
    """A finding before its digest. Built tens of times per message: compiled, this
    class and its own __init__ are native (~0.1 us each); a NamedTuple's __new__, or a
    generated __init__, runs interpreted even in a compiled module (~1 us each)."""

    kind: IdentifierKind
    start: int
    end: int
    value: str  # normalised value: digest input, never stored
    patient: str | None
    # A patient guessed from a surname alone that one rostered patient bears (the patient
    # is not named in the message): ranked as a reading, not as a rostered name.
    guessed: bool

    def __init__(
        self,
        kind: IdentifierKind,
        start: int,
        end: int,
        value: str,
        patient: str | None = None,
        guessed: bool = False,
    ) -> None:
        self.kind = kind
        self.start = start
        self.end = end
        self.value = value
        self.patient = patient
        self.guessed = guessed


def _hmac_sha256(states: tuple[_Hash, _Hash], message: str) -> bytes:
    """`crypto.pseudonym.hmac_sha256` from the key's `keyed_hmac_states`, in compiled code."""
    inner = states[0].copy()
    inner.update(message.encode("utf-8"))
    outer = states[1].copy()
    outer.update(inner.digest())
    return outer.digest()


class _PatientTokens:
    """`crypto.pseudonym.patient_token(pseudonym_key, audience, patient)`, called as
    `(patient, audience)`: the same HMAC-SHA256, its first 8 bytes read from the C
    digester's hex (gateway/scan/_digest.c hashes audience + "\n" + patient, the token's
    message) or, where it is not built, from hashlib's keyed states in compiled code.
    Interpreted, a token cost about 35k instructions; compiled with hashlib about 6k (a
    dense order names about four new patients); through the digester about 2k.
    tests/scan/test_engine.py checks that all agree.

    Tokens repeat across a lab's messages: `token` keeps them, per audience as the
    caller writes it, up to `capacity` in all (then it starts afresh). The cache holds
    only opaque keys and tokens; shared across threads, a race at worst computes a
    token twice. It is two dict look-ups: the lru_cache it replaces (a generic call and
    a key tuple) cost 2 % of a dense order's scan and rewrite, timed."""

    def __init__(self, pseudonym_key: bytes, capacity: int = 65_536) -> None:
        self._states = keyed_hmac_states(pseudonym_key)
        self._digester = native_digester(pseudonym_key)
        self._capacity = capacity
        self._cached: dict[str, dict[str, str]] = {}  # audience -> patient -> token
        self._cached_count = 0

    def token(self, patient: str, audience: str) -> str:
        by_patient = self._cached.get(audience)
        if by_patient is not None:
            token = by_patient.get(patient)
            if token is not None:
                return token
        token = self(patient, audience)
        if self._cached_count >= self._capacity:  # full: start afresh
            self._cached.clear()
            self._cached_count = 0
            by_patient = None
        if by_patient is None:
            by_patient = self._cached.setdefault(audience, {})
        by_patient[patient] = token
        self._cached_count += 1
        return token

    def __call__(self, patient: str, audience: str) -> str:
        """The token, computed (uncached)."""
        audience = normalise_audience(audience)
        if self._digester is not None:
            raw = int(self._digester.hex(audience, patient, 16), 16)
        else:
            raw = int.from_bytes(_hmac_sha256(self._states, audience + "\n" + patient)[:8], "big")
        value = raw >> (64 - TOKEN_BITS)
        alphabet = CROCKFORD  # a local: read ten times, from another module's globals
        chars = [alphabet[(value >> shift) & 31] for shift in range(45, -5, -5)]
        return "PAT-" + "".join(chars[:5]) + "-" + "".join(chars[5:])


def _literal_variants(normalised: str) -> list[str]:
    """Matchers read names as words, so one form covers "Jean-Pierre" and "JEAN PIERRE"."""
    return [literal_form(normalised).strip()]


class Engine:
    """`ScanEngine` implementation; see the module docstring."""

    def __init__(
        self,
        patients: Sequence[RosterPatient],
        practice: PracticeConfig,
        digest_key: bytes,
        pseudonym_key: bytes,
        engine: str,
    ) -> None:
        self._digest_key = digest_key
        self._pseudonym_key = pseudonym_key
        # crypto.pseudonym's keyed HMAC states for the digest key (see _value_digest), and
        # the C digester keyed alike, where gateway/scan/_digest.c is built.
        self._digest_states = keyed_hmac_states(digest_key)
        self._digester = native_digester(digest_key)
        self.roster = RosterIndex.build(patients)
        # A NIR is also looked up by its 13-digit body where the roster holds some written
        # without their key: only those can match it (each look-up in a dict as large as
        # the roster is a likely cache miss).
        self._roster_nir_bodies = any(len(nir) == 13 for nir in self.roster.nir)
        literal_owner: dict[str, str] = {}
        # Only surnames go in the automaton: every full name holds one, and first names
        # ("Marie", "Pierre", "Rose", "Claire") are the roster words most often met as
        # plain words, each hit costing Python work. First names are then read next to a
        # surname hit (_full_names) or looked up for the patients already named.
        for word in sorted(self.roster.surname_patients):
            for variant in _literal_variants(word):
                literal_owner.setdefault(variant, word)
        for text in (practice.name, *(p.name for p in practice.practitioners)):
            key = normalise_name(text)
            if key:
                for variant in _literal_variants(key):
                    literal_owner[variant] = _PRACTICE
        self._literals = sorted(literal_owner)
        self._literal_owner = [literal_owner[lit] for lit in self._literals]
        self._has_practice_literals = _PRACTICE in self._literal_owner
        # 1 where the literal is the practice's: read without the owner's string (with
        # 100,000 patients, 200,000 strings spread over the heap, each read a cache miss).
        self._practice_literal = bytes(
            [1 if owner == _PRACTICE else 0 for owner in self._literal_owner]
        )
        self.matcher: CandidateMatcher = make_matcher(engine, self._literals)
        # Per surname, the first and the last words of its patients' first names.
        heads: dict[str, set[str]] = {}
        tails: dict[str, set[str]] = {}
        for last, first in self.roster.full_names:
            words = first.split(" ")
            heads.setdefault(last, set()).add(words[0])
            tails.setdefault(last, set()).add(words[-1])
        self._first_heads = {last: frozenset(w) for last, w in heads.items()}
        self._first_tails = {last: frozenset(w) for last, w in tails.items()}
        # First words of every rostered last and first name (of patients with both).
        self._name_heads = frozenset(
            part.split(" ", 1)[0] for pair in self.roster.full_names for part in pair
        )
        # gateway/scan/_first_names.c reads the first names next to a surname hit and
        # looks names up over these tables (never changed once built), or None: the
        # Python methods below.
        self._native_first_names = native_first_names(
            self.roster.full_names, self._first_heads, self._first_tails, self._name_heads
        )
        self._tokens = _PatientTokens(pseudonym_key)
        # A first name's normalised and word-view forms, by the first name as rostered
        # (see _first_name_literals): filled as messages name patients, at most
        # _FIRST_NAME_FORMS of them. Threads may add the same entry twice: the same value.
        # (Unlike the token cache it holds roster data, first names, as self.roster does.)
        self._first_name_forms: dict[str, tuple[str, bytes]] = {}
        self._practice_phones = {normalise_phone(p) for p in practice.phones}
        self._practice_emails = {normalise_email(e) for e in practice.emails}
        self._practice_addresses = [alnum_key(a) for a in practice.addresses if alnum_key(a)]
        self._practice_candidates = self._practice_shape_candidates(practice)
        self._practice_ids = {
            "".join(ch for ch in p.rpps if ch.isdigit()) for p in practice.practitioners if p.rpps
        }

    @property
    def engine_name(self) -> str:
        return self.matcher.name

    def _practice_shape_candidates(self, practice: PracticeConfig) -> dict[str, frozenset[str]]:
        """Per shape, the folded texts of the candidates the practice's own phones, e-mails
        and addresses make when written as configured, kept only when validation rejects
        them whatever their context: a signature's candidates are then dropped by one set
        look-up (of the text itself: a (shape, text) key cost a tuple built and hashed per
        candidate)."""
        rejects: dict[str, set[str]] = {}
        for text in (*practice.phones, *practice.emails, *practice.addresses):
            folded = fold(text)
            for name, start, end in self.matcher.shapes(folded, folded.encode("ascii")):
                value = folded[start:end]
                if name is _Shape.PHONE_FR or name is _Shape.PHONE_INTL:
                    phone = (
                        validators.phone_fr_value(value)
                        if name is _Shape.PHONE_FR
                        else validators.phone_intl_value(value)
                    )
                    rejected = phone is None or phone in self._practice_phones
                elif name is _Shape.EMAIL:
                    rejected = normalise_email(value) in self._practice_emails
                elif name is _Shape.STREET or name is _Shape.POSTCODE_TOWN:
                    rejected = self._is_practice_address(value)
                else:
                    rejected = False
                if rejected:
                    rejects.setdefault(name, set()).add(value)
        return {name: frozenset(texts) for name, texts in rejects.items()}

    # -- ScanEngine ----------------------------------------------------------------

    def token_for_patient(self, patient: str, audience: str) -> str:
        return self._tokens.token(patient, audience)

    def patient_for_email(self, address: str) -> str | None:
        if "<" in address and ">" in address:
            address = address[address.rindex("<") + 1 : address.rindex(">")]
        return self.roster.email.get(normalise_email(address))

    def scan_fields(
        self, fields: Sequence[TextField], *, check: Callable[[], None] | None = None
    ) -> list[Finding]:
        tick = check or _no_check  # the caller's time budget, checked once per field
        findings: list[Finding] = []
        digests: dict[tuple[IdentifierKind, str], str] = {}  # per message: values repeat
        for index, field_spans in enumerate(self._field_spans(fields, tick)):
            for span in field_spans:
                kind, value = span.kind, span.value
                if kind is _Kind.NAME:
                    value = name_digest_value(value)
                digest = digests.get((kind, value))
                if digest is None:
                    digest = digests[kind, value] = self._value_digest(_KIND_VALUE[kind], value)
                findings.append(Finding(kind, index, span.start, span.end, digest, span.patient))
        return findings

    def scan_spans(
        self, fields: Sequence[TextField], *, check: Callable[[], None] | None = None
    ) -> list[FoundSpan]:
        spans: list[FoundSpan] = []
        for index, field_spans in enumerate(self._field_spans(fields, check or _no_check)):
            for span in field_spans:
                spans.append((span.kind, index, span.start, span.end))
        return spans

    def _field_spans(
        self, message: Sequence[TextField], tick: Callable[[], None]
    ) -> list[list[_Span]]:
        """Per field, the spans `scan_fields` reports (non-overlapping, none empty), in
        order: the whole scan but the digests."""
        fields = list(message)  # compiled, a list's items are read natively, a Sequence's not
        count = len(fields)
        folded_fields = self._fold_fields(fields)
        spans: list[list[_Span]] = [[] for _ in range(count)]
        candidates: list[list[tuple[ShapeName, int, int]]] = [[] for _ in range(count)]
        literal_hits: list[list[tuple[int, int, int]]] = [[] for _ in range(count)]
        view_starts = [-1] * count  # where each field's word view starts in `view`
        scanned: list[int] = []
        whole_kinds = _WHOLE_FIELD_KINDS
        for index, field in enumerate(fields):
            tick()
            if field.kind in whole_kinds:
                spans[index].append(self._whole_field(field, folded_fields[index]))
            elif folded_fields[index]:
                scanned.append(index)
        view = self._match_message(folded_fields, scanned, candidates, literal_hits, view_starts)

        # Most fields of a message hold no candidate and no roster word: every step below
        # only visits the fields that do (and, for names already met, every field).
        protected = [
            self._protected_spans(folded_fields[i], candidates[i], literal_hits[i])
            if candidates[i] or literal_hits[i]
            else _NO_SPANS
            for i in range(count)
        ]
        named: set[str] = set()
        roster_words: list[list[tuple[int, int, str]]] = [
            self._roster_words(folded_fields[i], literal_hits[i], protected[i])
            if literal_hits[i]
            else []
            for i in range(count)
        ]
        consumed: list[AbstractSet[int]] = [_NONE_USED] * count
        with_words = [i for i in range(count) if roster_words[i]]
        for index in with_words:
            tick()
            names, consumed[index] = self._full_names(
                fields[index], folded_fields[index], roster_words[index], named
            )
            spans[index].extend(names)
        first_names = self._first_name_literals(named)
        # The named patients' first names alone, looked for once in the message's word
        # view (per field, a decode and a find per name cost ~27k instructions an order
        # whose patients are rostered), then told to their fields.
        first_name_spans = (
            self._first_names_in_view(
                fields,
                folded_fields,
                view,
                scanned,
                [view_starts[index] for index in scanned],
                first_names,
                protected,
            )
            if first_names
            else {}
        )
        for index in range(count) if named else with_words:
            tick()
            field = fields[index]
            if roster_words[index]:
                spans[index].extend(
                    self._single_names(
                        field, folded_fields[index], roster_words[index], named, consumed[index]
                    )
                )
            if first_names:
                in_view = first_name_spans.get(index)
                if in_view is not None:
                    spans[index].extend(in_view)
                elif view_starts[index] < 0 and folded_fields[index]:
                    # A whole field (_WHOLE_FIELD_KINDS): the matchers did not read it.
                    own_view = word_view(folded_fields[index].encode("ascii"))
                    spans[index].extend(
                        self._first_names_in_view(
                            fields, folded_fields, own_view, [index], [0], first_names, protected
                        ).get(index, [])
                    )
        # Birth dates of the patients named in this message -> the patient.
        born: dict[str, str] = {}  # by ISO date: candidates are read as ISO dates
        for key in sorted(named):
            day = self.roster.birth_isos.get(key)
            if day is not None:
                born.setdefault(day, key)
        for index, field in enumerate(fields):
            field_kind = field.kind
            if field_kind is _Field.DISPLAY_NAME:
                tick()
                spans[index].extend(self._display_names(folded_fields[index], protected[index]))
            elif field_kind is _Field.FILENAME:
                tick()
                # "2024-11-02_Dupont-Jean-UpperJaw.stl": capitalised words in a file name,
                # hyphens included, are taken as a name when two or more follow each other.
                spans[index].extend(
                    self._display_names(folded_fields[index].replace("-", " "), protected[index])
                )
            if candidates[index]:
                tick()
                self._validate(
                    field,
                    folded_fields[index],
                    candidates[index],
                    protected[index],
                    born,
                    spans[index],
                )
        for index, field_spans in enumerate(spans):
            if not field_spans:
                continue
            tick()
            folded = folded_fields[index]
            if len(field_spans) > 1:  # resolved, they hold no empty span
                spans[index] = _resolve_overlaps(_merge_addresses(field_spans, folded), folded)
            elif field_spans[0].end <= field_spans[0].start:
                spans[index] = []  # an empty whole field: consumed, nothing to rewrite
        return spans

    def rewrite_fields(
        self,
        fields: Sequence[TextField],
        findings: Sequence[Finding],
        policy: TransformPolicy,
        *,
        check: Callable[[], None] | None = None,
    ) -> RewriteResult:
        tick = check or _no_check
        # Each field's findings are a run of the list in field order, as scan_fields
        # gives them (a caller's in another order are put in it, stably): walked, where
        # grouping them in a dict of lists cost ~3k instructions a dense order.
        ordered = list(findings)
        if not _in_field_order(ordered):
            ordered.sort(key=_field_of)
        total = len(ordered)
        position = 0
        texts: list[str] = []
        vault: dict[str, VaultEntry] = {}
        actions: dict[IdentifierKind, TypeAction] = {}  # policy.action_for, once per kind
        for index, field in enumerate(fields):
            tick()
            text = field.text
            while position < total and ordered[position].field < index:
                position += 1  # a finding for no field (a negative index): nothing to do
            stop = position
            while stop < total and ordered[stop].field == index:
                stop += 1
            if stop == position:
                texts.append(text)
                continue
            field_findings = ordered[position:stop]
            position = stop
            if len(field_findings) > 1 and not _in_rewrite_order(field_findings):
                field_findings.sort(key=_start_longest)
            # One join of the kept slices and the replacements.
            pieces: list[str] = []
            cursor = 0
            for finding in field_findings:
                start, end = finding.start, finding.end
                if start < cursor:  # overlapping findings from a caller: covered already
                    if end > cursor:
                        cursor = end
                    continue
                pieces.append(text[cursor:start])
                kind = finding.kind
                action = actions.get(kind)
                if action is None:
                    action = actions[kind] = policy.action_for(kind)
                if action is TypeAction.PSEUDONYMISE and kind in _TOKEN_KINDS:
                    pieces.append(self._pseudonym(finding, text, policy.audience, vault))
                elif action is TypeAction.PSEUDONYMISE or action is TypeAction.REDACT:
                    pieces.append(LABELS[kind])
                else:
                    pieces.append(_other_replacement(action, kind, text[start:end]))
                cursor = end
            pieces.append(text[cursor:])
            texts.append("".join(pieces))
        return RewriteResult(texts=texts, vault_entries=list(vault.values()))

    def _value_digest(self, kind: str, value: str) -> str:
        """`crypto.pseudonym.value_digest(digest_key, kind, value)`, computed here: the same
        HMAC-SHA256 from the same keyed states, in one C call (gateway/scan/_digest.c) or,
        where it is not built, in compiled code with hashlib's. Interpreted, the call cost
        about 1.5 us, a tenth of a dense message's scan (about ten digests each);
        tests/scan/test_engine.py and test_digest_native.py check that all agree."""
        if self._digester is not None:
            return self._digester.hex(kind, value, DIGEST_HEX)
        mac = _hmac_sha256(self._digest_states, kind + "\n" + value)
        return mac[: DIGEST_HEX // 2].hex()  # hex of the bytes kept only

    # -- rewriting -----------------------------------------------------------------

    def _pseudonym(
        self, finding: Finding, text: str, audience: str, vault: dict[str, VaultEntry]
    ) -> str:
        """The patient's token (its vault entry added once per token), else the label."""
        patient = finding.patient
        if patient is None:
            if finding.kind is not _Kind.NAME:
                return LABELS[finding.kind]
            # An unrostered name: a stable token from its keyed digest.
            patient = "n-" + finding.digest
        token = self._tokens.token(patient, audience)
        if token not in vault:  # the first occurrence's identity, as before
            original = text[finding.start : finding.end]
            if finding.patient is None:
                identity = " ".join(original.split())
            else:
                rostered = self.roster.patients.get(patient)
                identity = rostered.identity() if rostered else original.strip()
            vault[token] = VaultEntry(
                token=token, audience=audience, patient=patient, identity=identity
            )
        return token

    # -- detection -----------------------------------------------------------------

    @classmethod
    def _fold_fields(cls, fields: list[TextField]) -> list[str]:
        """Every field folded, each alone: `fold` returns an ASCII field itself. (And where
        gateway/scan/_native_text.c is not built, a text is stored one byte a character
        unless it holds a character past U+00FF ("€", "’"), and only such a text takes
        the slow, character by character, encoding path of the Python `fold`: folded in
        one join, every field of a message did as soon as one had a price in euros.)"""
        return [cls._fold_field(field) for field in fields]

    @staticmethod
    def _fold_field(field: TextField) -> str:
        folded = fold(field.text)
        if field.kind is _Field.FILENAME:
            # DUPONT_Jean_2024-11-02.stl: underscores separate words in file names.
            folded = folded.replace("_", " ")
        return folded

    def _match_message(
        self,
        folded_fields: list[str],
        scanned: list[int],
        candidates: list[list[tuple[ShapeName, int, int]]],
        literal_hits: list[list[tuple[int, int, int]]],
        view_starts: list[int],
    ) -> bytes:
        """Run the matchers once over all fields joined by NUL, then split hits per field
        (candidates sorted by start and end). Returns the fields' word view, and sets
        where each field's own view starts in it (`view_starts`).

        One pass per message instead of two per field: a message has tens of small
        fields (subject, names, file names). No shape matches NUL, so no candidate
        spans two fields; a literal hit across a boundary is dropped. NUL reads as a
        space in the word view, so a field's slice of the joined view, with the space
        on each side, is the field's own word view (sliced only when read).
        """
        if not scanned:
            return b""
        if len(scanned) == 1:  # one field (a document's text): no offsets to map back
            only = scanned[0]
            data = folded_fields[only].encode("ascii")
            candidates[only] = self.matcher.shapes_by_field(
                folded_fields[only], data, [0], [len(folded_fields[only])]
            )[0]
            view = word_view(data)
            literal_hits[only] = self.matcher.literals(view)
            view_starts[only] = 0
            return view
        starts: list[int] = []
        lengths: list[int] = []
        position = 0
        for index in scanned:
            starts.append(position)
            view_starts[index] = position
            length = len(folded_fields[index])
            lengths.append(length)
            position += length + 1
        joined = _FIELD_SEPARATOR.join([folded_fields[index] for index in scanned])
        data = joined.encode("ascii")
        # Sorted by start and end, per field (re-read, sorted and split in one C call).
        for slot, field_candidates in enumerate(
            self.matcher.shapes_by_field(joined, data, starts, lengths)
        ):
            candidates[scanned[slot]] = field_candidates
        view = word_view(data)
        for slot, field_hits in enumerate(self.matcher.literals_by_field(view, starts, lengths)):
            literal_hits[scanned[slot]] = field_hits
        return view

    def _whole_field(self, field: TextField, folded: str) -> _Span:
        """The span of a field that is an identifier as a whole (`_WHOLE_FIELD_KINDS`)."""
        kind = _WHOLE_FIELD_KINDS[field.kind]
        stripped = field.text.strip()
        if not stripped:
            return _Span(kind, 0, 0, "")  # nothing to rewrite, but the field is consumed
        start = field.text.index(stripped[0])
        end = start + len(stripped)
        if kind is _Kind.NAME:
            value = normalise_name(folded[start:end].replace("^", " "))
            patient = self._patient_for_name_words(value.split())
            return _Span(kind, start, end, value, patient)
        return _Span(kind, start, end, alnum_key(stripped))

    def _patient_for_name_words(self, words: list[str]) -> str | None:
        """The patient key of the rostered full name `words` (ASCII) make, in either
        order, or None."""
        native = self._native_first_names
        if native is not None:  # gateway/scan/_first_names.c: the same results
            return native.patient_for_words(words)
        return self._patient_for_name_words_py(words)

    def _patient_for_name_words_py(self, words: list[str]) -> str | None:
        if not words or words[0] not in self._name_heads:
            return None  # no rostered last or first name starts with the first word
        full_names = self.roster.full_names
        for cut in range(1, len(words)):
            if len(words) == 2:  # most names: the words themselves, no slices and joins
                left, right = words[0], words[1]
            else:
                left, right = " ".join(words[:cut]), " ".join(words[cut:])
            # Both orders, as two look-ups: compiled, a loop over a tuple of the two pairs
            # is a generic Python iteration.
            keys = full_names.get((left, right)) or full_names.get((right, left))
            if keys:
                return min(keys)
        return None

    def _protected_spans(
        self,
        folded: str,
        candidates: list[tuple[ShapeName, int, int]],
        hits: list[tuple[int, int, int]],
    ) -> _SpanIndex:
        spans = [(s, e) for name, s, e in candidates if name is _Shape.DOCTOR]
        if self._has_practice_literals:
            # The flag read by index: compiled, a native byte read, where the literal
            # index's look-up in a frozenset boxed it first (an allocation past 256).
            practice = self._practice_literal
            for index, s, e in hits:
                if practice[index] and _is_word(folded, s, e):
                    spans.append((s, e))
        return _SpanIndex(spans) if spans else _NO_SPANS

    def _roster_words(
        self, folded: str, hits: list[tuple[int, int, int]], protected: _SpanIndex
    ) -> list[tuple[int, int, str]]:
        """Roster literal hits (whole words by construction), longest first, no nesting."""
        words: list[tuple[int, int, str]] = []
        owners = self._literal_owner
        last_end = -1
        # By start, longest first, then literal index. Hyperscan reports them by end, which
        # for words none nested in another (most fields) is that order already: read as
        # they are. Else each hit is packed in one int of those three, sorted as plain ints
        # (no tuple built and compared per hit).
        ordered = hits
        for k in range(1, len(hits)):
            index, start, end = hits[k]
            index_before, start_before, end_before = hits[k - 1]
            if start_before > start or (
                start_before == start
                and (end_before < end or (end_before == end and index_before > index))
            ):
                ordered = _in_start_order(hits, len(folded), len(owners))
                break
        for index, start, end in ordered:
            owner = owners[index]
            if owner == _PRACTICE or start < last_end:
                continue  # the practice's names; or inside a longer name ("jean" in "jean pierre")
            if protected and protected.contains(start, end):
                continue
            words.append((start, end, owner))
            last_end = end
        return words

    def _full_names(
        self,
        field: TextField,
        folded: str,
        words: list[tuple[int, int, str]],
        named: set[str],
    ) -> tuple[list[_Span], set[int]]:
        """Surname hits with a first name of the same patient just before or after.

        Returns the names and the indices of the surname hits they consumed."""
        found: list[_Span] = []
        used: set[int] = set()
        if not self.roster.full_names or not words:
            return found, used
        in_file_name = field.kind is _Field.FILENAME
        native = self._native_first_names
        # gateway/scan/_first_names.c walks the words in one call, with the same results.
        taken = (
            native.full_names(folded, words, in_file_name)
            if native is not None
            else self._full_names_walk_py(folded, words, in_file_name)
        )
        if taken is None:
            return found, used
        for index, match in taken:
            used.add(index)
            if match is None:
                continue  # inside the name taken before it
            start, end, surname = words[index]
            name_start, name_end, first = match
            patient = sorted(self.roster.full_names[(surname, first)])[0]
            named.add(patient)
            found.append(
                _Span(
                    _Kind.NAME,
                    min(start, name_start),
                    max(end, name_end),
                    f"{surname} {first}",
                    patient,
                )
            )
        return found, used

    def _full_names_walk_py(
        self, folded: str, words: list[tuple[int, int, str]], in_file_name: bool
    ) -> list[tuple[int, tuple[int, int, str] | None]] | None:
        """The roster words (by start, none nested) taken by a first name of the same
        patient read before them, else after them, and those inside the name taken before
        them: (index, match), match None for the latter; None where no word is taken.
        The hits' neighbours are read in `folded` itself; a lower-cased copy is made only
        where a first name of the surname's patients stands next to it (rare)."""
        after_re = _FIRST_AFTER_FILE if in_file_name else _FIRST_AFTER
        taken: list[tuple[int, tuple[int, int, str] | None]] = []
        taken_until = -1
        for index, (start, end, surname) in enumerate(words):
            if start < taken_until:
                taken.append((index, None))
                continue
            match = self._first_name_before_py(folded, start, surname, in_file_name)
            if match is None:
                match = self._first_name_after_py(folded, end, surname, after_re, in_file_name)
            if match is not None:
                taken.append((index, match))
                taken_until = max(end, match[1])
        return taken or None

    def _first_name_after_py(
        self, folded: str, end: int, surname: str, pattern: re.Pattern[str], in_file_name: bool
    ) -> tuple[int, int, str] | None:
        # Most surnames are followed by no first name of theirs: check the word after the
        # 1-3 separators against the first names' first words before any regex.
        heads = self._first_heads.get(surname)
        if heads is None:
            return None
        size = len(folded)
        position = end
        while (
            position < size
            and position - end < 4
            and _is_first_name_separator(ord(folded[position]), in_file_name)
        ):
            position += 1
        if not 1 <= position - end <= 3:
            return None  # the pattern's [ ,]{1,3} then a word character fails here
        word_end = position
        while word_end < size and _is_word_code(ord(folded[word_end])):
            word_end += 1
        if folded[position:word_end].lower() not in heads:
            return None  # every first name tried below starts with this word
        lower = folded.lower()  # folded is ASCII: same length
        m = pattern.match(lower, end, end + _FIRST_NAME_WINDOW)
        if m is None:
            return None
        parts = list(_ALNUM_RUN.finditer(lower, m.start(1), m.end(1)))
        for count in range(len(parts), 0, -1):  # longest first name first
            first = " ".join(p.group() for p in parts[:count])
            if (surname, first) in self.roster.full_names:
                return parts[0].start(), parts[count - 1].end(), first
        return None

    def _first_name_before_py(
        self, folded: str, start: int, surname: str, in_file_name: bool
    ) -> tuple[int, int, str] | None:
        # Read backwards (a `$`-anchored search would try every start in the window):
        # skip the 1-3 separators, then match the words on the reversed text. Both read
        # in place: most surnames are preceded by no first name of theirs, and the window
        # is copied only when the word before them is the end of one.
        window_start = max(0, start - _FIRST_NAME_WINDOW)
        group_end = start
        while group_end > window_start and _is_first_name_separator(
            ord(folded[group_end - 1]), in_file_name
        ):
            group_end -= 1
        if not 1 <= start - group_end <= 3:
            return None
        # The last word in the window, before any reversed copy or regex.
        tails = self._first_tails.get(surname)
        if tails is None:
            return None
        word_start = group_end
        while word_start > window_start and _is_word_code(ord(folded[word_start - 1])):
            word_start -= 1
        if word_start == group_end or folded[word_start:group_end].lower() not in tails:
            return None  # every first name tried below ends with this word
        lower = folded.lower()  # folded is ASCII: same length
        reversed_left = lower[window_start:group_end][::-1]
        m = _WORDS.match(reversed_left)
        if m is None:
            return None
        parts = list(_ALNUM_RUN.finditer(lower, group_end - m.end(), group_end))
        if parts and parts[0].start() > 0 and lower[parts[0].start() - 1].isalnum():
            parts = parts[1:]  # the window cut a word: not a whole one
        for count in range(len(parts), 0, -1):  # longest first name first
            first = " ".join(p.group() for p in parts[-count:])
            if (surname, first) in self.roster.full_names:
                return parts[-count].start(), parts[-1].end(), first
        return None

    def _first_name_literals(self, named: set[str]) -> list[tuple[str, str, bytes]]:
        """(patient key, normalised first name, its word-view literal) of each patient
        named in the message, in key order: computed once per message, then looked for
        in every field (_first_names_in_view)."""
        found: list[tuple[str, str, bytes]] = []
        forms = self._first_name_forms
        for key in sorted(named):
            patient = self.roster.patients.get(key)
            if patient is None or not patient.first_name:
                continue
            form = forms.get(patient.first_name)
            if form is None:
                first = normalise_name(patient.first_name)
                form = (first, literal_form(first).encode("ascii")) if first else ("", b"")
                if len(forms) < _FIRST_NAME_FORMS:
                    forms[patient.first_name] = form
            if form[0]:
                found.append((key, form[0], form[1]))
        return found

    def _first_names_in_view(
        self,
        fields: list[TextField],
        folded_fields: list[str],
        view: bytes,
        scanned: list[int],
        starts: list[int],
        first_names: list[tuple[str, str, bytes]],
        protected: list[_SpanIndex],
    ) -> dict[int, list[_Span]]:
        """By field index, the first names alone, capitalised, of the patients named in
        this message (`first_names`: see _first_name_literals), in the fields `scanned`,
        whose word views are slices of `view` starting at `starts` (ascending; one field's
        own view: [index], [0]). Each field's, in the order a search of its own view finds
        them: by name, then start."""
        found: dict[int, list[_Span]] = {}
        if not scanned:
            return found
        for name, at in find_all(view, [literal for _key, _first, literal in first_names]):
            key, first, literal = first_names[name]
            slot = _count_below(starts, at + 1) - 1  # the field whose view holds `at`
            index = scanned[slot]
            start = at - starts[slot]  # the field's view is padded by one space
            end = start + len(literal) - 2
            field = fields[index]
            if (
                end <= len(folded_fields[index])  # not across the next field
                and (field.text[start : start + 1].isupper() or field.kind in _NAME_BEARING)
                and not protected[index].overlaps(start, end)
            ):
                found.setdefault(index, []).append(_Span(_Kind.NAME, start, end, first, key))
        return found

    def _single_names(
        self,
        field: TextField,
        folded: str,
        words: list[tuple[int, int, str]],
        named: set[str],
        used: AbstractSet[int],
    ) -> list[_Span]:
        """Surnames alone: of a patient named in this message, or after a civility, in
        capitals, or in a name-bearing field (subject, file name, display name)."""
        found: list[_Span] = []
        text = field.text
        name_bearing = field.kind in _NAME_BEARING
        for i, (start, end, word) in enumerate(words):
            if used and i in used:
                continue
            if named:
                owners = self.roster.word_patients.get(word)
                in_message = named.intersection(owners) if owners else None
                if in_message:
                    if name_bearing or _is_upper_char(text[start]):
                        found.append(_Span(_Kind.NAME, start, end, word, min(in_message)))
                    continue
            # The text is read first: most words met are neither in capitals nor after a
            # civility, and the surnames' dict is as large as the roster (with 100,000
            # patients, each look-up a likely cache miss).
            if not (
                name_bearing
                or (end - start >= 3 and _is_upper_word(text, start, end))
                or _after_civility(folded, start)
            ):
                continue
            surnames = self.roster.surname_patients.get(word)
            if surnames:
                # One rostered patient bears it: theirs, as a guess. "Noah CHEVALLIER",
                # read in context, is another Chevallier: the longer reading wins (_rank).
                if len(surnames) == 1:
                    found.append(_Span(_Kind.NAME, start, end, word, surnames[0], True))
                else:
                    found.append(_Span(_Kind.NAME, start, end, word))
        return found

    def _validate(
        self,
        field: TextField,
        folded: str,
        candidates: list[tuple[ShapeName, int, int]],
        protected: _SpanIndex,
        born: dict[str, str],
        out: list[_Span],
    ) -> None:
        """Append to `out` the spans of the candidates (sorted by start, end) that pass."""
        streets: list[tuple[int, int]] = []
        names: set[tuple[int, int]] = set()
        ibans: list[tuple[int, int, int]] = []  # (span start, span end, candidate end)
        practice = self._practice_candidates
        roster = self.roster
        # Compiled, out.append(...) is a native list append (a bound method saved in a
        # variable would be a generic call), and calls spell their arguments out (a
        # `*span` call goes through a tuple and Python's generic call).
        # Most frequent shapes first; DOCTOR candidates only protect (see _protected_spans).
        # The candidate's text is copied only in the branches that read it.
        for name, start, end in candidates:
            if name is _Shape.DOCTOR:
                continue
            if name is _Shape.DATE_NUMERIC or name is _Shape.DATE_ISO or name is _Shape.DATE_WORDS:
                # A birth date: a valid date, of a patient named in this message or after a
                # birth label. Most dates are neither (appointments, orders): without named
                # patients, the label is looked at first.
                labelled = not born and validators.is_birth_label_before(folded, start)
                if not born and not labelled:
                    continue
                day = (
                    validators.numeric_date_iso_at(folded, start, end)
                    if name is _Shape.DATE_NUMERIC
                    else validators.date_iso_at(folded, start, end)
                )
                if day is None:
                    continue
                if labelled or day in born or validators.is_birth_label_before(folded, start):
                    out.append(_Span(_Kind.BIRTH_DATE, start, end, day, born.get(day)))
            elif name is _Shape.UPPER_FIRST or name is _Shape.FIRST_UPPER:
                if (names and (start, end) in names) or (
                    protected and protected.overlaps(start, end)
                ):
                    continue  # a pair is all-or-nothing: its span is the candidate's
                if name_rules.pair_span(folded, start, end) is not None:
                    names.add((start, end))  # "Mme Marie DUPONT" is also "Marie DUPONT": once
                    out.append(self._context_name(folded, start, end))
            elif name is _Shape.PHONE_FR or name is _Shape.PHONE_INTL:
                if (
                    name is _Shape.PHONE_INTL
                    and ibans
                    and _within_sole_iban(start, end, ibans, candidates)
                ):
                    continue  # "FR12 0072 4646 ...": the IBAN's digits, never kept
                text = folded[start:end]
                texts = practice.get(name)
                if texts is not None and text in texts:
                    continue
                phone = (
                    validators.phone_fr_value(text)
                    if name is _Shape.PHONE_FR
                    else validators.phone_intl_value(text)
                )
                if phone is not None and phone not in self._practice_phones:
                    out.append(_Span(_Kind.PHONE, start, end, phone, roster.phone.get(phone)))
            elif name is _Shape.EMAIL:
                text = folded[start:end]
                texts = practice.get(name)
                if texts is not None and text in texts:
                    continue
                email = normalise_email(text)
                if email not in self._practice_emails:
                    out.append(_Span(_Kind.EMAIL, start, end, email, roster.email.get(email)))
            elif name is _Shape.STREET:
                # The practice's own street, as its config writes it: a trimmed span (a
                # prefix of this one) would be the practice's too.
                texts = practice.get(name)
                if texts is not None and folded[start:end] in texts:
                    continue
                end = _street_end(field.text, folded, start, end)
                if end > start:
                    key = alnum_key(folded[start:end])  # the span's value, and the practice test's
                    if not self._is_practice_key(key):
                        streets.append((start, end))
                        out.append(_Span(_Kind.ADDRESS, start, end, key))
            elif name is _Shape.STREET_CONTEXT:
                # Someone's residence: no practice check (a number-less "avenue des
                # Tilleuls" would read as part of the practice's "8 avenue des Tilleuls").
                head = _STREET_CONTEXT_HEAD.match(folded, start, end)
                street_start = head.end() if head is not None else start
                end = _street_end(field.text, folded, street_start, end)
                if end > street_start:
                    streets.append((street_start, end))
                    out.append(
                        _Span(_Kind.ADDRESS, street_start, end, alnum_key(folded[street_start:end]))
                    )
            elif name is _Shape.AGE:
                if folded[start] == "(" and _DURATION_BEFORE.search(
                    folded[max(0, start - 16) : start].lower()
                ):
                    continue
                age = _AGE_VALUE.search(folded, start, end)
                if age is not None:
                    years = _age_years(age.group())
                    if years is not None and years <= _MAX_AGE_YEARS:
                        out.append(_Span(_Kind.AGE, age.start(), age.end(), str(years)))
            elif name is _Shape.POSTCODE_TOWN:
                texts = practice.get(name)
                if texts is not None and folded[start:end] in texts:
                    continue
                end = _town_end(folded, start, end)
                # The street it follows is among the last ones met (candidates come sorted).
                after_street = any(_is_address_gap(folded, e, start) for _s, e in streets[-3:])
                # At a line start (spaces allowed) or after a comma, read in place.
                window_start = max(0, start - _CONTEXT_WINDOW)
                position = start
                while position > window_start and ord(folded[position - 1]) == 0x20:
                    position -= 1
                if position > window_start:
                    last = ord(folded[position - 1])
                    line_start = last == 0x0A or last == 0x0D or last == 0x2C  # \n, \r, ","
                else:
                    line_start = window_start == 0
                if after_street or line_start:
                    key = alnum_key(folded[start:end])
                    if not self._is_practice_key(key):
                        out.append(_Span(_Kind.ADDRESS, start, end, key))
            elif name is _Shape.CIVILITY_NAME or name is _Shape.INTRO_NAME:
                span = name_rules.trigger_name_span(folded, start, end)
                if (
                    span is not None
                    and not (names and span in names)
                    and not protected.overlaps(span[0], span[1])
                ):
                    names.add(span)
                    out.append(self._context_name(folded, span[0], span[1]))
            elif name is _Shape.NIR:
                nir = validators.nir_value_at(folded, start, end)
                if nir is not None:
                    patient = roster.nir.get(nir)
                    if patient is None and self._roster_nir_bodies:
                        patient = roster.nir.get(nir[:13])
                    out.append(_Span(_Kind.NIR, start, end, nir, patient))
            elif name is _Shape.IBAN:
                iban = validators.iban_value_at(folded, start, end)
                if iban is not None:
                    ibans.append((start, start + iban[1], end))
                    out.append(_Span(_Kind.IBAN, start, start + iban[1], iban[0]))

    def _display_names(self, folded: str, protected: _SpanIndex) -> list[_Span]:
        """A display name is a person's name: each run of two or more name words."""
        found: list[_Span] = []  # a list, not a generator: compiled, a generator costs more
        run: list[tuple[int, int]] = []
        for word in [*name_rules.name_words(folded, 0, len(folded)), (-1, -1)]:
            if word[0] >= 0:
                run.append(word)
                continue
            if len(run) >= 2 or (run and folded[run[0][0] : run[0][1]].isupper()):
                start, end = run[0][0], run[-1][1]
                if not protected.overlaps(start, end):
                    found.append(self._context_name(folded, start, end))
            run = []
        return found

    def _context_name(self, folded: str, start: int, end: int) -> _Span:
        """The NAME span of folded[start:end]: its normalised value and patient."""
        native = self._native_first_names
        if native is None:
            return self._context_name_py(folded, start, end)
        # gateway/scan/_first_names.c, where the words are letters and digits one space
        # apart (most names); else normalise_folded_name, then the C look-up.
        found = native.context_name(folded, start, end)
        if found is not None:
            return _Span(_Kind.NAME, start, end, found[0], found[1])
        value = normalise_folded_name(folded[start:end].lower())
        return _Span(_Kind.NAME, start, end, value, native.patient_for_words(value.split()))

    def _context_name_py(self, folded: str, start: int, end: int) -> _Span:
        value = folded[start:end].lower()
        # normalise_folded_name, whose regex has nothing to do on words one space apart
        # (the usual name reading): split on single spaces, every piece is letters and
        # digits (no piece is empty: no double or edge space). The pieces are then the
        # words the roster look-up reads.
        words = value.split(" ")
        for word in words:
            if not word.isalnum():
                value = normalise_folded_name(value)
                words = value.split()
                break
        return _Span(_Kind.NAME, start, end, value, self._patient_for_name_words_py(words))

    def _is_practice_address(self, folded: str) -> bool:
        if not self._practice_addresses:
            return False
        return self._is_practice_key(alnum_key(folded))

    def _is_practice_key(self, key: str) -> bool:
        """`_is_practice_address` of a text whose alnum_key is `key`."""
        return any(key in address for address in self._practice_addresses)


def native_digester(digest_key: bytes) -> Digester | None:
    """gateway.scan._digest's digester for `digest_key`, or None where it is not built
    (setup.py builds it where libcrypto's headers are installed)."""
    try:
        from gateway.scan._digest import Digester
    except ImportError:
        return None
    return Digester(digest_key)


def name_digest_value(normalised_name: str) -> str:
    """A name's words in sorted order: "DUPONT Marie" and "Marie Dupont" hash alike, so an
    unrostered patient keeps one token whichever order the name is written in."""
    words = normalised_name.split()
    words.sort()  # compiled, a direct list sort; sorted() is a generic builtin call
    return " ".join(words)


# The last two letters of every civility or intro word _CIVILITY_BEFORE knows ("lle"
# ends with "le"): a cheap test that spares the regex for most roster words met in
# running text.
_CIVILITY_TAILS: Final = frozenset([word[-2:] for word in _CIVILITY_WORDS])


def native_first_names(
    full_names: dict[tuple[str, str], list[str]],
    first_heads: dict[str, frozenset[str]],
    first_tails: dict[str, frozenset[str]],
    name_heads: frozenset[str],
) -> FirstNames | None:
    """gateway.scan._first_names's reader of the first names next to a surname hit and
    look-up of names, over the engine's roster tables, or None where setup.py has not
    built it."""
    try:
        from gateway.scan._first_names import FirstNames
    except ImportError:  # not built: Engine._first_name_before_py, _after_py and others
        return None
    return FirstNames(full_names, first_heads, first_tails, name_heads, _FIRST_NAME_WINDOW)


def _native_civilities() -> Civilities | None:
    """gateway.scan._first_names's civility reader over _CIVILITY_WORDS and
    _CIVILITY_TAILS, or None where setup.py has not built it."""
    try:
        from gateway.scan._first_names import Civilities
    except ImportError:  # not built: _after_civility_py, same results
        return None
    return Civilities(_CIVILITY_WORDS, _CIVILITY_TAILS, _CIVILITY_WINDOW)


# Its method, bound once. Final: compiled, a static read and a direct (vectorcall) call.
_NATIVE_CIVILITIES: Final = _native_civilities()
_NATIVE_AFTER_CIVILITY: Final[Callable[[str, int], bool] | None] = (
    None if _NATIVE_CIVILITIES is None else _NATIVE_CIVILITIES.after
)


def _after_civility(folded: str, start: int) -> bool:
    """Whether a civility or intro word, then 1-3 of " :", ends at `start` (see
    `_after_civility_py`; gateway/scan/_first_names.c where built)."""
    if _NATIVE_AFTER_CIVILITY is not None:
        return _NATIVE_AFTER_CIVILITY(folded, start)
    return _after_civility_py(folded, start)


def _is_upper_char(char: str) -> bool:
    """`char.isupper()`, an ASCII letter answered without the call (compiled, a generic
    method call)."""
    code = ord(char)
    if code < 0x80:
        return 0x41 <= code <= 0x5A  # A-Z
    return char.isupper()


def _is_upper_word(text: str, start: int, end: int) -> bool:
    """`text[start:end].isupper()` (end - start >= 2): most roster words met are written
    "Fontaine" or "fontaine", an ASCII lower-case letter first or second, answered without
    the slice and the call."""
    first, second = ord(text[start]), ord(text[start + 1])
    if 0x61 <= first <= 0x7A or 0x61 <= second <= 0x7A:  # a-z
        return False
    return text[start:end].isupper()


def _after_civility_py(folded: str, start: int) -> bool:
    """Whether a civility or intro word, then 1-3 of " :", ends at `start`.

    Read backwards in place before the regex (compiled, integer tests): the run of
    " :" must be 1-3 long (the regex's `$` may stand before a final newline, but no
    tail ends with one), and the word's last two letters a known tail."""
    low = max(0, start - _CIVILITY_WINDOW)
    position = validators.space_colon_run_start(folded, low, start)
    if not 1 <= start - position <= 3 or position - 2 < low:
        return False
    if folded[position - 2 : position].lower() not in _CIVILITY_TAILS:
        return False
    return _CIVILITY_BEFORE.search(folded[low:start].lower()) is not None


def _is_word_code(code: int) -> bool:
    """[A-Za-z0-9]: in folded text, the characters of _ALNUM_RUN once lower-cased. Read as
    codes (`ord(text[i])`): compiled, integer comparisons, no one-character string."""
    return 97 <= code <= 122 or 65 <= code <= 90 or 48 <= code <= 57


def _is_first_name_separator(code: int, in_file_name: bool) -> bool:
    """ " " or "," (in a file name also "_", "." and "-"): what stands between a surname
    and a first name. Compiled, integer tests; `ch in " ,"` is a C-API call a character."""
    return (
        code == 0x20
        or code == 0x2C
        or (in_file_name and (code == 0x5F or code == 0x2E or code == 0x2D))
    )


def _is_word(folded: str, start: int, end: int) -> bool:
    before = folded[start - 1] if start > 0 else " "
    after = folded[end] if end < len(folded) else " "
    return not before.isalnum() and not after.isalnum()


class _SpanIndex:
    """Protected spans, sorted, answering "overlaps?" and "contains?" in O(log n).

    A message may carry thousands of "Dr ..." mentions; a linear scan per candidate
    would make scanning quadratic in the text.
    """

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        if len(spans) > 1:
            spans = sorted(spans)
        self._starts: list[int] = []
        self._max_end: list[int] = []  # running maximum of the ends, in start order
        highest = -1
        for start, end in spans:  # one pass: compiled, native appends (~2k a message)
            self._starts.append(start)
            if end > highest:
                highest = end
            self._max_end.append(highest)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def overlaps(self, start: int, end: int) -> bool:
        i = _count_below(self._starts, end)  # spans starting before `end`
        return i > 0 and self._max_end[i - 1] > start

    def contains(self, start: int, end: int) -> bool:
        i = _count_below(self._starts, start + 1)  # spans starting at or before `start`
        return i > 0 and self._max_end[i - 1] >= end


def _count_below(values: list[int], bound: int) -> int:
    """How many of `values` (ascending) are below `bound`: `bisect.bisect_left(values,
    bound)` in compiled code, native int compares, where calling the builtin boxed its
    arguments through a generic call (~300 instructions a look-up, ~4k a dense order)."""
    low, high = 0, len(values)
    while low < high:
        middle = (low + high) // 2
        if values[middle] < bound:
            low = middle + 1
        else:
            high = middle
    return low


_NO_SPANS: Final = _SpanIndex([])  # shared by the fields without protected spans (never changed)


def _within_sole_iban(
    start: int,
    end: int,
    ibans: list[tuple[int, int, int]],
    candidates: list[tuple[ShapeName, int, int]],
) -> bool:
    """Whether [start, end) lies inside a validated IBAN span (`ibans`: span start, span
    end, candidate end) that no other NIR or IBAN candidate overlaps.

    Such an IBAN is kept by _resolve_overlaps (only NIR and IBAN spans rank before it),
    so a phone number inside it is never kept, and never changes what is: it need not
    be validated. An IBAN's digit groups often read as an international number ("FR12
    0072 4646 ..." holds "0072 4646 9758 8590"), and phonenumbers, interpreted, costs
    ~65k instructions a call, ~1.6M the first time a country's metadata is loaded (two
    such calls in 100 dense orders: ~22k instructions an order)."""
    for iban_start, iban_end, candidate_end in ibans:
        if iban_start <= start and end <= iban_end:
            for name, other_start, other_end in candidates:
                if (
                    (name is _Shape.NIR or name is _Shape.IBAN)
                    and other_start < iban_end
                    and other_end > iban_start
                    and not (
                        name is _Shape.IBAN
                        and other_start == iban_start
                        and other_end == candidate_end
                    )
                ):
                    return False
            return True
    return False


def _street_end(text: str, folded: str, start: int, end: int) -> int:
    """Trim a street candidate to its name (see `_street_end_py`). `text` is the field's
    text, `folded` its folding (ASCII, the same length); 0 <= start <= end <= len(folded)."""
    if _NATIVE_STREET_END is not None:
        return _NATIVE_STREET_END(text, folded, start, end)
    return _street_end_py(text, folded, start, end)


def _street_end_py(text: str, folded: str, start: int, end: int) -> int:
    """Trim a street candidate to its name: capitalised words and particles.

    One pass over the words (read in place, no copy of the candidate): the words up to
    the street type ("rue"; the number and "bis" precede it), then the name's."""
    type_end = -1
    last_end = start
    taken = False
    for word_start, word_end in _address_words(folded, start, end):
        word = folded[word_start:word_end].lower()
        if type_end < 0:
            if word in _STREET_TYPE_WORDS:  # a word holds no "." ("av.")
                type_end = last_end = word_end
            continue
        low = word
        if _is_apostrophe_or_hyphen(ord(word[0])) or _is_apostrophe_or_hyphen(ord(word[-1])):
            low = word.strip("'-")  # compiled, a generic method call: only where it strips
        if low in _PARTICLES:
            continue
        apostrophe = low.find("'")
        if apostrophe >= 0 and low[:apostrophe] in _PARTICLES:  # "d'Alsace"
            continue
        first = ord(text[word_start])  # the written word's first character
        if first < 128:
            upper_or_digit = 65 <= first <= 90 or 48 <= first <= 57
        else:  # "É": Unicode's rules
            upper_or_digit = text[word_start].isupper() or text[word_start].isdigit()
        if upper_or_digit:
            last_end = word_end
            taken = True
            continue
        break
    return last_end if taken else start


def _address_words(folded: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each word of folded[start:end]: each run of letters, "'" and "-".

    Read a character at a time in place: compiled, integer tests, where a regex iterator
    cost a generic call and a match object per word (~4k instructions a street)."""
    words: list[tuple[int, int]] = []
    position = start
    while position < end:
        if _is_address_code(ord(folded[position])):
            word_start = position
            position += 1
            while position < end and _is_address_code(ord(folded[position])):
                position += 1
            words.append((word_start, position))
        position += 1  # past a character that is not a word's
    return words


def _is_address_code(code: int) -> bool:
    """[A-Za-z'-], the characters of an address word, read as codes (`ord(text[i])`):
    compiled, no one-character string is made."""
    return 97 <= code <= 122 or 65 <= code <= 90 or code == 39 or code == 45


def _is_apostrophe_or_hyphen(code: int) -> bool:
    return code == 39 or code == 45


_STREET_TYPE_WORDS: Final = frozenset(
    (
        "rue avenue av bd boulevard chemin allee place impasse route quai cours square residence "
        "lotissement voie passage cite hameau sentier faubourg promenade esplanade parvis chaussee "
        "rond-point villa clos domaine lieu-dit"
    ).split()
)


_TOWN_PARTICLES: Final = frozenset({"de", "la", "le", "sur", "les", "en"})  # "Saint-Cyr-sur-Loire"


# gateway/scan/_names.c's AddressRules trims the street and town candidates in C, each
# word read in place (a slice, a `.lower()` and a set look-up a word in compiled Python):
# the same results, on the same word lists, for the folded text the engine passes. The
# `_py` functions are the Python fallback (PORTIQUE_PURE_PYTHON=1, or a build without
# it) and its test oracle (tests/scan/test_addresses_native.py). Its methods are kept
# bound, each in a `Final` (compiled, a static read and a direct vectorcall).
def _native_address_rules() -> AddressRules | None:
    """gateway/scan/_names.c's address rules over this module's word lists and
    names.STOPWORDS, or None where setup.py has not built it."""
    try:
        from gateway.scan._names import AddressRules as NativeAddressRules
    except ImportError:  # not built: the Python, same results
        return None
    return NativeAddressRules(_STREET_TYPE_WORDS, _PARTICLES, name_rules.STOPWORDS, _TOWN_PARTICLES)


_NATIVE_ADDRESS_RULES: Final = _native_address_rules()
_NATIVE_STREET_END: Final[Callable[[str, str, int, int], int] | None] = (
    None if _NATIVE_ADDRESS_RULES is None else _NATIVE_ADDRESS_RULES.street_end
)
_NATIVE_TOWN_END: Final[Callable[[str, int, int], int] | None] = (
    None if _NATIVE_ADDRESS_RULES is None else _NATIVE_ADDRESS_RULES.town_end
)


def _town_end(folded: str, start: int, end: int) -> int:
    """Trim a POSTCODE_TOWN candidate after the town's words (see `_town_end_py`).
    `folded` is folded text (ASCII); 0 <= start <= end <= len(folded)."""
    if _NATIVE_TOWN_END is not None:
        return _NATIVE_TOWN_END(folded, start, end)
    return _town_end_py(folded, start, end)


def _town_end_py(folded: str, start: int, end: int) -> int:
    """Trim a "75012 Paris Merci" candidate after the town's words."""
    last = start + 5
    for word_start, word_end in _address_words(folded, start + 5, end):
        low = folded[word_start:word_end].lower()
        if low in name_rules.STOPWORDS and low not in _TOWN_PARTICLES:
            break
        last = word_end
    return last


def _is_address_gap(folded: str, start: int, end: int) -> bool:
    """Whether folded[start:end] is 1-4 of " ,\\n\\r-", what may stand between a street
    and its postcode. Read in place: compiled, integer tests, where the regex
    `[ ,\\n\\r-]{1,4}` cost a generic call and a match object (~1k instructions)."""
    if not 1 <= end - start <= 4:
        return False
    for position in range(start, end):
        code = ord(folded[position])
        if not (code == 0x20 or code == 0x2C or code == 0x0A or code == 0x0D or code == 0x2D):
            return False
    return True


def _merge_addresses(spans: list[_Span], folded: str) -> list[_Span]:
    """Join a street and the postcode + town that follows it into one address."""
    addresses = [s for s in spans if s.kind is _Kind.ADDRESS]
    if len(addresses) < 2:
        return spans
    addresses = _by_start(addresses)
    others = [s for s in spans if s.kind is not _Kind.ADDRESS]
    bounds: list[list[int]] = []  # [start, end] of merged addresses; values computed once
    for span in addresses:
        if bounds and (
            span.start <= bounds[-1][1] or _is_address_gap(folded, bounds[-1][1], span.start)
        ):
            bounds[-1][1] = max(bounds[-1][1], span.end)
        else:
            bounds.append([span.start, span.end])
    merged = [
        _Span(_Kind.ADDRESS, start, end, alnum_key(folded[start:end])) for start, end in bounds
    ]
    return others + merged


def _field_of(finding: Finding) -> int:
    return finding.field


def _in_field_order(findings: list[Finding]) -> bool:
    """Whether `findings` are by field index, as scan_fields returns them."""
    for i in range(1, len(findings)):
        if findings[i].field < findings[i - 1].field:
            return False
    return True


def _start_longest(finding: Finding) -> tuple[int, int]:
    """Rewrite order: by start, the longest first."""
    return (finding.start, -finding.end)


def _in_rewrite_order(findings: list[Finding]) -> bool:
    """Whether `findings` are already in `_start_longest` order, as a field's findings from
    `scan_fields` are (by start, none overlapping): the stable sort would leave them as
    they are, and is skipped (its key calls and tuples cost ~3k instructions a field)."""
    for i in range(1, len(findings)):
        before, after = findings[i - 1], findings[i]
        if after.start < before.start or (after.start == before.start and after.end > before.end):
            return False
    return True


def _other_replacement(action: TypeAction, kind: IdentifierKind, original: str) -> str:
    """The replacement for KEEP, REMOVE and GENERALISE (PSEUDONYMISE/REDACT: the caller)."""
    if action is TypeAction.KEEP:
        return original
    if action is TypeAction.REMOVE:
        return ""
    if action is TypeAction.GENERALISE and kind is _Kind.BIRTH_DATE:
        year = _YEAR.search(original)
        return year.group() if year else LABELS[kind]
    if action is TypeAction.GENERALISE and kind is _Kind.AGE:
        return _age_band(original)
    return LABELS[kind]


def _age_years(written: str) -> int | None:
    """Whole years of an age span ("67 ans", "1 an", "18 mois"); None if unreadable."""
    m = _AGE_NUMBER.match(fold(written).lower())
    if m is None:
        return None
    number = int(m.group(1))
    return number // 12 if m.group(2) == "mois" else number


def _age_band(written: str) -> str:
    """An age generalised to its ten-year band: "67 ans" -> "60-69 ans"."""
    years = _age_years(written)
    if years is None:
        return LABELS[_Kind.AGE]
    if years >= 90:
        return "90 ans et plus"
    low = years - years % 10
    return f"{low}-{low + 9} ans"


def _no_check() -> None:
    """The default time-budget check: none."""


def _resolve_overlaps(spans: list[_Span], folded: str) -> list[_Span]:
    """Keep non-overlapping spans: by kind priority, then roster-linked before context
    guesses ("LEGRAND Sophie" from the roster beats "Ordonnance LEGRAND"), then longest
    (see _rank). A surname alone whose patient is only guessed (the one rostered patient
    who bears it) counts as a guess: "Noah CHEVALLIER", read in context, beats the
    surname alone, whose guess would link another Chevallier and leave "Noah" in clear.

    A rostered name that loses to readings of the same patient's name keeps the words they
    do not cover: "DUPONT Jean, DUPONT Jean" also reads "Jean, DUPONT", which wins (longer)
    and would otherwise leave the first "DUPONT" in clear.

    O(n log n) in the number of spans: sorted once, then clusters of mutually overlapping
    spans are resolved alone (small ones with a sorted list, large ones with occupancy
    bytes, so that 50,000 overlapping names in one field cannot go quadratic).
    """
    ordered = _by_start(spans)
    last_end = 0
    for span in ordered:  # the usual case: no overlap, no empty span, nothing to resolve
        if span.start < last_end or span.end <= span.start:
            break
        last_end = span.end
    else:
        return ordered
    result: list[_Span] = []
    cluster: list[_Span] = []
    cluster_end = -1
    for span in ordered:
        if span.end <= span.start:  # an empty whole field: consumed, nothing to rewrite
            continue
        if cluster and span.start >= cluster_end:
            _add_resolved(result, cluster, folded)
            cluster = []
        cluster.append(span)
        cluster_end = max(cluster_end, span.end) if len(cluster) > 1 else span.end
    if cluster:
        _add_resolved(result, cluster, folded)
    return result


def _add_resolved(result: list[_Span], cluster: list[_Span], folded: str) -> None:
    """Append the spans `cluster` keeps to `result`. Most clusters are one span, kept as
    it is: compiled, a native append, where `_resolve_cluster` and a list extend cost
    ~400 instructions (about seven clusters a dense order)."""
    if len(cluster) == 1:
        result.append(cluster[0])
    else:
        result.extend(_resolve_cluster(cluster, folded))


# Clusters up to this many spans use a plain sorted list (an insert moves at most this many
# references, cheaper than allocating occupancy bytes); larger ones use _LargeKept.
_SMALL_CLUSTER: Final = 64


def _rank(span: _Span) -> tuple[int, bool, int, bool, int]:
    """Kind priority; a rostered name (not guessed) first; the longest; of equal length,
    one with a patient (guessed) first; the leftmost."""
    unlinked = span.patient is None
    return (
        _PRIORITY[span.kind],
        unlinked or span.guessed,
        span.start - span.end,
        unlinked,
        span.start,
    )


def _ranks_before(span: _Span, other: _Span) -> bool:
    """`_rank(span) < _rank(other)`, field by field: compiled, native int and bool
    compares, where the two tuples cost ~600 instructions to build and compare."""
    priority, other_priority = _PRIORITY[span.kind], _PRIORITY[other.kind]
    if priority != other_priority:
        return priority < other_priority
    unlinked, other_unlinked = span.patient is None, other.patient is None
    reading, other_reading = unlinked or span.guessed, other_unlinked or other.guessed
    if reading != other_reading:
        return other_reading  # False (rostered) ranks first
    length, other_length = span.end - span.start, other.end - other.start
    if length != other_length:
        return length > other_length  # the longest first
    if unlinked != other_unlinked:
        return other_unlinked  # a guessed patient before none
    return span.start < other.start


def _by_rank(spans: list[_Span]) -> list[_Span]:
    """`sorted(spans, key=_rank)` for spans none empty: each rank packed in one int, its
    fields in turn (see matchers.in_packed_order). Compiled, `sorted` with a key costs a
    generic call per span and a tuple compare per pair (~5k instructions a dense order)."""
    stride = 1  # past every start and length (a loop: compiled, max() is a generic call)
    for span in spans:
        if span.end >= stride:
            stride = span.end + 1
    count = len(spans)
    packed: list[int] = []
    for i, span in enumerate(spans):
        unlinked = 1 if span.patient is None else 0
        reading = 1 if unlinked or span.guessed else 0
        shorter = stride - (span.end - span.start)  # the longest first
        rank = (_PRIORITY[span.kind] * 2 + reading) * stride + shorter
        rank = (rank * 2 + unlinked) * stride + span.start
        packed.append(rank * count + i)
    return in_packed_order(spans, packed)


def _resolve_cluster(spans: list[_Span], folded: str) -> list[_Span]:
    """The spans a cluster (spans by start, each overlapping an earlier one's reach) keeps:
    `_resolve_cluster_ranked`'s, with its usual outcomes found without the rank sort."""
    if len(spans) == 1:
        return spans
    # The best ranked span (the first of equals, as the stable rank sort keeps it) is kept
    # first. Where it covers the whole cluster, every other span meets it and keeps nothing
    # (a rostered name's uncovered words are those outside it): it is kept alone. The usual
    # clusters are so: a name read twice, "Mme Marie DUPONT" over "Marie DUPONT" over the
    # surname alone, a date that is also a number.
    best = spans[0]
    cluster_end = best.end
    for i in range(1, len(spans)):
        span = spans[i]
        if _ranks_before(span, best):
            best = span
        if span.end > cluster_end:
            cluster_end = span.end
    if best.start <= spans[0].start and cluster_end <= best.end:
        return [best]
    if len(spans) == 2:
        # Two that overlap (the second starts before the first ends), neither covering
        # the other: the better ranked is kept alone unless the other is a rostered name
        # read from the same patient, whose uncovered words the general path keeps.
        other = spans[1] if best is spans[0] else spans[0]
        if (
            other.kind is not _Kind.NAME
            or other.patient is None
            or best.kind is not _Kind.NAME
            or best.patient != other.patient
        ):
            return [best]
    return _resolve_cluster_ranked(spans, folded)


def _resolve_cluster_ranked(spans: list[_Span], folded: str) -> list[_Span]:
    """The general rule: spans in rank order, each kept where it meets no kept one, and a
    rostered name that meets only readings of the same patient keeps its uncovered words."""
    kept: _KeptSpans = _SmallKept() if len(spans) <= _SMALL_CLUSTER else _LargeKept(spans)
    for span in _by_rank(spans):
        if not kept.overlaps(span.start, span.end):
            kept.add(span.start, span.end, span)
        elif span.kind is _Kind.NAME and span.patient is not None:
            _keep_uncovered_words(span, kept, folded)
    return kept.spans()


def _keep_uncovered_words(span: _Span, kept: _KeptSpans, folded: str) -> None:
    """Add the parts of a rostered name that kept readings of the same patient's name do
    not cover (trimmed to their words). Against any other kept span the name just loses."""
    hits = kept.overlapping(span.start, span.end)
    if not all(h.kind is _Kind.NAME and h.patient == span.patient for _s, _e, h in hits):
        return
    cursor = span.start
    pieces: list[tuple[int, int]] = []
    for hit_start, hit_end, _hit in hits:
        if hit_start > cursor:
            pieces.append((cursor, hit_start))
        cursor = max(cursor, hit_end)
    if cursor < span.end:
        pieces.append((cursor, span.end))
    for slot_start, slot_end in pieces:
        start, end = slot_start, slot_end
        while start < end and not folded[start].isalnum():
            start += 1
        while end > start and not folded[end - 1].isalnum():
            end -= 1
        if start < end:
            # The slot (with its separators) is what the piece occupies; it starts at the
            # name's start or a kept span's end, both known to the large index.
            piece = _Span(span.kind, start, end, span.value, span.patient, span.guessed)
            kept.add(slot_start, slot_end, piece)


class _KeptSpans:
    """Disjoint kept spans, each occupying a slot [start, end) that contains it."""

    def overlaps(self, start: int, end: int) -> bool:
        raise NotImplementedError

    def overlapping(self, start: int, end: int) -> list[tuple[int, int, _Span]]:
        """(slot start, slot end, span) of every kept slot meeting [start, end), in order."""
        raise NotImplementedError

    def add(self, start: int, end: int, span: _Span) -> None:
        raise NotImplementedError

    def spans(self) -> list[_Span]:
        """Kept spans in text order."""
        raise NotImplementedError


class _SmallKept(_KeptSpans):
    """Sorted lists and bisect: slots never overlap, so sorted by start they are sorted by
    end too, and a new span can only meet its neighbours."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._slots: list[tuple[int, int, _Span]] = []

    def overlaps(self, start: int, end: int) -> bool:
        i = _count_below(self._starts, start)
        if i > 0 and self._slots[i - 1][1] > start:
            return True
        return i < len(self._slots) and self._slots[i][0] < end

    def overlapping(self, start: int, end: int) -> list[tuple[int, int, _Span]]:
        i = _count_below(self._starts, start)
        if i > 0 and self._slots[i - 1][1] > start:
            i -= 1
        found = []
        while i < len(self._slots) and self._slots[i][0] < end:
            found.append(self._slots[i])
            i += 1
        return found

    def add(self, start: int, end: int, span: _Span) -> None:
        i = _count_below(self._starts, start)
        self._starts.insert(i, start)
        self._slots.insert(i, (start, end, span))

    def spans(self) -> list[_Span]:
        return [span for _s, _e, span in self._slots]


class _LargeKept(_KeptSpans):
    """Occupancy bytes over the cluster's text range: "is [a, b) free?" is one C-level
    byte search that stops at the first occupied position, so it costs at most the
    span's length (already paid once by the matcher that found it), never the number of
    spans kept. The whole cluster costs O(n log n + total span length)."""

    def __init__(self, spans: list[_Span]) -> None:
        self._base = min(s.start for s in spans)
        size = max(s.end for s in spans) - self._base
        self._occupied = bytearray(size)  # 1 where a kept slot lies
        self._slot_starts = bytearray(size)  # 1 where a kept slot begins
        self._slots: dict[int, tuple[int, int, _Span]] = {}

    def overlaps(self, start: int, end: int) -> bool:
        return self._occupied.find(1, start - self._base, end - self._base) >= 0

    def overlapping(self, start: int, end: int) -> list[tuple[int, int, _Span]]:
        base = self._base
        found = []
        at = self._occupied.find(1, start - base, end - base)
        while at >= 0:
            slot = self._slots[self._slot_starts.rfind(1, 0, at + 1) + base]
            found.append(slot)
            at = self._occupied.find(1, slot[1] - base, end - base)
        return found

    def add(self, start: int, end: int, span: _Span) -> None:
        base = self._base
        self._occupied[start - base : end - base] = b"\x01" * (end - start)
        self._slot_starts[start - base] = 1
        self._slots[start] = (start, end, span)

    def spans(self) -> list[_Span]:
        return [self._slots[start][2] for start in sorted(self._slots)]


def build_engine(
    *,
    patients: Sequence[RosterPatient] = (),
    practice: PracticeConfig = PracticeConfig(),  # noqa: B008 - frozen, shared default is safe
    digest_key: bytes,
    pseudonym_key: bytes,
    engine: str = "auto",
) -> Engine:
    """Compile the matchers for this roster and practice. Slow (once); scanning is fast."""
    return Engine(patients, practice, digest_key, pseudonym_key, engine)
