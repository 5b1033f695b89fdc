"""Write ``MODEL_CARD.md`` from a weights file: identity, digest and the figures stored in its metadata.

    python -m medcert.training.model_card --weights Resources/Models/medcert-lung-demo.safetensors \
        --out Resources/Models/MODEL_CARD.md [--speed docs/results/bench-full-size-3.0.0.json]

Every quality figure in the card is read from the weights file's ``medcert.metrics`` (written by the trainer and
by ``python -m medcert.training.evaluate --update-weights-metrics``), so the card cannot drift from the file.
Speed depends on the machine, not the file: ``--speed`` takes the JSON of ``python -m medcert.bench --full-size
--json``, which must name this file's digest.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from medcert.atomic import atomic_write_bytes
from medcert.weights import ModelWeights, load_weights

DIGEST_LINE = re.compile(r"^- SHA-256 of the file: `([0-9a-f]{64})`$", re.MULTILINE)


def recorded_digest(card_text: str) -> str | None:
    """The hex SHA-256 recorded in a model card, or None."""
    m = DIGEST_LINE.search(card_text)
    return m.group(1) if m else None


SPEED_TIMINGS = ("forward_plain", "forward_certified", "segment_certify", "verify_replay")


class SpeedRecordError(ValueError):
    """A speed record that is malformed or measured on another weights file."""


def load_speed(path: str | Path, w: ModelWeights) -> dict[str, Any]:
    """Read and validate a ``medcert.bench --json`` record for ``w``."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SpeedRecordError(f"cannot read speed record {path}: {e}") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("model"), dict):
        raise SpeedRecordError(f"speed record {path}: no model identity")
    if rec["model"].get("sha256") != w.digest_hex:
        raise SpeedRecordError(f"speed record {path} was measured on weights {rec['model'].get('sha256')!s:.16}…, "
                               f"not on {w.digest_hex[:16]}…")
    t = rec.get("timings_s")
    shape, spacing = rec.get("volume_shape"), rec.get("spacing_mm")
    ok = (isinstance(t, dict) and all(isinstance(t.get(k), int | float) and t[k] > 0 for k in SPEED_TIMINGS)
          and isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)
          and isinstance(spacing, list) and len(spacing) == 3 and all(isinstance(v, int | float) for v in spacing)
          and isinstance(rec.get("threads"), int) and isinstance(rec.get("cpu"), str))
    if not ok:
        raise SpeedRecordError(f"speed record {path}: missing or invalid fields")
    return rec


def _speed_lines(rec: dict[str, Any]) -> list[str]:
    t = rec["timings_s"]
    shape = " × ".join(map(str, rec["volume_shape"]))
    spacing = " × ".join(f"{v:g}" for v in rec["spacing_mm"])
    return ["## Speed", "",
            f"Measured by `python -m medcert.bench --full-size` on a generated {shape} chest CT ({spacing} mm), "
            f"{rec['threads']} CPU thread(s), {rec['cpu']}:", "",
            "| Step | Time |", "|---|---|",
            f"| Forward pass, plain | {t['forward_plain']:.1f} s |",
            f"| Forward pass with trajectory fingerprint | {t['forward_certified']:.1f} s |",
            f"| Segment + certify (resampling, forward, explanation, findings, signed sidecar) | "
            f"{t['segment_certify']:.1f} s |",
            f"| Replay verification | {t['verify_replay']:.1f} s |", ""]


