"""The audit trail: every decision and admin action, hash-chained and signed.

Trust boundary: records come from the service and the console (trusted code, but
their fields may carry addresses); the database file and exported checkpoint files
are untrusted when verified: anyone with disk access may have edited them.

Storage: `<data_dir>/audit.sqlite`, append-only (triggers refuse UPDATE, and DELETE
of anything but a signed pruned prefix), schema versioned by gateway/_sqlite.py.

Invariants:
- Record n carries `prev_hash` = hash of record n-1 (64 zeros for record 1), and
  `hash` = SHA-256 of the canonical JSON of (seq, ts, kind, actor, fields, prev_hash).
  It also carries a MAC of its hash under a key derived from the digest key, so
  nobody without the keys can forge or re-chain records, even after the last
  checkpoint. The `fields` column holds the fields' canonical JSON, the very text
  that is hashed (`encode_record`); records written before issue 7 hold `json.dumps`
  text with spaces. Verification parses the column and re-encodes it: both verify.
- Every `checkpoint_every` records, at `close()`, and when pruning, an Ed25519-signed
  checkpoint (seq, hash, time) is stored and published off the box.
- No raw patient address is stored: addresses of events flagged
  `identifies_patient`, and any `...@patient.mssante.fr` anywhere in the fields,
  become `#<keyed hash of local part>@domain` (gateway.events.mask_address). Masking
  happens in `emit`/`append`, before a record is queued for the writer. The masker
  remembers keyed hashes and the domain of texts that are one address, never the
  answer of `identifies_patient` (it changes when the roster is reloaded).
- `append` returns only after the record is committed with synchronous=FULL (fsync);
  if it cannot write, it raises AuditError and the caller must not proceed.
- Group commit (issue 7): appends go through one writer thread that commits every
  record waiting at that moment in ONE transaction with ONE fsync, in submission
  order, so concurrent callers share a sync. Chain, MAC and checkpoint placement are
  exactly those of one-at-a-time appends (a batch is split at checkpoint boundaries).
  The records of one transaction share its timestamp (one clock reading). Writers in
  several processes (workers) queue for their transactions on a flock beside the
  database (gateway._sqlite.WriterLock), which wakes the next one at once, instead of
  polling in SQLite's busy handler.
- `emit` from an event-loop thread does not wait (fsync never blocks the loop): the
  record is queued for the writer, and the caller awaits `durable()` before anything
  that depends on it leaves (the service before a copy is queued or sent, the queue
  before a delivery is forgotten). If a queued record cannot be written, the trail is
  marked failed for deferred emits: every later emit and `durable()` raise AuditError
  (fail closed) until restart; the chain itself stays valid (lost records got no seq).
- Reads (status, search, verify, checkpoints, close) first wait for queued records.
- Pruning removes whole records from the oldest end only, and first signs a
  "pruned up to record N" checkpoint carrying record N's hash, so the rest verifies.
"""

from __future__ import annotations

import _json
import asyncio
import collections
import contextlib
import enum
import functools
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from crypto.keys import Keyring
from crypto.signing import (
    canonical_json,
    check_record_mac,
    key_id,
    public_key_of,
    public_key_text,
    record_mac,
    record_mac_key,
    sha256_hex,
    sign_payload,
)
from gateway._sqlite import WriterLock, open_database, schema_version
from gateway.audit.publish import CheckpointPublisher, EmailSender, checkpoint_email
from gateway.config import AuditConfig, Config
from gateway.errors import AuditError
from gateway.events import Event, mask_address
from gateway.logging import _scrub as scrub_identifiers
from gateway.threads import name_os_thread

DB_NAME = "audit.sqlite"
# Beside the database: the flock that worker processes' writers queue on (WriterLock).
WRITER_LOCK_NAME = "audit.sqlite.writer-lock"
GENESIS_HASH = "0" * 64
PATIENT_DOMAIN = "patient.mssante.fr"
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# One day between checkpoint e-mails: the issue asks for a daily e-mail.
EMAIL_INTERVAL = timedelta(days=1)
# A checkpoint at least hourly while records are added: a quiet practice (~100 records
# a day) would otherwise take ten days to reach the default checkpoint_every=1000, and
# only a checkpoint that has left the box bounds what a rewrite on the box can hide.
CHECKPOINT_INTERVAL = timedelta(hours=1)
# Rows fetched per round trip while verifying or exporting: bounds memory on a
# multi-million-record trail (~1 KB per record -> ~1 MB per batch).
_BATCH_ROWS = 1000
# Nested fields deeper than this are stored as a placeholder: events are flat
# dictionaries; depth 8 leaves room for findings maps without unbounded recursion.
_MAX_FIELD_DEPTH = 8
# Addresses whose route answer `patient_route_predicate` remembers (then starts afresh).
_ROUTE_MEMO_SIZE = 4096
# Addresses whose keyed hash an AddressMasker remembers (then starts afresh): a hash
# costs ~4 us, a look-up ~0.1 us, and a practice writes to a few hundred addresses.
_HASH_MEMO_SIZE = 4096

