"""Sealed message files with a SQLite index beside them: what the delivery queue and
the quarantine both are.

Layout: `<data_dir>/<kind>/<id>.msg`, each sealed as a stream (crypto.aead, AAD
`<kind>:<id>`), and `<data_dir>/<kind>.db` (gateway._sqlite: WAL, synchronous=FULL,
schema migrations) for the index. Thread-safe, no asyncio.

Invariants:
- Message bytes are on disk only sealed; the index holds no message content.
- `write_sealed` writes exactly the path it is given (the caller decides between a
  temporary name to rename and the final one) and fdatasyncs it when asked.
- A file that does not open (missing, wrong key, damaged) raises SpoolError naming the
  entry, never its content.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from crypto.aead import STREAM_CHUNK, Sealer, SealError, StreamSealer, open_stream_into
from gateway._sqlite import open_database
from gateway.errors import SpoolError


def sealed_aad(kind: str, entry_id: str) -> bytes:
    """Binds a sealed file to its store and entry: a queue file renamed into the
    quarantine (or to another id) does not open."""
    return f"{kind}:{entry_id}".encode()


class SealedFileStore:
    def __init__(self, data_dir: Path, sealer: Sealer, *, kind: str, migrations: list[str]) -> None:
        self.kind = kind
        self.dir = data_dir / kind
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.sealer = sealer
        self._lock = threading.Lock()
        self._db: sqlite3.Connection = open_database(
            data_dir / f"{kind}.db", migrations, check_same_thread=False
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _path(self, entry_id: str) -> Path:
        return self.dir / f"{entry_id}.msg"

    def write_sealed(self, path: Path, entry_id: str, data: bytes, *, sync: bool) -> None:
        """Seal `data` for `entry_id` into `path`; fdatasync it if `sync`."""
        sealer = StreamSealer(self.sealer, sealed_aad(self.kind, entry_id))
        view = memoryview(data)
        with open(path, "wb") as fh:
            offset = 0
            while True:
                chunk = bytes(view[offset : offset + STREAM_CHUNK])
                offset += STREAM_CHUNK
                last = offset >= len(view)
                fh.write(sealer.seal_chunk(chunk, final=last))
                if last:
                    break
            fh.flush()
            if sync:
                os.fdatasync(fh.fileno())

    def read_sealed(self, entry_id: str) -> bytearray:
        """The entry's bytes, in one buffer (not copied again to immutable bytes: a
        50 MB message would otherwise cost 100 MB)."""
        try:
            with open(self._path(entry_id), "rb") as fh:
                return open_stream_into(self.sealer, fh, sealed_aad(self.kind, entry_id))
        except (OSError, SealError) as exc:
            raise SpoolError(f"{self.kind} entry {entry_id} cannot be read") from exc
