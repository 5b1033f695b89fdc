"""The source digest: its documented construction, what it binds, and what it ignores."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import rfc8785
from medcert.digests import b64u
from medcert.errors import InputError
from medcert.io import canonical_voxels, load_volume, write_scalar_nrrd
from medcert.source_digest import SOURCE_DIGEST_DOMAIN, source_digest
from medcert.volume import StudyIdentity, Volume

SHAPE = (16, 14, 6)


def volume(voxels=None, matrix=None, instances=()) -> Volume:
    if voxels is None:
        voxels = np.random.default_rng(0).integers(-1024, 3000, size=SHAPE).astype(np.int16)
    if matrix is None:
        matrix = np.array([[-0.7, 0, 0, 10.0], [0, -0.7, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
    identity = StudyIdentity(source_format="dicom", source_name="t", instance_uids=tuple(instances))
    return Volume(voxels=voxels, ijk_to_ras=matrix, identity=identity)


def test_digest_is_the_documented_construction():
    vol = volume(instances=["1.2.3", "1.2.4"])
    m = vol.ijk_to_ras
    header = {"dtype": "<i2", "shape": list(SHAPE), "order": "F", "instances": ["1.2.3", "1.2.4"],
              "ijk_to_ras": [float(round(v, 6)) + 0.0 for v in m.reshape(-1)]}
    body = vol.voxels.astype("<i2").tobytes(order="F")  # i fastest
    expected = hashlib.sha256(SOURCE_DIGEST_DOMAIN.encode() + b"\0" + rfc8785.dumps(header) + b"\0" + body)
    digest = source_digest(vol)
    assert digest == b64u(expected.digest())
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", digest)


def test_memory_layout_and_integral_floats_do_not_matter():
    vol = volume()
    c_order = volume(np.ascontiguousarray(vol.voxels))
    f_order = volume(np.asfortranarray(vol.voxels))
    as_float = volume(vol.voxels.astype(np.float64))
    as_int64 = volume(vol.voxels.astype(np.int64))
    assert len({source_digest(v) for v in (vol, c_order, f_order, as_float, as_int64)}) == 1


def test_every_bound_field_changes_the_digest():
    base = volume(instances=["1.2.3", "1.2.4"])
    uids = base.identity.instance_uids
    ref = source_digest(base)
    one_voxel = base.voxels.copy()
    one_voxel[3, 4, 5] += 1
    shifted = base.ijk_to_ras.copy()
    shifted[0, 3] += 1.0
    spacing = base.ijk_to_ras.copy()
    spacing[2, 2] = 2.4
    rotated = base.ijk_to_ras.copy()
    rotated[:2, :2] = [[0, -0.7], [-0.7, 0]]
    variants = [
        volume(one_voxel, base.ijk_to_ras, uids),
        volume(base.voxels, shifted, uids),
        volume(base.voxels, spacing, uids),
        volume(base.voxels, rotated, uids),
        volume(base.voxels, base.ijk_to_ras, ["1.2.4", "1.2.3"]),  # instance order
        volume(base.voxels, base.ijk_to_ras, ["1.2.3"]),
        volume(base.voxels.astype(np.float32) + np.float32(0.5), base.ijk_to_ras, uids),
        volume(base.voxels.reshape(SHAPE[1], SHAPE[0], SHAPE[2]), base.ijk_to_ras, uids),  # other shape
    ]
    digests = [source_digest(v) for v in variants]
    assert ref not in digests
    assert len(set(digests)) == len(digests)


def test_sub_micrometre_float_noise_is_ignored():
    base = volume()
    noisy = base.ijk_to_ras.copy()
    noisy[:3] += 1e-9
    assert source_digest(volume(base.voxels, noisy)) == source_digest(base)


def test_identity_fields_other_than_instances_are_not_bound():
    base = volume(instances=["1.2.3"])
    other = Volume(voxels=base.voxels, ijk_to_ras=base.ijk_to_ras,
                   identity=StudyIdentity(source_format="nrrd", source_name="other", study_uid="9.9",
                                          instance_uids=("1.2.3",), source_files=("/x/y.dcm",)))
    assert source_digest(other) == source_digest(base)


def test_nrrd_copy_of_a_volume_keeps_its_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCERT_HOME", str(tmp_path / "home"))
    base = volume()
    loaded = load_volume(write_scalar_nrrd(tmp_path / "v.nrrd", base.voxels, base.ijk_to_ras))
    assert source_digest(loaded) == source_digest(base)


def test_non_finite_voxels_are_refused():
    vox = volume().voxels.astype(np.float32)
    vox[0, 0, 0] = np.inf
    with pytest.raises(InputError, match="NaN or infinity"):
        source_digest(volume(vox))


@pytest.mark.parametrize(("values", "dtype"), [
    (np.array([[[0, 255]]], np.uint8), np.int16),
    (np.array([[[True, False]]]), np.int16),
    (np.array([[[-32768.0, 32767.0]]]), np.int16),
    (np.array([[[-32769, 5]]], np.int64), np.int32),
    (np.array([[[0, 40000]]], np.uint16), np.int32),
    (np.array([[[2.0**31, 0]]]), np.float32),
    (np.array([[[1.5, 2.0]]], np.float64), np.float32),
    (np.array([[[-0.0, 3.0]]], np.float32), np.int16),
    (np.array([[[7, 8]]], ">i4"), np.int16),
])
def test_canonical_voxel_types(values, dtype):
    out = canonical_voxels(values)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.astype(np.float64), values.astype(np.float64))


def test_canonical_voxels_keep_fortran_layout_and_refuse_nan():
    f = np.asfortranarray(np.arange(24, dtype=np.float64).reshape(2, 3, 4))
    out = canonical_voxels(f)
    assert out.dtype == np.int16 and out.flags.f_contiguous
    with pytest.raises(InputError, match="NaN"):
        canonical_voxels(np.array([1.0, np.nan]))
    with pytest.raises(InputError, match="not supported"):
        canonical_voxels(np.array([1 + 2j]))
