"""Inbound SMTP behaviour on real sockets: relay control, limits, smuggling, TLS, AUTH."""

from __future__ import annotations

import asyncio
import smtplib
import ssl

import pytest
from argon2 import PasswordHasher

import gateway.spool
from gateway.errors import SpoolError
from gateway.metrics import Metrics
from tests.relay._helpers import (
    HeldSyncPass,
    RawClient,
    message,
    send_sync,
    strip_received,
    wait_until,
)

NIR = "1 85 05 78 006 084 36"


async def test_fifty_parallel_sessions_all_arrive(portique_factory, sink):
    svc = await portique_factory(sink.port)
    datas = [message(subject=f"n{i}", message_id=f"<p{i}@practice.test>") for i in range(50)]
    results = await asyncio.gather(*(asyncio.to_thread(send_sync, svc.smtp_port, d) for d in datas))
    assert all(r == {} for r in results)
    got = await sink.wait_for(50, within=60)
    assert sorted(strip_received(m.data) for m in got) == sorted(datas)


async def test_unlisted_network_without_auth_cannot_relay(portique_factory, sink):
    svc = await portique_factory(sink.port, smtp={"allowed_networks": ["10.0.0.0/8"]})
    c = await RawClient.connect(svc.smtp_port)
    assert (await c.reply()).startswith("220")
    assert (await c.cmd("EHLO client.test")).startswith("250")
    assert (await c.cmd("MAIL FROM:<dr@practice.test>")).startswith("250")
    for rcpt in ("lab@lab.test", "someone@elsewhere.example", "postmaster@portique.test"):
        assert (await c.cmd(f"RCPT TO:<{rcpt}>")).startswith("554 5.7.1")
    assert not (await c.cmd("DATA")).startswith("354")
    await c.close()
    await asyncio.sleep(0.3)
    assert sink.messages == []


async def test_starttls_then_auth_relays_from_unlisted_network(portique_factory, sink, pki):
    password = "correct horse battery staple"
    svc = await portique_factory(
        sink.port,
        smtp={
            "allowed_networks": ["10.0.0.0/8"],
            "tls_cert": str(pki.server_cert),
            "tls_key": str(pki.server_key),
            "users": [{"name": "imaging", "password_hash": PasswordHasher().hash(password)}],
        },
    )
    data = message()

    def dialogue() -> tuple[bool, bool, dict]:
        with smtplib.SMTP("127.0.0.1", svc.smtp_port, timeout=30) as c:
            c.ehlo("client.test")
            auth_before_tls = c.has_extn("auth")
            c.starttls(context=pki.client_context())
            c.ehlo("client.test")
            with pytest.raises(smtplib.SMTPAuthenticationError):
                c.login("imaging", "wrong password")
            c.login("imaging", password)
            return (
                auth_before_tls,
                c.has_extn("auth"),
                c.sendmail("dr@practice.test", ["lab@lab.test"], data),
            )

    before, after, refused = await asyncio.to_thread(dialogue)
    assert before is False  # AUTH only after STARTTLS
    assert after is True
    assert refused == {}
    (got,) = await sink.wait_for(1)
    assert b"with ESMTPSA id" in got.data
    assert strip_received(got.data) == data


async def test_self_signed_certificate_is_generated_when_none_configured(portique_factory, sink):
    svc = await portique_factory(sink.port)
    assert (svc.cfg.data_dir / "tls" / "smtp.pem").exists()
    assert (svc.cfg.data_dir / "tls" / "smtp.key").stat().st_mode & 0o077 == 0

    def dialogue() -> dict:
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(svc.cfg.data_dir / "tls" / "smtp.pem")
        ctx.check_hostname = False
        with smtplib.SMTP("127.0.0.1", svc.smtp_port, timeout=30) as c:
            c.starttls(context=ctx)
            return c.sendmail("dr@practice.test", ["lab@lab.test"], message())

    assert await asyncio.to_thread(dialogue) == {}
    await sink.wait_for(1)


