"""Result types of the phantom generator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medcert.volume import Volume

BACKGROUND, RIGHT_LUNG, LEFT_LUNG, NODULE = 0, 1, 2, 3
LABEL_NAMES = {BACKGROUND: "background", RIGHT_LUNG: "right lung", LEFT_LUNG: "left lung", NODULE: "lung nodule"}
NODULE_KINDS = ("solid", "part-solid", "ground-glass", "juxtapleural")


@dataclass(frozen=True)
class NoduleSpec:
    """One lung nodule: centre in RAS millimetres, nominal diameter, morphology."""

    center_ras: tuple[float, float, float]
    diameter_mm: float
    kind: str  # one of NODULE_KINDS


@dataclass
class Phantom:
    """A synthetic chest CT (HU, int16) and its ground-truth labels on the same ``[i, j, k]`` grid."""

    volume: Volume
    labels: np.ndarray  # uint8, 0 background, 1 right lung, 2 left lung, 3 lung nodule
    nodules: list[NoduleSpec] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
