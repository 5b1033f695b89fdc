"""Chain verification shared by the SQLite store and JSON Lines exports."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from medcert.audit.checkpoint import Checkpoint, check_signature, checkpoint_from_obj
from medcert.audit.entry import CHECKPOINT_ACTION, GENESIS_HASH, entry_from_obj, entry_hash_of


@dataclass(frozen=True)
class ChainReport:
    """Outcome of a verification; ``first_bad_seq`` and ``reason`` name the first problem."""

    ok: bool
    n_entries: int
    n_checkpoints: int
    first_bad_seq: int | None = None
    reason: str = ""
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    signatures_checked: bool = False

    def summary(self) -> str:
        """One line for people."""
        if self.ok:
            sig = ("signatures verified" if self.signatures_checked
                   else "signatures NOT checked: no trusted key given")
            cps = f"{self.n_checkpoints} checkpoint{'s' * (self.n_checkpoints != 1)}"
            return (f"OK: {self.n_entries} entries, {cps} ({sig}); "
                    f"head seq {self.head_seq} {self.head_hash}")
        return f"BROKEN at seq {self.first_bad_seq}: {self.reason}"


@dataclass(frozen=True)
class Lookup:
    """Random access the verifier needs to explain a break: is a seq present, which seq has a hash."""

    has_seq: Callable[[int], bool]
    seq_of_hash: Callable[[str], int | None]


def verify_chain(entries: Iterable[Any], checkpoints: Iterable[Any], lookup: Lookup,
                 trusted: dict[str, Ed25519PublicKey] | None) -> ChainReport:
    """Walk ``entries`` (JSON objects in storage order) and check ``checkpoints`` against them.

    An entry given as a ValueError stands for a record the reader could not parse.
    """
    cps: list[Checkpoint] = []
    for i, obj in enumerate(checkpoints, 1):
        try:
            cps.append(checkpoint_from_obj(obj))
        except ValueError as exc:
            seq = obj.get("seq") if isinstance(obj, dict) else None
            return ChainReport(False, 0, i, seq if isinstance(seq, int) else None,
                               f"checkpoint #{i} is malformed: {exc}")
    cp_seqs = {cp.seq for cp in cps}
    hashes: dict[int, str] = {}
    cp_entries: list[int] = []
    expected, prev, n = 1, GENESIS_HASH, 0

    def broken(seq: int, reason: str) -> ChainReport:
        return ChainReport(False, n, len(cps), seq, reason, expected - 1, prev, bool(trusted))

    for obj in entries:
        if isinstance(obj, ValueError):  # an unreadable record, already explained by the reader
            return broken(expected, str(obj))
        try:
            e = entry_from_obj(obj)
        except ValueError as exc:
            return broken(expected, f"entry is malformed: {exc}")
        if e.seq != expected:
            if e.seq > expected and not lookup.has_seq(expected):
                return broken(expected, f"seq gap: seq {expected} is missing (the next entry is seq {e.seq})")
            return broken(expected, f"reordering: found seq {e.seq} where seq {expected} belongs")
        computed = entry_hash_of(e.body())
        if computed != e.entry_hash:
            return broken(expected, _explain_hash_mismatch(e, lookup))
        if e.prev_hash != prev:
            what = "the genesis value" if e.seq == 1 else f"the entry_hash of seq {e.seq - 1}"
            return broken(expected, f"prev_hash mismatch: prev_hash is not {what} "
                                    f"(an earlier entry was rewritten, or this one was forged)")
        if e.corrects is not None and e.corrects >= e.seq:
            return broken(expected, f"correction refers to seq {e.corrects}, which is not an earlier entry")
        if e.action == CHECKPOINT_ACTION:
            cp_entries.append(e.seq)
        if e.seq in cp_seqs:
            hashes[e.seq] = e.entry_hash
        prev, expected, n = e.entry_hash, expected + 1, n + 1

    problems: list[tuple[int, str]] = []
    for cp in cps:
        why = check_signature(cp, trusted) if trusted else None
        if why:
            problems.append((cp.seq, f"checkpoint at seq {cp.seq}: {why}"))
        elif cp.seq > n:
            problems.append((n + 1, f"truncated below checkpoint: the chain ends at seq {n} but a signed "
                                    f"checkpoint covers seq {cp.seq}"))
        elif hashes[cp.seq] != cp.head:
            problems.append((cp.seq, f"checkpoint at seq {cp.seq} does not match that entry's entry_hash"))
    for seq in sorted(set(cp_entries) - cp_seqs):
        problems.append((seq, f"checkpoint entry seq {seq} has no signed checkpoint (checkpoint removed)"))
    report = ChainReport(True, n, len(cps), None, "", n, prev, bool(trusted))
    if problems:
        seq, reason = min(problems)
        report = replace(report, ok=False, first_bad_seq=seq, reason=reason)
    return report


def _explain_hash_mismatch(e: Any, lookup: Lookup) -> str:
    """Tell a moved entry (its content hashes correctly under another seq) from an edited one."""
    before = 0 if e.prev_hash == GENESIS_HASH else lookup.seq_of_hash(e.prev_hash)
    if (before is not None and before + 1 != e.seq
            and entry_hash_of({**e.body(), "seq": before + 1}) == e.entry_hash):
        return f"reordering: the entry stored as seq {e.seq} was written as seq {before + 1}"
    return "hash mismatch: the entry's content does not match its entry_hash (entry edited)"
