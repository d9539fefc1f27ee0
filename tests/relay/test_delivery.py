"""Delivery: retries with backoff, DSNs, holds and notices, connectors, connection reuse."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time

from connectors.base import DeliveryItem, Status
from connectors.relay import RelayConnector
from gateway.config import ConnectorConfig
from gateway.deadlines import Deadlines
from tests.conftest import make_pki
from tests.relay._helpers import (
    LAB_AND_PRACTICE_ROUTES,
    EventLog,
    Sink,
    SinkHandler,
    message,
    send_sync,
    wait_until,
)

SECRET_BODY = "Patient Jeanne Dupont, NIR 2 84 12 75 123 456 78, tel 06 12 34 56 78"
SECRET_SUBJECT = "Dossier de Jeanne Dupont"


def _text_of(raw: bytes) -> str:
    """Every decoded text part of a message, plus its raw bytes, for grepping."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    texts = [raw.decode("utf-8", "replace")]
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            texts.append(part.get_content())
    return "\n".join(texts)


async def test_sink_answering_451_twice_then_250_gets_the_message(portique_factory):
    sink = await Sink(SinkHandler(data_script=["451 4.3.0 busy", "451 4.3.0 busy"])).start()
    try:
        log = EventLog()
        svc = await portique_factory(
            sink.port, queue={"retry_initial": 0.2, "retry_factor": 2.0, "retry_max": 5.0}
        )
        svc.events.subscribe(log)
        await asyncio.to_thread(send_sync, svc.smtp_port, message())
        await sink.wait_for(1)
        assert sink.handler.attempts == 3
        deferred = log.kinds("deferred")
        assert [d["next_attempt_in_s"] for d in deferred] == [0.2, 0.4]
        assert all("451" in d["detail"] for d in deferred)
        await wait_until(lambda: svc.queue.list() == [])
    finally:
        await sink.stop()


async def test_sink_answering_550_gives_the_sender_a_dsn_without_body(portique_factory):
    sink = await Sink(SinkHandler(data_script=["550 5.7.1 rejected for policy reasons"])).start()
    try:
        svc = await portique_factory(sink.port)
        data = message(subject=SECRET_SUBJECT, body=SECRET_BODY + "\r\n")
        await asyncio.to_thread(send_sync, svc.smtp_port, data)
        (dsn,) = await sink.wait_for(1)
        assert dsn.mail_from == "<>"
        assert dsn.recipients == ["dr@practice.test"]
        msg = email.message_from_bytes(dsn.data, policy=email.policy.default)
        assert msg.get_content_type() == "multipart/report"
        assert msg.get_param("report-type") == "delivery-status"
        text = _text_of(dsn.data)
        assert "<m1@practice.test>" in text  # Message-ID
        assert "lab@lab.test" in text  # recipient
        assert "5.7.1" in text  # reason
        assert "Non remis" in text and "Undelivered" in text  # French and English
        for secret in ("Jeanne", "Dupont", "2 84 12 75", "06 12 34", "Dossier", "policy reasons"):
            assert secret not in text
        await wait_until(lambda: svc.queue.list() == [])
    finally:
        await sink.stop()


async def test_partial_refusal_delivers_the_rest_and_bounces_one(portique_factory):
    handler = SinkHandler(refuse_rcpt={"gone@lab.test": "550 5.1.1 no such user"})
    sink = await Sink(handler).start()
    try:
        svc = await portique_factory(sink.port)
        await asyncio.to_thread(
            send_sync, svc.smtp_port, message(), rcpts=("ok@lab.test", "gone@lab.test")
        )
        got = await sink.wait_for(2)
        delivered = [m for m in got if m.mail_from == "dr@practice.test"]
        dsns = [m for m in got if m.mail_from == "<>"]
        assert [m.recipients for m in delivered] == [["ok@lab.test"]]
        assert len(dsns) == 1
        text = _text_of(dsns[0].data)
        assert "gone@lab.test" in text and "5.1.1" in text and "ok@lab.test" not in text
    finally:
        await sink.stop()


async def test_give_up_after_configured_time_sends_dsn_with_fake_clock(portique_factory):
    handler = SinkHandler(refuse_rcpt={"lab@lab.test": "451 4.4.1 try later"})
    sink = await Sink(handler).start()
    now = [time.time()]  # the spool stamps arrival with the real clock
    try:
        log = EventLog()
        svc = await portique_factory(
            sink.port,
            queue={"give_up_after": 3600.0, "retry_initial": 60.0},
            service_kwargs={"clock": lambda: now[0]},
        )
        svc.events.subscribe(log)
        await asyncio.to_thread(send_sync, svc.smtp_port, message())
        await wait_until(lambda: len(log.kinds("deferred")) == 1)
        assert sink.messages == []
        now[0] += 61  # first retry due, still within the give-up time
        svc.queue.wake()
        await wait_until(lambda: len(log.kinds("deferred")) == 2)
        now[0] += 3600  # past give_up_after
        svc.queue.wake()
        (dsn,) = await sink.wait_for(1)
        assert dsn.recipients == ["dr@practice.test"]
        text = _text_of(dsn.data)
        assert "gave up" in text and "4.4.1" in text
        assert any(b["dsn"] for b in log.kinds("bounced"))
    finally:
        await sink.stop()


