"""Train the demo lung/nodule model on a growing pool of phantoms within a wall-clock budget."""

from __future__ import annotations

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
    ARCHITECTURE,
    INTENDED_USE,
    MODEL_CONFIG,
    MODEL_NAME,
    MODEL_VERSION,
    PATCH,
    training_phantom_seed,
)
from medcert.training.dataset import Case, PatchSampler, make_case
from medcert.training.loss import dice_ce_loss
from medcert.weights import save_weights


@dataclass
class TrainConfig:
    out: Path
    seed: int = 0
    minutes: float = 55.0
    steps: int | None = None  # fixed step count: reproducible schedule independent of machine speed
    threads: int = 1
    device: str = "cpu"
    lr: float = 2e-3
    lr_min: float = 2e-5
    warmup: int = 20
    initial_cases: int = 24
    new_case_voxels: float = 8e6  # add a phantom to the pool after this many trained voxels
    pool_size: int = 120
    # (end fraction of the run, patch [X, Y, Z]); by default the adapter's inference patch throughout, so
    # instance-normalisation statistics match inference.
    patch_schedule: tuple[tuple[float, tuple[int, int, int]], ...] = ((1.0, PATCH),)
    model_config: dict[str, Any] = field(default_factory=lambda: dict(MODEL_CONFIG))
    adapter: dict[str, Any] = field(default_factory=lambda: dict(ADAPTER))
    phantom_overrides: dict[str, Any] | None = None  # None: medcert.training.dataset.training_overrides
    checkpoint_minutes: float = 10.0
    overwrite: bool = False
    log_every: int = 25


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: np.ndarray, y: np.ndarray,
               device: str) -> float:
    model.train()
    xt = torch.from_numpy(x[None]).to(device)
    yt = torch.from_numpy(y[None]).to(device)
    loss = dice_ce_loss(model(xt), yt)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _lr(cfg: TrainConfig, step: int, frac: float) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(1.0, frac)))


def metadata(cfg: TrainConfig, info: dict[str, Any]) -> dict[str, Any]:
    first, last = training_phantom_seed(cfg.seed, 0), training_phantom_seed(cfg.seed, info["cases"] - 1)
    return {
        "architecture": ARCHITECTURE, "config": cfg.model_config, "adapter": cfg.adapter, "name": MODEL_NAME,
        "version": MODEL_VERSION, "intended_use": INTENDED_USE,
        "training_data": (f"{info['cases']} synthetic chest CT phantoms (medcert.phantom v{PARAMS_VERSION}), "
                          f"seeds {first}..{last}, training overrides from medcert.training.dataset; "
                          "no patient data"),
        "metrics": {"training": info},
    }


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    torch.set_num_threads(max(1, int(cfg.threads)))
    torch.manual_seed(cfg.seed)
    spec = PreprocessSpec.from_json(cfg.adapter)
    model = build_model(ARCHITECTURE, cfg.model_config).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    samplers = [(end, PatchSampler(tuple(p))) for end, p in cfg.patch_schedule]  # type: ignore[arg-type]
    t0 = time.monotonic()
    budget = cfg.minutes * 60.0
    pool: list[Case] = []
    n_cases = 0

    def add_case() -> None:
        nonlocal n_cases
        seed = training_phantom_seed(cfg.seed, n_cases)
        n_cases += 1
        try:
            pool.append(make_case(seed, spec, cfg.phantom_overrides))
        except (ValueError, MedCertError) as exc:  # a degenerate phantom is skipped, deterministically
            log(f"skipping phantom {seed}: {exc}")
        if len(pool) > cfg.pool_size:
            pool.pop(0)

    for _ in range(cfg.initial_cases):
        add_case()
    log(f"pool of {len(pool)} cases ready after {time.monotonic() - t0:.0f} s")
    step, ema, last_ckpt, since_case = 0, None, time.monotonic(), 0.0
    losses: list[float] = []
    while True:
        elapsed = time.monotonic() - t0
        frac = step / cfg.steps if cfg.steps else elapsed / budget
        if frac >= 1.0:
            break
        if since_case >= cfg.new_case_voxels:
            add_case()
            since_case = 0.0
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step, frac)
        sampler = next(s for end, s in samplers if frac < end or end >= 1.0)
        x, y = sampler.draw(pool, np.random.default_rng([cfg.seed, step]))
        since_case += y.size
        loss = train_step(model, opt, x, y, cfg.device)
        losses.append(loss)
        ema = loss if ema is None else 0.98 * ema + 0.02 * loss
        step += 1
        if step % cfg.log_every == 0:
            log(f"step {step} t={elapsed / 60:.1f} min patch={list(y.shape)} lr={opt.param_groups[0]['lr']:.2e} "
                f"loss={loss:.4f} ema={ema:.4f} cases={n_cases}")
        if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
            _save(cfg, model, cfg.out.with_name(cfg.out.stem + ".checkpoint.safetensors"), step, n_cases, losses,
                  t0, overwrite=True)
            last_ckpt = time.monotonic()
    path = _save(cfg, model, cfg.out, step, n_cases, losses, t0, overwrite=cfg.overwrite)
    log(f"wrote {path} after {step} steps, {n_cases} phantoms, {(time.monotonic() - t0) / 60:.1f} min")
    return path


def _save(cfg: TrainConfig, model: torch.nn.Module, path: Path, step: int, n_cases: int, losses: list[float],
          t0: float, overwrite: bool) -> Path:
    tail = losses[-100:] or [float("nan")]
    info = {"steps": step, "cases": n_cases, "minutes": round((time.monotonic() - t0) / 60, 2),
            "final_loss_mean100": round(float(np.mean(tail)), 4), "seed": cfg.seed, "threads": cfg.threads,
            "device": cfg.device, "patch_schedule": [[e, list(p)] for e, p in cfg.patch_schedule]}
    state = {k: v.detach().to("cpu").float() for k, v in model.state_dict().items()}
    return save_weights(path, state, metadata(cfg, info), overwrite=overwrite)


def update_metrics(path: Path, metrics: dict[str, Any]) -> Path:
    """Rewrite ``medcert.metrics`` of a weights file (tensors unchanged; the file digest changes)."""
    from medcert.weights import load_weights

    w = load_weights(path)
    return save_weights(path, w.state_dict, w.metadata({**w.metrics, **metrics}), overwrite=True)
