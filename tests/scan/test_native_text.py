"""gateway.scan._native_text (the C folding and word view) against the Python code of
_fold.py and matchers.py: the same result for every code point, for arbitrary text of
each storage kind (lone surrogates and astral characters included) and arbitrary bytes;
used by the compiled build; clear errors that never quote a value.

(The plain-Python side, where the module is not built, runs in tests/scan/test_compiled.py:
its child process imports gateway/scan from source, without the C module.)"""

from __future__ import annotations

import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

if os.environ.get("PORTIQUE_PURE_PYTHON") == "1":  # built without a compiler: no C module
    pytest.skip("PORTIQUE_PURE_PYTHON=1 build", allow_module_level=True)

from gateway.scan import _fold, _native_text, matchers
from gateway.scan._fold import (
    _ALNUM_KEEP,
    _EXTRA_PAIRS,
    _TABLE,
    _alnum_key_py,
    _fold_bytes_py,
    alnum_key,
    fold,
    fold_key,
)
from gateway.scan.matchers import _WORD_VIEW, find_all, find_all_py, word_view

# The characters the mapping singles out, and neighbours of the storage kinds' limits.
SPECIAL = "œŒ\u2019\u202f\u00a0°ºªßÆæ€\u00ff\u0100\u0152\u0153\ud800\udbff\udc00\udfff\uffff"
SPECIAL += "\U00010000\U0001f600\U0010ffff\x00\x7f\x80"
TEXTS = st.text(
    st.characters(exclude_categories=[])  # every code point, lone surrogates too
    | st.characters(max_codepoint=0xFF)  # Latin-1: one byte a character
    | st.sampled_from(SPECIAL),
    max_size=300,
)
SECRET = "Éloïse DUPONT 284037510812347"  # patient data: never in an error


def _python_fold(text: str) -> str:
    return _fold_bytes_py(text).decode("ascii")


def test_the_native_module_is_built_and_used() -> None:
    """setup.py always builds it (it needs no library): the scan core must not fall back
    to the Python translations unnoticed."""
    assert str(_native_text.__file__).endswith(".so")
    assert _fold._NATIVE_FOLD is _native_text.fold
    assert _fold._NATIVE_FOLD_KEEP is _native_text.fold_keep
    assert matchers._NATIVE_WORD_VIEW is _native_text.word_view
    assert matchers._NATIVE_FIND_ALL is _native_text.find_all


@settings(max_examples=1500, deadline=None)
@given(text=TEXTS)
@example(text="")
@example(text=SPECIAL)
@example(text="".join(map(chr, range(256))))
@example(text="Dr Cœur, n° 12\u202f€ l\u2019Œuvre \udfff\U0001f600")
def test_native_folding_is_the_python_folding(text: str) -> None:
    expected = _python_fold(text)
    assert _native_text.fold(text, _TABLE, _EXTRA_PAIRS) == expected
    assert fold(text) == expected and fold(text).isascii() and len(fold(text)) == len(text)
    assert fold_key(text) == expected.lower()
    key = _alnum_key_py(text)
    assert _native_text.fold_keep(text, _TABLE, _EXTRA_PAIRS, _ALNUM_KEEP) == key
    assert alnum_key(text) == key


def test_fold_keeps_an_ascii_text_itself() -> None:
    text = "DUPONT Jean 2024-11-02.stl"
    assert fold(text) is text


def test_the_characters_past_latin_1() -> None:
    assert fold("œŒ\u2019\u202f€\u0100\ud800\U0001f600") == "oO' ????"
    assert alnum_key("Œuvre\u202fN°\u2019 12\udc00") == "ouvreno12"


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=300))
@example(data=bytes(range(256)))
@example(data=b"")
def test_native_word_view_is_the_python_word_view(data: bytes) -> None:
    expected = b" " + data.translate(_WORD_VIEW) + b" "
    assert _native_text.word_view(data, _WORD_VIEW) == expected
    assert word_view(data) == expected


