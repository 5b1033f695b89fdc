"""The two-stage demo architecture (medcert.lungnodule/2): candidates, patches, the classifier's gate, its
fingerprint, and the stage-3 training pieces, on real phantoms and real networks."""

import numpy as np
import pytest
import torch
from medcert.errors import WeightsError
from medcert.inference import WeightsAdapter, run_segmentation
from medcert.inference.fingerprint import deviation
from medcert.models import build_model
from medcert.models.lung_nodule_two_stage import CLASSIFIER_BIAS
from medcert.models.nodule_candidates import find_candidates, gather_patches, nodule_margin
from medcert.tolerance import DEFAULT_PROFILE
from medcert.training.candidate_data import extract_candidates
from medcert.training.classifier import assemble, choose_threshold, froc_point, train_classifier
from medcert.weights import load_weights, save_weights
from scipy import ndimage

TINY = {"spacing_xy": 3.5, "thickness": 6.0, "n_nodules": 3, "nodule_diameters": [12.0, 16.0, 20.0]}
STAGE1 = {"lung": {"in_channels": 2, "channels": [4, 8]},
          "nodule": {"in_channels": 1, "channels": [4, 8], "norm": "batch"}}
CLASSIFIER = {"in_channels": 2, "channels": [4, 8], "patch": 8, "hidden": 8}
ADAPTER = {"spacing_mm": 6.0, "window": [-1000.0, 500.0], "midline_channel": True, "patch": [32, 32, 32],
           "overlap": 0.25, "labels": {"1": "right lung", "2": "left lung", "3": "lung nodule"}, "anomaly_label": 3}


def _two_stage(offset: float = 0.0):
    torch.manual_seed(0)
    return build_model("medcert.lungnodule/2", {**STAGE1, "classifier": CLASSIFIER,
                                                "candidates": {"offset": offset, "nms": 3, "limit": 64}}).eval()


@pytest.fixture(scope="module")
def stage1_file(tmp_path_factory):
    torch.manual_seed(1)
    net = build_model("medcert.lungnodule/1", STAGE1).eval()
    meta = {"architecture": "medcert.lungnodule/1", "config": STAGE1, "adapter": ADAPTER, "name": "tiny",
            "version": "0", "metrics": {}}
    return save_weights(tmp_path_factory.mktemp("w") / "s1.safetensors", net.state_dict(), meta)


def test_candidates_are_the_local_maxima_above_zero_highest_first():
    m = torch.full((12, 12, 12), -1.0)
    m[2, 2, 2], m[2, 3, 2] = 1.0, 0.5  # the second is inside the first's 3^3 window: suppressed
    m[8, 8, 8], m[8, 8, 11] = 3.0, 2.0  # three voxels apart: two peaks
    m[5, 5, 5] = 0.0  # a maximum, but not above zero
    assert find_candidates(m, 3, 16).tolist() == [[2, 2, 2], [8, 8, 8], [8, 8, 11]]
    assert find_candidates(m, 3, 2).tolist() == [[8, 8, 8], [8, 8, 11]]
    assert find_candidates(m, 7, 16).tolist() == [[2, 2, 2], [8, 8, 8]]


def test_patches_are_centred_on_the_candidate_and_padded_with_air():
    g = torch.Generator().manual_seed(0)
    img, m = torch.rand(10, 11, 12, generator=g), 30 * torch.randn(10, 11, 12, generator=g)
    centres = torch.tensor([[5, 5, 5], [0, 10, 11]])
    p = gather_patches(img, m, centres, 6)
    assert p.shape == (2, 2, 6, 6, 6)
    assert torch.equal(p[0, 0], img[2:8, 2:8, 2:8])
    assert torch.equal(p[0, 1], m[2:8, 2:8, 2:8].clamp(-10, 10) / 10)
    assert p[1, 0, 3, 3, 3] == img[0, 10, 11] and torch.equal(p[1, 0, :3], torch.zeros(3, 6, 6))
    assert torch.equal(p[1, 1, :, 5], -torch.ones(6, 6))  # beyond y = 10: margin -10


