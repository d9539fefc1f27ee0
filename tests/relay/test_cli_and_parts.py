"""CLI commands, connector registry, DSN structure, sealed streams, and the benchmarks."""

from __future__ import annotations

import email
import email.policy
import io
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.outbox import OutboxConnector
from connectors.registry import build_connectors
from connectors.relay import RelayConnector
from crypto.aead import Sealer, SealError, StreamSealer, open_stream
from gateway.config import parse_config
from gateway.dsn import FailedRecipient, build_dsn, build_notice

ROOT = Path(__file__).resolve().parents[2]
PORTIQUE = str(Path(sys.executable).parent / "portique")


def _portique(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PORTIQUE, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_queue_and_lockdown_commands_work_without_a_running_gateway(tmp_path):
    (tmp_path / "portique.toml").write_text('data_dir = "d"\n')
    assert _portique("keys", "init", cwd=tmp_path).returncode == 0
    out = _portique("queue", "list", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "queue is empty" in out.stdout
    assert "lockdown: off" in _portique("lockdown", "status", cwd=tmp_path).stdout
    assert "lockdown: on" in _portique("lockdown", "on", cwd=tmp_path).stdout
    assert (
        "lockdown: on"
        in _portique("lockdown", "status", "-c", "portique.toml", cwd=tmp_path).stdout
    )
    missing = _portique("queue", "show", "nope", cwd=tmp_path)
    assert missing.returncode == 1 and "no queue entry" in missing.stdout


def test_registry_builds_connectors_with_paths_relative_to_the_config(tmp_path):
    cfg_file = tmp_path / "conf" / "portique.toml"
    cfg_file.parent.mkdir()
    cfg_file.write_text("")
    cfg = parse_config(
        {
            "connectors": {
                "relay": {"host": "127.0.0.1", "port": 25, "tls": "none"},
                "outbox": {"path": "out"},
            }
        },
        source=str(cfg_file),
    )
    built = build_connectors(cfg)
    assert isinstance(built["relay"], RelayConnector)
    assert isinstance(built["outbox"], OutboxConnector)
    assert built["outbox"].folder == tmp_path / "conf" / "out"


def test_embedded_default_delivers_to_the_outbox_under_data_dir():
    built = build_connectors(parse_config({}))
    assert list(built) == ["outbox"]
    assert str(built["outbox"].folder).endswith("portique-data/outbox")


def test_dsn_is_rfc3464_and_carries_only_safe_fields():
    raw = build_dsn(
        hostname="portique.test",
        sender="dr@practice.test",
        original_message_id="<abc@practice.test>",
        arrival=1_700_000_000,
        failed=[FailedRecipient("lab@lab.test", "5.1.1", "550 5.1.1 from relay")],
        gave_up=False,
        safe_subject="Empreinte [NAME]",
    )
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == "Portique <MAILER-DAEMON@portique.test>"
    assert msg["Auto-Submitted"] == "auto-replied"
    parts = [p.get_content_type() for p in msg.walk()]
    assert parts[:3] == ["multipart/report", "text/plain", "message/delivery-status"]
    status = raw.decode()
    assert "Final-Recipient: rfc822; lab@lab.test" in status
    assert "Status: 5.1.1" in status and "Action: failed" in status
    text = next(p for p in msg.walk() if p.get_content_type() == "text/plain").get_content()
    assert "Empreinte [NAME]" in text  # the redacted subject, once the pipeline gives one
    assert "Votre message" in text and "Your message" in text


def test_reject_notice_lists_counts_and_points_to_mssante():
    raw = build_notice(
        hostname="portique.test",
        sender="dr@practice.test",
        kind="reject",
        original_message_id="<abc@practice.test>",
        arrival=1_700_000_000,
        recipients=["someone@gmail.test"],
        reason="patient data to a non-health recipient",
        finding_counts={"nir": 2, "name": 1},
    )
    text = email.message_from_bytes(raw, policy=email.policy.default).get_content()
    assert "nir : 2" in text and "name : 1" in text
    assert "utilisez votre messagerie MSSanté" in text


def test_stream_sealing_detects_truncation_reordering_and_moving(keyring):
    sealer = Sealer(keyring)
    writer = StreamSealer(sealer, b"spool:a")
    frames = [
        writer.seal_chunk(b"one"),
        writer.seal_chunk(b"two"),
        writer.seal_chunk(b"", final=True),
    ]
    blob = b"".join(frames)
    assert list(open_stream(sealer, io.BytesIO(blob), b"spool:a")) == [b"one", b"two", b""]
    for bad, aad in (
        (b"".join(frames[:2]), b"spool:a"),  # cut short
        (frames[1] + frames[0] + frames[2], b"spool:a"),  # reordered
        (blob, b"spool:b"),  # moved to another id
        (blob[:-1] + bytes([blob[-1] ^ 1]), b"spool:a"),  # tampered
    ):
        with pytest.raises(SealError):
            list(open_stream(sealer, io.BytesIO(bad), aad))


def test_benchmarks_run_on_tiny_input():
    spool = subprocess.run(
        [sys.executable, "load-tests/bench_spool.py", "--seconds", "0.2", "--concurrency", "1,4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "msgs/fsync" in spool.stdout
    relay = subprocess.run(
        [sys.executable, "load-tests/bench_relay.py", "--count", "5", "--connections", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "accepted:" in relay.stdout and "delivered:" in relay.stdout
    big = subprocess.run(
        [sys.executable, "load-tests/bench_relay.py", "--big", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "peak" in big.stdout


def _reference_wire(data: bytes) -> bytes:
    import re

    text = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return b"".join(
        b"." + line if line.startswith(b".") else line for line in text.splitlines(True)
    )


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b"xyz"]), max_size=40))
def test_relay_data_slices_are_crlf_and_dot_stuffed_across_slice_boundaries(parts):
    import connectors.relay as relay

    data = b"".join(parts)
    original = relay.DATA_SLICE
    relay.DATA_SLICE = 5  # force many slice boundaries
    try:
        wire = b"".join(relay.data_slices(data))
    finally:
        relay.DATA_SLICE = original
    assert wire == _reference_wire(data)


async def test_memory_budget_bounds_bytes_in_flight_and_lets_an_oversize_one_run_alone():
    import asyncio

    from gateway.queue import MemoryBudget

    budget = MemoryBudget(100)
    peak = 0
    running = 0

    async def job(size: int) -> None:
        nonlocal peak, running
        async with budget.hold(size):
            running += min(size, 100)
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= min(size, 100)

    await asyncio.gather(*(job(40) for _ in range(6)), job(500), *(job(1) for _ in range(5)))
    assert peak <= 100
    assert budget.used == 0


async def test_memory_budget_wakes_a_waiting_holder_when_room_is_released():
    import asyncio

    from gateway.queue import MemoryBudget

    budget = MemoryBudget(100)
    order: list[str] = []

    async def job(name: str, size: int, hold_for: float) -> None:
        async with budget.hold(size):
            order.append(name)
            await asyncio.sleep(hold_for)
        order.append(f"{name} done")

    first = asyncio.create_task(job("first", 70, 0.02))
    await asyncio.sleep(0)
    assert budget.used == 70
    waiting = asyncio.create_task(job("waiting", 50, 0))  # 120 > 100: waits for first
    small = asyncio.create_task(job("small", 20, 0))  # 90 <= 100: runs at once
    await asyncio.wait_for(asyncio.gather(first, waiting, small), 2)
    assert order.index("small") < order.index("first done") < order.index("waiting")
    assert budget.used == 0


async def test_memory_budget_gives_back_the_room_of_a_failed_or_cancelled_holder():
    import asyncio

    from gateway.queue import MemoryBudget

    budget = MemoryBudget(100)
    try:
        async with budget.hold(60):
            raise ValueError("processing failed")
    except ValueError:
        pass
    assert budget.used == 0

    async def hold_for_a_while(size: int) -> None:
        async with budget.hold(size):
            await asyncio.sleep(3600)

    holder = asyncio.create_task(hold_for_a_while(80))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold_for_a_while(50))  # waits for room
    await asyncio.sleep(0.01)
    waiter.cancel()  # cancelled while waiting: it never took any room
    holder.cancel()
    await asyncio.gather(holder, waiter, return_exceptions=True)
    assert budget.used == 0 and budget._waiting == 0
