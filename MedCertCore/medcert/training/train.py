"""Train the demo model (``medcert.lungnodule/1``): its lung and nodule networks, within a wall-clock budget.

Both networks train in one process on one shared, growing pool of phantoms, one step of each in turn:

- the **lung** network (3 classes; nodule voxels count as their lung) on full-width tiles of the inference
  size, so its instance-normalisation statistics match inference;
- the **nodule** network (batch-normalised, so at inference its output does not depend on the tile) on small
  cubes around nodules, lung voxels, dense lung voxels (vessels: the hard negatives) and anywhere, with random
  flips; weighted binary cross-entropy + soft Dice of the nodule mask, optionally + a per-nodule detection loss.

The forward passes run under bfloat16 autocast by default (master weights, losses and optimisers in float32);
inference is always float32.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medcert.errors import MedCertError
from medcert.inference.preprocess import PreprocessSpec
from medcert.models import build_model
from medcert.phantom.params import PARAMS_VERSION
from medcert.training.config import (
    ADAPTER,
    DENSE_HU,
    INTENDED_USE,
    MODEL_NAME,
    MODEL_VERSION,
    NODULE_PATCH,
    STAGE1_ARCHITECTURE,
    STAGE1_CONFIG,
    training_phantom_seed,
)
from medcert.training.dataset import (
    NODULE_MIXES,
    TINY_NODULE_MM,
    NoduleSampler,
    PatchSampler,
    TrainingCase,
    make_training_case,
)
from medcert.training.loss import detection_loss, dice_ce_loss, nodule_loss, nodule_targets
from medcert.weights import save_weights

PRECISIONS = ("fp32", "bf16")
STORAGE = "float16"


@dataclass
class TrainConfig:
    out: Path
    seed: int = 0
    minutes: float = 62.0
    steps: int | None = None  # fixed number of step pairs (one lung + one nodule step): machine-independent
    threads: int = 2
    device: str = "cpu"
    precision: str = "bf16"
    lr: float = 2e-3
    lr_min: float = 2e-5
    warmup: int = 20
    initial_cases: int = 24
    new_case_voxels: float = 32e6  # lung-patch voxels trained between two new phantoms
    pool_size: int = 120
    nodule_batch: int = 2
    nodule_pos_weight: float = 10.0
    nodule_patch: tuple[int, int, int] = NODULE_PATCH
    model_config: dict[str, Any] = field(default_factory=lambda: {k: dict(v) for k, v in STAGE1_CONFIG.items()})
    adapter: dict[str, Any] = field(default_factory=lambda: dict(ADAPTER))
    phantom_overrides: dict[str, Any] | None = None  # None: medcert.training.dataset.training_overrides
    # Second stage: start from a trained file (same architecture and config) and train only the nodule network,
    # each nodule voxel weighted by its component's size weight (small nodules count as much as large ones).
    init: Path | None = None
    nodule_only: bool = False
    size_weighting: bool = False
    detection_weight: float = 0.0  # weight of medcert.training.loss.detection_loss in the nodule loss
    # Cross-entropy weight of nodule voxels in the lung network's loss (they are labelled as their lung): the
    # composite calls a voxel nodule only where the lung network calls it lung, so a large solid or juxtapleural
    # nodule that the lung network leaves out as "background" (soft tissue) is lost however sure the nodule
    # network is.
    lung_nodule_weight: float = 1.0
    # With size weighting: multiplies the weight of faint (ground-glass, part-solid) and juxtapleural nodules,
    # the kinds the nodule network misses most (see medcert.training.dataset.hard_nodule_components).
    hard_nodule_weight: int = 1
    # Lung voxels above this (not nodule) are sampled as the nodule network's hard negatives.
    dense_hu: float = DENSE_HU
    # Nodule plan of the training phantoms (medcert.training.dataset.training_overrides): "default" or "hard".
    nodule_mix: str = "default"
    checkpoint_minutes: float = 10.0
    overwrite: bool = False
    log_every: int = 25


def _lr(cfg: TrainConfig, step: int, frac: float) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(1.0, frac)))


def _autocast(cfg: TrainConfig) -> contextlib.AbstractContextManager[Any]:
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=cfg.device.split(":")[0], dtype=torch.bfloat16)


def _input(x: np.ndarray, device: str) -> torch.Tensor:
    """A ``[B, C, X, Y, Z]`` batch on ``device`` in the channels-last layout of the model's weights."""
    return torch.from_numpy(x).to(device, memory_format=torch.channels_last_3d)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    if cfg.precision not in PRECISIONS:
        raise MedCertError(f"precision must be one of {', '.join(PRECISIONS)}")
    if cfg.nodule_mix not in NODULE_MIXES:
        raise MedCertError(f"nodule mix must be one of {', '.join(NODULE_MIXES)}")
    torch.set_num_threads(max(1, int(cfg.threads)))
    torch.manual_seed(cfg.seed)
    spec = PreprocessSpec.from_json(cfg.adapter)
    model = build_model(STAGE1_ARCHITECTURE, cfg.model_config)
    init_info = _load_init(cfg, model) if cfg.init is not None else None
    # Channels-last 3-D layout: oneDNN's convolutions run 1.2-1.5x faster per training step on CPU
    # (python -m medcert.training.bench_steps).
    model = model.to(cfg.device, memory_format=torch.channels_last_3d)
    opt_lung = torch.optim.AdamW(model.lung.parameters(), lr=cfg.lr, weight_decay=1e-4)
    opt_nod = torch.optim.AdamW(model.nodule.parameters(), lr=cfg.lr, weight_decay=1e-4)
    lung_sampler = PatchSampler(tuple(cfg.adapter["patch"]), p_nodule=0.2, p_lung=0.55)  # type: ignore[arg-type]
    nod_sampler = NoduleSampler(tuple(cfg.nodule_patch))  # type: ignore[arg-type]
    t0 = time.monotonic()
    pool: list[TrainingCase] = []
    n_cases = 0

    def add_case() -> None:
        nonlocal n_cases
        seed = training_phantom_seed(cfg.seed, n_cases)
        n_cases += 1
        try:
            pool.append(make_training_case(seed, spec, cfg.phantom_overrides, cfg.hard_nodule_weight,
                                           cfg.dense_hu, cfg.nodule_mix))
        except (ValueError, MedCertError) as exc:  # a degenerate phantom is skipped, deterministically
            log(f"skipping phantom {seed}: {exc}")
        if len(pool) > cfg.pool_size:
            pool.pop(0)

    for _ in range(cfg.initial_cases):
        add_case()
    log(f"pool of {len(pool)} cases ready after {time.monotonic() - t0:.0f} s")
    step, since_case, last_ckpt = 0, 0.0, time.monotonic()
    ema: dict[str, float] = {}
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
        losses = {}
        if not cfg.nodule_only:
            x, y, nod = lung_sampler.draw_with_nodules(pool, rng)
            since_case += y.size
            xt, yt = _input(x[None], cfg.device), torch.from_numpy(y[None]).to(cfg.device)
            vw = None
            if cfg.lung_nodule_weight != 1.0 and nod is not None and nod.any():
                vw = torch.from_numpy(np.where(nod, np.float32(cfg.lung_nodule_weight), np.float32(1.0))[None])
                vw = vw.to(cfg.device)
            with _autocast(cfg):
                out = model.lung(xt)
            losses["lung"] = _step(opt_lung, dice_ce_loss(out.float(), yt, voxel_weight=vw))
        xn, yn = nod_sampler.draw(pool, rng, cfg.nodule_batch)
        if cfg.nodule_only:
            since_case += yn.size
        sizes = torch.from_numpy(yn[:, None]).to(cfg.device)
        target, weight = nodule_targets(sizes, cfg.size_weighting)
        with _autocast(cfg):
            out = model.nodule(_input(xn, cfg.device)).float()
        loss = nodule_loss(out, target, cfg.nodule_pos_weight, weight)
        if cfg.detection_weight > 0:
            loss = loss + cfg.detection_weight * detection_loss(out, sizes)
        losses["nodule"] = _step(opt_nod, loss)
        for k, v in losses.items():
            hist[k].append(v)
            ema[k] = v if k not in ema else 0.98 * ema[k] + 0.02 * v
        step += 1
        if step % cfg.log_every == 0:
            losses_text = " ".join(f"{k} ema={v:.4f}" for k, v in ema.items())
            log(f"step {step} t={(time.monotonic() - t0) / 60:.1f} min lr={lr:.2e} {losses_text} cases={n_cases}")
        if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
            _save(cfg, model, cfg.out.with_name(cfg.out.stem + ".checkpoint.safetensors"), step, n_cases, hist, t0,
                  overwrite=True, init=init_info)
            last_ckpt = time.monotonic()
    path = _save(cfg, model, cfg.out, step, n_cases, hist, t0, overwrite=cfg.overwrite, init=init_info)
    unit = "nodule steps" if cfg.nodule_only else "step pairs"
    log(f"wrote {path} after {step} {unit}, {n_cases} phantoms, {(time.monotonic() - t0) / 60:.1f} min")
    return path


