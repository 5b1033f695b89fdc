"""``medcert.training.probe_nodules``: the nodule network's peak log-odds per nodule, on real phantoms and weights."""

import subprocess
import sys
from pathlib import Path

import pytest
from medcert.inference import WeightsAdapter
from medcert.training.config import HELD_OUT_SEED_START
from medcert.training.dataset import make_training_case
from medcert.training.probe_nodules import nodule_network, probe_case, summary_line
from medcert.weights import load_weights

WEIGHTS = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "medcert-lung-demo.safetensors"
COARSE = {"spacing_xy": 2.5, "thickness": 5.0, "oblique_deg": 0.0}
# Thin slices: on 5 mm slices partial volume puts even a 15 mm solid nodule's median below FAINT_HU on the grid.
FINE = {"spacing_xy": 1.5, "thickness": 1.5, "oblique_deg": 0.0}


@pytest.fixture(scope="module")
def shipped():
    adapter = WeightsAdapter.from_weights(load_weights(WEIGHTS))
    return nodule_network(adapter.network().eval()), adapter.spec


def test_large_solid_nodule_is_fired_on_and_ground_glass_is_faint(shipped):
    net, spec = shipped
    case = make_training_case(HELD_OUT_SEED_START + 901, spec,
                              {**FINE, "nodule_diameters": [15.0, 20.0], "nodule_kinds": ["solid", "ground-glass"]})
    probes = sorted(probe_case(case, [net, net], spec, (96, 64, 32)), key=lambda p: p.faint)
    assert [p.faint for p in probes] == [False, True]
    solid = probes[0]
    assert solid.peaks[0] > 0 and solid.peaks[0] == solid.peaks[1]  # deterministic across identical networks
    assert 12.0 < solid.diameter_mm < 18.0
    assert summary_line(probes, 0).startswith("faint ") and "solid 1/1 fired on" in summary_line(probes, 0)


def test_small_nodules_are_not_probed(shipped):
    net, spec = shipped
    case = make_training_case(HELD_OUT_SEED_START + 902, spec,
                              {**COARSE, "nodule_diameters": [3.5], "nodule_kinds": ["solid"]})
    assert probe_case(case, [net], spec, (96, 64, 32)) == []


@pytest.mark.parametrize("args, message", [
    (["--seeds", "5:5"], "empty seed range"),
    (["--seeds", "1:2", "--patch", "96,64"], "expected three sizes"),
    (["--seeds", "1:2", "--weights", "/nonexistent.safetensors"], "/nonexistent.safetensors"),
])
def test_bad_arguments_fail_in_one_line(args, message):
    p = subprocess.run([sys.executable, "-m", "medcert.training.probe_nodules", "--weights", str(WEIGHTS), *args],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr
