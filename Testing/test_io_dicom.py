"""DICOM series loading: transfer syntaxes, order, geometry, identity and every refusal."""

from __future__ import annotations

import base64
import re
import shutil

import numpy as np
import pydicom
import pytest
from dicom_factory import (
    available_lossless_syntaxes,
    write_ct_series,
    write_enhanced_ct,
    write_non_image,
)
from medcert.errors import InputError, MedCertError
from medcert.io import list_series, load_volume, patient_pseudonym
from medcert.source_digest import source_digest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

SHAPE = (32, 30, 12)  # i (columns), j (rows), k (slices): i != j catches transposition
UIDS = {"study_uid": "1.2.826.0.1.3680043.8.498.1", "series_uid": "1.2.826.0.1.3680043.8.498.2",
        "frame_of_reference_uid": "1.2.826.0.1.3680043.8.498.3",
        "sop_uids": [f"1.2.826.0.1.3680043.8.498.10.{k}" for k in range(SHAPE[2])]}


@pytest.fixture(autouse=True)
def _site_key(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MEDCERT_HOME", str(tmp_path_factory.mktemp("medcert-home")))
    monkeypatch.delenv("MEDCERT_PSEUDONYM_KEY", raising=False)


def stored(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3000, size=SHAPE).astype(np.int16)


def rotation(a: float, b: float, c: float) -> np.ndarray:
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


# --- same study, other storage -> same digest -------------------------------------------------------------

@pytest.mark.parametrize("signed", [True, False])
def test_every_available_lossless_syntax_gives_the_same_volume_and_digest(tmp_path, signed):
    px = stored() if signed else stored().astype(np.uint16)
    syntaxes = available_lossless_syntaxes(signed)
    digests = {}
    for ts in syntaxes:
        series = write_ct_series(tmp_path / ts, px, transfer_syntax=ts, **UIDS)
        assert pydicom.dcmread(series.files[0]).file_meta.TransferSyntaxUID == ts
        vol = load_volume(tmp_path / ts)
        assert vol.voxels.dtype == np.int16
        np.testing.assert_array_equal(vol.voxels, px.astype(np.int32) - 1024)
        digests[ts] = source_digest(vol)
    # implicit, explicit, deflated, RLE, JPEG-LS; JPEG 2000 too for unsigned pixels (Pillow encoder)
    assert len(digests) >= 5 and (signed or JPEG2000Lossless in digests)
    assert len(set(digests.values())) == 1, digests


def test_undecodable_pixel_data_is_a_one_line_error(tmp_path):
    series = write_ct_series(tmp_path, stored().astype(np.uint16))
    ds = pydicom.dcmread(series.files[5])
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(40)])  # a JPEG 2000 header and nothing more
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(series.files[5], enforce_file_format=True)
    with pytest.raises(InputError, match=r"cannot decode pixel data of .*slice_005\.dcm \(JPEG 2000") as err:
        load_volume(tmp_path)
    assert "\n" not in str(err.value)


def test_file_order_names_and_instance_numbers_do_not_matter(tmp_path):
    px = stored()
    base = write_ct_series(tmp_path / "plain", px, **UIDS)
    n = SHAPE[2]
    perm = np.random.default_rng(7).permutation(n)
    (tmp_path / "shuffled" / "sub").mkdir(parents=True)
    write_ct_series(tmp_path / "shuffled", px, **UIDS,
                    names=lambda k: f"sub/IMG{perm[k]:05d}" if k % 2 else f"x{perm[k] * 7919 % 1000:03d}.bin",
                    write_order=list(perm), instance_numbers=[int(p) + 1 for p in perm])
    (tmp_path / "shuffled" / "README.txt").write_text("not a DICOM file\n")
    (tmp_path / "shuffled" / "DICOMDIR.bak").write_bytes(b"\0" * 200)
    a, b = load_volume(base.folder), load_volume(tmp_path / "shuffled")
    np.testing.assert_array_equal(a.voxels, b.voxels)
    np.testing.assert_array_equal(a.ijk_to_ras, b.ijk_to_ras)
    assert a.identity.instance_uids == b.identity.instance_uids == tuple(UIDS["sop_uids"])
    assert source_digest(a) == source_digest(b)


