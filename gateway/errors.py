"""Portique's exception tree. Messages never carry patient data or peer-supplied text.

PortiqueError
├── ConfigError            invalid configuration; names the key
├── KeyringError           key files missing, unreadable, or with unsafe modes
├── SpoolError             the spool cannot durably store a message (-> 451 4.3.0)
│   └── DiskFullError      free space below the guard (-> 452 4.3.1)
├── ContentError           a part or file cannot be processed safely (-> hold)
│   ├── LimitExceeded      a size, count, depth or time budget was exceeded (-> hold)
│   └── UnsupportedContent no handler can scan this content (-> per-route pass/hold/reject)
├── DeliveryError          raised by connectors, translated from foreign exceptions
│   ├── DeliveryTempFail   retry later (4xx, refused, timeout, TLS failure)
│   └── DeliveryPermFail   do not retry (5xx, policy)
├── TrustListError         the ANS trust list is malformed or unavailable
└── AuditError             the audit trail cannot be written or does not verify
"""

from __future__ import annotations


class PortiqueError(Exception):
    """Base of every error Portique raises on purpose."""


class ConfigError(PortiqueError):
    pass


class KeyringError(PortiqueError):
    pass


class SpoolError(PortiqueError):
    pass


class DiskFullError(SpoolError):
    pass


class ContentError(PortiqueError):
    """A part cannot be processed safely. `reason` is a fixed, PHI-free phrase."""


class LimitExceeded(ContentError):
    pass


class UnsupportedContent(ContentError):
    pass


class DeliveryError(PortiqueError):
    pass


class DeliveryTempFail(DeliveryError):
    pass


class DeliveryPermFail(DeliveryError):
    pass


class TrustListError(PortiqueError):
    pass


class AuditError(PortiqueError):
    pass
