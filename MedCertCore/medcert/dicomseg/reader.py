"""Read a DICOM SEG: its MedCert certificate (private block), algorithm parameters, and its mask decoded
back onto the grid of the source series.

The mask is placed by geometry, not by trust: every frame's Image Position must be the first voxel of a
slice of the series grid, orientation and pixel spacing must equal the series', and the Frame of Reference
and referenced series must be the series'. Anything else is a :class:`SegGridError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import SegmentationStorage

from medcert.dicomseg.private_block import CarriedCertificate, read_certificate
from medcert.dicomseg.source import grid_tolerance, slice_index
from medcert.errors import InputError, MedCertError
from medcert.io.dicom_geometry import LPS_TO_RAS
from medcert.verify import StoredMask
from medcert.volume import Volume

MAX_SEG_BYTES = 2 * 1024**3
ORIGIN = "dicom-seg"


class SegGridError(MedCertError):
    """A SEG whose mask cannot be placed on the grid of the series being verified."""


@dataclass
class SegFile:
    """A DICOM SEG read from disk."""

    path: Path
    dataset: Dataset
    certificate: CarriedCertificate | None  # None when there is no MedCert private block

    @property
    def algorithm_parameters(self) -> dict[str, str]:
        """``key=value`` pairs of the first segment's Algorithm Parameters (survive de-identification)."""
        return algorithm_parameters(self.dataset)


def is_dicom_file(path: str | Path) -> bool:
    """True when ``path`` holds a DICOM Part 10 file ("DICM" after the preamble) or a bare data set."""
    try:
        with Path(path).open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or head[:2] in (b"\x02\x00", b"\x08\x00")


