"""Per-recipient routing: ordered routes, first match wins per recipient.

Input: envelope recipients (untrusted strings) and the configured routes.
Output: one RouteCopy per (route, audience), never a recipient in two copies and
never a recipient without a copy (an unmatched recipient gets a `reject` copy).

Patterns: `*` (anything), `*@domain`, `*@*.domain` (fnmatch on the lower-cased
address), and the special `@mssante` (domain on the ANS trust list).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

from gateway.config import RouteConfig
from gateway.pipeline.model import RouteCopy
from gateway.verdicts import Action

MSSANTE_MATCHER = "@mssante"


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def route_matches(
    route: RouteConfig, address: str, is_mssante: Callable[[str], bool] | None = None
) -> bool:
    addr = address.lower()
    for pattern in route.match:
        if pattern == MSSANTE_MATCHER:
            if is_mssante is not None and is_mssante(addr):
                return True
        elif fnmatch.fnmatchcase(addr, pattern.lower()):
            return True
    return False


def find_route(
    routes: Sequence[RouteConfig],
    address: str,
    is_mssante: Callable[[str], bool] | None = None,
) -> RouteConfig | None:
    for route in routes:
        if route_matches(route, address, is_mssante):
            return route
    return None


def plan_copies(
    recipients: Sequence[str],
    routes: Sequence[RouteConfig],
    is_mssante: Callable[[str], bool] | None = None,
) -> list[RouteCopy]:
    """Group recipients into copies: one per route, and per domain where tokens differ."""
    groups: dict[tuple[str, str], list[str]] = {}
    by_name = {r.name: r for r in routes}
    for rcpt in recipients:
        route = find_route(routes, rcpt, is_mssante)
        name = route.name if route else ""
        action = Action(route.action) if route else Action.REJECT
        audience = domain_of(rcpt) if action == Action.PSEUDONYMISE else ""
        key = (name, rcpt.lower() if action == Action.OWN_DATA_ONLY else audience)
        groups.setdefault(key, []).append(rcpt)
    copies = []
    for (name, audience), rcpts in groups.items():
        route = by_name.get(name)
        if route is None:
            copies.append(RouteCopy("", Action.REJECT, "", tuple(rcpts)))
            continue
        action = Action(route.action)
        copies.append(
            RouteCopy(
                route=route.name,
                action=action,
                connector=route.connector,
                recipients=tuple(rcpts),
                audience=audience if action == Action.PSEUDONYMISE else "",
                overrides=dict(route.overrides),
                unknown_files=route.unknown_files,
            )
        )
    return copies
