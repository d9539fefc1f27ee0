"""Prometheus metrics (`portique_*`), fed by events and by the service's setters,
plus the HTTP endpoints /metrics, /healthz and /readyz.

Trust boundary: /metrics is read by a scraper on the practice network (default
listen 127.0.0.1:9125). Label values come from events, which the service builds.

Invariants:
- No patient data in any metric: labels are only route names, actions, verdicts,
  connector names, finding types, directions and outcomes. Every label value goes
  through `_label`, which keeps a short identifier-shaped token and turns anything
  else (an address, free text, an over-long value) into "other", so a bug upstream
  cannot leak an identifier into a label or blow up cardinality. Labelled children
  are made once per label set and kept (`_child`, issue 7: `.labels()` costs ~5 us).
- Event handling never raises into the event bus: unknown kinds are ignored and
  malformed numeric fields are skipped.
- Counter increments and histogram observations wait in memory (`_inc`, `_observe`)
  until `flush()`: in multiprocess mode each prometheus_client update checks the pid
  and locks and writes a memory-mapped file (22 getpid calls per relayed message,
  ~2 % of the event loop, issue 7). Nothing reads a stale value: this process's
  registry flushes before it is collected (`_FlushFirst`, registered before any
  family), `exposition()` with worker processes flushes before it reads their files,
  and the runtime flushes every FLUSH_INTERVAL, so another worker's counts reach
  /metrics within that time.
- /readyz answers 200 only when every readiness check is true; otherwise 503 with
  the names of the failing checks (never their error text).
- Worker processes (gateway/workers.py): with PROMETHEUS_MULTIPROC_DIR set (the
  supervisor sets it for its workers), prometheus_client keeps every value in a file
  per process and /metrics (worker 0) reports the sum of the counters and histograms
  over all workers, dead ones included, and the highest reading of each gauge over
  the live ones (`livemax`: only worker 0 sets the queue, lockdown, certificate and
  audit-chain gauges; the others leave them at 0).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from gateway.events import Event
from gateway.smtp import CommitPastBudget

# The environment variable that puts prometheus_client in multiprocess mode; read by
# prometheus_client itself when it is first imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Gauges across worker processes: the highest value among live workers (see above).
GAUGE_MODE: Final = "livemax"


# Seconds between flushes of the waiting increments (gateway/runtime.py calls `flush`).
FLUSH_INTERVAL = 1.0


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process writes its values to, if any."""
    return os.environ.get(MULTIPROC_ENV) or None


# A label value is a short token: route, connector and finding-type names are config
# identifiers (letters, digits, "_", "-", "."); 64 characters is far beyond any of them.
_LABEL = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Raw kinds remembered by Metrics._kind_child before its memo starts afresh.
_MAX_KIND_CHILDREN = 1024
# queue_id -> (route, action) remembered from "queued"/"decided" events so that delivery
# outcomes can carry the route. 100,000 entries (~20 MB at most) covers the queue of a
# large practice for days; older entries are forgotten first (their deliveries are
# then labelled route="unknown").
_MAX_REMEMBERED_COPIES = 100_000

# Scan duration: most messages take milliseconds; large DICOM/STL attachments seconds;
# the scan budget ends the tail.
SCAN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# End-to-end latency, accept -> delivered: seconds when all is well, hours when a
# destination defers (retries over up to 5 days).
LATENCY_BUCKETS = (
    0.1,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    14400.0,
    86400.0,
)


# Texts `_label` has kept as they are: the same route, action, verdict, connector and
# status names recur in every message, and each check is a regex match. Only texts that
# are label tokens are remembered (never one that reads "other"); it starts afresh when full.
_MAX_KNOWN_TOKENS = 1024
_known_tokens: set[str] = set()


def _label(value: Any, default: str = "none") -> str:
    if type(value) is str and value in _known_tokens:
        return value
    if value is None or value == "":
        return default
    if type(value) is str:
        text = value  # the common case, and what the general one gives for it
    elif isinstance(value, bool):
        return "true" if value else "false"
    else:
        text = str(getattr(value, "value", value))
    if "@" in text or not _LABEL.match(text):
        return "other"
    if type(value) is str:
        if len(_known_tokens) >= _MAX_KNOWN_TOKENS:
            _known_tokens.clear()
        _known_tokens.add(value)
    return text


