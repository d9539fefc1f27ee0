"""The audit trail's per-message shortcuts (issue 7) keep its promises: the masker's
memo never hides a patient address, the one-address shortcut masks as the general
scan does, a record encoded once hashes as `record_hash` says, records written by the
previous encoding still verify beside new ones, and every waiter on `durable()` (many
coroutines, several event loops) is woken once its records are committed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.keys import Keyring
from crypto.signing import record_mac, record_mac_key, sha256_hex
from gateway.audit import AuditTrail
from gateway.audit.trail import (
    DB_NAME,
    GENESIS_HASH,
    AddressMasker,
    encode_record,
    record_hash,
)
from gateway.cli import main
from gateway.config import AuditConfig
from gateway.events import EventBus, mask_address

from ._helpers import count_chunks, fill

KEY = b"k" * 32
PATIENT = "jeanne.durand@patient.mssante.fr"
ROSTERED = "lucie.berthier@free.fr"
LAB = "commandes@labo-dupont.fr"


def test_masked_fields_hold_no_planted_address_in_any_shape() -> None:
    masker = AddressMasker(KEY, lambda address: address == ROSTERED)
    fields = {
        "mail_from": "dr.martin@cabinet-martin.fr",
        "recipients": [PATIENT, LAB, ROSTERED],
        "recipient_tuple": (ROSTERED,),
        "message_id": f"<{PATIENT}>",
        "detail": f"550 5.1.1 <{ROSTERED}>: unknown",
        "nested": {"to": [PATIENT], "deeper": {"again": ROSTERED}},
        "copy": ROSTERED,
    }
    for _ in range(3):  # the second and third pass use the memo
        stored = masker.mask_fields(fields)
        text = json.dumps(stored)
        for planted in ("jeanne", "durand", "lucie", "berthier"):
            assert planted not in text, planted
        assert stored["recipients"] == [
            mask_address(PATIENT, KEY),
            LAB,
            mask_address(ROSTERED, KEY),
        ]
        assert stored["recipient_tuple"] == [mask_address(ROSTERED, KEY)]
        assert stored["copy"] == mask_address(ROSTERED, KEY)
        assert stored["mail_from"] == "dr.martin@cabinet-martin.fr"


def test_the_masker_asks_again_whether_an_address_is_a_patient() -> None:
    """A roster reload can make an address a patient's: the masker must not have
    remembered the earlier "no"."""
    rostered: set[str] = set()
    masker = AddressMasker(KEY, lambda address: address in rostered)
    assert masker.mask_fields({"recipients": [ROSTERED]})["recipients"] == [ROSTERED]
    rostered.add(ROSTERED)
    assert masker.mask_fields({"recipients": [ROSTERED]})["recipients"] == [
        mask_address(ROSTERED, KEY)
    ]
    rostered.clear()  # and a patient who leaves the roster is stored plain again
    assert masker.mask_fields({"recipients": [ROSTERED]})["recipients"] == [ROSTERED]


def test_the_flag_masks_every_address_even_after_an_unflagged_event() -> None:
    masker = AddressMasker(KEY, None)
    assert masker.mask_fields({"recipients": [ROSTERED]})["recipients"] == [ROSTERED]
    flagged = masker.mask_fields({"recipients": [ROSTERED], "identifies_patient": True})
    assert flagged["recipients"] == [mask_address(ROSTERED, KEY)]


_LOCAL = st.text(alphabet="abcXYZ019._+-#", min_size=1, max_size=8)
_DOMAIN = st.sampled_from(
    ["patient.mssante.fr", "PATIENT.mssante.fr", "labo.test", "a.b.c", "x", "free.fr."]
)
_ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN)
_NOISE = st.text(alphabet=" <>,;:@\"'()[]a1.", max_size=6)
_TEXT = st.lists(st.one_of(_ADDRESS, _NOISE), min_size=1, max_size=4).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_TEXT, everything=st.booleans(), with_check=st.booleans())
def test_the_one_address_shortcut_masks_as_the_general_scan(
    text: str, everything: bool, with_check: bool
) -> None:
    """Property: whatever the text, bare or in angle brackets like a Message-ID,
    `mask_text` (which skips the scan when the text is exactly one address, or one in
    brackets, and remembers the domain of such texts) equals replacing each address
    the pattern finds, the first time and with its memo warm."""
    from gateway.audit.trail import _ANY_ADDRESS, PATIENT_DOMAIN

    def check(address: str) -> bool:
        return address.startswith("a")

    predicate = check if with_check else None

    def replace(match: Any) -> str:
        address = str(match.group(0))
        if address.startswith("#"):
            return address
        domain = address.rpartition("@")[2].lower()
        patient = everything or domain == PATIENT_DOMAIN or (with_check and check(address))
        return mask_address(address, KEY) if patient else address

    masker = AddressMasker(KEY, predicate)
    for candidate in (text, f"<{text}>"):
        expected = _ANY_ADDRESS.sub(replace, candidate)
        assert masker.mask_text(candidate, everything, predicate) == expected
        assert masker.mask_text(candidate, everything, predicate) == expected


_JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
_JSON = st.recursive(
    _JSON_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(st.text(max_size=8), _JSON, max_size=6),
    kind=st.text(min_size=1, max_size=10),
    actor=st.text(min_size=1, max_size=10),
    seq=st.integers(min_value=1, max_value=2**40),
)
def test_a_record_encoded_once_hashes_as_record_hash(
    fields: dict[str, Any], kind: str, actor: str, seq: int
) -> None:
    """Property: the stored text reads back as the fields, and the hash built around it
    is `record_hash` of the record (what `portique audit verify` recomputes)."""
    ts = "2026-11-29T10:20:45.123456Z"
    text, digest = encode_record(seq, ts, kind, actor, fields, GENESIS_HASH)
    assert json.loads(text) == fields
    assert digest == record_hash(seq, ts, kind, actor, json.loads(text), GENESIS_HASH)


def test_records_of_the_previous_encoding_verify_beside_new_ones(
    data_dir: Path, keyring: Keyring, tmp_path: Path
) -> None:
    """Earlier releases stored the fields as `json.dumps(..., sort_keys=True)` (with
    spaces), one timestamp per record; a trail holding such records and new ones
    verifies whole, in the library and through `portique audit verify`."""
    with AuditTrail.open(data_dir, keyring, AuditConfig(checkpoint_every=0)) as trail:
        fill(trail, 1)  # creates the schema; record 1 in the new encoding
    conn = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    try:
        seq, prev = conn.execute("SELECT seq, hash FROM records ORDER BY seq DESC").fetchone()
        mac_key = record_mac_key(keyring.digest_key)
        for i in range(3):  # records 2-4 as the previous writer wrote them
            seq += 1
            fields = {"route": "lab", "recipients": [LAB], "findings": {"nir": i}, "n": 1.5}
            ts = f"2026-11-29T09:0{i}:00.000000Z"
            digest = record_hash(seq, ts, "decided", "system", fields, prev)
            conn.execute(
                "INSERT INTO records (seq, ts, kind, actor, fields, prev_hash, hash, mac)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    seq,
                    ts,
                    "decided",
                    "system",
                    json.dumps(fields, sort_keys=True, ensure_ascii=False),
                    prev,
                    digest,
                    record_mac(mac_key, digest),
                ),
            )
            prev = digest
    finally:
        conn.close()
    with AuditTrail.open(data_dir, keyring, AuditConfig()) as trail:
        fill(trail, 3)  # records 5-7, new encoding, chained to an old-format record
        stored = [r.fields for r in trail.iter_records()]
        assert len(stored) == 7 and stored[2]["findings"] == {"nir": 1}
        assert trail.status().ok
        result = trail.verify()
        assert result.ok and result.records_checked == 7, result.reason
    config = tmp_path / "portique.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    assert main(["audit", "verify", "-c", str(config)]) == 0


def test_records_committed_together_carry_one_timestamp(data_dir: Path, keyring: Keyring) -> None:
    """The timestamp is the time of the transaction (the clock here moves a second at
    every reading): one per transaction, shared by its records, in order."""
    now = [datetime(2026, 11, 29, 10, 0, tzinfo=UTC)]

    def clock() -> datetime:
        now[0] += timedelta(seconds=1)
        return now[0]

    trail = AuditTrail.open(data_dir, keyring, AuditConfig(), clock=clock)
    chunks = count_chunks(trail)
    with trail._lock:  # the writer cannot commit until all ten are queued
        threads = [
            threading.Thread(target=trail.append, args=("decided", {"i": i})) for i in range(10)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while trail._submitted < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(10)
    records = list(trail.iter_records())
    assert [r.seq for r in records] == list(range(1, 11))
    assert max(chunks) > 1
    assert len({r.ts for r in records}) == len(chunks)
    assert [r.ts for r in records] == sorted(r.ts for r in records)
    assert trail.verify().ok
    trail.close()


def test_every_durable_waiter_wakes_on_every_loop(data_dir: Path, keyring: Keyring) -> None:
    """Many coroutines on two event loops (two threads) emit and await `durable()`
    concurrently: each returns, and only once its own record is committed."""
    trail = AuditTrail.open(data_dir, keyring, AuditConfig(checkpoint_every=7))
    bus = EventBus()
    bus.subscribe(trail, required=True)
    committed_before_return: list[bool] = []

    async def one(n: int, i: int) -> None:
        bus.emit("decided", spool_id=f"s{n}-{i}")
        await bus.durable()
        found = trail._conn.execute(
            "SELECT COUNT(*) FROM records WHERE fields LIKE ?", (f'%"s{n}-{i}"%',)
        ).fetchone()[0]
        committed_before_return.append(found == 1)

    async def many(n: int) -> None:
        await asyncio.wait_for(asyncio.gather(*(one(n, i) for i in range(25))), 30)

    threads = [threading.Thread(target=asyncio.run, args=(many(n),)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert committed_before_return == [True] * 50
    assert trail.status().records == 50
    assert trail.verify().ok
    trail.close()


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=100), data=st.binary(max_size=300))
def test_prepared_hash_states_answer_as_hashlib_and_hmac(key: bytes, data: bytes) -> None:
    """`sha256_hex` and `record_mac` start from copies of prepared SHA-256 states: they
    answer as hashlib and hmac do, for any key length (over 64 bytes it is hashed)."""
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
    text = data.hex()
    expected = hmac.new(key, text.encode("ascii"), hashlib.sha256).hexdigest()
    assert record_mac(key, text) == expected
    assert record_mac(key, text) == expected  # and again, from the remembered states


@settings(max_examples=300, deadline=None)
@given(
    entries=st.dictionaries(
        st.one_of(st.text(max_size=6), st.integers(min_value=-3, max_value=3)),
        st.one_of(_JSON_SCALAR, _ADDRESS, st.lists(_ADDRESS, max_size=2)),
        max_size=5,
    ),
    everything=st.booleans(),
)
def test_a_map_field_is_stored_as_the_general_conversion_stores_it(
    entries: dict[Any, Any], everything: bool
) -> None:
    """Property: a map (a findings count by type, say), which the masker stores entry
    by entry when it is flat, is stored as `_json_safe` stores any value."""
    from gateway.audit.trail import _json_safe

    def check(address: str) -> bool:
        return address.startswith("a")

    masker = AddressMasker(KEY, check)
    expected = _json_safe(entries, lambda text: masker.mask_text(text, everything, check), 0)
    stored = masker.mask_fields({"findings": entries, "identifies_patient": everything})
    assert json.dumps(stored["findings"], sort_keys=True) == json.dumps(expected, sort_keys=True)