async def test_commands_pipelined_with_starttls_are_discarded(portique_factory, sink):
    svc = await portique_factory(sink.port)
    c = await RawClient.connect(svc.smtp_port)
    await c.reply()
    await c.cmd("EHLO client.test")
    # One segment: STARTTLS plus a command an attacker injects before the handshake.
    await c.send(b"STARTTLS\r\nMAIL FROM:<injected@attacker.test>\r\n")
    assert (await c.reply()).startswith("220")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    await c.writer.start_tls(ctx)
    # Had the injected MAIL been executed, RCPT would be accepted.
    assert (await c.cmd("EHLO client.test")).startswith("250")
    assert (await c.cmd("RCPT TO:<lab@lab.test>")).startswith("503")
    await c.close()


async def test_oversize_message_gets_552(portique_factory, sink):
    svc = await portique_factory(sink.port, smtp={"max_message_size": 4096})
    big = message(body="x" * 70 + "\r\n") * 1
    big = message(body=("y" * 70 + "\r\n") * 100)
    # With SIZE declared (smtplib does it), refused at MAIL FROM.
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await asyncio.to_thread(send_sync, svc.smtp_port, big)
    assert info.value.smtp_code == 552
    # Without SIZE, refused at the end of DATA.
    c = await RawClient.connect(svc.smtp_port)
    await c.reply()
    await c.cmd("EHLO client.test")
    assert (await c.cmd("MAIL FROM:<dr@practice.test>")).startswith("250")
    assert (await c.cmd("RCPT TO:<lab@lab.test>")).startswith("250")
    assert (await c.cmd("DATA")).startswith("354")
    await c.send(big + b".\r\n")
    assert (await c.reply()).startswith("552 5.3.4")
    # The session goes on normally afterwards.
    assert (await c.cmd("NOOP")).startswith("250")
    await c.close()
    await asyncio.sleep(0.3)
    assert sink.messages == []
    assert list((svc.cfg.data_dir / "spool" / "incoming").iterdir()) == []


async def _session(port: int) -> RawClient:
    """A client session at the point where DATA's content is due."""
    c = await RawClient.connect(port)
    await c.reply()
    await c.cmd("EHLO client.test")
    assert (await c.cmd("MAIL FROM:<dr@practice.test>")).startswith("250")
    assert (await c.cmd("RCPT TO:<lab@lab.test>")).startswith("250")
    assert (await c.cmd("DATA")).startswith("354")
    return c


async def _data_dialogue(port: int, payload: bytes) -> tuple[str, RawClient]:
    c = await _session(port)
    await c.send(payload)
    return await c.reply(), c


SMUGGLED = (
    b"MAIL FROM:<admin@bank.test>\r\nRCPT TO:<victim@lab.test>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nsmuggled body\r\n.\r\n"
)


@pytest.mark.parametrize(
    "end",
    [b"\n.\r\n", b"\r.\n", b"\n.\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r"],
    ids=["LF.CRLF", "CR.LF", "LF.LF", "CR.CR", "CRLF.LF", "CRLF.CR"],
)
async def test_smuggling_end_of_data_variants_never_end_data(portique_factory, sink, end):
    svc = await portique_factory(sink.port)
    payload = b"Subject: hello\r\n\r\nfirst" + end + SMUGGLED + b"tail\r\n.\r\n"
    reply, c = await _data_dialogue(svc.smtp_port, payload)
    assert reply.startswith("5"), reply
    await c.close()
    await asyncio.sleep(0.5)
    assert sink.messages == []


async def test_bare_lf_in_data_gets_5xx(portique_factory, sink):
    svc = await portique_factory(sink.port)
    reply, c = await _data_dialogue(svc.smtp_port, b"Subject: x\nTo: y\r\n\r\nbody\r\n.\r\n")
    assert reply.startswith("550 5.6.11")
    await c.close()
    reply, c = await _data_dialogue(svc.smtp_port, b"Subject: x\r\n\r\nbody\rmore\r\n.\r\n")
    assert reply.startswith("550 5.6.11")
    await c.close()
    await asyncio.sleep(0.3)
    assert sink.messages == []


