"""`portique check-config`: validate a configuration without starting anything."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("check-config", parents=[common], help="validate the configuration")
    p.set_defaults(func=run_check_config)


def run_check_config(args: argparse.Namespace) -> int:
    from gateway.config import load_config

    cfg = load_config(args.config)
    print(f"configuration OK: {cfg.source}")
    routes = cfg.effective_routes()
    print(f"  data_dir: {cfg.data_dir}")
    print(f"  smtp: {cfg.smtp.listen}, allowed networks: {', '.join(cfg.smtp.allowed_networks)}")
    for r in routes:
        print(f"  route {r.name}: {', '.join(r.match)} -> {r.action} via {r.connector or '-'}")
    return 0