def test_one_voxel_changes_the_digest(tmp_path):
    px = stored()
    changed = px.copy()
    changed[17, 4, 9] += 1
    a = load_volume(write_ct_series(tmp_path / "a", px, **UIDS).folder)
    b = load_volume(write_ct_series(tmp_path / "b", changed, **UIDS).folder)
    assert int(np.sum(a.voxels != b.voxels)) == 1 and b.voxels[17, 4, 9] == a.voxels[17, 4, 9] + 1
    assert source_digest(a) != source_digest(b)


@pytest.mark.parametrize("change", [
    {"origin": (-11.5, -20.0, 31.0)},  # 1 mm along x
    {"origin": (-12.5, -20.0, 32.0)},  # 1 mm along the slice normal
    {"spacing": (0.8, 0.8, 2.6)},
    {"spacing": (0.9, 0.8, 2.5)},
    {"row_dir": (0.0, 1.0, 0.0), "col_dir": (1.0, 0.0, 0.0)},
])
def test_geometry_changes_change_the_digest(tmp_path, change):
    px = stored()
    a = load_volume(write_ct_series(tmp_path / "a", px, **UIDS).folder)
    b = load_volume(write_ct_series(tmp_path / "b", px, **UIDS, **change).folder)
    np.testing.assert_array_equal(a.voxels, b.voxels)
    assert not np.allclose(a.ijk_to_ras, b.ijk_to_ras)
    assert source_digest(a) != source_digest(b)


# --- geometry ---------------------------------------------------------------------------------------------

def test_oblique_series_geometry_and_voxel_placement(tmp_path):
    r = rotation(0.35, -0.2, 0.6)
    px = stored(3)
    # Written from the top down, so file order and the normal disagree.
    series = write_ct_series(tmp_path / "obl", px, spacing=(0.7, 0.9, 2.0), row_dir=r[:, 0], col_dir=r[:, 1],
                             origin=(30.25, -41.5, 112.0), write_order=range(SHAPE[2] - 1, -1, -1))
    vol = load_volume(series.folder)
    m = vol.ijk_to_ras
    for path in series.files:
        ds = pydicom.dcmread(path)
        p = np.array([float(v) for v in ds.ImagePositionPatient])
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
        # Which k does this file sit at? The grid's slice origins are m @ (0, 0, k, 1).
        ras = [-p[0], -p[1], p[2]]
        ks = [k for k in range(SHAPE[2]) if np.allclose((m @ [0, 0, k, 1])[:3], ras, atol=1e-4)]
        assert len(ks) == 1, path
        k = ks[0]
        for i, j in [(0, 0), (31, 0), (0, 29), (13, 22)]:
            lps = p + i * col_sp * iop[:3] + j * row_sp * iop[3:]  # DICOM PS3.3 C.7.6.2.1.1
            np.testing.assert_allclose(m @ [i, j, k, 1], [-lps[0], -lps[1], lps[2], 1.0], atol=1e-4)
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(vol.voxels[:, :, k], hu.T)
    # k runs along row x col, so the grid is right-handed (negating x and y keeps the handedness).
    assert np.linalg.det(m[:3, :3]) > 0
    np.testing.assert_allclose(vol.spacing, (0.7, 0.9, 2.0), atol=1e-6)


def test_enhanced_multiframe_matches_single_frame_series(tmp_path):
    px = stored(5)
    r = rotation(0.1, 0.2, -0.3)
    geo = {"spacing": (0.7, 0.9, 2.0), "row_dir": r[:, 0], "col_dir": r[:, 1], "origin": (5.0, 6.0, 7.0)}
    single = load_volume(write_ct_series(tmp_path / "single", px, **geo).folder)
    (tmp_path / "enh").mkdir()
    sop = "1.2.826.0.1.3680043.8.498.77"
    write_enhanced_ct(tmp_path / "enh" / "volume.dcm", px, **geo, sop_uid=sop,
                      frame_order=np.random.default_rng(1).permutation(SHAPE[2]))
    multi = load_volume(tmp_path / "enh")
    np.testing.assert_array_equal(single.voxels, multi.voxels)
    np.testing.assert_allclose(single.ijk_to_ras, multi.ijk_to_ras, atol=1e-6)
    assert multi.identity.instance_uids == (sop,)
    assert multi.identity.acquisition_datetime == "2024-01-31T10:16:00.250000"


