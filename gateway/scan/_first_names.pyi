"""Type stub of gateway/scan/_first_names.c (see its header)."""

from collections.abc import Iterable

class FirstNames:
    def __init__(
        self,
        full_names: dict[tuple[str, str], list[str]],
        first_heads: dict[str, frozenset[str]],
        first_tails: dict[str, frozenset[str]],
        name_heads: frozenset[str],
        window: int,
    ) -> None: ...
    def after(
        self, folded: str, end: int, surname: str, in_file_name: bool, /
    ) -> tuple[int, int, str] | None: ...
    def before(
        self, folded: str, start: int, surname: str, in_file_name: bool, /
    ) -> tuple[int, int, str] | None: ...
    def full_names(
        self, folded: str, words: list[tuple[int, int, str]], in_file_name: bool, /
    ) -> list[tuple[int, tuple[int, int, str] | None]] | None: ...
    def context_name(
        self, folded: str, start: int, end: int, /
    ) -> tuple[str, str | None] | None: ...
    def patient_for_words(self, words: list[str], /) -> str | None: ...

class Civilities:
    def __init__(self, words: Iterable[str], tails: Iterable[str], window: int) -> None: ...
    def after(self, folded: str, start: int, /) -> bool: ...