_MIGRATIONS = [
    """
    CREATE TABLE records (
        seq INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        fields TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        mac TEXT NOT NULL,
        route TEXT,
        action TEXT,
        message_id TEXT
    );
    CREATE INDEX records_ts ON records(ts);
    CREATE INDEX records_kind ON records(kind);
    CREATE INDEX records_message_id ON records(message_id);
    CREATE TABLE record_addresses (
        seq INTEGER NOT NULL REFERENCES records(seq) ON DELETE CASCADE,
        role TEXT NOT NULL,
        address TEXT NOT NULL
    );
    CREATE INDEX record_addresses_address ON record_addresses(address, role);
    CREATE INDEX record_addresses_seq ON record_addresses(seq);
    CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        signature TEXT NOT NULL
    );
    CREATE TABLE prune_mark (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        through INTEGER NOT NULL
    );
    INSERT INTO prune_mark (id, through) VALUES (1, 0);
    CREATE TABLE meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # Issue 7: fewer B-trees to update per record. Each record's addresses live in one
    # table keyed by (seq, role, address), written at its end like the records (it
    # replaces a rowid table plus its seq index, which pruning's cascade needed); the
    # search by address keeps its index. Message-IDs are indexed only where present:
    # only `received` carries one, and the search looks for a value, never for NULL.
    """
    CREATE TABLE record_addresses_v2 (
        seq INTEGER NOT NULL REFERENCES records(seq) ON DELETE CASCADE,
        role TEXT NOT NULL,
        address TEXT NOT NULL,
        PRIMARY KEY (seq, role, address)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO record_addresses_v2 (seq, role, address)
        SELECT seq, role, address FROM record_addresses;
    DROP TABLE record_addresses;
    ALTER TABLE record_addresses_v2 RENAME TO record_addresses;
    CREATE INDEX record_addresses_address ON record_addresses(address, role);
    DROP INDEX records_message_id;
    CREATE INDEX records_message_id ON records(message_id) WHERE message_id IS NOT NULL;
    """,
]

# Append-only guards. gateway/_sqlite.py splits migrations on ";", which trigger bodies
# contain, so the guards are (re)created idempotently at every open instead.
_GUARDS = """
    CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
    CREATE TRIGGER IF NOT EXISTS records_delete_pruned_only BEFORE DELETE ON records
    WHEN OLD.seq > (SELECT through FROM prune_mark WHERE id = 1)
    BEGIN SELECT RAISE(ABORT, 'audit records are removed only by pruning'); END;
    CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
    CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
"""


class CheckpointKind(enum.StrEnum):
    PERIODIC = "periodic"
    CLOSE = "close"
    MANUAL = "manual"
    PRUNED = "pruned"


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: datetime
    kind: str
    actor: str
    fields: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement "record `seq` has hash `hash`" at time `ts`."""

    seq: int
    hash: str
    ts: datetime
    kind: str
    signature: str
    payload: dict[str, Any] = field(repr=False)

    def export(self) -> dict[str, Any]:
        """The JSON object written to exported files, syslog and HTTPS."""
        return {**self.payload, "signature": self.signature}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    first_bad_record: int | None
    reason: str
    records_checked: int
    last_checkpoint: int | None
    checkpoints_checked: int = 0
    exported_checkpoints_checked: int = 0
    # Head of the chain as verified (meaningful when ok).
    last_seq: int = 0
    last_hash: str = ""


@dataclass(frozen=True)
class ChainStatus:
    """What the dashboard and the audit-chain metric show."""

    ok: bool
    records: int
    last_seq: int
    last_hash: str
    last_checkpoint_seq: int | None
    last_checkpoint_at: datetime | None
    pruned_through: int
    writable: bool
    reason: str


def format_ts(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


# Fields that carry free text (SMTP replies, hold reasons, error summaries).
_FREE_TEXT_KEYS = frozenset({"reason", "detail", "error", "note"})
_ANY_ADDRESS = re.compile(r"[^\s<>\"'(),;:@\[\]]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# Fields naming the practice's own sender: not checked against patient routes.
_SENDER_KEYS = frozenset({"mail_from"})

AddressPredicate = Callable[[str], bool]


def mask_patient_addresses(
    fields: Mapping[str, Any],
    digest_key: bytes,
    identifies_patient: AddressPredicate | None = None,
) -> dict[str, Any]:
    """Fields as stored: JSON-safe, with patient-identifying addresses masked.

    Masked, wherever it appears in a string: every `local@patient.mssante.fr`; every
    address, if the event says `identifies_patient`; and every recipient address for
    which `identifies_patient(address)` is true (the routes that send to patients,
    see `patient_route_predicate`). An address already masked (`#...@`) stays as is."""
    return AddressMasker(digest_key, identifies_patient).mask_fields(fields)


class AddressMasker:
    """`mask_patient_addresses` for one trail, built once: it remembers the keyed hash
    of the addresses it has masked and the domain of texts that are one address (the
    same few recur in every message), never whether an address identifies a patient
    (`identifies_patient` may change its answer when the roster is reloaded, so it is
    asked each time)."""

    __slots__ = ("_domains", "_hashed", "_identifies_patient", "_key")

    def __init__(self, digest_key: bytes, identifies_patient: AddressPredicate | None) -> None:
        self._key = digest_key
        self._identifies_patient = identifies_patient
        self._hashed: dict[str, str] = {}
        # Text that is exactly one address -> its domain, lower-cased: what the regex
        # would say about it, which depends on the text alone.
        self._domains: dict[str, str] = {}

    def mask_fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """See `mask_patient_addresses`."""
        everything = bool(fields.get("identifies_patient"))
        route_check = self._identifies_patient
        stored: dict[str, Any] = {}
        for k, v in fields.items():
            key = k if type(k) is str else str(k)
            kind = type(v)
            if kind is str:
                if "@" in v:
                    # The sender's own address is never checked against patient routes.
                    check = None if key in _SENDER_KEYS else route_check
                    v = self.mask_text(v, everything, check)
            elif v is None or kind is int or kind is bool or kind is float:
                pass
            else:
                check = None if key in _SENDER_KEYS else route_check
                if kind is list:
                    v = self._mask_list(v, everything, check)
                elif kind is dict:
                    v = self._mask_dict(v, everything, check)
                else:
                    v = _json_safe(v, self._text_masker(everything, check), 0)
            if v and key in _FREE_TEXT_KEYS and isinstance(v, str):
                # Safety net for free text (a peer's reply, a hold reason): the same
                # redaction as the last log processor (NIR, IBAN, phone, e-mail local part).
                v = scrub_identifiers(v)
            stored[key] = v
        return stored

    def _mask_list(self, items: list[Any], everything: bool, check: AddressPredicate | None) -> Any:
        """The common case, a list of addresses or digests, item by item; any other
        list as `_json_safe` stores it."""
        masked: list[str] = []
        for item in items:
            if type(item) is not str:
                return _json_safe(items, self._text_masker(everything, check), 0)
            masked.append(self.mask_text(item, everything, check) if "@" in item else item)
        return masked

    def _mask_dict(
        self, items: dict[Any, Any], everything: bool, check: AddressPredicate | None
    ) -> Any:
        """The common case, a flat map of names to counts (findings) or texts, entry by
        entry; any other map as `_json_safe` stores it."""
        masked: dict[str, Any] = {}
        for name, value in items.items():
            kind = type(value)
            if type(name) is not str or not (
                kind is int or kind is str or value is None or kind is float or kind is bool
            ):
                return _json_safe(items, self._text_masker(everything, check), 0)
            masked[name] = self.mask_text(value, everything, check) if kind is str else value
        return masked

    def mask_text(self, text: str, everything: bool, check: AddressPredicate | None) -> str:
        """`text` with every address in it that identifies a patient masked."""
        if "@" not in text:
            return text
        domain = self._domains.get(text)
        if domain is not None:
            return self._mask_address(text, domain, everything, check)
        if _ANY_ADDRESS.fullmatch(text) is not None:
            # The text is one address (a recipient, a sender): the match `sub` would
            # find, without its per-match callback.
            if len(self._domains) >= _HASH_MEMO_SIZE:
                self._domains.clear()
            domain = self._domains[text] = text.rpartition("@")[2].lower()
            return self._mask_address(text, domain, everything, check)
        if text[0] == "<" and text[-1] == ">" and _ANY_ADDRESS.fullmatch(text, 1, len(text) - 1):
            # `<one address>` (a Message-ID): `sub` would find that address alone, as
            # neither bracket can be part of a match.
            inner = text[1:-1]
            masked = self._mask_address(inner, inner.rpartition("@")[2].lower(), everything, check)
            return text if masked is inner else f"<{masked}>"
        return _ANY_ADDRESS.sub(lambda m: self._mask_one(m.group(0), everything, check), text)

    def _text_masker(
        self, everything: bool, check: AddressPredicate | None
    ) -> Callable[[str], str]:
        return lambda text: self.mask_text(text, everything, check)

    def _mask_one(self, address: str, everything: bool, check: AddressPredicate | None) -> str:
        return self._mask_address(address, address.rpartition("@")[2].lower(), everything, check)

    def _mask_address(
        self, address: str, domain: str, everything: bool, check: AddressPredicate | None
    ) -> str:
        """`address` (its `domain` lower-cased) masked if it identifies a patient."""
        if address.startswith("#"):
            return address
        if everything or domain == PATIENT_DOMAIN or (check is not None and check(address)):
            hashed = self._hashed.get(address)
            if hashed is None:
                if len(self._hashed) >= _HASH_MEMO_SIZE:
                    self._hashed.clear()
                hashed = self._hashed[address] = mask_address(address, self._key)
            return hashed
        return address


def patient_route_predicate(config: Config) -> AddressPredicate:
    """True for an address whose route sends to patients (own-data-only, reject-if-phi):
    the audit trail stores such recipients masked from the first event that names
    them (`received`), before any route is decided."""
    from gateway.routes import find_route
    from gateway.verdicts import Action

    routes = config.effective_routes()
    patient_actions = {str(Action.OWN_DATA_ONLY), str(Action.REJECT_IF_PHI)}

    known: dict[str, bool] = {}  # routes are fixed for the config's lifetime

    def identifies_patient(address: str) -> bool:
        answer = known.get(address)
        if answer is None:
            route = find_route(routes, address)
            answer = route is not None and str(route.action) in patient_actions
            if len(known) >= _ROUTE_MEMO_SIZE:
                known.clear()
            known[address] = answer
        return answer

    return identifies_patient


def _json_safe(value: Any, mask_text: Callable[[str], str], depth: int) -> Any:
    if depth > _MAX_FIELD_DEPTH:
        return "<nested too deep>"
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, enum.Enum):
        return _json_safe(value.value, mask_text, depth + 1)
    if isinstance(value, datetime):
        return format_ts(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, bytes | bytearray | memoryview):
        # Raw bytes could be content: record only their size.
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, mask_text, depth + 1) for k, v in value.items()}
    if type(value) is list and all(type(v) is str for v in value):
        return [mask_text(v) for v in value]  # the common case: a list of addresses/digests
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_json_safe(v, mask_text, depth + 1) for v in items]
    return mask_text(str(value))


