"""gateway.scan._digest (the C finding digests) against crypto.pseudonym and the stdlib's
hmac: the same hex for every key, kind and value; the same findings from an engine with
and without it; clear errors that never quote a value."""

from __future__ import annotations

import hashlib
import hmac
import sys
import threading

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crypto.pseudonym import DIGEST_HEX, hmac_sha256, value_digest
from gateway.scan import TransformPolicy, build_engine
from gateway.scan.engine import native_digester
from tests.scan.corpus import PRACTICE, make_corpus

# Around SHA-256's 64-byte block: RFC 2104 hashes a longer key first.
KEYS = [b"", b"d" * 32, bytes(range(64)), bytes(range(65)), b"\xff" * 200]
# Any str that has a UTF-8 form (no lone surrogates): accents, astral characters, NUL.
TEXTS = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)
SECRET = "284037510812347"  # a NIR: must never appear in an error


def _digester(key: bytes):  # type: ignore[no-untyped-def]
    digester = native_digester(key)
    assert digester is not None, "rebuild with libssl-dev: make clean venv"
    return digester


def test_the_native_module_is_built() -> None:
    """`make test` installs libssl-dev before building: the engine must not fall back to
    hashlib unnoticed."""
    _digester(b"key")


@settings(max_examples=500, deadline=None)
@given(
    key=st.sampled_from(KEYS) | st.binary(max_size=150),
    kind=TEXTS,
    value=TEXTS,
    hex_chars=st.integers(0, 64),
)
@example(key=KEYS[4], kind="name", value="é\u2019x😀" * 40, hex_chars=DIGEST_HEX)
@example(key=KEYS[3], kind="", value="", hex_chars=64)
@example(key=KEYS[2], kind="nir", value=SECRET, hex_chars=1)
def test_native_hex_is_the_python_hmac(key: bytes, kind: str, value: str, hex_chars: int) -> None:
    native = _digester(key).hex(kind, value, hex_chars)
    message = (kind + "\n" + value).encode("utf-8")
    assert native == hmac.new(key, message, hashlib.sha256).hexdigest()[:hex_chars]
    assert native == hmac_sha256(key, kind + "\n" + value).hex()[:hex_chars]
    assert _digester(key).hex(kind, value, DIGEST_HEX) == value_digest(key, kind, value)


def test_one_digester_serves_many_threads() -> None:
    digester = _digester(KEYS[3])
    values = [f"{SECRET}{i}é😀" * (i % 7) for i in range(200)]
    expected = [value_digest(KEYS[3], "nir", value) for value in values]
    failures: list[int] = []

    def digest_repeatedly() -> None:
        for _ in range(20):
            for i, value in enumerate(values):
                if digester.hex("nir", value, DIGEST_HEX) != expected[i]:
                    failures.append(i)

    threads = [threading.Thread(target=digest_repeatedly) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_digester_keeps_its_key() -> None:
    """Keyed once: __init__ (object's) cannot key it again."""
    digester = _digester(b"first")
    digester.__init__(b"second")  # type: ignore[misc]
    assert digester.hex("nir", SECRET, 16) == value_digest(b"first", "nir", SECRET)


def test_bad_arguments_raise_clear_errors() -> None:
    from gateway.scan._digest import Digester

    with pytest.raises(TypeError, match="bytes"):
        Digester("key")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Digester()  # type: ignore[call-arg]
    digester = Digester(b"key")
    bad_calls: list[tuple[type[Exception], str, tuple[object, ...]]] = [
        (TypeError, "3 arguments", ("nir", SECRET)),
        (TypeError, "3 arguments", ("nir", SECRET, 16, 16)),
        (TypeError, "must be str", ("nir", SECRET.encode(), 16)),
        (TypeError, "must be str", (None, SECRET, 16)),
        (TypeError, "must be an int", ("nir", SECRET, "16")),
        (TypeError, "must be an int", ("nir", SECRET, 16.0)),
        (ValueError, "from 0 to 64", ("nir", SECRET, 65)),
        (ValueError, "from 0 to 64", ("nir", SECRET, -1)),
        (ValueError, "from 0 to 64", ("nir", SECRET, 2**70)),
        (ValueError, "UTF-8", ("nir", SECRET + "\ud800", 16)),
        (ValueError, "UTF-8", ("nir\udfff", SECRET, 16)),
    ]
    for error, message, args in bad_calls:
        with pytest.raises(error, match=message) as raised:
            digester.hex(*args)  # type: ignore[arg-type]
        assert SECRET not in str(raised.value) and SECRET not in repr(raised.value.args)
        assert raised.value.__context__ is None  # no UnicodeEncodeError holding the value
    # The Python code rejects a lone surrogate too, with a UnicodeEncodeError (a ValueError).
    with pytest.raises(ValueError):
        value_digest(b"key", "nir", SECRET + "\ud800")


def test_engines_with_and_without_the_module_find_and_write_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages, roster = make_corpus(60, seed=11)
    keys = {"digest_key": bytes(range(70)), "pseudonym_key": b"p" * 32}
    native = build_engine(patients=roster, practice=PRACTICE, engine="re", **keys)
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "gateway.scan._digest", None)  # the import fails
        fallback = build_engine(patients=roster, practice=PRACTICE, engine="re", **keys)
    assert native._digester is not None and fallback._digester is None
    policy = TransformPolicy(audience="labo.example")
    results = [
        [
            (findings, engine.rewrite_fields(message.fields, findings, policy).texts)
            for message in messages
            for findings in [engine.scan_fields(message.fields)]
        ]
        for engine in (native, fallback)
    ]
    assert results[0] == results[1]
    assert sum(len(findings) for findings, _ in results[0]) > 200
