"""The load driver and the verifying sink, over real loopback sockets with small M.

Between driver and sink sits either nothing, or a small relay written here (the seam
where Portique sits in a real run): one that pseudonymises, one that loses a message,
one that passes one message through untouched. The driver must tell these apart.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiosmtplib
import driver
import messages
import pytest
import sink
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests import conftest

DRIVER = Path(driver.__file__)
SINK = Path(sink.__file__)


async def run_direct(**kw: object) -> tuple[driver.LoadReport, sink.SinkState]:
    tracker = driver.ArrivalTracker()
    state = sink.SinkState(on_arrival=tracker.add)
    async with sink.VerifyingSink(state) as s:
        opts = driver.LoadOptions(port=s.port, settle=5.0, **kw)  # type: ignore[arg-type]
        report = await driver.run_load(opts, tracker)
    return report, state


async def test_direct_to_sink_every_message_arrives_with_its_planted_values() -> None:
    report, state = await run_direct(connections=3, count=30, expect="plain")
    assert report.ok(), driver.format_report(report)
    assert (report.offered, report.accepted, report.arrived, report.missing) == (30, 30, 30, 0)
    assert report.leaks == {"name": 30, "nir": 30, "phone": 30, "email": 30}
    assert report.delivered_per_s > 0 and report.accepted_per_s > 0 and report.mb_per_s > 0
    lat = report.latency_ms
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert len(state.arrivals) == 30


async def test_planted_values_at_the_sink_fail_a_pseudonymised_expectation() -> None:
    report, _ = await run_direct(connections=2, count=6, expect="pseudonymised")
    assert not report.ok()
    assert report.leaks["nir"] == 6
    text = driver.format_report(report)
    assert "RESULT: FAIL" in text
    # The report names kinds, never values.
    for p in messages.patient_pool()[:6]:
        assert p.last_name not in text and p.nir not in text and p.email not in text


async def test_mixed_kinds_without_pipelining() -> None:
    report, _ = await run_direct(
        connections=2, count=4, mix="lab:1,html:1,stl:1", pipelining=False, expect="plain"
    )
    assert report.ok(), driver.format_report(report)
    assert report.arrived == 4
    assert report.accepted_bytes > 5_000_000  # the STL message went through


async def test_fixed_rate_paces_the_offered_load() -> None:
    started = time.monotonic()
    report, _ = await run_direct(connections=4, count=10, rate=40.0, expect="plain")
    elapsed = time.monotonic() - started
    assert report.ok(), driver.format_report(report)
    # 10 messages offered at 40/s: the last one is offered 9/40 s after the first.
    assert elapsed >= 9 / 40
    assert report.accepted_per_s <= 45


def test_sustained_mode_count_is_rate_times_duration() -> None:
    assert driver.LoadOptions(rate=10, duration=600, count=5).total() == 6000
    assert driver.LoadOptions(rate=0, duration=600, count=5).total() == 5


async def test_starttls(pki: conftest.TestPKI) -> None:
    tracker = driver.ArrivalTracker()
    state = sink.SinkState(on_arrival=tracker.add)
    async with sink.VerifyingSink(state, tls_context=pki.server_context()) as s:
        opts = driver.LoadOptions(
            host="localhost", port=s.port, connections=2, count=4, tls=True,
            cafile=str(pki.ca_file), expect="plain", settle=5.0,
        )  # fmt: skip
        report = await driver.run_load(opts, tracker)
    assert report.ok(), driver.format_report(report)
    assert report.arrived == 4


async def test_refusals_are_counted_not_hidden() -> None:
    tracker = driver.ArrivalTracker()
    state = sink.SinkState(on_arrival=tracker.add, refuse_with="451 4.3.0 try later")
    async with sink.VerifyingSink(state) as s:
        report = await driver.run_load(
            driver.LoadOptions(port=s.port, connections=1, count=3, settle=0.5), tracker
        )
    assert report.refused == {"dot:451": 3}
    assert report.accepted == 0 and not report.ok()


# --- a relay between driver and sink ---------------------------------------------------------

Transform = Callable[[int, bytes], bytes | None]


def pseudonymise(data: bytes) -> bytes:
    lid = sink.load_id_of(data)
    idx = messages.parse_load_id(lid)[3]  # type: ignore[index]
    p = messages.patient_pool()[idx]
    msg = email.message_from_bytes(data, policy=email.policy.default)
    body = msg.get_content()
    for value in (p.full_name, p.last_name, p.nir_spaced, p.phone, p.email):
        body = body.replace(value, "PAT-0000")
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    return msg.as_bytes(policy=email.policy.SMTP)


class Relay:
    """Accepts, transforms (None: drop), forwards to the sink with aiosmtplib."""

    def __init__(self, sink_port: int, transform: Transform) -> None:
        self.sink_port = sink_port
        self.transform = transform
        self.seen = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        n = self.seen
        self.seen += 1
        out = self.transform(n, envelope.original_content or b"")
        if out is not None:
            await aiosmtplib.send(
                out,
                sender=envelope.mail_from,
                recipients=envelope.rcpt_tos,
                hostname="127.0.0.1",
                port=self.sink_port,
            )
        return "250 2.0.0 queued"


async def relay_run(transform: Transform, count: int) -> driver.LoadReport:
    tracker = driver.ArrivalTracker()
    async with sink.VerifyingSink(sink.SinkState(on_arrival=tracker.add)) as s:
        relay = Relay(s.port, transform)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SMTP(relay, loop=loop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            opts = driver.LoadOptions(port=port, connections=2, count=count, settle=1.0)
            return await driver.run_load(opts, tracker)
        finally:
            server.close()
            await server.wait_closed()


async def test_through_a_pseudonymising_relay_passes() -> None:
    report = await relay_run(lambda n, d: pseudonymise(d), 8)
    assert report.ok(), driver.format_report(report)
    assert report.arrived == 8 and report.leaks == {}


async def test_a_lost_message_is_reported_missing() -> None:
    report = await relay_run(lambda n, d: None if n == 3 else pseudonymise(d), 8)
    assert report.missing == 1 and report.arrived == 7
    assert not report.ok()


async def test_one_message_passed_through_untouched_is_a_leak() -> None:
    report = await relay_run(lambda n, d: d if n == 5 else pseudonymise(d), 8)
    assert report.leaks == {"name": 1, "nir": 1, "phone": 1, "email": 1}
    assert report.missing == 0 and not report.ok()


async def test_a_notice_instead_of_the_message_is_missing_plus_unknown() -> None:
    notice = b"From: <>\r\nTo: secretariat@cabinet-dentaire.test\r\nSubject: held\r\n\r\nheld\r\n"
    report = await relay_run(lambda n, d: notice, 3)
    assert report.missing == 3 and report.unknown_arrivals == 3 and not report.ok()


# --- command line, and a sink in its own process ----------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DRIVER), *args], capture_output=True, text=True, timeout=120
    )


def test_cli_self_test_exit_status() -> None:
    ok = run_cli("--self-test", "-n", "2", "-m", "12", "--expect", "plain")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "arrived 12  missing 0" in ok.stdout
    assert "delivered msg/s" in ok.stdout and "p99" in ok.stdout
    leak = run_cli("--self-test", "-n", "2", "-m", "12")
    assert leak.returncode == 1
    assert "RESULT: FAIL" in leak.stdout
    for p in messages.patient_pool()[:12]:
        assert p.nir not in leak.stdout + leak.stderr
        assert p.email not in leak.stdout + leak.stderr


@pytest.fixture
async def sink_process(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    report = tmp_path / "arrivals.jsonl"
    port_file = tmp_path / "port"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SINK), "--port-file", str(port_file), "--report", str(report),
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            if port_file.exists():
                break
            await asyncio.sleep(0.05)
        yield int(port_file.read_text()), report
    finally:
        proc.terminate()
        await proc.wait()


async def test_external_sink_report_is_followed(sink_process: tuple[int, Path]) -> None:
    port, report_file = sink_process
    tracker = driver.ArrivalTracker()
    stop = asyncio.Event()
    follower = asyncio.create_task(tracker.follow_report(report_file, stop))
    opts = driver.LoadOptions(port=port, connections=2, count=10, expect="plain", settle=10)
    report = await driver.run_load(opts, tracker)
    stop.set()
    await follower
    assert report.ok(), driver.format_report(report)
    assert report.arrived == 10 and report.latency_ms["p99"] >= 0


def test_profile_summary_leaves_out_idle_pool_waits(tmp_path: Path) -> None:
    folded = tmp_path / "p.folded"
    folded.write_text(
        'process 1:"portique serve";thread (1): MainThread;run (uvloop/__init__.py:92);'
        "smtp_DATA (/work/main/gateway/smtp.py:300);seal (/work/main/crypto/aead.py:50) 30\n"
        'process 1:"portique serve";thread (2): pipeline_0;_bootstrap (threading.py:1002);'
        "_worker (/usr/lib/python3.11/concurrent/futures/thread.py:81) 500\n"
        'process 1:"portique serve";thread (2): pipeline_0;_bootstrap (threading.py:1002);'
        "_worker (/usr/lib/python3.11/concurrent/futures/thread.py:83);"
        "process_message (/work/main/gateway/pipeline/process.py:10) 70\n"
    )
    text = driver.summarise_profile(folded)
    assert text.startswith("100 busy samples") and "500 more were idle" in text
    assert " 70.0       70  gateway/pipeline" in text
    assert " 30.0       30  crypto/aead" in text
    assert "process_message (gateway/pipeline/process.py)" in text


def test_pipeline_cost_runs_on_tiny_input_and_leaves_no_planted_value() -> None:
    text = driver.measure_pipeline_cost("lab", 3)
    assert text.startswith("lab: 3 messages")
    assert "verdicts: {'rewritten': 3}" in text
    assert "planted values left (by kind): none" in text


@pytest.fixture
def eml_files(tmp_path: Path) -> tuple[str, ...]:
    messages.main(["--out", str(tmp_path), "--count", "2", "--lf"])
    return tuple(str(p) for p in sorted(tmp_path.glob("*.eml")))


async def test_messages_from_files_are_counted_and_not_leak_checked(
    eml_files: tuple[str, ...],
) -> None:
    files = eml_files
    report, state = await run_direct(connections=2, count=5, files=files)
    assert report.ok(), driver.format_report(report)
    assert report.arrived == 5 and report.leaks == {}
    # The sink got CRLF messages with the driver's own X-Load-Id on top.
    assert all(a.load_id.split(".")[2] == "file" for a in state.arrivals)


def test_peak_rss_of_a_process_and_its_children() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "b = bytearray(64 << 20); input()"], stdin=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        peaks: dict[int, int] = {}
        while time.monotonic() < deadline:
            peaks = driver.peak_rss_kib(os.getpid())
            if peaks.get(child.pid, 0) > 64 * 1024:
                break
            time.sleep(0.05)
        assert peaks[child.pid] > 64 * 1024  # the child's 64 MiB buffer, in KiB
        assert os.getpid() in peaks
    finally:
        child.communicate(b"\n", timeout=10)
