"""Length-preserving folding of text for matching: one output character per input character.

Input: any str (untrusted). Output: an ASCII str and the same bytes, where
- Latin-1 accented letters lose their accent but keep their case (é→e, É→E, ç→c);
- `°` becomes `o` (so "n°" reads "no"), `œ`/`Œ` become `o`/`O`;
- every other non-ASCII character becomes `?`.

Invariant: `len(fold(text)) == len(text)`, so a span found in the folded text is the
same span in the original. Hyperscan then works on plain bytes (its UTF-8 mode is
undefined on invalid input) and Python `re` with re.ASCII sees the same characters,
which keeps both engines' findings identical.

Where setup.py has built gateway/scan/_native_text.c, folding is one C pass over the str
with the tables below (`_TABLE`, `_EXTRA`: the one definition of the mapping); elsewhere
(run from source, PORTIQUE_PURE_PYTHON=1) the Python below gives the same results.

Also the character tests the scan core reads folded text with, as codes (`is_ascii_letter`,
`is_regex_word_code`): one definition for the matchers and the validators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

_ACCENTED: Final = {
    "AÀÁÂÃÄÅ": "A",
    "aàáâãäåª": "a",
    "CÇ": "C",
    "cç": "c",
    "EÈÉÊË": "E",
    "eèéêë": "e",
    "IÌÍÎÏ": "I",
    "iìíîï": "i",
    "NÑ": "N",
    "nñ": "n",
    "OÒÓÔÕÖØ": "O",
    "oòóôõöøº°": "o",
    "UÙÚÛÜ": "U",
    "uùúûü": "u",
    "YÝ": "Y",
    "yýÿ": "y",
    "ß": "s",
    "Ææ": "?",
}


def _build_table() -> bytes:
    table = bytearray(range(128)) + bytearray(b"?" * 128)
    for chars, base in _ACCENTED.items():
        for ch in chars:
            code = ord(ch)
            if code >= 128:
                table[code] = ord(base)
    # Non-breaking space reads as a space: French typography puts it before ":" and "€".
    table[0xA0] = ord(" ")
    return bytes(table)


_TABLE: Final = _build_table()
_EXTRA: Final = str.maketrans({"œ": "o", "Œ": "O", "\u2019": "'", "\u202f": " "})


# `_EXTRA` for gateway/scan/_native_text.c: pairs of characters, each and its folding.
_EXTRA_PAIRS: Final = "".join(chr(code) + folded for code, folded in _EXTRA.items())


def _native_fold() -> Callable[[str, bytes, str], str] | None:
    """gateway/scan/_native_text.c's `fold`, or None where setup.py has not built it."""
    try:
        from gateway.scan._native_text import fold as native_fold
    except ImportError:  # not built: the Python implementation, same results
        return None
    return native_fold


def _native_fold_keep() -> Callable[[str, bytes, str, bytes], str] | None:
    """gateway/scan/_native_text.c's `fold_keep`, or None where setup.py has not built it."""
    try:
        from gateway.scan._native_text import fold_keep
    except ImportError:
        return None
    return fold_keep


# Final: compiled, a static read, where a plain global is a dict lookup on every call.
_NATIVE_FOLD: Final = _native_fold()
_NATIVE_FOLD_KEEP: Final = _native_fold_keep()


def _fold_bytes_py(text: str) -> bytes:
    """Accent-stripped, case-kept ASCII bytes of `text`, one byte per character: the
    folding in Python (and what gateway/scan/_native_text.c is tested against)."""
    if not text.isascii() and ("œ" in text or "Œ" in text or "\u2019" in text or "\u202f" in text):
        text = text.translate(_EXTRA)
    return text.encode("latin-1", "replace").translate(_TABLE)


def fold(text: str) -> str:
    """Accent-stripped, case-kept ASCII text, one character per character of `text`."""
    if text.isascii():  # a flag of the str: its folding is itself (subjects, file names)
        return text
    if _NATIVE_FOLD is not None:
        return _NATIVE_FOLD(text, _TABLE, _EXTRA_PAIRS)
    return _fold_bytes_py(text).decode("ascii")


def fold_key(text: str) -> str:
    """Lower-case folded form used to compare names and values ("Éloïse" -> "eloise")."""
    return fold(text).lower()


def is_ascii_letter(code: int) -> bool:
    """[A-Za-z], read as a character code (`ord(text[i])`, or a byte of folded bytes):
    compiled, integer comparisons, where a one-character string's tests are C-API calls."""
    return 0x61 <= code <= 0x7A or 0x41 <= code <= 0x5A


def is_regex_word_code(code: int) -> bool:
    """re.ASCII's `\\w` in folded text: a letter, a digit or "_" (see is_ascii_letter)."""
    return is_ascii_letter(code) or 0x30 <= code <= 0x39 or code == 0x5F


_ALNUM_ONLY: Final = bytes(c if chr(c).isalnum() else 0 for c in range(128)) + bytes(128)
# For each folded (ASCII) character, its alnum_key character, or 0 (dropped): _native_text's
# `keep` table.
_ALNUM_KEEP: Final = bytes(range(128)).lower().translate(_ALNUM_ONLY)


def _alnum_key_py(text: str) -> str:
    """`alnum_key` in Python (and what gateway/scan/_native_text.c is tested against)."""
    return _fold_bytes_py(text).lower().translate(_ALNUM_ONLY).replace(b"\x00", b"").decode("ascii")


def alnum_key(text: str) -> str:
    """Folded, lower-case, with every separator removed ("01 23.45" -> "012345")."""
    if _NATIVE_FOLD_KEEP is not None:
        return _NATIVE_FOLD_KEEP(text, _TABLE, _EXTRA_PAIRS, _ALNUM_KEEP)
    return _alnum_key_py(text)
