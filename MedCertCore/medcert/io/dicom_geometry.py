"""Slice geometry of a DICOM series: per-slice records, sorting along the normal, checks, IJK→RAS.

Single-frame images give one slice each; Enhanced multi-frame images give one slice per frame, with
position, orientation, pixel spacing and rescale taken from the per-frame or shared functional groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medcert.errors import InputError
from medcert.io.dicom_scan import Header, text

ORIENTATION_TOL = 1e-4  # direction cosines
SPACING_TOL = 1e-6  # mm, pixel spacing equality
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class SliceRef:
    """Where one slice comes from and where it lies (LPS millimetres)."""

    path: Path
    frame: int | None  # frame index in a multi-frame file; None for a single-frame file
    sop_uid: str
    position: np.ndarray  # ImagePositionPatient (3,)
    orientation: np.ndarray  # ImageOrientationPatient (6,): row cosines, column cosines
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) as in PixelSpacing
    rows: int
    cols: int
    rescale: tuple[float, float] | None  # (slope, intercept) from functional groups; None: from the dataset

    def where(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} frame {self.frame + 1}"


def _floats(value: object, n: int, what: str, where: str) -> np.ndarray:
    if value is None:
        raise InputError(f"{where}: missing {what}")
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"{where}: {what} is not numeric") from None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise InputError(f"{where}: {what} must hold {n} finite numbers")
    return arr


def _int(ds: Dataset, keyword: str, where: str) -> int:
    value = ds.get(keyword)
    if value is None:
        raise InputError(f"{where}: missing {keyword}")
    return int(value)


def is_multiframe(ds: Dataset) -> bool:
    """True for objects holding several frames (or Enhanced objects with functional groups)."""
    return int(ds.get("NumberOfFrames") or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds


def _check_image(h: Header, series_uid: str) -> None:
    ds = h.ds
    if "Rows" not in ds or "Columns" not in ds:
        sop = ds.get("SOPClassUID")
        kind = getattr(sop, "name", None) or str(sop or "unknown SOP class")
        raise InputError(f"series {series_uid} contains a non-image object ({kind}): {h.path}")
    samples = int(ds.get("SamplesPerPixel") or 1)
    if samples != 1:
        raise InputError(f"{h.path}: colour images ({samples} samples per pixel) are not supported")


def _single_frame_ref(h: Header) -> SliceRef:
    ds, where = h.ds, str(h.path)
    spacing = _floats(ds.get("PixelSpacing"), 2, "PixelSpacing", where)
    position = _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", where)
    orientation = _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", where)
    return SliceRef(path=h.path, frame=None, sop_uid=text(ds, "SOPInstanceUID") or "", position=position,
                    orientation=orientation, pixel_spacing=(float(spacing[0]), float(spacing[1])),
                    rows=_int(ds, "Rows", where), cols=_int(ds, "Columns", where), rescale=None)


def _group_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The first item of ``sequence`` in the frame's per-frame group, else in the shared group."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    for group in (per_frame[frame] if frame < len(per_frame) else None, shared[0] if shared else None):
        if group is not None and group.get(sequence):
            return group.get(sequence)[0]
    return None


def _multi_frame_refs(h: Header) -> list[SliceRef]:
    ds, path = h.ds, h.path
    n = int(ds.get("NumberOfFrames") or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        raise InputError(f"{path}: multi-frame image without per-frame functional groups is not supported")
    if len(per_frame) != n:
        raise InputError(f"{path}: {len(per_frame)} per-frame functional groups for {n} frames")
    rows, cols = _int(ds, "Rows", str(path)), _int(ds, "Columns", str(path))
    refs = []
    for f in range(n):
        where = f"{path} frame {f + 1}"
        pos = _group_item(ds, f, "PlanePositionSequence")
        orient = _group_item(ds, f, "PlaneOrientationSequence")
        measures = _group_item(ds, f, "PixelMeasuresSequence")
        transform = _group_item(ds, f, "PixelValueTransformationSequence")
        spacing = _floats(measures.get("PixelSpacing") if measures else None, 2, "PixelSpacing", where)
        position = _floats(pos.get("ImagePositionPatient") if pos else None, 3, "ImagePositionPatient", where)
        orientation = _floats(orient.get("ImageOrientationPatient") if orient else None, 6,
                              "ImageOrientationPatient", where)
        rescale = None
        if transform is not None and "RescaleSlope" in transform and "RescaleIntercept" in transform:
            rescale = (float(transform.RescaleSlope), float(transform.RescaleIntercept))
        refs.append(SliceRef(path=path, frame=f, sop_uid=text(ds, "SOPInstanceUID") or "", position=position,
                             orientation=orientation, pixel_spacing=(float(spacing[0]), float(spacing[1])),
                             rows=rows, cols=cols, rescale=rescale))
    return refs


def slice_refs(headers: Sequence[Header], series_uid: str) -> list[SliceRef]:
    """One record per slice of the series; refuses non-image objects and single/multi-frame mixes."""
    for h in headers:
        _check_image(h, series_uid)
    multi = [is_multiframe(h.ds) for h in headers]
    if any(multi) and not all(multi):
        single = headers[multi.index(False)].path
        several = headers[multi.index(True)].path
        raise InputError(f"series {series_uid} mixes single-frame and multi-frame images "
                         f"({single}, {several})")
    seen: dict[str, Path] = {}
    for h in headers:
        sop = text(h.ds, "SOPInstanceUID")
        if sop is None:
            raise InputError(f"{h.path}: missing SOPInstanceUID")
        if sop in seen:
            raise InputError(f"SOP Instance UID {sop} appears in two files: {seen[sop]} and {h.path}")
        seen[sop] = h.path
    if all(multi):
        return [r for h in headers for r in _multi_frame_refs(h)]
    return [_single_frame_ref(h) for h in headers]


def _check_uniform(refs: Sequence[SliceRef], series_uid: str) -> None:
    first = refs[0]
    for r in refs[1:]:
        if (r.rows, r.cols) != (first.rows, first.cols):
            raise InputError(f"series {series_uid} mixes image sizes: {first.cols}x{first.rows} in "
                             f"{first.where()}, {r.cols}x{r.rows} in {r.where()}")
        if not np.allclose(r.pixel_spacing, first.pixel_spacing, rtol=0, atol=SPACING_TOL):
            raise InputError(f"series {series_uid} mixes pixel spacings: {list(first.pixel_spacing)} in "
                             f"{first.where()}, {list(r.pixel_spacing)} in {r.where()}")
        if not np.allclose(r.orientation, first.orientation, rtol=0, atol=ORIENTATION_TOL):
            raise InputError(f"series {series_uid} mixes slice orientations (ImageOrientationPatient differs "
                             f"between {first.where()} and {r.where()})")
    row, col = first.orientation[:3], first.orientation[3:]
    if (abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3
            or abs(float(np.dot(row, col))) > 1e-3):
        raise InputError(f"{first.where()}: ImageOrientationPatient is not two orthogonal unit vectors")
    if min(first.pixel_spacing) <= 0:
        raise InputError(f"{first.where()}: PixelSpacing must be positive")


def sort_slices(refs: Sequence[SliceRef], series_uid: str) -> tuple[list[SliceRef], np.ndarray]:
    """Slices sorted along the slice normal and the IJK→RAS matrix; refuses anything but an even stack.

    Refused: fewer than 2 slices, mixed sizes / pixel spacings / orientations, two slices at one position,
    uneven gaps (a missing slice), and stacks that drift sideways (gantry tilt). Tolerance: 1 % of the
    slice step or 0.01 mm, whichever is larger.
    """
    if len(refs) < 2:
        raise InputError(f"series {series_uid} has {len(refs)} slice; a volume needs at least 2")
    _check_uniform(refs, series_uid)
    row, col = refs[0].orientation[:3], refs[0].orientation[3:]
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    dist = np.array([float(np.dot(r.position, normal)) for r in refs])
    order = np.argsort(dist, kind="stable")
    refs = [refs[i] for i in order]
    dist = dist[order]
    gaps = np.diff(dist)
    median = float(np.median(gaps))
    tol = max(0.01, 0.01 * median)
    i = int(np.argmin(gaps))
    if gaps[i] <= tol:
        raise InputError(f"series {series_uid} has two slices at one position ({dist[i]:.3f} mm along the "
                         f"normal): {refs[i].where()} and {refs[i + 1].where()}")
    j = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[j] - median) > tol:
        raise InputError(f"series {series_uid} has uneven slice spacing (missing slice?): {gaps[j]:.3f} mm "
                         f"between {refs[j].where()} and {refs[j + 1].where()}, {median:.3f} mm elsewhere")
    positions = np.array([r.position for r in refs])
    sideways = (positions - positions[0]) - np.outer(dist - dist[0], normal)
    drift = float(np.max(np.linalg.norm(sideways, axis=1)))
    if drift > tol:
        raise InputError(f"series {series_uid}: slice positions drift {drift:.3f} mm sideways of the slice "
                         "normal (gantry tilt or sheared stack), which is not supported")
    row_spacing, col_spacing = refs[0].pixel_spacing
    m = np.eye(4)
    m[:3, 0] = row * col_spacing  # i: along a row, one column further
    m[:3, 1] = col * row_spacing  # j: down a column, one row further
    m[:3, 2] = (positions[-1] - positions[0]) / (len(refs) - 1)
    m[:3, 3] = positions[0]
    return refs, LPS_TO_RAS @ m
