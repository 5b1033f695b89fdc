"""A DICOM SEG as the certificate source of a verification: found in the DICOM database, chosen among the inputs.

A SEG that MedCert exported is both the certificate carrier (private block) and the output record checked;
an optional sidecar cross-checks it (the ``carrier`` check). A segmentation node loaded from the DICOM database
lists the SEG's SOP Instance UID in ``DICOM.instanceUIDs``; a lookup (``slicer.dicomDatabase.fileForInstance``,
or any ``uid → path`` callable) finds its file.

>>> seg_file_for_node(seg_node, slicer.dicomDatabase.fileForInstance)        # the file the node came from
>>> source = certificate_source(segmentation_node=node, dicom_seg=None, sidecar=None, lookup=lookup)
>>> VerifyLogic(scene, lookup).verify(volume_node, source.certificate, segmentation_node=source.segmentation_node,
...                                   sidecar_path=source.sidecar, trusted_keys=[...])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medcert.dicomseg import carrier, is_dicom_file, read_seg
from medcert.errors import CertificateError, InputError
from medcert.pipeline import choose_record
from medcert.sidecar import CertificateRecord, read_sidecar
from medcert.volume import Volume
from MedCertSegmentLib.attributes import dicom_uids, from_dicom, has_certificate
from MedCertSegmentLib.node_volume import InstanceLookup

SeriesFiles = Callable[[str], Iterable[str]]  # Series Instance UID -> its files (``dicomDatabase.filesForSeries``)


@dataclass(frozen=True)
class CertificateSource:
    """What to verify: ``certificate`` (sidecar or DICOM SEG path, or a node with an attached certificate), the
    segmentation checked as output record (None: the certificate's own node, or the SEG) and, with a SEG, the
    sidecar that cross-checks it."""

    certificate: Any
    segmentation_node: Any = None
    sidecar: Path | None = None


def is_dicom_seg_source(source: Any) -> bool:
    """Whether a certificate source is a DICOM file (by content, as ``verify_files`` tells them apart)."""
    return isinstance(source, str | Path) and is_dicom_file(source)


def seg_file_for_instance(uid: str, lookup: InstanceLookup) -> Path:
    """The DICOM file of SOP Instance ``uid``; InputError when the lookup finds none or it is not DICOM."""
    found = lookup(uid)
    path = Path(found) if found else None
    if path is None or not path.is_file():
        raise InputError(f"DICOM instance {uid} has no file in the DICOM database")
    if not is_dicom_file(path):
        raise InputError(f"{path} (instance {uid}) is not a DICOM file")
    return path


def seg_file_for_node(node, lookup: InstanceLookup, series_files: SeriesFiles | None = None) -> Path | None:
    """The DICOM SEG file a segmentation node was loaded from; None when the node is not from DICOM.

    By its SOP Instance UID (``lookup``), else by its series (``series_files``) when only that is known.
    """
    uids, series = dicom_uids(node)
    if not uids and series and series_files is not None:
        return seg_file_in_series(series_files(series))
    if not uids:
        return None
    if len(uids) != 1:
        raise InputError(f"'{node.GetName()}' lists {len(uids)} DICOM instances; a DICOM SEG is one instance")
    return seg_file_for_instance(uids[0], lookup)


def seg_file_in_series(files: Iterable[str | Path]) -> Path:
    """The one DICOM SEG among a series' files (e.g. ``slicer.dicomDatabase.filesForSeries``)."""
    segs = []
    for f in files:
        if is_dicom_file(f):
            try:
                segs.append(read_seg(f).path)
            except InputError:
                continue
    if len(segs) != 1:
        raise InputError(f"the series holds {len(segs)} DICOM SEG files, not one")
    return segs[0]


def dicom_database_series_files() -> SeriesFiles | None:
    """``slicer.dicomDatabase.filesForSeries`` when Slicer has an open DICOM database, else None."""
    import slicer

    db = getattr(slicer, "dicomDatabase", None)
    if db is None or not getattr(db, "isOpen", False):
        return None
    return lambda series: list(db.filesForSeries(series))


def seg_record(seg_path: str | Path, volume: Volume, sidecar: str | Path | None = None,
               trace_id: str | None = None) -> CertificateRecord:
    """The certificate a verification of ``seg_path`` checks, chosen as ``verify_files`` chooses it."""
    records = read_sidecar(sidecar) if sidecar is not None else None
    choice = carrier.choose(read_seg(seg_path), records, trace_id, lambda recs, tid: choose_record(recs, volume, tid))
    return choice.record


def certificate_source(*, segmentation_node=None, sidecar: Path | None = None, dicom_seg: Path | None = None,
                       lookup: InstanceLookup | None = None,
                       series_files: SeriesFiles | None = None) -> CertificateSource:
    """The certificate to verify, from the module's inputs, in this order:

    1. a DICOM SEG file: carrier and output record; ``sidecar`` cross-checks it;
    2. a segmentation with an attached certificate: the sidecar's certificate instead, when one is given;
    3. a segmentation loaded from the DICOM database: its SEG file (through ``lookup``), as in 1;
    4. a sidecar, with the segmentation (if any) as the output record.
    """
    if dicom_seg is not None:
        return CertificateSource(Path(dicom_seg), None, sidecar)
    if has_certificate(segmentation_node):
        return CertificateSource(sidecar if sidecar is not None else segmentation_node, segmentation_node)
    if from_dicom(segmentation_node):
        name = segmentation_node.GetName()
        if lookup is None:
            raise InputError(f"'{name}' was loaded from DICOM, but no DICOM database is open to find its file")
        path = seg_file_for_node(segmentation_node, lookup, series_files)
        if path is None:
            raise InputError(f"'{name}' lists no DICOM instance to find its DICOM SEG by")
        return CertificateSource(path, None, sidecar)
    if sidecar is not None:
        return CertificateSource(sidecar, segmentation_node)
    raise CertificateError("select a certified segmentation, a DICOM SEG or a sidecar")
