"""Stage 3 of the demo model: train the candidate classifier and assemble ``medcert.lungnodule/2``.

    python -m medcert.training.classifier --stage1 FILE --out FILE [--seed 2] [--phantoms 160] [--n-cal 16] \
        [--max-fp 1.0] [--jobs 2] [--cache DIR] [--mix hard] [--extract-offset 2.5] [--context 0] \
        [--extract-precision fp32]

``--stage1`` is a calibrated ``medcert.lungnodule/1`` file. Candidates (:mod:`medcert.training.candidate_data`,
nodule log-odds raised by ``--extract-offset``) come from training phantoms ``training_phantom_seed(seed, i)``
(nodule ``--mix``) and from the calibration phantoms; the classifier (input ``S``³: its patch, or ``--context``)
trains on balanced batches of training candidates (random ``S``³ crops of ``(S+2)``³ patches, flips, x/y swap),
and its output bias is then shifted so that on the calibration candidates of the file's own offset, scored exactly
as at inference, the most nodules ≥ 6 mm are hit with at most ``--max-fp`` false candidates per scan.
``--extract-precision bf16`` finds the training candidates with a bfloat16 sliding window (the calibration
candidates stay float32, as at inference).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medcert.errors import MedCertError
from medcert.models.lung_nodule_two_stage import CLASSIFIER_BIAS, TwoStageLungNoduleNet
from medcert.training.candidate_data import (
    PRECISIONS,
    CandidateSet,
    check_precision,
    extract_candidates,
    logits_path,
    overrides_tag,
    phantom_overrides,
)
from medcert.training.config import (
    ARCHITECTURE,
    CALIBRATION_SEED_START,
    CANDIDATES,
    CLASSIFIER,
    MODEL_VERSION,
    STAGE1_ARCHITECTURE,
    training_phantom_seed,
)
from medcert.training.dataset import NODULE_MIXES
from medcert.training.evaluate import SENS_MIN_DIAMETER
from medcert.training.parallel import map_seeds, set_threads, worker_threads

SHIFT = 2  # extracted patches are this much wider than the classifier's input: one voxel of random shift each way

STEPS = 2500  # classifier training steps of the shipped recipe (3.1.0)


def _extract(job: tuple[int, bool], stage1: str, cache: str, threads: int | None, offset: float, size: int,
             mix: str, closing: int = 0, precision: str = "fp32") -> str:
    """Candidates of phantom ``job = (seed, training)`` (training phantoms: nodule ``mix`` and a sliding window in
    ``precision``; others: float32) at candidate ``offset`` after a lung-mask ``closing``, patches ``size``³,
    cached as ``cache/candidates-{key}-{seed}.npz`` with the stage-1 logits at :func:`logits_path` (reused when
    present; ``cache`` is specific to the stage-1 file)."""
    seed, training = job
    ov = phantom_overrides(seed, training, mix)
    precision = precision if training else "fp32"
    settings = {"offset": offset, "size": size, "nms": CANDIDATES["nms"], "limit": CANDIDATES["limit"],
                "phantom": ov, **({"closing": closing} if closing else {}),
                **({"precision": precision} if precision != "fp32" else {})}
    key = overrides_tag(settings)
    out = Path(cache) / f"candidates{key}-{seed}.npz"
    if out.is_file():
        return str(out)
    from medcert.atomic import atomic_write_bytes
    from medcert.inference import WeightsAdapter
    from medcert.weights import load_weights

    set_threads(threads)
    adapter = WeightsAdapter.from_weights(load_weights(stage1))
    cs = extract_candidates(seed, adapter, adapter.network().requires_grad_(False), offset=offset,
                            nms=CANDIDATES["nms"], limit=CANDIDATES["limit"], size=size, overrides=ov,
                            logits_path=logits_path(Path(cache), seed, ov, precision), closing=closing,
                            precision=precision)
    atomic_write_bytes(out, cs.to_bytes(), overwrite=True)
    return str(out)


def _augment(x: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Random ``size``³ crops, flips of each axis and an x/y swap."""
    out = np.empty((x.shape[0], x.shape[1], size, size, size), np.float32)
    for i in range(x.shape[0]):
        o = rng.integers(0, x.shape[-1] - size + 1, size=3)
        p = x[i, :, o[0]:o[0] + size, o[1]:o[1] + size, o[2]:o[2] + size]
        for ax in (1, 2, 3):
            if rng.random() < 0.5:
                p = np.flip(p, ax)
        out[i] = np.swapaxes(p, 1, 2) if rng.random() < 0.5 else p
    return out


