"""Candidate matchers: every shape and every roster literal, one pass per kind.

Two interchangeable implementations of the same contract:
- `HyperscanMatcher`: one Hyperscan database for the shapes (compiled once, at engine
  build), used as a prefilter (the digit-led, name-junction and title triggers found in
  the same scan by a C walk where gateway/scan/_hyperscan.c is built); and one literal
  database for roster and practice names (caseless, literal mode: a regex database of
  100,000 names takes minutes to compile, the literal one seconds). A shape hit is
  re-read: at its exact start (SOM, or a trigger that is the pattern's prefix), at the
  starts a locator finds before a junction trigger, or in a bounded window; or, for the
  shapes whose pattern allows one end per start (`Shape.span_is_match`: ISO dates,
  dates in words), taken as Hyperscan reports it, start and end. The re-reads run in C
  with PCRE2 (gateway/scan/_reread.c) where it is built, else in Python with `re`
  (`_reread`): same candidates.
- `ReMatcher`: Python `re` over the whole text for shapes, and an Aho-Corasick
  automaton (pyahocorasick) for literals, on the same word view.

Invariant: for the same folded text both return the same candidates: the shape
candidates are the matches `re.finditer` finds on the whole text. Every match contains
a trigger (or is itself reported), so its start lies in a re-read range, and ranges
closer than `max_len` are walked together, as finditer would walk them. A reported
match taken without re-read is the one `re.match` finds at its start, the only one
there. The corpus test, hypothesis tests and the engine tests compare both matchers.

Input: folded text (ASCII, see `_fold`). No I/O. Thread-safe: Hyperscan scratch
space is per thread, and the C re-reader keeps the GIL.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, TypeVar, cast

import ahocorasick

from gateway.scan._fold import is_regex_word_code
from gateway.scan.shapes import SHAPES, Shape, ShapeName

# Literal matching works on a word view of the folded text: letters and digits
# lower-cased, every other byte a space, one space of padding at each end. A literal is
# " name words " with a space on each side, so it only matches whole words ("pide"
# never fires inside "cuspide"), without a per-hit boundary check in Python, and
# "Jean-Pierre", "jean_pierre" and "JEAN PIERRE" all read " jean pierre ".
_WORD_VIEW: Final = bytes(
    (c | 0x20) if chr(c).isascii() and chr(c).isalnum() else 0x20 for c in range(256)
)
_LITERAL_SPLIT: Final = re.compile(r"[^0-9a-z]+")


def literal_form(normalised: str) -> str:
    """The word-view form of a roster literal: " jean pierre "."""
    return " " + " ".join(w for w in _LITERAL_SPLIT.split(normalised.lower()) if w) + " "


def _native_word_view() -> Callable[[bytes, bytes], bytes] | None:
    """gateway/scan/_native_text.c's `word_view`, or None where setup.py has not built it."""
    try:
        from gateway.scan._native_text import word_view as native_word_view
    except ImportError:  # not built: the Python below, same result
        return None
    return native_word_view


_NATIVE_WORD_VIEW: Final = _native_word_view()  # Final: compiled, a static read


def word_view(data: bytes) -> bytes:
    if _NATIVE_WORD_VIEW is not None:  # one pass, one allocation
        return _NATIVE_WORD_VIEW(data, _WORD_VIEW)
    return b" " + data.translate(_WORD_VIEW) + b" "


def _native_find_all() -> Callable[[bytes, list[bytes]], list[tuple[int, int]]] | None:
    """gateway/scan/_native_text.c's `find_all`, or None where setup.py has not built it."""
    try:
        from gateway.scan._native_text import find_all as native_find_all
    except ImportError:  # not built: find_all_py, same result
        return None
    return native_find_all


_NATIVE_FIND_ALL: Final = _native_find_all()


def find_all(data: bytes, needles: list[bytes]) -> list[tuple[int, int]]:
    """`find_all_py`, in C where it is built (memmem: ~2.5x faster on a word view)."""
    if _NATIVE_FIND_ALL is not None:
        return _NATIVE_FIND_ALL(data, needles)
    return find_all_py(data, needles)


