"""`portique routes test ADDRESS...`: which route and connector each address takes.

Reads the configuration and the MSSanté trust list file (no network, no running
gateway needed). Prints, per address: the route, its action, the connector and its
type, the pattern that matched, and whether the domain is on the trust list. Exit
status 0 when every address has a route, 1 when one would be rejected as unrouted.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("routes", help="inspect routing")
    rs = p.add_subparsers(dest="routes_command", required=True)
    t = rs.add_parser(
        "test", parents=[common], help="print the route and connector an address takes"
    )
    t.add_argument("addresses", nargs="+", metavar="ADDRESS")
    t.set_defaults(func=run_test)


def run_test(args: argparse.Namespace) -> int:
    import sys

    from gateway.config import load_config
    from gateway.errors import TrustListError
    from gateway.routes import explain_route, mssante_predicates

    cfg = load_config(args.config)
    trust_error = ""
    try:
        is_mssante, is_listed_domain = mssante_predicates(cfg)
    except TrustListError as exc:
        # Still show the routing: without a list, @mssante matches nothing (as in serve).
        is_mssante = is_listed_domain = None
        trust_error = str(exc)
        print(f"portique: warning: {exc}; '@mssante' matches nothing", file=sys.stderr)
    status = 0
    for address in args.addresses:
        d = explain_route(address, cfg, is_mssante, is_listed_domain)
        if trust_error:
            listed = "trust list unreadable"
        elif d.on_trust_list is None:
            listed = "no trust list configured"
        else:
            listed = "domain listed" if d.on_trust_list else "domain not listed"
        print(f"{d.address}")
        if d.route or d.action != "reject" or d.pattern:
            print(f"  route:      {d.route} (match {d.pattern!r})")
            print(f"  action:     {d.action}")
            conn = f"{d.connector} (type {d.connector_type})" if d.connector else "none"
            print(f"  connector:  {conn}")
        else:
            print("  route:      none: rejected, nothing sent")
            print(f"  why:        {d.note}")
            status = 1
        print(f"  MSSanté:    {listed}")
    return status