def train_classifier(sets: list[CandidateSet], *, steps: int = STEPS, seed: int = 0, batch: int = 32,
                     lr: float = 1e-3, threads: int = 2, config: dict[str, Any] | None = None) -> nn.Module:
    """Balanced batches (half nodule candidates), BCE, AdamW + one-cycle, bfloat16 autocast."""
    from medcert.models.candidate_classifier import CandidateClassifier

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    x = np.concatenate([s.patches for s in sets])
    y = np.concatenate([(s.nodule >= 0) for s in sets]).astype(np.float32)
    pos, neg = np.flatnonzero(y > 0), np.flatnonzero(y == 0)
    if not len(pos) or not len(neg):
        raise ValueError("training candidates need both nodule and false candidates")
    config = CLASSIFIER if config is None else config
    net = CandidateClassifier(**config)
    size = net.input_size
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    loss_fn = nn.BCEWithLogitsLoss()
    net.train()
    t0 = time.perf_counter()
    for step in range(steps):
        idx = np.concatenate([rng.choice(pos, batch // 2), rng.choice(neg, batch - batch // 2)])
        xb = torch.from_numpy(_augment(x[idx], rng, size))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(xb)
        loss = loss_fn(out.float(), torch.from_numpy(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"classifier step {step}: loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"classifier: {len(pos)} nodule and {len(neg)} false candidates, {steps} steps in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return net.eval()


def centre_crop(patches: np.ndarray, size: int) -> torch.Tensor:
    o = (patches.shape[-1] - size) // 2
    return torch.from_numpy(np.ascontiguousarray(patches[:, :, o:o + size, o:o + size, o:o + size], np.float32))


def froc_point(scores: list[np.ndarray], sets: list[CandidateSet], threshold: float) -> tuple[int, int, float]:
    """Nodules ≥ 6 mm hit by a candidate scoring above ``threshold``, their number, false candidates per scan."""
    found = total = fp = 0
    for s, cs in zip(scores, sets, strict=True):
        keep = s > threshold
        total += int((cs.diameters >= SENS_MIN_DIAMETER).sum())
        hit = set(cs.nodule[keep & (cs.nodule >= 0)].tolist())
        found += sum(1 for j in hit if cs.diameters[j] >= SENS_MIN_DIAMETER)
        fp += int((keep & (cs.nodule < 0)).sum())
    return found, total, fp / max(len(sets), 1)


def choose_threshold(scores: list[np.ndarray], sets: list[CandidateSet], max_fp: float) -> dict[str, Any]:
    """The lowest threshold (midway between two distinct scores) with at most ``max_fp`` false candidates/scan."""
    levels = np.unique(np.concatenate(scores)) if scores else np.zeros(0)
    best: dict[str, Any] | None = None
    for i in range(len(levels) - 1, -1, -1):
        thr = float(levels[i - 1] + levels[i]) / 2 if i else float(levels[0]) - 1.0
        found, total, fp = froc_point(scores, sets, thr)
        if fp > max_fp:
            break
        best = {"threshold": thr, "found_ge6mm": found, "nodules_ge6mm": total, "fp_per_scan": fp}
    if best is None:
        top = float(levels[-1]) + 1.0 if len(levels) else 0.0
        found, total, fp = froc_point(scores, sets, top)
        best = {"threshold": top, "found_ge6mm": found, "nodules_ge6mm": total, "fp_per_scan": fp}
    return best


def at_offset(cs: CandidateSet, offset: float) -> CandidateSet:
    """The candidates of ``cs`` that exist when the nodule log-odds are raised by ``offset`` (margin + offset > 0;
    ``cs`` extracted at an offset at least as high)."""
    from dataclasses import replace

    keep = cs.margin + offset > 0
    return replace(cs, patches=cs.patches[keep], margin=cs.margin[keep], nodule=cs.nodule[keep])


def assemble(stage1: Any, classifier: nn.Module, version: str, config: dict[str, Any] | None = None,
             candidates: dict[str, Any] | None = None) -> tuple[dict, dict]:
    """State dict and metadata of the two-stage file (float16 storage like the stage-1 networks; ``config``: the
    classifier's, default ``CLASSIFIER``; ``candidates``: stage 2's settings, default ``CANDIDATES``)."""
    from medcert.training.train import storage_state

    state = {f"stage1.{k}": v for k, v in stage1.state_dict.items()}
    state.update({f"classifier.{k}": v for k, v in storage_state(classifier.state_dict()).items()})
    inherited = {k: v for k, v in stage1.metrics.items() if k != "held_out_phantoms"}  # measured on stage 1 alone
    meta = stage1.metadata(inherited)
    meta.update(architecture=ARCHITECTURE, version=version,
                config={**stage1.config, "classifier": dict(config or CLASSIFIER),
                        "candidates": dict(candidates or CANDIDATES)})
    return state, meta


def build_two_stage(stage1_path: Path, out: Path, *, run_seed: int, phantoms: int, n_cal: int, max_fp: float,
                    jobs: int, cache: Path, steps: int, version: str, threads: int | None = None,
                    overwrite: bool = False, mix: str = "hard", extract_offset: float | None = None,
                    context: int = 0, closing: int = 0, symmetric: bool = False, grow: int = 0,
                    extract_precision: str = "fp32") -> dict[str, Any]:
    """Extract candidates (after a lung-mask ``closing``; training phantoms' sliding window in
    ``extract_precision``), train, calibrate the bias, write ``out`` (stage 2 with that ``closing``, ``symmetric``
    edges and accepted components grown by ``grow`` when set); returns the stage-3 record."""
    from medcert.models import build_model
    from medcert.weights import load_weights, save_weights

    stage1 = load_weights(stage1_path)
    if stage1.architecture != STAGE1_ARCHITECTURE or "operating_point" not in stage1.metrics:
        raise MedCertError(f"{stage1_path}: expected a calibrated {STAGE1_ARCHITECTURE} file "
                           "(python -m medcert.training.operating_point)")
    if out.exists() and not overwrite:
        raise MedCertError(f"{out} exists (pass --overwrite to replace it)")
    check_precision(extract_precision)
    candidates = {**CANDIDATES, **({"closing": closing} if closing else {}),
                  **({"symmetric": True} if symmetric else {}), **({"grow": grow} if grow else {})}
    build_model(ARCHITECTURE, {**stage1.config, "classifier": CLASSIFIER, "candidates": candidates})  # validates
    wt = worker_threads(threads, jobs)
    config = {**CLASSIFIER, "context": context} if context else dict(CLASSIFIER)
    offset = CANDIDATES["offset"] if extract_offset is None else float(extract_offset)
    if offset < CANDIDATES["offset"]:
        raise MedCertError(f"--extract-offset must be at least the model's candidate offset {CANDIDATES['offset']}")
    jobs_list = ([(training_phantom_seed(run_seed, i), True) for i in range(phantoms)]
                 + [(CALIBRATION_SEED_START + i, False) for i in range(n_cal)])
    cache = cache / stage1.digest_hex[:16]  # candidates of this stage-1 file only
    cache.mkdir(parents=True, exist_ok=True)
    size = max(config["patch"], context) + SHIFT
    fn = functools.partial(_extract, stage1=str(stage1_path), cache=str(cache), threads=wt, offset=offset,
                           size=size, mix=mix, closing=closing, precision=extract_precision)
    paths = list(map_seeds(fn, jobs_list, jobs))
    sets = [CandidateSet.load(Path(p)) for p in paths]
    train_sets, cal_sets = sets[:phantoms], [at_offset(s, CANDIDATES["offset"]) for s in sets[phantoms:]]
    t1 = time.perf_counter()
    net = train_classifier(train_sets, steps=steps, seed=run_seed, threads=threads or 2, config=config)
    t_train = time.perf_counter() - t1
    state, meta = assemble(stage1, net, version, config, candidates)
    model = build_model_from(meta, state)
    with torch.inference_mode():
        scores = [model.score(centre_crop(cs.patches, size - SHIFT)).numpy() for cs in cal_sets]
    point = choose_threshold(scores, cal_sets, max_fp)
    bias = state[CLASSIFIER_BIAS].to(torch.float32) - point["threshold"]
    state[CLASSIFIER_BIAS] = bias.to(state[CLASSIFIER_BIAS].dtype)
    record = {"training_phantoms": [training_phantom_seed(run_seed, 0), training_phantom_seed(run_seed, phantoms - 1)],
              "candidates": int(sum(len(s.nodule) for s in train_sets)),
              "nodule_candidates": int(sum(int((s.nodule >= 0).sum()) for s in train_sets)),
              "nodule_mix": mix, "extract_offset": offset, **({"extract_closing": closing} if closing else {}),
              **({"extract_precision": extract_precision} if extract_precision != "fp32" else {}),
              "steps": steps, "extract_worker_minutes": round(sum(x.seconds for x in sets) / 60, 1),
              "extract_jobs": jobs, "train_minutes": round(t_train / 60, 1),
              "calibration": {"seeds": [CALIBRATION_SEED_START, CALIBRATION_SEED_START + n_cal - 1],
                              "rule": {"max_false_candidates_per_scan": max_fp}, **point}}
    meta["metrics"] = {**meta["metrics"], "classifier": record}
    meta["training_data"] = classifier_training_data(record["training_phantoms"], stage1.training_data, mix)
    save_weights(out, state, meta, overwrite=overwrite)
    return record


def classifier_training_data(seeds: list[int], stage1: str, mix: str = "hard") -> str:
    """The file's training-data description: the classifier's phantoms, then the dense networks' own."""
    from medcert.phantom.params import PARAMS_VERSION

    return (f"Candidate classifier: {seeds[1] - seeds[0] + 1} synthetic chest CT phantoms (medcert.phantom "
            f"v{PARAMS_VERSION}), seeds {seeds[0]}..{seeds[1]}, nodule-rich mix '{mix}' at the generator's "
            f"acquisition; no patient data. Dense networks: {stage1}")


def build_model_from(meta: dict[str, Any], state: dict[str, torch.Tensor]) -> TwoStageLungNoduleNet:
    """The float32 network of a not-yet-written two-stage file (stored values, as inference will see them)."""
    from medcert.models import build_model

    model = build_model(ARCHITECTURE, meta["config"])
    model.load_state_dict(state, strict=True)
    return model.eval()  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medcert.training.classifier", description=__doc__.splitlines()[0])
    ap.add_argument("--stage1", required=True, help="calibrated medcert.lungnodule/1 weights")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=2, help="run seed of the training phantoms (default 2)")
    ap.add_argument("--phantoms", type=int, default=160)
    ap.add_argument("--n-cal", type=int, default=16)
    ap.add_argument("--max-fp", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--version", default=MODEL_VERSION)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--cache", help="candidate cache folder (default: next to --out)")
    ap.add_argument("--mix", default="hard", choices=NODULE_MIXES[1:], help="nodule mix of the training phantoms")
    ap.add_argument("--extract-offset", type=float, help="candidate offset of the training candidates "
                    f"(default: the model's, {CANDIDATES['offset']})")
    ap.add_argument("--context", type=int, default=0,
                    help="side of the classifier's context patch in grid voxels (0: none)")
    ap.add_argument("--closing", type=int, default=0,
                    help="close the lung mask by a ball of this many grid voxels before the candidates are found, "
                         "in training and in the file's stage 2 (0: none)")
    ap.add_argument("--symmetric", action="store_true",
                    help="accepted components keep a margin of at least the candidate offset")
    ap.add_argument("--grow", type=int, default=0,
                    help="accepted components grow by this many grid voxels in the file's stage 2 (0: none)")
    ap.add_argument("--extract-precision", default="fp32", choices=PRECISIONS,
                    help="sliding window of the training phantoms' candidates (calibration: always fp32)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    if args.phantoms < 1 or args.n_cal < 1 or args.steps < 1 or args.max_fp < 0:
        ap.error("--phantoms, --n-cal and --steps must be positive and --max-fp non-negative")
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out.parent / "candidates"
    try:
        record = build_two_stage(Path(args.stage1), out, run_seed=args.seed, phantoms=args.phantoms,
                                 n_cal=args.n_cal, max_fp=args.max_fp, jobs=args.jobs, cache=cache, steps=args.steps,
                                 version=args.version, threads=args.threads, overwrite=args.overwrite,
                                 mix=args.mix, extract_offset=args.extract_offset, context=args.context,
                                 closing=args.closing, symmetric=args.symmetric, grow=args.grow,
                                 extract_precision=args.extract_precision)
    except (MedCertError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
