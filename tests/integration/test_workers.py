"""End to end with `workers = 2`: a supervisor and two worker processes of the real
`portique serve`, sharing one SMTP port (SO_REUSEPORT) and one data_dir.

practice clients --SMTP--> supervisor's port, spread by the kernel over worker 0 and
worker 1 --relay--> an aiosmtpd sink in this test.

What must hold with several processes: every acknowledged message arrives exactly once
(pseudonymised on the lab route); both workers' audit records form one chain that
verifies; a lockdown set through worker 0 stops delivery in both workers and lifting it
resumes both; a worker killed with SIGKILL is restarted and none of its acknowledged
messages is lost; a worker that stops answering (SIGSTOP) is killed and restarted;
/metrics counts what both workers did; SIGTERM lets a transaction in flight finish,
refuses new sessions and stops every worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import smtplib
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import FLUSH_INTERVAL
from gateway.workers import HEARTBEAT_INTERVAL
from tests.integration._serve import ServeProcess, run_cli
from tests.integration.test_serve import LAB, LAB_ORDER, PLANTED, ROSTER_CSV, SENDER
from tests.integration.test_serve import write_config as write_single_process_config
from tests.relay._helpers import Sink, SinkHandler, wait_until

pytestmark = pytest.mark.timeout(120)

# Seconds the slow sink takes per message (4 deliveries at once per destination: about
# 20 messages a second, slower than the clients send).
SLOW_SINK = 0.2
# Seconds without a heartbeat before the supervisor kills a worker (default 30).
HANG_TIMEOUT = 4
_MESSAGE_ID = re.compile(rb"Message-ID: <(w-[0-9a-z-]+)@cabinet-du-parc\.fr>", re.IGNORECASE)


def write_config(tmp: Path, sink_port: int) -> Path:
    """test_serve's configuration (lab route pseudonymises), with two workers and
    without the catch-all reject-if-phi route: the audit trail masks every address a
    patient route could match, and these tests read Message-IDs back from it."""
    config = write_single_process_config(tmp, sink_port)
    text = config.read_text()
    catch_all = '[[routes]]\nname = "default"\nmatch = ["*"]\naction = "reject-if-phi"\n'
    assert catch_all in text
    config.write_text(
        f"workers = 2\nworker_hang_timeout = {HANG_TIMEOUT}\n"
        + text.replace(catch_all + 'connector = "relay"\n', "")
    )
    return config


def lab_order(marker: str) -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {LAB}\r\nSubject: Commande couronne 36\r\n"
        f"Message-ID: <{marker}@cabinet-du-parc.fr>\r\n"
        "Date: Sun, 29 Nov 2026 05:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{LAB_ORDER}"
    ).encode()


def send_one(port: int, marker: str) -> bool:
    """One message on its own connection; True once the gateway answered 250."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("cabinet.test")
            return client.sendmail(SENDER, [LAB], lab_order(marker)) == {}
    except (smtplib.SMTPException, OSError):
        return False


async def send_concurrently(port: int, markers: list[str], clients: int = 8) -> list[str]:
    """Send every marker's message from `clients` threads; the markers answered 250."""
    chunks = [markers[i::clients] for i in range(clients)]

    def run(chunk: list[str]) -> list[str]:
        return [m for m in chunk if send_one(port, m)]

    done = await asyncio.gather(*(asyncio.to_thread(run, c) for c in chunks))
    return [m for chunk in done for m in chunk]


def arrived(sink: Sink) -> Counter[str]:
    """Markers of the messages at the sink, with how many times each came."""
    found = (_MESSAGE_ID.search(m.data) for m in sink.messages)
    return Counter(m.group(1).decode() for m in found if m is not None)


def worker_pids(gateway: ServeProcess) -> list[int]:
    """Worker pids in index order, from the supervisor's `workers_started` log line."""
    for line in gateway.stderr_path.read_text().splitlines():
        if '"workers_started"' in line:
            return [int(p) for p in json.loads(line)["pids"]]
    raise AssertionError("no workers_started line")


