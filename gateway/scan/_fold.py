"""Length-preserving folding of text for matching: one output character per input character.

Input: any str (untrusted). Output: an ASCII str and the same bytes, where
- Latin-1 accented letters lose their accent but keep their case (é→e, É→E, ç→c);
- `°` becomes `o` (so "n°" reads "no"), `œ`/`Œ` become `o`/`O`;
- every other non-ASCII character becomes `?`.

Invariant: `len(fold(text)) == len(text)`, so a span found in the folded text is the
same span in the original. Hyperscan then works on plain bytes (its UTF-8 mode is
undefined on invalid input) and Python `re` with re.ASCII sees the same characters,
which keeps both engines' findings identical.

Also the character tests the scan core reads folded text with, as codes (`is_ascii_letter`,
`is_regex_word_code`): one definition for the matchers and the validators.
"""

from __future__ import annotations

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


def fold_bytes(text: str) -> bytes:
    """Accent-stripped, case-kept ASCII bytes of `text`, one byte per character."""
    if not text.isascii() and ("œ" in text or "Œ" in text or "\u2019" in text or "\u202f" in text):
        text = text.translate(_EXTRA)
    return text.encode("latin-1", "replace").translate(_TABLE)


def fold(text: str) -> str:
    """Accent-stripped, case-kept ASCII text, one character per character of `text`."""
    if text.isascii():  # a flag of the str: its folding is itself (subjects, file names)
        return text
    return fold_bytes(text).decode("ascii")


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


def alnum_key(text: str) -> str:
    """Folded, lower-case, with every separator removed ("01 23.45" -> "012345")."""
    return fold_bytes(text).lower().translate(_ALNUM_ONLY).replace(b"\x00", b"").decode("ascii")
