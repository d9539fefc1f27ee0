"""Browser flows (Playwright driving Debian's chromium) against the console in front of
a real service: SMTP in, scan, pseudonymisation vault, audit trail, quarantine, queue,
delivery to a loopback SMTP sink.

Screenshots of the dashboard and the quarantine page go to /tmp/portique-screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from crypto.keys import init_keys, load_keys
from tests.admin._console import Account
from tests.admin._real_service import (
    LAB,
    PLANTED,
    BackgroundStack,
    RealStack,
    lab_order,
)

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path("/tmp/portique-screenshots")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, pki
) -> Iterator[tuple[RealStack, BackgroundStack]]:  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("browser") / "data"
    data_dir.mkdir()
    init_keys(data_dir)
    real = RealStack(data_dir, load_keys(data_dir), pki.ca_file, pki.server_cert, pki.server_key)
    background = BackgroundStack(real)
    with background as started:
        yield started, background


@pytest.fixture(scope="module")
def browser(stack: tuple[RealStack, BackgroundStack]) -> Iterator[Browser]:
    """Depends on `stack` so as to be closed before it: chromium's keep-alive connections
    to the console are then closed by chromium's exit, and the stack's loop can close
    with no socket left open (BackgroundStack checks; a closed context is not enough,
    chromium may still hold its connections)."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(ignore_https_errors=True, locale="fr-FR")
    yield ctx
    ctx.close()


def log_in(page: Page, base_url: str, account: Account, *, code: str | None = None) -> None:
    page.goto(base_url + "/login")
    page.fill("input[name=user]", account.name)
    page.fill("input[name=password]", account.password)
    page.click("button[type=submit]")
    if account.totp_secret:
        expect(page).to_have_url(base_url + "/login/totp")
        page.fill("input[name=code]", code or account.next_code())
        page.click("button[type=submit]")


@pytest.fixture(scope="module")
def admin_page(browser: Browser, stack: tuple[RealStack, BackgroundStack]) -> Iterator[Page]:
    """One admin session for the module (each TOTP step may be used only once)."""
    real, _ = stack
    ctx = browser.new_context(ignore_https_errors=True, locale="fr-FR")
    page = ctx.new_page()
    log_in(page, real.base_url, real.accounts["admin"])
    yield page
    ctx.close()


def test_log_in_with_password_and_totp(
    admin_page: Page, stack: tuple[RealStack, BackgroundStack]
) -> None:
    real, _ = stack
    page = admin_page
    page.goto(real.base_url + "/")
    expect(page.locator("h1")).to_have_text("Tableau de bord")
    expect(page.locator(".who")).to_contain_text("alice")
    expect(page.locator("nav")).to_contain_text("Ré-identification")
    records, _ = real.trail.search(kind="admin_login")
    assert any(
        r.actor == "alice" and r.fields["ok"] and r.fields["reason"] == "totp" for r in records
    )


def test_wrong_totp_is_refused(
    context: BrowserContext, stack: tuple[RealStack, BackgroundStack]
) -> None:
    real, _ = stack
    account = real.accounts["auditor"]
    good = pyotp.TOTP(account.totp_secret).now()
    wrong = f"{(int(good) + 500_000) % 1_000_000:06d}"
    page = context.new_page()
    log_in(page, real.base_url, account, code=wrong)
    expect(page.locator("#error")).to_have_text("Code incorrect.")
    page.goto(real.base_url + "/audit")
    expect(page).to_have_url(real.base_url + "/login")
    records, _ = real.trail.search(kind="admin_login")
    assert any(r.actor == "bob" and r.fields["reason"] == "bad_second_factor" for r in records)


def test_viewer_is_refused_the_audit_page(
    context: BrowserContext, stack: tuple[RealStack, BackgroundStack]
) -> None:
    real, _ = stack
    page = context.new_page()
    log_in(page, real.base_url, real.accounts["viewer"])
    expect(page.locator("h1")).to_have_text("Tableau de bord")
    expect(page.locator("nav")).not_to_contain_text("Journal d'audit")
    response = page.goto(real.base_url + "/audit")
    assert response is not None and response.status == 403
    expect(page.locator("#error")).to_contain_text("Accès refusé")


def test_search_the_audit_trail_for_a_message_sent_in_the_test(
    admin_page: Page, stack: tuple[RealStack, BackgroundStack]
) -> None:
    real, background = stack
    background.run(real.send(lab_order("<browser-search@cabinet.test>"), (LAB,)))
    background.run(real.settle())
    page = admin_page
    page.goto(real.base_url + "/audit")
    page.fill("input[name=message_id]", "<browser-search@cabinet.test>")
    page.click("#audit-search")
    results = page.locator("#audit-results tbody tr")
    expect(results.first).to_be_visible()
    kinds = results.locator("td:nth-child(3)").all_inner_texts()
    # Only `received` carries the Message-ID today; later records link by spool_id.
    assert "received" in kinds
    text = page.content()
    assert "browser-search@cabinet.test" in text
    for planted in PLANTED:
        assert planted not in text


def _attachment_order(message_id: str) -> bytes:
    body = lab_order(message_id).split(b"\r\n\r\n", 1)[1].decode()
    return (
        "From: secretariat@cabinet.test\r\nTo: commandes@labo.test\r\n"
        f"Subject: Commande avec fichier\r\nMessage-ID: {message_id}\r\n"
        "Date: Sun, 29 Nov 2026 05:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        f"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        "--b1\r\nContent-Type: application/x-unknown-cad\r\n"
        'Content-Disposition: attachment; filename="empreinte.xyz"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--b1--\r\n"
    ).encode()


