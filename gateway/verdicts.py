"""Verdicts and route actions, shared by the pipeline, the queue and the audit trail.

One table (`QUEUE_OUTCOME`) maps a verdict to what the queue does with the copy.
SMTP reply codes are not here: they live only in the inbound adapter (gateway/smtp.py).
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What a route does with its copy of a message (config key `action`)."""

    DELIVER = "deliver"  # unchanged (MSSanté)
    PSEUDONYMISE = "pseudonymise"  # per-recipient-domain tokens
    REDACT = "redact"  # type labels
    REJECT_IF_PHI = "reject-if-phi"  # deliver if nothing found, else bounce
    HOLD = "hold"  # quarantine for an admin's release
    REJECT = "reject"  # bounce, nothing sent
    OWN_DATA_ONLY = "own-data-only"  # only the recipient patient's own data


class Verdict(StrEnum):
    PASS = "pass"  # delivered as received
    REWRITTEN = "rewritten"  # delivered transformed
    HOLD = "hold"  # quarantined, sender notified
    REJECT = "reject"  # not delivered, sender notified


class QueueOutcome(StrEnum):
    DELIVER = "deliver"
    QUARANTINE = "quarantine"
    BOUNCE = "bounce"


QUEUE_OUTCOME: dict[Verdict, QueueOutcome] = {
    Verdict.PASS: QueueOutcome.DELIVER,
    Verdict.REWRITTEN: QueueOutcome.DELIVER,
    Verdict.HOLD: QueueOutcome.QUARANTINE,
    Verdict.REJECT: QueueOutcome.BOUNCE,
}
