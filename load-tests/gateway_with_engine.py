"""Run Portique's service with the scan engine and the vault wired in, for load tests.

Temporary stand-in for `portique serve -c FILE` while the serve command still builds
`Service(cfg)` without a scan engine (every transforming copy is then held, fail closed).
It does what serve is expected to do, nothing more: load the keyring and the imported
roster, compile the engine once, open the vault, and run `gateway.service.Service` until
SIGTERM/SIGINT. Once `portique serve` wires the engine itself, compare_postfix.sh should
use serve again and this file can go.

Trust boundary: same as serve (reads keys and the sealed roster from data_dir; prints
only the listening address and counts, never a patient value).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any


async def run(cfg: Any) -> int:
    from crypto.keys import load_keys
    from gateway.roster import load_roster
    from gateway.scan import build_engine
    from gateway.service import Service
    from gateway.vault import Vault

    keyring = load_keys(cfg.data_dir)
    patients = load_roster(cfg.data_dir, keyring)
    engine = build_engine(
        patients=patients,
        practice=cfg.practice,
        digest_key=keyring.digest_key,
        pseudonym_key=keyring.pseudonym_key,
        engine=cfg.scan.engine,
    )
    vault = Vault.open(cfg.data_dir, keyring)
    service = Service(cfg, engine=engine, vault=vault, keyring=keyring)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    print(
        f"portique (load-tests harness, scan engine with {len(patients)} roster patients): "
        f"listening on {service.smtp.host}:{service.smtp_port}",  # type: ignore[union-attr]
        flush=True,
    )
    await stop.wait()
    await service.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", required=True)
    args = ap.parse_args(argv)
    from gateway.config import load_config
    from gateway.logging import configure_logging

    cfg = load_config(args.config)
    configure_logging(cfg.log_level)
    runner: Any = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    return int(runner(run(cfg)))


if __name__ == "__main__":
    sys.exit(main())