def test_release_a_held_message_and_see_it_delivered(
    admin_page: Page, stack: tuple[RealStack, BackgroundStack]
) -> None:
    real, background = stack
    background.run(real.send(_attachment_order("<browser-held@cabinet.test>"), (LAB,)))
    background.run(real.settle())
    held = [
        i for i in real.service.quarantine.list() if i.message_id == "<browser-held@cabinet.test>"
    ]
    assert len(held) == 1, "an unknown attachment on a pseudonymising route is held"
    page = admin_page
    page.goto(real.base_url + "/quarantine")
    row = page.locator("#quarantine-list tbody tr", has_text=held[0].id)
    expect(row).to_be_visible()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "quarantine.png"), full_page=True)
    row.get_by_role("link").click()
    expect(page.locator("#findings")).to_be_visible()
    parts = page.locator("#parts tbody tr")
    expect(parts).to_have_count(2)
    expect(parts.nth(1)).to_contain_text("application/x-unknown-cad")
    expect(parts.nth(1)).to_contain_text("oui")
    assert "empreinte" not in page.content()  # no file names
    page.screenshot(path=str(SCREENSHOTS / "quarantine-item.png"), full_page=True)
    before = len(real.sink.messages)
    page.click("#release-default")
    expect(page.locator(".flash.ok")).to_contain_text("libéré")
    background.run(real.settle())
    delivered = real.sink.messages[before:]
    assert [m.recipients for m in delivered] == [[LAB]]
    data = delivered[0].data
    assert b"empreinte.xyz" not in data  # the held part was dropped
    assert b"couronne zircone" in data
    for planted in PLANTED:
        assert planted.encode() not in data  # and the rest was pseudonymised
    records, _ = real.trail.search(kind="released")
    assert records[0].actor == "alice" and records[0].fields["mode"] == "without-held-parts"


def test_reidentify_a_token_and_find_the_action_in_the_audit_trail(
    admin_page: Page, stack: tuple[RealStack, BackgroundStack]
) -> None:
    real, background = stack
    before = len(real.sink.messages)
    background.run(real.send(lab_order("<browser-token@cabinet.test>"), (LAB,)))
    background.run(real.settle())
    delivered = [m for m in real.sink.messages[before:] if LAB in m.recipients]
    assert len(delivered) == 1
    known = {
        row[0] for row in real.vault._conn.execute("SELECT token FROM vault_entries").fetchall()
    }
    text = delivered[0].data.decode("utf-8", "replace")
    tokens = [t for t in known if t in text]
    assert tokens, "the delivered message carries a vault token"
    page = admin_page
    page.goto(real.base_url + "/reidentify")
    page.fill("input[name=token]", tokens[0])
    page.fill("textarea[name=reason]", "Le laboratoire demande le dossier de la patiente")
    page.click("#reidentify")
    expect(page.locator("#reid-result td.identity")).to_contain_text("DUPONTEL Marie-Ange")

    page.goto(real.base_url + "/audit")
    page.fill("input[name=kind]", "reidentified")
    page.click("#audit-search")
    row = page.locator("#audit-results tbody tr").first
    expect(row).to_contain_text("reidentified")
    expect(row).to_contain_text("alice")
    expect(row).to_contain_text(tokens[0])
    expect(row).to_contain_text("Le laboratoire demande le dossier de la patiente")
    assert "DUPONTEL" not in page.content()


def test_first_login_enrols_totp(
    context: BrowserContext, stack: tuple[RealStack, BackgroundStack]
) -> None:
    real, _ = stack
    page = context.new_page()
    account = real.accounts["newadmin"]
    log_in(page, real.base_url, account)
    expect(page).to_have_url(real.base_url + "/login/enrol")
    expect(page.locator("img.qr")).to_be_visible()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "enrol.png"), full_page=True)
    uri = page.locator("#otpauth-uri").inner_text()
    assert re.match(r"otpauth://totp/Portique:newadmin\?secret=[A-Z2-7]+", uri)
    secret = pyotp.parse_uri(uri).secret
    page.fill("input[name=code]", pyotp.TOTP(secret).now())
    page.click("button[type=submit]")
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    page.click("a.button")
    expect(page.locator("h1")).to_have_text("Tableau de bord")


def test_language_toggle(context: BrowserContext, stack: tuple[RealStack, BackgroundStack]) -> None:
    real, _ = stack
    page = context.new_page()
    page.goto(real.base_url + "/login")
    expect(page.locator("h1")).to_have_text("Connexion")
    page.click("a.lang")
    expect(page.locator("h1")).to_have_text("Sign in")
    expect(page.locator("html")).to_have_attribute("lang", "en")


def test_dashboard_shows_the_traffic(
    admin_page: Page, stack: tuple[RealStack, BackgroundStack]
) -> None:
    """Runs after the flows above: their messages appear as figures, never as names."""
    real, _ = stack
    page = admin_page
    page.goto(real.base_url + "/")
    lab_rows = page.locator("table tbody tr", has_text="pseudonymise")
    expect(lab_rows.first).to_be_visible()
    counts = [int(c) for c in lab_rows.locator("td.num").all_inner_texts()]
    assert sum(counts) >= 3  # search, held-then-released and token messages
    expect(page.locator("table tbody tr", has_text="birth_date")).to_be_visible()
    expect(page.locator("#chain-state")).to_contain_text("intègre")
    text = page.content()
    for planted in PLANTED:
        assert planted not in text
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
    page.goto(real.base_url + "/audit")
    page.screenshot(path=str(SCREENSHOTS / "audit.png"), full_page=True)
