"""NIfTI volumes (``.nii``, ``.nii.gz``): RAS affine from sform/qform, values scaled by scl_slope/inter."""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from medcert.errors import InputError
from medcert.io.canonical_voxels import canonical_voxels
from medcert.io.nrrd_io import volume_stem
from medcert.volume import StudyIdentity, Volume


def _load_image(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, OSError, ValueError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read NIfTI file {path}: {exc}") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{path} is not a NIfTI-1/2 image ({type(img).__name__})")
    return img


def _values(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    """Stored values times scl_slope plus scl_inter, computed in float64 as for DICOM rescale."""
    proxy = img.dataobj
    try:
        raw = np.asarray(proxy.get_unscaled())
        slope, inter = float(proxy.slope), float(proxy.inter)
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read NIfTI voxels of {path}: {exc}") from exc
    if (slope, inter) == (1.0, 0.0):
        return raw
    return raw.astype(np.float64) * slope + inter


def load_nifti(path: str | Path) -> Volume:
    """A 3-D NIfTI (trailing singleton axes dropped) as a Volume; refuses images without sform/qform."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"NIfTI file not found: {path}")
    img = _load_image(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        raise InputError(f"NIfTI file {path} is not a 3-D volume (shape {list(shape)})")
    header = img.header
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        raise InputError(f"NIfTI file {path} has neither sform nor qform (both codes 0): orientation unknown")
    values = _values(img, path).reshape(shape[:3], order="F")
    try:
        voxels = canonical_voxels(values)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise InputError(f"NIfTI file {path}: affine is not finite")
    identity = StudyIdentity(source_format="nifti", source_name=volume_stem(path), source_files=(str(path),))
    return Volume(voxels=voxels, ijk_to_ras=affine, identity=identity)
