"""Crash tests: `portique serve` as a real process, SIGKILLed under load.

Promise: every message that got a 250 reaches the sink after a restart (duplicates
allowed, losses not), and a transaction killed during DATA is never delivered.
"""

from __future__ import annotations

import asyncio
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.relay._helpers import Sink, message, wait_until

PORTIQUE = str(Path(sys.executable).parent / "portique")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _write_config(tmp: Path, smtp_port: int, sink_port: int) -> Path:
    cfg = tmp / "portique.toml"
    cfg.write_text(
        f"""
data_dir = "data"
[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "portique.test"
[queue]
retry_initial = 0.2
retry_max = 1.0
poll_interval = 0.1
[connectors.relay]
host = "127.0.0.1"
port = {sink_port}
tls = "none"
[[routes]]
name = "all"
match = ["*"]
action = "deliver"
connector = "relay"
[admin]
enabled = false
[metrics]
enabled = false
"""
    )
    return cfg


class Gateway:
    def __init__(self, cfg: Path, port: int) -> None:
        self.cfg = cfg
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cfg.parent / "portique.log"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [PORTIQUE, "serve", "-c", str(self.cfg)],
                stdout=log,
                stderr=log,
                cwd=self.cfg.parent,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("gateway did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _client(port: int, ids: list[str], acked: list[str], stop_at: float) -> None:
    """Send each message until it gets a 250 (as a practice's software would retry)."""
    for mid in ids:
        data = message(subject=f"crash {mid}", message_id=mid)
        while time.monotonic() < stop_at:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
                    c.sendmail("dr@practice.test", ["lab@lab.test"], data)
                acked.append(mid)
                break
            except (OSError, smtplib.SMTPException):
                time.sleep(0.1)


@pytest.mark.slow
async def test_sigkill_under_load_loses_no_acknowledged_message(tmp_path):
    sink = await Sink().start()
    port = _free_port()
    gw = Gateway(_write_config(tmp_path, port, sink.port), port)
    try:
        await asyncio.to_thread(gw.start)
        clients = 5
        per_client = 40  # 200 messages in all
        acked: list[str] = []
        stop_at = time.monotonic() + 120
        tasks = [
            asyncio.create_task(
                asyncio.to_thread(
                    _client,
                    port,
                    [f"<c{c}-{i}@crash.test>" for i in range(per_client)],
                    acked,
                    stop_at,
                )
            )
            for c in range(clients)
        ]
        await wait_until(lambda: len(acked) >= 60, within=60)
        await asyncio.to_thread(gw.kill)  # SIGKILL mid-stream
        killed_after = len(acked)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(gw.start)
        await asyncio.gather(*tasks)
        assert len(set(acked)) == clients * per_client
        assert killed_after < clients * per_client  # the kill really was mid-stream
        expected = set(acked)

        def arrived() -> set[str]:
            out = set()
            for m in sink.messages:
                for line in m.data.split(b"\r\n"):
                    if line.lower().startswith(b"message-id:"):
                        out.add(line.split(b":", 1)[1].strip().decode())
            return out

        await wait_until(lambda: expected <= arrived(), within=60)
        assert expected <= arrived()
    finally:
        gw.stop()
        await sink.stop()


@pytest.mark.slow
async def test_transaction_killed_during_data_is_never_delivered(tmp_path):
    sink = await Sink().start()
    port = _free_port()
    gw = Gateway(_write_config(tmp_path, port, sink.port), port)
    try:
        await asyncio.to_thread(gw.start)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for line in (
            b"EHLO c.test",
            b"MAIL FROM:<dr@practice.test>",
            b"RCPT TO:<lab@lab.test>",
            b"DATA",
        ):
            writer.write(line + b"\r\n")
        # Past one sealed frame (1 MiB) and gateway.spool.SPILL_BYTES: the partial
        # transfer is on disk when the process dies.
        writer.write(b"Subject: never-finished\r\n\r\n" + b"half of the body\r\n" * 80_000)
        await writer.drain()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(gw.kill)
        writer.close()
        assert list((tmp_path / "data" / "spool" / "incoming").iterdir())  # the partial transfer
        await asyncio.to_thread(gw.start)
        # A complete message sent after the restart arrives; the killed one never does.
        await asyncio.to_thread(_client, port, ["<after@crash.test>"], [], time.monotonic() + 30)
        await sink.wait_for(1)
        await asyncio.sleep(1.0)
        assert all(b"never-finished" not in m.data for m in sink.messages)
        assert not list((tmp_path / "data" / "spool" / "incoming").iterdir())
    finally:
        gw.stop()
        await sink.stop()


@pytest.mark.slow
async def test_sigterm_then_restart_resumes_the_queue(tmp_path):
    port = _free_port()
    sink_port = _free_port()  # no sink yet: deliveries defer
    gw = Gateway(_write_config(tmp_path, port, sink_port), port)
    try:
        await asyncio.to_thread(gw.start)
        await asyncio.to_thread(_client, port, ["<term@crash.test>"], [], time.monotonic() + 30)
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await asyncio.to_thread(gw.kill, signal.SIGTERM)
        assert gw.proc is not None and gw.proc.returncode == 0
        assert time.monotonic() - started < 15
        sink = Sink()
        loop = asyncio.get_running_loop()
        sink.server = await loop.create_server(lambda: _sink_protocol(sink), "127.0.0.1", sink_port)
        sink.port = sink_port
        try:
            await asyncio.to_thread(gw.start)
            (got,) = await sink.wait_for(1)
            assert b"<term@crash.test>" in got.data
        finally:
            await sink.stop()
    finally:
        gw.stop()


def _sink_protocol(sink: Sink):
    from aiosmtpd.smtp import SMTP

    return SMTP(sink.handler, hostname="sink.test", loop=asyncio.get_running_loop())
