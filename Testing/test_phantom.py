"""Synthetic chest CT generator: determinism, anatomy in RAS, labels, orientation variants."""

import numpy as np
import pytest
from medcert.phantom import LEFT_LUNG, NODULE, RIGHT_LUNG, generate_chest_ct
from medcert.phantom.params import sample_params

COARSE = {"spacing_xy": 3.0, "thickness": 5.0}


def _ras_centroid(ph, label):
    idx = np.argwhere(ph.labels == label)
    ijk1 = np.c_[idx, np.ones(len(idx))]
    return (ph.volume.ijk_to_ras @ ijk1.T)[:3].mean(axis=1)


@pytest.fixture(scope="module")
def phantom():
    return generate_chest_ct(3, n_nodules=3, nodule_diameters=[8.0, 14.0, 20.0],
                             nodule_kinds=["solid", "part-solid", "juxtapleural"], **COARSE)


def test_same_seed_identical_different_seed_differs():
    a = generate_chest_ct(11, **COARSE)
    b = generate_chest_ct(11, **COARSE)
    c = generate_chest_ct(12, **COARSE)
    assert a.volume.voxels.dtype == np.int16 and a.labels.dtype == np.uint8
    assert np.array_equal(a.volume.voxels, b.volume.voxels) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.volume.ijk_to_ras, b.volume.ijk_to_ras) and a.nodules == b.nodules
    assert a.params == b.params
    assert a.volume.shape != c.volume.shape or not np.array_equal(a.volume.voxels, c.volume.voxels)


def test_labels_and_hounsfield_units(phantom):
    vox, lab = phantom.volume.voxels, phantom.labels
    assert lab.shape == vox.shape and set(np.unique(lab)) <= {0, 1, 2, 3}
    for side in (RIGHT_LUNG, LEFT_LUNG):
        hu = vox[lab == side].astype(float)
        assert hu.size > 1000 and -920 < np.median(hu) < -750  # air-like parenchyma
    assert (lab == RIGHT_LUNG).sum() > (lab == LEFT_LUNG).sum()  # right lung larger
    assert np.median(vox[lab == 0]) < -500 or np.percentile(vox[lab == 0], 10) <= -990  # air outside the body
    assert vox.min() <= -990 and vox.max() >= 300  # air and bone present


def test_right_lung_at_larger_ras_x(phantom):
    assert _ras_centroid(phantom, RIGHT_LUNG)[0] > _ras_centroid(phantom, LEFT_LUNG)[0] + 60


def test_nodules_inside_lungs(phantom):
    assert len(phantom.nodules) == 3
    inv = np.linalg.inv(phantom.volume.ijk_to_ras)
    for n in phantom.nodules:
        ijk = np.rint(inv @ np.array([*n.center_ras, 1.0]))[:3].astype(int)
        lo, hi = np.maximum(ijk - 2, 0), ijk + 3
        near = phantom.labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        assert (near == NODULE).any(), n
    # Every nodule voxel touches the lung region (labels 1..3 form the lungs).
    from scipy import ndimage

    lungs = ndimage.binary_dilation(np.isin(phantom.labels, (RIGHT_LUNG, LEFT_LUNG)), iterations=2)
    assert lungs[phantom.labels == NODULE].all()
    hu = phantom.volume.voxels[phantom.labels == NODULE].astype(float)
    assert np.median(hu) > -600  # denser than parenchyma


@pytest.mark.parametrize("orientation", [{"perm": [0, 1, 2], "flip": [True, True, False]},
                                         {"perm": [2, 0, 1], "flip": [False, True, True]},
                                         {"perm": [1, 2, 0], "flip": [True, False, True]}])
def test_orientation_variants_keep_ras_anatomy(orientation):
    base = generate_chest_ct(5, orientation="canonical", oblique_deg=0.0, **COARSE)
    var = generate_chest_ct(5, orientation=orientation, oblique_deg=0.0, **COARSE)
    assert var.volume.shape == tuple(base.volume.shape[p] for p in orientation["perm"])
    # Same RAS point → same voxel value and label.
    m = np.linalg.inv(var.volume.ijk_to_ras) @ base.volume.ijk_to_ras
    idx = np.argwhere(np.ones(base.volume.shape, dtype=bool))[::7]
    mapped = np.rint((m @ np.c_[idx, np.ones(len(idx))].T)[:3].T).astype(int)
    assert np.allclose((m @ np.c_[idx, np.ones(len(idx))].T)[:3].T, mapped, atol=1e-6)
    assert np.array_equal(base.volume.voxels[tuple(idx.T)], var.volume.voxels[tuple(mapped.T)])
    assert np.array_equal(base.labels[tuple(idx.T)], var.labels[tuple(mapped.T)])
    assert _ras_centroid(var, RIGHT_LUNG)[0] > _ras_centroid(var, LEFT_LUNG)[0] + 60


def test_oblique_variant_keeps_right_lung_right():
    ph = generate_chest_ct(8, oblique_deg=12.0, **COARSE)
    m = ph.volume.ijk_to_ras[:3, :3] / np.array(ph.volume.spacing)
    assert not np.allclose(np.abs(m), np.round(np.abs(m)))  # really oblique
    r, left = _ras_centroid(ph, RIGHT_LUNG), _ras_centroid(ph, LEFT_LUNG)
    assert r[0] > left[0] + 50


def test_default_acquisition_ranges_and_overrides():
    for seed in range(200):
        acq = sample_params(seed, {})["acquisition"]
        assert 0.5 <= acq["spacing_xy"] <= 3.5 and 0.6 <= acq["thickness"] <= 10
        assert 5 <= acq["noise_sigma"] <= 40
        assert len(sample_params(seed, {})["nodule_plan"]["diameters"]) <= 5
    with pytest.raises(ValueError):
        generate_chest_ct(1, spacing=2.0)
    a = sample_params(4, {"thickness": 2.0})
    b = sample_params(4, {})
    assert a["anatomy"] == b["anatomy"]  # acquisition overrides leave the anatomy alone
