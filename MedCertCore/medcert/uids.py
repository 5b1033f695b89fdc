"""DICOM UID grammar and safe file stems (no path traversal through a UID or a file name)."""

from __future__ import annotations

import re

from medcert.errors import MedCertError

MAX_UID_LENGTH = 64
MAX_STEM_LENGTH = 100
FALLBACK_STEM = "volume"

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")


def is_valid_uid(s: object) -> bool:
    """True for a DICOM UID: ≤ 64 characters, digits and dots, no empty component, no leading zero but "0"."""
    return isinstance(s, str) and 0 < len(s) <= MAX_UID_LENGTH and _UID.fullmatch(s) is not None


def require_uid(s: object, field: str) -> str:
    """Return ``s`` if it is a valid DICOM UID, else raise MedCertError naming ``field``."""
    if not is_valid_uid(s):
        shown = repr(s) if not isinstance(s, str) or len(s) <= 80 else repr(s[:80] + "…")
        raise MedCertError(f"{field} is not a valid DICOM UID "
                           f"(digits and dots, at most 64 characters): {shown}")
    return s  # type: ignore[return-value]


def safe_stem(name: str) -> str:
    """A file stem made of ``[A-Za-z0-9._-]``: no separators, no leading dot or dash, no "..", ≤ 100 chars.

    >>> safe_stem("../../etc/passwd")
    'etc_passwd'
    """
    stem = _UNSAFE.sub("_", str(name))
    stem = _DOTS.sub(".", stem)
    stem = stem.lstrip("._-")[:MAX_STEM_LENGTH].rstrip(".")
    return stem or FALLBACK_STEM
