"""Find DICOM files in a folder, read their headers (no pixels) and group them by series."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from medcert.errors import InputError
from medcert.progress import ProgressFn, silent

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
# Series of these modalities hold no volume (reports, segmentations, presentation states ...): they are
# listed but never chosen automatically.
NON_VOLUME_MODALITIES = frozenset({"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTRECORD", "PR", "KO", "REG", "DOC",
                                   "FID", "AU", "ECG"})


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder."""

    series_uid: str
    study_uid: str | None
    modality: str | None
    description: str | None
    n_instances: int

    def label(self) -> str:
        """``uid (CT 'Abdomen', 120 files)`` for messages."""
        return (f"{self.series_uid} ({self.modality or '?'} '{self.description or ''}', "
                f"{self.n_instances} file{'s' if self.n_instances != 1 else ''})")


@dataclass(frozen=True)
class Header:
    """A DICOM file and its dataset read up to (not including) the pixel data."""

    path: Path
    ds: Dataset


def text(ds: Dataset, keyword: str) -> str | None:
    """A string attribute, stripped; None when absent or empty."""
    value = ds.get(keyword)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _is_part10(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_header(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # any parse failure of a file that claims to be DICOM
        raise InputError(f"cannot read DICOM file {path}: {type(exc).__name__}: {exc}") from exc


def scan_folder(folder: str | Path, progress: ProgressFn = silent) -> dict[str, list[Header]]:
    """Headers of every DICOM Part-10 file under ``folder`` (recursive), grouped by SeriesInstanceUID.

    Files without the DICOM preamble (README, thumbnails ...) and DICOMDIR indexes are ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"DICOM folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    groups: dict[str, list[Header]] = {}
    for n, path in enumerate(files):
        progress("reading DICOM headers", n / max(1, len(files)))
        if not _is_part10(path):
            continue
        ds = _read_header(path)
        meta_class = str(getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", ""))
        if meta_class == DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
            continue
        uid = text(ds, "SeriesInstanceUID")
        if uid is None:
            raise InputError(f"DICOM file {path} has no SeriesInstanceUID (truncated or damaged?)")
        groups.setdefault(uid, []).append(Header(path, ds))
    progress("reading DICOM headers", 1.0)
    if not groups:
        raise InputError(f"no DICOM files found in {folder}")
    return groups


def series_info(uid: str, headers: Sequence[Header]) -> SeriesInfo:
    """Summary of one group of headers (the most common value of each field, so a stray object
    such as a report inside an image series does not decide the modality)."""
    return SeriesInfo(series_uid=uid, study_uid=_most_common(headers, "StudyInstanceUID"),
                      modality=_most_common(headers, "Modality"),
                      description=_most_common(headers, "SeriesDescription"), n_instances=len(headers))


def _most_common(headers: Sequence[Header], keyword: str) -> str | None:
    counts = Counter(v for v in (text(h.ds, keyword) for h in headers) if v is not None)
    return min(counts, key=lambda v: (-counts[v], v)) if counts else None


def _sorted_infos(groups: dict[str, list[Header]]) -> list[SeriesInfo]:
    infos = [series_info(uid, hs) for uid, hs in groups.items()]
    return sorted(infos, key=lambda s: (s.study_uid or "", s.modality or "", s.description or "",
                                        s.series_uid))


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """Every series under ``folder`` (including non-image ones), sorted by study, modality, description."""
    return _sorted_infos(scan_folder(folder))


def choose_series(groups: dict[str, list[Header]], series_uid: str | None, folder: Path) -> str:
    """The series to load: ``series_uid`` if given, else the only series that can hold a volume."""
    infos = _sorted_infos(groups)
    if series_uid is not None:
        if series_uid in groups:
            return series_uid
        listing = "; ".join(s.label() for s in infos)
        raise InputError(f"series {series_uid} not found in {folder}; it holds: {listing}")
    volumes = [s for s in infos if (s.modality or "").upper() not in NON_VOLUME_MODALITIES]
    if len(volumes) == 1:
        return volumes[0].series_uid
    if not volumes:
        listing = "; ".join(s.label() for s in infos)
        raise InputError(f"no image series in {folder}; it holds: {listing}")
    listing = "; ".join(s.label() for s in volumes)
    raise InputError(f"{folder} holds {len(volumes)} image series; choose one by its series UID: {listing}")
