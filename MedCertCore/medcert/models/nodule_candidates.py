"""Nodule candidates on the canonical grid: local maxima of the stage-1 nodule margin, and patches around them.

Shared by the two-stage model (``medcert.lungnodule/2``) at inference and by the training step that teaches its
candidate classifier, so both see exactly the same candidates and patches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

MARGIN_CLIP = 10.0  # the margin channel is clip(margin, ±10) / 10
INTENSITY_PAD = 0.0  # windowed intensity of air (the window's lower end)


def nodule_margin(logits: torch.Tensor) -> torch.Tensor:
    """``[4, X, Y, Z]`` composite logits → nodule margin ``l3 - max(l0, l1, l2)`` ``[X, Y, Z]``."""
    return logits[3] - logits[:3].amax(dim=0)


def find_candidates(margin: torch.Tensor, nms: int, limit: int) -> torch.Tensor:
    """Voxels ``[N, 3]`` where ``margin > 0`` is the maximum of its ``nms``³ neighbourhood (at most ``limit``,
    highest margin first; ties keep C order)."""
    peak = F.max_pool3d(margin[None, None], nms, stride=1, padding=nms // 2)[0, 0]
    idx = torch.nonzero((margin > 0) & (margin == peak))
    if idx.shape[0] > limit:
        order = torch.argsort(-margin[idx[:, 0], idx[:, 1], idx[:, 2]], stable=True)[:limit]
        idx = idx[order]
    return idx


def candidate_components(margin: torch.Tensor, centres: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """26-connected components of ``margin > 0`` ``[X, Y, Z]`` (int32, 0 outside) and each candidate's component."""
    comp, _n = ndimage.label((margin > 0).cpu().numpy(), structure=np.ones((3, 3, 3), dtype=bool))
    c = centres.cpu().numpy()
    return comp.astype(np.int32), comp[c[:, 0], c[:, 1], c[:, 2]].astype(np.int64)


def gather_patches(image: torch.Tensor, margin: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, 2, size, size, size]`` patches (windowed intensity, clipped margin / 10), voxel offsets
    ``-size//2 .. size - size//2 - 1`` around each centre; outside the grid: air and a margin of -10."""
    lo = size // 2
    pads = (lo, size, lo, size, lo, size)
    img = F.pad(image[None, None], pads, value=INTENSITY_PAD)[0, 0]
    mar = F.pad(margin.clamp(-MARGIN_CLIP, MARGIN_CLIP)[None, None] / MARGIN_CLIP, pads, value=-1.0)[0, 0]
    ar = torch.arange(size, device=centres.device)
    xs, ys, zs = (centres[:, a, None] + ar for a in range(3))
    ix = (xs[:, :, None, None], ys[:, None, :, None], zs[:, None, None, :])
    return torch.stack([img[ix], mar[ix]], dim=1)
