"""Finding summary: organ volumes and, per anomaly component, size, position, side and peak probability."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from medcert.digests import geometry_list
from medcert.volume import Volume

MAX_FINDINGS = 100


def equivalent_diameter_mm(volume_mm3: Any) -> Any:
    """Diameter of the sphere of this volume (a float or an array of them)."""
    return 2.0 * (3.0 * volume_mm3 / (4.0 * math.pi)) ** (1 / 3)


def _r(x: float, nd: int = 3) -> float:
    return float(round(float(x), nd)) + 0.0


def summarize(labels: np.ndarray, anomaly: np.ndarray | None, volume: Volume, label_names: dict[int, str],
              anomaly_label: int | None) -> dict[str, Any]:
    """Findings computed from a labelmap on the input grid (exactly reproducible from the mask)."""
    # Geometry rounded as in the digests (1e-6 mm): writers' float noise must not change a reported volume.
    m = np.asarray(geometry_list(volume.ijk_to_ras), dtype=np.float64).reshape(4, 4)
    voxel_mm3 = abs(float(np.linalg.det(m[:3, :3])))
    counts = np.bincount(labels.reshape(-1), minlength=256)
    organs = {name: {"voxels": int(counts[v]), "volume_ml": _r(counts[v] * voxel_mm3 / 1000.0, 2)}
              for v, name in sorted(label_names.items()) if v != anomaly_label}
    nodules: list[dict[str, Any]] = []
    if anomaly_label is not None:
        comp, n = ndimage.label(labels == anomaly_label, structure=np.ones((3, 3, 3), dtype=bool))
        lung_labels = [v for v in label_names if v != anomaly_label]
        for c in range(1, n + 1):
            idx = np.argwhere(comp == c)
            vol_mm3 = idx.shape[0] * voxel_mm3
            centre = idx.mean(axis=0)
            ras = m[:3, :3] @ centre + m[:3, 3]
            lo, hi = np.maximum(idx.min(axis=0) - 3, 0), idx.max(axis=0) + 4
            box = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            near = {v: int(np.count_nonzero(box == v)) for v in lung_labels}
            side = max(near, key=lambda v: (near[v], -v)) if any(near.values()) else None
            peak = float(anomaly[comp == c].max()) if anomaly is not None else None
            nodules.append({
                "voxels": int(idx.shape[0]), "volume_mm3": _r(vol_mm3, 2),
                "equivalent_diameter_mm": _r(equivalent_diameter_mm(vol_mm3), 2),
                "centroid_ras": [_r(v, 2) for v in ras],
                "side": label_names.get(side) if side is not None else None,
                "max_probability": _r(peak, 4) if peak is not None else None,
            })
        nodules.sort(key=lambda f: (-f["volume_mm3"], f["centroid_ras"]))
    return {"organs": organs, "n_findings": len(nodules), "findings": nodules[:MAX_FINDINGS]}


def format_findings(findings: dict[str, Any], limit: int = 10) -> list[str]:
    """Human-readable lines: organ volumes, then one line per finding (the ``limit`` largest)."""
    lines = [f"{name:<10} {organ['volume_ml']:.1f} mL" for name, organ in findings.get("organs", {}).items()]
    listed = findings.get("findings", [])
    for n, f in enumerate(listed[:limit], 1):
        ras = ", ".join(f"{v:.1f}" for v in f["centroid_ras"])
        lines.append(f"finding {n}: {f['equivalent_diameter_mm']:.1f} mm, {f['volume_mm3']:.0f} mm³, "
                     f"{f['side'] or 'outside the lungs'}, RAS ({ras}), max p={f['max_probability']}")
    shown = min(limit, len(listed))
    total = int(findings.get("n_findings", len(listed)))
    if total > shown:
        lines.append(f"... and {total - shown} smaller findings (all are in the certificate's evidence; "
                     "`--json` lists them)")
    return lines


def findings_for_run(volume: Volume, run: Any, adapter: Any) -> dict[str, Any]:
    """Findings of a SegmentationRun with its adapter's label names."""
    return summarize(run.outputs.labels, run.outputs.anomaly, volume, adapter.labels, adapter.anomaly_label)


def compare_findings(certified: Any, replayed: dict[str, Any], prob_tol: float) -> str | None:
    """None when the replayed findings equal the certified ones (peak probabilities within ``prob_tol`` plus
    rounding); otherwise a one-line description of the first difference."""
    if not isinstance(certified, dict):
        return "certified findings are not an object"
    if certified.get("organs") != replayed["organs"]:
        return "organ volumes differ"
    cert_f, rep_f = certified.get("findings"), replayed["findings"]
    if not isinstance(cert_f, list) or len(cert_f) != len(rep_f):
        return f"{len(rep_f)} findings replayed, {len(cert_f) if isinstance(cert_f, list) else '?'} certified"
    for n, (c, r) in enumerate(zip(cert_f, rep_f, strict=True), 1):
        if not isinstance(c, dict):
            return f"finding {n} is not an object"
        if {k: v for k, v in c.items() if k != "max_probability"} != {
                k: v for k, v in r.items() if k != "max_probability"}:
            return f"finding {n} differs in size, position or side"
        cp, rp = c.get("max_probability"), r.get("max_probability")
        if (cp is None) != (rp is None) or (cp is not None and abs(float(cp) - float(rp)) > prob_tol + 1e-4):
            return f"finding {n}: peak probability {rp} vs certified {cp}"
    return None