def read_seg(path: str | Path) -> SegFile:
    """Read a DICOM SEG file and its MedCert private block; InputError for anything that is not a SEG."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SEG_BYTES:
            raise InputError(f"DICOM SEG {path}: larger than {MAX_SEG_BYTES} bytes")
        ds = pydicom.dcmread(path, force=True)
    except FileNotFoundError:
        raise InputError(f"DICOM SEG not found: {path}") from None
    except MedCertError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read DICOM file {path}: {type(exc).__name__}: {exc}") from exc
    sop = str(ds.get("SOPClassUID", ""))
    if sop != SegmentationStorage:
        name = getattr(ds.get("SOPClassUID"), "name", None) or sop or "no SOP class"
        raise InputError(f"{path} is not a DICOM Segmentation ({name})")
    return SegFile(path, ds, read_certificate(ds, f"DICOM SEG {path}"))


def algorithm_parameters(ds: Dataset) -> dict[str, str]:
    """Parsed ``k=v,k=v`` Algorithm Parameters of the first segment that has them."""
    for seg in ds.get("SegmentSequence") or []:
        for alg in seg.get("SegmentationAlgorithmIdentificationSequence") or []:
            text = str(alg.get("AlgorithmParameters") or "")
            pairs = (p.split("=", 1) for p in text.split(",") if "=" in p)
            params = {k.strip(): v.strip() for k, v in pairs}
            if params:
                return params
    return {}


def _group_value(ds: Dataset, frame: Dataset | None, sequence: str, keyword: str, where: str) -> Any:
    for group in (frame, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        items = group.get(sequence) if group is not None else None
        if items and keyword in items[0]:
            return items[0][keyword].value
    raise SegGridError(f"{where}: missing {keyword} ({sequence})")


def _check_identity(ds: Dataset, volume: Volume, where: str) -> None:
    ident = volume.identity
    if str(ds.get("SegmentationType", "")) != "BINARY":
        raise SegGridError(f"{where}: SegmentationType {ds.get('SegmentationType')} is not supported "
                           "(MedCert reads BINARY)")
    for_uid = str(ds.get("FrameOfReferenceUID", ""))
    if ident.frame_of_reference_uid and for_uid != ident.frame_of_reference_uid:
        raise SegGridError(f"{where}: Frame of Reference {for_uid} is not the series' "
                           f"({ident.frame_of_reference_uid})")
    refs = {str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence") or []}
    if refs and ident.series_uid not in refs:
        raise SegGridError(f"{where}: derived from series {sorted(refs)[0]}, not from the input series "
                           f"{ident.series_uid}")
    nj, ni = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if (ni, nj) != volume.shape[:2]:
        raise SegGridError(f"{where}: frames are {ni}x{nj} pixels, the series {volume.shape[0]}x"
                           f"{volume.shape[1]}")


def _check_plane(ds: Dataset, frame: Dataset, volume: Volume, where: str) -> None:
    orient = np.array([float(v) for v in _group_value(ds, frame, "PlaneOrientationSequence",
                                                      "ImageOrientationPatient", where)])
    spacing = [float(v) for v in _group_value(ds, frame, "PixelMeasuresSequence", "PixelSpacing", where)]
    if orient.shape != (6,) or len(spacing) != 2:
        raise SegGridError(f"{where}: malformed ImageOrientationPatient or PixelSpacing")
    axes = LPS_TO_RAS[:3, :3] @ np.column_stack([orient[:3] * spacing[1], orient[3:] * spacing[0]])
    extent = np.array(volume.shape[:2], dtype=np.float64)
    if float(np.max(np.abs(axes - volume.ijk_to_ras[:3, :2]) @ extent)) > grid_tolerance(volume.ijk_to_ras):
        raise SegGridError(f"{where}: plane orientation or pixel spacing differs from the series grid")


def seg_labelmap(ds: Dataset, volume: Volume, where: str = "DICOM SEG") -> np.ndarray:
    """The SEG's segments as a uint8 labelmap [i, j, k] on ``volume``'s grid (segment number = label)."""
    _check_identity(ds, volume, where)
    groups = ds.get("PerFrameFunctionalGroupsSequence") or []
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if len(groups) != n_frames:
        raise SegGridError(f"{where}: {len(groups)} per-frame functional groups for {n_frames} frames")
    try:
        pixels = ds.pixel_array.reshape(n_frames, volume.shape[1], volume.shape[0])
    except Exception as exc:
        raise SegGridError(f"{where}: cannot decode the segmentation frames: {type(exc).__name__}") from exc
    labels = np.zeros(volume.shape, dtype=np.uint8, order="F")
    seen: set[tuple[int, int]] = set()
    for f, frame in enumerate(groups):
        here = f"{where} frame {f + 1}"
        _check_plane(ds, frame, volume, here)
        seg_ids = frame.get("SegmentIdentificationSequence") or []
        number = int(seg_ids[0].get("ReferencedSegmentNumber", 0)) if seg_ids else 0
        if not 1 <= number <= 255:
            raise SegGridError(f"{here}: segment number {number} is not 1..255")
        try:
            k = slice_index(_group_value(ds, frame, "PlanePositionSequence", "ImagePositionPatient", here),
                            volume.ijk_to_ras, volume.shape[2], here)
        except InputError as exc:
            raise SegGridError(str(exc)) from None
        if (number, k) in seen:
            raise SegGridError(f"{here}: a second frame of segment {number} on slice {k}")
        seen.add((number, k))
        on = pixels[f].T != 0
        clash = on & (labels[:, :, k] != 0)
        if clash.any():
            other = int(labels[:, :, k][clash][0])
            raise SegGridError(f"{here}: segment {number} overlaps segment {other}; a MedCert labelmap "
                               "holds one label per voxel")
        labels[:, :, k][on] = number
    return labels


def seg_stored_mask(seg: SegFile, volume: Volume) -> StoredMask:
    """The SEG's mask as the stored output record of a verification (``origin`` "dicom-seg")."""
    labels = seg_labelmap(seg.dataset, volume, f"DICOM SEG {seg.path}")
    return StoredMask(labels=labels, ijk_to_ras=volume.ijk_to_ras, origin=ORIGIN)
