"""Calibrating the two-stage model's operating point: the counts per threshold must be what the real pipeline
then produces, and the CLI refuses mismatched files with one error line."""

import numpy as np
import pytest
import torch
from medcert.errors import MedCertError
from medcert.inference import WeightsAdapter, run_segmentation
from medcert.models.candidate_classifier import CandidateClassifier
from medcert.models.lung_nodule_two_stage import CLASSIFIER_BIAS
from medcert.phantom import generate_chest_ct
from medcert.tolerance import DEFAULT_PROFILE
from medcert.training.candidate_calibration import choose_point, count, main, scan_table
from medcert.training.classifier import assemble
from medcert.training.evaluate import SENS_MIN_DIAMETER
from medcert.training.metrics import match_nodules, nodule_scores
from medcert.weights import load_weights, save_weights
from test_two_stage_model import ADAPTER, CLASSIFIER, STAGE1, TINY

OFFSET = 0.3


@pytest.fixture(scope="module")
def stage1_file(tmp_path_factory):
    """Tiny random networks whose nodule margin is above zero in a few dozen spots (-1.25 on the nodule bias)."""
    from medcert.models import build_model
    from medcert.models.lung_nodule import NODULE_BIAS

    torch.manual_seed(1)
    state = build_model("medcert.lungnodule/1", STAGE1).eval().state_dict()
    state[NODULE_BIAS] = state[NODULE_BIAS] - 1.25
    meta = {"architecture": "medcert.lungnodule/1", "config": STAGE1, "adapter": ADAPTER, "name": "tiny",
            "version": "0", "metrics": {}}
    return save_weights(tmp_path_factory.mktemp("w") / "s1.safetensors", state, meta)


def _two_stage_file(stage1_file, folder, **candidates):
    torch.manual_seed(5)
    clf = CandidateClassifier(**CLASSIFIER).eval()
    with torch.no_grad():
        clf.head[4].weight.mul_(2000.0)  # spread the random scores over a few logits
    state, meta = assemble(load_weights(stage1_file), clf, "0")
    meta["config"] = {**STAGE1, "classifier": CLASSIFIER,
                      "candidates": {"offset": OFFSET, "nms": 3, "limit": 64, **candidates}}
    return save_weights(folder / "two.safetensors", state, meta)


@pytest.fixture(scope="module")
def two_stage_file(stage1_file, tmp_path_factory):
    return _two_stage_file(stage1_file, tmp_path_factory.mktemp("w"))


@pytest.fixture(scope="module")
def closing_file(stage1_file, tmp_path_factory):
    """The same model with experiment 3.3's stage-2 options: symmetric edges, a lung mask closed by 1 voxel."""
    return _two_stage_file(stage1_file, tmp_path_factory.mktemp("w"), symmetric=True, closing=1)


def _with_threshold(path, threshold, out):
    w = load_weights(path)
    state = dict(w.state_dict)
    state[CLASSIFIER_BIAS] = (state[CLASSIFIER_BIAS].float() - threshold).to(state[CLASSIFIER_BIAS].dtype)
    return save_weights(out, state, w.metadata())


