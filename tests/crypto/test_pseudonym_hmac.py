"""The prototype-copy HMAC in crypto/pseudonym.py equals the standard library's HMAC."""

from __future__ import annotations

import hmac
import os

import pytest

from crypto import pseudonym


@pytest.mark.parametrize("key_len", [0, 1, 32, 63, 64, 65, 200])
def test_hmac_matches_stdlib_for_every_key_length(key_len: int) -> None:
    key = os.urandom(key_len)
    for message in ["", "nir\n1850575123456", "é" * 100, "x" * 1000]:
        expected = hmac.digest(key, message.encode("utf-8"), "sha256")
        assert pseudonym.hmac_sha256(key, message) == expected
        # a second call goes through the cached prototype and must not have mutated it
        assert pseudonym.hmac_sha256(key, message) == expected


def test_public_functions_use_the_right_key() -> None:
    digest_key, other_key = os.urandom(32), os.urandom(32)
    expected = hmac.digest(digest_key, b"nir\n185", "sha256").hex()[:16]
    assert pseudonym.value_digest(digest_key, "nir", "185") == expected
    assert pseudonym.value_digest(other_key, "nir", "185") != expected
    token = pseudonym.patient_token(digest_key, " Labo ", "p-1")
    assert token == pseudonym.patient_token(digest_key, "labo", "p-1")
    assert token != pseudonym.patient_token(other_key, "labo", "p-1")


def test_prototype_cache_stays_bounded() -> None:
    for _ in range(3 * pseudonym._MAX_PROTOTYPES):
        key = os.urandom(32)
        assert pseudonym.hmac_sha256(key, "m") == hmac.digest(key, b"m", "sha256")
    assert len(pseudonym._prototypes) <= pseudonym._MAX_PROTOTYPES
