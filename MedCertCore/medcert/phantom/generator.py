"""``generate_chest_ct``: one deterministic synthetic chest CT with ground-truth lung and nodule labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from medcert.phantom.orient import reorient, scanner_to_ras
from medcert.phantom.params import sample_params
from medcert.phantom.render import render
from medcert.phantom.types import NoduleSpec, Phantom
from medcert.volume import StudyIdentity, Volume


def generate_chest_ct(seed: int, **overrides: Any) -> Phantom:
    """Synthetic chest CT for ``seed`` (same seed and overrides → identical arrays).

    Overrides (see ``medcert.phantom.params.OVERRIDES``) change acquisition or orientation without
    changing the anatomy of the seed, e.g. ``spacing_xy=2.0, thickness=2.0, orientation="canonical"``.
    """
    params = sample_params(int(seed), overrides)
    r = render(params)
    s2r = scanner_to_ras(params["orientation"])
    ijk_to_ras = s2r @ r.grid.affine()
    patient_to_ras = s2r @ r.grid.patient_to_scanner()
    voxels = np.rint(r.hu).astype(np.int16)
    (voxels, labels), ijk_to_ras = reorient([voxels, r.labels], ijk_to_ras, params["orientation"]["perm"],
                                            params["orientation"]["flip"])
    nodules = []
    for n in r.nodules:
        c = patient_to_ras @ np.append(n.center, 1.0)
        nodules.append(NoduleSpec(center_ras=(float(c[0]), float(c[1]), float(c[2])), diameter_mm=n.diameter,
                                  kind=n.kind))
    params["grid"] = {"shape": list(voxels.shape), "fine_subslices": r.grid.nsub,
                      "patient_to_ras": patient_to_ras.tolist()}
    identity = StudyIdentity(source_format="synthetic", source_name=f"phantom-{int(seed):06d}", modality="CT",
                             device="MedCert chest phantom v1")
    return Phantom(volume=Volume(voxels=voxels, ijk_to_ras=ijk_to_ras, identity=identity), labels=labels,
                   nodules=nodules, params=params)