def metadata(cfg: TrainConfig, info: dict[str, Any], init: dict[str, Any] | None = None) -> dict[str, Any]:
    first, last = training_phantom_seed(cfg.seed, 0), training_phantom_seed(cfg.seed, info["cases"] - 1)
    data = (f"{info['cases']} synthetic chest CT phantoms (medcert.phantom v{PARAMS_VERSION}), seeds {first}..{last}, "
            "training overrides from medcert.training.dataset; no patient data")
    if init is not None:  # a later stage: its own phantoms, then those of the file it started from
        data = f"this stage: {data}. Earlier stage: {init['training_data']}"
    return {
        "architecture": STAGE1_ARCHITECTURE, "config": cfg.model_config, "adapter": cfg.adapter, "name": MODEL_NAME,
        "version": MODEL_VERSION, "intended_use": INTENDED_USE, "training_data": data,
        "metrics": {"training": info},
    }


def _load_init(cfg: TrainConfig, model: torch.nn.Module) -> dict[str, Any]:
    """Load ``cfg.init`` into ``model``; returns its digest and training record for the new file's metadata."""
    from medcert.weights import load_weights

    w = load_weights(cfg.init)  # type: ignore[arg-type]
    if w.architecture != STAGE1_ARCHITECTURE or w.config != cfg.model_config or w.adapter != cfg.adapter:
        raise MedCertError(f"{cfg.init}: architecture, config or adapter differ from this training run")
    model.load_state_dict(w.state_dict)  # same architecture and config; float16 storage is cast on copy
    return {"file_sha256": w.digest_hex, "training": w.metrics.get("training", {}), "training_data": w.training_data}


