"""Choose the nodule operating point on calibration phantoms and bake it into the head bias.

    python -m medcert.training.operating_point --weights FILE --out FILE [--n 16] \
        (--max-fp 0.5 | --min-sensitivity 0.9)

Training up-weights nodule voxels (they are ~1e-4 of a tile), which biases the network toward calling
nodules. The labelmap is the argmax of the logits, so adding a constant ``b`` to the nodule logit is
the same as moving the decision threshold. This script segments calibration phantoms (seeds from
``CALIBRATION_SEED_START``: disjoint from training and from the held-out evaluation seeds) once, sweeps
``b``, and keeps either the value with the highest sensitivity for nodules ≥ 6 mm whose false-positive rate
stays at or below ``--max-fp`` per scan, or the one with the fewest false positives that keeps
``--min-sensitivity``. ``b`` is added to the nodule logit's bias (``nodule_bias``): the shipped network
*is* the calibrated one, and the certificate's weights digest covers it.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medcert.training.config import CALIBRATION_SEED_START
from medcert.training.evaluate import FP_MIN_DIAMETER, SENS_MIN_DIAMETER
from medcert.training.metrics import lung_scores, nodule_scores
from medcert.training.parallel import map_seeds, set_threads, worker_threads

OFFSETS = tuple(round(4.0 - 0.5 * i, 2) for i in range(0, 33))  # +4 .. -12 logits


Case = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Any]]


def _case(seed: int, adapter: Any, network: torch.nn.Module, anomaly: int) -> Case:
    """One calibration phantom on the canonical grid: the nodule logit, the best other logit and its class,
    the labels, the geometry and the nodules."""
    from medcert.inference.engine import sliding_window_logits
    from medcert.inference.preprocess import labels_to_grid
    from medcert.phantom import generate_chest_ct

    ph = generate_chest_ct(seed)
    prep = adapter.preprocess(ph.volume)
    logits = sliding_window_logits(network, prep.tensor, adapter.patch, adapter.overlap)
    others = logits.copy()
    others[anomaly] = -np.inf
    return (logits[anomaly].copy(), others.max(axis=0), others.argmax(axis=0).astype(np.uint8),
            labels_to_grid(ph.labels, ph.volume.ijk_to_ras, prep), np.asarray(prep.grid_to_ras), ph.nodules)


def _case_path(seed: int, weights_path: str, threads: int | None) -> Case:
    from medcert.inference import WeightsAdapter
    from medcert.weights import load_weights

    set_threads(threads)
    w = load_weights(weights_path)
    adapter = WeightsAdapter.from_weights(w)
    return _case(seed, adapter, adapter.network().requires_grad_(False), int(w.adapter["anomaly_label"]))


def sweep(cases: list[Case], anomaly: int, offsets: tuple[float, ...] = OFFSETS) -> list[dict[str, Any]]:
    """Per offset: mean lung Dice, sensitivity for nodules ≥ 6 mm, false positives per scan."""
    rows = []
    for b in offsets:
        hits, total, fp, fp_sized, dr, dl = 0, 0, 0, 0, [], []
        for nod_logit, best_other, other_label, gt, affine, nodules in cases:
            pred = np.where(nod_logit + b > best_other, np.uint8(anomaly), other_label)
            ls = lung_scores(gt, pred)
            dr.append(ls["dice_right"])
            dl.append(ls["dice_left"])
            ns = nodule_scores(gt, pred, affine, nodules, FP_MIN_DIAMETER)
            big = [n for n in ns["nodules"] if n["diameter_mm"] >= SENS_MIN_DIAMETER]
            hits += sum(n["detected"] for n in big)
            total += len(big)
            fp += ns["fp"]
            fp_sized += ns["fp_sized"]
        rows.append({"offset": b, "sensitivity_ge6mm": round(hits / max(1, total), 4), "nodules_ge6mm": total,
                     "fp_per_scan": round(fp / len(cases), 3), "fp_ge3mm_per_scan": round(fp_sized / len(cases), 3),
                     "dice_right_mean": round(float(np.mean(dr)), 4), "dice_left_mean": round(float(np.mean(dl)), 4)})
    return rows


LUNG_DICE_SLACK = 0.02  # an offset may cost each lung at most this much mean Dice against the best offset


def lung_safe(rows: list[dict[str, Any]], slack: float = LUNG_DICE_SLACK) -> list[dict[str, Any]]:
    """The offsets whose mean lung Dice, per side, is within ``slack`` of the best offset's for that side: a
    large positive offset can turn lung into "nodule" wholesale, which no false-positive count shows."""
    best_r = max(r["dice_right_mean"] for r in rows)
    best_l = max(r["dice_left_mean"] for r in rows)
    return [r for r in rows if r["dice_right_mean"] >= best_r - slack and r["dice_left_mean"] >= best_l - slack]


def choose(rows: list[dict[str, Any]], max_fp: float | None = None,
           min_sensitivity: float | None = None) -> dict[str, Any]:
    """Among the lung-safe offsets (``lung_safe``): with ``min_sensitivity``, the fewest false positives among
    offsets keeping that sensitivity for nodules ≥ 6 mm; otherwise the highest sensitivity with
    fp_per_scan ≤ ``max_fp`` (ties: the fewest false positives, then the smallest shift). Falls back to the
    fewest false positives / the highest sensitivity among the lung-safe offsets."""
    rows = lung_safe(rows)
    if min_sensitivity is not None:
        ok = [r for r in rows if r["sensitivity_ge6mm"] >= min_sensitivity]
        if ok:
            return min(ok, key=lambda r: (r["fp_per_scan"], -r["sensitivity_ge6mm"]))
        return max(rows, key=lambda r: (r["sensitivity_ge6mm"], -r["fp_per_scan"]))
    ok = [r for r in rows if max_fp is None or r["fp_per_scan"] <= max_fp]
    if ok:
        return max(ok, key=lambda r: (r["sensitivity_ge6mm"], -r["fp_per_scan"], -abs(r["offset"])))
    return min(rows, key=lambda r: (r["fp_per_scan"], -r["sensitivity_ge6mm"]))


def apply_offset(weights_path: Path, out: Path, offset: float, calibration: dict[str, Any]) -> Path:
    """Write ``out``: the same network with ``offset`` added to the nodule logit's bias."""
    from medcert.weights import load_weights, save_weights

    w = load_weights(weights_path)
    state = {k: v.clone() for k, v in w.state_dict.items()}
    key, index = nodule_bias(state, int(w.adapter["anomaly_label"]))
    state[key][index] += torch.tensor(offset, dtype=state[key].dtype)
    return save_weights(out, state, w.metadata(dict(w.metrics, operating_point=calibration)), overwrite=True)


