"""`portique roster import FILE.csv | forget (--name "NOM Prénom" --birth-date D | --token T)`.

Import replaces the stored (encrypted) roster; a running gateway watches that file and
compiles a new engine within seconds (gateway/runtime.py), without a restart. Forget erases one patient from the roster and the vault (right to
erasure). Output gives counts only, never a name.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("roster", help="import or edit the patient roster")
    rs = p.add_subparsers(dest="roster_command", required=True)
    imp = rs.add_parser("import", parents=[common], help="replace the roster with a CSV file")
    imp.add_argument("file", metavar="FILE.csv")
    imp.set_defaults(func=run_import)
    forget = rs.add_parser(
        "forget", parents=[common], help="erase a patient from the roster and the vault"
    )
    forget.add_argument("--name", metavar='"NOM Prénom"')
    forget.add_argument("--birth-date", metavar="YYYY-MM-DD")
    forget.add_argument("--token", metavar="PAT-XXXXX-XXXXX")
    forget.set_defaults(func=run_forget)


def run_import(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from crypto.keys import load_keys
    from gateway.config import load_config
    from gateway.roster import import_roster

    cfg = load_config(args.config)
    started = time.perf_counter()
    count = import_roster(cfg.data_dir, load_keys(cfg.data_dir), Path(args.file))
    print(f"roster imported: {count} patients in {time.perf_counter() - started:.2f} s")
    _tell_about_running_gateway(cfg.data_dir)
    return 0


def _tell_about_running_gateway(data_dir: Path) -> None:
    """A running gateway watches the roster file (gateway/runtime.py) and recompiles its
    engine on its own; say so, so the operator knows no restart is needed."""
    from gateway.control import ControlError, send_command

    try:
        send_command(data_dir / "control.sock", "ping")
    except ControlError:
        pass  # it answered (with an error): it is running
    except (OSError, ValueError):
        return  # no gateway listening
    print("the running gateway loads the new roster within a few seconds (no restart needed)")


def run_forget(args: argparse.Namespace) -> int:
    import sys
    from datetime import date

    from crypto.keys import load_keys
    from gateway.config import load_config
    from gateway.roster import RosterError, find_patient_keys, forget_patient, load_roster
    from gateway.vault import Vault

    if bool(args.token) == bool(args.name):
        print("portique: give either --token, or --name with --birth-date", file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    keyring = load_keys(cfg.data_dir)
    if args.token:
        with Vault.open(cfg.data_dir, keyring) as vault:
            patient = vault.patient_for_token(args.token)
        if patient is None:
            print("portique: no such token in the vault", file=sys.stderr)
            return 1
        keys = {patient}
    else:
        if not args.birth_date:
            print("portique: --name needs --birth-date", file=sys.stderr)
            return 2
        try:
            born = date.fromisoformat(args.birth_date)
        except ValueError as exc:
            raise RosterError("--birth-date must be YYYY-MM-DD") from exc
        keys = find_patient_keys(
            load_roster(cfg.data_dir, keyring),
            args.name,
            born,
            keyring.pseudonym_key,
            keyring.digest_key,
        )
    roster_rows, vault_rows = forget_patient(cfg.data_dir, keyring, keys)
    print(f"forgotten: {roster_rows} roster entr(y/ies), {vault_rows} vault mapping(s)")
    if roster_rows:
        _tell_about_running_gateway(cfg.data_dir)
    return 0 if roster_rows or vault_rows else 1