@pytest.mark.parametrize("variant", ["plain", "symmetric-closing"])
def test_counts_at_every_threshold_match_segmenting_with_that_threshold(variant, two_stage_file, closing_file,
                                                                        tmp_path):
    two_stage_file = closing_file if variant == "symmetric-closing" else two_stage_file
    table = scan_table(4, str(two_stage_file), str(tmp_path), (OFFSET,), 1, overrides=TINY)
    assert scan_table(4, str(two_stage_file), str(tmp_path), (OFFSET,), 1,
                      overrides=TINY) == table  # cached
    assert len(list(tmp_path.glob("logits-*-4.npy"))) == 1 and len(list(tmp_path.glob("table-*-4.json"))) == 1
    o = table["offsets"][str(OFFSET)]
    scores = np.array([s for s in o["scores"] if np.isfinite(s)])
    assert scores.size >= 5 and o["candidates"] > 0
    ph = generate_chest_ct(4, **TINY)
    # Thresholds between the scores (the stored file is float16, so keep clear of the scores themselves).
    s = np.unique(np.round(scores, 2))
    seen = set()
    for thr in [float(s[0]) - 1.0, *((s[:-1] + s[1:]) / 2)[:: max(1, len(s) // 3)], float(s[-1]) + 1.0]:
        if np.min(np.abs(scores - thr)) < 0.02:
            continue
        found, total, fp = count([table], str(OFFSET), thr)
        seen.add(fp)
        w = _with_threshold(two_stage_file, thr, tmp_path / f"t{thr:.3f}.safetensors")
        run = run_segmentation(ph.volume, WeightsAdapter.from_weights(load_weights(w)), DEFAULT_PROFILE,
                               fingerprint=False, explain=False)
        real = nodule_scores(ph.labels, run.outputs.labels, ph.volume.ijk_to_ras, ph.nodules)
        big = [n for n in real["nodules"] if n["diameter_mm"] >= SENS_MIN_DIAMETER]
        assert (sum(n["detected"] for n in big), len(big), real["fp"]) == (found, total, fp), thr
    assert len(seen) >= 3  # the thresholds really changed the outcome


def test_choose_point_finds_the_most_nodules_within_the_fp_rule(two_stage_file, tmp_path):
    tables = [scan_table(4, str(two_stage_file), str(tmp_path), (OFFSET,), 1, overrides=TINY)]
    key = str(OFFSET)
    scores = sorted(s for s in tables[0]["offsets"][key]["scores"] if np.isfinite(s))
    every = [count(tables, key, t) for t in [s - 1e-6 for s in scores] + [scores[-1] + 1.0]]
    for max_fp in (0.0, 1.0, 3.0):
        p = choose_point(tables, (OFFSET,), max_fp)
        assert count(tables, key, p["threshold"]) == (p["found_ge6mm"], p["nodules_ge6mm"], p["fp_per_scan"])
        assert p["fp_per_scan"] <= max_fp
        assert p["found_ge6mm"] == max(f for f, _n, fp in every if fp <= max_fp)
    tables[0]["offsets"]["0.1"] = tables[0]["offsets"][key]  # equally good: the smaller offset wins
    assert choose_point(tables, (OFFSET, 0.1), 3.0)["offset"] == 0.1


def test_match_nodules_agrees_with_nodule_scores():
    ph = generate_chest_ct(4, **TINY)
    pred = ph.labels.copy()
    pred[:2] = 3  # a false-positive slab
    m = match_nodules(ph.labels, pred, ph.volume.ijk_to_ras, ph.nodules)
    s = nodule_scores(ph.labels, pred, ph.volume.ijk_to_ras, ph.nodules)
    assert [bool(h) for h in m.hits] == [n["detected"] for n in s["nodules"]] == [True] * len(ph.nodules)
    assert len(m.unmatched()) == s["fp"] >= 1 and m.gt_voxels == [n["gt_voxels"] for n in s["nodules"]]


def test_cli_refuses_a_stage1_file_that_is_not_the_models_and_writes_nothing(two_stage_file, tmp_path, capsys):
    torch.manual_seed(9)
    from medcert.models import build_model

    other = save_weights(tmp_path / "other.safetensors", build_model("medcert.lungnodule/1", STAGE1).state_dict(),
                         {**load_weights(two_stage_file).metadata(), "architecture": "medcert.lungnodule/1",
                          "config": STAGE1})
    out = tmp_path / "cal.safetensors"
    assert main(["--weights", str(two_stage_file), "--stage1", str(other), "--out", str(out), "--n", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "stage 1 is not" in err and "\n" not in err and not out.exists()
    with pytest.raises(SystemExit) as exc:
        main(["--weights", str(two_stage_file), "--stage1", str(other), "--out", str(out), "--offsets", "a,b"])
    assert exc.value.code == 2 and "--offsets" in capsys.readouterr().err


def test_calibrate_writes_the_chosen_point_into_the_file(stage1_file, two_stage_file, tmp_path):
    from medcert.training.candidate_calibration import calibrate
    from medcert.training.config import CALIBRATION_SEED_START

    out = tmp_path / "cal.safetensors"
    res = calibrate(two_stage_file, stage1_file, out, n=1, offsets=(0.1, OFFSET), max_fp=2.0, jobs=1,
                    cache=tmp_path, version="9.9", overrides=TINY)
    point = res["calibration"]
    w, before = load_weights(out), load_weights(two_stage_file)
    assert w.version == "9.9" and w.config["candidates"]["offset"] == point["offset"] in (0.1, OFFSET)
    assert w.metrics["classifier"]["calibration"] == point and point["seeds"] == [CALIBRATION_SEED_START] * 2
    shift = before.state_dict[CLASSIFIER_BIAS].float() - w.state_dict[CLASSIFIER_BIAS].float()
    assert abs(float(shift) - point["threshold"]) < 0.05  # float16 storage
    assert point["fp_per_scan"] <= 2.0
    with pytest.raises(MedCertError, match="exists"):
        calibrate(two_stage_file, stage1_file, out, n=1, offsets=(OFFSET,), max_fp=2.0, jobs=1, cache=tmp_path,
                  overrides=TINY)


def test_a_file_whose_components_grow_is_counted_exactly_at_each_threshold(stage1_file, tmp_path):
    from medcert.training.candidate_calibration import calibrate

    grown = _two_stage_file(stage1_file, tmp_path, symmetric=True, grow=1)
    (tmp_path / "p").mkdir()
    plain = scan_table(4, str(_two_stage_file(stage1_file, tmp_path / "p", symmetric=True)), str(tmp_path),
                       (OFFSET,), 1, overrides=TINY)  # the same model without growing: its scores
    scores = np.unique([s for s in plain["offsets"][str(OFFSET)]["scores"] if np.isfinite(s)])
    assert scores.size >= 3
    gap = int(np.argmax(np.diff(scores)))  # the widest gap: clear of the float16 rounding of the baked bias
    assert scores[gap + 1] - scores[gap] > 0.1
    thresholds = (float(scores[0]) - 1.0, float(scores[gap] + scores[gap + 1]) / 2, float(scores[-1]) + 1.0)
    table = scan_table(4, str(grown), str(tmp_path), (OFFSET,), 1, overrides=TINY, thresholds=thresholds)
    assert set(table["offsets"][str(OFFSET)]["exact"]) == {str(t) for t in thresholds}
    ph = generate_chest_ct(4, **TINY)
    counts = []
    for thr in thresholds:
        counts.append(count([table], str(OFFSET), thr))
        w = _with_threshold(grown, thr, tmp_path / f"t{thr:.3f}.safetensors")
        run = run_segmentation(ph.volume, WeightsAdapter.from_weights(load_weights(w)), DEFAULT_PROFILE,
                               fingerprint=False, explain=False)
        real = nodule_scores(ph.labels, run.outputs.labels, ph.volume.ijk_to_ras, ph.nodules)
        big = [n for n in real["nodules"] if n["diameter_mm"] >= SENS_MIN_DIAMETER]
        assert (sum(n["detected"] for n in big), len(big), real["fp"]) == counts[-1], thr
    assert len({c[2] for c in counts}) >= 2  # the thresholds really changed the outcome
    with pytest.raises(MedCertError, match="was not counted"):
        count([table], str(OFFSET), 0.123)
    out = tmp_path / "cal.safetensors"
    res = calibrate(grown, stage1_file, out, n=1, offsets=(OFFSET,), max_fp=100.0, jobs=1, cache=tmp_path,
                    overrides=TINY, thresholds=thresholds)
    point = res["calibration"]
    assert point["rule"]["thresholds"] == list(thresholds)
    assert point["threshold"] in [round(t, 4) for t in thresholds]
    best = max(c[0] for c in counts)
    assert point["found_ge6mm"] == best
    assert point["fp_per_scan"] == min(c[2] for c in counts if c[0] == best)
    assert [c[0] for c in res["curves"][str(OFFSET)]] == sorted(thresholds)
