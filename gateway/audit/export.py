"""Audit exports for an incident report or a CNIL notification (JSON lines or CSV).

Trust boundary: the output goes to a person (or a spreadsheet). Records are already
PHI-free (patient addresses are masked when written), so the export is exactly what
the trail holds. CSV cells that a spreadsheet would run as a formula (leading `=`,
`+`, `-`, `@`, tab or CR) are prefixed with a quote (OWASP CSV injection advice).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import IO, Any

from gateway.audit.trail import AuditRecord, format_ts

CSV_COLUMNS = (
    "seq",
    "time_utc",
    "kind",
    "actor",
    "message_id",
    "sender",
    "recipients",
    "route",
    "action",
    "outcome",
    "findings",
    "reason",
    "fields_json",
    "hash",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def record_dict(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "ts": format_ts(record.ts),
        "kind": record.kind,
        "actor": record.actor,
        "fields": record.fields,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def write_jsonl(records: Iterable[AuditRecord], out: IO[str]) -> int:
    n = 0
    for record in records:
        out.write(json.dumps(record_dict(record), sort_keys=True, ensure_ascii=False) + "\n")
        n += 1
    return n


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        text = " ".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(records: Iterable[AuditRecord], out: IO[str]) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    n = 0
    for r in records:
        f = r.fields
        writer.writerow(
            [
                _cell(r.seq),
                _cell(format_ts(r.ts)),
                _cell(r.kind),
                _cell(r.actor),
                _cell(f.get("message_id")),
                _cell(f.get("mail_from")),
                _cell(f.get("recipients")),
                _cell(f.get("route")),
                _cell(f.get("action") or f.get("mode")),
                _cell(f.get("verdict") or f.get("status")),
                _cell(f.get("findings")),
                _cell(f.get("reason") or f.get("detail")),
                _cell(f),
                _cell(r.hash),
            ]
        )
        n += 1
    return n