def _addresses(value: Any) -> list[str]:
    """The addresses in a field, lower-cased, each once (a record's row per address and
    role is unique: the table's key)."""
    if isinstance(value, str):
        return [value.lower()] if "@" in value else []
    if isinstance(value, list | tuple):
        return list(dict.fromkeys(v.lower() for v in value if isinstance(v, str) and "@" in v))
    return []


def record_hash(
    seq: int, ts: str, kind: str, actor: str, fields: Mapping[str, Any], prev_hash: str
) -> str:
    body = {
        "seq": seq,
        "ts": ts,
        "kind": kind,
        "actor": actor,
        "fields": dict(fields),
        "prev_hash": prev_hash,
    }
    return sha256_hex(canonical_json(body))


# The canonical encoding (crypto.signing.canonical_json's settings) as text: a record's
# fields are encoded once, stored as such and embedded as they are in the hashed body.
# This is the C encoder that `JSONEncoder.encode` builds afresh at each call, built once:
# the same settings, without the circular-reference check, as the fields it encodes are
# trees built by the masker (`mask_fields` copies every container, depth-capped).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_canonical_chunks = _json.make_encoder(
    None,  # markers: no circular-reference check
    _CANONICAL.default,
    _json.encode_basestring,  # what JSONEncoder uses for ensure_ascii=False
    None,  # indent: compact, as _CANONICAL
    _CANONICAL.key_separator,
    _CANONICAL.item_separator,
    _CANONICAL.sort_keys,
    _CANONICAL.skipkeys,
    _CANONICAL.allow_nan,
)


def _encode_canonical(value: Any) -> str:
    if isinstance(value, str):
        return _json.encode_basestring(value)  # as JSONEncoder.encode does
    return "".join(_canonical_chunks(value, 0))


def encode_record(
    seq: int, ts: str, kind: str, actor: str, fields: Mapping[str, Any], prev_hash: str
) -> tuple[str, str]:
    """(the fields as stored, the record's hash): the hash is `record_hash` of the same
    record, built around the one encoding of the fields (keys in sorted order, as
    canonical_json writes them: actor, fields, kind, prev_hash, seq, ts)."""
    fields_text = _encode_canonical(fields if type(fields) is dict else dict(fields))
    body = (
        f'{{"actor":{_encode_canonical(actor)},"fields":{fields_text},'
        f'"kind":{_encode_canonical(kind)},"prev_hash":{_encode_canonical(prev_hash)},'
        f'"seq":{int(seq)},"ts":{_encode_canonical(ts)}}}'
    )
    return fields_text, sha256_hex(body.encode("utf-8"))


