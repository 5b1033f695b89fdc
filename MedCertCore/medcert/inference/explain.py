"""Explanation map: input-gradient saliency of the anomaly score, from the certified model itself.

For every tile that contains voxels labelled as the anomaly class (by the blended logits), the score
``S = sum of anomaly logits over those voxels`` is back-propagated to the input; ``|dS/dx|`` of the intensity
channel is blended across tiles with the same Gaussian weights as the logits and scaled to [0, 1] by its
maximum. A two-stage model (one with ``candidate_saliency``, such as ``medcert.lungnodule/2``) adds its second
stage: the input gradient of its accepted candidates' scores, scaled to [0, 1] the same way; the map is the
larger of the two. No surrogate model is involved, so the map is faithful to the network that produced the output.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medcert.inference.engine import certified_mode
from medcert.inference.tiling import gaussian_weights, pad_to_patch, tiles
from medcert.progress import ProgressFn, silent

METHOD = "medcert/input-gradient/1"


def explanation_map(model: nn.Module, tensor: np.ndarray, logits: np.ndarray, patch: tuple[int, int, int],
                    overlap: float, anomaly_label: int, *, device: str = "cpu", candidates: dict | None = None,
                    progress: ProgressFn = silent) -> tuple[np.ndarray, int]:
    """Saliency ``[X, Y, Z]`` float32 in [0, 1] on the canonical grid, and the number of tiles explained."""
    padded, shape = pad_to_patch(tensor, patch)
    grid = padded.shape[1:]
    labels = np.zeros(grid, dtype=bool)
    labels[: shape[0], : shape[1], : shape[2]] = logits.argmax(axis=0) == anomaly_label
    out = np.zeros(grid, dtype=np.float32)
    if not labels.any():
        return out[: shape[0], : shape[1], : shape[2]], 0
    weight = torch.from_numpy(gaussian_weights(patch))
    acc = torch.zeros(grid, dtype=torch.float32)
    norm = torch.zeros(grid, dtype=torch.float32)
    src = torch.from_numpy(np.ascontiguousarray(padded))
    todo = [sl for sl in tiles(grid, patch, overlap) if labels[sl].any()]
    with certified_mode(device, grad=True):
        for n, sl in enumerate(todo):
            x = src[(slice(None), *sl)].unsqueeze(0).to(device).requires_grad_(True)
            mask = torch.from_numpy(labels[sl]).to(device)
            score = (model(x)[0, anomaly_label] * mask).sum()
            (grad,) = torch.autograd.grad(score, x)
            acc[sl] += grad[0, 0].abs().to("cpu", torch.float32) * weight
            norm[sl] += weight
            progress("explanation", (n + 1) / len(todo))
        second = None if candidates is None else model.candidate_saliency(candidates, shape)  # type: ignore[operator]
    sal = _unit(torch.where(norm > 0, acc / norm.clamp_min(1e-12), torch.zeros_like(acc)).numpy())
    sal = sal[: shape[0], : shape[1], : shape[2]]
    if second is not None:
        sal = np.maximum(sal, _unit(second))
    return np.ascontiguousarray(sal, dtype=np.float32), len(todo)


def _unit(sal: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] by its maximum (unchanged when all zero)."""
    peak = float(sal.max()) if sal.size else 0.0
    return sal / peak if peak > 0 else sal
