"""Cross-entropy + soft Dice (foreground classes, batch Dice)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5,
                 focus_class: int | None = 3) -> torch.Tensor:
    """``logits`` ``[B, C, X, Y, Z]``, ``target`` ``[B, X, Y, Z]`` int64.

    CE + (1 - mean soft Dice over classes 1..C-1) + CE averaged over the voxels of ``focus_class`` (nodules).
    The last term keeps a class of ~1e-4 of the voxels from being ignored: averaged over all voxels its CE
    gradient is negligible and the softmax saturates at p ≈ 0, where the Dice gradient vanishes too.
    """
    ce_vox = F.cross_entropy(logits, target, reduction="none")
    ce = ce_vox.mean()
    if focus_class is not None:
        pos = target == focus_class
        if bool(pos.any()):
            ce = ce + ce_vox[pos].mean()
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3).to(prob.dtype)
    dims = (0, 2, 3, 4)
    inter = (prob * onehot).sum(dims)[1:]
    denom = (prob.sum(dims) + onehot.sum(dims))[1:]
    dice = (2 * inter + smooth) / (denom + smooth)
    return ce + (1 - dice.mean())