def find_all_py(data: bytes, needles: list[bytes]) -> list[tuple[int, int]]:
    """For each needle (non-empty) in turn, every start at which it occurs in `data`,
    ascending, overlaps included: (needle index, start) pairs."""
    found: list[tuple[int, int]] = []
    for index, needle in enumerate(needles):
        if not needle:
            raise ValueError("find_all(): each needle must be non-empty bytes")
        at = data.find(needle)
        while at >= 0:
            found.append((index, at))
            at = data.find(needle, at + 1)
    return found


Candidate = tuple[ShapeName, int, int]
LiteralHit = tuple[int, int, int]  # literal index, start, end
_T = TypeVar("_T")


def compile_shape(shape: Shape) -> re.Pattern[str]:
    return re.compile(shape.pattern, re.ASCII | (re.IGNORECASE if shape.caseless else 0))


class CandidateMatcher(Protocol):
    name: str

    def shapes(self, folded: str, data: bytes) -> list[Candidate]: ...

    def shapes_by_field(
        self, joined: str, data: bytes, starts: list[int], lengths: list[int]
    ) -> list[list[Candidate]]:
        """`split_by_field(self.shapes(joined, data), starts, lengths)`: per field of the
        joined text, its candidates."""

    def literals(self, view: bytes) -> list[LiteralHit]:
        """Roster literal hits in `view`, the text's `word_view` (the caller keeps it)."""

    def literals_by_field(
        self, view: bytes, starts: list[int], lengths: list[int]
    ) -> list[list[LiteralHit]]:
        """`split_hits_by_field(self.literals(view), starts, lengths, 0)`: per field of the
        joined text whose word view `view` is, its literal hits."""


class ReMatcher:
    """Pure-Python fallback: `re` for shapes, Aho-Corasick for literals."""

    name = "re"

    def __init__(self, literals: Sequence[str]) -> None:
        self._compiled = [(shape.name, compile_shape(shape)) for shape in SHAPES]
        self._automaton: Any = None
        if literals:
            automaton = ahocorasick.Automaton()
            for index, literal in enumerate(literals):
                automaton.add_word(literal_form(literal), (index, len(literal_form(literal))))
            automaton.make_automaton()
            self._automaton = automaton

    def shapes(self, folded: str, data: bytes) -> list[Candidate]:
        found: list[Candidate] = []
        for name, pattern in self._compiled:
            found.extend((name, m.start(), m.end()) for m in pattern.finditer(folded))
        return found

    def shapes_by_field(
        self, joined: str, data: bytes, starts: list[int], lengths: list[int]
    ) -> list[list[Candidate]]:
        return split_by_field(self.shapes(joined, data), starts, lengths)

    def literals(self, view: bytes) -> list[LiteralHit]:
        if self._automaton is None:
            return []
        # Padded [end + 1 - length, end + 1) is " word "; unpadded, the word itself.
        return [
            (index, end + 1 - length, end - 1)
            for end, (index, length) in self._automaton.iter(view.decode("ascii"))
        ]

    def literals_by_field(
        self, view: bytes, starts: list[int], lengths: list[int]
    ) -> list[list[LiteralHit]]:
        return split_hits_by_field(self.literals(view), starts, lengths, 0)


def split_by_field(
    found: list[Candidate], starts: list[int], lengths: list[int]
) -> list[list[Candidate]]:
    """Candidates of a text made of fields (field i is [starts[i], starts[i] + lengths[i]),
    in order, apart), per field: sorted by start, then end (stably), offsets relative to
    the field; a candidate not within one field is dropped (no shape matches the NUL that
    joins a message's fields: never so)."""
    fields: list[list[Candidate]] = [[] for _ in starts]
    if not found:
        return fields
    count = len(starts)
    slot = 0
    base, limit = starts[0], starts[0] + lengths[0]
    for name, start, end in in_packed_order(found, _packed_by_start_end(found)):
        while slot + 1 < count and starts[slot + 1] <= start:
            slot += 1
            base, limit = starts[slot], starts[slot] + lengths[slot]
        if start >= base and end <= limit:
            fields[slot].append((name, start - base, end - base))
    return fields


