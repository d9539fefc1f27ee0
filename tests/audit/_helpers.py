"""Helpers for audit tests: a filled trail, and raw SQLite access as an attacker has it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crypto.keys import Keyring
from gateway.audit import AuditTrail
from gateway.audit.trail import DB_NAME
from gateway.config import AuditConfig


def fill(trail: AuditTrail, n: int) -> None:
    """n records shaped like the service's events (no patient data)."""
    for i in range(n):
        trail.append(
            "decided",
            {
                "spool_id": f"s{i:04d}",
                "route": "lab" if i % 2 else "mssante",
                "action": "pseudonymise" if i % 2 else "pass",
                "verdict": "rewritten" if i % 2 else "pass",
                "findings": {"nir": i % 3, "name": 1},
                "message_id": f"<m{i}@cabinet.test>",
            },
        )


def make_trail(data_dir: Path, keyring: Keyring, n: int, every: int = 5) -> None:
    """Write n records with a checkpoint every `every` records, then close."""
    with AuditTrail.open(data_dir, keyring, AuditConfig(checkpoint_every=every)) as trail:
        fill(trail, n)


@contextmanager
def raw_db(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """The audit database opened with plain sqlite3, guards dropped: what someone with
    file access can do."""
    conn = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    try:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
            conn.execute(f"DROP TRIGGER {name}")
        yield conn
    finally:
        conn.close()


def count_chunks(trail: AuditTrail) -> list[int]:
    """The sizes of the transactions the trail's writer commits from now on."""
    chunks: list[int] = []
    real_insert = trail._insert_chunk

    def counting_insert(chunk):  # type: ignore[no-untyped-def]
        chunks.append(len(chunk))
        real_insert(chunk)

    trail._insert_chunk = counting_insert  # type: ignore[method-assign]
    return chunks
