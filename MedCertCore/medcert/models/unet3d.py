"""A small 3-D U-Net (architecture id ``medcert.unet3d/1``)."""

from __future__ import annotations

import torch
from torch import nn

NORMS = {"instance": lambda c: nn.InstanceNorm3d(c, affine=True), "batch": nn.BatchNorm3d}


class ConvBlock(nn.Sequential):
    """Two 3×3×3 convolutions, each with normalisation and LeakyReLU.

    ``norm="instance"`` normalises per tile (statistics depend on the tile); ``norm="batch"`` uses the running
    statistics learnt in training at inference, so the output does not depend on the tile size or position.
    """

    def __init__(self, cin: int, cout: int, norm: str = "instance") -> None:
        make = NORMS[norm]
        super().__init__(
            nn.Conv3d(cin, cout, 3, padding=1, bias=False),
            make(cout),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False),
            make(cout),
            nn.LeakyReLU(0.01, inplace=True),
        )


class UpBlock(nn.Module):
    """Transposed-conv upsampling, skip concatenation, conv block."""

    def __init__(self, cin: int, cskip: int, cout: int, norm: str = "instance") -> None:
        super().__init__()
        self.up = nn.ConvTranspose3d(cin, cout, 2, stride=2)
        self.block = ConvBlock(cout + cskip, cout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class UNet3D(nn.Module):
    """Encoder ``enc0..encN`` (the last is the bottleneck), decoder ``dec{N-1}..dec0``, 1×1×1 ``head``.

    Input ``(B, in_channels, D, H, W)`` with D, H, W divisible by ``2**(len(channels)-1)``; output logits
    ``(B, n_classes, D, H, W)``.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 4,
                 channels: list[int] | tuple[int, ...] = (8, 16, 32, 64), norm: str = "instance") -> None:
        super().__init__()
        ch = [int(c) for c in channels]
        if len(ch) < 2 or any(c < 1 for c in ch):
            raise ValueError("channels needs at least two positive entries")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}")
        self.depth = len(ch) - 1
        self.encoders = nn.ModuleList([ConvBlock(int(in_channels), ch[0], norm)])
        self.encoders.extend(ConvBlock(ch[i - 1], ch[i], norm) for i in range(1, len(ch)))
        self.pool = nn.MaxPool3d(2)
        self.decoders = nn.ModuleList(UpBlock(ch[i + 1], ch[i], ch[i], norm) for i in reversed(range(self.depth)))
        self.head = nn.Conv3d(ch[0], int(n_classes), 1)

    def divisor(self) -> int:
        return 2 ** self.depth

    def trace_layers(self) -> list[tuple[str, nn.Module]]:
        """Every block output, encoder to head: these are fingerprinted."""
        layers = [(f"enc{i}", m) for i, m in enumerate(self.encoders)]
        layers += [(f"dec{self.depth - 1 - i}", m) for i, m in enumerate(self.decoders)]
        layers.append(("head", self.head))
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for dec in self.decoders:
            x = dec(x, skips.pop())
        return self.head(x)
