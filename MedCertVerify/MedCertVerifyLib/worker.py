"""Child-process verification for the GUI: ``python -m MedCertVerifyLib.worker request.json``.

Runs ``medcert.pipeline.verify_files`` (the CLI's verify, audit log included) and writes what the CLI's
JSON lacks: the per-layer deviations and the differences labelmap. Imports neither ``slicer`` nor ``qt``.

Request (JSON): input, series, certificate (sidecar or DICOM SEG), sidecar (cross-check of a SEG, or null),
grid (IJK→RAS of the input), trace_id, mask, trust [..], weights, device, out (folder).
Stdout: ``{"report": <report.json>, "differences": <nrrd or null>}``; progress stages on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from medcert.verify import CheckResult, VerificationReport


def report_to_json(report: VerificationReport) -> dict[str, Any]:
    """The report's JSON plus the layer deviations."""
    return {**report.to_json(), "layer_deviations": [[n, d, t] for n, d, t in report.layer_deviations]}


def report_from_json(obj: dict[str, Any], differences: Any = None) -> VerificationReport:
    """The inverse of ``report_to_json`` (the verdict is recomputed from the checks)."""
    checks = {name: CheckResult(c["status"], c["code"], c["reason"], c.get("figures") or {})
              for name, c in obj["checks"].items()}
    deviations = [(str(n), float(d), float(t)) for n, d, t in obj.get("layer_deviations", [])]
    return VerificationReport(checks, obj.get("trace_id"), obj.get("note", ""), differences, deviations)


def run(request: dict[str, Any]) -> dict[str, Any]:
    from medcert.io import write_labelmap_nrrd
    from medcert.pipeline import verify_files
    from medcert.progress import StderrProgress

    out = Path(request["out"])
    report = verify_files(request["input"], request["certificate"], trust=request["trust"],
                          weights_path=request.get("weights"), mask_path=request.get("mask"),
                          trace_id=request.get("trace_id"), series_uid=request.get("series"),
                          device=request.get("device", "cpu"), sidecar_path=request.get("sidecar"),
                          progress=StderrProgress())
    report_path = out / "report.json"
    report_path.write_text(json.dumps(report_to_json(report), indent=2), encoding="utf-8")
    diff_path = None
    if report.differences is not None:  # differences exist only for a stored mask (labelmap or SEG)
        import numpy as np

        grid = np.asarray(request["grid"], dtype=np.float64)
        diff_path = write_labelmap_nrrd(out / "differences.seg.nrrd", np.asarray(report.differences, np.uint8),
                                        grid, [(1, "differences", (1.0, 0.0, 1.0))])
    return {"report": str(report_path), "differences": str(diff_path) if diff_path else None}


def main(argv: list[str] | None = None) -> int:
    from medcert.errors import MedCertError

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m MedCertVerifyLib.worker request.json", file=sys.stderr)
        return 64
    try:
        result = run(json.loads(Path(args[0]).read_text(encoding="utf-8")))
    except MedCertError as exc:
        print(f"medcert: error: {exc}", file=sys.stderr)
        return 65
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
