"""Training data of the candidate classifier: stage-1 candidates on phantoms, their patches and labels.

A phantom goes through the real preprocessing and the stage-1 sliding window of a ``medcert.lungnodule/1`` file
with the nodule log-odds raised by ``offset``; every candidate (:mod:`medcert.models.nodule_candidates`) gets a
patch ``size``³ and the index of the nodule it hits: within the nodule's radius + 2 mm of its centre, or on one
of its voxels (``-1``: a false candidate). Training candidates may come from a bfloat16 sliding window
(``precision="bf16"``: 1.66x faster per phantom on a 2-core Xeon with bfloat16 instructions); what calibrates
the model uses float32, like inference.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medcert.inference.engine import sliding_window_logits
from medcert.inference.preprocess import labels_to_grid
from medcert.models.lung_nodule_two_stage import close_lungs
from medcert.models.nodule_candidates import find_candidates, gather_patches, nodule_margin
from medcert.phantom import NODULE, generate_chest_ct
from medcert.training.dataset import training_overrides

HIT_SLACK_MM = 2.0
PRECISIONS = ("fp32", "bf16")  # of the stage-1 sliding window that finds candidates


@dataclass
class CandidateSet:
    """Candidates of one phantom."""

    seed: int
    patches: np.ndarray  # float16 [N, 2, size, size, size]
    margin: np.ndarray  # float32 [N] stage-1 margin at the candidate (before the offset)
    nodule: np.ndarray  # int64 [N] index of the nodule hit, -1 for none
    diameters: np.ndarray  # float64 [M] every nodule of the phantom
    kinds: np.ndarray  # str [M]
    seconds: float

    def to_bytes(self) -> bytes:
        """An ``.npz`` archive of every field (for an atomic write)."""
        buf = io.BytesIO()
        np.savez(buf, seed=self.seed, patches=self.patches, margin=self.margin, nodule=self.nodule,
                 diameters=self.diameters, kinds=self.kinds, seconds=self.seconds)
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path) -> CandidateSet:
        z = np.load(path)
        return cls(int(z["seed"]), z["patches"], z["margin"], z["nodule"], z["diameters"], z["kinds"],
                   float(z["seconds"]))


def phantom_overrides(seed: int, training: bool, mix: str = "hard") -> dict[str, Any]:
    """Training phantoms: a nodule-rich ``mix`` at the generator's own acquisition; others: the generator's."""
    if not training:
        return {}
    ov = training_overrides(seed, mix)
    ov.pop("spacing_xy")
    return ov


def overrides_tag(overrides: dict[str, Any] | None) -> str:
    """Cache-name part of phantom overrides ("" for the generator's own acquisition)."""
    if not overrides:
        return ""
    return "-" + hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:12]


def logits_path(cache: Path, seed: int, overrides: dict[str, Any] | None, precision: str = "fp32") -> Path:
    """Where phantom ``seed``'s stage-1 logits (sliding window in ``precision``) are cached in ``cache`` (a folder
    specific to the stage-1 weights, shared by candidate extraction and calibration)."""
    check_precision(precision)
    kind = "" if precision == "fp32" else f"-{precision}"
    return cache / f"logits{overrides_tag(overrides)}{kind}-{seed}.npy"


def check_precision(precision: str) -> None:
    """Refuse a sliding-window precision other than :data:`PRECISIONS` (ValueError)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def stage1_logits(network: torch.nn.Module, adapter: Any, prep: Any, path: Path | None,
                  precision: str = "fp32") -> np.ndarray:
    """Stage-1 logits (``medcert.lungnodule/1`` ``network``, no candidate offset) of the preprocessed phantom
    ``prep`` on the canonical grid, float32 (``precision="bf16"``: the tiles run under bfloat16 autocast);
    cached at ``path`` (:func:`logits_path` with the same ``precision``) when given."""
    check_precision(precision)
    if path is not None and path.is_file():
        return np.load(path)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = sliding_window_logits(network, prep.tensor, adapter.patch, adapter.overlap)
    if path is not None:
        from medcert.atomic import atomic_write_bytes

        buf = io.BytesIO()
        np.save(buf, logits)
        atomic_write_bytes(path, buf.getvalue(), overwrite=True)
    return logits


def extract_candidates(seed: int, adapter: Any, network: torch.nn.Module, *, offset: float, nms: int, limit: int,
                       size: int, overrides: dict[str, Any], logits_path: Path | None = None,
                       closing: int = 0, precision: str = "fp32") -> CandidateSet:
    """Candidates, patches and labels of phantom ``seed`` (generated with ``overrides``) under stage-1
    ``network`` (``medcert.lungnodule/1``, sliding window in ``precision``; its logits cached at ``logits_path``
    when given), after closing the lung mask by ``closing`` grid voxels as the two-stage model does
    (``candidates.closing``)."""
    t0 = time.perf_counter()
    ph = generate_chest_ct(seed, **overrides)
    prep = adapter.preprocess(ph.volume)
    logits = close_lungs(torch.from_numpy(stage1_logits(network, adapter, prep, logits_path, precision)), closing)
    margin = nodule_margin(logits)
    centres = find_candidates(margin + offset, nms, limit)
    patches = gather_patches(torch.from_numpy(prep.tensor[0]), margin, centres, size)
    g2r = np.asarray(prep.grid_to_ras, dtype=np.float64)
    c = centres.numpy()
    ras = c @ g2r[:3, :3].T + g2r[:3, 3]
    on_nodule = labels_to_grid(ph.labels, ph.volume.ijk_to_ras, prep)[c[:, 0], c[:, 1], c[:, 2]] == NODULE
    hit = np.full(len(c), -1, dtype=np.int64)
    if ph.nodules:
        centre_ras = np.array([n.center_ras for n in ph.nodules], dtype=np.float64)
        radius = np.array([0.5 * n.diameter_mm + HIT_SLACK_MM for n in ph.nodules])
        dist = np.linalg.norm(ras[:, None, :] - centre_ras[None], axis=2)
        near = dist <= radius[None]
        nearest = np.argmin(np.where(near, dist, np.inf), axis=1)
        hit = np.where(near.any(axis=1), nearest, np.where(on_nodule, np.argmin(dist, axis=1), -1))
    return CandidateSet(seed, patches.numpy().astype(np.float16), margin[tuple(centres.T)].numpy(), hit,
                        np.array([n.diameter_mm for n in ph.nodules], dtype=np.float64),
                        np.array([n.kind for n in ph.nodules], dtype=str), time.perf_counter() - t0)
