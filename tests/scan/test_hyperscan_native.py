"""gateway.scan._hyperscan (the C scanning module) against the python-hyperscan binding:
the same databases report the same hits, on small texts (the GIL kept, one shared
scratch) and large ones (the GIL released, a scratch per scan), from several threads; and
`scan_grouped` groups them as matchers.group_hits does."""

from __future__ import annotations

import re
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.scan import TransformPolicy, build_engine
from gateway.scan._fold import fold
from gateway.scan.matchers import (
    HS_FLAG_CASELESS,
    HS_FLAG_SOM_LEFTMOST,
    HyperscanMatcher,
    ReMatcher,
    group_hits,
    native_hyperscan_available,
    split_hits_by_field,
    word_view,
)
from tests.scan.corpus import PRACTICE, make_corpus

_LARGE = 65536  # _hyperscan.c's LARGE_SCAN: from this size a scan releases the GIL


def test_the_native_module_is_built() -> None:
    """`make test` installs libhyperscan-dev before building: the scanner must not fall
    back to the binding unnoticed."""
    assert native_hyperscan_available(), "rebuild with libhyperscan-dev: make clean venv"


def _matchers() -> tuple[HyperscanMatcher, HyperscanMatcher]:
    _, roster = make_corpus(60, seed=5)
    literals = sorted({p.last_name for p in roster} | {p.first_name for p in roster})
    return HyperscanMatcher(literals, native=True), HyperscanMatcher(literals, native=False)


def _corpus_texts() -> list[str]:
    messages, _ = make_corpus(60, seed=5)
    return ["\0".join(fold(field.text) for field in message.fields) for message in messages]


def _unpacked(packed: bytes) -> list[tuple[int, list[int]]]:
    """`scan_grouped_packed`'s triples regrouped as `scan_grouped` gives them."""
    groups: list[tuple[int, list[int]]] = []
    for shape, start, end in struct.iter_unpack("=qqq", packed):
        if not groups or groups[-1][0] != shape:
            groups.append((shape, []))
        groups[-1][1].extend((start, end))
    return groups


def _corpus_fields() -> list[list[str]]:
    messages, _ = make_corpus(60, seed=5)
    return [[fold(field.text) for field in message.fields] for message in messages]


def _field_layout(fields: list[str]) -> tuple[list[int], list[int]]:
    """Where each field starts in the fields joined by NUL, and its length."""
    starts, position = [], 0
    for field in fields:
        starts.append(position)
        position += len(field) + 1
    return starts, [len(field) for field in fields]


def test_native_and_binding_report_the_same_hits_on_the_corpus() -> None:
    native, binding = _matchers()
    compared = 0
    for text in _corpus_texts():
        data = text.encode("ascii")
        view = word_view(data)
        native_hits = native._shape_db.scan(data)
        assert sorted(native_hits) == sorted(binding._shape_db.scan(data))
        grouped = native._shape_db.scan_grouped(data)
        assert grouped == group_hits(native_hits) == binding._shape_db.scan_grouped(data)
        assert _unpacked(native._shape_db.scan_grouped_packed(data)) == grouped
        assert native.shapes(text, data) == binding.shapes(text, data)
        assert native.literals(view) == binding.literals(view)
        compared += len(native_hits)
    assert compared > 500  # the corpus fires every family many times


def test_literal_hits_by_field_are_the_hits_split_as_in_python() -> None:
    """`scan_by_field` (C) against `split_hits_by_field` over `scan`'s hits, and the
    matchers' `literals_by_field` against a split of their `literals`, on the corpus
    messages' fields joined by NUL: the same hits, each in its field, none across two."""
    native, binding = _matchers()
    _, roster = make_corpus(60, seed=5)
    reference = ReMatcher(sorted({p.last_name for p in roster} | {p.first_name for p in roster}))
    compared = 0
    for fields in _corpus_fields():
        starts, lengths = _field_layout(fields)
        data = "\0".join(fields).encode("ascii")
        view = word_view(data)
        for database, text in ((native._literal_db, view), (native._shape_db, data)):
            assert database is not None
            for trim in (0, 2):
                split = database.scan_by_field(text, starts, lengths, trim)
                assert split == split_hits_by_field(database.scan(text), starts, lengths, trim)
        by_field = native.literals_by_field(view, starts, lengths)
        assert by_field == binding.literals_by_field(view, starts, lengths)
        assert by_field == reference.literals_by_field(view, starts, lengths)
        for field, hits in zip(fields, by_field, strict=True):
            for _index, start, end in hits:
                assert 0 <= start < end <= len(field)
        compared += sum(len(hits) for hits in by_field)
    assert compared > 200