async def test_per_recipient_replies_and_recipient_limit(portique_factory, sink):
    svc = await portique_factory(sink.port, smtp={"max_recipients": 2})
    c = await RawClient.connect(svc.smtp_port)
    await c.reply()
    await c.cmd("EHLO client.test")
    await c.cmd("MAIL FROM:<dr@practice.test>")
    assert (await c.cmd("RCPT TO:<a@lab.test>")).startswith("250")
    assert (await c.cmd("RCPT TO:<not an address")).startswith("5")
    assert (await c.cmd("RCPT TO:<b@lab.test>")).startswith("250")
    assert (await c.cmd("RCPT TO:<c@lab.test>")).startswith("452 4.5.3")
    assert (await c.cmd("DATA")).startswith("354")
    await c.send(message() + b".\r\n")
    assert (await c.reply()).startswith("250")
    await c.close()
    (got,) = await sink.wait_for(1)
    assert sorted(got.recipients) == ["a@lab.test", "b@lab.test"]


async def test_internal_failure_is_451_without_exception_text(portique_factory, sink, monkeypatch):
    svc = await portique_factory(sink.port)

    def broken(*args, **kwargs):
        raise RuntimeError(f"patient {NIR} leaked into an exception")

    monkeypatch.setattr(svc.spool, "open_writer", broken)
    reply, c = await _data_dialogue_no_354(svc.smtp_port)
    assert reply.startswith("451 4.3.0")
    assert NIR not in reply and "RuntimeError" not in reply
    await c.close()

    def spool_full(*args, **kwargs):
        raise SpoolError("cannot create a spool file")

    monkeypatch.setattr(svc.spool, "open_writer", spool_full)
    reply, c = await _data_dialogue_no_354(svc.smtp_port)
    assert reply.startswith("451 4.3.0")
    await c.close()


async def _data_dialogue_no_354(port: int) -> tuple[str, RawClient]:
    c = await RawClient.connect(port)
    await c.reply()
    await c.cmd("EHLO client.test")
    await c.cmd("MAIL FROM:<dr@practice.test>")
    await c.cmd("RCPT TO:<lab@lab.test>")
    return await c.cmd("DATA"), c


async def test_low_disk_gets_452_at_mail_from(portique_factory, sink, monkeypatch):
    svc = await portique_factory(sink.port, smtp={"max_message_size": 1_000_000})
    # Seam: the free-space probe. 1.4 x the max size is below the 1.5 x guard.
    monkeypatch.setattr(svc.spool, "free_bytes", lambda: 1_400_000)
    c = await RawClient.connect(svc.smtp_port)
    await c.reply()
    await c.cmd("EHLO client.test")
    assert (await c.cmd("MAIL FROM:<dr@practice.test>")).startswith("452 4.3.1")
    monkeypatch.setattr(svc.spool, "free_bytes", lambda: 1_600_000)
    assert (await c.cmd("MAIL FROM:<dr@practice.test>")).startswith("250")
    await c.close()


async def test_null_sender_is_accepted(portique_factory, sink):
    svc = await portique_factory(sink.port)
    c = await RawClient.connect(svc.smtp_port)
    await c.reply()
    await c.cmd("EHLO mx.test")
    assert (await c.cmd("MAIL FROM:<>")).startswith("250")
    assert (await c.cmd("RCPT TO:<dr@practice.test>")).startswith("250")
    await c.cmd("DATA")
    await c.send(message() + b".\r\n")
    assert (await c.reply()).startswith("250")
    await c.close()
    (got,) = await sink.wait_for(1)
    assert got.mail_from == "<>"


async def test_session_limit_answers_421(portique_factory, sink):
    svc = await portique_factory(sink.port, smtp={"max_sessions": 2})
    first = await RawClient.connect(svc.smtp_port)
    second = await RawClient.connect(svc.smtp_port)
    assert (await first.reply()).startswith("220")
    assert (await second.reply()).startswith("220")
    third = await RawClient.connect(svc.smtp_port)
    assert (await third.reply()).startswith("421 4.3.2")
    await first.close()
    await asyncio.sleep(0.2)
    fourth = await RawClient.connect(svc.smtp_port)
    assert (await fourth.reply()).startswith("220")
    for c in (second, third, fourth):
        await c.close()


