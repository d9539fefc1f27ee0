"""The audit trail: tamper-evident record of every decision and admin action.

Public API (the service and the admin console code against it):
    AuditTrail.open(data_dir, keyring, config) -> AuditTrail
    .append(kind, fields, *, actor="system") -> int
    .emit(event)                                   EventSink
    .search(since=, until=, sender=, recipient=, route=, action=, message_id=, kind=,
            limit=50, offset=0) -> (records, total)
    .verify(against=None) -> VerifyResult
    .status() -> ChainStatus, .checkpoint(), .prune(before) -> int, .close()

Modules: `trail` (storage, chain, checkpoints, search), `verify` (the verifier),
`publish` (checkpoints sent off the box). See each module's docstring for invariants.
"""

from gateway.audit.publish import CheckpointPublisher, checkpoint_email
from gateway.audit.trail import (
    AuditRecord,
    AuditTrail,
    ChainStatus,
    Checkpoint,
    CheckpointKind,
    VerifyResult,
    mask_patient_addresses,
    patient_route_predicate,
)

__all__ = [
    "AuditRecord",
    "AuditTrail",
    "ChainStatus",
    "Checkpoint",
    "CheckpointKind",
    "CheckpointPublisher",
    "VerifyResult",
    "checkpoint_email",
    "mask_patient_addresses",
    "patient_route_predicate",
]
