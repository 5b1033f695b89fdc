"""Two-network lung + nodule model (architecture id ``medcert.lungnodule/1``).

``lung`` is a 3-class U-Net (background, right lung, left lung) whose lung labels include any nodules inside
the lung. ``nodule`` is a 1-class U-Net on the intensity channel giving the log-odds that a voxel is nodule
given that it is lung. The composite returns 4-class logits ``[bg, right, left, max(right, left) + n]``, so
the argmax labels a voxel nodule exactly when the lung network calls it lung and ``n > 0``, and a constant
added to the nodule head's bias moves the nodule decision threshold (the operating point).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medcert.models.unet3d import UNet3D

NODULE_BIAS = "nodule.head.bias"


class LungNoduleNet(nn.Module):
    """``lung`` and ``nodule`` configs are ``medcert.unet3d/1`` configs (``n_classes`` fixed at 3 and 1)."""

    def __init__(self, lung: dict[str, Any], nodule: dict[str, Any]) -> None:
        super().__init__()
        for name, cfg, want in (("lung", lung, 3), ("nodule", nodule, 1)):
            if int(cfg.get("n_classes", want)) != want:
                raise ValueError(f"the {name} network must have n_classes {want}")
        self.lung = UNet3D(**{**lung, "n_classes": 3})
        self.nodule = UNet3D(**{**nodule, "n_classes": 1})
        self.nodule_channels = int(nodule.get("in_channels", 1))
        if self.nodule_channels > int(lung.get("in_channels", 1)):
            raise ValueError("the nodule network cannot take more input channels than the lung network")

    def divisor(self) -> int:
        return max(self.lung.divisor(), self.nodule.divisor())

    def trace_layers(self) -> list[tuple[str, nn.Module]]:
        return ([(f"lung.{n}", m) for n, m in self.lung.trace_layers()]
                + [(f"nodule.{n}", m) for n, m in self.nodule.trace_layers()])

    def forward(self, x: torch.Tensor, nodule_offset: float = 0.0) -> torch.Tensor:
        """Composite logits; ``nodule_offset`` is added to the nodule log-odds (0: unchanged)."""
        lung = self.lung(x)
        nod = self.nodule(x[:, : self.nodule_channels])
        return combine(lung, nod + nodule_offset if nodule_offset else nod)


def combine(lung: torch.Tensor, nodule: torch.Tensor) -> torch.Tensor:
    """``[B, 3, ...]`` lung logits and ``[B, 1, ...]`` nodule log-odds → ``[B, 4, ...]`` class logits."""
    return torch.cat([lung, lung[:, 1:3].amax(dim=1, keepdim=True) + nodule], dim=1)
