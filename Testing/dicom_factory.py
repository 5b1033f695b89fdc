"""Write synthetic DICOM CT series with pydicom, for tests.

Usage::

    series = write_ct_series(tmp_path / "ct", pixels, spacing=(0.7, 0.7, 2.5))
    series.files        # paths in slice order
    series.sop_uids     # SOP Instance UIDs in slice order

``pixels`` are *stored* values indexed ``[i, j, k]`` (i = column, j = row, k = slice); the decoded value
of a voxel is ``stored * slope + intercept``. Geometry is given in DICOM LPS: ``origin`` is the centre of
voxel (0, 0, 0), ``row_dir`` the direction of increasing i, ``col_dir`` of increasing j, and slices step
along ``row_dir x col_dir`` by ``spacing[2]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

UNCOMPRESSED = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
COMPRESSED_CANDIDATES = (RLELossless, JPEGLSLossless, JPEG2000Lossless)


def _pydicom_can_encode(uid: str) -> bool:
    from pydicom.pixels import get_encoder

    try:
        return bool(get_encoder(uid).is_available)
    except (NotImplementedError, ValueError):
        return False


def _pillow_can_encode_j2k() -> bool:
    try:
        from PIL import features
    except ImportError:
        return False
    return bool(features.check("jpg_2000"))


def available_lossless_syntaxes(signed: bool = True) -> list[str]:
    """Lossless transfer syntaxes this environment can write for signed (or unsigned) 16-bit pixels.

    JPEG 2000 uses pydicom's encoder when present, else Pillow's OpenJPEG codec (unsigned pixels only).
    """
    out = list(UNCOMPRESSED)
    for uid in COMPRESSED_CANDIDATES:
        if _pydicom_can_encode(uid) or (uid == JPEG2000Lossless and not signed and _pillow_can_encode_j2k()):
            out.append(uid)
    return out


def unavailable_lossless_syntaxes(signed: bool = True) -> list[str]:
    """Compressed lossless syntaxes with no encoder here (named in test skips and reports)."""
    have = set(available_lossless_syntaxes(signed))
    return [uid for uid in COMPRESSED_CANDIDATES if uid not in have]


def _pillow_j2k(ds: Dataset) -> None:
    """Replace the native pixel data by a lossless JPEG 2000 codestream made with Pillow."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate

    if ds.PixelRepresentation != 0:
        raise ValueError("Pillow's JPEG 2000 encoder here takes unsigned pixels only")
    frames = int(ds.get("NumberOfFrames") or 1)
    planes = np.frombuffer(ds.PixelData, dtype="<u2").reshape(frames, ds.Rows, ds.Columns)
    fragments = []
    for plane in planes:
        buf = io.BytesIO()
        image = Image.fromarray(np.ascontiguousarray(plane))
        image.save(buf, format="JPEG2000", no_jp2=True, irreversible=False)  # reversible 5/3: lossless
        fragments.append(buf.getvalue())
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless


@dataclass(frozen=True)
class WrittenSeries:
    """What :func:`write_ct_series` wrote."""

    folder: Path
    files: tuple[Path, ...]  # slice order
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_uids: tuple[str, ...]  # slice order
    positions_lps: np.ndarray  # (n, 3) ImagePositionPatient as written, slice order


