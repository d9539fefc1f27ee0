"""Durability: encryption at rest, restart recovery, lockdown, control socket, graceful stop."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

from gateway.control import run_command
from gateway.errors import SpoolError
from gateway.metrics import Metrics
from gateway.service import Service
from gateway.spool import Envelope, Spool, SpoolWriter
from tests.relay._helpers import (
    EventLog,
    HeldSyncPass,
    RawClient,
    Sink,
    make_config,
    message,
    send_sync,
    wait_until,
)

MARKER = "PlaintextCanary-7f3a9c"


def _all_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def _committed(spool: Spool, body: bytes, sender: str = "a@practice.test") -> SpoolWriter:
    """The writer of a message committed to `spool`: small, so held in memory until the
    sync thread writes it at commit."""
    writer = spool.open_writer(Envelope(sender, ("b@lab.test",)))
    writer.write(body)
    await writer.commit()
    return writer


async def test_spool_queue_and_quarantine_files_hold_no_plaintext(portique_factory, monkeypatch):
    import gateway.service

    release = threading.Event()
    real = gateway.service.process_message

    def slow_pipeline(raw, copies, engine, **_settings):
        release.wait(10)
        return real(raw, copies, engine)

    monkeypatch.setattr(gateway.service, "process_message", slow_pipeline)
    # Relay to a closed port: the copy stays queued on disk.
    svc = await portique_factory(
        _closed_port(),
        routes=[
            {"name": "labs", "match": ["*@lab.test"], "action": "redact", "connector": "relay"},
            {"name": "all", "match": ["*"], "action": "deliver", "connector": "relay"},
        ],
    )
    data = message(subject=MARKER, body=(MARKER + " ligne\r\n") * 50)
    await asyncio.to_thread(send_sync, svc.smtp_port, data, rcpts=("lab@lab.test", "x@other.test"))
    spool_files = _all_bytes(svc.cfg.data_dir / "spool")
    assert len(spool_files) == 1  # the committed message, waiting for processing
    release.set()
    await wait_until(lambda: svc.processing_idle() and len(svc.queue.list()) >= 2)
    queue_files = _all_bytes(svc.cfg.data_dir / "queue")
    held_files = _all_bytes(svc.cfg.data_dir / "quarantine")
    assert queue_files and held_files
    for path, content in spool_files + queue_files + held_files:
        assert MARKER.encode() not in content, path
        assert b"practice.test" not in content, path
    # ... and the sealed copies do open to the original.
    (held,) = svc.quarantine.list()
    assert svc.quarantine.data(held.id).endswith(data)


async def test_restart_resumes_queue_and_spool(tmp_path):
    data_dir = tmp_path / "data"
    cfg = make_config(data_dir, _closed_port())
    svc = Service(cfg)
    await svc.start()
    await asyncio.to_thread(send_sync, svc.smtp_port, message())
    await wait_until(lambda: svc.processing_idle() and svc.queue.list())
    await svc.stop(grace=0.5)
    # A committed but unprocessed spool file, as a crash would leave it.
    (data_dir / "spool" / "incoming" / "dead.tmp").write_bytes(b"half a transfer")

    sink = await Sink().start()
    try:
        svc2 = Service(make_config(data_dir, sink.port))
        # A process that never saw the message decided (another worker, or after a
        # restart) still labels its delivery by route and action.
        metrics = Metrics()
        svc2.events.subscribe(metrics)
        await svc2.start()
        await sink.wait_for(1)
        assert not (data_dir / "spool" / "incoming" / "dead.tmp").exists()
        await wait_until(lambda: svc2.queue.list() == [])
        await svc2.stop(grace=0.5)
        delivered = {
            "route": "all",
            "action": "deliver",
            "outcome": "delivered",
        }
        assert (
            metrics.registry.get_sample_value("portique_messages_delivered_total", delivered) == 1
        )
    finally:
        await sink.stop()


async def test_lockdown_pauses_delivery_survives_restart_and_works_offline(tmp_path):
    data_dir = tmp_path / "data"
    sink = await Sink().start()
    try:
        log = EventLog()
        svc = Service(make_config(data_dir, sink.port))
        svc.events.subscribe(log)
        await svc.start()
        assert (data_dir / "control.sock").stat().st_mode & 0o777 == 0o600
        assert (
            await asyncio.to_thread(run_command, data_dir, "lockdown.on", {"user": "ops"}) is True
        )
        assert log.kinds("lockdown") == [{"on": True, "user": "ops"}]
        await asyncio.to_thread(send_sync, svc.smtp_port, message())  # still accepted
        await wait_until(lambda: svc.processing_idle() and svc.queue.list())
        await asyncio.sleep(0.5)
        assert sink.messages == []
        listed = await asyncio.to_thread(run_command, data_dir, "queue.list")
        assert [e["recipients"] for e in listed] == [["lab@lab.test"]]
        shown = await asyncio.to_thread(
            run_command, data_dir, "queue.show", {"id": listed[0]["id"]}
        )
        assert shown["id"] == listed[0]["id"]
        await svc.stop(grace=0.5)
        assert not (data_dir / "control.sock").exists()

        # No gateway running: the same commands act on data_dir directly.
        assert run_command(data_dir, "lockdown.status") is True
        assert [e["id"] for e in run_command(data_dir, "queue.list")] == [listed[0]["id"]]

        svc2 = Service(make_config(data_dir, sink.port))
        await svc2.start()
        assert svc2.queue.lockdown is True
        await asyncio.sleep(0.5)
        assert sink.messages == []
        assert await asyncio.to_thread(run_command, data_dir, "lockdown.off") is False
        await sink.wait_for(1)
        await svc2.stop(grace=0.5)
    finally:
        await sink.stop()


async def test_queue_retry_and_delete_through_control_socket(portique_factory):
    svc = await portique_factory(_closed_port(), queue={"retry_initial": 3600.0})
    await asyncio.to_thread(send_sync, svc.smtp_port, message())
    await wait_until(lambda: svc.queue.list() and svc.queue.list()[0].attempts == 1)
    (entry,) = svc.queue.list()
    data_dir = svc.cfg.data_dir
    assert await asyncio.to_thread(run_command, data_dir, "queue.retry", {"id": entry.id}) is True
    await wait_until(lambda: svc.queue.list()[0].attempts == 2)
    assert await asyncio.to_thread(run_command, data_dir, "queue.delete", {"id": entry.id}) is True
    assert svc.queue.list() == []
    assert not list((data_dir / "queue").glob("*.msg"))
    assert await asyncio.to_thread(run_command, data_dir, "queue.delete", {"id": entry.id}) is False


async def test_stop_answers_421_to_new_sessions_and_finishes_open_transactions(
    portique_factory, sink
):
    svc = await portique_factory(sink.port)
    busy = await RawClient.connect(svc.smtp_port)
    await busy.reply()
    await busy.cmd("EHLO client.test")
    await busy.cmd("MAIL FROM:<dr@practice.test>")
    await busy.cmd("RCPT TO:<lab@lab.test>")
    assert (await busy.cmd("DATA")).startswith("354")
    await busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")

    stopping = asyncio.create_task(svc.stop(grace=5.0))
    await asyncio.sleep(0.2)
    late = await RawClient.connect(svc.smtp_port)
    assert (await late.reply()).startswith("421 4.3.2")
    await late.close()

    await busy.send(b"second half\r\n.\r\n")
    assert (await busy.reply()).startswith("250")
    await busy.close()
    await stopping
    # Accepted during shutdown: durable, delivered after the next start.
    assert len(list((svc.cfg.data_dir / "spool" / "active").iterdir())) + len(sink.messages) >= 1


@pytest.mark.parametrize("size_kib", [1, 3000])
async def test_spool_round_trip_small_and_multi_chunk(portique_factory, sink, size_kib):
    svc = await portique_factory(sink.port)
    line = b"0123456789" * 7 + b"\r\n"
    body = line * (size_kib * 1024 // len(line))
    data = message() + body
    await asyncio.to_thread(send_sync, svc.smtp_port, data)
    (got,) = await sink.wait_for(1)
    assert got.data.endswith(data)


async def test_recover_keeps_transfers_of_a_live_process_and_drops_dead_ones(tmp_path, keyring):
    from crypto.aead import STREAM_CHUNK, Sealer
    from gateway.config import SpoolConfig
    from gateway.spool import SPILL_BYTES, Envelope, Spool

    spool = Spool(tmp_path, Sealer(keyring), SpoolConfig())
    live = spool.open_writer(Envelope("a@practice.test", ("b@lab.test",)))
    live.write(b"x" * (SPILL_BYTES + STREAM_CHUNK))  # past the in-memory part: on disk, locked
    dead = spool.incoming / "dead.tmp"
    dead.write_bytes(b"left by a killed process")
    other = Spool(tmp_path, Sealer(keyring), SpoolConfig())  # as a second acceptor would
    assert other.recover() == []
    assert not dead.exists()
    assert (spool.incoming / f"{live.spool_id}.tmp").exists()
    live.abort()


async def test_removal_of_a_processed_entry_is_done_by_the_sync_thread(tmp_path, keyring):
    from crypto.aead import Sealer
    from gateway.config import SpoolConfig

    spool = Spool(tmp_path, Sealer(keyring), SpoolConfig())
    await spool.start()
    ids = []
    for _ in range(3):
        ids.append((await _committed(spool, b"Subject: x\r\n\r\nbody\r\n")).spool_id)
    loop_thread = threading.get_ident()
    unlinked_on: list[int] = []
    real_unlink = spool._unlink

    def watched_unlink(paths):
        unlinked_on.extend(threading.get_ident() for _ in paths)
        real_unlink(paths)

    spool._unlink = watched_unlink  # type: ignore[method-assign]
    real_reuse = spool._reuse_files

    def watched_reuse(removals, fresh):
        # Removals a commit pass reuses as its files are not unlinked: count them here.
        reused = real_reuse(removals, fresh)
        unlinked_on.extend(threading.get_ident() for _ in reused)
        return reused

    spool._reuse_files = watched_reuse  # type: ignore[method-assign]
    spool.remove(ids[0])
    assert spool.pending_ids() == sorted(ids)  # still there until the next pass
    await wait_until(lambda: spool.pending_ids() == sorted(ids[1:]))
    # A waiting removal is done, at the latest, by the pass that makes the next commit durable.
    spool.remove(ids[1])
    writer = await _committed(spool, b"Subject: y\r\n\r\nbody\r\n")
    assert spool.pending_ids() == sorted([ids[2], writer.spool_id])
    assert len(unlinked_on) == 2 and loop_thread not in unlinked_on
    # Waiting removals are done by stop(); after it, `remove` unlinks at once.
    spool.remove(ids[2])
    await spool.stop()
    assert spool.pending_ids() == [writer.spool_id]
    spool.remove(writer.spool_id)
    assert spool.pending_ids() == []
    assert spool.stats.removal_failures == 0


async def test_a_spool_entry_that_does_not_open_is_set_aside_not_retried(tmp_path):
    data_dir = tmp_path / "data"
    cfg = make_config(data_dir, _closed_port())
    svc = Service(cfg)
    await svc.start()
    await svc.stop(grace=0.1)
    (data_dir / "spool" / "active" / "forged").write_bytes(b"PQ1 not a sealed stream at all")
    svc2 = Service(cfg)
    await svc2.start()
    try:
        await wait_until(svc2.processing_idle)
        assert (data_dir / "spool" / "unreadable" / "forged").exists()
    finally:
        await svc2.stop(grace=0.1)


def test_envelope_json_keeps_every_field() -> None:
    """The spool's envelope record round-trips every field (a field added to Envelope
    but not to its hand-written to_json would be lost at recovery)."""
    from dataclasses import fields

    from gateway.spool import Envelope

    envelope = Envelope(
        mail_from="cabinet@cabinet.test",
        recipients=("a@labo.test", "b@labo.test"),
        client="192.0.2.7",
        helo="poste-accueil",
        user="secretariat",
        tls=True,
        received_at=1_790_000_000.25,
        smtp_utf8=True,
    )
    defaults = Envelope(mail_from="", recipients=())
    assert all(getattr(envelope, f.name) != getattr(defaults, f.name) for f in fields(Envelope)), (
        "give every field a non-default value above"
    )
    assert Envelope.from_json(envelope.to_json()) == envelope


async def test_a_commit_that_fails_on_disk_raises_and_leaves_no_entry_or_descriptor(
    tmp_path, keyring, monkeypatch
):
    import os

    import gateway.spool as spool_module
    from crypto.aead import Sealer
    from gateway.config import SpoolConfig
    from gateway.errors import SpoolError

    spool = Spool(tmp_path, Sealer(keyring), SpoolConfig())
    await spool.start()
    try:
        # Small messages stay in memory and are written by the sync thread at commit.
        writer = await _committed(spool, b"Subject: kept\r\n\r\nbody\r\n")
        fds_before = len(os.listdir("/proc/self/fd"))

        def failing_sync(fd):
            raise OSError(5, "Input/output error")

        # One message in the pass: its own fdatasync (no syncfs), which fails.
        monkeypatch.setattr(spool_module.os, "fdatasync", failing_sync)
        with pytest.raises(SpoolError):
            await _committed(spool, b"Subject: lost\r\n\r\nbody\r\n")
        monkeypatch.undo()
        assert spool.pending_ids() == [writer.spool_id]  # no 250, no committed entry
        assert len(os.listdir("/proc/self/fd")) == fds_before  # its file was closed
        again = await _committed(spool, b"Subject: after\r\n\r\nbody\r\n")  # still works
        assert spool.pending_ids() == sorted([writer.spool_id, again.spool_id])
    finally:
        await spool.stop()


async def test_a_removed_entry_file_is_reused_for_a_message_committed_in_the_same_pass(
    tmp_path, keyring, monkeypatch
):
    import os

    import gateway.spool as spool_module
    from crypto.aead import Sealer
    from gateway.config import SpoolConfig

    monkeypatch.setattr(spool_module, "REMOVAL_DELAY", 30.0)  # the removal waits for a commit
    spool = Spool(tmp_path, Sealer(keyring), SpoolConfig())
    await spool.start()
    try:
        old = await _committed(
            spool, b"Subject: old\r\n\r\n" + b"a longer body than the next one\r\n" * 200
        )
        old_file = spool.active / old.spool_id
        old_file.chmod(0o604)  # a mark a created file would not have
        old_inode, old_size = old_file.stat().st_ino, old_file.stat().st_size
        spool.remove(old.spool_id)
        # The same pass removes `old` and writes `new`.
        new = await _committed(spool, b"Subject: new\r\n\r\nshort\r\n", "c@practice.test")
        assert spool.pending_ids() == [new.spool_id]
        new_file = spool.active / new.spool_id
        # The old file, renamed and overwritten: its inode and its mark.
        assert new_file.stat().st_ino == old_inode
        assert new_file.stat().st_mode & 0o777 == 0o604
        assert new_file.stat().st_size < old_size  # cut to the new content's length
        envelope, body = spool.read(new.spool_id)
        assert envelope.mail_from == "c@practice.test"
        assert body == b"Subject: new\r\n\r\nshort\r\n"
        assert os.listdir(spool.incoming) == []
    finally:
        await spool.stop()


async def test_a_reused_file_whose_write_fails_is_deleted_and_its_entry_stays_removed(
    tmp_path, keyring, monkeypatch
):
    import os

    import gateway.spool as spool_module
    from crypto.aead import Sealer
    from gateway.config import SpoolConfig
    from gateway.errors import SpoolError

    monkeypatch.setattr(spool_module, "REMOVAL_DELAY", 30.0)
    spool = Spool(tmp_path, Sealer(keyring), SpoolConfig())
    await spool.start()
    try:
        old = await _committed(spool, b"Subject: old\r\n\r\nbody\r\n")
        spool.remove(old.spool_id)

        def failing_pwritev(fd, buffers, offset):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(spool_module.os, "pwritev", failing_pwritev)
        with pytest.raises(SpoolError):
            await _committed(spool, b"Subject: new\r\n\r\nbody\r\n")
        monkeypatch.undo()
        # Neither the processed entry nor the failed transfer is left, and nothing is
        # half-written in incoming/ for recover() to find.
        assert spool.pending_ids() == []
        assert os.listdir(spool.incoming) == []
        assert spool.recover() == []
    finally:
        await spool.stop()


async def test_a_short_write_of_a_held_message_is_completed(tmp_path, keyring, monkeypatch):
    import os

    import gateway.spool as spool_module
    from crypto.aead import Sealer
    from gateway.config import SpoolConfig

    spool = Spool(tmp_path, Sealer(keyring), SpoolConfig())
    await spool.start()
    try:
        real_pwrite = os.pwrite

        def short_pwritev(fd, buffers, offset):  # only 10 bytes of the first buffer
            return real_pwrite(fd, bytes(buffers[0][:10]), offset)

        monkeypatch.setattr(spool_module.os, "pwritev", short_pwritev)
        body = b"Subject: short\r\n\r\n" + b"line of the body\r\n" * 100
        writer = await _committed(spool, body)
        monkeypatch.undo()
        assert spool.read(writer.spool_id)[1] == body
    finally:
        await spool.stop()


def _spool(tmp_path: Path, keyring) -> Spool:
    from crypto.aead import Sealer
    from gateway.config import SpoolConfig

    return Spool(tmp_path, Sealer(keyring), SpoolConfig())


async def _in_held_pass(
    tmp_path: Path, keyring, monkeypatch
) -> tuple[Spool, HeldSyncPass, asyncio.Task[SpoolWriter]]:
    """A started spool whose first sync pass holds one commit (the task committing it)."""
    spool = _spool(tmp_path, keyring)
    await spool.start()
    passes = HeldSyncPass(spool, monkeypatch)
    passes.hold()
    task = asyncio.create_task(_committed(spool, b"Subject: ahead\r\n\r\nbody\r\n"))
    await wait_until(lambda: passes.started == 1)
    return spool, passes, task


async def test_a_commit_cut_off_before_its_pass_is_withdrawn_with_its_file(
    tmp_path, keyring, monkeypatch
):
    from crypto.aead import STREAM_CHUNK
    from gateway.spool import SPILL_BYTES

    spool, passes, ahead = await _in_held_pass(tmp_path, keyring, monkeypatch)
    big = spool.open_writer(Envelope("a@practice.test", ("b@lab.test",)))
    big.write(b"x" * (SPILL_BYTES + STREAM_CHUNK))  # spilled: a locked file in incoming/
    cut_off = asyncio.create_task(big.commit())
    await wait_until(lambda: len(spool._pending) == 1)  # queued behind the held pass
    cut_off.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cut_off
    assert not big.in_pass
    assert spool._pending == []
    assert list(spool.incoming.iterdir()) == []
    big.abort()  # as the session does: nothing more to drop
    passes.release()
    committed = await ahead
    await asyncio.sleep(0.1)  # another pass would have come by now
    assert spool.pending_ids() == [committed.spool_id]
    await spool.stop()


@pytest.mark.parametrize("then", ["settle", "abort"])
async def test_a_commit_cut_off_as_its_pass_ends_keeps_that_outcome(
    tmp_path, keyring, monkeypatch, then
):
    """The pass made the commit durable and resolved it, but the committing task was
    cancelled before it ran again: the commit is in pass; `settle` says it is durable,
    `abort` (no 250 will be sent) removes the entry."""
    spool = _spool(tmp_path, keyring)
    await spool.start()
    writer = spool.open_writer(Envelope("a@practice.test", ("b@lab.test",)))
    writer.write(b"Subject: x\r\n\r\nbody\r\n")
    queue_commit = spool._queue_commit

    def queue_then_cut_off(*args):
        pending = queue_commit(*args)
        # Called before the task's own wake-up (callbacks run in the order added): the
        # task is cancelled with its commit already resolved.
        pending.done.add_done_callback(lambda _: task.cancel())
        return pending

    monkeypatch.setattr(spool, "_queue_commit", queue_then_cut_off)
    task = asyncio.create_task(writer.commit())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert writer.in_pass
    if then == "settle":
        await writer.settle()
        assert not writer.in_pass
        assert spool.pending_ids() == [writer.spool_id]
    else:
        writer.abort()
        await wait_until(lambda: spool.pending_ids() == [] and not spool._removals)
    await spool.stop()


async def test_a_commit_cut_off_during_its_pass_settles_or_is_dropped(
    tmp_path, keyring, monkeypatch
):
    """Cut off while its pass is under way: `settle` waits for that pass; cut off again
    there, `abort` drops the entry the pass then makes durable."""
    spool = _spool(tmp_path, keyring)
    await spool.start()
    passes = HeldSyncPass(spool, monkeypatch)
    passes.hold()
    writers = []
    for _ in range(2):
        writer = spool.open_writer(Envelope("a@practice.test", ("b@lab.test",)))
        writer.write(b"Subject: x\r\n\r\nbody\r\n")
        writers.append(writer)
    tasks = [asyncio.create_task(w.commit()) for w in writers]
    await wait_until(lambda: passes.started == 1)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task
    kept, dropped = writers
    assert kept.in_pass and dropped.in_pass
    settling = asyncio.create_task(kept.settle())
    waiting = asyncio.create_task(dropped.settle())
    await asyncio.sleep(0.05)
    assert not settling.done()
    waiting.cancel()  # as the client leaving would
    with pytest.raises(asyncio.CancelledError):
        await waiting
    dropped.abort()
    passes.release()
    await settling
    await wait_until(lambda: spool.pending_ids() == [kept.spool_id] and not spool._removals)
    await spool.stop()


async def test_stop_during_a_pass_fails_its_commits_and_keeps_none(tmp_path, keyring, monkeypatch):
    """`stop()` cancels the group-commit loop while a pass runs on in the sync thread:
    its commits end with SpoolError (451), not left waiting, and none stays in `active/`."""
    spool, passes, task = await _in_held_pass(tmp_path, keyring, monkeypatch)
    threading.Timer(0.1, passes.release).start()  # stop() waits for the thread
    await spool.stop()
    with pytest.raises(SpoolError):
        await asyncio.wait_for(task, 5)
    assert spool.pending_ids() == []


async def test_a_pass_failing_after_its_renames_keeps_no_entry(tmp_path, keyring, monkeypatch):
    """The directory fsync fails after the renames into `active/`: the commit gets
    SpoolError (451), so its entry must not stay there to be delivered at restart."""
    import gateway.spool

    spool = _spool(tmp_path, keyring)
    await spool.start()

    def failing_fsync(path):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(gateway.spool, "fsync_directory", failing_fsync)
    with pytest.raises(SpoolError):
        await _committed(spool, b"Subject: x\r\n\r\nbody\r\n")
    assert spool.pending_ids() == []
    assert list(spool.incoming.iterdir()) == []
    await spool.stop()
