"""The queue and the quarantine share one sealed-file store: bytes round-trip, are
sealed on disk, and a file moved to another store or entry does not open."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from crypto.aead import Sealer
from crypto.keys import init_keys, load_keys
from gateway.errors import SpoolError
from gateway.quarantine import Quarantine
from gateway.queue import NewCopy, QueueStore

BODY = b"Subject: Commande\r\n\r\nPatient DUPONT Jean, NIR 1 84 12 75 108 123 45\r\n" * 3000


def test_queue_and_quarantine_round_trip_and_never_open_each_others_files(
    tmp_path: Path,
) -> None:
    init_keys(tmp_path)
    sealer = Sealer(load_keys(tmp_path))
    queue = QueueStore(tmp_path, sealer)
    quarantine = Quarantine(tmp_path, sealer)
    try:
        copy = NewCopy("s1", "labs", "relay", "a@cabinet.test", ("b@labo.test",), BODY)
        (entry,) = queue.add([copy], time.time())
        held = quarantine.hold(
            spool_id="s1",
            route="labs",
            action="pseudonymise",
            connector="relay",
            mail_from="a@cabinet.test",
            recipients=["b@labo.test"],
            data=BODY,
            reason="held",
            findings={"nir": 1},
        )
        assert bytes(queue.load(entry.id)) == BODY
        assert quarantine.data(held.id) == BODY
        for store in (tmp_path / "queue", tmp_path / "quarantine"):
            for path in store.glob("*.msg"):
                assert b"DUPONT" not in path.read_bytes()

        # A queue file under the quarantine's name for it: refused, by name only.
        shutil.copy(
            tmp_path / "queue" / f"{entry.id}.msg", tmp_path / "quarantine" / f"{held.id}.msg"
        )
        with pytest.raises(SpoolError) as refused:
            quarantine.data(held.id)
        assert "DUPONT" not in str(refused.value) and held.id in str(refused.value)
        # And under another queue entry's name.
        (other,) = queue.add([copy], time.time())
        shutil.copy(tmp_path / "queue" / f"{entry.id}.msg", tmp_path / "queue" / f"{other.id}.msg")
        with pytest.raises(SpoolError):
            queue.load(other.id)
    finally:
        queue.close()
        quarantine.close()
