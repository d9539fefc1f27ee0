"""The admin console: an aiohttp + jinja2 web app, server-rendered, no JavaScript.

Trust boundary: every request comes from a browser on the practice network
(untrusted until authenticated). The console reads and acts on the service only
through `ConsoleBackend` (gateway/admin/backend.py).

Invariants:
- TLS only (admin.tls_cert/tls_key, or a self-signed pair created in data_dir/admin).
- Every response carries the security headers in SECURITY_HEADERS (strict CSP with no
  inline script or style, no framing, no sniffing, no referrer, HSTS, no caching).
- The session cookie is Secure, HttpOnly, SameSite=Strict, `__Host-` prefixed, and
  carries only a random id; sessions expire after admin.session_idle_timeout.
- Every POST carries the session's CSRF token or is refused with 403 before any work.
- Roles: viewer < auditor < admin (gateway/admin/users.py); every page states the
  role it needs; auditor and admin must pass TOTP.
- Login failures are rate-limited per user name and per client IP.
- Patient identity is rendered only by the re-identification page, in the response to
  its POST (never in a URL, a redirect or a flash message).
- Every admin action goes through the backend, which audits it; logins are audited.
- No access log: URLs carry search filters (addresses); errors are logged by type only.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import io
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from gateway.admin import i18n
from gateway.admin.auth import Clock, LoginLimiter, Session, SessionStore, Stage
from gateway.admin.backend import (
    ActionRefused,
    AuditQuery,
    AuditRow,
    ConsoleBackend,
    ReleaseMode,
)
from gateway.admin.users import USER_NAME, Role, UserError, UserStore
from gateway.config import AdminConfig
from gateway.logging import get_logger

HERE = Path(__file__).parent
COOKIE = "__Host-portique-session"
LANG_COOKIE = "portique-lang"
log = get_logger("portique.admin")

SECURITY_HEADERS: Mapping[str, str] = {
    # No inline script or style at all; the QR code is a data: image.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # One year, the value HSTS preload lists ask for.
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

# Form fields are short; 64 KiB bounds what a hostile client can make us parse.
MAX_FORM_BYTES = 64 * 1024
# Free-text reasons (release as is, re-identification) go into the audit trail;
# 500 characters is a paragraph.
MAX_REASON_LENGTH = 500
# Tokens are short (gateway/vault.py); 128 characters rejects junk early.
MAX_TOKEN_LENGTH = 128
# Search filters: an address or a Message-ID fits in 998 octets (RFC 5322 line limit).
MAX_FILTER_LENGTH = 998
# Export: 100,000 records per file, fetched 1,000 at a time; a CNIL notification
# covers days, not years, and a bound keeps one request from exhausting memory.
MAX_EXPORT_ROWS = 100_000
EXPORT_BATCH = 1_000

BACKEND_KEY: web.AppKey[ConsoleBackend] = web.AppKey("backend")
USERS_KEY = web.AppKey("users", UserStore)
STATE_KEY: web.AppKey[ConsoleState] = web.AppKey("state")
SESSION: web.RequestKey[Session] = web.RequestKey("session")
LANG: web.RequestKey[str] = web.RequestKey("lang")
EXPIRED: web.RequestKey[bool] = web.RequestKey("expired")
FORM: web.RequestKey[Any] = web.RequestKey("form")


@dataclass
class ConsoleState:
    config: AdminConfig
    sessions: SessionStore
    limiter: LoginLimiter
    templates: jinja2.Environment


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- app assembly -----------------------------------------------------------------


def create_app(
    backend: ConsoleBackend,
    config: AdminConfig,
    users: UserStore,
    *,
    clock: Clock = time.monotonic,
) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, session_middleware], client_max_size=MAX_FORM_BYTES
    )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app[BACKEND_KEY] = backend
    app[USERS_KEY] = users
    app[STATE_KEY] = ConsoleState(
        config=config,
        sessions=SessionStore(config.session_idle_timeout, clock),
        limiter=LoginLimiter(config.login_max_failures, config.login_window, clock),
        templates=env,
    )
    app.on_response_prepare.append(_add_security_headers)
    r = app.router
    r.add_get("/", dashboard)
    r.add_get("/login", login_form)
    r.add_post("/login", login_submit)
    r.add_get("/login/totp", totp_form)
    r.add_post("/login/totp", totp_submit)
    r.add_get("/login/enrol", enrol_form)
    r.add_post("/login/enrol", enrol_submit)
    r.add_post("/logout", logout)
    r.add_get("/lang/{lang}", set_language)
    r.add_get("/audit", audit_page)
    r.add_get("/audit/export", audit_export)
    r.add_get("/quarantine", quarantine_list)
    r.add_get("/quarantine/{item_id}", quarantine_item)
    r.add_post("/quarantine/{item_id}/release", quarantine_release)
    r.add_post("/quarantine/{item_id}/delete", quarantine_delete)
    r.add_get("/queue", queue_list)
    r.add_post("/queue/{queue_id}/retry", queue_retry)
    r.add_get("/reidentify", reidentify_form)
    r.add_post("/reidentify", reidentify_submit)
    r.add_post("/lockdown", lockdown)
    r.add_static("/static", HERE / "static", show_index=False, follow_symlinks=False)
    return app


def server_ssl_context(config: AdminConfig, data_dir: Path) -> ssl.SSLContext:
    """TLS from admin.tls_cert/tls_key, else a self-signed pair in data_dir/admin."""
    from crypto.certs import ensure_self_signed

    if config.tls_cert and config.tls_key:
        cert, key = Path(config.tls_cert), Path(config.tls_key)
    else:
        cert, key = data_dir / "admin" / "tls.pem", data_dir / "admin" / "tls.key"
        ensure_self_signed(cert, key, _listen_host(config.listen) or "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


async def start_admin(
    backend: ConsoleBackend,
    config: AdminConfig,
    data_dir: Path,
    *,
    users: UserStore | None = None,
) -> web.AppRunner:
    """Start the console on admin.listen (port 0 picks a free port; see
    `runner.addresses`). Stop it with `await runner.cleanup()`."""
    store = users if users is not None else await asyncio.to_thread(UserStore.open, data_dir)
    app = create_app(backend, config, store)
    if users is None:

        async def _close_store(_app: web.Application) -> None:
            store.close()

        app.on_cleanup.append(_close_store)
    ctx = await asyncio.to_thread(server_ssl_context, config, data_dir)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = _parse_listen(config.listen)
    site = web.TCPSite(runner, host, port, ssl_context=ctx)
    await site.start()
    return runner


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _listen_host(listen: str) -> str:
    return _parse_listen(listen)[0]


# --- middlewares ------------------------------------------------------------------


async def _add_security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status in (403, 404) and not (exc.text or "").startswith("portique:"):
            key = "error.forbidden" if exc.status == 403 else "error.not_found"
            return _render_error(request, key, exc.status)
        raise
    except Exception as exc:
        # Type only: exception text from stores or parsers could carry data.
        log.error("admin_request_failed", error=type(exc).__name__, path=request.path)
        return _render_error(request, "error.internal", 500)


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    session = state.sessions.get(request.cookies.get(COOKIE))
    request[EXPIRED] = session is None and COOKIE in request.cookies
    if session is None:
        session = state.sessions.new()
    request[SESSION] = session
    request[LANG] = i18n.negotiate(
        request.cookies.get(LANG_COOKIE),
        request.headers.get("Accept-Language"),
        state.config.language,
    )
    if request.method == "POST":
        form = await request.post()
        token = form.get("csrf")
        if not isinstance(token, str) or not session.csrf_ok(token):
            log.warning("admin_csrf_refused", path=request.path)
            return _render_error(request, "error.csrf", 403)
        request[FORM] = form
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _set_session_cookie(exc, request[SESSION])
        raise
    _set_session_cookie(response, request[SESSION])
    return response


def _set_session_cookie(response: web.StreamResponse, session: Session) -> None:
    response.set_cookie(
        COOKIE, session.sid, path="/", secure=True, httponly=True, samesite="Strict"
    )


# --- rendering helpers ------------------------------------------------------------


def _t(request: web.Request) -> Callable[..., str]:
    lang = request.get(LANG, "fr")

    def t(key: str, **params: object) -> str:
        return i18n.translate(lang, key, **params)

    return t


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    state = request.app[STATE_KEY]
    session: Session | None = request.get(SESSION)
    flashes = session.flashes if session else []
    if session:
        session.flashes = []
    t = _t(request)
    html = state.templates.get_template(template).render(
        t=t,
        lang=request.get(LANG, "fr"),
        other_lang="en" if request.get(LANG, "fr") == "fr" else "fr",
        csrf=session.csrf if session else "",
        user=session.user if session and session.authenticated else "",
        role=session.role.value if session and session.authenticated and session.role else "",
        path=request.path_qs,
        flashes=[(level, t(key, **params)) for level, key, params in flashes],
        fmt_time=_fmt_time,
        **context,
    )
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)


def _render_error(request: web.Request, key: str, status: int) -> web.Response:
    return render(request, "error.html", status=status, message_key=key)


def flash(request: web.Request, level: str, key: str, **params: Any) -> None:
    """A PHI-free message shown on the next page (post/redirect/get)."""
    session: Session = request[SESSION]
    # 20 pending messages at most: a client looping on redirects cannot grow memory.
    session.flashes = [*session.flashes, (level, key, params)][-20:]


def _fmt_time(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def _field(request: web.Request, name: str, limit: int = MAX_FILTER_LENGTH) -> str:
    value = request[FORM].get(name, "")
    if not isinstance(value, str):
        return ""
    return value.strip()[:limit]


# --- authorisation ----------------------------------------------------------------


def require(request: web.Request, role: Role) -> Session:
    """The authenticated session with at least `role`; otherwise redirect or 403."""
    session: Session = request[SESSION]
    if not session.authenticated:
        if request[EXPIRED]:
            flash(request, "error", "login.expired")
        raise _redirect("/login")
    assert session.role is not None
    if not session.role.allows(role):
        raise web.HTTPForbidden()
    return session


# --- login ------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.StreamResponse:
    session: Session = request[SESSION]
    if session.authenticated:
        raise _redirect("/")
    return render(request, "login.html")


def _client_ip(request: web.Request) -> str:
    return request.remote or "?"


async def _audit_login(request: web.Request, user: str, ok: bool, reason: str) -> None:
    await request.app[BACKEND_KEY].record_admin_event(
        "admin_login", {"ok": ok, "client": _client_ip(request), "reason": reason}, user=user
    )


def _shown_name(name: str) -> str:
    """A typed user name as it may appear in the audit trail."""
    return name if USER_NAME.match(name) else "?"


async def login_submit(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    users = request.app[USERS_KEY]
    name = _field(request, "user", 64)
    password = request[FORM].get("password", "")
    password = password if isinstance(password, str) else ""
    keys = (f"user:{name.lower()}", f"ip:{_client_ip(request)}")
    if state.limiter.blocked(*keys):
        await _audit_login(request, _shown_name(name), False, "rate_limited")
        return render(request, "login.html", status=429, error_key="login.rate_limited")
    user = await asyncio.to_thread(users.verify_password, name, password)
    if user is None:
        state.limiter.fail(*keys)
        await _audit_login(request, _shown_name(name), False, "bad_password")
        return render(request, "login.html", status=401, error_key="login.failed")
    session = state.sessions.rotate(request[SESSION])
    request[SESSION] = session
    session.user, session.role = user.name, user.role
    if user.totp_enrolled:
        session.stage = Stage.NEEDS_TOTP
        raise _redirect("/login/totp")
    if user.role.requires_totp:
        session.stage = Stage.NEEDS_ENROLMENT
        raise _redirect("/login/enrol")
    session.stage = Stage.AUTHENTICATED
    state.limiter.succeed(keys[0])
    await _audit_login(request, user.name, True, "password")
    raise _redirect("/")


def _pending(request: web.Request, stage: Stage) -> Session:
    session: Session = request[SESSION]
    if session.stage is not stage:
        raise _redirect("/login")
    return session


async def totp_form(request: web.Request) -> web.StreamResponse:
    _pending(request, Stage.NEEDS_TOTP)
    return render(request, "totp.html")


async def totp_submit(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    session = _pending(request, Stage.NEEDS_TOTP)
    keys = (f"user:{session.user.lower()}", f"ip:{_client_ip(request)}")
    if state.limiter.blocked(*keys):
        await _audit_login(request, session.user, False, "rate_limited")
        state.sessions.drop(session)
        request[SESSION] = state.sessions.new()
        return render(request, "login.html", status=429, error_key="login.rate_limited")
    code = _field(request, "code", 32)
    ok = await asyncio.to_thread(request.app[USERS_KEY].verify_second_factor, session.user, code)
    if not ok:
        state.limiter.fail(*keys)
        await _audit_login(request, session.user, False, "bad_second_factor")
        return render(request, "totp.html", status=401, error_key="totp.failed")
    session = state.sessions.rotate(session)
    request[SESSION] = session
    session.stage = Stage.AUTHENTICATED
    state.limiter.succeed(keys[0])
    await _audit_login(request, session.user, True, "totp")
    raise _redirect("/")


def _qr_data_uri(uri: str) -> str:
    import qrcode

    image = qrcode.make(uri, box_size=6, border=2)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def enrol_form(request: web.Request, error_key: str = "") -> web.StreamResponse:
    session = _pending(request, Stage.NEEDS_ENROLMENT)
    users = request.app[USERS_KEY]
    secret = await asyncio.to_thread(users.pending_totp_secret, session.user)
    uri = users.provisioning_uri(session.user, secret)
    return render(
        request,
        "enrol.html",
        status=401 if error_key else 200,
        qr=_qr_data_uri(uri),
        otpauth_uri=uri,
        secret=secret,
        error_key=error_key,
    )


async def enrol_submit(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    session = _pending(request, Stage.NEEDS_ENROLMENT)
    keys = (f"user:{session.user.lower()}", f"ip:{_client_ip(request)}")
    if state.limiter.blocked(*keys):
        await _audit_login(request, session.user, False, "rate_limited")
        state.sessions.drop(session)
        request[SESSION] = state.sessions.new()
        return render(request, "login.html", status=429, error_key="login.rate_limited")
    code = _field(request, "code", 32)
    try:
        codes = await asyncio.to_thread(
            request.app[USERS_KEY].complete_enrolment, session.user, code
        )
    except UserError:
        state.limiter.fail(*keys)
        await _audit_login(request, session.user, False, "bad_second_factor")
        return await enrol_form(request, error_key="totp.failed")
    session = state.sessions.rotate(session)
    request[SESSION] = session
    session.stage = Stage.AUTHENTICATED
    state.limiter.succeed(keys[0])
    await _audit_login(request, session.user, True, "totp_enrolled")
    # Shown once, in this response only; the store keeps their hashes.
    return render(request, "recovery.html", codes=codes)


async def logout(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.sessions.drop(request[SESSION])
    request[SESSION] = state.sessions.new()
    raise _redirect("/login")


async def set_language(request: web.Request) -> web.StreamResponse:
    lang = request.match_info["lang"]
    if lang not in i18n.LANGUAGES:
        raise web.HTTPNotFound()
    target = request.query.get("next", "/")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = "/"  # no open redirect
    response = _redirect(target)
    response.set_cookie(LANG_COOKIE, lang, path="/", secure=True, httponly=True, samesite="Strict")
    raise response


# --- pages ------------------------------------------------------------------------


async def dashboard(request: web.Request) -> web.StreamResponse:
    require(request, Role.VIEWER)
    stats = await request.app[BACKEND_KEY].dashboard()
    per_hour_max = max((h.count for h in stats.messages_per_hour), default=0)
    findings_max = max(stats.findings_per_type.values(), default=0)
    return render(
        request,
        "dashboard.html",
        stats=stats,
        per_hour_max=per_hour_max,
        findings_max=findings_max,
    )


async def lockdown(request: web.Request) -> web.StreamResponse:
    session = require(request, Role.ADMIN)
    on = _field(request, "state", 8) == "on"
    await request.app[BACKEND_KEY].set_lockdown(on, user=session.user)
    flash(request, "ok", "lockdown.on" if on else "lockdown.off")
    raise _redirect("/")


def _parse_date(value: str, field_name: str, *, end: bool = False) -> dt.datetime | None:
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise _BadInput(field_name) from exc
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return start + dt.timedelta(days=1) if end else start


class _BadInput(Exception):
    def __init__(self, field_name: str) -> None:
        super().__init__(field_name)
        self.field_name = field_name


AUDIT_FILTERS = ("sender", "recipient", "route", "action", "message_id", "kind")


def _audit_query(request: web.Request, *, limit: int, offset: int) -> AuditQuery:
    q = request.query
    values = {name: q.get(name, "").strip()[:MAX_FILTER_LENGTH] for name in AUDIT_FILTERS}
    return AuditQuery(
        since=_parse_date(q.get("since", "").strip(), "since"),
        until=_parse_date(q.get("until", "").strip(), "until", end=True),
        limit=limit,
        offset=offset,
        **values,
    )


# 50 records per page: readable on a screen, and one cheap indexed query.
AUDIT_PAGE_SIZE = 50


async def audit_page(request: web.Request) -> web.StreamResponse:
    require(request, Role.AUDITOR)
    try:
        offset = max(0, int(request.query.get("offset", "0") or 0))
    except ValueError:
        offset = 0
    filters = {
        k: request.query.get(k, "")[:MAX_FILTER_LENGTH] for k in (*AUDIT_FILTERS, "since", "until")
    }
    try:
        query = _audit_query(request, limit=AUDIT_PAGE_SIZE, offset=offset)
    except _BadInput as exc:
        return render(
            request,
            "audit.html",
            status=400,
            filters=filters,
            page=None,
            error=_t(request)("error.bad_input", field=exc.field_name),
            links={},
        )
    page = await request.app[BACKEND_KEY].search_audit(query)
    base = {k: v for k, v in filters.items() if v}
    links = {}
    if offset > 0:
        links["prev"] = _query_string({**base, "offset": str(max(0, offset - AUDIT_PAGE_SIZE))})
    if offset + len(page.rows) < page.total:
        links["next"] = _query_string({**base, "offset": str(offset + AUDIT_PAGE_SIZE)})
    links["jsonl"] = _query_string({**base, "format": "jsonl"})
    links["csv"] = _query_string({**base, "format": "csv"})
    return render(
        request,
        "audit.html",
        filters=filters,
        page=page,
        offset=offset,
        links=links,
        error="",
        fields_text=_fields_text,
    )


def _query_string(params: Mapping[str, str]) -> str:
    from urllib.parse import urlencode

    return "?" + urlencode(params)


def _fields_text(fields: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else v}"
        for k, v in fields.items()
    )


def _row_dict(row: AuditRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "time": row.time.isoformat(),
        "kind": row.kind,
        "actor": row.actor,
        "fields": dict(row.fields),
    }


async def audit_export(request: web.Request) -> web.StreamResponse:
    session = require(request, Role.AUDITOR)
    fmt = request.query.get("format", "jsonl")
    if fmt not in ("jsonl", "csv"):
        raise web.HTTPBadRequest(text="portique: format must be jsonl or csv")
    try:
        first = _audit_query(request, limit=EXPORT_BATCH, offset=0)
    except _BadInput as exc:
        raise web.HTTPBadRequest(text=f"portique: invalid {exc.field_name}") from exc
    backend = request.app[BACKEND_KEY]
    rows: list[AuditRow] = []
    offset = 0
    while len(rows) < MAX_EXPORT_ROWS:
        page = await backend.search_audit(
            AuditQuery(**{**asdict(first), "limit": EXPORT_BATCH, "offset": offset})
        )
        rows.extend(page.rows)
        offset += len(page.rows)
        if not page.rows or offset >= page.total:
            break
    rows = rows[:MAX_EXPORT_ROWS]
    await backend.record_admin_event(
        "exported",
        {
            "format": fmt,
            "rows": len(rows),
            # Address filters may name a patient: record that they were used, not them.
            **{
                k: ("(given)" if k in ("sender", "recipient") else v[:MAX_FILTER_LENGTH])
                for k, v in request.query.items()
                if k in (*AUDIT_FILTERS, "since", "until") and v
            },
        },
        user=session.user,
    )
    if fmt == "jsonl":
        body = "".join(
            json.dumps(_row_dict(r), ensure_ascii=False, default=str) + "\n" for r in rows
        )
        content_type = "application/x-ndjson"
    else:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["seq", "time", "kind", "actor", "fields"])
        for r in rows:
            d = _row_dict(r)
            writer.writerow(
                [
                    d["seq"],
                    d["time"],
                    d["kind"],
                    d["actor"],
                    json.dumps(d["fields"], ensure_ascii=False, default=str),
                ]
            )
        body = buf.getvalue()
        content_type = "text/csv"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return web.Response(
        text=body,
        content_type=content_type,
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="portique-audit-{stamp}.{fmt}"'},
    )


async def quarantine_list(request: web.Request) -> web.StreamResponse:
    require(request, Role.ADMIN)
    items = await request.app[BACKEND_KEY].list_quarantine()
    return render(request, "quarantine.html", items=items)


async def quarantine_item(request: web.Request) -> web.StreamResponse:
    require(request, Role.ADMIN)
    item_id = request.match_info["item_id"]
    detail = await request.app[BACKEND_KEY].show_quarantine(item_id)
    if detail is None:
        flash(request, "error", "q.missing")
        raise _redirect("/quarantine")
    return render(request, "quarantine_item.html", detail=detail, modes=ReleaseMode)


async def quarantine_release(request: web.Request) -> web.StreamResponse:
    session = require(request, Role.ADMIN)
    item_id = request.match_info["item_id"]
    try:
        mode = ReleaseMode(_field(request, "mode", 32) or ReleaseMode.WITHOUT_HELD_PARTS)
    except ValueError:
        raise web.HTTPBadRequest(text="portique: unknown release mode") from None
    reason = _field(request, "reason", MAX_REASON_LENGTH)
    if mode is ReleaseMode.AS_IS and not reason:
        flash(request, "error", "q.reason_required")
        raise _redirect(f"/quarantine/{item_id}")
    try:
        outcome = await request.app[BACKEND_KEY].release_quarantine(
            item_id, mode, reason=reason, user=session.user
        )
    except ActionRefused as exc:
        flash(request, "error", f"refused.{exc.reason}")
        raise _redirect("/quarantine") from None
    flash(request, "ok", "q.released", id=item_id, outcome=outcome)
    raise _redirect("/quarantine")


async def quarantine_delete(request: web.Request) -> web.StreamResponse:
    session = require(request, Role.ADMIN)
    item_id = request.match_info["item_id"]
    try:
        await request.app[BACKEND_KEY].delete_quarantine(item_id, user=session.user)
    except ActionRefused as exc:
        flash(request, "error", f"refused.{exc.reason}")
        raise _redirect("/quarantine") from None
    flash(request, "ok", "q.deleted", id=item_id)
    raise _redirect("/quarantine")


async def queue_list(request: web.Request) -> web.StreamResponse:
    require(request, Role.ADMIN)
    entries = await request.app[BACKEND_KEY].list_queue()
    return render(request, "queue.html", entries=entries)


async def queue_retry(request: web.Request) -> web.StreamResponse:
    session = require(request, Role.ADMIN)
    queue_id = request.match_info["queue_id"]
    try:
        await request.app[BACKEND_KEY].retry_queue(queue_id, user=session.user)
    except ActionRefused as exc:
        flash(request, "error", f"refused.{exc.reason}")
        raise _redirect("/queue") from None
    flash(request, "ok", "queue.retried", id=queue_id)
    raise _redirect("/queue")


async def reidentify_form(request: web.Request) -> web.StreamResponse:
    require(request, Role.ADMIN)
    return render(request, "reidentify.html", token="", reason="", result=None, error_key="")


async def reidentify_submit(request: web.Request) -> web.StreamResponse:
    session = require(request, Role.ADMIN)
    token = _field(request, "token", MAX_TOKEN_LENGTH)
    reason = _field(request, "reason", MAX_REASON_LENGTH)
    if not token or not reason:
        return render(
            request,
            "reidentify.html",
            status=400,
            token=token,
            reason=reason,
            result=None,
            error_key="reid.reason_required" if token else "reid.unknown",
        )
    identities = await request.app[BACKEND_KEY].reidentify(token, reason=reason, user=session.user)
    return render(
        request,
        "reidentify.html",
        token=token,
        reason="",
        result=identities,
        error_key="" if identities else "reid.unknown",
    )
