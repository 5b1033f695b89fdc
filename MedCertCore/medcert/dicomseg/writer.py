"""Write a labelmap as a DICOM SEG (BINARY) derived from its source series, with the certificate inside.

>>> ds = certified_segmentation(volume, record, labels, {1: "right lung", 2: "left lung", 3: "lung nodule"})
>>> write_dicom(out / f"{record.trace_id}.seg.dcm", ds)

Segments keep the model's label values as segment numbers. Every segment of the model is described, also
one without voxels (it then has no frames, as highdicom writes it with ``omit_empty_frames``); a labelmap
without any foreground is written with all frames, empty.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from medcert import __version__
from medcert.atomic import atomic_write_bytes
from medcert.certificate import core_digest
from medcert.dicomseg.private_block import attach_certificate
from medcert.dicomseg.source import source_images
from medcert.dicomseg.terms import ALGORITHM_FAMILY, check_labels
from medcert.errors import CertificateError, MedCertError
from medcert.evidence import mask_digest
from medcert.sidecar import CertificateRecord
from medcert.volume import Volume

SERIES_NUMBER = 9001
SERIES_DESCRIPTION = "MedCert AI segmentation"
CONTENT_LABEL = "MEDCERT"
DEFAULT_COLOR = (0.7, 0.7, 0.7)


@dataclass(frozen=True)
class Algorithm:
    """Segmentation Algorithm Identification: name and version (LO, ≤ 64 characters) and parameters."""

    name: str
    version: str
    parameters: dict[str, str] = field(default_factory=dict)


def seg_frames(labels: np.ndarray, frame_k: Sequence[int]) -> np.ndarray:
    """highdicom's (frames, rows, cols) array: source frame f shows slice ``frame_k[f]`` of labels[i,j,k]."""
    lab = np.asarray(labels, dtype=np.uint8)
    return np.ascontiguousarray(np.stack([lab[:, :, k].T for k in frame_k]))


def _descriptions(label_names: Mapping[int, str], algorithm: Algorithm,
                  colors: Mapping[int, tuple[float, float, float]]) -> list[hd.seg.SegmentDescription]:
    ident = hd.AlgorithmIdentificationSequence(name=algorithm.name, family=ALGORITHM_FAMILY,
                                               version=algorithm.version, source="MedCert",
                                               parameters=algorithm.parameters or None)
    out = []
    for number, label, term in check_labels(dict(label_names)):
        rgb = colors.get(number, DEFAULT_COLOR)
        desc = hd.seg.SegmentDescription(
            number, label, term.category, term.type, hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, ident,
            anatomic_regions=[term.region] if term.region else None,
            display_color=hd.color.CIELabColor.from_rgb(*(round(255 * c) for c in rgb)))
        if term.modifier is not None:
            desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept.from_code(term.modifier)]
        out.append(desc)
    return out


Colors = Mapping[int, tuple[float, float, float]]


def build_segmentation(volume: Volume, labels: np.ndarray, label_names: Mapping[int, str],
                       algorithm: Algorithm, *, colors: Colors | None = None,
                       device_serial_number: str = "unknown", content_description: str | None = None,
                       series_uid: str | None = None, sop_uid: str | None = None) -> Dataset:
    """A BINARY DICOM SEG of ``labels`` ([i, j, k] on the volume grid) referencing the source images."""
    labels = np.asarray(labels)
    if labels.shape != volume.shape:
        raise MedCertError(f"labelmap shape {labels.shape} differs from the volume {volume.shape}")
    unknown = sorted(set(np.unique(labels).tolist()) - {0, *label_names})
    if unknown:
        raise MedCertError(f"labelmap holds values {unknown[:5]} that are not segments of the model")
    sources, frame_k = source_images(volume)
    descriptions = _descriptions(label_names, algorithm, colors or {})
    hd_log = logging.getLogger("highdicom")
    level = hd_log.level
    hd_log.setLevel(logging.ERROR)  # an all-empty labelmap is written with every frame; no warning needed
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=seg_frames(labels, frame_k),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
            series_instance_uid=series_uid or hd.UID(), series_number=SERIES_NUMBER,
            sop_instance_uid=sop_uid or hd.UID(), instance_number=1, manufacturer="MedCert",
            manufacturer_model_name="MedCert", software_versions=f"medcert {__version__}",
            device_serial_number=device_serial_number[:64], content_label=CONTENT_LABEL,
            content_description=content_description, series_description=SERIES_DESCRIPTION,
            transfer_syntax_uid=ExplicitVRLittleEndian)
    except (ValueError, TypeError, AttributeError) as exc:
        raise MedCertError(f"cannot build a DICOM SEG for series {volume.identity.series_uid}: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    finally:
        hd_log.setLevel(level)
    return seg


def algorithm_for(record: CertificateRecord) -> Algorithm:
    """Algorithm Identification from the signed core: model name/version, weights digest and trace id."""
    core = record.core
    return Algorithm(name=core["mdl"]["n"], version=core["mdl"]["v"], parameters={
        "weights_sha256": core["d"]["wts"], "medcert_trace_id": core["tid"],
        "medcert_core_sha256": core_digest(core), "medcert_key_id": core["kid"]})


def certified_segmentation(volume: Volume, record: CertificateRecord, labels: np.ndarray,
                           label_names: Mapping[int, str], *,
                           colors: Mapping[int, tuple[float, float, float]] | None = None) -> Dataset:
    """The DICOM SEG of a certified run with the certificate in the MedCert private block.

    Refuses a labelmap that is not exactly the certified mask (``d.msk``).
    """
    if mask_digest(labels, volume.ijk_to_ras) != record.core["d"]["msk"]:
        raise CertificateError("the labelmap is not the certified mask; refusing to write it as a DICOM SEG")
    ds = build_segmentation(volume, labels, label_names, algorithm_for(record), colors=colors,
                            device_serial_number=record.core["kid"],
                            content_description=f"MedCert trace {record.core['tid']}")
    attach_certificate(ds, record)
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    """The Part 10 file bytes of ``ds`` (preamble, meta header, data set in its transfer syntax)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def write_dicom(path: str | Path, ds: Dataset) -> Path:
    """Write ``ds`` atomically as a DICOM file; an existing file is never replaced."""
    return atomic_write_bytes(path, dicom_bytes(ds))