# --- values -----------------------------------------------------------------------------------------------

def test_fractional_rescale_gives_float32(tmp_path):
    px = stored()
    vol = load_volume(write_ct_series(tmp_path / "s", px, slope=0.5, intercept=-1000.25).folder)
    assert vol.voxels.dtype == np.float32
    np.testing.assert_array_equal(vol.voxels, (px * 0.5 - 1000.25).astype(np.float32))


def test_large_unsigned_values_give_int32(tmp_path):
    px = np.random.default_rng(2).integers(0, 65535, size=SHAPE).astype(np.uint16)
    vol = load_volume(write_ct_series(tmp_path / "s", px, slope=1, intercept=0, modality="MR").folder)
    assert vol.voxels.dtype == np.int32
    np.testing.assert_array_equal(vol.voxels, px.astype(np.int32))


def test_per_slice_rescale_promotes_the_whole_volume(tmp_path):
    px = stored()

    def halve_first(ds, k):
        if k == 0:
            ds.RescaleSlope = "0.5"

    vol = load_volume(write_ct_series(tmp_path / "s", px, edit=halve_first).folder)
    expected = px.astype(np.float64) - 1024
    expected[:, :, 0] = px[:, :, 0] * 0.5 - 1024
    assert vol.voxels.dtype == np.float32
    np.testing.assert_array_equal(vol.voxels, expected.astype(np.float32))


# --- identity ---------------------------------------------------------------------------------------------

def test_identity_fields_and_no_patient_in_clear(tmp_path, monkeypatch):
    series = write_ct_series(tmp_path / "Abdomen CT", stored(), patient_name="Mustermann^Erika",
                             patient_id="SECRET-7731", write_order=[5, 3, 1, 0, 2, 4, *range(6, 12)], **UIDS)
    vol = load_volume(series.folder)
    ident = vol.identity
    assert ident.source_format == "dicom" and ident.source_name == "Abdomen CT"
    assert (ident.study_uid, ident.series_uid, ident.frame_of_reference_uid) == (
        UIDS["study_uid"], UIDS["series_uid"], UIDS["frame_of_reference_uid"])
    assert ident.instance_uids == tuple(UIDS["sop_uids"])
    assert ident.source_files == tuple(str(p) for p in series.files)
    assert ident.modality == "CT"
    assert ident.acquisition_datetime == "2024-01-31T10:16:00.250000"  # earliest slice
    assert ident.device == "ACME Imaging Phantom CT 9000"
    assert ident.source_system == "CT01 / Test Hospital"
    assert ident.patient_pseudonym.startswith("p1:") and len(ident.patient_pseudonym) == 25
    text = repr(vol) + repr(ident)
    for secret in ("Mustermann", "Erika", "SECRET-7731", "7731"):
        assert secret not in text
    # Same patient, same site key -> same pseudonym; another site's key -> another pseudonym.
    assert load_volume(series.folder).identity.patient_pseudonym == ident.patient_pseudonym
    monkeypatch.setenv("MEDCERT_PSEUDONYM_KEY", "ab" * 32)
    assert load_volume(series.folder).identity.patient_pseudonym != ident.patient_pseudonym


def test_series_without_rescale_or_acquisition_time(tmp_path):
    def strip(ds, k):
        for kw in ("RescaleSlope", "RescaleIntercept", "AcquisitionDate", "AcquisitionTime", "PatientID"):
            delattr(ds, kw)

    px = stored()
    vol = load_volume(write_ct_series(tmp_path / "s", px, edit=strip).folder)
    np.testing.assert_array_equal(vol.voxels, px)
    assert vol.identity.acquisition_datetime == "2024-01-31T10:15:00"  # SeriesDate + SeriesTime
    assert vol.identity.patient_pseudonym is None


