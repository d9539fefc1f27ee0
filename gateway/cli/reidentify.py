"""`portique reidentify TOKEN --reason "…"`: show who a token stands for, and audit it.

The one command-line path that prints an identity. The audit record ("reidentified")
is written first, and holds the token, the audience, the reason and the local OS
user, never the identity. Without a reason, or if the audit trail cannot be written,
nothing is shown.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "reidentify", parents=[common], help="show the identity behind a token (audited)"
    )
    p.add_argument("token", metavar="TOKEN")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.set_defaults(func=run_reidentify)


def run_reidentify(args: argparse.Namespace) -> int:
    import sys

    from crypto.keys import load_keys
    from gateway.audit import AuditTrail
    from gateway.cli._audit import local_user
    from gateway.config import load_config
    from gateway.vault import Vault

    reason = " ".join(args.reason.split())
    if not reason:
        print("portique: --reason must not be empty", file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    keyring = load_keys(cfg.data_dir)
    token = args.token.strip().upper()
    with Vault.open(cfg.data_dir, keyring) as vault:
        mappings = vault.lookup(token)
    if not mappings:
        print("portique: no such token in the vault", file=sys.stderr)
        return 1
    actor = local_user()
    trail = AuditTrail.open(cfg.data_dir, keyring, cfg.audit)
    try:
        for audience, _identity in mappings:
            trail.append(
                "reidentified",
                {"token": token, "audience": audience, "reason": reason},
                actor=actor,
            )
    finally:
        trail.close()
    for audience, identity in mappings:
        print(f"{token}\t{audience}\t{identity}")
    return 0
