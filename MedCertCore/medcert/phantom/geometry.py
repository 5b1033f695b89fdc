"""Geometric primitives evaluated on broadcastable coordinate arrays (patient frame, millimetres).

Patient frame: x toward the patient's right, y anterior, z superior (RAS directions), origin on the body
midline at the level of the carina.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Arr = np.ndarray


def smoothstep(e0: float, e1: float, x: Arr | float) -> Arr:
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def rotation(axis: Arr, angle: float) -> Arr:
    """Rodrigues rotation matrix about ``axis`` by ``angle`` radians."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


@dataclass
class Capsule:
    """Tube from ``p0`` to ``p1`` with radius tapering linearly from ``r0`` to ``r1``."""

    p0: Arr
    p1: Arr
    r0: float
    r1: float

    def aabb(self, margin: float = 0.0) -> tuple[Arr, Arr]:
        r = max(self.r0, self.r1) + margin
        return np.minimum(self.p0, self.p1) - r, np.maximum(self.p0, self.p1) + r

    def inside(self, x: Arr, y: Arr, z: Arr, margin: float = 0.0) -> Arr:
        d = self.p1 - self.p0
        l2 = float(d @ d) or 1e-9
        dx, dy, dz = x - self.p0[0], y - self.p0[1], z - self.p0[2]
        t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) / l2, 0.0, 1.0)
        ex, ey, ez = dx - t * d[0], dy - t * d[1], dz - t * d[2]
        r = self.r0 + t * (self.r1 - self.r0) + margin
        return ex * ex + ey * ey + ez * ez <= r * r


@dataclass
class Ellipsoid:
    """Ellipsoid with centre ``c``, semi-axes ``radii`` along the columns of rotation ``rot``."""

    c: Arr
    radii: Arr
    rot: Arr

    def aabb(self, margin: float = 0.0) -> tuple[Arr, Arr]:
        ext = np.sqrt(((self.rot * (self.radii + margin)) ** 2).sum(axis=1))
        return self.c - ext, self.c + ext

    def ratio2(self, x: Arr, y: Arr, z: Arr, margin: float = 0.0) -> Arr:
        dx, dy, dz = x - self.c[0], y - self.c[1], z - self.c[2]
        q = 0.0
        for a in range(3):
            u = (dx * self.rot[0, a] + dy * self.rot[1, a] + dz * self.rot[2, a]) / (self.radii[a] + margin)
            q = q + u * u
        return q

    def inside(self, x: Arr, y: Arr, z: Arr, margin: float = 0.0) -> Arr:
        return self.ratio2(x, y, z, margin) <= 1.0


@dataclass
class Box:
    """Axis-aligned rounded box (superellipse in x/y, flat in z) used for vertebrae and the sternum."""

    c: Arr
    half: Arr  # half extents x, y, z

    def aabb(self, margin: float = 0.0) -> tuple[Arr, Arr]:
        return self.c - self.half - margin, self.c + self.half + margin

    def inside(self, x: Arr, y: Arr, z: Arr, margin: float = 0.0) -> Arr:
        u = (x - self.c[0]) / (self.half[0] + margin)
        v = (y - self.c[1]) / (self.half[1] + margin)
        u2, v2 = u * u, v * v
        return (u2 * u2 + v2 * v2 <= 1.0) & (np.abs(z - self.c[2]) <= self.half[2] + margin)


class SeparableField:
    """Smooth random field ``sum_k a_k cos(kx x + ky y + p_k) cos(kz z + q_k)``: cheap on grids (one matmul)."""

    def __init__(self, rng: np.random.Generator, n: int, wavelength: tuple[float, float], amplitude: float):
        lam = rng.uniform(wavelength[0], wavelength[1], size=(n, 3))
        sign = rng.choice([-1.0, 1.0], size=(n, 3))
        self.k = 2 * np.pi / lam * sign
        self.p = rng.uniform(0, 2 * np.pi, size=(n, 2))
        self.a = rng.uniform(0.5, 1.0, size=n) * amplitude / np.sqrt(n)

    def xy(self, x: Arr, y: Arr) -> Arr:
        """``[..., K]`` in-plane factors (amplitude folded in)."""
        return self.a * np.cos(x[..., None] * self.k[:, 0] + y[..., None] * self.k[:, 1] + self.p[:, 0])

    def z(self, z: Arr) -> Arr:
        return np.cos(np.asarray(z)[..., None] * self.k[:, 2] + self.p[:, 1])

    def grid(self, x2: Arr, y2: Arr, z1: Arr) -> Arr:
        """Field on a block: ``x2``, ``y2`` are ``[nx, ny]``, ``z1`` is ``[nz]``; float32 ``[nx, ny, nz]``."""
        a = self.xy(x2, y2).astype(np.float32)
        b = self.z(z1).astype(np.float32)
        return (a.reshape(-1, a.shape[-1]) @ b.T).reshape(*x2.shape, len(z1))

    def points(self, x: Arr, y: Arr, z: Arr) -> Arr:
        return (self.xy(x, y) * self.z(z)).sum(axis=-1)
