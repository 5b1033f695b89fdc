"""Where the audit log lives and what happens when it cannot be written.

Location, first match wins: the ``db`` argument / ``--audit-db PATH``, env ``MEDCERT_AUDIT_DB``,
``$MEDCERT_HOME/audit.sqlite`` (``MEDCERT_HOME`` defaults to ``~/.local/share/medcert``).
Policy (env ``MEDCERT_AUDIT_POLICY``): ``refuse`` (default) or ``warn``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from medcert.errors import AuditError

DB_NAME = "audit.sqlite"
POLICIES = ("refuse", "warn")
DEFAULT_CHECKPOINT_EVERY = 100


def medcert_home() -> Path:
    """``$MEDCERT_HOME`` or ``~/.local/share/medcert``."""
    home = os.environ.get("MEDCERT_HOME", "").strip()
    return Path(home).expanduser() if home else Path.home() / ".local" / "share" / "medcert"


def resolve_db_path(db: str | Path | None = None) -> Path:
    """The audit database path for an explicit ``db`` or the environment."""
    if db is not None and str(db).strip():
        return Path(db).expanduser()
    env = os.environ.get("MEDCERT_AUDIT_DB", "").strip()
    return Path(env).expanduser() if env else medcert_home() / DB_NAME


def audit_policy(policy: str | None = None) -> str:
    """``refuse`` or ``warn``: the argument, else env ``MEDCERT_AUDIT_POLICY``, else ``refuse``."""
    value = (policy or os.environ.get("MEDCERT_AUDIT_POLICY", "") or "refuse").strip().lower()
    if value not in POLICIES:
        raise AuditError(f"MEDCERT_AUDIT_POLICY must be 'refuse' or 'warn', not {value!r}")
    return value


def checkpoint_config() -> tuple[Path | None, int]:
    """Automatic checkpoints: env ``MEDCERT_AUDIT_CHECKPOINT_KEY`` (private key file) and
    ``MEDCERT_AUDIT_CHECKPOINT_EVERY`` (entries between checkpoints, default 100; 0 turns them off)."""
    key = os.environ.get("MEDCERT_AUDIT_CHECKPOINT_KEY", "").strip()
    raw = os.environ.get("MEDCERT_AUDIT_CHECKPOINT_EVERY", "").strip()
    try:
        every = int(raw) if raw else DEFAULT_CHECKPOINT_EVERY
    except ValueError:
        raise AuditError(f"MEDCERT_AUDIT_CHECKPOINT_EVERY must be a whole number, not {raw!r}") from None
    if every < 0:
        raise AuditError("MEDCERT_AUDIT_CHECKPOINT_EVERY must not be negative")
    return (Path(key).expanduser(), every) if key and every else (None, 0)


def add_audit_db_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--audit-db PATH`` (dest ``audit_db``) to a subcommand parser."""
    parser.add_argument("--audit-db", metavar="PATH", dest="audit_db", default=None,
                        help="audit log database (default: $MEDCERT_AUDIT_DB, else "
                             "$MEDCERT_HOME/audit.sqlite, MEDCERT_HOME defaulting to ~/.local/share/medcert)")
