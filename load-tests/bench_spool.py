"""Spool group-commit benchmark: messages per fsync pass and msg/s versus concurrency.

Each simulated session writes one sealed ~2 KB message and waits for its durable
commit, in a loop. With group commit, concurrent sessions share a directory fsync
(and the journal commit behind their fdatasyncs), so msgs/batch rises with
concurrency while each message is still durable before it is acknowledged.

    .venv/bin/python load-tests/bench_spool.py [--seconds 3] [--concurrency 1,8,32,64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crypto.aead import Sealer  # noqa: E402
from crypto.keys import init_keys, load_keys  # noqa: E402
from gateway.config import SpoolConfig  # noqa: E402
from gateway.spool import Envelope, Spool  # noqa: E402

BODY = (b"Subject: bench\r\n\r\n" + b"x" * 76 + b"\r\n") * 26  # ~2 KB


async def run(
    concurrency: int, seconds: float, window_ms: float, directory: Path
) -> dict[str, float]:
    init_keys(directory)
    spool = Spool(
        directory, Sealer(load_keys(directory)), SpoolConfig(group_commit_window_ms=window_ms)
    )
    await spool.start()
    env = Envelope(mail_from="a@practice.test", recipients=("b@lab.test",))
    done = 0
    deadline = time.monotonic() + seconds

    async def session() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            w = spool.open_writer(env)
            w.write(BODY)
            await w.commit()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(session() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    await spool.stop()
    return {
        "msgs": done,
        "msg_per_s": done / elapsed,
        "batches": spool.stats.batches,
        "msgs_per_fsync": spool.stats.messages_per_batch,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--window-ms", type=float, default=2.0)
    args = ap.parse_args()
    print(f"spool group commit, ~{len(BODY)} B messages, window {args.window_ms} ms, fsync on")
    print(f"{'sessions':>8} {'msg/s':>10} {'msgs/fsync':>11} {'fsync passes':>13}")
    for n in (int(x) for x in args.concurrency.split(",")):
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
            r = asyncio.run(run(n, args.seconds, args.window_ms, Path(tmp)))
        print(f"{n:>8} {r['msg_per_s']:>10.0f} {r['msgs_per_fsync']:>11.1f} {r['batches']:>13.0f}")


if __name__ == "__main__":
    main()
