"""Property: whatever single record is edited, deleted or moved, verify names it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.keys import Keyring, init_keys, load_keys
from gateway.audit import AuditTrail
from gateway.audit.trail import DB_NAME
from gateway.config import AuditConfig

from ._helpers import make_trail

N = 30


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keyring]:
    d = tmp_path_factory.mktemp("pristine")
    init_keys(d)
    keyring = load_keys(d)
    make_trail(d, keyring, N, every=7)
    return d, keyring


def tampered_copy(pristine: Path, work: Path) -> sqlite3.Connection:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(pristine, work)
    conn = sqlite3.connect(work / DB_NAME, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def first_bad(work: Path, keyring: Keyring) -> int | None:
    with AuditTrail.open_readonly(work, keyring, AuditConfig()) as trail:
        result = trail.verify()
    assert not result.ok
    return result.first_bad_record


SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(
    seq=st.integers(1, N),
    column=st.sampled_from(["ts", "kind", "actor", "fields", "prev_hash"]),
    text=st.text(min_size=1, max_size=20),
)
def test_any_edit_names_the_record(
    pristine: tuple[Path, Keyring], tmp_path: Path, seq: int, column: str, text: str
) -> None:
    src, keyring = pristine
    work = tmp_path / "work"
    conn = tampered_copy(src, work)
    (old,) = conn.execute(f"SELECT {column} FROM records WHERE seq = ?", (seq,)).fetchone()
    new = json.dumps({"edited": text}) if column == "fields" else old + text
    conn.execute(f"UPDATE records SET {column} = ? WHERE seq = ?", (new, seq))
    conn.close()
    assert first_bad(work, keyring) == seq


@SETTINGS
@given(seq=st.integers(1, N - 1))
def test_any_deletion_names_the_record(
    pristine: tuple[Path, Keyring], tmp_path: Path, seq: int
) -> None:
    src, keyring = pristine
    work = tmp_path / "work"
    conn = tampered_copy(src, work)
    conn.execute("DELETE FROM records WHERE seq = ?", (seq,))
    conn.close()
    assert first_bad(work, keyring) == seq


@SETTINGS
@given(pair=st.lists(st.integers(1, N), min_size=2, max_size=2, unique=True))
def test_any_swap_names_the_earlier_record(
    pristine: tuple[Path, Keyring], tmp_path: Path, pair: list[int]
) -> None:
    src, keyring = pristine
    a, b = sorted(pair)
    work = tmp_path / "work"
    conn = tampered_copy(src, work)
    conn.execute("UPDATE records SET seq = -1 WHERE seq = ?", (a,))
    conn.execute("UPDATE records SET seq = ? WHERE seq = ?", (a, b))
    conn.execute("UPDATE records SET seq = ? WHERE seq = -1", (b,))
    conn.close()
    assert first_bad(work, keyring) == a
