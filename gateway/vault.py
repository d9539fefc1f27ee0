"""The token vault: token -> identity mappings, encrypted, for audited re-identification.

Trust boundary: identities (PHI) enter from `RewriteResult.vault_entries`; they are
sealed with AES-256-GCM (crypto.aead) before they touch disk and are opened only by
`lookup`, whose callers (the re-identification command and admin page) audit each use.

Invariants:
- `store` is idempotent per (token, audience) and durable when it returns (SQLite
  WAL, synchronous=FULL, one transaction per call): the I/O shell calls it before a
  copy carrying those tokens is queued, so no token leaves without its mapping.
- Each sealed identity is bound to its row (AAD = "vault:" token "\\n" audience), so a
  blob copied to another row does not open.
- `patient` is an opaque key (never PHI), kept in clear so that `forget_patient`
  can erase a patient without opening every row.

- Safe to share between threads (the service stores from its I/O executor while the
  admin console looks tokens up): one connection, every use under one lock.
- `holds_all` never waits and never answers True wrongly: it remembers the rows this
  connection has seen stored only while no other connection has written (SQLite's
  `PRAGMA data_version`), so a patient erased by the CLI beside the gateway is stored
  again with the next message that names them.

Storage sits behind this narrow class so a PostgreSQL backend can replace it later.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from crypto.aead import Sealer
from crypto.keys import Keyring
from gateway._sqlite import open_database
from gateway.scan.model import VaultEntry

VAULT_FILE = "vault.sqlite3"
# Rows remembered as stored (token and domain only, no identity): bounded, then forgotten.
KNOWN_ROWS_MAX = 100_000

MIGRATIONS = (
    """
    CREATE TABLE vault_entries (
        token TEXT NOT NULL,
        audience TEXT NOT NULL,
        patient TEXT NOT NULL,
        identity BLOB NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
        PRIMARY KEY (token, audience)
    );
    CREATE INDEX vault_entries_patient ON vault_entries (patient);
    CREATE INDEX vault_entries_token ON vault_entries (token)
    """,
)


def _aad(token: str, audience: str) -> bytes:
    return f"vault:{token}\n{audience}".encode()


class Vault:
    def __init__(self, conn: sqlite3.Connection, sealer: Sealer) -> None:
        self._conn = conn
        self._sealer = sealer
        self._lock = threading.Lock()
        # (token, audience) rows seen stored, valid while `data_version` is unchanged.
        self._known: set[tuple[str, str]] = set()
        self._known_version: int | None = None

    @classmethod
    def open(cls, data_dir: Path, keyring: Keyring) -> Vault:
        conn = open_database(data_dir / VAULT_FILE, MIGRATIONS, check_same_thread=False)
        return cls(conn, Sealer(keyring))

    def store(self, entries: Sequence[VaultEntry]) -> None:
        """Record every mapping; an existing (token, audience) is left as it is.

        The rows already there are looked up first (a read): a lab's regular patients
        come back in message after message, and their mappings need no sealing and no
        write transaction (a WAL commit with synchronous=FULL is an fsync)."""
        if not entries:
            return
        with self._lock:
            self._check_known()
            missing = [e for e in entries if not self._stored(e.token, e.audience)]
            if not missing:
                return
            rows = [
                (
                    e.token,
                    e.audience,
                    e.patient,
                    self._sealer.seal(e.identity.encode(), _aad(e.token, e.audience)),
                )
                for e in missing
            ]
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR IGNORE INTO vault_entries (token, audience, patient, identity)"
                    " VALUES (?, ?, ?, ?)",
                    rows,
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._remember((e.token, e.audience) for e in missing)

    def holds_all(self, entries: Sequence[VaultEntry]) -> bool:
        """True when every entry's row is known to be stored, answered without waiting
        (on the event loop): False when the vault is busy, when another connection has
        written since, or when a row is not known, and the caller then calls `store`."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            return self._check_known() and all(
                (e.token, e.audience) in self._known for e in entries
            )
        finally:
            self._lock.release()

    def _check_known(self) -> bool:
        """Forget the known rows if another connection has committed since they were
        learnt (False then). Under the lock."""
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._known_version:
            return True
        self._known.clear()
        self._known_version = version
        return False

    def _remember(self, rows: Iterable[tuple[str, str]]) -> None:
        if len(self._known) >= KNOWN_ROWS_MAX:
            self._known.clear()
        self._known.update(rows)

    def _stored(self, token: str, audience: str) -> bool:
        if (token, audience) in self._known:
            return True
        row = self._conn.execute(
            "SELECT 1 FROM vault_entries WHERE token = ? AND audience = ?", (token, audience)
        ).fetchone()
        if row is not None:
            self._remember([(token, audience)])
        return row is not None

    def lookup(self, token: str) -> list[tuple[str, str]]:
        """[(audience, identity)] for a token: PHI, for audited re-identification only."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT audience, identity FROM vault_entries WHERE token = ? ORDER BY audience",
                (token.strip().upper(),),
            ).fetchall()
        return [
            (audience, self._sealer.open(blob, _aad(token.strip().upper(), audience)).decode())
            for audience, blob in rows
        ]

    def patient_for_token(self, token: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT patient FROM vault_entries WHERE token = ? LIMIT 1",
                (token.strip().upper(),),
            ).fetchone()
        return None if row is None else str(row[0])

    def forget_patient(self, patient: str) -> int:
        """Erase every mapping of one patient (right to erasure). Returns rows removed."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._conn.execute(
                    "DELETE FROM vault_entries WHERE patient = ?", (patient,)
                )
                self._conn.execute("COMMIT")
                self._known.clear()  # the known rows carry no patient: forget them all
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