async def test_idle_session_times_out(portique_factory, sink):
    svc = await portique_factory(sink.port, smtp={"session_timeout": 0.5})
    c = await RawClient.connect(svc.smtp_port)
    await c.reply()
    async with asyncio.timeout(5):
        assert await c.reader.read() == b""  # closed by the server
    await c.close()


async def test_idle_timeout_counts_from_the_last_command(portique_factory, sink):
    """One timer per session, re-armed lazily: commands keep the session open past the
    timeout, and it closes `session_timeout` after the last one, not later."""
    timeout = 0.6
    svc = await portique_factory(sink.port, smtp={"session_timeout": timeout})
    loop = asyncio.get_running_loop()
    c = await RawClient.connect(svc.smtp_port)
    await c.reply()
    assert (await c.cmd("EHLO client.test")).startswith("250")
    for _ in range(6):  # 1.5 timeouts of activity
        await asyncio.sleep(timeout / 4)
        assert await c.cmd("NOOP") == "250 OK"
    last_command = loop.time()
    async with asyncio.timeout(5):
        assert await c.reader.read() == b""  # closed by the server
    idle = loop.time() - last_command
    assert timeout * 0.9 <= idle < timeout * 2.5
    await c.close()


async def test_overlong_line_in_data_is_refused(portique_factory, sink):
    svc = await portique_factory(sink.port)
    reply, c = await _data_dialogue(
        svc.smtp_port, b"Subject: x\r\n\r\n" + b"z" * 1200 + b"\r\nend\r\n.\r\n"
    )
    assert reply.startswith("500 5.5.6")
    assert (await c.cmd("NOOP")).startswith("250")
    await c.close()
    await asyncio.sleep(0.3)
    assert sink.messages == []


# What became of the DATA commits that ran past the reply budget, as /metrics shows it.
PAST_BUDGET = "portique_smtp_commits_past_budget_total"
PAST_BUDGET_OUTCOMES = ("withdrawn", "accepted", "tempfail", "client_gone")


def _past_budget_counter(svc):
    """Metrics fed by `svc`'s reports of commits past the DATA reply budget, as the
    runtime wires them; returns a reader of the count per outcome."""
    metrics = Metrics()
    svc.on_commit_past_budget = metrics.commit_past_budget

    def counts() -> dict[str, float | None]:
        return {
            outcome: metrics.registry.get_sample_value(PAST_BUDGET, {"outcome": outcome})
            for outcome in PAST_BUDGET_OUTCOMES
        }

    return counts


def _past_budget(**counted: int) -> dict[str, float | None]:
    """Every outcome's count: those given, the others at 0."""
    return {outcome: float(counted.get(outcome, 0)) for outcome in PAST_BUDGET_OUTCOMES}


async def test_a_commit_within_the_budget_counts_nothing_past_it(portique_factory, sink):
    svc = await portique_factory(sink.port)
    past_budget = _past_budget_counter(svc)
    for i in range(3):
        reply, c = await _data_dialogue(svc.smtp_port, message(subject=f"n{i}") + b".\r\n")
        assert reply.startswith("250 2.0.0 OK queued as ")
        await c.close()
    await sink.wait_for(3)
    assert past_budget() == _past_budget()


