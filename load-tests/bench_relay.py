"""Relay throughput: accepted and delivered msg/s for ~2 KB messages through Portique.

Starts `portique serve` as its own process (deliver route, relay connector, fsync on)
between this script's SMTP clients (aiosmtplib, persistent connections) and an aiosmtpd
sink in this process, both on loopback ephemeral ports. Prints:
- accepted msg/s: 250s received by the clients per second of sending;
- delivered msg/s: messages at the sink per second, from the first send to the last
  arrival (so it includes processing, queueing and relaying).

    .venv/bin/python load-tests/bench_relay.py [--count 2000] [--connections 16]
    .venv/bin/python load-tests/bench_relay.py --big 50     # peak RSS for one 50 MiB message
    .venv/bin/python load-tests/bench_relay.py --big 25 --parallel 20
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib
from aiosmtpd.smtp import SMTP

ROOT = Path(__file__).resolve().parent.parent
PORTIQUE = str(Path(sys.executable).parent / "portique")


def message(i: int) -> bytes:
    head = (
        f"From: dr@practice.test\r\nTo: lab@lab.test\r\nSubject: bench {i}\r\n"
        f"Message-ID: <bench-{i}@practice.test>\r\n\r\n"
    ).encode()
    return head + (b"y" * 76 + b"\r\n") * 25  # ~2 KB


class CountingSink:
    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.done = asyncio.Event()
        self.target = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.count += 1
        self.last = time.monotonic()
        if self.count >= self.target:
            self.done.set()
        return "250 OK"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def write_config(tmp: Path, port: int, sink_port: int, fsync: bool = True) -> Path:
    cfg = tmp / "portique.toml"
    cfg.write_text(
        f"""
data_dir = "data"
log_level = "warning"
[spool]
fsync = {"true" if fsync else "false"}
[smtp]
listen = "127.0.0.1:{port}"
[queue]
per_destination_concurrency = 8
[connectors.relay]
host = "127.0.0.1"
port = {sink_port}
tls = "none"
[[routes]]
name = "all"
match = ["*"]
action = "deliver"
connector = "relay"
[metrics]
enabled = false
[admin]
enabled = false
"""
    )
    return cfg


async def wait_port(port: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if proc.returncode is not None:
            raise SystemExit("portique serve exited early")
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit("portique serve did not start")


async def bench(count: int, connections: int, fsync: bool = True) -> None:
    loop = asyncio.get_running_loop()
    sink = CountingSink()
    sink.target = count
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink", loop=loop), "127.0.0.1", 0
    )
    sink_port = server.sockets[0].getsockname()[1]
    port = free_port()
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp_name:
        tmp = Path(tmp_name)
        proc = await asyncio.create_subprocess_exec(
            PORTIQUE,
            "serve",
            "-c",
            str(write_config(tmp, port, sink_port, fsync)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await wait_port(port, proc)
            accepted = 0
            numbers = iter(range(count))

            async def client() -> None:
                nonlocal accepted
                smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
                await smtp.connect()
                for i in numbers:
                    await smtp.sendmail("dr@practice.test", ["lab@lab.test"], message(i))
                    accepted += 1
                await smtp.quit()

            start = time.monotonic()
            await asyncio.gather(*(client() for _ in range(connections)))
            accept_s = time.monotonic() - start
            await asyncio.wait_for(sink.done.wait(), 300)
            deliver_s = sink.last - start
        finally:
            proc.terminate()
            await proc.wait()
            server.close()
    print(
        f"relay benchmark: {count} messages of {len(message(0))} B, {connections} connections,"
        f" spool fsync {'on' if fsync else 'OFF'}"
    )
    print(f"accepted:  {accepted / accept_s:8.0f} msg/s  ({accept_s:.2f} s)")
    print(f"delivered: {sink.count / deliver_s:8.0f} msg/s  ({deliver_s:.2f} s, at the sink)")


def peak_rss_mib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process, in MiB (Linux /proc)."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) // 1024
    return rss, hwm


async def bench_big(mib: int, parallel: int = 1) -> None:
    """`parallel` messages of `mib` MiB end to end at once; peak RSS of the gateway."""
    loop = asyncio.get_running_loop()
    sink = CountingSink()
    sink.target = parallel
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink", loop=loop, data_size_limit=None), "127.0.0.1", 0
    )
    sink_port = server.sockets[0].getsockname()[1]
    port = free_port()
    line = b"A" * 76 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * ((mib * 1024 * 1024 - 4096) // len(line))
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp_name:
        proc = await asyncio.create_subprocess_exec(
            PORTIQUE,
            "serve",
            "-c",
            str(write_config(Path(tmp_name), port, sink_port)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await wait_port(port, proc)
            baseline, _ = peak_rss_mib(proc.pid)
            start = time.monotonic()

            async def send_one() -> None:
                smtp = aiosmtplib.SMTP(
                    hostname="127.0.0.1", port=port, start_tls=False, timeout=600
                )
                await smtp.connect()
                await smtp.sendmail("dr@practice.test", ["lab@lab.test"], body)
                await smtp.quit()

            await asyncio.gather(*(send_one() for _ in range(parallel)))
            accepted = time.monotonic() - start
            await asyncio.wait_for(sink.done.wait(), 600)
            delivered = time.monotonic() - start
            _, peak = peak_rss_mib(proc.pid)
        finally:
            proc.terminate()
            await proc.wait()
            server.close()
    size = len(body) / 2**20
    print(
        f"{parallel} x {size:.0f} MiB at once: all accepted in {accepted:.1f} s,"
        f" all delivered in {delivered:.1f} s"
    )
    target = f" (target for one: < 4 x size + 100 = {4 * size + 100:.0f} MiB)"
    print(f"gateway RSS: baseline {baseline} MiB, peak {peak} MiB{target if parallel == 1 else ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument(
        "--no-spool-fsync", action="store_true", help="measure the cost of the spool fsync"
    )
    ap.add_argument(
        "--big", type=int, metavar="MIB", help="instead: MIB-sized message(s), peak RSS"
    )
    ap.add_argument("--parallel", type=int, default=1, help="with --big: how many at once")
    args = ap.parse_args()
    if args.big:
        asyncio.run(bench_big(args.big, args.parallel))
    else:
        asyncio.run(bench(args.count, args.connections, not args.no_spool_fsync))


if __name__ == "__main__":
    main()
