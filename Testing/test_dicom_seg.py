"""DICOM SEG writing and reading, the MedCert private block, and synthetic CT series (no model runs).

Every SEG is built from real pydicom series files, read back with pydicom and highdicom, and checked with
the real ``dciodvfy`` and ``dcmdump`` binaries (skipped, with the reason, only when a binary is missing).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_factory import write_ct_series as write_test_series
from dicom_factory import write_enhanced_ct
from medcert.cli.main import main
from medcert.dicomseg import (
    Algorithm,
    SegGridError,
    algorithm_parameters,
    attach_certificate,
    build_segmentation,
    dicom_bytes,
    has_certificate_block,
    read_certificate,
    read_seg,
    remove_certificate_block,
    seg_labelmap,
    write_ct_series,
    write_dicom,
)
from medcert.dicomseg.private_block import CREATOR, GROUP
from medcert.errors import InputError, MedCertError
from medcert.io import load_volume
from medcert.io.nrrd_io import write_scalar_nrrd
from medcert.sidecar import read_sidecar
from medcert.volume import StudyIdentity, Volume
from pydicom.uid import ImplicitVRLittleEndian

GOLDEN = Path(__file__).parent / "golden" / "golden.medcert.json"
SHAPE = (20, 17, 9)  # i != j != k catches transposition
NAMES = {1: "right lung", 2: "left lung", 3: "lung nodule"}
ALGO = Algorithm("test-model", "1.2.3", {"weights_sha256": "A" * 43, "medcert_trace_id": "t-1"})


@pytest.fixture(autouse=True)
def _site_key(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MEDCERT_HOME", str(tmp_path_factory.mktemp("medcert-home")))
    monkeypatch.delenv("MEDCERT_PSEUDONYM_KEY", raising=False)


def rotation(a: float, b: float, c: float) -> np.ndarray:
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = rotation(0.3, -0.5, 0.8)
ORIENTATIONS = {  # (row_dir, col_dir) in LPS
    "axial": ((1, 0, 0), (0, 1, 0)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "oblique": (tuple(OBLIQUE[:, 0]), tuple(OBLIQUE[:, 1])),
}


def random_labels(seed: int = 1) -> np.ndarray:
    """Labels 0..3 with structure that differs along every axis (no symmetry hides a flip)."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 4, size=SHAPE).astype(np.uint8)
    lab[:, :, 0] = 0  # an empty slice: its frames are omitted
    return lab


