"""`portique hash-password`: print the argon2id hash for an `[[smtp.users]]` entry.

The password is read from standard input (one line), never from the command line,
so it does not land in shell history or the process list.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("hash-password", help="argon2id hash for an [[smtp.users]] password")
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=run_hash_password)


def run_hash_password(args: argparse.Namespace) -> int:
    from argon2 import PasswordHasher

    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
    if not password:
        print("portique: empty password", file=sys.stderr)
        return 2
    print(PasswordHasher().hash(password))
    return 0
