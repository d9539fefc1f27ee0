"""`portique keys init|rotate-data|rotate-pseudonym`: key files in data_dir/keys."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("keys", help="create or rotate keys")
    ks = p.add_subparsers(dest="keys_command", required=True)
    ks.add_parser("init", parents=[common], help="create missing keys").set_defaults(func=run_init)
    ks.add_parser(
        "rotate-data", parents=[common], help="new encryption key for data at rest"
    ).set_defaults(func=run_rotate_data)
    r = ks.add_parser(
        "rotate-pseudonym",
        parents=[common],
        help="new pseudonym key: every lab's tokens change (explicit, audited)",
    )
    r.add_argument("--yes-break-lab-linkage", action="store_true", required=True)
    r.set_defaults(func=run_rotate_pseudonym)


def run_init(args: argparse.Namespace) -> int:
    from crypto.keys import init_keys
    from gateway.config import load_config

    cfg = load_config(args.config)
    created = init_keys(cfg.data_dir)
    print("created: " + ", ".join(created) if created else "all keys already exist")
    return 0


def run_rotate_data(args: argparse.Namespace) -> int:
    from crypto.keys import load_keys, rotate_data_key
    from gateway.cli._audit import record_cli_action
    from gateway.config import load_config

    cfg = load_config(args.config)
    version = rotate_data_key(cfg.data_dir)
    record_cli_action(
        cfg, load_keys(cfg.data_dir), "key_rotation", {"key": "data", "version": version}
    )
    print(f"data key version {version} now encrypts new data")
    return 0


def run_rotate_pseudonym(args: argparse.Namespace) -> int:
    from crypto.keys import load_keys, rotate_pseudonym_key
    from gateway.cli._audit import record_cli_action
    from gateway.config import load_config

    cfg = load_config(args.config)
    rotate_pseudonym_key(cfg.data_dir)
    record_cli_action(cfg, load_keys(cfg.data_dir), "key_rotation", {"key": "pseudonym"})
    print("pseudonym key rotated; labs will see new tokens for every patient")
    return 0
