"""StudyIdentity of a DICOM series: UIDs, acquisition time, device, site; the patient only as a pseudonym."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from medcert.errors import InputError
from medcert.io.dicom_geometry import SliceRef
from medcert.io.dicom_scan import Header, text
from medcert.io.pseudonym import patient_pseudonym
from medcert.volume import StudyIdentity

_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TM = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?")


def _date_iso(da: str | None) -> str | None:
    m = _DA.fullmatch((da or "").replace(".", "").strip())
    return f"{m[1]}-{m[2]}-{m[3]}" if m else None


def _time_iso(tm: str | None) -> str | None:
    m = _TM.fullmatch((tm or "").replace(":", "").strip())
    if not m:
        return None
    return m[1] + "".join(f":{g}" for g in (m[2], m[3]) if g) + (m[4] or "")


def dicom_datetime_iso(dt: str | None) -> str | None:
    """DICOM DT (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``, components optional) as ISO 8601; None if unparseable."""
    m = _DT.fullmatch((dt or "").strip())
    if not m:
        return None
    year, month, day, hh, mm, ss, frac, tz = m.groups()
    out = year + (f"-{month}" if month else "") + (f"-{day}" if month and day else "")
    if day and hh:
        out += f"T{hh}" + (f":{mm}" if mm else "") + (f":{ss}" if mm and ss else "")
        out += (frac or "") if mm and ss else ""
    if tz:
        out += f"{tz[:3]}:{tz[3:]}"
    return out


def acquisition_datetime(headers: Sequence[Header]) -> str | None:
    """Earliest acquisition time of the series as ISO 8601: AcquisitionDateTime, Acquisition Date+Time,
    else Series Date+Time."""
    found: list[str] = []
    for h in headers:
        ds = h.ds
        value = dicom_datetime_iso(text(ds, "AcquisitionDateTime"))
        if value is None:
            for date_kw, time_kw in (("AcquisitionDate", "AcquisitionTime"), ("SeriesDate", "SeriesTime")):
                date = _date_iso(text(ds, date_kw))
                if date:
                    time = _time_iso(text(ds, time_kw))
                    value = f"{date}T{time}" if time else date
                    break
        if value:
            found.append(value)
    return min(found) if found else None


def _joined(ds, keywords: Sequence[str], sep: str) -> str | None:
    parts = [v for v in (text(ds, k) for k in keywords) if v]
    return sep.join(parts) or None


def _same(headers: Sequence[Header], keywords: Sequence[str], series_uid: str, what: str) -> None:
    values = {tuple(text(h.ds, k) for k in keywords) for h in headers}
    if len(values) > 1:
        raise InputError(f"series {series_uid} mixes {what}")


def series_identity(headers: Sequence[Header], refs: Sequence[SliceRef], series_uid: str,
                    folder: Path) -> StudyIdentity:
    """Identity of a loaded series. ``refs`` are the slices in slice order."""
    _same(headers, ("StudyInstanceUID",), series_uid, "studies (StudyInstanceUID differs)")
    _same(headers, ("FrameOfReferenceUID",), series_uid, "frames of reference (FrameOfReferenceUID differs)")
    _same(headers, ("PatientID", "IssuerOfPatientID"), series_uid, "images of different patients")
    first = headers[0].ds
    instances = tuple(dict.fromkeys(r.sop_uid for r in refs))
    files = tuple(dict.fromkeys(str(r.path) for r in refs))
    return StudyIdentity(
        source_format="dicom",
        source_name=folder.resolve().name or str(folder),
        study_uid=text(first, "StudyInstanceUID"),
        series_uid=series_uid,
        instance_uids=instances,
        frame_of_reference_uid=text(first, "FrameOfReferenceUID"),
        modality=text(first, "Modality"),
        acquisition_datetime=acquisition_datetime(headers),
        device=_joined(first, ("Manufacturer", "ManufacturerModelName"), " "),
        source_system=_joined(first, ("StationName", "InstitutionName"), " / "),
        patient_pseudonym=patient_pseudonym(text(first, "PatientID"), text(first, "IssuerOfPatientID")),
        source_files=files,
    )
