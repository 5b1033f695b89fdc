"""Reproducible preprocessing: reorient + resample to an RAS-aligned grid, intensity window, midline channel.

The model-input digest is an exact hash, so this code must give bit-identical float32 output on every
machine. It therefore uses only IEEE elementwise operations in a fixed order (no BLAS, no floating-point
reductions whose order depends on SIMD width) and computes matrix inverses in plain Python floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medcert.errors import InputError
from medcert.volume import Volume

PAD_HU = -1024.0
BODY_HU = -500.0
MAX_GRID_VOXELS = 64 * 1024 * 1024


@dataclass(frozen=True)
class PreprocessSpec:
    """What the model expects. Stored in the weights metadata (``medcert.adapter``) and the certificate."""

    spacing_mm: float = 2.0
    window: tuple[float, float] = (-1000.0, 500.0)
    midline_channel: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"spacing_mm": float(self.spacing_mm), "window": [float(w) for w in self.window],
                "midline_channel": bool(self.midline_channel)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PreprocessSpec:
        spacing = float(obj["spacing_mm"])
        lo, hi = (float(v) for v in obj["window"])
        if not (0.1 <= spacing <= 20.0) or not lo < hi:
            raise ValueError("invalid preprocessing spec")
        return cls(spacing_mm=spacing, window=(lo, hi), midline_channel=bool(obj.get("midline_channel", False)))


@dataclass
class Preprocessed:
    """Model input on the canonical grid: ``tensor`` float32 ``[C, X, Y, Z]`` and its geometry."""

    tensor: np.ndarray
    grid_to_ras: np.ndarray
    steps: list[dict[str, Any]] = field(default_factory=list)


def inverse_affine(m: np.ndarray) -> list[list[float]]:
    """Inverse of a 4×4 affine (last row 0 0 0 1) in Python floats: same bits on every machine."""
    a = [[float(m[r][c]) for c in range(3)] for r in range(3)]
    t = [float(m[r][3]) for r in range(3)]
    c00 = a[1][1] * a[2][2] - a[1][2] * a[2][1]
    c01 = a[1][2] * a[2][0] - a[1][0] * a[2][2]
    c02 = a[1][0] * a[2][1] - a[1][1] * a[2][0]
    det = a[0][0] * c00 + a[0][1] * c01 + a[0][2] * c02
    if not math.isfinite(det) or abs(det) < 1e-12:
        raise InputError("volume geometry is singular (zero spacing or degenerate axes)")
    inv = [
        [c00 / det, (a[0][2] * a[2][1] - a[0][1] * a[2][2]) / det, (a[0][1] * a[1][2] - a[0][2] * a[1][1]) / det],
        [c01 / det, (a[0][0] * a[2][2] - a[0][2] * a[2][0]) / det, (a[0][2] * a[1][0] - a[0][0] * a[1][2]) / det],
        [c02 / det, (a[0][1] * a[2][0] - a[0][0] * a[2][1]) / det, (a[0][0] * a[1][1] - a[0][1] * a[1][0]) / det],
    ]
    out = [[*row, -(row[0] * t[0] + row[1] * t[1] + row[2] * t[2])] for row in inv]
    return [*out, [0.0, 0.0, 0.0, 1.0]]


def matmul4(a: Any, b: Any) -> list[list[float]]:
    """4×4 product in Python floats (fixed operation order)."""
    return [[float(a[r][0]) * float(b[0][c]) + float(a[r][1]) * float(b[1][c])
             + float(a[r][2]) * float(b[2][c]) + float(a[r][3]) * float(b[3][c]) for c in range(4)]
            for r in range(4)]


def canonical_grid(volume: Volume, spacing: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """RAS-aligned grid covering the volume's voxel centres at ``spacing`` mm: (grid_to_ras, shape)."""
    m = volume.ijk_to_ras
    ni, nj, nk = volume.shape
    corners = [[float(m[r][0]) * i + float(m[r][1]) * j + float(m[r][2]) * k + float(m[r][3]) for r in range(3)]
               for i in (0, ni - 1) for j in (0, nj - 1) for k in (0, nk - 1)]
    lo = [min(c[r] for c in corners) for r in range(3)]
    hi = [max(c[r] for c in corners) for r in range(3)]
    # ceil: the last grid point reaches (or passes) the far corner, so every input voxel centre is covered.
    shape = tuple(math.ceil((hi[r] - lo[r]) / spacing - 1e-6) + 1 for r in range(3))
    if math.prod(shape) > MAX_GRID_VOXELS:
        raise InputError(f"volume spans {shape} voxels at {spacing} mm; too large for this model")
    g = np.array([[spacing, 0, 0, lo[0]], [0, spacing, 0, lo[1]], [0, 0, spacing, lo[2]], [0, 0, 0, 1]],
                 dtype=np.float64)
    return g, shape  # type: ignore[return-value]


def _index_coords(m: list[list[float]], shape: tuple[int, int, int], k0: int, k1: int) -> list[np.ndarray]:
    """Continuous source indices of grid points ``[:, :, k0:k1]`` under affine ``m``, elementwise only."""
    x = np.arange(shape[0], dtype=np.float64)[:, None, None]
    y = np.arange(shape[1], dtype=np.float64)[None, :, None]
    z = np.arange(k0, k1, dtype=np.float64)[None, None, :]
    return [((m[r][0] * x + m[r][1] * y) + m[r][2] * z) + m[r][3] for r in range(3)]


