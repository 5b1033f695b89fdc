"""NRRD and NIfTI volumes, scalar and labelmap NRRD writers (read back by pynrrd, nibabel and Slicer)."""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest
from dicom_factory import write_ct_series
from medcert.errors import InputError, MedCertError
from medcert.io import load_volume, read_labelmap_nrrd, write_labelmap_nrrd, write_scalar_nrrd

SHAPE = (32, 30, 12)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(autouse=True)
def _site_key(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MEDCERT_HOME", str(tmp_path_factory.mktemp("medcert-home")))


def oblique_matrix() -> np.ndarray:
    a, b = 0.4, -0.25
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    m = np.eye(4)
    m[:3, :3] = rz @ rx @ np.diag([0.7, 0.9, 2.0])
    m[:3, 3] = [12.125, -33.3, 101.7]
    return m


def hu(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 2000, size=SHAPE).astype(np.int16)


def labels() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[3:10, 4:12, 2:6] = 1
    lab[20:28, 10:25, 5:11] = 3
    return lab


SEGMENTS = [(1, "liver", (0.87, 0.47, 0.39)), (3, "spleen", (0.61, 0.37, 0.65)),
            (7, "kidney", (0.2, 0.6, 0.3))]


# --- scalar NRRD ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
def test_scalar_nrrd_round_trip(tmp_path, dtype):
    vox = hu().astype(dtype) + (dtype(0.25) if dtype == np.float32 else 0)
    m = oblique_matrix()
    path = write_scalar_nrrd(tmp_path / "ct.nrrd", vox, m)
    vol = load_volume(path)
    assert vol.voxels.dtype == (np.float32 if dtype == np.float32 else np.int16)  # canonical dtype
    np.testing.assert_array_equal(vol.voxels, vox)
    np.testing.assert_array_equal(vol.ijk_to_ras, m)
    assert vol.identity.source_format == "nrrd" and vol.identity.source_name == "ct"
    assert vol.identity.instance_uids == ()


def test_scalar_nrrd_is_lps_for_other_readers(tmp_path):
    m = oblique_matrix()
    write_scalar_nrrd(tmp_path / "ct.nrrd", hu(), m)
    data, header = nrrd.read(str(tmp_path / "ct.nrrd"), index_order="F")
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_array_equal(header["space directions"], (LPS @ m)[:3, :3].T)
    np.testing.assert_array_equal(header["space origin"], (LPS @ m)[:3, 3])
    np.testing.assert_array_equal(data, hu())


def test_writers_never_overwrite_unless_asked(tmp_path):
    path = write_scalar_nrrd(tmp_path / "ct.nrrd", hu(0), np.eye(4))
    before = path.read_bytes()
    with pytest.raises(MedCertError, match="refusing to overwrite"):
        write_scalar_nrrd(path, hu(1), np.eye(4))
    assert path.read_bytes() == before
    write_scalar_nrrd(path, hu(1), np.eye(4), overwrite=True)
    np.testing.assert_array_equal(load_volume(path).voxels, hu(1))
    with pytest.raises(MedCertError, match="refusing to overwrite"):
        write_labelmap_nrrd(path, labels(), np.eye(4), SEGMENTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd"]  # no temporary files left


def test_scalar_writer_refusals(tmp_path):
    vox = hu().astype(np.float32)
    vox[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_scalar_nrrd(tmp_path / "nan.nrrd", vox, np.eye(4))
    with pytest.raises(InputError, match=r"single-file \.nrrd"):
        write_scalar_nrrd(tmp_path / "ct.nhdr", hu(), np.eye(4))
    assert list(tmp_path.iterdir()) == []


# --- reading NRRD written by others -----------------------------------------------------------------------

@pytest.mark.parametrize(("space", "flip"), [
    ("left-posterior-superior", (-1, -1, 1)), ("right-anterior-superior", (1, 1, 1)),
    ("LPS", (-1, -1, 1)), ("left-anterior-superior", (-1, 1, 1)),
])
def test_nrrd_spaces_convert_to_ras(tmp_path, space, flip):
    directions = np.array([[0.0, 0.8, 0.1], [0.9, 0.0, 0.0], [0.0, -0.05, 2.5]])  # rows: axis vectors
    origin = np.array([10.0, -20.0, 30.0])
    nrrd.write(str(tmp_path / "v.nrrd"), hu(), {"space": space, "space directions": directions,
                                                "space origin": origin}, index_order="F")
    vol = load_volume(tmp_path / "v.nrrd")
    f = np.array(flip, dtype=float)
    for i, j, k in [(0, 0, 0), (5, 0, 0), (0, 7, 0), (3, 4, 11)]:
        expected = f * (origin + i * directions[0] + j * directions[1] + k * directions[2])
        np.testing.assert_allclose((vol.ijk_to_ras @ [i, j, k, 1])[:3], expected, atol=1e-12)
    np.testing.assert_array_equal(vol.voxels, hu())


def test_detached_header_and_singleton_axis(tmp_path):
    directions = np.array([[np.nan] * 3, [0.8, 0, 0], [0, 0.8, 0], [0, 0, 2.5]])
    header = {"space": "left-posterior-superior", "space directions": directions,
              "space origin": np.array([1.0, 2.0, 3.0]), "kinds": ["list", "domain", "domain", "domain"]}
    nrrd.write(str(tmp_path / "v.nhdr"), hu()[None], header, index_order="F")
    vol = load_volume(tmp_path / "v.nhdr")
    np.testing.assert_array_equal(vol.voxels, hu())
    np.testing.assert_allclose(vol.ijk_to_ras[:3, 3], [-1.0, -2.0, 3.0])


@pytest.mark.parametrize(("header", "data", "message"), [
    ({"space": "scanner-xyz", "space directions": np.eye(3)}, None, "not a patient space"),
    ({"space directions": np.eye(3), "space dimension": 3}, None, "no 'space' field"),
    ({"space": "LPS", "space directions": np.eye(3)[:2]}, np.zeros((4, 4), np.int16), "not a 3-D volume"),
    ({"space": "LPS", "space directions": np.vstack([np.full(3, np.nan), np.eye(3)])},
     np.zeros((2, 4, 4, 4), np.int16), "not a single 3-D volume"),
])
def test_nrrd_refusals(tmp_path, header, data, message):
    nrrd.write(str(tmp_path / "v.nrrd"), hu() if data is None else data, header, index_order="F")
    with pytest.raises(InputError, match=message) as err:
        load_volume(tmp_path / "v.nrrd")
    assert "\n" not in str(err.value)


def test_unreadable_and_unknown_inputs(tmp_path):
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4\n\n")
    with pytest.raises(InputError, match="cannot read NRRD file"):
        load_volume(tmp_path / "bad.nrrd")
    (tmp_path / "bad.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="cannot read NIfTI file"):
        load_volume(tmp_path / "bad.nii.gz")
    (tmp_path / "scan.mha").write_bytes(b"ObjectType = Image\n")
    with pytest.raises(InputError, match="unsupported input"):
        load_volume(tmp_path / "scan.mha")
    with pytest.raises(InputError, match="input not found"):
        load_volume(tmp_path / "missing.nrrd")


# --- NIfTI ------------------------------------------------------------------------------------------------

def test_nifti_round_trip_with_scaling(tmp_path):
    m = oblique_matrix()
    stored = hu() + 1024
    img = nib.Nifti1Image(stored, m)
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, tmp_path / "ct.nii.gz")
    vol = load_volume(tmp_path / "ct.nii.gz")
    assert vol.voxels.dtype == np.int16
    np.testing.assert_array_equal(vol.voxels, hu())
    np.testing.assert_allclose(vol.ijk_to_ras, m, atol=1e-5)  # NIfTI stores the sform in float32
    assert vol.identity.source_format == "nifti" and vol.identity.source_name == "ct"


def test_nifti_fractional_scaling_gives_float32(tmp_path):
    img = nib.Nifti1Image(hu(), np.eye(4))
    img.header.set_slope_inter(0.5, 3.25)
    nib.save(img, tmp_path / "v.nii")
    vol = load_volume(tmp_path / "v.nii")
    assert vol.voxels.dtype == np.float32
    np.testing.assert_array_equal(vol.voxels, (hu() * 0.5 + 3.25).astype(np.float32))


def test_nifti_4d_singleton_is_squeezed_and_others_refused(tmp_path):
    nib.save(nib.Nifti1Image(hu()[..., None], np.eye(4)), tmp_path / "one.nii.gz")
    np.testing.assert_array_equal(load_volume(tmp_path / "one.nii.gz").voxels, hu())
    nib.save(nib.Nifti1Image(np.stack([hu(), hu()], axis=-1), np.eye(4)), tmp_path / "two.nii.gz")
    with pytest.raises(InputError, match="not a 3-D volume"):
        load_volume(tmp_path / "two.nii.gz")


def test_nifti_without_orientation_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(hu(), affine=None), tmp_path / "v.nii")
    header = nib.load(tmp_path / "v.nii").header
    assert int(header["sform_code"]) == int(header["qform_code"]) == 0
    with pytest.raises(InputError, match="neither sform nor qform"):
        load_volume(tmp_path / "v.nii")


# --- DICOM and its copies ---------------------------------------------------------------------------------

def test_dicom_and_its_nrrd_and_nifti_copies_agree(tmp_path):
    rot = oblique_matrix()[:3, :3] @ np.diag([1 / 0.7, 1 / 0.9, 1 / 2.0])  # orthonormal
    series = write_ct_series(tmp_path / "dicom", hu() + 1024, spacing=(0.7, 0.9, 2.0),
                             row_dir=rot[:, 0], col_dir=rot[:, 1])
    dcm = load_volume(series.folder)
    nrrd_vol = load_volume(write_scalar_nrrd(tmp_path / "copy.nrrd", dcm.voxels, dcm.ijk_to_ras))
    np.testing.assert_array_equal(nrrd_vol.voxels, dcm.voxels)
    np.testing.assert_array_equal(nrrd_vol.ijk_to_ras, dcm.ijk_to_ras)
    nib.save(nib.Nifti1Image(dcm.voxels, dcm.ijk_to_ras), tmp_path / "copy.nii.gz")
    nii = load_volume(tmp_path / "copy.nii.gz")
    np.testing.assert_array_equal(nii.voxels, dcm.voxels)
    assert nii.voxels.dtype == dcm.voxels.dtype == np.int16
    np.testing.assert_allclose(nii.ijk_to_ras, dcm.ijk_to_ras, atol=1e-5)


# --- labelmaps --------------------------------------------------------------------------------------------

def test_labelmap_round_trip_and_slicer_fields(tmp_path):
    m = oblique_matrix()
    path = write_labelmap_nrrd(tmp_path / "out.seg.nrrd", labels(), m, SEGMENTS)
    back, m_back = read_labelmap_nrrd(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels())
    np.testing.assert_array_equal(m_back, m)
    _, header = nrrd.read(str(path))
    assert header["space"] == "left-posterior-superior"
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    for n, (value, name, color) in enumerate(SEGMENTS):
        assert header[f"Segment{n}_Name"] == name
        assert int(header[f"Segment{n}_LabelValue"]) == value
        assert header[f"Segment{n}_Layer"] == "0"
        assert header[f"Segment{n}_Extent"] == "0 31 0 29 0 11"
        np.testing.assert_allclose([float(c) for c in header[f"Segment{n}_Color"].split()], color)
    assert "Segment3_ID" not in header


def test_labelmap_bytes_are_deterministic(tmp_path):
    a = write_labelmap_nrrd(tmp_path / "a.seg.nrrd", labels(), oblique_matrix(), SEGMENTS)
    b = write_labelmap_nrrd(tmp_path / "b.seg.nrrd", labels(), oblique_matrix(), SEGMENTS)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(("segments", "message"), [
    ([(1, "liver", (1, 0, 0))], r"label value\(s\) \[3\] with no segment"),
    ([(1, "a", (1, 0, 0)), (1, "b", (0, 1, 0)), (3, "c", (0, 0, 1))], "unique integer"),
    ([(1, "liver\nX:=1", (1, 0, 0)), (3, "spleen", (0, 0, 1))], "control character"),
    ([(1, "liver", (1, 0, 2)), (3, "spleen", (0, 0, 1))], "color"),
    ([(0, "background", (1, 0, 0)), (3, "spleen", (0, 0, 1))], "unique integer in 1..255"),
])
def test_labelmap_writer_refusals(tmp_path, segments, message):
    with pytest.raises(InputError, match=message):
        write_labelmap_nrrd(tmp_path / "x.seg.nrrd", labels(), np.eye(4), segments)
    assert not (tmp_path / "x.seg.nrrd").exists()


def test_plain_label_nrrd_and_layered_segmentation(tmp_path):
    nrrd.write(str(tmp_path / "plain.nrrd"), labels().astype(np.int16),
               {"space": "RAS", "space directions": np.eye(3), "space origin": np.zeros(3)}, index_order="F")
    back, m = read_labelmap_nrrd(tmp_path / "plain.nrrd")
    np.testing.assert_array_equal(back, labels())
    np.testing.assert_array_equal(m, np.eye(4))
    layered = np.stack([labels() == 1, labels() == 3]).astype(np.uint8)
    nrrd.write(str(tmp_path / "layers.seg.nrrd"), layered,
               {"space": "LPS", "space directions": np.vstack([np.full(3, np.nan), np.eye(3)]),
                "kinds": ["list", "domain", "domain", "domain"]}, index_order="F")
    with pytest.raises(InputError, match="segmentation layers"):
        read_labelmap_nrrd(tmp_path / "layers.seg.nrrd")
    nrrd.write(str(tmp_path / "big.nrrd"), labels().astype(np.int16) * 100,
               {"space": "RAS", "space directions": np.eye(3)}, index_order="F")
    with pytest.raises(InputError, match=r"0\.\.255"):
        read_labelmap_nrrd(tmp_path / "big.nrrd")


def _matrix(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.mark.slicer
def test_slicer_loads_the_files_with_the_same_geometry(tmp_path):
    slicer = pytest.importorskip("slicer")
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    m = oblique_matrix()
    seg_path = write_labelmap_nrrd(tmp_path / "out.seg.nrrd", labels(), m, SEGMENTS)
    vol_path = write_scalar_nrrd(tmp_path / "ct.nrrd", hu(), m)
    scene = slicer.vtkMRMLScene()
    seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(seg_path))
    assert storage.ReadData(seg_node) == 1
    segmentation = seg_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(SEGMENTS)
    for n, (value, name, color) in enumerate(SEGMENTS):
        segment = segmentation.GetNthSegment(n)
        assert (segment.GetName(), segment.GetLabelValue()) == (name, value)
        np.testing.assert_allclose(segment.GetColor(), color)
        image = segment.GetRepresentation("Binary labelmap")
        to_world = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(to_world)
        np.testing.assert_allclose(_matrix(to_world), m, atol=1e-9)
        scalars = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(SHAPE[::-1]).transpose(2, 1, 0)
        np.testing.assert_array_equal(scalars == value, labels() == value)
    vol_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    vol_storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    vol_storage.SetFileName(str(vol_path))
    assert vol_storage.ReadData(vol_node) == 1
    ijk_to_ras = vtk.vtkMatrix4x4()
    vol_node.GetIJKToRASMatrix(ijk_to_ras)
    np.testing.assert_allclose(_matrix(ijk_to_ras), m, atol=1e-9)
    data = vtk_to_numpy(vol_node.GetImageData().GetPointData().GetScalars()).reshape(SHAPE[::-1])
    np.testing.assert_array_equal(data.transpose(2, 1, 0), hu())
