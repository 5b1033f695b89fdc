"""Orientation variants: the voxel array is flipped/permuted (and optionally tilted) with ``ijk_to_ras``
updated so that the anatomy stays where it is in RAS."""

from __future__ import annotations

from typing import Any

import numpy as np

from medcert.phantom.geometry import Arr, rotation


def scanner_to_ras(orient: dict[str, Any]) -> Arr:
    """4×4 from the scanner frame to RAS: oblique tilt, then a table/origin shift."""
    m = np.eye(4)
    if orient.get("oblique_deg"):
        m[:3, :3] = rotation(orient["oblique_axis"], np.radians(orient["oblique_deg"]))
    m[:3, 3] = orient["origin_shift"]
    return m


def reorient(arrays: list[Arr], ijk_to_ras: Arr, perm: list[int], flip: list[bool]) -> tuple[list[Arr], Arr]:
    """Flip then permute the array axes; returns the new arrays and the matching ``ijk_to_ras``."""
    m = np.array(ijk_to_ras, dtype=np.float64)
    out = list(arrays)
    shape = arrays[0].shape
    for a in range(3):
        if flip[a]:
            out = [np.flip(v, axis=a) for v in out]
            m[:, 3] += m[:, a] * (shape[a] - 1)
            m[:, a] = -m[:, a]
    out = [np.ascontiguousarray(np.transpose(v, perm)) for v in out]
    m[:, :3] = m[:, perm]
    return out, m