def _held_out_rows(s: dict[str, Any]) -> list[str]:
    kinds = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in s.get("sensitivity_by_kind_ge6mm", {}).items())
    slices = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in s.get("sensitivity_by_slice_ge6mm", {}).items())
    return [
        f"| Scans (held-out seeds {s['seeds'][0]}..{s['seeds'][1]}) | {s['n_scans']} |",
        f"| Right lung Dice, mean (min) | {s['dice_right_mean']:.4f} ({s['dice_right_min']:.4f}) |",
        f"| Left lung Dice, mean (min) | {s['dice_left_mean']:.4f} ({s['dice_left_min']:.4f}) |",
        f"| Left/right swaps | {s['lr_swaps']} |",
        f"| Nodule sensitivity, ≥ 6 mm | {s['sensitivity_ge6mm']:.3f} ({s['detected_ge6mm']}/{s['nodules_ge6mm']}) |",
        f"| — by kind (detected/total) | {kinds} |",
        *([f"| — by slice thickness (detected/total) | {slices} |"] if slices else []),
        f"| Nodules < 6 mm detected | {s['detected_lt6mm']}/{s['nodules_lt6mm']} |",
        f"| False-positive components per scan (any size) | {s['fp_per_scan']:.2f} |",
        f"| False positives ≥ 3 mm per scan | {s['fp_ge3mm_per_scan']:.2f} |",
        f"| Segmentation time per scan (no fingerprint/explanation), median (max) | "
        f"{s['inference_s_median']:.1f} s ({s['inference_s_max']:.1f} s) |",
    ]


# The quality targets the demo model is held to (issue: bundled demo model).
TARGETS = (
    ("Lung Dice ≥ 0.97, right (mean)", lambda s: s["dice_right_mean"] >= 0.97),
    ("Lung Dice ≥ 0.97, left (mean)", lambda s: s["dice_left_mean"] >= 0.97),
    ("Nodule sensitivity ≥ 0.90 for nodules ≥ 6 mm", lambda s: s["sensitivity_ge6mm"] >= 0.90),
    ("… with ≤ 1 false positive per scan", lambda s: s["fp_per_scan"] <= 1.0),
    ("No left/right swap", lambda s: s["lr_swaps"] == 0),
)


def _target_rows(s: dict[str, Any]) -> list[str]:
    return [f"| {name} | {'met' if ok(s) else '**not met**'} |" for name, ok in TARGETS]


def _stage(tr: dict[str, Any]) -> str:
    if "step_pairs" in tr:
        what = f"{tr['step_pairs']} steps of each network"
    elif tr.get("nodule_only"):
        what = f"{tr.get('steps', '?')} steps of the nodule network alone"
        if tr.get("size_weighting"):
            tiny = tr.get("tiny_nodule_mm")
            what += " (nodule voxels weighted by nodule size" + (
                f", components under {tiny} mm left out of the loss)" if tiny is not None else ")")
            if tr.get("hard_nodule_weight"):
                what += f", faint and juxtapleural nodules weighted × {tr['hard_nodule_weight']}"
    else:
        what = f"{tr.get('steps', '?')} steps"
    if tr.get("dense_hu") is not None:
        what += f", hard negatives above {tr['dense_hu']:g} HU"
    if tr.get("nodule_mix"):
        what += f", {tr['nodule_mix']} nodule mix (medcert.training.dataset.training_overrides)"
    if tr.get("detection_weight"):
        what += f", per-nodule detection loss (weight {tr['detection_weight']})"
    if tr.get("lung_nodule_weight"):
        what += f", nodule voxels weighted {tr['lung_nodule_weight']} in the lung loss"
    patch = tr.get("nodule_patch")
    if isinstance(patch, list):
        what += f", nodule patches {tr.get('nodule_batch', '?')} × {'×'.join(map(str, patch))}"
    return (f"{what} on {tr.get('cases', '?')} phantoms, {tr.get('minutes', '?')} min, "
            f"{tr.get('threads', '?')} CPU thread(s) on {tr.get('device', '?')} ({tr.get('precision', 'fp32')}), "
            f"run seed {tr.get('seed', '?')}; final loss (mean of last 100 steps) "
            f"{_loss(tr.get('final_loss_mean100', '?'))}")


