"""Events: what the service tells the audit trail, the metrics and the logs.

The service emits one event per fact (message received, copy decided, delivery
attempted, ...). Sinks (gateway/audit.py, gateway/metrics.py, the log sink here)
subscribe to the same stream, so the three views never disagree.

Invariant: event fields are PHI-free by construction: counts, types, keyed hashes,
route names, connector names, sizes, queue ids, Message-ID, and addresses. Addresses
carry a flag `identifies_patient` set by the service (patient.mssante.fr, and
recipients on own-data-only / reject-if-phi routes); sinks that persist or show
addresses must reduce those to domain + keyed hash (see `mask_address`).

Kinds and their fields (all optional beyond `kind`):
    received      spool_id, client, user, mail_from, recipients, size, message_id
    decided       spool_id, copy_id, route, action, connector, verdict, recipients,
                  findings (dict type->count), digests (list), reason
    queued        spool_id, queue_id, route, connector, recipients
    delivery      queue_id, connector, destination, status (delivered|tempfail|permfail),
                  detail, attempt, recipients, latency_s, bytes
    deferred      queue_id, next_attempt_in_s, detail
    bounced       queue_id | spool_id, reason, recipients
    held          spool_id, copy_id, route, reason, findings
    released      spool_id, copy_id, user, mode, reason
    deleted       spool_id | queue_id, user
    reidentified  token, audience, user, reason
    lockdown      on (bool), user
    admin_login   user, ok (bool), client, reason
    config_reload user
    key_rotation  key, user
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import operator
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog


@dataclass(frozen=True)
class Event:
    kind: str
    fields: Mapping[str, Any] = field(default_factory=dict)


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class EventBus:
    """Fans an event out to every sink. A failing sink is logged, never fatal,
    except the audit sink, which is registered as `required` and re-raises."""

    def __init__(self) -> None:
        self._sinks: list[tuple[EventSink, bool]] = []
        # The sinks that defer their writes, with their `durable` (see `durable()`).
        self._deferring: list[tuple[EventSink, bool, Callable[[], Awaitable[None]]]] = []
        self._log = structlog.get_logger("portique.events")

    def subscribe(self, sink: EventSink, *, required: bool = False) -> None:
        self._sinks.append((sink, required))
        wait = getattr(sink, "durable", None)
        if wait is not None:
            self._deferring.append((sink, required, wait))

    async def durable(self) -> None:
        """Wait until every event emitted so far is durable in each sink that defers
        its writes (a sink with an async `durable()`, the audit trail's group commit).
        Raises what such a required sink raises; a failing optional sink is logged."""
        for sink, required, wait in self._deferring:
            try:
                await wait()
            except Exception:
                if required:
                    raise
                self._log.exception("event_sink_failed", sink=type(sink).__name__, kind="durable")

    def emit(self, kind: str, **fields: Any) -> None:
        event = Event(kind, fields)
        for sink, required in self._sinks:
            try:
                sink.emit(event)
            except Exception:
                if required:
                    raise
                self._log.exception("event_sink_failed", sink=type(sink).__name__, kind=kind)


class LogSink:
    """One JSON log line per event, with patient-identifying addresses masked."""

    def __init__(self, digest_key: bytes) -> None:
        self._key = digest_key
        self._log = structlog.get_logger("portique")
        # (structlog configuration it was built under, bound logger or None when info
        # lines are filtered out): see `_info_logger`.
        self._bound: tuple[tuple[Any, ...], Any] | None = None

    def _info_logger(self) -> Any:
        """The logger for this sink's info lines, or None if that level is filtered out.

        The lazy proxy from `structlog.get_logger` assembles a new logger on every call
        (~20 us, three times a message); this one is rebuilt only when structlog is
        reconfigured (new processors list, wrapper, factory or context class), so a
        change of level or of processors still takes effect at the next event."""
        config = structlog.get_config()
        identity = (
            config["processors"],
            config["wrapper_class"],
            config["logger_factory"],
            config["context_class"],
        )
        bound = self._bound
        if bound is None or not all(map(operator.is_, identity, bound[0])):
            logger = self._log.bind()
            enabled = getattr(logger, "is_enabled_for", None)
            if enabled is not None and not enabled(logging.INFO):
                logger = None
            bound = self._bound = (identity, logger)
        return bound[1]

    def emit(self, event: Event) -> None:
        logger = self._info_logger()
        if logger is None:
            return
        fields = dict(event.fields)
        if fields.get("identifies_patient"):
            for k in ("recipients", "mail_from"):
                if k in fields:
                    fields[k] = mask_addresses(fields[k], self._key)
        logger.info(event.kind, **fields)


def mask_address(address: str, key: bytes) -> str:
    """`local@domain` -> `#<keyed hash of local>@domain`; the same address masks the same way."""
    local, _, domain = address.rpartition("@")
    digest = hmac.new(key, local.lower().encode(), hashlib.sha256).hexdigest()[:16]
    return f"#{digest}@{domain.lower()}"


def mask_addresses(value: str | Iterable[str], key: bytes) -> str | list[str]:
    if isinstance(value, str):
        return mask_address(value, key)
    return [mask_address(a, key) for a in value]
