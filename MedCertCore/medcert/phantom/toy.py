"""A tiny chest-like CT for self-tests and unit tests (instant; the full generator is ``generate_chest_ct``)."""

from __future__ import annotations

import numpy as np


def toy_chest_ct(shape: tuple[int, int, int] = (64, 56, 24), spacing: tuple[float, float, float] = (2.5, 2.5, 4.0),
                 seed: int = 3, margin: int = 3, blob_r2: float = 9.0) -> tuple[np.ndarray, np.ndarray]:
    """Body, two air-filled lungs and one dense blob in HU (int16 ``[i, j, k]``) and an LPS-like IJK→RAS matrix."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    ci, cj = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    body = ((i - ci) / (0.45 * shape[0])) ** 2 + ((j - cj) / (0.4 * shape[1])) ** 2 < 1
    hu = np.where(body, 40.0, -1000.0)
    for side in (-1, 1):
        lung = ((i - ci - side * 0.2 * shape[0]) / (0.15 * shape[0])) ** 2 + ((j - cj) / (0.28 * shape[1])) ** 2 < 1
        hu = np.where(lung & (k > margin - 1) & (k < shape[2] - margin), -850.0, hu)
    blob = (i - ci - 0.2 * shape[0]) ** 2 + (j - cj) ** 2 + ((k - shape[2] / 2) * 1.6) ** 2 < blob_r2
    hu = np.where(blob, 30.0, hu) + rng.normal(0, 15, size=shape)
    m = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    m[:3, 3] = [shape[0] * spacing[0] / 2, shape[1] * spacing[1] / 2, -shape[2] * spacing[2] / 2]
    return np.rint(hu).astype(np.int16), m