# --- choosing a series ------------------------------------------------------------------------------------

def test_several_series_need_a_choice(tmp_path):
    a = write_ct_series(tmp_path / "a", stored(0), description="Abdomen")
    b = write_ct_series(tmp_path / "b", stored(1), description="Lung")
    infos = list_series(tmp_path)
    assert {s.series_uid for s in infos} == {a.series_uid, b.series_uid}
    assert all(s.n_instances == SHAPE[2] and s.modality == "CT" for s in infos)
    with pytest.raises(InputError, match="2 image series") as err:
        load_volume(tmp_path)
    assert a.series_uid in str(err.value) and b.series_uid in str(err.value) and "Lung" in str(err.value)
    assert "\n" not in str(err.value)
    chosen = load_volume(tmp_path, series_uid=b.series_uid)
    np.testing.assert_array_equal(chosen.voxels, stored(1).astype(np.int32) - 1024)
    with pytest.raises(InputError, match=r"series 1\.2\.3\.999 not found"):
        load_volume(tmp_path, series_uid="1.2.3.999")


def test_a_segmentation_series_beside_the_image_is_not_a_candidate(tmp_path):
    ct = write_ct_series(tmp_path, stored())
    write_non_image(tmp_path / "seg.dcm", study_uid=ct.study_uid, series_uid="1.2.826.0.1.3680043.8.498.5",
                    modality="SEG")
    assert len(list_series(tmp_path)) == 2
    assert load_volume(tmp_path).identity.series_uid == ct.series_uid


# --- refusals ---------------------------------------------------------------------------------------------

def _delete(keyword):
    def edit(ds, k):
        if k == 4:
            delattr(ds, keyword)
    return edit


def _set(k_target, keyword, value):
    def edit(ds, k):
        if k == k_target:
            setattr(ds, keyword, value)
    return edit


def _smaller_image(ds, k):
    if k == 2:
        ds.Rows, ds.Columns = 16, 16
        ds.PixelData = np.zeros((16, 16), "<i2").tobytes()


def _positions(gap_at=None, gap=2.5, dup_at=None, drift=0.0):
    pos, z = [], 31.0
    for k in range(SHAPE[2]):
        pos.append([-12.5 + drift * k, -20.0, z])
        z += gap if k == gap_at else 2.5
    if dup_at is not None:
        pos[dup_at + 1] = list(pos[dup_at])
    return np.array(pos)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"edit": _delete("ImagePositionPatient")}, "missing ImagePositionPatient"),
    ({"edit": _delete("ImageOrientationPatient")}, "missing ImageOrientationPatient"),
    ({"edit": _delete("PixelSpacing")}, "missing PixelSpacing"),
    ({"edit": _set(3, "ImageOrientationPatient", ["1", "0", "0", "0", "0.9950042", "-0.0998334"])},
     "mixes slice orientations"),
    ({"edit": _set(3, "PixelSpacing", ["0.8", "0.81"])}, "mixes pixel spacings"),
    ({"edit": _smaller_image}, "mixes image sizes"),
    ({"positions": _positions(dup_at=5)}, "two slices at one position"),
    ({"positions": _positions(gap_at=6, gap=2.6)}, "uneven slice spacing"),
    ({"positions": _positions(drift=0.2)}, "gantry tilt"),
    ({"edit": _delete("PixelData")}, "has no pixel data"),
    ({"edit": _set(7, "StudyInstanceUID", "1.2.3.4.5")}, "mixes studies"),
    ({"edit": _set(7, "PatientID", "OTHER")}, "different patients"),
])
def test_refusals(tmp_path, kwargs, message):
    write_ct_series(tmp_path, stored(), **kwargs)
    with pytest.raises(InputError, match=message) as err:
        load_volume(tmp_path)
    assert "\n" not in str(err.value)


def test_missing_slice_is_refused(tmp_path):
    series = write_ct_series(tmp_path, stored())
    series.files[6].unlink()
    with pytest.raises(InputError, match=r"uneven slice spacing \(missing slice\?\): 5.000 mm"):
        load_volume(tmp_path)


