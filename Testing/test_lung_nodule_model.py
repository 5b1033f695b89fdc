"""The two-network demo architecture (medcert.lungnodule/1) and its training data, on real phantoms."""

import numpy as np
import pytest
import torch
from medcert.inference.preprocess import PreprocessSpec
from medcert.models import build_model
from medcert.phantom import LEFT_LUNG, NODULE, RIGHT_LUNG
from medcert.training.dataset import DENSE_HU, NoduleSampler, make_training_case
from medcert.training.loss import nodule_loss

TINY = {"spacing_xy": 3.5, "thickness": 6.0, "n_nodules": 3, "nodule_diameters": [12.0, 16.0, 20.0]}
SPEC = PreprocessSpec(spacing_mm=4.0)
TINY_CONFIG = {"lung": {"in_channels": 2, "channels": [4, 8]},
               "nodule": {"in_channels": 1, "channels": [4, 8], "norm": "batch"}}


@pytest.fixture(scope="module")
def case():
    return make_training_case(21, SPEC, TINY)


def test_lung_labels_absorb_nodules_on_their_own_side(case):
    assert set(np.unique(case.labels)) <= {0, RIGHT_LUNG, LEFT_LUNG}
    assert case.nodule.any() and (case.labels[case.nodule] > 0).all()
    # Every nodule component takes the side of the lung it sits in: right lung at larger x (RAS grid).
    from scipy import ndimage

    comp, n = ndimage.label(case.nodule)
    mid = np.median(np.argwhere(case.labels > 0)[:, 0])
    for c in range(1, n + 1):
        sides = np.unique(case.labels[comp == c])
        x = np.argwhere(comp == c)[:, 0].mean()
        assert len(sides) == 1 and sides[0] == (RIGHT_LUNG if x > mid else LEFT_LUNG)
    dense = case.dense_points
    assert len(dense) and (case.labels[tuple(dense.T)] > 0).all() and not case.nodule[tuple(dense.T)].any()
    assert (case.image[tuple(dense.T)].astype(np.float32) * 1500 - 1000 > DENSE_HU - 0.5).all()


def test_dense_threshold_moves_the_hard_negatives(case):
    higher = make_training_case(21, SPEC, TINY, dense_hu=-300.0)
    hu = higher.image[tuple(higher.dense_points.T)].astype(np.float32) * 1500 - 1000
    assert len(higher.dense_points) and (hu > -300.0 - 0.5).all()
    # Fewer lung voxels lie above -300 HU than above -600 HU (counted before the 20000-point cap).
    lung = (case.labels > 0) & ~case.nodule
    img = case.image.astype(np.float32) * 1500 - 1000
    assert (lung & (img > -300.0)).sum() < (lung & (img > DENSE_HU)).sum()
    assert np.array_equal(higher.labels, case.labels) and np.array_equal(higher.nodule, case.nodule)


