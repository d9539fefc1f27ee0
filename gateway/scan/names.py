"""Patient names: roster literals joined into full names, and names found by context.

Input: folded text and candidate spans (shapes `CIVILITY_NAME`, `INTRO_NAME`,
`UPPER_FIRST`, `FIRST_UPPER`) or roster literal hits. Output: name spans.

Rules (issue 3, "Patient names"):
- roster: "NOM Prénom" and "Prénom Nom", case- and accent-insensitive, compound and
  hyphenated names; a surname alone after a civility, in a subject, a file name or a
  display name, in capitals, or of a patient already named in the same message;
- context: civility + capitalised words, "patient(e)", "pour" + NAME, salutations,
  "SURNAME Firstname" and "Firstname SURNAME";
- never a patient: the words after "Dr"/"Docteur"/"Pr" and the practice's own names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from gateway.scan._names import NameRules

# Capitalised words that start sentences or name things in dental mail, and capitals
# used as acronyms: never taken as a person's name on their own.
STOPWORDS: Final = frozenset(
    """
    le la les l un une des du de d au aux et ou a en sur sous dans par pour avec sans chez
    ce cet cette ces mon ma mes ton ta tes son sa ses notre nos votre vos leur leurs
    il elle ils elles nous vous je on qui que quoi dont merci bonjour bonsoir cordialement
    bien salutations madame monsieur mademoiselle mme mlle m mr docteur dr pr professeur
    patient patiente patients nom prenom objet date total prix facture devis commande
    bon numero teinte dent dents couronne bridge inlay onlay implant pilier gouttiere
    empreinte empreintes modele modeles scan fichier fichiers piece pieces jointe jointes
    rendez vous rdv livraison retour urgent urgence remarque remarques note notes
    lundi mardi mercredi jeudi vendredi samedi dimanche janvier fevrier mars avril mai
    juin juillet aout septembre octobre novembre decembre zircone ceramique metal
    cabinet laboratoire labo dentaire clinique centre sante assurance mutuelle
    tel fax email mail adresse ref reference cdt ccam tva ht ttc eur euro euros
    stl ply obj dcm pdf cad cam cfao ok nb ps pj re tr fw fwd info infos cc cci
    ordonnance prescription courrier lettre compte rendu demande devis urgente avis
    rappel consultation controle soins soin detartrage radio radiographie panoramique
    cone beam cbct lab labs adjointe conjointe prothese protheses provisoire definitive
    maxillaire mandibule mandibulaire superieur inferieur droite gauche haut bas
    merci bonne journee semaine mois annee vous votre veuillez agreer recevoir
    upperjaw lowerjaw totaljaw jaw upper lower bite occlusion antagoniste preparation prep
    abutment model scanbody export case projet project dossier final version copie copy
    ars cpam secu nir ins iban rib bic siret finess rpps adeli
    """.split()
)

_WORD: Final = re.compile(r"[A-Za-z][A-Za-z'-]*")
# Particles of compound surnames ("LE ROUX", "De La Fontaine", "Da Silva"): name words
# when capitalised and followed by a name word, stopwords otherwise.
PARTICLES: Final = frozenset("le la de du des da di dos das del della ben van von mac".split())

# gateway/scan/_names.c reads the words of a candidate in place, in C (a slice, a
# `.lower()` and a set look-up a word in compiled Python): the same results, on the same
# word lists, for the ASCII folded text the engine passes. The functions below are the
# Python fallback (PORTIQUE_PURE_PYTHON=1, or a build without it) and its test oracle
# (tests/scan/test_names_native.py). Its methods are kept bound, each in a `Final`
# (compiled, a static read and a direct vectorcall, no method look-up).
_SpanRule = Callable[[str, int, int], tuple[int, int] | None]


def _native_rules() -> NameRules | None:
    """gateway/scan/_names.c's rules over STOPWORDS and PARTICLES, or None where setup.py
    has not built it."""
    try:
        from gateway.scan._names import NameRules as NativeNameRules
    except ImportError:  # not built: the Python below, same results
        return None
    return NativeNameRules(STOPWORDS, PARTICLES)


_NATIVE: Final = _native_rules()
_NATIVE_PAIR_SPAN: Final[_SpanRule | None] = None if _NATIVE is None else _NATIVE.pair_span
_NATIVE_TRIGGER_NAME_SPAN: Final[_SpanRule | None] = (
    None if _NATIVE is None else _NATIVE.trigger_name_span
)
_NATIVE_NAME_WORDS: Final[Callable[[str, int, int], list[tuple[int, int]]] | None] = (
    None if _NATIVE is None else _NATIVE.name_words
)


def name_words(folded: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of the words of folded[start:end] that can be part of a name; (-1, -1) breaks
    (see `_name_words_py`). `folded` is folded text (ASCII); 0 <= start, 0 <= end."""
    if _NATIVE_NAME_WORDS is not None:
        return _NATIVE_NAME_WORDS(folded, start, end)
    return _name_words_py(folded, start, end)


