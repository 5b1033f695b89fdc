"""Actions outside certify/verify that the audit log must record: key creation and certificate inspection."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from medcert import audit
from medcert.keys import generate_keypair, key_id, load_public_key
from medcert.sidecar import CertificateRecord


def create_signing_key(out_dir: str | Path, passphrase: bytes | None = None, *,
                       audit_db: str | Path | None = None) -> tuple[Path, Path, str]:
    """Create a key pair and record it; if the audit log refuses, the new key files are removed again."""
    priv, pub = generate_keypair(out_dir, passphrase)
    kid = key_id(load_public_key(pub))
    try:
        audit.record("keygen", outcome="created", digests={"key_id": kid},
                     details={"public_key": str(pub), "encrypted": passphrase is not None}, db=audit_db)
    except BaseException:
        for p in (priv, pub):
            with contextlib.suppress(OSError):
                p.unlink()
        raise
    return priv, pub, kid


def record_inspection(path: str | Path, records: Sequence[CertificateRecord], *,
                      audit_db: str | Path | None = None) -> None:
    """One ``inspect`` entry per certificate shown."""
    for rec in records:
        core = rec.core if isinstance(rec.core, dict) else {}
        audit.record("inspect", outcome="shown", trace_id=core.get("tid"), study_uid=core.get("study"),
                     details={"file": str(path)[:512]}, db=audit_db)
