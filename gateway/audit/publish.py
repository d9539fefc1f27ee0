"""Checkpoints leave the box: syslog (UDP), an HTTPS endpoint, and a daily e-mail.

Trust boundary: outbound only. What is sent is a signed checkpoint (record number,
record hash, time, signature): no record content, so no patient data can leave here.

Invariants:
- Publishing never blocks or fails an audit append: sends run on one background
  thread, with a bounded queue and a timeout per send; a failure is logged (without
  the endpoint's reply text) and counted, never raised to the writer.
- The e-mail sender is injected by the service (a callable taking an EmailMessage), so
  this module opens no SMTP connection itself and tests can capture the message.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import structlog

from gateway.config import parse_listen
from gateway.errors import ConfigError

# 5 s per send: a syslog datagram or one small POST; a slower endpoint must not pile
# up work behind it, and the next checkpoint carries the newer state anyway.
SEND_TIMEOUT_S = 5.0
# 1000 pending checkpoints: at the default of one checkpoint per 1000 records this is
# a million records of backlog; beyond it the oldest pending sends are dropped (each
# checkpoint covers all records before it, so the newest is the one that matters).
MAX_PENDING = 1000
# RFC 5424 facility 13 (log audit), severity 6 (informational): PRI = 13*8+6.
_SYSLOG_PRI = 13 * 8 + 6

EmailSender = Callable[[EmailMessage], None]


def checkpoint_email(
    checkpoints: Sequence[Mapping[str, Any]], to: str, sender: str, now: datetime
) -> EmailMessage:
    """The daily e-mail: one JSON line per checkpoint, also attached as a file that
    `portique audit verify --against` reads."""
    msg = EmailMessage()
    msg["To"] = to
    msg["From"] = sender
    msg["Subject"] = f"Portique: audit checkpoints {now:%Y-%m-%d}"
    lines = "".join(json.dumps(dict(cp), sort_keys=True) + "\n" for cp in checkpoints)
    msg.set_content(
        "Signed checkpoints of the Portique audit trail. Keep this e-mail: it lets\n"
        "`portique audit verify --against FILE` detect a trail rewritten on the gateway.\n\n"
        + lines
    )
    msg.add_attachment(
        lines.encode("utf-8"),
        maintype="application",
        subtype="x-ndjson",
        filename=f"portique-checkpoints-{now:%Y%m%d}.jsonl",
    )
    return msg


class CheckpointPublisher:
    """Sends each checkpoint to syslog and/or HTTPS on a background thread."""

    def __init__(
        self,
        *,
        syslog: str = "",
        url: str = "",
        hostname: str = "portique",
        post: Callable[[str, Mapping[str, Any]], None] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._syslog = parse_listen(syslog) if syslog else None
        if url and not url.lower().startswith("https://"):
            raise ConfigError("audit.export_url: must be an https:// URL")
        self._url = url
        self._hostname = hostname
        self._verify = verify
        self._post = post or self._https_post
        self._log = structlog.get_logger("portique.audit")
        self._queue: queue.Queue[Mapping[str, Any] | None] = queue.Queue(MAX_PENDING)
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return bool(self._syslog or self._url)

    def publish(self, checkpoint: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="audit-checkpoint-publisher", daemon=True
            )
            self._thread.start()
        try:
            self._queue.put_nowait(checkpoint)
        except queue.Full:
            self._log.warning("audit_checkpoint_backlog_full")
            try:
                self._queue.get_nowait()
                self._queue.put_nowait(checkpoint)
            except (queue.Empty, queue.Full):
                pass

    def close(self, timeout: float = SEND_TIMEOUT_S * 2) -> None:
        """Send what is pending (bounded by `timeout` seconds), then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self.send_now(item)

    def send_now(self, checkpoint: Mapping[str, Any]) -> bool:
        """Send one checkpoint to every configured endpoint; True if all succeeded."""
        ok = True
        if self._syslog:
            try:
                self._send_syslog(checkpoint)
            except OSError as exc:
                ok = False
                self._log.warning("audit_checkpoint_syslog_failed", error=type(exc).__name__)
        if self._url:
            try:
                self._post(self._url, checkpoint)
            except Exception as exc:
                ok = False
                self._log.warning("audit_checkpoint_post_failed", error=type(exc).__name__)
        if ok:
            self.sent += 1
        else:
            self.failures += 1
        return ok

    def _send_syslog(self, checkpoint: Mapping[str, Any]) -> None:
        assert self._syslog is not None
        host, port = self._syslog
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = json.dumps(dict(checkpoint), sort_keys=True, separators=(",", ":"))
        # RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
        line = f"<{_SYSLOG_PRI}>1 {ts} {self._hostname} portique - audit-checkpoint - {body}"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto(line.encode("utf-8"), (host, port))

    def _https_post(self, url: str, checkpoint: Mapping[str, Any]) -> None:
        import httpx

        response = httpx.post(
            url, json=dict(checkpoint), timeout=SEND_TIMEOUT_S, verify=self._verify
        )
        response.raise_for_status()
