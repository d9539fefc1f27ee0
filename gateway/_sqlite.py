"""SQLite stores: one schema version per database, migrated forward at open.

Every store (queue, audit, vault, roster, admin users) opens its database through
`open_database(path, migrations)`. `migrations[i]` is the SQL script that takes the
schema from version i to i+1; PRAGMA user_version records where a database is.
A database newer than the code is refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import PortiqueError


class SchemaError(PortiqueError):
    pass


def open_database(
    path: Path, migrations: Sequence[str], *, check_same_thread: bool = True
) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=check_same_thread,
        timeout=BUSY_TIMEOUT_S,  # SQLite's busy timeout, for the pragmas below too
    )
    _use_wal(conn)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    migrate(conn, migrations, path.name)
    return conn


# How long a connection waits for another's lock (SQLite's busy timeout), in seconds.
BUSY_TIMEOUT_S = 10.0


def _use_wal(conn: sqlite3.Connection) -> None:
    """PRAGMA journal_mode=WAL, retried while the database is locked, for up to
    BUSY_TIMEOUT_S. Processes opening a new database together (worker processes start
    at once) each switch it: where waiting for the lock could deadlock two of them,
    SQLite answers "database is locked" at once instead of calling its busy handler,
    and the process failed to start (seen in tests/stores/test_migrate.py)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


class WriterLock:
    """Serialises the writers of one SQLite database across processes, and wakes a
    waiting writer as soon as the holder is done.

    SQLite's busy handler polls: a writer that finds the database locked sleeps 1, 2, 5,
    10, 15, 20, 25 ... ms between retries. Two worker processes appending to one audit
    trail under load each slept ~25 % of the time there, up to 25 ms at once (issue 7),
    and the SMTP 250 waits for the audit record. Held around a write transaction, a
    blocking flock(2) on a file beside the database makes the other writer wait in the
    kernel, which wakes it at the release.

    Only a way of waiting: a writer that does not take it (a CLI command, a checkpoint)
    is still serialised by SQLite's own lock and busy timeout, as before. Unlike the
    busy timeout, the flock wait has no bound: a holder stuck in its transaction is one
    stuck in SQLite or in fsync, where every other write of the database is stuck too.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def acquire(self) -> bool:
        """Wait for the lock (the GIL is released meanwhile). False if flock failed:
        the caller then goes on without it, and SQLite's busy timeout does the waiting."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError:
            return False
        return True

    def release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


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