_INSERT_RECORDS = (
    "INSERT OR ROLLBACK INTO records (seq, ts, kind, actor, fields, prev_hash, hash, mac, route,"
    " action, message_id) VALUES "
)
_INSERT_ADDRESSES = "INSERT OR ROLLBACK INTO record_addresses (seq, role, address) VALUES "
# Rows per INSERT statement. A transaction's rows go in as few statements as its row
# count has binary digits (64, 32, ... 1 rows each): each is one step of SQLite (the
# sqlite3 module steps, and releases the GIL, once per row in `executemany`), and the
# 14 statement texts stay in the connection's statement cache (128). OR ROLLBACK: a
# constraint failure ends the whole transaction, as any error here does, so SQLite
# keeps no statement journal for a multi-row statement (it spilled to temp files).
_ROWS_PER_INSERT = (64, 32, 16, 8, 4, 2, 1)


@functools.cache
def _insert_sql(head: str, width: int, rows: int) -> str:
    group = "(" + ",".join("?" * width) + ")"
    return head + ",".join([group] * rows)


def _insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """INSERT `rows` (tuples of one width) with the statement `head` + VALUES groups."""
    at = 0
    while at < len(rows):
        size = next(n for n in _ROWS_PER_INSERT if n <= len(rows) - at)
        group = rows[at : at + size]
        conn.execute(_insert_sql(head, len(group[0]), size), [v for row in group for v in row])
        at += size


class _PendingRecord:
    """One record waiting for the group-commit writer. `ticket` is its place in
    submission order: it is handled once the trail's `_handled` reaches it."""

    __slots__ = ("actor", "deferred", "error", "kind", "seq", "stored", "ticket")

    def __init__(self, kind: str, actor: str, stored: Mapping[str, Any], deferred: bool) -> None:
        self.kind = kind
        self.actor = actor
        self.stored = stored
        self.deferred = deferred
        self.ticket = 0
        self.seq = 0
        self.error: AuditError | None = None


