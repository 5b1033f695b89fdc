"""Volumes in (DICOM series, NRRD, NIfTI), labelmaps and scalar volumes out, patient pseudonyms.

>>> vol = load_volume("study/CT")            # a folder: DICOM series
>>> vol = load_volume("ct.nrrd")             # or .nhdr, .nii, .nii.gz
>>> write_labelmap_nrrd("ct.seg.nrrd", labels, vol.ijk_to_ras, [(1, "liver", (0.9, 0.5, 0.4))])
"""

from __future__ import annotations

from pathlib import Path

from medcert.errors import InputError
from medcert.io.canonical_voxels import canonical_voxels
from medcert.io.dicom_scan import SeriesInfo, list_series
from medcert.io.dicom_series import load_dicom_series
from medcert.io.nifti_io import load_nifti
from medcert.io.nrrd_io import load_nrrd, write_scalar_nrrd
from medcert.io.pseudonym import patient_pseudonym
from medcert.io.seg_nrrd import read_labelmap_nrrd, write_labelmap_nrrd
from medcert.progress import ProgressFn, silent
from medcert.volume import Volume

__all__ = [
    "SeriesInfo",
    "canonical_voxels",
    "list_series",
    "load_volume",
    "patient_pseudonym",
    "read_labelmap_nrrd",
    "write_labelmap_nrrd",
    "write_scalar_nrrd",
]


def load_volume(path: str | Path, series_uid: str | None = None, *, progress: ProgressFn = silent) -> Volume:
    """Load a folder (DICOM series), ``*.nrrd``/``*.nhdr`` or ``*.nii``/``*.nii.gz`` as a Volume.

    ``series_uid`` picks one series in a DICOM folder holding several; anything else is an InputError.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        return load_dicom_series(path, series_uid, progress)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if series_uid is not None:
        raise InputError(f"a series UID only applies to a DICOM folder, not to {path}")
    if name.endswith((".nrrd", ".nhdr")):
        return load_nrrd(path)
    if name.endswith((".nii", ".nii.gz")):
        return load_nifti(path)
    raise InputError(f"unsupported input {path}: expected a DICOM folder, .nrrd, .nhdr, .nii or .nii.gz")
