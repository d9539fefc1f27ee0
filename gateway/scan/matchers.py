"""Candidate matchers: every shape and every roster literal, found in one pass per kind.

Two interchangeable implementations of the same contract:
- `HyperscanMatcher`: one Hyperscan database for the shapes (compiled once, at engine
  build) used as a prefilter, whose hits are re-read by Python `re` inside small
  windows; and one literal database for roster and practice names (caseless).
- `ReMatcher`: Python `re` over the whole text for shapes, and an Aho-Corasick
  automaton (pyahocorasick) over the lower-cased text for literals.

Invariant: for the same folded text both return the same candidates. The shape
candidates are, by construction, the matches of `re.finditer` on the full text: a
Hyperscan hit only tells where to look, and every full-text match overlaps a hit
cluster (Hyperscan reports every match, with its leftmost start). A test compares
both matchers on the synthetic corpus.

Input: folded text (ASCII, see `_fold`). No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import ahocorasick

from gateway.scan.shapes import SHAPES, Shape, ShapeName

Candidate = tuple[ShapeName, int, int]
LiteralHit = tuple[int, int, int]  # literal index, start, end


def compile_shape(shape: Shape) -> re.Pattern[str]:
    return re.compile(shape.pattern, re.ASCII | (re.IGNORECASE if shape.caseless else 0))


class CandidateMatcher(Protocol):
    name: str

    def shapes(self, folded: str, data: bytes) -> list[Candidate]: ...

    def literals(self, folded: str, data: bytes) -> list[LiteralHit]: ...


class ReMatcher:
    """Pure-Python fallback: `re` for shapes, Aho-Corasick for literals."""

    name = "re"

    def __init__(self, literals: Sequence[str]) -> None:
        self._compiled = [(shape.name, compile_shape(shape)) for shape in SHAPES]
        self._automaton: Any = None
        if literals:
            automaton = ahocorasick.Automaton()
            for index, literal in enumerate(literals):
                automaton.add_word(literal, (index, len(literal)))
            automaton.make_automaton()
            self._automaton = automaton

    def shapes(self, folded: str, data: bytes) -> list[Candidate]:
        found: list[Candidate] = []
        for name, pattern in self._compiled:
            found.extend((name, m.start(), m.end()) for m in pattern.finditer(folded))
        return found

    def literals(self, folded: str, data: bytes) -> list[LiteralHit]:
        if self._automaton is None:
            return []
        lower = folded.lower()
        return [
            (index, end + 1 - length, end + 1)
            for end, (index, length) in self._automaton.iter(lower)
        ]


class HyperscanMatcher:
    """Hyperscan prefilter for shapes, Hyperscan literal database for names."""

    name = "hyperscan"

    def __init__(self, literals: Sequence[str]) -> None:
        import hyperscan

        self._compiled = [(shape, compile_shape(shape)) for shape in SHAPES]
        self._shape_db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._shape_db.compile(
            expressions=[shape.pattern.encode("ascii") for shape in SHAPES],
            ids=list(range(len(SHAPES))),
            flags=[
                (hyperscan.HS_FLAG_SOM_LEFTMOST if s.leftmost_start else 0)
                | (hyperscan.HS_FLAG_CASELESS if s.caseless else 0)
                for s in SHAPES
            ],
        )
        self._shape_scratch = hyperscan.Scratch(self._shape_db)
        self._literal_db: Any = None
        if literals:
            self._literal_db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            self._literal_db.compile(
                expressions=[literal.encode("ascii") for literal in literals],
                ids=list(range(len(literals))),
                flags=hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SOM_LEFTMOST,
                literal=True,
            )
            self._literal_scratch = hyperscan.Scratch(self._literal_db)

    def shapes(self, folded: str, data: bytes) -> list[Candidate]:
        hits: list[list[tuple[int, int]]] = [[] for _ in SHAPES]

        def on_match(shape_id: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            if not SHAPES[shape_id].leftmost_start:
                start = max(0, end - SHAPES[shape_id].max_len)
            hits[shape_id].append((start, end))

        self._shape_db.scan(data, match_event_handler=on_match, scratch=self._shape_scratch)
        found: list[Candidate] = []
        for (shape, pattern), shape_hits in zip(self._compiled, hits, strict=True):
            if not shape_hits:
                continue
            for low, high in _clusters(shape_hits):
                for m in pattern.finditer(folded, low):
                    if m.start() > high:
                        break
                    found.append((shape.name, m.start(), m.end()))
        return found

    def literals(self, folded: str, data: bytes) -> list[LiteralHit]:
        if self._literal_db is None:
            return []
        hits: list[LiteralHit] = []

        def on_match(index: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            hits.append((index, start, end))

        self._literal_db.scan(data, match_event_handler=on_match, scratch=self._literal_scratch)
        return hits


def _clusters(hits: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge overlapping (start, end) hits into windows."""
    hits.sort()
    merged: list[tuple[int, int]] = []
    low, high = hits[0]
    for start, end in hits[1:]:
        if start <= high:
            high = max(high, end)
        else:
            merged.append((low, high))
            low, high = start, end
    merged.append((low, high))
    return merged


def hyperscan_available() -> bool:
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        return False
    return True


def make_matcher(engine: str, literals: Sequence[str]) -> CandidateMatcher:
    """`engine` is "hyperscan", "re" or "auto" (Hyperscan when importable)."""
    if engine == "auto":
        engine = "hyperscan" if hyperscan_available() else "re"
    if engine == "hyperscan":
        return HyperscanMatcher(literals)
    if engine == "re":
        return ReMatcher(literals)
    raise ValueError(f"unknown scan engine {engine!r} (hyperscan, re or auto)")
