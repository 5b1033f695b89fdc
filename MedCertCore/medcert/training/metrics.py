"""Segmentation and detection metrics on the input grid: lung Dice per side, L/R swaps, nodule hits and FPs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medcert.findings import equivalent_diameter_mm
from medcert.phantom import LEFT_LUNG, NODULE, RIGHT_LUNG, NoduleSpec

CONN26 = np.ones((3, 3, 3), dtype=bool)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if sa + sb == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / (sa + sb)


def lung_scores(gt: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Dice per side and a left/right swap flag (a predicted side overlapping the other GT side more)."""
    out: dict[str, Any] = {}
    swapped = False
    for name, side, other in (("right", RIGHT_LUNG, LEFT_LUNG), ("left", LEFT_LUNG, RIGHT_LUNG)):
        p, g, go = pred == side, gt == side, gt == other
        out[f"dice_{name}"] = dice(g, p)
        if np.count_nonzero(p & go) > np.count_nonzero(p & g):
            swapped = True
        out[f"cross_{name}"] = float(np.count_nonzero(p & go) / max(1, np.count_nonzero(p)))
    out["lr_swap"] = swapped
    return out


@dataclass
class NoduleMatch:
    """Predicted nodule components (26-connected, labelled 1..n) and the ones that hit each GT nodule."""

    components: np.ndarray
    voxels: dict[int, tuple[np.ndarray, ...]]
    diameters_mm: dict[int, float]
    hits: list[set[int]]
    gt_voxels: list[int]

    def unmatched(self) -> list[int]:
        matched = set().union(*self.hits) if self.hits else set()
        return [k for k in self.voxels if k not in matched]


def match_nodules(gt: np.ndarray, pred: np.ndarray, ijk_to_ras: np.ndarray,
                  nodules: list[NoduleSpec]) -> NoduleMatch:
    """A predicted component hits a GT nodule when it overlaps its GT voxels or has its centroid within its
    radius + 1 mm."""
    voxel_mm3 = abs(float(np.linalg.det(ijk_to_ras[:3, :3])))
    pcomp, _n = ndimage.label(pred == NODULE, structure=CONN26)
    gcomp, _ = ndimage.label(gt == NODULE, structure=CONN26)
    inv = np.linalg.inv(ijk_to_ras)
    p_idx = ndimage.value_indices(pcomp, ignore_value=0)
    p_cent = {c: ijk_to_ras[:3, :3] @ np.mean(np.array(ix, dtype=float), axis=1) + ijk_to_ras[:3, 3]
              for c, ix in p_idx.items()}
    hits, gt_voxels = [], []
    for nod in nodules:
        c = np.array(nod.center_ras)
        r = 0.5 * nod.diameter_mm
        ijk = np.rint(inv[:3, :3] @ c + inv[:3, 3]).astype(int)
        g_ids = _gt_components_near(gcomp, ijk, max(2, math.ceil(r / min(_spacing(ijk_to_ras)))))
        hit: set[int] = set()
        for g in g_ids:
            hit |= {int(v) for v in np.unique(pcomp[gcomp == g]) if v}
        hit |= {k for k, pc in p_cent.items() if np.linalg.norm(pc - c) <= r + 1.0}
        hits.append(hit)
        gt_voxels.append(int(sum(np.count_nonzero(gcomp == g) for g in g_ids)))
    diam = {c: equivalent_diameter_mm(len(ix[0]) * voxel_mm3) for c, ix in p_idx.items()}
    return NoduleMatch(pcomp, p_idx, diam, hits, gt_voxels)


def nodule_scores(gt: np.ndarray, pred: np.ndarray, ijk_to_ras: np.ndarray, nodules: list[NoduleSpec],
                  min_fp_diameter_mm: float = 0.0) -> dict[str, Any]:
    """Per GT nodule: detected (:func:`match_nodules`). False positives: predicted components matching no GT
    nodule of any size."""
    m = match_nodules(gt, pred, ijk_to_ras, nodules)
    per_gt = [{"diameter_mm": round(nod.diameter_mm, 2), "kind": nod.kind, "detected": bool(hit), "gt_voxels": n}
              for nod, hit, n in zip(nodules, m.hits, m.gt_voxels, strict=True)]
    fp_diameters = {k: m.diameters_mm[k] for k in m.unmatched()}
    return {"nodules": per_gt, "n_pred_components": len(m.voxels), "fp": len(fp_diameters),
            "fp_sized": sum(d >= min_fp_diameter_mm for d in fp_diameters.values()),
            "fp_diameters_mm": sorted(round(d, 1) for d in fp_diameters.values())}


def _spacing(m: np.ndarray) -> list[float]:
    return [float(np.linalg.norm(m[:3, c])) for c in range(3)]


def _gt_components_near(gcomp: np.ndarray, ijk: np.ndarray, rad: int) -> set[int]:
    lo = np.maximum(ijk - rad, 0)
    hi = np.minimum(ijk + rad + 1, gcomp.shape)
    if np.any(lo >= hi):
        return set()
    box = gcomp[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return {int(v) for v in np.unique(box) if v}
