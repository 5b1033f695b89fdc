"""`medcert segment` (placeholder until implemented)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("segment", help="(not yet implemented)").set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcert.errors import MedCertError

    raise MedCertError("'segment' is not implemented yet")
