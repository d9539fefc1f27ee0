"""Per-recipient routing: ordered routes, first match wins per recipient.

Input: envelope recipients (untrusted strings) and the configured routes.
Output: one RouteCopy per (route, audience), never a recipient in two copies and
never a recipient without a copy (an unmatched recipient gets a `reject` copy).

Patterns: `*` (anything), `*@domain`, `*@*.domain` (fnmatch on the lower-cased
address), and the special `@mssante` (domain on the ANS trust list, exact match; a
patient address `<INS>@patient.mssante.fr` only with a valid INS key).

Invariants:
- Copies are split so that no two audiences share transformed bytes:
  - `pseudonymise` routes: one copy per recipient domain (`audience`), so each lab
    gets tokens of its own;
  - `own-data-only` routes: one copy per recipient, carrying `own_patient` (the
    roster patient whose e-mail the recipient is, or None), so one patient's data
    never reaches another;
  - other routes: one copy per route.
- Without a trust list (`is_mssante` None) `@mssante` matches nothing: an unknown
  list never widens the espace de confiance.
- A recipient in a listed domain that is not a valid MSSanté address (a patient
  address whose INS key is wrong) is rejected, never routed onwards to a later route
  such as the ordinary relay (`is_mssante_domain` given).
- A recipient given twice (any case) gets one copy.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import Config, RouteConfig
from gateway.pipeline.model import RouteCopy
from gateway.verdicts import Action

MSSANTE_MATCHER = "@mssante"
# Route name of the reject copy for recipients no route takes.
UNMATCHED = ""

Predicate = Callable[[str], bool]


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def route_matches(route: RouteConfig, address: str, is_mssante: Predicate | None = None) -> bool:
    addr = address.strip().lower()
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
    is_mssante: Predicate | None = None,
) -> RouteConfig | None:
    for route in routes:
        if route_matches(route, address, is_mssante):
            return route
    return None


def _misaddressed_mssante(
    address: str, is_mssante: Predicate | None, is_mssante_domain: Predicate | None
) -> bool:
    """A listed domain, but not an address MSSanté accepts (e.g. a bad patient INS)."""
    if is_mssante_domain is None or is_mssante is None:
        return False
    return is_mssante_domain(domain_of(address)) and not is_mssante(address.strip().lower())


def plan_copies(
    recipients: Sequence[str],
    routes: Sequence[RouteConfig],
    is_mssante: Predicate | None = None,
    *,
    own_patient_of: Callable[[str], str | None] | None = None,
    is_mssante_domain: Predicate | None = None,
) -> list[RouteCopy]:
    """Group recipients into copies: one per route, per domain where tokens differ,
    per recipient on own-data-only routes. Order follows the first recipient of each."""
    groups: dict[tuple[str, str], list[str]] = {}
    seen: set[str] = set()
    by_name = {r.name: r for r in routes}
    for rcpt in recipients:
        folded = rcpt.strip().lower()
        if folded in seen:
            continue
        seen.add(folded)
        if _misaddressed_mssante(rcpt, is_mssante, is_mssante_domain):
            route = None
        else:
            route = find_route(routes, rcpt, is_mssante)
        name = route.name if route else UNMATCHED
        action = Action(route.action) if route else Action.REJECT
        if action == Action.PSEUDONYMISE:
            audience = domain_of(rcpt)
        elif action == Action.OWN_DATA_ONLY:
            audience = folded
        else:
            audience = ""
        groups.setdefault((name, audience), []).append(rcpt)
    copies = []
    for (name, audience), rcpts in groups.items():
        route = by_name.get(name) if name != UNMATCHED else None
        if route is None:
            copies.append(RouteCopy(UNMATCHED, Action.REJECT, "", tuple(rcpts)))
            continue
        action = Action(route.action)
        own_patient = None
        if action == Action.OWN_DATA_ONLY and own_patient_of is not None:
            own_patient = own_patient_of(rcpts[0])
        copies.append(
            RouteCopy(
                route=route.name,
                action=action,
                connector=route.connector,
                recipients=tuple(rcpts),
                audience=audience if action == Action.PSEUDONYMISE else "",
                overrides=dict(route.overrides),
                unknown_files=route.unknown_files,
                own_patient=own_patient,
            )
        )
    return copies


# --- explaining a route (CLI, admin) --------------------------------------------------


@dataclass(frozen=True)
class RouteDecision:
    """Which route and connector one address takes, and why."""

    address: str
    route: str  # "" when no route matches
    action: str
    connector: str
    connector_type: str
    pattern: str  # the pattern that matched
    on_trust_list: bool | None  # None: no trust list configured
    note: str = ""


def explain_route(
    address: str,
    cfg: Config,
    is_mssante: Predicate | None = None,
    is_mssante_domain: Predicate | None = None,
) -> RouteDecision:
    routes = cfg.effective_routes()
    connectors = cfg.effective_connectors()
    listed = is_mssante_domain(domain_of(address)) if is_mssante_domain else None
    if _misaddressed_mssante(address, is_mssante, is_mssante_domain):
        return RouteDecision(
            address, UNMATCHED, Action.REJECT.value, "", "", "", listed,
            "domain is on the MSSanté trust list but the address is not valid there "
            "(patient addresses need a valid INS)",
        )  # fmt: skip
    addr = address.strip().lower()
    for route in routes:
        for pattern in route.match:
            if pattern == MSSANTE_MATCHER:
                hit = is_mssante is not None and is_mssante(addr)
            else:
                hit = fnmatch.fnmatchcase(addr, pattern.lower())
            if hit:
                ctype = connectors[route.connector].type if route.connector in connectors else ""
                return RouteDecision(
                    address, route.name, route.action, route.connector, ctype, pattern, listed
                )
    return RouteDecision(
        address, UNMATCHED, Action.REJECT.value, "", "", "", listed, "no route matches"
    )


def mssante_predicates(
    cfg: Config, connectors: Mapping[str, Any] | None = None
) -> tuple[Predicate | None, Predicate | None]:
    """(is_mssante_address, is_mssante_domain) from the configured trust list.

    Prefers a running MSSanté connector's trust list (it refreshes it); otherwise
    loads the `trust_list` file of the first mssante connector. Returns (None, None)
    when no MSSanté connector is configured. A list that cannot be loaded raises
    TrustListError: the caller decides (the service should not start without it).
    """
    for name, ccfg in cfg.connectors.items():
        if ccfg.type != "mssante":
            continue
        live = (connectors or {}).get(name)
        source = getattr(live, "trust", None)
        if source is None:
            from gateway.trustlist import TrustListSource

            source = TrustListSource(
                cfg.path(ccfg.trust_list),
                ccfg.trust_list_url,
                ca_file=str(cfg.path(ccfg.ca_file)) if ccfg.ca_file else "",
            )
        return source.is_mssante_address, source.contains
    return None, None
