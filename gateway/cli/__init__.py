"""`portique` command line: one module per subcommand group in this package.

Each public module here defines `register(subparsers, common)`; `common` is the parent
parser carrying `-c/--config FILE`. Modules import heavy dependencies inside their
handlers so that `portique --help` stays fast. A handler returns the exit status.
Errors from Portique (PortiqueError) print one line on stderr and exit 2; they never
carry patient data.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from gateway.errors import PortiqueError


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="configuration file (default: ./portique.toml if present, else embedded defaults)",
    )
    parser = argparse.ArgumentParser(prog="portique", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PortiqueError as exc:
        print(f"portique: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
