"""JSON Lines exports: an external system re-verifies them with :func:`verify_jsonl` alone.

Line 1 is a header ``{"medcert_audit_export": 1, "exported", "entries", "checkpoints"}``; then one
``{"entry": {...}}`` per line in seq order (every hashed field plus ``entry_hash``), then one
``{"checkpoint": {"seq", "head", "time", "kid", "sig"}}`` per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from medcert.audit.chain import ChainReport, Lookup, verify_chain
from medcert.audit.store import EXPORT_FORMAT, trust_set
from medcert.errors import AuditError


def read_jsonl(path: str | Path) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """Header, entries (ValueError for unreadable lines) and checkpoints of an export."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw_lines = fh.read().splitlines()
    except OSError as exc:
        raise AuditError(f"cannot read audit export {p}: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw_lines[0]) if raw_lines else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("medcert_audit_export") != EXPORT_FORMAT:
        raise AuditError(f"{p} is not a MedCert audit export (format {EXPORT_FORMAT})")
    entries: list[Any] = []
    cps: list[Any] = []
    for n, line in enumerate(raw_lines[1:], 2):
        try:
            obj = json.loads(line)
        except ValueError:
            entries.append(ValueError(f"line {n} of the export is not valid JSON"))
            continue
        if isinstance(obj, dict) and set(obj) == {"checkpoint"}:
            cps.append(obj["checkpoint"])
        elif isinstance(obj, dict) and set(obj) == {"entry"}:
            entries.append(obj["entry"])
        else:
            entries.append(ValueError(f"line {n} of the export is neither an entry nor a checkpoint"))
    return header, entries, cps


def verify_jsonl(path: str | Path,
                 trusted: Mapping[str, Ed25519PublicKey] | Iterable[str | Path] | None = None, *,
                 anchors: Iterable[Any] = ()) -> ChainReport:
    """Verify an export exactly as :meth:`AuditLog.verify` verifies the database."""
    header, entries, cps = read_jsonl(path)
    seqs: set[int] = set()
    by_hash: dict[str, int] = {}
    for e in entries:
        if isinstance(e, dict) and isinstance(e.get("seq"), int):
            seqs.add(e["seq"])
            if isinstance(e.get("entry_hash"), str):
                by_hash.setdefault(e["entry_hash"], e["seq"])
    lookup = Lookup(seqs.__contains__, by_hash.get)
    report = verify_chain(entries, [*cps, *anchors], lookup, trust_set(trusted))
    declared = header.get("entries")
    if report.ok and declared != report.n_entries:
        report = replace(report, ok=False, first_bad_seq=min(report.n_entries, _int(declared)) + 1,
                         reason=f"the export header declares {declared} entries but the file holds "
                                f"{report.n_entries} (file truncated or padded)")
    return report


def _int(x: Any) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else 0