def nodule_bias(state: dict[str, torch.Tensor], anomaly: int) -> tuple[str, int]:
    """The bias entry that shifts the nodule logit alone: the nodule network's head in the two-network model
    (``medcert.lungnodule/1``), else the anomaly class's entry of the single network's head."""
    from medcert.models.lung_nodule import NODULE_BIAS

    return (NODULE_BIAS, 0) if NODULE_BIAS in state else ("head.bias", anomaly)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medcert.training.operating_point",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=16)
    rule = ap.add_mutually_exclusive_group()
    rule.add_argument("--max-fp", type=float, help="false-positive components per scan (any size) to stay under")
    rule.add_argument("--min-sensitivity", type=float, help="sensitivity for nodules >= 6 mm to keep")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1); --threads is per worker")
    args = ap.parse_args(argv)
    from medcert.weights import load_weights
    w = load_weights(args.weights)
    if "operating_point" in w.metrics:
        raise SystemExit(f"{args.weights} already has an operating point; start from the trained file")
    anomaly = int(w.adapter["anomaly_label"])
    seeds = range(CALIBRATION_SEED_START, CALIBRATION_SEED_START + args.n)
    threads = worker_threads(args.threads, args.jobs)
    cases = []
    for seed, case in zip(seeds, map_seeds(functools.partial(_case_path, weights_path=args.weights,
                                                             threads=threads), seeds, args.jobs), strict=True):
        cases.append(case)
        print(f"calibration phantom {seed}: grid {case[3].shape}", flush=True)
    rows = sweep(cases, anomaly)
    for r in rows:
        print(json.dumps(r), flush=True)
    best = choose(rows, args.max_fp, args.min_sensitivity)
    if args.min_sensitivity is not None and best["sensitivity_ge6mm"] < args.min_sensitivity:
        print(f"warning: no lung-safe offset keeps sensitivity {args.min_sensitivity}; using {best['offset']} "
              f"(sensitivity {best['sensitivity_ge6mm']})", flush=True)
    calibration = {"nodule_logit_offset": best["offset"],
                   "rule": {"max_fp_per_scan": args.max_fp, "min_sensitivity_ge6mm": args.min_sensitivity,
                            "lung_dice_slack": LUNG_DICE_SLACK},
                   "seeds": [CALIBRATION_SEED_START, CALIBRATION_SEED_START + args.n - 1],
                   "at_offset": best, "grid": "canonical 2 mm", "sweep": rows}
    print(apply_offset(Path(args.weights), Path(args.out), best["offset"], calibration))
    print(json.dumps(calibration))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
