"""Training cases: phantom → the real ``preprocess_volume`` → canonical-grid labels; patch sampling for the lung
network (full-width tiles) and the nodule network (small cubes, hard negatives, flips)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage

from medcert.findings import equivalent_diameter_mm
from medcert.inference.preprocess import PreprocessSpec, labels_to_grid, preprocess_volume
from medcert.phantom import LEFT_LUNG, NODULE, RIGHT_LUNG, generate_chest_ct
from medcert.training.config import DENSE_HU


@dataclass
class Case:
    """One preprocessed phantom. The midline channel is linear in x, so only its x profile is kept."""

    seed: int
    image: np.ndarray  # float16 [X, Y, Z], channel 0 (windowed HU in [0, 1])
    midline: np.ndarray | None  # float32 [X], channel 1 along x (None without the midline channel)
    labels: np.ndarray  # uint8 [X, Y, Z]
    lung_points: np.ndarray  # int32 [N, 3] random lung voxels (sampling centres)
    nodule_centers: np.ndarray  # int32 [M, 3] one per nodule component

    @property
    def nbytes(self) -> int:
        return self.image.nbytes + self.labels.nbytes


NODULE_MIXES = ("default", "hard", "wide")
# The "hard" mix: more nodules per phantom, sizes where the network misses most, every kind equally often.
HARD_MIX_COUNT = (4, 8)
HARD_MIX_DIAMETER_MM = (5.0, 20.0)
HARD_MIX_KINDS = ("solid", "part-solid", "ground-glass", "juxtapleural")
# The "wide" mix: as many nodules, over the whole reportable size range (5-30 mm), juxtapleural twice as often.
WIDE_MIX_DIAMETER_MM = (5.0, 30.0)
WIDE_MIX_KINDS = ("solid", "part-solid", "ground-glass", "juxtapleural", "juxtapleural")
MIX_PLANS = {"hard": (HARD_MIX_DIAMETER_MM, HARD_MIX_KINDS), "wide": (WIDE_MIX_DIAMETER_MM, WIDE_MIX_KINDS)}


def training_overrides(phantom_seed: int, nodule_mix: str = "default") -> dict[str, Any]:
    """Acquisition overrides for training phantoms: coarser in-plane spacing (fast), more nodules.

    ``nodule_mix="hard"`` replaces the nodule plan by 4-8 nodules of 5-20 mm (log-uniform), the four kinds
    equally likely (the generator's default is 0-5 nodules of 3-30 mm, 40 % solid); ``"wide"`` by 4-8 nodules of
    5-30 mm, juxtapleural ones twice as likely as each other kind. The acquisition is the same."""
    if nodule_mix not in NODULE_MIXES:
        raise ValueError(f"nodule mix must be one of {', '.join(NODULE_MIXES)}")
    rng = np.random.default_rng([phantom_seed, 77])
    n = int(rng.choice([0, 1, 2, 3, 3, 4, 4, 5, 6]))  # drawn in either mix: the spacing draw follows it
    spacing = float(math.exp(rng.uniform(math.log(1.0), math.log(3.0))))
    if nodule_mix == "default":
        return {"spacing_xy": spacing, "n_nodules": n}
    hard = np.random.default_rng([phantom_seed, 80])
    sizes, kinds = MIX_PLANS[nodule_mix]
    lo, hi = (math.log(d) for d in sizes)
    count = int(hard.integers(HARD_MIX_COUNT[0], HARD_MIX_COUNT[1] + 1))
    return {"spacing_xy": spacing, "nodule_diameters": [float(math.exp(hard.uniform(lo, hi))) for _ in range(count)],
            "nodule_kinds": [str(hard.choice(kinds)) for _ in range(count)]}


def make_case(seed: int, spec: PreprocessSpec, overrides: dict[str, Any] | None = None,
              nodule_mix: str = "default") -> Case:
    ov = training_overrides(seed, nodule_mix) if overrides is None else overrides
    ph = generate_chest_ct(seed, **ov)
    prep = preprocess_volume(ph.volume, spec)
    labels = labels_to_grid(ph.labels, ph.volume.ijk_to_ras, prep)
    midline = None
    if prep.tensor.shape[0] > 1:
        midline = np.ascontiguousarray(prep.tensor[1, :, 0, 0], dtype=np.float32)
        if not np.array_equal(prep.tensor[1], np.broadcast_to(midline[:, None, None], prep.tensor.shape[1:])):
            raise ValueError("midline channel is not a function of x alone")
    rng = np.random.default_rng([seed, 78])
    lung = np.argwhere(labels > 0).astype(np.int32)
    if len(lung) > 20000:
        lung = lung[np.sort(rng.choice(len(lung), 20000, replace=False))]
    comp, n = ndimage.label(labels == NODULE)
    centers = np.array(ndimage.center_of_mass(comp > 0, comp, range(1, n + 1))).reshape(-1, 3)
    return Case(seed=seed, image=prep.tensor[0].astype(np.float16), midline=midline, labels=labels,
                lung_points=lung, nodule_centers=np.rint(centers).astype(np.int32))


def _window(n: int, p: int, center: int) -> tuple[int, int]:
    """Start of a length-``p`` window around ``center`` inside ``[0, n)``; and the padding if n < p."""
    if n <= p:
        return 0, p - n
    return int(np.clip(center - p // 2, 0, n - p)), 0


def _box(shape: tuple[int, ...], center: np.ndarray,
         patch: tuple[int, int, int]) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """The slices of a ``patch`` around ``center`` inside ``shape`` and the edge padding that completes it."""
    starts, pads = zip(*(_window(n, p, int(c)) for n, p, c in zip(shape, patch, center, strict=True)), strict=True)
    return tuple(slice(s, s + p) for s, p in zip(starts, patch, strict=True)), [(0, q) for q in pads]


def extract_mask(mask: np.ndarray, center: np.ndarray, patch: tuple[int, int, int]) -> np.ndarray:
    """The window of ``mask`` that ``extract`` takes for the same ``center`` and ``patch``."""
    sl, pad = _box(mask.shape, center, patch)
    return np.pad(mask[sl], pad, mode="edge")


def extract(case: Case, center: np.ndarray, patch: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Input ``[C, *patch]`` float32 and target ``[*patch]`` int64; edge padding as in sliding-window inference."""
    sl, pad = _box(case.labels.shape, center, patch)
    img = np.pad(case.image[sl].astype(np.float32), pad, mode="edge")
    lab = np.pad(case.labels[sl], pad, mode="edge").astype(np.int64)
    chans = [img]
    if case.midline is not None:
        mx = np.pad(case.midline[sl[0]], pad[0], mode="edge")
        chans.append(np.broadcast_to(mx[:, None, None], img.shape).astype(np.float32))
    return np.stack(chans), lab


class PatchSampler:
    """Deterministic patch draws: nodule-centred, lung-centred or uniform (probabilities ``p_nodule``, ``p_lung``)."""

    def __init__(self, patch: tuple[int, int, int], p_nodule: float = 0.4, p_lung: float = 0.35) -> None:
        self.patch = patch
        self.p_nodule, self.p_lung = p_nodule, p_lung

    def center(self, case: Case, rng: np.random.Generator) -> np.ndarray:
        """Patch centre. A chosen nodule or lung voxel lands anywhere in the patch (not at its centre), so the
        position inside a patch carries no label information the network could learn as a shortcut."""
        u = rng.uniform()
        shape = np.array(case.labels.shape)
        jitter = np.array(self.patch) // 2 - 4
        if u < self.p_nodule and len(case.nodule_centers):
            c = case.nodule_centers[rng.integers(len(case.nodule_centers))]
            return c + rng.integers(-jitter, jitter + 1)
        if u < self.p_nodule + self.p_lung and len(case.lung_points):
            return case.lung_points[rng.integers(len(case.lung_points))] + rng.integers(-jitter, jitter + 1)
        return rng.integers(0, shape)

    def draw(self, pool: list[Case], rng: np.random.Generator, augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
        x, y, _ = self.draw_with_nodules(pool, rng, augment)
        return x, y

    def draw_with_nodules(self, pool: list[Case], rng: np.random.Generator,
                          augment: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """As ``draw`` (same draws for the same ``rng``), plus the patch's nodule mask (bool) for a
        ``TrainingCase`` (None for a plain ``Case``)."""
        case = pool[rng.integers(len(pool))]
        center = self.center(case, rng)
        x, y = extract(case, center, self.patch)
        nodule = None
        if isinstance(case, TrainingCase):
            nodule = extract_mask(case.nodule, center, self.patch)
        if augment:
            x[0] = x[0] * rng.uniform(0.95, 1.05) + rng.uniform(-0.02, 0.02)
            if rng.uniform() < 0.3:
                x[0] += rng.normal(0.0, rng.uniform(0.002, 0.01), size=x[0].shape).astype(np.float32)
        return x, y, nodule


@dataclass
class TrainingCase(Case):
    """A case whose ``labels`` are lung sides (0/1/2, nodules merged into their lung), with the nodule mask and
    dense lung voxels (vessels, airway walls, fissures: the nodule network's hard negatives)."""

    nodule: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), dtype=bool))
    dense_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int32))
    # uint8: 0 outside nodules; inside, round(clip(sqrt(SMALL_NODULE_REF / component voxels), 1, 8)), so that a
    # small nodule's voxels can weigh as much in the loss as a large nodule's (see TrainConfig.size_weighting);
    # TINY inside components below TINY_NODULE_MM (equivalent diameter on the grid); hard components (faint or
    # touching the lung's edge, see hard_nodule_components) have their weight multiplied by ``hard_weight``.
    nodule_weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), dtype=np.uint8))


