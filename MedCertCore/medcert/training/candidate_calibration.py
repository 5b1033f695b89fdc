"""Calibrate the two-stage model's operating point through the real pipeline, counted like the held-out benchmark.

    python -m medcert.training.candidate_calibration --weights FILE --stage1 FILE --out FILE [--n 60] \
        [--offsets 2.5,3.5,4.5] [--thresholds -0.5,0,0.5,1,1.5,2] [--max-fp 0.8] [--jobs 2] [--cache DIR]

Calibration phantoms (seeds from ``CALIBRATION_SEED_START``, the generator's own acquisition like the held-out
set, disjoint from it) go through stage 1 once; the logits are cached per stage-1 file. For each candidate offset,
stage 2 finds and scores the candidates with every candidate component accepted, the logits go onto the input
grid, and each predicted nodule component there is matched to the GT nodules as in
:func:`medcert.training.metrics.nodule_scores` and takes the best classifier score of the candidate components
it covers. A threshold ``t`` keeps exactly the components scoring above ``t``, so every (offset, threshold) pair
is counted on the input grid without segmenting again. The pair that finds the most nodules ≥ 6 mm with at most
``--max-fp`` false-positive components per scan (then the fewest false positives, then the smallest offset) is
baked into the file: the offset into its config, ``-t`` into the classifier's output bias.

A file whose accepted components grow (``candidates.grow``) cannot be counted from one segmentation: grown
components merge differently at each threshold. Its phantoms are segmented once per ``--thresholds`` value instead
(the exact counts, "exact" in the table), and the point is chosen among those thresholds by the same rule.

The shipped model's threshold (3.0.0, 3.1.0) is set by :mod:`medcert.training.classifier` on candidates:
recalibrating it this way did not help on the held-out phantoms (docs/demo-model.md, experiments 3.1 to 3.3).
Counting here accepts every component with its full raised margin, while the model caps an accepted component's
margin at its score, so a weakly raised component can be counted larger than the model draws it; with the file's
symmetric edges (``candidates.symmetric``, experiment 3.3) the two agree. The curves it prints are the
component-level FROC on calibration phantoms, for judging a retrained classifier.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medcert.errors import MedCertError
from medcert.training.candidate_data import logits_path, overrides_tag, stage1_logits
from medcert.training.config import CALIBRATION_SEED_START, STAGE1_ARCHITECTURE
from medcert.training.evaluate import SENS_MIN_DIAMETER
from medcert.training.parallel import map_seeds, set_threads, worker_threads

THRESHOLDS = (-0.5, 0.0, 0.5, 1.0, 1.5, 2.0)  # counted exactly for files whose components grow
ALWAYS = float("inf")  # score of a component no candidate component covers (present at every threshold)
TABLE_FORMAT = 2  # cached tables of another format are counted again


def scan_table(seed: int, weights: str, cache: str, offsets: tuple[float, ...], threads: int | None,
               overrides: dict[str, Any] | None = None,
               thresholds: tuple[float, ...] = THRESHOLDS) -> dict[str, Any]:
    """Per offset: the input-grid nodule components' scores, which hit each GT nodule, and the GT diameters
    (cached as ``cache/table-{weights digest}-{seed}.json``, one offset at a time, and the stage-1 logits at
    ``logits_path``: ``cache`` is specific to the stage-1 weights; phantoms with ``overrides`` are
    for tests)."""
    from medcert.atomic import atomic_write_bytes
    from medcert.weights import load_weights

    w = load_weights(weights)
    tag = overrides_tag(overrides)
    path = Path(cache) / f"table-{w.digest_hex[:16]}{tag}-{seed}.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    if table.get("format") != TABLE_FORMAT:
        table = {"offsets": {}}
    missing = tuple(o for o in offsets if not _counted(table["offsets"].get(str(o)), thresholds))
    if missing:
        new = _scan_table(seed, w, logits_path(Path(cache), seed, overrides), missing, threads, overrides,
                          thresholds)
        table = {**new, "offsets": {**table["offsets"], **new["offsets"]}}
        atomic_write_bytes(path, json.dumps(table).encode())
    return table


def _counted(entry: dict[str, Any] | None, thresholds: tuple[float, ...]) -> bool:
    """Whether a table's entry for one offset holds what is asked (exact entries: every threshold)."""
    if entry is None:
        return False
    return "exact" not in entry or all(str(float(t)) in entry["exact"] for t in thresholds)