def trigger_name_span(folded: str, start: int, end: int) -> tuple[int, int] | None:
    """The name of a CIVILITY_NAME or INTRO_NAME match, if any (see
    `_trigger_name_span_py`). `folded` is folded text; 0 <= start <= end <= len(folded)."""
    if _NATIVE_TRIGGER_NAME_SPAN is not None:
        return _NATIVE_TRIGGER_NAME_SPAN(folded, start, end)
    return _trigger_name_span_py(folded, start, end)


def pair_span(folded: str, start: int, end: int) -> tuple[int, int] | None:
    """The span of an UPPER_FIRST or FIRST_UPPER match unless a word is a stopword (see
    `_pair_span_py`). `folded` is folded text; 0 <= start <= end <= len(folded)."""
    if _NATIVE_PAIR_SPAN is not None:
        return _NATIVE_PAIR_SPAN(folded, start, end)
    return _pair_span_py(folded, start, end)


def _name_words_py(folded: str, start: int, end: int) -> list[tuple[int, int]]:
    """`name_words` in Python: spans of the words of folded[start:end] that can be part of
    a name; (-1, -1) breaks.

    The words are the `_WORD` matches, read as strings (no match objects: display names
    and file names are read on every message): every letter starts a match, so each
    word is the first occurrence of its text after the previous word. Most display names
    are letters one space apart ("Cabinet dentaire du Parc"): then the words are the
    pieces between the spaces, split without the regex and its per-word look-ups. Each
    word is then tested in place (`is_name_word`).
    """
    texts: list[str]
    starts: list[int] = []
    piece = folded[start:end]
    letters = piece.replace(" ", "")
    if (
        letters.isascii()
        and letters.isalpha()
        and piece[0] != " "
        and piece[-1] != " "
        and "  " not in piece
    ):
        texts = piece.split(" ")
        position = start
        for text in texts:
            starts.append(position)
            position += len(text) + 1
    else:
        texts = _WORD.findall(folded, start, end)
        position = start
        for text in texts:
            position = folded.find(text, position)
            starts.append(position)
            position += len(text)
    words: list[tuple[int, int]] = []
    for i in range(len(texts)):
        word_end = starts[i] + len(texts[i])
        if is_name_word(folded, starts[i], word_end):
            words.append((starts[i], word_end))
        else:
            words.append((-1, -1))  # a break: names are consecutive words
    for i in range(len(texts) - 2, -1, -1):
        word_end = starts[i] + len(texts[i])
        if (
            words[i][0] < 0
            and words[i + 1][0] >= 0
            and starts[i + 1] - word_end == 1
            and _is_capital_particle(folded, starts[i], word_end)
        ):
            words[i] = (starts[i], word_end)
    return words


def context_name_span(
    folded: str, start: int, end: int, skip_first: bool
) -> tuple[int, int] | None:
    """The name inside a context candidate: consecutive name words after the trigger.

    `skip_first` drops the trigger word ("Mme", "pour", "Bonjour"). Stops at the first
    stopword after the name started, so "Mme Dupont Merci" gives "Dupont".
    """
    words = name_words(folded, start, end)
    if skip_first and words:
        words = words[1:]
    # Skip a civility inside an intro ("pour Mme Dupont").
    first = 0
    while first < len(words) and words[first][0] < 0:
        first += 1
    if first == len(words):
        return None
    last = first
    while last + 1 < len(words) and words[last + 1][0] >= 0:
        last += 1
    return words[first][0], words[last][1]


