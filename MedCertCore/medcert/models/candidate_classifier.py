"""A small 3-D CNN scoring one nodule candidate patch (log-odds that it is a nodule).

With ``context`` > 0 it sees the candidate at two scales: the central ``patch``³ voxels at the grid's resolution
and the whole ``context``³ input averaged down to ``patch``³ (a second tower), so a nodule that fills the fine
patch, against the pleura for example, is still seen with its surroundings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3×3×3 convolutions with batch normalisation and ReLU, then 2× max pooling."""
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
        nn.MaxPool3d(2),
    )


def _tower(cin: int, ch: list[int]) -> nn.ModuleList:
    return nn.ModuleList(_block(c0, c1) for c0, c1 in zip([cin, *ch[:-1]], ch, strict=True))


class CandidateClassifier(nn.Module):
    """Input ``[N, in_channels, S, S, S]`` with ``S = input_size`` (``context`` if set, else ``patch``); blocks
    ``f0..`` (fine tower) and ``c0..`` (context tower) halve ``patch``; output ``[N]`` log-odds."""

    def __init__(self, in_channels: int = 2, channels: list[int] | tuple[int, ...] = (32, 64), patch: int = 16,
                 hidden: int = 64, dropout: float = 0.3, context: int = 0) -> None:
        super().__init__()
        ch = [int(c) for c in channels]
        side = int(patch) // 2 ** len(ch)
        if not ch or any(c < 1 for c in ch) or side < 1 or int(patch) % 2 ** len(ch):
            raise ValueError("the classifier patch must be divisible by 2 per block, with positive channels")
        if int(context) < 0 or int(context) % int(patch) or int(context) == int(patch):
            raise ValueError("the classifier context must be 0 or a multiple (≥ 2) of its patch")
        self.patch, self.context = int(patch), int(context)
        self.input_size = self.context or self.patch
        self.blocks = _tower(int(in_channels), ch)
        self.context_blocks = _tower(int(in_channels), ch) if self.context else nn.ModuleList()
        towers = 2 if self.context else 1
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(float(dropout)),
                                  nn.Linear(towers * ch[-1] * side**3, int(hidden)), nn.ReLU(inplace=True),
                                  nn.Linear(int(hidden), 1))

    def trace_layers(self) -> list[tuple[str, nn.Module]]:
        return ([(f"f{i}", b) for i, b in enumerate(self.blocks)]
                + [(f"c{i}", b) for i, b in enumerate(self.context_blocks)] + [("head", self.head)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = (x.shape[-1] - self.patch) // 2
        fine = x[..., o:o + self.patch, o:o + self.patch, o:o + self.patch]
        for b in self.blocks:
            fine = b(fine)
        if not self.context:
            return self.head(fine)[:, 0]
        coarse = F.avg_pool3d(x, self.context // self.patch)
        for b in self.context_blocks:
            coarse = b(coarse)
        return self.head(torch.cat([fine.flatten(1), coarse.flatten(1)], dim=1))[:, 0]