def split_hits_by_field(
    hits: list[Hit], starts: list[int], lengths: list[int], trim: int
) -> list[list[Hit]]:
    """Hits (id, start, end) of a text made of fields (field i is [starts[i], starts[i] +
    lengths[i]), `starts` ascending), per field: `(id, start - base, end - trim - base)`
    for each hit whose start lies in the field (`base` its start) and whose end less
    `trim` neither passes the field's end nor falls before the start, in the hits' order.
    What gateway.scan._hyperscan's `scan_by_field` returns, from `scan`'s hits."""
    fields: list[list[Hit]] = [[] for _ in starts]
    for index, start, end in hits:
        end -= trim
        if end < start or start < starts[0]:
            continue
        slot = bisect_right(starts, start) - 1
        base = starts[slot]
        if end <= base + lengths[slot]:
            fields[slot].append((index, start - base, end - base))
    return fields


def _packed_by_start_end(found: list[Candidate]) -> list[int]:
    """`in_packed_order`'s keys for sorting by start, then end."""
    stride = max([end for _name, _start, end in found]) + 1
    count = len(found)
    return [(start * stride + end) * count + i for i, (_name, start, end) in enumerate(found)]


def in_packed_order(items: list[_T], packed: list[int]) -> list[_T]:
    """`items` sorted by a key, as stably as `sorted(items, key=...)`, where `packed[i]`
    is `key(items[i]) * len(items) + i` (keys non-negative ints): one sort of plain ints.
    No key function is called per item and no tuples are compared per pair: compiled,
    sorting a dense order's candidates so costs ~10k instructions, ~35k with an
    itemgetter key."""
    count = len(items)
    packed.sort()
    return [items[p % count] for p in packed]


# How a shape's Hyperscan hits (leftmost starts) become the starts its pattern is re-read from.
_EXACT: Final = 0  # each hit's start is where a match may start (before == 0)
_LOCATE: Final = 1  # a locator finds the starts before the hit (see Shape.locate_start)
_WINDOW: Final = 2  # a match starts in [hit - before, hit]: finditer over the window
_SPAN: Final = 3  # each hit is the match itself, no re-read (see Shape.span_is_match)


class _Plan:
    """Per shape: how its hits are re-read (built once; attributes read per hit)."""

    __slots__ = ("name", "pattern", "mode", "before", "max_len", "alphabet", "locate", "offset")

    def __init__(self, shape: Shape) -> None:
        self.name = shape.name
        self.pattern = compile_shape(shape)
        self.before = shape.before
        self.max_len = shape.max_len
        # The barrier skip holds for a trigger's run (see Shape.alphabet). Kept as a byte
        # table, 1 for the alphabet's characters: walking back over a run reads one byte
        # a character (str.rstrip(alphabet) tested each against the whole alphabet, about
        # 1 us for an e-mail's local part).
        alphabet = shape.alphabet if shape.trigger is not None else None
        self.alphabet = (
            bytes(1 if chr(c) in alphabet else 0 for c in range(256)) if alphabet else None
        )
        self.offset = shape.locate_offset
        # A locator opens with `\b` (see _located_starts).
        assert shape.locate_start is None or shape.locate_start.startswith(r"\b")
        self.locate = (
            re.compile(shape.locate_start, re.ASCII) if shape.locate_start is not None else None
        )
        if shape.span_is_match:
            assert shape.trigger is None and not shape.extra_triggers
            self.mode = _SPAN
        elif self.locate is not None:
            self.mode = _LOCATE
        elif shape.before == 0:
            self.mode = _EXACT
        else:
            self.mode = _WINDOW