def test_non_orthonormal_orientation_is_refused(tmp_path):
    write_ct_series(tmp_path, stored(), edit=lambda ds, k: setattr(
        ds, "ImageOrientationPatient", ["1", "0", "0", "0.5", "1", "0"]))
    with pytest.raises(InputError, match="not two orthogonal unit vectors"):
        load_volume(tmp_path)


def test_non_image_object_in_the_series_is_refused(tmp_path):
    ct = write_ct_series(tmp_path, stored())
    sr = write_non_image(tmp_path / "report.dcm", study_uid=ct.study_uid, series_uid=ct.series_uid)
    with pytest.raises(InputError, match="non-image object") as err:
        load_volume(tmp_path)
    assert str(sr) in str(err.value)


def test_single_and_multi_frame_mix_is_refused(tmp_path):
    ct = write_ct_series(tmp_path, stored())
    write_enhanced_ct(tmp_path / "enh.dcm", stored(), study_uid=ct.study_uid, series_uid=ct.series_uid)
    with pytest.raises(InputError, match="mixes single-frame and multi-frame"):
        load_volume(tmp_path)


def test_one_slice_is_not_a_volume(tmp_path):
    write_ct_series(tmp_path, stored()[:, :, :1])
    with pytest.raises(InputError, match="needs at least 2"):
        load_volume(tmp_path)


def test_copied_file_is_refused(tmp_path):
    series = write_ct_series(tmp_path, stored())
    shutil.copy(series.files[3], tmp_path / "copy.dcm")
    with pytest.raises(InputError, match="appears in two files"):
        load_volume(tmp_path)


def test_truncated_dicom_file_is_refused(tmp_path):
    series = write_ct_series(tmp_path, stored())
    data = series.files[2].read_bytes()
    series.files[2].write_bytes(data[:400])
    with pytest.raises(InputError, match=r"slice_002\.dcm"):
        load_volume(tmp_path)


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM files found"):
        load_volume(tmp_path)
    with pytest.raises(InputError, match="input not found"):
        load_volume(tmp_path / "nope")


# --- pseudonyms -------------------------------------------------------------------------------------------

def test_pseudonym_key_file_is_created_private_and_reused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MEDCERT_HOME", str(home))
    first = patient_pseudonym("PID-1", "HOSP")
    key = home / "pseudonym.key"
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    assert re.fullmatch(r"p1:[A-Za-z0-9_-]{22}", first)
    assert patient_pseudonym("PID-1", "HOSP") == first
    assert patient_pseudonym("PID-2", "HOSP") != first
    assert patient_pseudonym("PID-1", "OTHER") != first
    assert patient_pseudonym(None) is None and patient_pseudonym("  ") is None
    assert b"PID-1" not in key.read_bytes()
    key.chmod(0o644)
    with pytest.raises(MedCertError, match="accessible by others"):
        patient_pseudonym("PID-1")


def test_pseudonym_key_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCERT_HOME", str(tmp_path / "home"))
    raw = bytes(range(32))
    monkeypatch.setenv("MEDCERT_PSEUDONYM_KEY", raw.hex())
    from_hex = patient_pseudonym("PID-1")
    monkeypatch.setenv("MEDCERT_PSEUDONYM_KEY", base64.b64encode(raw).decode())
    assert patient_pseudonym("PID-1") == from_hex
    monkeypatch.setenv("MEDCERT_PSEUDONYM_KEY", base64.urlsafe_b64encode(raw).decode().rstrip("="))
    assert patient_pseudonym("PID-1") == from_hex
    assert not (tmp_path / "home").exists()  # no key file when the environment gives the key
    monkeypatch.setenv("MEDCERT_PSEUDONYM_KEY", "abcd")
    with pytest.raises(MedCertError, match="at least 16"):
        patient_pseudonym("PID-1")
    monkeypatch.setenv("MEDCERT_PSEUDONYM_KEY", "not a key!")
    with pytest.raises(MedCertError, match="neither hex nor base64"):
        patient_pseudonym("PID-1")
