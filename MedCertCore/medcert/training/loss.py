"""Training losses: cross-entropy + soft Dice for the lung network, weighted BCE + soft Dice for nodules, and a
per-nodule detection loss (each nodule's peak logit up, the patch's highest background logits down)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medcert.training.dataset import TINY


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5,
                 voxel_weight: torch.Tensor | None = None) -> torch.Tensor:
    """``logits`` ``[B, C, X, Y, Z]``, ``target`` ``[B, X, Y, Z]`` int64: CE (weighted mean by ``voxel_weight``
    ``[B, X, Y, Z]`` where given) + (1 - mean soft Dice over classes 1..C-1, pooled over the batch)."""
    if voxel_weight is None:
        ce = F.cross_entropy(logits, target)
    else:
        ce = (F.cross_entropy(logits, target, reduction="none") * voxel_weight).sum() / voxel_weight.sum()
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3).to(prob.dtype)
    dims = (0, 2, 3, 4)
    inter = (prob * onehot).sum(dims)[1:]
    denom = (prob.sum(dims) + onehot.sum(dims))[1:]
    dice = (2 * inter + smooth) / (denom + smooth)
    return ce + (1 - dice.mean())


def nodule_loss(logit: torch.Tensor, target: torch.Tensor, pos_weight: float = 10.0,
                voxel_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy (nodule voxels weighted ``pos_weight``, times ``voxel_weight`` where given) + 1 - soft
    Dice of the batch (smooth 1, so a batch without nodules still pushes every probability toward 0). Voxels
    of weight 0 are left out of both terms."""
    bce = F.binary_cross_entropy_with_logits(logit, target, weight=voxel_weight, pos_weight=torch.tensor(pos_weight))
    p = torch.sigmoid(logit)
    if voxel_weight is not None:
        p = p * (voxel_weight > 0)
    dice = (2 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + 1 - dice


def nodule_targets(sizes: torch.Tensor, size_weighting: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Nodule target and per-voxel loss weight from a patch of ``TrainingCase.nodule_weight`` values. Without
    size weighting every nodule voxel is a plain positive; with it, each weighs its size weight and voxels of
    tiny components weigh 0 (left out of the loss)."""
    if not size_weighting:
        return (sizes > 0).float(), None
    tiny = sizes == TINY
    target = ((sizes > 0) & ~tiny).float()
    return target, torch.where(tiny, 0.0, torch.where(sizes > 0, sizes, 1.0))


def detection_loss(logit: torch.Tensor, sizes: torch.Tensor, hard_negatives: int = 64,
                   margin_voxels: int = 2) -> torch.Tensor:
    """Per-object loss on ``logit`` ``[B, 1, X, Y, Z]`` given the patch's ``TrainingCase.nodule_weight`` values
    ``sizes``: the mean over nodule components of softplus(-max logit in the component) (every nodule, however
    small, counts once: the voxel-mean losses above let a 20-voxel nodule vanish beside a 4000-voxel one) plus
    the mean over patches of softplus of the ``hard_negatives`` highest background logits (false-positive blobs
    count however few they are). Tiny components and background within ``margin_voxels`` of any nodule voxel
    are left out."""
    lab = sizes.detach().to("cpu").numpy()
    pos: list[torch.Tensor] = []
    neg: list[torch.Tensor] = []
    for b in range(logit.shape[0]):
        s, flat = lab[b, 0], logit[b, 0].reshape(-1)
        nodule = s > 0
        comp, n = ndimage.label(nodule & (s != TINY))
        if n:
            ids = torch.from_numpy(comp.reshape(-1).astype(np.int64)).to(logit.device)
            peak = torch.full((n + 1,), -torch.inf, dtype=flat.dtype, device=flat.device)
            pos.append(F.softplus(-peak.scatter_reduce(0, ids, flat, "amax")[1:]))
        near = ndimage.binary_dilation(nodule, iterations=margin_voxels)
        bg = flat[torch.from_numpy(~near.reshape(-1)).to(logit.device)]
        if bg.numel():
            neg.append(F.softplus(torch.topk(bg, min(hard_negatives, bg.numel())).values).mean())
    zero = logit.sum() * 0.0
    return (torch.cat(pos).mean() if pos else zero) + (torch.stack(neg).mean() if neg else zero)