def _scan_table(seed: int, weights: Any, logits_path: Path, offsets: tuple[float, ...], threads: int | None,
                overrides: dict[str, Any] | None, thresholds: tuple[float, ...]) -> dict[str, Any]:
    from medcert.inference import WeightsAdapter
    from medcert.phantom import generate_chest_ct

    set_threads(threads)
    ph = generate_chest_ct(seed, **(overrides or {}))
    adapter = WeightsAdapter.from_weights(weights)
    model = adapter.network().requires_grad_(False)
    prep = adapter.preprocess(ph.volume)
    raw = stage1_logits(model.stage1, adapter, prep, logits_path)
    to_grid = np.linalg.inv(np.asarray(prep.grid_to_ras)) @ np.asarray(ph.volume.ijk_to_ras)
    x = torch.from_numpy(prep.tensor)
    out: dict[str, Any] = {"format": TABLE_FORMAT, "seed": seed, "diameters_mm": [n.diameter_mm for n in ph.nodules],
                           "kinds": [n.kind for n in ph.nodules], "offsets": {}}
    for offset in offsets:
        model.offset = offset
        logits = torch.from_numpy(raw).clone()
        logits[3] += offset
        with torch.inference_mode():
            found = model.find(x, logits)
        if model.grow:
            exact = {}
            for thr in thresholds:  # grown components merge differently at each threshold: segment each
                m = _segment_and_match(model, found, float(thr), prep, ph, adapter)
                exact[str(float(thr))] = {"detected": [bool(h) for h in m.hits], "fp": len(m.unmatched())}
            out["offsets"][str(offset)] = {"exact": exact, "candidates": len(found["scores"])}
            continue
        comp = found["components"]
        best = model.component_scores(found)
        m = _segment_and_match(model, found, -1e9, prep, ph, adapter)
        scores = {}
        hi = np.array(comp.shape)[:, None] - 1
        for k, ix in m.voxels.items():
            ijk = np.stack([*ix, np.ones_like(ix[0])]).astype(np.float64)
            g0 = np.floor(to_grid[:3] @ ijk).astype(np.int64)  # the 8 grid voxels each input voxel interpolates
            g = [np.clip(g0 + np.array(c)[:, None], 0, hi) for c in np.ndindex(2, 2, 2)]
            ids = np.unique(np.concatenate([comp[a[0], a[1], a[2]] for a in g]))
            s = float(best[ids[ids > 0]].max()) if np.any(ids > 0) else ALWAYS
            scores[k] = s if np.isfinite(s) else ALWAYS
        keys = sorted(scores)
        pos = {k: i for i, k in enumerate(keys)}
        out["offsets"][str(offset)] = {
            "scores": [scores[k] for k in keys], "unmatched": [pos[k] for k in m.unmatched()],
            "hits": [sorted(pos[k] for k in h) for h in m.hits],
            "candidates": len(found["scores"])}
    return out


def _segment_and_match(model: Any, found: dict[str, Any], threshold: float, prep: Any, ph: Any,
                       adapter: Any) -> Any:
    """Stage 2's segmentation at ``threshold`` on the phantom's input grid, matched to its GT nodules."""
    from medcert.inference.postprocess import to_input_grid
    from medcert.tolerance import DEFAULT_PROFILE
    from medcert.training.metrics import match_nodules

    with torch.inference_mode():
        refined = model.gate(found, threshold=threshold).numpy()
    labels = to_input_grid(refined, prep.grid_to_ras, ph.volume, anomaly_label=adapter.anomaly_label,
                           margin_tol=DEFAULT_PROFILE.margin).labels
    return match_nodules(ph.labels, labels, ph.volume.ijk_to_ras, ph.nodules)


