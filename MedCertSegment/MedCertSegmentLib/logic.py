"""Segment a volume node, certify the run and put the result into the scene (no GUI needed).

>>> logic = SegmentLogic(scene)                      # scene: slicer.mrmlScene or a headless vtkMRMLScene
>>> result = logic.segment(volume_node, key_path, weights_path=weights, output_folder=folder)
>>> result.segmentation, result.record.trace_id, result.sidecar
>>> result = SegmentLogic(scene, lookup).segment(dicom_node, key_path, dicom_seg=True)   # also a DICOM SEG
>>> result.dicom_seg                                 # <trace_id>.seg.dcm, the certificate in its private block
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from medcert.errors import CertificateError, InputError
from medcert.evidence import mask_digest
from medcert.io import read_labelmap_nrrd
from medcert.io.nrrd_io import read_nrrd_grid
from medcert.progress import ProgressFn, silent
from medcert.sidecar import CertificateRecord, find_certificate, read_sidecar
from medcert.volume import Volume

from MedCertSegmentLib import attributes, mrml_outputs
from MedCertSegmentLib.certificate_node import attach_certificate
from MedCertSegmentLib.node_volume import InstanceLookup, instance_uids, source_files, volume_for_node


@dataclass
class SegmentResult:
    """What one certified segmentation added to the scene."""

    record: CertificateRecord
    segmentation: Any  # vtkMRMLSegmentationNode, certificate attached
    anomaly: Any = None  # vtkMRMLScalarVolumeNode or None
    explanation: Any = None  # vtkMRMLScalarVolumeNode or None
    findings: Any = None  # vtkMRMLTableNode or None
    sidecar: Path | None = None
    summary: dict[str, str] = field(default_factory=dict)
    dicom_seg: Path | None = None  # the DICOM SEG carrying the same certificate, when exported

    @property
    def trace_id(self) -> str:
        return self.record.trace_id


def label_names(record: CertificateRecord) -> dict[int, str]:
    """Label value → name as certified (``evidence.outputs.mask.labels``)."""
    try:
        raw = record.evidence["outputs"]["mask"]["labels"]
        return {int(k): str(v) for k, v in raw.items()}
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CertificateError("certificate evidence lacks outputs.mask.labels") from exc


def summary_of(record: CertificateRecord, sidecar: Path | None, dicom_seg: Path | None = None) -> dict[str, str]:
    """Trace id, model, signing key id, issue time, study, sidecar and DICOM SEG of a certificate, as text."""
    core = record.core
    model = core.get("mdl") or {}
    return {"trace_id": record.trace_id, "model": f"{model.get('n', '?')} {model.get('v', '')}".strip(),
            "key_id": str(core.get("kid", "")), "issued": str(core.get("iat", "")),
            "study_uid": str(core.get("study") or ""), "sidecar": str(sidecar or ""),
            "dicom_seg": str(dicom_seg or "")}


def check_seg_file(path: Path, record: CertificateRecord) -> Path:
    """``path`` when it is a DICOM SEG carrying ``record``'s certificate; CertificateError otherwise."""
    from medcert.dicomseg import read_seg

    carried = read_seg(path).certificate
    if carried is None or carried.record.core != record.core:
        raise CertificateError(f"DICOM SEG {path} does not carry certificate {record.trace_id}")
    return path