def test_hits_by_field_drop_what_crosses_a_field_and_check_their_arguments() -> None:
    from gateway.scan import _hyperscan

    som = HS_FLAG_SOM_LEFTMOST
    database = _hyperscan.Database([b"ab", b"b c", b"c"], [0, 1, 2], [som] * 3)
    data = b"ab c\0cab"  # fields [0, 4) and [5, 8)
    hits = database.scan(data)
    assert sorted(hits) == [(0, 0, 2), (0, 6, 8), (1, 1, 4), (2, 3, 4), (2, 5, 6)]
    assert database.scan_by_field(data, [0, 5], [4, 3], 0) == [
        [(0, 0, 2), (1, 1, 4), (2, 3, 4)],
        [(2, 0, 1), (0, 1, 3)],
    ]
    # Trimmed ends: "ab" ending at 1, "b c" at 3, each "c" empty (kept: not before its
    # start); trimmed by 2, they would end before it, and are dropped.
    assert database.scan_by_field(data, [0, 5], [4, 3], 1) == [
        [(0, 0, 1), (1, 1, 3), (2, 3, 3)],
        [(2, 0, 0), (0, 1, 2)],
    ]
    assert database.scan_by_field(data, [0, 5], [4, 3], 2) == [[(0, 0, 0), (1, 1, 2)], [(0, 1, 1)]]
    # A shorter first field: "b c" (to 4) and "c" (3-4) pass its end, and are dropped.
    assert database.scan_by_field(data, [0, 5], [2, 3], 0) == [[(0, 0, 2)], [(2, 0, 1), (0, 1, 3)]]
    # Hits before the first field are in none.
    assert database.scan_by_field(data, [3], [5], 0) == [[(2, 0, 1), (2, 2, 3), (0, 3, 5)]]
    assert database.scan_by_field(data, [3], [5], 0) == split_hits_by_field(hits, [3], [5], 0)
    assert database.scan_by_field(b"", [0], [0], 2) == [[]]
    for starts, lengths, trim in (([], [], 0), ([0], [1, 2], 0), ([0], [4], -1)):
        with pytest.raises(ValueError, match="one length"):
            database.scan_by_field(data, starts, lengths, trim)
    with pytest.raises(ValueError, match="ascending"):
        database.scan_by_field(data, [5, 0], [3, 4], 0)
    with pytest.raises(ValueError, match=">= 0"):
        database.scan_by_field(data, [0, 5], [4, -3], 0)
    with pytest.raises(TypeError):
        database.scan_by_field(data, [0, "5"], [4, 3], 0)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        database.scan_by_field("not bytes", [0], [4], 0)  # type: ignore[arg-type]


def test_a_large_text_is_scanned_whole_with_the_gil_released() -> None:
    native, binding = _matchers()
    text = "\n".join(_corpus_texts())
    while len(text) < 4 * _LARGE:
        text += "\n" + text
    data = text.encode("ascii")
    native_hits = native._shape_db.scan(data)
    assert sorted(native_hits) == sorted(binding._shape_db.scan(data))
    assert native._shape_db.scan_grouped(data) == group_hits(native_hits)
    assert _unpacked(native._shape_db.scan_grouped_packed(data)) == group_hits(native_hits)
    assert max(end for _, _, end in native_hits) > 3 * _LARGE  # hits to the very end


