"""SQLite stores: one schema version per database, migrated forward at open.

Every store (queue, audit, vault, roster, admin users) opens its database through
`open_database(path, migrations)`. `migrations[i]` is the SQL script that takes the
schema from version i to i+1; PRAGMA user_version records where a database is.
A database newer than the code is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import PortiqueError


class SchemaError(PortiqueError):
    pass


def open_database(
    path: Path, migrations: Sequence[str], *, check_same_thread: bool = True
) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    migrate(conn, migrations, path.name)
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[str], name: str) -> int:
    """Bring the schema to len(migrations). Each step re-reads the version inside its
    write transaction, so processes opening the same new database at once (worker
    processes, a CLI command next to `portique serve`) apply each step exactly once."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn)
            if current > len(migrations):
                raise SchemaError(
                    f"{name}: schema version {current} is newer than this release"
                    f" ({len(migrations)})"
                )
            if current == len(migrations):
                conn.execute("COMMIT")
                return current
            for statement in _split(migrations[current]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {current + 1}")
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise


def _split(script: str) -> list[str]:
    """Split a migration script into statements (no semicolons inside literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]
