"""Replay verification: cheap checks first, the replay only when it can mean something, every check reported."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from medcert.certificate import UnknownSchemaError, validate_core
from medcert.errors import CertificateError, WeightsError
from medcert.evidence import section_digest
from medcert.inference import PreprocessSpec, WeightsAdapter, preprocess_volume, run_segmentation
from medcert.inference.run import SegmentationRun, model_input_digest
from medcert.progress import ProgressFn, silent
from medcert.sidecar import CertificateRecord
from medcert.source_digest import source_digest
from medcert.tolerance import PROFILES, ToleranceProfile
from medcert.verify import checks
from medcert.verify.report import CheckResult, VerificationReport, all_skipped, skipped
from medcert.volume import Volume
from medcert.weights import load_weights


@dataclass
class StoredMask:
    """A mask to check as the output record (from --mask, a DICOM SEG or a Slicer segmentation)."""

    labels: np.ndarray  # uint8 [i, j, k]
    ijk_to_ras: np.ndarray
    origin: str = "mask"


def _tolerance(core: dict[str, Any], evidence: dict[str, Any], evidence_ok: bool) -> ToleranceProfile | None:
    if evidence_ok:
        tol = ToleranceProfile.from_json(evidence.get("tolerance"))
        if tol.id != core["tol"]:
            raise CertificateError("evidence.tolerance.id differs from the signed tolerance profile id")
        return tol
    return PROFILES.get(core["tol"])


def _spec(evidence: dict[str, Any], evidence_ok: bool, adapter: WeightsAdapter | None) -> PreprocessSpec | None:
    if adapter is not None:
        return adapter.spec
    if evidence_ok:
        try:
            return PreprocessSpec.from_json(evidence["preprocessing"]["spec"])
        except (KeyError, TypeError, ValueError):
            return None
    return None


def verify_record(volume: Volume, record: CertificateRecord, *, trusted: Mapping[str, Ed25519PublicKey],
                  weights_path: str | Path | None = None, stored_mask: StoredMask | None = None,
                  device: str = "cpu", threads: int | None = None,
                  progress: ProgressFn = silent) -> VerificationReport:
    """Verify one certificate against ``volume`` (and weights, trust set, stored mask when given)."""
    core, evidence = record.core, record.evidence
    trace = core.get("tid") if isinstance(core, dict) else None
    try:
        core = validate_core(core)
    except UnknownSchemaError as exc:
        return VerificationReport(all_skipped(str(exc), "algorithm.unsupported"), trace,
                                  note="certificate schema is not supported by this MedCert version")
    except CertificateError as exc:
        rep = all_skipped("certificate is malformed")
        rep["signature"] = CheckResult("fail", "claim.malformed", str(exc))
        return VerificationReport(rep, trace)

    results: dict[str, CheckResult] = {"signature": checks.check_signature(core, trusted)}
    if results["signature"].code == "claimSignature.mismatch":
        reason = "signature invalid: the certified claims cannot be trusted"
        results.update({n: skipped("claimSignature.mismatch", reason) for n in
                        ("evidence", "input_hash", "weights_hash", "trajectory", "final_logits", "output_record")})
        return VerificationReport(results, trace)

    results["evidence"] = checks.check_evidence(core, evidence)
    evidence_ok = results["evidence"].status == "pass"
    progress("hashing input", 0.0)
    src = source_digest(volume)
    source_fail = checks.check_source(core, src)

    adapter: WeightsAdapter | None = None
    network = None
    replay_block = ""
    if weights_path is None:
        results["weights_hash"] = skipped("weights.missing", "no weights file given")
    else:
        try:
            weights = load_weights(weights_path)
            results["weights_hash"] = checks.check_weights(core, weights.digest)
            if results["weights_hash"].status == "pass":
                adapter = WeightsAdapter.from_weights(weights)
                network = adapter.network()  # unknown architecture -> WeightsError -> INCONCLUSIVE replay
        except WeightsError as exc:
            if "weights_hash" not in results:
                results["weights_hash"] = CheckResult("fail", "weights.unreadable", str(exc))
            adapter = None
            replay_block = f"cannot rebuild the model: {exc}"

    try:
        tol = _tolerance(core, evidence, evidence_ok)
    except CertificateError as exc:
        tol = None
        results["evidence"] = CheckResult("fail", "evidence.malformed", str(exc))
        evidence_ok = False

    blockers = []
    if not evidence_ok:
        blockers.append("evidence is not bound to the signed core")
    if source_fail:
        blockers.append("input differs from the certified input")
    if weights_path is None:
        blockers.append("no weights file given")
    elif results["weights_hash"].status != "pass":
        blockers.append("weights differ from the certified weights")
    elif adapter is None:
        blockers.append(replay_block)
    if tol is None:
        blockers.append(f"unknown tolerance profile {core['tol']}")

    run: SegmentationRun | None = None
    if not blockers:
        assert adapter is not None and tol is not None
        run = run_segmentation(volume, adapter, tol, device=device, threads=threads, model=network,
                               progress=progress)
        prep = run.prep
        mi = run.model_input_digest
    else:
        spec = None if source_fail else _spec(evidence, evidence_ok, adapter)
        prep = preprocess_volume(volume, spec) if spec else None
        mi = model_input_digest(prep) if prep else None
    pre = (section_digest({"spec": adapter.spec.to_json() if adapter else evidence["preprocessing"]["spec"],
                           "steps": prep.steps}) if prep is not None else None)
    results["input_hash"] = checks.check_input(core, src, mi, pre)

    replayed_mask = None
    report = VerificationReport(results, trace)
    if run is None:
        why = "; ".join(blockers)
        code = "replay.not_run"
        results["trajectory"] = skipped(code, f"replay not run: {why}")
        results["final_logits"] = skipped(code, f"replay not run: {why}")
    else:
        assert tol is not None
        try:
            results["trajectory"], report.layer_deviations = checks.check_trajectory(evidence, run, tol)
            results["final_logits"], replayed_mask = checks.check_final(core, evidence, run, tol, volume.ijk_to_ras)
            if results["final_logits"].status == "pass" and "findings" in evidence and adapter is not None:
                results["final_logits"] = checks.check_findings(results["final_logits"], evidence["findings"],
                                                                replayed_mask, run, volume, adapter, tol)
        except CertificateError as exc:
            results.setdefault("trajectory", CheckResult("fail", "evidence.malformed", str(exc)))
            results["final_logits"] = CheckResult("fail", "evidence.malformed", str(exc))

    if stored_mask is None:
        results["output_record"] = skipped("output.absent", "no stored mask given (--mask or a DICOM SEG)")
    else:
        results["output_record"], report.differences = checks.check_output_record(
            core, stored_mask.labels, stored_mask.ijk_to_ras, replayed_mask)
        results["output_record"].figures["source"] = stored_mask.origin
    return report
