"""Admin console (aiohttp + jinja2): see gateway/admin/app.py for its invariants.

The service starts it with `await start_admin(backend, config.admin, config.data_dir)`
and stops it with `await runner.cleanup()`.
"""

from __future__ import annotations

from gateway.admin.app import create_app, start_admin
from gateway.admin.backend import ConsoleBackend, ReleaseMode

__all__ = ["ConsoleBackend", "ReleaseMode", "create_app", "start_admin"]
