"""The audit log: an append-only, hash-chained SQLite database (WAL mode) with signed checkpoints."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from medcert.atomic import atomic_write_bytes
from medcert.audit import schema
from medcert.audit.chain import ChainReport, Lookup, verify_chain
from medcert.audit.checkpoint import Checkpoint, sign_checkpoint
from medcert.audit.config import resolve_db_path
from medcert.audit.db import (
    AuditStorageError,
    connect,
    dumps,
    entry_values,
    row_entry,
    row_obj,
    storage_error,
)
from medcert.audit.entry import (
    CHECKPOINT_ACTION,
    CORRECTION_ACTION,
    GENESIS_HASH,
    AuditEntry,
    entry_fields,
    entry_hash_of,
    normalize_time,
    utc_now,
)
from medcert.errors import AuditError, MedCertError
from medcert.keys import key_id, load_private_key, load_trusted_keys

EXPORT_FORMAT = 1
KeyLike = str | Path | Ed25519PrivateKey
TrustLike = Mapping[str, Ed25519PublicKey] | Iterable[str | Path] | None
# SQL below is built from fixed column names and "?" placeholders only; values are always bound.
_INSERT = f"INSERT INTO entries({', '.join(schema.ENTRY_COLUMNS)}) VALUES ({', '.join('?' * 16)})"  # noqa: S608
_CPS = "SELECT seq, head, time, kid, sig FROM checkpoints ORDER BY id"


class AuditLog:
    """Append-only audit log. Use :meth:`open`; close it (or use ``with``) when done."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool = False,
                 checkpoint_key: Ed25519PrivateKey | None = None, checkpoint_every: int = 0) -> None:
        self._conn, self.path, self.readonly = conn, path, readonly
        self._cp_key, self._cp_every = checkpoint_key, checkpoint_every

    @classmethod
    def open(cls, path: str | Path | None = None, *, checkpoint_key: KeyLike | None = None,
             checkpoint_every: int = 0, readonly: bool = False, busy_timeout: float = 30.0) -> AuditLog:
        """Open (and create, unless ``readonly``) the log at ``path`` or at the configured location.

        With ``checkpoint_key`` and ``checkpoint_every=N`` a signed checkpoint is added once N entries
        followed the previous one.
        """
        p = resolve_db_path(path)
        if checkpoint_every < 0:
            raise AuditError("checkpoint_every must be 0 (off) or a positive number of entries")
        key = load_private_key(checkpoint_key) if isinstance(checkpoint_key, str | Path) else checkpoint_key
        if checkpoint_every and key is None:
            raise AuditError("automatic checkpoints need a checkpoint key")
        conn = connect(p, readonly=readonly, busy_timeout=busy_timeout)
        log = cls(conn, p, readonly=readonly, checkpoint_key=key, checkpoint_every=checkpoint_every)
        try:
            log._prepare()
        except BaseException:
            conn.close()
            raise
        return log

    def _prepare(self) -> None:
        """Check the format of an existing log, or create the schema (WAL mode) in one transaction."""
        conn = self._conn
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" in tables:
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                if meta.get("format") != schema.FORMAT_NAME:
                    raise AuditError(f"{self.path} is not a MedCert audit log")
                if meta.get("schema") != schema.SCHEMA_VERSION:
                    raise AuditError(f"audit log {self.path} has schema {meta.get('schema')!r}; "
                                     f"this medcert reads schema {schema.SCHEMA_VERSION}")
                if not self.readonly:
                    self._ensure_wal()
                return
            if tables or self.readonly:
                raise AuditError(f"{self.path} is not a MedCert audit log")
            self._ensure_wal()
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, "open the database") from exc
        with self._transaction("create the database"):
            for stmt in schema.statements():
                conn.execute(stmt)
            conn.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                             [("format", schema.FORMAT_NAME), ("schema", schema.SCHEMA_VERSION),
                              ("created", utc_now())])

    def _ensure_wal(self) -> None:
        """WAL mode (kept in the file): readers never block the writer. Restored copies may have lost it."""
        if self._conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal" and \
                self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise AuditStorageError(f"audit log {self.path}: cannot switch the database to WAL mode")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: one writer at a time; others wait up to the busy timeout."""
        if self.readonly:
            raise AuditError(f"audit log {self.path} was opened read-only")
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, doing) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise storage_error(exc, self.path, doing) from exc
            raise

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same state of the log."""
        try:
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, "read the database") from exc

    # ----------------------------------------------------------------- writing
    def append(self, action: str, *, outcome: str, trace_id: str | None = None, study_uid: str | None = None,
               digests: Mapping[str, str] | None = None, details: Mapping[str, Any] | None = None,
               reason: str | None = None, corrects: int | None = None,
               operator: str | None = None) -> AuditEntry:
        """Append one entry atomically: lock, read the head, hash, insert, commit."""
        fields = entry_fields(action, outcome, trace_id, study_uid, digests, details, reason, corrects,
                              operator)
        with self._transaction("append an entry") as conn:
            entry = self._insert(conn, fields)
            if self._cp_every and self._cp_key is not None:
                last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM checkpoints").fetchone()[0]
                if entry.seq - last >= self._cp_every:
                    self._checkpoint_locked(conn, self._cp_key)
        return entry

    def checkpoint(self, key: KeyLike) -> Checkpoint:
        """Append a ``checkpoint`` entry and store a signature over it, in one transaction."""
        k = load_private_key(key) if isinstance(key, str | Path) else key
        with self._transaction("write a checkpoint") as conn:
            return self._checkpoint_locked(conn, k)

    def correct(self, seq: int, reason: str, *, outcome: str = "recorded",
                details: Mapping[str, Any] | None = None, operator: str | None = None) -> AuditEntry:
        """Append a correction of entry ``seq``; it inherits that entry's trace_id and study_uid."""
        old = self.get(seq)
        if old is None:
            raise AuditError(f"audit log {self.path} has no entry seq {seq} to correct")
        return self.append(CORRECTION_ACTION, outcome=outcome, trace_id=old.trace_id, study_uid=old.study_uid,
                           details=details, reason=reason, corrects=seq, operator=operator)

    def _checkpoint_locked(self, conn: sqlite3.Connection, key: Ed25519PrivateKey) -> Checkpoint:
        fields = entry_fields(CHECKPOINT_ACTION, "signed", details={"kid": key_id(key.public_key())})
        entry = self._insert(conn, fields)
        cp = sign_checkpoint(key, seq=entry.seq, head=entry.entry_hash, time=entry.time)
        conn.execute("INSERT INTO checkpoints(seq, head, time, kid, sig) VALUES (?, ?, ?, ?, ?)",
                     (cp.seq, cp.head, cp.time, cp.kid, cp.sig))
        return cp

    def _insert(self, conn: sqlite3.Connection, fields: dict[str, Any]) -> AuditEntry:
        row = conn.execute("SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        head_seq, head_hash = row if row else (0, GENESIS_HASH)
        if fields["corrects"] is not None and fields["corrects"] > head_seq:
            raise AuditError(f"audit log {self.path} has no entry seq {fields['corrects']} to correct")
        body = {"v": 1, "seq": head_seq + 1, "time": utc_now(), **fields, "prev_hash": head_hash}
        entry = AuditEntry(**body, entry_hash=entry_hash_of(body))
        conn.execute(_INSERT, entry_values(entry))
        return entry

    # ----------------------------------------------------------------- reading
    def head(self) -> tuple[int, str]:
        """``(seq, entry_hash)`` of the last entry; ``(0, GENESIS_HASH)`` for an empty log."""
        row = self._read("SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def get(self, seq: int) -> AuditEntry | None:
        """Entry ``seq`` or None."""
        rows = self.query(seq=seq, include_corrections=False)
        return rows[0] if rows else None

    def by_hash(self, entry_hash: str) -> AuditEntry | None:
        """The entry whose ``entry_hash`` is given (e.g. a sidecar's ``audit_anchor``), or None."""
        rows = self.query(entry_hash=entry_hash, include_corrections=False)
        return rows[0] if rows else None

    def query(self, *, trace_id: str | None = None, study_uid: str | None = None, operator: str | None = None,
              since: str | None = None, until: str | None = None, action: str | None = None,
              seq: int | None = None, entry_hash: str | None = None, include_corrections: bool = True,
              limit: int | None = None) -> list[AuditEntry]:
        """Entries matching every given filter, in seq order, plus the corrections of those entries.

        ``since`` and ``until`` are inclusive ISO 8601 instants (a naive time or a bare date is UTC).
        """
        conds: list[str] = []
        params: list[Any] = []
        for col, val in (("trace_id", trace_id), ("study_uid", study_uid), ("operator", operator),
                         ("action", action), ("seq", seq), ("entry_hash", entry_hash)):
            if val is not None:
                conds.append(f"{col} = ?")
                params.append(val)
        for op, val, what in ((">=", since, "since"), ("<=", until, "until")):
            if val is not None:
                conds.append(f"time {op} ?")
                params.append(normalize_time(val, what=what))
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        sql = "SELECT * FROM entries" + where  # noqa: S608 (fixed names, bound values)
        if conds and include_corrections:
            sql += f" UNION SELECT * FROM entries WHERE corrects IN (SELECT seq FROM entries{where})"  # noqa: S608
            params += params
        sql += " ORDER BY seq" + (f" LIMIT {int(limit)}" if limit else "")
        return [row_entry(self.path, r) for r in self._read(sql, params).fetchall()]

    def checkpoints(self) -> list[Checkpoint]:
        """All checkpoints, oldest first."""
        return [Checkpoint(*r) for r in self._read(_CPS).fetchall()]

    def _read(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        try:
            cur = self._conn.cursor()
            cur.row_factory = sqlite3.Row
            return cur.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, "read the database") from exc

    def verify(self, trusted: TrustLike = None, *, anchors: Iterable[Any] = ()) -> ChainReport:
        """Check every entry's hash and link, the seq sequence and every checkpoint (see ChainReport).

        ``trusted`` is a key-id → public-key map or key files/folders; without it, checkpoint
        signatures are not checked (the report says so) but checkpoints still bound truncation.
        ``anchors`` are checkpoints kept outside the log (see ``load_anchors``), checked like stored ones.
        """
        keys = trust_set(trusted)
        with self._snapshot():
            cps = [dict(r) for r in self._read(_CPS)]
            rows = (row_obj(r) for r in self._read("SELECT * FROM entries ORDER BY seq"))
            return verify_chain(rows, [*cps, *anchors], Lookup(self._has_seq, self._seq_of_hash), keys)

    def _has_seq(self, seq: int) -> bool:
        return self._conn.execute("SELECT 1 FROM entries WHERE seq = ?", (seq,)).fetchone() is not None

    def _seq_of_hash(self, h: str) -> int | None:
        row = self._conn.execute("SELECT seq FROM entries WHERE entry_hash = ?", (h,)).fetchone()
        return int(row[0]) if row else None

    def export_jsonl(self, path: str | Path, *, overwrite: bool = False) -> tuple[int, int]:
        """Write a JSON Lines copy (header, entries, checkpoints) of one snapshot; returns the counts."""
        with self._snapshot():
            entries = [row_obj(r) for r in self._read("SELECT * FROM entries ORDER BY seq")]
            cps = [dict(r) for r in self._read(_CPS)]
        header = {"medcert_audit_export": EXPORT_FORMAT, "exported": utc_now(), "entries": len(entries),
                  "checkpoints": len(cps)}
        lines = [header, *({"entry": e} for e in entries), *({"checkpoint": c} for c in cps)]
        try:
            atomic_write_bytes(path, "".join(dumps(x) + "\n" for x in lines).encode("utf-8"),
                               overwrite=overwrite)
        except MedCertError as exc:
            raise AuditError(str(exc)) from exc
        return len(entries), len(cps)


def trust_set(trusted: TrustLike) -> dict[str, Ed25519PublicKey] | None:
    """Normalise ``trusted`` (map or key files/folders) to a key-id map; None when empty."""
    if trusted is None:
        return None
    if isinstance(trusted, Mapping):
        return dict(trusted) or None
    return load_trusted_keys(list(trusted)) or None
