"""Console pages over real HTTPS with the in-memory backend: audit search, pagination
and export; quarantine, queue and re-identification actions (each audited); language;
logout."""

from __future__ import annotations

import csv
import io
import json

from gateway.admin.backend import Identity, ReleaseMode
from tests.admin._console import csrf_of
from tests.admin._fake_backend import sample_quarantine
from tests.admin.conftest import Console


def _seed_audit(console: Console, n: int) -> None:
    for i in range(n):
        console.backend.append(
            "received",
            {
                "message_id": f"<m{i}@cabinet.test>",
                "mail_from": "secretariat@cabinet.test",
                "recipients": ["commandes@labo.test"],
                "route": "lab" if i % 2 else "mssante",
            },
        )


async def test_audit_search_pagination_and_filters(console: Console) -> None:
    _seed_audit(console, 120)
    client = console.client()
    await client.login(console.accounts["auditor"])
    r = await client.http.get("/audit", params={"kind": "received"})
    assert r.status_code == 200
    assert r.text.count('<tr><td class="num">') == 50
    assert "120 résultat(s), 1 à 50" in r.text
    assert 'rel="next"' in r.text and 'rel="prev"' not in r.text
    r = await client.http.get("/audit", params={"kind": "received", "offset": "100"})
    assert "120 résultat(s), 101 à 120" in r.text
    assert 'rel="prev"' in r.text and 'rel="next"' not in r.text
    r = await client.http.get("/audit", params={"message_id": "<m7@cabinet.test>"})
    assert "1 résultat(s)" in r.text and "m7@cabinet.test" in r.text
    r = await client.http.get("/audit", params={"route": "lab", "kind": "received"})
    assert "60 résultat(s)" in r.text
    r = await client.http.get("/audit", params={"since": "not-a-date"})
    assert r.status_code == 400
    assert "Saisie invalide : since" in r.text
    r = await client.http.get("/audit", params={"since": "2026-11-30"})
    assert "Aucun enregistrement" in r.text


