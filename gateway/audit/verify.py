"""Verification of the audit trail: the chain, the MACs, the signed checkpoints.

Trust boundary: everything read here (the SQLite file, an exported checkpoint file)
is untrusted; only the public key derived from the keyring and the MAC key are trusted.
Bad input never raises: it yields a failed VerifyResult naming the first bad record.

What each kind of tampering looks like:
- edited record: its content no longer hashes to its stored hash (or, if the hash was
  recomputed, the MAC no longer matches);
- deleted record: a gap in the record numbers (or, if renumbered, hash mismatches);
- inserted record: its MAC is wrong (only the gateway holds the MAC key);
- reordered records: content does not hash to the stored hash at that number;
- truncated tail: a local checkpoint names a record that no longer exists; a tail
  truncated together with its checkpoints is caught by `--against` an exported file;
- rewritten and re-signed with the gateway's own keys: exported checkpoints (kept off
  the box) no longer match the hashes at their record numbers.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from crypto.signing import check_record_mac, verify_signature
from gateway.audit.trail import GENESIS_HASH, CheckpointKind, VerifyResult, record_hash

# Rows per round trip: bounds memory on large trails (about 1 MB per batch).
_BATCH_ROWS = 1000
# An exported checkpoint file larger than this is refused: one checkpoint line is
# ~300 bytes, so 64 MiB is ~200,000 checkpoints, decades at one per 1000 records.
MAX_EXPORT_FILE_BYTES = 64 * 1024 * 1024


class _Bad(Exception):
    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


@dataclass
class _Anchor:
    """A signed (seq, hash) claim, local or exported."""

    seq: int
    hash: str
    kind: str
    exported: bool


def verify_trail(
    conn: sqlite3.Connection,
    public_key: Ed25519PublicKey,
    mac_key: bytes,
    against: Path | None = None,
    *,
    through: int | None = None,
) -> VerifyResult:
    """Verify the trail on `conn`; with `through`, only the records up to that number
    (used before pruning them, so that a damaged prefix is never signed as good)."""
    state = _State()
    try:
        local = _load_local_checkpoints(conn, public_key)
        state.checkpoints_checked = len(local)
        state.last_checkpoint = max((a.seq for a in local), default=None)
        exported = _load_exported(against, public_key) if against is not None else []
        state.exported_checked = len(exported)
        _walk(conn, mac_key, local, exported, state, through)
    except _Bad as bad:
        return VerifyResult(
            ok=False,
            first_bad_record=bad.seq,
            reason=bad.reason,
            records_checked=state.records,
            last_checkpoint=state.last_checkpoint,
            checkpoints_checked=state.checkpoints_checked,
            exported_checkpoints_checked=state.exported_checked,
        )
    return VerifyResult(
        ok=True,
        first_bad_record=None,
        reason=f"ok: {state.records} records, {state.checkpoints_checked} checkpoints"
        + (f", {state.exported_checked} exported checkpoints" if against is not None else ""),
        records_checked=state.records,
        last_checkpoint=state.last_checkpoint,
        checkpoints_checked=state.checkpoints_checked,
        exported_checkpoints_checked=state.exported_checked,
        last_seq=state.last_seq,
        last_hash=state.last_hash,
    )


class _State:
    def __init__(self) -> None:
        self.records = 0
        self.checkpoints_checked = 0
        self.exported_checked = 0
        self.last_checkpoint: int | None = None
        self.last_seq = 0
        self.last_hash = GENESIS_HASH


def _anchor_from(
    data: Any, signature: Any, public_key: Ed25519PublicKey, where: str, exported: bool
) -> _Anchor:
    if not isinstance(data, dict) or not isinstance(signature, str):
        raise _Bad(None, f"{where}: not a checkpoint")
    seq = data.get("seq")
    digest = data.get("hash")
    kind = data.get("kind")
    if not isinstance(seq, int) or not isinstance(digest, str) or not isinstance(kind, str):
        raise _Bad(None, f"{where}: not a checkpoint")
    if data.get("type") != "portique-audit-checkpoint":
        raise _Bad(seq, f"{where}: not a Portique audit checkpoint")
    if not verify_signature(public_key, data, signature):
        raise _Bad(
            seq,
            f"{where} (record {seq}): signature does not verify with this gateway's audit key",
        )
    return _Anchor(seq, digest, kind, exported)


def _load_local_checkpoints(
    conn: sqlite3.Connection, public_key: Ed25519PublicKey
) -> list[_Anchor]:
    try:
        rows = conn.execute(
            "SELECT id, seq, kind, payload, signature FROM checkpoints ORDER BY id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise _Bad(None, f"checkpoints unreadable: {type(exc).__name__}") from exc
    anchors = []
    for row_id, seq, kind, payload, signature in rows:
        where = f"checkpoint {row_id}"
        try:
            data = json.loads(payload)
        except (TypeError, ValueError) as exc:
            raise _Bad(seq if isinstance(seq, int) else None, f"{where}: unreadable") from exc
        anchor = _anchor_from(data, signature, public_key, where, exported=False)
        if anchor.seq != seq or anchor.kind != kind:
            raise _Bad(anchor.seq, f"{where}: columns differ from the signed payload")
        anchors.append(anchor)
    return anchors


def _load_exported(path: Path, public_key: Ed25519PublicKey) -> list[_Anchor]:
    try:
        size = path.stat().st_size
        if size > MAX_EXPORT_FILE_BYTES:
            raise _Bad(None, f"{path.name}: larger than {MAX_EXPORT_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Bad(None, f"{path.name}: cannot read exported checkpoints") from exc
    anchors = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"exported checkpoint on line {number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise _Bad(None, f"{where}: not JSON") from exc
        if not isinstance(data, dict):
            raise _Bad(None, f"{where}: not a checkpoint")
        signature = data.pop("signature", None)
        anchors.append(_anchor_from(data, signature, public_key, where, exported=True))
    if not anchors:
        raise _Bad(None, f"{path.name}: no checkpoints in the file")
    return anchors


def _rows(conn: sqlite3.Connection) -> Iterator[tuple[Any, ...]]:
    after = -1
    while True:
        try:
            rows = conn.execute(
                "SELECT seq, ts, kind, actor, fields, prev_hash, hash, mac FROM records"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, _BATCH_ROWS),
            ).fetchall()
        except sqlite3.Error as exc:
            raise _Bad(None, f"records unreadable: {type(exc).__name__}") from exc
        if not rows:
            return
        yield from rows
        after = rows[-1][0]


def _walk(
    conn: sqlite3.Connection,
    mac_key: bytes,
    local: list[_Anchor],
    exported: list[_Anchor],
    state: _State,
    through: int | None = None,
) -> None:
    pruned = [a for a in local if a.kind == str(CheckpointKind.PRUNED)]
    start = max(pruned, key=lambda a: a.seq) if pruned else None
    expected_seq = (start.seq + 1) if start else 1
    prev = start.hash if start else GENESIS_HASH
    by_seq: dict[int, list[_Anchor]] = {}
    for anchor in local + exported:
        if anchor.seq >= expected_seq:
            by_seq.setdefault(anchor.seq, []).append(anchor)
        elif start and anchor.seq == start.seq and anchor.hash != start.hash:
            raise _Bad(
                start.seq + 1,
                f"checkpoint at record {anchor.seq} disagrees with the pruning checkpoint",
            )
    # The last record number proven good by a signed anchor: a rewrite detected at a
    # later anchor lies after it.
    last_anchor = expected_seq - 1

    for seq, ts, kind, actor, fields, prev_hash, digest, mac in _rows(conn):
        if through is not None and isinstance(seq, int) and seq > through:
            break
        if not isinstance(seq, int) or seq < expected_seq:
            if start is not None and isinstance(seq, int):
                raise _Bad(seq, f"record {seq} is older than the pruned prefix (inserted)")
            raise _Bad(seq, f"record {seq}: invalid record number")
        if seq > expected_seq:
            gap = (
                f"record {expected_seq} is missing"
                if seq == expected_seq + 1
                else f"records {expected_seq}..{seq - 1} are missing"
            )
            raise _Bad(expected_seq, f"{gap} (deleted)")
        try:
            recomputed = record_hash(seq, str(ts), str(kind), str(actor), json.loads(fields), prev)
            own = record_hash(seq, str(ts), str(kind), str(actor), json.loads(fields), prev_hash)
        except (TypeError, ValueError):
            raise _Bad(seq, f"record {seq} is unreadable (edited)") from None
        if own != digest:
            raise _Bad(seq, f"record {seq} was modified: its content does not match its hash")
        if not isinstance(mac, str) or not check_record_mac(mac_key, str(digest), mac):
            raise _Bad(
                seq,
                f"record {seq} was not written by this gateway: its MAC does not match"
                " (inserted or rewritten)",
            )
        if prev_hash != prev or recomputed != digest:
            raise _Bad(
                seq,
                f"record {seq} does not follow record {seq - 1} in the chain"
                " (a record was inserted, deleted or reordered)",
            )
        for anchor in by_seq.get(seq, ()):
            if anchor.hash != digest:
                source = "an exported checkpoint" if anchor.exported else "a local checkpoint"
                raise _Bad(
                    last_anchor + 1,
                    f"records {last_anchor + 1}..{seq} were rewritten: {source} signed a"
                    f" different hash for record {seq}",
                )
        if seq in by_seq:
            last_anchor = seq
        prev = digest
        expected_seq += 1
        state.records += 1

    last = expected_seq - 1
    state.last_seq, state.last_hash = last, prev
    if through is not None:
        if last < through:
            raise _Bad(last + 1, f"record {last + 1} is missing")
        return
    beyond = [a for a in local + exported if a.seq > last]
    if beyond:
        anchor = max(beyond, key=lambda a: a.seq)
        source = "an exported checkpoint" if anchor.exported else "a local checkpoint"
        raise _Bad(
            last + 1,
            f"records {last + 1}..{anchor.seq} are missing (truncated): {source}"
            f" signed record {anchor.seq}",
        )