class HyperscanMatcher:
    """Hyperscan prefilter for shapes, Hyperscan literal database for names."""

    name = "hyperscan"

    def __init__(
        self, literals: Sequence[str], *, native: bool | None = None, reread: bool = True
    ) -> None:
        """`native`: scan through gateway.scan._hyperscan (True), the python-hyperscan
        binding (False), or the first of them that is installed (None). `reread`: re-read
        the hits with gateway.scan._reread where it is built (False: always with `re`)."""
        if native is None:
            native = native_hyperscan_available()
        self.binding = "native" if native else "python-hyperscan"
        self._plans = [_Plan(shape) for shape in SHAPES]
        expressions: list[bytes] = []
        flags: list[int] = []
        # Each expression's id is its shape's index: a shape's several triggers report
        # alike (Hyperscan allows shared ids), so a hit needs no look-up to find its shape.
        ids: list[int] = []
        # The shapes whose triggers gateway/scan/_hyperscan.c finds by a walk over the
        # bytes (_triggers.h: the same hits, ~37k instructions a dense order less than
        # Hyperscan's automata on their digit and capital classes and short titles).
        built_in = native_trigger_names() if native else frozenset()
        triggers: list[tuple[str, int]] = []
        for index, shape in enumerate(SHAPES):
            if shape.name.value in built_in:
                triggers.append((shape.name.value, index))
                continue
            for pattern in (shape.trigger or shape.pattern, *shape.extra_triggers):
                expressions.append(pattern.encode("ascii"))
                flags.append(HS_FLAG_SOM_LEFTMOST | (HS_FLAG_CASELESS if shape.caseless else 0))
                ids.append(index)
        self._shape_db = _compile_database(native, expressions, ids, flags, triggers=triggers)
        # The re-reads in C (PCRE2), where gateway/scan/_reread.c is built: the Python
        # below cost a dense 2 KB order ~137k instructions, more than the Hyperscan scan.
        self._rereader: Rereader | None = native_rereader(self._plans) if reread else None
        # gateway.scan._hyperscan's databases also give their hits packed (the binding's not).
        self._packed_db = cast(PackedScanner, self._shape_db) if native else None
        self._literal_db: HitScanner | None = None
        if literals:
            self._literal_db = _compile_database(
                native,
                [literal_form(literal).encode("ascii") for literal in literals],
                list(range(len(literals))),
                HS_FLAG_CASELESS | HS_FLAG_SOM_LEFTMOST,
                literal=True,
            )

    def shapes(self, folded: str, data: bytes) -> list[Candidate]:
        # The hits come grouped by shape, in shape order, each shape's distinct spans
        # sorted by start and then end, only for the shapes that fired (a 2 KB order fires
        # a handful of its 17). Grouped in C: packing and sorting them per shape in Python
        # cost shapes() ~12k instructions per dense order (313k -> 302k).
        groups = self._shape_db.scan_grouped(data)
        if self._rereader is not None:
            return self._rereader.candidates(data, groups)
        return self._reread(folded, data, groups)

    def shapes_by_field(
        self, joined: str, data: bytes, starts: list[int], lengths: list[int]
    ) -> list[list[Candidate]]:
        if self._packed_db is not None and self._rereader is not None:
            # Both in C: the hits go from one module to the other packed in bytes, where
            # as lists their ints were made and read back (~18k instructions an order).
            packed = self._packed_db.scan_grouped_packed(data)
            return self._rereader.candidates_by_field_packed(data, packed, starts, lengths)
        groups = self._shape_db.scan_grouped(data)
        if self._rereader is not None:  # re-read, sorted and split in one C call
            return self._rereader.candidates_by_field(data, groups, starts, lengths)
        return split_by_field(self._reread(joined, data, groups), starts, lengths)

    def _reread(self, folded: str, data: bytes, groups: list[HitGroup]) -> list[Candidate]:
        """The candidates of the grouped hits, re-read with `re` (what
        gateway/scan/_reread.c does with PCRE2, where it is built)."""
        plans = self._plans
        found: list[Candidate] = []
        for shape_index, spans in groups:
            plan = plans[shape_index]
            mode = plan.mode
            if mode == _SPAN:
                _take_spans(plan, folded, spans, found)
                continue
            hits: list[int] = []  # the shape's distinct hit starts, sorted
            previous = -1
            for index in range(0, len(spans), 2):
                start = spans[index]
                if start != previous:
                    hits.append(start)
                    previous = start
            if mode == _WINDOW:
                _read_windows(plan, folded, data, hits, found)
                continue
            starts = _located_starts(plan, folded, data, hits) if mode == _LOCATE else hits
            # Exact starts: try the pattern there only, left to right, skipping starts
            # inside the previous match (as finditer over the whole text would).
            match, name, reach = plan.pattern.match, plan.name, plan.max_len + 1
            last_end = 0
            for start in starts:
                if start < last_end:
                    continue
                m = match(folded, start, start + reach)
                if m is not None:
                    last_end = m.end()
                    found.append((name, start, last_end))
        return found

    def literals(self, view: bytes) -> list[LiteralHit]:
        if self._literal_db is None:
            return []
        # Hyperscan's end is past the closing space: see ReMatcher.literals.
        return [(index, start, end - 2) for index, start, end in self._literal_db.scan(view)]

    def literals_by_field(
        self, view: bytes, starts: list[int], lengths: list[int]
    ) -> list[list[LiteralHit]]:
        if self._literal_db is None:
            return [[] for _ in starts]
        # Split in C: in Python, each hit cost three tuples and a bisect.
        return self._literal_db.scan_by_field(view, starts, lengths, 2)


