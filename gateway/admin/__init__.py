"""Admin console (aiohttp + jinja2): see gateway/admin/app.py for its invariants.

A started service gets its console with
    runner = await start_console(service, trail, vault, keyring.digest_key)
(gateway/admin/service_backend.py: honours admin.enabled, resolves TLS paths, subscribes
the audit trail and the hold alerts), or, with any ConsoleBackend,
    runner = await start_admin(backend, config.admin, config.data_dir)
and stops it with `await runner.cleanup()`.
"""

from __future__ import annotations

from gateway.admin.app import create_app, start_admin
from gateway.admin.backend import ConsoleBackend, ReleaseMode
from gateway.admin.service_backend import ServiceBackend, start_console

__all__ = [
    "ConsoleBackend",
    "ReleaseMode",
    "ServiceBackend",
    "create_app",
    "start_admin",
    "start_console",
]
