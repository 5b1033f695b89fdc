"""Two-stage lung + nodule model (architecture id ``medcert.lungnodule/2``).

Stage 1 is ``medcert.lungnodule/1`` run tile by tile, its nodule log-odds raised by ``candidates.offset``.
Stage 2 runs once on the whole canonical grid (:meth:`refine`): the local maxima of the raised nodule margin are
candidates; a :class:`CandidateClassifier` scores a patch (windowed intensity + stage-1 margin) around each,
averaged over four flips. A 26-connected component ``C`` of ``margin > 0`` whose best score ``S = max_{k in C} s_k``
is above 0 is accepted and keeps the margin ``min(margin, S)``; every other voxel gets
``min(margin, 0) - offset`` (outside the candidate regions: stage 1's margin without the offset). So a voxel is
labelled nodule exactly when it lies in an accepted component, and the labels elsewhere keep the headroom of
stage 1's own operating point (interpolating the logits onto a fine input grid cannot raise specks of nodule
there). With ``candidates.symmetric`` (default false: files of 3.0.0 and 3.1.0) an accepted component keeps at least
``+offset``, mirroring the ``-offset`` or less around it, so interpolation onto the input grid puts its edge
half-way between grid voxels instead of shrinking a weakly raised component, often to nothing.
With ``candidates.closing`` = ``r`` > 0 (default 0: files of 3.0.0 and 3.1.0) stage 2 first closes the lung mask (lung
network's lung above background) with a ball of radius ``r`` grid voxels, the classic rolling-ball step of lung
CAD: in the indentations it fills, where a nodule against the pleura sits and the lung network calls it soft
tissue, the nodule class takes the background's logit as its base, so the margin there is the nodule log-odds
alone.
With ``candidates.grow`` = ``g`` > 0 (default 0: files up to 3.1.0) an accepted component also labels the voxels
within ``g`` grid voxels of it (26-connected dilation) as nodule, at ``+offset``: a weakly raised candidate is often
only the core of its nodule, a few grid voxels that vanish between the slices of a coarse input grid.
The classifier's output bias is the operating point.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from medcert.models.candidate_classifier import CandidateClassifier
from medcert.models.lung_nodule import LungNoduleNet
from medcert.models.nodule_candidates import candidate_components, find_candidates, gather_patches, nodule_margin

CLASSIFIER_BIAS = "classifier.head.4.bias"
CHUNK = 64  # candidates per classifier forward pass
MAX_CLOSING = 16  # grid voxels
MAX_GROW = 4  # grid voxels
FLIPS = ((), (2,), (3,), (4,))


class TwoStageLungNoduleNet(nn.Module):
    """``lung``/``nodule`` as in ``medcert.lungnodule/1``; ``classifier`` a :class:`CandidateClassifier` config;
    ``candidates`` ``{"offset": logits added to the nodule log-odds, "nms": window, "limit": max candidates,
    "symmetric": accepted components keep a margin of at least ``offset`` (optional, default false),
    "closing": radius in grid voxels of the lung mask's closing (optional, default 0: none),
    "grow": grid voxels an accepted component grows by (optional, default 0: none)}``."""

    def __init__(self, lung: dict[str, Any], nodule: dict[str, Any], classifier: dict[str, Any],
                 candidates: dict[str, Any]) -> None:
        super().__init__()
        self.stage1 = LungNoduleNet(lung, nodule)
        self.classifier = CandidateClassifier(**classifier)
        self.offset = float(candidates.get("offset", 0.0))
        self.nms = int(candidates.get("nms", 7))
        self.limit = int(candidates.get("limit", 512))
        self.symmetric = candidates.get("symmetric", False)
        self.closing = candidates.get("closing", 0)
        self.grow = candidates.get("grow", 0)
        if self.nms < 1 or self.nms % 2 == 0 or not 1 <= self.limit <= 4096:
            raise ValueError("candidates.nms must be odd and positive, candidates.limit in 1..4096")
        if not isinstance(self.symmetric, bool):
            raise ValueError("candidates.symmetric must be true or false")
        if type(self.closing) is not int or not 0 <= self.closing <= MAX_CLOSING:
            raise ValueError(f"candidates.closing must be an integer in 0..{MAX_CLOSING}")
        if type(self.grow) is not int or not 0 <= self.grow <= MAX_GROW:
            raise ValueError(f"candidates.grow must be an integer in 0..{MAX_GROW}")

    def divisor(self) -> int:
        return self.stage1.divisor()

    def trace_layers(self) -> list[tuple[str, nn.Module]]:
        return self.stage1.trace_layers() + [(f"classifier.{n}", m) for n, m in self.classifier.trace_layers()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 1 on one tile: composite logits with the candidate offset applied."""
        return self.stage1(x, self.offset)

    def score(self, patches: torch.Tensor) -> torch.Tensor:
        """Classifier log-odds ``[N]`` of patches ``[N, 2, s, s, s]`` (``s``: the classifier's input size),
        averaged over the four flips."""
        out = [torch.stack([self.classifier(patches[s:s + CHUNK].flip(f) if f else patches[s:s + CHUNK])
                            for f in FLIPS]).mean(dim=0) for s in range(0, patches.shape[0], CHUNK)]
        return torch.cat(out) if out else patches.new_zeros(0)

    def refine(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Whole-grid stage 2: ``x`` ``[C, X, Y, Z]`` model input, ``logits`` ``[4, X, Y, Z]`` from :meth:`forward`.
        Returns the refined logits and the candidates (grid voxel, stage-1 margin, score)."""
        found = self.find(x, logits)
        out = self.gate(found)
        del found["components"], found["component_of"], found["logits"]
        return out, found

    def close_lungs(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (raised) with the nodule class based on the background's logit where the closed lung mask
        adds voxels (``candidates.closing``); unchanged (the same tensor) without a closing."""
        return close_lungs(logits, self.closing)

    def find(self, x: torch.Tensor, logits: torch.Tensor) -> dict[str, Any]:
        """The candidates of :meth:`refine`: grid voxels, stage-1 margins, patches, scores, the candidate
        components (``components`` on the grid, ``component_of`` each candidate) and the raised ``logits`` after
        :meth:`close_lungs`, which :meth:`gate` refines."""
        logits = self.close_lungs(logits)
        margin = nodule_margin(logits)
        centres = find_candidates(margin, self.nms, self.limit)
        comp, cand_comp = candidate_components(margin, centres)
        patches = gather_patches(x[0], margin - self.offset, centres, self.classifier.input_size)
        scores = self.score(patches)
        return {"voxels": centres.cpu().numpy(), "margin": margin[tuple(centres.T)].cpu().numpy(),
                "scores": scores.cpu().numpy(), "patches": patches, "components": comp, "component_of": cand_comp,
                "logits": logits}

    @staticmethod
    def component_scores(found: dict[str, Any]) -> np.ndarray:
        """Best candidate score of each candidate component (float64, index 0 and components without a
        candidate: -inf)."""
        best = np.full(int(found["components"].max()) + 1, -np.inf, dtype=np.float64)
        np.maximum.at(best, found["component_of"], found["scores"].astype(np.float64))
        return best

    def gate(self, found: dict[str, Any], threshold: float = 0.0) -> torch.Tensor:
        """Refined logits of :meth:`find`'s ``found``: components whose best score is above ``threshold`` are
        accepted (0: the model's own operating point; calibration passes others)."""
        logits = found["logits"]
        comp = found["components"]
        best = self.component_scores(found) - threshold
        cap = torch.from_numpy(best[comp].astype(np.float32)).to(logits.device)  # -inf outside / without candidates
        others = logits[:3].amax(dim=0)
        out = logits.clone()
        accepted = torch.minimum(logits[3], others + cap.clamp_min(0))
        if self.symmetric:
            accepted = torch.maximum(accepted, others + self.offset)
        keep = cap > 0
        out[3] = torch.where(keep, accepted, torch.minimum(logits[3], others) - self.offset)
        if self.grow:
            ring = ndimage.binary_dilation(keep.cpu().numpy(), np.ones((3, 3, 3), bool), self.grow)
            ring = torch.from_numpy(ring).to(logits.device) & ~keep
            out[3] = torch.where(ring, others + self.offset, out[3])
        return out

    def candidate_saliency(self, found: dict[str, Any], shape: tuple[int, int, int]) -> np.ndarray | None:
        """``|d(sum of the accepted candidates' scores) / d(intensity)|`` on the grid ``shape`` (float64; the
        margin channel is held fixed), or None when no candidate is accepted. Call with autograd enabled."""
        keep = np.flatnonzero(found["scores"] > 0)
        if not keep.size:
            return None
        patches = found["patches"][torch.from_numpy(keep)].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.score(patches).sum(), patches)
        g = grad[:, 0].abs().to("cpu", torch.float64).numpy()
        p, lo = self.classifier.input_size, self.classifier.input_size // 2
        out = np.zeros(tuple(n + 2 * p for n in shape), dtype=np.float64)
        for v, gk in zip(found["voxels"][keep], g, strict=True):  # candidate order: fixed summation order
            a = v - lo + p
            out[a[0]:a[0] + p, a[1]:a[1] + p, a[2]:a[2] + p] += gk
        return out[p:p + shape[0], p:p + shape[1], p:p + shape[2]]


def close_lungs(logits: torch.Tensor, radius: int) -> torch.Tensor:
    """Composite ``logits`` ``[4, X, Y, Z]`` with the nodule class based on the background's logit where closing
    the lung mask (lung above background) by a ball of ``radius`` grid voxels adds voxels; the same tensor when
    ``radius`` is 0. Adding an offset to the nodule class before or after gives the same result."""
    if not radius:
        return logits
    lung_logit = logits[1:3].amax(dim=0)
    lung = (lung_logit > logits[0]).cpu().numpy()
    added = torch.from_numpy(ball_closing(lung, radius) & ~lung).to(logits.device)
    out = logits.clone()
    out[3] = torch.where(added, logits[3] + (logits[0] - lung_logit), logits[3])
    return out


def ball_closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """Morphological closing of a boolean ``mask`` by a ball of ``radius`` voxels (exact Euclidean distances).
    The array's edge is not background, so a mask cut by the field of view is not eroded there."""
    r = radius + 1
    padded = np.pad(mask, r)
    dilated = ndimage.distance_transform_edt(~padded) <= radius
    closed = ndimage.distance_transform_edt(dilated) > radius
    return closed[r:-r, r:-r, r:-r] | mask
