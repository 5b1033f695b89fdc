"""A small 3-D CNN scoring one nodule candidate patch (log-odds that it is a nodule)."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3×3×3 convolutions with batch normalisation and ReLU, then 2× max pooling."""
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
        nn.MaxPool3d(2),
    )


class CandidateClassifier(nn.Module):
    """Input ``[N, in_channels, patch, patch, patch]``; blocks ``f0..`` halve the patch; output ``[N]`` log-odds."""

    def __init__(self, in_channels: int = 2, channels: list[int] | tuple[int, ...] = (32, 64), patch: int = 16,
                 hidden: int = 64, dropout: float = 0.3) -> None:
        super().__init__()
        ch = [int(c) for c in channels]
        side = int(patch) // 2 ** len(ch)
        if not ch or any(c < 1 for c in ch) or side < 1 or int(patch) % 2 ** len(ch):
            raise ValueError("the classifier patch must be divisible by 2 per block, with positive channels")
        self.patch = int(patch)
        self.blocks = nn.ModuleList(_block(c0, c1) for c0, c1 in zip([int(in_channels), *ch[:-1]], ch, strict=True))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(float(dropout)), nn.Linear(ch[-1] * side**3, int(hidden)),
                                  nn.ReLU(inplace=True), nn.Linear(int(hidden), 1))

    def trace_layers(self) -> list[tuple[str, nn.Module]]:
        return [(f"f{i}", b) for i, b in enumerate(self.blocks)] + [("head", self.head)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)[:, 0]
