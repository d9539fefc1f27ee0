"""The console over the real service (ServiceBackend): messages about a rostered
patient go through, and no page but re-identification ever shows who the patient is."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crypto.keys import Keyring
from tests.admin._console import ConsoleClient, csrf_of
from tests.admin._real_service import ALERTS, LAB, PLANTED, REVIEW, RealStack, lab_order


@pytest.fixture
async def stack(data_dir: Path, keyring: Keyring, pki) -> AsyncIterator[RealStack]:  # type: ignore[no-untyped-def]
    s = await RealStack(data_dir, keyring, pki.ca_file, pki.server_cert, pki.server_key).start()
    try:
        yield s
    finally:
        await s.stop()


async def _admin(stack: RealStack) -> ConsoleClient:
    client = ConsoleClient(stack.base_url, stack.ca_file)
    await client.login(stack.accounts["admin"])
    return client


async def test_no_page_but_reidentification_names_the_patient(stack: RealStack) -> None:
    await stack.send(lab_order("<order-1@cabinet.test>"), (LAB,))
    await stack.send(lab_order("<order-2@cabinet.test>"), (REVIEW,))
    await stack.send(lab_order("<order-3@cabinet.test>"), ("marie@patient.mssante.fr",))
    await stack.settle()
    delivered = [m for m in stack.sink.messages if LAB in m.recipients]
    assert len(delivered) == 1
    body = delivered[0].data.decode("utf-8", "replace")
    assert "Dupontel" not in body and "DUPONTEL" not in body
    held = stack.service.quarantine.list()
    assert len(held) == 1
    # The admin address got an alert for the hold, with the id and no patient data.
    alerts = [m for m in stack.sink.messages if m.recipients == [ALERTS]]
    assert len(alerts) == 1 and alerts[0].mail_from in ("", "<>")
    assert held[0].id.encode() in alerts[0].data
    for planted in PLANTED:
        assert planted.encode() not in alerts[0].data

    client = await _admin(stack)
    try:
        pages = [
            "/",
            "/audit",
            "/audit?message_id=%3Corder-1%40cabinet.test%3E",
            f"/audit?recipient={LAB}",
            "/audit?recipient=marie%40patient.mssante.fr",
            "/audit/export?format=jsonl",
            "/audit/export?format=csv",
            "/quarantine",
            f"/quarantine/{held[0].id}",
            "/queue",
            "/reidentify",
        ]
        texts = {}
        for path in pages:
            r = await client.http.get(path)
            assert r.status_code == 200, path
            texts[path] = r.text
        for path, text in texts.items():
            for planted in PLANTED:
                assert planted not in text, (path, planted)
            # The search form echoes what the auditor typed; the results must not.
            results = re.sub(r'<form method="get" action="/audit".*?</form>', "", text, flags=re.S)
            assert "marie@patient.mssante.fr" not in results, path
        # The pages do show the traffic (the search is not empty).
        assert "order-1@cabinet.test" in texts["/audit?message_id=%3Corder-1%40cabinet.test%3E"]
        assert "decided" in texts[f"/audit?recipient={LAB}"]
        assert "@patient.mssante.fr" in texts["/audit?recipient=marie%40patient.mssante.fr"]

        # Positive control: the re-identification page does show the patient.
        token = stack.vault._conn.execute("SELECT token FROM vault_entries LIMIT 1").fetchone()[0]
        assert token in body
        r = await client.post("/reidentify", {"token": token, "reason": "lab asks which patient"})
        assert r.status_code == 200
        assert "DUPONTEL Marie-Ange" in r.text
    finally:
        await client.aclose()
    records, _ = stack.trail.search(kind="reidentified")
    assert records and records[0].actor == "alice"
    assert records[0].fields["reason"] == "lab asks which patient"
    assert "Dupontel" not in str(records[0].fields)


async def test_release_modes_and_lockdown_over_the_real_service(stack: RealStack) -> None:
    client = await _admin(stack)
    try:
        # A held copy (route "review" holds everything): rescan holds again -> refused,
        # as-is without reason -> refused, as-is with reason -> delivered.
        await stack.send(lab_order("<held-1@cabinet.test>"), (REVIEW,))
        await stack.settle()
        [item] = stack.service.quarantine.list()
        r = await client.post(
            f"/quarantine/{item.id}/release", {"mode": "rescan"}, csrf_from="/quarantine"
        )
        assert r.status_code == 303
        assert "retenu" in (await client.http.get("/quarantine")).text
        assert stack.service.quarantine.show(item.id) is not None
        r = await client.post(
            f"/quarantine/{item.id}/release", {"mode": "as-is"}, csrf_from="/quarantine"
        )
        assert stack.service.quarantine.show(item.id) is not None
        before = len(stack.sink.messages)
        r = await client.post(
            f"/quarantine/{item.id}/release",
            {"mode": "as-is", "reason": "checked with the lab by phone"},
            csrf_from="/quarantine",
        )
        assert r.status_code == 303
        await stack.settle()
        assert stack.service.quarantine.show(item.id) is None
        assert len(stack.sink.messages) == before + 1
        assert REVIEW in stack.sink.messages[-1].recipients
        [released] = stack.trail.search(kind="released")[0]
        assert (
            released.actor == "alice"
            and released.fields["reason"] == "checked with the lab by phone"
        )

        # Lockdown from the console: accepted, nothing delivered; off: delivered.
        token = csrf_of((await client.http.get("/")).text)
        r = await client.http.post("/lockdown", data={"state": "on", "csrf": token})
        assert r.status_code == 303 and stack.service.queue.lockdown
        assert "ACTIF" in (await client.http.get("/")).text
        before = len(stack.sink.messages)
        await stack.send(lab_order("<locked@cabinet.test>"), (LAB,))
        await asyncio.sleep(1.0)
        assert len(stack.sink.messages) == before
        assert len(stack.service.queue.list()) >= 1
        queue_page = (await client.http.get("/queue")).text
        for planted in PLANTED:
            assert planted not in queue_page
        token = csrf_of((await client.http.get("/")).text)
        await client.http.post("/lockdown", data={"state": "off", "csrf": token})
        await stack.settle()
        assert len(stack.sink.messages) >= before + 1
        kinds = [r.fields.get("on") for r in stack.trail.search(kind="lockdown")[0]]
        assert kinds == [False, True]  # newest first
    finally:
        await client.aclose()