@settings(max_examples=500, deadline=None)
@given(
    data=st.binary(max_size=200) | st.text(" ab", max_size=200).map(str.encode),
    needles=st.lists(st.binary(min_size=1, max_size=4) | st.sampled_from([b" a ", b"aa", b" "])),
)
@example(data=b" marie  marie claire ", needles=[b" marie ", b" marie claire ", b"zz"])
@example(data=b"aaaa", needles=[b"aa", b"a"])
def test_native_find_all_is_the_python_find_all(data: bytes, needles: list[bytes]) -> None:
    """Every occurrence of each needle, overlapping ones too, needle by needle."""
    expected = find_all_py(data, needles)
    assert _native_text.find_all(data, needles) == expected
    assert find_all(data, needles) == expected
    for index, start in expected:
        assert data[start : start + len(needles[index])] == needles[index]
    assert len(expected) == sum(
        data.startswith(needle, at) for needle in needles for at in range(len(data))
    )


def _chunks(step: int = 0x10000) -> list[str]:
    return [
        "".join(map(chr, range(low, min(low + step, 0x110000)))) for low in range(0, 0x110000, step)
    ]


def test_every_code_point_folds_as_in_python() -> None:
    """Every code point from U+0000 to U+10FFFF, in texts of each storage kind: one byte
    (Latin-1), two (the BMP, surrogates included) and four."""
    texts = ["".join(map(chr, range(256)))]
    for chunk in _chunks():
        texts += [chunk, chunk + "\U0010ffff"]  # the BMP chunk, also stored four bytes wide
    assert sum(map(len, texts)) > 0x110000
    for text in texts:
        assert _native_text.fold(text, _TABLE, _EXTRA_PAIRS) == _python_fold(text)
        assert _native_text.fold_keep(text, _TABLE, _EXTRA_PAIRS, _ALNUM_KEEP) == _alnum_key_py(
            text
        )


def test_every_byte_reads_as_in_python_in_the_word_view() -> None:
    data = bytes(range(256)) * 3
    assert _native_text.word_view(data, _WORD_VIEW) == b" " + data.translate(_WORD_VIEW) + b" "


def test_bad_arguments_raise_clear_errors() -> None:
    wide = bytes([0x80]) + _TABLE[1:]  # would fold NUL past ASCII
    bad_calls: list[tuple[type[Exception], str, object, tuple[object, ...]]] = [
        (TypeError, "3 arguments", _native_text.fold, (SECRET, _TABLE)),
        (TypeError, "must be str", _native_text.fold, (SECRET.encode(), _TABLE, _EXTRA_PAIRS)),
        (TypeError, "must be str", _native_text.fold, (SECRET, _TABLE, None)),
        (TypeError, "256 ASCII", _native_text.fold, (SECRET, bytearray(_TABLE), _EXTRA_PAIRS)),
        (ValueError, "256 ASCII", _native_text.fold, (SECRET, _TABLE[:255], _EXTRA_PAIRS)),
        (ValueError, "256 ASCII", _native_text.fold, (SECRET, wide, _EXTRA_PAIRS)),
        (ValueError, "pairs", _native_text.fold, (SECRET, _TABLE, _EXTRA_PAIRS[:-1])),
        (ValueError, "to ASCII", _native_text.fold, (SECRET, _TABLE, "\u2019é")),
        (TypeError, "4 arguments", _native_text.fold_keep, (SECRET, _TABLE, _EXTRA_PAIRS)),
        (ValueError, "128 ASCII", _native_text.fold_keep, (SECRET, _TABLE, "", _TABLE)),
        (ValueError, "128 ASCII", _native_text.fold_keep, (SECRET, _TABLE, "", b"\xff" * 128)),
        (ValueError, "256 ASCII", _native_text.fold_keep, (SECRET, wide, "", _ALNUM_KEEP)),
        (TypeError, "2 arguments", _native_text.word_view, (SECRET.encode(),)),
        (TypeError, "must be bytes", _native_text.word_view, (SECRET, _WORD_VIEW)),
        (TypeError, "length 256", _native_text.word_view, (SECRET.encode(), b"")),
        (TypeError, "2 arguments", _native_text.find_all, (SECRET.encode(),)),
        (TypeError, "must be bytes", _native_text.find_all, (SECRET, [b"a"])),
        (TypeError, "must be bytes", _native_text.find_all, (SECRET.encode(), (b"a",))),
        (ValueError, "non-empty bytes", _native_text.find_all, (SECRET.encode(), [b""])),
        (ValueError, "non-empty bytes", _native_text.find_all, (SECRET.encode(), [SECRET])),
    ]
    for error, message, function, args in bad_calls:
        with pytest.raises(error, match=message) as raised:
            function(*args)  # type: ignore[operator]
        assert SECRET not in str(raised.value) and SECRET not in repr(raised.value.args)
