"""`medcert inspect`: summarize the certificates in a sidecar (not a verdict; `medcert verify` replays)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from medcert.audit import add_audit_db_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show the certificates in a sidecar",
                       description="Summarize each certificate of a <StudyInstanceUID>.medcert.json sidecar. "
                                   "With --trust, check signatures. Exit 1 if a signature is invalid or "
                                   "evidence does not match its digest. This is no replay: use 'verify'.")
    p.add_argument("sidecar", metavar="SIDECAR", help="a .medcert.json sidecar")
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON object")
    p.add_argument("--trust", action="extend", nargs="+", metavar="FILE", default=[],
                   help="trusted public key(s): *.pub.pem files or folders holding them")
    add_audit_db_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcert.audited import record_inspection
    from medcert.keys import load_trusted_keys
    from medcert.sidecar import read_sidecar

    trusted = load_trusted_keys(args.trust) if args.trust else None
    records = read_sidecar(args.sidecar)
    record_inspection(args.sidecar, records, audit_db=args.audit_db)
    summary = {"sidecar": str(args.sidecar), "certificates": [_summarize(r, trusted) for r in records]}
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=True))
    else:
        _print_text(summary)
    bad = any((c["signature"] or {}).get("status") == "invalid" or not c["evidence_matches"]
              for c in summary["certificates"])
    return 1 if bad else 0


def _summarize(record: Any, trusted: dict | None) -> dict:
    from medcert.certificate import core_bytes, core_digest, evidence_digest, verify_signature

    core = record.core
    sig = None
    if trusted is not None:
        res = verify_signature(core, trusted)
        sig = {"status": res.status, "key_id": res.key_id, "reason": res.reason}
    return {
        "trace_id": core["tid"],
        "issued": core["iat"],
        "study_uid": core["study"],
        "series_uid": core["series"],
        "model": {"name": core["mdl"]["n"], "version": core["mdl"]["v"]},
        "tolerance_id": core["tol"],
        "key_id": core["kid"],
        "digests": dict(core["d"]),
        "core_digest": core_digest(core),
        "core_bytes": len(core_bytes(core)),
        "signature": sig,
        "evidence_matches": evidence_digest(record.evidence) == core["d"]["evd"],
        "annotations": record.annotations,
    }


def _print_text(summary: dict) -> None:
    certs = summary["certificates"]
    print(f"{summary['sidecar']}: {len(certs)} certificate{'s' if len(certs) != 1 else ''}")
    for n, c in enumerate(certs, 1):
        sig = c["signature"]
        sig_text = ("not checked (no --trust given)" if sig is None
                    else f"{sig['status'].upper()}: {sig['reason']}")
        rows = [
            ("trace id", c["trace_id"]),
            ("issued", c["issued"]),
            ("study", c["study_uid"] or "(none)"),
            ("series", c["series_uid"] or "(none)"),
            ("model", f"{c['model']['name']} {c['model']['version']}"),
            ("tolerance", c["tolerance_id"]),
            ("key id", c["key_id"]),
            ("signature", sig_text),
            ("evidence", "matches d.evd" if c["evidence_matches"]
             else "MISMATCH: evidence does not match d.evd"),
            ("core", f"{c['core_bytes']} bytes, digest {c['core_digest']}"),
        ]
        names = list(c["digests"])
        for i in range(0, len(names), 5):
            row = " ".join(f"{k}={c['digests'][k][:10]}..." for k in names[i:i + 5])
            rows.append(("digests" if i == 0 else "", row))
        rows += [(k, _printable(str(v))) for k, v in c["annotations"].items()]
        print(f"\ncertificate {n}/{len(certs)}")
        for label, value in rows:
            print(f"  {(label + ':') if label else '':<11} {value}")


def _printable(text: str) -> str:
    """Unsigned free text from a sidecar, made safe for a terminal (no control sequences, ASCII only)."""
    return text.encode("unicode_escape").decode("ascii")
