"""`medcert audit`: verify, show, export, correct, checkpoint and head of the audit log.

Exit codes: 0 valid / done, 1 chain broken (verify), 64 usage, 65 user error.
"""

from __future__ import annotations

import argparse
import json
import sys

from medcert.audit import AuditLog, add_audit_db_option, load_anchors, verify_jsonl
from medcert.audit.chain import ChainReport

EXIT_BROKEN = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="tamper-evident audit log: verify, show, export, correct, checkpoint",
                       description="Hash-chained, append-only audit log with signed checkpoints.")
    p.set_defaults(func=run, _audit_parser=p)
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", parser_class=type(p))

    v = asub.add_parser("verify", help="check the whole chain and its checkpoints")
    v.add_argument("--trust", action="append", default=[], metavar="FILE",
                   help="trusted public key file or folder of *.pub.pem (repeatable)")
    v.add_argument("--anchor", action="append", default=[], metavar="FILE",
                   help="checkpoints kept outside the log (lines printed by 'audit checkpoint'; repeatable)")
    v.add_argument("--jsonl", metavar="FILE", help="verify a JSON Lines export instead of the database")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(audit_func=_verify)

    s = asub.add_parser("show", help="entries matching every filter (and their corrections)")
    s.add_argument("--trace-id", metavar="T")
    s.add_argument("--study", metavar="UID", help="StudyInstanceUID")
    s.add_argument("--operator", metavar="NAME")
    s.add_argument("--action", metavar="A")
    s.add_argument("--since", metavar="ISO", help="inclusive; a naive time or bare date is UTC")
    s.add_argument("--until", metavar="ISO", help="inclusive; a naive time or bare date is UTC")
    s.add_argument("--seq", type=int, metavar="N")
    s.add_argument("--hash", metavar="H", help="entry_hash (e.g. a certificate's audit_anchor)")
    s.add_argument("--limit", type=int, metavar="N")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(audit_func=_show)

    e = asub.add_parser("export", help="write a JSON Lines copy that can be re-verified elsewhere")
    e.add_argument("--out", required=True, metavar="FILE.jsonl")
    e.add_argument("--force", action="store_true", help="replace an existing file")
    e.set_defaults(audit_func=_export)

    c = asub.add_parser("correct", help="append a correction of an earlier entry (nothing is changed)")
    c.add_argument("--seq", type=int, required=True, metavar="N", help="seq of the entry being corrected")
    c.add_argument("--reason", required=True, help="why the entry is corrected")
    c.set_defaults(audit_func=_correct)

    k = asub.add_parser("checkpoint", help="sign the current head with an Ed25519 key")
    k.add_argument("--key", required=True, metavar="KEY", help="private key (PEM, mode 0600)")
    k.set_defaults(audit_func=_checkpoint)

    h = asub.add_parser("head", help="print the head (seq and entry_hash) for anchoring outside this machine")
    h.set_defaults(audit_func=_head)

    for q in (v, s, e, c, k, h):
        add_audit_db_option(q)


def run(args: argparse.Namespace) -> int:
    func = getattr(args, "audit_func", None)
    if func is None:
        args._audit_parser.print_help(sys.stderr)
        return 64
    return int(func(args))


def _verify(args: argparse.Namespace) -> int:
    anchors = [a for f in args.anchor for a in load_anchors(f)]
    if args.jsonl:
        report = verify_jsonl(args.jsonl, args.trust or None, anchors=anchors)
    else:
        with AuditLog.open(args.audit_db, readonly=True) as log:
            report = log.verify(args.trust or None, anchors=anchors)
    _print_report(report, as_json=args.json)
    return 0 if report.ok else EXIT_BROKEN


def _print_report(report: ChainReport, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**report.__dict__, "summary": report.summary()}, indent=2))
    else:
        print(report.summary())
        if report.ok and report.n_checkpoints == 0:
            print("note: no signed checkpoint: truncation of the log cannot be detected", file=sys.stderr)


def _show(args: argparse.Namespace) -> int:
    with AuditLog.open(args.audit_db, readonly=True) as log:
        entries = log.query(trace_id=args.trace_id, study_uid=args.study, operator=args.operator,
                            action=args.action, since=args.since, until=args.until, seq=args.seq,
                            entry_hash=args.hash, limit=args.limit)
    for e in entries:
        if args.json:
            print(json.dumps(e.to_dict(), sort_keys=True, ensure_ascii=False))
            continue
        parts = [f"#{e.seq}", e.time, e.operator, e.action, e.outcome]
        parts += [f"{k}={v}" for k, v in (("trace", e.trace_id), ("study", e.study_uid)) if v]
        parts += [f"{k}:{v}" for k, v in sorted(e.digests.items())]
        if e.corrects is not None:
            parts.append(f"corrects=#{e.corrects}")
        if e.reason:
            parts.append(f"reason={e.reason!r}")
        if e.details:
            parts.append(json.dumps(e.details, sort_keys=True, ensure_ascii=False))
        print("  ".join(parts))
    if not args.json:
        print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    with AuditLog.open(args.audit_db, readonly=True) as log:
        n, m = log.export_jsonl(args.out, overwrite=args.force)
    print(f"exported {n} entries and {m} checkpoints to {args.out}")
    return 0


def _correct(args: argparse.Namespace) -> int:
    with AuditLog.open(args.audit_db) as log:
        e = log.correct(args.seq, args.reason)
    print(f"correction recorded as seq {e.seq} (corrects seq {args.seq}); entry_hash {e.entry_hash}")
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    with AuditLog.open(args.audit_db) as log:
        cp = log.checkpoint(args.key)
    print(f"checkpoint seq {cp.seq} head {cp.head} time {cp.time} kid {cp.kid}")
    print(f"anchor outside this machine: {json.dumps(cp.to_dict(), sort_keys=True)}")
    return 0


def _head(args: argparse.Namespace) -> int:
    with AuditLog.open(args.audit_db, readonly=True) as log:
        seq, h = log.head()
    print(f"audit log {log.path}: head seq {seq} entry_hash {h}")
    return 0