def trilinear(src: np.ndarray, coords: list[np.ndarray], pad: float) -> np.ndarray:
    """Trilinear sample of ``src`` [i,j,k] at continuous ``coords`` (fixed summation order), float64."""
    out_shape = np.broadcast_shapes(*(c.shape for c in coords))
    ci = [np.broadcast_to(c, out_shape) for c in coords]
    f = [np.floor(c) for c in ci]
    w = [c - fl for c, fl in zip(ci, f, strict=True)]
    i0 = [fl.astype(np.int64) for fl in f]
    n = src.shape
    inside = np.ones(out_shape, dtype=bool)
    for a in range(3):
        inside &= (ci[a] >= 0) & (ci[a] <= n[a] - 1)
    acc = np.zeros(out_shape, dtype=np.float64)
    for di in (0, 1):
        for dj in (0, 1):
            for dk in (0, 1):
                ii = np.clip(i0[0] + di, 0, n[0] - 1)
                jj = np.clip(i0[1] + dj, 0, n[1] - 1)
                kk = np.clip(i0[2] + dk, 0, n[2] - 1)
                wt = ((w[0] if di else 1.0 - w[0]) * (w[1] if dj else 1.0 - w[1])) * (w[2] if dk else 1.0 - w[2])
                acc = acc + wt * src[ii, jj, kk]
    return np.where(inside, acc, pad)


def _box_prefilter(vox: np.ndarray, volume: Volume, spacing: float) -> tuple[np.ndarray, list[int]]:
    """Average along axes that are downsampled by ≥ 2 (odd box, shifted adds in fixed order)."""
    out = vox.astype(np.float64)
    widths = []
    for axis, s in enumerate(volume.spacing):
        width = int(spacing / s)
        width = width if width % 2 == 1 else width - 1
        widths.append(max(width, 1))
        if width < 3:
            continue
        half = width // 2
        padded = np.pad(out, [(half, half) if a == axis else (0, 0) for a in range(3)], mode="edge")
        acc = np.zeros_like(out)
        for off in range(width):
            sl = [slice(None)] * 3
            sl[axis] = slice(off, off + out.shape[axis])
            acc = acc + padded[tuple(sl)]
        out = acc / float(width)
    return out, widths


def preprocess_volume(volume: Volume, spec: PreprocessSpec) -> Preprocessed:
    """Volume → model tensor on the canonical RAS grid; every step and parameter is recorded."""
    grid, shape = canonical_grid(volume, spec.spacing_mm)
    src, widths = _box_prefilter(np.asarray(volume.voxels), volume, spec.spacing_mm)
    to_src = matmul4(inverse_affine(volume.ijk_to_ras), grid)
    hu = np.empty(shape, dtype=np.float64)
    step = max(1, (4 * 1024 * 1024) // (shape[0] * shape[1]))
    for k0 in range(0, shape[2], step):
        k1 = min(shape[2], k0 + step)
        hu[:, :, k0:k1] = trilinear(src, _index_coords(to_src, shape, k0, k1), PAD_HU)
    lo, hi = spec.window
    channels = [((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)]
    steps: list[dict[str, Any]] = [
        {"op": "box_prefilter", "widths": widths},
        {"op": "reorient_resample", "grid": "RAS", "spacing_mm": float(spec.spacing_mm),
         "interpolation": "trilinear", "pad_hu": PAD_HU, "shape": list(shape)},
        {"op": "window", "lo": float(lo), "hi": float(hi), "range": [0.0, 1.0]},
    ]
    if spec.midline_channel:
        midline = body_midline_index(hu)
        scale = spec.spacing_mm / 100.0
        x = (np.arange(shape[0], dtype=np.float64) - float(midline)) * scale
        channels.append(np.broadcast_to(x[:, None, None], shape).astype(np.float32))
        steps.append({"op": "midline_channel", "body_hu": BODY_HU, "midline_index": float(midline),
                      "unit_mm": 100.0})
    tensor = np.stack(channels, axis=0)
    return Preprocessed(tensor=np.ascontiguousarray(tensor), grid_to_ras=grid, steps=steps)


def body_midline_index(hu: np.ndarray) -> float:
    """Median x index of voxels denser than air/lung (an order statistic: exact on every machine)."""
    xs = np.nonzero(hu > BODY_HU)[0]
    if xs.size == 0:
        return (hu.shape[0] - 1) / 2.0
    return float(np.median(xs))


def labels_to_grid(labels: np.ndarray, ijk_to_ras: np.ndarray, prep: Preprocessed) -> np.ndarray:
    """Nearest-neighbour resampling of a labelmap ``[i,j,k]`` onto the canonical grid (training targets)."""
    shape = prep.tensor.shape[1:]
    to_src = matmul4(inverse_affine(ijk_to_ras), prep.grid_to_ras)
    coords = _index_coords(to_src, shape, 0, shape[2])
    idx = [np.rint(c).astype(np.int64) for c in coords]
    idx = [np.broadcast_to(c, shape) for c in idx]
    inside = np.ones(shape, dtype=bool)
    for a in range(3):
        inside &= (idx[a] >= 0) & (idx[a] < labels.shape[a])
    clipped = [np.clip(idx[a], 0, labels.shape[a] - 1) for a in range(3)]
    return np.where(inside, labels[clipped[0], clipped[1], clipped[2]], 0).astype(np.uint8)


def grid_to_source_coords(volume: Volume, prep_grid_to_ras: np.ndarray, k0: int, k1: int) -> list[np.ndarray]:
    """Continuous canonical-grid indices of the volume's voxels ``[:, :, k0:k1]`` (for postprocessing)."""
    m = matmul4(inverse_affine(prep_grid_to_ras), volume.ijk_to_ras)
    return _index_coords(m, volume.shape, k0, k1)
