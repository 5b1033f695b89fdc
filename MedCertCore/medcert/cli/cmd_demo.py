"""``medcert demo``: the whole job on an embedded default study: generate → segment + certify → verify."""

from __future__ import annotations

import argparse
from pathlib import Path

from medcert.progress import StderrProgress

DEMO_SEED = 7
DEMO_PHANTOM = {"spacing_xy": 1.2, "thickness": 2.5, "orientation": "lps", "n_nodules": 2,
                "nodule_diameters": [15.0, 8.0]}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run segment + certify + verify on a generated demo chest CT")
    p.add_argument("--workdir", default=".medcert-demo", help="folder for the demo study, keys and outputs")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(func=run)


def demo_study(workdir: Path) -> Path:
    """A synthetic chest CT (seeded phantom) written once as a DICOM CT series."""
    from medcert.dicomseg import write_ct_series
    from medcert.phantom import generate_chest_ct

    folder = workdir / "study" / f"demo-chest-seed{DEMO_SEED}"
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.dcm"):
            stale.unlink()
        ph = generate_chest_ct(DEMO_SEED, **DEMO_PHANTOM)
        write_ct_series(ph.volume, folder, patient_name="MEDCERT^DEMO", patient_id="DEMO-0007",
                        description="MedCert synthetic chest CT (demo)")
        (folder / ".complete").touch()
    return folder


def demo_weights(workdir: Path) -> Path:
    """The bundled demo model, or (clearly labelled) deterministic untrained placeholder weights."""
    from medcert.models.placeholder import write_placeholder_weights
    from medcert.weights import default_weights_path

    bundled = default_weights_path()
    if bundled is not None:
        return bundled
    path = workdir / "weights" / "untrained-placeholder.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    print("NOTE: bundled demo model not found; using UNTRAINED placeholder weights (meaningless output)")
    return write_placeholder_weights(path)


def run(args: argparse.Namespace) -> int:
    from medcert.findings import format_findings
    from medcert.keys import PRIVATE_NAME, PUBLIC_NAME, generate_keypair
    from medcert.pipeline import segment_to_files, verify_files

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    keys = work / "keys"
    if not (keys / PRIVATE_NAME).exists():
        generate_keypair(keys)
    study = demo_study(work)
    weights = demo_weights(work)
    db = work / "audit.sqlite"
    print(f"study    {study}\nweights  {weights}\nkeys     {keys}")
    print("== segment + certify")
    res = segment_to_files(study, keys / PRIVATE_NAME, work / "out", weights_path=weights, threads=args.threads,
                           audit_db=db, dicom_seg=True, progress=StderrProgress())
    print(f"trace_id {res.trace_id}\nlabelmap {res.labelmap}\nDICOM SEG {res.dicom_seg}\nsidecar  {res.sidecar}")
    print("\n".join("  " + line for line in format_findings(res.certified.record.evidence.get("findings", {}))))
    print("== verify (replay) from the DICOM SEG, cross-checked against the sidecar")
    report = verify_files(study, res.dicom_seg, trust=[keys / PUBLIC_NAME], weights_path=weights,
                          sidecar_path=res.sidecar, trace_id=res.trace_id, threads=args.threads, audit_db=db,
                          progress=StderrProgress())
    print(report.render())
    print(f"audit log {db}: `medcert audit show --audit-db {db} --trace-id {res.trace_id}`")
    return report.exit_code
