"""Individual verification checks. Each returns a CheckResult and never raises for a mismatch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from medcert.canonical import decode_array
from medcert.certificate import evidence_digest, verify_signature
from medcert.errors import CertificateError
from medcert.evidence import decode_low_margin, decode_trajectory, mask_digest, section_digest
from medcert.findings import compare_findings, summarize
from medcert.inference.adapter import WeightsAdapter
from medcert.inference.fingerprint import deviation
from medcert.inference.run import SegmentationRun
from medcert.tolerance import ToleranceProfile
from medcert.verify.report import CheckResult
from medcert.volume import Volume


def check_signature(core: dict[str, Any], trusted: Mapping[str, Ed25519PublicKey]) -> CheckResult:
    res = verify_signature(core, trusted)
    figures = {"key_id": res.key_id}
    if res.status == "valid":
        return CheckResult("pass", "claimSignature.validated", f"valid signature by trusted key {res.key_id}",
                           figures)
    if res.status == "untrusted":
        return CheckResult("fail", "signingCredential.untrusted",
                           f"signed by key {res.key_id}, which is not in the trust set ({res.reason})", figures)
    return CheckResult("fail", "claimSignature.mismatch", f"signature invalid: {res.reason}", figures)


def check_evidence(core: dict[str, Any], evidence: dict[str, Any]) -> CheckResult:
    got = evidence_digest(evidence)
    if got == core["d"]["evd"]:
        return CheckResult("pass", "evidence.bound", "evidence matches the signed evidence digest")
    parts = {"pre": ("preprocessing",), "trj": ("trajectory",), "lgt": ("outputs", "logits"),
             "anm": ("outputs", "anomaly"), "exp": ("outputs", "explanation")}
    edited = []
    for key, path in parts.items():
        node: Any = evidence
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        if key in core["d"] and (node is None or section_digest(node) != core["d"][key]):
            edited.append(".".join(path))
    where = f" (edited sections: {', '.join(edited)})" if edited else ""
    return CheckResult("fail", "evidence.mismatch",
                       f"evidence was changed after signing{where}", {"edited_sections": edited})


def check_source(core: dict[str, Any], source: str) -> CheckResult | None:
    """Fail early on a source mismatch; None when the source matches (model input is checked later)."""
    if source != core["d"]["src"]:
        return CheckResult("fail", "input.source.mismatch",
                           "input study differs from the certified one (voxel values, geometry or instances)",
                           {"certified": core["d"]["src"], "replayed": source})
    return None


def check_input(core: dict[str, Any], source: str, model_input: str | None, preprocessing: str | None) -> CheckResult:
    failed = check_source(core, source)
    if failed:
        return failed
    if model_input is None:
        return CheckResult("pass", "input.source.match",
                           "source digest matches; model-input digest not re-derived (no preprocessing spec)",
                           {"source": source})
    if preprocessing is not None and preprocessing != core["d"]["pre"]:
        return CheckResult("fail", "input.preprocessing.mismatch",
                           "preprocessing steps differ from the certified ones",
                           {"certified": core["d"]["pre"], "replayed": preprocessing})
    if model_input != core["d"]["inp"]:
        return CheckResult("fail", "input.model_input.mismatch",
                           "source matches but the preprocessed model input differs",
                           {"certified": core["d"]["inp"], "replayed": model_input})
    return CheckResult("pass", "input.match", "source digest and model-input digest match",
                       {"source": source, "model_input": model_input})


def check_weights(core: dict[str, Any], digest: str) -> CheckResult:
    if digest == core["d"]["wts"]:
        return CheckResult("pass", "weights.match", "weights file is the certified one", {"digest": digest})
    return CheckResult("fail", "weights.mismatch", "weights file differs from the certified weights",
                       {"certified": core["d"]["wts"], "given": digest})


def check_trajectory(evidence: dict[str, Any], run: SegmentationRun,
                     tol: ToleranceProfile) -> tuple[CheckResult, list[tuple[str, float, float]]]:
    certified = decode_trajectory(evidence["trajectory"])
    replayed = {t.name: t for t in run.trajectory}
    devs: list[tuple[str, float, float]] = []
    first_bad: tuple[str, float] | None = None
    for name, shape, tiles, values in certified:
        t = replayed.get(name)
        if t is None or t.shape != shape or t.tiles != tiles:
            return (CheckResult("fail", "trajectory.structure",
                                f"layer {name}: replay has another structure (layer, shape or tile count)",
                                {"layer": name}), devs)
        d = deviation(t.values, values)
        devs.append((name, d, tol.layer_rel))
        if d > tol.layer_rel and first_bad is None:
            first_bad = (name, d)
    figures = {"max_deviation": max(d for _, d, _ in devs), "tolerance": tol.layer_rel,
               "layers": {n: d for n, d, _ in devs}}
    if len(replayed) != len(certified):
        return CheckResult("fail", "trajectory.structure", "replay traced a different number of layers",
                           figures), devs
    if first_bad:
        figures["first_divergent_layer"] = first_bad[0]
        return (CheckResult("fail", "trajectory.divergent",
                            f"first divergent layer {first_bad[0]}: deviation {first_bad[1]:.2e} > "
                            f"tolerance {tol.layer_rel:.1e}", figures), devs)
    return (CheckResult("pass", "trajectory.within_tolerance",
                        f"{len(devs)} layers within tolerance (max deviation {figures['max_deviation']:.2e}, "
                        f"tolerance {tol.layer_rel:.1e})", figures), devs)


def map_deviation(section: Any, replayed: np.ndarray, name: str) -> float:
    """Max |replayed - certified| at the certified fingerprint positions of a map on the input grid."""
    if not isinstance(section, dict):
        raise CertificateError(f"evidence.outputs.{name}: expected an object")
    pos = decode_array(section.get("positions"), max_elements=1 << 16, field=f"{name}.positions")
    vals = decode_array(section.get("values"), max_elements=1 << 16, field=f"{name}.values")
    flat = replayed.reshape(-1, order="F")
    if pos.shape != vals.shape or pos.ndim != 1 or (pos.size and (pos.min() < 0 or pos.max() >= flat.size)):
        raise CertificateError(f"evidence.outputs.{name}: positions do not fit the volume")
    return float(np.max(np.abs(flat[pos].astype(np.float64) - vals))) if pos.size else 0.0


def patched_mask(replayed: np.ndarray, low_idx: np.ndarray, low_labels: np.ndarray) -> np.ndarray:
    """The replayed labelmap with the certified labels restored at the certified low-margin voxels."""
    out = np.array(replayed, dtype=np.uint8, order="F", copy=True)
    flat = out.reshape(-1, order="F")
    flat[low_idx] = low_labels
    return out


def check_final(core: dict[str, Any], evidence: dict[str, Any], run: SegmentationRun, tol: ToleranceProfile,
                ijk_to_ras: np.ndarray) -> tuple[CheckResult, np.ndarray | None]:
    """Logits fingerprint, anomaly map and labelmap (exact outside low-margin voxels)."""
    out_ev = evidence["outputs"]
    logits = out_ev["logits"]
    certified = decode_array(logits["values"], max_elements=1 << 16, field="evidence.outputs.logits.values")
    if list(run.logits_shape) != logits["shape"] or certified.shape != run.logits_samples.shape:
        return CheckResult("fail", "logits.structure", "replayed logits have another shape",
                           {"certified": logits["shape"], "replayed": list(run.logits_shape)}), None
    dev = deviation(run.logits_samples, certified)
    figures: dict[str, Any] = {"logits_deviation": dev, "logits_tolerance": tol.logits_rel}
    if dev > tol.logits_rel:
        return CheckResult("fail", "logits.divergent",
                           f"logits deviation {dev:.2e} > tolerance {tol.logits_rel:.1e}", figures), None
    for name, replayed_map, limit in (("anomaly", run.outputs.anomaly, tol.prob_abs),
                                      ("explanation", run.outputs.explanation, tol.expl_abs)):
        if (name in out_ev) != (replayed_map is not None):
            return CheckResult("fail", f"{name}.structure", f"{name} map present in only one of certificate and "
                               "replay", figures), None
        if replayed_map is None:
            continue
        m_dev = map_deviation(out_ev[name], replayed_map, name)
        figures.update({f"{name}_max_abs": m_dev, f"{name}_tolerance": limit})
        if m_dev > limit:
            return CheckResult("fail", f"{name}.divergent",
                               f"{name} map deviation {m_dev:.2e} > tolerance {limit:.1e}", figures), None
    low_idx, low_labels = decode_low_margin(out_ev["mask"]["low_margin"], run.outputs.labels.size)
    replayed = run.outputs.labels
    flipped = int(np.count_nonzero(replayed.reshape(-1, order="F")[low_idx] != low_labels))
    patched = patched_mask(replayed, low_idx, low_labels)
    figures.update(low_margin_voxels=int(low_idx.size), flipped_low_margin_voxels=flipped,
                   replay_min_margin=run.outputs.min_margin, margin_tolerance=tol.margin)
    if mask_digest(patched, ijk_to_ras) != core["d"]["msk"]:
        return CheckResult("fail", "mask.mismatch",
                           "replayed labelmap differs from the certified one outside low-margin voxels",
                           figures), patched
    return CheckResult("pass", "logits.within_tolerance",
                       f"logits deviation {dev:.2e} within {tol.logits_rel:.1e}; labelmap equal except "
                       f"{flipped} of {low_idx.size} low-margin voxels", figures), patched


def check_output_record(core: dict[str, Any], stored: np.ndarray, stored_ijk_to_ras: np.ndarray,
                        replayed: np.ndarray | None) -> tuple[CheckResult, np.ndarray | None]:
    """The stored mask must be exactly the certified one; differences against the replay are counted."""
    diff = None
    figures: dict[str, Any] = {}
    if replayed is not None and replayed.shape == stored.shape:
        diff = (np.asarray(stored) != replayed).astype(np.uint8)
        figures["voxels_differing_from_replay"] = int(diff.sum())
    if mask_digest(stored, stored_ijk_to_ras) == core["d"]["msk"]:
        return CheckResult("pass", "output.mask.match", "stored mask is exactly the certified mask", figures), diff
    return CheckResult("fail", "output.mask.mismatch", "stored mask differs from the certified mask"
                       + (f" ({figures['voxels_differing_from_replay']} voxels differ from the replay)"
                          if "voxels_differing_from_replay" in figures else ""), figures), diff


def check_findings(passed: CheckResult, certified: Any, mask: np.ndarray, run: SegmentationRun, volume: Volume,
                   adapter: WeightsAdapter, tol: ToleranceProfile) -> CheckResult:
    """Findings recomputed from the (certified-equal) replayed mask and anomaly map must match the certificate."""
    replayed = summarize(mask, run.outputs.anomaly, volume, adapter.labels, adapter.anomaly_label)
    problem = compare_findings(certified, replayed, tol.prob_abs)
    if problem:
        return CheckResult("fail", "findings.mismatch", f"finding summary differs: {problem}", passed.figures)
    passed.figures["findings"] = replayed["n_findings"]
    passed.reason += f"; {replayed['n_findings']} findings reproduced"
    return passed
