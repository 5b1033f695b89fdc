"""``medcert`` entry point: subcommands, one-line user errors, exit codes.

Exit codes: 0 success / PASS, 1 FAIL, 2 INCONCLUSIVE (verify), 64 usage error, 65 user error
(bad input, refused file), 70 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from medcert import __version__
from medcert.errors import MedCertError

EXIT_USAGE = 64
EXIT_USER_ERROR = 65
EXIT_INTERNAL = 70

# Each module defines ``register(subparsers)`` which adds its parser with ``set_defaults(func=run)``.
COMMAND_MODULES = (
    "medcert.cli.cmd_keygen",
    "medcert.cli.cmd_inspect",
    "medcert.cli.cmd_segment",
    "medcert.cli.cmd_verify",
    "medcert.cli.cmd_audit",
    "medcert.cli.cmd_demo",
    "medcert.cli.cmd_train",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medcert", description="Certified, replay-verifiable AI segmentation.")
    parser.add_argument("--version", action="version", version=f"medcert {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except MedCertError as exc:
        if args.debug:
            raise
        print(f"medcert: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("medcert: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"medcert: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
