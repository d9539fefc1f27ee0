"""Quarantine: copies held for an administrator, sealed at rest.

Trust boundary: the held bytes are untrusted and may carry patient data; they are
stored only sealed (`<data_dir>/quarantine/<id>.msg`, AAD `quarantine:<id>`). The
index (`<data_dir>/quarantine.db`, schema versioned) holds PHI-free metadata: route,
fixed reason phrase, finding counts per type, envelope addresses, Message-ID.

API for the admin console and CLI: `list()`, `show(id)`, `data(id)`, `delete(id)`;
releasing (which re-queues the copy) is `Service.release_held`, because it needs
the queue and must be audited.

Invariant: `hold()` returns only once the sealed file is fsync'ed and the row
committed, so the service may drop the spool file afterwards.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from crypto.aead import Sealer
from gateway.errors import SpoolError
from gateway.sealed_files import SealedFileStore
from gateway.spool import fsync_directory, new_spool_id

MIGRATIONS = [
    """
    CREATE TABLE held (
        id TEXT PRIMARY KEY,
        spool_id TEXT NOT NULL,
        route TEXT NOT NULL,
        action TEXT NOT NULL,
        connector TEXT NOT NULL,
        mail_from TEXT NOT NULL,
        recipients TEXT NOT NULL,
        reason TEXT NOT NULL,
        findings TEXT NOT NULL,
        message_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        created REAL NOT NULL
    )
    """,
]

_COLUMNS = (
    "id, spool_id, route, action, connector, mail_from, recipients, reason, findings, "
    "message_id, size, created"
)


@dataclass(frozen=True)
class HeldItem:
    id: str
    spool_id: str
    route: str
    action: str
    connector: str
    mail_from: str
    recipients: tuple[str, ...]
    reason: str
    findings: Mapping[str, int] = field(default_factory=dict)
    message_id: str = ""
    size: int = 0
    created: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "spool_id": self.spool_id,
            "route": self.route,
            "action": self.action,
            "connector": self.connector,
            "mail_from": self.mail_from,
            "recipients": list(self.recipients),
            "reason": self.reason,
            "findings": dict(self.findings),
            "message_id": self.message_id,
            "size": self.size,
            "created": self.created,
        }


def _item(row: tuple[object, ...]) -> HeldItem:
    v = list(row)
    return HeldItem(
        id=str(v[0]),
        spool_id=str(v[1]),
        route=str(v[2]),
        action=str(v[3]),
        connector=str(v[4]),
        mail_from=str(v[5]),
        recipients=tuple(json.loads(str(v[6]))),
        reason=str(v[7]),
        findings=json.loads(str(v[8])),
        message_id=str(v[9]),
        size=int(str(v[10])),
        created=float(str(v[11])),
    )


class Quarantine(SealedFileStore):
    def __init__(self, data_dir: Path, sealer: Sealer) -> None:
        super().__init__(data_dir, sealer, kind="quarantine", migrations=MIGRATIONS)

    def hold(
        self,
        *,
        spool_id: str,
        route: str,
        action: str,
        connector: str,
        mail_from: str,
        recipients: Sequence[str],
        data: bytes,
        reason: str,
        findings: Mapping[str, int],
        message_id: str = "",
        created: float | None = None,
    ) -> HeldItem:
        held_id = new_spool_id()
        item = HeldItem(
            id=held_id,
            spool_id=spool_id,
            route=route,
            action=action,
            connector=connector,
            mail_from=mail_from,
            recipients=tuple(recipients),
            reason=reason,
            findings=dict(findings),
            message_id=message_id,
            size=len(data),
            created=created if created is not None else time.time(),
        )
        path = self._path(held_id)
        try:
            self.write_sealed(path, held_id, data, sync=True)
            fsync_directory(self.dir)
            with self._lock:
                self._db.execute(
                    f"INSERT INTO held ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item.id,
                        item.spool_id,
                        item.route,
                        item.action,
                        item.connector,
                        item.mail_from,
                        json.dumps(list(item.recipients)),
                        item.reason,
                        json.dumps(dict(item.findings)),
                        item.message_id,
                        item.size,
                        item.created,
                    ),
                )
        except (OSError, sqlite3.Error) as exc:
            path.unlink(missing_ok=True)
            raise SpoolError("cannot write to the quarantine") from exc
        return item

    def list(self) -> list[HeldItem]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM held ORDER BY created, id").fetchall()
        return [_item(r) for r in rows]

    def show(self, held_id: str) -> HeldItem | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM held WHERE id = ?", (held_id,)
            ).fetchone()
        return _item(row) if row else None

    def data(self, held_id: str) -> bytes:
        """The held bytes (PHI): for an audited release or an admin's view only."""
        return bytes(self.read_sealed(held_id))

    def delete(self, held_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM held WHERE id = ?", (held_id,))
        self._path(held_id).unlink(missing_ok=True)
        return cur.rowcount > 0
