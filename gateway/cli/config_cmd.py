"""`portique check-config`: validate a configuration without starting anything.

Also reads each MSSanté connector's client certificate (its expiry is printed; an
unreadable or expired certificate fails the check, one expiring soon warns) and warns
when its `nil` (X-MSS-NIL product reference) is empty. Prints paths and dates, never
key material.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("check-config", parents=[common], help="validate the configuration")
    p.set_defaults(func=run_check_config)


def run_check_config(args: argparse.Namespace) -> int:
    from gateway.config import load_config

    cfg = load_config(args.config)
    print(f"configuration OK: {cfg.source}")
    routes = cfg.effective_routes()
    print(f"  data_dir: {cfg.data_dir}")
    print(f"  smtp: {cfg.smtp.listen}, allowed networks: {', '.join(cfg.smtp.allowed_networks)}")
    for r in routes:
        print(f"  route {r.name}: {', '.join(r.match)} -> {r.action} via {r.connector or '-'}")
    ok = True
    for name, connector in cfg.connectors.items():
        if connector.type == "mssante":
            ok = _check_mssante(cfg, name, connector) and ok
    return 0 if ok else 1


# Warn this many days before the MSSanté client certificate expires: renewing an IGC
# Santé certificate takes days to weeks (order, ANS validation, installation).
CERT_EXPIRY_WARNING_DAYS = 30


def _check_mssante(cfg: Any, name: str, connector: Any) -> bool:
    """Report the client certificate's expiry and the NIL; False on a blocking problem."""
    import datetime as dt

    from crypto.tls import load_client_identity
    from gateway.errors import ConfigError

    ok = True
    if not connector.client_cert:
        print(f"  ERROR connectors.{name}.client_cert: MSSanté needs a client certificate")
        ok = False
    else:
        try:
            identity = load_client_identity(
                str(cfg.path(connector.client_cert)),
                str(cfg.path(connector.client_key)) if connector.client_key else "",
                connector.client_cert_password,
            )
        except ConfigError as exc:
            print(f"  ERROR connectors.{name}.{exc}")
            ok = False
        else:
            left = identity.not_after - dt.datetime.now(dt.UTC)
            when = identity.not_after.strftime("%Y-%m-%d %H:%M UTC")
            if left.total_seconds() <= 0:
                print(f"  ERROR connectors.{name}: client certificate expired on {when}")
                ok = False
            elif left.days < CERT_EXPIRY_WARNING_DAYS:
                print(
                    f"  WARNING connectors.{name}: client certificate expires on {when}"
                    f" (in {left.days} days): renew it now"
                )
            else:
                print(
                    f"  connector {name}: client certificate expires on {when} ({left.days} days)"
                )
    if not connector.nil.strip():
        print(
            f"  WARNING connectors.{name}.nil is empty: MSSanté operators expect the"
            " X-MSS-NIL product reference (convergence.esante.gouv.fr)"
        )
    return ok
