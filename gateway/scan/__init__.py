"""Scanning core (sans-IO): find French patient identifiers in text and rewrite them.

No sockets, no asyncio, no file access: text and settings in, findings and text out.
"""

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

__all__ = [
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