def count(tables: list[dict[str, Any]], offset: str, threshold: float) -> tuple[int, int, float]:
    """Nodules ≥ 6 mm found, their number, false-positive components per scan at ``threshold`` (of exact tables:
    one of the thresholds they counted)."""
    found = total = fp = 0
    for t in tables:
        o = t["offsets"][offset]
        if "exact" in o:
            e = o["exact"].get(str(float(threshold)))
            if e is None:
                raise MedCertError(f"threshold {threshold} was not counted for seed {t['seed']}")
            scan_fp, detected = e["fp"], e["detected"]
        else:
            keep = np.asarray(o["scores"], dtype=np.float64) > threshold
            scan_fp = int(keep[o["unmatched"]].sum()) if o["unmatched"] else 0
            detected = [bool(hit) and bool(keep[hit].any()) for hit in o["hits"]]
        fp += scan_fp
        for d, hit in zip(t["diameters_mm"], detected, strict=True):
            if d >= SENS_MIN_DIAMETER:
                total += 1
                found += bool(hit)
    return found, total, fp / max(1, len(tables))


def choose_point(tables: list[dict[str, Any]], offsets: tuple[float, ...], max_fp: float) -> dict[str, Any]:
    """The (offset, threshold) with the most nodules ≥ 6 mm found at ≤ ``max_fp`` FP/scan, then the fewest FP,
    then the smallest offset; the threshold is midway between two distinct component scores (exact tables: one
    of the thresholds every table counted)."""
    best: dict[str, Any] | None = None
    for offset in sorted(offsets):
        key = str(offset)
        cuts = _exact_thresholds(tables, key)
        if cuts is None:
            s = np.unique([v for t in tables for v in t["offsets"][key]["scores"] if np.isfinite(v)])
            cuts = list(np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2, [s[-1] + 1.0]]) if s.size else [0.0])
        for thr in cuts:
            found, total, fp = count(tables, key, float(thr))
            if fp > max_fp:
                continue
            cand = {"offset": offset, "threshold": round(float(thr), 4), "found_ge6mm": found,
                    "nodules_ge6mm": total, "fp_per_scan": round(fp, 3)}
            if best is None or (found, -fp) > (best["found_ge6mm"], -best["fp_per_scan"]):
                best = cand
    if best is None:
        raise MedCertError(f"no operating point has at most {max_fp} false positives per scan")
    return best


def _exact_thresholds(tables: list[dict[str, Any]], key: str) -> list[float] | None:
    """The thresholds every table counted exactly at offset ``key``, or None for score tables."""
    if not tables or "exact" not in tables[0]["offsets"][key]:
        return None
    return sorted(set.intersection(*(set(map(float, t["offsets"][key]["exact"])) for t in tables)))