def _save(cfg: TrainConfig, model: torch.nn.Module, path: Path, step: int, n_cases: int,
          hist: dict[str, list[float]], t0: float, overwrite: bool, init: dict[str, Any] | None = None) -> Path:
    info: dict[str, Any] = {
        "steps" if cfg.nodule_only else "step_pairs": step, "cases": n_cases,
        "minutes": round((time.monotonic() - t0) / 60, 2), "seed": cfg.seed, "threads": cfg.threads,
        "device": cfg.device, "precision": cfg.precision, "nodule_patch": list(cfg.nodule_patch),
        "nodule_batch": cfg.nodule_batch, "nodule_pos_weight": cfg.nodule_pos_weight,
        "final_loss_mean100": {k: round(float(np.mean(v[-100:])), 4) for k, v in hist.items() if v}}
    if cfg.nodule_only or cfg.size_weighting:
        info.update(nodule_only=cfg.nodule_only, size_weighting=cfg.size_weighting, lr=cfg.lr)
    if cfg.size_weighting:
        info["tiny_nodule_mm"] = TINY_NODULE_MM
        if cfg.hard_nodule_weight != 1:
            info["hard_nodule_weight"] = cfg.hard_nodule_weight
    if cfg.dense_hu != DENSE_HU:
        info["dense_hu"] = cfg.dense_hu
    if cfg.nodule_mix != "default" and cfg.phantom_overrides is None:  # explicit overrides replace the mix
        info["nodule_mix"] = cfg.nodule_mix
    if cfg.detection_weight > 0:
        info["detection_weight"] = cfg.detection_weight
    if cfg.lung_nodule_weight != 1.0 and not cfg.nodule_only:
        info["lung_nodule_weight"] = cfg.lung_nodule_weight
    if init is not None:
        info["init"] = {"file_sha256": init["file_sha256"], "training": init["training"]}
    info["storage"] = STORAGE
    return save_weights(path, storage_state(model.state_dict()), metadata(cfg, info, init), overwrite=overwrite)


def storage_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors as float16 (half the file; both networks in float32 would exceed 10 MB), integer
    ones (batch-norm counters) unchanged. The network computes in float32: loading casts the stored values."""
    return {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().to("cpu"))
            for k, v in state.items()}


def update_metrics(path: Path, metrics: dict[str, Any]) -> Path:
    """Rewrite ``medcert.metrics`` of a weights file (tensors unchanged; the file digest changes)."""
    from medcert.weights import load_weights

    w = load_weights(path)
    return save_weights(path, w.state_dict, w.metadata({**w.metrics, **metrics}), overwrite=True)
