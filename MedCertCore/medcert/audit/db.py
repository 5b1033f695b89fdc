"""SQLite plumbing: connections, one-line errors, rows as the JSON objects that were hashed."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from medcert.audit import schema
from medcert.audit.entry import AuditEntry, entry_from_obj
from medcert.errors import AuditError

_WHY = (("FULL", "the disk or the database is full"),
        ("READONLY", "the database is read-only"),
        ("CANTOPEN", "the file cannot be opened (missing folder, read-only location or no permission)"),
        ("PERM", "permission denied"), ("AUTH", "permission denied"),
        ("BUSY", "another process kept the database locked"), ("LOCKED", "the database is locked"),
        ("NOTADB", "the file is not an SQLite database"), ("CORRUPT", "the database file is corrupt"),
        ("IOERR", "I/O error"))


class AuditStorageError(AuditError):
    """The log file cannot be created, read or written (full disk, read-only, locked, corrupt)."""


def storage_error(exc: BaseException, path: Path, doing: str) -> AuditStorageError:
    """One-line AuditStorageError for an sqlite3 or OS failure."""
    return AuditStorageError(f"audit log {path}: cannot {doing}: {_why(exc)}")


def _why(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", "") or ""
    why = next((text for key, text in _WHY if key in name), None)
    return why or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def connect(path: Path, *, readonly: bool, busy_timeout: float) -> sqlite3.Connection:
    """Autocommit connection (transactions are explicit) with a busy timeout; creates the folder."""
    if readonly:
        return _connect_readonly(path, busy_timeout)
    if path.is_dir():
        raise AuditStorageError(f"audit log {path}: is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise AuditStorageError(f"audit log {path}: cannot create its folder {path.parent}: "
                                "a file that is not a folder is in the way") from exc
    except OSError as exc:
        raise AuditStorageError(f"audit log {path}: cannot create its folder {path.parent}: "
                                f"{exc.strerror or exc}") from exc
    try:
        # synchronous=FULL: a committed entry survives power loss, not only a crash of the process
        return _open(str(path), busy_timeout, uri=False, first="PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise storage_error(exc, path, "open the database") from exc


def _open(target: str, busy_timeout: float, *, uri: bool, first: str) -> sqlite3.Connection:
    """Connect and run ``first``; the connection is closed if that fails."""
    conn = sqlite3.connect(target, timeout=busy_timeout, isolation_level=None, uri=uri)
    try:
        conn.execute(first).fetchall()
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_readonly(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Read-only connection. On a read-only medium SQLite cannot create the WAL index (-shm); when no
    -wal file exists every committed entry is in the main file, so it is then opened as immutable."""
    if not path.is_file():
        raise AuditError(f"no audit log at {path}")
    base = f"file:{quote(str(path.resolve()))}?mode=ro"
    probe = "SELECT count(*) FROM sqlite_master"
    try:
        return _open(base, busy_timeout, uri=True, first=probe)
    except sqlite3.Error as exc:
        first = exc
    if Path(f"{path}-wal").exists():
        raise AuditStorageError(f"audit log {path}: cannot open it read-only ({_why(first)}); "
                                "copy it together with its -wal file to a writable folder")
    try:
        return _open(base + "&immutable=1", busy_timeout, uri=True, first=probe)
    except sqlite3.Error as exc:
        raise storage_error(exc, path, "open the database") from exc


def dumps(obj: Any) -> str:
    """Compact, key-sorted JSON text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_values(entry: AuditEntry) -> list[Any]:
    """Column values of ``entry`` in ``schema.ENTRY_COLUMNS`` order."""
    d = entry.to_dict()
    return [dumps(d[c]) if c in schema.JSON_COLUMNS else d[c] for c in schema.ENTRY_COLUMNS]


def row_obj(row: sqlite3.Row) -> dict[str, Any]:
    """A database row as the JSON object that was hashed; malformed JSON columns stay strings."""
    obj = {k: row[k] for k in schema.ENTRY_COLUMNS}
    for k in schema.JSON_COLUMNS:
        with contextlib.suppress(TypeError, ValueError):
            obj[k] = json.loads(obj[k])
    return obj


def row_entry(path: Path, row: sqlite3.Row) -> AuditEntry:
    """A database row as an AuditEntry (AuditError when the row was damaged)."""
    try:
        return entry_from_obj(row_obj(row))
    except ValueError as exc:
        raise AuditError(f"audit log {path}: entry seq {row['seq']} is malformed ({exc}); "
                         "run 'medcert audit verify'") from None
