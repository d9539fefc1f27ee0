"""`portique scan [--roster CSV] [--route-action pseudonymise|redact] [--recipient ADDR]
[--report FILE.json] [--out DIR] PATH...`: run the message pipeline on files, offline.

A PATH is an .eml message, a bare file of a handled type (STL, PLY, OBJ/MTL, DICOM, PDF,
DOCX/XLSX/ODT, XML, ZIP, JPEG/PNG), a text file, or a folder of them (walked
recursively, in name order). .eml files go through `process_message`; every other file is
wrapped as the single part of a message, so it gets exactly the treatment an attachment
gets (text files are a text/plain part, scanned by the engine).

Output: with --out, each transformed file is written under the same name into DIR; with a
single file and no --out, the transformed bytes go to stdout; otherwise one summary line
per file. Held or rejected files are never written; their reason goes to stderr. The
report (JSON) lists per file the verdict, reason and findings as type, span and keyed
hash; it never holds an identifier's value.

Keys: the data_dir keyring when there is one (stable tokens), else throw-away keys (the
tokens then differ on every run; a notice says so). Roster: --roster CSV, else the
stored roster when the keyring exists. Exit status: 0 if every file was passed or
rewritten, 1 if any was held or rejected, 2 on errors.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".csv", ".md", ".text")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "scan", parents=[common], help="find and transform patient identifiers in files"
    )
    p.add_argument("--roster", metavar="CSV", help="patient roster CSV (nom;prenom;date_naissance)")
    p.add_argument(
        "--route-action",
        choices=("pseudonymise", "redact"),
        default="pseudonymise",
        help="transformation to apply (default: pseudonymise)",
    )
    p.add_argument(
        "--recipient",
        metavar="ADDR",
        default="scan@portique.invalid",
        help="recipient whose domain selects the pseudonym audience",
    )
    p.add_argument("--report", metavar="FILE.json", help="write findings per file as JSON")
    p.add_argument("--out", metavar="DIR", help="write transformed files into DIR")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=run_scan)


def expand_paths(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            from gateway.errors import PortiqueError

            raise PortiqueError(f"no such file or folder: {raw}")
    return out


def wrap_file(name: str, data: bytes) -> bytes:
    """A one-part message carrying `data` as an attachment (or text part for text)."""
    from gateway.files.text import decode_text

    safe_name = name.replace('"', "_").replace("\r", "_").replace("\n", "_")
    decoded = decode_text(data) if name.lower().endswith(TEXT_SUFFIXES) else None
    if decoded is not None:
        charset = "utf-8" if decoded[1].startswith("utf-8") else decoded[1]
        ctype = f"text/plain; charset={charset}"
    else:
        ctype = "application/octet-stream"
    head = (
        f"MIME-Version: 1.0\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: binary\r\n"
        f'Content-Disposition: attachment; filename="{safe_name}"\r\n\r\n'
    )
    return head.encode("utf-8") + data


def unwrap_file(message: bytes) -> bytes:
    """The payload of a message built by `wrap_file` (after rewriting)."""
    from gateway.config import FilesConfig
    from gateway.pipeline.message import decode_body
    from gateway.pipeline.mime import parse_message

    root, _ = parse_message(message, FilesConfig())
    cte = str(root.message.get("Content-Transfer-Encoding", "binary")).strip().lower()
    return decode_body(message[root.header_end : root.end], cte)


def _keys(cfg: Any) -> tuple[bytes, bytes, Any]:
    import secrets
    import sys

    from crypto.keys import keys_dir, load_keys

    if keys_dir(cfg.data_dir).is_dir():
        keyring = load_keys(cfg.data_dir)
        return keyring.digest_key, keyring.pseudonym_key, keyring
    print("portique scan: no keyring in data_dir; tokens are not stable", file=sys.stderr)
    return secrets.token_bytes(32), secrets.token_bytes(32), None


def run_scan(args: argparse.Namespace) -> int:
    import json
    import sys

    from gateway.config import load_config
    from gateway.pipeline import RouteCopy, process_message
    from gateway.roster import ROSTER_FILE, load_roster, parse_roster_csv
    from gateway.routes import domain_of
    from gateway.scan import build_engine
    from gateway.verdicts import Action

    cfg = load_config(args.config)
    digest_key, pseudonym_key, keyring = _keys(cfg)
    if args.roster:
        patients = parse_roster_csv(Path(args.roster).read_bytes(), pseudonym_key)
    elif keyring is not None and (cfg.data_dir / ROSTER_FILE).exists():
        patients = load_roster(cfg.data_dir, keyring)
    else:
        patients = []
    engine = build_engine(
        patients=patients,
        practice=cfg.practice,
        digest_key=digest_key,
        pseudonym_key=pseudonym_key,
        engine=cfg.scan.engine,
    )
    action = Action(args.route_action)
    copy = RouteCopy(
        route="scan",
        action=action,
        connector="",
        recipients=(args.recipient,),
        audience=domain_of(args.recipient) if action == Action.PSEUDONYMISE else "",
    )
    files = expand_paths(args.paths)
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    to_stdout = out_dir is None and len(files) == 1
    report: list[dict[str, Any]] = []
    status = 0
    for path in files:
        data = path.read_bytes()
        is_message = path.suffix.lower() == ".eml"
        raw = data if is_message else wrap_file(path.name, data)
        outcome = process_message(
            raw, [copy], engine, limits=cfg.files, budget_seconds=cfg.scan.message_budget
        ).copies[0]
        entry: dict[str, Any] = {
            "path": str(path),
            "verdict": outcome.verdict.value,
            "reason": outcome.reason,
            "counts": outcome.counts(),
            "findings": [
                {
                    "kind": f.kind.value,
                    "field": f.field,
                    "start": f.start,
                    "end": f.end,
                    "digest": f.digest,
                }
                for f in outcome.findings
            ],
        }
        report.append(entry)
        if outcome.data is None:
            status = 1
            print(f"{path}: {outcome.verdict.value}: {outcome.reason}", file=sys.stderr)
            continue
        result = outcome.data if is_message else unwrap_file(outcome.data)
        if out_dir is not None:
            (out_dir / path.name).write_bytes(result)
        if to_stdout:
            sys.stdout.buffer.write(result)
            sys.stdout.buffer.flush()
        else:
            counts = ", ".join(f"{k} x{n}" for k, n in sorted(outcome.counts().items()))
            print(f"{path}: {outcome.verdict.value}" + (f" ({counts})" if counts else ""))
    if args.report:
        Path(args.report).write_text(json.dumps({"files": report}, indent=2) + "\n")
    return status