def _ds(value: float) -> str:
    """A DS string of the value rounded to 1e-6 (tests read positions back from these strings)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _cos(value: float) -> str:
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _base_dataset(sop_class: str, sop_uid: str, transfer_syntax: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    return ds


def _patient_and_study(ds: Dataset, *, patient_name: str, patient_id: str, study_uid: str,
                       series_uid: str, modality: str, description: str) -> None:
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "TEST-HOSPITAL"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.StudyDate = "20240131"
    ds.SeriesDate = "20240131"
    ds.SeriesTime = "101500"
    ds.Manufacturer = "ACME Imaging"
    ds.ManufacturerModelName = "Phantom CT 9000"
    ds.StationName = "CT01"
    ds.InstitutionName = "Test Hospital"
    ds.SeriesNumber = 3


def _pixel_module(ds: Dataset, plane: np.ndarray) -> None:
    """Set the image pixel module for one [row, col] plane of int16/uint16 stored values."""
    signed = plane.dtype.kind == "i"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(plane.shape[0]), int(plane.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(plane, dtype="<i2" if signed else "<u2").tobytes()


def _save(ds: Dataset, path: Path, transfer_syntax: str) -> None:
    if transfer_syntax in UNCOMPRESSED:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    elif transfer_syntax == JPEG2000Lossless and not _pydicom_can_encode(transfer_syntax):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        _pillow_j2k(ds)
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(transfer_syntax, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def write_ct_series(
    folder: str | Path,
    pixels: np.ndarray,
    *,
    spacing: Sequence[float] = (0.8, 0.8, 2.5),
    origin: Sequence[float] = (-12.5, -20.0, 31.0),
    row_dir: Sequence[float] = (1.0, 0.0, 0.0),
    col_dir: Sequence[float] = (0.0, 1.0, 0.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    transfer_syntax: str = ExplicitVRLittleEndian,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    sop_uids: Sequence[str] | None = None,
    patient_name: str = "Doe^Jane",
    patient_id: str = "PID-0042",
    modality: str = "CT",
    description: str = "Synthetic CT",
    names: Callable[[int], str] | None = None,
    write_order: Sequence[int] | None = None,
    instance_numbers: Sequence[int] | None = None,
    positions: np.ndarray | None = None,
    edit: Callable[[Dataset, int], None] | None = None,
) -> WrittenSeries:
    """Write one single-frame CT image per slice of ``pixels`` ([i, j, k] stored values) into ``folder``.

    ``spacing`` is (column spacing i, row spacing j, slice step k) in mm. ``names(k)`` gives file names
    (default ``slice_{k:03d}.dcm``), ``write_order`` the order files are created in, ``instance_numbers``
    the InstanceNumber per slice, ``positions`` an (n, 3) LPS override of ImagePositionPatient, and
    ``edit(ds, k)`` changes a dataset just before it is saved (for refusal cases).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.dtype not in (np.int16, np.uint16):
        raise ValueError("pixels must be a 3-D int16 or uint16 array [i, j, k]")
    n = pixels.shape[2]
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    sop_uids = tuple(sop_uids) if sop_uids is not None else tuple(generate_uid() for _ in range(n))
    row = np.asarray(row_dir, dtype=np.float64)
    col = np.asarray(col_dir, dtype=np.float64)
    normal = np.cross(row, col)
    if positions is None:
        start = np.asarray(origin, dtype=np.float64)
        positions = np.array([start + k * spacing[2] * normal for k in range(n)])
    # Round to what the DS strings hold, so tests compare against the values actually written.
    positions = np.array([[float(_ds(v)) for v in p] for p in positions])
    names = names or (lambda k: f"slice_{k:03d}.dcm")
    order = list(write_order) if write_order is not None else list(range(n))
    files: list[Path] = [folder / names(k) for k in range(n)]
    for k in order:
        ds = _base_dataset(CTImageStorage, sop_uids[k], transfer_syntax)
        _patient_and_study(ds, patient_name=patient_name, patient_id=patient_id, study_uid=study_uid,
                           series_uid=series_uid, modality=modality, description=description)
        ds.FrameOfReferenceUID = for_uid
        ds.InstanceNumber = int(instance_numbers[k]) if instance_numbers is not None else k + 1
        ds.AcquisitionDate = "20240131"
        ds.AcquisitionTime = f"1016{k % 60:02d}.250000"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
        ds.ImageOrientationPatient = [_cos(v) for v in (*row, *col)]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # [row spacing, column spacing]
        ds.SliceThickness = _ds(spacing[2])
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleType = "HU"
        _pixel_module(ds, pixels[:, :, k].T)
        if edit is not None:
            edit(ds, k)
        _save(ds, files[k], transfer_syntax)
    return WrittenSeries(folder=folder, files=tuple(files), study_uid=study_uid, series_uid=series_uid,
                         frame_of_reference_uid=for_uid, sop_uids=sop_uids, positions_lps=positions)