class AuditTrail:
    """Append-only, hash-chained, signed audit trail. Also an EventSink."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        keyring: Keyring,
        config: AuditConfig,
        *,
        publisher: CheckpointPublisher,
        email_sender: EmailSender | None,
        email_from: str,
        clock: Callable[[], datetime],
        identifies_patient: AddressPredicate | None = None,
    ) -> None:
        self._conn = conn
        self.path = path
        self._writer_lock: WriterLock | None = None  # set by open(): writable trails
        self._keyring = keyring
        self._config = config
        self._mac_key = record_mac_key(keyring.digest_key)
        self._public = public_key_of(keyring.audit_signing_key)
        self._publisher = publisher
        self._email_sender = email_sender
        self._email_from = email_from
        self._clock = clock
        self._masker = AddressMasker(keyring.digest_key, identifies_patient)
        self._lock = threading.RLock()
        # Group commit: records waiting for the writer thread, in submission order.
        # Tickets count submitted records; `_handled` is the last ticket handled
        # (committed or failed, always in ticket order). Both change under one lock;
        # `_pending_cv` wakes the writer, `_handled_cv` the threads waiting for it, and
        # `_loop_waiters` (ticket, loop, future), in ticket order, `durable()` callers.
        self._guard = threading.Lock()
        self._pending: list[_PendingRecord] = []
        self._pending_cv = threading.Condition(self._guard)
        self._handled_cv = threading.Condition(self._guard)
        self._writer_idle = False  # the writer waits on `_pending_cv`
        self._wake_scheduled = False  # a `_wake_writer` call is queued on an event loop
        self._submitted = 0
        self._handled = 0
        self._loop_waiters: collections.deque[
            tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]
        ] = collections.deque()
        self._writer: threading.Thread | None = None
        self._stopping = False
        self._deferred_failure: AuditError | None = None
        self._log = structlog.get_logger("portique.audit")
        self._closed = False
        self._readonly = False
        self._writable = True
        self._last_error = ""
        self._since_checkpoint = 0
        # Incremental check for status(): the newest record verified so far.
        self._checked_seq = 0
        self._checked_hash = GENESIS_HASH
        self._chain_ok = True
        self._chain_reason = "not verified yet"
        try:
            self._last_seq, self._last_hash = self._load_tail()
        except AuditError as exc:
            # Appends re-read the tail and will refuse too; verify() names the damage.
            self._last_seq, self._last_hash = 0, GENESIS_HASH
            self._chain_ok, self._chain_reason = False, str(exc)
        last_cp = self._last_checkpoint()
        self._since_checkpoint = max(0, self._last_seq - (last_cp.seq if last_cp else 0))
        # Before the first checkpoint ever, the interval runs from opening.
        self._last_checkpoint_at = last_cp.ts if last_cp else clock()

    # -- opening and closing -------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: Path,
        keyring: Keyring,
        config: AuditConfig,
        *,
        email_sender: EmailSender | None = None,
        email_from: str = "portique@localhost",
        publisher: CheckpointPublisher | None = None,
        clock: Callable[[], datetime] | None = None,
        identifies_patient: AddressPredicate | None = None,
    ) -> AuditTrail:
        """Open (creating if needed) `<data_dir>/audit.sqlite`.

        `email_sender` receives the daily checkpoint e-mail when `config.export_email`
        is set; `publisher` defaults to syslog/HTTPS per config; `identifies_patient`
        (see `patient_route_predicate`) says which recipient addresses to store
        masked even in events not flagged `identifies_patient`; `clock` is for tests."""
        path = Path(data_dir) / DB_NAME
        try:
            conn = open_database(path, _MIGRATIONS, check_same_thread=False)
            conn.executescript(_GUARDS)
            # Pruned records are overwritten on disk, not left in free pages.
            conn.execute("PRAGMA secure_delete=ON")
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open the audit trail: {type(exc).__name__}") from exc
        try:
            writer_lock = WriterLock(path.parent / WRITER_LOCK_NAME)
        except OSError as exc:
            conn.close()
            raise AuditError(f"cannot open the audit trail: {type(exc).__name__}") from exc
        if publisher is None:
            publisher = CheckpointPublisher(syslog=config.export_syslog, url=config.export_url)
        trail = cls(
            conn,
            path,
            keyring,
            config,
            publisher=publisher,
            email_sender=email_sender,
            email_from=email_from,
            clock=clock or (lambda: datetime.now(UTC)),
            identifies_patient=identifies_patient,
        )
        trail._writer_lock = writer_lock
        try:
            trail.apply_retention()
        except BaseException:
            trail._closed = True
            trail._publisher.close()
            writer_lock.close()
            conn.close()
            raise
        return trail

    @classmethod
    def open_readonly(cls, data_dir: Path, keyring: Keyring, config: AuditConfig) -> AuditTrail:
        """Open an existing trail for verify, search and export only: no retention,
        no closing checkpoint, appends refused. Safe beside a running gateway."""
        path = Path(data_dir) / DB_NAME
        if not path.is_file():
            raise AuditError(f"no audit trail in {data_dir}")
        try:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA busy_timeout=10000")
            version = schema_version(conn)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open the audit trail: {type(exc).__name__}") from exc
        if version != len(_MIGRATIONS):
            conn.close()
            raise AuditError(
                f"audit trail schema version {version}, this release reads {len(_MIGRATIONS)}"
            )
        trail = cls(
            conn,
            path,
            keyring,
            config,
            publisher=CheckpointPublisher(),
            email_sender=None,
            email_from="",
            clock=lambda: datetime.now(UTC),
        )
        trail._readonly = True
        return trail

    def close(self) -> None:
        """Write a closing checkpoint (if records were added since the last one)."""
        self._stop_writer()
        with self._lock:
            if self._closed:
                return
            try:
                if self._since_checkpoint > 0 and not self._readonly:
                    self._write_checkpoint(CheckpointKind.CLOSE)
            finally:
                self._closed = True
                self._publisher.close()
                if self._writer_lock is not None:
                    self._writer_lock.close()
                self._conn.close()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """EventSink: one record per event; the acting user, if any, is the actor.

        Called from an event-loop thread, it queues the record for the group-commit
        writer and returns at once (await `durable()` before relying on it); from any
        other thread it returns only once the record is durable, like `append`."""
        user = event.fields.get("user")
        actor = user if isinstance(user, str) and user else "system"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.append(event.kind, event.fields, actor=actor)
            return
        if self._deferred_failure is not None:
            raise self._deferred_failure
        stored = self._masker.mask_fields(event.fields)
        self._submit(_PendingRecord(event.kind, actor, stored, deferred=True), loop)

    def append(self, kind: str, fields: Mapping[str, Any], *, actor: str = "system") -> int:
        """Append one record durably; returns its number. Raises AuditError on failure.

        Blocks until the writer thread has committed (and fsynced) the batch holding
        it: do not call it on an event loop (use `emit` + `durable()` there)."""
        stored = self._masker.mask_fields(fields)
        pending = self._submit(_PendingRecord(kind, actor, stored, deferred=False))
        with self._handled_cv:
            while self._handled < pending.ticket:
                self._handled_cv.wait()
        if pending.error is not None:
            raise pending.error
        return pending.seq

    async def durable(self) -> None:
        """Wait (without blocking the loop) until every record submitted so far is
        committed. Raises AuditError if a deferred record could not be written."""
        future: asyncio.Future[None] | None = None
        with self._pending_cv:
            if self._handled < self._submitted:
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                self._loop_waiters.append((self._submitted, loop, future))
        if future is not None:
            await future
        if self._deferred_failure is not None:
            raise self._deferred_failure

    def _submit(
        self, pending: _PendingRecord, loop: asyncio.AbstractEventLoop | None = None
    ) -> _PendingRecord:
        """Queue `pending` for the writer. From an event loop (`loop`), an idle writer
        is woken once the loop's current iteration ends, so that the records of one
        iteration (several sessions and messages) wake it once, not once each."""
        with self._guard:
            if self._closed or self._readonly or self._stopping:
                raise AuditError("audit trail is closed or opened read-only")
            self._submitted += 1
            pending.ticket = self._submitted
            self._pending.append(pending)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._writer_loop, name="audit-writer", daemon=True
                )
                self._writer.start()
            elif self._writer_idle:
                # A busy writer takes the whole queue when it is done: no wake-up needed.
                if loop is None:
                    self._pending_cv.notify()
                elif not self._wake_scheduled:
                    self._wake_scheduled = True
                    loop.call_soon(self._wake_writer)
        return pending

    def _wake_writer(self) -> None:
        with self._guard:
            self._wake_scheduled = False
            if self._writer_idle and self._pending:
                self._pending_cv.notify()

    def _drain(self) -> None:
        """Block until every record submitted so far has been handled by the writer."""
        with self._handled_cv:
            target = self._submitted
            if self._writer_idle and self._pending:
                self._pending_cv.notify()  # its wake-up may wait on the loop calling us
            while self._handled < target:
                self._handled_cv.wait()

    def _stop_writer(self) -> None:
        with self._pending_cv:
            self._stopping = True
            writer = self._writer
            self._pending_cv.notify()
        if writer is not None and writer is not threading.current_thread():
            writer.join()
        with self._pending_cv:
            self._writer = None

    def _writer_loop(self) -> None:
        name_os_thread()
        while True:
            with self._pending_cv:
                while not self._pending and not self._stopping:
                    self._writer_idle = True
                    self._pending_cv.wait()
                self._writer_idle = False
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            try:
                self._commit_batch(batch)
            except BaseException as exc:  # never leave a caller waiting forever
                error = AuditError(f"cannot write the audit trail: {type(exc).__name__}")
                left = [pending for pending in batch if pending.ticket > self._handled]
                for pending in left:
                    pending.error = pending.error or error
                self._finish(left)
                if not isinstance(exc, Exception):
                    raise

    def _finish(self, records: list[_PendingRecord]) -> None:
        """Mark `records` (the next ones in ticket order, their seq or error set) as
        handled and wake whoever waits for them."""
        if not records:
            return
        for pending in records:
            if pending.error is not None and pending.deferred and self._deferred_failure is None:
                self._deferred_failure = AuditError(
                    "audit records queued from the event loop could not be written"
                )
                self._log.error("audit_deferred_records_lost", error=str(pending.error))
        woken: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        with self._handled_cv:
            self._handled = max(self._handled, records[-1].ticket)
            self._handled_cv.notify_all()
            waiters = self._loop_waiters
            while waiters and waiters[0][0] <= self._handled:
                _, loop, future = waiters.popleft()
                woken.setdefault(loop, []).append(future)
        # One wake-up per event loop (a write to its self-pipe), not one per waiter.
        for loop, futures in woken.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, futures)

    def _commit_batch(self, batch: list[_PendingRecord]) -> None:
        """Commit `batch` in order: one transaction (one fsync) per run of records up to
        the next periodic checkpoint, then the checkpoint, as single appends would."""
        with self._lock:
            if self._closed or self._readonly:
                error = AuditError("audit trail is closed or opened read-only")
                for pending in batch:
                    pending.error = error
                self._finish(batch)
                return
            start = 0
            while start < len(batch):
                every = self._config.checkpoint_every
                room = max(1, every - self._since_checkpoint) if every > 0 else len(batch)
                chunk = batch[start : start + room]
                start += len(chunk)
                try:
                    self._insert_chunk(chunk)
                except AuditError as exc:
                    for pending in chunk:
                        pending.error = exc
                    self._finish(chunk)
                    continue
                checkpoint_error: AuditError | None = None
                try:
                    if every > 0 and self._since_checkpoint >= every:
                        self._write_checkpoint(CheckpointKind.PERIODIC)
                    elif start >= len(batch):
                        self.checkpoint_if_due()
                except AuditError as exc:
                    checkpoint_error = exc
                for pending in chunk:
                    # As before: the record is committed, but the caller hears that the
                    # checkpoint after it failed.
                    pending.error = checkpoint_error
                self._finish(chunk)

    def _insert_chunk(self, chunk: list[_PendingRecord]) -> None:
        """One transaction for `chunk`. Its records share one timestamp, the time of
        that transaction; each is encoded once (encode_record) and hashed, chained and
        MACed exactly as `record_hash` and `portique audit verify` expect."""
        mac_key = self._mac_key
        # Other processes' writers queue on this lock, not in SQLite's busy handler.
        writer_lock = (
            self._writer_lock if self._writer_lock and self._writer_lock.acquire() else None
        )
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                last_seq, last_hash = self._load_tail()
                ts = format_ts(self._clock())
                rows: list[tuple[Any, ...]] = []
                address_rows: list[tuple[int, str, str]] = []
                for pending in chunk:
                    stored = pending.stored
                    seq = last_seq + 1
                    text, digest = encode_record(
                        seq, ts, pending.kind, pending.actor, stored, last_hash
                    )
                    rows.append(
                        (
                            seq,
                            ts,
                            pending.kind,
                            pending.actor,
                            text,
                            last_hash,
                            digest,
                            record_mac(mac_key, digest),
                            _text_or_none(stored.get("route")),
                            _text_or_none(stored.get("action") or stored.get("mode")),
                            _text_or_none(stored.get("message_id")),
                        )
                    )
                    address_rows += [(seq, "from", a) for a in _addresses(stored.get("mail_from"))]
                    address_rows += [(seq, "to", a) for a in _addresses(stored.get("recipients"))]
                    last_seq, last_hash = seq, digest
                _insert_rows(self._conn, _INSERT_RECORDS, rows)
                _insert_rows(self._conn, _INSERT_ADDRESSES, address_rows)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # OR ROLLBACK has already ended it
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._writable = False
            self._last_error = type(exc).__name__
            raise AuditError(f"cannot write the audit trail: {type(exc).__name__}") from exc
        finally:
            if writer_lock is not None:
                writer_lock.release()
        for pending, row in zip(chunk, rows, strict=True):
            pending.seq = row[0]
        self._writable = True
        self._last_seq, self._last_hash = last_seq, last_hash
        self._since_checkpoint += len(chunk)

    def checkpoint_if_due(self) -> bool:
        """Sign a checkpoint if records were added and the last checkpoint is older than
        CHECKPOINT_INTERVAL. Appends call it; the service may also call it from a timer
        so that a burst followed by silence is covered. Returns True if one was written."""
        with self._lock:
            if self._closed or self._readonly or self._since_checkpoint <= 0:
                return False
            if self._clock() - self._last_checkpoint_at < CHECKPOINT_INTERVAL:
                return False
            self._write_checkpoint(CheckpointKind.PERIODIC)
            return True

    def checkpoint(self) -> None:
        """Sign the current head now (no-op on an empty trail)."""
        self._drain()
        with self._lock:
            if self._closed or self._readonly:
                raise AuditError("audit trail is closed or opened read-only")
            if self._last_seq > 0:
                self._write_checkpoint(CheckpointKind.MANUAL)

    def _write_checkpoint(self, kind: CheckpointKind) -> Checkpoint:
        # Re-read the head: another process (a CLI command) may have appended since.
        with contextlib.suppress(AuditError, sqlite3.Error):
            self._last_seq, self._last_hash = self._load_tail()
        seq, digest = self._last_seq, self._last_hash
        cp = self._sign(kind, seq, digest)
        self._store_checkpoint(cp)
        self._since_checkpoint = 0
        self._last_checkpoint_at = cp.ts
        self._after_checkpoint(cp)
        return cp

    def _sign(self, kind: CheckpointKind, seq: int, digest: str) -> Checkpoint:
        now = self._clock()
        payload: dict[str, Any] = {
            "type": "portique-audit-checkpoint",
            "v": 1,
            "kind": str(kind),
            "seq": seq,
            "hash": digest,
            "ts": format_ts(now),
            "key_id": key_id(self._public),
        }
        signature = sign_payload(self._keyring.audit_signing_key, payload)
        return Checkpoint(seq, digest, now, str(kind), signature, payload)

    def _store_checkpoint(self, cp: Checkpoint, *, in_transaction: bool = False) -> None:
        try:
            self._conn.execute(
                "INSERT INTO checkpoints (seq, kind, payload, signature) VALUES (?,?,?,?)",
                (cp.seq, cp.kind, json.dumps(cp.payload, sort_keys=True), cp.signature),
            )
        except sqlite3.Error as exc:
            if in_transaction:
                raise
            self._writable = False
            raise AuditError(f"cannot write an audit checkpoint: {type(exc).__name__}") from exc

    def _after_checkpoint(self, cp: Checkpoint) -> None:
        self._publisher.publish(cp.export())
        self._maybe_send_email()

    # -- retention -------------------------------------------------------------

    def apply_retention(self) -> int:
        """Prune by `retention_days` (0 keeps everything); returns records removed."""
        if self._config.retention_days <= 0:
            return 0
        return self.prune(self._clock() - timedelta(days=self._config.retention_days))

    def prune(self, before: datetime) -> int:
        """Remove every record older than `before` from the oldest end, after signing a
        "pruned up to record N" checkpoint; returns the number of records removed.

        The newest record is never pruned, so the chain always has a visible head."""
        self._drain()
        with self._lock:
            if self._closed or self._readonly:
                raise AuditError("audit trail is closed or opened read-only")
            cutoff = format_ts(before)
            row = self._conn.execute(
                "SELECT MAX(seq) FROM records WHERE ts < ? AND seq < ?",
                (cutoff, self._last_seq),
            ).fetchone()
            candidate = row[0] if row and row[0] is not None else 0
            # Whole records from the oldest end only: stop before the first newer one.
            newer = self._conn.execute(
                "SELECT MIN(seq) FROM records WHERE ts >= ?", (cutoff,)
            ).fetchone()
            if newer and newer[0] is not None:
                candidate = min(candidate, newer[0] - 1)
            through = self._pruned_through()
            if candidate <= through:
                return 0
            # Never sign a damaged prefix as good: verify what is about to go.
            from gateway.audit.verify import verify_trail

            check = verify_trail(self._conn, self._public, self._mac_key, through=candidate)
            if not check.ok:
                self._chain_ok, self._chain_reason = False, check.reason
                raise AuditError(f"prune refused, the trail does not verify: {check.reason}")
            cp = self._sign(CheckpointKind.PRUNED, candidate, check.last_hash)
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._store_checkpoint(cp, in_transaction=True)
                    self._conn.execute(
                        "UPDATE prune_mark SET through = ? WHERE id = 1", (candidate,)
                    )
                    removed = self._conn.execute(
                        "DELETE FROM records WHERE seq <= ?", (candidate,)
                    ).rowcount
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise AuditError(f"cannot prune the audit trail: {type(exc).__name__}") from exc
            if self._checked_seq < candidate:
                self._checked_seq, self._checked_hash = candidate, check.last_hash
            self._after_checkpoint(cp)
            self._log.info("audit_pruned", through=candidate, removed=removed)
        self.append("audit_pruned", {"through": candidate, "removed": removed})
        return int(removed)

    # -- off-box e-mail --------------------------------------------------------

    def send_checkpoint_email(self, *, force: bool = False) -> bool:
        """Send the checkpoints written since the last e-mail (daily unless `force`).
        Returns True if an e-mail was handed to the sender."""
        if not (self._config.export_email and self._email_sender):
            return False
        with self._lock:
            now = self._clock()
            last = self._meta("email_last_at")
            if not force and last and now - parse_ts(last) < EMAIL_INTERVAL:
                return False
            after = int(self._meta("email_last_checkpoint_id") or 0)
            rows = self._conn.execute(
                "SELECT id, payload, signature FROM checkpoints WHERE id > ? ORDER BY id",
                (after,),
            ).fetchall()
            if not rows:
                return False
            cps = [{**json.loads(p), "signature": s} for _, p, s in rows]
            msg = checkpoint_email(cps, self._config.export_email, self._email_from, now)
        try:
            self._email_sender(msg)
        except Exception as exc:
            self._log.warning("audit_checkpoint_email_failed", error=type(exc).__name__)
            return False
        with self._lock:
            self._set_meta("email_last_at", format_ts(now))
            self._set_meta("email_last_checkpoint_id", str(rows[-1][0]))
        return True

    def _maybe_send_email(self) -> None:
        self.send_checkpoint_email(force=False)

    def _meta(self, name: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    def _set_meta(self, name: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    # -- reading ---------------------------------------------------------------

    def search(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        sender: str | None = None,
        recipient: str | None = None,
        route: str | None = None,
        action: str | None = None,
        message_id: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[AuditRecord], int]:
        """Matching records, newest first, and the total number that match.

        `sender`/`recipient` are full addresses: they match the address as stored,
        or its masked form, so a patient's address is found without being stored."""
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("r.ts >= ?")
            params.append(format_ts(since))
        if until is not None:
            where.append("r.ts < ?")
            params.append(format_ts(until))
        for role, address in (("from", sender), ("to", recipient)):
            if address:
                forms = self._address_forms(address)
                marks = ",".join("?" * len(forms))
                where.append(
                    "r.seq IN (SELECT seq FROM record_addresses"
                    f" WHERE role = ? AND address IN ({marks}))"
                )
                params += [role, *forms]
        for column, value in (
            ("route", route),
            ("action", action),
            ("message_id", message_id),
            ("kind", kind),
        ):
            if value is not None:
                where.append(f"r.{column} = ?")
                params.append(value)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        # 1..1000 per page: the console pages by 50; exports use iter_records().
        limit = max(1, min(int(limit), 1000))
        offset = max(0, int(offset))
        self._drain()
        with self._lock:
            total = self._conn.execute(
                f"SELECT COUNT(*) FROM records r{clause}", params
            ).fetchone()[0]
            rows = self._conn.execute(
                "SELECT r.seq, r.ts, r.kind, r.actor, r.fields, r.prev_hash, r.hash"
                f" FROM records r{clause} ORDER BY r.seq DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
        return [_to_record(row) for row in rows], int(total)

    def iter_records(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[AuditRecord]:
        """Records in order (oldest first) between `since` (inclusive) and `until`."""
        self._drain()
        low = format_ts(since) if since else ""
        high = format_ts(until) if until else "9999"
        after = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT seq, ts, kind, actor, fields, prev_hash, hash FROM records"
                    " WHERE seq > ? AND ts >= ? AND ts < ? ORDER BY seq LIMIT ?",
                    (after, low, high, _BATCH_ROWS),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _to_record(row)
            after = rows[-1][0]

    def checkpoints(self) -> list[Checkpoint]:
        self._drain()
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, kind, payload, signature FROM checkpoints ORDER BY id"
            ).fetchall()
        out = []
        for seq, kind, payload, signature in rows:
            try:
                data = json.loads(payload)
                ts = parse_ts(data["ts"])
                out.append(Checkpoint(int(seq), str(data["hash"]), ts, kind, signature, data))
            except (TypeError, ValueError, KeyError):
                # A damaged row: verify() names it; listings skip it.
                self._log.warning("audit_checkpoint_unreadable", seq=seq)
        return out

    def export_checkpoints(self, out: Path) -> int:
        """Write every checkpoint as one JSON line; returns how many."""
        cps = self.checkpoints()
        text = "".join(json.dumps(cp.export(), sort_keys=True) + "\n" for cp in cps)
        out.write_text(text, encoding="utf-8")
        return len(cps)

    @property
    def public_key(self) -> str:
        return public_key_text(self._public)

    def _address_forms(self, address: str) -> list[str]:
        address = address.strip().lower()
        if address.startswith("#"):
            return [address]
        masked = mask_address(address, self._keyring.digest_key)
        if address.endswith("@" + PATIENT_DOMAIN):
            return [masked]
        return [address, masked]

    # -- verification ------------------------------------------------------------

    def verify(self, against: Path | None = None) -> VerifyResult:
        """Check the whole chain, every MAC, every checkpoint signature, and, with
        `against`, that the trail still matches checkpoints exported earlier.

        Reads one consistent snapshot on its own read-only connection, so appends from
        other threads are not held up while a large trail is verified (run it in a
        worker thread from async code: ~25,000 records/s on one core)."""
        from gateway.audit.verify import verify_trail

        self._drain()
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read the audit trail: {type(exc).__name__}") from exc
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("BEGIN")  # one snapshot for the whole walk
            result = verify_trail(conn, self._public, self._mac_key, against)
        finally:
            conn.close()
        with self._lock:
            self._chain_ok = result.ok
            self._chain_reason = result.reason
            if result.ok and result.last_seq >= self._checked_seq:
                self._checked_seq, self._checked_hash = result.last_seq, result.last_hash
        return result

    def status(self) -> ChainStatus:
        """Cheap status: checks only the records added since the last check."""
        self._drain()
        with self._lock:
            if not self._closed and self._chain_ok:
                self._check_new_records()
            last_cp = self._last_checkpoint() if not self._closed else None
            count = (
                self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
                if not self._closed
                else 0
            )
            return ChainStatus(
                ok=self._chain_ok,
                records=int(count),
                last_seq=self._last_seq,
                last_hash=self._last_hash,
                last_checkpoint_seq=last_cp.seq if last_cp else None,
                last_checkpoint_at=last_cp.ts if last_cp else None,
                pruned_through=self._pruned_through() if not self._closed else 0,
                writable=self._writable and not self._closed and self._deferred_failure is None,
                reason=self._chain_reason if not self._chain_ok else "ok",
            )

    def is_writable(self) -> bool:
        """For /readyz: the database accepts a write transaction right now (and no
        record queued from the event loop has been lost)."""
        with self._lock:
            if self._closed or self._deferred_failure is not None:
                return False
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                return False
            return True

    def _check_new_records(self) -> None:
        if self._checked_seq == 0:
            through = self._pruned_through()
            if through:
                row = self._conn.execute(
                    "SELECT payload FROM checkpoints WHERE kind = ? AND seq = ?",
                    (str(CheckpointKind.PRUNED), through),
                ).fetchone()
                if row is None:
                    self._fail(through + 1, "pruned prefix has no signed checkpoint")
                    return
                self._checked_seq, self._checked_hash = through, json.loads(row[0])["hash"]
        while True:
            rows = self._conn.execute(
                "SELECT seq, ts, kind, actor, fields, prev_hash, hash, mac FROM records"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (self._checked_seq, _BATCH_ROWS),
            ).fetchall()
            if not rows:
                break
            if not self._check_rows(rows):
                return
        self._chain_reason = "ok"

    def _check_rows(self, rows: list[tuple[Any, ...]]) -> bool:
        for seq, ts, kind, actor, fields, prev_hash, digest, mac in rows:
            if seq != self._checked_seq + 1:
                self._fail(self._checked_seq + 1, "record missing")
                return False
            try:
                recomputed = record_hash(seq, ts, kind, actor, json.loads(fields), prev_hash)
            except (ValueError, TypeError):
                recomputed = ""
            if recomputed != digest or not check_record_mac(self._mac_key, str(digest), str(mac)):
                self._fail(seq, "record does not match its hash")
                return False
            if prev_hash != self._checked_hash:
                self._fail(seq, "record does not chain to the previous one")
                return False
            self._checked_seq, self._checked_hash = seq, digest
        return True

    def _fail(self, seq: int, reason: str) -> None:
        self._chain_ok = False
        self._chain_reason = f"record {seq}: {reason}"

    def _load_tail(self) -> tuple[int, str]:
        row = self._conn.execute(
            "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            return int(row[0]), str(row[1])
        through = self._pruned_through()
        if through:
            cp = self._conn.execute(
                "SELECT payload FROM checkpoints WHERE kind = ? AND seq = ?",
                (str(CheckpointKind.PRUNED), through),
            ).fetchone()
            if cp is None:
                raise AuditError("audit trail is empty but its pruning checkpoint is missing")
            return through, str(json.loads(cp[0])["hash"])
        return 0, GENESIS_HASH

    def _pruned_through(self) -> int:
        row = self._conn.execute("SELECT through FROM prune_mark WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def _last_checkpoint(self) -> Checkpoint | None:
        row = self._conn.execute(
            "SELECT seq, kind, payload, signature FROM checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        try:
            data = json.loads(row[2])
            return Checkpoint(
                int(row[0]), str(data["hash"]), parse_ts(data["ts"]), row[1], row[3], data
            )
        except (TypeError, ValueError, KeyError):
            return None  # a damaged checkpoint: verify() reports it


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _text_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def _to_record(row: tuple[Any, ...]) -> AuditRecord:
    seq, ts, kind, actor, fields, prev_hash, digest = row
    try:
        return AuditRecord(
            seq=int(seq),
            ts=parse_ts(ts),
            kind=str(kind),
            actor=str(actor),
            fields=dict(json.loads(fields)),
            prev_hash=str(prev_hash),
            hash=str(digest),
        )
    except (TypeError, ValueError) as exc:
        raise AuditError(
            f"audit record {seq} is unreadable (damaged?): run `portique audit verify`"
        ) from exc


__all__ = [
    "AuditRecord",
    "AuditTrail",
    "ChainStatus",
    "Checkpoint",
    "CheckpointKind",
    "VerifyResult",
    "mask_patient_addresses",
    "patient_route_predicate",
    "record_hash",
]
