"""Durable, encrypted spool: where an accepted message lives between the 250 and the queue.

Trust boundary: the message bytes and envelope are untrusted input from the network;
they are stored only sealed (AES-256-GCM, crypto.aead), never in plaintext on disk.

Layout under `<data_dir>/spool/`:
    incoming/<id>.tmp   a DATA transfer in progress (or one that never got its 250)
    active/<id>         a committed message: fdatasync'ed, renamed, directory fsync'ed

A spool file is one sealed stream (crypto.aead.StreamSealer, AAD `spool:<id>`): frame 0
is the envelope as JSON, the following frames are the message bytes, and the last frame
carries the final flag, so a file cut short does not open.

Invariants:
- `SpoolWriter.commit()` returns only once the file's data and its name in `active/`
  are durable; the SMTP layer replies 250 only after that. The rename into `active/`
  is the completion mark (Postfix's END record): at start, whatever is left in
  `incoming/` never got a 250 and is deleted unread.
- A commit cut off before its 250 (the SMTP reply budget, the client leaving) is not
  delivered: withdrawn if no sync pass has taken it yet; else it is being made durable
  and the session either answers with that pass's outcome (`SpoolWriter.settle`) or
  drops the entry once the pass has put it in `active/` (`SpoolWriter.abort`). Only a
  crash in between leaves it, processed at restart: a duplicate, never a loss.
- Group commit: commits that arrive within `group_commit_window_ms` of each other are
  made durable by one worker pass: one syncfs(2) for all their data (fdatasync when
  alone or where syncfs is missing), then the renames, then one fsync of `active/`.
- Small messages never touch the disk from the event loop (issue 7): sealed frames stay
  in memory up to SPILL_BYTES and the group-commit thread creates, writes, locks, syncs
  and renames their files; a larger transfer spills to `incoming/<id>.tmp` (locked)
  as soon as it passes SPILL_BYTES, as before. Either way the 250 waits for the same
  fsyncs and the rename into `active/`.
- A processed entry's removal (`remove`) is done by the same thread, in its next pass
  (at most REMOVAL_DELAY later), before that pass's directory fsync: on the event loop,
  an unlink waited ~1 ms behind the journal's commits under load. Until it is done, a
  crash leaves the entry, which is processed again at restart: a duplicate, never a
  loss (reliability promise 1). `stop()` does the removals still waiting. In a pass
  that also writes messages held in memory, a removed entry's file is renamed into
  `incoming/` as one of them and overwritten rather than unlinked (ext4's inode and
  block churn was most of the thread's time): it counts as that transfer's file from
  then on, so a crash before its rename into `active/` deletes it at start, unread.
- Spool ids are unique across processes (time, pid, randomness).
- Worker processes (gateway/workers.py): worker 0 uses `spool/` itself, worker N
  `spool/w<N>/` with the same layout, and only its own: a restarted worker recovers
  its directory and no other process reads it, so an entry is processed by one
  process. A directory whose worker no longer exists (fewer workers configured) is
  adopted by worker 0 (`adopt`: committed entries renamed into its `active/`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import itertools
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string
from pathlib import Path
from typing import BinaryIO, cast

from crypto.aead import STREAM_CHUNK, Sealer, SealError, StreamSealer, open_stream
from gateway.config import SpoolConfig
from gateway.errors import SpoolError
from gateway.threads import named_executor

_counter = itertools.count()
_JSON_BOOL = {True: "true", False: "false"}

# Sealed bytes a transfer keeps in memory before it spills to its incoming file (bytes):
# a 2 KB lab order then costs no file creation on the event loop (SpoolWriter.__init__
# was 7 % of the loop's time under load, issue 7). Frames are STREAM_CHUNK (1 MiB), and
# the unsealed frame buffer was already held per transfer, so in practice a message
# under 1 MiB is written by the commit thread and a larger one spills at its first
# frame: no more memory per session than before.
SPILL_BYTES = 256 * 1024
# First size of a transfer's frame buffer (bytes): a 2 KB lab order and most text mail
# fit, and it stays under the 256 KiB mmap threshold serve sets, so it comes from the heap
# and is reused. Not larger: the buffer is zeroed when allocated, and 64 KiB of zeroes
# per message (most of them never used) was SpoolWriter.__init__'s largest cost.
FRAME_START = 16 * 1024
# A committed message up to this size stays in memory for its processing (see
# SpoolWriter.commit): no read back from disk, no decryption, no thread hop.
KEEP_PLAINTEXT = 64 * 1024
# Seconds a processed entry may wait for its unlink when no commit pass comes first.
REMOVAL_DELAY = 0.05
# Seconds a free-space reading is reused by the disk guard at MAIL FROM.
FREE_SPACE_TTL = 1.0
# Random part of spool ids: 32 bits drawn once per process, then a counter (per-id
# getrandom calls were 1.5 % of samples); ms time + pid + counter keep ids unique.
_ID_RANDOM = secrets.token_hex(4)


class UnreadableSpoolEntry(SpoolError):
    """A committed entry that does not authenticate or parse: set aside, not retried."""


def new_spool_id() -> str:
    """Sortable by arrival, unique across processes: ms time, pid, counter, and 32
    random bits drawn once per process (a reused pid does not repeat them)."""
    return (
        f"{time.time_ns() // 1_000_000:011x}{os.getpid() & 0xFFFFF:05x}"
        f"{next(_counter) & 0xFFFF:04x}{_ID_RANDOM}"
    )


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope of one spooled message. Addresses are kept (needed to deliver)."""

    mail_from: str
    recipients: tuple[str, ...]
    client: str = ""  # peer IP address
    helo: str = ""
    user: str = ""  # SMTP AUTH login name, if any
    tls: bool = False
    received_at: float = field(default_factory=time.time)
    smtp_utf8: bool = False

    def to_json(self) -> bytes:
        """The envelope frame of a spool file: byte for byte what
        `json.dumps(fields, separators=(",", ":"))` writes (ASCII, fields in declaration
        order; tests/relay checks it), built directly: through JSONEncoder it was a
        quarter of `Spool.open_writer`, once per message. `received_at` is a finite
        float (time.time()), whose JSON form is its repr."""
        return (
            f'{{"mail_from":{_json_string(self.mail_from)},'
            f'"recipients":[{",".join(map(_json_string, self.recipients))}],'
            f'"client":{_json_string(self.client)},"helo":{_json_string(self.helo)},'
            f'"user":{_json_string(self.user)},"tls":{_JSON_BOOL[self.tls]},'
            f'"received_at":{float.__repr__(self.received_at)},'
            f'"smtp_utf8":{_JSON_BOOL[self.smtp_utf8]}}}'
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Envelope:
        d = json.loads(raw)
        d["recipients"] = tuple(d["recipients"])
        return cls(**d)


@dataclass
class SpoolStats:
    commits: int = 0  # messages made durable
    batches: int = 0  # group-commit passes (one directory fsync each)
    removal_failures: int = 0  # processed entries whose unlink failed (processed again)

    @property
    def messages_per_batch(self) -> float:
        return self.commits / self.batches if self.batches else 0.0


@dataclass(eq=False)  # compared by identity (`Spool._withdraw`), not field by field
class _PendingCommit:
    fh: BinaryIO | None  # None: the file is still to be written from `chunks`
    tmp: str  # paths as strings: a pathlib join per message cost more than the rest
    final: str
    done: asyncio.Future[None]
    chunks: list[bytes] | None = None


class SpoolWriter:
    """Receives one message's bytes during DATA and seals them chunk by chunk."""

    def __init__(self, spool: Spool, spool_id: str, envelope: Envelope) -> None:
        self.spool_id = spool_id
        self.envelope = envelope
        self.size = 0
        self._spool = spool
        self._tmp = f"{spool.incoming_prefix}{spool_id}.tmp"
        self._sealer = StreamSealer(spool.sealer, spool_aad(spool_id))
        # One buffer per transfer, filled in place and sealed when full (growing a buffer
        # line by line in 20 parallel sessions fragmented the heap). It starts at
        # FRAME_START and doubles up to STREAM_CHUNK: a fresh 1 MiB buffer per message
        # was an mmap, 256 page faults and an munmap each time (issue 7 profile).
        self._frame = bytearray(min(FRAME_START, STREAM_CHUNK))
        self._pending = 0
        self._closed = False
        self.plaintext: bytes | None = None  # set by commit() for a small message
        # A commit cut off after its sync pass took it (see `commit`), until settled.
        self._in_pass: _PendingCommit | None = None
        # Sealed frames not yet on disk (see SPILL_BYTES); the file exists only once
        # the transfer spills or the commit thread writes it.
        self._fh: BinaryIO | None = None
        self._buffered: list[bytes] = [self._sealer.seal_chunk(envelope.to_json())]
        self._buffered_size = len(self._buffered[0])

    def write(self, data: bytes) -> None:
        self.size += len(data)
        view = memoryview(data)
        while view:
            room = STREAM_CHUNK - self._pending
            take = view[:room]
            end = self._pending + len(take)
            if end > len(self._frame):
                grown = min(STREAM_CHUNK, max(2 * len(self._frame), end))
                self._frame.extend(bytes(grown - len(self._frame)))
            self._frame[self._pending : end] = take
            self._pending += len(take)
            view = view[len(take) :]
            if self._pending == STREAM_CHUNK:
                self._flush_buffer()

    def _take_pending(self) -> bytes:
        chunk = bytes(memoryview(self._frame)[: self._pending])
        self._pending = 0
        return chunk

    def _store(self, sealed: bytes) -> None:
        if self._fh is None and self._buffered_size + len(sealed) <= SPILL_BYTES:
            self._buffered.append(sealed)
            self._buffered_size += len(sealed)
            return
        try:
            if self._fh is None:
                self._spill()
            assert self._fh is not None
            self._fh.write(sealed)
        except OSError as exc:
            raise SpoolError("cannot write to the spool") from exc

    def _spill(self) -> None:
        """Create the incoming file (locked) and move the buffered frames into it."""
        try:
            self._fh = _create_locked(self._tmp)
            self._fh.writelines(self._buffered)
        except OSError as exc:
            raise SpoolError("cannot create a spool file") from exc
        self._buffered, self._buffered_size = [], 0

    def _flush_buffer(self) -> None:
        self._store(self._sealer.seal_chunk(self._take_pending()))

    async def commit(self) -> None:
        """Seal the last frame and return once the message is durable in `active/`.

        A message that fits in its last frame and in KEEP_PLAINTEXT bytes is also kept
        as `plaintext`, so the service can process it without reading it back.

        Cut off (cancelled) while its commit still waits for a sync pass, the commit is
        withdrawn: its data never reaches `active/`. Cut off once a pass has taken it,
        the data is being (or has been) made durable and cannot be called back:
        `in_pass` is then True, `settle()` waits for that pass's outcome and `abort()`
        drops the entry once the pass has made it durable."""
        try:
            last = self._take_pending()
            if len(last) == self.size and self.size <= KEEP_PLAINTEXT:
                self.plaintext = last
            self._store(self._sealer.seal_chunk(last, final=True))
            if self._fh is not None:
                self._fh.flush()
        except (OSError, SpoolError) as exc:
            self.abort()
            raise SpoolError("cannot write to the spool") from exc
        self._closed = True
        chunks, self._buffered = (self._buffered if self._fh is None else None), []
        pending = self._spool._queue_commit(self._fh, self._tmp, self.spool_id, chunks)
        try:
            await pending.done
        except asyncio.CancelledError:
            if not self._spool._withdraw(pending):
                self._await_pass(pending)
            raise

    def _await_pass(self, pending: _PendingCommit) -> None:
        """Keep hold of a commit cut off after its sync pass took it. Awaiting its
        `done` future and being cancelled cancelled that future too, unless the pass had
        already resolved it: then a fresh one takes the outcome the pass will give."""
        if pending.done.cancelled():
            pending.done = asyncio.get_running_loop().create_future()
        self._in_pass = pending

    @property
    def in_pass(self) -> bool:
        """Whether `commit()` was cut off after a sync pass took the message: it is (or
        is being) made durable, and `settle()` tells how that ended."""
        return self._in_pass is not None

    async def settle(self) -> None:
        """After `commit()` was cut off once its pass had started (`in_pass`): return
        once that pass has made the message durable, or raise SpoolError if it failed.
        Bounded by the pass already running (its fsyncs), not by a new one. Cut off
        again, the commit stays in pass, for `abort()`."""
        pending = self._in_pass
        assert pending is not None
        try:
            await pending.done
        except asyncio.CancelledError:
            self._await_pass(pending)
            raise
        except SpoolError:
            self._in_pass = None
            raise
        self._in_pass = None

    def abort(self) -> None:
        """Drop a transfer that will not get a 250. A commit cut off in its sync pass
        (`in_pass`) is removed from `active/` once the pass has put it there: without
        its 250 the client sends it again, and it must not go out twice."""
        pending, self._in_pass = self._in_pass, None
        if pending is not None:
            pending.done.add_done_callback(self._remove_if_durable)
            return
        if self._closed:
            return
        self._closed = True
        self._pending = 0
        self._buffered, self._buffered_size = [], 0
        if self._fh is None:
            return
        try:
            self._fh.close()
        finally:
            _unlink_if_present(self._tmp)

    def _remove_if_durable(self, done: asyncio.Future[None]) -> None:
        """`done` callback of an aborted commit in pass: drop the entry it made."""
        if not done.cancelled() and done.exception() is None:
            self._spool.remove(self.spool_id)


def _fail_commits(batch: Sequence[_PendingCommit], reason: str) -> None:
    """A pass that failed or whose outcome is unknown: its commits get SpoolError (451),
    and their files go, `final` included (renamed before a later step failed), so that
    none is delivered at restart as well."""
    for p in batch:
        for path in (p.tmp, p.final):
            with contextlib.suppress(OSError):
                _unlink_if_present(path)
        if not p.done.done():
            p.done.set_exception(SpoolError(reason))


def _unlink_if_present(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _create_locked(tmp: str) -> BinaryIO:
    """Create `tmp` exclusively and hold an flock on it until it is closed: tells
    `recover()` in another process sharing this spool that the transfer is alive."""
    fh: BinaryIO = open(tmp, "xb")  # noqa: SIM115 - closed by the caller
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        _unlink_if_present(tmp)
        raise
    return fh


def _write_locked(tmp: str, chunks: Sequence[bytes], *, reused: bool = False) -> int:
    """`_create_locked` for a transfer held in memory, written at once: returns the open
    descriptor. Raw descriptor calls: the sync thread releases and re-takes the GIL
    around each system call, and Python's open() adds an fstat, an ioctl and an lseek
    to the openat (each a wait for the event loop to let go of the GIL under load).

    `reused`: `tmp` is a processed entry's file renamed there (`Spool._reuse_files`):
    overwritten from its start and cut to the new length, not created."""
    create = 0 if reused else os.O_CREAT | os.O_EXCL
    fd = os.open(tmp, os.O_WRONLY | os.O_CLOEXEC | create, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        total = sum(map(len, chunks))
        written = os.pwritev(fd, chunks, 0) if chunks else 0
        if written < total:  # a short write: the rest, as write() would
            data = memoryview(b"".join(chunks))
            while written < total:
                written += os.pwrite(fd, data[written:], written)
        if reused:
            os.ftruncate(fd, total)
    except OSError:
        os.close(fd)
        _unlink_if_present(tmp)
        raise
    return fd


def spool_aad(spool_id: str) -> bytes:
    return f"spool:{spool_id}".encode()


class Spool:
    def __init__(
        self, data_dir: Path, sealer: Sealer, cfg: SpoolConfig, *, subdir: str = ""
    ) -> None:
        # subdir: "w<N>" for worker N > 0 (see the module docstring), "" otherwise.
        self.root = data_dir / "spool" / subdir if subdir else data_dir / "spool"
        self.incoming = self.root / "incoming"
        self.active = self.root / "active"
        # `incoming/` and `active/` with a trailing separator, for the per-message paths.
        self.incoming_prefix = os.path.join(self.incoming, "")
        self.active_prefix = os.path.join(self.active, "")
        self.sealer = sealer
        self.cfg = cfg
        self.stats = SpoolStats()
        for d in (self.root, self.incoming, self.active):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._pending: list[_PendingCommit] = []
        self._syncing: list[_PendingCommit] = []  # the batch the sync thread has
        self._removals: list[str] = []  # processed entries, unlinked by the next pass
        self._removal_wake: asyncio.TimerHandle | None = None
        # A thread of its own: durability must not queue behind unrelated blocking work.
        self._sync_thread = named_executor(1, "spool-sync")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._free: tuple[float, int] | None = None  # (monotonic time, free bytes)

    # --- lifecycle ----------------------------------------------------------------

    def recover(self) -> list[str]:
        """Delete transfers that never got a 250; return committed ids, oldest first.

        A transfer still locked belongs to a live acceptor process sharing this spool
        and is left alone.
        """
        for tmp in self.incoming.iterdir():
            try:
                with open(tmp, "rb") as fh:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # in progress in another process
            except FileNotFoundError:
                continue
            tmp.unlink(missing_ok=True)
        return self.pending_ids()

    def adopt(self, other_root: Path) -> list[str]:
        """Take over the committed entries of another spool directory whose process is
        gone; returns their ids. Its unfinished transfers (never answered 250) are
        dropped as `recover()` would. The renames are made durable before returning."""
        moved: list[str] = []
        incoming, active = other_root / "incoming", other_root / "active"
        if incoming.is_dir():
            for tmp in incoming.iterdir():
                tmp.unlink(missing_ok=True)
        if not active.is_dir():
            return moved
        for entry in sorted(active.iterdir()):
            if entry.name.startswith("."):
                continue
            os.rename(entry, self.active / entry.name)
            moved.append(entry.name)
        if moved:
            fsync_directory(self.active)
            fsync_directory(active)
        return moved

    def pending_ids(self) -> list[str]:
        return sorted(p.name for p in self.active.iterdir() if not p.name.startswith("."))

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._group_commit_loop(), name="spool-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._wake = None  # from now on, `remove` unlinks at once
        self._sync_thread.shutdown(wait=True)
        self._unlink(self._take_removals())
        # A pass the cancel above cut off ran on in the sync thread, its outcome unseen:
        # its commits get no 250, so nothing of theirs may stay to be delivered.
        _fail_commits(self._syncing, "spool stopped during commit")
        self._syncing = []
        for p in self._pending:
            if not p.done.done():
                p.done.set_exception(SpoolError("spool stopped before commit"))
        self._pending.clear()

    # --- writing ------------------------------------------------------------------

    def open_writer(self, envelope: Envelope, spool_id: str | None = None) -> SpoolWriter:
        return SpoolWriter(self, spool_id or new_spool_id(), envelope)

    def _queue_commit(
        self, fh: BinaryIO | None, tmp: str, spool_id: str, chunks: list[bytes] | None
    ) -> _PendingCommit:
        """Queue a transfer for the next sync pass; its `done` resolves with the pass."""
        if self._wake is None:
            raise SpoolError("spool not started")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        final = self.active_prefix + spool_id
        pending = _PendingCommit(fh, tmp, final, done, chunks)
        self._pending.append(pending)
        self._wake.set()
        return pending

    def _withdraw(self, pending: _PendingCommit) -> bool:
        """Take back a queued commit that no sync pass has taken yet: its file (if it
        spilled) is closed and deleted, and nothing is left to track. False once a pass
        has taken it (the group-commit loop takes a batch and hands it to the sync
        thread in one step, so "taken" means "being made durable")."""
        for i, queued in enumerate(self._pending):
            if queued is pending:
                del self._pending[i]
                break
        else:
            return False
        if pending.fh is not None:
            try:
                pending.fh.close()
            finally:
                _unlink_if_present(pending.tmp)
        pending.chunks = None
        return True

    async def _group_commit_loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.cfg.group_commit_window_ms > 0:
                await asyncio.sleep(self.cfg.group_commit_window_ms / 1000)
            batch, self._pending = self._pending, []
            removals = self._take_removals()
            if not batch:
                if removals:
                    await loop.run_in_executor(self._sync_thread, self._unlink, removals)
                continue
            self._syncing = batch  # until the pass's outcome is given (see stop)
            try:
                await loop.run_in_executor(self._sync_thread, self._make_durable, batch, removals)
            except Exception as exc:
                self._syncing = []
                _fail_commits(batch, "spool commit failed")
                del exc
                continue
            self._syncing = []
            self.stats.commits += len(batch)
            self.stats.batches += 1
            for p in batch:
                if not p.done.done():
                    p.done.set_result(None)

    def _take_removals(self) -> list[str]:
        if self._removal_wake is not None:
            self._removal_wake.cancel()
            self._removal_wake = None
        removals, self._removals = self._removals, []
        return removals

    def _unlink(self, paths: Sequence[str]) -> None:
        for path in paths:
            try:
                _unlink_if_present(path)
            except OSError:
                self.stats.removal_failures += 1  # the entry is processed again at restart

    def _reuse_files(self, removals: Sequence[str], fresh: Sequence[_PendingCommit]) -> set[str]:
        """Remove the processed entries in `removals`: as many as there are transfers in
        `fresh` (held in memory, their file not yet written) are renamed to be those
        transfers' incoming files, to be overwritten; the others are unlinked. Returns
        the incoming paths that now hold a reused file.

        Why: an unlink then a create cost ext4 an inode eviction, the freeing of the
        file's blocks, then an inode and blocks again; `unlink` alone was 31 % of the
        sync thread's time under load (perf). A renamed file is in `incoming/` until its
        new content is durable, like a created one: a crash in between leaves it there,
        and `recover()` deletes it unread. Its entry has left `active/` either way, which
        the pass's directory fsync makes durable, as it did the unlink."""
        reused: set[str] = set()
        for path, p in zip(removals, fresh, strict=False):
            try:
                os.rename(path, p.tmp)
            except FileNotFoundError:
                continue
            except OSError:
                self.stats.removal_failures += 1  # the entry is processed again at restart
                continue
            reused.add(p.tmp)
        self._unlink(removals[len(fresh) :])
        return reused

    def _make_durable(self, batch: Sequence[_PendingCommit], removals: Sequence[str]) -> None:
        """One pass for a batch: data durable, then names durable, in O(1) sync calls.
        The processed entries in `removals` are removed first (renamed to be reused by
        the batch's files where it has some to write, `_reuse_files`, else unlinked), so
        the directory fsync makes their removal durable too.

        One message: fdatasync it. Several: one syncfs(2) of the spool's filesystem
        covers every file's data at once (per-file fdatasyncs serialise on the
        journal: 32 files took ~170 ms on ext4, see load-tests/bench_spool.py).
        Then the renames into `active/`, made durable by one directory fsync.
        """
        reused = self._reuse_files(removals, [p for p in batch if p.fh is None])
        fds: list[int] = []  # every file of the batch, open until its data is durable
        written: list[int] = []  # those written here (closed here; spilled ones by p.fh)
        try:
            for p in batch:
                if p.fh is None:
                    # Buffered in memory until now (SPILL_BYTES): written here, off the loop.
                    fd = _write_locked(p.tmp, p.chunks or (), reused=p.tmp in reused)
                    p.chunks = None
                    written.append(fd)
                    fds.append(fd)
                else:
                    p.fh.flush()
                    fds.append(p.fh.fileno())
            if self.cfg.fsync:
                if len(fds) == 1 or not sync_filesystem(fds[0]):
                    for fd in fds:
                        os.fdatasync(fd)
            while written:
                os.close(written.pop())
            for p in batch:
                if p.fh is not None:
                    p.fh.close()
            for p in batch:
                os.rename(p.tmp, p.final)
            if self.cfg.fsync:
                fsync_directory(self.active)
        except OSError as exc:
            for fd in written:
                with contextlib.suppress(OSError):
                    os.close(fd)
            for p in batch:
                if p.fh is not None and not p.fh.closed:
                    p.fh.close()
            raise SpoolError("spool commit failed") from exc

    # --- reading ------------------------------------------------------------------

    def read(self, spool_id: str) -> tuple[Envelope, bytes]:
        """Open a committed message. Raises SpoolError if it is missing or does not open."""
        path = self.active / spool_id
        try:
            with open(path, "rb") as fh:
                chunks = open_stream(self.sealer, fh, spool_aad(spool_id))
                envelope = Envelope.from_json(next(chunks))
                # One allocation for the result; the chunk list is freed right after.
                body = b"".join(list(chunks))
        except OSError as exc:
            raise SpoolError(f"spool entry {spool_id} cannot be read") from exc
        except (SealError, StopIteration, ValueError, TypeError, KeyError) as exc:
            raise UnreadableSpoolEntry(f"spool entry {spool_id} does not open") from exc
        return envelope, body

    def set_aside(self, spool_id: str) -> Path:
        """Move an entry that does not open (wrong key, damaged disk) out of the way.

        It is kept, sealed, in `spool/unreadable/` for the operator: never deleted,
        never retried in a loop.
        """
        target = self.root / "unreadable"
        target.mkdir(exist_ok=True, mode=0o700)
        os.rename(self.active / spool_id, target / spool_id)
        return target / spool_id

    def size_of(self, spool_id: str) -> int:
        """Bytes on disk of a committed entry (about its plaintext size); 0 if gone."""
        try:
            return (self.active / spool_id).stat().st_size
        except OSError:
            return 0

    def remove(self, spool_id: str) -> None:
        """Drop a processed entry: unlinked by the sync thread's next pass (see the
        module docstring), or now if the spool is not running."""
        path = self.active_prefix + spool_id  # as `_commit` names it: no pathlib join
        if self._wake is None:
            self._unlink([path])
            return
        self._removals.append(path)
        if self._removal_wake is None:
            # Under load a commit pass comes first; a pass of its own costs a hand-off.
            self._removal_wake = asyncio.get_running_loop().call_later(
                REMOVAL_DELAY, self._wake.set
            )

    def free_bytes(self) -> int:
        """Free bytes on the spool's filesystem, re-read at most every FREE_SPACE_TTL
        seconds (a statvfs per MAIL FROM was ~1 % of samples under load; the guard
        keeps several maximum-size messages of margin, so a second-old figure is safe)."""
        now = time.monotonic()
        if self._free is None or now - self._free[0] >= FREE_SPACE_TTL:
            self._free = (now, shutil.disk_usage(self.root).free)
        return self._free[1]


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return cast(Callable[[int], int], func)


_syncfs = _load_syncfs() if sys.platform.startswith("linux") else None


def sync_filesystem(fd: int) -> bool:
    """syncfs(2) on the filesystem holding `fd`. False if unavailable (caller falls back).

    Raises OSError if the kernel reports a writeback error (Linux >= 5.8).
    """
    if _syncfs is None:
        return False
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return True


def fsync_directory(path: Path) -> None:
    """Make renames and creations inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