def _blobs():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 20, 20, 20, generator=g)
    logits[3] = logits[:3].amax(0) - 4.0
    for c in ((5, 5, 5), (14, 14, 12), (5, 15, 14)):
        sl = tuple(slice(v - 2, v + 2) for v in c)
        logits[3][sl] += 4.0 + 3.0 * torch.rand(4, 4, 4, generator=g)
    return torch.rand(2, 20, 20, 20, generator=g), logits


@pytest.mark.parametrize("bias", [-100.0, 0.0, 100.0])
def test_each_component_keeps_the_nodule_label_only_when_its_best_candidate_scores_above_zero(bias):
    net = _two_stage(offset=1.5)
    with torch.no_grad():
        net.classifier.head[4].bias.fill_(bias)
        x, logits = _blobs()
        out, found = net.refine(x, logits)
    assert torch.equal(out[:3], logits[:3])
    margin = nodule_margin(logits)
    comp, n = ndimage.label((margin > 0).numpy(), structure=np.ones((3, 3, 3), bool))
    assert n >= 3 and len(found["scores"]) >= n
    labels = out.argmax(0).numpy()
    refined = nodule_margin(out)
    accepted = 0
    for c in range(1, n + 1):
        inside = torch.from_numpy(comp == c)
        scores = [s for v, s in zip(found["voxels"], found["scores"], strict=True) if comp[tuple(v)] == c]
        if scores and max(scores) > 0:  # accepted: nodule throughout, margin capped at the best score
            accepted += 1
            assert (labels[inside.numpy()] == 3).all()
            assert torch.allclose(refined[inside], torch.minimum(margin[inside], torch.tensor(max(scores))), atol=1e-5)
        else:  # rejected (or no candidate of its own): the offset below zero, like everything outside
            assert not (labels[inside.numpy()] == 3).any()
            assert torch.allclose(refined[inside], torch.full_like(refined[inside], -1.5), atol=1e-5)
    outside = torch.from_numpy(comp == 0)
    assert not (labels[outside.numpy()] == 3).any()
    assert torch.equal(out[3][outside], logits[3][outside] - 1.5)  # stage 1 without the candidate offset
    with_candidates = len({int(comp[tuple(v)]) for v in found["voxels"]})
    assert accepted == {-100.0: 0, 100.0: with_candidates}.get(bias, accepted) and with_candidates >= 3


def _weak_candidate_logits() -> torch.Tensor:
    """Lung everywhere; the raised nodule margin is -1 except on a 2x2x2 block (4..5 on each axis) where it is
    +0.2, with +0.3 at (4, 4, 4): one weakly raised candidate component."""
    logits = torch.zeros(4, 10, 10, 10)
    logits[1] = 2.0
    logits[3] = logits[1] - 1.0
    logits[3, 4:6, 4:6, 4:6] = logits[1, 4:6, 4:6, 4:6] + 0.2
    logits[3, 4, 4, 4] += 0.1
    return logits


@pytest.mark.parametrize("symmetric", [False, True])
def test_a_symmetric_gate_keeps_a_weak_accepted_component_through_resampling(symmetric):
    from medcert.inference.postprocess import to_input_grid
    from medcert.volume import StudyIdentity, Volume

    offset = 2.5
    torch.manual_seed(0)
    net = build_model("medcert.lungnodule/2", {**STAGE1, "classifier": CLASSIFIER, "candidates": {
        "offset": offset, "nms": 3, "limit": 64, "symmetric": symmetric}}).eval()
    with torch.no_grad():
        net.classifier.head[4].bias.fill_(100.0)  # accept every candidate
        out, found = net.refine(torch.rand(2, 10, 10, 10), _weak_candidate_logits())
    assert found["voxels"].tolist() == [[4, 4, 4]]
    grid_labels = out.argmax(0)
    assert (grid_labels[4:6, 4:6, 4:6] == 3).all() and (grid_labels == 3).sum() == 8
    refined = nodule_margin(out)
    assert refined[5, 5, 5] == pytest.approx(offset if symmetric else 0.2, abs=1e-5)
    assert refined[0, 0, 0] == pytest.approx(-1.0 - offset, abs=1e-5)  # outside: stage 1 without the offset
    # Input voxels of 1 mm, centred a quarter of a grid voxel off the 2 mm grid: the block covers 4^3 of them.
    # With the symmetric margin the block's edge falls half-way to the next grid voxel, so its 8 interior input
    # voxels and the 24 in the middle of its faces are nodule (the 32 at its edges and corners are cut by the
    # trilinear weights); with the weak +0.2 margin against -3.5 outside, only the 8 interior ones.
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, 3] = 0.5
    vol = Volume(np.zeros((20, 20, 20), np.int16), ijk_to_ras, StudyIdentity("nrrd", "t"))
    labels = to_input_grid(out.numpy(), np.diag([2.0, 2.0, 2.0, 1.0]), vol, anomaly_label=None,
                           margin_tol=0.0).labels
    assert (labels == 3).sum() == (32 if symmetric else 8)
    assert (labels[7:11, 7:11, 7:11] == 3).sum() == (labels == 3).sum()


