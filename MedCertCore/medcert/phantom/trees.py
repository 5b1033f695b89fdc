"""Branching pulmonary vessel and airway trees, grown generation by generation inside each lung."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcert.phantom.anatomy import Anatomy
from medcert.phantom.geometry import Arr

# Lobar root directions (patient frame: +x right, +y anterior, +z superior), per side sign s.
_ARTERY_ROOTS = {
    1: [(0.5, -0.2, 0.85), (0.7, 0.6, -0.2), (0.4, -0.5, -0.75), (0.5, -0.8, 0.1)],
    2: [(-0.5, 0.1, 0.85), (-0.6, 0.7, -0.3), (-0.4, -0.5, -0.75), (-0.5, -0.8, 0.0)],
}
_VEIN_ROOTS = {1: [(0.7, 0.4, -0.5), (0.6, -0.3, -0.8), (0.6, 0.5, 0.5)],
               2: [(-0.7, 0.4, -0.5), (-0.6, -0.3, -0.8), (-0.6, 0.5, 0.5)]}


@dataclass
class Tree:
    """Segments ``[M, 8]`` = p0 (3), p1 (3), r0, r1 and the generation of each segment."""

    segments: Arr
    generation: Arr


def _unit(v: Arr) -> Arr:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _perturb(rng: np.random.Generator, d: Arr, sigma_deg: float) -> Arr:
    return _unit(d + rng.normal(scale=np.radians(sigma_deg), size=d.shape))


def grow_tree(anat: Anatomy, side: int, root: Arr, dirs: Arr, r0: Arr, r_min: float,
              rng: np.random.Generator, max_gen: int = 12) -> Tree:
    """Grow from ``root`` along each direction in ``dirs``; stops where a branch would leave the lung."""
    p = np.repeat(root[None, :], len(dirs), axis=0).astype(np.float64)
    d = _unit(np.asarray(dirs, dtype=np.float64))
    r = np.asarray(r0, dtype=np.float64)
    segs: list[Arr] = []
    gens: list[Arr] = []
    for gen in range(max_gen):
        if len(p) == 0:
            break
        length = np.clip(r * rng.uniform(6.0, 10.0, size=len(r)), 6.0, 40.0)
        if gen == 0:
            length = length + 12.0
        chosen = np.full(len(p), -1)
        q = np.zeros_like(p)
        dd = np.zeros_like(d)
        for attempt in range(4):
            cand = _perturb(rng, d, 8.0 + 14.0 * attempt)
            end = p + cand * length[:, None]
            mid = p + cand * (0.5 * length)[:, None]
            ok = (anat.lung_side_points(end) == side) & (anat.lung_side_points(mid) == side) if gen else (
                anat.lung_side_points(end) == side)
            take = ok & (chosen < 0)
            chosen[take] = attempt
            q[take], dd[take] = end[take], cand[take]
        keep = chosen >= 0
        if not keep.any():
            break
        p, q, dd, r = p[keep], q[keep], dd[keep], r[keep]
        r_end = r * 0.93
        segs.append(np.concatenate([p, q, r[:, None], r_end[:, None]], axis=1))
        gens.append(np.full(len(p), gen))
        # Bifurcate: children rotate away from the parent direction in a random plane.
        perp = _unit(np.cross(dd, rng.normal(size=dd.shape)))
        a1 = np.radians(rng.uniform(15, 40, size=len(p)))[:, None]
        a2 = np.radians(rng.uniform(20, 50, size=len(p)))[:, None]
        out = _unit(q - root)  # bias toward the periphery
        c1 = _unit(np.cos(a1) * dd + np.sin(a1) * perp + 0.35 * out)
        c2 = _unit(np.cos(a2) * dd - np.sin(a2) * perp + 0.35 * out)
        r1 = r_end * rng.uniform(0.82, 0.92, size=len(p))
        r2 = r_end * rng.uniform(0.62, 0.82, size=len(p))
        p = np.concatenate([q, q])
        d = np.concatenate([c1, c2])
        r = np.concatenate([r1, r2])
        alive = r >= r_min
        p, d, r = p[alive], d[alive], r[alive]
    if not segs:
        return Tree(np.zeros((0, 8)), np.zeros(0, dtype=int))
    return Tree(np.concatenate(segs), np.concatenate(gens))


def lung_trees(anat: Anatomy, r_min: float, rng: np.random.Generator) -> dict[str, list[Tree]]:
    """Arteries (with companion bronchi) and veins for both lungs."""
    out: dict[str, list[Tree]] = {"arteries": [], "veins": []}
    for side in (1, 2):
        hil = anat.hila[side]
        dirs = np.array(_ARTERY_ROOTS[side], dtype=np.float64)
        out["arteries"].append(grow_tree(anat, side, hil, dirs, rng.uniform(4.0, 5.5, size=len(dirs)), r_min, rng))
        vdirs = np.array(_VEIN_ROOTS[side], dtype=np.float64)
        out["veins"].append(grow_tree(anat, side, anat.veins_hilar[side], vdirs,
                                      rng.uniform(4.0, 5.5, size=len(vdirs)), r_min, rng))
    return out
