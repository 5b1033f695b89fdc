"""``record()``: the one call other commands make to log an action, honouring the failure policy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from medcert.audit.config import audit_policy, checkpoint_config
from medcert.audit.entry import AuditEntry, entry_fields
from medcert.audit.store import AuditLog
from medcert.errors import MedCertError


def record(action: str, *, outcome: str, trace_id: str | None = None, study_uid: str | None = None,
           digests: dict[str, str] | None = None, details: dict[str, Any] | None = None,
           db: str | Path | None = None, reason: str | None = None, corrects: int | None = None,
           policy: str | None = None) -> AuditEntry | None:
    """Append one entry to the configured log and return it.

    Malformed arguments always raise AuditError. When the log cannot be opened or written, policy ``refuse``
    (default) raises AuditError, so the caller must not report success; ``warn`` prints one warning line to
    stderr and returns None.
    """
    mode = audit_policy(policy)
    # Caller mistakes raise whatever the policy: validate before touching storage.
    entry_fields(action, outcome, trace_id, study_uid, digests, details, reason, corrects, None)
    try:
        key, every = checkpoint_config()
        with AuditLog.open(db, checkpoint_key=key, checkpoint_every=every) as log:
            if action == "correction" and corrects is not None and not (trace_id or study_uid):
                return log.correct(corrects, reason or "", details=details, outcome=outcome)
            return log.append(action, outcome=outcome, trace_id=trace_id, study_uid=study_uid,
                              digests=digests, details=details, reason=reason, corrects=corrects)
    except MedCertError as exc:
        if mode == "refuse":
            raise
        print(f"medcert: warning: action '{action}' was not recorded in the audit log: {exc}",
              file=sys.stderr)
        return None


def preflight(db: str | Path | None = None, policy: str | None = None) -> None:
    """Under policy ``refuse``, fail now (AuditError) if the log cannot be opened for writing, so that no work
    is done whose record could not be kept. Under ``warn`` this checks nothing: ``record`` warns later."""
    if audit_policy(policy) == "refuse":
        with AuditLog.open(db):
            pass
