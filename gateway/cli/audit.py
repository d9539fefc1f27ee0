"""`portique audit verify|export|export-checkpoints|prune|checkpoint|status`.

Trust boundary: the operator runs these on the gateway; the audit database they read
may have been tampered with, which is exactly what `verify` reports.

Exit status: 0 on success; `verify` exits 1 when the trail does not verify, naming the
first bad record; 2 on any other Portique error (missing keys, no trail, bad dates).
`verify`, `export`, `export-checkpoints` and `status` open the trail read-only, so they
are safe while the gateway runs; `prune` and `checkpoint` write to it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from gateway.errors import PortiqueError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("audit", help="verify, export and prune the audit trail")
    cmds = p.add_subparsers(dest="audit_command", required=True)

    v = cmds.add_parser(
        "verify", parents=[common], help="check the hash chain, MACs and signed checkpoints"
    )
    v.add_argument(
        "--against",
        metavar="FILE",
        type=Path,
        help="also check against checkpoints exported earlier (catches a trail rewritten"
        " and re-signed on this machine, and a truncated tail)",
    )
    v.set_defaults(func=run_verify)

    e = cmds.add_parser(
        "export", parents=[common], help="records for an incident report or a CNIL notification"
    )
    e.add_argument(
        "--since", metavar="DATE", help="ISO date or time, UTC unless an offset is given"
    )
    e.add_argument("--until", metavar="DATE", help="ISO date or time (exclusive)")
    e.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    e.add_argument("--out", metavar="FILE", type=Path, help="default: standard output")
    e.set_defaults(func=run_export)

    c = cmds.add_parser(
        "export-checkpoints",
        parents=[common],
        help="write every signed checkpoint (JSON lines) to keep off the box",
    )
    c.add_argument("--out", metavar="FILE", type=Path, help="default: standard output")
    c.set_defaults(func=run_export_checkpoints)

    pr = cmds.add_parser(
        "prune", parents=[common], help="remove old records (default: audit.retention_days)"
    )
    when = pr.add_mutually_exclusive_group()
    when.add_argument("--before", metavar="DATE", help="remove records older than this date")
    when.add_argument("--older-than-days", metavar="N", type=int)
    pr.set_defaults(func=run_prune)

    cp = cmds.add_parser("checkpoint", parents=[common], help="sign a checkpoint now")
    cp.set_defaults(func=run_checkpoint)

    st = cmds.add_parser("status", parents=[common], help="record count, head and checkpoints")
    st.set_defaults(func=run_status)


def parse_when(text: str) -> datetime:
    """`2026-11-01` or `2026-11-01T08:00` (UTC) or with an explicit offset."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise PortiqueError(f"not an ISO date or time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _open(args: argparse.Namespace, *, readonly: bool) -> Any:
    from crypto.keys import load_keys
    from gateway.audit import AuditTrail
    from gateway.config import load_config

    cfg = load_config(args.config)
    keyring = load_keys(cfg.data_dir)
    if readonly:
        return AuditTrail.open_readonly(cfg.data_dir, keyring, cfg.audit)
    return AuditTrail.open(cfg.data_dir, keyring, cfg.audit)


def run_verify(args: argparse.Namespace) -> int:
    trail = _open(args, readonly=True)
    try:
        result = trail.verify(against=args.against)
    finally:
        trail.close()
    if result.ok:
        print(
            f"audit trail OK: {result.reason}; last checkpoint at record {result.last_checkpoint}"
        )
        return 0
    where = f"first bad record: {result.first_bad_record}" if result.first_bad_record else ""
    print(f"audit trail DOES NOT VERIFY: {result.reason}", file=sys.stderr)
    if where:
        print(where, file=sys.stderr)
    return 1


def _output(path: Path | None) -> IO[str]:
    if path is None:
        return sys.stdout
    return path.open("w", encoding="utf-8", newline="")


def run_export(args: argparse.Namespace) -> int:
    from gateway.audit.export import write_csv, write_jsonl

    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    trail = _open(args, readonly=True)
    out = _output(args.out)
    try:
        records = trail.iter_records(since=since, until=until)
        n = write_csv(records, out) if args.format == "csv" else write_jsonl(records, out)
    finally:
        if out is not sys.stdout:
            out.close()
        trail.close()
    if args.out is not None:
        print(f"{n} records written to {args.out}")
    return 0


def run_export_checkpoints(args: argparse.Namespace) -> int:
    import json

    trail = _open(args, readonly=True)
    try:
        cps = trail.checkpoints()
    finally:
        trail.close()
    out = _output(args.out)
    try:
        for cp in cps:
            out.write(json.dumps(cp.export(), sort_keys=True) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out is not None:
        print(f"{len(cps)} checkpoints written to {args.out}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    trail = _open(args, readonly=False)
    try:
        if args.before:
            removed = trail.prune(parse_when(args.before))
        elif args.older_than_days is not None:
            if args.older_than_days < 0:
                raise PortiqueError("--older-than-days must be 0 or more")
            removed = trail.prune(datetime.now(UTC) - timedelta(days=args.older_than_days))
        else:
            removed = trail.apply_retention()
        status = trail.status()
    finally:
        trail.close()
    print(f"{removed} records pruned; the trail now starts after record {status.pruned_through}")
    return 0


def run_checkpoint(args: argparse.Namespace) -> int:
    trail = _open(args, readonly=False)
    try:
        trail.checkpoint()
        status = trail.status()
    finally:
        trail.close()
    print(f"checkpoint signed at record {status.last_seq}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    trail = _open(args, readonly=True)
    try:
        s = trail.status()
        key = trail.public_key
    finally:
        trail.close()
    print(f"records: {s.records} (last {s.last_seq}, pruned through {s.pruned_through})")
    print(f"last checkpoint: record {s.last_checkpoint_seq} at {s.last_checkpoint_at}")
    print(f"chain: {'ok' if s.ok else s.reason}")
    print(f"checkpoint signing key (Ed25519, base64): {key}")
    return 0