SMALL_NODULE_REF = 500.0  # voxels (a 20 mm nodule at 2 mm): components this large or larger weigh 1
# Components below this equivalent diameter are 1-8 voxels at 2 mm, the size of a vessel's cross-section; with
# size weighting they are left out of the nodule loss (neither nodule nor background), see docs/demo-model.md.
TINY_NODULE_MM = 5.0
TINY = 255  # their value in TrainingCase.nodule_weight
FAINT_HU = -300.0  # nodules whose median intensity lies below this are faint (ground-glass, most part-solid)


def hard_nodule_components(comp: np.ndarray, n: int, image: np.ndarray, sides: np.ndarray,
                           faint_level: float) -> np.ndarray:
    """Boolean per component label (index 0, background, False): the nodule is faint (median intensity below
    ``faint_level``, window units) or juxtapleural (one voxel beyond it, in 6-connectivity, lies outside both lungs)."""
    hard = np.zeros(n + 1, dtype=bool)
    for i, sl in enumerate(ndimage.find_objects(comp), start=1):
        if sl is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        m = comp[grown] == i
        ring = ndimage.binary_dilation(m) & ~m
        hard[i] = bool(np.median(image[grown][m]) < faint_level) or bool((sides[grown][ring] == 0).any())
    return hard


def make_training_case(seed: int, spec: PreprocessSpec, overrides: dict[str, Any] | None = None,
                       hard_weight: int = 1, dense_hu: float = DENSE_HU,
                       nodule_mix: str = "default") -> TrainingCase:
    """The phantom for ``seed`` on the work grid with the nodule network's targets; ``hard_weight`` (1-8)
    multiplies the size weight of hard nodules (see ``hard_nodule_components``); lung voxels above ``dense_hu``
    (not nodule) are the nodule network's hard negatives; without ``overrides``, ``nodule_mix`` chooses the
    training overrides (``training_overrides``)."""
    if not 1 <= hard_weight <= 8:
        raise ValueError("hard_weight must be 1-8")
    base = make_case(seed, spec, overrides, nodule_mix)
    lo, hi = spec.window
    dense_level = (dense_hu - lo) / (hi - lo)
    nodule = base.labels == NODULE
    sides = base.labels.copy()
    if nodule.any():  # each nodule voxel takes the side of the nearest lung voxel
        _, idx = ndimage.distance_transform_edt(~np.isin(sides, (RIGHT_LUNG, LEFT_LUNG)), return_indices=True)
        sides[nodule] = sides[idx[0][nodule], idx[1][nodule], idx[2][nodule]]
    dense = np.argwhere((sides > 0) & ~nodule & (base.image.astype(np.float32) > dense_level)).astype(np.int32)
    rng = np.random.default_rng([seed, 79])
    if len(dense) > 20000:
        dense = dense[np.sort(rng.choice(len(dense), 20000, replace=False))]
    comp, n = ndimage.label(nodule)
    sizes = np.bincount(comp.reshape(-1), minlength=n + 1).astype(np.float64)
    per_comp = np.rint(np.clip(np.sqrt(SMALL_NODULE_REF / np.maximum(sizes, 1.0)), 1.0, 8.0)).astype(np.uint8)
    if hard_weight > 1 and n:
        faint_level = (FAINT_HU - lo) / (hi - lo)
        hard = hard_nodule_components(comp, n, base.image.astype(np.float32), sides, faint_level)
        per_comp[hard] *= np.uint8(hard_weight)  # at most 8 * 8 = 64 < TINY
    per_comp[equivalent_diameter_mm(sizes * spec.spacing_mm ** 3) < TINY_NODULE_MM] = TINY
    per_comp[0] = 0
    return TrainingCase(seed=base.seed, image=base.image, midline=base.midline, labels=sides,
                        lung_points=base.lung_points, nodule_centers=base.nodule_centers, nodule=nodule,
                        dense_points=dense, nodule_weight=per_comp[comp])


