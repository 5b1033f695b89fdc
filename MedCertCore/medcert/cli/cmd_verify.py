"""``medcert verify``: replay-verify a study against its certificate; one verdict per check."""

from __future__ import annotations

import argparse
import json
import sys

from medcert.audit import add_audit_db_option
from medcert.progress import StderrProgress, silent


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="replay-verify a certificate (exit 0 PASS, 1 FAIL, 2 INCONCLUSIVE)")
    p.add_argument("input", help="DICOM series folder, NRRD or NIfTI file")
    p.add_argument("--cert", required=True,
                   help="sidecar <StudyInstanceUID>.medcert.json, or a DICOM SEG written by segment "
                        "--dicom-seg (certificate carrier and stored mask)")
    p.add_argument("--sidecar", metavar="FILE",
                   help="with a DICOM SEG as --cert: the sidecar to cross-check it against, and the "
                        "source of the certificate when the SEG's private block was removed")
    p.add_argument("--weights", help="safetensors weights file to replay with (without it: INCONCLUSIVE)")
    p.add_argument("--trust", action="append", default=[], metavar="PUBKEY",
                   help="trusted public key file or folder of *.pub.pem (repeatable)")
    p.add_argument("--mask", help="stored labelmap (.seg.nrrd or DICOM SEG) to check as the output record")
    p.add_argument("--trace-id", help="which certificate of the sidecar to verify")
    p.add_argument("--series", help="SeriesInstanceUID when the folder holds several series")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_audit_db_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcert.pipeline import verify_files

    report = verify_files(args.input, args.cert, trust=args.trust, weights_path=args.weights,
                          mask_path=args.mask, trace_id=args.trace_id, series_uid=args.series,
                          device=args.device, threads=args.threads, audit_db=args.audit_db,
                          sidecar_path=args.sidecar,
                          progress=silent if args.json else StderrProgress())
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(report.render())
    return report.exit_code