def _trigger_name_span_py(folded: str, start: int, end: int) -> tuple[int, int] | None:
    """`trigger_name_span` in Python: `context_name_span(folded, start, end,
    skip_first=True)` for a CIVILITY_NAME or INTRO_NAME match, without the word regex.

    Such a match is tokens one space apart: the trigger word (maybe with ":" attached),
    maybe ":", maybe a civility ("M.", "Mme"), then name-shaped words. The word regex
    reads each token without its trailing "." or ":" (":" alone: no word), and only
    name-shaped words (one space apart) can be particles.

    The tokens after the trigger are read once, last to first, in place (no split, no
    copy but each word's lower-cased text): a particle is a name word when the word
    after it is one, known by then, and the name is the first run of name words, the
    last one begun when the walk ends.
    """
    # The trigger: the first token holding a character other than "." and ":" (skipped,
    # as skip_first does); tokens of "." and ":" alone before it are no words either.
    trigger_end = end
    token_start = start
    while token_start < end:
        space = folded.find(" ", token_start, end)
        token_end = space if space >= 0 else end
        if _word_end(folded, token_start, token_end) > token_start:
            trigger_end = token_end
            break
        token_start = token_end + 1
    name_start = name_end = -1  # the run of name words begun last in the walk
    next_is_name = False  # the next word (to the right) is a name word
    next_start = -1
    token_end = end
    while token_end > trigger_end:  # a space follows the trigger: every token has one before
        space = folded.rfind(" ", trigger_end, token_end)
        token_start = space + 1
        word_end = _word_end(folded, token_start, token_end)
        token_end = space
        if word_end == token_start:
            continue
        is_name = is_name_word(folded, token_start, word_end)
        if (
            not is_name
            and next_is_name
            and next_start - word_end == 1
            and _is_capital_particle(folded, token_start, word_end)
        ):
            is_name = True  # a capitalised particle before a name word ("Le Roux")
        if is_name:
            if not next_is_name:
                name_end = word_end
            name_start = token_start
        next_is_name = is_name
        next_start = token_start
    return (name_start, name_end) if name_start >= 0 else None


def _pair_span_py(folded: str, start: int, end: int) -> tuple[int, int] | None:
    """`pair_span` in Python: a "SURNAME Firstname" / "Firstname SURNAME" candidate,
    unless a word is a stopword.

    The candidate is an UPPER_FIRST or FIRST_UPPER match: capitalised words of letters,
    "'" and "-", one space apart. Split on that space they are exactly the words
    `name_words` reads, so this is `name_words` with every word a name word (a
    capitalised particle counts when a name word follows), without its regex pass. The
    words are read in place, last to first.
    """
    name_follows = False
    word_end = end
    while True:
        space = folded.rfind(" ", start, word_end)
        word_start = space + 1 if space >= 0 else start
        if not is_name_word(folded, word_start, word_end) and not (
            name_follows and _is_capital_particle(folded, word_start, word_end)
        ):
            return None
        if space < 0:
            return start, end
        name_follows = True
        word_end = space


def is_name_word(folded: str, start: int, end: int) -> bool:
    """Whether folded[start:end] can be part of a name: capitalised, and without its
    outer "'" and "-" two characters or more and no stopword.

    Compiled, the first and last characters are read as codes (a capital starts the word,
    so only its end may hold "'" or "-"); `.isupper()` and `.strip()` are generic method
    calls (~200 instructions each), and were two to three a word."""
    if end - start < 2:
        return False
    if not 0x41 <= ord(folded[start]) <= 0x5A:  # A-Z: folded text is ASCII
        return False
    low = folded[start:end].lower()
    last = ord(folded[end - 1])
    if last == 0x27 or last == 0x2D:  # "'" or "-"
        low = low.rstrip("'-")
        if len(low) < 2:
            return False
    return low not in STOPWORDS


def _is_capital_particle(folded: str, start: int, end: int) -> bool:
    """A capitalised particle ("Le", "DE", "Van"): a name word when one follows."""
    return (
        end > start
        and 0x41 <= ord(folded[start]) <= 0x5A
        and folded[start:end].lower() in PARTICLES
    )


def _word_end(folded: str, start: int, end: int) -> int:
    """The end of folded[start:end] without its trailing "." and ":" (`.rstrip(".:")`)."""
    while end > start and (ord(folded[end - 1]) == 0x2E or ord(folded[end - 1]) == 0x3A):
        end -= 1
    return end