def write_non_image(path: str | Path, *, study_uid: str, series_uid: str, modality: str = "SR") -> Path:
    """A minimal DICOM object without pixel data (a Basic Text SR) in the given study and series."""
    path = Path(path)
    ds = _base_dataset("1.2.840.10008.5.1.4.1.1.88.11", generate_uid(), ExplicitVRLittleEndian)
    _patient_and_study(ds, patient_name="Doe^Jane", patient_id="PID-0042", study_uid=study_uid,
                       series_uid=series_uid, modality=modality, description="Report")
    ds.InstanceNumber = 99
    ds.ValueType = "CONTAINER"
    _save(ds, path, ExplicitVRLittleEndian)
    return path


def write_enhanced_ct(
    path: str | Path,
    pixels: np.ndarray,
    *,
    spacing: Sequence[float] = (0.8, 0.8, 2.5),
    origin: Sequence[float] = (-12.5, -20.0, 31.0),
    row_dir: Sequence[float] = (1.0, 0.0, 0.0),
    col_dir: Sequence[float] = (0.0, 1.0, 0.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    frame_order: Sequence[int] | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Path:
    """One Enhanced CT multi-frame object holding the slices of ``pixels`` in ``frame_order``.

    Orientation, spacing and rescale are in the shared functional groups; each frame carries its
    Plane Position.
    """
    from pydicom.sequence import Sequence as Seq

    path = Path(path)
    pixels = np.asarray(pixels)
    n = pixels.shape[2]
    order = list(frame_order) if frame_order is not None else list(range(n))
    row = np.asarray(row_dir, dtype=np.float64)
    col = np.asarray(col_dir, dtype=np.float64)
    normal = np.cross(row, col)
    ds = _base_dataset(EnhancedCTImageStorage, sop_uid or generate_uid(), ExplicitVRLittleEndian)
    _patient_and_study(ds, patient_name="Doe^Jane", patient_id="PID-0042",
                       study_uid=study_uid or generate_uid(), series_uid=series_uid or generate_uid(),
                       modality="CT", description="Enhanced CT")
    ds.FrameOfReferenceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.AcquisitionDateTime = "20240131101600.250000"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.NumberOfFrames = n
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
    measures.SliceThickness = _ds(spacing[2])
    orient = Dataset()
    orient.ImageOrientationPatient = [_cos(v) for v in (*row, *col)]
    transform = Dataset()
    transform.RescaleSlope = _ds(slope)
    transform.RescaleIntercept = _ds(intercept)
    transform.RescaleType = "HU"
    shared.PixelMeasuresSequence = Seq([measures])
    shared.PlaneOrientationSequence = Seq([orient])
    shared.PixelValueTransformationSequence = Seq([transform])
    ds.SharedFunctionalGroupsSequence = Seq([shared])
    frames = []
    for k in order:
        item = Dataset()
        pos = Dataset()
        where = np.asarray(origin, dtype=np.float64) + k * spacing[2] * normal
        pos.ImagePositionPatient = [_ds(v) for v in where]
        item.PlanePositionSequence = Seq([pos])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Seq(frames)
    stack = np.stack([pixels[:, :, k].T for k in order])  # (frames, rows, cols)
    _pixel_module(ds, stack[0])
    ds.PixelData = np.ascontiguousarray(stack, dtype="<i2" if stack.dtype.kind == "i" else "<u2").tobytes()
    _save(ds, path, ExplicitVRLittleEndian)
    return path