@pytest.mark.parametrize("grow", [0, 1, 2])
def test_an_accepted_component_grows_by_the_configured_grid_voxels_and_a_rejected_one_does_not(grow):
    torch.manual_seed(0)
    net = build_model("medcert.lungnodule/2", {**STAGE1, "classifier": CLASSIFIER, "candidates": {
        "offset": 2.5, "nms": 3, "limit": 64, "symmetric": True, "grow": grow}}).eval()
    for bias, expected in ((100.0, (2 + 2 * grow) ** 3), (-100.0, 0)):
        with torch.no_grad():
            net.classifier.head[4].bias.fill_(bias)
            out, _ = net.refine(torch.rand(2, 10, 10, 10), _weak_candidate_logits())
        nodule = (out.argmax(0) == 3).numpy()
        assert nodule.sum() == expected
        if expected:  # the 2x2x2 block at 4..5 dilated by `grow` voxels (26-connected), all at +offset
            lo, hi = 4 - grow, 6 + grow
            assert nodule[lo:hi, lo:hi, lo:hi].all()
            ring = nodule.copy()
            ring[4:6, 4:6, 4:6] = False
            assert torch.allclose(nodule_margin(out)[torch.from_numpy(ring)], torch.tensor(2.5), atol=1e-5)
    for bad in (5, -1, 1.0, True):
        with pytest.raises(WeightsError, match=r"candidates\.grow must be an integer in 0\.\.4"):
            build_model("medcert.lungnodule/2", {**STAGE1, "classifier": CLASSIFIER,
                                                 "candidates": {"offset": 1.0, "grow": bad}})


def test_the_symmetric_flag_must_be_a_boolean():
    with pytest.raises(WeightsError, match=r"candidates\.symmetric must be true or false"):
        build_model("medcert.lungnodule/2", {**STAGE1, "classifier": CLASSIFIER,
                                             "candidates": {"offset": 1.0, "symmetric": "yes"}})


@pytest.mark.parametrize("context", [0, 16])
def test_fingerprint_covers_the_classifier_and_a_changed_classifier_moves_only_its_layers(stage1_file, tmp_path,
                                                                                          context):
    from medcert.models.candidate_classifier import CandidateClassifier
    from medcert.phantom import generate_chest_ct

    s1 = load_weights(stage1_file)
    torch.manual_seed(2)
    config = {**CLASSIFIER, "context": context}
    state, meta = assemble(s1, CandidateClassifier(**config).eval(), "0", config)
    meta["config"] = {**STAGE1, "classifier": config, "candidates": {"offset": 20.0, "nms": 3, "limit": 64}}
    a = save_weights(tmp_path / "a.safetensors", state, meta)
    changed = dict(state)
    changed["classifier.blocks.1.0.weight"] = state["classifier.blocks.1.0.weight"] * 1.01
    b = save_weights(tmp_path / "b.safetensors", changed, meta)
    vol = generate_chest_ct(4, **TINY).volume
    runs = [run_segmentation(vol, WeightsAdapter.from_weights(load_weights(p)), DEFAULT_PROFILE, explain=False)
            for p in (a, b)]
    names = [t.name for t in runs[0].trajectory]
    towers = ["classifier.f0", "classifier.f1"] + (["classifier.c0", "classifier.c1"] if context else [])
    assert names[-len(towers) - 1:] == [*towers, "classifier.head"]
    assert len(runs[0].candidates["scores"]) > 0
    for ta, tb in zip(runs[0].trajectory, runs[1].trajectory, strict=True):
        moved = deviation(tb.values, ta.values) > DEFAULT_PROFILE.layer_rel
        assert moved == (ta.name in ("classifier.f1", "classifier.head")), ta.name


