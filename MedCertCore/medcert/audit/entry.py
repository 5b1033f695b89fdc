"""One audit entry: fields, validation and its hash.

``entry_hash`` is the unpadded base64url SHA-256 of the RFC 8785 canonical bytes of every other field,
``prev_hash`` included, so each entry commits to the whole history before it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from medcert.audit.identity import host_name, operator_name, software_versions
from medcert.canonical import canonical_bytes
from medcert.digests import b64u_sha256
from medcert.errors import AuditError, MedCertError

FORMAT_VERSION = 1
GENESIS_HASH = "A" * 43  # prev_hash of seq 1: 32 zero bytes in unpadded base64url
KNOWN_ACTIONS = ("certify", "verify", "export", "keygen", "inspect", "segment", "train", "demo",
                 "correction", "checkpoint")
CHECKPOINT_ACTION = "checkpoint"
CORRECTION_ACTION = "correction"
MAX_ENTRY_BYTES = 64 * 1024
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_B64U = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_CTRL = re.compile(r"[\x00-\x1f\x7f]")

BODY_FIELDS = ("v", "seq", "time", "operator", "action", "outcome", "trace_id", "study_uid", "digests",
               "host", "software", "details", "reason", "corrects", "prev_hash")


@dataclass(frozen=True)
class AuditEntry:
    """A committed (or about to be committed) audit entry."""

    seq: int
    time: str
    operator: str
    action: str
    outcome: str
    prev_hash: str
    entry_hash: str = ""
    trace_id: str | None = None
    study_uid: str | None = None
    digests: dict[str, str] = field(default_factory=dict)
    host: str = ""
    software: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    corrects: int | None = None
    v: int = FORMAT_VERSION

    def body(self) -> dict[str, Any]:
        """Every field except ``entry_hash``: the bytes that are hashed."""
        return {k: getattr(self, k) for k in BODY_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """The body plus ``entry_hash``."""
        return {**self.body(), "entry_hash": self.entry_hash}

    def computed_hash(self) -> str:
        """Hash of :meth:`body` (what ``entry_hash`` must equal)."""
        return entry_hash_of(self.body())


def entry_hash_of(body: dict[str, Any]) -> str:
    """b64u SHA-256 of the canonical bytes of ``body`` (a dict without ``entry_hash``)."""
    return b64u_sha256(canonical_bytes(body))


def utc_now() -> str:
    """UTC time, millisecond precision, fixed width: ``2025-01-02T03:04:05.678Z`` (sorts as text)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def normalize_time(text: str, *, what: str = "time") -> str:
    """ISO 8601 date or date-time (naive = UTC) to the stored fixed-width UTC form."""
    try:
        t = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise AuditError(f"{what}: {text!r} is not an ISO 8601 date or date-time") from None
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _text(name: str, value: Any, *, required: bool, limit: int = 256) -> None:
    if value is None:
        if required:
            raise AuditError(f"audit entry: {name} is required")
        return
    if not isinstance(value, str) or not value or len(value) > limit or _CTRL.search(value):
        raise AuditError(f"audit entry: {name} must be a non-empty single-line string of at most {limit} "
                         "characters")


def validate_fields(*, action: str, outcome: str, trace_id: str | None, study_uid: str | None,
                    digests: dict[str, str], details: dict[str, Any], reason: str | None,
                    corrects: int | None, operator: str) -> None:
    """Refuse malformed caller input (AuditError) before anything is written."""
    if not isinstance(action, str) or not _NAME.match(action):
        raise AuditError(f"audit entry: action {action!r} must be a lower-case word (a-z, 0-9, _ . -)")
    _text("outcome", outcome, required=True, limit=64)
    _text("operator", operator, required=True, limit=128)
    _text("trace_id", trace_id, required=False, limit=128)
    _text("study_uid", study_uid, required=False, limit=128)
    _text("reason", reason, required=action == CORRECTION_ACTION, limit=2000)
    if not isinstance(digests, dict) or not all(
            isinstance(k, str) and _NAME.match(k) and isinstance(v, str) and _B64U.match(v)
            for k, v in digests.items()):
        raise AuditError("audit entry: digests must map lower-case names to base64url strings")
    if not isinstance(details, dict):
        raise AuditError("audit entry: details must be a JSON object")
    if corrects is not None and (not isinstance(corrects, int) or isinstance(corrects, bool) or corrects < 1):
        raise AuditError("audit entry: corrects must be the seq (a positive integer) of an earlier entry")
    if action == CORRECTION_ACTION and corrects is None:
        raise AuditError("audit entry: a correction must name the seq of the entry it corrects")
    if action != CORRECTION_ACTION and corrects is not None:
        raise AuditError(f"audit entry: only a '{CORRECTION_ACTION}' entry may reference another entry")
    try:
        size = len(canonical_bytes({"digests": digests, "details": details}))
    except MedCertError as exc:
        raise AuditError(f"audit entry: {exc}") from None
    if size > MAX_ENTRY_BYTES:
        raise AuditError(f"audit entry: digests and details take {size} bytes, "
                         f"over the {MAX_ENTRY_BYTES} limit")


_TYPES: dict[str, tuple[type, ...]] = {
    "v": (int,), "seq": (int,), "time": (str,), "operator": (str,), "action": (str,), "outcome": (str,),
    "trace_id": (str, type(None)), "study_uid": (str, type(None)), "digests": (dict,), "host": (str,),
    "software": (dict,), "details": (dict,), "reason": (str, type(None)), "corrects": (int, type(None)),
    "prev_hash": (str,), "entry_hash": (str,),
}


def entry_from_obj(obj: Any) -> AuditEntry:
    """Strictly typed AuditEntry from a JSON object (ValueError naming the first bad field)."""
    if not isinstance(obj, dict):
        raise ValueError("entry is not a JSON object")
    if set(obj) != set(_TYPES):
        extra, missing = sorted(set(obj) - set(_TYPES)), sorted(set(_TYPES) - set(obj))
        raise ValueError(f"entry fields differ from the format (extra {extra}, missing {missing})")
    for name, types in _TYPES.items():
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"field {name} has the wrong type")
    if obj["v"] != FORMAT_VERSION:
        raise ValueError(f"entry format version {obj['v']} is not supported")
    return AuditEntry(**obj)


def entry_fields(action: str, outcome: str, trace_id: str | None = None, study_uid: str | None = None,
                 digests: Mapping[str, str] | None = None, details: Mapping[str, Any] | None = None,
                 reason: str | None = None, corrects: int | None = None,
                 operator: str | None = None) -> dict[str, Any]:
    """Validated entry fields (all but v, seq, time, prev_hash); operator, host and software filled in."""
    d, x = dict(digests or {}), dict(details or {})
    op = operator if operator is not None else operator_name()
    validate_fields(action=action, outcome=outcome, trace_id=trace_id, study_uid=study_uid, digests=d,
                    details=x, reason=reason, corrects=corrects, operator=op)
    return {"operator": op, "action": action, "outcome": outcome, "trace_id": trace_id,
            "study_uid": study_uid, "digests": d, "host": host_name(), "software": software_versions(),
            "details": x, "reason": reason, "corrects": corrects}