def received_by_pid(data_dir: Path) -> dict[str, int]:
    """message marker -> pid of the worker that accepted it, from the audit trail's
    `received` records (spool ids carry the accepting process's pid)."""
    conn = sqlite3.connect(f"{(data_dir / 'audit.sqlite').as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT fields FROM records WHERE kind = 'received'").fetchall()
    finally:
        conn.close()
    owners: dict[str, int] = {}
    for (text,) in rows:
        fields = json.loads(text)
        marker = str(fields.get("message_id", "")).strip("<>").partition("@")[0]
        owners[marker] = int(str(fields["spool_id"])[11:16], 16)
    return owners


def metric_total(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def http_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback test URL
        return str(resp.read().decode())


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = await Sink().start()
    yield s
    await s.stop()


def start_gateway(tmp_path: Path, sink: Sink) -> tuple[Path, ServeProcess]:
    config = write_config(tmp_path, sink.port)
    assert run_cli(config, "keys", "init").returncode == 0
    csv = tmp_path / "roster.csv"
    csv.write_text(ROSTER_CSV, encoding="utf-8")
    imported = run_cli(config, "roster", "import", str(csv))
    assert imported.returncode == 0, imported.stderr
    csv.unlink()
    return config, ServeProcess(config).start()


async def test_two_workers_relay_once_share_lockdown_audit_and_metrics(
    tmp_path: Path, sink: Sink
) -> None:
    config, gateway = start_gateway(tmp_path, sink)
    data_dir = tmp_path / "data"
    try:
        assert "2 workers" in gateway.stdout_path.read_text()
        pids = worker_pids(gateway)
        assert len(pids) == 2
        # pin_workers (default): worker N keeps to the N-th usable core, its threads too.
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) >= 2:
            for index, pid in enumerate(pids):
                for task in os.listdir(f"/proc/{pid}/task"):
                    assert os.sched_getaffinity(int(task)) == {cores[index]}
        else:  # more workers than cores: left to the kernel
            assert all(os.sched_getaffinity(pid) == set(cores) for pid in pids)

        # Concurrent clients: every message arrives once, pseudonymised.
        markers = [f"w-{n}" for n in range(24)]
        assert sorted(await send_concurrently(gateway.smtp_port, markers)) == sorted(markers)
        await wait_until(lambda: set(arrived(sink)) >= set(markers), within=30)
        await asyncio.sleep(0.5)  # a duplicate would come now
        assert arrived(sink) == Counter(markers)
        for message in sink.messages:
            text = message.data.decode("utf-8", "replace")
            assert "Couronne zircone sur 36" in text
            for value in PLANTED:
                assert value not in text, value
        # The kernel spread the connections: both workers accepted some.
        owners = received_by_pid(data_dir)
        assert {owners[m] for m in markers} == set(pids)

        # /metrics (worker 0) counts the messages of both workers: the other worker's
        # counts within its flush interval (metrics.FLUSH_INTERVAL).
        url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
        deadline = time.monotonic() + 10 * FLUSH_INTERVAL
        metrics = await asyncio.to_thread(http_text, url)
        while (
            metric_total(metrics, "portique_messages_delivered_total") < len(markers)
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.1)
            metrics = await asyncio.to_thread(http_text, url)
        assert metric_total(metrics, "portique_messages_received_total") == len(markers)
        delivered = metric_total(metrics, "portique_messages_delivered_total")
        assert delivered == len(markers)
        # Gauges are worker 0's reading (livemax), read at the scrape.
        assert metric_total(metrics, "portique_audit_chain_ok") == 1
        assert metric_total(metrics, "portique_lockdown") == 0

        # Lockdown through worker 0's control socket stops delivery in both workers.
        locked = await asyncio.to_thread(run_cli, config, "lockdown", "on")
        assert locked.returncode == 0, locked.stderr
        await asyncio.sleep(1.0)  # LOCKDOWN_REFRESH (0.5 s) in the other worker
        held = [f"w-held-{n}" for n in range(16)]
        assert sorted(await send_concurrently(gateway.smtp_port, held)) == sorted(held)
        owners = received_by_pid(data_dir)
        assert {owners[m] for m in held} == set(pids)
        await asyncio.sleep(2.0)
        assert not set(arrived(sink)) & set(held)
        metrics = await asyncio.to_thread(
            http_text, f"http://127.0.0.1:{gateway.metrics_port}/metrics"
        )
        assert metric_total(metrics, "portique_lockdown") == 1

        unlocked = await asyncio.to_thread(run_cli, config, "lockdown", "off")
        assert unlocked.returncode == 0, unlocked.stderr
        await wait_until(lambda: set(arrived(sink)) >= set(held), within=30)
        await asyncio.sleep(0.5)
        assert arrived(sink) == Counter(markers + held)
    finally:
        exit_status = await asyncio.to_thread(gateway.stop)
    assert exit_status == 0, gateway.stderr_tail()
    for pid in pids:  # the workers stopped with the supervisor
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    # Both workers appended to one audit chain, concurrently: it verifies.
    verified = await asyncio.to_thread(run_cli, config, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


class SlowHandler(SinkHandler):
    """A sink that takes SLOW_SINK seconds per message, so that deliveries back up and
    a killed worker has acknowledged messages it has not delivered yet."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(SLOW_SINK)
        return await super().handle_DATA(server, session, envelope)


async def test_a_killed_worker_is_restarted_and_loses_no_acknowledged_message(
    tmp_path: Path,
) -> None:
    sink = await Sink(SlowHandler()).start()
    try:
        await _kill_a_worker_under_load(tmp_path, sink)
    finally:
        await sink.stop()


async def _kill_a_worker_under_load(tmp_path: Path, sink: Sink) -> None:
    _config, gateway = start_gateway(tmp_path, sink)
    data_dir = tmp_path / "data"
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop_load = threading.Event()

    def load(client: int) -> None:
        n = 0
        while not stop_load.is_set():
            marker = f"w-{client}-{n}"
            n += 1
            if send_one(gateway.smtp_port, marker):
                with lock:
                    acknowledged.append(marker)

    try:
        pids = worker_pids(gateway)
        clients = [asyncio.create_task(asyncio.to_thread(load, c)) for c in range(6)]
        await wait_until(lambda: len(acknowledged) >= 20, within=30)
        os.kill(pids[0], signal.SIGKILL)  # worker 0: also the control socket's owner
        killed_at = time.monotonic()
        arrived_before_kill = set(arrived(sink))
        await wait_until(lambda: "worker_restarted" in gateway.stderr_path.read_text(), within=30)
        restart_after = time.monotonic() - killed_at
        count_at_restart = len(acknowledged)
        await wait_until(lambda: len(acknowledged) >= count_at_restart + 10, within=30)
        stop_load.set()
        await asyncio.gather(*clients)

        # Every acknowledged message arrives, the killed worker's included.
        await wait_until(lambda: set(arrived(sink)) >= set(acknowledged), within=45)
        await asyncio.sleep(0.5)
        counts = arrived(sink)
        # A copy may come twice only if the killed worker had sent it and not yet
        # dropped its spool entry (at-least-once): never one recovered by two workers.
        owners = received_by_pid(data_dir)
        twice = [m for m, n in counts.items() if n > 1]
        assert all(owners[m] == pids[0] for m in twice), twice
        # The killed worker had acknowledged messages still waiting for the slow sink:
        # its restarted successor recovered them from its spool directory.
        killed_owned = {m for m in acknowledged if owners[m] == pids[0]}
        assert killed_owned - arrived_before_kill, "nothing was left to recover"
        log = gateway.stderr_path.read_text()
        assert '"worker_exited"' in log and '"status": -9' in log
        assert restart_after < 15
    finally:
        stop_load.set()
        exit_status = await asyncio.to_thread(gateway.stop)
    assert exit_status == 0, gateway.stderr_tail()


async def test_sigterm_finishes_transactions_in_flight_and_refuses_new_sessions(
    tmp_path: Path, sink: Sink
) -> None:
    config, gateway = start_gateway(tmp_path, sink)
    pids = worker_pids(gateway)
    head, tail = lab_order("w-across-stop").split(b"\r\n\r\n", 1)

    def transaction_across_the_stop() -> tuple[int, str]:
        """DATA begun before SIGTERM and finished after; what a new client hears then."""
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=30) as client:
            client.ehlo("cabinet.test")
            client.mail(SENDER)
            client.rcpt(LAB)
            client.putcmd("data")
            assert client.getreply()[0] == 354
            client.send(head + b"\r\n\r\n")
            assert gateway.proc is not None
            gateway.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            try:
                with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as late:
                    newcomer = f"greeted {late.ehlo()[0]}"
            except smtplib.SMTPConnectError as exc:
                newcomer = f"refused {exc.smtp_code}"
            except ConnectionRefusedError:
                newcomer = "refused"
            client.send(tail + b"\r\n.\r\n")
            code, _ = client.getreply()
            return code, newcomer

    code, newcomer = await asyncio.to_thread(transaction_across_the_stop)
    assert code == 250  # the transaction in flight finished
    assert newcomer in ("refused 421", "refused"), newcomer
    assert gateway.proc is not None
    status = await asyncio.to_thread(gateway.proc.wait, 60)
    # Seen once in a full run: status 1 (a worker not stopped within STOP_TIMEOUT?);
    # the log says which, so keep it in the failure.
    assert status == 0, gateway.stderr_tail()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    # Acknowledged during the stop: it arrives once, before the stop or, if the stop
    # cut its processing off, after the next start from its worker's spool directory.
    restarted = ServeProcess(config).start()
    try:
        await wait_until(lambda: "w-across-stop" in arrived(sink), within=30)
    finally:
        assert await asyncio.to_thread(restarted.stop) == 0
    assert arrived(sink)["w-across-stop"] == 1


async def test_a_hung_worker_is_killed_and_restarted(tmp_path: Path, sink: Sink) -> None:
    """SIGSTOP freezes worker 1 as a stuck event loop would: no more heartbeats. The
    supervisor kills it after worker_hang_timeout and starts a successor, which
    relays again; the supervisor still stops cleanly."""
    _config, gateway = start_gateway(tmp_path, sink)
    try:
        pids = worker_pids(gateway)
        readyz = f"http://127.0.0.1:{gateway.metrics_port}/readyz"
        assert await asyncio.to_thread(http_status, readyz) == (200, "")
        os.kill(pids[1], signal.SIGSTOP)
        stopped_at = time.monotonic()
        # Worker 0's /readyz sees worker 1 down within a few heartbeats...
        await wait_until(
            lambda: http_status(readyz) == (503, "workers_up"), within=HANG_TIMEOUT + 5
        )
        await wait_until(lambda: '"worker_hung"' in gateway.stderr_path.read_text(), within=30)
        hung_after = time.monotonic() - stopped_at
        await wait_until(lambda: "worker_restarted" in gateway.stderr_path.read_text(), within=30)
        # ...and up again once its successor beats.
        await wait_until(lambda: http_status(readyz) == (200, ""), within=10)
        log = gateway.stderr_path.read_text()
        hung = next(json.loads(line) for line in log.splitlines() if '"worker_hung"' in line)
        assert hung["worker"] == 1 and hung["pid"] == pids[1]
        # Silence is counted from the last heartbeat, up to a beat before the SIGSTOP.
        assert HANG_TIMEOUT - HEARTBEAT_INTERVAL - 0.5 <= hung_after < HANG_TIMEOUT + 10
        assert not _alive(pids[1])
        # Worker 0 was never touched: it kept beating.
        assert not any(
            json.loads(line).get("worker") == 0
            for line in log.splitlines()
            if '"worker_hung"' in line
        )
        # Both slots relay again: enough sessions that the kernel uses each.
        markers = [f"w-after-hang-{n}" for n in range(16)]
        assert sorted(await send_concurrently(gateway.smtp_port, markers)) == sorted(markers)
        await wait_until(lambda: set(arrived(sink)) >= set(markers), within=30)
    finally:
        exit_status = await asyncio.to_thread(gateway.stop)
    assert exit_status == 0, gateway.stderr_tail()


def http_status(url: str) -> tuple[int, str]:
    """(status, the failing /readyz checks, comma-separated) of a GET."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback test URL
            return int(resp.status), ""
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), ",".join(json.loads(exc.read().decode())["failing"])


def _alive(pid: int) -> bool:
    """Whether `pid` is still a process (a reaped child is not; a zombie is not ours)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] not in ("Z", "X")
    except OSError:
        return False