async def test_a_commit_past_the_data_reply_budget_gets_451(portique_factory, sink, monkeypatch):
    """The budget counts from each message's own commit, whether the budget timer is
    still armed from an earlier message or has to be armed again; the session stays in
    step after a 451. The commit waits behind another session's held sync pass, so no
    pass has taken it when its budget runs out."""
    budget = 0.4
    svc = await portique_factory(sink.port, smtp={"data_reply_budget": budget})
    sync_pass = HeldSyncPass(svc.spool, monkeypatch)
    past_budget = _past_budget_counter(svc)
    loop = asyncio.get_running_loop()

    async def transaction(client: RawClient) -> tuple[str, float]:
        assert (await client.cmd("MAIL FROM:<dr@practice.test>")).startswith("250")
        assert (await client.cmd("RCPT TO:<lab@lab.test>")).startswith("250")
        assert (await client.cmd("DATA")).startswith("354")
        started = loop.time()
        await client.send(message() + b".\r\n")
        return await client.reply(), started

    c = await RawClient.connect(svc.smtp_port)
    await c.reply()
    await c.cmd("EHLO client.test")
    reply, _ = await transaction(c)  # arms the budget timer
    assert reply.startswith("250")
    for pause in (budget / 2, budget * 2):  # the timer still armed, then no longer
        await asyncio.sleep(pause)
        ahead = await _session(svc.smtp_port)
        sync_pass.hold()
        passes = sync_pass.started
        await ahead.send(message(subject="ahead") + b".\r\n")
        await wait_until(lambda: sync_pass.started > passes)  # noqa: B023
        reply, started = await transaction(c)
        waited = loop.time() - started
        assert reply.startswith("451 4.3.0")
        assert budget * 0.9 <= waited < budget * 3
        sync_pass.release()
        assert (await ahead.reply()).startswith("250")  # its pass had started
        await ahead.close()
        assert (await c.cmd("NOOP")) == "250 OK"
        reply, _ = await transaction(c)
        assert reply.startswith("250")
    # Each time, the commit behind the held pass was withdrawn, and the one in it (its
    # budget ran out first) was answered with the pass's outcome.
    assert past_budget() == _past_budget(withdrawn=2, accepted=2)
    await c.close()


async def test_a_451_past_the_budget_leaves_nothing_to_deliver(portique_factory, sink, monkeypatch):
    """A commit still queued for its sync pass when the budget runs out is withdrawn:
    the client gets 451, nothing of it is spooled or tracked, and it is never delivered
    (the client's retry is the only copy). The metrics count it as withdrawn, and the
    commit ahead of it, whose budget ran out in the held pass, as accepted."""
    budget = 0.3
    svc = await portique_factory(sink.port, smtp={"data_reply_budget": budget})
    sync_pass = HeldSyncPass(svc.spool, monkeypatch)
    past_budget = _past_budget_counter(svc)
    ahead, queued = await _session(svc.smtp_port), await _session(svc.smtp_port)
    sync_pass.hold()
    await ahead.send(message(subject="ahead") + b".\r\n")
    await wait_until(lambda: sync_pass.started == 1)
    await queued.send(message(subject="queued") + b".\r\n")  # waits for the next pass
    assert (await queued.reply()).startswith("451 4.3.0")
    assert past_budget() == _past_budget(withdrawn=1)
    assert svc.spool._pending == []
    assert list(svc.spool.incoming.iterdir()) == []
    sync_pass.release()
    assert (await ahead.reply()).startswith("250")
    assert past_budget() == _past_budget(withdrawn=1, accepted=1)
    await sink.wait_for(1)
    await asyncio.sleep(1.0)  # time enough for another pass and a delivery
    assert [m.data.count(b"Subject: ahead") for m in sink.messages] == [1]
    assert svc.spool.pending_ids() == []
    for c in (ahead, queued):
        await c.close()


async def _past_budget_in_held_pass(svc, monkeypatch):
    """A session whose commit the DATA reply budget ran out on in a held sync pass
    (the session waits for that pass); returns it with the held pass."""
    gate = svc.smtp.gate
    sync_pass = HeldSyncPass(svc.spool, monkeypatch)
    c = await _session(svc.smtp_port)
    sync_pass.hold()
    await c.send(message(subject="in pass") + b".\r\n")
    await wait_until(lambda: sync_pass.started == 1)
    await wait_until(lambda: gate.commit_deadlines.running == 0)  # its budget ran out
    return c, sync_pass


