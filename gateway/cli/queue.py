"""`portique queue list|show ID|retry ID|delete ID`: the delivery queue, for the operator.

Talks to the running gateway through its control socket, or works on data_dir
directly when no gateway runs.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("queue", help="inspect and act on the delivery queue")
    qs = p.add_subparsers(dest="queue_command", required=True)
    lst = qs.add_parser("list", parents=[common], help="list queued deliveries")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=run_queue, cmd="queue.list")
    for name, help_text in (
        ("show", "show one entry"),
        ("retry", "retry one entry now"),
        ("delete", "delete one entry (no bounce)"),
    ):
        sp = qs.add_parser(name, parents=[common], help=help_text)
        sp.add_argument("id")
        sp.set_defaults(func=run_queue, cmd=f"queue.{name}")


def run_queue(args: argparse.Namespace) -> int:
    import json
    import time

    from gateway.config import load_config
    from gateway.control import run_command

    cfg = load_config(args.config)
    cmd_args = {"id": args.id} if hasattr(args, "id") else {}
    result = run_command(cfg.data_dir, args.cmd, cmd_args)
    if args.cmd == "queue.list":
        if getattr(args, "json", False):
            print(json.dumps(result, indent=2))
            return 0
        if not result:
            print("queue is empty")
        for e in result:
            due = max(0.0, e["next_attempt"] - time.time())
            print(
                f"{e['id']}  {e['kind']:7}  {e['connector']:10}  attempts={e['attempts']}"
                f"  next in {due:.0f}s  {len(e['recipients'])} rcpt  {e['last_error']}"
            )
        return 0
    if args.cmd == "queue.show":
        if result is None:
            print(f"no queue entry {args.id}")
            return 1
        print(json.dumps(result, indent=2))
        return 0
    if not result:
        print(f"no queue entry {args.id}")
        return 1
    print("ok")
    return 0
