"""Preprocessing and postprocessing geometry on oblique and flipped grids, checked against analytic fields.

Trilinear interpolation reproduces a linear field exactly, so a volume whose HU is a linear function of RAS
position must come out of preprocessing with exactly that function on the canonical grid, and logits defined as a
linear function of RAS position must come back onto the input grid with the analytic labels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from medcert.inference.postprocess import to_input_grid
from medcert.inference.preprocess import PreprocessSpec, canonical_grid, preprocess_volume
from medcert.volume import StudyIdentity, Volume


def _rotation(z_deg: float, x_deg: float) -> np.ndarray:
    a, b = math.radians(z_deg), math.radians(x_deg)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return rz @ rx


GRIDS = {
    "oblique": (_rotation(20, 10), (1.5, 1.3, 2.0)),
    "lps-flipped": (np.diag([-1.0, -1.0, 1.0]), (0.9, 0.9, 3.0)),
    "permuted": (np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]), (2.0, 1.0, 1.5)),
}


def _volume(name: str, field) -> Volume:
    rot, spacing = GRIDS[name]
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag(spacing)
    m[:3, 3] = [-20.0, 15.0, -30.0]
    shape = (30, 28, 20)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).astype(np.float64)
    ras = ijk @ m[:3, :3].T + m[:3, 3]
    return Volume(field(ras).astype(np.float32), m, StudyIdentity("nrrd", name))


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_resampled_linear_field_is_exact_on_the_canonical_grid(name: str) -> None:
    def hu(ras: np.ndarray) -> np.ndarray:
        return -600.0 + 4.0 * ras[..., 0] - 3.0 * ras[..., 1] + 2.0 * ras[..., 2]

    vol = _volume(name, hu)
    spec = PreprocessSpec(spacing_mm=2.0, window=(-1000.0, 500.0), midline_channel=False)
    prep = preprocess_volume(vol, spec)
    g = prep.grid_to_ras
    assert np.allclose(g[:3, :3], 2.0 * np.eye(3)), "canonical grid is RAS-aligned at the model spacing"
    shape = prep.tensor.shape[1:]
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).astype(np.float64)
    ras = idx @ g[:3, :3].T + g[:3, 3]
    # Which canonical points lie inside the source grid (interpolation only happens there).
    inv = np.linalg.inv(vol.ijk_to_ras)
    src = ras @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all((src >= 1e-6) & (src <= np.array(vol.shape) - 1 - 1e-6), axis=-1)
    assert inside.sum() > 1000
    expected = (np.clip(hu(ras), -1000.0, 500.0) + 1000.0) / 1500.0
    assert np.max(np.abs(prep.tensor[0][inside] - expected[inside])) < 2e-6
    assert np.all(prep.tensor[0][~np.any((src >= -1e-6) & (src <= np.array(vol.shape) - 1 + 1e-6), axis=-1)] == 0.0)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_logits_come_back_onto_the_input_grid_with_analytic_labels(name: str) -> None:
    vol = _volume(name, lambda ras: np.zeros(ras.shape[:-1]))
    grid, shape = canonical_grid(vol, 2.0)
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).astype(np.float64)
    ras = idx @ grid[:3, :3].T + grid[:3, 3]
    centre = vol.ijk_to_ras[:3, :3] @ (np.array(vol.shape) - 1) / 2 + vol.ijk_to_ras[:3, 3]
    offset = centre[0] - 0.5 * centre[2] + 0.3  # the plane crosses the volume near its centre
    plane = ras[..., 0] - 0.5 * ras[..., 2] - offset  # label 1 where this is positive, else 0
    logits = np.stack([np.zeros(shape), plane, plane - 1e3], axis=0).astype(np.float32)
    out = to_input_grid(logits, grid, vol, anomaly_label=2, margin_tol=1e-3)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in vol.shape), indexing="ij"), axis=-1).astype(np.float64)
    vras = ijk @ vol.ijk_to_ras[:3, :3].T + vol.ijk_to_ras[:3, 3]
    truth = vras[..., 0] - 0.5 * vras[..., 2] - offset
    clear = np.abs(truth) > 1e-3
    assert out.labels.shape == vol.shape
    assert np.array_equal(out.labels[clear], (truth[clear] > 0).astype(np.uint8))
    assert (out.labels == 1).any() and (out.labels == 0).any()
    # Voxels within the margin tolerance of the boundary are exactly the recorded low-margin set.
    flat_truth = np.abs(truth).reshape(-1, order="F")
    assert set(out.low_margin.tolist()) >= set(np.nonzero(flat_truth < 5e-4)[0].tolist())
