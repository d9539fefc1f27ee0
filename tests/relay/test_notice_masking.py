"""Bounces and notices name no patient: a patient's own address is shown as `j…@domain`."""

from __future__ import annotations

import email
import email.policy

from gateway.dsn import FailedRecipient, build_dsn, build_notice

PATIENT = "jean.dupont@gmail.com"
LAB = "commandes@labo-dupont.fr"


def is_patient(address: str) -> bool:
    return address == PATIENT


def test_notice_masks_patient_addresses_and_keeps_others() -> None:
    raw = build_notice(
        hostname="portique.test",
        sender="secretariat@cabinet.test",
        kind="reject",
        original_message_id="<n1@cabinet.test>",
        arrival=1_700_000_000,
        recipients=[PATIENT, LAB],
        reason="patient data to a non-health recipient",
        finding_counts={"name": 1},
        identifies_patient=is_patient,
    )
    assert b"jean.dupont" not in raw.lower()
    text = email.message_from_bytes(raw, policy=email.policy.default).get_content()
    assert "j…@gmail.com" in text
    assert LAB in text


def test_dsn_masks_patient_addresses_in_text_and_delivery_status() -> None:
    raw = build_dsn(
        hostname="portique.test",
        sender="secretariat@cabinet.test",
        original_message_id="<d1@cabinet.test>",
        arrival=1_700_000_000,
        failed=[
            FailedRecipient(PATIENT, "5.1.1", "550 5.1.1 from mx"),
            FailedRecipient(LAB, "5.1.1", "550 5.1.1 from mx"),
        ],
        gave_up=False,
        identifies_patient=is_patient,
    )
    assert b"jean.dupont" not in raw.lower()
    assert f"rfc822; {LAB}".encode() in raw


def test_without_a_predicate_addresses_are_shown_as_given() -> None:
    raw = build_notice(
        hostname="portique.test",
        sender="secretariat@cabinet.test",
        kind="hold",
        original_message_id="",
        arrival=1_700_000_000,
        recipients=[LAB],
        reason="held",
        finding_counts={},
    )
    assert LAB.encode() in raw
