"""Signed checkpoints: an Ed25519 signature over ``{seq, head, time, kid}`` of the chain head.

The signed bytes are the RFC 8785 canonical form of
``{"type": "medcert-audit-checkpoint/1", "seq", "head", "time", "kid"}``; ``sig`` is unpadded base64url.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from medcert.canonical import canonical_bytes
from medcert.digests import b64u, b64u_decode
from medcert.errors import AuditError
from medcert.keys import key_id

CHECKPOINT_TYPE = "medcert-audit-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that entry ``seq`` of the log has hash ``head``."""

    seq: int
    head: str
    time: str
    kid: str
    sig: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON object."""
        return asdict(self)


def signed_bytes(seq: int, head: str, time: str, kid: str) -> bytes:
    """The exact bytes a checkpoint signature covers."""
    return canonical_bytes({"type": CHECKPOINT_TYPE, "seq": seq, "head": head, "time": time, "kid": kid})


def sign_checkpoint(key: Ed25519PrivateKey, *, seq: int, head: str, time: str) -> Checkpoint:
    """Sign the head ``(seq, head)`` at ``time``."""
    kid = key_id(key.public_key())
    return Checkpoint(seq, head, time, kid, b64u(key.sign(signed_bytes(seq, head, time, kid))))


def check_signature(cp: Checkpoint, trusted: dict[str, Ed25519PublicKey]) -> str | None:
    """None when ``cp`` is signed by a trusted key, else why not."""
    pub = trusted.get(cp.kid)
    if pub is None:
        return f"signed by key {cp.kid}, which is not in the trusted set"
    try:
        pub.verify(b64u_decode(cp.sig), signed_bytes(cp.seq, cp.head, cp.time, cp.kid))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return "bad checkpoint signature"
    return None


def checkpoint_from_obj(obj: Any) -> Checkpoint:
    """Strictly typed Checkpoint from a JSON object or database row (ValueError when malformed)."""
    if not isinstance(obj, dict) or set(obj) != {"seq", "head", "time", "kid", "sig"}:
        raise ValueError("checkpoint must have exactly seq, head, time, kid, sig")
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError("checkpoint seq must be a positive integer")
    if not all(isinstance(obj[k], str) for k in ("head", "time", "kid", "sig")):
        raise ValueError("checkpoint head, time, kid and sig must be strings")
    return Checkpoint(seq, obj["head"], obj["time"], obj["kid"], obj["sig"])


def load_anchors(path: str | Path) -> list[dict[str, Any]]:
    """Checkpoints kept outside the log: one JSON object per line. Text before a line's first ``{`` (such
    as the ``anchor outside this machine:`` prefix printed by ``medcert audit checkpoint``) is ignored."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"cannot read anchor file {p}: {getattr(exc, 'strerror', None) or exc}") from exc
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if "{" not in line:
            continue
        try:
            obj = json.loads(line[line.index("{"):])
            checkpoint_from_obj(obj)
        except ValueError as exc:
            raise AuditError(f"anchor file {p} line {n} is not a checkpoint: {exc}") from None
        out.append(obj)
    if not out:
        raise AuditError(f"anchor file {p} holds no checkpoint")
    return out
