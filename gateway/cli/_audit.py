"""Audit records written by CLI commands: who ran them (the local OS user) and what.

Safe beside a running gateway: the audit trail appends under BEGIN IMMEDIATE and
re-reads the chain tail inside the transaction, so two processes keep one chain.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from typing import Any

from crypto.keys import Keyring
from gateway.config import Config


def local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def record_cli_action(cfg: Config, keyring: Keyring, kind: str, fields: Mapping[str, Any]) -> int:
    """Append one record for a CLI action; returns its sequence number."""
    from gateway.audit import AuditTrail

    trail = AuditTrail.open(cfg.data_dir, keyring, cfg.audit)
    try:
        return trail.append(kind, fields, actor=local_user())
    finally:
        trail.close()