class SegmentLogic:
    """Certified segmentation of volume nodes in ``scene``; ``lookup`` maps SOP Instance UIDs to DICOM files."""

    def __init__(self, scene, lookup: InstanceLookup | None = None) -> None:
        self.scene = scene
        self.lookup = lookup

    def input_volume(self, volume_node) -> Volume:
        """The Volume that gets certified: original DICOM files when found, else the node's voxels."""
        return volume_for_node(volume_node, self.lookup)

    def dicom_seg_problem(self, volume_node) -> str | None:
        """Why a DICOM SEG cannot be exported for ``volume_node`` (one line), or None when it can.

        A SEG references the original instances, so the node must come from DICOM and every instance must
        resolve to a file through the lookup (the Volume is then re-read from those files).
        """
        name = volume_node.GetName() if volume_node is not None else "(none)"
        if not instance_uids(volume_node):
            return (f"DICOM SEG export needs a volume loaded from DICOM; '{name}' lists no DICOM instances "
                    f"({attributes.INSTANCE_UIDS})")
        if self.lookup is None:
            return f"DICOM SEG export needs the DICOM database to find the files of '{name}'; none is open"
        try:
            source_files(volume_node, self.lookup)
        except InputError as exc:
            return f"DICOM SEG export: {exc}"
        return None

    def check_dicom_seg(self, volume_node) -> None:
        """InputError (one line) unless a DICOM SEG can be exported for ``volume_node``."""
        problem = self.dicom_seg_problem(volume_node)
        if problem:
            raise InputError(problem)

    def default_output_folder(self, volume_node) -> Path:
        """Beside the study's files (loaded file or DICOM series), else the scene's folder, else MedCert home."""
        storage = volume_node.GetStorageNode()
        if storage is not None and storage.GetFileName():
            return Path(storage.GetFileName()).resolve().parent
        files = source_files(volume_node, self.lookup) if self.lookup is not None else None
        if files:
            return Path(next(iter(files.values()))).resolve().parent
        root = self.scene.GetRootDirectory()
        if root and Path(root).is_dir() and Path(root) != Path("."):
            return Path(root).resolve()
        from medcert.audit.config import medcert_home

        return medcert_home() / "outputs"

    def segment(self, volume_node, key_path: str | Path, *, weights_path: str | Path | None = None,
                output_folder: str | Path | None = None, device: str = "cpu", threads: int | None = None,
                audit_db: str | Path | None = None, dicom_seg: bool = False,
                progress: ProgressFn = silent) -> SegmentResult:
        """Segment and certify in this process (the GUI runs the same through ``SegmentProcess``).

        ``dicom_seg``: also write ``<trace_id>.seg.dcm`` (refused before any work unless the node is DICOM).
        """
        from medcert.pipeline import segment_to_files

        if dicom_seg:
            self.check_dicom_seg(volume_node)
        vol = self.input_volume(volume_node)
        folder = Path(output_folder) if output_folder else self.default_output_folder(volume_node)
        outcome = segment_to_files(volume_node.GetName(), key_path, folder, weights_path=weights_path,
                                   volume=vol, device=device, threads=threads, audit_db=audit_db,
                                   dicom_seg=dicom_seg, progress=progress)
        out = outcome.certified.run.outputs
        return self.add_to_scene(volume_node, outcome.certified.record, vol.ijk_to_ras, out.labels,
                                 anomaly=out.anomaly, explanation=getattr(out, "explanation", None),
                                 sidecar=outcome.sidecar, dicom_seg=outcome.dicom_seg)

    def load_outputs(self, volume_node, summary: Mapping[str, Any]) -> SegmentResult:
        """Bring the files of a ``medcert segment --json`` run into the scene (the GUI's process path).

        The labelmap must match the certified mask digest and a DICOM SEG must carry the same certificate,
        so files changed after the run are refused.
        """
        sidecar = Path(summary["sidecar"])
        record = find_certificate(read_sidecar(sidecar), summary["trace_id"])
        labels, ijk_to_ras = read_labelmap_nrrd(summary["labelmap"])
        if mask_digest(labels, ijk_to_ras) != record.core["d"]["msk"]:
            raise CertificateError(f"labelmap {summary['labelmap']} does not match certificate {record.trace_id}")
        maps = {}
        for key in ("anomaly_map", "explanation_map"):
            maps[key] = read_nrrd_grid(summary[key])[0] if summary.get(key) else None
        seg = check_seg_file(Path(summary["dicom_seg"]), record) if summary.get("dicom_seg") else None
        return self.add_to_scene(volume_node, record, ijk_to_ras, labels, anomaly=maps["anomaly_map"],
                                 explanation=maps["explanation_map"], sidecar=sidecar, dicom_seg=seg)

    def add_to_scene(self, volume_node, record: CertificateRecord, ijk_to_ras: np.ndarray, labels: np.ndarray, *,
                     anomaly: np.ndarray | None = None, explanation: np.ndarray | None = None,
                     sidecar: Path | None = None, dicom_seg: Path | None = None) -> SegmentResult:
        """Segmentation (certificate attached), probability maps and findings table for one certified run."""
        base = volume_node.GetName() or "volume"
        summary = summary_of(record, sidecar, dicom_seg)
        seg = mrml_outputs.create_segmentation(self.scene, volume_node, labels, ijk_to_ras, label_names(record),
                                               f"{base} MedCert segmentation", summary["model"])
        attach_certificate(seg, record, sidecar)
        if dicom_seg is not None:
            seg.SetAttribute(attributes.DICOM_SEG, str(dicom_seg))
        result = SegmentResult(record, seg, sidecar=sidecar, summary=summary, dicom_seg=dicom_seg)
        if anomaly is not None:
            result.anomaly = mrml_outputs.add_probability_map(self.scene, anomaly, ijk_to_ras,
                                                              f"{base} MedCert anomaly map", volume_node)
        if explanation is not None:
            result.explanation = mrml_outputs.add_probability_map(self.scene, explanation, ijk_to_ras,
                                                                  f"{base} MedCert explanation map", volume_node)
        result.findings = mrml_outputs.findings_table(self.scene, record.evidence.get("findings"),
                                                      f"{base} MedCert findings", volume_node)
        for node in (result.anomaly, result.explanation, result.findings):
            if node is not None:
                node.SetAttribute(attributes.TRACE_ID, record.trace_id)
        return result