def test_context_classifier_sees_the_centre_finely_and_the_surroundings_coarsely():
    from medcert.models.candidate_classifier import CandidateClassifier

    torch.manual_seed(0)
    net = CandidateClassifier(**{**CLASSIFIER, "context": 16}).eval()
    assert net.input_size == 16
    x = torch.rand(3, 2, 16, 16, 16)
    with torch.no_grad():
        base = net(x)
        ring = x.clone()
        ring[..., :4, :, :] += 1.0  # outside the central 8^3: only the context tower sees it
        centre = x.clone()
        centre[..., 4:12, 4:12, 4:12] += 1.0
        fine_only = net.blocks[0](x[..., 4:12, 4:12, 4:12])
    assert base.shape == (3,) and not torch.allclose(net(ring), base) and not torch.allclose(net(centre), base)
    assert torch.equal(net.blocks[0](ring[..., 4:12, 4:12, 4:12]), fine_only)  # the fine tower: the centre only
    for bad in (8, 12, -8):
        with pytest.raises(ValueError, match="context"):
            CandidateClassifier(**{**CLASSIFIER, "context": bad})


def test_candidate_labels_training_and_threshold(stage1_file, tmp_path):
    from dataclasses import replace

    from medcert.training.classifier import at_offset, centre_crop

    s1 = load_weights(stage1_file)
    adapter = WeightsAdapter.from_weights(s1)
    net1 = adapter.network().requires_grad_(False)
    wide = extract_candidates(4, adapter, net1, offset=20.0, nms=3, limit=5000, size=18, overrides=TINY)
    cached = [extract_candidates(4, adapter, net1, offset=20.0, nms=3, limit=5000, size=18, overrides=TINY,
                                 logits_path=tmp_path / "logits.npy") for _ in range(2)]  # computed, then read
    assert (tmp_path / "logits.npy").is_file()
    for c in cached:
        assert np.array_equal(c.patches, wide.patches) and np.array_equal(c.nodule, wide.nodule)
    cs = replace(wide, patches=centre_crop(wide.patches, 10).numpy().astype(np.float16))
    assert cs.patches.shape[1:] == (2, 10, 10, 10) and len(cs.nodule) == len(cs.margin) > 0
    low = at_offset(wide, 2.0)  # the candidates that exist at a lower offset: margin above -2
    assert np.array_equal(low.margin, wide.margin[wide.margin > -2.0]) and len(low.patches) == len(low.nodule)
    ctx = train_classifier([wide], steps=2, batch=4, threads=1, config={**CLASSIFIER, "context": 16})
    assert ctx.input_size == 16 and not ctx.training
    assert len(cs.diameters) == 3 and set(np.unique(cs.nodule)) <= {-1, 0, 1, 2}
    assert (cs.nodule >= 0).any() and (cs.nodule < 0).any()
    net = train_classifier([cs], steps=3, batch=4, threads=1, config=CLASSIFIER)
    assert not net.training
    scores = [np.random.default_rng(0).normal(size=len(cs.nodule))]
    point = choose_threshold(scores, [cs], max_fp=2.0)
    assert point["fp_per_scan"] <= 2.0
    lower = np.sort(scores[0][scores[0] < point["threshold"]])
    if len(lower):  # one candidate more would break the rule
        assert froc_point(scores, [cs], float(lower[-1]) - 1e-9)[2] > 2.0
    state, meta = assemble(s1, net, "9")
    assert meta["architecture"] == "medcert.lungnodule/2" and CLASSIFIER_BIAS in state
    assert state[CLASSIFIER_BIAS].dtype == torch.float16



