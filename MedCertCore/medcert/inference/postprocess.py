"""Back to the input grid: interpolate logits onto the original voxels, argmax, anomaly map, margins."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medcert.inference.preprocess import grid_to_source_coords
from medcert.volume import Volume

CHUNK_VOXELS = 4 * 1024 * 1024


@dataclass
class GridOutputs:
    """Outputs on the input grid ``[i, j, k]``."""

    labels: np.ndarray  # uint8
    anomaly: np.ndarray | None  # float32 probability of the anomaly class
    low_margin: np.ndarray  # int64 flat indices (Fortran order of [i,j,k]) with top-2 logit margin < tol
    min_margin: float
    explanation: np.ndarray | None = None  # float32 saliency in [0, 1]


def to_input_grid(logits: np.ndarray, grid_to_ras: np.ndarray, volume: Volume, *, anomaly_label: int | None,
                  margin_tol: float, explanation: np.ndarray | None = None) -> GridOutputs:
    """Trilinear interpolation of canonical logits ``[C, X, Y, Z]`` at every input voxel, chunked over k."""
    ni, nj, nk = volume.shape
    _c, gx, gy, gz = logits.shape
    src = torch.from_numpy(np.ascontiguousarray(logits)).unsqueeze(0)
    labels = np.empty((ni, nj, nk), dtype=np.uint8, order="F")
    anomaly = np.empty((ni, nj, nk), dtype=np.float32, order="F") if anomaly_label is not None else None
    expl_src = torch.from_numpy(np.ascontiguousarray(explanation))[None, None] if explanation is not None else None
    expl = np.empty((ni, nj, nk), dtype=np.float32, order="F") if expl_src is not None else None
    low: list[np.ndarray] = []
    min_margin = float("inf")
    step = max(1, CHUNK_VOXELS // (ni * nj))
    scale = [2.0 / max(n - 1, 1) for n in (gx, gy, gz)]
    for k0 in range(0, nk, step):
        k1 = min(nk, k0 + step)
        ci = grid_to_source_coords(volume, grid_to_ras, k0, k1)
        ci = [np.broadcast_to(a, (ni, nj, k1 - k0)) for a in ci]
        # grid_sample wants (x=W=Z axis, y=H=Y axis, z=D=X axis), normalized to [-1, 1].
        g = np.stack([ci[2] * scale[2] - 1.0, ci[1] * scale[1] - 1.0, ci[0] * scale[0] - 1.0], axis=-1)
        grid = torch.from_numpy(g.astype(np.float32)).unsqueeze(0)
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
        top2 = torch.topk(out, 2, dim=0).values
        margin = (top2[0] - top2[1]).numpy()
        labels[:, :, k0:k1] = out.argmax(dim=0).numpy().astype(np.uint8)
        if anomaly is not None:
            anomaly[:, :, k0:k1] = torch.softmax(out, dim=0)[anomaly_label].numpy()
        if expl is not None:
            expl[:, :, k0:k1] = F.grid_sample(expl_src, grid, mode="bilinear", padding_mode="border",
                                              align_corners=True)[0, 0].numpy()
        min_margin = min(min_margin, float(margin.min()))
        ii, jj, kk = np.nonzero(margin < margin_tol)
        if ii.size:
            low.append(ii + ni * (jj + nj * (kk + k0)))
    low_idx = np.sort(np.concatenate(low)) if low else np.zeros(0, dtype=np.int64)
    return GridOutputs(labels=labels, anomaly=anomaly, low_margin=low_idx.astype(np.int64), min_margin=min_margin,
                       explanation=expl)
