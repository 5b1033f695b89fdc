"""Demo-model training: real phantoms through the real preprocessing; a few steps reduce the loss."""

import numpy as np
import pytest
import torch
from medcert.errors import MedCertError
from medcert.inference.preprocess import PreprocessSpec
from medcert.models import build_model
from medcert.training.dataset import PatchSampler, extract, make_case
from medcert.training.loss import dice_ce_loss
from medcert.training.operating_point import choose
from medcert.training.train import TrainConfig, train

TINY = {"spacing_xy": 3.5, "thickness": 6.0, "n_nodules": 3, "nodule_diameters": [12.0, 16.0, 20.0]}
SPEC = PreprocessSpec(spacing_mm=6.0)


@pytest.fixture(scope="module")
def case():
    return make_case(21, SPEC, TINY)


def test_case_matches_preprocessing(case):
    assert case.image.shape == case.labels.shape and case.midline is not None
    assert set(np.unique(case.labels)) <= {0, 1, 2, 3} and (case.labels == 3).any()
    # Canonical grid: i → +x (R), so the right lung (1) lies at larger i than the left lung (2).
    xr = np.argwhere(case.labels == 1)[:, 0].mean()
    xl = np.argwhere(case.labels == 2)[:, 0].mean()
    assert xr > xl
    assert case.midline[np.rint(xr).astype(int)] > 0 > case.midline[np.rint(xl).astype(int)]
    assert len(case.nodule_centers) >= 1


