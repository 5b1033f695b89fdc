"""Tamper-evident, append-only audit log: hash-chained SQLite entries with signed checkpoints.

See docs/audit-trail.md. Other commands call :func:`record`; the CLI adds ``--audit-db`` with
:func:`add_audit_db_option`.
"""

from medcert.audit.chain import ChainReport
from medcert.audit.checkpoint import Checkpoint, load_anchors
from medcert.audit.config import add_audit_db_option, audit_policy, medcert_home, resolve_db_path
from medcert.audit.db import AuditStorageError
from medcert.audit.entry import GENESIS_HASH, AuditEntry
from medcert.audit.jsonl import verify_jsonl
from medcert.audit.record import preflight, record
from medcert.audit.store import AuditLog

__all__ = ["GENESIS_HASH", "AuditEntry", "AuditLog", "AuditStorageError", "ChainReport", "Checkpoint",
           "add_audit_db_option", "audit_policy", "load_anchors", "medcert_home", "preflight", "record",
           "resolve_db_path",
           "verify_jsonl"]
