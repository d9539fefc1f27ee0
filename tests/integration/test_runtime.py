"""The runtime in-process: what `portique serve` assembles, probed where a subprocess
cannot reach (checkpoint e-mail, gauges, readiness), with real sockets and real files."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.runtime import Runtime
from tests.conftest import TestPKI as PKI
from tests.relay._helpers import HeldSyncPass, Sink, message, send_sync, wait_until

pytestmark = pytest.mark.timeout(60)

TRUST_LIST = Path(__file__).parent.parent / "data" / "mssante" / "listeblanchemssante-sample.xml"
AUDIT_MAILBOX = "audit@cabinet-du-parc.fr"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runtime_config(
    tmp: Path, relay_port: int, pki: PKI | None = None, *, smtp: dict[str, Any] | None = None
) -> Any:
    connectors: dict[str, Any] = {
        "relay": {"host": "127.0.0.1", "port": relay_port, "tls": "none"},
    }
    routes: list[dict[str, Any]] = [
        {"name": "all", "match": ["*"], "action": "deliver", "connector": "relay"}
    ]
    if pki is not None:
        connectors["mssante"] = {
            "host": "127.0.0.1",
            "port": _closed_port(),
            "client_cert": str(pki.client_cert),
            "client_key": str(pki.client_key),
            "ca_file": str(pki.ca_file),
            "trust_list": str(TRUST_LIST),
            "nil": "Portique test",
        }
        routes.insert(
            0,
            {"name": "mssante", "match": ["@mssante"], "action": "deliver", "connector": "mssante"},
        )
    return parse_config(
        {
            "data_dir": str(tmp / "data"),
            "smtp": {"listen": "127.0.0.1:0", "hostname": "portique.test", **(smtp or {})},
            "queue": {"retry_initial": 30.0, "poll_interval": 0.1},
            "connectors": connectors,
            "routes": routes,
            "audit": {"export_email": AUDIT_MAILBOX},
            "admin": {"enabled": False},
            "metrics": {"listen": "127.0.0.1:0"},
        }
    )


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = await Sink().start()
    yield s
    await s.stop()


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_checkpoint_email_is_queued_through_the_service(tmp_path: Path, sink: Sink) -> None:
    runtime = Runtime(runtime_config(tmp_path, sink.port))
    await runtime.start()
    try:
        trail = runtime.trail
        assert trail is not None
        # The first checkpoint ever is e-mailed at once, from inside the trail (its
        # lock held): the sender must queue it without waiting on the event loop.
        await asyncio.to_thread(trail.append, "test_event", {"note": "checkpoint me"})
        await asyncio.to_thread(trail.checkpoint)
        [first] = await sink.wait_for(1, within=20)
        assert first.recipients == [AUDIT_MAILBOX]
        assert first.mail_from in ("", "<>")  # never bounced back to anyone
        msg = email.message_from_bytes(first.data, policy=email.policy.default)
        assert AUDIT_MAILBOX in str(msg["To"])
        assert b"signature" in first.data.lower()

        # Later ones wait for the daily e-mail, unless forced (here from a thread, as
        # the runtime's audit duties do).
        trail.append("test_event", {"note": "appended on the loop"})
        await asyncio.to_thread(trail.checkpoint)
        await asyncio.sleep(0.3)
        assert len(sink.messages) == 1
        assert await asyncio.to_thread(trail.send_checkpoint_email, force=True)
        await sink.wait_for(2, within=20)
        assert sink.messages[1].recipients == [AUDIT_MAILBOX]
    finally:
        await runtime.stop()
    # Closed in order: the trail's closing checkpoint is written and it verifies.
    from crypto.keys import load_keys
    from gateway.audit import AuditTrail

    cfg = runtime.cfg
    with AuditTrail.open_readonly(cfg.data_dir, load_keys(cfg.data_dir), cfg.audit) as trail:
        assert trail.verify().ok


async def test_gauges_and_readiness(tmp_path: Path, pki: PKI) -> None:
    # Relay to a closed port: the copy stays queued, so the depth gauge must show it.
    runtime = Runtime(runtime_config(tmp_path, _closed_port(), pki))
    await runtime.start()
    try:
        assert runtime.service is not None
        base = f"http://{runtime.metrics_address}"
        status, body = await asyncio.to_thread(http_get, base + "/readyz")
        assert status == 200, body

        await asyncio.to_thread(send_sync, runtime.service.smtp_port, message())
        await wait_until(lambda: len(runtime.service.store.all()) == 1)  # type: ignore[union-attr]
        await runtime.refresh_gauges()
        status, text = await asyncio.to_thread(http_get, base + "/metrics")
        assert status == 200
        assert metric_value(text, "portique_queue_depth") == 1
        expiry = metric_value(text, "portique_client_cert_expiry_timestamp_seconds")
        assert expiry == pki.client.cert.not_valid_after_utc.timestamp()
        assert metric_value(text, "portique_audit_chain_ok") == 1

        # An audit trail that cannot be written makes the gateway not ready.
        assert runtime.trail is not None
        await asyncio.to_thread(runtime.trail.close)
        status, body = await asyncio.to_thread(http_get, base + "/readyz")
        assert status == 503
        assert json.loads(body)["failing"] == ["audit_writable"]
    finally:
        await runtime.stop()


async def test_a_commit_past_the_reply_budget_shows_in_metrics(
    tmp_path: Path, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime feeds the metrics what the SMTP layer reports of commits past the
    DATA reply budget: a commit within it counts nothing, one whose budget runs out in
    its sync pass counts as accepted once the pass makes it durable."""
    runtime = Runtime(runtime_config(tmp_path, sink.port, smtp={"data_reply_budget": 0.3}))
    await runtime.start()
    try:
        service = runtime.service
        assert service is not None and service.smtp is not None
        gate = service.smtp.gate
        url = f"http://{runtime.metrics_address}/metrics"

        async def past_budget() -> dict[str, float]:
            _, text = await asyncio.to_thread(http_get, url)
            prefix = "portique_smtp_commits_past_budget_total{"
            return {
                line[len(prefix) :].split('"')[1]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith(prefix)
            }

        nothing = {"withdrawn": 0.0, "accepted": 0.0, "tempfail": 0.0, "client_gone": 0.0}
        assert await asyncio.to_thread(send_sync, service.smtp_port, message()) == {}
        assert await past_budget() == nothing
        sync_pass = HeldSyncPass(service.spool, monkeypatch)
        sync_pass.hold()
        sending = asyncio.create_task(asyncio.to_thread(send_sync, service.smtp_port, message()))
        await wait_until(lambda: sync_pass.started == 1)
        await wait_until(lambda: gate.commit_deadlines.running == 0)  # its budget ran out
        sync_pass.release()
        assert await sending == {}  # 250
        assert await past_budget() == {**nothing, "accepted": 1.0}
    finally:
        await runtime.stop()