class NoduleSampler:
    """Cubes for the nodule network: around a nodule, a lung voxel, a dense lung voxel, or anywhere (the rest);
    intensity channel only, random flips along every axis."""

    def __init__(self, patch: tuple[int, int, int], p_nodule: float = 0.45, p_lung: float = 0.2,
                 p_dense: float = 0.25) -> None:
        self.patch = patch
        self.p = np.cumsum([p_nodule, p_lung, p_dense])

    def center(self, case: TrainingCase, rng: np.random.Generator) -> np.ndarray:
        u = rng.uniform()
        jitter = np.array(self.patch) // 2 - 4
        for bound, pts in zip(self.p, (case.nodule_centers, case.lung_points, case.dense_points), strict=True):
            if u < bound and len(pts):
                return pts[rng.integers(len(pts))] + rng.integers(-jitter, jitter + 1)
        return rng.integers(0, np.array(case.labels.shape))

    def draw(self, pool: list[TrainingCase], rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs ``[B, 1, *patch]`` and nodule size weights ``[B, *patch]`` (0 outside nodules), both float32."""
        xs, ys = [], []
        for _ in range(batch):
            case = pool[rng.integers(len(pool))]
            x, y = extract(replace(case, labels=case.nodule_weight), self.center(case, rng), self.patch)
            x = x[:1] * rng.uniform(0.95, 1.05) + rng.uniform(-0.02, 0.02)
            if rng.uniform() < 0.3:
                x = x + rng.normal(0.0, rng.uniform(0.002, 0.01), size=x.shape)
            for axis in range(3):
                if rng.uniform() < 0.5:
                    x, y = np.flip(x, axis + 1), np.flip(y, axis)
            xs.append(np.ascontiguousarray(x, dtype=np.float32))
            ys.append(np.ascontiguousarray(y, dtype=np.float32))
        return np.stack(xs), np.stack(ys)