def calibrate(weights: Path, stage1: Path, out: Path, *, n: int, offsets: tuple[float, ...], max_fp: float,
              jobs: int, cache: Path, threads: int | None = None, overwrite: bool = False,
              version: str | None = None, overrides: dict[str, Any] | None = None,
              thresholds: tuple[float, ...] = THRESHOLDS) -> dict[str, Any]:
    """Count every (offset, threshold) pair on ``n`` calibration phantoms (a file whose components grow: each of
    ``thresholds``) and write the calibrated file (``overrides``: phantom acquisition overrides, for tests)."""
    from medcert.models.lung_nodule_two_stage import CLASSIFIER_BIAS
    from medcert.weights import load_weights, save_weights

    w, s1 = load_weights(weights), load_weights(stage1)
    if s1.architecture != STAGE1_ARCHITECTURE:
        raise MedCertError(f"{stage1}: expected a {STAGE1_ARCHITECTURE} file")
    if CLASSIFIER_BIAS not in w.state_dict:
        raise MedCertError(f"{weights}: expected a two-stage model with a candidate classifier")
    for k, v in s1.state_dict.items():
        if not torch.equal(w.state_dict.get(f"stage1.{k}", torch.empty(0)), v):
            raise MedCertError(f"{weights}: its stage 1 is not {stage1}")
    if out.exists() and not overwrite:
        raise MedCertError(f"{out} exists (pass --overwrite to replace it)")
    cache = cache / s1.digest_hex[:16]
    cache.mkdir(parents=True, exist_ok=True)
    fn = functools.partial(scan_table, weights=str(weights), cache=str(cache), offsets=offsets,
                           threads=worker_threads(threads, jobs), overrides=overrides, thresholds=thresholds)
    tables = []
    for t in map_seeds(fn, range(CALIBRATION_SEED_START, CALIBRATION_SEED_START + n), jobs):
        tables.append(t)
        print(f"seed {t['seed']}: " + ", ".join(f"offset {k}: {o['candidates']} candidates"
                                               for k, o in t["offsets"].items()), flush=True)
    point = choose_point(tables, offsets, max_fp)
    state = dict(w.state_dict)
    state[CLASSIFIER_BIAS] = (state[CLASSIFIER_BIAS].to(torch.float32) - point["threshold"]).to(
        state[CLASSIFIER_BIAS].dtype)
    meta = w.metadata({k: v for k, v in w.metrics.items() if k != "held_out_phantoms"})
    meta["version"] = version or w.version
    meta["config"] = {**w.config, "candidates": {**w.config["candidates"], "offset": point["offset"]}}
    exact = {"thresholds": [float(t) for t in thresholds]} if w.config["candidates"].get("grow") else {}
    record = {"seeds": [CALIBRATION_SEED_START, CALIBRATION_SEED_START + n - 1], "counted": "input-grid components",
              "rule": {"max_fp_per_scan": max_fp, "offsets": list(offsets), **exact}, **point}
    meta["metrics"]["classifier"] = {**meta["metrics"].get("classifier", {}), "calibration": record}
    save_weights(out, state, meta, overwrite=overwrite)
    return {"calibration": record, "curves": {str(o): curve(tables, str(o)) for o in offsets}}


def curve(tables: list[dict[str, Any]], offset: str) -> list[tuple[float, int, float]]:
    """(threshold, found ≥ 6 mm, FP/scan) at a few thresholds (exact tables: the counted ones), for the log."""
    cuts = _exact_thresholds(tables, offset) or (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0)
    return [(thr, *count(tables, offset, thr)[::2]) for thr in cuts]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medcert.training.candidate_calibration",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="medcert.lungnodule/2 file to calibrate")
    ap.add_argument("--stage1", required=True, help="the medcert.lungnodule/1 file it was built on")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--offsets", default="2.5,3.5,4.5")
    ap.add_argument("--thresholds", default=",".join(str(t) for t in THRESHOLDS),
                    help="thresholds counted exactly when the file's components grow (candidates.grow)")
    ap.add_argument("--max-fp", type=float, default=0.8)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--cache", help="stage-1 logits cache folder (default: next to --out)")
    ap.add_argument("--version", help="version of the calibrated file (default: the input file's)")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        offsets = tuple(float(v) for v in args.offsets.split(","))
        thresholds = tuple(float(v) for v in args.thresholds.split(","))
    except ValueError:
        ap.error("--offsets and --thresholds: comma-separated numbers")
    if args.n < 1 or args.max_fp < 0 or any(o < 0 for o in offsets):
        ap.error("--n must be positive, --max-fp and --offsets non-negative")
    out = Path(args.out)
    try:
        res = calibrate(Path(args.weights), Path(args.stage1), out, n=args.n, offsets=offsets, max_fp=args.max_fp,
                        jobs=args.jobs, cache=Path(args.cache) if args.cache else out.parent / "stage1-logits",
                        threads=args.threads, overwrite=args.overwrite, version=args.version,
                        thresholds=thresholds)
    except (MedCertError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