async def test_rostered_patient_address_is_masked_in_every_event(
    tmp_path: Path, sink: Sink, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rostered patient's own e-mail, on a route that does not say "patient" (here a
    plain deliver route), is still masked in every event: logs and audit records."""
    from structlog.testing import capture_logs

    from crypto.keys import init_keys, load_keys
    from gateway.roster import import_roster

    patient_email = "lucie.berthier@free.fr"
    cfg = runtime_config(tmp_path, sink.port)
    init_keys(cfg.data_dir)
    csv_path = tmp_path / "roster.csv"
    csv_path.write_text(
        f"nom;prenom;date_naissance;email\nBERTHIER;Lucie;03/04/1990;{patient_email}\n"
    )
    import_roster(cfg.data_dir, load_keys(cfg.data_dir), csv_path)
    runtime = Runtime(cfg)
    with capture_logs() as logs:
        await runtime.start()
        try:
            assert runtime.service is not None
            await asyncio.to_thread(
                send_sync, runtime.service.smtp_port, message(), rcpts=(patient_email,)
            )
            await sink.wait_for(1, within=20)
            await wait_until(lambda: any(e["event"] == "delivery" for e in logs))
        finally:
            await runtime.stop()
    assert sink.messages[0].recipients == [patient_email]  # delivered as routed
    # The service timed the pipeline and the delivery reported its age: both histograms
    # have one observation (fed by the runtime, not by the events' counters).
    registry = runtime.metrics.registry
    assert registry.get_sample_value("portique_scan_duration_seconds_count") == 1
    assert registry.get_sample_value("portique_end_to_end_latency_seconds_count") == 1
    kinds = {e["event"] for e in logs}
    assert {"received", "decided", "delivery"} <= kinds
    assert patient_email not in repr(logs)
    assert patient_email not in capsys.readouterr().out
    audit_bytes = b"".join(p.read_bytes() for p in cfg.data_dir.glob("audit.sqlite*"))
    assert b"@free.fr" in audit_bytes  # the records are there, masked
    assert patient_email.encode() not in audit_bytes


async def test_a_roster_that_does_not_load_keeps_the_previous_engine(
    tmp_path: Path, sink: Sink
) -> None:
    from gateway.roster import ROSTER_FILE

    runtime = Runtime(runtime_config(tmp_path, sink.port))
    await runtime.start()
    try:
        assert runtime.service is not None
        engine = runtime.engine
        assert engine is not None and runtime.service.engine is engine
        (runtime.cfg.data_dir / ROSTER_FILE).write_bytes(b"not a sealed roster")
        assert not await runtime.reload_roster()
        assert runtime.engine is engine and runtime.service.engine is engine
        assert runtime.readiness()["engine_loaded"]
    finally:
        await runtime.stop()
