"""Load one DICOM series from a folder as a Volume.

Headers are read first without pixel data to group, check and sort the slices; pixels are decoded for the
chosen series only, through the modality LUT (rescale slope/intercept), then made canonical.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from medcert.errors import InputError
from medcert.io.canonical_voxels import canonical_voxels
from medcert.io.dicom_geometry import SliceRef, slice_refs, sort_slices
from medcert.io.dicom_identity import series_identity
from medcert.io.dicom_scan import choose_series, scan_folder
from medcert.progress import ProgressFn, silent
from medcert.volume import Volume

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _read_pixels(path: Path) -> tuple[Dataset, np.ndarray]:
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise InputError(f"cannot read DICOM file {path}: {type(exc).__name__}: {exc}") from exc
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise InputError(f"{path}: image has no pixel data")
    try:
        return ds, ds.pixel_array
    except Exception as exc:  # missing decoder, corrupt stream, inconsistent pixel module
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise InputError(f"cannot decode pixel data of {path} ({name}): {detail}") from exc


def _modality_values(plane: np.ndarray, ds: Dataset, ref: SliceRef) -> np.ndarray:
    if ref.rescale is not None:
        slope, intercept = ref.rescale
        return plane.astype(np.float64) * slope + intercept
    return apply_modality_lut(plane, ds)


def _decode(refs: Sequence[SliceRef], progress: ProgressFn) -> np.ndarray:
    """Canonical voxels [i, j, k] (Fortran order) of the sorted slices."""
    by_path: dict[Path, list[int]] = {}
    for k, r in enumerate(refs):
        by_path.setdefault(r.path, []).append(k)
    planes: list[np.ndarray | None] = [None] * len(refs)
    for n, (path, ks) in enumerate(by_path.items()):
        progress("decoding DICOM pixels", n / len(by_path))
        ds, arr = _read_pixels(path)
        for k in ks:
            ref = refs[k]
            plane = arr if ref.frame is None else arr[ref.frame]
            if plane.shape != (ref.rows, ref.cols):
                raise InputError(f"{ref.where()}: decoded pixels have shape {plane.shape}, "
                                 f"expected {ref.rows}x{ref.cols}")
            try:
                planes[k] = canonical_voxels(_modality_values(plane, ds, ref))
            except InputError as exc:
                raise InputError(f"{ref.where()}: {exc}") from None
    progress("decoding DICOM pixels", 1.0)
    kinds = {p.dtype for p in planes if p is not None}
    dtype = (np.float32 if np.dtype(np.float32) in kinds
             else np.int32 if np.dtype(np.int32) in kinds else np.int16)
    first = refs[0]
    out = np.empty((first.cols, first.rows, len(refs)), dtype=dtype, order="F")
    for k, plane in enumerate(planes):
        out[:, :, k] = plane.T  # plane is [row, col] = [j, i]
    return out


def load_dicom_series(folder: str | Path, series_uid: str | None = None,
                      progress: ProgressFn = silent) -> Volume:
    """The chosen (or only) image series under ``folder`` as a Volume; InputError on anything doubtful."""
    folder = Path(folder)
    groups = scan_folder(folder, progress)
    uid = choose_series(groups, series_uid, folder)
    headers = groups[uid]
    refs, ijk_to_ras = sort_slices(slice_refs(headers, uid), uid)
    identity = series_identity(headers, refs, uid, folder)
    voxels = _decode(refs, progress)
    return Volume(voxels=voxels, ijk_to_ras=ijk_to_ras, identity=identity)
