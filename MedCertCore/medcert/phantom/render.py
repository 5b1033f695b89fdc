"""Rasterise the anatomy into Hounsfield units and labels on the acquisition grid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcert.phantom.anatomy import Anatomy
from medcert.phantom.geometry import Arr, Box, smoothstep
from medcert.phantom.grid import Grid
from medcert.phantom.nodules import PlacedNodule, place_nodules
from medcert.phantom.params import S_NODULES, S_NOISE, S_TREES
from medcert.phantom.trees import lung_trees
from medcert.phantom.types import NODULE

AIR = -1000.0


@dataclass
class Rendered:
    hu: Arr  # float32 [nx, ny, nz] after slab averaging, blur and noise
    labels: Arr  # uint8 [nx, ny, nz]
    grid: Grid
    anatomy: Anatomy
    nodules: list[PlacedNodule]


def _hu_values(anat: dict[str, Any], contrast: str, rng: np.random.Generator) -> dict[str, float]:
    soft = anat["hu_muscle"]
    v = {"blood": 40.0, "myo": 40.0, "aorta": 40.0, "pa": 40.0, "pv": 40.0, "svc": 40.0, "liver": anat["hu_liver"],
         "spleen": 45.0}
    if contrast == "arterial":
        left = float(rng.uniform(250, 420))
        v.update(blood=left, myo=100.0, aorta=left, pa=float(rng.uniform(150, 320)), pv=left,
                 svc=float(rng.uniform(300, 800)), liver=anat["hu_liver"] + 15, spleen=110.0)
    elif contrast == "venous":
        ven = float(rng.uniform(130, 190))
        v.update(blood=ven, myo=90.0, aorta=ven, pa=ven, pv=ven, svc=ven, liver=anat["hu_liver"] + 55, spleen=115.0)
    v["soft"] = soft
    return v


def _paint(hu: Arr, grid: Grid, prim: Any, value: float, margin: float = 0.0, within: Arr | None = None,
           flag: Arr | None = None) -> None:
    sl = grid.box(*prim.aabb(margin))
    if sl is None:
        return
    m = prim.inside(*grid.block(sl), margin)
    if within is not None:
        m &= within[sl]
    hu[sl][m] = value
    if flag is not None:
        flag[sl][m] = True


def _binomial(a: Arr, axis: int, passes: int) -> Arr:
    """[1, 2, 1] / 4 smoothing along ``axis`` (edges replicated), ``passes`` times."""
    a = np.moveaxis(a, axis, 0)
    for _ in range(passes):
        s = a[:-1] + a[1:]
        out = np.empty_like(a)
        np.add(s[:-1], s[1:], out=out[1:-1])
        out[0] = s[0] + 2 * a[0]
        out[-1] = s[-1] + 2 * a[-1]
        out *= np.float32(0.25)
        a = out
    return np.moveaxis(a, 0, axis)


def render(params: dict[str, Any]) -> Rendered:
    seed = params["seed"]
    p, acq = params["anatomy"], params["acquisition"]
    anat = Anatomy(p, acq["z_top"], acq["z_bottom"])
    grid = Grid(acq)
    rng_hu = np.random.default_rng([seed, S_NOISE, 1])
    hv = _hu_values(p, acq["contrast"], rng_hu)
    hu = np.full(grid.fine_shape, AIR, dtype=np.float32)
    _table(hu, grid, anat, acq["table"])
    _body(hu, grid, anat, hv)
    lung = _lungs(hu, grid, anat, hv)
    _mediastinum(hu, grid, anat, hv)
    r_min = float(acq.get("vessel_min_radius") or max(0.6, 0.35 * grid.s))
    _trees(hu, grid, anat, hv, lung, r_min, np.random.default_rng([seed, S_TREES]))
    nodules = place_nodules(anat, params["nodule_plan"], np.random.default_rng([seed, S_NODULES, 99]))
    nod = _nodules(hu, grid, nodules, lung)
    _bones(hu, grid, anat)
    # Labels at slice centres; HU averaged over each slab (partial volume).
    mid = grid.nsub // 2
    labels = lung[:, :, mid::grid.nsub].copy()
    labels[nod[:, :, mid::grid.nsub]] = NODULE
    if grid.nsub > 1:
        hu = hu.reshape(grid.nx, grid.ny, grid.nz, grid.nsub).mean(axis=3, dtype=np.float32)
    hu = _reconstruct(hu, grid, acq, np.random.default_rng([seed, S_NOISE]))
    return Rendered(hu=hu, labels=labels, grid=grid, anatomy=anat, nodules=nodules)


def _table(hu: Arr, grid: Grid, anat: Anatomy, t: dict[str, float]) -> None:
    """Scanner table (scanner frame, all slices): carbon shell, foam core, optional pad; under the patient."""
    ang = np.linspace(0, 2 * np.pi, 181)
    a, b = anat.body_ab(np.array(-100.0))
    px, py = a * np.cos(ang), b * np.sin(ang) / 1.08
    gy_min = float((grid.sn * px + grid.c * py).min())
    tx = float(t["dx"])
    top = gy_min - t["gap"] - t["pad"] + t["curve"] * (grid.GX - tx) ** 2
    inside_x = np.abs(grid.GX - tx) < t["width"] / 2
    table = inside_x & (top > grid.GY) & (top - t["height"] < grid.GY)
    shell = table & ((top - t["shell"] < grid.GY) | (top - t["height"] + t["shell"] > grid.GY)
                     | (np.abs(grid.GX - tx) > t["width"] / 2 - t["shell"]))
    pad = inside_x & (top <= grid.GY) & (top + t["pad"] > grid.GY)
    val = np.full(grid.GX.shape, np.nan, dtype=np.float32)
    val[pad] = -720.0
    val[table] = -940.0
    val[shell] = t["hu"]
    m = ~np.isnan(val)
    hu[m] = val[m][:, None]


def _body(hu: Arr, grid: Grid, anat: Anatomy, hv: dict[str, float]) -> None:
    """Subcutaneous fat, muscle wall and the thoracic cavity as nested ellipses (code → HU look-up)."""
    p = anat.p
    a_max, b_max = p["body_a"] * 1.05, p["body_b"] * 1.1
    sl = grid.box(np.array([-a_max, -b_max, -1e4]), np.array([a_max, b_max, 1e4]))
    if sl is None:
        return
    x, y, z = grid.block(sl)
    yb = np.where(y < 0, y * 1.08, y)  # flatter back
    x2, yb2 = x * x, yb * yb
    a, b = anat.body_ab(z)
    code = (x2 / (a * a).astype(np.float32) + yb2 / (b * b).astype(np.float32) < 1).astype(np.uint8)
    fa, fb = p["fat"], 0.7 * p["fat"]
    am, bm = a - fa, b - fb
    code += x2 / (am * am).astype(np.float32) + yb2 / (bm * bm).astype(np.float32) < 1
    ca, cb = anat.cav_ab(z)
    yc2 = (y - anat.yc) ** 2
    code += x2 / (ca * ca).astype(np.float32) + yc2 / (cb * cb).astype(np.float32) < 1
    lut = np.array([AIR, p["hu_fat"], hv["soft"], -80.0], dtype=np.float32)
    blk = hu[sl]
    blk[...] = np.where(code > 0, lut[code], blk)


def _lungs(hu: Arr, grid: Grid, anat: Anatomy, hv: dict[str, float]) -> Arr:
    """Lung side map (uint8 0/1/2) on the fine grid; paints parenchyma, diaphragm and upper abdomen."""
    p = anat.p
    lung = np.zeros(grid.fine_shape, dtype=np.uint8)
    a, b = p["cav_a"], p["cav_b"]
    zlo = min(p["dome"]) - p["recess_max"] - 10
    sl = grid.box(np.array([-a, anat.yc - b, zlo]), np.array([a, anat.yc + b, anat.apex_max + 1]))
    if sl is None:
        return lung
    x, y, z = grid.block(sl)
    x2d, y2d = x[:, :, 0], y[:, :, 0]
    ca, cb = anat.cav_ab(z)
    q = (x * x) / (ca * ca).astype(np.float32) + (y - anat.yc) ** 2 / (cb * cb).astype(np.float32)
    q += np.clip(0.05 + anat.pert.grid(x2d, y2d, z[0, 0]), 0.0, None)
    cav = q < 1.0
    del q
    right2 = x2d > anat.xm_mid
    apex2 = anat.apex_z(x2d, y2d, right2).astype(np.float32)
    base2 = anat.base_z(x2d, y2d, right2).astype(np.float32)
    d = x - anat.xm(z).astype(np.float32)
    inside = cav & (np.abs(d) > anat.hw(z).astype(np.float32))
    inside &= (z < apex2[:, :, None]) & (z > base2[:, :, None])
    inside &= ~anat.spine_block(x2d, y2d)[:, :, None]
    lung_blk = lung[sl]
    lung_blk[...] = np.where(inside, np.where(d > 0, 1, 2), 0).astype(np.uint8)
    excl = np.zeros(grid.fine_shape, dtype=bool)
    for prim, margin in anat.exclusions():
        s2 = grid.box(*prim.aabb(margin))
        if s2 is not None:
            excl[s2] |= prim.inside(*grid.block(s2), margin)
    lung[excl] = 0
    # HU: cavity below the diaphragm (muscle layer, liver, abdomen), lungs above.
    blk = hu[sl]
    below = cav & (z < base2[:, :, None])
    liver2 = (x2d > anat.xm_mid - 25 - 0.3 * (y2d - anat.yc))[:, :, None] & (z > p["dome"][0] - 165)
    blk[below] = hv["soft"]
    deep = below & (z < base2[:, :, None] - 5.0)
    blk[deep] = 20.0
    blk[deep & liver2] = hv["liver"]
    lb = lung_blk > 0
    grad = (-p["lung_gradient"] * np.clip((y2d - anat.yc) / b, -1, 1)).astype(np.float32)
    par = p["hu_lung"] + grad[:, :, None] + 18.0 * anat.texture.grid(x2d, y2d, z[0, 0])
    blk[lb] = par[lb]
    _fissures(blk, lung_blk, x, y, z, anat)
    _abdomen(hu, grid, anat, hv, sl, cav, base2)
    return lung


def _fissures(blk: Arr, lung_blk: Arr, x: Arr, y: Arr, z: Arr, anat: Anatomy) -> None:
    p = anat.p
    y_post = anat.yc - p["cav_b"]
    for side in (1, 2):
        fz, slope = p["fissure_z"][side - 1], p["fissure_slope"][side - 1]
        zf = (fz - slope * (y[:, :, 0] - y_post)).astype(np.float32)
        half = 0.6 * math.sqrt(1 + slope * slope)
        m = (np.abs(z - zf[:, :, None]) < half) & (lung_blk == side)
        blk[m] += 90.0
        if side == 1:
            hz = p["horizontal_fissure_z"]
            m = (np.abs(z - hz) < 0.6) & (zf < hz)[:, :, None] & (lung_blk == 1)
            blk[m] += 90.0


def _abdomen(hu: Arr, grid: Grid, anat: Anatomy, hv: dict[str, float], sl: tuple[slice, ...], cav: Arr,
             base2: Arr) -> None:
    """Stomach (with an air cap when supine) and spleen under the left hemidiaphragm."""
    from medcert.phantom.geometry import Ellipsoid, rotation

    p = anat.p
    a, b = p["cav_a"], p["cav_b"]
    below = np.zeros(grid.fine_shape, dtype=bool)
    _, _, z = grid.block(sl)
    below[sl] = cav & (z < base2[:, :, None] - 6.0)
    dl = p["dome"][1]
    stomach = Ellipsoid(np.array([anat.xm_mid - 0.45 * a, anat.yc + 0.15 * b, dl - 40]), np.array([38.0, 32.0, 45.0]),
                        rotation([0, 0, 1], 0.4))
    spleen = Ellipsoid(np.array([-0.68 * a, anat.yc - 0.45 * b, dl - 50]), np.array([22.0, 45.0, 50.0]),
                       rotation([0, 0, 1], -0.6))
    _paint(hu, grid, spleen, hv["spleen"], within=below)
    _paint(hu, grid, stomach, 15.0, within=below)
    if p["stomach_air"]:
        sl2 = grid.box(*stomach.aabb())
        if sl2 is not None:
            x, y, z2 = grid.block(sl2)
            m = stomach.inside(x, y, z2, -3.0) & (y > stomach.c[1] + 5) & below[sl2]
            hu[sl2][m] = AIR


def _mediastinum(hu: Arr, grid: Grid, anat: Anatomy, hv: dict[str, float]) -> None:
    _paint(hu, grid, anat.pericardium, -85.0)
    _paint(hu, grid, anat.heart, hv["myo"])
    _paint(hu, grid, anat.heart_chambers, hv["blood"])
    for group, key in ((anat.pulmonary, "pa"), (anat.pulmonary_veins, "pv"), (anat.aorta, "aorta"),
                       (anat.svc, "svc"), (anat.great, "aorta")):
        for c in group:
            _paint(hu, grid, c, hv[key])
    for c in anat.esophagus:
        _paint(hu, grid, c, hv["soft"] - 5)
    for c in anat.trachea + anat.main_bronchi:
        _paint(hu, grid, c, 30.0, margin=1.5 + 0.1 * c.r0)
    for c in anat.trachea + anat.main_bronchi:
        _paint(hu, grid, c, AIR)


def _trees(hu: Arr, grid: Grid, anat: Anatomy, hv: dict[str, float], lung: Arr, r_min: float,
           rng: np.random.Generator) -> None:
    trees = lung_trees(anat, r_min, rng)
    flat, lflat = hu.reshape(-1), lung.reshape(-1)

    def put(segs: Arr, gen: Arr, value: float) -> None:
        idx = grid.splat(segs)
        if len(idx) and gen is not None:
            idx = idx[lflat[idx] > 0]
        flat[idx] = value

    for tree in trees["arteries"]:
        seg, gen = tree.segments, tree.generation
        big = (seg[:, 6] >= 1.0) & (gen >= 1)
        if big.any():
            s = seg[big]
            d = s[:, 3:6] - s[:, 0:3]
            ref = np.where(np.abs(d[:, 2:3]) > 0.9 * np.linalg.norm(d, axis=1, keepdims=True), [[1.0, 0, 0]],
                           [[0, 0, 1.0]])
            off = np.cross(d, ref)
            off /= np.linalg.norm(off, axis=1, keepdims=True)
            rb = s[:, 6:8] * 0.8
            shift = off * (s[:, 6:7] + rb[:, :1] + 0.6)
            br = np.concatenate([s[:, 0:3] + shift, s[:, 3:6] + shift, rb], axis=1)
            wall = br.copy()
            wall[:, 6:8] = rb + 0.3 + 0.2 * rb
            put(wall, gen[big], hv["soft"] - 20)
            put(br, gen[big], -990.0)
        root = gen == 0
        put(seg[root], None, hv["pa"])  # type: ignore[arg-type]
        put(seg[~root], gen[~root], hv["pa"])
    for tree in trees["veins"]:
        seg, gen = tree.segments, tree.generation
        put(seg[gen == 0], None, hv["pv"])  # type: ignore[arg-type]
        put(seg[gen > 0], gen[gen > 0], hv["pv"])


def _nodules(hu: Arr, grid: Grid, nodules: list[PlacedNodule], lung: Arr) -> Arr:
    """Paint nodules inside the lungs; returns the fine nodule mask."""
    mask = np.zeros(grid.fine_shape, dtype=bool)
    for n in nodules:
        r = 0.5 * n.diameter
        rmax = r * (1 + n.lobe_amp) + 0.5
        sl = grid.box(n.center - rmax, n.center + rmax)
        if sl is None:
            continue
        x, y, z = grid.block(sl)
        dx, dy, dz = x - n.center[0], y - n.center[1], z - n.center[2]
        dist = np.sqrt(dx * dx + dy * dy + dz * dz) + 1e-6
        u1 = (dx * n.lobes[0, 0] + dy * n.lobes[0, 1] + dz * n.lobes[0, 2]) / dist
        u2 = (dx * n.lobes[1, 0] + dy * n.lobes[1, 1] + dz * n.lobes[1, 2]) / dist
        reff = r * (1 + n.lobe_amp * (u1 * u1 - u2 * u2))
        inl = lung[sl] > 0
        m = (dist <= reff) & inl
        core = (dist <= reff * n.core_frac) & inl
        blk = hu[sl]
        if n.kind in ("part-solid", "ground-glass"):
            blk[m] = n.hu_ggo
        else:
            blk[m] = n.hu_solid
        blk[core] = n.hu_solid
        mask[sl] |= m
    return mask


def _bones(hu: Arr, grid: Grid, anat: Anatomy) -> None:
    p = anat.p
    cort, canc = p["hu_cortical"], p["hu_cancellous"]
    vb_rx, vb_ry = p["vb_r"]
    yv = anat.yv
    sl = grid.box(np.array([-40.0, yv - vb_ry - 50, -1e4]), np.array([40.0, yv + vb_ry + 2, 1e4]))
    if sl is not None:
        x, y, z = grid.block(sl)
        x2, y2 = x[:, :, 0], y[:, :, 0]
        e_o = (x2 / vb_rx) ** 2 + ((y2 - yv) / vb_ry) ** 2 < 1
        e_i = (x2 / (vb_rx - 2)) ** 2 + ((y2 - yv) / (vb_ry - 2)) ** 2 < 1
        yc_can = yv - vb_ry - 9.0
        rc2 = x2 ** 2 + (y2 - yc_can) ** 2
        canal = rc2 < 64.0
        post = ((rc2 < 15.0 ** 2) & ~canal & ~e_o) | ((np.abs(x2) < 4) & (y2 < yc_can - 10) & (y2 > yc_can - 38)) | (
            (np.abs(x2) > 10) & (np.abs(x2) < 32) & (np.abs(y2 - yc_can - 3) < 5))
        period = p["vb_h"] + p["disc_h"]
        ph = np.mod(z[0, 0] - anat.p["field_seed"] % 97, period)
        body_z = ph < p["vb_h"]
        endplate = body_z & ((ph < 1.5) | (ph > p["vb_h"] - 1.5))
        post_z = ph < period - 4
        blk = hu[sl]
        code = np.zeros(blk.shape, dtype=np.uint8)
        code[(e_o & ~e_i)[:, :, None] & body_z] = 1
        code[e_i[:, :, None] & endplate] = 1
        code[e_i[:, :, None] & (body_z & ~endplate)] = 2
        code[e_o[:, :, None] & ~body_z] = 3
        code[post[:, :, None] & post_z] = 4
        code[canal[:, :, None] & np.ones_like(body_z)] = 5
        lut = np.array([0, cort, canc, 80.0, 0.5 * (cort + canc), 15.0], dtype=np.float32)
        blk[...] = np.where(code > 0, lut[code], blk)
    _ribs(hu, grid, anat)
    st = anat.sternum
    _paint(hu, grid, st, cort)
    _paint(hu, grid, Box(st.c, st.half - np.array([1.5, 1.5, 0.0])), canc)


def _ribs(hu: Arr, grid: Grid, anat: Anatomy) -> None:
    p = anat.p
    r = p["rib_r"]
    bone, cart = [], []
    t = np.linspace(0.0, 1.0, 22)
    for k in range(12):
        zk = anat.apex_max + 5 - k * p["rib_spacing"]
        for s in (1.0, -1.0):
            zt = zk - p["rib_drop"] * (0.35 + 0.65 * k / 11) * t ** 1.4
            ca, cb = anat.cav_ab(zt)
            ae, be = ca + r + 5.0, cb + r + 5.0
            phi0 = -math.acos(min(1.0, (anat.spine_hw + 3.0) / float(ae[0])))
            floating = k >= 10
            x_end = 25.0 + 7.0 * k
            phi1 = -0.15 if floating else math.acos(min(1.0, x_end / float(ae[-1])))
            phi = phi0 + (phi1 - phi0) * t
            pts = np.stack([s * ae * np.cos(phi), anat.yc + be * np.sin(phi), zt], axis=1)
            pts = np.concatenate([[[s * (p["vb_r"][0] + 2), anat.yv, zk]], pts])
            segs = np.concatenate([pts[:-1], pts[1:], np.full((len(pts) - 1, 2), r)], axis=1)
            n_cart = 0 if floating else 5
            bone.append(segs[: len(segs) - n_cart])
            cart.append(segs[len(segs) - n_cart:])
    flat = hu.reshape(-1)
    b = np.concatenate(bone)
    flat[grid.splat(b)] = p["hu_cortical"]
    inner = b.copy()
    inner[:, 6:8] -= 1.6
    flat[grid.splat(inner)] = p["hu_cancellous"]
    flat[grid.splat(np.concatenate(cart))] = 120.0


def _reconstruct(hu: Arr, grid: Grid, acq: dict[str, Any], rng: np.random.Generator) -> Arr:
    """White noise, then the reconstruction blur (which also shapes the noise texture), calibration
    offset and the reconstruction circle. The noise is scaled to ``noise_sigma`` after blurring."""
    passes = 1 if acq["blur_px"] < 0.85 else 2
    f = (6 / 16) if passes == 1 else (70 / 256)  # variance factor of the 1-D kernel
    var = f * f
    thin = grid.nsub == 1 and hu.shape[2] > 2
    if thin:
        var *= 0.125 ** 2 * 2 + 0.75 ** 2  # along z: 0.5 x + 0.5 [1,2,1]/4 x = [1/8, 3/4, 1/8]
    noise = rng.random(hu.shape, dtype=np.float32)
    noise -= np.float32(0.5)
    noise *= np.float32(acq["noise_sigma"] / math.sqrt(var / 12.0))
    hu += noise
    del noise
    hu = _binomial(_binomial(hu, 0, passes), 1, passes)
    if thin:
        hu = np.float32(0.5) * hu + np.float32(0.5) * _binomial(hu, 2, 1)
    hu += np.float32(acq["hu_offset"])
    np.clip(hu, -1024, 3071, out=hu)
    if acq["fov_circle"]:
        cx, cy = acq["fov_center"]
        rad = grid.s * grid.nx / 2
        out = (grid.GX - cx) ** 2 + (grid.GY - cy) ** 2 > rad * rad
        hu[out] = acq["outside_hu"]
    return hu


__all__ = ["Rendered", "render", "smoothstep"]
