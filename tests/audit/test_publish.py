"""Checkpoints leave the box: a real UDP syslog socket and a real HTTPS server (test
PKI) receive them; an unreachable endpoint never blocks or fails an append."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from crypto.keys import Keyring
from gateway.audit import AuditTrail, CheckpointPublisher
from gateway.config import AuditConfig
from gateway.errors import ConfigError

from .. import conftest
from ._helpers import fill


def test_checkpoints_reach_a_syslog_endpoint(
    data_dir: Path, keyring: Keyring, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(10)
        port = sink.getsockname()[1]
        cfg = AuditConfig(checkpoint_every=2, export_syslog=f"127.0.0.1:{port}")
        with AuditTrail.open(data_dir, keyring, cfg) as trail:
            fill(trail, 4)
            datagrams = [sink.recv(65535).decode() for _ in range(2)]
    for datagram in datagrams:
        assert datagram.startswith("<110>1 ")  # facility 13 (log audit), informational
        assert " portique - audit-checkpoint - " in datagram
    received = [json.loads(d.split(" - ", 2)[2]) for d in datagrams]
    assert [cp["seq"] for cp in received] == [2, 4]
    # What arrived is enough to verify the trail against.
    exported = tmp_path / "from-syslog.jsonl"
    exported.write_text("".join(json.dumps(cp) + "\n" for cp in received))
    with AuditTrail.open_readonly(data_dir, keyring, cfg) as trail:
        result = trail.verify(against=exported)
    assert result.ok, result.reason
    assert result.exported_checkpoints_checked == 2


async def test_checkpoints_reach_an_https_endpoint(
    data_dir: Path, keyring: Keyring, pki: conftest.TestPKI
) -> None:
    got: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        got.append(await request.json())
        if len(got) == 2:
            arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/checkpoints", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
    await site.start()
    port = runner.addresses[0][1]
    url = f"https://localhost:{port}/checkpoints"
    publisher = CheckpointPublisher(url=url, verify=pki.client_context())
    cfg = AuditConfig(checkpoint_every=3, export_url=url)
    trail = AuditTrail.open(data_dir, keyring, cfg, publisher=publisher)
    try:
        fill(trail, 6)
        await asyncio.wait_for(arrived.wait(), timeout=20)
    finally:
        await asyncio.to_thread(trail.close)
        await runner.cleanup()
    assert [cp["seq"] for cp in got] == [3, 6]
    assert all(cp["type"] == "portique-audit-checkpoint" and cp["signature"] for cp in got)
    assert publisher.sent == 2 and publisher.failures == 0


def test_unreachable_https_endpoint_never_blocks_appends(data_dir: Path, keyring: Keyring) -> None:
    # A port that was free a moment ago: connection refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    publisher = CheckpointPublisher(url=f"https://127.0.0.1:{port}/x")
    cfg = AuditConfig(checkpoint_every=1)
    with AuditTrail.open(data_dir, keyring, cfg, publisher=publisher) as trail:
        fill(trail, 3)
        assert trail.search()[1] == 3
    assert publisher.failures == 3  # one per record; nothing new to sign at close
    assert publisher.sent == 0


def test_send_now_reports_failure_of_the_post() -> None:
    def refuse(_url: str, _cp: Any) -> None:
        raise ConnectionError("refused")

    publisher = CheckpointPublisher(url="https://example.invalid/", post=refuse)
    assert publisher.send_now({"seq": 1}) is False
    assert publisher.failures == 1


def test_plain_http_endpoint_is_refused() -> None:
    with pytest.raises(ConfigError, match="export_url"):
        CheckpointPublisher(url="http://siem.cabinet.test/checkpoints")