def test_threads_scanning_at_once_each_get_their_own_hits() -> None:
    """Small scans share the database's scratch under the GIL; large ones clone it. Both
    kinds run here from four threads at once, each checked against a scan made alone."""
    native, _ = _matchers()
    small = [text.encode("ascii") for text in _corpus_texts()[:20]]
    large = b"\n".join(small)
    while len(large) < 2 * _LARGE:
        large += b"\n" + large
    expected = {data: native._shape_db.scan(data) for data in [*small, large]}
    failures: list[str] = []

    def scan_repeatedly(inputs: list[bytes]) -> None:
        for _ in range(15):
            for data in inputs:
                if native._shape_db.scan(data) != expected[data]:
                    failures.append(f"{len(data)} bytes")

    threads = [
        threading.Thread(target=scan_repeatedly, args=([large, *small[:3]],)) for _ in range(2)
    ] + [threading.Thread(target=scan_repeatedly, args=(small,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_bad_databases_and_inputs_raise_clear_errors() -> None:
    from gateway.scan import _hyperscan

    with pytest.raises(ValueError, match="expression 1"):
        _hyperscan.Database([b"ok", b"a{2,1}"], [0, 1], [0, 0])
    with pytest.raises(ValueError, match="one length"):
        _hyperscan.Database([b"a", b"b"], [0], [0, 0])
    with pytest.raises(TypeError, match="bytes"):
        _hyperscan.Database(["text"], [0], [0])  # type: ignore[list-item]
    database = _hyperscan.Database([b"dupont"], [7], [HS_FLAG_CASELESS | HS_FLAG_SOM_LEFTMOST])
    with pytest.raises(TypeError):
        database.scan("not bytes")  # type: ignore[arg-type]
    assert database.scan(b"M. DUPONT, dupont") == [(7, 3, 9), (7, 11, 17)]
    assert database.scan(b"") == []
    with pytest.raises(TypeError):
        database.scan_grouped("not bytes")  # type: ignore[arg-type]
    assert database.scan_grouped(b"M. DUPONT, dupont") == [(7, [3, 9, 11, 17])]
    assert database.scan_grouped(b"") == []
    literal = _hyperscan.Database(
        [b" a.b "], [3], HS_FLAG_CASELESS | HS_FLAG_SOM_LEFTMOST, literal=True
    )
    assert literal.scan(b"x A.B  axb ") == [(3, 1, 6)]  # a literal: "." is no wildcard


# Fixed-width expressions (their start computed from the end, SOM dropped), variable ones
# (Hyperscan's start), one id shared by both kinds, and one expression without SOM.
_SOM_EXPRESSIONS = [rb"\b0[1-9]", rb"\d{1,2}/", rb"[a-c]\d", rb"(?:ab|ba)\d", rb"\d\d", rb"b"]
_SOM_IDS = [4, 4, 9, 2, 5, 6]
_SOM_FLAGS = [HS_FLAG_SOM_LEFTMOST] * 5 + [0]


def _leftmost_hits(data: bytes) -> set[tuple[int, int, int]]:
    """What HS_FLAG_SOM_LEFTMOST reports, by brute force: for each expression and each
    end where a match ends, the leftmost start of a match ending there (0 without SOM).
    (No expression ends with an assertion: `endpos` hides what follows.)"""
    hits = set()
    for expression, id_, flags in zip(_SOM_EXPRESSIONS, _SOM_IDS, _SOM_FLAGS, strict=True):
        pattern = re.compile(expression)
        for end in range(len(data) + 1):
            starts = [s for s in range(end) if pattern.fullmatch(data, s, end)]
            if starts:
                hits.add((id_, starts[0] if flags else 0, end))
    return hits


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=24).map(lambda raw: bytes(b"0123/ab9 "[byte % 9] for byte in raw)))
def test_starts_are_hyperscans_whether_or_not_it_tracks_them(data: bytes) -> None:
    from gateway.scan import _hyperscan

    database = _hyperscan.Database(_SOM_EXPRESSIONS, _SOM_IDS, _SOM_FLAGS)
    hits = database.scan(data)
    assert len(hits) == len(set(hits))
    assert set(hits) == _leftmost_hits(data)
    literals = [b"ab", b"B9", b"0/ "]
    literal = _hyperscan.Database(
        literals, [1, 2, 3], HS_FLAG_CASELESS | HS_FLAG_SOM_LEFTMOST, literal=True
    )
    folded = data.lower()
    assert sorted(literal.scan(data)) == sorted(
        (id_, start, start + len(text))
        for id_, text in enumerate(literals, 1)
        for start in range(len(data))
        if folded.startswith(text.lower(), start)
    )


def test_grouped_hits_come_by_id_then_span_each_span_once() -> None:
    from gateway.scan import _hyperscan

    som = HS_FLAG_SOM_LEFTMOST
    database = _hyperscan.Database([b"ab", b"a[b-c]", b"b", b"b+"], [2, 2, 1, 0], [som] * 4)
    data = b"xab abb ac"
    expected = [(0, [2, 3, 5, 6, 5, 7]), (1, [2, 3, 5, 6, 6, 7]), (2, [1, 3, 4, 6, 8, 10])]
    assert database.scan_grouped(data) == group_hits(database.scan(data)) == expected
    # Large ids, or many hits, are sorted another way (see _hyperscan.c's sort_hits).
    large_ids = _hyperscan.Database([b"ab", b"a[b-c]", b"b"], [2, 40, 1], [som] * 3)
    expected = [(1, [2, 3, 5, 6, 6, 7]), (2, [1, 3, 4, 6]), (40, [1, 3, 4, 6, 8, 10])]
    assert large_ids.scan_grouped(data) == group_hits(large_ids.scan(data)) == expected
    many = data * 20
    assert len(database.scan(many)) > 64
    assert database.scan_grouped(many) == group_hits(database.scan(many))
    for text in (data, many, b""):  # packed: the same groups, each span once, in order
        assert _unpacked(database.scan_grouped_packed(text)) == database.scan_grouped(text)
    assert _unpacked(large_ids.scan_grouped_packed(data)) == large_ids.scan_grouped(data)
    # A span reported twice (Hyperscan merges most such reports itself) is kept once.
    assert group_hits([(2, 4, 6), (1, 5, 6), (2, 4, 6), (2, 1, 3)]) == [
        (1, [5, 6]),
        (2, [1, 3, 4, 6]),
    ]


def test_engines_on_either_binding_find_and_write_the_same() -> None:
    messages, roster = make_corpus(40, seed=9)
    keys = {"digest_key": b"d" * 32, "pseudonym_key": b"p" * 32}
    engine = build_engine(patients=roster, practice=PRACTICE, engine="hyperscan", **keys)
    policy = TransformPolicy(audience="labo.example")
    results = {}
    for native in (True, False):
        engine.matcher = HyperscanMatcher(engine._literals, native=native)
        results[native] = [
            (findings, engine.rewrite_fields(message.fields, findings, policy).texts)
            for message in messages
            for findings in [engine.scan_fields(message.fields)]
        ]
    assert results[True] == results[False]
    assert sum(len(findings) for findings, _ in results[True]) > 150
