"""Sliding-window tiling: deterministic tile order, padding to the patch, Gaussian blending weights."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np


def axis_starts(n: int, p: int, overlap: float) -> list[int]:
    """Tile starts along one axis covering ``n`` voxels with patch ``p`` (last tile flush with the end)."""
    if n <= p:
        return [0]
    stride = max(1, int(p * (1.0 - overlap)))
    starts = list(range(0, n - p, stride))
    starts.append(n - p)
    return sorted(set(starts))


def pad_to_patch(tensor: np.ndarray, patch: tuple[int, int, int]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Edge-pad ``[C, X, Y, Z]`` so each spatial size is at least the patch; returns (padded, original shape)."""
    shape = tensor.shape[1:]
    pads = [(0, 0)] + [(0, max(0, p - n)) for n, p in zip(shape, patch, strict=True)]
    if all(b == 0 for _, b in pads):
        return tensor, tuple(shape)  # type: ignore[return-value]
    return np.pad(tensor, pads, mode="edge"), tuple(shape)  # type: ignore[return-value]


def tiles(shape: tuple[int, int, int], patch: tuple[int, int, int], overlap: float) -> Iterator[tuple[slice, ...]]:
    """Tile slices in a fixed order (x fastest, then y, then z)."""
    starts = [axis_starts(n, p, overlap) for n, p in zip(shape, patch, strict=True)]
    for z, y, x in itertools.product(starts[2], starts[1], starts[0]):
        yield (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))


def gaussian_weights(patch: tuple[int, int, int], sigma_scale: float = 0.125) -> np.ndarray:
    """Separable Gaussian importance map (centre-weighted blending), float32, minimum 1e-3 of the peak."""
    axes = []
    for p in patch:
        c = (p - 1) / 2.0
        x = np.arange(p, dtype=np.float64)
        axes.append(np.exp(-0.5 * ((x - c) / (p * sigma_scale)) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w = w / w.max()
    return np.maximum(w, 1e-3).astype(np.float32)