def test_bf16_training_candidates_are_cached_apart_and_close_to_float32(stage1_file, tmp_path):
    from medcert.training.candidate_data import logits_path

    adapter = WeightsAdapter.from_weights(load_weights(stage1_file))
    net1 = adapter.network().requires_grad_(False)
    paths = {p: logits_path(tmp_path, 4, TINY, p) for p in ("fp32", "bf16")}
    assert paths["fp32"] != paths["bf16"] and paths["fp32"] == logits_path(tmp_path, 4, TINY)
    sets = {p: extract_candidates(4, adapter, net1, offset=20.0, nms=3, limit=5000, size=10, overrides=TINY,
                                  logits_path=paths[p], precision=p) for p in paths}
    l32, l16 = np.load(paths["fp32"]), np.load(paths["bf16"])
    assert l16.dtype == np.float32 and l16.shape == l32.shape and not np.array_equal(l16, l32)
    assert np.abs(l16 - l32).max() <= 0.05 * np.abs(l32).max()  # bfloat16 keeps 8 bits of mantissa
    a, b = sets["fp32"], sets["bf16"]
    assert abs(len(a.nodule) - len(b.nodule)) <= 0.1 * len(a.nodule)
    assert set(a.nodule[a.nodule >= 0].tolist()) == set(b.nodule[b.nodule >= 0].tolist())
    with pytest.raises(ValueError, match="precision"):
        logits_path(tmp_path, 4, TINY, "fp16")


def test_training_candidates_with_a_closing_are_the_candidates_inference_finds(stage1_file, tmp_path):
    from medcert.phantom import generate_chest_ct
    from medcert.training.classifier import centre_crop

    s1 = load_weights(stage1_file)
    adapter = WeightsAdapter.from_weights(s1)
    net1 = adapter.network().requires_grad_(False)
    offset, cached = 0.0, tmp_path / "logits.npy"  # 0: the same float operations in both paths
    closed = extract_candidates(4, adapter, net1, offset=offset, nms=3, limit=4096, size=10, overrides=TINY,
                                logits_path=cached, closing=2)
    plain = extract_candidates(4, adapter, net1, offset=offset, nms=3, limit=4096, size=10, overrides=TINY,
                               logits_path=cached)
    model = build_model("medcert.lungnodule/2", {**STAGE1, "classifier": CLASSIFIER, "candidates": {
        "offset": offset, "nms": 3, "limit": 4096, "closing": 2}}).eval()
    model.stage1.load_state_dict(net1.state_dict())
    prep = adapter.preprocess(generate_chest_ct(4, **TINY).volume)
    raised = torch.from_numpy(np.load(cached))
    raised[3] += offset
    with torch.no_grad():
        found = model.find(torch.from_numpy(prep.tensor), raised)
    assert len(closed.margin) == len(found["voxels"]) > 0
    assert np.array_equal(closed.margin, found["margin"] - offset)
    assert torch.equal(centre_crop(closed.patches, 8), found["patches"].to(torch.float16).float())
    # the closing changes the candidates: a plain extraction is not what this model finds
    assert len(plain.margin) != len(closed.margin) or not np.allclose(plain.margin, closed.margin)


def test_explanation_adds_the_gradient_of_the_accepted_candidates_scores():
    from medcert.inference.engine import certified_mode
    from medcert.inference.explain import explanation_map

    net = _two_stage()
    x, logits = _blobs()
    with torch.no_grad():
        net.classifier.head[4].bias.fill_(100.0)
    with certified_mode():
        out, found = net.refine(x, logits)
    args = (net, x.numpy(), out.numpy(), (16, 16, 16), 0.25, 3)
    with_clf, tiles = explanation_map(*args, candidates=found)
    again, _ = explanation_map(*args, candidates=found)
    alone, tiles_alone = explanation_map(*args)
    assert np.array_equal(with_clf, again) and tiles == tiles_alone > 0
    assert with_clf.max() == 1.0 and (with_clf >= alone).all() and (with_clf > alone).any()
    with certified_mode(grad=True):
        second = net.candidate_saliency(found, (20, 20, 20))
    # The classifier's part lies within the patches (offsets -p/2 .. p/2 - 1) around the candidates.
    h = CLASSIFIER["patch"] // 2
    near = np.zeros((20, 20, 20), bool)
    for v in found["voxels"]:
        near[max(v[0] - h, 0):v[0] + h, max(v[1] - h, 0):v[1] + h, max(v[2] - h, 0):v[2] + h] = True
    assert second.max() > 0 and not second[~near].any()
    with torch.no_grad():
        net.classifier.head[4].bias.fill_(-100.0)
        found["scores"] = found["scores"] - 1000.0
    with certified_mode(grad=True):
        assert net.candidate_saliency(found, (20, 20, 20)) is None