async def test_audit_export_jsonl_and_csv_is_audited(console: Console) -> None:
    _seed_audit(console, 1200)  # more than one export batch
    client = console.client()
    await client.login(console.accounts["auditor"])
    r = await client.http.get("/audit/export", params={"format": "jsonl", "kind": "received"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in r.headers["content-disposition"]
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert len(rows) == 1200 and rows[0]["kind"] == "received"
    assert rows[5]["fields"]["message_id"] == "<m5@cabinet.test>"
    r = await client.http.get(
        "/audit/export",
        params={"format": "csv", "route": "lab", "recipient": "jean@patient.mssante.fr"},
    )
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0] == ["seq", "time", "kind", "actor", "fields"]
    assert len(table) == 1  # nobody by that address
    r = await client.http.get(
        "/audit/export", params={"format": "csv", "route": "lab", "kind": "received"}
    )
    table = list(csv.reader(io.StringIO(r.text)))
    assert len(table) == 1 + 600
    assert json.loads(table[1][4])["route"] == "lab"
    exports = [row for row in console.backend.audit if row.kind == "exported"]
    assert [(e.actor, e.fields["format"], e.fields["rows"]) for e in exports] == [
        ("bob", "jsonl", 1200),
        ("bob", "csv", 0),
        ("bob", "csv", 600),
    ]
    assert exports[1].fields["recipient"] == "(given)"
    assert "jean" not in str(exports[1].fields)
    r = await client.http.get("/audit/export", params={"format": "xml"})
    assert r.status_code == 400


async def test_quarantine_actions_are_audited(console: Console) -> None:
    client = console.client()
    await client.login(console.accounts["admin"])
    page = (await client.http.get("/quarantine")).text
    assert "h-1" in page and "nir × 1" in page
    detail = (await client.http.get("/quarantine/h-1")).text
    assert 'id="findings"' in detail and "nir" in detail
    assert detail.index('id="findings"') < detail.index('id="release-as-is"')

    # As is without a reason: refused, nothing released.
    token = csrf_of(detail)
    r = await client.http.post("/quarantine/h-1/release", data={"csrf": token, "mode": "as-is"})
    assert (r.status_code, r.headers["location"]) == (303, "/quarantine/h-1")
    assert "obligatoire" in (await client.http.get("/quarantine/h-1")).text
    assert console.backend.released == []

    token = csrf_of((await client.http.get("/quarantine")).text)
    r = await client.http.post("/quarantine/h-1/release", data={"csrf": token})
    assert r.status_code == 303
    assert console.backend.released == [("h-1", ReleaseMode.WITHOUT_HELD_PARTS, "")]
    assert "libéré" in (await client.http.get("/quarantine")).text

    token = csrf_of((await client.http.get("/quarantine/h-2")).text)
    r = await client.http.post(
        "/quarantine/h-2/release",
        data={"csrf": token, "mode": "as-is", "reason": "validated by Dr Martin"},
    )
    assert console.backend.released[-1] == ("h-2", ReleaseMode.AS_IS, "validated by Dr Martin")
    last = console.backend.audit[-1]
    assert (last.kind, last.actor, last.fields["mode"]) == ("released", "alice", "as-is")

    r = await client.http.get("/quarantine/h-1")
    assert r.headers["location"] == "/quarantine"  # gone
    console.backend.quarantine["h-3"] = sample_quarantine("h-3")
    token = csrf_of((await client.http.get("/quarantine/h-3")).text)
    await client.http.post("/quarantine/h-3/delete", data={"csrf": token})
    assert "h-3" not in console.backend.quarantine
    assert console.backend.audit[-1].kind == "deleted"
    r = await client.http.post("/quarantine/h-3/delete", data={"csrf": token})
    assert "introuvable" in (await client.http.get("/quarantine")).text
    r = await client.http.post(
        "/quarantine/h-9/release", data={"csrf": token, "mode": "no-such-mode"}
    )
    assert r.status_code == 400


async def test_queue_retry(console: Console) -> None:
    client = console.client()
    await client.login(console.accounts["admin"])
    page = (await client.http.get("/queue")).text
    assert "q-1" in page and "451 4.4.1 timeout" in page
    token = csrf_of(page)
    await client.http.post("/queue/q-1/retry", data={"csrf": token})
    assert console.backend.retried == ["q-1"]
    assert console.backend.audit[-1].actor == "alice"
    await client.http.post("/queue/q-404/retry", data={"csrf": token})
    assert "introuvable" in (await client.http.get("/queue")).text


async def test_reidentification_needs_a_reason_and_is_audited(console: Console) -> None:
    console.backend.tokens["PAT-ABCD-1234"] = [Identity("labo.test", "DURAND Léa (01/02/1990)")]
    client = console.client()
    await client.login(console.accounts["admin"])
    token = csrf_of((await client.http.get("/reidentify")).text)
    r = await client.http.post("/reidentify", data={"csrf": token, "token": "PAT-ABCD-1234"})
    assert r.status_code == 400 and "DURAND" not in r.text
    assert "reidentified" not in console.backend.kinds()
    r = await client.http.post(
        "/reidentify",
        data={"csrf": token, "token": "PAT-ABCD-1234", "reason": "dossier prothèse"},
    )
    assert r.status_code == 200 and "DURAND Léa" in r.text
    assert r.headers["cache-control"] == "no-store"
    last = console.backend.audit[-1]
    assert (last.kind, last.actor, last.fields["reason"]) == (
        "reidentified",
        "alice",
        "dossier prothèse",
    )
    # The identity is in that response only: not on the following pages.
    for path in ("/", "/reidentify", "/quarantine", "/queue", "/audit"):
        assert "DURAND" not in (await client.http.get(path)).text
    r = await client.http.post(
        "/reidentify", data={"csrf": token, "token": "PAT-NONE", "reason": "test"}
    )
    assert "Jeton inconnu" in r.text


async def test_language_from_browser_and_toggle(console: Console) -> None:
    client = console.client()
    r = await client.http.get("/login")
    assert '<html lang="fr">' in r.text and "Connexion" in r.text
    r = await client.http.get("/login", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert '<html lang="en">' in r.text and "Sign in" in r.text
    r = await client.http.get("/lang/en", params={"next": "/login"})
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert "Sign in" in (await client.http.get("/login")).text
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        r = await client.http.get("/lang/fr", params={"next": target})
        assert r.headers["location"] == "/"
    assert (await client.http.get("/lang/de")).status_code == 404


async def test_logout_ends_the_session(console: Console) -> None:
    client = console.client()
    await client.login(console.accounts["viewer"])
    old = dict(client.http.cookies)
    token = csrf_of((await client.http.get("/")).text)
    r = await client.http.post("/logout", data={"csrf": token})
    assert r.headers["location"] == "/login"
    replay = console.client()
    for name, value in old.items():
        replay.http.cookies.set(name, value)
    r = await replay.http.get("/")
    assert (r.status_code, r.headers["location"]) == (303, "/login")


async def test_console_logs_carry_no_secret_and_no_identity(console: Console) -> None:
    from structlog.testing import capture_logs

    console.backend.tokens["PAT-LOG-0001"] = [Identity("labo.test", "LEROY Inès (05/06/1977)")]
    with capture_logs() as logs:
        client = console.client()
        await client.login_password(console.accounts["admin"], password="Wrong-Pass-Leroy-1977")
        await client.http.post("/login", data={"user": "x", "password": "p", "csrf": "forged"})
        await client.login(console.accounts["admin"])
        token = csrf_of((await client.http.get("/reidentify")).text)
        r = await client.http.post(
            "/reidentify", data={"csrf": token, "token": "PAT-LOG-0001", "reason": "contrôle"}
        )
        assert "LEROY" in r.text
        console.backend.tokens.clear()
        console.backend.dashboard = None  # type: ignore[assignment,method-assign]
        assert (await client.http.get("/")).status_code == 500  # logged by type only
    text = repr(logs)
    assert logs, "the CSRF refusal and the internal error are logged"
    for secret in (
        "Wrong-Pass-Leroy-1977",
        "LEROY",
        "Inès",
        "1977",
        client.http.cookies.get("__Host-portique-session") or "?",
    ):
        assert secret not in text
