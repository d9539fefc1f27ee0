"""The seam between the admin console and the service's stores.

The console's pages need a handful of reads (dashboard figures, audit search,
quarantine and queue listings) and a handful of audited actions (release, delete,
retry, re-identify, lockdown). `ConsoleBackend` names exactly those; the console
never touches a store directly. `ServiceBackend` (gateway/admin/service_backend.py)
implements it over the real AuditTrail, Vault, queue and quarantine; the HTTP tests
also use an in-memory implementation at this seam.

Trust boundary: values returned here are rendered into HTML for authenticated staff.
Invariants every implementation keeps:
- Nothing returned by any method except `reidentify` carries patient identity:
  findings are counts per type, patient-identifying addresses are already masked
  (domain + keyed hash, see gateway.events.mask_address), no subjects, no file names.
- Every action (release, delete, retry, reidentify, set_lockdown, record_admin_event)
  writes an audit record naming the acting user *before* it returns; if the audit
  write fails the action raises and the console reports a failure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class ReleaseMode(StrEnum):
    """How an admin releases a held copy (see issue 6)."""

    WITHOUT_HELD_PARTS = "without-held-parts"  # default: drop the parts that caused the hold
    RESCAN = "rescan"  # run the pipeline again (e.g. after a roster or config fix)
    AS_IS = "as-is"  # the original bytes; needs a stated reason, shown findings first


class ActionRefused(Exception):
    """An action the backend will not perform; `reason` is a fixed, PHI-free phrase key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class HourlyCount:
    hour: dt.datetime  # start of the hour, UTC
    route: str
    action: str
    count: int


@dataclass(frozen=True)
class DeliveryErrorView:
    when: dt.datetime
    queue_id: str
    connector: str
    detail: str  # PHI-free (connectors translate foreign errors)


@dataclass(frozen=True)
class ChainStatus:
    ok: bool
    records: int
    detail: str = ""  # e.g. "verified up to record N", or the first bad record


@dataclass(frozen=True)
class DashboardStats:
    messages_per_hour: Sequence[HourlyCount]
    findings_per_type: Mapping[str, int]
    queue_depth: int
    last_delivery_errors: Sequence[DeliveryErrorView]
    audit_chain: ChainStatus
    lockdown: bool
    quarantined: int = 0


@dataclass(frozen=True)
class AuditQuery:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    sender: str = ""
    recipient: str = ""
    route: str = ""
    action: str = ""
    message_id: str = ""
    kind: str = ""
    # One page of results: 50 rows keeps a page readable and the query cheap.
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class AuditRow:
    seq: int
    time: dt.datetime
    kind: str
    actor: str
    fields: Mapping[str, Any]  # PHI-free by construction (gateway/events.py)


@dataclass(frozen=True)
class AuditPage:
    rows: Sequence[AuditRow]
    total: int


@dataclass(frozen=True)
class QuarantineSummary:
    item_id: str
    received: dt.datetime
    sender: str  # masked when it identifies a patient
    recipients: Sequence[str]  # masked when they identify a patient
    route: str
    reason: str  # fixed PHI-free phrase from the pipeline
    findings: Mapping[str, int]  # identifier type -> count


@dataclass(frozen=True)
class HeldPart:
    index: int
    content_type: str
    size: int
    held: bool  # True: dropped by a WITHOUT_HELD_PARTS release
    reason: str = ""  # fixed PHI-free phrase, when the backend knows why


@dataclass(frozen=True)
class QuarantineDetail:
    summary: QuarantineSummary
    parts: Sequence[HeldPart] = field(default_factory=tuple)
    size: int = 0


@dataclass(frozen=True)
class QueueEntry:
    queue_id: str
    route: str
    connector: str
    recipients: Sequence[str]  # masked when they identify a patient
    attempts: int
    queued: dt.datetime
    next_attempt: dt.datetime | None
    last_error: str  # PHI-free


@dataclass(frozen=True)
class Identity:
    """Re-identification result: only ever rendered on the re-identification page."""

    audience: str
    identity: str = field(repr=False)


class ConsoleBackend(Protocol):
    """What the console needs from the running service. All methods are async so an
    implementation may do blocking store I/O in a thread."""

    async def dashboard(self) -> DashboardStats: ...

    async def search_audit(self, query: AuditQuery) -> AuditPage: ...

    async def list_quarantine(self) -> Sequence[QuarantineSummary]: ...

    async def show_quarantine(self, item_id: str) -> QuarantineDetail | None: ...

    async def release_quarantine(
        self, item_id: str, mode: ReleaseMode, *, reason: str, user: str
    ) -> str:
        """Release a held copy; returns a PHI-free outcome phrase. AS_IS requires a
        non-empty reason (raise ActionRefused("reason_required") otherwise)."""
        ...

    async def delete_quarantine(self, item_id: str, *, user: str) -> None: ...

    async def list_queue(self) -> Sequence[QueueEntry]: ...

    async def retry_queue(self, queue_id: str, *, user: str) -> None: ...

    async def reidentify(self, token: str, *, reason: str, user: str) -> Sequence[Identity]: ...

    async def set_lockdown(self, on: bool, *, user: str) -> None: ...

    async def record_admin_event(self, kind: str, fields: Mapping[str, Any], *, user: str) -> None:
        """Audit an event the console itself observes (admin_login, exported)."""
        ...
