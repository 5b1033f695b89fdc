"""`medcert audit` (placeholder until implemented)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("audit", help="(not yet implemented)").set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcert.errors import MedCertError

    raise MedCertError("'audit' is not implemented yet")