def _number(value: Any) -> float | None:
    if type(value) is int or type(value) is float:  # the common case, as below
        return float(value) if value >= 0 else None  # (NaN >= 0 is false)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value < 0:  # NaN or negative
        return None
    return float(value)


def _count(value: Any) -> int:
    if type(value) is list:
        return len(value)  # the common case, as below
    if isinstance(value, str):
        return 1
    if isinstance(value, Iterable):
        return sum(1 for _ in value)
    return 0


class _FlushFirst:
    """A collector with no metric of its own: collecting it flushes the waiting
    updates. Registered before every family, so the registry collects it first."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        self._metrics.flush()
        return []


class Metrics:
    """Every portique_* family. An EventSink; the service also calls the setters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Updates waiting for `flush` (see the module docstring); events come from the
        # event loop and from worker threads (the console).
        self._pending_lock = threading.Lock()
        self._pending_incs: dict[Any, float] = {}
        self._pending_observations: list[tuple[Any, float]] = []
        r.register(_FlushFirst(self))
        self.messages_received = Counter(
            "portique_messages_received",
            "Messages accepted (250) from practice software",
            ["authenticated"],
            registry=r,
        )
        self.recipients_received = Counter(
            "portique_recipients_received",
            "Envelope recipients of accepted messages",
            registry=r,
        )
        self.messages_processed = Counter(
            "portique_messages_processed",
            "Route copies decided by the pipeline, by route, action and outcome (verdict)",
            ["route", "action", "outcome"],
            registry=r,
        )
        self.messages_delivered = Counter(
            "portique_messages_delivered",
            "Route copies whose delivery finished, by route, action and outcome"
            " (delivered, permfail, bounced)",
            ["route", "action", "outcome"],
            registry=r,
        )
        self.messages_held = Counter(
            "portique_messages_held",
            "Route copies held in quarantine, by route",
            ["route"],
            registry=r,
        )
        self.messages_released = Counter(
            "portique_messages_released",
            "Held copies released by an admin, by release mode",
            ["mode"],
            registry=r,
        )
        self.bounces = Counter(
            "portique_bounces", "Delivery status notifications sent to senders", registry=r
        )
        self.findings = Counter(
            "portique_findings",
            "Patient identifiers found, by type",
            ["type"],
            registry=r,
        )
        self.scan_duration = Histogram(
            "portique_scan_duration_seconds",
            "Pipeline time per message (parse, extract, detect, transform)",
            buckets=SCAN_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "portique_end_to_end_latency_seconds",
            "Time from acceptance (250) to successful delivery of a copy",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "portique_queue_depth",
            "Route copies waiting for delivery",
            registry=r,
            multiprocess_mode=GAUGE_MODE,
        )
        self.oldest_age = Gauge(
            "portique_queue_oldest_age_seconds",
            "Age of the oldest copy waiting for delivery",
            registry=r,
            multiprocess_mode=GAUGE_MODE,
        )
        self.delivery_attempts = Counter(
            "portique_delivery_attempts",
            "Delivery attempts, by connector",
            ["connector"],
            registry=r,
        )
        self.delivery_failures = Counter(
            "portique_delivery_failures",
            "Failed delivery attempts, by connector and kind (tempfail, permfail)",
            ["connector", "kind"],
            registry=r,
        )
        self.tls_failures = Counter(
            "portique_tls_handshake_failures",
            "TLS handshakes that failed, by direction (inbound, outbound) and connector",
            ["direction", "connector"],
            registry=r,
        )
        self.commits_past_budget = Counter(
            "portique_smtp_commits_past_budget",
            "DATA commits not yet durable when the DATA reply budget ran out, by outcome:"
            " withdrawn (451, nothing spooled), accepted (250 after the sync pass),"
            " tempfail (451, the sync pass failed), client_gone (the session ended"
            " during the pass; the entry is dropped)",
            ["outcome"],
            registry=r,
        )
        self.bytes_in = Counter(
            "portique_bytes_received", "Message bytes accepted from practice software", registry=r
        )
        self.bytes_out = Counter(
            "portique_bytes_sent",
            "Message bytes delivered, by connector",
            ["connector"],
            registry=r,
        )
        self.audit_chain_ok = Gauge(
            "portique_audit_chain_ok",
            "1 when the audit trail verifies and is writable, 0 otherwise",
            registry=r,
            multiprocess_mode=GAUGE_MODE,
        )
        self.lockdown = Gauge(
            "portique_lockdown",
            "1 while the incident switch stops all outbound delivery",
            registry=r,
            multiprocess_mode=GAUGE_MODE,
        )
        self.client_cert_expiry = Gauge(
            "portique_client_cert_expiry_timestamp_seconds",
            "Expiry (Unix time) of each connector's client certificate",
            ["connector"],
            registry=r,
            multiprocess_mode=GAUGE_MODE,
        )
        self.admin_logins = Counter(
            "portique_admin_logins",
            "Admin console login attempts, by outcome (success, failure)",
            ["outcome"],
            registry=r,
        )
        self.reidentifications = Counter(
            "portique_reidentifications",
            "Token -> patient look-ups made by an admin (each one is audited)",
            registry=r,
        )
        self.events = Counter(
            "portique_events", "Events seen by the metrics sink, by kind", ["kind"], registry=r
        )
        # An unknown chain state reads as "not ok" until the service reports one.
        self.audit_chain_ok.set(0)
        self._audit_check: Callable[[], bool] | None = None
        # Events may come from the event loop and from worker threads (the console).
        self._copies_lock = threading.Lock()
        self._copies: OrderedDict[str, tuple[str, str]] = OrderedDict()
        # Labelled children by (family, label values), as `family.labels(...)` returns
        # them: that call validates and locks each time (~5 us), a look-up here does
        # not. The values are `_label` outputs, so this holds exactly the children
        # prometheus_client itself keeps (no family here is ever cleared).
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        # The same for the two families labelled by one raw value per event (event kind,
        # finding kind), by that raw value: no `_label` call either. Bounded (cleared when
        # full), though both hold a handful of internal names.
        self._kind_children: dict[tuple[Any, Any], Any] = {}
        # Every outcome's series exists from the start, at 0: Prometheus' increase() and
        # rate() miss a series' first increment when the series appears with it.
        for outcome in CommitPastBudget:
            self._child(self.commits_past_budget, _label(outcome))

    # -- setters the service calls ------------------------------------------------

    def set_queue_depth(self, n: int) -> None:
        self.queue_depth.set(max(0, n))

    def set_oldest_age(self, seconds: float) -> None:
        self.oldest_age.set(max(0.0, seconds))

    def observe_scan_duration(self, seconds: float) -> None:
        self._observe(self.scan_duration, max(0.0, seconds))

    def observe_latency(self, seconds: float) -> None:
        self._observe(self.latency, max(0.0, seconds))

    def set_lockdown(self, on: bool) -> None:
        self.lockdown.set(1 if on else 0)

    def set_audit_chain_ok(self, ok: bool) -> None:
        self.audit_chain_ok.set(1 if ok else 0)

    def watch_audit_chain(self, check: Callable[[], bool]) -> None:
        """Read the audit-chain state at each scrape instead of being told: `check` is
        typically `lambda: (s := trail.status()).ok and s.writable` (cheap: it checks
        only records added since the previous call). A check that raises reads as 0."""

        self._audit_check = check
        if multiprocess_dir() is None:
            self.audit_chain_ok.set_function(self._read_audit_chain)

    def _read_audit_chain(self) -> float:
        check = self._audit_check
        try:
            return 1.0 if check is not None and check() else 0.0
        except Exception:
            return 0.0

    def exposition(self) -> bytes:
        """The /metrics body: this process's registry, or with worker processes the
        values of every worker (a function gauge has no file: set it first)."""
        path = multiprocess_dir()
        if path is None:
            return bytes(generate_latest(self.registry))  # flushes first (_FlushFirst)
        self.flush()  # the merged registry reads the files: this process's updates first
        from prometheus_client import multiprocess

        if self._audit_check is not None:
            self.audit_chain_ok.set(self._read_audit_chain())
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(merged))

    def set_client_cert_expiry(self, connector: str, unix_ts: float) -> None:
        self._child(self.client_cert_expiry, _label(connector)).set(unix_ts)

    def tls_handshake_failure(self, direction: str, connector: str) -> None:
        self._inc(self._child(self.tls_failures, _label(direction), _label(connector)))

    def commit_past_budget(self, outcome: CommitPastBudget) -> None:
        """A DATA commit ran past the reply budget (gateway/smtp.py), and this became of it."""
        self._inc(self._child(self.commits_past_budget, _label(outcome)))

    def flush(self) -> None:
        """Apply the waiting increments and observations to prometheus_client."""
        with self._pending_lock:
            incs, self._pending_incs = self._pending_incs, {}
            observations, self._pending_observations = self._pending_observations, []
        for counter, amount in incs.items():
            counter.inc(amount)
        for histogram, value in observations:
            histogram.observe(value)

    def _inc(self, counter: Any, amount: float = 1.0) -> None:
        with self._pending_lock:
            pending = self._pending_incs
            pending[counter] = pending.get(counter, 0.0) + amount

    def _inc_all(self, increments: Iterable[tuple[Any, float]]) -> None:
        """`_inc` of each (counter, amount), under one acquisition of the lock."""
        with self._pending_lock:
            pending = self._pending_incs
            for counter, amount in increments:
                pending[counter] = pending.get(counter, 0.0) + amount

    def _observe(self, histogram: Any, value: float) -> None:
        with self._pending_lock:
            self._pending_observations.append((histogram, value))

    def _child(self, family: Any, *values: str) -> Any:
        """`family.labels(*values)` (values in the family's label order), remembered."""
        key = (family, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*values)
        return child

    def _kind_child(self, family: Any, kind: Any) -> Any:
        """`self._child(family, _label(kind, "unknown"))`, remembered by `kind` itself
        (an event's kind, or a key of its findings map: hashable either way)."""
        key = (family, kind)
        child = self._kind_children.get(key)
        if child is None:
            if len(self._kind_children) >= _MAX_KIND_CHILDREN:
                self._kind_children.clear()
            child = self._kind_children[key] = self._child(family, _label(kind, "unknown"))
        return child

    # -- event sink ------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Count the event by kind, plus what its kind's handler counts: all of them
        under one acquisition of the lock (`_inc_all`)."""
        counted = (self._kind_child(self.events, event.kind), 1.0)
        handler = _HANDLERS.get(event.kind)
        if handler is None:
            self._inc_all((counted,))
        else:
            self._inc_all((counted, *handler(self, event.fields)))

    def _remember(self, queue_ids: Iterable[Any], route: str, action: str) -> None:
        """Remember the labels (already `_label`led) of the copies `queue_ids` (empty
        ones skipped), under one acquisition of the lock."""
        with self._copies_lock:
            for queue_id in queue_ids:
                if not queue_id:
                    continue
                key = str(queue_id)
                self._copies[key] = (route, action)
                self._copies.move_to_end(key)
            while len(self._copies) > _MAX_REMEMBERED_COPIES:
                self._copies.popitem(last=False)

    def _route_of(self, fields: Mapping[str, Any]) -> tuple[str, str]:
        remembered = self._copies.get(str(fields.get("queue_id", "")))
        if remembered is None and fields.get("spool_id") and fields.get("route"):
            # A fast-path copy has no queue entry of its own: its decision names it.
            route = _label(fields["route"], "unknown")
            remembered = self._copies.get(f"{fields['spool_id']}/{route}")
        route = _label(fields.get("route"), remembered[0] if remembered else "unknown")
        action = _label(fields.get("action"), remembered[1] if remembered else "unknown")
        return route, action

    # Each handler returns the (counter, amount) increments its event makes; `emit`
    # applies them together.

    def _on_received(self, f: Mapping[str, Any]) -> list[tuple[Any, float]]:
        increments = [
            (self._child(self.messages_received, _label(bool(f.get("user")))), 1.0),
            (self.recipients_received, _count(f.get("recipients", ()))),
        ]
        size = _number(f.get("size"))
        if size is not None:
            increments.append((self.bytes_in, size))
        return increments

    def _on_decided(self, f: Mapping[str, Any]) -> list[tuple[Any, float]]:
        route = _label(f.get("route"), "unknown")
        action = _label(f.get("action"), "unknown")
        outcome = _label(f.get("verdict"), "unknown")
        increments = [(self._child(self.messages_processed, route, action, outcome), 1.0)]
        # "queued" names the spool message and route but not the action: link them.
        spool_copy = f"{f['spool_id']}/{route}" if f.get("spool_id") else None
        self._remember((f.get("copy_id"), f.get("queue_id"), spool_copy), route, action)
        findings = f.get("findings")
        if type(findings) is dict or isinstance(findings, Mapping):
            for kind, n in findings.items():
                count = _number(n)
                if count:
                    increments.append((self._kind_child(self.findings, kind), count))
        return increments

    def _on_queued(self, f: Mapping[str, Any]) -> list[tuple[Any, float]]:
        route = _label(f.get("route"), "unknown")
        decided = self._copies.get(f"{f.get('spool_id')}/{route}")
        action = _label(f.get("action") or (decided[1] if decided else None), "unknown")
        self._remember((f.get("queue_id"),), route, action)
        return []

    def _on_delivery(self, f: Mapping[str, Any]) -> list[tuple[Any, float]]:
        connector = _label(f.get("connector"), "unknown")
        status = _label(f.get("status"), "unknown")
        increments = [(self._child(self.delivery_attempts, connector), 1.0)]
        route, action = self._route_of(f)
        if status == "delivered":
            increments.append(
                (self._child(self.messages_delivered, route, action, "delivered"), 1.0)
            )
            sent = _number(f.get("bytes"))
            if sent is not None:
                increments.append((self._child(self.bytes_out, connector), sent))
            with self._copies_lock:
                self._copies.pop(str(f.get("queue_id", "")), None)
        else:
            increments.append((self._child(self.delivery_failures, connector, status), 1.0))
            if status == "permfail":
                increments.append(
                    (self._child(self.messages_delivered, route, action, "permfail"), 1.0)
                )
        return increments

    def _on_bounced(self, f: Mapping[str, Any]) -> list[tuple[Any, float]]:
        increments = [(self.bounces, 1.0)]
        if f.get("queue_id"):
            route, action = self._route_of(f)
            increments.append((self._child(self.messages_delivered, route, action, "bounced"), 1.0))
        return increments

    def _on_held(self, f: Mapping[str, Any]) -> list[tuple[Any, float]]:
        return [(self._child(self.messages_held, _label(f.get("route"), "unknown")), 1.0)]

    def _on_released(self, f: Mapping[str, Any]) -> list[tuple[Any, float]]:
        return [(self._child(self.messages_released, _label(f.get("mode"), "unknown")), 1.0)]

    def _on_lockdown(self, f: Mapping[str, Any]) -> list[tuple[Any, float]]:
        self.set_lockdown(bool(f.get("on")))
        return []

    def _on_admin_login(self, f: Mapping[str, Any]) -> list[tuple[Any, float]]:
        return [(self._child(self.admin_logins, "success" if f.get("ok") else "failure"), 1.0)]

    def _on_reidentified(self, _f: Mapping[str, Any]) -> list[tuple[Any, float]]:
        return [(self.reidentifications, 1.0)]


_HANDLERS: dict[str, Callable[[Metrics, Mapping[str, Any]], list[tuple[Any, float]]]] = {
    "received": Metrics._on_received,
    "decided": Metrics._on_decided,
    "queued": Metrics._on_queued,
    "delivery": Metrics._on_delivery,
    "bounced": Metrics._on_bounced,
    "held": Metrics._on_held,
    "released": Metrics._on_released,
    "lockdown": Metrics._on_lockdown,
    "admin_login": Metrics._on_admin_login,
    "reidentified": Metrics._on_reidentified,
}


def build_metrics_app(
    metrics: Metrics, readiness: Callable[[], dict[str, bool]]
) -> web.Application:
    """The aiohttp application serving /metrics, /healthz and /readyz."""

    async def get_metrics(_request: web.Request) -> web.Response:
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def get_readyz(_request: web.Request) -> web.Response:
        try:
            checks = {str(k): bool(v) for k, v in readiness().items()}
        except Exception:
            checks = {"readiness_check": False}
        failing = sorted(k for k, ok in checks.items() if not ok)
        status = 503 if failing or not checks else 200
        body = {"ready": status == 200, "checks": checks, "failing": failing}
        return web.Response(
            status=status, text=json.dumps(body, sort_keys=True), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    return app


async def start_metrics_server(
    metrics: Metrics, listen: str, readiness: Callable[[], dict[str, bool]]
) -> web.AppRunner:
    """Serve the metrics app on `listen` ("host:port"; port 0 picks a free one, see
    `runner.addresses`). The caller stops it with `await runner.cleanup()`."""
    from gateway.config import parse_listen

    host, port = parse_listen(listen)
    runner = web.AppRunner(build_metrics_app(metrics, readiness), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