async def test_never_a_bounce_of_a_bounce(portique_factory):
    handler = SinkHandler(refuse_rcpt={"dr@practice.test": "550 5.1.1 no such user"})
    sink = await Sink(handler).start()
    try:
        log = EventLog()
        svc = await portique_factory(sink.port)
        svc.events.subscribe(log)

        def send_null_sender() -> None:
            import smtplib

            with smtplib.SMTP("127.0.0.1", svc.smtp_port) as c:
                c.sendmail("<>", ["dr@practice.test"], message())

        await asyncio.to_thread(send_null_sender)
        await wait_until(lambda: log.kinds("bounced"))
        await asyncio.sleep(0.5)
        assert [b["dsn"] for b in log.kinds("bounced")] == [False]
        assert sink.messages == []
        assert svc.queue.list() == []
    finally:
        await sink.stop()


async def test_transforming_route_holds_with_stub_pipeline_and_notifies_sender(
    portique_factory, sink
):
    log = EventLog()
    svc = await portique_factory(
        sink.port,
        routes=LAB_AND_PRACTICE_ROUTES,
    )
    svc.events.subscribe(log)
    await asyncio.to_thread(
        send_sync, svc.smtp_port, message(subject=SECRET_SUBJECT, body=SECRET_BODY + "\r\n")
    )
    (notice,) = await sink.wait_for(1)
    # Nothing went to the lab; the sender got a notice without patient data.
    assert notice.recipients == ["dr@practice.test"] and notice.mail_from == "<>"
    text = _text_of(notice.data)
    assert "quarantaine" in text and "quarantine" in text
    for secret in ("Jeanne", "Dupont", "2 84 12 75", "06 12 34", "Dossier"):
        assert secret not in text
    (held,) = svc.quarantine.list()
    assert held.recipients == ("lab@lab.test",) and held.route == "labs"
    assert svc.quarantine.data(held.id).endswith(SECRET_BODY.encode() + b"\r\n")
    assert log.kinds("held")[0]["reason"] == "content scanner unavailable"
    # An audited release sends the original to the lab.
    await svc.release_held(held.id, user="admin", reason="checked by Dr X")
    got = await sink.wait_for(2)
    assert got[1].recipients == ["lab@lab.test"]
    assert svc.quarantine.list() == []
    assert log.kinds("released")[0]["user"] == "admin"


async def test_pipeline_exception_holds_non_deliver_copies(portique_factory, sink, monkeypatch):
    import gateway.service

    def exploding(raw, copies, engine, **_settings):
        raise ValueError("parser blew up on " + SECRET_BODY)

    monkeypatch.setattr(gateway.service, "process_message", exploding)
    svc = await portique_factory(
        sink.port,
        routes=[
            {"name": "labs", "match": ["*@lab.test"], "action": "redact", "connector": "relay"},
            {"name": "mss", "match": ["*@mss.test"], "action": "deliver", "connector": "relay"},
        ],
    )
    await asyncio.to_thread(
        send_sync, svc.smtp_port, message(), rcpts=("lab@lab.test", "dr@mss.test")
    )
    got = await sink.wait_for(2)
    by_rcpt = {tuple(m.recipients): m for m in got}
    assert ("dr@mss.test",) in by_rcpt  # deliver copy goes out unchanged
    assert ("dr@practice.test",) in by_rcpt  # hold notice to the sender
    assert ("lab@lab.test",) not in by_rcpt
    (held,) = svc.quarantine.list()
    assert held.reason == "content could not be processed"


async def test_outbox_connector_writes_eml_files(portique_factory, tmp_path):
    outbox = tmp_path / "outbox"
    svc = await portique_factory(
        None,
        extra={"connectors": {"outbox": {"path": str(outbox)}}},
        routes=[{"name": "all", "match": ["*"], "action": "deliver", "connector": "outbox"}],
    )
    data = message()
    await asyncio.to_thread(send_sync, svc.smtp_port, data)
    await wait_until(lambda: list(outbox.glob("*.eml")))
    (eml,) = outbox.glob("*.eml")
    assert eml.read_bytes().endswith(data)
    assert not list(outbox.glob(".*"))


async def test_relay_reuses_its_connection(portique_factory, sink):
    svc = await portique_factory(sink.port, queue={"per_destination_concurrency": 1})
    for i in range(5):
        await asyncio.to_thread(send_sync, svc.smtp_port, message(message_id=f"<r{i}@p.test>"))
        await sink.wait_for(i + 1)
    assert sink.handler.connections == 1


