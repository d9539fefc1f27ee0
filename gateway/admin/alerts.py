"""E-mail alert to the practice's admin address when a copy is held (admin.alert_email).

An EventSink on the service's event bus: each `held` event queues one short notice,
from the null sender (so it is never bounced back), through the connector that
serves the alert address.

Trust boundary: the event fields are PHI-free by construction (gateway/events.py);
the alert carries only the held item's id, route, fixed reason phrase, finding counts
per type and the time. No subject, no addresses of the original message, no content.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
from collections.abc import Mapping
from email.message import EmailMessage
from email.policy import SMTP
from typing import TYPE_CHECKING, Any

from gateway.events import Event
from gateway.logging import get_logger

if TYPE_CHECKING:
    from gateway.service import Service

log = get_logger("portique.admin")


def build_hold_alert(
    *, hostname: str, to: str, fields: Mapping[str, Any], now: dt.datetime | None = None
) -> bytes:
    """The alert message (CRLF, RFC 5322) for one `held` event."""
    when = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    findings = fields.get("findings") or {}
    counts = (
        "\n".join(f"  - {kind} : {int(n)}" for kind, n in sorted(dict(findings).items()))
        or "  (aucun / none)"
    )
    held_id = str(fields.get("held_id", ""))
    route = str(fields.get("route", ""))
    reason = str(fields.get("reason", ""))
    msg = EmailMessage()
    msg["From"] = f"Portique <postmaster@{hostname}>"
    msg["To"] = to
    msg["Subject"] = "[Portique] Message retenu en quarantaine / message held"
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid("alert", domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    msg.set_content(
        "Un message a été retenu en quarantaine et attend une décision dans la console "
        "d'administration (page Quarantaine).\n\n"
        f"  Identifiant : {held_id}\n  Route : {route}\n  Motif : {reason}\n  Date : {when}\n"
        f"  Détections :\n{counts}\n\n"
        "A message is held in quarantine and waits for a decision in the admin console "
        "(Quarantine page).\n\n"
        f"  Id: {held_id}\n  Route: {route}\n  Reason: {reason}\n  When: {when}\n",
        charset="utf-8",
    )
    return msg.as_bytes(policy=SMTP)


class HoldAlerts:
    """EventSink: queue an alert for every `held` event. Must be subscribed from the
    event loop thread (events are emitted there by the service)."""

    def __init__(self, service: Service, alert_email: str) -> None:
        self._service = service
        self._to = alert_email
        self._tasks: set[asyncio.Task[Any]] = set()

    def emit(self, event: Event) -> None:
        if event.kind != "held" or not self._to:
            return
        from gateway.queue import KIND_NOTICE, NewCopy

        service = self._service
        data = build_hold_alert(
            hostname=service.cfg.smtp.hostname, to=self._to, fields=event.fields
        )
        copy = NewCopy(
            spool_id=str(event.fields.get("spool_id", "")),
            route="notice",
            connector=service.notice_connector(self._to),
            mail_from="",
            recipients=(self._to,),
            data=data,
            kind=KIND_NOTICE,
        )
        task = asyncio.get_running_loop().create_task(service.queue.enqueue([copy]))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The hold itself is durable; only the alert is lost. Type only, no content.
            log.error("hold_alert_failed", error=type(task.exception()).__name__)
