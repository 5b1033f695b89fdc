"""Issue a certificate: run the model once (certified mode, fingerprint hooks) and sign what it did."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from medcert.certificate import build_core, evidence_digest, new_trace_id, sign_core, utc_now
from medcert.environment import environment_record
from medcert.evidence import build_evidence, mask_digest, section_digest
from medcert.inference import SegmentationRun, WeightsAdapter, run_segmentation
from medcert.keys import key_id
from medcert.progress import ProgressFn, silent
from medcert.sidecar import CertificateRecord
from medcert.source_digest import source_digest
from medcert.tolerance import DEFAULT_PROFILE, ToleranceProfile
from medcert.volume import Volume
from medcert.weights import ModelWeights


@dataclass
class Certified:
    """A signed certificate record and the run it describes."""

    record: CertificateRecord
    run: SegmentationRun
    adapter: WeightsAdapter


def operator_name() -> str:
    """Configured operator (MEDCERT_OPERATOR), else the OS user."""
    name = os.environ.get("MEDCERT_OPERATOR", "").strip()
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "unknown"
    return name[:128]


def certify(volume: Volume, weights: ModelWeights, private_key: Ed25519PrivateKey, *,
            tolerance: ToleranceProfile = DEFAULT_PROFILE, device: str = "cpu", threads: int | None = None,
            trace_id: str | None = None, findings_fn: Any = None, progress: ProgressFn = silent) -> Certified:
    """Segment ``volume`` with ``weights`` and return the signed certificate record."""
    adapter = WeightsAdapter.from_weights(weights)
    progress("hashing input", 0.0)
    src = source_digest(volume)
    run = run_segmentation(volume, adapter, tolerance, device=device, threads=threads, progress=progress)
    progress("signing", 1.0)
    findings = findings_fn(volume, run, adapter) if findings_fn else None
    model = weights.identity() | {"adapter": weights.adapter}
    evidence = build_evidence(
        volume, run, spec_json=adapter.spec.to_json(), model=model, labels_map=adapter.labels,
        tolerance=tolerance.to_json(), environment=environment_record(device),
        operator={"name": operator_name(), "key_id": key_id(private_key.public_key())}, findings=findings)
    outputs = evidence["outputs"]
    digests = {
        "src": src, "inp": run.model_input_digest, "pre": section_digest(evidence["preprocessing"]),
        "wts": weights.digest, "trj": section_digest(evidence["trajectory"]),
        "msk": mask_digest(run.outputs.labels, volume.ijk_to_ras), "lgt": section_digest(outputs["logits"]),
        "evd": evidence_digest(evidence),
    }
    if "anomaly" in outputs:
        digests["anm"] = section_digest(outputs["anomaly"])
    if "explanation" in outputs:
        digests["exp"] = section_digest(outputs["explanation"])
    core = build_core(trace_id=trace_id or new_trace_id(), issued=utc_now(), study_uid=volume.identity.study_uid,
                      series_uid=volume.identity.series_uid, digests=digests, model_name=weights.name,
                      model_version=weights.version, tolerance_id=tolerance.id)
    signed = sign_core(core, private_key)
    return Certified(CertificateRecord(core=signed, evidence=evidence, annotations={}), run, adapter)
