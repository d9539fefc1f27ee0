"""No raw patient identifier ever reaches the audit trail: identifiers planted through
events (patient addresses, flagged addresses, identifiers in free-text replies) are
absent from the SQLite file bytes (database and WAL) and from every export."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto.keys import Keyring
from gateway.audit import AuditTrail
from gateway.cli import main
from gateway.config import AuditConfig
from gateway.events import EventBus

PATIENT_MSSANTE = "jeanne.durand@patient.mssante.fr"
PATIENT_PRIVATE = "jeanne.durand.1984@gmail.com"
NIR = "2 84 12 75 123 456 78"
PHONE = "06 12 34 56 78"
# What must never be found, in any encoding the trail could use.
NEEDLES = ("jeanne", "durand", "1984@", "2841275123456", "84 12 75 123", "06 12 34 56")


def emit_a_day_of_events(bus: EventBus) -> None:
    bus.emit(
        "received",
        spool_id="s1",
        client="192.0.2.10",
        user="secretariat",
        mail_from="dr.martin@cabinet-martin.fr",
        recipients=[PATIENT_MSSANTE, "labo@prothese-sud.fr"],
        size=4096,
        message_id="<20260504.1@cabinet-martin.fr>",
    )
    bus.emit(
        "decided",
        spool_id="s1",
        copy_id="c1",
        route="patient",
        action="own-data-only",
        connector="mssante",
        verdict="pass",
        recipients=[PATIENT_MSSANTE],
        findings={"nir": 1, "name": 2},
        digests=["9f2c4e1a77b0d3e5"],
    )
    bus.emit(
        "decided",
        spool_id="s1",
        copy_id="c2",
        route="other",
        action="reject-if-phi",
        verdict="hold",
        recipients=[PATIENT_PRIVATE],
        identifies_patient=True,
        findings={"nir": 1, "phone": 1},
        reason="identifiers found",
    )
    bus.emit(
        "delivery",
        queue_id="q1",
        connector="mssante",
        destination="patient.mssante.fr",
        status="permfail",
        recipients=[PATIENT_MSSANTE],
        detail=f"550 5.1.1 <{PATIENT_MSSANTE}>: unknown; NIR {NIR}, tel {PHONE}",
    )
    bus.emit(
        "bounced",
        queue_id="q2",
        reason=f"no route for {PATIENT_PRIVATE}",
        recipients=[PATIENT_PRIVATE],
        identifies_patient=True,
    )


@pytest.fixture
def trail_files(data_dir: Path, keyring: Keyring) -> Path:
    bus = EventBus()
    trail = AuditTrail.open(data_dir, keyring, AuditConfig(checkpoint_every=2))
    bus.subscribe(trail, required=True)
    emit_a_day_of_events(bus)
    # Check the live files (WAL included) before the trail is closed and checkpointed.
    for path in data_dir.glob("audit.sqlite*"):
        assert_clean(path.read_bytes(), path.name)
    trail.close()
    return data_dir


def assert_clean(data: bytes, where: str) -> None:
    lowered = data.lower()
    for needle in NEEDLES:
        assert needle.encode() not in lowered, f"{needle!r} found in {where}"


def test_sqlite_file_holds_no_planted_identifier(trail_files: Path) -> None:
    files = list(trail_files.glob("audit.sqlite*"))
    assert files
    for path in files:
        assert_clean(path.read_bytes(), path.name)


def test_exports_hold_no_planted_identifier(trail_files: Path, tmp_path: Path) -> None:
    config = tmp_path / "portique.toml"
    config.write_text(f'data_dir = "{trail_files}"\n')
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"export.{fmt}"
        assert main(["audit", "export", "-c", str(config), "--format", fmt, "--out", str(out)]) == 0
        data = out.read_bytes()
        assert b"patient.mssante.fr" in data  # the records are there, masked
        assert_clean(data, out.name)
    out = tmp_path / "checkpoints.jsonl"
    assert main(["audit", "export-checkpoints", "-c", str(config), "--out", str(out)]) == 0
    assert_clean(out.read_bytes(), out.name)


def test_masked_records_still_say_what_happened(trail_files: Path, keyring: Keyring) -> None:
    with AuditTrail.open_readonly(trail_files, keyring, AuditConfig()) as trail:
        records, total = trail.search(recipient=PATIENT_MSSANTE)
        assert total == 3  # received, decided c1, delivery
        assert {r.kind for r in records} == {"received", "decided", "delivery"}
        delivery = next(r for r in records if r.kind == "delivery")
        assert delivery.fields["status"] == "permfail"
        assert "[NIR]" in delivery.fields["detail"] and "[TEL]" in delivery.fields["detail"]
        held, total = trail.search(recipient=PATIENT_PRIVATE)
        assert total == 2
        assert trail.verify().ok


def test_recipients_on_patient_routes_are_masked_from_the_first_event(
    data_dir: Path, keyring: Keyring
) -> None:
    """`received` comes before any route decision and carries no flag: the trail
    itself asks the routes which recipients are patients."""
    from gateway.audit import patient_route_predicate
    from gateway.config import Config, RouteConfig
    from gateway.events import mask_address

    config = Config(
        routes=(
            RouteConfig(name="labs", match=("*@labo-dupont.fr",), action="pseudonymise"),
            RouteConfig(name="patients", match=("*@patient.example",), action="own-data-only"),
            RouteConfig(name="default", match=("*",), action="reject-if-phi"),
        )
    )
    bus = EventBus()
    with AuditTrail.open(
        data_dir,
        keyring,
        AuditConfig(),
        identifies_patient=patient_route_predicate(config),
    ) as trail:
        bus.subscribe(trail, required=True)
        bus.emit(
            "received",
            mail_from="dr.martin@cabinet-martin.fr",
            recipients=["jeanne.durand@patient.example", "labo@labo-dupont.fr", PATIENT_PRIVATE],
        )
        [record], _ = trail.search()
        key = keyring.digest_key
        assert record.fields["recipients"] == [
            mask_address("jeanne.durand@patient.example", key),
            "labo@labo-dupont.fr",
            mask_address(PATIENT_PRIVATE, key),
        ]
        assert record.fields["mail_from"] == "dr.martin@cabinet-martin.fr"
        assert trail.search(recipient="jeanne.durand@patient.example")[1] == 1
        assert trail.search(recipient="labo@labo-dupont.fr")[1] == 1
    for path in data_dir.glob("audit.sqlite*"):
        assert_clean(path.read_bytes(), path.name)