# Hyperscan's compile flags (hs_compile.h), the same in both bindings.
HS_FLAG_CASELESS: Final = 1
HS_FLAG_SOM_LEFTMOST: Final = 256

Hit = tuple[int, int, int]  # expression id, start, end


HitGroup = tuple[int, list[int]]  # expression id, [start, end, start, end, ...]


class HitScanner(Protocol):
    def scan(self, data: bytes) -> list[Hit]:
        """Every hit in `data`, in Hyperscan's report order (by end)."""

    def scan_grouped(self, data: bytes) -> list[HitGroup]:
        """The same hits grouped by id: see `group_hits`."""

    def scan_by_field(
        self, data: bytes, starts: list[int], lengths: list[int], trim: int
    ) -> list[list[Hit]]:
        """The same hits split by field: see `split_hits_by_field`."""


class PackedScanner(Protocol):
    """gateway.scan._hyperscan's Database: `scan_grouped`'s hits packed in bytes, for
    gateway.scan._reread's `candidates_by_field_packed` (see both modules' contracts)."""

    def scan_grouped_packed(self, data: bytes) -> bytes: ...


def _compile_database(
    native: bool,
    expressions: list[bytes],
    ids: list[int],
    flags: list[int] | int,
    *,
    literal: bool = False,
    triggers: list[tuple[str, int]] | None = None,
) -> HitScanner:
    """A block-mode database of `expressions` (regular expressions, or literals), and of
    the built-in `triggers` (native only: see native_trigger_names)."""
    if native:
        from gateway.scan import _hyperscan

        database: HitScanner = _hyperscan.Database(
            expressions, ids, flags, literal=literal, triggers=triggers or []
        )
        return database
    assert not triggers, "the python-hyperscan binding has no built-in triggers"
    return _BindingDatabase(expressions, ids, flags, literal)


def native_trigger_names() -> frozenset[str]:
    """The shapes (ShapeName values) whose triggers gateway/scan/_hyperscan.c finds by a
    walk over the bytes instead of Hyperscan: the hits Hyperscan would report for the
    shape's trigger expressions (tests/scan/test_triggers_native.py compares them)."""
    from gateway.scan import _hyperscan

    return frozenset(_hyperscan.TRIGGERS)