def test_stage3_cli_refuses_an_uncalibrated_stage1_file_and_writes_nothing(stage1_file, tmp_path, capsys):
    from medcert.training.classifier import main

    out = tmp_path / "m.safetensors"
    assert main(["--stage1", str(stage1_file), "--out", str(out), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "calibrated medcert.lungnodule/1" in err and "\n" not in err
    assert main(["--stage1", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(("option", "value"), [("--closing", "17"), ("--closing", "-1"), ("--grow", "5")])
def test_stage3_cli_refuses_a_bad_stage2_option_before_any_work_and_writes_nothing(stage1_file, tmp_path, capsys,
                                                                                   option, value):
    from medcert.training.classifier import main

    s1 = load_weights(stage1_file)
    calibrated = save_weights(tmp_path / "s1.safetensors", s1.state_dict,
                              s1.metadata({"operating_point": {"offset": 0.0}}))
    out, cache = tmp_path / "m.safetensors", tmp_path / "c"
    assert main(["--stage1", str(calibrated), "--out", str(out), "--cache", str(cache), option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and f"candidates.{option[2:]}" in err and "\n" not in err
    assert not out.exists() and not cache.exists()


def test_ball_closing_fills_a_dent_narrower_than_the_ball_and_keeps_wider_gaps_open():
    from medcert.models.lung_nodule_two_stage import ball_closing

    mask = np.zeros((40, 30, 30), bool)
    mask[2:18, :, :] = True  # a "lung" cut by the field of view on four sides
    mask[22:38, :, :] = True  # a second one, 4 voxels away
    mask[10:18, 12:16, 12:16] = False  # a 4-voxel-wide dent open to the gap
    closed = ball_closing(mask, 3)
    assert (closed >= mask).all()
    assert closed[11:18, 12:16, 12:16].all()  # the dent is filled
    assert closed[2:18, 0, 0].all() and closed[2:18, -1, -1].all()  # not eroded where the field of view cuts
    assert closed[18:22, 5:25, 5:25].all()  # a gap narrower than the ball is bridged
    assert not ball_closing(mask, 1)[18:22].any()  # a smaller ball keeps the gap open


def test_closing_gives_a_nodule_the_lung_network_left_out_its_own_log_odds():
    torch.manual_seed(0)
    cfg = {**STAGE1, "classifier": CLASSIFIER, "candidates": {"offset": 0.0, "nms": 3, "limit": 64}}
    logits = torch.zeros(4, 24, 24, 24)
    logits[2] = -4.0  # no left lung
    logits[1, 4:20, 4:20, 4:20] = 3.0  # right lung, background (0) elsewhere
    dent = (slice(4, 8), slice(10, 14), slice(10, 14))
    logits[1][dent] = -2.0  # a nodule against the pleura: the lung network calls it background
    nodule = torch.full((24, 24, 24), -5.0)
    nodule[dent] = 4.0  # the nodule network is sure
    logits[3] = logits[1:3].amax(0) + nodule
    plain = build_model("medcert.lungnodule/2", cfg).eval()
    closed = build_model("medcert.lungnodule/2", {**cfg, "candidates": {**cfg["candidates"], "closing": 3}}).eval()
    assert plain.close_lungs(logits) is logits
    assert (nodule_margin(logits)[dent] == 2.0).all()  # 4 - (0 - (-2)): the lung gate takes 2 off
    c = closed.close_lungs(logits)
    assert torch.equal(c[:3], logits[:3])
    # Inside the dent the margin is the nodule log-odds alone; its outermost layer, where a ball outside the
    # lung touches it, is not added by the closing.
    assert torch.allclose(nodule_margin(c)[5:8, 10:14, 10:14], torch.full((3, 4, 4), 4.0))
    assert torch.equal(c[3][4, 10:14, 10:14], logits[3][4, 10:14, 10:14])
    inside = torch.zeros(24, 24, 24, dtype=torch.bool)
    inside[4:20, 4:20, 4:20] = True
    inside[dent] = False
    assert torch.equal(c[3][inside], logits[3][inside])  # lung voxels are unchanged
    assert torch.equal(c[3][0], logits[3][0])  # so is everything the closing does not add
    with pytest.raises(WeightsError, match="closing"):
        build_model("medcert.lungnodule/2", {**cfg, "candidates": {**cfg["candidates"], "closing": 2.5}})
