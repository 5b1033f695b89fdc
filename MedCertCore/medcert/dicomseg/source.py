"""The source images of a loaded DICOM series, and where each source frame lies on the volume grid.

Only headers are read (no pixel data) and only in memory: the source files are never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medcert.errors import InputError
from medcert.io.dicom_geometry import LPS_TO_RAS
from medcert.volume import Volume

# Type 2 attributes highdicom copies from the source; an absent one becomes empty (in the copy only).
EMPTY_IF_ABSENT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                   "StudyDate", "StudyTime", "ReferringPhysicianName")


def grid_tolerance(ijk_to_ras: np.ndarray) -> float:
    """Position tolerance in mm, as the series loader uses: 1 % of the slice step, at least 0.01 mm."""
    return max(0.01, 0.01 * float(np.linalg.norm(ijk_to_ras[:3, 2])))


def slice_index(position_lps: Sequence[float], ijk_to_ras: np.ndarray, n_slices: int, where: str) -> int:
    """The slice k whose first voxel lies at ``position_lps`` (ImagePositionPatient); InputError if none."""
    ras = LPS_TO_RAS[:3, :3] @ np.asarray([float(v) for v in position_lps], dtype=np.float64)
    ijk = np.linalg.solve(ijk_to_ras[:3, :3], ras - ijk_to_ras[:3, 3])
    k = round(float(ijk[2]))
    off = ijk_to_ras[:3, :3] @ (ijk - np.array([0.0, 0.0, k]))
    if not 0 <= k < n_slices or float(np.linalg.norm(off)) > grid_tolerance(ijk_to_ras):
        raise InputError(f"{where}: image position {list(np.round(ras, 3))} (RAS mm) is not the first voxel "
                         "of a slice of the volume grid")
    return k


def frame_positions(ds: Dataset, where: str) -> list[Sequence[float]]:
    """ImagePositionPatient of every frame of ``ds`` (one for a single-frame image)."""
    groups = ds.get("PerFrameFunctionalGroupsSequence")
    if not groups:
        if "ImagePositionPatient" not in ds:
            raise InputError(f"{where}: missing ImagePositionPatient")
        return [ds.ImagePositionPatient]
    out = []
    for f, group in enumerate(groups):
        pos = group.get("PlanePositionSequence")
        if not pos or "ImagePositionPatient" not in pos[0]:
            raise InputError(f"{where} frame {f + 1}: missing Plane Position")
        out.append(pos[0].ImagePositionPatient)
    return out


def source_images(volume: Volume) -> tuple[list[Dataset], list[int]]:
    """Headers of the volume's source files (copies, with empty type 2 attributes added where absent) and,
    for every source frame in file order, its slice index k on the volume grid."""
    ident = volume.identity
    if ident.source_format != "dicom" or not ident.source_files:
        raise InputError(f"a DICOM SEG needs a DICOM series as input; {ident.source_name} is "
                         f"{ident.source_format}")
    datasets: list[Dataset] = []
    frame_k: list[int] = []
    n = volume.shape[2]
    instances = set(ident.instance_uids)
    for name in ident.source_files:
        path = Path(name)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            raise InputError(f"cannot read source image {path}: {type(exc).__name__}: {exc}") from exc
        if str(ds.get("SOPInstanceUID", "")) not in instances:
            raise InputError(f"source image {path} is not an instance of the loaded series "
                             "(changed on disk?)")
        for key in EMPTY_IF_ABSENT:
            if key not in ds:
                setattr(ds, key, "")
        frame_k += [slice_index(p, volume.ijk_to_ras, n, str(path)) for p in frame_positions(ds, str(path))]
        datasets.append(ds)
    if sorted(frame_k) != list(range(n)):
        raise InputError(f"the source images of series {ident.series_uid} do not cover the {n} slices of the "
                         "volume one to one (changed on disk?)")
    if len(datasets) > 1 and len(frame_k) != len(datasets):
        raise InputError(f"series {ident.series_uid}: several multi-frame source images are not supported "
                         "for DICOM SEG")
    return datasets, frame_k
