"""Schema migrations: processes opening the same new database at once apply each step
exactly once (worker processes start together; a CLI command may open beside serve)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from gateway._sqlite import SchemaError, open_database, schema_version

# The first step takes a while (300,000 rows) so that the other processes read the
# version while it runs: the window in which a version read outside the write
# transaction would make them apply it a second time.
MIGRATIONS = [
    "CREATE TABLE a (x INTEGER);"
    " WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000)"
    " INSERT INTO a SELECT x FROM c",
    "CREATE TABLE b (y TEXT); INSERT INTO a VALUES (2)",
    "ALTER TABLE b ADD COLUMN z TEXT",
]


def _open(path: str, start: multiprocessing.synchronize.Event) -> None:
    start.wait(10)
    open_database(Path(path), MIGRATIONS).close()


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_open, args=(str(path), start)) for _ in range(6)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    conn = sqlite3.connect(path)
    try:
        assert schema_version(conn) == 3
        assert conn.execute("SELECT count(*), max(x) FROM a").fetchone() == (300001, 300000)
        assert [r[1] for r in conn.execute("PRAGMA table_info(b)")] == ["y", "z"]
    finally:
        conn.close()


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    open_database(path, MIGRATIONS).close()
    with pytest.raises(SchemaError, match="newer than this release"):
        open_database(path, MIGRATIONS[:2])
