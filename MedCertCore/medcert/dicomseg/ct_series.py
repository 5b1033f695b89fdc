"""Write a Volume of Hounsfield units as a single-frame CT Image Storage series (Explicit VR Little Endian).

>>> files = write_ct_series(phantom, "demo/CT", patient_name="Phantom^Chest", patient_id="MEDCERT-PHANTOM")

Storage: unsigned 16-bit with Rescale Intercept -1024 when every value is at least -1024 HU, else signed
16-bit with intercept 0; slope 1 either way, so loading gives back the same integers. Geometry comes from
``ijk_to_ras`` (converted to LPS): i runs along a row, j down a column, slices step along row × column.
Every file is written atomically and none is ever overwritten.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from medcert import __version__
from medcert.dicomseg.writer import write_dicom
from medcert.errors import MedCertError
from medcert.io.dicom_geometry import LPS_TO_RAS
from medcert.volume import Volume

AXIS_TOL = 1e-6


def _ds(value: float) -> str:
    """A DS string of at most 16 characters, as close to ``value`` as DS allows."""
    text = format_number_as_ds(float(value) + 0.0)
    return "0" if text in ("-0", "-0.0", "0.0") else text


def _geometry(m_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float], np.ndarray, np.ndarray]:
    """(row cosines, column cosines, [row spacing, column spacing], slice step, origin), all LPS."""
    m = LPS_TO_RAS @ np.asarray(m_ras, dtype=np.float64)
    di, dj, dk = m[:3, 0], m[:3, 1], m[:3, 2]
    si, sj, sk = (float(np.linalg.norm(v)) for v in (di, dj, dk))
    if min(si, sj, sk) <= 0:
        raise MedCertError("cannot write a DICOM series: a voxel axis has zero length")
    row, col = di / si, dj / sj
    normal = np.cross(row, col)
    if abs(float(row @ col)) > AXIS_TOL or np.linalg.norm(np.cross(normal, dk / sk)) > AXIS_TOL:
        raise MedCertError("cannot write a DICOM series: the voxel grid is sheared (slices must step "
                           "perpendicular to the image plane)")
    if float(normal @ dk) < 0:
        raise MedCertError("cannot write a DICOM series: slices step against row x column "
                           "(left-handed grid); reverse the k axis first")
    return row, col, [sj, si], dk, m[:3, 3]


def _storage(voxels: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(stored int values [i, j, k], pixel representation, intercept)."""
    v = np.asarray(voxels)
    if v.dtype.kind not in "iu" or v.size == 0:
        raise MedCertError(f"cannot write a CT series from {v.dtype} voxels: integer Hounsfield units needed")
    lo, hi = int(v.min()), int(v.max())
    if lo >= -1024 and hi <= 65535 - 1024:
        return (v.astype(np.int32) + 1024).astype("<u2"), 0, -1024
    if lo >= -32768 and hi <= 32767:
        return v.astype("<i2"), 1, 0
    raise MedCertError(f"cannot write a CT series: values {lo}..{hi} HU do not fit 16 bits")


def _common(study_uid: str, series_uid: str, for_uid: str, patient_name: str, patient_id: str,
            description: str, body_part: str, now: datetime) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.BodyPartExamined = body_part  # an unpaired part: Laterality stays absent
    ds.PatientPosition = "HFS"
    ds.Manufacturer = "MedCert"
    ds.ManufacturerModelName = "MedCert synthetic CT"
    ds.SoftwareVersions = f"medcert {__version__}"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = description[:64]
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.KVP = ""
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    return ds


def write_ct_series(volume: Volume, folder: str | Path, *, study_uid: str | None = None,
                    series_uid: str | None = None, frame_of_reference_uid: str | None = None,
                    patient_name: str = "MedCert^Phantom", patient_id: str = "MEDCERT-PHANTOM",
                    description: str = "MedCert synthetic CT", body_part: str = "CHEST") -> list[Path]:
    """Write ``CT_0001.dcm``… (one per slice) into ``folder`` (created); the paths in slice order.

    Refused before anything is written when one of the files already exists.
    """
    folder = Path(folder)
    row, col, spacing, step, origin = _geometry(volume.ijk_to_ras)
    stored, representation, intercept = _storage(volume.voxels)
    ni, nj, nk = volume.shape
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedCertError(f"cannot create folder {folder}: {exc.strerror or exc}") from exc
    base = _common(study_uid or generate_uid(), series_uid or generate_uid(),
                   frame_of_reference_uid or generate_uid(), patient_name, patient_id, description,
                   body_part, datetime.now(UTC))
    base.Rows, base.Columns = nj, ni
    base.PixelRepresentation = representation
    base.RescaleIntercept = str(intercept)
    base.PixelSpacing = [_ds(s) for s in spacing]
    base.SliceThickness = _ds(float(np.linalg.norm(step)))
    base.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
    names = [folder / f"CT_{k + 1:04d}.dcm" for k in range(nk)]
    existing = next((p for p in names if p.exists()), None)
    if existing is not None:
        raise MedCertError(f"refusing to overwrite existing file: {existing}")
    paths = []
    for k in range(nk):
        ds = Dataset()
        ds.update(base)
        sop = generate_uid()
        ds.SOPInstanceUID = sop
        ds.InstanceNumber = k + 1
        position = origin + k * step
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(float(position @ np.cross(row, col)))
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        paths.append(write_dicom(names[k], ds))
    return paths
