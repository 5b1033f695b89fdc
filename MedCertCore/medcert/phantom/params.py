"""Random parameters of one phantom: anatomy, acquisition and orientation, all JSON-serialisable.

Independent random streams (``numpy.random.default_rng([seed, stream])``) keep the anatomy of a seed fixed
when acquisition parameters are overridden, and vice versa.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

PARAMS_VERSION = 1
S_ANATOMY, S_ACQ, S_ORIENT, S_NODULES, S_TREES, S_NOISE = 1, 2, 3, 4, 5, 6

# Keyword overrides accepted by generate_chest_ct (documented in docs/demo-model.md).
OVERRIDES = {
    "spacing_xy": "in-plane spacing in mm (0.3..5); the matrix follows from the field of view",
    "thickness": "slice thickness = slice spacing in mm (0.5..12)",
    "fov_mm": "in-plane field of view in mm",
    "noise_sigma": "noise standard deviation in HU",
    "blur_px": "reconstruction blur in pixels (0.5..1.2)",
    "n_nodules": "number of nodules (0..12)",
    "nodule_diameters": "list of nodule diameters in mm (sets n_nodules)",
    "nodule_kinds": "list of kinds, cycled over the nodules",
    "contrast": "'none', 'arterial' or 'venous'",
    "orientation": "'canonical' (i->R, j->A, k->S), 'lps', 'random' or {'perm': [..], 'flip': [..]}",
    "oblique_deg": "tilt of the voxel grid (and patient) in degrees; 0 for none",
    "yaw_deg": "rotation of the patient about the scanner z axis, degrees",
    "fov_circle": "mask outside the reconstruction circle (bool)",
    "vessel_min_radius": "smallest vessel radius drawn, mm",
}


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_anatomy(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, S_ANATOMY])
    body_a = _u(rng, 135, 190)
    body_b = body_a * _u(rng, 0.65, 0.82)
    fat = body_a * _u(rng, 0.02, 0.17)
    muscle = _u(rng, 7, 15)
    cav_a = body_a - fat - muscle - 10.0
    cav_b = body_b - 0.7 * fat - muscle - 8.0
    apex_r = _u(rng, 95, 135)
    dome_r = -_u(rng, 95, 150)
    return {
        "body_a": body_a, "body_b": body_b, "fat": fat, "muscle": muscle,
        "cav_a": cav_a, "cav_b": cav_b, "cav_yc": _u(rng, -4, 6),
        "apex": [apex_r, apex_r + _u(rng, -8, 8)],
        "dome": [dome_r, dome_r - _u(rng, 8, 25)],
        "recess": [_u(rng, 25, 45), _u(rng, 25, 45)],
        "recess_post": _u(rng, 5, 20), "recess_max": _u(rng, 60, 90),
        "xm_low": -_u(rng, 4, 12), "xm_up": _u(rng, -3, 3),
        "med_hw": _u(rng, 11, 17), "med_hw_heart": _u(rng, 14, 22),
        "heart_r": [cav_a * _u(rng, 0.36, 0.46), cav_b * _u(rng, 0.42, 0.55), _u(rng, 45, 58)],
        "heart_dx": -_u(rng, 12, 28), "heart_yaw_deg": -_u(rng, 20, 40), "heart_roll_deg": _u(rng, -10, 10),
        "pericardial_fat": _u(rng, 2, 7),
        "aorta_r": [_u(rng, 13, 17), _u(rng, 10, 13)], "arch_z": _u(rng, 28, 50),
        "trachea_r": _u(rng, 7.5, 10.5), "eso_r": _u(rng, 6, 8.5),
        "vb_r": [_u(rng, 17, 23), _u(rng, 13, 17)], "vb_h": _u(rng, 21, 27), "disc_h": _u(rng, 4, 6.5),
        "rib_r": _u(rng, 3.8, 5.2), "rib_spacing": _u(rng, 20, 26), "rib_drop": _u(rng, 35, 80),
        "hu_fat": _u(rng, -115, -85), "hu_muscle": _u(rng, 30, 55), "hu_lung": _u(rng, -880, -820),
        "lung_gradient": _u(rng, 10, 60), "hu_liver": _u(rng, 45, 65),
        "hu_cortical": _u(rng, 350, 700), "hu_cancellous": _u(rng, 150, 260),
        "fissure_z": [_u(rng, 20, 50), _u(rng, 20, 55)], "fissure_slope": [_u(rng, 0.9, 1.5), _u(rng, 0.9, 1.5)],
        "horizontal_fissure_z": -_u(rng, 10, 35),
        "stomach_air": bool(rng.uniform() < 0.7),
        "field_seed": int(rng.integers(0, 2**31 - 1)),
    }


def sample_acquisition(seed: int, anat: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng([seed, S_ACQ])
    matrix = int(rng.choice([512, 512, 512, 512, 384, 256, 256, 128]))
    width = 2 * (anat["body_a"] + 15)
    fov = float(np.clip(width * _u(rng, 1.02, 1.35), 260.0, 500.0))
    thickness = float(rng.choice([0.625, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0, 5.0, 7.5, 10.0]))
    top = max(anat["apex"]) + _u(rng, 5, 40)
    bottom = min(anat["dome"]) - anat["recess_max"] - _u(rng, 5, 40)
    return {
        "spacing_xy": float(np.clip(fov / matrix, 0.5, 3.5)), "fov_mm": fov, "thickness": thickness,
        "z_top": top, "z_bottom": bottom,
        "fov_center": [_u(rng, -20, 20), _u(rng, -25, 10)],
        "noise_sigma": float(math.exp(rng.uniform(math.log(5.0), math.log(40.0)))),
        "blur_px": _u(rng, 0.5, 1.1),
        "hu_offset": _u(rng, -8, 8),
        "contrast": str(rng.choice(["none", "none", "arterial", "venous"])),
        "yaw_deg": _u(rng, -7, 7),
        "fov_circle": bool(rng.uniform() < 0.35), "outside_hu": float(rng.choice([-1024.0, -3024.0])),
        "table": {"gap": _u(rng, 0, 4), "height": _u(rng, 35, 70), "width": _u(rng, 380, 520),
                  "curve": _u(rng, 0.0, 5e-4), "shell": _u(rng, 2.5, 6), "hu": _u(rng, 120, 400),
                  "dx": _u(rng, -15, 15), "pad": _u(rng, 0, 40) if rng.uniform() < 0.5 else 0.0},
        "vessel_min_radius": 0.0,
    }


def sample_orientation(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, S_ORIENT])
    u = rng.uniform()
    if u < 0.45:  # DICOM-typical axial: i -> patient left, j -> posterior
        perm, flip = [0, 1, 2], [True, True, bool(rng.uniform() < 0.5)]
    elif u < 0.6:
        perm, flip = [0, 1, 2], [False, False, False]
    elif u < 0.85:
        perm, flip = [0, 1, 2], [bool(v) for v in rng.uniform(size=3) < 0.5]
    else:
        perm = [int(v) for v in rng.permutation(3)]
        flip = [bool(v) for v in rng.uniform(size=3) < 0.5]
    oblique = _u(rng, 3, 15) if rng.uniform() < 0.2 else 0.0
    axis = rng.normal(size=3)
    return {"perm": perm, "flip": flip, "oblique_deg": oblique,
            "oblique_axis": [float(v) for v in axis / np.linalg.norm(axis)],
            "origin_shift": [_u(rng, -60, 60), _u(rng, -60, 60), _u(rng, -300, 300)]}


def sample_nodule_plan(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, S_NODULES])
    n = int(rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5]))
    diam = [float(math.exp(rng.uniform(math.log(3.0), math.log(30.0)))) for _ in range(n)]
    kinds = [str(rng.choice(["solid", "solid", "part-solid", "ground-glass", "juxtapleural"])) for _ in range(n)]
    return {"diameters": diam, "kinds": kinds}


def sample_params(seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """All parameters for ``seed`` with ``overrides`` applied (unknown keys raise ValueError)."""
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ValueError(f"unknown phantom overrides: {', '.join(unknown)}; known: {', '.join(OVERRIDES)}")
    anat = sample_anatomy(seed)
    acq = sample_acquisition(seed, anat)
    orient = sample_orientation(seed)
    plan = sample_nodule_plan(seed)
    ov = dict(overrides)
    for key in ("spacing_xy", "thickness", "fov_mm", "noise_sigma", "blur_px", "contrast", "yaw_deg",
                "fov_circle", "vessel_min_radius"):
        if key in ov:
            acq[key] = ov.pop(key)
    if "fov_mm" in overrides and "spacing_xy" not in overrides:
        acq["spacing_xy"] = float(np.clip(acq["fov_mm"] / 512, 0.5, 3.5))
    if not 0.3 <= float(acq["spacing_xy"]) <= 5.0 or not 0.5 <= float(acq["thickness"]) <= 12.0:
        raise ValueError("spacing_xy must be in 0.3..5 mm and thickness in 0.5..12 mm")
    if acq["contrast"] not in ("none", "arterial", "venous"):
        raise ValueError("contrast must be 'none', 'arterial' or 'venous'")
    if "nodule_diameters" in ov:
        plan["diameters"] = [float(d) for d in ov.pop("nodule_diameters")]
        kinds = plan["kinds"] or ["solid"]
        plan["kinds"] = [kinds[i % len(kinds)] for i in range(len(plan["diameters"]))]
    if "n_nodules" in ov:
        n = int(ov.pop("n_nodules"))
        if not 0 <= n <= 12:
            raise ValueError("n_nodules must be 0..12")
        rng = np.random.default_rng([seed, S_NODULES, n])
        while len(plan["diameters"]) < n:
            plan["diameters"].append(float(math.exp(rng.uniform(math.log(3.0), math.log(30.0)))))
            plan["kinds"].append(str(rng.choice(["solid", "solid", "part-solid", "ground-glass", "juxtapleural"])))
        plan["diameters"], plan["kinds"] = plan["diameters"][:n], plan["kinds"][:n]
    if "nodule_kinds" in ov:
        kinds = [str(k) for k in ov.pop("nodule_kinds")]
        plan["kinds"] = [kinds[i % len(kinds)] for i in range(len(plan["diameters"]))]
    if "orientation" in ov:
        orient.update(_orientation_override(ov.pop("orientation")))
    if "oblique_deg" in ov:
        orient["oblique_deg"] = float(ov.pop("oblique_deg"))
    return {"version": PARAMS_VERSION, "seed": int(seed), "anatomy": anat, "acquisition": acq,
            "orientation": orient, "nodule_plan": plan}


def _orientation_override(value: Any) -> dict[str, Any]:
    if value == "canonical":
        return {"perm": [0, 1, 2], "flip": [False, False, False]}
    if value == "lps":
        return {"perm": [0, 1, 2], "flip": [True, True, False]}
    if value == "random":
        return {}
    if isinstance(value, dict) and sorted(value.get("perm", [])) == [0, 1, 2] and len(value.get("flip", [])) == 3:
        return {"perm": [int(v) for v in value["perm"]], "flip": [bool(v) for v in value["flip"]]}
    raise ValueError("orientation must be 'canonical', 'lps', 'random' or {'perm': [...], 'flip': [...]}")
