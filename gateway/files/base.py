"""The shared file-handler interface: extract text fields, then rebuild from rewritten text.

Trust boundary: every handler takes untrusted bytes (an attachment or an archive entry)
and returns an `ExtractedFile`. Handlers never log, never touch the filesystem and never
put field text into exception messages: a handler that cannot process its input raises
`ContentError` (or `LimitExceeded`) with a fixed, PHI-free reason, which the pipeline
turns into a HOLD.

Invariants:
- `rebuild(texts, session)` gets one text per extracted field, in order. When every text
  equals its original and `cleaned` is False, the pipeline keeps the original bytes and
  does not call `rebuild` at all (unchanged parts stay byte-identical).
- `cleaned` is True when `rebuild` removes something even without findings (image
  metadata, DICOM identifying attributes, PDF metadata): such a file is always rebuilt on
  a transforming route.
- `locked` lists fields that cannot be rewritten safely (PDF page text): any finding in
  one of them makes a transforming route HOLD.
- `notes` are identifier kinds a handler knows about without text (a DICOM burned-in
  annotation flag); they are reported as findings and block transforming routes.
- `unknown` counts embedded files no handler can scan (per-route pass/hold/reject).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.config import FilesConfig
from gateway.errors import ContentError
from gateway.scan.model import IdentifierKind, TextField

__all__ = [
    "ExtractedFile",
    "FileHandler",
    "HandlerContext",
    "RewriteSession",
    "require_same_length",
]


@dataclass
class RewriteSession:
    """Per route copy state shared by every file of one message (consistent UID remapping).

    `salt` is derived from the message and the audience, so remapped UIDs are stable
    within one message and one audience (deterministic golden output) yet unrelated to
    the original UIDs for anyone who does not hold the original message. It may be given
    as the function that derives it: called once, at the first UID remapped. The
    pipeline's hashes the whole message, which only a DICOM file needs (a 50 MB
    attachment hashed per rewritten copy, for nothing, in every other message).
    """

    salt: bytes | Callable[[], bytes] = field(repr=False)
    uid_map: dict[str, str] = field(default_factory=dict)

    def remap_uid(self, uid: str) -> str:
        """A new DICOM UID under the 2.25 root (ISO/IEC 9834-8 UUID-derived form)."""
        new = self.uid_map.get(uid)
        if new is None:
            if not isinstance(self.salt, bytes):
                self.salt = self.salt()
            digest = hashlib.sha256(self.salt + b"\x00" + uid.encode("ascii", "replace")).digest()
            # 2.25.<decimal of 128 bits> stays within the 64-character UI limit (PS3.5 9.1).
            new = "2.25." + str(int.from_bytes(digest[:16], "big"))
            self.uid_map[uid] = new
        return new


@dataclass(frozen=True)
class HandlerContext:
    """Settings and recursion state handed to a handler (archives recurse through it)."""

    limits: FilesConfig = field(default_factory=FilesConfig)
    depth: int = 0  # archive nesting depth of this file (0 = attachment itself)
    # Set by the dispatcher so archive handlers can sniff and open their entries.
    open_entry: Callable[[bytes, HandlerContext], ExtractedFile] | None = None


RebuildFn = Callable[[Sequence[str], RewriteSession], bytes]


def _no_rebuild(texts: Sequence[str], session: RewriteSession) -> bytes:
    raise ContentError("file cannot be rebuilt")


@dataclass(frozen=True)
class ExtractedFile:
    """What a handler found in one file, and how to put it back together."""

    format: str  # short format name for reasons and reports ("stl", "dicom", ...)
    original: bytes = field(repr=False)
    fields: tuple[TextField, ...] = ()
    rebuild_fn: RebuildFn = _no_rebuild
    cleaned: bool = False
    locked: frozenset[int] = frozenset()  # indices into `fields`
    notes: tuple[IdentifierKind, ...] = ()
    unknown: int = 0
    # Formats inside (archives): their names, for reports.
    contains: tuple[str, ...] = ()

    def rebuild(self, texts: Sequence[str], session: RewriteSession) -> bytes:
        """The file with rewritten texts; the original bytes when nothing changes."""
        require_same_length(texts, self.fields)
        if not self.cleaned and all(t == f.text for t, f in zip(texts, self.fields, strict=True)):
            return self.original
        return self.rebuild_fn(texts, session)


class FileHandler:
    """Interface every format module implements as a module-level `HANDLER` instance."""

    format: str = ""

    def sniff(self, data: bytes) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def extract(self, data: bytes, ctx: HandlerContext) -> ExtractedFile:  # pragma: no cover
        raise NotImplementedError


def require_same_length(texts: Sequence[str], fields: Sequence[TextField]) -> None:
    if len(texts) != len(fields):
        raise ContentError("rewritten field count does not match the file")
