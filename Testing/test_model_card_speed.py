"""The model card's speed section: a ``medcert.bench --json`` record, bound to the weights file it measured."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from medcert.bench import speed_record
from medcert.training.model_card import SpeedRecordError, load_speed, render
from medcert.weights import load_weights

WEIGHTS = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "medcert-lung-demo.safetensors"


@pytest.fixture(scope="module")
def weights():
    return load_weights(WEIGHTS)


def _record(weights, **timings) -> dict:
    t = {"forward_plain": 12.34, "forward_certified": 12.9, "segment_certify": 41.26, "verify_replay": 33.5}
    return speed_record(model={"name": weights.name, "version": weights.version, "sha256": weights.digest_hex},
                        shape=(512, 512, 130), spacing=(0.7, 0.7, 2.5), threads=2, repeats=1,
                        timings={**t, **timings})


def test_bench_record_renders_into_the_card(weights, tmp_path):
    path = tmp_path / "speed.json"
    path.write_text(json.dumps(_record(weights)))
    card = render(weights, load_speed(path, weights))
    assert "## Speed" in card and "512 × 512 × 130 chest CT (0.7 × 0.7 × 2.5 mm), 2 CPU thread(s)" in card
    assert "| Segment + certify (resampling, forward, explanation, findings, signed sidecar) | 41.3 s |" in card
    assert "| Replay verification | 33.5 s |" in card
    assert "## Speed" not in render(weights)


def test_record_of_other_weights_is_refused(weights, tmp_path):
    rec = _record(weights)
    rec["model"]["sha256"] = "0" * 64
    path = tmp_path / "speed.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(SpeedRecordError, match="measured on weights 0000000000000000"):
        load_speed(path, weights)


@pytest.mark.parametrize("change", [
    {"timings_s": {"forward_plain": 1.0}},
    {"volume_shape": [512, 512]},
    {"threads": "2"},
    {"timings_s": {"forward_plain": -1.0, "forward_certified": 1.0, "segment_certify": 1.0, "verify_replay": 1.0}},
])
def test_malformed_record_is_refused(weights, tmp_path, change):
    path = tmp_path / "speed.json"
    path.write_text(json.dumps({**_record(weights), **change}))
    with pytest.raises(SpeedRecordError, match="missing or invalid fields"):
        load_speed(path, weights)


def test_cli_refuses_bad_record_in_one_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "speed.json"
    bad.write_text("{not json")
    out = tmp_path / "MODEL_CARD.md"
    p = subprocess.run([sys.executable, "-m", "medcert.training.model_card", "--weights", str(WEIGHTS),
                        "--out", str(out), "--speed", str(bad)], capture_output=True, text=True, check=False)
    assert p.returncode == 2
    assert p.stderr.startswith("error: cannot read speed record") and len(p.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_card_names_the_stage2_options_and_an_input_grid_calibration(weights, tmp_path):
    from medcert.weights import save_weights

    cal = {"seeds": [800000, 800049], "counted": "input-grid components", "rule": {"max_fp_per_scan": 0.8},
           "offset": 2.5, "threshold": 0.66, "found_ge6mm": 71, "nodules_ge6mm": 86, "fp_per_scan": 0.58}
    meta = weights.metadata({**weights.metrics, "classifier": {**weights.metrics["classifier"], "calibration": cal}})
    meta["config"] = {**weights.config, "candidates": {**weights.config["candidates"], "closing": 8,
                                                       "symmetric": True, "grow": 1}}
    variant = load_weights(save_weights(tmp_path / "v.safetensors", weights.state_dict, meta))
    card = render(variant)
    # The classifier's training candidates are named by the settings they were extracted with, not the closing.
    assert 'candidates `{"limit": 512, "nms": 7, "offset": 2.5}`' in card
    assert "the lung mask closed by a ball of 8 grid voxels" in card
    assert "training candidates above were found with a closing of 0" in card
    assert "accepted components grow by 1 grid voxels" in card
    clf = {**weights.metrics["classifier"], "calibration": cal, "extract_closing": 8}
    trained_closed = load_weights(save_weights(tmp_path / "c.safetensors", weights.state_dict,
                                               {**meta, "metrics": {**meta["metrics"], "classifier": clf}}))
    card = render(trained_closed)
    assert 'candidates `{"closing": 8, "limit": 512, "nms": 7, "offset": 2.5}`' in card
    assert "training candidates above were found with a closing of 8" in card
    assert ("calibration seeds 800000..800049: 71 of 86 nodules ≥ 6 mm found, 0.58 false-positive components per "
            "scan, counted on the input grid") in card
    shipped = render(weights)
    assert "closed by a ball" not in shipped and "the same calibration seeds 800000..800015" in shipped