def hashes(files) -> dict[str, str]:
    return {str(f): hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (apt-get install dicom3tools dcmtk)")
    return path


def dciodvfy_errors(path: Path) -> tuple[list[str], list[str]]:
    out = subprocess.run([need("dciodvfy"), str(path)], capture_output=True, text=True, check=False)
    lines = (out.stdout + out.stderr).splitlines()
    return [x for x in lines if "Error" in x], [x for x in lines if "Warning" in x]


def series(tmp_path: Path, orientation: str = "axial", **kw):
    row, col = ORIENTATIONS[orientation]
    px = np.random.default_rng(3).integers(0, 1500, size=SHAPE).astype(np.int16)
    return write_test_series(tmp_path / orientation, px, row_dir=row, col_dir=col,
                             spacing=(0.7, 0.9, 2.5), **kw)


# --- SEG geometry: every voxel on the right source frame and pixel ------------------------------------------

@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_every_voxel_lands_on_its_source_frame_and_pixel(tmp_path, orientation):
    n = SHAPE[2]
    perm = np.random.default_rng(5).permutation(n)
    s = series(tmp_path, orientation, names=lambda k: f"img{perm[k]:03d}.dcm", write_order=list(perm))
    before = hashes(s.files)
    vol = load_volume(s.folder)
    labels = random_labels()
    ds = build_segmentation(vol, labels, NAMES, ALGO)
    # 1. highdicom's own decoding, by referenced source instance in slice order
    got = hd.seg.Segmentation.from_dataset(ds).get_pixels_by_source_instance(
        list(s.sop_uids), combine_segments=True, skip_overlap_checks=True)
    np.testing.assert_array_equal(got, labels.transpose(2, 1, 0))
    # 2. every frame sits at the position of the slice it came from
    by_uid = dict(zip(s.sop_uids, s.positions_lps, strict=True))
    for frame in ds.PerFrameFunctionalGroupsSequence:
        src = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        pos = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(pos, by_uid[src], atol=1e-6)
    # 3. MedCert's geometric reader puts it back exactly
    np.testing.assert_array_equal(seg_labelmap(ds, vol), labels)
    # 4. a valid SEG in every orientation
    errors, _ = dciodvfy_errors(write_dicom(tmp_path / "x.seg.dcm", ds))
    assert errors == [], errors
    assert hashes(s.files) == before


def test_enhanced_multiframe_source_in_shuffled_frame_order(tmp_path):
    px = np.random.default_rng(4).integers(0, 1500, size=SHAPE).astype(np.int16)
    order = list(np.random.default_rng(9).permutation(SHAPE[2]))
    (tmp_path / "mf").mkdir()
    path = write_enhanced_ct(tmp_path / "mf" / "enh.dcm", px, frame_order=order,
                             row_dir=ORIENTATIONS["oblique"][0], col_dir=ORIENTATIONS["oblique"][1])
    vol = load_volume(path.parent)
    labels = random_labels(2)
    ds = build_segmentation(vol, labels, NAMES, ALGO)
    np.testing.assert_array_equal(seg_labelmap(ds, vol), labels)


def test_seg_passes_dciodvfy_and_dcmdump_reads_it(tmp_path):
    s = series(tmp_path, "oblique")
    vol = load_volume(s.folder)
    ds = build_segmentation(vol, random_labels(), NAMES, ALGO)
    attach_certificate(ds, read_sidecar(GOLDEN)[0])
    path = write_dicom(tmp_path / "x.seg.dcm", ds)
    errors, warnings = dciodvfy_errors(path)
    assert errors == [], errors
    # Expected warnings only: MedCert's private tags are unknown to dciodvfy; the test series has no StudyID
    # or StudyTime (a DICOMDIR concern).
    assert all("(0x0009," in w or "DICOMDIR" in w for w in warnings), warnings
    dump = subprocess.run([need("dcmdump"), str(path)], capture_output=True, text=True, check=True).stdout
    assert "SegmentationStorage" in dump and f"[{CREATOR}]" in dump and "[AUTOMATIC]" in dump


def test_segments_codes_and_algorithm_identification(tmp_path):
    vol = load_volume(series(tmp_path).folder)
    ds = build_segmentation(vol, random_labels(), NAMES, ALGO)
    assert ds.SegmentationType == "BINARY" and ds.Modality == "SEG"
    assert ds.FrameOfReferenceUID == vol.identity.frame_of_reference_uid
    assert ds.SeriesInstanceUID != vol.identity.series_uid and ds.StudyInstanceUID == vol.identity.study_uid
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == vol.identity.series_uid
    segs = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    assert {n: s.SegmentLabel for n, s in segs.items()} == NAMES
    types = {n: (s.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
                 s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for n, s in segs.items()}
    assert types == {1: ("91723000", "39607008"), 2: ("91723000", "39607008"), 3: ("49755003", "27925004")}
    mods = {n: segs[n].SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
            .CodeValue for n in (1, 2)}
    assert mods == {1: "24028007", 2: "7771000"}  # SCT Right, Left
    assert segs[3].AnatomicRegionSequence[0].CodeValue == "39607008"
    for s in segs.values():
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        alg = s.SegmentationAlgorithmIdentificationSequence[0]
        assert (alg.AlgorithmName, alg.AlgorithmVersion) == ("test-model", "1.2.3")
        fam = alg.AlgorithmFamilyCodeSequence[0]
        assert (fam.CodeValue, fam.CodingSchemeDesignator, fam.CodeMeaning) == (
            "123110", "DCM", "Artificial Intelligence")
    assert algorithm_parameters(ds) == ALGO.parameters


def test_empty_segments_are_described_without_frames_and_all_empty_keeps_frames(tmp_path):
    vol = load_volume(series(tmp_path).folder)
    labels = np.zeros(SHAPE, np.uint8)
    labels[3:9, 2:5, 4] = 2
    ds = build_segmentation(vol, labels, NAMES, ALGO)
    assert len(ds.SegmentSequence) == 3
    assert {int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            for f in ds.PerFrameFunctionalGroupsSequence} == {2}
    assert int(ds.NumberOfFrames) == 1
    np.testing.assert_array_equal(seg_labelmap(ds, vol), labels)
    empty = build_segmentation(vol, np.zeros(SHAPE, np.uint8), NAMES, ALGO)
    assert int(empty.NumberOfFrames) == 3 * SHAPE[2]
    assert not seg_labelmap(empty, vol).any()


def test_labels_without_terminology_or_with_gaps_are_refused(tmp_path):
    vol = load_volume(series(tmp_path).folder)
    with pytest.raises(MedCertError, match="no DICOM SEG terminology for segment label 'liver'"):
        build_segmentation(vol, random_labels(), {1: "liver", 2: "left lung", 3: "lung nodule"}, ALGO)
    with pytest.raises(MedCertError, match=r"1\.\.n without gaps"):
        build_segmentation(vol, np.zeros(SHAPE, np.uint8), {1: "right lung", 3: "lung nodule"}, ALGO)
    with pytest.raises(MedCertError, match="not segments of the model"):
        build_segmentation(vol, random_labels(), {1: "right lung", 2: "left lung"}, ALGO)


# --- the reader refuses a SEG that is not on the series grid ----------------------------------------------

def test_reader_refuses_other_frame_of_reference_series_and_geometry(tmp_path):
    s = series(tmp_path, "oblique")
    vol = load_volume(s.folder)
    ds = build_segmentation(vol, random_labels(), NAMES, ALGO)
    other = pydicom.dcmread(io.BytesIO(dicom_bytes(ds)))
    other.FrameOfReferenceUID = "1.2.3.4"
    with pytest.raises(SegGridError, match="Frame of Reference"):
        seg_labelmap(other, vol)
    shifted = pydicom.dcmread(io.BytesIO(dicom_bytes(ds)))
    pos = shifted.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    pos.ImagePositionPatient = [float(v) + 0.4 for v in pos.ImagePositionPatient]
    with pytest.raises(SegGridError, match="not the first voxel of a slice"):
        seg_labelmap(shifted, vol)
    twice = pydicom.dcmread(io.BytesIO(dicom_bytes(ds)))
    frames = twice.PerFrameFunctionalGroupsSequence
    frames[1].PlanePositionSequence = frames[0].PlanePositionSequence
    frames[1].SegmentIdentificationSequence = frames[0].SegmentIdentificationSequence
    with pytest.raises(SegGridError, match="second frame"):
        seg_labelmap(twice, vol)
    other_series = load_volume(series(tmp_path / "b", "oblique").folder)
    with pytest.raises(SegGridError):
        seg_labelmap(ds, other_series)


def test_read_seg_refuses_non_seg_dicom(tmp_path):
    s = series(tmp_path)
    with pytest.raises(InputError, match="is not a DICOM Segmentation"):
        read_seg(s.files[0])


# --- the private block ------------------------------------------------------------------------------------

def test_private_block_layout_and_round_trip_through_implicit_vr(tmp_path):
    record = read_sidecar(GOLDEN)[0]
    vol = load_volume(series(tmp_path).folder)
    ds = build_segmentation(vol, random_labels(), NAMES, ALGO)
    attach_certificate(ds, record)
    with pytest.raises(MedCertError, match="already carries"):
        attach_certificate(ds, record)
    explicit = pydicom.dcmread(io.BytesIO(dicom_bytes(ds)))
    assert explicit[GROUP, 0x0010].value == CREATOR
    assert explicit[GROUP, 0x1010].VR == "OB" and explicit[GROUP, 0x1013].VR == "OB"
    assert (GROUP, 0x0011) not in explicit  # one creator in the group
    implicit_ds = pydicom.dcmread(io.BytesIO(dicom_bytes(ds)))
    implicit_ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    data = dicom_bytes(implicit_ds)
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert back[GROUP, 0x1010].VR == "UN"  # no VR on the wire: read back as raw bytes
    for got in (read_certificate(explicit, "x"), read_certificate(back, "x")):
        assert got is not None and got.problems == []
        assert got.record == record
        assert got.stated_trace_id == record.trace_id
    np.testing.assert_array_equal(seg_labelmap(back, vol), seg_labelmap(explicit, vol))


def test_removed_or_damaged_block(tmp_path):
    record = read_sidecar(GOLDEN)[0]
    vol = load_volume(series(tmp_path).folder)
    ds = build_segmentation(vol, random_labels(), NAMES, ALGO)
    attach_certificate(ds, record)
    stripped = pydicom.dcmread(io.BytesIO(dicom_bytes(ds)))
    assert remove_certificate_block(stripped) and not has_certificate_block(stripped)
    assert not any(e.tag.group == GROUP for e in stripped)
    assert read_certificate(stripped, "x") is None
    broken = pydicom.dcmread(io.BytesIO(dicom_bytes(ds)))
    broken[GROUP, 0x1013].value = broken[GROUP, 0x1013].value[:-40]
    broken[GROUP, 0x1010].value = b"{not json"
    got = read_certificate(broken, "x")
    assert got is not None and got.record.core is None and got.record.evidence == {}
    assert len(got.problems) == 2 and "not valid JSON" in got.problems[0]


# --- CT series writer -------------------------------------------------------------------------------------

def phantom(hu_low: int, matrix: np.ndarray) -> Volume:
    rng = np.random.default_rng(11)
    vox = rng.integers(hu_low, 1500, size=SHAPE).astype(np.int16)
    m = np.eye(4)
    m[:3, :3] = matrix @ np.diag([0.73, 0.81, 2.5])
    m[:3, 3] = (-101.25, 37.5, -12.125)
    return Volume(vox, m, StudyIdentity(source_format="nrrd", source_name="phantom"))


@pytest.mark.parametrize(("hu_low", "signed"), [(-1024, False), (-3024, True)])
def test_write_ct_series_loads_back_identical(tmp_path, hu_low, signed):
    matrix = np.diag([-1.0, -1.0, 1.0]) @ OBLIQUE  # an oblique grid, given in RAS
    vol = phantom(hu_low, matrix)
    files = write_ct_series(vol, tmp_path / "ct", study_uid="1.2.826.0.1.3680043.8.498.77")
    assert len(files) == SHAPE[2]
    back = load_volume(tmp_path / "ct")
    assert back.voxels.dtype == np.int16
    np.testing.assert_array_equal(back.voxels, vol.voxels)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, rtol=0, atol=1e-6)
    assert back.identity.study_uid == "1.2.826.0.1.3680043.8.498.77"
    assert [Path(p) for p in back.identity.source_files] == files
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (int(ds.PixelRepresentation), float(ds.RescaleSlope)) == (int(signed), 1.0)
    assert float(ds.RescaleIntercept) == (0.0 if signed else -1024.0)
    assert dciodvfy_errors(files[0]) == ([], [])
    with pytest.raises(MedCertError, match="refusing to overwrite"):
        write_ct_series(vol, tmp_path / "ct")


def test_write_ct_series_refuses_left_handed_and_float_volumes(tmp_path):
    vol = phantom(-1024, np.diag([-1.0, -1.0, -1.0]))
    with pytest.raises(MedCertError, match="left-handed"):
        write_ct_series(vol, tmp_path / "a")
    floats = Volume(vol.voxels.astype(np.float32), np.eye(4), vol.identity)
    with pytest.raises(MedCertError, match="integer Hounsfield"):
        write_ct_series(floats, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- CLI refusals before any model run --------------------------------------------------------------------

def test_cli_dicom_seg_refuses_nrrd_input_and_a_series_with_a_gap(tmp_path, capsys):
    from medcert.keys import generate_keypair
    from medcert.models.placeholder import write_placeholder_weights

    key, _ = generate_keypair(tmp_path / "keys")
    weights = write_placeholder_weights(tmp_path / "w.safetensors")
    nrrd = write_scalar_nrrd(tmp_path / "ct.nrrd", np.zeros((8, 8, 4), np.float32), np.eye(4))
    common = ["--key", str(key), "--weights", str(weights), "--audit-db", str(tmp_path / "a.sqlite"),
              "--dicom-seg"]
    assert main(["segment", str(nrrd), "--out", str(tmp_path / "o1"), *common]) == 65
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("medcert: error: --dicom-seg needs a DICOM series")
    assert not (tmp_path / "o1").exists()  # refused before anything is written
    px = np.zeros(SHAPE, np.int16)
    pos = np.array([[0.0, 0.0, 2.5 * k] for k in range(SHAPE[2])])
    pos[5:] += [0, 0, 2.5]  # one slice missing
    s = write_test_series(tmp_path / "gap", px, positions=pos)
    before = hashes(s.files)
    assert main(["segment", str(s.folder), "--out", str(tmp_path / "o2"), *common]) == 65
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("medcert: error: series") and "uneven slice spacing" in err
    assert hashes(s.files) == before
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())
