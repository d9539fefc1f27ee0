"""An in-memory ConsoleBackend: the fake at the console's seam.

The real side of the seam (ServiceBackend over AuditTrail, Vault, queue and
quarantine) has its own tests; this fake lets the HTTP tests exercise the console
alone. It records every audited action in `audit`, as the real backend would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.admin.backend import (
    ActionRefused,
    AuditPage,
    AuditQuery,
    AuditRow,
    ChainStatus,
    DashboardStats,
    DeliveryErrorView,
    HeldPart,
    HourlyCount,
    Identity,
    QuarantineDetail,
    QuarantineSummary,
    QueueEntry,
    ReleaseMode,
)

NOW = dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.UTC)


@dataclass
class FakeBackend:
    audit: list[AuditRow] = field(default_factory=list)
    quarantine: dict[str, QuarantineSummary] = field(default_factory=dict)
    queue: dict[str, QueueEntry] = field(default_factory=dict)
    tokens: dict[str, list[Identity]] = field(default_factory=dict)
    lockdown: bool = False
    released: list[tuple[str, ReleaseMode, str]] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)

    def append(self, kind: str, fields: Mapping[str, Any], actor: str = "service") -> None:
        self.audit.append(AuditRow(len(self.audit) + 1, NOW, kind, actor, dict(fields)))

    def kinds(self) -> list[str]:
        return [r.kind for r in self.audit]

    async def dashboard(self) -> DashboardStats:
        return DashboardStats(
            messages_per_hour=[
                HourlyCount(NOW, "lab", "pseudonymise", 12),
                HourlyCount(NOW, "mssante", "deliver", 30),
            ],
            findings_per_type={"nir": 4, "name": 9},
            queue_depth=len(self.queue),
            last_delivery_errors=[
                DeliveryErrorView(NOW, "q-1", "relay", "451 4.4.1 timeout"),
            ],
            audit_chain=ChainStatus(True, len(self.audit), "verified"),
            lockdown=self.lockdown,
            quarantined=len(self.quarantine),
        )

    async def search_audit(self, query: AuditQuery) -> AuditPage:
        rows = [r for r in self.audit if _matches(r, query)]
        return AuditPage(rows[query.offset : query.offset + query.limit], len(rows))

    async def list_quarantine(self) -> Sequence[QuarantineSummary]:
        return list(self.quarantine.values())

    async def show_quarantine(self, item_id: str) -> QuarantineDetail | None:
        s = self.quarantine.get(item_id)
        if s is None:
            return None
        return QuarantineDetail(s, (HeldPart(1, "text/plain", 120, False),), 120)

    async def release_quarantine(
        self, item_id: str, mode: ReleaseMode, *, reason: str, user: str
    ) -> str:
        if mode is ReleaseMode.AS_IS and not reason:
            raise ActionRefused("reason_required")
        if self.quarantine.pop(item_id, None) is None:
            raise ActionRefused("not_found")
        self.released.append((item_id, mode, reason))
        self.append("released", {"spool_id": item_id, "mode": mode.value, "reason": reason}, user)
        return "queued"

    async def delete_quarantine(self, item_id: str, *, user: str) -> None:
        if self.quarantine.pop(item_id, None) is None:
            raise ActionRefused("not_found")
        self.append("deleted", {"spool_id": item_id}, user)

    async def list_queue(self) -> Sequence[QueueEntry]:
        return list(self.queue.values())

    async def retry_queue(self, queue_id: str, *, user: str) -> None:
        if queue_id not in self.queue:
            raise ActionRefused("not_found")
        self.retried.append(queue_id)
        self.append("retried", {"queue_id": queue_id}, user)

    async def reidentify(self, token: str, *, reason: str, user: str) -> Sequence[Identity]:
        found = self.tokens.get(token, [])
        self.append("reidentified", {"token": token, "reason": reason, "found": len(found)}, user)
        return found

    async def set_lockdown(self, on: bool, *, user: str) -> None:
        self.lockdown = on
        self.append("lockdown", {"on": on}, user)

    async def record_admin_event(self, kind: str, fields: Mapping[str, Any], *, user: str) -> None:
        self.append(kind, fields, user)


def _matches(r: AuditRow, q: AuditQuery) -> bool:
    f = r.fields
    checks = [
        (q.kind, r.kind),
        (q.route, str(f.get("route", ""))),
        (q.action, str(f.get("action", ""))),
        (q.message_id, str(f.get("message_id", ""))),
        (q.sender, str(f.get("mail_from", ""))),
    ]
    if any(want and want != have for want, have in checks):
        return False
    if q.recipient and q.recipient not in f.get("recipients", []):
        return False
    if q.since and r.time < q.since:
        return False
    return not (q.until and r.time >= q.until)


def sample_quarantine(item_id: str = "h-1") -> QuarantineSummary:
    return QuarantineSummary(
        item_id,
        NOW,
        "secretariat@cabinet.example",
        ["#3f2a9c1b0d4e5f60@patient.mssante.fr"],
        "patients",
        "identifiers found on a reject-if-phi route",
        {"nir": 1, "name": 2},
    )


def sample_queue_entry(queue_id: str = "q-1") -> QueueEntry:
    return QueueEntry(
        queue_id, "lab", "relay", ["commandes@labo.example"], 3, NOW, NOW, "451 4.4.1 timeout"
    )