class _BindingDatabase:
    """The same scan through the python-hyperscan binding, which calls back into Python
    for every hit (and takes the GIL back for each: see gateway/scan/_hyperscan.c)."""

    def __init__(
        self, expressions: list[bytes], ids: list[int], flags: list[int] | int, literal: bool
    ) -> None:
        import hyperscan

        self._hyperscan: Any = hyperscan
        self._database: Any = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._database.compile(expressions=expressions, ids=ids, flags=flags, literal=literal)
        # Scratch space may serve one scan at a time: one per thread, made on first use
        # in that thread (the engine is shared by every worker thread).
        self._local = threading.local()

    def scan(self, data: bytes) -> list[Hit]:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = self._hyperscan.Scratch(self._database)
        hits: list[Hit] = []

        def on_match(index: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            hits.append((index, start, end))

        self._database.scan(data, match_event_handler=on_match, scratch=scratch)
        return hits

    def scan_grouped(self, data: bytes) -> list[HitGroup]:
        return group_hits(self.scan(data))

    def scan_by_field(
        self, data: bytes, starts: list[int], lengths: list[int], trim: int
    ) -> list[list[Hit]]:
        return split_hits_by_field(self.scan(data), starts, lengths, trim)


def group_hits(hits: list[Hit]) -> list[HitGroup]:
    """One `(id, spans)` per id that fired, by ascending id: `spans` holds its distinct
    (start, end) pairs, sorted by start then end, flat (`[start, end, start, end, ...]`).
    What gateway.scan._hyperscan's `scan_grouped` returns, built from `scan`'s hits."""
    groups: list[HitGroup] = []
    previous: Hit | None = None
    for hit in sorted(hits):
        if hit == previous:
            continue
        if previous is None or hit[0] != previous[0]:
            groups.append((hit[0], []))
        groups[-1][1].extend((hit[1], hit[2]))
        previous = hit
    return groups


def _take_spans(plan: _Plan, folded: str, spans: list[int], found: list[Candidate]) -> None:
    """Hits of a `span_is_match` shape (distinct, sorted, flat: see `group_hits`) as
    candidates, left to right, skipping those that start inside the previous one (as
    finditer over the whole text would). A start with one end is the match `re` finds
    there (the pattern allows no other: see Shape.span_is_match); a start reported with
    several ends, which that rules out, is re-read rather than trusted."""
    name = plan.name
    last_end = 0
    count = len(spans)
    i = 0
    while i < count:
        start = spans[i]
        end = spans[i + 1]
        j = i + 2
        while j < count and spans[j] == start:
            j += 2
        single = j == i + 2
        i = j
        if start < last_end:
            continue
        if single:
            last_end = end
            found.append((name, start, end))
            continue
        m = plan.pattern.match(folded, start, start + plan.max_len + 1)
        if m is not None:
            last_end = m.end()
            found.append((name, start, last_end))


def _after_barrier(data: bytes, low: int, high: int, alphabet: bytes) -> int:
    """Where the run of `alphabet` characters ending at `high` starts, not before `low`:
    `low + len(text[low:high].rstrip(chars))`, read in place."""
    position = high
    while position > low and alphabet[data[position - 1]]:
        position -= 1
    return position


def _located_starts(plan: _Plan, folded: str, data: bytes, triggers: list[int]) -> list[int]:
    """Every position from which the locator reaches a trigger's anchor may start a match
    (the leftmost may fail the pattern's `\\b`): collect them all, sorted."""
    assert plan.locate is not None
    search = plan.locate.search
    alphabet = plan.alphabet
    located = set()
    for trigger_start in triggers:
        anchor = trigger_start + plan.offset
        position = max(0, anchor - plan.before)
        if alphabet is not None:  # skip to the last barrier (see Shape)
            position = _after_barrier(data, position, anchor, alphabet)
        while (m := search(folded, position, anchor)) is not None:
            start = m.start()
            located.add(start)
            # The locator opens with `\b`, which never holds inside a run of word
            # characters: when [start, anchor) is one, no later start reaches the anchor.
            # ("ADAM Frederic": the search that found nothing more cost shapes() ~5k
            # instructions per dense order, 302k -> 296k.)
            if _word_run(data, start, anchor):
                break
            position = start + 1
    return sorted(located)


def _word_run(data: bytes, low: int, high: int) -> bool:
    """Every character of data[low:high] is a word character."""
    for position in range(low, high):
        if not is_regex_word_code(data[position]):
            return False
    return True


def _read_windows(
    plan: _Plan, folded: str, data: bytes, positions: list[int], found: list[Candidate]
) -> None:
    """Re-read the windows where a match may start with finditer, as on the whole text."""
    before, max_len, alphabet = plan.before, plan.max_len, plan.alphabet
    # One range per hit, where a match holding that trigger may start: sorted by hit, and
    # their starts never decrease either (a run's start does not move back as it grows).
    ranges = [(max(0, start - before), start) for start in positions]
    if alphabet is not None:
        # A match holds its trigger's start and only `alphabet` characters: it starts
        # after the last barrier before the trigger (see Shape).
        ranges = [(_after_barrier(data, low, high, alphabet), high) for low, high in ranges]
    search, name = plan.pattern.search, plan.name
    count = len(ranges)
    first = 0
    while first < count:
        # Ranges closer than `max_len` are walked together: a match starting in one may
        # run into the next, and finditer over the whole text would walk them in one go
        # (a match found from the first consumes what it covers).
        low, high = ranges[first]
        last = first + 1
        while last < count and ranges[last][0] <= high + max_len:
            high = ranges[last][1]
            last += 1
        # Matches starting in [low, high] end within max_len of their start, and a final
        # `\b` reads one character further: cutting the text there changes no such
        # match, and bounds the re-read. Matches do not overlap: once one ends past
        # `high`, the next starts past it, so stop there rather than try every position
        # left in the window (up to `max_len`, hundreds of characters for e-mail/street).
        # The searches walk the window as finditer would (no shape matches the empty
        # string), without its iterator (an e-mail's window is usually one search).
        position, limit = low, high + max_len + 1
        pending = first  # the first range whose trigger the matches so far end before
        while (m := search(folded, position, limit)) is not None and m.start() <= high:
            end = m.end()
            found.append((name, m.start(), end))
            if end > high:
                break
            # The next match holds a trigger at or after `end`, so it starts in that
            # trigger's range: skip the gap up to the first such range. (A lab order's two
            # e-mails lie ~300 characters apart: searching that gap cost shapes() ~25k
            # instructions per dense order, 337k -> 312k.)
            while ranges[pending][1] < end:
                pending += 1
            position = max(end, ranges[pending][0])
        first = last


def native_hyperscan_available() -> bool:
    """gateway.scan._hyperscan is built (setup.py builds it where libhs is installed)."""
    try:
        from gateway.scan import _hyperscan  # noqa: F401
    except ImportError:
        return False
    return True


class Rereader(Protocol):
    def candidates(self, data: bytes, groups: list[HitGroup]) -> list[Candidate]:
        """The candidates of `scan_grouped(data)`'s hits: `HyperscanMatcher._reread`'s."""

    def candidates_by_field(
        self, data: bytes, groups: list[HitGroup], starts: list[int], lengths: list[int]
    ) -> list[list[Candidate]]:
        """`split_by_field(self.candidates(data, groups), starts, lengths)`."""

    def candidates_by_field_packed(
        self, data: bytes, packed: bytes, starts: list[int], lengths: list[int]
    ) -> list[list[Candidate]]:
        """`candidates_by_field` of the same hits packed (`scan_grouped_packed(data)`)."""


def native_rereader(plans: list[_Plan]) -> Rereader | None:
    """gateway/scan/_reread.c's re-reader of these plans' hits, or None where setup.py has
    not built it (no libpcre2-dev): the Python re-read is then used, same result."""
    try:
        from gateway.scan._reread import Rereader as NativeRereader
    except ImportError:
        return None
    rereader: Rereader = NativeRereader(
        [
            (
                plan.name,
                plan.mode,
                pcre2_pattern(plan.pattern.pattern),
                bool(plan.pattern.flags & re.IGNORECASE),
                plan.before,
                plan.max_len,
                plan.alphabet or b"",
                pcre2_pattern(plan.locate.pattern) if plan.locate is not None else b"",
                plan.offset,
            )
            for plan in plans
        ]
    )
    return rereader


def pcre2_pattern(pattern: str) -> bytes:
    """A shape pattern (Python `re` syntax, ASCII) as PCRE2 reads it the same way. Of what
    the shapes use, only `\\Z` differs: Python's is the very end, PCRE2's `\\z`."""
    assert "\\\\" not in pattern  # no escaped backslash could precede a Z
    return pattern.replace("\\Z", "\\z").encode("ascii")


def hyperscan_available() -> bool:
    if native_hyperscan_available():
        return True
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
