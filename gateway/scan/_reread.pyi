"""Type stub of gateway/scan/_reread.c (see its header)."""

from gateway.scan.shapes import ShapeName

PCRE2_VERSION: str

class Rereader:
    def __init__(
        self, plans: list[tuple[ShapeName, int, bytes, bool, int, int, bytes, bytes, int]]
    ) -> None: ...
    def candidates(
        self, data: bytes, groups: list[tuple[int, list[int]]], /
    ) -> list[tuple[ShapeName, int, int]]: ...
    def candidates_by_field(
        self,
        data: bytes,
        groups: list[tuple[int, list[int]]],
        starts: list[int],
        lengths: list[int],
        /,
    ) -> list[list[tuple[ShapeName, int, int]]]: ...
    def candidates_by_field_packed(
        self, data: bytes, packed: bytes, starts: list[int], lengths: list[int], /
    ) -> list[list[tuple[ShapeName, int, int]]]: ...