async def test_relay_tls_required_verifies_and_never_falls_back(tmp_path, pki):
    item = DeliveryItem("q1", "dr@practice.test", ("lab@lab.test",), message())
    tls_sink = await Sink(tls_context=pki.server_context()).start()
    plain_sink = await Sink().start()
    try:
        good = RelayConnector(
            ConnectorConfig(
                name="relay",
                type="relay",
                host="localhost",
                port=tls_sink.port,
                ca_file=str(pki.ca_file),
            )
        )
        result = await good.deliver(item)
        assert [r.status for r in result.results] == [Status.DELIVERED]
        await good.close()
        other_ca = make_pki(tmp_path / "other")
        wrong = RelayConnector(
            ConnectorConfig(
                name="relay",
                type="relay",
                host="localhost",
                port=tls_sink.port,
                ca_file=str(other_ca.ca_file),
            )
        )
        result = await wrong.deliver(item)
        assert [r.status for r in result.results] == [Status.TEMPFAIL]
        await wrong.close()
        stripped = RelayConnector(
            ConnectorConfig(
                name="relay",
                type="relay",
                host="localhost",
                port=plain_sink.port,
                ca_file=str(pki.ca_file),
            )
        )
        result = await stripped.deliver(item)
        assert [r.status for r in result.results] == [Status.TEMPFAIL]
        await stripped.close()
        assert len(tls_sink.messages) == 1 and plain_sink.messages == []
    finally:
        await tls_sink.stop()
        await plain_sink.stop()


async def test_relay_to_closed_port_is_a_temporary_failure():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    connector = RelayConnector(
        ConnectorConfig(
            name="relay", type="relay", host="127.0.0.1", port=port, tls="none", timeout=5
        )
    )
    result = await connector.deliver(DeliveryItem("q", "a@b.test", ("c@d.test",), b"x\r\n"))
    assert result.results[0].status == Status.TEMPFAIL
    assert "refused" in result.results[0].detail


async def test_relay_authenticates_to_the_upstream_over_tls(pki):
    from aiosmtpd.smtp import AuthResult

    seen: list[str] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        seen.append(auth_data.login.decode())
        ok = auth_data.login == b"practice" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)

    handler = SinkHandler()
    loop = asyncio.get_running_loop()
    from aiosmtpd.smtp import SMTP

    sessions: list[SMTP] = []

    def session() -> SMTP:
        proto = SMTP(
            handler,
            hostname="sink.test",
            tls_context=pki.server_context(),
            require_starttls=True,
            auth_required=True,
            authenticator=authenticator,
            loop=loop,
        )
        sessions.append(proto)
        return proto

    server = await loop.create_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        item = DeliveryItem("q1", "dr@practice.test", ("lab@lab.test",), message())
        good = RelayConnector(
            ConnectorConfig(
                name="relay",
                type="relay",
                host="localhost",
                port=port,
                ca_file=str(pki.ca_file),
                username="practice",
                password="s3cret",
            )
        )
        assert [r.status for r in (await good.deliver(item)).results] == [Status.DELIVERED]
        await good.close()
        bad = RelayConnector(
            ConnectorConfig(
                name="relay",
                type="relay",
                host="localhost",
                port=port,
                ca_file=str(pki.ca_file),
                username="practice",
                password="wrong",
            )
        )
        result = await bad.deliver(item)
        assert [r.status for r in result.results] == [Status.TEMPFAIL]
        assert result.results[0].detail.startswith("535")
        assert "wrong" not in result.results[0].detail
        # The refused login's connection is closed at once, not left to the garbage
        # collector (an unclosed socket) or to the upstream's idle timeout.
        await wait_until(lambda: all(s.transport is None for s in sessions), within=5)
        await bad.close()
        assert set(seen) == {"practice"} and len(handler.messages) == 1
    finally:
        server.close()


async def test_delivery_deadlines_end_only_the_deliveries_past_their_own() -> None:
    """One timer for all: a delivery started later gets its full limit, a late one gets
    TimeoutError at its own deadline, an outside cancel stays a cancel."""
    deadlines = Deadlines(0.5)
    started = time.monotonic()

    async def deliver(delay: float, after: float = 0.0) -> float:
        await asyncio.sleep(after)
        try:
            return await deadlines.run(asyncio.sleep(delay, result=delay))
        except TimeoutError:
            return -(time.monotonic() - started)

    quick, later, late = await asyncio.gather(deliver(0.1), deliver(0.4, 0.3), deliver(5, 0.3))
    assert (quick, later) == (0.1, 0.4)  # `later` ends 0.7 s in: past the first deadline
    assert -late >= 0.75  # cut off at 0.3 + 0.5 s, not at the first delivery's deadline
    assert -late < 3

    outside = asyncio.create_task(deliver(5))
    await asyncio.sleep(0.1)
    outside.cancel()
    try:
        await outside
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("an outside cancel must not become a timeout")
    assert deadlines._running == {} and deadlines._expired == {}


def test_a_delivery_item_never_shows_its_message() -> None:
    """Its repr (in a log line or a traceback) names the envelope, never the data."""
    item = DeliveryItem(
        queue_id="q1",
        mail_from="dr@practice.test",
        recipients=("lab@lab.test",),
        data=SECRET_BODY.encode(),
        route="lab",
    )
    shown = repr(item)
    assert "Dupont" not in shown and "84 12" not in shown
    assert "q1" in shown and "lab@lab.test" in shown and "attempt=1" in shown
