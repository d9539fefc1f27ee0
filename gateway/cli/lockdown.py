"""`portique lockdown on|off|status`: pause or resume all outbound deliveries.

While locked down, mail is still accepted and spooled; nothing leaves. The state is
persisted in data_dir and survives restarts.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("lockdown", parents=[common], help="pause or resume all deliveries")
    p.add_argument("state", choices=("on", "off", "status"))
    p.set_defaults(func=run_lockdown)


def run_lockdown(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.control import run_command

    cfg = load_config(args.config)
    on = run_command(cfg.data_dir, f"lockdown.{args.state}", {"user": "cli"})
    print("lockdown: on (deliveries paused)" if on else "lockdown: off")
    return 0
