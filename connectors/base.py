"""The connector interface: `async deliver(item) -> DeliveryResult`.

Every outbound transport (SMTP relay, MSSanté, lab HTTPS upload, local outbox)
implements `Connector`. Foreign exceptions (OSError, ssl.SSLError, smtplib/aiosmtplib,
httpx) never escape a connector: they become a per-recipient TEMPFAIL or PERMFAIL with
a PHI-free `detail` (the peer's status line is kept only up to its enhanced code).

`FakeConnector` records deliveries in memory; it is the seam for queue tests whose
real side (each real connector against a real peer) has tests of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol


class Status(StrEnum):
    DELIVERED = "delivered"
    TEMPFAIL = "tempfail"
    PERMFAIL = "permfail"


class DeliveryItem(NamedTuple):
    """One delivery attempt's input. A NamedTuple rather than a frozen dataclass: as
    immutable, and built (once per message) without an object.__setattr__ per field."""

    queue_id: str
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    route: str = ""
    attempt: int = 1

    def __repr__(self) -> str:
        # Never the message itself: it holds patient data.
        return (
            f"DeliveryItem(queue_id={self.queue_id!r}, mail_from={self.mail_from!r}, "
            f"recipients={self.recipients!r}, route={self.route!r}, attempt={self.attempt!r})"
        )


@dataclass(frozen=True)
class RecipientResult:
    recipient: str
    status: Status
    detail: str = ""  # e.g. "550 5.1.1 from mx.example", "TLS verification failed"


@dataclass(frozen=True)
class DeliveryResult:
    results: tuple[RecipientResult, ...]

    @classmethod
    def all(cls, recipients: Sequence[str], status: Status, detail: str = "") -> DeliveryResult:
        return cls(tuple(RecipientResult(r, status, detail) for r in recipients))

    def with_status(self, status: Status) -> tuple[RecipientResult, ...]:
        return tuple(r for r in self.results if r.status == status)


class Connector(Protocol):
    name: str

    def destination(self, item: DeliveryItem) -> str:
        """Key for per-destination concurrency and connection reuse (e.g. host:port)."""
        ...

    async def deliver(self, item: DeliveryItem) -> DeliveryResult: ...

    async def close(self) -> None: ...


class FakeConnector:
    """In-memory connector for tests of the queue; answers from a script of statuses."""

    def __init__(self, name: str = "fake", script: Sequence[Status] = ()) -> None:
        self.name = name
        self.script = list(script)
        self.delivered: list[DeliveryItem] = []
        self.attempts = 0

    def destination(self, item: DeliveryItem) -> str:
        return self.name

    async def deliver(self, item: DeliveryItem) -> DeliveryResult:
        self.attempts += 1
        status = self.script.pop(0) if self.script else Status.DELIVERED
        if status == Status.DELIVERED:
            self.delivered.append(item)
        return DeliveryResult.all(item.recipients, status, f"fake {status.value}")

    async def close(self) -> None:
        return None
