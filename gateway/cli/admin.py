"""`portique admin add-user|reset-totp|list-users`: console accounts in data_dir/admin.

Passwords are read from a prompt (twice) or, for scripts, from stdin with
--password-stdin; they never appear on the command line (visible in `ps`).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("admin", help="admin console users")
    cmds = p.add_subparsers(dest="admin_command", required=True)
    add = cmds.add_parser("add-user", parents=[common], help="create a console user")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["viewer", "auditor", "admin"])
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (one line)"
    )
    add.set_defaults(func=run_add_user)
    reset = cmds.add_parser(
        "reset-totp",
        parents=[common],
        help="forget a user's second factor and recovery codes (re-enrol at next login)",
    )
    reset.add_argument("name")
    reset.set_defaults(func=run_reset_totp)
    cmds.add_parser("list-users", parents=[common], help="list console users").set_defaults(
        func=run_list_users
    )


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    second = getpass.getpass("Password (again): ")
    if first != second:
        from gateway.admin.users import UserError

        raise UserError("passwords do not match")
    return first


def run_add_user(args: argparse.Namespace) -> int:
    from gateway.admin.users import UserStore
    from gateway.config import load_config

    cfg = load_config(args.config)
    password = _read_password(args.password_stdin)
    store = UserStore.open(cfg.data_dir)
    try:
        user = store.add_user(args.name, args.role, password)
    finally:
        store.close()
    totp = " (TOTP enrolment at first login)" if user.role.requires_totp else ""
    print(f"user {user.name} created with role {user.role.value}{totp}")
    return 0


def run_reset_totp(args: argparse.Namespace) -> int:
    from gateway.admin.users import UserStore
    from gateway.config import load_config

    cfg = load_config(args.config)
    store = UserStore.open(cfg.data_dir)
    try:
        store.reset_totp(args.name)
    finally:
        store.close()
    print(f"second factor of {args.name} reset; they enrol again at next login")
    return 0


def run_list_users(args: argparse.Namespace) -> int:
    from gateway.admin.users import UserStore
    from gateway.config import load_config

    cfg = load_config(args.config)
    store = UserStore.open(cfg.data_dir)
    try:
        for user in store.list_users():
            print(f"{user.name}\t{user.role.value}\t{'totp' if user.totp_enrolled else '-'}")
    finally:
        store.close()
    return 0
