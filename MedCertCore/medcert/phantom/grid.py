"""The acquisition grid: scanner-aligned voxels, patient rotated by ``yaw`` about z, sub-sampled slabs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medcert.phantom.geometry import Arr


class Grid:
    """Voxel centres of the generation grid. Index ``(i, j, kf)`` with ``kf`` on the fine (sub-slice) z grid.

    Scanner frame ``g``: i → +x, j → +y, k → +z. Patient frame ``p = Rz(-yaw) g``.
    """

    def __init__(self, acq: dict[str, Any]) -> None:
        s, t = float(acq["spacing_xy"]), float(acq["thickness"])
        n = max(16, round(float(acq["fov_mm"]) / s))
        self.nx = self.ny = n
        self.s, self.t = s, t
        # Sub-slices per slab (odd: the middle one is the slice centre, where labels are taken).
        self.nsub = 1 if t <= 3.0 else 3 if t <= 7.5 else 5
        self.nz = max(1, math.floor((acq["z_top"] - acq["z_bottom"]) / t) + 1)
        self.z0 = float(acq["z_bottom"])
        self.dzf = t / self.nsub
        self.zf = (self.z0 - t / 2 + (np.arange(self.nz * self.nsub) + 0.5) * self.dzf).astype(np.float32)
        cx, cy = acq["fov_center"]
        self.gx0 = cx - (n - 1) / 2 * s
        self.gy0 = cy - (n - 1) / 2 * s
        gx = self.gx0 + np.arange(n) * s
        gy = self.gy0 + np.arange(n) * s
        self.GX, self.GY = np.meshgrid(gx, gy, indexing="ij")
        yaw = math.radians(float(acq["yaw_deg"]))
        self.c, self.sn = math.cos(yaw), math.sin(yaw)
        self.PX = (self.c * self.GX + self.sn * self.GY).astype(np.float32)
        self.PY = (-self.sn * self.GX + self.c * self.GY).astype(np.float32)

    @property
    def fine_shape(self) -> tuple[int, int, int]:
        return self.nx, self.ny, len(self.zf)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.nx, self.ny, self.nz

    def affine(self) -> Arr:
        """Output voxel index (coarse k) → scanner frame millimetres."""
        return np.array([[self.s, 0, 0, self.gx0], [0, self.s, 0, self.gy0], [0, 0, self.t, self.z0], [0, 0, 0, 1.0]])

    def patient_to_scanner(self) -> Arr:
        r = np.eye(4)
        r[:2, :2] = [[self.c, -self.sn], [self.sn, self.c]]
        return r

    def box(self, lo: Arr, hi: Arr) -> tuple[slice, slice, slice] | None:
        """Index slices covering the patient-frame axis-aligned box ``[lo, hi]`` (None if empty)."""
        xs = np.array([lo[0], hi[0], lo[0], hi[0]])
        ys = np.array([lo[1], lo[1], hi[1], hi[1]])
        gx = self.c * xs - self.sn * ys
        gy = self.sn * xs + self.c * ys
        i0 = max(0, math.floor((gx.min() - self.gx0) / self.s))
        i1 = min(self.nx, math.ceil((gx.max() - self.gx0) / self.s) + 1)
        j0 = max(0, math.floor((gy.min() - self.gy0) / self.s))
        j1 = min(self.ny, math.ceil((gy.max() - self.gy0) / self.s) + 1)
        k0 = int(np.searchsorted(self.zf, lo[2]))
        k1 = int(np.searchsorted(self.zf, hi[2], side="right"))
        if i0 >= i1 or j0 >= j1 or k0 >= k1:
            return None
        return slice(i0, i1), slice(j0, j1), slice(k0, k1)

    def block(self, sl: tuple[slice, slice, slice]) -> tuple[Arr, Arr, Arr]:
        """Patient coordinates of a block, broadcastable: ``[a, b, 1]``, ``[a, b, 1]``, ``[1, 1, c]``."""
        return (self.PX[sl[0], sl[1]][:, :, None], self.PY[sl[0], sl[1]][:, :, None],
                self.zf[sl[2]][None, None, :])

    def to_index(self, pts: Arr) -> Arr:
        """Continuous fine-grid indices ``[N, 3]`` of patient-frame points."""
        gx = self.c * pts[:, 0] - self.sn * pts[:, 1]
        gy = self.sn * pts[:, 0] + self.c * pts[:, 1]
        return np.stack([(gx - self.gx0) / self.s, (gy - self.gy0) / self.s,
                         (pts[:, 2] - float(self.zf[0])) / self.dzf], axis=1)

    def splat(self, segs: Arr) -> Arr:
        """Flat C-order fine-grid indices of voxels within any tapered segment ``[M, 8]`` (p0, p1, r0, r1)."""
        if len(segs) == 0:
            return np.zeros(0, dtype=np.int64)
        p0, p1, r0, r1 = segs[:, 0:3], segs[:, 3:6], segs[:, 6], segs[:, 7]
        length = np.linalg.norm(p1 - p0, axis=1)
        # Sample spacing: fine for thin tubes, about r/2 for thick ones (ridge height below r/32).
        step = np.maximum(0.5 * min(self.s, self.dzf), 0.5 * np.minimum(r0, r1))
        n = np.maximum(1, np.ceil(length / step)).astype(np.int64)
        seg = np.repeat(np.arange(len(segs)), n)
        start = np.repeat(np.cumsum(n) - n, n)
        t = ((np.arange(n.sum()) - start) + 0.5) / n[seg]
        pts = p0[seg] + t[:, None] * (p1 - p0)[seg]
        rad = r0[seg] + t * (r1 - r0)[seg]
        ci = self.to_index(pts)
        vox = np.array([self.s, self.s, self.dzf])
        kx = np.ceil(rad / self.s).astype(np.int64)
        kz = np.ceil(rad / self.dzf).astype(np.int64)
        key = kx * 10000 + kz
        shape = self.fine_shape
        out: list[Arr] = []
        for kv in np.unique(key):
            sel = key == kv
            ax, az = int(kv // 10000), int(kv % 10000)
            o = np.stack(np.meshgrid(np.arange(-ax, ax + 1), np.arange(-ax, ax + 1), np.arange(-az, az + 1),
                                     indexing="ij"), axis=-1).reshape(-1, 3)
            reach = max(ax * self.s, az * self.dzf) + 0.5 * float(np.linalg.norm(vox))
            o = o[((o * vox) ** 2).sum(axis=1) <= reach * reach]
            c, r = ci[sel], rad[sel]
            base = np.rint(c).astype(np.int64)
            chunk = max(1, 2_000_000 // len(o))
            for a in range(0, len(c), chunk):
                cand = base[a:a + chunk, None, :] + o[None, :, :]
                d = (cand - c[a:a + chunk, None, :]) * vox
                ok = (d * d).sum(axis=2) <= (r[a:a + chunk, None] ** 2)
                ok &= np.all((cand >= 0) & (cand < np.array(shape)), axis=2)
                v = cand[ok]
                out.append((v[:, 0] * shape[1] + v[:, 1]) * shape[2] + v[:, 2])
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
