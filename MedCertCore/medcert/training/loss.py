"""Cross-entropy + soft Dice (foreground classes, batch Dice)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """``logits`` ``[B, C, X, Y, Z]``, ``target`` ``[B, X, Y, Z]`` int64; returns CE + (1 - mean Dice over 1..C-1)."""
    ce = F.cross_entropy(logits, target)
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3).to(prob.dtype)
    dims = (0, 2, 3, 4)
    inter = (prob * onehot).sum(dims)[1:]
    denom = (prob.sum(dims) + onehot.sum(dims))[1:]
    dice = (2 * inter + smooth) / (denom + smooth)
    return ce + (1 - dice.mean())
