"""Outbox connector: each delivered message becomes one `.eml` file in a folder.

The embedded default: `portique serve` with no config delivers here, so a new user
sees results at once. Trust boundary: writes only inside the configured folder.

Invariant: a file appears complete or not at all (written to a hidden temporary
name, fsync'ed, renamed, directory fsync'ed), so a reader never sees half a message.
File name: `<queue id>.eml`; a retried delivery overwrites the same name.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from connectors.base import DeliveryItem, DeliveryResult, Status
from gateway.config import ConnectorConfig


class OutboxConnector:
    # item.data may be a bytearray (read-only use here): see gateway/queue.py.
    accepts_buffer = True

    def __init__(self, cfg: ConnectorConfig) -> None:
        self.name = cfg.name
        self.folder = Path(cfg.path)

    def destination(self, item: DeliveryItem) -> str:
        return f"outbox:{self.folder}"

    def _write(self, item: DeliveryItem) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{item.queue_id}.eml"
        tmp = self.folder / f".{item.queue_id}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(item.data)
            fh.flush()
            os.fdatasync(fh.fileno())
        os.rename(tmp, final)
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def deliver(self, item: DeliveryItem) -> DeliveryResult:
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._write, item)
        except OSError:
            return DeliveryResult.all(
                item.recipients, Status.TEMPFAIL, "outbox folder not writable"
            )
        return DeliveryResult.all(item.recipients, Status.DELIVERED, "written to outbox")

    async def close(self) -> None:
        return None