def test_patch_sampling_is_deterministic_and_padded(case):
    s = PatchSampler((32, 32, 32))
    a = s.draw([case], np.random.default_rng([0, 5]))
    b = s.draw([case], np.random.default_rng([0, 5]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    x, y = extract(case, np.array([0, 0, 0]), (128, 128, 128))  # larger than the grid: edge padding
    assert x.shape == (2, 128, 128, 128) and y.shape == (128, 128, 128)


def test_few_steps_reduce_lung_loss(case):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_model("medcert.unet3d/1", {"in_channels": 2, "n_classes": 3, "channels": [4, 8]})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    s = PatchSampler((24, 24, 24), p_nodule=0.0, p_lung=1.0)
    x, y = s.draw([case], np.random.default_rng(3), augment=False)
    xt, yt = torch.from_numpy(x[None]), torch.from_numpy(np.where(y == 3, 1, y)[None])
    assert len(np.unique(yt)) >= 2
    model.eval()
    with torch.no_grad():
        before = float(dice_ce_loss(model(xt), yt))
    model.train()
    for _ in range(15):
        loss = dice_ce_loss(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = float(dice_ce_loss(model(xt), yt))
    assert after < 0.85 * before


TINY_CONFIG = {"lung": {"in_channels": 2, "channels": [4, 8]},
               "nodule": {"in_channels": 1, "channels": [4, 8], "norm": "batch"}}
TINY_ADAPTER = {"spacing_mm": 6.0, "window": [-1000.0, 500.0], "midline_channel": True, "patch": [32, 32, 32],
                "overlap": 0.25, "labels": {"1": "right lung", "2": "left lung", "3": "lung nodule"},
                "anomaly_label": 3}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    cfg = TrainConfig(out=tmp_path_factory.mktemp("train") / "m.safetensors", steps=3, initial_cases=1, threads=1,
                      model_config=TINY_CONFIG, adapter=TINY_ADAPTER, nodule_patch=(16, 16, 16),
                      phantom_overrides=TINY, lung_nodule_weight=10.0)
    return train(cfg, log=lambda _m: None)


def test_train_writes_loadable_two_network_weights(tiny_weights):
    from medcert.weights import build_network, load_weights

    w = load_weights(tiny_weights)
    assert w.architecture == "medcert.lungnodule/1" and w.config == TINY_CONFIG and w.adapter == TINY_ADAPTER
    info = w.metrics["training"]
    assert info["step_pairs"] == 3 and info["precision"] == "bf16" and set(info["final_loss_mean100"]) == {
        "lung", "nodule"}
    assert "no patient data" in w.training_data and info["lung_nodule_weight"] == 10.0
    # Batch-norm running statistics were learnt and kept (their counters stay integers).
    counter = w.state_dict["nodule.encoders.0.1.num_batches_tracked"]
    assert counter.dtype == torch.int64 and int(counter) == 3
    assert not torch.equal(w.state_dict["nodule.encoders.0.1.running_mean"], torch.zeros(4))
    # Stored as float16 (the file stays under 10 MB); the rebuilt network computes in float32.
    assert w.state_dict["lung.head.weight"].dtype == torch.float16 and info["storage"] == "float16"
    net = build_network(w)
    assert not net.training and all(p.dtype == torch.float32 for p in net.parameters())
    assert torch.equal(net.lung.head.weight, w.state_dict["lung.head.weight"].float())


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    from medcert.cli.main import main

    out = tmp_path / "exists.safetensors"
    out.write_bytes(b"x")
    assert main(["train-demo-model", "--out", str(out)]) == 65
    assert "refusing to overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"x"


@pytest.mark.parametrize("flag", [["--lung-nodule-weight", "0"], ["--detection-weight", "-1"],
                                  ["--hard-nodule-weight", "9", "--size-weighting"]])
def test_cli_rejects_bad_loss_weights(tmp_path, capsys, flag):
    from medcert.cli.main import main

    assert main(["train-demo-model", "--out", str(tmp_path / "m.safetensors"), *flag]) == 65
    err = capsys.readouterr().err
    assert "--lung-nodule-weight in (0, 100]" in err and "Traceback" not in err
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("value", ["-1000", "500", "nan"])
def test_cli_rejects_a_dense_threshold_outside_the_window(tmp_path, capsys, value):
    from medcert.cli.main import main

    assert main(["train-demo-model", "--out", str(tmp_path / "m.safetensors"), "--dense-hu", value]) == 65
    err = capsys.readouterr().err
    assert "--dense-hu must be in (-1000, 500)" in err and "Traceback" not in err
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_hard_nodule_weight_needs_size_weighting(tmp_path, capsys):
    from medcert.cli.main import main

    assert main(["train-demo-model", "--out", str(tmp_path / "m.safetensors"), "--hard-nodule-weight", "3"]) == 65
    err = capsys.readouterr().err
    assert "--hard-nodule-weight needs --size-weighting" in err and "Traceback" not in err
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("patch", ["96,64", "96,64,30", "a,b,c", "0,8,8"])
def test_cli_rejects_a_bad_nodule_patch(tmp_path, capsys, patch):
    from medcert.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["train-demo-model", "--out", str(tmp_path / "m.safetensors"), "--nodule-patch", patch])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "multiples of 8" in err and "Traceback" not in err
    assert not (tmp_path / "m.safetensors").exists()


def test_operating_point_shifts_only_the_nodule_logit(tiny_weights, case, tmp_path):
    from medcert.inference.engine import sliding_window_logits
    from medcert.models.lung_nodule import NODULE_BIAS
    from medcert.training.operating_point import apply_offset, lung_safe, sweep
    from medcert.weights import build_network, load_weights

    out = apply_offset(tiny_weights, tmp_path / "cal.safetensors", -2.5, {"nodule_logit_offset": -2.5})
    before, after = load_weights(tiny_weights), load_weights(out)
    assert after.metrics["operating_point"]["nodule_logit_offset"] == -2.5 and after.digest != before.digest
    for k, v in before.state_dict.items():  # only the nodule network's head bias moves
        assert torch.equal(after.state_dict[k], v - 2.5 if k == NODULE_BIAS else v), k
    x = np.stack([case.image.astype(np.float32), np.broadcast_to(case.midline[:, None, None], case.image.shape)])
    la, lb = (sliding_window_logits(build_network(w).requires_grad_(False), x, (32, 32, 32), 0.25)
              for w in (before, after))
    # The bias is stored as float16: the shift is exact up to its rounding (2**-9 at |b| in 2..4).
    assert np.allclose(lb[3], la[3] - 2.5, atol=2e-3) and np.array_equal(la[:3], lb[:3])
    # The sweep on a real case (every predicted nodule counts as a false positive here: no nodule list).
    others = la.copy()
    others[3] = -np.inf
    grid = np.eye(4) * 6.0
    grid[3, 3] = 1.0
    cases = [(la[3], others.max(axis=0), others.argmax(axis=0).astype(np.uint8), case.labels, grid, [])]
    rows = sweep(cases, 3, offsets=(50.0, 0.0, -50.0))
    assert rows[0]["fp_per_scan"] >= 1 and rows[-1]["fp_per_scan"] == 0  # everything nodule / nothing nodule
    assert rows[0]["dice_right_mean"] == 0 and rows[-1]["dice_right_mean"] >= rows[1]["dice_right_mean"]
    assert choose(rows, 0.0)["fp_per_scan"] == 0
    # +50 calls the whole lung "nodule": never chosen, however many false positives are allowed.
    assert 50.0 not in [r["offset"] for r in lung_safe(rows)]
    assert choose(rows, 1e9)["offset"] != 50.0 and choose(rows, None, 0.5)["offset"] != 50.0


def test_operating_point_breaks_sensitivity_ties_by_fewer_false_positives():
    """On a sensitivity plateau the rule takes the offset with the fewest false positives, not the widest."""
    def row(offset: float, sens: float, fp: float) -> dict:
        return {"offset": offset, "sensitivity_ge6mm": sens, "fp_per_scan": fp,
                "dice_right_mean": 0.97, "dice_left_mean": 0.96}

    rows = [row(3.0, 0.6, 0.9), row(1.0, 0.6, 0.9), row(-1.0, 0.6, 0.4), row(-2.0, 0.5, 0.1), row(4.0, 0.8, 3.0)]
    assert choose(rows, 1.0)["offset"] == -1.0
    assert choose(rows[:2], 1.0)["offset"] == 1.0  # equal counts: the smaller shift
    assert choose(rows, 5.0)["offset"] == 4.0  # a higher sensitivity still wins


def test_operating_point_rule_reproduces_the_shipped_choice():
    """The stored calibration sweep of the shipped model, run through today's rule, gives its recorded offset."""
    from medcert.weights import default_weights_path, load_weights

    op = load_weights(default_weights_path()).metrics["operating_point"]
    rule = op["rule"]
    assert choose(op["sweep"], rule["max_fp_per_scan"], rule["min_sensitivity_ge6mm"])["offset"] == \
        op["nodule_logit_offset"]


def test_nodule_stage_starts_from_a_trained_file_and_leaves_the_lungs_alone(tiny_weights, tmp_path):
    from medcert.weights import load_weights

    cfg = TrainConfig(out=tmp_path / "stage2.safetensors", seed=1, steps=2, initial_cases=1, threads=1,
                      model_config=TINY_CONFIG, adapter=TINY_ADAPTER, nodule_patch=(24, 16, 8), nodule_batch=1,
                      phantom_overrides=TINY, init=tiny_weights, nodule_only=True, size_weighting=True, lr=5e-4,
                      hard_nodule_weight=2, dense_hu=-400.0)
    first, second = load_weights(tiny_weights), load_weights(train(cfg, log=lambda _m: None))
    for k, v in first.state_dict.items():
        if k.startswith("lung."):
            assert torch.equal(second.state_dict[k], v), k
    assert not torch.equal(second.state_dict["nodule.head.weight"], first.state_dict["nodule.head.weight"])
    info = second.metrics["training"]
    assert info["steps"] == 2 and info["nodule_only"] and info["size_weighting"]
    assert info["nodule_patch"] == [24, 16, 8] and info["nodule_batch"] == 1 and info["tiny_nodule_mm"] == 5.0
    assert info["hard_nodule_weight"] == 2 and info["dense_hu"] == -400.0
    assert info["init"]["file_sha256"] == first.digest_hex and info["init"]["training"]["step_pairs"] == 3
    assert set(info["final_loss_mean100"]) == {"nodule"}
    other = {**TINY_CONFIG, "nodule": {**TINY_CONFIG["nodule"], "channels": [4, 4]}}
    with pytest.raises(MedCertError, match="differ"):
        train(TrainConfig(out=tmp_path / "x.safetensors", steps=1, initial_cases=1, threads=1, model_config=other,
                          adapter=TINY_ADAPTER, phantom_overrides=TINY, init=tiny_weights, nodule_only=True),
              log=lambda _m: None)
    assert not (tmp_path / "x.safetensors").exists()


def test_hard_nodule_mix_plans_more_nodules_of_every_kind_and_keeps_the_acquisition():
    from medcert.training.dataset import HARD_MIX_KINDS, training_overrides

    kinds: list[str] = []
    counts = []
    for seed in range(110000, 110300):
        default, hard = training_overrides(seed), training_overrides(seed, "hard")
        assert hard == training_overrides(seed, "hard")  # deterministic for a seed
        assert hard["spacing_xy"] == default["spacing_xy"] and "n_nodules" not in hard
        assert len(hard["nodule_diameters"]) == len(hard["nodule_kinds"])
        assert all(5.0 <= d <= 20.0 for d in hard["nodule_diameters"])
        counts.append(len(hard["nodule_diameters"]))
        kinds += hard["nodule_kinds"]
    assert min(counts) == 4 and max(counts) == 8
    assert np.mean(counts) > 1.8 * np.mean([training_overrides(s)["n_nodules"] for s in range(110000, 110300)])
    shares = [kinds.count(k) / len(kinds) for k in HARD_MIX_KINDS]
    assert set(kinds) == set(HARD_MIX_KINDS) and all(0.2 < s < 0.3 for s in shares), shares
    with pytest.raises(ValueError, match="nodule mix"):
        training_overrides(110000, "easy")


def test_wide_nodule_mix_covers_5_to_30_mm_with_juxtapleural_nodules_twice_as_often():
    from medcert.training.dataset import WIDE_MIX_KINDS, training_overrides

    kinds: list[str] = []
    sizes: list[float] = []
    for seed in range(110000, 110300):
        hard, wide = training_overrides(seed, "hard"), training_overrides(seed, "wide")
        assert wide == training_overrides(seed, "wide") and wide["spacing_xy"] == hard["spacing_xy"]
        assert len(wide["nodule_diameters"]) == len(hard["nodule_diameters"]) == len(wide["nodule_kinds"])
        sizes += wide["nodule_diameters"]
        kinds += wide["nodule_kinds"]
    assert min(sizes) >= 5.0 and max(sizes) <= 30.0
    assert 0.15 < np.mean(np.array(sizes) > 20.0) < 0.3  # log-uniform: ln 1.5 / ln 6 = 0.23 above 20 mm
    assert set(kinds) == set(WIDE_MIX_KINDS) and 0.33 < kinds.count("juxtapleural") / len(kinds) < 0.47


def test_a_hard_mix_phantom_holds_the_planned_nodules():
    from medcert.phantom import generate_chest_ct
    from medcert.training.dataset import training_overrides

    plan = training_overrides(110002, "hard")
    ph = generate_chest_ct(110002, **{**plan, "spacing_xy": 3.5, "thickness": 5.0})
    assert 0.75 * len(plan["nodule_kinds"]) <= len(ph.nodules) <= len(plan["nodule_kinds"])
    assert {n.kind for n in ph.nodules} <= set(plan["nodule_kinds"])
    assert sorted(n.diameter_mm for n in ph.nodules) == sorted(
        d for d in plan["nodule_diameters"] if any(n.diameter_mm == d for n in ph.nodules))


def test_training_refuses_an_unknown_nodule_mix_and_writes_nothing(tmp_path):
    cfg = TrainConfig(out=tmp_path / "m.safetensors", steps=1, initial_cases=1, threads=1, model_config=TINY_CONFIG,
                      adapter=TINY_ADAPTER, nodule_mix="easy")
    with pytest.raises(MedCertError, match="nodule mix must be one of default, hard"):
        train(cfg, log=lambda _m: None)
    assert not cfg.out.exists()


def test_cli_rejects_an_unknown_nodule_mix(tmp_path, capsys):
    from medcert.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["train-demo-model", "--out", str(tmp_path / "m.safetensors"), "--nodule-mix", "easy"])
    assert exc.value.code == 64
    err = capsys.readouterr().err
    assert "invalid choice: 'easy'" in err and "Traceback" not in err
    assert not (tmp_path / "m.safetensors").exists()


def test_a_nodule_stage_on_the_hard_mix_records_it_in_the_file_and_the_card(tiny_weights, tmp_path):
    from medcert.training.model_card import _stage
    from medcert.weights import load_weights

    cfg = TrainConfig(out=tmp_path / "hard.safetensors", seed=3, steps=1, initial_cases=1, threads=1,
                      model_config=TINY_CONFIG, adapter=TINY_ADAPTER, nodule_patch=(16, 16, 16), nodule_batch=1,
                      init=tiny_weights, nodule_only=True, size_weighting=True, nodule_mix="hard")
    info = load_weights(train(cfg, log=lambda _m: None)).metrics["training"]
    assert info["nodule_mix"] == "hard" and info["cases"] == 1
    assert "hard nodule mix" in _stage(info)
    assert "nodule mix" not in _stage(load_weights(tiny_weights).metrics["training"])
