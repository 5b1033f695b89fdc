"""``medcert segment``: segment a study, certify the run, write labelmap + anomaly map + sidecar
(and, with ``--dicom-seg``, a DICOM SEG carrying the certificate)."""

from __future__ import annotations

import argparse
import json
import sys

from medcert.audit import add_audit_db_option
from medcert.progress import StderrProgress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment a volume and issue a signed certificate")
    p.add_argument("input", help="DICOM series folder, NRRD or NIfTI file")
    p.add_argument("--key", required=True, help="Ed25519 private key (PEM) used to sign")
    p.add_argument("--out", required=True, help="output folder (labelmap, anomaly map, sidecar)")
    p.add_argument("--weights", help="safetensors weights (default: the bundled demo model)")
    p.add_argument("--series", help="SeriesInstanceUID when the folder holds several series")
    p.add_argument("--sidecar-dir", help="where to write <StudyInstanceUID>.medcert.json (default: --out)")
    p.add_argument("--dicom-seg", action="store_true",
                   help="also write <trace_id>.seg.dcm, a DICOM SEG with the certificate in a private block "
                        "(DICOM series input only)")
    p.add_argument("--threads", type=int, help="torch CPU threads (recorded in the certificate)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:n] (TF32 is disabled)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_audit_db_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medcert.findings import format_findings
    from medcert.pipeline import segment_to_files

    res = segment_to_files(args.input, args.key, args.out, weights_path=args.weights, series_uid=args.series,
                           sidecar_dir=args.sidecar_dir, device=args.device, threads=args.threads,
                           audit_db=args.audit_db, dicom_seg=args.dicom_seg, progress=StderrProgress())
    core = res.certified.record.core
    findings = res.certified.record.evidence.get("findings", {})
    summary = {
        "trace_id": res.trace_id, "model": f"{core['mdl']['n']} {core['mdl']['v']}", "key_id": core["kid"],
        "study_uid": core["study"], "sidecar": str(res.sidecar), "labelmap": str(res.labelmap),
        "anomaly_map": str(res.anomaly) if res.anomaly else None,
        "explanation_map": str(res.explanation) if res.explanation else None,
        "dicom_seg": str(res.dicom_seg) if res.dicom_seg else None, "findings": findings,
        "audit_seq": res.audit_entry.seq if res.audit_entry else None,
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    print(f"trace_id   {summary['trace_id']}")
    print(f"model      {summary['model']}  (weights {core['d']['wts'][:12]}…)")
    print(f"signed by  {summary['key_id']}")
    print("\n".join(format_findings(findings)))
    print(f"labelmap   {res.labelmap}")
    if res.anomaly:
        print(f"anomaly    {res.anomaly}")
    if res.explanation:
        print(f"explain    {res.explanation}")
    if res.dicom_seg:
        print(f"DICOM SEG  {res.dicom_seg}")
    print(f"sidecar    {res.sidecar}")
    return 0