async def test_a_commit_whose_sync_pass_started_is_answered_with_its_outcome(
    portique_factory, sink, monkeypatch
):
    """Past the budget, a commit a sync pass has taken is made durable and delivered
    anyway: the reply waits for that pass and says so (250), and the message arrives
    once; a client told 451 would have sent it a second time. The metrics count it
    as accepted past the budget."""
    svc = await portique_factory(sink.port, smtp={"data_reply_budget": 0.3})
    past_budget = _past_budget_counter(svc)
    c, sync_pass = await _past_budget_in_held_pass(svc, monkeypatch)
    assert past_budget() == _past_budget()  # nothing known yet: the pass goes on
    sync_pass.release()
    assert (await c.reply()).startswith("250 2.0.0 OK queued as ")
    assert past_budget() == _past_budget(accepted=1)
    await sink.wait_for(1)
    await asyncio.sleep(1.0)
    assert len(sink.messages) == 1
    assert svc.smtp.gate.commit_deadlines.running == 0
    await c.close()


async def test_a_peer_leaving_during_a_held_commit_ends_the_session_quietly(
    portique_factory, sink, monkeypatch
):
    """A cancellation that is not the budget's (the peer went away) stays one: the
    session ends, and its commit leaves the budget's timer nothing to track."""
    svc = await portique_factory(sink.port, smtp={"data_reply_budget": 0.3})
    sync_pass = HeldSyncPass(svc.spool, monkeypatch)
    gate = svc.smtp.gate
    c = await _session(svc.smtp_port)
    (session,) = gate.live
    sync_pass.hold()
    await c.send(message() + b".\r\n")
    await wait_until(lambda: gate.commit_deadlines.running == 1)
    await c.close()
    await wait_until(lambda: gate.sessions == 0 and gate.transactions_in_flight == 0)
    assert gate.commit_deadlines.running == 0
    sync_pass.release()
    # Its pass made it durable, but it never got a 250: dropped, never delivered (the
    # client sends it again).
    await wait_until(lambda: sync_pass.finished == 1)
    await wait_until(lambda: svc.spool.pending_ids() == [] and not svc.spool._removals, within=3)
    await asyncio.sleep(0.5)
    assert sink.messages == []


async def test_a_pass_failing_past_the_budget_gets_451_and_delivers_nothing(
    portique_factory, sink, monkeypatch
):
    """The budget runs out in a sync pass that then fails: the reply is that pass's
    451, the message is not delivered, and the metrics count it as a tempfail."""
    svc = await portique_factory(sink.port, smtp={"data_reply_budget": 0.3})
    past_budget = _past_budget_counter(svc)
    c, sync_pass = await _past_budget_in_held_pass(svc, monkeypatch)

    def failing_fsync(path):
        raise OSError(5, "I/O error")

    fsync_directory = gateway.spool.fsync_directory
    monkeypatch.setattr(gateway.spool, "fsync_directory", failing_fsync)
    sync_pass.release()
    assert (await c.reply()).startswith("451 4.3.0")
    monkeypatch.setattr(gateway.spool, "fsync_directory", fsync_directory)
    assert past_budget() == _past_budget(tempfail=1)
    assert svc.spool.pending_ids() == []
    assert (await c.cmd("NOOP")) == "250 OK"
    await c.close()
    await asyncio.sleep(0.5)
    assert sink.messages == []


async def test_a_peer_leaving_after_the_budget_ran_out_in_its_pass_is_counted(
    portique_factory, sink, monkeypatch
):
    """The peer leaves while its session waits past the budget for the sync pass: no
    reply, the entry that pass makes durable is dropped, and the metrics count the
    commit as client_gone."""
    svc = await portique_factory(sink.port, smtp={"data_reply_budget": 0.3})
    past_budget = _past_budget_counter(svc)
    gate = svc.smtp.gate
    c, sync_pass = await _past_budget_in_held_pass(svc, monkeypatch)
    await c.close()
    await wait_until(lambda: gate.sessions == 0 and gate.transactions_in_flight == 0)
    assert past_budget() == _past_budget(client_gone=1)
    sync_pass.release()
    await wait_until(lambda: sync_pass.finished == 1)
    await wait_until(lambda: svc.spool.pending_ids() == [] and not svc.spool._removals, within=3)
    await asyncio.sleep(0.5)
    assert sink.messages == []
    assert past_budget() == _past_budget(client_gone=1)
