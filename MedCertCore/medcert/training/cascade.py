"""Train the two-network demo model (``medcert.lungnodule/1``): a lung network and a nodule network.

Both train in one process on one shared, growing pool of phantoms, one step of each in turn:

- the **lung** network (3 classes; nodule voxels count as their lung) on full-width tiles of the inference
  size, so its instance-normalisation statistics match inference (see docs/demo-model.md);
- the **nodule** network (batch-normalised, so its inference output does not depend on the tile) on small
  cubes around nodules, lung voxels, dense lung voxels (vessels, the hard negatives) and anywhere, with random
  flips; binary cross-entropy + soft Dice of the nodule mask.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medcert.errors import MedCertError
from medcert.inference.preprocess import PreprocessSpec
from medcert.models import build_model
from medcert.phantom import NODULE
from medcert.phantom.params import PARAMS_VERSION
from medcert.training.config import (
    ADAPTER,
    INTENDED_USE,
    MODEL_NAME,
    training_phantom_seed,
)
from medcert.training.dataset import Case, PatchSampler, extract, make_case
from medcert.training.loss import dice_ce_loss
from medcert.weights import save_weights

ARCHITECTURE = "medcert.lungnodule/1"
VERSION = "2.0.0"
LUNG_CONFIG: dict[str, Any] = {"in_channels": 2, "channels": [8, 16, 32, 64, 128]}
NODULE_CONFIG: dict[str, Any] = {"in_channels": 1, "channels": [16, 32, 64, 128], "norm": "batch"}
NODULE_PATCH = (48, 48, 48)
DENSE_LUNG = (-600.0 - ADAPTER["window"][0]) / (ADAPTER["window"][1] - ADAPTER["window"][0])  # -600 HU, windowed


@dataclass
class CascadeCase(Case):
    """A training case whose ``labels`` are lung sides (0/1/2, nodules merged into their lung), with the nodule
    mask and dense lung voxels (vessels, airway walls, fissures) as hard-negative centres."""

    nodule: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), dtype=bool))
    dense_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int32))


def make_cascade_case(seed: int, spec: PreprocessSpec, overrides: dict[str, Any] | None = None) -> CascadeCase:
    base = make_case(seed, spec, overrides)
    nodule = base.labels == NODULE
    sides = base.labels.copy()
    if nodule.any():
        _, idx = ndimage.distance_transform_edt(~np.isin(sides, (1, 2)), return_indices=True)
        sides[nodule] = sides[idx[0][nodule], idx[1][nodule], idx[2][nodule]]
    dense = np.argwhere((sides > 0) & ~nodule & (base.image.astype(np.float32) > DENSE_LUNG)).astype(np.int32)
    rng = np.random.default_rng([seed, 79])
    if len(dense) > 20000:
        dense = dense[np.sort(rng.choice(len(dense), 20000, replace=False))]
    return CascadeCase(seed=base.seed, image=base.image, midline=base.midline, labels=sides,
                       lung_points=base.lung_points, nodule_centers=base.nodule_centers, nodule=nodule,
                       dense_points=dense)


class NoduleSampler:
    """Cubes for the nodule network: around a nodule, a lung voxel, a dense lung voxel, or anywhere."""

    def __init__(self, patch: tuple[int, int, int] = NODULE_PATCH, p_nodule: float = 0.45, p_lung: float = 0.2,
                 p_dense: float = 0.25) -> None:
        self.patch = patch
        self.p = np.cumsum([p_nodule, p_lung, p_dense])

    def center(self, case: CascadeCase, rng: np.random.Generator) -> np.ndarray:
        u = rng.uniform()
        jitter = np.array(self.patch) // 2 - 4
        for bound, pts in zip(self.p, (case.nodule_centers, case.lung_points, case.dense_points), strict=True):
            if u < bound and len(pts):
                return pts[rng.integers(len(pts))] + rng.integers(-jitter, jitter + 1)
        return rng.integers(0, np.array(case.labels.shape))

    def draw(self, pool: list[CascadeCase], rng: np.random.Generator, batch: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for _ in range(batch):
            case = pool[rng.integers(len(pool))]
            x, y = extract(replace(case, labels=case.nodule.view(np.uint8)), self.center(case, rng), self.patch)
            x = x[:1] * rng.uniform(0.95, 1.05) + rng.uniform(-0.02, 0.02)
            if rng.uniform() < 0.3:
                x = x + rng.normal(0.0, rng.uniform(0.002, 0.01), size=x.shape)
            for axis in range(3):
                if rng.uniform() < 0.5:
                    x, y = np.flip(x, axis + 1), np.flip(y, axis)
            xs.append(np.ascontiguousarray(x, dtype=np.float32))
            ys.append(np.ascontiguousarray(y, dtype=np.float32))
        return np.stack(xs), np.stack(ys)


def nodule_loss(logit: torch.Tensor, target: torch.Tensor, pos_weight: float = 10.0) -> torch.Tensor:
    """Binary cross-entropy (nodule voxels weighted ``pos_weight``) + 1 - soft Dice of the batch (smooth 1, so a
    batch without nodules still pushes every probability toward 0)."""
    bce = F.binary_cross_entropy_with_logits(logit, target, pos_weight=torch.tensor(pos_weight))
    p = torch.sigmoid(logit)
    dice = (2 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + 1 - dice


@dataclass
class CascadeConfig:
    out: Path
    seed: int = 0
    minutes: float = 60.0
    steps: int | None = None  # fixed number of step pairs (one lung + one nodule step) instead of a time budget
    threads: int = 2
    device: str = "cpu"
    precision: str = "bf16"  # forward under bfloat16 autocast; weights, loss and optimiser stay float32
    lr: float = 2e-3
    lr_min: float = 2e-5
    warmup: int = 20
    initial_cases: int = 24
    new_case_voxels: float = 32e6  # lung-patch voxels between two new phantoms
    pool_size: int = 120
    nodule_batch: int = 2
    nodule_patch: tuple[int, int, int] = NODULE_PATCH
    nodule_pos_weight: float = 10.0
    lung_config: dict[str, Any] = field(default_factory=lambda: dict(LUNG_CONFIG))
    nodule_config: dict[str, Any] = field(default_factory=lambda: dict(NODULE_CONFIG))
    adapter: dict[str, Any] = field(default_factory=lambda: dict(ADAPTER))
    phantom_overrides: dict[str, Any] | None = None
    checkpoint_minutes: float = 10.0
    overwrite: bool = False
    log_every: int = 25


def _lr(cfg: CascadeConfig, step: int, frac: float) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(1.0, frac)))


def _autocast(cfg: CascadeConfig) -> contextlib.AbstractContextManager[Any]:
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=cfg.device.split(":")[0], dtype=torch.bfloat16)


def model_config(cfg: CascadeConfig) -> dict[str, Any]:
    return {"lung": dict(cfg.lung_config), "nodule": dict(cfg.nodule_config)}


def train_cascade(cfg: CascadeConfig, log: Callable[[str], None] = print) -> Path:
    if cfg.precision not in ("fp32", "bf16"):
        raise MedCertError("precision must be fp32 or bf16")
    torch.set_num_threads(max(1, int(cfg.threads)))
    torch.manual_seed(cfg.seed)
    spec = PreprocessSpec.from_json(cfg.adapter)
    model = build_model(ARCHITECTURE, model_config(cfg)).to(cfg.device)
    opt_lung = torch.optim.AdamW(model.lung.parameters(), lr=cfg.lr, weight_decay=1e-4)
    opt_nod = torch.optim.AdamW(model.nodule.parameters(), lr=cfg.lr, weight_decay=1e-4)
    lung_sampler = PatchSampler(tuple(cfg.adapter["patch"]), p_nodule=0.2, p_lung=0.55)  # type: ignore[arg-type]
    nod_sampler = NoduleSampler(tuple(cfg.nodule_patch))  # type: ignore[arg-type]
    t0 = time.monotonic()
    pool: list[CascadeCase] = []
    n_cases = 0

    def add_case() -> None:
        nonlocal n_cases
        seed = training_phantom_seed(cfg.seed, n_cases)
        n_cases += 1
        try:
            pool.append(make_cascade_case(seed, spec, cfg.phantom_overrides))
        except (ValueError, MedCertError) as exc:  # a degenerate phantom is skipped, deterministically
            log(f"skipping phantom {seed}: {exc}")
        if len(pool) > cfg.pool_size:
            pool.pop(0)

    for _ in range(cfg.initial_cases):
        add_case()
    log(f"pool of {len(pool)} cases ready after {time.monotonic() - t0:.0f} s")
    step, since_case, last_ckpt = 0, 0.0, time.monotonic()
    ema = {"lung": None, "nodule": None}
    hist: dict[str, list[float]] = {"lung": [], "nodule": []}
    model.train()
    while True:
        frac = step / cfg.steps if cfg.steps else (time.monotonic() - t0) / (cfg.minutes * 60.0)
        if frac >= 1.0:
            break
        if since_case >= cfg.new_case_voxels:
            add_case()
            since_case = 0.0
        lr = _lr(cfg, step, frac)
        for opt in (opt_lung, opt_nod):
            for g in opt.param_groups:
                g["lr"] = lr
        rng = np.random.default_rng([cfg.seed, step])
        x, y = lung_sampler.draw(pool, rng)
        since_case += y.size
        xt, yt = torch.from_numpy(x[None]).to(cfg.device), torch.from_numpy(y[None]).to(cfg.device)
        with _autocast(cfg):
            out = model.lung(xt)
        losses = {"lung": _step(opt_lung, dice_ce_loss(out.float(), yt, focus_class=None))}
        xn, yn = nod_sampler.draw(pool, rng, cfg.nodule_batch)
        xt, yt2 = torch.from_numpy(xn).to(cfg.device), torch.from_numpy(yn[:, None]).to(cfg.device)
        with _autocast(cfg):
            out = model.nodule(xt)
        losses["nodule"] = _step(opt_nod, nodule_loss(out.float(), yt2, cfg.nodule_pos_weight))
        for k, v in losses.items():
            hist[k].append(v)
            ema[k] = v if ema[k] is None else 0.98 * ema[k] + 0.02 * v  # type: ignore[operator]
        step += 1
        if step % cfg.log_every == 0:
            log(f"step {step} t={(time.monotonic() - t0) / 60:.1f} min lr={lr:.2e} lung ema={ema['lung']:.4f} "
                f"nodule ema={ema['nodule']:.4f} cases={n_cases}")
        if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
            save(cfg, model, cfg.out.with_name(cfg.out.stem + ".checkpoint.safetensors"), step, n_cases, hist, t0,
                 overwrite=True)
            last_ckpt = time.monotonic()
    path = save(cfg, model, cfg.out, step, n_cases, hist, t0, overwrite=cfg.overwrite)
    log(f"wrote {path} after {step} step pairs, {n_cases} phantoms, {(time.monotonic() - t0) / 60:.1f} min")
    return path


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def metadata(cfg: CascadeConfig, info: dict[str, Any]) -> dict[str, Any]:
    first, last = training_phantom_seed(cfg.seed, 0), training_phantom_seed(cfg.seed, info["cases"] - 1)
    return {
        "architecture": ARCHITECTURE, "config": model_config(cfg), "adapter": cfg.adapter, "name": MODEL_NAME,
        "version": VERSION, "intended_use": INTENDED_USE,
        "training_data": (f"{info['cases']} synthetic chest CT phantoms (medcert.phantom v{PARAMS_VERSION}), "
                          f"seeds {first}..{last}, training overrides from medcert.training.dataset; "
                          "no patient data"),
        "metrics": {"training": info},
    }


def save(cfg: CascadeConfig, model: torch.nn.Module, path: Path, step: int, n_cases: int,
         hist: dict[str, list[float]], t0: float, overwrite: bool) -> Path:
    info = {"recipe": "cascade", "step_pairs": step, "cases": n_cases,
            "minutes": round((time.monotonic() - t0) / 60, 2), "seed": cfg.seed, "threads": cfg.threads,
            "device": cfg.device, "precision": cfg.precision, "nodule_patch": list(cfg.nodule_patch),
            "nodule_batch": cfg.nodule_batch, "nodule_pos_weight": cfg.nodule_pos_weight,
            "final_loss_mean100": {k: round(float(np.mean(v[-100:] or [float("nan")])), 4) for k, v in hist.items()}}
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return save_weights(path, state, metadata(cfg, info), overwrite=overwrite)


