"""ConsoleBackend over the running service: AuditTrail, Vault, queue and quarantine.

Trust boundary: the stores hold PHI (held bytes, vault identities); this module is the
only console code that touches them, and it returns PHI only from `reidentify`.

Invariants:
- Every admin action is audited through `service.events` (the AuditTrail must be
  subscribed there as a *required* sink, so a failed audit write raises and the console
  reports a failure). `ServiceBackend.attach` subscribes it if the service has not.
- Re-identification writes its audit record before the identity is returned.
- Addresses that identify a patient (patient.mssante.fr, and recipients on
  own-data-only / reject-if-phi routes) are masked (domain + keyed hash) before they
  leave this module.
- Releases other than "as is" never send the held bytes: the copy goes through the
  pipeline again, and only a PASS or REWRITTEN result for every copy is queued (vault
  entries stored first); anything else leaves the item held (fail closed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.parser
import email.policy
from collections import Counter
from collections.abc import Mapping, Sequence
from email.message import EmailMessage, Message
from typing import TYPE_CHECKING, Any

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
from gateway.events import mask_address
from gateway.logging import get_logger
from gateway.verdicts import Action, Verdict

if TYPE_CHECKING:
    from gateway.audit import AuditTrail
    from gateway.service import Service
    from gateway.vault import Vault

log = get_logger("portique.admin")

PATIENT_DOMAIN = "patient.mssante.fr"
_PATIENT_ACTIONS = frozenset({Action.OWN_DATA_ONLY.value, Action.REJECT_IF_PHI.value})
# Dashboard window: the last 24 hours, from at most the 10,000 newest decisions
# (10 pages of 1,000) so one page load stays cheap on a busy trail; the exact
# counters are in Prometheus (portique_messages_*).
DASHBOARD_WINDOW = dt.timedelta(hours=24)
DASHBOARD_MAX_DECISIONS = 10_000
DASHBOARD_PAGE = 1_000
# Delivery records scanned for the "last errors" panel, and how many errors shown.
ERROR_SCAN = 500
ERRORS_SHOWN = 10


class ServiceBackend:
    def __init__(
        self, service: Service, trail: AuditTrail, vault: Vault | None, digest_key: bytes
    ) -> None:
        self._service = service
        self._trail = trail
        self._vault = vault
        self._key = digest_key

    @classmethod
    def attach(
        cls,
        service: Service,
        trail: AuditTrail,
        vault: Vault | None,
        digest_key: bytes,
        *,
        alert_email: str = "",
    ) -> ServiceBackend:
        """A backend for a started service, making sure `trail` hears its events
        (as a required sink) and, with `alert_email`, that holds are e-mailed there.
        Call from the event loop thread."""
        from gateway.admin.alerts import HoldAlerts

        sinks = getattr(service.events, "_sinks", [])
        if not any(sink is trail for sink, _required in sinks):
            service.events.subscribe(trail, required=True)
        if alert_email:
            service.events.subscribe(HoldAlerts(service, alert_email))
        return cls(service, trail, vault, digest_key)

    # --- reads ------------------------------------------------------------------

    async def dashboard(self) -> DashboardStats:
        return await asyncio.to_thread(self._dashboard)

    def _dashboard(self) -> DashboardStats:
        now = dt.datetime.now(dt.UTC)
        per_hour: Counter[tuple[dt.datetime, str, str]] = Counter()
        findings: Counter[str] = Counter()
        offset = 0
        while offset < DASHBOARD_MAX_DECISIONS:
            records, total = self._trail.search(
                kind="decided", since=now - DASHBOARD_WINDOW, limit=DASHBOARD_PAGE, offset=offset
            )
            for r in records:
                hour = r.ts.replace(minute=0, second=0, microsecond=0)
                per_hour[
                    (hour, str(r.fields.get("route", "")), str(r.fields.get("action", "")))
                ] += 1
                for kind, n in dict(r.fields.get("findings") or {}).items():
                    findings[str(kind)] += int(n)
            offset += len(records)
            if not records or offset >= total:
                break
        deliveries, _ = self._trail.search(kind="delivery", limit=ERROR_SCAN)
        errors = [
            DeliveryErrorView(
                r.ts,
                str(r.fields.get("queue_id", "")),
                str(r.fields.get("connector", "")),
                str(r.fields.get("detail", "")),
            )
            for r in deliveries
            if r.fields.get("status") in ("tempfail", "permfail")
        ][:ERRORS_SHOWN]
        status = self._trail.status()
        detail = (
            f"checkpoint {status.last_checkpoint_seq}"
            if status.ok and status.last_checkpoint_seq
            else ("" if status.ok else status.reason)
        )
        return DashboardStats(
            messages_per_hour=[
                HourlyCount(hour, route, action, n)
                for (hour, route, action), n in sorted(per_hour.items(), reverse=True)
            ],
            findings_per_type=dict(findings),
            queue_depth=len(self._service.queue.list()),
            last_delivery_errors=errors,
            audit_chain=ChainStatus(status.ok, status.records, detail),
            lockdown=self._service.queue.lockdown,
            quarantined=len(self._service.quarantine.list()),
        )

    async def search_audit(self, query: AuditQuery) -> AuditPage:
        records, total = await asyncio.to_thread(
            self._trail.search,
            since=query.since,
            until=query.until,
            sender=query.sender or None,
            recipient=query.recipient or None,
            route=query.route or None,
            action=query.action or None,
            message_id=query.message_id or None,
            kind=query.kind or None,
            limit=query.limit,
            offset=query.offset,
        )
        return AuditPage([AuditRow(r.seq, r.ts, r.kind, r.actor, r.fields) for r in records], total)

    def _mask(self, address: str, action: str = "") -> str:
        if action in _PATIENT_ACTIONS or address.lower().endswith("@" + PATIENT_DOMAIN):
            return mask_address(address, self._key)
        return address

    def _summary(self, item: Any) -> QuarantineSummary:
        return QuarantineSummary(
            item_id=item.id,
            received=dt.datetime.fromtimestamp(item.created, dt.UTC),
            sender=self._mask(item.mail_from),
            recipients=[self._mask(r, item.action) for r in item.recipients],
            route=item.route,
            reason=item.reason,
            findings=dict(item.findings),
        )

    async def list_quarantine(self) -> Sequence[QuarantineSummary]:
        items = await asyncio.to_thread(self._service.quarantine.list)
        return [self._summary(i) for i in items]

    async def show_quarantine(self, item_id: str) -> QuarantineDetail | None:
        item = await asyncio.to_thread(self._service.quarantine.show, item_id)
        if item is None:
            return None
        try:
            raw = await asyncio.to_thread(self._service.quarantine.data, item_id)
            parts = await asyncio.to_thread(describe_parts, raw)
        except Exception as exc:
            # The summary still shows; the admin can release (fail-closed paths) or delete.
            log.warning("held_parts_unreadable", error=type(exc).__name__)
            parts = []
        return QuarantineDetail(self._summary(item), parts, item.size)

    async def list_queue(self) -> Sequence[QueueEntry]:
        entries = await asyncio.to_thread(self._service.queue.list)
        actions = {r.name: r.action for r in self._service.cfg.effective_routes()}
        return [
            QueueEntry(
                queue_id=e.id,
                route=e.route,
                connector=e.connector,
                recipients=[self._mask(r, actions.get(e.route, "")) for r in e.recipients],
                attempts=e.attempts,
                queued=dt.datetime.fromtimestamp(e.created, dt.UTC),
                next_attempt=dt.datetime.fromtimestamp(e.next_attempt, dt.UTC),
                last_error=e.last_error,
            )
            for e in entries
        ]

    # --- actions ------------------------------------------------------------------

    async def release_quarantine(
        self, item_id: str, mode: ReleaseMode, *, reason: str, user: str
    ) -> str:
        service = self._service
        if mode is ReleaseMode.AS_IS:
            if not reason.strip():
                raise ActionRefused("reason_required")
            queue_id = await service.release_held(item_id, user, reason)
            if queue_id is None:
                raise ActionRefused("not_found")
            return queue_id
        item = await asyncio.to_thread(service.quarantine.show, item_id)
        if item is None:
            raise ActionRefused("not_found")
        raw = await asyncio.to_thread(service.quarantine.data, item_id)
        removed = 0
        if mode is ReleaseMode.WITHOUT_HELD_PARTS:
            try:
                raw, removed = without_attachments(raw)
            except Exception as exc:
                log.warning("release_strip_failed", error=type(exc).__name__)
                raise ActionRefused("rescan_failed") from None
        queue_ids = await self._rescan_and_queue(item, raw)
        service.events.emit(
            "released",
            spool_id=item.spool_id,
            copy_id=item_id,
            user=user,
            mode=mode.value,
            reason=reason,
            parts_removed=removed,
            queue_ids=queue_ids,
        )
        await asyncio.to_thread(service.quarantine.delete, item_id)
        return ", ".join(queue_ids)

    async def _rescan_and_queue(self, item: Any, raw: bytes) -> list[str]:
        """Run the pipeline again; queue only if every copy passes or is rewritten."""
        from gateway.pipeline import process_message
        from gateway.queue import NewCopy
        from gateway.routes import plan_copies

        service = self._service
        copies = plan_copies(item.recipients, service.cfg.effective_routes(), service.is_mssante)
        try:
            outcome = await asyncio.wait_for(
                asyncio.to_thread(
                    process_message,
                    raw,
                    copies,
                    service.engine,
                    limits=service.cfg.files,
                    budget_seconds=service.cfg.scan.message_budget,
                ),
                service.cfg.scan.message_budget,
            )
        except Exception as exc:
            log.warning("release_rescan_failed", error=type(exc).__name__)
            raise ActionRefused("rescan_failed") from None
        if not outcome.copies or any(
            co.verdict not in (Verdict.PASS, Verdict.REWRITTEN) or co.data is None
            for co in outcome.copies
        ):
            raise ActionRefused("rescan_failed")
        entries = [co.vault_entries for co in outcome.copies if co.vault_entries]
        if entries and service.vault is None:
            raise ActionRefused("rescan_failed")  # tokens never leave without their mapping
        for batch in entries:
            assert service.vault is not None
            await asyncio.to_thread(service.vault.store, batch)
        message_id = item.message_id
        queued = await service.queue.enqueue(
            [
                NewCopy(
                    spool_id=item.spool_id,
                    route=co.copy.route,
                    connector=co.copy.connector,
                    mail_from=item.mail_from,
                    recipients=co.copy.recipients,
                    data=co.data or b"",
                    message_id=message_id,
                    safe_subject=outcome.safe_subject,
                    created=item.created,
                )
                for co in outcome.copies
            ]
        )
        return [e.id for e in queued]

    async def delete_quarantine(self, item_id: str, *, user: str) -> None:
        ok = await asyncio.to_thread(self._service.delete_held, item_id, user)
        if not ok:
            raise ActionRefused("not_found")

    async def retry_queue(self, queue_id: str, *, user: str) -> None:
        if not self._service.queue.retry(queue_id):
            raise ActionRefused("not_found")
        self._service.events.emit("retried", queue_id=queue_id, user=user)

    async def reidentify(self, token: str, *, reason: str, user: str) -> Sequence[Identity]:
        token = token.strip().upper()
        if self._vault is None:
            raise ActionRefused("unavailable")
        mappings = self._vault.lookup(token)
        # Audited first: if the audit write fails, the identity is never shown.
        self._service.events.emit(
            "reidentified",
            token=token,
            audience=",".join(a for a, _ in mappings),
            found=len(mappings),
            reason=reason,
            user=user,
        )
        return [Identity(audience, identity) for audience, identity in mappings]

    async def set_lockdown(self, on: bool, *, user: str) -> None:
        self._service.queue.set_lockdown(on, user)

    async def record_admin_event(self, kind: str, fields: Mapping[str, Any], *, user: str) -> None:
        self._service.events.emit(kind, **{**fields, "user": user})


def without_attachments(raw: bytes) -> tuple[bytes, int]:
    """The message with every attachment and non-text part removed, and how many.

    The console cannot tell which part made the pipeline hold a copy, so "without the
    held parts" keeps only the readable text of the message; the result is scanned
    again before anything is sent."""
    parser = email.parser.BytesParser(policy=email.policy.SMTP)
    message = parser.parsebytes(raw)
    removed = _strip(message)
    return message.as_bytes(policy=email.policy.SMTP), removed


# Parts listed on the quarantine page: enough for any real message; a 10,000-part
# message (reliability.md) is summarised by its first 200.
MAX_LISTED_PARTS = 200


def describe_parts(raw: bytes) -> list[HeldPart]:
    """Leaf parts of a held message: content type (no parameters, so no file name),
    decoded size, and whether a default release drops it."""
    message = email.parser.BytesParser(policy=email.policy.SMTP).parsebytes(raw)
    out: list[HeldPart] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        if len(out) >= MAX_LISTED_PARTS:
            break
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        out.append(HeldPart(len(out) + 1, part.get_content_type(), size, not _keep(part)))
    return out


def _keep(part: Message) -> bool:
    if part.is_multipart():
        return True
    if isinstance(part, EmailMessage) and part.is_attachment():
        return False
    if part.get_filename():
        return False
    return part.get_content_maintype() == "text"


def _strip(part: Message, depth: int = 0) -> int:
    # 100 levels: the pipeline holds deeper nesting anyway (reliability.md).
    if depth > 100 or not part.is_multipart():
        return 0
    payload = part.get_payload()
    children: list[Message] = [c for c in payload if isinstance(c, Message)]
    kept = [c for c in children if _keep(c)]
    removed = len(children) - len(kept)
    new_payload: list[Message | str] = list(kept)
    part.set_payload(new_payload)
    return removed + sum([_strip(c, depth + 1) for c in kept])


async def start_console(
    service: Service,
    trail: AuditTrail,
    vault: Vault | None,
    digest_key: bytes,
    *,
    users: Any = None,
) -> Any:
    """Start the console for a started service, per `service.cfg.admin`; returns the
    aiohttp AppRunner (stop it with `await runner.cleanup()`), or None when the console
    is disabled. Relative TLS paths resolve like every other config path."""
    import dataclasses

    from gateway.admin.app import start_admin

    cfg = service.cfg
    if not cfg.admin.enabled:
        return None
    admin = cfg.admin
    if admin.tls_cert and admin.tls_key:
        admin = dataclasses.replace(
            admin, tls_cert=str(cfg.path(admin.tls_cert)), tls_key=str(cfg.path(admin.tls_key))
        )
    backend = ServiceBackend.attach(
        service, trail, vault, digest_key, alert_email=admin.alert_email
    )
    return await start_admin(backend, admin, cfg.data_dir, users=users)
