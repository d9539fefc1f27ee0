"""Scanning core (sans-IO): find French patient identifiers in text and rewrite them.

No sockets, no asyncio, no file access: text and settings in, findings and text out.
"""

from gateway.scan.engine import Engine, build_engine
from gateway.scan.model import (
    FieldKind,
    Finding,
    IdentifierKind,
    RewriteResult,
    ScanEngine,
    TextField,
    TransformPolicy,
    TypeAction,
    VaultEntry,
)
from gateway.scan.patients import RosterPatient

__all__ = [
    "Engine",
    "RosterPatient",
    "build_engine",
    "FieldKind",
    "Finding",
    "IdentifierKind",
    "RewriteResult",
    "ScanEngine",
    "TextField",
    "TransformPolicy",
    "TypeAction",
    "VaultEntry",
]
