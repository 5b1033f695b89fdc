"""Nodule placement: inside a lung (clear of the pleura), or attached to the chest wall (juxtapleural)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medcert.phantom.anatomy import Anatomy
from medcert.phantom.geometry import Arr


@dataclass
class PlacedNodule:
    center: Arr  # patient frame, mm
    diameter: float
    kind: str
    side: int
    hu_solid: float
    hu_ggo: float
    core_frac: float  # radius fraction of the solid core (part-solid / ground-glass)
    lobes: Arr  # [2, 3] unit vectors modulating the radius
    lobe_amp: float


def _sphere_dirs(n: int) -> Arr:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    th = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(th) * np.sin(phi), np.sin(th) * np.sin(phi), np.cos(phi)], axis=1)


_DIRS = _sphere_dirs(26)


def _bbox_points(anat: Anatomy) -> tuple[Arr, Arr]:
    a, b = anat.p["cav_a"], anat.p["cav_b"]
    lo = np.array([-a, anat.yc - b, min(anat.p["dome"]) - anat.p["recess_max"]])
    hi = np.array([a, anat.yc + b, anat.apex_max])
    return lo, hi


def place_nodules(anat: Anatomy, plan: dict[str, Any], rng: np.random.Generator) -> list[PlacedNodule]:
    lo, hi = _bbox_points(anat)
    out: list[PlacedNodule] = []
    for diam, kind in zip(plan["diameters"], plan["kinds"], strict=True):
        r = 0.5 * diam
        placed = None
        for _ in range(60):
            cand = lo + (hi - lo) * rng.uniform(size=(64, 3))
            side = anat.lung_side_points(cand)
            cand, side = cand[side > 0], side[side > 0]
            if not len(cand):
                continue
            if kind == "juxtapleural":
                placed = _juxtapleural(anat, cand[0], int(side[0]), r, rng)
            else:
                # Clear of the pleura and of other nodules by 2 mm.
                for c, s in zip(cand, side, strict=True):
                    shell = c + _DIRS * (r + 2.0)
                    if np.all(anat.lung_side_points(shell) == s) and all(
                            np.linalg.norm(c - o.center) > r + 0.5 * o.diameter + 3 for o in out):
                        placed = (c, int(s))
                        break
            if placed is not None:
                break
        if placed is None:
            continue
        c, s = placed
        ggo = kind in ("part-solid", "ground-glass")
        lob = np.stack([_unit(rng.normal(size=3)), _unit(rng.normal(size=3))])
        out.append(PlacedNodule(center=c, diameter=float(diam), kind=kind, side=s,
                                hu_solid=float(rng.uniform(-10, 60)), hu_ggo=float(rng.uniform(-620, -420)),
                                core_frac=(float(rng.uniform(0.3, 0.6)) if kind == "part-solid" else
                                           float(rng.uniform(0.0, 0.25)) if ggo else 1.0),
                                lobes=lob, lobe_amp=float(rng.uniform(0.0, 0.18))))
    return out


def _unit(v: Arr) -> Arr:
    return v / np.linalg.norm(v)


def _juxtapleural(anat: Anatomy, start: Arr, side: int, r: float, rng: np.random.Generator) -> tuple[Arr, int] | None:
    """March from ``start`` toward the lateral/posterior/anterior chest wall; centre 0.4 r inside the pleura."""
    s = 1.0 if side == 1 else -1.0
    for _ in range(8):
        d = _unit(np.array([s * rng.uniform(0.3, 1.0), rng.uniform(-1, 1), rng.uniform(-0.3, 0.3)]))
        steps = start + d * np.arange(0, 250, 1.0)[:, None]
        inside = anat.lung_side_points(steps) == side
        if inside.all() or not inside[0]:
            continue
        exit_at = int(np.argmin(inside))
        c = steps[exit_at] - d * (0.4 * r + 0.5)
        # Mostly inside the lung: at least 60 % of the probe directions.
        if np.mean(anat.lung_side_points(c + _DIRS * r) == side) >= 0.5 and anat.lung_side_points(c[None])[0] == side:
            return c, side
    return None
