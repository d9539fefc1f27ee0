"""Type stub of gateway/scan/_hyperscan.c (see its header)."""

from typing import Final

HS_FLAG_CASELESS: Final[int]
HS_FLAG_SOM_LEFTMOST: Final[int]
HS_VERSION: Final[str]
TRIGGERS: Final[tuple[str, ...]]

class Database:
    def __init__(
        self,
        expressions: list[bytes],
        ids: list[int],
        flags: list[int] | int,
        literal: bool = ...,
        *,
        triggers: list[tuple[str, int]] = ...,
    ) -> None: ...
    def scan(self, data: bytes, /) -> list[tuple[int, int, int]]: ...
    def scan_grouped(self, data: bytes, /) -> list[tuple[int, list[int]]]: ...
    def scan_grouped_packed(self, data: bytes, /) -> bytes: ...
    def scan_by_field(
        self, data: bytes, starts: list[int], lengths: list[int], trim: int, /
    ) -> list[list[tuple[int, int, int]]]: ...
