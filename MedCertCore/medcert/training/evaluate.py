"""Evaluate weights on held-out phantoms at native resolution through the real inference pipeline.

    python -m medcert.training.evaluate --weights FILE --n 50 --seed-start 900000 [--json out.json]

Each phantom uses the generator's default acquisition distribution (in-plane 0.5–3.5 mm, slices 0.6–10 mm,
random array orientation, 20 % oblique) and is segmented with ``medcert.inference.run_segmentation``.
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

from medcert.phantom import generate_chest_ct
from medcert.training.config import HELD_OUT_SEED_START
from medcert.training.metrics import lung_scores, nodule_scores
from medcert.training.parallel import map_seeds, worker_threads

SENS_MIN_DIAMETER = 6.0
FP_MIN_DIAMETER = 3.0
# Slice-thickness bands for the sensitivity breakdown: thin slices (<= 2.5 mm, as nodule-detection benchmarks on
# real CT such as LUNA16 require), intermediate, and thick slices where partial volume dilutes small nodules.
SLICE_BANDS = ((2.5, "<= 2.5 mm"), (5.0, "2.5-5 mm"), (float("inf"), "> 5 mm"))


def slice_band(thickness_mm: float) -> str:
    """The ``SLICE_BANDS`` label of a slice thickness."""
    return next(label for bound, label in SLICE_BANDS if thickness_mm <= bound)


def evaluate_seed(seed: int, weights: Any, threads: int | None = None,
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from medcert.inference import WeightsAdapter, run_segmentation
    from medcert.tolerance import DEFAULT_PROFILE

    t0 = time.perf_counter()
    ph = generate_chest_ct(seed, **(overrides or {}))
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    # Segmentation only: fingerprint and explanation do not change the labels (timed in medcert.bench).
    run = run_segmentation(ph.volume, WeightsAdapter.from_weights(weights), DEFAULT_PROFILE, threads=threads,
                           fingerprint=False, explain=False)
    t_inf = time.perf_counter() - t1
    pred = run.outputs.labels
    o = ph.params["orientation"]
    res: dict[str, Any] = {
        "seed": seed, "shape": list(ph.volume.shape), "spacing": [round(s, 3) for s in ph.volume.spacing],
        "orientation": {"perm": o["perm"], "flip": o["flip"], "oblique_deg": round(o["oblique_deg"], 1)},
        "slice_mm": float(ph.params["acquisition"]["thickness"]),
        "contrast": ph.params["acquisition"]["contrast"],
        "noise_sigma": round(ph.params["acquisition"]["noise_sigma"], 1),
        "generate_s": round(t_gen, 2), "inference_s": round(t_inf, 2),
        "timings": {k: round(v, 2) for k, v in run.timings.items()},
    }
    res.update(lung_scores(ph.labels, pred))
    res.update(nodule_scores(ph.labels, pred, ph.volume.ijk_to_ras, ph.nodules, FP_MIN_DIAMETER))
    return res


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    dr = np.array([r["dice_right"] for r in results])
    dl = np.array([r["dice_left"] for r in results])
    big = [n for r in results for n in r["nodules"] if n["diameter_mm"] >= SENS_MIN_DIAMETER]
    small = [n for r in results for n in r["nodules"] if n["diameter_mm"] < SENS_MIN_DIAMETER]
    kinds: dict[str, list[bool]] = {}
    for n in big:
        kinds.setdefault(n["kind"], []).append(n["detected"])
    t = np.array([r["inference_s"] for r in results])
    by_slice: dict[str, list[int]] = {}
    if all("slice_mm" in r for r in results):  # results written before slice_mm was recorded lack it
        by_slice = {label: [0, 0] for _, label in SLICE_BANDS}
        for r in results:
            for n in r["nodules"]:
                if n["diameter_mm"] >= SENS_MIN_DIAMETER:
                    band = by_slice[slice_band(r["slice_mm"])]
                    band[0] += int(n["detected"])
                    band[1] += 1
    out = {
        "n_scans": len(results), "seeds": [results[0]["seed"], results[-1]["seed"]] if results else [],
        "dice_right_mean": round(float(dr.mean()), 4), "dice_right_min": round(float(dr.min()), 4),
        "dice_left_mean": round(float(dl.mean()), 4), "dice_left_min": round(float(dl.min()), 4),
        "lr_swaps": int(sum(r["lr_swap"] for r in results)),
        "nodules_ge6mm": len(big), "detected_ge6mm": int(sum(n["detected"] for n in big)),
        "sensitivity_ge6mm": round(sum(n["detected"] for n in big) / max(1, len(big)), 4),
        "sensitivity_by_kind_ge6mm": {k: [int(sum(v)), len(v)] for k, v in sorted(kinds.items())},
        "nodules_lt6mm": len(small), "detected_lt6mm": int(sum(n["detected"] for n in small)),
        "fp_per_scan": round(float(np.mean([r["fp"] for r in results])), 3),
        "fp_ge3mm_per_scan": round(float(np.mean([r["fp_sized"] for r in results])), 3),
        "inference_s_mean": round(float(t.mean()), 2), "inference_s_median": round(float(np.median(t)), 2),
        "inference_s_max": round(float(t.max()), 2),
    }
    if by_slice:
        out["sensitivity_by_slice_ge6mm"] = by_slice
    return out


def _evaluate_path(seed: int, weights_path: str, threads: int | None) -> dict[str, Any]:
    from medcert.weights import load_weights

    return evaluate_seed(seed, load_weights(weights_path), threads=threads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medcert.training.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--seed-start", type=int, default=HELD_OUT_SEED_START)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1,
                    help="worker processes, one scan each at a time (default 1); with --jobs, --threads is per worker")
    ap.add_argument("--json", help="write per-scan results and the summary here")
    ap.add_argument("--update-weights-metrics", action="store_true",
                    help="store the summary in the weights file's medcert.metrics (changes its digest)")
    args = ap.parse_args(argv)
    from medcert.weights import load_weights

    if args.seed_start < HELD_OUT_SEED_START:
        print(f"warning: seeds below {HELD_OUT_SEED_START} may overlap training phantoms", file=sys.stderr)
    load_weights(args.weights)  # refuse a bad file before any work
    seeds = range(args.seed_start, args.seed_start + args.n)
    threads = worker_threads(args.threads, args.jobs)
    results = []
    for r in map_seeds(functools.partial(_evaluate_path, weights_path=args.weights, threads=threads), seeds,
                       args.jobs):
        results.append(r)
        det = "".join("+" if n["detected"] else "-" for n in r["nodules"])
        print(f"seed {r['seed']} {r['shape']} dice R {r['dice_right']:.4f} L {r['dice_left']:.4f} swap {r['lr_swap']} "
              f"nodules [{det}] {[n['diameter_mm'] for n in r['nodules']]} fp {r['fp']} ({r['fp_diameters_mm']}) "
              f"inf {r['inference_s']:.1f}s", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"summary": summarize(results), "scans": results}, indent=1))
    summary = summarize(results)
    print(json.dumps(summary, indent=1))
    if args.update_weights_metrics:
        from medcert.training.train import update_metrics

        update_metrics(Path(args.weights), {"held_out_phantoms": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
