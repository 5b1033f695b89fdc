"""Deterministic chest anatomy from the sampled parameters: shape functions and mediastinal primitives.

Everything here is in the patient frame (see ``geometry``). Lungs are the thoracic cavity minus the
mediastinum, the spine block and the mediastinal organs, above the diaphragm domes and below the apices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medcert.phantom.geometry import Arr, Box, Capsule, Ellipsoid, SeparableField, rotation, smoothstep

EXCLUSION_MARGIN = 1.5


def _polyline(points: list[Arr], radii: list[float]) -> list[Capsule]:
    """Capsules through a Catmull-Rom spline of the control points (smooth tubes such as the aorta)."""
    pts = [np.asarray(p, dtype=np.float64) for p in points]
    ext = [2 * pts[0] - pts[1], *pts, 2 * pts[-1] - pts[-2]]
    out: list[Arr] = []
    rad: list[float] = []
    for s in range(len(pts) - 1):
        p0, p1, p2, p3 = ext[s], ext[s + 1], ext[s + 2], ext[s + 3]
        for t in np.linspace(0, 1, 4, endpoint=False):
            out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
            rad.append(radii[s] + (radii[s + 1] - radii[s]) * t)
    out.append(pts[-1])
    rad.append(radii[-1])
    return [Capsule(out[i], out[i + 1], rad[i], rad[i + 1]) for i in range(len(out) - 1)]


class Anatomy:
    """Shape functions (vectorised over broadcastable x, y, z arrays) and organ primitives."""

    def __init__(self, p: dict[str, Any], z_top: float, z_bottom: float) -> None:
        self.p = p
        self.z_top, self.z_bottom = z_top, z_bottom
        rng = np.random.default_rng(p["field_seed"])
        self.pert = SeparableField(rng, 4, (60.0, 160.0), 0.05)
        self.texture = SeparableField(rng, 8, (6.0, 24.0), 1.0)
        self.apex_max = max(p["apex"])
        self.yc = p["cav_yc"]
        self.xm_mid = 0.5 * (p["xm_low"] + p["xm_up"])
        vb_rx, vb_ry = p["vb_r"]
        self.yv = self.yc - p["cav_b"] + 0.6 * vb_ry  # vertebral body centre
        self.y_front = self.yv + vb_ry  # anterior edge of the vertebral bodies
        self.spine_hw = vb_rx + 6.0
        self._build_organs()

    # ---- smooth profiles along z -------------------------------------------------------------
    def body_ab(self, z: Arr) -> tuple[Arr, Arr]:
        top = smoothstep(self.apex_max - 10, self.apex_max + 70, z)
        low = smoothstep(-60, -220, z)
        return self.p["body_a"] * (1 - 0.22 * top) * (1 + 0.04 * low), self.p["body_b"] * (1 - 0.12 * top)

    def cav_ab(self, z: Arr) -> tuple[Arr, Arr]:
        top = smoothstep(self.apex_max - 70, self.apex_max + 20, z)
        return self.p["cav_a"] * (1 - 0.3 * top), self.p["cav_b"] * (1 - 0.15 * top)

    def xm(self, z: Arr) -> Arr:
        return self.p["xm_up"] + (self.p["xm_low"] - self.p["xm_up"]) * smoothstep(20, -40, z)

    def hw(self, z: Arr) -> Arr:
        return self.p["med_hw"] + (self.p["med_hw_heart"] - self.p["med_hw"]) * smoothstep(-10, -50, z)

    # ---- lung boundaries in x/y ----------------------------------------------------------------
    def apex_z(self, x: Arr, y: Arr, right: Arr) -> Arr:
        a, b = self.p["cav_a"], self.p["cav_b"]
        s = np.where(right, 1.0, -1.0)
        top = np.where(right, self.p["apex"][0], self.p["apex"][1])
        u = (x - self.xm_mid - s * 0.45 * a) / (0.6 * a)
        v = (y - self.yc + 0.1 * b) / (0.6 * b)
        return top - 45.0 * (u * u + v * v)

    def base_z(self, x: Arr, y: Arr, right: Arr) -> Arr:
        a, b = self.p["cav_a"], self.p["cav_b"]
        s = np.where(right, 1.0, -1.0)
        dome = np.where(right, self.p["dome"][0], self.p["dome"][1])
        rec = np.where(right, self.p["recess"][0], self.p["recess"][1])
        u = (x - self.xm_mid - s * 0.4 * a) / (0.6 * a)
        v = (y - self.yc - 0.15 * b) / (0.9 * b)
        post = np.clip(-v, 0.0, None)
        return np.maximum(dome - rec * (u * u + v * v) - self.p["recess_post"] * post * post,
                          dome - self.p["recess_max"])

    def spine_block(self, x: Arr, y: Arr) -> Arr:
        return (np.abs(x) < self.spine_hw) & (y < self.y_front + 2.0)

    # ---- organs --------------------------------------------------------------------------------
    def _build_organs(self) -> None:
        p = self.p
        rtr, reso = p["trachea_r"], p["eso_r"]
        ztop = self.z_top + 20
        self.eso_xy = (-5.0, self.y_front + reso + 1.0)
        self.tr_xy = (p["xm_up"], self.eso_xy[1] + reso + rtr + 1.5)
        xt, yt = self.tr_xy
        hr = np.array(p["heart_r"])
        zh = 0.5 * (p["dome"][0] + p["dome"][1]) - 15.0 + hr[2]
        yh = self.yc + p["cav_b"] - 0.95 * hr[1] - 3.0
        xh = p["xm_low"] + p["heart_dx"]
        rot = rotation([0, 0, 1], np.radians(p["heart_yaw_deg"])) @ rotation([0, 1, 0], np.radians(p["heart_roll_deg"]))
        self.heart = Ellipsoid(np.array([xh, yh, zh]), hr, rot)
        self.heart_chambers = Ellipsoid(np.array([xh, yh, zh]), hr * 0.7, rot)
        self.pericardium = Ellipsoid(np.array([xh, yh, zh]), hr + p["pericardial_fat"], rot)
        self.esophagus = [Capsule(np.array([*self.eso_xy, ztop]), np.array([self.eso_xy[0] - 6, self.eso_xy[1] + 4,
                                                                          p["dome"][1] - 10]), reso, reso)]
        self.trachea = _polyline([[xt, yt, ztop], [xt, yt - 2, 40], [xt, yt - 4, 0.0]], [rtr, rtr, rtr * 0.95])
        hil_r = np.array([self.xm(-15.0) + self.hw(-15.0) - 2.0, yt - 5.0, -18.0])
        hil_l = np.array([self.xm(-30.0) - self.hw(-30.0) + 2.0, yt - 8.0, -30.0])
        carina = np.array([xt, yt - 4, 0.0])
        self.hila = {1: hil_r, 2: hil_l}
        self.main_bronchi = [Capsule(carina, hil_r, 0.72 * rtr, 0.6 * rtr),
                             Capsule(carina, hil_l, 0.62 * rtr, 0.5 * rtr)]
        ra, rd = p["aorta_r"]
        xd = -(p["vb_r"][0] * 0.45 + rd + 2.0)
        yd = self.y_front + 0.3 * rd
        az = p["arch_z"]
        self.aorta = _polyline(
            [[p["xm_low"] + 6, yh - 0.3 * hr[1], zh + 0.5 * hr[2]], [p["xm_low"] + 12, yt + rtr + ra, az - 25],
             [xt - 2, yt + 6, az + 10], [xd, yd + 4, az - 10], [xd, yd, az - 60], [xd + 2, yd + 4, self.z_bottom - 20]],
            [ra, ra, 0.5 * (ra + rd), rd, rd, rd * 0.95])
        pb = np.array([xt - 16, yt + 10, az - 40])
        self.pulmonary = _polyline([[xh + 0.1 * hr[0], yh + 0.3 * hr[1], zh + 0.75 * hr[2]],
                                    [xh + 5, yt + 22, pb[2] - 12], pb], [13.0, 13.0, 12.0])
        self.pulmonary += [Capsule(pb, hil_r + np.array([-4.0, 9.0, -3.0]), 10.0, 7.5),
                           Capsule(pb, hil_l + np.array([3.0, 6.0, 9.0]), 10.0, 7.0)]
        la = self.heart.c + rot @ np.array([0.0, -0.75 * hr[1], 0.25 * hr[2]])
        self.veins_hilar = {1: hil_r + np.array([0.0, 6.0, -22.0]), 2: hil_l + np.array([0.0, 5.0, -20.0])}
        self.pulmonary_veins = [Capsule(la, self.veins_hilar[s], 8.0, 6.0) for s in (1, 2)]
        self.svc = [Capsule(np.array([p["xm_up"] + 20, yt + 18, ztop]), np.array([p["xm_low"] + 22, yh - 0.2 * hr[1],
                                                                                zh + 0.6 * hr[2]]), 9.0, 10.0)]
        top = self.aorta[len(self.aorta) // 2 - 1].p1
        self.great = [Capsule(top + np.array([dx, dy, 0.0]), np.array([top[0] + dx * 2, top[1] + dy, ztop]), r, r)
                      for dx, dy, r in ((9.0, 6.0, 6.5), (-3.0, 2.0, 4.5), (-11.0, -6.0, 5.0))]
        self.sternum = Box(np.array([0.0, self.yc + p["cav_b"] + 9.0, 0.5 * (self.apex_max - 40 + p["dome"][0] + 5)]),
                           np.array([15.0, 6.0, 0.5 * (self.apex_max - 40 - p["dome"][0] - 5)]))

    def exclusions(self) -> list[tuple[Any, float]]:
        """Primitives removed from the lungs, with their margins."""
        m = EXCLUSION_MARGIN
        prims: list[tuple[Any, float]] = [(self.pericardium, m)]
        for group in (self.aorta, self.pulmonary, self.pulmonary_veins, self.svc, self.esophagus, self.trachea,
                      self.main_bronchi, self.great):
            prims += [(c, m) for c in group]
        return prims

    # ---- lungs at points ---------------------------------------------------------------------
    def _capsule_table(self) -> tuple[Arr, Arr, Arr, Arr]:
        if not hasattr(self, "_caps"):
            caps = [(c, m) for c, m in self.exclusions() if isinstance(c, Capsule)]
            p0 = np.array([c.p0 for c, _ in caps])
            d = np.array([c.p1 - c.p0 for c, _ in caps])
            r = np.array([[c.r0 + m, c.r1 - c.r0] for c, m in caps])
            self._caps = (p0, d, np.maximum((d * d).sum(axis=1), 1e-9), r)
        return self._caps

    def excluded_points(self, pts: Arr) -> Arr:
        """True where points ``[N, 3]`` fall in a mediastinal organ (with margin)."""
        p0, d, l2, r = self._capsule_table()
        v = pts[:, None, :] - p0[None, :, :]
        t = np.clip((v * d[None]).sum(axis=2) / l2[None], 0.0, 1.0)
        e = v - t[:, :, None] * d[None]
        rad = r[None, :, 0] + t * r[None, :, 1]
        out = ((e * e).sum(axis=2) <= rad * rad).any(axis=1)
        for prim, margin in self.exclusions():
            if not isinstance(prim, Capsule):
                out |= prim.inside(pts[:, 0], pts[:, 1], pts[:, 2], margin)
        return out

    def lung_side_points(self, pts: Arr) -> Arr:
        """0 / 1 (right) / 2 (left) for points ``[N, 3]`` in the patient frame."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
        a, b = self.cav_ab(z)
        pert = np.clip(0.05 + self.pert.points(x, y, z), 0.0, None)
        inside = ((x / a) ** 2 + ((y - self.yc) / b) ** 2 + pert) < 1.0
        d = x - self.xm(z)
        inside &= np.abs(d) > self.hw(z)
        right = x > self.xm_mid
        inside &= (z < self.apex_z(x, y, right)) & (z > self.base_z(x, y, right))
        inside &= ~self.spine_block(x, y)
        if inside.any():
            idx = np.nonzero(inside)[0]
            inside[idx[self.excluded_points(pts[idx])]] = False
        return np.where(inside, np.where(d > 0, 1, 2), 0).astype(np.uint8)