def _training_lines(tr: dict[str, Any]) -> list[str]:
    """One line per training stage, first stage first (a stage started from a file records it as ``init``)."""
    stages = [tr]
    while isinstance(stages[-1].get("init"), dict) and stages[-1]["init"].get("training"):
        stages.append(stages[-1]["init"]["training"])
    if len(stages) == 1:
        return [f"- {_stage(tr)}."]
    lines = []
    for n, st in enumerate(reversed(stages), start=1):
        src = st.get("init", {}).get("file_sha256")
        lines.append(f"- Stage {n}: {_stage(st)}" + (f"; started from stage {n - 1}'s file `{src[:16]}…`."
                                                         if src else "."))
    return lines


def _classifier_lines(clf: Any, candidates: Any) -> list[str]:
    """The stage that trains the candidate classifier (``medcert.training.classifier``), if the file has one."""
    if not isinstance(clf, dict):
        return []
    first, last = clf.get("training_phantoms", ["?", "?"])
    cand = candidates if isinstance(candidates, dict) else {}
    extraction = {k: cand[k] for k in ("offset", "nms", "limit") if k in cand}  # what the training candidates used
    if "extract_offset" in clf:
        extraction["offset"] = clf["extract_offset"]
    if "extract_closing" in clf:
        extraction["closing"] = clf["extract_closing"]
    lines = [f"- Candidate classifier: {clf.get('candidates')} candidates ({clf.get('nodule_candidates')} on nodules) "
             f"of the calibrated stages above on phantoms {first}..{last} (nodule-rich mix at the generator's "
             f"acquisition), candidates `{json.dumps(extraction, sort_keys=True)}`; {clf.get('steps')} steps; "
             f"candidate extraction {clf.get('extract_worker_minutes')} worker-minutes ({clf.get('extract_jobs')} "
             f"workers), training {clf.get('train_minutes')} min."]
    if cand.get("closing") or cand.get("symmetric") or cand.get("grow"):
        lines.append(f"- Stage 2 at inference: the lung mask closed by a ball of {cand.get('closing', 0)} grid voxels "
                     "before the candidates are found (nodules against the pleura keep their own log-odds; the "
                     f"training candidates above were found with a closing of {clf.get('extract_closing', 0)}); "
                     "accepted components keep a margin of at least the offset: "
                     f"{bool(cand.get('symmetric'))}; accepted components grow by {cand.get('grow', 0)} grid "
                     "voxels.")
    return lines


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def _loss(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
    return str(value)


def render(w: ModelWeights, speed: dict[str, Any] | None = None) -> str:
    """The model card text for ``w``, with a speed section from a validated ``load_speed`` record."""
    m = w.metrics
    tr = m.get("training", {})
    lines = [
        f"# Model card: {w.name} {w.version}",
        "",
        "> **Not a medical device.** Trained and evaluated only on synthetic phantoms; never validated on patient",
        "> data; not for clinical use. It exists to demonstrate certified, replay-verifiable inference.",
        "",
        "## File",
        f"- `{w.path.name}`, {w.size} bytes",
        f"- SHA-256 of the file: `{w.digest_hex}`",
        f"- Architecture `{w.architecture}`, config `{json.dumps(w.config, sort_keys=True)}`",
        "- Format: safetensors (no pickle); identity, adapter and metrics in the header metadata (`medcert.*`).",
        "",
        "## Intended use",
        w.intended_use,
        "",
        "## Input and output",
        f"- Preprocessing (adapter): `{json.dumps(w.adapter, sort_keys=True)}`",
        "- Input: a chest CT volume in HU, any size, spacing, orientation and field of view; it is resampled to a",
        "  RAS-aligned grid at the adapter's spacing, windowed, and tiled.",
        "- Output on the input's voxel grid: labelmap (1 right lung, 2 left lung, 3 lung nodule), nodule",
        "  probability map, finding summary, and an input-gradient explanation of the nodule score.",
        "",
        "## Training data",
        w.training_data,
        "",
        "## Training",
        *_training_lines(tr),
        *_classifier_lines(m.get("classifier"), w.config.get("candidates")),
        "- Rebuild (training, operating point, evaluation, this card): `bash scripts/build-demo-model.sh` builds",
        "  the current recipe (docs/demo-model.md); the recipe of an earlier version is in that script's history.",
        "",
    ]
    op = m.get("operating_point")
    if op:
        at = op.get("at_offset", {})
        first, last = op.get("seeds", ["?", "?"])
        lines += ["## Operating point",
                  f"- Nodule logit offset {op.get('nodule_logit_offset')} (added to the nodule logit's bias), rule "
                  f"`{json.dumps(op.get('rule', {}), sort_keys=True)}`, calibration seeds "
                  f"{first}..{last} on the canonical grid: "
                  f"sensitivity ≥ 6 mm {at.get('sensitivity_ge6mm')}, {at.get('fp_per_scan')} false positives per "
                  "scan."]
        clf = m.get("classifier")
        if isinstance(clf, dict) and isinstance(clf.get("calibration"), dict):
            c = clf["calibration"]
            first, last = c.get("seeds", ["?", "?"])
            if c.get("counted") == "input-grid components":  # medcert.training.candidate_calibration
                found = (f"calibration seeds {first}..{last}: {c.get('found_ge6mm')} of {c.get('nodules_ge6mm')} "
                         f"nodules ≥ 6 mm found, {c.get('fp_per_scan')} false-positive components per scan, counted "
                         "on the input grid through the whole pipeline like the held-out benchmark")
            else:
                found = (f"the same calibration seeds {first}..{last}: {c.get('found_ge6mm')} of "
                         f"{c.get('nodules_ge6mm')} nodules ≥ 6 mm hit by an accepted candidate, "
                         f"{c.get('fp_per_scan')} false candidates per scan")
            lines.append(f"- Candidate classifier threshold {_round(c.get('threshold'))} (subtracted from its output "
                         f"bias), rule `{json.dumps(c.get('rule', {}), sort_keys=True)}`, {found}.")
        lines.append("")
    held = m.get("held_out_phantoms")
    if held:
        lines += ["## Validation on held-out phantoms", "",
                  "Measured by `python -m medcert.training.evaluate` through the real inference pipeline at native",
                  "resolution, with the generator's full acquisition distribution (in-plane 0.5–3.5 mm, slices",
                  "0.6–10 mm, random array orientation, 20 % oblique). A nodule counts as detected when a predicted",
                  "component overlaps it or has its centroid within its radius + 1 mm.", "",
                  "| Metric | Value |", "|---|---|", *_held_out_rows(held), "",
                  "### Quality targets", "", "| Target | Status |", "|---|---|", *_target_rows(held), ""]
    else:
        lines += ["## Validation", "", "No held-out evaluation is stored in this file.", ""]
    if speed:
        lines += _speed_lines(speed)
    lines += [
        "## Limitations",
        "- Phantoms are not patients: real anatomy, pathology (emphysema, effusion, consolidation, fibrosis),",
        "  devices, motion and metal artefacts are absent or simplified. Expect lower quality on real CT.",
        "- Nodules below 6 mm are often missed; vessels seen end-on can be reported as nodules.",
        "- Nodule masks can be smaller than the nodule (the operating point trades volume for fewer false",
        "  positives): treat reported nodule volumes and diameters as lower bounds.",
        "- Left/right comes from anatomy in the RAS frame (plus a midline channel), so a wrong DICOM orientation",
        "  header gives a wrong side.",
        "",
    ]
    return "\n".join(lines)


def write_card(weights_path: str | Path, out: str | Path, speed_path: str | Path | None = None) -> Path:
    out = Path(out)
    w = load_weights(weights_path)
    speed = load_speed(speed_path, w) if speed_path else None
    atomic_write_bytes(out, render(w, speed).encode("utf-8"), overwrite=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medcert.training.model_card", description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--speed", help="JSON of `python -m medcert.bench --full-size --json` for these weights")
    args = ap.parse_args(argv)
    try:
        print(write_card(args.weights, args.out, args.speed))
    except SpeedRecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