def test_nodule_patches_are_deterministic_and_aligned(case):
    s = NoduleSampler((16, 16, 16), p_nodule=1.0, p_lung=0.0, p_dense=0.0)
    a = s.draw([case], np.random.default_rng([1, 2]), 4)
    b = s.draw([case], np.random.default_rng([1, 2]), 4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    x, y = a
    assert x.shape == (4, 1, 16, 16, 16) and y.shape == (4, 16, 16, 16) and set(np.unique(y)) <= set(range(9))
    # Flips move image and mask together: the nodule voxels are denser than aerated lung (-800 HU).
    above = (1000 - 800) / 1500
    assert y.sum() > 0 and np.mean(x[:, 0][y > 0] > above) > 0.95


def test_nodule_loss_is_weighted_bce_plus_soft_dice():
    g = torch.Generator().manual_seed(0)
    logit = torch.randn(2, 1, 6, 6, 6, generator=g)
    target = (torch.rand(2, 1, 6, 6, 6, generator=g) > 0.9).float()
    p = torch.sigmoid(logit)
    bce = -(5.0 * target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    dice = (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    assert float(nodule_loss(logit, target, 5.0)) == pytest.approx(float(bce + 1 - dice), rel=1e-5)


def test_composite_logits_gate_the_nodule_by_the_lung():
    torch.manual_seed(0)
    net = build_model("medcert.lungnodule/1", TINY_CONFIG).eval()
    names = [n for n, _m in net.trace_layers()]
    assert names[0] == "lung.enc0" and names[-1] == "nodule.head" and len(set(names)) == len(names)
    x = torch.rand(1, 2, 16, 16, 16)
    with torch.no_grad():
        out = net(x)
        lung, nod = net.lung(x), net.nodule(x[:, :1])
    assert out.shape == (1, 4, 16, 16, 16)
    assert torch.equal(out[:, :3], lung)
    assert torch.allclose(out[:, 3], lung[:, 1:3].amax(1) + nod[:, 0])
    labels = out.argmax(1)
    is_lung = lung.argmax(1) > 0
    assert torch.equal(labels == NODULE, is_lung & (nod[:, 0] > 0))


def test_bf16_training_step_keeps_float32_weights():
    torch.manual_seed(0)
    net = build_model("medcert.lungnodule/1", TINY_CONFIG)
    opt = torch.optim.AdamW(net.nodule.parameters(), lr=1e-2)
    x = torch.rand(2, 1, 16, 16, 16)
    y = (x > 0.7).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = nodule_loss(net.nodule(x).float(), y)
    for _ in range(20):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nodule_loss(net.nodule(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * float(first.detach())
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_small_nodules_weigh_more(case):
    w = case.nodule_weight
    assert w.shape == case.nodule.shape and np.array_equal(w > 0, case.nodule)
    from scipy import ndimage

    comp, n = ndimage.label(case.nodule)
    sizes = np.bincount(comp.reshape(-1))[1:]
    weights = [int(w[comp == c].max()) for c in range(1, n + 1)]
    assert all(len(np.unique(w[comp == c])) == 1 for c in range(1, n + 1))  # one weight per component
    order = np.argsort(sizes)
    assert weights[order[0]] >= weights[order[-1]] >= 1 and max(weights) <= 8
    assert weights[order[0]] == int(np.rint(np.clip(np.sqrt(500.0 / sizes[order[0]]), 1, 8)))


def test_voxel_weights_scale_the_nodule_cross_entropy():
    logit = torch.zeros(1, 1, 4, 4, 4)
    target = torch.zeros(1, 1, 4, 4, 4)
    target[0, 0, 0, 0, 0] = 1.0
    w = torch.ones_like(target)
    w[0, 0, 0, 0, 0] = 3.0
    plain, weighted = nodule_loss(logit, target, 1.0), nodule_loss(logit, target, 1.0, w)
    # Only the one positive voxel's BCE term (log 2 / 64 each) is tripled; the Dice term is unchanged.
    assert float(weighted - plain) == pytest.approx(2 * np.log(2) / 64, rel=1e-5)


def test_tiny_nodules_are_marked_and_left_out_of_the_size_weighted_loss():
    from medcert.training.dataset import TINY as TINY_MARK
    from medcert.training.dataset import TINY_NODULE_MM
    from medcert.training.loss import nodule_targets
    from scipy import ndimage

    spec = PreprocessSpec(spacing_mm=2.0)
    c = make_training_case(23, spec, {"spacing_xy": 2.0, "thickness": 2.0, "nodule_diameters": [3.5, 16.0],
                                      "nodule_kinds": ["solid", "solid"], "oblique_deg": 0.0})
    comp, n = ndimage.label(c.nodule)
    assert n == 2
    by_size = sorted((int((comp == i).sum()), int(c.nodule_weight[comp == i].max())) for i in range(1, n + 1))
    (small, w_small), (large, w_large) = by_size
    assert np.cbrt(6 * small * 8.0 / np.pi) < TINY_NODULE_MM <= np.cbrt(6 * large * 8.0 / np.pi)
    assert w_small == TINY_MARK and 1 <= w_large <= 8
    sizes = torch.from_numpy(c.nodule_weight.astype(np.float32))
    target, weight = nodule_targets(sizes, size_weighting=True)
    assert torch.equal(target.bool(), torch.from_numpy(c.nodule_weight == w_large))
    assert torch.equal(weight == 0, torch.from_numpy(c.nodule_weight == TINY_MARK))
    assert float(weight.max()) == w_large
    plain, none = nodule_targets(sizes, size_weighting=False)
    assert none is None and torch.equal(plain.bool(), torch.from_numpy(c.nodule))  # stage 1: every nodule


def test_hard_weight_multiplies_faint_and_juxtapleural_nodules_only():
    from scipy import ndimage

    spec = PreprocessSpec(spacing_mm=2.0)
    ov = {"spacing_xy": 2.0, "thickness": 2.0, "nodule_diameters": [14.0, 14.0, 14.0], "oblique_deg": 0.0,
          "nodule_kinds": ["solid", "ground-glass", "juxtapleural"]}
    plain = make_training_case(29, spec, ov)
    hard = make_training_case(29, spec, ov, hard_weight=3)
    assert np.array_equal(plain.image, hard.image) and np.array_equal(plain.nodule, hard.nodule)
    comp, n = ndimage.label(plain.nodule)
    assert n == 3
    ratios = sorted(int(hard.nodule_weight[comp == i].max()) / int(plain.nodule_weight[comp == i].max())
                    for i in range(1, n + 1))
    assert ratios == [1.0, 3.0, 3.0]  # the solid nodule inside the lung keeps its weight
    with pytest.raises(ValueError, match="hard_weight"):
        make_training_case(29, spec, ov, hard_weight=9)


def test_weight_zero_voxels_do_not_change_the_nodule_loss():
    g = torch.Generator().manual_seed(1)
    logit = torch.randn(1, 1, 5, 5, 5, generator=g)
    target = (torch.rand(1, 1, 5, 5, 5, generator=g) > 0.8).float()
    w = torch.ones_like(target)
    w[0, 0, 2, 2, 2] = 0.0
    other = logit.clone()
    other[0, 0, 2, 2, 2] += 7.0
    assert float(nodule_loss(logit, target, 10.0, w)) == pytest.approx(float(nodule_loss(other, target, 10.0, w)),
                                                                       rel=1e-6)
    assert float(nodule_loss(logit, target, 10.0)) != pytest.approx(float(nodule_loss(other, target, 10.0)))


def test_detection_loss_counts_each_nodule_once_and_the_hardest_background():
    from medcert.training.dataset import TINY as TINY_MARK
    from medcert.training.loss import detection_loss

    sizes = torch.zeros(1, 1, 12, 12, 12)
    sizes[0, 0, 1:3, 1:3, 1:3] = 4.0  # small nodule, 8 voxels
    sizes[0, 0, 5:11, 5:11, 5:11] = 1.0  # large nodule, 216 voxels
    sizes[0, 0, 0, 11, 11] = TINY_MARK  # tiny: neither nodule nor background
    logit = torch.full((1, 1, 12, 12, 12), -5.0)
    logit[0, 0, 6, 6, 6] = 3.0  # the large nodule found at one voxel, the small one missed
    logit[0, 0, 0, 11, 11] = 9.0  # ignored (tiny)
    logit.requires_grad_(True)
    loss = detection_loss(logit, sizes, hard_negatives=4)
    sp = torch.nn.functional.softplus
    expected = (sp(torch.tensor(5.0)) + sp(torch.tensor(-3.0))) / 2 + sp(torch.tensor(-5.0))
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    g = logit.grad[0, 0]
    assert float(g[1:3, 1:3, 1:3].sum()) < 0 and float(g[6, 6, 6]) < 0  # both peaks pushed up
    assert float(g[0, 11, 11]) == 0.0 and float(g[4, 4, 4]) == 0.0  # tiny and near-nodule margin untouched
    # A background blob becomes the hardest negative and is pushed down.
    blob = logit.detach().clone()
    blob[0, 0, 1, 8, 1] = 4.0
    blob.requires_grad_(True)
    higher = detection_loss(blob, sizes, hard_negatives=4)
    higher.backward()
    assert float(higher.detach()) > float(loss.detach()) and float(blob.grad[0, 0, 1, 8, 1]) > 0


def test_lung_patches_carry_their_nodule_mask(case):
    """The lung network's patches come with the nodule mask of exactly the same window (for the nodule-voxel
    weight of its cross-entropy), and the extra mask changes none of the draws."""
    from medcert.training.dataset import Case, PatchSampler

    s = PatchSampler((16, 16, 16), p_nodule=1.0, p_lung=0.0)
    x, y, nod = s.draw_with_nodules([case], np.random.default_rng([4, 2]))
    x2, y2 = s.draw([case], np.random.default_rng([4, 2]))
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert nod is not None and nod.shape == y.shape and nod.dtype == bool and nod.any()
    assert set(np.unique(y[nod])) <= {RIGHT_LUNG, LEFT_LUNG}  # nodule voxels are labelled as their lung
    # A patch larger than the grid holds the whole grid at its origin: the mask is the case's nodule mask.
    X, Y, Z = case.nodule.shape
    whole = PatchSampler((X + 8, Y + 8, Z + 8))
    _x, _y, full = whole.draw_with_nodules([case], np.random.default_rng(0), augment=False)
    assert np.array_equal(full[:X, :Y, :Z], case.nodule)
    plain = Case(seed=case.seed, image=case.image, midline=case.midline, labels=case.labels,
                 lung_points=case.lung_points, nodule_centers=case.nodule_centers)
    assert s.draw_with_nodules([plain], np.random.default_rng([4, 2]))[2] is None


def test_voxel_weights_scale_the_lung_cross_entropy():
    from medcert.training.loss import dice_ce_loss

    torch.manual_seed(0)
    logits = torch.randn(1, 3, 6, 6, 6)
    target = torch.randint(0, 3, (1, 6, 6, 6))
    ones = torch.ones(1, 6, 6, 6)
    assert torch.allclose(dice_ce_loss(logits, target, voxel_weight=ones), dice_ce_loss(logits, target))
    # Make a block of voxels confidently wrong: weighting it up raises the loss.
    wrong = torch.zeros(1, 6, 6, 6, dtype=torch.bool)
    wrong[0, :2] = True
    bad = logits.clone()
    bad[:, :, :2] = -10.0
    bad[0, :, :2] += 20.0 * torch.nn.functional.one_hot((target[0, :2] + 1) % 3, 3).permute(3, 0, 1, 2)
    heavy = torch.where(wrong, 10.0, 1.0)
    assert float(dice_ce_loss(bad, target, voxel_weight=heavy)) > float(dice_ce_loss(bad, target)) + 1.0
