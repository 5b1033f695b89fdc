"""SQLite schema of the audit log: tables, indexes and the append-only triggers.

The triggers are defence in depth against mistakes, not a security boundary: anyone who can write the file
can drop them. Tampering is caught by the hash chain and the signed checkpoints, not by the triggers.
"""

from __future__ import annotations

import sqlite3

from medcert.audit.entry import GENESIS_HASH

FORMAT_NAME = "medcert-audit"
SCHEMA_VERSION = "1"

ENTRY_COLUMNS = ("seq", "v", "time", "operator", "action", "outcome", "trace_id", "study_uid", "digests",
                 "host", "software", "details", "reason", "corrects", "prev_hash", "entry_hash")
JSON_COLUMNS = ("digests", "software", "details")
CHECKPOINT_COLUMNS = ("seq", "head", "time", "kid", "sig")


def _no_change(table: str) -> str:
    return "\n".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'medcert audit log: {table} are append-only ({op} refused)'); END;"
        for op in ("UPDATE", "DELETE"))


_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
  seq INTEGER PRIMARY KEY,
  v INTEGER NOT NULL,
  time TEXT NOT NULL,
  operator TEXT NOT NULL,
  action TEXT NOT NULL,
  outcome TEXT NOT NULL,
  trace_id TEXT,
  study_uid TEXT,
  digests TEXT NOT NULL,
  host TEXT NOT NULL,
  software TEXT NOT NULL,
  details TEXT NOT NULL,
  reason TEXT,
  corrects INTEGER,
  prev_hash TEXT NOT NULL,
  entry_hash TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS entries_trace ON entries(trace_id);
CREATE INDEX IF NOT EXISTS entries_study ON entries(study_uid);
CREATE INDEX IF NOT EXISTS entries_operator ON entries(operator);
CREATE INDEX IF NOT EXISTS entries_time ON entries(time);
CREATE INDEX IF NOT EXISTS entries_action ON entries(action);
CREATE INDEX IF NOT EXISTS entries_corrects ON entries(corrects);
CREATE TABLE IF NOT EXISTS checkpoints (
  id INTEGER PRIMARY KEY,
  seq INTEGER NOT NULL,
  head TEXT NOT NULL,
  time TEXT NOT NULL,
  kid TEXT NOT NULL,
  sig TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_seq ON checkpoints(seq);
CREATE TRIGGER IF NOT EXISTS entries_extend_head BEFORE INSERT ON entries
WHEN NEW.seq IS NOT COALESCE((SELECT MAX(seq) FROM entries), 0) + 1
  OR NEW.prev_hash IS NOT
     COALESCE((SELECT entry_hash FROM entries ORDER BY seq DESC LIMIT 1), '@GENESIS@')
BEGIN SELECT RAISE(ABORT, 'medcert audit log: a new entry must extend the chain head'); END;
"""
SCHEMA = (_TABLES.replace("@GENESIS@", GENESIS_HASH)
          + "\n".join(_no_change(t) for t in ("entries", "checkpoints", "meta")) + "\n")


def statements() -> list[str]:
    """SCHEMA split into single statements (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], ""
    for line in SCHEMA.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out
